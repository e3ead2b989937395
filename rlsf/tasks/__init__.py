"""Tasks: data + prompt + symbolic checker, registered by name.

Every module of this package that defines a task registers it when imported, and importing
``rlsf.tasks`` imports them all (no hand-kept list: a new module in this folder is found). Tasks
from installed packages are found through the ``rlsf.tasks`` entry-point group::

    # pyproject.toml of a package that ships tasks
    [project.entry-points."rlsf.tasks"]
    parity = "my_package.parity"          # a module that registers its tasks on import
    # or: parity = "my_package.parity:Parity", a Task class, registered under the entry's name

They are loaded the first time :func:`available_tasks` or :func:`get_task` is called.
Library modules here: ``base`` (the :class:`Task` contract and the registry), ``harness`` (the
property-based test every checker passes), ``spoc_data`` and ``game24_solver`` (a task's helpers).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import Any

from rlsf.tasks.base import Example, Task, TaskError, register
from rlsf.tasks.base import available_tasks as _registered

#: Modules of this package that define no task.
LIBRARY_MODULES = frozenset({"base", "harness", "spoc_data", "game24_solver", "math_reading"})

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


def get_task(name: str, **options: Any) -> Task:
    """A task by name, built with ``options`` (see ``rlsf tasks --name NAME``)."""
    tasks = available_tasks()
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; available: {sorted(tasks)}")
    return tasks[name](**options)


__all__ = ["ENTRY_POINT_GROUP", "Example", "Task", "TaskError", "available_tasks", "get_task", "load_plugins",
           "register"]
