"""Silence never pays: the reward ordering (rlsf.tasks.harness.reward_ordering) on every registered task,
and the shaping's guarantee behind it (any attempt's total above the no-attempt reward, whatever its spans)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsf.feedback.certificate import Certificate, Span
from rlsf.feedback.rewards import NO_ATTEMPT_REWARD, SQUASH_FROM, bounded_total, certificate_token_rewards
from rlsf.tasks import available_tasks, get_task
from rlsf.tasks.harness import reward_ordering, total_reward

#: Examples per task (SPoC compiles every reply: a few).
EXAMPLES = {"spoc": 2}
#: Tasks whose known hacks the issue names: each must list some.
HACKED = {"game24", "gsm8k", "svamp", "molgen", "forward", "retro", "spoc", "arith"}


def registered_tasks() -> list[str]:
    return sorted(n for n, cls in available_tasks().items() if cls.__module__.startswith("rlsf."))


@pytest.mark.parametrize("name", registered_tasks())
def test_reward_ordering(name: str) -> None:
    task = get_task(name)
    with task:
        examples = task.load("test")
        examples = examples[:: max(1, len(examples) // EXAMPLES.get(name, 12))][: EXAMPLES.get(name, 12)]
        assert all(task.near_misses(ex) for ex in examples), f"{name}: every example needs near misses"
        if name in HACKED:
            assert all(task.reward_hacks(ex) for ex in examples), f"{name}: no reward hacks listed"
        report = reward_ordering(task, examples)
    assert report.examples == len(examples) and report.replies >= 5 * len(examples)
    assert report, "\n".join(report.violations)


def test_reward_ordering_reports_a_checker_that_pays_for_silence() -> None:
    class Lenient:  # pays 0 for nothing and -1 for a wrong attempt: the bug this rule is about
        def demonstration(self, ex):
            return "4"

        def degenerate_replies(self, ex):
            return {"empty": ""}

        def near_misses(self, ex):
            return {"slip": "5"}

        def reward_hacks(self, ex):
            return {"copy": "2 + 2"}

        def check(self, ex, text):
            if not text:
                return Certificate(0.0, "empty")
            return Certificate(1.0 if text == "4" else -1.0, "x", correct=text == "4")

    report = reward_ordering(Lenient(), [{"id": 0}])
    assert not report
    assert any("'empty' reply" in v and "judged an attempt" in v for v in report.violations)
    assert any("hack 'copy'" in v for v in report.violations)


spans = st.lists(st.builds(lambda a, b, r: Span(min(a, b), max(a, b), r), st.integers(0, 40), st.integers(0, 40),
                           st.floats(-50, 50, allow_nan=False)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(score=st.floats(-100, 100, allow_nan=False), spans=spans, correct=st.booleans(),
       text=st.text(alphabet="ab +\n", max_size=40), weight=st.floats(0, 5), spread=st.booleans())
def test_any_attempt_earns_more_than_no_attempt(score, spans, correct, text, weight, spread) -> None:
    attempt = Certificate(score, "x", correct=correct, spans=spans)
    silence = Certificate.no_attempt("empty", "nothing", text)
    offsets = [(i, i + 1) for i in range(len(text))] + [(len(text), len(text))]
    for preset, mode in (("signed", "token"), ("signed", "sequence"), ("rlsf", "token")):
        kw = dict(preset=preset, mode=mode, span_weight=weight, spread_spans=spread)
        got = sum(certificate_token_rewards(attempt, offsets, **kw))
        none = sum(certificate_token_rewards(silence, offsets, **kw))
        assert got > none, (preset, mode, got, none)
        assert none == (NO_ATTEMPT_REWARD if preset == "signed" else 0.0)


def test_bounded_total_is_identity_above_the_squash_and_increasing_below() -> None:
    assert bounded_total(0.3) == 0.3 and bounded_total(SQUASH_FROM) == SQUASH_FROM
    xs = [SQUASH_FROM - 0.01 * i for i in range(1, 2000)]
    ys = [bounded_total(x) for x in xs]
    assert all(a > b for a, b in zip(ys, ys[1:])) and all(NO_ATTEMPT_REWARD < y < SQUASH_FROM for y in ys)
    assert abs((bounded_total(SQUASH_FROM - 1e-6) - SQUASH_FROM) / -1e-6 - 1) < 1e-3  # slope 1 at the joint


def test_signed_squash_scales_only_the_negative_token_rewards() -> None:
    text = "aa bb cc"
    offsets = [(0, 3), (3, 6), (6, 8), (8, 8)]
    cert = Certificate(-1.0, "wrong", spans=[Span(0, 2, 0.5), Span(3, 5, -3.0)])
    r = certificate_token_rewards(cert, offsets)
    assert r[0] == 0.5 and r[2] == 0.0 and r[1] < 0 and r[3] < 0
    assert sum(r) == pytest.approx(bounded_total(0.5 - 3.0 - 1.0))
    assert r[1] / r[3] == pytest.approx(3.0)  # the errors keep their proportions
    assert total_reward(cert, text) == pytest.approx(sum(r))


def test_rlsf_preset_is_the_papers_non_negative_form() -> None:
    offsets = [(0, 3), (3, 6), (6, 8), (8, 8)]  # three text tokens and the end of turn
    wrong = Certificate(-1.0, "wrong", spans=[Span(3, 5, -1.0), Span(0, 2, 0.5)])
    r = certificate_token_rewards(wrong, offsets, preset="rlsf")
    assert r == pytest.approx([1 / 3, 0.1 / 3, 1 / 3, 0.0])  # flagged token: the attempt's credit only
    right = Certificate(1.0, "correct", correct=True)
    assert certificate_token_rewards(right, offsets, preset="rlsf") == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert certificate_token_rewards(Certificate.no_attempt("no_answer", "prose", "aa bb cc"), offsets,
                                     preset="rlsf") == [0.0] * 4


def test_rlsf_preset_trains_and_refuses_sequence_mode(tiny_model_dir, tmp_path) -> None:
    from test_training import tiny_cfg

    from rlsf.settings import ConfigError
    from rlsf.stages.train import RLTrainer

    with pytest.raises(ConfigError, match="reward.preset: rlsf is a token-level form"):
        tiny_cfg(tiny_model_dir, tmp_path, **{"reward.preset": "rlsf", "reward.mode": "sequence"})
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"reward.preset": "rlsf", "train.steps": 1}))
    metrics = tr.train()
    assert metrics["reward/total"] >= 0.0  # the paper's form is non-negative: silence earns 0, the least
