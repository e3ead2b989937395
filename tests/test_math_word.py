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
    ("1 - 3/5 = 2/5 of it", [("1 - 3/5 = 2/5", True)]),  # a fraction as the result
    ("12/20 x 100% = 60%", [("12/20 x 100% = 60%", True)]), ("12/20 = 60%", [("12/20 = 60%", True)]),
    ("12/20 = 61%", [("12/20 = 61%", False)]),
    ("27(1/3) = 9", [("27(1/3) = 9", True)]), ("3 1/2 - 2 = 1.5", [("3 1/2 - 2 = 1.5", True)]),
    ("So 2x + 4x = 700", []),  # algebra: nothing to check
    ("5+2*3 = 5+6 = 11", [("5+6 = 11", True)]), ("5+2*3 = 5+7 = 12", [("5+7 = 12", True)]),  # a chain: the last
    ("slept 9 hours * 2/3 = 6 hours", [("9 hours * 2/3 = 6", True)]),  # units between the numbers
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
    # 24 is written, not computed, and 48+24 = 73 is wrong: no reference step is credited
    assert [s for s in ref.spans if s.reward > 0] == [] and ref.info["reference_steps"] == 0.0
    good = "Half of 48 is 48/2 = 24.\nThen 48+24 = 73.\n#### 73"
    ref = get_task("gsm8k", dense="reference").check(EX, good)
    assert [(good[s.start:s.end], s.reward) for s in ref.spans if s.reward > 0] == [("48/2 = 24", 0.25)]
    with pytest.raises(TaskError, match="dense must be one of"):
        get_task("gsm8k", dense="dense")


@pytest.mark.parametrize("text, verdict", [("", "empty"), ("  \n", "empty"), ("I do not know.", "no_answer"),
                                            ("#### 72", "correct"), ("#### 71", "wrong_answer")])
def test_verdicts(text: str, verdict: str) -> None:
    cert = get_task("gsm8k").check(EX, text)
    assert cert.verdict == verdict and verdict in VERDICTS
    assert cert.attempted == (verdict not in ("empty", "no_answer"))


# ---- the dense reference reward: Havrilla et al.'s reference steps, in order, computed ----------------
REF = get_task("gsm8k", dense="reference")
# Step 1's result (15) is also a number of the question.
FRUIT = {"id": "f", "question": "Tom has 3 bags of 5 apples and 15 pears. How many fruits does he have?",
         "answer": "30", "intermediate": ["15", "30"], "steps": [["3*5", "15"], ["15+15", "30"]],
         "solution": "3 * 5 = 15 apples.\n15 + 15 = 30 fruits.\n#### 30"}


def credited(task, example: dict, text: str) -> list[tuple[str, str]]:
    """(text credited, message) of each reference-step span."""
    cert = task.check(example, text)
    return [(text[s.start:s.end], s.message) for s in cert.spans if s.reward > 0]


def test_reference_steps_are_matched_in_order_each_once() -> None:
    in_order = "48/2 = 24 in May.\n48+24 = 72 in all.\n#### 72"
    assert credited(REF, EX, in_order) == [("48/2 = 24", "reference step 1 of 2: 24"),
                                           ("48+24 = 72", "reference step 2 of 2: 72")]
    backwards = "48+24 = 72 in all, since 48/2 = 24 in May.\n#### 72"  # one step only: the order is broken
    assert len(credited(REF, EX, backwards)) == 1
    repeated = "48/2 = 24\n48/2 = 24\n48/2 = 24\n#### 96"  # one step, written three times: credited once
    cert = REF.check(EX, repeated)
    assert [round(s.reward, 3) for s in cert.spans if s.reward > 0] == [0.25] and cert.info["reference_steps"] == 0.5
    skipped = "12 + 12 = 24\n24 * 3 = 72\n#### 72"  # any calculation that computes the step's value counts
    assert [m for _, m in credited(REF, EX, skipped)] == ["reference step 1 of 2: 24", "reference step 2 of 2: 72"]


