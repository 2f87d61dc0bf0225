"""Whole-file-or-nothing writes, so a crash never leaves a half file under a final name.

Every output file is written to a hidden temporary file in the same directory (same filesystem, so the
rename is atomic), flushed and fsynced, then moved over the final name with `os.replace`. A reader (or
a resumed run) therefore sees either the previous file, no file, or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO


def dumps(record: Mapping[str, Any]) -> str:
    """One JSON line: UTF-8 text kept as is; NaN/Infinity refused since JSON readers reject them."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text handle whose content appears at `path` only if the block finishes without raising."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp forces 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
