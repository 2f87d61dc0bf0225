"""Blocks: the steps of a pipeline, each working on the list of rows of one unit.

A block is a dataclass whose fields are its YAML keys (so the loader can list the valid keys and check
types without a separate schema), registered under a type name with `@register_block("name")`. Users
add their own by subclassing `Block` and naming it as `module:Class` in a pipeline's `type`; the
module is imported normally or, failing that, from the pipeline's directory (or `user_dirs`).

Lifecycle: `from_config` (keys and types) -> `check` (values) -> `bind` (prompt files, parsers) ->
`columns_out` (which columns exist after this block: unknown columns fail at load time) -> `run`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import sys
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from sdg.errors import ConfigError
from sdg.pipeline.templates import PromptFile, load_prompt
from sdg.pipeline.types import RequestError, Row, UnitContext, UnitResult

SEED_MASK = 0x7FFFFFFF  # servers take 31/32-bit seeds; llama.cpp treats 0xFFFFFFFF as "random"


@dataclass
class RunState:
    """One unit's run: its context, the result being filled, and the per-call seed counter."""

    ctx: UnitContext
    result: UnitResult
    target: int  # the unit's target_samples: what its requests ask for
    keep: int = 0  # rows it may keep: what its leaf still needs when it starts (leaf-level targets); 0 = target
    calls: int = 0

    @property
    def keep_limit(self) -> int:
        return max(self.keep, self.target)

    def keep_at_most(self, block: str, rows: list, limit: int) -> list:
        """The first `limit` rows; the rest counted as `block`'s over_target (the one trim every cap uses)."""
        self.drop(block, "over_target", len(rows) - limit)
        return rows[:limit]

    def next_seed(self) -> int:
        """`ctx.seed + k` for the k-th teacher call of the unit: distinct per call, same on a rerun."""
        seed = (self.ctx.seed + self.calls) & SEED_MASK
        self.calls += 1
        return seed

    def drop(self, block: str, reason: str, n: int = 1) -> None:
        if n > 0:
            self.result.dropped[f"{block}:{reason}"] += n

    def drop_row(self, block: str, reason: str, row: Row) -> None:
        """Count a dropped row and keep its public columns (no `_` scratch) for the audit files and report."""
        self.drop(block, reason)
        self.result.dropped_rows.append((f"{block}:{reason}", {k: v for k, v in row.items() if not k.startswith("_")}))

    def error(self, block: str, kind: str, message: str, retryable: bool = False) -> None:
        self.result.errors.append(RequestError(block, kind, message, retryable))


@dataclass(frozen=True)
class Bound:
    """Upper bounds while walking the blocks for a dry-run estimate."""

    rows: int
    requests: int = 0
    output_tokens: int = 0


@dataclass
class BindEnv:
    """What `bind` may use: where prompt files are found; it records every file read (for the fingerprint)."""

    prompt_dirs: tuple[Path, ...]
    files: dict[str, bytes] = field(default_factory=dict)

    def prompt(self, name: str, where: str) -> PromptFile:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not name.strip():
            raise ConfigError(f"{where}: prompt '{name}' must be a file name relative to a prompts/ directory")
        for d in self.prompt_dirs:
            path = d / rel
            if path.is_file():
                pf = load_prompt(path)
                self.files[f"prompt:{name}"] = pf.raw
                return pf
        looked = ", ".join(str(d) for d in self.prompt_dirs)
        raise ConfigError(f"{where}: prompt file '{name}' not found (looked in {looked})")


class Block(ABC):
    """Base of every block; subclasses are dataclasses whose first field is `name: str`."""

    type_name: ClassVar[str] = ""
    name: str

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str) -> Block:
        """Build from the YAML mapping (minus `type`): unknown, missing and mistyped keys are ConfigErrors."""
        return build_dataclass(cls, raw, where)

    def check(self, where: str) -> None:
        """Validate values beyond their types."""

    def bind(self, env: BindEnv, where: str) -> None:
        """Resolve files and named parsers."""

    def columns_out(self, columns: frozenset[str], where: str) -> frozenset[str]:
        """The columns after this block, given those before it; unknown inputs raise ConfigError."""
        return columns

    def bound(self, before: Bound, target: int) -> Bound:
        """Upper bounds after this block (rows, requests, output tokens) for `target` samples."""
        return before

    @abstractmethod
    async def run(self, rows: list[Row], state: RunState) -> list[Row]:
        """Rows in, rows out; count every row dropped (state.drop) and failed request (state.error)."""


