"""The policy's passes over an experience's response tokens, shared by every policy-gradient update.

:func:`response_forward` runs the model over prompt + response and returns, per response
token, the log-prob of the sampled token at the sampling temperature (and, on request, the
final hidden states, from which :class:`ForwardOut` makes token entropies and the logits of
chosen positions). Prompts shared by a group's samples are run once and their key/value cache
reused (:func:`_shared_forward`), unless gradient checkpointing is on; the head is applied in
chunks of ``model.logit_chunk`` positions so the whole ``[batch, length, vocabulary]`` logits
are never held at once. Under FSDP each pass is one forward of the sharded root (:func:`rlsf.runtime.fsdp.root_pass`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from rlsf.algorithms.core import entropy_from_logits, logprobs_from_logits
from rlsf.experience import Experience
from rlsf.models.loading import uses_gradient_checkpointing
from rlsf.models.parts import chunked_logprobs, decoder_body, output_head, position_ids_from_mask
from rlsf.rollout.engines import unique_prompts
from rlsf.runtime.fsdp import root_pass
from rlsf.runtime.utils import autocast, model_device

@dataclass
class ForwardOut:
    logits: torch.Tensor | None  # [B, R, V] float32, temperature-scaled; None when made in chunks (logit_chunk)
    logp: torch.Tensor  # [B, R] log-prob of each response token
    hidden: torch.Tensor | None  # [B, R, H] hidden state predicting each response token
    entropy: torch.Tensor | None = None  # [B, R], made with the log-probs in chunks (else from logits)
    final: torch.Tensor | None = None  # [B, R, H] final hidden states, in chunks mode (for logits_at)
    head_logits: Any = None  # in chunks mode: final hidden states [N, H] -> scaled float32 logits [N, V]

    def token_entropy(self) -> torch.Tensor:
        """Entropy of each response position's next-token distribution, ``[B, R]``."""
        if self.entropy is not None:
            return self.entropy
        if self.logits is None:
            raise ValueError("the entropies were not computed: call response_forward with entropy=True")
        return entropy_from_logits(self.logits)

    def logits_at(self, index: torch.Tensor) -> torch.Tensor:
        """The temperature-scaled logits of response position ``index[b]`` of each row ``b``, ``[B, V]``."""
        rows = torch.arange(len(index), device=index.device)
        if self.logits is not None:
            return self.logits[rows, index]
        return self.head_logits(self.final[rows, index])


@root_pass  # under FSDP: one forward of the sharded root around the direct calls of its parts
def response_forward(model, exp: Experience, *, temperature: float, precision: str, hidden: bool = False,
                     share_prompts: bool = True, logit_chunk: int = 0, entropy: bool = False,
                     entropy_grad: bool = False) -> ForwardOut:
    """Run ``model`` over prompt + response and keep only what predicts the response tokens.

    Position ids follow the left padding exactly as sampling counted them, and logits are
    divided by the sampling temperature so that the policy scored is the policy sampled.

    With ``share_prompts`` (the fast path) each distinct prompt of the batch is run once and its
    KV cache gathered to its samples; the response tokens then attend to that cache. Gradients
    flow back through the gather (the prompt's share of each sample's gradient is summed), so
    the result equals the plain full-sequence pass (``share_prompts=False``) while a group of
    ``k`` samples pays for its prompt once instead of ``k`` times.

    With ``logit_chunk`` > 0 (``model.logit_chunk``) the decoder runs without its head and the
    log-probs are made from the final hidden states ``logit_chunk`` positions at a time
    (:func:`rlsf.models.parts.chunked_logprobs`): the same values and gradients, without the
    ``[B, R, vocab]`` float32 logits (``ForwardOut.logits`` is then None; ``entropy`` computes the
    entropies alongside, differentiable with ``entropy_grad``; ``logits_at`` applies the head to
    the positions asked for). Under gradient checkpointing the chunks' logits are recomputed in the
    backward pass as well. 0, or a model without a separate decoder body: the whole logits.
    """
    device = model_device(model)
    labels = exp.response_ids.to(device)
    first, inverse = unique_prompts(exp.prompt_ids) if share_prompts and labels.shape[1] > 1 else (None, None)
    body = decoder_body(model) if logit_chunk > 0 and output_head(model) is not None else None
    chunks = {"chunk": logit_chunk, "entropy": entropy, "entropy_grad": entropy_grad} if body is not None else None
    with training_attention(device, checkpointed=uses_gradient_checkpointing(model)):
        if first is None or len(first) == len(exp):
            return _full_forward(model, exp, labels, temperature=temperature, precision=precision,
                                 hidden=hidden, body=body, chunks=chunks)
        return _shared_forward(model, exp, labels, first, inverse, temperature=temperature,
                               precision=precision, hidden=hidden, body=body, chunks=chunks)


