"""`sdg data generate` as one library call: changed leaves -> plan -> teacher -> engine -> outputs.

I/O lives here at the edge; planning (engine.plan), the engine (engine.runner) and the writers
(output.*) stay separate. The same function runs on a laptop, in a Slurm job and from Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from omegaconf import OmegaConf

from sdg import __version__
from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.engine.journal import JournalStore
from sdg.engine.plan import LeafPlan, Plan, make_plan, run_fingerprint
from sdg.engine.progress import Progress, fmt_duration
from sdg.engine.rundir import RunDir, choose_run_dir, write_state
from sdg.engine.runner import ErrorBreaker, RunStats, run_plan
from sdg.errors import SdgError, ValidationFailed
from sdg.taxonomy.leaves import KnowledgeLeaf, Leaf, leaf_from, with_chunks

Log = Callable[[str], None]


class NothingToGenerate(SdgError):
    """No new or changed leaves: said clearly, with the base ref that was used."""


@dataclass(frozen=True)
class DryRun:
    plan: Plan
    requests: int
    output_tokens: int
    estimate_s: float | None
    by_kind: Mapping[str, int]

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        eta = fmt_duration(self.estimate_s) if self.estimate_s else "unknown (set teacher.throughput_tok_s)"
        return (f"plan: {len(self.plan.leaves)} leaves ({kinds}); {self.plan.units} units; target "
                f"{self.plan.target_samples} samples (scale factor {self.plan.scale}); at most {self.requests} "
                f"requests and {self.output_tokens} output tokens; estimated time {eta}")


@dataclass
class GenerateResult:
    plan: Plan
    dry_run: DryRun | None = None
    run_dir: Path | None = None
    stats: RunStats | None = None
    outputs: Any = None
    complete: bool = False
    warnings: list[str] = field(default_factory=list)
    quality: Mapping[str, Any] = field(default_factory=dict)  # per leaf id: quality_report.json


def _kinds(plan: Plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for lp in plan.leaves:
        out[lp.leaf.kind] = out.get(lp.leaf.kind, 0) + 1
    return out


def select_leaves(cfg: SdgConfig, *, base_is_default: bool, log: Log) -> list[Leaf]:
    """Changed leaves of the taxonomy, validated and typed, knowledge ones with their chunks."""
    from sdg.taxonomy.api import diff_taxonomy

    root = Path(cfg.taxonomy.path).expanduser()
    if not root.exists():
        raise SdgError(f"no taxonomy at {root}: create the example one with `sdg taxonomy init`, clone yours "
                       "with `sdg taxonomy init --repository URL`, or pass --taxonomy-path DIR")
    report = diff_taxonomy(cfg, base_is_default=base_is_default)
    for note in report.diff.notes:
        log(f"note: {note}")
    if not report.ok:
        raise ValidationFailed(f"{report.validation.errors} errors in the taxonomy; nothing was generated",
                               list(report.validation.findings))
    if not report.diff.changed:
        raise NothingToGenerate(f"no new or changed leaves in {root} against '{report.diff.base}'; commit "
                                "changes on a branch, or pass --taxonomy-base empty to generate for every leaf")
    leaves = [leaf_from(r) for r in report.validation.files]
    docs = cfg.taxonomy.documents
    return [with_chunks(leaf, Path(docs.cache_dir), docs.chunk_tokens, docs.chunk_overlap_tokens)
            if isinstance(leaf, KnowledgeLeaf) else leaf for leaf in leaves]


def load_pipelines(cfg: SdgConfig, plan_kinds: set[str]) -> dict[str, Any]:
    from sdg.pipeline.loader import load_pipeline

    return {kind: load_pipeline(cfg.pipeline.name, kind) for kind in sorted(plan_kinds)}


def dry_run(plan: Plan, pipelines: Mapping[str, Any], teacher: TeacherConfig) -> DryRun:
    requests = tokens = 0
    for lp in plan.leaves:
        p = pipelines[lp.kind]
        for share in lp.shares:
            requests += len(lp.inputs) * p.max_requests_per_unit(share)
            tokens += len(lp.inputs) * p.max_output_tokens_per_unit(share)
    estimate = tokens / teacher.throughput_tok_s if teacher.throughput_tok_s else None
    return DryRun(plan, requests, tokens, estimate, _kinds(plan))


def _slots(teacher: TeacherConfig) -> int:
    if teacher.backend == "llama-cpp":
        return teacher.llama_cpp.n_parallel
    if teacher.backend == "vllm":
        return teacher.vllm.max_num_seqs or 256
    return 8


@contextlib.contextmanager
def teacher_endpoints(teacher: TeacherConfig) -> Iterator[list[Any]]:
    """The configured endpoint (checked), or the configured teacher started here and always stopped."""
    from sdg.teacher.serve import serving

    with serving(teacher) as endpoints:
        yield endpoints


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Slurm and `kill` send SIGTERM: unwind like Ctrl-C so servers stop and journals close."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _git_commit(root: Path) -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=30)
        return {"commit": head.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"sdg": __version__, "python": platform.python_version()}
    for dist in ("hydra-core", "omegaconf", "httpx", "xllamacpp", "instructlab-schema", "vllm"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _public_config(cfg: SdgConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    if isinstance(data, dict) and data.get("teacher", {}).get("api_key"):
        data["teacher"]["api_key"] = "***"
    return data  # type: ignore[return-value]


class JournalRows(Mapping[str, list[dict]]):
    """Generated rows by leaf id, read from the leaf's journals when asked for: the output writers take one
    leaf at a time, so a 100k-unit run never holds every row in memory at once."""

    def __init__(self, plan: Plan, journals: JournalStore) -> None:
        self._plan, self._journals = plan, journals
        self._leaves = {lp.leaf.id: lp for lp in plan.leaves}

    def __getitem__(self, leaf_id: str) -> list[dict]:
        lp = self._leaves[leaf_id]
        return _leaf_rows(lp, self._plan.seed, self._journals)[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)


def _leaf_rows(lp: LeafPlan, seed: int, journals: JournalStore) -> tuple[list[dict], dict[str, Any]]:
    """A leaf's kept rows in plan order (deterministic) and its quality counts."""
    records = {r.unit: r for r in journals.load(lp.leaf.name)}
    out: list[dict] = []
    q = {"kind": lp.leaf.kind, "units": lp.units, "target": lp.target_samples, "generated": 0, "kept": 0,
         "failed_units": 0, "dropped": {}, "requests": 0, "completion_tokens": 0}
    for unit in lp.iter_units(seed):
        rec = records.get(unit.id)
        if rec is None:
            continue
        q["generated"] += rec.generated
        q["requests"] += rec.requests
        q["completion_tokens"] += rec.completion_tokens
        for reason, n in rec.dropped.items():
            q["dropped"][reason] = q["dropped"].get(reason, 0) + n
        if rec.status != "done":
            q["failed_units"] += 1
            continue
        out.extend({**row, "_unit_id": unit.id} for row in rec.rows)
    q["kept"] = len(out)
    return out, q


