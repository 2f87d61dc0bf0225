"""`sdg data list`: every run folder under the output dir with its state (complete, incomplete, interrupted,
broken, or InstructLab's own), taxonomy commit, teacher, pipeline, leaves, units and kept samples; run
folders written with the engine's own writers (run.json, journals) and the manifest writer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sdg.engine.journal import JournalStore, record_of
from sdg.engine.rundir import RUN_FILE, RunDir, RunState, write_state
from sdg.output import run_list
from sdg.output.reports import write_manifest
from sdg.output.run_list import BROKEN, COMPLETE, INCOMPLETE, INSTRUCTLAB, INTERRUPTED, format_runs, list_runs
from sdg.pipeline.types import RequestError, UnitResult
from tests.conftest import sdg_cli
from tests.test_dataset_card import _manifest, _quality
from tests.test_output_writer import FREEFORM, GENERATED, LEAVES

COMPONENTS = {"leaves": {leaf.id: "fp" for leaf in LEAVES}, "pipelines": {"knowledge": "p"},
              "teacher": {"name": "mixtral", "model": "mistralai/Mixtral-8x7B-Instruct-v0.1", "served_model_name": None,
                          "max_tokens": 1024}, "scale": 30, "samples_per_unit": 5, "seed": 42}


def _run(out: Path, name: str, status: str, *, manifest: bool = False, failed: int = 0) -> Path:
    folder = out / name
    folder.mkdir(parents=True)
    stamp = name.replace("_", "T", 1)
    write_state(RunDir(folder, stamp, False), RunState("fp", stamp, status, COMPONENTS, 1_700_000_000.0,
                                                       1_700_000_100.0 if status != "running" else None))
    if manifest:
        quality = _quality(GENERATED)
        write_manifest(folder, _manifest(folder, LEAVES, quality, failed=failed))
    return folder


def _journal(folder: Path, leaf: str, units: dict[str, str], writer: str = "") -> None:
    store = JournalStore(folder / "journal", writer=writer)
    try:
        for unit, status in units.items():
            result = UnitResult(rows=[{"question": "q", "response": "r"}] if status == "done" else [], generated=1,
                                errors=[] if status == "done" else [RequestError("gen", "timeout", "t", True)])
            store.append(leaf, record_of(unit, result))
    finally:
        store.close()


def test_the_names_shared_with_the_engine_agree() -> None:
    assert run_list.RUN_FILE == RUN_FILE
    assert RunDir(Path("/x"), "s", False).journal_dir.name == run_list.JOURNAL_DIR


def test_empty_and_missing_output_dirs(tmp_path: Path) -> None:
    assert list_runs(tmp_path) == [] and list_runs(tmp_path / "nope") == []
    (tmp_path / "slurm_jobs" / "123").mkdir(parents=True)  # not run folders
    (tmp_path / "checkpoints").mkdir()
    assert list_runs(tmp_path) == []
    assert format_runs([], tmp_path) == f"No runs in {tmp_path}."


def test_complete_run(tmp_path: Path) -> None:
    folder = _run(tmp_path, "2026-01-02_030405", "complete", manifest=True)
    _journal(folder, FREEFORM.name, {"u1": "done"})
    (r,) = list_runs(tmp_path)
    assert (r.state, r.name, r.path) == (COMPLETE, "2026-01-02_030405", str(folder.absolute()))
    assert r.stamp == "2026-01-02T030405" and r.started == 1_700_000_000.0 and r.finished == 1_700_000_100.0
    assert r.taxonomy_commit.startswith("c0ffee") and r.taxonomy_dirty is True
    assert r.teacher == "mixtral (mistralai/Mixtral-8x7B-Instruct-v0.1)" and r.pipeline == "full"
    assert r.scale_factor == 30 and r.leaves == len(LEAVES)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert r.kept == manifest["counts"]["kept"] > 0 and r.units == manifest["counts"]["units"] == r.units_done
    assert r.units_failed == 0 and r.note == ""


def test_killed_run_counts_its_journals(tmp_path: Path) -> None:
    """run.json still says running and there is no manifest: a kill -9, a lost node, or a run in progress.
    Units done come from the journals: every writer's file, a unit that failed then succeeded counted once
    as done, a unit that only failed counted as failed, a torn last line not at all."""
    folder = _run(tmp_path, "2026-01-02_030405", "running")
    _journal(folder, FREEFORM.name, {"u1": "done", "u2": "failed", "u3": "failed"})
    _journal(folder, FREEFORM.name, {"u2": "done"}, writer="node1")
    _journal(folder, "knowledge_x-0123456789", {"u1": "done"})  # the same unit id in another leaf is another unit
    with open(folder / "journal" / f"{FREEFORM.name}.jsonl", "a") as f:
        f.write('{"unit": "u4", "status": "done", "rows": [{"quest')  # torn by the kill
    (r,) = list_runs(tmp_path)
    assert r.state == INTERRUPTED and (r.units_done, r.units_failed) == (3, 1)
    assert r.kept is None and r.units is None and r.taxonomy_commit is None
    assert r.teacher == "mixtral (mistralai/Mixtral-8x7B-Instruct-v0.1)" and r.leaves == len(LEAVES)
    assert "resumes" in r.note and r.last_write is not None and abs(r.last_write - time.time()) < 600
    text = format_runs([r], tmp_path, now=r.last_write + 300)
    assert "interrupted" in text and "3" in text.splitlines()[2] and "last write 5 min ago" in text


def test_resumed_run_with_an_old_manifest_counts_journals_not_the_manifest(tmp_path: Path) -> None:
    folder = _run(tmp_path, "2026-01-02_030405", "running", manifest=True, failed=2)
    _journal(folder, FREEFORM.name, {"u1": "done"})
    (r,) = list_runs(tmp_path)
    assert r.state == INTERRUPTED and r.units_done == 1 and r.kept is None
    assert r.pipeline == "full" and r.units == json.loads((folder / "manifest.json").read_text())["counts"]["units"]


def test_incomplete_run(tmp_path: Path) -> None:
    _run(tmp_path, "2026-01-02_030405", "incomplete", manifest=True, failed=2)
    (r,) = list_runs(tmp_path)
    assert r.state == INCOMPLETE and r.units_failed == 2 and r.units_done == r.units - 2
    assert "retries" in r.note


def test_broken_runs_and_instructlab_runs(tmp_path: Path) -> None:
    no_state = tmp_path / "2026-01-01_000000"
    _journal(no_state, FREEFORM.name, {"u1": "done"})
    garbage = tmp_path / "2026-01-01_000001"
    garbage.mkdir()
    (garbage / "run.json").write_text("{not json")
    (garbage / "journal").mkdir()
    odd = _run(tmp_path, "2026-01-01_000002", "running")
    state = json.loads((odd / "run.json").read_text())
    (odd / "run.json").write_text(json.dumps({**state, "status": "paused"}))
    ilab = tmp_path / "2025-05-05_174124"
    (ilab / "node_datasets_2025-05-05T17_41_24").mkdir(parents=True)
    (ilab / "skills_train_msgs_2025-05-05T17_41_24.jsonl").write_text("{}\n")
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert runs[no_state.name].state == BROKEN and "no run.json" in runs[no_state.name].note
    assert runs[no_state.name].units_done == 1
    assert runs[garbage.name].state == BROKEN and "unreadable" in runs[garbage.name].note
    assert runs[odd.name].state == BROKEN and "'paused'" in runs[odd.name].note
    assert runs[ilab.name].state == INSTRUCTLAB and runs[ilab.name].stamp == "2025-05-05T17_41_24"
    assert list(runs) == sorted(runs)


def test_sweep_runs_are_listed_under_multirun(tmp_path: Path) -> None:
    _run(tmp_path, "2026-01-02_030405", "complete", manifest=True)
    _run(tmp_path / "multirun" / "2026-01-03_000000" / "0", "2026-01-03_000001", "complete", manifest=True)
    (tmp_path / "multirun" / "2026-01-03_000000" / "slurm_jobs").mkdir()
    names = [r.name for r in list_runs(tmp_path)]
    assert names == ["2026-01-02_030405", "multirun/2026-01-03_000000/0/2026-01-03_000001"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_cli(tmp_path: Path, sdg_env: dict, fmt: str) -> None:
    out = tmp_path / "out"
    _run(out, "2026-01-02_030405", "complete", manifest=True)
    killed = _run(out, "2026-01-02_040000", "running")
    _journal(killed, FREEFORM.name, {"u1": "done", "u2": "done"})
    r = sdg_cli(sdg_env, "data", "list", "--output-dir", str(out), "--format", fmt)
    assert r.returncode == 0, r.stderr
    if fmt == "json":
        data = json.loads(r.stdout)
        assert data["output_dir"] == str(out)
        assert [(x["name"], x["state"], x["units_done"]) for x in data["runs"]] == [
            ("2026-01-02_030405", "complete", data["runs"][0]["units"]), ("2026-01-02_040000", "interrupted", 2)]
    else:
        lines = r.stdout.splitlines()
        assert lines[0] == f"Runs in {out}:" and lines[1].split()[:3] == ["RUN", "STATE", "STARTED"]
        assert lines[2].split()[:2] == ["2026-01-02_030405", "complete"]
        assert lines[3].split()[:2] == ["2026-01-02_040000", "interrupted"]
        assert any(ln.startswith("2026-01-02_040000: interrupted or still running") for ln in lines)


def test_cli_default_dir_and_empty(tmp_path: Path, sdg_env: dict) -> None:
    """No --output-dir: InstructLab's datasets dir (generate.output_dir), here missing, then empty."""
    r = sdg_cli(sdg_env, "data", "list")
    default = Path(sdg_env["XDG_DATA_HOME"]) / "instructlab" / "datasets"
    assert r.returncode == 0 and f"No runs: {default} does not exist" in r.stdout
    default.mkdir(parents=True)
    r = sdg_cli(sdg_env, "data", "list")
    assert r.returncode == 0 and r.stdout.strip() == f"No runs in {default}."
    r = sdg_cli(sdg_env, "data", "list", "--format", "json")
    assert json.loads(r.stdout) == {"output_dir": str(default), "runs": []}
    assert os.listdir(default) == []  # listing writes nothing


def test_journals_written_before_orjson_still_count(tmp_path: Path) -> None:
    """Journal lines of older versions have the stdlib's spaces (`{"unit": "u1", "status": "done", ...}`)."""
    folder = _run(tmp_path, "2026-01-02_030405", "running")
    (folder / "journal").mkdir(parents=True, exist_ok=True)
    (folder / "journal" / f"{FREEFORM.name}.jsonl").write_text(
        '{"unit": "u1", "status": "done", "rows": []}\n{"unit": "u2", "status": "failed", "rows": []}\n')
    _journal(folder, FREEFORM.name, {"u3": "done"}, writer="node1")  # and a compact one beside them
    (r,) = list_runs(tmp_path)
    assert (r.units_done, r.units_failed) == (2, 1)
