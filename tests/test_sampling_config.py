"""generate.sampling: run-wide and per-block (by block name) temperature, top_p, frequency_penalty, max_tokens and
seed, from
the composed config to the block parameters (at load time, in the pipeline fingerprint) to what a real
llama.cpp server received (its /slots endpoint shows the sampling parameters of the last request)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from sdg.config.checks import RULES, violations
from sdg.config.compose import compose_config, to_object
from sdg.config.schema import SamplingConfig, SamplingValues
from sdg.engine.session import engine_session
from sdg.errors import ConfigError
from sdg.pipeline.llm_block import LLMBlock
from sdg.pipeline.loader import load_pipeline
from sdg.pipeline.types import UnitContext
from sdg.run import load_pipelines
from sdg.teacher.backends import LlamaCppServer
from tests.conftest import smollm2_gguf
from tests.test_pipeline_replay import skill_row

KEYS = ("temperature", "top_p", "frequency_penalty", "max_tokens", "seed")


def _llm(pipeline) -> dict[str, LLMBlock]:
    return {b.name: b for b in pipeline.blocks if isinstance(b, LLMBlock)}


def _sampling(block: LLMBlock) -> tuple:
    return block.temperature, block.top_p, block.max_tokens, block.seed


# --- the config ------------------------------------------------------------------------------------------------

def test_defaults_are_unset_and_overrides_by_block_name_compose() -> None:
    cfg = to_object(compose_config([]))
    assert cfg.generate.sampling == SamplingConfig()
    assert all(getattr(cfg.generate.sampling, k) is None for k in KEYS) and cfg.generate.sampling.blocks == {}
    cfg = to_object(compose_config(["generate.sampling.top_p=0.9", "generate.sampling.seed=3",
                                    "+generate.sampling.blocks.gen_questions.temperature=0.2",
                                    "+generate.sampling.blocks.gen_questions.max_tokens=300",
                                    "+generate.sampling.blocks.judge_answer.temperature=0"]))
    s = cfg.generate.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.seed) == (None, 0.9, None, 3)
    assert s.blocks == {"gen_questions": SamplingValues(temperature=0.2, max_tokens=300),
                        "judge_answer": SamplingValues(temperature=0)}


@pytest.mark.parametrize("override, expected", [
    ("generate.sampling.temperature=2.5", "generate.sampling.temperature=2.5 is out of range: must be a number from "
                                          "0 to 2, or null"),
    ("generate.sampling.top_p=0", "generate.sampling.top_p=0.0 is out of range: must be a number > 0 and <= 1, or null"),
    ("generate.sampling.top_p=1.5", "generate.sampling.top_p=1.5 is out of range"),
    ("generate.sampling.frequency_penalty=2.5", "generate.sampling.frequency_penalty=2.5 is out of range: must be a "
                                                "number from -2 to 2, or null"),
    ("+generate.sampling.blocks.gen_questions.frequency_penalty=-3",
     "generate.sampling.blocks.gen_questions.frequency_penalty=-3 is out of range"),
    ("generate.sampling.max_tokens=0", "generate.sampling.max_tokens=0 is out of range: must be an integer >= 1, or null"),
    ("generate.sampling.seed=-1", "generate.sampling.seed=-1 is out of range: must be an integer from 0 to 2147483647"),
    ("+generate.sampling.blocks.gen_questions.temperature=-1",
     "generate.sampling.blocks.gen_questions.temperature=-1 is out of range: must be a number from 0 to 2, or null"),
    ("+generate.sampling.blocks.gen_questions.top_p=2", "generate.sampling.blocks.gen_questions.top_p=2 is out of range"),
    ("+generate.sampling.blocks.gen_questions.max_tokens=many",
     "generate.sampling.blocks.gen_questions.max_tokens=many is out of range: must be an integer >= 1"),
    ("+generate.sampling.blocks.gen_questions.seed=1.5", "generate.sampling.blocks.gen_questions.seed=1.5 is out of range"),
    ("+generate.sampling.blocks.gen_questions.temprature=0.2",
     "unknown config key 'generate.sampling.blocks.gen_questions.temprature': generate.sampling.blocks.<name> accepts "
     "temperature, top_p, frequency_penalty, max_tokens, seed"),
    ("+generate.sampling.blocks.gen_questions=0.2",
     "generate.sampling.blocks.gen_questions=0.2 is not a mapping: set its keys "
     "(+generate.sampling.blocks.gen_questions.temperature=VALUE)"),
    ("generate.sampling.temprature=1", "unknown config key 'generate.sampling.temprature': generate.sampling accepts "
                                       "temperature, top_p, frequency_penalty, max_tokens, seed, blocks"),
])
def test_bad_sampling_values_are_one_line_config_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert str(err.value).startswith(expected) and "\n" not in str(err.value), str(err.value)


def test_the_rules_cover_the_sampling_fields_and_every_block_entry() -> None:
    for key in KEYS:
        assert f"generate.sampling.{key}" in RULES and RULES[f"generate.sampling.{key}"].optional
    ok = compose_config(["generate.sampling.temperature=0", "generate.sampling.top_p=1", "generate.sampling.seed=0",
                         "generate.sampling.max_tokens=1", "+generate.sampling.blocks.a.temperature=2",
                         "+generate.sampling.blocks.b.seed=2147483647"])
    assert violations(ok) == []
    obj = to_object(ok)
    obj.generate.sampling.blocks["a"].temperature = 3.0  # checks also run on the typed object
    assert violations(obj) == ["generate.sampling.blocks.a.temperature=3.0 is out of range: must be a number from 0 "
                               "to 2, or null (sampling temperature of llm blocks, null = the block's own)"]


# --- at load time -------------------------------------------------------------------------------------------------

def test_block_override_beats_run_wide_beats_the_pipeline_yaml() -> None:
    yaml = _llm(load_pipeline("full", "freeform_skill"))
    assert _sampling(yaml["questions"]) == (0.8, None, 768, None)
    assert _sampling(yaml["judge_answer"]) == (0.0, None, 64, None)
    sampling = SamplingConfig(top_p=0.9, seed=11, blocks={"questions": SamplingValues(temperature=0.3, top_p=0.5),
                                                          "judge_answer": SamplingValues(max_tokens=32, seed=0)})
    got = _llm(load_pipeline("full", "freeform_skill", sampling=sampling))
    assert _sampling(got["questions"]) == (0.3, 0.5, 768, 11)  # block > run-wide > YAML, key by key
    assert _sampling(got["judge_answer"]) == (0.0, 0.9, 32, 0)
    assert _sampling(got["answer"]) == (0.5, 0.9, 768, 11)  # run-wide values reach every llm block
    # the same from a composed config, through the function the run (and every Slurm node) loads pipelines with
    cfg = to_object(compose_config(["pipeline=full", "generate.sampling.top_p=0.9", "generate.sampling.seed=11",
                                    "+generate.sampling.blocks.questions.temperature=0.3",
                                    "+generate.sampling.blocks.questions.top_p=0.5",
                                    "+generate.sampling.blocks.judge_answer.max_tokens=32",
                                    "+generate.sampling.blocks.judge_answer.seed=0"]))
    loaded = load_pipelines(cfg, {"freeform_skill"})["freeform_skill"]
    assert {n: _sampling(b) for n, b in _llm(loaded).items()} == {n: _sampling(b) for n, b in got.items()}


def test_sampling_is_part_of_the_fingerprint_only_when_it_changes_a_block() -> None:
    def fp(sampling) -> str:
        return load_pipeline("full", "freeform_skill", sampling=sampling).fingerprint

    base = load_pipeline("full", "freeform_skill").fingerprint
    assert fp(None) == fp(SamplingConfig()) == base
    assert fp({"blocks": {"questions": {"temperature": 0.8, "max_tokens": 768}}}) == base  # the YAML's own values
    assert fp({"blocks": {"contexts": {"temperature": 0.1}}}) == base  # a grounded_skills block: not in this file
    changed = {fp({"temperature": 0.5}), fp({"blocks": {"questions": {"temperature": 0.5}}}),
               fp({"blocks": {"questions": {"seed": 1}}}), fp({"top_p": 0.9}), fp({"frequency_penalty": 0.3})}
    assert base not in changed and len(changed) == 5


def test_a_run_with_other_sampling_is_another_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run fingerprint (what a resume must find unchanged) changes with the sampling a block gets."""
    from sdg.run import prepare
    from sdg.taxonomy.init import init_taxonomy

    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    tax = init_taxonomy(tmp_path / "taxonomy").path

    def run(*overrides: str):
        return prepare(to_object(compose_config([f"taxonomy.path={tax}", "pipeline=full", *overrides])), log=lambda m: None)

    base = run()
    assert run().fingerprint == base.fingerprint
    judge = run("+generate.sampling.blocks.judge_answer.temperature=0.3")
    top_p = run("generate.sampling.top_p=0.9")
    assert len({base.fingerprint, judge.fingerprint, top_p.fingerprint}) == 3
    changed = {k for k, fp in judge.components["pipelines"].items() if fp != base.components["pipelines"][k]}
    assert changed == {"freeform_skill", "grounded_skill"}  # the kinds whose pipeline has a judge_answer block


