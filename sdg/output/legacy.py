"""The legacy files `test_<ds>`, `train_<ds>` and `messages_<ds>`, still read by `ilab model train`'s
legacy (Linux/macOS) trainers and by review bots.

Records: test and train are `{system, user, assistant}`; messages is `{messages: [user, assistant],
metadata: "{\"system\": ...}"}` with metadata a JSON *string*, as InstructLab writes it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from sdg.output.row_fields import text
from sdg.taxonomy.leaves import KnowledgeLeaf, Leaf

Record = dict[str, Any]


def _triple(system_prompt: str, user: str, assistant: str) -> Record:
    return {"system": system_prompt, "user": user.strip(), "assistant": assistant.strip()}


def seed_test_records(leaf: Leaf, system_prompt: str) -> list[Record]:
    """The leaf's own seed examples. Knowledge: one record per seed Q&A (`question + "\\n" + context`);
    InstructLab repeats these once per document chunk, which only inflates the file."""
    if isinstance(leaf, KnowledgeLeaf):
        return [_triple(system_prompt, f"{qa.question}\n{seed.context}", qa.answer)
                for seed in leaf.seeds for qa in seed.qna]
    out = []
    for seed in leaf.seeds:
        user = f"{seed.question}\n{seed.context}" if seed.context else seed.question
        out.append(_triple(system_prompt, user, seed.answer))
    return out


def train_record(row: Mapping[str, Any], system_prompt: str) -> Optional[Record]:
    """`user = question [+ "\\n" + context]`, `assistant = response`; None when either is blank.
    Knowledge rows carry no `context` column, so their document is not included (as in InstructLab)."""
    user = text(row, "question")
    context = text(row, "context")
    if context and context.strip() not in user:  # a question that already quotes its context keeps it once
        user = f"{user}\n{context}"
    record = _triple(system_prompt, user, text(row, "response"))
    if not text(row, "question").strip() or not record["assistant"]:
        return None
    return record


def messages_record(train: Mapping[str, Any]) -> Record:
    """The same sample in the messages format, the system prompt kept in the metadata string."""
    return {"messages": [{"content": train["user"], "role": "user"},
                         {"content": train["assistant"], "role": "assistant"}],
            "metadata": json.dumps({"system": train["system"]}, ensure_ascii=False)}
