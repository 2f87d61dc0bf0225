"""The local Slurm cluster of scripts/slurm_up.sh behaves like a GPU cluster where it matters to sdg:
per-node fake GPUs in the job environment, distinct node addresses, accounting, idempotent start."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm_support import require_slurm

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm(nodes=3, python_modules=())


def _srun(*args: str) -> str:
    r = subprocess.run(["srun", "-t", "1", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_fake_gpus_per_node_in_the_step_environment() -> None:
    out = _srun("-N", "2", "--gpus-per-node=2", "bash", "-c",
                'echo "$SLURMD_NODENAME $SLURM_NODEID $CUDA_VISIBLE_DEVICES $SLURM_STEP_GPUS"')
    rows = sorted(line.split() for line in out.splitlines())
    assert rows == [["node1", "0", "0,1", "0,1"], ["node2", "1", "0,1", "0,1"]]
    one = _srun("-N", "1", "-w", "node3", "--gpus-per-node=1", "bash", "-c", 'echo "$CUDA_VISIBLE_DEVICES"')
    assert one.strip() == "0"


def test_nodes_have_their_own_addresses() -> None:
    assert [socket.gethostbyname(f"node{i}") for i in (1, 2, 3)] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def test_accounting_answers_for_finished_jobs() -> None:
    r = subprocess.run(["sbatch", "--parsable", "--wait", "-N", "1", "-t", "1", "-o", "/dev/null", "--wrap", "true"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the controller hands the record to slurmdbd asynchronously
        state = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], capture_output=True, text=True)
        if state.stdout.strip() == "COMPLETED":
            return
        time.sleep(0.5)
    raise AssertionError(f"sacct does not know job {job}: {state.stdout!r} {state.stderr!r}")


@pytest.mark.skipif(os.geteuid() != 0, reason="slurm_up.sh runs as root")
def test_slurm_up_again_is_quick_and_harmless() -> None:
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "scripts" / "slurm_up.sh")], capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "config written (changed=0)" in r.stdout and "READY" in r.stdout
    assert re.search(r"sdg data generate cluster=slurm", r.stdout)  # it says how to use it
    assert took < 30, f"a second slurm_up.sh took {took:.0f} s"


def test_stale_ray_temp_dirs_of_finished_jobs_are_removed() -> None:
    from sdg.launch.raynode import clean_stale_temp_dirs, temp_dir_for

    gone, ours = temp_dir_for("999991", 0, "node1"), temp_dir_for("999992", 1, "node2")
    for d in (gone, ours):
        (d / "session_x").mkdir(parents=True, exist_ok=True)
    try:
        clean_stale_temp_dirs("999992")  # 999991 is not in the queue: a SIGKILLed node's leftovers
        assert not gone.exists() and ours.exists()
    finally:
        shutil.rmtree(gone, ignore_errors=True)
        shutil.rmtree(ours, ignore_errors=True)
