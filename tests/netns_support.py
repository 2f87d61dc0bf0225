"""Two "machines" on this one: network namespaces joined by a veth pair, with addresses of their own (traffic
stays inside this machine). Each namespace's /etc/hosts (`ip netns exec` mounts /etc/netns/<ns>/hosts over
it) maps its own name to 127.0.1.1 as Debian hosts do, and the other's to its veth address: what loopback
aliases cannot show (tests/test_node_address.py, tests/test_netns_job.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def two_machines(tmp_path):
    """Namespaces A and B, veth 10.231.<n>.1 <-> .2, names sdga/sdgb resolving as described above."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100000}"
    ns = (f"sdgA{tag}", f"sdgB{tag}")
    veth = (f"sdgva{tag}", f"sdgvb{tag}")
    net = f"10.231.{os.getpid() % 250}"
    ips = (f"{net}.1", f"{net}.2")
    names = ("sdga", "sdgb")
    made: list[str] = []
    etc_netns = Path("/etc/netns")
    had_etc_netns = etc_netns.exists()

    def ip(*args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    try:
        try:
            for n in ns:
                ip("netns", "add", n)
                made.append(n)
        except RuntimeError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc}")
        ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for i in (0, 1):
            ip("link", "set", veth[i], "netns", ns[i])
            ip("-n", ns[i], "addr", "add", f"{ips[i]}/24", "dev", veth[i])
            ip("-n", ns[i], "link", "set", veth[i], "up")
            ip("-n", ns[i], "link", "set", "lo", "up")
            etc = etc_netns / ns[i]
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {names[i]}\n{ips[1 - i]} {names[1 - i]}\n")
        yield {"ns": ns, "veth": veth, "ips": ips, "names": names}
    finally:
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)  # the veth pair goes with it
            shutil.rmtree(etc_netns / n, ignore_errors=True)
        if not had_etc_netns:
            with contextlib.suppress(OSError):
                etc_netns.rmdir()  # only if empty: someone else's namespaces keep it


def in_ns(ns: str, *args: str) -> list[str]:
    """argv running this Python with `args` inside namespace `ns` (sdg from this checkout)."""
    repo = Path(__file__).resolve().parent.parent
    return ["ip", "netns", "exec", ns, "env", f"PYTHONPATH={repo}", sys.executable, *args]


