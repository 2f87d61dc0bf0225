"""Which run folder a generate writes to: the unfinished run with the same config (resume), or a new
dated one. A different config never silently mixes into an unfinished run's journals."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sdg.errors import RunConflict, SdgError

RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunDir:
    path: Path
    stamp: str  # InstructLab's `<ds>` part of file names, kept across resumes
    resumed: bool

    @property
    def journal_dir(self) -> Path:
        return self.path / "journal"


@dataclass
class RunState:
    """`run.json`: what a run is (its fingerprint and the components behind it) and where it stands."""

    fingerprint: str
    stamp: str
    status: str  # running | complete | incomplete
    components: dict[str, Any]
    started: float
    finished: float | None = None
    executor: dict[str, Any] = field(default_factory=dict)  # local, or ray with its nodes and per-node counts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunState":
        known = {k: data[k] for k in ("fingerprint", "stamp", "status", "components", "started", "finished", "executor")
                 if k in data}
        return cls(**{"fingerprint": "", "status": "running", "components": {}, "started": 0.0, **known})


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_state(run: RunDir, state: RunState) -> None:
    tmp = run.path / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(state.to_json(), indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run.path / RUN_FILE)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            added = sorted(set(b) - set(a))
            removed = sorted(set(a) - set(b))
            changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
            parts = [f"{len(x)} {w}" for x, w in ((added, "added"), (removed, "removed"), (changed, "changed")) if x]
            out.append(f"{key} ({', '.join(parts)}: {', '.join((added + removed + changed)[:3])})")
        else:
            out.append(f"{key} ({a!r} -> {b!r})")
    return out


def choose_run_dir(output_dir: Path, fingerprint: str, components: Mapping[str, Any], *, resume: str = "auto",
                   now: float | None = None) -> RunDir:
    """Resume the newest unfinished run with this fingerprint, refuse a conflicting one, else start anew."""
    if resume not in ("auto", "fresh"):
        raise SdgError(f"generate.resume must be 'auto' or 'fresh', not {resume!r}")
    unfinished = []
    if output_dir.is_dir():
        for d in sorted(output_dir.iterdir(), reverse=True):
            data = _read(d) if d.is_dir() else None
            if data and data.get("status") != "complete" and "stamp" in data:
                unfinished.append((d, RunState.from_json(data)))
    if resume == "auto":
        for d, state in unfinished:
            if state.fingerprint == fingerprint:
                return RunDir(d, state.stamp, True)
        if unfinished:
            d, state = unfinished[0]
            diff = _differences(state.components, dict(components)) or ["unknown"]
            raise RunConflict(f"the unfinished run {d} was started with a different config: {'; '.join(diff)}. "
                              "Run with the same config to resume it, or pass generate.resume=fresh to start a new run")
    t = time.time() if now is None else now
    name = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(t))
    path = output_dir / name
    suffix = 1
    while path.exists():
        suffix += 1
        path = output_dir / f"{name}-{suffix}"
    path.mkdir(parents=True)
    return RunDir(path, time.strftime("%Y-%m-%dT%H_%M_%S", time.localtime(t)), False)
