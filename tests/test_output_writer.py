"""write_outputs: every InstructLab file of a run, with exactly the documented fields, counts and types;
determinism; RAFT distractors from the same leaf only; phase files a training tool can read."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from sdg.output.atomic import atomic_open, write_jsonl
from sdg.output.instructlab import write_outputs
from sdg.output.raft import pick_documents, raft_user_turn
from sdg.taxonomy.chunking import Chunk
from sdg.taxonomy.leaves import (FoundationalSkillLeaf, FreeformSkillLeaf, GroundedSkillLeaf, KnowledgeLeaf,
                                 KnowledgeSeed, QnA, SkillSeed, file_safe_name)

STAMP = "2026-11-25T16_10_00"
SYS = "You are a careful test assistant."


# ---------------------------------------------------------------- fixtures: leaves and rows by hand

def _base(lid: str) -> dict[str, Any]:
    return dict(id=lid, name=file_safe_name(lid), path="/".join(lid.split("->")) + "/qna.yaml", created_by="t",
                version=3)


FREEFORM = FreeformSkillLeaf(**_base("compositional_skills->writing->haiku"), task_description="Write haiku",
                             seeds=tuple(SkillSeed(f"haiku question {i}", f"haiku answer {i}") for i in range(3)))
GROUNDED = GroundedSkillLeaf(**_base("compositional_skills->extraction->actions"), task_description="Extract",
                             seeds=tuple(SkillSeed(f"extract q{i}", f"extract a{i}", f"meeting notes {i}")
                                         for i in range(2)))
FOUNDATIONAL = FoundationalSkillLeaf(**_base("foundational_skills->reasoning->units"), task_description="Convert",
                                     seeds=(SkillSeed("2 km in m?", "2000 m"),), grounded=False)
EMPTY = FreeformSkillLeaf(**_base("compositional_skills->writing->limerick"), task_description="Limericks",
                          seeds=(SkillSeed("a limerick?", "There once..."),))


def _knowledge(lid: str, tag: str, chunks: int, seeds: int = 2) -> KnowledgeLeaf:
    return KnowledgeLeaf(
        **_base(lid), domain=f"{tag} domain", document_outline=f"{tag} outline",
        seeds=tuple(KnowledgeSeed(f"{tag} seed context {s}",
                                  tuple(QnA(f"{tag} q{s}.{k}", f"{tag} a{s}.{k}") for k in range(3)))
                    for s in range(seeds)),
        chunks=tuple(Chunk(i, f"{tag} chunk {i}: text of the {tag} document.", 9, f"{tag}.md") for i in range(chunks)))


ASTRO = _knowledge("knowledge->science->astronomy", "ASTRO", chunks=6)
BOTANY = _knowledge("knowledge->science->botany", "BOTANY", chunks=3, seeds=1)
LEAVES = [FREEFORM, GROUNDED, FOUNDATIONAL, EMPTY, ASTRO, BOTANY]


def _skill_rows(leaf, n: int, grounded: bool = False) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        seed = leaf.seeds[i % len(leaf.seeds)]
        row: dict[str, Any] = {"leaf_node_path": leaf.id, "leaf_node_type": "grounded_skill" if grounded else
                               "freeform_skill", "task_description": leaf.task_description,
                               "seed_question": seed.question, "seed_response": seed.answer}
        if grounded:
            row["seed_context"] = seed.context
            row["context"] = f"generated context {i} of {leaf.name}"
        row.update(question=f"{leaf.name} question {i}", response=f"{leaf.name} response {i}",
                   judge_quality=2, _unit_id=f"{leaf.name}:u{i // 2}", _scratch="never trained on")
        rows.append(row)
    return rows


def _knowledge_rows(leaf: KnowledgeLeaf, per_chunk: int, rewritten: bool = False) -> list[dict[str, Any]]:
    rows = []
    for c in leaf.chunks:
        seed = leaf.seeds[c.index % len(leaf.seeds)]
        for j in range(per_chunk):
            row: dict[str, Any] = {
                "leaf_node_path": leaf.id, "leaf_node_type": "knowledge", "document": c.text, "raw_document": c.text,
                "icl_document": seed.context, "document_outline": leaf.document_outline, "domain": leaf.domain,
                **{f"icl_query_{k + 1}": qa.question for k, qa in enumerate(seed.qna)},
                **{f"icl_response_{k + 1}": qa.answer for k, qa in enumerate(seed.qna)},
                "question": f"{leaf.name} chunk {c.index} question {j}",
                "response": f"{leaf.name} chunk {c.index} answer {j}", "judge_faithfulness": 1,
                "_unit_id": f"{leaf.name}:c{c.index}"}
            if rewritten:
                spell = j % 2 == 0
                row["dataset_type"] = "spellcheck" if spell else "base_document"
                if spell:
                    row["document"] = c.text.replace("text", "corrected text")
            rows.append(row)
    return rows


GENERATED = {
    FREEFORM.id: _skill_rows(FREEFORM, 7),
    GROUNDED.id: _skill_rows(GROUNDED, 4, grounded=True),
    FOUNDATIONAL.id: _skill_rows(FOUNDATIONAL, 2),
    EMPTY.id: [],
    ASTRO.id: _knowledge_rows(ASTRO, 3, rewritten=True),
    BOTANY.id: _knowledge_rows(BOTANY, 2),
}


def _write(tmp: Path, *, seed: int = 42, leaves=LEAVES, generated=GENERATED):
    return write_outputs(tmp, STAMP, leaves, generated, system_prompt=SYS, seed=seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    return d, _write(d)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- a training-tool-style reader

def check_training_file(path: Path) -> int:
    """What instructlab-training's data processing needs from a phase file: a non-empty JSONL of objects
    with `messages` [{role in system/user/assistant, content str}] and an optional bool `unmask`; and, since
    it loads the file with `datasets.load_dataset("json")`, one schema (same keys and value types) per file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path} is empty: the training tool refuses empty datasets"
    schema = None
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        assert isinstance(rec, dict), f"{path}:{n}"
        msgs = rec["messages"]
        assert isinstance(msgs, list) and msgs, f"{path}:{n}"
        for m in msgs:
            assert set(m) == {"role", "content"}, f"{path}:{n}: {m}"
            assert m["role"] in ("system", "user", "assistant"), f"{path}:{n}"
            assert isinstance(m["content"], str), f"{path}:{n}"
        assert msgs[-1]["role"] == "assistant" and any(m["role"] == "user" for m in msgs), f"{path}:{n}"
        if "unmask" in rec:
            assert isinstance(rec["unmask"], bool), f"{path}:{n}"
        shape = {k: type(v).__name__ for k, v in rec.items()}
        schema = schema or shape
        assert shape == schema, f"{path}:{n}: {shape} != {schema}"
    return len(lines)


