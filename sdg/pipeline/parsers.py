"""Tolerant parsers for teacher replies: pure functions `str -> list[dict]` (or a score `str -> int | None`).

Small teachers rarely follow the format they are asked for: they write `Question:` or `**Q1:**` instead of
`[Question]`, number their pairs, forget answers or end tags, wrap things in markdown or JSON, repeat
themselves and stop mid-sentence. Each parser takes what is usable and ignores the rest; none raises
on any input (the `_safe` wrapper makes that a guarantee, and a property test checks it).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

# ---- shared text helpers ----------------------------------------------------------------------------

_LEAD = re.compile(r"^[ \t]*(?:>[ \t]*)*(?:#{1,6}[ \t]*)?(?:[-*•+][ \t]+)?(?:\(?\d{1,3}[.)][ \t]+)?"
                   r"(?:\*\*|__|\*|_)?[ \t]*")
_BRACKET = re.compile(r"^\[[ \t]*([A-Za-z]+)[ \t]*(?:#?[ \t]*\d{1,3})?[ \t]*\][ \t]*:?")
_TAG = re.compile(r"^<[ \t]*(/?)[ \t]*([A-Za-z]+)[ \t]*>")
_WORD = re.compile(r"^([A-Za-z]+)[ \t]*(#?[ \t]*\d{1,3})?[ \t]*(?:\*\*|__|\*)?[ \t]*(:|[-–.)](?=\s|$)|$)")
_EMPH = re.compile(r"^(?:\*\*|__|\*(?!\*)|_(?!_))[ \t]*")
_END_LINE = re.compile(r"^[ \t]*(?:\[[ \t]*end[ \t]*\]|<[ \t]*/?[ \t]*end[ \t]*>|end|-{3,}|\*{3,}|_{3,}|={3,}|</s>"
                       r"|<\|endoftext\|>|<\|im_end\|>|<\|end\|>)[ \t]*$", re.I)
_HEADING_START = r"^[ \t#*_>-]*(?:example|pair|sample|set|item)[ \t]*#?[ \t]*\d{1,3}[ \t]*"  # "### Example 2"
# "### Example 2", "**Pair 3:**": a heading that separates items, never part of one
_ITEM_HEADING = re.compile(_HEADING_START + r"[:.)]?[ \t*_]*$", re.I)
# "Example 2: Deploy date", "### Pair 3 - the venue": a heading with a title, alone in its paragraph right before the
# next question label, heads that next item; anywhere else it may be content ("Example 2: ..." in an answer's list).
_TITLED_HEADING = re.compile(_HEADING_START + r"[:.)\-–].*$", re.I)
_END_INLINE = re.compile(r"\[[ \t]*end[ \t]*\]|</s>|<\|endoftext\|>|<\|im_end\|>|<\|end\|>", re.I)
_FENCE = re.compile(r"^[ \t]*```[A-Za-z0-9_-]*[ \t]*$")
_NUMBERED = re.compile(r"^[ \t]*(?:\*\*|__)?\(?\d{1,3}[.)](?:\*\*|__)?[ \t]+(?=\S)")
_BULLET = re.compile(r"^[ \t]*[-*•+][ \t]+(?=\S)")
_PREAMBLE = re.compile(r"^\W*(?:sure|certainly|of course|okay|ok|absolutely|great|here(?:'s| is| are)|below (?:is|are)"
                       r"|i (?:have|will|'ll) (?:written|write|create|generate)|the following)\b", re.I)
_OUTRO = re.compile(r"^\W*(?:i hope|hope (?:this|these)|let me know|feel free|these (?:questions|pairs|examples)"
                    r"|note:|please note|i've (?:written|created|generated))", re.I)
_PLACEHOLDER = re.compile(r"^[<\[{(]?[ \t]*(?:your |the |a |an )?(?:new |next )?(?:question|answer|response|context"
                          r"|text|passage)(?: here| \d+)?[ \t]*[>\]})]?\.{0,3}$|^\.\.\.$|^…$", re.I)

Q_WORDS = frozenset({"question", "q", "query", "instruction"})
A_WORDS = frozenset({"answer", "a", "response"})
C_WORDS = frozenset({"context", "passage"})
_SINGLE = frozenset({"q", "a"})

Label = tuple[str, str]  # (kind: "q" | "a" | "c" | "end", the rest of the line after the label)


def _safe(default: Any) -> Callable:
    """Parsers never raise: an unexpected input shape yields `default` (a copy of it)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(text: Any) -> Any:
            try:
                if not isinstance(text, str):
                    return type(default)() if default is not None else None
                return fn(text)
            except Exception:  # noqa: BLE001 - the whole point: a reply can never crash a run
                return type(default)() if default is not None else None

        return inner

    return wrap


