"""What every node of a Slurm generate job runs (one task per node): `node_main(cfg)`.

1. Start this node's teacher server(s) on its own GPUs (`serving`), wait until they answer.
2. Node 0 starts a Ray head on its node address and writes the rendezvous file (address + token) into
   the job folder; every other node polls for that file and joins as a Ray worker node.
3. Every node writes its endpoints (node-<name>.json; the judge's too when `judge=` names a model: each
   node serves it beside the teacher, a vLLM judge on GPUs split off the node's). Node 0 is the driver (`driver.drive`): it plans
   once, hands units to one actor per node, writes the outputs, then writes done.json.
4. The other nodes wait for done.json (or their Ray node's death), then stop Ray and their servers.

Stopping: under `sdg jobs node` SIGTERM (scancel, requeue) unwinds (sdg.signals): servers and Ray stop,
journals stay. Under submitit, USR2 (preemption, time limit) checkpoints, requeues and exits node 0,
which unwinds it and tells the other nodes (done.json); Slurm then ends the rest.
Entry points: submitit calls `GenerateJob()(cfg)` (sdg.launch.submit); `srun sdg jobs node [key=value ...]`
is the same for hand-written sbatch scripts (slurm/generate.sbatch).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from sdg.config.schema import ClusterConfig, SdgConfig
from sdg.errors import ClusterError, ConfigError, Interrupted, RendezvousError, SdgError
from sdg.launch.rendezvous import AttemptFiles, NodeRecord, read_json, wait_json, write_json

JOIN_MARGIN_S = 300.0  # nodes wait for each other: the teacher's start-up deadline plus this


def join_timeout(cfg: SdgConfig) -> float:
    """How long a node waits for the others (their teachers may start slower than its own)."""
    return cfg.teacher.startup_timeout_s + JOIN_MARGIN_S


# --- this node's address ------------------------------------------------------------------------------
# Ray binds each node's address and the other nodes dial it, so it must be one they can reach. Names often
# resolve to loopback on the node itself (Debian's /etc/hosts maps the hostname to 127.0.1.1), which would
# make a Ray node nobody else can reach; that is refused on a multi-node job, except on a test cluster whose
# nodes are all loopback aliases of one machine (scripts/slurm_up.sh: node1..node3 = 127.0.0.11..13).

ADDRESS_MODES = ("route", "interface", "hostname")
_IFNAMSIZ = 16


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.")


def resolve_ipv4(name: str) -> str | None:
    """What `name` resolves to (IPv4), or None."""
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None


def route_source(target: str) -> str | None:
    """The address of the interface whose route reaches `target`: a UDP socket's connect() picks the route
    and the source address (no packet is sent). None when there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))  # the discard port; connect() on UDP only chooses the route
            return str(s.getsockname()[0])
        except OSError:
            return None


