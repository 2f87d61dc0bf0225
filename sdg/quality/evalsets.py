"""Decontamination: rows that share word n-grams with an evaluation set.

An evaluation item (a .jsonl line, a .json list element, a .txt line) is its string values joined, normalized
like the rows (sdg.quality.text). Its grams are its n-word windows (n = `decontaminate_ngram`); an item shorter
than n words is one gram, the whole item. Only gram hashes (ints) are kept, never the items.

Hashing every n-gram of every row costs a tuple hash per word, in Python. A probe filter avoids that for the
clean rows, nearly all of them: every gram of k words contains a probe gram of m = ceil(k/2) words starting
at a multiple of m (since 2m - 1 <= k). So the sets also keep the hashes of all their m-grams, a row hashes
only its non-overlapping m-word chunks (in C: `chunk_hashes`), and only a row with a probe hit has its full
k-grams compared. The answer is the same as comparing every gram: the filter has no false negatives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from sdg.errors import ConfigError
from sdg.quality.text import chunk_hashes, gram_hashes, words

SUFFIXES = (".jsonl", ".json", ".txt")


@dataclass
class _GramClass:
    """All grams of one length k, over every evaluation set."""

    k: int
    probe: int  # words per probe gram, ceil(k/2)
    probes: set[int] = field(default_factory=set)
    grams: dict[int, set[int]] = field(default_factory=dict)  # evaluation set index -> its k-gram hashes

    def add(self, ws: Sequence[str], set_index: int) -> None:
        self.probes |= gram_hashes(ws, self.probe)
        self.grams.setdefault(set_index, set()).update(gram_hashes(ws, self.k))

    def probed(self, ws: Sequence[str]) -> bool:
        """Whether the row may share a k-gram (a probe hit); False is certain."""
        return len(ws) >= self.k and not self.probes.isdisjoint(chunk_hashes(ws, self.probe))

    def shared(self, ws: Sequence[str], counts: list[int]) -> None:
        """Adds to counts[set] the row's distinct k-grams found in each evaluation set."""
        row = gram_hashes(ws, self.k)
        for index, grams in self.grams.items():
            counts[index] += len(row & grams)


@dataclass(frozen=True)
class Contamination:
    name: str  # the evaluation set's file name
    shared: int  # distinct grams of the row found in it


class EvalSets:
    """Every evaluation set of `quality.decontaminate`, loaded once; `check` a row's normalized words."""

    def __init__(self, paths: Sequence[str], ngram: int, min_overlap: int) -> None:
        self.ngram = ngram
        self.min_overlap = min_overlap
        self.names: list[str] = _names([Path(p).expanduser() for p in paths])
        self._classes: dict[int, _GramClass] = {}
        for index, raw in enumerate(paths):
            path = Path(raw).expanduser()
            items = 0
            for ws in _items(path):
                k = min(len(ws), ngram)
                gc = self._classes.get(k)
                if gc is None:
                    gc = self._classes[k] = _GramClass(k, (k + 1) // 2)
                gc.add(ws, index)
                items += 1
            if not items:
                raise ConfigError(f"quality.decontaminate: {path} holds no text items (expected "
                                  ".jsonl objects, a .json list or .txt lines with text)")
        self._order = sorted(self._classes.values(), key=lambda c: -c.k)

    def check(self, ws: Sequence[str]) -> Contamination | None:
        """The evaluation set sharing the most grams with a row (its normalized words), if >= min_overlap."""
        probed = [gc for gc in self._order if gc.probed(ws)]
        if not probed:
            return None
        counts = [0] * len(self.names)
        for gc in probed:
            gc.shared(ws, counts)
        best = max(range(len(counts)), key=counts.__getitem__, default=None)  # first of equals: config order
        if best is None or counts[best] < self.min_overlap:
            return None
        return Contamination(self.names[best], counts[best])


def _names(paths: list[Path]) -> list[str]:
    """Each set's file name, or its path where two sets share a file name."""
    seen = [p.name for p in paths]
    return [p.name if seen.count(p.name) == 1 else str(p) for p in paths]


def _items(path: Path) -> Iterator[list[str]]:
    """The normalized words of each non-empty item of an evaluation set; ConfigError naming file and line."""
    where = f"quality.decontaminate: {path}"
    if not path.exists():
        raise ConfigError(f"{where}: no such file")
    if not path.is_file():
        raise ConfigError(f"{where}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{where}: unknown evaluation set format {suffix or '(no suffix)'!r}; "
                          f"expected one of {', '.join(SUFFIXES)}")
    try:
        if suffix == ".json":
            yield from _json_items(path, where)
            return
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ConfigError(f"{where}:{lineno}: not UTF-8 ({e.reason})") from None
                if not line.strip():
                    continue
                if suffix == ".txt":
                    ws = words(line)
                else:
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{where}:{lineno}: not JSON ({e.msg}, column {e.colno})") from None
                    ws = _value_words(value, f"{where}:{lineno}")
                if ws:
                    yield ws
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from None


def _json_items(path: Path, where: str) -> Iterator[list[str]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}:{e.lineno}: not JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a JSON list of objects or strings, found {type(data).__name__}")
    for i, value in enumerate(data):
        ws = _value_words(value, f"{where}: item {i}")
        if ws:
            yield ws


def _value_words(value: Any, where: str) -> list[str]:
    if not isinstance(value, (dict, list, str)):
        raise ConfigError(f"{where}: expected a JSON object or string, found {type(value).__name__}")
    return words(" ".join(_strings(value)))


def _strings(value: Any) -> Iterator[str]:
    """Every string value inside a JSON value, in order (keys are not text of the item)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
