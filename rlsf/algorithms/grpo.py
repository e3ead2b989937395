"""Group-baseline policy optimisation (GRPO family) over token-level rewards.

Several samples per prompt (rows sharing a ``group`` id); each token's advantage is its
return-to-go minus the group's mean total reward, scaled per group (estimator ``grpo``, see
:func:`rlsf.algorithms.advantages.grpo_advantages`), or one of the other named group estimators. No
value head. The KL to the reference is the k3 estimator added to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlsf.algorithms.advantages import GROUP_ESTIMATORS, SCALED_ESTIMATORS
from rlsf.algorithms.base import ForwardOut, PolicyGradient, PolicyUpdateConfig
from rlsf.algorithms.core import clipped_policy_loss, kl_penalty, masked_mean
from rlsf.algorithms.registry import register
from rlsf.algorithms.turns import group_advantages
from rlsf.experience import Experience
from rlsf.runtime import distributed
from rlsf.runtime.utils import Timer
from rlsf.settings import opt, require


@dataclass
class GRPOConfig(PolicyUpdateConfig):
    kl_coef: float = opt(0.02, "Coefficient of the k3 KL estimator to the reference in the loss (0: no "
                         "reference is kept).")
    advantage: str = opt("grpo", "Advantage estimator: 'grpo' (return-to-go minus the group's mean total, "
                         "over the group's spread), 'dr_grpo' (no division), 'rloo' (leave-one-out mean), "
                         "'rloo_token' (minus the other samples' return-to-go at the same position) or "
                         "'grpo_token' (that over the group's spread).")
    std_floor: float = opt(0.1, "With advantage 'grpo' or 'grpo_token': divide by max(group spread, this), so a "
                           "group whose rewards differ by a hair is not blown up to unit spread. 0: plain GRPO.")

    def validate(self, cfg) -> None:
        super().validate(cfg)
        require(cfg.rollout.samples_per_prompt >= 2, "rollout.samples_per_prompt",
                "grpo compares samples of the same prompt: needs >= 2")
        require(self.advantage in GROUP_ESTIMATORS, "grpo.advantage",
                f"must be one of {sorted(GROUP_ESTIMATORS)}, got {self.advantage!r}")
        require(self.std_floor >= 0, "grpo.std_floor", "must be >= 0")


@register("grpo")
class GRPO(PolicyGradient):
    Config = GRPOConfig

    def prepare(self, exp: Experience, timer: Timer):
        floor = {"std_floor": self.acfg.std_floor} if self.acfg.advantage in SCALED_ESTIMATORS else {}
        adv = group_advantages(GROUP_ESTIMATORS[self.acfg.advantage], exp, self.cfg.rollout.turn_discount, **floor)
        data = {"adv": adv}
        with timer("logprobs"):
            if not self.single_update(len(exp)):
                data["old_logp"], _ = self.rollout_logprobs(exp)
            if self.reference is not None:
                data["ref_logp"] = self.reference_logprobs(exp)
        # Over every rank's groups (a group is never split across ranks; one process: the identity).
        groups = float(len(exp.group.unique()))
        zero, n = distributed.all_sum([_zero_group_share(adv, exp) * groups, groups]).tolist()
        abs_max = float(distributed.all_sum([float(adv.abs().max())], op="max")[0])
        return data, {"advantage/abs_max": abs_max, "advantage/zero_groups": zero / max(n, 1.0)}

    def loss(self, mb: Experience, data: dict[str, torch.Tensor], fo: ForwardOut, mask: torch.Tensor):
        c = self.acfg
        old_logp = data.get("old_logp", fo.logp.detach())  # absent: single update, ratio exactly 1
        adv, istats = self.importance_corrected(mb, data["adv"], old_logp, mask)
        pg, pstats = clipped_policy_loss(fo.logp, old_logp, adv, mask, c.clip_range)
        loss, extra = pg, {}
        if "ref_logp" in data:
            kl = masked_mean(kl_penalty(fo.logp, data["ref_logp"], "k3"), mask)
            loss, extra = loss + c.kl_coef * kl, {"kl_k3": kl.detach()}
        bonus, rstats = self.regularisers(fo, mask, mb.truncated)
        return loss - bonus, {"policy": pg.detach(), **extra, **pstats, **rstats, **istats}


def _zero_group_share(adv: torch.Tensor, exp: Experience) -> float:
    """Share of groups whose advantages are all zero (every sample scored the same: no signal)."""
    groups = exp.group.unique()
    zero = sum(bool((adv[exp.group == g] == 0).all()) for g in groups)
    return zero / max(len(groups), 1)
