"""Generation across the nodes of a REAL Slurm job (scripts/slurm_up.sh: 3 virtual nodes, 2 fake GPUs
each, accounting), with real Ray and real teachers (SmolLM2 on llama.cpp standing in for vLLM).

Each test submits its own job(s) with a fresh submitit folder and output dir. Generation is tiny
(example taxonomy, scale factor 1, 128 tokens). Small models' text varies: the tests assert where work
ran, files, fields, counts and unit bookkeeping, never words.
"""

from __future__ import annotations

import json
import os
import re
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
# 128 tokens: room for a whole question and answer (at 64 the small model's replies are cut off and keep nothing).
TINY = ["taxonomy.base=empty", "pipeline.sdg_scale_factor=1", "teacher.max_tokens=128",
        "taxonomy.documents.chunk_tokens=4000", "teacher.llama_cpp.n_threads=1", "generate.progress_interval_s=5",
        "teacher.startup_timeout_s=300", "pipeline.max_overgeneration=1"]  # no top-ups: short leaves stay short
JOB = ["cluster=slurm", "cluster.nodes=2", "cluster.gpus_per_node=1", "cluster.cpus_per_task=1", "cluster.mem_gb=1",
       "cluster.time_min=30", "cluster.allow_cpu_teacher=true"]  # llama.cpp stands in for vLLM on the fake GPUs


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
    keys = {o.split("=", 1)[0] for o in extra}  # an extra override replaces TINY's/JOB's
    base = [o for o in (*JOB, *TINY) if o.split("=", 1)[0] not in keys]
    return to_object(compose_config([*base, f"taxonomy.path={taxonomy}", f"generate.output_dir={tmp / out}", *extra]))


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


def _check_complete(out: Path, *, nonempty: bool = True) -> dict:
    run = _run_dir(out)
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert counts["units_failed"] == 0
    # every planned unit ran, was resumed, or was not needed (its leaf was full); top-ups ran on top
    assert counts["units_run"] + counts["units_resumed"] + counts["units_not_needed"] == \
        counts["units"] + counts["units_topup"]
    done = _done_units(out)
    assert len(done) == counts["units"] - counts["units_not_needed"] + counts["units_topup"], "units lost"
    assert set(done.values()) == {1}, f"units done twice: {[k for k, v in done.items() if v > 1]}"
    if nonempty:
        assert counts["kept"] > 0, "the run kept no sample: a complete run with nothing in it proves nothing"
    return manifest


def _kinds_of_files(run: Path, stamp: str) -> set[str]:
    """The run's files by kind; the phase files are left out (a phase that kept no sample has none: the small
    model's luck differs between two runs) and checked on their own."""
    return {str(p.relative_to(run)).replace(stamp, "<ds>") for p in run.rglob("*")
            if "journal" not in p.parts and p.name != "run.json" and "_train_msgs_" not in p.name
            and not p.name.startswith("mmlubench_") and not p.name.endswith("_task.yaml")  # >= 4 answers: luck too
            and not p.name.startswith("dropped_")}  # audit files exist only when something was dropped: luck too


