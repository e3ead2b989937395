"""Expert Iteration: the filter, the growing data set, restarting from the base model, a real run."""

from __future__ import annotations

import pytest
import torch

from rlsf.algorithms import ALGORITHMS
from rlsf.algorithms.expert_iteration import verified_pairs
from rlsf.experience import Experience
from rlsf.feedback.certificate import Certificate
from rlsf.models.loading import load_model, load_tokenizer
from rlsf.runtime.device import setup
from rlsf.runtime.utils import Timer

from test_training import tiny_cfg


def experience(correct: list[bool], truncated: list[bool] | None = None, seed: int = 0) -> Experience:
    g = torch.Generator().manual_seed(seed)
    n = len(correct)
    prompt = torch.randint(5, 200, (n, 4), generator=g)
    prompt_mask = torch.ones(n, 4, dtype=torch.long)
    prompt_mask[0, 0] = 0  # left padding on row 0
    response = torch.randint(5, 200, (n, 3), generator=g)
    response_mask = torch.ones(n, 3, dtype=torch.long)
    response_mask[-1, -1] = 0  # right padding on the last row
    certs = [Certificate(float(c), "correct" if c else "wrong", c) for c in correct]
    return Experience(prompt, prompt_mask, response, response_mask, truncated or [False] * n, certificates=certs,
                      texts=[""] * n)


def test_verified_pairs_keep_correct_finished_rows_without_padding() -> None:
    exp = experience([True, False, True, True], truncated=[False, False, True, False])
    pairs = verified_pairs(exp)
    assert len(pairs) == 2  # row 1 is wrong, row 2 was cut off
    assert pairs[0] == (exp.prompt_ids[0, 1:].tolist(), exp.response_ids[0].tolist())
    assert pairs[1] == (exp.prompt_ids[3].tolist(), exp.response_ids[3, :2].tolist())


def make(tiny_model_dir, tmp_path, **over):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "expert_iteration", "expert_iteration.lr": 1e-2,
                                                "expert_iteration.batch_size": 2, **over})
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    return ALGORITHMS["expert_iteration"](model, tok, None, cfg, setup(cfg)), model


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_data_set_grows_with_dedupe(tiny_model_dir, tmp_path) -> None:
    algo, model = make(tiny_model_dir, tmp_path)
    s1 = algo.step(experience([True, True, False]), Timer())
    assert s1["ei/added"] == 2 and s1["ei/dataset"] == 2 and s1["ei/kept"] == pytest.approx(2 / 3)
    s2 = algo.step(experience([True, True, False]), Timer())  # the same rows again: nothing new
    assert s2["ei/added"] == 0 and s2["ei/dataset"] == 2
    s3 = algo.step(experience([True, False, False], seed=1), Timer())
    assert s3["ei/dataset"] == 3 and s3["loss/sft"] > 0


def test_no_verified_sample_means_no_update(tiny_model_dir, tmp_path) -> None:
    algo, model = make(tiny_model_dir, tmp_path)
    before = weights(model)
    stats = algo.step(experience([False, False]), Timer())
    assert stats["ei/dataset"] == 0 and "loss/sft" not in stats
    assert all(torch.equal(before[n], p) for n, p in weights(model).items())


@pytest.mark.parametrize("restart", [True, False])
def test_restart_trains_each_round_from_the_base_model(tiny_model_dir, tmp_path, restart: bool) -> None:
    """With restart, what the policy was before a round does not matter; without, it does."""
    results = []
    for perturb in (False, True):
        torch.manual_seed(0)
        algo, model = make(tiny_model_dir, tmp_path / f"{perturb}", **{"expert_iteration.restart": restart})
        algo.step(experience([True, True, False]), Timer())
        if perturb:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
        algo.step(experience([True, False, True], seed=1), Timer())
        results.append(weights(model))
    same = all(torch.allclose(results[0][n], results[1][n]) for n in results[0])
    assert same == restart


def test_expert_iteration_trains_in_the_engine(tiny_model_dir, tmp_path) -> None:
    """A real run: rollouts from the tiny model, Game of 24 certificates, rounds over the first
    task.train_examples problems, fine-tuning."""
    from rlsf.stages.train import RLTrainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "expert_iteration", "train.steps": 2,
                                                "task.train_examples": 3, "expert_iteration.batch_size": 2})
    trainer = RLTrainer(cfg)
    metrics = trainer.train()
    assert {"ei/samples", "ei/kept", "ei/added", "ei/dataset", "ei/steps"} <= set(metrics)
    assert trainer.samples == 2 * 3 * 2  # 2 rounds x 3 problems x 2 samples


# ---- rounds: every training problem K times (the paper), or one rollout batch (the variant) ------------
@pytest.fixture
def toy_task():
    """Five problems for the tiny random model; a completion is correct when its text starts with a
    space (about 2 in 3 of its samples do)."""
    from rlsf.tasks.base import _REGISTRY, Task, register

    @register("test_ei_toy")
    class Toy(Task):
        def load(self, split):
            return [{"id": i, "q": f"Say anything, number {i}."} for i in range(5)]

        def prompt(self, ex):
            return [{"role": "user", "content": ex["q"]}]

        def check(self, ex, completion):
            ok = completion.startswith(" ")
            return Certificate(float(ok), "correct" if ok else "wrong", ok, answer=completion[:1])

    yield "test_ei_toy"
    _REGISTRY.pop("test_ei_toy")


