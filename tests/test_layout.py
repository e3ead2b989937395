"""The package's layout holds: layers (import-linter), no import cycles (grimp, function-level
imports included), no module over 600 lines, every package saying what it owns, every module
importable alone, every import of rlsf that benchmarks/, scripts/, the README and docs/ show
resolves, and each command offering only the settings its stage reads."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlsf"
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
)


def strongly_connected(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in adjacency:
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(adjacency.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def test_strongly_connected_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    comps = {tuple(c) for c in strongly_connected(graph)}
    assert ("a", "b", "c") in comps and ("d",) in comps and ("e",) in comps


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it back: lazy
    (function-level) imports count, and so does a package ``__init__`` that imports its modules."""
    import grimp  # a dev dependency: its absence is a failure, not a skip
    graph = grimp.build_graph("rlsf")
    adjacency = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = [c for c in strongly_connected(adjacency) if len(c) > 1 or c[0] in adjacency[c[0]]]
    assert not cycles, f"import cycles: {cycles}"


def test_layers_contract_is_kept():
    """`lint-imports` (import-linter, the contract in pyproject.toml): lower layers never import higher ones."""
    import importlinter  # noqa: F401  (a dev dependency: its absence is a failure, not a skip)
    script = Path(sys.executable).with_name("lint-imports")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from importlinter.cli "
                                                  "import lint_imports_command as c; sys.exit(c())"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_every_package_and_module_says_what_it_owns():
    missing = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"no docstring: {missing}"


def _import_alone(module: str) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return module, (proc.stderr.strip().splitlines() or ["?"])[-1] if proc.returncode else ""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = MODULES  # the __main__ modules too: each runs its command only under `if __name__ == "__main__"`
    assert "rlsf.cli.main" in modules and "rlsf.stages.train" in modules and "rlsf.__main__" in modules
    with ThreadPoolExecutor(2) as pool:
        failures = {m: err for m, err in pool.map(_import_alone, modules) if err}
    assert not failures, failures


def test_light_modules_stay_light():
    """Check workers import a task's module: neither that nor the config's leaf loads torch."""
    code = ("import sys, rlsf, rlsf.settings, rlsf.tasks, rlsf.feedback.service; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_tasks_are_discovered_without_a_list():
    """Every task module of the package registers itself; `rlsf/tasks/__init__.py` names none of them."""
    from rlsf.tasks import LIBRARY_MODULES, available_tasks

    init = (PACKAGE / "tasks" / "__init__.py").read_text()
    modules = {p.stem for p in (PACKAGE / "tasks").glob("*.py")} - LIBRARY_MODULES - {"__init__"}
    registered = {cls.__module__.rsplit(".", 1)[-1] for cls in available_tasks().values()}
    assert modules <= registered
    assert not any(f"import {m}" in init or f"tasks.{m}" in init for m in modules)


def _rlsf_imports_shown() -> dict[tuple[str, str | None], list[str]]:
    """(module, name or None) -> the files that import it: every ``import rlsf...`` and ``from rlsf...
    import name`` in benchmarks/ and scripts/ (parsed) and in the README's and docs' code (each
    statement, a parenthesised list of names included)."""
    found: dict[tuple[str, str | None], list[str]] = {}

    def add(module: str, name: str | None, where: Path) -> None:
        found.setdefault((module, name), []).append(str(where.relative_to(ROOT)))

    for path in sorted([*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("scripts/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "rlsf":
                for alias in node.names:
                    add(node.module, alias.name, path)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "rlsf":
                        add(alias.name, None, path)
    statement = re.compile(r"^[ \t>]*(?:from\s+(rlsf[\w.]*)\s+import\s+(\([^)]*\)|[\w ,]+)|import\s+(rlsf[\w.]*))", re.MULTILINE)
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]:
        for m in statement.finditer(path.read_text()):
            if m.group(3):
                add(m.group(3), None, path)
                continue
            for name in m.group(2).strip("()").replace("\n", " ").split(","):
                if name.split(" as ")[0].strip():
                    add(m.group(1), name.split(" as ")[0].strip(), path)
    return found


def test_imports_shown_in_benchmarks_scripts_and_docs_resolve():
    """What the benchmarks run and the README and docs tell users to import exists (no import of a
    module that moved, e.g. a former ``rlsf.trainer``), checked in a fresh interpreter."""
    found = _rlsf_imports_shown()
    assert len(found) > 20 and ("rlsf", "Config") in found, sorted(found, key=str)  # the scan finds them
    code = ("import importlib, json, sys\n"
            "bad = []\n"
            "for module, name in json.load(sys.stdin):\n"
            "    try:\n"
            "        m = importlib.import_module(module)\n"
            "        if name is not None and name != '*' and not hasattr(m, name):\n"
            "            importlib.import_module(module + '.' + name)\n"
            "    except Exception as e:\n"
            "        bad.append([module, name, f'{type(e).__name__}: {e}'])\n"
            "print(json.dumps(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(list(found)), capture_output=True, text=True,
                          timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = {f"{m}{'.' + n if n else ''} ({', '.join(sorted(set(found[(m, n)])))})": err
           for m, n, err in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert not bad, bad
