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

**The memory options, per algorithm** (``--options``): PPO, GRPO, Expert Iteration and RCRL, full
fine-tuning and LoRA, at the main job's settings (``configs/game24.yaml``: 8 prompts x 4 samples,
<= 96 new tokens, minibatch 8, one epoch, KL 0.05 for PPO; checks in the training process), each
configuration in its own fresh process, side by side:

* ``off``: ``model.logit_chunk 0`` (the whole ``[B, T, vocab]`` logits), ``model.reference_precision
  same`` (a float32 reference copy), no gradient checkpointing: the options before issue 21's part 4;
* ``on``: the defaults, ``model.logit_chunk 128`` and ``model.reference_precision auto``;
* ``on + ckpt``: and ``model.gradient_checkpointing true``.

Expert Iteration and RCRL read neither new option (no reference; their supervised update applies the
head to labelled positions only), so their ``on`` is their ``off`` and is not run twice.

    python benchmarks/bench_memory.py --options --steps 1
    python benchmarks/bench_memory.py --options --algorithms ppo --variants off on on+ckpt
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
from typing import Any

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

ALGORITHMS = {"ppo": "PPO", "grpo": "GRPO", "expert_iteration": "EI", "rcrl": "RCRL"}
#: The memory options of each variant (``--options``).
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"model.logit_chunk": 0, "model.reference_precision": "same", "model.gradient_checkpointing": False},
    "on": {"model.logit_chunk": 128, "model.reference_precision": "auto", "model.gradient_checkpointing": False},
    "on+ckpt": {"model.logit_chunk": 128, "model.reference_precision": "auto", "model.gradient_checkpointing": True},
}
#: Algorithms that read neither model.logit_chunk nor model.reference_precision: their ``on`` is ``off``.
SUPERVISED = ("expert_iteration", "rcrl")


def options_config(args, algorithm: str, lora: bool, variant: str, out: str):
    """The main job's settings (``configs/game24.yaml``'s RL part) for ``algorithm``, with the
    memory options of ``variant`` and LoRA or not; checks run in the training process."""
    from rlsf.config import Config
    from rlsf.models.loading import resolve_model

    return Config.load(None, {
        "model.name": resolve_model(args.model), "model.device": "cpu", "model.autocast": args.precision,
        "model.lora": lora, "task.options": {"data_path": args.data_path} if args.data_path else {},
        "rollout.prompts_per_step": 8, "rollout.samples_per_prompt": 4, "rollout.max_new_tokens": args.tokens,
        "rollout.generation_batch_size": 64, "check.workers": 0, "train.algorithm": algorithm,
        "train.steps": args.steps, "train.save_every": 0, "ppo.epochs": 1, "ppo.minibatch_size": 8,
        "ppo.kl_coef": 0.05, "grpo.minibatch_size": 8, "run.output_dir": out, "run.progress": False,
        # EI and RCRL: a step of one rollout batch, like the others' (a round over every puzzle is 900 x 4)
        "expert_iteration.rounds": "batch", "rcrl.rounds": "batch",
        "run.loggers": ["jsonl"], **VARIANTS[variant],
    })


def run_options(args, name: str) -> dict[int, float]:
    """One configuration of ``--options``, ``name`` = ``ALGORITHM:full|lora:VARIANT``."""
    from rlsf.stages.train import RLTrainer

    algorithm, tuning, variant = name.split(":")
    with tempfile.TemporaryDirectory() as out:
        trainer = RLTrainer(options_config(args, algorithm, tuning == "lora", variant, out))
        try:
            while trainer.step < args.steps:
                metrics = trainer.train_step()
                print(f"{name} step {trainer.step}: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in metrics.items() if k in ("response/length", "kl", "ei/dataset",
                                                                         "ei/steps", "timing/update")), flush=True)
            return descendant_peaks_mib()
        finally:
            if trainer.checker is not None:
                trainer.checker.close()


def cpu_features() -> str:
    """Whether this CPU has the bf16 instructions the precision probe cares about (``/proc/cpuinfo``)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "CPU flags unknown"
    have = set(flags.split(":", 1)[1].split())
    return ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in ("avx512_bf16", "amx_bf16"))


def _child(args, worker: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", worker, "--steps", str(args.steps), "--tokens", str(args.tokens),
           "--threads", str(args.threads), "--model", args.model, "--precision", args.precision] + \
          (["--data-path", args.data_path] if args.data_path else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_MIB ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{worker} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    for x in proc.stdout.splitlines():
        if x.startswith(worker):
            print(f"   {x}", flush=True)
    return json.loads(line.split(" ", 1)[1])


def options_table(args, precision: str) -> None:
    """``--options``: every algorithm x {full, LoRA} x variant, one fresh process each, as a table."""
    args.precision = precision
    peaks: dict[tuple[str, str, str], dict] = {}
    for algorithm in args.algorithms:
        for tuning in ("full", "lora"):
            for variant in args.variants:
                if variant == "on" and algorithm in SUPERVISED and "off" in args.variants:
                    continue
                name = f"{algorithm}:{tuning}:{variant}"
                peaks[(algorithm, tuning, variant)] = peak = _child(args, name)
                print(f"{name:<28} peak RSS {peak['main']:8.0f} MiB", flush=True)
    print(f"\n{Path(args.model).name}, 8 prompts x 4 samples, <= {args.tokens} new tokens, {args.steps} step(s), "
          f"precision {precision}; peak RSS of the training process in MiB (checks in-process)\n")
    print("| algorithm | weights | " + " | ".join(f"options {v}" for v in args.variants) + " |")
    print("|---|---|" + "---|" * len(args.variants))
    for algorithm in args.algorithms:
        for tuning in ("full", "lora"):
            cells = []
            for variant in args.variants:
                key = (algorithm, tuning, "off" if variant == "on" and algorithm in SUPERVISED else variant)
                cells.append(f"{peaks[key]['main']:.0f}" if key in peaks else "-")
            print(f"| {ALGORITHMS[algorithm]} | {'LoRA' if tuning == 'lora' else 'full'} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="Training steps per run.")
    ap.add_argument("--tokens", type=int, default=None, help="Maximum new tokens per completion (default 64; "
                    "96 with --options).")
    ap.add_argument("--trl", action="store_true", help="Also measure TRL GRPOTrainer (needs trl installed).")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    ap.add_argument("--model", default="smollm2-135m", help="Model of every run.")
    ap.add_argument("--options", action="store_true",
                    help="Measure the memory options per algorithm at the main job's settings (module docstring); "
                         "--tokens defaults to 96 there.")
    ap.add_argument("--algorithms", nargs="+", choices=sorted(ALGORITHMS), default=list(ALGORITHMS),
                    help="With --options: the algorithms.")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="With --options: the option sets (off, on, on+ckpt).")
    add_machine_flags(ap)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tokens is None:
        args.tokens = 96 if args.options or (args.worker and ":" in args.worker) else 64

    if args.worker:  # child process: run one configuration, report its own peak and its helpers'
        import torch

        torch.set_num_threads(args.threads)
        if ":" in args.worker:
            helpers = run_options(args, args.worker)
        else:
            fn, lora = RUNS[args.worker]
            helpers = fn(args, lora)
        print("PEAK_RSS_MIB " + json.dumps({"main": peak_rss_mib(), "helpers": list(helpers.values())}))
        return

    if args.options:
        precision, _ = start("bench_memory --options: peak RSS per algorithm, memory options off and on", args,
                             extra=[cpu_features()])
        options_table(args, precision)
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
    args.precision = precision
    for name in names:
        peaks[name] = _child(args, name)
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
