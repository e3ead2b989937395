"""The memory options compute what the plain path computes.

``model.logit_chunk``: token log-probs and entropies made from the final hidden states a chunk of
positions at a time equal those of the whole ``[B, T, vocab]`` logits, values and gradients, within
float32 round-off (a matrix product of another height may round differently), and within bf16
round-off under bf16 autocast. ``model.reference_precision``: under bf16 autocast a reference with
bf16 linear weights gives exactly the float32 reference's log-probs; under float32 compute it is
an approximation within bf16 round-off. The peak-memory figures are measured by
``benchmarks/bench_memory.py``, not here.
"""

import pytest
import torch

from rlsf.algorithms.base import response_forward
from rlsf.algorithms.core import entropy_from_logits, logprobs_from_logits
from rlsf.config import Config, ConfigError
from rlsf.models.loading import enable_gradient_checkpointing, load_model, load_tokenizer
from rlsf.models.parts import chunked_logprobs
from rlsf.models.reference import Reference, reference_precision
from rlsf.rollout.engines import generate
from rlsf.stages.train import RLTrainer

from test_training import tiny_cfg

PROMPTS = ["Input: 4 6 8 2", "Hi", "Input: 4 6 8 2", "Input: 1 1 1 8", "Hi", "Input: 4 6 8 2"]
F32 = {"rtol": 1e-5, "atol": 1e-6}


def _plain(head, hidden, labels, temperature):
    logits = head(hidden).float() / temperature
    return logprobs_from_logits(logits, labels), entropy_from_logits(logits)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("recompute", [False, True])
def test_chunked_logprobs_equal_the_whole_logits_values_and_gradients(chunk, recompute):
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(300, 16, generator=gen))
    hidden = torch.randn(3, 11, 16, generator=gen)
    labels = torch.randint(0, 300, (3, 11), generator=gen)
    w_lp, w_ent = torch.randn(3, 11, generator=gen), torch.randn(3, 11, generator=gen)
    results = []
    for chunked in (False, True):
        head.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        if chunked:
            lp, ent = chunked_logprobs(head, h, labels, temperature=0.7, chunk=chunk, entropy=True,
                                       entropy_grad=True, recompute=recompute)
        else:
            lp, ent = _plain(head, h, labels, 0.7)
        ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
        results.append((lp.detach(), ent.detach(), h.grad, head.weight.grad.clone()))
    for plain, chunked in zip(*results):
        torch.testing.assert_close(chunked, plain, **F32)


def test_chunked_entropy_without_its_gradient_has_no_graph():
    head = torch.nn.Linear(8, 50)
    h = torch.randn(2, 5, 8, requires_grad=True)
    lp, ent = chunked_logprobs(head, h, torch.zeros(2, 5, dtype=torch.long), chunk=3, entropy=True)
    assert lp.requires_grad and not ent.requires_grad
    assert chunked_logprobs(head, h, torch.zeros(2, 5, dtype=torch.long), chunk=3)[1] is None


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _rollout(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    return model, generate(model, tok, PROMPTS, max_new_tokens=8, engine="rlsf")


def _forward_and_grads(model, ro, *, chunk, share, precision):
    """Every output the losses read, and the gradient of a loss made of all of them."""
    model.zero_grad(set_to_none=True)
    fo = response_forward(model, ro, temperature=0.8, precision=precision, hidden=True, share_prompts=share,
                          logit_chunk=chunk, entropy=True, entropy_grad=True)
    mask = ro.response_mask.float()
    index = mask.sum(1).long() - 1
    last = fo.logits_at(index)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(mask.shape, generator=gen)
    loss = ((fo.logp * w * mask).sum() + (fo.token_entropy() * mask).sum() * 0.1
            + last.softmax(-1).mean(0).max() + fo.hidden.float().pow(2).mean())
    loss.backward()
    out = {"logp": fo.logp * mask, "entropy": fo.token_entropy() * mask, "last": last, "hidden": fo.hidden}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("share", [True, False])
def test_response_forward_in_chunks_equals_the_whole_logits(tiny_model_dir, share):
    model, ro = _rollout(tiny_model_dir)
    plain, plain_grads = _forward_and_grads(model, ro, chunk=0, share=share, precision="none")
    chunked, chunked_grads = _forward_and_grads(model, ro, chunk=5, share=share, precision="none")
    for k in plain:
        torch.testing.assert_close(chunked[k], plain[k], **F32, msg=k)
    assert plain_grads.keys() == chunked_grads.keys() and plain_grads
    for n in plain_grads:
        assert _rel(chunked_grads[n], plain_grads[n]) < 1e-5, n  # float32 round-off: ~4e-7 measured


def test_response_forward_in_chunks_under_bf16_autocast(tiny_model_dir):
    """Under bf16 autocast each chunk's head-weight gradient is rounded to bf16 before the chunks are
    summed (one bf16 product rounds once): the gradients agree within bf16 round-off, 0.15-0.45% in
    norm here, where the plain bf16 path is itself 0.4-1% from float32."""
    model, ro = _rollout(tiny_model_dir)
    plain, plain_grads = _forward_and_grads(model, ro, chunk=0, share=True, precision="bf16")
    chunked, chunked_grads = _forward_and_grads(model, ro, chunk=5, share=True, precision="bf16")
    for k in plain:
        torch.testing.assert_close(chunked[k], plain[k], rtol=2e-2, atol=2e-2, msg=k)
    for n in plain_grads:
        assert _rel(chunked_grads[n], plain_grads[n]) < 1e-2, n


def test_chunks_are_recomputed_under_gradient_checkpointing(tiny_model_dir):
    model, ro = _rollout(tiny_model_dir)
    plain, plain_grads = _forward_and_grads(model, ro, chunk=0, share=False, precision="none")
    enable_gradient_checkpointing(model)
    model.train()
    chunked, chunked_grads = _forward_and_grads(model, ro, chunk=5, share=False, precision="none")
    for k in plain:
        torch.testing.assert_close(chunked[k], plain[k], **F32, msg=k)
    for n in plain_grads:
        assert _rel(chunked_grads[n], plain_grads[n]) < 1e-5, n  # float32 round-off: ~4e-7 measured


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_logit_chunk_gives_the_same_update(tiny_model_dir, tmp_path, algorithm):
    """One training step (same rollouts, same seed) ends with the same weights in chunks as with the
    whole logits, the entropy bonuses on (their gradients go through the chunks and logits_at)."""
    runs = {}
    for chunk in (0, 4):
        tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / str(chunk), **{
            "train.algorithm": algorithm, "train.steps": 1, "model.logit_chunk": chunk,
            f"{algorithm}.entropy_coef": 0.01, f"{algorithm}.batch_entropy_coef": 0.05}))
        metrics = tr.train()
        runs[chunk] = (metrics, {n: p.detach().clone() for n, p in tr.model.named_parameters()})
    (m0, p0), (m1, p1) = runs[0], runs[4]
    assert m0["reward/total"] == m1["reward/total"]
    for key in ("loss/policy", "entropy", "batch_entropy", "kl"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-4, abs=1e-6), key
    for n in p0:
        torch.testing.assert_close(p1[n], p0[n], rtol=1e-4, atol=1e-5, msg=n)  # lr 1e-3: atol is 1% of a step


