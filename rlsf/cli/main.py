"""The ``rlsf`` console script: ``rlsf {pipeline,train,sft,eval,orm,experiment,check,plot,tasks}``.

Every setting a command's stage reads is a flag ``--SECTION.FIELD VALUE`` with its help text, and
no other (:data:`rlsf.stages.STAGE_SETTINGS`; a flag the command would ignore is refused with a
line naming the commands that read it). Common ones
have short aliases (``--model``, ``--steps``, ...). ``--config FILE.yaml`` loads a file first;
flags override it. The sections of registered algorithms (``--ppo.*``, ``--grpo.*``, ...) come
from the algorithm registry, so a new algorithm needs no edit here.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

from rlsf.config import Config, iter_fields, moved_to, packaged_configs, sections
from rlsf.errors import RlsfError
from rlsf.runtime.extras import missing_extras
from rlsf.settings import CORE_SECTIONS, ConfigError
from rlsf.stages import STAGE_SETTINGS
from rlsf.tasks import available_tasks, task_class


def _algorithm_sections() -> tuple[str, ...]:
    return tuple(s for s in sections() if s not in CORE_SECTIONS)


#: Command -> its description. The settings each offers are its stage's (:data:`STAGE_SETTINGS`).
COMMANDS: dict[str, str] = {
    "pipeline": "SFT, evaluate, RL with symbolic feedback, evaluate again (the main job).",
    "train": "RL fine-tuning on token-level symbolic feedback (any registered algorithm).",
    "sft": "Supervised fine-tuning on the task's demonstrations.",
    "eval": "Evaluate a model with the task's metrics: greedy (maj@1), pass@k and selector@k (maj@k) from k samples.",
    "orm": "Train an outcome reward model: sample solutions from --model, label them with the task's checker, "
           "fit a scalar head (for reward.orm and the rerank selector's eval.orm).",
    "experiment": "Compare arms (algorithms x rewards) from one SFT checkpoint under a fixed sample budget: "
                  "held-out figures against samples, a markdown table and a plot. Resumes where it stopped.",
    "check": "Check completions with a task's checker and print the certificates.",
}


def offered(command: str) -> list[str]:
    """The settings (``section.field``) a command offers: exactly those its stage reads."""
    wanted = []
    for item in STAGE_SETTINGS[command]:
        wanted += list(_algorithm_sections()) if item == "algorithm" else [item]
    out = []
    for dotted, *_ in iter_fields():
        if dotted in wanted or dotted.split(".")[0] in wanted:
            out.append(dotted)
    return out


def misplaced(command: str, dotted: str) -> str:
    """Why ``--dotted`` is refused by ``rlsf command``: where the setting belongs instead."""
    if (moved := moved_to(dotted)) is not None:
        return f"--{dotted}: this setting moved; {moved}"
    users = [c for c in COMMANDS if dotted in offered(c)]
    if not users:
        return f"--{dotted}: no such setting (`rlsf {command} --help` lists this command's settings)"
    return (f"--{dotted} is not a setting of `rlsf {command}`, which does not read it; it belongs to "
            + ", ".join(f"`rlsf {c}`" for c in users))


ALIASES = {
    "--model": ("model.name", "Model: Hugging Face id, local folder or 'smollm2-135m'."),
    "--task": ("task.name", "Task name (see `rlsf tasks`), or path/to/file.py:NAME or package.module:NAME."),
    "--output-dir": ("run.output_dir", "Run folder (default: runs/<task name>)."),
    "--seed": ("run.seed", "Random seed."),
    "--lora": ("model.lora", "Train LoRA adapters (true/false)."),
}


def _add_config_args(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file, or a packaged one by name (" +
                   ", ".join(packaged_configs()) + "); flags override its values.")
    settings = offered(command)
    if "run.resume" in settings:
        p.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in the run folder.")
    if "run.progress" in settings:
        p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    for flag, (dest, help_) in ALIASES.items():
        if dest in settings:
            p.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"{help_} Same as --{dest}.")
    if command in ("train", "pipeline", "experiment"):
        names = ", ".join(_algorithm_sections())
        p.add_argument("--algorithm", dest="train.algorithm", default=argparse.SUPPRESS, metavar="NAME",
                       help=f"{names}. Same as --train.algorithm.")
        p.add_argument("--reward-mode", dest="reward.mode", default=argparse.SUPPRESS, metavar="MODE",
                       help="token or sequence. Same as --reward.mode.")
        p.add_argument("--reward-preset", dest="reward.preset", default=argparse.SUPPRESS, metavar="PRESET",
                       help="signed or rlsf. Same as --reward.preset.")
    steps = {"train": "train.steps", "pipeline": "train.steps", "sft": "sft.steps"}.get(command)
    if steps:
        p.add_argument("--steps", dest=steps, default=argparse.SUPPRESS, metavar="N", help=f"Same as --{steps}.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dotted, typ, default, help_ in iter_fields():
        section = dotted.split(".")[0]
        if dotted not in settings:
            continue
        g = groups.setdefault(section, p.add_argument_group(f"{section} settings"))
        shown = json.dumps(default) if isinstance(default, (list, dict, bool)) or default == "" else default
        g.add_argument(f"--{dotted}", dest=dotted, default=argparse.SUPPRESS, metavar="VALUE",
                       help=f"{help_} (default: {shown})".replace("%", "%%"))


def _add_check_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to check")
    g.add_argument("--example", metavar="ID", help="The example's id (the `id` of `rlsf eval`'s samples file).")
    g.add_argument("--completion", metavar="FILE", help="File holding the completion text; '-' reads standard input.")
    g.add_argument("--input", metavar="FILE.jsonl", help='Many completions: one {"example": ID, "completion": TEXT} '
                   "a line; one certificate a line is written (a bad line is reported by number, the rest carry on).")
    g.add_argument("--output", metavar="FILE.jsonl", help="With --input: where to write (default: standard output).")
    g.add_argument("--json", action="store_true", help="Print the certificate as JSON.")
    g.add_argument("--judge", action="store_true", help="The evaluation certificate (e.g. SPoC's hidden tests) "
                   "instead of the training one.")
    g.add_argument("--feedback", "--turns", dest="feedback", action="store_true", help="Also print the feedback "
                   "turn the task gives after this completion in a self-repair episode (rollout.turns > 1).")
    g.add_argument("--tokens", action="store_true", help="Tokenise the completion with the model's tokenizer "
                   "(--model) and show each token with the reward it gets (coloured in a terminal).")
    g.add_argument("--image", metavar="FILE", help="Also draw the completion with its certificate (tasks that "
                   "draw, e.g. the chemistry tasks: the molecule beside the reference, flagged atoms in red; "
                   ".png or .svg).")


def version() -> str:
    """The installed package's version (its metadata), else ``rlsf.__version__`` (a source checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("rlsf")
    except PackageNotFoundError:
        import rlsf

        return rlsf.__version__


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix such as --step is an unknown flag with a suggestion, never silently --steps.
    parser = argparse.ArgumentParser(
        prog="rlsf", description="Fine-tune language models with reinforcement learning from symbolic feedback.",
        allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"rlsf {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, allow_abbrev=False)
        if name == "check":
            _add_check_args(p)
        _add_config_args(p, name)
    pl = sub.add_parser("plot", help="Plot a run's metrics.jsonl to a PNG.", description="Plot a run's metrics to a PNG.",
                        allow_abbrev=False)
    pl.add_argument("run_dir", help="Run folder holding metrics.jsonl (e.g. runs/game24/rl).")
    pl.add_argument("--keys", nargs="+", help="Metrics to plot (default: rewards, success, KL, losses, entropy, length).")
    pl.add_argument("--output", help="PNG path (default: RUN_DIR/metrics.png).")
    t = sub.add_parser("tasks", help="List tasks, or show one task's options.", description="List tasks and their options.",
                       allow_abbrev=False)
    t.add_argument("--name", help="Show this task's options with their defaults.")
    from rlsf.cli.data import add_data_parser  # rlsf data [TASK]

    add_data_parser(sub)
    from rlsf.cli.report import add_report_parser  # rlsf report RUN_DIR

    add_report_parser(sub)
    return parser


def _config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if "." in k}
    if getattr(args, "resume", False):
        overrides["run.resume"] = True
    if getattr(args, "no_progress", False):
        overrides["run.progress"] = False
    cfg = Config.load(args.config, overrides)
    if "algorithm" in STAGE_SETTINGS[args.command]:
        # A flag for another algorithm's section would be ignored: say so instead.
        chosen = cfg.train.algorithm
        for key in overrides:
            section = key.split(".")[0]
            if section in _algorithm_sections() and section != chosen:
                raise ConfigError(f"--{key} is a setting of algorithm {section}, but train.algorithm is {chosen}: "
                                  f"it would be ignored (use --{chosen}.{key.partition('.')[2]}, or --algorithm "
                                  f"{section})")
    return cfg


