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
        data = {"adv": group_advantages(rewards, mask, self.group_size, scale=self.acfg.scale_rewards)}
        with timer("logprobs"):
            if not self.single_update(len(rollout)):
                data["old_logp"], _ = self.rollout_logprobs(rollout)
            if self.acfg.kl_coef > 0:
                data["ref_logp"] = self.reference_logprobs(rollout)
        stats = {}
        if "old_logp" in data and "ref_logp" in data:
            stats["kl"] = float(((kl_penalty(data["old_logp"], data["ref_logp"], "k3") * mask).sum(1)).mean())
        return data, stats

    def loss(self, mb: Rollout, data: dict[str, torch.Tensor]):
        c = self.acfg
        device = model_device(self.model)
        mask = mb.response_mask.to(device).float()
        d = {k: v.to(device) for k, v in data.items()}
        fo = response_forward(self.model, mb, temperature=self.temperature, precision=self.precision,
                              share_prompts=self.share_prompts)
        old_logp = d.get("old_logp", fo.logp.detach())  # absent: single update, ratio exactly 1
        pg, pstats = clipped_policy_loss(fo.logp, old_logp, d["adv"], mask, c.clip_range)
        loss, extra = pg, {}
        if "ref_logp" in d:
            kl = masked_mean(kl_penalty(fo.logp, d["ref_logp"], "k3"), mask)
            loss, extra = loss + c.kl_coef * kl, {"kl": kl.detach()}
        bonus, rstats = self.regularisers(fo, mask)
        return loss - bonus, {"policy": pg.detach(), **extra, **pstats, **rstats}