def interface_ipv4(name: str) -> str:
    """The (primary) IPv4 address of interface `name` (SIOCGIFADDR); OSError when it has none or no
    such interface exists (errno ENODEV)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", name.encode()[:_IFNAMSIZ - 1])
        res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR: struct ifreq, sockaddr_in at offset 16
        return socket.inet_ntoa(res[20:24])


def job_hostnames(nodelist: str) -> list[str]:
    """The job's node names, in Slurm's order (`scontrol show hostnames NODELIST`); [] when unknown."""
    import subprocess

    if not nodelist:
        return []
    try:
        r = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return r.stdout.split() if r.returncode == 0 else []


@dataclass(frozen=True)
class Net:
    """How a node looks addresses up; tests hand in fakes."""

    resolve: Callable[[str], str | None] = resolve_ipv4
    route_source: Callable[[str], str | None] = route_source
    interface_ipv4: Callable[[str], str] = interface_ipv4
    hostnames: Callable[[str], list[str]] = job_hostnames


def address_mode(address_from: str, interface: str | None) -> str:
    """The address rule cluster.address_from / cluster.interface ask for (ConfigError when they conflict):
    a named interface implies `interface`."""
    if address_from not in ADDRESS_MODES:
        raise ConfigError(f"cluster.address_from={address_from} is not one of {', '.join(ADDRESS_MODES)}")
    if interface is not None:
        if not interface or len(interface) >= _IFNAMSIZ or any(c in interface for c in "/ \t\n:") \
                or interface in (".", ".."):
            raise ConfigError(f"cluster.interface={interface!r} is not a network interface name (like ib0, eth0)")
        if address_from == "hostname":
            raise ConfigError(f"cluster.address_from=hostname and cluster.interface={interface} ask for two different "
                              "addresses: drop one (a named interface is used with address_from=route or interface)")
        return "interface"
    if address_from == "interface":
        raise ConfigError("cluster.address_from=interface needs cluster.interface=NAME (ib0, eth0, ...: "
                          "`ip -br addr` on a compute node lists them)")
    return address_from


def node_address(*, node: str, index: int, count: int, nodelist: str = "", address_from: str = "route",
                 interface: str | None = None, head: str | None = None, net: Net = Net()) -> str | None:
    """The address node `node` (SLURM_NODEID `index` of `count`) uses for Ray, by cluster.address_from /
    cluster.interface. None: a non-head node in `route` mode before it knows the head's address (`head`, the
    rendezvous file's host:port); call again with it. ClusterError (naming the node) when no usable address
    exists; a one-node job falls back to 127.0.0.1 as before."""
    mode = address_mode(address_from, interface)
    where = f"node {node}"

    def local_cluster() -> bool:  # every node of the job a loopback alias of this machine (the test cluster)
        hosts = net.hostnames(nodelist) or ([node] if count == 1 else [])
        return bool(hosts) and all(is_loopback(net.resolve(h) or "") for h in hosts)

    def usable(ip: str, how: str) -> str:
        if count > 1 and is_loopback(ip) and not local_cluster():
            raise ClusterError(f"{where}: {how} gives the loopback address {ip}, which the other nodes of this "
                               f"{count}-node job cannot reach; set cluster.interface=NAME (the interface the nodes "
                               "share, e.g. ib0 or eth0), or fix the name's entry in /etc/hosts")
        return ip

    if mode == "interface":
        assert interface is not None
        try:
            ip = net.interface_ipv4(interface)
        except OSError as exc:
            import errno

            if exc.errno == errno.ENODEV:
                have = ", ".join(n for _, n in socket.if_nameindex())
                raise ClusterError(f"{where}: no network interface {interface} (cluster.interface); this node has: "
                                   f"{have}") from None
            raise ClusterError(f"{where}: interface {interface} (cluster.interface) has no IPv4 address "
                               f"({exc.strerror or exc})") from None
        return usable(ip, f"interface {interface}")
    own = net.resolve(node)
    if count <= 1:
        return own or "127.0.0.1"  # one node: nobody else dials it
    if mode == "hostname":
        if own is None:
            raise ClusterError(f"{where}: its name does not resolve (cluster.address_from=hostname); set "
                               "cluster.interface=NAME or cluster.address_from=route")
        return usable(own, f"its name {node} (cluster.address_from=hostname)")
    # route: the interface whose route reaches the others
    if index == 0:
        others = [h for h in net.hostnames(nodelist) if h != node]
        if not others:
            raise ClusterError(f"{where}: cannot list the job's other nodes (`scontrol show hostnames "
                               f"{nodelist or '$SLURM_JOB_NODELIST'}`) to route toward them; set "
                               "cluster.interface=NAME or cluster.address_from=hostname")
        target = net.resolve(others[0])
        if target is None:
            raise ClusterError(f"{where}: node {others[0]} of this job does not resolve, so no route toward it can be "
                               "chosen; set cluster.interface=NAME")
        toward = f"node {others[0]} ({target})"
    else:
        if head is None:
            return None
        target = head.rsplit(":", 1)[0]
        toward = f"the Ray head ({target})"
    if is_loopback(target):
        if own is not None and is_loopback(own) and local_cluster():
            return own  # the test cluster: each node its own loopback alias
        raise ClusterError(f"{where}: {toward} is a loopback address, but the nodes of this job are not all on this "
                           "machine; fix the node names' entries in /etc/hosts (or DNS), or set cluster.interface=NAME "
                           "on every node")
    src = net.route_source(target)
    if src is None:
        raise ClusterError(f"{where}: no route toward {toward}; set cluster.interface=NAME (the interface the nodes "
                           "share)")
    return usable(src, f"the route toward {toward}")


@dataclass(frozen=True)
class NodeEnv:
    """Who this task is in its Slurm job (outside Slurm: a one-node job on this machine).

    `ip` is the node's address. `from_environ` guesses it from the node's name (the address a one-node job
    uses); `addressed()` chooses it by cluster.address_from / cluster.interface, and `provisional` says
    whether that is still to come (a non-head node in `route` mode needs the head's address first)."""

    job_id: str
    restart: int
    index: int  # SLURM_NODEID: 0 is the driver
    count: int
    name: str
    ip: str
    nodelist: str = ""  # SLURM_JOB_NODELIST
    address_from: str = "route"
    interface: str | None = None
    provisional: bool = True

    @classmethod
    def from_environ(cls, env: dict[str, str] | None = None, cluster: ClusterConfig | None = None) -> "NodeEnv":
        env = dict(os.environ if env is None else env)
        cluster = cluster or ClusterConfig()
        name = env.get("SLURMD_NODENAME") or socket.gethostname()
        return cls(job_id=env.get("SLURM_JOB_ID", f"local-{os.getpid()}"), restart=int(env.get("SLURM_RESTART_COUNT", "0")),
                   index=int(env.get("SLURM_NODEID", "0")), count=int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1"))),
                   name=name, ip=resolve_ipv4(name) or "127.0.0.1", nodelist=env.get("SLURM_JOB_NODELIST", ""),
                   address_from=cluster.address_from, interface=cluster.interface)

    def addressed(self, head: str | None = None, net: Net = Net()) -> "NodeEnv":
        """This node with its address chosen by the rule (ClusterError when none is usable); unchanged
        (provisional) while the rule still needs `head`, the Ray head's host:port."""
        ip = node_address(node=self.name, index=self.index, count=self.count, nodelist=self.nodelist,
                          address_from=self.address_from, interface=self.interface, head=head, net=net)
        return self if ip is None else replace(self, ip=ip, provisional=False)


def job_folder(cfg: SdgConfig, env: NodeEnv) -> Path:
    """`<cluster.job_dir>/<job id>`: submitit's folder for this job, shared by all its nodes."""
    return Path(cfg.cluster.job_dir).expanduser() / env.job_id


def _logger(env: NodeEnv) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} {env.name} {env.index}/{env.count}] {msg}", flush=True)
    return log


