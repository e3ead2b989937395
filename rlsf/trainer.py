"""The RL loop: prompts -> rollouts -> symbolic feedback -> token rewards -> algorithm update.

Read top to bottom, one step is::

    examples  = next batch of training prompts (deterministic in seed and step)
    rollout   = generate(policy, prompts x samples_per_prompt)           timing/generate
    certs     = [task.check(example, text) for each completion]          timing/feedback
    rewards   = token_reward_tensor(certs, rollout.offsets, mode)        [batch, tokens]
    stats     = algorithm.step(rollout, rewards)                         timing/logprobs, timing/update
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlsf.algorithms import ALGORITHMS
from rlsf.checkpoint import Checkpointer, load_trainable_state, trainable_state
from rlsf.config import Config
from rlsf.feedback.certificate import Certificate
from rlsf.feedback.token_rewards import completion_text, token_reward_tensor
from rlsf.logging import MetricLogger, read_metrics
from rlsf.metrics import certificate_summary
from rlsf.models import Reference, save_model
from rlsf.rollout import Rollout, SamplingModel, generate, task_prompts
from rlsf.runtime import load_policy, load_split, load_task, note, prepare_run_dir, set_threads
from rlsf.utils import Timer, rng_state, seed_everything, set_rng_state


def epoch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, size: int, step: int, seed: int) -> list[int]:
    """Example indices of ``step``: consecutive slices of per-epoch permutations.

    A pure function of (seed, step), so a resumed run sees the same prompts without saving any
    sampler state.
    """
    out = []
    for pos in range(step * size, (step + 1) * size):
        epoch, i = divmod(pos, n)
        out.append(int(epoch_order(n, epoch, seed)[i]))
    return out


class RLTrainer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg.validate()
        set_threads(cfg)
        seed_everything(cfg.run.seed)
        self.task = load_task(cfg)
        self.examples = load_split(cfg, self.task, "train", cfg.task.train_examples)
        self.model, self.tokenizer = load_policy(cfg)
        # The reference is the policy as loaded (the SFT model): a frozen copy, or, with LoRA,
        # the same weights with adapters disabled. Without a KL term nothing reads it, so no
        # copy is made (a full fine-tune saves a model's worth of memory).
        needs_reference = getattr(cfg, cfg.train.algorithm).kl_coef > 0
        self.reference = Reference.from_policy(self.model) if needs_reference else None
        self.algo = ALGORITHMS[cfg.train.algorithm](self.model, self.reference, cfg)
        self.sampler = SamplingModel(self.model, cfg.model.autocast,
                                     fused=cfg.rollout.engine == "rlsf" and cfg.rollout.fused_step)
        self.timer = Timer()
        self.run_dir = Path(cfg.run.output_dir)
        self.ckpt = Checkpointer(self.run_dir, keep=cfg.train.keep_checkpoints)
        self.step = 0
        self.samples = 0
        self.pool = ThreadPoolExecutor(cfg.reward.workers, "rlsf-check") if cfg.reward.workers else None

    # ---- one step ------------------------------------------------------------------------------
    def rollout_step(self) -> tuple[Rollout, list[Certificate], torch.Tensor]:
        c, t = self.cfg, self.timer
        batch = [self.examples[i] for i in batch_indices(len(self.examples), c.rollout.prompts_per_step,
                                                         self.step, c.run.seed)]
        k = c.rollout.samples_per_prompt
        # Samples of one prompt are adjacent rows: the group layout GRPO relies on.
        prompts = [p for p in task_prompts(self.tokenizer, self.task, batch) for _ in range(k)]
        # With a worker pool each completion is checked as soon as its last token is sampled, so
        # slow checkers (compilers, solvers) run while the other rows are still being generated.
        futures: dict[int, Future] = {}

        def submit(row: int, ids: list[int]) -> None:
            futures[row] = self.pool.submit(self._check, batch[row // k], ids)

        with t("generate"):
            self.sampler.sync()
            ro = generate(self.sampler.model, self.tokenizer, prompts, max_new_tokens=c.rollout.max_new_tokens,
                          temperature=c.rollout.temperature, top_p=c.rollout.top_p,
                          batch_size=c.rollout.generation_batch_size, precision=c.model.autocast,
                          engine=c.rollout.engine, fused_step=c.rollout.fused_step, ignore_eos=c.rollout.ignore_eos,
                          on_finish=submit if self.pool is not None else None)
        with t("feedback"):
            if self.pool is not None:
                certs = [futures[i].result() for i in range(len(ro))]
            else:
                certs = [self.task.check(batch[i // k], text) for i, text in enumerate(ro.texts)]
            rewards = token_reward_tensor(certs, ro.offsets, ro.response_mask, mode=c.reward.mode,
                                          spread_spans=c.reward.spread_spans, span_weight=c.reward.span_weight)
        return ro, certs, rewards

    def _check(self, example, ids: list[int]) -> Certificate:
        return self.task.check(example, completion_text(self.tokenizer, ids))  # = the rollout's text

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        ro, certs, rewards = self.rollout_step()
        stats = self.algo.step(ro, rewards, self.timer)
        self.samples += len(ro)
        mask = ro.response_mask.float()
        metrics: dict[str, Any] = {
            "reward/total": float((rewards * mask).sum(1).mean()),
            "reward/score": float(np.mean([cert.score for cert in certs])),
            "reward/success": float(np.mean([cert.correct for cert in certs])),
            "reward/token_std": float(rewards[mask.bool()].std()) if mask.sum() > 1 else 0.0,
            "response/length": float(mask.sum(1).mean()),
            "response/truncated": float(np.mean(ro.truncated)),
            "samples": self.samples,
            **certificate_summary(certs),
            **stats,
            **self.timer.pop(),
        }
        metrics["timing/step"] = time.perf_counter() - t0
        self.step += 1
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        return self.ckpt.save(self.step, {"model": trainable_state(self.model), "algorithm": self.algo.state_dict(),
                                          "rng": rng_state(), "samples": self.samples})

    def resume(self) -> bool:
        path = self.ckpt.latest()
        if path is None:
            note(f"resume: no checkpoint in {self.ckpt.dir}, starting from step 0")
            return False
        state = self.ckpt.load(path)
        load_trainable_state(self.model, state["model"])
        self.algo.load_state_dict(state["algorithm"])
        set_rng_state(state["rng"])
        self.step, self.samples = state["step"], state["samples"]
        note(f"resume: continuing from {path} (step {self.step})")
        return True

    # ---- the loop ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        c = self.cfg
        prepare_run_dir(c, resume=c.run.resume)
        if c.run.resume and self.resume():
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        logger = MetricLogger(self.run_dir, c.run.loggers, c.to_dict())
        last: dict[str, Any] = {}
        bar = tqdm(total=c.train.steps, initial=self.step, desc=f"rl/{c.train.algorithm}", unit="step",
                   disable=not c.run.progress, dynamic_ncols=True)
        try:
            while self.step < c.train.steps:
                last = self.train_step()
                logger.log(self.step, last)
                bar.update(1)
                bar.set_postfix(reward=f"{last['reward/total']:+.3f}", success=f"{last['reward/success']:.2f}",
                                kl=f"{last.get('kl', 0.0):.3f}")
                if c.train.save_every and self.step % c.train.save_every == 0 and self.step < c.train.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            logger.close()
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None
        self.save_checkpoint()
        save_model(self.model, self.tokenizer, self.run_dir / "model")
        return last


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records of steps after the checkpoint: they are about to be redone."""
    if path.is_file():
        import json

        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def train(cfg: Config) -> dict[str, Any]:
    """Run RL training as configured; returns the last step's metrics. The model is saved in
    ``<output_dir>/model``."""
    return RLTrainer(cfg).train()
