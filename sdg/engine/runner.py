"""The engine: one asyncio loop runs the units of every leaf at once, each unit streaming through
its pipeline's blocks on its own (no stage barriers), a fixed pool of workers bounding memory and
in-flight requests, every finished unit journaled as it completes, and an error-rate breaker that
stops a run whose teacher is clearly broken (finished units are kept)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from sdg.engine.journal import JournalStore, record_of
from sdg.engine.plan import Plan, Unit
from sdg.engine.progress import Progress
from sdg.engine.stats import RunStats
from sdg.errors import TeacherBroken

if TYPE_CHECKING:
    from sdg.engine.leaf_targets import LeafScheduler
    from sdg.engine.session import TeacherWatch
from sdg.pipeline.types import ChatFn, Judge, RequestError, UnitContext, UnitResult


@dataclass
class ErrorBreaker:
    """Stops a run whose teacher is clearly broken; finished units stay journaled.

    - errors: more than `limit` of the last `window` requests failed (judged once `min_requests` are seen,
      so a dead teacher stops a run after a handful of requests, not 40);
    - yield: more than `unusable_limit` of the last `unusable_window` replies came back with nothing
      usable (empty, unparseable, cut off): the teacher answers, but not in a form any parser can use.
    """

    limit: float = 0.5
    window: int = 40
    min_requests: int = 10
    unusable_limit: float = 0.9
    unusable_window: int = 100
    _outcomes: deque = field(init=False)  # the last `window` requests: ok or failed
    _replies: deque = field(init=False)  # the last `unusable_window` replies: usable or not
    _reasons: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._outcomes = deque(maxlen=self.window)
        self._replies = deque(maxlen=self.unusable_window)

    def observe(self, result: UnitResult) -> None:
        failures = len(result.errors)
        for e in result.errors:
            self._reasons[f"{e.kind}: {e.message[:160]}"] += 1
        oks = max(result.requests - failures, 0)
        self._outcomes.extend([False] * failures + [True] * oks)
        if len(self._outcomes) >= min(self.window, self.min_requests):
            bad = self._outcomes.count(False)
            if bad > self.limit * len(self._outcomes):
                reason, _ = self._reasons.most_common(1)[0]
                raise TeacherBroken(
                    f"stopping: {bad} of the last {len(self._outcomes)} teacher requests failed (limit "
                    f"{self.limit:.0%}, generate.error_rate_limit); most common: {reason}. Finished units are "
                    "journaled: fix the teacher and run the same command again to resume")
        unusable = min(result.unusable, oks)
        self._replies.extend([False] * unusable + [True] * (oks - unusable))
        if len(self._replies) == self.unusable_window:
            bad = self._replies.count(False)
            if bad > self.unusable_limit * len(self._replies):
                raise TeacherBroken(
                    f"stopping: the teacher's replies are not usable: {bad} of the last {len(self._replies)} were "
                    "empty, unparseable or cut off (generate.unusable_limit). Check the chat template and the model "
                    "(teacher.chat_template, teacher.system_prompt_mode, teacher.max_tokens); finished units are "
                    "journaled")


async def run_plan(plan: Plan, pipelines: Mapping[str, object], chat: ChatFn, journals: JournalStore, *,
                   done: Mapping[str, set[str]], workers: int, progress: Progress,
                   breaker: ErrorBreaker | None = None, units: Iterable[Unit] | None = None,
                   watch: TeacherWatch | None = None, judge: Judge | None = None,
                   scheduler: LeafScheduler | None = None, outcomes: list | None = None,
                   tick_s: float = 1.0) -> RunStats:
    """Run every unit of `plan` (or of `units`, a slice of it) not in `done` (unit ids by leaf id).

    `scheduler`: leaf-level targets (sdg.engine.leaf_targets): units are taken from it (it knows `done` already)
    and told what each kept, instead of running every unit of the plan.
    `judge`: where judge blocks ask (None: the teacher, free text). `progress` hears of every unit run here as it finishes (the units in `done` are the caller's to report:
    sdg.run.execute does, once, for every executor); the stats returned count only the units run here."""
    stats = RunStats()
    started = time.monotonic()
    names = {lp.leaf.id: lp.leaf.name for lp in plan.leaves}
    kinds = {lp.leaf.id: lp.kind for lp in plan.leaves}
    stats.units_resumed = sum(len(v) for v in done.values())
    source = plan.iter_units() if units is None else units
    todo: Iterator[Unit] = (u for u in source if u.id not in done.get(u.leaf_id, ()))

    wake = asyncio.Condition()

    async def next_unit() -> Unit | None:
        if scheduler is None:
            return next(todo, None)
        while True:
            unit = scheduler.take()
            _report_skips()
            if unit is not None or scheduler.finished:
                return unit
            async with wake:  # nothing may go until a unit finishes (no await between take() and here)
                await wake.wait()

    def _report_skips() -> None:
        assert scheduler is not None
        for leaf_id, n in scheduler.drain_skipped():
            progress.not_needed(leaf_id, n)

    async def worker() -> None:
        while (unit := await next_unit()) is not None:
            if scheduler is not None and scheduler.is_topup(unit):
                progress.extra_units(1)
            ctx = UnitContext(chat=chat, seed=unit.seed, leaf_id=unit.leaf_id, unit_id=unit.id, judge=judge)
            try:
                result = await pipelines[kinds[unit.leaf_id]].run(unit.row, ctx)  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a (user) block must not kill the run: record it
                result = UnitResult(errors=[RequestError("pipeline", "exception", f"{type(exc).__name__}: {exc}")])
            record = record_of(unit.id, result, asked=unit.target)
            journals.append(names[unit.leaf_id], record)
            failed = record["status"] == "failed"
            stats.add_unit(result, failed)
            progress.unit_done(unit.leaf_id, len(result.rows), result.completion_tokens, failed)
            if outcomes is not None:
                outcomes.append((unit.id, failed, result.rows))
            if scheduler is not None:
                scheduler.finish(unit, result.rows, failed)
                async with wake:
                    wake.notify_all()
            if breaker is not None:
                breaker.observe(result)

    async def monitor(watch: TeacherWatch) -> None:
        """The watch's stall breaker, and progress lines while no unit completes (a stall shows as it happens)."""
        while True:
            await asyncio.sleep(tick_s)
            watch.check()
            progress.idle(watch.describe())

    work = [asyncio.ensure_future(worker()) for _ in range(max(1, workers))]
    tasks = work + ([asyncio.ensure_future(monitor(watch))] if watch is not None else [])
    try:
        pending = set(tasks)
        while any(t in pending for t in work):  # until every worker is done, or anything raised
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in finished:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        journals.sync()
        stats.elapsed_s = time.monotonic() - started
    return stats
