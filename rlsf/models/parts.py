"""Pieces of a causal LM the algorithms use: the decoder body under the head, position ids from
a padding mask, hidden size, and the scalar value head.
"""

from __future__ import annotations

from typing import Any

import torch

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
