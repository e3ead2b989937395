"""Metric sinks: JSON lines (always available), TensorBoard and Weights & Biases (optional)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from rlsf.runtime import distributed
from rlsf.settings import ConfigError


class MetricLogger:
    """Writes one record per step to every configured sink.

    ``metrics.jsonl`` gets ``{"step": s, "time": t, ...}``; TensorBoard and W&B get the numeric
    values under the same namespaced keys (``reward/mean``, ``loss/policy``, ``timing/update``).
    Across processes only rank 0 writes (its records are the global batch's figures); on the
    other ranks the logger is inert.
    """

    def __init__(self, run_dir: str | Path, sinks: list[str], config: dict[str, Any] | None = None,
                 filename: str = "metrics.jsonl") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / filename
        self._tb = self._wandb = self._jsonl = None
        if not distributed.is_main():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in sinks:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.loggers: tensorboard is not installed (pip install tensorboard, or "
                                  "drop it from run.loggers)") from None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if "wandb" in sinks:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.loggers: wandb is not installed (pip install wandb, or drop it from "
                                  "run.loggers)") from None
            project, entity = wandb_target(config)
            self._wandb = wandb.init(project=project, entity=entity, dir=str(self.run_dir), config=config or {},
                                     name=self.run_dir.name, resume="allow")
        if "jsonl" in sinks:  # last: a sink that failed above leaves no open file behind
            self._jsonl = self.path.open("a")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self._jsonl:
            self._jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}, default=str) + "\n")
            self._jsonl.flush()
        if self._tb:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


def wandb_target(config: dict[str, Any] | None) -> tuple[str, str | None]:
    """The W&B project and entity of a run from its settings (``run.wandb_project``,
    ``run.wandb_entity``); empty ones fall back to ``$WANDB_PROJECT`` (else ``rlsf``) and
    ``$WANDB_ENTITY`` (else None: W&B's default entity)."""
    run = (config or {}).get("run") or {}
    project = run.get("wandb_project") or os.environ.get("WANDB_PROJECT") or "rlsf"
    entity = run.get("wandb_entity") or os.environ.get("WANDB_ENTITY") or None
    return project, entity


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def truncate_metrics(path: str | Path, step: int) -> None:
    """Drop the records of steps after ``step`` (a resumed run's checkpoint; 0: all): they are about
    to be redone, and two records of one step would corrupt every curve and mean."""
    path = Path(path)
    if distributed.is_main() and path.is_file():  # rank 0 owns the run folder
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def note(msg: str) -> None:
    """A line on stderr (from rank 0 only, across processes: the ranks run the same stage)."""
    if distributed.is_main():
        print(msg, file=sys.stderr, flush=True)
