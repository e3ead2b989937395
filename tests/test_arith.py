"""Arithmetic chains: the paper's reward by hand, products before sums, generation, examples written
as expressions, spans and messages, metrics, `rlsf check`."""

from __future__ import annotations

import json
import math
import time

import pytest

from rlsf.tasks import get_task
from rlsf.tasks.arith import ERROR_CAP, VERDICTS, chain, paper_reward, parse, value
from rlsf.tasks.base import TaskError

EX = {"id": "3+4+2", "expression": "3+4+2", "chain": "7+2=9"}
ZERO = 2 / (1 + math.exp(50))  # error 500: infinite or capped


@pytest.fixture(scope="module")
def task():
    return get_task("arith")


def spans(text: str, cert) -> list[tuple[str, float, str]]:
    return [(text[s.start:s.end], round(s.reward, 3), s.message) for s in cert.spans]


@pytest.mark.parametrize("text, score, verdict", [
    ("7+2=9", 1.0, "correct"),
    ("7+2=10", 2 / (1 + math.exp(0.1)), "wrong_value"),  # error 1: 0.950
    ("7+3=10", 2 / (1 + math.exp(0.2)), "wrong_value"),  # error 1 + 1
    ("7+2=1000", ZERO, "wrong_value"),  # error 991, capped at 500
    ("9", ZERO, "wrong_steps"),  # a skipped step: 0 operators where 1 is due
    ("7+2+0=9", ZERO, "wrong_steps"),  # right value, 2 operators where 1 is due
    ("7+2=9=9", ZERO, "wrong_steps"),  # a statement after the final value
    ("7+2=", ZERO, "malformed"),  # empty statement
    ("=7+2=9", ZERO, "malformed"),
    ("7+x=9", ZERO, "malformed"),  # letters
    ("7-2=5", ZERO, "malformed"),  # only + and *
    ("7+2=٩", ZERO, "malformed"),  # ASCII digits only
    ("", -1.0, "empty"),  # no attempt: below every chain (the paper's reward, ZERO, is the `reward` metric)
    (" \n\t", -1.0, "empty"),
    ("I don't know.", -1.0, "malformed"),  # prose: no attempt
    ("3+4+2=", -1.0, "malformed"),  # the expression copied back: no attempt
    ("7+2", 1.0, "incomplete"),  # the paper's reward gives an unfinished right chain full marks; not correct
    ("7+2=9\nDone.", 1.0, "text_after_chain"),  # later lines are not the chain (nor checked)
    ("3+6=9", 1.0, "correct"),  # any chain that removes one operator per statement and keeps the value
    (" 7 + 2 = 9 \r\n\n", 1.0, "correct"),  # whitespace is ignored
    ("\n\n7+2=9", 1.0, "correct"),  # the first non-blank line
])
def test_paper_reward_by_hand(task, text: str, score: float, verdict: str) -> None:
    cert = task.check(EX, text)
    assert cert.score == pytest.approx(score, rel=1e-12) and cert.verdict == verdict and verdict in VERDICTS
    assert cert.correct == (verdict == "correct") and cert.attempted == (score != -1.0)
    assert math.isfinite(cert.score) and math.isfinite(cert.info["error"]) and cert.info["error"] <= ERROR_CAP
    assert task.metrics(EX, cert)["reward"] == pytest.approx(max(score, ZERO), rel=1e-12)  # the paper's figure


def test_reward_values() -> None:
    assert paper_reward(0) == 1.0
    assert round(paper_reward(1), 3) == 0.950
    assert paper_reward(500) == paper_reward(10**6) == pytest.approx(3.8575e-22, rel=1e-4)


@pytest.mark.parametrize("expression, expected", [
    ("3+4+2", "7+2=9"),
    ("3+4*2", "3+8=11"),  # products before sums
    ("2*3+4*5", "6+4*5=6+20=26"),  # leftmost product first
    ("2*3*4", "6*4=24"),
    ("1+2*0+5", "1+0+5=1+5=6"),
    ("10+20", "30"),
])
def test_chains_do_products_before_sums(expression: str, expected: str) -> None:
    assert chain(expression) == expected
    assert value(*parse(expression)) == int(expected.split("=")[-1])


