"""Stability of the first RL steps: KL to the reference, truncation and reward, per step, per arm.

Runs ``rlsf train`` (PPO, the main job's settings from ``configs/game24.yaml``) from one SFT
checkpoint for ``--steps`` steps once per arm, each in a fresh process, and writes a markdown
table and a plot of the per-step figures side by side. Arms:

* ``before``: the defaults before engine v2 (AdamW lr 1e-5 from the first update, no warm-up,
  value head untrained when the policy starts moving);
* ``after``: the current defaults;
* any ``--arm NAME KEY=VALUE ...`` given on the command line (ablations).

Finished arms are kept in ``OUT/runs/ARM/metrics.jsonl`` and not re-run, so the study resumes.

    rlsf sft --config configs/game24.yaml --output-dir runs/sft
    python benchmarks/bench_stability.py --sft-model runs/sft/model --out docs/stability --steps 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = {"ppo.lr": 1e-5, "ppo.warmup_steps": 0, "ppo.value_warmup_steps": 0}
KEYS = ("kl", "response/truncated", "reward/total", "reward/score", "feedback/step_accuracy", "loss/approx_kl",
        "advantage/truncated_minus_ended", "response/length")


def run_arm(name: str, overrides: dict, args) -> list[dict]:
    out = Path(args.out) / "runs" / name
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and sum(1 for _ in metrics.open()) >= args.steps:
        print(f"[{name}] done already: {metrics}", flush=True)
    else:
        cmd = [sys.executable, "-m", "rlsf.cli", "train", "--config", str(ROOT / "configs" / "game24.yaml"),
               "--model", args.sft_model, "--output-dir", str(out), "--steps", str(args.steps),
               "--train.save_every", "0", "--no-progress", "--seed", str(args.seed)]
        if out.exists():
            cmd.append("--resume")
        for k, v in overrides.items():
            cmd += [f"--{k}", str(v)]
        print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
        subprocess.run(cmd, check=True)
    return [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]


def table(runs: dict[str, list[dict]], steps: int) -> str:
    names = list(runs)
    head = "| step | " + " | ".join(f"{n}: KL / truncated / reward" for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for s in range(steps):
        cells = []
        for n in names:
            r = runs[n][s] if s < len(runs[n]) else {}
            cells.append(f"{r.get('kl', float('nan')):.2f} / {r.get('response/truncated', float('nan')):.2f} / "
                         f"{r.get('reward/total', float('nan')):+.2f}")
        lines.append(f"| {s + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in KEYS if any(k in r for rs in runs.values() for r in rs)]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(4 * ((len(keys) + 1) // 2), 6), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        for n, rs in runs.items():
            ax.plot([r["step"] for r in rs if k in r], [r[k] for r in rs if k in r], marker=".", label=n)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-model", required=True, help="SFT checkpoint every arm starts from.")
    p.add_argument("--out", default="docs/stability")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=["before", "after"], help="Which arms to run, in order.")
    p.add_argument("--arm", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                   help="An extra arm: its name, then settings over the current defaults.")
    args = p.parse_args()
    from common import print_header

    arms = {"before": BEFORE, "after": {}}
    for name, *kv in args.arm:
        arms[name] = dict(x.split("=", 1) for x in kv)
    print_header("bench_stability (each arm prints the precision its process decided)")
    runs = {n: run_arm(n, arms[n], args) for n in args.arms + [a[0] for a in args.arm if a[0] not in args.arms]}
    out = Path(args.out)
    text = table(runs, args.steps)
    (out / "stability.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps({n: [{k: r.get(k) for k in ("step",) + KEYS} for r in rs]
                                                  for n, rs in runs.items()}, indent=1) + "\n")
    plot(runs, out / "stability.png")
    print(text)


if __name__ == "__main__":
    main()
