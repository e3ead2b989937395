"""Return-conditioned RL (RCRL; Havrilla et al. 2024, after decision transformers): learn what a
good solution looks like from good and bad ones alike, by telling the model which is which.

One training step is one round, as in Expert Iteration (whose data set and fine-tuning it
reuses). The trainer samples completions of prompts that carry the top outcome label (online
RCRL: the policy is asked for good solutions; ``sample_conditioned: false`` samples plain
prompts); then every completion is labelled with the outcome it actually got and kept::

    label(c) = good / bad                       (thresholds empty: the checker certifies c or not)
             = return<j>, j = bins of thresholds its return (sum of token rewards) passes
    R_i      = every completion, its prompt re-rendered as "[label(c)] prompt"
    D_i      = R_i + D_(i-1), fine-tuned on with SFT's loss (by default continuing, not restarting)

Evaluated conditioned on the top label (``eval.condition``: ``good``, or the highest bin), the
model is asked for the outcome it learned to tell apart. Truncated completions are kept and
labelled like any other (a cut-off solution is a bad outcome worth learning).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlsf.algorithms.expert_iteration import ExpertIteration, ExpertIterationConfig
from rlsf.algorithms.registry import register
from rlsf.experience import Experience
from rlsf.rollout.collect import task_prompts
from rlsf.settings import opt, require


@dataclass
class RCRLConfig(ExpertIterationConfig):
    restart: bool = opt(False, "Restart each round from the model training started from (as in Expert "
                        "Iteration); false (default): continue from the current policy.")
    thresholds: list = opt([], "Return bins: with thresholds t_1 < ... < t_n a completion whose return (sum of "
                           "its token rewards) passes j of them is labelled return<j>. Empty (default): two "
                           "labels, good (certified correct) and bad.")
    sample_conditioned: bool = opt(True, "Sample training completions from prompts carrying the top label "
                                   "(online RCRL); false: from plain prompts.")

    def validate(self, cfg) -> None:
        super().validate(cfg)
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
        if self.acfg.sample_conditioned:
            self.sampling_condition = self.evaluation_condition(cfg)
        self._prompt_ids: dict[tuple[str, str], list[int]] = {}

    @classmethod
    def evaluation_condition(cls, cfg) -> str:
        return outcome_labels(cfg.rcrl.thresholds)[-1]

    def labelled_prompt(self, example: dict, label: str) -> list[int]:
        key = (str(example.get("id")), label)
        if key not in self._prompt_ids:
            text = task_prompts(self.tokenizer, self.task, [example], condition=label)[0]
            self._prompt_ids[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompt_ids[key]

    def select(self, exp: Experience) -> list[tuple[list[int], list[int]]]:
        thresholds = self.acfg.thresholds
        returns = (exp.rewards * exp.loss_mask).sum(1).tolist() if exp.rewards is not None else [0.0] * len(exp)
        out = []
        for i, cert in enumerate(exp.certificates):
            if cert.failed:  # the checker could not say: no label to learn
                continue
            label = outcome_label(cert.correct, returns[i], thresholds)
            completion = exp.response_ids[i][exp.response_mask[i].bool()].tolist()
            out.append((self.labelled_prompt(exp.examples[i], label), completion))
        return out
