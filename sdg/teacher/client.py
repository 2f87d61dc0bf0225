"""The async client the engine talks to the teacher through: OpenAI-compatible HTTP over aiohttp.

The engine fires many requests and must go on when some fail, so every per-request problem comes
back as a `RequestFailure` value; only bad arguments raise, and cancellation propagates. Several
endpoints (replicas) share the load: each request goes to the least-loaded one, and per-endpoint
slots make callers queue here instead of overloading a server.

The transport is aiohttp, not httpx: with 64 requests in flight httpx's connection pool spent 6 ms of CPU
per request against a zero-latency server (aiohttp 0.24 ms; benchmarks/dispatch_ceiling.py --client-floor),
which alone capped the engine at ~170 requests/s on one core. httpx stays for the synchronous probes.

Three options the engine turns on (engine_session), off by default so a bare client dispatches as before:
  prefix_routing  a request goes to the endpoint its prompt prefix hashes to (rendezvous hashing over the
                  endpoint names; key = `prefix_key=` or the system message + the first PREFIX_CHARS characters
                  of the first user message), so the server's slot / prefix cache serves the shared prefix; it
                  goes to the least-loaded endpoint instead when the preferred one is full or clearly busier.
  adaptive        AIMD concurrency per endpoint: the limit starts at the slots the server reports
                  (llama.cpp /props total_slots or /slots; `Endpoint.slots` when the caller knows them, e.g.
                  vLLM's max_num_seqs) or at ADAPTIVE_START, grows by ~1 per round of replies while latency per
                  token holds, halves on 429/503 (once per round) and shrinks on latency blow-ups (queueing);
                  never above Endpoint.max_in_flight. The limit reached is `EndpointStats.limit`.
  n sampling      chat(n=k) sends one request with `n` where the endpoint takes it (`discover()` probes it:
                  n=2 must give 2 choices; a 400 later turns it off) and k separate requests otherwise, with
                  seeds seed, seed+1, ... (n choices cannot have a seed each: they share the one seed).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import aiohttp
import orjson

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
CONTEXT_STATUSES = frozenset({400, 413})
# How servers say "the prompt does not fit" (vLLM, OpenAI, llama.cpp, TGI), matched case-insensitively.
CONTEXT_MARKERS = ("context length", "maximum context", "context_length_exceeded",
                   "exceeds the available context size", "exceed_context_size", "too long")
MAX_BAD_RESPONSE_RETRIES = 1  # a garbled body is rarely transient: one more try, then report it
PREFIX_CHARS = 1024  # of the first user message, in the default prefix key
ADAPTIVE_START = 4  # the AIMD limit of an endpoint that reports no slots
N_UNKNOWN = 0  # Endpoint n capability not probed yet: try n, learn from a 400


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server; `max_in_flight` bounds the requests it gets at once."""

    base_url: str  # ".../v1"
    model: str = "teacher"
    api_key: str | None = field(default=None, repr=False)  # kept out of logs
    max_in_flight: int = 8
    name: str = ""  # defaults to base_url; keys stats() and the `endpoint` of results
    slots: int | None = None  # requests the server serves at once, when known (the adaptive limit's start)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint base_url must be http(s)://...: {self.base_url!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not self.name:
            object.__setattr__(self, "name", self.base_url)


@dataclass(frozen=True)
class Completion:
    """A successful request. `texts` holds every choice (n > 1); `text` is the first."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    endpoint: str
    attempts: int
    latency_s: float  # the answering attempt's round trip; queueing and backoff not included
    texts: tuple[str, ...] = ()
    cached_tokens: int = 0  # prompt tokens the server's prefix cache served (usage.prompt_tokens_details)
    finish_reasons: tuple[str | None, ...] = ()  # per choice, like `texts`
    http_requests: int = 1  # requests the server(s) answered for it: n when n choices went as n requests

    @property
    def ok(self) -> bool:
        return True


@dataclass(frozen=True)
class RequestFailure:
    """A request that did not produce text, after retries; `retryable`: transient, worth trying later."""

    kind: str  # "http" | "timeout" | "connection" | "bad_response" | "context_length" | "cancelled"
    message: str
    status: int | None
    endpoint: str
    attempts: int
    retryable: bool

    @property
    def ok(self) -> bool:
        return False


Result = Completion | RequestFailure


@dataclass(frozen=True)
class EndpointStats:
    """A snapshot of one endpoint's counters; `retries` counts failed attempts that were retried."""

    in_flight: int
    done: int
    failed: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    limit: int = 0  # the in-flight limit now (adaptive: the AIMD limit reached; else max_in_flight)
    slots: int | None = None  # the server's slots, as reported (/props, /slots) or configured
    n_cap: int = 1  # choices one request may ask for (1: `n` unsupported or not probed)
    prefix_routed: int = 0  # requests sent to the endpoint their prefix hashes to
    throttled: int = 0  # 429/503 answers seen (each halves an adaptive limit at most once per round)


