"""Seed copies: rows that restate one of their own leaf's seed examples.

The measure is ROUGE-L F1 over normalized words, the one behind self-instruct's rule (keep an instruction
only when its ROUGE-L to every existing one is < 0.7, hence seed_copy_threshold = 0.7). ROUGE-L F1 is
2 * LCS / (len a + len b), which is exactly rapidfuzz's Indel normalized similarity on word sequences, so it
runs in rapidfuzz's bit-parallel C++. Not token_set_ratio: it scores 1.0 whenever one side's words are a
subset of the other's, so a short row reusing a long seed's words would count as a copy; not
token_sort_ratio: it ignores word order ("who paid whom" reads as its reverse).

Two checks per row, each against every seed of the row's own leaf: the row's question + response against
the seed text (question + answer), and the row's question against the seed text's first as many words (a
seed text starts with its question), for questions of at least MIN_QUESTION_WORDS words: below that any
two questions opening with "what is the" would pass 0.7.

Speed: words become characters. Each distinct word of a leaf's seeds is one character of that leaf's
alphabet, every other word "\\0", which no seed has, so it matches nothing and the LCS is unchanged. A row
is then one str (a C-level map + join), and rapidfuzz reads str choices without converting them (lists of
words or word hashes it converts on every call: 2-3x slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Mapping, Sequence

from rapidfuzz import process
from rapidfuzz.distance import Indel

from sdg.quality.text import words

MIN_QUESTION_WORDS = 5
_SCORER = Indel.normalized_similarity
_OTHER = "\0"


@dataclass(frozen=True)
class SeedCopy:
    seed: int  # index in the leaf's seed list
    similarity: float
    question_only: bool


@dataclass(frozen=True)
class _LeafSeeds:
    alphabet: dict[str, str]  # each word of the leaf's seeds -> its character
    texts: list[str]  # each seed text, one character per word


def _char(i: int) -> str:
    return chr(i if i < 0xD800 else i + 0x800)  # from 1, around the surrogates


class SeedCopies:
    """Each leaf's seed texts in the leaf's word alphabet; `check` a row of that leaf."""

    def __init__(self, seeds: Mapping[str, Sequence[str]], threshold: float) -> None:
        self.threshold = threshold
        self._leaves: dict[str, _LeafSeeds] = {}
        for leaf, texts in seeds.items():
            alphabet: dict[str, str] = {}
            coded = ["".join([alphabet.setdefault(w, _char(len(alphabet) + 1)) for w in words(t)]) for t in texts]
            if alphabet:
                self._leaves[leaf] = _LeafSeeds(alphabet, coded)

    def check(self, leaf_id: str, question: int, both: Sequence[str]) -> SeedCopy | None:
        """The seed the row copies most (question + response first, then the question alone), or None.

        `both`: the row's normalized words (question then response), `question`: how many are the question's.
        """
        leaf = self._leaves.get(leaf_id)
        if leaf is None or not both:
            return None
        row = "".join(map(leaf.alphabet.get, both, repeat(_OTHER)))
        hit = process.extractOne(row, leaf.texts, scorer=_SCORER, score_cutoff=self.threshold)
        if hit is not None:
            return SeedCopy(hit[2], hit[1], False)
        k = question
        if k >= MIN_QUESTION_WORDS:
            hit = process.extractOne(row[:k], [t[:k] for t in leaf.texts], scorer=_SCORER,
                                     score_cutoff=self.threshold)
            if hit is not None:
                return SeedCopy(hit[2], hit[1], True)
        return None
