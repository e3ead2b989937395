"""The harness's properties and battery: what every checker must satisfy, and the run that checks it.

This module owns :func:`check_certificate` (one check, every property of the package docstring:
no exception, a well-formed certificate, bounded time, an unchanged example, soundness against
the oracle, completeness where asked), :func:`check_checker` (the whole battery: the correct
completions first, then each strategy of :mod:`rlsf.tasks.harness.strategies` under its share
of ``max_examples``) with the default shares, :class:`HarnessReport` and
:class:`CheckerPropertyError`.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Hypothesis is a dev dependency: the package's __init__, which always runs before this module,
# turns its absence into a clear ImportError.
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from rlsf.feedback.certificate import Certificate, Span
from rlsf.tasks.harness.strategies import STRATEGIES, Example, Pair, input_strategies

Oracle = Callable[[Example, str], bool]

#: Share of ``max_examples`` each strategy gets by default (huge inputs are slow to check).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "random_text": 0.15,
    "token_soup": 0.15,
    "mutation": 0.45,
    "non_ascii": 0.12,
    "nested": 0.06,
    "huge": 0.02,
    "blank": 0.05,
}

#: Default weight of each of the task's own strategies (``extra_strategies``).
EXTRA_WEIGHT = 0.15


class CheckerPropertyError(AssertionError):
    """A checker broke one of the harness's properties on some input (the message says which)."""


# ---------------------------------------------------------------------------------------------
# Properties


