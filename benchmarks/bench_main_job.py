"""The main job over several seeds: SFT, RL and the equal-time SFT baseline, side by side.

Runs ``rlsf pipeline --config configs/game24.yaml --seed S`` for each seed (the main job at its
defaults, ``pipeline.baseline: sft`` included) into ``OUT/sS`` -- a finished seed is not run
again, a killed one continues (``--resume``) -- then prints one row per seed and a mean row:
held-out greedy success (maj@1) and step accuracy of the SFT model, after RL and after the
equal-time baseline, RL's paired changes with their 95% intervals (from each run's
``summary.json``), and the stage times.

    python benchmarks/bench_main_job.py --seeds 0 1 2 --out runs/main-seeds
    python benchmarks/bench_main_job.py --seeds 0 1 2 --out runs/main-seeds -- --steps 32   # extra pipeline flags

Each seed takes about 12-25 minutes on a 2-core CPU (``lscpu``: say which in any figure you
quote). Run it alone: the baseline is sized by the RL stage's wall time against the SFT stage's,
so other jobs on the machine during one stage and not the other skew it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_seed(seed: int, out: Path, config: str, extra: list[str]) -> dict:
    folder = out / f"s{seed}"
    summary = folder / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, "-m", "rlsf", "pipeline", "--config", config, "--seed", str(seed),
               "--output-dir", str(folder), "--no-progress", *extra]
        if folder.exists():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(summary.read_text())


def fmt(change: dict | None) -> str:
    if not change:
        return "-"
    return f"{change['change']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}]"


def rows(summaries: dict[int, dict], metric: str = "info/step_accuracy") -> list[str]:
    head = ("| seed | maj@1 SFT / RL / SFT+SFT | step accuracy SFT / RL / SFT+SFT | RL - SFT: success | "
            "RL - SFT: step accuracy | RL - (SFT+SFT): success | RL - (SFT+SFT): step accuracy | "
            "minutes: SFT, RL, SFT+SFT |")
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    means: dict[str, list[float]] = {}
    for seed, s in summaries.items():
        b, a, base = s["before"], s["after"], s.get("baseline", {})
        ch = s.get("changes", {})
        t = s.get("stage_seconds", {})
        cells = [
            f"{b['maj@1']:.2f} / {a['maj@1']:.2f} / {base.get('maj@1', float('nan')):.2f}",
            f"{b[metric]:.3f} / {a[metric]:.3f} / {base.get(metric, float('nan')):.3f}",
            fmt(ch.get("rl_vs_sft", {}).get("success")), fmt(ch.get("rl_vs_sft", {}).get(metric)),
            fmt(ch.get("rl_vs_baseline", {}).get("success")), fmt(ch.get("rl_vs_baseline", {}).get(metric)),
            ", ".join(f"{t[k] / 60:.1f}" if k in t else "-" for k in ("sft", "rl", "sft_more")),
        ]
        out.append(f"| {seed} | " + " | ".join(cells) + " |")
        for key, value in (("rl_gain", a[metric] - b[metric]), ("vs_base", a[metric] - base.get(metric, a[metric]))):
            means.setdefault(key, []).append(value)
    n = len(summaries)
    if n:
        gains = means["rl_gain"]
        out.append(f"\nRL's step-accuracy gain over SFT: positive in {sum(g > 0 for g in gains)} of {n} seeds, "
                   f"mean {sum(gains) / n:+.3f}; over the equal-time baseline: mean {sum(means['vs_base']) / n:+.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/main-seeds"))
    ap.add_argument("--config", default="configs/game24.yaml")
    ap.add_argument("--summarize-only", action="store_true", help="Print the table of the finished seeds; run nothing.")
    args = ap.parse_args(argv)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    summaries = {}
    for seed in args.seeds:
        if args.summarize_only:
            path = out / f"s{seed}" / "summary.json"
            if path.is_file():
                summaries[seed] = json.loads(path.read_text())
            continue
        summaries[seed] = run_seed(seed, out, args.config, extra)
    print("\n".join(rows(summaries)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
