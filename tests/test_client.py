"""TeacherClient against a real llama.cpp server (SmolLM2), plus fault-injecting instruments.

The real server answers chat/completions, auth, context overflow, concurrency and being killed.
`FaultInjectingServer` exists only to produce what a real model server cannot be made to return on
demand (503 then 200, 429 + Retry-After, garbage JSON, never answering); it is not a teacher.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdg.teacher.backends import _LISTENING
from sdg.teacher.client import (
    Completion, Endpoint, RequestFailure, TeacherClient, is_context_error, parse_retry_after)
from tests.conftest import smollm2_gguf

API_KEY = "sdg-test-key"
KEY_ENV = "SDG_TEST_TEACHER_KEY"
HI = [{"role": "user", "content": "Say hi."}]


def run(coro):
    return asyncio.run(coro)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the real teacher -----------------------------------------------------------------------------------

class LlamaServer:
    """llama.cpp serving SmolLM2 in its own process group; restarted on demand after a test kills it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir, self.proc, self.url, self.starts = log_dir, None, "", 0

    def base_url(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self.url + "/v1"

    def start(self, timeout_s: float = 120) -> None:
        self.starts += 1
        out = self.log_dir / f"llama-{self.starts}.out"
        with open(out, "wb") as so, open(self.log_dir / f"llama-{self.starts}.err", "wb") as se:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdg.teacher.llamacpp_main", "--model", smollm2_gguf(), "--alias", "teacher",
                 "--parallel", "2", "--threads", "2", "--ctx", "512", "--port", "0", "--api-key-env", KEY_ENV],
                stdout=so, stderr=se, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, KEY_ENV: API_KEY})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = _LISTENING.search(out.read_text(errors="replace"))  # the server's own rule for that line
            if m:
                self.url = m.group(1).rstrip("/")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"llama.cpp server did not start; see {self.log_dir}")

    def kill(self) -> int:
        """SIGKILL the process group and reap it; returns the pid."""
        assert self.proc is not None
        pid = self.proc.pid
        os.killpg(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return pid

    def stop(self, grace_s: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("llama"))
    try:
        yield srv
    finally:
        srv.stop()


def real(teacher: LlamaServer, **kw) -> Endpoint:
    return Endpoint(teacher.base_url(), api_key=API_KEY, **kw)


# -- the instrument --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    status: int
    body: str | bytes
    headers: tuple[tuple[str, str], ...] = ()


HANG = Reply(0, b"")  # accept the request, never answer

CANNED = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "canned"},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 1}})


