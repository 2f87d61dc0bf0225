"""One engine set-up from config, used by both executors: the teacher client over a run's endpoints
(per-server in-flight bounds), the judge's (its own client when `judge=` names a model, else the
teacher's), each with its `max_tokens` cap, whether the judge takes schema-constrained verdicts (asked
once, at readiness), and the error breaker. The local executor opens one for the run; each Ray worker
opens one on its node."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Sequence

from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.engine.runner import ErrorBreaker
from sdg.errors import TeacherBroken
from sdg.pipeline.types import ChatFn, Judge

DEFAULT_ENDPOINT_SLOTS = 8  # an endpoint we did not start: its slots are unknown


def server_slots(teacher: TeacherConfig) -> int:
    """Requests one teacher server works on at once."""
    if teacher.backend == "llama-cpp":
        return teacher.llama_cpp.n_parallel
    if teacher.backend == "vllm":
        return teacher.vllm.max_num_seqs or 256
    return DEFAULT_ENDPOINT_SLOTS


def in_flight_per_server(cfg: SdgConfig, teacher: TeacherConfig | None = None) -> int:
    """Requests kept in flight at one teacher (or judge) server: generate.max_concurrency, else twice its slots."""
    return cfg.generate.max_concurrency or 2 * server_slots(teacher or cfg.teacher)


# The readiness question for structured output: a reply constrained to this schema is JSON with "ok".
_PROBE_FORMAT = {"type": "json_schema", "json_schema": {"name": "probe", "strict": True, "schema": {
    "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}}}


PROBE_TIMEOUT_S = 60.0


async def accepts_json_schema(chat: ChatFn, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the server behind `chat` constrains a reply to a JSON schema: it answers a request with a
    `json_schema` response_format (no 400) with JSON that has the schema's key (a server that ignores the
    field answers in prose). No answer within `timeout_s`: no."""
    import asyncio
    import json

    try:
        res = await asyncio.wait_for(chat([{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
                                          max_tokens=16, temperature=0.0, seed=1, response_format=_PROBE_FORMAT),
                                     timeout_s)
    except asyncio.TimeoutError:
        return False
    if not getattr(res, "ok", False):
        return False
    try:
        return isinstance(json.loads(res.text), dict) and "ok" in json.loads(res.text)
    except (TypeError, ValueError):
        return False


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
    judge: Judge | None = None  # None: judge blocks ask the teacher in free text
    clients: tuple[Any, ...] = ()  # the TeacherClients (teacher, judge): stats() per endpoint (limit, n_cap, ...)


def _client(teacher: TeacherConfig, endpoints: Sequence[Any], per: int, label: str, adaptive: bool) -> Any:
    """The client over `endpoints`: prefix routing on; with `adaptive`, AIMD in-flight limits per endpoint
    that start at the server's slots (known for servers started here, else asked at readiness) and never
    exceed `per`."""
    from sdg.teacher.client import Endpoint, TeacherClient

    slots = server_slots(teacher) if teacher.backend in ("llama-cpp", "vllm") else None
    eps = [Endpoint(e.base_url, e.model, e.api_key, max_in_flight=per, name=f"{label}{e.backend}-{i}",
                    slots=slots)
           for i, e in enumerate(endpoints)]
    return TeacherClient(eps, timeout_s=teacher.request_timeout_s, max_retries=teacher.max_retries,
                         deadline_s=teacher.request_deadline_s, max_response_bytes=teacher.max_response_bytes,
                         system_prompt_mode=teacher.system_prompt_mode,  # shapes every request
                         prefix_routing=True, adaptive=adaptive)


async def _ready(client: Any, teacher: TeacherConfig) -> None:
    """Readiness questions to the servers: slots (/props, /slots) and, for servers started here, whether
    `n` works (an `endpoint` teacher learns it on first use instead: no extra request to it)."""
    await client.discover(probe_n=teacher.backend in ("llama-cpp", "vllm"), timeout_s=PROBE_TIMEOUT_S)


def _watched(client: Any, watch: TeacherWatch, cap: int) -> ChatFn:
    """The client's chat with `cap` on every request's max_tokens, each request seen by the watch; it takes
    `n` (supports_n: the client sends separate requests where a server does not)."""

    async def chat(messages: list[dict], *, max_tokens: int, **kw: Any) -> Any:
        token = watch.begin()
        res = None
        try:
            res = await client.chat(messages, max_tokens=min(max_tokens, cap), **kw)
            return res
        finally:
            watch.end(token, bool(getattr(res, "ok", False)))

    chat.supports_n = True  # type: ignore[attr-defined]
    return chat  # type: ignore[return-value]


def _alive_checks(*served: Any) -> Callable[[], None]:
    checks = [getattr(s, "check_alive", None) for s in served]

    def check() -> None:
        for c in checks:
            if c is not None:
                c()

    return check


@contextlib.asynccontextmanager
async def engine_session(cfg: SdgConfig, endpoints: Sequence[Any], *, judge_endpoints: Sequence[Any] | None = None,
                         label: str = "") -> AsyncIterator[EngineSession]:
    """Open the clients over `endpoints` (ServedEndpoint records; `judge_endpoints`: the judge's, when
    `judge=` names a model of its own) for the length of the block."""
    t = cfg.teacher
    per = in_flight_per_server(cfg)
    judge_cfg = cfg.judge if judge_endpoints else None
    adaptive = not cfg.generate.max_concurrency  # a concurrency the user set stays fixed
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(_client(t, endpoints, per, label, adaptive))
        await _ready(client, t)
        judge_client = None
        if judge_cfg is not None:
            judge_client = await stack.enter_async_context(
                _client(judge_cfg, judge_endpoints, in_flight_per_server(cfg, judge_cfg), f"{label}judge-", adaptive))
            await _ready(judge_client, judge_cfg)
        clients = [c for c in (client, judge_client) if c is not None]
        watch = TeacherWatch(cfg.generate.stall_timeout_s,
                             retries=lambda: sum(st.retries for c in clients for st in c.stats().values()),
                             # servers started here (sdg.teacher.serving.Served) say whether they live
                             alive_check=_alive_checks(endpoints, judge_endpoints))
        chat = _watched(client, watch, t.max_tokens)
        judge_chat = _watched(judge_client, watch, judge_cfg.max_tokens) if judge_client is not None else chat
        probe = (lambda: accepts_json_schema(judge_chat)) if (judge_cfg or t).structured_output == "auto" else None
        judge = Judge(judge_chat, probe)
        g = cfg.generate
        breaker = ErrorBreaker(g.error_rate_limit, g.error_window, unusable_limit=g.unusable_limit,
                               unusable_window=g.unusable_window)
        workers = per * len(endpoints)
        if judge_client is not None:  # judge requests wait on the judge's servers, not on a unit worker
            workers += in_flight_per_server(cfg, judge_cfg) * len(judge_endpoints or ())
        yield EngineSession(chat, workers, breaker, watch, judge, clients=tuple(clients))


def endpoint_report(session: EngineSession) -> dict[str, dict]:
    """Per endpoint, what the clients saw: the in-flight limit reached, slots, n cap, prefix-routed and throttled
    requests (for the manifest)."""
    out: dict[str, dict] = {}
    for client in session.clients:
        for name, st in client.stats().items():
            out[name] = {"limit": st.limit, "slots": st.slots, "n_cap": st.n_cap, "prefix_routed": st.prefix_routed,
                         "throttled": st.throttled, "done": st.done, "failed": st.failed, "retries": st.retries}
    return out


async def run_slice(session: EngineSession, plan: Any, pipelines: Any, journals: Any, units: Sequence[Any],
                    outcomes: list | None = None) -> Any:
    """Run `units` (one Ray call's units of a leaf) in an open session; its RunStats. The caller reports
    progress for them together (a Ray worker: to the executor on node 0). `outcomes` gets (unit id, failed, kept rows) per unit."""
    from sdg.engine.progress import Progress
    from sdg.engine.runner import run_plan

    return await run_plan(plan, pipelines, session.chat, journals, done={}, progress=Progress(len(units), mode="none"),
                          workers=session.workers, breaker=session.breaker, units=units, watch=session.watch,
                          judge=session.judge, outcomes=outcomes)
