"""Knowledge document sources under a policy, and the caps on what one leaf may read.

Real git repositories in tmp dirs (a bare one served over a file path, one over a stand-in `ssh`), the
real validator and config, `sdg.run.prepare` on a skeleton from `init_taxonomy`.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from sdg.config.compose import compose_config, to_object
from sdg.errors import ConfigError, DocumentError, UnsafeSourceError, ValidationFailed
from sdg.taxonomy import documents
from sdg.taxonomy.api import validate_taxonomy, validation_options
from sdg.taxonomy.chunking import chunk_documents
from sdg.taxonomy.diff import taxonomy_diff
from sdg.taxonomy.documents import (DocumentPolicy, DocumentSource, check_source, fetch_documents, git_invocation,
                                    read_capped)
from sdg.taxonomy.init import example_commit, example_documents_dir, init_taxonomy
from sdg.taxonomy.leaves import KnowledgeLeaf, load_leaves, with_chunks
from sdg.taxonomy.validate import ValidationOptions, validate_files
from tests.conftest import git, make_repo, pdf_with_pages, sdg_cli, write_leaf

LOCAL = DocumentPolicy(allow=("https", "ssh", "local"))
LEAF = "knowledge/science/eclipses/qna.yaml"


def knowledge_leaf(root: Path, repo: str, commit: str, rel: str = LEAF) -> Path:
    """A valid knowledge leaf at `rel` whose document is `repo` at `commit`."""
    path = write_leaf(root, rel, "knowledge")
    text = path.read_text(encoding="utf-8")
    text = text.replace("https://github.com/example/docs", repo).replace("0" * 40, commit)
    path.write_text(text, encoding="utf-8")
    return path


def repo_line(path: Path) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith("repo:"))


# --------------------------------------------------------------------------- the source policy


def test_file_url_is_refused_by_default_and_allowed_with_the_setting(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path / "src", {"a.md": "# A\n\nalpha\n"})
    source = DocumentSource(repo.as_uri(), sha, ("*.md",))
    default = DocumentPolicy.from_config(to_object(compose_config([])).taxonomy.documents)
    assert default == DocumentPolicy() and default.allow == ("https", "ssh") and default.hosts == ()
    with pytest.raises(UnsafeSourceError) as err:
        fetch_documents(source, tmp_path / "cache", default, leaf=LEAF)
    message = str(err.value)
    assert LEAF in message and repo.as_uri() in message and "file:// URL" in message
    assert "taxonomy.documents.allow=[https,ssh,local]" in message
    assert not (tmp_path / "cache").exists()  # refused before anything was fetched

    allowed = DocumentPolicy.from_config(
        to_object(compose_config(["taxonomy.documents.allow=[https,ssh,local]"])).taxonomy.documents)
    got = fetch_documents(source, tmp_path / "cache", allowed, leaf=LEAF)
    assert [d.text for d in got.documents] == ["# A\n\nalpha\n"]


@pytest.mark.parametrize("repo", ["/srv/git/docs", "relative/docs", "./docs", "../docs", "docs",
                                  "file:///srv/git/docs", "file://localhost/srv/git/docs"])
def test_local_sources_are_refused_unless_allowed(repo: str) -> None:
    with pytest.raises(UnsafeSourceError, match=r"local document sources are off.*taxonomy\.documents\.allow="):
        check_source(repo, "a" * 40, DocumentPolicy(), leaf=LEAF)
    assert check_source(repo, "a" * 40, LOCAL) == "local"


def test_other_transports_are_refused_unless_allowed() -> None:
    with pytest.raises(UnsafeSourceError, match=r"git:// is unauthenticated.*taxonomy\.documents\.allow=\[https,ssh,git\]"):
        check_source("git://example.com/docs.git", "main", DocumentPolicy())
    assert check_source("git://example.com/docs.git", "main", DocumentPolicy(allow=("https", "ssh", "git"))) == "git"
    with pytest.raises(UnsafeSourceError, match=r"ssh is not allowed"):
        check_source("git@github.com:org/docs.git", "main", DocumentPolicy(allow=("https",)))
    for url in ("ext::sh -c id", "http://example.com/docs", "-uhack"):  # never, whatever the policy
        with pytest.raises(UnsafeSourceError):
            check_source(url, "main", DocumentPolicy(allow=("https", "ssh", "git", "local")))


def test_https_host_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    policy = DocumentPolicy(hosts=("github.com", "*.example.org"))
    for ok in ("https://github.com/org/docs", "https://GitHub.com./org/docs", "ssh://git@github.com/org/docs",
               "git@github.com:org/docs.git", "https://git.example.org/docs", "https://user:tok@github.com/o/d"):
        check_source(ok, "main", policy)
    for bad, host in (("https://gitlab.com/org/docs", "gitlab.com"), ("https://github.com@evil.test/x", "evil.test"),
                      ("https://example.org/docs", "example.org"), ("https://github.com.evil.test/x", None),
                      ("git@evil.test:org/docs.git", "evil.test")):
        with pytest.raises(UnsafeSourceError) as err:
            check_source(bad, "main", policy, leaf=LEAF)
        message = str(err.value)
        assert LEAF in message and "taxonomy.documents.hosts" in message
        if host:
            assert f"host '{host}' is not in taxonomy.documents.hosts [github.com,*.example.org]" in message
    for ambiguous in ("https://a@b@github.com/x", "https://github.com\\@evil.test/x", "https://gith%75b.com/x"):
        with pytest.raises(UnsafeSourceError, match="cannot be read unambiguously"):
            check_source(ambiguous, "main", policy)
    # The same over the real fetch, refused before git runs; the credentials in the URL stay masked.
    with pytest.raises(UnsafeSourceError) as err:
        fetch_documents(DocumentSource("https://bob:s3cret@gitlab.com/o/d", "main", ("*.md",)), tmp_path / "c", policy)
    assert "s3cret" not in str(err.value) and not (tmp_path / "c").exists()


def test_policy_values_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"taxonomy\.documents\.allow has 'htps'.*https, ssh, git, local"):
        DocumentPolicy(allow=("htps",))
    with pytest.raises(ConfigError, match=r"taxonomy\.documents\.hosts has 'https://github\.com'"):
        DocumentPolicy(hosts=("https://github.com",))
    cfg = to_object(compose_config(["taxonomy.documents.allow=[https,svn]"]))
    with pytest.raises(ConfigError, match="'svn'"):
        validation_options(cfg)  # what validate, diff and generate build first, before any work
    for override in ("taxonomy.documents.max_bytes=0", "taxonomy.documents.max_file_bytes=0",
                     "taxonomy.documents.max_pdf_pages=0", "taxonomy.documents.pdf_timeout_s=0",
                     "taxonomy.documents.max_chunks_per_leaf=0"):
        with pytest.raises(ConfigError, match=re.escape(override.split("=")[0]) + r"=0(\.0)? is out of range"):
            compose_config([override])


def test_validation_reports_the_policy_on_the_repo_line(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path / "src", {"a.md": "# A\n"})
    root = tmp_path / "tax"
    leaf = knowledge_leaf(root, repo.as_uri(), sha)
    result = validate_files([leaf], root, ValidationOptions())
    (finding,) = [f for f in result.findings if f.is_error]
    assert finding.line == repo_line(leaf) and finding.yaml_path == ".document.repo"
    assert "file:// URL" in finding.message and "taxonomy.documents.allow=[https,ssh,local]" in finding.message
    assert validate_files([leaf], root, ValidationOptions(document_policy=LOCAL)).ok
    # Through the config, as `sdg taxonomy validate` runs it (with --documents too).
    cfg = to_object(compose_config([f"taxonomy.path={root}", f"taxonomy.documents.cache_dir={tmp_path / 'cache'}"]))
    report, _ = validate_taxonomy(cfg)
    assert [f.yaml_path for f in report.findings if f.is_error] == [".document.repo"]
    cfg = to_object(compose_config([f"taxonomy.path={root}", f"taxonomy.documents.cache_dir={tmp_path / 'cache'}",
                                    "taxonomy.documents.allow=[https,ssh,local]"]))
    report, _ = validate_taxonomy(cfg, documents=True)
    assert report.ok, [f.format() for f in report.findings]


def test_the_cli_reports_a_local_source_as_an_error(tmp_path: Path, sdg_env: dict) -> None:
    root = tmp_path / "tax"
    leaf = knowledge_leaf(root, "/srv/git/docs", "a" * 40)
    r = sdg_cli(sdg_env, "taxonomy", "validate", str(leaf))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"qna.yaml:{repo_line(leaf)}:" in r.stdout + r.stderr
    assert "taxonomy.documents.allow=[https,ssh,local]" in r.stdout + r.stderr
    r = sdg_cli(sdg_env, "taxonomy", "validate", str(leaf), "taxonomy.documents.allow=[https,ssh,local]")
    assert r.returncode == 0, (r.stdout, r.stderr)


# --------------------------------------------------------------------------- sdg's own example


def test_the_example_taxonomy_still_generates_a_plan(tmp_path: Path) -> None:
    tax = init_taxonomy(tmp_path / "tax")
    assert tax.documents_repo == example_documents_dir(tax.path)
    assert git(tax.documents_repo, "rev-parse", "HEAD").strip() == example_commit()
    from sdg.run import prepare

    cfg = to_object(compose_config([f"taxonomy.path={tax.path}", "taxonomy.base=empty",
                                    f"taxonomy.documents.cache_dir={tmp_path / 'cache'}",
                                    f"generate.output_dir={tmp_path / 'out'}"]))
    assert cfg.taxonomy.documents.allow == ["https", "ssh"]  # no extra settings
    lines: list[str] = []
    run = prepare(cfg, log=lines.append)
    kinds = {lp.leaf.kind for lp in run.plan.leaves}
    assert kinds == {"freeform_skill", "grounded_skill", "foundational_skill", "knowledge"}
    (kn,) = [lp.leaf for lp in run.plan.leaves if lp.leaf.kind == "knowledge"]
    assert kn.chunks and run.plan.units > 0


def test_the_example_trust_cannot_be_borrowed(tmp_path: Path) -> None:
    tax = init_taxonomy(tmp_path / "tax")
    docs = tax.documents_repo
    assert docs is not None
    sha = example_commit()
    # Another taxonomy naming this example repository: not beside it, so not trusted.
    other = tmp_path / "other"
    leaf = knowledge_leaf(other, docs.as_uri(), sha)
    result = validate_files([leaf], other, ValidationOptions())
    assert [f.yaml_path for f in result.findings if f.is_error] == [".document.repo"]
    # The example's place at another commit (one that could hold anything): not trusted.
    (docs / "secret.md").write_text("# not sdg's\n", encoding="utf-8")
    git(docs, "add", "-A")
    git(docs, "commit", "-q", "-m", "more")
    newer = git(docs, "rev-parse", "HEAD").strip()
    own = next(tax.path.glob("knowledge/**/qna.yaml"))
    own.write_text(own.read_text().replace(sha, newer), encoding="utf-8")
    result = validate_files([own], tax.path, ValidationOptions())
    assert [f.yaml_path for f in result.findings if f.is_error] == [".document.repo"]
    # A relative spelling of the place is not it either; the exact place and commit are.
    policy = DocumentPolicy().for_taxonomy(tax.path)
    assert policy.is_trusted(docs.as_uri(), sha) and policy.is_trusted(str(docs), sha)
    assert not policy.is_trusted(os.path.relpath(docs), sha) and not policy.is_trusted(docs.as_uri(), newer)
    assert not DocumentPolicy().is_trusted(docs.as_uri(), sha)


# --------------------------------------------------------------------------- how git runs


def _record_git(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    calls: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.run

    def run(cmd, *args, **kwargs):
        calls.append((list(cmd), dict(kwargs.get("env") or {})))
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(documents.subprocess, "run", run)
    return calls


def bare_repo_two_commits(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository (a server's) whose main has two commits; (its path, the FIRST commit: not a tip)."""
    src, first = make_repo(tmp_path / "src", {"a.md": "# One\n"})
    (src / "a.md").write_text("# Two\n")
    git(src, "commit", "-qam", "two")
    bare = tmp_path / "docs.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    return bare, first


