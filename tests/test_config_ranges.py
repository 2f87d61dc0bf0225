"""Range and choice checks at composition time (sdg/config/checks.py): a value of the right type that
cannot work is a one-line ConfigError naming the key, the value and what is allowed, never a late traceback."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import sdg.conf
from sdg.config import compose
from sdg.config.checks import RULES, Choice, Range, check_values, violations
from sdg.config.compose import compose_config, to_object
from sdg.config.schema import SdgConfig
from sdg.errors import ConfigError
from tests.conftest import sdg_cli

CONF = Path(sdg.conf.__file__).parent


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        compose_config(overrides)
    assert err.value.exit_code == 2
    message = str(err.value)
    assert "\n" not in message
    return message


# --- through the real console script ---------------------------------------------------------------------


def test_scale_factor_zero_is_one_line_and_exit_2(sdg_env: dict) -> None:
    r = sdg_cli(sdg_env, "data", "generate", "--sdg-scale-factor", "0", "--dry-run")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert lines == ["error: pipeline.sdg_scale_factor=0 is out of range: must be an integer >= 1 "
                     "(samples to aim for per seed example)"], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_several_bad_values_on_the_cli_are_one_line(sdg_env: dict) -> None:
    r = sdg_cli(sdg_env, "data", "generate", "--max-concurrency", "-3", "generate.progress=blinky", "--dry-run")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "generate.max_concurrency=-3 is out of range: must be an integer >= 1, or null" in lines[0]
    assert "; generate.progress=blinky is not a valid choice: must be one of auto, bar, log, none" in lines[0]


# --- through compose_config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("generate.max_concurrency=-1", "generate.max_concurrency=-1 is out of range: must be an integer >= 1, or null"),
    ("pipeline.samples_per_unit=0", "pipeline.samples_per_unit=0 is out of range: must be an integer >= 1"),
    ("generate.error_rate_limit=2.0", "generate.error_rate_limit=2.0 is out of range: must be a number from 0 to 1"),
    ("generate.error_rate_limit=-0.1", "generate.error_rate_limit=-0.1 is out of range"),
    ("generate.error_window=0", "generate.error_window=0 is out of range: must be an integer >= 1"),
    ("generate.resume=sometimes", "generate.resume=sometimes is not a valid choice: must be one of auto, fresh"),
    ("generate.progress=blinky", "generate.progress=blinky is not a valid choice: must be one of auto, bar, log, none"),
    ("generate.progress_interval_s=-1", "generate.progress_interval_s=-1.0 is out of range: must be a number >= 0"),
    ("teacher.backend=foo", "teacher.backend=foo is not a valid choice: must be one of llama-cpp, vllm, endpoint"),
    ("cluster.kind=x", "cluster.kind=x is not a valid choice: must be one of local, slurm"),
    ("cluster.nodes=0", "cluster.nodes=0 is out of range: must be an integer >= 1"),
    ("cluster.gpus_per_node=-1", "cluster.gpus_per_node=-1 is out of range: must be an integer >= 0"),
    ("cluster.time_min=0", "cluster.time_min=0 is out of range"),
    ("cluster.ray_object_store_mb=10", "cluster.ray_object_store_mb=10 is out of range: must be an integer >= 75"),
    ("teacher.port=65536", "teacher.port=65536 is out of range: must be an integer from 0 to 65535"),
    ("teacher.port=-1", "teacher.port=-1 is out of range: must be an integer from 0 to 65535"),
    ("teacher.startup_timeout_s=0", "teacher.startup_timeout_s=0.0 is out of range: must be a number > 0"),
    ("teacher.request_timeout_s=-5", "teacher.request_timeout_s=-5.0 is out of range: must be a number > 0"),
    ("teacher.throughput_tok_s=0", "teacher.throughput_tok_s=0.0 is out of range: must be a number > 0, or null"),
    ("teacher.max_retries=-1", "teacher.max_retries=-1 is out of range: must be an integer >= 0"),
    ("teacher.replicas=0", "teacher.replicas=0 is out of range"),
    ("teacher.tensor_parallel_size=0", "teacher.tensor_parallel_size=0 is out of range"),
    ("teacher.llama_cpp.n_parallel=0", "teacher.llama_cpp.n_parallel=0 is out of range"),
    ("teacher.llama_cpp.n_threads=0", "teacher.llama_cpp.n_threads=0 is out of range: must be an integer >= 1, or -1"),
    ("teacher.llama_cpp.n_gpu_layers=-2", "teacher.llama_cpp.n_gpu_layers=-2 is out of range"),
    ("teacher.vllm.max_num_seqs=0", "teacher.vllm.max_num_seqs=0 is out of range"),
    ("teacher.max_tokens=0", "teacher.max_tokens=0 is out of range: must be an integer >= 1"),
    ("taxonomy.max_file_bytes=0", "taxonomy.max_file_bytes=0 is out of range"),
    ("taxonomy.seed_token_budget=0", "taxonomy.seed_token_budget=0 is out of range: must be an integer >= 1, or null"),
    ("taxonomy.documents.chunk_tokens=0", "taxonomy.documents.chunk_tokens=0 is out of range"),
    ("taxonomy.documents.chunk_overlap_tokens=500", "taxonomy.documents.chunk_overlap_tokens=500 is out of range: "
     "must be an integer >= 0 and < taxonomy.documents.chunk_tokens (500)"),
    ("taxonomy.documents.chunk_overlap_tokens=-1", "taxonomy.documents.chunk_overlap_tokens=-1 is out of range"),
])
def test_out_of_range_values_are_config_errors(override: str, expected: str) -> None:
    message = _error([override])
    assert message.startswith(expected), message
    assert message.endswith(")")  # the reason, in brackets
    assert ";" not in message  # one violation


def test_every_violation_is_reported_at_once() -> None:
    bad = ["pipeline.sdg_scale_factor=0", "cluster.nodes=0", "generate.resume=sometimes", "teacher.port=99999"]
    message = _error(bad)
    parts = message.split("; ")
    assert len(parts) == len(bad), message
    for override in bad:
        assert any(p.startswith(override + " is ") for p in parts), (override, message)


def test_an_odd_string_value_stays_on_one_line() -> None:
    cfg = compose_config()
    cfg.generate.progress = "a\nb"
    cfg.generate.resume = ""
    with pytest.raises(ConfigError) as err:
        check_values(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "generate.resume='' is not a valid choice" in message
    assert "generate.progress='a\\nb' is not a valid choice" in message


@pytest.mark.parametrize("overrides", [
    ["teacher.port=0"], ["teacher.port=65535"], ["generate.error_rate_limit=0"], ["generate.error_rate_limit=1"],
    ["teacher.llama_cpp.n_gpu_layers=-1"], ["teacher.llama_cpp.n_threads=-1"], ["cluster.mem_gb=0"],
    ["cluster.gpus_per_node=0"], ["teacher.max_retries=0"],
    ["taxonomy.documents.chunk_tokens=300", "taxonomy.documents.chunk_overlap_tokens=299"],
    ["taxonomy.documents.chunk_overlap_tokens=0"],
    ["teacher.max_tokens=8191"],
    ["teacher.replicas=null", "teacher.throughput_tok_s=null", "teacher.vllm.max_num_seqs=null",
     "generate.max_concurrency=null", "taxonomy.seed_token_budget=null"],
    ["teacher.replicas=2", "teacher.throughput_tok_s=0.5", "generate.max_concurrency=1", "taxonomy.seed_token_budget=1"],
    ["generate.resume=fresh", "generate.progress=none", "cluster=slurm", "teacher.backend=vllm"],
])
def test_boundaries_and_nulls_are_accepted(overrides: list[str]) -> None:
    compose_config(overrides)


def test_defaults_pass() -> None:
    cfg = compose_config()
    assert violations(cfg) == []
    check_values(cfg)


@pytest.mark.parametrize("teacher, pipeline, cluster", list(itertools.product(
    _options("teacher"), _options("pipeline"), _options("cluster"))))
def test_every_shipped_group_option_passes(teacher: str, pipeline: str, cluster: str) -> None:
    compose_config([f"teacher={teacher}", f"pipeline={pipeline}", f"cluster={cluster}"])


def test_the_shipped_groups_are_the_ones_tested() -> None:
    assert len(_options("teacher")) >= 5 and _options("pipeline") == ["full", "simple"]
    assert _options("cluster") == ["local", "slurm"]


# --- check_values on its own (Hydra multirun jobs build their config without compose_config) --------------


def test_check_values_is_exported_and_works_before_to_object() -> None:
    assert compose.check_values is check_values
    cfg = compose_config()
    cfg.pipeline.sdg_scale_factor = 0
    with pytest.raises(ConfigError, match=r"^pipeline\.sdg_scale_factor=0 is out of range"):
        check_values(cfg)


def test_check_values_on_an_unresolved_config_and_on_the_dataclass() -> None:
    raw = OmegaConf.merge(OmegaConf.structured(SdgConfig), {"teacher": {"name": "t"}, "pipeline": {"name": "p"},
                                                             "cluster": {"nodes": 0}})
    assert "${" in OmegaConf.to_yaml(raw)  # interpolations still there
    with pytest.raises(ConfigError, match=r"^cluster\.nodes=0 is out of range"):
        check_values(raw)
    obj = to_object(compose_config())
    check_values(obj)
    obj.generate.error_rate_limit = 1.5
    with pytest.raises(ConfigError, match=r"^generate\.error_rate_limit=1\.5 is out of range"):
        check_values(obj)


def test_keys_absent_from_a_partial_config_are_skipped() -> None:
    assert violations(OmegaConf.create({"pipeline": {"sdg_scale_factor": 3}})) == []
    assert len(violations(OmegaConf.create({"pipeline": {"sdg_scale_factor": 0}}))) == 1


# --- the table covers the schema ---------------------------------------------------------------------------

NOT_RANGED = {"generate.seed"}  # any integer seeds a run


def _schema_leaves(cls: typing.Any = SdgConfig, prefix: str = "") -> dict[str, typing.Any]:
    out: dict[str, typing.Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]  # Optional[TeacherConfig]: the judge
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            tp = inner[0]
        if dataclasses.is_dataclass(tp):
            out.update(_schema_leaves(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def test_every_numeric_field_has_a_rule_and_every_rule_a_field() -> None:
    leaves = _schema_leaves()
    numeric = set()
    for key, tp in leaves.items():
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if any(a in (int, float) for a in args):
            numeric.add(key)
    assert numeric - NOT_RANGED - set(RULES) == set()
    assert set(RULES) - set(leaves) == set()
    for key, rule in RULES.items():
        optional = type(None) in typing.get_args(leaves[key])
        assert rule.optional == optional, key
        assert ";" not in rule.reason and "\n" not in rule.reason, key  # '; ' separates violations
        if isinstance(rule, Range):
            assert rule.lt_key is None or rule.lt_key in RULES


def test_enumerated_fields_are_choices_and_taxonomy_base_is_free() -> None:
    from sdg.teacher.serving import BACKENDS

    for key in ("teacher.backend", "generate.resume", "generate.progress", "cluster.kind"):
        assert isinstance(RULES[key], Choice), key
    assert RULES["teacher.backend"].choices == tuple(BACKENDS)
    assert "taxonomy.base" not in RULES
