"""Deterministic markdown chunking by a token budget, with overlap.

Knowledge documents are cut into chunks that each fit a teacher prompt. Cutting follows markdown
structure first (headings, paragraphs, fenced code, tables) so a chunk reads as a coherent passage;
only a block larger than the budget is cut inside, by sentences (or rows/lines for code and tables),
then by words, and as a last resort a single over-long word (a URL, a base64 blob) by characters.

Budget guarantee: every chunk, overlap included, has `count(chunk.text) <= max_tokens`. The overlap
is therefore "up to" `overlap_tokens`: it shrinks (possibly to nothing) when the next block needs
the room. The only exception is a single character that `count` alone rates above the budget, which
cannot be cut further.

Chunking only ever changes whitespace: removing each chunk's first `overlap_chars` characters and
concatenating the rest gives back every non-whitespace character of the input, in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

from sdg.errors import ConfigError, DocumentError
from sdg.taxonomy.tokens import estimate_tokens

if TYPE_CHECKING:
    from sdg.taxonomy.documents import Document

Counter = Callable[[str], int]

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_TABLE_ROW = re.compile(r"^\s*\|")
# A sentence ends after . ! ? (plus closing quotes/brackets) before whitespace, or before a list item line.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\)\]]*(?=\s)|\n(?=[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t])")
_WORD = re.compile(r"\S+")
_LINE = re.compile(r"[^\n]+")
_NEVER = re.compile(r"(?!)")  # no cut: the whole trimmed span
_SENTENCE_END_BEFORE = re.compile(r"[.!?][\"'\)\]]*$")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document that fits the token budget."""

    index: int
    text: str
    tokens: int
    source: str  # document path
    overlap_chars: int = 0  # leading characters of `text` repeated from the previous chunk


@dataclass(frozen=True)
class _Block:
    text: str
    kind: str  # "heading" | "para" | "code" | "table"


@dataclass(frozen=True)
class _Piece:
    """An atomic unit for packing: a span of one block's text."""

    block: int
    start: int
    end: int
    tokens: int
    heading: bool


