"""What a task is: data, prompt rendering, a symbolic checker and (optionally) demonstrations.

A new task is a subclass of :class:`Task` registered by name with :func:`register`. It
declares its options as a dataclass (``Options``) so that configs are typed and checked::

    @register("my_task")
    class MyTask(Task):
        @dataclass
        class Options:
            data_path: str | None = opt(None, "Where the data lives.")   # rlsf.config.opt: help text

        def load(self, split): ...
        def prompt(self, example): ...
        def check(self, example, completion): ...   # -> Certificate, never raises
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Callable

from rlsf.feedback.certificate import Certificate

Example = dict[str, Any]
Messages = list[dict[str, str]]

_REGISTRY: dict[str, type["Task"]] = {}


class TaskError(ValueError):
    """Bad task data or options: the message says which file, row or option."""


class Task(ABC):
    """Base class of every task. Subclasses set ``name`` via :func:`register`."""

    name: str = ""
    description: str = ""

    @dataclasses.dataclass
    class Options:
        pass

    def __init__(self, **options: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TaskError(
                f"task {self.name!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}"
            )
        self.options = self.Options(**options)

    @abstractmethod
    def load(self, split: str) -> list[Example]:
        """Return the examples of ``split`` (``"train"`` or ``"test"``)."""

    @abstractmethod
    def prompt(self, example: Example) -> Messages:
        """Chat messages for ``example`` (rendered with the tokenizer's chat template)."""

    @abstractmethod
    def check(self, example: Example, completion: str) -> Certificate:
        """Symbolic feedback on ``completion``. Must not raise on any completion text."""

    def demonstration(self, example: Example) -> str | None:
        """A correct completion for supervised fine-tuning, or ``None`` if there is none."""
        return None


def register(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_tasks() -> dict[str, type[Task]]:
    return dict(sorted(_REGISTRY.items()))


def get_task(name: str, **options: Any) -> Task:
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**options)