def test_unknown_and_non_llm_block_names_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_pipeline("full", "knowledge", sampling={"blocks": {"gen_questions": {"temperature": 0.2}}})
    msg = str(err.value)
    assert msg.startswith("generate.sampling.blocks.gen_questions: pipeline 'full' has no block named 'gen_questions'; "
                          "its llm blocks are answer, contexts, generate, judge_answer, judge_faithfulness, "
                          "judge_question, judge_relevancy, question, questions (other blocks: "), msg
    assert "dedup" in msg and "\n" not in msg
    # a block of another kind's file of the pipeline is a known name (it applies where that block is)
    load_pipeline("full", "knowledge", sampling={"blocks": {"contexts": {"temperature": 0.2}}})
    with pytest.raises(ConfigError, match=r"^generate\.sampling\.blocks\.dedup: block 'dedup' .* is a dedup block; "
                                          r"sampling applies to llm blocks only"):
        load_pipeline("simple", "knowledge", sampling={"blocks": {"dedup": {"temperature": 0.2}}})
    cfg = to_object(compose_config(["+generate.sampling.blocks.nope.top_p=0.5"]))
    with pytest.raises(ConfigError, match=r"no block named 'nope'; its llm blocks are generate \(other blocks"):
        load_pipelines(cfg, {"freeform_skill"})


