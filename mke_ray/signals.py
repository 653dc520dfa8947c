"""Stop signals. SIGTERM (sent by Kubernetes and KubeRay when a pod goes, by `ray job stop`, by `kill`) ends a sweep
the way Ctrl-C does: the finished trials recorded, the parent run KILLED, one line saying how to go on. Standard
library only: installed before the seconds of imports."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM as Ctrl-C for the block (``sigterm_as_ctrl_c``); both handlers as they were after it (a sweep run
    in a process that goes on, such as a test's)."""
    main = threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    sigterm_as_ctrl_c()
    try:
        yield
    finally:
        for sig, handler in before.items():
            if main and handler is not None:
                signal.signal(sig, handler)


def sigterm_as_ctrl_c() -> None:
    """Handle SIGTERM as SIGINT, with whatever handler SIGINT has at that moment (Tune's while trials run, else
    Python's KeyboardInterrupt). Call it again after ``ray.init``, which puts in Ray's own handler: that one prints
    a crash report and aborts the process (exit 134), leaving the parent run RUNNING and Ray's agents orphaned."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_ctrl_c)


def _as_ctrl_c(signum, frame) -> None:
    signal.raise_signal(signal.SIGINT)


@contextmanager
def sigint_kept() -> Iterator[None]:
    """Put back the SIGINT handler the block found. Tune's ``fit`` leaves its own in place when no Ctrl-C came
    during the trials; it only asks a Tune run that has ended to stop, so Ctrl-C (and SIGTERM) while the last
    records are written would do nothing."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if main and before is not None:
            signal.signal(signal.SIGINT, before)
