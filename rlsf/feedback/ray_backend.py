"""The check service's Ray backend (``check.backend: ray``): the same checks in Ray actors.

Each actor is one worker as in the process pool: it rebuilds the task from its class and
options, opens it with a private folder, detokenises and checks completions one at a time, and
closes the task when the service closes. A check past ``check.timeout_s`` has its actor killed
(``ray.kill``) and replaced, exactly as pebble kills a process; an actor that dies (a checker
that crashes its process) gives a *checker failed* outcome and is replaced too.

``check.ray_address`` empty starts a local Ray instance with one CPU per worker (and ends it
when the service closes, unless Ray was already running); otherwise the service joins that
cluster, whose nodes must be able to import the task's module (install your package there).
A local instance gets the driver's ``sys.path`` as ``PYTHONPATH``, so a task defined in a
module next to your script works as it does with the process pool.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from rlsf.errors import RlsfError
from rlsf.feedback.checked import Checked, run_check


class RayUnavailable(RlsfError):
    """``check.backend: ray`` without Ray installed."""


class _Checker:
    """One Ray actor: a worker of the check service."""

    def __init__(self, task_cls: type, options: dict[str, Any], detokenizer, workdir: str) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.task = task_cls(**options)
        folder = Path(workdir) / f"worker-{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        self.task.open(folder)
        self.detokenizer = detokenizer

    def check(self, example: dict[str, Any], ids: list[int] | None, text: str | None, judge: bool) -> Checked:
        return run_check(self.task, self.detokenizer, example, ids, text, judge)

    def close(self) -> None:
        self.task.close()

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """A pool of :class:`_Checker` actors with per-check time limits, behind futures."""

    def __init__(self, task_cls: type, options: dict[str, Any], detokenizer, workdir: str, *, workers: int,
                 address: str = "") -> None:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("check.backend: ray needs Ray: pip install 'rlsf[ray]' (or pip install ray)") from None
        self.ray = ray
        self.started_ray = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                paths = os.pathsep.join(p for p in sys.path if p)
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": paths, "TOKENIZERS_PARALLELISM": "false"}})
            self.started_ray = True
        self.actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Checker)
        self.args = (task_cls, options, detokenizer, workdir)
        self.idle = deque(self._new_actor() for _ in range(workers))
        self.queue: deque = deque()  # (future, args, timeout) waiting for an actor
        self.running: dict[Any, tuple] = {}  # object ref -> (future, actor, deadline)
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._dispatch, name="rlsf-ray-checks", daemon=True)
        self.thread.start()

    def _new_actor(self):
        return self.actor_cls.remote(*self.args)

    def schedule(self, args: tuple, timeout: float) -> concurrent.futures.Future:
        """A future of ``_Checker.check(*args)``: its result, or the exception a process pool gives
        (``TimeoutError`` past ``timeout``; the actor's error when it died)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            if self.closed:
                fut.set_exception(concurrent.futures.CancelledError())
                return fut
            self.queue.append((fut, args, timeout))
            self.lock.notify()
        return fut

    def _dispatch(self) -> None:
        ray = self.ray
        while True:
            with self.lock:
                while self.queue and self.idle:
                    fut, args, timeout = self.queue.popleft()
                    actor = self.idle.popleft()
                    ref = actor.check.remote(*args)
                    self.running[ref] = (fut, actor, time.monotonic() + timeout)
                if self.closed and not self.running:
                    return
                if not self.running:
                    self.lock.wait(0.5)
                    continue
                refs = list(self.running)
            done, _ = ray.wait(refs, num_returns=1, timeout=0.05)
            now = time.monotonic()
            with self.lock:
                for ref in refs:
                    fut, actor, deadline = self.running[ref]
                    if ref in done:
                        del self.running[ref]
                        try:
                            fut.set_result(ray.get(ref))
                            self.idle.append(actor)
                        except Exception as e:  # noqa: BLE001 -- the actor died (RayActorError) or the call failed
                            fut.set_exception(e)
                            self._replace(actor)
                    elif now > deadline:
                        del self.running[ref]
                        fut.set_exception(concurrent.futures.TimeoutError())
                        self._replace(actor)

    def _replace(self, actor) -> None:
        self.ray.kill(actor, no_restart=True)
        if not self.closed:
            self.idle.append(self._new_actor())

    def close(self, timeout: float) -> None:
        """Let running checks finish (killing those past ``timeout``), close every task, end the actors."""
        with self.lock:
            self.closed = True
            for fut, _, _ in self.queue:
                fut.set_exception(concurrent.futures.CancelledError())
            self.queue.clear()
            self.lock.notify()
        self.thread.join(timeout + 10)
        actors = list(self.idle)
        self.idle.clear()
        for ref in [a.close.remote() for a in actors]:
            try:
                self.ray.get(ref, timeout=3)
            except Exception:  # noqa: BLE001 -- a close that hangs or fails must not keep the service open
                pass
        for a in actors:
            self.ray.kill(a, no_restart=True)
        if self.started_ray:
            self.ray.shutdown()
