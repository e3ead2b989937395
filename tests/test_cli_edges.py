"""The rough edges a new user meets first: tests on a plain clone, ``--version``, a missing model
folder, bad YAML in a flag, a mistyped flag, the run folder's default, the W&B project, unknown
example ids and evaluation's progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlsf.cli.main import build_parser, command_flags, main, version
from rlsf.config import Config
from rlsf.settings import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- 1. missing task data: skipped on a plain clone, failed in CI ---------------------------------

PLAIN_CLONE_TESTS = '''
import subprocess, sys
import pytest
from rlsf.tasks import get_task


def test_needs_svamp():  # raises TaskError: cannot find svamp/SVAMP.json
    get_task("svamp").load("test")


def test_needs_gsm8k_in_a_subprocess():  # the failure only shows the subprocess's traceback
    code = "from rlsf.tasks import get_task; get_task('gsm8k').load('test')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_fails_for_another_reason():
    assert 1 == 2


def test_passes():
    assert get_task("arith").load("test")
'''


def _run_plain_clone(tmp_path: Path, ci: str) -> tuple[dict[str, str], str]:
    """The conftest's rule on a project copy whose data folder is empty: the outcome of each test."""
    project = tmp_path / f"clone-ci{ci or 'unset'}"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (project / "tests" / "test_plain.py").write_text(PLAIN_CLONE_TESTS)
    (project / "empty-data").mkdir()
    env = {**os.environ, "RLSF_DATA_DIR": str(project / "empty-data"), "CI": ci,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{project / 'tests'}"}  # rlsf of this tree; the recording plugin
    report = project / "report.jsonl"
    plugin = textwrap.dedent(f'''
        import json
        def pytest_runtest_logreport(report):
            if report.when == "call" or report.outcome != "passed":
                with open({str(report)!r}, "a") as f:
                    f.write(json.dumps({{"test": report.nodeid.split("::")[-1], "outcome": report.outcome}}) + "\\n")
        ''')
    (project / "tests" / "record.py").write_text(plugin)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "record",
                           "tests/test_plain.py"], cwd=project, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    outcomes = {r["test"]: r["outcome"] for r in map(json.loads, report.read_text().splitlines())}
    return outcomes, proc.stdout + proc.stderr


def test_missing_task_data_skips_with_where_to_get_it_and_fails_in_ci(tmp_path):
    outcomes, out = _run_plain_clone(tmp_path, ci="")
    assert outcomes == {"test_needs_svamp": "skipped", "test_needs_gsm8k_in_a_subprocess": "skipped",
                        "test_fails_for_another_reason": "failed", "test_passes": "passed"}, out
    assert "task 'svamp' needs svamp/SVAMP.json" in out and "https://github.com/arkilpatel/SVAMP" in out, out
    assert "task 'gsm8k' needs gsm8k/test.jsonl" in out and "set RLSF_DATA_DIR" in out, out

    outcomes, out = _run_plain_clone(tmp_path, ci="true")  # as .ci/run sets it
    assert outcomes == {"test_needs_svamp": "failed", "test_needs_gsm8k_in_a_subprocess": "failed",
                        "test_fails_for_another_reason": "failed", "test_passes": "passed"}, out
    assert "cannot find svamp/SVAMP.json" in out


def test_missing_data_reason_only_for_files_really_missing(tmp_path, monkeypatch):
    import conftest

    text = "rlsf.tasks.base.TaskError: task 'svamp': cannot find svamp/SVAMP.json; looked in nowhere"
    monkeypatch.setattr(conftest, "DATA", tmp_path)
    assert "svamp/SVAMP.json" in conftest.missing_data_reason(text)
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "SVAMP.json").write_text("[]")
    assert conftest.missing_data_reason(text) is None  # present: the failure is real
    assert conftest.missing_data_reason("AssertionError: cannot find it") is None
    for value, ci in (("", False), ("0", False), ("false", False), ("true", True), ("1", True)):
        monkeypatch.setenv("CI", value)
        assert conftest.in_ci() is ci


# ---- 2. --version ---------------------------------------------------------------------------------

def test_version_flag(capsys, monkeypatch):
    import importlib.metadata

    import rlsf

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rlsf {version()}"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert version() == rlsf.__version__


# ---- 3. a model folder that does not exist fails before the probe ----------------------------------

