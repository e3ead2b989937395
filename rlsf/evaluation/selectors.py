"""Choosing one of k sampled completions of a problem, for the ``SELECTOR@k`` figures.

A selector sees the example, the k completion texts, their certificates and (when an outcome
reward model is loaded, ``eval.orm``) its k scores, and returns the index of the completion it
picks (``None``: it abstains, which counts as a miss). ``maj`` is the majority vote of Havrilla
et al. (maj@k), ``rerank`` their reward-model reranking (rerank@k). Selectors must not read
``correct`` or ``score``: those are what is being measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable

from rlsf.feedback.certificate import Certificate

Selector = Callable[..., "int | None"]  # (example, texts, certificates, scores=None) -> index or None

SELECTORS: dict[str, Selector] = {}


def register_selector(name: str) -> Callable[[Selector], Selector]:
    def deco(fn: Selector) -> Selector:
        if name in SELECTORS and SELECTORS[name] is not fn:
            raise ValueError(f"selector {name!r} is already registered")
        SELECTORS[name] = fn
        return fn

    return deco


@register_selector("maj")
def majority_vote(example: dict[str, Any], texts: Sequence[str], certificates: Sequence[Certificate],
                  scores: Sequence[float] | None = None) -> int | None:
    """The first completion whose canonical answer (``Certificate.answer``) is the most frequent.

    Ties go to the answer seen first; completions without an answer (and failed checks) do not
    vote; ``None`` when none has one.
    """
    answers = [c.answer if not c.failed else None for c in certificates]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


@register_selector("first")
def first_sample(example: dict[str, Any], texts: Sequence[str], certificates: Sequence[Certificate],
                 scores: Sequence[float] | None = None) -> int | None:
    """The first sample: what one draw at the evaluation temperature scores."""
    return 0 if certificates else None


@register_selector("rerank")
def rerank(example: dict[str, Any], texts: Sequence[str], certificates: Sequence[Certificate],
           scores: Sequence[float] | None = None) -> int | None:
    """The sample the outcome reward model scores highest (ties: the first); failed checks are
    passed over (they score 0 in every selector), ``None`` when every check failed."""
    if scores is None:
        raise ValueError("the rerank selector needs outcome reward model scores (eval.orm)")
    best = None
    for i, (s, c) in enumerate(zip(scores, certificates, strict=True)):
        if not c.failed and (best is None or s > scores[best]):
            best = i
    return best
