"""Leaf-level targets: a leaf's units share the leaf's target, so no valid sample is thrown away while its
leaf still needs samples, and a leaf that has what it needs asks for nothing more.

- A unit asks for enough to keep what its leaf still needs beyond what its units in flight are expected to keep,
  at the leaf's yield so far, up to the plan's samples_per_unit or its pipeline's samples per prompt, whichever is
  more (`_ask`; its row's `target_samples`), and may keep what its leaf still needs when it starts (`_leaf_need`
  on its row; `cap: target_samples` blocks keep up to it): the extra pairs a model writes count.
- Units go out in waves: a leaf sends another unit only while what its units in flight are expected to keep
  (samples asked x the leaf's yield so far: kept per sample asked, drawn toward the other leaves' yield by one
  prompt's worth of asks, so one noisy reply does not size a whole wave) is short of its need. Before any unit
  of the leaf finished, the run's yield so far is used, and before any unit at all what was asked is expected
  to be kept, within a first wave of a quarter of the leaf's units (the same cap holds while the leaf has kept
  nothing from its finished units). Other leaves keep the teacher busy meanwhile; when
  nothing else may go (a free place in the engine and every leaf at its cap), a capped leaf sends anyway.
- A leaf whose need is met sends none of its remaining units (they are "not needed": a resume recomputes the
  same from the journals, so they are never sent later either).
- A leaf still short when its planned units ran (judges and the quality check dropped too much) gets top-up
  units (`LeafPlan.unit_at` past the plan), until the units it sent are worth `pipeline.max_overgeneration` x its
  target in plan shares (a unit counts its planned share whatever it asks for: the budget bounds requests, and
  a small model writes about as many samples whatever it is asked).
- What counts as kept while the run goes is what the streaming quality check keeps (`QualityStage`, fed in
  completion order); the final decision is finish()'s, in plan order (sdg.output.quality_pass), which also
  keeps at most the target per leaf, in unit order.

`LeafScheduler` is synchronous and pure (no I/O): the local engine's workers and the Ray executor's driver
take units from it and report what each unit kept. `PlannedUnits` has its interface without targets
(pipeline.leaf_targets=false: every pending planned unit once), so the Ray executor has one loop either way.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sdg.engine.plan import MIN_SPAN, Plan, Unit, leaf_weight
from sdg.pipeline.inputs import LEAF_NEED

FIRST_WAVE = 0.25  # share of a leaf's planned units sent before any yield is known


@dataclass
class LeafLedger:
    """One leaf's account while the run goes."""

    index: int  # into plan.leaves
    leaf_id: str
    target: int
    planned: int  # planned units
    budget: float  # plan shares its units may be worth in all (max_overgeneration x target)
    kept: int = 0
    asked: int = 0  # samples asked for by units sent (this run) or done (resumed)
    spent: int = 0  # the plan shares of those units (what the budget counts)
    done_asked: int = 0  # of those, by units that finished (the yield's denominator)
    done_kept: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)  # unit id -> samples asked
    planned_in_flight: int = 0  # of those, planned units (not top-ups): top-ups wait for their yield
    next_index: int = 0  # the next unit index (LeafPlan.unit_at) to consider
    sent: int = 0  # units sent this run
    not_needed: int = 0  # planned units never sent because the leaf had what it needed
    topups: int = 0  # top-up units sent
    failed: int = 0  # units that failed this run (teacher errors): no top-ups for the leaf, the next run redoes them

    @property
    def need(self) -> int:
        return max(0, self.target - self.kept)

    def yield_or(self, prior: float | None) -> float | None:
        return self.done_kept / self.done_asked if self.done_asked else prior


