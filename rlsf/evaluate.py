"""Evaluation: maj@1 (one greedy sample), and from k samples pass@k (unbiased) and maj@k.

Writes ``eval.json`` (the figures) and ``eval_samples.jsonl`` (every completion with its
certificate) in the run folder.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rlsf.config import Config
from rlsf.metrics import certificate_summary, ks_up_to, majority_vote, pass_at_k
from rlsf.rollout import SamplingModel, generate, task_prompts
from rlsf.runtime import load_policy, load_split, load_task, set_threads
from rlsf.utils import seed_everything


def evaluate(cfg: Config, *, model=None, tokenizer=None, output: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (default: load ``model.name``) on ``eval.split`` of the task."""
    cfg.validate()
    set_threads(cfg)
    seed_everything(cfg.run.seed)
    e = cfg.eval
    task = load_task(cfg)
    examples = load_split(cfg, task, e.split, e.num_examples)
    if model is None:
        model, tokenizer = load_policy(cfg, lora=False)
    t0 = time.perf_counter()
    model = SamplingModel(model, cfg.model.autocast,
                          fused=cfg.rollout.engine == "rlsf" and cfg.rollout.fused_step).model
    prompts = task_prompts(tokenizer, task, examples)
    gen = dict(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, precision=cfg.model.autocast,
               engine=cfg.rollout.engine, fused_step=cfg.rollout.fused_step)

    greedy = generate(model, tokenizer, prompts, do_sample=False, **gen)
    greedy_certs = [task.check(ex, text) for ex, text in zip(examples, greedy.texts)]
    results: dict[str, Any] = {
        "task": task.name, "model": cfg.model.name, "split": e.split, "num_examples": len(examples),
        "maj@1": sum(c.correct for c in greedy_certs) / len(examples),
        "mean_score": sum(c.score for c in greedy_certs) / len(examples),
        "verdicts": dict(Counter(c.verdict for c in greedy_certs)),
        # The checker's own figures (e.g. Game of 24 step accuracy) of the greedy completions:
        # finer-grained than success, so they move first in short runs.
        **{k: v for k, v in certificate_summary(greedy_certs, prefix="info/").items() if "/verdict/" not in k},
    }
    records = [{"id": ex.get("id"), "kind": "greedy", "completion": t, "certificate": c.to_dict()}
               for ex, t, c in zip(examples, greedy.texts, greedy_certs)]
    if e.k > 0:
        k = e.k
        sampled = generate(model, tokenizer, [p for p in prompts for _ in range(k)], do_sample=True,
                           temperature=e.temperature, top_p=1.0, **gen)
        correct_counts, votes = [], []
        for i, ex in enumerate(examples):
            texts = sampled.texts[i * k : (i + 1) * k]
            certs = [task.check(ex, t) for t in texts]
            correct_counts.append(sum(c.correct for c in certs))
            winner = majority_vote(certs)
            votes.append(bool(winner and winner.correct))
            records += [{"id": ex.get("id"), "kind": "sample", "completion": t, "certificate": c.to_dict()}
                        for t, c in zip(texts, certs)]
        for j in ks_up_to(k):
            results[f"pass@{j}"] = sum(pass_at_k(k, c, j) for c in correct_counts) / len(examples)
        results[f"maj@{k}"] = sum(votes) / len(examples)
        results["k"] = k
        results["temperature"] = e.temperature
    results["time_s"] = round(time.perf_counter() - t0, 1)
    if output is None:
        output = Path(cfg.run.output_dir) / "eval.json"
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    with out.with_name(out.stem + "_samples.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return results
