"""The reward ordering every checker must satisfy: silence never pays.

Under RL pressure a policy finds the cheapest reply that scores; if saying nothing scores more than
an honest mistake, it learns to say nothing. :func:`reward_ordering` checks, for each example:

1. every :meth:`~rlsf.tasks.base.Task.degenerate_replies` reply (no reply, blank text, prose, a
   refusal, the prompt restated) gets a *no attempt* certificate, and earns strictly less total
   reward than every attempt (the demonstration and the :meth:`~rlsf.tasks.base.Task.near_misses`);
2. every near miss is an attempt and not correct;
3. every :meth:`~rlsf.tasks.base.Task.reward_hacks` reply (a long unrelated valid answer, an input
   copied back) earns strictly less than every near miss under the token-level shapings, and no
   more under the sequence reward (whose outcome may be binary: a wrong answer is a wrong answer).

"Total reward" is the sum of the token rewards the shaping gives (:mod:`rlsf.feedback.rewards`),
under each preset and mode a run can use (``signed`` token and sequence, ``rlsf``), at default
span weights. The tokens are the text's words and punctuation (:func:`word_offsets`) and an
end-of-turn token; the signed totals do not depend on how the text is cut, the ``rlsf`` preset's
(a share of clean tokens) only a little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.rewards import certificate_token_rewards

#: (preset, mode) pairs whose totals are compared.
SHAPINGS = (("signed", "token"), ("signed", "sequence"), ("rlsf", "token"))


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Character ranges of the pieces of ``text`` a tokenizer would roughly make (runs of letters and
    digits, single other characters, each with the blanks before it), then end of turn."""
    offsets = [(m.start(), m.end()) for m in re.finditer(r"\s*(?:\w+|[^\w\s])|\s+$", text)]
    return offsets + [(len(text), len(text))]


def total_reward(certificate: Certificate, text: str, preset: str = "signed", mode: str = "token") -> float:
    """The sum of the token rewards of ``text``'s certificate under a preset and mode."""
    return sum(certificate_token_rewards(certificate, word_offsets(text), preset=preset, mode=mode))


@dataclass
class OrderingReport:
    """What :func:`reward_ordering` checked and the rule breaks it found (empty: the rule holds)."""

    examples: int = 0
    replies: int = 0
    violations: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.violations


def reward_ordering(task: Any, examples: list[dict[str, Any]], *, max_violations: int = 20) -> OrderingReport:
    """Check the ordering rule on ``examples`` (see the module docstring); returns the report."""
    report = OrderingReport()

    def flag(msg: str) -> None:
        if len(report.violations) < max_violations:
            report.violations.append(msg)

    for ex in examples:
        report.examples += 1
        eid = ex.get("id", report.examples - 1)
        judged: dict[str, dict[str, tuple[str, Certificate]]] = {"degenerate": {}, "attempt": {}, "hack": {}}
        demo = task.demonstration(ex)
        groups = {"degenerate": task.degenerate_replies(ex),
                  "attempt": {**({"demonstration": demo} if demo is not None else {}), **task.near_misses(ex)},
                  "hack": task.reward_hacks(ex)}
        for group, replies in groups.items():
            for name, text in replies.items():
                judged[group][name] = (text, task.check(ex, text))
                report.replies += 1
        for name, (text, cert) in judged["degenerate"].items():
            if cert.attempted:
                flag(f"example {eid}: {name!r} reply {text[:60]!r} is judged an attempt ({cert.verdict}), "
                     f"not a no-attempt certificate")
        for name, (text, cert) in judged["attempt"].items():
            if not cert.attempted:
                flag(f"example {eid}: {name} {text[:60]!r} is judged no attempt ({cert.verdict})")
            if name != "demonstration" and cert.correct:
                flag(f"example {eid}: near miss {name!r} {text[:60]!r} is judged correct")
        for preset, mode in SHAPINGS:
            totals = {g: {n: total_reward(c, t, preset, mode) for n, (t, c) in judged[g].items()} for g in judged}
            how = f"{preset}/{mode}"
            if totals["attempt"]:
                low = min(totals["attempt"], key=totals["attempt"].get)
                for name, value in totals["degenerate"].items():
                    if value >= totals["attempt"][low]:
                        flag(f"example {eid} ({how}): {name!r} earns {value:+.3f}, not less than the attempt "
                             f"{low!r} ({totals['attempt'][low]:+.3f})")
            near = {n: v for n, v in totals["attempt"].items() if n != "demonstration"}
            if near:
                low = min(near, key=near.get)
                for name, value in totals["hack"].items():
                    # A sequence reward is the outcome alone: a task whose outcome is binary gives a
                    # hack the same 0 as a near miss; only more is a break there.
                    if value > near[low] or (mode == "token" and value == near[low]):
                        flag(f"example {eid} ({how}): hack {name!r} earns {value:+.3f}, not less than the "
                             f"near miss {low!r} ({near[low]:+.3f})")
    return report
