"""Which leaves changed: `qna.yaml` files added or modified since the fork point with a base ref.

Same answers as `ilab taxonomy diff` (committed + staged + unstaged changes since the fork point, plus
untracked files, deletions left out, renames kept under their new name) but computed with one
`merge-base`, one `diff` and one `ls-files` instead of a `git branch --contains` per commit, and under
all three roots, `foundational_skills/` included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sdg.errors import GitError, TaxonomyError
from sdg.taxonomy import gitutil
from sdg.taxonomy.layout import ROOTS, is_near_miss, is_taxonomy_file

EMPTY_BASE = "empty"


@dataclass(frozen=True)
class TaxonomyDiff:
    """The changed leaf files (relative posix paths, sorted) and how they were found."""

    root: Path
    base: str  # the ref compared against, or "empty"
    fork_point: str | None
    changed: tuple[str, ...]
    near_misses: tuple[str, ...]
    notes: tuple[str, ...] = ()


def walk_tree(root: Path) -> tuple[list[str], list[str]]:
    """Every leaf file and near-miss name under the three roots (no git needed)."""
    leaves: list[str] = []
    near: list[str] = []
    for top in ROOTS:
        base = root / top
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                rel = f"{rel_dir}/{name}"
                if is_taxonomy_file(rel):
                    leaves.append(rel)
                elif is_near_miss(rel):
                    near.append(rel)
    return sorted(leaves), sorted(near)


def _split_z(out: str) -> list[str]:
    return [p for p in out.split("\0") if p]


def _changed_since(repo, root: Path, fork: str) -> list[str]:
    """Paths (relative to root) added/modified/renamed from `fork` to the work tree."""
    out = gitutil.run(repo, ["diff", "--name-status", "-z", "-M", "--relative", "--no-ext-diff", fork, "--"],
                      cwd=root, what=f"comparing the work tree with {fork[:12]}")
    fields = _split_z(out)
    paths: list[str] = []
    i = 0
    while i < len(fields):
        status = fields[i]
        if status[:1] in ("R", "C"):
            paths.append(fields[i + 2])
            i += 3
            continue
        if status[:1] != "D":
            paths.append(fields[i + 1])
        i += 2
    return paths


def _untracked(repo, root: Path) -> list[str]:
    out = gitutil.run(repo, ["ls-files", "--others", "--exclude-standard", "-z", "--", *ROOTS], cwd=root,
                      what="listing untracked files")
    return _split_z(out)


def _missing_base_message(repo, root: Path, base: str) -> str:
    refs = sorted(r.name for r in repo.refs)[:12]
    known = ", ".join(refs) if refs else "none (no commits yet)"
    return (f"the taxonomy base ref '{base}' does not exist in {root}; known refs: {known}. "
            f"Pass --taxonomy-base REF (e.g. main), or --taxonomy-base {EMPTY_BASE} to list every leaf")


DEFAULT_BASE = "origin/main"


def taxonomy_diff(root: Path, base: str | None = None) -> TaxonomyDiff:
    """The leaf files changed against `base`; `base="empty"` lists the whole tree.

    `base=None` (no base configured) means `origin/main` where it exists: a missing `origin/main` or a
    taxonomy that is not a git repository then lists every leaf and says so in `notes`. A base that was
    named (even `origin/main`) must exist.
    """
    fallback_to_empty = base is None
    base = DEFAULT_BASE if base is None else base
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TaxonomyError(f"taxonomy directory '{root}' does not exist; create one with `sdg taxonomy init` "
                            "or pass --taxonomy-path DIR")
    if base == EMPTY_BASE:
        leaves, near = walk_tree(root)
        return TaxonomyDiff(root, EMPTY_BASE, None, tuple(leaves), tuple(near))
    repo = gitutil.open_repo(root)
    if repo is None:
        if not fallback_to_empty:
            raise TaxonomyError(f"'{root}' is not a git repository, so there is nothing to compare with '{base}'; "
                                f"use --taxonomy-base {EMPTY_BASE} to list every leaf")
        leaves, near = walk_tree(root)
        note = f"'{root}' is not a git repository: listing every leaf (as --taxonomy-base {EMPTY_BASE})"
        return TaxonomyDiff(root, EMPTY_BASE, None, tuple(leaves), tuple(near), (note,))
    if not gitutil.ref_exists(repo, base):
        if not fallback_to_empty:
            raise TaxonomyError(_missing_base_message(repo, root, base))
        leaves, near = walk_tree(root)
        note = (f"no base ref '{base}' in {root} (a taxonomy made by `sdg taxonomy init` has no remote): listing "
                f"every leaf, as --taxonomy-base {EMPTY_BASE}; pass --taxonomy-base REF to compare with a branch")
        return TaxonomyDiff(root, EMPTY_BASE, None, tuple(leaves), tuple(near), (note,))
    if not gitutil.head_exists(repo):
        raise TaxonomyError(f"the taxonomy in {root} has no commits on HEAD, so it cannot be compared with '{base}'; "
                            f"commit, or use --taxonomy-base {EMPTY_BASE}")
    try:
        fork = gitutil.run(repo, ["merge-base", "HEAD", "--end-of-options", base], cwd=root).strip()
    except GitError:
        raise TaxonomyError(f"HEAD and '{base}' share no history in {root}, so there is no fork point to compare "
                            f"with; pick another --taxonomy-base or use {EMPTY_BASE}") from None
    candidates = set(_changed_since(repo, root, fork)) | set(_untracked(repo, root))
    changed = sorted(p for p in candidates if is_taxonomy_file(p) and (root / p).exists())
    near = sorted(p for p in candidates if is_near_miss(p))
    return TaxonomyDiff(root, base, fork, tuple(changed), tuple(near))
