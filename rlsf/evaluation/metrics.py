"""Metrics over sampled solutions: pass@k (unbiased) and summaries of certificates (votes: :mod:`rlsf.evaluation.selectors`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb

from rlsf.feedback.certificate import Certificate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021):
    ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def certificate_summary(certs: Sequence[Certificate], prefix: str = "feedback/") -> dict[str, float]:
    """Mean of the numeric ``info`` figures and the fraction of each verdict."""
    out: dict[str, float] = {}
    if not certs:
        return out
    sums: dict[str, list[float]] = {}
    for c in certs:
        for k, v in c.info.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                sums.setdefault(k, []).append(float(v))
    for k, vs in sums.items():
        out[f"{prefix}{k}"] = sum(vs) / len(vs)
    for verdict, n in Counter(c.verdict for c in certs).items():
        out[f"{prefix}verdict/{verdict}"] = n / len(certs)
    return out


def answer_mode_share(certs: Sequence[Certificate]) -> float:
    """Share of the completions whose canonical answer (``Certificate.answer``) is the most common
    one: 1.0 when every completion gives the same answer (the collapse Padula & Soemers report),
    1/n when all differ. Completions without an answer, and failed checks, count as all different."""
    if not certs:
        return 0.0
    counts = Counter(c.answer for c in certs if c.answer is not None and not c.failed)
    return (max(counts.values()) if counts else 1) / len(certs)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams over all word n-grams of ``texts`` together;
    falls as completions repeat one another (text collapse, where there is no single answer)."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def opening_share(texts: Sequence[str], words: int = 3) -> float:
    """Share of ``texts`` opening with the most common first ``words`` words (case-folded): 1.0 when
    every completion starts alike ("I'm glad you're ..."), about 1/n when all differ."""
    if not texts:
        return 0.0
    return max(Counter(tuple(t.lower().split()[:words]) for t in texts).values()) / len(texts)
