"""Advantage estimators: from token rewards ``[B, T]`` to the advantage of every sampled token.

Two kinds, one registry (:data:`ESTIMATORS`, by name):

* ``critic`` estimators use a learned value per token: ``gae`` (PPO).
* ``group`` estimators use the other samples of the same prompt as the baseline (rows sharing a
  ``group`` id): ``grpo``, ``dr_grpo``, ``rloo`` (a per-prompt constant baseline) and
  ``rloo_token``, ``grpo_token`` (a per-position baseline; GRPO's ``grpo.advantage``).

All are pure functions over token-level tensors; rows whose check failed (``valid`` false) get
no advantage and take no part in any baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rlsf.runtime import distributed


def _at(gamma: float | torch.Tensor, t: int) -> float | torch.Tensor:
    """The discount linking token ``t`` to ``t + 1``: a number, or column ``t`` of a ``[B, T]`` tensor
    (per-token discounts: a self-repair episode's turn boundaries, :mod:`rlsf.algorithms.turns`)."""
    return gamma[:, t] if isinstance(gamma, torch.Tensor) else gamma


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float | torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last token is 0),
    ``A_t = delta_t + gamma * lam * A_{t+1}``. Returns ``(advantages, returns = A + V)``,
    zero on padding. Rows are left-aligned (padding only at the end). ``gamma`` is a number or a
    ``[B, T]`` tensor of per-token discounts (``gamma_t`` links token ``t`` to ``t + 1``).
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])  # A_{t+1}; stays 0 across trailing padding
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        g = _at(gamma, t)
        delta = rewards[:, t] + g * next_v - values[:, t]
        last = delta + g * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask



def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``G_t = r_t + gamma_t G_{t+1}`` per row (``sum_{t' >= t} gamma^(t'-t) r_t'`` for a number
    ``gamma``; a ``[B, T]`` tensor gives per-token discounts), zero on padding."""
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + _at(gamma, t) * running
        out[:, t] = running
    return out * mask



def group_index(group: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group ids (any integers) as ``0..G-1`` per row, and ``G``."""
    uniq, inverse = torch.unique(group, return_inverse=True)
    return inverse, int(uniq.numel())



