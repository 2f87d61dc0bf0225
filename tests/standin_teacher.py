"""DeterministicStandInTeacher: an OpenAI-compatible HTTP server whose every chat reply is a function of
the request's messages alone (five `Question:`/`Answer:` pairs named by a hash of the prompt).

A STAND-IN, named so: it replaces a real model only where a test needs two runs to receive identical
replies (the local and the Ray executor must then produce the same rows), which no sampling model on a
shared CPU guarantees, or a teacher that misbehaves on cue. Everything around it (HTTP, the client, the
engine, Slurm, Ray) is real. Modes:
  ok       the deterministic reply above
  hang     accepts every chat request and never answers (a hung server)
  garbage  answers 200 with text no parser can use
  fail_judges  503 for judge prompts (system prompt "You rate ..."), the deterministic reply otherwise
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

from aiohttp import web

PAIRS = 5


def reply_text(messages: list[dict[str, Any]]) -> str:
    key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]
    return "\n\n".join(f"Question: What does stand-in fact {key}-{i} say?\nAnswer: Stand-in fact {key}-{i} says that "
                       f"item {i} of prompt {key} comes first, with one concrete example." for i in range(1, PAIRS + 1))


class DeterministicStandInTeacher:
    """`with DeterministicStandInTeacher() as url:` serves on 127.0.0.1 (any port) in a thread; `requests`
    counts the chat completions answered."""

    def __init__(self, host: str = "127.0.0.1", mode: str = "ok") -> None:
        self.host, self.port, self.requests, self.mode = host, 0, 0, mode
        self.judge_requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        messages = body.get("messages", [])
        judge = any(m.get("role") == "system" and "You rate" in str(m.get("content", "")) for m in messages)
        self.judge_requests += int(judge)
        if self.mode == "hang" and body.get("max_tokens", 0) != 1:  # the readiness probe asks for 1 token
            await asyncio.sleep(3600)
        if self.mode == "fail_judges" and judge:
            return web.json_response({"error": {"message": "stand-in: judge unavailable"}}, status=503)
        text = "%%%% ~~ no pairs here ~~ %%%%" if self.mode == "garbage" else reply_text(messages)
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
        site = web.TCPSite(self._runner, self.host, 0)
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
