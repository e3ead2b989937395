"""SPoC programs checked per second: rlsf's check service against plain g++ + run, one at a time.

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

The start-up costs (workers or actors, precompiled headers; Ray's own start) are timed
separately and not in the rate: they are paid once per run, not per program.

    RLSF_DATA_DIR=../shared/data python benchmarks/bench_spoc_checks.py --programs 40 --backends processes ray
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from common import print_header


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--programs", type=int, default=40)
    p.add_argument("--workers", type=int, default=-1, help="rlsf check workers (-1: one per core).")
    p.add_argument("--backends", nargs="+", default=["processes"], choices=["processes", "ray"],
                   help="check.backend values to measure, one after the other.")
    args = p.parse_args()
    from rlsf.feedback.service import CheckService, cpu_count
    from rlsf.tasks.spoc import SPoC

    task = SPoC()
    examples = task.load("test")[: args.programs]
    workers = cpu_count() if args.workers < 0 else args.workers
    print_header("bench_spoc_checks", extra=[f"{len(examples)} SPoC test programs, public tests; rlsf workers {workers}"])

    t_plain, ok_plain = plain(task, examples)
    n = len(examples)
    print(f"plain g++ + run, one at a time : {t_plain:7.1f} s  {n / t_plain:6.2f} programs/s  ({sum(ok_plain)} pass)",
          flush=True)
    for backend in args.backends:
        t0 = time.perf_counter()
        with CheckService(task, workers=workers, timeout_s=300, backend=backend) as service:
            # Start-up: every worker builds its sandbox and precompiled header on its first check.
            service.check([examples[0]] * workers, texts=["int main() {}"] * workers)
            t_start = time.perf_counter() - t0
            t1 = time.perf_counter()
            certs = [c.certificate for c in service.check(examples, texts=[ex["code"] for ex in examples])]
            t_rlsf = time.perf_counter() - t1
        ok_rlsf = [c.correct for c in certs]
        agree = sum(a == b for a, b in zip(ok_plain, ok_rlsf))
        print(f"rlsf check service, {backend} ({workers} workers) : {t_rlsf:7.1f} s  {n / t_rlsf:6.2f} programs/s  "
              f"({sum(ok_rlsf)} pass)  + {t_start:.1f} s start-up once; {t_plain / t_rlsf:.2f}x plain; verdicts agree "
              f"on {agree}/{n}", flush=True)

if __name__ == "__main__":
    main()
