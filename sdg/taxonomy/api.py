"""The taxonomy verbs as library calls: config in, result out (the CLI only formats them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sdg.config.schema import SdgConfig
from sdg.taxonomy.diff import DEFAULT_BASE, TaxonomyDiff, taxonomy_diff
from sdg.taxonomy.documents import DocumentPolicy
from sdg.taxonomy.findings import Finding
from sdg.taxonomy.init import InitResult, init_taxonomy
from sdg.taxonomy.layout import QNA_NAME, ROOTS, is_near_miss, taxonomy_root_of
from sdg.taxonomy.validate import ValidationOptions, ValidationResult, validate_files, yamllint_config_from

PROMPT_RESERVE_TOKENS = 512  # instructions and formatting around the seed text in one prompt


def seed_token_budget(cfg: SdgConfig) -> int:
    """Seed text one prompt can hold: configured, or what the teacher's context leaves."""
    if cfg.taxonomy.seed_token_budget:
        return int(cfg.taxonomy.seed_token_budget)
    return max(256, cfg.teacher.context_length - cfg.teacher.max_tokens - PROMPT_RESERVE_TOKENS)


def validation_options(cfg: SdgConfig, documents: bool = False) -> ValidationOptions:
    t = cfg.taxonomy
    return ValidationOptions(
        yamllint_config=yamllint_config_from(t.yaml_rules),
        max_file_bytes=t.max_file_bytes,
        max_yaml_nodes=t.max_yaml_nodes,
        seed_token_budget=seed_token_budget(cfg),
        documents=documents,
        documents_cache=Path(t.documents.cache_dir),
        chunk_tokens=t.documents.chunk_tokens,
        chunk_overlap_tokens=t.documents.chunk_overlap_tokens,
        document_policy=DocumentPolicy.from_config(t.documents),
    )


@dataclass(frozen=True)
class DiffReport:
    diff: TaxonomyDiff
    validation: ValidationResult
    near_miss_warnings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return self.validation.ok


def _near_miss_warning(rel: str, display: str) -> Finding:
    name = rel.rsplit("/", 1)[-1]
    return Finding(display, 1, 1, "warning", f"Found a '{name}' file: taxonomy files must be named '{QNA_NAME}'. "
                   f"File will not be checked; rename it to {QNA_NAME}", "", "read")


def diff_taxonomy(cfg: SdgConfig, *, documents: bool = False) -> DiffReport:
    """`sdg taxonomy diff`: changed leaves against the base ref, then their validation."""
    root = Path(cfg.taxonomy.path).expanduser()
    if root.is_file():  # as in ilab: a single qna.yaml given as the taxonomy path
        one = TaxonomyDiff(root.parent, cfg.taxonomy.base or DEFAULT_BASE, None, (root.name,), ())
        result = validate_files([root], [taxonomy_root_of(root) or root.parent], validation_options(cfg, documents))
        return DiffReport(one, result, ())
    diff = taxonomy_diff(root, cfg.taxonomy.base)
    result = validate_files([root / p for p in diff.changed], root, validation_options(cfg, documents))
    near = tuple(_near_miss_warning(p, str(root / p)) for p in diff.near_misses)
    return DiffReport(diff, result, near)


def _collect(target: Path) -> tuple[list[Path], list[Path]]:
    """Leaf files and near-miss files at or below `target`."""
    if not target.is_dir():
        return [target], []
    files: list[Path] = []
    near: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name == QNA_NAME:
                files.append(p)
            elif is_near_miss(f"{ROOTS[0]}/{name}"):
                near.append(p)
    return files, near


def validate_taxonomy(cfg: SdgConfig, paths: Sequence[str] = (), *, documents: bool = False) -> tuple[ValidationResult, tuple[Finding, ...]]:
    """`sdg taxonomy validate`: the given files/dirs, or the whole configured taxonomy."""
    configured = Path(cfg.taxonomy.path).expanduser()
    targets = [Path(p).expanduser() for p in paths] or [configured]
    files: list[Path] = []
    near: list[Finding] = []
    roots: list[Path] = [configured]
    for t in targets:
        if t.is_dir() and any((t / r).is_dir() for r in ROOTS):
            roots.insert(0, t)
        elif (found_root := taxonomy_root_of(t)) is not None:
            roots.append(found_root)
        found, misses = _collect(t)
        files.extend(found)
        near.extend(_near_miss_warning(m.name, str(m)) for m in misses)
    return validate_files(files, roots, validation_options(cfg, documents)), tuple(near)


def init(cfg: SdgConfig) -> InitResult:
    """`sdg taxonomy init`: clone `taxonomy.repository`, or create the skeleton, at `taxonomy.path`."""
    return init_taxonomy(Path(cfg.taxonomy.path), cfg.taxonomy.repository or None)
