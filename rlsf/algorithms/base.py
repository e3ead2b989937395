"""What PPO and GRPO share: the policy forward over response tokens and the minibatch loop.

An algorithm consumes a :class:`~rlsf.rollout.Rollout` and the ``[batch, tokens]`` reward tensor
made from its certificates, and updates the policy. Subclasses only say how advantages are made
(:meth:`Algorithm.prepare`) and what the loss of a minibatch is (:meth:`Algorithm.loss`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from rlsf.algorithms.core import batch_entropy, entropy_from_logits, last_token_index, logprobs_from_logits, masked_mean
from rlsf.rollout import Rollout, unique_prompts
from rlsf.models import position_ids_from_mask
from rlsf.utils import Timer, autocast, make_adamw, model_device


@dataclass
class ForwardOut:
    logits: torch.Tensor  # [B, R, V] float32, temperature-scaled
    logp: torch.Tensor  # [B, R] log-prob of each response token
    hidden: torch.Tensor | None  # [B, R, H] hidden state predicting each response token


def response_forward(model, rollout: Rollout, *, temperature: float, precision: str, hidden: bool = False,
                     share_prompts: bool = True) -> ForwardOut:
    """Run ``model`` over prompt + response and keep only what predicts the response tokens.

    Position ids follow the left padding exactly as sampling counted them, and logits are
    divided by the sampling temperature so that the policy scored is the policy sampled.

    With ``share_prompts`` (the fast path) each distinct prompt of the batch is run once and its
    KV cache gathered to its samples; the response tokens then attend to that cache. Gradients
    flow back through the gather (the prompt's share of each sample's gradient is summed), so
    the result equals the plain full-sequence pass (``share_prompts=False``) while a group of
    ``k`` samples pays for its prompt once instead of ``k`` times.
    """
    device = model_device(model)
    labels = rollout.response_ids.to(device)
    first, inverse = unique_prompts(rollout.prompt_ids) if share_prompts and labels.shape[1] > 1 else (None, None)
    with training_attention(device):
        if first is None or len(first) == len(rollout):
            return _full_forward(model, rollout, labels, temperature=temperature, precision=precision,
                                 hidden=hidden)
        return _shared_forward(model, rollout, labels, first, inverse, temperature=temperature,
                               precision=precision, hidden=hidden)


def training_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, differentiate attention with SDPA's math kernel: at these lengths (a few hundred
    tokens) its backward is ~15% faster per update than the flash kernel's (same result)."""
    if device.type == "cpu" and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _shared_forward(model, rollout: Rollout, labels: torch.Tensor, first: torch.Tensor, inverse: torch.Tensor, *,
                    temperature: float, precision: str, hidden: bool) -> ForwardOut:
    """Each distinct prompt once, its KV cache gathered to its samples, then the responses."""
    device = labels.device
    p_ids, p_mask = rollout.prompt_ids.to(device), rollout.prompt_mask.to(device)
    first, inverse = first.to(device), inverse.to(device)
    cache = DynamicCache(config=model.config)
    with autocast(precision, device):
        pre = model(input_ids=p_ids[first], attention_mask=p_mask[first],
                    position_ids=position_ids_from_mask(p_mask[first]), past_key_values=cache, use_cache=True,
                    logits_to_keep=1, output_hidden_states=hidden)
        cache.batch_select_indices(inverse)
        # The response's last token predicts nothing we score, so it is not fed.
        r_ids, r_mask = labels[:, :-1], rollout.response_mask[:, :-1].to(device)
        attn = torch.cat([p_mask, r_mask], dim=1)
        pos = p_mask.sum(-1, keepdim=True) + torch.arange(r_ids.shape[1], device=device)
        out = model(input_ids=r_ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                    output_hidden_states=hidden)
    logits = torch.cat([pre.logits[:, -1:][inverse], out.logits], dim=1).float() / temperature
    h = torch.cat([pre.hidden_states[-1][:, -1:][inverse], out.hidden_states[-1]], dim=1) if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


