"""What a task is: data, prompt rendering, a symbolic checker, metrics and (optionally) demonstrations.

A new task is a subclass of :class:`Task` registered by name with :func:`register`. It
declares its options as a dataclass (``Options``, inheriting :class:`Task.Options` so that it
has ``data_dir``) so that configs are typed and checked::

    @register("my_task")
    class MyTask(Task):
        @dataclass
        class Options(Task.Options):
            n: int = opt(100, "Number of problems.")     # rlsf.config.opt: help text

        def load(self, split): ...
        def prompt(self, example): ...
        def check(self, example, completion): ...   # -> Certificate, never raises on model text

**Data convention** (every task): a task's files live in a data folder with one sub-folder per
source (``game24/24.csv``, ``spoc/...``, ``gsm8k/...``). That folder is the option
``data_dir``, else the environment variable ``RLSF_DATA_DIR``; where a packaged copy of the data
exists (Game of 24 ships in ``tree-of-thoughts-llm``) it is the fallback. :meth:`Task.data_file`
implements the rule and says where it looked when nothing is found. The option ``dataset`` takes
the rows from Hugging Face ``datasets`` instead (a Hub name or any local format it reads); what
each task reads, and where to get it, is :mod:`rlsf.tasks.sources` (``rlsf data TASK``).

**Life cycle**: a task object is cheap to build (options only; data loads on first use). A
checker that needs resources (a temporary directory, a compiler cache) acquires them in
:meth:`Task.open` and releases them in :meth:`Task.close`. The check service calls ``open`` once
in every worker process before its first check, with a private folder that the service deletes
when it shuts down (even if a worker was killed), and ``close`` when it ends the worker (a worker
killed for a time-out does not get to close: keep resources inside the folder).
``with task: ...`` does the same in the current process.

**Evaluation**: :meth:`Task.metrics` turns one certificate into named figures; those named in
``binary_metrics`` are 0/1 (pass@k applies to them), the others are graded (mean, best of k).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

from rlsf.feedback.certificate import Certificate, feedback_text
from rlsf.settings import opt
from rlsf.tasks.sources import DATA_ENV, DatasetOption, DataSpec, TaskError, dataset_option, locate

Example = dict[str, Any]
Messages = list[dict[str, str]]

#: Replies that attempt no task (see :meth:`Task.degenerate_replies`).
GENERIC_NON_ATTEMPTS = {
    "empty": "",
    "blank": " \n\t\n",
    "unknown": "I don't know.",
    "refusal": "I'm sorry, but I can't help with that request.",
    "prose": "Let me think about this step by step. This is an interesting problem, and the answer is clear.",
    "question back": "Could you clarify what you mean?",
}


def user_text(messages: Messages) -> str:
    """The last user message of a prompt (what a copy of the prompt restates)."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else (messages[-1]["content"] if messages else "")


_REGISTRY: dict[str, type["Task"]] = {}
_REPORTED: set[tuple] = set()  # malformed-row reports already printed (task, file, count, first)


def describe_ids(ids: list[str], runs: int = 3, shown: int = 3) -> str:
    """Example ids in a few words: consecutive numbers as ranges (``901-1000``, ``test:1-1319``),
    else the first few and the count."""
    parts: list[tuple[str, int, int]] = []  # (prefix, first, last) of runs of consecutive numbered ids
    for text in ids:
        m = re.fullmatch(r"(.*?)(\d+)", text)
        if m is None or (m.group(2).startswith("0") and m.group(2) != "0"):
            parts = []
            break
        prefix, n = m.group(1), int(m.group(2))
        if parts and parts[-1][0] == prefix and parts[-1][2] + 1 == n:
            parts[-1] = (prefix, parts[-1][1], n)
        else:
            parts.append((prefix, n, n))
    if parts and len(parts) <= runs:
        return ", ".join(f"{p}{a}" if a == b else f"{p}{a}-{b}" for p, a, b in parts)
    return f"{len(ids)} ids, e.g. " + ", ".join(ids[:shown])


