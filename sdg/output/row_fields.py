"""Which columns of a generated row may reach a training record, and reading text columns safely.

Engine columns start with `_` (unit ids, scratch values): useful to trace a sample back to its unit,
never part of what a model is trained on, so they only ever travel inside `metadata`.
"""

from __future__ import annotations

from typing import Any, Mapping

from sdg.pipeline.types import Row

ENGINE_PREFIX = "_"
TRAINING_KEYS = ("id", "messages", "metadata", "unmask")  # exactly the keys of a mixed training record
ROLES = ("system", "user", "assistant")


def is_engine_column(name: str) -> bool:
    return name.startswith(ENGINE_PREFIX)


def split_engine_columns(row: Mapping[str, Any]) -> tuple[Row, Row]:
    """(public columns, engine columns), each in the row's order."""
    public: Row = {}
    engine: Row = {}
    for k, v in row.items():
        (engine if is_engine_column(k) else public)[k] = v
    return public, engine


def text(row: Mapping[str, Any], key: str) -> str:
    """A text column as str; missing or null reads as empty."""
    value = row.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def has_qa(row: Mapping[str, Any]) -> bool:
    """A generated row is usable for training only with a non-blank question and response."""
    return bool(text(row, "question").strip() and text(row, "response").strip())
