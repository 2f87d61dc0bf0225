"""Range and choice checks on config values, run when the config is composed.

The typed schema (sdg/config/schema.py) already rejects a misspelt key or a value of the wrong type; this
module rejects values of the right type that cannot work (`pipeline.sdg_scale_factor=0`, a port above 65535,
`generate.resume=sometimes`) before any work starts, instead of as a traceback from deep in a run.

`RULES` is the whole table: dotted key -> allowed range or choices, with a short reason. `check_values(cfg)`
reads every key with `OmegaConf.select` (so it works on a composed DictConfig before `to_object`, also on a
config that Hydra built for a multirun job) and raises one `ConfigError` whose one-line message lists every
violation, joined with '; '.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf

from sdg.errors import ConfigError

__all__ = ["Choice", "Range", "RULES", "check_values", "violations"]

_ABSENT = object()
Number = Union[int, float]


@dataclass(frozen=True)
class Range:
    """A number in [ge|gt, le] (either side optional); `lt_key`: also below another key's value."""

    reason: str
    ge: Optional[Number] = None
    gt: Optional[Number] = None
    le: Optional[Number] = None
    integer: bool = True
    optional: bool = False  # None (null) allowed; `reason` says what it means
    lt_key: Optional[str] = None  # must also be < this key's value (when that value is a valid number)
    also: Sequence[Number] = ()  # single values allowed outside the range (e.g. -1 = "all")

    def describe(self, bound: Optional[Number] = None) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.ge is not None and self.le is not None:
            parts.append(f"from {_fmt(self.ge)} to {_fmt(self.le)}")
        else:
            if self.ge is not None:
                parts.append(f">= {_fmt(self.ge)}")
            if self.gt is not None:
                parts.append(f"> {_fmt(self.gt)}")
            if self.le is not None:
                parts.append(f"<= {_fmt(self.le)}")
        if self.lt_key is not None:
            parts.append(f"< {self.lt_key}" + (f" ({_fmt(bound)})" if bound is not None else ""))
        text = f"must be {kind} " + " and ".join(parts)
        extra = [_fmt(v) for v in self.also] + (["null"] if self.optional else [])
        if extra:
            text += ", or " + " or ".join(extra)
        return text

    def ok(self, value: Any, bound: Optional[Number] = None) -> bool:
        if not _is_number(value) or (self.integer and not _is_integer(value)):
            return False
        if value in self.also:
            return True
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (bound is None or value < bound))


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    choices: tuple[str, ...]
    reason: str
    optional: bool = False

    def describe(self) -> str:
        return "must be one of " + ", ".join(self.choices) + (", or null" if self.optional else "")

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices


Rule = Union[Range, Choice]

