"""Which GPUs sdg reads inside REAL Slurm job steps, for each way of asking for GPUs (sdg.teacher.gpus:
`visible_gpus` -> `node_plan`, what every node of a generate job runs before it starts its servers).

Every case runs `.venv/bin/python -c PROBE` inside the step (srun, or the batch script of sbatch) on the
local cluster of scripts/slurm_up.sh (3 nodes x 2 fake GPUs, gres.conf with device files) and reads back
what sdg derived there: the GPU ids, where they came from, and the replicas for tensor parallel 1 and 2.

Real Slurm (this cluster runs TaskPlugin=task/none, so CUDA_VISIBLE_DEVICES holds the node's ABSOLUTE ids):
  --gres=gpu:N, --gpus-per-node=N, --gpus=N over two nodes (2 + 1), --gpus-per-task=1 with -n 2 (one GPU
  per task, disjoint), the batch script of a --gres job, and steps of one job that ask for fewer GPUs than
  the job has (two concurrent 1-GPU steps get disjoint GPUs; a --gres=none step gets none).
The environment of a cgroup-constrained step (TaskPlugin=task/cgroup + ConstrainDevices=yes; cgroups cannot
be delegated into this container, and the shared test cluster must not change): Slurm then sets
CUDA_VISIBLE_DEVICES to 0..n-1 (the step's devices as CUDA numbers them behind the constraint) while
SLURM_STEP_GPUS / SLURM_JOB_GPUS keep the absolute ids (Slurm's gres_common.c: local index iff the task
plugin is cgroup and ConstrainDevices=yes). The probe builds that environment INSIDE the real step, from the
step's own SLURM_STEP_GPUS, and also the same step with CUDA_VISIBLE_DEVICES unset (a site prolog or
container runtime that drops it): sdg must give 0..n-1, never the absolute ids. (Per-task binding behind a
constraint renumbers within the step, which the probe cannot reconstruct from one task's variables; that
case is covered for real, unconstrained, only.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_support import require_slurm

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable

# Runs inside the step: sdg's own functions on the step's environment, and on that environment as a
# cgroup-constrained step would have it (CUDA_VISIBLE_DEVICES renumbered 0..n-1) or with it unset.
PROBE = r"""
import json, os
from types import SimpleNamespace
from sdg.errors import GpuPlanError
from sdg.teacher.gpus import node_plan, visible_gpus

def derive(env):
    gpus, source = visible_gpus(env)
    plans = {}
    for tp in (1, 2):
        teacher = SimpleNamespace(backend="vllm", tensor_parallel_size=tp, replicas=None)
        try:
            plans[tp] = [list(r.gpus) for r in node_plan(teacher, gpus, source).replicas]
        except GpuPlanError as exc:
            plans[tp] = "refused: " + str(exc)
    return {"gpus": list(gpus), "source": source, "tp1": plans[1], "tp2": plans[2]}

