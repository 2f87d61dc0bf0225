"""Fetch a knowledge leaf's documents at the commit its `qna.yaml` pins.

A knowledge leaf names `document: {repo, commit, patterns}`. The repo URL and patterns come from
contributors, so they are treated as untrusted: only a fixed set of git transports is accepted (git's
`ext::` helper runs arbitrary commands), git runs with those transports allow-listed in its
environment as a second fence, and every matched file is resolved so a symlink cannot read outside
the checkout. Checkouts are cached per repo+commit and published by an atomic rename, so concurrent
jobs on a cluster share one clone and a crash never leaves a half checkout that looks complete.
Pinning a full commit sha (not a branch) is what makes the cache sound.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from sdg.errors import DocumentError, UnsafeSourceError
from sdg.taxonomy.gitutil import SAFE_GIT_ENV

ALLOWED_TRANSPORTS = (
    "https://",
    "ssh://",
    "git://",
    "file://",
    "scp-like [user@]host:path",
    "a local path",
)
_ALLOWED_TEXT = ", ".join(ALLOWED_TRANSPORTS)
_URL_SCHEMES = frozenset({"https", "ssh", "git", "file"})
GIT_TIMEOUT_S = 1800
COMPLETE_MARKER = "sdg-complete"  # lives in <checkout>/.git/, so patterns never see it
MAX_WALK_ENTRIES = 200_000
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
PDF_SUFFIXES = frozenset({".pdf"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HELPER = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9+.-]*)?::")  # git's `<transport>::<address>`
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"^(?:[^@/:]+@)?(\[[^\]/]+\]|[^:/\[\]@]+):(.+)$", re.DOTALL)
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class DocumentSource:
    """Where a knowledge leaf's documents live: `document:` of its qna.yaml."""

    repo: str
    commit: str
    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.patterns, str):  # a bare string would glob per character
            object.__setattr__(self, "patterns", (self.patterns,))
        else:
            object.__setattr__(self, "patterns", tuple(self.patterns))


@dataclass(frozen=True)
class Document:
    """One usable document: markdown text, or text extracted from a PDF."""

    path: str  # relative to the checkout, posix
    text: str
    kind: str  # "md" | "pdf"


@dataclass(frozen=True)
class FetchedDocuments:
    """Everything `fetch_documents` found for one source."""

    source: DocumentSource
    checkout: Path
    documents: tuple[Document, ...]
    skipped: tuple[str, ...]  # matched files with unsupported extensions, relative posix paths


# --------------------------------------------------------------------------- validation


def _display_url(url: str) -> str:
    """The URL with any password/token in it masked, for messages and logs."""
    match = _SCHEME.match(url)
    if not match:
        return url
    rest = url[match.end():]
    netloc, sep, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{match.group(0)}{netloc}{sep}{path}"


def _refuse_url(url: str, why: str) -> UnsafeSourceError:
    return UnsafeSourceError(
        f"document repo {_display_url(url)!r} is not allowed: {why}; "
        f"allowed are {_ALLOWED_TEXT}"
    )


def check_repo_url(url: str) -> None:
    """Refuse repo URLs whose transport could run commands or inject git options."""
    if not isinstance(url, str):
        raise _refuse_url(str(url), f"it is a {type(url).__name__}, not a text URL")
    if not url.strip():
        raise _refuse_url(url, "it is empty")
    if _CONTROL.search(url):
        raise _refuse_url(url, "it contains control characters or newlines")
    if url != url.strip():
        raise _refuse_url(url, "it has leading or trailing whitespace")
    if url.startswith("-"):
        raise _refuse_url(url, "it starts with '-' and would be read as a git option")
    if _HELPER.match(url):
        raise _refuse_url(url, "'<transport>::<address>' remote helpers (such as ext::) can run commands")
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1)
        if name == "http":
            raise _refuse_url(url, "plain http:// is unauthenticated and unencrypted; use https://")
        if name not in _URL_SCHEMES:
            raise _refuse_url(url, f"transport {name}:// is not allowed")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise _refuse_url(url, f"it is not a valid URL ({exc})") from None
        if name != "file" and not host:
            raise _refuse_url(url, "it has no host")
        if host and host.startswith("-"):
            raise _refuse_url(url, "its host starts with '-'")
        if name == "file" and not parts.path:
            raise _refuse_url(url, "it has no path")
        return
    colon, slash = url.find(":"), url.find("/")
    if colon != -1 and (slash == -1 or colon < slash):  # git reads this as scp-like ssh
        scp = _SCP.match(url)
        if not scp:
            raise _refuse_url(url, "it looks like an scp-style address but is not [user@]host:path")
        if scp.group(1).startswith("-"):
            raise _refuse_url(url, "its host starts with '-'")
    # Otherwise a local filesystem path (absolute or relative): git's own rule.