def _assert_locked_down(cmd: list[str], env: dict[str, str], protocol: str) -> None:
    assert cmd[0] == "git"
    for setting in ("credential.helper=", "core.askPass=", "protocol.ext.allow=never"):
        assert setting in cmd and cmd[cmd.index(setting) - 1] == "-c", (setting, cmd)
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GIT_ASKPASS"] == "" and env["SSH_ASKPASS"] == ""
    assert env["SSH_ASKPASS_REQUIRE"] == "never"
    assert env["GIT_SSH_COMMAND"].endswith(" -o BatchMode=yes")
    assert env["GIT_ALLOW_PROTOCOL"] == protocol


def test_a_bare_repo_over_a_file_path_is_fetched_shallow_with_no_prompts(tmp_path, monkeypatch) -> None:
    bare, first = bare_repo_two_commits(tmp_path)
    calls = _record_git(monkeypatch)
    got = fetch_documents(DocumentSource(str(bare), first, ("*.md",)), tmp_path / "cache", LOCAL, leaf=LEAF)
    assert [d.text for d in got.documents] == ["# One\n"] and got.notes == ()
    assert calls and all(c[0] == "git" for c, _ in calls)
    for cmd, env in calls:
        _assert_locked_down(cmd, env, "file")
        assert "http.followRedirects=false" not in cmd  # no host allow-list: redirects as git does
    subcommands = [next(a for a in cmd[1:] if not a.startswith("-") and "=" not in a) for cmd, _ in calls]
    assert "clone" not in subcommands and subcommands[:3] == ["init", "remote", "fetch"]
    fetch = next(cmd for cmd, _ in calls if "fetch" in cmd)
    assert fetch[fetch.index("fetch"):] == ["fetch", "--quiet", "--no-tags", "--depth", "1", "--", "origin", first]
    assert git(got.checkout, "rev-list", "--count", "HEAD").strip() == "1"  # only the pinned commit
    assert (got.checkout / ".git" / "shallow").is_file()
    # The function that builds the invocation is the one that ran.
    cmd, env = git_invocation(["fetch"], protocols=("ssh",), follow_redirects=False)
    _assert_locked_down(cmd, env, "ssh")
    assert "http.followRedirects=false" in cmd