def node_main(cfg: SdgConfig, folder: str | Path | None = None, *, unwind_on_sigterm: bool = True) -> Any:
    """Run this node's part of a generate job; node 0 returns the run's `RunSummary`, the others None.

    `folder`: the job folder shared by all nodes (default `<cluster.job_dir>/<job id>`).
    `unwind_on_sigterm`: SIGTERM/SIGINT raise `Interrupted` (servers and Ray stop, journals stay). Off under
    submitit: there SIGTERM is deliberately ignored (a preemption sends SIGTERM, then USR2, whose handler
    checkpoints, requeues and exits, which unwinds us), and Slurm's SIGKILL after KillWait ends whatever a
    plain scancel leaves (servers also die with their parent: PDEATHSIG).
    """
    from sdg.launch.cluster_plan import node_teacher
    from sdg.launch.raynode import clean_stale_temp_dirs, start_ray_node, temp_dir_for
    from sdg.signals import unwind_on
    from sdg.teacher.gpus import node_plan, split_judge_gpus, visible_gpus
    from sdg.teacher.serving import serving

    env = NodeEnv.from_environ(cluster=cfg.cluster)
    log = _logger(env)
    files = AttemptFiles.of(Path(folder) if folder else job_folder(cfg, env), env.restart)
    files.root.mkdir(parents=True, exist_ok=True)
    gpus, source = visible_gpus(os.environ)
    judge_gpus, teacher_gpus = split_judge_gpus(cfg.judge, gpus)
    nplan = node_plan(cfg.teacher, teacher_gpus, source)
    jplan = node_plan(cfg.judge, judge_gpus, source) if cfg.judge is not None else None
    ray_node = None
    with unwind_on((signal.SIGTERM, signal.SIGINT), enabled=unwind_on_sigterm):
        try:
            env = env.addressed()  # provisional on a non-head node that routes toward the head: chosen on joining
            where = "chosen toward the Ray head once it is up" if env.provisional else env.ip
            log(f"job {env.job_id} attempt {env.restart}, node address {where}; teacher: {nplan.describe()}"
                + (f"; judge: {jplan.describe()}" if jplan is not None else ""))
            t0 = time.monotonic()
            judge_serving = (serving(node_teacher(cfg.judge, env.ip), plan=jplan, log_dir=files.logs / env.name / "judge")
                             if cfg.judge is not None else contextlib.nullcontext([]))
            with serving(node_teacher(cfg.teacher, env.ip), plan=nplan, log_dir=files.logs / env.name) as endpoints, \
                    judge_serving as judge_endpoints:
                log(f"teacher ready in {time.monotonic() - t0:.1f} s: {len(endpoints)} endpoint(s)"
                    + (f", judge {len(judge_endpoints)}" if cfg.judge is not None else ""))
                record = NodeRecord(env.name, env.index, env.ip, list(gpus), source,
                                    [list(r.gpus) for r in nplan.replicas], nplan.stand_in,
                                    nplan.tensor_parallel_size, list(endpoints),
                                    judge_endpoints=list(judge_endpoints))
                clean_stale_temp_dirs(env.job_id)
                temp = temp_dir_for(env.job_id, env.restart, env.name)
                ray_log = files.logs / env.name / "ray.log"
                if env.index == 0:
                    # token: this attempt's id (node records, done.json); ray_token: Ray's authentication, in the
                    # 0600 rendezvous file only
                    token, ray_token = secrets.token_hex(16), secrets.token_hex(32)
                    ray_node = start_ray_node(ip=env.ip, node=env.name, temp_dir=temp, log_path=ray_log,
                                              auth_token=ray_token, object_store_mb=cfg.cluster.ray_object_store_mb)
                    write_json(files.rendezvous, {"address": ray_node.address, "token": token, "ray_token": ray_token,
                                                  "driver": env.name, "nodes": env.count})
                    log(f"ray head at {ray_node.address}; rendezvous {files.rendezvous}")
                    write_json(files.node(env.name), replace(record, token=token).to_json())
                    return _drive(cfg, env, files, token, ray_node, log)
                rdv = wait_json(files.rendezvous, timeout_s=join_timeout(cfg), what="node 0's Ray head")
                if "error" in rdv:
                    raise RendezvousError(f"node 0 failed before the nodes joined: {rdv['error']}")
                if env.provisional:  # route: the interface that reaches the head
                    env = env.addressed(rdv["address"])
                ray_node = start_ray_node(ip=env.ip, node=env.name, temp_dir=temp, log_path=ray_log,
                                          auth_token=rdv.get("ray_token", ""), head_address=rdv["address"],
                                          object_store_mb=cfg.cluster.ray_object_store_mb)
                write_json(files.node(env.name), replace(record, ip=env.ip, token=rdv["token"]).to_json())
                log(f"joined ray head {rdv['address']} from {env.ip}; working until node 0 is done")
                ray_down = ray_node
                teacher_gone: list[str] = []

                def head_alive() -> None:
                    if not ray_down.alive():
                        raise RendezvousError(f"this node's Ray worker exited (the head is gone?); log {ray_log}")
                    # This node's teacher (or judge) dying loses this node only: its worker's requests fail, the
                    # driver drops the node and gives its units to the others. Here: say so once, keep waiting
                    # for the driver's end (leaving now would stop this node's Ray, which the run does not need).
                    if not teacher_gone:
                        for served in (endpoints, judge_endpoints):
                            try:
                                getattr(served, "check_alive", lambda: None)()
                            except SdgError as exc:
                                teacher_gone.append(str(exc))
                                log(f"this node's teacher is gone ({str(exc).splitlines()[0]}); the driver drops "
                                    "this node and the run goes on without it")
                                break

                done = wait_json(files.done, timeout_s=float("inf"), what="the driver's end",
                                 alive_check=head_alive, accept=lambda d: d.get("token") == rdv["token"])
                log(f"driver finished ({done.get('status')}); stopping")
                return None
        except Interrupted as exc:
            log(f"stopping on signal {exc.signum}: journals keep what is done; resubmit (or let the requeue run) "
                "to resume")
            raise
        except BaseException as exc:
            # Tell the others now rather than let them wait out their deadlines.
            why = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                if env.index == 0 and read_json(files.rendezvous) is None:
                    write_json(files.rendezvous, {"error": why})
                elif env.index != 0 and read_json(files.done) is None:
                    write_json(files.node(env.name), {"node": env.name, "error": why})
            raise
        finally:
            if ray_node is not None:
                ray_node.stop()


