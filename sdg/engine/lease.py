"""The run lease: one writer per run folder. `lease.json` names the holder (host, pid, Slurm job and
attempt) and carries a heartbeat; a second `sdg data generate` (the same command twice, or a resubmission
while the old job still runs) is refused with the holder's name instead of doubling the teacher's work and
writing the same files twice. A stale lease is taken over: its process is gone (same host), its Slurm job
has ended or been requeued (a later attempt of the same job), or its heartbeat is older than `stale_s`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdg.errors import RunBusy

LEASE_FILE = "lease.json"
HEARTBEAT_S = 20.0
STALE_S = 120.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str
    heartbeat: float
    job_id: str | None = None  # SLURM_JOB_ID of the holder
    attempt: int = 0  # SLURM_RESTART_COUNT

    def describe(self) -> str:
        job = f", Slurm job {self.job_id} attempt {self.attempt}" if self.job_id else ""
        return f"pid {self.pid} on {self.host}{job}, heartbeat {time.time() - self.heartbeat:.0f} s ago"


def _me(token: str) -> Holder:
    env = os.environ
    return Holder(socket.gethostname(), os.getpid(), token, time.time(), env.get("SLURM_JOB_ID") or None,
                  int(env.get("SLURM_RESTART_COUNT", "0") or 0))


def _read(path: Path) -> Holder | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return Holder(**data)
    except (OSError, ValueError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _job_running(job_id: str) -> bool | None:
    """Whether Slurm still runs `job_id` (None: no Slurm here to ask)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        out = subprocess.run([squeue, "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")


def stale(holder: Holder, me: Holder, stale_s: float = STALE_S) -> str | None:
    """Why `holder` no longer holds the run (None: it does)."""
    if holder.host == me.host and holder.job_id == me.job_id and not _pid_alive(holder.pid):
        return f"its process {holder.pid} has exited"
    if holder.job_id and holder.job_id == me.job_id and holder.attempt < me.attempt:
        return f"Slurm requeued job {holder.job_id} (attempt {holder.attempt} -> {me.attempt})"
    if holder.job_id and holder.job_id != me.job_id and _job_running(holder.job_id) is False:
        return f"its Slurm job {holder.job_id} has ended"
    if time.time() - holder.heartbeat > stale_s:
        return f"its heartbeat is {time.time() - holder.heartbeat:.0f} s old"
    return None


class RunLease:
    """`with RunLease(run_dir): ...` or acquire()/release(); a daemon thread keeps the heartbeat fresh."""

    def __init__(self, run_dir: Path, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.path = Path(run_dir) / LEASE_FILE
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = secrets.token_hex(8)
        self.note = ""  # set when a stale lease was taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, holder: Holder, *, exclusive: bool) -> bool:
        data = json.dumps(asdict(holder)).encode()
        if exclusive:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        tmp = self.path.with_name(f".{LEASE_FILE}.{self.token}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        return True

    def acquire(self) -> "RunLease":
        me = _me(self.token)
        for _ in range(3):
            if self._write(me, exclusive=True):
                break
            holder = _read(self.path)
            if holder is None:  # torn or unreadable: a writer died mid-write
                self.path.unlink(missing_ok=True)
                continue
            why = stale(holder, me, self.stale_s)
            if why is None:
                raise RunBusy(f"the run folder {self.path.parent} is in use by {holder.describe()}: two writers "
                              "would double the teacher's work and overwrite each other's files. Wait for it to "
                              f"finish or stop it; a lease whose heartbeat is older than {self.stale_s:.0f} s is "
                              "taken over")
            self.note = f"took over the run from {holder.describe()}: {why}"
            self.path.unlink(missing_ok=True)
        else:
            raise RunBusy(f"could not take the lease {self.path}: another writer keeps taking it")
        self._thread = threading.Thread(target=self._beat, name="sdg-run-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = _read(self.path)
            if holder is None or holder.token != self.token:
                return  # taken over (we were presumed dead): stop claiming it
            try:
                self._write(_me(self.token), exclusive=False)
            except OSError:
                pass  # a full disk: the next beat tries again; journals report their own errors

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        holder = _read(self.path)
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
