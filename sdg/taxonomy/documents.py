"""Fetch a knowledge leaf's documents at the commit its `qna.yaml` pins, within a source policy and caps.

A knowledge leaf names `document: {repo, commit, patterns}`. The repo URL and patterns come from
contributors, so they are treated as untrusted:

- transport safety (`check_repo_url`): only transports git cannot be talked into running commands with
  (git's `ext::` helper runs arbitrary commands; a leading `-` is read as an option);
- source policy (`DocumentPolicy`, config `taxonomy.documents.allow` / `.hosts`): by default https and
  ssh to any host; `git://`, `file://` and local paths only when allowed. A local source could read any
  repository on this machine into generated data, so the one local source trusted without the setting is
  sdg's own example, recognised by its exact place beside the taxonomy (where `sdg taxonomy init` puts it)
  and the commit sha of the example sdg ships (see `DocumentPolicy.for_taxonomy`);
- git runs with an argument list (never a shell string), the one transport of the source allow-listed in
  its environment, credential helpers and askpass programs off, no terminal prompts and ssh in batch mode,
  and fetches only the pinned commit, shallowly (`git_invocation`);
- every matched file is resolved so a symlink cannot read outside the checkout;
- caps bound what one leaf may cost: bytes per file and per leaf (markdown read in bounded blocks, never
  whole), PDF pages and extraction time per file, chunks per leaf (`sdg.taxonomy.chunking`).

Checkouts are cached per repo+commit and published by an atomic rename, so concurrent jobs on a cluster
share one clone and a crash never leaves a half checkout that looks complete. Pinning a full commit sha
(not a branch) is what makes the cache sound.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Sequence
from urllib.parse import unquote, urlsplit

from sdg.errors import ConfigError, DocumentError, UnsafeSourceError
from sdg.taxonomy.gitutil import SAFE_GIT_ENV

log = logging.getLogger(__name__)

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
NOTES_FILE = "sdg-notes"  # <checkout>/.git/sdg-notes: what fetching had to do differently (one line each)
MAX_WALK_ENTRIES = 200_000
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
PDF_SUFFIXES = frozenset({".pdf"})
READ_BLOCK = 1 << 20  # markdown is read in blocks of this many bytes, never whole

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
    notes: tuple[str, ...] = ()  # what fetching had to do differently (e.g. a full fetch), for logs


# --------------------------------------------------------------------------- source policy and caps

SOURCE_KINDS = ("https", "ssh", "git", "local")  # what taxonomy.documents.allow may name
DEFAULT_ALLOW = ("https", "ssh")
_GIT_PROTOCOL = {"https": "https", "ssh": "ssh", "git": "git", "local": "file"}  # GIT_ALLOW_PROTOCOL names
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_HOST_ENTRY = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$|^\[[0-9a-f:.]+\]$")
_SHA_LIKE = re.compile(r"[0-9a-fA-F]{4,64}")
# What a server says when it will not send a commit asked for by its sha (protocol v0/v1 without
# uploadpack.allowAnySHA1InWant, or an abbreviated sha that is no ref name).
_REFUSED_BY_SHA = re.compile(r"not our ref|unadvertised object|couldn't find remote ref|no such remote ref|"
                             r"does not allow request", re.IGNORECASE)

MiB = 1 << 20


@dataclass(frozen=True)
class DocumentPolicy:
    """Which knowledge document sources may be fetched, and how much one leaf may read from them.

    Built from the `taxonomy.documents` config section (`from_config`); the defaults here are the
    config's. `trusted` holds (real path, commit) of local sources trusted without `local` in `allow`:
    only ever sdg's own example documents, added by `for_taxonomy`.
    """

    allow: tuple[str, ...] = DEFAULT_ALLOW
    hosts: tuple[str, ...] = ()  # empty = any host
    max_bytes: int = 50 * MiB  # a leaf's documents: on disk in total, and text they yield in total
    max_file_bytes: int = 25 * MiB  # one document file, on disk (markdown is also read no further)
    max_pdf_pages: int = 2000  # pages of one PDF
    pdf_timeout_s: float = 300.0  # text extraction of one PDF, checked between pages
    max_chunks_per_leaf: int = 2000
    trusted: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        allow = (self.allow,) if isinstance(self.allow, str) else tuple(self.allow or ())
        allow = tuple(dict.fromkeys(str(a).strip().lower() for a in allow))
        bad = [a for a in allow if a not in SOURCE_KINDS]
        if bad:
            raise ConfigError(f"taxonomy.documents.allow has {', '.join(map(repr, bad))}: each entry must be one "
                              f"of {', '.join(SOURCE_KINDS)} (local = file:// URLs and local paths)")
        hosts = (self.hosts,) if isinstance(self.hosts, str) else tuple(self.hosts or ())
        hosts = tuple(dict.fromkeys(str(h).strip().lower().rstrip(".") for h in hosts))
        bad = [h for h in hosts if not _HOST_ENTRY.match(h)]
        if bad:
            raise ConfigError(f"taxonomy.documents.hosts has {', '.join(map(repr, bad))}: write host names only, "
                              "e.g. [github.com, gitlab.example.org] or *.example.org for its subdomains")
        for key in ("max_bytes", "max_file_bytes", "max_pdf_pages", "max_chunks_per_leaf"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"taxonomy.documents.{key}={value!r} must be an integer >= 1")
        if isinstance(self.pdf_timeout_s, bool) or not isinstance(self.pdf_timeout_s, (int, float)) \
                or not self.pdf_timeout_s > 0:
            raise ConfigError(f"taxonomy.documents.pdf_timeout_s={self.pdf_timeout_s!r} must be a number > 0")
        object.__setattr__(self, "allow", allow)
        object.__setattr__(self, "hosts", hosts)
        object.__setattr__(self, "trusted", tuple((str(p), str(c)) for p, c in self.trusted))

    @classmethod
    def from_config(cls, docs: Any) -> DocumentPolicy:
        """The policy of a `taxonomy.documents` config section (DocumentsConfig or a DictConfig)."""
        base = cls()

        def get(key: str) -> Any:
            value = getattr(docs, key, None)
            return getattr(base, key) if value is None else value

        return cls(allow=tuple(get("allow")), hosts=tuple(get("hosts")), max_bytes=get("max_bytes"),
                   max_file_bytes=get("max_file_bytes"), max_pdf_pages=get("max_pdf_pages"),
                   pdf_timeout_s=float(get("pdf_timeout_s")), max_chunks_per_leaf=get("max_chunks_per_leaf"))

    def for_taxonomy(self, root: Path) -> DocumentPolicy:
        """This policy for leaves of the taxonomy at `root`: sdg's own example documents trusted.

        `sdg taxonomy init` makes the example document repository at `<root>-example-documents` beside the
        skeleton and pins the commit of the example sdg ships. Exactly that (real) path at exactly that
        commit is trusted, nothing else: a hostile qna.yaml cannot place a repository there (it is outside
        the taxonomy), and any repository holding that commit holds sdg's example text (a sha names its
        content), so naming it fetches nothing but what sdg ships.
        """
        from sdg.taxonomy.init import example_commit, example_documents_dir

        try:
            place = os.path.realpath(example_documents_dir(Path(root).absolute()))
            return replace(self, trusted=((place, example_commit()),))
        except (OSError, ValueError):
            return self

    def is_trusted(self, repo: str, commit: str) -> bool:
        path = _local_path(repo)
        if path is None or not os.path.isabs(path) or not self.trusted:
            return False
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            return False
        return any(real == place and commit == sha for place, sha in self.trusted)


def _local_path(repo: str) -> str | None:
    """The filesystem path of a local source (`file://` URL or path), None for a remote one."""
    scheme = _SCHEME.match(repo)
    if scheme:
        if scheme.group(1) != "file":
            return None
        try:
            parts = urlsplit(repo)
        except ValueError:
            return None
        if parts.netloc not in ("", "localhost"):
            return None
        return unquote(parts.path)
    colon, slash = repo.find(":"), repo.find("/")
    if colon != -1 and (slash == -1 or colon < slash):
        return None  # scp-like ssh
    return repo


def source_kind(repo: str) -> str:
    """https | ssh | git | local, for a URL that passed `check_repo_url`."""
    scheme = _SCHEME.match(repo)
    if scheme:
        name = scheme.group(1)
        return "local" if name == "file" else name
    colon, slash = repo.find(":"), repo.find("/")
    if colon != -1 and (slash == -1 or colon < slash):
        return "ssh"  # scp-like [user@]host:path
    return "local"


def source_host(repo: str) -> str | None:
    """The host a remote source connects to, lower case; None when it cannot be told for sure."""
    scheme = _SCHEME.match(repo)
    if scheme:
        try:
            parts = urlsplit(repo)
            host = parts.hostname
        except ValueError:
            return None
        netloc = parts.netloc
        # An URL that parsers could read two ways ('a@b@c', '\', escapes in the host) is never matched.
        if netloc.count("@") > 1 or "\\" in netloc or "%" in netloc.rpartition("@")[2] or not host:
            return None
    else:
        scp = _SCP.match(repo)
        if not scp:
            return None
        host = scp.group(1).strip("[]").lower()
    host = host.rstrip(".")
    if ":" in host:  # IPv6
        return f"[{host}]"
    return host if _HOSTNAME.match(host) else None


def _host_allowed(host: str, hosts: Sequence[str]) -> bool:
    for entry in hosts:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def _list(values: Sequence[str]) -> str:
    return "[" + ",".join(values) + "]"


def check_source(repo: str, commit: str, policy: DocumentPolicy, *, leaf: str = "") -> str:
    """Refuse a repo the policy does not allow (UnsafeSourceError naming the leaf, repo and setting).

    `check_repo_url` runs first; returns the source's kind (https | ssh | git | local).
    """
    check_repo_url(repo)
    where = f"knowledge leaf {leaf}: " if leaf else ""
    shown = _display_url(repo)
    kind = source_kind(repo)
    if kind == "local":
        if policy.is_trusted(repo, str(commit)):
            return kind
        if "local" not in policy.allow:
            what = "file:// URL" if repo.startswith("file:") else "local path"
            raise UnsafeSourceError(
                f"{where}document repo {shown!r} is a {what}, and local document sources are off (a qna.yaml could "
                "otherwise read any repository on this machine into generated data): use an https:// or ssh URL, "
                f"or allow local sources with taxonomy.documents.allow={_list((*policy.allow, 'local'))} "
                f"(it is {_list(policy.allow)})"
            )
        return kind
    if kind not in policy.allow:
        why = {"git": "git:// is unauthenticated and unencrypted"}.get(kind, f"{kind} is not allowed")
        raise UnsafeSourceError(
            f"{where}document repo {shown!r}: {why}, and taxonomy.documents.allow is {_list(policy.allow)}: "
            f"use an https:// or ssh URL, or allow it with taxonomy.documents.allow={_list((*policy.allow, kind))}"
        )
    if policy.hosts:
        host = source_host(repo)
        if host is None:
            raise UnsafeSourceError(
                f"{where}document repo {shown!r}: its host cannot be read unambiguously, so it cannot be checked "
                f"against taxonomy.documents.hosts {_list(policy.hosts)}; write a plain https://HOST/PATH URL"
            )
        if not _host_allowed(host, policy.hosts):
            raise UnsafeSourceError(
                f"{where}document repo {shown!r}: host {host!r} is not in taxonomy.documents.hosts "
                f"{_list(policy.hosts)}: use a repo on an allowed host, or add it with "
                f"taxonomy.documents.hosts={_list((*policy.hosts, host))}"
            )
    return kind


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
    """Refuse repo URLs whose transport could run commands or inject git options.

    This is transport safety only: which of the safe transports (and hosts) a run may use is the
    source policy's say (`check_source`)."""
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


