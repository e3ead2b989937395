"""95% intervals for the change between two evaluations of the same held-out problems.

Both evaluations see the same problems, so the comparison is paired: a problem solved before and
after is no evidence either way, only the problems that changed are. Success is a proportion near
0 on the main job (a few puzzles of 100), where the textbook Wald interval collapses to a point;
:func:`paired_proportion_difference` is Newcombe's hybrid score interval for paired data (method 10
of Newcombe, *Improved confidence intervals for the difference between binomial proportions based
on paired data*, Statistics in Medicine 17, 1998), built from the Wilson intervals of the two
proportions and their correlation. It stays honest at 0 successes (0 of 100 on both sides gives
about [-0.037, +0.037], not [0, 0]). Continuous per-problem figures (a checker's step accuracy)
get the normal interval of the mean paired difference, :func:`paired_mean_difference`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Change:
    """``after - before`` with its interval, over ``n`` paired problems."""

    before: float
    after: float
    low: float
    high: float
    n: int

    @property
    def diff(self) -> float:
        return self.after - self.before

    def as_dict(self) -> dict[str, float]:
        return {"before": self.before, "after": self.after, "change": self.diff, "low": self.low,
                "high": self.high, "n": self.n}

    def __str__(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion (never outside [0, 1], not empty at 0 or n)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need n > 0 and 0 <= successes <= n, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_proportion_difference(before: Sequence[bool], after: Sequence[bool], z: float = Z95) -> Change:
    """Newcombe's method-10 interval of ``mean(after) - mean(before)`` over paired outcomes."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need two equally long, non-empty outcome lists, got {len(before)} and {len(after)}")
    n = len(before)
    both = sum(1 for b, a in zip(before, after) if a and b)
    only_after = sum(1 for b, a in zip(before, after) if a and not b)
    only_before = sum(1 for b, a in zip(before, after) if b and not a)
    neither = n - both - only_after - only_before
    p1, p2 = (both + only_after) / n, (both + only_before) / n  # after, before
    l1, u1 = wilson_interval(both + only_after, n, z)
    l2, u2 = wilson_interval(both + only_before, n, z)
    # The 2x2 table's phi correlation with Newcombe's continuity correction (a positive
    # cross-product difference is shrunk by n/2, down to 0); 0 where a margin is empty.
    margins = (both + only_after) * (only_before + neither) * (both + only_before) * (only_after + neither)
    cross = both * neither - only_after * only_before
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return Change(p2, p1, max(-1.0, low), min(1.0, high), n)


def paired_mean_difference(before: Sequence[float], after: Sequence[float], z: float = Z95) -> Change:
    """The normal interval of the mean of ``after[i] - before[i]`` (sample standard deviation)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need two equally long, non-empty lists, got {len(before)} and {len(after)}")
    n = len(before)
    diffs = [a - b for b, a in zip(before, after)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return Change(sum(before) / n, sum(after) / n, mean - half, mean + half, n)
