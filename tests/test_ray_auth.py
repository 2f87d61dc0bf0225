"""Ray token authentication on every node sdg starts (sdg.launch.raynode): real Ray on this machine, no Slurm.

A head started with a token through sdg's own start function admits a client (and a worker node) that has
the token and refuses one without it or with another one. The token never appears on a command line or
in Ray's log. Only the processes started here are stopped (RayNode.stop: their own process groups).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[slurm]')")

from sdg.errors import RayStartError  # noqa: E402
from sdg.launch.raynode import (RAY_AUTH_MIN, RayNode, ray_auth_env, ray_token_auth, resource_name,  # noqa: E402
                                start_ray_node, with_ray_auth)

pytestmark = pytest.mark.slow
CLIENT_TIMEOUT_S = 150  # a refused client gives up after Ray's own retries (about 20 s here)

CLIENT = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60  # a worker node registers shortly after its raylet port opens
while True:
    have = sorted(k for n in ray.nodes() if n["Alive"] for k in n["Resources"] if k.startswith("sdg_node_"))
    if len(have) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print("NODES", have)
ray.shutdown()
"""


def _ray_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in version("ray").split(".")[:2])


if _ray_version() < RAY_AUTH_MIN:
    pytest.skip(f"Ray {_ray_version()} has no token authentication", allow_module_level=True)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """This environment without any Ray token source, with a HOME of its own (no ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def _clients(address: str, *envs: dict[str, str], nodes: int = 1) -> list[subprocess.CompletedProcess]:
    """One Ray client per environment, side by side; what each did (a hang fails the test)."""
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, address, str(nodes)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in envs]
    out = []
    try:
        for p in procs:
            try:
                stdout, stderr = p.communicate(timeout=CLIENT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a Ray client hung for {CLIENT_TIMEOUT_S} s instead of connecting or being refused")
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:  # only the clients started here
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _start(tmp_path: Path, name: str, token: str, monkeypatch: pytest.MonkeyPatch, **kw) -> RayNode:
    for k in list(os.environ):
        if k.startswith("RAY_AUTH"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token of the user's stands in
    # a short temp dir of its own (Unix socket paths live in it), private as sdg makes it; not named like a
    # job's (sdgray-<job>-...), which a Slurm job's node would clean up as stale
    temp = Path("/tmp") / f"sdgrt-{os.getpid()}-{secrets.token_hex(2)}-{name}"
    return start_ray_node(ip="127.0.0.1", node=name, temp_dir=temp, log_path=tmp_path / f"{name}.log",
                          auth_token=token, timeout_s=120, **kw)


def _cmdlines(pgid: int) -> list[str]:
    """The command lines of the live processes of group `pgid`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return out


def test_head_admits_the_token_and_refuses_no_token_or_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_hex(32)
    env = _clean_env(tmp_path)
    head = _start(tmp_path, "head", token, monkeypatch)
    worker = None
    try:
        assert head.auth_token == token
        # it travels in the environment only: on no command line of the node's processes, not in its log
        assert not any(token in c for c in _cmdlines(head.proc.pid)), _cmdlines(head.proc.pid)  # type: ignore[union-attr]
        worker = _start(tmp_path, "worker", token, monkeypatch, head_address=head.address)

        (ok,) = _clients(head.address, with_ray_auth(env, token), nodes=2)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert f"NODES {sorted([resource_name('head'), resource_name('worker')])}" in ok.stdout  # the worker joined

        t0 = time.monotonic()
        # no token at all (the head refuses it: the check is the server's), another token, and RAY_AUTH_MODE=token
        # without a token (the client itself refuses to try)
        none, wrong, mode_only = _clients(head.address, env, with_ray_auth(env, secrets.token_hex(32)),
                                          {**env, "RAY_AUTH_MODE": "token"})
        print(f"three refusals in {time.monotonic() - t0:.0f} s")
        for refused in (none, wrong):
            assert refused.returncode != 0 and "NODES" not in refused.stdout
            assert "Authentication token is missing or incorrect" in refused.stderr, refused.stderr[-3000:]
        assert mode_only.returncode != 0 and "no authentication token was found" in mode_only.stderr
        assert head.alive() and worker.alive()
        for log in (head.log_path, worker.log_path):
            assert token not in log.read_text(errors="replace")
    finally:
        for node in (worker, head):
            if node is not None:
                node.stop()
    assert not head.alive() and not head.temp_dir.exists()


def test_a_worker_with_another_token_cannot_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = _start(tmp_path, "head", secrets.token_hex(32), monkeypatch)
    try:
        with pytest.raises(RayStartError, match="Authentication token is missing or incorrect"):
            _start(tmp_path, "intruder", secrets.token_hex(32), monkeypatch, head_address=head.address)
        assert head.alive()
    finally:
        head.stop()


def test_the_driver_connects_with_the_token_and_its_environment_is_restored(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """node 0's driver (ray_driver/ray_token_auth): Ray calls work inside; outside, the environment is as before
    (the user's own RAY_AUTH_TOKEN_PATH kept, the job's token gone). Run in a child: one Ray driver per process."""
    token = secrets.token_hex(32)
    head = _start(tmp_path, "head", token, monkeypatch)
    code = f"""
import os, ray
from pathlib import Path
from sdg.launch.raynode import RayNode, ray_driver
node = RayNode("127.0.0.1", True, Path("/nonexistent"), Path("/nonexistent"), {head.gcs_port}, auth_token={token!r})
with ray_driver(node, "127.0.0.1"):
    assert os.environ["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN_PATH" not in os.environ
    print("RESOURCES", sorted(k for k in ray.cluster_resources() if k.startswith("sdg_node_")))
print("AFTER", os.environ.get("RAY_AUTH_MODE"), os.environ.get("RAY_AUTH_TOKEN"), os.environ.get("RAY_AUTH_TOKEN_PATH"))
"""
    try:
        env = {**_clean_env(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "users-own-token")}
        try:
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               timeout=CLIENT_TIMEOUT_S, cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:
            pytest.fail("the driver hung")
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"RESOURCES {[resource_name('head')]}" in r.stdout
        assert f"AFTER None None {tmp_path / 'users-own-token'}" in r.stdout
    finally:
        head.stop()


def test_no_token_no_ray(tmp_path: Path) -> None:
    with pytest.raises(RayStartError, match="no Ray authentication token"):
        ray_auth_env("")
    with pytest.raises(RayStartError, match="no Ray authentication token"):
        with ray_token_auth(""):
            pass
    env = with_ray_auth({"RAY_AUTH_TOKEN_PATH": "/home/u/.ray/auth_token", "RAY_AUTH_MODE": "disabled", "A": "1"}, "t0k")
    assert env == {"A": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0k"}
