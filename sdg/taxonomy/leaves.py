"""Leaves as typed records, one class per kind, each with a stable id and a file-safe name.

Kinds follow the taxonomy root and, for compositional skills, the first seed (as InstructLab routes a
leaf): `context` present = grounded skill. `foundational_skills/` leaves are their own kind (InstructLab
ignores that root); generation runs them through the freeform (or grounded) skill pipelines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence, Union

from sdg.errors import TaxonomyError, ValidationFailed
from sdg.taxonomy.documents import DocumentPolicy, DocumentSource, fetch_documents
from sdg.taxonomy.validate import FileResult, ValidationOptions, ValidationResult, validate_files

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no "." either: journals use it as a separator
_NAME_BUDGET = 120


def leaf_id(parts: Sequence[str]) -> str:
    """`knowledge->science->astronomy` from the leaf file's path parts (the file name dropped)."""
    dirs = list(parts[:-1]) if parts and parts[-1].endswith((".yaml", ".yml")) else list(parts)
    return "->".join(dirs)


def file_safe_name(lid: str) -> str:
    """InstructLab's readable `a_b_c` plus a hash of the exact id, so `a/b_c` and `a_b/c` differ."""
    readable = _UNSAFE.sub("-", lid.replace("->", "_")).strip("-") or "leaf"
    digest = hashlib.sha256(lid.encode("utf-8")).hexdigest()[:10]
    return f"{readable[:_NAME_BUDGET]}-{digest}"


@dataclass(frozen=True)
class SkillSeed:
    question: str
    answer: str
    context: str | None = None


@dataclass(frozen=True)
class QnA:
    question: str
    answer: str


@dataclass(frozen=True)
class KnowledgeSeed:
    context: str
    qna: tuple[QnA, ...]


@dataclass(frozen=True)
class _LeafBase:
    id: str
    name: str
    path: str  # the qna.yaml, relative to the taxonomy root
    created_by: str
    version: int


@dataclass(frozen=True)
class FreeformSkillLeaf(_LeafBase):
    kind: ClassVar[str] = "freeform_skill"
    task_description: str = ""
    seeds: tuple[SkillSeed, ...] = ()


@dataclass(frozen=True)
class GroundedSkillLeaf(_LeafBase):
    kind: ClassVar[str] = "grounded_skill"
    task_description: str = ""
    seeds: tuple[SkillSeed, ...] = ()


@dataclass(frozen=True)
class FoundationalSkillLeaf(_LeafBase):
    kind: ClassVar[str] = "foundational_skill"
    task_description: str = ""
    seeds: tuple[SkillSeed, ...] = ()
    grounded: bool = False


@dataclass(frozen=True)
class KnowledgeLeaf(_LeafBase):
    kind: ClassVar[str] = "knowledge"
    domain: str = ""
    document_outline: str = ""
    seeds: tuple[KnowledgeSeed, ...] = ()
    document: DocumentSource | None = None
    chunks: tuple[Any, ...] = field(default=(), repr=False)  # sdg.taxonomy.chunking.Chunk
    # The source policy and caps its documents are fetched under (from the validation that loaded it,
    # i.e. from the config, with sdg's own example beside its taxonomy trusted); None = the default policy.
    document_policy: DocumentPolicy | None = field(default=None, repr=False, compare=False)


Leaf = Union[FreeformSkillLeaf, GroundedSkillLeaf, FoundationalSkillLeaf, KnowledgeLeaf]


def _skill_seeds(contents: Mapping[str, Any]) -> tuple[SkillSeed, ...]:
    return tuple(SkillSeed(str(s["question"]), str(s["answer"]), (str(s["context"]) if s.get("context") else None))
                 for s in contents["seed_examples"])


def leaf_from(result: FileResult) -> Leaf:
    """The typed leaf of a file that validated without errors."""
    if not result.ok or result.contents is None:
        raise TaxonomyError(f"{result.display}: cannot load a leaf from a file with validation errors")
    c = result.contents
    lid = leaf_id(result.parts)
    base = dict(id=lid, name=file_safe_name(lid), path="/".join(result.parts), created_by=str(c["created_by"]),
                version=result.version)
    root = result.parts[0] if result.parts else ""
    if root == "knowledge" or (root not in ("compositional_skills", "foundational_skills") and "document" in c):
        doc = c["document"]
        seeds = tuple(KnowledgeSeed(str(s["context"]), tuple(QnA(str(q["question"]), str(q["answer"]))
                                                              for q in s["questions_and_answers"]))
                      for s in c["seed_examples"])
        ref = DocumentSource(str(doc["repo"]), str(doc["commit"]), tuple(str(p) for p in doc["patterns"]))
        return KnowledgeLeaf(**base, domain=str(c["domain"]), document_outline=str(c["document_outline"]),
                             seeds=seeds, document=ref, document_policy=result.document_policy)
    seeds = _skill_seeds(c)
    grounded = bool(seeds and seeds[0].context)
    if root == "foundational_skills":
        return FoundationalSkillLeaf(**base, task_description=str(c.get("task_description", "")), seeds=seeds,
                                     grounded=grounded)
    cls = GroundedSkillLeaf if grounded else FreeformSkillLeaf
    return cls(**base, task_description=str(c.get("task_description", "")), seeds=seeds)


def load_leaves(root: Path, rel_paths: Sequence[str], options: ValidationOptions = ValidationOptions()
                ) -> tuple[list[Leaf], ValidationResult]:
    """Validate the files and type them; ValidationFailed (with every finding) if any has errors."""
    result = validate_files([Path(root) / p for p in rel_paths], Path(root), options)
    if not result.ok:
        bad = sum(1 for f in result.files if not f.ok)
        raise ValidationFailed(f"{result.errors} errors in {bad} of {len(result.files)} taxonomy files; "
                               "run `sdg taxonomy validate` for the list", list(result.findings))
    leaves = [leaf_from(r) for r in result.files]
    names: dict[str, str] = {}
    for leaf in leaves:
        other = names.setdefault(leaf.name, leaf.id)
        if other != leaf.id:
            raise TaxonomyError(f"leaves '{other}' and '{leaf.id}' map to the same file name '{leaf.name}'")
    return leaves, result


def with_chunks(leaf: KnowledgeLeaf, cache_dir: Path, max_tokens: int = 500, overlap_tokens: int = 50,
                policy: DocumentPolicy | None = None) -> KnowledgeLeaf:
    """The leaf with its documents fetched at the pinned commit and chunked, within `policy` (default: the
    leaf's own `document_policy`, else the default policy): refusals name the leaf's qna.yaml."""
    from sdg.taxonomy.chunking import chunk_documents

    assert leaf.document is not None
    policy = policy or leaf.document_policy or DocumentPolicy()
    fetched = fetch_documents(leaf.document, Path(cache_dir), policy, leaf=leaf.path)
    chunks = chunk_documents(fetched.documents, max_tokens=max_tokens, overlap_tokens=overlap_tokens,
                             max_chunks=policy.max_chunks_per_leaf, leaf=leaf.path)
    return replace(leaf, chunks=tuple(chunks))