def test_two_node_job_spreads_leaves_and_matches_a_local_run(env: Path, taxonomy: Path) -> None:
    """`sdg data generate cluster=slurm cluster.nodes=2 --wait` through the CLI: the job id, node 0's
    progress streamed, exit 0; fake GPUs and the tensor-parallel arithmetic per node; work on both nodes."""
    job_dir, out = env / "jobs", env / "out"
    t0 = time.monotonic()
    r = _sdg(env, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(out), "--wait", *JOB,
             *TINY, f"cluster.job_dir={job_dir}", "cluster.gpus_per_node=2", "teacher.tensor_parallel_size=2")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"submitted Slurm job (\d+): 2 node\(s\) x 2 GPU", r.stdout).group(1)  # type: ignore[union-attr]
    assert f"sdg jobs cancel {job_id}" in r.stdout
    assert "progress: " in r.stdout and "complete: " in r.stdout and "Wrote " in r.stdout
    attempt = job_dir / job_id / "sdg" / "attempt-0"
    # Fake GPUs: each node sees its 2 GPUs; tensor parallel 2 -> one replica of both (llama.cpp stands in).
    for name in ("node1", "node2"):
        rec = json.loads((attempt / f"node-{name}.json").read_text())
        assert rec["gpus"] == ["0", "1"] and rec["replicas"] == [["0", "1"]] and rec["stand_in"], rec
    for i in (0, 1):
        log = (job_dir / job_id / f"{job_id}_{i}_log.out").read_text()
        assert "2 GPU(s) visible [0,1], tensor parallel 2 -> 1 llama.cpp stand-in replica(s) [0+1]" in log
    state = json.loads((_run_dir(out) / "run.json").read_text())
    ex = state["executor"]
    assert ex["kind"] == "ray" and sorted(ex["nodes"]) == ["node1", "node2"]
    assert all(v["units"] > 0 for v in ex["per_node"].values())
    assert _writers(out) == {"node1", "node2"}  # leaves (or slices of them) ran on both nodes
    manifest = _check_complete(out)
    assert manifest["counts"]["units_resumed"] == 0
    kinds = {leaf["kind"] for leaf in manifest["leaves"]}
    assert kinds == {"freeform_skill", "grounded_skill", "foundational_skill", "knowledge"}
    print(f"2-node job through the CLI: {took:.0f} s end to end; per node {ex['per_node']}")
    _no_processes_left(job_id)

    # The same config run locally (one process, one teacher) makes the same kinds of files and records.
    from sdg.run import generate

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
    def records(folder: Path, name: str, stamp: str) -> list[dict]:
        path = folder / f"{name}_{stamp}.jsonl"
        if not path.exists():  # a phase that kept nothing has no file, never an empty one
            assert name.endswith("_train_msgs"), path
            return []
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert rows or not name.endswith("_train_msgs"), f"empty phase file {path}"
        return rows

    for name in ("train", "messages", "knowledge_train_msgs", "skills_train_msgs"):
        ours, theirs = records(run, name, manifest["stamp"]), records(res.run_dir, name, local["stamp"])
        for rec in ours[:1] + theirs[:1]:  # the same record shape (exact rows: the stand-in comparison test)
            assert set(rec) == set((ours or theirs)[0]), name
    assert local["counts"]["kept"] > 0 and manifest["counts"]["kept"] > 0


def test_preemption_requeues_then_scancel_and_resubmit_resume_without_loss_or_doubles(env: Path) -> None:
    """Mid-run, a preemption (SIGTERM + USR2: submitit checkpoints and requeues the job) and then, in the
    requeued attempt, a scancel; the same config submitted again finishes. Nothing is lost or done twice."""
    from sdg.launch.submit import result, submit

    out = env / "out"
    skills = _changed_leaves(env / "tax", "compositional_skills/writing/freeform/haiku",  # 15 units, no knowledge
                             "compositional_skills/extraction/grounded/meeting_action_items",
                             "foundational_skills/reasoning/unit_conversion")
    # every planned unit runs (pipeline.leaf_targets=false), so the units left for each attempt are known
    job = submit(_cfg(env, skills, f"cluster.job_dir={env / 'jobs-1'}", "taxonomy.base=main",
                      "pipeline.leaf_targets=false"))
    _wait_for_done_units(out, 3, job)
    job._interrupt()  # what Slurm does on preemption: SIGTERM, USR2 -> submitit checkpoints and requeues
    _skip_requeue_delay(job.job_id)
    attempt1 = Path(job.paths.folder) / "sdg" / "attempt-1"
    deadline = time.monotonic() + 300
    while not (attempt1 / "rendezvous.json").exists():
        assert time.monotonic() < deadline, "the requeued job did not start a second attempt"
        time.sleep(0.5)
    before_requeue = sum(_done_units(out).values())
    _wait_for_done_units(out, before_requeue + 2, job)  # the second attempt resumed and works
    assert (Path(job.paths.folder) / "sdg" / "attempt-0" / "done.json").exists()
    job.cancel()
    with pytest.raises(Exception):
        job.results()  # submitit sees the cancellation through sacct
    _no_processes_left(job.job_id)
    assert "attempt 1" in Path(job.paths.stdout).read_text()
    before = sum(_done_units(out).values())

    again = _cfg(env, skills, f"cluster.job_dir={env / 'jobs-2'}", "taxonomy.base=main",  # new folder, same run
                 "pipeline.leaf_targets=false")
    summary = result(submit(again))
    assert summary.complete and summary.units_resumed >= before, (summary, before)
    assert summary.units_run == summary.units - summary.units_resumed
    _check_complete(out)
    assert len([p for p in out.iterdir() if (p / "run.json").exists()]) == 1  # the same run folder


