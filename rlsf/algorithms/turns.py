"""Credit over self-repair episodes: advantages of every sampled token of a multi-turn row.

An episode's row is ``[attempt 1 | feedback 1 | attempt 2 | ...]`` with ``turn`` numbering the
sampled tokens (0 on the feedback: :mod:`rlsf.rollout.episodes`). The estimators of
:mod:`rlsf.algorithms.advantages` work on rows whose tokens are contiguous, so an episode is first
*compacted*: its sampled tokens gathered to the left, in order (:func:`compact`); advantages made
there are put back at their columns (:func:`expand`), 0 on the feedback.

The return of a token in turn ``u`` is the reward still to come in its own turn plus
``turn_discount`` times the return of turn ``u + 1`` from its first token (``rollout.turn_discount``
= d)::

    G_t = r_t + gamma_t G_{t+1},   gamma_t = gamma       within a turn
                                   gamma_t = gamma * d   at the last token of a turn a later turn follows

so the final outcome reaches turn ``t`` of ``T`` discounted by ``d^(T-t)``; d = 1 is the whole
episode's return, d = 0 every turn on its own. The critic estimator (GAE) takes ``gamma_t``
directly (:func:`turn_factors`). The group estimators compute plain returns-to-go; for them the
rewards are rewritten so that plain returns-to-go equal the discounted ones exactly
(:func:`discounted_rewards`): ``r'_t = G_t - G_{t+1}``. A group estimator (a user's too) thus
sees each episode's discounted return without taking a discount argument.

Which estimators stay unbiased over episodes, with per-prompt groups whose episodes differ in
length and number of turns: ``rloo`` (leave-one-out baseline) and ``rloo_token`` (the other
samples' return-to-go at the same compacted position) use nothing of the sample itself, so the
policy gradient is unbiased; ``dr_grpo`` includes the sample in its group mean (unbiased up to a
factor (n-1)/n); ``grpo`` and ``grpo_token`` also divide by a spread that depends on the sample
(the usual GRPO bias); ``gae`` is as biased as its critic. The loss is a token mean over the
minibatch, so every sampled token weighs the same whatever its episode's length or number of
turns: an episode that stopped early is not favoured by a per-episode normalisation
(``tests/test_turns.py`` checks both).
"""

from __future__ import annotations

import torch

from rlsf.algorithms.advantages import returns_to_go


def compact(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's entries where ``mask`` is set, gathered to the left in order: ``(x_c, columns,
    mask_c)``, ``[B, T_c]`` with ``T_c`` the most set entries of a row; ``columns`` are their
    columns in ``x`` (0 on padding)."""
    keep = mask > 0
    T = int(keep.sum(1).max()) if keep.numel() else 0
    # Stable order: set entries first, by column.
    pos = torch.arange(x.shape[1], device=x.device).expand_as(keep)
    order = torch.where(keep, pos, pos + x.shape[1]).argsort(1)[:, :T]
    cmask = torch.gather(keep, 1, order)
    columns = order * cmask
    return torch.gather(x, 1, order) * cmask.to(x.dtype), columns, cmask.to(mask.dtype)


def expand(xc: torch.Tensor, columns: torch.Tensor, cmask: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of :func:`compact`: ``xc`` back at its columns of a ``[B, width]`` row, 0 elsewhere."""
    out = torch.zeros((xc.shape[0], width), dtype=xc.dtype, device=xc.device)
    return out.scatter_add(1, columns, xc * cmask.to(xc.dtype))


def turn_factors(turn_c: torch.Tensor, mask_c: torch.Tensor, gamma: float, turn_discount: float) -> torch.Tensor:
    """``gamma_t`` of the compacted tokens (module docstring): ``gamma``, times ``turn_discount`` where
    the next token belongs to a later turn."""
    nxt = torch.nn.functional.pad(turn_c[:, 1:], (0, 1))
    nxt_mask = torch.nn.functional.pad(mask_c[:, 1:], (0, 1)) > 0
    boundary = nxt_mask & (nxt != turn_c)
    return torch.where(boundary, gamma * turn_discount, gamma) * torch.ones_like(turn_c, dtype=torch.float32)


def discounted_rewards(rewards: torch.Tensor, mask: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rewards whose plain returns-to-go are the returns-to-go of ``rewards`` under the per-token
    discount ``factors``: ``r'_t = G_t - G_{t+1}`` (exact; the two agree on every token)."""
    G = returns_to_go(rewards, mask, factors)
    nxt = torch.nn.functional.pad(G[:, 1:] * mask[:, 1:], (0, 1))
    return (G - nxt) * mask


class EpisodeView:
    """The compacted sampled tokens of a batch of episodes (module docstring), with the turn factors."""

    def __init__(self, mask: torch.Tensor, turn: torch.Tensor, gamma: float = 1.0, turn_discount: float = 1.0) -> None:
        self.width = mask.shape[1]
        turn_c, self.columns, self.mask = compact(turn, mask)
        self.factors = turn_factors(turn_c, self.mask, gamma, turn_discount)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, R]`` -> the compacted ``[B, T_c]``."""
        return torch.gather(x, 1, self.columns) * self.mask.to(x.dtype)

    def expand(self, xc: torch.Tensor) -> torch.Tensor:
        """The compacted ``[B, T_c]`` -> ``[B, R]`` (0 on feedback and padding)."""
        return expand(xc, self.columns, self.mask, self.width)

    def group_rewards(self, rewards: torch.Tensor) -> torch.Tensor:
        """The compacted rewards rewritten for the group estimators (:func:`discounted_rewards`)."""
        return discounted_rewards(self.gather(rewards), self.mask.float(), self.factors)


def group_advantages(estimator, exp, turn_discount: float, **kw) -> torch.Tensor:
    """A group estimator's advantages of ``exp`` (an :class:`~rlsf.experience.Experience`): on its rows
    as they are, or for episodes on their compacted sampled tokens with the turn-discounted rewards."""
    if exp.turn is None:
        return estimator(exp.rewards, exp.generated_mask, exp.group, exp.valid, **kw)
    view = EpisodeView(exp.generated_mask, exp.turn, 1.0, turn_discount)
    return view.expand(estimator(view.group_rewards(exp.rewards), view.mask.float(), exp.group, exp.valid, **kw))

