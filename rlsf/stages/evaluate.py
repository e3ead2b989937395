"""Evaluation, per task: the task's own metrics of greedy and sampled completions.

A task says what one checked completion is worth (:meth:`Task.metrics`: named figures, some 0/1
such as ``success``, some graded such as a similarity score). From one greedy completion and
``eval.k`` samples per problem this module reports, averaged over the problems:

* ``greedy/<m>`` for every metric, and ``maj@1`` = ``greedy/success`` (Havrilla et al.'s name
  for the greedy figure);
* for 0/1 metrics, ``pass@j`` for j = 1, 2, 4, ..., k: the unbiased estimator of "at least one of
  j samples succeeds" (Chen et al. 2021) (``pass@j/<m>`` for metrics other than success);
* for graded metrics, ``mean@k/<m>`` (a random sample) and ``best@k/<m>`` (the best of k);
* for every selector of ``eval.selectors`` (:mod:`rlsf.evaluation.selectors`), ``<sel>@k`` (and
  ``<sel>@k/<m>``): the metrics of the one sample it picks, e.g. maj@k for the majority vote and
  rerank@k for the sample the outcome reward model ``eval.orm`` scores highest. A selector that
  abstains (no sample has an answer) scores 0.

With ``eval.condition`` every prompt carries that outcome label (a return-conditioned model
evaluated on the good outcome).

With ``eval.turns`` (or ``rollout.turns``) T > 1 the greedy pass runs self-repair episodes
(:mod:`rlsf.rollout.episodes`): ``greedy/*`` stay the single-turn figures (each episode's first
attempt is the single-turn greedy completion), and ``turn{t}/success``, ``repair_rate``,
``episode/turns``, ``episode/tokens`` and ``selfrepair/greedy/<m>`` (the task's metrics of each
episode's last attempt) are the self-repair ones, side by side. The samples file gives each greedy
row's later attempts with the feedback before each (``turns``). Sampled figures (pass@k, maj@k) stay
single-turn.

Checking goes through the check service like training, with the task's evaluation certificate
(:meth:`Task.judge`: held-out tests where a task has them). A check that fails counts as a failed
completion here (every metric 0) and is reported in ``checker_failed``.

Writes ``eval.json`` (the figures) and ``eval_samples.jsonl`` (every completion with its
certificate and metrics; its ``id`` is what ``rlsf check --example`` takes).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlsf.config import Config
from rlsf.evaluation.metrics import (
    answer_mode_share,
    certificate_summary,
    distinct_n,
    ks_up_to,
    opening_share,
    pass_at_k,
)
from rlsf.evaluation.selectors import SELECTORS
from rlsf.feedback.certificate import Certificate
from rlsf.feedback.service import CheckService
from rlsf.rollout.collect import rollout_and_check, score_with_orm
from rlsf.rollout.engines import SamplingModel
from rlsf.rollout.episodes import episode_metrics, first_turns, rollout_episodes
from rlsf.runtime import distributed
from rlsf.runtime.device import Runtime
from rlsf.runtime.utils import rng_state, set_rng_state
from rlsf.stages.context import load_policy, start
from rlsf.tasks.base import Example, Task


def by_group(group, n: int) -> list[list[int]]:
    """The rows of each of ``n`` prompts, from the experience's explicit ``group`` ids (``0..n-1``)."""
    rows: list[list[int]] = [[] for _ in range(n)]
    for i, g in enumerate(group.tolist()):
        rows[g].append(i)
    return rows


def completion_metrics(task: Task, example: Example, cert: Certificate) -> dict[str, float]:
    """The task's figures for one completion; all 0 when the check failed."""
    figures = task.metrics(example, cert)
    return {k: 0.0 for k in figures} if cert.failed else {k: float(v) for k, v in figures.items()}


def _name(prefix: str, metric: str) -> str:
    return prefix if metric == "success" else f"{prefix}/{metric}"


