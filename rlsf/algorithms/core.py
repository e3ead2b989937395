"""The shared math of the RL algorithms: small pure functions over token-level tensors.

Shapes: ``[B, T]`` for per-token quantities of ``B`` completions of ``T`` response tokens, with
``mask`` 1 on generated tokens and 0 on padding. Nothing here touches a model.
"""

from __future__ import annotations

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


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to unit variance (and zero mean) over unmasked entries; padding stays 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
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
    """Index of the last unmasked token of each row (0 for an empty row)."""
    return (mask.sum(1).long() - 1).clamp(min=0)


def batch_entropy_index(mask: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
    """The response position whose distribution enters the batch entropy: the last token, or for a
    row that ``ended`` with an end-of-turn token (and has another token) the one before it, where
    completions differ (the answer's last token) rather than all predicting the end."""
    last = last_token_index(mask)
    return last - (ended.bool() & (mask.sum(1) > 1)).long()


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last token is 0),
    ``A_t = delta_t + gamma * lam * A_{t+1}``. Returns ``(advantages, returns = A + V)``,
    zero on padding. Rows are left-aligned (padding only at the end).
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])  # A_{t+1}; stays 0 across trailing padding
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{t' >= t} gamma^(t'-t) r_t'`` per row, zero on padding."""
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def group_index(group: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group ids (any integers) as ``0..G-1`` per row, and ``G``."""
    uniq, inverse = torch.unique(group, return_inverse=True)
    return inverse, int(uniq.numel())


def group_sum(x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``[B] -> [B]``: the sum of ``x`` over each row's group, given back to every row."""
    inverse, n = group_index(group)
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, inverse, x)[inverse]


def _group_baseline(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor):
    """Returns-to-go ``G``, each row's total ``R = G[:, 0]``, the number of valid rows of its group and
    the group sum of valid totals (invalid rows -- failed checks -- are left out of every statistic)."""
    G = returns_to_go(rewards, mask)
    v = valid.to(rewards.dtype)
    R = G[:, 0] * v
    return G, R, group_sum(v, group), group_sum(R, group)


def grpo_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO's advantage, generalised to token-level rewards (estimator ``grpo``).

    Rows with equal ``group`` ids are samples of one prompt. With ``G_{i,t}`` the return-to-go of
    sample ``i`` from token ``t``, ``R_i = G_{i,0}`` its total reward and ``n`` the group's valid
    samples::

        D_{i,t} = G_{i,t} - mean_j R_j
        s^2     = sum_i mean_t D_{i,t}^2 / (n - 1)
        A_{i,t} = D_{i,t} / (s + eps)

    A token is credited with the rewards at and after it (reward-to-go: what it can still
    influence), so credit a completion collected before token ``t`` does not count for ``t``, and
    a flagged step weighs on the tokens up to and including it, not on those after it. The
    baseline is the group's mean *total* reward, a per-prompt constant, so the policy gradient
    stays unbiased. With sequence rewards (all on the last token) ``D_{i,t} = R_i - mean`` for
    every ``t``, ``s`` is the unbiased std of the totals and this is exactly GRPO.

    The scale ``s`` is the spread of the centred returns-to-go, not of the totals alone: totals
    can tie while rewards sit on different tokens (``[[.1, 0, 0], [0, 0, .1]]``), and dividing by
    their zero std would blow the advantages up (to 1e5 with ``eps`` = 1e-6). ``|A|`` is at most
    ``sqrt(T (n - 1))`` this way. Groups with fewer than two valid samples have no baseline: 0.
    """
    G, R, n, total = _group_baseline(rewards, mask, group, valid)
    D = (G - (total / n.clamp(min=1))[:, None]) * mask
    ms = (D**2).sum(1) / mask.sum(1).clamp(min=1) * valid.to(D.dtype)
    s = (group_sum(ms, group) / (n - 1).clamp(min=1)).sqrt()
    keep = (valid & (n >= 2)).to(D.dtype)[:, None]
    return D / (s[:, None] + eps) * keep * mask


def dr_grpo_advantages(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``G_{i,t} - mean_j R_j`` without the division (estimator ``dr_grpo``, "GRPO done right",
    Liu et al. 2025): no per-prompt rescaling, so easy and hard prompts weigh by their spread."""
    G, R, n, total = _group_baseline(rewards, mask, group, valid)
    keep = (valid & (n >= 2)).to(G.dtype)[:, None]
    return (G - (total / n.clamp(min=1))[:, None]) * keep * mask


def rloo_advantages(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``G_{i,t} - mean_{j != i} R_j`` (estimator ``rloo``, REINFORCE leave-one-out, Ahmadian et al.
    2024): each sample's baseline excludes itself, so it is independent of the sample."""
    G, R, n, total = _group_baseline(rewards, mask, group, valid)
    keep = (valid & (n >= 2)).to(G.dtype)[:, None]
    return (G - ((total - R) / (n - 1).clamp(min=1))[:, None]) * keep * mask


#: Group-baseline advantage estimators by name: ``(rewards, mask, group, valid) -> advantages``.
GROUP_ESTIMATORS = {"grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages, "rloo": rloo_advantages}


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
