"""One Ray node per Slurm node, started and stopped by this process only.

`ray start --block` runs as our child in its own process group (so the Slurm step still tracks it and
we can stop exactly it), bound to this node's address, with ports that are free on this node right
now and a small object store, so several Ray nodes can share one machine (the local test cluster).
Stopping signals that process group, never `ray stop` (which kills every Ray process on the machine).

Every Ray node and the driver authenticate with a token (Ray's `RAY_AUTH_MODE=token`, Ray >= 2.52): a
process that can reach a node's ports but lacks the job's token is refused. The token comes from the
job's 0600 rendezvous file and travels only in the environment of `ray start` and of the driver (never
on a command line, where `ps` shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sdg.errors import RayStartError

WORKER_PORTS = 24  # Ray worker processes this node may run at once (one actor + a few helpers)
RAY_AUTH_MIN = (2, 52)  # first Ray with token authentication (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def ray_auth_env(token: str) -> dict[str, str]:
    """The environment that makes a Ray process (`ray start`, a driver, a client) use token authentication
    with `token`. RAY_AUTH_TOKEN_PATH is dropped from the environment it is merged into (see `with_ray_auth`),
    so a token file of the user's (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH) never stands in for the job's."""
    if not token:
        raise RayStartError("no Ray authentication token: the rendezvous file must hold one (ray_token)")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def with_ray_auth(env: dict[str, str], token: str) -> dict[str, str]:
    """`env` with Ray's token authentication on (`token`), any other token source removed."""
    out = {k: v for k, v in env.items() if k not in _AUTH_VARS}
    return {**out, **ray_auth_env(token)}


def check_ray_supports_auth() -> None:
    """RayStartError unless the installed Ray has token authentication (an older Ray ignores
    RAY_AUTH_MODE and would run an open cluster)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("ray")
    except PackageNotFoundError:
        return  # ray_executable() says how to install it
    nums = tuple(int(p) for p in re.findall(r"\d+", text)[:2])
    if nums < RAY_AUTH_MIN:
        raise RayStartError(f"Ray {text} has no token authentication, and sdg does not run an unauthenticated Ray "
                            f"cluster: pip install 'ray>={RAY_AUTH_MIN[0]}.{RAY_AUTH_MIN[1]}'")


def resource_name(node: str) -> str:
    """The custom Ray resource that pins one actor to the Ray node of Slurm node `node`."""
    return "sdg_node_" + "".join(c if c.isalnum() else "_" for c in node)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on every interface of this node now (held open together)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_executable() -> str:
    exe = Path(sys.executable).with_name("ray")
    if exe.exists():
        return str(exe)
    found = shutil.which("ray")
    if not found:
        raise RayStartError("the `ray` command is not installed in this environment: pip install 'ray>=2.52' "
                            "(Ray runs the work queue across the nodes of a Slurm job)")
    return found


def _set_pdeathsig() -> None:  # in the child: if this process dies, the Ray node gets SIGTERM
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class RayNode:
    """A running `ray start --block` (head or worker) on `ip`."""

    ip: str
    head: bool
    temp_dir: Path
    log_path: Path
    gcs_port: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    auth_token: str = field(default="", repr=False)  # the cluster's Ray token (the driver connects with it)

    @property
    def address(self) -> str:
        assert self.gcs_port is not None
        return f"{self.ip}:{self.gcs_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM to `ray start` (it stops its children), SIGKILL to our whole group after `grace_s`.

        Ray keeps no state we need (journals hold the work), so a short grace is enough; Slurm's
        KillWait is the budget for everything a node stops.
        """
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group is ours alone
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                if sig == signal.SIGTERM:
                    os.kill(pgid, sig)
                else:
                    os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                self.proc.poll()
                time.sleep(0.1)
            if not _group_alive(pgid):
                break
        self.proc.poll()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in group `pgid`?"""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def start_ray_node(*, ip: str, node: str, temp_dir: Path, log_path: Path, auth_token: str,
                   head_address: str | None = None, object_store_mb: int = 256, num_cpus: int = 0,
                   timeout_s: float = 120.0, alive_check: Callable[[], None] = lambda: None) -> RayNode:
    """Start a Ray head (head_address=None) or a worker joining `head_address`; wait until it serves.

    `auth_token`: the cluster's Ray token (token authentication is always on; it goes into the child's
    environment only). Head: ready when its GCS port accepts connections. Worker: ready when its raylet
    port does (the driver still checks that the node registered, by its `sdg_node_<name>` resource).
    """
    check_ray_supports_auth()
    names = ("port", "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")
    ports = free_ports(len(names) + WORKER_PORTS)
    chosen = dict(zip(names, ports))
    worker_ports = ports[len(names):]
    argv: list[str] = [ray_executable(), "start", "--block", f"--node-ip-address={ip}",
                       f"--temp-dir={temp_dir}", f"--object-store-memory={object_store_mb * 1024 * 1024}",
                       f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats",
                       f"--resources={json.dumps({resource_name(node): 1})}",
                       f"--worker-port-list={','.join(map(str, worker_ports))}"]
    for name in names[1:7]:
        argv.append(f"--{name}={chosen[name]}")
    if head_address is None:
        argv += ["--head", f"--port={chosen['port']}", "--include-dashboard=false"]
    else:
        argv.append(f"--address={head_address}")
    private_temp_dir(temp_dir)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # No dashboard agent in a minimal Ray: without metrics collection it does not complain about it.
    env = with_ray_auth({**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_metrics_collection": "0",
                         "PYTHONUNBUFFERED": "1"}, auth_token)
    env.pop("RAY_ADDRESS", None)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=_set_pdeathsig)
    rn = RayNode(ip, head_address is None, temp_dir, log_path, chosen["port"] if head_address is None else None, proc,
                 auth_token=auth_token)
    wait_port = chosen["port"] if head_address is None else chosen["node-manager-port"]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            alive_check()
            if proc.poll() is not None:
                raise RayStartError(f"ray {'head' if rn.head else 'worker'} on {node} ({ip}) exited with code "
                                    f"{proc.returncode}; log {log_path}:\n{rn.log_tail()}")
            try:
                with socket.create_connection((ip, wait_port), timeout=1.0):
                    return rn
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RayStartError(f"ray {'head' if rn.head else 'worker'} on {node} ({ip}) not up after "
                                    f"{timeout_s:.0f} s; log {log_path}:\n{rn.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        rn.stop(grace_s=3.0)
        raise


TEMP_PREFIX = "sdgray-"


def private_temp_dir(path: Path) -> None:
    """Create Ray's temp dir for this user only (its sockets let anyone who can reach them drive the node).
    The path is predictable (Unix socket paths must stay short), so one that exists must be ours and 0700:
    another user's dir there is refused rather than used."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RayStartError(f"Ray's temp dir {path} exists and is not this user's directory (uid {st.st_uid}); "
                            "refusing to start Ray in it: remove it, or ask who made it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def temp_dir_for(job_id: str, restart: int, node: str) -> Path:
    """Ray's temp dir for one node of one attempt: short (Unix socket paths live inside it), node-local."""
    return Path("/tmp") / f"{TEMP_PREFIX}{job_id}-{restart}-{node}"