_WORD_RUN = re.compile(r"\w+")
_NUMBER_PREFIX = re.compile(r"^\d{1,3}[.)][ \t]+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_JSON_Q_KEY = re.compile(r"[\"'](?:question|q|query)[\"'][ \t]*:", re.I)
_JSON_Q_KEY_SHORT = re.compile(r"[\"'](?:question|q)[\"'][ \t]*:", re.I)
_SPEAKER = re.compile(r"[ \t]*\**[A-Z][ \t]*\**:")


@functools.lru_cache(maxsize=16384)
def normalize(text: str) -> str:
    """Casefolded letters and digits only, single-spaced: the key that duplicates share.

    Cached: dedup filters compare every sample with the same few seed examples, over and over.
    """
    if text.isascii():  # the common case, twice as fast: non-word characters to spaces, then split
        return " ".join(text.lower().translate(_ASCII_NON_WORD).split())
    text = unicodedata.normalize("NFKC", text)
    return " ".join(_WORD_RUN.findall(text.casefold()))


_ASCII_NON_WORD = {i: " " for i in range(128) if not (chr(i).isalnum() or chr(i) == "_")}  # \w in ASCII


def _lines(text: str) -> list[str]:
    """Reply lines with code fences removed (their content kept) and inline end tags on their own line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    out: list[str] = []
    for line in text.split("\n"):
        if "```" in line and _FENCE.match(line):
            out.append("")
            continue
        if "[" not in line and "<" not in line:  # no end tag can be in it: skip the regex (most lines)
            out.append(line.rstrip())
            continue
        parts = _END_INLINE.split(line)
        for i, part in enumerate(parts):
            if i:
                out.append("[End]")
            if part.strip() or i == 0:
                out.append(part.rstrip())
    return out


# A found label, before the one-letter rule: (kind, rest, single) where `single` is None for a label whose
# word is not one letter, else (the letter, whether its separator makes it a label when one letters count).
_Raw = tuple[str, str, "tuple[str, bool] | None"]
_LABELS: dict[tuple[str, int], "_Raw | None"] = {}
_LABELS_MAX = 65536
_ITEM_WORDS = frozenset({"example", "pair", "sample", "set", "item"})
_ALPHA_START = re.compile(r"[ \t]*([A-Za-z]+)")


def _label(line: str, words: dict[str, frozenset[str]], singles: frozenset[str] = _SINGLE) -> Label | None:
    """The label that starts a line (`[Question]`, `**Q1:**`, `### Answer`, `Context 2:`...), if any.

    `singles`: which one-letter labels (`Q:`, `A:`) count; elsewhere they are content (a dialogue line).
    Memoized per (line, words), whatever `singles`: the parsers look at each line several times, with
    different `singles` (`words` are module constants, keyed by id).
    """
    if words is not _QA_WORDS and words is not _CTX_WORDS:  # only the constants: an id is theirs for good
        raw = _find_label(line, words)
    else:
        key = (line, id(words))
        try:
            raw = _LABELS[key]
        except KeyError:
            if len(_LABELS) >= _LABELS_MAX:
                _LABELS.clear()
            raw = _LABELS[key] = _find_label(line, words)
    if raw is None:
        return None
    kind, rest, single = raw
    if single is not None and not (single[0] in singles and single[1]):
        return None
    return kind, rest


def _find_label(line: str, words: dict[str, frozenset[str]]) -> "_Raw | None":
    m = _ALPHA_START.match(line)
    if m is not None:  # most lines: a plain word first, so no bracket, tag, heading mark or list number
        w = m.group(1).lower()
        if w == "end" or w in _ITEM_WORDS:
            if _END_LINE.match(line) or _ITEM_HEADING.match(line):
                return ("end", "", None)
        elif not any(w in names for names in words.values()):
            return None  # content: its first word is no label word
        return _word_label(line[m.start(1):], words)
    if _END_LINE.match(line) or _ITEM_HEADING.match(line):
        return ("end", "", None)
    body = _LEAD.sub("", line, count=1)
    m = _BRACKET.match(body)
    if m:
        kind = _kind(m.group(1), words)
        return (kind, _rest(body[m.end():]), None) if kind else None
    m = _TAG.match(body)
    if m:
        kind = _kind(m.group(2), words)
        if kind is None or (m.group(1) and kind == "q"):
            return None  # `</question>` closes nothing we track; _clean drops it from the text
        return ("end", "", None) if m.group(1) else (kind, _rest(body[m.end():]), None)
    return _word_label(body, words)


def _word_label(body: str, words: dict[str, frozenset[str]]) -> "_Raw | None":
    """`Question:`, `Q1.`, `Answer -`: a label word, an optional number, a separator."""
    m = _WORD.match(body)
    if not m:
        return None
    word, number, sep = m.group(1).lower(), m.group(2), m.group(3)
    kind = _kind(word, words)
    if kind is None or kind == "end":
        return None
    if word in _SINGLE:
        return kind, _rest(body[m.end():]), (word, sep == ":" or (number is not None and sep in ".)-–"))
    if sep in (":", "-", "–", "") or (number is not None and sep in ".)"):
        return kind, _rest(body[m.end():]), None
    return None


def _kind(word: str, words: dict[str, frozenset[str]]) -> str | None:
    w = word.lower()
    if w == "end":
        return "end"
    for kind, names in words.items():
        if w in names:
            return kind
    return None


def _rest(text: str) -> str:
    text = text.strip()
    return _EMPH.sub("", text, count=1).strip() if text[:1] in ("*", "_") else text


_TAIL_TAG = re.compile(r"</?[ \t]*(?:question|answer|response|context|passage)[ \t]*>$", re.I)


def _strip_tail(text: str) -> str:
    """Dangling `**`/`__` and closing tags at the end (a loop, not a regex: no backtracking on long text)."""
    while True:
        text = text.rstrip()
        if text.endswith(("**", "__")):
            text = text[:-2]
            continue
        m = _TAIL_TAG.search(text, max(0, len(text) - 40)) if text.endswith(">") else None
        if m:
            text = text[:m.start()]
            continue
        return text


def _clean(lines: list[str]) -> str:
    """Joined item text: outer blank lines, dangling bold markers and closing tags removed."""
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    text = _strip_tail(text.strip())
    text = _EMPH.sub("", text, count=1) if text.startswith(("**", "__")) and text.count(text[:2]) % 2 else text
    text = text.strip().strip('"“”').strip()
    if (len(text) <= _PLACEHOLDER_MAX or text.count(" ") + text.count("\t") > len(text) - _PLACEHOLDER_MAX) \
            and _PLACEHOLDER.match(text):
        return ""
    return text


_PLACEHOLDER_MAX = 48  # more than the non-blank characters of any text _PLACEHOLDER matches ("[your next response here]...")


def _strip_outro(lines: list[str]) -> list[str]:
    """Drop closing chatter ("I hope these help!") from the end of the last item."""
    lines = list(lines)
    while lines and (not lines[-1].strip() or _OUTRO.match(lines[-1])):
        lines.pop()
    return lines


def _drop_next_heading(lines: list[str] | None) -> None:
    """Before the next item's label: drop a titled item heading ("Example 2: ...") that ends this block alone in
    its paragraph (a blank line before it), so it does not end up in this item's answer."""
    if not lines:
        return
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end >= 3 and not lines[end - 2].strip() and _TITLED_HEADING.match(lines[end - 1]):
        del lines[end - 1:]


def _paragraphs(lines: list[str]) -> list[list[str]]:
    paras: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paras[-1].append(line)
        elif paras[-1]:
            paras.append([])
    return [p for p in paras if p]


# ---- question/answer pairs ------------------------------------------------------------------------

_QA_WORDS = {"q": Q_WORDS, "a": A_WORDS}
_INLINE_ANSWER = re.compile(r"(?<=[?.!)\]\"*:])[ \t]+(?:\*\*|__)?(?:answer|response|a)[ \t]*\d{0,3}[ \t]*(?:\*\*|__)?"
                            r"[ \t]*:[ \t]*(?:\*\*|__)?", re.I)
_JSON_FIELD = re.compile(r"[\"']([A-Za-z_]+)[\"'][ \t]*:[ \t]*\"((?:[^\"\\]|\\.)*)\"", re.S)


def _pair(question: str, answer: str) -> dict | None:
    q, a = _clean(question.split("\n")), _clean(answer.split("\n"))
    if q[:1].isdigit():
        q = _NUMBER_PREFIX.sub("", q)
    nq, na = normalize(q), normalize(a)
    if not nq or not na or nq == na:  # empty, punctuation only, or the question echoed as its answer
        return None
    return {"question": q, "answer": a}


def _split_unlabelled(text: str) -> tuple[str, str] | None:
    """A question block that never got an `Answer:` label: find where the answer starts."""
    m = _INLINE_ANSWER.search(text)
    if m and m.start() > 0:
        return text[:m.start()], text[m.end():]
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):
        if line.rstrip().rstrip("*_").rstrip().endswith("?") and any(x.strip() for x in lines[i + 1:]):
            return "\n".join(lines[:i + 1]), "\n".join(lines[i + 1:])
    paras = _PARAGRAPH_BREAK.split(text, maxsplit=1)
    if len(paras) == 2 and paras[0].strip() and paras[1].strip():
        return paras[0], paras[1]
    q, mark, rest = text.partition("? ")
    if mark and rest.strip() and len(rest.split()) >= 2:
        return q + "?", rest
    return None


