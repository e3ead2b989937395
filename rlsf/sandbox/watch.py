"""The watcher of one running child (:class:`_Watch`): reads its output with caps, enforces the
wall time, kills and reaps it and everything it started, and tells the verdict."""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from . import reap
from .cgroups import _kill_uid, _RunCgroup
from .limits import _MARKER, Limits, MiB, RunResult, Verdict
from .workdir import Workdir


class _Owner(Protocol):
    """What :class:`_Watch` reads of the :class:`~rlsf.sandbox.core.Sandbox` that started the run
    (typed by shape: ``core`` imports this module, so importing ``core`` here would be a cycle)."""

    _bwrap: str | None

    def _own_uid(self, wd: Workdir) -> bool: ...


class _Watch:
    """Feeds nothing, reads stdout/stderr with caps, enforces the wall time, kills and reaps."""

    def __init__(self, sb: _Owner, proc: subprocess.Popen, info_r: int | None, limits: Limits,
                 cg: _RunCgroup | None, wd: Workdir, mode: str, t0: float) -> None:
        self.sb, self.proc, self.info_r, self.limits, self.cg, self.wd, self.mode, self.t0 = \
            sb, proc, info_r, limits, cg, wd, mode, t0
        self.pre = bytearray()  # stderr before the marker: the sandbox's own messages
        self.started = False
        self.out = bytearray()
        self.err = bytearray()
        self.received = 0  # program output bytes received, kept or not
        self.truncated = False
        self.killed_for: str | None = None
        self.init_pidfd: int | None = None
        self.info = bytearray()
        self.status: int | None = None
        self.rusage = None

    # -- killing ----------------------------------------------------------------------------------
    def kill(self, why: str) -> None:
        if self.killed_for is None:
            self.killed_for = why
        if self.init_pidfd is not None:  # bubblewrap's init: the PID namespace dies with it
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        if self.status is None:
            if self.init_pidfd is None or not self._exits_soon():
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the leader is not reaped: the group is ours
        if self.cg is not None:
            self.cg.kill()
        if self.sb._bwrap is None and self.sb._own_uid(self.wd):
            _kill_uid(self.wd.uid)
            reap.reap_orphans(self.wd.uid, spare=self.proc.pid)

    def _exits_soon(self, timeout: float = 1.0) -> bool:
        """After its init died, bubblewrap's monitor exits by itself; wait for that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._poll():
                return True
            time.sleep(0.002)
        return False

    def _poll(self) -> bool:
        """Reap the outer process if it exited; True when it has."""
        if self.status is not None:
            return True
        try:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return True
        if pid == 0:
            return False
        self.status, self.rusage = status, ru
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def _exited(self) -> bool:
        """Whether the outer process exited (without reaping it: the process group stays ours)."""
        if self.status is not None:
            return True
        if not hasattr(os, "waitid"):  # macOS
            return self._poll()
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _learn_init(self) -> None:
        """A pidfd of bubblewrap's init (the PID namespace's pid 1), from the info bubblewrap
        writes as soon as it has made it: to kill the namespace, and to reap the init once
        bubblewrap's monitor has exited and left it to us."""
        m = re.search(rb'"child-pid":\s*(\d+)', self.info)
        if m and self.init_pidfd is None and hasattr(os, "pidfd_open"):
            pid = int(m.group(1))
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                return
            # read after the pidfd is open: still a namespace's init, the monitor's child or (the
            # monitor gone) ours; a reused pid is neither, and is never signalled nor reaped
            if _is_ns_init_of(pid, (self.proc.pid, os.getpid())):
                self.init_pidfd = fd
            else:
                os.close(fd)

    def _drain_info(self) -> None:
        """Read what is left of bubblewrap's info (a run that ended before the loop read it)."""
        if self.info_r is None or self.init_pidfd is not None:
            return
        with contextlib.suppress(OSError):
            os.set_blocking(self.info_r, False)
            while chunk := os.read(self.info_r, 1 << 16):
                self.info += chunk
        self._learn_init()

    # -- the loop ----------------------------------------------------------------------------------
    def result(self) -> RunResult:
        lim = self.limits
        deadline = self.t0 + lim.wall_s
        sel = selectors.DefaultSelector()
        streams = {self.proc.stdout.fileno(): "out", self.proc.stderr.fileno(): "err"}
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if self.info_r is not None:
            sel.register(self.info_r, selectors.EVENT_READ)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(self.proc.pid)
                sel.register(pidfd, selectors.EVENT_READ)
        open_streams = set(streams)
        exit_time = None
        try:
            while True:
                now = time.monotonic()
                if exit_time is None and self._exited():
                    exit_time = now
                    self.kill_leftovers()
                if exit_time is not None and (not open_streams or now > exit_time + 2.0):
                    break
                if exit_time is None and now >= deadline:
                    self.kill("wall")
                    exit_time = time.monotonic()
                    continue
                timeout = (deadline - now) if exit_time is None else (exit_time + 2.0 - now)
                if pidfd is None:
                    timeout = min(timeout, 0.02)
                for key, _ev in sel.select(max(0.0, timeout)):
                    fd = key.fd
                    if fd == pidfd:
                        sel.unregister(pidfd)
                        continue
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if fd == self.info_r:
                        self.info += chunk
                        if not chunk:
                            sel.unregister(fd)
                        self._learn_init()
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        open_streams.discard(fd)
                        continue
                    self._take(streams[fd], chunk)
                    if self.received > lim.output_bytes and self.killed_for is None:
                        self.truncated = True
                        self.kill("output")
                        exit_time = exit_time or time.monotonic()
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            if self.status is None:
                if not self._exits_soon(0.5):
                    with contextlib.suppress(OSError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(self.proc.pid, 0)
                    self.status, self.rusage = status, ru
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
            self._drain_info()
            if self.init_pidfd is not None:
                # bubblewrap's monitor exits as soon as the program has; its init then kills what is
                # left of the namespace: wait until it has exited (the namespace is then empty)
                import select as _select
                if not _select.select([self.init_pidfd], [], [], 3.0)[0]:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
                    _select.select([self.init_pidfd], [], [], 3.0)
                reap.reap_pidfd(self.init_pidfd)  # an orphan re-parented to us (a subreaper): never a zombie
                os.close(self.init_pidfd)
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self._verdict()

    def kill_leftovers(self) -> None:
        """The program ended: nothing it started may outlive it (under bwrap its init's exit has
        already killed the namespace)."""
        if self.sb._bwrap is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.cg is not None:
                self.cg.kill()
            if self.sb._own_uid(self.wd):
                _kill_uid(self.wd.uid)
                reap.reap_orphans(self.wd.uid, spare=self.proc.pid)  # killed daemons re-parented to us
        self._poll()

    def _take(self, which: str, chunk: bytes) -> None:
        if which == "err" and not self.started:
            self.pre += chunk
            i = self.pre.find(_MARKER)
            if i < 0:
                return
            self.started = True
            chunk = bytes(self.pre[i + len(_MARKER):])
            del self.pre[i:]
        self.received += len(chunk)
        room = self.limits.output_bytes - len(self.out) - len(self.err)
        if len(chunk) > room:
            self.truncated = True
        buf = self.out if which == "out" else self.err
        buf += chunk[:max(room, 0)]

    def _verdict(self) -> RunResult:
        lim = self.limits
        duration = time.monotonic() - self.t0
        cpu = self.cg.cpu_s() if self.cg is not None else None
        peak = self.cg.peak_mb() if self.cg is not None else None
        if self.mode == "limits" and self.rusage is not None:  # the program itself was our child
            if cpu is None:
                cpu = self.rusage.ru_utime + self.rusage.ru_stime
            if peak is None:
                peak = self.rusage.ru_maxrss / (1024 if sys.platform == "linux" else MiB)
        code = os.waitstatus_to_exitcode(self.status) if self.status is not None else None
        sig = None
        if code is not None and code < 0:
            sig, code = -code, None
        elif code is not None and self.mode == "bwrap" and code > 128 and (code - 128) in _SIGNALS:
            sig, code = code - 128, None  # bubblewrap reports a death by signal N as 128 + N
        sig_name = _SIGNALS.get(sig) if sig else None
        stderr = bytes(self.err)
        pre = bytes(self.pre).decode("utf-8", errors="replace").strip()

        def res(verdict: Verdict, reason: str) -> RunResult:
            return RunResult(verdict, code, sig_name, bytes(self.out), stderr, self.truncated, duration, cpu, peak,
                             self.mode, reason)

        if not self.started:
            if self.killed_for == "wall":
                return res(Verdict.SANDBOX_ERROR, f"the sandbox did not start within {lim.wall_s:g} s")
            detail = pre or (f"exit status {code}" if code is not None else f"killed by {sig_name}")
            return res(Verdict.SANDBOX_ERROR, f"the sandbox failed to start: {detail}"[:2000])
        if self.killed_for == "output":
            return res(Verdict.OUTPUT_LIMIT, f"output past {lim.output_bytes} bytes; killed")
        if self.killed_for == "wall":
            return res(Verdict.WALL_TIMEOUT, f"ran past the wall-time limit of {lim.wall_s:g} s; killed")
        if self.cg is not None and self.cg.oom_kills() > 0:
            return res(Verdict.MEMORY_LIMIT, f"memory limit of {lim.memory_mb} MB reached (cgroup OOM kill)")
        tail = stderr[-4096:]
        cpu_limit = max(1, math.ceil(lim.cpu_s))
        if code == 0:
            return res(Verdict.OK, "")
        # SIGKILL that is neither ours nor the OOM killer's: the hard CPU limit (a second after
        # SIGXCPU), when the CPU used (or, unknown, the time run) reached the limit
        hard_cpu = sig_name == "SIGKILL" and (cpu if cpu is not None else duration) >= cpu_limit
        if sig_name == "SIGXCPU" or hard_cpu or \
                b"CPU time limit exceeded signal terminated program" in tail:
            return res(Verdict.CPU_TIMEOUT, f"CPU-time limit of {cpu_limit} s reached")
        if sig_name == "SIGXFSZ" or b"File size limit exceeded signal terminated program" in tail:
            return res(Verdict.OUTPUT_LIMIT, f"wrote a file past the limit of {lim.file_bytes} bytes")
        if any(m in tail for m in _MEMORY_MESSAGES):
            return res(Verdict.MEMORY_LIMIT, f"memory limit of {lim.memory_mb} MB reached (allocation failed)")
        if sig_name is not None:
            return res(Verdict.SIGNAL, f"killed by {sig_name}")
        if code == 127 and stderr.startswith(b"rlsf sandbox: command not found"):
            return res(Verdict.RUNTIME_ERROR, stderr.decode(errors="replace").strip())
        return res(Verdict.RUNTIME_ERROR, f"exit code {code}")


def _is_ns_init_of(pid: int, parents: tuple[int, ...]) -> bool:
    """Whether ``pid`` is pid 1 of a PID namespace below ours and a child of one of ``parents``."""
    try:
        fields = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
        nspid = fields["NSpid"].split()
        return len(nspid) > 1 and nspid[-1] == "1" and int(fields["PPid"]) in parents
    except (OSError, KeyError, ValueError):
        return False


_SIGNALS = {int(s): s.name for s in signal.Signals if not s.name.startswith("SIG_") and 0 < int(s) < 65}
_MEMORY_MESSAGES = (b"std::bad_alloc", b"out of memory allocating", b"virtual memory exhausted",
                    b"Cannot allocate memory", b"cannot allocate memory")
