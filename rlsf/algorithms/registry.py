"""The algorithm registry: name -> class, and each algorithm's settings section.

Kept apart from the package's ``__init__`` (which imports every algorithm module) so that an
algorithm module can register itself without importing the package that imports it.
"""

from __future__ import annotations

from typing import Callable

from rlsf.algorithms.base import Algorithm
from rlsf.settings import register_section

ALGORITHMS: dict[str, type[Algorithm]] = {}


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