def command_flags(parser: argparse.ArgumentParser, command: str) -> list[str]:
    """Every ``--flag`` of ``rlsf command`` (settings, short forms and the command's own)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [o for a in sub._actions for o in a.option_strings if o.startswith("--")]


def suggest(flag: str, flags: list[str]) -> str:
    """``"; did you mean --x?"`` for the flag closest to ``flag`` (difflib), or ``""``."""
    close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing a setting the command does not read with a line naming where it belongs, and
    an unknown flag with the closest one the command has."""
    args, rest = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    for token in rest:
        name = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if "." in name and command in STAGE_SETTINGS:
            hint = "" if moved_to(name) or any(name in offered(c) for c in COMMANDS) else \
                suggest(f"--{name}", command_flags(parser, command))
            parser.exit(2, f"rlsf {command}: error: {misplaced(command, name)}{hint}\n")
        if name and command is not None:
            parser.exit(2, f"rlsf {command}: error: unknown flag --{name}{suggest(f'--{name}', command_flags(parser, command))} "
                           f"(`rlsf {command} --help` lists them)\n")
    if rest:
        parser.parse_args(argv)  # argparse's own message for anything else
    return args


def _check_model_paths(cfg: Config, command: str) -> None:
    """Refuse a local model (or ORM) folder that does not exist now, before any probe or loading."""
    from rlsf.models.loading import check_model_reference

    settings = offered(command)
    for dotted in ("model.name", "eval.orm", "reward.orm"):
        section, _, name = dotted.partition(".")
        value = getattr(cfg.section(section), name)
        if dotted in settings and value:
            check_model_reference(value, dotted)


