"""The experience record: one batch of sampled completions and everything known about them.

It flows from the rollout (prompt and sampled ids, sampling log-probs) through checking (text,
token offsets, certificate) and reward shaping (token rewards) to the update and to
evaluation, so every stage reads the same rows::

    row i:  examples[i]  group[i]  prompt_ids[i]  response_ids[i]  logprobs[i]
            texts[i]  offsets[i]  certificates[i]  rewards[i]

A self-repair episode (``rollout.turns`` > 1, :mod:`rlsf.rollout.episodes`) is one row: its
response is every turn's sampled tokens with the feedback turns between them
(``[attempt 1 | feedback 1 | attempt 2 | ...]``); ``turn`` numbers each sampled token by its turn
(0 on feedback and padding), so the feedback is context, attended to and never learned from
(:attr:`Experience.loss_mask`). ``texts``, ``offsets`` and ``certificates`` are the last turn's
(the episode's outcome); ``episodes`` keeps every turn's.

``group`` says which rows are samples of the same prompt (the group baseline of GRPO and the
like compares them); it is explicit, never inferred from row order. A row whose check failed
(``certificates[i].failed``) is not ``valid``: :attr:`Experience.loss_mask` is zero on it, so
no update learns from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rlsf.feedback.certificate import Certificate
from rlsf.feedback.offsets import Offsets


@dataclass
class TurnRecord:
    """One turn of a self-repair episode: what was sampled, where it sits in the row's response
    (``start``, ``end``: columns), its check, and the feedback turn shown after it (None: the
    episode ended here)."""

    start: int
    end: int
    text: str
    offsets: Offsets
    certificate: Certificate
    truncated: bool = False
    feedback: str | None = None


@dataclass
class Experience:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, R] right-padded
    response_mask: torch.Tensor  # [B, R] 1 on generated tokens (end of turn included)
    truncated: list[bool]  # cut by max_new_tokens before end of turn
    logprobs: torch.Tensor | None = None  # [B, R] of each sampled token under the distribution it was
    # drawn from (temperature and top-p applied); None for greedy decoding
    examples: list[dict[str, Any]] = field(default_factory=list)
    group: torch.Tensor | None = None  # [B] long: rows with equal ids sampled the same prompt
    texts: list[str] = field(default_factory=list)
    offsets: list[Offsets] = field(default_factory=list)  # per row, one (start, end) per response token
    certificates: list[Certificate] = field(default_factory=list)
    rewards: torch.Tensor | None = None  # [B, R] token rewards made from the certificates
    turn: torch.Tensor | None = None  # [B, R] long: turn of each sampled token, 0 on feedback and padding;
    # None: one turn, every response token sampled
    episodes: list[list[TurnRecord]] = field(default_factory=list)  # per row, its turns (multi-turn only)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def valid(self) -> torch.Tensor:
        """``[B]`` bool: rows whose check did not fail (all rows before checking)."""
        if not self.certificates:
            return torch.ones(len(self), dtype=torch.bool)
        return torch.tensor([not c.failed for c in self.certificates], dtype=torch.bool)

    @property
    def generated_mask(self) -> torch.Tensor:
        """``[B, R]`` float: the sampled tokens (an episode's feedback turns excluded)."""
        if self.turn is None:
            return self.response_mask.float()
        return self.response_mask.float() * (self.turn > 0).float()

    @property
    def loss_mask(self) -> torch.Tensor:
        """``[B, R]`` float: the tokens an update learns from (sampled tokens of valid rows)."""
        return self.generated_mask * self.valid[:, None].float()

    @property
    def turns(self) -> list[int]:
        """Turns each row took (1 for every row of a single-turn batch)."""
        return [len(e) for e in self.episodes] if self.episodes else [1] * len(self)

    def turn_columns(self, i: int) -> list[tuple[int, int]]:
        """Row ``i``'s turns as ``(start, end)`` response columns (one turn: its whole response)."""
        if self.episodes:
            return [(t.start, t.end) for t in self.episodes[i]]
        return [(0, int(self.response_mask[i].sum()))]

    def turn_pair(self, i: int, turn: int = -1) -> tuple[list[int], list[int]]:
        """(context ids, sampled ids) of row ``i``'s turn ``turn`` (the last by default), padding
        removed: the context is the prompt and every earlier turn and feedback turn, exactly as the
        turn was sampled from (what Expert Iteration and RCRL fine-tune on)."""
        start, end = self.turn_columns(i)[turn]
        prompt = self.prompt_ids[i][self.prompt_mask[i].bool()].tolist()
        return prompt + self.response_ids[i, :start].tolist(), self.response_ids[i, start:end].tolist()

    def select(self, rows: torch.Tensor | list[int], trim: bool = False) -> "Experience":
        """These rows; with ``trim``, without the prompt columns (left) and response columns (right)
        that are padding in every selected row, so no compute is spent on them."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        idx = rows.tolist()
        p_ids, p_mask, r_ids, r_mask = (self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows],
                                        self.response_mask[rows])
        lp = self.logprobs[rows] if self.logprobs is not None else None
        rw = self.rewards[rows] if self.rewards is not None else None
        tn = self.turn[rows] if self.turn is not None else None
        if trim and idx:
            P = max(int(p_mask.sum(1).max()), 1)
            R = max(int(r_mask.sum(1).max()), 1)
            p_ids, p_mask, r_ids, r_mask = p_ids[:, -P:], p_mask[:, -P:], r_ids[:, :R], r_mask[:, :R]
            lp = lp[:, :R] if lp is not None else None
            rw = rw[:, :R] if rw is not None else None
            tn = tn[:, :R] if tn is not None else None

        def pick(xs: list) -> list:
            return [xs[i] for i in idx] if xs else []

        return replace(self, prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                       truncated=pick(self.truncated), logprobs=lp, examples=pick(self.examples),
                       group=self.group[rows] if self.group is not None else None, texts=pick(self.texts),
                       offsets=pick(self.offsets), certificates=pick(self.certificates), rewards=rw, turn=tn,
                       episodes=pick(self.episodes))


def concat(parts: list[Experience]) -> Experience:
    """The rows of ``parts`` one after the other, as one record: prompts left-padded and responses
    right-padded to the widest part, group ids renumbered so that parts never share a group (a
    training step made of several rollout batches, e.g. an Expert Iteration round over every
    training problem)."""
    if len(parts) == 1:
        return parts[0]
    P = max(p.prompt_ids.shape[1] for p in parts)
    R = max(p.response_ids.shape[1] for p in parts)

    def left(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (P - x.shape[1], 0))

    def right(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, R - x.shape[1]))

    def optional(get) -> torch.Tensor | None:
        xs = [get(p) for p in parts]
        return None if any(x is None for x in xs) else torch.cat([right(x) for x in xs])

    turn = None
    if any(p.turn is not None for p in parts):  # a single-turn part: every response token is turn 1
        turn = torch.cat([right(p.turn if p.turn is not None else p.response_mask.long()) for p in parts])
    episodes = [] if not any(p.episodes for p in parts) else [e for p in parts for e in (
        p.episodes or [[_single_turn(p, i)] for i in range(len(p))])]
    groups, start = [], 0
    for p in parts:
        g = p.group if p.group is not None else torch.arange(len(p))
        groups.append(g + start)
        start += int(g.max()) + 1 if len(g) else 0
    return Experience(prompt_ids=torch.cat([left(p.prompt_ids) for p in parts]),
                      prompt_mask=torch.cat([left(p.prompt_mask) for p in parts]),
                      response_ids=torch.cat([right(p.response_ids) for p in parts]),
                      response_mask=torch.cat([right(p.response_mask) for p in parts]),
                      truncated=[t for p in parts for t in p.truncated], logprobs=optional(lambda p: p.logprobs),
                      examples=[x for p in parts for x in p.examples], group=torch.cat(groups),
                      texts=[x for p in parts for x in p.texts], offsets=[x for p in parts for x in p.offsets],
                      certificates=[x for p in parts for x in p.certificates],
                      rewards=optional(lambda p: p.rewards), turn=turn, episodes=episodes)


def _single_turn(exp: Experience, i: int) -> TurnRecord:
    """Row ``i`` of a single-turn record as an episode of one turn."""
    return TurnRecord(0, int(exp.response_mask[i].sum()), exp.texts[i] if exp.texts else "",
                      exp.offsets[i] if exp.offsets else [], exp.certificates[i], exp.truncated[i])