def _ssh_command() -> str:
    """ssh that never prompts (no passphrase, password or host-key questions); a user's own
    GIT_SSH_COMMAND (a key, a port) is kept, with batch mode added."""
    own = os.environ.get("GIT_SSH_COMMAND", "").strip()
    return f"{own or 'ssh'} -o BatchMode=yes"


def git_invocation(args: Sequence[str], *, protocols: Iterable[str] = ("https", "ssh"),
                   follow_redirects: bool = True) -> tuple[list[str], dict[str, str]]:
    """The argument list and environment every document git command runs with.

    Only `protocols` (GIT_ALLOW_PROTOCOL names: https, ssh, git, file) may be used; credential helpers
    and askpass programs are off and nothing prompts (a fetch that needs a password fails at once instead
    of hanging a batch job); ssh runs in batch mode. `follow_redirects=False` when a host allow-list is set,
    so a server cannot send the fetch to another host.
    """
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "advice.detachedHead=false",
           "-c", "credential.helper=", "-c", "core.askPass="]
    if not follow_redirects:
        cmd += ["-c", "http.followRedirects=false"]
    cmd += list(args)
    env = {
        **os.environ,
        **SAFE_GIT_ENV,
        "GIT_ALLOW_PROTOCOL": ":".join(protocols),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",  # set but empty: git neither runs an askpass program nor falls back to one
        "SSH_ASKPASS": "",
        "SSH_ASKPASS_REQUIRE": "never",
        "GIT_SSH_COMMAND": _ssh_command(),
        "LC_ALL": "C",
    }
    return cmd, env