def test_reference_never_credits_a_number_that_is_only_written_or_copied() -> None:
    for text in ("#### 72", "24 then 72\n#### 72", "The answer is 72.", "\\boxed{72}",
                 "48 * 1 = 48\n48 + 0 = 48\n#### 48"):  # trivial operations compute nothing
        assert credited(REF, EX, text) == [], text
    # "= 15" repeats a number of the question: no credit; "3 * 5 = 15" computes it
    assert [m for _, m in credited(REF, FRUIT, "Apples = 15\n15 + 15 = 30\n#### 30")] == [
        "reference step 2 of 2: 30"]
    assert len(credited(REF, FRUIT, "3 * 5 = 15\n15 + 15 = 30\n#### 30")) == 2
    assert credited(REF, EX, "Total = 72\n#### 72") == [("72", "reference step 2 of 2: 72")]  # not a question number
    assert credited(REF, EX, "48/2 = 25\n#### 72") == []  # a wrong calculation states no result


def test_identities_compute_nothing_but_halving_a_double_does() -> None:
    task = get_task("gsm8k", dense="symbolic")
    ex = {**EX, "question": "Tom has 14 pens and gives away 7.", "answer": "7", "intermediate": ["7"]}
    for text in ("14 - 7 = 7\n#### 7", "4 / 2 = 2\n#### 2"):  # a result equal to an operand is still computed
        cert = REF.check({**ex, "answer": text[-1], "intermediate": [text[-1]]}, text)
        assert cert.info["reference_steps"] == 1.0 and task.check(ex, text).spans[0].reward == 0.5
    cert = task.check(ex, "14 * 1 = 14\n14 - 0 = 14\n#### 14")
    assert [s.reward for s in cert.spans if s.reward > 0] == [] and cert.score == -0.5  # nothing computed


def test_calculations_written_with_units_are_work_and_results() -> None:
    ex = {**EX, "question": "James slept 9 hours. Harry slept 2/3 as long. How much longer did James sleep?",
          "answer": "3", "intermediate": ["6", "3"]}
    text = "Harry slept 9 hours * 2/3 = 6 hours.\nSo James slept 9 hours - 6 hours = 3 hours more.\n#### 3"
    assert [m for _, m in credited(REF, ex, text)] == ["reference step 1 of 2: 6", "reference step 2 of 2: 3"]
    assert credited(REF, ex, text)[0][0] == "9 hours * 2/3 = 6"
    wrong = text.replace("= 3 hours", "= 4 hours").replace("#### 3", "#### 4")
    assert get_task("gsm8k").check(ex, wrong).score == 0.0  # work behind the wrong answer: not a guess


def test_svamp_steps_are_the_equation_operations(tmp_path: Path) -> None:
    (tmp_path / "svamp").mkdir()
    rows = [{"ID": "a", "Body": "3 birds sat. 6 storks and 2 more birds came.", "Question": "How many more storks?",
             "Equation": "( 6.0 - ( 3.0 + 2.0 ) )", "Answer": 1.0},
            {"ID": "b", "Body": "A pack costs 76 dollars with 25 off.", "Question": "What do you pay?",
             "Equation": "( 76.0 - 25.0 )", "Answer": 51.0},
            {"ID": "c", "Body": "Ann has 692 girls.", "Question": "How many?",
             "Equation": "( ( 692.0 + 692.0 ) - 458.0 ) / 2.0", "Answer": 463.0}]
    (tmp_path / "svamp" / "SVAMP.json").write_text(json.dumps(rows))
    task = get_task("svamp", data_dir=str(tmp_path), dense="reference", test_size=0)
    by_id = {ex["id"]: ex for ex in task.load("train")}
    assert by_id["a"]["steps"] == [["3 + 2", "5"], ["6 - 5", "1"]] and by_id["a"]["intermediate"] == ["5", "1"]
    assert by_id["b"]["steps"] == [["76 - 25", "51"]]
    assert by_id["c"]["intermediate"] == ["1384", "926", "463"]
    ex = by_id["a"]
    # one line, both steps: the inner operation computes 5, the whole 1
    assert [m for _, m in credited(task, ex, ex["solution"])] == ["reference step 1 of 2: 5",
                                                                  "reference step 2 of 2: 1"]
    assert [m for _, m in credited(task, ex, "( 6 - ( 3 + 2 ) ) = 2\n#### 2")] == ["reference step 1 of 2: 5"]
    assert credited(task, ex, "6 + 3 + 2 = 11\n#### 11") == []  # another way: 9, then 11
    assert [m for _, m in credited(task, ex, "6 - 3 + 2 = 5\n#### 5")] == ["reference step 1 of 2: 5"]  # by value
    assert credited(task, ex, "#### 1") == [] and task.check(ex, "#### 1").correct
    slip = task.near_misses(ex)["slip carried through"]
    assert slip == "3 + 2 = 6\n6 - 6 = 0\n#### 0"


