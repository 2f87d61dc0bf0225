"""Hydra multirun sweeps of `data generate`: locally one combination after another, on Slurm ONE array.

`run_sweep(overrides)` is the whole `sdg data generate -m`, callable from Python: it composes the base
config (the overrides minus the real sweeps, as Hydra's own override parser tells them: `a,b`, `range()`,
`choice()`; list and dict values such as `cluster.setup=[a,b]` stay), picks the sweep dir, runs Hydra's
`-m` entry over the overrides and returns every combination's outcome.

With cluster=slurm the sweep goes through hydra-submitit-launcher (Hydra's own `-m` path): `slurm_launcher`
registers its config, built from the base config's `cluster.*`, as `hydra/launcher=sdg_slurm`;
the launcher submits every combination as one element of one Slurm array (`executor.map_array`) and
waits for them. Every task of every element runs `run_combination`: on Slurm that is `node_main` (node 0
drives, the others serve and work), locally `generate`. Node 0 (or the local run) writes
`sweep_job.json` into the combination's own output dir; `sweep_results` reads them back, so the
submitting process learns each outcome without unpickling anything from the jobs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from sdg.config.schema import ClusterConfig, SdgConfig
from sdg.redact import redact_text
from sdg.errors import ConfigError, SdgError

LAUNCHER = "sdg_slurm"
RESULT = "sweep_job.json"


@dataclass(frozen=True)
class SweepJob:
    """One combination's outcome (from its sweep_job.json)."""

    output_dir: Path
    overrides: str
    status: str  # complete | dry-run | incomplete | empty (kept 0 samples) | failed | missing (never wrote its file)

    @property
    def ok(self) -> bool:
        return self.status in ("complete", "dry-run")
    run_dir: str | None = None
    job_id: str | None = None
    error: str | None = None


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's own reading of the overrides (`Override` objects, one per override, in order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"invalid override: {exc}") from None


def _is_hydra(o: Any) -> bool:
    return o.key_or_group == "hydra" or o.is_hydra_override()


def base_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides every combination shares: all but the real sweeps and Hydra's own (`hydra.*`,
    `hydra/...`). A list or dict value (`cluster.setup=[a,b]`, `+cluster.additional_parameters={a: 1}`)
    or a quoted string with a comma is one value, not a sweep, and stays."""
    return [text for text, o in zip(overrides, parse_overrides(overrides))
            if not o.is_sweep_override() and not _is_hydra(o)]


def base_config(overrides: Sequence[str]) -> SdgConfig:
    """The config a sweep's shared settings come from (output dir, cluster.*): `base_overrides` composed."""
    from sdg.config.compose import compose_config, to_object

    return to_object(compose_config(base_overrides(overrides)))


def check_sweepable(overrides: Sequence[str]) -> None:
    """One array shares one set of sbatch parameters: cluster.* may not take several values."""
    for text, o in zip(overrides, parse_overrides(overrides)):
        if o.is_sweep_override() and o.key_or_group.split(".")[0] in ("cluster", "hydra/launcher"):
            raise ConfigError(f"'{text}': a Slurm sweep is one array whose elements share one set of sbatch "
                              "parameters, so cluster.* cannot be swept; run one sweep per cluster setting")


def stage_for_sweep(base: SdgConfig, overrides: Sequence[str], *, log: Callable[[str], None] = print) -> dict[str, str]:
    """What a single submission stages on the submit host (sdg.launch.submit), for a Slurm sweep: the knowledge
    documents when the taxonomy is the same in every combination, the Hub models when the teacher and judge
    are. Returns the environment that tells the array's nodes so (they then fetch neither); a swept taxonomy,
    teacher or judge is left to the nodes, as before."""
    from sdg.launch.submit import stage_documents, stage_models
    from sdg.taxonomy.documents import OFFLINE_ENV

    swept = {o.key_or_group.split(".")[0].split("/")[0] for o in parse_overrides(overrides) if o.is_sweep_override()}
    env: dict[str, str] = {}
    if "taxonomy" not in swept:
        stage_documents(base, log=log)
        env[OFFLINE_ENV] = "1"
    if not swept & {"teacher", "judge"} and stage_models(base, log=log):
        env["HF_HUB_OFFLINE"] = "1"
    return env


def slurm_launcher(cluster: ClusterConfig, job_dir: str | Path) -> list[str]:
    """Register hydra-submitit-launcher's Slurm config built from `cluster`; the overrides that pick it."""
    try:
        from hydra.core.config_store import ConfigStore
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    except ImportError:
        raise SdgError("a Slurm sweep (-m cluster=slurm) needs hydra-submitit-launcher: pip install -e '.[slurm]' "
                       "(or pip install hydra-submitit-launcher submitit ray)") from None
    node = SlurmQueueConf(
        submitit_folder=str(Path(job_dir).expanduser().absolute() / "%j"), name="sdg-generate",
        nodes=cluster.nodes, tasks_per_node=1, cpus_per_task=cluster.cpus_per_task, mem_gb=cluster.mem_gb,
        timeout_min=cluster.time_min, gpus_per_node=cluster.gpus_per_node or None, partition=cluster.partition,
        qos=cluster.qos, account=cluster.account, constraint=cluster.constraint,
        max_num_timeout=cluster.max_requeues, array_parallelism=cluster.array_parallelism,
        setup=list(cluster.setup) or None, additional_parameters=dict(cluster.additional_parameters))
    from sdg.launch.submit import private_dir

    private_dir(Path(job_dir).expanduser().absolute())  # the array's pickles hold the whole config
    ConfigStore.instance().store(group="hydra/launcher", name=LAUNCHER, node=node, provider="sdg")
    return [f"hydra/launcher={LAUNCHER}"]


