"""The Ray executor: a run's pending units handed, in calls of a few units (`call_units`), to one worker actor
per Slurm node, each node kept at its capacity (a node that finishes early takes more). Node 0 of a job runs
`sdg.run.generate(cfg, executor=RayExecutor(...))`: the same prepare, run folder, journals and finish as a
local run; only where units run differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sdg.engine.plan import PREFIX_COLUMNS
from sdg.engine.stats import RunStats
from sdg.errors import NodeFailed, SdgError

if TYPE_CHECKING:
    from sdg.engine.progress import Progress

Log = Callable[[str], None]
LOST_WAIT_S = 60.0  # how long a lost node's killed worker may take to be gone


class _NodeLost(Exception):
    """A node's worker died, or its teacher did: the node is dropped, its work goes to the others."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name, self.reason = name, reason


@dataclass
class NodeShare:
    """What one node did in this attempt."""

    calls: int = 0  # Ray calls (of call_units units each, or fewer)
    units: int = 0


@dataclass
class RayExecutor:
    """`nodes`: node name -> that node's record file (node-<name>.json, 0600: its teacher and judge
    endpoints with their keys, read by the node's worker itself). Ray must be connected."""

    nodes: Mapping[str, Any]
    log: Log = print
    alive_check: Callable[[], None] = lambda: None
    details: Mapping[str, Any] = field(default_factory=dict)  # node name -> its GPUs and replicas
    per_node: dict[str, NodeShare] = field(default_factory=dict)
    lost_nodes: dict[str, str] = field(default_factory=dict)  # node name -> why it was dropped mid-run

    def describe(self) -> dict[str, Any]:
        out = {"kind": "ray", "nodes": {n: dict(self.details.get(n, {})) for n in sorted(self.nodes)},
               "per_node": {n: {"calls": s.calls, "units": s.units} for n, s in sorted(self.per_node.items())}}
        if self.lost_nodes:
            out["lost_nodes"] = dict(sorted(self.lost_nodes.items()))
        return out

    def _lose(self, ray: Any, name: str, reason: str, actors: dict[str, Any], running: dict[Any, tuple]) -> list:
        """Drop node `name` from this run: its worker is killed (so it journals nothing more) and waited for,
        and what it had in flight comes back (the `running` values of its refs, removed from `running`).
        NodeFailed when no node is left."""
        self.lost_nodes[name] = reason
        actor = actors.pop(name, None)
        mine = [ref for ref, v in running.items() if v[0] == name]
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            if mine:  # they end (RayActorError) once the process is gone; only then are its journals final
                ray.wait(mine, num_returns=len(mine), timeout=LOST_WAIT_S)
        back = [running.pop(ref) for ref in mine]
        left = sorted(actors)
        self.log(f"node {name} lost: {reason}; {sum(len(units) for _, units in back)} unit(s) it had in flight go to "
                 + (", ".join(left) if left else "no node"))
        if not left:
            raise NodeFailed("every node was lost: " + "; ".join(f"{n}: {r}" for n, r in sorted(self.lost_nodes.items()))
                             + "; finished units are journaled: run the same job again to resume")
        return back

    def _actors(self, ray: Any, run: Any, capacity: int) -> dict[str, Any]:
        from sdg.launch.raynode import resource_name
        from sdg.launch.worker import NodeWorker

        Worker = ray.remote(NodeWorker)
        plan_ref = ray.put(run.plan)
        return {name: Worker.options(num_cpus=0, resources={resource_name(name): 0.01},
                                     max_concurrency=capacity + 2).remote(
                    run.cfg, plan_ref, str(run.folder.path), name, str(record))
                for name, record in self.nodes.items()}

    def execute(self, run: Any, done: Mapping[str, set[str]], progress: "Progress") -> RunStats:
        """The driver keeps the one scheduler (sdg.engine.leaf_targets: LeafScheduler with leaf-level targets,
        PlannedUnits without) and hands units to whichever node has room, up to its capacity (its replicas x
        the requests one server works on at once): no node idles while units wait, the tail is short, no leaf
        overshoots by a whole item, and a lost node's units go back to the scheduler. Units go in calls of
        `call_units` (1/CALL_SHARE of the node's capacity, at most MAX_CALL_UNITS; 1 on small servers): a Ray
        call costs the driver ~0.5 ms, which one call per unit would make the limit of a large cluster."""
        import ray

        from sdg.engine.journal import JournalStore
        from sdg.engine.leaf_targets import PlannedUnits
        from sdg.engine.session import in_flight_per_server
        from sdg.run import leaf_scheduler

        plan, cfg = run.plan, run.cfg
        reader = JournalStore(run.folder.journal_dir)
        try:
            scheduler = leaf_scheduler(run, done, reader) or PlannedUnits(plan, done)
        finally:
            reader.close()
        capacity = {n: max(2, in_flight_per_server(cfg) * max(1, len(self.details.get(n, {}).get("replicas", ()) or [1])))
                    for n in self.nodes}
        call = {n: call_units(c) for n, c in capacity.items()}
        self.log(f"work: {plan.units - sum(len(v) for v in done.values())} units pending over {len(self.nodes)} "
                 "nodes (" + ", ".join(f"{n} up to {c} at once, {call[n]} a call" for n, c in sorted(capacity.items()))
                 + ")")
        self.per_node = {n: NodeShare() for n in self.nodes}
        stats = RunStats()
        actors = self._actors(ray, run, max(capacity.values(), default=2))
        running: dict[Any, tuple[str, list]] = {}  # call -> (node, its units)
        load = {n: 0 for n in self.nodes}

        names = sorted(self.nodes)

        def node_for(unit: Any) -> str:
            """The least loaded node (load over capacity: every node gets work from the start), preferring the
            one its prompt prefix hashes to (its server's prefix cache has seen the prefix) while that one is
            within one unit of the least loaded."""
            key = json.dumps([unit.row.get(c) for c in PREFIX_COLUMNS], default=str).encode()
            home = names[int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % len(names)]
            best = min(names, key=lambda n: load[n] / capacity[n])
            if load[home] < capacity[home] and load[home] / capacity[home] <= load[best] / capacity[best] + 1 / capacity[home]:
                return home
            return best

        given_back: set[str] = set()  # unit ids handed out again after their node was lost

        def send(name: str, units: list) -> None:
            running[actors[name].run_units.remote(units)] = (name, units)

        def fill() -> None:
            calls: dict[str, list] = {n: [] for n in names}
            while any(load[n] < capacity[n] for n in names) and (unit := scheduler.take()) is not None:
                if scheduler.is_topup(unit) and unit.id not in given_back:
                    progress.extra_units(1)
                name = node_for(unit)
                load[name] += 1
                calls[name].append(unit)
                if len(calls[name]) >= call[name]:
                    send(name, calls[name])
                    calls[name] = []
            for name, units in calls.items():
                if units:
                    send(name, units)
            for leaf_id, n in scheduler.drain_skipped():
                progress.not_needed(leaf_id, n)

        def lost(exc: _NodeLost) -> None:
            """The lost node's units: the ones it journaled done count as finished (the dead worker's
            journal line is the record; nothing runs them again), the others go back to the scheduler."""
            back = self._lose(ray, exc.name, exc.reason, actors, running)
            names.remove(exc.name)
            load.pop(exc.name, None)
            for unit in (u for _, units in back for u in units):
                recs = _journaled(run, exc.name, plan.leaves[scheduler._index(unit.leaf_id)].leaf.name, {unit.id})
                if unit.id in recs:
                    rec = recs[unit.id]
                    scheduler.finish(unit, rec.rows, False)
                    part = RunStats()
                    part.add_record(rec)
                    stats.merge(part)
                    self.per_node[exc.name].units += 1
                    progress.advance(unit.leaf_id, part)
                else:
                    scheduler.give_back(unit)
                    given_back.add(unit.id)

        t0 = time.monotonic()
        fill()
        while running:
            refs = list(running)
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            if ready and len(refs) > 1:  # and every other call already back: one pass over the calls per wake-up
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            self.alive_check()
            for ref in ready:
                if ref not in running:
                    continue  # a lost node's, given back already
                name, units = running[ref]
                try:
                    part = _result(ray, ref, name)
                except _NodeLost as exc:
                    lost(exc)
                    continue
                running.pop(ref)
                load[name] -= len(units)
                stats.merge(part.stats)
                by_id = {u.id: u for u in units}
                for uid, failed, rows in part.units:
                    scheduler.finish(by_id[uid], rows, failed)
                share = self.per_node[name]
                share.calls += 1
                share.units += part.stats.units_done
                for leaf_id, leaf_stats in part.by_leaf.items():
                    progress.advance(leaf_id, leaf_stats)
            fill()
        ray.get([a.close.remote() for a in actors.values()])
        stats.elapsed_s = time.monotonic() - t0
        scheduler.count_into(stats)
        self.log("per node: " + ", ".join(f"{n} {s.units} units" for n, s in sorted(self.per_node.items())))
        return stats