# ---- the reference policy -------------------------------------------------------------------------

def test_reference_precision_auto_follows_the_runtime():
    assert reference_precision("auto", "bf16") == "bf16"
    assert reference_precision("auto", "none") == "same"
    assert reference_precision("bf16", "none") == "bf16" and reference_precision("same", "bf16") == "same"
    with pytest.raises(ValueError, match="fp8"):
        reference_precision("fp8", "none")


def test_bf16_reference_keeps_embeddings_and_norms_float32(tiny_model_dir):
    model = load_model(tiny_model_dir)
    same, bf16 = Reference.from_policy(model, "same"), Reference.from_policy(model, "bf16")
    frozen = bf16.model
    assert frozen.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert frozen.model.embed_tokens.weight.dtype == torch.float32  # tied to the head: stays float32
    assert frozen.lm_head.weight is frozen.model.embed_tokens.weight
    assert frozen.model.norm.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the policy is untouched
    linear = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    assert same.nbytes() - bf16.nbytes() == 2 * linear


def _reference_logp(ref, ro, precision):
    with torch.no_grad(), ref.active() as m:
        return response_forward(m, ro, temperature=0.8, precision=precision).logp


def test_bf16_reference_is_exact_under_bf16_autocast(tiny_model_dir):
    model, ro = _rollout(tiny_model_dir)
    same, bf16 = Reference.from_policy(model, "same"), Reference.from_policy(model, "bf16")
    assert torch.equal(_reference_logp(bf16, ro, "bf16"), _reference_logp(same, ro, "bf16"))


def test_bf16_reference_under_float32_compute_is_within_bf16_round_off(tiny_model_dir):
    model, ro = _rollout(tiny_model_dir)
    mask = ro.response_mask.bool()
    exact = _reference_logp(Reference.from_policy(model, "same"), ro, "none")[mask]
    approx = _reference_logp(Reference.from_policy(model, "bf16"), ro, "none")[mask]
    assert not torch.equal(approx, exact)  # it ran in bf16 (the block's autocast)
    torch.testing.assert_close(approx, exact, rtol=0, atol=5e-2)


def test_trainer_builds_the_reference_the_setting_asks_for(tiny_model_dir, tmp_path):
    for autocast_setting, setting, expected in [("bf16", "auto", "bf16"), ("none", "auto", "same"),
                                                ("bf16", "same", "same"), ("none", "bf16", "bf16")]:
        tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.autocast": autocast_setting,
                                                             "model.reference_precision": setting}))
        assert tr.algo.reference.precision == expected, (autocast_setting, setting)
        up = tr.algo.reference.model.model.layers[0].mlp.up_proj.weight
        assert up.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_lora_reference_stays_the_shared_policy(tiny_model_dir, tmp_path):
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.lora": True, "model.autocast": "bf16"}))
    assert tr.algo.reference.is_shared and tr.algo.reference.nbytes() == 0


@pytest.mark.parametrize("setting, value, message", [
    ("model.reference_precision", "fp8", "must be same, bf16 or auto"),
    ("model.logit_chunk", -1, "must be >= 0"),
])
def test_memory_settings_are_validated(setting, value, message):
    with pytest.raises(ConfigError, match=f"{setting}: {message}"):
        Config.load(None, {setting: value})

