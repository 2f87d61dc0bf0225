"""The driver on node 0 of a Slurm job: plan once, hand work items to one Ray actor per node (a node
that finishes early takes more), then write the outputs from every node's journals.

It does what `sdg.engine.generate.generate` does on one machine, with the engine run spread out: the
same plan, fingerprint and run folder (so a rerun or a requeue resumes the same run), the same journals
(per node), the same output writers and reports.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping, Sequence

from sdg.config.schema import SdgConfig, TaxonomyConfig
from sdg.engine.runner import RunStats
from sdg.errors import SdgError
from sdg.launch.plan import work_items

Log = Callable[[str], None]
IN_FLIGHT_PER_NODE = 2  # items queued at each node, so it never idles between two items


class NodeFailed(SdgError):
    """A node's worker died or raised; finished units are journaled, the same job/command resumes."""


def _add(stats: RunStats, part: Mapping[str, Any]) -> None:
    for key in ("units_done", "units_failed", "samples", "generated", "requests", "prompt_tokens", "completion_tokens"):
        setattr(stats, key, getattr(stats, key) + int(part.get(key, 0)))
    stats.dropped.update(part.get("dropped", {}))
    stats.errors.update(part.get("errors", {}))


def drive(cfg: SdgConfig, nodes: Mapping[str, Sequence[Mapping[str, Any]]], *, log: Log = print,
          alive_check: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Run the whole generation across `nodes` (node name -> its endpoints); Ray must be connected."""
    import ray

    from sdg.engine.generate import done_units, finish_run, open_run, prepare_run
    from sdg.engine.journal import JournalStore
    from sdg.launch.raynode import resource_name
    from sdg.launch.worker import NodeWorker

    # The same plan, fingerprint and run folder as a local run: a rerun (local or Slurm) resumes this run.
    prep = prepare_run(cfg, base_is_default=cfg.taxonomy.base == TaxonomyConfig.base, log=log)
    plan = prep.plan
    run, state = open_run(cfg, prep, log=log, nodes=sorted(nodes))
    reader = JournalStore(run.journal_dir)
    done = done_units(plan, reader)
    resumed = sum(len(v) for v in done.values())
    items = deque(work_items(plan, done, len(nodes), cfg.cluster.slice_units))
    pending_units = sum(it.size for it in items)
    log(f"work: {pending_units} units to run in {len(items)} items over {len(nodes)} nodes"
        + (f" ({resumed} of {plan.units} already done)" if resumed else ""))

    stats = RunStats(units_resumed=resumed)
    per_node: dict[str, dict[str, int]] = {n: {"items": 0, "units": 0} for n in nodes}
    actors: dict[str, Any] = {}
    if items:
        Worker = ray.remote(NodeWorker)
        plan_ref = ray.put(plan)
        for name, eps in nodes.items():
            actors[name] = Worker.options(num_cpus=0, resources={resource_name(name): 0.01},
                                          max_concurrency=IN_FLIGHT_PER_NODE + 2).remote(
                cfg, plan_ref, str(run.path), name, list(eps))
        running: dict[Any, str] = {}

        def hand_out(name: str) -> None:
            if items:
                it = items.popleft()
                running[actors[name].run.remote(it.leaf, list(it.units))] = name

        for name in actors:
            for _ in range(IN_FLIGHT_PER_NODE):
                hand_out(name)
        t0, finished_units, last_log = time.monotonic(), 0, 0.0
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            alive_check()
            for ref in ready:
                name = running.pop(ref)
                try:
                    part = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    raise NodeFailed(f"the worker on {name} died ({exc.__class__.__name__}); finished units are "
                                     "journaled: run the same job again to resume") from None
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    if isinstance(cause, SdgError):
                        raise NodeFailed(f"{name}: {cause}") from None
                    raise NodeFailed(f"{name}: {exc}") from None
                _add(stats, part)
                per_node[name]["items"] += 1
                per_node[name]["units"] += part["units"]
                finished_units += part["units"]
                hand_out(name)
            now = time.monotonic()
            if ready and (now - last_log >= cfg.generate.progress_interval_s or not running):
                last_log = now
                rate = finished_units / max(now - t0, 1e-9)
                left = pending_units - finished_units
                eta = f", about {left / rate:.0f} s left" if rate > 0 and left else ""
                log(f"progress: {finished_units}/{pending_units} units, {stats.samples} samples, "
                    f"{stats.units_failed} failed{eta}; per node: "
                    + ", ".join(f"{n} {v['units']}" for n, v in sorted(per_node.items())))
        ray.get([a.close.remote() for a in actors.values()])
        stats.elapsed_s = time.monotonic() - t0

    result = finish_run(cfg, prep, run, state, stats, reader, per_node=per_node)
    reader.close()
    quality = result.quality
    failed = sum(q["failed_units"] for q in quality.values())
    summary = {"run_dir": str(run.path), "complete": failed == 0, "units": plan.units, "units_run": stats.units_done,
               "units_resumed": resumed, "units_failed": failed, "kept": sum(q["kept"] for q in quality.values()),
               "per_node": per_node, "elapsed_s": time.time() - prep.started}
    log(f"{'complete' if failed == 0 else 'incomplete'}: {summary['kept']} samples from {plan.units} units in "
        f"{run.path} ({stats.units_done} run here, {resumed} resumed, {failed} failed)")
    return summary
