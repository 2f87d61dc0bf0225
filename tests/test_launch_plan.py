"""The pure parts of the Slurm launch: replica arithmetic per node, sbatch parameters, work items,
the rendezvous files, the cluster config group. No Slurm needed."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.config.schema import ClusterConfig, TeacherConfig
from sdg.errors import ConfigError
from sdg.launch.cluster_plan import executor_parameters, node_teacher
from sdg.launch.rendezvous import AttemptFiles, RendezvousError, read_json, wait_json, write_json
from sdg.taxonomy.leaves import FreeformSkillLeaf, SkillSeed
from sdg.teacher.gpus import GpuPlanError, node_plan
from sdg.teacher.serving import build_servers


def teacher(backend: str = "vllm", tp: int = 1, replicas: int | None = None) -> TeacherConfig:
    return TeacherConfig(name="t", backend=backend, model="m", tensor_parallel_size=tp, replicas=replicas)


@pytest.mark.parametrize("gpus,tp,expect", [
    (8, 1, [["0"], ["1"], ["2"], ["3"], ["4"], ["5"], ["6"], ["7"]]),
    (8, 2, [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]),
    (8, 4, [["0", "1", "2", "3"], ["4", "5", "6", "7"]]),
    (8, 3, [["0", "1", "2"], ["3", "4", "5"]]),  # two GPUs stay idle
    (2, 2, [["0", "1"]]),
])
def test_replicas_per_node(gpus: int, tp: int, expect: list) -> None:
    plan = node_plan(teacher(tp=tp), [str(i) for i in range(gpus)], "CUDA_VISIBLE_DEVICES")
    assert [list(r.gpus) for r in plan.replicas] == expect
    assert not plan.stand_in
    assert f"tensor parallel {tp} -> {len(expect)} server replica(s)" in plan.describe()


def test_slurm_gpu_ids_are_kept() -> None:
    plan = node_plan(teacher(tp=2), ["4", "5", "6", "7"])
    assert [r.gpus for r in plan.replicas] == [("4", "5"), ("6", "7")]


def test_tensor_parallel_larger_than_node_is_refused() -> None:
    with pytest.raises(GpuPlanError, match="only 2 GPUs visible"):
        node_plan(teacher(tp=4), ["0", "1"], "SLURM_STEP_GPUS=0,1")


def test_llama_cpp_stands_in_for_vllm_replicas(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    t = TeacherConfig(name="t", backend="llama-cpp", model=str(gguf), tensor_parallel_size=2, log_dir=str(tmp_path))
    plan = node_plan(t, ["0", "1", "2", "3"])
    assert plan.stand_in and [r.gpus for r in plan.replicas] == [("0", "1"), ("2", "3")]
    # The node's plan is handed to the servers as it is (planned once): one CPU llama.cpp server per replica.
    servers = build_servers(t, plan=plan, env={})
    assert [s.backend for s in servers] == ["llama-cpp", "llama-cpp"]
    vllm = TeacherConfig(name="t", backend="vllm", model=str(tmp_path), tensor_parallel_size=2, log_dir=str(tmp_path))
    vplan = node_plan(vllm, ["0", "1", "2", "3"])
    assert [s.gpus for s in build_servers(vllm, plan=vplan, env={})] == [("0", "1"), ("2", "3")]


def test_endpoint_url_with_node_placeholder_points_each_node_at_its_own_server() -> None:
    t = TeacherConfig(name="t", backend="endpoint", endpoint_url="http://{node}:8000/v1")
    assert node_teacher(t, "127.0.0.12").endpoint_url == "http://127.0.0.12:8000/v1"
    fixed = TeacherConfig(name="t", backend="endpoint", endpoint_url="http://10.0.0.1:8000/v1")
    assert node_teacher(fixed, "127.0.0.12").endpoint_url == "http://10.0.0.1:8000/v1"


def test_no_gpus_one_cpu_replica() -> None:
    plan = node_plan(teacher("llama-cpp"), [])
    assert [r.gpus for r in plan.replicas] == [()] and not plan.stand_in


def test_executor_parameters() -> None:
    c = ClusterConfig(kind="slurm", nodes=4, gpus_per_node=8, partition="gpu", account="lab", qos="high",
                      cpus_per_task=32, mem_gb=200, time_min=90, constraint="a100", setup=["module load cuda"],
                      additional_parameters={"reservation": "mine"}, array_parallelism=5)
    p = executor_parameters(c)
    assert p == {"name": "sdg-generate", "nodes": 4, "tasks_per_node": 1, "cpus_per_task": 32, "mem_gb": 200,
                 "timeout_min": 90, "slurm_array_parallelism": 5, "gpus_per_node": 8, "slurm_partition": "gpu",
                 "slurm_account": "lab", "slurm_qos": "high", "slurm_constraint": "a100",
                 "slurm_setup": ["module load cuda"], "slurm_additional_parameters": {"reservation": "mine"}}
    assert "gpus_per_node" not in executor_parameters(ClusterConfig(kind="slurm"))


def test_sbatch_script_from_config(tmp_path: Path) -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    from sdg.launch.submit import make_executor

    cfg = to_object(compose_config(["cluster=slurm", "cluster.nodes=3", "cluster.gpus_per_node=2",
                                    "cluster.partition=debug", "cluster.max_requeues=5",
                                    "+cluster.additional_parameters.reservation=mine",
                                    f"generate.output_dir={tmp_path}"]))
    ex = make_executor(cfg)
    text = ex._executor._make_submission_file_text("python -c pass", "%j")
    for line in ("#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --partition=debug", "#SBATCH --reservation=mine", "#SBATCH --signal=USR2@90"):
        assert line in text, text
    assert ex._executor.max_num_timeout == 5
    assert str(ex.folder).startswith(str(tmp_path / "slurm_jobs"))


def test_cluster_group() -> None:
    c = to_object(compose_config(["cluster=slurm", "generate.output_dir=/data/out"])).cluster
    assert (c.kind, c.nodes, c.gpus_per_node, c.job_dir) == ("slurm", 1, 1, "/data/out/slurm_jobs")
    assert to_object(compose_config([])).cluster.kind == "local"
    with pytest.raises(ConfigError, match="cluster accepts kind, nodes, gpus_per_node, partition"):
        compose_config(["cluster=slurm", "cluster.gpus=2"])
    with pytest.raises(ConfigError, match="cluster accepts"):
        compose_config(["cluster=slurm", "+cluster.memory=2"])


def _leaf(name: str, seeds: int) -> FreeformSkillLeaf:
    return FreeformSkillLeaf(id=f"compositional_skills->{name}", name=name, path=f"compositional_skills/{name}/qna.yaml",
                             created_by="t", version=3, task_description="d",
                             seeds=tuple(SkillSeed(f"q{i} {name}", f"a{i}") for i in range(seeds)))


def test_rendezvous_files(tmp_path: Path) -> None:
    files = AttemptFiles.of(tmp_path / "42", 1)
    assert files.rendezvous == tmp_path / "42" / "sdg" / "attempt-1" / "rendezvous.json"
    write_json(files.node("node1"), {"endpoints": [{"api_key": "secret"}]})
    assert stat.S_IMODE(os.stat(files.node("node1")).st_mode) == 0o600
    assert read_json(files.node("node1"))["endpoints"][0]["api_key"] == "secret"
    assert read_json(files.done) is None
    with pytest.raises(RendezvousError, match="waited 0 s for node 0's Ray head"):
        wait_json(files.rendezvous, timeout_s=0.3, what="node 0's Ray head")

    def later() -> None:
        time.sleep(0.3)
        write_json(files.done, {"token": "old"})
        time.sleep(0.3)
        write_json(files.done, {"token": "new", "status": "complete"})

    threading.Thread(target=later).start()
    got = wait_json(files.done, timeout_s=10, what="done", accept=lambda d: d["token"] == "new")
    assert got["status"] == "complete"

    def dead() -> None:
        raise RuntimeError("the Ray head exited")

    with pytest.raises(RuntimeError, match="head exited"):
        wait_json(files.rendezvous, timeout_s=10, what="x", alive_check=dead)


def test_node_env_from_slurm() -> None:
    from sdg.launch.node import NodeEnv

    env = NodeEnv.from_environ({"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2", "SLURM_NODEID": "1",
                                "SLURM_NNODES": "4", "SLURMD_NODENAME": "localhost"})
    assert (env.job_id, env.restart, env.index, env.count, env.name, env.ip) == ("77", 2, 1, 4, "localhost", "127.0.0.1")
    alone = NodeEnv.from_environ({})
    assert (alone.restart, alone.index, alone.count) == (0, 0, 1) and alone.job_id.startswith("local-")


def test_ray_temp_dir_is_private(tmp_path: Path) -> None:
    from sdg.errors import RayStartError
    from sdg.launch.raynode import private_temp_dir

    d = tmp_path / "sdg-ray-1-0-node1"
    private_temp_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    d.chmod(0o777)  # left open by someone: tightened
    private_temp_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    link = tmp_path / "planted"
    link.symlink_to(tmp_path)  # a link planted where the dir goes is not a directory of ours
    with pytest.raises(RayStartError, match="not this user's directory"):
        private_temp_dir(link)
