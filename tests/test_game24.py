"""Game of 24: data loading, the exact step checker, the solver and robustness to any text."""

from __future__ import annotations

import random
import time
from fractions import Fraction
from pathlib import Path

import pytest

from rlsf.feedback.certificate import Certificate
from rlsf.tasks import TaskError, get_task
from rlsf.tasks.base import DATA_ENV
from rlsf.tasks.game24 import VERDICTS, ExpressionError, Game24, parse_expression, solve

PUZZLE = {"id": 0, "numbers": [4, 4, 6, 8], "puzzle": "4 4 6 8"}
GOOD_STEPS = ["4 + 8 = 12 (left: 4 6 12)", "6 - 4 = 2 (left: 2 12)", "2 * 12 = 24 (left: 24)"]
GOOD_ANSWER = "Answer: (6 - 4) * (4 + 8) = 24"


@pytest.fixture(scope="module")
def task() -> Game24:
    # The task's own data resolution: $RLSF_DATA_DIR, else the copy in tree-of-thoughts-llm.
    t = get_task("game24")
    assert isinstance(t, Game24)
    return t


def line_span(completion: str, line: str) -> tuple[int, int]:
    start = completion.index(line)
    return start, start + len(line)


def the_error(cert: Certificate) -> object:
    errors = cert.errors()
    assert len(errors) == 1, errors
    return errors[0]


# -- data ---------------------------------------------------------------------------------------


def test_splits(task: Game24) -> None:
    train, test = task.load("train"), task.load("test")
    assert len(test) == 100 and len(train) == 1262
    assert [e["id"] for e in test] == list(range(901, 1001))  # Rank is 1-based, rows 900-999
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    first = train[0]
    assert first == {"id": 1, "numbers": [1, 1, 4, 6], "puzzle": "1 1 4 6"}
    first["numbers"].append(99)  # callers mutating examples must not corrupt the cache
    assert task.load("train")[0]["numbers"] == [1, 1, 4, 6]


