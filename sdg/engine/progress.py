"""Progress a person can read: a live bar on a terminal, plain periodic log lines in batch jobs."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Optional, TextIO

from sdg.engine.stats import RunStats


def fmt_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class Progress:
    """Counts units, samples and tokens; estimates the rest from the recent completion rate.

    The local engine reports unit by unit (`unit_done`); the Ray executor reports a call's units at a time
    (`advance`); both print the same line. `leaf_units` (units per leaf id) tells when a leaf is finished.
    """

    total_units: int
    leaf_units: Mapping[str, int] = field(default_factory=dict)
    mode: str = "log"  # bar | log | none
    interval_s: float = 30.0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    emit: Optional[Callable[[str], None]] = None  # log lines go here instead of `stream` (the run's log)
    done_units: int = 0
    skipped_units: int = 0
    samples: int = 0
    completion_tokens: int = 0
    failed_units: int = 0
    leaves_done: int = 0
    _left: dict = field(default_factory=dict)
    _start: float = field(default_factory=time.monotonic)
    _recent: deque = field(default_factory=lambda: deque(maxlen=200))
    _last_log: float = 0.0
    _bar: object = None

    def __post_init__(self) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_units, unit="unit", file=self.stream, dynamic_ncols=True)
        self._left = dict(self.leaf_units)
        self._last_log = time.monotonic()

    @property
    def total_leaves(self) -> int:
        return len(self.leaf_units)

    def resumed(self, done: Mapping[str, Collection[str]]) -> None:
        """Units already journaled (unit ids by leaf id): counted as done, not in the rate."""
        n = 0
        for leaf_id, ids in done.items():
            n += len(ids)
            self._count_leaf(leaf_id, len(ids))
        self.skipped_units += n
        if self._bar is not None:
            self._bar.update(n)
        if n and self.mode != "none":
            self._line(f"resuming: {n} of {self.total_units} units already done")

    def not_needed(self, leaf_id: str, units: int) -> None:
        """Units never sent because their leaf had what it needed (leaf-level targets): done, not in the rate."""
        self._count_leaf(leaf_id, units)
        self.skipped_units += units
        if self._bar is not None:
            self._bar.update(units)

    def extra_units(self, units: int) -> None:
        """Top-up units a short leaf asks for beyond the plan."""
        self.total_units += units
        if self._bar is not None:
            self._bar.total += units

    def _count_leaf(self, leaf_id: str, units: int) -> None:
        if leaf_id in self._left and self._left[leaf_id] > 0:
            self._left[leaf_id] -= units
            self.leaves_done += int(self._left[leaf_id] <= 0)

    def unit_done(self, leaf_id: str, samples: int, completion_tokens: int, failed: bool) -> None:
        self._count_leaf(leaf_id, 1)
        self._add(1, samples, completion_tokens, int(failed))

    def advance(self, leaf_id: str, stats: RunStats) -> None:
        """A batch of one leaf's units finished elsewhere (one Ray call's, of a worker)."""
        self._count_leaf(leaf_id, stats.units_done)
        self._add(stats.units_done, stats.samples, stats.completion_tokens, stats.units_failed)

    def _add(self, units: int, samples: int, completion_tokens: int, failed: int) -> None:
        now = time.monotonic()
        self.done_units += units
        self.samples += samples
        self.completion_tokens += completion_tokens
        self.failed_units += failed
        self._recent.append((now, units, completion_tokens))
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(units)
        elif self.mode == "log" and now - self._last_log >= self.interval_s:
            self._last_log = now
            self._line(self.status())

    def idle(self, waiting: str) -> None:
        """Called every second or so: when no unit finished for `interval_s`, a line saying what is waiting
        (requests in flight, the oldest one's age, retries), so a stalled teacher shows as it happens."""
        now = time.monotonic()
        if self.mode == "none" or now - self._last_log < self.interval_s or self.interval_s <= 0:
            return
        last_unit = self._recent[-1][0] if self._recent else self._start
        if now - last_unit < self.interval_s:
            return
        self._last_log = now
        self._line(f"{self.status()}; {waiting}")

    def _rates(self) -> tuple[float, float]:
        """(units/s, tokens/s) over the recent window (since the start while it is short)."""
        if len(self._recent) < 2:
            elapsed = max(time.monotonic() - self._start, 1e-9)
            return self.done_units / elapsed, self.completion_tokens / elapsed
        recent = list(self._recent)
        span = max(recent[-1][0] - recent[0][0], 1e-9)
        return sum(u for _, u, _ in recent[1:]) / span, sum(t for _, _, t in recent[1:]) / span

    def eta_s(self) -> float:
        units_per_s, _ = self._rates()
        left = self.total_units - self.done_units - self.skipped_units
        return left / units_per_s if units_per_s > 0 else float("inf")

    def _postfix(self) -> str:
        _, tok_s = self._rates()
        return (f"leaves {self.leaves_done}/{self.total_leaves} samples {self.samples} {tok_s:.0f} tok/s"
                + (f" failed {self.failed_units}" if self.failed_units else ""))

    def status(self) -> str:
        done = self.done_units + self.skipped_units
        pct = 100.0 * done / self.total_units if self.total_units else 100.0
        return (f"progress: units {done}/{self.total_units} ({pct:.0f}%) {self._postfix()} "
                f"elapsed {fmt_duration(time.monotonic() - self._start)} eta {fmt_duration(self.eta_s())}")

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        elif self.emit is not None:
            self.emit(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self._line(self.status())
