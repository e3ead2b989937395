"""Every checker against the property-based harness (rlsf.tasks.harness) and an independent oracle.

* ``test_checker_properties``: a quick derandomized run (a few hundred inputs per checker).
* ``test_checker_fuzz`` (marker ``fuzz``; ``--runfuzz`` or ``RLSF_RUN_FUZZ=1``, ``-s`` to see the
  counts): at least 10,000 fresh random inputs per checker. ``RLSF_FUZZ_SEED`` replays a run,
  ``RLSF_FUZZ_EXAMPLES`` changes its size.
* Game of 24 completeness: the checker and the oracle accept every solver demonstration and the
  formatting variants the rule allows, and agree exactly on mutations of them.

Both runs go over every task rlsf registers (``rlsf.tasks.available_tasks()``), not over a list:
a task without an entry in ``CHECKERS`` fails. A new task adds one line to ``CHECKERS``: its
name, how to pick examples, its oracle (in ``tests/oracles.py``, sharing no code with the
checker), its verdicts and whether the oracle is exact (then checker and oracle must agree on
every input, not only on certified-correct ones).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlsf.tasks import get_task
from rlsf.tasks.base import Task
from rlsf.tasks.game24 import VERDICTS as GAME24_VERDICTS
from rlsf.tasks.chem import VERDICTS as CHEM_VERDICTS
from rlsf.tasks.math_word import VERDICTS as MATH_VERDICTS
from rlsf.tasks.spoc import VERDICTS as SPOC_VERDICTS
from rlsf.tasks.arith import VERDICTS as ARITH_VERDICTS
from rlsf.tasks.sentiment import VERDICTS as SENTIMENT_VERDICTS
from rlsf.tasks.harness import STRATEGIES, check_checker, mutations, non_ascii_insertions

from oracles import chem_oracle, game24_oracle, math_oracle, spoc_oracle
from oracles import arith_oracle, sentiment_oracle

Example = dict[str, Any]


def game24_examples(task: Task, full: bool) -> list[Example]:
    examples = task.load("train") + task.load("test")
    return examples if full else examples[::30]


def game24_extra(task: Task, examples: list[Example]) -> dict[str, Any]:
    # derivations() is defined below with the other Game of 24 tests; it is looked up at call time.
    return {"grammar": derivations([(ex, task.demonstration(ex)) for ex in examples[::3]])}


def spoc_examples(task: Task, full: bool) -> list[Example]:
    examples = task.load("test")
    return examples[::40] if full else examples[:2]


def spoc_oracle_for(task: Task) -> Callable:
    folder = str(task.testcases_dir())
    return lambda example, text: spoc_oracle(example, text, folder)


def sample_of_test_split(task: Task, full: bool) -> list[Example]:
    examples = task.load("test")
    return examples if full else examples[:: max(1, len(examples) // 20)]


def no_extra(task: Task, examples: list[Example]) -> dict[str, Any]:
    return {}


# (task name, examples(task, full), extra strategies(task, examples), oracle(task), verdicts, oracle is exact,
#  inputs in the quick run, time bound of one check in seconds)
CHECKERS = [
    pytest.param("game24", game24_examples, game24_extra, lambda task: game24_oracle, GAME24_VERDICTS, True, 400, 2.0,
                 id="game24"),
    # Each SPoC check compiles with g++ (~0.5 s) and runs tests: a short quick run; the fuzz run
    # of 10,000 inputs takes hours on 2 cores. A limit hit (time, memory) may take the compile's 40 s.
    pytest.param("spoc", spoc_examples, no_extra, spoc_oracle_for, SPOC_VERDICTS, False, 24, 60.0, id="spoc"),
    # RDKit checks take milliseconds; the oracle compares InChI of every piece of the text.
    *[pytest.param(name, sample_of_test_split, no_extra, lambda task: chem_oracle, CHEM_VERDICTS, False, 400, 5.0, id=name)
      for name in ("molgen", "forward", "retro")],
    *[pytest.param(name, sample_of_test_split, no_extra, lambda task: math_oracle, MATH_VERDICTS, False, 400, 5.0, id=name)
      for name in ("gsm8k", "svamp")],
    # Programmed rewards (Padula & Soemers): both oracles state the whole rule, so they must agree exactly.
    pytest.param("arith", sample_of_test_split, no_extra, lambda task: arith_oracle, ARITH_VERDICTS, True, 400, 2.0,
                 id="arith"),
    pytest.param("sentiment", sample_of_test_split, no_extra, lambda task: sentiment_oracle, SENTIMENT_VERDICTS, True,
                 400, 5.0, id="sentiment"),
]
FIELDS = "name, pick, extra, oracle, verdicts, exact, quick, time_limit"
SPECS = {p.values[0]: p.values for p in CHECKERS}


def registered_tasks() -> list[str]:
    """Every task of rlsf itself (tests register helper tasks of their own: those are not checkers)."""
    from rlsf.tasks import available_tasks

    return sorted(n for n, cls in available_tasks().items() if cls.__module__.startswith("rlsf."))


def spec(name: str) -> tuple:
    if name not in SPECS:
        pytest.fail(f"task {name!r} has no property run: add its oracle (tests/oracles.py) and a line to CHECKERS")
    return SPECS[name]


def test_every_registered_task_has_an_oracle_and_a_property_run() -> None:
    assert set(registered_tasks()) <= set(SPECS), sorted(set(registered_tasks()) - set(SPECS))


@pytest.mark.parametrize("task_name", registered_tasks())
def test_checker_properties(task_name: str) -> None:
    name, pick, extra, oracle, verdicts, exact, quick, time_limit = spec(task_name)
    task = get_task(name)
    with task:
        examples = pick(task, False)
        report = check_checker(task, examples, oracle=oracle(task), verdicts=verdicts, agree=exact, max_examples=quick,
                               extra_strategies=extra(task, examples), time_limit_s=time_limit)
    assert report.total >= quick * 0.95 and set(report.counts) >= {"correct_texts", "mutation"}, report
    if quick >= 400:  # enough inputs for every strategy to come up
        assert set(STRATEGIES) < set(report.counts), report
    assert report.certified_correct["correct_texts"] == report.counts["correct_texts"] > 0


@pytest.mark.fuzz
@pytest.mark.parametrize("task_name", registered_tasks())
def test_checker_fuzz(task_name: str) -> None:
    name, pick, extra, oracle, verdicts, exact, quick, time_limit = spec(task_name)
    task = get_task(name)
    seed = os.environ.get("RLSF_FUZZ_SEED")
    n = int(os.environ.get("RLSF_FUZZ_EXAMPLES", "10500"))
    with task:
        examples = pick(task, True)
        report = check_checker(task, examples, oracle=oracle(task), verdicts=verdicts, agree=exact, max_examples=n,
                               extra_strategies=extra(task, examples), time_limit_s=time_limit, derandomize=False,
                               seed=None if seed is None else int(seed), print_report=True)
    assert report.total >= min(n, 10_000), report


# -- Game of 24: completeness and exact agreement ------------------------------------------------


@pytest.fixture(scope="module")
def game24() -> Task:
    return get_task("game24")


@pytest.fixture(scope="module")
def demonstrations(game24: Task) -> list[tuple[Example, str]]:
    examples = game24.load("train") + game24.load("test")
    return [(ex, demo) for ex in examples if (demo := game24.demonstration(ex)) is not None]


def variants(demo: str) -> dict[str, str]:
    """Ways of writing a correct completion that the rule accepts."""
    *steps, answer = demo.split("\n")
    expr = answer.removeprefix("Answer: ").removesuffix(" = 24")
    unicode_ops = demo.replace(" * ", " × ").replace(" / ", " ÷ ").replace(" - ", " − ")
    compact = "\n".join(
        re.sub(r"^(\d+) ([-+*/]) (\d+) = ", r"\1\2\3=", s) for s in steps
    ) + "\n" + answer
    return {
        "as is": demo,
        "blank lines": "\n\n" + "\n \n".join(demo.split("\n")) + "\n\n\t\n",
        "crlf": demo.replace("\n", "\r\n") + "\r\n",
        "unicode operators": unicode_ops,
        "bold answer": "\n".join(steps + [f"**Answer:** {expr} = 24"]),
        "heading answer": "\n".join(steps + [f"### answer: {expr} = 24."]),
        "no stated value": "\n".join(steps + [f"Answer: {expr}"]),
        "stated twice": "\n".join(steps + [f"ANSWER: {expr} = 24 = 24"]),
        "parenthesised": "\n".join(steps + [f"Answer: ({expr}) = (24)"]),
        "commas in left": re.sub(r"\(left: ([^)]*)\)", lambda m: f"(LEFT:{', '.join(m[1].split())})", demo),
        "compact steps": compact,
        "answer only": answer,
    }


def test_game24_demonstrations_and_variants_are_correct(game24: Task, demonstrations: list) -> None:
    assert len(demonstrations) == 1362
    for ex, demo in demonstrations:
        for label, text in variants(demo).items():
            cert = game24.check(ex, text)
            assert cert.correct and cert.verdict == "correct", f"{label}:\n{cert.explain(text)}"
            assert game24_oracle(ex, text), f"oracle rejects the {label} variant:\n{text}"


@pytest.mark.parametrize(
    "text, correct",
    [
        ("Answer: " + "(" * 48 + "(6 - 4) * (4 + 8)" + ")" * 48, True),  # literal depth 50: the limit
        ("Answer: " + "(" * 49 + "(6 - 4) * (4 + 8)" + ")" * 49, False),
        ("Answer: " + "-" * 48 + "(6 - 4) * (4 + 8)", True),  # 48 minuses + 1 paren: depth 50
        ("Answer: " + "-" * 50 + "(6 - 4) * (4 + 8)", False),
        ("Answer: (6 - 4) * (4 + 000000000008)", True),  # 12 digits
        ("Answer: (6 - 4) * (4 + 0000000000008)", False),  # 13 digits
        ("Answer: (6 - 4) * (4 + 8) = " + "0" * 10 + "24", True),
        ("Answer: (6 - 4) * (4 + 8)" + " " * (500 - 17), True),  # trailing blanks are stripped
        ("Answer: (6 - 4) *" + " " * (500 - 16) + "(4 + 8)", True),  # exactly 500 characters
        ("Answer: (6 - 4) *" + " " * (501 - 16) + "(4 + 8)", False),
        ("Answer: (6 - 4) * (4 + 08) = 024", True),  # leading zeros: decimal integers
        ("Answer: (6 - 4) * (4 + 8) = 24 = 48 / 2 = 24.", True),
        ("Answer: (6 - 4) * (4 + 8) = 48 / (1 + 1) = 25", False),
        ("Answer: (6 - 4)(4 + 8) = 24", False),
        ("Answer: (6 - 4) ** (4 + 8) = 24", False),
        ("Answer: (6 - 4) * (4 + 8) = 24.0", False),  # stated values are integer expressions
        ("Answer: (6 - 4) * (4 + 8) = +24", False),
        ("Answer: (6 - 4) * (4 + 8)\u200b = 24", False),  # zero-width space is not blank
        ("Answer:\u3000(6 - 4) * (4 + 8) = 24\u3000", True),  # ideographic space is
        ("4 + 8 = 12 (left: 4 6 12)\n" + "6 - 4 = 2 (left: 2 12)" + " " * 280 + "\nAnswer: (6 - 4) * (4 + 8)", True),
        ("4 + 8 = 12 (left: 4 6 12)\n" + "6 - 4" + " " * 280 + " = 2 (left: 2 12)\nAnswer: (6 - 4) * (4 + 8)", False),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2.0 (left: 2 12)\nAnswer: (6 - 4) * (4 + 8)", True),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 4/2 (left: 12, 2)\nAnswer: (6 - 4) * (4 + 8)", True),
        ("4 + 8 = 12 (LEFT: 4 6 12)\n6 - 4 = 2 (left: 2 " + "0" * 22 + "12)\nAnswer: (6 - 4) * (4 + 8)", True),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 " + "0" * 23 + "12)\nAnswer: (6 - 4) * (4 + 8)", False),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 1/0)\nAnswer: (6 - 4) * (4 + 8)", False),
        ("4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 ١٢)\nAnswer: (6 - 4) * (4 + 8)", False),  # Arabic digits
        ("4+8=12(left:4 6 12)\r\r\nAnswer: (6 - 4) * (4 + 8)", True),
        ("4 + 8 = 12 (left: 4 6 12) so far\nAnswer: (6 - 4) * (4 + 8)", False),
        ("Anſwer: (6 - 4) * (4 + 8)", False),
        ("Answer: (6 - 4) * (4 + 8)\n\x00", False),  # NUL is not blank
        ("Answer: (6 - 4) * (4 + 8)\n\x1c\x85\u2028", True),  # but these are whitespace
    ],
)
def test_game24_rule_edges(game24: Task, text: str, correct: bool) -> None:
    example = {"id": 0, "numbers": [4, 4, 6, 8], "puzzle": "4 4 6 8"}
    cert = game24.check(example, text)
    assert cert.correct == correct, cert.explain(text)
    assert game24_oracle(example, text) == correct


@st.composite
def mutated_variant(draw: Any, pairs: list[tuple[Example, str]]) -> tuple[Example, str]:
    ex, demo = draw(st.sampled_from(pairs))
    text = draw(st.sampled_from(list(variants(demo).values())))
    text = draw(st.one_of(mutations(text), non_ascii_insertions(text, max_edits=2)))
    return ex, text


def _agreement(game24: Task, strategy, n: int) -> dict[bool, int]:
    """Run ``n`` inputs of ``strategy``: the checker and the oracle must agree exactly on each;
    returns how many each said correct / not correct."""
    agreed = {True: 0, False: 0}

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def agree(pair: tuple[Example, str]) -> None:
        ex, text = pair
        cert = game24.check(ex, text)
        assert cert.correct == game24_oracle(ex, text), cert.explain(text)
        agreed[cert.correct] += 1

    agree()
    return agreed


def test_game24_checker_and_oracle_agree_on_mutations(game24: Task, demonstrations: list) -> None:
    agreed = _agreement(game24, mutated_variant(demonstrations[::7]), 500)
    assert agreed[True] > 20 and agreed[False] > 200, agreed


def _fmt(x: Fraction, style: str) -> str:
    """``x`` as a step-line number in one of several spellings (some of them invalid)."""
    sign = "-" if x < 0 else ""
    x = abs(x)
    if style == "fraction" or (x.denominator != 1 and style == "plain"):
        return f"{sign}{x.numerator}/{x.denominator}"
    if style == "decimal" and 10**6 % x.denominator == 0:
        digits = str(x.numerator * 10**6 // x.denominator).rjust(7, "0")
        return f"{sign}{digits[:-6]}.{digits[-6:].rstrip('0') or '0'}"
    if style == "zeros":
        return f"{sign}00{x.numerator}" + (f"/{x.denominator}" if x.denominator != 1 else "")
    if style == "float":
        return f"{sign}{float(x)!r}"  # e.g. 2.6666666666666665: inexact, so usually wrong
    return f"{sign}{x.numerator}" + (f"/{x.denominator}" if x.denominator != 1 else "")


@st.composite
def derivations(draw: Any, pairs: list[tuple[Example, str]]) -> tuple[Example, str]:
    """Derivations built from the grammar, mostly right, in many spellings: exercises the
    boundary between accepted and rejected text far more often than random edits do."""
    ex, demo = draw(st.sampled_from(pairs))
    state = [Fraction(n) for n in ex["numbers"]]
    styles = st.sampled_from(["plain"] * 6 + ["fraction", "decimal", "zeros", "float"])
    blanks = st.sampled_from(["", " ", " ", " ", "  ", "\t", "\u3000", "\xa0"])
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        if len(state) < 2:
            break
        i, j = draw(st.permutations(range(len(state))))[:2]
        a, b = state[i], state[j]
        op = draw(st.sampled_from("+-*/×÷−"))
        true = {"+": a + b, "-": a - b, "−": a - b, "*": a * b, "×": a * b}.get(op)
        if true is None:
            true = a / b if b else Fraction(0)
        c = true if draw(st.integers(0, 9)) else true + draw(st.sampled_from([1, -1, Fraction(1, 3)]))
        rest = [x for k, x in enumerate(state) if k not in (i, j)] + [c]
        left = list(draw(st.permutations(rest)))
        if not draw(st.integers(0, 9)):
            left = left[1:] if len(left) > 1 else left + [Fraction(1)]
        sep = draw(st.sampled_from([" ", " ", ", ", ",", "  "]))
        word = draw(st.sampled_from(["left", "left", "Left", "LEFT", "lft"]))
        left_text = sep.join(_fmt(x, draw(styles)) for x in left)
        tail = draw(st.sampled_from([f" ({word}: {left_text})", f"({word}:{left_text})", "",
                                     f" ({word}: {left_text}) ok"]))
        s1, s2 = draw(blanks), draw(blanks)
        lines.append(f"{_fmt(a, draw(styles))}{s1}{op}{s2}{_fmt(b, draw(styles))}{draw(blanks)}={draw(blanks)}"
                     f"{_fmt(c, draw(styles))}{tail}")
        state = rest if draw(st.integers(0, 9)) else state
    expr = demo.split("\n")[-1].removeprefix("Answer: ").removesuffix(" = 24")
    wrap = draw(st.sampled_from(["{}", "({})", "--({})", "-(-({}))", "(({}))", "{} + 0", "{} * 1"]))
    stated = draw(st.lists(st.sampled_from(["24", "24", "2 * 12", "(24)", "024", "25", "48/2", "24.", "24.0", "",
                                            "24 (left: 24)", "1/0"]), max_size=3))
    answer = draw(st.sampled_from(["Answer: ", "answer:", "**Answer:** ", "### Answer: ", "Answer "]))
    answer += " = ".join([wrap.format(expr), *stated])
    after = draw(st.sampled_from(["", "", "\n", "\n\n \t", "\nDone.", "\n\x00", "\n\u2028"]))
    return ex, "\n".join(lines + [answer]) + after


def test_game24_checker_and_oracle_agree_on_grammar_derivations(game24: Task, demonstrations: list) -> None:
    agreed = _agreement(game24, derivations(demonstrations[::5]), 400)
    assert agreed[True] > 20 and agreed[False] > 150, agreed
