"""The symbolic-feedback contract: what a checker says about one completion.

A checker (compiler, computer algebra, chemistry toolkit, solver) receives the prompt's data
and the completion text and returns a :class:`Certificate`. The certificate says *where* the
completion is right or wrong as character spans of the completion, each with a reward and a
human-readable message, plus an overall score. :mod:`rlsf.feedback.rewards` turns it
into a reward per sampled token.

Checkers never raise on model output: unparsable text is itself a certificate (a low score and
a span over the offending text).

**No attempt is the worst outcome.** A completion that does not attempt the task's answer form
(nothing, blank text, prose, a refusal, the prompt or an input copied back) gets
:meth:`Certificate.no_attempt`: ``attempted`` false. The reward shaping gives it less than any
attempt, right or wrong, whatever the attempt's spans (:mod:`rlsf.feedback.rewards`), so a policy
under RL pressure cannot learn that silence pays. The checker harness tests the rule on every task
(:func:`rlsf.tasks.harness.reward_ordering`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CHECKER_FAILED = "checker_failed"
#: The score of a completion that makes no attempt; the shaping keeps every attempt above it.
NO_ATTEMPT_SCORE = -1.0


@dataclass(frozen=True)
class Span:
    """A character range ``[start, end)`` of the completion with its reward.

    ``reward`` is the reward of the whole span; how it reaches the tokens covering the span is
    decided by :func:`rlsf.feedback.rewards.certificate_token_rewards`.
    """

    start: int
    end: int
    reward: float
    message: str = ""

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid span [{self.start}, {self.end}): need 0 <= start <= end")


@dataclass
class Certificate:
    """What a symbolic checker says about one completion.

    Attributes:
        score: the overall (outcome) reward of the completion. In ``sequence`` reward mode it is
            the only reward, placed on the last token; in ``token`` mode it is placed on the last
            token as well and the spans add dense rewards on the tokens they cover.
        verdict: a short label, e.g. ``"correct"``, ``"wrong_step"``, ``"unparsable"``.
        correct: whether the completion solves the problem (used by success metrics).
        spans: error (negative reward) and credit (positive reward) spans in the completion.
        info: extra figures to log (numbers only are averaged into metrics).
        answer: the completion's final answer in canonical form, used for majority voting; ``None``
            when there is none.
        failed: the *checker* failed (timed out, crashed): the certificate says nothing about the
            completion, so the update leaves the sample out instead of punishing the model for it.
        attempted: the completion attempts the task's answer form (right or wrong). False for no
            reply, blank text, prose, a refusal, a copy of the prompt or of an input: the reward
            shaping then ranks it below every attempt (see :meth:`no_attempt`).
    """

    score: float
    verdict: str
    correct: bool = False
    spans: list[Span] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    failed: bool = False
    attempted: bool = True

    @classmethod
    def no_attempt(cls, verdict: str, message: str, text: str = "", **info: Any) -> "Certificate":
        """A completion that makes no attempt (``verdict`` says which kind: ``empty``, ``no_answer``,
        ``copies_input``...). Its ``score`` is the no-attempt reward; one zero-reward span over the
        text carries ``message`` so that ``rlsf check`` can say why."""
        spans = [Span(0, len(text), 0.0, message)] if text.strip() else []
        return cls(score=NO_ATTEMPT_SCORE, verdict=verdict, spans=spans, info=dict(info), attempted=False)

    @classmethod
    def checker_failed(cls, reason: str) -> "Certificate":
        """The outcome of a check that did not finish (see :mod:`rlsf.feedback.service`)."""
        return cls(score=0.0, verdict=CHECKER_FAILED, info={"checker_error": reason}, failed=True)

    def errors(self) -> list[Span]:
        return [s for s in self.spans if s.reward < 0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self, completion: str) -> str:
        """Human-readable report: each span's text and message."""
        lines = [f"verdict={self.verdict} score={self.score:+.3f} correct={self.correct}"
                 + ("" if self.attempted else " (no attempt)")]
        if self.failed:
            lines.append(f"  checker failed: {self.info.get('checker_error', '')}")
        for s in sorted(self.spans, key=lambda s: s.start):
            lines.append(f"  [{s.start}:{s.end}] {s.reward:+.3f} {completion[s.start:s.end]!r}: {s.message}")
        return "\n".join(lines)


#: At most this many flagged spans are listed in one feedback turn (in text order).
FEEDBACK_ITEMS = 6


def _clip(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def feedback_text(completion: str, certificate: Certificate, items: int = FEEDBACK_ITEMS) -> str:
    """The certificate as the next user turn of a self-repair episode: what is wrong, where
    (line and flagged text) and why (each error span's message), then a request to answer again.

    Only what the checker said is shown: the spans' messages and the verdict, never a reference
    answer, so the feedback cannot hand the model the solution a checker happens to know."""
    if certificate.correct:  # not a repair turn (rlsf.rollout.episodes stops at a correct answer)
        return "Your answer is correct."
    if not certificate.attempted:
        why = next((s.message for s in certificate.spans if s.message), "") or f"the reply is {certificate.verdict}"
        return f"Your reply does not attempt the task: {why.rstrip('.')}. Answer the task in the requested format."
    errors = sorted((s for s in certificate.errors() if s.message), key=lambda s: s.start)
    lines = [f"Your answer is not correct (checker verdict: {certificate.verdict})."]
    if errors:
        lines.append("The checker found:")
        for s in errors[:items]:
            line = completion.count("\n", 0, s.start) + 1
            flagged = _clip(completion[s.start:s.end])
            lines.append(f"- line {line}" + (f", `{flagged}`" if flagged else "") + f": {_clip(s.message, 300)}")
        if len(errors) > items:
            lines.append(f"- and {len(errors) - items} more")
    lines.append("Write the whole answer again, corrected, in the same format.")
    return "\n".join(lines)

