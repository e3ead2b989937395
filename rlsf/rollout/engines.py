"""Rollouts: batched, KV-cached sampling (rlsf's own loop, Hugging Face ``generate``, or vLLM).

:func:`generate` returns an :class:`~rlsf.experience.Experience` holding what sampling knows:
the prompt and sampled token ids, the mask of generated tokens (end of turn included, padding
after it excluded), the sampling log-probs and which rows were cut by the length limit. The
text, token offsets and certificate of each row come from the check service
(:mod:`rlsf.feedback.service`), which receives each row's ids as soon as the row ends.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rlsf.experience import Experience
from rlsf.rollout.fused_step import FusedLlamaStep, ModelStep, fused_step_supported
from rlsf.runtime import fsdp
from rlsf.runtime.utils import autocast, model_device


class SamplingModel:
    """The weights rollouts run on.

    Decoding reads every weight once per generated token, so on a CPU it is bound by memory
    traffic, not arithmetic. With ``precision="bf16"`` and float32 master weights we sample from
    bf16 weights (half the bytes per token); the update recomputes log-probs with the master
    weights, so they only decide which tokens are sampled, never the gradient. ``precision`` is
    the runtime's decision (:mod:`rlsf.runtime`): on a CPU without fast bf16 it is ``"none"`` and
    no bf16 weights are made anywhere. With ``fused``
    and a model the fused step supports (:mod:`rlsf.rollout.fused_step`), that step converts the master
    weights itself at the start of each rollout, so nothing is kept between rollouts. Otherwise
    we keep a bf16 copy of the parameters (buffers such as rotary frequencies stay float32),
    refreshed from the master weights by :meth:`sync` before each rollout.

    A policy sharded by FSDP (:mod:`rlsf.runtime.fsdp`) is gathered whole by :meth:`sync` and
    freed again by :meth:`release`, so every engine samples from the whole weights; no bf16 copy
    is kept (bf16 sampling runs under autocast, or the fused step makes its bf16 weights).
    """

    def __init__(self, model, precision: str = "none", fused: bool = False, vllm=None) -> None:
        self.policy = model
        self.copy = None
        self.vllm = vllm  # a VLLMEngine (rollout.engine: vllm): it holds its own copy of the weights
        if vllm is not None or (fused and fused_step_supported(model)) or fsdp.is_sharded(model):
            return
        if precision == "bf16" and next(model.parameters()).dtype == torch.float32:
            self.copy = copy.deepcopy(model).eval()
            for p in self.copy.parameters():
                p.requires_grad_(False)
                p.data = p.data.to(torch.bfloat16)

    @classmethod
    def for_settings(cls, model, tokenizer, runtime, rollout, seed: int = 0) -> "SamplingModel":
        """The sampler the ``rollout`` settings ask for: the policy itself, its bf16 copy, or vLLM."""
        engine = canonical_engine(rollout.engine)
        if engine != "vllm":
            return cls(model, runtime.sampling_precision, fused=engine == "builtin" and rollout.fused_step)
        from rlsf.rollout.vllm_engine import VLLMEngine

        bf16 = runtime.sampling_precision == "bf16" or next(model.parameters()).dtype == torch.bfloat16
        return cls(model, vllm=VLLMEngine(
            model, tokenizer, dtype="bfloat16" if bf16 else "float32", max_model_len=rollout.vllm_max_model_len,
            memory_share=rollout.vllm_memory_share, kv_cache_gib=rollout.vllm_kv_cache_gib, sleep=rollout.vllm_sleep,
            seed=seed))

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the trained weights into the copy (frozen ones, e.g. a LoRA base, never change),
        or push them into vLLM; a sharded policy is gathered whole until :meth:`release`."""
        fsdp.unshard_all(self.policy)
        if self.vllm is not None:
            self.vllm.sync()
        if self.copy is not None:
            for src, dst in zip(self.policy.parameters(), self.copy.parameters(), strict=True):
                if src.requires_grad:
                    dst.copy_(src)

    def release(self) -> None:
        """Sampling is over for now: a sleeping vLLM gives the GPU's memory back to the update, a
        sharded policy frees its gathered weights."""
        fsdp.reshard_all(self.policy)
        if self.vllm is not None:
            self.vllm.sleep()

    def close(self) -> None:
        """Shut vLLM down (its memory returns); the builtin engines hold nothing to close."""
        if self.vllm is not None:
            self.vllm.close()
            self.vllm = None

    def __enter__(self) -> "SamplingModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def model(self):
        if self.vllm is not None:
            return self.vllm
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