def collect_rows(plan: Plan, journals: JournalStore) -> tuple[JournalRows, dict[str, dict[str, Any]]]:
    """Rows by leaf id (lazy: read again per leaf when the writers ask) and per-leaf quality counts."""
    quality = {lp.leaf.id: _leaf_rows(lp, plan.seed, journals)[1] for lp in plan.leaves}
    return JournalRows(plan, journals), quality


@dataclass(frozen=True)
class PreparedRun:
    """Everything fixed before a teacher is started: the plan, its pipelines and the run's identity.

    Shared by a local run and the Slurm driver, so both find (and resume) the same run folder."""

    plan: Plan
    pipelines: Mapping[str, Any]
    estimate: DryRun
    pipeline_fingerprints: Mapping[str, str]
    fingerprint: str
    components: Mapping[str, Any]
    started: float


def prepare_run(cfg: SdgConfig, *, base_is_default: bool = True, log: Log = print) -> PreparedRun:
    """Changed leaves -> plan -> pipelines -> estimate (logged) -> run fingerprint."""
    started = time.time()
    leaves = select_leaves(cfg, base_is_default=base_is_default, log=log)
    plan = make_plan(leaves, scale=cfg.pipeline.sdg_scale_factor, samples_per_unit=cfg.pipeline.samples_per_unit,
                     seed=cfg.generate.seed)
    pipelines = load_pipelines(cfg, {lp.kind for lp in plan.leaves})
    estimate = dry_run(plan, pipelines, cfg.teacher)
    log(estimate.describe())
    # What shapes the data, not where it is served: a restarted server or a requeued job on a new port resumes.
    teacher_id = {"name": cfg.teacher.name, "model": cfg.teacher.model, "served_model_name": cfg.teacher.served_model_name,
                  "max_tokens": cfg.teacher.max_tokens}
    fps = {k: p.fingerprint for k, p in pipelines.items()}
    components = {"leaves": {lp.leaf.id: lp.fingerprint for lp in plan.leaves}, "pipelines": fps, "teacher": teacher_id,
                  "scale": plan.scale, "samples_per_unit": plan.samples_per_unit, "seed": plan.seed}
    return PreparedRun(plan, pipelines, estimate, fps, run_fingerprint(plan, fps, teacher_id), components, started)


