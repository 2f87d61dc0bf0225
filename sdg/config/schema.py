"""Structured configs: the typed shape of `conf/`.

Every YAML under `conf/` merges into these dataclasses, so a misspelt key or a wrong type is rejected
when the config is composed, before any work starts. Later verbs add fields here, never dicts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

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


@dataclass
class TaxonomyConfig:
    """Where the taxonomy lives, what it is compared with, and validation limits."""

    # InstructLab's own location, so an existing ilab user's taxonomy is found as it is.
    path: str = "${xdg_data:instructlab/taxonomy}"
    # Repository cloned by `sdg taxonomy init`; empty = create a skeleton with example leaves.
    repository: Optional[str] = None
    base: str = "origin/main"
    yaml_rules: Optional[str] = None
    # Our own limits (InstructLab has none); breaking them is an error that names the limit.
    max_file_bytes: int = 1_048_576
    max_yaml_nodes: int = 200_000
    # Seed text per prompt; None = derived from the teacher's context length.
    seed_token_budget: Optional[int] = None
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)


@dataclass
class TeacherConfig:
    """The teacher model. Serving fields are used by `sdg model serve` and `sdg data generate`."""

    name: str = MISSING
    backend: str = "llama-cpp"  # llama-cpp | vllm | endpoint
    model: Optional[str] = None  # HF repo id, local path, or a package-carried GGUF (pkg:<dist>)
    served_model_name: str = "teacher"
    endpoint_url: Optional[str] = None
    api_key: Optional[str] = None
    context_length: int = 4096
    max_tokens: int = 1024
    tensor_parallel_size: int = 1


@dataclass
class PipelineConfig:
    """Which generation pipelines run and how many samples they aim for."""

    name: str = MISSING  # simple | full | a directory of pipeline YAMLs
    sdg_scale_factor: int = 30


@dataclass
class ClusterConfig:
    """Where a run executes: this machine, or a Slurm allocation."""

    kind: str = "local"  # local | slurm
    nodes: int = 1
    gpus_per_node: int = 0


@dataclass
class SdgConfig:
    """The whole composed config (`sdg ... --cfg` prints it)."""

    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def register() -> None:
    """Put the schema into Hydra's ConfigStore (conf/config.yaml lists `sdg_schema` first)."""
    ConfigStore.instance().store(name="sdg_schema", node=SdgConfig)


register()
