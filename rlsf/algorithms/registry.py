"""The algorithm registry: name -> class, and each algorithm's settings section.

Kept apart from the package's ``__init__`` (which imports every algorithm module) so that an
algorithm module can register itself without importing the package that imports it.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Callable

from rlsf.algorithms.base import Algorithm
from rlsf.settings import register_section

ALGORITHMS: dict[str, type[Algorithm]] = {}
#: Entry-point group through which an installed package adds algorithms (``name = "pkg.module"`` or
#: ``name = "pkg.module:Class"``): importing the module registers it, or the named class is
#: registered under the entry point's name.
ENTRY_POINT_GROUP = "rlsf.algorithms"


def register(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: ``@register("my_algo")`` makes ``--algorithm my_algo`` select the class and
    its ``Config`` dataclass the settings section ``my_algo``."""
    def deco(cls: type[Algorithm]) -> type[Algorithm]:
        if name in ALGORITHMS and ALGORITHMS[name] is not cls:
            raise ValueError(f"algorithm {name!r} is already registered")
        cls.name = name
        register_section(name, cls.Config)
        ALGORITHMS[name] = cls
        return cls

    return deco


def load_plugins() -> list[str]:
    """Load the algorithms of installed packages (the ``rlsf.algorithms`` entry points).

    Returns the entry points that failed to load; each is reported on standard error in one line
    (a broken plug-in must not take the built-in algorithms down with it).
    """
    failed = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001  (any error of a third-party module)
            failed.append(ep.name)
            print(f"rlsf: algorithm plug-in {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if isinstance(obj, type) and issubclass(obj, Algorithm) and obj not in ALGORITHMS.values():
            register(ep.name)(obj)
    return failed
