"""What a pipeline run of one unit of work needs and returns: the contract between the pipeline
blocks and the engine. Rows are flat column dicts (like dataset columns), everything else is typed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

Row = dict[str, Any]


class ChatFn(Protocol):
    """`TeacherClient.chat` as the blocks see it: returns a Completion or a RequestFailure, never raises."""

    def __call__(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.7,
                 seed: int | None = None, stop: list[str] | None = None, **extra: Any) -> Awaitable[Any]: ...


class Judge:
    """Where judge blocks send their requests: a separate judge model's chat (or the teacher's), and whether
    its server constrains a reply to a JSON schema (vLLM structured outputs, llama.cpp json_schema), so a
    verdict always parses. `probe` asks the server that once, before the first verdict (a run without
    judge blocks never asks); None: free text."""

    def __init__(self, chat: ChatFn, probe: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.chat = chat
        self._probe = probe
        self._answer: asyncio.Future[bool] | None = None

    async def structured(self) -> bool:
        if self._probe is None:
            return False
        if self._answer is None:  # the first judge request asks; the others wait for its answer
            self._answer = asyncio.ensure_future(self._probe())
        try:
            return await asyncio.shield(self._answer)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a probe that fails means free text, never a failed unit
            return False


@dataclass(frozen=True)
class UnitContext:
    """Per unit: the teacher, the judge (None: the teacher judges, in free text), a deterministic seed, and
    who we are (for error records)."""

    chat: ChatFn
    seed: int
    leaf_id: str
    unit_id: str
    judge: Judge | None = None


@dataclass(frozen=True)
class RequestError:
    """A teacher request that failed for good (after retries): recorded, never raised."""

    block: str
    kind: str
    message: str
    retryable: bool = False  # transient (timeout, connection, 5xx, bad response): the unit is redone later


@dataclass
class UnitResult:
    """What one unit produced: kept rows, why others were dropped, failed requests, usage."""

    rows: list[Row] = field(default_factory=list)
    # rows a judge or filter block dropped, with the reason ("block:reason"), kept for the audit files and the
    # report (never training data)
    dropped_rows: list[tuple[str, Row]] = field(default_factory=list)
    generated: int = 0  # raw samples parsed out of teacher outputs before any filter
    dropped: Counter = field(default_factory=Counter)  # "block:reason" -> count
    errors: list[RequestError] = field(default_factory=list)
    requests: int = 0
    unusable: int = 0  # replies that came back but held nothing usable (empty, unparseable, cut off)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    servers: Counter = field(default_factory=Counter)  # endpoint name (judge-... for the judge's) -> requests
    structured_requests: int = 0  # judge requests sent with a JSON schema (structured verdicts)
    cached_tokens: int = 0  # prompt tokens the servers' prefix caches served

    @property
    def transient_failure(self) -> bool:
        """A request failed for a reason that may pass (the teacher hung, died, answered 5xx): the unit's
        outcome is not final, so it is journaled failed and redone on the next attempt."""
        return any(e.retryable for e in self.errors)

    def merge(self, other: "UnitResult") -> None:
        self.generated += other.generated
        self.unusable += other.unusable
        self.dropped.update(other.dropped)
        self.dropped_rows.extend(other.dropped_rows)
        self.errors.extend(other.errors)
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.servers.update(other.servers)
        self.structured_requests += other.structured_requests
        self.cached_tokens += other.cached_tokens


RunUnit = Callable[[Row, UnitContext], Awaitable[UnitResult]]