def need_columns(columns: frozenset[str], wanted: Sequence[str], where: str, what: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfigError(f"{where}: {what} uses unknown column(s) {', '.join(repr(m) for m in missing)}; "
                          f"available here: {', '.join(sorted(columns))}")


# ---- config from YAML into dataclass fields ----------------------------------------------------------------

def config_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


def build_dataclass(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{where}: block class {cls.__name__} is not a dataclass; override from_config")
    fields = config_fields(cls)
    names = [f.name for f in fields]
    valid = ", ".join(["type", *names])
    for key in raw:
        if key == "type":
            continue
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in raw:
            if required:
                raise ConfigError(f"{where}: missing required key '{f.name}'; valid keys: {valid}")
            continue
        value = raw[f.name]
        hint = hints.get(f.name, Any)
        if not _matches(value, hint):
            raise ConfigError(f"{where}: '{f.name}' must be {_describe(hint)}, got {type(value).__name__} {value!r}")
        kwargs[f.name] = value
    obj = cls(**kwargs)
    obj.check(where)
    return obj


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0] if args else Any) for v in value)
    if origin is dict:
        k, v = args if args else (Any, Any)
        return isinstance(value, dict) and all(_matches(a, k) and _matches(b, v) for a, b in value.items())
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if args else "a mapping"
    if hint is type(None):
        return "null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


# ---- the registry -------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Block]] = {}
_BUILTINS = ("sdg.pipeline.llm_block", "sdg.pipeline.row_blocks")


def register_block(type_name: str):
    """Class decorator: make a Block subclass available as `type: <type_name>` in pipeline YAML."""

    def deco(cls: type[Block]) -> type[Block]:
        if not (isinstance(cls, type) and issubclass(cls, Block)):
            raise TypeError(f"@register_block({type_name!r}) needs a Block subclass, got {cls!r}")
        other = _REGISTRY.get(type_name)
        if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"block type '{type_name}' is already registered by "
                             f"{other.__module__}.{other.__qualname__}")
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls

    return deco


def registered_blocks() -> dict[str, type[Block]]:
    for mod in _BUILTINS:
        importlib.import_module(mod)
    return dict(_REGISTRY)


def block_class(type_name: str, search_dirs: Sequence[Path], where: str,
                sources: dict[str, bytes] | None = None) -> type[Block]:
    """The class for a YAML `type`: a registered name, or `module:Class` (importable, or a .py in search_dirs)."""
    known = registered_blocks()
    if ":" not in type_name:
        if type_name in known:
            return known[type_name]
        close = difflib.get_close_matches(type_name, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown block type '{type_name}'{hint}; known types: {', '.join(sorted(known))}, "
                          "or 'module:Class' for your own")
    module_name, _, class_name = type_name.partition(":")
    module = _import_user_module(module_name, search_dirs, where, sources)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise ConfigError(f"{where}: '{type_name}': {module_name} has no Block subclass named '{class_name}'")
    if not cls.type_name:
        cls.type_name = type_name
    return cls


def _import_user_module(module_name: str, search_dirs: Sequence[Path], where: str,
                        sources: dict[str, bytes] | None) -> types.ModuleType:
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"{where}: '{module_name}' is not a Python module name")
    rel = Path(*module_name.split(".")).with_suffix(".py")
    for d in search_dirs:
        path = Path(d) / rel
        if path.is_file():
            return _load_file(module_name, path, where, sources)
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        dirs = ", ".join(str(d) for d in search_dirs) or "(none)"
        raise ConfigError(f"{where}: cannot import block module '{module_name}': {e} "
                          f"(also looked for {rel} in {dirs})") from None


def _load_file(module_name: str, path: Path, where: str, sources: dict[str, bytes] | None) -> types.ModuleType:
    """Import a user block file under a private name, so two pipeline dirs with `blocks.py` do not collide."""
    data = path.read_bytes()
    if sources is not None:
        sources[f"block:{module_name}"] = data
    key = "sdg_user_blocks._" + hashlib.sha256(str(path.resolve()).encode() + data).hexdigest()[:16]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - user code: report, do not crash the loader
        del sys.modules[key]
        raise ConfigError(f"{where}: importing {path} failed: {type(e).__name__}: {e}") from None
    return module
