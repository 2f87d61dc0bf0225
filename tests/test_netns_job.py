"""A whole generate job across two "machines" whose names resolve to loopback (tests/netns_support.py).

Each namespace runs what a Slurm task of the job runs, `sdg.launch.node.node_main`, with the environment Slurm
gives a task (SLURM_JOB_ID, SLURMD_NODENAME, SLURM_NODEID, SLURM_NNODES, SLURM_JOB_NODELIST) and its own
stand-in teacher on its own port space (`teacher.endpoint_url=http://{node}:PORT/v1`, a site server per
node). Nothing else is faked: the node addresses are chosen by the real rule (route toward the next node /
toward the Ray head), the Ray head and worker start on them with token authentication, the rendezvous and
journals go through the shared job folder, the driver's Ray executor hands units to both nodes. Each node's
name resolves to 127.0.1.1 inside its namespace, as on Debian hosts: with the old address rule the worker
could not reach the head and the job would never form.

Only sbatch itself is left out (slurmd cannot run inside these namespaces here); tests/test_slurm_generate.py
runs the same node_main under real Slurm on the loopback aliases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sdg.taxonomy.init import init_taxonomy
from tests.netns_support import in_ns

pytestmark = pytest.mark.slow

NODE_JOB = r"""
import json, sys
from sdg.config.compose import compose_config, to_object
from sdg.launch.node import node_main
from tests.standin_teacher import DeterministicStandInTeacher

overrides, folder, port = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cfg = to_object(compose_config(overrides))
teacher = DeterministicStandInTeacher(host="0.0.0.0", port=port)  # this "machine's" server, on every address
with teacher:
    summary = node_main(cfg, folder)
print("RESULT " + json.dumps({"served": teacher.requests,
                              "complete": None if summary is None else summary.complete,
                              "run_dir": None if summary is None else str(summary.run_dir)}), flush=True)
"""


def test_a_generate_job_forms_and_completes_across_two_namespaces(two_machines: dict, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    if shutil.which("scontrol") is None:
        pytest.skip("the node rule reads the job's node list with `scontrol show hostnames` (Slurm's client)")
    m = two_machines
    taxonomy = init_taxonomy(tmp_path / "taxonomy").path
    out, folder = tmp_path / "out", tmp_path / "jobs" / "1"
    port = 20000 + os.getpid() % 20000  # each namespace has its own ports: the same one is free in both
    overrides = ["cluster=slurm", "cluster.nodes=2", f"cluster.job_dir={tmp_path / 'jobs'}",
                 "teacher=endpoint", f"teacher.endpoint_url='http://{{node}}:{port}/v1'", "teacher.startup_timeout_s=60",
                 f"taxonomy.path={taxonomy}", "taxonomy.base=empty", "pipeline.sdg_scale_factor=2",
                 "taxonomy.documents.chunk_tokens=4000", f"generate.output_dir={out}", "generate.progress=none"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    base_env.update({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                     "XDG_DATA_HOME": str(tmp_path / "data")})
    procs = []
    try:
        for i in (0, 1):
            env = {**base_env, "SLURM_JOB_ID": "1", "SLURMD_NODENAME": m["names"][i], "SLURM_NODEID": str(i),
                   "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": ",".join(m["names"]), "SLURM_PROCID": str(i)}
            log = open(tmp_path / f"node{i}.log", "w")  # noqa: SIM115  (closed below)
            procs.append((subprocess.Popen(in_ns(m["ns"][i], "-c", NODE_JOB, json.dumps(overrides), str(folder),
                                                 str(port)), stdout=log, stderr=subprocess.STDOUT, env=env), log))
        for p, log in procs:
            p.wait(timeout=420)
            log.close()
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = [(tmp_path / f"node{i}.log").read_text() for i in (0, 1)]
    for i, (p, _) in enumerate(procs):
        assert p.returncode == 0, f"node {i} exited {p.returncode}:\n{logs[i][-4000:]}"
    results = [json.loads(next(ln for ln in text.splitlines() if ln.startswith("RESULT "))[7:]) for text in logs]

    # The nodes chose their veth addresses (never the 127.0.1.1 their names give) and formed one Ray cluster.
    records = {r["node"]: r for r in (json.loads(p.read_text()) for p in folder.glob("sdg/attempt-0/node-*.json"))}
    assert {name: rec["ip"] for name, rec in records.items()} == dict(zip(m["names"], m["ips"]))
    assert f"{m['names'][0]} 0/2] ray head at {m['ips'][0]}:" in logs[0]
    assert f"joined ray head {m['ips'][0]}:" in logs[1] and f"from {m['ips'][1]}" in logs[1]

    # The run completed, every unit once, and both machines' teachers and workers did part of it.
    assert results[0]["complete"] is True and results[1]["run_dir"] is None
    run = Path(results[0]["run_dir"])
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["kept"] > 0 and counts["units_failed"] == 0
    done: Counter = Counter()
    writers = set()
    for path in run.glob("journal/*.jsonl"):
        writers.add(path.name.split(".")[1])
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["status"] == "done":
                done[(path.name.split(".")[0], rec["unit"])] += 1
    assert set(done.values()) == {1}, "a unit was done twice"
    assert len(done) == counts["units_run"]
    assert writers == set(m["names"]), f"journal writers {writers}: both nodes should have worked"
    assert all(r["served"] > 0 for r in results), f"requests per machine's teacher: {[r['served'] for r in results]}"
