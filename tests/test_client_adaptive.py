"""Adaptive (AIMD) concurrency per endpoint against real HTTP stand-ins: a server that answers 429 above a
concurrency of K pulls the client's limit to about K and the run completes; the start comes from what the
server reports (llama.cpp's /props total_slots)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sdg.teacher.client import Endpoint, TeacherClient
from tests.standin_teacher import InLoopServer

K = 5


class Throttling(InLoopServer):
    """429 while more than `k` requests are being served; else an answer after `delay_s`."""

    def __init__(self, k: int, delay_s: float = 0.02, props: dict | None = None) -> None:
        self.k, self.delay_s, self.props = k, delay_s, props
        self.active = self.peak = self.rejected = self.served = 0

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        if self.active >= self.k:
            self.rejected += 1
            return web.json_response({"error": {"message": "too many requests"}}, status=429)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.active -= 1
        self.served += 1
        return web.json_response({"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 10}})

    async def get_props(self, _request: web.Request) -> web.Response:
        if self.props is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(self.props)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat), web.get("/props", self.get_props)]


def run_load(srv: Throttling, *, requests: int, max_in_flight: int, adaptive: bool = True):
    async def main():
        async with srv as url, TeacherClient([Endpoint(url, name="e", max_in_flight=max_in_flight)],
                                             adaptive=adaptive, max_retries=8, backoff_s=0.01,
                                             backoff_max_s=0.05) as c:
            await c.discover(probe_n=False)
            start = c.stats()["e"].limit
            limits = []

            async def one(i: int):
                res = await c.chat([{"role": "user", "content": f"q{i}"}], max_tokens=10)
                limits.append(c.stats()["e"].limit)
                return res

            results = await asyncio.gather(*(one(i) for i in range(requests)))
            return start, results, limits, c.stats()["e"]

    return asyncio.run(main())


def test_limit_settles_near_the_servers_concurrency_and_nothing_fails():
    srv = Throttling(K)
    start, results, limits, stats = run_load(srv, requests=400, max_in_flight=32)
    assert start == 4  # reports nothing: a small start, probed upward
    assert all(r.ok for r in results) and stats.failed == 0
    tail = limits[len(limits) // 2:]  # the second half of the run
    mean = sum(tail) / len(tail)
    assert K / 2 <= mean <= K + 2, (mean, tail[-20:])
    assert max(tail) <= K + 3
    assert srv.rejected < len(results) // 4  # the limit keeps most requests under K


def test_start_is_the_reported_slots_and_the_limit_grows_toward_max_in_flight():
    srv = Throttling(100, props={"total_slots": 6})
    start, results, _, stats = run_load(srv, requests=300, max_in_flight=12)
    assert start == 6 and stats.slots == 6
    assert all(r.ok for r in results)
    assert 10 <= stats.limit <= 12 and srv.rejected == 0 and stats.throttled == 0


def test_static_limit_without_adaptive():
    srv = Throttling(100)
    start, results, _, stats = run_load(srv, requests=50, max_in_flight=7, adaptive=False)
    assert start == 7 and stats.limit == 7 and all(r.ok for r in results)