def clean_stale_temp_dirs(current_job: str) -> None:
    """Remove temp dirs that Ray nodes of jobs no longer in the queue left behind (a SIGKILLed node
    cannot clean up); dirs of queued or running jobs, and ones we may not delete, stay."""
    stale = {}
    for d in Path("/tmp").glob(f"{TEMP_PREFIX}*-*-*"):
        job = d.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if job != current_job:
            stale.setdefault(job, []).append(d)
    if not stale:
        return
    try:
        r = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return
    if r.returncode != 0:
        return
    queued = set(r.stdout.split())
    for job, dirs in stale.items():
        if job not in queued:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)


def wait_for_nodes(nodes: Sequence[str], timeout_s: float, alive_check: Callable[[], None] = lambda: None) -> None:
    """Block (connected as a driver) until every Slurm node's Ray node has registered."""
    import ray

    want = {resource_name(n) for n in nodes}
    deadline = time.monotonic() + timeout_s
    while True:
        have = {k for n in ray.nodes() if n.get("Alive") for k in n.get("Resources", {})}
        if want <= have:
            return
        alive_check()
        if time.monotonic() > deadline:
            missing = sorted(n for n in nodes if resource_name(n) not in have)
            raise RayStartError(f"Ray nodes of {', '.join(missing)} did not join within {timeout_s:.0f} s")
        time.sleep(0.2)


def _refresh_ray_auth() -> None:
    """Make this process's Ray re-read RAY_AUTH_* (its config and token are cached once read)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication: check_ray_supports_auth() refuses it first
        return
    Config.initialize("")  # the config first: a gRPC thread must not reload a token the mode no longer wants
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def ray_token_auth(token: str) -> Iterator[None]:
    """This process talks to Ray with token authentication (`token`) while inside; its environment is
    restored afterwards. Wrap the whole connection in it (ray.init ... ray.shutdown): Ray checks the
    mode on every call, so it must not change while connected."""
    check_ray_supports_auth()
    auth = ray_auth_env(token)
    saved = {k: os.environ.get(k) for k in _AUTH_VARS}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(auth)
    _refresh_ray_auth()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_ray_auth()


@contextlib.contextmanager
def ray_driver(node: RayNode, ip: str) -> Iterator[None]:
    """Connect this process to the cluster of `node` (the head) as its driver, with the cluster's token;
    disconnect on the way out."""
    import ray

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with ray_token_auth(node.auth_token):
        ray.init(address=node.address, _node_ip_address=ip, logging_level="WARNING", log_to_driver=False,
                 configure_logging=False)
        for s, h in handlers.items():  # Ray's C++ handler aborts on SIGTERM: keep submitit's (or our unwind)
            if h is not None:
                signal.signal(s, h)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                ray.shutdown()
