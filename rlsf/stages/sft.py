"""Supervised fine-tuning on a task's demonstrations (for Game of 24: the solver's solutions).

The loss is the cross-entropy of the completion tokens only. Prompt and completion are
tokenised separately and concatenated, exactly as at generation time, where the model
continues from the tokenised prompt.

Across processes each rank takes a contiguous share of every step's batch; the loss is the token
mean over the whole batch and the gradients are summed over ranks (:func:`sft_update`), so a step
is the one a single process takes on the same batch. Rank 0 writes the run folder.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlsf.algorithms.supervised import collate, sft_update
from rlsf.config import Config
from rlsf.rollout.collect import render_prompt
from rlsf.runtime import distributed
from rlsf.runtime.checkpoint import Checkpointer, load_trainable_state, trainable_state
from rlsf.runtime.metric_log import MetricLogger, note, truncate_metrics
from rlsf.runtime.utils import batch_indices, make_adamw, model_device, rng_state, seed_everything, set_rng_state
from rlsf.stages.context import check_world, load_policy, prepare_run_dir, run_info, save_policy, start
from rlsf.tasks.base import Task, TaskError


def demonstration_ids(tokenizer, task: Task, example: dict, demo: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one demonstration, the completion closing the turn."""
    messages = task.prompt(example)
    prompt = render_prompt(tokenizer, messages)
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": demo}], tokenize=False)
        completion = full[len(prompt):] if full.startswith(prompt) else demo + (tokenizer.eos_token or "")
    else:
        completion = demo + (tokenizer.eos_token or "")
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p, c


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sft(cfg: Config, data_offset: int = 0) -> dict[str, Any]:
    """Fine-tune ``model.name`` on the task's demonstrations; saves ``<output_dir>/model``.

    ``data_offset``: start in the data order where a run of that many steps left off (the same
    seed's order), so a continuation sees the demonstrations that follow, not the first ones again.
    """
    c = cfg.sft
    rt, task, examples = start(cfg, limit=cfg.task.train_examples)
    check_world(cfg, "sft")
    model, tokenizer = load_policy(cfg, rt)
    data = []
    too_long = 0
    for ex in examples:
        demo = task.demonstration(ex)
        if demo is not None:
            pair = demonstration_ids(tokenizer, task, ex, demo)
            if c.max_length and len(pair[0]) + len(pair[1]) > c.max_length:
                too_long += 1
                continue
            data.append(pair)
    if too_long:
        note(f"sft: {too_long} of {too_long + len(data)} demonstrations are longer than sft.max_length="
             f"{c.max_length} tokens; left out")
    if not data:
        raise TaskError(f"task {task.name!r} gives no demonstrations for supervised fine-tuning"
                        + (f" of at most sft.max_length={c.max_length} tokens" if too_long else ""))
    run_dir = prepare_run_dir(cfg, rt, resume=cfg.run.resume)
    ckpt = Checkpointer(run_dir, keep=2)
    params = [p for p in model.parameters() if p.requires_grad]
    distributed.broadcast_tensors(params)  # every rank starts from rank 0's weights
    opt = make_adamw([{"params": params, "lr": c.lr}], weight_decay=c.weight_decay)
    step = 0
    if cfg.run.resume and (path := distributed.broadcast_object(ckpt.latest())) is not None:
        state = ckpt.load(path)
        load_trainable_state(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = state["step"]
        note(f"resume: continuing SFT from {path} (step {step})")
    if cfg.run.resume:  # records past the checkpoint (all, with none) are about to be redone
        truncate_metrics(run_dir / "metrics.jsonl", step)
    logger = MetricLogger(run_dir, cfg.run.loggers, {**cfg.to_dict(), "runtime": run_info(rt)})
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    bar = tqdm(total=c.steps, initial=step, desc="sft", unit="step",
               disable=not (cfg.run.progress and distributed.is_main()), dynamic_ncols=True)
    last: dict[str, Any] = {"demonstrations": len(data)}
    try:
        while step < c.steps:
            t0 = time.perf_counter()
            picked = batch_indices(len(data), c.batch_size, step + data_offset, cfg.run.seed)
            if distributed.size() > 1:  # this rank's share; its own random stream (LoRA dropout)
                picked = distributed.shard(picked)
                seed_everything(distributed.rank_seed(cfg.run.seed, step))
            batch = collate([data[i] for i in picked], pad)
            batch = {k: v.to(device) for k, v in batch.items()}
            lr = lr_at(step, c.steps, c.warmup_steps, c.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, gn = sft_update(model, opt, params, batch, rt.precision, c.max_grad_norm)
            step += 1
            tokens = int(distributed.all_sum([float((batch["labels"] != -100).sum())])[0])  # the whole batch's
            last = {"loss/sft": float(loss), "lr": lr, "loss/grad_norm": float(gn),
                    "tokens": tokens, "timing/step": time.perf_counter() - t0}
            logger.log(step, last)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss/sft']:.3f}")
            if c.save_every and step % c.save_every == 0 and step < c.steps:
                ckpt.save(step, lambda: {"model": trainable_state(model), "optimizer": opt.state_dict(),
                                         "rng": rng_state()})
    finally:
        bar.close()
        logger.close()
    ckpt.save(step, lambda: {"model": trainable_state(model), "optimizer": opt.state_dict(), "rng": rng_state()})
    save_policy(model, tokenizer, Path(run_dir) / "model")  # rank 0 writes (FSDP: every rank gathers)
    return last