@pytest.fixture
def no_probe(monkeypatch):
    """Starting the runtime (device and precision probe) or loading a model fails the test."""
    from rlsf.stages import context

    def forbidden(*a, **k):
        raise AssertionError("the runtime probe or model loading ran")

    monkeypatch.setattr(context, "decide_runtime", forbidden)
    monkeypatch.setattr(context, "setup", forbidden)
    monkeypatch.setattr(context, "load_model", forbidden)


@pytest.mark.parametrize("argv, setting", [
    (["eval", "--model", "/no/such/dir"], "model.name"),
    (["train", "--model", "/no/such/dir"], "model.name"),
    (["sft", "--model", "./no/such/dir"], "model.name"),
    (["pipeline", "--model", "~/no/such/dir"], "model.name"),
    (["orm", "--model", "no/such/dir"], "model.name"),
    (["eval", "--eval.orm", "/no/such/orm", "--eval.selectors", "rerank"], "eval.orm"),
    (["train", "--reward.orm", "/no/such/orm"], "reward.orm"),
])
def test_missing_local_model_fails_fast(argv, setting, capsys, tmp_path, no_probe):
    assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"rlsf: error: {setting}: model folder ") and "does not exist" in line, line
    assert not (tmp_path / "run").exists()


def test_model_references_that_pass_the_early_check(tmp_path, no_probe):
    from rlsf.models.loading import ModelError, check_model_reference
    from rlsf.stages.context import start

    for ok in ("smollm2-135m", "HuggingFaceTB/SmolLM2-360M-Instruct", "gpt2", str(tmp_path)):
        check_model_reference(ok)  # embedded, hub ids (only loading tells), an existing folder
    with pytest.raises(ModelError, match="model.name: model folder '/no/such/dir' does not exist"):
        start(Config.load(None, {"model.name": "/no/such/dir"}))  # the Python API, too


# ---- 4. bad YAML in a flag shows YAML's message --------------------------------------------------

