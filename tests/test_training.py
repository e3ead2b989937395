"""Short real runs on a tiny random model with the real tokenizer and the real Game of 24 checker."""

import json
from pathlib import Path

import pytest
import torch

from rlsf.algorithms import ALGORITHMS, PolicyGradient
from rlsf.runtime.checkpoint import Checkpointer
from rlsf.cli.main import main
from rlsf.config import Config
from rlsf.settings import ConfigError
from rlsf.models.loading import load_model, load_tokenizer
from rlsf.stages.pipeline import pipeline
from rlsf.rollout.engines import generate
from rlsf.stages.context import load_task
from rlsf.stages.sft import sft
from rlsf.tasks.base import TaskError
from rlsf.stages.train import RLTrainer
from rlsf.runtime.utils import batch_indices
from rlsf.runtime.utils import Timer


def tiny_cfg(tiny_model_dir, tmp_path, **overrides):
    # The Game of 24 data comes from $RLSF_DATA_DIR or the tree-of-thoughts-llm package; checks run
    # in this process (check.workers 0) except in the tests of the worker pool itself.
    base = {
        "model.name": tiny_model_dir, "model.autocast": "none", "check.workers": 0,
        "rollout.prompts_per_step": 2, "rollout.samples_per_prompt": 2, "rollout.max_new_tokens": 12,
        "ppo.minibatch_size": 2, "grpo.minibatch_size": 2, "train.steps": 2, "train.save_every": 0,
        "ppo.lr": 1e-3, "grpo.lr": 1e-3, "sft.steps": 2, "sft.batch_size": 4, "sft.lr": 1e-3,
        "eval.num_examples": 3, "eval.k": 2, "eval.max_new_tokens": 12,
        "run.output_dir": str(tmp_path / "run"), "run.progress": False,
    }
    base.update(overrides)
    return Config.load(None, base)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_batch_indices_cover_each_epoch():
    seen = [i for s in range(5) for i in batch_indices(10, 2, s, seed=3)]
    assert sorted(seen) == list(range(10))
    assert batch_indices(10, 4, 3, seed=3) == batch_indices(10, 4, 3, seed=3)


