"""The shared math of the RL algorithms: small pure functions over token-level tensors.

Shapes: ``[B, T]`` for per-token quantities of ``B`` completions of ``T`` response tokens, with
``mask`` 1 on generated tokens and 0 on padding. Nothing here touches a model.
"""

from __future__ import annotations

import math

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over unmasked entries (0 where there are none)."""
    if dim is None:
        return masked_sum(x, mask) / mask.sum().clamp(min=1)
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over unmasked entries."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_sum((x - mean) ** 2, mask) / (n - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  std_floor: float = 0.0) -> torch.Tensor:
    """Normalise to unit variance (and zero mean) over unmasked entries; padding stays 0.

    The scale is ``1 / max(std, std_floor)``: when the entries barely vary (a batch of nearly equal
    rewards, whose advantages are mostly the critic's noise) a floor keeps whitening from blowing
    that noise up to unit variance."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var.clamp(min=std_floor**2) + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[labels]`` per position: ``[B, T, V], [B, T] -> [B, T]`` (in float32)."""
    logits = logits.float()
    return torch.gather(logits.log_softmax(-1), -1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: ``[B, T, V] -> [B, T]``."""
    logits = logits.float()
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def batch_entropy(last_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the batch-mean next-token distribution (Padula & Soemers' batch entropy).

    ``last_logits`` ``[B, V]``: the logits at each sample's last response position. High when
    the samples of a batch spread over different tokens, so it rewards diversity *across*
    prompts (unlike the per-token entropy, which is maximised by each sample on its own).
    """
    p = (last_logits.float() / temperature).softmax(-1).mean(0)
    return -(p * p.clamp(min=1e-12).log()).sum()


def batch_entropy_part(own_logits: torch.Tensor, rest_probs: torch.Tensor, total_rows: float,
                       temperature: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """The batch entropy of a whole batch, differentiable through one part of its rows (a minibatch).

    ``own_logits`` ``[n, V]``: the part's logits at each row's batch-entropy position; ``rest_probs``
    ``[V]``: the sum of the other rows' next-token distributions (softmax at ``temperature``), entered
    as a constant; ``total_rows``: ``n`` plus the number of other rows. The value is the whole batch's
    ``H(p_bar)``, ``p_bar = (sum_own softmax(z_i / T) + rest_probs) / total_rows``; the gradient is
    ``scale`` times the part's share of the gradient of ``H(p_bar)``. With ``scale`` 1 the gradients
    of the parts of a batch, each with the others' rows as ``rest_probs``, sum to the gradient of
    :func:`batch_entropy` over the whole batch (when ``rest_probs`` holds the same weights' values).
    ``scale = total_rows / n`` makes each part's gradient the minibatch estimate of that gradient, as
    a minibatch's token mean is of the batch's (what the clipped policy-gradient update uses).
    """
    p = ((own_logits.float() / temperature).softmax(-1).sum(0) + rest_probs.detach().float()) / total_rows
    h = -(p * p.clamp(min=1e-12).log()).sum()
    if scale == 1.0:
        return h
    value = h.detach()
    return (h - value) * scale + value


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of sampled tokens.

    ``k1``: ``logp - ref_logp`` (unbiased, can be negative; used as a reward penalty in PPO).
    ``k3``: ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, always >= 0; used in GRPO's loss).
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k3":
        d = (ref_logp - logp).clamp(-20, 20)
        return d.exp() - d - 1
    raise ValueError(f"unknown KL estimator {kind!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last unmasked token of each row (0 for an empty row); the mask need not be
    contiguous (an episode's feedback turns are masked between its sampled turns)."""
    if mask.shape[1] == 0:
        return torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    pos = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask > 0, pos, -1).max(1).values.clamp(min=0)


def batch_entropy_index(mask: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
    """The response position whose distribution enters the batch entropy: the last token, or for a
    row that ``ended`` with an end-of-turn token (and has another token) the one before it, where
    completions differ (the answer's last token) rather than all predicting the end."""
    last = last_token_index(mask)
    return last - (ended.bool() & (mask.sum(1) > 1)).long()


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, token-mean over the minibatch.

    ``L = mean_t max(-A_t r_t, -A_t clip(r_t, 1-eps, 1+eps))`` with ``r_t = exp(logp - old_logp)``.
    Returns the loss and diagnostics (clip fraction, approximate KL to the rollout policy).
    """
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg2 > pg1).float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss: ``0.5 * mean_t max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((l2 > l1).float(), mask)}
    return loss, stats


def truncated_importance_weights(train_logp: torch.Tensor, sample_logp: torch.Tensor, mask: torch.Tensor,
                                 cap: float) -> torch.Tensor:
    """Per-token ``min(pi_train(a) / pi_sample(a), cap)``, detached (1 outside ``mask``).

    The correction for sampling with other weights than those being trained (vLLM's kernels, bf16
    sampling weights): the policy-gradient term of each token is scaled by it (truncated
    importance sampling, as verl's and TRL's vLLM corrections). The ratio is clamped in log space
    before ``exp``, so a large gap cannot overflow.
    """
    log_ratio = (train_logp.detach() - sample_logp.to(train_logp.device)).clamp(max=math.log(cap))
    return torch.where(mask.bool(), log_ratio.exp(), torch.ones_like(log_ratio))
