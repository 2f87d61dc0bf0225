"""A judge of its own (`judge=...`): judge blocks ask it and nothing else does; verdicts are schema-
constrained JSON where its server takes a schema (found out at readiness), free text where not.

Two kinds of servers: the deterministic stand-in (tests/standin_teacher.py: real HTTP; it counts judge
prompts server-side and answers a json_schema request as a constrained server would) for exact counts,
and two real llama.cpp servers (the embedded model twice) for the real thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sdg.taxonomy.init import init_taxonomy
from tests.standin_teacher import DeterministicStandInTeacher

SDG = str(Path(sys.executable).parent / "sdg")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_taxonomy(tmp_path_factory.mktemp("tax") / "taxonomy").path


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_CACHE_HOME": str(tmp / "cache"),
            "HOME": str(tmp / "home")}


def _generate(tmp: Path, taxonomy: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp / "out"),
                           "--sdg-scale-factor", "1", "taxonomy.documents.chunk_tokens=4000", "--pipeline", "full",
                           "generate.progress=log", *args], env=_env(tmp), capture_output=True, text=True,
                          timeout=timeout)


def _run_dir(tmp: Path) -> Path:
    (run,) = [p for p in (tmp / "out").iterdir() if (p / "run.json").exists()]
    return run


def _judge_drops(quality: dict) -> dict[str, int]:
    return {reason: n for leaf in quality["leaves"].values() for reason, n in leaf["dropped"].items()
            if reason.startswith("judge_")}


@pytest.mark.parametrize("structured", ["auto", "off"])
def test_judge_requests_go_to_the_judge_and_only_there(tmp_path: Path, taxonomy: Path, structured: str) -> None:
    teacher, judge = DeterministicStandInTeacher(), DeterministicStandInTeacher()
    with teacher as teacher_url, judge as judge_url:
        r = _generate(tmp_path, taxonomy, "--endpoint-url", teacher_url, "judge=endpoint",
                      f"judge.endpoint_url={judge_url}", f"judge.structured_output={structured}")
    assert r.returncode == 0, r.stdout + r.stderr
    run = _run_dir(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    # server side: every judge prompt reached the judge, none the teacher; the judge saw nothing else
    assert teacher.judge_requests == 0 and judge.judge_requests > 0
    # besides verdicts the judge got the readiness probe every server gets and, with auto, the one question
    # whether it takes JSON schemas
    probes = 1 + (structured == "auto")
    assert judge.requests == judge.judge_requests + probes
    # client side, as the manifest records it, agrees with the servers (probes are not a unit's requests)
    servers = manifest["servers"]
    assert sum(n for name, n in servers.items() if name.startswith("judge-")) == judge.judge_requests
    assert sum(n for name, n in servers.items() if not name.startswith("judge-")) == teacher.requests - 1
    assert manifest["judge"]["backend"] == "endpoint" and manifest["counts"]["kept"] > 0
    if structured == "auto":  # the stand-in takes schemas: every verdict went out with one and parsed
        assert judge.schema_requests == judge.judge_requests + 1
        assert manifest["structured_verdicts"] == judge.judge_requests
    else:
        assert judge.schema_requests == 0 and manifest["structured_verdicts"] == 0
    quality = json.loads((run / "quality_report.json").read_text())
    assert not {k: n for k, n in _judge_drops(quality).items() if k.endswith((":unparseable", ":out_of_range"))}


def test_without_a_judge_the_teacher_judges_in_free_text(tmp_path: Path, taxonomy: Path) -> None:
    teacher = DeterministicStandInTeacher()
    with teacher as url:
        r = _generate(tmp_path, taxonomy, "--endpoint-url", url, "teacher.structured_output=off")
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((_run_dir(tmp_path) / "manifest.json").read_text())
    assert teacher.judge_requests > 0 and teacher.schema_requests == 0
    assert manifest["judge"] == {} and manifest["structured_verdicts"] == 0


def _metric(base_url: str, name: str) -> float:
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_real_llama_cpp_judge_beside_a_real_teacher(tmp_path: Path, taxonomy: Path) -> None:
    """The embedded model twice, on two llama.cpp servers (one thread each): the judge server answers every
    verdict as JSON constrained to the verdict schema, so no verdict is lost to its format."""
    from sdg.teacher.backends import LlamaCppServer
    from tests.conftest import smollm2_gguf

    def server(name: str) -> LlamaCppServer:
        return LlamaCppServer(gguf=smollm2_gguf(), model_name="teacher", context_length=4096, n_parallel=2,
                              n_threads=1, log_path=tmp_path / f"{name}.log", startup_timeout_s=120)

    with server("teacher") as t, server("judge") as j:
        judged_before = _metric(j.base_url, "llamacpp:prompt_tokens_total")
        r = _generate(tmp_path, taxonomy, "--endpoint-url", t.base_url, "--model", "teacher", "teacher.max_tokens=128",
                      "judge=endpoint", f"judge.endpoint_url={j.base_url}", "generate.allow_empty=true",
                      "pipeline.max_overgeneration=1")  # no top-ups: the 135M model leaves leaves short
        judged = _metric(j.base_url, "llamacpp:prompt_tokens_total") - judged_before
        generated = _metric(t.base_url, "llamacpp:prompt_tokens_total")
    assert r.returncode == 0, r.stdout + r.stderr
    run = _run_dir(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    judge_requests = sum(n for name, n in manifest["servers"].items() if name.startswith("judge-"))
    assert judge_requests > 0 and judged > 0 and generated > 0  # both servers worked, each on its own part
    assert manifest["structured_verdicts"] == judge_requests  # llama.cpp took the schema: every verdict constrained
    quality = json.loads((run / "quality_report.json").read_text())
    drops = _judge_drops(quality)
    assert not {k: n for k, n in drops.items() if k.endswith((":unparseable", ":truncated", ":out_of_range"))}, drops