class FaultInjectingServer:
    """Answers request i with script[i] (the last one repeats); records what it was sent and when."""

    def __init__(self, *script: Reply) -> None:
        self.script, self.requests, self._tasks = list(script), [], set()

    async def __aenter__(self) -> FaultInjectingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            reply = self.script[min(len(self.requests), len(self.script) - 1)]
            self.requests.append((time.monotonic(), lines[0], headers, json.loads(body or b"null")))
            if reply is HANG:
                await asyncio.Event().wait()
            payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers)
            writer.write(f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n".encode() + payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def fast(**kw) -> dict:
    return dict(dict(max_retries=4, backoff_s=0.01, backoff_max_s=0.2, cooldown_s=0.05), **kw)


# -- real server: the happy paths ---------------------------------------------------------------------------

def test_chat_and_completions_return_text_and_tokens(teacher):
    async def main():
        async with TeacherClient([real(teacher)]) as c:
            chat = await c.chat(HI, max_tokens=3, temperature=0, seed=1)
            comp = await c.complete("The sky is", max_tokens=3, temperature=0, stop=["\n\n"])
            multi = await c.chat(HI, max_tokens=2, n=2)
            return chat, comp, multi, c.stats()

    chat, comp, multi, stats = run(main())
    for r in (chat, comp, multi):
        assert isinstance(r, Completion), r
        assert r.text.strip() and r.attempts == 1 and r.latency_s > 0 and r.prompt_tokens > 0
        assert r.texts[0] == r.text
    assert 1 <= chat.completion_tokens <= 3 and 1 <= comp.completion_tokens <= 3
    assert len(multi.texts) == 2 and all(t.strip() for t in multi.texts)
    s = stats[teacher.base_url()]
    assert (s.done, s.failed, s.retries, s.in_flight) == (3, 0, 0, 0)
    assert s.prompt_tokens == chat.prompt_tokens + comp.prompt_tokens + multi.prompt_tokens


def test_four_requests_over_two_slots_queue_and_all_succeed(teacher):
    async def main():
        async with TeacherClient([real(teacher, max_in_flight=2)]) as c:
            peak = 0

            async def sample():
                nonlocal peak
                while True:
                    peak = max(peak, c.stats()[teacher.base_url()].in_flight)
                    await asyncio.sleep(0.01)

            sampler = asyncio.create_task(sample())
            results = await asyncio.gather(*(c.chat([{"role": "user", "content": f"Count to {i}."}], max_tokens=32,
                                                    ignore_eos=True) for i in range(4)))
            sampler.cancel()
            return results, peak, c.stats()[teacher.base_url()]

    results, peak, s = run(main())
    assert all(isinstance(r, Completion) for r in results), results
    assert peak == 2 and s.done == 4 and s.in_flight == 0


def test_api_key_required_401_is_not_retried(teacher):
    async def main():
        async with TeacherClient([Endpoint(teacher.base_url(), name="nokey")], **fast()) as c:
            bad = await c.chat(HI, max_tokens=2)
            stats = c.stats()["nokey"]
        async with TeacherClient([real(teacher)]) as c:
            good = await c.chat(HI, max_tokens=2)
        return bad, stats, good

    bad, stats, good = run(main())
    assert isinstance(bad, RequestFailure)
    assert (bad.kind, bad.status, bad.attempts, bad.retryable) == ("http", 401, 1, False)
    assert "api key" in bad.message.lower() and bad.endpoint == "nokey"
    assert (stats.failed, stats.retries) == (1, 0)
    assert isinstance(good, Completion)


def test_real_context_overflow_is_context_length_and_not_retried(teacher):
    async def main():
        async with TeacherClient([real(teacher)], **fast()) as c:
            return await c.complete("word " * 1500, max_tokens=4)

    r = run(main())
    assert isinstance(r, RequestFailure)
    assert (r.kind, r.status, r.attempts, r.retryable) == ("context_length", 400, 1, False)
    assert "context" in r.message


def test_two_endpoints_least_loaded_uses_both(teacher):
    async def main():
        eps = [real(teacher, name="a"), real(teacher, name="b")]
        async with TeacherClient(eps) as c:
            assert c.total_slots == 16
            first = await asyncio.gather(c.chat(HI, max_tokens=2), c.chat(HI, max_tokens=2))
            return first, c.stats()

    first, stats = run(main())
    assert all(isinstance(r, Completion) for r in first)
    assert {r.endpoint for r in first} == {"a", "b"}
    assert stats["a"].done == stats["b"].done == 1


def test_refusing_endpoint_is_cooled_down_and_retry_goes_elsewhere(teacher):
    async def main():
        eps = [Endpoint(f"http://127.0.0.1:{closed_port()}/v1", name="dead"), real(teacher, name="live")]
        async with TeacherClient(eps, **fast(cooldown_s=30)) as c:
            results = [await c.chat(HI, max_tokens=2) for _ in range(3)]
            return results, c.stats()

    results, stats = run(main())
    assert all(isinstance(r, Completion) and r.endpoint == "live" for r in results), results
    assert results[0].attempts == 2 and results[1].attempts == results[2].attempts == 1  # dead one skipped
    assert (stats["dead"].retries, stats["dead"].done, stats["live"].done) == (1, 0, 3)


def test_cancelling_pending_and_running_requests_releases_their_slots(teacher):
    async def main():
        async with TeacherClient([real(teacher, name="t", max_in_flight=1)]) as c:
            # ignore_eos: the running request generates all 2048 tokens, so it is still running when cancelled
            # even on a fast machine (a 64-token answer once finished before the cancel in CI)
            running = asyncio.create_task(c.chat(HI, max_tokens=2048, ignore_eos=True))
            queued = asyncio.create_task(c.chat(HI, max_tokens=64))
            await asyncio.sleep(0.3)
            assert c.stats()["t"].in_flight == 1
            assert not running.done(), "the running request ended before the cancel; the test proves nothing"
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert c.stats()["t"].in_flight == 0
            after = await asyncio.wait_for(c.chat(HI, max_tokens=2), 60)  # hangs if a slot leaked
            return after, c.stats()["t"]

    after, s = run(main())
    assert isinstance(after, Completion)
    assert (s.in_flight, s.done, s.failed) == (0, 1, 0)


def test_server_killed_mid_request_returns_failure_and_is_reaped(teacher):
    async def main():
        async with TeacherClient([real(teacher, name="t")], **fast(max_retries=1)) as c:
            task = asyncio.create_task(c.chat([{"role": "user", "content": "Write a long story."}], max_tokens=2048,
                                                ignore_eos=True))
            while c.stats()["t"].in_flight == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # let it get into generation
            assert not task.done()
            pid = teacher.kill()
            return await asyncio.wait_for(task, 60), pid

    r, pid = run(main())
    assert isinstance(r, RequestFailure) and r.kind in ("connection", "http"), r
    assert r.attempts == 2 and r.retryable
    assert not os.path.exists(f"/proc/{pid}")  # reaped, not a zombie
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left of its process group


# -- injected faults ---------------------------------------------------------------------------------------------

def test_503_twice_then_200_is_retried_and_sends_the_openai_body():
    async def main():
        async with FaultInjectingServer(Reply(503, "{}"), Reply(503, "busy"), Reply(200, CANNED)) as srv:
            ep = Endpoint(srv.base_url, model="m", api_key="k", name="f")
            async with TeacherClient([ep], **fast()) as c:
                r = await c.chat(HI, max_tokens=7, temperature=0.1, seed=3, stop=["x"], n=2, top_p=0.9)
                return r, c.stats()["f"], srv.requests

    r, s, reqs = run(main())
    assert isinstance(r, Completion) and r.attempts == 3 and r.text == "canned"
    assert (r.prompt_tokens, r.completion_tokens, r.finish_reason) == (5, 1, "stop")
    assert (s.retries, s.done, s.failed) == (2, 1, 0)
    _, line, headers, body = reqs[-1]
    assert line.startswith("POST /v1/chat/completions") and headers["authorization"] == "Bearer k"
    assert body == {"model": "m", "messages": HI, "max_tokens": 7, "temperature": 0.1, "seed": 3, "stop": ["x"],
                    "n": 2, "top_p": 0.9}


def test_retry_after_is_honoured_and_capped():
    async def main():
        async with FaultInjectingServer(Reply(429, "slow down", (("Retry-After", "1"),)), Reply(200, CANNED)) as a:
            async with TeacherClient([Endpoint(a.base_url)], **fast(backoff_max_s=5)) as c:
                honoured = await c.chat(HI, max_tokens=2)
        async with FaultInjectingServer(Reply(503, "later", (("Retry-After", "3600"),)), Reply(200, CANNED)) as b:
            async with TeacherClient([Endpoint(b.base_url)], **fast(backoff_max_s=0.2)) as c:
                capped = await c.chat(HI, max_tokens=2)
        return honoured, a.requests, capped, b.requests

    honoured, ra, capped, rb = run(main())
    assert isinstance(honoured, Completion) and honoured.attempts == 2
    assert 0.95 <= ra[1][0] - ra[0][0] < 3
    assert isinstance(capped, Completion) and rb[1][0] - rb[0][0] < 1.5


@pytest.mark.parametrize("body", [
    '{"object":"error","message":"This model\'s maximum context length is 2048 tokens. However, you requested '
    '4096 tokens (4000 in the messages, 96 in the completion).","type":"BadRequestError","code":400}',
    '{"error":{"message":"prompt is too long","code":"context_length_exceeded"}}',
])
def test_400_context_length_is_reported_with_the_servers_message(body):
    async def main():
        async with FaultInjectingServer(Reply(400, body)) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], **fast()) as c:
                return await c.chat(HI, max_tokens=2), len(srv.requests)

    r, n = run(main())
    assert isinstance(r, RequestFailure) and n == 1
    assert (r.kind, r.status, r.attempts, r.retryable) == ("context_length", 400, 1, False)
    assert r.message == json.loads(body).get("message", "prompt is too long")


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_are_not_retried(status):
    async def main():
        async with FaultInjectingServer(Reply(status, '{"error":{"message":"nope"}}')) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], **fast()) as c:
                return await c.complete("x", max_tokens=2)

    r = run(main())
    assert (r.kind, r.status, r.attempts, r.retryable) == ("http", status, 1, False) and "nope" in r.message