def _changed_leaves(root: Path, *rels: str) -> Path:
    """The example taxonomy on a branch that changes only `rels` against main: a smaller plan."""
    from tests.conftest import git

    tax = init_taxonomy(root).path
    git(tax, "checkout", "-q", "-b", "work")
    for rel in rels:
        leaf = tax / rel / "qna.yaml"
        leaf.write_text(leaf.read_text().replace("created_by: sdg-example", "created_by: sdg-changed"))
    git(tax, "commit", "-qam", "change some leaves")
    return tax


def test_sbatch_template_end_to_end_with_a_requeue(env: Path, tmp_path: Path) -> None:
    """`sbatch slurm/generate.sbatch OVERRIDES` (2 nodes, srun): the overrides reach every node's config;
    midway the batch shell gets the time-limit signal (USR2), requeues the job, the second attempt
    resumes and finishes."""
    out = env / "out"
    taxonomy = _changed_leaves(tmp_path / "tax", "compositional_skills/writing/freeform/haiku",
                               "foundational_skills/reasoning/unit_conversion")
    tiny = [o for o in TINY if not o.startswith("taxonomy.base")]
    args = [f"taxonomy.path={taxonomy}", f"generate.output_dir={out}", "taxonomy.base=main", *tiny,
            "pipeline.samples_per_unit=3"]
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
    assert {leaf["kind"] for leaf in manifest["leaves"]} == {"freeform_skill", "foundational_skill"}
    cfg = manifest["config"]  # the overrides, as the nodes composed them
    assert cfg["teacher"]["max_tokens"] == 128 and cfg["pipeline"]["samples_per_unit"] == 3
    assert cfg["taxonomy"]["base"] == "main" and cfg["generate"]["output_dir"] == str(out)
    _no_processes_left(job_id)


