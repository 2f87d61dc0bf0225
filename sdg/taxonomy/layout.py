"""What a taxonomy looks like on disk: roots, leaf files, near-miss names."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

ROOTS = ("compositional_skills", "foundational_skills", "knowledge")
QNA_NAME = "qna.yaml"
NEAR_MISS_NAMES = frozenset({"qna.yml", "qna.yaml", "qna.yam", "qna.json", "qa.yaml"})


def is_taxonomy_file(rel: str) -> bool:
    """A leaf file: exactly `qna.yaml`, below one of the three roots."""
    parts = rel.split("/")
    return len(parts) >= 2 and parts[0] in ROOTS and parts[-1] == QNA_NAME


def is_near_miss(rel: str) -> bool:
    """A file that was probably meant to be a leaf but will not be read (`qna.yml`, `QNA.yaml`)."""
    parts = rel.split("/")
    name = parts[-1]
    return len(parts) >= 2 and parts[0] in ROOTS and name != QNA_NAME and name.lower() in NEAR_MISS_NAMES


def taxonomy_parts(path: Path, roots: Sequence[Path] = ()) -> tuple[str, ...]:
    """The file's path inside the taxonomy: relative to the first of `roots` holding it, else from the
    last taxonomy root folder name in its path (InstructLab's rule)."""
    absolute = path.absolute()
    for root in roots:
        try:
            return absolute.relative_to(root.absolute()).parts
        except ValueError:
            continue
    parts = absolute.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ROOTS:
            return parts[i:]
    return (path.name,)


def taxonomy_root_of(target: Path) -> Path | None:
    """The taxonomy root holding `target`: the nearest git work tree root with a taxonomy root folder."""
    from sdg.taxonomy.gitutil import open_repo

    repo = open_repo(target if target.is_dir() else target.parent)
    if repo is not None and repo.working_tree_dir:
        top = Path(repo.working_tree_dir)
        if any((top / r).is_dir() for r in ROOTS):
            return top
    return None
