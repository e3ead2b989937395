"""Certificates to token rewards: every step from a checker's certificate to the reward tensor.

:func:`certificate_token_rewards` spreads one certificate over the tokens its spans cover;
:func:`token_reward_tensor` does a batch; :func:`shape_rewards` applies the ``reward`` settings
(preset, token or sequence mode, span weight, failed checks earn nothing); :func:`mix_outcome_scores`
adds an outcome reward model's score on the last token.

Two presets (``reward.preset``) turn a certificate into token rewards:

* ``signed`` (default): the score on the last token, each span's signed reward on the tokens it
  covers (errors negative, credit positive). An attempt's total is kept above the no-attempt
  reward by :func:`bounded_total`: totals from ``SQUASH_FROM`` down are squashed monotonically
  into ``(NO_ATTEMPT_REWARD, SQUASH_FROM)``, scaling only the negative token rewards, so however
  many errors an attempt has, it still beats saying nothing. The squash starts low (-2) so that
  the totals of ordinary attempts (a wrong answer line, -1, and a few wrong steps) stay on the
  identity: a squash from -0.5 into (-1, -0.5) compressed every honest Game of 24 attempt to
  about -0.86, differences between one and three wrong steps to under 0.1, and RL lost its
  signal under the KL term and the critic's noise.
* ``rlsf``: the RLSF paper's non-negative form. Tokens an error span covers get 0; every other
  text token a positive reward (``1/n`` each over the ``n`` text tokens, so the total does not grow
  with length); the last token gets ``+1`` only when the completion is correct. rlsf keeps
  ``ATTEMPT_CREDIT`` of each token's reward for every token of an attempt, so an attempt flagged
  everywhere still earns more than silence (the paper's form would give both 0).

A completion that makes no attempt (``certificate.attempted`` false) earns ``NO_ATTEMPT_REWARD``
on its last token under ``signed`` (whatever its certificate's score, ``NO_ATTEMPT_SCORE``) and 0
everywhere under ``rlsf``: strictly the least either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.offsets import Offsets

PRESETS = ("signed", "rlsf")
#: Signed preset: the total reward of a completion that makes no attempt.
NO_ATTEMPT_REWARD = -5.0
#: Signed preset: an attempt's total below this is squashed into (NO_ATTEMPT_REWARD, SQUASH_FROM).
SQUASH_FROM = -2.0
#: rlsf preset: the share of a token's reward an attempt earns even on a flagged token.
ATTEMPT_CREDIT = 0.1


def bounded_total(total: float) -> float:
    """An attempt's total reward under the signed preset: ``total`` itself from ``SQUASH_FROM`` up;
    below, ``SQUASH_FROM - w * d / (d + w)`` with ``d = SQUASH_FROM - total`` and ``w = SQUASH_FROM -
    NO_ATTEMPT_REWARD``: continuous with slope 1 at ``SQUASH_FROM``, increasing, and above
    ``NO_ATTEMPT_REWARD`` for every finite total."""
    if total >= SQUASH_FROM:
        return total
    w = SQUASH_FROM - NO_ATTEMPT_REWARD
    d = SQUASH_FROM - total
    return max(SQUASH_FROM - w * d / (d + w), NO_ATTEMPT_REWARD + 1e-6)


def _covered(span, offsets: Offsets, last: int) -> list[int]:
    covered = [i for i, (s, e) in enumerate(offsets) if s < span.end and e > span.start and e > s]
    # an empty span or one past the text: the token at its position, else the last
    return covered or [next((i for i, (s, e) in enumerate(offsets) if s <= span.start < e), last)]


def certificate_token_rewards(
    certificate: Certificate,
    offsets: Offsets,
    *,
    mode: str = "token",
    spread_spans: bool = True,
    span_weight: float = 1.0,
    preset: str = "signed",
) -> list[float]:
    """Per-token rewards of one completion (length ``len(offsets)``) from its certificate."""
    if mode not in ("token", "sequence"):
        raise ValueError(f"reward mode must be 'token' or 'sequence', got {mode!r}")
    if preset not in PRESETS:
        raise ValueError(f"reward preset must be one of {PRESETS}, got {preset!r}")
    n = len(offsets)
    rewards = [0.0] * n
    if n == 0:
        return rewards
    last = n - 1
    if preset == "rlsf":
        return _rlsf_rewards(certificate, offsets) if certificate.attempted else rewards
    if not certificate.attempted:
        rewards[last] = NO_ATTEMPT_REWARD
        return rewards
    rewards[last] += float(certificate.score)
    if mode == "token":
        for span in certificate.spans:
            covered = _covered(span, offsets, last)
            share = span_weight * span.reward / (len(covered) if spread_spans else 1)
            for i in covered:
                rewards[i] += share
    return _squash(rewards)


def _squash(rewards: list[float]) -> list[float]:
    """Scale the negative token rewards so that the total is :func:`bounded_total` of the total."""
    total = sum(rewards)
    target = bounded_total(total)
    if target == total:
        return rewards
    pos = sum(r for r in rewards if r > 0)
    neg = sum(r for r in rewards if r < 0)  # < target - pos <= 0 here
    k = (target - pos) / neg
    return [r * k if r < 0 else r for r in rewards]


def _rlsf_rewards(certificate: Certificate, offsets: Offsets) -> list[float]:
    n = len(offsets)
    rewards = [0.0] * n
    text = [i for i, (s, e) in enumerate(offsets) if e > s]
    flagged = {i for span in certificate.spans if span.reward < 0 for i in _covered(span, offsets, n - 1)}
    for i in text:
        rewards[i] = (ATTEMPT_CREDIT + (1 - ATTEMPT_CREDIT) * (i not in flagged)) / len(text)
    if not text:  # an attempt with no text (a task that counts silence as an answer): the credit alone
        rewards[n - 1] = ATTEMPT_CREDIT
    if certificate.correct:
        rewards[n - 1] += 1.0
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
    """``[B, R]`` token rewards of a batch under the ``reward`` settings (``reward_cfg``: preset, mode,
    spread_spans, span_weight). A row whose check failed (``valid`` false) gets no reward at all,
    not the zero score of a wrong answer."""
    rewards = token_reward_tensor(certificates, offsets, response_mask, mode=reward_cfg.mode,
                                  spread_spans=reward_cfg.spread_spans, span_weight=reward_cfg.span_weight,
                                  preset=reward_cfg.preset)
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