def _sdg(env: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The installed `sdg` console script, as a user runs it (private XDG dirs, this venv first on PATH)."""
    environ = {**os.environ, "XDG_DATA_HOME": str(env / "data"), "XDG_CACHE_HOME": str(env / "cache"),
               "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run([str(Path(sys.executable).parent / "sdg"), *args], capture_output=True, text=True,
                          timeout=timeout, env=environ, cwd=env)


def test_cli_wait_streams_a_job_whose_teacher_cannot_start_and_exits_1(env: Path, taxonomy: Path) -> None:
    """`sdg data generate cluster=slurm --wait`: the job id, then the job's own log, then its failure as
    the exit status; `sdg jobs status|logs` tell the same story later."""
    job_dir = env / "jobs"
    t0 = time.monotonic()
    r = _sdg(env, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(env / "out"), "--wait",
             *JOB, *TINY, f"cluster.job_dir={job_dir}", f"teacher.model={env / 'missing.gguf'}")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    job_id = re.search(r"submitted Slurm job (\d+): 2 node\(s\)", r.stdout).group(1)  # type: ignore[union-attr]
    assert f"sdg jobs status {job_id} cluster.job_dir={job_dir}" in r.stdout
    assert f"job {job_id} attempt 0" in r.stdout  # node 0's log, streamed
    assert f"error: Slurm job {job_id} did not finish" in r.stderr and "missing.gguf" in r.stderr, r.stderr
    assert took < 180, f"a job whose teacher cannot start took {took:.0f} s to fail"
    _no_processes_left(job_id)
    deadline = time.monotonic() + 60
    while "FAILED" not in (st := _sdg(env, "jobs", "status", job_id, "--job-dir", str(job_dir))).stdout:
        assert time.monotonic() < deadline, st.stdout + st.stderr
        time.sleep(0.5)
    assert f"job {job_id}: FAILED" in st.stdout and "attempt 0: failed" in st.stdout and "missing.gguf" in st.stdout
    logs = _sdg(env, "jobs", "logs", job_id, "--job-dir", str(job_dir), "--node", "1")
    assert logs.returncode == 0 and f"{job_id}_1_log" in logs.stdout, logs.stdout


def test_cli_submit_status_cancel(env: Path, taxonomy: Path) -> None:
    """Without --wait the submit returns at once with the job id; `sdg jobs` finds it by the output dir."""
    out = env / "out"
    r = _sdg(env, "data", "generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(out), *JOB, *TINY,
             "+cluster.additional_parameters.begin=now+3600")  # held back an hour: it stays pending
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = re.search(r"submitted Slurm job (\d+)", r.stdout).group(1)  # type: ignore[union-attr]
    st = _sdg(env, "jobs", "status", "--output-dir", str(out))
    assert st.stdout.strip() == f"job {job_id}: PENDING", st.stdout + st.stderr
    assert "no logs yet" in _sdg(env, "jobs", "logs", job_id, "--output-dir", str(out)).stdout
    c = _sdg(env, "jobs", "cancel", job_id, "--output-dir", str(out))
    assert c.returncode == 0 and f"Cancelled Slurm job {job_id}" in c.stdout, c.stdout + c.stderr
    deadline = time.monotonic() + 60
    while f"job {job_id}: CANCELLED" not in (st := _sdg(env, "jobs", "status", job_id, "--output-dir", str(out))).stdout:
        assert time.monotonic() < deadline, st.stdout
        time.sleep(0.5)
    missing = _sdg(env, "jobs", "status", "999999", "--output-dir", str(out))
    assert missing.returncode == 1 and f"jobs there: {job_id}" in missing.stderr, missing.stderr


def test_cli_sweep_on_slurm_is_one_array_with_a_folder_per_combination(env: Path, tmp_path: Path) -> None:
    """`sdg data generate -m cluster=slurm pipeline=simple,full`: hydra-submitit-launcher submits ONE
    array of two 1-node elements (side by side on the cluster), each writing its own complete run."""
    tax = _changed_leaves(tmp_path / "sweep-tax", "compositional_skills/writing/freeform/haiku")  # a small sweep
    out = env / "out"
    tiny = [o for o in TINY if not o.startswith("taxonomy.base")]
    r = _sdg(env, "data", "generate", "-m", "--taxonomy-path", str(tax), "--taxonomy-base", "main",
             "--output-dir", str(out), *JOB, "cluster.nodes=1", *tiny, "pipeline=simple,full",
             "generate.allow_empty=true")  # the array's mechanics are under test, not the 135M model's haiku yield
    assert r.returncode == 0, r.stdout + r.stderr
    assert "one Slurm array" in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("complete: ")]
    assert len(lines) == 2 and "pipeline=simple" in lines[0] and "pipeline=full" in lines[1], r.stdout
    ids = [re.search(r"\(Slurm job (\d+)_(\d+)\)", ln).groups() for ln in lines]  # type: ignore[union-attr]
    assert ids[0][0] == ids[1][0] and {ids[0][1], ids[1][1]} == {"0", "1"}, ids  # one array, two elements
    (sweep,) = (out / "multirun").iterdir()
    pipelines = set()
    for combo in ("0", "1"):
        manifest = _check_complete(sweep / combo, nonempty=False)  # the haiku leaf alone may keep nothing
        pipelines.add(manifest["pipeline"]["name"])
        assert [leaf["kind"] for leaf in manifest["leaves"]] == ["freeform_skill"]
    assert pipelines == {"simple", "full"}
    st = _sdg(env, "jobs", "status", "--job-dir", str(sweep / "slurm_jobs"))
    assert f"job {ids[0][0]}_0: COMPLETED" in st.stdout and f"job {ids[0][0]}_1: COMPLETED" in st.stdout, st.stdout


def _journal_units(run: Path) -> dict[str, str]:
    """unit id -> status, over every writer's journal of a run (complete lines)."""
    units: dict[str, str] = {}
    for path in (run / "journal").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
            rec = json.loads(line)
            units[rec["unit"]] = rec["status"]
    return units


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_local_and_ray_executors_run_the_same_units_and_rows(env: Path, taxonomy: Path) -> None:
    """One run, two executors: the same config run by the Ray executor (a 2-node Slurm job) and by the local
    executor gives the same unit ids and the same output rows. The teacher is a deterministic stand-in (the
    same reply for the same prompt), so the rows must match exactly. `taxonomy.base` is left unset in both:
    the example taxonomy has no origin/main, so both list every leaf and say so. Node 0 prints the same
    progress line as a local run, tokens included."""
    from sdg.launch.submit import result, submit
    from sdg.run import generate
    from tests.standin_teacher import DeterministicStandInTeacher

    common = [f"taxonomy.path={taxonomy}", "pipeline.sdg_scale_factor=2", "taxonomy.documents.chunk_tokens=4000",
              "teacher=endpoint", "generate.progress=log", "generate.progress_interval_s=0",
              "pipeline.leaf_targets=false"]  # exact rows: every planned unit runs (leaf targets depend on timing)
    with DeterministicStandInTeacher() as url:
        teacher = [f"teacher.endpoint_url={url}"]
        cfg = to_object(compose_config([*JOB, *common, *teacher, f"cluster.job_dir={env / 'jobs'}",
                                        f"generate.output_dir={env / 'slurm'}"]))
        assert cfg.taxonomy.base is None
        job = submit(cfg, log=lambda m: None)
        summary = result(job)
        local_cfg = to_object(compose_config([*common, *teacher, f"generate.output_dir={env / 'local'}"]))
        notes: list[str] = []
        local = generate(local_cfg, log=notes.append)
    assert summary.complete and local.complete and summary.executor["kind"] == "ray"
    slurm_run, local_run = Path(summary.run_dir), local.run_dir
    log = Path(job.paths.stdout).read_text()
    # taxonomy.base unset: the same leaves, and the same note, locally and on Slurm
    assert any("no base ref 'origin/main'" in n for n in notes) and "no base ref 'origin/main'" in log
    ours, theirs = (json.loads((r / "manifest.json").read_text()) for r in (slurm_run, local_run))
    assert [leaf["id"] for leaf in ours["leaves"]] == [leaf["id"] for leaf in theirs["leaves"]]
    assert len(ours["leaves"]) == 4
    # the same units, each done once
    slurm_units, local_units = _journal_units(slurm_run), _journal_units(local_run)
    assert slurm_units == local_units and set(slurm_units.values()) == {"done"}
    assert len(slurm_units) == ours["counts"]["units"] == theirs["counts"]["units"] > 0
    # the same output rows (kept counts and the training records' content)
    assert ours["counts"]["kept"] == theirs["counts"]["kept"] > 0
    for name in ("train", "knowledge_train_msgs", "skills_train_msgs"):
        a = _rows(slurm_run / f"{name}_{ours['stamp']}.jsonl")
        b = _rows(local_run / f"{name}_{theirs['stamp']}.jsonl")
        assert len(a) == len(b) > 0, name
        key = (lambda r: json.dumps(r.get("messages", r), sort_keys=True))
        assert sorted(map(key, a)) == sorted(map(key, b)), name
    # node 0 prints the local run's progress line: units, samples, tokens per second, ETA
    progress = [ln for ln in log.splitlines() if "progress: units" in ln]
    assert progress and re.search(r"samples \d+ \d+ tok/s", progress[-1]) and " eta " in progress[-1], log[-3000:]
    assert set(json.loads((slurm_run / "run.json").read_text())["executor"]["nodes"]) == {"node1", "node2"}
    _no_processes_left(str(job.job_id))


def test_a_judge_of_its_own_judges_on_every_node(env: Path, taxonomy: Path) -> None:
    """`judge=...` on Slurm: every node serves the judge beside its teacher (here the embedded model on
    llama.cpp, one CPU server per node, one thread), its endpoints reach each node's worker through the
    node's 0600 record file (not as Ray actor arguments), and every verdict goes to a judge server, none to
    the teacher (a deterministic stand-in that counts judge prompts server-side)."""
    from sdg.launch.submit import result, submit
    from tests.standin_teacher import DeterministicStandInTeacher

    teacher = DeterministicStandInTeacher()
    with teacher as url:
        cfg = _cfg(env, taxonomy, "teacher=endpoint", f"teacher.endpoint_url={url}", "pipeline=full",
                   "judge=smollm2-135m-cpu", "judge.llama_cpp.n_threads=1", "judge.llama_cpp.n_parallel=2",
                   "judge.max_tokens=64", "judge.startup_timeout_s=300", f"cluster.job_dir={env / 'jobs'}",
                   "generate.allow_empty=true", "pipeline.max_overgeneration=1")
        job = submit(cfg, log=lambda m: None)
        summary = result(job)
    assert summary.complete and summary.executor["kind"] == "ray", Path(job.paths.stdout).read_text()[-3000:]
    run = Path(summary.run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    judged = {name: n for name, n in manifest["servers"].items() if "judge-" in name}
    assert teacher.judge_requests == 0 and sum(judged.values()) > 0
    assert {name.split("-", 1)[0] for name in judged} == {"node1", "node2"}  # each node's own judge
    assert manifest["structured_verdicts"] == sum(judged.values())  # llama.cpp took the verdict schema
    log = Path(job.paths.stdout).read_text()
    assert "judge 1" in log  # node 0 started its judge beside the teacher
    _no_processes_left(str(job.job_id))


class _SlowStandIn:
    """The deterministic stand-in teacher, each chat reply held back `delay_s`: a run long enough to lose a
    node in the middle of it."""

    def __init__(self, delay_s: float) -> None:
        import asyncio

        from tests.standin_teacher import DeterministicStandInTeacher

        self.teacher = DeterministicStandInTeacher()
        fast = self.teacher._chat

        async def slow(request):  # type: ignore[no-untyped-def]
            await asyncio.sleep(delay_s)
            return await fast(request)

        self.teacher._chat = slow  # type: ignore[method-assign]

    def __enter__(self) -> str:
        return self.teacher.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.teacher.__exit__(*exc)


@pytest.mark.parametrize("leaf_targets,lose", [("true", "other"), ("false", "driver")])
def test_a_node_lost_mid_run_costs_only_its_in_flight_work(env: Path, taxonomy: Path, leaf_targets: str,
                                                           lose: str) -> None:
    """Mid-run a node's worker is killed (SIGKILL, as the OOM killer would): the driver drops that node, gives
    its in-flight units to the other, and the job completes; every unit is done exactly once (what the dead
    node journaled stays done, nothing it had in flight is lost or run twice); run.json's executor names the
    lost node. The other node's worker with leaf-level targets (LeafScheduler), the driver node's own worker
    without them (PlannedUnits): the driver goes on, its node's share done by the other node."""
    import signal

    from sdg.launch.submit import result, submit

    out = env / "out"
    with _SlowStandIn(1.0) as url:
        cfg = _cfg(env, taxonomy, "teacher=endpoint", f"teacher.endpoint_url={url}", f"cluster.job_dir={env / 'jobs'}",
                   f"pipeline.leaf_targets={leaf_targets}", "pipeline.sdg_scale_factor=6")
        job = submit(cfg, log=lambda m: None)
        attempt = Path(job.paths.folder) / "sdg" / "attempt-0"
        deadline = time.monotonic() + 300
        while not (rdv := attempt / "rendezvous.json").exists():
            assert not job.done() and time.monotonic() < deadline, job.stdout()
            time.sleep(0.5)
        driver = json.loads(rdv.read_text())["driver"]
        victim = driver if lose == "driver" else ({"node1", "node2"} - {driver}).pop()
        # the victim has journaled work (it kept some units) and work is left for after its loss
        while not (any(out.glob(f"*/journal/*.{victim}.jsonl")) and sum(_done_units(out).values()) >= 4):
            assert not job.done() and time.monotonic() < deadline, job.stdout()
            time.sleep(0.2)
        pid = int((attempt / f"worker-{victim}.pid").read_text())
        assert any(p.split()[0] == str(pid) for p in _job_processes(str(job.job_id))), "not a process of this job"
        os.kill(pid, signal.SIGKILL)
        killed_at = sum(_done_units(out).values())
        summary = result(job)
    log = Path(job.paths.stdout).read_text()
    assert summary.complete, log[-3000:]
    state = json.loads((_run_dir(out) / "run.json").read_text())
    lost = state["executor"].get("lost_nodes", {})
    assert list(lost) == [victim] and "worker died" in lost[victim], state["executor"]
    assert f"node {victim} lost" in log
    _check_complete(out)
    assert sum(_done_units(out).values()) > killed_at  # the run went on after the loss
    print(f"lost {victim} after {killed_at} units; per node {state['executor']['per_node']}; "
          + next(ln for ln in log.splitlines() if f"node {victim} lost" in ln))
    _no_processes_left(str(job.job_id))


def test_a_node_whose_teacher_dies_is_dropped_and_the_job_completes(env: Path, tmp_path: Path) -> None:
    """Mid-run the teacher server (llama.cpp) of a non-driver node is killed: that node's worker sees its server
    gone (the watchdog of the node's own server processes) and reports it; the driver drops the node, its units
    go to the driver's node, the job completes with every unit done once, and the lost node and why are in
    run.json's executor. The node itself keeps waiting for the driver's end (no hang, no failed job)."""
    import signal

    from sdg.launch.submit import result, submit

    out = env / "out"
    tax = _changed_leaves(tmp_path / "tax", "compositional_skills/writing/freeform/haiku",
                          "foundational_skills/reasoning/unit_conversion")
    # every planned unit runs (leaf_targets=false): with leaf targets a leaf may fill from its first replies, and
    # the run could end before the victim's loss is seen (this test is about a lost node, not about yield)
    job = submit(_cfg(env, tax, f"cluster.job_dir={env / 'jobs'}", "taxonomy.base=main", "pipeline.leaf_targets=false"),
                 log=lambda m: None)
    attempt = Path(job.paths.folder) / "sdg" / "attempt-0"
    deadline = time.monotonic() + 400
    while not (rdv := attempt / "rendezvous.json").exists():
        assert not job.done() and time.monotonic() < deadline, job.stdout()
        time.sleep(0.5)
    victim = ({"node1", "node2"} - {json.loads(rdv.read_text())["driver"]}).pop()
    while not any(out.glob(f"*/journal/*.{victim}.jsonl")):
        assert not job.done() and time.monotonic() < deadline, job.stdout()
        time.sleep(0.5)
    (ep,) = json.loads((attempt / f"node-{victim}.json").read_text())["endpoints"]
    assert any(p.split()[0] == str(ep["pid"]) for p in _job_processes(str(job.job_id))), "not a process of this job"
    os.killpg(ep["pid"], signal.SIGKILL)  # the server's process group (it leads one)
    summary = result(job)
    log = Path(job.paths.stdout).read_text()
    assert summary.complete, log[-3000:]
    lost = json.loads((_run_dir(out) / "run.json").read_text())["executor"].get("lost_nodes", {})
    assert list(lost) == [victim] and "teacher" in lost[victim], lost
    _check_complete(out, nonempty=False)
    victim_log = next(Path(job.paths.folder).glob("*_1_log.out")).read_text()
    assert "this node's teacher is gone" in victim_log, victim_log[-2000:]
    print(f"lost {victim}: {lost[victim]}")
    _no_processes_left(str(job.job_id))
