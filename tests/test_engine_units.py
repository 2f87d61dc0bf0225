"""Planning, journals and run folders: the pieces that make resume exact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sdg.engine.journal import JournalError, JournalStore, read_journal, record_of
from sdg.engine.plan import make_plan, shares
from sdg.engine.progress import Progress
from sdg.engine.rundir import RunConflict, RunState, choose_run_dir, write_state
from sdg.engine.runner import ErrorBreaker, TeacherBroken, run_plan
from sdg.pipeline.types import RequestError, UnitResult
from sdg.taxonomy.chunking import Chunk
from sdg.taxonomy.leaves import FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf, KnowledgeSeed, QnA, SkillSeed


def _skill(name: str, n: int = 5, grounded: bool = False):
    cls = GroundedSkillLeaf if grounded else FreeformSkillLeaf
    seeds = tuple(SkillSeed(f"q{i} {name}", f"a{i}", "ctx" if grounded else None) for i in range(n))
    return cls(id=f"compositional_skills->{name}", name=f"cs_{name}", path=f"compositional_skills/{name}/qna.yaml",
               created_by="t", version=3, task_description="t", seeds=seeds)


def _knowledge(chunks: int = 2, chunk_text: str = "chunk"):
    seeds = tuple(KnowledgeSeed(f"c{i}", tuple(QnA(f"q{j}", f"a{j}") for j in range(3))) for i in range(5))
    return KnowledgeLeaf(id="knowledge->k", name="k", path="knowledge/k/qna.yaml", created_by="t", version=3,
                         domain="d", document_outline="o", seeds=seeds,
                         chunks=tuple(Chunk(i, f"{chunk_text} {i}", 3, "doc.md") for i in range(chunks)))


def test_shares_and_scale_factor_formula() -> None:
    assert shares(12, 5) == [5, 5, 2] and shares(5, 5) == [5] and shares(1, 5) == [1]
    plan = make_plan([_skill("a"), _skill("g", grounded=True), _knowledge(chunks=3)], scale=7, samples_per_unit=5)
    # skills: seeds x scale; knowledge: chunks x seeds x scale
    assert plan.target_samples == 5 * 7 + 5 * 7 + 3 * 5 * 7
    assert plan.units == (5 + 5 + 15) * 2
    units = list(plan.iter_units())
    assert len(units) == plan.units and len({u.id for u in units}) == plan.units
    assert sum(u.target for u in units) == plan.target_samples
    assert {u.row["leaf_node_type"] for u in units} == {"freeform_skill", "grounded_skill", "knowledge"}
    # every leaf starts at once: the first three units come from three different leaves
    assert len({u.leaf_id for u in units[:3]}) == 3


def test_units_of_heavy_leaves_come_early_so_the_run_ends_on_short_units() -> None:
    light = [_skill("a"), _skill("b")]
    heavy = _knowledge(chunks=6, chunk_text="A long passage of the document. " * 800)  # ~6k tokens per chunk
    plan = make_plan([*light, heavy], scale=10, samples_per_unit=5)
    units = list(plan.iter_units())
    assert len(units) == plan.units and len({u.id for u in units}) == plan.units
    assert len({u.leaf_id for u in units[:3]}) == 3
    kinds = [u.row["leaf_node_type"] for u in units]
    # 60 knowledge units (long prompts) over the first half of the keys, 2 x 10 light ones over all of it:
    # the light units after the heavy ones' last key end the run
    assert set(kinds[-8:]) == {"freeform_skill"} and kinds.count("knowledge") == 60
    # with equal weights the leaves stay interleaved to the end (no leaf is left for last)
    even = list(make_plan([_skill("a"), _skill("b")], scale=10, samples_per_unit=5).iter_units())
    assert all(even[i].leaf_id != even[i + 1].leaf_id for i in range(0, len(even), 2))


def test_unit_ids_are_stable_and_follow_content() -> None:
    a = [u.id for u in make_plan([_skill("a")], scale=3).iter_units()]
    assert a == [u.id for u in make_plan([_skill("a")], scale=3).iter_units()]
    changed = _skill("a")
    changed = FreeformSkillLeaf(**{**changed.__dict__, "seeds": changed.seeds[:4]})
    assert set(a) != set(u.id for u in make_plan([changed], scale=3).iter_units())


def test_unit_ids_keep_their_documented_digest() -> None:
    """A unit id is sha256 of the JSON of (leaf id, leaf fingerprint, input, share index, target): journals of
    earlier runs name units so, and a resume must find them (odd leaf ids included)."""
    import hashlib

    for name in ("a", 'q"uo\\te ü', "日本"):
        plan = make_plan([_skill(name)], scale=7, samples_per_unit=5)
        lp = plan.leaves[0]
        for u in list(plan.iter_units()) + [lp.unit_at(lp.units + 3, plan.seed)]:
            text = json.dumps([lp.leaf.id, lp.fingerprint, u.input_index, u.share_index, u.target], sort_keys=True)
            assert u.id == hashlib.sha256(text.encode()).hexdigest()[:24]


def test_journal_torn_tail_is_cut_and_last_record_wins(tmp_path: Path) -> None:
    store = JournalStore(tmp_path)
    store.append("leaf", record_of("u1", UnitResult(rows=[{"question": "q"}], generated=1, requests=1)))
    store.append("leaf", record_of("u2", UnitResult(errors=[RequestError("gen", "connection", "refused")], requests=1)))
    store.append("leaf", record_of("u2", UnitResult(rows=[{"question": "q2"}], generated=1, requests=1)))
    store.close()
    path = store.path("leaf")
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"unit": "u3", "status": "do')  # kill -9 mid-write
    records = {r.unit: r for r in read_journal(path)}
    assert set(records) == {"u1", "u2"} and records["u2"].status == "done"
    assert path.read_text().endswith("\n") and "u3" not in path.read_text()
    path.write_text(path.read_text() + "garbage\n" + json.dumps(record_of("u4", UnitResult())) + "\n")
    # A bad line inside the file (a torn fragment another attempt appended after) is skipped and named;
    # the records before and after it survive (losing them would throw away finished units).
    problems: list[str] = []
    records = {r.unit: r for r in read_journal(path, problems=problems)}
    assert set(records) == {"u1", "u2", "u4"}
    assert len(problems) == 1 and "line 4" in problems[0] and str(path) in problems[0]


def test_requeued_writer_repairs_its_own_torn_tail_before_appending(tmp_path: Path) -> None:
    """A requeued attempt on the same node appends to its own per-node journal: the torn last line of the
    killed attempt is cut first, so it never becomes a bad line in the middle of the file."""
    store = JournalStore(tmp_path, writer="node1")
    store.append("leaf", record_of("u1", UnitResult(requests=1)))
    store.close()
    with open(store.path("leaf"), "a", encoding="utf-8") as f:
        f.write('{"unit": "u2", "sta')  # killed mid-write
    again = JournalStore(tmp_path, writer="node1")  # the next attempt, same node, before any read
    again.append("leaf", record_of("u3", UnitResult(requests=1)))
    again.close()
    again.check()
    problems: list[str] = []
    assert {r.unit for r in read_journal(again.path("leaf"), problems=problems)} == {"u1", "u3"}
    assert problems == [] and again.path("leaf").read_text().count("\n") == 2


def test_full_disk_is_a_clear_journal_error_and_keeps_other_leaves(tmp_path: Path) -> None:
    """/dev/full as a leaf's journal file: ENOSPC becomes one JournalError naming the path; the journal of
    another leaf written before keeps its record, and closing never replaces the error."""
    store = JournalStore(tmp_path)
    store.append("ok", record_of("u1", UnitResult(requests=1)))
    (tmp_path / "full.jsonl").symlink_to("/dev/full")
    with pytest.raises(JournalError, match=r"full\.jsonl.*No space left"):
        for i in range(200):  # buffered: the error comes at a flush
            store.append("full", record_of(f"f{i}", UnitResult(requests=1)))
    store.close()  # never raises while an error unwinds
    assert [r.unit for r in read_journal(tmp_path / "ok.jsonl")] == ["u1"]


def test_journal_keeps_shared_columns_once_and_reads_rows_back_unchanged(tmp_path: Path) -> None:
    doc = "A long document chunk. " * 100
    same = [{"document": doc, "icl": [{"q": "x"}], "question": f"q{i}", "n": i} for i in range(5)]
    ragged = [{"document": doc, "question": "q0"}, {"question": "q1", "document": doc}]  # key order differs
    single = [{"document": doc, "question": "q"}]
    store = JournalStore(tmp_path)
    for uid, rows in (("same", same), ("ragged", ragged), ("single", single), ("none", [])):
        store.append("leaf", record_of(uid, UnitResult(rows=rows, generated=len(rows), requests=1)))
    store.close()
    text = store.path("leaf").read_text()
    assert text.count("A long document chunk.") == 100 * (1 + 2 + 1)  # once for `same`, per row elsewhere
    records = {r.unit: r for r in read_journal(store.path("leaf"))}
    for uid, rows in (("same", same), ("ragged", ragged), ("single", single), ("none", [])):
        back = records[uid].rows
        assert list(back) == rows and [list(r) for r in back] == [list(r) for r in rows]  # values and column order


def test_failed_units_are_journaled_as_failed() -> None:
    rec = record_of("u", UnitResult(errors=[RequestError("gen", "timeout", "t")], requests=3))
    assert rec["status"] == "failed"
    assert record_of("u", UnitResult(generated=3, dropped={"filter:below_threshold": 3}, requests=2))["status"] == "done"


def test_run_dir_resume_conflict_and_fresh(tmp_path: Path) -> None:
    first = choose_run_dir(tmp_path, "fp1", {"scale": 1}, now=1_700_000_000)
    assert not first.resumed and first.path.parent == tmp_path
    write_state(first, RunState("fp1", first.stamp, "running", {"scale": 1}, started=0.0))
    again = choose_run_dir(tmp_path, "fp1", {"scale": 1})
    assert again.resumed and again.path == first.path and again.stamp == first.stamp
    with pytest.raises(RunConflict, match=r"scale \(1 -> 2\).*generate.resume=fresh"):
        choose_run_dir(tmp_path, "fp2", {"scale": 2})
    fresh = choose_run_dir(tmp_path, "fp2", {"scale": 2}, resume="fresh", now=1_700_000_000)
    assert fresh.path != first.path and not fresh.resumed
    write_state(first, RunState("fp1", first.stamp, "complete", {}, started=0.0))
    assert not choose_run_dir(tmp_path, "fp1", {"scale": 1}).resumed


class CountingPipeline:
    """A pipeline without a teacher (an instrument for engine bookkeeping): one row per unit."""

    def __init__(self, fail_every: int = 0) -> None:
        self.calls = 0
        self.fail_every = fail_every

    async def run(self, row, ctx) -> UnitResult:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail_every and self.calls % self.fail_every == 0:
            return UnitResult(errors=[RequestError("gen", "http", "503")], requests=1)
        return UnitResult(rows=[{"question": ctx.unit_id, "response": "r"}], generated=1, requests=1)


async def _no_chat(*a, **k):  # pragma: no cover - the instrument pipeline never calls the teacher
    raise AssertionError


def test_runner_skips_done_units_and_journals_each_once(tmp_path: Path) -> None:
    plan = make_plan([_skill("a"), _skill("b")], scale=4, samples_per_unit=2)
    all_ids = {u.id for u in plan.iter_units()}
    store = JournalStore(tmp_path)
    first_half = {u.id for u in list(plan.iter_units())[:7]}
    for u in plan.iter_units():
        if u.id in first_half:
            store.append("cs_a" if u.leaf_id.endswith("a") else "cs_b", record_of(u.id, UnitResult(requests=1)))
    ids = {lp.leaf.name: lp.leaf.id for lp in plan.leaves}
    done = {ids["cs_a"]: {r.unit for r in store.load("cs_a")}, ids["cs_b"]: {r.unit for r in store.load("cs_b")}}
    pipe = CountingPipeline()
    stats = asyncio.run(run_plan(plan, {"freeform_skill": pipe}, _no_chat, store, done=done, workers=3,
                                 progress=Progress(plan.units, mode="none")))
    store.close()
    assert stats.units_done == len(all_ids) - 7 and stats.units_resumed == 7 and pipe.calls == len(all_ids) - 7
    journaled = [r.unit for name in ("cs_a", "cs_b") for r in read_journal(store.path(name))]
    assert sorted(journaled) == sorted(all_ids)


def test_breaker_stops_a_broken_teacher_and_keeps_finished_units(tmp_path: Path) -> None:
    plan = make_plan([_skill("a", n=5)], scale=20, samples_per_unit=1)
    store = JournalStore(tmp_path)
    with pytest.raises(TeacherBroken, match="of the last 10 teacher requests failed"):
        asyncio.run(run_plan(plan, {"freeform_skill": CountingPipeline(fail_every=1)}, _no_chat, store, done={},
                             workers=2, progress=Progress(plan.units, mode="none"),
                             breaker=ErrorBreaker(limit=0.5, window=10)))
    store.close()
    assert 10 <= len(read_journal(store.path("cs_a"))) < plan.units
    breaker = ErrorBreaker(limit=0.5, window=10)
    for _ in range(30):  # a failure in three is a flaky teacher, not a broken one
        breaker.observe(UnitResult(requests=3, errors=[RequestError("g", "http", "503")]))
