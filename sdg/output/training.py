"""One record of a mixed training file: exactly `{id, messages, metadata, unmask}`.

This is the shape instructlab-training's data processing reads: `messages` with a system turn carrying
the run's system prompt, `unmask` a bool (true: train on every turn, as phase 1 does with documents),
and everything else about the sample folded into `metadata`, a JSON string.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

from sdg.output.row_fields import TRAINING_KEYS

Record = dict[str, Any]


class BadRecord(ValueError):
    """A dataset line that cannot become a training record (the caller adds file and line)."""


def _metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    value = raw.get("metadata")
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise BadRecord("metadata is a string but not JSON") from None
    if not isinstance(value, dict):
        raise BadRecord(f"metadata must be a JSON object, got {type(value).__name__}")
    return dict(value)


def _messages(raw: Mapping[str, Any], system_prompt: str) -> Optional[list[dict[str, Any]]]:
    """Copied messages with every system turn set to `system_prompt` (one inserted first if none);
    None when a non-system turn is empty or there is none."""
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRecord("`messages` must be a non-empty list of {role, content}")
    out: list[dict[str, Any]] = []
    has_system = False
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRecord("every message needs a string `role`")
        m = dict(m)
        if m["role"] == "system":
            has_system = True
            m["content"] = system_prompt
        elif not isinstance(m.get("content"), str) or not m["content"].strip():
            return None
        out.append(m)
    if not has_system:
        out.insert(0, {"role": "system", "content": system_prompt})
    if all(m["role"] == "system" for m in out):
        return None
    return out


def training_record(raw: Mapping[str, Any], *, system_prompt: str, new_id: Callable[[Any], str]) -> Optional[Record]:
    """The training record of one dataset line, or None when it has an empty turn (dropped)."""
    if not isinstance(raw, dict):
        raise BadRecord("a dataset line must be a JSON object")
    messages = _messages(raw, system_prompt)
    if messages is None:
        return None
    metadata = _metadata(raw)
    for key, value in raw.items():
        if key not in TRAINING_KEYS:
            metadata[key] = value
    unmask = raw.get("unmask")
    if unmask is None:
        unmask = False
    elif not isinstance(unmask, bool):
        raise BadRecord(f"unmask must be true or false, got {unmask!r}")
    meta = json.dumps(metadata, ensure_ascii=False, default=str)
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        rid = new_id({"messages": messages, "metadata": meta, "unmask": unmask})
    return {"id": rid, "messages": messages, "metadata": meta, "unmask": unmask}
