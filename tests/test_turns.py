"""Self-repair episodes (rollout.turns > 1): layout, per-turn token rewards, credit across turns,
the algorithms on episodes, metrics and evaluation.

The two-turn Game of 24 episode below is built from fixed texts (the real tokenizer, the real
checker, the real chat template) so that its token rewards and advantages can be worked out by
hand from the documented rules; the sampled episodes come from the tiny random model.
"""

from __future__ import annotations

import json

import pytest
import torch

from rlsf.algorithms.advantages import (
    dr_grpo_advantages,
    grpo_advantages,
    grpo_token_advantages,
    returns_to_go,
    rloo_advantages,
    rloo_token_advantages,
)
from rlsf.algorithms.core import clipped_policy_loss, last_token_index
from rlsf.algorithms.turns import EpisodeView, compact, discounted_rewards, expand, group_advantages, turn_factors
from rlsf.config import Config
from rlsf.experience import concat
from rlsf.feedback.offsets import Detokenizer
from rlsf.feedback.service import CheckService
from rlsf.models.loading import load_model, load_tokenizer
from rlsf.rollout.episodes import _assemble, _with_rewards, episode_metrics, feedback_ids, rollout_episodes
from rlsf.experience import Experience, TurnRecord
from rlsf.tasks import get_task

WRONG = "Answer: 4 * (10 - 6) + 5 = 24"  # puzzle 901 is 4 5 6 10: evaluates to 21
RIGHT = "Answer: 4 * 5 + 10 - 6 = 24"


# ---- pure functions ------------------------------------------------------------------------------
def test_compact_and_expand_round_trip():
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0]])
    x = torch.arange(12.0).view(2, 6)
    xc, cols, cmask = compact(x, mask)
    assert xc.tolist() == [[0.0, 1.0, 4.0], [7.0, 8.0, 9.0]]
    assert cmask.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert torch.equal(expand(xc, cols, cmask, 6), x * mask)


