"""Teacher servers from config: plan replicas over the visible GPUs, start them, hand out endpoints.

`serving(cfg)` is what `sdg data generate` and Slurm jobs use (start, yield endpoints, always stop);
`serve_forever(cfg)` is `sdg model serve` (start, report, wait for Ctrl-C or SIGTERM, stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from sdg.config.schema import TeacherConfig
from sdg.errors import ConfigError, Interrupted, TeacherStartError, UsageError
from sdg.teacher.backends import EndpointServer, LlamaCppServer, VllmServer
from sdg.teacher.gpus import NodePlan, node_plan, visible_gpus
from sdg.teacher.server_base import ServedEndpoint, TeacherServer

BACKENDS = ("llama-cpp", "vllm", "endpoint")
ENDPOINT_PROBE_TIMEOUT_S = 60.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_key_for(cfg: TeacherConfig, env: Mapping[str, str]) -> str | None:
    """The configured key; on a cluster node or a non-loopback bind, a fresh random one."""
    if cfg.api_key:
        return cfg.api_key
    if "SLURM_JOB_ID" in env or cfg.host not in _LOOPBACK:
        return secrets.token_urlsafe(24)
    return None


def build_servers(cfg: TeacherConfig, *, env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                  log_dir: Path | None = None, plan: NodePlan | None = None) -> list[TeacherServer]:
    """The servers this node should run for `cfg` (nothing is started). Pure but for model lookup (and writing
    a shipped teacher.chat_template next to the logs).

    `plan`: the node's replicas, planned once by the caller (a Slurm node); else planned here from the
    visible GPUs. llama.cpp runs one CPU server per planned replica (standing in for vLLM on GPU nodes)."""
    env = dict(os.environ if env is None else env)
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown teacher.backend '{cfg.backend}': choose one of {', '.join(BACKENDS)}")
    logs = Path(log_dir or cfg.log_dir)
    common = dict(model_name=cfg.served_model_name, host=cfg.host, api_key=api_key_for(cfg, env), env=env,
                  name=cfg.name, startup_timeout_s=cfg.startup_timeout_s, system_prompt_mode=cfg.system_prompt_mode)
    if cfg.backend == "endpoint":
        if extra_args:
            raise UsageError(f"extra arguments are for vLLM only: {' '.join(extra_args)}")
        if cfg.chat_template:
            raise ConfigError(f"teacher.chat_template={cfg.chat_template} needs a server that sdg starts (vllm, "
                              "llama-cpp); an endpoint serves its own template (teacher.system_prompt_mode still "
                              "applies)")
        if not cfg.endpoint_url:
            raise ConfigError("teacher.backend=endpoint needs teacher.endpoint_url (or --endpoint-url)")
        common["startup_timeout_s"] = min(cfg.startup_timeout_s, ENDPOINT_PROBE_TIMEOUT_S)
        return [EndpointServer(url=cfg.endpoint_url, **common)]  # type: ignore[arg-type]

    from sdg.teacher.models import resolve_model_path

    if not cfg.model:
        raise ConfigError(f"teacher '{cfg.name}' has no teacher.model; set it (or --model-path)")
    from sdg.teacher.chat_templates import resolve_chat_template

    template = resolve_chat_template(cfg.chat_template, logs)
    template_file = str(template) if template else None
    model = resolve_model_path(cfg.model, model_dir=Path(cfg.model_dir), filename=cfg.filename, revision=cfg.revision)
    if cfg.backend == "llama-cpp":
        if extra_args:
            raise UsageError(f"Unsupported extra arguments for llama-cpp: {' '.join(extra_args)}")
        if plan is None and cfg.tensor_parallel_size > 1:
            raise ConfigError("tensor parallelism is a vLLM feature; use teacher.backend=vllm for --gpus > 1")
        count = len(plan.replicas) if plan is not None else cfg.replicas or 1
        lc = cfg.llama_cpp
        return [LlamaCppServer(gguf=str(model), context_length=cfg.context_length, n_parallel=lc.n_parallel,
                               n_threads=lc.n_threads, n_gpu_layers=lc.n_gpu_layers, port=0, chat_template=template_file,
                               log_path=logs / f"{cfg.name}-llama-cpp-{i}.log", **common)  # type: ignore[arg-type]
                for i in range(count)]
    if plan is None:
        plan = node_plan(cfg, *visible_gpus(env))
    servers: list[TeacherServer] = []
    for r in plan.replicas:
        port = cfg.port + r.index if cfg.port else 0
        servers.append(VllmServer(model_path=str(model), command=cfg.vllm.command, tensor_parallel_size=cfg.tensor_parallel_size,
                                  context_length=cfg.context_length, extra_args=[*cfg.vllm.args, *extra_args],
                                  vllm_env=dict(cfg.vllm.env), max_num_seqs=cfg.vllm.max_num_seqs,
                                  dist_port=None, gpus=r.gpus, port=port, chat_template=template_file,
                                  log_path=logs / f"{cfg.name}-vllm-{r.index}.log", **common))  # type: ignore[arg-type]
    return servers


def start_all(servers: Sequence[TeacherServer]) -> list[ServedEndpoint]:
    """Launch every server at once, then wait for each; if one fails, stop them all and raise."""
    try:
        for s in servers:
            s.launch()
        return [s.wait_ready() for s in servers]
    except BaseException:
        stop_all(servers)
        raise


def stop_all(servers: Sequence[TeacherServer]) -> None:
    for s in servers:
        s.stop()


class Served(list):
    """The endpoints of started servers (a list of ServedEndpoint) that can say whether the servers live."""

    def __init__(self, endpoints: Sequence[ServedEndpoint], servers: Sequence[TeacherServer]) -> None:
        super().__init__(endpoints)
        self._servers = list(servers)

    def check_alive(self) -> None:
        """TeacherStartError naming the server that exited (the watchdog of a running generate)."""
        for s in self._servers:
            if s.backend != "endpoint" and not s.alive():
                code = s.proc.returncode if s.proc is not None else "?"
                raise TeacherStartError(f"the {s.backend} teacher exited while generating (code {code}); log: "
                                        f"{s.log_path}\n{s.log_tail()}\nFinished units are journaled: run the same "
                                        "command again to resume")


@contextlib.contextmanager
def serving(cfg: TeacherConfig, **kw) -> Iterator[Served]:
    """Start the teacher for `cfg`, yield its endpoints, and always stop it."""
    servers = build_servers(cfg, **kw)
    endpoints = start_all(servers)
    try:
        yield Served(endpoints, servers)
    finally:
        stop_all(servers)


def write_ready_file(path: Path, endpoints: Sequence[ServedEndpoint]) -> None:
    """Endpoints (with the API key) as JSON, readable by the owner only, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"endpoints": [e.__dict__ | {"gpus": list(e.gpus)} for e in endpoints]}, f, indent=2)
    os.replace(tmp, path)


