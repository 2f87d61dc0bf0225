"""One engine set-up from config, used by both executors: the teacher client over a run's endpoints
(per-server in-flight bounds), the `teacher.max_tokens` cap on every block's request, and the error
breaker. The local executor opens one for the run; each Ray worker opens one on its node."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.engine.runner import ErrorBreaker
from sdg.pipeline.types import ChatFn

DEFAULT_ENDPOINT_SLOTS = 8  # an endpoint we did not start: its slots are unknown


def server_slots(teacher: TeacherConfig) -> int:
    """Requests one teacher server works on at once."""
    if teacher.backend == "llama-cpp":
        return teacher.llama_cpp.n_parallel
    if teacher.backend == "vllm":
        return teacher.vllm.max_num_seqs or 256
    return DEFAULT_ENDPOINT_SLOTS


def in_flight_per_server(cfg: SdgConfig) -> int:
    """Requests kept in flight at one teacher server: generate.max_concurrency, else twice its slots."""
    return cfg.generate.max_concurrency or 2 * server_slots(cfg.teacher)


@dataclass(frozen=True)
class EngineSession:
    """What `run_plan` needs to reach the teacher: the capped chat function, how many units to run at
    once (enough to keep every server's slots busy) and the breaker that stops a broken teacher."""

    chat: ChatFn
    workers: int
    breaker: ErrorBreaker


@contextlib.asynccontextmanager
async def engine_session(cfg: SdgConfig, endpoints: Sequence[Any], *, label: str = "") -> AsyncIterator[EngineSession]:
    """Open the client over `endpoints` (ServedEndpoint records) for the length of the block."""
    from sdg.teacher.client import Endpoint, TeacherClient

    per = in_flight_per_server(cfg)
    eps = [Endpoint(e.base_url, e.model, e.api_key, max_in_flight=per, name=f"{label}{e.backend}-{i}")
           for i, e in enumerate(endpoints)]
    cap = cfg.teacher.max_tokens
    async with TeacherClient(eps, timeout_s=cfg.teacher.request_timeout_s, max_retries=cfg.teacher.max_retries) as client:
        async def chat(messages: list[dict], *, max_tokens: int, **kw: Any) -> Any:
            return await client.chat(messages, max_tokens=min(max_tokens, cap), **kw)  # teacher.max_tokens caps blocks

        yield EngineSession(chat, per * len(eps),
                            ErrorBreaker(cfg.generate.error_rate_limit, cfg.generate.error_window))


async def run_slice(session: EngineSession, plan: Any, pipelines: Any, journals: Any, units: Sequence[Any]) -> Any:
    """Run `units` (a work item: some units of one leaf) in an open session; its RunStats. The caller
    reports progress for the whole item (a Ray worker: to the executor on node 0)."""
    from sdg.engine.progress import Progress
    from sdg.engine.runner import run_plan

    return await run_plan(plan, pipelines, session.chat, journals, done={}, progress=Progress(len(units), mode="none"),
                          workers=session.workers, breaker=session.breaker, units=units)
