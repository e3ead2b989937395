"""Reaping what a run leaves: the process that runs the sandbox becomes a child subreaper, and
reaps the orphans of its runs by pidfd, one known process at a time.

bubblewrap's monitor (our child) exits as soon as the program has, before the PID namespace's
init has finished killing what is left; that init is then an orphan. Without a subreaper it goes
to PID 1, and a PID 1 that never reaps (Python as a container's entry point, no ``--init``) keeps
one zombie per run until PIDs run out. As a subreaper, the caller gets those orphans instead and
reaps each one through a pidfd opened while it was known to be the run's (``waitid(P_PIDFD)``):
never ``waitpid(-1)``, which would steal the exit status of a ``subprocess`` child of the caller.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux >= 3.4); True when it is one."""
    if sys.platform != "linux":
        return False
    try:
        libc = _libc()
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
        flag = ctypes.c_int(0)
        return libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value == 1
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    if sys.platform != "linux":
        return False
    flag = ctypes.c_int(0)
    try:
        return _libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value == 1
    except (OSError, AttributeError):
        return False


def reap_pidfd(pidfd: int) -> bool:
    """Reap the process of ``pidfd`` if it is our exited child; True when it was reaped. Cannot
    touch any other process (the pidfd names exactly one)."""
    if not hasattr(os, "P_PIDFD"):
        return False
    try:
        return os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) is not None
    except (ChildProcessError, OSError):
        return False


def reap_orphans(uid: int, spare: int | None = None) -> int:
    """Reap our zombie children whose uid is ``uid`` (a run's own uid, used by nothing else: the
    killed leftovers of a run in limits mode, re-parented to us), except ``spare`` (the run's own
    child, whose status its watcher reads). Returns how many."""
    if not hasattr(os, "pidfd_open"):
        return 0
    me, n = os.getpid(), 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == spare:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:  # read after the pidfd is open: a pid reused since the scan fails this test
                if _zombie_child_of(pid, me, uid):
                    n += reap_pidfd(fd)
            finally:
                os.close(fd)
    return n


def _zombie_child_of(pid: int, parent: int, uid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except OSError:
        return False
    return (fields.get("State", "").strip().startswith("Z") and fields.get("PPid", "").strip() == str(parent)
            and fields.get("Uid", "").split()[:1] == [str(uid)])
