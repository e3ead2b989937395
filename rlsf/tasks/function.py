"""Tasks from plain functions: a checker function, a dataset and a prompt template, no subclass::

    from rlsf.feedback import Certificate, Span
    from rlsf.tasks import function_task

    def check(row, completion):                       # -> a score, or a Certificate with spans
        if not any(c.isdigit() for c in completion):
            return Certificate.no_attempt("prose", "no number")
        return float(completion.strip() == str(row["a"] + row["b"]))

    Add = function_task("add", check, data=[{"a": 2, "b": 3}, ...], prompt="What is {a} + {b}?")

and ``rlsf train --task my_tasks.py:Add`` trains on it (:func:`rlsf.tasks.task_class`).

**The reward contract** holds before the function runs: an empty or blank completion, or one that
only restates the prompt, gets :meth:`Certificate.no_attempt` and the function is not called.
Everything else that attempts nothing -- prose, a refusal, "I don't know", a question back -- the
function must return as ``Certificate.no_attempt(verdict, message, completion)``: no attempt
earns less than any attempt, right or wrong, and silence must never pay.

**What the function returns**: a :class:`Certificate` is used as it is (spans give token-level
feedback); a number (or a bool) ``s`` becomes ``Certificate(s, "correct" | "wrong", correct=s >=
success_threshold)`` with no span (sequence-level feedback only; the default threshold 1.0 suits a
0/1 or 0..1 score). A function that raises, or returns anything else (``None``, NaN), gives a
*checker failed* certificate naming the function and the line (the sample is left out of the
update, as for any checker failure) and one line on standard error, once per function and error.

**Data** (``data``): a list of dicts, a JSONL, JSON (a list of rows) or CSV file (CSV values are
strings), a Hugging Face ``datasets.Dataset``, a callable returning one of those (read on first
use), or a dict ``split -> any of those`` (a ``DatasetDict`` is one). A relative path is looked up
beside the file that calls :func:`function_task`, then in the current directory. A dict gives the
splits (``train`` first when there is one: RL and SFT train on the first); anything else is split
into ``train`` and ``test`` by a seeded shuffle, ``test_size`` rows (a fraction below 1, else a
count) going to ``test``. A row's ``id`` is kept when it has one, else it is ``SPLIT:N``. The task
option ``dataset`` (a Hub name or a local path read by ``datasets``, :mod:`rlsf.tasks.sources`)
replaces ``data`` without touching the code.

**Prompt**: a ``str.format`` template over the row's fields (the user message; ``system`` adds a
system message), or a callable ``row -> str | messages``. A row the template cannot fill is
reported as malformed and skipped. **Demonstrations** for SFT: a field name, or a callable ``row
-> str | None``. ``test_size``, ``seed`` and ``success_threshold`` are task options too
(``--task.options '{seed: 1}'``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from rlsf.feedback.certificate import Certificate
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, user_text
from rlsf.tasks.sources import DataSpec, dataset_rows

CheckFunction = Callable[[Example, str], "Certificate | float | bool"]
_HELP = {"test_size": "Rows of a single dataset held out as the test split: a fraction below 1, else a count "
                      "(ignored when the data names its splits).",
         "seed": "Seed of the train/test shuffle.",
         "success_threshold": "A score the check function returns counts as correct from here up."}
_REPORTED: set[tuple] = set()  # (task, function, error type) already reported on stderr


@dataclasses.dataclass(frozen=True)
class Definition:
    """What :func:`function_task` was given (a class attribute of the task it makes)."""

    check: CheckFunction
    data: Any
    prompt: str | Callable[[Example], str | Messages]
    system: str | None = None
    demonstration: str | Callable[[Example], str | None] | None = None
    base_dir: Path | None = None  # relative data paths are looked up here first


def _where(fn: Callable, e: BaseException | None = None) -> str:
    """``qualname (file:line)`` of a user's function: the line that raised, when it did."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if code is None:
        return name
    line = code.co_firstlineno
    if e is not None:
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == code.co_filename]
        line = lines[-1] if lines else line
    return f"{name} ({code.co_filename}:{line})"


