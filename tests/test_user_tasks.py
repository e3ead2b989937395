"""A user's own task with no package: specs (``FILE.py:NAME``, ``module:NAME``) wherever a task
name is accepted, the function API (:func:`rlsf.tasks.function_task`), the three ``examples/``
through ``rlsf check`` and one training step each (one with spawned check workers), the function-API
block of the README and of docs/tasks/custom.md, and the errors a user meets."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from rlsf.cli.main import main
from rlsf.config import Config
from rlsf.feedback import Certificate, Span
from rlsf.feedback.service import CheckService
from rlsf.tasks import FunctionTask, TaskError, function_task, get_task, task_class
from rlsf.tasks.harness import check_checker, reward_ordering

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPECS = {"json": f"{EXAMPLES / 'json_fields.py'}:JsonFields", "derivative": f"{EXAMPLES / 'derivative.py'}:Derivative",
         "python": f"{EXAMPLES / 'python_function.py'}:PythonFunction"}


def sandbox_or_skip() -> None:
    from rlsf.sandbox import Sandbox, SandboxUnavailable

    try:
        Sandbox()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")


def tiny_cfg(tiny_model_dir: str, tmp_path: Path, **overrides) -> Config:
    """One RL step on the tiny model (as in tests/test_training.py)."""
    base = {"model.name": tiny_model_dir, "model.autocast": "none", "check.workers": 0, "train.steps": 1,
            "rollout.prompts_per_step": 2, "rollout.samples_per_prompt": 2, "rollout.max_new_tokens": 12,
            "ppo.minibatch_size": 2, "grpo.minibatch_size": 2, "train.save_every": 0, "ppo.lr": 1e-3,
            "run.output_dir": str(tmp_path / "run"), "run.progress": False}
    return Config.load(None, {**base, **overrides})


# ---- the examples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("which, example, reply, correct", [
    ("json", "ada", '{"name": "Ada Lovelace", "age": 36, "city": "London"}', True),
    ("json", "ada", '{"name": "Ada Lovelace", "age": 35, "city": "London"}', False),
    ("derivative", "d6", "f'(x) = 2*x*sin(x) + x**2*cos(x)", True),
    ("derivative", "d6", "f'(x) = 2*x*sin(x) - x**2*cos(x)", False),
    ("python", "add", "def add(a, b):\n    return a + b\n", True),
    ("python", "add", "def add(a, b):\n    return a - b\n", False),
])
def test_examples_check_from_the_command_line(which, example, reply, correct, tmp_path, capsys):
    if which == "python":
        sandbox_or_skip()
    answer = tmp_path / "answer.txt"
    answer.write_text(reply)
    assert main(["check", "--task", SPECS[which], "--example", example, "--completion", str(answer), "--json",
                 "--check.workers", "0"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificate"]
    assert cert["correct"] is correct and cert["attempted"] and not cert["failed"]
    if not correct:  # the span points at the wrong part
        wrong = [s for s in cert["spans"] if s["reward"] < 0]
        assert wrong and {"json": "35", "derivative": "x**2*cos(x)", "python": "return a - b"}[which] in {
            reply[s["start"]:s["end"]] for s in wrong}


def test_check_input_with_two_spawned_workers(tmp_path, capsys):
    """A class loaded from a file does not unpickle in a spawned worker: workers load the spec again."""
    lines = [{"example": "d1", "completion": "f'(x) = 3*x**2 + 2"}, {"example": "d4", "completion": "f'(x) = 1/x"},
             {"example": "d2", "completion": "I don't know."}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["check", "--task", SPECS["derivative"], "--input", str(src), "--check.workers", "2"]) == 0
    certs = [json.loads(line)["certificate"] for line in capsys.readouterr().out.splitlines()]
    assert [c["verdict"] for c in certs] == ["correct", "wrong", "prose"]
    assert not any(c["failed"] for c in certs) and certs[2]["attempted"] is False


def test_rlsf_tasks_name_takes_a_relative_file(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["tasks", "--name", "examples/derivative.py"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("derivative: splits train, test") and "success_threshold" in out


@pytest.mark.parametrize("which, workers", [("json", 2), ("derivative", 0), ("python", 0)])
def test_one_training_step_on_each_example(which, workers, tiny_model_dir, tmp_path, monkeypatch):
    from rlsf.stages.train import RLTrainer

    monkeypatch.chdir(ROOT)  # a relative spec, as typed in the repository root
    spec = "examples/" + Path(SPECS[which].split(":")[0]).name + ":" + SPECS[which].split(":")[1]
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"task.name": spec, "check.workers": workers})
    metrics = RLTrainer(cfg).train()
    assert "reward/total" in metrics and metrics["check/failed"] == 0.0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"]["name"] == SPECS[which]  # absolute: --resume works from any directory


def test_examples_pass_the_checker_harness_and_the_reward_ordering():
    for which in ("json", "derivative"):
        task = get_task(SPECS[which])
        examples = task.load("train") + task.load("test")
        assert check_checker(task, examples, max_examples=60).total >= 50
        report = reward_ordering(task, examples)
        assert report, report.violations


def test_the_sandbox_example_passes_the_harness():
    sandbox_or_skip()
    task = get_task(SPECS["python"])
    examples = task.load("train")[:2]
    assert check_checker(task, examples, max_examples=16, time_limit_s=5.0).total >= 12
    report = reward_ordering(task, examples)
    assert report, report.violations


# ---- specs and their errors ---------------------------------------------------------------------------

def test_spec_errors_say_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError, match=r"task file .*missing\.py not found \('missing\.py' is taken from the "
                                        r"current directory\)"):
        get_task("missing.py:Foo")
    (tmp_path / "broken.py").write_text("x = 1\nraise RuntimeError('no licence')\n")
    with pytest.raises(TaskError, match=r"broken\.py failed to import: RuntimeError: no licence \(.*broken\.py:2\)"):
        get_task("broken.py")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    with pytest.raises(TaskError, match=r"syntax\.py failed to import: SyntaxError"):
        task_class("syntax.py:f")
    (tmp_path / "two.py").write_text(textwrap.dedent("""
        from rlsf.tasks import function_task
        A = function_task("a", lambda row, text: 1.0, data=[{"q": 1}, {"q": 2}], prompt="{q}")
        B = function_task("b", lambda row, text: 1.0, data=[{"q": 1}, {"q": 2}], prompt="{q}")
        helper = 3
    """))
    with pytest.raises(TaskError, match=r"two\.py: it defines A, B; name the one to use as .*two\.py:NAME"):
        get_task("two.py")
    with pytest.raises(TaskError, match=r"two\.py has no 'C'; it defines A, B"):
        get_task("two.py:C")
    with pytest.raises(TaskError, match=r"two\.py: helper is an int, not a Task subclass"):
        get_task("two.py:helper")
    assert get_task("two.py:B").name == "b"
    with pytest.raises(TaskError, match=r"task module 'no_such_pkg\.tasks' not found.*PYTHONPATH"):
        get_task("no_such_pkg.tasks:X")
    with pytest.raises(TaskError, match=r"unknown task 'nope'; available: .*path/to/file\.py:NAME"):
        get_task("nope")
    assert main(["tasks", "--name", "two.py:C"]) == 2  # the command line prints the same line


def test_module_spec_and_its_workers(tmp_path, monkeypatch):
    pkg = tmp_path / "my_rlsf_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "upper.py").write_text(textwrap.dedent("""
        from rlsf.tasks import function_task

        def check(row, text):
            return float(text.strip() == row["word"].upper())

        Shout = function_task("shout", check, data={"train": [{"word": "hi"}], "test": [{"word": "yo"}]},
                              prompt="Say {word} in capitals.")
    """))
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    assert task_class("my_rlsf_tasks.upper") is task_class("my_rlsf_tasks.upper:Shout")
    task = get_task("my_rlsf_tasks.upper:Shout")
    assert task.splits == ("train", "test") and task.load("test")[0]["id"] == "test:0"
    with CheckService(task, workers=1) as service:  # the class's name is not its variable's: rebuilt by spec
        checked = service.check(task.load("train") * 2, texts=["HI", "hi"])
    assert [c.certificate.correct for c in checked] == [True, False]
    with pytest.raises(TaskError, match=r"task module 'my_rlsf_tasks\.broken' failed to import: ModuleNotFoundError: "
                                        r"No module named 'no_such_dependency_xyz' \(.*broken\.py:1\)"):
        get_task("my_rlsf_tasks.broken:X")


# ---- the function API ---------------------------------------------------------------------------------

def test_a_score_becomes_a_certificate_and_blank_is_no_attempt():
    calls = []

    def score(row, text):
        calls.append(text)
        return {"half": 0.5, "full": 1, "yes": True}.get(text.strip(), 0.0)

    Task_ = function_task("scored", score, data=[{"q": i} for i in range(10)], prompt="Question {q}?")
    task = Task_()
    ex = task.load("train")[0]
    half, full, yes = task.check(ex, "half"), task.check(ex, "full"), task.check(ex, "yes")
    assert (half.score, half.correct, half.verdict, half.attempted) == (0.5, False, "wrong", True)
    assert (full.score, full.correct, full.verdict) == (1.0, True, "correct") and yes.correct
    assert Task_(success_threshold=0.5).check(ex, "half").correct  # the rule: score >= success_threshold
    calls.clear()
    for blank in ("", "  \n\t", f"  question {ex['q']}? "):  # nothing, blank, the prompt restated
        cert = task.check(ex, blank)
        assert not cert.attempted and cert.score == -1.0
    assert calls == []  # decided before the user's function runs


def test_a_failing_check_function_is_named_not_a_traceback(capsys):
    def buggy(row, text):
        return row["missing"]

    task = function_task("buggy", buggy, data=[{"q": 1}, {"q": 2}], prompt="{q}")()
    cert = task.check(task.load("train")[0], "an answer")
    assert cert.failed and re.search(r"check function .*buggy \(.*test_user_tasks\.py:\d+\) raised KeyError: "
                                     r"'missing'", cert.info["checker_error"])
    assert "buggy" in capsys.readouterr().err
    none = function_task("silent", lambda row, text: None, data=[{"q": 1}, {"q": 2}], prompt="{q}")()
    assert "returned None" in none.check(none.load("train")[0], "x").info["checker_error"]


def test_data_forms_and_splits(tmp_path):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "q": i}) + "\n" for i in range(10))
                                         + "not json\n")
    (tmp_path / "rows.csv").write_text("q,answer\n1,one\n2,two\n")
    (tmp_path / "make.py").write_text(textwrap.dedent("""
        from rlsf.tasks import function_task
        FromFile = function_task("from_file", lambda row, text: 1.0, data="rows.jsonl", prompt="{q}", test_size=0.3)
    """))
    task = get_task(f"{tmp_path / 'make.py'}:FromFile")  # the path beside the file that made it
    train, test = task.load("train"), task.load("test")
    assert len(train) == 7 and len(test) == 3 and not {e["id"] for e in train} & {e["id"] for e in test}
    assert task.malformed["train"] and "line 11" in task.malformed["train"][0]
    assert [e["id"] for e in get_task(f"{tmp_path / 'make.py'}:FromFile").load("test")] == [e["id"] for e in test]
    assert [e["id"] for e in get_task(f"{tmp_path / 'make.py'}", seed=1).load("test")] != [e["id"] for e in test]
    csv_task = function_task("csv", lambda r, t: 1.0, data={"train": str(tmp_path / "rows.csv")}, prompt="{q}",
                             demonstration="answer")()
    assert csv_task.splits == ("train",) and csv_task.demonstration(csv_task.load("train")[1]) == "two"

    class FakeDataset:  # a datasets.Dataset as rlsf sees it
        def to_list(self):
            return [{"q": "a"}, {"other": "b"}, {"q": "c"}]

    ds = function_task("ds", lambda r, t: 1.0, data={"test": FakeDataset(), "train": lambda: [{"q": 1}]},
                       prompt="{q}")()
    assert ds.splits == ("train", "test") and [e["q"] for e in ds.load("test")] == ["a", "c"]
    assert "needs field 'q'" in ds.malformed["test"][0]
    messages = function_task("sys", lambda r, t: 1.0, data=[{"q": 1}, {"q": 2}], prompt="{q}?", system="Be brief.")()
    assert messages.prompt({"q": 1}) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1?"}]
    with pytest.raises(TaskError, match="test_size 5 leaves no training rows"):
        function_task("small", lambda r, t: 1.0, data=[{"q": 1}] * 3, prompt="{q}", test_size=5)().load("train")
    assert issubclass(type(ds), FunctionTask)


@pytest.mark.parametrize("page", ["README.md", "docs/tasks/custom.md"])
def test_the_documented_function_api_block(page, tmp_path, capsys):
    """The function-API example of the README's "Your own checker" and of docs/tasks/custom.md, word for word."""
    text = (ROOT / page).read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "function_task(" in b)
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent(block))
    task = get_task(f"{tmp_path / 'my_tasks.py'}:Times")
    ex = task.load("train")[0]
    assert task.check(ex, task.demonstration(ex)).correct
    wrong = task.check(ex, str(ex["a"] * ex["b"] + 1))
    assert not wrong.correct and wrong.attempted and wrong.spans[0].reward < 0
    assert not task.check(ex, "I don't know.").attempted
    assert reward_ordering(task, task.load("test")[:8])
    assert isinstance(task.check(ex, "x"), Certificate) and Span  # the block's imports are the public ones
