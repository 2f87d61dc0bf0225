"""The three teacher backends: vLLM (GPU, tensor parallel), llama.cpp (CPU/GGUF), an existing endpoint."""

from __future__ import annotations

import re
import sys
from typing import Sequence

import httpx

from sdg.teacher.server_base import ServedEndpoint, ServerState, TeacherServer, free_port

API_KEY_ENV = "SDG_TEACHER_API_KEY"
# Whole lines only: a line still being written (no newline yet) is not an address.
# The line is one write(2) (llamacpp_main): llama.cpp's logger may have written part of a line of its own just
# before it (seen: "0.00.947.707 SDG_LISTENING http://..."), so it is found anywhere, but only with its newline
# right after the address (a log line that landed inside an address is no address).
_LISTENING = re.compile(r"SDG_LISTENING (https?://\S+)\r?\n")


class LlamaCppServer(TeacherServer):
    """llama.cpp's server through xllamacpp (prebuilt wheel; continuous batching over n_parallel slots)."""

    backend = "llama-cpp"
    needs_port = False  # port 0 lets llama.cpp bind a free port itself; it reports it

    def __init__(self, *, gguf: str, context_length: int = 4096, n_parallel: int = 4, n_threads: int = 2,
                 n_gpu_layers: int = 0, chat_template: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.gguf, self.context_length = gguf, context_length
        self.n_parallel, self.n_threads, self.n_gpu_layers = n_parallel, n_threads, n_gpu_layers
        self.chat_template = chat_template  # a Jinja file; None = the GGUF's own template

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "sdg.teacher.llamacpp_main", "--model", self.gguf, "--host", self.host,
                "--port", str(self.port), "--ctx", str(self.context_length), "--parallel", str(self.n_parallel),
                "--threads", str(self.n_threads), "--gpu-layers", str(self.n_gpu_layers), "--alias", self.model_name]
        if self.chat_template:
            argv += ["--chat-template-file", str(self.chat_template)]
        if self.api_key:
            argv += ["--api-key-env", API_KEY_ENV]  # the key travels in the environment, not in `ps`
        return argv

    def extra_env(self) -> dict[str, str]:
        return {API_KEY_ENV: self.api_key} if self.api_key else {}

    def url_from_log(self, text: str) -> str | None:
        m = _LISTENING.search(text)
        return f"{m.group(1).rstrip('/')}/v1" if m else None


# vLLM takes VLLM_PORT for torch.distributed's store and scans upward from it for any further port it needs;
# the store's bind failing shows as torch's DistNetworkError (older torch: a RuntimeError, same text).
DIST_PORT_SPAN = 8
_DIST_CLASH = re.compile(r"(?:DistNetworkError|server socket has failed to (?:listen|bind))[^\n]*?"
                         r"(?:EADDRINUSE|address already in use|errno: 98)", re.I)


def dist_port_clash(log: str) -> bool:
    """The log shows torch.distributed's store failing to bind its port (VLLM_PORT or one above it), as
    opposed to the HTTP server's bind (`OSError: [Errno 98] Address already in use`)."""
    return _DIST_CLASH.search(log) is not None


class VllmServer(TeacherServer):
    """vLLM's OpenAI server on the GPUs of one replica, tensor parallel across them.

    Two ports are ours: the HTTP port (teacher.port=0) and VLLM_PORT (`dist_port`; None = picked at launch,
    DIST_PORT_SPAN free ports from it). A start that loses either to another process is relaunched on new
    ones (TeacherServer.wait_ready)."""

    backend = "vllm"

    def __init__(self, *, model_path: str, command: Sequence[str] = (), tensor_parallel_size: int = 1,
                 context_length: int | None = None, extra_args: Sequence[str] = (), vllm_env: dict | None = None,
                 max_num_seqs: int | None = None, dist_port: int | None = None, chat_template: str | None = None,
                 **kw) -> None:
        super().__init__(**kw)
        self.model_path, self.tp, self.context_length = model_path, tensor_parallel_size, context_length
        self.launcher = list(command) or [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        self.extra_args, self.vllm_env, self.max_num_seqs = list(extra_args), dict(vllm_env or {}), max_num_seqs
        self.dist_port = dist_port
        self.chat_template = chat_template  # a Jinja file; None = the model's own (tokenizer_config.json)

    def choose_ports(self) -> None:
        super().choose_ports()
        if self.dist_port is None:
            self.dist_port = free_port(span=DIST_PORT_SPAN, avoid={self.port})

    def repick_ports(self, log: str) -> bool:
        """A clash on VLLM_PORT: always pick another (it is sdg's choice, never the user's); on the HTTP port:
        when teacher.port left it to us. Both are picked anew when they may be."""
        http = super().repick_ports(log)
        dist = dist_port_clash(log)
        if http or dist:
            self.dist_port = None  # choose_ports() picks it again
        return http or dist

    def command(self) -> list[str]:
        argv = [*self.launcher, "--model", self.model_path, "--served-model-name", self.model_name,
                "--host", self.host, "--port", str(self.port), "--tensor-parallel-size", str(self.tp)]
        if self.context_length and "--max-model-len" not in self.extra_args:
            argv += ["--max-model-len", str(self.context_length)]
        if self.max_num_seqs and "--max-num-seqs" not in self.extra_args:
            argv += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.chat_template and "--chat-template" not in self.extra_args:
            argv += ["--chat-template", str(self.chat_template)]
        return argv + self.extra_args  # user arguments last: vLLM's parser keeps the last value

    def extra_env(self) -> dict[str, str]:
        env = dict(self.vllm_env)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        if self.dist_port:
            env["VLLM_PORT"] = str(self.dist_port)  # torch.distributed rendezvous; distinct per replica
        return env


class EndpointServer(TeacherServer):
    """An OpenAI-compatible server someone else runs: nothing to start, only the completion probe."""

    backend = "endpoint"
    needs_port = False

    def __init__(self, *, url: str, **kw) -> None:
        super().__init__(**kw)
        self.url = url.rstrip("/")

    def command(self) -> list[str]:  # pragma: no cover - never launched
        raise NotImplementedError

    def launch(self) -> None:
        self.base_url = self.url if self.url.endswith("/v1") else f"{self.url}/v1"
        self.state = ServerState.STARTING

    def health(self, client: httpx.Client) -> bool:
        return True  # many hosted endpoints have no /health; the completion probe decides

    def stop(self, grace_s: float = 0) -> None:
        if self.state is not ServerState.FAILED:
            self.state = ServerState.STOPPED

    def endpoint(self) -> ServedEndpoint:
        assert self.base_url is not None
        return ServedEndpoint(self.base_url, self.model_name, self.api_key, self.backend, (), None, None)
