"""Tasks: data + prompt + symbolic checker, registered by name.

Every module of this package that defines a task registers it when imported, and importing
``rlsf.tasks`` imports them all (no hand-kept list: a new module in this folder is found). Tasks
from installed packages are found through the ``rlsf.tasks`` entry-point group::

    # pyproject.toml of a package that ships tasks
    [project.entry-points."rlsf.tasks"]
    parity = "my_package.parity"          # a module that registers its tasks on import
    # or: parity = "my_package.parity:Parity", a Task class, registered under the entry's name

They are loaded the first time :func:`available_tasks` or :func:`get_task` is called.

**A task of one's own, with no package**: wherever a task name is accepted (``--task``,
``task.name``, ``rlsf tasks --name``) a *spec* works too: ``path/to/file.py:NAME`` or
``package.module:NAME``, NAME a :class:`Task` subclass or a task made with
:func:`~rlsf.tasks.function.function_task`; ``path/to/file.py`` or ``package.module`` alone when it
defines exactly one task. A file is loaded once per process under a module name of its own (its
folder is put at the end of ``sys.path``, so that its sibling modules import); a relative path is
taken from the current directory, and :func:`canonical_spec` makes it absolute for a run's saved
config. A fresh process cannot import such a class by name, so the check service's workers
rebuild it from the spec (:class:`TaskRef`, set on the class as ``__rlsf_factory__``).

Library modules here: ``base`` (the :class:`Task` contract and the registry), ``harness`` (the
property-based test every checker passes), ``function`` (tasks from plain functions),
``sources`` (what each task reads, the data folder, the ``dataset`` option), ``spoc_data`` and
``game24_solver`` (a task's helpers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from rlsf.tasks.base import Example, Task, TaskError, register
from rlsf.tasks.base import available_tasks as _registered
from rlsf.tasks.function import FunctionTask, function_task

#: Modules of this package that define no task.
LIBRARY_MODULES = frozenset({"base", "harness", "spoc_data", "game24_solver", "math_reading", "function",
                             "sources"})

#: The entry-point group installed packages list their tasks under.
ENTRY_POINT_GROUP = "rlsf.tasks"

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in LIBRARY_MODULES:
        importlib.import_module(f"{__name__}.{_module.name}")

_plugins_loaded = False


def load_plugins() -> list[str]:
    """Load the tasks of installed packages (the ``rlsf.tasks`` entry points), once per process.

    Returns the entry points that failed to load; each is reported on standard error in one line
    (a broken plug-in must not take the built-in tasks down with it).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    failed = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001  (any error of a third-party module)
            failed.append(ep.name)
            print(f"rlsf: task plug-in {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if isinstance(obj, type) and issubclass(obj, Task) and obj not in _registered().values():
            register(ep.name)(obj)
    return failed


def available_tasks() -> dict[str, type[Task]]:
    """Every task by name: the built-in ones and those of installed packages."""
    load_plugins()
    return _registered()


# ---- specs: a task from a file or a module of the user's --------------------------------------------

_FILE_SPEC = re.compile(r"(?P<path>.+\.py)(?::(?P<attr>[A-Za-z_]\w*))?")
_MODULE_SPEC = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?::(?P<attr>[A-Za-z_]\w*))?")
_FILES: dict[Path, ModuleType] = {}  # file -> its module, loaded once per process
_FORMS = "a task of your own is path/to/file.py:NAME or package.module:NAME"


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """A picklable recipe for a task that a fresh process cannot import by module and name (a
    class loaded from a user's file): called with options, it resolves ``spec`` again and builds
    the task. The check service's workers are built with it (``__rlsf_factory__`` of the class)."""

    spec: str

    def __call__(self, **options: Any) -> Task:
        return get_task(self.spec, **options)


def canonical_spec(spec: str) -> str:
    """``spec`` with a file's path made absolute (relative paths are taken from the current
    directory), so that a saved config names the same file from anywhere; other names unchanged."""
    m = _FILE_SPEC.fullmatch(spec)
    if m is None or spec in available_tasks():
        return spec
    path = str(Path(m["path"]).expanduser().absolute())
    return path + (f":{m['attr']}" if m["attr"] else "")


def _why(e: BaseException, path: Path | None = None) -> str:
    """One line for an exception raised while importing user code: the error and where."""
    where = ""
    if isinstance(e, SyntaxError):  # its message already names the file and line
        return f"{type(e).__name__}: {e}"
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if path is not None and Path(f.filename) == path] or frames[-1:]
    if own:
        where = f" ({own[-1].filename}:{own[-1].lineno})"
    return f"{type(e).__name__}: {e}{where}"


