"""Self-repair episodes: the certificate back in context, the model answers again.

With ``rollout.turns`` T > 1 one row of the experience is an episode::

    turn 1   sample an attempt from the task's prompt; check it
    turn t   if the last attempt is not correct (and its check did not fail): render its
             certificate as the next user turn (Task.feedback), append it to the context --
             prompt, every attempt's sampled tokens and every feedback turn so far -- and sample
             again from that context; check it
    until    an attempt is correct, or T attempts were made

The row's response is ``[attempt 1 | feedback 1 | attempt 2 | ...]``: the sampled ids exactly as
sampled (never re-tokenised) and the feedback turn's tokens as the chat template renders them
(:func:`feedback_ids`). ``Experience.turn`` numbers each sampled token by its turn and is 0 on
the feedback, so the update attends to the feedback and never learns from it. Each turn's tokens
get that turn's own token rewards, made from its own certificate as a single attempt's are
(:func:`rlsf.feedback.rewards.shape_rewards`); how a later turn's return is credited to an earlier
one is the advantage estimators' business (``rollout.turn_discount``, :mod:`rlsf.algorithms.turns`).

Every engine samples each turn through :func:`rlsf.rollout.engines.generate` from the context's
token ids. The builtin engine's fused step keeps each row's keys and values at the end of a turn
and prefills only what follows them (the answer's last token and the feedback turn), where a
re-prefill of the whole context was about half of a second turn's sampling time on a CPU
(``benchmarks/bench_turns.py``); the Hugging Face engine and models the fused step does not cover
prefill the whole context again; vLLM's prefix cache reuses the earlier turns' keys and values where
it holds them.
"""

from __future__ import annotations

from typing import Any

import torch

from rlsf.experience import Experience, TurnRecord
from rlsf.feedback.certificate import feedback_text
from rlsf.feedback.rewards import shape_rewards
from rlsf.rollout.collect import render_messages, rollout_and_check, with_outcome
from rlsf.rollout.engines import generate, stop_token_ids
from rlsf.runtime.metric_log import note
from rlsf.runtime.utils import Timer
from rlsf.tasks.base import Example, Task


def feedback_ids(tokenizer, messages: list[dict[str, str]], completion: str, feedback: str,
                 ended: int | None) -> list[int]:
    """The tokens between an attempt's sampled ids and the next attempt: the end of the assistant
    turn (where the sampled ids do not already end it), the user turn carrying ``feedback`` and the
    opening of the next assistant turn, as the tokenizer's chat template renders them.

    ``messages``: the conversation before the attempt (its last message is the one the attempt
    answers); ``completion``: the attempt's text; ``ended``: the stop token id the attempt ended
    with (None: cut by the length limit). The template renders the conversation with and without
    the new turns, and the difference is what is appended; a template that rewrites earlier turns
    (strips them, drops them) is refused with a clear error rather than silently misaligned.
    """
    before = render_messages(tokenizer, messages, generation_prompt=True)
    after = render_messages(tokenizer, [*messages, {"role": "assistant", "content": completion},
                                        {"role": "user", "content": feedback}], generation_prompt=True)
    for text in (completion, completion.rstrip(), completion.strip()):
        if after.startswith(before + text):
            rest = after[len(before) + len(text):]
            break
    else:
        raise ValueError("self-repair (rollout.turns > 1) needs a chat template that appends turns: rendering "
                         "the conversation with a new assistant and user turn changed the text before them")
    if ended is not None:  # the attempt's own stop token already closes it: do not add a second one
        stop = tokenizer.decode([ended])
        if stop and rest.lstrip(" ").startswith(stop):
            rest = rest.lstrip(" ")[len(stop):]
    return tokenizer(rest, add_special_tokens=False)["input_ids"]


_WARNED: set[str] = set()


def render_feedback(task: Task, example: Example, completion: str, certificate) -> str:
    """``task.feedback``, or where it raises or returns no text (a task's bug, which must not end a
    training run) the default rendering of the certificate, with a one-line warning per task."""
    try:
        text = task.feedback(example, completion, certificate)
        if isinstance(text, str) and text.strip():
            return text
        problem = f"returned {type(text).__name__} {str(text)[:40]!r}, not text"
    except Exception as e:  # noqa: BLE001 -- a task's own method: report it once, keep the run going
        problem = f"raised {type(e).__name__}: {e}"
    if task.name not in _WARNED:
        _WARNED.add(task.name)
        note(f"rlsf: warning: task {task.name!r}: feedback {problem}; using the default feedback turn")
    return feedback_text(completion, certificate)


def repairable(certificate) -> bool:
    """Whether an attempt gets a feedback turn: not correct, and its check did not fail (a failed
    check says nothing to repair)."""
    return not certificate.correct and not certificate.failed


