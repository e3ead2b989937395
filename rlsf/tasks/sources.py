"""Where a task's data comes from: the data folder, a packaged copy, or Hugging Face ``datasets``.

**What each task reads** is written down once, in :data:`SOURCES`: a :class:`DataSpec` per task
with its tables (splits, or one table the task splits itself) and the fields each row needs, the
default files in the data folder, the original source (URL, licence) and a Hub copy where one is
known. ``rlsf data [TASK]`` prints it with where the files were looked for (docs/data.md). A task
of one's own declares its own as the class attribute ``data_spec``.

**The data folder** (:func:`locate`): the task option ``data_dir``, alone when given; else
``$RLSF_DATA_DIR``, then a packaged copy where one exists (:meth:`Task.data_file` raises with
every place looked at).

**The ``dataset`` option** (:class:`DatasetOption`): rows from ``datasets`` instead of the folder
-- a Hub name (for users with network), a ``save_to_disk`` folder, a data file or a folder of them,
or a builder (``json``, ``csv``, ``parquet``) with ``data_files``. Their columns are renamed to the
task's fields (``columns``), values become text where the task's own files are text (CSV/TSV, so
``Rank`` 1 reads as in ``24.csv``), and the rows go through the task's own row parsing
(:func:`dataset_rows`): a malformed row is reported and skipped as it is from a file. ``datasets``
is imported only when the option is used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsf.errors import RlsfError
from rlsf.settings import opt
from rlsf.tasks.spoc_data import COLUMNS as SPOC_COLUMNS

DATA_ENV = "RLSF_DATA_DIR"


class TaskError(RlsfError):
    """Bad task data or options: the message says which file, row or option."""


# ---- what each task reads ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HubCopy:
    """A copy on the Hugging Face Hub, and how its columns map to the task's fields."""

    path: str
    name: str | None = None  # the config
    columns: dict[str, str] = field(default_factory=dict)  # their column -> the task's field
    note: str = ""


@dataclass(frozen=True)
class DataSpec:
    """What a task reads (one line each in ``rlsf data``)."""

    what: str
    tables: dict[str, tuple[str, ...]]  # table (split, or "all") -> fields every row needs; {} for no data
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> default files in the data folder
    optional: tuple[str, ...] = ()  # fields used when a row has them
    extra: tuple[str, ...] = ()  # more paths in the data folder, read whatever option dataset says
    pooled: bool = False  # one table ("all") that the task splits itself
    text: bool = False  # fields are text, as the task's CSV/TSV files give them
    url: str = ""
    licence: str = ""
    hub: HubCopy | None = None
    recipe: str = ""  # option dataset for the original files (YAML; FOLDER is where they are)
    packaged: tuple[str, str] | None = None  # (module, path inside it) of a copy installed with a package
    install: str = ""  # how to install that package
    file_options: tuple[str, ...] = ()  # options naming files: option dataset replaces them
    notes: str = ""

    def layout(self) -> list[str]:
        """Every path the task reads from the data folder, in order."""
        return list(dict.fromkeys([f for files in self.files.values() for f in files] + list(self.extra)))


_CHEBI = "https://github.com/blender-nlp/MolT5/tree/main/ChEBI-20_data"
_CHEMBENCH = "https://github.com/ChemFoundationModels/ChemLLMBench (data/)"
_USPTO_TRAIN = ("https://github.com/onlyairnopods/ChemLLMBench-Reimplementation (data/retro/"
                "uspto50k_retro_train.csv, USPTO-50k of Chemformer with ChemLLMBench's test rows removed)")
_TSV = 'kwargs: {sep: "\\t", quoting: 3, keep_default_na: false'
_SPOC_TEXT = ", features: {" + ", ".join(f"{c}: string" for c in SPOC_COLUMNS) + "}"

