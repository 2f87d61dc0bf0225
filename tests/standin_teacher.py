"""DeterministicStandInTeacher: an OpenAI-compatible HTTP server whose every chat reply is a function of
the request's messages alone (five `Question:`/`Answer:` pairs named by a hash of the prompt).

A STAND-IN, named so: it replaces a real model only where a test needs two runs to receive identical
replies (the local and the Ray executor must then produce the same rows), which no sampling model on a
shared CPU guarantees, or a teacher that misbehaves on cue. Everything around it (HTTP, the client, the
engine, Slurm, Ray) is real. Modes:
  ok       the deterministic reply above
  hang     accepts every chat request and never answers (a hung server)
  garbage  answers 200 with text no parser can use
  fail_judges  503 for judge prompts (a system prompt asking for "one score line"), the deterministic reply
               otherwise
A judge prompt (ok mode) gets a passing verdict: `Yes. Score: 3` in free text, or, when the request carries a
`json_schema` response_format, the JSON the schema asks for (a verdict's highest allowed score, a probe's
{"ok": true}), as a server with structured outputs would; `schema_requests` counts those requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

from aiohttp import web

PAIRS = 5


class InLoopServer:
    """An aiohttp server in the test's own event loop (`async with srv as url`: its /v1 base URL), for stand-ins
    that shape replies per test; subclasses list their routes in `routes()`."""

    runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def __aenter__(self) -> str:
        app = web.Application()
        app.add_routes(self.routes())
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def reply_text(messages: list[dict[str, Any]]) -> str:
    key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]
    return "\n\n".join(f"Question: What does stand-in fact {key}-{i} say?\nAnswer: Stand-in fact {key}-{i} says that "
                       f"item {i} of prompt {key} comes first, with one concrete example." for i in range(1, PAIRS + 1))


def _fill(schema: dict[str, Any]) -> Any:
    """A value the JSON schema accepts (what a schema-constrained server would write)."""
    if "enum" in schema:
        return max(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return {k: _fill(v) for k, v in schema.get("properties", {}).items()}
    return {"boolean": True, "integer": 1, "number": 1.0, "string": "ok"}.get(kind)


class DeterministicStandInTeacher:
    """`with DeterministicStandInTeacher() as url:` serves on 127.0.0.1 (any port) in a thread; `requests`
    counts the chat completions answered."""

    def __init__(self, host: str = "127.0.0.1", mode: str = "ok",
                 pairs: list[tuple[str, str]] | None = None, port: int = 0) -> None:
        """`pairs`: (question, answer) templates every generation reply holds instead of the default five
        (`{key}` is the prompt's hash): a corpus planted with known duplicates and copies."""
        self.host, self.port, self.requests, self.mode = host, port, 0, mode
        self.pairs = pairs
        self.judge_requests = 0
        self.schema_requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        messages = body.get("messages", [])
        judge = any(m.get("role") == "system" and "one score line" in str(m.get("content", "")) for m in messages)
        self.judge_requests += int(judge)
        if self.mode == "hang" and body.get("max_tokens", 0) != 1:  # the readiness probe asks for 1 token
            await asyncio.sleep(3600)
        if self.mode == "fail_judges" and judge:
            return web.json_response({"error": {"message": "stand-in: judge unavailable"}}, status=503)
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        self.schema_requests += int(schema is not None)
        if self.mode == "garbage":
            text = "%%%% ~~ no pairs here ~~ %%%%"
        elif schema is not None:
            text = json.dumps(_fill(schema))
        elif judge:
            text = "Yes. Score: 3"
        elif self.pairs is not None:
            key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]
            text = "\n\n".join(f"Question: {q.format(key=key)}\nAnswer: {a.format(key=key)}" for q, a in self.pairs)
        else:
            text = reply_text(messages)
        return web.json_response({
            "id": f"chatcmpl-standin-{self.requests}", "object": "chat.completion", "created": 0,
            "model": body.get("model", "teacher"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 80, "total_tokens": 180}})

    async def _ok(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "object": "list", "data": [{"id": "teacher", "object": "model"}]})

    async def _start(self) -> int:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self._chat), web.get("/health", self._ok),
                        web.get("/v1/health", self._ok), web.get("/v1/models", self._ok)])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> str:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return f"http://{self.host}:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
