"""Jobs submitted earlier, from their folders under `cluster.job_dir`: status, logs, cancel.

What a `sdg jobs status|logs|cancel` command prints; everything comes from Slurm (sacct, squeue,
scancel) and from the job folder (submitit's logs, the attempts' rendezvous/done files).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdg.errors import JobNotFound, SdgError
from sdg.launch.rendezvous import read_json


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    folder: Path
    state: str  # Slurm's: PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, CANCELLED, TIMEOUT, ... or UNKNOWN
    history: tuple[str, ...]  # every attempt's state, oldest first (sacct -D)
    attempts: tuple[dict[str, Any], ...] = field(default=())  # done.json per attempt (status, run_dir, error)

    @property
    def run_dir(self) -> str | None:
        return next((a["run_dir"] for a in reversed(self.attempts) if a.get("run_dir")), None)

    def describe(self) -> str:
        lines = [f"job {self.job_id}: {self.state}" + (f" (attempts: {' -> '.join(self.history)})"
                                                       if len(self.history) > 1 else "")]
        for i, a in enumerate(self.attempts):
            live = self.state in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING")
            lines.append(f"  attempt {i}: {a.get('status', 'running' if live else 'stopped')}"
                         + (f", error: {a['error']}" if a.get("error") else ""))
        if self.run_dir:
            lines.append(f"  outputs: {self.run_dir}")
        lines.append(f"  logs: {self.folder}/{self.job_id}_<node>_log.out")
        return "\n".join(lines)


def _is_job_id(name: str) -> bool:
    """`123`, or `123_4` for element 4 of array job 123 (a Slurm sweep)."""
    return all(part.isdigit() for part in name.split("_")) and name.count("_") <= 1


def list_jobs(job_dir: str | Path) -> list[str]:
    """Job ids with a folder under `job_dir`, newest first."""
    root = Path(job_dir).expanduser()
    ids = [p.name for p in root.iterdir() if p.is_dir() and _is_job_id(p.name)] if root.is_dir() else []
    return sorted(ids, key=lambda j: tuple(int(x) for x in j.split("_")), reverse=True)


def _folder(job_dir: str | Path, job_id: str) -> Path:
    folder = Path(job_dir).expanduser() / str(job_id)
    if not folder.is_dir():
        known = ", ".join(list_jobs(job_dir)[:10]) or "none"
        raise JobNotFound(f"no job {job_id} under {job_dir} (jobs there: {known})")
    return folder


def status(job_dir: str | Path, job_id: str) -> JobStatus:
    folder = _folder(job_dir, job_id)
    r = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", str(job_id), "-o", "State"], capture_output=True,
                       text=True, timeout=60)
    history = tuple(s.split()[0] for s in r.stdout.splitlines() if s.strip()) if r.returncode == 0 else ()
    if not history:  # no accounting: squeue knows queued and running jobs
        q = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=60)
        history = (q.stdout.strip() or "UNKNOWN",)
    attempts = [_attempt(d) for d in sorted((folder / "sdg").glob("attempt-*"), key=lambda p: int(p.name.split("-")[1]))]
    return JobStatus(str(job_id), folder, history[-1], history, tuple(attempts))


def _attempt(folder: Path) -> dict[str, Any]:
    """One attempt's outcome: node 0's done.json, else the first failure a node wrote down, else {}."""
    done = read_json(folder / "done.json")
    if done:
        return {k: v for k, v in done.items() if k != "token"}
    errors = [r for r in (read_json(folder / "rendezvous.json"), *map(read_json, sorted(folder.glob("node-*.json"))))
              if r and "error" in r]
    return {"status": "failed", "error": errors[0]["error"]} if errors else {}


def logs(job_dir: str | Path, job_id: str, node: int = 0, lines: int = 100) -> str:
    """The last `lines` of node `node`'s output and error logs."""
    folder = _folder(job_dir, job_id)
    out = []
    for kind in ("out", "err"):
        path = folder / f"{job_id}_{node}_log.{kind}"
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {path} <==\n" + "\n".join(text))
    return "\n".join(out) or f"no logs yet in {folder} (the job may still be pending)"


def cancel(job_id: str) -> None:
    """scancel the job; its journals keep what is done, and submitting the same config again resumes."""
    r = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SdgError(f"scancel {job_id} failed: {r.stderr.strip()}")
