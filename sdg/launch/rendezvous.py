"""Files in the job folder through which the nodes of one job attempt find each other.

Layout (`<job_dir>/<job id>/sdg/attempt-<SLURM_RESTART_COUNT>/`, one folder per attempt so a
requeued job never reads its previous attempt's files):
  rendezvous.json    node 0: {"address": Ray head, "token": random, "driver": node} or {"error": ...}
  node-<name>.json   every node once its teacher is ready: endpoints (with their API keys), GPUs, replicas
  done.json          node 0 at the end: {"token", "status": complete|incomplete|failed, ...}
Files with endpoints are mode 0600 (they hold API keys). Every write is atomic (tmp + rename), every
wait polls a file with a deadline and a liveness check, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sdg.errors import SdgError

POLL_S = 0.2


class RendezvousError(SdgError):
    """A node waited for another one that never showed up, or that reported a failure."""


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
