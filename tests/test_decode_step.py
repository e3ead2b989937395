"""The fused decoding step computes the model's own forward.

Llama and Qwen2 (biased q/k/v) decoders with grouped-query heads, left padding, rows dropped
mid-rollout, LoRA adapters folded in, and bf16. Equalities are at float32 round-off in float32
and within bf16 tolerance under bf16. No timings (see ``benchmarks/bench_sampling.py``).
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlsf.rollout.fused_step import FusedLlamaStep, ModelStep, _mkldnn_bf16, fused_step_supported
from rlsf.models.loading import load_model, load_tokenizer
from rlsf.rollout.engines import generate

SMALL = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)


def _model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()


def _prompts(B: int = 4, P: int = 7):
    torch.manual_seed(1)
    ids = torch.randint(3, 101, (B, P))
    mask = torch.ones(B, P, dtype=torch.long)
    for row, pad in enumerate([0, 2, 5, 1][:B]):  # left padding of different lengths
        mask[row, :pad] = 0
    return ids, mask


@torch.no_grad()
def _run_both(model, precision="none", steps=6, drop_at=3):
    """Largest relative logit difference between the model's own step and the fused step over a
    prefill, a gather of prompts to samples, steps, and finished rows dropped."""
    ids, mask = _prompts()
    plain, fused = ModelStep(model, precision), FusedLlamaStep(model, 4, ids.shape[1] + steps, precision)
    a, b = plain.prefill(ids, mask).float(), fused.prefill(ids, mask).float()
    diffs = [(a - b).abs().max() / a.abs().max()]
    rows = torch.tensor([0, 1, 1, 2, 3, 3])  # prompts 1 and 3 get two samples each
    plain.select(rows), fused.select(rows)
    tok, pos = a[rows].argmax(-1), mask.sum(-1)[rows]
    for t in range(steps):
        if t == drop_at:  # rows 0 and 2 finish: both steppers drop them
            keep = torch.tensor([1, 3, 4, 5])
            plain.select(keep), fused.select(keep)
            tok, pos = tok[keep], pos[keep]
        a, b = plain.step(tok, pos).float(), fused.step(tok, pos).float()
        diffs.append((a - b).abs().max() / a.abs().max())
        tok, pos = a.argmax(-1), pos + 1  # both continue from the plain step's choice
    return max(diffs)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_fused_step_equals_model_forward_float32(kind):
    model = _model(kind)
    if kind == "qwen2":  # make the q/k/v biases matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    assert fused_step_supported(model)
    assert _run_both(model) < 1e-5


def test_fused_step_under_bf16_is_within_bf16_tolerance():
    """float32 weights and precision bf16: the model's step under autocast, the fused step on
    bf16 weights converted for the rollout."""
    assert _run_both(_model("llama"), precision="bf16") < 0.05


def test_fused_step_ties_the_head_to_one_converted_embedding():
    model = LlamaForCausalLM(LlamaConfig(**{**SMALL, "tie_word_embeddings": True}))
    step = FusedLlamaStep(model, 1, 8, "bf16", pack=False)
    assert step.head is step.embed and step.head.dtype == torch.bfloat16


@pytest.mark.skipif(not _mkldnn_bf16(), reason="no oneDNN bf16 on this CPU")
def test_prepacked_weights_give_the_same_logits():
    """oneDNN's prepacked bf16 linear (the CPU default) against plain bf16 ``F.linear``."""
    model = _model("llama")
    ids, mask = _prompts()
    packed, plain = (FusedLlamaStep(model, 4, ids.shape[1] + 2, "bf16", pack=p) for p in (True, False))
    assert packed.packed and not plain.packed
    a, b = packed.prefill(ids, mask), plain.prefill(ids, mask)
    tok, pos = a.float().argmax(-1), mask.sum(-1)
    a, b = torch.stack([a, packed.step(tok, pos)]), torch.stack([b, plain.step(tok, pos)])
    assert (a.float() - b.float()).abs().max() <= 0.02 * b.float().abs().max()


def test_fused_step_folds_in_lora_adapters():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapters an effect to fold in
            torch.nn.init.normal_(p, std=0.3)
    model.eval()
    assert fused_step_supported(model)
    assert _run_both(model) < 1e-5
    with model.disable_adapter():  # a disabled adapter is left out
        assert _run_both(model) < 1e-5


def test_fused_step_is_not_used_where_it_would_differ():
    assert not fused_step_supported(LlamaForCausalLM(LlamaConfig(**SMALL, hidden_act="gelu")))
    assert not fused_step_supported(LlamaForCausalLM(LlamaConfig(**SMALL, mlp_bias=True)))


def test_fused_and_plain_sampling_loops_agree(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["Input: 4 6 8 2", "Hi", "Input: 4 6 8 2", "Input: 1 1 1 8", "Hi"]
    greedy = [generate(model, tok, prompts, max_new_tokens=12, do_sample=False, fused_step=f) for f in (True, False)]
    assert torch.equal(greedy[0].response_ids, greedy[1].response_ids)
    sampled = []
    for fused in (True, False):
        torch.manual_seed(3)
        sampled.append(generate(model, tok, prompts, max_new_tokens=12, temperature=0.9, top_p=0.95,
                                fused_step=fused))
    assert torch.equal(sampled[0].response_ids, sampled[1].response_ids)
    assert torch.allclose(sampled[0].logprobs, sampled[1].logprobs, atol=1e-4)


def test_fused_sampling_keeps_no_copy_and_reads_the_current_weights(tiny_model_dir):
    from rlsf.rollout.engines import SamplingModel

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    sampler = SamplingModel(model, "bf16", fused=True)
    assert sampler.model is model and sampler.copy is None  # bf16 weights are made per rollout
    with torch.no_grad():  # an "update": the next rollout must see it
        for p in model.parameters():
            p.mul_(1.5)
    sampler.sync()
    fused, plain = (generate(sampler.model, tok, ["Input: 4 6 8 2", "Hi"], max_new_tokens=10, do_sample=False,
                             fused_step=f) for f in (True, False))
    assert torch.equal(fused.response_ids, plain.response_ids)
