"""What PPO and GRPO share: the policy forward over response tokens and the minibatch loop.

An algorithm consumes a :class:`~rlsf.rollout.Rollout` and the ``[batch, tokens]`` reward tensor
made from its certificates, and updates the policy. Subclasses only say how advantages are made
(:meth:`Algorithm.prepare`) and what the loss of a minibatch is (:meth:`Algorithm.loss`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from rlsf.algorithms.core import batch_entropy, entropy_from_logits, last_token_index, logprobs_from_logits, masked_mean
from rlsf.rollout import Rollout
from rlsf.utils import Timer, autocast, model_device


@dataclass
class ForwardOut:
    logits: torch.Tensor  # [B, R, V] float32, temperature-scaled
    logp: torch.Tensor  # [B, R] log-prob of each response token
    hidden: torch.Tensor | None  # [B, R, H] hidden state predicting each response token


def response_forward(model, rollout: Rollout, *, temperature: float, precision: str, hidden: bool = False) -> ForwardOut:
    """Run ``model`` over prompt + response and keep only what predicts the response tokens.

    Position ids follow the left padding exactly as ``generate`` counted them, and logits are
    divided by the sampling temperature so that the policy scored is the policy sampled.
    """
    device = model_device(model)
    ids, attn = rollout.input_ids.to(device), rollout.attention_mask.to(device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    R = rollout.response_ids.shape[1]
    with autocast(precision, device):
        out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids, logits_to_keep=R + 1,
                    output_hidden_states=hidden, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    labels = rollout.response_ids.to(device)
    h = out.hidden_states[-1][:, -(R + 1) : -1] if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


class Algorithm(ABC):
    """An RL update rule over token-level rewards."""

    name = ""

    def __init__(self, model, reference, cfg, algo_cfg) -> None:
        self.model, self.reference, self.cfg, self.acfg = model, reference, cfg, algo_cfg
        self.temperature = cfg.rollout.temperature
        self.precision = cfg.model.autocast
        self.optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=cfg.optim.weight_decay)

    # ---- hooks ---------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.cfg.optim.lr}]

    @abstractmethod
    def prepare(self, rollout: Rollout, rewards: torch.Tensor, timer: Timer) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Per-row tensors the loss needs (old log-probs, advantages, ...) and statistics to log."""

    @abstractmethod
    def loss(self, mb: Rollout, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one minibatch; ``data`` holds the rows of :meth:`prepare`'s tensors."""

    # ---- shared --------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout_logprobs(self, rollout: Rollout, *, values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and values) of the current policy for the whole batch, in minibatches."""
        logps, vals = [], []
        for rows in self._chunks(len(rollout)):
            out = response_forward(self.model, rollout.select(rows), temperature=self.temperature,
                                   precision=self.precision, hidden=values)
            logps.append(out.logp.cpu())
            if values:
                vals.append(self.value_head(out.hidden.float()).cpu())
        return torch.cat(logps), (torch.cat(vals) if values else None)

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        out = []
        for rows in self._chunks(len(rollout)):
            with self.reference.active() as ref_model:
                fo = response_forward(ref_model, rollout.select(rows), temperature=self.temperature,
                                      precision=self.precision)
            out.append(fo.logp.cpu())
        return torch.cat(out)

    def _chunks(self, n: int) -> list[torch.Tensor]:
        return list(torch.arange(n).split(self.acfg.minibatch_size))

    def regularisers(self, fo: ForwardOut, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-entropy and batch-entropy bonuses (subtracted from the loss)."""
        ent = masked_mean(entropy_from_logits(fo.logits), mask)
        last = fo.logits[torch.arange(mask.shape[0]), last_token_index(mask)]
        bent = batch_entropy(last) if self.acfg.batch_entropy_coef else torch.zeros(())
        bonus = self.acfg.entropy_coef * ent + self.acfg.batch_entropy_coef * bent
        return bonus, {"entropy": ent.detach(), "batch_entropy": bent.detach()}

    def step(self, rollout: Rollout, rewards: torch.Tensor, timer: Timer) -> dict[str, float]:
        """One update: prepare advantages, then ``epochs`` passes over shuffled minibatches."""
        data, stats = self.prepare(rollout, rewards, timer)
        if rollout.logprobs is not None:
            # How far the sampling distribution (e.g. the bf16 sampling copy) is from the policy
            # being updated: PPO's ratios use the recomputed log-probs, so this is a diagnostic.
            stats["rollout/logprob_gap"] = float(masked_mean((rollout.logprobs - data["old_logp"]).abs(),
                                                             rollout.response_mask.float()))
        sums: dict[str, float] = {}
        count = 0
        self.model.train()
        with timer("update"):
            for _ in range(self.acfg.epochs):
                for rows in torch.randperm(len(rollout)).split(self.acfg.minibatch_size):
                    mb = rollout.select(rows)
                    loss, mstats = self.loss(mb, {k: v[rows] for k, v in data.items()})
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    params = [p for g in self.optimizer.param_groups for p in g["params"]]
                    if self.cfg.optim.max_grad_norm > 0:
                        gn = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.max_grad_norm)
                        mstats["grad_norm"] = gn
                    self.optimizer.step()
                    mstats["total"] = loss.detach()
                    for k, v in mstats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
        stats.update({f"loss/{k}" if not k.startswith(("entropy", "batch_entropy")) else k: v / count
                      for k, v in sums.items()})
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