class LeafScheduler:
    """Which unit goes next (see the module docstring). `take()` returns a unit (its row carries `_leaf_need`)
    or None when nothing may go until a unit finishes; `finished` says when nothing will go any more."""

    def __init__(self, plan: Plan, done: Mapping[str, set[str]], *, max_overgeneration: float = 3.0,
                 quality: Any = None, ask_caps: Mapping[str, int | None] = {}) -> None:
        self.plan = plan
        # per leaf: the most samples one prompt may ask for (beyond a unit's own share): samples_per_unit, or its
        # pipeline's samples per prompt where that is more (`ask_caps`: kind -> Pipeline.samples_per_prompt)
        self._ask_caps = [max(plan.samples_per_unit, ask_caps.get(lp.kind) or 0) for lp in plan.leaves]
        self._done = done
        self._quality = quality  # a QualityStage: what it drops does not count as kept
        self.leaves: list[LeafLedger] = []
        self._heap: list[tuple[float, int]] = []
        self._parked: set[int] = set()  # leaves waiting for a unit of theirs to finish
        self._capped: set[int] = set()  # of those, leaves held back only by their first-wave cap
        weights = [leaf_weight(lp) for lp in plan.leaves]
        lightest = min(weights, default=1.0)
        self._span = [max(MIN_SPAN, lightest / w) for w in weights]
        for i, lp in enumerate(plan.leaves):
            self.leaves.append(LeafLedger(i, lp.leaf.id, lp.target_samples, lp.units,
                                          max(1.0, max_overgeneration) * lp.target_samples))
            self._heap.append((0.0, i))
        heapq.heapify(self._heap)
        self._by_id = {led.leaf_id: led.index for led in self.leaves}
        self._run_kept = self._run_asked = 0
        self._returned: dict[int, list[Unit]] = {}  # leaf index -> units given back (a lost node's), sent first
        self.skipped: list[tuple[str, int]] = []  # (leaf id, units not needed) since the caller last drained it

    # -- what the journals already hold (a resume) -----------------------------------------------------

    def resumed(self, leaf_id: str, unit: Unit, rows: Iterable[dict], asked: int | None = None) -> None:
        """A unit found done in the journals: its rows count (through the quality check, in plan order), over
        what it asked for (its journal says; older journals do not: its plan share then)."""
        led = self.leaves[self._index(leaf_id)]
        kept = self._count(leaf_id, rows)
        asked = asked if asked is not None and asked > 0 else unit.target
        led.kept += kept
        led.asked += asked
        led.spent += self._share(unit)
        led.done_asked += asked
        led.done_kept += kept
        self._run_asked += asked
        self._run_kept += kept

    # -- the engine's side -----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return not self._heap and not any(led.in_flight for led in self.leaves)

    def take(self) -> Unit | None:
        """The next unit to send, or None. Every call is a free place in the engine (an idle worker, a node
        below its capacity): when no leaf may send within its first wave, a leaf held back only by that cap
        sends its next unit anyway (a teacher with room to spare is not kept waiting for yield figures; on a
        saturated one other leaves' first waves fill every place first)."""
        while self._heap:
            key, i = self._heap[0]
            led = self.leaves[i]
            if led.need <= 0:
                heapq.heappop(self._heap)
                skipped = max(0, led.planned - led.next_index) + len(self._returned.pop(i, ()))
                led.not_needed += skipped
                led.next_index = max(led.next_index, led.planned)
                if skipped:
                    self.skipped.append((led.leaf_id, skipped))
                continue
            if not self._may_send(led):
                heapq.heappop(self._heap)
                if led.in_flight:
                    self._parked.add(i)  # back in the heap when one of its units finishes
                    if self._may_send(led, first_wave=False):
                        self._capped.add(i)
                continue  # nothing in flight and nothing allowed: the leaf stops short (budget spent)
            unit = self._next_unit(led)
            if unit is None:
                heapq.heappop(self._heap)
                if led.in_flight:
                    self._parked.add(i)
                continue
            n = max(1, led.planned)
            heapq.heapreplace(self._heap, ((led.next_index / n) * self._span[i], i))
            return self._send(led, unit)
        return self._take_spare()

    def _take_spare(self) -> Unit | None:
        """A unit of a leaf parked only by its first-wave cap (in leaf order), when nothing else may go."""
        for i in sorted(self._capped):
            led = self.leaves[i]
            if led.need > 0 and self._may_send(led, first_wave=False) and (unit := self._next_unit(led)) is not None:
                return self._send(led, unit)
            self._capped.discard(i)
        return None

    def _send(self, led: LeafLedger, unit: Unit) -> Unit:
        """`unit` goes: its ask replaces its target, and the leaf's account counts it."""
        ask = self._ask(led, unit)
        led.spent += self._share(unit)  # the plan's share (a given-back unit carries its old ask)
        row = {**unit.row, "target_samples": ask, LEAF_NEED: led.need}
        unit = Unit(unit.id, unit.leaf_id, unit.input_index, unit.share_index, ask, unit.seed, row)
        led.in_flight[unit.id] = ask
        led.planned_in_flight += int(not self.is_topup(unit))
        led.asked += ask
        led.sent += 1
        return unit

    def finish(self, unit: Unit, rows: Iterable[dict], failed: bool) -> int:
        """A unit ran; what it kept counts toward its leaf (a failed unit's rows are redone later, not counted).
        Returns the rows counted."""
        i = self._index(unit.leaf_id)
        led = self.leaves[i]
        asked = led.in_flight.pop(unit.id, unit.target)
        led.planned_in_flight -= int(not self.is_topup(unit))
        kept = 0 if failed else self._count(unit.leaf_id, rows)
        led.kept += kept
        if not failed:
            led.done_asked += asked
            led.done_kept += kept
            self._run_asked += asked
            self._run_kept += kept
        else:
            led.failed += 1  # redone by the next run; it still counts toward this run's budget
        if i in self._parked:
            self._parked.discard(i)
            self._capped.discard(i)
            heapq.heappush(self._heap, (-1.0, i))  # it waited: it goes first
        return kept

    def give_back(self, unit: Unit) -> None:
        """A unit taken but never run (its node was lost): out of its leaf's in-flight units, not counted as
        asked or sent, and taken again before the leaf's next new unit (or counted "not needed" if the leaf
        fills up meanwhile)."""
        i = self._index(unit.leaf_id)
        led = self.leaves[i]
        if led.in_flight.pop(unit.id, None) is None:
            return
        led.planned_in_flight -= int(not self.is_topup(unit))
        led.asked -= unit.target
        led.spent -= self._share(unit)
        led.sent -= 1
        self._returned.setdefault(i, []).append(unit)
        self._parked.discard(i)
        self._capped.discard(i)
        if all(j != i for _, j in self._heap):
            heapq.heappush(self._heap, (-1.0, i))

    def shortfalls(self) -> dict[str, tuple[int, int, str]]:
        """Leaves that stopped short: leaf id -> (kept, target, why)."""
        out = {}
        for led in self.leaves:
            if led.kept < led.target:
                why = (f"sent units worth {led.spent} samples of the plan (asked for {led.asked}), "
                       f"pipeline.max_overgeneration allows {led.budget:g}"
                       if led.spent + 1 > led.budget else "units failed or were not run")
                out[led.leaf_id] = (led.kept, led.target, why)
        return out

    def count_into(self, stats: Any) -> None:
        """The plan-level outcome into a RunStats: units not needed and top-up units."""
        stats.units_not_needed = sum(led.not_needed for led in self.leaves)
        stats.units_topup = sum(led.topups for led in self.leaves)

    def drain_skipped(self) -> list[tuple[str, int]]:
        """(leaf id, units) decided "not needed" since the last call: for progress."""
        out, self.skipped = self.skipped, []
        return out

    def is_topup(self, unit: Unit) -> bool:
        return unit.share_index >= len(self.plan.leaves[self._index(unit.leaf_id)].shares)

    # -- inside ----------------------------------------------------------------------------------------

    def _index(self, leaf_id: str) -> int:
        return self._by_id[leaf_id]

    def _count(self, leaf_id: str, rows: Iterable[dict]) -> int:
        if self._quality is None:
            return sum(1 for _ in rows)
        return sum(1 for row in rows if self._quality.offer(leaf_id, row) is None)

    def _yield(self, led: LeafLedger) -> float | None:
        """Samples kept per sample asked: the leaf's so far, drawn toward the other leaves' by one prompt's worth
        of asks (its ask cap); else the run's; else None (nothing known yet). One reply is a noisy measure (a
        truncated reply, a run of copies): taken alone, a first reply that kept 2 of 10 where the leaf's later
        replies keep 5 sends a whole wave of asks that overshoots the need twice over, and on a saturated
        teacher every overshoot is paid in tokens. The leaf's own figure outweighs the prior once it has asked
        for more than one prompt's worth."""
        others_asked = self._run_asked - led.done_asked
        if not led.done_asked or not others_asked:
            return led.yield_or(self._run_kept / self._run_asked if self._run_asked else None)
        prior = (self._run_kept - led.done_kept) / others_asked
        weight = self._ask_caps[led.index]
        return (led.done_kept + weight * prior) / (led.done_asked + weight)

    def _uncovered(self, led: LeafLedger) -> float:
        """What the leaf still needs beyond what its units in flight are expected to keep (before any yield is
        known, a unit is expected to keep what it asked for)."""
        y = self._yield(led)
        return led.need - sum(led.in_flight.values()) * (1.0 if y is None else y)

    def _may_send(self, led: LeafLedger, *, first_wave: bool = True) -> bool:
        """Another unit of this leaf may go: its in-flight units are not expected to fill its need, and it
        has budget left (before any yield is known, or while the leaf has kept nothing from its finished units,
        at most a first wave of a quarter of its units while `first_wave`: such a leaf's units ask for their
        plan share only, and a knowledge leaf whose first reply was all copies sent every remaining unit at
        once, each paying its document chunk for 2 samples)."""
        if led.spent + 1 > led.budget:
            return False
        if not led.in_flight:
            return True
        unknown = self._yield(led) is None or (led.done_asked > 0 and not led.done_kept)
        if first_wave and unknown and len(led.in_flight) >= max(1, math.ceil(FIRST_WAVE * led.planned)):
            return False
        return self._uncovered(led) > 0

    def _ask(self, led: LeafLedger, unit: Unit) -> int:
        """Samples the unit asks for: enough to keep what the leaf still needs beyond what its units in flight
        are expected to keep, at the yield seen so far (kept per sample asked, when below 1), within the leaf's
        ask cap (samples_per_unit, or its pipeline's samples per prompt where that is more). One prompt that asks for 5 pays its prompt tokens once where 5 prompts asking for 1
        pay them 5 times, and a prompt costs several samples' worth of completion (a knowledge prompt carries its
        document chunk): a leaf that keeps half of what it asks asks for twice its need in one prompt rather than
        for its need in two. A yield above 1 (a model that writes more than asked) does not shrink the ask: a
        model that follows the ask would leave the leaf short. A leaf that has kept nothing from its finished
        units asks for its plan share only."""
        if led.done_asked and not led.done_kept:  # nothing kept yet: its share, so a hopeless leaf costs what
            return self._share(unit)  # its plan does (a full pipeline's contexts block makes a call per sample)
        cap = max(self._share(unit), self._ask_caps[led.index])
        y = self._yield(led)
        want = self._uncovered(led) / (y if y is not None and 0 < y < 1 else 1.0)
        return max(1, min(math.ceil(want - 1e-9), cap))

    def _share(self, unit: Unit) -> int:
        """The plan's share of a unit (its target before an ask replaced it): planned, or a top-up's."""
        return self.plan.leaves[self._index(unit.leaf_id)].share(unit.share_index)

    def _next_unit(self, led: LeafLedger) -> Unit | None:
        """The leaf's next unit not done already (planned first, then top-ups while the budget lasts)."""
        lp = self.plan.leaves[led.index]
        done = self._done.get(led.leaf_id, set())
        if self._returned.get(led.index):
            return self._returned[led.index].pop(0)
        while True:
            index = led.next_index
            if index >= led.planned:
                if not lp.inputs or led.planned_in_flight or led.failed:
                    return None  # top-ups only once the planned units are back (their yield decides how many go
                    # at once: _may_send), never for units that failed (the next run redoes those)
                unit = lp.unit_at(index, self.plan.seed)
                if led.spent + unit.target > led.budget:
                    return None
                led.topups += 1
            else:
                unit = lp.send_unit(index, self.plan.seed)  # shared prompt prefixes back to back
            led.next_index += 1
            if unit.id not in done:
                return unit


