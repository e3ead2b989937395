"""Engine contracts: algorithms as plug-ins, per-task evaluation, `rlsf check`, the data convention."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from rlsf.algorithms import ALGORITHMS, Algorithm, register
from rlsf.algorithms.core import masked_mean
from rlsf.cli.main import build_parser, main
from rlsf.config import Config
from rlsf.settings import ConfigError, opt, require
from rlsf.stages.evaluate import summarize
from rlsf.feedback.certificate import Certificate
from rlsf.tasks import TaskError, get_task
from rlsf.tasks.base import DATA_ENV, Task


# ---- a new algorithm is one file -------------------------------------------------------------

@dataclass
class ReinforceConfig:
    baseline: float = opt(0.0, "Constant subtracted from each completion's total reward.")
    lr: float = opt(1e-3, "SGD learning rate.")

    def validate(self, cfg) -> None:
        require(self.baseline > -10, "reinforce.baseline", "must be > -10")


class Reinforce(Algorithm):
    """Plain REINFORCE on total rewards: the kind of file a new algorithm is."""

    Config = ReinforceConfig

    def __init__(self, model, tokenizer, task, cfg, runtime):
        super().__init__(model, tokenizer, task, cfg, runtime)
        self.opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=self.acfg.lr)

    def step(self, exp, timer):
        from rlsf.algorithms.base import response_forward

        mask = exp.loss_mask
        ret = (exp.rewards * mask).sum(1, keepdim=True) - self.acfg.baseline
        fo = response_forward(self.model, exp, temperature=self.cfg.rollout.temperature, precision="none")
        loss = -masked_mean(fo.logp * ret, mask)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss/reinforce": float(loss.detach()), "seen_certificates": len(exp.certificates)}


@pytest.fixture
def reinforce():
    """Register the plug-in for one test (other tests iterate over the built-in algorithms)."""
    from rlsf.settings import EXTRA_SECTIONS

    register("reinforce")(Reinforce)
    yield
    ALGORITHMS.pop("reinforce")
    EXTRA_SECTIONS.pop("reinforce")


def test_a_registered_algorithm_gets_its_section_flags_and_runs(reinforce, tiny_model_dir, tmp_path):
    from test_training import tiny_cfg

    from rlsf.stages.train import RLTrainer

    cfg = Config.load(None, {"train.algorithm": "reinforce", "reinforce.baseline": "0.5"})
    assert cfg.reinforce.baseline == 0.5 and cfg.to_dict()["reinforce"] == {"baseline": 0.5, "lr": 1e-3}
    with pytest.raises(ConfigError, match="reinforce.baseline: must be > -10"):
        Config.load(None, {"train.algorithm": "reinforce", "reinforce.baseline": -20})
    with pytest.raises(ConfigError, match="train.algorithm: must be one of"):
        Config.load(None, {"train.algorithm": "nope"})
    helps = build_parser().parse_args(["train", "--reinforce.baseline", "2"])
    assert vars(helps)["reinforce.baseline"] == "2"
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "reinforce", "train.steps": 1}))
    metrics = tr.train()
    assert metrics["seen_certificates"] == 4 and "loss/reinforce" in metrics


# ---- evaluation per task -----------------------------------------------------------------------

class Graded(Task):
    """A task with one 0/1 metric and one graded one."""

    def load(self, split):
        return []

    def prompt(self, example):
        return []

    def check(self, example, completion):
        return Certificate(0.0, "x")

    def metrics(self, example, cert):
        return {"success": float(cert.correct), "similarity": cert.score}


def test_summary_uses_the_tasks_metrics_and_selectors():
    task = Graded()
    c = lambda score, ok, ans: Certificate(score, "v", ok, answer=ans)  # noqa: E731
    examples = [{"id": 1}, {"id": 2}]
    greedy = [c(0.5, False, "a"), c(1.0, True, "b")]
    samples = [[c(0.2, False, "x"), c(0.9, True, "y"), c(0.2, False, "x")],   # maj picks "x" (wrong)
               [c(1.0, True, "b"), Certificate.checker_failed("timeout"), c(0.4, False, None)]]
    out = summarize(task, examples, greedy, samples, [["", "", ""]] * 2, ["maj", "first"])
    assert out["maj@1"] == out["greedy/success"] == 0.5 and out["greedy/similarity"] == 0.75
    assert out["pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert out["pass@3"] == 1.0
    assert out["best@3/similarity"] == pytest.approx((0.9 + 1.0) / 2)  # a failed check counts 0
    assert out["mean@3/similarity"] == pytest.approx(((0.2 + 0.9 + 0.2) / 3 + (1.0 + 0 + 0.4) / 3) / 2)
    assert out["maj@3"] == 0.5 and out["maj@3/similarity"] == pytest.approx((0.2 + 1.0) / 2)
    assert out["first@3"] == 0.5
    assert "pass@2/similarity" not in out  # pass@k only for 0/1 metrics


# ---- rlsf check ----------------------------------------------------------------------------------

GOOD = "4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\n2 * 12 = 24 (left: 24)\nAnswer: (6 - 4) * (4 + 8) = 24"


@pytest.fixture
def puzzle_4468():
    task = get_task("game24")
    return next(ex for split in task.splits for ex in task.load(split) if ex["numbers"] == [4, 4, 6, 8])


def test_check_prints_the_certificate(tmp_path, capsys, puzzle_4468):
    f = tmp_path / "c.txt"
    f.write_text(GOOD.replace("= 2 (left", "= 3 (left"))
    args = ["check", "--task", "game24", "--example", str(puzzle_4468["id"]), "--completion", str(f)]
    assert main(args + ["--check.workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "verdict=wrong_step" in out or "verdict=" in out
    assert "6 - 4 is 2, not 3" in out
    assert main(args + ["--json"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificate"]
    assert cert["correct"] is False and any("not 3" in s["message"] for s in cert["spans"])


def test_check_tokens_shows_each_tokens_reward(tmp_path, capsys, tokenizer, puzzle_4468):
    f = tmp_path / "c.txt"
    f.write_text(GOOD)
    assert main(["check", "--task", "game24", "--example", str(puzzle_4468["id"]), "--completion", str(f),
                 "--tokens", "--check.workers", "0"]) == 0
    out = capsys.readouterr().out
    ids = tokenizer(GOOD, add_special_tokens=False)["input_ids"]
    assert f"{len(ids) + 1} tokens" in out  # the completion's tokens and its end of turn
    assert "<|im_end|>" in out and "+1.0000" in out  # the score sits on the end-of-turn token


def test_check_input_file_reports_bad_lines_and_carries_on(tmp_path, capsys, puzzle_4468):
    src = tmp_path / "in.jsonl"
    ex = puzzle_4468["id"]
    src.write_text("\n".join([
        json.dumps({"example": ex, "completion": GOOD}),
        "{not json",
        json.dumps({"example": "no-such-id", "completion": "x"}),
        json.dumps({"example": ex}),
        json.dumps({"example": ex, "completion": "Answer: 4 * 6 = 24"}),
    ]) + "\n")
    dst = tmp_path / "out.jsonl"
    assert main(["check", "--task", "game24", "--input", str(src), "--output", str(dst),
                 "--check.workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3" in err and "no-such-id" in err and "line 4" in err
    rows = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["certificate"]["correct"] is True and "error" in rows[1]
    assert rows[4]["certificate"]["verdict"] == "wrong_answer"


def test_check_errors_are_one_line(capsys):
    assert main(["check", "--task", "game24", "--example", "nope", "--completion", "-"]) == 2
    assert "no example with id 'nope'" in capsys.readouterr().err
    assert main(["check", "--task", "game24", "--example", "901", "--completion", "/no/such/file"]) == 2
    assert "cannot read /no/such/file" in capsys.readouterr().err


# ---- the data convention -------------------------------------------------------------------------

def test_data_dir_env_option_and_packaged_fallback(tmp_path, monkeypatch):
    (tmp_path / "game24").mkdir()
    (tmp_path / "game24" / "24.csv").write_text("Rank,Puzzles\n" + "".join(f"{i},1 2 3 {i}\n" for i in range(1, 6)))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert len(get_task("game24", test_start=0, test_end=2).load("train")) == 3  # from $RLSF_DATA_DIR
    assert len(get_task("game24", data_dir=str(tmp_path), test_start=0, test_end=2).load("test")) == 2
    with pytest.raises(TaskError, match="option data_dir"):
        get_task("game24", data_dir=str(tmp_path / "elsewhere")).load("test")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))  # no game24/ there: the packaged copy
    pytest.importorskip("tot")
    assert len(get_task("game24").load("test")) == 100


def test_unknown_split_names_the_tasks_splits():
    with pytest.raises(TaskError, match="splits: train, test"):
        get_task("game24").load("validation")
    with pytest.raises(ConfigError):
        Config.load(None, {"eval.selectors": ["best-guess"]})


def test_evaluate_leaves_the_callers_random_state_alone(tiny_model_dir, tmp_path):
    """A held-out evaluation in the middle of a run must not reset the run's sampling stream."""
    from test_training import tiny_cfg

    from rlsf.stages.evaluate import evaluate

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = evaluate(tiny_cfg(tiny_model_dir, tmp_path, **{"eval.num_examples": 2}))
    assert torch.equal(torch.get_rng_state(), state)
    again = evaluate(tiny_cfg(tiny_model_dir, tmp_path, **{"eval.num_examples": 2}))
    assert first["pass@1"] == again["pass@1"]  # seeded by run.seed: the same figures
