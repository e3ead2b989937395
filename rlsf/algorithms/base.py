"""The algorithm interface, and what the clipped policy-gradient family (PPO, GRPO) shares.

An algorithm receives one :class:`~rlsf.experience.Experience` per training step -- sampled
ids, sampling log-probs, certificates, token rewards, groups -- and updates the policy
(:meth:`Algorithm.step`). It is registered by name with its own settings section
(``rlsf.algorithms.register``), so a new algorithm is one module in ``rlsf/algorithms/``.

:class:`PolicyGradient` is the shared skeleton of clipped policy-gradient methods: subclasses
say how advantages are made (:meth:`PolicyGradient.prepare`) and what the loss of a minibatch
is (:meth:`PolicyGradient.loss`); the forward pass over response tokens, the reference policy,
the minibatch loop, learning-rate warm-up, the entropy regularisers and the diagnostics (KL to
the reference, sampling/update log-prob gap) are here.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from rlsf.algorithms.core import (
    batch_entropy,
    batch_entropy_index,
    entropy_from_logits,
    kl_penalty,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
)
from rlsf.experience import Experience
from rlsf.models.loading import uses_gradient_checkpointing
from rlsf.models.parts import position_ids_from_mask
from rlsf.models.reference import Reference
from rlsf.rollout.engines import unique_prompts
from rlsf.runtime.utils import Timer, autocast, make_adamw, model_device
from rlsf.settings import opt, require, require_adamw


@dataclass
class ForwardOut:
    logits: torch.Tensor  # [B, R, V] float32, temperature-scaled
    logp: torch.Tensor  # [B, R] log-prob of each response token
    hidden: torch.Tensor | None  # [B, R, H] hidden state predicting each response token


def response_forward(model, exp: Experience, *, temperature: float, precision: str, hidden: bool = False,
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
    labels = exp.response_ids.to(device)
    first, inverse = unique_prompts(exp.prompt_ids) if share_prompts and labels.shape[1] > 1 else (None, None)
    with training_attention(device, checkpointed=uses_gradient_checkpointing(model)):
        if first is None or len(first) == len(exp):
            return _full_forward(model, exp, labels, temperature=temperature, precision=precision,
                                 hidden=hidden)
        return _shared_forward(model, exp, labels, first, inverse, temperature=temperature,
                               precision=precision, hidden=hidden)


def training_attention(device: torch.device, checkpointed: bool = False) -> contextlib.AbstractContextManager:
    """On CPU, differentiate attention with SDPA's math kernel: at these lengths (a few hundred
    tokens) its backward is ~15% faster per update than the flash kernel's (same result). Not
    with gradient checkpointing: the backward recomputes each layer outside this context, with
    the default kernel, and a recomputation must save what the forward saved."""
    if device.type == "cpu" and torch.is_grad_enabled() and not checkpointed:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _shared_forward(model, exp: Experience, labels: torch.Tensor, first: torch.Tensor, inverse: torch.Tensor, *,
                    temperature: float, precision: str, hidden: bool) -> ForwardOut:
    """Each distinct prompt once, its KV cache gathered to its samples, then the responses."""
    device = labels.device
    p_ids, p_mask = exp.prompt_ids.to(device), exp.prompt_mask.to(device)
    first, inverse = first.to(device), inverse.to(device)
    cache = DynamicCache(config=model.config)
    with autocast(precision, device):
        pre = model(input_ids=p_ids[first], attention_mask=p_mask[first],
                    position_ids=position_ids_from_mask(p_mask[first]), past_key_values=cache, use_cache=True,
                    logits_to_keep=1, output_hidden_states=hidden)
        cache.batch_select_indices(inverse)
        # The response's last token predicts nothing we score, so it is not fed.
        r_ids, r_mask = labels[:, :-1], exp.response_mask[:, :-1].to(device)
        attn = torch.cat([p_mask, r_mask], dim=1)
        pos = p_mask.sum(-1, keepdim=True) + torch.arange(r_ids.shape[1], device=device)
        out = model(input_ids=r_ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                    output_hidden_states=hidden)
    logits = torch.cat([pre.logits[:, -1:][inverse], out.logits], dim=1).float() / temperature
    h = torch.cat([pre.hidden_states[-1][:, -1:][inverse], out.hidden_states[-1]], dim=1) if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


def _full_forward(model, exp: Experience, labels: torch.Tensor, *, temperature: float, precision: str,
                  hidden: bool) -> ForwardOut:
    """The plain path: one pass over each row's whole prompt + response."""
    device = labels.device
    ids, attn = exp.input_ids.to(device), exp.attention_mask.to(device)
    R = exp.response_ids.shape[1]
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
    """An RL update rule. Subclasses set ``Config`` (their settings section, a dataclass of
    :func:`~rlsf.config.opt` fields) and are registered with ``rlsf.algorithms.register``."""

    name = ""
    Config: type = object
    #: Outcome label the training prompts carry (:func:`rlsf.rollout.with_outcome`); None: plain prompts.
    sampling_condition: str | None = None

    @classmethod
    def evaluation_condition(cls, cfg) -> str:
        """The outcome label held-out prompts carry after training with this algorithm ('' for none)."""
        return ""

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        """``model`` is the policy (trained in place), ``task`` the task being trained on (its
        prompts, checker and demonstrations), ``runtime`` the device and precision decision."""
        self.model, self.tokenizer, self.task, self.cfg, self.runtime = model, tokenizer, task, cfg, runtime
        self.acfg = cfg.section(self.name)

    @abstractmethod
    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        """Learn from one batch of checked completions; returns statistics to log."""

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the policy's weights that a resumed run needs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class PolicyUpdateConfig:
    """What every clipped policy-gradient update shares."""

    epochs: int = opt(1, "Optimisation epochs over each batch of rollouts.")
    minibatch_size: int = opt(8, "Completions per minibatch (must divide the batch).")
    clip_range: float = opt(0.2, "PPO ratio clip epsilon.")
    kl_coef: float = opt(0.05, "KL coefficient to the reference policy (0: no reference is kept).")
    entropy_coef: float = opt(0.0, "Token-entropy bonus coefficient c_H: mean entropy of the policy's "
                              "next-token distributions over response tokens.")
    batch_entropy_coef: float = opt(0.0, "Batch-entropy bonus c_B (Padula & Soemers): entropy of the mean, "
                                    "over the minibatch, of each sample's next-token distribution at its last "
                                    "response position (softmax at batch_entropy_temperature).")
    batch_entropy_temperature: float = opt(1.0, "Softmax temperature of the batch-entropy term.")
    lr: float = opt(3e-6, "AdamW learning rate of the policy. AdamW's first updates move every weight by about the "
                    "learning rate whatever the gradient (benchmarks/bench_first_update.py): 1e-5 moved the SFT "
                    "model by ~4 nats per completion in one step, 3e-6 by ~0.4, with warm-up ~0.06.")
    warmup_steps: int = opt(8, "Linear learning-rate warm-up over the first N optimiser updates (0: none).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")
    share_prompts: bool = opt(True, "In the update's passes, run each distinct prompt once and share its KV cache "
                              "among its samples (same result, fewer tokens); false: one full prompt + response "
                              "pass per sample (the plain path).")
    batch_entropy_position: str = opt("last", "Each sample's position in the batch entropy: last (its last "
                                      "response token, the end-of-turn token when it stopped) or before_end "
                                      "(the token before a final end-of-turn token: where completions differ).")

    def validate(self, cfg) -> None:
        name = cfg.train.algorithm
        batch = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
        require(self.epochs >= 1, f"{name}.epochs", "must be >= 1")
        require(self.minibatch_size >= 1 and batch % self.minibatch_size == 0, f"{name}.minibatch_size",
                f"must divide the batch of rollout.prompts_per_step x rollout.samples_per_prompt = {batch}")
        require(self.clip_range > 0, f"{name}.clip_range", "must be > 0")
        require(self.lr > 0, f"{name}.lr", "must be > 0")
        require(self.warmup_steps >= 0, f"{name}.warmup_steps", "must be >= 0")
        require_adamw(self, name)
        require(self.kl_coef >= 0, f"{name}.kl_coef", "must be >= 0")
        require(self.batch_entropy_temperature > 0, f"{name}.batch_entropy_temperature", "must be > 0")
        require(self.batch_entropy_position in ("last", "before_end"), f"{name}.batch_entropy_position",
                "must be last or before_end")


