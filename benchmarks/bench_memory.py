"""Peak resident memory of RL fine-tuning runs: rlsf vs TRL ``GRPOTrainer``, full and LoRA.

Each configuration runs in its own fresh Python process (so one cannot inherit another's peak)
for ``--steps`` training steps at the settings of ``bench_step_trl.py``: the converted
SmolLM2-135M-Instruct, Game of 24 prompts, 1 prompt x 8 completions, at most ``--tokens`` new
tokens, one update per step, no KL term. The figure is the process's peak resident set size
(``ru_maxrss``): everything it held at its worst moment, Python and libraries included.

    python benchmarks/bench_memory.py                  # rlsf full and LoRA
    pip install -e ".[bench]"                          # TRL (benchmark-only dependency)
    python benchmarks/bench_memory.py --trl            # ... and TRL full and LoRA beside them
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_rlsf(args, lora: bool) -> None:
    from rlsf.models import resolve_model
    from bench_step_trl import rlsf_config  # noqa: E402 (sibling module)
    from rlsf.trainer import RLTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = rlsf_config(resolve_model("smollm2-135m"), args.data_path, args.tokens, args.steps, out,
                          **({"model.lora": True, "optim.lr": 1e-4} if lora else {}))
        trainer = RLTrainer(cfg)
        while trainer.step < args.steps:
            trainer.train_step()


def run_trl(args, lora: bool) -> None:
    from bench_step_trl import trl_step_times
    from rlsf.models import resolve_model
    from rlsf.tasks import get_task

    task = get_task("game24", **({"data_path": args.data_path} if args.data_path else {}))
    trl_step_times(resolve_model("smollm2-135m"), task, task.load("train"), args, bf16=False, lora=lora)


RUNS = {"rlsf full": (run_rlsf, False), "rlsf LoRA": (run_rlsf, True),
        "TRL full (fp32)": (run_trl, False), "TRL LoRA (fp32)": (run_trl, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="Training steps per run.")
    ap.add_argument("--tokens", type=int, default=64, help="Maximum new tokens per completion.")
    ap.add_argument("--trl", action="store_true", help="Also measure TRL GRPOTrainer (needs trl installed).")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=sorted(RUNS), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:  # child process: run one configuration, report its own peak
        import torch

        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(HERE))
        fn, lora = RUNS[args.worker]
        fn(args, lora)
        print("PEAK_RSS_MIB " + json.dumps(peak_rss_mib()))
        return

    names = [n for n in RUNS if args.trl or n.startswith("rlsf")]
    peaks = {}
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--tokens", str(args.tokens),
               "--threads", str(args.threads)] + (["--data-path", args.data_path] if args.data_path else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_MIB ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        peaks[name] = float(line.split()[1])
        print(f"{name:<18} peak RSS {peaks[name]:8.0f} MiB", flush=True)

    print(f"\nSmolLM2-135M, 1 prompt x 8 completions, <= {args.tokens} new tokens, {args.steps} steps")
    for kind in ("full", "LoRA"):
        ours = peaks[f"rlsf {kind}"]
        theirs = peaks.get(f"TRL {kind} (fp32)")
        ratio = f"   TRL / rlsf = {theirs / ours:.2f}x" if theirs else ""
        print(f"{kind:<5} rlsf {ours:7.0f} MiB" + (f"   TRL {theirs:7.0f} MiB" if theirs else "") + ratio)


if __name__ == "__main__":
    main()
