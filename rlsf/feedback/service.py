"""Checking is one service, shared by training, evaluation and ``rlsf check``.

A completion arrives as the token ids that were sampled (or as text, from ``rlsf check``). A
worker turns the ids into the completion text and each token's character range
(:class:`~rlsf.feedback.offsets.Detokenizer`, linear time), runs the task's checker on the
text and sends back a :class:`Checked`: text, offsets, certificate. Workers are processes, one
per core by default: checkers are CPU-bound Python (or drive compilers and chemistry toolkits),
and a process can be killed, which a thread cannot.

Each check has a wall-clock limit (``check.timeout_s``). A check that runs past it, crashes its
worker, raises, or returns something that is not a certificate ends as a *checker failed*
certificate (:meth:`Certificate.checker_failed`, ``failed=True``): the trainer logs it and leaves
the sample out of the update, since it says nothing about the model. The killed worker is
replaced and the run carries on.

Workers are started with ``spawn`` (a fork of a process that runs torch threads can deadlock)
and import neither torch nor transformers. Each rebuilds the task from its class (imported by
module and name, so a task defined in a user's own module works too; a class loaded from a file by
spec is rebuilt by loading the file again, :func:`_task_factory`) and options, and calls
:meth:`Task.open` with a private folder inside one temporary directory that the service
removes when it closes, also when a worker was killed; :meth:`Task.close` runs when the service
ends its workers (it must finish within 3 s; a worker killed for a time-out does not get to
close, but its folder is removed all the same).

With ``workers=0`` everything runs in the calling process, synchronously and without time
limits (for debugging, and where processes cannot be spawned). With ``check.backend: ray`` the
workers are Ray actors instead of local processes, with the same time limit, failure outcomes
and task life cycle (:mod:`rlsf.feedback.ray_backend`): for checkers heavy enough to fan out
over a cluster (``check.ray_address``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Sequence

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.checked import Checked, run_check
from rlsf.feedback.offsets import Detokenizer
from rlsf.feedback.ray_backend import RayPool

#: A task (:class:`rlsf.tasks.base.Task`). The service sits below the tasks and only calls
#: ``check``/``judge``/``open``/``close`` and rebuilds it from ``type(task)(**options)``.
Task = Any


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---- worker processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(task_cls: type[Task], options: dict[str, Any], detokenizer: Detokenizer | None,
                 workdir: str) -> None:
    from multiprocessing.util import Finalize

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    task = task_cls(**options)
    folder = Path(workdir) / f"worker-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    task.open(folder)
    _WORKER.update(task=task, detokenizer=detokenizer)
    # The pool ends its workers by closing their channel *and* sending SIGTERM (SIGKILL 3 s later):
    # close the task on whichever comes first, once.
    Finalize(task, _close_task, exitpriority=100)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        _close_task()
        if callable(previous):
            previous(signum, frame)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _task_factory(task: Task) -> Any:
    """What workers build the task with: its class (pickled by module and name), or the recipe the
    class carries when a fresh process cannot import it so (a class loaded from a user's file: its
    ``__rlsf_factory__``, set by :func:`rlsf.tasks.task_class`, loads the file again). Looked up on
    the class itself, never inherited: a subclass is not its base's file."""
    return vars(type(task)).get("__rlsf_factory__") or type(task)


def _close_task() -> None:
    """Close the worker's task once, holding SIGTERM back meanwhile so that a close that has
    begun finishes (within the pool's 3 s before SIGKILL)."""
    task = _WORKER.pop("task", None)
    if task is None:
        return
    blockable = hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if blockable else None
    try:
        task.close()
    finally:
        if blockable:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_check(example: dict[str, Any], ids: list[int] | None, text: str | None, judge: bool) -> Checked:
    return run_check(_WORKER["task"], _WORKER["detokenizer"], example, ids, text, judge)


#: Where the workers run: a local process pool, or Ray actors (locally or on a cluster).
BACKENDS = ("processes", "ray")


