"""Checkpoints that make a killed run resumable exactly where it stopped.

A checkpoint is one ``state.pt`` holding the trainable weights, the optimiser (and value head)
state, every random state and the step. It is written to a temporary folder and renamed, so a
run killed while saving never leaves a half-written checkpoint that ``--resume`` would trust.

Across processes the weights and optimiser state are the same on every rank, so rank 0 alone
writes the checkpoint (the others wait for it); it holds nothing that depends on the number of
processes, so a run resumes with the same or another process count. Under FSDP
(:mod:`rlsf.runtime.fsdp`) every rank holds a shard: all of them gather the whole tensors (the
state callable runs on every rank) and rank 0 writes them, in the same format, so such a
checkpoint too resumes with any number of processes, with or without FSDP.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from rlsf.errors import RlsfError
from rlsf.runtime import distributed, fsdp


class CheckpointError(RlsfError):
    """A checkpoint could not be written (a full disk, a read-only folder)."""


class Checkpointer:
    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def all(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step_*") if p.is_dir() and (p / "state.pt").is_file())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any] | Callable[[], dict[str, Any]]) -> Path:
        """Write ``state`` (or what the callable returns, made on rank 0 only; under FSDP on every
        rank, whose shards it gathers) as step ``step``'s checkpoint; every rank calls this and
        returns once it is written."""
        final = self.dir / f"step_{step:06d}"
        if callable(state) and fsdp.active():
            state = state()  # a collective: the whole tensors are gathered from every rank's shards
        if distributed.is_main():
            self._write(step, state() if callable(state) else state, final)
        distributed.barrier()
        return final

    def _write(self, step: int, state: dict[str, Any], final: Path) -> None:
        tmp = self.dir / f".tmp_step_{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            torch.save({"step": step, **state}, tmp / "state.pt")
        except (OSError, RuntimeError) as e:  # a full disk shows as either, from deep in torch's zip writer
            shutil.rmtree(tmp, ignore_errors=True)
            free = shutil.disk_usage(self.dir.parent).free / 2**30 if self.dir.parent.exists() else float("nan")
            raise CheckpointError(f"could not write the checkpoint of step {step} to {self.dir} ({free:.1f} GiB free "
                                  f"there): {str(e).strip().splitlines()[0]}; the previous checkpoint is intact, "
                                  f"free space and continue with --resume") from e
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path) -> dict[str, Any]:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=False)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained (all of them, or only LoRA adapters), whole (a model sharded by
    FSDP: gathered, every rank calling this)."""
    fsdp.release(model)  # FSDP: the root's parameters are its shards again
    return {n: fsdp.full_tensor(p.detach()).cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    fsdp.release(model)  # FSDP: load into the shards, not into gathered copies about to be freed
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ValueError(f"checkpoint does not match the model (missing {missing[:3]}, unknown {unknown[:3]}): "
                         "was it written with other model or LoRA settings?")
    for n, t in state.items():
        fsdp.load_full(params[n], t)  # a sharded parameter takes its shard of the whole tensor
