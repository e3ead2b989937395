"""The public types of :mod:`rlsf.sandbox` (limits and their presets, verdicts, results, errors and
warnings), and the constants the package's other files share."""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass
from typing import Literal

MiB = 1 << 20
SANDBOX_DIR = "/sandbox"  # where the work directory appears inside a bwrap sandbox
_PREFIX = "rlsf-sbx"
_MARKER = b"\x00rlsf-sandbox-start\x00"
_UID_RANGE = (0x70000000, 0x7FFE0000)  # uids no system allocates (systemd's "unused" range)
_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The environment variable that chooses the isolation where the caller leaves it open
#: (``bwrap``, the default, or ``limits``: running model code without namespaces, an explicit opt-in).
ISOLATION_ENV = "RLSF_SANDBOX_ISOLATION"


# ---- public types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (each holds per run; see ``docs/sandbox.md`` for how).

    ``cpu_s``: CPU seconds of each process (rounded up to whole seconds: SIGXCPU, then SIGKILL a
    second later); ``wall_s``: real time of the whole run, after which everything is killed;
    ``memory_mb``: address space of each process and, where a memory cgroup is available, the
    total of all processes plus their private ``/tmp``; ``output_bytes``: stdout + stderr
    together (past it the run is killed); ``processes``: processes and threads at once, the
    program included; ``file_bytes``: the largest file it may write, and the size of its private
    ``/tmp`` and ``/dev/shm``; ``open_files``: file descriptors per process; ``cpus``: CPU quota
    of the whole run in cores, where a cgroup CPU controller is writable (``cpu.max`` /
    ``cpu.cfs_quota_us``), so that many processes cannot take more than their share.
    """

    cpu_s: float = 2.0
    wall_s: float = 5.0
    memory_mb: int = 256
    output_bytes: int = 1 * MiB
    processes: int = 8
    file_bytes: int = 1 * MiB
    open_files: int = 64
    cpus: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"Limits.{f.name} must be positive, got {getattr(self, f.name)!r}")


#: Limits for running a compiled program on one test case.
RUN_LIMITS = Limits()
#: Limits for compiling one C++ file with g++ (cc1plus needs room; a compile bomb still dies). The
#: file cap bounds the binary and g++'s intermediates in the private ``/tmp``.
COMPILE_LIMITS = Limits(cpu_s=20.0, wall_s=40.0, memory_mb=1536, output_bytes=1 * MiB, processes=16,
                        file_bytes=16 * MiB, open_files=64)


class Verdict(str, enum.Enum):
    OK = "ok"
    RUNTIME_ERROR = "runtime_error"  # exited with a non-zero code
    SIGNAL = "signal"  # killed by a signal (SIGSEGV, SIGABRT, ...) not due to a limit
    CPU_TIMEOUT = "cpu_timeout"
    WALL_TIMEOUT = "wall_timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"  # stdout+stderr past output_bytes, or a file past file_bytes
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed: not the program's fault


@dataclass(frozen=True)
class RunResult:
    verdict: Verdict
    exit_code: int | None  # the program's exit code (None when killed by a signal)
    signal: str | None  # e.g. "SIGSEGV" when killed by a signal
    stdout: bytes  # captured, at most output_bytes (with stderr)
    stderr: bytes  # the program's stderr (the sandbox's own messages are in ``reason``)
    truncated: bool  # output was cut at the limit
    duration_s: float  # wall time, sandbox start-up included
    cpu_s: float | None  # CPU of the whole run (cgroup), else of the reaped processes; None: unknown
    peak_memory_mb: float | None  # the cgroup's peak, else the largest process's RSS
    isolation: str  # "bwrap" or "limits"
    reason: str = ""  # one line saying why, for logs and certificates

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def timed_out(self) -> bool:
        return self.verdict in (Verdict.CPU_TIMEOUT, Verdict.WALL_TIMEOUT)

    @property
    def sandbox_failed(self) -> bool:
        return self.verdict is Verdict.SANDBOX_ERROR

    def text(self, stream: Literal["stdout", "stderr"] = "stdout") -> str:
        return getattr(self, stream).decode("utf-8", errors="replace")


class SandboxUnavailable(RuntimeError):
    """The isolation asked for cannot hold here (bubblewrap cannot run, model code would run as
    uid 0, ``writable=False`` cannot be enforced): the message is one line saying how to fix it."""


class SandboxWarning(RuntimeWarning):
    """Kept for callers that filter it: the sandbox no longer falls back with a warning (it refuses)."""


def _error(reason: str, mode: str, t0: float) -> RunResult:
    return RunResult(Verdict.SANDBOX_ERROR, None, None, b"", b"", False, time.monotonic() - t0, None, None, mode,
                     reason)