def _git(args: Sequence[str], *, cwd: Path | None = None, protocols: Iterable[str] = ("https", "ssh"),
         follow_redirects: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git with an argument list (never a shell string) as `git_invocation` builds it."""
    cmd, env = git_invocation(args, protocols=protocols, follow_redirects=follow_redirects)
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
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


def _notes(checkout: Path) -> tuple[str, ...]:
    try:
        text = (checkout / ".git" / NOTES_FILE).read_text(encoding="utf-8")
    except OSError:
        return ()
    return tuple(line for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class _Runner:
    """git for one source: its one transport allowed, redirects off under a host allow-list."""

    protocols: tuple[str, ...]
    follow_redirects: bool

    def __call__(self, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _git(args, cwd=cwd, protocols=self.protocols, follow_redirects=self.follow_redirects)


def _resolve_commit(work: Path, source: DocumentSource, git: _Runner) -> str | None:
    for rev in (source.commit, f"refs/remotes/origin/{source.commit}", f"refs/tags/{source.commit}"):
        done = git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=work)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return None


def _missing(source: DocumentSource) -> DocumentError:
    return DocumentError(
        f"commit {source.commit!r} does not exist in document repo {_display_url(source.repo)} "
        "(no branch, tag or commit by that name); check document.commit in qna.yaml"
    )


def _unreachable(source: DocumentSource, stderr: str) -> DocumentError:
    return DocumentError(
        f"cannot fetch document repo {_display_url(source.repo)}@{source.commit}: {_tail(stderr)}\n"
        "Check that the document.repo URL in qna.yaml is right and reachable from this machine "
        "(network, proxy; credential helpers and password prompts are off: use an ssh key or a public repo)."
    )


def _clone_into(work: Path, source: DocumentSource, git: _Runner) -> tuple[str, list[str]]:
    """Fetch only the pinned commit, shallowly; a full fetch only when the server refuses a sha."""
    shown = f"{_display_url(source.repo)}@{source.commit}"
    notes: list[str] = []
    done = git(["init", "--quiet", "--template=", str(work)])
    if done.returncode != 0:
        raise DocumentError(f"cannot create a git repository in {work}: {_tail(done.stderr)}")
    done = git(["remote", "add", "--", "origin", source.repo], cwd=work)
    if done.returncode != 0:
        raise DocumentError(f"cannot set up document repo {shown}: {_tail(done.stderr)}")
    done = git(["fetch", "--quiet", "--no-tags", "--depth", "1", "--", "origin", source.commit], cwd=work)
    sha = None
    if done.returncode == 0:
        sha = _resolve_commit(work, replace(source, commit="FETCH_HEAD"), git)
    elif _SHA_LIKE.fullmatch(source.commit) and _REFUSED_BY_SHA.search(done.stderr):
        # The server would not send one commit by its sha (older protocol, or an abbreviated sha):
        # fetch its branches and tags and look for the commit there.
        notes.append(f"the server of {_display_url(source.repo)} would not send commit {source.commit} on its own "
                     f"({_tail(done.stderr, lines=1, chars=200)}); fetched all its branches and tags instead")
        log.warning("document repo %s: %s", shown, notes[-1])
        done = git(["fetch", "--quiet", "--", "origin", "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*"], cwd=work)
        if done.returncode != 0:
            raise _unreachable(source, done.stderr)
        sha = _resolve_commit(work, source, git)
    elif _REFUSED_BY_SHA.search(done.stderr):
        raise _missing(source)
    else:
        raise _unreachable(source, done.stderr)
    if sha is None:
        raise _missing(source)
    done = git(["checkout", "--quiet", "--detach", sha], cwd=work)
    if done.returncode != 0:
        raise DocumentError(
            f"cannot check out {shown} (resolved to {sha}): {_tail(done.stderr)}\n"
            "Check document.commit in qna.yaml, and that the disk holding the cache has space."
        )
    return sha, notes


OFFLINE_ENV = "SDG_DOCUMENTS_OFFLINE"


def documents_offline() -> bool:
    """True where documents must come from the cache only: the nodes of a Slurm job whose documents the
    submit host staged (sdg.launch.submit.stage_documents sets SDG_DOCUMENTS_OFFLINE=1 in the job)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def checkout_documents(source: DocumentSource, cache_dir: Path, policy: DocumentPolicy | None = None, *,
                       leaf: str = "") -> Path:
    """Fetch `source.repo` at `source.commit` into the cache, or reuse a complete earlier checkout.

    `policy` (default: the default policy, https and ssh only) decides whether the source may be fetched.
    With SDG_DOCUMENTS_OFFLINE=1 (`documents_offline`) only the cache is read: a checkout missing there is
    a DocumentError saying so, never a clone.
    """
    policy = policy or DocumentPolicy()
    kind = check_source(source.repo, source.commit, policy, leaf=leaf)
    _check_commit(source.commit)
    cache_dir = Path(cache_dir)
    target = cache_dir / cache_key(source)
    if _is_complete(target):
        return target
    if documents_offline():
        where = f"knowledge leaf {leaf}: " if leaf else ""
        raise DocumentError(
            f"{where}the documents of {_display_url(source.repo)}@{source.commit} are not staged in {cache_dir}, "
            f"and this process does not fetch documents ({OFFLINE_ENV}=1: a Slurm job whose documents were fetched "
            "on the submit host). Submit again: the submission fetches them into taxonomy.documents.cache_dir, "
            "which must be the same directory on the submit host and every node (a shared file system)"
        )
    git = _Runner((_GIT_PROTOCOL[kind],), follow_redirects=not policy.hosts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=cache_dir))
    try:
        sha, notes = _clone_into(work, source, git)
        if notes:
            (work / ".git" / NOTES_FILE).write_text("".join(n + "\n" for n in notes), encoding="utf-8")
        (work / ".git" / COMPLETE_MARKER).write_text(sha + "\n", encoding="utf-8")
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