#: What each built-in task reads.
SOURCES: dict[str, DataSpec] = {
    "arith": DataSpec("Generated from the task's options (seeded): no data.", {}),
    "game24": DataSpec(
        "Game of 24 puzzles ranked by human solve time (Tree of Thoughts, Yao et al. 2023), 1,362 rows; rows "
        "test_start..test_end (900-999) are the test split.",
        {"all": ("Rank", "Puzzles")}, {"all": ("game24/24.csv",)}, pooled=True, text=True,
        url="https://github.com/princeton-nlp/tree-of-thought-llm (src/tot/data/24/24.csv)", licence="MIT",
        recipe="FOLDER/24.csv", packaged=("tot", "data/24/24.csv"),
        install="pip install --no-deps tree-of-thoughts-llm", file_options=("data_path",),
        notes="Rows in rank order: the test split is by row number."),
    "gsm8k": DataSpec(
        "Grade-school math (Cobbe et al. 2021): 7,473 train and 1,319 test problems; the answer ends in '#### N'.",
        {"train": ("question", "answer"), "test": ("question", "answer")},
        {"train": ("gsm8k/train.jsonl",), "test": ("gsm8k/test.jsonl",)},
        url="https://github.com/openai/grade-school-math (grade_school_math/data/train.jsonl, test.jsonl)",
        licence="MIT", hub=HubCopy("openai/gsm8k", "main"),
        recipe="{path: json, data_files: {train: FOLDER/train.jsonl, test: FOLDER/test.jsonl}}"),
    "svamp": DataSpec(
        "SVAMP math word problems (Patel et al. 2021): 1,000 problems, split by a seeded shuffle (test_size).",
        {"all": ("Body", "Question", "Equation", "Answer")}, {"all": ("svamp/SVAMP.json",)}, optional=("ID",),
        pooled=True, url="https://github.com/arkilpatel/SVAMP (SVAMP.json)", licence="MIT",
        hub=HubCopy("ChilleD/SVAMP", note="its train (700) and test (300) splits are read as one table of 1,000 "
                    "in that order, so the seeded test split holds other problems than with SVAMP.json"),
        recipe="FOLDER/SVAMP.json"),
    "sentiment": DataSpec(
        "VADER's 10,605 movie-review snippets with their mean human rating (Hutto & Gilbert 2014): tab-separated "
        "id, rating, text without a header; prompts are their first words.",
        {"all": ("id", "rating", "text")}, {"all": ("sentiment/movieReviewSnippets_GroundTruth.txt",)},
        pooled=True, text=True,
        url="https://github.com/cjhutto/vaderSentiment (additional_resources/hutto_ICWSM_2014/"
            "movieReviewSnippets_GroundTruth.txt; not in the PyPI wheel)", licence="MIT",
        recipe="{path: csv, data_files: FOLDER/movieReviewSnippets_GroundTruth.txt, kwargs: {sep: \"\\t\", "
               "header: null, column_names: [id, rating, text], quoting: 3, keep_default_na: false, "
               "features: {id: string, rating: string, text: string}}}"),
    "spoc": DataSpec(
        "SPoC v1.1 pseudo-code to C++ (Kulal et al. 2019): TSV rows, one per program line, and test cases per "
        "problem.",
        {"train": SPOC_COLUMNS, "test": SPOC_COLUMNS},
        {"train": ("spoc/spoc-train-eval.tsv", "spoc/spoc-train-test.tsv"), "test": ("spoc/spoc-testp.tsv",)},
        extra=("spoc/testcases",), text=True,
        url="https://sumith1896.github.io/spoc/ (https://sumith1896.github.io/spoc/data/spoc.zip: test/spoc-testp.tsv, "
            "train/split/, testcases/)", licence="CC BY 4.0",
        recipe="{path: csv, data_files: {train: [FOLDER/spoc-train-eval.tsv, FOLDER/spoc-train-test.tsv], "
               "test: FOLDER/spoc-testp.tsv}, " + _TSV + _SPOC_TEXT + "}}",
        file_options=("train_tsvs", "test_tsv"),
        notes="The test cases (spoc/testcases/PROBID/) always come from the data folder."),
    "molgen": DataSpec(
        "Text to molecule, ChEBI-20 of MolT5 (Edwards et al. 2022): tab-separated CID, SMILES, description (train "
        "on validation.txt, test on test.txt), and ChemLLMBench's 100-item molecule-design set (design100).",
        {s: ("SMILES", "description") for s in ("train", "test", "design100")},
        {"train": ("chebi20/validation.txt",), "test": ("chebi20/test.txt",),
         "design100": ("chebi20/molecule_design_test_100.csv",)}, optional=("CID",), text=True,
        url=f"{_CHEBI}; design100: {_CHEMBENCH} molecule_design/molecule_design_test.csv",
        licence="BSD-3-Clause (MolT5), ChEBI CC BY 4.0; ChemLLMBench MIT",
        recipe="{path: csv, data_files: {train: FOLDER/validation.txt, test: FOLDER/test.txt}, " + _TSV + "}}",
        file_options=("train_file", "test_file")),
    "forward": DataSpec(
        "Forward reaction prediction: USPTO-50k reversed to train (reactants_smiles, products_smiles), "
        "ChemLLMBench's 100 USPTO-MIT reactions to test (reactant, product).",
        {"train": ("reactants_smiles", "products_smiles"), "test": ("reactant", "product")},
        {"train": ("uspto/uspto50k_retro_train.csv",), "test": ("uspto/uspto_mit_forward_test.csv",)}, text=True,
        url=f"train: {_USPTO_TRAIN}; test: {_CHEMBENCH} reaction_prediction/uspto_test.csv",
        licence="USPTO data CC0; ChemLLMBench and its reimplementation MIT",
        recipe="{path: csv, data_files: {train: FOLDER/uspto50k_retro_train.csv, test: FOLDER/"
               "uspto_mit_forward_test.csv}}", file_options=("train_file", "test_file")),
    "retro": DataSpec(
        "Retrosynthesis on USPTO-50k (products_smiles, reactants_smiles); test: ChemLLMBench's 100 reactions.",
        {"train": ("products_smiles", "reactants_smiles"), "test": ("products_smiles", "reactants_smiles")},
        {"train": ("uspto/uspto50k_retro_train.csv",), "test": ("uspto/uspto50k_retro_test.csv",)}, text=True,
        url=f"train: {_USPTO_TRAIN}; test: {_CHEMBENCH} retro/uspto50k_retro_test.csv",
        licence="USPTO data CC0; ChemLLMBench and its reimplementation MIT",
        recipe="{path: csv, data_files: {train: FOLDER/uspto50k_retro_train.csv, test: FOLDER/"
               "uspto50k_retro_test.csv}}", file_options=("train_file", "test_file")),
}


