"""The main job: SFT -> evaluate -> RL with symbolic feedback -> evaluate, with before/after figures.

Folder layout under ``run.output_dir``::

    sft/        SFT run (config, metrics, checkpoints, model/)
    eval_sft.json, eval_sft_samples.jsonl     held-out figures before RL
    rl/         RL run (config, metrics, checkpoints, model/)
    eval_rl.json,  eval_rl_samples.jsonl      held-out figures after RL
    sft_more/, eval_sft_more.json ...         with pipeline.baseline sft: the equal-time baseline
                                              (SFT continued for the RL stage's wall time) and its figures
    stage_seconds.json                        each stage's wall time (sizes the baseline on --resume)
    summary.json                              the figures, and the paired changes with 95% intervals

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
from rlsf.evaluation.intervals import Change, paired_mean_difference, paired_proportion_difference
from rlsf.runtime import distributed
from rlsf.runtime.metric_log import note, read_metrics
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
    times_file = root / "stage_seconds.json"
    times: dict[str, float] = json.loads(times_file.read_text()) if resume and times_file.is_file() else {}
    steps = 5 if cfg.pipeline.baseline == "sft" else 4

    def done(path: Path) -> bool:
        return resume and path.exists()

    def timed(name: str, fn, *args, **kw) -> Any:
        """Run one stage, recording its wall time (kept across --resume: the baseline is sized by it)."""
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = time.perf_counter() - t0
        if distributed.is_main():
            times_file.write_text(json.dumps(times, indent=2) + "\n")
        return out

    def evaluation(label: str, model_name: str, out: Path, **settings: Any) -> dict[str, Any]:
        if done(out):
            return json.loads(out.read_text())
        step = {"before": 2, "after": 4, "baseline": 5}[label]
        note(f"[{step}/{steps}] evaluating {EVALUATED[label]} on {cfg.eval.split}")
        chosen = with_settings(cfg, **{"model.name": model_name, "model.lora": False, **settings})
        return timed(f"eval_{label}", on_rank_zero, evaluate, chosen, output=out)

    start_model = cfg.model.name
    if cfg.sft.steps > 0:
        sft_dir = root / "sft"
        if not done(sft_dir / "model" / "config.json"):
            note(f"[1/{steps}] supervised fine-tuning {cfg.model.name} for {cfg.sft.steps} steps")
            timed("sft", sft, with_settings(cfg, **{"run.output_dir": str(sft_dir)}))
        start_model = str(sft_dir / "model")

    results: dict[str, Any] = {"before": evaluation("before", start_model, root / "eval_sft.json")}
    rl_dir = root / "rl"
    if not done(rl_dir / "model" / "config.json"):
        note(f"[3/{steps}] RL ({ALGORITHMS[cfg.train.algorithm].procedure(cfg)}, {cfg.reward.mode}-level rewards) "
             f"for {cfg.train.steps} steps")
        timed("rl", train, with_settings(cfg, **{"run.output_dir": str(rl_dir), "model.name": start_model}))
    condition = {}
    if not cfg.eval.condition:  # e.g. rcrl: ask for the good outcome
        condition = {"eval.condition": ALGORITHMS[cfg.train.algorithm].evaluation_condition(cfg)}
    results["after"] = evaluation("after", str(rl_dir / "model"), root / "eval_rl.json", **condition)

    if cfg.pipeline.baseline == "sft":
        more_dir = root / "sft_more"
        if not done(more_dir / "model" / "config.json"):
            extra = baseline_steps(cfg.sft.steps, times, root)
            note(f"[5/{steps}] the equal-time baseline: SFT continued for {extra} steps, RL's "
                 f"{times.get('rl', 0.0) / 60:.1f} min at the SFT stage's pace")
            timed("sft_more", sft, with_settings(cfg, **{
                "run.output_dir": str(more_dir), "model.name": start_model, "sft.steps": extra,
                "sft.warmup_steps": min(cfg.sft.warmup_steps, extra)}), data_offset=cfg.sft.steps)
        results["baseline"] = evaluation("baseline", str(more_dir / "model"), root / "eval_sft_more.json")

    for stage in ("sft", "rl", "sft_more"):
        if distributed.is_main() and (root / stage / "metrics.jsonl").is_file():
            try:
                from rlsf.runtime.plots import plot_metrics

                plot_metrics(root / stage)
            except (FileNotFoundError, ConfigError) as e:  # matplotlib missing: the run is still fine
                note(f"no plot for {stage}: {e}")
    summary = {**results, "changes": changes(root, "baseline" in results), "stage_seconds": times}
    if distributed.is_main():
        (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


#: What each evaluation of the pipeline evaluates, for the progress lines and the table.
EVALUATED = {"before": "the SFT model", "after": "the model after RL",
             "baseline": "the equal-time baseline (SFT continued)"}
#: The evaluation files of the pipeline, by label.
EVAL_FILES = {"before": "eval_sft.json", "after": "eval_rl.json", "baseline": "eval_sft_more.json"}


def baseline_steps(sft_steps: int, times: dict[str, float], root: Path) -> int:
    """SFT steps that take as long as the RL stage did, at the SFT stage's own pace (its wall time,
    loading included, over its steps). Without recorded stage times (a run folder from an older
    rlsf), the per-step timings in the two stages' metric logs stand in."""
    sft_s, rl_s = times.get("sft"), times.get("rl")
    if sft_s is None or rl_s is None:
        sft_s, rl_s = (sum(r.get("timing/step", 0.0) for r in read_records(root / d / "metrics.jsonl"))
                       for d in ("sft", "rl"))
        note(f"pipeline: no recorded stage times in {root}; sizing the baseline by the logged step times")
    if not sft_s or not rl_s:
        raise ConfigError(f"pipeline.baseline: cannot size the equal-time baseline: no wall time of the SFT and RL "
                          f"stages in {root} (stage_seconds.json or the stages' metrics.jsonl)")
    return max(1, round(sft_steps * rl_s / sft_s))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file of a run (none where the file is missing)."""
    return read_metrics(path) if path.is_file() else []


def greedy_outcomes(path: Path) -> dict[str, dict[str, float]]:
    """Per problem id: the greedy completion's success and its certificate's numeric ``info`` figures
    (``info/<key>``), from an evaluation's samples file."""
    out: dict[str, dict[str, float]] = {}
    for row in read_records(path):
        if row.get("kind") != "greedy":
            continue
        figures = {"success": float(row.get("metrics", {}).get("success", 0.0))}
        for k, v in row["certificate"].get("info", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                figures[f"info/{k}"] = float(v)
        out[str(row["id"])] = figures
    return out


def changes(root: Path, with_baseline: bool) -> dict[str, dict[str, dict[str, float]]]:
    """Paired changes with 95% intervals over the same held-out problems: RL against the SFT model
    and, with the baseline, RL against SFT given the same extra time. Success gets Newcombe's
    paired interval, the checker's per-completion figures the paired normal one
    (:mod:`rlsf.evaluation.intervals`)."""
    pairs = [("rl_vs_sft", "before", "after")] + ([("rl_vs_baseline", "baseline", "after")] if with_baseline else [])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, first, second in pairs:
        a = greedy_outcomes(root / EVAL_FILES[first].replace(".json", "_samples.jsonl"))
        b = greedy_outcomes(root / EVAL_FILES[second].replace(".json", "_samples.jsonl"))
        ids = [i for i in a if i in b]
        if not ids:
            continue
        figures: dict[str, dict[str, float]] = {}
        keys = sorted({k for i in ids for k in (*a[i], *b[i])})
        for key in keys:
            x, y = [a[i].get(key, 0.0) for i in ids], [b[i].get(key, 0.0) for i in ids]
            change = (paired_proportion_difference([v > 0 for v in x], [v > 0 for v in y]) if key == "success"
                      else paired_mean_difference(x, y))
            figures[key] = change.as_dict()
        out[name] = figures
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A before/after table of the figures the evaluations share, then the paired changes of
    greedy success and the checker's figures with their 95% intervals."""
    b, a = summary["before"], summary["after"]
    base = summary.get("baseline")
    keys = [k for k in b if ("@" in k or k.startswith(("greedy/", "info/"))) and k in a
            and isinstance(b[k], (int, float)) and (base is None or k in base)]
    w = max(12, *(len(k) for k in keys)) if keys else 12
    head = f"{'metric':<{w}} {'SFT':>8} {'SFT+RL':>8} {'change':>8}"
    rows = [head + (f" {'SFT+SFT':>8} {'RL-base':>8}" if base else "")]
    for k in keys:
        row = f"{k:<{w}} {b[k]:>8.3f} {a[k]:>8.3f} {a[k] - b[k]:>+8.3f}"
        rows.append(row + (f" {base[k]:>8.3f} {a[k] - base[k]:>+8.3f}" if base else ""))
    rows.append(f"held-out problems: {b['num_examples']} ({b['task']}, split {b['split']})")
    if base:
        rows.append("SFT+SFT: the equal-time baseline, SFT continued for the RL stage's wall time; "
                    "RL-base: SFT+RL minus it")
    labels = {"rl_vs_sft": "RL against the SFT model", "rl_vs_baseline": "RL against the equal-time baseline"}
    for name, figures in summary.get("changes", {}).items():
        shown = [f"{k.removeprefix('info/')} {Change(**{f: v for f, v in c.items() if f != 'change'})}"
                 for k, c in figures.items() if k == "success" or k.startswith("info/")]
        rows.append(f"{labels[name]}, greedy, change [95% interval]: " + "; ".join(shown))
    t = summary.get("stage_seconds", {})
    if t:
        rows.append("stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items()))
    return "\n".join(rows)
