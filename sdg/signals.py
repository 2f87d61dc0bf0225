"""One way to turn a signal into an unwind: SIGTERM from Slurm or `kill` (and SIGINT, SIGHUP where asked)
raises `Interrupted` in the main thread, so `finally` blocks stop servers and Ray and close journals.

The first signal raises; later ones are ignored until the block is left, so the cleanup runs to its end.
Off the main thread (where Python cannot install handlers) and with `enabled=False` it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Sequence

from sdg.errors import Interrupted

DEFAULT = (signal.SIGTERM,)


@contextlib.contextmanager
def unwind_on(signals: Sequence[int] = DEFAULT, *, enabled: bool = True) -> Iterator[None]:
    """Inside the block, the first of `signals` raises `Interrupted(signum)`."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
