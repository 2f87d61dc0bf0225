"""Fetching knowledge documents from real git repositories built in tmp dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from sdg.errors import DocumentError, SdgError, UnsafeSourceError
from sdg.taxonomy import documents
from sdg.taxonomy.documents import (
    Document,
    DocumentPolicy,
    DocumentSource,
    FetchedDocuments,
    check_pattern,
    check_repo_url,
    match_documents,
)
from tests.conftest import make_repo, pdf_with_pages

# These tests fetch from repositories built in tmp dirs, i.e. local sources, which the default policy
# refuses (tests/test_document_policy.py tests that): here they are allowed, as taxonomy.documents.allow
# =[https,ssh,local] does.
LOCAL = DocumentPolicy(allow=("https", "ssh", "local"))


def fetch_documents(source: DocumentSource, cache_dir: Path, policy: DocumentPolicy = LOCAL) -> FetchedDocuments:
    return documents.fetch_documents(source, cache_dir, policy)


def checkout_documents(source: DocumentSource, cache_dir: Path, policy: DocumentPolicy = LOCAL) -> Path:
    return documents.checkout_documents(source, cache_dir, policy)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",  # no user config (signing, hooks) in test repos
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def commit_all(repo: Path, message: str = "commit") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def pdf_with_text(text: str) -> bytes:
    """A minimal valid one-page PDF whose content stream draws `text` in Helvetica."""
    return pdf_with_pages([text])


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Path, str, str]:
    repo, first = make_repo(tmp_path / "src", {"docs/guide.md": "# Guide\n\nversion one\n"})
    write(repo, "docs/guide.md", "# Guide\n\nversion two\n")
    second = commit_all(repo, "second")
    return repo, first, second


# --------------------------------------------------------------------------- cloning and caching


def test_local_path_fetches_pinned_commit_not_later_one(two_commits, tmp_path):
    repo, first, _ = two_commits
    got = fetch_documents(DocumentSource(str(repo), first, ("docs/*.md",)), tmp_path / "cache")
    assert isinstance(got, FetchedDocuments)
    assert got.documents == (Document(path="docs/guide.md", text="# Guide\n\nversion one\n", kind="md"),)
    assert got.skipped == ()
    assert git(got.checkout, "rev-parse", "HEAD") == first


def test_file_url_fetches_pinned_commit(two_commits, tmp_path):
    repo, first, second = two_commits
    cache = tmp_path / "cache"
    old = fetch_documents(DocumentSource(repo.as_uri(), first, ("docs/*.md",)), cache)
    new = fetch_documents(DocumentSource(repo.as_uri(), second, ("docs/*.md",)), cache)
    assert "version one" in old.documents[0].text and "version two" not in old.documents[0].text
    assert "version two" in new.documents[0].text
    assert old.checkout != new.checkout


def test_ref_names_and_tags_resolve(two_commits, tmp_path):
    repo, first, _ = two_commits
    git(repo, "tag", "v1", first)
    git(repo, "branch", "old-line", first)
    for ref in ("v1", "old-line"):
        got = fetch_documents(DocumentSource(str(repo), ref, ("**/*.md",)), tmp_path / "cache")
        assert "version one" in got.documents[0].text
        assert git(got.checkout, "rev-parse", "HEAD") == first


def test_cache_is_reused_without_touching_the_source(two_commits, tmp_path):
    repo, first, _ = two_commits
    source = DocumentSource(str(repo), first, ("docs/*.md",))
    cache = tmp_path / "cache"
    one = fetch_documents(source, cache)
    shutil.rmtree(repo)  # a second clone would now fail
    two = fetch_documents(source, cache)
    assert two == one
    assert checkout_documents(source, cache) == one.checkout
    assert one.checkout.name.endswith("-" + first)
    assert [p.name for p in cache.iterdir()] == [one.checkout.name]  # no temporary leftovers


def test_incomplete_cache_dir_is_replaced(two_commits, tmp_path):
    repo, first, _ = two_commits
    source = DocumentSource(str(repo), first, ("docs/*.md",))
    cache = tmp_path / "cache"
    stale = cache / documents.cache_key(source)
    write(stale, "docs/guide.md", "half written")  # looks like a checkout but has no completion marker
    got = fetch_documents(source, cache)
    assert got.checkout == stale
    assert "version one" in got.documents[0].text


def test_concurrent_fetches_share_one_checkout(two_commits, tmp_path):
    repo, first, _ = two_commits
    source = DocumentSource(str(repo), first, ("docs/*.md",))
    cache = tmp_path / "cache"
    results: list[object] = []

    def run() -> None:
        try:
            results.append(fetch_documents(source, cache))
        except Exception as exc:  # surfaced by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, FetchedDocuments) for r in results), results
    assert len({r.checkout for r in results}) == 1
    assert len(list(cache.iterdir())) == 1


def test_cache_key_separates_commits_that_sanitize_alike():
    a = documents.cache_key(DocumentSource("r", "a/b", ()))
    b = documents.cache_key(DocumentSource("r", "a_b", ()))
    assert a != b and "/" not in a
    assert documents.cache_key(DocumentSource("r", "abc", ())) != documents.cache_key(DocumentSource("s", "abc", ()))


def test_missing_commit_is_a_document_error(two_commits, tmp_path):
    repo, _, _ = two_commits
    cache = tmp_path / "cache"
    with pytest.raises(DocumentError, match="does not exist") as info:
        fetch_documents(DocumentSource(str(repo), "0" * 40, ("docs/*.md",)), cache)
    assert "0" * 40 in str(info.value)
    with pytest.raises(DocumentError, match="does not exist"):
        fetch_documents(DocumentSource(str(repo), "no-such-branch", ("docs/*.md",)), cache)
    assert list(cache.iterdir()) == []  # failed clones are cleaned up


def test_unreachable_repo_is_a_document_error_with_advice(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DocumentError) as info:
        fetch_documents(DocumentSource(str(missing), "main", ("*.md",)), tmp_path / "cache")
    message = str(info.value)
    assert str(missing) in message and "main" in message
    assert "Check" in message
    assert not isinstance(info.value, UnsafeSourceError)


# --------------------------------------------------------------------------- matching


def test_nested_patterns_and_skipped_extensions(tmp_path):
    repo, sha = make_repo(
        tmp_path / "src",
        {
            "README.md": "top",
            "docs/a.md": "a",
            "docs/deep/er/b.markdown": "b",
            "docs/data.csv": "x,y",
            "docs/notes.txt": "notes",
            ".github/hidden.md": "hidden",
        },
    )
    cache = tmp_path / "cache"
    got = fetch_documents(DocumentSource(str(repo), sha, ("**/*.md", "**/*.markdown")), cache)
    assert [d.path for d in got.documents] == ["README.md", "docs/a.md", "docs/deep/er/b.markdown"]
    assert all(d.kind == "md" for d in got.documents)

    got = fetch_documents(DocumentSource(str(repo), sha, ("docs/*", "docs/*.md")), cache)
    assert [d.path for d in got.documents] == ["docs/a.md"]  # deduplicated, `*` is one level
    assert got.skipped == ("docs/data.csv", "docs/notes.txt")

    got = fetch_documents(DocumentSource(str(repo), sha, (".github/*.md",)), cache)
    assert [d.path for d in got.documents] == [".github/hidden.md"]  # explicit hidden names still match


def test_match_documents_returns_resolved_paths_inside_checkout(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"a/x.md": "x", "a/y.pdf": pdf_with_text("y"), "a/z.txt": "z"})
    checkout = checkout_documents(DocumentSource(str(repo), sha, ("a/*",)), tmp_path / "cache")
    usable, skipped = match_documents(checkout, ["a/*"])
    root = checkout.resolve()
    assert [p.relative_to(root).as_posix() for p in usable] == ["a/x.md", "a/y.pdf"]
    assert [p.relative_to(root).as_posix() for p in skipped] == ["a/z.txt"]
    assert match_documents(checkout, ["**/*.md"]) == match_documents(checkout, ["**/*.md"])
    assert match_documents(checkout, [".git/**"]) == ([], [])  # .git is never matched


def test_symlink_inside_checkout_is_followed_and_deduplicated(tmp_path):
    repo, _ = make_repo(tmp_path / "src", {"docs/real.md": "real"})
    (repo / "alias.md").symlink_to("docs/real.md")
    (repo / "mirror").symlink_to("docs")
    (repo / "docs" / "loop").symlink_to("..")
    sha = commit_all(repo)
    got = fetch_documents(DocumentSource(str(repo), sha, ("*.md", "mirror/*.md", "**/*.md")), tmp_path / "cache")
    assert [d.path for d in got.documents] == ["docs/real.md"]


def test_symlink_leaving_checkout_is_refused(tmp_path):
    secret = write(tmp_path / "outside", "secret.md", "do not read")
    repo, _ = make_repo(tmp_path / "src", {"docs/ok.md": "ok"})
    (repo / "docs" / "evil.md").symlink_to(secret)
    sha = commit_all(repo)
    with pytest.raises(UnsafeSourceError) as info:
        fetch_documents(DocumentSource(str(repo), sha, ("docs/*.md",)), tmp_path / "cache")
    assert "docs/*.md" in str(info.value) and "docs/evil.md" in str(info.value)
    # A pattern that does not reach the link is fine.
    got = fetch_documents(DocumentSource(str(repo), sha, ("docs/ok.md",)), tmp_path / "cache")
    assert [d.text for d in got.documents] == ["ok"]


def test_directory_symlink_leaving_checkout_is_refused(tmp_path):
    write(tmp_path / "outside", "secret.md", "do not read")
    repo, _ = make_repo(tmp_path / "src", {"docs/ok.md": "ok"})
    (repo / "docs" / "vendor").symlink_to(tmp_path / "outside")
    sha = commit_all(repo)
    with pytest.raises(UnsafeSourceError, match="docs/vendor"):
        fetch_documents(DocumentSource(str(repo), sha, ("**/*.md",)), tmp_path / "cache")


@pytest.mark.parametrize(
    "pattern",
    ["../*.md", "docs/../../x.md", "..", "/etc/*.md", "/tmp/**/*.md", "~/notes.md", "~root/x.md", "", "a\n.md"],
)
def test_unsafe_patterns_are_refused_before_cloning(tmp_path, pattern):
    with pytest.raises(UnsafeSourceError):
        check_pattern(pattern)
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeSourceError):
        fetch_documents(DocumentSource(str(tmp_path / "src"), "main", (pattern,)), cache)
    assert not cache.exists()


@pytest.mark.parametrize("pattern", ["*.md", "docs/**/*.md", "./docs/x.md", "a..b/*.md", "**"])
def test_ordinary_patterns_are_accepted(pattern):
    check_pattern(pattern)


def test_nothing_matched_lists_existing_files(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"notes.txt": "n", "docs/data.csv": "c"})
    with pytest.raises(DocumentError) as info:
        fetch_documents(DocumentSource(str(repo), sha, ("docs/*.md",)), tmp_path / "cache")
    message = str(info.value)
    assert "no .md or .pdf documents match patterns ['docs/*.md']" in message
    assert f"@{sha}" in message
    assert "notes.txt" in message and "docs/data.csv" in message


# --------------------------------------------------------------------------- reading


def test_pdf_text_is_extracted(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"paper.pdf": pdf_with_text("Hello knowledge PDF")})
    got = fetch_documents(DocumentSource(str(repo), sha, ("*.pdf",)), tmp_path / "cache")
    (doc,) = got.documents
    assert doc.kind == "pdf" and doc.path == "paper.pdf"
    assert "Hello knowledge PDF" in doc.text


def test_broken_pdf_is_a_document_error_naming_the_file(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"docs/broken.pdf": b"%PDF-1.4\nthis is not really a pdf"})
    with pytest.raises(DocumentError, match="docs/broken.pdf"):
        fetch_documents(DocumentSource(str(repo), sha, ("docs/*",)), tmp_path / "cache")


def test_undecodable_markdown_is_a_document_error_naming_the_file(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"bad.md": b"caf\xe9 latin-1"})
    with pytest.raises(DocumentError, match="bad.md.*UTF-8"):
        fetch_documents(DocumentSource(str(repo), sha, ("*.md",)), tmp_path / "cache")


def test_markdown_line_endings_and_bom_are_normalised(tmp_path):
    repo, sha = make_repo(tmp_path / "src", {"w.md": "\ufeff# T\r\n\r\nbody\r\n".encode("utf-8")})
    got = fetch_documents(DocumentSource(str(repo), sha, ("*.md",)), tmp_path / "cache")
    assert got.documents[0].text == "# T\n\nbody\n"


# --------------------------------------------------------------------------- URL safety


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/repo.git",
        "https://user@example.com:8443/org/repo",
        "ssh://git@example.com/org/repo.git",
        "ssh://[::1]:2222/repo",
        "git://example.com/repo.git",
        "file:///srv/git/repo.git",
        "git@github.com:org/repo.git",
        "example.com:org/repo.git",
        "/abs/path/repo",
        "relative/repo",
        "./repo",
        "../repo",
        "repo",
    ],
)
def test_allowed_transports(url):
    check_repo_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/repo.git",
        "fd::3",
        "ext::sh -c id",
        "::x",
        "fd::17/foo",
        "-uhack",
        "--upload-pack=touch /tmp/x",
        "",
        "   ",
        "https://example.com/repo\n--upload-pack=x",
        "https://example.com/re\x00po",
        " https://example.com/repo",
        "ftp://example.com/repo",
        "HTTPS://example.com/repo",
        "git+ssh://example.com/repo",
        "https:///nohost",
        "ssh://-oProxyCommand=touch%20x/repo",
        "user@-oProxyCommand=x:repo",
    ],
)
def test_refused_transports_name_url_and_allowed_list(url):
    with pytest.raises(UnsafeSourceError) as info:
        check_repo_url(url)
    message = str(info.value)
    assert "https://" in message and "file://" in message
    assert isinstance(info.value, SdgError)


def test_non_text_url_is_refused():
    with pytest.raises(UnsafeSourceError, match="not a text URL"):
        check_repo_url(42)  # type: ignore[arg-type]


def test_ext_transport_never_runs_its_command(tmp_path):
    pwned = tmp_path / "pwned"
    url = f"ext::sh -c touch% {pwned}"
    with pytest.raises(UnsafeSourceError, match="ext::"):
        fetch_documents(DocumentSource(url, "main", ("*.md",)), tmp_path / "cache")
    with pytest.raises(UnsafeSourceError):
        checkout_documents(DocumentSource(url, "main", ("*.md",)), tmp_path / "cache")
    # Defence in depth: even if the URL check were bypassed, git itself refuses the transport.
    done = documents._git(["clone", "--", url, str(tmp_path / "dest")])
    assert done.returncode != 0
    assert not pwned.exists()


def test_credentials_are_masked_in_messages():
    with pytest.raises(UnsafeSourceError) as info:
        check_repo_url("ftp://user:s3cret@example.com/repo")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("commit", ["-q", "--upload-pack=x", "main branch", "abc\n", "", "a\tb"])
def test_unsafe_commits_are_refused(tmp_path, commit):
    with pytest.raises(UnsafeSourceError):
        fetch_documents(DocumentSource(str(tmp_path), commit, ("*.md",)), tmp_path / "cache")


def test_patterns_given_as_list_or_string_become_a_tuple():
    assert DocumentSource("r", "c", ["a", "b"]).patterns == ("a", "b")  # type: ignore[arg-type]
    assert DocumentSource("r", "c", "a/*.md").patterns == ("a/*.md",)  # type: ignore[arg-type]
