"""Thin git helpers over gitpython: argument lists only, errors turned into GitError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import git

from sdg.errors import GitError

# git's own transport allowlist, for every git process we start (defence in depth).
SAFE_GIT_ENV = {
    "GIT_ALLOW_PROTOCOL": "https:ssh:git:file",
    "GIT_TERMINAL_PROMPT": "0",
}


def open_repo(path: Path) -> git.Repo | None:
    """The git repository whose work tree holds `path`, or None if it is not in one."""
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def run(repo: git.Repo, args: Sequence[str], cwd: Path | None = None, what: str = "") -> str:
    """`git <args>` in the repo (or `cwd`); a failure becomes GitError with git's own words."""
    try:
        cmd = git.Git(str(cwd) if cwd else repo.working_tree_dir)
        return cmd.execute(["git", *args], env={**os.environ, **SAFE_GIT_ENV}, strip_newline_in_stdout=False)
    except git.GitCommandError as exc:
        err = (exc.stderr or "").strip().replace("stderr: ", "").strip("' \n")
        raise GitError(f"git {' '.join(args[:2])} failed{' (' + what + ')' if what else ''}: {err}") from None


def ref_exists(repo: git.Repo, ref: str) -> bool:
    if ref.startswith("-"):
        return False
    try:
        run(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"])
        return True
    except GitError:
        return False


def head_exists(repo: git.Repo) -> bool:
    return ref_exists(repo, "HEAD")
