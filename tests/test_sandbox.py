"""Adversarial tests of rlsf.sandbox: one hostile behaviour each.

Every adversarial test body runs under a safety net of its own: a subprocess in a fresh PID
namespace (``unshare --pid --fork --kill-child --mount-proc``) under a time-out, so that a sandbox
regression fails the test instead of taking down the machine. Inside the net, after the body, the
common post-conditions are checked: no process is left but the net's init and the body itself,
no work directory is left, no cgroup of ours is left, and the calling process still forks and
runs.

Tests of the ``bwrap`` isolation skip where bubblewrap cannot run (with the reason), but fail in
CI (``CI`` set): CI runs as root on a Linux VM where it must work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sandbox,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox tests need Linux")]

HERE = Path(__file__).resolve().parent
NET_TIMEOUT_S = 60
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# Small limits keep every test within a few seconds.
SMALL = dict(cpu_s=1, wall_s=4, memory_mb=128, output_bytes=64 * 1024, processes=8, file_bytes=1 << 20,
             open_files=32)


# ---- the safety net (parent side) -------------------------------------------------------------


def _net_prefix() -> list[str]:
    """``unshare`` into a fresh PID namespace (with its own /proc), where that works here. Not
    root: in a user namespace of its own that keeps our uid (the sandbox refuses to run model
    code as uid 0, which ``--map-root-user`` would make us)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    base = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc"]
    own = [f"--map-user={os.getuid()}", f"--map-group={os.getgid()}"] if not ROOT else []
    for user in ([["--user", *own], ["--user", "--map-root-user"]] if not ROOT else [[]]):
        cmd = [base[0], *user, *base[1:]]
        try:
            if subprocess.run(cmd + ["true"], capture_output=True, timeout=20).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            pass
    return []


_NET: list[str] | None = None