def _full_forward(model, rollout: Rollout, labels: torch.Tensor, *, temperature: float, precision: str,
                  hidden: bool) -> ForwardOut:
    """The plain path: one pass over each row's whole prompt + response."""
    device = labels.device
    ids, attn = rollout.input_ids.to(device), rollout.attention_mask.to(device)
    R = rollout.response_ids.shape[1]
    with autocast(precision, device):
        out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), logits_to_keep=R + 1,
                    output_hidden_states=hidden, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    h = out.hidden_states[-1][:, -(R + 1) : -1] if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad ``[B, T]`` with zeros to ``[B, width]`` (a trimmed minibatch back to the batch's width)."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


class Algorithm(ABC):
    """An RL update rule over token-level rewards."""

    name = ""

    def __init__(self, model, reference, cfg, algo_cfg) -> None:
        self.model, self.reference, self.cfg, self.acfg = model, reference, cfg, algo_cfg
        self.temperature = cfg.rollout.temperature
        self.precision = cfg.model.autocast
        self.share_prompts = cfg.train.share_prompts
        self.optimizer = make_adamw(self.param_groups(), weight_decay=cfg.optim.weight_decay)

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
        R = rollout.response_ids.shape[1]
        logps, vals = [], []
        for rows in self._chunks(len(rollout)):
            out = response_forward(self.model, rollout.select(rows, trim=True), temperature=self.temperature,
                                   precision=self.precision, hidden=values, share_prompts=self.share_prompts)
            logps.append(pad_to(out.logp.cpu(), R))
            if values:
                vals.append(pad_to(self.value_head(out.hidden.float()).cpu(), R))
        return torch.cat(logps), (torch.cat(vals) if values else None)

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        R = rollout.response_ids.shape[1]
        out = []
        for rows in self._chunks(len(rollout)):
            with self.reference.active() as ref_model:
                fo = response_forward(ref_model, rollout.select(rows, trim=True), temperature=self.temperature,
                                      precision=self.precision, share_prompts=self.share_prompts)
            out.append(pad_to(fo.logp.cpu(), R))
        return torch.cat(out)

    def single_update(self, n: int) -> bool:
        """One optimiser step per batch: the policy that sampled is the one being differentiated,
        so the PPO ratio is exactly 1 and ``old_logp`` is the loss pass's own detached log-probs
        (no separate forward pass; TRL does the same with ``num_iterations=1``)."""
        return self.acfg.epochs == 1 and self.acfg.minibatch_size >= n

    def _chunks(self, n: int) -> list[torch.Tensor]:
        return list(torch.arange(n).split(self.acfg.minibatch_size))

    def regularisers(self, fo: ForwardOut, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-entropy and batch-entropy bonuses (subtracted from the loss)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.acfg.entropy_coef != 0):
            ent = masked_mean(entropy_from_logits(fo.logits), mask)  # logged even when not a bonus
        last = fo.logits[torch.arange(mask.shape[0]), last_token_index(mask)]
        bent = batch_entropy(last) if self.acfg.batch_entropy_coef else torch.zeros(())
        bonus = self.acfg.entropy_coef * ent + self.acfg.batch_entropy_coef * bent
        return bonus, {"entropy": ent.detach(), "batch_entropy": bent.detach()}

    def step(self, rollout: Rollout, rewards: torch.Tensor, timer: Timer) -> dict[str, float]:
        """One update: prepare advantages, then ``epochs`` passes over shuffled minibatches."""
        data, stats = self.prepare(rollout, rewards, timer)
        if rollout.logprobs is not None and "old_logp" in data:
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
                    mb = rollout.select(rows, trim=True)  # no columns that are padding in every row
                    R = mb.response_ids.shape[1]
                    loss, mstats = self.loss(mb, {k: v[rows][:, :R] for k, v in data.items()})
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
