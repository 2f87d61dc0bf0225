"""What a Slurm job runs where, as pure functions: config in, immutable plans out, no I/O.

- `node_teacher`: the teacher config one node serves (`{node}` endpoints resolved); its replicas are
  planned once by `sdg.teacher.gpus.node_plan` and handed to `serving()`;
- `executor_parameters`: the submitit/sbatch parameters of one N-node job (unknown keys are submitit's
  own error, listing the valid ones).
"""

from __future__ import annotations

from typing import Any

from sdg.config.schema import ClusterConfig, TeacherConfig

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