# --------------------------------------------------------------------------- reading, within the caps


def _fmt_bytes(n: int) -> str:
    return f"{n:,} bytes" + (f" ({n / MiB:,.1f} MiB)" if n >= MiB else "")


def _over(where: str, what: str, key: str, value: Any, fix: str) -> NoReturn:
    raise DocumentError(f"{where}{what}; the limit is taxonomy.documents.{key}={value}: {fix}, "
                        f"or raise it (e.g. taxonomy.documents.{key}={_raised(value)})")


def _raised(value: Any) -> Any:
    return value * 2 if isinstance(value, int) else round(float(value) * 2, 3)


class _Budget:
    """Text bytes a leaf's documents may still yield (taxonomy.documents.max_bytes)."""

    def __init__(self, policy: DocumentPolicy, where: str) -> None:
        self.policy, self.where, self.used = policy, where, 0

    def take(self, n: int, rel: str) -> None:
        self.used += n
        if self.used > self.policy.max_bytes:
            _over(self.where, f"its documents yield more than {_fmt_bytes(self.policy.max_bytes)} of text "
                  f"(reached at {rel})", "max_bytes", self.policy.max_bytes,
                  "narrow document.patterns to the documents the leaf needs")


def read_capped(path: Path, cap: int, on_over: Callable[[int | None], NoReturn]) -> bytearray:
    """The bytes of `path`, read in blocks: never more than `cap` + 1 of them, whatever the file says.

    `on_over(size)` is called (and must raise) when the file is larger than `cap`: at once with its size
    when its size says so, with None when reading passes the cap (a file that grows, a device).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            on_over(size)
        data = bytearray()
        while True:
            block = f.read(min(READ_BLOCK, cap + 1 - len(data)))
            if not block:
                return data
            data += block
            if len(data) > cap:
                on_over(None)


def _read_markdown(path: Path, rel: str, policy: DocumentPolicy, where: str) -> str:
    def too_big(size: int | None) -> NoReturn:
        shown = _fmt_bytes(size) if size is not None else f"more than {_fmt_bytes(policy.max_file_bytes)}"
        _over(where, f"document {rel} is {shown}", "max_file_bytes", policy.max_file_bytes,
              "split it or leave it out of document.patterns")

    try:
        data = read_capped(path, policy.max_file_bytes, too_big)
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{where}document {rel} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise DocumentError(f"{where}cannot read document {rel}: {exc}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _declared_pages(reader: Any) -> int | None:
    """The page count the PDF's page tree claims, read before pypdf walks the tree."""
    try:
        count = reader.trailer["/Root"]["/Pages"]["/Count"]
        return int(count)
    except Exception:  # a broken tree: pypdf's own walk decides
        return None


