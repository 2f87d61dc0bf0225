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


def test_multirun_list_and_dict_values_reach_every_combination_and_the_base(tmp_path: Path, sdg_env: dict) -> None:
    """Only real sweeps are swept: a list, a dict and a quoted path with a comma are one value each, in
    every combination's composed config and in the base config (the sweep dir; a Slurm sweep's launcher)."""
    import json

    tax = init_taxonomy(tmp_path / "tax").path
    out = tmp_path / "out,1"  # a comma in the output dir: one quoted value, not a sweep
    r = sdg_cli(sdg_env, "data", "generate", "-m", "--taxonomy-path", str(tax), "--output-dir", str(out),
                "pipeline=simple,full", "cluster.setup=[a,b]", "+cluster.additional_parameters={x: 1, y: 2}",
                "taxonomy.documents.chunk_tokens=4000", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    (sweep,) = (out / "multirun").iterdir()  # the base config had the quoted output dir
    combos = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in combos] == ["0", "1"]
    for combo in combos:
        # the combination's composed config (secrets masked); Hydra's own .hydra/ copy is off (plain text)
        composed = json.loads((combo / "sweep_job.json").read_text())["config"]
        assert not (combo / ".hydra").exists()
        assert composed["cluster"]["setup"] == ["a", "b"]
        assert composed["cluster"]["additional_parameters"] == {"x": 1, "y": 2}
    assert sum(ln.startswith("dry-run: ") for ln in r.stdout.splitlines()) == 2, r.stdout


def test_slurm_sweep_launcher_gets_list_and_dict_values() -> None:
    """The base config of a Slurm sweep keeps list/dict overrides, so the array's launcher has them."""
    import pytest

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.core.config_store import ConfigStore

    from sdg.errors import ConfigError
    from sdg.launch import sweep

    overrides = ["cluster=slurm", "cluster.setup=[module load x,'export Y=1']",
                 "+cluster.additional_parameters={begin: now, comment: 'a,b'}", "pipeline=simple,full",
                 "pipeline.sdg_scale_factor=range(1,3)", "hydra.job.chdir=false"]
    assert sweep.base_overrides(overrides) == overrides[:3]
    base = sweep.base_config(overrides)
    assert base.cluster.setup == ["module load x", "export Y=1"]
    assert sweep.slurm_launcher(base.cluster, "/tmp/jobs") == [f"hydra/launcher={sweep.LAUNCHER}"]
    node = ConfigStore.instance().load(f"hydra/launcher/{sweep.LAUNCHER}.yaml").node
    assert list(node.setup) == ["module load x", "export Y=1"]
    assert dict(node.additional_parameters) == {"begin": "now", "comment": "a,b"}
    sweep.check_sweepable(overrides)  # lists and dicts under cluster.* are not sweeps
    for swept in ("cluster.nodes=1,2", "cluster=slurm,local", "cluster.mem_gb=range(1,3)"):
        try:
            sweep.check_sweepable([*overrides, swept])
        except ConfigError as exc:
            assert swept in str(exc) and "cannot be swept" in str(exc)
        else:
            raise AssertionError(f"{swept} was accepted")


def test_multirun_out_of_range_value_fails_its_combination_only(tmp_path: Path, sdg_env: dict) -> None:
    """`pipeline.sdg_scale_factor=0,2`: the 0 combination fails with the range check's one-line message
    (no traceback), the 2 combination still runs; the sweep exits 1."""
    tax = init_taxonomy(tmp_path / "tax").path
    r = sdg_cli(sdg_env, "data", "generate", "-m", "--taxonomy-path", str(tax), "--output-dir", str(tmp_path / "out"),
                "pipeline.sdg_scale_factor=0,2", "taxonomy.documents.chunk_tokens=4000", "--dry-run")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("[")]  # not Hydra's log lines
    assert len(lines) == 2 and lines[0].startswith("failed: ") and lines[1].startswith("dry-run: "), r.stdout
    assert "pipeline.sdg_scale_factor=0" in lines[0] and "pipeline.sdg_scale_factor=2" in lines[1]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2 and "pipeline.sdg_scale_factor=0 is out of range: must be an integer >= 1" in errors[0]
    assert errors[1] == "error: 1 of 2 sweep jobs did not complete"
    assert sum(ln.startswith("plan:") for ln in r.stderr.splitlines()) == 1  # the good combination ran


def test_run_sweep_is_a_library_call(tmp_path: Path) -> None:
    """`sdg.launch.sweep.run_sweep` without the CLI: the outcomes as values, the failure as its message."""
    from sdg.launch.sweep import run_sweep

    tax = init_taxonomy(tmp_path / "tax").path
    logs: list[str] = []
    jobs = run_sweep([f"taxonomy.path={tax}", f"generate.output_dir={tmp_path / 'out'}", "generate.dry_run=true",
                      "taxonomy.documents.chunk_tokens=4000", "pipeline.sdg_scale_factor=0,2",
                      "hydra/job_logging=none", "hydra/hydra_logging=none"], log=logs.append)
    assert [j.status for j in jobs] == ["failed", "dry-run"]
    assert jobs[0].error is not None and jobs[0].error.startswith("pipeline.sdg_scale_factor=0 is out of range")
    assert not jobs[0].ok and jobs[1].ok and jobs[1].error is None
    assert [j.output_dir.name for j in jobs] == ["0", "1"]
    assert any(m.startswith("plan:") and "scale factor 2" in m for m in logs), logs