# Every numeric or enumerated field of sdg/config/schema.py with a meaningful range. Not here, on purpose:
# generate.seed (any integer seeds a run), taxonomy.base (a git ref, or null), strings and paths.
RULES: dict[str, Rule] = {
    # TaxonomyConfig
    "taxonomy.max_file_bytes": Range("largest qna.yaml accepted, in bytes", ge=1),
    "taxonomy.max_yaml_nodes": Range("most YAML nodes accepted in one file", ge=1),
    "taxonomy.seed_token_budget": Range("seed text per prompt, in tokens, null = derived from the teacher's "
                                        "context length", ge=1, optional=True),
    # DocumentsConfig
    "taxonomy.documents.chunk_tokens": Range("tokens per knowledge document chunk", ge=1),
    "taxonomy.documents.chunk_overlap_tokens": Range("tokens repeated from the previous chunk",
                                                     ge=0, lt_key="taxonomy.documents.chunk_tokens"),
    "taxonomy.documents.max_bytes": Range("bytes of documents one knowledge leaf may read and yield", ge=1),
    "taxonomy.documents.max_file_bytes": Range("largest knowledge document file read, in bytes", ge=1),
    "taxonomy.documents.max_pdf_pages": Range("most pages read from one PDF document", ge=1),
    "taxonomy.documents.pdf_timeout_s": Range("seconds the text extraction of one PDF may take", gt=0,
                                              integer=False),
    "taxonomy.documents.max_chunks_per_leaf": Range("most document chunks of one knowledge leaf", ge=1),
    "pipeline.max_overgeneration": Range("samples a leaf may ask for, in multiples of its target", ge=1,
                                         integer=False),
    # TeacherConfig
    "teacher.backend": Choice(("llama-cpp", "vllm", "endpoint"), "how the teacher is served"),
    "teacher.port": Range("TCP port of the first server, 0 = a free port", ge=0, le=65535),
    "teacher.context_length": Range("the teacher's context window, in tokens", ge=1),
    # not checked against context_length: `model serve --max-ctx-size` sets a server's window, and the
    # client asks for min(block max_tokens, this) per request
    "teacher.max_tokens": Range("tokens one answer may use", ge=1),
    "teacher.tensor_parallel_size": Range("GPUs per teacher server", ge=1),
    "teacher.replicas": Range("teacher servers to start, null = visible GPUs / tensor_parallel_size",
                              ge=1, optional=True),
    "teacher.throughput_tok_s": Range("output tokens/s of one server, for estimates, null = unknown",
                                      gt=0, integer=False, optional=True),
    "teacher.startup_timeout_s": Range("seconds to wait for the teacher to become healthy", gt=0, integer=False),
    "teacher.request_timeout_s": Range("seconds one teacher request may take", gt=0, integer=False),
    "teacher.max_retries": Range("retries of a failed teacher request", ge=0),
    "teacher.request_deadline_s": Range("seconds one request may take over all its attempts", gt=0, integer=False),
    "teacher.max_response_bytes": Range("largest reply body read", ge=1024),
    "teacher.system_prompt_mode": Choice(("system", "fold_into_user"), "fold_into_user prepends the system "
                                                                       "message to the first user message"),
    # LlamaCppConfig
    "teacher.structured_output": Choice(("auto", "off"), "auto = judge verdicts as schema-constrained JSON where "
                                        "the server accepts it at readiness, off = free text"),
    "teacher.llama_cpp.n_parallel": Range("llama.cpp request slots per server", ge=1),
    "teacher.llama_cpp.n_threads": Range("llama.cpp CPU threads per server, -1 = llama.cpp's default",
                                         ge=1, also=(-1,)),
    "teacher.llama_cpp.n_gpu_layers": Range("layers llama.cpp offloads to the GPU, 0 = none, -1 = llama.cpp's "
                                            "default", ge=0, also=(-1,)),
    # VllmConfig
    "teacher.vllm.max_num_seqs": Range("vLLM sequences in one batch, null = vLLM's default", ge=1, optional=True),
    # PipelineConfig
    "pipeline.sdg_scale_factor": Range("samples to aim for per seed example", ge=1),
    "pipeline.samples_per_unit": Range("samples asked for in one generation prompt", ge=1),
    # GenerateConfig
    "generate.max_concurrency": Range("in-flight requests per teacher server, null = twice its slots",
                                      ge=1, optional=True),
    "generate.resume": Choice(("auto", "fresh"), "auto continues the unfinished run with the same config, "
                                                 "fresh starts a new one"),
    "generate.error_rate_limit": Range("share of recent requests that may fail before the run stops, 1 = never",
                                       ge=0, le=1, integer=False),
    "generate.error_window": Range("recent requests the error rate is measured over", ge=1),
    "generate.stall_timeout_s": Range("seconds with no teacher reply before the run stops", gt=0, integer=False),
    "generate.unusable_limit": Range("share of unusable replies that stops the run", gt=0, le=1, integer=False),
    "generate.unusable_window": Range("recent replies the unusable share is measured over", ge=1),
    "generate.progress": Choice(("auto", "bar", "log", "none"), "how progress is shown, auto = a bar on a "
                                                                "terminal, log lines otherwise"),
    "generate.progress_interval_s": Range("seconds between progress log lines, 0 = every update", ge=0, integer=False),
    # SamplingConfig (each generate.sampling.blocks.<name> entry is checked with the same rules: ENTRY_RULES)
    "generate.sampling.temperature": Range("sampling temperature of llm blocks, null = the block's own",
                                           ge=0, le=2, integer=False, optional=True),
    "generate.sampling.top_p": Range("nucleus sampling share of llm blocks, null = the block's own",
                                     gt=0, le=1, integer=False, optional=True),
    "generate.sampling.frequency_penalty": Range("OpenAI frequency_penalty of llm blocks' requests, null = the "
                                                 "block's own", ge=-2, le=2, integer=False, optional=True),
    "generate.sampling.max_tokens": Range("tokens one reply of an llm block may use, capped by teacher.max_tokens, "
                                          "null = the block's own", ge=1, optional=True),
    "generate.sampling.seed": Range("base of an llm block's request seeds, null = the block's own",
                                    ge=0, le=2**31 - 1, optional=True),
    # ClusterConfig
    "cluster.kind": Choice(("local", "slurm"), "where a run executes"),
    "cluster.nodes": Range("nodes in the Slurm job", ge=1),
    "cluster.gpus_per_node": Range("GPUs requested per node, 0 = none", ge=0),
    "cluster.cpus_per_task": Range("CPUs per node (one task per node)", ge=1),
    "cluster.mem_gb": Range("memory per node in GB, 0 = all of a node's memory (Slurm --mem=0)", ge=0),
    "cluster.time_min": Range("the job's time limit, in minutes", ge=1),
    "cluster.array_parallelism": Range("sweep array elements running at once", ge=1),
    "cluster.max_requeues": Range("time-limit requeues before giving up", ge=0),
    "cluster.ray_object_store_mb": Range("Ray object store per node, in MB, Ray needs at least 75", ge=75),
    "cluster.address_from": Choice(("route", "interface", "hostname"), "how each node of a Slurm job picks its "
                                   "address: the interface that routes to the other nodes, cluster.interface's, or "
                                   "what its name resolves to"),
    # QualityConfig
    "quality.near_dedup_threshold": Range("estimated Jaccard similarity that makes two rows near-duplicates",
                                          gt=0, le=1, integer=False),
    "quality.near_dedup_shingle": Range("words per shingle of the near-duplicate check", ge=1),
    "quality.near_dedup_num_perm": Range("MinHash permutations of the near-duplicate check", ge=16, le=1024),
    "quality.seed_copy_threshold": Range("similarity to a seed example that makes a row a copy", gt=0, le=1,
                                         integer=False),
    "quality.decontaminate_ngram": Range("words per n-gram compared with the evaluation sets", ge=3),
    "quality.decontaminate_min_overlap": Range("shared n-grams that make a row contaminated", ge=1),
    "quality.report_samples": Range("kept and dropped rows shown per leaf in the HTML report", ge=0),
}
# The judge (a teacher config of its own, null = the teacher judges) obeys the teacher's rules.
RULES.update({"judge." + key[len("teacher."):]: rule for key, rule in list(RULES.items()) if key.startswith("teacher.")})