def spec_of(cls: type) -> DataSpec | None:
    """What a task class reads: its own ``data_spec``, else that of the nearest registered built-in
    class it derives from (:data:`SOURCES`); ``None`` when it says nothing."""
    if getattr(cls, "data_spec", None) is not None:
        return cls.data_spec
    for c in cls.__mro__:
        if vars(c).get("name") in SOURCES:
            return SOURCES[vars(c)["name"]]
    return None


# ---- the data folder ---------------------------------------------------------------------------------

def packaged_file(module: str, relative: str) -> Path | None:
    """``relative`` inside an installed package, found without importing it (``None``: not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / relative


def locate(relative: str, data_dir: str | os.PathLike | None,
           packaged: Callable[[], Path | None] | None = None) -> tuple[Path | None, list[tuple[str, str, bool]]]:
    """The file ``relative`` by the data convention, and every place looked at as ``(path,
    label, exists)``: the option ``data_dir`` alone when given; else ``$RLSF_DATA_DIR``, then the
    packaged copy."""
    if data_dir is not None:
        path = Path(data_dir).expanduser() / relative
        return (path if path.exists() else None), [(str(path), "option data_dir", path.exists())]
    tried: list[tuple[str, str, bool]] = []
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser() / relative
        tried.append((str(path), f"${DATA_ENV}", path.exists()))
        if path.exists():
            return path, tried
    if packaged is not None:
        path = packaged()
        found = path is not None and path.exists()
        tried.append((str(path), "packaged copy", found) if path is not None
                     else ("a packaged copy", "not installed", False))
        if found:
            return path, tried
    return None, tried


# ---- the dataset option ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetOption:
    """Option ``dataset`` of every task that reads data: where ``datasets`` loads the rows from."""

    path: str = opt("", "A Hub name (openai/gsm8k), a save_to_disk folder, a data file (.json, .jsonl, .csv, "
                        ".tsv, .parquet, .arrow), a folder of data files, or a builder (json, csv, parquet, text) "
                        "with data_files.")
    name: str | None = opt(None, "The dataset's config (openai/gsm8k: main).")
    splits: Any = opt(None, "The dataset's split for each of the task's: {test: validation}, a list to concatenate "
                            "({train: [a, b]}); default: the same names. A task that splits its data itself "
                            "(svamp, game24, sentiment) takes a list of splits to concatenate (default: all).")
    columns: dict = opt({}, "Their column -> the task's field ({problem: question}), or per split "
                            "({train: {...}, test: {...}}).")
    data_files: Any = opt(None, "Files for a builder: a path, a list, or {split: path or list}; URLs work too.")
    revision: str | None = opt(None, "The Hub revision (a tag, branch or commit).")
    kwargs: dict = opt({}, "More keyword arguments of datasets.load_dataset (csv: {sep: \"\\t\", quoting: 3}); "
                           "features: {column: string, ...} reads those columns as the types named.")


KEYS = tuple(f.name for f in dataclasses.fields(DatasetOption))
_BUILDERS = {".json": ("json", {}), ".jsonl": ("json", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"}),
             ".parquet": ("parquet", {}), ".arrow": ("arrow", {})}


def _names(value: Any) -> bool:
    """A split name, or a non-empty list of them."""
    return (isinstance(value, str) and bool(value)) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value))


def dataset_option(task: Any) -> DatasetOption:
    """The task's ``dataset`` option, checked against what the task reads (:func:`spec_of`); a
    mapping or a bare path becomes a :class:`DatasetOption`. Raises :class:`TaskError` naming the
    key at fault."""
    return check_dataset(task.name, task.options, spec_of(type(task)))


def check_dataset(name: str, options: Any, spec: DataSpec | None) -> DatasetOption:
    """:func:`dataset_option` for a task named ``name`` with ``options`` (a task's Options)."""
    value = options.dataset
    pre = f"task {name!r}: option dataset"
    if isinstance(value, DatasetOption):
        value = dataclasses.asdict(value)
    if isinstance(value, (str, os.PathLike)):
        value = {"path": os.fspath(value)}
    if not isinstance(value, Mapping):
        raise TaskError(f"{pre} must be a Hub name, a path or a mapping with keys {', '.join(KEYS)}; got {value!r}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise TaskError(f"{pre}: unknown key(s) {unknown}; keys: {', '.join(KEYS)}")
    if spec is None or not spec.tables:
        why = "generates its examples and reads no data" if spec is not None else \
            "declares no data_spec (what it reads), so it cannot take rows from a dataset"
        raise TaskError(f"{pre}: this task {why}")
    o = DatasetOption(**{k: v for k, v in value.items() if v is not None or k in ("name", "revision")})
    if not isinstance(o.path, (str, os.PathLike)) or not os.fspath(o.path):
        raise TaskError(f"{pre}: path must be a Hub name or a local path, got {o.path!r}")
    o = dataclasses.replace(o, path=os.fspath(o.path))
    hub = spec.hub
    if hub is not None and o.path == hub.path:  # the known Hub copy: its config and columns by default
        o = dataclasses.replace(o, name=o.name or hub.name, columns=o.columns or dict(hub.columns))
    for key in ("name", "revision"):
        if getattr(o, key) is not None and not isinstance(getattr(o, key), str):
            raise TaskError(f"{pre}: {key} must be a string, got {getattr(o, key)!r}")
    if not isinstance(o.kwargs, Mapping) or not all(isinstance(k, str) for k in o.kwargs):
        raise TaskError(f"{pre}: kwargs must map argument names to values, got {o.kwargs!r}")
    taken = sorted(set(o.kwargs) & {"path", "name", "data_files", "revision", "split", "streaming"})
    if taken:
        raise TaskError(f"{pre}: kwargs may not set {taken} (path, name, data_files and revision are keys of "
                        "their own; splits are chosen with splits; streaming is not supported)")
    _check_splits(o.splits, spec, pre)
    _columns(o.columns, spec, pre)  # checked here, applied per table when loading
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(options)}
    named = [k for k in spec.file_options if getattr(options, k) != defaults.get(k)]
    if named:
        raise TaskError(f"{pre} and option {named[0]} both say where the data is: set one of them")
    return o


def _check_splits(splits: Any, spec: DataSpec, pre: str) -> None:
    if splits is None:
        return
    if spec.pooled:
        if not _names(splits):
            raise TaskError(f"{pre}: this task splits its data itself, so splits is the dataset's split (or a list "
                            f"of them) to read as one table, e.g. [train, test]; got {splits!r}")
        return
    if not isinstance(splits, Mapping) or not all(_names(v) for v in splits.values()):
        raise TaskError(f"{pre}: splits maps the task's splits ({', '.join(spec.tables)}) to the dataset's (a name or "
                        f"a list), e.g. {{test: validation}}; got {splits!r}")
    unknown = sorted(set(splits) - set(spec.tables))
    if unknown:
        raise TaskError(f"{pre}: splits names {unknown}, not splits of this task ({', '.join(spec.tables)})")


def _columns(columns: Any, spec: DataSpec, pre: str, table: str | None = None) -> dict[str, str]:
    """The column mapping of ``table`` (checked whole when ``table`` is None)."""
    if not isinstance(columns, Mapping):
        raise TaskError(f"{pre}: columns maps the dataset's columns to the task's fields, got {columns!r}")
    nested = [isinstance(v, Mapping) for v in columns.values()]
    if any(nested):
        if not all(nested) or not set(columns) <= set(spec.tables):
            raise TaskError(f"{pre}: columns is either one mapping {{theirs: ours}} or one per split of the task "
                            f"({', '.join(spec.tables)}), not a mix; got {dict(columns)!r}")
        for part in columns.values():
            _columns(part, spec, pre)
        return dict(columns.get(table, {})) if table is not None else {}
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items()):
        raise TaskError(f"{pre}: columns maps column names to field names (strings), got {dict(columns)!r}")
    return dict(columns)


