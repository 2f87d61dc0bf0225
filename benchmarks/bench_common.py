"""Helpers shared by the engine benchmarks: load-average gate, CPU pinning, process memory and CPU readings,
and the stand-in teachers (`ZeroLatencyStandIn`, `FixedLatencyStandIn`).

Not a benchmark itself. The benchmarks run as `python benchmarks/<name>.py`, so this module is
importable as `bench_common` from any of them (their folder is first on sys.path). A stand-in's server
runs in a child process started as `python benchmarks/bench_common.py --stand-in-serve ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]


def log_err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def fmt_load(load: tuple[float, float, float] | None = None) -> str:
    a, b, c = load or loadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def wait_for_quiet(max_load: float = 1.2, *, poll_s: float = 30.0, max_wait_s: float = 600.0,
                   log: Log = log_err) -> dict:
    """Wait until the 1-minute load average is below `max_load` (polled every `poll_s`, at most `max_wait_s`).

    On a 2-core machine shared with others a local model is 20-60x slower when the cores are
    oversubscribed, so a measurement only means something on a quiet machine. Returns what was seen:
    {"load": (1, 5, 15 min), "waited_s": ..., "quiet": bool}. max_load <= 0 disables the gate.
    """
    start = time.monotonic()
    load = loadavg()
    if max_load <= 0:
        return {"load": load, "waited_s": 0.0, "quiet": None}
    while load[0] >= max_load:
        waited = time.monotonic() - start
        if waited >= max_wait_s:
            log(f"load gate: 1-min load {load[0]:.2f} still >= {max_load} after {waited:.0f} s; measuring anyway "
                "(figures are suspect)")
            return {"load": load, "waited_s": waited, "quiet": False}
        log(f"load gate: 1-min load {load[0]:.2f} >= {max_load}; waiting {poll_s:.0f} s "
            f"({waited:.0f}/{max_wait_s:.0f} s)")
        time.sleep(poll_s)
        load = loadavg()
    return {"load": load, "waited_s": time.monotonic() - start, "quiet": True}


def pin_to(cpu: int | None) -> str:
    """Pin this process to one CPU when it exists; returns a description for the output."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        return f"not pinned (cpu {cpu} not in {sorted(allowed)})"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to cpu {cpu}"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM / VmSize of a process in bytes (from /proc/<pid>/status)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def sigterm_as_interrupt() -> None:
    """SIGTERM (timeout, kill) unwinds like Ctrl-C, so servers this benchmark started are stopped."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------------------------------------
# The stand-in teachers: measuring instruments, not models. One OpenAI-compatible chat server (an asyncio
# protocol), run in its own process, with a fixed latency per chat completion (0: answered at once),
# a number of slots and an optional API key.
# --------------------------------------------------------------------------------------------------------

_ANSWER_PAD = ("It covers the main point in plain words, gives one concrete example, and ends with a short "
               "note on when the rule does not apply.")


def _reply_template() -> bytes:
    """A chat completion with five parseable `Question: ...\\nAnswer: ...` pairs (about the length of a real
    256-token reply) and usage numbers; `@@K@@` is replaced by the completion's number."""
    pairs = [f"Question: What is stand-in fact @@K@@-{i} about topic {i}?\nAnswer: Stand-in fact @@K@@-{i} says "
             f"that item {i} comes first. {_ANSWER_PAD}" for i in range(1, 6)]
    body = {"id": "chatcmpl-standin-@@K@@", "object": "chat.completion", "created": 1767225600, "model": "teacher",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\n\n".join(pairs)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 256, "total_tokens": 556}}
    return json.dumps(body, separators=(",", ":")).encode()


_WORDS_TEXT = ("river stone maple copper lantern orbit signal harbor meadow cipher velvet summit ember glacier "
          "quartz falcon prism tundra cobalt willow beacon canyon delta fjord garnet hollow island jasmine kettle "
          "lagoon marble nectar oasis pebble quiver raven saffron timber umber valley walnut yarrow zephyr anchor "
          "basil cedar dune fern grove heron iris juniper kelp lotus moss nutmeg olive pine quill reed sage "
          "thistle urchin violet wren yew alder birch clover dahlia elm fig ginger hazel ivy jade laurel mint "
          "nettle oak poppy rowan sorrel tansy vetch wheat aster bramble cress dill fennel gorse hops indigo")
_WORDS = _WORDS_TEXT.split()


def _varied_text(k: int, i: int, n_words: int) -> str:
    """Words picked deterministically from (k, i): texts of different (k, i) share almost no 3-word shingles,
    so a near-duplicate filter keeps them (a real teacher's distinct pairs), unlike the fixed template."""
    rng = random.Random(k * 1_000_003 + i)
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


def _varied_pair(k: int, i: int) -> tuple[str, str]:
    return (f"How does the {_varied_text(k, 2 * i, 9)} work?",
            f"The {_varied_text(k, 2 * i + 1, 40)}. {_ANSWER_PAD}")


def _varied_chat_body(k: int) -> bytes:
    """`_reply_template()`'s chat completion, its five pairs in varied words (see `_varied_text`)."""
    pairs = [_varied_pair(k, i) for i in range(1, 6)]
    text = "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)
    body = {"id": f"chatcmpl-standin-{k}", "object": "chat.completion", "created": 1767225600, "model": "teacher",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 256, "total_tokens": 556}}
    return json.dumps(body, separators=(",", ":")).encode()


