"""Load a pipeline from YAML: the packaged `simple`/`full`, or a directory of the user's own.

A directory holds `knowledge.yaml`, `freeform_skills.yaml`, `grounded_skills.yaml` and a `prompts/`
folder; prompts not found there come from the packaged ones. Everything is checked here (keys, types,
prompt files, parser names, every column a prompt or block uses), so a mistake is a ConfigError at
start-up that names the file and the block, never a failure in the middle of a run.

    name: simple-freeform-skills
    blocks:
      - type: llm
        name: generate
        prompt: simple_freeform.txt
        parser: qa_pairs
        outputs: {question: question, answer: response}
        num_samples: target_samples
        max_tokens: 1024
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import yaml

from sdg.errors import ConfigError
from sdg.pipeline.blocks import BindEnv, Block, block_class
from sdg.pipeline.inputs import INPUT_COLUMNS, KIND_FILES, KINDS, is_scratch
from sdg.pipeline.llm_block import LLMBlock
from sdg.pipeline.pipeline import Pipeline

PACKAGE_DIR = Path(__file__).resolve().parent
DEFINITIONS = PACKAGE_DIR / "definitions"
PROMPTS = PACKAGE_DIR / "prompts"
PACKAGED = ("simple", "full")
FORMAT = b"sdg-pipeline/1"  # bump when the meaning of a YAML changes (fingerprints change with it)
TOP_KEYS = ("name", "description", "version", "blocks")


def load_pipeline(name_or_dir: str, kind: str, *, user_dirs: Sequence[Path] = ()) -> Pipeline:
    """The pipeline for one leaf kind. `user_dirs`: more places to import `module:Class` blocks from."""
    if kind not in KINDS:
        raise ConfigError(f"unknown leaf kind '{kind}' for a pipeline; use one of {', '.join(KINDS)} "
                          "(foundational leaves run through freeform_skill or grounded_skill)")
    if name_or_dir in PACKAGED:
        base, prompt_dirs = DEFINITIONS / name_or_dir, (PROMPTS,)
    else:
        base = Path(name_or_dir).expanduser()
        if not base.is_dir():
            raise ConfigError(f"pipeline '{name_or_dir}' is neither {' nor '.join(PACKAGED)} nor a directory "
                              f"holding {', '.join(KIND_FILES.values())}")
        prompt_dirs = (base / "prompts", PROMPTS)
    path = base / KIND_FILES[kind]
    return load_file(path, kind, prompt_dirs=prompt_dirs, block_dirs=(base, *map(Path, user_dirs)))


def load_file(path: Path, kind: str, *, prompt_dirs: Sequence[Path], block_dirs: Sequence[Path] = ()) -> Pipeline:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read pipeline file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline file is a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys: {', '.join(TOP_KEYS)}")
    name, version, blocks_raw = data.get("name"), data.get("version", 1), data.get("blocks")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{path}: 'name' is required (a non-empty string)")
    if version != 1:
        raise ConfigError(f"{path}: version {version!r} is not supported (this sdg reads version 1)")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}: 'description' must be a string")
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise ConfigError(f"{path}: 'blocks' must be a non-empty list of blocks")

    env = BindEnv(tuple(prompt_dirs))
    sources: dict[str, bytes] = {}
    blocks: list[Block] = []
    names: set[str] = set()
    columns = INPUT_COLUMNS[kind]
    for i, spec in enumerate(blocks_raw, 1):
        where = f"{path}: block {i}"
        blocks.append(block := _block(spec, where, block_dirs, env, sources, names))
        columns = block.columns_out(columns, f"{where} ('{block.name}')")
    _default_generated(blocks)
    digest = hashlib.sha256(FORMAT + b"\0" + kind.encode() + b"\0" + raw)
    for key in sorted({**env.files, **sources}):
        digest.update(b"\0" + key.encode() + b"\0" + {**env.files, **sources}[key])
    outputs = frozenset(c for c in columns if not is_scratch(c))
    return Pipeline(name.strip(), kind, tuple(blocks), digest.hexdigest(), path, description, outputs)


def _block(spec: Any, where: str, block_dirs: Sequence[Path], env: BindEnv, sources: dict[str, bytes],
           names: set[str]) -> Block:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a block is a mapping with at least 'type' and 'name', got {spec!r}")
    type_name, name = spec.get("type"), spec.get("name")
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{where}: 'type' is required (a block type name or 'module:Class')")
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"{where}: 'name' is required (a string without ':'; it prefixes drop reasons)")
    if name in names or name == "pipeline":
        raise ConfigError(f"{where}: block name '{name}' is used twice (or reserved); names must be unique")
    names.add(name)
    where = f"{where} ('{name}', type {type_name})"
    cls = block_class(type_name, block_dirs, where, sources)
    block = cls.from_config(spec, where)
    block.bind(env, where)
    return block


def _default_generated(blocks: Sequence[Block]) -> None:
    """With no block marked `count_generated`, the first teacher block that writes samples is the one."""
    llm = [b for b in blocks if isinstance(b, LLMBlock)]
    if llm and not any(b.count_generated for b in llm):
        first = next((b for b in llm if b._parser is not None and "score" not in b._parser.fields), None)
        if first is not None:
            first.count_generated = True
