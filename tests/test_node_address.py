"""Each node's address on a Slurm job (sdg.launch.node: node_address, NodeEnv): cluster.address_from =
route | interface | hostname, cluster.interface. Pure choices with fake name resolution and routes, plus
the real UDP-connect route and interface lookup on this machine."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import subprocess

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.config.schema import ClusterConfig
from sdg.errors import ClusterError, ConfigError
from sdg.launch.node import Net, NodeEnv, address_mode, interface_ipv4, node_address, route_source
from tests.netns_support import in_ns as _in_ns


def fake_net(hosts: dict[str, str], routes: dict[str, str] | None = None, interfaces: dict[str, str] | None = None,
             nodelist: list[str] | None = None, calls: list | None = None) -> Net:
    """Names resolve by `hosts`, a target routes from `routes[target]` (else no route), interfaces by
    `interfaces`; the job's nodes are `nodelist` (default: every name in `hosts`, in order)."""
    calls = [] if calls is None else calls

    def route(target: str) -> str | None:
        calls.append(("route", target))
        return (routes or {}).get(target)

    def iface(name: str) -> str:
        if name not in (interfaces or {}):
            import errno

            raise OSError(errno.ENODEV, "No such device")
        return (interfaces or {})[name]

    return Net(resolve=hosts.get, route_source=route, interface_ipv4=iface,
               hostnames=lambda nl: list(nodelist if nodelist is not None else hosts) if nl else [])


CLUSTER = {"gpu1": "10.1.0.1", "gpu2": "10.1.0.2", "gpu3": "10.1.0.3"}
ROUTES = {"10.1.0.2": "10.1.0.1", "10.1.0.1": "10.1.0.2"}  # gpu1 <-> gpu2 over the 10.1 network


def addr(node: str, index: int, count: int = 3, net: Net | None = None, **kw) -> str | None:
    return node_address(node=node, index=index, count=count, nodelist="gpu[1-3]", net=net or fake_net(CLUSTER, ROUTES),
                        **kw)


def test_route_head_uses_the_interface_toward_the_next_node() -> None:
    calls: list = []
    assert addr("gpu1", 0, net=fake_net(CLUSTER, ROUTES, calls=calls)) == "10.1.0.1"
    assert calls == [("route", "10.1.0.2")]  # the first other node of the job, by its resolved name


def test_route_other_nodes_wait_for_the_head_then_route_toward_it() -> None:
    assert addr("gpu2", 1) is None  # provisional until the rendezvous file names the head
    assert addr("gpu2", 1, head="10.1.0.1:6379") == "10.1.0.2"


def test_route_ignores_a_name_that_resolves_to_loopback_on_the_node_itself() -> None:
    """Debian's /etc/hosts maps a machine's own name to 127.0.1.1: the route still finds the real interface."""
    hosts = {**CLUSTER, "gpu1": "127.0.1.1"}
    assert addr("gpu1", 0, net=fake_net(hosts, ROUTES)) == "10.1.0.1"
    hosts2 = {**CLUSTER, "gpu2": "127.0.1.1"}
    assert addr("gpu2", 1, net=fake_net(hosts2, ROUTES), head="10.1.0.1:6379") == "10.1.0.2"


def test_loopback_is_refused_on_a_multi_node_job_that_is_not_one_machine() -> None:
    # the head's name resolves to loopback for the others (a hosts file copied from the head) ...
    with pytest.raises(ClusterError, match=r"node gpu2: the Ray head \(127.0.1.1\) is a loopback address.*"
                                           r"not all on this machine"):
        addr("gpu2", 1, head="127.0.1.1:6379")
    # ... the next node resolves to loopback on the head
    with pytest.raises(ClusterError, match=r"node gpu1: node gpu2 \(127.0.1.1\) is a loopback address"):
        addr("gpu1", 0, net=fake_net({**CLUSTER, "gpu2": "127.0.1.1"}, ROUTES))
    # the route itself leaves through loopback
    with pytest.raises(ClusterError, match=r"node gpu1: the route toward node gpu2 \(10.1.0.2\) gives the loopback "
                                           r"address 127.0.0.1.*cluster.interface=NAME"):
        addr("gpu1", 0, net=fake_net(CLUSTER, {"10.1.0.2": "127.0.0.1"}))
    # hostname mode: the name resolves to loopback
    with pytest.raises(ClusterError, match=r"node gpu1: its name gpu1 \(cluster.address_from=hostname\) gives the "
                                           r"loopback address 127.0.1.1"):
        addr("gpu1", 0, net=fake_net({**CLUSTER, "gpu1": "127.0.1.1"}), address_from="hostname")


