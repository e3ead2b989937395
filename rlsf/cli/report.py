"""``rlsf report RUN_DIR``: one self-contained HTML page of a run (:mod:`rlsf.stages.report`).

::

    rlsf report runs/game24                          # writes runs/game24/report.html
    rlsf report runs/game24 --out /tmp/game24.html --examples 10 --tokens words

The parser is built here and registered by :func:`rlsf.cli.main.build_parser`; the report's
module (and torch, which the token rewards need) is imported only when the command runs.
"""

from __future__ import annotations

import argparse

HELP = ("Write one self-contained HTML page of a run folder (pipeline, train/sft, eval or experiment): "
        "the run, held-out figures with paired changes, training curves, completions with each token "
        "coloured by its reward, the task's pictures. Opens offline.")


def add_report_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help=HELP, description=HELP, allow_abbrev=False)
    p.add_argument("run_dir", help="The run folder (e.g. runs/game24, runs/game24/rl, an experiment's folder).")
    p.add_argument("--out", metavar="FILE.html", help="Where to write the page (default: RUN_DIR/report.html).")
    p.add_argument("--examples", type=int, default=6, metavar="N",
                   help="Held-out problems whose greedy completions are shown (default: 6; 0: none).")
    p.add_argument("--tokens", choices=("auto", "model", "words"), default="auto",
                   help="How completions are cut into tokens: the run's own tokenizer (model), word pieces "
                        "(words), or the tokenizer where the run folder holds a model, else words (auto).")
    return p


def run_report(args: argparse.Namespace) -> int:
    from rlsf.stages.report import write_report

    print(write_report(args.run_dir, args.out, examples=args.examples, tokens=args.tokens))
    return 0
