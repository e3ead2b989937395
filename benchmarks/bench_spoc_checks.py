"""SPoC programs checked per second: rlsf's check service against plain g++ + run, one at a time,
or against another checkout of rlsf (the sandbox before a change), side by side in one run.

Both sides judge the same ``--programs`` SPoC gold programs (distinct, so rlsf's verdict cache
does not help) on their public tests and must reach the same verdicts:

* **plain**: for each program in turn, ``g++`` (same standard and flags, no precompiled header)
  then each test, as bare subprocesses: what a script without a sandbox would do (these are the
  dataset's own programs, not model output, so running them bare is acceptable here);
* **rlsf**: the check service as training uses it: one sandboxed worker per core
  (``--workers``), each with its precompiled ``bits/stdc++.h``, every compile and every test in
  the sandbox (bubblewrap, limits, clean-up).

* **rlsf on Ray** (``--backends processes ray``): the same service with ``check.backend: ray``,
  its workers Ray actors on a local Ray instance (started by the service, one CPU per worker).

* **before and after** (``--baseline DIR``): the check service of the rlsf checkout in DIR (e.g.
  ``git worktree add ../sandbox-before HEAD`` before a change) and of this one, each in a fresh
  process, alternated ``--rounds`` times in the order before, after, after, before, ... (so that
  drift in the machine's load falls on both); the medians are compared (plain is skipped). With
  ``--workers 0`` the checks run in each side's own process, which then also reports the CPU
  seconds a program costs: a figure that another job sharing the machine does not inflate.

The start-up costs (workers or actors, precompiled headers; Ray's own start) are timed
separately and not in the rate: they are paid once per run, not per program.

    RLSF_DATA_DIR=../shared/data python benchmarks/bench_spoc_checks.py --programs 40 --backends processes ray
    RLSF_DATA_DIR=../shared/data python benchmarks/bench_spoc_checks.py --programs 40 --baseline ../sandbox-before
    RLSF_DATA_DIR=../shared/data python benchmarks/bench_spoc_checks.py --programs 40 --baseline ../sandbox-before --workers 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_header

HERE = Path(__file__).resolve().parent


def plain(task, examples) -> tuple[float, list[bool]]:
    from rlsf.tasks.spoc import CXXFLAGS
    from rlsf.tasks.spoc_data import PREAMBLE, outputs_match

    t0, ok = time.perf_counter(), []
    for ex in examples:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "prog.cpp").write_text(PREAMBLE + ex["code"])
            built = subprocess.run(["g++", *CXXFLAGS, "-w", "prog.cpp", "-o", "prog"], cwd=d, capture_output=True)
            good = built.returncode == 0
            for inp, want in task.tests(ex["probid"], "public") if good else []:
                try:
                    r = subprocess.run(["./prog"], cwd=d, input=inp.encode(), capture_output=True, timeout=5)
                except subprocess.TimeoutExpired:
                    good = False
                    break
                if r.returncode != 0 or not outputs_match(r.stdout.decode(errors="replace"), want):
                    good = False
                    break
            ok.append(good)
    return time.perf_counter() - t0, ok


def service_run(task, examples, workers: int, backend: str) -> dict:
    """One check service over ``examples``: start-up and checking times, and each verdict."""
    from rlsf.feedback.service import CheckService

    t0 = time.perf_counter()
    with CheckService(task, workers=workers, timeout_s=300, backend=backend) as service:
        # Start-up: every worker builds its sandbox and precompiled header on its first check.
        service.check([examples[0]] * workers, texts=["int main() {}"] * workers)
        t_start = time.perf_counter() - t0
        t1, cpu1 = time.perf_counter(), _cpu()
        certs = [c.certificate for c in service.check(examples, texts=[ex["code"] for ex in examples])]
        t_check, cpu = time.perf_counter() - t1, _cpu() - cpu1
    return {"start_s": t_start, "check_s": t_check, "correct": [c.correct for c in certs],
            "cpu_s": cpu if workers == 0 else None,
            "failed": sum(c.failed for c in certs), "isolation": sorted({str(c.info.get("isolation")) for c in certs})}


_RUN_CPU = [0.0]  # CPU seconds of the sandboxed runs of this process, as their cgroups counted them


def _cpu() -> float:
    """CPU seconds of this process plus those of its sandboxed runs (each run's cgroup counts its
    whole tree, whoever reaps it): with ``--workers 0`` the checks run in this process, so this is
    their whole CPU cost, which another job on the machine does not inflate (wall time it does)."""
    t = os.times()
    return t.user + t.system + _RUN_CPU[0]


def _count_run_cpu() -> None:
    from rlsf.sandbox import Sandbox

    run = Sandbox.run

    def counted(self, *args, **kwargs):
        result = run(self, *args, **kwargs)
        _RUN_CPU[0] += result.cpu_s or 0.0
        return result

    Sandbox.run = counted


def child(args) -> None:
    """``--child``: one service run of whatever rlsf ``PYTHONPATH`` brings, as one JSON line."""
    from rlsf.tasks.spoc import SPoC

    _count_run_cpu()
    task = SPoC()
    examples = task.load("test")[: args.programs]
    print("RESULT " + json.dumps(service_run(task, examples, args.workers, "processes")), flush=True)


def side_by_side(args, workers: int, n: int) -> None:
    """Before (``--baseline``) and after (this checkout), alternated, each run in a fresh process."""
    trees = {"before": Path(args.baseline).resolve(), "after": HERE.parent}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    order = [side for r in range(args.rounds) for side in (("before", "after") if r % 2 == 0 else ("after", "before"))]
    for side in order:
        env = {**os.environ, "PYTHONPATH": str(trees[side])}
        cmd = [sys.executable, str(Path(__file__)), "--child", "--programs", str(n), "--workers", str(workers)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            raise SystemExit(f"{side} ({trees[side]}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        runs[side].append(r)
        no_pch = out.stderr.count("no precompiled header")  # a worker that could not build it compiles plainly
        cpu = f", {r['cpu_s'] / n * 1000:.0f} ms CPU a program" if r.get("cpu_s") is not None else ""
        print(f"  {side:<6} {n / r['check_s']:6.2f} programs/s{cpu} ({r['check_s']:.1f} s, + {r['start_s']:.1f} s "
              f"start-up; {sum(r['correct'])} pass, {r['failed']} checker failed; isolation {r['isolation']}"
              + (f"; {no_pch} workers WITHOUT a precompiled header" if no_pch else "") + ")", flush=True)
    rate = {side: statistics.median(n / r["check_s"] for r in rs) for side, rs in runs.items()}
    agree = sum(a == b for a, b in zip(runs["before"][0]["correct"], runs["after"][0]["correct"]))
    print(f"median of {args.rounds}: before {rate['before']:.2f} programs/s, after {rate['after']:.2f} programs/s: "
          f"{rate['after'] / rate['before'] - 1:+.1%}; verdicts agree on {agree}/{n}", flush=True)
    if workers == 0:
        cpu = {side: statistics.median(r["cpu_s"] / n for r in rs) for side, rs in runs.items()}
        print(f"median CPU a program: before {cpu['before'] * 1000:.0f} ms, after {cpu['after'] * 1000:.0f} ms: "
              f"{cpu['after'] / cpu['before'] - 1:+.1%}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--programs", type=int, default=40)
    p.add_argument("--workers", type=int, default=-1, help="rlsf check workers (-1: one per core).")
    p.add_argument("--backends", nargs="+", default=["processes"], choices=["processes", "ray"],
                   help="check.backend values to measure, one after the other.")
    p.add_argument("--baseline", default=None, help="An rlsf checkout to compare with, side by side (see above).")
    p.add_argument("--rounds", type=int, default=4, help="With --baseline: runs of each side, alternated.")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    from rlsf.feedback.service import cpu_count

    workers = cpu_count() if args.workers < 0 else args.workers
    if args.child:
        return child(args)
    from rlsf.tasks.spoc import SPoC

    task = SPoC()
    examples = task.load("test")[: args.programs]
    n = len(examples)
    print_header("bench_spoc_checks", extra=[f"{n} SPoC test programs, public tests; rlsf workers {workers}"])
    if args.baseline:
        return side_by_side(args, workers, n)
    t_plain, ok_plain = plain(task, examples)
    print(f"plain g++ + run, one at a time : {t_plain:7.1f} s  {n / t_plain:6.2f} programs/s  ({sum(ok_plain)} pass)",
          flush=True)
    for backend in args.backends:
        r = service_run(task, examples, workers, backend)
        t_rlsf, ok_rlsf = r["check_s"], r["correct"]
        agree = sum(a == b for a, b in zip(ok_plain, ok_rlsf))
        print(f"rlsf check service, {backend} ({workers} workers) : {t_rlsf:7.1f} s  {n / t_rlsf:6.2f} programs/s  "
              f"({sum(ok_rlsf)} pass)  + {r['start_s']:.1f} s start-up once; {t_plain / t_rlsf:.2f}x plain; verdicts "
              f"agree on {agree}/{n}", flush=True)


if __name__ == "__main__":
    main()