class PolicyGradient(Algorithm):
    """Clipped policy-gradient updates over token-level rewards (see the module docstring)."""

    Config = PolicyUpdateConfig

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        super().__init__(model, tokenizer, task, cfg, runtime)
        self.temperature = cfg.rollout.temperature
        self.precision = runtime.precision
        # A checkpointed layer keeps no key/value cache: the shared-prompt passes need one.
        self.share_prompts = self.acfg.share_prompts and not uses_gradient_checkpointing(model)
        # The reference is the policy as loaded (the SFT model): a frozen copy or, with LoRA, the
        # same weights with adapters disabled. Without a KL term nothing reads it: no copy is made.
        self.reference = Reference.from_policy(model) if self.acfg.kl_coef > 0 else None
        self.optimizer = make_adamw(self.param_groups(), weight_decay=self.acfg.weight_decay)
        self.updates = 0  # optimiser steps taken (learning-rate warm-up)

    # ---- hooks ---------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.acfg.lr}]

    @abstractmethod
    def prepare(self, exp: Experience, timer: Timer) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Per-row tensors the loss needs (old log-probs, advantages, ...) and statistics to log."""

    @abstractmethod
    def loss(self, mb: Experience, data: dict[str, torch.Tensor], fo: ForwardOut,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one minibatch given its forward pass ``fo``; ``data`` holds its rows of
        :meth:`prepare`'s tensors and ``mask`` its loss mask, both on the model's device."""

    needs_hidden = False  # whether loss() reads fo.hidden (a value head)

    # ---- shared --------------------------------------------------------------------------------
    def forward(self, model, exp: Experience, hidden: bool = False) -> ForwardOut:
        return response_forward(model, exp, temperature=self.temperature, precision=self.precision,
                                hidden=hidden, share_prompts=self.share_prompts)

    @torch.no_grad()
    def rollout_logprobs(self, exp: Experience, *, values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and values) of the current policy for the whole batch, in minibatches."""
        R = exp.response_ids.shape[1]
        logps, vals = [], []
        for rows in self._chunks(len(exp)):
            out = self.forward(self.model, exp.select(rows, trim=True), hidden=values)
            logps.append(pad_to(out.logp.cpu(), R))
            if values:
                vals.append(pad_to(self.value_head(out.hidden.float()).cpu(), R))
        return torch.cat(logps), (torch.cat(vals) if values else None)

    @torch.no_grad()
    def reference_logprobs(self, exp: Experience) -> torch.Tensor:
        R = exp.response_ids.shape[1]
        out = []
        for rows in self._chunks(len(exp)):
            with self.reference.active() as ref_model:
                fo = self.forward(ref_model, exp.select(rows, trim=True))
            out.append(pad_to(fo.logp.cpu(), R))
        return torch.cat(out)

    def single_update(self, n: int) -> bool:
        """One optimiser step per batch: the policy that sampled is the one being differentiated,
        so the PPO ratio is exactly 1 and ``old_logp`` is the loss pass's own detached log-probs
        (no separate forward pass; TRL does the same with ``num_iterations=1``)."""
        return self.acfg.epochs == 1 and self.acfg.minibatch_size >= n

    def _chunks(self, n: int) -> list[torch.Tensor]:
        return list(torch.arange(n).split(self.acfg.minibatch_size))

    def regularisers(self, fo: ForwardOut, mask: torch.Tensor, truncated: list[bool] | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-entropy and batch-entropy bonuses (subtracted from the loss); both always logged.
        ``truncated``: rows cut by max_new_tokens (the others ended with an end-of-turn token)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.acfg.entropy_coef != 0):
            ent = masked_mean(entropy_from_logits(fo.logits), mask)
        rows = mask.sum(1) > 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.acfg.batch_entropy_coef != 0):
            index = last_token_index(mask)
            if self.acfg.batch_entropy_position == "before_end" and truncated is not None:
                index = batch_entropy_index(mask, torch.tensor([not t for t in truncated], device=mask.device))
            last = fo.logits[torch.arange(mask.shape[0], device=mask.device), index][rows]
            bent = batch_entropy(last, self.acfg.batch_entropy_temperature) if len(last) else torch.zeros(())
        bonus = self.acfg.entropy_coef * ent + self.acfg.batch_entropy_coef * bent
        return bonus, {"entropy": ent.detach(), "batch_entropy": bent.detach()}

    def _set_lr(self) -> None:
        warm = self.acfg.warmup_steps
        scale = min(1.0, (self.updates + 1) / warm) if warm else 1.0
        for g in self.optimizer.param_groups:
            g["lr"] = g.setdefault("base_lr", g["lr"]) * scale  # base_lr: the configured rate

    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        """One update: prepare advantages, then ``epochs`` passes over shuffled minibatches."""
        if not bool(exp.valid.any()):
            return {"update/skipped": 1.0}  # every check failed: nothing to learn from
        data, stats = self.prepare(exp, timer)
        mask_all = exp.loss_mask
        if "old_logp" in data:
            stats.update(self._diagnostics(exp, data["old_logp"], data.get("ref_logp"), mask_all))
        sums: dict[str, float] = {}
        count = 0
        device = model_device(self.model)
        self.model.train()
        with timer("update"):
            for _ in range(self.acfg.epochs):
                for rows in torch.randperm(len(exp)).split(self.acfg.minibatch_size):
                    mb = exp.select(rows, trim=True)  # no columns that are padding in every row
                    R = mb.response_ids.shape[1]
                    mask = mb.loss_mask.to(device)
                    mdata = {k: v[rows][:, :R].to(device) for k, v in data.items()}
                    fo = self.forward(self.model, mb, hidden=self.needs_hidden)
                    loss, mstats = self.loss(mb, mdata, fo, mask)
                    if "old_logp" not in data:  # single update: the loss pass is the sampling policy
                        mstats.update(self._diagnostics(mb, fo.logp.detach().cpu(), mdata.get("ref_logp"),
                                                        mask.cpu()))
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    params = [p for g in self.optimizer.param_groups for p in g["params"]]
                    if self.acfg.max_grad_norm > 0:
                        mstats["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.acfg.max_grad_norm)
                    self._set_lr()
                    self.optimizer.step()
                    self.updates += 1
                    mstats["total"] = loss.detach()
                    for k, v in mstats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
        for k, v in sums.items():
            stats[k if k in DIAGNOSTICS or k.startswith("rollout/") else f"loss/{k}"] = v / count
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        return stats

    @staticmethod
    def _diagnostics(exp: Experience, logp: torch.Tensor, ref_logp: torch.Tensor | None,
                     mask: torch.Tensor) -> dict[str, float]:
        """KL to the reference per completion (sum over its tokens of ``log pi - log pi_ref``, the
        sampled-token estimate) and the mean gap between sampling and update log-probs."""
        out = {}
        if ref_logp is not None:
            kl = masked_sum(kl_penalty(logp, ref_logp.to(logp.device), "k1"), mask, dim=1)
            out["kl"] = float(kl.sum() / (mask.sum(1) > 0).sum().clamp(min=1))
        if exp.logprobs is not None:
            # How far the sampling distribution (bf16 sampling weights) is from the policy being
            # updated: the update uses its own log-probs, so this is a diagnostic.
            out["rollout/logprob_gap"] = float(masked_mean((exp.logprobs - logp).abs(), mask))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state.get("updates", 0)


#: Statistics logged under their own names rather than ``loss/...`` (and ``rollout/...``).
DIAGNOSTICS = ("entropy", "batch_entropy", "kl")
