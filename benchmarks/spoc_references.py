"""Do SPoC's reference (gold) programs compile and pass their own tests here?

SPoC's programs were written for GCC 5 (``gets`` and friends); rlsf compiles them with the g++
installed, in the sandbox, with the standard and flags of ``rlsf.tasks.spoc.CXXFLAGS``. This checks
every gold program of the given splits on its public and its hidden tests through the check
service (one worker per core), and prints how many compile and pass, with the verdicts of the
failures.

    RLSF_DATA_DIR=../shared/data python benchmarks/spoc_references.py
    RLSF_DATA_DIR=../shared/data python benchmarks/spoc_references.py --splits test --limit 100
"""

from __future__ import annotations

import argparse
import json
import time

from common import print_header


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--limit", type=int, default=0, help="First N programs per split (0: all).")
    p.add_argument("--workers", type=int, default=-1, help="Check processes (-1: one per core).")
    p.add_argument("--test-tsv", default=None, help="Another SPoC-format TSV as the test split (e.g. spoc-testw.tsv).")
    args = p.parse_args()
    from rlsf.tasks.spoc import CXXFLAGS, SPoC, reference_report

    print_header("spoc_references", extra=[f"g++ flags: {' '.join(CXXFLAGS)}"])
    task = SPoC(**({"test_tsv": args.test_tsv} if args.test_tsv else {}))
    t0 = time.perf_counter()
    report = reference_report(task, tuple(args.splits), args.limit, args.workers)
    print(json.dumps(report, indent=2))
    for split, r in report.items():
        n = r["programs"]
        print(f"{split}: {n} programs; compile {r['compile']} ({r['compile'] / n:.1%}), pass public "
              f"{r['pass_public']} ({r['pass_public'] / n:.1%}), pass hidden {r['pass_hidden']} "
              f"({r['pass_hidden'] / n:.1%}); {r['skipped_no_tests']} skipped for want of tests")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