def test_turn_factors_discount_only_between_turns():
    turn = torch.tensor([[1, 1, 2, 2, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert turn_factors(turn, mask, 0.9, 0.5)[0].tolist() == pytest.approx([0.9, 0.45, 0.9, 0.45, 0.9, 0.9])


def test_discounted_rewards_give_the_turn_discounted_returns():
    # Compacted: turn 1 = [0, -1], turn 2 = [0, +1], d = 0.5. By hand: G = [-0.5, -0.5, 1, 1].
    rewards = torch.tensor([[0.0, -1.0, 0.0, 1.0]])
    mask = torch.ones(1, 4)
    factors = turn_factors(torch.tensor([[1, 1, 2, 2]]), mask, 1.0, 0.5)
    assert returns_to_go(rewards, mask, factors).tolist() == [[-0.5, -0.5, 1.0, 1.0]]
    plain = discounted_rewards(rewards, mask, factors)
    assert returns_to_go(plain, mask).tolist() == [[-0.5, -0.5, 1.0, 1.0]]


def test_last_token_index_of_a_mask_with_a_gap():
    assert last_token_index(torch.tensor([[1, 1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0]])).tolist() == [5, 0]


# ---- a two-turn episode by hand ----------------------------------------------------------------
@pytest.fixture(scope="module")
def game24():
    return get_task("game24")


def hand_episode(tokenizer, task, texts: list[str]):
    """An episode of these attempts at puzzle 901: each attempt's ids as sampled would be (text +
    <|im_end|>), checked by the real checker, with the real feedback turns between them."""
    from rlsf.rollout.collect import render_prompt

    example = task.example(901)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = tokenizer(render_prompt(tokenizer, task.prompt(example)), add_special_tokens=False)["input_ids"]
    history = list(task.prompt(example))
    segments, records = [], []
    with CheckService(task, Detokenizer.from_tokenizer(tokenizer), workers=0) as checker:
        for t, text in enumerate(texts, start=1):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [end]
            start = sum(len(s) for _, s, _ in segments)
            c = checker.submit(example, ids=ids).result()
            segments.append((t, ids, [0.0] * len(ids)))
            records.append(TurnRecord(start, start + len(ids), c.text, c.offsets, c.certificate))
            if t < len(texts):
                fb_text = task.feedback(example, c.text, c.certificate)
                records[-1].feedback = fb_text
                fb = feedback_ids(tokenizer, history, c.text, fb_text, end)
                history += [{"role": "assistant", "content": c.text}, {"role": "user", "content": fb_text}]
                segments.append((0, fb, [0.0] * len(fb)))
    first = Experience(prompt_ids=torch.tensor([prompt]), prompt_mask=torch.ones(1, len(prompt), dtype=torch.long),
                       response_ids=torch.zeros(1, 1, dtype=torch.long), response_mask=torch.ones(1, 1, dtype=torch.long),
                       truncated=[False], logprobs=torch.zeros(1, 1), examples=[example], group=torch.tensor([0]))
    return _with_rewards(_assemble(first, [segments], [records], tokenizer.pad_token_id or 0), Config().reward)


def test_two_turn_token_rewards_by_hand(tokenizer, game24):
    exp = hand_episode(tokenizer, game24, [WRONG, RIGHT])
    first, second = exp.episodes[0]
    assert (first.certificate.verdict, second.certificate.verdict) == ("wrong_answer", "correct")
    assert "evaluates to 21, not 24" in first.feedback
    r, turn = exp.rewards[0], exp.turn[0]
    t1, fb, t2 = turn == 1, (turn == 0) & (exp.response_mask[0] > 0), turn == 2
    # The feedback turn: context, never rewarded nor learned from.
    assert fb.sum() > 0 and torch.all(r[fb] == 0) and torch.all(exp.loss_mask[0][fb] == 0)
    assert tokenizer.decode(exp.response_ids[0][fb]).count("evaluates to 21, not 24") == 1
    # Turn 1 (signed preset): score 0 on its last token (<|im_end|>), the answer line's -1 spread
    # evenly over the n tokens the span covers: every text token -1/n, total -1.
    n = int(t1.sum()) - 1  # the text tokens (the last is <|im_end|>, no text)
    assert r[t1].tolist() == pytest.approx([-1.0 / n] * n + [0.0])
    # Turn 2: correct, no span: +1 on its last token, 0 elsewhere.
    m = int(t2.sum())
    assert r[t2].tolist() == pytest.approx([0.0] * (m - 1) + [1.0])
    assert exp.texts == [RIGHT] and exp.certificates[0].correct


def test_two_turn_advantages_by_hand(tokenizer, game24):
    # Episode A: wrong, then repaired; episode B: right at once. One prompt, d = 0.5.
    a = hand_episode(tokenizer, game24, [WRONG, RIGHT])
    b = hand_episode(tokenizer, game24, [RIGHT])
    b.turn = b.response_mask.clone()  # a one-turn episode in a multi-turn batch
    exp = concat([a, b])
    exp.group = torch.tensor([0, 0])
    adv = group_advantages(dr_grpo_advantages, exp, turn_discount=0.5)
    # Returns: A's first token -1 + 0.5 * 1 = -0.5; A's second turn +1; B +1. Group mean of the
    # episodes' returns (0.25), subtracted from each token's return-to-go.
    t1, t2 = exp.turn[0] == 1, exp.turn[0] == 2
    assert float(adv[0][t1][0]) == pytest.approx(-0.5 - 0.25)
    assert float(adv[0][t1][-1]) == pytest.approx(0.5 - 0.25)  # <|im_end|>: 0 of its own + 0.5 * 1
    assert adv[0][t2].tolist() == pytest.approx([1 - 0.25] * int(t2.sum()))
    assert float(adv[1][0]) == pytest.approx(1 - 0.25)
    assert torch.all(adv[0][(exp.turn[0] == 0)] == 0)
    # d = 0: turn 1 is credited with its own -1 alone.
    adv0 = group_advantages(dr_grpo_advantages, exp, turn_discount=0.0)
    assert float(adv0[0][t1][0]) == pytest.approx(-1.0 - 0.0)  # mean of (-1, 1) = 0


# ---- no turn-count bias ----------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", [grpo_advantages, dr_grpo_advantages, rloo_advantages, rloo_token_advantages,
                                       grpo_token_advantages])
def test_equal_returns_give_no_advantage_whatever_the_turns(estimator):
    # A stops after one turn (+1), B repairs at turn 2 (turn 1 earns 0, turn 2 +1, d = 1): the same
    # return on every token, so neither is favoured.
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    turn = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 2, 2]])
    exp = Experience(prompt_ids=torch.zeros(2, 1, dtype=torch.long), prompt_mask=torch.ones(2, 1, dtype=torch.long),
                     response_ids=torch.zeros(2, 6, dtype=torch.long), response_mask=mask, truncated=[False, False],
                     group=torch.tensor([0, 0]), rewards=rewards, turn=turn)
    adv = group_advantages(estimator, exp, turn_discount=1.0)
    assert torch.allclose(adv, torch.zeros_like(adv), atol=1e-5)


