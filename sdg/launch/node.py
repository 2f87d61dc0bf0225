"""What every node of a Slurm generate job runs (one task per node): `node_main(cfg)`.

1. Start this node's teacher server(s) on its own GPUs (`serving`), wait until they answer.
2. Node 0 starts a Ray head on its node address and writes the rendezvous file (address + token) into
   the job folder; every other node polls for that file and joins as a Ray worker node.
3. Every node writes its endpoints (node-<name>.json). Node 0 is the driver (`driver.drive`): it plans
   once, hands work items to one actor per node, writes the outputs, then writes done.json.
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

from sdg.config.schema import SdgConfig
from sdg.errors import Interrupted, RendezvousError, SdgError
from sdg.launch.rendezvous import AttemptFiles, NodeRecord, read_json, wait_json, write_json

JOIN_MARGIN_S = 300.0  # nodes wait for each other: the teacher's start-up deadline plus this


def join_timeout(cfg: SdgConfig) -> float:
    """How long a node waits for the others (their teachers may start slower than its own)."""
    return cfg.teacher.startup_timeout_s + JOIN_MARGIN_S


@dataclass(frozen=True)
class NodeEnv:
    """Who this task is in its Slurm job (outside Slurm: a one-node job on this machine)."""

    job_id: str
    restart: int
    index: int  # SLURM_NODEID: 0 is the driver
    count: int
    name: str
    ip: str

    @classmethod
    def from_environ(cls, env: dict[str, str] | None = None) -> "NodeEnv":
        env = dict(os.environ if env is None else env)
        name = env.get("SLURMD_NODENAME") or socket.gethostname()
        try:
            ip = socket.gethostbyname(name)
        except OSError:
            ip = "127.0.0.1"
        return cls(job_id=env.get("SLURM_JOB_ID", f"local-{os.getpid()}"), restart=int(env.get("SLURM_RESTART_COUNT", "0")),
                   index=int(env.get("SLURM_NODEID", "0")), count=int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1"))),
                   name=name, ip=ip)


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
    from sdg.teacher.gpus import node_plan, visible_gpus
    from sdg.teacher.serving import serving

    env = NodeEnv.from_environ()
    log = _logger(env)
    files = AttemptFiles.of(Path(folder) if folder else job_folder(cfg, env), env.restart)
    files.root.mkdir(parents=True, exist_ok=True)
    gpus, source = visible_gpus(os.environ)
    nplan = node_plan(cfg.teacher, gpus, source)
    log(f"job {env.job_id} attempt {env.restart}, node address {env.ip}; teacher: {nplan.describe()}")
    ray_node = None
    with unwind_on((signal.SIGTERM, signal.SIGINT), enabled=unwind_on_sigterm):
        try:
            t0 = time.monotonic()
            with serving(node_teacher(cfg.teacher, env.ip), plan=nplan, log_dir=files.logs / env.name) as endpoints:
                log(f"teacher ready in {time.monotonic() - t0:.1f} s: {len(endpoints)} endpoint(s)")
                record = NodeRecord(env.name, env.index, env.ip, list(gpus), source,
                                    [list(r.gpus) for r in nplan.replicas], nplan.stand_in,
                                    nplan.tensor_parallel_size, list(endpoints))
                clean_stale_temp_dirs(env.job_id)
                temp = temp_dir_for(env.job_id, env.restart, env.name)
                ray_log = files.logs / env.name / "ray.log"
                if env.index == 0:
                    token = secrets.token_hex(16)
                    ray_node = start_ray_node(ip=env.ip, node=env.name, temp_dir=temp, log_path=ray_log,
                                              object_store_mb=cfg.cluster.ray_object_store_mb)
                    write_json(files.rendezvous, {"address": ray_node.address, "token": token, "driver": env.name,
                                                  "nodes": env.count})
                    log(f"ray head at {ray_node.address}; rendezvous {files.rendezvous}")
                    write_json(files.node(env.name), replace(record, token=token).to_json())
                    return _drive(cfg, env, files, token, ray_node, log)
                rdv = wait_json(files.rendezvous, timeout_s=join_timeout(cfg), what="node 0's Ray head")
                if "error" in rdv:
                    raise RendezvousError(f"node 0 failed before the nodes joined: {rdv['error']}")
                ray_node = start_ray_node(ip=env.ip, node=env.name, temp_dir=temp, log_path=ray_log,
                                          head_address=rdv["address"], object_store_mb=cfg.cluster.ray_object_store_mb)
                write_json(files.node(env.name), replace(record, token=rdv["token"]).to_json())
                log(f"joined ray head {rdv['address']}; working until node 0 is done")
                ray_down = ray_node

                def head_alive() -> None:
                    if not ray_down.alive():
                        raise RendezvousError(f"this node's Ray worker exited (the head is gone?); log {ray_log}")

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
    import ray

    from sdg.launch.ray_executor import RayExecutor
    from sdg.launch.raynode import wait_for_nodes
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
        nodes = {r.node: r.endpoints for r in recs}
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        ray.init(address=ray_node.address, _node_ip_address=env.ip, logging_level="WARNING", log_to_driver=False,
                 configure_logging=False)
        for s, h in handlers.items():  # Ray's C++ handler aborts on SIGTERM: keep submitit's (or our unwind)
            if h is not None:
                signal.signal(s, h)
        try:
            wait_for_nodes(list(nodes), timeout_s=120.0, alive_check=head_alive)
            log(f"{len(nodes)} nodes ready: {', '.join(sorted(nodes))}")
            executor = RayExecutor(nodes, log=log, alive_check=head_alive,
                                   details={r.node: r.describe() for r in recs})
            summary = generate(cfg, executor=executor, log=log).summary()
        finally:
            with contextlib.suppress(Exception):
                ray.shutdown()
        status = {"token": token, "status": "complete" if summary.complete else "incomplete",
                  "run_dir": summary.run_dir}
        return summary
    except BaseException as exc:
        status["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_json(files.done, status)
