"""A property-based test harness that every task's checker must pass.

A checker turns model text -- any text at all -- into a :class:`~rlsf.feedback.certificate.Certificate`.
This module throws generated text at it with `Hypothesis <https://hypothesis.readthedocs.io>`_
and checks, for every input:

* ``task.check(example, text)`` does not raise and returns a :class:`Certificate`;
* ``score`` is a finite number, ``correct`` a bool, ``failed`` is False, ``verdict`` a non-empty
  string (one of ``verdicts`` when given), every span has ``0 <= start <= end <= len(text)``
  and a finite reward;
* the check takes at most ``time_limit_s`` (measured with :func:`time.perf_counter`; a slow
  check is timed once more and fails only if both runs are slow, since machines are noisy; the
  bound is measured, not enforced: a check that never returns hangs the run);
* the check leaves ``example`` unchanged;
* **soundness**: when the certificate says correct, an independent ``oracle(example, text)``
  agrees. With ``agree=True`` (or a set of strategy names) the oracle must also agree when the
  certificate says *not* correct (completeness, on those strategies).

Inputs come from these strategies (:func:`input_strategies`; each builds ``(example, text)``):

``random_text``
    arbitrary Unicode (surrogate-free; NUL, control and non-ASCII characters included).
``token_soup``
    characters, words and lines of the correct completions glued together at random.
``mutation``
    a correct completion with 1-4 edits: insert / delete / replace a character, delete or
    duplicate a range, drop / duplicate / swap lines, change a digit, change an operator,
    change a stated result (the number after an ``=``).
``non_ascii``
    NUL, BOM, zero-width and non-ASCII characters (look-alike digits, odd whitespace) inserted
    into or replacing characters of a correct completion.
``nested``
    hundreds to thousands of parentheses (balanced or not) or unary minuses in a correct completion.
``huge``
    about 100,000 characters: a valid line repeated, the completion repeated, one very long
    line, a 100,000-digit number, a 100,000-character run of blanks.
``blank``
    the empty string and whitespace-only text (ASCII and Unicode whitespace).

A task adds its own generators with ``extra_strategies`` (a grammar of nearly-right
completions finds boundary bugs that random edits rarely reach).

Plugging in a new task (say a compiler task)::

    from rlsf.tasks.harness import check_checker

    def my_oracle(example, text) -> bool:     # independent of the checker's code!
        ...                                   # e.g. compile and run the tests another way

    def test_my_checker_properties():
        task = get_task("my_task")
        examples = task.load("test")[:20]
        report = check_checker(task, examples, oracle=my_oracle, max_examples=300)
        assert report.total >= 300

or from a plain script::

    with get_task("my_task") as task:         # open()/close() for checkers that need resources
        check_checker(task, task.load("test"), oracle=my_oracle, max_examples=10_000,
                      derandomize=False, print_report=True)

``correct_texts`` defaults to the task's :meth:`~rlsf.tasks.base.Task.demonstration` of each
example; pass ``[(example, text), ...]`` for tasks without demonstrations. Every such text is
itself checked first: the certificate must say correct (and the oracle agree).
``print_report=True`` prints the counts per strategy (the returned :class:`HarnessReport` has
them too); a failure raises :class:`CheckerPropertyError` (an ``AssertionError``) naming the
input, after Hypothesis has shrunk it. ``derandomize=True`` (the default) makes runs repeatable; long fuzz runs pass
``derandomize=False`` and a ``seed`` (printed in the report) to explore new inputs each time.

**The reward ordering** (:func:`reward_ordering`, :mod:`rlsf.tasks.harness.ordering`): no reply,
blank text, prose, a refusal or the prompt restated earn less than any attempt, and a task's known
hacks less than an honest near miss, under every reward preset. It uses the task's
``degenerate_replies``, ``near_misses`` and ``reward_hacks``::

    report = reward_ordering(task, task.load("test")[:20])
    assert report, report.violations

The strategies are public too (:func:`random_text`, :func:`mutations`, :func:`huge_texts`, ...)
for a task's own ``@given`` tests.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401  (checked here: this runs before any module of the package)
except ImportError as e:  # pragma: no cover - hypothesis is a dev dependency
    raise ImportError("rlsf.tasks.harness needs hypothesis: pip install 'rlsf[dev]' (or pip install hypothesis)") from e

from rlsf.tasks.harness.core import (
    DEFAULT_WEIGHTS,
    EXTRA_WEIGHT,
    CheckerPropertyError,
    HarnessReport,
    Oracle,
    check_certificate,
    check_checker,
)
from rlsf.tasks.harness.ordering import OrderingReport, reward_ordering, total_reward
from rlsf.tasks.harness.strategies import (
    AWKWARD_CHARS,
    STRATEGIES,
    blank_texts,
    huge_texts,
    input_strategies,
    mutations,
    nested_texts,
    non_ascii_insertions,
    random_text,
    token_soup,
)

__all__ = [
    "AWKWARD_CHARS", "DEFAULT_WEIGHTS", "EXTRA_WEIGHT", "STRATEGIES", "CheckerPropertyError", "HarnessReport", "Oracle",
    "OrderingReport", "reward_ordering", "total_reward",
    "blank_texts", "check_certificate", "check_checker", "huge_texts", "input_strategies", "mutations",
    "nested_texts", "non_ascii_insertions", "random_text", "token_soup",
]
