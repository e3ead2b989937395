"""The algorithm interface, and what the clipped policy-gradient family (PPO, GRPO) shares.

An algorithm receives one :class:`~rlsf.experience.Experience` per training step -- sampled
ids, sampling log-probs, certificates, token rewards, groups -- and updates the policy
(:meth:`Algorithm.step`). It is registered by name with its own settings section
(``rlsf.algorithms.register``), so a new algorithm is one module in ``rlsf/algorithms/``.

:class:`PolicyGradient` is the shared skeleton of clipped policy-gradient methods: subclasses
say how advantages are made (:meth:`PolicyGradient.prepare`) and what the loss of a minibatch
is (:meth:`PolicyGradient.loss`); the reference policy, the minibatch loop, learning-rate
warm-up, the entropy regularisers and the diagnostics (KL to the reference, sampling/update
log-prob gap) are here, the forward pass over response tokens in :mod:`rlsf.algorithms.forward`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rlsf.algorithms.advantages import masked_mean_across_ranks
from rlsf.algorithms.core import (
    batch_entropy,
    batch_entropy_index,
    batch_entropy_part,
    kl_penalty,
    last_token_index,
    masked_mean,
    masked_sum,
    truncated_importance_weights,
)
from rlsf.algorithms.forward import ForwardOut, pad_to, response_forward  # noqa: F401  (tests import it from here)
from rlsf.experience import Experience
from rlsf.models.loading import uses_gradient_checkpointing
from rlsf.models.reference import Reference, reference_precision
from rlsf.runtime import distributed
from rlsf.runtime.fsdp import clip_grad_norm_
from rlsf.runtime.utils import Timer, make_adamw, model_device
from rlsf.settings import opt, require, require_adamw


def entropy_positions(acfg, mask: torch.Tensor, truncated: list[bool] | None) -> torch.Tensor:
    """Each row's response position in the batch entropy (``batch_entropy_position`` of the settings
    ``acfg``): its last token, or with ``before_end`` the one before a final end-of-turn token."""
    if acfg.batch_entropy_position == "before_end" and truncated is not None:
        return batch_entropy_index(mask, torch.tensor([not t for t in truncated], device=mask.device))
    return last_token_index(mask)


class Algorithm(ABC):
    """An RL update rule. Subclasses set ``Config`` (their settings section, a dataclass of
    :func:`~rlsf.config.opt` fields) and are registered with ``rlsf.algorithms.register``."""

    name = ""
    Config: type = object
    #: Outcome label the training prompts carry (:func:`rlsf.rollout.with_outcome`); None: plain prompts.
    sampling_condition: str | None = None

    @classmethod
    def evaluation_condition(cls, cfg) -> str:
        """The outcome label held-out prompts carry after training with this algorithm ('' for none)."""
        return ""

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        """``model`` is the policy (trained in place), ``task`` the task being trained on (its
        prompts, checker and demonstrations), ``runtime`` the device and precision decision."""
        self.model, self.tokenizer, self.task, self.cfg, self.runtime = model, tokenizer, task, cfg, runtime
        self.acfg = cfg.section(self.name)

    @classmethod
    def procedure(cls, cfg) -> str:
        """What this algorithm with these settings does, in a few words, naming any variant that is
        not the paper's procedure (labels of results: ``rlsf experiment``'s table, the run's notes)."""
        return cls.name

    @classmethod
    def samples_per_step(cls, cfg, train_size: Callable[[], int]) -> int:
        """Completions one training step samples: one rollout batch of ``rollout.prompts_per_step``
        prompts x ``rollout.samples_per_prompt``. ``train_size()`` is the number of training
        problems, for an algorithm whose step covers every one of them (:meth:`step_examples`)."""
        return cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt

    def step_examples(self, examples: list, step: int) -> list | None:
        """The training problems step ``step`` samples, each ``rollout.samples_per_prompt`` times, in
        rollout batches of ``rollout.prompts_per_step`` (one :meth:`step` on all of them); None (the
        default): the trainer's next batch of ``rollout.prompts_per_step`` problems."""
        return None

    def prepare_sampling(self) -> None:
        """Called by the trainer before each step's rollouts (e.g. to put the weights that sample in place)."""

    @abstractmethod
    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        """Learn from one batch of checked completions; returns statistics to log."""

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the policy's weights that a resumed run needs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class PolicyUpdateConfig:
    """What every clipped policy-gradient update shares."""

    epochs: int = opt(1, "Optimisation epochs over each batch of rollouts.")
    minibatch_size: int = opt(8, "Completions per minibatch (must divide the batch).")
    clip_range: float = opt(0.2, "PPO ratio clip epsilon.")
    kl_coef: float = opt(0.05, "KL coefficient to the reference policy (0: no reference is kept).")
    entropy_coef: float = opt(0.0, "Token-entropy bonus coefficient c_H: mean entropy of the policy's "
                              "next-token distributions over response tokens.")
    batch_entropy_coef: float = opt(0.0, "Batch-entropy bonus c_B (Padula & Soemers): entropy of the mean, over "
                                    "the rollout batch (batch_entropy_scope), of each sample's next-token "
                                    "distribution at its batch-entropy position (batch_entropy_position; softmax at "
                                    "batch_entropy_temperature).")
    batch_entropy_scope: str = opt("batch", "Rows whose distributions are averaged in the batch entropy: batch (the "
                                   "paper's: every row of the rollout batch; each minibatch's gradient flows through "
                                   "its own rows, the other rows enter as constants computed with the weights before "
                                   "the minibatch loop, at the cost of one more forward pass over the batch where the "
                                   "update makes none of its own; logged batch_entropy is the whole batch's) or "
                                   "minibatch (rlsf's earlier variant: the mean over the minibatch_size rows of each "
                                   "minibatch alone, which is a different and noisier term when the batch is split).")
    batch_entropy_temperature: float = opt(1.0, "Softmax temperature of the batch-entropy term.")
    lr: float = opt(3e-6, "AdamW learning rate of the policy. AdamW's first updates move every weight by about the "
                    "learning rate whatever the gradient (benchmarks/bench_first_update.py): 1e-5 moved the SFT "
                    "model by ~4 nats per completion in one step, 3e-6 by ~0.4, with warm-up ~0.06.")
    warmup_steps: int = opt(8, "Linear learning-rate warm-up over the first N optimiser updates (0: none).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")
    share_prompts: bool = opt(True, "In the update's passes, run each distinct prompt once and share its KV cache "
                              "among its samples (same result, fewer tokens); false: one full prompt + response "
                              "pass per sample (the plain path).")
    batch_entropy_position: str = opt("last", "Each sample's position in the batch entropy: last (its last "
                                      "response token, the end-of-turn token when it stopped) or before_end "
                                      "(the token before a final end-of-turn token: where completions differ).")

    def validate(self, cfg) -> None:
        name = cfg.train.algorithm
        batch = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
        require(self.epochs >= 1, f"{name}.epochs", "must be >= 1")
        require(self.minibatch_size >= 1 and batch % self.minibatch_size == 0, f"{name}.minibatch_size",
                f"must divide the batch of rollout.prompts_per_step x rollout.samples_per_prompt = {batch}")
        require(self.clip_range > 0, f"{name}.clip_range", "must be > 0")
        require(self.lr > 0, f"{name}.lr", "must be > 0")
        require(self.warmup_steps >= 0, f"{name}.warmup_steps", "must be >= 0")
        require_adamw(self, name)
        require(self.kl_coef >= 0, f"{name}.kl_coef", "must be >= 0")
        require(self.batch_entropy_temperature > 0, f"{name}.batch_entropy_temperature", "must be > 0")
        require(self.batch_entropy_position in ("last", "before_end"), f"{name}.batch_entropy_position",
                "must be last or before_end")
        require(self.batch_entropy_scope in ("batch", "minibatch"), f"{name}.batch_entropy_scope",
                "must be batch or minibatch")


