"""Per-leaf append-only journals of finished units: what makes a run resumable at any moment.

One JSON line per finished unit, written and flushed as the unit completes (fsynced every few
seconds and at the end). A kill -9 can at most tear the last line: loading drops a torn tail and
truncates it away. Units that failed (teacher errors) are journaled too, so the report knows them,
and are retried on resume; units whose samples were all filtered out count as done.

A unit's samples repeat its inputs (document, seed examples) in every row, so a record keeps the
columns that all rows share once (`columns` + `common`, rows holding only what varies): a knowledge
unit's line shrinks about 4x, and writing the journal was a tenth of the engine's CPU.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from sdg.errors import JournalError
from sdg.pipeline.types import UnitResult

FSYNC_EVERY_S = 2.0


@dataclass(frozen=True)
class UnitRecord:
    unit: str
    status: str  # done | failed
    rows: tuple[dict, ...]
    generated: int
    dropped: dict[str, int]
    errors: tuple[dict, ...]
    requests: int
    prompt_tokens: int
    completion_tokens: int


def record_of(unit_id: str, result: UnitResult) -> dict[str, Any]:
    failed = bool(result.errors) and not result.rows and result.generated == 0
    return {"unit": unit_id, "status": "failed" if failed else "done", **_factored(result.rows),
            "generated": result.generated, "dropped": dict(result.dropped),
            "errors": [e.__dict__ for e in result.errors], "requests": result.requests,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens, "t": time.time()}


def _factored(rows: list[dict]) -> dict[str, Any]:
    """{"rows": rows}, or, when the rows share columns, {"columns", "common", "rows" without them}."""
    if len(rows) < 2:
        return {"rows": rows}
    columns = list(rows[0])
    if any(list(r) != columns for r in rows[1:]):
        return {"rows": rows}
    first = rows[0]
    common = {k: first[k] for k in columns if all(r[k] == first[k] for r in rows[1:])}
    if not common:
        return {"rows": rows}
    return {"columns": columns, "common": common, "rows": [{k: r[k] for k in columns if k not in common} for r in rows]}


def _rows_of(obj: dict[str, Any]) -> tuple[dict, ...]:
    rows = obj.get("rows", ())
    if "common" not in obj:
        return tuple(rows)
    columns, common = obj["columns"], obj["common"]
    return tuple({k: (r[k] if k in r else common[k]) for k in columns} for r in rows)


def read_journal(path: Path, *, repair: bool = True) -> list[UnitRecord]:
    """Every complete record, the last one per unit winning; a torn tail is cut off."""
    if not path.exists():
        return []
    records: dict[str, UnitRecord] = {}
    good_end = 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # torn tail without newline
        line = data[pos:nl]
        pos = nl + 1
        try:
            obj = json.loads(line)
            rec = UnitRecord(obj["unit"], obj["status"], _rows_of(obj), int(obj.get("generated", 0)),
                             dict(obj.get("dropped", {})), tuple(obj.get("errors", ())), int(obj.get("requests", 0)),
                             int(obj.get("prompt_tokens", 0)), int(obj.get("completion_tokens", 0)))
        except (ValueError, KeyError, TypeError):
            if pos >= len(data):
                break  # a torn last line: drop it
            line_no = data.count(b"\n", 0, pos)
            raise JournalError(f"{path}: line {line_no} is not a journal record; the journal is "
                               "damaged: move it away to redo that leaf") from None
        prev = records.get(rec.unit)
        if prev is None or prev.status != "done" or rec.status == "done":
            records[rec.unit] = rec
        good_end = pos
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return list(records.values())


@dataclass
class JournalStore:
    """Writers for one run's journals (one file per leaf and writer), opened lazily.

    `writer` names this process's files (`<leaf>.<writer>.jsonl`) so that several nodes working on
    slices of one leaf never append to the same file on a shared filesystem; reading merges them all.
    """

    root: Path
    writer: str = ""
    _files: dict[str, IO[str]] = field(default_factory=dict)
    _last_sync: float = 0.0

    def path(self, leaf_name: str) -> Path:
        return self.root / (f"{leaf_name}.{self.writer}.jsonl" if self.writer else f"{leaf_name}.jsonl")

    def paths(self, leaf_name: str) -> list[Path]:
        """Every writer's journal of a leaf (leaf names never contain '.', so the glob is exact)."""
        own = self.root / f"{leaf_name}.jsonl"
        others = sorted(self.root.glob(f"{leaf_name}.*.jsonl")) if self.root.exists() else []
        return ([own] if own.exists() else []) + others

    def load(self, leaf_name: str) -> list[UnitRecord]:
        """Records of every writer, the last done record per unit winning."""
        merged: dict[str, UnitRecord] = {}
        for path in self.paths(leaf_name):
            for rec in read_journal(path, repair=path == self.path(leaf_name)):
                prev = merged.get(rec.unit)
                if prev is None or prev.status != "done" or rec.status == "done":
                    merged[rec.unit] = rec
        return list(merged.values())

    def append(self, leaf_name: str, record: dict[str, Any]) -> None:
        try:
            f = self._files.get(leaf_name)
            if f is None:
                self.root.mkdir(parents=True, exist_ok=True)
                f = self._files[leaf_name] = open(self.path(leaf_name), "a", encoding="utf-8")
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()
            now = time.monotonic()
            if now - self._last_sync > FSYNC_EVERY_S:
                self.sync()
                self._last_sync = now
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path(leaf_name)}: {exc.strerror}; finished units "
                               "so far are kept; free space and run the same command again to resume") from None

    def sync(self) -> None:
        for f in self._files.values():
            os.fsync(f.fileno())

    def close(self) -> None:
        try:
            self.sync()
        except OSError:
            pass
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self.root.glob("*.jsonl"))) if self.root.exists() else iter(())