def test_no_route_no_names_are_clear_errors() -> None:
    with pytest.raises(ClusterError, match=r"node gpu1: no route toward node gpu2"):
        addr("gpu1", 0, net=fake_net(CLUSTER, {}))
    with pytest.raises(ClusterError, match=r"node gpu1: node gpu2 of this job does not resolve"):
        addr("gpu1", 0, net=fake_net({"gpu1": "10.1.0.1"}, ROUTES, nodelist=["gpu1", "gpu2"]))
    with pytest.raises(ClusterError, match=r"node gpu1: cannot list the job's other nodes"):
        node_address(node="gpu1", index=0, count=2, nodelist="", net=fake_net(CLUSTER, ROUTES))
    with pytest.raises(ClusterError, match=r"node gpu9: its name does not resolve"):
        addr("gpu9", 1, address_from="hostname")


def test_the_local_test_cluster_of_loopback_aliases_still_forms() -> None:
    """scripts/slurm_up.sh: node1..node3 are 127.0.0.11..13 on one machine; each keeps its own alias (a route
    toward another alias would give 127.0.0.1 to every node)."""
    local = {"node1": "127.0.0.11", "node2": "127.0.0.12", "node3": "127.0.0.13"}
    net = fake_net(local, {"127.0.0.12": "127.0.0.1", "127.0.0.11": "127.0.0.1"})
    assert node_address(node="node1", index=0, count=2, nodelist="node[1-2]", net=net) == "127.0.0.11"
    assert node_address(node="node2", index=1, count=2, nodelist="node[1-2]", net=net, head="127.0.0.11:40000") \
        == "127.0.0.12"
    for mode in ("hostname", "route"):
        assert node_address(node="node2", index=1, count=2, nodelist="node[1-2]", net=net, address_from=mode,
                            head="127.0.0.11:1") == "127.0.0.12"
    # one node of the job elsewhere: not one machine any more
    mixed = fake_net({**local, "node2": "10.1.0.2"}, {"10.1.0.2": "10.1.0.1"})
    with pytest.raises(ClusterError, match="node node2: the Ray head"):
        node_address(node="node2", index=1, count=2, nodelist="x", net=mixed, head="127.0.0.11:1")


def test_one_node_job_keeps_todays_behaviour() -> None:
    net = fake_net({"solo": "127.0.1.1"})
    assert node_address(node="solo", index=0, count=1, net=net) == "127.0.1.1"  # nobody else dials it
    assert node_address(node="nowhere", index=0, count=1, net=net) == "127.0.0.1"


def test_interface_option() -> None:
    net = fake_net(CLUSTER, ROUTES, interfaces={"ib0": "192.168.50.2", "lo": "127.0.0.1"})
    for index in (0, 1):  # no head needed, no route taken
        assert addr("gpu2", index, net=net, interface="ib0") == "192.168.50.2"
        assert addr("gpu2", index, net=net, interface="ib0", address_from="interface") == "192.168.50.2"
    with pytest.raises(ClusterError, match=r"node gpu2: no network interface ib1 \(cluster.interface\); this node "
                                           r"has: .*lo"):
        addr("gpu2", 1, net=net, interface="ib1")
    with pytest.raises(ClusterError, match=r"node gpu2: interface lo gives the loopback address 127.0.0.1"):
        addr("gpu2", 1, net=net, interface="lo")