def _format(template: str, row: Example) -> str:
    try:
        return template.format(**row)
    except KeyError as e:
        raise _MissingField(e.args[0]) from None


class _MissingField(Exception):
    pass


class FunctionTask(Task):
    """A task made by :func:`function_task` (see the module docstring); subclass it for more
    (``near_misses``, ``metrics``, ``open``/``close``)."""

    definition: ClassVar[Definition]

    @dataclasses.dataclass
    class Options(Task.Options):
        test_size: float = opt(0.2, _HELP["test_size"])
        seed: int = opt(0, _HELP["seed"])
        success_threshold: float = opt(1.0, _HELP["success_threshold"])

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if isinstance(o.test_size, bool) or not isinstance(o.test_size, (int, float)) or not o.test_size > 0:
            raise TaskError(f"task {self.name!r}: option test_size must be a fraction in (0, 1) or a count >= 1, "
                            f"got {o.test_size!r}")
        if isinstance(o.seed, bool) or not isinstance(o.seed, int):
            raise TaskError(f"task {self.name!r}: option seed must be an integer, got {o.seed!r}")
        if (isinstance(o.success_threshold, bool) or not isinstance(o.success_threshold, (int, float))
                or not math.isfinite(o.success_threshold)):
            raise TaskError(f"task {self.name!r}: option success_threshold must be a finite number, got "
                            f"{o.success_threshold!r}")
        self._splits: dict[str, list[Example]] = {}
        self._pool: list[Any] | None = None  # the rows of a dataset without splits, read once
        self._source, self._bad = "", []

    # ---- data ----------------------------------------------------------------------------------------
    def _path(self, source: str | os.PathLike) -> Path:
        path = Path(source).expanduser()
        base = self.definition.base_dir
        for candidate in ([base / path] if base is not None and not path.is_absolute() else []) + [path]:
            if candidate.is_file():
                return candidate
        looked = f"{base / path} and {path.absolute()}" if base is not None and not path.is_absolute() else str(path)
        raise TaskError(f"task {self.name!r}: data file {os.fspath(source)!r} not found (looked at {looked})")

    def _read(self, source: Any) -> tuple[list[Any], str, list[str]]:
        """Rows of one data source, where they came from, and the lines of unreadable ones."""
        if callable(source) and not isinstance(source, (Mapping, list, tuple)) and not hasattr(source, "to_list"):
            try:
                source = source()
            except Exception as e:  # noqa: BLE001  (a user's function)
                raise TaskError(f"task {self.name!r}: data function {_where(source, e)} raised "
                                f"{type(e).__name__}: {e}") from None
        if isinstance(source, (str, os.PathLike)):
            path = self._path(source)
            suffix = path.suffix.lower()
            text = path.read_text(encoding="utf-8", errors="replace")
            if suffix == ".jsonl":
                rows, bad = [], []
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as e:
                            bad.append(f"line {n}: not JSON ({e})")
                return rows, str(path), bad
            if suffix == ".json":
                rows = json.loads(text)
                if not isinstance(rows, list):
                    raise TaskError(f"task {self.name!r}: {path} must hold a list of rows (for splits give a dict "
                                    "split -> file)")
                return rows, str(path), []
            if suffix == ".csv":
                return list(csv.DictReader(text.splitlines())), str(path), []
            raise TaskError(f"task {self.name!r}: data file {path}: expected .jsonl, .json or .csv")
        if hasattr(source, "to_list"):  # a datasets.Dataset (without importing datasets)
            return list(source.to_list()), type(source).__name__, []
        if isinstance(source, (list, tuple)):
            return list(source), "the rows given to function_task", []
        raise TaskError(f"task {self.name!r}: data must be a list of dicts, a .jsonl/.json/.csv path, a "
                        f"datasets.Dataset, a callable returning one, or a dict split -> one of those; got "
                        f"{type(source).__name__}")

    def _rows(self, split: str) -> tuple[list[Any], str, list[str]]:
        data = self.definition.data
        if isinstance(data, Mapping):
            got = dataset_rows(self, split)  # option dataset replaces the data given in code
            return ([r for _, r in got.items], got.source, []) if got is not None else self._read(data[split])
        if self._pool is None:
            got = dataset_rows(self, "all")
            self._pool, self._source, self._bad = (([r for _, r in got.items], got.source, []) if got is not None
                                                   else self._read(data))
        n, size = len(self._pool), self.options.test_size
        k = max(1, round(size * n)) if size < 1 else int(size)
        if k >= n:
            raise TaskError(f"task {self.name!r}: test_size {size} leaves no training rows of the {n} in "
                            f"{self._source}")
        order = list(range(n))
        random.Random(self.options.seed).shuffle(order)
        chosen = sorted(order[:k] if split == "test" else order[k:])
        return [self._pool[i] for i in chosen], self._source, self._bad

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._splits:
            rows, source, bad = self._rows(split)
            bad = list(bad)
            examples: list[Example] = []
            seen: set[str] = set()
            for n, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    bad.append(f"row {n}: a {type(row).__name__}, not a mapping of fields")
                    continue
                ex = {**row, "id": row.get("id", f"{split}:{n}")}
                if str(ex["id"]) in seen:
                    bad.append(f"row {n}: id {ex['id']!r} repeats an earlier row's")
                    continue
                if isinstance(self.definition.prompt, str):
                    try:
                        _format(self.definition.prompt, ex)
                    except _MissingField as e:
                        bad.append(f"row {n}: the prompt needs field {e.args[0]!r}; the row has {sorted(row)}")
                        continue
                seen.add(str(ex["id"]))
                examples.append(ex)
            self._splits[split] = self.keep_split(split, examples, bad, source)
        return [dict(ex) for ex in self._splits[split]]

    # ---- model interface -----------------------------------------------------------------------------
    def prompt(self, example: Example) -> Messages:
        d = self.definition
        if isinstance(d.prompt, str):
            try:
                text: Any = _format(d.prompt, example)
            except _MissingField as e:
                raise TaskError(f"task {self.name!r}: the prompt needs field {e.args[0]!r}; the example has "
                                f"{sorted(example)}") from None
            except (IndexError, ValueError) as e:  # '{}' or a stray brace: the template's fault
                raise TaskError(f"task {self.name!r}: prompt template {d.prompt!r}: {e} (double a literal "
                                "brace: {{ }})") from None
        else:
            try:
                text = d.prompt(example)
            except Exception as e:  # noqa: BLE001  (a user's function)
                raise TaskError(f"task {self.name!r}: prompt function {_where(d.prompt, e)} raised "
                                f"{type(e).__name__}: {e}") from None
        if isinstance(text, str):
            return ([{"role": "system", "content": d.system}] if d.system else []) + [{"role": "user", "content": text}]
        if isinstance(text, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in text):
            return text
        raise TaskError(f"task {self.name!r}: prompt function {_where(d.prompt)} returned {type(text).__name__}, "
                        "not a string or a list of {'role': ..., 'content': ...} messages")

    def demonstration(self, example: Example) -> str | None:
        demo = self.definition.demonstration
        if demo is None:
            return None
        if isinstance(demo, str):
            value = example.get(demo)
            return None if value is None else str(value)
        try:
            value = demo(example)
        except Exception as e:  # noqa: BLE001  (a user's function)
            raise TaskError(f"task {self.name!r}: demonstration function {_where(demo, e)} raised "
                            f"{type(e).__name__}: {e}") from None
        return None if value is None else str(value)

    def check(self, example: Example, completion: str) -> Certificate:
        # The reward contract first: these never reach the user's function.
        if not isinstance(completion, str) or not completion.strip():
            blank = isinstance(completion, str) and completion != ""
            return Certificate.no_attempt("blank" if blank else "empty", "no reply")
        if _words(completion) == _words(user_text(self.prompt(example))):
            return Certificate.no_attempt("copies_prompt", "the prompt restated", completion)
        fn = self.definition.check
        try:
            out = fn(example, completion)
        except Exception as e:  # noqa: BLE001  (a user's function: a bug there is not the model's fault)
            return self._failed(f"raised {type(e).__name__}: {e}", type(e).__name__, e)
        if isinstance(out, Certificate):
            return out
        if isinstance(out, (bool, int, float)) and math.isfinite(float(out)):
            ok = float(out) >= self.options.success_threshold
            return Certificate(float(out), "correct" if ok else "wrong", ok)
        return self._failed(f"returned {out!r:.80} ({type(out).__name__}): return a score, a Certificate, or "
                            "Certificate.no_attempt(...) for a reply that attempts nothing", "return")

    def _failed(self, what: str, kind: str, e: BaseException | None = None) -> Certificate:
        fn = self.definition.check
        message = f"check function {_where(fn, e)} {what}"[:500]
        key = (self.name, getattr(fn, "__qualname__", repr(fn)), kind)
        if key not in _REPORTED:  # once per process: the same bug would print on every sample
            _REPORTED.add(key)
            print(f"rlsf: task {self.name}: {message} (a checker failure: such samples are left out)", file=sys.stderr)
        return Certificate.checker_failed(message)


