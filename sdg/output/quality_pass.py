"""The finish step's one pass over a run's journals: per-leaf counts, the run-wide quality stage, the
report's statistics and the audit files of dropped rows.

Run-wide decisions (a near-duplicate across two leaves, a seed copy, an evaluation item) must be the same
whichever executor ran the units and in whatever order they finished, so they are made here, where all
rows meet, in a fixed order: leaves in plan order, units in each leaf's unit order, rows in journal order.
The pass keeps only what it dropped (unit id and row index per leaf); `JournalRows` reads a leaf's rows
again when the output writers ask and leaves those out, so a 100k-unit run never holds every row at once.

Dropped rows go to `dropped_<reason>.jsonl` in the run folder, one object per row with its leaf, unit,
reason and detail: `dropped_filtered.jsonl` (a judge or filter block of the pipeline), and one file per
quality reason (`exact_duplicate`, `near_duplicate`, `seed_copy`, `contaminated`), and
`dropped_beyond_target.jsonl`: valid rows past the leaf's target (leaf-level targets keep at most the target
per leaf, the first in unit order; units already in flight when the leaf filled up write a few more).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from sdg.config.schema import QualityConfig
from sdg.engine.journal import JournalStore
from sdg.engine.plan import LeafPlan, Plan
from sdg.output.quality_stats import QualityStats
from sdg.output.reports import LeafQuality
from sdg.quality.stage import Drop

FILTERED = "filtered"  # the audit file of rows a pipeline block (judge, filter) dropped
BEYOND_TARGET = "beyond_target"  # valid rows past the leaf's target (units in flight when it filled up)


class DroppedFiles:
    """`dropped_<reason>.jsonl`, opened on first use (a clean run writes none)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._files: dict[str, IO[str]] = {}
        self.written: dict[str, int] = {}

    def write(self, kind: str, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        f = self._files.get(kind)
        if f is None:
            f = self._files[kind] = open(self.run_dir / f"dropped_{kind}.jsonl", "w", encoding="utf-8")
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.written[kind] = self.written.get(kind, 0) + 1

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def clear_stale(self) -> None:
        """A resumed run's finish writes the files anew: last attempt's are removed first."""
        for p in self.run_dir.glob("dropped_*.jsonl"):
            p.unlink()


@dataclass
class QualityPass:
    quality: dict[str, LeafQuality]  # per leaf id, plan order
    removed: dict[str, set[tuple[str, int]]]  # leaf id -> (unit id, row index) the quality stage dropped
    stats: QualityStats
    contamination: dict[str, int] = field(default_factory=dict)  # evaluation set -> rows dropped
    dropped_files: dict[str, int] = field(default_factory=dict)  # dropped_<kind>.jsonl -> rows in it


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def run_quality_pass(plan: Plan, journals: JournalStore, cfg: QualityConfig, run_dir: Path) -> QualityPass:
    """One pass over every journaled unit in plan order (see the module docstring)."""
    from sdg.quality.stage import stage_for

    stage = stage_for(cfg, [lp.leaf for lp in plan.leaves])
    stats = QualityStats(cfg.report_samples)
    files = DroppedFiles(run_dir, cfg.keep_dropped)
    files.clear_stale()
    quality: dict[str, LeafQuality] = {}
    removed: dict[str, set[tuple[str, int]]] = {}
    try:
        for lp in plan.leaves:
            quality[lp.leaf.id], removed[lp.leaf.id] = _leaf_pass(lp, plan.seed, journals, stage, stats, files)
    finally:
        files.close()
    return QualityPass(quality, removed, stats, dict(stage.contamination) if stage else {}, dict(files.written))


def _leaf_pass(lp: LeafPlan, seed: int, journals: JournalStore, stage: Any, stats: QualityStats,
               files: DroppedFiles) -> tuple[LeafQuality, set[tuple[str, int]]]:
    leaf_id = lp.leaf.id
    records = {r.unit: r for r in journals.load(lp.leaf.name)}
    q = LeafQuality(kind=lp.leaf.kind, units=lp.units, target=lp.target_samples)
    gone: set[tuple[str, int]] = set()
    for unit in lp.journaled_units(seed, records):
        rec = records[unit.id]
        q.topup_units += int(unit.share_index >= len(lp.shares))
        q.generated += rec.generated
        q.requests += rec.requests
        q.prompt_tokens += rec.prompt_tokens
        q.completion_tokens += rec.completion_tokens
        for reason, n in rec.dropped.items():
            q.dropped[reason] = q.dropped.get(reason, 0) + n
        if rec.status != "done":
            q.failed_units += 1
            continue
        for reason, row in rec.dropped_rows:
            stats.dropped(leaf_id, row, reason)
            files.write(FILTERED, {"leaf": leaf_id, "leaf_name": lp.leaf.name, "unit": unit.id, "reason": reason,
                                   "row": row})
        kept_here = 0
        for i, row in enumerate(rec.rows):
            q.pipeline_kept += 1
            drop = stage.offer(leaf_id, row) if stage is not None else None
            if drop is None and q.kept + kept_here >= q.target:  # the leaf has its target: in unit order
                drop = Drop(BEYOND_TARGET, f"leaf {leaf_id} already has its {q.target} samples")
            if drop is None:
                kept_here += 1
                stats.kept(leaf_id, row)
                continue
            gone.add((unit.id, i))
            q.quality_dropped[drop.reason] = q.quality_dropped.get(drop.reason, 0) + 1
            stats.dropped(leaf_id, row, drop.reason)
            files.write(drop.reason, {"leaf": leaf_id, "leaf_name": lp.leaf.name, "unit": unit.id,
                                      "reason": drop.reason, "detail": drop.detail, "row": _public(row)})
        q.kept += kept_here
        stats.unit(leaf_id, rec.t, kept_here, rec.prompt_tokens, rec.completion_tokens)
    return q, gone


class JournalRows(Mapping[str, list[dict]]):
    """Kept rows by leaf id, read from the leaf's journals when asked for, without what the quality pass
    dropped: the output writers take one leaf at a time."""

    def __init__(self, plan: Plan, journals: JournalStore, removed: Mapping[str, set[tuple[str, int]]]) -> None:
        self._plan, self._journals, self._removed = plan, journals, removed
        self._leaves = {lp.leaf.id: lp for lp in plan.leaves}

    def __getitem__(self, leaf_id: str) -> list[dict]:
        lp = self._leaves[leaf_id]
        gone = self._removed.get(leaf_id, set())
        records = {r.unit: r for r in self._journals.load(lp.leaf.name)}
        out: list[dict] = []
        for unit in lp.journaled_units(self._plan.seed, records):
            rec = records[unit.id]
            if rec.status != "done":
                continue
            out.extend({**row, "_unit_id": unit.id} for i, row in enumerate(rec.rows) if (unit.id, i) not in gone)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)
