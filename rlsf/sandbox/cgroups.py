"""Per-run cgroups (processes, memory, CPU accounting and quota, kill) and the clean-up of what a run left:
sweeping a dead caller's cgroups, killing a cgroup or every process of a uid."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

from .isolation import _nsid, _pid_alive
from .limits import _PREFIX, Limits, MiB

# ---- cgroups ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _cgroup_plan() -> dict[str, tuple[str, str]]:
    """Feature -> (version, directory of our own cgroup under which a run's cgroup is made), for
    the features ``pids`` (pids.max), ``memory`` (a memory limit), ``cpu`` (CPU accounting of the
    whole tree), ``quota`` (a CPU quota: v2's cpu.max, v1's cpu.cfs_quota_us) and ``kill`` (v2's
    cgroup.kill). Tried for real: a probe child is made and removed.
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
                if opt in ("pids", "memory", "cpuacct", "cpu"):
                    v1_mount.setdefault(opt, fields[4])
    own_path: dict[str, str] = {}
    for line in own:
        _num, ctrls, path = line.split(":", 2)
        for c in (ctrls.split(",") if ctrls else ["<v2>"]):
            own_path[c] = path
    plan: dict[str, tuple[str, str]] = {}
    if v2_mount and "<v2>" in own_path:
        base = os.path.join(v2_mount, own_path["<v2>"].lstrip("/"))
        have = _try_child(base, ("cgroup.procs",), ("pids.max", "memory.max", "cpu.stat", "cpu.max", "cgroup.kill"))
        if have is not None:
            for feature, control in (("pids", "pids.max"), ("memory", "memory.max"), ("cpu", "cpu.stat"),
                                     ("quota", "cpu.max"), ("kill", "cgroup.kill")):
                if control in have:
                    plan[feature] = ("v2", base)
    for feature, ctrl, control in (("pids", "pids", "pids.max"), ("memory", "memory", "memory.limit_in_bytes"),
                                   ("cpu", "cpuacct", "cpuacct.usage"), ("quota", "cpu", "cpu.cfs_quota_us")):
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
            if "quota" in self.features:
                _set_quota(*self.features["quota"], limits.cpus)
        except OSError:
            self.remove()
            raise

    def quota(self) -> float | None:
        """The run's CPU quota in cores, as the cgroup holds it (None: no quota)."""
        text = self._read("quota", "cpu.cfs_quota_us", "cpu.max")
        period = self._read("quota", "cpu.cfs_period_us", "cpu.max")
        try:
            quota, per = (text.split()[0], period.split()[-1]) if text and period else ("max", "0")
            return None if quota in ("max", "-1") else int(quota) / int(per)
        except (ValueError, IndexError, ZeroDivisionError):
            return None

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


def _set_quota(version: str, d: str, cpus: float) -> None:
    """``cpus`` cores per period (100 ms), at least 1 ms."""
    if version == "v2":
        Path(d, "cpu.max").write_text(f"{max(1000, int(cpus * 100_000))} 100000")
    else:
        period = int(Path(d, "cpu.cfs_period_us").read_text())
        Path(d, "cpu.cfs_quota_us").write_text(str(max(1000, int(cpus * period))))


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