def _is_uuid(value: Any) -> bool:
    return isinstance(value, str) and str(uuid.UUID(value)) == value


# ---------------------------------------------------------------- the file set

def test_every_file_of_the_layout_is_written(run) -> None:
    d, out = run
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    expected = {f"{k}_{STAMP}.jsonl" for k in ("test", "train", "messages", "knowledge_train_msgs",
                                                "skills_train_msgs")}
    expected |= {f"knowledge_recipe_{STAMP}.yaml", f"skills_recipe_{STAMP}.yaml"}
    for leaf in LEAVES:
        expected |= {f"preprocessed_{STAMP}/{leaf.name}.jsonl", f"generated_{STAMP}/{leaf.name}.jsonl"}
        if isinstance(leaf, KnowledgeLeaf):
            expected |= {f"node_datasets_{STAMP}/{leaf.name}_p07.jsonl", f"node_datasets_{STAMP}/{leaf.name}_p10.jsonl",
                         f"node_datasets_{STAMP}/mmlubench_{leaf.name}.jsonl", f"node_datasets_{STAMP}/{leaf.name}_task.yaml"}
        else:
            expected.add(f"node_datasets_{STAMP}/{leaf.name}.jsonl")
    assert names == expected
    assert {p.relative_to(d).as_posix() for p in out.paths} == expected
    assert not [p for p in d.rglob("*.tmp")]


