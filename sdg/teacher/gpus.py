"""Which GPUs this process may use, and how replicas of a teacher split them (`node_plan`: the one
place a node's replicas are planned, locally and on Slurm). Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sdg.errors import GpuPlanError


@dataclass(frozen=True)
class Replica:
    """One server: its index and the GPU ids it owns (empty = CPU)."""

    index: int
    gpus: tuple[str, ...]


def _ids(value: str) -> list[str]:
    return [v for v in re.split(r"[,\s]+", value.strip()) if v]


def in_slurm_step(env: Mapping[str, str]) -> bool:
    """Inside an `srun` job step (not the batch script itself, which has no SLURM_STEP_ID)."""
    return bool(env.get("SLURM_STEP_ID", "").strip())


def visible_gpus(env: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """(GPU ids, where that came from), as CUDA numbers them in this process.

    CUDA_VISIBLE_DEVICES wins: Slurm sets it for the step (or task) with the numbers CUDA uses there: the
    node's absolute ids without a cgroup device constraint, 0..n-1 with one (TaskPlugin=task/cgroup +
    ConstrainDevices=yes), per task with --gpus-per-task. Without it, Slurm's own lists (SLURM_STEP_GPUS in
    a step, SLURM_JOB_GPUS in the batch script) are ABSOLUTE ids; under a device constraint CUDA sees the
    step's GPUs as 0..n-1, so their count is used. A step that was given no GPUs (srun --gres=none inside a
    job that has some) has neither CUDA_VISIBLE_DEVICES nor SLURM_STEP_GPUS: the job's list is not its own.
    """
    if "CUDA_VISIBLE_DEVICES" not in env and "SLURM_STEP_GPUS" not in env and "SLURM_JOB_GPUS" in env \
            and in_slurm_step(env):
        return (), (f"this Slurm step (SLURM_STEP_ID={env['SLURM_STEP_ID']}) was given no GPUs; the job's "
                    f"SLURM_JOB_GPUS={env['SLURM_JOB_GPUS']} are not the step's: leave GPU options off srun "
                    "(the step gets the job's) or ask for them (srun --gres=gpu:N)")
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if var in env:
            value = env[var]
            if value.strip() in ("", "-1", "NoDevFiles"):
                return (), f"{var}={value!r}"
            ids = _ids(value)
            if var == "CUDA_VISIBLE_DEVICES":
                return tuple(ids), f"{var}={value}"
            # Slurm's ids are the node's absolute GPU numbers; inside a job whose devices are constrained
            # (cgroups) CUDA numbers the GPUs it may see from 0: use the count, as 0..n-1.
            return tuple(str(i) for i in range(len(ids))), f"{var}={value} (the job's {len(ids)} GPU(s) as 0..{len(ids) - 1})"
    return (), "no CUDA_VISIBLE_DEVICES or Slurm GPU allocation"


def plan_replicas(visible: Sequence[str], tensor_parallel: int, replicas: int | None = None,
                  source: str = "", cpu_ok: bool = False) -> tuple[Replica, ...]:
    """Split the visible GPUs into `replicas` slices of `tensor_parallel` GPUs each.

    replicas=None takes as many as fit (data parallel over a node's GPUs). With no GPUs visible and
    `cpu_ok`, one CPU replica; otherwise a clear refusal.
    """
    if tensor_parallel < 1:
        raise GpuPlanError(f"tensor_parallel_size must be >= 1, not {tensor_parallel}")
    gpus = tuple(visible)
    if not gpus:
        if cpu_ok and tensor_parallel == 1:
            return tuple(Replica(i, ()) for i in range(replicas or 1))
        raise GpuPlanError(f"tensor parallel {tensor_parallel} needs {tensor_parallel} GPUs, but none are visible "
                           f"({source or 'no GPUs'}); request GPUs from Slurm (--gpus-per-node) or set "
                           "CUDA_VISIBLE_DEVICES")
    if tensor_parallel > len(gpus):
        raise GpuPlanError(f"--gpus {tensor_parallel} (tensor parallel {tensor_parallel}) but only {len(gpus)} GPU"
                           f"{'s' if len(gpus) != 1 else ''} visible ({source}); lower --gpus / "
                           "teacher.tensor_parallel_size or request more GPUs")
    fit = len(gpus) // tensor_parallel
    count = fit if replicas is None else replicas
    if count < 1 or count > fit:
        raise GpuPlanError(f"{count} replicas x tensor parallel {tensor_parallel} need {count * tensor_parallel} GPUs, "
                           f"{len(gpus)} visible ({source})")
    return tuple(Replica(i, gpus[i * tensor_parallel:(i + 1) * tensor_parallel]) for i in range(count))


@dataclass(frozen=True)
class NodePlan:
    """One node's teacher: `replicas` servers, each on its GPU slice (empty slices = CPU)."""

    gpus: tuple[str, ...]
    tensor_parallel_size: int
    replicas: tuple[Replica, ...]
    stand_in: bool  # llama.cpp standing in for vLLM: one CPU server per planned replica

    def describe(self) -> str:
        slices = ", ".join("+".join(r.gpus) or "cpu" for r in self.replicas)
        what = "llama.cpp stand-in" if self.stand_in else "server"
        return (f"{len(self.gpus)} GPU(s) visible [{','.join(self.gpus)}], tensor parallel {self.tensor_parallel_size}"
                f" -> {len(self.replicas)} {what} replica(s) [{slices}]")


def node_plan(teacher: Any, gpus: Sequence[str], source: str = "") -> NodePlan:
    """Replicas for one node: visible GPUs // tensor_parallel_size (or teacher.replicas), each its slice.

    vLLM gets exactly this from `build_servers`; llama.cpp (the CPU stand-in in tests and on laptops)
    cannot do tensor parallelism, so it runs one CPU server per planned replica instead.
    """
    tp = teacher.tensor_parallel_size
    stand_in = teacher.backend == "llama-cpp" and bool(gpus)
    if teacher.backend == "endpoint":
        return NodePlan(tuple(gpus), tp, (Replica(0, ()),), False)
    replicas = plan_replicas(gpus, tp, teacher.replicas, source, cpu_ok=not gpus)
    return NodePlan(tuple(gpus), tp, replicas, stand_in)


def split_judge_gpus(judge: Any, gpus: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the judge's GPUs, the teacher's) on one node: a vLLM judge takes replicas x tensor parallel GPUs
    (one replica when unset) from the end of the node's list; a llama.cpp judge runs on the CPU and an
    endpoint needs none. The teacher plans over what is left."""
    gpus = tuple(gpus)
    if judge is None or judge.backend != "vllm" or not gpus:
        return (), gpus
    need = judge.tensor_parallel_size * (judge.replicas or 1)
    if need >= len(gpus):
        raise GpuPlanError(f"the judge needs {need} GPU(s) (judge.replicas x judge.tensor_parallel_size) and the "
                           f"teacher at least one more, but this node has {len(gpus)}: request more GPUs "
                           "(cluster.gpus_per_node) or use a judge endpoint (judge=endpoint)")
    return gpus[-need:], gpus[:-need]
