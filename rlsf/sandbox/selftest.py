"""Checks of the sandbox on this machine: the hostile probe program (:data:`PROBE_C`),
``--self-test``, ``--benchmark``, and :func:`main` (``python -m rlsf.sandbox``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .cgroups import processes_of_uid
from .core import Sandbox
from .isolation import _which
from .limits import COMPILE_LIMITS, Limits, MiB, SandboxUnavailable, Verdict

# ---- self-test -------------------------------------------------------------------------------

#: A hostile program with one misbehaviour per mode (used by ``--self-test`` and the tests).
PROBE_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static void *idle(void *p) { return p; }
static void try_call(const char *name, long r) {  /* r: the call's result; errno is set when r < 0 */
    printf("%s=%s\n", name, r < 0 ? strerrorname_np(errno) : "ALLOWED");
}
static void syscalls(void) {  /* the calls the seccomp filter denies, each with harmless arguments */
    char zero[256] = {0};
    try_call("io_uring_setup", syscall(SYS_io_uring_setup, 1, zero));
    try_call("perf_event_open", syscall(SYS_perf_event_open, zero, 0, -1, -1, 0));
    try_call("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    try_call("add_key", syscall(SYS_add_key, "user", "rlsf", "x", 1, -3));
    try_call("request_key", syscall(SYS_request_key, "user", "rlsf", 0, 0));
    try_call("bpf", syscall(SYS_bpf, 0, zero, 72));
    try_call("userfaultfd", syscall(SYS_userfaultfd, 0));
    try_call("ptrace", ptrace(PTRACE_TRACEME, 0, 0, 0));
    try_call("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    try_call("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    try_call("setns", syscall(SYS_setns, 0, 0));
    long c = syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
    if (c == 0) _exit(0);
    try_call("clone(CLONE_NEWNET)", c);
    try_call("clone3", syscall(SYS_clone3, zero, 88));
    try_call("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    try_call("init_module", syscall(SYS_init_module, zero, 0, ""));
    try_call("personality(ADDR_NO_RANDOMIZE)", syscall(SYS_personality, ADDR_NO_RANDOMIZE));
    pid_t p = fork();  /* what every program does still works: fork, threads */
    if (p == 0) _exit(0);
    try_call("fork", p < 0 ? -1 : waitpid(p, 0, 0));
    pthread_t t;
    errno = pthread_create(&t, 0, idle, 0);
    try_call("pthread_create", errno ? -1 : pthread_join(t, 0));
}
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
    if (!strcmp(m, "syscalls")) { syscalls(); return 0; }
    if (!strcmp(m, "spinners")) {  /* N processes spinning at once */
        for (int i = 1; i < atoi(a); i++) if (fork() == 0) break;
        volatile unsigned long x = 0; for (;;) x++;
    }
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
    check that the chosen isolation claims holds (1 when the sandbox refuses to run here)."""
    import socket

    try:
        sb = Sandbox(isolation)  # type: ignore[arg-type]
    except SandboxUnavailable as e:
        print(f"the sandbox refuses to run here: {e}", file=out)
        return 1
    print(sb.isolation.describe(), file=out)
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
        r = sb.run(["./probe", "spinners", "4"], workdir=wd, limits=dataclasses.replace(small, cpu_s=5, wall_s=1.5))
        share = r.cpu_s / r.duration_s if r.cpu_s is not None and r.duration_s else None
        check("CPU quota (4 processes spinning)", share is not None and share <= small.cpus + 0.25,
              f"{share:.2f} cores used, quota {small.cpus:g}" if share is not None else "CPU use unknown",
              expected=sb.isolation.cpu_quota)
        r = sb.run(["./probe", "write", "planted"], workdir=wd, limits=small, writable=False)
        check("writable=False", "WROTE" not in r.text() and not (wd.path / "planted").exists(), r.text().strip())
        if sb.isolation.seccomp:  # (without the filter the probe's ptrace(TRACEME) would stop it)
            r = sb.run(["./probe", "syscalls"], workdir=wd, limits=small)
            calls = dict(line.split("=", 1) for line in r.text().splitlines() if "=" in line)
            refused = [c for c, e in calls.items() if e in ("EPERM", "ENOSYS")]
            normal = calls.get("fork") == calls.get("pthread_create") == "ALLOWED"
            check("system-call filter (seccomp)", len(refused) == len(calls) - 2 and normal,
                  f"{len(refused)} of {len(calls) - 2} denied calls refused; fork and threads work"
                  + ("" if normal else f" ({r.text().strip()[-200:]})"))
        else:
            check("system-call filter (seccomp)", False, "no filter without bubblewrap", expected=False)
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
    zombies = _zombie_children()
    check("orphans reaped (child subreaper)", not zombies, f"{len(zombies)} zombie children left")
    return 1 if failures else 0


def _zombie_children() -> list[int]:
    """Our children that exited and were never reaped."""
    out = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z" and int(stat[1]) == os.getpid():
                out.append(int(pid))
    return out


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
    ap.add_argument("--isolation", choices=("auto", "bwrap", "limits"), default="auto",
                    help="auto: $RLSF_SANDBOX_ISOLATION, else bwrap")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test(args.isolation)
    try:
        if args.benchmark:
            benchmark(args.runs, args.isolation)
        else:
            print(Sandbox(args.isolation).isolation.describe())
    except SandboxUnavailable as e:
        print(f"the sandbox refuses to run here: {e}", file=sys.stderr)
        return 1
    return 0
