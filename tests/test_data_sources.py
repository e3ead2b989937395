"""Data for everyone: every task loads through Hugging Face ``datasets`` (option ``dataset``) the same
rows as from its own files, Hub names included (never reached: the Hub's column names are rebuilt
locally), bad options fail in one line, and ``rlsf data`` says what a task needs and where it looked.

No test touches the network: the shared files are read by ``datasets``' local loaders (json, csv)
and from ``save_to_disk`` folders; the Hub loads are intercepted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml

datasets = pytest.importorskip("datasets")

from rlsf.cli.main import main
from rlsf.tasks import Task, TaskError, function_task, get_task
from rlsf.tasks.sources import SOURCES, DatasetOption, spec_of

#: The folder under the data folder that holds each task's original files.
FOLDERS = {"game24": "game24", "gsm8k": "gsm8k", "svamp": "svamp", "sentiment": "sentiment", "molgen": "chebi20",
           "forward": "uspto", "retro": "uspto", "spoc": "spoc"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """datasets' cache for this module (never the user's)."""
    return str(tmp_path_factory.mktemp("hf_cache"))


def recipe(name: str, folder, cache: str) -> dict:
    """The documented ``dataset`` option for a task's original files (``rlsf data TASK``)."""
    option = yaml.safe_load(SOURCES[name].recipe.replace("FOLDER", str(folder)))
    option = {"path": option} if isinstance(option, str) else option
    option.setdefault("kwargs", {})["cache_dir"] = cache
    return option


def same_rows(name: str, split: str, options: dict, base: dict | None = None) -> list[dict]:
    """The task's own rows of ``split``, checked equal to those it reads through ``options``."""
    own = get_task(name, **(base or {})).load(split)  # first: a missing file skips the test (conftest)
    through = get_task(name, **(base or {}), **options).load(split)
    assert len(through) == len(own) and through[:3] == own[:3] and through == own
    return own


# ---- the shared files through datasets' own loaders ---------------------------------------------------

@pytest.mark.parametrize("name,split", [("gsm8k", "test"), ("svamp", "test"), ("svamp", "train"), ("game24", "test"),
                                        ("sentiment", "test"), ("molgen", "test"), ("forward", "test"),
                                        ("retro", "test")])
def test_original_files_load_through_datasets_as_the_task_reads_them(name, split, shared_data, cache):
    same_rows(name, split, {"dataset": recipe(name, shared_data / FOLDERS[name], cache)})


def test_the_molecule_design_set_loads_as_its_own_split(shared_data, cache):
    option = {"path": str(shared_data / "chebi20" / "molecule_design_test_100.csv"), "splits": {"design100": "train"},
              "kwargs": {"cache_dir": cache}}
    assert len(same_rows("molgen", "design100", {"dataset": option})) == 100


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (the SPoC task needs it)")
def test_spoc_tsv_rows_load_through_datasets_and_keep_text_as_text(shared_data, cache):
    """Worker "01" stays "01" (the recipe reads every column as text): program ids are unchanged."""
    base = {"data_dir": str(shared_data), "shuffle": False}
    own = same_rows("spoc", "test", {"dataset": recipe("spoc", shared_data / "spoc", cache)}, base)
    assert any(ex["workerid"].startswith("0") for ex in own)


def test_a_save_to_disk_folder_loads_as_the_files_do(shared_data, cache, tmp_path):
    folder = shared_data / "gsm8k"
    get_task("gsm8k").load("train")  # a missing file skips here
    files = {s: str(folder / f"{s}.jsonl") for s in ("train", "test")}
    datasets.load_dataset("json", data_files=files, cache_dir=cache).save_to_disk(str(tmp_path / "saved"))
    own = same_rows("gsm8k", "test", {"dataset": str(tmp_path / "saved")})
    assert own[0]["id"] == "test:1"  # ids follow the rows as they do the file's lines