def _text_completion_body(k: int, body: bytes, varied: bool = False) -> bytes:
    """A /v1/completions reply (OpenAI's legacy completions API, as InstructLab SDG's LLMBlock calls it): one
    choice per prompt and per `n` (`prompt` a string or a list), each the text of ONE question/answer pair that
    InstructLab's simple pipeline splits at the first `?`, distinct per choice (`k`: the request's number)."""
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        req = {}
    prompts = req.get("prompt", "")
    n_prompts = len(prompts) if isinstance(prompts, list) else 1
    n = req.get("n") or 1
    texts = [("\n".join(_varied_pair(k, i)) if varied else
              f"What is stand-in fact {k}-{i} about topic {i % 5 + 1}?\nStand-in fact {k}-{i} says that item "
              f"{i % 5 + 1} comes first. {_ANSWER_PAD}") for i in range(n_prompts * int(n))]
    choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": "stop"} for i, t in enumerate(texts)]
    return json.dumps({"id": f"cmpl-standin-{k}", "object": "text_completion", "created": 1767225600,
                       "model": "teacher", "choices": choices,
                       "usage": {"prompt_tokens": 300 * n_prompts, "completion_tokens": 60 * len(choices),
                                 "total_tokens": 300 * n_prompts + 60 * len(choices)}},
                      separators=(",", ":")).encode()


def _is_text_completion(head: bytes) -> bool:
    """POST .../completions that is not .../chat/completions (the request line only)."""
    line = head.split(b"\r\n", 1)[0]
    return line.startswith(b"POST ") and b"/completions" in line and b"/chat/completions" not in line


_TEXT = b"text-completion"  # `_route`'s answer for a /v1/completions request (answered by `_text_completion`)


def _response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body)


