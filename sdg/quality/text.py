"""What the quality stage compares: a row's question + response as normalized words, and word n-gram hashes.

Normalizing (lowercase, punctuation and symbols read as spaces, whitespace collapsed) makes rows that differ
only in case, spacing or punctuation the same text. ASCII text, the common case, takes a `str.translate`
fast path (about 2x the speed of a regex); other text goes through a Unicode-aware regex.
"""

from __future__ import annotations

import re
import string
from hashlib import blake2b
from typing import Any, Iterator, Mapping, Sequence

from sdg.output.row_fields import text

_ASCII_TABLE = str.maketrans({c: " " for c in string.punctuation})
_NON_WORD = re.compile(r"[\W_]+")  # Unicode punctuation and symbols; `_` too, as string.punctuation has it


def row_text(row: Mapping[str, Any]) -> str:
    """The text compared: question + response. Not the context: the knowledge rows of one chunk all share it."""
    return f"{text(row, 'question')}\n{text(row, 'response')}"


def words(raw: str) -> list[str]:
    """Lowercased words with punctuation and symbols removed (a split point, so "end.Next" is two words)."""
    low = raw.lower()
    if low.isascii():
        return low.translate(_ASCII_TABLE).split()
    return _NON_WORD.sub(" ", low).split()


def normalized(raw: str) -> str:
    return " ".join(words(raw))


def text_hash(ws: Sequence[str]) -> int:
    """A stable 64-bit hash of normalized words (the same in every process, unlike `hash()` of a str)."""
    return int.from_bytes(blake2b(" ".join(ws).encode(), digest_size=8).digest(), "little")


def gram_hashes(ws: Sequence[str], k: int) -> set[int]:
    """Hashes of every k-word gram.

    `hash()` of a tuple of str: salted per process, but both sides of every comparison (an evaluation set's
    grams and a row's) are hashed in the same process, so only equality matters, and that is stable.
    """
    return {hash(tuple(ws[i:i + k])) for i in range(len(ws) - k + 1)}


def chunk_hashes(ws: Sequence[str], k: int) -> Iterator[int]:
    """Hashes of the k-word grams at positions 0, k, 2k, ... (non-overlapping; a short tail is left out),
    equal to their `gram_hashes`; all in C (zip over one iterator)."""
    return map(hash, zip(*[iter(ws)] * k))