def test_rollout_and_check_fills_one_record_per_row(tiny_model_dir):
    from rlsf.feedback.service import CheckService
    from rlsf.feedback.offsets import Detokenizer
    from rlsf.rollout.collect import rollout_and_check
    from rlsf.tasks import get_task

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    task = get_task("game24")
    examples = task.load("test")[:2]
    with CheckService(task, Detokenizer.from_tokenizer(tok), workers=0) as checker:
        exp = rollout_and_check(model, tok, task, examples, checker, samples=3, max_new_tokens=6, batch_size=4,
                                reward=Config().reward)
    assert len(exp) == 6 and exp.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert [e["id"] for e in exp.examples] == [examples[0]["id"]] * 3 + [examples[1]["id"]] * 3
    assert exp.rewards.shape == exp.response_mask.shape and len(exp.certificates) == 6
    for i in range(6):
        n = int(exp.response_mask[i].sum())
        assert len(exp.offsets[i]) == n
        assert exp.texts[i] == tok.decode(exp.response_ids[i, :n], skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        assert exp.certificates[i] == task.check(examples[i // 3], exp.texts[i])


# Policy-gradient algorithms (Expert Iteration, which learns only from verified samples, has its own run test).
@pytest.mark.parametrize("algorithm", sorted(n for n, c in ALGORITHMS.items() if issubclass(c, PolicyGradient)))
@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_short_training_run(algorithm, mode, tiny_model_dir, tmp_path):
    # A random model scores 0 on every puzzle: with sequence rewards GRPO's advantages are all 0,
    # so a small entropy bonus keeps the update path exercised (rewards are tested below).
    extra = {"grpo.entropy_coef": 0.01} if (algorithm, mode) == ("grpo", "sequence") else {}
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": algorithm, "reward.mode": mode}, **extra)
    trainer = RLTrainer(cfg)
    before = params(trainer.model)
    metrics = trainer.train()
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith("loss/"))
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("reward/total", "reward/success", "kl", "loss/policy", "timing/generate", "timing/feedback",
                "timing/logprobs", "timing/update", "feedback/verdict/no_answer"):
        assert any(key in r for r in records), key
    assert (run / "model" / "config.json").is_file() and (run / "config.yaml").is_file()


def _one_update(tiny_model_dir, tmp_path, algorithm, rewards_fn):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "train.algorithm": algorithm, "ppo.kl_coef": 0.0, "grpo.kl_coef": 0.0, "ppo.vf_coef": 0.0})
    trainer = RLTrainer(cfg)
    exp = trainer.rollout_step()
    exp.rewards = rewards_fn(exp.response_mask.float())
    before = params(trainer.model)
    trainer.algo.step(exp, Timer())
    return sum(float((p.detach() - before[n]).abs().sum()) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rewards_reach_the_update(algorithm, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    # GRPO: all-equal rewards give zero advantages, hence no policy change at all.
    if algorithm == "grpo":
        assert _one_update(tiny_model_dir, tmp_path / "a", algorithm, lambda m: torch.zeros_like(m)) == 0.0

    def token_level(mask):  # reward only on the first token of the first sample of each group
        r = torch.zeros_like(mask)
        r[::2, 0] = 1.0
        return r

    assert _one_update(tiny_model_dir, tmp_path / "b", algorithm, token_level) > 0.0


def test_lora_reference_is_the_base(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"model.lora": True, "train.steps": 1})
    trainer = RLTrainer(cfg)
    assert trainer.algo.reference.is_shared
    trainer.train()
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_a_failed_checkpoint_write_is_a_clear_error_and_keeps_the_previous_one(tmp_path, monkeypatch):
    from rlsf.runtime.checkpoint import CheckpointError

    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"w": torch.ones(2)})

    def full_disk(obj, path, *a, **kw):  # what torch's zip writer raises when the disk fills mid-write
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 325771456 vs 325771408")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint of step 2 .* GiB free .* --resume"):
        ckpt.save(2, {"w": torch.zeros(2)})
    assert ckpt.latest().name == "step_000001" and not list(ckpt.dir.glob(".tmp*"))
    monkeypatch.undo()
    assert ckpt.load(ckpt.latest())["w"].tolist() == [1.0, 1.0]


