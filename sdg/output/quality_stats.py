"""Streaming quality statistics for the quality report: fed one unit / row at a time, bounded memory.

`QualityStats` sees every journaled unit (`unit`), every row of the training data (`kept`) and every row
a judge, a filter or the run-wide quality stage dropped (`dropped`), and sums up, per leaf:

- `judge_scores`: {judge column: {score: rows}} over kept AND dropped rows (columns named `judge_*`
  holding an integer score);
- `lengths`: question and response lengths of the kept rows, in words (whitespace-separated): count,
  mean, p50, p90, max, and a histogram over the fixed bins `LENGTH_EDGES`;
- `distinct`: distinct-1 / distinct-2 of the kept responses (unique n-grams / all n-grams);
- `samples`: the first few kept rows and dropped rows (with the reason), text cut to `SAMPLE_CHARS`;

and, for the whole run, a throughput `timeline` of at most `TIMELINE_POINTS` points.

Memory per leaf is bounded whatever the number of rows: lengths are counted per distinct word count,
distinct-n keeps at most `DISTINCT_K` 64-bit n-gram hashes per n (the K-minimum-values sketch: exact
while a leaf has fewer than K distinct n-grams, about 1/sqrt(K) = 1.6% relative error above), samples
keep N rows, and the timeline keeps at most `TIMELINE_POINTS` time buckets (widths double as needed).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Any, Mapping

LENGTH_EDGES = (0, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000)
"""Histogram bins in words: bin i counts lengths in [edges[i], edges[i+1]); the last bin is edges[-1] and up."""
LENGTH_COLUMNS = ("question", "response")
SAMPLE_COLUMNS = ("question", "response", "context")  # plus every judge_* column
JUDGE_PREFIX = "judge_"
SAMPLE_CHARS = 1000
DISTINCT_K = 8192
TIMELINE_POINTS = 100
_BASE_BUCKET_S = 2.0 ** -6  # a power of two, so doubling a bucket merges whole buckets exactly
_HASH_SPACE = float(2 ** 64)


def _words(text: Any) -> list[str]:
    if text is None:
        return []
    return (text if isinstance(text, str) else str(text)).split()


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _score(value: Any) -> int | None:
    """A judge column's integer score; anything else (None, text, a fraction, a bool) is no score."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _cut(value: Any) -> Any:
    """A sample's cell: numbers as they are, text cut to SAMPLE_CHARS (with an ellipsis), others as text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


def _sample(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _cut(row[k]) for k in SAMPLE_COLUMNS if k in row}
    out.update({k: _cut(v) for k, v in row.items() if isinstance(k, str) and k.startswith(JUDGE_PREFIX)})
    return out


class _Lengths:
    """Counts per distinct length: exact percentiles in memory bounded by the number of distinct lengths."""

    def __init__(self) -> None:
        self.by_length: dict[int, int] = {}
        self.count = 0
        self.total = 0

    def add(self, n: int) -> None:
        self.by_length[n] = self.by_length.get(n, 0) + 1
        self.count += 1
        self.total += n

    def _percentile(self, q: float) -> int:
        """Nearest rank: the smallest length with at least q of the rows at or below it."""
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for n in sorted(self.by_length):
            seen += self.by_length[n]
            if seen >= rank:
                return n
        return 0  # pragma: no cover - rank <= count

    def to_json(self) -> dict[str, Any]:
        counts = [0] * len(LENGTH_EDGES)
        for n, c in self.by_length.items():
            i = next(i for i in range(len(LENGTH_EDGES) - 1, -1, -1) if n >= LENGTH_EDGES[i])
            counts[i] += c
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p90": None, "max": None,
                    "histogram": {"edges": list(LENGTH_EDGES), "counts": counts}}
        return {"count": self.count, "mean": round(self.total / self.count, 2), "p50": self._percentile(0.5),
                "p90": self._percentile(0.9), "max": max(self.by_length),
                "histogram": {"edges": list(LENGTH_EDGES), "counts": counts}}


class _Distinct:
    """Distinct n-grams over a stream: the K smallest 64-bit hashes (K-minimum-values sketch).

    Until K distinct n-grams were seen the n-grams themselves are kept (a set of strings or word tuples: no
    hashing per n-gram, which was most of the report's cost); the K-th distinct one turns them into the sketch.
    The K smallest hashes of a set do not depend on the order they came in, so the figures are the same."""

    def __init__(self, k: int = DISTINCT_K) -> None:
        self.k = k
        self.total = 0
        self._exact: set[Any] | None = set()
        self._kept: set[int] = set()
        self._heap: list[int] = []  # negated hashes: -heap[0] is the largest hash kept

    def add_all(self, grams: list[Any]) -> None:
        """Words (str) or word pairs (tuple), one occurrence each."""
        self.total += len(grams)
        if self._exact is not None:
            self._exact.update(grams)
            if len(self._exact) < self.k:
                return
            grams, self._exact = list(self._exact), None
        for gram in grams:
            self._add_hash(_hash64(gram if isinstance(gram, str) else "\x1f".join(gram)))

    def _add_hash(self, h: int) -> None:
        if h in self._kept:
            return
        if len(self._kept) < self.k:
            self._kept.add(h)
            heapq.heappush(self._heap, -h)
        elif h < -self._heap[0]:
            self._kept.discard(-heapq.heappushpop(self._heap, -h))
            self._kept.add(h)

    def distinct(self) -> float:
        if self._exact is not None:
            return float(len(self._exact))
        if len(self._kept) < self.k:
            return float(len(self._kept))
        return (self.k - 1) * _HASH_SPACE / (-self._heap[0] + 1)

    def ratio(self) -> float | None:
        return round(min(1.0, self.distinct() / self.total), 4) if self.total else None


class _Leaf:
    def __init__(self) -> None:
        self.judge: dict[str, dict[int, int]] = {}
        self.lengths = {c: _Lengths() for c in LENGTH_COLUMNS}
        self.distinct = {1: _Distinct(), 2: _Distinct()}
        self.responses = 0
        self.kept_samples: list[dict[str, Any]] = []
        self.dropped_samples: list[dict[str, Any]] = []

    def judge_scores(self, row: Mapping[str, Any]) -> None:
        for k, v in row.items():
            if isinstance(k, str) and k.startswith(JUDGE_PREFIX):
                s = _score(v)
                if s is not None:
                    col = self.judge.setdefault(k, {})
                    col[s] = col.get(s, 0) + 1


class QualityStats:
    """Per-leaf judge scores, lengths, distinct-n and samples, plus the run's throughput timeline."""

    def __init__(self, samples_per_leaf: int = 3) -> None:
        if samples_per_leaf < 0:
            raise ValueError("samples_per_leaf must be >= 0")
        self.samples_per_leaf = samples_per_leaf
        self._leaves: dict[str, _Leaf] = {}
        # timeline: bucket key (floor(t / width)) -> [units, kept, completion tokens, last t in the bucket]
        self._bucket_s = _BASE_BUCKET_S
        self._buckets: dict[int, list[float]] = {}
        self._first_t: float | None = None

    def _leaf(self, leaf_id: str) -> _Leaf:
        leaf = self._leaves.get(leaf_id)
        if leaf is None:
            leaf = self._leaves[leaf_id] = _Leaf()
        return leaf

    # ---- feeding ----------------------------------------------------------------------------------

    def unit(self, leaf_id: str, t: float, kept: int, prompt_tokens: int, completion_tokens: int) -> None:
        """One journaled unit of `leaf_id` finished at unix time `t` with `kept` rows."""
        self._leaf(leaf_id)
        t = float(t)
        self._first_t = t if self._first_t is None else min(self._first_t, t)
        key = math.floor(t / self._bucket_s)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [0, 0, 0, t]
        b[0] += 1
        b[1] += kept
        b[2] += completion_tokens
        b[3] = max(b[3], t)
        while len(self._buckets) > TIMELINE_POINTS:
            self._coarsen()

    def _coarsen(self) -> None:
        """Double the bucket width: buckets 2k and 2k+1 become bucket k."""
        self._bucket_s *= 2
        merged: dict[int, list[float]] = {}
        for key, (units, kept, tokens, last) in self._buckets.items():
            m = merged.get(key // 2)
            if m is None:
                merged[key // 2] = [units, kept, tokens, last]
            else:
                m[0] += units
                m[1] += kept
                m[2] += tokens
                m[3] = max(m[3], last)
        self._buckets = merged

    def kept(self, leaf_id: str, row: Mapping[str, Any]) -> None:
        """A row that is in the training data."""
        leaf = self._leaf(leaf_id)
        leaf.judge_scores(row)
        for col in LENGTH_COLUMNS:
            if col in row:
                leaf.lengths[col].add(len(_words(row.get(col))))
        words = [w.lower() for w in _words(row.get("response"))]
        if "response" in row:
            leaf.responses += 1
        leaf.distinct[1].add_all(words)
        leaf.distinct[2].add_all(list(zip(words, words[1:])))
        if len(leaf.kept_samples) < self.samples_per_leaf:
            leaf.kept_samples.append(_sample(row))

    def dropped(self, leaf_id: str, row: Mapping[str, Any], reason: str) -> None:
        """A row a judge, a filter or the quality stage dropped, and why."""
        leaf = self._leaf(leaf_id)
        leaf.judge_scores(row)
        if len(leaf.dropped_samples) < self.samples_per_leaf:
            leaf.dropped_samples.append({"reason": str(reason), "row": _sample(row)})

    # ---- results ----------------------------------------------------------------------------------

    def leaf_ids(self) -> list[str]:
        """The leaves seen so far, in the order first seen."""
        return list(self._leaves)

    def leaf(self, leaf_id: str) -> dict[str, Any]:
        """JSON-able: judge_scores, lengths, distinct and samples of one leaf (empty ones if never fed)."""
        leaf = self._leaves.get(leaf_id) or _Leaf()
        return {
            "judge_scores": {col: {str(s): n for s, n in sorted(scores.items())}
                             for col, scores in sorted(leaf.judge.items())},
            "lengths": {col: leaf.lengths[col].to_json() for col in LENGTH_COLUMNS},
            "distinct": {"distinct_1": leaf.distinct[1].ratio(), "distinct_2": leaf.distinct[2].ratio(),
                         "responses": leaf.responses, "words": leaf.distinct[1].total},
            "samples": {"kept": [dict(r) for r in leaf.kept_samples],
                        "dropped": [{"reason": d["reason"], "row": dict(d["row"])} for d in leaf.dropped_samples]},
        }

    def run(self) -> dict[str, Any]:
        """JSON-able: {"timeline": [{t_s, units, kept, completion_tokens}, ...]}, cumulative counts at the
        last unit of each time bucket, t_s in seconds since the first unit; at most TIMELINE_POINTS points."""
        points = []
        units = kept = tokens = 0
        first = self._first_t or 0.0
        for key in sorted(self._buckets):
            u, k, c, last = self._buckets[key]
            units, kept, tokens = units + int(u), kept + int(k), tokens + int(c)
            points.append({"t_s": round(last - first, 3), "units": units, "kept": kept, "completion_tokens": tokens})
        return {"timeline": points}
