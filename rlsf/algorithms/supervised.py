"""The supervised update SFT, Expert Iteration and RCRL share: completion-only cross-entropy.

Prompt and completion are tokenised separately and concatenated, exactly as at generation
time; the loss covers the completion tokens only, and the LM head is applied only where a
label is (:func:`completion_loss`).
"""

from __future__ import annotations

import torch

from rlsf.models.loading import is_peft_model
from rlsf.models.parts import decoder_body
from rlsf.runtime import distributed
from rlsf.runtime.fsdp import clip_grad_norm_, root_pass
from rlsf.runtime.utils import autocast, model_device


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding)."""
    L = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(pairs), L), dtype=torch.long)
    labels = torch.full((len(pairs), L), -100, dtype=torch.long)
    for i, (p, c) in enumerate(pairs):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c)
        attn[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(c)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}



@root_pass  # under FSDP: one forward of the sharded root around the direct calls of its parts
def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the labelled (completion) tokens, as HF's ``labels=`` loss, but with
    the LM head applied only to the positions that predict a label: a long prompt's logits
    (``[B, T, vocab]``, 49k wide for SmolLM2) are never made. Falls back to the model's own loss
    for architectures without a separate decoder body."""
    body = decoder_body(model)
    head = (model.get_base_model() if is_peft_model(model) else model).get_output_embeddings()
    labels = batch["labels"]
    if body is None or head is None:
        return model(**batch, use_cache=False).loss
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[:, :-1][keep])  # [labelled tokens, vocab]
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])



def sft_update(model, optimizer, params: list, batch: dict[str, torch.Tensor], precision: str,
               max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the completion-only loss of ``batch`` (on the model's device);
    returns the loss and the gradient norm before clipping (0 without clipping).

    Across processes ``batch`` is this rank's share of the global batch: the loss is weighted by the
    rank's share of the labelled tokens and the gradients are summed over ranks, so the step and the
    loss returned are those of the token mean over the global batch."""
    with autocast(precision, model_device(model)):
        loss = completion_loss(model, batch)
    if distributed.size() > 1:
        tokens = float((batch["labels"][:, 1:] != -100).sum())
        share = tokens / max(float(distributed.all_sum([tokens])[0]), 1.0)
        loss = loss * share
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    distributed.all_reduce_gradients(params)
    gn = clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else torch.zeros(())
    optimizer.step()
    if distributed.size() > 1:
        return distributed.all_sum([float(loss.detach())])[0].to(torch.float32), gn
    return loss.detach(), gn