def _drive(cfg: SdgConfig, env: NodeEnv, files: AttemptFiles, token: str, ray_node: Any,
           log: Callable[[str], None]) -> Any:
    """Node 0: wait for every node, connect to Ray, run the generate with the Ray executor, tell the nodes
    it is over (done.json)."""
    from sdg.launch.ray_executor import RayExecutor
    from sdg.launch.raynode import ray_driver, wait_for_nodes
    from sdg.run import generate

    def head_alive() -> None:
        if not ray_node.alive():
            raise SdgError(f"the Ray head exited; log {ray_node.log_path}:\n{ray_node.log_tail()}")

    status: dict[str, Any] = {"token": token, "status": "failed"}
    try:
        # Every node's record (its endpoints) for this attempt; node names come from the files.
        deadline = time.monotonic() + join_timeout(cfg)
        while True:
            raw = [r for r in (read_json(p) for p in sorted(files.root.glob("node-*.json"))) if r]
            failed = [r for r in raw if "error" in r]
            if failed:
                raise RendezvousError("; ".join(f"{r['node']} failed: {r['error']}" for r in failed))
            recs = [NodeRecord.from_json(r) for r in raw if r.get("token") == token]
            if len(recs) >= env.count:
                break
            head_alive()
            if time.monotonic() > deadline:
                raise RendezvousError(f"only {len(recs)} of {env.count} nodes reported ready within "
                                      f"{join_timeout(cfg):.0f} s; see the node logs in {files.root.parent.parent}")
            time.sleep(0.2)
        nodes = {r.node: files.node(r.node) for r in recs}  # each worker reads its endpoints there
        with ray_driver(ray_node, env.ip):  # ray.init with the cluster's token ... ray.shutdown
            wait_for_nodes(list(nodes), timeout_s=120.0, alive_check=head_alive)
            log(f"{len(nodes)} nodes ready: {', '.join(sorted(nodes))}")
            executor = RayExecutor(nodes, log=log, alive_check=head_alive,
                                   details={r.node: r.describe() for r in recs})
            summary = generate(cfg, executor=executor, log=log).summary()
        status = {"token": token, "status": "complete" if summary.complete else "incomplete",
                  "run_dir": summary.run_dir}
        return summary
    except BaseException as exc:
        status["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_json(files.done, status)