# ---- loading through datasets ------------------------------------------------------------------------

@dataclass
class Rows:
    """Rows of one table for a task's own parsing: ``(number, record)`` and where they came from."""

    source: str
    items: list[tuple[int, Any]]
    unit: str = "line"
    offset: int = 0  # number - offset is what messages show (a dataset's own row index)

    def where(self, n: int) -> str:
        return f"{self.source} {self.unit} {n - self.offset}"


_LOADED: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()  # task -> its loaded datasets


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise TaskError("option dataset needs the Hugging Face `datasets` package: pip install datasets") from None
    return datasets


def open_dataset(option: DatasetOption, task: str) -> Any:
    """A ``DatasetDict`` (or ``Dataset``) as ``option`` describes, loaded by ``datasets``."""
    datasets = _datasets()
    pre = f"task {task!r}: option dataset"
    local = Path(option.path).expanduser()
    looks_local = option.path.startswith(("/", ".", "~")) or local.suffix.lower() in _BUILDERS
    if looks_local and not local.exists():
        raise TaskError(f"{pre}: {local} does not exist (a Hub name is owner/name)")
    try:
        features = option.kwargs.get("features")
        if isinstance(features, Mapping) and not isinstance(features, datasets.Features):
            # {column: dtype} from YAML: a csv then reads worker "01" as the text "01", not the number 1
            option = dataclasses.replace(option, kwargs={**option.kwargs, "features": datasets.Features(
                {str(k): datasets.Value(str(v)) for k, v in features.items()})})
        saved = local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists())
        extra = [k for k in ("name", "data_files", "revision") if getattr(option, k)]
        if (saved or local.is_file()) and extra + (["kwargs"] if saved and option.kwargs else []):
            what = "a save_to_disk folder, loaded as it is" if saved else "one file (a builder takes data_files)"
            raise TaskError(f"{pre}: {local} is {what}: drop {', '.join(extra or ['kwargs'])}")
        if saved:
            return datasets.load_from_disk(str(local))
        if local.is_file():
            if local.suffix.lower() not in _BUILDERS:
                raise TaskError(f"{pre}: {local}: no builder for {local.suffix or 'a file without suffix'!r}; name "
                                f"one: {{path: csv, data_files: {local}, kwargs: {{sep: \"\\t\"}}}} (or json, parquet, "
                                "text)")
            builder, defaults = _BUILDERS[local.suffix.lower()]
            return datasets.load_dataset(builder, data_files=str(local), **{**defaults, **option.kwargs})
        return datasets.load_dataset(option.path, option.name, data_files=option.data_files, revision=option.revision,
                                     **option.kwargs)
    except TaskError:
        raise
    except Exception as e:  # noqa: BLE001  (datasets raises many types for a bad name, file or argument)
        text = (str(e).strip().splitlines() or [""])[0][:300]
        raise TaskError(f"{pre}: cannot load {option.path!r}: {type(e).__name__}: {text}") from None


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _wanted(option: DatasetOption, spec: DataSpec, table: str) -> list[str] | None:
    """The dataset's splits that make the task's ``table`` (``None``: all of them)."""
    if spec.pooled:
        return [option.splits] if isinstance(option.splits, str) else option.splits
    want = (option.splits or {}).get(table, table)
    return [want] if isinstance(want, str) else list(want)


