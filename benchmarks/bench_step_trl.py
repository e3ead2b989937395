"""Step time: rlsf GRPO vs TRL ``GRPOTrainer`` at identical settings, side by side in one run.

Settings shared by both sides: the converted SmolLM2-135M-Instruct, Game of 24 training prompts
(chat format), 1 prompt x 8 completions per step, at most ``--tokens`` new tokens (stopping at
end of turn), temperature 1.0, one optimiser update per step, no KL term (TRL's default
``beta=0``), learning rate 1e-6, CPU. The reward is the Game of 24 checker: TRL gets the
certificate's score as its scalar reward; rlsf gets the same certificate as token-level rewards.

TRL is run in fp32 (``use_cpu=True``; gradient checkpointing off, its fastest setting here) and,
with ``--trl-bf16``, with ``bf16=True``. rlsf runs its default fast path (bf16 autocast with fp32
master weights, bf16 sampling copy). The first ``--warmup`` steps of each side are reported
separately; the ratio uses the median of the steady-state steps.

    pip install trl==1.16.0        # benchmark-only dependency
    python benchmarks/bench_step_trl.py --steps 4 --tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def trl_step_times(path: str, task, examples, args, bf16: bool) -> list[float]:
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
            learning_rate=1e-6, beta=0.0, temperature=1.0, gradient_checkpointing=False, seed=0,
        )
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        trainer = GRPOTrainer(model=model, reward_funcs=checker_score, args=cfg, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(path, padding_side="left"),
                              callbacks=[StepTimer()])
        trainer.train()
    return times


def rlsf_step_times(path: str, data_path: str | None, args) -> list[float]:
    from rlsf.config import Config
    from rlsf.trainer import RLTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = Config.load(None, {
            "model.name": path, "task.options": {"data_path": data_path} if data_path else {},
            "rollout.prompts_per_step": 1, "rollout.samples_per_prompt": 8, "rollout.max_new_tokens": args.tokens,
            "rollout.generation_batch_size": 8, "train.algorithm": "grpo", "train.steps": args.steps,
            "train.save_every": 0, "grpo.epochs": 1, "grpo.minibatch_size": 8, "grpo.kl_coef": 0.0,
            "optim.lr": 1e-6, "run.output_dir": out, "run.progress": False, "run.loggers": ["jsonl"],
        })
        trainer = RLTrainer(cfg)
        times = []
        while trainer.step < args.steps:
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="Steps per side.")
    ap.add_argument("--warmup", type=int, default=1, help="Steps excluded from the steady-state median.")
    ap.add_argument("--tokens", type=int, default=64, help="Maximum new tokens per completion.")
    ap.add_argument("--trl-bf16", action="store_true", help="Also run TRL with bf16=True.")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    torch.set_num_threads(args.threads)

    from rlsf.models import resolve_model
    from rlsf.tasks import get_task

    path = resolve_model("smollm2-135m")
    task = get_task("game24", **({"data_path": args.data_path} if args.data_path else {}))
    examples = task.load("train")

    results = {"rlsf GRPO (bf16 autocast)": rlsf_step_times(path, args.data_path, args),
               "TRL GRPOTrainer fp32": trl_step_times(path, task, examples, args, bf16=False)}
    if args.trl_bf16:
        results["TRL GRPOTrainer bf16"] = trl_step_times(path, task, examples, args, bf16=True)

    print(f"\n1 prompt x 8 completions, <= {args.tokens} new tokens, {args.steps} steps, {args.threads} threads")
    steady = {}
    for name, ts in results.items():
        steady[name] = statistics.median(ts[args.warmup:])
        print(f"{name:<28} first {ts[0]:7.2f} s   steady median {steady[name]:7.2f} s   "
              f"(steps: {', '.join(f'{t:.1f}' for t in ts)})")
    ours = steady["rlsf GRPO (bf16 autocast)"]
    for name, t in steady.items():
        if name.startswith("TRL"):
            print(f"speed-up vs {name}: {t / ours:.2f}x")


if __name__ == "__main__":
    main()