# ---- no attempt, near misses and hacks -----------------------------------------------------------------
@pytest.mark.parametrize("text, verdict", [
    ("", "empty"), (" \n\t", "empty"), ("I don't know.", "no_answer"),
    ("I'm sorry, but I can't help with that.", "no_answer"), ("Could you clarify the question?", "no_answer"),
    ("Let me think step by step. The answer is clear.", "no_answer"),
    (EX["question"], "copies_question"), ("  " + EX["question"].upper() + "\nLet me see.", "copies_question"),
    ("Natalia sold clips to 48 friends in April", "copies_question"), ("48", "copies_question"),
])
def test_non_attempts(text: str, verdict: str) -> None:
    for dense in ("none", "reference", "symbolic"):
        cert = get_task("gsm8k", dense=dense).check(EX, text)
        assert (cert.verdict, cert.attempted, cert.correct, cert.score) == (verdict, False, False, -1.0), (dense, text)


@pytest.mark.parametrize("text, verdict", [
    ("48/2 = 24, and 48 + 24 = 73", "wrong_answer"),  # calculations without a #### line: an attempt
    ("I got 5 then 7", "wrong_answer"),  # numbers of its own
    ("#### 48", "wrong_answer"),  # a bare answer copied from the question: an attempt, the least of them
    (EX["question"] + "\n48/2 = 24\n48 + 24 = 72\n#### 72", "correct"),  # restated, then solved
    ("She sold 72 clips.", "correct"),
])
def test_attempts(text: str, verdict: str) -> None:
    cert = get_task("gsm8k").check(EX, text)
    assert cert.attempted and cert.verdict == verdict


def test_a_right_answer_that_is_a_number_of_the_question_is_correct() -> None:
    ex = {**EX, "answer": "48"}
    assert get_task("gsm8k").check(ex, "She has 48 clips.").correct
    assert not get_task("gsm8k").check(ex, ex["question"]).attempted  # the question restated never is
    assert not get_task("gsm8k").check(ex, "Natalia sold clips to 48").attempted  # nor a piece of it
    two = {**EX, "question": "Tom has 9 cards, 2 boxes and 3 bags.", "answer": "3"}
    assert get_task("gsm8k").check(two, "9 2 3").verdict == "copies_question"  # its numbers listed, not an answer
    assert get_task("gsm8k").check(two, "He has 3 bags.").correct