def _check_commit(commit: str) -> None:
    if not isinstance(commit, str) or not commit:
        raise UnsafeSourceError("document commit is empty; pin the commit sha the documents were written at")
    if commit.startswith("-"):
        raise UnsafeSourceError(f"document commit {commit!r} starts with '-' and would be read as a git option")
    if re.search(r"[\s\x00-\x1f\x7f]", commit):
        raise UnsafeSourceError(f"document commit {commit!r} contains whitespace or control characters")


_PATTERN_FIX = "use a pattern relative to the document repository's root, e.g. 'docs/*.md' or '**/*.md'"


def check_pattern(pattern: str) -> None:
    """Refuse patterns that could name files outside the checkout."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise UnsafeSourceError(f"document pattern {pattern!r} is empty")
    if _CONTROL.search(pattern):
        raise UnsafeSourceError(f"document pattern {pattern!r} contains control characters")
    if pattern.startswith(("/", "\\")) or _WINDOWS_ABS.match(pattern) or os.path.isabs(pattern):
        raise UnsafeSourceError(
            f"document pattern {pattern!r} is absolute; {_PATTERN_FIX}"
        )
    if pattern.startswith("~"):
        raise UnsafeSourceError(f"document pattern {pattern!r} starts with '~'; {_PATTERN_FIX}")
    if ".." in re.split(r"[\\/]", pattern):
        raise UnsafeSourceError(f"document pattern {pattern!r} contains a '..' segment and could leave the checkout; "
                                f"{_PATTERN_FIX}")


# --------------------------------------------------------------------------- git


def _git_env() -> dict[str, str]:
    return {**os.environ, **SAFE_GIT_ENV, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def _git(args: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git with an argument list (never a shell string) and the transport allow-list."""
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "advice.detachedHead=false", *args]
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DocumentError("git is not installed or not on PATH; it is needed to fetch knowledge documents") from exc
    except subprocess.TimeoutExpired as exc:
        raise DocumentError(f"git {args[0]} took longer than {GIT_TIMEOUT_S}s and was stopped") from exc


def _tail(stderr: str, lines: int = 8, chars: int = 1200) -> str:
    text = "\n".join(stderr.strip().splitlines()[-lines:])
    return text[-chars:] if text else "(git printed nothing)"


def cache_key(source: DocumentSource) -> str:
    """Directory name for one repo+commit: stable, filesystem-safe, collision-resistant."""
    repo_hash = hashlib.sha256(source.repo.encode("utf-8")).hexdigest()[:16]
    commit = _SAFE_KEY.sub("_", source.commit)[:64]
    if commit != source.commit:  # `a/b` and `a_b` must not share a directory
        commit += "-" + hashlib.sha256(source.commit.encode("utf-8")).hexdigest()[:8]
    return f"{repo_hash}-{commit}"


def _is_complete(checkout: Path) -> bool:
    return (checkout / ".git" / COMPLETE_MARKER).is_file()


def _resolve_commit(work: Path, source: DocumentSource) -> str | None:
    for rev in (source.commit, f"refs/remotes/origin/{source.commit}"):
        done = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=work)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return None