@dataclass
class _Fault:
    """One failed attempt, before the retry policy decides what to do with it."""

    kind: str
    message: str
    status: int | None
    retryable: bool
    retry_after: float | None = None
    sent: float = 0.0  # monotonic time the attempt was sent (HTTP answers only)


class _State:
    """Mutable per-endpoint bookkeeping (one event loop: no locks needed)."""

    def __init__(self, index: int, ep: Endpoint) -> None:
        self.index, self.ep = index, ep
        self.in_flight = self.done = self.failed = self.retries = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.down_until = 0.0  # monotonic time until which a refusing endpoint is skipped
        self.down_count = 0
        self.reported = False  # slots from the server's /props or /slots (llama.cpp: n is capped at them)
        self.salt = zlib.crc32(ep.name.encode())  # rendezvous hashing: this endpoint's identity
        self.cap = ep.max_in_flight  # the static limit (adaptive: the ceiling)
        self.slots = ep.slots
        self.limit = float(min(ep.max_in_flight, ep.slots or ADAPTIVE_START))  # AIMD limit (adaptive only)
        self.floor = 1.0
        self.last_cut = 0.0  # monotonic time of the last multiplicative decrease
        self.tpt_base = 0.0  # best seconds per completion token seen (adaptive latency baseline)
        self.n_cap = N_UNKNOWN
        self.prefix_routed = self.throttled = 0
        self.static = True  # set by the client: fixed limit = cap
        self.headers = {"Content-Type": "application/json"}  # the same for every request (made once)
        if ep.api_key:
            self.headers["Authorization"] = f"Bearer {ep.api_key}"


def _dumps(obj: Any) -> bytes:
    """The request body: compact UTF-8 JSON (orjson: a quarter of the stdlib's time on a 2 KB prompt)."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

Parser = Callable[[Any], "tuple[tuple[str, ...], tuple[str | None, ...]]"]


async def _read_capped(r: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` bytes."""
    if r.content_length is not None:
        return None if r.content_length > limit else await r.read()  # read() stops at Content-Length
    parts, size = [], 0
    while True:
        chunk = await r.content.read(1 << 16)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)


