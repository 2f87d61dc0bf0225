"""The per-node worker: a Ray actor pinned to one Slurm node that runs units against that node's own teacher
endpoint(s), journaling as `<leaf>.<node>.jsonl` on the shared run folder.

It is an async actor: the executor keeps the node's capacity of units in flight, all on one event loop
sharing one engine session (sdg.engine.session: client, token cap, breaker), exactly as a local run has.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sdg.config.schema import SdgConfig
from sdg.engine.plan import Plan, Unit
from sdg.engine.stats import RunStats
from sdg.errors import RendezvousError


@dataclass(frozen=True)
class WorkerResult:
    """What a call of `run_units` did, sent back to the executor."""

    node: str
    stats: RunStats
    units: list = field(default_factory=list)  # (unit id, failed, kept rows) per unit run
    by_leaf: dict = field(default_factory=dict)  # leaf id -> its units' RunStats (for the driver's progress)


def _started(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


class _NodeServers(list):
    """This node's endpoints (its node record's) that can say whether the servers behind them live: they are
    processes of this node's `sdg jobs node`, on this machine, so their pids (with their start times, against
    reuse) tell. The engine's watchdog calls `check_alive`; a dead server loses this node at once instead of
    after the breaker's retries."""

    def __init__(self, endpoints: Sequence[Any], role: str) -> None:
        super().__init__(endpoints)
        self._procs = [(e, e.pid, _started(e.pid)) for e in endpoints if getattr(e, "pid", None)]
        self._role = role

    def check_alive(self) -> None:
        from sdg.errors import TeacherStartError

        for e, pid, started in self._procs:
            if started is not None and _started(pid) != started:
                raise TeacherStartError(f"this node's {self._role} server ({e.backend}, pid {pid}) exited; "
                                        f"log: {e.log_path}")


class NodeWorker:
    """Runs slices of the plan on one node (create it with Ray, pinned by its `sdg_node_<name>` resource)."""

    def __init__(self, cfg: SdgConfig, plan: Plan, run_dir: str, node: str, record: str):
        """`record`: the node's node-<name>.json, read here for its endpoints and their keys (never passed as
        actor arguments, which Ray may log)."""
        from sdg.engine.journal import JournalStore
        from sdg.launch.rendezvous import NodeRecord, read_json
        from sdg.run import load_pipelines

        self.cfg, self.plan, self.node = cfg, plan, node
        data = read_json(Path(record))
        if not data or "endpoints" not in data:
            raise RendezvousError(f"node {node}: its record {record} has no endpoints")
        rec = NodeRecord.from_json(data)
        self.endpoints = _NodeServers(rec.endpoints, "teacher")
        self.judge_endpoints = _NodeServers(rec.judge_endpoints, "judge")
        self.pipelines = load_pipelines(cfg, {lp.kind for lp in plan.leaves})
        self.journals = JournalStore(Path(run_dir) / "journal", writer=node)
        self._session: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._lost: BaseException | None = None  # this node's teacher died: every later call says so at once
        with contextlib.suppress(OSError):  # who to look for when this node's worker is gone (tests, operators)
            (Path(record).parent / f"worker-{node}.pid").write_text(f"{os.getpid()}\n")

    async def _open(self) -> Any:
        from sdg.engine.session import engine_session

        async with self._lock:
            if self._session is None:
                self._session = await self._stack.enter_async_context(
                    engine_session(self.cfg, self.endpoints, judge_endpoints=self.judge_endpoints or None,
                                   label=f"{self.node}-"))
        return self._session

    async def run_units(self, units: Sequence[Unit]) -> WorkerResult:
        """Run these units (the driver's scheduler chose them; with leaf-level targets `_leaf_need` is set), a
        leaf's units together; what each kept comes back with them, so the driver counts it toward its leaf."""
        from sdg.engine.session import run_slice

        session = await self._open()
        outcomes: list = []
        groups: dict[str, list[Unit]] = {}
        for unit in units:
            groups.setdefault(unit.leaf_id, []).append(unit)

        async def every_leaf() -> list[RunStats]:
            return list(await asyncio.gather(*(run_slice(session, self.plan, self.pipelines, self.journals, group,
                                                         outcomes=outcomes) for group in groups.values())))

        per_leaf = dict(zip(groups, await self._guarded(every_leaf())))
        total = RunStats()
        for part in per_leaf.values():
            total.merge(part)
        return WorkerResult(self.node, total, outcomes, per_leaf)

    async def _guarded(self, work: Any) -> Any:
        """`work`, unless this node's teacher is gone: its server died or stopped answering (the watchdog's
        TeacherStartError, the breaker's TeacherBroken). That loses this node, not the job: the error goes back
        to the driver, which drops the node and gives its units to the others; every later call on this worker
        raises the same at once rather than journal anything more."""
        from sdg.errors import TeacherBroken, TeacherStartError

        if self._lost is not None:
            work.close()
            raise self._lost
        try:
            out = await work
            # units whose requests failed because this node's server just died come back "failed": not a
            # result to keep (the driver would not redo them this run) but this node lost
            self.endpoints.check_alive()
            self.judge_endpoints.check_alive()
            return out
        except (TeacherStartError, TeacherBroken) as exc:
            self._lost = exc
            raise

    async def close(self) -> str:
        """Flush and close this node's journals and its client (call before the outputs are written)."""
        await self._stack.aclose()
        self._session = None
        self.journals.close()
        return self.node
