"""The paired 95% intervals of the pipeline's before/after comparison (rlsf.evaluation.intervals)."""

import math
import random

import pytest

from rlsf.evaluation.intervals import paired_mean_difference, paired_proportion_difference, wilson_interval


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 100)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(0, 100)[1] == pytest.approx(0.0370, abs=1e-4)  # the "rule of 3.7" at n = 100
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_no_successes_either_side_is_not_a_point() -> None:
    c = paired_proportion_difference([False] * 100, [False] * 100)
    assert c.diff == 0.0 and c.low == pytest.approx(-0.0370, abs=1e-4) and c.high == pytest.approx(0.0370, abs=1e-4)


def test_paired_interval_is_narrower_for_concordant_pairs() -> None:
    # The same 20 problems solved before and after (concordant) against 20 different ones each side.
    same = paired_proportion_difference([True] * 20 + [False] * 80, [True] * 20 + [False] * 80)
    swapped = paired_proportion_difference([True] * 20 + [False] * 80, [False] * 20 + [True] * 20 + [False] * 60)
    assert same.diff == swapped.diff == 0.0
    assert same.high - same.low < swapped.high - swapped.low
    gain = paired_proportion_difference([False] * 100, [True] * 10 + [False] * 90)
    assert gain.diff == pytest.approx(0.1) and 0.0 < gain.low < 0.1 < gain.high


def test_paired_interval_covers_the_true_difference_about_95_percent() -> None:
    rng = random.Random(0)
    # before succeeds with 0.10, after with 0.15, correlated through a shared per-problem draw.
    hits, trials, n = 0, 1500, 100
    for _ in range(trials):
        before, after = [], []
        for _ in range(n):
            u = rng.random()
            before.append(u < 0.10)
            after.append(u < 0.12 or (0.5 < u < 0.53))
        c = paired_proportion_difference(before, after)
        hits += c.low <= 0.05 <= c.high
    assert 0.92 <= hits / trials <= 0.99


def test_paired_mean_difference() -> None:
    c = paired_mean_difference([0.5, 0.5, 0.5, 0.5], [0.6, 0.7, 0.6, 0.7])
    sd = math.sqrt(sum((d - 0.15) ** 2 for d in (0.1, 0.2, 0.1, 0.2)) / 3)
    assert c.diff == pytest.approx(0.15) and c.high - c.diff == pytest.approx(1.959964 * sd / 2, rel=1e-5)
    with pytest.raises(ValueError):
        paired_mean_difference([1.0], [1.0, 2.0])
