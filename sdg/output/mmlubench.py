"""A knowledge leaf's evaluation files, where and as `ilab data generate` writes them:
`node_datasets_<ds>/mmlubench_<leaf>.jsonl` (multiple-choice questions in lm-eval's MMLU format) and
`node_datasets_<ds>/<leaf>_task.yaml` (the lm-eval task that reads it).

InstructLab asks the teacher for the questions in a separate evaluation pipeline. We have no MCQ block, so
the questions are built from the leaf's own generated question/answer rows, deterministically:

* one question per distinct generated question (first occurrence, plan order; blank ones left out);
* its choices are its own answer plus 3 distractors: answers to OTHER generated questions of the same
  leaf, distinct from the right answer and from each other (compared without case and extra spaces),
  drawn uniformly from the leaf's distinct answers;
* the 4 choices are shuffled; `answer` is the right one's index 0-3 (A-D), as InstructLab's
  class-encoded column ends up in the file, and as lm-eval's `multiple_choice` wants its target.

Every draw comes from one generator seeded with (run seed, leaf id), so the same rows give the same file.
A leaf with fewer than 4 distinct answers cannot fill 4 distinct choices: it gets no evaluation files,
and `write_outputs` says so in its warnings.

Distractors that answer a different question are easier to rule out than the teacher-written ones of
InstructLab's pipeline, so accuracy on these sets reads high; they check that a model learned the leaf's
facts, not how well it tells near-misses apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from sdg.output.atomic import write_jsonl, write_text
from sdg.output.row_fields import has_qa, text
from sdg.pipeline.types import Row

CHOICES = 4
LETTERS = "ABCD"
DATASET_TYPE = "mcq_qa"
TASK_TAG = "mmlu_pr"  # InstructLab's tag: `lm_eval --tasks mmlu_pr` runs every leaf's task
# lm-eval's MMLU prompt: the question, the lettered choices, "Answer:"; the target is the index of the right one.
DOC_TO_TEXT = ("{{question.strip()}}\n" + "".join(f"{c}. {{{{choices[{i}]}}}}\n" for i, c in enumerate(LETTERS))
               + "Answer:")
DOC_TO_CHOICE = "{{[" + ", ".join(f"choices[{i}]" for i in range(CHOICES)) + "]}}"
DOC_TO_TARGET = "{{answer}}"

Record = dict[str, Any]


@dataclass(frozen=True)
class McqSet:
    """One leaf's multiple-choice records, or why it has none."""

    records: tuple[Record, ...]
    distinct_answers: int
    skipped: str | None = None  # the reason there are no records (for a warning)


def _key(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def mcq_records(leaf_id: str, domain: str, rows: Sequence[Row], *, seed: int) -> McqSet:
    """The leaf's MCQs from its generated rows (see the module docstring for the construction)."""
    items: list[tuple[str, str, Row]] = []  # (question, right answer, row)
    seen_questions: set[str] = set()
    pool: list[str] = []  # distinct answers, first spelling seen
    pool_keys: list[str] = []
    known: set[str] = set()
    for row in rows:
        if not has_qa(row):
            continue
        question, answer = text(row, "question").strip(), text(row, "response").strip()
        k = _key(answer)
        if k not in known:
            known.add(k)
            pool.append(answer)
            pool_keys.append(k)
        if _key(question) in seen_questions:
            continue
        seen_questions.add(_key(question))
        items.append((question, answer, row))
    if len(pool) < CHOICES:
        return McqSet((), len(pool), f"{len(pool)} distinct generated answers, {CHOICES} needed for a multiple-choice "
                                     "question: no mmlubench file or task yaml")
    rng = random.Random(f"{seed}\x00mmlubench\x00{leaf_id}")
    records: list[Record] = []
    for question, answer, row in items:
        right = _key(answer)
        picked: list[int] = []
        while len(picked) < CHOICES - 1:  # >= 3 other distinct answers exist, so this ends
            i = rng.randrange(len(pool))
            if pool_keys[i] != right and i not in picked:
                picked.append(i)
        choices = [answer, *(pool[i] for i in picked)]
        order = list(range(CHOICES))
        rng.shuffle(order)
        records.append({"question": question, "choices": [choices[i] for i in order], "answer": order.index(0),
                        "subject": text(row, "domain") or domain, "dataset_type": DATASET_TYPE,
                        "document": text(row, "raw_document") or text(row, "document"),
                        "leaf_node_path": leaf_id})
    return McqSet(tuple(records), len(pool))


def task_config(task_name: str, data_file: Path) -> dict[str, Any]:
    """The lm-eval task that evaluates `data_file` (absolute, as InstructLab writes it: lm-eval hands the
    path to `datasets.load_dataset("json", ...)`, which reads a relative one from the current directory)."""
    return {
        "task": task_name,
        "tag": TASK_TAG,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).absolute())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": DOC_TO_CHOICE,
        "doc_to_target": DOC_TO_TARGET,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def write_eval_task(data_file: Path, task_file: Path, task_name: str, mcq: McqSet) -> int:
    """Write the MCQ jsonl and its task yaml (both atomically); returns the number of questions."""
    n = write_jsonl(data_file, mcq.records)
    write_text(task_file, yaml.safe_dump(task_config(task_name, data_file), sort_keys=False, allow_unicode=True,
                                         width=1000))
    return n