def test_ssh_runs_in_batch_mode_through_git(tmp_path, monkeypatch) -> None:
    src, sha = make_repo(tmp_path / "src", {"a.md": "# Over ssh\n"})
    bare = tmp_path / "docs.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    bin_dir, log = tmp_path / "bin", tmp_path / "ssh.log"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"  # a stand-in ssh: logs its arguments, runs the remote command here
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$SDG_SSH_LOG"\nfor last; do :; done\nexec sh -c "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SDG_SSH_LOG", str(log))
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    calls = _record_git(monkeypatch)
    policy = DocumentPolicy(hosts=("docs.example.test",))
    got = fetch_documents(DocumentSource(f"ssh://git@docs.example.test{bare}", sha, ("*.md",)), tmp_path / "cache",
                          policy, leaf=LEAF)
    assert [d.text for d in got.documents] == ["# Over ssh\n"]
    args = log.read_text().splitlines()
    assert args[:2] == ["-o", "BatchMode=yes"] and "git@docs.example.test" in args
    for cmd, env in calls:
        _assert_locked_down(cmd, env, "ssh")
        assert "http.followRedirects=false" in cmd  # a host allow-list: no redirects to other hosts


def test_a_server_that_refuses_a_sha_gets_a_full_fetch_and_a_note(tmp_path, monkeypatch) -> None:
    bare, first = bare_repo_two_commits(tmp_path)
    # Protocol v0: upload-pack only sends what it advertises (branch tips), not a commit asked by sha.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    got = fetch_documents(DocumentSource(str(bare), first, ("*.md",)), tmp_path / "cache", LOCAL)
    assert [d.text for d in got.documents] == ["# One\n"]
    (note,) = got.notes
    assert f"would not send commit {first}" in note and "fetched all its branches and tags instead" in note
    assert fetch_documents(DocumentSource(str(bare), first, ("*.md",)), tmp_path / "cache", LOCAL).notes == got.notes
    with pytest.raises(DocumentError, match="does not exist"):
        fetch_documents(DocumentSource(str(bare), "f" * 40, ("*.md",)), tmp_path / "cache", LOCAL)