def test_products_are_judged_with_precedence(task) -> None:
    ex = task.example("3+4*2=")
    assert task.check(ex, "3+8=11").correct
    cert = task.check(ex, "7*2=14")  # left to right: each statement is worth 14, the expression 11
    assert cert.verdict == "wrong_value" and cert.info["error"] == 6 and cert.answer == "14"


def test_generation_is_reproducible_and_disjoint() -> None:
    a, b = get_task("arith"), get_task("arith")
    train, test = a.load("train"), a.load("test")
    assert len(train) == 10000 and len(test) == 500
    assert train == b.load("train") and test == b.load("test")
    expressions = [ex["expression"] for ex in train + test]
    assert len(set(expressions)) == len(expressions)  # distinct, so the splits are disjoint
    assert {ex["id"] for ex in test} == {f"test:{i}" for i in range(500)}
    assert all(3 <= len(parse(e)[0]) <= 5 and set(e) <= set("0123456789+") for e in expressions)
    # The test split does not depend on train_size; the seed changes everything.
    assert get_task("arith", train_size=50).load("test") == test
    assert get_task("arith", seed=1).load("test") != test
    for ex in test:
        assert task_check_correct(a, ex)


def task_check_correct(task, ex) -> bool:
    return task.check(ex, task.demonstration(ex)).correct


def test_products_option_and_small_spaces() -> None:
    t = get_task("arith", operators="+*", max_operand=5, train_size=200, test_size=50)
    examples = t.load("train") + t.load("test")
    assert any("*" in ex["expression"] for ex in examples) and any("+" in ex["expression"] for ex in examples)
    assert all(task_check_correct(t, ex) for ex in examples)
    # Asking for more than half of all expressions: a shuffle of all of them, still reproducible.
    small = dict(min_terms=2, max_terms=2, max_operand=2, train_size=6, test_size=3)  # 9 expressions in all
    t = get_task("arith", **small)
    both = t.load("train") + t.load("test")
    assert sorted(ex["expression"] for ex in both) == sorted(f"{a}+{b}" for a in range(3) for b in range(3))
    assert get_task("arith", **small).load("test") == t.load("test")
    with pytest.raises(TaskError, match="allow only 9 distinct expressions"):
        get_task("arith", **{**small, "train_size": 7}).load("train")


@pytest.mark.parametrize("options, message", [
    ({"min_terms": 1}, "min_terms"), ({"max_terms": 2}, "min_terms <= max_terms"), ({"max_operand": -1}, "max_operand"),
    ({"operators": "+-"}, "operators"), ({"operators": ""}, "operators"), ({"test_size": 0}, "test_size"),
    ({"error_reward": 1.0}, "error_reward"), ({"step_reward": float("nan")}, "step_reward"),
    ({"seed": "x"}, "seed"), ({"nope": 1}, "unknown option"),
])
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        get_task("arith", **options)


@pytest.mark.parametrize("written", ["3+4+2=", "3+4+2", " 3 + 4 + 2 = ", "3+4+2 ="])
def test_example_by_expression(task, written: str) -> None:
    assert task.example(written) == EX


def test_example_by_id_and_bad_examples(task) -> None:
    assert task.example("test:0") == task.load("test")[0] and task.example(" train:7 ") == task.load("train")[7]
    for bad, message in [("3-4=", "neither an example id"), ("abc", "neither"), ("3+=", "neither"),
                         ("4²+1", "neither"), ("5=", "no operator"), ("test:99999", "no example with id"),
                         ("1+" * 600 + "1", "at most 1000 characters")]:
        with pytest.raises(TaskError, match=message):
            task.example(bad)
    with pytest.raises(TaskError, match="no valid 'expression'"):
        task.check({"id": 1}, "7+2=9")


