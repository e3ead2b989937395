"""Outcome reward model (ORM; Cobbe et al. 2021, Havrilla et al. 2024): a language model with a
scalar head that reads a problem and a solution and says how likely the solution is correct.

``rlsf orm`` (:func:`train_orm`) builds one, top to bottom::

    samples = orm.samples_per_prompt solutions of each of orm.prompts training problems, sampled
              from model.name (the SFT model) and labelled correct / wrong by the task's checker
    split   = the problems (not the samples) into training and held-out (orm.val_fraction)
    loss    = binary cross-entropy of sigmoid(head(h_t)) against the solution's label at every
              solution token t (the ORM predicts the outcome from every prefix, as in the paper)
    figures = held-out loss, accuracy, AUC, and rerank@k against a random pick of the same samples
    saved   = <output_dir>/model (language model + tokenizer), head.pt, orm.json, samples.jsonl

A solution's score is the probability at its last token. The ORM is then a reward
(``reward.orm``: on the last token, alone or mixed with the checker's) and the reranker of
rerank@k (``eval.orm`` with the ``rerank`` selector). It reads text, so its tokenizer need not be
the policy's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlsf.config import Config
from rlsf.errors import RlsfError
from rlsf.models.orm import OutcomeRewardModel, collate_scored, encode, last_position_scores, orm_loss
from rlsf.runtime import distributed
from rlsf.runtime.utils import autocast, make_adamw
from rlsf.settings import ConfigError
from rlsf.tasks.base import Example, Task


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random correct solution outscores a random
    wrong one (ties count half); ``nan`` without both kinds."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# ---- `rlsf orm` -----------------------------------------------------------------------------------
def _labelled_samples(cfg: Config, rt, task: Task, examples: list[Example], model, tokenizer,
                      path: Path) -> list[dict[str, Any]]:
    """Sample and label solutions, or read them back from ``path`` when resuming."""
    from rlsf.feedback.service import CheckService
    from rlsf.rollout.collect import rollout_and_check
    from rlsf.rollout.engines import SamplingModel
    from rlsf.runtime.metric_log import note

    if cfg.run.resume and path.is_file():
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line) if line.strip() else None
                if row is not None and not (isinstance(row, dict) and {"id", "completion", "correct"} <= set(row)
                                            and isinstance(row["completion"], str)):
                    raise ValueError('expected {"id", "completion", "correct"}')
            except ValueError as e:
                raise RlsfError(f"{path}, line {n}: not a labelled sample ({e})") from None
            if row is not None:
                rows.append(row)
        note(f"orm: resume: {len(rows)} labelled samples read from {path}")
        return rows
    ro = cfg.rollout
    note(f"orm: sampling {cfg.orm.samples_per_prompt} solutions of {len(examples)} problems from {cfg.model.name}")
    with (SamplingModel.for_settings(model, tokenizer, rt, ro, seed=cfg.run.seed) as sampler,
          CheckService.for_config(cfg, task, tokenizer) as checker):
        exp = rollout_and_check(sampler.model, tokenizer, task, examples, checker, samples=cfg.orm.samples_per_prompt,
                                max_new_tokens=ro.max_new_tokens, temperature=ro.temperature, top_p=ro.top_p,
                                batch_size=ro.generation_batch_size, precision=rt.sampling_precision, engine=ro.engine,
                                fused_step=ro.fused_step)
    rows = [{"id": ex["id"], "completion": text, "correct": bool(cert.correct)}
            for ex, text, cert in zip(exp.examples, exp.texts, exp.certificates) if not cert.failed]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def held_out_figures(rows: list[dict[str, Any]], scores: list[float]) -> dict[str, float]:
    """What the ORM's scores of held-out samples are worth: accuracy at 0.5, AUC, and over the
    problems with several samples, how often the top-scored one is correct (``rerank``) against
    the expected share of a random pick (``random``)."""
    labels = [bool(r["correct"]) for r in rows]
    by_problem: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        by_problem.setdefault(r["id"], []).append(i)
    groups = [ix for ix in by_problem.values() if len(ix) > 1]
    out = {"samples": float(len(rows)), "correct_share": float(np.mean(labels)) if rows else 0.0,
           "accuracy": float(np.mean([(s > 0.5) == y for s, y in zip(scores, labels)])) if rows else 0.0,
           "auc": auc(scores, labels)}
    if groups:
        out["rerank"] = float(np.mean([labels[max(ix, key=lambda i: scores[i])] for ix in groups]))
        out["random"] = float(np.mean([np.mean([labels[i] for i in ix]) for ix in groups]))
    return out


def train_orm(cfg: Config) -> dict[str, Any]:
    """Sample, label, train and measure an ORM; saves it in ``run.output_dir`` (module docstring)."""
    from rlsf.runtime.metric_log import MetricLogger, note, truncate_metrics
    from rlsf.stages.context import load_policy, prepare_run_dir, start

    o = cfg.orm
    rt, task, examples = start(cfg, limit=o.prompts or cfg.task.train_examples)
    distributed.require_single_process("rlsf orm")
    by_id = {ex["id"]: ex for ex in examples}
    out = Path(cfg.run.output_dir)
    if not cfg.run.resume and any((out / f).exists() for f in ("samples.jsonl", "head.pt")):
        raise ConfigError(f"run.output_dir: {out} already holds an ORM or its samples; pass --resume to reuse the "
                          "samples (the ORM is trained again) or choose another --output-dir (nothing was overwritten)")
    run_dir = prepare_run_dir(cfg, rt, resume=cfg.run.resume)
    lm, tokenizer = load_policy(cfg, rt, lora=False)
    rows = [r for r in _labelled_samples(cfg, rt, task, examples, lm, tokenizer, run_dir / "samples.jsonl")
            if r["id"] in by_id]
    positives = sum(r["correct"] for r in rows)
    note(f"orm: {len(rows)} labelled samples, {positives} correct")
    if positives in (0, len(rows)):
        raise RlsfError(f"every one of the {len(rows)} sampled solutions is {'wrong' if not positives else 'right'}: "
                        "an ORM cannot learn from one label (sample more problems or solutions, or start from a "
                        "model that solves some of them)")
    ids = sorted({r["id"] for r in rows}, key=str)
    held = set(np.random.default_rng(cfg.run.seed).permutation(len(ids))[: int(round(o.val_fraction * len(ids)))])
    val_ids = {ids[i] for i in held}
    train_rows = [r for r in rows if r["id"] not in val_ids]
    val_rows = [r for r in rows if r["id"] in val_ids]

    from rlsf.rollout.collect import task_prompts

    prompt_of = dict(zip(by_id, task_prompts(tokenizer, task, list(by_id.values())), strict=True))
    data = [(encode(tokenizer, prompt_of[r["id"]], r["completion"], o.max_length), float(r["correct"]))
            for r in train_rows]
    orm = OutcomeRewardModel(lm, tokenizer).to(rt.torch_device)
    optimizer = make_adamw([{"params": [p for p in lm.parameters() if p.requires_grad], "lr": o.lr},
                            {"params": list(orm.head.parameters()), "lr": o.head_lr}],
                           weight_decay=o.weight_decay)
    steps = max(1, math.ceil(o.epochs * len(data) / o.batch_size))
    rng = np.random.default_rng(cfg.run.seed)
    order = np.concatenate([rng.permutation(len(data)) for _ in range(math.ceil(steps * o.batch_size / len(data)))])
    truncate_metrics(run_dir / "metrics.jsonl", 0)  # a resumed ORM reuses its samples, not its training
    logger = MetricLogger(run_dir, cfg.run.loggers, {**cfg.to_dict(), "runtime": rt.as_dict()})
    device = rt.torch_device
    params = [p for g in optimizer.param_groups for p in g["params"]]
    orm.train()
    bar = tqdm(total=steps, desc="orm", unit="step", disable=not cfg.run.progress, dynamic_ncols=True)
    try:
        for step in range(steps):
            picked = [data[i] for i in order[step * o.batch_size:(step + 1) * o.batch_size]]
            batch = {k: v.to(device) for k, v in collate_scored([x for x, _ in picked], orm.pad).items()}
            labels = torch.tensor([y for _, y in picked], device=device)
            with autocast(rt.precision, device):
                logits = orm(batch["input_ids"], batch["attention_mask"])
            loss = orm_loss(logits, labels, batch["scored"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                acc = ((last_position_scores(logits, batch["scored"]) > 0.5).float() == labels).float().mean()
            logger.log(step + 1, {"loss/orm": float(loss.detach()), "orm/train_accuracy": float(acc)})
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    finally:
        bar.close()
        logger.close()
    figures: dict[str, Any] = {"train_samples": len(train_rows), "train_correct_share": float(
        np.mean([r["correct"] for r in train_rows])), "steps": steps}
    if val_rows:
        scores = orm.score_texts([prompt_of[r["id"]] for r in val_rows], [r["completion"] for r in val_rows],
                                 precision=rt.precision, max_length=o.max_length)
        figures.update({f"held_out/{k}": v for k, v in held_out_figures(val_rows, scores).items()})
    info = {"task": task.name, "task_options": dict(cfg.task.options), "base_model": cfg.model.name, **figures}
    orm.save(run_dir, info)
    return info
