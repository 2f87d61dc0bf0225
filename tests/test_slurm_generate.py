"""Generation across the nodes of a REAL Slurm job (scripts/slurm_up.sh: 3 virtual nodes, 2 fake GPUs
each, accounting), with real Ray and real teachers (SmolLM2 on llama.cpp standing in for vLLM).

Each test submits its own job(s) with a fresh submitit folder and output dir. Generation is tiny
(example taxonomy, scale factor 1, 64 tokens). Small models' text varies: the tests assert where work
ran, files, fields, counts and unit bookkeeping, never words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.taxonomy.init import init_taxonomy
from tests.slurm_support import require_slurm

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm(nodes=2)


# Tiny generation; two llama.cpp servers (one per node) with one thread each on this 2-core machine.
TINY = ["taxonomy.base=empty", "pipeline.sdg_scale_factor=1", "teacher.max_tokens=64",
        "taxonomy.documents.chunk_tokens=4000", "teacher.llama_cpp.n_threads=1", "generate.progress_interval_s=5",
        "teacher.startup_timeout_s=300"]
JOB = ["cluster=slurm", "cluster.nodes=2", "cluster.gpus_per_node=1", "cluster.cpus_per_task=1", "cluster.mem_gb=1",
       "cluster.time_min=30"]


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_taxonomy(tmp_path_factory.mktemp("tax") / "taxonomy").path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private XDG dirs, in this process and (through sbatch's environment) in the job."""
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def _cfg(tmp: Path, taxonomy: Path, *extra: str, out: str = "out"):
    return to_object(compose_config([*JOB, *TINY, f"taxonomy.path={taxonomy}", f"generate.output_dir={tmp / out}",
                                     *extra]))


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if (p / "run.json").exists()]
    return run


def _done_units(out: Path) -> Counter:
    """(leaf, unit) -> how many `done` records, over every journal file of every writer (raw lines)."""
    seen: Counter = Counter()
    for path in out.glob("*/journal/*.jsonl"):
        leaf = path.name.split(".", 1)[0]
        data = path.read_text(encoding="utf-8")
        lines = data.split("\n")[:-1]  # a torn last line (no newline) is not a record
        for line in lines:
            rec = json.loads(line)
            if rec["status"] == "done":
                seen[(leaf, rec["unit"])] += 1
    return seen


def _writers(out: Path) -> set[str]:
    return {p.name.split(".")[1] for p in out.glob("*/journal/*.jsonl")}


def _wait_for_done_units(out: Path, n: int, job, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while sum(_done_units(out).values()) < n:
        assert not job.done(), f"job ended before {n} units were done:\n{job.stdout()}\n{job.stderr()}"
        assert time.monotonic() < deadline, f"fewer than {n} units done after {timeout} s"
        time.sleep(1)


def _job_processes(job_id: str) -> list[str]:
    """Live processes that belong to Slurm job `job_id` (by SLURM_JOB_ID in their environment)."""
    found = []
    needle = f"SLURM_JOB_ID={job_id}\0".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid} {cmd[:120]}")
        except OSError:
            continue
    return found