# --------------------------------------------------------------------------- caps


def test_a_2gb_sparse_markdown_is_refused_at_once_without_reading_it(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path / "src", {"big.md": "# Big\n\nsmall for now\n"})
    source = DocumentSource(str(repo), sha, ("*.md",))
    cache = tmp_path / "cache"
    checkout = fetch_documents(source, cache, LOCAL).checkout
    with open(checkout / "big.md", "r+b") as f:  # the cached checkout now holds a 2 GiB file (sparse: no disk)
        f.truncate(2 * 1024**3)
    for policy, key in ((LOCAL, "max_file_bytes"), (DocumentPolicy(allow=("local",), max_file_bytes=4 * 1024**3),
                                                    "max_bytes")):
        tracemalloc.start()
        started = time.monotonic()
        with pytest.raises(DocumentError) as err:
            fetch_documents(source, cache, policy, leaf=LEAF)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        message = str(err.value)
        assert LEAF in message and f"taxonomy.documents.{key}=" in message and "2,147,483,648 bytes" in message
        assert elapsed < 5 and peak < 32 * 1024**2, (elapsed, peak)


def test_markdown_is_read_in_blocks_up_to_the_cap(tmp_path: Path) -> None:
    def over(size):
        raise DocumentError(f"over ({size})")

    tracemalloc.start()
    with pytest.raises(DocumentError, match=r"over \(None\)"):  # a device reports size 0 and never ends
        read_capped(Path("/dev/zero"), 3 * 1024**2, over)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 1024**2
    small = tmp_path / "s.md"
    small.write_bytes(b"x" * 5000)
    assert bytes(read_capped(small, 5000, over)) == b"x" * 5000
    with pytest.raises(DocumentError, match=r"over \(5000\)"):
        read_capped(small, 4999, over)