CALL_SHARE = 8  # a call carries at most this share of a node's capacity: its units free their slots together
MAX_CALL_UNITS = 32


def call_units(capacity: int) -> int:
    """Units per Ray call to a node of `capacity` units in flight: 1 on small servers (the finest feeding),
    up to MAX_CALL_UNITS on large ones (the driver's calls per second stay ~1/k of the cluster's units/s)."""
    return max(1, min(MAX_CALL_UNITS, capacity // CALL_SHARE))


def _result(ray: Any, ref: Any, name: str) -> Any:
    """A worker's WorkerResult; _NodeLost when the node's worker died or its teacher did (the node is dropped,
    the run goes on without it); NodeFailed for any other error (a bug, a full disk: every node would hit it)."""
    from sdg.errors import TeacherBroken, TeacherStartError

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        raise _NodeLost(name, f"its worker died ({exc.__class__.__name__})") from None
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, (TeacherStartError, TeacherBroken)):
            orig = getattr(exc, "cause", None) or cause  # the worker's own exception (its message, not Ray's)
            first = (str(orig).strip().splitlines() or [""])[0][:300]
            raise _NodeLost(name, f"its teacher is gone ({type(orig).__name__}: {first})") from None
        if isinstance(cause, SdgError):
            raise NodeFailed(f"{name}: {cause}") from None
        raise NodeFailed(f"{name}: {exc}") from None


def _journaled(run: Any, node: str, leaf_name: str, ids: set[str]) -> dict[str, Any]:
    """The units of `ids` that node `node` journaled done (its own journal file of the leaf, read without
    repairing: a torn last line is not a record) -> their records."""
    from sdg.engine.journal import JournalStore, read_journal

    path = JournalStore(run.folder.journal_dir, writer=node).path(leaf_name)
    return {r.unit: r for r in read_journal(path, repair=False) if r.status == "done" and r.unit in ids}
