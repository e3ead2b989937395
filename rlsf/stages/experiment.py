"""A comparison of RL algorithms and rewards from one SFT checkpoint under one sample budget
(``rlsf experiment --config configs/havrilla.yaml``): Havrilla et al.'s main table, re-run here.

Top to bottom::

    sft/              SFT on the task's demonstrations (skipped with sft.steps 0: model.name is the start)
    eval/sft.json     the start's held-out figures: every arm's point at 0 samples
    orm/              an outcome reward model on the start's samples (experiment.orm): the reward of
                      the arms that name it (reward.orm: orm) and the rerank@k of every evaluation
    arms/<name>/      each arm trained from the start (or from its own model.name, e.g. the base
                      model), experiment.samples sampled completions in all,
                      stopping experiment.evaluations times to be evaluated: eval/<name>@<samples>.json
    results.json, table.md, plot.png (held-out figures against samples), plot_kl.png (held-out
    figure against training KL), plot_training.png (training reward, entropies, collapse and KL by step);
    rewritten after every arm, so a long run can be read before it ends

With experiment.tokens the budget is sampled tokens instead of completions (train.token_budget): each
arm trains until it has sampled that many, evaluated at evenly spaced token counts
(eval/<name>@<tokens>tok.json), and the table and plot.png count tokens; arms whose episodes differ in
length (single-turn against self-repair, rollout.turns) then compare at equal sampling cost.

With experiment.seeds every arm runs once per seed (ARM-sSEED) and the table and plots give its
mean and spread over seeds. Every stage is skipped when its output exists, and an arm's training
resumes from its last checkpoint, so the command resumes where it stopped (``--resume`` is
implied); settings.json records the settings of the start and of each arm, and a resumed run that
changed them is refused. An arm's checkpoints are deleted after its last evaluation (its model
stays) unless experiment.keep_checkpoints. Every evaluation uses the same held-out problems, seed,
k and selectors.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from rlsf.algorithms import ALGORITHMS
from rlsf.config import Config
from rlsf.runtime import distributed
from rlsf.runtime.metric_log import note
from rlsf.settings import ConfigError, require
from rlsf.stages.evaluate import evaluate
from rlsf.stages.pipeline import with_settings
from rlsf.stages.sft import sft
from rlsf.stages.train import train


def arm_config(cfg: Config, settings: dict[str, Any]) -> Config:
    """``cfg`` with an arm's settings; ``task.options.KEY`` sets one task option."""
    out = copy.deepcopy(cfg)
    for key, value in (settings or {}).items():
        if key.startswith("task.options."):
            out.task.options = {**out.task.options, key.split(".", 2)[2]: value}
        else:
            out.set(key, value)
    return out


def eval_points(samples: int, batch: int, evaluations: int) -> list[int]:
    """Training steps at which an arm is evaluated: ``evaluations`` evenly spaced, the last at the budget."""
    steps = samples // batch
    return sorted({max(1, round(steps * (i + 1) / evaluations)) for i in range(evaluations)})


def token_points(tokens: int, evaluations: int) -> list[int]:
    """Sampled-token counts at which an arm is evaluated (``experiment.tokens``): evenly spaced."""
    return sorted({max(1, round(tokens * (i + 1) / evaluations)) for i in range(evaluations)})


def last_step(metrics: Path) -> tuple[int, dict[str, int]]:
    """The last training step of a run and what it had sampled by then (samples, tokens)."""
    from rlsf.runtime.metric_log import read_metrics

    rows = read_metrics(metrics) if metrics.is_file() else []
    last = rows[-1] if rows else {}
    return int(last.get("step", 0)), {"samples": int(last.get("samples", 0)), "tokens": int(last.get("sampled_tokens", 0))}


