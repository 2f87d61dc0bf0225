"""Loading pipelines: every shipped YAML loads and renders; mistakes are ConfigErrors that say where and what."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path

import pytest

from sdg.errors import ConfigError
from sdg.pipeline.inputs import INPUT_COLUMNS, KIND_FILES, KINDS
from sdg.pipeline.llm_block import LLMBlock
from sdg.pipeline.loader import DEFINITIONS, PROMPTS, load_pipeline
from sdg.pipeline.types import UnitContext
from tests.test_pipeline_replay import ReplayTeacher, knowledge_row, skill_row

ROWS = {"knowledge": knowledge_row, "freeform_skill": skill_row,
        "grounded_skill": lambda t=3: skill_row(t, grounded=True)}


@pytest.mark.parametrize("name", ["simple", "full"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_shipped_pipeline_loads_and_renders(name: str, kind: str) -> None:
    pipeline = load_pipeline(name, kind)
    assert pipeline.kind == kind and pipeline.name.startswith(name) and len(pipeline.fingerprint) == 64
    assert pipeline.source == DEFINITIONS / name / KIND_FILES[kind]
    row = ROWS[kind](2)
    assert set(row) == set(INPUT_COLUMNS[kind]), "the representative row has exactly the planner's columns"
    want = {"question", "response"} | {"knowledge": {"raw_document"}, "grounded_skill": {"context"}}.get(kind, set())
    if name == "full":
        want |= {"dataset_type", "judge_faithfulness", "judge_relevancy"} if kind == "knowledge" else {"judge_answer"}
        want |= {"judge_question"}
    assert pipeline.output_columns == set(row) | want
    # Render every llm block's prompt against a row that has every column any block could add.
    columns = dict(row)
    for block in pipeline.blocks:
        if isinstance(block, LLMBlock):
            messages = block._prompt.messages({**columns, "num_samples": 2})
            assert [m["role"] for m in messages] == ["system", "user"]
            text = "\n".join(m["content"] for m in messages)
            assert "{" not in text.replace("{in braces}", "").replace("{not a placeholder}", "").replace(
                "{TBD}", "").replace('{"a": 1}', ""), f"unrendered placeholder in {block.prompt}"
            for field, col in block.output_map.items():
                columns[col] = 3 if field == "score" else "x"
        else:
            columns = asyncio.run(block.run([columns], _state()))[0]
    # And a whole unit whose every reply is empty: nothing rendered wrong, no errors, no exception.
    teacher = ReplayTeacher([("", [""])])
    result = asyncio.run(pipeline.run(row, UnitContext(teacher.chat, 5, "leaf", "unit")))
    assert result.errors == [] and result.rows == [] and result.requests >= 1
    assert set(result.dropped) <= {f"{b.name}:empty_reply" for b in pipeline.blocks}


def _state():
    from sdg.pipeline.blocks import RunState
    from sdg.pipeline.types import UnitResult

    return RunState(UnitContext(None, 3, "leaf", "unit"), UnitResult(), 2)


@pytest.mark.parametrize("target", [1, 2, 5, 7, 30])
def test_request_bounds_follow_the_documented_formulas(target: int) -> None:
    t = target
    expect = {
        ("simple", "knowledge"): math.ceil(t / 10),
        ("simple", "freeform_skill"): math.ceil(t / 5),
        ("simple", "grounded_skill"): math.ceil(t / 5),
        ("full", "knowledge"): math.ceil(t / 5) + 3 * t,
        ("full", "freeform_skill"): math.ceil(t / 10) + 3 * t,
        ("full", "grounded_skill"): math.ceil(t / 2) + 4 * t,
    }
    tokens = {
        ("simple", "knowledge"): 1024 * math.ceil(t / 10),
        ("full", "knowledge"): 1024 * math.ceil(t / 5) + 3 * 64 * t,
        ("full", "freeform_skill"): 768 * math.ceil(t / 10) + (64 + 768 + 64) * t,
        ("full", "grounded_skill"): 1024 * math.ceil(t / 2) + (256 + 64 + 768 + 64) * t,
    }
    for (name, kind), n in expect.items():
        p = load_pipeline(name, kind)
        assert p.max_requests_per_unit(t) == n, (name, kind)
        if (name, kind) in tokens:
            assert p.max_output_tokens_per_unit(t) == tokens[(name, kind)], (name, kind)


def test_fingerprint_is_stable_and_tracks_prompt_files(tmp_path: Path) -> None:
    assert load_pipeline("simple", "knowledge").fingerprint == load_pipeline("simple", "knowledge").fingerprint
    fps = {load_pipeline(n, k).fingerprint for n in ("simple", "full") for k in KINDS}
    assert len(fps) == 6
    d = _user_dir(tmp_path, "simple")
    before = load_pipeline(str(d), "knowledge").fingerprint
    assert before == load_pipeline("simple", "knowledge").fingerprint, "same bytes, same fingerprint"
    (d / "prompts").mkdir()
    (d / "prompts" / "knowledge_qa.txt").write_text(
        (PROMPTS / "knowledge_qa.txt").read_text() + "\nBe brief.\n", encoding="utf-8")
    changed = load_pipeline(str(d), "knowledge")
    assert changed.fingerprint != before
    assert "Be brief." in changed.blocks[0]._prompt.user.text, "the directory's own prompt wins"
    assert load_pipeline(str(d), "freeform_skill").fingerprint == load_pipeline("simple", "freeform_skill").fingerprint


def _user_dir(tmp_path: Path, source: str = "simple") -> Path:
    d = tmp_path / "mypipe"
    shutil.copytree(DEFINITIONS / source, d)
    return d


def _write(d: Path, kind_file: str, text: str) -> None:
    (d / kind_file).write_text(text, encoding="utf-8")


GOOD_LLM = """
  - type: examples
    name: examples
    template: "Question: {question}\\nAnswer: {answer}"
  - type: llm
    name: generate
    prompt: simple_freeform_qa.txt
    parser: qa_pairs
    outputs: {question: question, answer: response}
    num_samples: target_samples
    max_tokens: 256
