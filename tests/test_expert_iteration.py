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
    """A real run: rollouts from the tiny model, Game of 24 certificates, rounds of fine-tuning,
    a checkpoint that resumes."""
    from rlsf.stages.train import RLTrainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "expert_iteration", "train.steps": 2,
                                                "expert_iteration.batch_size": 2})
    trainer = RLTrainer(cfg)
    metrics = trainer.train()
    assert {"ei/kept", "ei/added", "ei/dataset"} <= set(metrics)
    assert trainer.samples == 2 * 2 * 2