def training_attention(device: torch.device, checkpointed: bool = False) -> contextlib.AbstractContextManager:
    """On CPU, differentiate attention with SDPA's math kernel: at these lengths (a few hundred
    tokens) its backward is ~15% faster per update than the flash kernel's (same result). Not
    with gradient checkpointing: the backward recomputes each layer outside this context, with
    the default kernel, and a recomputation must save what the forward saved."""
    if device.type == "cpu" and torch.is_grad_enabled() and not checkpointed:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _shared_forward(model, exp: Experience, labels: torch.Tensor, first: torch.Tensor, inverse: torch.Tensor, *,
                    temperature: float, precision: str, hidden: bool, body=None,
                    chunks: dict | None = None) -> ForwardOut:
    """Each distinct prompt once, its KV cache gathered to its samples, then the responses (through
    the decoder ``body`` alone, without the head, in chunks mode)."""
    device = labels.device
    p_ids, p_mask = exp.prompt_ids.to(device), exp.prompt_mask.to(device)
    first, inverse = first.to(device), inverse.to(device)
    cache = DynamicCache(config=model.config)
    net, lm = (model, {"output_hidden_states": hidden}) if body is None else (body, {})
    with autocast(precision, device):
        pre = net(input_ids=p_ids[first], attention_mask=p_mask[first],
                  position_ids=position_ids_from_mask(p_mask[first]), past_key_values=cache, use_cache=True, **lm,
                  **({"logits_to_keep": 1} if body is None else {}))
        cache.batch_select_indices(inverse)
        # The response's last token predicts nothing we score, so it is not fed.
        r_ids, r_mask = labels[:, :-1], exp.response_mask[:, :-1].to(device)
        attn = torch.cat([p_mask, r_mask], dim=1)
        pos = p_mask.sum(-1, keepdim=True) + torch.arange(r_ids.shape[1], device=device)
        out = net(input_ids=r_ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                  **lm)
    if body is not None:
        final = torch.cat([pre.last_hidden_state[:, -1:][inverse], out.last_hidden_state], dim=1)
        return _chunked_out(model, final, labels, temperature=temperature, precision=precision, hidden=hidden,
                            **chunks)
    logits = torch.cat([pre.logits[:, -1:][inverse], out.logits], dim=1).float() / temperature
    h = torch.cat([pre.hidden_states[-1][:, -1:][inverse], out.hidden_states[-1]], dim=1) if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


def _full_forward(model, exp: Experience, labels: torch.Tensor, *, temperature: float, precision: str,
                  hidden: bool, body=None, chunks: dict | None = None) -> ForwardOut:
    """The plain path: one pass over each row's whole prompt + response."""
    device = labels.device
    ids, attn = exp.input_ids.to(device), exp.attention_mask.to(device)
    R = exp.response_ids.shape[1]
    with autocast(precision, device):
        if body is not None:
            final = body(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn),
                         use_cache=False).last_hidden_state[:, -(R + 1) : -1]
            return _chunked_out(model, final, labels, temperature=temperature, precision=precision, hidden=hidden,
                                **chunks)
        out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), logits_to_keep=R + 1,
                    output_hidden_states=hidden, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    h = out.hidden_states[-1][:, -(R + 1) : -1] if hidden else None
    return ForwardOut(logits, logprobs_from_logits(logits, labels), h)


def _chunked_out(model, final: torch.Tensor, labels: torch.Tensor, *, temperature: float, precision: str,
                 hidden: bool, chunk: int, entropy: bool, entropy_grad: bool) -> ForwardOut:
    """Log-probs (and entropies) from the final hidden states ``[B, R, H]``, ``chunk`` positions at a time."""
    head, device = output_head(model), final.device
    with autocast(precision, device):
        logp, ent = chunked_logprobs(head, final, labels, temperature=temperature, chunk=chunk, entropy=entropy,
                                     entropy_grad=entropy_grad, recompute=uses_gradient_checkpointing(model))

    def head_logits(h: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return head(h).float() / temperature

    return ForwardOut(None, logp, final if hidden else None, entropy=ent, final=final, head_logits=head_logits)


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad ``[B, T]`` with zeros to ``[B, width]`` (a trimmed minibatch back to the batch's width)."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))
