"""A knowledge leaf's two node datasets: `<leaf>_p07.jsonl` (LAB phase 1) and `<leaf>_p10.jsonl` (phase 2).

p07 = knowledge QA records (`user: "<document>\\n\\n<question>"`, `unmask: true` so the document itself is
trained on) + auxiliary records. p10 = a RAFT copy of every QA record (`unmask: false`), then the p07 QA
records again (`unmask: true`), then the auxiliary records (`unmask: false`). `metadata` is a JSON
string: `{sdg_document, domain, dataset, raw_document?, dataset_type?}`, as InstructLab writes it.

Auxiliary records exist only when the pipeline rewrote documents (rows with a `dataset_type` other
than `base_document`): one per unique rewritten document, `user: "<raw_document>\\n\\n<instruction>"`,
`assistant: <rewritten document>`. The instructions are ours, one list per dataset type; a type without
a list gets no auxiliary records (reported) rather than a wrong instruction.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from sdg.output.row_fields import has_qa, text
from sdg.output.ids import IdMaker
from sdg.output.raft import RAFT_P, distractor_pool, pick_documents, raft_user_turn
from sdg.pipeline.types import Row

Record = dict[str, Any]
QA_DATASET = "document_knowledge_qa"
BASE_DOCUMENT = "base_document"

AUXILIARY_INSTRUCTIONS: Mapping[str, tuple[str, ...]] = {
    "spellcheck": (
        "Correct the spelling and grammar of the document above and return the corrected document.",
        "Return the document above with every spelling and grammar mistake fixed.",
        "Proofread the document above: fix its spelling and grammar, change nothing else.",
    ),
    "detailed_summary": (
        "Write a detailed summary of the document above.",
        "Summarize the document above thoroughly, keeping every important point.",
    ),
    "extractive_summary": (
        "Summarize the document above using sentences taken from it.",
        "Write an extractive summary of the document above.",
    ),
    "atomic_facts": (
        "List the individual facts stated in the document above.",
        "Break the document above down into short, self-contained facts.",
    ),
}


@dataclass(frozen=True)
class KnowledgeDatasets:
    """The records of one knowledge leaf's p07 and p10 files, and what a report should mention."""

    p07: tuple[Record, ...]
    p10: tuple[Record, ...]
    qa_rows: int
    distractor_documents: int  # unique documents of the leaf available as distractors
    unknown_dataset_types: tuple[str, ...]


def _document(row: Mapping[str, Any]) -> str:
    return text(row, "document") or text(row, "raw_document")


def _qa_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    md: dict[str, Any] = {"sdg_document": _document(row), "domain": text(row, "domain"), "dataset": QA_DATASET}
    if "raw_document" in row and "dataset_type" in row:
        md.update(raw_document=text(row, "raw_document"), dataset_type=text(row, "dataset_type"))
    return md


def _record(user: str, assistant: str, metadata: Mapping[str, Any], unmask: bool, ids: IdMaker) -> Record:
    record: Record = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
                      "metadata": json.dumps(metadata, ensure_ascii=False, default=str)}
    record["id"] = ids({**record, "unmask": unmask})
    record["unmask"] = unmask
    return record


def _auxiliary(rows: Sequence[Row], rng: random.Random, ids: IdMaker) -> tuple[list[Record], list[str]]:
    out: list[Record] = []
    unknown: dict[str, None] = {}
    seen: set[str] = set()
    for row in rows:
        kind = text(row, "dataset_type")
        doc, raw = text(row, "document"), text(row, "raw_document")
        if not kind or kind == BASE_DOCUMENT or not raw.strip() or not doc.strip() or doc in seen:
            continue
        seen.add(doc)
        instructions = AUXILIARY_INSTRUCTIONS.get(kind)
        if not instructions:
            unknown[kind] = None
            continue
        md = {"dataset_type": kind, "raw_document": raw, "dataset": f"document_{kind}", "domain": text(row, "domain")}
        out.append(_record(f"{raw}\n\n{rng.choice(instructions)}", doc, md, True, ids))
    return out, list(unknown)


def knowledge_datasets(leaf_id: str, chunk_texts: Iterable[str], rows: Sequence[Row], *,
                       seed: int) -> KnowledgeDatasets:
    """Both phase datasets of one leaf; deterministic given `seed` (RAFT draws, instructions, ids)."""
    usable = [r for r in rows if has_qa(r)]
    qa_ids, raft_ids, aux_ids = IdMaker(seed, "knowledge_qa"), IdMaker(seed, "knowledge_raft"), IdMaker(seed, "aux")
    qa = [_record(f"{_document(r)}\n\n{text(r, 'question')}", text(r, "response"), _qa_metadata(r), True, qa_ids)
          for r in usable]
    aux, unknown = _auxiliary(rows, random.Random(f"{seed}\x00auxiliary\x00{leaf_id}"), aux_ids)

    pool = distractor_pool(chunk_texts, (text(r, "raw_document") or _document(r) for r in usable))
    rng = random.Random(f"{seed}\x00raft\x00{leaf_id}")
    raft = []
    for r in usable:
        golden = _document(r)
        docs, _ = pick_documents(golden, (golden, text(r, "raw_document")), pool, rng)
        md = _qa_metadata(r)
        md["dataset"] += f"_raft_p{RAFT_P}"
        raft.append(_record(raft_user_turn(docs, text(r, "question")), text(r, "response"), md, False, raft_ids))
    p10_aux = [{**a, "unmask": False} for a in aux]
    return KnowledgeDatasets(p07=tuple(qa + aux), p10=tuple(raft + qa + p10_aux), qa_rows=len(qa),
                             distractor_documents=len(pool), unknown_dataset_types=tuple(unknown))
