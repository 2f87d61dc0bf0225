"""What a pipeline run of one unit of work needs and returns: the contract between the pipeline
blocks and the engine. Rows are flat column dicts (like dataset columns), everything else is typed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

Row = dict[str, Any]


class ChatFn(Protocol):
    """`TeacherClient.chat` as the blocks see it: returns a Completion or a RequestFailure, never raises."""

    def __call__(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.7,
                 seed: int | None = None, stop: list[str] | None = None, **extra: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class UnitContext:
    """Per unit: the teacher, a deterministic seed, and who we are (for error records)."""

    chat: ChatFn
    seed: int
    leaf_id: str
    unit_id: str


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
    generated: int = 0  # raw samples parsed out of teacher outputs before any filter
    dropped: Counter = field(default_factory=Counter)  # "block:reason" -> count
    errors: list[RequestError] = field(default_factory=list)
    requests: int = 0
    unusable: int = 0  # replies that came back but held nothing usable (empty, unparseable, cut off)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def transient_failure(self) -> bool:
        """A request failed for a reason that may pass (the teacher hung, died, answered 5xx): the unit's
        outcome is not final, so it is journaled failed and redone on the next attempt."""
        return any(e.retryable for e in self.errors)

    def merge(self, other: "UnitResult") -> None:
        self.generated += other.generated
        self.unusable += other.unusable
        self.dropped.update(other.dropped)
        self.errors.extend(other.errors)
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


RunUnit = Callable[[Row, UnitContext], Awaitable[UnitResult]]