def _read_pdf(path: Path, rel: str, policy: DocumentPolicy, budget: _Budget, where: str) -> str:
    """PDF text, page by page: at most max_pdf_pages pages and pdf_timeout_s seconds (checked between
    pages: pypdf cannot interrupt one page's extraction, its own limits bound a page's memory)."""
    import pypdf  # imported here: only PDF leaves pay for it

    started = time.monotonic()
    pages_cap = policy.max_pdf_pages
    fix = "split the PDF or leave it out of document.patterns"
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{where}PDF document {rel} is encrypted; commit an unencrypted copy")
        declared = _declared_pages(reader)
        if declared is not None and declared > pages_cap:
            _over(where, f"PDF document {rel} has {declared:,} pages", "max_pdf_pages", pages_cap, fix)
        count = len(reader.pages)
        if count > pages_cap:
            _over(where, f"PDF document {rel} has {count:,} pages", "max_pdf_pages", pages_cap, fix)
        texts = []
        for i in range(count):
            if time.monotonic() - started > policy.pdf_timeout_s:
                _over(where, f"extracting the text of PDF document {rel} took more than {policy.pdf_timeout_s:g}s "
                      f"({i} of {count} pages done)", "pdf_timeout_s", policy.pdf_timeout_s, fix)
            text = (reader.pages[i].extract_text() or "").strip()
            budget.take(len(text.encode("utf-8", "surrogatepass")), rel)
            if text:
                texts.append(text)
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on malformed files
        raise DocumentError(f"{where}cannot extract text from PDF document {rel}: {type(exc).__name__}: {exc}") from exc
    return "\n\n".join(texts)