def test_default_data_path_uses_tot_package(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tot", reason="tree-of-thoughts-llm not installed")
    monkeypatch.delenv(DATA_ENV, raising=False)
    task = get_task("game24")
    assert task.csv_path().parts[-4:] == ("tot", "data", "24", "24.csv")
    assert len(task.load("test")) == 100


def test_bad_split_and_options(task: Game24) -> None:
    with pytest.raises(TaskError, match="split"):
        task.load("validation")
    with pytest.raises(TaskError, match="unknown option"):
        get_task("game24", nonsense=1)
    with pytest.raises(TaskError, match="test_start"):
        get_task("game24", test_start=10, test_end=5)
    with pytest.raises(TaskError, match="step_error_reward"):
        get_task("game24", step_error_reward=0.5)
    with pytest.raises(TaskError, match="test_end"):
        get_task("game24", test_end=5000).load("test")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(TaskError, match="nope.csv"):
        get_task("game24", data_path=str(missing)).load("train")


@pytest.mark.parametrize(
    "row, bad",
    [("3,1 2 3,4.5,99%", "1 2 3"), ("3,1 2 x 4,4.5,99%", "1 2 x 4"), ("3", "missing Puzzles")],
)
def test_malformed_row(tmp_path: Path, row: str, bad: str) -> None:
    path = tmp_path / "24.csv"
    path.write_text(f"Rank,Puzzles,AMT (s),Solved rate\n1,1 1 4 6,4.4,99%\n2,1 1 11 11,4.4,99%\n{row}\n")
    with pytest.raises(TaskError) as e:
        get_task("game24", data_path=str(path)).load("train")
    assert "line 4" in str(e.value) and bad in str(e.value) and str(path) in str(e.value)


# -- prompt, solver, parser ---------------------------------------------------------------------


def test_prompt_is_short(task: Game24) -> None:
    system, user = task.prompt(PUZZLE)
    assert system["role"] == "system" and "Answer:" in system["content"]
    assert user["role"] == "user" and user["content"] == "Input: 4 4 6 8"
    assert len(system["content"].split()) + len(user["content"].split()) < 50


def test_solver_examples() -> None:
    lines = solve([4, 4, 6, 8])
    assert lines is not None and lines[-1].startswith("Answer:") and lines[-2].endswith("(left: 24)")
    assert solve([4, 4, 6, 8]) == lines  # deterministic
    frac = solve([3, 3, 8, 8])  # needs 8 / (3 - 8/3)
    assert frac is not None and any("8/3" in line for line in frac)
    assert solve([1, 1, 1, 1]) is None


def test_every_demonstration_passes_the_checker(task: Game24) -> None:
    examples = task.load("train") + task.load("test")
    unsolvable = []
    for ex in examples:
        demo = task.demonstration(ex)
        if demo is None:
            unsolvable.append(ex["puzzle"])
            continue
        cert = task.check(ex, demo)
        assert cert.correct and cert.verdict == "correct" and not cert.errors(), cert.explain(demo)
        assert cert.info["steps"] == cert.info["steps_correct"] == 3
    assert len(examples) == 1362 and unsolvable == []


def test_parse_expression() -> None:
    assert parse_expression("8 / (3 - 8 / 3)") == 24
    assert parse_expression("-(1 - 5) * 6") == 24
    assert parse_expression("2 × 12") == 24 and parse_expression("48 ÷ 2") == 24
    assert parse_expression("1 - 2 - 3") == -4 and parse_expression("1 / 2 / 4") == Fraction(1, 8)
    nested = "(" * 200 + "1" + ")" * 200
    for bad in ["", "1 +", "(1 + 2", "1 ** 2", "1.5 * 16", "2^3", "1/0", nested, "9" * 20]:
        with pytest.raises(ExpressionError):
            parse_expression(bad)


# -- checker ------------------------------------------------------------------------------------


def test_correct_completion(task: Game24) -> None:
    completion = "\n".join(GOOD_STEPS + [GOOD_ANSWER]) + "\n"
    cert = task.check(PUZZLE, completion)
    assert cert.correct and cert.verdict == "correct" and cert.score == 1.0
    assert cert.answer == "(6-4)*(4+8)"
    assert cert.info == {"steps": 3, "steps_correct": 3, "step_accuracy": 1.0}
    assert [completion[s.start : s.end] for s in cert.spans] == GOOD_STEPS
    assert all(s.reward == pytest.approx(0.1) for s in cert.spans)
    assert cert.spans[0].message == "4 + 8 = 12 correct"


def test_answer_alone_and_tolerated_formatting(task: Game24) -> None:
    for text in ["Answer: (6-4)*(4+8) = 24", "**Answer:** (6 − 4) × (4 + 8) = 24", "answer: (6-4)*(4+8)."]:
        cert = task.check(PUZZLE, text)
        assert cert.correct and not cert.spans, cert.explain(text)
    # Compact steps, CRLF line ends and blank lines (before and after the answer) are fine.
    completion = (
        "4+8=12 (left: 4 6 12)\r\n\n6-4=2 (left: 2, 12)\r\n2*12=24 (left: 24)\r\n"
        "Answer: (6-4)*(4+8)\r\n \n\t\n"
    )
    cert = task.check(PUZZLE, completion)
    assert cert.correct and cert.info["steps_correct"] == 3 and not cert.errors(), cert.explain(completion)
    assert completion[cert.spans[0].start : cert.spans[0].end] == "4+8=12 (left: 4 6 12)"


@pytest.mark.parametrize(
    "steps, bad_line, fragment",
    [
        (["4 + 8 = 13 (left: 4 6 13)"], 0, "4 + 8 is 12, not 13"),
        (["5 + 8 = 13 (left: 4 6 13)"], 0, "operand 5 is not available (left: 4 4 6 8)"),
        (["4 + 8 = 12 (left: 4 6 12)", "12 + 12 = 24 (left: 4 6 24)"], 1, "operand 12 is used twice"),
        (["4 + 8 = 12 (left: 4 6 13)"], 0, "left should be 4 6 12, not 4 6 13"),
        (["4 + 8 = 12"], 0, "missing (left: ...) list"),
        (["4 + 8 = 12 (left: four six 12)"], 0, "cannot parse left list"),
        (["Let's think step by step."], 0, "cannot parse step"),
        (["5 + 8 = 13 (left: 4 6 13)", "4 + 6 = 10 (left: 10 13)"], 0, "operand 5 is not available"),
        (["4 - 4 = 0 (left: 0 6 8)", "6 / 0 = 0 (left: 0 8)"], 1, "6 / 0 divides by zero"),
        ([*GOOD_STEPS, "24 + 0 = 24 (left: 24)"], 3, "operand 0 is not available (left: 24)"),
    ],
)
def test_wrong_steps(task: Game24, steps: list[str], bad_line: int, fragment: str) -> None:
    completion = "\n".join(steps + ["Answer: (6 - 4) * (4 + 8) = 24"])
    cert = task.check(PUZZLE, completion)
    error = the_error(cert)
    assert fragment in error.message and error.reward == pytest.approx(-0.5)
    assert (error.start, error.end) == line_span(completion, steps[bad_line])
    # The answer is right but a step before it is not: not correct, and only the step is an error.
    assert not cert.correct and cert.verdict == "wrong_step" and cert.score == 0.0
    assert cert.answer == "(6-4)*(4+8)" and cert.info["steps_correct"] == len(steps) - 1


def test_checker_continues_from_claimed_left_list(task: Game24) -> None:
    # Step 1 is wrong (4 + 8 is not 13) but the claimed state 4 6 13 is then used: 13 - 6 = 7 is
    # judged correct on its own, while 12 - 6 would be "not available".
    completion = "4 + 8 = 13 (left: 4 6 13)\n13 - 6 = 7 (left: 4 7)\n12 - 6 = 6 (left: 4 6)\nAnswer: 1"
    cert = task.check(PUZZLE, completion)
    steps = sorted(cert.spans, key=lambda s: s.start)[:3]
    assert [s.reward > 0 for s in steps[:3]] == [False, True, False]
    assert "operand 12 is not available (left: 4 7)" in steps[2].message
    # An unparsable step leaves the true state unchanged.
    cert = task.check(PUZZLE, "garbage\n4 + 4 = 8 (left: 6 8 8)\nAnswer: 1")
    assert [s.reward > 0 for s in sorted(cert.spans, key=lambda s: s.start)[:2]] == [False, True]


@pytest.mark.parametrize(
    "answer, verdict, fragment",
    [
        ("Answer: 4 * 6 * 8 / 8 = 24", "wrong_answer", "uses numbers 4 6 8 8 but the puzzle is 4 4 6 8"),
        ("Answer: (6 - 4) * (8 + 8) = 24", "wrong_answer", "extra: 8; missing: 4"),
        ("Answer: 4 + 4 + 6 + 8 = 24", "wrong_answer", "evaluates to 22, not 24"),
        ("Answer: 8 / (4 - 4) * 6 = 24", "wrong_answer", "division by zero"),
        ("Answer: 4 * 6 * (8 / 8) = 24", "wrong_answer", "uses numbers 4 6 8 8"),
        ("Answer: (6 - 4) * (4 + 8 = 24", "unparsable_answer", "cannot parse answer"),
        ("Answer: 6 * 4 ^ 4 - 8 = 24", "unparsable_answer", "cannot parse answer"),
        ("Answer:", "unparsable_answer", "cannot parse answer"),
        ("Answer: " + "(" * 10_000 + "4" + ")" * 10_000, "unparsable_answer", "longer than"),
        ("Answer: 44 - 6 - 8 = 30", "wrong_answer", "uses numbers 6 8 44"),
    ],
)
def test_wrong_answers(task: Game24, answer: str, verdict: str, fragment: str) -> None:
    completion = "\n".join(GOOD_STEPS + [answer])
    cert = task.check(PUZZLE, completion)
    assert not cert.correct and cert.verdict == verdict and cert.score == 0.0
    error = the_error(cert)
    assert fragment in error.message and error.reward == pytest.approx(-1.0)
    assert (error.start, error.end) == (len(completion) - len(answer), len(completion))
    assert cert.info["steps_correct"] == 3


def test_no_answer_and_truncation(task: Game24) -> None:
    completion = "\n".join(GOOD_STEPS) + "\n\n"
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "no_answer" and cert.answer is None and not cert.correct
    error = the_error(cert)
    assert "no 'Answer:" in error.message
    assert (error.start, error.end) == line_span(completion, GOOD_STEPS[-1])

    truncated = GOOD_STEPS[0] + "\n6 - 4 = 2 (le"
    cert = task.check(PUZZLE, truncated)
    assert cert.verdict == "no_answer" and cert.info == {"steps": 2, "steps_correct": 1, "step_accuracy": 0.5}
    assert {(s.start, s.end) for s in cert.errors()} == {(len(GOOD_STEPS[0]) + 1, len(truncated))}
    messages = sorted(s.message for s in cert.errors())
    assert messages[0].startswith("cannot parse step") and messages[1].startswith("no 'Answer:")

    cert = task.check(PUZZLE, GOOD_STEPS[0] + "\nAnswer: (6 - 4) * (4 +")
    assert cert.verdict == "unparsable_answer"


@pytest.mark.parametrize("completion", ["", "   \n\n\t "])
def test_empty(task: Game24, completion: str) -> None:
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "empty" and cert.spans == [] and cert.score == -1.0 and not cert.correct
    assert not cert.attempted  # no attempt: below every attempt (tests/test_reward_ordering.py)


def test_garbage_and_huge_input(task: Game24) -> None:
    began = time.perf_counter()
    garbage = "💥ß∑ 🤖\u2028\x00\ud800 ٣ + ٣ = ٦ (left: ٣)"
    cert = task.check(PUZZLE, garbage)
    assert cert.verdict == "no_answer" and all(0 <= s.start <= s.end <= len(garbage) for s in cert.spans)

    huge_number = "9" * 100_000
    for completion in [
        f"{huge_number} + 1 = {huge_number} (left: 1)\nAnswer: {huge_number} * 24 = 24",
        "Answer: " + "9" * 13 + " - " + "9" * 13 + " + 24",
        "Answer: " + "-" * 5_000 + "24",
        "Answer: 10**10000",
        "x" * 1_000_000,
        " " * 50_000 + "x",  # whitespace runs once made the line regexes quadratic
        " " * 50_000 + "Answer:" + " " * 50_000 + "x",
        "1 + 1 = 2" + " " * 50_000 + "(left: 2",
    ]:
        cert = task.check(PUZZLE, completion)
        assert not cert.correct and (cert.errors() or not cert.attempted)  # "x" * 1e6: no attempt
        assert all(0 <= s.start <= s.end <= len(completion) for s in cert.spans)

    # A very long rambling derivation is judged line by line; the first step is the only right one.
    completion = "4 + 8 = 12 (left: 4 6 12)\n" * 2_000 + GOOD_ANSWER
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "wrong_step" and cert.info["steps_correct"] == 1 and len(cert.errors()) == 1_999
    # A very long answer line of true statements is still checked in linear time.
    completion = GOOD_ANSWER + " = 24" * 20_000
    cert = task.check(PUZZLE, completion)
    assert cert.correct, cert.explain(completion)[:500]
    cert = task.check(PUZZLE, completion + " = 25")
    assert cert.verdict == "wrong_answer" and "states 25 but the expression is 24" in the_error(cert).message
    assert time.perf_counter() - began < 5.0  # linear-time checking: ~0.1 s here


def test_fuzz_never_raises(task: Game24) -> None:
    rng = random.Random(24)
    alphabet = list("0123456789 +-*/()=\n:.,leftAnswer")
    alphabet += ["Answer: ", "(left: ", "/0", "**", "−", "×", "é", "🙂"]
    seeds = ["\n".join(GOOD_STEPS + [GOOD_ANSWER]), "8 / 8/3 = 3 (left: 3)", "Answer: 1/0"]
    for i in range(400):
        if i % 2:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        else:  # mutate a good completion
            chars = list(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
                if len(chars) > 1 and rng.random() < 0.5:
                    del chars[rng.randrange(len(chars))]
            text = "".join(chars)
        if i % 7 == 0:
            text += "".join(chr(rng.randrange(0x20, 0x30000)) for _ in range(30))
        cert = task.check(PUZZLE, text)
        assert isinstance(cert, Certificate) and cert.verdict in VERDICTS
        assert all(0 <= s.start <= s.end <= len(text) for s in cert.spans)
        assert cert.score == (1.0 if cert.correct else 0.0 if cert.attempted else -1.0)


# -- soundness: nothing false, nothing unverified ------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "Answer: (6 - 4) * (4 + 8)",  # stating no value is fine
        "Answer: (6 - 4) * (4 + 8) = 24",
        "Answer: (6 - 4) * (4 + 8) = 24 = 24",
        "Answer: (6 - 4) * (4 + 8) = 2 * 12 = 24.",  # a stated value may be an expression
        "Answer: (6 - 4) * (4 + 8) = (24)",
        "**Answer:** (6 − 4) × (4 + 8) = 24",
    ],
)
def test_true_stated_results(task: Game24, answer: str) -> None:
    completion = "\n".join(GOOD_STEPS + [answer])
    cert = task.check(PUZZLE, completion)
    assert cert.correct and cert.verdict == "correct" and not cert.errors(), cert.explain(completion)
    assert cert.answer == "(6-4)*(4+8)"