def test_the_hub_copies_load_with_their_config_and_columns(shared_data, monkeypatch):
    """``dataset: openai/gsm8k`` asks datasets for config main; ``ChilleD/SVAMP``'s train and test (with
    its extra column) read as one table. The Hub is not reached: its copies are rebuilt here."""
    for name in ("gsm8k", "svamp"):  # a missing file skips here
        get_task(name).load("train")
    gsm = {s: [json.loads(line) for line in (shared_data / "gsm8k" / f"{s}.jsonl").read_text().splitlines()]
           for s in ("train", "test")}
    problems = json.loads((shared_data / "svamp" / "SVAMP.json").read_text())
    for p in problems:
        p["question_concat"] = f"{p['Body']} {p['Question']}"
    hub = {("openai/gsm8k", "main"): datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in gsm.items()}),
           ("ChilleD/SVAMP", None): datasets.DatasetDict({"train": datasets.Dataset.from_list(problems[:700]),
                                                          "test": datasets.Dataset.from_list(problems[700:])})}
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return hub[path, name]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    same_rows("gsm8k", "test", {"dataset": "openai/gsm8k"})
    same_rows("svamp", "test", {"dataset": "ChilleD/SVAMP"})
    assert calls == [("openai/gsm8k", "main"), ("ChilleD/SVAMP", None)]


# ---- columns, splits, values ---------------------------------------------------------------------------

def test_columns_are_renamed_to_the_tasks_fields(tmp_path):
    rows = [{"problem": "Ann has 2 apples and buys 3. How many now?", "solution": "2+3=<<2+3=5>>5\n#### 5"},
            {"problem": "Bo has 4 pens and loses 1. How many now?", "solution": "4-1=<<4-1=3>>3\n#### 3"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                          "validation": datasets.Dataset.from_list(rows[1:])}).save_to_disk(str(tmp_path / "mine"))
    task = get_task("gsm8k", dataset={"path": str(tmp_path / "mine"), "splits": {"test": "validation"},
                                      "columns": {"problem": "question", "solution": "answer"}})
    assert isinstance(task.options.dataset, DatasetOption)
    test = task.load("test")
    assert [(ex["id"], ex["question"], ex["answer"]) for ex in test] == [("test:1", rows[1]["problem"], "3")]
    assert task.load("train")[0]["intermediate"] == ["5"]


def test_columns_per_split_for_files_of_different_columns(tmp_path):
    pairs = [("CCO.CC(=O)O", "CCOC(C)=O"), ("CN.CC(=O)Cl", "CNC(C)=O")]
    data = {s: datasets.Dataset.from_list([{"inputs": a, "outputs": b}]) for s, (a, b) in zip(("train", "test"), pairs)}
    datasets.DatasetDict(data).save_to_disk(str(tmp_path / "rx"))
    task = get_task("forward", dataset={"path": str(tmp_path / "rx"), "columns": {
        "train": {"inputs": "reactants_smiles", "outputs": "products_smiles"},
        "test": {"inputs": "reactant", "outputs": "product"}}})
    assert [(ex["source"], ex["target"]) for ex in task.load("train") + task.load("test")] == pairs


def test_csv_numbers_become_text_as_in_the_tasks_files(tmp_path, cache):
    (tmp_path / "24.csv").write_text("Rank,Puzzles\n1,1 1 4 6\n2,1 1 11 11\n3,1 2 3 4\n")
    task = get_task("game24", dataset={"path": str(tmp_path / "24.csv"), "kwargs": {"cache_dir": cache}},
                    test_start=2, test_end=3)
    assert task.load("test") == [{"id": 3, "numbers": [1, 2, 3, 4], "puzzle": "1 2 3 4"}]


def test_a_malformed_row_gets_the_tasks_own_report(tmp_path, capsys):
    rows = [{"question": "What is 2 + 2?", "answer": "2+2=4 so four"},  # no '#### N'
            {"question": "What is 3 + 3?", "answer": "3+3=6\n#### 6"}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "bad"))
    task = get_task("gsm8k", dataset=str(tmp_path / "bad"))
    assert [ex["id"] for ex in task.load("test")] == ["test:2"]
    assert task.malformed["test"] == [f"{tmp_path / 'bad'} test row 0: not enough values to unpack (expected 2, got 1)"]
    assert "1 malformed rows skipped" in capsys.readouterr().err


