"""The fast path computes what the plain path computes.

Sampling loop vs Hugging Face ``generate``, shared-prompt update passes vs full-sequence passes,
the single-update shortcut for ``old_logp`` vs a separate log-prob pass, trimmed minibatches,
and checking completions in a worker pool vs in order. Equalities are exact or at float32
round-off in float32, and within bf16 tolerance under bf16 autocast. No timings are asserted
(speed is measured by ``benchmarks/``).
"""

import pytest
import torch

from rlsf.algorithms import ALGORITHMS, PolicyGradient
from rlsf.algorithms.base import response_forward
from rlsf.models.loading import load_model, load_tokenizer
from rlsf.rollout.engines import generate, sample_from, unique_prompts
from rlsf.stages.train import RLTrainer
from rlsf.runtime.utils import Timer

from test_training import tiny_cfg

PROMPTS = ["Input: 4 6 8 2", "Hi", "Input: 4 6 8 2", "Input: 1 1 1 8", "Hi", "Input: 4 6 8 2"]


def test_unique_prompts_maps_rows_to_first_occurrence():
    ids = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]])
    first, inverse = unique_prompts(ids)
    assert torch.equal(ids[first][inverse], ids)
    assert sorted(first.tolist()) == [0, 1, 3]


def test_sample_from_follows_the_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    scores = probs.log().expand(40000, -1)
    draws, logp = sample_from(scores)
    assert torch.allclose(logp, probs.log()[draws])
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[1] == 0 and freq[4] == 0  # probability 0 (e.g. cut by top-p): never drawn
    assert torch.allclose(freq, probs, atol=0.01)  # ~4 standard errors at n = 40000


def test_fast_greedy_decoding_equals_hf_generate(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    fast = generate(model, tok, PROMPTS, max_new_tokens=10, do_sample=False, batch_size=4, engine="rlsf")
    plain = generate(model, tok, PROMPTS, max_new_tokens=10, do_sample=False, batch_size=4, engine="hf")
    assert torch.equal(fast.response_ids, plain.response_ids)
    assert torch.equal(fast.response_mask, plain.response_mask)
    assert fast.texts == plain.texts and fast.truncated == plain.truncated


def test_fast_sampling_keeps_rows_with_their_prompts_when_all_are_distinct(tiny_model_dir):
    """Prefill runs on the distinct prompts in torch.unique's sorted order; every row must get its
    own prompt's cache back even when no prompt repeats (a regression test)."""
    from rlsf.algorithms.base import response_forward

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["Input: 9 9 9 9 and more", "Hi", "Input: 1 1 1 8", "A", "Hello there"]
    ids = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)["input_ids"]
    if torch.equal(unique_prompts(ids)[1], torch.arange(len(prompts))):
        prompts = prompts[::-1]  # make sure sorted order is not row order
    torch.manual_seed(0)
    ro = generate(model, tok, prompts, max_new_tokens=6, engine="rlsf")
    fo = response_forward(model, ro, temperature=1.0, precision="none")
    mask = ro.response_mask.bool()
    assert torch.allclose(ro.logprobs[mask], fo.logp[mask], atol=1e-4)


@pytest.mark.parametrize("engine", ["rlsf", "hf"])
def test_finished_rows_are_reported_once_with_their_ids(tiny_model_dir, engine):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    seen = {}
    torch.manual_seed(1)
    ro = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=4, engine=engine,
                  on_finish=lambda row, ids: seen.setdefault(row, []).append(ids))
    assert sorted(seen) == list(range(len(PROMPTS)))
    for row, calls in seen.items():
        n = int(ro.response_mask[row].sum())
        assert calls == [ro.response_ids[row, :n].tolist()]


@pytest.mark.parametrize("hidden", [False, True])
def test_shared_prompt_pass_equals_full_pass_float32(tiny_model_dir, hidden):
    torch.manual_seed(0)
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ro = generate(model, tok, PROMPTS, max_new_tokens=10)
    mask = ro.response_mask.bool()
    outs, grads = {}, {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        fo = response_forward(model, ro, temperature=0.8, precision="none", hidden=hidden, share_prompts=share)
        loss = (fo.logp * mask).sum() + (fo.hidden[mask].pow(2).mean() if hidden else 0)
        loss.backward()
        outs[share] = fo
        grads[share] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert torch.allclose(outs[True].logp[mask], outs[False].logp[mask], atol=1e-5)
    if hidden:
        assert torch.allclose(outs[True].hidden[mask], outs[False].hidden[mask], atol=1e-4)
    for n, g in grads[False].items():
        assert torch.allclose(grads[True][n], g, atol=1e-5, rtol=1e-4), n


def test_shared_prompt_pass_under_bf16_is_within_bf16_tolerance(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ro = generate(model, tok, PROMPTS, max_new_tokens=10)
    mask = ro.response_mask.bool()
    with torch.no_grad():
        exact = response_forward(model, ro, temperature=1.0, precision="none", share_prompts=False).logp[mask]
        plain = response_forward(model, ro, temperature=1.0, precision="bf16", share_prompts=False).logp[mask]
        fast = response_forward(model, ro, temperature=1.0, precision="bf16", share_prompts=True).logp[mask]
    # bf16 keeps 8 bits of mantissa: the fast path is as close to float32 as the plain path is.
    plain_err, fast_err = (plain - exact).abs().mean(), (fast - exact).abs().mean()
    assert fast_err < 0.05 and plain_err < 0.05
    assert (fast - plain).abs().max() < 0.2


def _trainer(tiny_model_dir, tmp_path, **kw):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "train.algorithm": "grpo", "grpo.kl_coef": 0.0, "grpo.epochs": 1, "grpo.minibatch_size": 4, **kw})
    return RLTrainer(cfg)


