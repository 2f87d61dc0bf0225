"""The Ray executor: a run's pending units as work items handed to one worker actor per Slurm node (a
node that finishes early takes more). Node 0 of a job runs `sdg.run.generate(cfg, executor=RayExecutor(...))`:
the same prepare, run folder, journals and finish as a local run; only where units run differs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from sdg.engine.stats import RunStats
from sdg.errors import NodeFailed, SdgError
from sdg.launch.cluster_plan import work_items

if TYPE_CHECKING:
    from sdg.engine.progress import Progress

Log = Callable[[str], None]
IN_FLIGHT_PER_NODE = 2  # items queued at each node, so it never idles between two items


@dataclass
class NodeShare:
    """What one node did in this attempt."""

    items: int = 0
    units: int = 0


@dataclass
class RayExecutor:
    """`nodes`: node name -> that node's ready teacher endpoints (ServedEndpoint). Ray must be connected."""

    nodes: Mapping[str, Sequence[Any]]
    log: Log = print
    alive_check: Callable[[], None] = lambda: None
    details: Mapping[str, Any] = field(default_factory=dict)  # node name -> its GPUs and replicas
    per_node: dict[str, NodeShare] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"kind": "ray", "nodes": {n: dict(self.details.get(n, {})) for n in sorted(self.nodes)},
                "per_node": {n: {"items": s.items, "units": s.units} for n, s in sorted(self.per_node.items())}}

    def execute(self, run: Any, done: Mapping[str, set[str]], progress: "Progress") -> RunStats:
        import ray

        from sdg.launch.raynode import resource_name
        from sdg.launch.worker import NodeWorker

        plan, cfg = run.plan, run.cfg
        items = deque(work_items(plan, done, len(self.nodes), cfg.cluster.slice_units))
        pending_units = sum(it.size for it in items)
        resumed = sum(len(v) for v in done.values())
        self.log(f"work: {pending_units} units to run in {len(items)} items over {len(self.nodes)} nodes"
                 + (f" ({resumed} of {plan.units} already done)" if resumed else ""))
        self.per_node = {n: NodeShare() for n in self.nodes}
        stats = RunStats()
        if not items:
            return stats
        Worker = ray.remote(NodeWorker)
        plan_ref = ray.put(plan)
        actors = {name: Worker.options(num_cpus=0, resources={resource_name(name): 0.01},
                                       max_concurrency=IN_FLIGHT_PER_NODE + 2).remote(
                      cfg, plan_ref, str(run.folder.path), name, list(eps))
                  for name, eps in self.nodes.items()}
        running: dict[Any, tuple[str, str]] = {}

        def hand_out(name: str) -> None:
            if items:
                it = items.popleft()
                running[actors[name].run.remote(it.leaf, list(it.units))] = (name, plan.leaves[it.leaf].leaf.id)

        for name in actors:
            for _ in range(IN_FLIGHT_PER_NODE):
                hand_out(name)
        t0 = time.monotonic()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            self.alive_check()
            for ref in ready:
                name, leaf_id = running.pop(ref)
                part = _result(ray, ref, name)
                stats.merge(part.stats)
                share = self.per_node[name]
                share.items += 1
                share.units += part.stats.units_done
                progress.advance(leaf_id, part.stats)
                hand_out(name)
        ray.get([a.close.remote() for a in actors.values()])
        stats.elapsed_s = time.monotonic() - t0
        self.log("per node: " + ", ".join(f"{n} {s.units} units in {s.items} items"
                                          for n, s in sorted(self.per_node.items())))
        return stats


def _result(ray: Any, ref: Any, name: str) -> Any:
    """A worker's WorkerResult, or NodeFailed naming the node (finished units are journaled)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        raise NodeFailed(f"the worker on {name} died ({exc.__class__.__name__}); finished units are "
                         "journaled: run the same job again to resume") from None
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, SdgError):
            raise NodeFailed(f"{name}: {cause}") from None
        raise NodeFailed(f"{name}: {exc}") from None