def _clone_into(work: Path, source: DocumentSource) -> None:
    shown = f"{_display_url(source.repo)}@{source.commit}"
    done = _git(["clone", "--no-checkout", "--quiet", "--", source.repo, str(work)])
    if done.returncode != 0:
        raise DocumentError(
            f"cannot clone document repo {shown}: {_tail(done.stderr)}\n"
            "Check that the document.repo URL in qna.yaml is right and reachable from this machine "
            "(credentials, network, proxy)."
        )
    sha = _resolve_commit(work, source)
    if sha is None and re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", source.commit):
        # A full sha not on any branch or tag: some servers still serve it when asked directly.
        _git(["fetch", "--quiet", "origin", "--", source.commit], cwd=work)
        sha = _resolve_commit(work, source)
    if sha is None:
        raise DocumentError(
            f"commit {source.commit!r} does not exist in document repo {_display_url(source.repo)} "
            "(no branch, tag or commit by that name after cloning); check document.commit in qna.yaml"
        )
    done = _git(["checkout", "--quiet", "--detach", sha], cwd=work)
    if done.returncode != 0:
        raise DocumentError(
            f"cannot check out {shown} (resolved to {sha}): {_tail(done.stderr)}\n"
            "Check document.commit in qna.yaml, and that the disk holding the cache has space."
        )
    (work / ".git" / COMPLETE_MARKER).write_text(sha + "\n", encoding="utf-8")


