"""Servers and workers that tests start die with the test process, even when pytest itself is
killed (SIGKILL leaves no chance for a fixture's teardown): the kernel sends the child SIGKILL
when its parent goes (Linux's PR_SET_PDEATHSIG). A killed run once left `celery worker`
processes behind, still consuming the test broker."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGKILL):
    """A `preexec_fn` for subprocess.Popen. The signal follows the *thread* that forked the
    child, so start long-lived children from the main thread (fixtures do)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        _prctl_pdeathsig(sig)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its parent's wait() does not count)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found