def test_preprocessed_rows_are_the_pipeline_inputs(run) -> None:
    _, out = run
    ff = _jsonl(out.leaf(FREEFORM.id).preprocessed)
    assert len(ff) == 3 and all(set(r) == {"task_description", "seed_question", "seed_response", "leaf_node_type",
                                           "leaf_node_path"} for r in ff)
    assert ff[0]["leaf_node_type"] == "freeform_skill" and ff[0]["leaf_node_path"] == FREEFORM.id
    gr = _jsonl(out.leaf(GROUNDED.id).preprocessed)
    assert [r["seed_context"] for r in gr] == ["meeting notes 0", "meeting notes 1"]
    assert gr[0]["leaf_node_type"] == "grounded_skill"
    assert _jsonl(out.leaf(FOUNDATIONAL.id).preprocessed)[0]["leaf_node_type"] == "freeform_skill"
    kn = _jsonl(out.leaf(ASTRO.id).preprocessed)
    assert len(kn) == len(ASTRO.chunks) * len(ASTRO.seeds) == out.leaf(ASTRO.id).input_rows
    cols = {"document", "icl_document", "document_outline", "domain", "leaf_node_type", "leaf_node_path",
            *(f"icl_query_{k}" for k in (1, 2, 3)), *(f"icl_response_{k}" for k in (1, 2, 3))}
    assert all(set(r) == cols for r in kn)
    # chunk-major: every seed for chunk 0, then chunk 1 ...
    assert [r["document"] for r in kn[:2]] == [ASTRO.chunks[0].text] * 2
    assert [r["icl_document"] for r in kn[:2]] == [s.context for s in ASTRO.seeds]
    assert kn[1]["icl_query_3"] == "ASTRO q1.2" and kn[1]["leaf_node_type"] == "knowledge"


def test_generated_files_hold_the_rows_as_received(run) -> None:
    _, out = run
    for leaf in LEAVES:
        assert _jsonl(out.leaf(leaf.id).generated) == GENERATED[leaf.id]
        assert out.leaf(leaf.id).generated_rows == len(GENERATED[leaf.id])


# ---------------------------------------------------------------- legacy files

def test_legacy_test_train_and_messages(run) -> None:
    _, out = run
    test = _jsonl(out.test)
    assert all(set(r) == {"system", "user", "assistant"} and r["system"] == SYS for r in test)
    seeds = sum(len(leaf.seeds) for leaf in LEAVES if not isinstance(leaf, KnowledgeLeaf))
    qas = sum(len(s.qna) for leaf in (ASTRO, BOTANY) for s in leaf.seeds)
    assert len(test) == out.test_rows == seeds + qas
    assert {"system": SYS, "user": "extract q1\nmeeting notes 1", "assistant": "extract a1"} in test
    assert {"system": SYS, "user": "ASTRO q0.1\nASTRO seed context 0", "assistant": "ASTRO a0.1"} in test

    train = _jsonl(out.train)
    assert len(train) == out.train_rows == sum(len(r) for r in GENERATED.values())
    assert all(set(r) == {"system", "user", "assistant"} for r in train)
    g = GENERATED[GROUNDED.id][0]
    assert {"system": SYS, "user": f"{g['question']}\n{g['context']}", "assistant": g["response"]} in train
    k = GENERATED[ASTRO.id][0]
    assert {"system": SYS, "user": k["question"], "assistant": k["response"]} in train  # no document, as ilab

    messages = _jsonl(out.messages)
    assert len(messages) == len(train)
    for m, t in zip(messages, train):
        assert set(m) == {"messages", "metadata"}
        assert m["messages"] == [{"content": t["user"], "role": "user"},
                                 {"content": t["assistant"], "role": "assistant"}]
        assert isinstance(m["metadata"], str) and json.loads(m["metadata"]) == {"system": SYS}


# ---------------------------------------------------------------- node datasets

