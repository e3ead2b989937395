"""The RL loop: prompts -> rollouts -> symbolic feedback -> token rewards -> algorithm update.

Read top to bottom, one step is (each line names the module that does it)::

    examples  = next batch of training prompts (deterministic in seed and step)    runtime/utils.batch_indices
                  (or the problems the algorithm asks for, e.g. every one for an Expert Iteration
                  round, sampled in batches of rollout.prompts_per_step and concatenated)
    exp       = rollout_and_check(policy, examples x samples_per_prompt)           rollout/collect
                  prompts rendered, sampled by the engine                          rollout/engines   timing/generate
                  each row, as it ends, checked: ids -> text, offsets, certificate feedback/service
                  certificates -> token rewards                                    feedback/rewards  timing/feedback
    exp       = + the outcome reward model's scores (reward.orm, if set)           feedback/rewards  timing/orm
    stats     = algorithm.step(exp): advantages, loss, update                      algorithms/       timing/logprobs,
                                                                                                     timing/update

The experience record (:class:`~rlsf.experience.Experience`) is the one thing handed from stage
to stage; the algorithm is whatever ``train.algorithm`` names in the registry.

Across processes (docs/scaling.md) each rank samples and checks its contiguous share of the step's
prompts, every sample of a prompt on the same rank (a group is never split), and draws from its
own random stream (seeded by seed, step and rank); the algorithm sums gradients over ranks and
gathers its batch statistics, the step's figures are computed from every rank's rows, and rank 0
alone writes the run folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlsf.algorithms import ALGORITHMS
from rlsf.config import Config
from rlsf.evaluation.metrics import answer_mode_share, certificate_summary
from rlsf.experience import Experience, concat
from rlsf.feedback.rewards import with_outcome_scores
from rlsf.feedback.service import CheckService
from rlsf.rollout.collect import score_with_orm
from rlsf.rollout.episodes import episode_metrics, rollout_episodes
from rlsf.rollout.engines import SamplingModel
from rlsf.runtime import distributed
from rlsf.runtime.checkpoint import Checkpointer, load_trainable_state, trainable_state
from rlsf.runtime.metric_log import MetricLogger, note, truncate_metrics
from rlsf.runtime.utils import Timer, batch_indices, rng_state, seed_everything, set_rng_state
from rlsf.settings import ConfigError
from rlsf.stages.context import check_world, load_policy, prepare_run_dir, run_info, save_policy, start


class RLTrainer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.runtime, self.task, self.examples = start(cfg, limit=cfg.task.train_examples)
        check_world(cfg, "train")
        self.model, self.tokenizer = load_policy(cfg, self.runtime)
        self.algo = ALGORITHMS[cfg.train.algorithm](self.model, self.tokenizer, self.task, cfg, self.runtime)
        distributed.broadcast_tensors(self.trained_parameters())  # every rank starts from rank 0's weights
        self.sampler = SamplingModel.for_settings(self.model, self.tokenizer, self.runtime, cfg.rollout,
                                                  seed=cfg.run.seed)
        self.orm = None
        if cfg.reward.orm:
            from rlsf.models.orm import OutcomeRewardModel

            self.orm = OutcomeRewardModel.load(cfg.reward.orm, self.runtime.torch_device, cfg.model.dtype)
        self.checker: CheckService | None = None  # started by the first rollout, closed at the end of train()
        self.timer = Timer()
        self.run_dir = Path(cfg.run.output_dir)
        self.ckpt = Checkpointer(self.run_dir, keep=cfg.train.keep_checkpoints)
        self.step = 0
        self.samples = 0
        self.tokens = 0  # sampled tokens so far (train.token_budget)

    def trained_parameters(self) -> list[torch.Tensor]:
        """What the optimiser updates (the policy's trainable weights, a value head)."""
        opt = getattr(self.algo, "optimizer", None)
        if opt is None:
            return [p for p in self.model.parameters() if p.requires_grad]
        return [p for g in opt.param_groups for p in g["params"]]

    # ---- one step ------------------------------------------------------------------------------
    def rollout_step(self) -> Experience:
        """This rank's rows of the step's batch (all of it in one process)."""
        c, t = self.cfg, self.timer
        if self.checker is None:
            workers = None
            if c.check.workers < 0 and distributed.world().local_size > 1:  # the cores are shared by the ranks
                workers = max(1, (os.cpu_count() or 1) // distributed.world().local_size)
            self.checker = CheckService.for_config(c, self.task, self.tokenizer, workers=workers)
        # A step is one rollout batch of the shuffled training problems, or every problem the algorithm
        # asks for (an Expert Iteration round: all of them), sampled in rollout batches of the same size.
        wanted = self.algo.step_examples(self.examples, self.step)
        if wanted is None:
            batches = [[self.examples[i] for i in batch_indices(len(self.examples), c.rollout.prompts_per_step,
                                                                self.step, c.run.seed)]]
            if distributed.size() > 1:
                batches = [distributed.shard(batches[0])]
        else:  # this rank's contiguous share (whole problems), in batches of its share of prompts_per_step
            W, r, n = distributed.size(), distributed.rank(), len(wanted)
            mine, per = wanted[r * n // W:(r + 1) * n // W], c.rollout.prompts_per_step // W
            if not mine:
                raise ConfigError(f"train.algorithm {c.train.algorithm}: {n} training problems cannot be shared "
                                  f"by {W} processes")
            batches = [mine[i:i + per] for i in range(0, len(mine), per)]
        if distributed.size() > 1:
            seed_everything(distributed.rank_seed(c.run.seed, self.step))
        self.algo.prepare_sampling()
        with t("generate"):
            self.sampler.sync()
        parts = [rollout_episodes(
            self.sampler.model, self.tokenizer, self.task, batch, self.checker, turns=c.rollout.turns,
            samples=c.rollout.samples_per_prompt,
            reward=c.reward, timer=t, max_new_tokens=c.rollout.max_new_tokens, temperature=c.rollout.temperature,
            top_p=c.rollout.top_p, batch_size=c.rollout.generation_batch_size, precision=self.runtime.sampling_precision,
            engine=c.rollout.engine, fused_step=c.rollout.fused_step, ignore_eos=c.rollout.ignore_eos,
            condition=self.algo.sampling_condition) for batch in batches]
        self.sampler.release()  # a sleeping vLLM leaves the GPU's memory to the update
        return concat(parts)

    def outcome_scores(self, exp: Experience) -> dict[str, float]:
        """Mix the ORM's scores into the token rewards (reward.orm / orm_weight / checker_weight)."""
        r = self.cfg.reward
        if self.orm is None and r.checker_weight == 1.0:
            return {}
        scores = None
        if self.orm is not None:
            with self.timer("orm"):
                scores = torch.tensor(score_with_orm(self.orm, self.task, exp.examples, exp.texts,
                                                     precision=self.runtime.precision))
        exp.rewards, stats = with_outcome_scores(exp.rewards, exp.response_mask, exp.valid, scores, r)
        if scores is not None and distributed.size() > 1:  # the mean over every rank's valid rows
            total, n = distributed.all_sum([float(scores[exp.valid].sum()), float(exp.valid.sum())]).tolist()
            stats = {"reward/orm": total / n} if n else {}
        return stats

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        exp = self.rollout_step()
        orm_stats = self.outcome_scores(exp)
        stats = {**orm_stats, **self.algo.step(exp, self.timer)}
        whole = gather_experience(exp)  # every rank's rows, for the step's figures
        self.samples += len(whole)
        self.tokens += int(whole.generated_mask.sum())
        metrics = {**experience_metrics(whole, self.cfg.rollout.turns), "samples": self.samples,
                   "sampled_tokens": self.tokens, **stats,
                   **self.timer.pop()}
        metrics["timing/step"] = time.perf_counter() - t0
        self.step += 1
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Rank 0 writes; the state is the same on every rank (rank 0's random state is kept: one
        process resumes from it, several reseed by step and rank)."""
        return self.ckpt.save(self.step, lambda: {"model": trainable_state(self.model),
                                                  "algorithm": self.algo.state_dict(), "rng": rng_state(),
                                                  "samples": self.samples, "tokens": self.tokens,
                                                  "world_size": distributed.size()})

    def resume(self) -> bool:
        """Load the last checkpoint (rank 0's pick, read by every rank), written with this or
        another number of processes: nothing in it depends on it."""
        path = distributed.broadcast_object(self.ckpt.latest())
        if path is None:
            note(f"resume: no checkpoint in {self.ckpt.dir}, starting from step 0")
            return False
        state = self.ckpt.load(path)
        load_trainable_state(self.model, state["model"])
        self.algo.load_state_dict(state["algorithm"])
        set_rng_state(state["rng"])
        self.step, self.samples, self.tokens = state["step"], state["samples"], state.get("tokens", 0)
        was, now = state.get("world_size", 1), distributed.size()
        note(f"resume: continuing from {path} (step {self.step})"
             + (f", written by {was} processes, continued by {now}" if was != now else ""))
        return True

    # ---- the loop ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        c = self.cfg
        prepare_run_dir(c, self.runtime, resume=c.run.resume)
        if c.run.resume:  # records past the checkpoint (all, with none) are about to be redone
            self.resume()
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        logger = MetricLogger(self.run_dir, c.run.loggers, {**c.to_dict(), "runtime": run_info(self.runtime)})
        last: dict[str, Any] = {}
        bar = tqdm(total=c.train.steps, initial=self.step, desc=f"rl/{c.train.algorithm}", unit="step",
                   disable=not (c.run.progress and distributed.is_main()), dynamic_ncols=True)
        try:
            while self.step < c.train.steps and not (c.train.token_budget and self.tokens >= c.train.token_budget):
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
            self.sampler.close()
            if self.checker is not None:
                self.checker.close()
                self.checker = None
        self.save_checkpoint()
        save_policy(self.model, self.tokenizer, self.run_dir / "model")  # rank 0 writes (FSDP: all gather)
        return last


def experience_metrics(exp: Experience, turns: int = 1) -> dict[str, float]:
    """What a batch of checked completions looks like: rewards, outcomes, lengths, check failures.

    Reward and outcome figures are over the rows whose check did not fail; ``check/failed`` is
    the share that failed (timed out, crashed), left out of the update. With self-repair episodes
    (``turns`` > 1) ``reward/success`` is the episodes' (correct by their last turn) and
    ``turn{t}/success``, ``repair_rate``, ``episode/turns`` and ``episode/tokens`` say how they got
    there (:func:`rlsf.rollout.episodes.episode_metrics`); ``response/length`` counts every token of
    the row, feedback included.
    """
    valid = exp.valid
    certs = [c for c, ok in zip(exp.certificates, valid.tolist()) if ok]
    mask = exp.loss_mask
    n = max(int(valid.sum()), 1)
    out = {
        "reward/total": float((exp.rewards * mask).sum() / n),
        "reward/score": float(np.mean([c.score for c in certs])) if certs else 0.0,
        "reward/success": float(np.mean([c.correct for c in certs])) if certs else 0.0,
        "reward/token_std": float(exp.rewards[mask.bool()].std()) if mask.sum() > 1 else 0.0,
        "response/length": float(exp.response_mask.float().sum(1).mean()),
        "response/truncated": float(np.mean(exp.truncated)),
        "check/failed": 1.0 - float(valid.float().mean()),
        "batch/answer_mode_share": answer_mode_share(certs),
        **certificate_summary(certs),
    }
    if turns > 1:
        out.update(episode_metrics(exp, turns))
    return out


def gather_experience(exp: Experience) -> Experience:
    """Every rank's rows in rank order (the order one process samples them in), with what the
    step's figures read: certificates, truncation, response masks and rewards (padded to the
    longest response). In one process: ``exp``."""
    if distributed.size() == 1:
        return exp
    parts = distributed.gather_objects((exp.certificates, exp.truncated, exp.response_mask.cpu(),
                                        exp.rewards.cpu() if exp.rewards is not None else None,
                                        exp.turn.cpu() if exp.turn is not None else None, exp.episodes))
    width = max(p[2].shape[1] for p in parts)
    pad = torch.nn.functional.pad

    def cat(k: int) -> torch.Tensor | None:
        return torch.cat([pad(p[k], (0, width - p[k].shape[1])) for p in parts]) if parts[0][k] is not None else None

    masks = cat(2)
    empty = torch.zeros(len(masks), 0, dtype=torch.long)
    return Experience(prompt_ids=empty, prompt_mask=empty, response_ids=masks.long(), response_mask=masks,
                      truncated=[t for p in parts for t in p[1]], certificates=[c for p in parts for c in p[0]],
                      rewards=cat(3), turn=cat(4), episodes=[e for p in parts for e in p[5]])


def train(cfg: Config) -> dict[str, Any]:
    """Run RL training as configured; returns the last step's metrics. The model is saved in
    ``<output_dir>/model``."""
    return RLTrainer(cfg).train()
