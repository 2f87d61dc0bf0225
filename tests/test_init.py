"""`init_taxonomy`: the skeleton validates, the example document repo is pinned and reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdg.errors import TaxonomyError, UnsafeSourceError
from sdg.taxonomy.diff import taxonomy_diff
from sdg.taxonomy.init import init_taxonomy
from sdg.taxonomy.validate import ValidationOptions, validate_files
from tests.conftest import git


def test_skeleton_validates_with_documents(tmp_path: Path) -> None:
    result = init_taxonomy(tmp_path / "tax")
    leaves = taxonomy_diff(result.path, "empty").changed
    assert {p.split("/")[0] for p in leaves} == {"compositional_skills", "foundational_skills", "knowledge"}
    report = validate_files([result.path / p for p in leaves], result.path,
                            ValidationOptions(documents=True, documents_cache=tmp_path / "cache"))
    assert report.ok, [f.format() for f in report.findings]
    assert report.warnings == 0
    assert git(result.path, "status", "--porcelain") == ""
    assert git(result.path, "branch", "--show-current").strip() == "main"


def test_example_document_commit_is_reproducible(tmp_path: Path) -> None:
    one = init_taxonomy(tmp_path / "a" / "tax")
    two = init_taxonomy(tmp_path / "b" / "tax")
    assert one.documents_repo and two.documents_repo
    assert git(one.documents_repo, "rev-parse", "HEAD") == git(two.documents_repo, "rev-parse", "HEAD")


def test_init_is_idempotent_and_refuses_files(tmp_path: Path) -> None:
    target = tmp_path / "tax"
    assert init_taxonomy(target).action == "created"
    assert init_taxonomy(target).action == "exists"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TaxonomyError, match="not a directory"):
        init_taxonomy(f)


def test_init_refuses_unsafe_transports(tmp_path: Path) -> None:
    for url in ("ext::sh -c touch% /tmp/sdg-init-pwned", "fd::3", "-uhack", "http://example.com/t.git"):
        with pytest.raises(UnsafeSourceError):
            init_taxonomy(tmp_path / "x", url)
    assert not Path("/tmp/sdg-init-pwned").exists()
    assert not (tmp_path / "x").exists()


def test_clone_failure_is_clear_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError) as err:
        init_taxonomy(tmp_path / "x", str(tmp_path / "no-such-repo"))
    assert "cloning the taxonomy" in str(err.value)
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
