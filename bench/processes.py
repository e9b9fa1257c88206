"""Processes the bench starts (Celery workers, gunicorn, the run at a smaller fraction) die with
it: on Ctrl-C or SIGTERM the bench's `finally` blocks stop them by their pids, and if the bench is
killed outright the kernel sends them SIGKILL (Linux's PR_SET_PDEATHSIG). A killed bench once left
its Celery workers running in their own sessions, still consuming the bench broker."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """A `preexec_fn` for subprocess.Popen (None off Linux). The signal follows the *thread* that
    forked the child: start long-lived children from the main thread."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def stop_group(proc: subprocess.Popen, *, grace: float = 20) -> None:
    """SIGTERM to the child's process group (it was started with start_new_session), then
    SIGKILL if it has not gone within `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def terminate_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so the `finally` blocks that stop children run (the
    default action ends the process without them)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def stop_forked_children() -> None:
    """The throughput run's forked processes, if the bench is interrupted while they work."""
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(5)
