"""Leaf loading: typed records per kind, stable ids, file-safe names, chunks from the skeleton's documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from sdg.errors import ValidationFailed
from sdg.taxonomy.diff import taxonomy_diff
from sdg.taxonomy.init import init_taxonomy
from sdg.taxonomy.leaves import (FoundationalSkillLeaf, FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf,
                                 file_safe_name, leaf_id, load_leaves, with_chunks)
from tests.conftest import write_leaf


def test_kinds_ids_and_names(tmp_path: Path) -> None:
    root = tmp_path
    write_leaf(root, "compositional_skills/writing/freeform/haiku/qna.yaml", "freeform")
    write_leaf(root, "compositional_skills/extraction/grounded/notes/qna.yaml", "grounded")
    write_leaf(root, "foundational_skills/reasoning/units/qna.yaml", "foundational")
    write_leaf(root, "knowledge/science/eclipses/qna.yaml", "knowledge")
    rels = taxonomy_diff(root, "empty").changed
    leaves, result = load_leaves(root, rels)
    assert result.ok
    by_kind = {leaf.kind: leaf for leaf in leaves}
    assert set(by_kind) == {"freeform_skill", "grounded_skill", "foundational_skill", "knowledge"}
    ff = by_kind["freeform_skill"]
    assert isinstance(ff, FreeformSkillLeaf) and ff.id == "compositional_skills->writing->freeform->haiku"
    assert len(ff.seeds) == 5 and all(s.context is None for s in ff.seeds)
    gr = by_kind["grounded_skill"]
    assert isinstance(gr, GroundedSkillLeaf) and all(s.context for s in gr.seeds)
    fo = by_kind["foundational_skill"]
    assert isinstance(fo, FoundationalSkillLeaf) and not fo.grounded and fo.path.startswith("foundational_skills/")
    kn = by_kind["knowledge"]
    assert isinstance(kn, KnowledgeLeaf) and kn.domain == "astronomy" and len(kn.seeds) == 5
    assert all(len(s.qna) == 3 for s in kn.seeds) and kn.document is not None
    assert kn.document.patterns == ("*.md",)
    names = [leaf.name for leaf in leaves]
    assert len(set(names)) == 4 and all("/" not in n and " " not in n for n in names)


def test_load_leaves_refuses_invalid_files_with_all_findings(tmp_path: Path) -> None:
    write_leaf(tmp_path, "compositional_skills/a/qna.yaml")
    bad = tmp_path / "compositional_skills/b/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: x\n")
    with pytest.raises(ValidationFailed) as err:
        load_leaves(tmp_path, ["compositional_skills/a/qna.yaml", "compositional_skills/b/qna.yaml"])
    assert "1 of 2" in str(err.value) and len(err.value.findings) >= 2


def test_names_that_collide_in_instructlab_do_not_here() -> None:
    a = leaf_id(("compositional_skills", "a", "b_c", "qna.yaml"))
    b = leaf_id(("compositional_skills", "a_b", "c", "qna.yaml"))
    assert a != b
    assert a.replace("->", "_") == b.replace("->", "_")  # InstructLab's file name collides
    assert file_safe_name(a) != file_safe_name(b)
    assert file_safe_name(a).startswith("compositional_skills_a_b_c-")


@given(st.lists(st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s and "\0" not in s), min_size=1, max_size=6))
def test_file_safe_names_are_safe_and_stable(parts: list[str]) -> None:
    lid = "->".join(parts)
    name = file_safe_name(lid)
    assert name == file_safe_name(lid)
    assert len(name.encode()) <= 140 and "/" not in name and name not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def test_skeleton_knowledge_leaf_gets_chunks_from_its_pinned_commit(tmp_path: Path) -> None:
    result = init_taxonomy(tmp_path / "tax")
    assert result.action == "created" and result.documents_repo is not None
    leaves, _ = load_leaves(result.path, list(taxonomy_diff(result.path, "empty").changed))
    kn = next(leaf for leaf in leaves if isinstance(leaf, KnowledgeLeaf))
    chunked = with_chunks(kn, tmp_path / "cache", max_tokens=200, overlap_tokens=20)
    assert len(chunked.chunks) >= 3
    assert all(c.tokens <= 200 + 20 for c in chunked.chunks)
    text = " ".join(c.text for c in chunked.chunks)
    assert "saros" in text and "umbra" in text
    assert with_chunks(kn, tmp_path / "cache", max_tokens=200, overlap_tokens=20).chunks == chunked.chunks
