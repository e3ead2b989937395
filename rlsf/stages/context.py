"""What every stage does first: validate the settings, decide device and precision, seed, load the
task, its split and the policy, and prepare the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from rlsf.config import Config
from rlsf.models.loading import LoraSpec, enable_gradient_checkpointing, load_model, load_tokenizer, resolve_model
from rlsf.runtime.checkpoint import Checkpointer
from rlsf.runtime.device import Runtime, setup
from rlsf.runtime.utils import seed_everything
from rlsf.settings import ConfigError
from rlsf.tasks import Task, TaskError, get_task


class Start(NamedTuple):
    """What a stage has once it has started: the runtime's decision, the task and its examples."""

    runtime: Runtime
    task: Task
    examples: list


def start(cfg: Config, split: str | None = None, limit: int = 0, runtime: Runtime | None = None) -> Start:
    """The start-up every stage shares, in this order (a seeded run depends on it): validate the
    settings, decide device and precision (or take ``runtime``), seed every generator, build the
    task and load ``split`` (default: the task's training split), its first ``limit`` examples."""
    cfg.validate()
    rt = runtime or setup(cfg)
    seed_everything(cfg.run.seed)
    task = load_task(cfg)
    return Start(rt, task, load_split(cfg, task, split or task.splits[0], limit))


def load_task(cfg: Config) -> Task:
    return get_task(cfg.task.name, **cfg.task.options)


def load_split(cfg: Config, task: Task, split: str, limit: int = 0) -> list:
    task.check_split(split)
    examples = task.load(split)
    if limit:
        examples = examples[:limit]
    if not examples:
        raise TaskError(f"task {task.name!r} has no {split} examples")
    return examples


def load_policy(cfg: Config, runtime: Runtime, name: str | None = None, *, lora: bool | None = None):
    """The model named by ``name`` (default ``model.name``) on the runtime's device, and its tokenizer."""
    path = resolve_model(name or cfg.model.name)
    use_lora = cfg.model.lora if lora is None else lora
    spec = LoraSpec(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout) if use_lora else None
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype=cfg.model.dtype, lora=spec)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model.to(runtime.torch_device), tokenizer


def prepare_run_dir(cfg: Config, runtime: Runtime | None = None, *, resume: bool) -> Path:
    """Create the run folder; refuse to overwrite an earlier run's checkpoints unless resuming.

    ``config.yaml`` holds the settings and, under ``runtime:``, what the runtime decided.
    """
    run_dir = Path(cfg.run.output_dir)
    if not resume and Checkpointer(run_dir).latest() is not None:
        raise ConfigError(
            f"run.output_dir: {run_dir} already holds checkpoints of an earlier run; pass --resume to "
            "continue it or choose another --output-dir (nothing was overwritten)")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml", {"runtime": runtime.as_dict()} if runtime is not None else None)
    return run_dir