def _load_file(raw: str) -> tuple[ModuleType, Path]:
    path = Path(raw).expanduser().absolute()
    if path in _FILES:
        return _FILES[path], path
    if not path.is_file():
        rel = "" if Path(raw).expanduser().is_absolute() else f" ({raw!r} is taken from the current directory)"
        raise TaskError(f"task file {path} not found{rel}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"rlsf_task_file_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"task file {path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickle look the module up by name
    if str(path.parent) not in sys.path:  # its sibling modules import, as when the file runs as a script
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # any error of user code; SystemExit of a script too
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise TaskError(f"task file {path} failed to import: {_why(e, path)}") from None
    _FILES[path] = module
    return module, path


def _load_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise TaskError(f"task module {name!r} not found: it is not installed and not on sys.path "
                            f"(add its folder to PYTHONPATH; a file is given as path/to/file.py:NAME)") from None
        raise TaskError(f"task module {name!r} failed to import: {_why(e)}") from None
    except Exception as e:  # noqa: BLE001  (any error of user code)
        raise TaskError(f"task module {name!r} failed to import: {_why(e)}") from None


def _defined_tasks(module: ModuleType) -> dict[str, type[Task]]:
    """The tasks ``module`` defines or imports, by attribute name (those it imports from rlsf left
    out: a user's module imports its bases from there)."""
    found: dict[str, type[Task]] = {}
    for attr, obj in vars(module).items():
        if (isinstance(obj, type) and issubclass(obj, Task) and not inspect.isabstract(obj)
                and (obj.__module__ == module.__name__ or obj.__module__.split(".")[0] != "rlsf")
                and obj not in found.values()):
            found[attr] = obj
    return found


def _importable(cls: type) -> bool:
    """Whether a fresh process finds ``cls`` by module and qualified name (what pickle does)."""
    module = sys.modules.get(cls.__module__)
    return (module is not None and module not in _FILES.values()
            and getattr(module, cls.__qualname__, None) is cls)


def _from_spec(spec: str) -> type[Task] | None:
    """The task class a file or module spec names; ``None`` when ``spec`` is not one."""
    if (m := _FILE_SPEC.fullmatch(spec)) is not None:
        module, path = _load_file(m["path"])
        where, base = f"task file {path}", str(path)
    elif (m := _MODULE_SPEC.fullmatch(spec)) is not None and (":" in spec or "." in spec):
        module = _load_module(m["module"])
        where, base = f"task module {m['module']!r}", m["module"]
    else:
        return None
    found = _defined_tasks(module)
    listed = (f"it defines {', '.join(found)}" if found
              else "it defines no task (a Task subclass, or one made with rlsf.tasks.function_task)")
    attr = m["attr"]
    if attr is None:
        if len(found) != 1:
            raise TaskError(f"{where}: {listed}; name the one to use as {base}:NAME" if found else f"{where}: {listed}")
        attr, cls = next(iter(found.items()))
    else:
        if not hasattr(module, attr):
            raise TaskError(f"{where} has no {attr!r}; {listed}")
        cls = getattr(module, attr)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            kind = type(cls).__name__
            kind = ("an " if kind[0] in "aeiouAEIOU" else "a ") + kind + (
                " (a task object: name its class)" if isinstance(cls, Task) else "")
            raise TaskError(f"{where}: {attr} is {kind}, not a Task subclass or a task made with "
                            f"rlsf.tasks.function_task; {listed}")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TaskError(f"{where}: {attr} is abstract (it lacks {missing}); {listed}")
    if not cls.name:  # an unregistered class: its name in the module names it
        cls.name = attr
    if not _importable(cls) and "__rlsf_factory__" not in vars(cls):
        cls.__rlsf_factory__ = TaskRef(f"{base}:{attr}")
    return cls


def task_class(name: str) -> type[Task]:
    """The task class ``name`` stands for: a registered name (built-in or plug-in), else a spec,
    ``path/to/file.py[:NAME]`` or ``package.module[:NAME]`` (module docstring). Raises
    :class:`TaskError` with one line saying what is wrong: unknown name, missing file, a module that
    fails to import (and why), a missing NAME (with what the file defines)."""
    tasks = available_tasks()
    if name in tasks:
        return tasks[name]
    cls = _from_spec(name) if isinstance(name, str) else None
    if cls is None:
        raise TaskError(f"unknown task {name!r}; available: {sorted(tasks)}; {_FORMS}")
    return cls


def get_task(name: str, **options: Any) -> Task:
    """A task by name or spec (:func:`task_class`), built with ``options`` (see ``rlsf tasks --name NAME``)."""
    return task_class(name)(**options)


__all__ = ["ENTRY_POINT_GROUP", "Example", "FunctionTask", "Task", "TaskError", "TaskRef", "available_tasks",
           "canonical_spec", "function_task", "get_task", "load_plugins", "register", "task_class"]