def test_spans_sit_on_the_statements(task) -> None:
    text = "7 + 3 = 10"
    cert = task.check(EX, text)
    assert spans(text, cert) == [("7 + 3", -1.0, "7+3 is 10, the expression is 9"),
                                 ("10", -1.0, "10, but the expression is 9")]
    text = "\n  7+2 = 9  "
    assert spans(text, task.check(EX, text)) == [("7+2", 0.25, "right: 1 operator left"),
                                                 ("9", 0.25, "right: 0 operators left")]
    text = "9"
    assert spans(text, task.check(EX, text)) == [("9", -1.0, "expected 1 operator, found 0")]
    text = "7+2+0=9"
    assert spans(text, task.check(EX, text))[0] == ("7+2+0", -1.0, "expected 1 operator, found 2")
    text = "7+3+0=10"  # both problems, one message
    assert spans(text, task.check(EX, text))[0][2] == "expected 1 operator, found 2; 7+3+0 is 10, the expression is 9"
    text = "7+2==9"
    assert spans(text, task.check(EX, text)) == [
        ("7+2", 0.25, "right: 1 operator left"), ("=", -1.0, "empty statement"),
        ("=9", -1.0, "1 statement after the final value (the chain has 2)")]
    text = "7+2=x"
    assert spans(text, task.check(EX, text))[1] == ("x", -1.0, "not an expression of integers with + and *: 'x'")
    text = "7+2"
    cert = task.check(EX, text)
    assert spans(text, cert)[1] == ("", -1.0, "the chain stops with 1 operator left")
    assert (cert.spans[1].start, cert.spans[1].end) == (3, 3)  # the token that stopped the chain
    text = "7+2=9\nand so on"
    assert spans(text, task.check(EX, text))[2] == ("and so on", -1.0, "text after the chain's line is not checked")


def test_step_reward_is_shared_by_the_full_chain() -> None:
    t = get_task("arith", step_reward=0.9, error_reward=-0.3)
    ex = t.example("1+2+3+4")
    cert = t.check(ex, "3+3+4=6+4=10")
    assert [round(s.reward, 6) for s in cert.spans] == [0.3, 0.3, 0.3]
    cert = t.check(ex, "3+3+4=6+5=11")
    assert [round(s.reward, 6) for s in cert.spans] == [0.3, -0.3, -0.3]
    assert cert.info["error"] == 2 and cert.info["statements_right"] == 1


def test_answer_and_metrics(task) -> None:
    assert task.check(EX, "7+2=9").answer == "9" and task.check(EX, "7+2=10").answer == "10"
    assert task.check(EX, "7+2").answer == "9" and task.check(EX, "7+2=x").answer is None
    assert task.check(EX, "").answer is None
    assert task.metrics(EX, task.check(EX, "7+2=9")) == {"success": 1.0, "reward": 1.0}
    figures = task.metrics(EX, task.check(EX, "7+2=10"))
    assert figures["success"] == 0.0 and round(figures["reward"], 3) == 0.950
    assert task.binary_metrics == ("success",)


def test_prompt_and_demonstration(task) -> None:
    messages = task.prompt(EX)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == "3+4+2="
    assert task.demonstration(EX) == "7+2=9"


def test_hostile_text_is_quick(task) -> None:
    for text in ("9" * 100_000, "=" * 100_000, "1+" * 50_000 + "1", "7+2=" + "9*" * 50_000 + "9", "\n" * 100_000 + "x"):
        t0 = time.perf_counter()
        cert = task.check(EX, text)
        assert time.perf_counter() - t0 < 2.0 and cert.verdict in VERDICTS and not cert.correct
        assert all(0 <= s.start <= s.end <= len(text) for s in cert.spans) and len(cert.spans) <= 4


def test_rlsf_check(tmp_path, capsys) -> None:
    from rlsf.cli.main import main

    f = tmp_path / "c.txt"
    f.write_text("7+2=9\n")
    assert main(["check", "--task", "arith", "--example", "3+4+2=", "--completion", str(f),
                 "--check.workers", "0"]) == 0
    assert "verdict=correct score=+1.000" in capsys.readouterr().out
    f.write_text("7+2=10")
    assert main(["check", "--task", "arith", "--example", "3 + 4 + 2", "--completion", str(f), "--json",
                 "--check.workers", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["example"] == "3+4+2" and out["certificate"]["verdict"] == "wrong_value"
    assert main(["check", "--task", "arith", "--example", "3-4", "--completion", str(f)]) == 2
    assert "neither an example id" in capsys.readouterr().err


def test_check_output_piped_into_head_ends_quietly(tmp_path) -> None:
    """`rlsf check --input ... --json | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    rows = tmp_path / "in.jsonl"
    rows.write_text('{"example": "3+4+2=", "completion": "7+2=9"}\n' * 5000)
    cmd = f"'{sys.executable}' -m rlsf.cli check --task arith --input '{rows}' --json | head -1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)["certificate"]["correct"] is True
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
