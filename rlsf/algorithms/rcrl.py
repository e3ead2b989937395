"""Return-conditioned RL (RCRL; Havrilla et al. 2024, Sec. 3, after decision transformers and RL via
supervised learning): learn what a good solution looks like from good and bad ones alike, by telling
the model which is which.

What the paper does. RCRL is the offline method of the three it compares (Expert Iteration is
online and off-policy, PPO online and on-policy): solutions sampled from the SFT model are labelled
with the outcome they got, a "good" / "bad" marker (finer labels with the dense or ORM rewards), and
a model is fine-tuned with the supervised loss on the labelled solutions; at test time it is asked
for the good outcome by conditioning on the good marker. There are no rounds: the data are sampled
once, from the SFT model, not from the policy being trained.

What rlsf does (``variant: offline``, the default). Every training completion is sampled from the
model training started from (the SFT model), with the task's plain prompts; each is labelled::

    label(c) = good / bad                       (thresholds empty: the checker certifies c or not)
             = return<j>, j = bins of thresholds its return (sum of token rewards) passes
    D        = every completion sampled so far, its prompt re-rendered as "[label(c)] prompt"

and once, at the end of the run (step ``train.steps``), the start model is fine-tuned on D with
SFT's loss (``epochs`` passes, at most ``max_steps`` steps of ``batch_size``): every completion is
seen as often as any other. The steps before only sample and label (the policy stays the start
model, so every sample is the SFT model's). A run continued past its end (``--resume`` with more
steps, as ``rlsf experiment`` does between evaluations) puts the start weights back before sampling
again and refits on the larger D at its new end. Which problems a step samples is Expert
Iteration's ``rounds``: ``full``, K completions of every training problem; ``batch``, one rollout
batch. Where rlsf departs from the paper: one label per completion, in the first message (the
paper's dense and ORM variants label solution steps); the labels' text is ``[good]`` / ``[bad]`` /
``[return<j>]``.

``variant: online`` is rlsf's earlier procedure, not the paper's: each step samples the current
policy from prompts carrying the top label (``sample_conditioned: false``: plain prompts), adds
every labelled completion to D_i = R_i + D_(i-1) and fine-tunes on all of D_i every step,
continuing from the current policy (``restart: true``: from the start model), so the first
round's completions are fitted once per step.

Evaluated conditioned on the top label (``eval.condition``: ``good``, or the highest bin), the
model is asked for the outcome it learned to tell apart. Truncated completions are kept and
labelled like any other (a cut-off solution is a bad outcome worth learning); a completion whose
check failed has no label and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlsf.algorithms.expert_iteration import ExpertIteration, ExpertIterationConfig
from rlsf.algorithms.registry import register
from rlsf.experience import Experience
from rlsf.rollout.collect import task_prompts
from rlsf.runtime.checkpoint import load_trainable_state
from rlsf.runtime.utils import Timer
from rlsf.settings import opt, require

VARIANTS = ("offline", "online")


@dataclass
class RCRLConfig(ExpertIterationConfig):
    rounds: str = opt("full", "Which problems a training step samples: full (rollout.samples_per_prompt completions "
                      "of every training problem, the task's training split or its first task.train_examples, in "
                      "rollout batches of rollout.prompts_per_step; offline, one step is the paper's data set: K "
                      "samples of each training problem from the SFT model) or batch (one rollout batch of "
                      "rollout.prompts_per_step problems per step, the trainer's shuffled order).")
    variant: str = opt("offline", "offline (Havrilla et al.): every training completion is sampled from the model "
                       "training started from (the SFT model) with plain prompts, labelled with its outcome, and that "
                       "model is fine-tuned once, at the end of the run, on all of them. online (rlsf's earlier "
                       "variant, not the paper's): each step samples the current policy and fine-tunes on the growing "
                       "set of labelled completions, see rcrl.restart and rcrl.sample_conditioned.")
    restart: bool | None = opt(None, "online variant: each step fine-tunes the model training started from (true) or "
                               "continues from the current policy (false, its default). offline always fits the start "
                               "model once (false is refused).")
    thresholds: list = opt([], "Return bins: with thresholds t_1 < ... < t_n a completion whose return (sum of "
                           "its token rewards) passes j of them is labelled return<j>. Empty (default): two "
                           "labels, good (certified correct) and bad.")
    sample_conditioned: bool | None = opt(None, "online variant: sample training completions from prompts carrying "
                                          "the top label (true, its default) or from plain prompts (false). offline "
                                          "samples the start model from plain prompts (true is refused).")

    def validate(self, cfg) -> None:
        super().validate(cfg)
        require(self.variant in VARIANTS, "rcrl.variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "offline":
            require(self.restart in (None, True), "rcrl.restart",
                    "offline RCRL fits the start model on the SFT model's samples: restart false is the online variant")
            require(self.sample_conditioned in (None, False), "rcrl.sample_conditioned",
                    "offline RCRL samples the start model from plain prompts: sample_conditioned true is the "
                    "online variant")
        t = self.thresholds
        require(all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t), "rcrl.thresholds",
                f"must be numbers, got {t!r}")
        require(all(a < b for a, b in zip(t, t[1:])), "rcrl.thresholds", f"must increase, got {t!r}")


def outcome_labels(thresholds: list[float]) -> list[str]:
    """The labels, worst first."""
    return ["bad", "good"] if not thresholds else [f"return{j}" for j in range(len(thresholds) + 1)]


def outcome_label(correct: bool, ret: float, thresholds: list[float]) -> str:
    if not thresholds:
        return "good" if correct else "bad"
    return f"return{sum(ret >= t for t in thresholds)}"


@register("rcrl")
class ReturnConditioned(ExpertIteration):
    """Module docstring: label every sample with its outcome, fine-tune on all of them."""

    Config = RCRLConfig

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        super().__init__(model, tokenizer, task, cfg, runtime)
        if self.online and self.acfg.sample_conditioned is not False:
            self.sampling_condition = self.evaluation_condition(cfg)
        self._prompt_ids: dict[tuple[str, str], list[int]] = {}
        self.fitted = False  # offline: the policy holds the fit on D, not the start model that samples

    @property
    def online(self) -> bool:
        return self.acfg.variant == "online"

    @property
    def refits_start(self) -> bool:
        return not self.online or bool(self.acfg.restart)

    @classmethod
    def procedure(cls, cfg) -> str:
        a = cfg.section(cls.name)
        rounds = "every training problem per step" if a.rounds == "full" else "one rollout batch per step"
        if a.variant == "offline":
            return f"rcrl, offline on the start model's samples ({rounds}), one fit at the end"
        return (f"rcrl, online variant ({rounds}; refit every step {'from the start' if a.restart else 'continuing'}"
                "): not the paper's")

    @classmethod
    def evaluation_condition(cls, cfg) -> str:
        return outcome_labels(cfg.rcrl.thresholds)[-1]

    def prepare_sampling(self) -> None:
        """Offline: the samples are the start model's; after a fit (a run continued past its end) the
        start weights go back in before sampling again."""
        if not self.online and self.fitted:
            load_trainable_state(self.model, self.base)
            self.fitted = False

    def labelled_prompt(self, example: dict, label: str) -> list[int]:
        key = (str(example.get("id")), label)
        if key not in self._prompt_ids:
            text = task_prompts(self.tokenizer, self.task, [example], condition=label)[0]
            self._prompt_ids[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompt_ids[key]

    def select(self, exp: Experience) -> list[tuple[list[int], list[int]]]:
        thresholds = self.acfg.thresholds
        rewards = exp.rewards * exp.loss_mask if exp.rewards is not None else torch.zeros(exp.response_mask.shape)
        out = []
        for i in range(len(exp)):
            # One labelled pair per turn of a self-repair episode (one turn: the completion), each
            # labelled with its own outcome; a later turn's context keeps the earlier turns.
            records = exp.episodes[i] if exp.episodes else [None]
            for t, (start, end) in enumerate(exp.turn_columns(i)):
                cert = records[t].certificate if records[t] is not None else exp.certificates[i]
                if cert.failed:  # the checker could not say: no label to learn
                    continue
                label = outcome_label(cert.correct, float(rewards[i, start:end].sum()), thresholds)
                context, completion = exp.turn_pair(i, t)
                prompt_len = int(exp.prompt_mask[i].sum())
                out.append((self.labelled_prompt(exp.examples[i], label) + context[prompt_len:], completion))
        return out

    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        if self.online:
            return super().step(exp, timer)
        stats = self.collect(exp)
        if self.rounds < self.cfg.train.steps:  # offline: only sample and label until the run's last step
            return {**stats, "ei/steps": 0.0}
        fit = self.fit(timer)
        self.fitted = fit.get("ei/steps", 0.0) > 0
        return {**stats, **fit}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fitted = state.get("fitted", False)
