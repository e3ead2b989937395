"""Rollouts: batched sampling with Hugging Face ``generate`` (KV cache, left padding).

A :class:`Rollout` keeps exactly what the update needs: the sampled token ids, the mask of
generated tokens (end of turn included, padding after it excluded), the decoded text and each
token's character range in it (see :mod:`rlsf.feedback.token_rewards`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rlsf.feedback.token_rewards import Offsets, decode_with_offsets
from rlsf.tasks.base import Example, Task
from rlsf.utils import autocast, model_device


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, R] right-padded
    response_mask: torch.Tensor  # [B, R] 1 on generated tokens
    texts: list[str]
    offsets: list[Offsets]
    truncated: list[bool]  # cut by max_new_tokens before end of turn
    example_index: list[int] = field(default_factory=list)  # row -> index into the prompt list
    logprobs: torch.Tensor | None = None  # [B, R] log-prob of each sampled token under the
    # distribution it was sampled from (temperature and top-p applied); None for greedy decoding

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def select(self, rows: torch.Tensor | list[int]) -> "Rollout":
        rows = torch.as_tensor(rows, dtype=torch.long)
        idx = rows.tolist()
        return Rollout(
            self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows], self.response_mask[rows],
            [self.texts[i] for i in idx], [self.offsets[i] for i in idx], [self.truncated[i] for i in idx],
            [self.example_index[i] for i in idx] if self.example_index else [],
            self.logprobs[rows] if self.logprobs is not None else None,
        )


class SamplingModel:
    """The weights ``generate`` runs on.

    Decoding reads every weight once per generated token, so on a CPU it is bound by memory
    traffic, not arithmetic. With ``precision="bf16"`` and float32 master weights we sample from
    a bf16 copy of the parameters (half the bytes per token; buffers such as rotary frequencies
    stay float32), refreshed from the master weights by :meth:`sync` before each rollout. The
    update recomputes log-probs with the master weights, so the copy only decides which tokens
    are sampled, never the gradient.
    """

    def __init__(self, model, precision: str = "none") -> None:
        self.policy = model
        self.copy = None
        if precision == "bf16" and next(model.parameters()).dtype == torch.float32:
            self.copy = copy.deepcopy(model).eval()
            for p in self.copy.parameters():
                p.requires_grad_(False)
                p.data = p.data.to(torch.bfloat16)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the trained weights into the copy (frozen ones, e.g. a LoRA base, never change)."""
        if self.copy is not None:
            for src, dst in zip(self.policy.parameters(), self.copy.parameters(), strict=True):
                if src.requires_grad:
                    dst.copy_(src)

    @property
    def model(self):
        return self.copy if self.copy is not None else self.policy


class SamplingLogprobs(LogitsProcessor):
    """Applies temperature and top-p itself and records each sampled token's log-probability.

    Hugging Face runs custom processors *before* its own temperature/top-p warpers, so we switch
    those off and warp here: the log-probs recorded are then exactly those of the distribution
    the tokens were drawn from. The token chosen at step ``t`` is only visible at step ``t + 1``
    (as the last input id), so one step's log-softmax is kept, ``[batch, vocab]``, instead of
    every step's scores (``output_scores`` would hold ``steps x batch x vocab`` floats).
    """

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.prev: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.steps.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = top_p_filter(scores, self.top_p)
        self.prev = scores.log_softmax(-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """``[batch, steps]`` log-probs, given the generated ids (the last step's choice)."""
        if self.prev is not None and len(self.steps) < generated.shape[1]:
            self.steps.append(self.prev.gather(-1, generated[:, -1:].to(self.prev.device)).squeeze(-1))
        self.prev = None
        out = torch.stack(self.steps, 1) if self.steps else torch.zeros(generated.shape[0], 0)
        self.steps = []
        return out


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (at least one)."""
    sorted_scores, order = scores.sort(-1, descending=True)
    probs = sorted_scores.softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The chat-formatted prompt text, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def task_prompts(tokenizer, task: Task, examples: list[Example]) -> list[str]:
    return [render_prompt(tokenizer, task.prompt(ex)) for ex in examples]


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-sequence ids: the tokenizer's eos, the model's generation eos ids, and ``<|im_end|>``."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if im_end is not None:
        ids.add(int(im_end))
    return sorted(ids)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 32,
    precision: str = "none",
    ignore_eos: bool = False,
) -> Rollout:
    """Sample one completion per prompt (repeat prompts for several samples).

    ``ignore_eos`` generates exactly ``max_new_tokens`` per sequence (for benchmarks).
    """
    device = model_device(model)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    all_stops = stop_token_ids(tokenizer, model)
    stops = [] if ignore_eos else all_stops
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else all_stops[0]
    # An explicit generation config: a model's own defaults (repetition penalty, top-k, ...)
    # would otherwise change the distribution sampled without the update knowing.
    # HF's own warpers are switched off when sampling: SamplingLogprobs applies them.
    warpers = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample else {}
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=stops or None, pad_token_id=pad_id,
        use_cache=True, **warpers,
    )
    recorder = SamplingLogprobs(temperature, top_p) if do_sample else None
    processors = LogitsProcessorList([recorder] if recorder else [])
    was_training = model.training
    model.eval()
    chunks, chunk_logprobs = [], []
    P = prompt_ids.shape[1]
    for s in range(0, len(prompts), batch_size):
        with autocast(precision, device):
            out = model.generate(
                input_ids=prompt_ids[s : s + batch_size], attention_mask=prompt_mask[s : s + batch_size],
                generation_config=gen_config, logits_processor=processors,
            )
        chunks.append(out[:, P:].cpu())
        if recorder is not None:
            chunk_logprobs.append(recorder.finish(out[:, P:]).cpu())
    model.train(was_training)

    R = max(c.shape[1] for c in chunks)
    responses = torch.full((len(prompts), R), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), R), dtype=torch.long)
    logprobs = torch.zeros((len(prompts), R)) if recorder is not None else None
    texts, offsets, truncated = [], [], []
    row = 0
    stop_set = torch.tensor(stops, dtype=torch.long)
    for ci, c in enumerate(chunks):
        for j, seq in enumerate(c):
            is_stop = torch.isin(seq, stop_set)
            n = int(is_stop.nonzero()[0, 0]) + 1 if is_stop.any() else seq.shape[0]
            # A row that ended before the chunk's longest is padded: n counts generated tokens only.
            ids = seq[:n]
            responses[row, :n] = ids
            mask[row, :n] = 1
            if logprobs is not None:
                logprobs[row, :n] = chunk_logprobs[ci][j, :n]
            text, offs = decode_with_offsets(tokenizer, ids.tolist())
            texts.append(text)
            offsets.append(offs)
            truncated.append(not bool(is_stop.any()))
            row += 1
    return Rollout(prompt_ids.cpu(), prompt_mask.cpu(), responses, mask, texts, offsets, truncated,
                   list(range(len(prompts))), logprobs)
