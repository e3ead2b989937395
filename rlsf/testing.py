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

    from rlsf.testing import check_checker

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

The strategies are public too (:func:`random_text`, :func:`mutations`, :func:`huge_texts`, ...)
for a task's own ``@given`` tests.
"""

from __future__ import annotations

import copy
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - hypothesis is a dev dependency
    raise ImportError("rlsf.testing needs hypothesis: pip install 'rlsf[dev]' (or pip install hypothesis)") from e

from rlsf.feedback.certificate import Certificate, Span

Example = dict[str, Any]
Oracle = Callable[[Example, str], bool]
Pair = tuple[Example, str]

#: Strategy names, in the order they run.
STRATEGIES = ("random_text", "token_soup", "mutation", "non_ascii", "nested", "huge", "blank")

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

HUGE_CHARS = 100_000

# Characters that trip up text handling: NUL, BOM, zero-width and direction marks, Unicode
# whitespace and line breaks, look-alike digits and operators, letters that case-fold to ASCII.
AWKWARD_CHARS = (
    "\x00", "\ufeff", "\u200b", "\u200d", "\u202e", "\xa0", "\u2028", "\u2029", "\u3000", "\x85",
    "\x0b", "\x0c", "\x1c", "\x1f", "\r", "\t", "\x7f",
    "０", "１", "２", "４", "٣", "۴", "४", "²", "₄", "𝟐", "⁴", "½", "Ⅳ",
    "＋", "－", "×", "÷", "−", "–", "·", "∗", "＝", "⁄", "∕",
    "ſ", "K", "İ", "ı", "é", "e\u0301", "ß", "😀", "中",
)

_BLANKS = (" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0",
           "\u1680", "\u2000", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000")
_OPERATOR_CHARS = "+-*/×÷−=^%<>"
_MUTATIONS = (
    "insert_char", "delete_char", "replace_char", "delete_range", "duplicate_range",
    "drop_line", "duplicate_line", "swap_lines", "change_digit", "change_operator", "change_result",
)
_STATED_RE = re.compile(r"=[ \t]*(-?[0-9]{1,30}(?:/[0-9]{1,30})?)")


class CheckerPropertyError(AssertionError):
    """A checker broke one of the harness's properties on some input (the message says which)."""


# ---------------------------------------------------------------------------------------------
# Strategies


