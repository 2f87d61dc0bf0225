"""What a run (or a part of it: one call of units on one node) did, as one typed record with `merge`.

The engine counts into it unit by unit, Ray workers send theirs back per call, the driver merges
them, progress reads it, and the manifest is written from it: one list of counters, not four.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from sdg.pipeline.types import UnitResult


@dataclass
class RunStats:
    units_done: int = 0  # run now (done or failed)
    units_failed: int = 0
    units_resumed: int = 0  # found done in the journals
    units_not_needed: int = 0  # planned units never sent: their leaf had its target (leaf-level targets)
    units_topup: int = 0  # units run beyond the plan for leaves short of their target
    samples: int = 0  # kept rows
    generated: int = 0  # parsed before filters
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    leaves_finished: int = 0  # leaves whose every unit has now run (progress)
    dropped: Counter = field(default_factory=Counter)  # reason -> samples
    errors: Counter = field(default_factory=Counter)  # block:kind -> requests
    servers: Counter = field(default_factory=Counter)  # endpoint name -> requests it answered or failed
    structured_requests: int = 0  # judge requests sent with a JSON schema
    cached_tokens: int = 0  # prompt tokens the servers' prefix caches served (where they say)
    # endpoint name -> what the client saw of it at the end: in-flight limit reached (adaptive), slots, n cap,
    # requests routed by prompt prefix, 429/503 answers (sdg.teacher.client.EndpointStats)
    endpoints: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def add_unit(self, result: UnitResult, failed: bool) -> None:
        """One unit's outcome, as the engine journals it."""
        self.units_done += 1
        self.units_failed += int(failed)
        self.samples += len(result.rows)
        self.generated += result.generated
        self.requests += result.requests
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.dropped.update(result.dropped)
        self.errors.update(f"{e.block}:{e.kind}" for e in result.errors)
        self.servers.update(result.servers)
        self.structured_requests += result.structured_requests
        self.cached_tokens += result.cached_tokens

    def add_record(self, record: Any) -> None:
        """A unit found journaled done (a UnitRecord: a lost node's last units), as the worker would have
        counted it."""
        self.units_done += 1
        self.samples += len(record.rows)
        self.generated += record.generated
        self.requests += record.requests
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.dropped.update(record.dropped)

    def merge(self, other: "RunStats") -> "RunStats":
        """Add `other`'s counts to these (elapsed time is the caller's: parts overlap)."""
        for f in fields(self):
            if f.name == "elapsed_s":
                continue
            mine = getattr(self, f.name)
            if isinstance(mine, dict) and not isinstance(mine, Counter):
                mine.update(getattr(other, f.name))
            elif isinstance(mine, Counter):
                mine.update(getattr(other, f.name))
            else:
                setattr(self, f.name, mine + getattr(other, f.name))
        return self