def test_a_function_task_takes_its_rows_from_a_dataset(tmp_path):
    datasets.Dataset.from_list([{"a": i, "b": i + 1} for i in range(10)]).save_to_disk(str(tmp_path / "sums"))
    Add = function_task("add", lambda row, text: float(text.strip() == str(row["a"] + row["b"])),
                        data=[{"a": 0, "b": 0}, {"a": 1, "b": 1}], prompt="{a} + {b} =")
    task = Add(dataset=str(tmp_path / "sums"), test_size=3)
    assert len(task.load("train")) == 7 and len(task.load("test")) == 3
    assert {ex["a"] for ex in task.load("train") + task.load("test")} == set(range(10))


# ---- bad options: one line each -----------------------------------------------------------------------

@pytest.mark.parametrize("name,options,message", [
    ("gsm8k", {"dataset": {"path": "openai/gsm8k", "config": "main"}}, r"unknown key\(s\) \['config'\]; keys: path"),
    ("gsm8k", {"dataset": 3}, "must be a Hub name, a path or a mapping"),
    ("gsm8k", {"dataset": {"path": "x", "splits": {"validation": "test"}}}, r"\['validation'\], not splits of this"),
    ("svamp", {"dataset": {"path": "x", "splits": {"test": "test"}}}, "splits its data itself"),
    ("gsm8k", {"dataset": {"path": "x", "columns": {"q": 1}}}, "columns maps column names to field names"),
    ("gsm8k", {"dataset": {"path": "x", "kwargs": {"split": "train"}}}, r"kwargs may not set \['split'\]"),
    ("arith", {"dataset": "openai/gsm8k"}, "generates its examples and reads no data"),
    ("game24", {"dataset": "x", "data_path": "24.csv"}, "option dataset and option data_path both say"),
    ("molgen", {"dataset": "x", "test_file": "mine.txt"}, "option dataset and option test_file both say"),
])
def test_bad_dataset_options_are_refused_when_the_task_is_built(name, options, message):
    with pytest.raises(TaskError, match=message):
        get_task(name, **options)