def serve_forever(cfg: TeacherConfig, *, extra_args: Sequence[str] = (), ready_file: Path | None = None,
                  on_ready: Callable[[list[ServedEndpoint]], None] = lambda eps: None,
                  stop_event: threading.Event | None = None) -> int:
    """`sdg model serve`: run until Ctrl-C/SIGTERM/SIGHUP (or a server dies), then stop everything.

    Returns 0 when `stop_event` is set, 128 + the signal's number after a signal."""
    from sdg.signals import unwind_on

    stop = stop_event or threading.Event()
    try:
        with unwind_on((signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
            servers = build_servers(cfg, extra_args=extra_args)
            try:
                endpoints = start_all(servers)
                if ready_file is not None:
                    write_ready_file(ready_file, endpoints)
                on_ready(endpoints)
                while not stop.wait(1.0):
                    dead = [s for s in servers if s.backend != "endpoint" and not s.alive()]
                    if dead:
                        raise TeacherStartError(
                            f"{dead[0].backend} teacher exited unexpectedly (code "
                            f"{dead[0].proc.returncode if dead[0].proc else '?'}); log: {dead[0].log_path}"
                            f"\n{dead[0].log_tail()}")
                return 0
            finally:
                stop_all(servers)
                if ready_file is not None:
                    with contextlib.suppress(FileNotFoundError):
                        ready_file.unlink()
    except Interrupted as exc:
        return exc.exit_code