@pytest.mark.parametrize(
    "answer, verdict, fragments",
    [
        # The stated result is not the expression's value (the old checker passed this one).
        ("Answer: (6 - 4) * (4 + 8) = 25", "wrong_answer", ["states 25 but the expression is 24"]),
        ("Answer: (6 - 4) * (4 + 8) = 24 = 25", "wrong_answer", ["states 25 but the expression is 24"]),
        ("Answer: (6 - 4) * (4 + 8) = 12 * 3 = 24", "wrong_answer", ["states 12 * 3 but the expression is 24"]),
        ("Answer: (6 - 4) * (4 + 8) = 24 / 0", "wrong_answer", ["stated result 24 / 0 divides by zero"]),
        # An expression worth 25 stated as 24: both the value and the false claim are named.
        ("Answer: 4 * 6 + 8 / 8 = 24", "wrong_answer", ["uses numbers 4 6 8 8", "evaluates to 25, not 24",
                                                      "states 24 but the expression is 25"]),
        ("Answer: (6 - 4) * (4 + 8) = twenty-four", "unparsable_answer", ["cannot parse stated result"]),
        ("Answer: (6 - 4) * (4 + 8) =", "unparsable_answer", ["cannot parse stated result ''"]),
        ("Answer: (6 - 4) * (4 + 8) = 24 (left: 24)", "unparsable_answer", ["cannot parse stated result"]),
        ("**Answer: (6 - 4) * (4 + 8) = 24**", "unparsable_answer", ["cannot parse stated result '24**'"]),
        ("Answer: (6 - 4) * (4 + 8) == 24", "unparsable_answer", ["cannot parse stated result ''"]),
    ],
)
def test_false_or_unparsable_stated_results(task: Game24, answer: str, verdict: str, fragments: list[str]) -> None:
    completion = "\n".join(GOOD_STEPS + [answer])
    cert = task.check(PUZZLE, completion)
    assert not cert.correct and cert.verdict == verdict and cert.score == 0.0
    error = the_error(cert)
    assert all(f in error.message for f in fragments), error.message
    assert (error.start, error.end) == (len(completion) - len(answer), len(completion))
    assert error.reward == pytest.approx(-1.0) and cert.info["steps_correct"] == 3


