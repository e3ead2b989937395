"""The benchmark scripts' own logic (their measurements are run by hand: docs/experiments/, docs/performance/)."""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


# ---- engine v2 ports: precision, the header, and each benchmark's sides (on the tiny model) ----------------


@pytest.mark.parametrize("forced, precision", [("1", "bf16"), ("0", "none")])
def test_auto_precision_is_the_runtime_decision(monkeypatch, forced, precision):
    common = load("common")
    monkeypatch.setenv("RLSF_BF16", forced)
    got, reason = common.resolve("auto")
    assert got == precision and "runtime decision" in reason and f"RLSF_BF16={forced}" in reason


def test_forced_precision_and_the_header(capsys):
    from rlsf.runtime.device import processor_name

    common = load("common")
    assert common.resolve("none") == ("none", "forced by --precision none")
    assert common.resolve("bf16")[0] == "bf16"
    with pytest.raises(ValueError):
        common.resolve("fp16")
    ap = argparse.ArgumentParser()
    common.add_machine_flags(ap)
    args = ap.parse_args(["--precision", "none", "--threads", str(torch.get_num_threads())])
    assert common.start("bench_x", args, extra=["TRL: fp32"]) == ("none", "forced by --precision none")
    out = capsys.readouterr().out
    assert "== bench_x" in out and processor_name() in out and f"torch {torch.__version__}" in out
    assert f"{torch.get_num_threads()} torch threads" in out
    assert "rlsf precision: none (forced by --precision none)" in out
    assert "TRL: fp32" in out
    assert ap.parse_args([]).precision == "auto"


def test_step_benchmark_takes_the_precision_and_runs_on_the_cpu(tmp_path):
    bench = load("bench_step_trl")
    for precision in ("auto", "bf16", "none"):
        cfg = bench.rlsf_config("some/model", None, 64, 3, str(tmp_path), precision=precision)
        assert cfg.model.autocast == precision and cfg.model.device == "cpu"
    plain = bench.rlsf_config("some/model", None, 64, 3, str(tmp_path), False, "none", **{
        "rollout.engine": "hf", "grpo.share_prompts": False})
    assert plain.rollout.engine == "hf" and not plain.grpo.share_prompts and plain.model.autocast == "none"


def test_step_benchmark_rlsf_side_runs_and_closes_its_check_workers(tiny_model_dir, monkeypatch):
    bench = load("bench_step_trl")
    from rlsf.feedback.service import CheckService

    closed, close = [], CheckService.close

    def spy(self):
        closed.append(self)
        close(self)

    monkeypatch.setattr(CheckService, "close", spy)
    args = argparse.Namespace(tokens=2, steps=2, fixed_length=True)
    times, stages = bench.rlsf_step_times(tiny_model_dir, None, args, "none", **{"check.workers": 0})
    assert len(times) == 2 and all(t > 0 for t in times) and len(closed) == 1
    assert stages[-1]["response/length"] == 2 and "timing/update" in stages[-1] and "timing/generate" in stages[-1]


