"""One engine set-up from config, used by both executors: the teacher client over a run's endpoints
(per-server in-flight bounds), the `teacher.max_tokens` cap on every block's request, and the error
breaker. The local executor opens one for the run; each Ray worker opens one on its node."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Sequence

from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.engine.runner import ErrorBreaker
from sdg.errors import TeacherBroken
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


class TeacherWatch:
    """The teacher as the requests see it, while they are in flight: how many, the oldest one's age, when
    the last reply came. It stops a run whose teacher accepts requests and never answers (no reply for
    `stall_s` while requests wait), and tells progress what a stall looks like as it happens."""

    def __init__(self, stall_s: float, retries: Callable[[], int] = lambda: 0,
                 alive_check: Callable[[], None] = lambda: None) -> None:
        self.stall_s = stall_s
        self._retries = retries
        self._alive_check = alive_check  # the watchdog of servers started here (raises when one died)
        self._in_flight: dict[int, float] = {}
        self._next = 0
        self.last_reply = time.monotonic()
        self.failures = 0

    def begin(self) -> int:
        self._next += 1
        if not self._in_flight:  # nothing was waiting: the clock starts now, not at the last reply
            self.last_reply = max(self.last_reply, time.monotonic())
        self._in_flight[self._next] = time.monotonic()
        return self._next

    def end(self, token: int, replied: bool) -> None:
        self._in_flight.pop(token, None)
        if replied:
            self.last_reply = time.monotonic()
        else:
            self.failures += 1

    def describe(self) -> str:
        now = time.monotonic()
        oldest = now - min(self._in_flight.values()) if self._in_flight else 0.0
        return (f"waiting: {len(self._in_flight)} requests in flight, oldest {oldest:.0f} s, last reply "
                f"{now - self.last_reply:.0f} s ago, {self._retries()} retries, {self.failures} failed")

    def check(self) -> None:
        """The servers' watchdog (started servers must live), then TeacherBroken when requests have waited
        `stall_s` with no reply at all."""
        self._alive_check()
        quiet = time.monotonic() - self.last_reply
        if self._in_flight and quiet > self.stall_s:
            raise TeacherBroken(
                f"stopping: no reply from the teacher for {quiet:.0f} s while {len(self._in_flight)} requests waited "
                f"(generate.stall_timeout_s={self.stall_s:g}): it accepts requests and does not answer (hung, or far "
                "too slow). Finished units are journaled: fix the teacher and run the same command again to resume")


@dataclass(frozen=True)
class EngineSession:
    """What `run_plan` needs to reach the teacher: the capped chat function, how many units to run at
    once (enough to keep every server's slots busy), the breaker that stops a broken teacher and the
    watch that stops a silent one."""

    chat: ChatFn
    workers: int
    breaker: ErrorBreaker
    watch: TeacherWatch | None = None


@contextlib.asynccontextmanager
async def engine_session(cfg: SdgConfig, endpoints: Sequence[Any], *, label: str = "") -> AsyncIterator[EngineSession]:
    """Open the client over `endpoints` (ServedEndpoint records) for the length of the block."""
    from sdg.teacher.client import Endpoint, TeacherClient

    per = in_flight_per_server(cfg)
    eps = [Endpoint(e.base_url, e.model, e.api_key, max_in_flight=per, name=f"{label}{e.backend}-{i}")
           for i, e in enumerate(endpoints)]
    t = cfg.teacher
    cap = t.max_tokens
    async with TeacherClient(eps, timeout_s=t.request_timeout_s, max_retries=t.max_retries,
                             deadline_s=t.request_deadline_s, max_response_bytes=t.max_response_bytes,
                             system_prompt_mode=t.system_prompt_mode) as client:  # shapes every request
        watch = TeacherWatch(cfg.generate.stall_timeout_s,
                             retries=lambda: sum(st.retries for st in client.stats().values()),
                             # servers started here (sdg.teacher.serving.Served) say whether they live
                             alive_check=getattr(endpoints, "check_alive", lambda: None))

        async def chat(messages: list[dict], *, max_tokens: int, **kw: Any) -> Any:
            token = watch.begin()
            res = None
            try:  # teacher.max_tokens caps every block's request
                res = await client.chat(messages, max_tokens=min(max_tokens, cap), **kw)
                return res
            finally:
                watch.end(token, bool(getattr(res, "ok", False)))

        g = cfg.generate
        breaker = ErrorBreaker(g.error_rate_limit, g.error_window, unusable_limit=g.unusable_limit,
                               unusable_window=g.unusable_window)
        yield EngineSession(chat, per * len(eps), breaker, watch)


async def run_slice(session: EngineSession, plan: Any, pipelines: Any, journals: Any, units: Sequence[Any]) -> Any:
    """Run `units` (a work item: some units of one leaf) in an open session; its RunStats. The caller
    reports progress for the whole item (a Ray worker: to the executor on node 0)."""
    from sdg.engine.progress import Progress
    from sdg.engine.runner import run_plan

    return await run_plan(plan, pipelines, session.chat, journals, done={}, progress=Progress(len(units), mode="none"),
                          workers=session.workers, breaker=session.breaker, units=units, watch=session.watch)
