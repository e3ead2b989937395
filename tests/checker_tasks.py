"""Tasks whose checkers misbehave on purpose, for the check service's tests.

Kept free of heavy imports: the service's worker processes import this module (by the task
class's module name) to rebuild the task.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlsf.settings import opt
from rlsf.feedback.certificate import Certificate, Span
from rlsf.tasks.base import Task, register


@register("misbehaving")
class Misbehaving(Task):
    """``check`` does what the completion says: sleep, crash, raise, return junk, or judge 'right'."""

    @dataclass
    class Options(Task.Options):
        log_dir: str | None = opt(None, "Where open/close leave a marker (outside the service's folder).")

    def load(self, split):
        self.check_split(split)
        return [{"id": i, "n": i} for i in range(4)]

    def prompt(self, example):
        return [{"role": "user", "content": f"Say right ({example['n']})."}]

    def open(self, workdir=None):
        self.workdir = workdir
        if workdir is not None:
            (Path(workdir) / "opened").write_text(str(os.getpid()))
        self._mark("open")

    def close(self):
        self._mark("close")

    def _mark(self, what):
        if self.options.log_dir:
            (Path(self.options.log_dir) / f"{what}-{os.getpid()}").write_text(str(self.workdir))

    def check(self, example, completion):
        word = completion.strip()
        if word == "sleep":
            time.sleep(60)
        elif word == "crash":
            os._exit(3)
        elif word == "raise":
            raise RuntimeError("checker bug")
        elif word == "junk":
            return "not a certificate"
        elif word == "modules":
            loaded = [m for m in ("torch", "transformers") if m in sys.modules]
            return Certificate(0.0, "modules", info={"loaded": ",".join(loaded), "pid": os.getpid()})
        elif word == "workdir":
            return Certificate(0.0, "workdir", info={"workdir": str(self.workdir)})
        ok = word == "right"
        spans = [] if ok else [Span(0, len(completion), -1.0, "not 'right'")]
        return Certificate(float(ok), "correct" if ok else "wrong", ok, spans, answer=word[:10])
