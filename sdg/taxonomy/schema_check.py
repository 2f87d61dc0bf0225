"""JSON-schema validation with instructlab-schema's own schema files, so verdicts match InstructLab's.

The messages start as InstructLab's do (`Value must have at least 5 items`, the jsonschema text) and
then say how to fix the file. Validators are built once per (version, schema) and reused.
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any, Iterator, Mapping

from instructlab.schema import schema_base
from jsonschema import validators
from jsonschema.exceptions import ValidationError
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sdg.taxonomy.checks import canonical_json

SCHEMA_ROOTS = ("compositional_skills", "knowledge")


@functools.lru_cache(maxsize=None)
def _resource(version: int, name: str) -> Resource:
    text = schema_base().joinpath(f"v{version}", name).read_text(encoding="utf-8")
    return Resource.from_contents(json.loads(text), default_specification=DRAFT202012)


def schema_name_for(rel_parts: tuple[str, ...], contents: Mapping[str, Any]) -> str:
    """Same rule as InstructLab: the taxonomy root if it has a schema, else by the `document` key."""
    if rel_parts and rel_parts[0] in SCHEMA_ROOTS:
        return rel_parts[0]
    return "knowledge" if "document" in contents else "compositional_skills"


def available_versions() -> list[int]:
    return sorted(int(p.name[1:]) for p in schema_base().iterdir() if p.name[:1] == "v" and p.name[1:].isdigit())


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema's uniqueItems compares every pair (hours for a few thousand seeds); this hashes.
    Same verdict and message; items equal as JSON values are duplicates (1 and 1.0, key order)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = canonical_json(item)
        if key in seen:
            yield ValidationError(f"{instance!r:.200} has non-unique elements")
            return
        seen.add(key)


@functools.lru_cache(maxsize=None)
def _validator(version: int, name: str):
    schema = _resource(version, f"{name}.json").contents
    registry = Registry(retrieve=lambda uri: _resource(version, uri))  # type: ignore[call-arg]
    base = validator_for(schema)
    fast = validators.extend(base, {"uniqueItems": _unique_items})
    return fast(schema, registry=registry)


def _properties(schema: Any, version: int) -> set[str]:
    """Keys a schema object allows, following `$ref` and `allOf` into the other schema files."""
    if not isinstance(schema, Mapping):
        return set()
    keys = set((schema.get("properties") or {}).keys())
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        keys |= _properties(_resource(version, ref.lstrip("./")).contents, version)
    for sub in schema.get("allOf") or ():
        keys |= _properties(sub, version)
    return keys


@functools.lru_cache(maxsize=None)
def deprecation(version: int, name: str) -> str | None:
    schema = _resource(version, f"{name}.json").contents
    if isinstance(schema, Mapping) and schema.get("deprecated"):
        return str(schema.get("description") or f"{name} schema version {version} is deprecated")
    return None


_TYPE_WORDS = {"string": "text", "array": "a list (lines starting with '- ')", "object": "a mapping (key: value lines)",
               "integer": "a whole number", "number": "a number", "boolean": "true or false"}


def _hint(err: Any, version: int) -> str:
    kind = err.validator
    if kind == "minItems":
        have = len(err.instance) if isinstance(err.instance, list) else 0
        what = "seed examples" if err.absolute_path and err.absolute_path[-1] == "seed_examples" else "items"
        return f"it has {have}; add {err.validator_value - have} more {what}"
    if kind == "required":
        return "add the missing key"
    if kind == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else "string"
        hint = f"write {_TYPE_WORDS.get(want, want)} here"
        if want == "string" and isinstance(err.instance, (int, float, bool)) or type(err.instance).__name__ in ("date", "datetime"):
            hint += " (quote it: YAML reads this value as a number, date or boolean)"
        return hint
    if kind == "minLength":
        return "write a non-empty value"
    if kind in ("unevaluatedProperties", "additionalProperties"):
        allowed = sorted(_properties(err.schema, version))
        extra = [k for k in (err.instance or {}) if k not in allowed] if isinstance(err.instance, Mapping) else []
        tips = []
        for k in extra:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            tips.append(f"'{k}' -> did you mean '{close[0]}'?" if close else f"remove '{k}'")
        allowed_txt = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return ("; ".join(tips) or "remove the unexpected keys") + allowed_txt
    if kind == "const":
        if list(err.absolute_path) == ["version"]:
            return "use version: 3, the current schema"
        return f"set it to {err.validator_value!r}"
    if kind == "uniqueItems":
        return "remove or change the repeated entry"
    return ""


def schema_errors(version: int, name: str, contents: Any) -> Iterator[tuple[list[Any], str, str]]:
    """(absolute path, InstructLab-style yaml path, message with a fix) for every schema violation."""
    note = deprecation(version, name)
    if note:
        fix = "convert it to version 3 (see `sdg taxonomy init` for an example)" if name == "knowledge" else ""
        yield [], "", f"{note}{'; ' + fix if fix else ''}"
        return
    for err in _validator(version, name).iter_errors(contents):
        yaml_path = err.json_path[1:] or "."
        if err.validator == "minItems":
            message = f"Value must have at least {err.validator_value} items"
        else:
            message = err.message[-200:]
        hint = _hint(err, version)
        yield list(err.absolute_path), yaml_path, f"{message}{'; ' + hint if hint else ''}"
