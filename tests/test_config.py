"""Typed configuration: YAML, flags, validation errors that name the setting."""

from pathlib import Path

import pytest

from rlsf.cli import build_parser, main
from rlsf.config import Config, ConfigError


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = Config().validate()
    cfg.save(tmp_path / "c.yaml")
    again = Config.load(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  algorithm: grpo\n  steps: 3\nppo:\n  kl_coef: 0.1\n")
    cfg = Config.load(tmp_path / "c.yaml", {"train.steps": "7", "reward.mode": "sequence", "model.lora": "true",
                                             "task.options": "{data_path: x.csv}", "run.loggers": "jsonl,tensorboard"})
    assert cfg.train.algorithm == "grpo" and cfg.train.steps == 7 and cfg.ppo.kl_coef == 0.1
    assert cfg.reward.mode == "sequence" and cfg.model.lora is True
    assert cfg.task.options == {"data_path": "x.csv"}
    assert cfg.run.loggers == ["jsonl", "tensorboard"]


@pytest.mark.parametrize("overrides, setting", [
    ({"reward.mode": "paragraph"}, "reward.mode"),
    ({"train.algorithm": "dpo"}, "train.algorithm"),
    ({"train.steps": "many"}, "train.steps"),
    ({"train.steps": 2.5}, "train.steps"),
    ({"rollout.temperature": 0}, "rollout.temperature"),
    ({"rollout.top_p": 1.5}, "rollout.top_p"),
    ({"model.dtype": "int4"}, "model.dtype"),
    ({"ppo.minibatch_size": 5}, "ppo.minibatch_size"),
    ({"train.algorithm": "grpo", "rollout.samples_per_prompt": 1, "grpo.minibatch_size": 1}, "rollout.samples_per_prompt"),
    ({"run.loggers": ["jsonl", "mlflow"]}, "run.loggers"),
    ({"model.lora": "maybe"}, "model.lora"),
    ({"optim.lr": -1}, "optim.lr"),
])
def test_invalid_settings_name_the_setting(overrides, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        Config.load(None, overrides)


def test_unknown_keys_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'ppo.clip'"):
        Config.load(None, {"ppo.clip": 0.1})
    with pytest.raises(ConfigError, match="unknown config section 'optimiser'"):
        Config.from_dict({"optimiser": {"lr": 1}})
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.load(tmp_path / "bad.yaml")


def test_every_field_is_a_flag_with_help(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--ppo.clip_range", "--reward.mode", "--rollout.samples_per_prompt", "--resume", "--steps"):
        assert flag in out
    args = parser.parse_args(["train", "--algorithm", "grpo", "--grpo.kl_coef", "0.1", "--steps", "2"])
    assert vars(args)["train.algorithm"] == "grpo" and vars(args)["grpo.kl_coef"] == "0.1"


def test_cli_reports_bad_config_without_traceback(capsys, tmp_path):
    assert main(["train", "--reward-mode", "paragraph", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "reward.mode" in err and "Traceback" not in err
    assert main(["eval", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_tasks_command(capsys):
    assert main(["tasks"]) == 0
    assert "game24" in capsys.readouterr().out
    assert main(["tasks", "--name", "game24"]) == 0
    assert "step_error_reward" in capsys.readouterr().out
    assert main(["tasks", "--name", "chess"]) == 2


def test_plot_command(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    with (run / "metrics.jsonl").open("w") as f:
        for step in range(1, 4):
            f.write(json.dumps({"step": step, "reward/total": -1.0 + step, "kl": 0.01 * step,
                                "timing/generate": 2.0, "timing/update": 1.0}) + "\n")
    assert main(["plot", str(run)]) == 0
    png = run / "metrics.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(run), "--keys", "nothing/here"]) == 2
    assert "nothing/here" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "none")]) == 2


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path: str) -> None:
    """Every file in configs/ loads, validates, and names a registered task with valid options."""
    from rlsf.tasks import get_task

    cfg = Config.load(path).validate()
    get_task(cfg.task.name, **cfg.task.options)
