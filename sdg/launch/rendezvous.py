"""Files in the job folder through which the nodes of one job attempt find each other.

Layout (`<job_dir>/<job id>/sdg/attempt-<SLURM_RESTART_COUNT>/`, one folder per attempt so a
requeued job never reads its previous attempt's files):
  rendezvous.json    node 0: {"address": Ray head, "token": random, "driver": node} or {"error": ...}
  node-<name>.json   every node once its teacher is ready: endpoints (with their API keys; the judge's too),
                     GPUs, replicas. The node's Ray worker reads its endpoints from here: keys never
                     travel as actor arguments (which Ray may log)
  done.json          node 0 at the end: {"token", "status": complete|incomplete|failed, ...}
Files with endpoints are mode 0600 (they hold API keys). Every write is atomic (tmp + rename), every
wait polls a file with a deadline and a liveness check, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from sdg.errors import RendezvousError

POLL_S = 0.2


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_json(path: Path, *, timeout_s: float, what: str, alive_check: Callable[[], None] = lambda: None,
              accept: Callable[[Any], bool] = lambda d: True) -> Any:
    """Poll for `path` (a JSON document that `accept`s) until `timeout_s`; alive_check may raise."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = read_json(path)
        if data is not None and accept(data):
            return data
        alive_check()
        if time.monotonic() > deadline:
            raise RendezvousError(f"waited {timeout_s:.0f} s for {what} ({path}); look at the other nodes' logs "
                                  "in the job folder")
        time.sleep(POLL_S)


@dataclass(frozen=True)
class AttemptFiles:
    """The files of one job attempt."""

    root: Path

    @classmethod
    def of(cls, job_folder: Path, restart: int) -> "AttemptFiles":
        return cls(Path(job_folder) / "sdg" / f"attempt-{restart}")

    @property
    def rendezvous(self) -> Path:
        return self.root / "rendezvous.json"

    @property
    def done(self) -> Path:
        return self.root / "done.json"

    def node(self, name: str) -> Path:
        return self.root / f"node-{name}.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass(frozen=True)
class NodeRecord:
    """`node-<name>.json`: one node ready for this attempt (its GPUs, replicas and teacher endpoints)."""

    node: str
    index: int
    ip: str
    gpus: list[str]
    gpu_source: str
    replicas: list[list[str]]
    stand_in: bool
    tensor_parallel_size: int
    endpoints: list[Any]  # ServedEndpoint
    token: str = ""
    judge_endpoints: list[Any] = field(default_factory=list)  # the judge's on this node (judge=...), else []

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("endpoints", "judge_endpoints"):
            out[key] = [{**asdict(e), "gpus": list(e.gpus)} for e in getattr(self, key)]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NodeRecord":
        from sdg.teacher.server_base import ServedEndpoint

        def eps(key: str) -> list[Any]:
            return [ServedEndpoint(**{**e, "gpus": tuple(e.get("gpus", ()))}) for e in data.get(key, ())]

        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "endpoints": eps("endpoints"),
                      "judge_endpoints": eps("judge_endpoints")})

    def describe(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "replicas": self.replicas, "stand_in": self.stand_in,
                "tensor_parallel_size": self.tensor_parallel_size}
