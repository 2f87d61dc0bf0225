"""Mixing recipes (`*_recipe_<ds>.yaml`) as typed records: InstructLab's format, read strictly.

    datasets:
    - path: node_datasets_<ds>/<file>.jsonl     # relative to the recipe file (or absolute)
      sampling_size: 1.0                       # float: fraction of the rows; int: that many rows
    metadata:
      sys_prompt: ...

A recipe is hand-editable, so reading checks every entry and names the recipe and entry it rejects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from sdg.errors import RecipeError
from sdg.output.atomic import write_text

SamplingSize = Union[int, float]


@dataclass(frozen=True)
class RecipeEntry:
    path: str
    sampling_size: SamplingSize

    def resolve(self, recipe_file: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else Path(recipe_file).parent / p

    def describe(self, index: int) -> str:
        return f"datasets[{index}] ({self.path})"


@dataclass(frozen=True)
class Recipe:
    datasets: tuple[RecipeEntry, ...]
    sys_prompt: Optional[str] = None


def check_sampling_size(value: Any) -> Optional[str]:
    """Why `value` is not a sampling size, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"sampling_size must be a number (float = fraction of the rows, int = row count), got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"sampling_size must be finite, got {value!r}"
    if value < 0:
        return f"sampling_size must not be negative, got {value!r}"
    return None


def write_recipe(path: Path, recipe: Recipe) -> None:
    data = {"datasets": [{"path": e.path, "sampling_size": e.sampling_size} for e in recipe.datasets],
            "metadata": {"sys_prompt": recipe.sys_prompt}}
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096))


def read_recipe(path: Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise RecipeError(f"{path}: a recipe is a mapping with a `datasets:` list of {{path, sampling_size}}")
    entries = []
    for i, item in enumerate(data["datasets"]):
        where = f"{path}: datasets[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"].strip():
            raise RecipeError(f"{where}: each entry needs a `path` (string) and a `sampling_size`")
        where = f"{path}: datasets[{i}] ({item['path']})"
        if "sampling_size" not in item:
            raise RecipeError(f"{where}: missing sampling_size (1.0 = every row)")
        problem = check_sampling_size(item["sampling_size"])
        if problem:
            raise RecipeError(f"{where}: {problem}")
        unknown = sorted(set(item) - {"path", "sampling_size"})
        if unknown:
            raise RecipeError(f"{where}: unknown keys {unknown}; an entry has only path and sampling_size")
        entries.append(RecipeEntry(item["path"], item["sampling_size"]))
    meta = data.get("metadata") or {}
    prompt = meta.get("sys_prompt") if isinstance(meta, dict) else None
    if prompt is not None and not isinstance(prompt, str):
        raise RecipeError(f"{path}: metadata.sys_prompt must be a string")
    return Recipe(tuple(entries), prompt)