def open_run(cfg: SdgConfig, prep: PreparedRun, *, log: Log = print, **state_extra: Any) -> tuple[RunDir, dict[str, Any]]:
    """The run folder (the unfinished one with this fingerprint, or a new one) marked running."""
    run = choose_run_dir(Path(cfg.generate.output_dir).expanduser(), prep.fingerprint, dict(prep.components),
                         resume=cfg.generate.resume)
    log(f"{'resuming' if run.resumed else 'writing'} run {run.path}")
    state = {"fingerprint": prep.fingerprint, "stamp": run.stamp, "status": "running",
             "components": prep.components, "started": prep.started, **state_extra}
    write_state(run, state)
    return run, state


def done_units(plan: Plan, journals: JournalStore) -> dict[str, set[str]]:
    """Unit ids already done, by leaf name (what a resume skips)."""
    return {lp.leaf.name: {r.unit for r in journals.load(lp.leaf.name) if r.status == "done"} for lp in plan.leaves}


def finish_run(cfg: SdgConfig, prep: PreparedRun, run: RunDir, state: dict[str, Any], stats: RunStats,
               journals: JournalStore, **state_extra: Any) -> GenerateResult:
    """Journals -> InstructLab outputs, manifest and quality report; the run marked complete or not."""
    from sdg.output.instructlab import write_outputs

    plan = prep.plan
    result = GenerateResult(plan, prep.estimate, run.path, stats)
    rows, quality = collect_rows(plan, journals)
    result.quality = quality
    result.outputs = write_outputs(run.path, run.stamp, [lp.leaf for lp in plan.leaves], rows,
                                   system_prompt=cfg.generate.system_prompt, seed=cfg.generate.seed)
    failed = sum(q["failed_units"] for q in quality.values())
    result.complete = failed == 0
    _write_reports(cfg, run, plan, stats, quality, prep.pipeline_fingerprints, prep.started, result)
    state.update(status="complete" if result.complete else "incomplete", finished=time.time(), **state_extra)
    write_state(run, state)
    if failed:
        result.warnings.append(f"{failed} units failed (teacher errors; see quality_report.json): run the same "
                               "command again to retry just those")
    return result


def in_flight_per_server(cfg: SdgConfig) -> int:
    """Requests kept in flight at one teacher server: generate.max_concurrency, else twice its slots."""
    return cfg.generate.max_concurrency or 2 * _slots(cfg.teacher)


