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

`sampling` (the config's `generate.sampling`) overrides the llm blocks' temperature, top_p,
frequency_penalty, max_tokens and seed at load time: a block's own entry (`blocks.<name>`) over the run-wide values over the YAML. The
values applied are part of the fingerprint, so a run resumed with other sampling is a different run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

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
SAMPLING_KEYS = ("temperature", "top_p", "frequency_penalty", "max_tokens", "seed")
SAMPLING_PREFIX = "generate.sampling.blocks"


def load_pipeline(name_or_dir: str, kind: str, *, user_dirs: Sequence[Path] = (), sampling: Any = None) -> Pipeline:
    """The pipeline for one leaf kind. `user_dirs`: more places to import `module:Class` blocks from.
    `sampling`: `generate.sampling` (SamplingConfig, or a mapping of the same shape); None = the YAML's values."""
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
    overrides = _sampling(sampling)
    if overrides[1]:  # block names are checked against every file of the pipeline, not only this kind's
        _check_block_names(overrides[1], name_or_dir, [base / f for f in KIND_FILES.values()])
    return load_file(path, kind, prompt_dirs=prompt_dirs, block_dirs=(base, *map(Path, user_dirs)),
                     sampling=sampling)


def load_file(path: Path, kind: str, *, prompt_dirs: Sequence[Path], block_dirs: Sequence[Path] = (),
              sampling: Any = None) -> Pipeline:
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
    run_wide, per_block = _sampling(sampling)
    applied: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(blocks_raw, 1):
        where = f"{path}: block {i}"
        blocks.append(block := _block(spec, where, block_dirs, env, sources, names, (run_wide, per_block), applied))
        columns = block.columns_out(columns, f"{where} ('{block.name}')")
    _default_generated(blocks)
    digest = hashlib.sha256(FORMAT + b"\0" + kind.encode() + b"\0" + raw)
    for key in sorted({**env.files, **sources}):
        digest.update(b"\0" + key.encode() + b"\0" + {**env.files, **sources}[key])
    if applied:  # only what differs from the YAML: no override, or one that changes nothing, keeps the fingerprint
        digest.update(b"\0sampling\0" + json.dumps(applied, sort_keys=True).encode())
    outputs = frozenset(c for c in columns if not is_scratch(c))
    return Pipeline(name.strip(), kind, tuple(blocks), digest.hexdigest(), path, description, outputs)


def _block(spec: Any, where: str, block_dirs: Sequence[Path], env: BindEnv, sources: dict[str, bytes],
           names: set[str], sampling: tuple[dict[str, Any], dict[str, dict[str, Any]]] = ({}, {}),
           applied: dict[str, dict[str, Any]] | None = None) -> Block:
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
    run_wide, per_block = sampling
    if name in per_block and not (isinstance(cls, type) and issubclass(cls, LLMBlock)):
        raise ConfigError(f"{SAMPLING_PREFIX}.{name}: block '{name}' ({where}) is a {type_name} block; sampling "
                          "applies to llm blocks only")
    if isinstance(cls, type) and issubclass(cls, LLMBlock) and (run_wide or name in per_block):
        values = {**run_wide, **per_block.get(name, {})}  # the block's own entry over the run-wide values
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        changed = {k: v for k, v in values.items() if spec.get(k, defaults.get(k)) != v}
        if changed:
            spec = {**spec, **changed}
            if applied is not None:
                applied[name] = changed
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


def _sampling(sampling: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(run-wide values, values by block name) of `generate.sampling`, without the unset (None) ones."""
    if sampling is None:
        return {}, {}

    def values(node: Any) -> dict[str, Any]:
        get = node.get if isinstance(node, Mapping) else (lambda k: getattr(node, k, None))
        return {k: get(k) for k in SAMPLING_KEYS if get(k) is not None}

    blocks = sampling.get("blocks") if isinstance(sampling, Mapping) else getattr(sampling, "blocks", None)
    return values(sampling), {str(name): values(entry) for name, entry in dict(blocks or {}).items()}


def _check_block_names(wanted: Mapping[str, Any], pipeline: str, files: Sequence[Path]) -> None:
    """ConfigError for a `generate.sampling.blocks` entry that names no block of the pipeline (any kind)."""
    found: dict[str, list[str]] = {}  # block name -> its types
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # a missing or broken file is reported when its kind is loaded
        for spec in (data.get("blocks") if isinstance(data, dict) else None) or []:
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                found.setdefault(spec["name"], []).append(str(spec.get("type")))
    unknown = sorted(n for n in wanted if n not in found)
    if unknown:
        llm = sorted(n for n, types in found.items() if any(t == "llm" or ":" in t for t in types))
        raise ConfigError(f"{', '.join(f'{SAMPLING_PREFIX}.{n}' for n in unknown)}: pipeline '{pipeline}' has no "
                          f"block named {' or '.join(repr(n) for n in unknown)}; its llm blocks are "
                          f"{', '.join(llm) or '(none)'} (other blocks: {', '.join(sorted(set(found) - set(llm)))})")