def random_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Arbitrary text: full Unicode without surrogates (NUL and control characters included),
    mostly-ASCII text and text made of awkward characters."""
    return st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size),
        st.text(st.characters(max_codepoint=0x7F), max_size=max_size),
        st.lists(st.sampled_from(AWKWARD_CHARS), max_size=max_size // 4).map("".join),
    )


def blank_texts() -> st.SearchStrategy[str]:
    """The empty string and whitespace-only text."""
    return st.one_of(st.just(""), st.lists(st.sampled_from(_BLANKS), min_size=1, max_size=40).map("".join))


def _alphabet(texts: Iterable[str]) -> list[str]:
    return sorted(set("".join(texts)) | set("0123456789()=+-*/:., \n\t"))


def _char(alphabet: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(alphabet), st.sampled_from(AWKWARD_CHARS),
                     st.characters(exclude_categories=("Cs",)))


def _format_value(x: Any) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _mutate_once(draw: Callable[[st.SearchStrategy[Any]], Any], text: str, alphabet: Sequence[str]) -> str:
    kind = draw(st.sampled_from(_MUTATIONS))
    n = len(text)
    lines = text.split("\n")
    if kind == "insert_char" or (n == 0 and kind in ("delete_char", "replace_char", "delete_range",
                                                     "duplicate_range")):
        i = draw(st.integers(0, n))
        return text[:i] + draw(_char(alphabet)) + text[i:]
    if kind == "delete_char":
        i = draw(st.integers(0, n - 1))
        return text[:i] + text[i + 1 :]
    if kind == "replace_char":
        i = draw(st.integers(0, n - 1))
        return text[:i] + draw(_char(alphabet)) + text[i + 1 :]
    if kind in ("delete_range", "duplicate_range"):
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i + 1, min(n, i + 40)))
        return text[:i] + text[j:] if kind == "delete_range" else text[:j] + text[i:j] + text[j:]
    if kind == "drop_line":
        del lines[draw(st.integers(0, len(lines) - 1))]
        return "\n".join(lines)
    if kind == "duplicate_line":
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(draw(st.integers(0, len(lines))), lines[i])
        return "\n".join(lines)
    if kind == "swap_lines":
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    if kind == "change_digit":
        positions = [k for k, c in enumerate(text) if c in "0123456789"]
        if not positions:
            return text + draw(st.sampled_from("0123456789"))
        i = draw(st.sampled_from(positions))
        how = draw(st.sampled_from(("replace", "delete", "insert")))
        digit = draw(st.sampled_from("0123456789".replace(text[i], "")))
        if how == "replace":
            return text[:i] + digit + text[i + 1 :]
        if how == "delete":
            return text[:i] + text[i + 1 :]
        return text[: i + 1] + digit + text[i + 1 :]
    if kind == "change_operator":
        positions = [k for k, c in enumerate(text) if c in _OPERATOR_CHARS]
        if not positions:
            i = draw(st.integers(0, n))
            return text[:i] + draw(st.sampled_from(_OPERATOR_CHARS)) + text[i:]
        i = draw(st.sampled_from(positions))
        return text[:i] + draw(st.sampled_from(_OPERATOR_CHARS.replace(text[i], ""))) + text[i + 1 :]
    # change_result: the number stated after an "=" becomes another number.
    matches = list(_STATED_RE.finditer(text))
    if not matches:
        i = draw(st.integers(0, n))
        return text[:i] + f" = {draw(st.integers(-30, 30))}" + text[i:]
    m = draw(st.sampled_from(matches))
    old = Fraction(m[1])
    delta = draw(st.one_of(st.sampled_from((1, -1, 2, 24, -24)), st.integers(-100, 100).filter(bool)))
    new = draw(st.sampled_from((old + delta, -old if old else old + delta, old * 2 if old else old + delta)))
    return text[: m.start(1)] + _format_value(new) + text[m.end(1) :]


def mutations(text: str, alphabet: Sequence[str] | None = None, max_edits: int = 4) -> st.SearchStrategy[str]:
    """``text`` (a correct completion) after 1 to ``max_edits`` random edits (see module docstring)."""
    chars = list(alphabet) if alphabet is not None else _alphabet([text])

    @st.composite
    def build(draw: Any) -> str:
        out = text
        for _ in range(draw(st.integers(1, max_edits))):
            out = _mutate_once(draw, out, chars)
        return out

    return build()


def non_ascii_insertions(text: str, max_edits: int = 6) -> st.SearchStrategy[str]:
    """``text`` with NUL / non-ASCII characters inserted, or replacing characters (e.g. look-alike digits)."""

    @st.composite
    def build(draw: Any) -> str:
        out = text
        weird = st.one_of(st.sampled_from(AWKWARD_CHARS),
                          st.characters(min_codepoint=0x80, exclude_categories=("Cs",)))
        for _ in range(draw(st.integers(1, max_edits))):
            c = draw(weird)
            i = draw(st.integers(0, len(out)))
            if draw(st.booleans()) and i < len(out):
                out = out[:i] + c + out[i + 1 :]
            else:
                out = out[:i] + c + out[i:]
        return out

    return build()


def nested_texts(text: str) -> st.SearchStrategy[str]:
    """``text`` with hundreds to thousands of nested parentheses or unary minuses spliced in."""

    @st.composite
    def build(draw: Any) -> str:
        depth = draw(st.sampled_from((60, 200, 1_000, 5_000)))
        lines = text.split("\n")
        k = draw(st.integers(0, len(lines) - 1))
        line = lines[k]
        kind = draw(st.sampled_from(("wrap_line", "wrap_after_colon", "open_only", "close_only", "minus",
                                     "chain", "insert")))
        if kind == "wrap_line":
            line = "(" * depth + line + ")" * depth
        elif kind == "wrap_after_colon":
            head, sep, tail = line.partition(":")
            body = tail.strip() if sep else line
            line = (head + sep + " " if sep else "") + "(" * depth + body + ")" * depth
        elif kind == "open_only":
            line = line + "(" * depth
        elif kind == "close_only":
            line = ")" * depth + line
        elif kind == "minus":
            i = draw(st.integers(0, len(line)))
            line = line[:i] + "-" * depth + line[i:]
        elif kind == "chain":
            head, sep, tail = line.partition(":")
            line = (head + sep + " " if sep else "") + "(1+" * depth + "1" + ")" * depth
        else:
            i = draw(st.integers(0, len(line)))
            piece = draw(st.sampled_from(("(", "((", "(-", "-(")))
            line = line[:i] + piece * (depth // len(piece)) + line[i:]
        lines[k] = line
        return "\n".join(lines)

    return build()


def huge_texts(text: str, size: int = HUGE_CHARS) -> st.SearchStrategy[str]:
    """About ``size`` characters built from ``text``: a line repeated, the text repeated, a very
    long line, a very long number, a very long run of blanks."""

    @st.composite
    def build(draw: Any) -> str:
        lines = [line for line in text.split("\n") if line.strip()] or ["x"]
        kind = draw(st.sampled_from(("repeat_line", "repeat_text", "one_line", "long_number", "long_blank",
                                     "long_run")))
        if kind == "repeat_line":
            line = draw(st.sampled_from(lines))
            body = "\n".join([line] * (size // (len(line) + 1) + 1))
            return body + "\n" + text if draw(st.booleans()) else text + "\n" + body
        if kind == "repeat_text":
            return "\n".join([text] * (size // (len(text) + 1) + 1))
        if kind == "one_line":
            joined = " ".join(lines)
            return " ".join([joined] * (size // (len(joined) + 1) + 1))
        i = draw(st.integers(0, len(text)))
        if kind == "long_number":
            run = draw(st.sampled_from(("9", "1", "0"))) * size
        elif kind == "long_blank":
            run = draw(st.sampled_from((" ", "\t", "\n", " \n", "\r\n", "\u3000")))
            run = run * (size // len(run))
        else:
            run = draw(st.sampled_from(("x", "=", "+", "*", "/", ".", "Answer: ", "(left: ", ":"))) * (size // 2)
            run = run[:size]
        return text[:i] + run + text[i:]

    return build()


def token_soup(texts: Sequence[str], max_pieces: int = 40) -> st.SearchStrategy[str]:
    """Characters, words and lines of ``texts`` glued together at random."""
    words = {w for t in texts for w in t.split()}
    lines = {line for t in texts for line in t.split("\n")}
    pieces = sorted(set(_alphabet(texts)) | words | lines)
    glue = st.sampled_from(("", " ", "\n", " = ", ": "))
    return st.lists(st.tuples(st.sampled_from(pieces), glue), max_size=max_pieces).map(
        lambda xs: "".join(p + g for p, g in xs)
    )


def input_strategies(examples: Sequence[Example], correct: Sequence[Pair]) -> dict[str, st.SearchStrategy[Pair]]:
    """Every strategy of the module docstring, as ``name -> strategy of (example, text)``.

    ``correct`` pairs each known-correct completion with its example; text derived from one is
    checked against that example, free text against any of ``examples``.
    """
    if not examples:
        raise ValueError("input_strategies: no examples")
    if not correct:
        raise ValueError("input_strategies: no correct completions to mutate (pass correct_texts)")
    alphabet = _alphabet(t for _, t in correct)
    any_example = st.sampled_from(list(examples))
    seed = st.sampled_from(list(correct))

    def derived(make: Callable[[str], st.SearchStrategy[str]]) -> st.SearchStrategy[Pair]:
        return seed.flatmap(lambda pair: make(pair[1]).map(lambda text: (pair[0], text)))

    texts = [t for _, t in correct][:200]
    return {
        "random_text": st.tuples(any_example, random_text()),
        "token_soup": st.tuples(any_example, token_soup(texts)),
        "mutation": derived(lambda t: mutations(t, alphabet)),
        "non_ascii": derived(non_ascii_insertions),
        "nested": derived(nested_texts),
        "huge": derived(huge_texts),
        "blank": st.tuples(any_example, blank_texts()),
    }


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


__all__ = [
    "AWKWARD_CHARS", "DEFAULT_WEIGHTS", "EXTRA_WEIGHT", "STRATEGIES", "CheckerPropertyError", "HarnessReport", "Oracle",
    "blank_texts", "check_certificate", "check_checker", "huge_texts", "input_strategies", "mutations",
    "nested_texts", "non_ascii_insertions", "random_text", "token_soup",
]
