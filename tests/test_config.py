"""Typed configuration: YAML, flags, validation errors that name the setting."""

from pathlib import Path

import pytest

from rlsf.cli.main import build_parser, main
from rlsf.config import Config
from rlsf.settings import ConfigError


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
    ({"ppo.lr": -1}, "ppo.lr"),
    ({"sft.max_grad_norm": -1}, "sft"),
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


# ---- each command offers the settings its stage reads, and no other ---------------------------

def _offered_in_help(command: str) -> set[str]:
    import re

    from rlsf.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {m for m in re.findall(r"--([a-z_]+\.[a-z_]+)", sub.format_help())}


def test_sft_help_lists_only_what_sft_reads():
    offered = _offered_in_help("sft")
    assert {s.split(".")[0] for s in offered} == {"model", "task", "sft", "run"}
    assert {"sft.lr", "sft.warmup_steps", "sft.weight_decay", "sft.max_grad_norm"} <= offered
    assert not any(s.startswith(("optim.", "ppo.", "rollout.", "train.")) for s in offered)
    assert "model.sampling_autocast" not in offered  # SFT never samples


def test_eval_and_check_offer_single_fields_of_shared_sections():
    evaluated = _offered_in_help("eval")
    assert {s for s in evaluated if s.startswith("rollout.")} == {
        "rollout.engine", "rollout.fused_step", "rollout.vllm_memory_share", "rollout.vllm_kv_cache_gib",
        "rollout.vllm_max_model_len"}
    assert "model.lora" not in evaluated and "run.loggers" not in evaluated  # evaluation loads no adapters, logs no steps
    checked = _offered_in_help("check")
    assert {s for s in checked if s.startswith("reward.")} == {"reward.mode", "reward.spread_spans", "reward.span_weight"}


def test_stage_settings_name_real_settings():
    from rlsf.cli.main import COMMANDS
    from rlsf.config import iter_fields, sections
    from rlsf.stages import STAGE_SETTINGS

    names = {d for d, *_ in iter_fields()}
    assert set(STAGE_SETTINGS) == set(COMMANDS)
    for command, items in STAGE_SETTINGS.items():
        for item in items:
            assert item == "algorithm" or item in sections() or item in names, (command, item)


@pytest.mark.parametrize("argv, message", [
    (["sft", "--ppo.lr", "1e-5"], "--ppo.lr is not a setting of `rlsf sft`, which does not read it; it belongs to "
                                  "`rlsf pipeline`, `rlsf train`, `rlsf experiment`"),
    (["eval", "--rollout.temperature", "1"], "--rollout.temperature is not a setting of `rlsf eval`"),
    (["sft", "--optim.lr", "1e-5"], "--optim.lr: this setting moved; the optimiser settings belong to the stage"),
    (["train", "--train.share_prompts", "false"], "ppo.share_prompts or grpo.share_prompts"),
    (["train", "--ppo.lrr", "1"], "--ppo.lrr: no such setting"),
])
def test_a_flag_the_command_ignores_is_refused_with_where_it_belongs(argv, message, capsys):
    from rlsf.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_flag_for_another_algorithm_is_refused(capsys):
    from rlsf.cli.main import main

    assert main(["train", "--algorithm", "grpo", "--ppo.lr", "1e-5", "--train.steps", "0"]) == 2
    assert ("--ppo.lr is a setting of algorithm ppo, but train.algorithm is grpo: it would be ignored "
            "(use --grpo.lr, or --algorithm ppo)") in capsys.readouterr().err


def test_the_old_optim_section_says_where_its_settings_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("optim:\n  lr: 1.0e-5\n")
    with pytest.raises(ConfigError, match="config section 'optim' is gone: the optimiser settings belong to the stage "
                                          "that trains: sft.lr"):
        Config.load(old)
    with pytest.raises(ConfigError, match=r"optim\.lr: this setting moved"):
        Config.load(None, {"optim.lr": 1e-5})


def test_each_trainable_stage_owns_its_optimiser():
    cfg = Config.load(None, {"sft.lr": 2e-4, "sft.weight_decay": 0.1, "ppo.lr": 1e-6, "grpo.warmup_steps": 0,
                             "expert_iteration.max_grad_norm": 0.5, "orm.weight_decay": 0.01})
    assert (cfg.sft.lr, cfg.sft.weight_decay, cfg.ppo.lr, cfg.grpo.warmup_steps) == (2e-4, 0.1, 1e-6, 0)
    assert cfg.expert_iteration.max_grad_norm == 0.5 and cfg.orm.weight_decay == 0.01
    with pytest.raises(ConfigError, match="sft: weight_decay and max_grad_norm must be >= 0"):
        Config.load(None, {"sft.weight_decay": -1})


def test_engine_settings_are_checked():
    """The engines by name (``rlsf`` still accepted as the builtin engine's earlier name); vLLM's
    settings and the importance cap refuse values that cannot work, naming the setting."""
    import importlib.util

    assert Config.load(None, {"rollout.engine": "rlsf"}).rollout.engine == "rlsf"
    with pytest.raises(ConfigError, match="rollout.engine: must be builtin, hf, vllm"):
        Config.load(None, {"rollout.engine": "vlm"})
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="vllm is not installed"):
            Config.load(None, {"rollout.engine": "vllm"})
    with pytest.raises(ConfigError, match="rollout.importance_cap: must be 0"):
        Config.load(None, {"rollout.importance_cap": 0.5})
    with pytest.raises(ConfigError, match="rollout.vllm_memory_share"):
        Config.load(None, {"rollout.vllm_memory_share": 1.5})
