"""Materialise a mixing recipe into one training file (`knowledge_train_msgs_*`, `skills_train_msgs_*`).

Per dataset entry, `sampling_size` picks rows: a float is a fraction (`int(rows * f)`), an int an
absolute count. Exactly all rows (1.0, or a count equal to the rows) keeps every row once, in order.
Fewer rows are drawn *without* replacement, more rows *with* replacement, from an RNG seeded by `seed`.
InstructLab always draws with replacement (`df.sample(n, replace=True, random_state=42)`), so even a
down-sample can repeat some rows and silently lose others; drawing without replacement when fewer rows
are wanted keeps every chosen sample distinct. All picks are then concatenated, shuffled with the seed
and written as `{id, messages, metadata, unmask}` records (see `training.py`); records with an empty
non-system turn are dropped.

Datasets are not loaded into memory: each file is indexed by line offsets and the picked lines are read
back in shuffled order, so a multi-GB phase-2 file mixes in the memory of its index.
"""

from __future__ import annotations

import json
import random
from array import array
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO, Optional

from sdg.output.atomic import atomic_open, dumps
from sdg.output.ids import IdMaker
from sdg.output.recipe import RecipeError, SamplingSize, read_recipe
from sdg.output.training import BadRecord, training_record


def sample_count(rows: int, sampling_size: SamplingSize) -> int:
    if isinstance(sampling_size, float):
        return int(rows * sampling_size)
    return int(sampling_size)


def sample_indices(rows: int, count: int, rng: random.Random) -> list[int]:
    """Row indices to take: all in order, a distinct subset, or an upsample with replacement."""
    if count == rows:
        return list(range(rows))
    if count < rows:
        return sorted(rng.sample(range(rows), count))
    if rows == 0:
        raise ValueError(f"the dataset is empty, so {count} rows cannot be drawn from it")
    return rng.choices(range(rows), k=count)


def _line_offsets(path: Path) -> array:
    """Byte offsets of the non-blank lines."""
    offsets = array("q")
    pos = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                offsets.append(pos)
            pos += len(line)
    return offsets


def _line_number(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def mix_recipe(recipe: Path, output: Path, *, system_prompt: Optional[str] = None, seed: int = 42) -> int:
    """Write the recipe's mix to `output` (atomically); returns the records written. `system_prompt`
    None uses the recipe's `metadata.sys_prompt`."""
    recipe = Path(recipe)
    spec = read_recipe(recipe)
    prompt = system_prompt if system_prompt is not None else spec.sys_prompt
    if prompt is None:
        raise RecipeError(f"{recipe}: no system prompt: the recipe has no metadata.sys_prompt and none was given")
    paths: list[Path] = []
    offsets: list[array] = []
    picks: list[tuple[int, int]] = []
    for i, entry in enumerate(spec.datasets):
        path = entry.resolve(recipe)
        if not path.is_file():
            raise RecipeError(f"{recipe}: {entry.describe(i)}: dataset file not found at {path}")
        lines = _line_offsets(path)
        rng = random.Random(f"{seed}\x00mix\x00{i}\x00{entry.path}")
        try:
            chosen = sample_indices(len(lines), sample_count(len(lines), entry.sampling_size), rng)
        except ValueError as exc:
            raise RecipeError(f"{recipe}: {entry.describe(i)}: {exc}; lower its sampling_size or drop it") from None
        paths.append(path)
        offsets.append(lines)
        picks.extend((i, j) for j in chosen)
    random.Random(f"{seed}\x00shuffle").shuffle(picks)

    new_id = IdMaker(seed, "mixed")
    written = 0
    with atomic_open(Path(output)) as out, ExitStack() as stack:
        handles: dict[int, BinaryIO] = {}
        for i, j in picks:
            f = handles.get(i)
            if f is None:
                f = handles[i] = stack.enter_context(open(paths[i], "rb"))
            f.seek(offsets[i][j])
            try:
                record = training_record(json.loads(f.readline()), system_prompt=prompt, new_id=new_id)
            except (ValueError, BadRecord) as exc:  # JSONDecodeError is a ValueError
                where = f"{paths[i]}:{_line_number(paths[i], offsets[i][j])}"
                raise RecipeError(f"{recipe}: {spec.datasets[i].describe(i)}: {where}: {exc}") from None
            if record is None:
                continue
            out.write(dumps(record))
            out.write("\n")
            written += 1
    return written