def summarize(task: Task, examples: list[Example], greedy: list[Certificate],
              samples: list[list[Certificate]] | None = None, texts: list[list[str]] | None = None,
              selectors: list[str] = ("maj",), scores: list[list[float]] | None = None) -> dict[str, Any]:
    """The figures of the module docstring from certificates (``samples[j]``: the k of problem j;
    ``scores[j]``: an outcome reward model's scores of them, for ``rerank``)."""
    n = len(examples)
    per = [completion_metrics(task, ex, c) for ex, c in zip(examples, greedy, strict=True)]
    names = list(per[0]) if per else []
    out: dict[str, Any] = {f"greedy/{m}": sum(p[m] for p in per) / n for m in names}
    if "success" in names:
        out["maj@1"] = out["greedy/success"]
    if not samples:
        return out
    k = len(samples[0])
    binary = [m for m in names if m in task.binary_metrics]
    graded = [m for m in names if m not in task.binary_metrics]
    sample_figs = [[completion_metrics(task, ex, c) for c in certs] for ex, certs in zip(examples, samples, strict=True)]
    for m in binary:
        counts = [sum(f[m] > 0.5 for f in figs) for figs in sample_figs]
        for j in ks_up_to(k):
            out[_name(f"pass@{j}", m)] = sum(pass_at_k(k, c, j) for c in counts) / n
    for m in graded:
        out[f"mean@{k}/{m}"] = sum(sum(f[m] for f in figs) / k for figs in sample_figs) / n
        out[f"best@{k}/{m}"] = sum(max(f[m] for f in figs) for figs in sample_figs) / n
    for sel in selectors:
        picks = [SELECTORS[sel](ex, txt, certs, sc) for ex, txt, certs, sc in
                 zip(examples, texts or [[]] * n, samples, scores or [None] * n)]
        for m in names:
            out[_name(f"{sel}@{k}", m)] = sum(figs[i][m] if i is not None else 0.0
                                              for figs, i in zip(sample_figs, picks)) / n
    return out


