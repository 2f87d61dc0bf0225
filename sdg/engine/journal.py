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
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from sdg.errors import JournalError
from sdg.pipeline.types import UnitResult

FSYNC_EVERY_S = 2.0
log = logging.getLogger("sdg.journal")
NL = b"\n"


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
    t: float = 0.0  # when the unit finished (unix time): the report's throughput over time
    dropped_rows: tuple[tuple[str, dict], ...] = ()  # (reason, row) a judge or filter dropped: the audit files
    asked: int | None = None  # samples the unit asked for (leaf-level targets); None in older journals


def record_of(unit_id: str, result: UnitResult, asked: int | None = None) -> dict[str, Any]:
    """The journal line of a finished unit; `asked`: the samples it asked for (a resumed run's yield so far is
    kept per sample asked, and a unit may ask for more than its plan share)."""
    # Failed (redone on resume): a transient request failure anywhere in the unit (even if other requests
    # gave rows: a judge that timed out must not leave the unit done with fewer rows), or nothing at all.
    failed = result.transient_failure or (bool(result.errors) and not result.rows and result.generated == 0)
    return {"unit": unit_id, "status": "failed" if failed else "done", **_factored(result.rows),
            "generated": result.generated, "dropped": dict(result.dropped),
            "errors": [e.__dict__ for e in result.errors], "requests": result.requests,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens, "t": time.time(),
            **({"dropped_rows": [list(d) for d in result.dropped_rows]} if result.dropped_rows else {}),
            **({"asked": asked} if asked is not None else {})}


def _line(record: dict[str, Any]) -> bytes:
    """One journal line, UTF-8. orjson (a quarter of the stdlib's time: the journal was a tenth of the engine's
    CPU); the stdlib for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(record, ensure_ascii=False, default=str).encode("utf-8") + NL


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


def _record(line: bytes) -> UnitRecord:
    try:
        obj = orjson.loads(line)
    except ValueError:  # NaN from the stdlib's json (older journals), or a torn line: the stdlib decides
        obj = json.loads(line)
    return UnitRecord(obj["unit"], obj["status"], _rows_of(obj), int(obj.get("generated", 0)),
                      dict(obj.get("dropped", {})), tuple(obj.get("errors", ())), int(obj.get("requests", 0)),
                      int(obj.get("prompt_tokens", 0)), int(obj.get("completion_tokens", 0)), float(obj.get("t", 0.0)),
                      tuple((str(r), dict(row)) for r, row in obj.get("dropped_rows", ())),
                      int(obj["asked"]) if isinstance(obj.get("asked"), int) else None)


def read_journal(path: Path, *, repair: bool = True, problems: list[str] | None = None) -> list[UnitRecord]:
    """Every complete record, the last done one per unit winning.

    A torn tail (no newline: a kill mid-write) is cut off when `repair` (the caller owns the file). A bad
    line inside the file (a torn fragment a later writer appended after) is skipped and named in
    `problems`: the records around it are kept, and the unit it held is simply redone."""
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
        good_end = pos
        if not line.strip():
            continue
        try:
            rec = _record(line)
        except (ValueError, KeyError, TypeError):
            line_no = data.count(NL, 0, pos)
            msg = (f"{path}: line {line_no} is not a journal record (a torn write); skipped, "
                   "its unit is redone")
            log.warning(msg)
            if problems is not None:
                problems.append(msg)
            continue
        prev = records.get(rec.unit)
        if prev is None or prev.status != "done" or rec.status == "done":
            records[rec.unit] = rec
    if repair and good_end < len(data):
        repair_tail(path)
    return list(records.values())


def repair_tail(path: Path) -> None:
    """Cut a torn last line (bytes after the last newline) so the next append starts a fresh line."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            step, end = 1 << 16, size
            while end > 0:
                start = max(0, end - step)
                f.seek(start)
                chunk = f.read(end - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    if start + nl + 1 < size:
                        f.truncate(start + nl + 1)
                    return
                end = start
            f.truncate(0)
    except FileNotFoundError:
        return


@dataclass
class JournalStore:
    """Writers for one run's journals (one file per leaf and writer), opened lazily.

    `writer` names this process's files (`<leaf>.<writer>.jsonl`) so that several nodes working on
    slices of one leaf never append to the same file on a shared filesystem; reading merges them all.
    """

    root: Path
    writer: str = ""
    problems: list[str] = field(default_factory=list)  # damaged lines skipped while reading
    _files: dict[str, IO[bytes]] = field(default_factory=dict)
    _last_sync: float = 0.0
    _syncer: threading.Thread | None = None  # the periodic fsync, off the event loop's thread
    _sync_errors: list[str] = field(default_factory=list)

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
            for rec in read_journal(path, repair=path == self.path(leaf_name), problems=self.problems):
                prev = merged.get(rec.unit)
                if prev is None or prev.status != "done" or rec.status == "done":
                    merged[rec.unit] = rec
        return list(merged.values())

    def append(self, leaf_name: str, record: dict[str, Any]) -> None:
        if self._sync_errors:
            raise JournalError(f"cannot write the journals in {self.root}: {self._sync_errors[0]}; finished units "
                               "so far are kept; free space and run the same command again to resume")
        try:
            f = self._files.get(leaf_name)
            if f is None:
                self.root.mkdir(parents=True, exist_ok=True)
                repair_tail(self.path(leaf_name))  # a previous attempt of this writer may have torn its last line
                f = self._files[leaf_name] = open(self.path(leaf_name), "ab")
            f.write(_line(record))
            f.flush()
            now = time.monotonic()
            if now - self._last_sync > FSYNC_EVERY_S:
                self._sync_soon()
                self._last_sync = now
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path(leaf_name)}: {exc.strerror}; finished units "
                               "so far are kept; free space and run the same command again to resume") from None

    def _sync_soon(self) -> None:
        """fsync every open file in a thread of its own (os.fsync releases the GIL: on a slow or shared file
        system the engine goes on meanwhile); one at a time; an error shows on the next append, sync or check."""
        if self._syncer is not None and self._syncer.is_alive():
            return
        fds = [f.fileno() for f in self._files.values()]

        def run() -> None:
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    self._sync_errors.append(exc.strerror or str(exc))
                    return

        self._syncer = threading.Thread(target=run, name="sdg-journal-fsync", daemon=True)
        self._syncer.start()

    def _join_syncer(self) -> None:
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None

    def sync(self) -> None:
        self._join_syncer()
        for f in self._files.values():
            os.fsync(f.fileno())

    def close(self) -> None:
        """Flush, fsync and close every file. Never raises (it runs while another error unwinds); raise
        what went wrong with `check()` when nothing else failed."""
        self._join_syncer()  # (it holds the files' descriptors)
        if self._sync_errors:
            self._failed = True
            self.problems.append(f"cannot write the journals in {self.root}: {self._sync_errors[0]}")
        for leaf, f in list(self._files.items()):
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                self.problems.append(f"cannot write the journal {self.path(leaf)}: {exc.strerror}")
                self._failed = True
            try:
                f.close()
            except OSError as exc:
                self._failed = True
                self.problems.append(f"cannot close the journal {self.path(leaf)}: {exc.strerror}")
        self._files.clear()

    def check(self) -> None:
        """JournalError if closing lost a write (disk full): the last units are redone on resume."""
        if getattr(self, "_failed", False):
            bad = "; ".join(p for p in self.problems if p.startswith("cannot"))
            raise JournalError(f"{bad}; finished units written before are kept: free space and run the same "
                               "command again to resume")

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self.root.glob("*.jsonl"))) if self.root.exists() else iter(())
