#!/usr/bin/env python3
"""Scaling: generate throughput over 1, 2, 3 nodes of the local Slurm cluster, as a ratio to linear.

A program that prints figures, not a test. Everything sdg does is real: `submit` (submitit -> sbatch),
one task per node, a Ray head and joining nodes through the rendezvous file, the driver handing out
work items, one NodeWorker actor per node with the real pipelines, client and per-node journals, the
outputs written at the end. Only the teacher is replaced, and named as such: `FixedLatencyStandIn`
(bench_common.py), one per node on that node's own address (127.0.0.11..13), is a measuring instrument
that models a GPU-bound server this machine cannot run: `--slots` requests in service at once, each
answered after exactly `--latency-s` (queueing beyond that), so a node's ceiling is slots / latency
requests/s no matter how hard it is pushed. It needs the API key it is given (the jobs send it), as a
cluster server would. Every node points at its own stand-in through `teacher.endpoint_url=http://{node}:PORT/v1`.

Weak scaling: the scale factor grows with the node count (`--units-per-node`), so every run keeps each
node busy for about the same time. The figure is the engine phase's requests/s (manifest timings:
from the first work item to the last), compared with N x the 1-node figure; the target is >= 0.9.
Job start-up (sbatch, Ray, readiness) is printed beside it, not counted.

    .venv/bin/python benchmarks/scaling.py                   # 1, 2, 3 nodes; about 3 minutes
    .venv/bin/python benchmarks/scaling.py --nodes 1 2       # fewer points

Needs the local cluster (`bash scripts/slurm_up.sh`) and `pip install -e '.[slurm]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_common import FixedLatencyStandIn, fmt_load, log_err, wait_for_quiet  # noqa: E402

TARGET = 0.9
NODE_ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


# --------------------------------------------------------------------------------------------------------
# The stand-ins' port (one stand-in per node address, all on one port)
# --------------------------------------------------------------------------------------------------------

def free_port_on_all(hosts: tuple[str, ...]) -> int:
    """A port free on every node address (the stand-ins share one port, one per address)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for h in hosts[1:]:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every node address")


# --------------------------------------------------------------------------------------------------------
# One measured run
# --------------------------------------------------------------------------------------------------------

def run_once(tmp: Path, taxonomy: Path, nodes: int, port: int, api_key: str, args: argparse.Namespace) -> dict[str, Any]:
    from sdg.config.compose import compose_config, to_object
    from sdg.launch.submit import result, submit

    rows = 20  # the example taxonomy: 15 skill seeds + 1 chunk x 5 knowledge seeds
    scale = max(1, round(args.units_per_node * nodes / rows)) * args.samples_per_unit
    out = tmp / f"out-{nodes}"
    cfg = to_object(compose_config([
        "cluster=slurm", f"cluster.nodes={nodes}", "cluster.gpus_per_node=1", "cluster.cpus_per_task=1",
        "cluster.mem_gb=1", "cluster.time_min=30", f"cluster.job_dir={tmp / 'jobs'}",
        "quality.enabled=false",  # the stand-ins' replies differ only in a number: near duplicates, all of them
        "teacher=endpoint", f"teacher.endpoint_url='http://{{node}}:{port}/v1'", f"teacher.api_key={api_key}",
        "teacher.served_model_name=teacher", f"teacher.max_tokens={256}",
        f"generate.max_concurrency={2 * args.slots}", f"generate.output_dir={out}", "generate.progress_interval_s=5",
        f"taxonomy.path={taxonomy}", "taxonomy.base=empty", "taxonomy.documents.chunk_tokens=4000",
        f"pipeline.sdg_scale_factor={scale}", f"pipeline.samples_per_unit={args.samples_per_unit}",
    ]))
    t0 = time.monotonic()
    job = submit(cfg, log=lambda m: None)
    summary = result(job)  # node 0's sdg.run.RunSummary; the Ray executor's description holds the per-node shares
    wall = time.monotonic() - t0
    manifest = json.loads((Path(summary.run_dir) / "manifest.json").read_text())
    engine_s = manifest["timings"]["engine_s"]
    requests = manifest["counts"]["requests"]
    return {"nodes": nodes, "units": summary.units, "requests": requests, "engine_s": engine_s,
            "req_s": requests / engine_s, "wall_s": wall, "per_node": summary.executor.get("per_node", {}),
            "complete": summary.complete, "job_id": job.job_id}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--latency-s", type=float, default=0.5, help="stand-in: seconds per request (default 0.5)")
    p.add_argument("--slots", type=int, default=12, help="stand-in: requests in service at once (default 12)")
    p.add_argument("--units-per-node", type=int, default=480, help="work per node (weak scaling; default 480)")
    p.add_argument("--samples-per-unit", type=int, default=5)
    p.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load below this (0: no gate)")
    args = p.parse_args(argv)
    if max(args.nodes) > len(NODE_ADDRESSES):
        p.error(f"the local cluster has {len(NODE_ADDRESSES)} nodes")

    from sdg.taxonomy.init import init_taxonomy

    gate = wait_for_quiet(args.max_load)
    ceiling = args.slots / args.latency_s
    print(f"stand-in teachers (FixedLatencyStandIn, modelling one GPU-bound server per node): {args.slots} slots x "
          f"{args.latency_s} s -> ceiling {ceiling:.1f} requests/s per node; load {fmt_load(gate['load'])}")
    api_key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="sdg-scaling-") as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # the jobs inherit it (document cache)
        taxonomy = init_taxonomy(tmp / "taxonomy").path
        port = free_port_on_all(NODE_ADDRESSES)
        for host in NODE_ADDRESSES[:max(args.nodes)]:
            stack.enter_context(FixedLatencyStandIn(host, port, args.latency_s, args.slots, api_key))
        results = []
        for n in args.nodes:
            r = run_once(tmp, taxonomy, n, port, api_key, args)
            results.append(r)
            log_err(f"{n} node(s): {r['requests']} requests in {r['engine_s']:.1f} s -> {r['req_s']:.1f} req/s "
                    f"(job {r['job_id']}, {r['wall_s']:.0f} s end to end); per node {r['per_node']}")
    base = next((r for r in results if r["nodes"] == 1), None)
    print(f"{'nodes':>5} {'units':>6} {'requests':>8} {'engine s':>8} {'req/s':>7} {'of ceiling':>10} "
          f"{'vs linear':>9} {'job wall s':>10}")
    ok = True
    for r in results:
        linear = r["req_s"] / (r["nodes"] * base["req_s"]) if base else float("nan")
        ok = ok and (linear >= TARGET or r["nodes"] == 1) and r["complete"]
        print(f"{r['nodes']:>5} {r['units']:>6} {r['requests']:>8} {r['engine_s']:>8.1f} {r['req_s']:>7.1f} "
              f"{r['req_s'] / (r['nodes'] * ceiling):>10.2f} {linear:>9.2f} {r['wall_s']:>10.0f}")
    print(f"target: >= {TARGET} of linear (throughput at N nodes / (N x throughput at 1 node)): "
          f"{'met' if ok else 'NOT met'}; load after {fmt_load()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
