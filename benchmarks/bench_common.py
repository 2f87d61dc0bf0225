"""Helpers shared by the engine benchmarks: load-average gate, CPU pinning, process memory and CPU readings.

Not a benchmark itself. The benchmarks run as `python benchmarks/<name>.py`, so this module is
importable as `bench_common` from any of them (their folder is first on sys.path).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

Log = Callable[[str], None]


def log_err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def fmt_load(load: tuple[float, float, float] | None = None) -> str:
    a, b, c = load or loadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def wait_for_quiet(max_load: float = 1.2, *, poll_s: float = 30.0, max_wait_s: float = 600.0,
                   log: Log = log_err) -> dict:
    """Wait until the 1-minute load average is below `max_load` (polled every `poll_s`, at most `max_wait_s`).

    On a 2-core machine shared with others a local model is 20-60x slower when the cores are
    oversubscribed, so a measurement only means something on a quiet machine. Returns what was seen:
    {"load": (1, 5, 15 min), "waited_s": ..., "quiet": bool}. max_load <= 0 disables the gate.
    """
    start = time.monotonic()
    load = loadavg()
    if max_load <= 0:
        return {"load": load, "waited_s": 0.0, "quiet": None}
    while load[0] >= max_load:
        waited = time.monotonic() - start
        if waited >= max_wait_s:
            log(f"load gate: 1-min load {load[0]:.2f} still >= {max_load} after {waited:.0f} s; measuring anyway "
                "(figures are suspect)")
            return {"load": load, "waited_s": waited, "quiet": False}
        log(f"load gate: 1-min load {load[0]:.2f} >= {max_load}; waiting {poll_s:.0f} s "
            f"({waited:.0f}/{max_wait_s:.0f} s)")
        time.sleep(poll_s)
        load = loadavg()
    return {"load": load, "waited_s": time.monotonic() - start, "quiet": True}


def pin_to(cpu: int | None) -> str:
    """Pin this process to one CPU when it exists; returns a description for the output."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        return f"not pinned (cpu {cpu} not in {sorted(allowed)})"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to cpu {cpu}"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM / VmSize of a process in bytes (from /proc/<pid>/status)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def sigterm_as_interrupt() -> None:
    """SIGTERM (timeout, kill) unwinds like Ctrl-C, so servers this benchmark started are stopped."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
