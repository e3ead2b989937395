"""The benchmark scripts' own logic (their measurements are run by hand, see README)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_learning_summary_is_mean_and_spread_over_seeds(tmp_path):
    bench = load("bench_learning")
    runs = [{"setting": "rlsf token", "seed": s, "curve": [
        {"samples": 64, "success": 0.1 * s, "step_accuracy": 0.5 + 0.1 * s, "train_success": 0.0}]} for s in range(3)]
    runs.append({"setting": "TRL GRPO", "seed": 0, "curve": [
        {"samples": 64, "success": 0.0, "step_accuracy": 0.4, "train_success": 0.0}]})
    summary = bench.summarise(runs, {"success": 0.02, "step_accuracy": 0.55})
    token = summary["rlsf token"]
    assert token[0]["samples"] == 0 and token[0]["success"]["mean"] == 0.02
    assert token[1]["seeds"] == 3 and abs(token[1]["success"]["mean"] - 0.1) < 1e-12
    assert token[1]["step_accuracy"]["min"] == 0.5 and abs(token[1]["step_accuracy"]["max"] - 0.7) < 1e-12
    assert summary["TRL GRPO"][1]["seeds"] == 1 and "rlsf sequence" not in summary
    bench.plot(summary, tmp_path / "p.png", "test")
    assert (tmp_path / "p.png").stat().st_size > 0
    json.dumps(summary)  # what the script writes


def test_step_benchmark_settings_match_on_both_sides(tmp_path):
    cfg = load("bench_step_trl").rlsf_config("some/model", None, 64, 3, str(tmp_path), fixed_length=True)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt, cfg.rollout.max_new_tokens) == (1, 8, 64)
    assert cfg.rollout.ignore_eos and cfg.grpo.kl_coef == 0 and cfg.grpo.epochs == 1
    assert cfg.grpo.minibatch_size == 8  # one optimiser update per step, like TRL's num_iterations=1
