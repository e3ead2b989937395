"""RL algorithms, registered by name, each with its own settings section.

A new algorithm is one module in this package (every module here is imported, so it
registers itself)::

    @register("my_algo")
    class MyAlgo(Algorithm):                    # or PolicyGradient for a clipped PG variant
        Config = MyAlgoConfig                   # dataclass of opt(...) fields: section `my_algo`
        def step(self, exp, timer): ...         # exp: rlsf.experience.Experience

Its settings become flags (``--my_algo.FIELD``) and YAML keys, and ``--algorithm my_algo``
selects it; the config core, the CLI and the trainer need no edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from rlsf.algorithms.base import Algorithm, PolicyGradient
from rlsf.config import register_section

ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    def deco(cls: type[Algorithm]) -> type[Algorithm]:
        if name in ALGORITHMS and ALGORITHMS[name] is not cls:
            raise ValueError(f"algorithm {name!r} is already registered")
        cls.name = name
        register_section(name, cls.Config)
        ALGORITHMS[name] = cls
        return cls

    return deco


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "core"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALGORITHMS", "Algorithm", "PolicyGradient", "register"]
