"""GSM8K and SVAMP: final answers, calculations checked exactly, the three dense modes, data."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from rlsf.tasks import get_task
from rlsf.tasks.base import TaskError
from rlsf.tasks.math_word import VERDICTS, calculations, evaluate, final_answer, same_answer

EX = {"id": "n", "question": "Natalia sold clips to 48 friends in April and half as many in May. How many in all?",
      "answer": "72", "intermediate": ["24", "72"],
      "solution": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72"}


@pytest.mark.parametrize("text, found", [
    ("48/2 = 24", [("48/2 = 24", True)]),
    ("sold 48/2 = <<48/2=24>>24 clips", [("48/2=24", True)]),
    ("0.2 x 50 = 10", [("0.2 x 50 = 10", True)]),
    ("$12 \\times 3 = 36$", [("$12 \\times 3 = 36", True)]),
    ("12 × 3 = 35", [("12 × 3 = 35", False)]),
    ("So (3+4)*2 = 14 apples", [("(3+4)*2 = 14", True)]),
    ("1,200 + 300 = 1,500", [("1,200 + 300 = 1,500", True)]),
    ("1/3 = 0.33", [("1/3 = 0.33", True)]),  # rounded to the digits it is written with
    ("1/3 = 0.3", [("1/3 = 0.3", True)]),
    ("1/3 = 0.4", [("1/3 = 0.4", False)]),
    ("2*3*4 = 24 and 24/4=6.", [("2*3*4 = 24", True), ("24/4=6", True)]),
    ("5/0 = 1", [("5/0 = 1", False)]),
    ("The total is 12 = 12", []),  # no operation: not a calculation
    ("x = 5", []),
])
def test_calculations(text: str, found: list) -> None:
    assert [(text[c.start:c.end], c.right) for c in calculations(text)] == found


@pytest.mark.parametrize("expr, value", [
    ("2+3*4", Fraction(14)), ("(2+3)*4", Fraction(20)), ("1.5*2", Fraction(3)), ("1,000/8", Fraction(125)),
    ("50%*80", Fraction(40)), ("-3+1", Fraction(-2)), ("2**100", None), ("__import__('os')", None), ("1/0", None),
    ("(" * 300 + "1" + ")" * 300, None),
])
def test_evaluate_is_exact_and_safe(expr: str, value) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize("text, answer", [
    ("... #### 72", "72"), ("so \\boxed{72}", "72"), ("The answer is $1,200.", "1,200"),
    ("The answer is: 5 apples", "5"), ("I got 5 then 7", "7"), ("#### 3\nThe answer is 4", "3"),
])
def test_final_answer(text: str, answer: str) -> None:
    s, e = final_answer(text)
    assert text[s:e] == answer


def test_same_answer_uses_math_verify() -> None:
    assert same_answer("72", Fraction(72)) and same_answer("1,200", Fraction(1200))
    assert same_answer("0.5", Fraction(1, 2)) and not same_answer("73", Fraction(72))


def test_symbolic_dense_reward_points_at_the_wrong_calculation() -> None:
    task = get_task("gsm8k")
    good = task.check(EX, EX["solution"])
    assert good.correct and good.verdict == "correct" and good.score == 1.0 and good.answer == "72"
    assert sorted(round(s.reward, 3) for s in good.spans) == [0.25, 0.25]
    bad = "Natalia sold 48/2 = 25 clips in May.\nShe sold 48+25 = 73 clips.\n#### 73"
    cert = task.check(EX, bad)
    assert cert.verdict == "wrong_answer" and cert.score == 0.0
    errors = {bad[s.start:s.end]: s.message for s in cert.spans if s.reward < 0}
    assert errors == {"48/2 = 25": "wrong calculation: 48/2 is 24, not 25", "73": "final answer 73; the answer is 72"}
    assert [bad[s.start:s.end] for s in cert.spans if s.reward > 0] == ["48+25 = 73"]  # right given its inputs


def test_sparse_and_reference_modes() -> None:
    bad = "Half of 48 is 24.\nThen 48+24 = 73.\n#### 73"
    sparse = get_task("gsm8k", dense="none").check(EX, bad)
    assert sparse.spans == [] and sparse.score == 0.0
    ref = get_task("gsm8k", dense="reference").check(EX, bad)
    # the reference's first intermediate result (24) is stated; 72 is not
    assert [(bad[s.start:s.end], s.reward) for s in ref.spans if s.reward > 0] == [("24", 0.25)]
    with pytest.raises(TaskError, match="dense must be one of"):
        get_task("gsm8k", dense="dense")


@pytest.mark.parametrize("text, verdict", [("", "empty"), ("  \n", "empty"), ("I do not know.", "no_answer"),
                                            ("#### 72", "correct"), ("#### 71", "wrong_answer")])
def test_verdicts(text: str, verdict: str) -> None:
    cert = get_task("gsm8k").check(EX, text)
    assert cert.verdict == verdict and verdict in VERDICTS


def test_huge_and_hostile_text_is_quick() -> None:
    import time

    task = get_task("gsm8k")
    for text in ("1+" * 50_000 + "1 = 2", "(" * 100_000, "9" * 100_000 + " = 9", "#### " + "9" * 5000):
        t0 = time.perf_counter()
        cert = task.check(EX, text)
        assert time.perf_counter() - t0 < 5.0 and cert.verdict in VERDICTS


def test_gsm8k_malformed_rows(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    rows = [{"question": "q1", "answer": "1+1 = <<1+1=2>>2\n#### 2"}, {"question": "q2", "answer": "no final answer"},
            {"question": "q3", "answer": "#### many"}, "not an object"]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    task = get_task("gsm8k", data_dir=str(tmp_path))
    examples = task.load("train")
    assert [ex["solution"] for ex in examples] == ["1+1 = 2\n#### 2"] and examples[0]["intermediate"] == ["2"]
    assert len(task.malformed["train"]) == 4 and "4 malformed rows skipped" in capsys.readouterr().err
    assert get_task("gsm8k", data_dir=str(tmp_path), annotations=True).load("train")[0]["solution"].startswith(
        "1+1 = <<1+1=2>>2")


def test_shipped_data(shared_data) -> None:
    gsm = get_task("gsm8k")
    assert len(gsm.load("train")) == 7473 and len(gsm.load("test")) == 1319 and gsm.malformed["train"] == []
    svamp = get_task("svamp")
    train, test = svamp.load("train"), svamp.load("test")
    assert len(test) == 300 and len(train) + len(test) + len(svamp.malformed["test"]) == 1000
    assert not {ex["id"] for ex in train} & {ex["id"] for ex in test}
    for task, ex in ((gsm, gsm.load("test")[0]), (svamp, test[0])):
        assert task.check(ex, task.demonstration(ex)).correct
    # Every GSM8K reference solution is right by its own checker (calculations and answer).
    wrong = [ex["id"] for ex in gsm.load("test") if not gsm.check(ex, ex["solution"]).correct]
    assert wrong == []


@pytest.mark.parametrize("text", ["4４", "𝟐", "#### ４４", "\\boxed{٤٤}"])
def test_only_ascii_digits_are_numbers(text: str) -> None:
    # Found by the fuzz run: Python's \d and Fraction() accept other scripts' digits.
    ex = {**EX, "answer": "44"}
    assert not get_task("gsm8k").check(ex, text).correct
    assert get_task("gsm8k").check(ex, "#### 44").correct
