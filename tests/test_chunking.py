"""Markdown chunking: budget, overlap, structure and determinism."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdg.errors import ConfigError
from sdg.taxonomy.chunking import Chunk, chunk_documents, chunk_markdown
from sdg.taxonomy.documents import Document
from sdg.taxonomy.tokens import estimate_tokens


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def bodies(chunks: list[Chunk]) -> list[str]:
    return [c.text[c.overlap_chars:] for c in chunks]


def assert_invariants(text: str, chunks: list[Chunk], max_tokens: int, overlap_tokens: int, count=estimate_tokens):
    for position, chunk in enumerate(chunks):
        assert chunk.index == position
        assert chunk.tokens == count(chunk.text) <= max_tokens
        assert chunk.text == chunk.text.strip() and chunk.text
        overlap = chunk.text[: chunk.overlap_chars].strip()
        if position == 0:
            assert chunk.overlap_chars == 0
        elif overlap:
            assert chunks[position - 1].text.endswith(overlap)
            assert count(overlap) <= overlap_tokens
    # Chunking only changes whitespace: the bodies give back every other character, in order.
    assert squash("".join(bodies(chunks))) == squash(text)


def sentences(n: int, start: int = 0) -> str:
    return " ".join(f"Fact {i} says the widget weighs {i} grams." for i in range(start, start + n))


DOC = f"""# Widgets

{sentences(12)}

## Sizes

{sentences(20, 100)}

```python
def weigh(widget):
    return widget.grams
```

| size | grams |
|------|-------|
| S    | 10    |
| L    | 30    |

## History