def test_skill_node_dataset_records(run) -> None:
    _, out = run
    leaf_out = out.leaf(GROUNDED.id)
    recs = _jsonl(leaf_out.node_dataset)
    rows = GENERATED[GROUNDED.id]
    assert len(recs) == leaf_out.node_rows == len(rows)
    public = {k for k in rows[0] if not k.startswith("_")}
    for rec, row in zip(recs, rows):
        assert set(rec) == public | {"id", "messages", "metadata", "unmask"}
        assert not any(k.startswith("_") for k in rec)
        assert rec["unmask"] is False and _is_uuid(rec["id"])
        assert rec["messages"] == [{"content": SYS, "role": "system"},
                                   {"content": f"{row['context']}\n\n{row['question']}", "role": "user"},
                                   {"content": row["response"], "role": "assistant"}]
        assert json.loads(rec["metadata"]) == {"_unit_id": row["_unit_id"], "_scratch": "never trained on"}
        assert rec["judge_quality"] == 2
    ff = _jsonl(out.leaf(FREEFORM.id).node_dataset)
    assert ff[0]["messages"][1]["content"] == GENERATED[FREEFORM.id][0]["question"]
    assert len({r["id"] for r in ff}) == len(ff)


def test_knowledge_p07_records(run) -> None:
    _, out = run
    lo = out.leaf(ASTRO.id)
    rows = GENERATED[ASTRO.id]
    p07 = _jsonl(lo.p07)
    assert lo.p07_rows == len(p07)
    qa, aux = p07[:len(rows)], p07[len(rows):]
    for rec, row in zip(qa, rows):
        assert set(rec) == {"messages", "metadata", "id", "unmask"} and rec["unmask"] is True and _is_uuid(rec["id"])
        assert rec["messages"] == [{"role": "user", "content": f"{row['document']}\n\n{row['question']}"},
                                   {"role": "assistant", "content": row["response"]}]
        md = json.loads(rec["metadata"])
        assert md == {"sdg_document": row["document"], "domain": row["domain"], "dataset": "document_knowledge_qa",
                      "raw_document": row["raw_document"], "dataset_type": row["dataset_type"]}
    # one auxiliary record per unique rewritten document: the raw chunk + an instruction -> the rewrite
    rewritten = {r["document"]: r for r in rows if r["dataset_type"] == "spellcheck"}
    assert len(aux) == len(rewritten) == len(ASTRO.chunks)
    for rec in aux:
        md = json.loads(rec["metadata"])
        assert md["dataset"] == "document_spellcheck" and md["dataset_type"] == "spellcheck"
        assert rec["unmask"] is True and rec["messages"][1]["content"] in rewritten
        assert rec["messages"][0]["content"].startswith(md["raw_document"] + "\n\n")
    # BOTANY rows have no dataset_type: metadata without raw_document/dataset_type, no auxiliary records
    botany = _jsonl(out.leaf(BOTANY.id).p07)
    assert len(botany) == len(GENERATED[BOTANY.id])
    assert set(json.loads(botany[0]["metadata"])) == {"sdg_document", "domain", "dataset"}


def _documents(user: str) -> tuple[list[str], str]:
    blocks, question = user.rsplit("\n\n\n\n", 1)
    docs = [b[len("Document:\n"):] for b in blocks.split("\n\n\n")]
    return [d.rstrip("\n") for d in docs], question