def evaluate(cfg: Config, *, model=None, tokenizer=None, output: str | Path | None = None,
             runtime: Runtime | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (default: load ``model.name``) on ``eval.split`` of the task.

    Sampling is seeded with ``run.seed`` (the same model gives the same figures), and the caller's
    random state is restored afterwards, so evaluating in the middle of a training run does not
    change that run's sampling.
    """
    state = rng_state()
    try:
        return _evaluate(cfg, model, tokenizer, output, runtime)
    finally:
        set_rng_state(state)


def _evaluate(cfg: Config, model, tokenizer, output, runtime) -> dict[str, Any]:
    e = cfg.eval
    rt, task, examples = start(cfg, e.split, e.num_examples, runtime=runtime)
    distributed.require_single_process("rlsf eval")  # (rlsf pipeline evaluates on rank 0 alone)
    if model is None:
        model, tokenizer = load_policy(cfg, rt, lora=False)
    t0 = time.perf_counter()
    # One bar over the generation batches, greedy then sampled, counted in completions (training's tqdm).
    bar = tqdm(total=len(examples) * (1 + e.k), desc=f"eval/{e.split}", unit="completion", dynamic_ncols=True,
               disable=not (cfg.run.progress and distributed.is_main()))
    gen = dict(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, precision=rt.sampling_precision,
               engine=cfg.rollout.engine, fused_step=cfg.rollout.fused_step, on_batch=bar.update)
    condition = e.condition or None
    turns = e.turns or cfg.rollout.turns
    with (SamplingModel.for_settings(model, tokenizer, rt, cfg.rollout, seed=cfg.run.seed) as sampler,
          CheckService.for_config(cfg, task, tokenizer) as checker, bar):
        episodes = rollout_episodes(sampler.model, tokenizer, task, examples, checker, turns=turns, do_sample=False,
                                    judge=True, condition=condition, **gen)
        greedy = first_turns(episodes)
        sampled = None
        if e.k > 0:
            sampled = rollout_and_check(sampler.model, tokenizer, task, examples, checker, samples=e.k,
                                        temperature=e.temperature, top_p=1.0, judge=True, condition=condition, **gen)
    k = e.k
    groups = by_group(sampled.group, len(examples)) if sampled else None  # rows of each example's k samples
    samples = [[sampled.certificates[i] for i in rows] for rows in groups] if sampled else None
    texts = [[sampled.texts[i] for i in rows] for rows in groups] if sampled else None
    orm_scores = None
    if sampled is not None and e.orm:  # the reranker's scores (rerank@k), and in the samples file
        from rlsf.models.orm import OutcomeRewardModel

        orm = OutcomeRewardModel.load(e.orm, rt.torch_device, cfg.model.dtype)
        orm_scores = score_with_orm(orm, task, sampled.examples, sampled.texts, precision=rt.precision)
        del orm
    scores = [[orm_scores[i] for i in rows] for rows in groups] if orm_scores else None
    failed = sum(c.failed for c in greedy.certificates) + (sum(c.failed for c in sampled.certificates) if sampled else 0)
    results: dict[str, Any] = {
        "task": task.name, "model": cfg.model.name, "split": e.split, "num_examples": len(examples),
        **summarize(task, examples, greedy.certificates, samples, texts, e.selectors, scores),
        **{f"greedy/{k_}": v for k_, v in task.corpus_metrics(examples, greedy.texts, greedy.certificates).items()},
        "verdicts": dict(Counter(c.verdict for c in greedy.certificates)),
        "greedy/answer_mode_share": answer_mode_share(greedy.certificates),
        # Collapse of the text itself, for tasks without one answer (sentiment, molecule generation):
        "greedy/distinct_2": distinct_n(greedy.texts, 2), "greedy/opening_share": opening_share(greedy.texts),
        "checker_failed": failed,
        # The checker's own figures (e.g. Game of 24 step accuracy) of the greedy completions:
        # finer-grained than success, so they move first in short runs.
        **{k_: v for k_, v in certificate_summary(greedy.certificates, prefix="info/").items() if "/verdict/" not in k_},
    }
    if turns > 1:  # the self-repair figures beside the single-turn ones (greedy/*: the first attempts)
        results["turns"] = turns
        results.update(episode_metrics(episodes, turns))
        results.update({f"selfrepair/{m}": v for m, v in summarize(task, examples, episodes.certificates).items()
                        if m.startswith("greedy/")})
        results.update({k_: v for k_, v in certificate_summary(episodes.certificates, prefix="selfrepair/info/").items()
                        if "/verdict/" not in k_})
    if sampled is not None:
        results["k"], results["temperature"] = k, e.temperature
    if condition:
        results["condition"] = condition
    results["precision"] = rt.precision
    results["sampling_precision"] = rt.sampling_precision
    results["time_s"] = round(time.perf_counter() - t0, 1)
    if output is None:
        output = Path(cfg.run.output_dir) / "eval.json"
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    with out.with_name(out.stem + "_samples.jsonl").open("w") as f:
        for kind, exp in (("greedy", greedy), ("sample", sampled)):
            for i, (ex, text, cert) in enumerate(zip(exp.examples, exp.texts, exp.certificates) if exp is not None else ()):
                row = {"id": ex.get("id"), "kind": kind, "completion": text, "certificate": cert.to_dict(),
                       "metrics": completion_metrics(task, ex, cert)}
                if kind == "sample" and orm_scores:
                    row["orm_score"] = orm_scores[i]
                if kind == "greedy" and turns > 1:  # the episode's later attempts and the feedback before each
                    row["turns"] = [{"feedback": prev.feedback, "completion": rec.text, "certificate":
                                     rec.certificate.to_dict()} for prev, rec in zip(episodes.episodes[i],
                                                                                      episodes.episodes[i][1:])]
                f.write(json.dumps(row) + "\n")
    if task.picture:
        draw_picture(task, greedy.examples, greedy.texts, greedy.certificates, out.with_name(f"{out.stem}_{task.picture}"))
    return results


def draw_picture(task: Task, examples: list[Example], texts: list[str], certificates: list[Certificate],
                 path: Path) -> Path | None:
    """The task's picture of these completions; a drawing failure is reported, never fatal (the
    figures are already written)."""
    try:
        written = task.draw(examples, texts, certificates, path)
    except Exception as e:  # noqa: BLE001 -- a picture is never worth losing an evaluation for
        print(f"rlsf: warning: could not draw {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    print(f"rlsf: drew {written}", file=sys.stderr)
    return written
