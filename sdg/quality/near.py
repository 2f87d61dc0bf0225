"""Near duplicates: MinHash over word shingles, an LSH index for candidates, the estimated Jaccard to confirm.

Library: rensa (Rust R-MinHash and LSH), chosen over datasketch by benchmarks/quality_stage.py on the same
75-word rows, 128 permutations, 16 bands, one core of the 2-core dev machine: MinHash + LSH query + insert
about 6 us/row with rensa against about 250 us/row with datasketch (40x; datasketch's numpy MinHash alone is
about 185 us/row, so it would hold the whole stage under 4,000 rows/s), and about 2.0 KB against 8.0 KB of
memory per kept row. Both find the planted near duplicates alike (recall 0.996 against 0.988, precision 1.0).
rensa hashes tokens with a fixed FxHash and a fixed seed, so a signature is the same in every process.

LSH bands: the split of num_perm into b bands of r rows (b * r = num_perm, as rensa requires) with the
largest r whose candidate probability 1 - (1 - t^r)^b at the threshold t is still >= 0.9: few spurious
candidates, and since every candidate is confirmed by its estimated Jaccard (>= t), precision does not
depend on the bands. 128 permutations at 0.8: 16 bands of 8 (a candidate with probability 0.947 at Jaccard
0.8, 0.994 at 0.85).

Memory per kept row, about 2 KB: its 16 LSH entries (rensa, about 1.4 KB) and its signature to confirm
against (an RMinHash, about 0.6 KB at 128 permutations). No text is kept.
"""

from __future__ import annotations

from array import array
from typing import Sequence

from rensa import RMinHash, RMinHashLSH

SEED = 20240917  # fixed: the same text gives the same signature in every run
RECALL_AT_THRESHOLD = 0.9


def bands_for(threshold: float, num_perm: int) -> int:
    """Bands for `num_perm` permutations: the fewest (rows per band the most) that still make a pair at the
    threshold a candidate with probability >= RECALL_AT_THRESHOLD."""
    for b in range(1, num_perm + 1):
        if num_perm % b == 0 and 1.0 - (1.0 - threshold ** (num_perm // b)) ** b >= RECALL_AT_THRESHOLD:
            return b
    return num_perm


class NearDuplicates:
    """The kept rows' signatures and their LSH index (keys 0, 1, 2, ... in the order added); each row also
    carries the caller's `ref` (an int naming the row), returned by `match`."""

    def __init__(self, threshold: float, shingle: int, num_perm: int) -> None:
        self.threshold = threshold
        self.shingle = shingle
        self.num_perm = num_perm
        self.bands = bands_for(threshold, num_perm)
        self._lsh = RMinHashLSH(threshold, num_perm, self.bands)
        self._sigs: list[RMinHash] = []
        self._refs = array("Q")

    def sketch(self, ws: Sequence[str]) -> RMinHash | None:
        """The signature of a row's words (shingles of `shingle` words; a shorter row is one shingle);
        None for a row without words."""
        if not ws:
            return None
        k = self.shingle
        if len(ws) <= k:
            shingles = [" ".join(ws)]
        elif k == 3:  # in C: join over zip of shifted views (about 2x a comprehension of slices)
            shingles = list(map(" ".join, zip(ws, ws[1:], ws[2:])))
        else:
            shingles = list(map(" ".join, zip(*(ws[i:] for i in range(k)))))
        mh = RMinHash(self.num_perm, SEED)
        mh.update(shingles)
        return mh

    def match(self, mh: RMinHash) -> tuple[int, float] | None:
        """(ref, estimated Jaccard) of the most similar kept row at >= threshold (ties: the earliest), or None."""
        best: tuple[int, float] | None = None
        sigs = self._sigs
        for key in self._lsh.query(mh):
            sim = mh.jaccard(sigs[key])
            if sim >= self.threshold and (best is None or sim > best[1] or (sim == best[1] and key < best[0])):
                best = (key, sim)
        return None if best is None else (self._refs[best[0]], best[1])

    def add(self, mh: RMinHash, ref: int) -> None:
        key = len(self._sigs)
        self._sigs.append(mh)
        self._refs.append(ref)
        self._lsh.insert(key, mh)

    def __len__(self) -> int:
        return len(self._sigs)
