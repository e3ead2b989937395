"""Peak resident memory of RL fine-tuning runs: rlsf vs TRL ``GRPOTrainer``, full and LoRA.

Each configuration runs in its own fresh Python process (so one cannot inherit another's peak)
for ``--steps`` training steps at the settings of ``bench_step_trl.py``: the converted
SmolLM2-135M-Instruct (``--model``), Game of 24 prompts, 1 prompt x 8 completions, at most
``--tokens`` new tokens, one update per step, no KL term; rlsf in the runtime's precision
(``--precision``), TRL in fp32. The figure is the process's peak resident set size
(``ru_maxrss``): everything it held at its worst moment, Python and libraries included.

Since engine v2 rlsf checks completions in worker processes (``check.workers``, one per core by
default; they import neither torch nor transformers), which ``ru_maxrss`` of the training
process does not include. Their peaks (``VmHWM`` of every live descendant process, read just
before the run ends) are reported beside it, and the comparison is made both ways: the training
process alone (what the figures before engine v2 measured) and with its helper processes added
(an upper bound: the peaks need not coincide). TRL checks in its own process; any helper process
it has is counted the same way.

    python benchmarks/bench_memory.py                  # rlsf full and LoRA
    pip install -e ".[bench]"                          # TRL (benchmark-only dependency)
    python benchmarks/bench_memory.py --trl            # ... and TRL full and LoRA beside them
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_machine_flags, start  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def descendant_peaks_mib(root: int | None = None) -> dict[int, float]:
    """Peak RSS (``VmHWM``, MiB) of every live descendant of process ``root`` (default: this one),
    by pid. Linux only (``/proc``); empty elsewhere."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ')'
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    peaks = {}
    for pid in sorted(found):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) / 1024  # kB
        except OSError:
            continue
    return peaks


def run_rlsf(args, lora: bool) -> dict[int, float]:
    from bench_step_trl import rlsf_config  # sibling module
    from rlsf.models.loading import resolve_model
    from rlsf.stages.train import RLTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = rlsf_config(resolve_model(args.model), args.data_path, args.tokens, args.steps, out,
                          precision=args.precision, **({"model.lora": True, "grpo.lr": 1e-4} if lora else {}))
        trainer = RLTrainer(cfg)
        try:
            while trainer.step < args.steps:
                trainer.train_step()
            return descendant_peaks_mib()  # the check workers, still running
        finally:
            if trainer.checker is not None:
                trainer.checker.close()


def run_trl(args, lora: bool) -> dict[int, float]:
    from bench_step_trl import trl_step_times
    from rlsf.models.loading import resolve_model
    from rlsf.tasks import get_task

    task = get_task("game24", **({"data_path": args.data_path} if args.data_path else {}))
    trl_step_times(resolve_model(args.model), task, task.load("train"), args, bf16=False, lora=lora)
    return descendant_peaks_mib()


RUNS = {"rlsf full": (run_rlsf, False), "rlsf LoRA": (run_rlsf, True),
        "TRL full (fp32)": (run_trl, False), "TRL LoRA (fp32)": (run_trl, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="Training steps per run.")
    ap.add_argument("--tokens", type=int, default=64, help="Maximum new tokens per completion.")
    ap.add_argument("--trl", action="store_true", help="Also measure TRL GRPOTrainer (needs trl installed).")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    ap.add_argument("--model", default="smollm2-135m", help="Model of every run.")
    add_machine_flags(ap)
    ap.add_argument("--worker", choices=sorted(RUNS), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:  # child process: run one configuration, report its own peak and its helpers'
        import torch

        torch.set_num_threads(args.threads)
        fn, lora = RUNS[args.worker]
        helpers = fn(args, lora)
        print("PEAK_RSS_MIB " + json.dumps({"main": peak_rss_mib(), "helpers": list(helpers.values())}))
        return

    if args.trl:
        try:
            import trl
        except ImportError:
            sys.exit('--trl: TRL is not installed: pip install -e ".[bench]"')
    precision, _ = start("bench_memory: peak RSS of RL fine-tuning, rlsf vs TRL GRPOTrainer", args,
                         extra=[f"TRL {trl.__version__}: fp32 (use_cpu=True)"] if args.trl else None)
    names = [n for n in RUNS if args.trl or n.startswith("rlsf")]
    peaks: dict[str, dict] = {}
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--tokens", str(args.tokens),
               "--threads", str(args.threads), "--model", args.model, "--precision", precision] + \
              (["--data-path", args.data_path] if args.data_path else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_MIB ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        peaks[name] = json.loads(line.split(" ", 1)[1])
        helpers = peaks[name]["helpers"]
        print(f"{name:<18} peak RSS {peaks[name]['main']:8.0f} MiB   + {sum(helpers):6.0f} MiB in {len(helpers)} "
              f"helper process{'es' * (len(helpers) != 1)} ({', '.join(f'{h:.0f}' for h in helpers) or '-'})",
              flush=True)

    print(f"\n{Path(args.model).name}, 1 prompt x 8 completions, <= {args.tokens} new tokens, {args.steps} steps, "
          f"rlsf precision {precision}")
    for kind in ("full", "LoRA"):
        for label, total in (("training process", False), ("with helper processes", True)):
            ours = _mib(peaks[f"rlsf {kind}"], total)
            theirs = _mib(peaks[f"TRL {kind} (fp32)"], total) if f"TRL {kind} (fp32)" in peaks else None
            ratio = f"   TRL / rlsf = {theirs / ours:.2f}x" if theirs else ""
            print(f"{kind:<5} {label:<22} rlsf {ours:7.0f} MiB" + (f"   TRL {theirs:7.0f} MiB" if theirs else "")
                  + ratio)


def _mib(peak: dict, with_helpers: bool) -> float:
    return peak["main"] + (sum(peak["helpers"]) if with_helpers else 0.0)


if __name__ == "__main__":
    main()
