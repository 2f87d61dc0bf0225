"""The two reports beside a run's data: `quality_report.json` (per leaf: what was generated, kept and
dropped, and why) and `manifest.json` (what made this run: taxonomy commit, teacher, pipeline, config,
versions, counts, timings). Typed records in, files out (atomically); the run decides what goes in."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sdg.output.atomic import atomic_open

QUALITY_REPORT = "quality_report.json"
MANIFEST = "manifest.json"


@dataclass
class LeafQuality:
    """One leaf's counts, summed over its journaled units."""

    kind: str
    units: int
    target: int
    generated: int = 0  # samples parsed before filters
    kept: int = 0
    failed_units: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> samples
    requests: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ManifestLeaf:
    id: str
    name: str
    kind: str
    path: str
    fingerprint: str
    units: int
    target_samples: int
    kept: int


@dataclass(frozen=True)
class ManifestCounts:
    units: int
    units_run: int
    units_resumed: int
    units_failed: int
    target_samples: int
    generated: int
    kept: int
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Manifest:
    sdg_version: str
    run_dir: str
    stamp: str
    resumed: bool
    taxonomy: dict[str, Any]  # path, base, commit, dirty
    leaves: list[ManifestLeaf]
    teacher: dict[str, Any]  # name, backend, model, served_model_name
    pipeline: dict[str, Any]  # name, fingerprints, scale_factor, samples_per_unit
    seed: int
    executor: dict[str, Any]  # local, or ray with nodes
    config: dict[str, Any]  # the composed config, secrets masked
    versions: dict[str, str]
    counts: ManifestCounts
    timings: dict[str, float]
    errors: dict[str, int]


def _write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2, default=str))


def write_quality_report(run_dir: Path, quality: Mapping[str, LeafQuality]) -> Path:
    """Per leaf id, in plan order."""
    path = Path(run_dir) / QUALITY_REPORT
    _write_json(path, {leaf_id: asdict(q) for leaf_id, q in quality.items()})
    return path


def write_manifest(run_dir: Path, manifest: Manifest) -> Path:
    path = Path(run_dir) / MANIFEST
    _write_json(path, asdict(manifest))
    return path