def test_missing_columns_and_splits_name_what_is_there(tmp_path):
    rows = [{"q": "What is 1 + 1?", "a": "#### 2"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(TaskError, match=r"needs field\(s\) question, answer in every train row; .* has columns q, a; "
                                        r"map yours with columns: \{THEIRS: question\}"):
        get_task("gsm8k", dataset=str(tmp_path / "d")).load("train")
    with pytest.raises(TaskError, match=r"columns names 'problem', which .* lacks \(columns: q, a\)"):
        get_task("gsm8k", dataset={"path": str(tmp_path / "d"), "columns": {"problem": "question"}}).load("train")
    mapped = {"path": str(tmp_path / "d"), "columns": {"q": "question", "a": "answer"}}
    assert get_task("gsm8k", dataset=mapped).load("train")[0]["answer"] == "2"
    with pytest.raises(TaskError, match=r"has no split 'test' \(splits: train\); map the task's test split"):
        get_task("gsm8k", dataset=mapped).load("test")
    with pytest.raises(TaskError, match="does not exist"):
        get_task("gsm8k", dataset=str(tmp_path / "nowhere")).load("test")


def test_without_datasets_installed_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(TaskError, match=r"needs the Hugging Face `datasets` package: pip install datasets"):
        get_task("gsm8k", dataset=str(tmp_path)).load("test")


def test_the_parsed_option_survives_a_round_trip_to_check_workers():
    """The check service rebuilds tasks from ``dataclasses.asdict(task.options)``."""
    task = get_task("gsm8k", dataset="openai/gsm8k")
    again = get_task("gsm8k", **dataclasses.asdict(task.options))
    assert again.options.dataset == task.options.dataset == DatasetOption("openai/gsm8k", name="main")


def test_every_task_says_what_it_reads():
    from rlsf.tasks import available_tasks

    for name, cls in available_tasks().items():
        if not cls.__module__.startswith("rlsf."):
            continue  # a task another test registered (the user's own tasks need not declare their data)
        spec = spec_of(cls)
        assert spec is not None and spec.what, name
        if spec.tables:
            assert spec.url and spec.licence and spec.recipe and spec.files.keys() <= set(cls.splits) | {"all"}, name
            assert spec.pooled == (set(spec.tables) == {"all"}), name


# ---- rlsf data ----------------------------------------------------------------------------------------

def test_rlsf_data_lists_every_task(shared_data, monkeypatch, capsys):
    monkeypatch.setenv("RLSF_DATA_DIR", str(shared_data))
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "arith        no" in out and f"gsm8k        yes   yes    {shared_data / 'gsm8k'} ($RLSF_DATA_DIR)" in out


def test_rlsf_data_fails_where_data_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLSF_DATA_DIR", str(tmp_path))
    assert main(["data"]) == 1
    out = capsys.readouterr().out
    assert f"svamp        yes   no     no svamp/SVAMP.json; looked at {tmp_path / 'svamp/SVAMP.json'}" in out
    assert main(["data", "svamp"]) == 1
    out = capsys.readouterr().out
    assert f"svamp/SVAMP.json: {tmp_path / 'svamp/SVAMP.json'} ($RLSF_DATA_DIR): no" in out
    assert "found: no" in out and "--task.options '{dataset: ChilleD/SVAMP}'" in out
    assert "https://github.com/arkilpatel/SVAMP" in out and "licence MIT" in out


def test_rlsf_data_for_one_task_names_every_place_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RLSF_DATA_DIR", raising=False)
    assert main(["data", "spoc", "--task.options", f"{{data_dir: {tmp_path}}}"]) == 1
    out = capsys.readouterr().out
    for rel in ("spoc/spoc-testp.tsv", "spoc/testcases"):
        assert f"{rel}: {tmp_path / rel} (option data_dir): no" in out
    assert "Hugging Face Hub: no copy known" in out and "spoc.zip" in out
    assert main(["data", "gsm8k"]) == 1
    assert "gsm8k/test.jsonl: nowhere ($RLSF_DATA_DIR is not set, no option data_dir)" in capsys.readouterr().out


def test_rlsf_data_loads_a_dataset_option_and_counts_its_rows(tmp_path, capsys):
    rows = [{"question": "What is 1 + 1?", "answer": "#### 2"}]
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s in ("train", "test")}).save_to_disk(str(tmp_path))
    assert main(["data", "gsm8k", "--task.options", f"{{dataset: {tmp_path}}}"]) == 0
    out = capsys.readouterr().out
    assert f"  test: 1 rows from {tmp_path} test" in out and "found: yes" in out
    assert main(["data", "gsm8k", "--task.options", f"{{dataset: {{path: {tmp_path}, splits: {{test: dev}}}}}}"]) == 1
    assert "test: task 'gsm8k': option dataset: " in capsys.readouterr().out
    assert main(["data", "gsm8k", "--task.options", "{dataset: {pth: x}}"]) == 2
    assert "unknown key(s) ['pth']" in capsys.readouterr().err


def test_rlsf_data_on_tasks_that_read_nothing_or_say_nothing(tmp_path, capsys):
    assert main(["data", "arith"]) == 0
    assert "no data" in capsys.readouterr().out
    (tmp_path / "mine.py").write_text("from rlsf.tasks import Task\n\nclass Mine(Task):\n    def load(self, split): "
                                      "return []\n    def prompt(self, ex): return []\n    def check(self, ex, c): "
                                      "return None\n")
    assert main(["data", f"{tmp_path / 'mine.py'}:Mine"]) == 0
    assert "declares no data_spec" in capsys.readouterr().out
    assert Task.data_spec is None
