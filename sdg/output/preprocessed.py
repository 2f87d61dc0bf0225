"""`preprocessed_<ds>/<leaf>.jsonl`: the rows a leaf's pipeline starts from, in InstructLab's columns.

Skills: one row per seed. Knowledge: one row per (chunk, seed), chunk-major as InstructLab orders them,
with the seed's three Q&A pairs spread over `icl_query_1..3` / `icl_response_1..3`. The rows are the
planner's own input rows (one definition), less the columns only our prompts use.
"""

from __future__ import annotations

from sdg.pipeline.inputs import input_rows
from sdg.pipeline.types import Row
from sdg.taxonomy.leaves import Leaf

PROMPT_ONLY_COLUMNS = frozenset({"icl_examples"})


def preprocessed_rows(leaf: Leaf) -> list[Row]:
    return [{k: v for k, v in row.items() if k not in PROMPT_ONLY_COLUMNS} for row in input_rows(leaf)]
