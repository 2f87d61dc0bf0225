"""RAFT-style context for phase-2 knowledge samples: the question arrives among distractor documents.

Retrieval Augmented Fine-Tuning (arXiv:2403.10131): with probability `p` the golden document (the one
the answer came from) is among the documents, otherwise only distractors are, so the model learns both
to use the right passage and to answer from memory. Distractors are other chunks of the same leaf, never
another leaf's. The user turn is InstructLab's: up to four `"Document:\\n<doc>\\n\\n"` blocks joined by
newlines, then `"\\n\\n"` and the question.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

RAFT_P = 0.4
DOCS_IN_CONTEXT = 4


def distractor_pool(chunk_texts: Iterable[str], row_documents: Iterable[str]) -> list[str]:
    """Unique non-blank documents of one leaf, chunks first, in first-seen order."""
    seen: dict[str, None] = {}
    for doc in (*chunk_texts, *row_documents):
        if doc and doc.strip() and doc not in seen:
            seen[doc] = None
    return list(seen)


def pick_documents(golden: str, exclude: Sequence[str], pool: Sequence[str], rng: random.Random, *,
                   p: float = RAFT_P, k: int = DOCS_IN_CONTEXT) -> tuple[list[str], bool]:
    """(documents in prompt order, golden included?). `exclude` holds every form of the golden document
    (rewritten and raw), so it never reappears as its own distractor. With no distractor at all the
    golden document alone is used."""
    want = k - 1 if rng.random() < p else k
    golden_in = want == k - 1
    # Draw a few extra so that dropping the excluded ones still leaves `want` (cost O(k), not O(pool)).
    draw = rng.sample(range(len(pool)), min(len(pool), want + len(exclude)))
    distractors = [pool[i] for i in draw if pool[i] not in exclude and pool[i] != golden][:want]
    if not distractors:
        return [golden], True
    docs = distractors + [golden] if golden_in else distractors
    rng.shuffle(docs)
    return docs, golden_in


def raft_user_turn(docs: Sequence[str], question: str) -> str:
    blocks = "\n".join(f"Document:\n{doc}\n\n" for doc in docs)
    return f"{blocks}\n\n{question}"
