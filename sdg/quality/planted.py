"""Synthetic rows with known answers, for measuring the quality stage (tests and benchmarks/quality_stage.py).

Not used by a run. Text is pseudo-words (seeded, so every call with the same arguments gives the same rows):
a question of about 15 words and an answer of about 60 in five sentences, words drawn Zipf-like from a
shared vocabulary plus the row's topic, with the common function words of English, so unrelated rows on one
topic share words but few shingles, as generated rows do.

`planted_corpus` mixes distinct base rows with planted near duplicates (small edits of a base row: a word
swapped, dropped or added, two sentences swapped, case and punctuation changed; shingle Jaccard to the base
>= NEAR_MIN_JACCARD) and hard negatives (siblings: the base's topic, question words and some of its sentences,
Jaccard <= SIBLING_MAX_JACCARD), each placed after its base, in another leaf.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

from sdg.quality.text import words

NEAR_MIN_JACCARD = 0.85
SIBLING_MAX_JACCARD = 0.6
_FUNCTION = ("the of and to a in is that for it as with on by this be are from or at an which can when "
             "its their more than also into each most after how what why").split()
_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"] + ["qu", "th", "sh", "ch", "str", "pl"]


def vocabulary(size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


class TextMaker:
    """Rows of pseudo-English: Zipf-weighted vocabulary, a topic's own words, function words."""

    def __init__(self, seed: int = 0, vocab: int = 20000, topics: int = 200, topic_words: int = 60) -> None:
        self.rng = random.Random(seed)
        self.vocab = vocabulary(vocab + topics * topic_words, seed)
        self.common = self.vocab[:vocab]
        self.weights = [1.0 / (i + 10) for i in range(vocab)]
        self.cum = list(_cumulative(self.weights))
        self.topics = [self.vocab[vocab + t * topic_words: vocab + (t + 1) * topic_words] for t in range(topics)]

    def words(self, n: int, topic: int) -> list[str]:
        rng = self.rng
        k_fn = n * 2 // 5
        k_topic = n // 5
        out = rng.choices(_FUNCTION, k=k_fn) + rng.choices(self.topics[topic], k=k_topic)
        out += rng.choices(self.common, cum_weights=self.cum, k=n - k_fn - k_topic)
        rng.shuffle(out)
        return out

    def sentence(self, n: int, topic: int) -> str:
        ws = self.words(n, topic)
        return " ".join(ws).capitalize() + "."

    def row(self, topic: int, q_words: int = 15, sentences: int = 5, s_words: int = 12) -> dict[str, str]:
        q = " ".join(self.words(q_words, topic)).capitalize() + "?"
        a = " ".join(self.sentence(s_words + self.rng.randint(-2, 2), topic) for _ in range(sentences))
        return {"question": q, "response": a}


def _cumulative(ws: list[float]) -> Iterator[float]:
    total = 0.0
    for w in ws:
        total += w
        yield total


def shingle_jaccard(a: dict[str, str], b: dict[str, str], k: int = 3) -> float:
    """The exact Jaccard similarity of two rows' word-shingle sets (what MinHash estimates)."""
    sa, sb = (_shingles(r, k) for r in (a, b))
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def _shingles(row: dict[str, str], k: int) -> set[tuple[str, ...]]:
    ws = _norm(row)
    return {tuple(ws[i:i + k]) for i in range(max(1, len(ws) - k + 1))}


def _norm(row: dict[str, str]) -> list[str]:
    return words(row["question"]) + words(row["response"])


def _sentences(answer: str) -> list[str]:
    return [s.strip() + "." for s in answer.split(".") if s.strip()]


def near_copy(row: dict[str, str], maker: TextMaker, topic: int) -> dict[str, str]:
    """A small edit of a row (one or two of: a word swapped, dropped or added, two sentences swapped),
    with its case and punctuation changed too, so it is not an exact duplicate after normalization."""
    rng = maker.rng
    for _ in range(50):
        q = row["question"].split()
        sents = _sentences(row["response"])
        for _ in range(rng.randint(1, 2)):
            op = rng.choice(("swap_word", "drop_word", "add_word", "swap_sentences"))
            if op == "swap_sentences":
                i = rng.randrange(len(sents) - 1)
                sents[i], sents[i + 1] = sents[i + 1], sents[i]
                continue
            target = rng.randrange(len(sents) + 1)
            ws = q if target == len(sents) else sents[target].split()
            i = rng.randrange(1, len(ws) - 1)
            if op == "swap_word":
                ws[i] = maker.words(1, topic)[0]
            elif op == "drop_word":
                del ws[i]
            else:
                ws.insert(i, maker.words(1, topic)[0])
            if target < len(sents):
                sents[target] = " ".join(ws)
        out = {"question": " ".join(q).upper() if rng.random() < 0.3 else " ".join(q).rstrip("?") + " ?",
               "response": "  ".join(sents).replace(".", " !", rng.randint(0, 2))}
        if _norm(out) != _norm(row) and shingle_jaccard(row, out) >= NEAR_MIN_JACCARD:
            return out
    raise RuntimeError("no near copy above NEAR_MIN_JACCARD: rows too short for the edits")


def sibling(row: dict[str, str], maker: TextMaker, topic: int) -> dict[str, str]:
    """A different row on the same topic: half the question words and three of the answer's five sentences kept."""
    rng = maker.rng
    for _ in range(50):
        q = row["question"].rstrip("?").split()
        for i in rng.sample(range(len(q)), len(q) // 2):
            q[i] = maker.words(1, topic)[0]
        sents = _sentences(row["response"])
        keep = set(rng.sample(range(len(sents)), 3))
        new = [s if i in keep else maker.sentence(len(s.split()), topic) for i, s in enumerate(sents)]
        out = {"question": " ".join(q) + "?", "response": " ".join(new)}
        if shingle_jaccard(row, out) <= SIBLING_MAX_JACCARD:
            return out
    raise RuntimeError("no sibling below SIBLING_MAX_JACCARD")


@dataclass(frozen=True)
class PlantedRow:
    leaf: str
    row: dict[str, str]
    kind: str  # "base" | "near" | "sibling"
    base: int  # the base row's index in the corpus (its own for a base row)


def planted_corpus(bases: int = 2000, near: int = 500, siblings: int = 200, leaves: int = 20,
                   seed: int = 0) -> list[PlantedRow]:
    """Base rows, then near copies and siblings of random base rows, each after its base in another leaf."""
    maker = TextMaker(seed)
    rng = maker.rng
    topic_of = [rng.randrange(len(maker.topics)) for _ in range(bases)]
    base_rows = [PlantedRow(f"leaf{i % leaves}", maker.row(topic_of[i]), "base", i) for i in range(bases)]
    keyed: list[tuple[float, PlantedRow]] = [(float(i), r) for i, r in enumerate(base_rows)]
    for kind, count, make in (("near", near, near_copy), ("sibling", siblings, sibling)):
        for _ in range(count):
            b = rng.randrange(bases)
            leaf = f"leaf{(b + 1 + rng.randrange(leaves - 1)) % leaves}" if leaves > 1 else "leaf0"
            keyed.append((rng.uniform(b + 0.5, bases), PlantedRow(leaf, make(base_rows[b].row, maker, topic_of[b]),
                                                                 kind, b)))
    keyed.sort(key=lambda kr: kr[0])
    corpus = [r for _, r in keyed]
    index = {id(r): i for i, r in enumerate(corpus)}
    return [PlantedRow(r.leaf, r.row, r.kind, index[id(base_rows[r.base])]) for r in corpus]
