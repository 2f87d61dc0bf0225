"""One small server abstraction: subclasses say how to launch (`command`) and how to check (`health`);
this base class owns ports, the process group, the log, readiness that does not lie, and shutdown.

Readiness is a state machine with one deadline: the process must stay alive, its log must not show a
known fatal line, the HTTP health check must pass, and a real one-token completion must come back
(a server can answer /v1/models and still not serve completions). Shutdown signals the whole process
group (vLLM starts engine processes of its own), waits, then kills; the child also gets SIGTERM if we
die first (PR_SET_PDEATHSIG), so no path leaves an orphan holding a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import random
import re
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Collection, Mapping, Sequence

import httpx

from sdg.errors import TeacherStartError
from sdg.teacher.client import SYSTEM_PROMPT_MODES, shape_messages

STOP_GRACE_S = 15.0
PORT_IN_USE = "its port is already in use"
PORT_RETRIES = 4  # starts in all when the ports we picked are taken before the server binds them
LOG_TAIL_LINES = 25
HEALTH_TIMEOUT_S = 10.0  # one health check (a socket that accepts and never answers is not a server yet)
# The readiness probe has the shape of every generation request: a system message and a user message,
# shaped by teacher.system_prompt_mode as the client shapes them.
PROBE_MESSAGES = ({"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": "Say OK."})
# What servers answer when a chat template raises (vLLM, llama.cpp: 400; some versions: 422 or 500).
TEMPLATE_ERROR_STATUSES = frozenset({400, 422, 500})
FOLD_FIX = "teacher.system_prompt_mode=fold_into_user"


class ServerState(enum.Enum):
    NEW = "new"
    STARTING = "starting"  # process launched, waiting for health
    PROBING = "probing"  # health passes, waiting for a real completion
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


# Log lines that mean the server will never come up, and what to do about each.
# Each pattern is matched per line; a line logged at INFO/DEBUG/WARNING level is advice, not a failure
# (vLLM prints "if out of memory error occurs during cudagraph capture, ..." at INFO while starting well).
_NOT_ADVICE = r"^(?!.*\b(?:INFO|DEBUG|WARNING|WARN)\b)[^\n]*?"
FATAL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(_NOT_ADVICE + p, re.I | re.M), why)
                                                               for p, why in (
    (r"(?:address already in use|EADDRINUSE|\[Errno 98\]|couldn't bind HTTP server socket)", PORT_IN_USE),
    (r"(?:CUDA out of memory|OutOfMemoryError|out[ -]of[ -]memory)", "it ran out of memory (lower "
                                                                   "teacher.context_length, use more GPUs, or a smaller model)"),
    (r"(?:CUDA error|no CUDA-capable device|cudaErrorNoDevice|NCCL error)", "a CUDA/NCCL error (check the GPUs it was "
                                                                           "given)"),
    (r"No module named '?vllm", "vLLM is not installed for that Python (set teacher.vllm.command to the env that has it)"),
    (r"Engine core initialization failed", "vLLM's engine failed to start (see the log above)"),
    (r"(?:failed to load model|error loading model|unable to load model)", "the model file could not be loaded"),
))


def fatal_reason(log: str) -> str | None:
    """Why a server whose log says this will never come up (None: nothing fatal in it)."""
    for pattern, why in FATAL_PATTERNS:
        if pattern.search(log):
            return why
    return None


# Ports sdg picks for servers come from outside the kernel's ephemeral range (ip_local_port_range): the
# kernel hands those out to every bind(0) and outgoing connect() on the node (vLLM's own helpers, Ray,
# NCCL, clients), so a port picked there and released can be taken before the server binds it. Outside it,
# only another explicit pick can collide, and the start retries on a clash (TeacherServer.wait_ready).
PICK_FLOOR = 20000  # below: well-known services, Ray's default worker ports (10002-19999)
_PICK_ATTEMPTS = 200


def _pick_ranges() -> list[range]:
    """Port ranges outside the ephemeral range (at least 1000 ports), or [] to let the kernel choose."""
    try:
        lo, hi = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    except (OSError, ValueError):
        return []
    ranges = [r for r in (range(PICK_FLOOR, lo), range(max(hi + 1, PICK_FLOOR), 65536)) if len(r) > 0]
    return ranges if sum(len(r) for r in ranges) >= 1000 else []


def _bindable(family: int, port: int) -> bool:
    """Nothing on this node holds `port` (on any address): a plain bind to the wildcard address works."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1", *, span: int = 1, avoid: Collection[int] = ()) -> int:
    """A port free on this node now (with the next `span - 1` ones free too: vLLM takes VLLM_PORT and scans
    upward from it for more), outside the kernel's ephemeral range where the node leaves room for that, and
    none of `avoid`. The port is released again: a server can still lose it (see wait_ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ranges = [r for r in _pick_ranges() if len(r) > span]
    rng = random.SystemRandom()
    for _ in range(_PICK_ATTEMPTS if ranges else 0):
        r = rng.choice(ranges)
        start = rng.randrange(r.start, r.stop - span + 1)
        block = range(start, start + span)
        if not any(p in avoid for p in block) and all(_bindable(family, p) for p in block):
            return start
    for _ in range(_PICK_ATTEMPTS):  # the kernel's choice (the ephemeral range fills the whole port space)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            start = int(s.getsockname()[1])
        block = range(start, start + span)
        if block.stop <= 65536 and not any(p in avoid for p in block) and all(_bindable(family, p) for p in block[1:]):
            return start
    raise OSError(f"no {span} free consecutive port(s) on this node")


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (kill -0 lies about zombies)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@dataclass(frozen=True)
class ServedEndpoint:
    """A ready server, as the client needs it."""

    base_url: str  # .../v1
    model: str
    api_key: str | None
    backend: str
    gpus: tuple[str, ...]
    log_path: str | None
    pid: int | None


class TeacherServer(ABC):
    """Base of every backend. Use as a context manager, or call start() and stop()."""

    backend: ClassVar[str] = ""
    needs_port: ClassVar[bool] = True  # False: the server picks its own and reports it in its log

    def __init__(self, *, model_name: str, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 log_path: Path | None = None, startup_timeout_s: float = 900.0, gpus: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, name: str = "teacher", system_prompt_mode: str = "system") -> None:
        self.model_name, self.host, self.port, self.api_key = model_name, host, port, api_key
        self.log_path, self.startup_timeout_s, self.gpus = log_path, startup_timeout_s, tuple(gpus)
        self.base_env = dict(os.environ if env is None else env)
        self.name = name
        if system_prompt_mode not in SYSTEM_PROMPT_MODES:
            raise ValueError(f"system_prompt_mode must be one of {', '.join(SYSTEM_PROMPT_MODES)}")
        self.system_prompt_mode = system_prompt_mode
        self.state = ServerState.NEW
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url: str | None = None
        self._log_offset = 0
        self._log_file = None
        self._auto_port = False

    # ---- what a backend says -------------------------------------------------------------
    @abstractmethod
    def command(self) -> list[str]:
        """argv that runs the server on self.host:self.port."""

    def extra_env(self) -> dict[str, str]:
        return {}

    def url_from_log(self, text: str) -> str | None:
        """Servers that choose their own port report it; the default knows it in advance."""
        return None

    def health(self, client: httpx.Client) -> bool:
        """The server's own health check (not a completion)."""
        root = self.base_url.rsplit("/v1", 1)[0] if self.base_url else ""
        try:
            return client.get(f"{root}/health", headers=self._headers(), timeout=HEALTH_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    # ---- owned here ----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def choose_ports(self) -> None:
        """Pick the ports of the next launch that are ours to pick (teacher.port=0: the HTTP port)."""
        if self.needs_port and (not self.port or self._auto_port):
            self.port = free_port(self.host)
            self._auto_port = True

    def repick_ports(self, log: str) -> bool:
        """After a start failed on a port in use (`log`: that start's log): let the next launch pick new
        ports; False when the clash is on a port that is not ours to change (a fixed teacher.port)."""
        return self._auto_port  # choose_ports() picks the HTTP port again

    def launch(self) -> None:
        """Start the process (non-blocking)."""
        self.choose_ports()
        if self.needs_port:
            self.base_url = f"http://{_url_host(self.host)}:{self.port}/v1"
        argv = self.command()
        env = {**self.base_env, **self.extra_env()}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            self._log_offset = self.log_path.stat().st_size
            out = self._log_file
        else:
            out = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=_set_pdeathsig)
        except OSError as exc:
            self.state = ServerState.FAILED
            raise TeacherStartError(f"cannot run the {self.backend} server ({argv[0]}): {exc.strerror}; "
                                    "check that it is installed and on PATH") from None
        self.state = ServerState.STARTING

    def _new_log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        return data.decode("utf-8", "replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self._new_log().splitlines()[-lines:])

    def _fail(self, why: str) -> TeacherStartError:
        tail = self.log_tail()
        self.stop()
        self.state = ServerState.FAILED
        where = f" (log: {self.log_path})" if self.log_path else ""
        err = TeacherStartError(f"{self.backend} teacher '{self.name}' did not start: {why}{where}"
                                + (f"\n--- last log lines ---\n{tail}" if tail else ""))
        err.reason = why
        return err

    def wait_ready(self) -> ServedEndpoint:
        """Block until ready or raise TeacherStartError (the process is stopped then).

        A port we picked (the HTTP port, vLLM's VLLM_PORT) can be taken by someone else before the server
        binds it: when its log says so, relaunch at once on newly picked ports, at most PORT_RETRIES starts.
        """
        for attempt in range(PORT_RETRIES):
            try:
                return self._wait_ready()
            except TeacherStartError as exc:
                if not (exc.reason == PORT_IN_USE and attempt + 1 < PORT_RETRIES and self.repick_ports(self._new_log())):
                    raise
                self.launch()
        raise AssertionError("unreachable")

    def _wait_ready(self) -> ServedEndpoint:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.2
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            while self.state is ServerState.STARTING:
                log = self._new_log()
                why = fatal_reason(log)
                if why is not None:
                    raise self._fail(why)
                if self.proc is not None and self.proc.poll() is not None:
                    raise self._fail(f"the process exited with code {self.proc.returncode}")
                if self.base_url is None:
                    self.base_url = self.url_from_log(log)
                if self.base_url is not None and self.health(client):
                    self.state = ServerState.PROBING
                    break
                if time.monotonic() > deadline:
                    raise self._fail(f"not healthy after {self.startup_timeout_s:.0f} s (teacher.startup_timeout_s)")
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
            while self.state is ServerState.PROBING:
                problem = self.probe(client)
                if self.proc is not None and self.proc.poll() is not None:
                    # whatever answered was not our server (its port was taken: the log says so) or it died since
                    raise self._fail(fatal_reason(self._new_log()) or f"the process exited with code "
                                     f"{self.proc.returncode} during the first completion")
                if problem is None:
                    self.state = ServerState.READY
                    break
                if time.monotonic() > deadline:
                    raise self._fail(f"healthy but a one-token completion failed: {problem}")
                time.sleep(1.0)
        return self.endpoint()

    def probe(self, client: httpx.Client) -> str | None:
        """A real one-token chat completion of a system + user pair, shaped as generation requests are;
        None when it works, else what went wrong. A chat template that rejects the system message is a
        TeacherStartError at once (nothing changes by waiting) that names FOLD_FIX."""
        messages = shape_messages([dict(m) for m in PROBE_MESSAGES], self.system_prompt_mode)
        problem, status = self._complete(client, messages)
        if problem is None or self.system_prompt_mode != "system" or status not in TEMPLATE_ERROR_STATUSES:
            return problem
        # Does the same request with the system text folded into the user message work, while the pair
        # still fails? Then it is the template, not a server that is not ready yet.
        folded, _ = self._complete(client, shape_messages([dict(m) for m in PROBE_MESSAGES], "fold_into_user"))
        if folded is None and self._complete(client, messages)[1] == status:
            raise self._fail(f"its chat template rejects the system message every prompt sends ({problem}); "
                             f"set {FOLD_FIX} (the system text then opens the first user message), or choose a "
                             "teacher.chat_template that accepts a system role")
        return problem

    def _complete(self, client: httpx.Client, messages: list[dict]) -> tuple[str | None, int | None]:
        """(None, 200) for a one-token chat completion that works, else (what went wrong, HTTP status)."""
        body = {"model": self.model_name, "messages": messages, "max_tokens": 1, "temperature": 0}
        try:
            r = client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}", None
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {_error_text(r)}", r.status_code
        try:
            r.json()["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"not an OpenAI chat completion: {r.text[:300]}", r.status_code
        return None, r.status_code

    def start(self) -> ServedEndpoint:
        self.launch()
        return self.wait_ready()

    def endpoint(self) -> ServedEndpoint:
        assert self.base_url is not None
        return ServedEndpoint(self.base_url, self.model_name, self.api_key, self.backend, self.gpus,
                              str(self.log_path) if self.log_path else None, self.proc.pid if self.proc else None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait, SIGKILL what is left; idempotent."""
        proc = self.proc
        if proc is not None:
            pgid = proc.pid  # start_new_session: the child leads its own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.state is not ServerState.FAILED:
            self.state = ServerState.STOPPED

    def __enter__(self) -> ServedEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _error_text(r: httpx.Response) -> str:
    """A server's error on one line: OpenAI's error.message (its first and last lines when it is long, as
    llama.cpp's template errors are: the last says what the template raised), else the body's start."""
    try:
        data = r.json()
        err = data.get("error", data) if isinstance(data, dict) else None
        text = err.get("message") if isinstance(err, dict) else err
    except ValueError:
        text = None
    if not isinstance(text, str) or not text.strip():
        text = r.text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 2:
        lines = [lines[0], "...", lines[-1]]
    return " ".join(lines)[:500]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