def _show(text: str, limit: int = 300) -> str:
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r} ... {text[-limit // 2 :]!r} ({len(text)} characters)"


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_certificate(
    task: Any,
    example: Example,
    text: str,
    *,
    oracle: Oracle | None = None,
    agree: bool = False,
    time_limit_s: float = 2.0,
    verdicts: Collection[str] | None = None,
) -> tuple[Certificate, float]:
    """Check ``text`` once and assert every property of the module docstring.

    Returns the certificate and the check's time in seconds; raises :class:`CheckerPropertyError`.
    """
    before = copy.deepcopy(example)

    def fail(problem: str, cert: Any = None) -> CheckerPropertyError:
        where = f"task {getattr(task, 'name', task)!r}, example {example.get('id', '?')!r}, text {_show(text)}"
        detail = ""
        if isinstance(cert, Certificate):
            try:
                detail = "\n" + cert.explain(text)[:2000]
            except Exception as e:  # a broken span must not hide the real problem
                detail = f"\n(certificate: {cert!r:.2000}; explain failed: {e!r})"
        return CheckerPropertyError(f"{problem}\n  {where}{detail}")

    began = time.perf_counter()
    try:
        cert = task.check(example, text)
    except Exception as e:
        raise fail(f"check raised {type(e).__name__}: {e}") from e
    elapsed = time.perf_counter() - began

    if not isinstance(cert, Certificate):
        raise fail(f"check returned {type(cert).__name__}, not a Certificate")
    problems = []
    if not _finite_number(cert.score):
        problems.append(f"score {cert.score!r} is not a finite number")
    if not isinstance(cert.correct, bool):
        problems.append(f"correct {cert.correct!r} is not a bool")
    if cert.failed is not False:
        problems.append(f"failed is {cert.failed!r}: a checker must judge model text, not fail on it")
    if not isinstance(cert.verdict, str) or not cert.verdict:
        problems.append(f"verdict {cert.verdict!r} is not a non-empty string")
    elif verdicts is not None and cert.verdict not in verdicts:
        problems.append(f"verdict {cert.verdict!r} is not one of {sorted(verdicts)}")
    if not isinstance(cert.spans, list):
        problems.append(f"spans is a {type(cert.spans).__name__}, not a list")
    else:
        for s in cert.spans:
            if not isinstance(s, Span) or not all(isinstance(v, int) for v in (s.start, s.end)):
                problems.append(f"span {s!r} is not a Span with integer bounds")
            elif not 0 <= s.start <= s.end <= len(text):
                problems.append(f"span [{s.start}, {s.end}) is outside the text (length {len(text)})")
            elif not _finite_number(s.reward):
                problems.append(f"span [{s.start}, {s.end}) has reward {s.reward!r}")
    if example != before:
        problems.append("check changed the example")
    if elapsed > time_limit_s:  # noisy machines: time it again, fail only if both runs are slow
        again = time.perf_counter()
        task.check(example, text)
        elapsed = min(elapsed, time.perf_counter() - again)
        if elapsed > time_limit_s:
            problems.append(f"check took {elapsed:.2f} s (limit {time_limit_s} s)")
    if problems:
        raise fail("; ".join(problems), cert)
    if oracle is not None and (cert.correct or agree):
        expected = oracle(example, text)
        if cert.correct and not expected:
            raise fail("UNSOUND: the certificate says correct but the independent oracle says not", cert)
        if agree and expected and not cert.correct:
            raise fail(f"INCOMPLETE: the oracle says correct but the certificate says {cert.verdict!r}", cert)
    return cert, elapsed


# ---------------------------------------------------------------------------------------------
# The battery


@dataclass
class HarnessReport:
    """What :func:`check_checker` ran: inputs, certified-correct inputs and time per strategy."""

    task: str
    counts: dict[str, int] = field(default_factory=dict)
    certified_correct: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    verdicts: Counter = field(default_factory=Counter)
    slowest_check_s: float = 0.0
    wall_s: float = 0.0
    seed: int | None = None

    @property
    def total(self) -> int:
        """Inputs checked by the strategies (the correct completions checked first not included)."""
        return sum(n for name, n in self.counts.items() if name != "correct_texts")

    def __str__(self) -> str:
        seed = "derandomized" if self.seed is None else f"seed {self.seed}"
        rows = [f"checker harness for task {self.task!r} ({seed}): {self.total} generated inputs "
                f"in {self.wall_s:.1f} s, slowest check {self.slowest_check_s * 1000:.1f} ms"]
        rows.append(f"  {'strategy':<14}{'inputs':>8}{'correct':>9}{'seconds':>9}")
        for name, n in self.counts.items():
            rows.append(f"  {name:<14}{n:>8}{self.certified_correct.get(name, 0):>9}"
                        f"{self.seconds.get(name, 0.0):>9.1f}")
        rows.append("  verdicts: " + ", ".join(f"{v} {n}" for v, n in self.verdicts.most_common()))
        return "\n".join(rows)


def _budget(total: int, names: Sequence[str], weights: Mapping[str, float]) -> dict[str, int]:
    w = {n: float(weights.get(n, 0.0)) for n in names}
    norm = sum(w.values()) or 1.0
    return {n: max(1, round(total * w[n] / norm)) for n in names if w[n] > 0}


def check_checker(
    task: Any,
    examples: Sequence[Example],
    correct_texts: Iterable[Pair] | None = None,
    oracle: Oracle | None = None,
    *,
    max_examples: int = 500,
    time_limit_s: float = 2.0,
    strategies: Iterable[str] | None = None,
    extra_strategies: Mapping[str, st.SearchStrategy[Pair]] | None = None,
    weights: Mapping[str, float] | None = None,
    agree: bool | Collection[str] = False,
    verdicts: Collection[str] | None = None,
    derandomize: bool = True,
    seed: int | None = None,
    print_report: bool = False,
) -> HarnessReport:
    """Run the whole battery (module docstring) on ``task``'s checker; return the counts.

    Args:
        examples: the examples free text is checked against.
        correct_texts: ``(example, text)`` pairs of correct completions to mutate; by default the
            task's demonstrations of ``examples``. Each is checked first and must be certified
            correct (and accepted by the oracle).
        oracle: ``(example, text) -> bool``, an independent judge of correctness.
        max_examples: inputs in total, shared between strategies by ``weights``.
        time_limit_s: the bound on one check.
        strategies: names to run (default: all of :data:`STRATEGIES`).
        extra_strategies: the task's own generators of ``(example, text)`` (e.g. a grammar of
            nearly-right completions), run after the built-in ones; weight
            :data:`EXTRA_WEIGHT` each unless ``weights`` names them.
        agree: also require the oracle's True to match the certificate (completeness), on every
            strategy (``True``) or on those named.
        verdicts: the verdicts the checker may return, if it declares them.
        derandomize, seed: repeatable runs (default) or fresh random ones (``derandomize=False``;
            ``seed`` makes them reproducible, a random one is drawn and reported otherwise).
    """
    began = time.perf_counter()
    examples = list(examples)
    if correct_texts is None:
        pairs = [(ex, demo) for ex in examples if (demo := task.demonstration(ex)) is not None]
    else:
        pairs = list(correct_texts)
    names = list(STRATEGIES if strategies is None else strategies)
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    extra = dict(extra_strategies or {})
    clash = sorted(set(extra) & {*STRATEGIES, "correct_texts"})
    if clash:
        raise ValueError(f"extra_strategies {clash} clash with built-in names")
    names += list(extra)
    all_weights = {**DEFAULT_WEIGHTS, **{name: EXTRA_WEIGHT for name in extra}, **(weights or {})}
    agree_on = set(names) if agree is True else set(agree or ())
    if not derandomize and seed is None:
        seed = random.SystemRandom().randrange(2**32)
    report = HarnessReport(task=str(getattr(task, "name", task)), seed=None if derandomize else seed)

    def record(name: str, cert: Certificate, elapsed: float) -> None:
        report.counts[name] = report.counts.get(name, 0) + 1
        report.certified_correct[name] = report.certified_correct.get(name, 0) + int(cert.correct)
        report.verdicts[cert.verdict] += 1
        report.slowest_check_s = max(report.slowest_check_s, elapsed)

    # The correct completions themselves: the checker must say correct, and the oracle agree.
    t0 = time.perf_counter()
    for ex, text in pairs:
        cert, elapsed = check_certificate(task, ex, text, oracle=oracle, time_limit_s=time_limit_s,
                                          verdicts=verdicts)
        if not cert.correct:
            raise CheckerPropertyError(
                f"a correct completion is not certified correct (task {report.task!r}, example "
                f"{ex.get('id', '?')!r}):\n{cert.explain(text)[:2000]}"
            )
        if oracle is not None and not oracle(ex, text):
            raise CheckerPropertyError(f"the oracle rejects a correct completion {_show(text)} (example {ex!r})")
        record("correct_texts", cert, elapsed)
    report.seconds["correct_texts"] = time.perf_counter() - t0

    def _runner(name: str, agree_here: bool) -> Callable[[Pair], None]:
        def run_one(pair: Pair) -> None:
            ex, text = pair
            cert, elapsed = check_certificate(task, ex, text, oracle=oracle, agree=agree_here,
                                              time_limit_s=time_limit_s, verdicts=verdicts)
            record(name, cert, elapsed)

        return run_one

    all_strategies = {**input_strategies(examples, pairs), **extra}
    for name, n in _budget(max_examples, names, all_weights).items():
        report.counts[name] = 0

        test = settings(
            max_examples=n,
            deadline=None,
            database=None,
            derandomize=derandomize,
            print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                   HealthCheck.large_base_example],
        )(given(all_strategies[name])(_runner(name, name in agree_on)))
        if not derandomize:
            test = hypothesis_seed(seed)(test)
        t0 = time.perf_counter()
        test()
        report.seconds[name] = time.perf_counter() - t0
    report.wall_s = time.perf_counter() - began
    if print_report:
        print(report)
    return report