def _json_str(s: str) -> str:
    """A JSON string literal's body, unescaped; as is when the escapes are broken."""
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s


def _pairs_from_json(text: str) -> list[dict]:
    pairs: list[dict] = []
    question: str | None = None
    for m in _JSON_FIELD.finditer(text):
        key, value = m.group(1).lower(), _json_str(m.group(2))
        if key in Q_WORDS:
            question = value
        elif key in A_WORDS and question is not None:
            p = _pair(question, value)
            if p:
                pairs.append(p)
            question = None
    return pairs


def _singles(lines: list[str]) -> frozenset[str]:
    """One-letter labels count only where the reply uses them as its labels: after `Question:`/`Answer:`
    pairs, a `Q:` or `A:` line is part of an answer (an FAQ, a dialogue)."""
    first_q = next((x for x in lines if (lab := _label(x, _QA_WORDS)) and lab[0] == "q"), "")
    if first_q and _label(first_q, _QA_WORDS, frozenset()) is None:
        return _SINGLE
    word_answers = any((lab := _label(x, _QA_WORDS, frozenset())) and lab[0] == "a" for x in lines)
    return frozenset() if word_answers else frozenset({"a"})


def _block_pair(q: list[str], a: list[str] | None) -> dict | None:
    """The pair of one labelled block: its question lines and answer lines (None: no answer label)."""
    qt, at = "\n".join(_strip_outro(q)), "\n".join(_strip_outro(a)) if a is not None else ""
    if a is None or not at.strip():
        split = _split_unlabelled(qt.strip("\n"))
        if split is None:
            return None
        qt, at = split
    return _pair(qt, at)