class CheckService:
    """Detokenise and check completions in worker processes; see the module docstring."""

    def __init__(self, task: Task, detokenizer: Detokenizer | None = None, *, workers: int = -1,
                 timeout_s: float = 60.0, backend: str = "processes", ray_address: str = "") -> None:
        """``task``: a task object (workers build their own copy from its class and options);
        ``detokenizer``: turns sampled ids into text and offsets (needed to submit ids);
        ``backend``: ``processes`` (a local pool) or ``ray`` (Ray actors, :mod:`rlsf.feedback.ray_backend`)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown check backend {backend!r}; choose from {BACKENDS}")
        self.task_cls, self.options = _task_factory(task), dataclasses.asdict(task.options)
        self.detokenizer = detokenizer
        self.timeout_s = timeout_s
        self.workers = cpu_count() if workers < 0 else workers
        self.workdir = Path(tempfile.mkdtemp(prefix="rlsf-check-"))
        self.failures = 0
        self.backend = backend if self.workers else "in-process"
        self._task: Task | None = None
        self._pool = None
        if self.workers == 0:
            self._task = self.task_cls(**self.options)
            self._task.open(self.workdir)
        elif backend == "ray":
            self._pool = RayPool(self.task_cls, self.options, detokenizer, str(self.workdir), workers=self.workers,
                                 address=ray_address)
        else:
            import pebble  # kills a timed-out worker and replaces it: what a per-check limit needs

            self._pool = pebble.ProcessPool(
                max_workers=self.workers, initializer=_init_worker,
                initargs=(self.task_cls, self.options, detokenizer, str(self.workdir)),
                context=multiprocessing.get_context("spawn"))

    @classmethod
    def for_config(cls, cfg, task: Task, tokenizer=None, workers: int | None = None) -> "CheckService":
        """The service ``cfg.check`` describes for ``task`` (``workers`` overrides ``check.workers``)."""
        detok = Detokenizer.from_tokenizer(tokenizer) if tokenizer is not None else None
        c = cfg.check
        return cls(task, detok, workers=c.workers if workers is None else workers, timeout_s=c.timeout_s,
                   backend=c.backend, ray_address=c.ray_address)

    # ---- submitting ------------------------------------------------------------------------------
    def submit(self, example: dict[str, Any], ids: Sequence[int] | None = None, text: str | None = None,
               judge: bool = False) -> "concurrent.futures.Future[Checked]":
        """Check one completion given by its sampled ``ids`` (or its ``text``); with ``judge``, with
        the evaluation certificate (:meth:`Task.judge`). The future's result is always a
        :class:`Checked`, a failed check included."""
        if (ids is None) == (text is None):
            raise ValueError("give the completion's token ids or its text, not both")
        ids = [int(t) for t in ids] if ids is not None else None
        out: concurrent.futures.Future[Checked] = concurrent.futures.Future()
        if self._pool is None:
            out.set_result(run_check(self._task, self.detokenizer, example, ids, text, judge))
            return out
        if self.backend == "ray":
            job = self._pool.schedule((example, ids, text, judge), timeout=self.timeout_s)
        else:
            job = self._pool.schedule(_worker_check, args=(example, ids, text, judge), timeout=self.timeout_s)
        job.add_done_callback(lambda f: out.set_result(self._outcome(f, ids, text)))
        return out

    def _outcome(self, job: concurrent.futures.Future, ids: list[int] | None, text: str | None) -> Checked:
        try:
            return job.result()
        except concurrent.futures.TimeoutError:
            reason = f"check timed out after {self.timeout_s:g} s"
        except concurrent.futures.CancelledError:
            reason = "check cancelled (service closed)"
        except Exception as e:  # noqa: BLE001 -- ProcessExpired (the worker died), pickling errors, ...
            reason = f"check failed: {type(e).__name__}: {e}"[:500]
        self.failures += 1
        if ids is not None:  # the sample still needs its text and offsets
            text, offsets = self.detokenizer.text_and_offsets(ids)
        else:
            offsets = []
        return Checked(text, offsets, Certificate.checker_failed(reason))

    def check(self, examples: Sequence[dict[str, Any]], ids: Sequence[Sequence[int]] | None = None,
              texts: Sequence[str] | None = None, judge: bool = False) -> list[Checked]:
        """Check many completions (all submitted at once), in order."""
        if ids is not None:
            futures = [self.submit(ex, ids=i, judge=judge) for ex, i in zip(examples, ids, strict=True)]
        else:
            futures = [self.submit(ex, text=t, judge=judge) for ex, t in zip(examples, texts, strict=True)]
        return [f.result() for f in futures]

    # ---- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None and self.backend == "ray":
            self._pool.close(self.timeout_s)
            self._pool = None
        if self._pool is not None:
            self._pool.close()
            try:
                self._pool.join(timeout=self.timeout_s + 10)
            except TimeoutError:
                self._pool.stop()
                self._pool.join()
            self._pool = None
        if self._task is not None:
            self._task.close()
            self._task = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "CheckService":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a service dropped without close(): do not leak workers or files
        try:
            if self._pool is not None or self.workdir.exists():
                self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass
