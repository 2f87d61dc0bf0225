"""The `llm` block: render a prompt per row, ask the teacher, parse the reply into 0..n rows.

Every request that yields nothing is counted with its reason (`empty_reply`, `unparseable`,
`truncated`, `request_failed:<kind>`), so a unit's drop counts explain where its samples went. A
judge is this block with a score parser (`score`, `yes_no`) followed by a `filter`: it asks the run's
judge (a separate model when `judge=` is set) and, where that server constrains replies to a JSON
schema, asks for `{"score": N}` with N limited to the valid scores, so every verdict parses.

Calls of one row with the IDENTICAL prompt (num_samples split by samples_per_call into equal counts) go as
ONE request with `n` = that many choices where the chat function says it can (`supports_n`, set by the
engine's session; the client sends separate requests where a server does not take `n`). The choices then
share the first call's seed (a server cannot give each choice its own); the seeds of the calls are
still drawn as before, so the seeds of every later request stay what they were.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from sdg.errors import ConfigError
from sdg.pipeline.blocks import SEED_MASK, BindEnv, Block, Bound, RunState, need_columns, register_block
from sdg.pipeline.parsers import PARSERS, ParserSpec
from sdg.pipeline.templates import PromptFile
from sdg.pipeline.types import Row

TARGET = "target_samples"  # `num_samples`/`cap` value meaning "this unit's target_samples"
ALL = "all"  # `cap` value: every parsed item goes on (a later dedup's cap keeps what the leaf needs)
BUDGET_MIN_ITEMS = 4  # items a leaf's whole replies held before budget_headroom sizes its max_tokens
BUDGET_SLACK = 32  # tokens on top of a sized budget (a preamble, the blank lines)
NUM_SAMPLES = "num_samples"  # the placeholder a prompt uses for "how many to write in this reply"
JUDGE_PARSERS = ("score", "yes_no")  # a block with one of these is a judge unless its YAML says `role`


@dataclass
class _Reply:
    """One call's outcome, reduced to what the block needs."""

    items: list[dict]
    reason: str | None = None  # why nothing usable came back