def test_address_options_that_contradict_or_are_not_names() -> None:
    assert address_mode("route", None) == "route" and address_mode("route", "eth0") == "interface"
    assert address_mode("hostname", None) == "hostname"
    with pytest.raises(ConfigError, match="cluster.address_from=interface needs cluster.interface=NAME"):
        address_mode("interface", None)
    with pytest.raises(ConfigError, match="ask for two different addresses"):
        address_mode("hostname", "ib0")
    for bad in ("", "eth0; rm -rf /", "a/b", "x" * 16, ".."):
        with pytest.raises(ConfigError, match="is not a network interface name"):
            address_mode("route", bad)
    with pytest.raises(ConfigError, match="is not one of route, interface, hostname"):
        address_mode("dns", None)


def test_config_keys_and_their_range_rule() -> None:
    c = to_object(compose_config(["cluster=slurm", "cluster.interface=ib0"])).cluster
    assert (c.address_from, c.interface) == ("route", "ib0")
    with pytest.raises(ConfigError, match=r"cluster.address_from=dns is not a valid choice: must be one of route, "
                                          r"interface, hostname"):
        compose_config(["cluster=slurm", "cluster.address_from=dns"])


def test_node_env_reads_slurm_and_chooses_its_address() -> None:
    env = {"SLURM_JOB_ID": "9", "SLURM_NODEID": "1", "SLURM_NNODES": "3", "SLURMD_NODENAME": "gpu2",
           "SLURM_JOB_NODELIST": "gpu[1-3]"}
    me = NodeEnv.from_environ(env, ClusterConfig(kind="slurm"))
    assert (me.name, me.index, me.count, me.nodelist, me.provisional) == ("gpu2", 1, 3, "gpu[1-3]", True)
    net = fake_net(CLUSTER, ROUTES)
    assert me.addressed(net=net) is me  # route: needs the head first
    joined = me.addressed("10.1.0.1:6379", net=net)
    assert (joined.ip, joined.provisional) == ("10.1.0.2", False)
    by_iface = NodeEnv.from_environ(env, ClusterConfig(kind="slurm", interface="ib0"))
    assert by_iface.addressed(net=fake_net(CLUSTER, interfaces={"ib0": "192.168.50.2"})).ip == "192.168.50.2"


# --- the real lookups on this machine --------------------------------------------------------------------

