"""`taxonomy_diff` on real git repositories: what changed since the fork point with a base ref."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdg.errors import TaxonomyError
from sdg.taxonomy.diff import taxonomy_diff
from tests.conftest import git, write_leaf

A = "compositional_skills/writing/a/qna.yaml"
B = "compositional_skills/writing/b/qna.yaml"
C = "knowledge/science/c/qna.yaml"
D = "compositional_skills/old/d/qna.yaml"
E = "compositional_skills/new/d/qna.yaml"  # D after `git mv old new`
F = "foundational_skills/reasoning/f/qna.yaml"
G = "compositional_skills/writing/g/qna.yaml"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "taxonomy"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_leaf(root, A)
    write_leaf(root, C, "knowledge")
    write_leaf(root, D)
    write_leaf(root, G)
    (root / "README.md").write_text("taxonomy\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def git_says_changed(root: Path, base: str) -> set[str]:
    """What git itself reports: diff from the merge base to the work tree plus untracked, no deletions."""
    fork = git(root, "merge-base", "HEAD", base).strip()
    changed = git(root, "diff", "--name-only", "--diff-filter=AMRCT", "-M", fork).split("\n")
    untracked = git(root, "ls-files", "--others", "--exclude-standard").split("\n")
    return {p for p in changed + untracked if p.endswith("/qna.yaml")}


def test_branch_commits_staged_unstaged_untracked_renames_deletions(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    write_leaf(repo, B)  # added and committed
    (repo / A).write_text((repo / A).read_text() + "# committed change\n")
    git(repo, "mv", "compositional_skills/old", "compositional_skills/new")  # rename d -> e
    git(repo, "rm", "-q", C)  # deletion: not listed
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "feature work")
    write_leaf(repo, F, tag="staged")  # staged only
    git(repo, "add", F)
    (repo / G).write_text((repo / G).read_text() + "# unstaged\n")  # unstaged change
    write_leaf(repo, "knowledge/untracked/u/qna.yaml", "knowledge")  # untracked
    (repo / ".gitignore").write_text("ignored/\n")
    write_leaf(repo, "compositional_skills/ignored/i/qna.yaml")  # ignored: not listed

    diff = taxonomy_diff(repo, "main")
    expected = {A, B, E, F, G, "knowledge/untracked/u/qna.yaml"}
    assert set(diff.changed) == expected
    assert set(diff.changed) == git_says_changed(repo, "main")
    assert list(diff.changed) == sorted(diff.changed)
    assert diff.fork_point == git(repo, "rev-parse", "main").strip()


def test_changes_on_the_base_after_the_fork_are_not_listed(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    write_leaf(repo, B)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "feature")
    git(repo, "checkout", "-q", "main")
    write_leaf(repo, "compositional_skills/main_only/qna.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main moves on")
    git(repo, "checkout", "-q", "feature")
    assert taxonomy_diff(repo, "main").changed == (B,)


def test_origin_main_of_a_real_clone(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    write_leaf(clone, B)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "new leaf")
    write_leaf(clone, F)
    diff = taxonomy_diff(clone, "origin/main")
    assert diff.changed == (B, F)


def test_detached_head(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    write_leaf(repo, B)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "feature")
    git(repo, "checkout", "-q", "--detach", "HEAD")
    assert taxonomy_diff(repo, "main").changed == (B,)


def test_nothing_changed(repo: Path) -> None:
    diff = taxonomy_diff(repo, "main")
    assert diff.changed == ()


def test_missing_base_ref_given_by_the_user_is_an_error(repo: Path) -> None:
    with pytest.raises(TaxonomyError) as err:
        taxonomy_diff(repo, "origin/main")
    msg = str(err.value)
    assert "'origin/main' does not exist" in msg and "main" in msg and "--taxonomy-base" in msg


def test_missing_default_base_falls_back_to_every_leaf_with_a_note(repo: Path) -> None:
    diff = taxonomy_diff(repo, None)
    assert diff.base == "empty"
    assert set(diff.changed) == {A, C, D, G}
    assert diff.notes and "origin/main" in diff.notes[0]


def test_empty_base_lists_the_whole_tree_even_without_git(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    for rel in (A, C, F):
        write_leaf(root, rel)
    (root / "compositional_skills/writing/x").mkdir(parents=True)
    (root / "compositional_skills/writing/x/qna.yml").write_text("x: 1\n")
    (root / "compositional_skills/writing/y").mkdir(parents=True)
    (root / "compositional_skills/writing/y/QNA.yaml").write_text("x: 1\n")
    (root / "other/z").mkdir(parents=True)
    (root / "other/z/qna.yaml").write_text("x: 1\n")  # outside the three roots
    diff = taxonomy_diff(root, "empty")
    assert diff.changed == tuple(sorted((A, C, F)))
    assert diff.near_misses == ("compositional_skills/writing/x/qna.yml", "compositional_skills/writing/y/QNA.yaml")


def test_near_miss_names_in_a_diff(repo: Path) -> None:
    p = repo / "compositional_skills/writing/typo/qna.yml"
    p.parent.mkdir(parents=True)
    p.write_text("x: 1\n")
    diff = taxonomy_diff(repo, "main")
    assert diff.changed == ()
    assert diff.near_misses == ("compositional_skills/writing/typo/qna.yml",)


def test_not_a_git_repo(tmp_path: Path) -> None:
    write_leaf(tmp_path, A)
    with pytest.raises(TaxonomyError, match="not a git repository"):
        taxonomy_diff(tmp_path, "main")
    assert taxonomy_diff(tmp_path, None).changed == (A,)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="sdg taxonomy init"):
        taxonomy_diff(tmp_path / "nope", "main")


def test_unrelated_history(repo: Path) -> None:
    git(repo, "checkout", "-q", "--orphan", "other")
    git(repo, "commit", "-q", "-m", "orphan")
    git(repo, "checkout", "-q", "-b", "work", "main")
    with pytest.raises(TaxonomyError, match="share no history"):
        taxonomy_diff(repo, "other")


def test_hostile_ref_is_not_an_option(repo: Path) -> None:
    with pytest.raises(TaxonomyError):
        taxonomy_diff(repo, "--output=/tmp/pwned")
    assert not Path("/tmp/pwned").exists()


def test_repo_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_leaf(root, A)
    diff = taxonomy_diff(root, None)
    assert diff.changed == (A,)