def _in_submitit_job() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"  # exported by submitit's sbatch script


def run_combination(cfg: SdgConfig, overrides: str, *, log: Callable[[str], None] = print) -> SweepJob | None:
    """One combination of a sweep, in its own `generate.output_dir`; never raises an SdgError (the
    outcome goes to sweep_job.json). Non-driver nodes of a Slurm element return None."""
    out = Path(cfg.generate.output_dir)
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    jid = f"{job_id}_{task}" if job_id and task else os.environ.get("SLURM_JOB_ID")
    try:
        from sdg.config.compose import check_values

        check_values(cfg)  # a swept value out of range fails this combination, with the one-line message
        if cfg.cluster.kind == "slurm" and not cfg.generate.dry_run:
            from sdg.launch.submit import check_cluster

            check_cluster(cfg)  # per combination: the teacher may be swept
            if not _in_submitit_job():
                raise SdgError("cluster=slurm in a sweep runs inside the Slurm array (hydra/launcher=sdg_slurm)")
            import submitit

            from sdg.launch.node import node_main

            summary = node_main(cfg, submitit.JobEnvironment().paths.folder, unwind_on_sigterm=False)
            if summary is None:
                return None
        else:
            from sdg.run import generate

            result = generate(cfg, log=log)
            summary = None if cfg.generate.dry_run else result.summary()
        if summary is None:
            job = SweepJob(out, overrides, "dry-run", None, jid)
        else:
            status = "complete" if summary.complete else "incomplete"
            if summary.empty and not cfg.generate.allow_empty:
                status = "empty"
            job = SweepJob(out, overrides, status, summary.run_dir, jid)
    except SdgError as exc:
        job = SweepJob(out, overrides, "failed", None, jid, str(exc))
    out.mkdir(parents=True, exist_ok=True)
    from sdg.redact import redacted_config

    record = {"config": redacted_config(cfg),
              "overrides": redact_text(job.overrides), "status": job.status, "run_dir": job.run_dir, "job_id": job.job_id,
              "error": job.error}
    (out / RESULT).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return job


def sweep_results(sweep_dir: Path) -> list[SweepJob]:
    """Every combination folder of a finished sweep (Hydra's numbered subdirs), in order."""
    found = []
    subdirs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if Path(sweep_dir).is_dir() else []
    for d in subdirs:
        try:
            rec = json.loads((d / RESULT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found.append(SweepJob(d, "?", "missing", error=f"no {RESULT}: the job died before it finished; see its "
                                                            "logs under cluster.job_dir"))
            continue
        found.append(SweepJob(d, rec.get("overrides", ""), rec["status"], rec.get("run_dir"), rec.get("job_id"),
                              rec.get("error")))
    return found


def _quote(value: str) -> str:
    """A string as a Hydra override value: quoted, so a path with ',', '=' or ':' stays one literal value."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def run_sweep(overrides: Sequence[str], *, log: Callable[[str], None] = print) -> list[SweepJob]:
    """`sdg data generate -m OVERRIDES`: Hydra's own multirun sweeps the overrides, one folder per
    combination under `<generate.output_dir>/multirun/<time>/`; locally one after another, with
    cluster=slurm as ONE Slurm array through hydra-submitit-launcher (waiting for it). Returns every
    combination's outcome in order (an empty list if none wrote one). A combination's SdgError (an
    out-of-range swept value included) is its failure, not an exception; a config that cannot be composed
    raises ConfigError, and a sweep Hydra itself refuses (an unknown option in a sweep) raises SdgError
    after Hydra has printed why."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from sdg.config.compose import to_object

    overrides = list(overrides)
    base = base_config(overrides)
    sweep_dir = Path(base.generate.output_dir).expanduser().absolute() / "multirun" / time.strftime("%Y-%m-%d_%H%M%S")
    launcher: list[str] = []
    job_env: dict[str, str] = {}  # for the array's jobs (sbatch passes the submitting environment on)
    if base.cluster.kind == "slurm" and not base.generate.dry_run:
        check_sweepable(overrides)
        job_env = stage_for_sweep(base, overrides, log=log)
        launcher = slurm_launcher(base.cluster, sweep_dir / "slurm_jobs")
        log(f"submitting the sweep as one Slurm array ({base.cluster.nodes} node(s) per element); waiting "
            f"for it. Jobs: sdg jobs status --job-dir {sweep_dir / 'slurm_jobs'}")

    @hydra.main(version_base=None, config_path="pkg://sdg.conf", config_name="config")
    def job(cfg) -> None:
        from omegaconf import OmegaConf, open_dict

        with open_dict(cfg):
            cfg.generate.output_dir = HydraConfig.get().runtime.output_dir
        OmegaConf.resolve(cfg)
        run_combination(to_object(cfg), HydraConfig.get().job.override_dirname or "job", log=log)

    saved, saved_env = sys.argv, {k: os.environ.get(k) for k in job_env}
    # hydra.output_subdir=null: Hydra would write every override (secrets too) in plain text per combination
    sys.argv = ["sdg", "-m", *overrides, *launcher, f"hydra.sweep.dir={_quote(str(sweep_dir))}",
                "hydra.output_subdir=null"]
    os.environ.update(job_env)
    try:
        job()
    except SystemExit as exc:  # Hydra's run_and_report printed the reason and exits
        if exc.code not in (0, None):
            raise SdgError("the sweep stopped: Hydra's message is above") from None
    finally:
        sys.argv = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return sweep_results(sweep_dir)