def rollout_episodes(model, tokenizer, task: Task, examples: list[Example], checker, *, turns: int, samples: int = 1,
                     reward=None, timer: Timer | None = None, judge: bool = False, condition: str | None = None,
                     reuse: bool = True, **gen) -> Experience:
    """:func:`rlsf.rollout.collect.rollout_and_check` for episodes of up to ``turns`` attempts (module
    docstring); ``turns=1`` is exactly that function. Rows are example-major with group ids by
    example, as there; ``texts``, ``offsets``, ``certificates`` and ``truncated`` are each episode's
    last turn's, ``episodes`` every turn's, ``logprobs`` the sampling log-probs of every sampled
    token (0 on feedback). ``reuse``: keep each row's keys and values between turns where the engine
    can (false: prefill every turn's whole context; the same samples, for benchmarks)."""
    if turns == 1:
        return _with_rewards(rollout_and_check(model, tokenizer, task, examples, checker, samples=samples, reward=None,
                                               timer=timer, judge=judge, condition=condition, **gen), reward)
    # Each row's keys and values at the end of its last turn (builtin engine, fused step): the next
    # turn prefills only the feedback turn after them.
    kv: dict[int, Any] = {}
    first = rollout_and_check(model, tokenizer, task, examples, checker, samples=samples, reward=None, timer=timer,
                              judge=judge, condition=condition, keep=kv.__setitem__ if reuse else None, **gen)
    timer = timer or Timer()
    B = len(first)
    stop_list = stop_token_ids(tokenizer, model)
    stops = set(stop_list)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_list[0]
    prompts = [with_outcome(task.prompt(ex), condition) for ex in first.examples]
    history: list[list[dict[str, str]]] = [list(p) for p in prompts]
    # Each row's response so far: (turn, ids, sampling log-probs) segments, turn 0 for feedback.
    segments: list[list[tuple[int, list[int], list[float]]]] = []
    records: list[list[TurnRecord]] = []
    for i in range(B):
        n = int(first.response_mask[i].sum())
        ids = first.response_ids[i, :n].tolist()
        lps = first.logprobs[i, :n].tolist() if first.logprobs is not None else [0.0] * n
        segments.append([(1, ids, lps)])
        records.append([TurnRecord(0, n, first.texts[i], first.offsets[i], first.certificates[i], first.truncated[i])])
    # Evaluation judges with held-out tests where a task has them (Task.judge); the feedback, and
    # whether to go on, come from the training check (what a user's own checker can see), so a
    # feedback turn never shows a held-out test.
    visible = judge and type(task).judge is not Task.judge
    shown = _training_checks(checker, first.examples, [seg[0][1] for seg in segments]) if visible else \
        [r[-1].certificate for r in records]
    for t in range(2, turns + 1):
        active = [i for i in range(B) if repairable(shown[i]) and not records[i][-1].certificate.failed]
        if not active:
            break
        contexts = []
        for i in active:
            last = records[i][-1]
            text = render_feedback(task, first.examples[i], last.text, shown[i])
            ids = segments[i][-1][1]
            ended = ids[-1] if ids and not last.truncated and ids[-1] in stops else None
            fb = feedback_ids(tokenizer, history[i], last.text, text, ended)
            last.feedback = text
            history[i] += [{"role": "assistant", "content": last.text}, {"role": "user", "content": text}]
            segments[i].append((0, fb, [0.0] * len(fb)))
            prompt = first.prompt_ids[i][first.prompt_mask[i].bool()].tolist()
            contexts.append(prompt + [x for _, seg, _ in segments[i] for x in seg])
        futures = {}

        def submit(row: int, ids: list[int]) -> None:
            futures[row] = checker.submit(first.examples[active[row]], ids=ids, judge=judge)

        kept: dict[int, Any] = {}
        with timer("generate"):
            out = generate(model, tokenizer, contexts, on_finish=submit, past=[kv.get(i) for i in active],
                           keep=(lambda j, x: kept.__setitem__(active[j], x)) if reuse else None, **gen)
        kv = kept
        with timer("feedback"):
            checked = [futures[j].result() for j in range(len(active))]
        for j, i in enumerate(active):
            n = int(out.response_mask[j].sum())
            ids = out.response_ids[j, :n].tolist()
            lps = out.logprobs[j, :n].tolist() if out.logprobs is not None else [0.0] * n
            start = sum(len(seg) for _, seg, _ in segments[i])
            segments[i].append((t, ids, lps))
            records[i].append(TurnRecord(start, start + n, checked[j].text, checked[j].offsets,
                                         checked[j].certificate, out.truncated[j]))
        if visible:
            again = _training_checks(checker, [first.examples[i] for i in active], [segments[i][-1][1] for i in active])
            for j, i in enumerate(active):
                shown[i] = again[j]
        else:
            for i in active:
                shown[i] = records[i][-1].certificate
    return _with_rewards(_assemble(first, segments, records, pad), reward)