"""


@pytest.mark.parametrize("yaml_text,needles", [
    ("name: x\nblocks:\n" + GOOD_LLM + "    max_token: 3\n", ["block 2", "'generate'", "unknown key 'max_token'",
                                                              "did you mean 'max_tokens'", "valid keys:"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("parser: qa_pairs", "parser: qa"), ["unknown parser 'qa'",
                                                                                   "qa_pairs"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("max_tokens: 256", "max_tokens: lots"),
     ["'max_tokens' must be an integer", "'lots'"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("max_tokens: 256", "max_tokens: 0"), ["max_tokens must be >= 1"]),
    ("name: x\nblocks:\n" + GOOD_LLM + "    frequency_penalty: 2.5\n", ["frequency_penalty must be from -2 to 2",
                                                                       "2.5"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("num_samples: target_samples", "num_samples: all"),
     ["'num_samples' must be", "'target_samples'"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("simple_freeform_qa.txt", "nope.txt"), ["prompt file 'nope.txt' not found"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("simple_freeform_qa.txt", "../secret.txt"), ["relative"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("{question: question, answer: response}", "{text: question}"),
     ["outputs names ['text']", "question, answer"]),
    ("name: x\nblocks:\n" + GOOD_LLM.replace("type: llm", "type: lmm"), ["unknown block type 'lmm'",
                                                                        "did you mean 'llm'"]),
    ("name: x\nblocks:\n" + GOOD_LLM + "  - type: filter\n    name: f\n    column: judge\n    value: 2\n",
     ["block 3", "'f'", "unknown column(s) 'judge'", "available here:"]),
    ("name: x\nblocks:\n" + GOOD_LLM + GOOD_LLM.split("  - type: llm")[0], ["block name 'examples' is used twice"]),
    ("name: x\nblocks: []\n", ["'blocks' must be a non-empty list"]),
    ("blocks:\n" + GOOD_LLM, ["'name' is required"]),
    ("name: x\nversion: 2\nblocks:\n" + GOOD_LLM, ["version 2 is not supported"]),
    ("name: x\nstages: []\nblocks:\n" + GOOD_LLM, ["unknown key(s) ['stages']", "valid keys: name"]),
    ("name: x\nblocks:\n  - type: llm\n    name: [\n", ["not valid YAML"]),
    ("- just a list\n", ["a pipeline file is a mapping"]),
    ("name: x\nblocks:\n  - type: llm\n    name: g\n    prompt: p.txt\n", ["missing required key 'parser'"]),
    ("name: x\nblocks:\n  - type: mymod:Nope\n    name: g\n", ["cannot import block module 'mymod'"]),
])
def test_mistakes_are_config_errors_naming_file_block_and_fix(tmp_path: Path, yaml_text: str, needles) -> None:
    d = _user_dir(tmp_path)
    _write(d, "freeform_skills.yaml", yaml_text)
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(d), "freeform_skill")
    msg = str(e.value)
    assert "freeform_skills.yaml" in msg
    for needle in needles:
        assert needle in msg, msg


def test_a_prompt_naming_an_unknown_column_fails_at_load(tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    (d / "prompts").mkdir()
    (d / "prompts" / "mine.txt").write_text("<<<user>>>\nSkill: {task_descripton}\nWrite {num_samples}.\n"
                                            "Literal {{braces}} are fine.\n", encoding="utf-8")
    _write(d, "freeform_skills.yaml", "name: x\nblocks:\n" + GOOD_LLM.replace("simple_freeform_qa.txt", "mine.txt"))
    with pytest.raises(ConfigError, match=r"prompt mine.txt.*unknown column\(s\) 'task_descripton'"):
        load_pipeline(str(d), "freeform_skill")
    # a grounded-only column is unknown to a freeform pipeline
    (d / "prompts" / "mine.txt").write_text("<<<user>>>\n{seed_context}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="seed_context"):
        load_pipeline(str(d), "freeform_skill")
    load_pipeline(str(d), "knowledge")  # the other files of the directory are unaffected


def test_bad_prompt_files(tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    (d / "prompts").mkdir()
    _write(d, "freeform_skills.yaml", "name: x\nblocks:\n" + GOOD_LLM.replace("simple_freeform_qa.txt", "p.txt"))
    for text, needle in [("", "empty"), ("<<<system>>>\nonly a system part\n", "no <<<user>>>"),
                         ("hello\n<<<user>>>\nx\n", "text before"), ("<<<user>>>\na\n<<<user>>>\nb\n", "twice")]:
        (d / "prompts" / "p.txt").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=needle):
            load_pipeline(str(d), "freeform_skill")
    (d / "prompts" / "p.txt").write_bytes(b"\xff\xfe<<<user>>>")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_pipeline(str(d), "freeform_skill")


def test_unknown_kind_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown leaf kind 'foundational_skill'"):
        load_pipeline("simple", "foundational_skill")
    with pytest.raises(ConfigError, match="neither simple nor full nor a directory"):
        load_pipeline(str(tmp_path / "nope"), "knowledge")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot read pipeline file .*knowledge.yaml"):
        load_pipeline(str(tmp_path / "empty"), "knowledge")


USER_BLOCK = '''
from __future__ import annotations
from dataclasses import dataclass
from sdg.pipeline.blocks import Block, need_columns


@dataclass
class Shout(Block):
    """Upper-cases a column: a user block, found next to the pipeline YAML."""

    name: str
    column: str = "response"

    def columns_out(self, columns, where):
        need_columns(columns, [self.column], where, "shout")
        return columns

    async def run(self, rows, state):
        return [{**r, self.column: r[self.column].upper()} for r in rows]


@dataclass
class Explode(Block):
    name: str

    async def run(self, rows, state):
        raise ValueError("boom")
'''


def test_user_blocks_by_import_path(tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    (d / "myblocks.py").write_text(USER_BLOCK, encoding="utf-8")
    _write(d, "freeform_skills.yaml", "name: mine\nblocks:\n" + GOOD_LLM +
           "  - type: myblocks:Shout\n    name: shout\n")
    p = load_pipeline(str(d), "freeform_skill")
    teacher = ReplayTeacher([("", ["Question: What is up?\nAnswer: the sky"])])
    result = asyncio.run(p.run(skill_row(1), UnitContext(teacher.chat, 1, "l", "u")))
    assert result.rows[0]["response"] == "THE SKY"
    assert result.generated == 1, "no block says count_generated: the first generating block counts"
    fp = p.fingerprint
    (d / "myblocks.py").write_text(USER_BLOCK + "\n# changed\n", encoding="utf-8")
    assert load_pipeline(str(d), "freeform_skill").fingerprint != fp, "user block code is part of the fingerprint"

    # a block that raises: recorded as an error, its rows counted, no exception
    _write(d, "freeform_skills.yaml", "name: mine\nblocks:\n" + GOOD_LLM + "  - type: myblocks:Explode\n    name: x\n")
    result = asyncio.run(load_pipeline(str(d), "freeform_skill").run(skill_row(1), UnitContext(teacher.chat, 1, "l", "u")))
    assert result.rows == [] and result.dropped["x:block_error"] == 1
    assert result.errors[0].block == "x" and result.errors[0].kind == "block_error" and "boom" in result.errors[0].message

    _write(d, "freeform_skills.yaml", "name: mine\nblocks:\n  - type: myblocks:Missing\n    name: x\n")
    with pytest.raises(ConfigError, match="no Block subclass named 'Missing'"):
        load_pipeline(str(d), "freeform_skill")


def test_user_dirs_are_searched_for_block_modules(tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "shared_blocks.py").write_text(USER_BLOCK, encoding="utf-8")
    _write(d, "freeform_skills.yaml", "name: mine\nblocks:\n" + GOOD_LLM + "  - type: shared_blocks:Shout\n    name: s\n")
    with pytest.raises(ConfigError, match="cannot import block module 'shared_blocks'"):
        load_pipeline(str(d), "freeform_skill")
    assert load_pipeline(str(d), "freeform_skill", user_dirs=[lib]).blocks[-1].type_name == "shared_blocks:Shout"
