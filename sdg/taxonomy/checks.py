"""Our own checks beyond InstructLab's schema: what would make generation waste time or go wrong.

They are warnings unless generation could not use the file (an unsafe document source is an error).
Each check returns findings positioned on the YAML node it is about.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import yaml

from sdg.errors import UnsafeSourceError
from sdg.taxonomy.tokens import estimate_tokens
from sdg.taxonomy.yamlload import locate

# (yaml path parts, yaml path text, severity, message)
Issue = tuple[list[Any], str, str, str]
USED_QNA_PER_SEED = 3


@dataclass(frozen=True)
class CheckContext:
    kind: str  # knowledge | compositional_skills | foundational_skills
    contents: Mapping[str, Any]
    node: yaml.Node | None
    seed_token_budget: int
    document_policy: Any = None  # sdg.taxonomy.documents.DocumentPolicy; None = transport safety only


def _seeds(contents: Mapping[str, Any]) -> list[Any]:
    seeds = contents.get("seed_examples")
    return seeds if isinstance(seeds, list) else []


def mixed_seed_kinds(ctx: CheckContext) -> Iterator[Issue]:
    if ctx.kind == "knowledge":
        return
    seeds = [s for s in _seeds(ctx.contents) if isinstance(s, Mapping)]
    grounded = [i for i, s in enumerate(seeds) if str(s.get("context") or "").strip()]
    if grounded and len(grounded) != len(seeds):
        freeform = [i for i in range(len(seeds)) if i not in grounded]
        first = "grounded" if 0 in grounded else "freeform"
        odd = freeform if first == "grounded" else grounded
        one = lambda xs: [i + 1 for i in xs]  # noqa: E731 - people count seeds from 1
        yield (["seed_examples"], ".seed_examples", "warning",
               f"seed examples mix grounded (with context: {one(grounded)}) and freeform (without: {one(freeform)}); "
               f"the leaf runs as a {first} skill (its first seed decides), so seeds {one(odd)} are used out of kind; "
               "move them to their own leaf")


def unused_qna(ctx: CheckContext) -> Iterator[Issue]:
    if ctx.kind != "knowledge":
        return
    for i, seed in enumerate(_seeds(ctx.contents)):
        qna = seed.get("questions_and_answers") if isinstance(seed, Mapping) else None
        if isinstance(qna, list) and len(qna) > USED_QNA_PER_SEED:
            yield ([  "seed_examples", i, "questions_and_answers"], f".seed_examples[{i}].questions_and_answers", "warning",
                   f"{len(qna)} questions_and_answers, but only the first {USED_QNA_PER_SEED} are used in prompts; "
                   f"move the other {len(qna) - USED_QNA_PER_SEED} to another seed example or drop them")


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def seed_budget(ctx: CheckContext) -> Iterator[Issue]:
    budget = ctx.seed_token_budget
    for i, seed in enumerate(_seeds(ctx.contents)):
        if not isinstance(seed, Mapping):
            continue
        parts: dict[str, int] = {}
        if ctx.kind == "knowledge":
            parts["context"] = estimate_tokens(_text(seed.get("context")))
            qna = seed.get("questions_and_answers")
            qna = qna[:USED_QNA_PER_SEED] if isinstance(qna, list) else []
            parts["questions_and_answers"] = sum(
                estimate_tokens(_text(q.get("question"))) + estimate_tokens(_text(q.get("answer")))
                for q in qna if isinstance(q, Mapping))
            parts["document_outline"] = estimate_tokens(_text(ctx.contents.get("document_outline")))
        else:
            for key in ("context", "question", "answer"):
                parts[key] = estimate_tokens(_text(seed.get(key)))
        total = sum(parts.values())
        if total > budget:
            detail = ", ".join(f"{k} {v:,}" for k, v in parts.items() if v)
            yield (["seed_examples", i], f".seed_examples[{i}]", "warning",
                   f"seed example {i + 1} is about {total:,} tokens ({detail}); prompts have room for about "
                   f"{budget:,} tokens of seed text (teacher.context_length - teacher.max_tokens - prompt, or "
                   "taxonomy.seed_token_budget): shorten it or the teacher will reject its requests")


def document_source(ctx: CheckContext) -> Iterator[Issue]:
    from sdg.taxonomy.documents import check_pattern, check_repo_url, check_source

    doc = ctx.contents.get("document")
    if ctx.kind != "knowledge" or not isinstance(doc, Mapping):
        return
    repo = doc.get("repo")
    if isinstance(repo, str):
        try:
            check_repo_url(repo)
            if ctx.document_policy is not None:
                check_source(repo, str(doc.get("commit", "")), ctx.document_policy)
        except UnsafeSourceError as exc:
            yield (["document", "repo"], ".document.repo", "error", str(exc))
    patterns = doc.get("patterns")
    for i, pattern in enumerate(patterns if isinstance(patterns, list) else []):
        if isinstance(pattern, str):
            try:
                check_pattern(pattern)
            except UnsafeSourceError as exc:
                yield (["document", "patterns", i], f".document.patterns[{i}]", "error", str(exc))


FILE_CHECKS: tuple[Callable[[CheckContext], Iterator[Issue]], ...] = (
    mixed_seed_kinds, unused_qna, seed_budget, document_source)


def run_file_checks(ctx: CheckContext) -> Iterator[tuple[int, int, str, str, str]]:
    """(line, col, yaml path, severity, message) for every issue our checks find."""
    for check in FILE_CHECKS:
        for path, yaml_path, severity, message in check(ctx):
            line, col = locate(ctx.node, path)
            yield line, col, yaml_path, severity, message


def _text_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text_keys(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """One text per JSON-equal value (key order ignored; non-text keys and dates made text)."""
    return json.dumps(_text_keys(value), sort_keys=True, default=repr, ensure_ascii=False)


def leaf_fingerprint(contents: Mapping[str, Any]) -> str:
    """Identity of a leaf's generation input: same seeds (and document) = duplicate leaf."""
    key = {"seed_examples": contents.get("seed_examples"), "document": contents.get("document")}
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()
