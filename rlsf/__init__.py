"""rlsf: fine-tune language models with reinforcement learning from symbolic feedback.

Python API (the same stages as the ``rlsf`` console script)::

    from rlsf import Config, sft, train, evaluate, pipeline
    cfg = Config.load("configs/game24.yaml", {"train.steps": 10})
    summary = pipeline(cfg)          # SFT -> eval -> RL -> eval

The package reads in the order of its dataflow (``docs/architecture.md``): ``tasks`` (data,
prompts, checkers) -> ``rollout`` (sampling) -> ``feedback`` (certificates, check service, token
rewards) -> ``algorithms`` (advantages, losses, updates) -> ``stages`` (sft, train, evaluate,
orm, pipeline, experiment) -> ``cli``. Names are loaded on first use, so ``import rlsf`` (and
every check worker, which imports a task's module) loads neither torch nor transformers.
"""

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "Config": "rlsf.config", "ConfigError": "rlsf.settings", "Certificate": "rlsf.feedback.certificate",
    "Span": "rlsf.feedback.certificate", "train": "rlsf.stages.train", "sft": "rlsf.stages.sft",
    "evaluate": "rlsf.stages.evaluate", "pipeline": "rlsf.stages.pipeline",
}


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rlsf' has no attribute {name!r}")


__all__ = sorted(_API)
