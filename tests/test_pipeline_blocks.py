"""Templates and the blocks that need no teacher: filter, dedup, set, rename, drop, examples; the registry."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from sdg.errors import ConfigError
from sdg.pipeline.blocks import Block, Bound, RunState, block_class, build_dataclass, register_block, registered_blocks
from sdg.pipeline.row_blocks import DedupBlock, ExamplesBlock, FilterBlock, RenameBlock, SetBlock
from sdg.pipeline.templates import Template, as_text, parse_prompt
from sdg.pipeline.types import UnitContext, UnitResult


def state(seed: int = 1) -> RunState:
    return RunState(UnitContext(None, seed, "leaf", "unit"), UnitResult(), 3)  # type: ignore[arg-type]


def run(block: Block, rows: list[dict], st: RunState | None = None) -> tuple[list[dict], Counter]:
    st = st or state()
    out = asyncio.run(block.run(rows, st))
    return out, st.result.dropped


# ---- templates ------------------------------------------------------------------------------------------

def test_template_substitutes_only_its_own_placeholders() -> None:
    t = Template.parse("Q: {question}\nKeep {{this}} and { not this } and {x y}.\nAgain {question}; {n}")
    assert t.fields == ("question", "n")
    out = t.render({"question": "What is {answer}? {{}} %s {0}", "n": 3, "answer": "LEAK"})
    assert out == "Q: What is {answer}? {{}} %s {0}\nKeep {this} and { not this } and {x y}.\nAgain What is {answer}? {{}} %s {0}; 3"
    with pytest.raises(KeyError, match="question"):
        t.render({"n": 1})


def test_values_as_prompt_text() -> None:
    assert as_text(None) == "" and as_text(2) == "2" and as_text("é") == "é"
    assert as_text([{"a": "é"}]) == '[{"a": "é"}]'


def test_prompt_without_markers_is_all_user_text() -> None:
    system, user = parse_prompt("Just {x}.\n", Path("p.txt"))
    assert system.text == "" and user.fields == ("x",)


# ---- filter -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,value,kept", [
    (">=", 2, [2, 3]), (">", 2, [3]), ("<=", 2, [1, 2]), ("<", 2, [1]), ("==", 2, [2]), ("!=", 2, [1, 3]),
    ("in", [1, 3], [1, 3]), ("not_in", [1, 3], [2]),
])
def test_filter_ops(op: str, value, kept: list[int]) -> None:
    block = build_dataclass(FilterBlock, {"name": "f", "column": "s", "op": op, "value": value}, "here")
    out, dropped = run(block, [{"s": 1}, {"s": 2}, {"s": 3}])
    assert [r["s"] for r in out] == kept
    assert dropped == (Counter({"f:below_threshold": 3 - len(kept)}) if len(kept) < 3 else Counter())


def test_filter_missing_and_incomparable_values_are_dropped_and_counted() -> None:
    block = FilterBlock("keep", "s", 2)
    out, dropped = run(block, [{"s": None}, {}, {"s": "high"}, {"s": 2}])
    assert out == [{"s": 2}]
    assert dropped == Counter({"keep:missing_value": 2, "keep:below_threshold": 1})


def test_filter_config_errors() -> None:
    with pytest.raises(ConfigError, match="'op' must be one of"):
        build_dataclass(FilterBlock, {"name": "f", "column": "s", "op": "=>", "value": 1}, "here")
    with pytest.raises(ConfigError, match="needs a list"):
        build_dataclass(FilterBlock, {"name": "f", "column": "s", "op": "in", "value": 1}, "here")
    with pytest.raises(ConfigError, match="missing required key 'value'"):
        build_dataclass(FilterBlock, {"name": "f", "column": "s"}, "here")


# ---- dedup, set, rename, drop ------------------------------------------------------------------------------

def test_dedup_normalizes_and_checks_examples_in_lists() -> None:
    block = DedupBlock("dedup", against=["seed_question", "icl_examples.question"])
    base = {"seed_question": "Write a haiku.", "icl_examples": [{"question": "Name a colour"}, "junk", {"q": 1}]}
    rows = [{**base, "question": q} for q in ["What is X?", "what is x", "WRITE A HAIKU!", "name a colour.", "Other?"]]
    out, dropped = run(block, rows)
    assert [r["question"] for r in out] == ["What is X?", "Other?"]
    assert dropped == Counter({"dedup:duplicate": 1, "dedup:copies_example": 2})
    # rows of one call with examples of their own: each row is checked against its own (equal text, other objects
    # too), never against another row's
    rows = [{"seed_question": "Alpha?", "icl_examples": [{"question": "Beta"}], "question": "beta"},
            {"seed_question": "Gamma?", "icl_examples": [{"question": "Delta"}], "question": "alpha"},
            {"seed_question": "Alpha?", "icl_examples": [{"question": "Beta"}], "question": "alpha!"}]
    out, dropped = run(block, rows)
    assert [r["question"] for r in out] == ["alpha"] and dropped == Counter({"dedup:copies_example": 2})


def test_dedup_caps_what_is_left_at_what_the_leaf_needs() -> None:
    """cap: target_samples keeps what the unit's leaf still needs of the rows LEFT after copies and repeats
    went; an int caps at that many; the dry-run bound counts the cap."""
    block = build_dataclass(DedupBlock, {"name": "dedup", "against": ["seed_question"], "cap": "target_samples"},
                            "here")
    rows = [{"seed_question": "Seed?", "question": q} for q in ["seed", "a", "a", "b", "c", "d"]]
    st = state()
    st.target, st.keep = 2, 3  # the unit asked for 2; its leaf still needs 3
    out, dropped = run(block, rows, st)
    assert [r["question"] for r in out] == ["a", "b", "c"]
    assert dropped == Counter({"dedup:copies_example": 1, "dedup:duplicate": 1, "dedup:over_target": 1})
    out, dropped = run(build_dataclass(DedupBlock, {"name": "d", "cap": 1}, "here"), rows)
    assert [r["question"] for r in out] == ["seed"] and dropped == Counter({"d:duplicate": 1, "d:over_target": 4})
    assert block.bound(Bound(10, 2, 100), 4) == Bound(4, 2, 100)
    with pytest.raises(ConfigError, match="cap"):
        build_dataclass(DedupBlock, {"name": "d", "cap": 0}, "here").check("here")


def test_set_rename_drop() -> None:
    s = build_dataclass(SetBlock, {"name": "s", "columns": {"raw": "{doc}!", "kind": "base", "n": 3}}, "here")
    assert s.columns_out(frozenset({"doc"}), "here") == {"doc", "raw", "kind", "n"}
    with pytest.raises(ConfigError, match="unknown column"):
        s.columns_out(frozenset({"x"}), "here")
    out, _ = run(s, [{"doc": "a {b}"}])
    assert out == [{"doc": "a {b}", "raw": "a {b}!", "kind": "base", "n": 3}]
    r = RenameBlock("r", {"doc": "document"})
    assert r.columns_out(frozenset({"doc", "x"}), "here") == {"document", "x"}
    assert run(r, [{"doc": 1, "x": 2}])[0] == [{"document": 1, "x": 2}]
    d = registered_blocks()["drop"]("d", ["x"])
    assert run(d, [{"doc": 1, "x": 2}])[0] == [{"doc": 1}]


# ---- examples ---------------------------------------------------------------------------------------------

def _skill(n_extra: int = 4, long: bool = False) -> dict:
    return {"seed_question": "Seed q?", "seed_response": "Seed a.", "seed_context": "Seed ctx.",
            "icl_examples": [{"question": f"Extra {i}?", "answer": ("A" * 500 if long else f"Answer {i}."),
                              "context": f"C{i}"} for i in range(n_extra)] + [{"question": "seed q", "answer": "dup"}]}


def test_examples_show_the_seed_then_extras_that_fit() -> None:
    block = build_dataclass(ExamplesBlock, {"name": "e", "template": "Question: {question}\nAnswer: {answer}",
                                            "max_extra": 2}, "here")
    text = block.render(_skill(), seed=3)
    parts = text.split("\n\n")
    assert parts[0] == "Question: Seed q?\nAnswer: Seed a." and len(parts) == 3
    assert "dup" not in text, "an extra that repeats the seed is skipped"
    assert block.render(_skill(), seed=3) == text, "same seed, same extras"
    assert {block.render(_skill(), seed=s) for s in range(20)} != {text}, "other seeds pick other extras"
    small = build_dataclass(ExamplesBlock, {"name": "e", "template": "{question} {answer}", "max_chars": 200}, "here")
    assert small.render(_skill(long=True), seed=1) == "Seed q? Seed a.", "extras that do not fit are left out"
    assert small.render({"seed_question": "Q", "seed_response": "A"}, seed=1) == "Q A", "no icl_examples column value"


def test_examples_config_checks() -> None:
    with pytest.raises(ConfigError, match=r"placeholders \['topic'\] unknown"):
        build_dataclass(ExamplesBlock, {"name": "e", "template": "{topic}"}, "here")
    block = build_dataclass(ExamplesBlock, {"name": "e", "template": "{context} {question}"}, "here")
    with pytest.raises(ConfigError, match="seed_context"):
        block.columns_out(frozenset({"seed_question", "seed_response", "icl_examples"}), "here")


# ---- config typing and the registry -------------------------------------------------------------------------

def test_config_types_are_strict() -> None:
    llm = registered_blocks()["llm"]
    base = {"name": "g", "prompt": "p.txt", "parser": "qa_pairs", "max_tokens": 10}
    build_dataclass(llm, {**base, "temperature": 1}, "here")  # an int is a fine float
    for bad in ({"max_tokens": True}, {"temperature": "hot"}, {"stop": "x"}, {"outputs": {"a": 1}},
                {"cap": "every"}, {"valid_range": [1, 2, 3]}, {"temperature": 9}):
        with pytest.raises(ConfigError):
            build_dataclass(llm, {**base, **bad}, "here")


def test_registry() -> None:
    known = registered_blocks()
    assert {"llm", "filter", "dedup", "set", "rename", "drop", "examples"} <= set(known)
    assert block_class("filter", [], "here") is FilterBlock
    with pytest.raises(TypeError):
        register_block("bad")(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a Python module name"):
        block_class("no-such:Thing", [], "here")
    with pytest.raises(ConfigError, match="no Block subclass"):
        block_class("collections:Counter", [], "here")
