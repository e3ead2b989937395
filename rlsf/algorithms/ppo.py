"""PPO with token-level rewards, as in RLSF.

Per token: ``r_t = reward_t - kl_coef * (log pi(a_t) - log pi_ref(a_t))``; a value head on the
policy's last hidden state; GAE (estimator ``gae``); clipped policy and value losses; several
epochs over minibatches. With ``reward.mode = sequence`` the reward is only on the last token and
this is the standard RLHF-style PPO the papers compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlsf.algorithms.advantages import gae, masked_mean_across_ranks, returns_to_go, whiten_across_ranks
from rlsf.algorithms.base import ForwardOut, PolicyGradient, PolicyUpdateConfig
from rlsf.algorithms.core import clipped_policy_loss, clipped_value_loss, kl_penalty, masked_whiten
from rlsf.algorithms.registry import register
from rlsf.algorithms.turns import EpisodeView
from rlsf.experience import Experience
from rlsf.models.parts import ValueHead, hidden_size
from rlsf.runtime import distributed
from rlsf.runtime.utils import Timer, model_device
from rlsf.settings import opt, require


@dataclass
class PPOConfig(PolicyUpdateConfig):
    epochs: int = opt(2, "Optimisation epochs over each batch of rollouts.")
    kl_coef: float = opt(0.05, "Per-token KL penalty to the reference, subtracted from rewards "
                         "(0.05 was load-bearing in Havrilla et al.).")
    value_lr: float = opt(1e-4, "Learning rate of the value head.")
    value_clip_range: float = opt(0.2, "Value-function clip around the rollout values.")
    vf_coef: float = opt(0.1, "Value loss coefficient.")
    value_init: str = opt("returns", "'returns': before the first update, shift the value head's bias so that "
                          "its mean equals the first batch's mean return-to-go (the critic starts unbiased "
                          "instead of at 0, which, with rewards on the scale of -2 and value steps of about "
                          "0.15 per batch, left every early advantage dominated by the critic's lag). "
                          "'zero': the head as initialised.")
    value_warmup_steps: int = opt(0, "Training steps at the start in which only the value head learns (the "
                                  "policy is not updated), so that GAE starts from a baseline that knows "
                                  "the task's returns instead of a head initialised at 0.")
    gamma: float = opt(1.0, "Discount factor.")
    lam: float = opt(0.95, "GAE lambda.")
    whiten_advantages: bool = opt(True, "Normalise advantages over the batch (zero mean, unit variance).")
    whiten_std_floor: float = opt(0.1, "Whitening divides by max(std, this): on a batch whose rewards barely "
                                  "vary the advantages are mostly the critic's noise, which whitening would "
                                  "blow up to unit variance (KL spikes). 0: plain whitening.")

    def validate(self, cfg) -> None:
        super().validate(cfg)
        require(0 <= self.gamma <= 1, "ppo.gamma", "must be in [0, 1]")
        require(0 <= self.lam <= 1, "ppo.lam", "must be in [0, 1]")
        require(self.value_lr > 0, "ppo.value_lr", "must be > 0")
        require(self.value_warmup_steps >= 0, "ppo.value_warmup_steps", "must be >= 0")
        require(self.value_init in ("returns", "zero"), "ppo.value_init", f"must be returns or zero, got "
                                                                          f"{self.value_init!r}")
        require(self.whiten_std_floor >= 0, "ppo.whiten_std_floor", "must be >= 0")


@register("ppo")
class PPO(PolicyGradient):
    Config = PPOConfig
    needs_hidden = True

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        self.value_head = ValueHead(hidden_size(model)).to(model_device(model))
        super().__init__(model, tokenizer, task, cfg, runtime)
        self.steps = 0  # batches seen (value warm-up)
        self.calibrated = False  # the value head's bias set from the first batch (value_init: returns)

    def param_groups(self) -> list[dict[str, Any]]:
        return super().param_groups() + [{"params": list(self.value_head.parameters()), "lr": self.acfg.value_lr}]

    @property
    def warming_up(self) -> bool:
        return self.steps < self.acfg.value_warmup_steps

    def prepare(self, exp: Experience, timer: Timer):
        c = self.acfg
        mask = exp.loss_mask
        with timer("logprobs"):
            old_logp, values = self.rollout_logprobs(exp, values=True)
            ref_logp = self.reference_logprobs(exp) if self.reference is not None else None
        kl = kl_penalty(old_logp, ref_logp, "k1") * mask if ref_logp is not None else torch.zeros_like(mask)
        shaped = (exp.rewards - c.kl_coef * kl) * mask
        # Self-repair episodes: GAE over each row's sampled tokens, discounted by turn_discount between turns.
        view = EpisodeView(mask, exp.turn, c.gamma, self.cfg.rollout.turn_discount) if exp.turn is not None else None
        gamma = view.factors if view is not None else c.gamma
        if view is not None:
            shaped, values, mask = view.gather(shaped), view.gather(values), view.mask.float()
        if self.steps == 0 and c.value_init == "returns" and not self.calibrated:
            values = values + self.calibrate_value_head(shaped, values, mask, gamma) * mask
        adv, returns = gae(shaped, values, mask, gamma, c.lam)
        if view is not None:
            adv, returns, values, mask = view.expand(adv), view.expand(returns), view.expand(values), exp.loss_mask
        if c.whiten_advantages:  # over the global batch: every rank's tokens
            floor = c.whiten_std_floor
            adv = (masked_whiten(adv, mask, std_floor=floor) if distributed.size() == 1
                   else whiten_across_ranks(adv, mask, std_floor=floor))
        data = {"old_logp": old_logp, "values": values, "adv": adv, "returns": returns}
        if ref_logp is not None:
            data["ref_logp"] = ref_logp
        # Over every rank's rows (in one process the collectives are the identity).
        stats = {"value/mean": masked_mean_across_ranks(values, mask),
                 "value/returns": masked_mean_across_ranks(returns, mask),
                 "value/warmup": float(self.warming_up), **length_bias(adv, mask, exp.truncated)}
        return data, stats

    @torch.no_grad()
    def calibrate_value_head(self, shaped: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                             gamma: float | torch.Tensor) -> float:
        """Shift the head's bias by the batch's mean (return-to-go minus value); returns the shift."""
        shift = value_shift(shaped, values, mask, gamma)
        self.value_head.linear.bias.add_(shift)
        self.calibrated = True
        return shift

    def loss(self, mb: Experience, data: dict[str, torch.Tensor], fo: ForwardOut, mask: torch.Tensor):
        c = self.acfg
        # During the value warm-up the policy must not move: no gradient reaches the trunk either.
        hidden = fo.hidden.float().detach() if self.warming_up else fo.hidden.float()
        values = self.value_head(hidden)
        adv, istats = self.importance_corrected(mb, data["adv"], data["old_logp"], mask)
        pg, pstats = clipped_policy_loss(fo.logp, data["old_logp"], adv, mask, c.clip_range)
        vf, vstats = clipped_value_loss(values, data["values"], data["returns"], mask, c.value_clip_range)
        bonus, rstats = self.regularisers(fo, mask, mb.truncated)
        # Policy terms are left out during the warm-up: the policy's parameters get no gradient and
        # AdamW leaves them unchanged.
        loss = c.vf_coef * vf if self.warming_up else pg + c.vf_coef * vf - bonus
        return loss, {"policy": pg.detach(), "value": vf.detach(), **pstats, **vstats, **rstats, **istats}

    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        stats = super().step(exp, timer)
        self.steps += 1
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "value_head": self.value_head.state_dict(), "steps": self.steps,
                "calibrated": self.calibrated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
        self.steps = state.get("steps", 0)
        self.calibrated = state.get("calibrated", self.steps > 0)
        super().load_state_dict(state)


def value_shift(shaped: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float | torch.Tensor) -> float:
    """The mean over every rank's response tokens of (discounted return-to-go - value): the constant
    that makes a critic's mean prediction match the batch's mean return."""
    return masked_mean_across_ranks(returns_to_go(shaped, mask, gamma) - values, mask)


def length_bias(adv: torch.Tensor, mask: torch.Tensor, truncated: list[bool]) -> dict[str, float]:
    """Mean advantage of the tokens of completions cut by the length limit minus that of completions
    that ended, over every rank's rows: positive means the update pushes towards running on (a
    diagnostic of how rewards, the critic and whitening interact; see docs/concepts/stability.md)."""
    cut = torch.tensor(truncated, dtype=torch.bool)[:, None].to(mask.dtype)
    a_cut, n_cut, a_end, n_end, r_cut, r_all = distributed.all_sum([
        float((adv * mask * cut).sum()), float((mask * cut).sum()), float((adv * mask * (1 - cut)).sum()),
        float((mask * (1 - cut)).sum()), float(cut.sum()), float(len(truncated))]).tolist()
    if r_cut in (0.0, r_all):
        return {}
    return {"advantage/truncated_minus_ended": a_cut / max(n_cut, 1.0) - a_end / max(n_end, 1.0)}
