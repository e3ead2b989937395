"""Group-baseline policy optimisation (GRPO family) over token-level rewards.

Several samples per prompt; each token's advantage is its return-to-go minus the group's mean
total reward, divided by the group's std (see :func:`rlsf.algorithms.core.group_advantages`).
No value head. The KL to the reference is the k3 estimator added to the loss.
"""

from __future__ import annotations

import torch

from rlsf.algorithms.base import Algorithm, response_forward
from rlsf.algorithms.core import clipped_policy_loss, group_advantages, kl_penalty, masked_mean
from rlsf.rollout import Rollout
from rlsf.utils import Timer, model_device


class GRPO(Algorithm):
    name = "grpo"

    def __init__(self, model, reference, cfg) -> None:
        super().__init__(model, reference, cfg, cfg.grpo)
        self.group_size = cfg.rollout.samples_per_prompt

    def prepare(self, rollout: Rollout, rewards: torch.Tensor, timer: Timer):
        mask = rollout.response_mask.float()
        with timer("logprobs"):
            old_logp, _ = self.rollout_logprobs(rollout)
            ref_logp = self.reference_logprobs(rollout) if self.acfg.kl_coef > 0 else old_logp
        adv = group_advantages(rewards, mask, self.group_size, scale=self.acfg.scale_rewards)
        stats = {"kl": float(((kl_penalty(old_logp, ref_logp, "k3") * mask).sum(1)).mean())}
        return {"old_logp": old_logp, "ref_logp": ref_logp, "adv": adv}, stats

    def loss(self, mb: Rollout, data: dict[str, torch.Tensor]):
        c = self.acfg
        device = model_device(self.model)
        mask = mb.response_mask.to(device).float()
        d = {k: v.to(device) for k, v in data.items()}
        fo = response_forward(self.model, mb, temperature=self.temperature, precision=self.precision)
        pg, pstats = clipped_policy_loss(fo.logp, d["old_logp"], d["adv"], mask, c.clip_range)
        kl = masked_mean(kl_penalty(fo.logp, d["ref_logp"], "k3"), mask)
        bonus, rstats = self.regularisers(fo, mask)
        loss = pg + c.kl_coef * kl - bonus
        return loss, {"policy": pg.detach(), "kl": kl.detach(), **pstats, **rstats}
