"""Certificates to token-level rewards, for the exact token ids that were sampled.

The checker judges the *text* of a completion; the update needs a reward per *token*. The text
and the character range of every token are both derived from the sampled ids by decoding
prefixes of those ids (never by re-tokenising the text, which may split differently):
token ``i`` covers the characters that ``decode(ids[:i+1])`` adds to ``decode(ids[:i])``.

A token holding only part of a multi-byte character adds no complete character; it is given
the range of the character it helps to complete, so a span over that character reaches every
token carrying its bytes. Special tokens (end of turn) cover no characters.

Reward modes (``reward.mode``):

* ``sequence``: ``r[last] = score``, every other token 0 -- the scalar baseline.
* ``token`` (RLSF): ``r[last] = score`` plus, for every span, its reward on the tokens it covers.
  With ``spread_spans`` each of the ``n`` covered tokens gets ``reward / n`` (a span's total
  does not depend on tokenisation); otherwise each gets the full ``reward``.

``last`` is the final generated token (the end-of-turn token when one was sampled, else the
token where the length limit cut the completion). A span that covers no token -- empty, or
past the text -- gives its reward to the token at its position, or to the last token, so no
feedback is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlsf.feedback.certificate import Certificate

Offsets = list[tuple[int, int]]


DECODE_KW = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)


def completion_text(tokenizer, token_ids: Sequence[int]) -> str:
    """The text a checker judges for these sampled ids (special tokens such as end of turn dropped)."""
    return tokenizer.decode([int(t) for t in token_ids], **DECODE_KW)


def decode_with_offsets(tokenizer, token_ids: Sequence[int]) -> tuple[str, Offsets]:
    """Return the decoded text of ``token_ids`` and each token's ``[start, end)`` character range.

    Costs one decode per token (quadratic in length, fine for completions of a few hundred
    tokens) and is exact for any tokenizer whose decode of a prefix is a prefix of the whole.
    """
    ids = [int(t) for t in token_ids]
    kw = DECODE_KW
    text = completion_text(tokenizer, ids)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ends: list[int] = []
    prev = 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[: i + 1], **kw)
        # Longest common prefix with the full text: a trailing partial character decodes to
        # U+FFFD and is not counted until the token that completes it.
        n = min(len(prefix), len(text))
        j = 0
        while j < n and prefix[j] == text[j]:
            j += 1
        prev = max(prev, j)
        ends.append(prev)
    offsets: Offsets = []
    start = 0
    for end in ends:
        offsets.append((start, end))
        start = end
    # Tokens carrying part of a multi-byte character: give them that character's range.
    for i in range(len(offsets) - 1, -1, -1):
        s, e = offsets[i]
        if s == e and ids[i] not in special:
            nxt = next((offsets[k] for k in range(i + 1, len(offsets)) if offsets[k][1] > offsets[k][0]), None)
            if nxt is not None and nxt[0] == s:
                offsets[i] = (s, nxt[1])
    return text, offsets


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
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    lengths = response_mask.sum(dim=1).tolist()
    for i, (cert, offs) in enumerate(zip(certificates, offsets, strict=True)):
        if len(offs) != int(lengths[i]):
            raise ValueError(f"row {i}: {len(offs)} token offsets but {int(lengths[i])} response tokens")
        r = certificate_token_rewards(cert, offs, **kwargs)
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out
