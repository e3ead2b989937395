"""One check, in whatever process runs it: token ids to text and offsets, the task's checker,
and a *checker failed* certificate for a checker that raises or returns junk. The check
service's workers (processes or Ray actors) and its in-process mode all run :func:`run_check`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.offsets import Detokenizer, Offsets

#: A task (:class:`rlsf.tasks.base.Task`): only ``check`` and ``judge`` are called here.
Task = Any


@dataclass
class Checked:
    """One checked completion: its text, each token's ``[start, end)`` in it, the certificate."""

    text: str
    offsets: Offsets
    certificate: Certificate
    seconds: float = 0.0  # time the check itself took (detokenising excluded)



def run_check(task: Task, detokenizer: Detokenizer | None, example: dict[str, Any], ids: Sequence[int] | None,
              text: str | None, judge: bool = False) -> Checked:
    """Detokenise (when given ids) and check one completion (``judge``: with the evaluation
    certificate, :meth:`Task.judge`); a checker that raises or returns something other than a
    certificate gives a *checker failed* certificate."""
    if ids is not None:
        if detokenizer is None:
            raise ValueError("checking token ids needs a detokenizer")
        text, offsets = detokenizer.text_and_offsets(ids)
    else:
        offsets = []
    t0 = time.perf_counter()
    try:
        cert = (task.judge if judge else task.check)(example, text)
    except Exception as e:  # noqa: BLE001 -- a checker bug must not stop training, and is not the model's fault
        cert = Certificate.checker_failed(f"checker raised {type(e).__name__}: {e}"[:500])
    else:
        if not isinstance(cert, Certificate) or not math.isfinite(float(cert.score)):
            cert = Certificate.checker_failed(f"checker returned {cert!r:.200} instead of a certificate with a "
                                              "finite score")
    return Checked(text, offsets, cert, time.perf_counter() - t0)