# A reply in exactly the format the prompts ask for: `Question: ...` and `Answer: ...` lines, one blank line
# between pairs, nothing else (no tab, CR, bracket, tag or fence that `_lines` would rewrite).
_CANONICAL = re.compile(r"Question:[^\n]*\nAnswer:[^\n]*(?:\n\nQuestion:[^\n]*\nAnswer:[^\n]*)*")
_CANONICAL_PAIR = re.compile(r"Question:([^\n]*)\nAnswer:([^\n]*)")
_NOT_CANONICAL = frozenset("\r\t[<`")


def _pairs_canonical(text: str) -> list[dict] | None:
    """The pairs of a reply in the asked format, as `_pairs_labelled` finds them (the same block rule), without
    its line-by-line labelling; None for any other reply."""
    body = text.strip("\n")
    if not body.startswith("Question:") or not _NOT_CANONICAL.isdisjoint(body) or not _CANONICAL.fullmatch(body):
        return None
    pairs = []
    for m in _CANONICAL_PAIR.finditer(body):
        if p := _block_pair([_rest(m.group(1))], [_rest(m.group(2))]):
            pairs.append(p)
    return pairs


def _pairs_labelled(lines: list[str]) -> list[dict]:
    pairs: list[dict] = []
    singles = _singles(lines)
    q: list[str] | None = None
    a: list[str] | None = None
    mode: str | None = None

    def flush() -> None:
        if q is not None and (p := _block_pair(q, a)):
            pairs.append(p)

    for line in lines:
        lab = _label(line, _QA_WORDS, singles)
        if lab is None:
            if mode == "q" and q is not None:
                q.append(line)
            elif mode == "a" and a is not None:
                a.append(line)
            continue
        kind, rest = lab
        if kind == "end":
            flush()
            q = a = mode = None
        elif kind == "q":
            _drop_next_heading(a if mode == "a" else q)
            flush()
            q, a, mode = [rest], None, "q"
        elif mode == "q":
            a, mode = [rest], "a"
        else:  # an answer with no open question: nothing to pair it with
            flush()
            q = a = None
            mode = "orphan"
    flush()
    return pairs


