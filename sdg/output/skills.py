"""`node_datasets_<ds>/<skill leaf>.jsonl`: a skill leaf's samples in the messages format.

As in InstructLab every generated column stays (the mixer folds them into `metadata` later) and
`id`, `messages` = [system, user, assistant] and `unmask: false` are added. Two differences: engine
columns (`_...`) go into a `metadata` JSON string instead of the top level, so they can never reach a
training record's top level; and a grounded sample's user turn is `context + "\\n\\n" + question`
(InstructLab's grounded pipeline has already glued the context into `question`; ours keeps it apart).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from sdg.output.row_fields import TRAINING_KEYS, has_qa, split_engine_columns, text
from sdg.output.ids import IdMaker
from sdg.pipeline.types import Row

Record = dict[str, Any]


def skill_user_turn(row: Row) -> str:
    question = text(row, "question").strip()
    context = text(row, "context").strip()
    if context and context not in question:
        return f"{context}\n\n{question}"
    return question


def skill_node_records(rows: Iterable[Row], *, system_prompt: str, seed: int) -> list[Record]:
    """One record per usable row (non-blank question and response), in the rows' order."""
    ids = IdMaker(seed, "skill")
    out = []
    for row in rows:
        if not has_qa(row):
            continue
        public, engine = split_engine_columns(row)
        for key in TRAINING_KEYS:  # a pipeline column named like ours must not be overwritten silently
            if key in public:
                engine[key] = public.pop(key)
        record: Record = {**public, "metadata": json.dumps(engine, ensure_ascii=False, default=str)}
        record["messages"] = [{"content": system_prompt, "role": "system"},
                              {"content": skill_user_turn(row), "role": "user"},
                              {"content": text(row, "response").strip(), "role": "assistant"}]
        record["unmask"] = False
        out.append({**record, "id": ids(record)})
    return out
