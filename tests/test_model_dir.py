"""The model dir shared with InstructLab: GGUF files flat in it (where `ilab model download` puts them),
found by both tools; the old `<model_dir>/ORG/NAME` GGUF layout still found; a `teacher.revision` other than
the copy on disk fetches that revision or is refused naming both. Real huggingface_hub against a real
on-disk hub cache (offline), as tests/test_models.py builds it; no fake hub."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub._local_folder import read_download_metadata, write_download_metadata

from sdg.teacher.models import ModelError, download, list_models, resolve_model_path
from tests import test_models
from tests.test_models import SNAPSHOT, hub_repo

hub = test_models.hub  # the fixture: a private hub cache and HF home, offline

REPO = "org/tiny-GGUF"
FILE = "tiny.Q4_K_M.gguf"


def _gguf_repo(cache: Path, content: bytes, ref: str = "main") -> str:
    return hub_repo(cache, REPO, {FILE: content, "README.md": b"# tiny"}, ref=ref)


def test_gguf_download_is_flat_and_ilabs_own_download_call_finds_it(hub: Path, tmp_path: Path) -> None:
    commit = _gguf_repo(hub, b"GGUF-main")
    model_dir = tmp_path / "models"
    result = download(REPO, filename=FILE, model_dir=model_dir)
    assert result.path == model_dir / FILE and result.revision == commit
    assert sorted(p.name for p in model_dir.iterdir()) == [".cache", FILE]  # no ORG/NAME folder
    meta = read_download_metadata(model_dir, FILE)  # huggingface_hub's reader of a local dir
    assert meta is not None and meta.commit_hash == commit
    # ilab downloads a GGUF with hf_hub_download(repo, file, revision, local_dir=<model-dir>): the same call
    # at this commit finds sdg's file in place (the hub cache is emptied first, so it cannot come from there)
    for entry in hub.iterdir():
        os.rename(entry, tmp_path / f"moved-{entry.name}")
    assert hf_hub_download(REPO, FILE, revision=commit, local_dir=model_dir, cache_dir=hub) == str(model_dir / FILE)
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, fetch=False) == model_dir / FILE
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision=commit, fetch=False) == model_dir / FILE
    [listed] = list_models(model_dir)
    assert (listed.name, listed.kind, listed.revision) == (FILE, "gguf", commit)


def test_a_gguf_ilab_downloaded_is_found_flat_before_the_old_layout(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / FILE).write_bytes(b"GGUF-ilab")
    # what hf_hub_download(local_dir=<model-dir>) records beside it: huggingface_hub's own writer
    write_download_metadata(model_dir, FILE, "c" * 40, "etag")
    old = model_dir / "org" / "tiny-GGUF" / FILE
    old.parent.mkdir(parents=True)
    old.write_bytes(b"GGUF-old-sdg")
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, fetch=False) == model_dir / FILE
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="c" * 40, fetch=False) == model_dir / FILE
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="ccccccc", fetch=False) == model_dir / FILE
    names = {m.name: m.revision for m in list_models(model_dir)}
    assert names == {FILE: "c" * 40, f"org/tiny-GGUF/{FILE}": None}


def test_the_old_org_name_gguf_layout_is_still_found(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    old = model_dir / "org" / "tiny-GGUF"
    old.mkdir(parents=True)
    (old / FILE).write_bytes(b"GGUF-q4")
    assert resolve_model_path(REPO, model_dir=model_dir, fetch=False) == old / FILE  # the one GGUF there
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, fetch=False) == old / FILE
    (old / "tiny.Q8_0.gguf").write_bytes(b"GGUF-q8")
    with pytest.raises(ModelError, match=r"several GGUF files.*teacher\.filename"):
        resolve_model_path(REPO, model_dir=model_dir, fetch=False)
    assert resolve_model_path(REPO, model_dir=model_dir, filename="tiny.Q8_0.gguf", fetch=False) == old / "tiny.Q8_0.gguf"


def test_another_revision_than_the_gguf_on_disk_is_fetched(hub: Path, tmp_path: Path) -> None:
    main = _gguf_repo(hub, b"GGUF-main")
    v2 = _gguf_repo(hub, b"GGUF-v2", ref="v2")
    model_dir = tmp_path / "models"
    path = resolve_model_path(REPO, model_dir=model_dir, filename=FILE)  # nothing there: fetched (main)
    assert path == model_dir / FILE and path.read_bytes() == b"GGUF-main"
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    # the same revision, by branch name: resolved to its commit, nothing fetched again
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="main") == path
    assert path.stat().st_mtime_ns == mtime
    # without fetching, another revision is refused naming both
    with pytest.raises(ModelError) as err:
        resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision=v2, fetch=False)
    msg = str(err.value)
    assert f"teacher.revision is {v2}" in msg and f"is revision {main}" in msg and "sdg model download" in msg
    # with fetching allowed, the asked revision replaces the copy (a flat file holds one revision, as in ilab)
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="v2") == path
    assert path.read_bytes() == b"GGUF-v2" and read_download_metadata(model_dir, FILE).commit_hash == v2
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision=v2[:10], fetch=False) == path
    [listed] = list_models(model_dir)
    assert listed.revision == v2


def test_a_revision_that_cannot_be_fetched_names_both(hub: Path, tmp_path: Path) -> None:
    main = _gguf_repo(hub, b"GGUF-main")
    model_dir = tmp_path / "models"
    download(REPO, filename=FILE, model_dir=model_dir)
    with pytest.raises(ModelError) as err:
        resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="v9")
    msg = str(err.value)
    assert f"teacher.revision is v9 but the copy in {model_dir / FILE} is revision {main}" in msg
    assert "v9 cannot be fetched" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
    assert (model_dir / FILE).read_bytes() == b"GGUF-main"  # the copy is left as it was


def test_a_copy_without_download_metadata_is_not_taken_for_the_asked_revision(hub: Path, tmp_path: Path) -> None:
    commit = _gguf_repo(hub, b"GGUF-main")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / FILE).write_bytes(b"GGUF-copied-by-hand")
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, fetch=False).read_bytes() == b"GGUF-copied-by-hand"
    with pytest.raises(ModelError, match=r"is revision unknown \(it has no download metadata\)"):
        resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="main", fetch=False)
    assert resolve_model_path(REPO, model_dir=model_dir, filename=FILE, revision="main").read_bytes() == b"GGUF-main"
    assert read_download_metadata(model_dir, FILE).commit_hash == commit


def test_another_revision_than_the_snapshot_on_disk_is_fetched(hub: Path, tmp_path: Path) -> None:
    main = hub_repo(hub, "org/name", SNAPSHOT)
    v2 = hub_repo(hub, "org/name", {**SNAPSHOT, "config.json": b'{"model_type": "llama", "v": 2}'}, ref="v2")
    model_dir = tmp_path / "models"
    snap = resolve_model_path("org/name", model_dir=model_dir)
    assert snap == model_dir / "org" / "name" and (snap / "config.json").read_bytes() == SNAPSHOT["config.json"]
    assert resolve_model_path("org/name", model_dir=model_dir, revision=main[:7], fetch=False) == snap
    with pytest.raises(ModelError, match=f"teacher.revision is v2 but the copy in {snap} is revision {main}"):
        resolve_model_path("org/name", model_dir=model_dir, revision="v2", fetch=False)
    assert resolve_model_path("org/name", model_dir=model_dir, revision="v2") == snap
    assert (snap / "config.json").read_bytes().endswith(b'"v": 2}')
    assert [m.revision for m in list_models(model_dir)] == [v2]
