"""MkDocs hook: the CLI and configuration references, generated from the code's own help texts.

A page holding ``<!-- rlsf:cli-reference -->`` gets every ``rlsf`` command with its flags (walked
from :func:`rlsf.cli.main.build_parser`); one holding ``<!-- rlsf:config-reference -->`` gets every
settings section with each field's default and help (:func:`rlsf.config.iter_fields`), which
commands read it (:data:`rlsf.stages.STAGE_SETTINGS`), and every registered task's options. Both
are made at build time, so the reference cannot go stale and needs no separate step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

CLI_MARKER = "<!-- rlsf:cli-reference -->"
CONFIG_MARKER = "<!-- rlsf:config-reference -->"
CONFIG_PAGE = "configuration.md"  # the configuration reference, beside the CLI reference


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: no pipes, no raw HTML, no stray emphasis."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("*", "\\*").replace("\n", " "))


def shown_default(value: Any) -> str:
    """A default as YAML/flags would spell it, in backticks."""
    if isinstance(value, (list, dict, bool)) or value is None or value == "":
        value = json.dumps(value)
    return f"`{value}`"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flag_row(action: argparse.Action) -> str:
    metavar = f" {action.metavar or action.dest.upper()}" if action.option_strings and action.nargs != 0 else ""
    flags = ", ".join(f"`{o}{metavar}`" for o in action.option_strings) or f"`{action.dest}`"
    return f"| {flags} | {cell(action.help or '')} |"


def cli_reference() -> str:
    """Every command: its description, its own flags, and the settings it reads, by section."""
    from rlsf.cli.main import build_parser, offered
    from rlsf.config import iter_fields
    from rlsf.stages import STAGE_SETTINGS

    parser = build_parser()
    fields_by_section: dict[str, list[str]] = {}
    for dotted, *_ in iter_fields():
        fields_by_section.setdefault(dotted.split(".")[0], []).append(dotted)
    out = [f"```\n{parser.format_usage().strip()}\n```", "",
           "| flag | what |", "|---|---|"]
    out += [_flag_row(a) for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]
    for name, sub in _subparsers(parser).items():
        out += ["", f"## `rlsf {name}` {{#rlsf-{name}}}", "", cell(sub.description or ""), ""]
        settings = set(offered(name)) if name in STAGE_SETTINGS else set()
        own = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)
               and not (a.option_strings and a.option_strings[0] == f"--{a.dest}" and a.dest in settings)]
        if own:
            out += ["| flag | what |", "|---|---|", *(_flag_row(a) for a in own)]
        if settings:
            out += ["", (f"Settings (each a flag `--SECTION.FIELD VALUE`, or a key of `--config FILE.yaml`; "
                         f"defaults and help in the [configuration reference]({CONFIG_PAGE})):"), "",
                    "| section | settings it reads |", "|---|---|"]
            for section, dotted in fields_by_section.items():
                read = [d for d in dotted if d in settings]
                if not read:
                    continue
                which = "all" if len(read) == len(dotted) else ", ".join(f"`{d.split('.', 1)[1]}`" for d in read)
                out.append(f"| [`{section}`]({CONFIG_PAGE}#{section}) | {which} |")
    return "\n".join(out) + "\n"


def _options_table(options: type) -> list[str]:
    rows = ["| option | default | what |", "|---|---|---|"]
    for f in dataclasses.fields(options):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append(f"| `{f.name}` | {cell(shown_default(default))} | {cell(f.metadata.get('help', ''))} |")
    return rows


def config_reference() -> str:
    """Every settings section (core and registered algorithms), its readers, and every task's options."""
    from rlsf.cli.main import COMMANDS, offered
    from rlsf.config import iter_fields, sections
    from rlsf.settings import CORE_SECTIONS, MOVED
    from rlsf.tasks import available_tasks

    fields: dict[str, list[tuple[str, Any, str]]] = {}
    for dotted, _typ, default, help_ in iter_fields():
        section, _, name = dotted.partition(".")
        fields.setdefault(section, []).append((name, default, help_))
    readers = {c: set(offered(c)) for c in COMMANDS}
    out: list[str] = []
    for section, cls in sections().items():
        kind = "" if section in CORE_SECTIONS else " (algorithm)"
        out += ["", f"## `{section}`{kind} {{#{section}}}", ""]
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{cls.__name__}("):  # a dataclass's generated signature is no help
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        used = [f"`rlsf {c}`" for c, got in readers.items()
                if any(f"{section}.{n}" in got for n, *_ in fields[section])]
        if used:
            out += ["Read by " + ", ".join(used) + ".", ""]
        out += ["| setting | default | what |", "|---|---|---|"]
        out += [f"| `{section}.{n}` | {cell(shown_default(d))} | {cell(h)} |" for n, d, h in fields[section]]
    out += ["", "## Task options {#task-options}", "",
            ("Set under `task.options` in YAML or with `--task.options '{key: value}'`; "
             "`rlsf tasks --name NAME` prints the same list."), ""]
    for name, cls in available_tasks().items():
        out += [f"### `{name}` {{#task-{name}}}", ""]
        doc = cls.description or ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        if doc:
            out += [cell(doc), ""]
        out += [*_options_table(cls.Options), ""]
    out += ["## Settings that moved {#moved}", "",
            "A config file or flag that still names one of these is refused with the line below.", "",
            "| former setting | where it went |", "|---|---|"]
    out += [f"| `{k}` | {cell(v)} |" for k, v in MOVED.items()]
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the placeholders of the reference pages."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    return markdown
