"""`sdg data generate` as a user runs it, for the paths that need no teacher: dry runs, sweeps, refusals."""

from __future__ import annotations

from pathlib import Path

from sdg.taxonomy.init import init_taxonomy
from tests.conftest import git, sdg_cli


def test_no_taxonomy_says_how_to_get_one(tmp_path: Path, sdg_env: dict) -> None:
    r = sdg_cli(sdg_env, "data", "generate", "--dry-run")
    assert r.returncode == 1 and "sdg taxonomy init" in r.stderr and "Traceback" not in r.stderr


def test_no_changed_leaves_is_explained(tmp_path: Path, sdg_env: dict) -> None:
    tax = init_taxonomy(tmp_path / "tax").path
    r = sdg_cli(sdg_env, "data", "generate", "--taxonomy-path", str(tax), "--taxonomy-base", "main", "--dry-run")
    assert r.returncode == 1
    assert "no new or changed leaves" in r.stderr and "--taxonomy-base empty" in r.stderr


def test_invalid_leaf_stops_before_generation_with_findings(tmp_path: Path, sdg_env: dict) -> None:
    tax = init_taxonomy(tmp_path / "tax").path
    bad = tax / "compositional_skills/writing/broken/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: me\ntask_description: t\nseed_examples: []\n")
    r = sdg_cli(sdg_env, "data", "generate", "--taxonomy-path", str(tax), "--dry-run")
    assert r.returncode == 1
    assert "broken/qna.yaml:4:1 [.seed_examples] error: Value must have at least 5 items" in r.stdout
    assert "nothing was generated" in r.stderr


def test_dry_run_counts_follow_the_scale_factor(tmp_path: Path, sdg_env: dict) -> None:
    tax = init_taxonomy(tmp_path / "tax").path
    git(tax, "checkout", "-q", "-b", "work")
    r = sdg_cli(sdg_env, "data", "generate", "--taxonomy-path", str(tax), "--taxonomy-base", "empty",
                "--sdg-scale-factor", "12", "taxonomy.documents.chunk_tokens=4000", "--dry-run")
    assert r.returncode == 0, r.stderr
    # 15 skill seeds and 1 chunk x 5 knowledge seeds = 20 input rows; 12 = 5 + 5 + 2 -> 3 units each
    assert "20 units" not in r.stderr and "60 units; target 240 samples (scale factor 12)" in r.stderr


def test_multirun_sweep_runs_one_job_per_combination(tmp_path: Path, sdg_env: dict) -> None:
    tax = init_taxonomy(tmp_path / "tax").path
    out = tmp_path / "out"
    r = sdg_cli(sdg_env, "data", "generate", "-m", "--taxonomy-path", str(tax), "--output-dir", str(out),
                "pipeline=simple,full", "pipeline.sdg_scale_factor=1,2", "taxonomy.documents.chunk_tokens=4000",
                "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    plans = [ln for ln in r.stderr.splitlines() if ln.startswith("plan:")]
    assert len(plans) == 4
    assert sum("target 20 samples" in p for p in plans) == 2 and sum("target 40 samples" in p for p in plans) == 2
    (sweep,) = (out / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