def _words(text: str) -> str:
    return " ".join(text.split()).lower()


def function_task(name: str, check: CheckFunction, data: Any, prompt: str | Callable[[Example], str | Messages], *,
                  system: str | None = None, demonstration: str | Callable[[Example], str | None] | None = None,
                  test_size: float = 0.2, seed: int = 0, success_threshold: float = 1.0,
                  description: str = "") -> type[FunctionTask]:
    """A :class:`Task` class made from a checker function ``check(row, completion)`` (returning a
    :class:`Certificate` or a score), ``data`` and a ``prompt`` template (module docstring).
    ``test_size``, ``seed`` and ``success_threshold`` are the defaults of its options. Use it by
    spec (``--task FILE.py:VARIABLE``) or build it like any task class (``MyTask(seed=1)``); to
    list it under ``name`` (``--task name`` once the module is imported), ``register(name)(MyTask)``."""
    if not isinstance(name, str) or not name.strip():
        raise TaskError(f"function_task: name must be a non-empty string, got {name!r}")
    if not callable(check):
        raise TaskError(f"function_task {name!r}: check must be a function (row, completion) -> Certificate | "
                        f"float, got {type(check).__name__}")
    if not (isinstance(prompt, str) or callable(prompt)):
        raise TaskError(f"function_task {name!r}: prompt must be a str.format template or a function row -> str, "
                        f"got {type(prompt).__name__}")
    if demonstration is not None and not (isinstance(demonstration, str) or callable(demonstration)):
        raise TaskError(f"function_task {name!r}: demonstration must be a field name or a function row -> str")
    caller = sys._getframe(1).f_globals  # the user's module: the class lives there, its data beside it
    module, file = caller.get("__name__", __name__), caller.get("__file__")
    splits: tuple[str, ...] = ("train", "test")
    if isinstance(data, Mapping):
        if not data:
            raise TaskError(f"function_task {name!r}: data is an empty dict of splits")
        splits = tuple(sorted(map(str, data), key=lambda s: s != "train"))
    defaults = {"test_size": (float, test_size), "seed": (int, seed), "success_threshold": (float, success_threshold)}
    options = dataclasses.make_dataclass("Options", [(key, typ, opt(value, _HELP[key]))
                                                     for key, (typ, value) in defaults.items()],
                                         bases=(FunctionTask.Options,))
    cls_name = re.sub(r"\W", "_", name) if not name.isidentifier() else name
    options.__module__, options.__qualname__ = module, f"{cls_name}.Options"
    base_dir = Path(file).resolve().parent if file else None
    cls = type(cls_name, (FunctionTask,), {
        "__module__": module, "__qualname__": cls_name, "__doc__": description or f"Task {name!r} (function_task).",
        "Options": options, "splits": splits, "description": description,
        "definition": Definition(check, data, prompt, system, demonstration, base_dir),
        "data_spec": DataSpec(f"The data given to function_task {name!r} (option dataset replaces it).",
                              {s: () for s in splits} if isinstance(data, Mapping) else {"all": ()},
                              pooled=not isinstance(data, Mapping)),
    })
    cls.name = name
    return cls