class PlannedUnits:
    """Every pending planned unit once, in the plan's order, each keeping at most its own share: the rule
    without leaf-level targets, behind LeafScheduler's interface (take / finish / give_back ...)."""

    def __init__(self, plan: Plan, done: Mapping[str, set[str]]) -> None:
        self.plan = plan
        self._todo = (u for u in plan.iter_units() if u.id not in done.get(u.leaf_id, ()))
        self._returned: deque[Unit] = deque()  # a lost node's units, sent again first
        self._in_flight = 0
        self._by_id = {lp.leaf.id: i for i, lp in enumerate(plan.leaves)}

    @property
    def finished(self) -> bool:
        return not self._in_flight and not self._returned and self._peek() is None

    def _peek(self) -> Unit | None:
        unit = next(self._todo, None)
        if unit is not None:
            self._returned.append(unit)
        return unit

    def take(self) -> Unit | None:
        unit = self._returned.popleft() if self._returned else next(self._todo, None)
        if unit is not None:
            self._in_flight += 1
        return unit

    def finish(self, unit: Unit, rows: Iterable[dict], failed: bool) -> int:
        self._in_flight -= 1
        return 0 if failed else sum(1 for _ in rows)

    def give_back(self, unit: Unit) -> None:
        self._in_flight -= 1
        self._returned.appendleft(unit)

    def count_into(self, stats: Any) -> None:
        """Nothing: without targets no unit is skipped and none is added."""

    def drain_skipped(self) -> list[tuple[str, int]]:
        return []

    def is_topup(self, unit: Unit) -> bool:
        return False

    def _index(self, leaf_id: str) -> int:
        return self._by_id[leaf_id]


def scheduler_for(plan: Plan, done: Mapping[str, set[str]], journals: Any, *, max_overgeneration: float,
                  quality: Any = None, ask_caps: Mapping[str, int | None] = {}) -> LeafScheduler:
    """A scheduler that knows what the journals hold: every done unit counted in the leaf's order, its rows
    through `quality` (a QualityStage, or None)."""
    sched = LeafScheduler(plan, done, max_overgeneration=max_overgeneration, quality=quality, ask_caps=ask_caps)
    for lp in plan.leaves:
        ids = done.get(lp.leaf.id, set())
        if ids:
            records = {r.unit: r for r in journals.load(lp.leaf.name) if r.status == "done"}
            for unit in lp.journaled_units(plan.seed, records):
                sched.resumed(lp.leaf.id, unit, records[unit.id].rows, records[unit.id].asked)
    return sched