def test_resume_without_a_checkpoint_starts_a_clean_metrics_file(tiny_model_dir, tmp_path):
    """A run killed before its first checkpoint is redone from step 0: its old records must go, or
    every curve would carry each step twice."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "kl": 99.0}) + "\n" for s in (1, 2, 3)))
    RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"train.steps": 1, "run.resume": True})).train()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0]["kl"] != 99.0


def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path, monkeypatch):
    common = {"train.steps": 4, "train.save_every": 2, "train.algorithm": "ppo"}
    full = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "full", **common))
    full.train()

    # Killed during step 3 (after the step-2 checkpoint) ...
    killed = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "killed", **common))
    original = RLTrainer.train_step

    def dying_step(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(RLTrainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    monkeypatch.setattr(RLTrainer, "train_step", original)
    assert Checkpointer(tmp_path / "killed" / "run").latest().name == "step_000002"

    # ... refuses to start over the old run, then resumes and ends where the full run ended.
    with pytest.raises(ConfigError, match="--resume"):
        RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "killed", **common)).train()
    resumed = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "killed", **common, **{"run.resume": True}))
    resumed.train()
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    a = [json.loads(x) for x in (tmp_path / "full" / "run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "killed" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["reward/total"] for r in a] == [r["reward/total"] for r in b]


def test_sft_eval_and_pipeline(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"sft.steps": 3, "train.steps": 1})
    summary = pipeline(cfg)
    run = tmp_path / "run"
    sft_log = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(sft_log) == 3 and all(r["loss/sft"] > 0 for r in sft_log)
    for side in ("before", "after"):
        r = summary[side]
        assert r["num_examples"] == 3 and {"maj@1", "pass@1", "pass@2", "maj@2"} <= set(r)
        assert 0.0 <= r["pass@1"] <= r["pass@2"] <= 1.0
    assert json.loads((run / "eval_rl.json").read_text())["maj@1"] == summary["after"]["maj@1"]
    samples = (run / "eval_rl_samples.jsonl").read_text().splitlines()
    assert len(samples) == 3 + 3 * 2
    # Resuming a finished pipeline redoes nothing.
    cfg.run.resume = True
    assert pipeline(cfg)["after"] == summary["after"]


def test_pipeline_equal_time_baseline(tiny_model_dir, tmp_path, monkeypatch):
    from rlsf.stages import pipeline as pipeline_module
    from rlsf.stages.pipeline import baseline_steps, format_summary

    seen = []
    real = pipeline_module.sft

    def recording_sft(cfg, data_offset=0):
        seen.append((cfg.sft.steps, data_offset))
        return real(cfg, data_offset=data_offset)

    monkeypatch.setattr(pipeline_module, "sft", recording_sft)
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"sft.steps": 3, "train.steps": 1, "pipeline.baseline": "sft"})
    summary = pipeline(cfg)
    run = tmp_path / "run"
    times = json.loads((run / "stage_seconds.json").read_text())
    extra = baseline_steps(3, times, run)
    # The baseline continues SFT from the SFT model, on the demonstrations after the first 3 steps'.
    assert seen == [(3, 0), (extra, 3)] and extra == max(1, round(3 * times["rl"] / times["sft"]))
    assert len((run / "sft_more" / "metrics.jsonl").read_text().splitlines()) == extra
    assert json.loads((run / "eval_sft_more.json").read_text())["model"] == str(run / "sft_more" / "model")
    assert summary["baseline"]["num_examples"] == 3
    for name in ("rl_vs_sft", "rl_vs_baseline"):
        success = summary["changes"][name]["success"]
        assert success["n"] == 3 and success["low"] <= success["change"] <= success["high"]
        assert "info/step_accuracy" in summary["changes"][name]
    table = format_summary(summary)
    assert "SFT+SFT" in table and "RL against the equal-time baseline" in table
    # Resuming a finished pipeline redoes nothing, the baseline included.
    cfg.run.resume = True
    assert pipeline(cfg)["baseline"] == summary["baseline"] and len(seen) == 2
    with pytest.raises(ConfigError, match="pipeline.baseline"):
        tiny_cfg(tiny_model_dir, tmp_path, **{"sft.steps": 0, "pipeline.baseline": "sft"})


def test_baseline_steps_from_stage_times(tmp_path):
    from rlsf.stages.pipeline import baseline_steps

    assert baseline_steps(36, {"sft": 300.0, "rl": 500.0}, tmp_path) == 60
    assert baseline_steps(36, {"sft": 300.0, "rl": 1.0}, tmp_path) == 1
    with pytest.raises(ConfigError, match="cannot size"):
        baseline_steps(36, {}, tmp_path)  # no recorded times and no metric logs


def test_sft_learns_demonstrations(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"sft.steps": 12, "sft.lr": 5e-3, "sft.warmup_steps": 1})
    sft(cfg)
    losses = [json.loads(x)["loss/sft"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] * 0.8


def test_sft_max_length_leaves_out_long_demonstrations(tiny_model_dir, tmp_path, capsys):
    from rlsf.stages.sft import demonstration_ids

    cfg = tiny_cfg(tiny_model_dir, tmp_path / "a", **{"sft.steps": 1})
    task = load_task(cfg)
    tok = load_tokenizer(tiny_model_dir)
    lengths = sorted(sum(map(len, demonstration_ids(tok, task, ex, d))) for ex in task.load("train")
                     if (d := task.demonstration(ex)) is not None)
    cut = lengths[len(lengths) // 2]
    sft(tiny_cfg(tiny_model_dir, tmp_path / "b", **{"sft.steps": 1, "sft.max_length": cut}))
    left_out = sum(n > cut for n in lengths)
    assert 0 < left_out and f"sft: {left_out} of {len(lengths)} demonstrations are longer" in capsys.readouterr().err
    with pytest.raises(TaskError, match="at most sft.max_length=1 tokens"):
        sft(tiny_cfg(tiny_model_dir, tmp_path / "c", **{"sft.steps": 1, "sft.max_length": 1}))


def test_bad_inputs_give_clear_errors(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Rank,Puzzles,AMT (s),Solved rate\n1,1 2 three 4,1.0,99%\n")
    out = str(tmp_path / "o")
    assert main(["train", "--model", tiny_model_dir, "--output-dir", out, "--task.options", f"{{data_path: {bad}}}"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err
    assert main(["eval", "--model", str(tmp_path / "no_such_model"), "--output-dir", out]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(["sft", "--model", tiny_model_dir, "--output-dir", out,
                 "--task.options", f"{{data_path: {tmp_path / 'missing.csv'}}}"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["train", "--model", tiny_model_dir, "--task.options", "{colour: red}", "--output-dir", out]) == 2
    assert "colour" in capsys.readouterr().err


def test_bf16_sampling_copy_follows_the_policy(tiny_model_dir):
    from rlsf.rollout.engines import SamplingModel

    model = load_model(tiny_model_dir)
    sampler = SamplingModel(model, "bf16")
    assert sampler.model is not model and next(sampler.model.parameters()).dtype == torch.bfloat16
    assert all(b.dtype == torch.float32 for b in sampler.model.buffers() if b.is_floating_point())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    sampler.sync()
    for p, q in zip(model.parameters(), sampler.model.parameters()):
        assert torch.equal(p.to(torch.bfloat16), q)
    assert SamplingModel(model, "none").model is model


def test_top_p_filter_hand_computed():
    from rlsf.rollout.engines import top_p_filter

    scores = torch.tensor([[0.2, 0.5, 0.3]]).log()
    kept = top_p_filter(scores, 0.6)  # mass before 0.3 is 0.5 < 0.6 (kept); before 0.2 is 0.8 (dropped)
    assert torch.isinf(kept[0, 0]) and torch.isfinite(kept[0, 1:]).all()
    assert torch.isfinite(top_p_filter(scores, 0.01)[0, 1])  # always at least one token


@pytest.mark.parametrize("engine", ["rlsf", "hf"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_are_the_updates_logprobs(tiny_model_dir, temperature, engine):
    from rlsf.algorithms.base import response_forward

    torch.manual_seed(0)
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ro = generate(model, tok, ["Hi", "Input: 1 2 3 4", "x"], max_new_tokens=8, temperature=temperature, batch_size=2,
                  engine=engine)
    fo = response_forward(model, ro, temperature=temperature, precision="none")
    mask = ro.response_mask.bool()
    assert torch.allclose(ro.logprobs[mask], fo.logp[mask], atol=1e-4)
    assert (ro.logprobs[~mask] == 0).all()
    # With top-p the recorded log-probs are of the truncated, renormalised distribution.
    ro = generate(model, tok, ["Hi"], max_new_tokens=8, temperature=1.0, top_p=0.5, engine=engine)
    fo = response_forward(model, ro, temperature=1.0, precision="none")
    m = ro.response_mask.bool()
    assert torch.isfinite(ro.logprobs[m]).all() and (ro.logprobs[m] >= fo.logp[m] - 1e-5).all()
    assert generate(model, tok, ["Hi"], max_new_tokens=4, do_sample=False).logprobs is None


def test_ignore_eos_generates_exactly_max_tokens(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ro = generate(model, tok, ["Hi", "x"], max_new_tokens=5, ignore_eos=True)
    assert ro.response_mask.sum(1).tolist() == [5, 5] and all(ro.truncated)


def test_bf16_sampling_copy_of_a_lora_policy_follows_the_adapters(tiny_model_dir):
    from rlsf.models.loading import LoraSpec
    from rlsf.rollout.engines import SamplingModel

    model = load_model(tiny_model_dir, lora=LoraSpec(r=4))
    sampler = SamplingModel(model, "bf16")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.25)
    sampler.sync()
    for p, q in zip(model.parameters(), sampler.model.parameters()):
        assert torch.equal(p.to(torch.bfloat16), q)


def test_single_update_grpo_logs_kl_and_the_logprob_gap(tiny_model_dir, tmp_path):
    """One optimiser step per batch skips the old-log-prob pass; KL and the sampling/update gap are
    then measured on the loss pass itself (float32 sampling: the gap is round-off)."""
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "grpo", "grpo.minibatch_size": 4,
                                                "grpo.kl_coef": 0.1, "train.steps": 2})
    tr = RLTrainer(cfg)
    assert tr.algo.single_update(4)
    tr.train()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the policy is the reference at step 1
    assert records[1]["kl"] != 0.0
    assert all(r["rollout/logprob_gap"] < 1e-3 for r in records)


def test_value_warmup_moves_only_the_value_head(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "ppo", "ppo.value_warmup_steps": 1,
                                                "ppo.kl_coef": 0.0})
    tr = RLTrainer(cfg)
    before = params(tr.model)
    head = {n: p.detach().clone() for n, p in tr.algo.value_head.named_parameters()}
    stats = tr.train_step()
    assert stats["value/warmup"] == 1.0
    assert all(torch.equal(before[n], p) for n, p in tr.model.named_parameters())
    assert any(not torch.equal(head[n], p) for n, p in tr.algo.value_head.named_parameters())
    tr.train_step()  # warm-up over: the policy moves
    assert any(not torch.equal(before[n], p) for n, p in tr.model.named_parameters())


@pytest.mark.parametrize("init", ["returns", "zero"])
def test_value_head_starts_at_the_first_batchs_mean_return(tiny_model_dir, tmp_path, init):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "ppo", "ppo.value_init": init,
                                                "ppo.value_warmup_steps": 1, "train.steps": 1})
    tr = RLTrainer(cfg)
    stats = tr.train_step()
    # value/mean is over the calibrated values; value/returns over GAE's returns from them (lambda < 1)
    gap = abs(stats["value/mean"] - stats["value/returns"])
    if init == "returns":
        assert tr.algo.calibrated and gap < 0.05 + 0.05 * abs(stats["value/returns"])
    else:
        assert not tr.algo.calibrated and abs(stats["value/mean"]) < 0.2 < gap  # rewards of about -1 or below


def test_learning_rate_warms_up_linearly(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "grpo", "grpo.minibatch_size": 2,
                                                "grpo.lr": 1e-3, "grpo.warmup_steps": 4})
    tr = RLTrainer(cfg)
    lrs = [tr.train_step()["lr"] for _ in range(3)]  # 2 updates per step: lr after updates 2, 4, 6
    assert lrs == pytest.approx([1e-3 * 2 / 4, 1e-3, 1e-3])


@pytest.mark.parametrize("lora", [False, True])
def test_sft_loss_equals_the_models_own_and_its_gradient(tiny_model_dir, lora):
    """The completion-only head gives HF's ``labels=`` loss and the same gradients (LoRA too)."""
    from rlsf.models.loading import LoraSpec, load_model
    from rlsf.algorithms.supervised import collate, completion_loss

    spec = LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")) if lora else None
    pairs = [([5, 6, 7, 8, 9], [10, 11]), ([12, 13], [14, 15, 16, 17]), ([3], [4])]
    batch = collate(pairs, pad_id=0)
    grads = []
    for fn in (lambda m: m(**batch, use_cache=False).loss, lambda m: completion_loss(m, batch)):
        torch.manual_seed(0)
        model = load_model(tiny_model_dir, lora=spec)
        loss = fn(model)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_resume_in_a_new_process_equals_uninterrupted(tiny_model_dir, tmp_path, autocast):
    """Resume as a user does: a new process after the step-1 checkpoint, three more steps. Anything
    a process does once and lazily (a probe at its first rollout) must not draw from the random
    state a checkpoint restores; in one process such a thing is already cached and goes unseen."""
    import os
    import subprocess
    import sys

    def rlsf(out: Path, steps: int, *extra: str) -> None:
        cmd = [sys.executable, "-m", "rlsf", "train", "--model", tiny_model_dir, "--model.autocast", autocast,
               "--check.workers", "0", "--rollout.prompts_per_step", "2", "--rollout.samples_per_prompt", "4",
               "--rollout.max_new_tokens", "12", "--ppo.minibatch_size", "4", "--ppo.epochs", "1", "--ppo.lr", "1e-3",
               "--train.steps", str(steps), "--train.save_every", "1", "--output-dir", str(out), "--no-progress",
               *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={k: v for k, v in os.environ.items() if k != "RLSF_BF16"})
        assert proc.returncode == 0, proc.stderr[-3000:]

    rlsf(tmp_path / "full", 4)
    rlsf(tmp_path / "cut", 1)
    rlsf(tmp_path / "cut", 4, "--resume")
    a, b = ([json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("full", "cut"))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("reward/total", "kl", "loss/policy", "loss/value", "response/length"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    full, resumed = (load_model(str(tmp_path / run / "model")) for run in ("full", "cut"))
    for (n, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir, tmp_path, algorithm):
    """model.gradient_checkpointing recomputes activations in the backward pass: one training step
    (same rollouts, same seed) ends with the same weights as without it, within float rounding;
    the shared-prompt passes are off (a checkpointed layer keeps no cache). On sentiment, where the
    tiny model's garbage is still an attempt with a graded reward: on Game of 24 every reply is a
    no-attempt, all advantages are 0, and AdamW turns the near-zero gradients' round-off into steps."""
    from rlsf.models.loading import uses_gradient_checkpointing

    runs = {}
    for gc in (False, True):
        tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / str(gc), **{
            "task.name": "sentiment",
            "train.algorithm": algorithm, "train.steps": 1, "model.gradient_checkpointing": gc,
            f"{algorithm}.share_prompts": False, f"{algorithm}.entropy_coef": 0.01,
            # PPO's critic at 0: with the calibrated start (ppo.value_init: returns) this tiny batch's
            # update differs beyond the tolerance in one weight with and without checkpointing; most
            # likely AdamW's first step turning round-off of near-zero gradients into full steps, as
            # on Game of 24 above
            **({"ppo.value_init": "zero"} if algorithm == "ppo" else {})}))
        assert uses_gradient_checkpointing(tr.model) == gc and not tr.algo.share_prompts
        metrics = tr.train()
        runs[gc] = (metrics, {n: p.detach().clone() for n, p in tr.model.named_parameters()})
    (m0, p0), (m1, p1) = runs[False], runs[True]
    assert m0["reward/total"] == m1["reward/total"]
    assert m1["loss/policy"] == pytest.approx(m0["loss/policy"], rel=1e-4, abs=1e-6)
    for n in p0:
        torch.testing.assert_close(p1[n], p0[n], rtol=1e-4, atol=1e-6, msg=n)


def test_gradient_checkpointing_turns_the_shared_prompt_path_off(tiny_model_dir, tmp_path):
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.gradient_checkpointing": True, "train.steps": 1}))
    assert tr.cfg.ppo.share_prompts and not tr.algo.share_prompts
    tr.train()
