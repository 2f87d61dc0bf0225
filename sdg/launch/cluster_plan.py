"""What a Slurm job runs where, as pure functions: config in, immutable plans out, no I/O.

- `node_teacher`: the teacher config one node serves (`{node}` endpoints resolved); its replicas are
  planned once by `sdg.teacher.gpus.node_plan` and handed to `serving()`;
- `executor_parameters`: the submitit/sbatch parameters of one N-node job (unknown keys are submitit's
  own error, listing the valid ones);
- `work_items`: the plan's pending units cut into work items (whole small leaves, slices of big ones)
  that the driver hands to whichever node asks next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sdg.config.schema import ClusterConfig, TeacherConfig
from sdg.engine.plan import Plan

ITEMS_PER_NODE = 4  # slice_units=0: cut the pending work into about this many items per node


NODE_PLACEHOLDER = "{node}"


def node_teacher(teacher: TeacherConfig, node_host: str = "") -> TeacherConfig:
    """The teacher config one node hands to `serving()` (with its NodePlan).

    backend=endpoint with `{node}` in teacher.endpoint_url (`http://{node}:8000/v1`): every node uses
    the server already running on itself (a site service per node), so work stays on its node."""
    from dataclasses import replace

    if teacher.backend == "endpoint" and teacher.endpoint_url and NODE_PLACEHOLDER in teacher.endpoint_url:
        return replace(teacher, endpoint_url=teacher.endpoint_url.replace(NODE_PLACEHOLDER, node_host or "127.0.0.1"))
    return teacher


def executor_parameters(cluster: ClusterConfig, *, name: str = "sdg-generate") -> dict[str, Any]:
    """submitit `update_parameters(**...)` for one job of `cluster.nodes` nodes, one task per node.

    (`cluster.max_requeues` is an executor argument, `slurm_max_num_timeout`, not a parameter.)
    """
    params: dict[str, Any] = {
        "name": name, "nodes": cluster.nodes, "tasks_per_node": 1, "cpus_per_task": cluster.cpus_per_task,
        "mem_gb": cluster.mem_gb, "timeout_min": cluster.time_min,
        "slurm_array_parallelism": cluster.array_parallelism,
    }
    if cluster.gpus_per_node:
        params["gpus_per_node"] = cluster.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(cluster, key)
        if value:
            params[f"slurm_{key}"] = value
    if cluster.setup:
        params["slurm_setup"] = list(cluster.setup)
    if cluster.additional_parameters:
        params["slurm_additional_parameters"] = dict(cluster.additional_parameters)
    return params


@dataclass(frozen=True)
class WorkItem:
    """Some units of one leaf: indices into `LeafPlan.iter_units(seed)` order."""

    leaf: int  # index into plan.leaves
    units: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.units)


def work_items(plan: Plan, done: Mapping[str, Iterable[str]], nodes: int, slice_units: int = 0) -> list[WorkItem]:
    """The pending units (not in `done`, unit ids by leaf id) as work items, biggest leaves first.

    A leaf with at most `slice_units` pending units is one item; a bigger one is cut into slices of
    `slice_units`. slice_units=0 picks ceil(pending / (nodes * ITEMS_PER_NODE)), so every node gets
    several items and one that finishes early takes more.
    """
    pending: list[tuple[int, list[int]]] = []
    for li, lp in enumerate(plan.leaves):
        finished = set(done.get(lp.leaf.id, ()))
        idx = [i for i, u in enumerate(lp.iter_units(plan.seed)) if u.id not in finished]
        if idx:
            pending.append((li, idx))
    total = sum(len(idx) for _, idx in pending)
    if not total:
        return []
    size = slice_units if slice_units > 0 else max(1, math.ceil(total / (max(1, nodes) * ITEMS_PER_NODE)))
    items = [WorkItem(li, tuple(idx[s:s + size])) for li, idx in pending for s in range(0, len(idx), size)]
    # Biggest first, then plan order: long items start early, short ones fill the tail.
    return sorted(items, key=lambda it: (-it.size, it.leaf, it.units[0]))