class PolicyGradient(Algorithm):
    """Clipped policy-gradient updates over token-level rewards (see the module docstring)."""

    Config = PolicyUpdateConfig

    def __init__(self, model, tokenizer, task, cfg, runtime) -> None:
        super().__init__(model, tokenizer, task, cfg, runtime)
        self.temperature = cfg.rollout.temperature
        self.precision = runtime.precision
        # A checkpointed layer keeps no key/value cache: the shared-prompt passes need one.
        self.share_prompts = self.acfg.share_prompts and not uses_gradient_checkpointing(model)
        # The reference is the policy as loaded (the SFT model): a frozen copy or, with LoRA, the
        # same weights with adapters disabled. Without a KL term nothing reads it: no copy is made.
        self.reference = (Reference.from_policy(model, reference_precision(cfg.model.reference_precision,
                                                                          runtime.precision))
                          if self.acfg.kl_coef > 0 else None)
        self.optimizer = make_adamw(self.param_groups(), weight_decay=self.acfg.weight_decay)
        self.updates = 0  # optimiser steps taken (learning-rate warm-up)

    @classmethod
    def procedure(cls, cfg) -> str:
        a = cfg.section(cls.name)
        if a.batch_entropy_coef != 0 and a.batch_entropy_scope == "minibatch":
            return f"{cls.name}, batch entropy per minibatch (not the paper's whole-batch term)"
        return cls.name

    # ---- hooks ---------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.acfg.lr}]

    @abstractmethod
    def prepare(self, exp: Experience, timer: Timer) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Per-row tensors the loss needs (old log-probs, advantages, ...) and statistics to log."""

    @abstractmethod
    def loss(self, mb: Experience, data: dict[str, torch.Tensor], fo: ForwardOut,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one minibatch given its forward pass ``fo``; ``data`` holds its rows of
        :meth:`prepare`'s tensors and ``mask`` its loss mask, both on the model's device."""

    needs_hidden = False  # whether loss() reads fo.hidden (a value head)

    # ---- shared --------------------------------------------------------------------------------
    def forward(self, model, exp: Experience, hidden: bool = False) -> ForwardOut:
        return response_forward(model, exp, temperature=self.temperature, precision=self.precision,
                                hidden=hidden, share_prompts=self.share_prompts,
                                logit_chunk=self.cfg.model.logit_chunk, entropy=torch.is_grad_enabled(),
                                entropy_grad=self.acfg.entropy_coef != 0)

    @torch.no_grad()
    def rollout_logprobs(self, exp: Experience, *, values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and values) of the current policy for the whole batch, in minibatches. When
        :meth:`step` asks for them (the whole-batch batch entropy), the same pass keeps each row's
        batch-entropy distribution (``_batch_probs``), so no second pass is made."""
        R = exp.response_ids.shape[1]
        logps, vals, probs = [], [], []
        for rows in self._chunks(len(exp)):
            mb = exp.select(rows, trim=True)
            out = self.forward(self.model, mb, hidden=values)
            logps.append(pad_to(out.logp.cpu(), R))
            if values:
                vals.append(pad_to(self.value_head(out.hidden.float()).cpu(), R))
            if self._collect_probs:
                probs.append(self._entropy_probs(out, mb))
        if self._collect_probs:
            self._batch_probs = torch.cat(probs)
        return torch.cat(logps), (torch.cat(vals) if values else None)

    @torch.no_grad()
    def batch_entropy_rows(self, exp: Experience) -> torch.Tensor:
        """Each row's next-token distribution at its batch-entropy position under the current policy,
        ``[B, V]`` (zero on rows whose check failed), in minibatches: the whole-batch batch entropy's
        constants when no other pass over the batch precedes the update."""
        return torch.cat([self._entropy_probs(self.forward(self.model, mb), mb)
                          for mb in (exp.select(rows, trim=True) for rows in self._chunks(len(exp)))])

    def _entropy_probs(self, out: ForwardOut, mb: Experience) -> torch.Tensor:
        mask = mb.loss_mask.to(out.logp.device)
        logits = out.logits_at(entropy_positions(self.acfg, mask, mb.truncated)).float()
        return (logits / self.acfg.batch_entropy_temperature).softmax(-1) * (mask.sum(1) > 0)[:, None]

    #: Set by :meth:`step` for the whole-batch batch entropy (see :meth:`regularisers`).
    _collect_probs = False
    _batch_probs: torch.Tensor | None = None
    _whole_batch: dict[str, Any] | None = None
    _seen: dict[str, Any] | None = None
    _mb_rows: torch.Tensor | None = None

    @torch.no_grad()
    def reference_logprobs(self, exp: Experience) -> torch.Tensor:
        R = exp.response_ids.shape[1]
        out = []
        for rows in self._chunks(len(exp)):
            with self.reference.active() as ref_model:
                fo = self.forward(ref_model, exp.select(rows, trim=True))
            out.append(pad_to(fo.logp.cpu(), R))
        return torch.cat(out)

    def single_update(self, n: int) -> bool:
        """One optimiser step per batch: the policy that sampled is the one being differentiated,
        so the PPO ratio is exactly 1 and ``old_logp`` is the loss pass's own detached log-probs
        (no separate forward pass; TRL does the same with ``num_iterations=1``)."""
        return self.acfg.epochs == 1 and self.local_minibatch >= n  # n: this rank's rows

    def importance_corrected(self, mb: Experience, adv: torch.Tensor, train_logp: torch.Tensor,
                             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``adv`` scaled per token by the truncated importance weight of the sampling engine's
        log-probs (``rollout.importance_cap``; off at 0). Scaling the advantage by a positive,
        detached weight scales the clipped policy term by it."""
        cap = self.cfg.rollout.importance_cap
        if not cap or mb.logprobs is None:
            return adv, {}
        w = truncated_importance_weights(train_logp, mb.logprobs[:, : adv.shape[1]], mask, cap)
        return adv * w, {"rollout/importance_weight": masked_mean(w, mask), "rollout/importance_capped": masked_mean(
            (w >= cap).float(), mask)}

    def _chunks(self, n: int) -> list[torch.Tensor]:
        return list(torch.arange(n).split(self.local_minibatch))

    @property
    def local_minibatch(self) -> int:
        """This rank's rows of a minibatch: ``minibatch_size`` split evenly over the processes."""
        return self.acfg.minibatch_size // distributed.size()

    def regularisers(self, fo: ForwardOut, mask: torch.Tensor, truncated: list[bool] | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-entropy and batch-entropy bonuses (subtracted from the loss); both always logged.
        ``truncated``: rows cut by max_new_tokens (the others ended with an end-of-turn token).

        The batch entropy is over the whole rollout batch (``batch_entropy_scope: batch``, when
        :meth:`step` split it into minibatches and the term has a coefficient:
        :meth:`_whole_batch_entropy`) or over the minibatch's rows."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.acfg.entropy_coef != 0):
            ent = masked_mean(fo.token_entropy(), mask)
        rows = mask.sum(1) > 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.acfg.batch_entropy_coef != 0):
            last = fo.logits_at(entropy_positions(self.acfg, mask, truncated))[rows]
            if getattr(self, "_whole_batch", None) is not None:
                bent = self._whole_batch_entropy(last, rows)
            elif distributed.size() > 1:
                bent = self._global_batch_entropy(last)
            else:
                bent = batch_entropy(last, self.acfg.batch_entropy_temperature) if len(last) else torch.zeros(())
        seen = getattr(self, "_seen", None)
        if seen is not None:  # the rows' distributions as this pass saw them: the logged whole-batch figure
            probs = (last.detach().float() / self.acfg.batch_entropy_temperature).softmax(-1)
            seen["sum"] = probs.sum(0) + (seen["sum"] if seen["sum"] is not None else 0)
            seen["rows"] += len(last)
        bonus = self.acfg.entropy_coef * ent + self.acfg.batch_entropy_coef * bent
        return bonus, {"entropy": ent.detach(), "batch_entropy": bent.detach()}

    def _whole_batch_entropy(self, last: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The batch entropy of the whole rollout batch (every rank's rows), differentiable through
        this minibatch's rows ``last`` (``rows``: which of the minibatch's rows they are): the other
        rows' distributions enter as constants, computed before the minibatch loop
        (:func:`rlsf.algorithms.core.batch_entropy_part`). The gradient is scaled by
        ``batch rows / minibatch rows``: each minibatch's step gets the minibatch estimate of the
        whole-batch term's gradient, as its clipped term is the minibatch estimate of the batch's,
        so ``batch_entropy_coef`` weighs the term as in the paper's loss whatever the number of
        minibatches. Across processes the rank's part is divided by its token share, as in
        :meth:`_global_batch_entropy`."""
        wb = self._whole_batch
        own_before = wb["probs"][self._mb_rows.to(wb["probs"].device)][rows.to(wb["probs"].device)]
        rest = (wb["total"] - own_before.sum(0)).to(last.device)
        n = float(len(last))
        if distributed.size() > 1:
            n = float(distributed.all_sum([n])[0])
        scale = wb["count"] / n if n > 0 else 0.0
        if distributed.size() > 1:
            scale = scale / self._share if self._share > 0 and len(last) else 0.0
        return batch_entropy_part(last, rest, wb["count"], self.acfg.batch_entropy_temperature, scale=scale)

    def _global_batch_entropy(self, last: torch.Tensor) -> torch.Tensor:
        """The batch entropy of the *global* minibatch (every rank's rows), differentiable through
        this rank's rows. The mean distribution is summed over ranks; the other ranks' part enters
        as a constant, so the gradient here is this rank's share of the global term's gradient.
        The term is not a token mean, so it is divided by this rank's token share (:meth:`step`
        multiplies the whole loss by it): summed over ranks it enters the loss once, unscaled."""
        probs = (last.float() / self.acfg.batch_entropy_temperature).softmax(-1)
        local = probs.sum(0) if len(last) else torch.zeros(probs.shape[-1], device=last.device)
        total = distributed.sum_tensor(torch.cat([local.detach(), torch.tensor([float(len(last))],
                                                                                device=local.device)]))
        p = (local + (total[:-1] - local.detach())) / total[-1].clamp(min=1)
        h = -(p * p.clamp(min=1e-12).log()).sum()
        h_value = h.detach()
        if not len(last) or self._share == 0:
            return h_value
        return (h - h_value) / self._share + h_value

    def _set_lr(self) -> None:
        warm = self.acfg.warmup_steps
        scale = min(1.0, (self.updates + 1) / warm) if warm else 1.0
        for g in self.optimizer.param_groups:
            g["lr"] = g.setdefault("base_lr", g["lr"]) * scale  # base_lr: the configured rate

    #: This rank's share of the current minibatch's loss tokens (1 in one process); see :meth:`step`.
    _share = 1.0

    def step(self, exp: Experience, timer: Timer) -> dict[str, float]:
        """One update: prepare advantages, then ``epochs`` passes over shuffled minibatches.

        Across processes ``exp`` is this rank's rows (whole groups) and a minibatch is
        ``minibatch_size / world size`` rows of each rank. :meth:`loss` gives token means over the
        rows it sees; the loss back-propagated is that times this rank's share of the minibatch's
        loss tokens (``_share``), and the gradients are summed over ranks before clipping: the
        gradient of the token mean over the global minibatch, as one process would take it. The
        statistics are the global minibatch's (token means weighted by the same shares)."""
        W = distributed.size()
        if not bool(distributed.all_sum([float(exp.valid.any())], op="max")[0]):
            return {"update/skipped": 1.0}  # every check failed (on every rank): nothing to learn from
        whole = self.acfg.batch_entropy_scope == "batch"
        # Split into minibatches, the batch entropy of the whole batch needs the other rows'
        # distributions: kept from the pass prepare() makes anyway (old log-probs), else one of its own.
        self._collect_probs = whole and len(exp) > self.local_minibatch and self.acfg.batch_entropy_coef != 0
        self._batch_probs = None
        data, stats = self.prepare(exp, timer)
        if self._collect_probs:
            if self._batch_probs is None:
                with timer("logprobs"):
                    self._batch_probs = self.batch_entropy_rows(exp)
            rows = float((exp.loss_mask.sum(1) > 0).sum())
            total = distributed.sum_tensor(torch.cat([self._batch_probs.sum(0).double(),
                                                      torch.tensor([rows], dtype=torch.float64,
                                                                   device=self._batch_probs.device)]))
            self._whole_batch = {"probs": self._batch_probs, "total": total[:-1].float(), "count": float(total[-1])}
        self._seen = {"sum": None, "rows": 0} if whole else None
        mask_all = exp.loss_mask
        if "old_logp" in data:
            stats.update(self._diagnostics(exp, data["old_logp"], data.get("ref_logp"), mask_all))
        sums: dict[str, float] = {}
        count = 0
        device = model_device(self.model)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.model.train()
        with timer("update"):
            for epoch in range(self.acfg.epochs):
                if epoch == 1:
                    seen, self._seen = self._seen, None  # the first pass over the batch is the logged one
                for rows in torch.randperm(len(exp)).split(self.local_minibatch):
                    self._mb_rows = rows
                    mb = exp.select(rows, trim=True)  # no columns that are padding in every row
                    R = mb.response_ids.shape[1]
                    mask = mb.loss_mask.to(device)
                    if W > 1:
                        tokens = float(mask.sum())
                        total_tokens = float(distributed.all_sum([tokens])[0])
                        self._share = tokens / total_tokens if total_tokens > 0 else 0.0
                    mdata = {k: v[rows][:, :R].to(device) for k, v in data.items()}
                    # The previous minibatch's gradients go before this forward pass, not after it: they
                    # would otherwise sit beside its activations at the peak (0.54 GB for 135M float32).
                    self.optimizer.zero_grad(set_to_none=True)
                    fo = self.forward(self.model, mb, hidden=self.needs_hidden)
                    loss, mstats = self.loss(mb, mdata, fo, mask)
                    diag = {}
                    if "old_logp" not in data:  # single update: the loss pass is the sampling policy
                        diag = self._diagnostics(mb, fo.logp.detach().cpu(), mdata.get("ref_logp"), mask.cpu())
                    if W > 1:
                        loss = loss * self._share
                    loss.backward()
                    distributed.all_reduce_gradients(params)
                    mstats["total"] = loss.detach()
                    mstats = self._global_stats(mstats) if W > 1 else mstats
                    if self.acfg.max_grad_norm > 0:
                        mstats["grad_norm"] = clip_grad_norm_(params, self.acfg.max_grad_norm)  # the global norm
                    self._set_lr()
                    self.optimizer.step()
                    self.updates += 1
                    for k, v in {**mstats, **diag}.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
        self._share = 1.0
        if self.acfg.epochs == 1:
            seen = self._seen
        self._collect_probs, self._batch_probs, self._whole_batch, self._seen = False, None, None, None
        self._mb_rows = None
        for k, v in sums.items():
            stats[k if k in DIAGNOSTICS or k.startswith("rollout/") else f"loss/{k}"] = v / count
        if whole and seen is not None and seen["sum"] is not None:
            # The whole batch's figure (every rank's rows), not the mean of the minibatches' own.
            total = distributed.sum_tensor(torch.cat([seen["sum"].double(), torch.tensor(
                [float(seen["rows"])], dtype=torch.float64, device=seen["sum"].device)]))
            if total[-1] > 0:
                p = (total[:-1] / total[-1]).float()
                stats["batch_entropy"] = float(-(p * p.clamp(min=1e-12).log()).sum())
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        return stats

    def _global_stats(self, mstats: dict[str, Any]) -> dict[str, float]:
        """A minibatch's statistics over every rank's rows: ``total`` (already this rank's share of
        the loss) summed, the batch entropy (already global) as it is, every other statistic -- a
        token mean over this rank's rows -- weighted by the rank's token share and summed."""
        keys = sorted(k for k in mstats if k not in GLOBAL_STATS)
        local = [float(mstats[k]) * (1.0 if k == "total" else self._share) for k in keys]
        out = dict(zip(keys, distributed.all_sum(local).tolist()))
        return {**{k: float(v) for k, v in mstats.items() if k in GLOBAL_STATS}, **out}

    @staticmethod
    def _diagnostics(exp: Experience, logp: torch.Tensor, ref_logp: torch.Tensor | None,
                     mask: torch.Tensor) -> dict[str, float]:
        """KL to the reference per completion (sum over its tokens of ``log pi - log pi_ref``, the
        sampled-token estimate) and the mean gap between sampling and update log-probs."""
        out = {}
        if ref_logp is not None:
            kl = masked_sum(kl_penalty(logp, ref_logp.to(logp.device), "k1"), mask, dim=1)
            # Over every rank's completions (in one process the collective is the identity).
            s, n = distributed.all_sum([float(kl.sum()), float((mask.sum(1) > 0).sum())]).tolist()
            out["kl"] = s / max(n, 1.0)
        if exp.logprobs is not None:
            # How far the sampling distribution (bf16 sampling weights) is from the policy being
            # updated: the update uses its own log-probs, so this is a diagnostic.
            out["rollout/logprob_gap"] = masked_mean_across_ranks((exp.logprobs - logp).abs(), mask)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state.get("updates", 0)


#: Statistics logged under their own names rather than ``loss/...`` (and ``rollout/...``).
DIAGNOSTICS = ("entropy", "batch_entropy", "kl")
#: Minibatch statistics that are the same on every rank (not token means over its rows).
GLOBAL_STATS = ("batch_entropy", "grad_norm")
