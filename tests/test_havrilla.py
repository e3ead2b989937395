"""Havrilla et al.'s pieces: the outcome reward model (learns a known ranking, reranks, rewards),
return-conditioned RL, and the experiment that compares them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlsf.algorithms import ALGORITHMS
from rlsf.algorithms.rcrl import outcome_label, outcome_labels
from rlsf.config import Config
from rlsf.settings import ConfigError
from rlsf.stages.evaluate import summarize
from rlsf.experience import Experience
from rlsf.stages.experiment import arm_config, check_experiment, eval_points, expand_arms, format_table
from rlsf.feedback.certificate import Certificate
from rlsf.feedback.rewards import mix_outcome_scores
from rlsf.models.orm import OutcomeRewardModel, collate_scored, encode, last_position_scores, orm_loss
from rlsf.stages.orm import auc, held_out_figures
from rlsf.rollout.collect import score_with_orm, with_outcome
from rlsf.evaluation.selectors import SELECTORS
from rlsf.tasks import get_task
from rlsf.runtime.utils import Timer

from test_training import tiny_cfg


# ---- the math ---------------------------------------------------------------------------------------
def test_orm_loss_is_bce_over_scored_positions_only() -> None:
    logits = torch.tensor([[0.0, 2.0, 9.0], [1.0, -1.0, 5.0]])
    mask = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (bce(torch.tensor(2.0), torch.tensor(1.0)) + bce(torch.tensor(1.0), torch.tensor(0.0))
                + bce(torch.tensor(-1.0), torch.tensor(0.0))) / 3
    assert orm_loss(logits, labels, mask).item() == pytest.approx(expected.item())
    assert orm_loss(logits, labels, torch.zeros_like(mask)).item() == 0.0  # nothing scored: no NaN


def test_last_position_scores_reads_the_end_of_each_solution() -> None:
    logits = torch.tensor([[5.0, 0.0, 7.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert last_position_scores(logits, mask).tolist() == pytest.approx([torch.sigmoid(torch.tensor(7.0)).item(),
                                                                         torch.sigmoid(torch.tensor(4.0)).item()])


def test_auc_and_held_out_figures() -> None:
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(auc([0.3], [True]))
    rows = [{"id": 1, "correct": True}, {"id": 1, "correct": False}, {"id": 2, "correct": False},
            {"id": 2, "correct": True}]
    figs = held_out_figures(rows, [0.9, 0.2, 0.6, 0.4])  # problem 2: the wrong one ranked first
    assert figs["rerank"] == 0.5 and figs["random"] == 0.5 and figs["accuracy"] == 0.5 and figs["auc"] == 0.75


def test_encode_scores_the_solution_and_caps_the_length(tokenizer) -> None:
    ids, n = encode(tokenizer, "Question? ", "x = 3\n#### 3", max_length=1024)
    assert tokenizer.decode(ids[-n:]) == "x = 3\n#### 3"
    ids, n = encode(tokenizer, "Question? " * 50, "1 + 1 = 2 " * 50, max_length=40)
    assert len(ids) <= 40 and n >= 1
    ids, n = encode(tokenizer, "Question?", "", max_length=1024)
    assert n == 1  # an empty solution is scored at the prompt's last token
    batch = collate_scored([([5, 6, 7], 2), ([8], 1)], pad_id=0)
    assert batch["scored"].tolist() == [[0, 1, 1], [1, 0, 0]] and batch["attention_mask"].tolist() == [[1, 1, 1],
                                                                                                       [1, 0, 0]]


def test_mix_outcome_scores_puts_the_score_on_the_last_token() -> None:
    rewards = torch.tensor([[0.0, -1.0, 1.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    scores = torch.tensor([0.25, 0.75, 0.9])
    mixed = mix_outcome_scores(rewards, mask, scores, checker_weight=1.0, score_weight=2.0)
    assert mixed.tolist() == [[0.0, -1.0, 1.5], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    alone = mix_outcome_scores(rewards, mask, scores, checker_weight=0.0)
    assert alone.tolist() == [[0.0, 0.0, 0.25], [0.75, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_rerank_selector_picks_the_top_score_and_skips_failed_checks() -> None:
    certs = [Certificate(0, "wrong"), Certificate(1, "correct", True), Certificate(0, "x", failed=True)]
    rerank = SELECTORS["rerank"]
    assert rerank({}, [], certs, [0.1, 0.8, 0.3]) == 1
    assert rerank({}, [], certs, [0.9, 0.8, 0.99]) == 0  # the failed check is passed over
    assert rerank({}, [], certs[2:], [0.5]) is None
    with pytest.raises(ValueError, match="eval.orm"):
        rerank({}, [], certs, None)


def test_summarize_reports_rerank_at_k() -> None:
    task = get_task("game24")
    examples = [{"id": 0, "numbers": [1, 2, 3, 4]}, {"id": 1, "numbers": [1, 2, 3, 4]}]
    good, bad = Certificate(1.0, "correct", True), Certificate(0.0, "wrong")
    samples = [[bad, good], [good, bad]]
    figs = summarize(task, examples, [bad, bad], samples, [["a", "b"], ["c", "d"]], ["first", "rerank"],
                     scores=[[0.2, 0.7], [0.1, 0.9]])
    assert figs["first@2"] == 0.5 and figs["rerank@2"] == 0.5  # problem 0 reranked right, problem 1 wrong
    figs = summarize(task, examples, [bad, bad], samples, [["a", "b"], ["c", "d"]], ["rerank"],
                     scores=[[0.2, 0.7], [0.9, 0.1]])
    assert figs["rerank@2"] == 1.0


# ---- the ORM learns a ranking that is known ------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_orm(tiny_model_dir, tmp_path_factory, shared_data):
    """An ORM trained on SVAMP problems where the right ranking is known: each problem has a solution
    ending in its correct answer (label 1) and one that gives no answer (label 0)."""
    from rlsf.stages.orm import train_orm

    task = get_task("svamp")
    problems = task.load("train")[:24]
    rows = []
    for ex in problems:
        rows.append({"id": ex["id"], "completion": ex["solution"], "correct": True})
        rows.append({"id": ex["id"], "completion": "I am not sure how to solve this one.", "correct": False})
    out = tmp_path_factory.mktemp("orm")
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config.load(None, {"model.name": tiny_model_dir, "model.autocast": "none", "task.name": "svamp",
                             "orm.prompts": 24, "orm.epochs": 6, "orm.batch_size": 8, "orm.lr": 1e-3,
                             "orm.head_lr": 1e-2, "orm.val_fraction": 0.25, "run.output_dir": str(out),
                             "run.resume": True, "run.progress": False, "check.workers": 0})
    info = train_orm(cfg)
    return out, info, problems


def test_orm_learns_the_known_ranking(trained_orm) -> None:
    out, info, problems = trained_orm
    assert info["held_out/samples"] == 12  # 6 of the 24 problems held out, 2 solutions each
    assert info["held_out/rerank"] == 1.0 and info["held_out/random"] == 0.5
    assert info["held_out/auc"] == 1.0
    assert (out / "metrics.jsonl").is_file() and json.loads((out / "orm.json").read_text())["task"] == "svamp"
    orm = OutcomeRewardModel.load(out)
    task = get_task("svamp")
    unseen = task.load("test")[:4]  # never in training: the ranking carries over
    good = score_with_orm(orm, task, unseen, [ex["solution"] for ex in unseen])
    bad = score_with_orm(orm, task, unseen, ["I am not sure how to solve this one."] * 4)
    assert all(g > b for g, b in zip(good, bad)), (good, bad)


def test_rlsf_orm_refuses_a_single_label(tiny_model_dir, tmp_path, shared_data) -> None:
    from rlsf.errors import RlsfError
    from rlsf.stages.orm import train_orm

    (tmp_path / "samples.jsonl").write_text(json.dumps({"id": "chal-1", "completion": "x", "correct": False}) + "\n")
    cfg = Config.load(None, {"model.name": tiny_model_dir, "model.autocast": "none", "task.name": "svamp",
                             "orm.prompts": 5, "run.output_dir": str(tmp_path), "run.resume": True,
                             "run.progress": False})
    task = get_task("svamp")
    first = task.load("train")[0]["id"]
    (tmp_path / "samples.jsonl").write_text(json.dumps({"id": first, "completion": "x", "correct": False}) + "\n")
    with pytest.raises(RlsfError, match="one label"):
        train_orm(cfg)


def test_orm_folder_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not an outcome reward model folder"):
        OutcomeRewardModel.load(tmp_path)


def test_orm_reward_and_rerank_in_the_engine(trained_orm, tiny_model_dir, tmp_path) -> None:
    """PPO trained on the ORM alone (reward.checker_weight 0), then rerank@k in `rlsf eval`."""
    from rlsf.stages.evaluate import evaluate
    from rlsf.stages.train import RLTrainer

    out, _, _ = trained_orm
    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"task.name": "svamp", "reward.orm": str(out),
                                                "reward.checker_weight": 0.0, "train.steps": 1})
    trainer = RLTrainer(cfg)
    exp = trainer.rollout_step()
    stats = trainer.outcome_scores(exp)
    assert 0.0 < stats["reward/orm"] < 1.0
    last = exp.response_mask.sum(1) - 1
    at_end = exp.rewards[torch.arange(len(exp)), last]
    assert float(exp.rewards.sum()) == pytest.approx(float(at_end.sum()))  # only the ORM's score, at the end
    metrics = trainer.train()
    assert "reward/orm" in metrics and "timing/orm" in metrics
    ev = tiny_cfg(tiny_model_dir, tmp_path, **{"task.name": "svamp", "eval.orm": str(out), "eval.k": 2,
                                               "eval.selectors": ["maj", "rerank"], "eval.num_examples": 2})
    figs = evaluate(ev, output=tmp_path / "eval.json")
    assert "rerank@2" in figs and 0.0 <= figs["rerank@2"] <= figs["pass@2"]
    samples = [json.loads(x) for x in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["orm_score"] <= 1.0 for r in samples if r["kind"] == "sample")


def test_orm_config_contradictions() -> None:
    with pytest.raises(ConfigError, match="eval.orm"):
        Config.load(None, {"eval.selectors": ["maj", "rerank"]})
    with pytest.raises(ConfigError, match="no reward at all"):
        Config.load(None, {"reward.checker_weight": 0})
    with pytest.raises(ConfigError, match="orm.val_fraction"):
        Config.load(None, {"orm.val_fraction": 1.0})


# ---- return-conditioned RL ---------------------------------------------------------------------------
def test_outcome_labels_and_markers() -> None:
    assert outcome_labels([]) == ["bad", "good"] and outcome_labels([0.0, 1.0]) == ["return0", "return1", "return2"]
    assert outcome_label(True, 0.0, []) == "good" and outcome_label(False, 5.0, []) == "bad"
    assert [outcome_label(False, r, [0.0, 1.0]) for r in (-0.5, 0.0, 0.7, 1.5)] == ["return0", "return1", "return1",
                                                                                   "return2"]
    msgs = [{"role": "system", "content": "Solve."}, {"role": "user", "content": "2+2?"}]
    assert with_outcome(msgs, "good")[0]["content"] == "[good] Solve." and with_outcome(msgs, "")[0] is msgs[0]
    assert msgs[0]["content"] == "Solve."  # the task's messages are not changed in place


def test_rcrl_labels_every_sample_by_its_outcome(tiny_model_dir, tmp_path, shared_data) -> None:
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.runtime.device import setup

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"task.name": "svamp", "train.algorithm": "rcrl", "rcrl.lr": 1e-2,
                                                "rcrl.batch_size": 2, "train.steps": 1})
    task = get_task("svamp")
    ex = task.load("train")[:2]
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    algo = ALGORITHMS["rcrl"](model, tok, task, cfg, setup(cfg))
    # Offline (the paper's): the start model samples from plain prompts; evaluation asks for "good".
    assert algo.sampling_condition is None and ALGORITHMS["rcrl"].evaluation_condition(cfg) == "good"
    n = 3
    exp = Experience(torch.full((n, 2), 7), torch.ones(n, 2, dtype=torch.long), torch.tensor([[5, 6], [8, 9], [4, 0]]),
                     torch.tensor([[1, 1], [1, 1], [1, 0]]), [False, True, False], examples=[ex[0], ex[0], ex[1]],
                     certificates=[Certificate(1, "correct", True), Certificate(0, "wrong"),
                                   Certificate(0, "x", failed=True)], texts=[""] * n)
    pairs = algo.select(exp)
    assert len(pairs) == 2  # the failed check has no label; the truncated wrong one is kept as "bad"
    prompts = [tok.decode(p) for p, _ in pairs]
    assert "[good] " in prompts[0] and "[bad] " in prompts[1] and pairs[1][1] == [8, 9]
    stats = algo.step(exp, Timer())
    assert stats["ei/dataset"] == 2 and stats["loss/sft"] > 0


def test_rcrl_trains_in_the_engine_and_samples_conditioned(tiny_model_dir, tmp_path) -> None:
    from rlsf.stages.train import RLTrainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "rcrl", "train.steps": 2, "rcrl.batch_size": 2,
                                                "rcrl.variant": "online", "rcrl.rounds": "batch"})
    trainer = RLTrainer(cfg)
    procedure = ALGORITHMS["rcrl"].procedure(cfg)
    assert "online variant" in procedure and "not the paper's" in procedure
    exp = trainer.rollout_step()
    assert all("[good] " in trainer.tokenizer.decode(p[m.bool()]) for p, m in zip(exp.prompt_ids, exp.prompt_mask))
    metrics = trainer.train()
    assert metrics["ei/dataset"] >= 1  # every checked sample is kept, labelled


def test_rcrl_thresholds_must_increase() -> None:
    with pytest.raises(ConfigError, match="rcrl.thresholds"):
        Config.load(None, {"train.algorithm": "rcrl", "rcrl.thresholds": [1.0, 0.5]})


@pytest.mark.parametrize("settings, match", [({"rcrl.variant": "replay"}, "rcrl.variant"),
                                             ({"rcrl.restart": False}, "rcrl.restart"),
                                             ({"rcrl.sample_conditioned": True}, "rcrl.sample_conditioned")])
def test_rcrl_offline_refuses_the_online_variants_settings(settings, match) -> None:
    with pytest.raises(ConfigError, match=match):
        Config.load(None, {"train.algorithm": "rcrl", **settings})
    if match != "rcrl.variant":  # the online variant takes them
        Config.load(None, {"train.algorithm": "rcrl", "rcrl.variant": "online", **settings})


def test_offline_rcrl_samples_the_start_model_and_fits_once_at_the_end(space_first, tiny_model_dir, tmp_path,
                                                                       monkeypatch) -> None:
    """The paper's RCRL: every completion comes from the start model, with plain prompts; the steps
    before the last only sample and label; the last fits the start model on all of them. Continued
    past its end (as rlsf experiment does between evaluations), the run puts the start weights back
    before sampling again and refits on the larger set."""
    import rlsf.stages.train as train_stage
    from rlsf.stages.pipeline import with_settings
    from rlsf.stages.train import RLTrainer

    def weights(model) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def same(a, b) -> bool:
        return all(torch.equal(a[n], b[n]) for n in a)

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "task.name": space_first, "task.train_examples": 3, "train.algorithm": "rcrl", "train.steps": 2,
        "train.save_every": 1, "rollout.max_new_tokens": 2, "rollout.ignore_eos": True, "rcrl.lr": 1e-2,
        "rcrl.batch_size": 4})
    calls = []
    real = train_stage.rollout_episodes

    def spy(model, tokenizer, task, examples, *args, **kw):
        calls.append({"condition": kw.get("condition"), "weights": weights(trainer.model)})
        return real(model, tokenizer, task, examples, *args, **kw)

    monkeypatch.setattr(train_stage, "rollout_episodes", spy)
    trainer = RLTrainer(cfg)
    start = weights(trainer.model)
    trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["ei/steps"] for r in rows][0] == 0 and rows[1]["ei/steps"] >= 1 and "loss/sft" in rows[1]
    assert rows[1]["ei/dataset"] == 2 * 3 * 2 and rows[1]["ei/epochs"] == pytest.approx(1.0, abs=0.34)
    assert all(c["condition"] is None for c in calls) and all(same(c["weights"], start) for c in calls)
    assert not same(weights(trainer.model), start)  # the model saved is the fit
    labelled = [trainer.tokenizer.decode(p) for p, _ in trainer.algo.data]
    assert all(("[good] " in t) != ("[bad] " in t) for t in labelled)
    # One more step, resumed from the end: sampled by the start model again, then refitted on all 18.
    more = RLTrainer(with_settings(cfg, **{"train.steps": 3, "run.resume": True}))
    trainer = more
    calls.clear()
    metrics = more.train()
    assert len(calls) == 2 and all(same(c["weights"], start) for c in calls)
    assert metrics["ei/dataset"] == 3 * 3 * 2 and metrics["ei/steps"] >= 1


# ---- the experiment ------------------------------------------------------------------------------------
def test_eval_points_and_arm_settings() -> None:
    assert eval_points(384, 32, 3) == [4, 8, 12] and eval_points(64, 32, 2) == [1, 2]
    cfg = Config.load(None, {"task.options": {"dense": "none", "test_size": 100}})
    arm = arm_config(cfg, {"task.options.dense": "symbolic", "train.algorithm": "grpo"})
    assert arm.task.options == {"dense": "symbolic", "test_size": 100} and arm.train.algorithm == "grpo"
    assert cfg.task.options["dense"] == "none"  # the base is untouched


@pytest.mark.parametrize("arms, match", [({}, "at least one arm"), ({"a": {"train.algorithm": "nope"}}, "arms.a"),
                                         ({"a": {"reward.orm": "orm"}}, "experiment.orm is false")])
def test_experiment_config_errors(arms, match) -> None:
    cfg = Config.load(None, {"experiment.arms": arms, "experiment.orm": False})
    with pytest.raises(ConfigError, match=match):
        check_experiment(cfg)
    with pytest.raises(ConfigError, match="experiment.samples"):
        check_experiment(Config.load(None, {"experiment.arms": {"a": {}}, "experiment.samples": 30}))


def test_experiment_runs_every_arm_and_resumes(tiny_model_dir, tmp_path) -> None:
    """SFT, an evaluation of the start, three arms with two evaluations each, a table and a plot;
    a second run finds everything done and trains nothing."""
    from rlsf.stages.experiment import run_experiment

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "experiment.samples": 8, "experiment.evaluations": 2, "experiment.orm": False, "eval.selectors": ["maj"],
        "experiment.examples": 2,
        "experiment.arms": {"ppo": {"train.algorithm": "ppo"},
                            # rounds over every one of 2 training problems: 2 x 2 samples, a batch's worth
                            "ei": {"train.algorithm": "expert_iteration", "task.train_examples": 2},
                            "rcrl": {"train.algorithm": "rcrl", "task.train_examples": 2}}})
    results = run_experiment(cfg)
    root = tmp_path / "run"
    assert [p["samples"] for p in results["arms"]["ppo"]["curve"]] == [0, 4, 8]
    assert results["arms"]["rcrl"]["curve"][-1]["condition"] == "good"
    steps = [json.loads(x)["step"] for x in (root / "arms" / "ei" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # trained to the first evaluation, then resumed to the budget
    table = (root / "table.md").read_text()
    assert "| SFT (start) | 0 |" in table and "| rcrl | 8 |" in table and "maj@1" in table
    assert "Arms: ppo: ppo; ei: expert_iteration; rcrl: rcrl, offline" in table  # what each arm ran
    assert (root / "plot.png").stat().st_size > 0 and (root / "plot_kl.png").stat().st_size > 0  # ppo logs KL
    listed = [line for line in table.split("Greedy completions")[1].splitlines() if line.startswith("| ")]
    assert len(listed) == 3 and listed[0].startswith("| problem | SFT (start) | ppo | ei | rcrl |")
    first = json.loads((root / "eval" / "sft_samples.jsonl").read_text().splitlines()[0])
    task = get_task(cfg.task.name, **cfg.task.options)
    shown = " ".join(task.prompt(task.example(first["id"]))[-1]["content"].split())[:80]
    assert listed[1].startswith(f"| {first['id']}: {shown} |")  # the problem as the model saw it
    times = json.loads((root / "times.json").read_text())
    again = run_experiment(cfg)
    assert json.loads((root / "times.json").read_text()) == times  # nothing was redone
    assert again["arms"]["ei"]["curve"] == results["arms"]["ei"]["curve"]
    assert (root / "table.md").read_text() == table and format_table(again) in table


def test_seeds_expand_every_arm_seed_major_and_the_table_gives_mean_and_sd() -> None:
    arms = {"a": {"reward.mode": "token"}, "b": {}}
    assert expand_arms(arms, []) == {"a": ("a", {"reward.mode": "token"}), "b": ("b", {})}
    runs = expand_arms(arms, [0, 1])
    assert list(runs) == ["a-s0", "b-s0", "a-s1", "b-s1"]  # seed-major: a stopped run has every arm
    assert runs["a-s1"] == ("a", {"reward.mode": "token", "run.seed": 1})
    start = {"maj@1": 0.25, "num_examples": 10, "task": "arith", "split": "test", "k": 4}
    results = {"sft": start, "table": ["maj@1"], "arms": {
        name: {"arm": arm, "curve": [{"samples": 0, **start}, {"samples": 8, "maj@1": v}]}
        for (name, (arm, _)), v in zip(runs.items(), [0.4, 0.1, 0.6, 0.1])}}
    results["arms"]["b-s0"].update(settings={"model.name": "base"},
                                   curve=[{"samples": 0, "maj@1": 0.0}, {"samples": 8, "maj@1": 0.1}])
    table = format_table(results)
    assert "| base (start) | 0 | 0.000 |" in table  # an arm's own start has its row
    assert "| a (2 seeds) | 8 | 0.500 ± 0.141 |" in table and "| b (2 seeds) | 8 | 0.100 ± 0.000 |" in table
    assert "Mean ± standard deviation over seeds" in table
    for seeds, match in [([0, 0], "distinct"), (["1"], "integers"), ([True], "integers")]:
        with pytest.raises(ConfigError, match=match):
            check_experiment(Config.load(None, {"experiment.arms": {"a": {}}, "experiment.seeds": seeds,
                                                "experiment.orm": False}))
    with pytest.raises(ConfigError, match="sets run.seed"):
        check_experiment(Config.load(None, {"experiment.arms": {"a": {"run.seed": 3}}, "experiment.seeds": [0],
                                            "experiment.orm": False}))


def test_experiment_with_seeds_trains_each_seed_and_plots_training(tiny_model_dir, tmp_path) -> None:
    from rlsf.stages.experiment import run_experiment

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "sft.steps": 0, "experiment.samples": 4, "experiment.evaluations": 1, "experiment.orm": False,
        "eval.selectors": ["maj"], "experiment.seeds": [0, 1], "experiment.arms": {"ppo": {"ppo.batch_entropy_coef": 0.3}},
        "experiment.table": ["maj@1", "train/kl", "train/batch_entropy"]})
    results = run_experiment(cfg)
    root = tmp_path / "run"
    assert list(results["arms"]) == ["ppo-s0", "ppo-s1"]
    seeds = [Config.load(root / "arms" / n / "config.yaml", {}).run.seed for n in results["arms"]]
    assert seeds == [0, 1]
    table = (root / "table.md").read_text()
    assert "| arm | samples | maj@1 | train/kl | train/batch_entropy |" in table and "| ppo (2 seeds) | 4 |" in table
    assert table.split("\n")[2].endswith("| - | - |")  # the start has no training figures
    last = [json.loads(x) for x in (root / "arms" / "ppo-s1" / "metrics.jsonl").read_text().splitlines()][-1]
    assert results["arms"]["ppo-s1"]["curve"][-1]["train/batch_entropy"] == pytest.approx(last["batch_entropy"])
    assert (root / "plot_training.png").stat().st_size > 0
    assert not (root / "arms" / "ppo-s0" / "checkpoints").exists() and (root / "arms" / "ppo-s0" / "model").is_dir()
    # Resuming with other settings would mix two configurations in one table: refused, saying what changed.
    with pytest.raises(ConfigError, match=r"arm ppo-s0 was run with other settings \(ppo.kl_coef: 0.05 -> 0.2\)"):
        run_experiment(arm_config(cfg, {"ppo.kl_coef": 0.2}))
    with pytest.raises(ConfigError, match="the start .* use another run.output_dir"):
        run_experiment(arm_config(cfg, {"eval.k": 3}))


# ---- learning: EI and RCRL change the policy the way they should ----------------------------------------
@pytest.fixture
def space_first():
    """A toy task for the tiny random model: a completion is correct when its text starts with a
    space (about 2 in 3 of its samples do), so its success rate can move within a few rounds."""
    from rlsf.tasks.base import _REGISTRY, Task, register

    @register("test_space_first")
    class SpaceFirst(Task):
        def load(self, split):
            return [{"id": i, "q": f"Write anything, number {i}."} for i in range(16)]

        def prompt(self, ex):
            return [{"role": "user", "content": ex["q"]}]

        def check(self, ex, completion):
            ok = completion.startswith(" ")
            return Certificate(float(ok), "correct" if ok else "wrong", ok, answer=completion[:1])

    yield "test_space_first"
    _REGISTRY.pop("test_space_first")


def test_expert_iteration_raises_the_success_rate(space_first, tiny_model_dir, tmp_path) -> None:
    from rlsf.stages.train import RLTrainer

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{
        "task.name": space_first, "train.algorithm": "expert_iteration", "train.steps": 4,
        "expert_iteration.lr": 1e-2, "expert_iteration.batch_size": 8, "expert_iteration.restart": False,
        "expert_iteration.rounds": "batch",  # 4 steps of a 16-sample batch each, continuing: a quick mover
        "rollout.prompts_per_step": 4, "rollout.samples_per_prompt": 4, "rollout.max_new_tokens": 3,
        "rollout.ignore_eos": True})  # every completion is cut by design: EI keeps them
    trainer = RLTrainer(cfg)

    def success() -> float:  # over 8 batches of 4 problems x 4 samples
        certs = [c for _ in range(8) for c in trainer.rollout_step().certificates]
        return sum(c.correct for c in certs) / len(certs)

    before = success()
    metrics = trainer.train()
    after = success()
    assert metrics["ei/dataset"] > 0
    assert after >= before + 0.08, (before, after)


def test_rcrl_learns_to_tell_the_outcomes_apart(space_first, tiny_model_dir, tmp_path) -> None:
    """After rounds on one good and one bad completion, each is likelier under its own label."""
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.runtime.device import setup
    from rlsf.algorithms.supervised import collate, completion_loss

    cfg = tiny_cfg(tiny_model_dir, tmp_path, **{"task.name": space_first, "train.algorithm": "rcrl",
                                                "rcrl.lr": 1e-2, "rcrl.batch_size": 2, "rcrl.dedupe": False})
    task = get_task(space_first)
    ex = task.load("train")[0]
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    algo = ALGORITHMS["rcrl"](model, tok, task, cfg, setup(cfg))
    good, bad = tok(" fine", add_special_tokens=False)["input_ids"], tok("no", add_special_tokens=False)["input_ids"]
    n = max(len(good), len(bad))
    resp = torch.tensor([good + [0] * (n - len(good)), bad + [0] * (n - len(bad))])
    mask = torch.tensor([[1] * len(good) + [0] * (n - len(good)), [1] * len(bad) + [0] * (n - len(bad))])
    exp = Experience(torch.full((2, 2), 7), torch.ones(2, 2, dtype=torch.long), resp, mask, [False, False],
                     examples=[ex, ex], certificates=[task.check(ex, " fine"), task.check(ex, "no")], texts=[""] * 2)

    def nll(completion: list[int], label: str) -> float:
        with torch.no_grad():
            return float(completion_loss(model, collate([(algo.labelled_prompt(ex, label), completion)], 0)))

    for _ in range(6):
        algo.step(exp, Timer())
    assert nll(good, "good") < nll(good, "bad") and nll(bad, "bad") < nll(bad, "good")


def test_rlsf_orm_never_overwrites_and_names_a_bad_samples_line(tiny_model_dir, tmp_path, shared_data) -> None:
    from rlsf.errors import RlsfError
    from rlsf.stages.orm import train_orm

    (tmp_path / "samples.jsonl").write_text('{"id": 1, "completion": "x", "correct": true}\n{"id": 2\n')
    base = {"model.name": tiny_model_dir, "model.autocast": "none", "task.name": "svamp", "orm.prompts": 5,
            "run.output_dir": str(tmp_path), "run.progress": False}
    with pytest.raises(ConfigError, match="already holds an ORM"):
        train_orm(Config.load(None, base))
    with pytest.raises(RlsfError, match="line 2: not a labelled sample"):
        train_orm(Config.load(None, {**base, "run.resume": True}))