class Task(ABC):
    """Base class of every task. Subclasses set ``name`` via :func:`register`."""

    name: str = ""
    description: str = ""
    #: Splits :meth:`load` accepts; the first is the one RL and SFT train on.
    splits: tuple[str, ...] = ("train", "test")
    #: Metrics of :meth:`metrics` that are 0/1 per completion (pass@k and votes apply to them).
    binary_metrics: tuple[str, ...] = ("success",)
    #: What the task reads, for a task of one's own (built-in tasks: :data:`rlsf.tasks.sources.SOURCES`).
    data_spec: ClassVar[DataSpec | None] = None

    @dataclasses.dataclass
    class Options:
        data_dir: str | None = opt(None, f"Data folder with one sub-folder per source, e.g. gsm8k/test.jsonl (default: ${DATA_ENV}, then a "
                                         "packaged copy where one exists).")
        dataset: DatasetOption | dict | str | None = opt(
            None, "Rows from Hugging Face datasets instead of the data folder: a Hub name, a local path (a "
                  "save_to_disk folder, a data file, a folder of them), or {path, name, splits, columns, data_files, "
                  "revision, kwargs} (`rlsf data TASK` shows the task's fields and Hub copy; docs/data.md).")

    def __init__(self, **options: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TaskError(
                f"task {self.name!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}"
            )
        self.options = self.Options(**options)
        self.malformed: dict[str, list[str]] = {}  # split -> one line per malformed row (see keep_split)
        if self.options.data_dir is not None and not isinstance(self.options.data_dir, (str, os.PathLike)):
            raise TaskError(f"task {self.name!r}: option data_dir must be a path, got {self.options.data_dir!r}")
        if self.options.dataset is not None:
            self.options.dataset = dataset_option(self)

    # ---- data ----------------------------------------------------------------------------------
    @abstractmethod
    def load(self, split: str) -> list[Example]:
        """The examples of ``split`` (one of :attr:`splits`); each has a unique ``id``."""

    def keep_split(self, split: str, examples: list[Example], bad: list[str], source: str) -> list[Example]:
        """Accept a freshly read split: report its malformed rows (``bad``: one line each, naming
        the row) on standard error, keep them in ``self.malformed[split]``, and refuse a split
        with no usable row. Returns ``examples``."""
        if not examples:
            raise TaskError(f"task {self.name!r}: no usable {split} rows in {source}"
                            + (f" (first problem: {bad[0]})" if bad else ""))
        report = (self.name, source, len(bad), bad[0]) if bad else None
        if report and report not in _REPORTED:  # once per process: every stage reloads its splits
            _REPORTED.add(report)
            print(f"rlsf: {self.name}: {source}: {len(bad)} malformed rows skipped (first: {bad[0]})", file=sys.stderr)
        self.malformed[split] = bad
        return examples

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise TaskError(f"task {self.name!r}: unknown split {split!r}; splits: {', '.join(self.splits)}")

    def example(self, example_id: Any) -> Example:
        """The example whose ``id`` is ``example_id`` (compared as text), from any split."""
        key = str(example_id).strip()
        known = []
        for split in self.splits:
            examples = self.load(split)
            ids = [str(ex.get("id")) for ex in examples]
            if key in ids:
                return examples[ids.index(key)]
            known.append(f"{split}: {describe_ids(ids)}")
        raise TaskError(f"task {self.name!r}: no example with id {key!r}; ids are {'; '.join(known)} (the `id` "
                        "of `rlsf eval`'s samples file)")

    def data_file(self, relative: str, packaged: Callable[[], Path | None] | None = None, hint: str = "") -> Path:
        """Locate ``relative`` (e.g. ``"game24/24.csv"``) by the data convention (module docstring).

        An explicit ``data_dir`` option is used alone; ``$RLSF_DATA_DIR`` falls back to the
        packaged copy. Raises :class:`TaskError` naming every place looked at.
        """
        found, tried = locate(relative, self.options.data_dir, packaged)
        if found is not None:
            return found
        if self.options.data_dir is not None:
            raise TaskError(f"task {self.name!r}: {tried[0][0]} not found (option data_dir={self.options.data_dir!r})")
        where = "; ".join(f"{path} ({label})" for path, label, _ in tried) or f"nowhere: ${DATA_ENV} is not set"
        raise TaskError(f"task {self.name!r}: cannot find {relative}; looked in {where}. Set {DATA_ENV} to a "
                        f"data folder with one sub-folder per source (docs/data.md; `rlsf data {self.name}`), or "
                        f"the task option data_dir.{' ' + hint if hint else ''}")

    # ---- model interface -----------------------------------------------------------------------
    @abstractmethod
    def prompt(self, example: Example) -> Messages:
        """Chat messages for ``example`` (rendered with the tokenizer's chat template)."""

    @abstractmethod
    def check(self, example: Example, completion: str) -> Certificate:
        """Symbolic feedback on ``completion``. Must not raise on any completion text."""

    def judge(self, example: Example, completion: str) -> Certificate:
        """The certificate evaluation uses (held-out tests, where a task has them); by default the
        training certificate, :meth:`check`."""
        return self.check(example, completion)

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """The next user turn of a self-repair episode (``rollout.turns`` > 1) after ``completion``
        was checked and found not correct: what the checker found, where and why, and a request to
        answer again. The default lists the certificate's error spans (line, flagged text, message:
        :func:`rlsf.feedback.certificate.feedback_text`); override it to phrase a tool's output the
        way the task's users read it. Must not raise on any completion."""
        return feedback_text(completion, certificate)

    def demonstration(self, example: Example) -> str | None:
        """A correct completion for supervised fine-tuning, or ``None`` if there is none."""
        return None

    # ---- reward ordering (checked by rlsf.tasks.harness.reward_ordering) ------------------------
    def degenerate_replies(self, example: Example) -> dict[str, str]:
        """Replies that make no attempt at the task (name: text). :meth:`check` must give each a
        :meth:`~rlsf.feedback.certificate.Certificate.no_attempt` certificate, so that each earns
        less than any attempt. A task whose answer form is prose (a review's continuation) drops
        the prose entries."""
        return {**GENERIC_NON_ATTEMPTS, "prompt restated": user_text(self.prompt(example))}

    def near_misses(self, example: Example) -> dict[str, str]:
        """Honest attempts in the task's answer form that are nearly right (one slip): each must be
        an attempt, not correct, and earn more than every :meth:`reward_hacks` reply."""
        return {}

    def reward_hacks(self, example: Example) -> dict[str, str]:
        """Replies a policy under RL pressure finds first (a long unrelated valid answer, an input
        copied back, numbers from the question): each must earn less than every near miss."""
        return {}

    # ---- evaluation ----------------------------------------------------------------------------
    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        """Named figures of one checked completion (averaged over examples by evaluation)."""
        return {"success": float(certificate.correct), "score": float(certificate.score)}

    def corpus_metrics(self, examples: list[Example], texts: list[str],
                       certificates: list[Certificate]) -> dict[str, float]:
        """Figures over a whole evaluation set, one completion per example, that are not means of
        :meth:`metrics` (e.g. corpus BLEU); evaluation reports them as ``greedy/<name>``."""
        return {}

    #: File name suffix of the picture :meth:`draw` writes (e.g. ``"molecules.png"``); ``None``: no picture.
    picture: str | None = None

    def draw(self, examples: list[Example], texts: list[str], certificates: list[Certificate], path: Path) -> Path:
        """Draw completions with their certificates into ``path`` (tasks that set :attr:`picture`)."""
        raise NotImplementedError(f"task {self.name!r} draws no pictures")

    # ---- resources -----------------------------------------------------------------------------
    def open(self, workdir: Path | None = None) -> None:
        """Acquire what checking needs (called once per process before its first check)."""

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    def __enter__(self) -> "Task":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def register(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task {name!r} is already registered")
        if not issubclass(cls.Options, Task.Options):
            raise TypeError(f"task {name!r}: Options must inherit Task.Options (for the data_dir convention)")
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
