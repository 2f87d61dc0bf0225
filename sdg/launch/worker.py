"""The per-node worker: a Ray actor pinned to one Slurm node that runs work items against that node's
own teacher endpoint(s), journaling as `<leaf>.<node>.jsonl` on the shared run folder.

It is an async actor: the executor keeps two items in flight per node, both run on one event loop and
share one engine session (sdg.engine.session: client, token cap, breaker), exactly as a local run has.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sdg.config.schema import SdgConfig
from sdg.engine.plan import Plan, Unit
from sdg.engine.stats import RunStats
from sdg.errors import RendezvousError


@dataclass(frozen=True)
class WorkerResult:
    """What a work item did, sent back to the executor."""

    node: str
    leaf: int  # index into plan.leaves (-1: units of any leaf)
    stats: RunStats
    units: list = field(default_factory=list)  # (unit id, failed, kept rows) per unit run (run_units)


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
        self.endpoints, self.judge_endpoints = list(rec.endpoints), list(rec.judge_endpoints)
        self.pipelines = load_pipelines(cfg, {lp.kind for lp in plan.leaves})
        self.journals = JournalStore(Path(run_dir) / "journal", writer=node)
        self._units: dict[int, list[Unit]] = {}
        self._session: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    def _leaf_units(self, leaf: int) -> list[Unit]:
        if leaf not in self._units:
            self._units[leaf] = list(self.plan.leaves[leaf].iter_units(self.plan.seed))
        return self._units[leaf]

    async def _open(self) -> Any:
        from sdg.engine.session import engine_session

        async with self._lock:
            if self._session is None:
                self._session = await self._stack.enter_async_context(
                    engine_session(self.cfg, self.endpoints, judge_endpoints=self.judge_endpoints or None,
                                   label=f"{self.node}-"))
        return self._session

    async def run(self, leaf: int, units: Sequence[int]) -> WorkerResult:
        """Run these units of leaf `leaf` (indices in its unit order)."""
        from sdg.engine.session import run_slice

        all_units = self._leaf_units(leaf)
        stats = await run_slice(await self._open(), self.plan, self.pipelines, self.journals,
                                [all_units[i] for i in units])
        return WorkerResult(self.node, leaf, stats)

    async def run_units(self, units: Sequence[Unit]) -> WorkerResult:
        """Run these units (the driver's leaf-level targets chose them, `_leaf_need` set); what each kept comes
        back with them, so the driver counts it toward its leaf."""
        from sdg.engine.session import run_slice

        outcomes: list = []
        stats = await run_slice(await self._open(), self.plan, self.pipelines, self.journals, list(units),
                                outcomes=outcomes)
        return WorkerResult(self.node, -1, stats, outcomes)

    async def close(self) -> str:
        """Flush and close this node's journals and its client (call before the outputs are written)."""
        await self._stack.aclose()
        self._session = None
        self.journals.close()
        return self.node