def read_documents(root: Path, paths: Sequence[Path], policy: DocumentPolicy | None = None, *,
                   leaf: str = "") -> tuple[Document, ...]:
    """Read matched documents (resolved paths under `root`) within the policy's caps.

    Sizes on disk are checked before anything is read (one file against max_file_bytes, all of them
    against max_bytes); then the text they yield counts against max_bytes as it is read.
    """
    policy = policy or DocumentPolicy()
    where = f"knowledge leaf {leaf}: " if leaf else ""
    root = Path(root).resolve()
    sizes = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DocumentError(f"{where}cannot read document {rel}: {exc}") from exc
        if size > policy.max_file_bytes:
            _over(where, f"document {rel} is {_fmt_bytes(size)}", "max_file_bytes", policy.max_file_bytes,
                  "split it or leave it out of document.patterns")
        sizes.append(size)
    if sum(sizes) > policy.max_bytes:
        _over(where, f"its {len(sizes)} documents are {_fmt_bytes(sum(sizes))} together", "max_bytes",
              policy.max_bytes, "narrow document.patterns to the documents the leaf needs")
    budget = _Budget(policy, where)
    documents = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in PDF_SUFFIXES:
            documents.append(Document(path=rel, text=_read_pdf(path, rel, policy, budget, where), kind="pdf"))
        else:
            text = _read_markdown(path, rel, policy, where)
            budget.take(len(text.encode("utf-8", "surrogatepass")), rel)
            documents.append(Document(path=rel, text=text, kind="md"))
    return tuple(documents)


def _file_listing(root: Path, limit: int = 10) -> str:
    names = sorted("/".join(e.rel) for e in _walk(root) if not e.outside and not e.rel[-1].startswith("."))
    if not names:
        return "the repository is empty"
    shown = ", ".join(names[:limit])
    more = f", ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"files there: {shown}{more}"


def fetch_documents(source: DocumentSource, cache_dir: Path, policy: DocumentPolicy | None = None, *,
                    leaf: str = "") -> FetchedDocuments:
    """Check out `source` and read every matched markdown/PDF document, within `policy`.

    `policy` defaults to the default policy (https and ssh, any host, default caps); `leaf` (the qna.yaml)
    is named in every refusal.
    """
    policy = policy or DocumentPolicy()
    check_source(source.repo, source.commit, policy, leaf=leaf)
    _check_commit(source.commit)
    for pattern in source.patterns:
        check_pattern(pattern)
    checkout = checkout_documents(source, cache_dir, policy, leaf=leaf)
    root = checkout.resolve()
    usable, skipped = match_documents(checkout, source.patterns)
    if not usable:
        raise DocumentError(
            f"no .md or .pdf documents match patterns {list(source.patterns)} in "
            f"{_display_url(source.repo)}@{source.commit} ({_file_listing(root)}); fix document.patterns in qna.yaml"
        )
    return FetchedDocuments(
        source=source,
        checkout=checkout,
        documents=read_documents(root, usable, policy, leaf=leaf),
        skipped=tuple(p.relative_to(root).as_posix() for p in skipped),
        notes=_notes(checkout),
    )
