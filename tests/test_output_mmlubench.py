"""Knowledge evaluation files as `ilab data generate` writes them: `node_datasets_<ds>/mmlubench_<leaf>.jsonl`
(lm-eval's multiple-choice format) and `<leaf>_task.yaml` (the lm-eval task reading it), built from the
leaf's generated question/answer rows; deterministic; a leaf with too few distinct answers is skipped
with a warning."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sdg.output.instructlab import write_outputs
from sdg.output.mmlubench import mcq_records, task_config
from tests.test_output_writer import ASTRO, BOTANY, FREEFORM, GENERATED, LEAVES, STAMP, SYS, _knowledge, _knowledge_rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _render(template: str, doc: dict[str, Any]) -> str:
    """lm-eval renders these fields with Jinja; the expressions used here are plain Python expressions too
    (`question.strip()`, `choices[0]`, a list of them, `answer`), so evaluating each `{{...}}` is the same."""
    return re.sub(r"\{\{(.*?)\}\}", lambda m: str(eval(m.group(1), {}, dict(doc))), template, flags=re.S)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    return d, write_outputs(d, STAMP, LEAVES, GENERATED, system_prompt=SYS, seed=42)


def test_every_knowledge_leaf_gets_its_mcq_file_and_task_in_node_datasets(run) -> None:
    d, out = run
    for leaf in (ASTRO, BOTANY):
        lo = out.leaf(leaf.id)
        assert lo.mmlubench == d / f"node_datasets_{STAMP}" / f"mmlubench_{leaf.name}.jsonl"
        assert lo.eval_task == d / f"node_datasets_{STAMP}" / f"{leaf.name}_task.yaml"
        assert lo.mmlubench.is_file() and lo.eval_task.is_file()
        assert lo.mmlubench_rows == len(_jsonl(lo.mmlubench)) > 0
    assert out.leaf(FREEFORM.id).mmlubench is None and not list(d.rglob(f"*{FREEFORM.name}_task.yaml"))


def test_records_are_four_distinct_choices_with_a_valid_answer_index(run) -> None:
    _, out = run
    for leaf in (ASTRO, BOTANY):
        rows = GENERATED[leaf.id]
        answer_of = {r["question"]: r["response"] for r in rows}
        leaf_answers = {r["response"] for r in rows}
        records = _jsonl(out.leaf(leaf.id).mmlubench)
        assert len(records) == len(answer_of)  # one per distinct generated question
        for rec in records:
            assert {"question", "choices", "answer", "subject", "dataset_type"} <= set(rec)
            assert rec["dataset_type"] == "mcq_qa" and rec["subject"] == leaf.domain
            assert len(rec["choices"]) == 4 and len(set(rec["choices"])) == 4
            assert isinstance(rec["answer"], int) and 0 <= rec["answer"] <= 3
            assert rec["choices"][rec["answer"]] == answer_of[rec["question"]]  # the right answer is marked
            assert set(rec["choices"]) <= leaf_answers  # distractors: answers of the same leaf only
            assert not any(k.startswith("_") for k in rec)  # no engine columns
        # the right answer is not always in the same place
        assert len({rec["answer"] for rec in records}) > 1


def test_task_yaml_loads_names_the_jsonl_and_renders_as_lm_eval_would(run) -> None:
    _, out = run
    for leaf in (ASTRO, BOTANY):
        lo = out.leaf(leaf.id)
        task = yaml.safe_load(lo.eval_task.read_text(encoding="utf-8"))
        assert task["task"] == leaf.name and task["tag"] == "mmlu_pr"
        assert task["dataset_path"] == "json" and task["test_split"] == "test"
        assert task["output_type"] == "multiple_choice"
        assert Path(task["dataset_kwargs"]["data_files"]["test"]) == lo.mmlubench.absolute()
        assert [m["metric"] for m in task["metric_list"]] == ["acc"]
        for doc in _jsonl(lo.mmlubench):
            prompt = _render(task["doc_to_text"], doc)
            choices = ast.literal_eval(_render(task["doc_to_choice"], doc))
            target = _render(task["doc_to_target"], doc)
            assert choices == doc["choices"] and target.isdigit() and int(target) == doc["answer"]
            assert prompt.startswith(doc["question"]) and prompt.endswith("Answer:")
            assert all(f"{letter}. {c}" in prompt for letter, c in zip("ABCD", choices))


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    rows = GENERATED[ASTRO.id]
    a = mcq_records(ASTRO.id, ASTRO.domain, rows, seed=1)
    assert a == mcq_records(ASTRO.id, ASTRO.domain, rows, seed=1)
    b = mcq_records(ASTRO.id, ASTRO.domain, rows, seed=2)
    assert [r["question"] for r in a.records] == [r["question"] for r in b.records]
    assert [r["choices"] for r in a.records] != [r["choices"] for r in b.records]


def test_blank_and_duplicate_rows_and_answers_that_differ_only_in_spacing() -> None:
    base = {"domain": "d", "document": "doc"}
    rows = [{**base, "question": f"q{i}", "response": f"answer {i}"} for i in range(4)]
    rows += [{**base, "question": "q0", "response": "answer 0"},  # duplicate question: one MCQ
             {**base, "question": "q4", "response": "  ANSWER   1 "},  # the same answer as q1's
             {**base, "question": "  ", "response": "blank question"}]
    mcq = mcq_records("knowledge->x", "d", rows, seed=0)
    assert mcq.skipped is None and mcq.distinct_answers == 4
    assert [r["question"] for r in mcq.records] == ["q0", "q1", "q2", "q3", "q4"]
    q4 = mcq.records[-1]
    assert q4["choices"][q4["answer"]] == "ANSWER   1"
    assert "answer 1" not in q4["choices"]  # never a second right answer among the distractors


def test_a_leaf_with_fewer_than_four_distinct_answers_is_skipped_with_a_warning(tmp_path: Path) -> None:
    small = _knowledge("knowledge->small", "SMALL", chunks=1, seeds=1)
    rows = _knowledge_rows(small, 3)
    out = write_outputs(tmp_path, STAMP, [small], {small.id: rows}, system_prompt=SYS)
    lo = out.leaf(small.id)
    assert lo.mmlubench is None and lo.eval_task is None
    assert not list(tmp_path.rglob("mmlubench_*")) and not list(tmp_path.rglob("*_task.yaml"))
    assert any(w.leaf_id == small.id and "3 distinct generated answers, 4 needed" in str(w) for w in out.warnings)
    # with more answers it gets its files; written again with fewer, the stale ones go
    more = _knowledge_rows(small, 5)
    assert write_outputs(tmp_path, STAMP, [small], {small.id: more}, system_prompt=SYS).leaf(small.id).mmlubench
    write_outputs(tmp_path, STAMP, [small], {small.id: rows}, system_prompt=SYS)
    assert not list(tmp_path.rglob("mmlubench_*")) and not list(tmp_path.rglob("*_task.yaml"))


def test_task_config_names_an_absolute_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = task_config("t", Path("node_datasets_x/mmlubench_t.jsonl"))
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "node_datasets_x/mmlubench_t.jsonl")
