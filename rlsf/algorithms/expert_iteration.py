"""Expert Iteration (Havrilla et al. 2024, Sec. 3; Anthony et al. 2017): sample, keep what the
checker verifies, fine-tune on everything kept so far.

One training step is one round ``i``. With ``rounds: full`` (the default, the paper's procedure) the
trainer samples ``rollout.samples_per_prompt`` (K) completions of *every* training problem (the
task's training split, or its first ``task.train_examples``), in rollout batches of
``rollout.prompts_per_step`` problems with the policy of the round before, and checks them; then::

    R_i = the completions certified correct (not cut by max_new_tokens, unless rollout.ignore_eos
          makes every completion that long), each distinct (prompt, completion) once over the whole
          run (``dedupe``)
    D_i = R_i + D_(i-1)
    policy = the model training started from (``restart: true``, as in the paper), or the
             current policy (``restart: false``), fine-tuned on D_i for ``epochs`` passes of
             ``batch_size`` (at most ``max_steps`` steps) with SFT's completion-only loss
             (:func:`rlsf.algorithms.supervised.sft_update`)

``rounds: batch`` is rlsf's small-budget variant, not the paper's: a round samples one rollout
batch (``rollout.prompts_per_step`` problems, the next of the trainer's shuffled order) instead of
every training problem, so a round costs ``prompts_per_step x K`` samples and D_i grows by one
batch per step, each step refitting the start model on all of it.

Rewards and token-level spans play no part: the certificate's ``correct`` is the filter. The
rollout engine and the SFT update are the trainer's and SFT's own. Logged per round:
``ei/samples`` (completions sampled), ``ei/kept`` (share certified), ``ei/added`` (new after
deduplication), ``ei/dataset`` (|D_i|), ``ei/steps`` (fine-tuning steps), ``ei/epochs`` (passes
over D_i they make: below ``epochs`` where ``max_steps`` cut them) and ``loss/sft``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from rlsf.algorithms.base import Algorithm
from rlsf.algorithms.registry import register
from rlsf.algorithms.supervised import collate, sft_update
from rlsf.experience import Experience
from rlsf.runtime import distributed
from rlsf.runtime.checkpoint import load_trainable_state, trainable_state
from rlsf.runtime.utils import Timer, make_adamw, model_device
from rlsf.settings import opt, require, require_adamw


ROUNDS = ("full", "batch")


@dataclass
class ExpertIterationConfig:
    rounds: str = opt("full", "What one round (one training step) samples: full (Havrilla et al.: "
                      "rollout.samples_per_prompt completions of every training problem, the task's training split "
                      "or its first task.train_examples, in rollout batches of rollout.prompts_per_step problems; a "
                      "round costs problems x samples_per_prompt completions) or batch (rlsf's small-budget variant, "
                      "not the paper's: one rollout batch of rollout.prompts_per_step problems per round, the next of "
                      "the trainer's shuffled order).")
    restart: bool = opt(True, "Each round fine-tunes the model training started from on D_i (the paper); "
                        "false: continue from the current policy.")
    dedupe: bool = opt(True, "Keep each distinct (prompt, completion) once.")
    epochs: float = opt(1.0, "Passes over D_i per round (rounded up to whole steps).")
    max_steps: int = opt(200, "At most this many fine-tuning steps per round.")
    batch_size: int = opt(8, "Demonstrations per fine-tuning step.")
    lr: float = opt(1e-5, "AdamW learning rate of the fine-tuning (constant within a round).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")

    def validate(self, cfg) -> None:
        name = cfg.train.algorithm
        require(self.rounds in ROUNDS, f"{name}.rounds", f"must be one of {', '.join(ROUNDS)}, got {self.rounds!r}")
        require(self.epochs > 0, f"{name}.epochs", "must be > 0")
        require(self.max_steps >= 1, f"{name}.max_steps", "must be >= 1")
        require(self.batch_size >= 1, f"{name}.batch_size", "must be >= 1")
        require(self.lr > 0, f"{name}.lr", "must be > 0")
        require_adamw(self, name)


def verified_pairs(exp: Experience, keep_truncated: bool = False) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of the rows certified correct and not truncated (unless
    ``keep_truncated``: sampling with ``rollout.ignore_eos`` cuts every row by design), padding removed.
    A self-repair episode is kept when its last turn is correct, as (its context: prompt, earlier
    attempts and feedback; that last turn): the model learns to repair from the checker's feedback,
    and never learns the wrong attempts themselves."""
    return [exp.turn_pair(i) for i, cert in enumerate(exp.certificates)
            if cert.correct and not cert.failed and (keep_truncated or not exp.truncated[i])]