@pytest.mark.parametrize("precision", ["none", "bf16"])
def test_fast_grpo_loss_equals_plain_loss(tiny_model_dir, tmp_path, precision):
    """Single update: the fast path skips the old-log-prob pass and shares prompts; the plain path
    computes old log-probs with a separate full pass. Same loss and gradient."""
    torch.manual_seed(0)
    tr = _trainer(tiny_model_dir, tmp_path, **{"model.autocast": precision})
    ro = tr.rollout_step()
    ro.rewards = ro.rewards + torch.linspace(-1, 1, ro.rewards.numel()).view_as(ro.rewards) * ro.response_mask
    algo = tr.algo
    assert algo.single_update(len(ro))
    fast_data, _ = algo.prepare(ro, Timer())
    assert "old_logp" not in fast_data  # no separate pass
    results = {}
    mb = ro.select(range(len(ro)), trim=True)
    R = mb.response_ids.shape[1]
    for share, data in ((True, fast_data), (False, None)):
        algo.share_prompts = share
        if data is None:
            data = dict(fast_data, old_logp=algo.rollout_logprobs(ro)[0])
        algo.model.zero_grad(set_to_none=True)
        fo = algo.forward(algo.model, mb)
        loss, _ = algo.loss(mb, {k: v[:, :R] for k, v in data.items()}, fo, mb.loss_mask)
        loss.backward()
        results[share] = (loss.detach(), {n: p.grad.clone() for n, p in algo.model.named_parameters()
                                          if p.grad is not None})
    tol = dict(atol=1e-5, rtol=1e-4) if precision == "none" else dict(atol=2e-2, rtol=5e-2)
    assert torch.allclose(results[True][0], results[False][0], **tol)
    num = sum((results[True][1][n] - g).pow(2).sum() for n, g in results[False][1].items()).sqrt()
    den = sum(g.pow(2).sum() for g in results[False][1].values()).sqrt()
    assert num / den < (1e-4 if precision == "none" else 0.1)


# The clipped policy-gradient family (the fast path is theirs; Expert Iteration fine-tunes on its own data).
@pytest.mark.parametrize("algorithm", sorted(n for n, c in ALGORITHMS.items() if issubclass(c, PolicyGradient)))
def test_training_step_fast_equals_plain_in_float32(algorithm, tiny_model_dir, tmp_path):
    """A whole update (several minibatches, trimmed) moves the weights the same way either way.

    Plain SGD, so the weight change is linear in the gradients (Adam's first step is ~lr * sign(g),
    which turns round-off in a near-zero gradient into a full-size difference)."""
    deltas = []
    for share in (True, False):
        torch.manual_seed(0)
        tr = _trainer(tiny_model_dir, tmp_path / str(share), **{
            "train.algorithm": algorithm, f"{algorithm}.share_prompts": share, "ppo.minibatch_size": 2,
            "grpo.minibatch_size": 2, "ppo.kl_coef": 0.05, "grpo.kl_coef": 0.05})
        tr.algo.optimizer = torch.optim.SGD(tr.algo.param_groups(), lr=0.1)
        before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
        ro = tr.rollout_step()
        ro.rewards = ro.rewards + 0.1 * ro.response_mask
        ro.rewards[::2, 0] += 1.0
        tr.algo.step(ro, Timer())
        deltas.append({n: p.detach() - before[n] for n, p in tr.model.named_parameters()})
    total = sum(d.abs().sum() for d in deltas[1].values())
    assert total > 0
    for n, d in deltas[0].items():
        assert torch.allclose(d, deltas[1][n], atol=1e-6, rtol=1e-3), n


def test_trimmed_minibatch_drops_only_all_padding_columns(tiny_model_dir):
    torch.manual_seed(0)
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    ro = generate(model, tok, ["Hi", "Input: 4 6 8 2 and a much longer prompt"], max_new_tokens=12)
    mb = ro.select([0], trim=True)
    assert mb.prompt_mask.all() and mb.response_mask[0, -1] == 1
    assert torch.equal(mb.response_ids[0], ro.response_ids[0, : mb.response_ids.shape[1]])
    full = response_forward(model, ro.select([0]), temperature=1.0, precision="none")
    trimmed = response_forward(model, mb, temperature=1.0, precision="none")
    n = int(mb.response_mask.sum())
    assert torch.allclose(full.logp[0, :n], trimmed.logp[0, :n], atol=1e-5)


def test_worker_pool_checks_give_the_same_experience(tiny_model_dir, tmp_path):
    out = []
    for workers in (0, 2):
        torch.manual_seed(0)
        tr = _trainer(tiny_model_dir, tmp_path / str(workers), **{"check.workers": workers})
        ro = tr.rollout_step()
        tr.checker.close()
        out.append(([c.to_dict() for c in ro.certificates], ro.texts, ro.offsets, ro.rewards))
    assert out[0][:3] == out[1][:3]
    assert torch.equal(out[0][3], out[1][3])


def test_fused_adamw_steps_like_plain_adamw():
    from rlsf.runtime.utils import make_adamw

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = make_adamw([{"params": a, "lr": 1e-2}], weight_decay=0.1)
    plain = torch.optim.AdamW([{"params": b, "lr": 1e-2}], weight_decay=0.1)
    assert fused.defaults.get("fused")
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b):
        assert torch.allclose(p, q, atol=1e-6)