def _ipv4_interfaces() -> list[tuple[str, ipaddress.IPv4Interface]]:
    try:
        r = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
        data = json.loads(r.stdout or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    return [(d["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
            for d in data for a in d.get("addr_info", ()) if a.get("family") == "inet"]


def test_real_route_toward_a_neighbour_leaves_from_that_interface() -> None:
    """A UDP connect() toward another address of a non-loopback interface's subnet gives that interface's own
    address (no packet is sent)."""
    found = [(n, i) for n, i in _ipv4_interfaces() if not i.ip.is_loopback and i.network.num_addresses >= 4]
    if not found:
        pytest.skip("no non-loopback IPv4 interface on this machine")
    for _, iface in found:
        neighbour = next(h for h in iface.network.hosts() if h != iface.ip)
        assert route_source(str(neighbour)) == str(iface.ip)
    assert route_source("127.0.0.12").startswith("127.")  # toward a loopback alias: loopback (refused above)


def test_real_interface_address() -> None:
    for name, iface in _ipv4_interfaces():
        assert interface_ipv4(name) in {str(i.ip) for n, i in _ipv4_interfaces() if n == name}
    with pytest.raises(OSError):
        interface_ipv4("nosuchif0")
    real = node_address(node=socket.gethostname(), index=0, count=1, interface="lo")
    assert real == "127.0.0.1"  # one node: loopback is fine


# --- two "machines": network namespaces joined by a veth pair ----------------------------------------------
# Each namespace's /etc/hosts (`ip netns exec` mounts /etc/netns/<ns>/hosts over it) maps its own name to
# 127.0.1.1 as Debian does, and the other's to its veth address. `route` must still pick the veth address,
# `hostname` must refuse the loopback one, and a Ray head and worker started on the chosen addresses with
# a token must form one cluster across the two namespaces.

NODE_CODE = r"""
import json, os, sys
from pathlib import Path
from sdg.config.schema import ClusterConfig
from sdg.errors import ClusterError
from sdg.launch.node import Net, NodeEnv

name, index, head, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
net = Net(hostnames=lambda nodelist: nodelist.split(","))  # the real resolver, routes and interfaces
env = NodeEnv.from_environ({"SLURM_JOB_ID": "1", "SLURMD_NODENAME": name, "SLURM_NODEID": str(index),
                            "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": os.environ["NODES"]},
                           ClusterConfig(kind="slurm", address_from=mode, interface=os.environ.get("IFACE") or None))
out = {"resolved": env.ip}
try:
    out["address"] = env.addressed(head, net).ip
except ClusterError as exc:
    out["error"] = str(exc)
print("RESULT " + json.dumps(out), flush=True)
if len(sys.argv) > 5:  # start a Ray node there, run until stdin closes
    from sdg.launch.raynode import start_ray_node
    node = start_ray_node(ip=out["address"], node=name, temp_dir=Path(sys.argv[5]), log_path=Path(sys.argv[6]),
                          auth_token=os.environ["SDG_TEST_RAY_TOKEN"], head_address=head)
    try:
        print("RAY " + (node.address if head is None else "joined"), flush=True)
        sys.stdin.read()
    finally:
        node.stop()
"""

NODES_CLIENT = r"""
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 90
while True:
    alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.3)
print("ALIVE", ",".join(alive))
ray.shutdown()
"""


def _node(machines: dict, i: int, head: str = "", mode: str = "route", iface: str = "") -> dict:
    cmd = _in_ns(machines["ns"][i], "-c", NODE_CODE, machines["names"][i], str(i), head, mode)
    env = {**os.environ, "NODES": ",".join(machines["names"]), "IFACE": iface}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_names_resolving_to_loopback_across_two_namespaces(two_machines: dict, tmp_path) -> None:
    m = two_machines
    a, b = m["ips"]
    head = _node(m, 0)
    assert head["resolved"] == "127.0.1.1"  # what the name alone gives (the old rule's address)
    assert head == {"resolved": "127.0.1.1", "address": a}  # route: the veth toward sdgb
    assert _node(m, 1, head=f"{a}:6379") == {"resolved": "127.0.1.1", "address": b}
    assert _node(m, 1, iface=m["veth"][1], mode="interface")["address"] == b
    refused = _node(m, 1, mode="hostname")
    assert "node sdgb: its name sdgb (cluster.address_from=hostname) gives the loopback address 127.0.1.1" in \
        refused["error"]


@pytest.mark.slow
def test_a_ray_cluster_forms_across_the_namespaces_on_the_routed_addresses(two_machines: dict, tmp_path) -> None:
    pytest.importorskip("ray")
    m = two_machines
    a, b = m["ips"]
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update({"NODES": ",".join(m["names"]), "SDG_TEST_RAY_TOKEN": token, "HOME": str(tmp_path)})
    procs: list[subprocess.Popen] = []

    def start(i: int, head: str) -> str:
        temp = f"/tmp/sdgnt-{os.getpid()}-{secrets.token_hex(2)}-{i}"
        p = subprocess.Popen(_in_ns(m["ns"][i], "-c", NODE_CODE, m["names"][i], str(i), head, "route", temp,
                                    str(tmp_path / f"ray-{i}.log")),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        for line in p.stdout:  # type: ignore[union-attr]
            if line.startswith("RAY "):
                return line.split()[1]
        raise AssertionError(f"node {i} did not start Ray: {p.stderr.read()[-3000:]}")  # type: ignore[union-attr]

    try:
        head = start(0, "")
        assert head.startswith(f"{a}:")
        start(1, head)
        from sdg.launch.raynode import with_ray_auth

        r = subprocess.run(_in_ns(m["ns"][0], "-c", NODES_CLIENT, head), capture_output=True, text=True,
                           timeout=150, env=with_ray_auth(env, token))
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"ALIVE {','.join(sorted([a, b]))}" in r.stdout
    finally:
        for p in procs:  # our helpers stop their Ray nodes when stdin closes
            if p.stdin:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
