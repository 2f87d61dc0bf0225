"""A pipeline's inputs: which pipeline a leaf runs, the rows it starts from, and the columns every
input row carries per kind (the contract between planner, pipelines and the preprocessed outputs).

The loader checks each pipeline against INPUT_COLUMNS, so a prompt that names a column nobody provides
fails when the pipeline loads, not halfway through a run. Columns starting with `_` are scratch space
for blocks (rendered examples, for instance) and never reach the output rows.
"""

from __future__ import annotations

from typing import Sequence

from sdg.pipeline.types import Row
from sdg.taxonomy.leaves import (FoundationalSkillLeaf, FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf, Leaf,
                                 SkillSeed)

KINDS = ("knowledge", "freeform_skill", "grounded_skill")

# kind -> the YAML file that defines its pipeline (InstructLab's file names)
KIND_FILES = {
    "knowledge": "knowledge.yaml",
    "freeform_skill": "freeform_skills.yaml",
    "grounded_skill": "grounded_skills.yaml",
}

COMMON = frozenset({"leaf_node_path", "leaf_node_type", "target_samples"})
_SKILL = frozenset({"task_description", "seed_question", "seed_response", "icl_examples"})
_KNOWLEDGE = frozenset({"document", "icl_document", "document_outline", "domain",
                        "icl_query_1", "icl_query_2", "icl_query_3",
                        "icl_response_1", "icl_response_2", "icl_response_3"})

INPUT_COLUMNS: dict[str, frozenset[str]] = {
    "freeform_skill": COMMON | _SKILL,
    "grounded_skill": COMMON | _SKILL | {"seed_context"},
    "knowledge": COMMON | _KNOWLEDGE,
}

SCRATCH_PREFIX = "_"
# The engine's column on a unit's row: how many rows the unit may keep (its leaf's remaining need when it
# starts; a scratch column, so it never reaches an output row). `cap: target_samples` blocks keep up to it.
LEAF_NEED = "_leaf_need"


def is_scratch(column: str) -> bool:
    return column.startswith(SCRATCH_PREFIX)


ICL_EXAMPLES = 2  # other seeds shown as examples in a skill row's prompt


def pipeline_kind(leaf: Leaf) -> str:
    """Which pipeline a leaf runs: foundational leaves use the freeform/grounded skill pipelines."""
    if isinstance(leaf, KnowledgeLeaf):
        return "knowledge"
    if isinstance(leaf, GroundedSkillLeaf) or (isinstance(leaf, FoundationalSkillLeaf) and leaf.grounded):
        return "grounded_skill"
    return "freeform_skill"


def _skill_rows(leaf: FreeformSkillLeaf | GroundedSkillLeaf | FoundationalSkillLeaf, kind: str) -> list[Row]:
    rows = []
    seeds: Sequence[SkillSeed] = leaf.seeds
    for i, seed in enumerate(seeds):
        others = [s for j, s in enumerate(seeds) if j != i][:ICL_EXAMPLES]
        row: Row = {"leaf_node_path": leaf.id, "leaf_node_type": kind, "task_description": leaf.task_description,
                    "seed_question": seed.question, "seed_response": seed.answer,
                    "icl_examples": [{"question": s.question, "answer": s.answer,
                                      **({"context": s.context} if s.context else {})} for s in others]}
        if kind == "grounded_skill":
            row["seed_context"] = seed.context or ""
        rows.append(row)
    return rows


def _knowledge_rows(leaf: KnowledgeLeaf) -> list[Row]:
    rows = []
    for chunk in leaf.chunks:
        for seed in leaf.seeds:
            row: Row = {"leaf_node_path": leaf.id, "leaf_node_type": "knowledge", "document": chunk.text,
                        "icl_document": seed.context, "document_outline": leaf.document_outline, "domain": leaf.domain}
            for k in range(3):
                qa = seed.qna[k] if k < len(seed.qna) else None
                row[f"icl_query_{k + 1}"] = qa.question if qa else ""
                row[f"icl_response_{k + 1}"] = qa.answer if qa else ""
            rows.append(row)
    return rows


def input_rows(leaf: Leaf) -> list[Row]:
    """The rows a leaf's pipeline starts from (InstructLab's preprocessed rows, same columns)."""
    if isinstance(leaf, KnowledgeLeaf):
        return _knowledge_rows(leaf)
    return _skill_rows(leaf, pipeline_kind(leaf))
