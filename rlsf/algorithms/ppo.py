"""PPO with token-level rewards, as in RLSF.

Per token: ``r_t = reward_t - kl_coef * (log pi(a_t) - log pi_ref(a_t))``; a value head on the
policy's last hidden state; GAE; clipped policy and value losses; several epochs over
minibatches. With ``reward.mode = sequence`` the reward is only on the last token and this is
the standard RLHF-style PPO the papers compare against.
"""

from __future__ import annotations

from typing import Any

import torch

from rlsf.algorithms.base import Algorithm, response_forward
from rlsf.algorithms.core import (
    clipped_policy_loss, clipped_value_loss, gae, kl_penalty, masked_mean, masked_sum, masked_whiten,
)
from rlsf.models import ValueHead, hidden_size
from rlsf.rollout import Rollout
from rlsf.utils import Timer, model_device


class PPO(Algorithm):
    name = "ppo"

    def __init__(self, model, reference, cfg) -> None:
        self.value_head = ValueHead(hidden_size(model)).to(model_device(model))
        super().__init__(model, reference, cfg, cfg.ppo)

    def param_groups(self) -> list[dict[str, Any]]:
        return super().param_groups() + [{"params": list(self.value_head.parameters()), "lr": self.cfg.optim.value_lr}]

    def prepare(self, rollout: Rollout, rewards: torch.Tensor, timer: Timer):
        c = self.acfg
        mask = rollout.response_mask.float()
        with timer("logprobs"):
            old_logp, values = self.rollout_logprobs(rollout, values=True)
            ref_logp = self.reference_logprobs(rollout) if c.kl_coef > 0 else old_logp
        kl = kl_penalty(old_logp, ref_logp, "k1") * mask
        shaped = (rewards - c.kl_coef * kl) * mask
        adv, returns = gae(shaped, values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            adv = masked_whiten(adv, mask)
        stats = {
            "kl": float(masked_sum(kl, mask, dim=1).mean()),
            "value/mean": float(masked_mean(values, mask)),
            "value/returns": float(masked_mean(returns, mask)),
        }
        return {"old_logp": old_logp, "values": values, "adv": adv, "returns": returns}, stats

    def loss(self, mb: Rollout, data: dict[str, torch.Tensor]):
        c = self.acfg
        device = model_device(self.model)
        mask = mb.response_mask.to(device).float()
        fo = response_forward(self.model, mb, temperature=self.temperature, precision=self.precision,
                              share_prompts=self.share_prompts, hidden=True)
        values = self.value_head(fo.hidden.float())
        d = {k: v.to(device) for k, v in data.items()}
        pg, pstats = clipped_policy_loss(fo.logp, d["old_logp"], d["adv"], mask, c.clip_range)
        vf, vstats = clipped_value_loss(values, d["values"], d["returns"], mask, c.value_clip_range)
        bonus, rstats = self.regularisers(fo, mask)
        loss = pg + c.vf_coef * vf - bonus
        return loss, {"policy": pg.detach(), "value": vf.detach(), **pstats, **vstats, **rstats}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "value_head": self.value_head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
        super().load_state_dict(state)