def test_a_pdf_over_the_page_cap_is_refused(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path / "src", {"docs/book.pdf": pdf_with_pages(["Page one", "Page two", "Page three"])})
    source = DocumentSource(str(repo), sha, ("docs/*.pdf",))
    with pytest.raises(DocumentError) as err:
        fetch_documents(source, tmp_path / "cache", DocumentPolicy(allow=("local",), max_pdf_pages=2), leaf=LEAF)
    message = str(err.value)
    assert LEAF in message and "docs/book.pdf has 3 pages" in message and "taxonomy.documents.max_pdf_pages=2" in message
    got = fetch_documents(source, tmp_path / "cache", DocumentPolicy(allow=("local",), max_pdf_pages=3))
    assert all(t in got.documents[0].text for t in ("Page one", "Page two", "Page three"))
    with pytest.raises(DocumentError, match=r"took more than 1e-09s.*taxonomy\.documents\.pdf_timeout_s=1e-09"):
        fetch_documents(source, tmp_path / "cache", DocumentPolicy(allow=("local",), pdf_timeout_s=1e-9), leaf=LEAF)


def test_too_many_chunks_are_refused(tmp_path: Path) -> None:
    text = "\n\n".join(f"# Part {i}\n\n" + " ".join(f"word{i}x{j}." for j in range(60)) for i in range(20))
    repo, sha = make_repo(tmp_path / "src", {"long.md": text})
    doc = DocumentSource(str(repo), sha, ("*.md",))
    leaf = KnowledgeLeaf(id="knowledge->x", name="x", path=LEAF, created_by="t", version=3, document=doc,
                         document_policy=DocumentPolicy(allow=("local",), max_chunks_per_leaf=5))
    with pytest.raises(DocumentError) as err:
        with_chunks(leaf, tmp_path / "cache", max_tokens=100, overlap_tokens=10)
    message = str(err.value)
    assert LEAF in message and "more than 5 chunks" in message and "long.md" in message
    assert "taxonomy.documents.max_chunks_per_leaf=5" in message
    roomy = with_chunks(leaf, tmp_path / "cache", max_tokens=100, overlap_tokens=10,
                        policy=DocumentPolicy(allow=("local",)))
    assert len(roomy.chunks) > 5
    fetched = fetch_documents(doc, tmp_path / "cache", LOCAL)
    assert len(chunk_documents(fetched.documents, max_tokens=100, overlap_tokens=10,
                               max_chunks=len(roomy.chunks))) == len(roomy.chunks)