class _StandInProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies by Content-Length (the clients never chunk a JSON body).

    POST .../chat/completions: the reply template, after `latency` s in one of `slots` (none: no limit);
    with latency 0 every request is answered at once, inside data_received. POST .../completions (the legacy
    text API): `len(prompt) * n` choices of one question/answer pair each (`_text_completion_body`), served
    like a chat completion: one slot for `latency` s whatever the number of choices (a GPU batch far from
    saturation), counted in `served` as one. GET .../health and
    .../models: 200; anything else 404; with an API key set, a request without `Authorization: Bearer KEY`: 401.
    Replies on a connection go out in request order. Configured per process by `serve_stand_in`.
    """

    latency = 0.0
    varied = False  # replies in varied words (`_varied_text`), not the fixed template
    instant_max_tokens = 0  # > 0: a request with max_tokens <= this is answered at once (a one-token probe)
    slots: asyncio.Semaphore | None = None
    auth = b""
    served = 0
    template = _reply_template()
    health = _response(b"200 OK", b'{"status":"ok"}')
    models = _response(b"200 OK", b'{"object":"list","data":[{"id":"teacher","object":"model"}]}')
    unauthorized = _response(b"401 Unauthorized", b'{"error":{"message":"missing or wrong API key"}}')
    not_found = _response(b"404 Not Found", b'{"error":{"message":"not found"}}')

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = bytearray()
        self.queue: asyncio.Queue[tuple[bytes, bytes, bytes]] | None = None
        self.task: asyncio.Future[None] | None = None
        if self.latency > 0:
            self.queue = asyncio.Queue()
            self.task = asyncio.ensure_future(self._answer_in_order())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end])
            lower = head.lower()
            length = 0
            if (i := lower.find(b"content-length:")) >= 0:
                j = lower.find(b"\r\n", i)
                length = int(head[i + 15:j if j >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            body = (bytes(self.buf[end + 4:end + 4 + length])
                    if length and (self.instant_max_tokens or _is_text_completion(head)) else b"")
            del self.buf[:end + 4 + length]
            if self.queue is not None:
                self.queue.put_nowait((head, lower, body))
            else:
                reply = self._route(head, lower)
                if reply is None:
                    reply = self._completion()
                elif reply is _TEXT:
                    reply = self._text_completion(body)
                self.transport.write(reply)  # type: ignore[attr-defined]

    def _route(self, head: bytes, lower: bytes) -> bytes | None:
        """The reply to a request, or None for a chat completion (answered by `_completion`), or `_TEXT` for a
        legacy text completion (answered by `_text_completion`)."""
        if self.auth and self.auth not in lower:
            return self.unauthorized
        line = head.split(b"\r\n", 1)[0].split(b" ")
        method, path = (line[0], line[1]) if len(line) >= 2 else (b"", b"")
        if method == b"POST" and path.endswith(b"/chat/completions"):
            return None
        if method == b"POST" and path.endswith(b"/completions"):
            return _TEXT
        if method == b"GET" and path.endswith(b"/health"):
            return self.health
        if method == b"GET" and path.endswith(b"/models"):
            return self.models
        return self.not_found

    def _completion(self) -> bytes:
        k = str(_StandInProtocol.served).encode()
        _StandInProtocol.served += 1
        if self.varied:
            return _response(b"200 OK", _varied_chat_body(int(k)))
        return _response(b"200 OK", self.template.replace(b"@@K@@", k))

    def _instant(self, body: bytes) -> bool:
        if not self.instant_max_tokens:
            return False
        try:
            max_tokens = json.loads(body or b"{}").get("max_tokens")
        except (ValueError, AttributeError):
            return False
        return isinstance(max_tokens, int) and max_tokens <= self.instant_max_tokens

    def _text_completion(self, body: bytes) -> bytes:
        k = _StandInProtocol.served
        _StandInProtocol.served += 1
        return _response(b"200 OK", _text_completion_body(k, body, self.varied))

    async def _answer_in_order(self) -> None:
        assert self.queue is not None
        while True:
            head, lower, body = await self.queue.get()
            reply = self._route(head, lower)
            if reply is None or reply is _TEXT:
                if self._instant(body):
                    pass
                elif self.slots is None:
                    await asyncio.sleep(self.latency)
                else:
                    async with self.slots:
                        await asyncio.sleep(self.latency)
                reply = self._completion() if reply is None else self._text_completion(body)
            self.transport.write(reply)  # type: ignore[attr-defined]


def serve_stand_in(host: str = "127.0.0.1", port: int = 0, *, latency_s: float = 0.0, slots: int = 0,
                   api_key: str = "", cpu: int | None = None, varied: bool = False, instant_max_tokens: int = 0) -> int:
    """Run the stand-in server until SIGTERM/SIGINT (in the child process). Prints `LISTENING HOST PORT PINNED`
    once it listens and `SERVED N` (chat completions answered) when it stops."""
    pinned = pin_to(cpu)

    async def main() -> None:
        _StandInProtocol.latency = latency_s
        _StandInProtocol.varied = varied
        _StandInProtocol.instant_max_tokens = instant_max_tokens
        _StandInProtocol.slots = asyncio.Semaphore(slots) if slots > 0 else None
        _StandInProtocol.auth = f"authorization: bearer {api_key}".lower().encode() if api_key else b""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_StandInProtocol, host, port, backlog=1024)
        bound = server.sockets[0].getsockname()[1]
        print(f"LISTENING {host} {bound} {pinned}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        print(f"SERVED {_StandInProtocol.served}", flush=True)

    asyncio.run(main())
    return 0


class _StandInProcess:
    """The stand-in server in a child process of its own process group (stopped by its pid only).

    After start: `base_url` ("http://HOST:PORT/v1"), `pinned` (the child's CPU pinning, in words),
    `cpu_s()` (its CPU seconds so far); after the block ends, `served` holds the number of chat
    completions it answered.
    """

    name = "stand-in"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency_s: float = 0.0, slots: int = 0,
                 api_key: str = "", cpu: int | None = None, varied: bool = False, instant_max_tokens: int = 0) -> None:
        self.host, self.port, self.latency_s, self.slots, self.api_key = host, port, latency_s, slots, api_key
        self.varied, self.instant_max_tokens = varied, instant_max_tokens
        self.cpu = cpu
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.pinned = ""
        self.served: int | None = None

    def _start(self) -> str:
        argv = [sys.executable, str(Path(__file__).resolve()), "--stand-in-serve", "--host", self.host,
                "--port", str(self.port), "--latency-s", repr(float(self.latency_s)), "--slots", str(self.slots)]
        if self.api_key:
            argv.append(f"--api-key={self.api_key}")
        if self.cpu is not None:
            argv += ["--cpu", str(self.cpu)]
        if self.varied:
            argv.append("--varied")
        if self.instant_max_tokens:
            argv += ["--instant-max-tokens", str(self.instant_max_tokens)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("LISTENING "):
            self.__exit__()
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        _, host, port, self.pinned = line.strip().split(" ", 3)
        self.base_url = f"http://{host}:{port}/v1"
        return self.base_url

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) if self.proc else float("nan")

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        for line in (out or "").splitlines():
            if line.startswith("SERVED "):
                self.served = int(line.split()[1])


class ZeroLatencyStandIn(_StandInProcess):
    """A measuring instrument: an OpenAI-compatible chat endpoint that answers at once, in its own process.

    `with ZeroLatencyStandIn(cpu=1) as base_url:` -> "http://127.0.0.1:PORT/v1". `served` holds the number
    of chat completions it answered after the block ends; `cpu_s()` its CPU seconds so far.
    """

    name = "ZeroLatencyStandIn"

    def __init__(self, cpu: int | None = 1) -> None:
        super().__init__(cpu=cpu)

    def __enter__(self) -> str:
        return self._start()


class FixedLatencyStandIn(_StandInProcess):
    """One stand-in GPU server on `host:port` in its own process group (stopped by its pid only): `slots`
    chat completions in service at once, each answered after exactly `latency_s` (queueing beyond that),
    so its ceiling is slots / latency_s requests/s; requests without `Authorization: Bearer <api_key>` get 401.

    `with FixedLatencyStandIn(host, port, latency_s, slots, api_key) as standin:` -> the stand-in itself.
    `varied=True`: every reply's pairs in words of their own (`_varied_text`), so that a near-duplicate filter
    keeps them as it would a real teacher's distinct pairs (the default template differs only in numbers).
    `instant_max_tokens=K` (> 0): a request with `max_tokens` <= K is answered at once, outside the slots
    (a readiness probe of one token costs a GPU server milliseconds, not a generation's latency).
    """

    name = "FixedLatencyStandIn"

    def __init__(self, host: str, port: int, latency_s: float, slots: int, api_key: str,
                 varied: bool = False, instant_max_tokens: int = 0) -> None:
        super().__init__(host, port, latency_s=latency_s, slots=slots, api_key=api_key, varied=varied,
                         instant_max_tokens=instant_max_tokens)

    def __enter__(self) -> "FixedLatencyStandIn":
        self._start()
        return self


def _stand_in_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="the stand-in teacher server (started by a *StandIn class)")
    ap.add_argument("--stand-in-serve", action="store_true", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-s", type=float, default=0.0)
    ap.add_argument("--slots", type=int, default=0)
    ap.add_argument("--api-key", default="")
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--varied", action="store_true")
    ap.add_argument("--instant-max-tokens", type=int, default=0)
    args = ap.parse_args(argv)
    return serve_stand_in(args.host, args.port, latency_s=args.latency_s, slots=args.slots, api_key=args.api_key,
                          cpu=args.cpu, varied=args.varied, instant_max_tokens=args.instant_max_tokens)


if __name__ == "__main__":
    sys.exit(_stand_in_main(sys.argv[1:]))
