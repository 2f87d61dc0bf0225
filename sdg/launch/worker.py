"""The per-node worker: a Ray actor pinned to one Slurm node that runs work items against that node's
own teacher endpoint(s), journaling as `<leaf>.<node>.jsonl` on the shared run folder.

It is an async actor: the driver keeps two items in flight per node, both run on one event loop and
share one TeacherClient, whose per-endpoint slots keep the server busy without overloading it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdg.config.schema import SdgConfig
from sdg.engine.plan import Plan, Unit


def stats_dict(stats: Any) -> dict[str, Any]:
    """RunStats as plain data (what travels back to the driver)."""
    return {"units_done": stats.units_done, "units_failed": stats.units_failed, "samples": stats.samples,
            "generated": stats.generated, "requests": stats.requests, "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens, "dropped": dict(stats.dropped),
            "errors": dict(stats.errors), "elapsed_s": stats.elapsed_s}


class NodeWorker:
    """Runs slices of the plan on one node (create it with Ray, pinned by its `sdg_node_<name>` resource)."""

    def __init__(self, cfg: SdgConfig, plan: Plan, run_dir: str, node: str, endpoints: Sequence[Mapping[str, Any]]):
        from sdg.engine.generate import load_pipelines
        from sdg.engine.journal import JournalStore
        from sdg.engine.runner import ErrorBreaker

        self.cfg, self.plan, self.node = cfg, plan, node
        self.endpoints = [dict(e) for e in endpoints]
        self.pipelines = load_pipelines(cfg, {lp.kind for lp in plan.leaves})
        self.journals = JournalStore(Path(run_dir) / "journal", writer=node)
        self.breaker = ErrorBreaker(cfg.generate.error_rate_limit, cfg.generate.error_window)
        self._units: dict[int, list[Unit]] = {}
        self._client: Any = None
        self._lock = asyncio.Lock()

    def _leaf_units(self, leaf: int) -> list[Unit]:
        if leaf not in self._units:
            self._units[leaf] = list(self.plan.leaves[leaf].iter_units(self.plan.seed))
        return self._units[leaf]

    def _per_endpoint(self) -> int:
        from sdg.engine.generate import in_flight_per_server

        return in_flight_per_server(self.cfg)

    async def _chat_client(self) -> Any:
        from sdg.teacher.client import Endpoint, TeacherClient

        async with self._lock:
            if self._client is None:
                per = self._per_endpoint()
                eps = [Endpoint(e["base_url"], e["model"], e.get("api_key"), max_in_flight=per,
                                name=f"{self.node}-{e['backend']}-{i}") for i, e in enumerate(self.endpoints)]
                client = TeacherClient(eps, timeout_s=self.cfg.teacher.request_timeout_s,
                                       max_retries=self.cfg.teacher.max_retries)
                self._client = await client.__aenter__()
        return self._client

    async def run(self, leaf: int, units: Sequence[int]) -> dict[str, Any]:
        """Run these units of leaf `leaf` (indices in its unit order); returns counts."""
        from sdg.engine.progress import Progress
        from sdg.engine.runner import run_plan

        client = await self._chat_client()
        cap = self.cfg.teacher.max_tokens

        async def chat(messages: list[dict], *, max_tokens: int, **kw: Any) -> Any:
            return await client.chat(messages, max_tokens=min(max_tokens, cap), **kw)

        all_units = self._leaf_units(leaf)
        todo = [all_units[i] for i in units]
        stats = await run_plan(self.plan, self.pipelines, chat, self.journals, done={}, progress=Progress(0, 0, mode="none"),
                               workers=self._per_endpoint() * len(self.endpoints), breaker=self.breaker, units=todo)
        out = stats_dict(stats)
        out.update(node=self.node, leaf=leaf, units=len(todo))
        return out

    async def close(self) -> str:
        """Flush and close this node's journals and its client (call before the outputs are written)."""
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
        self.journals.close()
        return self.node