def expand_arms(arms: dict[str, Any], seeds: list[int]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Run name -> (arm, settings): each arm once, or once per seed (``ARM-sSEED``, seed-major, so a
    run stopped early has every arm at its first seeds)."""
    if not seeds:
        return {name: (name, dict(settings or {})) for name, settings in arms.items()}
    return {f"{name}-s{seed}": (name, {**(settings or {}), "run.seed": seed}) for seed in seeds
            for name, settings in arms.items()}


def step_samples(cfg: Config) -> int:
    """Completions one training step of a run with these settings samples: one rollout batch, or for
    an Expert Iteration round over every training problem (``expert_iteration.rounds: full``) that
    many problems x ``rollout.samples_per_prompt``."""
    def train_size() -> int:
        from rlsf.stages.context import load_split, load_task

        task = load_task(cfg)
        return len(load_split(cfg, task, task.splits[0], cfg.task.train_examples))

    return ALGORITHMS[cfg.train.algorithm].samples_per_step(cfg, train_size)


def check_experiment(cfg: Config) -> None:
    x = cfg.experiment
    require(isinstance(x.seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in x.seeds)
            and len(set(x.seeds)) == len(x.seeds), "experiment.seeds", "must be a list of distinct integers")
    require(bool(x.arms) and isinstance(x.arms, dict), "experiment.arms", "name at least one arm: {name: {settings}}")
    for name, settings in x.arms.items():
        require(isinstance(settings, dict), f"experiment.arms.{name}", "must be a mapping of settings")
        require("/" not in str(name), f"experiment.arms.{name}", "an arm's name is a folder name: no '/'")
        require(not (x.seeds and "run.seed" in (settings or {})), f"experiment.arms.{name}",
                "sets run.seed, but experiment.seeds gives every arm its seeds")
        uses_orm = (settings or {}).get("reward.orm") == "orm"
        require(not uses_orm or x.orm, f"experiment.arms.{name}", "uses reward.orm: orm but experiment.orm is false")
        try:
            arm = arm_config(cfg, settings)
            arm.validate()
        except ConfigError as e:
            raise ConfigError(f"experiment.arms.{name}: {e}") from None
        if x.tokens:
            require(x.tokens > 0, "experiment.tokens", "must be >= 0 (0: the samples budget)")
            require(not (arm.train.algorithm == "rcrl" and arm.rcrl.variant == "offline"), f"experiment.arms.{name}",
                    "offline RCRL fits once at its last step (train.steps): it needs the samples budget, not "
                    "experiment.tokens")
            continue
        per = step_samples(arm)
        require(x.samples >= per and x.samples % per == 0, "experiment.samples",
                f"must be a positive multiple of the {per} completions one training step of arm {name} samples "
                f"({ALGORITHMS[arm.train.algorithm].procedure(arm)})")
        require(1 <= x.evaluations <= x.samples // per, "experiment.evaluations",
                f"must be between 1 and the {x.samples // per} training steps of arm {name}")


# Settings that may change between two runs of one experiment without making its results stale.
FREE = {"run.output_dir", "run.resume", "run.loggers", "run.progress", "train.steps", "train.token_budget",
        "train.save_every",
        "model.threads", "eval.batch_size", "rollout.generation_batch_size", "check.workers"}
START_SECTIONS = ("model.", "task.", "sft.", "eval.", "orm.", "run.seed")


def settings_of(cfg: Config, prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A run's settings as dotted keys, those that change its results (``prefixes``: only these)."""
    flat = {f"{sec}.{k}": v for sec, d in cfg.to_dict().items() if sec != "experiment" for k, v in d.items()}
    return {k: v for k, v in flat.items() if k not in FREE and (prefixes is None or k.startswith(prefixes))}


def guard_settings(root: Path, key: str, settings: dict[str, Any], remedy: str) -> None:
    """Refuse to reuse what ``key`` (the start, or an arm) made under other settings: a resumed
    experiment must not mix results of two configurations. Records the settings the first time."""
    path = root / "settings.json"
    recorded = _read(path) or {}
    before = recorded.get(key)
    if before is None:
        path.write_text(json.dumps({**recorded, key: settings}, indent=1, default=str) + "\n")
        return
    changed = [f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(before) | set(settings))
               if json.dumps(before.get(k), default=str) != json.dumps(settings.get(k), default=str)]
    if changed:
        raise ConfigError(f"{root}: {key} was run with other settings ({'; '.join(changed[:4])}"
                          f"{'; ...' if len(changed) > 4 else ''}): {remedy}")


