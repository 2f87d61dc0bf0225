"""`preprocessed_<ds>/<leaf>.jsonl`: the rows a leaf's pipeline starts from, in InstructLab's columns.

Skills: one row per seed. Knowledge: one row per (chunk, seed), chunk-major as InstructLab orders them,
with the seed's three Q&A pairs spread over `icl_query_1..3` / `icl_response_1..3`.
"""

from __future__ import annotations

from typing import Union

from sdg.pipeline.types import Row
from sdg.taxonomy.leaves import FoundationalSkillLeaf, FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf, Leaf

ICL_PAIRS = 3
SkillLeaf = Union[FreeformSkillLeaf, GroundedSkillLeaf, FoundationalSkillLeaf]


def leaf_node_type(leaf: Leaf) -> str:
    """InstructLab's `leaf_node_type`; foundational leaves run as freeform or grounded skills."""
    if isinstance(leaf, KnowledgeLeaf):
        return "knowledge"
    if isinstance(leaf, GroundedSkillLeaf) or (isinstance(leaf, FoundationalSkillLeaf) and leaf.grounded):
        return "grounded_skill"
    return "freeform_skill"


def _skill_rows(leaf: SkillLeaf) -> list[Row]:
    kind = leaf_node_type(leaf)
    rows = []
    for seed in leaf.seeds:
        row: Row = {"task_description": leaf.task_description, "seed_question": seed.question,
                    "seed_response": seed.answer}
        if kind == "grounded_skill":
            row["seed_context"] = seed.context or ""
        row["leaf_node_type"] = kind
        row["leaf_node_path"] = leaf.id
        rows.append(row)
    return rows


def _knowledge_rows(leaf: KnowledgeLeaf) -> list[Row]:
    rows = []
    for chunk in leaf.chunks:
        for seed in leaf.seeds:
            row: Row = {"document": chunk.text, "icl_document": seed.context,
                        "document_outline": leaf.document_outline, "domain": leaf.domain,
                        "leaf_node_type": "knowledge"}
            for k in range(ICL_PAIRS):
                qa = seed.qna[k] if k < len(seed.qna) else None
                row[f"icl_query_{k + 1}"] = qa.question if qa else ""
                row[f"icl_response_{k + 1}"] = qa.answer if qa else ""
            row["leaf_node_path"] = leaf.id
            rows.append(row)
    return rows


def preprocessed_rows(leaf: Leaf) -> list[Row]:
    if isinstance(leaf, KnowledgeLeaf):
        return _knowledge_rows(leaf)
    return _skill_rows(leaf)
