"""Truncated importance sampling (``rollout.importance_cap``): the correction for a sampling
engine whose probabilities differ from the policy's (vLLM, bf16 sampling weights)."""

from __future__ import annotations

import math

import pytest
import torch

from rlsf.algorithms.core import truncated_importance_weights
from rlsf.stages.train import RLTrainer
from test_training import tiny_cfg


def test_weights_hand_computed():
    train = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.9)]])
    sample = torch.tensor([[math.log(0.25), math.log(0.4), math.log(1e-9)]])
    mask = torch.tensor([[1, 1, 0]])
    w = truncated_importance_weights(train, sample, mask, cap=1.5)
    assert w.tolist()[0] == pytest.approx([1.5, 0.5, 1.0])  # 2 capped at 1.5; 0.5; masked -> 1
    assert not w.requires_grad


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_the_policy_term_is_scaled_by_the_weight(algorithm, tiny_model_dir, tmp_path):
    """Sampling log-probs equal to the policy's give weight 1 (the same loss as without the
    correction); log-probs log(2) higher (the engine thought each token twice as likely) halve
    every token's policy term."""
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": algorithm, "rollout.importance_cap": 2.0,
                                                "grpo.minibatch_size": 4, "ppo.minibatch_size": 4})
    tr = RLTrainer(cfg)
    exp = tr.rollout_step()
    tr.checker.close()
    algo = tr.algo
    data, _ = algo.prepare(exp, tr.timer)
    mask = exp.loss_mask

    def policy_term(logprobs):
        exp.logprobs = logprobs
        fo = algo.forward(algo.model, exp, hidden=algo.needs_hidden)  # as in the update (grad on, no backward)
        loss, stats = algo.loss(exp, {k: v[:, : mask.shape[1]] for k, v in data.items()}, fo, mask)
        return float(stats["policy"]), stats

    with torch.no_grad():
        own = algo.forward(algo.model, exp).logp
    same, stats = policy_term(own.clone())
    assert float(stats["rollout/importance_weight"]) == pytest.approx(1.0, abs=1e-4)
    cfg.rollout.importance_cap = 0.0
    off, stats_off = policy_term(own.clone())
    assert "rollout/importance_weight" not in stats_off and same == pytest.approx(off, rel=1e-4, abs=1e-6)
    cfg.rollout.importance_cap = 2.0
    halved, stats = policy_term(own + math.log(2.0))
    assert float(stats["rollout/importance_weight"]) == pytest.approx(0.5, abs=1e-4)
    assert halved == pytest.approx(0.5 * off, rel=1e-3, abs=1e-6)