def _check_args(max_tokens: int, overlap_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ConfigError(f"chunking max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int):
        raise ConfigError(f"chunking overlap_tokens must be an integer, got {overlap_tokens!r}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ConfigError(
            f"chunking overlap_tokens must be >= 0 and smaller than max_tokens ({max_tokens}), got {overlap_tokens}"
        )


def _blocks(text: str) -> list[_Block]:
    """Split markdown into headings, paragraphs, fenced code blocks and tables."""
    lines = text.split("\n")
    blocks: list[_Block] = []
    current: list[str] = []
    kind = "para"

    def close() -> None:
        nonlocal current
        if current and any(line.strip() for line in current):
            blocks.append(_Block("\n".join(current), kind))
        current = []

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE_OPEN.match(line)
        if fence:
            close()
            mark = fence.group(1)
            closing = re.compile(rf"^ {{0,3}}{re.escape(mark[0])}{{{len(mark)},}}\s*$")
            j = i + 1
            while j < len(lines) and not closing.match(lines[j]):
                j += 1
            end = min(j + 1, len(lines))  # an unclosed fence runs to the end of the document
            blocks.append(_Block("\n".join(lines[i:end]), "code"))
            i = end
            continue
        if not line.strip():
            close()
        elif _HEADING.match(line):
            close()
            blocks.append(_Block(line, "heading"))
        else:
            row = "table" if _TABLE_ROW.match(line) else "para"
            if current and row != kind:
                close()
            kind = row
            current.append(line)
        i += 1
    close()
    return blocks


def _spans(text: str, start: int, end: int, boundary: re.Pattern[str]) -> list[tuple[int, int]]:
    """Whitespace-trimmed, non-empty spans of text[start:end] cut after each `boundary` match."""
    cuts = [m.end() for m in boundary.finditer(text, start, end)] + [end]
    spans, pos = [], start
    for cut in cuts:
        a, b = pos, cut
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            spans.append((a, b))
        pos = cut
    return spans


def _matched_spans(text: str, start: int, end: int, unit: re.Pattern[str]) -> list[tuple[int, int]]:
    spans = []
    for m in unit.finditer(text, start, end):
        a, b = m.start(), m.end()
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            spans.append((a, b))
    return spans


def _char_slices(text: str, start: int, end: int, cap: int, count: Counter) -> list[tuple[int, int]]:
    """Cut one over-long word into the longest prefixes that fit `cap` (at least one character each)."""
    out = []
    while start < end:
        lo, hi = start + 1, end
        while lo < hi:  # largest stop with count(text[start:stop]) <= cap
            mid = (lo + hi + 1) // 2
            if count(text[start:mid]) <= cap:
                lo = mid
            else:
                hi = mid - 1
        out.append((start, lo))
        start = lo
    return out


def _pieces(blocks: Sequence[_Block], max_tokens: int, cap: int, count: Counter) -> list[_Piece]:
    """Atomic packing units: whole blocks that fit, else sentences/lines, then words, then characters."""
    pieces: list[_Piece] = []
    for index, block in enumerate(blocks):
        text = block.text
        for a, b in _spans(text, 0, len(text), _NEVER):
            tokens = count(text[a:b])
            if tokens <= max_tokens:
                pieces.append(_Piece(index, a, b, tokens, block.kind == "heading"))
                continue
            if block.kind in ("code", "table"):
                parts = _matched_spans(text, a, b, _LINE)
            else:
                parts = _spans(text, a, b, _SENTENCE_END)
            for pa, pb in parts:
                tokens = count(text[pa:pb])
                if tokens <= cap:
                    pieces.append(_Piece(index, pa, pb, tokens, False))
                    continue
                for wa, wb in _matched_spans(text, pa, pb, _WORD):
                    tokens = count(text[wa:wb])
                    if tokens <= cap:
                        pieces.append(_Piece(index, wa, wb, tokens, False))
                        continue
                    for ca, cb in _char_slices(text, wa, wb, cap, count):
                        pieces.append(_Piece(index, ca, cb, count(text[ca:cb]), False))
    return pieces


def _render(blocks: Sequence[_Block], pieces: Sequence[_Piece]) -> str:
    """Body text of consecutive pieces: original text within a block, a blank line between blocks."""
    groups: list[str] = []
    first = pieces[0]
    last = first
    for piece in pieces[1:]:
        if piece.block != last.block:
            groups.append(blocks[first.block].text[first.start:last.end])
            first = piece
        last = piece
    groups.append(blocks[first.block].text[first.start:last.end])
    return "\n\n".join(groups)


def _is_sentence_start(text: str, start: int) -> bool:
    before = text[max(0, start - 16):start].rstrip(" \t")
    return not before or before.endswith("\n") or bool(_SENTENCE_END_BEFORE.search(before))


def _overlap(text: str, budget: int, count: Counter) -> str:
    """The tail of `text` within `budget` tokens: whole sentences if they fill half of it, else whole words."""
    if budget <= 0 or not text:
        return ""
    starts = [m.start() for m in _WORD.finditer(text)]
    fits = lambda k: count(text[starts[k]:]) <= budget  # noqa: E731  (monotone: shorter tails count less)
    # Smallest k whose tail fits: gallop back from the last word, then bisect.
    hi, step = len(starts), 1
    while hi > 0 and fits(max(0, hi - step)):
        hi, step = max(0, hi - step), step * 2
    lo = max(0, hi - step)  # tail from starts[lo] does not fit (or lo == hi == 0)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    if hi == len(starts):
        return ""
    word = text[starts[hi]:]
    for k in range(hi, len(starts)):
        if _is_sentence_start(text, starts[k]):
            sentence = text[starts[k]:]
            if 2 * count(sentence) >= budget:
                return sentence
            break
    return word


def chunk_markdown(
    text: str,
    *,
    max_tokens: int = 500,
    overlap_tokens: int = 50,
    source: str = "",
    count: Counter = estimate_tokens,
    limit: int | None = None,
) -> list[Chunk]:
    """Cut one markdown document into chunks of at most `max_tokens` (see the module docstring).

    `limit`: stop once more than `limit` chunks are made (the result then has `limit + 1`), so a caller
    enforcing a cap does not cut a huge document to the end first.
    """
    _check_args(max_tokens, overlap_tokens)
    if not text or not text.strip():
        return []
    blocks = _blocks(text.replace("\r\n", "\n").replace("\r", "\n"))
    pieces = _pieces(blocks, max_tokens, max_tokens - overlap_tokens, count)
    chunks: list[Chunk] = []
    previous = ""
    last_piece: _Piece | None = None
    i = 0
    while i < len(pieces):
        prefix = _overlap(previous, min(overlap_tokens, max_tokens - pieces[i].tokens), count)
        used = count(prefix) if prefix else 0
        j = i
        while j < len(pieces) and (j == i or used + pieces[j].tokens <= max_tokens):
            used += pieces[j].tokens
            j += 1

        def assemble(prefix: str, stop: int) -> tuple[str, int, int]:
            body = _render(blocks, pieces[i:stop])
            if not prefix:
                return body, 0, count(body)
            same_block = last_piece is not None and last_piece.block == pieces[i].block
            head = prefix + (" " if same_block else "\n\n")
            return head + body, len(head), count(head + body)

        # `count` need not be additive: verify the real text, dropping pieces, then overlap, until it fits.
        chunk_text, overlap_chars, tokens = assemble(prefix, j)
        while tokens > max_tokens and j - i > 1:
            j -= 1
            chunk_text, overlap_chars, tokens = assemble(prefix, j)
        budget = min(overlap_tokens, max_tokens - pieces[i].tokens)
        while tokens > max_tokens and prefix:
            budget -= max(1, budget // 4)
            prefix = _overlap(previous, budget, count)
            chunk_text, overlap_chars, tokens = assemble(prefix, j)
        # Keep a heading with what follows it: end the chunk before trailing headings.
        if j < len(pieces):
            k = j
            while k > i and pieces[k - 1].heading:
                k -= 1
            if i < k < j:
                j = k
                chunk_text, overlap_chars, tokens = assemble(prefix, j)
        chunks.append(Chunk(len(chunks), chunk_text, tokens, source, overlap_chars))
        if limit is not None and len(chunks) > limit:
            break
        previous, last_piece, i = chunk_text, pieces[j - 1], j
    return chunks


def chunk_documents(
    docs: Sequence[Document], *, max_tokens: int = 500, overlap_tokens: int = 50, max_chunks: int | None = None,
    leaf: str = "",
) -> list[Chunk]:
    """Chunk every document in order; indexes run over all documents, overlap stays within one.

    More than `max_chunks` chunks (taxonomy.documents.max_chunks_per_leaf) is a DocumentError naming
    `leaf`, the document where the cap was passed and the key; cutting stops there.
    """
    _check_args(max_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for doc in docs:
        left = None if max_chunks is None else max_chunks - len(chunks)
        for chunk in chunk_markdown(doc.text, max_tokens=max_tokens, overlap_tokens=overlap_tokens, source=doc.path,
                                    limit=left):
            chunks.append(replace(chunk, index=len(chunks)))
        if max_chunks is not None and len(chunks) > max_chunks:
            where = f"knowledge leaf {leaf}: " if leaf else ""
            raise DocumentError(
                f"{where}its documents make more than {max_chunks:,} chunks of up to {max_tokens} tokens (passed at "
                f"{doc.path}); the limit is taxonomy.documents.max_chunks_per_leaf={max_chunks}: narrow "
                f"document.patterns to the documents the leaf needs, or raise it (e.g. "
                f"taxonomy.documents.max_chunks_per_leaf={max_chunks * 2})"
            )
    return chunks