def generate(cfg: SdgConfig, *, base_is_default: bool = True, log: Log = print) -> GenerateResult:
    """Run (or resume, or dry-run) a generation for the taxonomy's changed leaves."""
    prep = prepare_run(cfg, base_is_default=base_is_default, log=log)
    if cfg.generate.dry_run:
        return GenerateResult(prep.plan, prep.estimate)
    plan = prep.plan
    run, state = open_run(cfg, prep, log=log)
    journals = JournalStore(run.journal_dir)
    done = done_units(plan, journals)
    mode = cfg.generate.progress
    if mode == "auto":
        import sys

        mode = "bar" if sys.stderr.isatty() else "log"
    progress = Progress(plan.units, len(plan.leaves), mode=mode, interval_s=cfg.generate.progress_interval_s)
    try:
        with _sigterm_as_interrupt(), teacher_endpoints(cfg.teacher) as endpoints:
            stats = asyncio.run(_run(cfg, plan, prep.pipelines, journals, done, progress, endpoints))
    finally:
        progress.close()
        journals.close()
    return finish_run(cfg, prep, run, state, stats, journals)


async def _run(cfg: SdgConfig, plan: Plan, pipelines: Mapping[str, Any], journals: JournalStore,
               done: Mapping[str, set[str]], progress: Progress, endpoints: list[Any]) -> RunStats:
    from sdg.teacher.client import Endpoint, TeacherClient

    per = in_flight_per_server(cfg)
    eps = [Endpoint(e.base_url, e.model, e.api_key, max_in_flight=per, name=f"{e.backend}-{i}")
           for i, e in enumerate(endpoints)]
    cap = cfg.teacher.max_tokens
    async with TeacherClient(eps, timeout_s=cfg.teacher.request_timeout_s, max_retries=cfg.teacher.max_retries) as client:
        async def chat(messages: list[dict], *, max_tokens: int, **kw: Any) -> Any:
            return await client.chat(messages, max_tokens=min(max_tokens, cap), **kw)  # teacher.max_tokens caps blocks

        breaker = ErrorBreaker(cfg.generate.error_rate_limit, cfg.generate.error_window)
        return await run_plan(plan, pipelines, chat, journals, done=done, workers=per * len(eps),
                              progress=progress, breaker=breaker)


def _write_reports(cfg: SdgConfig, run: RunDir, plan: Plan, stats: RunStats, quality: Mapping[str, Any],
                   fps: Mapping[str, str], started: float, result: GenerateResult) -> None:
    manifest = {
        "sdg_version": __version__, "run_dir": str(run.path), "stamp": run.stamp, "resumed": run.resumed,
        "taxonomy": {"path": cfg.taxonomy.path, "base": cfg.taxonomy.base, **_git_commit(Path(cfg.taxonomy.path))},
        "leaves": [{"id": lp.leaf.id, "name": lp.leaf.name, "kind": lp.leaf.kind, "path": lp.leaf.path,
                    "fingerprint": lp.fingerprint, "units": lp.units, "target_samples": lp.target_samples,
                    "kept": quality[lp.leaf.id]["kept"]} for lp in plan.leaves],
        "teacher": {"name": cfg.teacher.name, "backend": cfg.teacher.backend, "model": cfg.teacher.model,
                    "served_model_name": cfg.teacher.served_model_name},
        "pipeline": {"name": cfg.pipeline.name, "fingerprints": dict(fps), "scale_factor": plan.scale,
                     "samples_per_unit": plan.samples_per_unit},
        "seed": plan.seed, "config": _public_config(cfg), "versions": _versions(),
        "counts": {"units": plan.units, "units_run": stats.units_done, "units_resumed": stats.units_resumed,
                   "units_failed": stats.units_failed, "target_samples": plan.target_samples,
                   "generated": sum(q["generated"] for q in quality.values()),
                   "kept": sum(q["kept"] for q in quality.values()), "requests": stats.requests,
                   "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens},
        "timings": {"started": started, "finished": time.time(), "engine_s": stats.elapsed_s,
                    "output_tok_s": stats.completion_tokens / stats.elapsed_s if stats.elapsed_s else 0.0},
        "errors": dict(stats.errors),
    }
    (run.path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    (run.path / "quality_report.json").write_text(json.dumps(quality, indent=2), encoding="utf-8")