def test_many_false_stated_results_are_summarised(task: Game24) -> None:
    cert = task.check(PUZZLE, "Answer: (6 - 4) * (4 + 8)" + " = 1" * 10)
    message = the_error(cert).message
    assert cert.verdict == "wrong_answer" and message.count("states 1 but") == 3
    assert "and 7 more such stated results" in message


def test_correct_answer_after_wrong_step(task: Game24) -> None:
    # A right answer does not excuse a false step before it.
    steps = ["4 + 8 = 12 (left: 4 6 12)", "6 - 4 = 2 (left: 2 12)", "2 * 12 = 25 (left: 24)"]
    completion = "\n".join(steps + [GOOD_ANSWER])
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "wrong_step" and not cert.correct and cert.score == 0.0
    assert cert.answer == "(6-4)*(4+8)" and cert.info["steps_correct"] == 2
    error = the_error(cert)
    assert (error.start, error.end) == line_span(completion, steps[2]) and "2 * 12 is 24, not 25" in error.message
    # An unparsable line before the answer is a wrong step too.
    completion = "Let me think.\n" + "\n".join(GOOD_STEPS + [GOOD_ANSWER])
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "wrong_step" and "cannot parse step" in the_error(cert).message
    assert [s.reward > 0 for s in cert.spans] == [False, True, True, True]


