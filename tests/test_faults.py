"""Failure paths of `sdg data generate`, each against a real HTTP teacher that misbehaves on cue
(tests/standin_teacher.py) or a real full disk: nothing finished is lost, nothing failed is kept as done,
a broken teacher stops the run within seconds with a message naming the cause, no secret is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdg.engine.lease import RunLease
from sdg.errors import RunBusy
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


def _generate(tmp: Path, taxonomy: Path, url: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp / "out"),
                           "--endpoint-url", url, "--sdg-scale-factor", "1", "taxonomy.documents.chunk_tokens=4000",
                           "generate.progress=log", "generate.progress_interval_s=2", *args],
                          env=_env(tmp), capture_output=True, text=True, timeout=timeout)


def _run_dir(tmp: Path) -> Path:
    (run,) = [p for p in (tmp / "out").iterdir() if (p / "run.json").exists()]
    return run


def _journal(run: Path) -> dict[str, str]:
    units: dict[str, str] = {}
    for path in sorted((run / "journal").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if units.get(rec["unit"]) != "done":
                units[rec["unit"]] = rec["status"]
    return units


def test_judge_failures_leave_the_unit_failed_and_a_rerun_redoes_it(tmp_path: Path, taxonomy: Path) -> None:
    """full pipeline: generation works, every judge request fails (503, retried, then given up). The units
    must be journaled failed (not done with 0 rows), the run incomplete (exit 1); the same command against
    a healthy teacher redoes exactly those units."""
    # every planned unit runs (pipeline.leaf_targets=false): this is about failed units being redone, not targets
    args = ("--pipeline", "full", "teacher.max_retries=1", "--max-concurrency", "4", "pipeline.leaf_targets=false")
    with DeterministicStandInTeacher(mode="fail_judges") as url, DeterministicStandInTeacher() as good:
        r = _generate(tmp_path, taxonomy, url, *args)
        judged = DeterministicStandInTeacher  # for the message below
        assert r.returncode == 1, r.stdout + r.stderr
        run = _run_dir(tmp_path)
        first = _journal(run)
        failed = {u for u, s in first.items() if s == "failed"}
        assert failed, f"no unit failed although every judge request did: {first}"
        assert json.loads((run / "run.json").read_text())["status"] == "incomplete"
        quality = json.loads((run / "quality_report.json").read_text())
        assert sum(q["failed_units"] for q in quality["leaves"].values()) == len(failed)
        r2 = _generate(tmp_path, taxonomy, good, *args)
    assert f"resuming run {run}" in r2.stderr, r2.stderr
    second = _journal(run)
    assert set(second) == set(first) and all(second[u] == "done" for u in failed), second
    del judged


def test_a_hung_teacher_is_stopped_by_the_time_breaker_and_a_second_writer_is_refused(tmp_path: Path,
                                                                                       taxonomy: Path) -> None:
    """An endpoint that accepts requests and never answers: progress lines say what is waiting, and the run
    stops (non-zero) after generate.stall_timeout_s with a message naming the cause. While it hangs, the same
    command in a second process is refused: the run folder has one writer."""
    with DeterministicStandInTeacher(mode="hang") as url:
        cmd = [SDG, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(tmp_path / "out"),
               "--endpoint-url", url, "--sdg-scale-factor", "1", "taxonomy.documents.chunk_tokens=4000",
               "generate.progress=log", "generate.progress_interval_s=2", "generate.stall_timeout_s=12"]
        t0 = time.monotonic()
        first = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out").glob("*/lease.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
        out, err = first.communicate(timeout=180)
        took = time.monotonic() - t0
    assert second.returncode == 1 and "is in use by pid" in second.stderr, second.stderr
    assert first.returncode == 1, out + err
    assert "no reply from the teacher for" in err and "stall_timeout_s" in err, err
    assert "waiting: " in err and "requests in flight" in err, err  # the stall was visible while it happened
    assert took < 120, took
    run = _run_dir(tmp_path)
    assert not (run / "lease.json").exists()  # released on the way out


def test_a_teacher_answering_garbage_is_stopped_by_the_yield_breaker(tmp_path: Path, taxonomy: Path) -> None:
    with DeterministicStandInTeacher(mode="garbage") as url:
        r = _generate(tmp_path, taxonomy, url, "generate.unusable_window=10")
    assert r.returncode == 1
    assert "the teacher's replies are not usable" in r.stderr and "chat template" in r.stderr, r.stderr


def test_a_run_that_keeps_nothing_says_so_and_exits_non_zero(tmp_path: Path, taxonomy: Path) -> None:
    """Fewer replies than the yield breaker's window: the run ends, writes its (empty) files and says so."""
    with DeterministicStandInTeacher(mode="garbage") as url:
        r = _generate(tmp_path, taxonomy, url)
        assert r.returncode == 1 and "the run kept 0 samples" in r.stderr, r.stderr
        assert "kept 0 of its" in r.stderr  # and per leaf, why
        ok = _generate(tmp_path / "again", taxonomy, url, "generate.allow_empty=true")
    assert ok.returncode == 0, ok.stderr


def test_secrets_reach_no_file(tmp_path: Path, taxonomy: Path) -> None:
    """API key, HF_TOKEN in teacher.vllm.env, a token in vLLM args, credentials in a URL and in a
    cluster.setup line: none of them is written into the run folder (manifest, run.json, reports, card)."""
    secrets = ["sk-apikey-0123456789", "hf_envtoken_0123456789", "hf_argtoken_0123456789", "urlpassword0123"]
    with DeterministicStandInTeacher() as url:
        keyed = _generate(tmp_path, taxonomy, url, f"teacher.api_key={secrets[0]}",
                          f"+teacher.vllm.env.HF_TOKEN={secrets[1]}", f"teacher.vllm.args=[--hf-token,{secrets[2]}]",
                          f"cluster.setup=['export HF_TOKEN={secrets[1]}']")
        # basic-auth credentials in the endpoint URL (a proxy), in a second run of its own
        in_url = _generate(tmp_path / "url", taxonomy, url.replace("http://", f"http://user:{secrets[3]}@"))
    for r, out in ((keyed, tmp_path / "out"), (in_url, tmp_path / "url" / "out")):
        assert r.returncode == 0, r.stderr
        files = [p for p in out.rglob("*") if p.is_file()]
        assert any(p.name == "manifest.json" for p in files)
        for path in files:
            text = path.read_text(errors="replace")
            for s in secrets:
                assert s not in text, f"{s} in {path}"
        for s in secrets:
            assert s not in r.stdout + r.stderr


def test_lease_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from sdg.engine.lease import RunLease; RunLease(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=rf"in use by pid {holder.pid} on "):
            RunLease(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lease = RunLease(tmp_path).acquire()  # its process is gone: taken over, and said so
    try:
        assert f"took over the run from pid {holder.pid}" in lease.note and "has exited" in lease.note
    finally:
        lease.release()
    assert not (tmp_path / "lease.json").exists()