def group_sum(x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``[B, ...] -> [B, ...]``: the sum of ``x`` over each row's group, given back to every row."""
    inverse, n = group_index(group)
    return torch.zeros((n, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, inverse, x)[inverse]



def _group_baseline(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor):
    """Returns-to-go ``G``, each row's total ``R = G[:, 0]``, the number of valid rows of its group and
    the group sum of valid totals (invalid rows -- failed checks -- are left out of every statistic)."""
    G = returns_to_go(rewards, mask)
    v = valid.to(rewards.dtype)
    R = G[:, 0] * v
    return G, R, group_sum(v, group), group_sum(R, group)



def _group_spread(D: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor,
                  dof: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``sqrt(sum_i mean_t D_{i,t}^2 / dof)`` over each row's group (valid rows only)."""
    ms = (D**2).sum(1) / mask.sum(1).clamp(min=1) * valid.to(D.dtype)
    return (group_sum(ms, group) / dof).sqrt()


def grpo_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6,
    std_floor: float = 0.0,
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
    With ``std_floor`` the scale is ``max(s, std_floor)``: a group whose rewards differ by a hair
    (noise, a tiny span credit) is not blown up to unit spread.
    """
    G, R, n, total = _group_baseline(rewards, mask, group, valid)
    D = (G - (total / n.clamp(min=1))[:, None]) * mask
    s = _group_spread(D, mask, group, valid, (n - 1).clamp(min=1))
    keep = (valid & (n >= 2)).to(D.dtype)[:, None]
    return D / (s.clamp(min=std_floor)[:, None] + eps) * keep * mask



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



def held_returns_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns-to-go ``G`` and ``G`` held at each row's last token past its end:
    ``H_{i,t} = G_{i,min(t, L_i - 1)}`` (a row's reward-to-go "at position t" once it has stopped
    is what its last token still had to earn, the score; rows are left-aligned)."""
    G = returns_to_go(rewards, mask)
    last = (mask.sum(1).long() - 1).clamp(min=0)
    pos = torch.arange(G.shape[1], device=G.device)[None, :]
    return G, G.gather(1, torch.minimum(pos, last[:, None]))


def rloo_token_advantages(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor,
                          valid: torch.Tensor) -> torch.Tensor:
    """``G_{i,t} - mean_{j != i} H_{j,t}`` (estimator ``rloo_token``): each token's baseline is the
    other samples' reward-to-go *at the same position* (:func:`held_returns_to_go`), a
    time-dependent leave-one-out baseline.

    Why: with token rewards the per-prompt constant of ``grpo``/``rloo`` (the mean *total*) sits
    far from a late token's return-to-go. When the last line earns -1 in almost every sample (a
    wrong answer line) or the rewards are non-negative per token (``reward.preset: rlsf``, where
    the reward still to come shrinks to 0 at the end), every sample's tail gets the same negative
    advantage: noise in expectation, but a steady push away from the sampled end-of-answer
    tokens in a small batch. Here the baseline follows the reward still to come, so a tail that
    every sample shares earns ~0. It never uses sample ``i`` itself, so the gradient stays
    unbiased; with sequence rewards ``H_{j,t} = R_j`` and this is exactly ``rloo``.
    """
    G, H = held_returns_to_go(rewards, mask)
    v = valid.to(rewards.dtype)
    H = H * v[:, None]
    n = group_sum(v, group)
    baseline = (group_sum(H, group) - H) / (n - 1).clamp(min=1)[:, None]
    keep = (valid & (n >= 2)).to(G.dtype)[:, None]
    return (G - baseline) * keep * mask


def grpo_token_advantages(rewards: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, valid: torch.Tensor,
                          eps: float = 1e-6, std_floor: float = 0.0) -> torch.Tensor:
    """:func:`rloo_token_advantages` over the group's root-mean-square of them (estimator
    ``grpo_token``; ``max(rms, std_floor)``), GRPO's per-prompt scale: with sequence rewards this is
    ``(R_i - mean_j R_j) / std_j R_j`` (population std), GRPO up to the ``n / (n - 1)`` of its std."""
    D = rloo_token_advantages(rewards, mask, group, valid)
    s = _group_spread(D, mask, group, valid, group_sum(valid.to(D.dtype), group).clamp(min=1))
    return D / (s.clamp(min=std_floor)[:, None] + eps)


def whiten_across_ranks(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                        std_floor: float = 0.0) -> torch.Tensor:
    """:func:`rlsf.algorithms.core.masked_whiten` over the tokens of every rank's rows (the mean
    and the unbiased variance summed over ranks, in two passes as there), so that each rank's
    advantages are those one process would make from the global batch."""
    n_local = float(mask.sum())
    total, n = distributed.all_sum([float((x * mask).sum()), n_local]).tolist()
    mean = total / max(n, 1.0)
    sq = distributed.all_sum([float((((x - mean) ** 2) * mask).sum())])[0].item()
    var = sq / max(n - 1.0, 1.0)
    return (x - mean) * torch.rsqrt(torch.tensor(max(var, std_floor**2) + eps, dtype=x.dtype)) * mask


def masked_mean_across_ranks(x: torch.Tensor, mask: torch.Tensor) -> float:
    """The mean of ``x`` over the unmasked entries of every rank (0 where there are none)."""
    total, n = distributed.all_sum([float((x * mask).sum()), float(mask.sum())]).tolist()
    return total / max(n, 1.0)


#: Group-baseline advantage estimators by name: ``(rewards, mask, group, valid) -> advantages``.
GROUP_ESTIMATORS = {"grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages, "rloo": rloo_advantages,
                    "rloo_token": rloo_token_advantages, "grpo_token": grpo_token_advantages}
#: Group estimators that take ``std_floor`` (they divide by a per-group spread).
SCALED_ESTIMATORS = ("grpo", "grpo_token")



@dataclass(frozen=True)
class Estimator:
    """A registered advantage estimator. ``kind`` says what it needs besides rewards and mask:
    ``critic``: ``values``, ``gamma`` and ``lam``; ``group``: ``group`` and ``valid``."""

    fn: Callable[..., torch.Tensor]
    kind: str


def _gae_advantages(rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, gamma: float,
                    lam: float) -> torch.Tensor:
    return gae(rewards, values, mask, gamma, lam)[0]


#: Every advantage estimator by name.
ESTIMATORS: dict[str, Estimator] = {"gae": Estimator(_gae_advantages, "critic"),
                                    **{name: Estimator(fn, "group") for name, fn in GROUP_ESTIMATORS.items()}}


def register_estimator(name: str, kind: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator adding an estimator; a ``group`` one becomes a choice of ``grpo.advantage``."""
    if kind not in ("critic", "group"):
        raise ValueError(f"estimator kind must be critic or group, got {kind!r}")

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in ESTIMATORS and ESTIMATORS[name].fn is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ESTIMATORS[name] = Estimator(fn, kind)
        if kind == "group":
            GROUP_ESTIMATORS[name] = fn
        return fn

    return deco