@register("expert_iteration")
class ExpertIteration(Algorithm):
    """Module docstring: filter by the checker, grow the data set, fine-tune."""

    Config = ExpertIterationConfig

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        super().__init__(model, tokenizer, task, cfg, runtime)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.base = {k: v.detach().clone() for k, v in trainable_state(model).items()} if self.refits_start else None
        self.data: list[tuple[list[int], list[int]]] = []
        self.seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        self.rounds = 0
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.optimizer = self._optimizer()

    @property
    def refits_start(self) -> bool:
        """Whether each fine-tuning starts again from the model training started from."""
        return self.acfg.restart

    @classmethod
    def procedure(cls, cfg) -> str:
        a = cfg.section(cls.name)
        out = cls.name
        if a.rounds == "batch":
            out += ", batch rounds (one rollout batch per round, not every training problem: not the paper's)"
        if not a.restart:
            out += ", continuing from the current policy (not restarting from the start model: not the paper's)"
        return out

    @classmethod
    def samples_per_step(cls, cfg, train_size: Callable[[], int]) -> int:
        if cfg.section(cls.name).rounds == "full":
            return train_size() * cfg.rollout.samples_per_prompt
        return super().samples_per_step(cfg, train_size)

    def step_examples(self, examples: list, step: int) -> list | None:
        return list(examples) if self.acfg.rounds == "full" else None

    def _optimizer(self) -> torch.optim.Optimizer:
        return make_adamw([{"params": self.params, "lr": self.acfg.lr}], weight_decay=self.acfg.weight_decay)

    def select(self, exp: Experience) -> list[tuple[list[int], list[int]]]:
        """R_i: the (prompt ids, completion ids) this round adds to the data set."""
        return verified_pairs(exp, keep_truncated=self.cfg.rollout.ignore_eos)

    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        stats = self.collect(exp)
        return {**stats, **self.fit(timer)}

    def collect(self, exp: Experience) -> dict[str, float]:
        """R_i from this round's rows, deduplicated, joins the data set: D_i = R_i + D_(i-1)."""
        # Across processes every rank keeps the same data set: the kept pairs of all ranks, in rank
        # order (the order of the rows one process would have sampled).
        kept = [pair for part in distributed.gather_objects(self.select(exp)) for pair in part]
        rows = int(distributed.all_sum([float(len(exp))])[0])
        added = 0
        for prompt, completion in kept:
            key = (tuple(prompt), tuple(completion))
            if self.acfg.dedupe and key in self.seen:
                continue
            self.seen.add(key)
            self.data.append((prompt, completion))
            added += 1
        self.rounds += 1
        return {"ei/samples": float(rows), "ei/kept": len(kept) / max(rows, 1), "ei/added": float(added),
                "ei/dataset": float(len(self.data))}

    def fit(self, timer: Timer) -> dict[str, float]:
        """Fine-tune on D_i: from the start model (``restart``) with a fresh optimiser, or on from the
        current policy, ``epochs`` passes (at most ``max_steps`` steps of ``batch_size``)."""
        a = self.acfg
        if not self.data:
            return {"ei/steps": 0.0}
        if self.refits_start:  # D_i on the starting model, with a fresh optimiser
            load_trainable_state(self.model, self.base)
            self.optimizer = self._optimizer()
        steps = min(a.max_steps, math.ceil(a.epochs * len(self.data) / a.batch_size))
        rng = np.random.default_rng([self.cfg.run.seed, self.rounds])
        order = np.concatenate([rng.permutation(len(self.data)) for _ in range(math.ceil(steps * a.batch_size /
                                                                                         len(self.data)))])
        device = model_device(self.model)
        losses = []
        self.model.train()
        with timer("update"):
            for s in range(steps):
                picked = distributed.shard(order[s * a.batch_size:(s + 1) * a.batch_size])  # this rank's share
                batch = {k: v.to(device) for k, v in collate([self.data[i] for i in picked], self.pad).items()}
                loss, _ = sft_update(self.model, self.optimizer, self.params, batch, self.runtime.precision,
                                     self.acfg.max_grad_norm)
                losses.append(float(loss))
        return {"ei/steps": float(steps), "ei/epochs": steps * a.batch_size / len(self.data),
                "loss/sft": float(np.mean(losses))}

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data, "rounds": self.rounds, "optimizer": self.optimizer.state_dict(),
                "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = [tuple(x) for x in state["data"]]
        self.seen = {(tuple(p), tuple(c)) for p, c in self.data}
        self.rounds = state["rounds"]
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("base") is not None:
            self.base = state["base"]
