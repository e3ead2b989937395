"""rlsf: fine-tune language models with reinforcement learning from symbolic feedback.

Python API (the same stages as the ``rlsf`` console script)::

    from rlsf import Config, sft, train, evaluate, pipeline
    cfg = Config.load("configs/game24.yaml", {"train.steps": 10})
    summary = pipeline(cfg)          # SFT -> eval -> RL -> eval
"""

from rlsf.config import Config, ConfigError
from rlsf.feedback import Certificate, Span

__version__ = "0.1.0"


def __getattr__(name):  # the stages import torch/transformers: load them on first use
    if name == "train":
        from rlsf.trainer import train
        return train
    if name == "sft":
        from rlsf.sft import sft
        return sft
    if name == "evaluate":
        from rlsf.evaluate import evaluate
        return evaluate
    if name == "pipeline":
        from rlsf.pipeline import pipeline
        return pipeline
    raise AttributeError(name)


__all__ = ["Certificate", "Config", "ConfigError", "Span", "evaluate", "pipeline", "sft", "train"]
