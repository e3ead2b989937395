"""The check service: worker processes, time limits, failed checks, task resources."""

from __future__ import annotations

import time

import pytest
import torch

from checker_tasks import Misbehaving
from rlsf.feedback.service import CheckService, run_check
from rlsf.feedback.certificate import CHECKER_FAILED, Certificate
from rlsf.feedback.offsets import Detokenizer, decode_with_offsets
from rlsf.tasks import get_task


@pytest.fixture
def task(tmp_path):
    return Misbehaving(log_dir=str(tmp_path))


def texts(service, words):
    return [c.certificate for c in service.check([{"id": 0}] * len(words), texts=words)]


def test_in_process_and_pool_agree(task):
    words = ["right", "wrong", "", "right\n"]
    with CheckService(task, workers=0) as a, CheckService(task, workers=2) as b:
        assert texts(a, words) == texts(b, words) == [task.check({}, w) for w in words]


def test_ids_are_detokenised_in_the_worker(tokenizer):
    game = get_task("game24")
    ex = game.load("test")[0]
    text = "1 + 2 = 3 (left: 3 3 4)\nAnswer: 4 = 24 ✓"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with CheckService(game, Detokenizer.from_tokenizer(tokenizer), workers=1) as service:
        got = service.submit(ex, ids=ids).result()
    assert (got.text, got.offsets) == decode_with_offsets(tokenizer, ids)
    assert got.certificate == game.check(ex, got.text)


def test_a_check_past_its_time_limit_fails_and_the_pool_carries_on(task):
    with CheckService(task, workers=1, timeout_s=1.0) as service:
        t0 = time.perf_counter()
        slow, fine = texts(service, ["sleep", "right"])
        assert time.perf_counter() - t0 < 30
    assert slow.failed and slow.verdict == CHECKER_FAILED and "timed out after 1 s" in slow.info["checker_error"]
    assert not slow.correct and slow.score == 0.0
    assert fine.correct and not fine.failed
    assert service.failures == 1


@pytest.mark.parametrize("word, message", [("crash", "ProcessExpired"), ("raise", "RuntimeError: checker bug"),
                                           ("junk", "instead of a certificate")])
def test_crashing_raising_or_junk_checkers_fail_the_check_not_the_run(task, word, message):
    with CheckService(task, workers=1, timeout_s=20) as service:
        bad, fine = texts(service, [word, "right"])
    assert bad.failed and message in bad.info["checker_error"]
    assert fine.correct


def test_in_process_checks_catch_checker_errors_too(task):
    assert run_check(task, None, {}, None, "raise").certificate.failed
    assert run_check(task, None, {}, None, "junk").certificate.failed


def test_workers_import_neither_torch_nor_transformers(task):
    with CheckService(task, workers=1) as service:
        cert = texts(service, ["modules"])[0]
    assert cert.info["loaded"] == ""


def test_task_resources_live_and_die_with_the_service(task, tmp_path):
    service = CheckService(task, workers=2)
    certs = texts(service, ["workdir"] * 4)
    root = service.workdir
    folders = {c.info["workdir"] for c in certs}
    assert all(f.startswith(str(root)) and (root / f.rsplit("/", 1)[1] / "opened").is_file() for f in folders)
    service.close()
    assert not root.exists()  # removed by the service, whatever the workers did
    opened = sorted(p.name.split("-")[1] for p in tmp_path.glob("open-*"))
    closed = sorted(p.name.split("-")[1] for p in tmp_path.glob("close-*"))
    assert opened and opened == closed  # every worker that opened the task closed it on exit
    # In-process: open on start, close on close.
    with CheckService(task, workers=0) as inproc:
        assert (inproc.workdir / "opened").is_file()
    assert not inproc.workdir.exists()


def test_submit_needs_ids_or_text(task):
    with CheckService(task, workers=0) as service:
        with pytest.raises(ValueError):
            service.submit({}, ids=[1], text="x")


def test_failed_checks_are_left_out_of_the_update(tiny_model_dir, tmp_path):
    """A failed check contributes no reward, no advantage and no gradient, and is counted."""
    from test_training import tiny_cfg

    from rlsf.stages.train import RLTrainer, experience_metrics
    from rlsf.runtime.utils import Timer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "grpo", "grpo.kl_coef": 0.0,
                                                "grpo.minibatch_size": 4, "rollout.samples_per_prompt": 2})
    deltas = []
    for drop in (False, True):
        torch.manual_seed(0)
        tr = RLTrainer(cfg)
        tr.algo.optimizer = torch.optim.SGD(tr.algo.param_groups(), lr=0.5)
        exp = tr.rollout_step()
        exp.rewards = torch.linspace(-1, 1, exp.rewards.numel()).view_as(exp.rewards) * exp.response_mask
        if drop:  # rows 0 and 1 are one group; row 1's check "failed"
            exp.certificates[1] = Certificate.checker_failed("timed out")
            m = experience_metrics(exp)
            assert m["check/failed"] == 0.25
        before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
        if drop:
            assert exp.loss_mask[1].sum() == 0 and exp.valid.tolist() == [True, False, True, True]
        tr.algo.step(exp, Timer())
        deltas.append({n: p.detach() - before[n] for n, p in tr.model.named_parameters()})
    # With row 1 out, row 0 is alone in its group (no baseline: no advantage), so only the
    # second group moves the weights, and differently from the full batch.
    assert any(not torch.allclose(deltas[0][n], d) for n, d in deltas[1].items())
    assert sum(float(d.abs().sum()) for d in deltas[1].values()) > 0