def _label(option: DatasetOption, split: str | None) -> str:
    """Where a split's rows came from, for messages: its files, else the dataset and the split."""
    files = option.data_files
    if isinstance(files, Mapping):
        files = files.get(split)
    if files:
        return "+".join(Path(str(f)).name for f in ([files] if isinstance(files, (str, os.PathLike)) else files))
    if Path(option.path).expanduser().is_file():
        return Path(option.path).name
    return option.path + (f"[{option.name}]" if option.name else "") + (f" {split}" if split is not None else "")


def load_table(option: DatasetOption, spec: DataSpec, task: str, table: str,
               cache: dict | None = None) -> tuple[list[dict], str]:
    """The rows of the task's ``table`` (a split, or ``"all"``) with the task's field names, and
    where they came from (``openai/gsm8k[main] test``, ``test.jsonl``). With ``data_files`` per
    split only the splits the table needs are loaded (they may differ in columns)."""
    pre = f"task {task!r}: option dataset"
    wanted = _wanted(option, spec, table)
    key: tuple | None = None
    if isinstance(option.data_files, Mapping):
        key = tuple(wanted if wanted is not None else option.data_files)
        absent = [w for w in key if w not in option.data_files]
        if absent:
            raise TaskError(f"{pre}: data_files has no split {absent[0]!r} (splits: {', '.join(option.data_files)})"
                            + ("" if spec.pooled else f"; the task reads {', '.join(spec.tables)}"))
        option = dataclasses.replace(option, data_files={w: option.data_files[w] for w in key})
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = open_dataset(option, task)
    loaded = cache[key]
    parts = dict(loaded) if hasattr(loaded, "keys") else {None: loaded}
    if None in parts and not spec.pooled:
        raise TaskError(f"{pre}: {option.path} is one table without splits, and the task reads "
                        f"{', '.join(spec.tables)}: save a DatasetDict, or give data_files per split")
    wanted = list(parts) if wanted is None else wanted
    missing = [w for w in wanted if w not in parts]
    if missing:
        have = ", ".join(str(p) for p in parts)
        raise TaskError(f"{pre}: {option.path} has no split {missing[0]!r} (splits: {have})"
                        + ("" if spec.pooled else f"; map the task's {table} split with splits: {{{table}: NAME}}"))
    mapping = _columns(option.columns, spec, pre, table)
    rows: list[dict] = []
    for w in wanted:
        ds, where = parts[w], _label(option, w)
        have = list(ds.column_names)
        absent = [c for c in mapping if c not in have]
        if absent:
            raise TaskError(f"{pre}: columns names {absent[0]!r}, which {where} lacks (columns: {', '.join(have)})")
        fields = [mapping.get(c, c) for c in have]
        lacking = [f for f in spec.tables[table] if f not in fields]
        if lacking:
            raise TaskError(f"{pre}: the task needs field(s) {', '.join(lacking)} in every {table} row; {where} has "
                            f"columns {', '.join(have)}" + (f" (renamed by columns: {mapping})" if mapping else "")
                            + f"; map yours with columns: {{THEIRS: {lacking[0]}}}")
        for record in ds.to_list():
            out = {k: v for k, v in record.items() if k not in mapping}
            out.update({mapping[k]: v for k, v in record.items() if k in mapping})  # a renamed column wins
            rows.append({k: _text(v) for k, v in out.items()} if spec.text else out)
    return rows, "+".join(dict.fromkeys(_label(option, w) for w in wanted))


def dataset_rows(task: Any, table: str, start: int = 1) -> Rows | None:
    """The rows of ``table`` from the task's ``dataset`` option, numbered from ``start`` (as the
    task numbers its files' rows, so that ids match) and reported by their index in the dataset;
    ``None`` when the option is not set (the task reads its files)."""
    option = task.options.dataset
    if option is None:
        return None
    rows, source = load_table(option, spec_of(type(task)), task.name, table, _LOADED.setdefault(task, {}))
    return Rows(source, [(start + i, r) for i, r in enumerate(rows)], unit="row", offset=start)