# --- what the server receives -------------------------------------------------------------------------------------

ASK = "<<<system>>>\nAnswer in one word.\n<<<user>>>\nName a colour.\n"


def _pipeline_dir(root: Path) -> Path:
    """Two one-block pipelines: `gen_questions` for freeform skills, `judge` for grounded skills."""
    (root / "prompts").mkdir(parents=True)
    (root / "prompts" / "ask.txt").write_text(ASK, encoding="utf-8")
    for file, name, max_tokens, temperature in (("freeform_skills.yaml", "gen_questions", 8, 0.7),
                                                ("grounded_skills.yaml", "judge", 4, 0.0)):
        (root / file).write_text(f"name: {name}\nblocks:\n  - type: llm\n    name: {name}\n    prompt: ask.txt\n"
                                 f"    parser: answer\n    outputs: {{answer: response}}\n"
                                 f"    max_tokens: {max_tokens}\n    temperature: {temperature}\n", encoding="utf-8")
    return root


def test_sampling_reaches_the_requests_a_real_llama_cpp_server_receives(tmp_path: Path) -> None:
    cfg = to_object(compose_config([
        f"pipeline.name={_pipeline_dir(tmp_path / 'pipe')}", "teacher.max_tokens=16",
        "generate.sampling.top_p=0.9", "generate.sampling.seed=100", "generate.sampling.frequency_penalty=0.25",
        "+generate.sampling.blocks.gen_questions.temperature=0.2", "+generate.sampling.blocks.gen_questions.top_p=0.5",
        "+generate.sampling.blocks.gen_questions.max_tokens=500", "+generate.sampling.blocks.gen_questions.seed=7",
        "+generate.sampling.blocks.gen_questions.frequency_penalty=0.5"]))
    pipelines = load_pipelines(cfg, {"freeform_skill", "grounded_skill"})
    server = LlamaCppServer(gguf=smollm2_gguf(), context_length=1024, n_parallel=1, n_threads=1, model_name="teacher",
                            log_path=tmp_path / "t.log", startup_timeout_s=120)
    seen: dict[str, dict] = {}

    async def run(ep) -> None:
        slots = ep.base_url.replace("/v1", "/slots")
        async with engine_session(cfg, [ep]) as session:  # the engine's own chat: client + teacher.max_tokens cap
            current: list[str] = []

            async def chat(messages, **kw):  # one slot, one request at a time: /slots shows this request
                res = await session.chat(messages, **kw)
                seen[current[-1]] = (await asyncio.to_thread(httpx.get, slots, timeout=30)).json()[0]
                return res

            for kind, row in (("freeform_skill", skill_row(1)), ("grounded_skill", skill_row(1, grounded=True))):
                current.append(pipelines[kind].blocks[0].name)
                result = await pipelines[kind].run(row, UnitContext(chat, 1000, row["leaf_node_path"], f"u-{kind}"))
                assert result.requests == 1 and not result.errors, result

    with server as ep:
        asyncio.run(run(ep))
    gen, judge = seen["gen_questions"]["params"], seen["judge"]["params"]
    # gen_questions: its own entry for everything; max_tokens 500 capped by teacher.max_tokens=16
    assert gen["temperature"] == pytest.approx(0.2) and gen["top_p"] == pytest.approx(0.5)
    assert gen["seed"] == 1000 + 7 and gen["n_predict"] == 16 and gen["frequency_penalty"] == pytest.approx(0.5)
    # judge: its YAML temperature and max_tokens, the run-wide top_p and seed (the unit seed + call 0 + 100)
    assert judge["temperature"] == 0.0 and judge["top_p"] == pytest.approx(0.9)
    assert judge["seed"] == 1000 + 100 and judge["n_predict"] == 4
    assert judge["frequency_penalty"] == pytest.approx(0.25)  # the run-wide value