# Mappings whose every entry holds the fields of a section: `generate.sampling.blocks.<name>.top_p` is
# checked with the rule of `generate.sampling.top_p`.
ENTRY_RULES: dict[str, str] = {"generate.sampling.blocks": "generate.sampling"}


def _entries(cfg: DictConfig) -> tuple[dict[str, Rule], list[str]]:
    """The rules of the entries of ENTRY_RULES' mappings that `cfg` holds (under their dotted keys), and a
    message for each entry that is not a mapping or has a key its section does not have."""
    rules: dict[str, Rule] = {}
    problems: list[str] = []
    for mapping, section in ENTRY_RULES.items():
        entries = _select(cfg, mapping)
        fields = {k[len(section) + 1:]: r for k, r in RULES.items() if k.rsplit(".", 1)[0] == section}
        for name in entries if isinstance(entries, DictConfig) else ():
            entry = entries[name]
            if not isinstance(entry, DictConfig):
                problems.append(f"{mapping}.{name}={_fmt(entry)} is not a mapping: set its keys "
                                f"(+{mapping}.{name}.{next(iter(fields))}=VALUE)")
                continue
            problems += [f"unknown config key '{mapping}.{name}.{key}': {mapping}.<name> accepts "
                         f"{', '.join(fields)}" for key in entry if key not in fields]
            rules.update({f"{mapping}.{name}.{field}": rule for field, rule in fields.items()})
    return rules, problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    """A value as it would be typed on the command line, always on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if not text or not text.isprintable() or any(c.isspace() for c in text) or len(text) > 80:
        text = repr(text if len(text) <= 80 else text[:77] + "...")
    return text


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def _as_dictconfig(cfg: Any) -> DictConfig:
    if isinstance(cfg, DictConfig):
        return cfg
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.structured(cfg)
    return OmegaConf.create(cfg)


def violations(cfg: Any, rules: dict[str, Rule] | None = None) -> list[str]:
    """One message per value of `cfg` that breaks its rule (keys absent from `cfg` are skipped)."""
    cfg = _as_dictconfig(cfg)
    out: list[str] = []
    if rules is None:
        entry_rules, out = _entries(cfg)
        rules = {**RULES, **entry_rules}
    for key, rule in rules.items():
        value = _select(cfg, key)
        if value is _ABSENT or (value is None and rule.optional):
            continue
        if isinstance(rule, Choice):
            if not rule.ok(value):
                out.append(f"{key}={_fmt(value)} is not a valid choice: {rule.describe()} ({rule.reason})")
            continue
        bound = None
        if rule.lt_key is not None:
            other = _select(cfg, rule.lt_key)
            other_rule = rules.get(rule.lt_key)
            if _is_number(other) and (other_rule is None or not isinstance(other_rule, Range) or other_rule.ok(other)):
                bound = other
        if not rule.ok(value, bound):
            out.append(f"{key}={_fmt(value)} is out of range: {rule.describe(bound)} ({rule.reason})")
    return out


def check_values(cfg: Any) -> None:
    """Raise ConfigError naming every out-of-range or unknown-choice value of `cfg`, all on one line.

    `cfg` is the composed DictConfig (before or after resolution; interpolations are resolved as read), or
    an `SdgConfig` / plain mapping of the same shape.
    """
    bad = violations(cfg)
    if bad:
        raise ConfigError("; ".join(bad))
