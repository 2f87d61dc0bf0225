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
    generated: int = 0  # samples parsed from generation replies, before any judge or filter
    kept: int = 0  # in the training files: passed the pipeline's judges and filters and the quality stage
    failed_units: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # in the pipeline: "block:reason" -> samples
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    pipeline_kept: int = 0  # rows the pipeline kept (journaled), before the run-wide quality stage
    quality_dropped: dict[str, int] = field(default_factory=dict)  # run-wide quality stage: reason -> rows
    topup_units: int = 0  # units run beyond the plan because the leaf was short (leaf-level targets)

    @property
    def funnel(self) -> list[tuple[str, int]]:
        """generated -> passed the pipeline (judges, filters) -> unique (exact and near duplicates gone)
        -> kept (seed copies and contaminated rows gone too)."""
        dups = sum(n for r, n in self.quality_dropped.items() if r in ("exact_duplicate", "near_duplicate"))
        # (rows past the leaf's target, quality_dropped["beyond_target"], go between deduplicated and kept)
        return [("generated", self.generated), ("judged", self.pipeline_kept),
                ("deduplicated", self.pipeline_kept - dups), ("kept", self.kept)]


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
    units_not_needed: int  # planned units never sent: their leaf had its target (leaf-level targets)
    units_topup: int  # units run beyond the plan for leaves short of their target
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
    judge: dict[str, Any] = field(default_factory=dict)  # name, backend, model (empty: the teacher judged)
    servers: dict[str, int] = field(default_factory=dict)  # endpoint name -> requests this run sent it
    # endpoint name -> in-flight limit reached (adaptive concurrency), slots, n cap, prefix-routed, throttled
    endpoints: dict[str, Any] = field(default_factory=dict)
    structured_verdicts: int = 0  # judge requests sent with a JSON schema (0: free text)
    yield_figures: dict[str, Any] = field(default_factory=dict)  # what each kept sample cost (see yield_figures())
    quality: dict[str, Any] = field(default_factory=dict)  # the quality stage's drops, by reason


def _write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2, default=str))


REPORT_FORMAT = 2


def yield_figures(*, kept: int, generated: int, requests: int, prompt_tokens: int,
                  completion_tokens: int, cached_tokens: int | None = None) -> dict[str, float | None]:
    """What each kept sample cost: kept samples per 1k prompt / completion / all tokens (and per 1k tokens the
    teacher computed: prompt tokens from its prefix cache left out), requests per kept sample,
    and the share of completion tokens spent on samples that were not kept (estimated by sample count: the
    generated samples that did not reach the training files, over all generated). None where undefined."""
    def per_1k(tokens: int) -> float | None:
        return round(1000 * kept / tokens, 3) if tokens else None

    return {"kept_per_1k_prompt_tokens": per_1k(prompt_tokens),
            "kept_per_1k_completion_tokens": per_1k(completion_tokens),
            "kept_per_1k_tokens": per_1k(prompt_tokens + completion_tokens),
            # what the teacher computed: prompt tokens its prefix cache served cost no prefill
            **({"kept_per_1k_computed_tokens": per_1k(max(0, prompt_tokens - cached_tokens) + completion_tokens)}
               if cached_tokens is not None else {}),
            "requests_per_kept": round(requests / kept, 3) if kept else None,
            "completion_share_on_dropped": round(1 - min(kept, generated) / generated, 3) if generated else None,
            # prompt tokens served from the servers' prefix caches (llama.cpp, vLLM report them per request)
            **({"prefix_cache_hit_rate": round(cached_tokens / prompt_tokens, 3) if prompt_tokens else None}
               if cached_tokens is not None else {})}


def quality_report(quality: Mapping[str, LeafQuality], stats: Any = None, *, names: Mapping[str, str] | None = None,
                   totals: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of quality_report.json (format 2): `run` (totals, throughput over time) and `leaves`
    (per leaf id in plan order: counts, funnel, and the statistics of `stats`, a QualityStats)."""
    leaves: dict[str, Any] = {}
    for leaf_id, q in quality.items():
        leaves[leaf_id] = {"name": (names or {}).get(leaf_id, leaf_id), **asdict(q),
                           "funnel": [list(step) for step in q.funnel],
                           **(stats.leaf(leaf_id) if stats is not None else {})}
    run = dict(totals or {})
    if stats is not None:
        run.update(stats.run())
    return {"format": REPORT_FORMAT, "run": run, "leaves": leaves}


def write_quality_report(run_dir: Path, quality: Mapping[str, LeafQuality], stats: Any = None, *,
                         names: Mapping[str, str] | None = None, totals: Mapping[str, Any] | None = None) -> Path:
    path = Path(run_dir) / QUALITY_REPORT
    _write_json(path, quality_report(quality, stats, names=names, totals=totals))
    return path


def write_manifest(run_dir: Path, manifest: Manifest) -> Path:
    path = Path(run_dir) / MANIFEST
    _write_json(path, asdict(manifest))
    return path
