"""One batch of experience: render the task's prompts, sample, check each row as it ends, make the
token rewards.

A prompt is the task's messages (``task.prompt(example)``) rendered with the tokenizer's chat
template, optionally opened by an outcome label (return-conditioned RL: :func:`with_outcome`).
The engine (:mod:`rlsf.rollout.engines`) calls back with each finished row,
the check service (:mod:`rlsf.feedback.service`) checks it while sampling goes on, and the
certificates become token rewards (:mod:`rlsf.feedback.rewards`).
"""

from __future__ import annotations

from typing import Any

import torch

from rlsf.experience import Experience
from rlsf.feedback.rewards import shape_rewards
from rlsf.rollout.engines import generate
from rlsf.runtime.utils import Timer
from rlsf.tasks.base import Example, Task


def rollout_and_check(model, tokenizer, task: Task, examples: list[Example], checker, *, samples: int = 1,
                      reward=None, timer: Timer | None = None, judge: bool = False, condition: str | None = None,
                      **gen) -> Experience:
    """Sample ``samples`` completions of every example and check them: the experience of one
    training step or one evaluation pass.

    Rows are example-major (the ``samples`` completions of example ``j`` are rows ``j*samples ..``)
    and share the group id ``j``. Every row goes to ``checker`` (a
    :class:`~rlsf.feedback.service.CheckService`) as soon as its last token is sampled, so checking
    overlaps sampling. With ``reward`` (the ``reward`` settings) the token rewards are made too;
    with ``judge`` the checks are evaluation certificates (:meth:`Task.judge`); with ``condition``
    the prompts carry that outcome marker (:func:`with_outcome`). ``gen`` are :func:`generate`'s
    keyword arguments.
    """
    timer = timer or Timer()
    rows = [ex for ex in examples for _ in range(samples)]
    group = torch.arange(len(examples)).repeat_interleave(samples)
    prompts = [p for p in task_prompts(tokenizer, task, examples, condition) for _ in range(samples)]
    futures = {}

    def submit(row: int, ids: list[int]) -> None:
        futures[row] = checker.submit(rows[row], ids=ids, judge=judge)

    with timer("generate"):
        exp = generate(model, tokenizer, prompts, on_finish=submit, **gen)
    with timer("feedback"):  # what is left to wait for once sampling is done
        return attach_checks(exp, rows, group, [futures[i].result() for i in range(len(exp))], reward)


def attach_checks(exp: Experience, examples: list[dict[str, Any]], group: torch.Tensor, checked: list,
                  reward_cfg) -> Experience:
    """Fill in what checking learned about each row (``checked[i]``: :class:`rlsf.feedback.service.Checked`)
    and, given ``reward_cfg`` (the ``reward`` settings), the token rewards of the certificates."""
    exp.examples, exp.group = list(examples), group
    exp.texts = [c.text for c in checked]
    exp.offsets = [c.offsets for c in checked]
    exp.certificates = [c.certificate for c in checked]
    if reward_cfg is not None:
        exp.rewards = shape_rewards(exp.certificates, exp.offsets, exp.response_mask, exp.valid, reward_cfg)
    return exp


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The chat-formatted prompt text, ending where the assistant's answer starts."""
    return render_messages(tokenizer, messages, generation_prompt=True)


def render_messages(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = True) -> str:
    """A conversation as the tokenizer's chat template renders it (with ``generation_prompt``: ending
    where the assistant's next answer starts); without a template, the messages' texts separated by
    blank lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"



def with_outcome(messages: list[dict[str, str]], label: str | None) -> list[dict[str, str]]:
    """The task's messages with an outcome marker ``[LABEL]`` opening the first one: the prompt of
    return-conditioned RL (``None`` or ``""``: unchanged)."""
    if not label:
        return messages
    first = {**messages[0], "content": f"[{label}] {messages[0]['content']}"}
    return [first, *messages[1:]]



def task_prompts(tokenizer, task: Task, examples: list[Example], condition: str | None = None) -> list[str]:
    """The rendered prompts, conditioned on the outcome label ``condition`` when one is given."""
    return [render_prompt(tokenizer, with_outcome(task.prompt(ex), condition)) for ex in examples]



def score_with_orm(orm, task: Task, examples: list[Example], completions: list[str], **kw) -> list[float]:
    """An outcome reward model's scores of ``completions`` (one per example), the prompts rendered
    with the ORM's own tokenizer (:meth:`rlsf.models.orm.OutcomeRewardModel.score_texts`)."""
    return orm.score_texts(task_prompts(orm.tokenizer, task, list(examples)), completions, **kw)