def spy_rollouts(monkeypatch, trainer) -> list[dict]:
    """Record every rollout batch the trainer samples: its problems and the policy's weights then."""
    import rlsf.stages.train as train_stage

    calls, real = [], train_stage.rollout_episodes

    def spy(model, tokenizer, task, examples, *args, **kw):
        calls.append({"ids": [ex["id"] for ex in examples], "condition": kw.get("condition"),
                      "weights": weights(trainer.model)})
        return real(model, tokenizer, task, examples, *args, **kw)

    monkeypatch.setattr(train_stage, "rollout_episodes", spy)
    return calls


def metric_rows(run_dir) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_round_samples_every_training_problem_k_times_and_refits_the_start(toy_task, tiny_model_dir, tmp_path,
                                                                             monkeypatch) -> None:
    """rounds: full. Each round samples K = 3 completions of each of the 5 problems in rollout batches
    of 2 problems with the policy of the round before; the kept pairs are deduplicated, D_i grows,
    and each round's fine-tuning starts from the start weights."""
    import rlsf.algorithms.expert_iteration as ei
    from rlsf.stages.train import RLTrainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "task.name": toy_task, "train.algorithm": "expert_iteration", "train.steps": 2,
        "rollout.samples_per_prompt": 3, "rollout.max_new_tokens": 2, "rollout.ignore_eos": True,
        "expert_iteration.lr": 1e-2, "expert_iteration.batch_size": 4})
    trainer = RLTrainer(cfg)
    start = weights(trainer.model)
    calls = spy_rollouts(monkeypatch, trainer)
    fits, real_update = [], ei.sft_update

    def update(model, *args, **kw):  # the weights each round's fine-tuning starts from
        if len(fits) < trainer.algo.rounds:
            fits.append(weights(model))
        return real_update(model, *args, **kw)

    monkeypatch.setattr(ei, "sft_update", update)
    seen_rounds, real_step = [], trainer.algo.step
    monkeypatch.setattr(trainer.algo, "step", lambda exp, timer: seen_rounds.append(exp) or real_step(exp, timer))
    trainer.train()
    rounds = metric_rows(tmp_path / "run")
    assert [c["ids"] for c in calls] == [[0, 1], [2, 3], [4]] * 2  # every problem, in rollout batches of 2
    assert trainer.samples == 2 * 5 * 3 and [r["ei/samples"] for r in rounds] == [15, 15]
    assert {r["samples"] for r in rounds} == {15, 30}
    algo = trainer.algo
    pairs = [(tuple(p), tuple(c)) for p, c in algo.data]
    assert len(set(pairs)) == len(pairs) == rounds[-1]["ei/dataset"]  # deduplicated
    assert rounds[1]["ei/dataset"] == rounds[0]["ei/dataset"] + rounds[1]["ei/added"] > rounds[0]["ei/dataset"] > 0
    assert [len(exp) for exp in seen_rounds] == [15, 15]  # one step on the whole round
    assert sorted(ex["id"] for ex in seen_rounds[0].examples) == sorted(list(range(5)) * 3)
    assert algo.collect(seen_rounds[1])["ei/added"] == 0  # the same completions again: nothing new
    assert all(r["ei/steps"] >= 1 and r["loss/sft"] > 0 for r in rounds)
    # Round 2 sampled the round-1 policy, then fine-tuned the start model again, on D_2.
    assert not all(torch.equal(calls[3]["weights"][n], start[n]) for n in start)
    assert len(fits) == 2 and all(all(torch.equal(f[n], start[n]) for n in start) for f in fits)


def test_the_batch_rounds_variant_samples_one_rollout_batch(toy_task, tiny_model_dir, tmp_path, monkeypatch) -> None:
    """rounds: batch, rlsf's small-budget variant: a round is one rollout batch of prompts_per_step
    problems (the trainer's shuffled order); it is named as a variant wherever results are labelled."""
    from rlsf.algorithms.expert_iteration import ExpertIteration
    from rlsf.stages.experiment import step_samples
    from rlsf.stages.train import RLTrainer

    over = {"task.name": toy_task, "train.algorithm": "expert_iteration", "train.steps": 2,
            "rollout.samples_per_prompt": 3, "expert_iteration.batch_size": 4, "expert_iteration.rounds": "batch"}
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **over)
    trainer = RLTrainer(cfg)
    calls = spy_rollouts(monkeypatch, trainer)
    metrics = trainer.train()
    assert [len(c["ids"]) for c in calls] == [2, 2] and trainer.samples == 2 * 2 * 3
    assert metrics["ei/samples"] == 6 and metrics["ei/dataset"] >= 0
    assert "batch rounds" in ExpertIteration.procedure(cfg) and "not the paper's" in ExpertIteration.procedure(cfg)
    assert ExpertIteration.procedure(tiny_cfg(tiny_model_dir, tmp_path, **{**over, "expert_iteration.rounds": "full"})
                                     ) == "expert_iteration"
    assert step_samples(cfg) == 6  # what rlsf experiment counts per training step
    full = tiny_cfg(tiny_model_dir, tmp_path, **{**over, "expert_iteration.rounds": "full", "task.train_examples": 4})
    assert step_samples(full) == 4 * 3


def test_rounds_must_be_named() -> None:
    from rlsf.config import Config
    from rlsf.settings import ConfigError

    with pytest.raises(ConfigError, match="expert_iteration.rounds"):
        Config.load(None, {"train.algorithm": "expert_iteration", "expert_iteration.rounds": "some"})
