"""Tasks: data + prompt + symbolic checker. Importing this package registers the built-in ones."""

from rlsf.tasks.base import Example, Task, TaskError, available_tasks, get_task, register
from rlsf.tasks import game24 as _game24  # noqa: F401  (registers "game24")
from rlsf.tasks import spoc as _spoc  # noqa: F401  (registers "spoc")
from rlsf.tasks import chem as _chem  # noqa: F401  (registers "molgen", "forward", "retro")
from rlsf.tasks import math_word as _math_word  # noqa: F401  (registers "gsm8k", "svamp")
from rlsf.tasks import arith as _arith  # noqa: F401  (registers "arith")
from rlsf.tasks import sentiment as _sentiment  # noqa: F401  (registers "sentiment")

__all__ = ["Example", "Task", "TaskError", "available_tasks", "get_task", "register"]