def test_every_sampled_token_weighs_the_same_in_the_loss():
    # Equal advantages: the loss gradient on each sampled token is the same, in a one-turn and a
    # two-turn episode alike (a token mean over the minibatch, no per-episode normalisation that
    # would favour the episode that stopped early).
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    logp = torch.zeros(2, 6, requires_grad=True)
    loss, _ = clipped_policy_loss(logp, torch.zeros(2, 6), torch.ones(2, 6), mask, 0.2)
    loss.backward()
    grads = logp.grad[mask > 0]
    assert torch.allclose(grads, torch.full_like(grads, -1.0 / 6))
    assert torch.all(logp.grad[mask == 0] == 0)


def test_ppo_gae_runs_over_the_sampled_tokens_only():
    # Values on feedback columns are the critic's output at context tokens: they must not enter GAE.
    from rlsf.algorithms.advantages import gae

    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    turn = torch.tensor([[1, 1, 0, 2]])
    view = EpisodeView(mask, turn, gamma=1.0, turn_discount=0.5)
    rewards = torch.tensor([[0.0, -1.0, 0.0, 1.0]])
    values = torch.tensor([[0.0, 0.0, 123.0, 0.0]])
    adv_c, ret_c = gae(view.gather(rewards), view.gather(values), view.mask.float(), view.factors, 1.0)
    assert view.expand(ret_c).tolist() == [[-0.5, -0.5, 0.0, 1.0]]


# ---- sampled episodes ------------------------------------------------------------------------------
@pytest.fixture(params=["builtin", "hf"])
def sampled(request, tiny_model_dir, game24):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    examples = game24.load("test")[:2]
    torch.manual_seed(0)
    with CheckService(game24, Detokenizer.from_tokenizer(tok), workers=0) as checker:
        exp = rollout_episodes(model, tok, game24, examples, checker, turns=3, samples=2, max_new_tokens=8,
                               batch_size=8, reward=Config().reward, engine=request.param)
    return model, tok, exp


def test_sampled_episodes_are_laid_out_turn_by_turn(sampled, game24):
    model, tok, exp = sampled
    assert exp.group.tolist() == [0, 0, 1, 1]
    for i, episode in enumerate(exp.episodes):
        assert len(episode) == 3  # a random model never solves a puzzle: every episode goes on to turn 3
        for t, rec in enumerate(episode, start=1):
            cols = exp.turn[i] == t
            assert int(cols.sum()) == rec.end - rec.start and bool(cols[rec.start:rec.end].all())
            assert tok.decode(exp.response_ids[i, rec.start:rec.end], skip_special_tokens=True,
                              clean_up_tokenization_spaces=False) == rec.text
            assert rec.certificate == game24.check(exp.examples[i], rec.text)
        for before, after in zip(episode, episode[1:]):  # the feedback between two attempts: its own tokens
            feedback = tok.decode(exp.response_ids[i, before.end:after.start])
            assert before.feedback in feedback and "<|im_start|>user" in feedback
            assert torch.all(exp.logprobs[i, before.end:after.start] == 0)
        assert exp.texts[i] == episode[-1].text and exp.certificates[i] is episode[-1].certificate


