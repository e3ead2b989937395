"""What every stage does first: validate the settings, join the other processes if launched in
several, decide device and precision, seed, load the task, its split and the policy, and prepare
the run folder (written by rank 0 alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from rlsf.config import Config
from rlsf.models.loading import (
    LoraSpec,
    check_model_reference,
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
    resolve_model,
    save_model,
)
from rlsf.runtime import distributed, fsdp
from rlsf.runtime.checkpoint import Checkpointer
from rlsf.runtime.device import Runtime, setup
from rlsf.runtime.metric_log import note
from rlsf.runtime.utils import seed_everything
from rlsf.settings import ConfigError, require
from rlsf.tasks import Task, TaskError, canonical_spec, get_task


class Start(NamedTuple):
    """What a stage has once it has started: the runtime's decision, the task and its examples."""

    runtime: Runtime
    task: Task
    examples: list


def start(cfg: Config, split: str | None = None, limit: int = 0, runtime: Runtime | None = None) -> Start:
    """The start-up every stage shares, in this order (a seeded run depends on it): validate the
    settings, join the process group of a multi-process launch, decide device and precision (or
    take ``runtime``; across processes rank 0 decides for all), seed every generator (the same
    seed on every rank: the models they build are the same), build the task and load ``split``
    (default: the task's training split), its first ``limit`` examples."""
    cfg.validate()
    check_model_reference(cfg.model.name, "model.name")  # a missing folder fails now, not after the probe
    distributed.setup(cfg.model.device)
    rt = runtime or decide_runtime(cfg)
    seed_everything(cfg.run.seed)
    task = load_task(cfg)
    return Start(rt, task, load_split(cfg, task, split or task.splits[0], limit))


def decide_runtime(cfg: Config) -> Runtime:
    """Device and precision; across processes rank 0's decision (a probe run on every rank could
    decide differently, and every rank must compute alike)."""
    if distributed.size() == 1:
        return setup(cfg)
    rt = distributed.broadcast_object(setup(cfg) if distributed.is_main() else None)
    if not distributed.is_main() and cfg.model.threads:  # setup()'s per-process part
        import torch

        torch.set_num_threads(cfg.model.threads)
    return rt


def check_world(cfg: Config, stage: str) -> None:
    """Refuse settings that cannot be split evenly over the processes of this launch."""
    w = distributed.size()
    if w == 1:
        return
    if stage == "sft":
        require(cfg.sft.batch_size % w == 0, "sft.batch_size", f"must divide by the {w} processes")
        return
    algo = cfg.train.algorithm
    require(cfg.rollout.engine != "vllm", "rollout.engine",
            f"vllm has not been tried across processes; with {w} processes use rollout.engine: builtin or hf")
    require(cfg.rollout.prompts_per_step % w == 0, "rollout.prompts_per_step",
            f"must divide by the {w} processes (each samples its share of the prompts, whole groups)")
    section = cfg.section(algo)
    for name in ("minibatch_size", "batch_size"):
        if hasattr(section, name):
            require(getattr(section, name) % w == 0, f"{algo}.{name}", f"must divide by the {w} processes")


def run_info(runtime: Runtime | None) -> dict:
    """The ``runtime:`` block of a run's ``config.yaml``: the runtime's decisions, the number of
    processes (``world_size``, as launched: recorded, never a setting) and whether the policy is
    sharded over them (``fsdp``)."""
    return {**(runtime.as_dict() if runtime is not None else {}), **distributed.world().as_dict(),
            "fsdp": fsdp.active()}


def load_task(cfg: Config) -> Task:
    """The task of ``cfg``; a task file's path (``--task my/task.py:NAME``) is made absolute in
    ``cfg`` first, so that the run's saved config finds the file from any directory (``--resume``)."""
    cfg.task.name = canonical_spec(cfg.task.name)
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
    model = model.to(runtime.torch_device)
    if fsdp.decide(cfg):  # model.fsdp or accelerate's --use_fsdp, in several processes
        fsdp.shard_model(model)
    elif (cfg.model.fsdp or fsdp.launch_requested()) and distributed.launched_size() <= 1:
        note("model.fsdp: one process, nothing to shard: the model trains unsharded")
    return model, tokenizer


def save_policy(model, tokenizer, path: str | Path) -> None:
    """Rank 0 saves the policy as a model folder (:func:`~rlsf.models.loading.save_model`); a model
    sharded by FSDP is gathered first, every rank taking part. The others wait until it is written."""
    plain = fsdp.full_model(model)  # the model itself when it is not sharded
    if distributed.is_main():
        save_model(plain, tokenizer, path)
    distributed.barrier()


def prepare_run_dir(cfg: Config, runtime: Runtime | None = None, *, resume: bool) -> Path:
    """Create the run folder; refuse to overwrite an earlier run's checkpoints unless resuming.

    ``config.yaml`` holds the settings and, under ``runtime:``, what the runtime decided and the
    number of processes (``world_size``). Across processes rank 0 writes it and the others wait.
    """
    run_dir = Path(cfg.run.output_dir)
    if not resume and Checkpointer(run_dir).latest() is not None:
        raise ConfigError(
            f"run.output_dir: {run_dir} already holds checkpoints of an earlier run; pass --resume to "
            "continue it or choose another --output-dir (nothing was overwritten)")
    distributed.barrier()  # every rank has looked before rank 0 writes
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml", {"runtime": run_info(runtime)})
    distributed.barrier()
    return run_dir
