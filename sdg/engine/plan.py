"""Planning is pure: leaves + pipelines + scale factor in, an immutable plan of units out.

A unit of work is one input row (a skill seed, or a knowledge chunk x seed pair) with a share of the
scale factor to generate. The scale factor means the same everywhere: the samples to aim for per input
row, split into units of at most `samples_per_unit` (so total target = inputs x scale exactly). Unit ids
are deterministic (leaf, input, share), so a rerun of the same plan finds the same units in the journal.
Units are produced lazily: a 100k-unit plan costs the inputs, not 100k objects.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
from dataclasses import dataclass
from typing import Any, Collection, Iterator, Mapping, Sequence

from sdg.pipeline.inputs import input_rows, pipeline_kind
from sdg.pipeline.types import Row
from sdg.taxonomy.leaves import Leaf

# A unit's cost in "one reply" units: 1 + its input text in tokens (~4 chars each) over PREFILL_PER_REPLY,
# the prompt tokens a server reads in the time it writes one reply (prefill is ~10x faster per token
# than decoding a 256-token reply). Only the order of units depends on it, never what they produce.
PREFILL_PER_REPLY = 2560
MIN_SPAN = 0.5  # the heaviest leaf's units are spread over at least the first half of the order


def shares(scale: int, per_unit: int) -> list[int]:
    """Split `scale` samples into units of at most `per_unit`: 12 by 5 -> [5, 5, 2]."""
    full, rest = divmod(scale, per_unit)
    return [per_unit] * full + ([rest] if rest else [])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Unit:
    """One unit of work: an input row and how many samples to aim for."""

    id: str
    leaf_id: str
    input_index: int
    share_index: int
    target: int
    seed: int
    row: Row


@dataclass(frozen=True)
class LeafPlan:
    leaf: Leaf
    kind: str
    inputs: tuple[Row, ...]
    shares: tuple[int, ...]
    fingerprint: str  # the leaf's generation input (seeds, chunks)
    # The order its planned inputs are sent in (indices into `inputs`): rows whose prompts share a long prefix
    # go back to back (a knowledge leaf: all chunks with one seed example, then the next), so a server's prefix
    # cache (llama.cpp slots, vLLM automatic prefix caching) serves the shared part. () = input order.
    send_order: tuple[int, ...] = ()

    @property
    def units(self) -> int:
        return len(self.inputs) * len(self.shares)

    @property
    def target_samples(self) -> int:
        return len(self.inputs) * sum(self.shares)

    def iter_units(self, seed: int) -> Iterator[Unit]:
        for i, row in enumerate(self.inputs):
            for j, target in enumerate(self.shares):
                yield self._unit(i, j, target, seed)

    @functools.cached_property
    def _id_prefix(self) -> bytes:
        """`_digest(leaf id, fingerprint, i, j, target)`'s JSON text up to the numbers: a unit id is then one
        sha256 of that plus three integers (the same text json.dumps makes of the five, so the same ids)."""
        return json.dumps([self.leaf.id, self.fingerprint]).encode()[:-1]

    def _unit(self, i: int, j: int, target: int, seed: int) -> Unit:
        uid = hashlib.sha256(b"%b, %d, %d, %d]" % (self._id_prefix, i, j, target)).hexdigest()[:24]
        return Unit(uid, self.leaf.id, i, j, target, (seed * 1_000_003 + int(uid[:8], 16)) % 2**31,
                    {**self.inputs[i], "target_samples": target})

    def journaled_units(self, seed: int, ids: Collection[str]) -> Iterator[Unit]:
        """Every unit whose id is in `ids` (a journal's), in the leaf's order: planned units, then top-up
        rounds as long as a round has one of them (top-ups go round by round)."""
        for unit in self.iter_units(seed):
            if unit.id in ids:
                yield unit
        index = self.units
        while self.inputs:
            found = [u for u in (self.unit_at(index + k, seed) for k in range(len(self.inputs))) if u.id in ids]
            if not found:
                return
            yield from found
            index += len(self.inputs)

    def send_unit(self, index: int, seed: int) -> Unit:
        """The `index`-th unit to send: planned units in `send_order`, then top-ups (as unit_at)."""
        if index < self.units and self.send_order:
            k, j = divmod(index, len(self.shares))
            return self._unit(self.send_order[k], j, self.shares[j], seed)
        return self.unit_at(index, seed)

    def share(self, share_index: int) -> int:
        """Samples a unit with this share index targets in the plan: its planned share, or (a top-up round's
        index, past `shares`) the largest share."""
        return self.shares[share_index] if share_index < len(self.shares) else max(self.shares)

    def unit_at(self, index: int, seed: int) -> Unit:
        """The leaf's `index`-th unit: the planned ones (iter_units order), then top-up units, asked for when
        the leaf is still short once its planned units ran (leaf-level targets): round r gives every input a
        unit of the largest share, with share index len(shares) + r, so its id is new and stable."""
        if index < self.units:
            i, j = divmod(index, len(self.shares))
            return self._unit(i, j, self.shares[j], seed)
        r, i = divmod(index - self.units, len(self.inputs))
        return self._unit(i, len(self.shares) + r, self.share(len(self.shares) + r), seed)


@dataclass(frozen=True)
class Plan:
    leaves: tuple[LeafPlan, ...]
    scale: int
    samples_per_unit: int
    seed: int

    @property
    def units(self) -> int:
        return sum(lp.units for lp in self.leaves)

    @property
    def target_samples(self) -> int:
        return sum(lp.target_samples for lp in self.leaves)

    def iter_units(self) -> Iterator[Unit]:
        """Every unit once, leaves interleaved so each makes progress from the start, heavy leaves early.

        Leaf L's k-th (from 0) of n units gets the position key k / n * span(L): every leaf starts at once,
        light leaves are spread
        over the whole run, heavier ones (long documents in their prompts) over its first part, so the
        run ends on short units and the teacher is not left with a few long ones at the end (the
        drain, when fewer units remain than it has slots). A lazy merge: memory is one unit per leaf.
        """
        weights = [leaf_weight(lp) for lp in self.leaves]
        lightest = min(weights, default=1.0)
        heap: list[tuple[float, int, int, int, Iterator[Unit], Unit]] = []
        for i, (lp, w) in enumerate(zip(self.leaves, weights)):
            it = lp.iter_units(self.seed)
            first = next(it, None)
            if first is not None:
                span = max(MIN_SPAN, lightest / w)
                heap.append((0.0, i, 0, lp.units, it, first))
        heapq.heapify(heap)
        while heap:
            _key, i, k, n, it, unit = heap[0]
            yield unit
            nxt = next(it, None)
            if nxt is None:
                heapq.heappop(heap)
            else:
                span = max(MIN_SPAN, lightest / weights[i])
                heapq.heapreplace(heap, ((k + 1) / n * span, i, k + 1, n, it, nxt))


# The input columns that open a prompt before the row's own part (the knowledge prompt: the seed example's
# passage and questions come before the new passage), i.e. what rows sent back to back should share.
PREFIX_COLUMNS = ("icl_document", "icl_query_1", "icl_query_2", "icl_query_3")


def send_order(rows: Sequence[Row]) -> tuple[int, ...]:
    """Input indices grouped by their prompt prefix (first appearance order), or () when no two rows share one."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        key = json.dumps([row.get(c) for c in PREFIX_COLUMNS], default=str)
        groups.setdefault(key, []).append(i)
    if len(groups) == len(rows) or len(groups) <= 1:
        return ()
    return tuple(i for idx in groups.values() for i in idx)


def leaf_weight(lp: LeafPlan) -> float:
    """A leaf's mean unit cost in replies (see PREFILL_PER_REPLY): 1 + its rows' text tokens / 2560."""
    if not lp.inputs:
        return 1.0
    chars = sum(_text_chars(row) for row in lp.inputs) / len(lp.inputs)
    return 1.0 + chars / 4 / PREFILL_PER_REPLY


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_text_chars(v) for v in value)
    return 0


def make_plan(leaves: Sequence[Leaf], *, scale: int, samples_per_unit: int = 5, seed: int = 42) -> Plan:
    """The plan for `leaves` (knowledge leaves must carry their chunks)."""
    if scale < 1:
        raise ValueError("sdg_scale_factor must be >= 1")
    if samples_per_unit < 1:
        raise ValueError("samples_per_unit must be >= 1")
    per_leaf = []
    for leaf in leaves:
        rows = input_rows(leaf)
        fp = _digest(rows)
        per_leaf.append(LeafPlan(leaf, pipeline_kind(leaf), tuple(rows), tuple(shares(scale, samples_per_unit)), fp,
                                 send_order(rows)))
    return Plan(tuple(per_leaf), scale, samples_per_unit, seed)


def run_fingerprint(plan: Plan, pipeline_fingerprints: Mapping[str, str], teacher: Mapping[str, Any]) -> str:
    """What must not change between a run and its resume: leaves, pipelines, prompts, teacher, scale."""
    return _digest([lp.fingerprint for lp in plan.leaves], dict(pipeline_fingerprints), dict(teacher),
                   plan.scale, plan.samples_per_unit, plan.seed)[:32]
