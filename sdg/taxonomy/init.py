"""`sdg taxonomy init`: clone a taxonomy, or create a skeleton whose example leaves validate.

The skeleton's knowledge leaf needs a document repository pinned to a commit; we make a tiny local
one beside the taxonomy (deterministic author, dates and git settings, so its commit is the same
everywhere), so generation works offline on a laptop. Local document sources are refused by default
(`taxonomy.documents.allow`); this one is trusted by its exact place (`example_documents_dir`) and the
commit of the example sdg ships (`example_commit`, computed from the package data), see
`sdg.taxonomy.documents.DocumentPolicy.for_taxonomy`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import git

from sdg.errors import GitError, TaxonomyError
from sdg.taxonomy import gitutil
from sdg.taxonomy.layout import ROOTS

_IDENTITY = {
    "GIT_AUTHOR_NAME": "sdg taxonomy init", "GIT_AUTHOR_EMAIL": "sdg@localhost",
    "GIT_COMMITTER_NAME": "sdg taxonomy init", "GIT_COMMITTER_EMAIL": "sdg@localhost",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
}


@dataclass(frozen=True)
class InitResult:
    path: Path
    action: str  # cloned | created | exists
    documents_repo: Path | None = None


EXAMPLE_MESSAGE = "Example knowledge documents"
# No user or system git config (hooks, filters, autocrlf, signing) for the example repository, so its
# commit is exactly `example_commit()` on every machine.
_ISOLATED = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _git(args: list[str], cwd: Path, what: str, isolated: bool = False) -> str:
    env = {**os.environ, **gitutil.SAFE_GIT_ENV, **_IDENTITY, **(_ISOLATED if isolated else {})}
    try:
        return git.Git(str(cwd)).execute(["git", *args], env=env)
    except git.GitCommandError as exc:
        raise GitError(f"{what} failed: {(exc.stderr or '').strip()}") from None


def _commit_all(path: Path, message: str, isolated: bool = False) -> str:
    _git(["init", "-q", "-b", "main"], path, f"git init in {path}", isolated)
    _git(["add", "-A"], path, f"git add in {path}", isolated)
    _git(["-c", "commit.gpgsign=false", "commit", "-q", "-m", message], path, f"git commit in {path}", isolated)
    return _git(["rev-parse", "HEAD"], path, "git rev-parse", isolated).strip()


def example_documents_dir(taxonomy: Path) -> Path:
    """Where `sdg taxonomy init` puts the example document repository of a skeleton at `taxonomy`."""
    taxonomy = Path(taxonomy)
    return taxonomy.parent / f"{taxonomy.name}-example-documents"


def _git_object(kind: bytes, body: bytes) -> str:
    return hashlib.sha1(b"%s %d\0" % (kind, len(body)) + body).hexdigest()


def _tree_sha(node) -> str | None:
    """git's tree id of package data folder `node`, as `git add -A` stores it (files 100644)."""
    entries = []
    for child in node.iterdir():
        if child.name == "__pycache__":
            continue
        name = child.name.encode("utf-8")
        if child.is_dir():
            sha = _tree_sha(child)
            if sha is not None:  # git keeps no empty folders
                entries.append((name + b"/", b"40000 " + name + b"\0" + bytes.fromhex(sha)))
        else:
            sha = _git_object(b"blob", child.read_bytes())
            entries.append((name, b"100644 " + name + b"\0" + bytes.fromhex(sha)))
    if not entries:
        return None
    return _git_object(b"tree", b"".join(body for _, body in sorted(entries)))


