"""budget_headroom: an llm block sizes a call's max_tokens from the completion tokens per item its whole replies
took so far, so a model that writes 6 pairs when asked for 2 is cut after about 2 (its last, cut pair dropped)
instead of being paid for 6. Real HTTP: an aiohttp server in the test's loop that honours max_tokens the way a
server does (finish_reason "length", the text cut), the real client and block."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from aiohttp import web

from sdg.engine.session import TeacherWatch, _watched
from sdg.pipeline.blocks import BindEnv, RunState
from sdg.pipeline.llm_block import BUDGET_MIN_ITEMS, BUDGET_SLACK, LLMBlock
from sdg.pipeline.types import UnitContext, UnitResult
from sdg.teacher.client import Endpoint, TeacherClient
from tests.standin_teacher import InLoopServer

PAIR_TOKENS = 30  # the server counts each pair it writes as 30 completion tokens


class Overwriter(InLoopServer):
    """Writes 6 pairs whatever it is asked for, as far as max_tokens lets it (then stops mid-pair)."""

    def __init__(self) -> None:
        self.max_tokens: list[int] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        limit = int(body["max_tokens"])
        self.max_tokens.append(limit)
        k0 = len(self.max_tokens) * 10
        pairs = [f"Question: What is item {k0 + j} for?\nAnswer: Item {k0 + j} is for test number {k0 + j}."
                 for j in range(6)]
        whole = min(6, limit // PAIR_TOKENS)
        cut = whole < 6
        text = "\n\n".join(pairs[:whole]) + (f"\n\nQuestion: What is item {k0 + whole} for?\nAns" if cut else "")
        used = limit if cut else 6 * PAIR_TOKENS
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "length" if cut else "stop"}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": used}})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat)]


def _block(tmp_path: Path, headroom: float | None, max_tokens: int = 1024) -> LLMBlock:
    (tmp_path / "p.txt").write_text("Write {num_samples} question and answer pairs about {topic}.\n")
    b = LLMBlock(name="gen", prompt="p.txt", parser="qa_pairs", max_tokens=max_tokens, num_samples="target_samples",
                 cap="target_samples", budget_headroom=headroom)
    b.bind(BindEnv((tmp_path,)), "test")
    return b


def _run(tmp_path: Path, headroom: float | None, targets: list[int],
         max_tokens: int = 1024) -> tuple[list[int], list[int], list[dict]]:
    """Units of the given targets, one after another through one block; (max_tokens sent, rows kept, drops)."""
    async def main():
        srv = Overwriter()
        block = _block(tmp_path, headroom, max_tokens)
        kept, drops = [], []
        async with srv as url, TeacherClient([Endpoint(url, name="s")], max_retries=0) as client:
            chat = _watched(client, TeacherWatch(60), 4096)
            for k, target in enumerate(targets):
                state = RunState(UnitContext(chat, 100 + k, "leaf", f"u{k}"), UnitResult(), target)
                rows = await block.run([{"topic": "tests"}], state)
                kept.append(len(rows))
                drops.append(dict(state.result.dropped))
        return srv.max_tokens, kept, drops

    return asyncio.run(main())


def test_calls_are_sized_from_the_tokens_per_item_seen(tmp_path: Path) -> None:
    sent, kept, drops = _run(tmp_path, 1.5, [5, 5, 2, 2])
    # a whole reply of 6 items (>= BUDGET_MIN_ITEMS) teaches 30 tokens an item; then a call for 5 asks for
    # 5 x 30 x 1.5 + slack (all 6 fit), and a call for 2 for 2 x 30 x 1.5 + slack: it gets 4 whole pairs (the
    # 5th cut and dropped) where it got 6 before
    assert 6 >= BUDGET_MIN_ITEMS
    assert sent[:2] == [1024, math.ceil(5 * PAIR_TOKENS * 1.5) + BUDGET_SLACK]
    budget = math.ceil(2 * PAIR_TOKENS * 1.5) + BUDGET_SLACK
    assert sent[2:] == [budget, budget] and budget < 1024
    assert kept == [5, 5, 2, 2]
    assert drops[2]["gen:truncated_item"] == 1 and drops[2]["gen:over_target"] == budget // PAIR_TOKENS - 2


def test_without_headroom_every_call_asks_for_max_tokens(tmp_path: Path) -> None:
    sent, kept, drops = _run(tmp_path, None, [5, 5, 2, 2])
    assert sent == [1024] * 4 and kept == [5, 5, 2, 2]
    assert drops[2]["gen:over_target"] == 4 and "gen:truncated_item" not in drops[2]


def test_cut_replies_teach_nothing(tmp_path: Path) -> None:
    """Replies cut by max_tokens say nothing of an item's length: with only those, every call keeps max_tokens."""
    sent, kept, drops = _run(tmp_path, 1.5, [5] * 4, max_tokens=100)  # 6 pairs need 180: every reply is cut
    assert sent == [100] * 4 and kept == [3] * 4
    assert all(d["gen:truncated_item"] == 1 for d in drops)


def test_each_leaf_learns_its_own_item_length(tmp_path: Path) -> None:
    """A haiku leaf's items are longer than a unit-conversion leaf's: one leaf's replies size only its calls."""
    from sdg.pipeline.llm_block import _Reply

    block = _block(tmp_path, 1.5)
    block._learn("short", 4 * PAIR_TOKENS, [_Reply([{"question": "q", "answer": "a"}] * 4)], cut=False)
    assert block.token_budget(2, "short") == math.ceil(2 * PAIR_TOKENS * 1.5) + BUDGET_SLACK
    assert block.token_budget(2, "long") == 1024