@pytest.mark.parametrize("tail", ["So the answer is 24.", "Answer: 1 + 2", "4 + 8 = 12 (left: 4 6 12)\n\nDone!"])
def test_text_after_answer(task: Game24, tail: str) -> None:
    head = "\n".join(GOOD_STEPS + [GOOD_ANSWER])
    completion = f"{head}\n\n{tail}\n  \n"
    cert = task.check(PUZZLE, completion)
    assert cert.verdict == "text_after_answer" and not cert.correct and cert.score == 0.0
    assert cert.answer == "(6-4)*(4+8)" and cert.info["steps_correct"] == 3
    error = the_error(cert)
    assert (error.start, error.end) == line_span(completion, tail) and error.reward == pytest.approx(-1.0)
    assert "text after the answer line is not checked" in error.message
    # A wrong answer keeps its verdict; the text after it is an error span as well.
    cert = task.check(PUZZLE, f"Answer: 4 + 4 + 6 + 8 = 22\n{tail}")
    assert cert.verdict == "wrong_answer" and len(cert.errors()) == 2


def test_answer_word_is_ascii(task: Game24) -> None:
    # re.I would let the long s "ſ" match "s"; the answer word is ASCII only.
    cert = task.check(PUZZLE, "Anſwer: (6 - 4) * (4 + 8) = 24")
    assert cert.verdict == "no_answer"
    assert task.check(PUZZLE, "ANSWER: (6 - 4) * (4 + 8) = 24").correct