env = dict(os.environ)
step = [g for g in env.get("SLURM_STEP_GPUS", env.get("SLURM_JOB_GPUS", "")).split(",") if g]
constrained = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
if "CUDA_VISIBLE_DEVICES" in env:
    constrained["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(step)))
unset = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
print(json.dumps({
    "node": env.get("SLURMD_NODENAME"), "task": int(env.get("SLURM_PROCID", "0")),
    "step": env.get("SLURM_STEP_ID"), "cvd": env.get("CUDA_VISIBLE_DEVICES"),
    "step_gpus": env.get("SLURM_STEP_GPUS"), "job_gpus": env.get("SLURM_JOB_GPUS"),
    "real": derive(env), "constrained": derive(constrained), "cvd_unset": derive(unset),
}), flush=True)
"""


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm(nodes=2, python_modules=())


def _rows(out: str) -> list[dict]:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return sorted(rows, key=lambda r: (r["node"], r["task"], r["step"] or ""))


def _srun(*args: str) -> list[dict]:
    t0 = time.monotonic()
    r = subprocess.run(["srun", "-t", "1", "--mem=200M", *args, PYTHON, "-c", PROBE], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    print(f"srun {' '.join(args)}: {time.monotonic() - t0:.1f} s")
    return _rows(r.stdout)


def _ids(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _constraint_safe(row: dict, n: int) -> None:
    """Behind a device constraint (or with CUDA_VISIBLE_DEVICES dropped) the step's n GPUs are 0..n-1."""
    for case in ("constrained", "cvd_unset"):
        assert row[case]["gpus"] == _ids(n), (case, row)
    assert "SLURM_STEP_GPUS" in row["cvd_unset"]["source"] or "SLURM_JOB_GPUS" in row["cvd_unset"]["source"]


@pytest.mark.parametrize("ask", ["--gres=gpu:2", "--gpus-per-node=2", "--gpus=2"])
def test_a_whole_node_asked_three_ways(ask: str) -> None:
    (row,) = _srun("-N", "1", ask)
    real = row["real"]
    assert row["cvd"] == row["step_gpus"] == "0,1"
    assert real["gpus"] == ["0", "1"] and real["source"] == "CUDA_VISIBLE_DEVICES=0,1"
    assert real["tp1"] == [["0"], ["1"]]  # data parallel: one replica per GPU
    assert real["tp2"] == [["0", "1"]]  # tensor parallel 2: one replica over both
    _constraint_safe(row, 2)


def test_one_gpu_of_two_and_tensor_parallel_two_is_refused() -> None:
    (row,) = _srun("-N", "1", "--gpus-per-node=1")
    assert row["real"]["gpus"] == ["0"] and row["real"]["tp1"] == [["0"]]
    assert row["real"]["tp2"].startswith("refused: --gpus 2 (tensor parallel 2) but only 1 GPU visible")
    _constraint_safe(row, 1)


def test_gpus_spread_over_two_nodes_unevenly() -> None:
    """--gpus=3 on 2 nodes: Slurm gives one node 2 and the other 1; each node plans over its own."""
    rows = _srun("-N", "2", "--gpus=3")
    assert len(rows) == 2 and len({r["node"] for r in rows}) == 2
    by_count = sorted(rows, key=lambda r: len(r["real"]["gpus"]))
    one, two = by_count
    assert one["real"]["gpus"] == ["0"] and two["real"]["gpus"] == ["0", "1"]
    assert two["real"]["tp2"] == [["0", "1"]] and one["real"]["tp2"].startswith("refused:")
    _constraint_safe(one, 1)
    _constraint_safe(two, 2)


def test_gpus_per_task_gives_each_task_its_own_gpu() -> None:
    """-n 2 --gpus-per-task=1 on one node: each task's CUDA_VISIBLE_DEVICES names its own GPU; sdg keeps it
    (the node's absolute id here, which is what CUDA uses without a constraint), so the tasks' replicas are
    on disjoint GPUs."""
    rows = _srun("-N", "1", "-n", "2", "--gpus-per-task=1")
    assert [r["task"] for r in rows] == [0, 1] and len({r["node"] for r in rows}) == 1
    got = [r["real"]["gpus"] for r in rows]
    assert sorted(got) == [["0"], ["1"]], got  # distinct per task
    for r in rows:
        assert r["real"]["gpus"] == [r["cvd"]] and r["real"]["tp1"] == [[r["cvd"]]]
        assert r["real"]["tp2"].startswith("refused:")


def test_steps_that_ask_for_fewer_gpus_than_the_job(tmp_path: Path) -> None:
    """A 2-GPU job (sbatch --gres=gpu:2): the batch script sees both; two concurrent 1-GPU steps get one
    GPU each, disjoint (without a constraint: the absolute ids 0 and 1; behind one: 0 in each step); a
    step without GPU options gets the job's; a --gres=none step gets none, never the job's list."""
    script = tmp_path / "job.sh"
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    py = f"{PYTHON} {probe}"
    script.write_text("\n".join([
        "#!/bin/bash",
        f"cd {REPO}",
        py,
        f"srun -n1 --exact --mem=100M --gres=gpu:1 bash -c 'sleep 2; {py}' &",
        f"srun -n1 --exact --mem=100M --gres=gpu:1 bash -c 'sleep 2; {py}' &",
        "wait",
        f"srun -n1 --mem=100M {py}",
        f"srun -n1 --mem=100M --gres=none {py}",
        "",
    ]))
    out = tmp_path / "job.out"
    t0 = time.monotonic()
    r = subprocess.run(["sbatch", "--wait", "-N", "1", "-n", "2", "--gres=gpu:2", "--mem=500M", "-t", "2",
                        "-o", str(out), str(script)], capture_output=True, text=True, timeout=180)
    text = out.read_text() if out.exists() else ""
    assert r.returncode == 0, r.stderr + text
    print(f"sbatch with 5 probes: {time.monotonic() - t0:.1f} s")
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(rows) == 5, text
    batch = [x for x in rows if x["step"] is None]
    steps = {int(x["step"]): x for x in rows if x["step"] is not None}
    assert len(batch) == 1 and sorted(steps) == [0, 1, 2, 3]

    (b,) = batch  # the batch script: CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS, no step list
    assert b["cvd"] == b["job_gpus"] == "0,1" and b["step_gpus"] is None
    assert b["real"]["gpus"] == ["0", "1"] and b["real"]["tp2"] == [["0", "1"]]
    assert b["cvd_unset"]["gpus"] == ["0", "1"] and "SLURM_JOB_GPUS=0,1" in b["cvd_unset"]["source"]

    halves = [steps[0], steps[1]]  # the concurrent 1-GPU steps
    assert sorted(h["step_gpus"] for h in halves) == ["0", "1"], halves  # disjoint, absolute
    for h in halves:
        assert h["job_gpus"] == "0,1"
        assert h["real"]["gpus"] == [h["cvd"]] == [h["step_gpus"]]  # unconstrained: CUDA sees them all
        assert h["real"]["tp1"] == [[h["cvd"]]] and h["real"]["tp2"].startswith("refused:")
        _constraint_safe(h, 1)  # the step on absolute GPU 1 is CUDA device 0 behind the constraint
        assert "SLURM_STEP_GPUS=" + h["step_gpus"] in h["cvd_unset"]["source"]

    whole = steps[2]  # no GPU option: the step gets the job's GPUs
    assert whole["real"]["gpus"] == ["0", "1"] and whole["step_gpus"] == "0,1"

    none = steps[3]  # --gres=none: Slurm unsets CUDA_VISIBLE_DEVICES and SLURM_STEP_GPUS, keeps SLURM_JOB_GPUS
    assert none["cvd"] is None and none["step_gpus"] is None and none["job_gpus"] == "0,1"
    assert none["real"]["gpus"] == [], none
    assert "was given no GPUs" in none["real"]["source"]
    assert none["real"]["tp1"] == [[]]  # one CPU replica (vLLM's CPU build, llama.cpp), as with no GPUs at all
    assert none["real"]["tp2"].startswith("refused: tensor parallel 2 needs 2 GPUs, but none are visible (this "
                                          "Slurm step (SLURM_STEP_ID=3) was given no GPUs"), none["real"]["tp2"]
