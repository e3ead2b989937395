"""The reference policy of the KL terms: a frozen copy of the policy as loaded or, under LoRA,
the same weights with the adapters disabled (no second copy).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from rlsf.models.loading import is_peft_model
from rlsf.models.parts import forward_logits


class Reference:
    """Frozen reference policy for KL penalties.

    For a peft policy the reference *is* the policy with its adapters disabled (no second copy
    of the weights, :attr:`is_shared` is True); otherwise it is a frozen deep copy.
    """

    def __init__(self, model: Any, shared: bool) -> None:
        self.model = model
        self._shared = shared

    @classmethod
    def from_policy(cls, model: Any) -> "Reference":
        """Reference for ``model`` taken now (before training)."""
        if is_peft_model(model):
            return cls(model, shared=True)
        frozen = copy.deepcopy(model)  # deepcopy keeps tied embeddings tied
        frozen.eval()
        frozen.requires_grad_(False)
        return cls(frozen, shared=False)

    @property
    def is_shared(self) -> bool:
        """True when the reference shares weights with a peft policy (adapters disabled)."""
        return self._shared

    @contextmanager
    def active(self) -> Iterator[Any]:
        """The reference as a callable model, for custom forwards (e.g. with ``logits_to_keep``).

        For a shared reference the policy's adapters are disabled and it runs in eval mode (so
        dropout cannot leak into the reference) only inside the block; its mode is restored
        afterwards. Wrap calls in ``torch.no_grad()``: the shared weights belong to the policy.
        """
        if not self._shared:
            yield self.model
            return
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                yield self.model
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reference logits ``[B, T, V]``, computed like :func:`forward_logits`, without gradients."""
        with self.active() as model:
            return forward_logits(model, input_ids, attention_mask)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights to checkpoint: empty when shared (the policy checkpoint covers them)."""
        return {} if self._shared else self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the frozen copy's weights; a no-op for a shared reference."""
        if self._shared:
            return
        self.model.load_state_dict(state)
        self.model.requires_grad_(False)
