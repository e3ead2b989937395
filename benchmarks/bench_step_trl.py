"""Step time: rlsf GRPO vs TRL ``GRPOTrainer`` at identical settings, side by side in one run.

Settings shared by both sides: the converted SmolLM2-135M-Instruct (``--model``), Game of 24
training prompts (chat format), 1 prompt x 8 completions per step, at most ``--tokens`` new
tokens, temperature 1.0, one optimiser update per step, no KL term (TRL's default ``beta=0``),
learning rate 1e-6, CPU (``model.device: cpu`` on the rlsf side, ``use_cpu=True`` on TRL's).
The reward is the Game of 24 checker: TRL gets the certificate's score as its scalar reward
(checked in its own process, in its reward function); rlsf gets the same certificate as
token-level rewards, checked by its check service as the trainer runs it (``check.workers``
default: one worker process per core, each completion checked as soon as it ends).

``--fixed-length`` makes every completion exactly ``--tokens`` long on both sides (TRL:
``min_new_tokens``; rlsf: ``rollout.ignore_eos``), so both sides do the same work per step
whatever their samples say; without it, lengths are sampled and differ between the sides.

TRL is run in fp32 (``use_cpu=True``; gradient checkpointing off, its fastest setting here) and,
with ``--trl-bf16``, with ``bf16=True``. rlsf runs its default fast path (the rlsf sampling loop
on the fused decoding step, shared prompts in the update, no separate log-prob pass) in the
precision the runtime decides (``--precision``, default ``auto``: bf16 autocast with fp32 master
weights and bf16 sampling weights where the CPU probe finds bf16 faster, float32 elsewhere).
The first ``--warmup`` steps of each side are reported separately (rlsf's first step also starts
its check workers); the ratio uses the median of the steady-state steps.

``--lora`` runs every side with the same LoRA adapters (``rlsf.models.loading.LoraSpec``: r 16 on all
projections, lr 1e-4) instead of full fine-tuning.

    pip install -e ".[bench]"        # TRL 1.16.0: a benchmark-only dependency
    python benchmarks/bench_step_trl.py --steps 5 --tokens 64 --fixed-length --trl-bf16
    python benchmarks/bench_step_trl.py --steps 5 --tokens 64 --fixed-length --lora
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_machine_flags, start  # noqa: E402


def trl_step_times(path: str, task, examples, args, bf16: bool, lora: bool = False) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": task.prompt(ex), "ex_id": i} for i, ex in enumerate(examples)]
    by_id = dict(enumerate(examples))

    def checker_score(completions, ex_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [task.check(by_id[i], t).score for t, i in zip(texts, ex_id)]

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, per_device_train_batch_size=8, num_generations=8, max_completion_length=args.tokens,
            use_cpu=True, bf16=bf16, max_steps=args.steps, logging_steps=1, report_to="none", save_strategy="no",
            learning_rate=1e-4 if lora else 1e-6, beta=0.0, temperature=1.0, gradient_checkpointing=False, seed=0,
            generation_kwargs={"min_new_tokens": args.tokens} if getattr(args, "fixed_length", False) else None,
        )
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        peft_config = None
        if lora:
            from peft import LoraConfig

            from rlsf.models.loading import LoraSpec

            spec = LoraSpec()  # the same adapters rlsf trains with model.lora
            peft_config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                                     target_modules=list(spec.target_modules), task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=checker_score, args=cfg, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(path, padding_side="left"),
                              callbacks=[StepTimer()], peft_config=peft_config)
        trainer.train()
    return times


def rlsf_config(path: str, data_path: str | None, tokens: int, steps: int, out: str, fixed_length: bool = False,
                precision: str = "auto", **overrides):
    """rlsf's side: GRPO at the shared settings of the module docstring, in ``precision``
    (``model.autocast``: auto, bf16 or none) on the CPU; ``overrides`` are further ``SECTION.FIELD`` settings."""
    from rlsf.config import Config

    return Config.load(None, {
        "model.name": path, "model.device": "cpu", "model.autocast": precision,
        "task.options": {"data_path": data_path} if data_path else {},
        "rollout.prompts_per_step": 1, "rollout.samples_per_prompt": 8, "rollout.max_new_tokens": tokens,
        "rollout.generation_batch_size": 8, "rollout.ignore_eos": fixed_length, "train.algorithm": "grpo",
        "train.steps": steps, "train.save_every": 0, "grpo.epochs": 1, "grpo.minibatch_size": 8,
        "grpo.kl_coef": 0.0, "grpo.lr": 1e-6, "run.output_dir": out, "run.progress": False,
        "run.loggers": ["jsonl"], **overrides,
    })


def rlsf_step_times(path: str, data_path: str | None, args, precision: str,
                    **overrides) -> tuple[list[float], list[dict]]:
    from rlsf.stages.train import RLTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = rlsf_config(path, data_path, args.tokens, args.steps, out, args.fixed_length, precision, **overrides)
        trainer = RLTrainer(cfg)
        times, stages = [], []
        try:
            while trainer.step < args.steps:
                t0 = time.perf_counter()
                metrics = trainer.train_step()
                times.append(time.perf_counter() - t0)
                stages.append({k: v for k, v in metrics.items() if k.startswith("timing/") or k == "response/length"})
        finally:  # train_step() starts the check workers; train() would close them, we call it step by step
            if trainer.checker is not None:
                trainer.checker.close()
    return times, stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="Steps per side.")
    ap.add_argument("--warmup", type=int, default=1, help="Steps excluded from the steady-state median.")
    ap.add_argument("--tokens", type=int, default=64, help="Maximum new tokens per completion.")
    ap.add_argument("--trl-bf16", action="store_true", help="Also run TRL with bf16=True.")
    ap.add_argument("--fixed-length", action="store_true", help="Every completion exactly --tokens long on both sides.")
    ap.add_argument("--plain", action="store_true", help="Also run rlsf's plain path (HF generate, full-sequence "
                    "passes, fp32) to show what the fast path buys.")
    ap.add_argument("--lora", action="store_true", help="LoRA adapters on every side instead of full fine-tuning.")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    ap.add_argument("--model", default="smollm2-135m", help="Model on every side.")
    add_machine_flags(ap)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    try:
        import trl
    except ImportError:
        sys.exit('TRL is not installed: pip install -e ".[bench]"')

    precision, _ = start("bench_step_trl: RL step time, rlsf GRPO vs TRL GRPOTrainer", args, extra=[
        f"TRL {trl.__version__}: fp32{' and bf16' if args.trl_bf16 else ''} (use_cpu=True)"
        + ("; rlsf plain path: float32" if args.plain else "")])

    from rlsf.models.loading import resolve_model
    from rlsf.tasks import get_task

    path = resolve_model(args.model)
    task = get_task("game24", **({"data_path": args.data_path} if args.data_path else {}))
    examples = task.load("train")

    ours_name = "rlsf GRPO (fast path)"
    lora = {"model.lora": True, "grpo.lr": 1e-4} if args.lora else {}
    times, stages = rlsf_step_times(path, args.data_path, args, precision, **lora)
    results = {ours_name: times}
    if args.plain:
        # The plain path: HF generate and a full prompt + response pass per sample, in float32.
        results["rlsf GRPO (plain path)"], _ = rlsf_step_times(path, args.data_path, args, "none", **{
            "rollout.engine": "hf", "grpo.share_prompts": False, **lora})
    results["TRL GRPOTrainer fp32"] = trl_step_times(path, task, examples, args, bf16=False, lora=args.lora)
    if args.trl_bf16:
        results["TRL GRPOTrainer bf16"] = trl_step_times(path, task, examples, args, bf16=True, lora=args.lora)

    print(f"\n1 prompt x 8 completions, <= {args.tokens} new tokens"
          f"{' (all exactly that long)' if args.fixed_length else ''}{', LoRA' if args.lora else ''}, "
          f"{args.steps} steps, {args.threads} threads, rlsf precision {precision}")
    steady = {}
    for name, ts in results.items():
        steady[name] = statistics.median(ts[args.warmup:])
        print(f"{name:<28} first {ts[0]:7.2f} s   steady median {steady[name]:7.2f} s   "
              f"(steps: {', '.join(f'{t:.1f}' for t in ts)})")
    keys = ("timing/generate", "timing/feedback", "timing/logprobs", "timing/update", "response/length")
    print("rlsf stages (steady median): " + ", ".join(
        f"{k.split('/')[-1]} {statistics.median(s.get(k, 0.0) for s in stages[args.warmup:]):.2f}" for k in keys))
    ours = steady[ours_name]
    for name, t in steady.items():
        if name != ours_name:
            print(f"speed-up of the fast path vs {name}: {t / ours:.2f}x")


if __name__ == "__main__":
    main()