def test_persistent_500_gives_up_after_max_retries():
    async def main():
        async with FaultInjectingServer(Reply(500, "boom")) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], **fast(max_retries=2)) as c:
                return await c.chat(HI, max_tokens=2), len(srv.requests)

    r, n = run(main())
    assert (r.kind, r.status, r.attempts, r.retryable, n) == ("http", 500, 3, True, 3)


@pytest.mark.parametrize("body", ["not json {", '{"choices": []}', '{"error": "x"}',
                                  '{"choices": [{"message": {"content": 7}}]}'])
def test_garbage_json_is_bad_response_after_one_retry(body):
    async def main():
        async with FaultInjectingServer(Reply(200, body)) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], **fast()) as c:
                return await c.chat(HI, max_tokens=2), len(srv.requests)

    r, n = run(main())
    assert isinstance(r, RequestFailure)
    assert (r.kind, r.attempts, n) == ("bad_response", 2, 2)


def test_null_content_is_empty_text():
    body = json.dumps({"choices": [{"message": {"content": None}, "finish_reason": "length"}]})

    async def main():
        async with FaultInjectingServer(Reply(200, body)) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], **fast()) as c:
                return await c.chat(HI, max_tokens=2)

    r = run(main())
    assert isinstance(r, Completion) and r.text == "" and r.prompt_tokens == r.completion_tokens == 0


