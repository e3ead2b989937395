"""The documentation's "A task class" (docs/tasks/custom.md) and "Adding an algorithm"
(docs/algorithms/adding.md) code, run word for word, and a task plug-in found through the
``rlsf.tasks`` entry-point group of an installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: (docs page, heading) of each example run here: the first ```python block under the heading.
DOC_EXAMPLES = (("docs/tasks/custom.md", "A task class"), ("docs/algorithms/adding.md", "Adding an algorithm"))


def docs_block(page: str, heading: str) -> str:
    """The first ```python block under the heading ``heading`` (any level) of the docs page ``page``."""
    text = (ROOT / page).read_text()
    section = text[re.search(rf"^#+ {re.escape(heading)}$", text, re.MULTILINE).end():]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def readme_plugins():
    """Run both docs blocks in one namespace; unregister what they registered afterwards."""
    from rlsf.algorithms import ALGORITHMS
    from rlsf.settings import EXTRA_SECTIONS
    from rlsf.tasks.base import _REGISTRY

    module = types.ModuleType("readme_examples")  # a user's module: importable by name, as dataclasses expect
    sys.modules[module.__name__] = module
    for page, heading in DOC_EXAMPLES:
        code = compile(docs_block(page, heading), f"{page} ({heading})", "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102  (our own docs)
    yield module
    sys.modules.pop(module.__name__, None)
    _REGISTRY.pop("parity", None)
    ALGORITHMS.pop("my_algo", None)
    EXTRA_SECTIONS.pop("my_algo", None)


def test_readme_task_checks_and_the_cli_uses_it(readme_plugins, tmp_path, capsys):
    from rlsf.cli.main import main
    from rlsf.tasks import available_tasks, get_task

    assert "parity" in available_tasks()
    task = get_task("parity", n=10)
    train, test = task.load("train"), task.load("test")
    assert len(train) == len(test) == 10 and test[0]["id"] == 10
    assert task.check(train[2], "yes").correct and not task.check(train[3], "yes").correct
    wrong = task.check(train[3], "yes")
    assert wrong.spans and wrong.spans[0].reward < 0
    completion = tmp_path / "answer.txt"
    completion.write_text("no")
    assert main(["check", "--task", "parity", "--example", "7", "--completion", str(completion), "--json",
                 "--check.workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["certificate"]["correct"] is True


def test_readme_algorithm_gets_its_flags_and_trains_on_the_readme_task(readme_plugins, tiny_model_dir, tmp_path):
    from test_training import tiny_cfg

    from rlsf.cli.main import build_parser
    from rlsf.config import Config
    from rlsf.settings import ConfigError
    from rlsf.stages.train import RLTrainer

    args = build_parser().parse_args(["train", "--algorithm", "my_algo", "--my_algo.baseline", "0.5"])
    assert vars(args)["my_algo.baseline"] == "0.5" and vars(args)["train.algorithm"] == "my_algo"
    assert Config.load(None, {"train.algorithm": "my_algo", "my_algo.baseline": "0.5"}).my_algo.baseline == 0.5
    with pytest.raises(ConfigError, match="my_algo.baseline: must be > -10"):
        Config.load(None, {"train.algorithm": "my_algo", "my_algo.baseline": -20})
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "my_algo", "train.steps": 1,
                                                 "task.name": "parity", "task.options": {"n": 8}})
    metrics = RLTrainer(cfg).train()
    assert metrics["loss/my"] == 0.0 and "reward/total" in metrics


PLUGIN = '''
"""A task shipped by another package."""
from rlsf.feedback import Certificate
from rlsf.tasks import Task


class Echo(Task):
    splits = ("test",)

    def load(self, split):
        return [{"id": 0, "word": "hello"}]

    def prompt(self, ex):
        return [{"role": "user", "content": "Say " + ex["word"]}]

    def check(self, ex, completion):
        ok = completion.strip() == ex["word"]
        return Certificate(float(ok), "correct" if ok else "wrong", ok)
'''


def test_a_task_plugin_is_found_through_its_entry_point(tmp_path):
    """An installed distribution listing ``echo = echo_plugin:Echo`` under ``rlsf.tasks``: `rlsf tasks`
    lists it and `rlsf check` checks with it, with no import by the user."""
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    info = tmp_path / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rlsf.tasks]\necho = echo_plugin:Echo\n")
    (tmp_path / "answer.txt").write_text("hello")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def rlsf(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rlsf", *argv], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    listed = rlsf("tasks")
    assert listed.returncode == 0 and re.search(r"^echo\s", listed.stdout, re.M), listed.stdout + listed.stderr
    checked = rlsf("check", "--task", "echo", "--example", "0", "--completion", "answer.txt", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["certificate"]["correct"] is True


def test_a_broken_plugin_is_reported_and_the_rest_still_load(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('no licence server')\n")
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rlsf.tasks]\nbroken = broken_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "rlsf", "tasks"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0 and "game24" in out.stdout
    assert textwrap.dedent("""task plug-in 'broken' (broken_plugin) failed to load: RuntimeError: no licence
    server""").replace("\n    ", " ") in out.stderr


ALGO_PLUGIN = '''
from rlsf.algorithms.ppo import PPO


class LoudPPO(PPO):
    """PPO under another name: enough to show the plug-in is registered with its settings."""
'''


def test_an_algorithm_plugin_is_found_through_its_entry_point(tmp_path):
    """``loud_ppo = loud_plugin:LoudPPO`` under ``rlsf.algorithms``: --algorithm loud_ppo and its settings
    section --loud_ppo.* work with no import by the user; a broken one is reported in one line."""
    (tmp_path / "loud_plugin.py").write_text(ALGO_PLUGIN)
    (tmp_path / "broken_algo.py").write_text("raise RuntimeError('no licence server')\n")
    info = tmp_path / "loud_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: loud-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rlsf.algorithms]\nloud_ppo = loud_plugin:LoudPPO\n"
                                           "broken_algo = broken_algo\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = ("from rlsf.config import Config\n"
            "c = Config.load(None, {'train.algorithm': 'loud_ppo', 'loud_ppo.lr': 2e-6})\n"
            "c.validate()\n"
            "print(type(c.algo).__name__ if hasattr(c, 'algo') else '', c.train.algorithm)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "loud_ppo"
    assert "algorithm plug-in 'broken_algo' (broken_algo) failed to load: RuntimeError: no licence server" \
        in out.stderr
