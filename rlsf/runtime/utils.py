"""Small shared helpers: seeding, precision contexts, random-state capture, stage timers."""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random state a run consumes, for exact resumption."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast(mode: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """bf16 autocast for forward passes (fp32 master weights stay as they are), or nothing."""
    if mode == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Timer:
    """Accumulates wall-clock seconds per named stage: ``with timer("generate"): ...``."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out = {f"timing/{k}": v for k, v in self.totals.items()}
        self.totals.clear()
        return out


def make_adamw(groups: list[dict[str, Any]], **kw: Any) -> torch.optim.AdamW:
    """AdamW, fused where every parameter's device supports it: one kernel per step instead of a
    dozen elementwise passes over 135M floats (0.6 s -> 0.13 s per step on 2 CPU cores)."""
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= {"cpu", "cuda"} and all(p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                                               for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, fused=fused or None, **kw)
    from rlsf.runtime.fsdp import make_optimizer_hooks

    make_optimizer_hooks(optimizer)  # FSDP-sharded parameters: whole tensors in its state dict
    return optimizer


def epoch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)



def batch_indices(n: int, size: int, step: int, seed: int) -> list[int]:
    """Example indices of ``step``: consecutive slices of per-epoch permutations.

    A pure function of (seed, step), so a resumed run sees the same prompts without saving any
    sampler state.
    """
    out = []
    for pos in range(step * size, (step + 1) * size):
        epoch, i = divmod(pos, n)
        out.append(int(epoch_order(n, epoch, seed)[i]))
    return out