def test_connection_refused_is_connection_failure_after_retries():
    async def main():
        async with TeacherClient([Endpoint(f"http://127.0.0.1:{closed_port()}/v1", name="d")],
                                 **fast(max_retries=3)) as c:
            t0 = time.monotonic()
            r = await c.chat(HI, max_tokens=2)
            return r, time.monotonic() - t0, c.stats()["d"]

    r, elapsed, s = run(main())
    assert isinstance(r, RequestFailure)
    assert (r.kind, r.status, r.attempts, r.retryable) == ("connection", None, 4, True)
    assert (s.retries, s.failed, s.in_flight) == (3, 1, 0) and elapsed < 5


def test_server_that_never_answers_times_out():
    async def main():
        async with FaultInjectingServer(HANG) as srv:
            async with TeacherClient([Endpoint(srv.base_url)], timeout_s=0.3, **fast(max_retries=1)) as c:
                return await c.chat(HI, max_tokens=2), len(srv.requests)

    r, n = run(main())
    assert isinstance(r, RequestFailure) and (r.kind, r.attempts, n) == ("timeout", 2, 2)


def test_dispatch_is_least_loaded_bounded_and_cancellable():
    """Servers that never answer hold every slot open, so the dispatch state can be read directly."""
    async def main():
        async with FaultInjectingServer(HANG) as a, FaultInjectingServer(HANG) as b:
            eps = [Endpoint(a.base_url, name="a", max_in_flight=3), Endpoint(b.base_url, name="b", max_in_flight=1)]
            async with TeacherClient(eps, timeout_s=60) as c:
                tasks = [asyncio.create_task(c.chat(HI, max_tokens=2)) for _ in range(6)]
                await asyncio.sleep(0.3)
                loads = {k: v.in_flight for k, v in c.stats().items()}
                served = (len(a.requests), len(b.requests))
                for t in tasks:
                    t.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                return loads, served, outcomes, {k: v.in_flight for k, v in c.stats().items()}

    loads, served, outcomes, after = run(main())
    assert loads == {"a": 3, "b": 1} and served == (3, 1)  # a, b, a, a; two callers queue
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert after == {"a": 0, "b": 0}


def test_close_fails_queued_requests_as_cancelled():
    async def main():
        async with FaultInjectingServer(HANG) as srv:
            c = TeacherClient([Endpoint(srv.base_url, name="h", max_in_flight=1)], timeout_s=60)
            running = asyncio.create_task(c.chat(HI, max_tokens=2))
            queued = asyncio.create_task(c.chat(HI, max_tokens=2))
            await asyncio.sleep(0.2)
            await c.aclose()
            q = await asyncio.wait_for(queued, 5)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            with pytest.raises(RuntimeError):
                await c.chat(HI, max_tokens=2)
            return q

    q = run(main())
    assert isinstance(q, RequestFailure) and q.kind == "cancelled"


# -- pure helpers and argument checks ------------------------------------------------------------------------------

def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120)))
    assert later is not None and 100 < later <= 121


def test_context_error_markers():
    assert is_context_error("request (5001 tokens) exceeds the available context size (2048 tokens)")
    assert is_context_error("Input is TOO LONG for requested model")
    assert not is_context_error("Invalid API Key")


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        TeacherClient([])
    with pytest.raises(ValueError):
        TeacherClient([Endpoint("http://h/v1"), Endpoint("http://h/v1/")])  # same default name
    with pytest.raises(ValueError):
        Endpoint("h:8000/v1")
    with pytest.raises(ValueError):
        Endpoint("http://h/v1", max_in_flight=0)
    assert "secret" not in repr(Endpoint("http://h/v1", api_key="secret"))

    async def main():
        async with TeacherClient([Endpoint("http://127.0.0.1:9/v1")]) as c:
            for call in (lambda: c.chat([], max_tokens=2), lambda: c.chat(HI, max_tokens=0),
                         lambda: c.chat(HI, max_tokens=2, n=0), lambda: c.chat(HI, max_tokens=2, model="x"),
                         lambda: c.complete("p", max_tokens=2, messages=HI)):
                with pytest.raises(ValueError):
                    await call()

    run(main())
