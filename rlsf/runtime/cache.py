"""Where rlsf keeps what it makes once per machine (converted models, the bf16 probe).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where rlsf keeps converted models: ``$RLSF_CACHE``, else ``$XDG_CACHE_HOME/rlsf``, else ``~/.cache/rlsf``."""
    if os.environ.get("RLSF_CACHE"):
        return Path(os.environ["RLSF_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "rlsf"
    return Path.home() / ".cache" / "rlsf"
