"""Certificates to token rewards: every step from a checker's certificate to the reward tensor.

:func:`certificate_token_rewards` spreads one certificate over the tokens its spans cover;
:func:`token_reward_tensor` does a batch; :func:`shape_rewards` applies the ``reward`` settings
(token or sequence mode, span weight, failed checks earn nothing); :func:`mix_outcome_scores`
adds an outcome reward model's score on the last token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.offsets import Offsets


def certificate_token_rewards(
    certificate: Certificate,
    offsets: Offsets,
    *,
    mode: str = "token",
    spread_spans: bool = True,
    span_weight: float = 1.0,
) -> list[float]:
    """Per-token rewards of one completion (length ``len(offsets)``) from its certificate."""
    if mode not in ("token", "sequence"):
        raise ValueError(f"reward mode must be 'token' or 'sequence', got {mode!r}")
    n = len(offsets)
    rewards = [0.0] * n
    if n == 0:
        return rewards
    last = n - 1
    rewards[last] += float(certificate.score)
    if mode == "sequence":
        return rewards
    for span in certificate.spans:
        covered = [i for i, (s, e) in enumerate(offsets) if s < span.end and e > span.start and e > s]
        if not covered:  # empty span or past the text: the token at its position, else the last
            covered = [next((i for i, (s, e) in enumerate(offsets) if s <= span.start < e), last)]
        share = span_weight * span.reward / (len(covered) if spread_spans else 1)
        for i in covered:
            rewards[i] += share
    return rewards



def token_reward_tensor(
    certificates: Sequence[Certificate],
    offsets: Sequence[Offsets],
    response_mask: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Stack per-completion rewards into a ``[batch, tokens]`` tensor aligned with ``response_mask``.

    ``offsets[i]`` must have one entry per unmasked token of row ``i`` (the generated tokens,
    end-of-turn included); masked positions get 0.
    """
    import torch

    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    lengths = response_mask.sum(dim=1).tolist()
    for i, (cert, offs) in enumerate(zip(certificates, offsets, strict=True)):
        if len(offs) != int(lengths[i]):
            raise ValueError(f"row {i}: {len(offs)} token offsets but {int(lengths[i])} response tokens")
        r = certificate_token_rewards(cert, offs, **kwargs)
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out



def mix_outcome_scores(rewards: torch.Tensor, response_mask: torch.Tensor, scores: torch.Tensor, *,
                       checker_weight: float = 1.0, score_weight: float = 1.0) -> torch.Tensor:
    """``checker_weight * rewards`` plus ``score_weight * scores[i]`` on row ``i``'s last response
    token: a learned outcome reward model's score beside (or, with ``checker_weight=0``, instead
    of) the checker's token rewards. Rows without response tokens get nothing."""
    import torch

    out = rewards * checker_weight
    lengths = response_mask.sum(1).long()
    rows = torch.nonzero(lengths > 0).squeeze(1)
    out[rows, lengths[rows] - 1] += score_weight * scores.to(out.dtype)[rows]
    return out



def shape_rewards(certificates: Sequence[Certificate], offsets: Sequence[Offsets], response_mask: torch.Tensor,
                  valid: torch.Tensor, reward_cfg) -> torch.Tensor:
    """``[B, R]`` token rewards of a batch under the ``reward`` settings (``reward_cfg``: mode,
    spread_spans, span_weight). A row whose check failed (``valid`` false) gets no reward at all,
    not the zero score of a wrong answer."""
    rewards = token_reward_tensor(certificates, offsets, response_mask, mode=reward_cfg.mode,
                                  spread_spans=reward_cfg.spread_spans, span_weight=reward_cfg.span_weight)
    return rewards * valid[:, None].float()


def with_outcome_scores(rewards: torch.Tensor, response_mask: torch.Tensor, valid: torch.Tensor,
                        scores: torch.Tensor | None, reward_cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """The token rewards under ``reward.checker_weight`` with an outcome reward model's ``scores``
    (``reward.orm``, weighted by ``reward.orm_weight``) on the last token, and what to log. Rows
    whose check failed get no score either. ``scores`` None: no ORM, only the checker's weight."""
    mixed = mix_outcome_scores(rewards, response_mask,
                               (scores if scores is not None else torch.zeros(len(valid))) * valid.float(),
                               checker_weight=reward_cfg.checker_weight, score_weight=reward_cfg.orm_weight)
    stats = {"reward/orm": float(scores[valid].mean())} if scores is not None and valid.any() else {}
    return mixed, stats
