"""The stages a user runs, one module each: ``sft``, ``train`` (the RL loop), ``evaluate``,
``orm`` (outcome reward model), and the two that chain them, ``pipeline`` and ``experiment``.
``context`` is the start-up they share.

Each stage owns its settings: :data:`STAGE_SETTINGS` lists, per command, the settings the stage
reads, and the command offers exactly those (``rlsf sft --help``); a flag for any other setting
is refused with a line naming the commands that use it. ``"algorithm"`` stands for the sections
of the registered RL algorithms (``ppo``, ``grpo``, ...), of which a run reads the one
``train.algorithm`` names. This module imports nothing, so the CLI can read the table without
loading torch.
"""

#: Per command: the settings its stage reads, as sections (``"sft"``) or single fields
#: (``"rollout.engine"``). ``"algorithm"``: the registered algorithms' sections.
#: The model settings of a stage that loads the model without LoRA adapters and samples (evaluation, the ORM).
_MODEL_PLAIN = ("model.name", "model.device", "model.dtype", "model.autocast", "model.sampling_autocast",
                "model.threads")
#: The ORM's: it trains the language model under its head (no adapters) and samples.
_MODEL_ORM = (*_MODEL_PLAIN, "model.gradient_checkpointing")
#: SFT's: it trains (LoRA) but never samples.
_MODEL_SFT = ("model.name", "model.device", "model.dtype", "model.autocast", "model.lora", "model.lora_r",
              "model.lora_alpha", "model.lora_dropout", "model.gradient_checkpointing", "model.threads")
#: The sampling engine's settings, for the stages that sample without training (evaluation, the ORM).
_ENGINE = ("rollout.engine", "rollout.fused_step", "rollout.vllm_memory_share", "rollout.vllm_kv_cache_gib",
           "rollout.vllm_max_model_len")
#: The token-reward settings (``reward.orm`` and its weights are the RL loop's alone).
_TOKEN_REWARD = ("reward.mode", "reward.spread_spans", "reward.span_weight")

STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "sft": (*_MODEL_SFT, "task", "sft", "run"),
    "train": ("model", "task", "rollout", "reward", "check", "train", "algorithm", "run"),
    "eval": (*_MODEL_PLAIN, "task.name", "task.options", *_ENGINE, "check", "eval",
             "run.output_dir", "run.seed", "run.progress"),
    "orm": (*_MODEL_ORM, "task", "rollout.max_new_tokens", "rollout.temperature", "rollout.top_p",
            "rollout.generation_batch_size", *_ENGINE, "check", "orm", "run"),
    "check": ("model.name", "task.name", "task.options", *_TOKEN_REWARD, "check"),
}
# The chained stages read what their stages read (in this order, each once).
_CHAINED = STAGE_SETTINGS["sft"] + STAGE_SETTINGS["train"] + STAGE_SETTINGS["eval"]
STAGE_SETTINGS["pipeline"] = tuple(dict.fromkeys(_CHAINED + ("pipeline",)))
STAGE_SETTINGS["experiment"] = tuple(dict.fromkeys(_CHAINED + STAGE_SETTINGS["orm"] + ("experiment",)))
