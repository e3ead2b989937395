"""Self-repair feedback turns (Task.feedback): on every built-in task, the turn after each near miss
and each degenerate reply is text that names what the checker flagged and never gives the
reference answer away; weird replies never make it raise; SPoC shows a failing public test but
never a hidden one; `rlsf check --feedback` (and --turns) prints it."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from rlsf.cli.main import main
from rlsf.feedback.certificate import Certificate
from rlsf.tasks import get_task

BUILT_IN = ("game24", "arith", "gsm8k", "svamp", "spoc", "molgen", "forward", "retro", "sentiment")
#: Examples per task (SPoC compiles every attempt: one).
EXAMPLES = {"spoc": 1}
WEIRD = ("", "\x00", "```", "```cpp\n", "#### ", "Answer:", "= = =", "(((", "[Na+]" * 40, "9" * 300, "é\u200b\n\t",
         "Answer: 1/0 = 24", "SMILES: C1CC", "int main() {", "\\boxed{}", "The answer is 12.5%")


def examples(task, name: str) -> list[dict]:
    found = task.load("test")
    n = EXAMPLES.get(name, 3)
    return found[:: max(1, len(found) // n)][:n]


def secrets(task, name: str, ex: dict) -> list[str]:
    """What the task asks for and a turn must never say: the reference answer in its forms."""
    if name in ("gsm8k", "svamp"):
        return [ex["answer"]]
    if name == "arith":
        return [ex["chain"].split("=")[-1]]
    if name == "game24":  # the solver's answer expression
        demo = task.demonstration(ex)
        return [demo.split("\n")[-1].removeprefix("Answer: ").removesuffix(" = 24")] if demo else []
    if name in ("molgen", "forward", "retro"):
        from rlsf.chem.smiles import canonical, parse

        mol = parse(ex["target"])
        return [ex["target"]] + ([canonical(mol), canonical(mol, False)] if mol is not None else [])
    if name == "sentiment":  # the rest of the review snippet (the SFT demonstration)
        rest = (ex.get("continuation") or "").strip()
        return [rest] if len(rest) >= 12 else []
    return []


def leaks(turn: str, completion: str, secret: str) -> bool:
    """``secret`` is in the turn (a number as a standalone token) though the completion does not say it."""
    if re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", secret):
        token = re.compile(rf"(?<![0-9.]){re.escape(secret)}(?!\.?[0-9])")
        return bool(token.search(turn)) and not token.search(completion)
    return secret in turn and secret not in completion


def names_a_finding(turn: str, completion: str, cert: Certificate) -> bool:
    """The turn names something the checker flagged: an error span's text or the start of its
    message; with nothing localised, the verdict or the answer itself."""
    flat = " ".join(turn.split())
    flagged = cert.errors() if cert.attempted else cert.spans
    for s in flagged:
        text = " ".join(completion[s.start:s.end].split())[:30]
        words = " ".join(s.message.split()[:3])
        if (text and text in flat) or (words and words in flat):
            return True
    return cert.verdict in flat or " ".join(completion.split())[:40] in flat


@pytest.mark.parametrize("name", BUILT_IN)
def test_feedback_turns_name_the_finding_and_never_the_answer(name: str) -> None:
    task = get_task(name)
    with task:
        checked = 0
        for ex in examples(task, name):
            hidden = secrets(task, name, ex)
            replies = {**{f"near miss {k}": v for k, v in task.near_misses(ex).items()},
                       **{f"degenerate {k}": v for k, v in task.degenerate_replies(ex).items()}}
            for label, completion in replies.items():
                cert = task.check(ex, completion)
                assert not cert.correct, (name, label)
                turn = task.feedback(ex, completion, cert)
                assert isinstance(turn, str) and turn.strip(), (name, label)
                assert names_a_finding(turn, completion, cert), (name, label, turn)
                for secret in hidden:
                    assert not leaks(turn, completion, secret), (name, label, secret, turn)
                checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", [n for n in BUILT_IN if n != "spoc"])
def test_feedback_never_raises_on_weird_replies(name: str) -> None:
    task = get_task(name)
    ex = examples(task, name)[0]
    for completion in WEIRD:
        cert = task.check(ex, completion)
        assert isinstance(task.feedback(ex, completion, cert), str)


def test_math_turns_drop_the_gold_from_every_message() -> None:
    task = get_task("gsm8k")
    ex = task.example("test:1")
    slip = "16 - 3 - 4 = 9\n9 * 2 = 19\n#### 19"
    cert = task.check(ex, slip)
    assert any("the answer is 18" in s.message for s in cert.spans)  # the certificate says it, for people
    turn = task.feedback(ex, slip, cert)
    assert "9 * 2 is not 19" in turn and "final answer 19 is not" in turn and "18" not in turn
    for dense in ("none", "reference"):  # the same findings whatever the token reward
        other = get_task("gsm8k", dense=dense)
        assert other.feedback(ex, slip, other.check(ex, slip)) == turn


def test_arith_turn_withholds_the_value() -> None:
    task = get_task("arith")
    ex = task.example("3+4+2=")
    for text, said in (("7+2=10", "10 is not the expression's value"), ("7+3=10", "7+3 is 10, not the expression's")):
        turn = task.feedback(ex, text, task.check(ex, text))
        assert said in turn and not re.search(r"(?<![0-9])9(?![0-9])", turn), turn


def test_chemistry_turn_shows_rdkit_and_not_the_reference() -> None:
    task = get_task("molgen")
    ex = task.load("test")[0]
    for text, said in (("SMILES: CC(C)(C)(C)(C)C", "Explicit valence for atom # 1 C, 6"),
                       ("C1CC(C", "(`(` at character 5)"), ("CCO", "is valid (C2H6O), but it is not the molecule")):
        cert = task.check(ex, text)
        turn = task.feedback(ex, text, cert)
        assert said in turn, turn
        assert "reference" not in turn and ex["target"] not in turn, turn


@pytest.fixture(scope="module")
def spoc():
    from rlsf.sandbox import Sandbox, SandboxUnavailable

    try:
        Sandbox()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    task = get_task("spoc")
    with task:
        yield task, task.load("test")[0]


def test_spoc_turn_shows_the_failing_public_test_never_a_hidden_one(spoc) -> None:
    task, ex = spoc
    program = 'int main() {\n  cout << "no such answer" << endl;\n  return 0;\n}'
    public_input, expected = task.tests(ex["probid"], "public")[0]
    cert = task.check(ex, program)
    assert cert.verdict == "wrong_answer" and cert.info["failed_test"] == 1
    turn = task.feedback(ex, program, cert)
    assert "fails public test 1: wrong output" in turn and "no such answer" in turn
    assert public_input.strip() in turn and expected.strip() in turn
    hidden = task.judge(ex, program)
    assert "failed_test" not in hidden.info and "failed_output" not in hidden.info
    secret = task.feedback(ex, program, hidden)
    assert "Input:" not in secret and "fails test 1: wrong output" in secret


def test_spoc_turn_reads_like_gcc(spoc) -> None:
    task, ex = spoc
    program = "int main() {\n  int x = 1\n  cout << x << endl;\n}"
    turn = task.feedback(ex, program, task.check(ex, program))
    assert turn.startswith("Your program does not compile. g++ says:")
    assert "line 3: error: expected" in turn and "   3 | cout << x << endl;" in turn
    assert "at the end of line 2" in turn


# ---- rlsf check --feedback --------------------------------------------------------------------------

def turn_printed(out: str) -> str:
    assert "\nfeedback turn:\n" in out, out
    return out.split("\nfeedback turn:\n", 1)[1]


def test_check_prints_the_feedback_turn(tmp_path, capsys) -> None:
    f = tmp_path / "answer.txt"
    f.write_text("7+2=10")
    args = ["check", "--task", "arith", "--example", "3+4+2=", "--completion", str(f), "--check.workers", "0"]
    assert main([*args, "--feedback"]) == 0
    out = capsys.readouterr().out
    assert "the expression is 9" in out.split("feedback turn:")[0]  # the certificate, for people
    turn = turn_printed(out)
    assert "10 is not the expression's value" in turn and "9" not in turn
    assert main([*args, "--turns", "--json"]) == 0  # the alias; JSON gets the key
    record = json.loads(capsys.readouterr().out)
    assert record["feedback"] == turn.rstrip("\n") and record["certificate"]["verdict"] == "wrong_value"
    f.write_text("7+2=9")
    assert main([*args, "--feedback"]) == 0
    assert turn_printed(capsys.readouterr().out).strip() == "(correct: no feedback turn)"
    assert main([*args, "--feedback", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["feedback"] is None
    assert main(args) == 0 and "feedback" not in capsys.readouterr().out  # only when asked


def test_check_feedback_of_many_and_of_a_failed_check(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"example": e, "completion": c}) for e, c in
                             (("3+4+2=", "7+2=10"), ("3+4+2=", "7+2=9"))) + "\n")
    assert main(["check", "--task", "arith", "--input", str(src), "--feedback", "--check.workers", "0"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "10 is not the expression's value" in lines[0]["feedback"] and lines[1]["feedback"] is None

    user = tmp_path / "my_task.py"  # a task of one's own: its feedback override, and a checker that fails
    user.write_text(textwrap.dedent('''
        from rlsf.feedback import Certificate, Span
        from rlsf.tasks import Task

        class Echo(Task):
            def load(self, split):
                return [{"id": "a", "word": "yes"}]
            def prompt(self, ex):
                return [{"role": "user", "content": "Say yes."}]
            def check(self, ex, completion):
                if completion.strip() == "boom":
                    raise RuntimeError("checker bug")
                ok = completion.strip() == ex["word"]
                return Certificate(float(ok), "correct" if ok else "wrong", ok,
                                   [] if ok else [Span(0, len(completion), -1.0, "not the word")])
            def feedback(self, ex, completion, certificate):
                return "Say the one word the prompt asks for."
    '''))
    f = tmp_path / "answer.txt"
    for text, want in (("no", "Say the one word the prompt asks for."), ("boom", "(checker failed: no feedback turn)")):
        f.write_text(text)
        assert main(["check", "--task", f"{user}:Echo", "--example", "a", "--completion", str(f), "--feedback",
                     "--check.workers", "0"]) == 0
        assert turn_printed(capsys.readouterr().out).strip() == want


def test_the_docs_override_runs_word_for_word(tmp_path, capsys) -> None:
    """docs/concepts/feedback-turns.md, "Your own task's feedback": the class, through `rlsf check`."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "concepts" / "feedback-turns.md").read_text()
    section = page[page.index("## Your own task's feedback"):]
    (tmp_path / "my_tasks.py").write_text(re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1))
    (tmp_path / "answer.txt").write_text("7+2=10")
    assert main(["check", "--task", f"{tmp_path / 'my_tasks.py'}:TerseArith", "--example", "3+4+2=", "--completion",
                 str(tmp_path / "answer.txt"), "--feedback", "--check.workers", "0"]) == 0
    turn = turn_printed(capsys.readouterr().out).strip()
    assert turn == "Check '10' again, then write the whole chain." and turn in section