def test_unsupported_answers_score_below_wrong_answers_with_work() -> None:
    task = get_task("gsm8k")
    guess = task.check(EX, "#### 48")
    assert guess.score == -0.5 and [(s.start, s.end, s.reward) for s in guess.spans] == [(5, 7, -1.0), (0, 7, -1.0)]
    assert "copied from the question" in guess.spans[1].message
    assert task.check(EX, "Total = 25\n#### 25").score == -0.5  # "= 25" with nothing computed before it
    worded = "She sold 48 clips / 2 = 24 clips in May and 48 clips + 24 clips = 73 clips.\n#### 73"
    assert task.check(EX, worded).score == 0.0  # a calculation written with units is work
    assert get_task("gsm8k", unsupported_score=0.0, dense="none").check(EX, "#### 48").score == 0.0  # the paper's


def test_near_misses_and_hacks_on_the_worked_example() -> None:
    from rlsf.tasks.harness import reward_ordering, total_reward

    task = get_task("gsm8k")
    ex = {**EX, "steps": [["48/2", "24"], ["48+24", "72"]]}
    misses, hacks = task.near_misses(ex), task.reward_hacks(ex)
    assert misses == {"last step off by one": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 73 clips."
                                              "\n#### 73",
                      "slip carried through": "48/2 = 25\n48+25 = 73\n#### 73"}
    assert hacks == {"copied answer 48": "#### 48", "question numbers listed, their sum": "48\n#### 48",
                     "question restated, first number as answer": EX["question"] + "\n#### 48", "bare 0": "#### 0"}
    for dense in DENSE_MODES:
        assert reward_ordering(get_task("gsm8k", dense=dense), [ex]), dense
    # The signed totals of these replies (signed preset, token mode; cf. the table in docs/tasks/math-word.md)
    signed = {name: round(total_reward(task.check(ex, text), text), 3)
              for name, text in {"demo": ex["solution"], **misses, **hacks, "none": "I don't know."}.items()}
    assert signed == {"demo": 1.5, "last step off by one": -1.5, "slip carried through": -1.5,
                      "copied answer 48": -2.429, "question numbers listed, their sum": -2.429,
                      "question restated, first number as answer": -2.429, "bare 0": -2.429, "none": -5.0}


DENSE_MODES = ("reference", "symbolic")  # sparse: every wrong attempt earns the same under reward.preset rlsf


def test_sparse_orders_hacks_below_near_misses_by_the_score() -> None:
    from rlsf.tasks.harness import total_reward

    task = get_task("gsm8k", dense="none")
    ex = {**EX, "steps": [["48/2", "24"], ["48+24", "72"]]}
    near = [task.check(ex, t) for t in task.near_misses(ex).values()]
    hacks = [task.check(ex, t) for t in task.reward_hacks(ex).values()]
    assert {c.score for c in near} == {0.0} and {c.score for c in hacks} == {-0.5}
    assert all(total_reward(h, "#### 0", "rlsf") == total_reward(n, "#### 0", "rlsf") for h in hacks for n in near)


def test_near_misses_exist_for_every_shipped_problem(shared_data) -> None:
    for name in ("gsm8k", "svamp"):
        task = get_task(name)
        examples = task.load("test")[::4]
        lasts = slips = 0
        for ex in examples:
            misses = task.near_misses(ex)
            lasts += "last step off by one" in misses
            slips += "slip carried through" in misses
            assert misses, ex["id"]
        assert lasts >= 0.95 * len(examples), (name, lasts, len(examples))  # SVAMP's "8 = 8" has no work to slip
        multi = sum(len(ex["steps"]) > 1 for ex in examples)
        assert slips >= 0.9 * multi, (name, slips, multi)


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
    rows = [{"question": "q1", "answer": "1+1 = <<1+1=2>>2 and 2*1 = <<2*1=2>>2\n#### 2"},
            {"question": "q2", "answer": "no final answer"},
            {"question": "q3", "answer": "#### many"}, "not an object"]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    task = get_task("gsm8k", data_dir=str(tmp_path))
    examples = task.load("train")
    assert [ex["solution"] for ex in examples] == ["1+1 = 2 and 2*1 = 2\n#### 2"]
    assert examples[0]["steps"] == [["1+1", "2"]]  # an identity (2*1) is no reference step
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