# --------------------------------------------------------------------------- symlinked leaf files


def test_a_symlinked_qna_yaml_leading_out_of_the_taxonomy_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "tax", tmp_path / "outside"
    real = write_leaf(outside, "qna.yaml", "freeform", tag="outside")
    linked = root / "compositional_skills/writing/linked/qna.yaml"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(real)
    folder = root / "compositional_skills/writing/folder"
    write_leaf(outside, "folder/qna.yaml", "freeform", tag="folder")
    folder.symlink_to(outside / "folder")
    inside = root / "compositional_skills/writing/inside/qna.yaml"
    write_leaf(root, "compositional_skills/writing/real/qna.yaml", "freeform", tag="inside")
    inside.parent.mkdir(parents=True)
    inside.symlink_to(root / "compositional_skills/writing/real/qna.yaml")
    files = [linked, folder / "qna.yaml", inside]
    result = validate_files(files, root, ValidationOptions())
    by_file = {Path(f.path).parent.name: f for f in result.findings if f.is_error}
    assert set(by_file) == {"linked", "folder"}, [f.format() for f in result.findings]
    for name, f in by_file.items():
        assert "symlink" in f.message and "out of the taxonomy" in f.message and str(outside) in f.message
        assert f.line == 1 and f.check == "read"
    # taxonomy diff lists the linked file; loading the leaves refuses it with that finding.
    rels = taxonomy_diff(root, "empty").changed
    assert "compositional_skills/writing/linked/qna.yaml" in rels
    with pytest.raises(ValidationFailed) as err:
        load_leaves(root, rels)
    assert any("out of the taxonomy" in f.message for f in err.value.findings)


def test_a_taxonomy_reached_through_a_symlink_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real-tax"
    write_leaf(real, "compositional_skills/writing/a/qna.yaml", "freeform")
    link = tmp_path / "tax"
    link.symlink_to(real)
    result = validate_files([link / "compositional_skills/writing/a/qna.yaml"], link, ValidationOptions())
    assert result.ok, [f.format() for f in result.findings]


def test_the_example_taxonomy_validates_with_documents_on_the_cli(tmp_path: Path, sdg_env: dict) -> None:
    tax = tmp_path / "tax"
    r = sdg_cli(sdg_env, "taxonomy", "init", "--path", str(tax))
    assert r.returncode == 0, r.stderr
    r = sdg_cli(sdg_env, "taxonomy", "validate", str(tax), "--documents")
    assert r.returncode == 0, (r.stdout, r.stderr)
