"""The algorithm math against hand-computed values."""

import math

import pytest
import torch

from rlsf.algorithms.advantages import (
    GROUP_ESTIMATORS,
    dr_grpo_advantages,
    gae,
    grpo_advantages,
    grpo_token_advantages,
    group_sum,
    held_returns_to_go,
    returns_to_go,
    rloo_advantages,
    rloo_token_advantages,
)
from rlsf.algorithms.core import (
    batch_entropy,
    batch_entropy_index,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    kl_penalty,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from rlsf.feedback import Certificate
from rlsf.evaluation.metrics import pass_at_k
from rlsf.evaluation.selectors import majority_vote

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


def test_whitening_floor_keeps_noise_small_and_leaves_real_spread_alone():
    """A batch whose advantages barely vary (std 0.001, the critic's noise on flat rewards) stays at
    std 0.01 with a floor of 0.1 instead of being blown up 1000x; a batch with real spread (std
    above the floor) is whitened exactly as without the floor."""
    torch.manual_seed(0)
    m = torch.ones(8, 16)
    noise = 0.001 * torch.randn(8, 16)
    assert masked_whiten(noise, m).std() == pytest.approx(1.0, abs=0.01)  # plain: noise becomes the signal
    assert masked_whiten(noise, m, std_floor=0.1).std() == pytest.approx(0.01, rel=0.05)
    real = torch.randn(8, 16)
    close(masked_whiten(real, m, std_floor=0.1), masked_whiten(real, m), tol=1e-6)


def test_grpo_floor_on_a_group_that_differs_by_a_hair():
    # Two samples whose totals differ by 2e-3: plain GRPO scales that to +-0.7; the floor keeps it small.
    r = T([[0.0, 0.0, 1.001], [0.0, 0.0, 0.999]])
    assert grpo_advantages(r, torch.ones(2, 3), groups(0, 0), ALL).abs().max() > 0.5
    floored = grpo_advantages(r, torch.ones(2, 3), groups(0, 0), ALL, std_floor=0.1)
    close(floored, [[0.01] * 3, [-0.01] * 3], tol=1e-4)
    # A real spread (sequence rewards 1 and 0: s = 0.707) is untouched by the floor.
    r = T([[0.0, 1.0], [0.0, 0.0]])
    close(grpo_advantages(r, torch.ones(2, 2), groups(0, 0), ALL, std_floor=0.1),
          grpo_advantages(r, torch.ones(2, 2), groups(0, 0), ALL), tol=1e-6)


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


def groups(*ids):
    return torch.tensor(ids)


ALL = torch.ones(2, dtype=torch.bool)


def test_group_sum_uses_explicit_ids_not_row_order():
    close(group_sum(T([1.0, 2.0, 4.0, 8.0]), groups(7, 3, 7, 3)), [5.0, 10.0, 5.0, 10.0])


def test_grpo_token_level_hand_computed():
    # Row 0: reward 1 at the end (G = 1,1,1); row 1: -1 on token 1 (G = -1,-1,0).
    # Totals 1, -1: mean 0; centred returns D = G; per-row mean square 1 and 2/3; s^2 = (1 + 2/3) / 1.
    r = T([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    a = grpo_advantages(r, torch.ones(2, 3), groups(0, 0), ALL)
    s = math.sqrt(1 + 2 / 3)
    close(a, [[1 / s, 1 / s, 1 / s], [-1 / s, -1 / s, 0.0]], tol=1e-4)
    close(dr_grpo_advantages(r, torch.ones(2, 3), groups(0, 0), ALL), [[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])


def test_grpo_sequence_rewards_equal_grpo_whatever_the_row_order():
    totals = T([2.0, 0.0, 1.0, 1.0, 5.0, 3.0])
    mask = T([[1, 1, 1, 0]] * 6).float()
    r = torch.zeros(6, 4)
    r[:, 2] = totals  # everything on the last generated token
    g = groups(0, 1, 0, 1, 0, 1)  # interleaved: groups are ids, not adjacent rows
    a = grpo_advantages(r, mask, g, torch.ones(6, dtype=torch.bool))
    expected = torch.zeros(6)
    for gid in (0, 1):
        rows = g == gid
        expected[rows] = (totals[rows] - totals[rows].mean()) / (totals[rows].std() + 1e-6)
    close(a, expected[:, None] * mask)


def test_grpo_tied_totals_stay_bounded():
    # The totals tie (std 0) but the rewards sit on different tokens: the old estimator divided
    # by the totals' std and returned -1e5 here.
    r = T([[0.1, 0.0, 0.0], [0.0, 0.0, 0.1]])
    a = grpo_advantages(r, torch.ones(2, 3), groups(0, 0), ALL)
    # G = [[.1, 0, 0], [.1, .1, .1]]; mean total .1; D = [[0, -.1, -.1], [0, 0, 0]];
    # s^2 = mean(0, .01, .01) / 1 = .02/3.
    s = math.sqrt(0.02 / 3)
    close(a, [[0.0, -0.1 / s, -0.1 / s], [0.0, 0.0, 0.0]], tol=1e-4)
    assert a.abs().max() <= math.sqrt(3 * 1) + 1e-4  # |A| <= sqrt(T (n - 1))
    # Every total and return-to-go equal: no signal, zero advantages (not 0/0).
    close(grpo_advantages(T([[0.0, 0.1], [0.0, 0.1]]), torch.ones(2, 2), groups(0, 0), ALL), torch.zeros(2, 2))


def test_group_estimators_leave_failed_checks_out():
    # Row 2 failed its check: it gets no advantage and does not move its group's baseline.
    r = T([[0.0, 1.0], [0.0, 0.0], [0.0, 100.0]])
    mask, g = torch.ones(3, 2), groups(0, 0, 0)
    valid = torch.tensor([True, True, False])
    for name, fn in GROUP_ESTIMATORS.items():
        a = fn(r, mask, g, valid)
        close(a[2], [0.0, 0.0])
        close(a[:2], fn(r[:2], mask[:2], g[:2], valid[:2]))
    # A group left with one valid sample has no baseline: zero advantages.
    close(grpo_advantages(r, mask, g, torch.tensor([True, False, False])), torch.zeros(3, 2))


def test_rloo_baseline_excludes_the_sample():
    r = T([[1.0], [2.0], [6.0]])
    close(rloo_advantages(r, torch.ones(3, 1), groups(0, 0, 0), torch.ones(3, dtype=torch.bool)),
          [[1 - 4.0], [2 - 3.5], [6 - 1.5]])


def test_held_returns_to_go_keep_the_last_value_past_the_end():
    G, H = held_returns_to_go(T([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    close(G, [[3.0, 2.0, 0.0], [3.0, 3.0, 3.0]])
    close(H, [[3.0, 2.0, 2.0], [3.0, 3.0, 3.0]])


def test_rloo_token_hand_computed():
    # Three samples; the other samples' return-to-go at the same position is each token's baseline.
    r = T([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a = rloo_token_advantages(r, torch.ones(3, 3), groups(0, 0, 0), torch.ones(3, dtype=torch.bool))
    # G = [[0, -1, -1], [1, 1, 0], [1, 1, 1]]
    close(a, [[0 - 1.0, -1 - 1.0, -1 - 0.5], [1 - 0.5, 1 - 0.0, 0 - 0.0], [1 - 0.5, 1 - 0.0, 1 + 0.5]])


def test_token_estimators_give_a_shared_tail_no_advantage():
    # Every sample ends on the same -1 (a wrong answer line) after different credit: the constant
    # baseline (grpo) pushes every sample's tail down; the per-position one leaves it at 0 and
    # keeps the difference where the samples differ.
    r = T([[0.5, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, -1.0], [0.5, 0.0, -1.0, 0.0]])
    mask = T([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]]).float()
    g, v = groups(0, 0, 0), torch.ones(3, dtype=torch.bool)
    assert (grpo_advantages(r, mask, g, v)[:, 2] < -0.5).all()
    for fn in (rloo_token_advantages, grpo_token_advantages):
        a = fn(r, mask, g, v)
        close(a[:, 1:], torch.zeros(3, 3))
        assert a[0, 0] > 0 and a[1, 0] < 0


def test_token_estimators_equal_rloo_and_grpo_on_sequence_rewards():
    # Everything on each row's last token, rows of different lengths, interleaved groups.
    totals = T([2.0, 0.0, 1.0, 1.0, 5.0, 3.0])
    lengths = [3, 2, 4, 1, 2, 4]
    mask = torch.zeros(6, 4)
    r = torch.zeros(6, 4)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        r[i, n - 1] = totals[i]
    g, v = groups(0, 1, 0, 1, 0, 1), torch.ones(6, dtype=torch.bool)
    close(rloo_token_advantages(r, mask, g, v), rloo_advantages(r, mask, g, v))
    expected = torch.zeros(6)
    for gid in (0, 1):
        rows = g == gid
        expected[rows] = (totals[rows] - totals[rows].mean()) / totals[rows].std(unbiased=False)
    close(grpo_token_advantages(r, mask, g, v), expected[:, None] * mask, tol=1e-4)


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


def test_whole_batch_entropy_gradient_sums_over_minibatches():
    """Each minibatch differentiates through its own rows, the others' distributions constant: the
    gradients summed over the minibatches are the gradient of the whole batch's batch entropy, and
    the value of every part is the whole batch's; scale n_batch / n_minibatch scales the gradient only."""
    from rlsf.algorithms.core import batch_entropy_part

    torch.manual_seed(0)
    logits = (torch.randn(12, 7) * 2).requires_grad_()
    temperature = 0.7
    whole = batch_entropy(logits, temperature)
    (want,) = torch.autograd.grad(whole, logits)
    probs = (logits.detach() / temperature).softmax(-1)
    got = torch.zeros_like(logits)
    for rows in torch.randperm(12).split(4):
        others = torch.ones(12, dtype=torch.bool)
        others[rows] = False
        part = batch_entropy_part(logits[rows], probs[others].sum(0), 12, temperature)
        close(part, whole, tol=1e-6)
        (g,) = torch.autograd.grad(part, logits)
        got += g
        scaled = batch_entropy_part(logits[rows], probs[others].sum(0), 12, temperature, scale=3.0)
        close(scaled, whole, tol=1e-6)
        close(torch.autograd.grad(scaled, logits)[0], 3 * g, tol=1e-6)
    assert float((got - want).abs().max()) <= 1e-6
    assert float(want.abs().max()) > 1e-3  # not trivially zero
    # One minibatch holding every row: the plain batch entropy.
    close(batch_entropy_part(logits, torch.zeros(7), 12, temperature), whole, tol=1e-6)


@pytest.mark.parametrize("scope", ["batch", "minibatch"])
def test_update_batch_entropy_scope(tiny_model_dir, scope):
    """A GRPO update of 8 rows in minibatches of 4 whose only gradient is the batch entropy's
    (advantages and KL zero): with scope batch each minibatch's gradient is (8 / 4) x its share of the
    gradient of the whole batch's term, so the two sum to 2 x that gradient; with scope minibatch they
    are the gradients of each minibatch's own term. The logged figure is the whole batch's (or the
    mean of the minibatches')."""
    from rlsf.algorithms import ALGORITHMS
    from rlsf.algorithms.base import entropy_positions, response_forward
    from rlsf.config import Config
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.runtime.device import Runtime
    from rlsf.runtime.utils import Timer
    from test_distributed import fixed_batch

    cfg = Config.load(None, {"model.name": tiny_model_dir, "model.autocast": "none", "train.algorithm": "grpo",
                             "rollout.prompts_per_step": 4, "rollout.samples_per_prompt": 2, "grpo.kl_coef": 0.0,
                             "grpo.minibatch_size": 4, "grpo.batch_entropy_coef": 0.5, "grpo.max_grad_norm": 0.0,
                             "grpo.batch_entropy_scope": scope, "grpo.batch_entropy_position": "before_end"})
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    algo = ALGORITHMS["grpo"](model, tok, None, cfg, Runtime("cpu", "none", "test", "cpu"))
    exp = fixed_batch(len(tok))
    exp.rewards = torch.zeros_like(exp.rewards)  # zero advantages: the batch entropy is the only gradient
    params = [p for p in model.parameters() if p.requires_grad]
    grads, parts = [], []
    torch.manual_seed(1)
    order = [r.tolist() for r in torch.randperm(len(exp)).split(4)]  # the minibatches step() will draw

    def record() -> None:  # in place of the optimiser's step: the weights stay, each gradient is kept
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params])

    algo.optimizer.step = record
    torch.manual_seed(1)
    stats = algo.step(exp, Timer())

    def term(rows: list[int]) -> torch.Tensor:
        mb = exp.select(rows, trim=True)
        fo = response_forward(model, mb, temperature=1.0, precision="none", share_prompts=False)
        mask = mb.loss_mask
        return batch_entropy(fo.logits_at(entropy_positions(algo.acfg, mask, mb.truncated))[mask.sum(1) > 0])

    whole = term(list(range(len(exp))))
    want = torch.autograd.grad(-0.5 * whole, params, allow_unused=True)
    if scope == "batch":
        got = [sum(g[i] for g in grads) / 2 for i in range(len(params))]
        close(stats["batch_entropy"], whole.detach(), tol=1e-5)
    else:
        parts = [term(rows) for rows in order]
        want = [sum(gs) for gs in zip(*(torch.autograd.grad(-0.5 * t, params, allow_unused=True) for t in parts))]
        got = [sum(g[i] for g in grads) for i in range(len(params))]
        close(stats["batch_entropy"], sum(float(t.detach()) for t in parts) / 2, tol=1e-5)
    scale = max(float(w.abs().max()) for w in want if w is not None)
    assert scale > 0
    for w, g in zip(want, got):
        assert float(((w if w is not None else 0) - g).abs().max()) <= 1e-5 * scale


def test_distinct_n_and_opening_share_by_hand():
    from rlsf.evaluation.metrics import distinct_n, opening_share

    texts = ["I am glad", "I am glad", "the film was bad"]
    assert distinct_n(texts, 1) == 7 / 10  # I am glad the film was bad: 7 distinct of 10 words
    assert distinct_n(texts, 2) == 5 / 7  # (I am) (am glad) twice each, 3 bigrams of the last text
    assert distinct_n(["one"], 2) == 0.0 and distinct_n([], 1) == 0.0
    assert opening_share(texts) == 2 / 3 and opening_share(["A b c d", "a B c e"]) == 1.0
    assert opening_share([]) == 0.0


def test_last_token_index():
    close(last_token_index(T([[1, 1, 0], [1, 1, 1], [0, 0, 0]])), [1, 2, 0])


def test_batch_entropy_index_steps_back_over_the_end_token():
    mask = T([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    close(batch_entropy_index(mask, T([1, 1, 1, 1])), [0, 1, 0, 0])  # a one-token row keeps its only token
    close(batch_entropy_index(mask, T([0, 1, 0, 0])), [1, 1, 0, 0])  # truncated rows keep their last


def test_regularisers_by_hand():
    """The bonus c_H * mean token entropy + c_B * batch entropy, at the last position or before the end."""
    from types import SimpleNamespace

    from rlsf.algorithms.base import ForwardOut, PolicyGradient

    big = 60.0
    logits = T([[[0, 0], [big, 0], [0, 0]],     # row 0: 2 tokens (pad after), ends with [1, 0]
                [[big, 0], [0, big], [0, 0]]])  # row 1: 3 tokens
    mask = T([[1, 1, 0], [1, 1, 1]])
    fo = ForwardOut(logits=logits, logp=torch.zeros(mask.shape), hidden=None)
    h = lambda *p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
    token_entropy = (math.log(2) + 0 + 0 + 0 + math.log(2)) / 5
    for position, truncated, probs in [("last", [False, False], [(1, 0), (0.5, 0.5)]),
                                       ("before_end", [False, False], [(0.5, 0.5), (0, 1)]),
                                       ("before_end", [True, False], [(1, 0), (0, 1)])]:
        acfg = SimpleNamespace(entropy_coef=0.1, batch_entropy_coef=0.3, batch_entropy_temperature=1.0,
                               batch_entropy_position=position)
        bonus, stats = PolicyGradient.regularisers(SimpleNamespace(acfg=acfg), fo, mask, truncated)
        mean = [(a + b) / 2 for a, b in zip(*probs)]
        close(stats["entropy"], token_entropy, tol=1e-5)
        close(stats["batch_entropy"], h(*mean), tol=1e-5)
        close(bonus, 0.1 * token_entropy + 0.3 * h(*mean), tol=1e-5)
    acfg.batch_entropy_temperature = 1e9  # a huge temperature flattens every distribution: log 2
    close(PolicyGradient.regularisers(SimpleNamespace(acfg=acfg), fo, mask, truncated)[1]["batch_entropy"],
          math.log(2), tol=1e-5)


def test_pass_at_k_and_majority():
    close(pass_at_k(4, 1, 1), 0.25)
    close(pass_at_k(4, 1, 2), 0.5)  # 1 - C(3,2)/C(4,2)
    close(pass_at_k(4, 0, 4), 0.0)
    close(pass_at_k(4, 3, 2), 1.0)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)
    certs = [Certificate(0, "w", False, answer="a"), Certificate(1, "c", True, answer="b"),
             Certificate(1, "c", True, answer="b"), Certificate(0, "n", False, answer=None)]
    assert majority_vote({}, [], certs) == 1
    assert majority_vote({}, [], [Certificate(0, "n")]) is None
    tie = [Certificate(0, "w", False, answer="x"), Certificate(1, "c", True, answer="y")]
    assert majority_vote({}, [], tie) == 0  # ties: first seen
    failed = [Certificate.checker_failed("timeout"), Certificate(1, "c", True, answer="y")]
    failed[0].answer = "x"
    assert majority_vote({}, [], failed) == 1  # a failed check does not vote


def test_answer_mode_share_measures_collapse():
    from rlsf.evaluation.metrics import answer_mode_share

    certs = [Certificate(0, "x", answer=a) for a in ("9", "9", "7", None)]
    assert answer_mode_share(certs) == 0.5
    assert answer_mode_share([Certificate(0, "x", answer="3")] * 4) == 1.0
    assert answer_mode_share([Certificate(0, "x")] * 4) == 0.25  # no answers: all different
    assert answer_mode_share([]) == 0.0


def test_value_shift_makes_the_critics_mean_match_the_mean_return() -> None:
    from rlsf.algorithms.ppo import value_shift

    shaped = torch.tensor([[0.0, -0.5, -1.0], [0.1, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 9.0]])  # 9.0 sits on padding: ignored
    # returns-to-go: row 0: -1.5, -1.5, -1.0; row 1: -0.9, -1.0 (gamma 1)
    want = ((-1.5 - 0.1) + (-1.5 - 0.2) + (-1.0 - 0.3) + (-0.9 - 0.0) + (-1.0 - 0.0)) / 5
    assert value_shift(shaped, values, mask, 1.0) == pytest.approx(want)
    shifted = values + value_shift(shaped, values, mask, 1.0)
    rtg = torch.tensor([[-1.5, -1.5, -1.0], [-0.9, -1.0, 0.0]])
    assert float(((rtg - shifted) * mask).sum()) == pytest.approx(0.0, abs=1e-6)
