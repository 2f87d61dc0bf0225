"""Blocks that reshape rows without the teacher: filter, dedup, set, rename, drop, examples."""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from sdg.errors import ConfigError
from sdg.pipeline.blocks import Block, Bound, RunState, need_columns, register_block
from sdg.pipeline.llm_block import TARGET
from sdg.pipeline.parsers import normalize
from sdg.pipeline.templates import Template
from sdg.pipeline.types import Row

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
    "in": lambda a, b: a in b, "not_in": lambda a, b: a not in b,
}
Op = Literal[">=", ">", "<=", "<", "==", "!=", "in", "not_in"]


@register_block("filter")
@dataclass
class FilterBlock(Block):
    """Keep rows whose `column` compares true to `value` (`judge_x >= 2`); others count as `reason`."""

    name: str
    column: str
    value: Any
    op: Op = ">="
    reason: str = "below_threshold"

    def check(self, where: str) -> None:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ConfigError(f"{where}: op '{self.op}' needs a list value, got {self.value!r}")

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        need_columns(columns, [self.column], where, "column")
        return columns

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        test = _OPS[self.op]
        kept = []
        for row in rows:
            v = row.get(self.column)
            try:
                ok = v is not None and bool(test(v, self.value))
            except TypeError:
                ok = False
            if ok:
                kept.append(row)
            else:
                state.drop_row(self.name, self.reason if v is not None else "missing_value", row)
        return kept


@register_block("dedup")
@dataclass
class DedupBlock(Block):
    """Drop rows whose normalized `column` repeats an earlier row (`duplicate`) or an example (`copies_example`).

    `against` names columns holding examples the teacher was shown; `col.field` reaches into a list of
    dicts (`icl_examples.question`). Small teachers often hand the example back as a "new" sample.
    `cap` keeps at most this many of the rows left (`over_target` for the rest); `target_samples`: what the
    unit's leaf still needs. After a generation block with `cap: all`, copies and repeats go before the cap
    counts, so they never take the places of valid samples written after them; before judges, the cap keeps
    them from judging more than the leaf needs.
    """

    name: str
    column: str = "question"
    against: list[str] = field(default_factory=list)
    cap: int | Literal["target_samples"] | None = None

    def check(self, where: str) -> None:
        if isinstance(self.cap, int) and self.cap < 1:
            raise ConfigError(f"{where}: cap must be >= 1 (or 'target_samples'), got {self.cap}")

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        need_columns(columns, [self.column, *(a.split(".", 1)[0] for a in self.against)], where, "dedup")
        return columns

    def bound(self, before: Bound, target: int) -> Bound:
        if self.cap is None:
            return before
        per_unit = target if self.cap == TARGET else int(self.cap)
        return Bound(min(before.rows, per_unit), before.requests, before.output_tokens)

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        seen: set[str] = set()
        kept = []
        examples: dict[tuple[int, ...], set[str]] = {}
        for row in rows:
            key = normalize(str(row.get(self.column) or ""))
            if key and key in self._examples_once(row, examples):
                state.drop(self.name, "copies_example")
            elif key in seen:
                state.drop(self.name, "duplicate")
            else:
                seen.add(key)
                kept.append(row)
        if self.cap is not None:
            kept = state.keep_at_most(self.name, kept, state.keep_limit if self.cap == TARGET else int(self.cap))
        return kept

    def _examples_once(self, row: Row, cache: dict[tuple[int, ...], set[str]]) -> set[str]:
        """`_examples(row)`, worked out once per call for rows holding the same example values (a unit's rows
        share their input's: the same objects, so their ids, while the rows are alive)."""
        ident = tuple(id(row.get(spec.partition(".")[0])) for spec in self.against)
        found = cache.get(ident)
        if found is None:
            found = cache[ident] = self._examples(row)
        return found

    def _examples(self, row: Row) -> set[str]:
        found: set[str] = set()
        for spec in self.against:
            col, _, sub = spec.partition(".")
            value = row.get(col)
            values = [x.get(sub) for x in value if isinstance(x, dict)] if sub and isinstance(value, list) else [value]
            found.update(normalize(v) for v in values if isinstance(v, str))
        return found


