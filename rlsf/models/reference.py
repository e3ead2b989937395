"""The reference policy of the KL terms: a frozen copy of the policy as loaded or, under LoRA,
the same weights with the adapters disabled (no second copy).

The frozen copy may keep its matrices in bf16 (``model.reference_precision``): where the runtime
computes in bf16, autocast rounds every linear layer's weights to bf16 in each product anyway,
so storing them rounded once changes no log-prob and halves their bytes. Embeddings and norms
stay float32 (a bf16 embedding table would start the residual stream from rounded values, which
autocast never does), and so does a head tied to the embeddings.

Under FSDP (:mod:`rlsf.runtime.fsdp`) the frozen copy of a sharded policy is sharded the same way,
made from each rank's shards (:func:`rlsf.runtime.fsdp.frozen_copy`): each rank holds 1/N of it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from rlsf.models.loading import is_peft_model
from rlsf.models.parts import forward_logits
from rlsf.runtime import fsdp

REFERENCE_PRECISIONS = ("same", "bf16", "auto")


def reference_precision(setting: str, precision: str) -> str:
    """The frozen reference's precision, ``"bf16"`` or ``"same"``, for ``model.reference_precision``
    (``setting``) where the runtime computes in ``precision`` (``"bf16"`` or ``"none"``): ``auto`` is
    bf16 exactly where the runtime's products are bf16 already."""
    if setting not in REFERENCE_PRECISIONS:
        raise ValueError(f"reference precision must be one of {REFERENCE_PRECISIONS}, got {setting!r}")
    if setting == "auto":
        return "bf16" if precision == "bf16" else "same"
    return setting


class Reference:
    """Frozen reference policy for KL penalties.

    For a peft policy the reference *is* the policy with its adapters disabled (no second copy
    of the weights, :attr:`is_shared` is True); otherwise it is a frozen deep copy, with its
    linear layers' weights in bf16 when ``precision`` is ``"bf16"`` (then :meth:`active` runs it
    under bf16 autocast).
    """

    def __init__(self, model: Any, shared: bool, precision: str = "same") -> None:
        self.model = model
        self._shared = shared
        self.precision = precision

    @classmethod
    def from_policy(cls, model: Any, precision: str = "same") -> "Reference":
        """Reference for ``model`` taken now (before training); ``precision`` ``"bf16"`` stores the
        frozen copy's linear weights in bf16 (see the module docstring; no effect under LoRA)."""
        if is_peft_model(model):
            return cls(model, shared=True)
        if fsdp.is_sharded(model):  # a frozen copy sharded like the policy, made from this rank's shards
            linear = _linear_only_parameters if precision == "bf16" else None
            return cls(fsdp.frozen_copy(model, linear), shared=False, precision=precision)
        # Pre-seeding deepcopy's memo with bf16 copies makes them without a float32 copy first;
        # deepcopy keeps tied embeddings tied (a tied matrix is an embedding and stays float32).
        memo = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                for p in _linear_only_parameters(model)} if precision == "bf16" else {}
        frozen = copy.deepcopy(model, memo)
        frozen.eval()
        frozen.requires_grad_(False)
        return cls(frozen, shared=False, precision=precision)

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
            device = next(self.model.parameters()).device.type
            with (torch.autocast(device_type=device, dtype=torch.bfloat16) if self.precision == "bf16"
                  else contextlib.nullcontext()):
                yield self.model
            fsdp.release(self.model)  # sharded (FSDP): free the root's gathered weights
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

    def nbytes(self) -> int:
        """Bytes of weights the reference holds beyond the policy's (0 when shared)."""
        if self._shared:
            return 0
        tensors = [*self.model.parameters(), *self.model.buffers()]  # tied parameters once
        return sum(t.numel() * t.element_size() for t in tensors)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the frozen copy's weights; a no-op for a shared reference."""
        if self._shared:
            return
        self.model.load_state_dict(state)
        self.model.requires_grad_(False)


def _linear_only_parameters(model: Any) -> list[torch.nn.Parameter]:
    """Parameters of ``torch.nn.Linear`` layers that no other kind of module uses (a head tied to
    the embeddings is left out): those autocast rounds to bf16 in every product."""
    linear, other = {}, set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if isinstance(module, torch.nn.Linear):
                linear[id(p)] = p
            else:
                other.add(id(p))
    return [p for key, p in linear.items() if key not in other]