def _training_checks(checker, examples: list[Example], ids: list[list[int]]) -> list:
    """The training certificates (:meth:`Task.check`) of sampled ids, checked in parallel."""
    futures = [checker.submit(ex, ids=row, judge=False) for ex, row in zip(examples, ids)]
    return [f.result().certificate for f in futures]


def _assemble(first: Experience, segments: list[list[tuple[int, list[int], list[float]]]],
              records: list[list[TurnRecord]], pad: int) -> Experience:
    """The episodes as one experience record (module docstring)."""
    B = len(first)
    R = max(sum(len(seg) for _, seg, _ in row) for row in segments)
    ids = torch.full((B, R), pad, dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.long)
    turn = torch.zeros((B, R), dtype=torch.long)
    logprobs = torch.zeros((B, R)) if first.logprobs is not None else None
    for i, row in enumerate(segments):
        pos = 0
        for t, seg, lps in row:
            ids[i, pos:pos + len(seg)] = torch.tensor(seg, dtype=torch.long)
            mask[i, pos:pos + len(seg)] = 1
            turn[i, pos:pos + len(seg)] = t
            if logprobs is not None:
                logprobs[i, pos:pos + len(seg)] = torch.tensor(lps)
            pos += len(seg)
    last = [r[-1] for r in records]
    return Experience(prompt_ids=first.prompt_ids, prompt_mask=first.prompt_mask, response_ids=ids,
                      response_mask=mask, truncated=[r.truncated for r in last], logprobs=logprobs,
                      examples=first.examples, group=first.group, texts=[r.text for r in last],
                      offsets=[r.offsets for r in last], certificates=[r.certificate for r in last], turn=turn,
                      episodes=records)


def _with_rewards(exp: Experience, reward_cfg) -> Experience:
    """Each turn's token rewards from its own certificate, at that turn's columns (0 on feedback);
    a row whose last check failed gets none (it is not ``valid``)."""
    if reward_cfg is None:
        return exp
    if exp.turn is None:
        exp.rewards = shape_rewards(exp.certificates, exp.offsets, exp.response_mask, exp.valid, reward_cfg)
        return exp
    rewards = torch.zeros(exp.response_mask.shape)
    for i, episode in enumerate(exp.episodes):
        for rec in episode:
            width = rec.end - rec.start
            own = shape_rewards([rec.certificate], [rec.offsets], torch.ones(1, width, dtype=torch.long),
                                torch.tensor([not rec.certificate.failed]), reward_cfg)
            rewards[i, rec.start:rec.end] = own[0]
    exp.rewards = rewards * exp.valid[:, None].float()
    return exp


def episode_metrics(exp: Experience, turns: int) -> dict[str, float]:
    """``turn{t}/success`` (share of episodes whose attempt after t turns is correct, t = 1..turns: an
    episode stops at its first correct attempt, so in training this is "correct by turn t"), ``repair_rate`` (share of
    failed first attempts that the last turn fixed), ``episode/turns`` and ``episode/tokens``
    (sampled tokens per episode), over the rows whose checks did not fail."""
    eps = exp.episodes or [[TurnRecord(0, 0, "", [], c)] for c in exp.certificates]
    eps = [e for e in eps if not e[-1].certificate.failed]
    if not eps:
        return {}
    out: dict[str, Any] = {}
    for t in range(1, turns + 1):  # the attempt an episode stands at after t turns (its last, if it stopped)
        out[f"turn{t}/success"] = sum(e[min(t, len(e)) - 1].certificate.correct for e in eps) / len(eps)
    failed_first = [e for e in eps if not e[0].certificate.correct]
    out["repair_rate"] = (sum(e[-1].certificate.correct for e in failed_first) / len(failed_first)
                          if failed_first else 0.0)
    out["episode/turns"] = sum(len(e) for e in eps) / len(eps)
    if exp.episodes:
        out["episode/tokens"] = float(exp.generated_mask.sum(1).mean())
    return out


def first_turns(exp: Experience) -> Experience:
    """Each episode's first attempt alone, as a single-turn record (what one turn would have given:
    the first turn of an episode is sampled exactly as a single-turn completion)."""
    if exp.turn is None:
        return exp
    n = max(max(r[0].end for r in exp.episodes), 1)
    mask = (exp.turn[:, :n] == 1).long()
    return Experience(prompt_ids=exp.prompt_ids, prompt_mask=exp.prompt_mask, response_ids=exp.response_ids[:, :n] * mask,
                      response_mask=mask, truncated=[r[0].truncated for r in exp.episodes],
                      logprobs=exp.logprobs[:, :n] * mask if exp.logprobs is not None else None, examples=exp.examples,
                      group=exp.group, texts=[r[0].text for r in exp.episodes],
                      offsets=[r[0].offsets for r in exp.episodes],
                      certificates=[r[0].certificate for r in exp.episodes])

