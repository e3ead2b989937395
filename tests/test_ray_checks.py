"""The check service on Ray (``check.backend: ray``): the same certificates as the process pool on
every task, the same time limit, failure outcomes and task life cycle. One local Ray instance
(2 CPUs) serves the module; each service starts and ends its own actors on it."""

from __future__ import annotations

import os
import sys
import time

import pytest

from checker_tasks import Misbehaving
from rlsf.feedback.certificate import CHECKER_FAILED
from rlsf.feedback.offsets import Detokenizer
from rlsf.feedback.service import CheckService
from rlsf.tasks import available_tasks, get_task


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray  # a dev dependency: its absence is a failure, not a skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    yield
    ray.shutdown()


def certificates(service, examples, texts):
    return [c.certificate.to_dict() for c in service.check(examples, texts=texts)]


@pytest.mark.parametrize("name", sorted(n for n, cls in available_tasks().items() if cls.__module__.startswith("rlsf.")))
def test_both_backends_give_the_same_certificates_on_every_task(name):
    task = get_task(name)
    examples = task.load("test")[:2]
    texts = ["", "The answer is 42.", *(task.demonstration(ex) or str(ex.get("id")) for ex in examples)]
    rows = [ex for ex in examples for _ in texts]
    completions = texts * len(examples)
    with CheckService(task, workers=2, backend="processes", timeout_s=120) as pool:
        expected = certificates(pool, rows, completions)
    with CheckService(task, workers=2, backend="ray", timeout_s=120) as ray_service:
        got = certificates(ray_service, rows, completions)
    assert got == expected
    assert not any(c["failed"] for c in got)


def test_ids_are_detokenised_in_the_actor(tokenizer):
    game = get_task("game24")
    ex = game.load("test")[0]
    ids = tokenizer("1 + 2 = 3 (left: 3 3 4)\nAnswer: 4 = 24", add_special_tokens=False)["input_ids"]
    detok = Detokenizer.from_tokenizer(tokenizer)
    with CheckService(game, detok, workers=1) as pool, CheckService(game, detok, workers=1, backend="ray") as ray_service:
        a, b = pool.submit(ex, ids=ids).result(), ray_service.submit(ex, ids=ids).result()
    assert (a.text, a.offsets, a.certificate) == (b.text, b.offsets, b.certificate)


def test_a_hanging_checker_times_out_on_ray_and_the_service_carries_on(tmp_path):
    task = Misbehaving(log_dir=str(tmp_path))
    with CheckService(task, workers=1, timeout_s=2.0, backend="ray") as service:
        t0 = time.perf_counter()
        slow, fine = (c.certificate for c in service.check([{"id": 0}] * 2, texts=["sleep", "right"]))
        assert time.perf_counter() - t0 < 40
    assert slow.failed and slow.verdict == CHECKER_FAILED and "timed out after 2 s" in slow.info["checker_error"]
    assert fine.correct and not fine.failed and service.failures == 1


@pytest.mark.parametrize("word, message", [("crash", "check failed"), ("raise", "RuntimeError: checker bug"),
                                           ("junk", "instead of a certificate")])
def test_crashing_raising_or_junk_checkers_fail_the_check_on_ray(tmp_path, word, message):
    task = Misbehaving(log_dir=str(tmp_path))
    with CheckService(task, workers=1, timeout_s=30, backend="ray") as service:
        bad, fine = (c.certificate for c in service.check([{"id": 0}] * 2, texts=[word, "right"]))
    assert bad.failed and message in bad.info["checker_error"], bad.info
    assert fine.correct


def test_actors_open_and_close_their_task_in_a_folder_the_service_removes(tmp_path):
    task = Misbehaving(log_dir=str(tmp_path))
    with CheckService(task, workers=2, backend="ray") as service:
        seen = {c.certificate.info["pid"] for c in service.check([{"id": 0}] * 8, texts=["modules"] * 8)}
        workdir = service.workdir
        loaded = {c.certificate.info["loaded"] for c in service.check([{"id": 0}], texts=["modules"])}
    opened = {p.name.split("-")[1] for p in tmp_path.glob("open-*")}
    closed = {p.name.split("-")[1] for p in tmp_path.glob("close-*")}
    assert {str(p) for p in seen} <= opened and opened == closed and len(opened) == 2
    assert loaded == {""}  # actors import neither torch nor transformers
    assert not workdir.exists()


def test_ray_settings_are_checked():
    from rlsf.config import Config
    from rlsf.settings import ConfigError

    assert Config.load(None, {"check.backend": "ray", "check.ray_address": "auto"}).check.backend == "ray"
    with pytest.raises(ConfigError, match="check.backend: must be processes or ray"):
        Config.load(None, {"check.backend": "dask"})
    with pytest.raises(ConfigError, match="check.ray_address: is set but check.backend is not ray"):
        Config.load(None, {"check.ray_address": "auto"})
