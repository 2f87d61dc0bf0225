"""The run-wide quality stage: offered one row at a time, it says keep (None) or why the row goes (a Drop).

Filters, in this order, each switched by its `QualityConfig` flag: exact duplicates anywhere in the run,
copies of the row's own leaf's seeds, rows sharing n-grams with an evaluation set, near duplicates anywhere
in the run. Only kept rows enter the indexes, so the first of a group of duplicates is the one kept.

Streaming and memory-bounded: no row text is kept, only a 64-bit hash per kept row (exact duplicates), a
MinHash signature and its LSH entries per kept row (near duplicates), and the evaluation sets' n-gram hashes.
Deterministic: the same rows offered in the same order give the same decisions (stable hashes, a fixed
MinHash seed, ties broken by the earliest row).

A "row N of leaf L" in a Drop's detail is the N-th row (from 1) the stage kept for leaf L.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from sdg.output.row_fields import text
from sdg.quality.evalsets import EvalSets
from sdg.quality.near import NearDuplicates
from sdg.quality.seeds import SeedCopies
from sdg.quality.text import row_text, text_hash, words

if TYPE_CHECKING:
    from sdg.config.schema import QualityConfig

__all__ = ["REASONS", "Drop", "QualityStage", "row_text"]

REASONS = ("exact_duplicate", "near_duplicate", "seed_copy", "contaminated")
_ROW_BITS = 40  # a kept row's ref: leaf number << 40 | its row number in the leaf


@dataclass(frozen=True)
class Drop:
    reason: str  # one of REASONS
    detail: str  # short, for people: "same as row 12 of leaf L", "similarity 0.83 to seed 2", ...


class QualityStage:
    """Decides, row by row, what a run keeps. `contamination`: evaluation set name -> rows dropped for it.

    `seeds`: leaf id -> that leaf's seed example texts (question + answer of each, joined). Evaluation sets
    (`cfg.decontaminate`) are loaded here; a missing, unreadable or malformed one raises ConfigError naming
    the file (and line).
    """

    def __init__(self, cfg: QualityConfig, *, seeds: Mapping[str, Sequence[str]] = {}) -> None:
        self.enabled = bool(cfg.enabled)
        on = self.enabled
        self._exact: dict[int, int] | None = {} if on and cfg.exact_dedup else None
        self._seeds = SeedCopies(seeds, float(cfg.seed_copy_threshold)) if on and cfg.seed_copy else None
        paths = [str(p) for p in cfg.decontaminate] if on else []
        self._evals = (EvalSets(paths, int(cfg.decontaminate_ngram), int(cfg.decontaminate_min_overlap))
                       if paths else None)
        self._ngram = int(cfg.decontaminate_ngram)
        self._near = (NearDuplicates(float(cfg.near_dedup_threshold), int(cfg.near_dedup_shingle),
                                     int(cfg.near_dedup_num_perm)) if on and cfg.near_dedup else None)
        self.contamination: dict[str, int] = dict.fromkeys(self._evals.names, 0) if self._evals else {}
        self._leaves: dict[str, int] = {}  # leaf id -> its number in refs
        self._leaf_ids: list[str] = []
        self._kept = array("Q")  # per leaf number: rows kept so far

    def offer(self, leaf_id: str, row: Mapping[str, Any]) -> Drop | None:
        """None: keep the row (and remember it for later rows); a Drop: the row goes, and why."""
        if not self.enabled:
            return None
        question = words(text(row, "question"))
        both = question + words(text(row, "response"))
        exact, seeds, evals, near = self._exact, self._seeds, self._evals, self._near
        h = 0
        if exact is not None:
            h = text_hash(both)
            ref = exact.get(h)
            if ref is not None:
                return Drop("exact_duplicate", f"same as {self._name(ref)}")
        if seeds is not None:
            copy = seeds.check(leaf_id, len(question), both)
            if copy is not None:
                what = "question similarity" if copy.question_only else "similarity"
                return Drop("seed_copy", f"{what} {copy.similarity:.2f} to seed {copy.seed + 1}")
        if evals is not None:
            hit = evals.check(both)
            if hit is not None:
                self.contamination[hit.name] += 1
                return Drop("contaminated", f"eval set {hit.name}: {hit.shared} shared {self._ngram}-grams")
        mh = None
        if near is not None:
            mh = near.sketch(both)
            if mh is not None:
                match = near.match(mh)
                if match is not None:
                    return Drop("near_duplicate", f"similarity {match[1]:.2f} to {self._name(match[0])}")
        ref = self._keep(leaf_id)
        if exact is not None:
            exact[h] = ref
        if mh is not None:
            near.add(mh, ref)  # type: ignore[union-attr]
        return None

    def _keep(self, leaf_id: str) -> int:
        n = self._leaves.get(leaf_id)
        if n is None:
            n = self._leaves[leaf_id] = len(self._leaf_ids)
            self._leaf_ids.append(leaf_id)
            self._kept.append(0)
        self._kept[n] += 1
        return n << _ROW_BITS | self._kept[n]

    def _name(self, ref: int) -> str:
        return f"row {ref & ((1 << _ROW_BITS) - 1)} of leaf {self._leaf_ids[ref >> _ROW_BITS]}"


def leaf_seed_texts(leaf: Any) -> list[str]:
    """What a generated row of `leaf` must not copy: each seed example's question and answer (a knowledge
    leaf's: every question and answer of its seed contexts)."""
    if getattr(leaf, "kind", "") == "knowledge":
        return [f"{qa.question}\n{qa.answer}" for seed in leaf.seeds for qa in seed.qna]
    return [f"{s.question}\n{s.answer}" for s in getattr(leaf, "seeds", ())]


def stage_for(cfg: QualityConfig, leaves: Sequence[Any]) -> QualityStage | None:
    """The run's quality stage over `leaves` (typed taxonomy leaves), or None when quality.enabled is off."""
    if not cfg.enabled:
        return None
    return QualityStage(cfg, seeds={leaf.id: leaf_seed_texts(leaf) for leaf in leaves})