@pytest.mark.parametrize("precision", ["none", "bf16"])
def test_decode_step_sides_follow_the_precision(tiny_model, precision):
    from rlsf.rollout.fused_step import _mkldnn_bf16

    bench = load("bench_decode_step")
    makers, notes = bench.steppers(tiny_model, 2, 8 + 2, precision)
    packed = precision == "bf16" and _mkldnn_bf16()
    assert ("fused step, prepacked" in makers) == packed and len(notes) == (0 if packed else 1)
    assert bench.HF_SIDE in makers and "fused step, plain weights" in makers
    ids, mask = torch.randint(100, 1000, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    step_ms, build_s = bench.time_steps(makers, ids, mask, tokens=2, rounds=1)
    assert all(len(v) == 2 and min(v) > 0 for v in step_ms.values()) and set(build_s) == set(makers)


def test_sampling_sides_all_generate_the_same_tokens(tiny_model_dir):
    from rlsf.rollout.fused_step import _mkldnn_bf16
    from rlsf.models.loading import load_tokenizer
    from rlsf.rollout.collect import task_prompts
    from rlsf.tasks import get_task

    bench = load("bench_sampling")
    task = get_task("game24")
    prompts = task_prompts(load_tokenizer(tiny_model_dir), task, task.load("train")[:1] * 2)
    for precision in ("none", "bf16"):
        sides, notes = bench.make_sides(tiny_model_dir, prompts, 3, 2, precision)
        unpacked = "rlsf rollout, fused step, unpacked" in sides
        assert unpacked == (precision == "bf16" and _mkldnn_bf16()) and len(notes) == (not unpacked)
        assert list(sides)[0] == bench.PLAIN and list(sides)[-1] == "rlsf rollout, rlsf engine"
        assert {name: fn() for name, fn in sides.items()} == {name: 2 * 3 for name in sides}  # rows x tokens


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_memory_benchmark_counts_helper_processes():
    bench = load("bench_memory")
    child = subprocess.Popen([sys.executable, "-c", "import sys; x = bytearray(64 << 20); print('ready', flush=True); "
                              "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        peaks = bench.descendant_peaks_mib()
        assert child.pid in peaks and peaks[child.pid] >= 60
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert child.pid not in bench.descendant_peaks_mib()


def learning_args(sft_model="some/model", **kw):
    base = dict(sft_model=sft_model, data_path=None, prompts=4, samples=4, tokens=96, lr=5e-6, steps=16, eval_every=4,
                eval_examples=50, precision="none", threads=2)
    return argparse.Namespace(**{**base, **kw})


def test_learning_rlsf_arms_differ_only_in_the_reward_mode(tmp_path):
    bench = load("bench_learning")
    args = learning_args()
    token, sequence = (bench.rlsf_config(args, mode, 1, str(tmp_path)) for mode in ("token", "sequence"))
    a, b = token.to_dict(), sequence.to_dict()
    diff = {(s, k) for s in a for k in a[s] if a[s][k] != b[s][k]}
    assert diff == {("reward", "mode")} and token.reward.mode == "token"
    g = token.grpo
    assert token.train.algorithm == "grpo" and g.advantage == "grpo" and g.kl_coef == 0 and g.epochs == 1
    assert g.minibatch_size == 16 == token.rollout.prompts_per_step * token.rollout.samples_per_prompt  # one update
    assert (token.rollout.samples_per_prompt, token.rollout.max_new_tokens, token.rollout.temperature) == (4, 96, 1.0)
    assert (g.lr, g.weight_decay, g.max_grad_norm, g.warmup_steps) == (5e-6, 0.0, 1.0, 0)
    assert token.run.seed == 1 and token.model.autocast == "none" and token.model.device == "cpu"


def test_learning_trl_arm_matches_the_rlsf_arms(tmp_path):
    pytest.importorskip("trl")
    bench = load("bench_learning")
    args = learning_args()
    trl_cfg = bench.trl_config(args, 2, str(tmp_path))
    ours = bench.rlsf_config(args, "sequence", 2, str(tmp_path))
    assert trl_cfg.per_device_train_batch_size == ours.rollout.prompts_per_step * ours.rollout.samples_per_prompt
    assert trl_cfg.num_generations == ours.rollout.samples_per_prompt
    assert trl_cfg.max_completion_length == ours.rollout.max_new_tokens and trl_cfg.temperature == 1.0
    assert trl_cfg.beta == 0.0 and trl_cfg.num_iterations == 1 and trl_cfg.gradient_accumulation_steps == 1
    assert trl_cfg.learning_rate == ours.grpo.lr
    assert getattr(trl_cfg.lr_scheduler_type, "value", trl_cfg.lr_scheduler_type) == "constant"
    assert trl_cfg.max_grad_norm == 1.0 and trl_cfg.weight_decay == 0.0 and trl_cfg.seed == 2


def test_learning_study_counts_only_runs_of_its_own_settings(tmp_path):
    bench = load("bench_learning")
    settings = bench.study_settings(learning_args())
    assert settings["advantage"] == "grpo" and settings["protocol"] == bench.PROTOCOL
    assert settings["precision"] == "none"
    old = {k: v for k, v in settings.items() if k not in ("advantage", "protocol", "precision")}  # before engine v2
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps({"setting": "rlsf token", "seed": s, "settings": st, "curve": []}) + "\n"
                           for s, st in ((0, old), (1, settings), (2, {**settings, "precision": "bf16"}))))
    assert [r["seed"] for r in bench.stored_runs(log, settings)] == [1]
    assert bench.stored_runs(tmp_path / "missing.jsonl", settings) == []


def test_learning_held_out_evaluation_leaves_the_random_state_alone(tiny_model_dir):
    from rlsf.models.loading import load_model, load_tokenizer

    bench = load("bench_learning")
    args = learning_args(tiny_model_dir, tokens=4, eval_examples=2)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    res = bench.held_out(args, load_model(tiny_model_dir), load_tokenizer(tiny_model_dir))
    assert set(res) == {"success", "step_accuracy"} and 0 <= res["step_accuracy"] <= 1
    assert torch.equal(torch.rand(3), expected)  # evaluate() seeds every generator; the study's stream goes on


def test_learning_rlsf_arm_runs_on_engine_v2(tiny_model_dir, monkeypatch):
    bench = load("bench_learning")
    args = learning_args(tiny_model_dir, prompts=2, samples=2, tokens=4, steps=2, eval_every=2, eval_examples=2)
    real = bench.rlsf_config

    def in_process(*a):  # checks in this process: no worker start-up in a unit test
        cfg = real(*a)
        cfg.set("check.workers", 0)
        return cfg

    monkeypatch.setattr(bench, "rlsf_config", in_process)
    curve = bench.run_rlsf(args, "token", 0)
    assert [p["step"] for p in curve] == [2] and curve[0]["samples"] == 8
    assert set(curve[0]) == {"step", "samples", "train_success", "success", "step_accuracy"}


def test_main_job_table_counts_seeds_with_a_gain():
    bench = load("bench_main_job")

    def summary(before, after, base):
        change = {"change": after - before, "low": after - before - 0.05, "high": after - before + 0.05}
        side = lambda v: {"maj@1": 0.02, "info/step_accuracy": v}  # noqa: E731
        return {"before": side(before), "after": side(after), "baseline": side(base),
                "changes": {"rl_vs_sft": {"success": change, "info/step_accuracy": change}},
                "stage_seconds": {"sft": 300.0, "rl": 240.0, "sft_more": 250.0}}

    table = bench.rows({0: summary(0.57, 0.60, 0.58), 1: summary(0.57, 0.55, 0.58)})
    assert len(table) == 5 and table[1].count("|") == table[0].count("|")
    assert "| 0 | 0.02 / 0.02 / 0.02 | 0.570 / 0.600 / 0.580 | +0.030 [-0.020, +0.080]" in table[2]
    assert "positive in 1 of 2 seeds, mean +0.005" in table[4]
    assert "5.0, 4.0, 4.2" in table[2]
