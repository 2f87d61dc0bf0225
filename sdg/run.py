"""One generate run, in one place: `prepare(cfg) -> Run`, `execute(run, executor)`, `finish(run)`.

    prepare   changed leaves -> validated, typed leaves (documents fetched, chunked) -> plan -> pipelines
              -> estimate -> the run's fingerprint (what a resume must find unchanged). No teacher yet.
    execute   the run folder (resume the unfinished one with this fingerprint, or a new one), the units
              already journaled, then the executor runs the rest:
                LocalExecutor  one asyncio engine against this machine's teacher (started here or given)
                RayExecutor    (sdg.launch.ray_executor) units to one worker per Slurm node
    finish    journals -> InstructLab outputs, quality report, manifest; run.json complete or not

`generate(cfg)` is the three in a row; a local `sdg data generate`, a sweep's combination and node 0 of
a Slurm job all call it (the job passes its RayExecutor), so a run started anywhere resumes anywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol


from sdg import __version__
from sdg.config.schema import QualityConfig, SdgConfig, TeacherConfig
from sdg.engine.journal import JournalStore
from sdg.engine.plan import Plan, make_plan, run_fingerprint
from sdg.engine.progress import Progress, fmt_duration
from sdg.engine.rundir import RunDir, RunState, choose_run_dir, write_state
from sdg.engine.stats import RunStats
from sdg.errors import NothingToGenerate, SdgError, ValidationFailed
from sdg.output.quality_pass import JournalRows, QualityPass, run_quality_pass
from sdg.output.reports import (LeafQuality, Manifest, ManifestCounts, ManifestLeaf, write_manifest,
                                write_quality_report, yield_figures)
from sdg.taxonomy.leaves import KnowledgeLeaf, Leaf, leaf_from, with_chunks

Log = Callable[[str], None]


# --- prepare ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DryRun:
    """What a plan will cost: the most requests and output tokens its pipelines can send."""

    plan: Plan
    requests: int
    output_tokens: int
    estimate_s: float | None
    by_kind: Mapping[str, int]
    topup_factor: float = 1.0  # leaf-level targets: short leaves may ask for up to this many times their target

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        eta = fmt_duration(self.estimate_s) if self.estimate_s else "unknown (set teacher.throughput_tok_s)"
        topups = (f" (short leaves may be topped up to {self.topup_factor:g}x that: pipeline.max_overgeneration)"
                  if self.topup_factor > 1 else "")
        return (f"plan: {len(self.plan.leaves)} leaves ({kinds}); {self.plan.units} units; target "
                f"{self.plan.target_samples} samples (scale factor {self.plan.scale}); at most {self.requests} "
                f"requests and {self.output_tokens} output tokens for the planned units{topups}; estimated time {eta}")


@dataclass
class Run:
    """A prepared run; `execute` gives it a folder and stats, `finish` writes what it made."""

    cfg: SdgConfig
    plan: Plan
    pipelines: Mapping[str, Any]
    estimate: DryRun
    fingerprint: str
    components: dict[str, Any]  # what the fingerprint is made of (named in a conflict message)
    started: float
    folder: RunDir | None = None
    lease: Any = None  # engine.lease.RunLease while executing and finishing
    state: RunState | None = None
    stats: RunStats = field(default_factory=RunStats)
    executor: dict[str, Any] = field(default_factory=dict)  # the executor's own description


def changed_leaves(cfg: SdgConfig, *, log: Log) -> list[Leaf]:
    """Changed leaves of the taxonomy, validated and typed; knowledge ones without their documents yet (what
    a Slurm submission stages before queueing: sdg.launch.submit.stage_documents)."""
    from sdg.taxonomy.api import diff_taxonomy

    root = Path(cfg.taxonomy.path).expanduser()
    if not root.exists():
        raise SdgError(f"no taxonomy at {root}: create the example one with `sdg taxonomy init`, clone yours "
                       "with `sdg taxonomy init --repository URL`, or pass --taxonomy-path DIR")
    report = diff_taxonomy(cfg)
    for note in report.diff.notes:
        log(f"note: {note}")
    if not report.ok:
        raise ValidationFailed(f"{report.validation.errors} errors in the taxonomy; nothing was generated",
                               list(report.validation.findings))
    if not report.diff.changed:
        raise NothingToGenerate(f"no new or changed leaves in {root} against '{report.diff.base}'; commit "
                                "changes on a branch, or pass --taxonomy-base empty to generate for every leaf")
    return [leaf_from(r) for r in report.validation.files]


def select_leaves(cfg: SdgConfig, *, log: Log) -> list[Leaf]:
    """Changed leaves of the taxonomy, validated and typed, knowledge ones with their chunks."""
    docs = cfg.taxonomy.documents
    return [with_chunks(leaf, Path(docs.cache_dir).expanduser(), docs.chunk_tokens, docs.chunk_overlap_tokens)
            if isinstance(leaf, KnowledgeLeaf) else leaf for leaf in changed_leaves(cfg, log=log)]


def load_pipelines(cfg: SdgConfig, kinds: set[str]) -> dict[str, Any]:
    from sdg.pipeline.loader import load_pipeline

    # generate.sampling is applied to the blocks here, so it is part of each pipeline's fingerprint
    return {kind: load_pipeline(cfg.pipeline.name, kind, sampling=cfg.generate.sampling) for kind in sorted(kinds)}


def estimate(plan: Plan, pipelines: Mapping[str, Any], teacher: TeacherConfig) -> DryRun:
    requests = tokens = 0
    by_kind: dict[str, int] = {}
    for lp in plan.leaves:
        p = pipelines[lp.kind]
        by_kind[lp.leaf.kind] = by_kind.get(lp.leaf.kind, 0) + 1
        for share in lp.shares:
            requests += len(lp.inputs) * p.max_requests_per_unit(share)
            tokens += len(lp.inputs) * p.max_output_tokens_per_unit(share)
    seconds = tokens / teacher.throughput_tok_s if teacher.throughput_tok_s else None
    return DryRun(plan, requests, tokens, seconds, by_kind)


def prepare(cfg: SdgConfig, *, log: Log = print) -> Run:
    """Changed leaves -> plan -> pipelines -> estimate (logged) -> run fingerprint. Starts no teacher."""
    started = time.time()
    leaves = select_leaves(cfg, log=log)
    plan = make_plan(leaves, scale=cfg.pipeline.sdg_scale_factor, samples_per_unit=cfg.pipeline.samples_per_unit,
                     seed=cfg.generate.seed)
    pipelines = load_pipelines(cfg, {lp.kind for lp in plan.leaves})
    dry = estimate(plan, pipelines, cfg.teacher)
    if cfg.pipeline.leaf_targets:
        dry = dataclasses.replace(dry, topup_factor=cfg.pipeline.max_overgeneration)
    log(dry.describe())
    # What shapes the data, not where it is served: a restarted server or a requeued job on a new port resumes.
    t = cfg.teacher
    teacher_id = {"name": t.name, "model": t.model, "served_model_name": t.served_model_name, "max_tokens": t.max_tokens}
    if t.chat_template or t.system_prompt_mode != "system":  # they shape every prompt (absent: old runs resume)
        teacher_id.update(chat_template=t.chat_template, system_prompt_mode=t.system_prompt_mode)
    if cfg.judge is not None:  # a judge of its own shapes which samples pass (absent: old runs resume)
        j = cfg.judge
        teacher_id["judge"] = {"name": j.name, "model": j.model, "served_model_name": j.served_model_name,
                               "max_tokens": j.max_tokens, "structured_output": j.structured_output}
    fps = {k: p.fingerprint for k, p in pipelines.items()}
    components = {"leaves": {lp.leaf.id: lp.fingerprint for lp in plan.leaves}, "pipelines": fps, "teacher": teacher_id,
                  "scale": plan.scale, "samples_per_unit": plan.samples_per_unit, "seed": plan.seed}
    return Run(cfg, plan, pipelines, dry, run_fingerprint(plan, fps, teacher_id), components, started)


# --- execute ------------------------------------------------------------------------------------------

class Executor(Protocol):
    """Where a run's pending units run. It journals every finished unit under `run.folder.journal_dir`
    and reports each to `progress`; it returns what it ran (the driver merges its workers' stats)."""

    def execute(self, run: Run, done: Mapping[str, set[str]], progress: Progress) -> RunStats: ...

    def describe(self) -> dict[str, Any]: ...


def done_units(plan: Plan, journals: JournalStore) -> dict[str, set[str]]:
    """Unit ids already done, by leaf id (what a resume skips)."""
    return {lp.leaf.id: {r.unit for r in journals.load(lp.leaf.name) if r.status == "done"} for lp in plan.leaves}


def _progress(cfg: SdgConfig, plan: Plan, log: Log) -> Progress:
    """A bar on a terminal; otherwise progress lines in the run's log (a Slurm job's node 0 log too)."""
    mode = cfg.generate.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    return Progress(plan.units, {lp.leaf.id: lp.units for lp in plan.leaves}, mode=mode,
                    interval_s=cfg.generate.progress_interval_s, emit=log)


def execute(run: Run, executor: Executor, *, log: Log = print) -> RunStats:
    """Open the run folder (resume or new, marked running), then let `executor` run the pending units."""
    cfg = run.cfg
    run.folder = choose_run_dir(Path(cfg.generate.output_dir).expanduser(), run.fingerprint, run.components,
                                resume=cfg.generate.resume)
    log(f"{'resuming' if run.folder.resumed else 'writing'} run {run.folder.path}")
    from sdg.engine.lease import RunLease

    run.lease = RunLease(run.folder.path).acquire()  # one writer per run folder; released by finish()
    if run.lease.note:
        log(f"note: {run.lease.note}")
    run.state = RunState(run.fingerprint, run.folder.stamp, "running", run.components, run.started,
                         executor=executor.describe())
    write_state(run.folder, run.state)
    reader = JournalStore(run.folder.journal_dir)
    try:
        done = done_units(run.plan, reader)
    finally:
        reader.close()
    progress = _progress(cfg, run.plan, log)
    progress.resumed(done)  # once here, whichever executor runs the rest
    try:
        run.stats = executor.execute(run, done, progress)
    finally:
        progress.close()
        run.executor = executor.describe()
    run.stats.units_resumed = sum(len(v) for v in done.values())
    return run.stats


def leaf_scheduler(run: Run, done: Mapping[str, set[str]], journals: JournalStore) -> Any:
    """Leaf-level targets for this run (pipeline.leaf_targets), knowing what the journals hold; None when off."""
    cfg = run.cfg
    if not cfg.pipeline.leaf_targets:
        return None
    from sdg.engine.leaf_targets import scheduler_for
    from sdg.quality.stage import stage_for

    return scheduler_for(run.plan, done, journals, max_overgeneration=cfg.pipeline.max_overgeneration,
                         quality=stage_for(cfg.quality, [lp.leaf for lp in run.plan.leaves]),
                         ask_caps={kind: p.samples_per_prompt for kind, p in run.pipelines.items()})


class LocalExecutor:
    """One asyncio engine on this machine against the configured teacher (started here and always stopped,
    or an endpoint that is checked). SIGTERM unwinds it like Ctrl-C: servers stop, journals close."""

    def execute(self, run: Run, done: Mapping[str, set[str]], progress: Progress) -> RunStats:
        from sdg.engine.runner import run_plan
        from sdg.engine.session import endpoint_report, engine_session
        from sdg.signals import unwind_on
        from sdg.teacher.serving import serving

        assert run.folder is not None
        journals = JournalStore(run.folder.journal_dir)

        scheduler = leaf_scheduler(run, done, journals)
        seen: dict[str, dict] = {}  # per endpoint: what the client saw (limit reached, n cap, ...)

        async def engine(endpoints: list[Any], judge_endpoints: list[Any] | None) -> RunStats:
            async with engine_session(run.cfg, endpoints, judge_endpoints=judge_endpoints) as s:
                try:
                    return await run_plan(run.plan, run.pipelines, s.chat, journals, done=done, workers=s.workers,
                                          progress=progress, breaker=s.breaker, watch=s.watch, judge=s.judge,
                                          scheduler=scheduler)
                finally:
                    seen.update(endpoint_report(s))

        judge = run.cfg.judge
        try:  # the judge (when it is a model of its own) is served, probed and stopped like the teacher
            with unwind_on(), serving(run.cfg.teacher) as endpoints, \
                    (serving(judge, log_dir=Path(judge.log_dir) / "judge") if judge is not None
                     else contextlib.nullcontext()) as judge_endpoints:
                stats = asyncio.run(engine(endpoints, judge_endpoints))
            if scheduler is not None:
                scheduler.count_into(stats)
            stats.endpoints.update(seen)
        finally:
            journals.close()
        journals.check()  # a write lost at close (disk full) is an error, not a silent gap
        return stats

    def describe(self) -> dict[str, Any]:
        return {"kind": "local"}


# --- finish -------------------------------------------------------------------------------------------

def collect_rows(plan: Plan, journals: JournalStore, quality_cfg: QualityConfig | None = None,
                 run_dir: Path | None = None) -> tuple[JournalRows, QualityPass]:
    """Rows by leaf id (lazy: read again per leaf when the writers ask, without what the quality stage
    dropped) and the quality pass (per-leaf counts, the report's statistics, the dropped_*.jsonl files)."""
    cfg = quality_cfg if quality_cfg is not None else QualityConfig(enabled=False, keep_dropped=False)
    qp = run_quality_pass(plan, journals, cfg, Path(run_dir) if run_dir is not None else Path("."))
    return JournalRows(plan, journals, qp.removed), qp


@dataclass(frozen=True)
class RunSummary:
    """A finished run in a few numbers: what node 0 of a Slurm job returns and a sweep records."""

    run_dir: str
    complete: bool
    units: int
    units_run: int
    units_resumed: int
    units_failed: int
    kept: int
    elapsed_s: float
    executor: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """The whole run kept 0 samples."""
        return self.kept == 0


@dataclass
class GenerateResult:
    plan: Plan
    dry_run: DryRun | None = None
    run_dir: Path | None = None
    stats: RunStats | None = None
    outputs: Any = None
    complete: bool = False
    warnings: list[str] = field(default_factory=list)
    quality: Mapping[str, LeafQuality] = field(default_factory=dict)  # per leaf id: quality_report.json
    executor: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    @property
    def empty(self) -> bool:
        """The whole run kept 0 samples."""
        return sum(q.kept for q in self.quality.values()) == 0

    def summary(self) -> RunSummary:
        stats = self.stats or RunStats()
        return RunSummary(str(self.run_dir), self.complete, self.plan.units, stats.units_done, stats.units_resumed,
                          sum(q.failed_units for q in self.quality.values()), sum(q.kept for q in self.quality.values()),
                          time.time() - self.started, dict(self.executor))


def _write_files(run: Run, result: GenerateResult) -> tuple[Path, int]:
    """Every file of a finished run but run.json: training data, quality reports, manifest, dataset card;
    fills `result` (outputs, quality, warnings). Returns the HTML report's path and the failed units."""
    from sdg.output.dataset_card import write_dataset_card
    from sdg.output.html_report import write_html_report
    from sdg.output.instructlab import write_outputs

    cfg, plan, folder = run.cfg, run.plan, run.folder
    assert folder is not None
    journals = JournalStore(folder.journal_dir)
    try:
        rows, qp = collect_rows(plan, journals, cfg.quality, folder.path)
        quality = result.quality = qp.quality
        result.outputs = write_outputs(folder.path, folder.stamp, [lp.leaf for lp in plan.leaves], rows,
                                       system_prompt=cfg.generate.system_prompt, seed=cfg.generate.seed)
    finally:
        journals.close()
    failed = sum(q.failed_units for q in quality.values())
    result.complete = failed == 0
    result.warnings.extend(journals.problems)
    empty = [leaf_id for leaf_id, q in quality.items() if q.kept == 0 and q.failed_units == 0]
    for leaf_id in empty:
        q = quality[leaf_id]
        why = ", ".join(f"{n} {r}" for r, n in sorted(q.dropped.items(), key=lambda kv: -kv[1])[:3]) or "no samples parsed"
        result.warnings.append(f"leaf {leaf_id} kept 0 of its {q.target} target samples ({why}): its training "
                               "data is empty; a stronger teacher (teacher=...) or the simple pipeline helps")
    for leaf_id, q in quality.items():
        if 0 < q.kept < q.target and q.failed_units == 0:
            drops = {**q.dropped, **q.quality_dropped}
            why = ", ".join(f"{n} {r}" for r, n in sorted(drops.items(), key=lambda kv: -kv[1])[:3]) or "few samples parsed"
            more = (f" after {q.topup_units} top-up units (pipeline.max_overgeneration={cfg.pipeline.max_overgeneration:g} "
                    "bounds them)" if cfg.pipeline.leaf_targets else " (pipeline.leaf_targets=true tops short leaves up)")
            result.warnings.append(f"leaf {leaf_id} stopped short: kept {q.kept} of its {q.target} target samples"
                                   f"{more}; most dropped: {why}")
    for set_name, n in qp.contamination.items():
        result.warnings.append(f"{n} generated rows overlapped the evaluation set {set_name} and were removed "
                               "(dropped_contaminated.jsonl)")
    names = {lp.leaf.id: lp.leaf.name for lp in plan.leaves}
    write_quality_report(folder.path, quality, qp.stats, names=names, totals=_report_totals(run, quality, qp))
    html = write_html_report(folder.path)
    manifest = _manifest(run, quality)
    write_manifest(folder.path, manifest)
    write_dataset_card(folder.path, manifest, result.outputs, quality)  # README.md: Hugging Face dataset card
    return html, failed


def finish(run: Run, *, log: Log = print) -> GenerateResult:
    """Journals -> InstructLab outputs, quality report, manifest and dataset card; run.json complete or incomplete."""
    from sdg.output.atomic import synced_together

    assert run.folder is not None and run.state is not None, "finish() needs an executed run"
    plan, folder = run.plan, run.folder
    result = GenerateResult(plan, run.estimate, folder.path, run.stats, executor=run.executor, started=run.started)
    with synced_together():  # the run's many small files, fsynced side by side before run.json says complete
        html, failed = _write_files(run, result)
    run.state.status = "complete" if result.complete else "incomplete"
    run.state.finished = time.time()
    run.state.executor = run.executor
    write_state(folder, run.state)
    if failed:
        result.warnings.append(f"{failed} units failed (teacher errors; see quality_report.json): run the same "
                               "command again to retry just those")
    s = run.stats
    log(f"{run.state.status}: {result.summary().kept} samples from {plan.units} units in {folder.path} "
        f"({s.units_done} run now, {s.units_resumed} resumed, {failed} failed)")
    log(f"quality report: {html}")
    return result


def generate(cfg: SdgConfig, *, executor: Executor | None = None, log: Log = print) -> GenerateResult:
    """Run (or resume, or dry-run) a generation for the taxonomy's changed leaves: the one path every
    caller takes (local CLI, sweeps, Slurm node 0 with its RayExecutor, Python)."""
    run = prepare(cfg, log=log)
    if cfg.generate.dry_run:
        return GenerateResult(run.plan, run.estimate, started=run.started)
    try:
        execute(run, executor or LocalExecutor(), log=log)
        return finish(run, log=log)
    finally:
        if run.lease is not None:
            run.lease.release()


# --- the manifest -------------------------------------------------------------------------------------

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
    for dist in ("hydra-core", "omegaconf", "aiohttp", "httpx", "xllamacpp", "instructlab-schema", "vllm", "ray",
                 "submitit"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _report_totals(run: Run, quality: Mapping[str, LeafQuality], qp: QualityPass) -> dict[str, Any]:
    """The run line of quality_report.json: what the run cost and kept, run-wide."""
    stats = run.stats
    kept = sum(q.kept for q in quality.values())
    prompt = sum(q.prompt_tokens for q in quality.values())
    completion = sum(q.completion_tokens for q in quality.values())
    return {"run_dir": str(run.folder.path if run.folder else ""), "target": run.plan.target_samples,
            "generated": sum(q.generated for q in quality.values()), "kept": kept,
            "requests": sum(q.requests for q in quality.values()), "prompt_tokens": prompt,
            "completion_tokens": completion, "elapsed_s": round(stats.elapsed_s, 3),
            "tokens_per_kept": round((prompt + completion) / kept, 1) if kept else None,
            "kept_per_1k_tokens": round(1000 * kept / (prompt + completion), 3) if prompt + completion else None,
            **yield_figures(kept=kept, generated=sum(q.generated for q in quality.values()),
                            requests=sum(q.requests for q in quality.values()), prompt_tokens=prompt,
                            completion_tokens=completion),
            "quality_dropped": _quality_totals(quality)["dropped"], "contamination": dict(qp.contamination),
            "dropped_files": {f"dropped_{k}.jsonl": n for k, n in sorted(qp.dropped_files.items())}}


def _quality_totals(quality: Mapping[str, LeafQuality]) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for q in quality.values():
        for reason, n in q.quality_dropped.items():
            totals[reason] = totals.get(reason, 0) + n
    return {"dropped": totals}


def _manifest(run: Run, quality: Mapping[str, LeafQuality]) -> Manifest:
    from sdg.redact import redact, redacted_config

    cfg, plan, stats, folder = run.cfg, run.plan, run.stats, run.folder
    assert folder is not None
    t = cfg.teacher
    return Manifest(
        sdg_version=__version__, run_dir=str(folder.path), stamp=folder.stamp, resumed=folder.resumed,
        taxonomy=redact({"path": cfg.taxonomy.path, "base": cfg.taxonomy.base, **_git_commit(Path(cfg.taxonomy.path))}),
        leaves=[ManifestLeaf(lp.leaf.id, lp.leaf.name, lp.leaf.kind, lp.leaf.path, lp.fingerprint, lp.units,
                             lp.target_samples, quality[lp.leaf.id].kept) for lp in plan.leaves],
        teacher=redact({"name": t.name, "backend": t.backend, "model": t.model, "served_model_name": t.served_model_name,
                        "endpoint_url": t.endpoint_url}),
        pipeline={"name": cfg.pipeline.name, "fingerprints": {k: p.fingerprint for k, p in run.pipelines.items()},
                  "scale_factor": plan.scale, "samples_per_unit": plan.samples_per_unit},
        seed=plan.seed, executor=dict(run.executor), config=redacted_config(cfg), versions=_versions(),
        counts=ManifestCounts(
            units=plan.units, units_run=stats.units_done, units_resumed=stats.units_resumed,
            units_failed=stats.units_failed, units_not_needed=stats.units_not_needed, units_topup=stats.units_topup, target_samples=plan.target_samples,
            generated=sum(q.generated for q in quality.values()), kept=sum(q.kept for q in quality.values()),
            requests=stats.requests, prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens),
        timings={"started": run.started, "finished": time.time(), "engine_s": stats.elapsed_s,
                 "output_tok_s": stats.completion_tokens / stats.elapsed_s if stats.elapsed_s else 0.0},
        errors=dict(stats.errors),
        judge=redact({"name": cfg.judge.name, "backend": cfg.judge.backend, "model": cfg.judge.model,
                      "served_model_name": cfg.judge.served_model_name, "endpoint_url": cfg.judge.endpoint_url,
                      "structured_output": cfg.judge.structured_output}) if cfg.judge is not None else {},
        servers=dict(sorted(stats.servers.items())), structured_verdicts=stats.structured_requests,
        endpoints=dict(sorted(stats.endpoints.items())),
        yield_figures=yield_figures(kept=sum(q.kept for q in quality.values()), generated=sum(q.generated for q in quality.values()),
                             requests=stats.requests, prompt_tokens=stats.prompt_tokens,
                             completion_tokens=stats.completion_tokens, cached_tokens=stats.cached_tokens),
        quality=_quality_totals(quality))
