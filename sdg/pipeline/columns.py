"""The columns the engine's planner puts in every input row, per leaf kind.

The loader checks each pipeline against these, so a prompt that names a column nobody provides fails
when the pipeline loads, not halfway through a run. Columns starting with `_` are scratch space for
blocks (rendered examples, for instance) and never reach the output rows.
"""

from __future__ import annotations

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


def is_scratch(column: str) -> bool:
    return column.startswith(SCRATCH_PREFIX)