def _numbered_items(lines: list[str], bullets: bool = False) -> list[list[str]]:
    items: list[list[str]] = []
    for line in lines:
        m = _NUMBERED.match(line) or (_BULLET.match(line) if bullets else None)
        if m:
            items.append([line[m.end():]])
        elif items:
            items[-1].append(line)
    return items


def _pairs_numbered(lines: list[str]) -> list[dict]:
    pairs = []
    for item in _numbered_items(lines):
        item = _strip_outro(item)
        text = "\n".join(item).strip("\n")
        split = None
        for i, line in enumerate(item):
            lab = _label(line, _QA_WORDS)
            if lab and lab[0] == "a" and i > 0:
                split = ("\n".join(item[:i]), "\n".join([lab[1], *item[i + 1:]]))
                break
        split = split or _split_unlabelled(text)
        if split:
            p = _pair(*split)
            if p:
                pairs.append(p)
    return pairs


@_safe([])
def qa_pairs(text: str) -> list[dict]:
    """`question`/`answer` pairs from labelled blocks, numbered lists, or JSON-ish objects."""
    if _JSON_Q_KEY.search(text):
        found = _pairs_from_json(text)
        if found:
            return found
    found = _pairs_canonical(text)  # the common case, quickly
    if found:
        return found
    lines = _lines(text)
    if any((lab := _label(line, _QA_WORDS)) and lab[0] == "q" for line in lines):
        found = _pairs_labelled(lines)
        if found:
            return found
    return _pairs_numbered(lines)


# ---- single questions, answers and contexts ------------------------------------------------------------

def _is_preamble(lines: list[str]) -> bool:
    """A first line like "Here are three questions:" or "Sure!" (not "Sure, you can ...": that is content)."""
    first = next((x for x in lines if x.strip()), "").strip()
    return bool(_PREAMBLE.match(first)) and (first.endswith(":") or len(first.split()) <= 4)


def _items_labelled(lines: list[str], want: str, words: dict[str, frozenset[str]]) -> list[list[str]]:
    """Blocks that start at a `want` label and stop at any other label or an end marker."""
    items: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        lab = _label(line, words)
        if lab is None:
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            if lab[0] == want:
                _drop_next_heading(current)
            items.append(current)
        current = [lab[1]] if lab[0] == want else None
    if current is not None:
        items.append(current)
    return items