{sentences(30, 200)}
"""


@pytest.mark.parametrize("max_tokens,overlap", [(40, 0), (60, 10), (120, 30), (500, 50), (10_000, 50)])
def test_budget_and_invariants(max_tokens, overlap):
    chunks = chunk_markdown(DOC, max_tokens=max_tokens, overlap_tokens=overlap, source="w.md")
    assert chunks
    assert all(c.source == "w.md" for c in chunks)
    assert_invariants(DOC, chunks, max_tokens, overlap)


def test_small_document_is_one_chunk():
    chunks = chunk_markdown("# T\n\nShort text.\n", max_tokens=50, overlap_tokens=5)
    assert [(c.index, c.text, c.overlap_chars) for c in chunks] == [(0, "# T\n\nShort text.", 0)]


def test_overlap_repeats_the_previous_tail():
    chunks = chunk_markdown(sentences(80), max_tokens=100, overlap_tokens=20)
    assert len(chunks) > 3
    for before, after in zip(chunks, chunks[1:]):
        overlap = after.text[: after.overlap_chars].strip()
        assert overlap and before.text.endswith(overlap)
        assert 10 <= estimate_tokens(overlap) <= 20  # ~overlap_tokens of whole sentences
        assert re.match(r"Fact \d+", overlap)  # starts at a sentence boundary
    no_overlap = chunk_markdown(sentences(80), max_tokens=100, overlap_tokens=0)
    assert all(c.overlap_chars == 0 for c in no_overlap)


def test_deterministic():
    first = chunk_markdown(DOC, max_tokens=70, overlap_tokens=15, source="d")
    second = chunk_markdown(DOC, max_tokens=70, overlap_tokens=15, source="d")
    assert first == second


def test_heading_stays_with_following_text():
    text = f"{sentences(6)}\n\n## Next section\n\n{sentences(6, 50)}"
    max_tokens = estimate_tokens(sentences(6)) + 5  # the heading would still fit after the first paragraph
    chunks = chunk_markdown(text, max_tokens=max_tokens, overlap_tokens=0)
    assert len(chunks) >= 2
    assert not chunks[0].text.endswith("## Next section")
    holder = next(c for c in chunks if "## Next section" in c.text)
    assert holder.text.startswith("## Next section\n\nFact 50")
    for chunk in chunks[:-1]:
        assert not chunk.text.splitlines()[-1].startswith("#")


def test_code_fence_and_table_kept_whole():
    code = "```python\ndef weigh(widget):\n\n    return widget.grams\n```"
    table = "| size | grams |\n|------|-------|\n| S | 10 |\n| L | 30 |"
    text = f"{sentences(5)}\n\n{code}\n\n{sentences(5, 20)}\n\n{table}\n\n{sentences(5, 40)}"
    for max_tokens in (60, 80, 100):
        chunks = chunk_markdown(text, max_tokens=max_tokens, overlap_tokens=10)
        assert any(code in b for b in bodies(chunks)), max_tokens
        assert any(table in b for b in bodies(chunks)), max_tokens
        assert_invariants(text, chunks, max_tokens, 10)


def test_fence_with_blank_lines_and_hashes_is_one_block():
    code = "```\n# not a heading\n\nstill code\n```"
    chunks = chunk_markdown(f"intro\n\n{code}\n\nafter", max_tokens=200, overlap_tokens=0)
    assert chunks[0].text == f"intro\n\n{code}\n\nafter"


def test_oversized_code_block_is_split_by_lines():
    code = "```\n" + "\n".join(f"x_{i} = compute({i}, {i + 1})" for i in range(200)) + "\n```"
    chunks = chunk_markdown(code, max_tokens=50, overlap_tokens=5)
    assert len(chunks) > 5
    assert_invariants(code, chunks, 50, 5)
    for body in bodies(chunks):
        assert all(re.fullmatch(r"x_\d+ = compute\(\d+, \d+\)|```", line) for line in body.splitlines())


def test_huge_paragraph_is_split_by_words():
    words = " ".join(f"word{i}" for i in range(3000))  # one paragraph, no sentence ends
    chunks = chunk_markdown(words, max_tokens=100, overlap_tokens=10)
    assert len(chunks) > 30
    assert_invariants(words, chunks, 100, 10)
    assert " ".join(" ".join(b.split()) for b in bodies(chunks)) == words


def test_huge_single_word_is_cut_into_slices():
    blob = "A" * 5000
    chunks = chunk_markdown(blob, max_tokens=20, overlap_tokens=0)
    assert "".join(c.text for c in chunks) == blob
    assert all(c.tokens <= 20 for c in chunks)


def test_custom_counter_is_respected():
    count = len  # characters
    chunks = chunk_markdown(DOC, max_tokens=300, overlap_tokens=40, count=count)
    assert_invariants(DOC, chunks, 300, 40, count=count)


def test_empty_input():
    assert chunk_markdown("") == []
    assert chunk_markdown(" \n\n\t ") == []
    assert chunk_documents([]) == []


@pytest.mark.parametrize(
    "max_tokens,overlap", [(0, 0), (-5, 0), (10, 10), (10, 11), (10, -1), (True, 0), (10, 2.5), ("10", 1)]
)
def test_invalid_arguments_raise_config_error(max_tokens, overlap):
    with pytest.raises(ConfigError):
        chunk_markdown("text", max_tokens=max_tokens, overlap_tokens=overlap)
    with pytest.raises(ConfigError):
        chunk_documents([], max_tokens=max_tokens, overlap_tokens=overlap)


def test_chunk_documents_indexes_run_over_all_documents():
    docs = [
        Document("a.md", sentences(30), "md"),
        Document("empty.md", "  ", "md"),
        Document("b.pdf", sentences(30, 99), "pdf"),
    ]
    chunks = chunk_documents(docs, max_tokens=80, overlap_tokens=10)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    sources = [c.source for c in chunks]
    assert sources == sorted(sources) and set(sources) == {"a.md", "b.pdf"}
    first_b = sources.index("b.pdf")
    assert chunks[first_b].overlap_chars == 0  # overlap never crosses documents
    assert chunks[first_b].text.startswith("Fact 99")
    per_doc = chunk_markdown(docs[0].text, max_tokens=80, overlap_tokens=10, source="a.md")
    assert [c.text for c in chunks[:first_b]] == [c.text for c in per_doc]


_WORDS = st.sampled_from(
    ["alpha", "beta", "gamma.", "delta!", "eps?", "x", "supercalifragilistic", "42", "a,b", "(note)", "é", "日本", "|"]
)
_LINES = st.one_of(
    st.lists(_WORDS, min_size=1, max_size=12).map(" ".join),
    st.sampled_from(
        ["", "", "# Title", "## Sub heading", "```", "~~~~", "| a | b |", "- item one", "1. first", "    indented", "-"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=40),
    max_tokens=st.integers(min_value=1, max_value=60),
    overlap_fraction=st.floats(min_value=0, max_value=0.99),
)
def test_property_budget_and_coverage(lines, max_tokens, overlap_fraction):
    text = "\n".join(lines)
    overlap = min(int(max_tokens * overlap_fraction), max_tokens - 1)
    chunks = chunk_markdown(text, max_tokens=max_tokens, overlap_tokens=overlap, source="p")
    if not text.strip():
        assert chunks == []
        return
    assert_invariants(text, chunks, max_tokens, overlap)
    assert chunks == chunk_markdown(text, max_tokens=max_tokens, overlap_tokens=overlap, source="p")
    # assert_invariants checked coverage: with each chunk's overlap removed, the concatenated bodies hold
    # every non-whitespace character of the input in order, so every word, in order (a word longer than
    # the whole budget may be cut across chunks).
    assert sum(len(squash(b)) for b in bodies(chunks)) == len(squash(text))
