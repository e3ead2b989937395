"""Pieces of a causal LM the algorithms use: the decoder body under the head, position ids from
a padding mask, token log-probs from hidden states in chunks, hidden size, and the scalar value head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from rlsf.models.loading import is_peft_model


def decoder_body(model: Any) -> Any:
    """The decoder under a causal LM's head (``model.model`` for Llama), through a peft wrapper,
    whose ``last_hidden_state`` avoids the ``[B, T, vocab]`` logits; ``None`` for an
    architecture without a separate body."""
    base = model.get_base_model() if is_peft_model(model) else model
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    return body if body is not None and body is not base else None



def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, computed exactly as ``generate`` does.

    A plain ``model(input_ids, attention_mask)`` numbers positions 0..T-1 regardless of padding,
    which differs from generation for left-padded rows; scoring with these ids keeps log-probs
    consistent with the sampling distribution and independent of how much padding a row has.
    """
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)



def forward_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits ``[B, T, V]`` of a causal LM with padding-aware position ids (see :func:`position_ids_from_mask`).

    Policy and reference should both be scored through this so their log-probs are comparable.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.logits



def output_head(model: Any) -> Any:
    """The LM head (``lm_head``, tied to the embeddings in SmolLM2), through a peft wrapper."""
    return (model.get_base_model() if is_peft_model(model) else model).get_output_embeddings()


def chunked_logprobs(head: Any, hidden: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0,
                     chunk: int = 128, entropy: bool = False, entropy_grad: bool = False,
                     recompute: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each label (and the entropy of each next-token distribution) from hidden states,
    ``chunk`` positions at a time: ``[B, T, H], [B, T] -> [B, T]`` float32 (and ``[B, T]``).

    The same operations as ``logprobs_from_logits(head(hidden).float() / temperature, labels)``
    (and ``entropy_from_logits``) position by position, so the values and gradients are the plain
    computation's up to the round-off of a matrix product of other height. What changes is memory:
    the ``[B, T, vocab]`` float32 logits and their log-softmax and entropy copies (49k columns for
    SmolLM2: 151 MB each for 8 x 96 positions) exist for one chunk at a time. Backward still keeps each
    chunk's log-softmax (what the plain path keeps, ``[B, T, vocab]`` in all) unless ``recompute``:
    then nothing of the vocabulary's width is kept and the chunk's logits are recomputed in the
    backward pass (one more head product per position).

    ``entropy``: also return the entropies, differentiable only with ``entropy_grad`` (the
    entropy bonus); otherwise computed without a graph. The caller sets the precision (autocast).
    """
    B, T, H = hidden.shape
    flat_h, flat_y = hidden.reshape(B * T, H), labels.reshape(B * T)
    logps, ents = [], []
    for h, y in zip(flat_h.split(chunk), flat_y.split(chunk)):
        if recompute and torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk_logprobs, head, h, y, temperature, entropy, entropy_grad, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(head, h, y, temperature, entropy, entropy_grad)
        logps.append(lp)
        ents.append(ent)
    logp = torch.cat(logps).view(B, T)
    return logp, (torch.cat(ents).view(B, T) if entropy else None)


def _chunk_logprobs(head: Any, h: torch.Tensor, y: torch.Tensor, temperature: float, entropy: bool,
                    entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of :func:`chunked_logprobs`: ``[N, H], [N] -> [N]`` (and ``[N]``)."""
    logp_all = (head(h).float() / temperature).log_softmax(-1)
    logp = torch.gather(logp_all, -1, y.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return logp, None
    with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
        return logp, -(logp_all.exp() * logp_all).sum(-1)


def hidden_size(model: Any) -> int:
    """Width of the model's hidden states, for plain and peft-wrapped models."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        size = getattr(text_config, "hidden_size", None)
        if size is not None:
            return int(size)
    return int(base.get_input_embeddings().weight.shape[-1])



class ValueHead(torch.nn.Module):
    """Scalar value per position from the policy's last hidden states (for PPO-style critics)."""

    def __init__(self, hidden_size: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        # Small init keeps initial values near 0 so early advantages are dominated by rewards.
        torch.nn.init.normal_(self.linear.weight, std=init_scale / hidden_size**0.5)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]`` hidden states -> ``[B, T]`` values (computed in the head's dtype)."""
        return self.linear(hidden_states.to(self.linear.weight.dtype)).squeeze(-1)
