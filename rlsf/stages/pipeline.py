"""The main job: SFT -> evaluate -> RL with symbolic feedback -> evaluate, with before/after figures.

Folder layout under ``run.output_dir``::

    sft/        SFT run (config, metrics, checkpoints, model/)
    eval_sft.json, eval_sft_samples.jsonl     held-out figures before RL
    rl/         RL run (config, metrics, checkpoints, model/)
    eval_rl.json,  eval_rl_samples.jsonl      held-out figures after RL
    summary.json

Across processes SFT and RL run on every rank (their stages shard the batches); the two
evaluations run on rank 0 alone while the others wait (so their figures are the one-process
figures), and rank 0 writes everything above.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from rlsf.algorithms import ALGORITHMS
from rlsf.config import Config
from rlsf.runtime import distributed
from rlsf.runtime.metric_log import note
from rlsf.settings import ConfigError
from rlsf.stages.evaluate import evaluate
from rlsf.stages.sft import sft
from rlsf.stages.train import train


def with_settings(cfg: Config, **settings: Any) -> Config:
    """A copy of ``cfg`` with ``settings`` (dotted keys) set: the config of one stage of a job."""
    out = copy.deepcopy(cfg)
    for k, v in settings.items():
        out.set(k, v)
    return out


def on_rank_zero(fn, *args, **kw) -> Any:
    """``fn`` run by rank 0 alone as in one process (:func:`rlsf.runtime.distributed.solo`), the
    other ranks waiting; its result on every rank."""
    out = None
    if distributed.is_main():
        with distributed.solo():
            out = fn(*args, **kw)
    distributed.barrier()
    return distributed.broadcast_object(out)


def pipeline(cfg: Config) -> dict[str, Any]:
    cfg.validate()
    distributed.setup(cfg.model.device)
    root = Path(cfg.run.output_dir)
    if distributed.is_main():
        root.mkdir(parents=True, exist_ok=True)
        cfg.save(root / "config.yaml", {"runtime": distributed.world().as_dict()})
    resume = cfg.run.resume
    times: dict[str, float] = {}

    def done(path: Path) -> bool:
        return resume and path.exists()

    start_model = cfg.model.name
    if cfg.sft.steps > 0:
        sft_dir = root / "sft"
        if not done(sft_dir / "model" / "config.json"):
            t0 = time.perf_counter()
            note(f"[1/4] supervised fine-tuning {cfg.model.name} for {cfg.sft.steps} steps")
            sft(with_settings(cfg, **{"run.output_dir": str(sft_dir)}))
            times["sft"] = time.perf_counter() - t0
        start_model = str(sft_dir / "model")

    results: dict[str, Any] = {}
    for label, model_name, stage_dir in (("before", start_model, None), ("after", None, root / "rl")):
        if stage_dir is not None:  # RL between the two evaluations
            if not done(stage_dir / "model" / "config.json"):
                t0 = time.perf_counter()
                note(f"[3/4] RL ({ALGORITHMS[cfg.train.algorithm].procedure(cfg)}, {cfg.reward.mode}-level rewards) "
                     f"for {cfg.train.steps} steps")
                train(with_settings(cfg, **{"run.output_dir": str(stage_dir), "model.name": start_model}))
                times["rl"] = time.perf_counter() - t0
            model_name = str(stage_dir / "model")
        out = root / ("eval_sft.json" if label == "before" else "eval_rl.json")
        if done(out):
            results[label] = json.loads(out.read_text())
            continue
        t0 = time.perf_counter()
        note(f"[{2 if label == 'before' else 4}/4] evaluating {label} RL on {cfg.eval.split}")
        settings = {"model.name": model_name, "model.lora": False}
        if label == "after" and not cfg.eval.condition:  # e.g. rcrl: ask for the good outcome
            settings["eval.condition"] = ALGORITHMS[cfg.train.algorithm].evaluation_condition(cfg)
        results[label] = on_rank_zero(evaluate, with_settings(cfg, **settings), output=out)
        times[f"eval_{label}"] = time.perf_counter() - t0

    for stage in ("sft", "rl"):
        if distributed.is_main() and (root / stage / "metrics.jsonl").is_file():
            try:
                from rlsf.runtime.plots import plot_metrics

                plot_metrics(root / stage)
            except (FileNotFoundError, ConfigError) as e:  # matplotlib missing: the run is still fine
                note(f"no plot for {stage}: {e}")
    summary = {"before": results["before"], "after": results["after"], "stage_seconds": times}
    if distributed.is_main():
        (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A before/after table of the figures both evaluations share."""
    b, a = summary["before"], summary["after"]
    keys = [k for k in b if ("@" in k or k.startswith(("greedy/", "info/"))) and k in a
            and isinstance(b[k], (int, float))]
    w = max(12, *(len(k) for k in keys)) if keys else 12
    rows = [f"{'metric':<{w}} {'SFT':>8} {'SFT+RL':>8} {'change':>8}"]
    for k in keys:
        rows.append(f"{k:<{w}} {b[k]:>8.3f} {a[k]:>8.3f} {a[k] - b[k]:>+8.3f}")
    rows.append(f"held-out problems: {b['num_examples']} ({b['task']}, split {b['split']})")
    t = summary.get("stage_seconds", {})
    if t:
        rows.append("stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items()))
    return "\n".join(rows)