class TeacherClient:
    """Async client over one or more endpoints; use as `async with TeacherClient([...]) as c:`."""

    def __init__(self, endpoints: Sequence[Endpoint], *, timeout_s: float = 600, connect_timeout_s: float = 10,
                 max_retries: int = 4, backoff_s: float = 0.5, backoff_max_s: float = 30,
                 cooldown_s: float = 5, cooldown_max_s: float = 30, deadline_s: float | None = None,
                 max_response_bytes: int = 8 << 20, system_prompt_mode: str = "system",
                 prefix_routing: bool = False, adaptive: bool = False) -> None:
        endpoints = list(endpoints)
        if not endpoints:
            raise ValueError("TeacherClient needs at least one endpoint")
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique (set Endpoint.name): {names}")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if max_retries < 0 or backoff_s < 0 or backoff_max_s < 0 or cooldown_s < 0 or cooldown_max_s < 0:
            raise ValueError("max_retries, backoff and cool-down values must be >= 0")
        self._states = [_State(i, e) for i, e in enumerate(endpoints)]
        self._prefix_routing, self._adaptive = prefix_routing, adaptive
        for st in self._states:
            st.static = not adaptive
        self._max_retries, self._backoff_s, self._backoff_max_s = max_retries, backoff_s, backoff_max_s
        self._cooldown_s, self._cooldown_max_s = cooldown_s, cooldown_max_s
        self._deadline_s = deadline_s  # one request over all its attempts and back-offs
        self._max_response_bytes = max_response_bytes
        if system_prompt_mode not in SYSTEM_PROMPT_MODES:
            raise ValueError(f"system_prompt_mode must be one of {', '.join(SYSTEM_PROMPT_MODES)}, "
                             f"got {system_prompt_mode!r}")
        self._system_prompt_mode = system_prompt_mode  # how every chat request's messages are shaped
        self._rng = random.Random()
        self._rr = 0  # round-robin start for ties
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._n_waiting = 0
        self._closed = False
        # sock_read: the longest silence while waiting for an answer (a long generation sends nothing
        # until it is done); no total, since queueing for a connection happens in our slots, not here
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s,
                                              sock_read=timeout_s)
        self._http: aiohttp.ClientSession | None = None  # made on first use, inside the running loop

    # -- public API ---------------------------------------------------------------------------------

    @property
    def total_slots(self) -> int:
        return sum(s.ep.max_in_flight for s in self._states)

    def stats(self) -> dict[str, EndpointStats]:
        return {s.ep.name: EndpointStats(s.in_flight, s.done, s.failed, s.retries, s.prompt_tokens,
                                         s.completion_tokens, _limit(s), s.slots, max(1, s.n_cap),
                                         s.prefix_routed, s.throttled) for s in self._states}

    @property
    def n_cap(self) -> int:
        """Choices one request may ask for on every endpoint (1: send separate requests)."""
        return min(max(1, s.n_cap) for s in self._states)

    async def discover(self, *, probe_n: bool = True, timeout_s: float = 30.0) -> None:
        """Readiness questions, per endpoint: its slots (llama.cpp GET /props total_slots, else GET /slots;
        the adaptive limit starts there) and whether `n` works (a chat request with n=2, max_tokens=1 must
        give 2 choices; llama.cpp takes n up to its slots). Never raises: what is not learned stays unknown."""
        await asyncio.gather(*(self._discover_one(st, probe_n, timeout_s) for st in self._states))

    async def _discover_one(self, st: _State, probe_n: bool, timeout_s: float) -> None:
        root = st.ep.base_url.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {st.ep.api_key}"} if st.ep.api_key else {}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        if st.slots is None:
            for path, read in (("/props", _props_slots), ("/slots", _slots_count)):
                try:
                    async with self._session().get(root + path, headers=headers, timeout=timeout,
                                                   allow_redirects=False) as r:
                        if r.status == 200:
                            got = read(json.loads(await r.read()))
                            if got:
                                st.slots, st.reported = got, True
                                break
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, TypeError, AttributeError):
                    continue
            if st.slots and not st.static:
                st.limit = float(min(st.cap, st.slots))
        if st.slots and not st.static:
            st.floor = float(min(st.cap, max(1, st.slots // 2)))
        if not probe_n:
            return
        # temperature > 0: vLLM refuses n > 1 with greedy sampling ("n must be 1 when using greedy sampling")
        body = {"messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 1, "temperature": 1.0, "seed": 0,
                "n": 2}
        try:
            res = await asyncio.wait_for(self._attempt(st, "/chat/completions", body, _parse_chat, 1), timeout_s)
        except asyncio.TimeoutError:
            return
        if isinstance(res, Completion) and len(res.texts) == 2:
            # llama.cpp runs each choice in a slot of its own and refuses n above them
            st.n_cap = min(64, st.slots) if st.slots else 64
        else:
            st.n_cap = 1

    async def chat(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.7,
                   seed: int | None = None, stop: list[str] | None = None, n: int = 1,
                   prefix_key: str | None = None, **extra: Any) -> Result:
        """POST /chat/completions; n > 1 returns every choice in `texts`.

        n > 1 goes as ONE request with `n` where the endpoints take it (discover(); unknown: tried, and a
        400 turns it off), else as separate requests with seeds seed, seed+1, ... whose texts are joined.
        `prefix_key`: what prefix routing hashes (default: system message + start of the first user message)."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        shaped = shape_messages(messages, self._system_prompt_mode)
        body = _body(dict(messages=shaped), max_tokens, temperature, seed, stop, extra)
        pref = self._preferred(prefix_key if prefix_key is not None else _prefix_of(messages))
        if n == 1:
            return await self._call("/chat/completions", body, _parse_chat, pref)
        cap = min((s.n_cap for s in self._states), default=1)
        if temperature > 0 and (cap == N_UNKNOWN or cap >= n):  # greedy: vLLM refuses n > 1
            res = await self._call("/chat/completions", {**body, "n": n}, _parse_chat, pref)
            if res.ok:
                if len(res.texts) < n:  # n ignored: this reply stands, later ones go as separate requests
                    for s in self._states:
                        s.n_cap = 1
                return res
            if not (res.kind == "http" and res.status in (400, 422)):
                return res
            for s in self._states:  # n refused: never again (above what worked, where it did)
                s.n_cap = 1 if cap == N_UNKNOWN else min(s.n_cap, n - 1)
        return await self._separate(body, n, seed, pref)

    async def _separate(self, body: dict[str, Any], n: int, seed: int | None, pref: _State | None) -> Result:
        """n choices as n requests (seeds seed + i); one Completion holding every text, or the first failure."""
        bodies = [body if seed is None else {**body, "seed": (seed + i) & 0x7FFFFFFF} for i in range(n)]
        results = await asyncio.gather(*(self._call("/chat/completions", b, _parse_chat, pref) for b in bodies))
        oks = [r for r in results if isinstance(r, Completion)]
        if len(oks) < n and not oks:
            return results[0]
        first = oks[0]
        return Completion(first.text, first.finish_reason, sum(r.prompt_tokens for r in oks),
                          sum(r.completion_tokens for r in oks), first.endpoint, max(r.attempts for r in results),
                          max(r.latency_s for r in oks), tuple(t for r in oks for t in (r.texts or (r.text,))),
                          sum(r.cached_tokens for r in oks),
                          tuple(f for r in oks for f in (r.finish_reasons or (r.finish_reason,))), len(results))

    async def complete(self, prompt: str, *, max_tokens: int, temperature: float = 0.7, seed: int | None = None,
                       stop: list[str] | None = None, prefix_key: str | None = None, **extra: Any) -> Result:
        """POST /completions (raw prompt, no chat template)."""
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        body = _body(dict(prompt=prompt), max_tokens, temperature, seed, stop, extra)
        pref = self._preferred(prefix_key if prefix_key is not None else prompt[:PREFIX_CHARS])
        return await self._call("/completions", body, _parse_text, pref)

    async def aclose(self) -> None:
        """Close the connection pool; callers still queued get a "cancelled" failure."""
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- retry policy ---------------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], parse: Parser, pref: _State | None = None) -> Result:
        if self._closed:
            raise RuntimeError("TeacherClient is closed")
        attempts = bad_responses = 0
        last: _State | None = None
        started = time.monotonic()
        while True:
            st = await self._acquire(avoid=last, pref=pref)
            if st is None:  # closed while we were queued
                return RequestFailure("cancelled", "client closed before the request was sent", None,
                                      last.ep.name if last else "", attempts, True)
            attempts += 1
            try:
                res = await self._attempt(st, path, body, parse, attempts)
            finally:  # also on cancellation: the slot must come back
                self._release(st)
            if isinstance(res, Completion):
                st.done += 1
                st.prompt_tokens += res.prompt_tokens
                st.completion_tokens += res.completion_tokens
                st.down_count, st.down_until = 0, 0.0
                if not st.static:
                    self._grow(st, res)
                return res
            if res.status in RETRY_AFTER_STATUSES:
                st.throttled += 1
                if not st.static:
                    self._cut(st, res.sent)
            if res.kind == "bad_response":
                bad_responses += 1
            delay = self._delay(attempts, res.retry_after)
            past_deadline = self._deadline_s is not None and time.monotonic() - started + delay > self._deadline_s
            retry = (res.retryable and attempts <= self._max_retries and not self._closed
                     and bad_responses <= MAX_BAD_RESPONSE_RETRIES and not past_deadline)
            if not retry:
                st.failed += 1
                message = res.message + (f" (gave up: teacher.request_deadline_s={self._deadline_s:g} s over "
                                         f"{attempts} attempts)" if past_deadline and res.retryable else "")
                return RequestFailure(res.kind, message, res.status, st.ep.name, attempts, res.retryable)
            st.retries += 1
            last = st
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server gave one, else exponential backoff with jitter; both capped."""
        if retry_after is not None:
            return min(self._backoff_max_s, max(0.0, retry_after))
        d = min(self._backoff_max_s, self._backoff_s * 2.0 ** min(attempt - 1, 60))
        return d / 2 + self._rng.uniform(0, d / 2)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self.total_slots, limit_per_host=0)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False)
        return self._http

    async def _attempt(self, st: _State, path: str, body: dict[str, Any], parse: Parser,
                       attempts: int) -> Completion | _Fault:
        ep = st.ep
        headers = st.headers
        payload = _dumps({"model": ep.model, **body})  # bytes: aiohttp's lightest payload
        t0 = time.monotonic()
        try:
            async with self._session().post(ep.base_url + path, data=payload, headers=headers,
                                            allow_redirects=False) as r:
                body = await _read_capped(r, self._max_response_bytes)  # never a whole huge body
                if body is None:
                    return _Fault("bad_response", f"reply from {ep.name} larger than {self._max_response_bytes} "
                                                  "bytes (teacher.max_response_bytes)", r.status, False)
                resp = Reply(r.status, r.reason or "", r.headers.get("retry-after"), body)
        except aiohttp.ClientConnectorError as e:  # never reached the server: try elsewhere
            self._mark_down(st)
            return _Fault("connection", f"cannot connect to {ep.name}: {_describe(e)}", None, True)
        except aiohttp.ConnectionTimeoutError as e:
            self._mark_down(st)
            return _Fault("connection", f"cannot connect to {ep.name} in time: {_describe(e)}", None, True)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            return _Fault("timeout", f"{ep.name} did not answer in time: {_describe(e)}", None, True)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as e:
            return _Fault("connection", f"connection to {ep.name} failed: {_describe(e)}", None, True)  # server died
        except aiohttp.ClientError as e:  # malformed HTTP
            return _Fault("bad_response", f"bad response from {ep.name}: {_describe(e)}", None, True)
        except RuntimeError as e:  # aiohttp's "Session is closed"
            if self._closed:
                return _Fault("cancelled", f"client closed during the request: {e}", None, True)
            raise
        latency = time.monotonic() - t0
        status = resp.status
        if status != 200:
            fault = _http_fault(ep.name, resp)
            fault.sent = t0
            return fault
        try:
            data = orjson.loads(resp.body)
            texts, finish = parse(data)
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0) if isinstance(usage, dict) else 0
            completion_tokens = int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
            details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            return _Fault("bad_response", f"unusable response from {ep.name}: {type(e).__name__}: {e}; "
                                          f"body starts {resp.text[:200]!r}", status, True)
        return Completion(texts[0], finish[0], prompt_tokens, completion_tokens, ep.name, attempts, latency, texts,
                          cached, finish)

    # -- slots and dispatch ----------------------------------------------------------------------------

    async def _acquire(self, avoid: _State | None, pref: _State | None = None) -> _State | None:
        """A slot on the least-loaded usable endpoint, waiting in FIFO order; None once closed."""
        loop = asyncio.get_running_loop()
        woken = False
        while not self._closed:
            st, wait_s = self._pick(avoid, pref)
            if st is not None and (woken or self._n_waiting == 0):  # no barging past queued callers
                st.in_flight += 1
                if self._n_waiting and self._has_capacity():
                    self._wake_one()  # more than one slot opened (e.g. a cool-down ended)
                return st
            fut: asyncio.Future[None] = loop.create_future()
            (self._waiters.appendleft if woken else self._waiters.append)(fut)
            timer = loop.call_later(wait_s, _wake, fut) if wait_s is not None else None
            self._n_waiting += 1
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # pass on the wake-up this caller will not use
                raise
            finally:
                self._n_waiting -= 1
                if timer is not None:
                    timer.cancel()
            woken = True
        return None

    def _release(self, st: _State) -> None:
        st.in_flight -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _usable(self, now: float) -> list[_State]:
        """Endpoints in cool-down are skipped while any other is up; if all are down, all are tried."""
        up = [s for s in self._states if s.down_until <= now]
        return up or self._states

    def _pick(self, avoid: _State | None, pref: _State | None = None) -> tuple[_State | None, float | None]:
        """(least-loaded endpoint with a free slot, None) or (None, seconds until a cool-down ends).

        Ties go round robin; the endpoint a retry just failed on comes last. `pref` (prefix routing) wins
        while it has a free slot and is not clearly busier than the least-loaded one.
        """
        n = len(self._states)
        if n == 1:  # one server: no choice to make
            st = self._states[0]
            if st.in_flight < _limit(st):
                return st, None
            return None, None
        now = time.monotonic()
        usable = self._usable(now)
        best, best_key = None, None
        for k in range(n):
            s = self._states[(self._rr + k) % n]
            if s in usable and s.in_flight < _limit(s):
                key = (s is avoid, s.in_flight)  # a retry goes elsewhere when it can
                if best_key is None or key < best_key:
                    best, best_key = s, key
        if best is not None:
            if (pref is not None and pref is not best and pref is not avoid and pref in usable
                    and pref.in_flight < _limit(pref)
                    and pref.in_flight <= best.in_flight + max(2, _limit(pref) // 4)):
                pref.prefix_routed += 1
                return pref, None
            if best is pref:
                pref.prefix_routed += 1
            self._rr = (best.index + 1) % n
            return best, None
        cooling = [s.down_until - now for s in self._states if s.down_until > now]
        return None, (min(cooling) if cooling and len(usable) < n else None)

    def _preferred(self, key: str) -> _State | None:
        """The endpoint `key` hashes to (rendezvous hashing: highest score of (key hash, endpoint salt))."""
        if not self._prefix_routing or len(self._states) == 1:
            return None
        h = zlib.crc32(key.encode("utf-8", "surrogatepass"))
        return max(self._states, key=lambda s: hash((h, s.salt)))

    def _grow(self, st: _State, res: Completion) -> None:
        """Additive increase, about +1 per round of replies, while latency per token holds; a latency far
        above the best seen (the server queues) shrinks the limit instead, but not below the floor."""
        if res.completion_tokens > 0 and res.latency_s > 0.05:
            tpt = res.latency_s / res.completion_tokens
            if st.tpt_base == 0.0 or tpt < st.tpt_base:
                st.tpt_base = tpt
            elif tpt > 3.0 * st.tpt_base:
                if time.monotonic() - st.last_cut > res.latency_s:
                    st.limit = max(st.floor, st.limit * 0.9)
                    st.last_cut = time.monotonic()
                return
            else:
                st.tpt_base += 0.01 * (tpt - st.tpt_base)  # drift with load, slowly
        if st.in_flight + 1 >= int(st.limit):  # only grow a limit that is in use
            st.limit = min(float(st.cap), st.limit + 1.0 / st.limit)

    def _cut(self, st: _State, sent: float) -> None:
        """Multiplicative decrease on 429/503, once per round: answers to requests sent before the last cut
        were sent under the old limit and say nothing new."""
        if sent and sent < st.last_cut:
            return
        st.limit = max(1.0, st.limit * 0.5)
        st.last_cut = time.monotonic()

    def _has_capacity(self) -> bool:
        return any(s.in_flight < _limit(s) for s in self._usable(time.monotonic()))

    def _mark_down(self, st: _State) -> None:
        st.down_count += 1
        pause = min(self._cooldown_max_s, self._cooldown_s * 2.0 ** min(st.down_count - 1, 30))
        st.down_until = time.monotonic() + pause


# -- request and response shapes ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """What the client keeps of an HTTP response: read whole, so the connection goes back to the pool."""

    status: int
    reason: str
    retry_after: str | None
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


SYSTEM_PROMPT_MODES = ("system", "fold_into_user")  # teacher.system_prompt_mode


def shape_messages(messages: list[dict], mode: str) -> list[dict]:
    """Chat messages as the teacher is sent them: as they are (`system`), or with the system messages'
    text prepended to the first user message (`fold_into_user`, for chat templates that reject a system
    role). The one place this is done: every request of TeacherClient.chat and the readiness probe."""
    if mode == "system" or not any(m.get("role") == "system" for m in messages):
        return messages
    if mode != "fold_into_user":
        raise ValueError(f"system_prompt_mode must be one of {', '.join(SYSTEM_PROMPT_MODES)}, got {mode!r}")
    system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system").strip()
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    first = next((m for m in rest if m.get("role") == "user"), None)
    if first is None:  # nothing to fold into: the system text becomes the user's turn
        return ([{"role": "user", "content": system}] if system else []) + rest
    if system:
        content = first.get("content")
        if isinstance(content, list):  # content parts: the system text goes first, as a text part
            first["content"] = [{"type": "text", "text": system}, *content]
        else:
            first["content"] = f"{system}\n\n{content or ''}"
    return rest


RESERVED = frozenset({"model", "messages", "prompt", "max_tokens", "temperature", "seed", "stop", "n"})


def _body(base: dict[str, Any], max_tokens: int, temperature: float, seed: int | None, stop: list[str] | None,
          extra: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    clash = RESERVED & extra.keys()
    if clash:
        raise ValueError(f"pass {sorted(clash)} as named arguments (model comes from the Endpoint)")
    body = {**base, "max_tokens": max_tokens, "temperature": temperature, **extra}
    if seed is not None:
        body["seed"] = seed
    if stop:
        body["stop"] = list(stop)
    return body


def _choices(data: Any) -> list[dict]:
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"text is {type(value).__name__}, not str")
    return value


def _parse_chat(data: Any) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    choices = _choices(data)
    return (tuple(_as_text(c["message"].get("content")) for c in choices),
            tuple(c.get("finish_reason") for c in choices))


def _parse_text(data: Any) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    choices = _choices(data)
    return tuple(_as_text(c["text"]) for c in choices), tuple(c.get("finish_reason") for c in choices)


def _prefix_of(messages: list[dict]) -> str:
    """The default prefix key: the system message(s) + the first PREFIX_CHARS characters of the first user one."""
    system, user = "", ""
    for m in messages:
        role = m.get("role")
        if role == "system" and not user:
            system += str(m.get("content") or "")
        elif role == "user":
            content = m.get("content")
            user = (content if isinstance(content, str) else json.dumps(content))[:PREFIX_CHARS]
            break
    return system + "\x00" + user


def _props_slots(data: Any) -> int | None:
    n = data.get("total_slots") if isinstance(data, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def _slots_count(data: Any) -> int | None:
    return len(data) if isinstance(data, list) and data else None


def _http_fault(name: str, resp: Reply) -> _Fault:
    status, message = resp.status, server_message(resp)
    if status in CONTEXT_STATUSES and is_context_error(resp.text):
        return _Fault("context_length", message, status, False)
    retry_after = parse_retry_after(resp.retry_after) if status in RETRY_AFTER_STATUSES else None
    return _Fault("http", f"HTTP {status} from {name}: {message}", status, status in RETRY_STATUSES, retry_after)


def is_context_error(body: str) -> bool:
    """Whether an error body says the prompt (plus max_tokens) does not fit the model's context."""
    low = body.lower()
    return any(m in low for m in CONTEXT_MARKERS)


def server_message(resp: Reply) -> str:
    """The error text the server meant for humans: OpenAI's error.message, else the body's start."""
    try:
        data = json.loads(resp.body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        for candidate in (err.get("message") if isinstance(err, dict) else err, data.get("message"),
                          data.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
    return resp.text.strip()[:500] or resp.reason


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _limit(st: _State) -> int:
    """One probe at a time to an endpoint that refused connections, until it answers again; else the static
    max_in_flight, or the adaptive limit."""
    if st.down_count:
        return 1
    return st.cap if st.static else max(1, int(st.limit))


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