def test_sampling_log_probs_match_the_update_pass_on_every_turn(sampled):
    # The update scores the row [prompt | attempt 1 | feedback | attempt 2 | ...] in one pass: the
    # later turns' tokens must be the very tokens sampled, in the very context they were sampled in.
    from rlsf.algorithms.forward import response_forward

    model, tok, exp = sampled
    with torch.no_grad():
        out = response_forward(model, exp, temperature=1.0, precision="none", share_prompts=False)
    mask = exp.loss_mask > 0
    assert torch.allclose(out.logp[mask], exp.logprobs[mask], atol=2e-4)


def test_episode_metrics_count_turns_and_repairs():
    from rlsf.feedback.certificate import Certificate

    def ep(*correct):
        return [TurnRecord(0, 1, "", [], Certificate(score=float(c), verdict="x", correct=c)) for c in correct]

    exp = Experience(prompt_ids=torch.zeros(4, 1), prompt_mask=torch.ones(4, 1), response_ids=torch.zeros(4, 1),
                     response_mask=torch.ones(4, 1), truncated=[False] * 4,
                     episodes=[ep(True), ep(False, True), ep(False, False, True), ep(False, False, False)],
                     turn=torch.ones(4, 1, dtype=torch.long))
    exp.certificates = [e[-1].certificate for e in exp.episodes]
    m = episode_metrics(exp, 3)
    assert (m["turn1/success"], m["turn2/success"], m["turn3/success"]) == (0.25, 0.5, 0.75)
    assert m["repair_rate"] == pytest.approx(2 / 3) and m["episode/turns"] == pytest.approx(2.25)


def test_expert_iteration_learns_the_repair_not_the_mistake(tokenizer, game24):
    from rlsf.algorithms.expert_iteration import verified_pairs

    exp = hand_episode(tokenizer, game24, [WRONG, RIGHT])
    [(context, completion)] = verified_pairs(exp)
    assert tokenizer.decode(completion) == RIGHT + "<|im_end|>"
    assert WRONG in tokenizer.decode(context) and "evaluates to 21" in tokenizer.decode(context)
    assert verified_pairs(hand_episode(tokenizer, game24, [WRONG, WRONG])) == []


# ---- every task, every algorithm, evaluation ---------------------------------------------------------
def short_cfg(tiny_model_dir, tmp_path, **overrides) -> Config:
    base = {"model.name": tiny_model_dir, "model.autocast": "none", "check.workers": 0, "train.steps": 1,
            "rollout.prompts_per_step": 2, "rollout.samples_per_prompt": 2, "rollout.max_new_tokens": 8,
            "rollout.turns": 2, "rollout.turn_discount": 0.5, "ppo.minibatch_size": 2, "grpo.minibatch_size": 2,
            "train.save_every": 0, "expert_iteration.rounds": "batch", "rcrl.rounds": "batch",
            "eval.num_examples": 2, "eval.k": 0, "eval.max_new_tokens": 8,
            "run.output_dir": str(tmp_path / "run"), "run.progress": False}
    return Config.load(None, {**base, **overrides})


def test_rlsf_train_with_two_turns_from_the_command_line(tiny_model_dir, tmp_path):
    from rlsf.cli.main import main

    out = tmp_path / "cli"
    assert main(["train", "--task", "game24", "--model.name", tiny_model_dir, "--model.autocast", "none",
                 "--check.workers", "0", "--steps", "1", "--rollout.prompts_per_step", "2",
                 "--rollout.samples_per_prompt", "2", "--rollout.max_new_tokens", "8", "--ppo.minibatch_size", "2",
                 "--rollout.turns", "2", "--train.save_every", "0", "--run.output_dir", str(out),
                 "--run.progress", "false"]) in (0, None)
    [row] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"turn1/success", "turn2/success", "repair_rate", "episode/tokens"} <= set(row)
    assert row["episode/turns"] == 2.0  # the random model fails every first attempt
    assert row["sampled_tokens"] == row["episode/tokens"] * 4