def test_knowledge_p10_is_raft_copies_then_p07(run) -> None:
    _, out = run
    for leaf in (ASTRO, BOTANY):
        lo = out.leaf(leaf.id)
        rows = GENERATED[leaf.id]
        p07, p10 = _jsonl(lo.p07), _jsonl(lo.p10)
        assert len(p10) == lo.p10_rows == len(rows) + len(p07)
        raft, again = p10[:len(rows)], p10[len(rows):]
        qa07 = p07[:len(rows)]
        assert again[:len(rows)] == qa07  # p07 QA again, unmask true
        assert all(r["unmask"] is False for r in again[len(rows):])  # auxiliary: masked in phase 2
        own = {c.text for c in leaf.chunks} | {r["document"] for r in rows}
        other = {c.text for lf in (ASTRO, BOTANY) if lf is not leaf for c in lf.chunks}
        golden_in = 0
        for rec, row in zip(raft, rows):
            assert set(rec) == {"messages", "metadata", "id", "unmask"} and rec["unmask"] is False
            assert json.loads(rec["metadata"])["dataset"] == "document_knowledge_qa_raft_p0.4"
            user = rec["messages"][0]["content"]
            assert user == raft_user_turn(*_documents(user))
            docs, question = _documents(user)
            assert question == row["question"] and rec["messages"][1]["content"] == row["response"]
            assert 1 <= len(docs) <= 4 and len(set(docs)) == len(docs)
            assert set(docs) <= own and not set(docs) & other
            golden = row["document"]
            assert row["raw_document"] not in docs or row["raw_document"] == golden  # no raw twin as distractor
            if golden in docs:
                golden_in += 1
                assert len(docs) == min(4, len(leaf.chunks))
            else:
                assert len(docs) == min(4, len(leaf.chunks) - 1)
        assert 0 < golden_in < len(rows)


def test_raft_golden_share_and_single_document() -> None:
    import random

    pool = [f"doc {i}" for i in range(10)]
    rng = random.Random(1)
    picks = [pick_documents("doc 3", ("doc 3",), pool, rng) for _ in range(4000)]
    share = sum(g for _, g in picks) / len(picks)
    assert 0.37 < share < 0.43
    assert all(len(d) == 4 and len(set(d)) == 4 for d, _ in picks)
    assert all(("doc 3" in d) == g for d, g in picks)
    assert pick_documents("only", ("only",), ["only"], rng) == (["only"], True)


# ---------------------------------------------------------------- recipes and phase files

def test_recipes_point_at_the_node_datasets_with_honest_sizes(run) -> None:
    d, out = run
    know = yaml.safe_load(out.knowledge_recipe.read_text())
    skills = yaml.safe_load(out.skills_recipe.read_text())
    assert set(know) == set(skills) == {"datasets", "metadata"}
    assert know["metadata"] == skills["metadata"] == {"sys_prompt": SYS}
    for recipe, data in ((out.knowledge_recipe, know), (out.skills_recipe, skills)):
        for entry in data["datasets"]:
            assert set(entry) == {"path", "sampling_size"}
            assert not Path(entry["path"]).is_absolute() and entry["path"].startswith(f"node_datasets_{STAMP}/")
            assert (recipe.parent / entry["path"]).is_file()
            assert entry["sampling_size"] == 1.0 and isinstance(entry["sampling_size"], float)
    resolved = lambda data: [(out.run_dir / e["path"]) for e in data["datasets"]]  # noqa: E731
    assert resolved(know) == [out.leaf(ASTRO.id).p07, out.leaf(BOTANY.id).p07]
    skill_leaves = [out.leaf(leaf.id).node_dataset for leaf in (FREEFORM, GROUNDED, FOUNDATIONAL, EMPTY)]
    assert resolved(skills) == skill_leaves + [out.leaf(ASTRO.id).p10, out.leaf(BOTANY.id).p10]


