"""The algorithm math against hand-computed values."""

import math

import pytest
import torch

from rlsf.algorithms.core import (
    batch_entropy, clipped_policy_loss, clipped_value_loss, entropy_from_logits, gae, group_advantages,
    kl_penalty, last_token_index, logprobs_from_logits, masked_mean, masked_whiten, returns_to_go,
)
from rlsf.feedback import Certificate
from rlsf.metrics import majority_vote, pass_at_k

T = torch.tensor


def close(a, b, tol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol), (a, b)


def test_masked_mean_ignores_padding():
    x, m = T([[1.0, 3.0, 100.0]]), T([[1.0, 1.0, 0.0]])
    close(masked_mean(x, m), 2.0)
    close(masked_mean(x, m, dim=1), [2.0])
    close(masked_mean(x, torch.zeros_like(m)), 0.0)


def test_masked_whiten_zero_mean_unit_var_and_zero_padding():
    x, m = T([[1.0, 2.0, 3.0, 50.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    close(w[0, :3], [-1.0, 0.0, 1.0], tol=1e-4)  # unbiased var of 1,2,3 is 1
    assert w[0, 3] == 0


def test_gae_hand_computed():
    # delta2 = 1 - .1 = .9; delta1 = .1 - .2 = -.1; delta0 = .2 - .5 = -.3
    # A2 = .9; A1 = -.1 + .5*.9 = .35; A0 = -.3 + .5*.35 = -.125
    adv, ret = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.2, 0.1]]), torch.ones(1, 3), gamma=1.0, lam=0.5)
    close(adv, [[-0.125, 0.35, 0.9]])
    close(ret, [[0.375, 0.55, 1.0]])


def test_gae_stops_at_padding():
    # The padded value 9 must not be bootstrapped: delta1 = 1 - .2, delta0 = .2 - .5
    adv, ret = gae(T([[0.0, 1.0, 5.0]]), T([[0.5, 0.2, 9.0]]), T([[1.0, 1.0, 0.0]]), gamma=1.0, lam=1.0)
    close(adv, [[0.5, 0.8, 0.0]])
    close(ret, [[1.0, 1.0, 0.0]])


def test_gae_discount():
    adv, _ = gae(T([[0.0, 1.0]]), T([[0.0, 0.0]]), torch.ones(1, 2), gamma=0.9, lam=1.0)
    close(adv, [[0.9, 1.0]])


def test_returns_to_go():
    close(returns_to_go(T([[1.0, 2.0, 3.0]]), torch.ones(1, 3)), [[6.0, 5.0, 3.0]])
    close(returns_to_go(T([[1.0, 2.0, 3.0]]), torch.ones(1, 3), gamma=0.5), [[2.75, 3.5, 3.0]])
    close(returns_to_go(T([[1.0, 2.0, 3.0]]), T([[1.0, 1.0, 0.0]])), [[3.0, 2.0, 0.0]])


def test_group_advantages_token_level_hand_computed():
    # Row 0: reward 1 at the end (G = 1,1,1); row 1: -1 on token 1 (G = -1,-1,0).
    # Totals 1, -1: mean 0, unbiased std sqrt(2).
    r = T([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    a = group_advantages(r, torch.ones(2, 3), group_size=2)
    s = math.sqrt(2)
    close(a, [[1 / s, 1 / s, 1 / s], [-1 / s, -1 / s, 0.0]], tol=1e-4)
    a = group_advantages(r, torch.ones(2, 3), group_size=2, scale=False)
    close(a, [[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])


def test_group_advantages_sequence_rewards_equal_grpo():
    totals = T([2.0, 0.0, 1.0, 1.0, 5.0, 3.0])
    mask = T([[1, 1, 1, 0]] * 6).float()
    r = torch.zeros(6, 4)
    r[:, 2] = totals  # everything on the last generated token
    a = group_advantages(r, mask, group_size=3)
    g = totals.view(2, 3)
    expected = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-6)).view(6, 1) * mask
    close(a, expected)
    with pytest.raises(ValueError):
        group_advantages(r, mask, group_size=4)


def test_clipped_policy_loss_hand_computed():
    logp = T([[math.log(1.5), math.log(1.5)]])
    loss, stats = clipped_policy_loss(logp, torch.zeros(1, 2), T([[1.0, -1.0]]), torch.ones(1, 2), clip=0.2)
    # +A: max(-1.5, -1.2) = -1.2 (clipped); -A: max(1.5, 1.2) = 1.5 (unclipped)
    close(loss, (-1.2 + 1.5) / 2)
    close(stats["clipfrac"], 0.5)
    close(stats["ratio"], 1.5)


def test_clipped_value_loss_hand_computed():
    loss, stats = clipped_value_loss(T([[1.0]]), T([[0.0]]), T([[0.5]]), torch.ones(1, 1), clip=0.2)
    close(loss, 0.5 * 0.25)  # max((1-.5)^2, (.2-.5)^2) = .25
    close(stats["value_clipfrac"], 0.0)
    loss, _ = clipped_value_loss(T([[1.0]]), T([[0.0]]), T([[2.0]]), torch.ones(1, 1), clip=0.2)
    close(loss, 0.5 * 1.8**2)  # clipped value .2 is further from 2


def test_kl_estimators():
    logp, ref = T([math.log(0.5)]), T([math.log(0.25)])
    close(kl_penalty(logp, ref, "k1"), [math.log(2)])
    close(kl_penalty(logp, ref, "k3"), [0.5 + math.log(2) - 1])
    close(kl_penalty(ref, ref, "k3"), [0.0])
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k9")


def test_logprobs_entropy_batch_entropy():
    logits = torch.zeros(1, 1, 4)
    close(logprobs_from_logits(logits, T([[2]])), [[-math.log(4)]])
    close(entropy_from_logits(logits), [[math.log(4)]])
    peaked = T([[50.0, 0, 0, 0], [0, 50.0, 0, 0]])
    close(batch_entropy(peaked), math.log(2), tol=1e-4)  # each sample certain, the batch split 50/50
    close(batch_entropy(peaked[[0, 0]]), 0.0, tol=1e-4)  # collapsed batch: no diversity


def test_last_token_index():
    close(last_token_index(T([[1, 1, 0], [1, 1, 1], [0, 0, 0]])), [1, 2, 0])


def test_pass_at_k_and_majority():
    close(pass_at_k(4, 1, 1), 0.25)
    close(pass_at_k(4, 1, 2), 0.5)  # 1 - C(3,2)/C(4,2)
    close(pass_at_k(4, 0, 4), 0.0)
    close(pass_at_k(4, 3, 2), 1.0)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)
    certs = [Certificate(0, "w", False, answer="a"), Certificate(1, "c", True, answer="b"),
             Certificate(1, "c", True, answer="b"), Certificate(0, "n", False, answer=None)]
    assert majority_vote(certs).answer == "b"
    assert majority_vote([Certificate(0, "n")]) is None
    tie = [Certificate(0, "w", False, answer="x"), Certificate(1, "c", True, answer="y")]
    assert majority_vote(tie).answer == "x"  # ties: first seen