def run_experiment(cfg: Config) -> dict[str, Any]:
    cfg.validate()
    distributed.setup(cfg.model.device)
    distributed.require_single_process("rlsf experiment")
    check_experiment(cfg)
    x = cfg.experiment
    root = Path(cfg.run.output_dir)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    cfg.save(root / "config.yaml")
    times: dict[str, float] = _read(root / "times.json") or {}

    def timed(name: str, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        (root / "times.json").write_text(json.dumps(times, indent=2) + "\n")
        return out

    guard_settings(root, "start", settings_of(cfg, START_SECTIONS),
                   "the start (SFT, ORM, evaluation settings) is shared by every arm; use another run.output_dir")
    start = cfg.model.name
    if cfg.sft.steps > 0:
        start = str(root / "sft" / "model")
        if not (root / "sft" / "model" / "config.json").is_file():
            note(f"experiment: SFT of {cfg.model.name} for {cfg.sft.steps} steps")
            timed("sft", sft, with_settings(cfg, **{"run.output_dir": str(root / "sft"), "run.resume": True}))
    orm_dir = root / "orm"
    eval_settings: dict[str, Any] = {"model.lora": False}
    if x.orm:
        if not (orm_dir / "head.pt").is_file():
            note("experiment: outcome reward model")
            from rlsf.stages.orm import train_orm

            timed("orm", train_orm, with_settings(cfg, **{"model.name": start, "model.lora": False,
                                                  "run.output_dir": str(orm_dir), "run.resume": True}))
        eval_settings.update({"eval.orm": str(orm_dir), "eval.selectors": _with(cfg.eval.selectors, "rerank")})

    def held_out(name: str, model: str, base: Config, condition: str = "") -> dict[str, Any]:
        path = root / "eval" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        note(f"experiment: evaluating {name}")
        settings = {**eval_settings, "model.name": model, "eval.condition": condition}
        return timed(f"eval:{name.split('@')[0]}", evaluate, with_settings(base, **settings), output=path)

    results: dict[str, Any] = {"sft": held_out("sft", start, cfg), "arms": {}, "table": list(x.table),
                               "start": "SFT (start)" if cfg.sft.steps > 0 else f"{cfg.model.name} (start)"}
    prompts = prompt_texts(cfg) if x.examples else None  # read once: the table is rewritten after every arm
    for name, (group, settings) in expand_arms(x.arms, x.seeds).items():
        arm = arm_config(cfg, settings)
        batch = step_samples(arm)  # completions per training step: a rollout batch, or a round over every problem
        if arm.reward.orm == "orm":
            arm.reward.orm = str(orm_dir)
        arm_dir = root / "arms" / name
        guard_settings(root, f"arm {name}", settings_of(arm),
                       f"delete {arm_dir} and its evaluations {root / 'eval' / (name + '@*')}, or rename the arm")
        arm_start = settings.get("model.name", start)  # an arm may start elsewhere, e.g. the base model
        condition = ALGORITHMS[arm.train.algorithm].evaluation_condition(arm)
        curve = [{"samples": 0, **({"tokens": 0} if x.tokens else {}), **results["sft"]}]
        previous = 0
        for point in (token_points(x.tokens, x.evaluations) if x.tokens else eval_points(x.samples, batch, x.evaluations)):
            label, limits = (f"{name}@{point}tok", {"train.steps": 10**9, "train.token_budget": point}) if x.tokens \
                else (f"{name}@{point * batch}", {"train.steps": point})
            if not (root / "eval" / f"{label}.json").is_file():
                note(f"experiment: arm {name}: training to " + (f"{point} sampled tokens" if x.tokens else
                                                                 f"{point} steps ({point * batch} samples)"))
                timed(f"train:{name}", train, with_settings(arm, **{
                    "model.name": arm_start, "run.output_dir": str(arm_dir), "run.resume": True, **limits,
                    "train.save_every": 0}))
            steps, reached = last_step(arm_dir / "metrics.jsonl") if x.tokens else (point, {"samples": point * batch})
            curve.append({**reached, **held_out(label, str(arm_dir / "model"), arm, condition),
                          **training_figures(arm_dir / "metrics.jsonl", previous, steps)})
            previous = steps
        if not x.keep_checkpoints:  # the arm is done: its model stays, its optimiser state is not needed
            shutil.rmtree(arm_dir / "checkpoints", ignore_errors=True)
        if arm_start != start:  # its own start is its point at 0 samples (shared by arms starting there)
            curve[0] = {"samples": 0, **({"tokens": 0} if x.tokens else {}), **held_out("start-" + re.sub(r"[^\w.-]+", "_", arm_start), arm_start, cfg)}
        results["budget"] = "tokens" if x.tokens else "samples"
        results["arms"][name] = {"arm": group, "settings": settings, "curve": curve,
                                 "procedure": ALGORITHMS[arm.train.algorithm].procedure(arm)}
        results["times_s"] = times
        write_results(root, results, x.examples, prompts)
    return results


def write_results(root: Path, results: dict[str, Any], examples: int = 0,
                  prompts: dict[str, str] | None = None) -> None:
    """results.json, table.md and the plots of the arms run so far (``prompts``: the examples' prompt
    texts by id, see prompt_texts)."""
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = format_table(results)
    if examples:
        table += "\n\n" + format_examples(root, results, examples, prompts)
    (root / "table.md").write_text(table + "\n")
    try:
        plot_experiment(results, root / "plot.png")
        plot_reward_kl(results, root / "plot_kl.png")
        plot_training(root, results, root / "plot_training.png")
    except ImportError as e:
        note(f"experiment: no plot ({e})")


def _with(items: list[str], item: str) -> list[str]:
    return list(items) + ([item] if item not in items else [])


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _keys(results: dict[str, Any]) -> list[str]:
    """The table's figures that some evaluation has (train/KEY: those of the arms' training)."""
    k = results["sft"].get("k", 0)
    points = [results["sft"]] + [p for arm in results["arms"].values() for p in arm["curve"]]
    return [key.format(k=k) for key in results["table"] if any(key.format(k=k) in p for p in points)]


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per arm (its last evaluation) and the SFT start; times per stage below."""
    sft_figs = results["sft"]
    keys = _keys(results)
    unit = "tokens" if results.get("budget") == "tokens" else "samples"
    head = f"| arm | {unit} | " + " | ".join(keys) + " |"
    start = results.get("start", "SFT (start)")
    rows = [head, "|" + "---|" * (len(keys) + 2),
            f"| {start} | 0 | " + " | ".join(_mean_sd([sft_figs.get(k, math.nan)]) for k in keys) + " |"]
    others = {}  # arms' own starts (e.g. the base model), each shown once
    for arm in results["arms"].values():
        name = (arm.get("settings") or {}).get("model.name")
        if name and {k: v for k, v in arm["curve"][0].items() if k != "tokens"} != {"samples": 0, **sft_figs}:
            others.setdefault(name, arm["curve"][0])
    for name, figs in others.items():
        rows.append(f"| {name} (start) | 0 | " + " | ".join(_mean_sd([figs.get(k, math.nan)]) for k in keys) + " |")
    groups = arm_groups(results)
    for group, names in groups.items():
        lasts = [results["arms"][n]["curve"][-1] for n in names]
        label = group if len(groups) == len(results["arms"]) else f"{group} ({len(names)} seeds)"
        rows.append(f"| {label} | {lasts[0].get(unit, '-')} | " + " | ".join(
            _mean_sd([last.get(k, math.nan) for last in lasts]) for k in keys) + " |")
    rows.append("")
    procedures = {g: results["arms"][names[0]].get("procedure") for g, names in groups.items()}
    if any(procedures.values()):
        rows.append("Arms: " + "; ".join(f"{g}: {p}" for g, p in procedures.items() if p) + ".")
    if len(groups) < len(results["arms"]):
        rows.append("Mean ± standard deviation over seeds (results.json has every run).")
    rows.append(f"Held-out: {sft_figs['num_examples']} problems of {sft_figs['task']} ({sft_figs['split']}), "
                f"k = {sft_figs.get('k', 0)} samples at temperature {sft_figs.get('temperature', '-')}.")
    times = results.get("times_s", {})
    if times:
        rows.append("Time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
                    + f"; total {sum(times.values()) / 60:.1f} min.")
    return "\n".join(rows)


def training_figures(metrics: Path, after: int, upto: int) -> dict[str, float]:
    """``train/KEY``: the mean of each training metric over the steps after ``after`` up to ``upto``
    (those since the previous evaluation), e.g. train/kl, train/batch/answer_mode_share."""
    from rlsf.runtime.metric_log import read_metrics

    rows = [r for r in (read_metrics(metrics) if metrics.is_file() else []) if after < r.get("step", 0) <= upto]
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    return {f"train/{k}": sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


def arm_groups(results: dict[str, Any]) -> dict[str, list[str]]:
    """Arm -> its runs (one per seed), in run order."""
    groups: dict[str, list[str]] = {}
    for name, arm in results["arms"].items():
        groups.setdefault(arm.get("arm", name), []).append(name)
    return groups


def _mean_sd(values: list[float]) -> str:
    if any(math.isnan(v) for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {sd:.3f}"


def _samples(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` greedy completions of an evaluation's samples file."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "greedy"][:n]


def prompt_texts(cfg: Config) -> dict[str, str]:
    """Held-out example id -> the text of its last prompt message (the problem as the model saw it)."""
    from rlsf.stages.context import load_split, load_task

    task = load_task(cfg)
    return {str(ex["id"]): task.prompt(ex)[-1]["content"] for ex in load_split(cfg, task, cfg.eval.split)}


def format_examples(root: Path, results: dict[str, Any], n: int, prompts: dict[str, str] | None = None) -> str:
    """Markdown: for the first ``n`` held-out problems (with their prompt text, when ``prompts`` has
    it), the start's greedy completion and each arm's last (its first seed's), with its score."""
    def text(s: str, limit: int) -> str:
        return " ".join(s.split()).replace("|", "\\|")[:limit]

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return "-"
        return f"{text(row['completion'], 120)} ({row['certificate']['score']:+.2f})"

    start = results.get("start", "SFT (start)")
    columns = {start: _samples(root / "eval" / "sft_samples.jsonl", n)}
    for group, names in arm_groups(results).items():  # with seeds, an arm's first seed
        last = results["arms"][names[0]]["curve"][-1]["samples"]
        columns[group] = _samples(root / "eval" / f"{names[0]}@{last}_samples.jsonl", n)
    ids = [r["id"] for r in columns[start]]
    lines = ["| problem | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for i, pid in enumerate(ids):
        problem = f"{pid}: {text(prompts[str(pid)], 80)}" if prompts and str(pid) in prompts else str(pid)
        lines.append(f"| {problem} | " + " | ".join(cell(rows[i] if i < len(rows) else None) for rows in columns.values())
                     + " |")
    return "Greedy completions (score in brackets):\n\n" + "\n".join(lines)


def plot_reward_kl(results: dict[str, Any], path: Path) -> Path | None:
    """Each arm's held-out figure (the table's first) against its KL to the start (train/kl, the mean
    over the training steps before that evaluation), one point per evaluation from the start at KL 0;
    with seeds, the means over them."""
    keys = _keys(results)
    if not keys:
        return None
    key = keys[0]
    lines = {}
    for group, names in arm_groups(results).items():
        curves = [results["arms"][n]["curve"] for n in names]
        pts = [(0.0, sum(c[0][key] for c in curves) / len(curves))] if all(key in c[0] for c in curves) else []
        for i in range(1, min(len(c) for c in curves)):
            if all("train/kl" in c[i] and key in c[i] for c in curves):
                pts.append((sum(c[i]["train/kl"] for c in curves) / len(curves),
                            sum(c[i][key] for c in curves) / len(curves)))
        if len(pts) > 1:
            lines[group] = pts
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for group, pts in lines.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=group)
    ax.set_xlabel("KL to the start during training (nats per completion)")
    ax.set_ylabel(f"held-out {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_experiment(results: dict[str, Any], path: Path) -> Path:
    """One panel per table figure: held-out value against sampled training completions, a line per arm."""
    unit = "tokens" if results.get("budget") == "tokens" else "samples"

    def runs(key: str, names: list[str]) -> list[dict[float, float]]:
        return [{p[unit]: p[key] for p in results["arms"][n]["curve"] if key in p} for n in names]

    return _panels(results, _keys(results), runs, "sampled training " + ("tokens" if unit == "tokens" else "completions"),
                   path, marker="o")


TRAINING_KEYS = ("reward/score", "batch/answer_mode_share", "entropy", "batch_entropy", "kl", "reward/success")


def plot_training(root: Path, results: dict[str, Any], path: Path, keys: tuple[str, ...] = TRAINING_KEYS) -> Path | None:
    """One panel per training metric against the step: each arm's mean over its seeds, its range shaded.
    batch/answer_mode_share is collapse: the share of a batch giving its most common answer."""
    from rlsf.runtime.metric_log import read_metrics

    metrics: dict[str, list[dict[str, Any]]] = {}
    for name in results["arms"]:
        file = root / "arms" / name / "metrics.jsonl"
        metrics[name] = read_metrics(file) if file.is_file() else []
    present = [k for k in keys if any(k in r for rows in metrics.values() for r in rows)]
    if not present:
        return None

    def runs(key: str, names: list[str]) -> list[dict[float, float]]:
        return [{r["step"]: r[key] for r in metrics[n] if key in r} for n in names]

    return _panels(results, present, runs, "training step", path)


def _panels(results: dict[str, Any], keys: list[str], runs, xlabel: str, path: Path, **style) -> Path:
    """A grid of panels, one per key; in each, one line per arm: ``runs(key, names)`` gives its
    runs (one per seed) as {x: y}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for group, names in arm_groups(results).items():
            _band(ax, runs(key, names), group, **style)
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, runs: list[dict[float, float]], label: str, **style) -> None:
    """The mean over ``runs`` (x -> y) at the x every run has, and their min-max range shaded."""
    xs = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    if not xs:
        return
    mean = [sum(r[x] for r in runs) / len(runs) for x in xs]
    (line,) = ax.plot(xs, mean, label=label, **style)
    if len(runs) > 1:
        ax.fill_between(xs, [min(r[x] for r in runs) for x in xs], [max(r[x] for r in runs) for x in xs],
                        color=line.get_color(), alpha=0.15)