@pytest.mark.parametrize("algorithm", ["grpo", "expert_iteration", "rcrl"])
def test_every_algorithm_trains_on_episodes(algorithm, tiny_model_dir, tmp_path):
    from rlsf.stages.train import RLTrainer

    metrics = RLTrainer(short_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": algorithm})).train()
    assert metrics["turn2/success"] >= metrics["turn1/success"] and "repair_rate" in metrics


def test_rcrl_labels_every_turn_with_its_own_outcome(tokenizer, game24, tiny_model_dir, tmp_path):
    from rlsf.algorithms.rcrl import ReturnConditioned
    from rlsf.runtime.device import Runtime

    cfg = short_cfg(tiny_model_dir, tmp_path, **{"train.algorithm": "rcrl"})
    algo = ReturnConditioned(load_model(tiny_model_dir), tokenizer, game24, cfg, Runtime("cpu", "none", "test", "cpu"))
    pairs = algo.select(hand_episode(tokenizer, game24, [WRONG, RIGHT]))
    assert len(pairs) == 2
    (bad_ctx, bad), (good_ctx, good) = pairs
    assert "[bad]" in tokenizer.decode(bad_ctx) and tokenizer.decode(bad) == WRONG + "<|im_end|>"
    assert "[good]" in tokenizer.decode(good_ctx) and WRONG in tokenizer.decode(good_ctx)


def test_evaluation_reports_single_turn_and_self_repair_side_by_side(tiny_model_dir, tmp_path):
    from rlsf.stages.evaluate import evaluate

    cfg = short_cfg(tiny_model_dir, tmp_path, **{"eval.turns": 3})
    res = evaluate(cfg, output=tmp_path / "eval.json")
    assert res["turns"] == 3 and {"turn1/success", "turn3/success", "repair_rate", "selfrepair/greedy/success"} <= set(res)
    assert res["turn1/success"] == res["greedy/success"]  # the first attempt is the single-turn greedy answer
    rows = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    greedy = [r for r in rows if r["kind"] == "greedy"]
    assert len(greedy) == 2 and all(len(r["turns"]) == 2 and r["turns"][0]["feedback"] for r in greedy)


def test_bad_turn_settings_are_refused():
    from rlsf.settings import ConfigError

    for bad in ({"rollout.turns": 0}, {"rollout.turn_discount": 1.5}, {"eval.turns": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Config.load(None, bad).validate()


def _own_tasks() -> list[str]:
    from rlsf.tasks import available_tasks

    return sorted(n for n, cls in available_tasks().items() if cls.__module__.startswith("rlsf."))


@pytest.mark.parametrize("task", _own_tasks())
def test_two_turn_training_step_on_every_task(task, tiny_model_dir, tmp_path):
    # One PPO step of two-turn episodes: the task's feedback rendered into the chat, the second
    # attempts checked, every turn rewarded, the feedback masked (checked in the update's inputs).
    from rlsf.stages.train import RLTrainer

    trainer = RLTrainer(short_cfg(tiny_model_dir, tmp_path, **{"task.name": task}))
    exp = trainer.rollout_step()
    trainer.checker.close()
    assert exp.turn is not None and len(exp.episodes) == 4
    for i, episode in enumerate(exp.episodes):
        assert (exp.rewards[i] * (exp.turn[i] == 0).float()).abs().sum() == 0
        for before in episode[:-1]:
            assert isinstance(before.feedback, str) and before.feedback.strip()
    metrics = RLTrainer(short_cfg(tiny_model_dir, tmp_path / "b", **{"task.name": task})).train()
    assert "turn2/success" in metrics


def test_saying_nothing_at_a_turn_earns_less_than_an_honest_attempt(tokenizer, game24):
    # The same repair after an empty first answer and after an honest wrong one: the empty turn's
    # return is lower (each turn's rewards are its own certificate's, the ordering rule turn by turn).
    for d in (0.0, 0.5, 1.0):
        empty = hand_episode(tokenizer, game24, ["", RIGHT])
        honest = hand_episode(tokenizer, game24, [WRONG, RIGHT])
        exp = concat([empty, honest])
        exp.group = torch.tensor([0, 1])  # separate prompts: compare the returns themselves
        view = EpisodeView(exp.generated_mask, exp.turn, 1.0, d)
        G = view.expand(returns_to_go(view.gather(exp.rewards), view.mask.float(), view.factors))
        first = [float(G[i][exp.turn[i] == 1][0]) for i in range(2)]
        assert first[0] < first[1], (d, first)


def test_a_feedback_that_raises_falls_back_to_the_default_turn(game24, capsys):
    from rlsf.feedback.certificate import feedback_text
    from rlsf.rollout.episodes import render_feedback

    class Broken(type(game24)):
        def feedback(self, example, completion, certificate):
            raise KeyError("oops")

    task = Broken()
    example = task.example(901)
    cert = task.check(example, WRONG)
    assert render_feedback(task, example, WRONG, cert) == feedback_text(WRONG, cert)
    assert "feedback raised KeyError" in capsys.readouterr().err


def test_the_next_turn_reuses_the_keys_and_values_of_the_last(tiny_model_dir, game24):
    # The builtin engine's fused step prefills only what follows a row's kept keys and values (its
    # answer's last token and the feedback): the same tokens and log-probs as prefilling it all.
    from rlsf.rollout.collect import task_prompts
    from rlsf.rollout.engines import can_reuse, generate

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    assert can_reuse(model, "builtin", True) and not can_reuse(model, "hf", True)
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in task_prompts(tok, game24, game24.load("test")[:3])]
    kept = {}
    first = generate(model, tok, prompts, max_new_tokens=5, do_sample=False, keep=kept.__setitem__)
    assert sorted(kept) == [0, 1, 2]
    feedback = tok("\nYour answer is not correct.\n", add_special_tokens=False)["input_ids"]
    contexts = [p + first.response_ids[i, : int(first.response_mask[i].sum())].tolist() + feedback * (i + 1)
                for i, p in enumerate(prompts)]
    for i, c in enumerate(contexts):  # the kept keys cover the prompt and every answer token but the last
        assert kept[i][0].shape[2] == len(prompts[i]) + int(first.response_mask[i].sum()) - 1
    torch.manual_seed(1)
    whole = generate(model, tok, contexts, max_new_tokens=6)
    torch.manual_seed(1)
    reused = generate(model, tok, contexts, max_new_tokens=6, past=[kept[i] for i in range(3)])
    assert torch.equal(whole.response_ids, reused.response_ids)
    assert torch.allclose(whole.logprobs, reused.logprobs, atol=1e-4)


def test_rows_that_end_early_keep_their_keys_and_values(tiny_model_dir, game24):
    # Half the vocabulary stops a row: sampled rows end at different steps and leave the batch one
    # by one; each row's kept keys and values cover its prompt and every token fed (all it sampled
    # but the last), whatever happened to the rows beside it.
    from rlsf.rollout.collect import task_prompts
    from rlsf.rollout.engines import decode, left_pad

    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in task_prompts(tok, game24, game24.load("test")[:4])]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    stops = list(range(0, len(tok), 2))
    kept = {}
    torch.manual_seed(3)
    out, _ = decode(model, ids, mask, max_new_tokens=8, stops=stops, pad_id=tok.pad_token_id, temperature=5.0,
                    save_kv=kept.__setitem__)
    ends = [next((t for t in range(8) if int(out[r, t]) in set(stops)), 7) for r in range(4)]
    assert len(set(ends)) > 1, ends  # the rows did leave at different steps
    assert sorted(kept) == [0, 1, 2, 3]
    for r in range(4):
        assert kept[r][0].shape[2] == len(prompts[r]) + ends[r]
