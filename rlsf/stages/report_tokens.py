"""The run report's tokens (:mod:`rlsf.stages.report`): a stored completion cut into tokens, each
with the reward training gives it.

The samples file of an evaluation keeps each completion's text and certificate, not its token ids.
The text is cut again, by the run's own tokenizer (its ids decoded into exact character ranges by
:class:`rlsf.feedback.offsets.Detokenizer`, as ``rlsf check --tokens`` does) or into word pieces,
and the certificate is spread over those pieces by
:func:`rlsf.feedback.rewards.certificate_token_rewards` under the run's reward settings. Every
completion ends with the end-of-turn token (an empty range at the end), where the score goes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rlsf.feedback.certificate import Certificate, Span

Offsets = list[tuple[int, int]]
_WORD = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def word_offsets(text: str) -> Offsets:
    """Word pieces of ``text``, each word or punctuation mark with the whitespace before it (the
    way BPE tokens carry their leading space); together they are the text."""
    return [m.span() for m in _WORD.finditer(text)]


def token_rewards(cert: Certificate, offsets: Offsets, reward: dict[str, Any]) -> list[tuple[int, int, float, str]]:
    """``(start, end, reward, message)`` per token: the reward training gives it (``reward``: the
    run's ``preset``, ``mode``, ``spread_spans`` and ``span_weight``) and the message of the
    certificate's span it falls in (the end-of-turn token, ``start == end``: the verdict and
    score). ``rlsf check --tokens`` prints the same rows."""
    from rlsf.feedback.rewards import certificate_token_rewards

    rewards = certificate_token_rewards(cert, offsets, mode=reward["mode"], spread_spans=reward["spread_spans"],
                                        span_weight=reward["span_weight"], preset=reward["preset"])
    out = []
    for (s, e), r in zip(offsets, rewards):
        if e > s:
            span = next((sp for sp in cert.spans if sp.start < e and sp.end > s), None)
            message = span.message if span is not None and r != 0 else ""
        else:
            message = f"{cert.verdict}, score {cert.score:+.3f}"
        out.append((s, e, r, message))
    return out


def merged(tokens: list[tuple[int, int, float, str]]) -> list[tuple[int, int, float, str]]:
    """The rows of :func:`token_rewards` as the page shows them: tokens whose character ranges
    overlap (one character's bytes split over several tokens share its range) as one piece, their
    rewards summed, so that the pieces spell the text once."""
    out: list[tuple[int, int, float, str]] = []
    for s, e, r, message in tokens:
        if out and e > s and s < out[-1][1]:
            ps, pe, pr, pm = out[-1]
            out[-1] = (ps, max(pe, e), pr + r, pm or message)
        else:
            out.append((s, e, r, message))
    return out


def certificate_of(data: dict[str, Any]) -> Certificate:
    """A certificate from its ``to_dict`` form (a samples file's ``certificate``; a missing score
    and verdict read as 0 and ``unknown``)."""
    fields = {"score": 0.0, "verdict": "unknown",
              **{k: v for k, v in data.items() if k in Certificate.__dataclass_fields__}}
    fields["spans"] = [Span(**{k: v for k, v in s.items() if k in Span.__dataclass_fields__})
                       for s in data.get("spans") or []]
    return Certificate(**fields)


class Tokens:
    """How completions are cut: by the tokenizer in ``folder`` (loading it may raise), or into
    word pieces (``folder`` None). ``mismatched`` counts the completions the tokenizer does not
    reproduce exactly, which are cut into word pieces instead."""

    def __init__(self, folder: Path | None = None) -> None:
        self.tokenizer = self.detokenizer = None
        self.source, self.mismatched = "word pieces", 0
        if folder is not None:
            from rlsf.feedback.offsets import Detokenizer
            from rlsf.models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(folder)
            self.detokenizer = Detokenizer.from_tokenizer(self.tokenizer)
            self.source = f"the tokenizer of {folder}"

    def offsets(self, text: str) -> Offsets:
        """Each token's character range, then the end-of-turn token's empty one at the end."""
        if self.tokenizer is not None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            decoded, offsets = self.detokenizer.text_and_offsets(ids)
            if decoded == text and _tiles(offsets, len(text)):
                return [*offsets, (len(text), len(text))]
            self.mismatched += 1  # its tokens would not show the text itself
        return [*word_offsets(text), (len(text), len(text))]


def _tiles(offsets: Offsets, n: int) -> bool:
    """Whether the ranges, overlapping ones taken together (:func:`merged`), cover ``[0, n)`` in order."""
    end = 0
    for s, e in offsets:
        if e > s:
            if s > end or e < end:
                return False
            end = e
    return end == n
