"""RL algorithms, registered by name. Each consumes the same ``[batch, tokens]`` reward tensor."""

from rlsf.algorithms.base import Algorithm
from rlsf.algorithms.grpo import GRPO
from rlsf.algorithms.ppo import PPO

ALGORITHMS: dict[str, type[Algorithm]] = {"ppo": PPO, "grpo": GRPO}

__all__ = ["ALGORITHMS", "Algorithm", "GRPO", "PPO"]
