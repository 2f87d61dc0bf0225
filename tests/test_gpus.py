"""Replica planning over visible GPUs: tensor parallel slices, data-parallel replicas, clear refusals.

These are pure functions; the vLLM command lines they produce are checked here because this machine
has no GPU to run them on (a real vLLM on the CPU is tested in test_vllm_cpu.py).
"""

from __future__ import annotations

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.teacher.backends import VllmServer
from sdg.teacher.gpus import GpuPlanError, plan_replicas, visible_gpus
from sdg.teacher.serving import build_servers


def test_visible_gpus_sources() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"})[0] == ("0", "1")
    # CUDA_VISIBLE_DEVICES (what Slurm sets, what CUDA honours) wins; without it, Slurm's absolute ids are
    # the step's count: under a cgroup device constraint the job sees its GPUs as 0..n-1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_STEP_GPUS": "2,3"})[0] == ("2", "3")
    gpus, source = visible_gpus({"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3"})
    assert gpus == ("0", "1") and "SLURM_STEP_GPUS=2,3" in source and "0..1" in source
    assert visible_gpus({"SLURM_JOB_GPUS": "4,5,6"})[0] == ("0", "1", "2")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""})[0] == ()
    assert visible_gpus({})[0] == ()
    # a step started with `srun --gres=none` in a job that has GPUs: Slurm drops CUDA_VISIBLE_DEVICES and
    # SLURM_STEP_GPUS but keeps the job's list, which is not the step's
    gpus, source = visible_gpus({"SLURM_JOB_GPUS": "0,1", "SLURM_STEP_ID": "3"})
    assert gpus == () and "SLURM_STEP_ID=3" in source and "given no GPUs" in source
    assert visible_gpus({"SLURM_JOB_GPUS": "0,1"})[0] == ("0", "1")  # the batch script itself: the job's


def test_tensor_parallel_two_on_one_gpu_is_refused_clearly() -> None:
    with pytest.raises(GpuPlanError) as err:
        plan_replicas(("0",), 2, source="CUDA_VISIBLE_DEVICES=0")
    assert "--gpus 2" in str(err.value) and "only 1 GPU visible" in str(err.value)


def test_replicas_fill_the_node() -> None:
    plan = plan_replicas(tuple("01234567"), 2)
    assert [r.gpus for r in plan] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert [r.gpus for r in plan_replicas(tuple("0123"), 4)] == [("0", "1", "2", "3")]
    assert len(plan_replicas(tuple("012"), 2)) == 1  # the odd GPU stays idle
    assert [r.gpus for r in plan_replicas(tuple("0123"), 1, replicas=2)] == [("0",), ("1",)]
    with pytest.raises(GpuPlanError):
        plan_replicas(tuple("0123"), 2, replicas=3)
    with pytest.raises(GpuPlanError, match="none are visible"):
        plan_replicas((), 2)
    assert plan_replicas((), 1, cpu_ok=True)[0].gpus == ()


def test_vllm_servers_get_disjoint_gpus_ports_and_passthrough(tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    cfg = to_object(compose_config(["teacher.backend=vllm", f"teacher.model={model}", "teacher.tensor_parallel_size=2",
                                    f"teacher.log_dir={tmp_path}"])).teacher
    servers = build_servers(cfg, env={"CUDA_VISIBLE_DEVICES": "4,5,6,7", "SLURM_JOB_ID": "42"},
                            extra_args=["--dtype", "auto"])
    assert len(servers) == 2 and all(isinstance(s, VllmServer) for s in servers)
    for s in servers:
        s.choose_ports()  # what launch() does first: the HTTP port and a free block for VLLM_PORT
    envs = [s.extra_env() for s in servers]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,5", "6,7"]
    assert envs[0]["VLLM_PORT"] != envs[1]["VLLM_PORT"]
    assert all(e["VLLM_API_KEY"] for e in envs), "a cluster job gets an API key"
    for s in servers:
        s.port = 8000
        argv = s.command()
        assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
        assert argv[argv.index("--served-model-name") + 1] == "teacher"
        assert argv[-2:] == ["--dtype", "auto"]
        assert "--api-key" not in argv  # the key is in the environment, not in `ps`
    with pytest.raises(GpuPlanError):
        build_servers(cfg, env={"CUDA_VISIBLE_DEVICES": "0"})


def test_a_vllm_judge_takes_its_gpus_from_the_end_and_others_take_none() -> None:
    from types import SimpleNamespace

    from sdg.teacher.gpus import GpuPlanError, split_judge_gpus

    vllm = SimpleNamespace(backend="vllm", tensor_parallel_size=2, replicas=None)
    assert split_judge_gpus(vllm, ["0", "1", "2", "3"]) == (("2", "3"), ("0", "1"))
    assert split_judge_gpus(SimpleNamespace(backend="vllm", tensor_parallel_size=1, replicas=2),
                            ["0", "1", "2"]) == (("1", "2"), ("0",))
    for other in ("llama-cpp", "endpoint"):
        assert split_judge_gpus(SimpleNamespace(backend=other, tensor_parallel_size=1, replicas=None),
                                ["0", "1"]) == ((), ("0", "1"))
    assert split_judge_gpus(None, ["0"]) == ((), ("0",))
    with pytest.raises(GpuPlanError, match="judge needs 2 GPU"):
        split_judge_gpus(vllm, ["0", "1"])  # nothing left for the teacher