def test_phase_files_are_mixed_training_records(run) -> None:
    _, out = run
    expect = {"knowledge_train_msgs": sum(out.leaf(k.id).p07_rows for k in (ASTRO, BOTANY)),
              "skills_train_msgs": sum(out.leaf(leaf.id).node_rows for leaf in (FREEFORM, GROUNDED, FOUNDATIONAL))
              + sum(out.leaf(k.id).p10_rows for k in (ASTRO, BOTANY))}
    assert out.knowledge_train_rows == expect["knowledge_train_msgs"]
    assert out.skills_train_rows == expect["skills_train_msgs"]
    for name, count in expect.items():
        path = getattr(out, name)
        assert check_training_file(path) == count
        recs = _jsonl(path)
        for rec in recs:
            assert list(rec) == ["id", "messages", "metadata", "unmask"]
            assert rec["messages"][0] == {"role": "system", "content": SYS}
            assert sum(m["role"] == "system" for m in rec["messages"]) == 1
            assert isinstance(json.loads(rec["metadata"]), dict) and _is_uuid(rec["id"])
    knowledge = _jsonl(out.knowledge_train_msgs)
    assert all(r["unmask"] is True for r in knowledge)  # phase 1 trains on the documents too
    skills = _jsonl(out.skills_train_msgs)
    # skill records: generated columns (engine ones included) now live in metadata, never at the top level
    md = [json.loads(r["metadata"]) for r in skills]
    skill_md = [m for m in md if "seed_question" in m]
    assert len(skill_md) == out.leaf(FREEFORM.id).node_rows + out.leaf(GROUNDED.id).node_rows + \
        out.leaf(FOUNDATIONAL.id).node_rows
    assert all(m["_unit_id"] and m["judge_quality"] == 2 for m in skill_md)
    assert {r["unmask"] for r in skills} == {True, False}
    # mixing shuffles: the first records are not simply the first dataset's
    first = _jsonl(out.leaf(FREEFORM.id).node_dataset)
    assert [r["id"] for r in skills[:len(first)]] != [r["id"] for r in first]


def test_engine_columns_never_reach_a_training_record_top_level(run) -> None:
    _, out = run
    training = [out.knowledge_train_msgs, out.skills_train_msgs, out.train, out.messages, out.test]
    training += [p for lo in out.leaves for p in (lo.node_dataset, lo.p07, lo.p10) if p]
    for path in training:
        for rec in _jsonl(path):
            assert not [k for k in rec if k.startswith("_")], path
            for m in rec.get("messages", []):
                assert "never trained on" not in m["content"]


# ---------------------------------------------------------------- determinism, odd inputs, atomicity