def checkout_documents(source: DocumentSource, cache_dir: Path) -> Path:
    """Clone `source.repo` at `source.commit` into the cache, or reuse a complete earlier checkout."""
    check_repo_url(source.repo)
    _check_commit(source.commit)
    cache_dir = Path(cache_dir)
    target = cache_dir / cache_key(source)
    if _is_complete(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=cache_dir))
    try:
        _clone_into(work, source)
        if target.exists() and not _is_complete(target):
            # Left by something other than us (we only ever publish complete checkouts): set aside.
            stale = Path(tempfile.mkdtemp(prefix=f".stale-{target.name}-", dir=cache_dir))
            try:
                os.replace(target, stale / "old")
            except OSError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(work, target)  # atomic: the checkout appears complete or not at all
        except OSError:
            if not _is_complete(target):  # not a concurrent fetch winning the race
                raise
    except OSError as exc:
        raise DocumentError(f"cannot store the checkout of {_display_url(source.repo)} in {cache_dir}: {exc}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Entry:
    rel: tuple[str, ...]  # path segments as seen from the checkout root
    target: Path  # fully resolved
    outside: bool  # resolves outside the checkout
    is_dir: bool  # only for symlinked directories that point outside


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk(root: Path) -> list[_Entry]:
    """Files under root (skipping .git), following symlinks that stay inside and noting those that do not."""
    entries: list[_Entry] = []
    stack: list[tuple[tuple[str, ...], Path, frozenset[Path]]] = [((), root, frozenset({root}))]
    visited = 0
    while stack:
        rel_dir, real_dir, chain = stack.pop()
        try:
            with os.scandir(real_dir) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        below: list[tuple[tuple[str, ...], Path, frozenset[Path]]] = []
        for entry in listing:
            visited += 1
            if visited > MAX_WALK_ENTRIES:
                raise DocumentError(f"document repo has more than {MAX_WALK_ENTRIES} files; narrow it down")
            if entry.name == ".git":
                continue
            rel = (*rel_dir, entry.name)
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not _inside(target, root):
                    entries.append(_Entry(rel, target, outside=True, is_dir=target.is_dir()))
                elif ".git" in target.relative_to(root).parts:
                    continue
                elif target.is_dir():
                    if target not in chain:  # a link back to an ancestor would loop forever
                        below.append((rel, target, chain | {target}))
                elif target.is_file():
                    entries.append(_Entry(rel, target, outside=False, is_dir=False))
            elif entry.is_dir(follow_symlinks=False):
                below.append((rel, path, chain | {path}))
            elif entry.is_file(follow_symlinks=False):
                entries.append(_Entry(rel, path, outside=False, is_dir=False))
        stack.extend(reversed(below))
    return entries


def _pattern_parts(pattern: str) -> tuple[str, ...]:
    return tuple(seg for seg in pattern.split("/") if seg not in ("", "."))


def _segment_matches(seg: str, name: str) -> bool:
    if name.startswith(".") and not seg.startswith("."):  # like glob: wildcards skip hidden names
        return False
    return fnmatch.fnmatchcase(name, seg)


def _matches(pat: tuple[str, ...], parts: tuple[str, ...], *, below: bool = False) -> bool:
    """Glob match of path segments; `below=True`: could something under directory `parts` match."""

    @functools.lru_cache(maxsize=None)
    def go(i: int, j: int) -> bool:
        if j == len(parts):
            if below:
                return i < len(pat)
            return all(seg == "**" for seg in pat[i:])
        if i == len(pat):
            return False
        if pat[i] == "**":
            return go(i + 1, j) or (not parts[j].startswith(".") and go(i, j + 1))
        return _segment_matches(pat[i], parts[j]) and go(i + 1, j + 1)

    return go(0, 0)


def match_documents(checkout: Path, patterns: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Files matching `patterns` under `checkout`: (usable .md/.pdf, skipped others), resolved and sorted."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    for pattern in patterns:
        check_pattern(pattern)
    root = Path(checkout).resolve()
    entries = _walk(root)
    usable: dict[Path, None] = {}
    skipped: dict[Path, None] = {}
    for pattern in patterns:
        pat = _pattern_parts(pattern)
        for entry in entries:
            hit = _matches(pat, entry.rel, below=True) if entry.is_dir else _matches(pat, entry.rel)
            if not hit:
                continue
            if entry.outside:
                raise UnsafeSourceError(
                    f"document pattern {pattern!r} matches {'/'.join(entry.rel)!r}, a symlink that resolves "
                    f"to {str(entry.target)!r} outside the document checkout; remove the link or narrow the pattern"
                )
            suffix = entry.target.suffix.lower()
            bucket = usable if suffix in MARKDOWN_SUFFIXES | PDF_SUFFIXES else skipped
            bucket[entry.target] = None
    key = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return sorted(usable, key=key), sorted(set(skipped) - set(usable), key=key)


# --------------------------------------------------------------------------- reading


def _read_markdown(path: Path, rel: str) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"document {rel} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise DocumentError(f"cannot read document {rel}: {exc}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_pdf(path: Path, rel: str) -> str:
    import pypdf  # imported here: only PDF leaves pay for it

    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"PDF document {rel} is encrypted; commit an unencrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on malformed files
        raise DocumentError(f"cannot extract text from PDF document {rel}: {type(exc).__name__}: {exc}") from exc
    return "\n\n".join(page.strip() for page in pages if page.strip())


def _file_listing(root: Path, limit: int = 10) -> str:
    names = sorted("/".join(e.rel) for e in _walk(root) if not e.outside and not e.rel[-1].startswith("."))
    if not names:
        return "the repository is empty"
    shown = ", ".join(names[:limit])
    more = f", ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"files there: {shown}{more}"


def fetch_documents(source: DocumentSource, cache_dir: Path) -> FetchedDocuments:
    """Check out `source` and read every matched markdown/PDF document."""
    check_repo_url(source.repo)
    _check_commit(source.commit)
    for pattern in source.patterns:
        check_pattern(pattern)
    checkout = checkout_documents(source, cache_dir)
    root = checkout.resolve()
    usable, skipped = match_documents(checkout, source.patterns)
    if not usable:
        raise DocumentError(
            f"no .md or .pdf documents match patterns {list(source.patterns)} in "
            f"{_display_url(source.repo)}@{source.commit} ({_file_listing(root)}); fix document.patterns in qna.yaml"
        )
    documents = []
    for path in usable:
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in PDF_SUFFIXES:
            documents.append(Document(path=rel, text=_read_pdf(path, rel), kind="pdf"))
        else:
            documents.append(Document(path=rel, text=_read_markdown(path, rel), kind="md"))
    return FetchedDocuments(
        source=source,
        checkout=checkout,
        documents=tuple(documents),
        skipped=tuple(p.relative_to(root).as_posix() for p in skipped),
    )