def _net() -> list[str]:
    global _NET
    if _NET is None:
        _NET = _net_prefix()
    return _NET


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest):  # noqa: F811 -- shadows pytest's own on purpose
    """A temp dir the sandbox's unprivileged uid can reach (pytest's own are private to root):
    every directory on the path of a work dir must be searchable by others."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rlsf-sbx-test-"))
    os.chmod(d, 0o711)
    yield d
    from rlsf.sandbox import _rmtree

    _rmtree(d)


def in_net(body: str, isolation: str, tmp_path: Path, *, module: str = "test_sandbox", reaping_init: bool = True,
           env: dict[str, str] | None = None, **kwargs) -> dict:
    """Run ``_body_<body>`` of test module ``module`` in the safety net; return what it returned.
    ``reaping_init=False``: the body itself is the namespace's PID 1 and reaps no orphan (Python
    as a container's entry point); else PID 1 is a shell that reaps them. ``env``: more variables."""
    args = json.dumps({"body": body, "module": module, "isolation": isolation, "tmp": str(tmp_path),
                       "kwargs": kwargs})
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_sandbox as t; t._run_body({args!r})"
    env = {**os.environ, "RLSF_SANDBOX_NET": "1" if _net() else "0", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    if reaping_init:
        cmd = _net() + ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", code]
    else:
        cmd = _net() + [sys.executable, "-c", code]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=NET_TIMEOUT_S, env=env, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        out, err = (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")
        pytest.fail(f"the test body ran past {NET_TIMEOUT_S} s (a sandbox regression?)\n{out[-3000:]}\n{err[-3000:]}")
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode == 77:
        pytest.skip(err.strip().splitlines()[-1] if err.strip() else "skipped in the body")
    if proc.returncode == 78:  # bwrap unavailable: skip, but fail in CI
        msg = err.strip().splitlines()[-1]
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    assert proc.returncode == 0, f"test body failed (exit {proc.returncode}):\n{out[-3000:]}\n{err[-6000:]}"
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result from the body:\n{out[-3000:]}\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def probe_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The hostile probe program (rlsf.sandbox.PROBE_C) compiled once, on the host."""
    from rlsf.sandbox import PROBE_C

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    subprocess.run([cc, "-O1", "-o", str(d / "probe"), str(d / "probe.c")], check=True, capture_output=True)
    return str(d / "probe")


ISOLATIONS = [pytest.param("bwrap", id="bwrap"), pytest.param("limits", id="limits")]


# ---- the safety net (body side, in the subprocess) -----------------------------------------------


def _run_body(args_json: str) -> None:
    import importlib
    import warnings

    from rlsf import sandbox as sbm
    from rlsf.sandbox import cgroups as sbm_cg  # names the run cgroups (private: not re-exported)

    args = json.loads(args_json)
    tmp = Path(args["tmp"])
    sbx_root = tmp / "sbx"
    sbx_root.mkdir(parents=True, exist_ok=True)
    isolation = args["isolation"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sbm.SandboxWarning)
        try:
            sb = sbm.Sandbox(isolation, tmp_dir=sbx_root)
        except sbm.SandboxUnavailable as e:
            print(f"bwrap cannot run here: {e}", file=sys.stderr)
            sys.exit(78)
    body = getattr(importlib.import_module(args["module"]), f"_body_{args['body']}")
    result = body(sb, tmp, **args["kwargs"]) or {}
    # -- post-conditions: nothing left behind, and we carry on
    left_dirs = sorted(p.name for p in sbx_root.iterdir())
    assert not left_dirs, f"work directories left behind: {left_dirs}"
    if os.environ.get("RLSF_SANDBOX_NET") == "1":
        deadline = time.monotonic() + 3
        while True:
            others = _other_processes()
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not others, f"processes left behind: {others}"
    for _feature, (_v, base) in sbm_cg._cgroup_plan().items():
        mine = [n for n in os.listdir(base) if n.startswith(f"{sbm_cg._PREFIX}-{sbm_cg._nsid()}-{os.getpid()}-")]
        assert not mine, f"cgroups left behind in {base}: {mine}"
    assert subprocess.run(["true"]).returncode == 0
    assert sum(range(1000)) == 499500
    print("RESULT " + json.dumps(result))


def _other_processes() -> list[str]:
    """Live processes in this PID namespace other than its init (pid 1) and ourselves."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, os.getpid()):
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm, state = stat.split("(", 1)[1].rsplit(")", 1)[0], stat.rsplit(")", 1)[1].split()[0]
        if state not in "ZX":
            out.append(f"{name} ({comm}) {state}")
    return out


def _probe_wd(sb, probe: str):
    """A work dir holding the probe binary (a context manager)."""
    cm = sb.workdir()
    wd = cm.__enter__()
    wd.write("probe", Path(probe).read_bytes(), executable=True)
    return cm, wd


def _limits(**kw):
    from rlsf.sandbox import Limits

    return Limits(**{**SMALL, **kw})


def _summary(r) -> dict:
    return {"verdict": r.verdict.value, "exit_code": r.exit_code, "signal": r.signal, "stdout": r.text()[-2000:],
            "stderr": r.text("stderr")[-2000:], "duration_s": r.duration_s, "cpu_s": r.cpu_s, "reason": r.reason,
            "truncated": r.truncated, "stdout_len": len(r.stdout), "isolation": r.isolation,
            "peak_memory_mb": r.peak_memory_mb}


# ---- bodies (each runs in the net; asserts there, returns a summary) -----------------------------


def _body_compile_and_run(sb, tmp, *, with_probe=None):
    from rlsf.sandbox import COMPILE_LIMITS, HELLO_CPP, Limits

    with sb.workdir() as wd:
        c = sb.run(["g++", "-std=c++17", "-O2", "-o", "hello", "hello.cpp"], files={"hello.cpp": HELLO_CPP},
                   workdir=wd, limits=COMPILE_LIMITS)
        assert c.ok, (c.reason, c.text("stderr"))
        r = sb.run(["./hello"], stdin=b"20 22\n", workdir=wd, limits=Limits(), writable=False)
        assert r.ok and r.stdout == b"42\n", _summary(r)
        return {"compile": _summary(c), "run": _summary(r)}


def _body_compile_error(sb, tmp):
    from rlsf.sandbox import COMPILE_LIMITS

    c = sb.run(["g++", "-std=c++17", "-o", "x", "x.cpp"], files={"x.cpp": "int main() { return undeclared_name; }\n"},
               limits=COMPILE_LIMITS)
    return _summary(c)


def _body_probe(sb, tmp, *, probe, args, limits=None, stdin="", writable=True):
    cm, wd = _probe_wd(sb, probe)
    try:
        r = sb.run(["./probe", *args], stdin=stdin.encode(), workdir=wd, limits=_limits(**(limits or {})),
                   writable=writable)
    finally:
        cm.__exit__(None, None, None)
    return _summary(r)


def _body_fork_bomb(sb, tmp, *, probe):
    cm, wd = _probe_wd(sb, probe)
    try:
        count = sb.run(["./probe", "fork", "200"], workdir=wd, limits=_limits())
        bomb = sb.run(["./probe", "forkbomb"], workdir=wd, limits=_limits(cpu_s=1, wall_s=2))
        after = sb.run(["./probe", "exit", "0"], workdir=wd, limits=_limits())
    finally:
        cm.__exit__(None, None, None)
    return {"count": _summary(count), "bomb": _summary(bomb), "after": _summary(after)}


def _body_daemon(sb, tmp, *, probe):
    from rlsf.sandbox import processes_of_uid

    cm, wd = _probe_wd(sb, probe)
    try:
        r = sb.run(["./probe", "daemon", "marker"], workdir=wd, limits=_limits())
        left_uid = processes_of_uid(wd.uid) if wd.uid is not None else []
        time.sleep(1.6)  # the daemon writes its marker 1 s after it starts
        marker = (wd.path / "marker").exists()
    finally:
        cm.__exit__(None, None, None)
    assert not left_uid, f"processes of the run's uid left: {left_uid}"
    assert not marker, "the daemon outlived the run (it wrote its marker)"
    return _summary(r)


def _body_closeout(sb, tmp, *, probe):
    t = time.monotonic()
    res = _body_probe(sb, tmp, probe=probe, args=["closeout"], limits={"wall_s": 1.5})
    res["elapsed"] = time.monotonic() - t
    return res


def _body_escape_files(sb, tmp, *, probe):
    """Writes outside the work dir must not land; reads of host files and env must fail."""
    secret_dir = tmp / "outside"
    secret_dir.mkdir()
    os.chmod(tmp, 0o755)
    os.chmod(secret_dir, 0o755)
    secret = secret_dir / "secret.txt"
    secret.write_text("SECRET-IN-TEST-TMP")
    os.chmod(secret, 0o644)
    os.environ["RLSF_TEST_SECRET"] = "SECRET-IN-PARENT-ENV"
    ssh = Path.home() / ".ssh"
    cm, wd = _probe_wd(sb, probe)
    out = {}
    try:
        targets_read = [str(secret), "/root/.bashrc", str(ssh / "id_rsa"), str(ssh / "authorized_keys"),
                        "/etc/shadow", "/etc/passwd", str(HERE / "test_sandbox.py"), "/proc/1/environ"]
        out["read"] = {p: sb.run(["./probe", "read", p], workdir=wd, limits=_limits()).text() for p in targets_read}
        out["env"] = sb.run(["./probe", "env", "RLSF_TEST_SECRET"], workdir=wd, limits=_limits()).text()
        targets_write = [str(secret_dir / "planted.txt"), str(tmp / "planted.txt"), "/tmp/rlsf-planted.txt",
                         str(HERE / "planted.txt"), "/usr/planted.txt", "/planted.txt", "/dev/shm/planted.txt"]
        out["write"] = {p: sb.run(["./probe", "write", p], workdir=wd, limits=_limits()).text() for p in targets_write}
        out["write_ok_inside"] = sb.run(["./probe", "write", "inside.txt"], workdir=wd, limits=_limits()).text()
        out["inside_exists"] = (wd.path / "inside.txt").exists()
    finally:
        cm.__exit__(None, None, None)
        del os.environ["RLSF_TEST_SECRET"]
    out["planted"] = [p for p in targets_write if Path(p).exists()]
    for p in out["planted"]:
        with_cleanup = Path(p)
        with_cleanup.unlink()
    return out


def _body_network(sb, tmp, *, probe):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
        lst.bind(("127.0.0.1", 0))  # never any other address
        lst.listen(4)
        lst.settimeout(0.3)
        port = lst.getsockname()[1]
        res = _body_probe(sb, tmp, probe=probe, args=["connect", str(port)])
        try:
            conn, _ = lst.accept()
            conn.close()
            res["accepted"] = True
        except OSError:
            res["accepted"] = False
    return res


def _body_caller_killed(sb, tmp, *, probe):
    """The process that runs the sandbox is SIGKILLed mid-run (a check worker past its time-out):
    the program dies with it, and the next Sandbox sweeps the work dir and cgroup it left."""
    from rlsf import sandbox as sbm
    from rlsf.sandbox import cgroups as sbm_cg

    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from pathlib import Path; from rlsf import sandbox as s; "
            f"sb = s.Sandbox({sb.mode!r}, tmp_dir={str(sb.tmp_dir)!r}); cm = sb.workdir(); wd = cm.__enter__(); "
            f"wd.write('probe', Path({probe!r}).read_bytes(), executable=True); print('started', flush=True); "
            "sb.run(['./probe', 'sleep', '100'], workdir=wd, limits=s.Limits(wall_s=60))")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"started"
    time.sleep(0.7)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 3
    while _other_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _other_processes()
    assert not left, f"the program outlived its killed caller: {left}"
    stale = [p.name for p in sb.tmp_dir.iterdir()]
    assert stale, "expected the killed caller's work dir (to be swept)"
    sbm.Sandbox(sb.mode, tmp_dir=sb.tmp_dir)  # sweeps what the dead process left
    assert not list(sb.tmp_dir.iterdir())
    for _feature, (_v, base) in sbm_cg._cgroup_plan().items():
        assert not [n for n in os.listdir(base) if n.startswith(f"{sbm_cg._PREFIX}-{sbm_cg._nsid()}-{child.pid}-")]
    return {"stale": stale}


def _body_compile_bombs(sb, tmp, *, only=None):
    from rlsf.sandbox import Limits

    lim = Limits(cpu_s=1, wall_s=4, memory_mb=384, output_bytes=64 * 1024, processes=16, file_bytes=16 << 20)
    bombs = {
        "dev_zero": '#include "/dev/zero"\n',
        "dev_urandom": '#include "/dev/urandom"\n',
        "template_recursion": "template<int N> struct F { static const long v = F<N - 1>::v + F<N - 2>::v; };\n"
                              "template<> struct F<0> { static const long v = 0; };\n"
                              "template<> struct F<1> { static const long v = 1; };\n"
                              "int main() { return F<100000>::v; }\n",
        "include_itself": "#include __FILE__\n#include __FILE__\nint x;\n",
        "etc_shadow": '#include "/etc/shadow"\n',
    }
    out = {}
    for name, src in bombs.items():
        if only and name not in only:
            continue
        t = time.monotonic()
        r = sb.run(["g++", "-std=c++17", "-ftemplate-depth=1000000", "-o", "x", "x.cpp"], files={"x.cpp": src},
                   limits=lim)
        out[name] = {**_summary(r), "elapsed": time.monotonic() - t}
    return out


def _body_sandbox_error(sb, tmp, *, probe):
    from rlsf.sandbox import Limits

    cm, wd = _probe_wd(sb, probe)
    try:
        missing = sb.run(["./no-such-program"], workdir=wd, limits=_limits())
        # a program pretending to be the sandbox failing is still the program's fault
        fake = sb.run(["sh", "-c", "echo 'bwrap: Can'\"'\"'t mount proc on /newroot/proc' >&2; "
                       "printf '\\000rlsf-sandbox-start\\000' >&2; exit 1"], workdir=wd, limits=_limits())
        exit3 = sb.run(["./probe", "exit", "3"], workdir=wd, limits=_limits())
        segv = sb.run(["./probe", "raise", str(int(signal.SIGSEGV))], workdir=wd, limits=_limits())
        bad_bind = sb.run(["true"], workdir=wd, limits=_limits(), readonly_paths=[str(tmp / "does-not-exist")]) \
            if sb.mode == "bwrap" else None
        echo = sb.run(["./probe", "echo"], stdin="x" * 300_000, workdir=wd, limits=Limits(output_bytes=1 << 20))
    finally:
        cm.__exit__(None, None, None)
    return {"missing": _summary(missing), "fake": _summary(fake), "exit3": _summary(exit3), "segv": _summary(segv),
            "bad_bind": _summary(bad_bind) if bad_bind else None, "echo_len": len(echo.stdout),
            "echo_ok": echo.ok and echo.stdout == b"x" * 300_000}


# ---- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_compile_and_run_with_stdin(isolation, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    res = in_net("compile_and_run", isolation, tmp_path)
    assert res["run"]["stdout"] == "42\n" and res["run"]["isolation"] == isolation


def test_compile_error_returns_diagnostics(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    res = in_net("compile_error", "bwrap", tmp_path)
    assert res["verdict"] == "runtime_error" and res["exit_code"] == 1
    assert "undeclared_name" in res["stderr"] and "error" in res["stderr"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_infinite_loop_hits_the_cpu_limit(isolation, tmp_path, probe_bin):
    res = in_net("probe", isolation, tmp_path, probe=probe_bin, args=["spin"], limits={"cpu_s": 1, "wall_s": 5})
    assert res["verdict"] == "cpu_timeout", res
    assert res["duration_s"] < 4


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_sleep_past_the_wall_limit(isolation, tmp_path, probe_bin):
    res = in_net("probe", isolation, tmp_path, probe=probe_bin, args=["sleep", "100"], limits={"wall_s": 1})
    assert res["verdict"] == "wall_timeout", res
    assert 0.9 < res["duration_s"] < 3


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fork_bomb_is_contained(isolation, tmp_path, probe_bin):
    res = in_net("fork_bomb", isolation, tmp_path, probe=probe_bin)
    started = int(res["count"]["stdout"].split()[1])
    assert started < SMALL["processes"], res["count"]  # at most `processes` at once, the program included
    assert res["bomb"]["verdict"] in ("cpu_timeout", "wall_timeout"), res["bomb"]
    assert res["after"]["verdict"] == "ok", res["after"]  # the next run is not starved


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_bomb_hits_the_memory_limit(isolation, tmp_path, probe_bin):
    res = in_net("probe", isolation, tmp_path, probe=probe_bin, args=["alloc", "4096"], limits={"memory_mb": 128})
    assert res["verdict"] == "memory_limit", res
    assert "allocated" not in res["stdout"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_gigabytes_of_output_are_cut(isolation, tmp_path, probe_bin):
    res = in_net("probe", isolation, tmp_path, probe=probe_bin, args=["flood"], limits={"wall_s": 10})
    assert res["verdict"] == "output_limit" and res["truncated"], res
    assert res["stdout_len"] <= SMALL["output_bytes"]
    assert res["duration_s"] < 3


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_big_file_hits_the_file_size_limit(isolation, tmp_path, probe_bin):
    res = in_net("probe", isolation, tmp_path, probe=probe_bin, args=["bigfile", "big.bin"], limits={"wall_s": 5})
    assert res["verdict"] == "output_limit", res


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_closed_output_and_keeps_running(isolation, tmp_path, probe_bin):
    res = in_net("closeout", isolation, tmp_path, probe=probe_bin)
    assert res["verdict"] == "wall_timeout", res
    assert res["elapsed"] < 5


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_daemon_does_not_outlive_the_run(isolation, tmp_path, probe_bin):
    if isolation == "limits" and not ROOT:
        pytest.skip("without namespaces, only root (a uid per run) or a cgroup can find a setsid daemon")
    res = in_net("daemon", isolation, tmp_path, probe=probe_bin)
    assert res["verdict"] == "ok" and "parent done" in res["stdout"], res


def test_no_access_to_host_files_or_environment(tmp_path, probe_bin):
    res = in_net("escape_files", "bwrap", tmp_path, probe=probe_bin)
    for path, text in res["read"].items():
        assert "SECRET" not in text, (path, text)
        if path != "/proc/1/environ":  # the sandbox's own init: its (cleared) environment is no secret
            assert "READ" not in text, (path, text)
    assert "SECRET-IN-PARENT-ENV" not in res["env"] and "(unset)" in res["env"]
    assert res["planted"] == [], res["write"]
    for path, text in res["write"].items():
        assert "WROTE" not in text or path in ("/tmp/rlsf-planted.txt", "/dev/shm/planted.txt"), (path, text)
    assert "WROTE" in res["write_ok_inside"] and res["inside_exists"]


def test_environment_is_cleared_without_namespaces_too(tmp_path, probe_bin):
    res = in_net("escape_files", "limits", tmp_path, probe=probe_bin)
    assert "SECRET-IN-PARENT-ENV" not in res["env"] and "(unset)" in res["env"]


def test_no_network(tmp_path, probe_bin):
    res = in_net("network", "bwrap", tmp_path, probe=probe_bin)
    assert "CONNECTED" not in res["stdout"] and "connect failed" in res["stdout"], res
    assert res["accepted"] is False


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_caller_killed_mid_run(isolation, tmp_path, probe_bin):
    if not _net():
        pytest.skip("needs a PID namespace to see every process")
    in_net("caller_killed", isolation, tmp_path, probe=probe_bin)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_compile_bombs_are_contained(isolation, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    # the fallback: the limits hold (the bombs that hit them); what g++ can read is not protected there
    only = ["dev_zero", "template_recursion"] if isolation == "limits" else None
    res = in_net("compile_bombs", isolation, tmp_path, only=only)
    for name, r in res.items():
        assert r["verdict"] not in ("ok", "sandbox_error"), (name, r)
        assert r["elapsed"] < 6, (name, r)
    assert res["dev_zero"]["verdict"] in ("memory_limit", "cpu_timeout", "wall_timeout"), res["dev_zero"]
    if isolation == "bwrap":
        assert "No such file" in res["etc_shadow"]["stderr"], res["etc_shadow"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_verdicts_tell_program_faults_from_sandbox_failures(isolation, tmp_path, probe_bin):
    res = in_net("sandbox_error", isolation, tmp_path, probe=probe_bin)
    assert res["missing"]["verdict"] == "sandbox_error", res["missing"]
    assert res["fake"]["verdict"] == "runtime_error" and res["fake"]["exit_code"] == 1, res["fake"]
    assert res["exit3"]["verdict"] == "runtime_error" and res["exit3"]["exit_code"] == 3
    assert res["segv"]["verdict"] == "signal" and res["segv"]["signal"] == "SIGSEGV", res["segv"]
    if isolation == "bwrap":
        assert res["bad_bind"]["verdict"] == "sandbox_error", res["bad_bind"]
    assert res["echo_ok"], res["echo_len"]


# ---- in-process checks (no hostile code runs) -----------------------------------------------------


def test_limits_only_is_an_explicit_choice_that_names_its_gaps(tmp_path, monkeypatch):
    """No silent fallback: a bwrap that cannot run is refused in one line that says how to install it
    or opt in; limits only is chosen by name or by the environment variable (see also
    test_sandbox_hardened.py, where bubblewrap is unavailable)."""
    from rlsf import sandbox as sbm

    monkeypatch.delenv(sbm.ISOLATION_ENV, raising=False)
    for isolation in ("auto", None, "bwrap"):
        with pytest.raises(sbm.SandboxUnavailable, match=f"bubblewrap cannot run here.*{sbm.ISOLATION_ENV}=limits") as e:
            sbm.Sandbox(isolation, bwrap="/bin/false", tmp_dir=tmp_path)
        assert "\n" not in str(e.value)
    monkeypatch.setenv(sbm.ISOLATION_ENV, "limits")
    sb = sbm.Sandbox(bwrap="/bin/false", tmp_dir=tmp_path)
    assert sb.mode == "limits" and "chosen explicitly" in sb.isolation.why_fallback
    gaps = " ".join(sb.isolation.gaps)
    assert "network" in gaps and "file system" in gaps and "seccomp" in gaps
    r = sb.run(["sh", "-c", "echo fine"], limits=sbm.Limits(**SMALL))
    assert r.ok and r.stdout == b"fine\n" and r.isolation == "limits"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(sbm.ISOLATION_ENV, "nothing")
    with pytest.raises(ValueError, match=sbm.ISOLATION_ENV):
        sbm.Sandbox(tmp_dir=tmp_path)


def test_readonly_paths_show_even_under_the_private_tmp(tmp_path):
    """A host folder given in readonly_paths is visible (and read-only), also when it lives under
    /tmp, which the sandbox replaces by a private tmpfs (the SPoC task's precompiled header does)."""
    from rlsf import sandbox as sbm

    sb = sbm.Sandbox("bwrap", tmp_dir=tmp_path) if _bwrap_ok() else pytest.skip("bubblewrap cannot run here")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "data.txt").write_text("visible\n")
    os.chmod(shared / "data.txt", 0o644)
    r = sb.run(["sh", "-c", f"cat {shared}/data.txt; echo x > {shared}/new.txt"], readonly_paths=[shared],
               limits=sbm.Limits(**SMALL))
    assert r.stdout == b"visible\n" and r.verdict.value == "runtime_error", (r.reason, r.stderr)
    assert not (shared / "new.txt").exists()


def _bwrap_ok() -> bool:
    from rlsf import sandbox as sbm

    try:
        return sbm.Sandbox("bwrap").isolation.mode == "bwrap"
    except sbm.SandboxUnavailable:
        if os.environ.get("CI"):
            raise
        return False


def test_workdir_outlives_runs_and_is_removed(tmp_path):
    from rlsf import sandbox as sbm

    sb = sbm.Sandbox("limits", tmp_dir=tmp_path)  # asked for explicitly: no warning
    with sb.workdir() as wd:
        wd.write("a.txt", "hello")
        r = sb.run(["sh", "-c", "cat a.txt > b.txt; mkdir -p d/e; chmod 000 d"], workdir=wd, limits=sbm.Limits(**SMALL))
        assert r.ok, r.reason
        assert wd.read("b.txt") == b"hello"
        with pytest.raises(ValueError):
            wd.write("../escape.txt", "x")
        with pytest.raises(ValueError):
            sb.run(["true"], files={"/etc/x": b""}, workdir=wd)
    assert list(tmp_path.iterdir()) == []


def test_rlimits_without_prlimit(tmp_path):
    """Where util-linux's prlimit is missing (macOS), a fresh interpreter sets the rlimits."""
    from rlsf import sandbox as sbm

    sb = sbm.Sandbox("limits", tmp_dir=tmp_path)
    sb._prlimit = None
    r = sb.run(["sh", "-c", "ulimit -t; ulimit -n; ulimit -c"], limits=sbm.Limits(**{**SMALL, "cpu_s": 2}))
    assert r.ok and r.stdout.split() == [b"2", b"32", b"0"], (r.reason, r.stdout, r.stderr)


def test_self_test_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlsf.sandbox", "--self-test"], capture_output=True, text=True,
                          timeout=120, cwd=HERE.parent, start_new_session=True)
    assert "isolation:" in proc.stdout and "checks:" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_result_and_limits_types():
    from rlsf.sandbox import COMPILE_LIMITS, RUN_LIMITS, Limits, Verdict

    assert COMPILE_LIMITS.memory_mb > RUN_LIMITS.memory_mb and COMPILE_LIMITS.cpu_s > RUN_LIMITS.cpu_s
    with pytest.raises(ValueError):
        Limits(cpu_s=0)
    assert {v.value for v in Verdict} == {"ok", "runtime_error", "signal", "cpu_timeout", "wall_timeout",
                                          "memory_limit", "output_limit", "sandbox_error"}
    assert COMPILE_LIMITS.file_bytes <= 16 << 20 and RUN_LIMITS.cpus == 1.0

