"""`n` sampling: an llm block's calls with the identical prompt go as ONE request with n choices where the
server takes `n`, as separate requests where it refuses it (400), and a real llama.cpp's answer to n=2 is
handled whichever it is. Real HTTP (aiohttp stand-ins in the test's loop), the real client and block."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from sdg.engine.session import TeacherWatch, _watched
from sdg.pipeline.blocks import BindEnv, RunState
from sdg.pipeline.llm_block import LLMBlock
from sdg.pipeline.types import UnitContext, UnitResult
from sdg.teacher.client import Completion, Endpoint, TeacherClient
from tests.standin_teacher import InLoopServer

PAIR = "Question: What is choice {k} about?\nAnswer: Choice {k} is about item {k}, with an example."


class NStandIn(InLoopServer):
    """Chat completions with `n` choices (accepts_n) or a 400 for any n > 1; `bodies` keeps every request."""

    def __init__(self, accepts_n: bool) -> None:
        self.accepts_n, self.bodies = accepts_n, []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        n = int(body.get("n", 1))
        if n > 1 and not self.accepts_n:
            return web.json_response({"error": {"message": "Only one completion choice is allowed"}}, status=400)
        k0 = len(self.bodies) * 10
        choices = [{"index": j, "message": {"role": "assistant", "content": PAIR.format(k=k0 + j)},
                    "finish_reason": "stop"} for j in range(n)]
        return web.json_response({"choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 20 * n}})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat)]


def block(tmp_path: Path, num_samples: int = 4) -> LLMBlock:
    (tmp_path / "p.txt").write_text("Write {num_samples} question and answer pairs about {topic}.\n")
    b = LLMBlock(name="gen", prompt="p.txt", parser="qa_pairs", max_tokens=64, num_samples=num_samples,
                 samples_per_call=1)
    b.bind(BindEnv((tmp_path,)), "test")
    return b


async def run_block(url: str, tmp_path: Path) -> tuple[list, UnitResult]:
    async with TeacherClient([Endpoint(url, name="s")], max_retries=0) as client:
        chat = _watched(client, TeacherWatch(60), 1000)
        state = RunState(UnitContext(chat, 100, "leaf", "unit"), UnitResult(), 4)
        rows = await block(tmp_path).run([{"topic": "tides"}], state)
        return rows, state.result


@pytest.mark.parametrize("accepts", [True, False])
def test_identical_calls_go_as_one_n_request_or_separately(tmp_path, accepts):
    async def main():
        srv = NStandIn(accepts)
        async with srv as url:
            rows, result = await run_block(url, tmp_path)
            rows2, _ = await run_block(url, tmp_path)  # a fresh client learns it again
        return srv.bodies, rows, rows2, result

    bodies, rows, rows2, result = asyncio.run(main())
    assert len(rows) == 4 and len(rows2) == 4 and result.requests == 4
    assert len({r["question"] for r in rows}) == 4  # four distinct choices
    # requests per endpoint count what the server answered: one n request, or the four that replaced it
    assert sum(result.servers.values()) == (1 if accepts else 4)
    if accepts:
        assert len(bodies) == 2 and all(b["n"] == 4 and b["seed"] == 100 for b in bodies)
    else:  # one refused n request per client, then the four calls with the seeds they had without n
        n_reqs = [b for b in bodies if "n" in b]
        singles = [b for b in bodies if "n" not in b]
        assert len(n_reqs) == 2 and len(singles) == 8
        assert sorted(b["seed"] for b in singles[:4]) == [100, 101, 102, 103]


def test_without_supports_n_the_block_sends_separate_calls(tmp_path):
    """A chat function that does not say it takes `n` (a plain fake) gets one call per sample, as before."""
    async def main():
        srv = NStandIn(True)
        async with srv as url, TeacherClient([Endpoint(url, name="s")]) as client:
            async def chat(messages, **kw):
                return await client.chat(messages, **kw)
            state = RunState(UnitContext(chat, 7, "leaf", "unit"), UnitResult(), 4)
            rows = await block(tmp_path).run([{"topic": "tides"}], state)
        return srv.bodies, rows

    bodies, rows = asyncio.run(main())
    assert len(rows) == 4 and len(bodies) == 4 and all("n" not in b for b in bodies)
    assert sorted(b["seed"] for b in bodies) == [7, 8, 9, 10]


def test_real_llama_cpp_n_is_used_or_detected_unsupported(tmp_path):
    from sdg.teacher.backends import LlamaCppServer
    from tests.conftest import smollm2_gguf

    with LlamaCppServer(gguf=smollm2_gguf(), model_name="teacher", context_length=1024, n_parallel=2,
                        n_threads=2, log_path=tmp_path / "llama.log", startup_timeout_s=120) as served:
        url = served.base_url

        async def main():
            async with TeacherClient([Endpoint(url, name="llama", max_in_flight=2)], max_retries=1) as c:
                await c.discover(probe_n=True)
                cap = c.n_cap
                res = await c.chat([{"role": "user", "content": "Name a colour."}], max_tokens=8, seed=5, n=2)
                return cap, res, c.stats()["llama"]

        cap, res, stats = asyncio.run(main())
    assert stats.slots == 2  # /props total_slots
    assert isinstance(res, Completion) and len(res.texts) == 2  # one n=2 request, or two separate ones
    assert cap in (1, 2)
    assert stats.n_cap == cap


def test_the_n_probe_samples_and_greedy_calls_go_separately() -> None:
    """vLLM refuses n > 1 with greedy sampling (temperature 0): the readiness probe asks n=2 at temperature > 0
    (else every vLLM would read as refusing `n`), and a temperature-0 call with n > 1 goes as separate requests
    without ever sending `n` (a 400 there would turn `n` off for the whole run)."""

    async def go() -> tuple[NStandIn, int, Completion]:
        stand = NStandIn(accepts_n=True)
        async with stand as url, TeacherClient([Endpoint(url, "teacher", None)]) as client:
            await client.discover(probe_n=True)
            cap = client.n_cap
            greedy = await client.chat([{"role": "user", "content": "x"}], max_tokens=8, temperature=0.0, n=3, seed=1)
            return stand, cap, greedy

    stand, cap, greedy = asyncio.run(go())
    probe, *rest = stand.bodies
    assert probe["n"] == 2 and probe["temperature"] > 0 and cap > 1
    assert len(rest) == 3 and all("n" not in b for b in rest)
    assert isinstance(greedy, Completion) and len(greedy.texts) == 3
