"""RL algorithms, registered by name, each with its own settings section.

The package's modules, in the order of an update: ``core`` (masked statistics, KL, entropy,
losses: pure functions over ``[B, T]`` token tensors), ``advantages`` (the advantage-estimator
registry: GAE and the group baselines), ``supervised`` (the completion-only update SFT, Expert
Iteration and RCRL share), ``base`` (the :class:`Algorithm` contract and the clipped
policy-gradient loop), ``registry``, then one module per algorithm.

A new algorithm is one module in this package (every module here is imported, so it
registers itself)::

    @register("my_algo")
    class MyAlgo(Algorithm):                    # or PolicyGradient for a clipped PG variant
        Config = MyAlgoConfig                   # dataclass of opt(...) fields: section `my_algo`
        def step(self, exp, timer): ...         # exp: rlsf.experience.Experience

Its settings become flags (``--my_algo.FIELD``) and YAML keys, and ``--algorithm my_algo``
selects it; the config core, the CLI and the trainer need no edit. An installed package adds
algorithms through the ``rlsf.algorithms`` entry-point group (``[project.entry-points."rlsf.algorithms"]
my_algo = "my_package.my_algo"``): the module is imported when :mod:`rlsf.algorithms` is.
"""

from __future__ import annotations

import importlib
import pkgutil

from rlsf.algorithms import expert_iteration, grpo, ppo, rcrl  # noqa: F401  (each registers itself)
from rlsf.algorithms.base import Algorithm, PolicyGradient
from rlsf.algorithms.registry import ALGORITHMS, load_plugins, register

#: Modules of this package that hold no algorithm.
_LIBRARY = {"advantages", "base", "core", "registry", "supervised"}

# A module dropped into this folder registers itself too, without an edit here.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _LIBRARY:
        importlib.import_module(f"{__name__}.{_module.name}")

# Installed packages' algorithms (the ``rlsf.algorithms`` entry points), before any config is parsed.
load_plugins()

__all__ = ["ALGORITHMS", "Algorithm", "PolicyGradient", "register"]