def _tasks(name: str | None) -> None:
    import dataclasses

    if name is None:
        for n, cls in available_tasks().items():
            doc = cls.description or ((cls.__doc__ or "").strip().splitlines() or [""])[0]
            extras, missing = missing_extras(cls)  # e.g. (needs rlsf[chem]: not installed)
            shown = "".join(f" (needs rlsf[{e}]{': not installed' if e in missing else ''})" for e in extras)
            print(f"{n:<12} {doc}{shown}")
        return
    cls = task_class(name)  # a registered name, or a spec: path/to/file.py:NAME, package.module:NAME
    print(f"{cls.name or name}: splits {', '.join(cls.splits)}; metrics: 0/1 {', '.join(cls.binary_metrics)}, "
          "others graded")
    print("options (set with --task.options '{key: value}' or in YAML under task.options):")
    for f in dataclasses.fields(cls.Options):
        default = f.default if f.default is not dataclasses.MISSING else None
        print(f"  {f.name:<22} {default!r:<14} {f.metadata.get('help', '')}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(build_parser(), argv)
    try:
        if args.command == "tasks":
            _tasks(args.name)
            return 0
        if args.command == "data":
            from rlsf.cli.data import run_data

            return run_data(args)
        if args.command == "plot":
            from rlsf.runtime.plots import plot_metrics

            print(plot_metrics(args.run_dir, args.keys, args.output))
            return 0
        if args.command == "report":
            from rlsf.cli.report import run_report

            return run_report(args)
        cfg = _config_from_args(args)
        _check_model_paths(cfg, args.command)
        if args.command == "check":
            from rlsf.cli.check import run_check_command

            return run_check_command(cfg, args)
        if args.command == "train":
            from rlsf.stages.train import train

            metrics = train(cfg)
            print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("timing/")}, indent=2))
        elif args.command == "sft":
            from rlsf.stages.sft import sft

            print(json.dumps(sft(cfg), indent=2))
        elif args.command == "experiment":
            from rlsf.stages.experiment import run_experiment

            run_experiment(cfg)
            root = Path(cfg.run.output_dir)
            print((root / "table.md").read_text(), end="")
            print(f"figures: {root / 'results.json'}, plots: {root / 'plot.png'}, {root / 'plot_training.png'}")
        elif args.command == "orm":
            from rlsf.stages.orm import train_orm

            print(json.dumps(train_orm(cfg), indent=2))
        elif args.command == "eval":
            from rlsf.stages.evaluate import evaluate

            print(json.dumps(evaluate(cfg), indent=2))
        elif args.command == "pipeline":
            from rlsf.stages.pipeline import format_summary, pipeline

            print(format_summary(pipeline(cfg)))
    except (RlsfError, FileNotFoundError) as e:
        print(f"rlsf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlsf: interrupted; continue with --resume from the last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rlsf check --json ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
