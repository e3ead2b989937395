"""The outcome reward model (ORM): a language model with a scalar head that scores a completion
by the probability it gives it of being correct (Havrilla et al.). Trained by ``rlsf orm``
(:mod:`rlsf.stages.orm`); read by the reward mix (``reward.orm``) and the rerank selector.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlsf.models.loading import load_model, load_tokenizer, save_model
from rlsf.models.parts import ValueHead, decoder_body, hidden_size
from rlsf.runtime.utils import autocast, model_device
from rlsf.settings import ConfigError


# ---- the math: pure functions over token-level tensors ----------------------------------------------
def orm_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every masked position's logit ``[B, T]`` against its row's
    label ``[B]`` (1: the solution is correct)."""
    target = labels.float()[:, None].expand_as(logits)
    per_token = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (per_token * mask).sum() / mask.sum().clamp(min=1)



def last_position_scores(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` probability at each row's last masked position (the end of the solution)."""
    last = mask.shape[1] - 1 - mask.flip(1).float().argmax(1)
    return torch.sigmoid(logits.float()[torch.arange(len(logits)), last])



# ---- the model ------------------------------------------------------------------------------------
def encode(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + solution and how many of them are the solution's (at least one
    position is scored: an empty solution is scored at the prompt's last token)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
    c = c[: max(max_length - 1, 1)]
    p = p[-max(max_length - len(c), 1):]
    return p + c, max(len(c), 1)



def collate_scored(rows: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and the mask of the scored (solution) positions."""
    L = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), L), dtype=torch.long)
    scored = torch.zeros((len(rows), L))
    for i, (x, n) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
        scored[i, len(x) - n: len(x)] = 1
    return {"input_ids": ids, "attention_mask": attn, "scored": scored}



class OutcomeRewardModel(torch.nn.Module):
    """A causal language model's last hidden states through a scalar head: one logit per position."""

    def __init__(self, lm, tokenizer, head: ValueHead | None = None) -> None:
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.head = head if head is not None else ValueHead(hidden_size(lm), init_scale=1.0)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        body = decoder_body(self.lm)
        if body is not None:  # the decoder alone: no [B, T, vocab] logits
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        else:
            hidden = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                             use_cache=False).hidden_states[-1]
        return self.head(hidden).float()

    @torch.no_grad()
    def score_texts(self, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 16,
                    precision: str = "none", max_length: int = 1024) -> list[float]:
        """Probability of being correct of each (rendered prompt, solution text) pair."""
        rows = [encode(self.tokenizer, p, c, max_length) for p, c in zip(prompts, completions, strict=True)]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths batch together
        out = [0.0] * len(rows)
        device = model_device(self.lm)
        was_training = self.training
        self.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate_scored([rows[i] for i in idx], self.pad).items()}
            with autocast(precision, device):
                logits = self(batch["input_ids"], batch["attention_mask"])
            for i, s in zip(idx, last_position_scores(logits, batch["scored"]).tolist()):
                out[i] = s
        self.train(was_training)
        return out

    def save(self, path: str | Path, info: dict[str, Any]) -> Path:
        path = Path(path)
        save_model(self.lm, self.tokenizer, path / "model")
        torch.save(self.head.state_dict(), path / "head.pt")
        (path / "orm.json").write_text(json.dumps(info, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", dtype: str = "float32") -> "OutcomeRewardModel":
        path = Path(path)
        missing = [f for f in ORM_FILES if not (path / f).is_file()]
        if missing:
            raise ConfigError(f"{path} is not an outcome reward model folder (no {', '.join(missing)}); "
                              "`rlsf orm` trains one")
        lm = load_model(path / "model", dtype=dtype)
        orm = cls(lm, load_tokenizer(path / "model"))
        orm.head.load_state_dict(torch.load(path / "head.pt", map_location="cpu", weights_only=True))
        return orm.to(device).eval()


ORM_FILES = ("model/config.json", "head.pt")