def test_bad_yaml_in_task_options_shows_yamls_message(capsys, tmp_path):
    assert main(["eval", "--task.options", "{a: 1", "--output-dir", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "task.options: not valid YAML: expected ',' or '}', but got '<stream end>' at line 1, column 6" in line
    assert "'{a: 1'" in line
    with pytest.raises(ConfigError, match=r"eval\.selectors: not valid YAML: .* at line 1, column"):
        Config.load(None, {"eval.selectors": "[maj"})
    (tmp_path / "bad.yaml").write_text("run:\n  seed: 1\ntrain: [unclosed\n")
    assert main(["eval", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 4, column 1" in one_line_error(capsys)


# ---- 5. unknown flags get a suggestion -----------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train", "--step", "3"], "rlsf train: error: unknown flag --step; did you mean --steps?"),
    (["sft", "--output_dir", "x"], "rlsf sft: error: unknown flag --output_dir; did you mean --output-dir?"),
    (["eval", "--no-progres"], "rlsf eval: error: unknown flag --no-progres; did you mean --no-progress?"),
    (["tasks", "--nmae", "game24"], "rlsf tasks: error: unknown flag --nmae; did you mean --name?"),
    (["train", "--ppo.lrr", "1"], ("--ppo.lrr: no such setting (`rlsf train --help` lists this command's settings); "
                                   "did you mean --ppo.lr?")),
    (["train", "--zzzz", "1"], "rlsf train: error: unknown flag --zzzz (`rlsf train --help` lists them)"),
])
def test_unknown_flags_get_a_suggestion(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in one_line_error(capsys)


def test_a_prefix_is_not_taken_for_the_flag():
    """argparse's abbreviations are off: --step is not silently --steps (a new flag could change it)."""
    assert "--steps" in command_flags(build_parser(), "train")
    with pytest.raises(SystemExit):
        main(["train", "--step", "3"])
    args = build_parser().parse_args(["train", "--steps", "3"])
    assert vars(args)["train.steps"] == "3"


# ---- 6. the run folder's default is per task ------------------------------------------------------

def test_output_dir_defaults_to_the_task(tmp_path):
    assert Config.load(None).run.output_dir == "runs/game24"
    assert Config.load(None, {"task.name": "spoc"}).run.output_dir == "runs/spoc"
    explicit = Config.load(None, {"task.name": "spoc", "run.output_dir": "runs/game24"})
    assert explicit.run.output_dir == "runs/game24"  # a value given is kept, even the old default
    (tmp_path / "c.yaml").write_text("task:\n  name: svamp\nrun:\n  output_dir: elsewhere/x\n")
    assert Config.load(tmp_path / "c.yaml").run.output_dir == "elsewhere/x"
    (tmp_path / "d.yaml").write_text("task:\n  name: svamp\n")
    assert Config.load(tmp_path / "d.yaml").run.output_dir == "runs/svamp"
    args = build_parser().parse_args(["eval", "--task", "gsm8k"])
    from rlsf.cli.main import _config_from_args

    assert _config_from_args(args).run.output_dir == "runs/gsm8k"


def test_shipped_configs_name_their_run_folder():
    import yaml

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert data["run"]["output_dir"] == f"runs/{path.stem}", path  # as the docs' examples assume


# ---- 7. the W&B project is a setting ------------------------------------------------------------

def test_wandb_project_and_entity(monkeypatch, tmp_path):
    import types

    from rlsf.runtime.metric_log import MetricLogger, wandb_target

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert wandb_target(Config.load(None).to_dict()) == ("rlsf", None)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_ENTITY", "team-env")
    assert wandb_target(Config.load(None).to_dict()) == ("from-env", "team-env")
    cfg = Config.load(None, {"run.wandb_project": "mine", "run.wandb_entity": "me"})
    assert wandb_target(cfg.to_dict()) == ("mine", "me")  # the setting wins over the environment

    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or types.SimpleNamespace(
        log=lambda *a, **k: None, finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    logger = MetricLogger(tmp_path, ["wandb"], cfg.to_dict())
    logger.close()
    assert calls and calls[0]["project"] == "mine" and calls[0]["entity"] == "me"


def test_wandb_settings_are_flags_of_the_commands_that_log():
    parser = build_parser()
    for command in ("train", "sft", "pipeline", "orm", "experiment"):
        flags = command_flags(parser, command)
        assert "--run.wandb_project" in flags and "--run.wandb_entity" in flags, command
    assert "--run.wandb_project" not in command_flags(parser, "eval")  # evaluation logs no steps


# ---- 8. an unknown example id says which ids exist ----------------------------------------------

def test_unknown_example_names_the_ids(capsys, tmp_path):
    from rlsf.tasks import TaskError, get_task
    from rlsf.tasks.base import describe_ids

    with pytest.raises(TaskError) as e:
        get_task("game24").example(0)
    assert "no example with id '0'; ids are train: 1-900, 1001-1362; test: 901-1000" in str(e.value)
    assert describe_ids(["test:1", "test:2", "test:3"]) == "test:1-3"
    assert describe_ids(["1", "2", "4"]) == "1-2, 4"
    assert describe_ids(["a", "b", "c", "d"]) == "4 ids, e.g. a, b, c"
    assert describe_ids([str(i) for i in range(0, 20, 2)]) == "10 ids, e.g. 0, 2, 4"

    (tmp_path / "answer.txt").write_text("Answer: 4 * 6 = 24\n")
    assert main(["check", "--task", "game24", "--example", "0", "--completion", str(tmp_path / "answer.txt"),
                 "--check.workers", "0"]) == 2
    assert "test: 901-1000" in one_line_error(capsys)


# ---- 9. evaluation shows its progress -----------------------------------------------------------

def test_evaluation_progress_bar(tiny_model_dir, tmp_path, capsys):
    from rlsf.stages.evaluate import evaluate

    base = {"model.name": tiny_model_dir, "model.autocast": "none", "check.workers": 0, "eval.num_examples": 3,
            "eval.k": 1, "eval.max_new_tokens": 4, "eval.batch_size": 2, "run.output_dir": str(tmp_path / "a")}
    evaluate(Config.load(None, base))
    err = capsys.readouterr().err
    assert "eval/test" in err and "6/6" in err and "completion" in err, err  # 3 greedy + 3 sampled, in batches of 2
    evaluate(Config.load(None, {**base, "run.progress": False, "run.output_dir": str(tmp_path / "b")}))
    assert "eval/test" not in capsys.readouterr().err
    assert "--no-progress" in command_flags(build_parser(), "eval")
