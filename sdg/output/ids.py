"""Record ids derived from content and seed instead of uuid4.

InstructLab gives every training record a fresh uuid4, so writing the same data twice gives different
files. Here an id is a uuid5 of (seed, kind of record, canonical JSON of the record), so rewriting the
outputs from the same journals is byte-identical; the n-th exact duplicate of a record gets its own id.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "sdg:output:record")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _digest(content: Any) -> str:
    return hashlib.sha256(canonical(content).encode("utf-8")).hexdigest()


def _id(seed: int, kind: str, digest: str, occurrence: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{seed}\x00{kind}\x00{digest}\x00{occurrence}"))


def content_id(seed: int, kind: str, content: Any, occurrence: int = 0) -> str:
    """The id of the `occurrence`-th record of this kind with exactly this content."""
    return _id(seed, kind, _digest(content), occurrence)


class IdMaker:
    """Hands out content ids for one family of records, counting exact duplicates."""

    def __init__(self, seed: int, kind: str) -> None:
        self.seed = seed
        self.kind = kind
        self._seen: dict[str, int] = {}

    def __call__(self, content: Any) -> str:
        digest = _digest(content)
        n = self._seen.get(digest, 0)
        self._seen[digest] = n + 1
        return _id(self.seed, self.kind, digest, n)