@register_block("llm")
@dataclass
class LLMBlock(Block):
    """Generation or judging: one prompt per input row (split over calls by samples_per_call), 0..cap rows out."""

    name: str
    prompt: str  # a file in prompts/
    parser: str  # a name in sdg.pipeline.parsers.PARSERS
    max_tokens: int
    temperature: float = 0.7
    top_p: float | None = None  # None: not sent (the server's default)
    # OpenAI's frequency_penalty (-2..2; vLLM, llama.cpp and hosted APIs take it), None: not sent. A small model
    # asked for a list of pairs falls into loops (one pair written 20 times, the examples' pairs again):
    # 0.3 on the simple knowledge pipeline cut Qwen2.5-0.5B's tokens per kept pair from 536 to 336.
    frequency_penalty: float | None = None
    seed: int | None = None  # base of the request seeds: the k-th request of a unit sends unit seed + k + seed
    outputs: dict[str, str] | None = None  # parser field -> column; default: same names
    num_samples: int | Literal["target_samples"] = 1  # samples to ask for per input row
    samples_per_call: int | None = None  # split num_samples over several calls of at most this many
    # keep at most this many per input row; default num_samples. target_samples: what the unit's leaf still
    # needs when the unit starts (at least the unit's target), so extras count toward the leaf. all: every
    # parsed item goes on to the next blocks: a dedup with `cap: target_samples` after it keeps what the leaf
    # needs once copies of the examples are gone, so they never take the places of valid samples written
    # after them (the unit's end trims to what the leaf needs in any case)
    cap: int | Literal["target_samples", "all"] | None = None
    stop: list[str] | None = None
    valid_range: list[int] | None = None  # [lo, hi] for score parsers: other scores count as out_of_range
    count_generated: bool = False  # this block's parsed items are the unit's raw samples (UnitResult.generated)
    role: Optional[Literal["generate", "judge"]] = None  # who answers; None = judge for score parsers
    # A call asking for k samples gets max_tokens = k x (completion tokens per parsed item seen so far in its
    # leaf) x this + BUDGET_SLACK (never above max_tokens), once its whole replies held BUDGET_MIN_ITEMS: a small
    # model asked for 2 writes 5, and on a saturated teacher the 3 nobody needs cost as much as kept ones.
    # Per leaf: a haiku leaf's items are longer than a unit-conversion leaf's. None: max_tokens always.
    budget_headroom: float | None = None
    _prompt: PromptFile | None = field(default=None, init=False, repr=False)
    _parser: ParserSpec | None = field(default=None, init=False, repr=False)
    # leaf id -> [completion tokens of whole replies, items parsed from them]
    _seen: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)

    def check(self, where: str) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"{where}: max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.temperature <= 2:
            raise ConfigError(f"{where}: temperature must be between 0 and 2, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: top_p must be > 0 and <= 1, got {self.top_p}")
        if self.frequency_penalty is not None and not -2 <= self.frequency_penalty <= 2:
            raise ConfigError(f"{where}: frequency_penalty must be from -2 to 2, got {self.frequency_penalty}")
        if self.seed is not None and not 0 <= self.seed <= SEED_MASK:
            raise ConfigError(f"{where}: seed must be from 0 to {SEED_MASK}, got {self.seed}")
        for key in ("num_samples", "samples_per_call", "cap"):
            v = getattr(self, key)
            if isinstance(v, int) and v < 1:
                raise ConfigError(f"{where}: {key} must be >= 1 (or '{TARGET}'), got {v}")
        if self.budget_headroom is not None and not self.budget_headroom >= 1:
            raise ConfigError(f"{where}: budget_headroom must be >= 1 (or left out), got {self.budget_headroom}")
        if self.valid_range is not None and (len(self.valid_range) != 2 or self.valid_range[0] > self.valid_range[1]):
            raise ConfigError(f"{where}: valid_range must be [low, high], got {self.valid_range}")

    def bind(self, env: BindEnv, where: str) -> None:
        spec = PARSERS.get(self.parser)
        if spec is None:
            raise ConfigError(f"{where}: unknown parser '{self.parser}'; known parsers: {', '.join(PARSERS)}")
        self._parser = spec
        self._prompt = env.prompt(self.prompt, where)
        bad = [k for k in self.output_map if k not in spec.fields]
        if bad:
            raise ConfigError(f"{where}: outputs names {bad}, but parser '{self.parser}' gives only "
                              f"{', '.join(spec.fields)}")
        if self.valid_range is not None and spec.fields != ("score",):
            raise ConfigError(f"{where}: valid_range only applies to score parsers (score, yes_no)")
        if self.role == "judge" and self.parser not in JUDGE_PARSERS:
            raise ConfigError(f"{where}: role judge needs a score parser ({', '.join(JUDGE_PARSERS)}), got "
                              f"'{self.parser}'")

    @property
    def is_judge(self) -> bool:
        return self.role == "judge" or (self.role is None and self.parser in JUDGE_PARSERS)

    def verdict_format(self) -> dict[str, Any]:
        """The OpenAI `response_format` of a structured verdict: `{"score": N}`, N one of the valid scores."""
        score: dict[str, Any] = {"type": "integer"}
        if self.valid_range is not None:
            score["enum"] = list(range(self.valid_range[0], self.valid_range[1] + 1))
        elif self.parser == "yes_no":
            score["enum"] = [0, 1]
        schema = {"type": "object", "properties": {"score": score}, "required": ["score"], "additionalProperties": False}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}

    @property
    def output_map(self) -> dict[str, str]:
        if self.outputs is not None:
            return dict(self.outputs)
        return {f: f for f in (self._parser.fields if self._parser else ())}

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        assert self._prompt is not None
        wanted = [f for f in self._prompt.fields if f != NUM_SAMPLES]
        need_columns(columns, wanted, f"{where}: prompt {self.prompt}", "the prompt")
        return columns | frozenset(self.output_map.values())

    # -- sizes --------------------------------------------------------------------------------------

    def asked(self, target: int) -> int:
        return target if self.num_samples == TARGET else int(self.num_samples)

    def per_call(self, target: int) -> list[int]:
        """How many samples each call asks for: num_samples split into chunks of samples_per_call."""
        n = self.asked(target)
        step = self.samples_per_call or n
        return [min(step, n - i) for i in range(0, n, step)]

    def kept(self, target: int) -> int:
        if self.cap is None or self.cap == ALL:  # all: the estimate counts what is asked for
            return self.asked(target)
        return target if self.cap == TARGET else int(self.cap)

    def bound(self, before: Bound, target: int) -> Bound:
        calls = before.rows * len(self.per_call(target))
        return Bound(before.rows * self.kept(target), before.requests + calls,
                     before.output_tokens + calls * self.max_tokens)

    # -- running ------------------------------------------------------------------------------------

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        assert self._prompt is not None and self._parser is not None
        plans: list[tuple[int, list[dict], int, int]] = []  # (row index, messages, seed, count) in a fixed order
        for i, row in enumerate(rows):
            for count in self.per_call(state.target):
                try:
                    messages = self._prompt.messages({**row, NUM_SAMPLES: count})
                except KeyError as e:
                    state.drop(self.name, "missing_column")
                    state.error(self.name, "missing_column", f"row has no column {e.args[0]!r} for {self.prompt}")
                    break
                plans.append((i, messages, (state.next_seed() + (self.seed or 0)) & SEED_MASK, count))
        asks = self._group(plans, state)  # (row index, messages, seed, count, n)
        if len(asks) == 1:  # the common case: no task and no gather for one request
            _, messages, seed, count, n = asks[0]
            replies = [await self._ask(messages, seed, count, n, state)]
        else:
            replies = await asyncio.gather(*(self._ask(messages, seed, count, n, state)
                                             for _, messages, seed, count, n in asks))
        by_row: dict[int, list[dict]] = {}
        for (i, *_), choices in zip(asks, replies):
            for reply in choices:
                if reply.reason:
                    state.drop(self.name, reply.reason)
                by_row.setdefault(i, []).extend(reply.items)
        out: list[Row] = []
        # cap target_samples: keep what the unit's leaf still needs (extras a model writes count there)
        keep = (None if self.cap == ALL else state.keep_limit if self.cap == TARGET
                else self.kept(state.target))
        mapping = self.output_map
        for i, row in enumerate(rows):
            items = by_row.get(i, [])
            if keep is not None:
                items = state.keep_at_most(self.name, items, keep)
            for item in items:
                new = dict(row)
                for src, col in mapping.items():
                    new[col] = item[src]
                out.append(new)
        return out

    def _chat(self, state: RunState) -> Any:
        judge = state.ctx.judge
        return judge.chat if self.is_judge and judge is not None else state.ctx.chat

    def _group(self, plans: list[tuple[int, list[dict], int, int]],
               state: RunState) -> list[tuple[int, list[dict], int, int, int]]:
        """Consecutive calls of one row with identical messages (so the same count) as one ask with n choices
        (first call's seed), where the chat takes `n`; else one ask per call. (row, messages, seed, count, n)"""
        if len(plans) < 2 or not getattr(self._chat(state), "supports_n", False):
            return [(*plan, 1) for plan in plans]
        asks: list[tuple[int, list[dict], int, int, int]] = []
        for i, messages, seed, count in plans:
            if asks and asks[-1][0] == i and asks[-1][1] == messages:
                asks[-1] = (*asks[-1][:4], asks[-1][4] + 1)
            else:
                asks.append((i, messages, seed, count, 1))
        return asks

    def token_budget(self, count: int, leaf_id: str = "") -> int:
        """max_tokens for a call of the leaf asking for `count` samples (see budget_headroom)."""
        tokens, items = self._seen.get(leaf_id, (0, 0))
        if self.budget_headroom is None or items < BUDGET_MIN_ITEMS:
            return self.max_tokens
        return max(1, min(self.max_tokens, math.ceil(count * tokens / items * self.budget_headroom) + BUDGET_SLACK))

    def _learn(self, leaf_id: str, completion_tokens: int, replies: list[_Reply], cut: bool) -> None:
        """Tokens per item from whole replies (none cut by max_tokens): what token_budget sizes calls from."""
        items = sum(len(r.items) for r in replies)
        if self.budget_headroom is not None and not cut and items and completion_tokens > 0:
            seen = self._seen.setdefault(leaf_id, [0, 0])
            seen[0] += completion_tokens
            seen[1] += items

    async def _ask(self, messages: list[dict], seed: int, count: int, n: int, state: RunState) -> list[_Reply]:
        """One request (n choices: one `n` request) for `count` samples a choice; a reply per choice asked for."""
        assert self._parser is not None
        try:
            extra: dict[str, Any] = {} if self.top_p is None else {"top_p": self.top_p}
            if self.frequency_penalty is not None:
                extra["frequency_penalty"] = self.frequency_penalty
            chat, judge = self._chat(state), state.ctx.judge
            if self.is_judge and judge is not None and await judge.structured():
                extra["response_format"] = self.verdict_format()
                state.result.structured_requests += 1
            if n > 1:
                extra["n"] = n
            res = await chat(messages, max_tokens=self.token_budget(count, state.ctx.leaf_id),
                             temperature=self.temperature, seed=seed, stop=self.stop, **extra)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the contract says chat never raises; a bad one must not end the unit
            res = _Failure("exception", f"{type(e).__name__}: {e}")
        result = state.result
        result.requests += n  # calls, as the plan's estimate counts them
        endpoint = getattr(res, "endpoint", "")
        if isinstance(endpoint, str) and endpoint:
            result.servers[endpoint] += _int(getattr(res, "http_requests", 1)) or 1  # n requests for n choices
        result.prompt_tokens += _int(getattr(res, "prompt_tokens", 0))
        result.completion_tokens += _int(getattr(res, "completion_tokens", 0))
        result.cached_tokens += _int(getattr(res, "cached_tokens", 0))
        if not getattr(res, "ok", False):
            kind = str(getattr(res, "kind", "unknown") or "unknown")
            state.error(self.name, kind, str(getattr(res, "message", "") or repr(res)),
                        retryable=bool(getattr(res, "retryable", True)))
            return [_Reply([], f"request_failed:{kind}")] * n
        if n == 1:
            finish = getattr(res, "finish_reason", None)
            replies = [self._digest(getattr(res, "text", "") or "", finish, state)]
            self._learn(state.ctx.leaf_id, _int(getattr(res, "completion_tokens", 0)), replies, finish == "length")
            return replies
        texts = list(getattr(res, "texts", ()) or (getattr(res, "text", ""),))[:n]
        finishes = list(getattr(res, "finish_reasons", ()) or ())
        finishes += [getattr(res, "finish_reason", None)] * (len(texts) - len(finishes))
        replies = [self._digest(t or "", f, state) for t, f in zip(texts, finishes)]
        self._learn(state.ctx.leaf_id, _int(getattr(res, "completion_tokens", 0)), replies, "length" in finishes)
        return replies + [_Reply([], "empty_reply")] * (n - len(replies))  # choices the server did not give

    def _digest(self, text: Any, finish_reason: Any, state: RunState) -> _Reply:
        """One choice's text: parsed items, or why there are none."""
        assert self._parser is not None
        result = state.result
        if not isinstance(text, str) or not text.strip():
            result.unusable += 1
            return _Reply([], "empty_reply")
        fields = self._parser.fields
        items = [i for i in self._parser.parse(text) if all(isinstance(i.get(f), (str, int)) for f in fields)]
        cut = finish_reason == "length"
        if self.count_generated:
            result.generated += len(items)
        if cut and self._parser.drops_cut_item and items:
            items.pop()  # it was still being written when max_tokens ran out
            state.drop(self.name, "truncated_item")
            return _Reply(items)
        if not items:
            result.unusable += 1
            return _Reply([], "truncated" if cut else "unparseable")
        if self.valid_range is not None:
            lo, hi = self.valid_range
            good = [i for i in items if lo <= i["score"] <= hi]
            if not good:
                return _Reply([], "out_of_range")
            items = good
        return _Reply(items)


@dataclass(frozen=True)
class _Failure:
    kind: str
    message: str
    ok: bool = False


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0