def can_reuse(model, engine: str, fused_step: bool) -> bool:
    """Whether sampling keeps each row's keys and values for a later call (``generate``'s ``keep``
    and ``past``): the builtin engine's fused step on a model it supports."""
    return canonical_engine(engine) == "builtin" and fused_step and fused_step_supported(model)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as a left-padded ``[B, L]`` id tensor and its attention mask."""
    L = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, L - len(r):] = 1
    return ids, mask


def unique_prompts(prompt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the distinct prompts and, per row, the index of its prompt among them.

    Several samples of one prompt share its prefix: the prompt is run once and its KV cache
    gathered to every sample (``cache rows = first[inverse]``), in sampling and in the update.
    """
    uniq, inverse = torch.unique(prompt_ids, dim=0, return_inverse=True)
    if uniq.shape[0] == prompt_ids.shape[0]:  # all distinct: keep row order, nothing to gather
        rows = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
        return rows, rows
    first = torch.full((uniq.shape[0],), prompt_ids.shape[0], dtype=torch.long, device=prompt_ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(prompt_ids.shape[0], device=prompt_ids.device), "amin")
    return first, inverse


def sample_from(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row from ``softmax(scores)`` by inverting the cumulative distribution, and
    the log-probability of the drawn token.

    Exact, and one uniform number per row instead of the ``[batch, vocab]`` exponentials
    ``torch.multinomial`` draws (a fifth of CPU decode time at 135M). Tokens with probability 0
    (masked by top-p) are never chosen: their cumulative mass equals their predecessor's.
    """
    probs = scores.softmax(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(scores.shape[0], 1, device=scores.device) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, u, right=True).clamp(max=scores.shape[-1] - 1)
    return tok.squeeze(-1), probs.gather(-1, tok).log().squeeze(-1)


@torch.no_grad()
def decode(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    stops: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    precision: str = "none",
    on_finish: Callable[[int, list[int]], None] | None = None,
    fused: bool = True,
    past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    save_kv: Callable[[int, tuple[torch.Tensor, torch.Tensor]], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rlsf sampling loop: KV-cached decoding that spends nothing on finished rows.

    * each distinct prompt is prefilled once and its cache gathered to its samples;
    * a row that emits a stop token leaves the batch (its cache rows are dropped), so the
      remaining steps run on live rows only;
    * sampling is exact inverse-CDF (:func:`sample_from`) with temperature and top-p applied
      here, and each sampled token's log-prob under that distribution is recorded;
    * ``on_finish(row, ids)`` is called as soon as a row is complete, so its check can start
      while the other rows are still being sampled;
    * with ``fused``, Llama-style models run on :class:`~rlsf.rollout.fused_step.FusedLlamaStep`
      (fused projections, preallocated key/value buffer, bf16 weights made from the master
      weights for this rollout only); other models on their own forward.

    With ``past`` (the fused step only: :func:`can_reuse`) row ``r``'s first tokens were fed in an
    earlier call, whose keys and values ``past[r]`` are, and ``prompt_ids`` holds only its new
    tokens (a self-repair episode's next turn: the last answer's end and the feedback). With
    ``save_kv``, ``save_kv(row, (keys, values))`` receives each finished row's keys and values
    (fused step only), for such a later call.

    Returns ``[B, max_new_tokens]`` ids (``pad_id`` after a row's end) and their log-probs
    (``None`` for greedy decoding).
    """
    device = model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    B = prompt_ids.shape[0]
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    logprobs = torch.zeros(B, max_new_tokens) if do_sample else None
    stop_set = torch.tensor(stops, dtype=torch.long, device=device)
    fuse = fused and fused_step_supported(model)
    if past is not None:
        if not fuse:
            raise ValueError("decode: past keys and values need the fused step (see can_reuse)")
        P = max(k.shape[2] for k, _ in past)
        stepper = FusedLlamaStep(model, B, P + prompt_ids.shape[1] + max_new_tokens, precision, decode_rows=B)
        logits = stepper.prefill_after(past, prompt_ids, prompt_mask)
        pos = prompt_mask.sum(-1) + torch.tensor([k.shape[2] for k, _ in past], device=device)
    else:
        first, inverse = unique_prompts(prompt_ids)
        if fuse:
            stepper = FusedLlamaStep(model, len(first), prompt_ids.shape[1] + max_new_tokens, precision,
                                     decode_rows=B)
        else:
            stepper = ModelStep(model, precision)
        logits = stepper.prefill(prompt_ids[first], prompt_mask[first])
        # Prefill ran on the distinct prompts (in ``torch.unique``'s sorted order when some repeat):
        # gather the cache back to one row per sample, in row order.
        if len(first) < B:
            stepper.select(inverse)
            logits = logits[inverse]
        pos = prompt_mask.sum(-1)  # position id of each row's next token
    save_kv = save_kv if fuse else None
    alive = torch.arange(B)  # batch rows still generating, in cache order
    for t in range(max_new_tokens):
        scores = logits.float()
        if do_sample:
            if temperature != 1.0:
                scores = scores / temperature
            if top_p < 1.0:
                scores = top_p_filter(scores, top_p)
            tok, lp = sample_from(scores)
            logprobs[alive, t] = lp.cpu()
        else:
            tok = scores.argmax(-1)
        tokens[alive, t] = tok.cpu()
        done = torch.isin(tok, stop_set) if len(stops) else torch.zeros_like(tok, dtype=torch.bool)
        if t == max_new_tokens - 1:
            done = torch.ones_like(done)
        if done.any():
            if save_kv is not None:  # the tokens fed so far (not the last one sampled): a later turn's past
                for j in done.nonzero().squeeze(-1).tolist():
                    save_kv(int(alive[j]), stepper.export(j))
            if on_finish is not None:
                for r in alive[done.cpu()].tolist():
                    on_finish(r, tokens[r, : t + 1].tolist())
            keep = ~done
            if not keep.any():
                break
            idx = keep.nonzero().squeeze(-1)
            stepper.select(idx)
            alive, tok, pos = alive[keep.cpu()], tok[idx], pos[idx]
        logits = stepper.step(tok, pos)
        pos = pos + 1
    return tokens, logprobs


def _hf_generate(model, prompt_ids, prompt_mask, *, max_new_tokens, stops, pad_id, temperature, top_p,
                 do_sample, precision) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The plain path: Hugging Face ``generate`` (kept as the reference the fast path is checked against)."""
    device = model_device(model)
    # An explicit generation config: a model's own defaults (repetition penalty, top-k, ...)
    # would otherwise change the distribution sampled without the update knowing.
    # HF's own warpers are switched off when sampling: SamplingLogprobs applies them.
    warpers = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample else {}
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=stops or None, pad_token_id=pad_id,
        use_cache=True, **warpers,
    )
    recorder = SamplingLogprobs(temperature, top_p) if do_sample else None
    with autocast(precision, device):
        out = model.generate(input_ids=prompt_ids.to(device), attention_mask=prompt_mask.to(device),
                             generation_config=gen_config,
                             logits_processor=LogitsProcessorList([recorder] if recorder else []))
    ids = out[:, prompt_ids.shape[1]:].cpu()
    return ids, (recorder.finish(ids).cpu() if recorder is not None else None)


#: ``builtin``: :func:`decode`; ``hf``: Hugging Face ``generate``; ``vllm``: :mod:`rlsf.rollout.vllm_engine`.
ENGINES = ("builtin", "hf", "vllm")
#: Earlier names of the engines, still accepted.
ENGINE_ALIASES = {"rlsf": "builtin"}


def canonical_engine(name: str) -> str:
    """The engine's name in :data:`ENGINES` (``rlsf`` is the builtin engine's earlier name)."""
    name = ENGINE_ALIASES.get(name, name)
    if name not in ENGINES:
        raise ValueError(f"unknown generation engine {name!r}; choose from {ENGINES}")
    return name


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str] | list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 32,
    precision: str = "none",
    ignore_eos: bool = False,
    engine: str = "builtin",
    fused_step: bool = True,
    on_finish: Callable[[int, list[int]], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    past: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    keep: Callable[[int, tuple[torch.Tensor, torch.Tensor]], None] | None = None,
) -> Experience:
    """Sample one completion per prompt (repeat prompts for several samples); a prompt is its
    rendered text or its token ids (taken as they are: a multi-turn context must be the very
    tokens sampled before, not a re-tokenisation of their text).

    ``engine="builtin"`` runs :func:`decode`; ``"hf"`` runs Hugging Face ``generate``;
    ``"vllm"`` samples on ``model``, a :class:`~rlsf.rollout.vllm_engine.VLLMEngine`
    (:attr:`SamplingModel.model` of a vLLM sampler). All sample from the same distribution and
    record the same log-probs. ``ignore_eos`` generates exactly ``max_new_tokens`` per sequence
    (for benchmarks). ``fused_step`` lets the builtin engine use its fused decoding step on
    Llama-style models. ``on_finish(row, ids)`` is called once per completed row (as it
    completes with the builtin engine, per batch with the others); ``on_batch(rows)`` after each
    batch of ``batch_size`` prompts with its number of rows (a progress bar). ``keep`` and ``past``
    carry each row's keys and values from one call to the next (a self-repair episode's turns,
    builtin engine with the fused step: :func:`can_reuse`): ``keep(row, kv)`` receives a finished
    row's, and ``past[row]`` (covering a prefix of that row's token-id prompt) is not prefilled
    again; a batch of rows that do not all have one is prefilled whole.
    """
    engine = canonical_engine(engine)
    all_stops = stop_token_ids(tokenizer, model)
    stops = [] if ignore_eos else all_stops
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else all_stops[0]
    if prompts and not isinstance(prompts[0], str):  # token ids (a self-repair episode's context so far)
        prompt_ids, prompt_mask = left_pad([list(p) for p in prompts], pad_id)
    else:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
    was_training = getattr(model, "training", False)
    if engine != "vllm":
        model.eval()
    chunks, chunk_logprobs = [], []
    kw = dict(max_new_tokens=max_new_tokens, stops=stops, pad_id=pad_id, temperature=temperature, top_p=top_p,
              do_sample=do_sample, precision=precision)
    try:
        for s in range(0, len(prompts), batch_size):
            rows = slice(s, s + batch_size)
            done = (lambda r, ids, s=s: on_finish(s + r, ids)) if on_finish is not None else None
            if engine == "builtin":
                reuse = can_reuse(model, engine, fused_step)
                kept = (lambda r, kv, s=s: keep(s + r, kv)) if keep is not None and reuse else None
                chunk_past = past[rows] if past is not None and reuse else None
                if chunk_past is not None and all(x is not None for x in chunk_past):
                    new = [list(p)[x[0].shape[2]:] for p, x in zip(prompts[rows], chunk_past)]
                    new_ids, new_mask = left_pad(new, pad_id)
                    ids, lps = decode(model, new_ids, new_mask, on_finish=done, fused=True, past=chunk_past,
                                      save_kv=kept, **kw)
                else:
                    ids, lps = decode(model, prompt_ids[rows], prompt_mask[rows], on_finish=done, fused=fused_step,
                                      save_kv=kept, **kw)
            elif engine == "vllm":
                ids, lps = model.decode(prompt_ids[rows], prompt_mask[rows], on_finish=done, **kw)
            else:
                ids, lps = _hf_generate(model, prompt_ids[rows], prompt_mask[rows], **kw)
            chunks.append(ids)
            chunk_logprobs.append(lps)
            if on_batch is not None:
                on_batch(ids.shape[0])
    finally:
        if engine != "vllm":
            model.train(was_training)

    R = max(c.shape[1] for c in chunks)
    responses = torch.full((len(prompts), R), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), R), dtype=torch.long)
    logprobs = torch.zeros((len(prompts), R)) if do_sample else None
    truncated = []
    row = 0
    stop_set = torch.tensor(stops, dtype=torch.long)
    for ci, c in enumerate(chunks):
        for j, seq in enumerate(c):
            is_stop = torch.isin(seq, stop_set)
            n = int(is_stop.nonzero()[0, 0]) + 1 if is_stop.any() else seq.shape[0]
            # A row that ended before the chunk's longest is padded: n counts generated tokens only.
            responses[row, :n] = seq[:n]
            mask[row, :n] = 1
            if logprobs is not None:
                logprobs[row, :n] = chunk_logprobs[ci][j, :n]
            truncated.append(not bool(is_stop.any()))
            if on_finish is not None and engine == "hf":
                on_finish(row, seq[:n].tolist())
            row += 1
    # Trim columns that are padding in every row (the builtin engine allocates max_new_tokens).
    R = max(int(mask.sum(1).max()), 1) if len(prompts) else 0
    return Experience(prompt_ids, prompt_mask, responses[:, :R], mask[:, :R], truncated,
                      logprobs[:, :R] if logprobs is not None else None)