@_safe([])
def questions(text: str) -> list[dict]:
    """A list of `question`s: labelled, numbered or bulleted, else one per paragraph."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
            return [{"question": q} for x in data if (q := _clean([x]))]
    if _JSON_Q_KEY_SHORT.search(text):
        found = [{"question": q} for m in _JSON_FIELD.finditer(text)
                 if m.group(1).lower() in Q_WORDS and (q := _clean([_json_str(m.group(2))]))]
        if found:
            return found
    lines = _lines(text)
    if any((lab := _label(line, _QA_WORDS)) and lab[0] == "q" for line in lines):
        items = _items_labelled(lines, "q", _QA_WORDS)
    else:
        body = [x for x in lines if not _label(x, _QA_WORDS)]
        items = _numbered_items(body) or _numbered_items(body, bullets=True)
        if not items:
            items = _paragraphs(body)
            if items and _is_preamble(items[0]) and len(items) > 1:
                items = items[1:]
    out = []
    for i, item in enumerate(items):
        q = _clean(_strip_outro(item) if i == len(items) - 1 else item)
        if q and len(q.split()) >= 2 and not (_PREAMBLE.match(q) and q.endswith(":")):
            out.append({"question": q})
    return out


@_safe([])
def answer(text: str) -> list[dict]:
    """One `answer`: the reply without its label, cut where the teacher starts a new question."""
    lines = _lines(text)
    # several one-letter speaker lines ("A: Hi", "B: Hello") are a dialogue, not an `A:` label
    dialogue = sum(1 for x in lines if _SPEAKER.match(x)) > 1
    singles = frozenset() if dialogue else _SINGLE
    labels = [_label(x, _QA_WORDS, singles) for x in lines]
    start = next((i for i, lab in enumerate(labels) if lab and lab[0] == "a"), None)
    body: list[str] = []
    if start is not None:
        body.append(labels[start][1])  # type: ignore[index]
        rest = lines[start + 1:]
    else:
        rest = lines
        first = next((i for i, x in enumerate(rest) if x.strip()), None)
        if first is not None and labels[first] and labels[first][0] == "q":
            # the teacher restated the question, then answered after a blank line without a label
            blank = next((i for i in range(first + 1, len(rest)) if not rest[i].strip()), len(rest))
            rest = rest[blank:]
        elif first is not None and _is_preamble(rest) and sum(1 for x in rest if x.strip()) > 1:
            rest = rest[first + 1:]
    for line in rest:
        lab = _label(line, _QA_WORDS, singles)
        if lab and lab[0] in ("q", "end"):
            break
        if lab and lab[0] == "a" and start is not None:
            break  # a second answer label: the teacher is repeating itself
        body.append(line)
    a = _clean(_strip_outro(body))
    return [{"answer": a}] if a and normalize(a) else []


_CTX_WORDS = {"c": C_WORDS, "q": Q_WORDS, "a": A_WORDS}


@_safe([])
def contexts(text: str) -> list[dict]:
    """Passages (`context`): after `Context:` labels, else between `---`/`[End]` separators, else the whole reply."""
    lines = _lines(text)
    if any((lab := _label(line, _CTX_WORDS)) and lab[0] == "c" for line in lines):
        items = _items_labelled(lines, "c", _CTX_WORDS)
    else:
        items, current = [], []
        for line in lines:
            lab = _label(line, _CTX_WORDS)
            if lab and lab[0] in ("end", "q", "a"):
                items.append(current)
                current = []
                if lab[0] != "end":  # a question after the passage: the passage is over
                    break
            else:
                current.append(line)
        items.append(current)
        items = [it for it in items if any(x.strip() for x in it)]
        if items and _is_preamble(items[0]):
            first = next(i for i, x in enumerate(items[0]) if x.strip())
            items[0] = items[0][first + 1:]
    out = []
    for i, item in enumerate(items):
        c = _clean(_strip_outro(item) if i == len(items) - 1 else item)
        if c and len(c.split()) >= 3:
            out.append({"context": c})
    return out


# ---- judge scores -------------------------------------------------------------------------------------

_SCORE = re.compile(r"(?:\[[ \t]*(?:score|rating|grade)[ \t]*\]|\b(?:score|rating|grade)\b)[ \t]*(?:\*\*|__)?[ \t]*"
                    r"(?:[:=]|\bis\b|\bof\b)?[ \t]*(?:\*\*|__)?[ \t]*(-?\d+(?:\.\d+)?)(?![\d.]*\d)", re.I)
_RATIO = re.compile(r"(?<![\d.])(\d{1,2})[ \t]*(?:/|out of)[ \t]*(\d{1,2})(?![\d])", re.I)
_TAIL_DIGIT = re.compile(r"(?<![\d.,/-])(\d{1,2})[ \t]*(?:\*\*|__)?[ \t]*[.!)\]]?[ \t]*(?:\*\*|__)?[ \t]*$")


def _int(s: str) -> int | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return int(v) if v == int(v) else None


_JSON_SCORE = re.compile(r'^\s*\{\s*"(?:score|verdict)"\s*:\s*("?)(-?\d+|yes|no|true|false)\1\s*[,}]', re.I)


def _structured(text: str) -> int | None:
    """A structured verdict, `{"score": N, ...}` (the JSON a schema-constrained judge writes)."""
    m = _JSON_SCORE.match(text)
    if m is None:
        return None
    v = m.group(2).lower()
    return _YES[v] if v in _YES else _int(v)


@_safe(None)
def score(text: str) -> int | None:
    """An integer score: `{"score": N}` (a structured verdict), the last `Score: N` / `[Score] N` /
    `rating: N/M`, else a bare number ending the reply."""
    structured = _structured(text)
    if structured is not None:
        return structured
    text = _END_INLINE.sub(" ", text)
    labelled = list(_SCORE.finditer(text))
    if labelled:
        return _int(labelled[-1].group(1))
    ratios = list(_RATIO.finditer(text))
    if ratios:
        return _int(ratios[-1].group(1))
    m = _TAIL_DIGIT.search(text.strip())
    return _int(m.group(1)) if m else None


_YES = {"yes": 1, "y": 1, "true": 1, "correct": 1, "supported": 1, "pass": 1,
        "no": 0, "n": 0, "false": 0, "incorrect": 0, "unsupported": 0, "fail": 0}
_VERDICT = re.compile(r"\b(?:verdict|judgement|judgment|decision|result|answer)\b[ \t]*(?:\*\*|__)?[ \t]*[:=][ \t]*"
                      r"(?:\*\*|__)?[ \t]*(yes|no|true|false)\b", re.I)
_VERDICT_LABEL = re.compile(r"^[ \t]*(?:\[[ \t]*[A-Za-z]{1,12}[ \t]*\]|[A-Za-z]{1,12}[ \t]*(?:\*\*|__)?[ \t]*:)[ \t]*")
_FIRST_WORD = re.compile(r"^[\W_]*(yes|no|true|false|correct|incorrect|supported|unsupported|pass|fail)\b", re.I)


@_safe(None)
def yes_no(text: str) -> int | None:
    """A binary verdict, 1 or 0: `{"score": 1}` (structured), `Score: 1`/`Score: 0`, `Verdict: yes`, or a reply
    that starts (or ends) with yes/no."""
    structured = _structured(text)
    if structured in (0, 1):
        return structured
    text = _END_INLINE.sub(" ", text)
    labelled = [_int(m.group(1)) for m in _SCORE.finditer(text)]
    labelled = [v for v in labelled if v in (0, 1)]
    if labelled:
        return labelled[-1]
    verdicts = list(_VERDICT.finditer(text))
    if verdicts:
        return _YES[verdicts[-1].group(1).lower()]
    lines = [x for x in (_VERDICT_LABEL.sub("", _LEAD.sub("", line, count=1), count=1)
                         for line in text.strip().splitlines()) if x.strip()]
    for candidate in (lines[:1] + lines[-1:]) if lines else []:
        m = _FIRST_WORD.match(candidate)
        if m and (candidate is lines[0] or len(candidate.split()) <= 3):
            return _YES[m.group(1).lower()]
    m = _TAIL_DIGIT.search(text.strip())
    if m and m.group(1) in ("0", "1"):
        return int(m.group(1))
    return None


# ---- the registry the pipelines name parsers by -------------------------------------------------------

@dataclass(frozen=True)
class ParserSpec:
    """A named parser as a block uses it: the fields each item has, and whether a cut-off last item is unusable."""

    name: str
    parse: Callable[[str], list[dict]]
    fields: tuple[str, ...]
    drops_cut_item: bool  # True: when the reply hit max_tokens, its last item was still being written
    doc: str = ""


def _as_items(fn: Callable[[str], int | None]) -> Callable[[str], list[dict]]:
    def items(text: str) -> list[dict]:
        v = fn(text)
        return [] if v is None else [{"score": v}]

    return items


PARSERS: dict[str, ParserSpec] = {p.name: p for p in (
    ParserSpec("qa_pairs", qa_pairs, ("question", "answer"), True, qa_pairs.__doc__ or ""),
    ParserSpec("questions", questions, ("question",), True, questions.__doc__ or ""),
    ParserSpec("answer", answer, ("answer",), True, answer.__doc__ or ""),
    ParserSpec("contexts", contexts, ("context",), True, contexts.__doc__ or ""),
    ParserSpec("score", _as_items(score), ("score",), False, score.__doc__ or ""),
    ParserSpec("yes_no", _as_items(yes_no), ("score",), False, yes_no.__doc__ or ""),
)}