def _no_processes_left(job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (left := _job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"processes of job {job_id} outlived it: {left}"


def _skip_requeue_delay(job_id: str, timeout: float = 120) -> None:
    """Slurm makes a requeued job eligible only 120 s later (Reason=BeginTime); on this test cluster we
    are the admin and let it start now (a real cluster just waits the two minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
        if r.stdout.split() == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} was not requeued within {timeout} s: {r.stdout}")


def _check_complete(out: Path) -> dict:
    run = _run_dir(out)
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert counts["units_failed"] == 0 and counts["units_run"] + counts["units_resumed"] == counts["units"]
    done = _done_units(out)
    assert len(done) == counts["units"], "units lost"
    assert set(done.values()) == {1}, f"units done twice: {[k for k, v in done.items() if v > 1]}"
    return manifest


def _kinds_of_files(run: Path, stamp: str) -> set[str]:
    return {str(p.relative_to(run)).replace(stamp, "<ds>") for p in run.rglob("*")
            if "journal" not in p.parts and p.name != "run.json"}


def test_two_node_job_spreads_leaves_and_matches_a_local_run(env: Path, taxonomy: Path) -> None:
    from sdg.launch.submit import follow, submit

    cfg = _cfg(env, taxonomy, f"cluster.job_dir={env / 'jobs'}", "cluster.gpus_per_node=2",
               "teacher.tensor_parallel_size=2")
    t0 = time.monotonic()
    said: list[str] = []
    job = submit(cfg, log=said.append)
    assert f"submitted Slurm job {job.job_id}: 2 node(s)" in said[0] and f"scancel {job.job_id}" in said[-1]
    streamed: list[str] = []
    summary = follow(job, log=streamed.append, poll_s=1.0)
    assert any("progress: " in line for line in streamed) and any("complete: " in line for line in streamed)
    took = time.monotonic() - t0
    out = env / "out"
    # Fake GPUs: each node sees its 2 GPUs; tensor parallel 2 -> one replica of both (llama.cpp stands in).
    assert set(summary["nodes"]) == {"node1", "node2"}, summary
    for node in summary["nodes"].values():
        assert node["gpus"] == ["0", "1"] and node["replicas"] == [["0", "1"]] and node["stand_in"]
    assert summary["complete"] and summary["units_resumed"] == 0
    assert all(v["units"] > 0 for v in summary["per_node"].values()), summary["per_node"]
    assert _writers(out) == {"node1", "node2"}  # leaves (or slices of them) ran on both nodes
    manifest = _check_complete(out)
    kinds = {leaf["kind"] for leaf in manifest["leaves"]}
    assert kinds == {"freeform_skill", "grounded_skill", "foundational_skill", "knowledge"}
    log = Path(job.paths.stdout).read_text()
    assert "2 GPU(s) visible [0,1], tensor parallel 2 -> 1 llama.cpp stand-in replica(s) [0+1]" in log
    print(f"2-node job: {took:.0f} s end to end, {summary['elapsed_s']:.0f} s in the job; per node "
          f"{summary['per_node']}")
    _no_processes_left(job.job_id)

    # The same config run locally (one process, one teacher) makes the same kinds of files and records.
    from sdg.engine.generate import generate

    local_cfg = to_object(compose_config([*TINY, "teacher.llama_cpp.n_threads=2", f"taxonomy.path={taxonomy}",
                                          f"generate.output_dir={env / 'local'}", "generate.progress=none"]))
    t0 = time.monotonic()
    res = generate(local_cfg, log=lambda m: None)
    print(f"local run: {time.monotonic() - t0:.0f} s")
    assert res.complete
    local = json.loads((res.run_dir / "manifest.json").read_text())
    run = _run_dir(out)
    assert _kinds_of_files(run, manifest["stamp"]) == _kinds_of_files(res.run_dir, local["stamp"])
    assert set(manifest) == set(local)
    assert manifest["counts"]["units"] == local["counts"]["units"]
    assert [leaf["id"] for leaf in manifest["leaves"]] == [leaf["id"] for leaf in local["leaves"]]
    for name in ("train", "messages", "knowledge_train_msgs", "skills_train_msgs"):
        ours = [json.loads(x) for x in (run / f"{name}_{manifest['stamp']}.jsonl").read_text().splitlines()]
        theirs = [json.loads(x) for x in (res.run_dir / f"{name}_{local['stamp']}.jsonl").read_text().splitlines()]
        if ours and theirs:
            assert set(ours[0]) == set(theirs[0]), name


def test_scancel_then_resubmit_resumes_without_loss_or_doubles(env: Path, taxonomy: Path) -> None:
    from sdg.launch.submit import result, submit

    cfg = _cfg(env, taxonomy, f"cluster.job_dir={env / 'jobs-1'}")
    out = env / "out"
    job = submit(cfg)
    _wait_for_done_units(out, 3, job)
    job.cancel()
    with pytest.raises(Exception):
        job.results()  # submitit sees the cancellation through sacct
    _no_processes_left(job.job_id)
    before = sum(_done_units(out).values())
    assert 3 <= before < 20, before

    again = _cfg(env, taxonomy, f"cluster.job_dir={env / 'jobs-2'}")  # fresh submitit folder, same run
    summary = result(submit(again))
    assert summary["complete"] and summary["units_resumed"] >= before, (summary, before)
    assert summary["units_run"] == summary["units"] - summary["units_resumed"]
    _check_complete(out)
    assert len([p for p in out.iterdir() if (p / "run.json").exists()]) == 1  # the same run folder


def test_preemption_requeues_and_finishes(env: Path, taxonomy: Path) -> None:
    from sdg.launch.submit import result, submit

    cfg = _cfg(env, taxonomy, f"cluster.job_dir={env / 'jobs'}")
    out = env / "out"
    job = submit(cfg)
    _wait_for_done_units(out, 3, job)
    job._interrupt()  # what Slurm does on preemption: SIGTERM, USR2 -> submitit checkpoints and requeues
    _skip_requeue_delay(job.job_id)
    summary = result(job)
    assert summary["complete"] and summary["units_resumed"] >= 3, summary
    folder = Path(job.paths.folder)
    assert (folder / "sdg" / "attempt-0" / "done.json").exists()
    assert (folder / "sdg" / "attempt-1" / "done.json").exists(), "the job did not run a second attempt"
    assert "attempt 1" in Path(job.paths.stdout).read_text()
    _check_complete(out)
    _no_processes_left(job.job_id)


def test_sbatch_template_end_to_end_with_a_requeue(env: Path, taxonomy: Path) -> None:
    """`sbatch slurm/generate.sbatch OVERRIDES`; midway the batch shell gets the time-limit signal
    (USR2), requeues the job, and the second attempt resumes and finishes."""
    out = env / "out"
    args = [f"taxonomy.path={taxonomy}", f"generate.output_dir={out}", *TINY]
    t0 = time.monotonic()
    r = subprocess.run(["sbatch", "--parsable", "-N", "2", "--gpus-per-node=1", "--cpus-per-task=1", "--mem=1G",
                        "-t", "30", "-o", str(env / "%j.out"), str(REPO / "slurm" / "generate.sbatch"), *args],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "SDG_PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().split(";")[0]
    log_path = env / f"{job_id}.out"

    class Job:  # what _wait_for_done_units needs
        def done(self) -> bool:
            return not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()

        def stdout(self) -> str:
            return log_path.read_text() if log_path.exists() else ""

        stderr = stdout

    _wait_for_done_units(out, 3, Job())
    subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True)  # as Slurm does before the limit
    _skip_requeue_delay(job_id)
    deadline = time.monotonic() + 600
    while not Job().done():
        assert time.monotonic() < deadline, "the requeued job did not finish in 10 minutes"
        time.sleep(2)
    states = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                            text=True).stdout.split()
    log = Job().stdout()
    assert states[-1] == "COMPLETED", (states, log)
    print(f"sbatch slurm/generate.sbatch with one requeue: {time.monotonic() - t0:.0f} s; states {states}")
    assert "1 GPU(s) visible [0], tensor parallel 1 -> 1 llama.cpp stand-in replica(s) [0]" in log
    assert f"job {job_id} attempt 1" in log and "step finished with code 0" in log
    assert _writers(out) == {"node1", "node2"}
    manifest = _check_complete(out)
    assert manifest["counts"]["units_resumed"] >= 3
    _no_processes_left(job_id)


def test_a_teacher_that_cannot_start_fails_the_job_quickly(env: Path, taxonomy: Path) -> None:
    from sdg.launch.submit import result, submit

    cfg = _cfg(env, taxonomy, f"cluster.job_dir={env / 'jobs'}", f"teacher.model={env / 'missing.gguf'}")
    t0 = time.monotonic()
    job = submit(cfg)
    with pytest.raises(Exception, match="missing.gguf"):
        result(job)
    assert time.monotonic() - t0 < 180
    _no_processes_left(job.job_id)
    from sdg.launch import jobs

    deadline = time.monotonic() + 60
    while (st := jobs.status(env / "jobs", job.job_id)).state in ("RUNNING", "COMPLETING", "PENDING"):
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    assert st.state == "FAILED" and st.attempts[0]["status"] == "failed", st
    assert "missing.gguf" in st.describe() and "missing.gguf" in jobs.logs(env / "jobs", job.job_id)


def test_jobs_status_logs_cancel(env: Path, taxonomy: Path) -> None:
    from sdg.launch import jobs
    from sdg.launch.submit import submit

    job_dir = env / "jobs"
    cfg = _cfg(env, taxonomy, f"cluster.job_dir={job_dir}", "+cluster.additional_parameters.begin=now+3600")
    job = submit(cfg, log=lambda m: None)  # held back an hour: it stays pending
    assert jobs.list_jobs(job_dir) == [job.job_id]
    st = jobs.status(job_dir, job.job_id)
    assert st.state == "PENDING" and st.attempts == () and f"job {job.job_id}: PENDING" in st.describe()
    assert "no logs yet" in jobs.logs(job_dir, job.job_id)
    jobs.cancel(job.job_id)
    deadline = time.monotonic() + 60
    while (st := jobs.status(job_dir, job.job_id)).state != "CANCELLED":
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    with pytest.raises(jobs.JobNotFound, match=f"jobs there: {job.job_id}"):
        jobs.status(job_dir, "999999")
