"""The ``rlsf`` console script: ``rlsf {pipeline,train,sft,eval,plot,tasks}``.

Every configuration field is a flag ``--SECTION.FIELD VALUE`` with its help text; common ones
have short aliases (``--model``, ``--steps``, ...). ``--config FILE.yaml`` loads a file first;
flags override it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rlsf.config import Config, ConfigError, iter_fields
from rlsf.models import ModelError
from rlsf.tasks import TaskError, available_tasks

COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pipeline": ("SFT, evaluate, RL with symbolic feedback, evaluate again (the main job).",
                 ("model", "task", "sft", "rollout", "reward", "train", "ppo", "grpo", "optim", "eval", "run")),
    "train": ("RL fine-tuning (PPO or GRPO) on token-level symbolic feedback.",
              ("model", "task", "rollout", "reward", "train", "ppo", "grpo", "optim", "run")),
    "sft": ("Supervised fine-tuning on the task's demonstrations.", ("model", "task", "sft", "optim", "run")),
    "eval": ("Evaluate a model: maj@1 (greedy), pass@k and maj@k from k samples.", ("model", "task", "eval", "run")),
}

ALIASES = {
    "--model": ("model.name", "Model: Hugging Face id, local folder or 'smollm2-135m'."),
    "--task": ("task.name", "Task name (see `rlsf tasks`)."),
    "--output-dir": ("run.output_dir", "Run folder."),
    "--seed": ("run.seed", "Random seed."),
    "--lora": ("model.lora", "Train LoRA adapters (true/false)."),
}


def _add_config_args(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file; flags override its values.")
    p.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in the run folder.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    for flag, (dest, help_) in ALIASES.items():
        p.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar="VALUE", help=f"{help_} Same as --{dest}.")
    if command in ("train", "pipeline"):
        p.add_argument("--algorithm", dest="train.algorithm", default=argparse.SUPPRESS, metavar="NAME",
                       help="ppo or grpo. Same as --train.algorithm.")
        p.add_argument("--reward-mode", dest="reward.mode", default=argparse.SUPPRESS, metavar="MODE",
                       help="token or sequence. Same as --reward.mode.")
    steps = {"train": "train.steps", "pipeline": "train.steps", "sft": "sft.steps"}.get(command)
    if steps:
        p.add_argument("--steps", dest=steps, default=argparse.SUPPRESS, metavar="N", help=f"Same as --{steps}.")
    sections = COMMANDS[command][1]
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dotted, typ, default, help_ in iter_fields():
        section = dotted.split(".")[0]
        if section not in sections:
            continue
        g = groups.setdefault(section, p.add_argument_group(f"{section} settings"))
        shown = json.dumps(default) if isinstance(default, (list, dict, bool)) else default
        g.add_argument(f"--{dotted}", dest=dotted, default=argparse.SUPPRESS, metavar="VALUE",
                       help=f"{help_} (default: {shown})".replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlsf", description="Fine-tune language models with reinforcement learning from symbolic feedback.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _add_config_args(p, name)
    pl = sub.add_parser("plot", help="Plot a run's metrics.jsonl to a PNG.", description="Plot a run's metrics to a PNG.")
    pl.add_argument("run_dir", help="Run folder holding metrics.jsonl (e.g. runs/game24/rl).")
    pl.add_argument("--keys", nargs="+", help="Metrics to plot (default: rewards, success, KL, losses, entropy, length).")
    pl.add_argument("--output", help="PNG path (default: RUN_DIR/metrics.png).")
    t = sub.add_parser("tasks", help="List tasks, or show one task's options.", description="List tasks and their options.")
    t.add_argument("--name", help="Show this task's options with their defaults.")
    return parser


def _config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if "." in k}
    if args.resume:
        overrides["run.resume"] = True
    if args.no_progress:
        overrides["run.progress"] = False
    return Config.load(args.config, overrides)


def _tasks(name: str | None) -> None:
    import dataclasses

    tasks = available_tasks()
    if name is None:
        for n, cls in tasks.items():
            doc = (cls.description or (cls.__doc__ or "").strip().splitlines()[0] if (cls.__doc__ or cls.description) else "")
            print(f"{n:<12} {doc}")
        return
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; available: {sorted(tasks)}")
    print(f"{name}: options (set with --task.options '{{key: value}}' or in YAML under task.options)")
    for f in dataclasses.fields(tasks[name].Options):
        default = f.default if f.default is not dataclasses.MISSING else None
        print(f"  {f.name:<22} {default!r:<14} {f.metadata.get('help', '')}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tasks":
            _tasks(args.name)
            return 0
        if args.command == "plot":
            from rlsf.plots import plot_metrics

            print(plot_metrics(args.run_dir, args.keys, args.output))
            return 0
        cfg = _config_from_args(args)
        if args.command == "train":
            from rlsf.trainer import train

            metrics = train(cfg)
            print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("timing/")}, indent=2))
        elif args.command == "sft":
            from rlsf.sft import sft

            print(json.dumps(sft(cfg), indent=2))
        elif args.command == "eval":
            from rlsf.evaluate import evaluate

            print(json.dumps(evaluate(cfg), indent=2))
        elif args.command == "pipeline":
            from rlsf.pipeline import format_summary, pipeline

            print(format_summary(pipeline(cfg)))
    except (ConfigError, TaskError, ModelError, FileNotFoundError) as e:
        print(f"rlsf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlsf: interrupted; continue with --resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
