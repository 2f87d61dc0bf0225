"""The `sdg` console script through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import git, sdg_cli, write_leaf


def _taxonomy(tmp_path: Path) -> Path:
    root = tmp_path / "tax"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_leaf(root, "compositional_skills/writing/a/qna.yaml")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "feature")
    return root


def test_init_diff_validate_on_a_fresh_home(tmp_path: Path, sdg_env: dict) -> None:
    r = sdg_cli(sdg_env, "taxonomy", "init")
    assert r.returncode == 0, r.stderr
    default = Path(sdg_env["XDG_DATA_HOME"]) / "instructlab" / "taxonomy"
    assert str(default) in r.stdout
    for root in ("compositional_skills", "foundational_skills", "knowledge"):
        assert (default / root).is_dir()
    again = sdg_cli(sdg_env, "taxonomy", "init")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    d = sdg_cli(sdg_env, "taxonomy", "diff")
    assert d.returncode == 0, d.stdout + d.stderr
    listed = d.stdout.split()
    assert len(listed) == 4 and all(p.endswith("/qna.yaml") for p in listed)
    assert any(p.startswith("foundational_skills/") for p in listed)
    assert "origin/main" in d.stderr and "valid" in d.stderr

    v = sdg_cli(sdg_env, "taxonomy", "validate", "--documents")
    assert v.returncode == 0, v.stdout + v.stderr

    nothing = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-base", "main")
    assert nothing.returncode == 0 and nothing.stdout.strip() == ""
    assert "No changed leaves" in nothing.stderr


def test_diff_lists_changes_and_fails_on_errors(tmp_path: Path, sdg_env: dict) -> None:
    root = _taxonomy(tmp_path)
    write_leaf(root, "compositional_skills/writing/b/qna.yaml")
    bad = root / "knowledge/broken/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: me\ndomain: x\n")
    r = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-path", str(root), "--taxonomy-base", "main")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[:2] == ["compositional_skills/writing/b/qna.yaml", "knowledge/broken/qna.yaml"]
    assert any("qna.yaml:1:1" in ln and "'document_outline' is a required property" in ln for ln in lines)
    assert "Traceback" not in r.stderr
    assert "errors" in r.stderr

    j = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-path", str(root), "taxonomy.base=main", "--format", "json")
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["changed"] == ["compositional_skills/writing/b/qna.yaml", "knowledge/broken/qna.yaml"]
    assert doc["errors"] >= 3 and all({"path", "line", "col", "severity", "message"} <= set(f) for f in doc["findings"])

    q = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-path", str(root), "--taxonomy-base", "main", "-q")
    assert q.returncode == 1 and q.stdout == "" and q.stderr == ""


def test_explicit_missing_base_is_an_error_without_traceback(tmp_path: Path, sdg_env: dict) -> None:
    root = _taxonomy(tmp_path)
    r = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-path", str(root), "--taxonomy-base", "origin/nope")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "origin/nope" in r.stderr and "Traceback" not in r.stderr


def test_validate_files_and_dirs(tmp_path: Path, sdg_env: dict) -> None:
    root = _taxonomy(tmp_path)
    good = root / "compositional_skills/writing/a/qna.yaml"
    r = sdg_cli(sdg_env, "taxonomy", "validate", str(good))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = root / "compositional_skills/writing/c/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: me\ntask_description: t\nseed_examples:\n  - question: q\n    anwser: a\n")
    r = sdg_cli(sdg_env, "taxonomy", "validate", str(root / "compositional_skills"))
    assert r.returncode == 1
    assert "did you mean 'answer'" in r.stdout
    assert "c/qna.yaml:5:5 [.seed_examples[0]] error:" in r.stdout
    j = sdg_cli(sdg_env, "taxonomy", "validate", str(bad), "--format", "json")
    doc = json.loads(j.stdout)
    assert j.returncode == 1 and doc["errors"] == len([f for f in doc["findings"] if f["severity"] == "error"])
    none = sdg_cli(sdg_env, "taxonomy", "validate", str(tmp_path / "empty-dir-that-does-not-exist"))
    assert none.returncode == 1 and "error:" in none.stdout + none.stderr


def test_cfg_overrides_and_typos(tmp_path: Path, sdg_env: dict) -> None:
    r = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-base", "main", "taxonomy.max_file_bytes=10", "--cfg")
    assert r.returncode == 0, r.stderr
    assert "base: main" in r.stdout and "max_file_bytes: 10" in r.stdout
    assert "teacher:" in r.stdout and "cluster:" in r.stdout
    typo = sdg_cli(sdg_env, "taxonomy", "diff", "taxonomy.bse=main")
    assert typo.returncode == 2
    assert "unknown config key 'taxonomy.bse'" in typo.stderr and "base" in typo.stderr
    group = sdg_cli(sdg_env, "taxonomy", "diff", "teacher=nope", "--cfg")
    assert group.returncode == 2 and "smollm2-135m-cpu" in group.stderr
    flag = sdg_cli(sdg_env, "taxonomy", "diff", "--no-such-flag")
    assert flag.returncode == 2 and "unrecognized arguments" in flag.stderr and "Traceback" not in flag.stderr


def test_init_refuses_a_foreign_non_empty_directory(tmp_path: Path, sdg_env: dict) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    r = sdg_cli(sdg_env, "taxonomy", "init", "--path", str(target))
    assert r.returncode == 1 and "Refusing to overwrite" in r.stderr
    assert (target / "thesis.tex").read_text() == "precious"


def test_init_clones_a_repository(tmp_path: Path, sdg_env: dict) -> None:
    upstream = _taxonomy(tmp_path)
    dest = tmp_path / "cloned"
    r = sdg_cli(sdg_env, "taxonomy", "init", "--repository", str(upstream), "--path", str(dest))
    assert r.returncode == 0, r.stderr
    assert (dest / "compositional_skills/writing/a/qna.yaml").is_file()
    again = sdg_cli(sdg_env, "taxonomy", "init", "--repository", str(upstream), "--path", str(dest))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    other = sdg_cli(sdg_env, "taxonomy", "init", "--repository", str(tmp_path / "elsewhere"), "--path", str(dest))
    assert other.returncode == 1 and "clone of" in other.stderr
    hostile = sdg_cli(sdg_env, "taxonomy", "init", "--repository", "ext::sh -c touch% /tmp/sdg-pwned",
                      "--path", str(tmp_path / "x"))
    assert hostile.returncode == 1 and not Path("/tmp/sdg-pwned").exists()


def test_diff_of_a_single_file(tmp_path: Path, sdg_env: dict) -> None:
    root = _taxonomy(tmp_path)
    leaf = root / "compositional_skills/writing/a/qna.yaml"
    r = sdg_cli(sdg_env, "taxonomy", "diff", "--taxonomy-path", str(leaf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["qna.yaml"]


def test_python_dash_m_sdg_and_the_hidden_node_verb(tmp_path: Path, sdg_env: dict) -> None:
    """`python -m sdg` is the CLI; `sdg jobs node` (what slurm/generate.sbatch runs on every node) works
    and composes like every verb, but `sdg jobs --help` does not list it."""
    def py_sdg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sdg", *args], env=sdg_env, capture_output=True, text=True,
                              timeout=120)

    version = py_sdg("--version")
    assert version.returncode == 0 and version.stdout.startswith("sdg "), version.stdout + version.stderr
    jobs = sdg_cli(sdg_env, "jobs", "--help")
    assert jobs.returncode == 0 and "status" in jobs.stdout and "cancel" in jobs.stdout
    listed = re.findall(r"^    (\S+)", jobs.stdout, flags=re.M)  # the verbs, not their wrapped help
    assert listed == ["status", "logs", "cancel"], jobs.stdout
    assert "SUPPRESS" not in jobs.stdout
    node = sdg_cli(sdg_env, "jobs", "node", "--help")
    assert node.returncode == 0 and "--job-folder DIR" in node.stdout, node.stdout + node.stderr
    cfg = py_sdg("jobs", "node", "--job-folder", str(tmp_path / "job"), "cluster.nodes=3", "--cfg")
    assert cfg.returncode == 0 and "nodes: 3" in cfg.stdout, cfg.stdout + cfg.stderr
    typo = py_sdg("jobs", "node", "cluster.nodez=3")
    assert typo.returncode == 2 and typo.stderr.startswith("error: unknown config key 'cluster.nodez'"), typo.stderr
    assert "Traceback" not in typo.stderr
