"""Set-up shared by every stage: threads, task, model and tokenizer, run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from rlsf.checkpoint import Checkpointer
from rlsf.config import Config, ConfigError
from rlsf.models import LoraSpec, load_model, load_tokenizer, resolve_model
from rlsf.tasks import Task, TaskError, get_task


def set_threads(cfg: Config) -> None:
    """Process-wide settings of a stage: torch threads, and no per-file loading bars from HF."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)


def load_task(cfg: Config) -> Task:
    return get_task(cfg.task.name, **cfg.task.options)


def load_split(cfg: Config, task: Task, split: str, limit: int = 0) -> list:
    examples = task.load(split)
    if limit:
        examples = examples[:limit]
    if not examples:
        raise TaskError(f"task {task.name!r} has no {split} examples")
    return examples


def load_policy(cfg: Config, name: str | None = None, *, lora: bool | None = None):
    """The model named by ``name`` (default ``model.name``) and its tokenizer."""
    path = resolve_model(name or cfg.model.name)
    use_lora = cfg.model.lora if lora is None else lora
    spec = LoraSpec(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout) if use_lora else None
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype=cfg.model.dtype, lora=spec)
    return model, tokenizer


def prepare_run_dir(cfg: Config, *, resume: bool) -> Path:
    """Create the run folder; refuse to overwrite an earlier run's checkpoints unless resuming."""
    run_dir = Path(cfg.run.output_dir)
    if not resume and Checkpointer(run_dir).latest() is not None:
        raise ConfigError(
            f"run.output_dir: {run_dir} already holds checkpoints of an earlier run; pass --resume to "
            "continue it or choose another --output-dir (nothing was overwritten)")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    return run_dir


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
