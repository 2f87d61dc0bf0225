"""Leaf-level targets (sdg/engine/leaf_targets.py): extras count toward the leaf, a full leaf sends nothing
more, a leaf short after its filters gets top-ups within pipeline.max_overgeneration, and a resume reaches
the same units and the same kept count. The scheduler is pure: these drive it with replies that are a
function of the unit, one unit at a time (as one worker would), then a real run over HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from sdg.engine.leaf_targets import LeafScheduler, PlannedUnits, scheduler_for
from sdg.engine.plan import LeafPlan, Plan, Unit
from sdg.pipeline.inputs import LEAF_NEED


def _plan(inputs: int, shares: tuple[int, ...], leaves: int = 1) -> Plan:
    lps = tuple(LeafPlan(SimpleNamespace(id=f"leaf{k}", name=f"leaf{k}", kind="freeform_skill"), "freeform_skill",
                         tuple({"seed_question": f"q{k}-{i}"} for i in range(inputs)), shares, f"fp{k}")
                for k in range(leaves))
    return Plan(lps, sum(shares), max(shares), 7)


def _drive(sched: LeafScheduler, rows_for: Callable[[Unit], int], *, stop_after: int | None = None,
           in_flight: int = 1) -> list[Unit]:
    """Take and finish units like `in_flight` workers would (oldest finishes first); the units sent."""
    sent: list[Unit] = []
    running: list[Unit] = []
    while True:
        while len(running) < in_flight and (unit := sched.take()) is not None:
            running.append(unit)
            sent.append(unit)
        if not running:
            assert sched.finished
            return sent
        unit = running.pop(0)
        n = min(rows_for(unit), unit.row[LEAF_NEED])  # a unit keeps at most what its leaf needs
        sched.finish(unit, [{"question": f"{unit.id}-{k}", "response": "r"} for k in range(n)], False)
        if stop_after is not None and len(sent) >= stop_after and not running:
            return sent


def test_extras_count_toward_the_leaf_and_a_full_leaf_sends_nothing_more() -> None:
    plan = _plan(5, (2,))  # target 10 in 5 units of 2
    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: 4, in_flight=2)  # every reply holds 4 usable samples, twice what was asked
    led = sched.leaves[0]
    # 2 units first (a quarter of 5, rounded up); after the first reply (yield 2 per sample asked) a third, which
    # may keep the 6 still missing; once the second is back the in-flight third covers the rest: 2 never go
    assert len(sent) == 3 and led.not_needed == 2 and led.topups == 0
    assert [u.row[LEAF_NEED] for u in sent] == [10, 10, 6]
    assert led.kept == 12  # 2 past the target (the third was in flight): finish keeps the first 10 in unit order


def test_without_extras_every_planned_unit_runs_and_nothing_more() -> None:
    plan = _plan(5, (2,))
    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: u.target, in_flight=3)
    assert len(sent) == 5 and sched.leaves[0].kept == 10 and sched.leaves[0].topups == 0


def test_a_unit_asks_for_what_its_leaf_still_needs() -> None:
    """Scale 1 plans a unit of 1 per seed; asking each for 1 paid a whole prompt per sample. A unit asks for
    enough to keep what its leaf still needs beyond its units in flight, at the yield so far, within
    samples_per_unit."""
    plan = Plan(_plan(5, (1,)).leaves, 1, 5, 7)  # target 5 in 5 units of 1, up to 5 samples a prompt
    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: u.target)  # the model writes what it is asked for
    assert [u.target for u in sent] == [5] and sched.leaves[0].kept == 5 and sched.leaves[0].not_needed == 4

    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: (3 * u.target + 4) // 5)  # filters keep 3 of 5 (rounded up)
    led = sched.leaves[0]
    # then enough for the 2 still needed at the yield seen (3 of 5): 4 in one prompt, not 2 in each of two
    assert [u.target for u in sent] == [5, 4] and led.kept == 5

    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: 1)  # one of whatever is asked passes: the ask stays within samples_per_unit
    assert [u.target for u in sent[:2]] == [5, 5] and sched.leaves[0].kept == 5

    sched = LeafScheduler(plan, {}, max_overgeneration=3.0)
    sent = _drive(sched, lambda u: 0, in_flight=4)  # nothing ever passes
    led = sched.leaves[0]
    # the budget counts plan shares (1 a unit here), not samples asked: 15 units, not 3 asking for 5; once a
    # finished unit kept nothing, each asks for its share only, so a hopeless leaf costs what its plan does
    assert len(sent) == 15 and led.spent == 15 and led.topups == 10
    assert [u.target for u in sent[:4]] == [5, 1, 1, 1] and led.asked == 5 + 14


def test_a_pipeline_with_a_long_prompt_asks_for_more_in_one() -> None:
    """A pipeline whose generation block asks for more per call (the simple knowledge one: its prompt carries a
    document chunk) lets a unit ask for that many, so a low yield is made up in one prompt, not in several."""
    from sdg.pipeline.loader import load_pipeline

    assert load_pipeline("simple", "knowledge").samples_per_prompt == 10
    assert load_pipeline("simple", "freeform_skill").samples_per_prompt == 5
    plan = Plan(_plan(5, (1,)).leaves, 1, 5, 7)  # target 5, samples_per_unit 5
    half = lambda u: u.target // 2  # noqa: E731 - the filters keep half of what is asked (rounded down)
    sent = _drive(LeafScheduler(plan, {}), half)
    assert [u.target for u in sent] == [5, 5, 3]
    sched = LeafScheduler(plan, {}, ask_caps={"freeform_skill": 10})
    sent = _drive(sched, half)
    assert [u.target for u in sent] == [5, 8] and sched.leaves[0].kept == 5  # 3 needed at 2 of 5: 8 in one prompt


def test_one_low_reply_does_not_send_a_whole_wave() -> None:
    """A leaf's yield after one reply is drawn toward the other leaves' by one prompt's worth of asks: a first
    reply that kept 1 of 5 (a truncated reply, a run of copies) where the other leaf keeps all it asks does not
    send every remaining unit at once, sized from that one reply (5 in flight at 1 in 5 for the 9 missing)."""
    plan = Plan(_plan(5, (2,), leaves=2).leaves, 2, 5, 7)  # two leaves, target 10 each, up to 5 a prompt
    sched = LeafScheduler(plan, {})
    running = []
    while (unit := sched.take()) is not None:
        running.append(unit)
    assert [(u.leaf_id, u.target) for u in running] == [("leaf0", 5), ("leaf1", 5)] * 2  # first waves
    for unit in [u for u in running if u.leaf_id == "leaf0"]:  # the other leaf keeps all it asked for
        sched.finish(unit, [{"question": f"{unit.id}-{k}"} for k in range(unit.target)], False)
    first = next(u for u in running if u.leaf_id == "leaf1")
    sched.finish(first, [{"question": "only one"}], False)
    more = []
    while (unit := sched.take()) is not None:
        more.append(unit)
    # (1 + 5 x 1.0) / (5 + 5) = 0.6 a sample: with the unit still in flight, 2 more cover the 9 missing
    assert [u.leaf_id for u in more] == ["leaf1", "leaf1"] and sched.leaves[1].need == 9
    assert sched.leaves[1].not_needed == 0 and len(sched.leaves[1].in_flight) == 3


def test_a_leaf_that_kept_nothing_yet_sends_a_first_wave_while_others_have_work() -> None:
    """A leaf whose finished units kept nothing asks for its plan share a unit; while other leaves have units to
    send it keeps at most a first wave in flight (a quarter of its units), as before any yield is known: its
    next reply may say what it keeps. It fires the rest only into places nothing else takes."""
    plan = Plan(_plan(8, (2,), leaves=3).leaves, 2, 5, 7)  # 3 leaves, target 16 each in 8 units of 2
    sched = LeafScheduler(plan, {})
    running = [sched.take() for _ in range(6)]  # first waves: 2 units a leaf
    assert [u.leaf_id for u in running if u] == ["leaf0", "leaf1", "leaf2"] * 2
    for unit in running[0::3]:  # leaf0 keeps all it asked for
        sched.finish(unit, [{"question": f"{unit.id}-{k}"} for k in range(unit.target)], False)
    sched.finish(running[1], [], False)  # leaf1's first reply: nothing kept
    more = [sched.take() for _ in range(6)]
    assert [u.leaf_id for u in more if u] == ["leaf0", "leaf1", "leaf2", "leaf0", "leaf2", "leaf2"]
    assert [u.target for u in more if u and u.leaf_id == "leaf1"] == [2]  # its share
    assert len(sched.leaves[1].in_flight) == 2
    assert (last := sched.take()) is not None and last.leaf_id == "leaf1"  # a place nothing else takes


def test_a_unit_given_back_is_asked_again_and_budgeted_once() -> None:
    """A lost node's unit goes back with its ask as its target: taken again it asks what the leaf then needs,
    and the budget counts its plan share once, not its old ask."""
    plan = Plan(_plan(5, (1,)).leaves, 1, 5, 7)
    sched = LeafScheduler(plan, {})
    unit = sched.take()
    assert unit is not None and unit.target == 5 and sched.leaves[0].spent == 1
    sched.give_back(unit)
    assert sched.leaves[0].spent == 0 and sched.leaves[0].asked == 0
    again = sched.take()
    assert again is not None and again.id == unit.id and again.target == 5
    assert sched.leaves[0].spent == 1 and sched.leaves[0].asked == 5


def test_first_waves_go_first_and_spare_places_are_not_left_idle() -> None:
    """Before any yield is known a leaf sends a first wave (a quarter of its units) while other leaves have
    units to send; when every leaf is at that cap and the engine still has a free place (take() is called),
    a capped leaf sends anyway: a teacher with room to spare is not kept waiting for yield figures."""
    plan = _plan(4, (2,), leaves=3)  # 3 leaves, each target 8 in 4 units of 2 (a first wave of 1)
    sched = LeafScheduler(plan, {})
    taken = []
    while (unit := sched.take()) is not None:
        taken.append(unit)
    assert [u.leaf_id for u in taken[:3]] == ["leaf0", "leaf1", "leaf2"]  # every leaf's first wave first
    assert len(taken) == 12 and all(sum(u.leaf_id == f"leaf{k}" for u in taken) == 4 for k in range(3))
    assert sum(u.target for u in taken) == 24  # what was asked covers the needs, not more

    sched = LeafScheduler(plan, {})
    sent = _drive(sched, lambda u: u.target, in_flight=3)  # 3 places: the first waves fill them
    assert [u.leaf_id for u in sent[:3]] == ["leaf0", "leaf1", "leaf2"] and len(sent) == 12


def test_a_leaf_short_after_its_filters_gets_top_ups_within_the_budget() -> None:
    plan = _plan(2, (2,))  # target 4 in 2 units
    sched = LeafScheduler(plan, {}, max_overgeneration=3.0)
    sent = _drive(sched, lambda u: 1)  # judges keep half of what is asked
    led = sched.leaves[0]
    assert led.kept == 4 and led.topups == 2 and len(sent) == 4
    assert all(u.share_index >= 1 for u in sent[2:])  # top-ups have ids of their own, past the plan
    assert len({u.id for u in sent}) == 4

    sched = LeafScheduler(plan, {}, max_overgeneration=2.0)
    sent = _drive(sched, lambda u: 0)  # nothing ever passes: stops at 2x the target asked, and says why
    led = sched.leaves[0]
    assert led.kept == 0 and led.spent <= 8 and len(sent) == 4
    kept, target, why = sched.shortfalls()["leaf0"]
    assert (kept, target) == (0, 4) and "max_overgeneration" in why


def test_top_ups_go_in_waves_not_one_at_a_time() -> None:
    """Once the planned units are back, a leaf far short sends several top-ups at once (as many as its yield
    says it needs, within the budget): one at a time would leave a many-slot teacher nearly idle."""
    plan = _plan(8, (4,))  # target 32 in 8 units
    sched = LeafScheduler(plan, {}, max_overgeneration=3.0)
    most_at_once = 0
    running: list[Unit] = []
    while True:
        while (unit := sched.take()) is not None:
            running.append(unit)
        if not running:
            break
        if any(sched.is_topup(u) for u in running):
            most_at_once = max(most_at_once, sum(sched.is_topup(u) for u in running))
            assert not any(not sched.is_topup(u) for u in running)  # top-ups start once the planned units are back
        unit = running.pop(0)
        sched.finish(unit, [{"question": f"{unit.id}-{k}"} for k in range(1)], False)  # a quarter of what is asked
    led = sched.leaves[0]
    assert led.topups > 4 and most_at_once >= 4, (led.topups, most_at_once)
    assert led.spent <= 3 * 32


@dataclass
class _Journal:
    """What a run journaled: done units' rows by leaf name (JournalStore.load's shape)."""

    records: dict

    def load(self, name: str) -> list:
        return [SimpleNamespace(unit=uid, status="done", rows=rows, asked=None)
                for uid, rows in self.records.get(name, {}).items()]


def test_a_resumed_run_sends_the_same_units_and_keeps_the_same_count() -> None:
    plan = _plan(6, (2, 1), leaves=2)
    rows_for = lambda u: 1 + int(u.id[:2], 16) % 3  # noqa: E731 - a reply's usable samples: a function of the unit
    whole = _drive(LeafScheduler(plan, {}), rows_for)

    first = LeafScheduler(plan, {})
    part = _drive(first, rows_for, stop_after=5)
    journal = _Journal({})
    for unit in part:
        n = min(rows_for(unit), unit.row[LEAF_NEED])
        journal.records.setdefault(plan.leaves[int(unit.leaf_id[-1])].leaf.name, {})[unit.id] = [{}] * n
    done = {lp.leaf.id: set(journal.records.get(lp.leaf.name, {})) for lp in plan.leaves}
    second = scheduler_for(plan, done, journal, max_overgeneration=3.0)
    rest = _drive(second, rows_for)
    # the same units of each leaf (the leaves' interleaving may differ), the same rows kept
    assert sorted(u.id for u in part + rest) == sorted(u.id for u in whole) and not {u.id for u in part} & {
        u.id for u in rest}
    assert [led.kept for led in second.leaves] == [lp.target_samples for lp in plan.leaves]


def test_a_resumed_leaf_knows_its_yield_from_what_units_asked() -> None:
    """A unit may ask for more than its plan share (scale 1: 5 where its share is 1), and its journal line says
    so: a resumed leaf's yield is kept per sample asked, not per plan share. Counted over the share, 2 kept of
    an ask of 5 would read as a yield of 2 and one more unit would look like enough."""
    from sdg.engine.journal import UnitRecord, read_journal, record_of
    from sdg.pipeline.types import UnitResult

    plan = Plan(_plan(8, (1,)).leaves, 1, 5, 7)  # target 8 in 8 units of 1, up to 5 samples a prompt
    first = LeafScheduler(plan, {}).take()
    assert first is not None and first.target == 5 and first.row["target_samples"] == 5
    line = record_of(first.id, UnitResult(rows=[{"question": "a"}, {"question": "b"}], requests=1), asked=first.target)
    assert line["asked"] == 5

    def resumed(asked: int | None) -> LeafScheduler:
        rec = UnitRecord(first.id, "done", tuple(line["rows"]), 2, {}, (), 1, 0, 0, asked=asked)
        journal = SimpleNamespace(load=lambda name: [rec])
        return scheduler_for(plan, {"leaf0": {first.id}}, journal, max_overgeneration=3.0)

    def taken_at_once(sched: LeafScheduler) -> list[Unit]:
        out = []
        while (unit := sched.take()) is not None:
            out.append(unit)
        return out

    now = resumed(5)
    assert now.leaves[0].done_asked == 5 and now.leaves[0].kept == 2
    units = taken_at_once(now)  # yield 0.4: the 6 still needed take several asks at once
    assert sum(u.target for u in units) * 0.4 >= 6 and len(units) >= 2
    old = resumed(None)  # an older journal: the plan share (1) is all it knows, so one unit looks like enough
    assert len(taken_at_once(old)) == 1

    import json
    import tempfile
    from pathlib import Path as _P

    with tempfile.TemporaryDirectory() as d:  # the line round-trips through a journal file
        path = _P(d) / "leaf0.jsonl"
        path.write_text(json.dumps(line) + "\n")
        assert [r.asked for r in read_journal(path)] == [5]


@pytest.mark.slow
def test_without_targets_every_pending_planned_unit_once_and_a_lost_nodes_units_first() -> None:
    """PlannedUnits (pipeline.leaf_targets=false behind the scheduler's interface, the Ray executor's feed):
    each pending planned unit once in the plan's order, its own share asked (no `_leaf_need`), nothing
    skipped or added; units given back (a lost node's) go out again before any new one."""
    plan = _plan(4, (2, 3), leaves=2)
    everything = list(plan.iter_units())
    done = {"leaf0": {everything[0].id, everything[5].id}}
    sched = PlannedUnits(plan, done)
    first = [sched.take(), sched.take(), sched.take()]
    assert not sched.finished
    sched.give_back(first[1])
    again = sched.take()
    assert again is first[1]
    assert sched.finish(first[0], [{}, {}], False) == 2 and sched.finish(again, [{}], True) == 0
    sched.finish(first[2], [{}], False)
    rest = []
    while (unit := sched.take()) is not None:
        rest.append(unit)
        assert not sched.finished
        sched.finish(unit, [{}] * unit.target, False)
    sent = [first[0], first[1], first[2], *rest]
    pending = [u for u in everything if u.id not in done.get(u.leaf_id, ())]
    assert [u.id for u in sent] == [u.id for u in pending]
    assert all(LEAF_NEED not in u.row and u.row["target_samples"] == u.target for u in sent)
    assert sched.finished and sched.drain_skipped() == [] and not any(sched.is_topup(u) for u in sent)


def test_a_real_run_keeps_its_target_with_fewer_requests(tmp_path: Path) -> None:
    """The stand-in answers every request with 5 pairs: asked for 1 (scale 1), the old rule kept 1 and dropped 4
    per unit; with leaf targets a leaf fills from its first units and sends no more."""
    from sdg.config.compose import compose_config, to_object
    from sdg.run import generate
    from sdg.taxonomy.init import init_taxonomy
    from tests.standin_teacher import DeterministicStandInTeacher

    taxonomy = init_taxonomy(tmp_path / "taxonomy").path
    results, manifests = {}, {}
    with DeterministicStandInTeacher() as url:
        for on in (True, False):
            cfg = to_object(compose_config([
                f"taxonomy.path={taxonomy}", "pipeline.sdg_scale_factor=1", "taxonomy.documents.chunk_tokens=4000",
                "teacher=endpoint", f"teacher.endpoint_url={url}", f"generate.output_dir={tmp_path / str(on)}",
                "generate.progress=none", f"pipeline.leaf_targets={str(on).lower()}", "generate.max_concurrency=1"]))
            result = generate(cfg, log=lambda m: None)
            results[on] = json.loads((result.run_dir / "quality_report.json").read_text())
            manifests[on] = json.loads((result.run_dir / "manifest.json").read_text())
    with_targets, without = results[True], results[False]
    for lid, leaf in with_targets["leaves"].items():
        old = without["leaves"][lid]
        if old["kept"] == old["target"]:  # a leaf the old rule filled: the new one fills it with fewer requests
            assert leaf["kept"] == leaf["target"], lid
            assert leaf["requests"] < old["requests"], lid
            assert not any(r.endswith("over_target") for r in leaf["dropped"]), leaf["dropped"]
    assert with_targets["run"]["requests"] < without["run"]["requests"]
    assert with_targets["run"]["kept"] >= without["run"]["kept"]
    # what each kept sample cost, in every run's manifest: the same counts, divided
    for on, m in manifests.items():
        c, y = m["counts"], m["yield_figures"]
        assert c["kept"] > 0 and y["requests_per_kept"] == round(c["requests"] / c["kept"], 3)
        assert y["kept_per_1k_tokens"] == round(1000 * c["kept"] / (c["prompt_tokens"] + c["completion_tokens"]), 3)
        assert y["kept_per_1k_completion_tokens"] == round(1000 * c["kept"] / c["completion_tokens"], 3)
        assert 0 <= y["completion_share_on_dropped"] < 1
    assert manifests[True]["yield_figures"]["kept_per_1k_tokens"] > manifests[False]["yield_figures"]["kept_per_1k_tokens"]
    assert manifests[True]["yield_figures"]["completion_share_on_dropped"] < \
        manifests[False]["yield_figures"]["completion_share_on_dropped"]