def _tree(d: Path) -> dict[str, bytes]:
    """Every file's bytes; the lm-eval task files name their data file by absolute path (lm-eval reads a
    relative one from its working directory), which is the one place the folder itself shows."""
    return {p.relative_to(d).as_posix(): p.read_bytes().replace(str(d.absolute()).encode(), b"<RUN>")
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_rewriting_from_the_same_rows_is_byte_identical(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _write(a)
    _write(b)
    assert _tree(a) == _tree(b)
    _write(a)  # over an existing run folder too
    assert _tree(a) == _tree(b)
    _write(c, seed=7)
    other = _tree(c)
    p10 = f"node_datasets_{STAMP}/{ASTRO.name}_p10.jsonl"
    assert other[p10] != _tree(a)[p10]
    assert other[f"generated_{STAMP}/{ASTRO.name}.jsonl"] == _tree(a)[f"generated_{STAMP}/{ASTRO.name}.jsonl"]


def test_zero_row_leaf_gets_an_empty_dataset_a_recipe_entry_and_a_warning(run) -> None:
    _, out = run
    lo = out.leaf(EMPTY.id)
    assert lo.node_dataset.read_text() == "" and lo.node_rows == 0 and lo.generated.read_text() == ""
    assert lo.input_rows == 1
    assert any(w.leaf_id == EMPTY.id and "no generated rows" in str(w) for w in out.warnings)
    assert f"{EMPTY.name}.jsonl" in out.skills_recipe.read_text()


def test_empty_knowledge_leaf_and_skills_only_runs(tmp_path: Path) -> None:
    nothing = _knowledge("knowledge->empty", "NONE", chunks=0)
    out = write_outputs(tmp_path / "k", STAMP, [nothing], {}, system_prompt=SYS)
    lo = out.leaf(nothing.id)
    assert lo.p07.read_text() == lo.p10.read_text() == "" and lo.input_rows == 0
    # no knowledge samples: no empty phase-1 file (instructlab-training cannot read one), and a warning says so
    assert out.knowledge_train_msgs is None and out.knowledge_train_rows == 0
    assert not list((tmp_path / "k").glob("knowledge_train_msgs_*"))
    assert {w.leaf_id for w in out.warnings} == {nothing.id, None}
    assert any("no knowledge (LAB phase 1) samples" in str(w) for w in out.warnings)
    out = write_outputs(tmp_path / "s", STAMP, [FREEFORM], {FREEFORM.id: GENERATED[FREEFORM.id]}, system_prompt=SYS)
    assert out.knowledge_recipe is None and out.knowledge_train_msgs is None
    assert not list((tmp_path / "s").glob("knowledge_*"))
    assert out.skills_train_rows == len(GENERATED[FREEFORM.id])


def test_blank_samples_single_document_and_unknown_leaf_are_reported(tmp_path: Path) -> None:
    one = _knowledge("knowledge->one", "ONE", chunks=1, seeds=1)
    rows = _knowledge_rows(one, 3)
    rows[1]["response"] = "  "
    skill_rows = _skill_rows(FREEFORM, 3)
    skill_rows[0]["question"] = ""
    out = write_outputs(tmp_path, STAMP, [one, FREEFORM], {one.id: rows, FREEFORM.id: skill_rows,
                                                            "knowledge->gone": [{"question": "q"}]},
                        system_prompt=SYS)
    text = "\n".join(map(str, out.warnings))
    assert "knowledge->gone" in text and "1 of 3 generated rows" in text and "only one unique document" in text
    lo = out.leaf(one.id)
    assert lo.training_rows == 2 and lo.p07_rows == 2 and lo.p10_rows == 4
    raft = _jsonl(lo.p10)[0]["messages"][0]["content"]
    assert raft == raft_user_turn([one.chunks[0].text], rows[0]["question"])
    assert out.leaf(FREEFORM.id).node_rows == 2 and out.train_rows == 4


def test_duplicate_rows_get_distinct_ids(tmp_path: Path) -> None:
    row = _skill_rows(FREEFORM, 1)[0]
    out = write_outputs(tmp_path, STAMP, [FREEFORM], {FREEFORM.id: [row, dict(row)]}, system_prompt=SYS)
    ids = [r["id"] for r in _jsonl(out.leaf(FREEFORM.id).node_dataset)]
    assert len(set(ids)) == 2


def test_bad_stamp_and_clashing_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_outputs(tmp_path, "a/b", [], {}, system_prompt=SYS)
    twin = FreeformSkillLeaf(**{**_base("compositional_skills->other"), "name": FREEFORM.name})
    with pytest.raises(ValueError, match="share the file name"):
        write_outputs(tmp_path, STAMP, [FREEFORM, twin], {}, system_prompt=SYS)
    with pytest.raises(ValueError, match="listed twice"):
        write_outputs(tmp_path, STAMP, [FREEFORM, FREEFORM], {}, system_prompt=SYS)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("crash halfway")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert path.read_text() == '{"a":1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]
    with pytest.raises(ValueError):
        write_jsonl(path, [{"a": float("nan")}])  # would be invalid JSON for every reader
    assert path.read_text() == '{"a":1}\n'
    with atomic_open(tmp_path / "new.txt") as f:
        f.write("x")
        assert not (tmp_path / "new.txt").exists()  # nothing under the final name until complete
    assert (tmp_path / "new.txt").read_text() == "x"


def test_files_written_together_are_whole_at_once_and_synced_when_the_block_ends(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """synced_together (a run's finish step): each file is complete under its final name as soon as it is
    written; the fsyncs wait for the end of the block and all happen then (one per file still there)."""
    import os

    from sdg.output import atomic

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with atomic.synced_together():
        for i in range(5):
            write_jsonl(tmp_path / f"f{i}.jsonl", [{"i": i}] * 3)
            assert (tmp_path / f"f{i}.jsonl").read_text() == '{"i":%d}\n' % i * 3
        (tmp_path / "f4.jsonl").unlink()  # a file removed again before the end (an empty phase file)
        assert synced == []
    assert len(synced) == 4
    write_jsonl(tmp_path / "alone.jsonl", [{"a": 1}])  # outside the block: synced before its rename
    assert len(synced) == 5
    with pytest.raises(RuntimeError), atomic.synced_together():
        write_jsonl(tmp_path / "g.jsonl", [{"a": 1}])
        raise RuntimeError("the finish step failed")
    assert (tmp_path / "g.jsonl").exists() and atomic._PENDING.get() is None
