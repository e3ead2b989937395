"""The documentation: the README stays a front page whose links resolve, the MkDocs site builds
with ``--strict`` (no broken link, anchor, image or page), and the generated CLI and configuration
references cover every command and every setting."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _needs(*modules: str) -> None:
    """Skip where the docs toolchain is not installed (a plain `pip install rlsf`), fail in CI."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed (the dev extra has them)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


def relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links and images that point into the repository (no URL, no
    in-page anchor), without their ``#anchor``; links inside code blocks are not links."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_finds_links_but_not_urls_anchors_or_code():
    text = "[a](docs/x.md#y) ![b](img.png) [c](https://e.org) [d](#here)\n```\n[e](no.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "img.png"]


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    for heading in ("## Quick start", "## Install", "## Documentation"):
        assert heading in lines, heading
    assert "bash scripts/main.sh" in README.read_text() and "bash scripts/test.sh" in README.read_text()


def test_every_relative_link_of_the_readme_resolves():
    links = relative_links(README.read_text())
    assert len(links) > 20, links  # the scan finds them
    missing = sorted({t for t in links if not (ROOT / t).exists()})
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: any warning (a broken link or anchor, a missing image or page, a
    docstring mkdocstrings cannot read) fails, as in CI; the generated references are filled in."""
    _needs("mkdocs", "material", "mkdocstrings_handlers.python")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    config = (site / "reference" / "configuration" / "index.html").read_text()
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "rlsf:cli-reference" not in cli and "rlsf-pipeline" in cli and "--completion" in cli
    assert "rlsf:config-reference" not in config and "ppo.lr" in config and "task-game24" in config
    assert "function_task" in api and "Certificate" in api


def _reference_hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_references_cover_every_command_setting_and_task_option():
    from rlsf.cli.main import COMMANDS
    from rlsf.config import iter_fields
    from rlsf.tasks import available_tasks

    hook = _reference_hook()
    cli, config = hook.cli_reference(), hook.config_reference()
    for command in [*COMMANDS, "plot", "tasks"]:
        assert f"## `rlsf {command}`" in cli, command
    for dotted, *_ in iter_fields():
        assert f"| `{dotted}` |" in config, dotted
    for name, cls in available_tasks().items():
        assert f"### `{name}`" in config, name
        for option in cls.Options.__dataclass_fields__:
            assert f"| `{option}` |" in config.split(f"### `{name}`", 1)[1], (name, option)
    page = hook.on_page_markdown(f"# X\n\n{hook.CONFIG_MARKER}\n", None, None, None)
    assert hook.CONFIG_MARKER not in page and "`model.name`" in page


def test_table_cells_are_escaped():
    hook = _reference_hook()
    assert hook.cell("a | b <c> *d*\ne") == "a \\| b &lt;c&gt; \\*d\\* e"
    assert hook.shown_default("") == '`""`' and hook.shown_default([1]) == "`[1]`" and hook.shown_default(3) == "`3`"
