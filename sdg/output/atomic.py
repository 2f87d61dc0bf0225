"""Whole-file-or-nothing writes, so a crash never leaves a half file under a final name.

Every output file is written to a hidden temporary file in the same directory (same filesystem, so the
rename is atomic), flushed and fsynced, then moved over the final name with `os.replace`. A reader (or
a resumed run) therefore sees either the previous file, no file, or the complete new one.

Inside `synced_together()` (a run's finish step: hundreds of small files) the fsyncs wait until the block
ends and then run side by side in threads, instead of one disk round trip per file; each file is still
complete before its rename, so a process that dies inside leaves whole files only.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO

import orjson


def dumps(record: Mapping[str, Any]) -> str:
    """One compact JSON line, UTF-8 text kept as is (orjson: the training files' lines cost a fifth of the
    stdlib's time); NaN/Infinity refused since JSON readers reject them. The stdlib for what orjson refuses
    (an integer past 64 bits, a key that is not a string)."""
    try:
        line = orjson.dumps(record).decode("utf-8")
    except TypeError:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if "null" in line:  # orjson writes NaN/Infinity as null: only such a line can have held one
        json.dumps(record, allow_nan=False)  # ValueError for them
    return line


_PENDING: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("sdg_pending_fsync", default=None)
SYNC_THREADS = 8


@contextlib.contextmanager
def synced_together(threads: int = SYNC_THREADS) -> Iterator[None]:
    """Atomic writes inside the block are fsynced together when it ends (threads: an fsync waits on the disk,
    not the CPU). A caller that marks its work done on disk (run.json) does so after the block."""
    pending: list[Path] = []
    token = _PENDING.set(pending)
    try:
        yield
    finally:
        _PENDING.reset(token)
    if pending:
        with ThreadPoolExecutor(max(1, min(threads, len(pending)))) as pool:
            list(pool.map(_fsync_path, pending))


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # removed since (an empty phase file, a stale one)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text handle whose content appears at `path` only if the block finishes without raising."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    pending = _PENDING.get()
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp forces 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            if pending is None:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if pending is not None:
        pending.append(path)


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object per line; returns the number of lines."""
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(dumps(record))
            f.write("\n")
            n += 1
    return n