@register_block("set")
@dataclass
class SetBlock(Block):
    """Set columns: a string is a template over the row (`"{document}"`), anything else is a constant."""

    name: str
    columns: dict[str, Any]
    _templates: dict[str, Template] = field(default_factory=dict, init=False, repr=False)

    def check(self, where: str) -> None:
        self._templates = {k: Template.parse(v) for k, v in self.columns.items() if isinstance(v, str)}

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        for col, t in self._templates.items():
            need_columns(columns, list(t.fields), where, f"the template for '{col}'")
        return columns | frozenset(self.columns)

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        out = []
        for row in rows:
            new = dict(row)
            for col, v in self.columns.items():
                new[col] = self._templates[col].render(row) if col in self._templates else v
            out.append(new)
        return out


@register_block("rename")
@dataclass
class RenameBlock(Block):
    """Rename columns: `{old: new}`."""

    name: str
    columns: dict[str, str]

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        need_columns(columns, list(self.columns), where, "rename")
        return (columns - frozenset(self.columns)) | frozenset(self.columns.values())

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        return [{self.columns.get(k, k): v for k, v in row.items()} for row in rows]


@register_block("drop")
@dataclass
class DropBlock(Block):
    """Remove columns (scratch columns starting with `_` are removed at the end anyway)."""

    name: str
    columns: list[str]

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        need_columns(columns, self.columns, where, "drop")
        return columns - frozenset(self.columns)

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        gone = set(self.columns)
        return [{k: v for k, v in row.items() if k not in gone} for row in rows]


_EXAMPLE_FIELDS = ("question", "answer", "context")


@register_block("examples")
@dataclass
class ExamplesBlock(Block):
    """Render a skill's seed (and up to `max_extra` of `icl_examples`, while they fit in `max_chars`) into `output`.

    Each example goes through `template` (fields: question, answer, context), in the exact format the
    parser reads back, so the teacher sees what we want by example. Extras are picked with the unit
    seed: different units show different ones, a rerun shows the same.
    """

    name: str
    template: str
    output: str = "_examples"
    include_seed: bool = True
    max_extra: int = 1
    max_chars: int = 3000
    separator: str = "\n\n"
    _template: Template | None = field(default=None, init=False, repr=False)

    def check(self, where: str) -> None:
        if self.max_extra < 0 or self.max_chars < 1:
            raise ConfigError(f"{where}: max_extra must be >= 0 and max_chars >= 1")
        self._template = Template.parse(self.template)
        bad = [f for f in self._template.fields if f not in _EXAMPLE_FIELDS]
        if bad:
            raise ConfigError(f"{where}: template placeholders {bad} unknown; use {', '.join(_EXAMPLE_FIELDS)}")

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        assert self._template is not None
        wanted = ["seed_question", "seed_response", "icl_examples"]
        if "context" in self._template.fields:
            wanted.append("seed_context")
        need_columns(columns, wanted, where, "examples")
        return columns | {self.output}

    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        return [{**row, self.output: self.render(row, state.ctx.seed)} for row in rows]

    def render(self, row: Row, seed: int) -> str:
        assert self._template is not None
        seed_ex = {"question": row.get("seed_question"), "answer": row.get("seed_response"),
                   "context": row.get("seed_context")}
        extras = [x for x in (row.get("icl_examples") or []) if isinstance(x, dict) and x.get("question")]
        extras = [x for x in extras if normalize(str(x.get("question"))) != normalize(str(seed_ex["question"] or ""))]
        random.Random(seed).shuffle(extras)
        parts = [self._one(seed_ex)] if self.include_seed else []
        used = sum(len(p) for p in parts)
        for ex in extras:
            if len(parts) - int(self.include_seed) >= self.max_extra:
                break
            text = self._one(ex)
            if used + len(text) + len(self.separator) <= self.max_chars:
                parts.append(text)
                used += len(text) + len(self.separator)
        return self.separator.join(parts)

    def _one(self, ex: dict) -> str:
        assert self._template is not None
        return self._template.render({f: str(ex.get(f) or "").strip() for f in _EXAMPLE_FIELDS})