@functools.lru_cache(maxsize=1)
def example_commit() -> str:
    """The commit sha of the example document repository, computed from the package data alone."""
    tree = _tree_sha(resources.files("sdg.taxonomy").joinpath("example_documents"))
    if tree is None:
        raise ValueError("sdg's example documents are missing from the installed package")
    when = datetime.strptime(_IDENTITY["GIT_COMMITTER_DATE"], "%Y-%m-%dT%H:%M:%S%z")
    stamp = f"{int(when.timestamp())} {when.strftime('%z')}"
    author = f"{_IDENTITY['GIT_AUTHOR_NAME']} <{_IDENTITY['GIT_AUTHOR_EMAIL']}> {stamp}"
    committer = f"{_IDENTITY['GIT_COMMITTER_NAME']} <{_IDENTITY['GIT_COMMITTER_EMAIL']}> {stamp}"
    body = f"tree {tree}\nauthor {author}\ncommitter {committer}\n\n{EXAMPLE_MESSAGE}\n"
    return _git_object(b"commit", body.encode("utf-8"))


def _copy_package_tree(folder: str, dest: Path) -> None:
    """Copy package data `sdg/taxonomy/<folder>` (works from a wheel or a source tree)."""
    root = resources.files("sdg.taxonomy").joinpath(folder)

    def copy(node, target: Path) -> None:
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                (target / child.name).mkdir(exist_ok=True)
                copy(child, target / child.name)
            else:
                (target / child.name).write_bytes(child.read_bytes())

    dest.mkdir(parents=True, exist_ok=True)
    copy(root, dest)


def example_documents_repo(dest: Path) -> tuple[Path, str]:
    """The local git repo holding the example knowledge document; (path, pinned commit)."""
    repo = gitutil.open_repo(dest) if (dest / ".git").exists() else None
    if repo is not None and gitutil.head_exists(repo):
        return dest, repo.head.commit.hexsha
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".sdg-docs-", dir=dest.parent))
    _copy_package_tree("example_documents", work)
    commit = _commit_all(work, EXAMPLE_MESSAGE, isolated=True)
    os.replace(work, dest)
    return dest, commit


def _looks_like_taxonomy(path: Path) -> bool:
    return any((path / r).is_dir() for r in ROOTS)


def _origin_url(path: Path) -> str | None:
    repo = gitutil.open_repo(path)
    if repo is None or Path(repo.working_tree_dir or "") != path.resolve():
        return None
    try:
        return repo.remotes.origin.url
    except (AttributeError, ValueError):
        return None


def init_taxonomy(path: Path, repository: str | None = None, documents_dir: Path | None = None) -> InitResult:
    """Clone `repository` into `path`, or create the skeleton there; safe to run again."""
    from sdg.taxonomy.documents import check_repo_url

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise TaxonomyError(f"'{path}' exists and is not a directory; pass --path DIR for the taxonomy")
    if path.is_dir() and any(path.iterdir()):
        origin = _origin_url(path)
        if repository and origin == repository:
            return InitResult(path, "exists")
        if not repository and _looks_like_taxonomy(path):
            return InitResult(path, "exists")
        what = f"a clone of {origin}" if origin else "files that are not a taxonomy"
        raise TaxonomyError(f"'{path}' is not empty: it holds {what}. Refusing to overwrite it; "
                            "pass --path DIR for a new taxonomy, or remove that directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        if repository:
            check_repo_url(repository)
            shutil.rmtree(work)
            _git(["-c", "protocol.ext.allow=never", "clone", "-q", "--", repository, str(work)], path.parent,
                 f"cloning the taxonomy {repository}")
            action, docs = "cloned", None
        else:
            docs_dir = documents_dir or example_documents_dir(path)
            docs, commit = example_documents_repo(docs_dir)
            _copy_package_tree("skeleton", work)
            leaf = work / "knowledge/science/astronomy/solar_eclipses/qna.yaml"
            text = leaf.read_text(encoding="utf-8")
            leaf.write_text(text.replace("{{DOCUMENTS_REPO}}", docs.resolve().as_uri())
                            .replace("{{DOCUMENTS_COMMIT}}", commit), encoding="utf-8")
            _commit_all(work, "Taxonomy skeleton from sdg taxonomy init")
            action = "created"
        if path.is_dir():
            path.rmdir()
        os.replace(work, path)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return InitResult(path, action, docs)
