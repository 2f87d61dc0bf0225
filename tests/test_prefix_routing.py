"""Prefix-hash routing over real HTTP stand-ins: requests that share a prompt prefix land on one endpoint
across a run, distinct prefixes spread over all of them, and a full preferred endpoint spills over."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiohttp import web

from sdg.teacher.client import Endpoint, TeacherClient


class Recorder:
    """Stand-in endpoints (one aiohttp app per port) that note which prefix each request carried."""

    def __init__(self, count: int, delay_s: float = 0.005) -> None:
        self.count, self.delay_s = count, delay_s
        self.seen: dict[str, set[int]] = defaultdict(set)  # prefix tag -> endpoints that served it
        self.per_endpoint = [0] * count
        self.runners: list[web.AppRunner] = []

    def handler(self, i: int):
        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            self.seen[body["messages"][0]["content"]].add(i)
            self.per_endpoint[i] += 1
            await asyncio.sleep(self.delay_s)
            return web.json_response({"choices": [{"index": 0, "message": {"content": "ok"},
                                                   "finish_reason": "stop"}]})
        return chat

    async def __aenter__(self) -> list[str]:
        urls = []
        for i in range(self.count):
            app = web.Application()
            app.add_routes([web.post("/v1/chat/completions", self.handler(i))])
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1")  # type: ignore
        return urls

    async def __aexit__(self, *exc: object) -> None:
        for r in self.runners:
            await r.cleanup()


def messages(prefix: int, row: int) -> list[dict]:
    return [{"role": "system", "content": f"prefix-{prefix}: you write questions"},
            {"role": "user", "content": f"Shared instructions for prefix {prefix}. " * 40 + f"row {row}"}]


def test_shared_prefixes_stick_to_one_endpoint_and_distinct_ones_spread():
    async def main():
        rec = Recorder(3)
        async with rec as urls:
            eps = [Endpoint(u, name=f"e{i}", max_in_flight=8) for i, u in enumerate(urls)]
            async with TeacherClient(eps, prefix_routing=True) as c:
                gate = asyncio.Semaphore(3)  # a steady load, under every endpoint's limit

                async def one(p: int, r: int):
                    async with gate:
                        return await c.chat(messages(p, r), max_tokens=8)

                results = await asyncio.gather(*(one(p, r) for r in range(6) for p in range(24)))
                return rec, results, c.stats()

    rec, results, stats = asyncio.run(main())
    assert all(r.ok for r in results)
    assert len(rec.seen) == 24 and all(len(eps) == 1 for eps in rec.seen.values()), dict(rec.seen)
    used = {next(iter(eps)) for eps in rec.seen.values()}
    assert used == {0, 1, 2}  # distinct prefixes spread over every endpoint
    assert sum(s.prefix_routed for s in stats.values()) == len(results)


def test_routing_is_stable_across_clients_and_the_prefix_key_overrides():
    async def main():
        rec = Recorder(3, 0)
        async with rec as urls:
            eps = [Endpoint(u, name=f"e{i}") for i, u in enumerate(urls)]
            for _ in range(2):  # two runs (two clients): the same endpoint for each prefix
                async with TeacherClient(eps, prefix_routing=True) as c:
                    for p in range(10):
                        await c.chat(messages(p, 0), max_tokens=8)
            async with TeacherClient(eps, prefix_routing=True) as c:  # one key for distinct prompts: one endpoint
                for p in range(10, 16):
                    await c.chat(messages(p, 0), max_tokens=8, prefix_key="the same document")
        return rec

    rec = asyncio.run(main())
    assert all(len(eps) == 1 for eps in rec.seen.values())
    keyed = {next(iter(rec.seen[m])) for m in (messages(p, 0)[0]["content"] for p in range(10, 16))}
    assert len(keyed) == 1


def test_a_full_preferred_endpoint_spills_over_to_the_least_loaded():
    async def main():
        rec = Recorder(3, 0.05)
        async with rec as urls:
            eps = [Endpoint(u, name=f"e{i}", max_in_flight=2) for i, u in enumerate(urls)]
            async with TeacherClient(eps, prefix_routing=True) as c:
                results = await asyncio.gather(*(c.chat(messages(1, r), max_tokens=8) for r in range(12)))
                return rec, results

    rec, results = asyncio.run(main())
    assert all(r.ok for r in results)
    assert rec.seen[messages(1, 0)[0]["content"]] == {0, 1, 2}  # one prefix, but load balancing wins
