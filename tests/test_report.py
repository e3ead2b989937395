"""``rlsf report``: one self-contained HTML page of a run folder that opens offline.

A small run folder of each kind is built from real Game of 24 completions and the checker's own
certificates (no model is trained); the page must parse strictly, load nothing from anywhere, embed
only valid PNGs, escape what the model wrote, and colour tokens that add up to the completion
exactly, with the rewards training would give them. Where Debian's chromium, its driver and selenium
are installed, a headless browser opens the page offline too.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlsf.cli.main import main
from rlsf.config import Config
from rlsf.feedback.rewards import certificate_token_rewards
from rlsf.stages.report import ReportError, build_report, write_report
from rlsf.stages.report_tokens import certificate_of, word_offsets
from rlsf.tasks import get_task

# Real greedy completions of SmolLM2 after SFT and after PPO (runs of the main job), and two that
# try the page: markup and entities in the text, and nothing at all.
SFT = {
    901: "4 + 5 = 9 (left: 6 9 10)\n10 - 6 = 4 (left: 4 9)\n4 * 9 = 36 (left: 36)\n36 - 36 = 0 (left: 0)\n"
         "Answer: 4 * (10 - 6) - 5 = 0",
    902: "1 + 2 = 3 (left: 3 4 7)\n3 * 4 = 10 (left: 7 10)\n7 + 10 = 17 (left: 17)\n17 - 10 = 3 (left: 3)\n"
         "Answer: 7 - 10 + 1 + 2 = 3",
    919: "2 * 7 = 14 (left: 2 12 14)\n14 - 2 = 12 (left: 12 12)\n12 + 12 = 24 (left: 24)\n"
         "Answer: 12 + 2 * 7 - 2 = 24",
    971: "4 * 8 = 32 (left: 4 12 32)\n12 - 4 = 8 (left: 8 32)\n32 - 8 = 24 (left: 24)\nAnswer: 4 * 8 - (12 - 4) = 24",
}
RL = {
    901: "4 + 5 = 9 (left: 6 9 10)\n10 - 6 = 5 (left: 5 9)\n5 * 9 = 45 (left: 45)\n45 - 45 = 0 (left: 0)\n"
         "Answer: 10 - 6 + 4 + 5 = 0",
    902: "<script>alert('x')</script> & \"quoted\" caf\u00e9 \u2014 \u732b\u306f </div><img src=http://example.com/x.png>\n"
         "Answer: 1 + 2 + 4 + 7 = 14",
    919: SFT[919],
    971: "",
}
HOSTILE = RL[902]


def _write_eval(task, root: Path, name: str, texts: dict[int, str]) -> None:
    """An evaluation as `rlsf eval` writes it: figures and the greedy samples with certificates."""
    rows = []
    for pid, text in texts.items():
        cert = task.check(task.example(pid), text)
        rows.append({"id": pid, "kind": "greedy", "completion": text, "certificate": cert.to_dict(),
                     "metrics": {"success": float(cert.correct), "score": float(cert.correct)}})
    success = sum(r["metrics"]["success"] for r in rows) / len(rows)
    figures = {"task": "game24", "model": "smollm2-135m", "split": "test", "num_examples": len(rows),
               "greedy/success": success, "maj@1": success, "pass@1": success / 2, "info/step_accuracy": 0.5,
               "verdicts": {"correct": int(success * len(rows)), "wrong_answer": len(rows) - int(success * len(rows))},
               "precision": "float32"}
    (root / f"{name}.json").write_text(json.dumps(figures))
    (root / f"{name}_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_metrics(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def task():
    return get_task("game24")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory, task) -> Path:
    """A pipeline folder: config, two evaluations, summary.json with the real paired changes, and
    the SFT and RL stages' metrics."""
    from rlsf.stages.pipeline import changes

    root = tmp_path_factory.mktemp("pipeline")
    cfg = Config()
    cfg.set("task.name", "game24")
    cfg.set("train.algorithm", "ppo")
    cfg.set("run.seed", 3)
    cfg.save(root / "config.yaml", {"runtime": {"world_size": 1}})
    _write_eval(task, root, "eval_sft", SFT)
    _write_eval(task, root, "eval_rl", RL)
    summary = {"before": json.loads((root / "eval_sft.json").read_text()),
               "after": json.loads((root / "eval_rl.json").read_text()),
               "changes": changes(root, False), "stage_seconds": {"sft": 60.0, "rl": 90.0}}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "stage_seconds.json").write_text(json.dumps(summary["stage_seconds"]))
    _write_metrics(root / "sft", [{"step": s, "loss/sft": 1.0 / s, "lr": 1e-4} for s in range(1, 6)])
    _write_metrics(root / "rl", [{"step": s, "reward/total": -0.8 + 0.05 * s, "reward/success": 0.1 * s,
                                  "kl": 0.01 * s, "response/length": 80 + s, "feedback/step_accuracy": 0.4 + 0.02 * s,
                                  "feedback/verdict/wrong_answer": 0.9, "timing/generate": 5.0, "timing/update": 9.0}
                                 for s in range(1, 5)])
    cfg.save(root / "rl" / "config.yaml", {"runtime": {"device": "cpu", "precision": "float32",
                                                        "processor": "Test CPU", "threads": 2, "world_size": 1}})
    return root


@pytest.fixture(scope="module")
def page(pipeline_dir, tmp_path_factory) -> tuple[Path, str]:
    out = write_report(pipeline_dir, tmp_path_factory.mktemp("out") / "report.html", examples=10, tokens="words")
    return out, out.read_text(encoding="utf-8")


# ---- a strict reading of the page ----------------------------------------------------------------
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base", "embed", "track"}


class Reader(HTMLParser):
    """Balanced tags (every element closed, in order), every attribute, and the coloured completions:
    the text of each ``.completion`` as the concatenation of its ``.tok`` spans, and their rewards."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.completions: list[dict] = []
        self.in_token: bool = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        cls = a.get("class", "").split()
        if "completion" in cls:
            self.completions.append({"text": "", "tokens": [], "titles": [], "eot": []})
        if "tok" in cls:
            self.in_token = True
            self.completions[-1]["tokens"].append("")
            self.completions[-1]["titles"].append(a.get("title", ""))
        if "eot" in cls:
            self.completions[-1]["eot"].append(a.get("title", ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "span":
            self.in_token = False

    def handle_data(self, data):
        if self.in_token:
            self.completions[-1]["tokens"][-1] += data


def read(text: str) -> Reader:
    r = Reader()
    r.feed(text)
    r.close()
    assert not r.errors, r.errors[:5]
    assert not r.stack, f"unclosed: {r.stack}"
    return r


def test_page_parses_strictly(page) -> None:
    _, text = page
    assert text.startswith("<!DOCTYPE html>")
    read(text)
    html5lib = pytest.importorskip("html5lib", reason="html5lib not installed: the balanced-tag check above stands")
    html5lib.HTMLParser(strict=True).parse(text)  # raises on any parse error


def test_page_is_self_contained(page) -> None:
    _, text = page
    tags = read(text).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), (tag, attrs["src"][:60])
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs["href"]
    outside = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', "", text)
    assert "http://" not in outside.replace("http://example.com/x.png", "")  # the completion's own text, escaped
    assert "https://" not in outside and "url(" not in outside and "@import" not in outside
    assert "default-src 'none'" in text  # the page's policy forbids loading anything


def _png_ok(data: bytes) -> tuple[int, int]:
    """Width and height of a valid PNG (PIL's verify where installed, else signature, IHDR and CRCs)."""
    try:
        import io

        from PIL import Image

        Image.open(io.BytesIO(data)).verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except ImportError:
        pass
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, size = 8, None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        assert struct.unpack(">I", crc)[0] == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        pos += 12 + length
    assert size is not None and size[0] > 0 and size[1] > 0
    return size


def test_every_image_is_a_valid_png(page) -> None:
    _, text = page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    pytest.importorskip("matplotlib", reason="no curves without matplotlib")
    assert len(uris) >= 2  # the SFT and the RL stages' curves
    for uri in uris:
        w, h = _png_ok(base64.b64decode(uri, validate=True))
        assert w > 100 and h > 100


def test_sections_and_figures(page) -> None:
    _, text = page
    for anchor in ("run", "figures", "curves", "examples"):
        assert f'<section id="{anchor}">' in text
    assert "game24" in text and "ppo" in text and "Test CPU" in text and "float32" in text
    assert "sft 1.0 min, rl 1.5 min; total 2.5 min" in text
    assert "RL against the SFT model: paired change, greedy" in text and "95% interval" in text
    assert "feedback/step_accuracy" in text  # the task's own training figure is drawn and tabled


def test_paired_intervals_are_the_summary_s(page, pipeline_dir) -> None:
    _, text = page
    success = json.loads((pipeline_dir / "summary.json").read_text())["changes"]["rl_vs_sft"]["success"]
    assert f"[{success['low']:+.3f}, {success['high']:+.3f}]" in text


def test_tokens_spell_the_completion_and_earn_training_s_rewards(page, pipeline_dir, task) -> None:
    _, text = page
    shown = read(text).completions
    rows = [json.loads(line) for name in ("eval_sft", "eval_rl") for line in
            (pipeline_dir / f"{name}_samples.jsonl").read_text().splitlines()]
    by_text: dict[str, dict] = {r["completion"]: r for r in rows}
    assert len(shown) == 2 * len(SFT)  # every problem, before and after
    for c in shown:
        completion = "".join(c["tokens"])
        assert completion in by_text, completion[:60]
        row = by_text[completion]
        assert len(c["eot"]) == 1  # the end-of-turn token: no text, the score
        cert = certificate_of(row["certificate"])
        expected = certificate_token_rewards(cert, [*word_offsets(completion), (len(completion), len(completion))])
        got = [float(t.split(" ", 1)[0]) for t in c["titles"]] + [float(c["eot"][0].split(": ", 1)[1].split(" ")[0])]
        assert got == pytest.approx(expected, abs=1e-4)
    assert any(c["tokens"] == [] for c in shown)  # the empty completion: its end-of-turn token alone


def test_tokens_of_the_run_s_tokenizer(pipeline_dir, tmp_path, tokenizer) -> None:
    """With a model folder in the run, its tokenizer cuts the completions: the tokens still spell
    each one, and carry the rewards of the tokenizer's own character ranges."""
    from rlsf.feedback.offsets import Detokenizer
    from rlsf.stages.report_tokens import merged

    copy = tmp_path / "run"
    shutil.copytree(pipeline_dir, copy)
    tokenizer.save_pretrained(copy / "rl" / "model")
    text = build_report(copy, examples=2, tokens="model")
    assert f"tokens: the tokenizer of {copy / 'rl' / 'model'}" in text
    detok = Detokenizer.from_tokenizer(tokenizer)
    by_text = {json.loads(line)["completion"]: json.loads(line) for name in ("eval_sft", "eval_rl")
               for line in (copy / f"{name}_samples.jsonl").read_text().splitlines()}
    shown = read(text).completions
    assert "".join(shown[3]["tokens"]) == HOSTILE  # 902 after RL: its CJK characters span several tokens
    for c in shown:
        completion = "".join(c["tokens"])
        assert completion in by_text
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        offsets = [*detok.text_and_offsets(ids)[1], (len(completion), len(completion))]
        assert [len(t) for t in c["tokens"]] == [e - s for s, e, _, _ in merged([(s, e, 0.0, "") for s, e in offsets])
                                                 if e > s]
        total = sum(certificate_token_rewards(certificate_of(by_text[completion]["certificate"]), offsets))
        got = sum(float(t.split(" ", 1)[0]) for t in c["titles"]) + float(c["eot"][0].split(": ")[1].split(" ")[0])
        assert got == pytest.approx(total, abs=1e-3)


def test_overlapping_tokens_are_one_piece() -> None:
    """A character whose bytes two tokens share is shown once, with both tokens' rewards."""
    from rlsf.stages.report_tokens import merged

    rows = [(0, 1, 0.1, "a"), (1, 2, 0.2, ""), (1, 2, 0.3, "b"), (2, 3, 0.0, ""), (3, 3, 1.0, "end")]
    assert merged(rows) == [(0, 1, 0.1, "a"), (1, 2, pytest.approx(0.5), "b"), (2, 3, 0.0, ""), (3, 3, 1.0, "end")]


def test_model_text_is_escaped(page) -> None:
    _, text = page
    assert "<script>" not in text and "alert(&#x27;x&#x27;)" in text
    assert "&lt;/div&gt;&lt;img src=http://example.com/x.png&gt;" in text
    assert "caf\u00e9" in text
    srcs = [a["src"] for t, a in read(text).tags if t == "img"]
    assert all(s.startswith("data:") for s in srcs)


def test_a_negligible_reward_is_not_coloured() -> None:
    """A score of 1e-22 (a checker's float noise) is no reward to the eye; the score of 1 on an
    end-of-turn token after uncoloured text is full strength."""
    from rlsf.stages.report_html import coloured_completion

    assert "style" not in coloured_completion("ab", [(0, 2, 0.0, ""), (2, 2, 3.9e-22, "")])
    assert "0.67)" in coloured_completion("ab", [(0, 2, 0.0, ""), (2, 2, 1.0, "")])


def test_word_pieces_cover_the_text() -> None:
    for text in ("", " ", "4 + 5 = 9 (left: 6 9 10)\n", "a\u00e9 \u2014 <b>&\n\n  x  "):
        pieces = word_offsets(text)
        assert "".join(text[s:e] for s, e in pieces) == text
        assert all(e > s for s, e in pieces)


def test_stage_and_eval_folders(pipeline_dir, tmp_path) -> None:
    stage = build_report(pipeline_dir / "rl", tokens="words")
    read(stage)
    assert '<section id="curves">' in stage and '<section id="examples">' not in stage
    ev = tmp_path / "eval"
    ev.mkdir()
    for suffix in (".json", "_samples.jsonl"):
        shutil.copy(pipeline_dir / f"eval_rl{suffix}", ev / f"eval{suffix}")
    page_ = build_report(ev, examples=2)
    read(page_)
    assert page_.count('<div class="example">') == 2 and '<section id="figures">' in page_
    assert "no model folder with a tokenizer" in page_  # auto: word pieces, and the page says so


def test_experiment_folder(tmp_path, task) -> None:
    """An experiment's table, and each arm's completions coloured under the arm's own reward
    settings (here sequence-level: only the end-of-turn token earns anything)."""
    root = tmp_path / "exp"
    (root / "eval").mkdir(parents=True)
    Config().save(root / "config.yaml")
    _write_eval(task, root / "eval", "sft", SFT)
    _write_eval(task, root / "eval", "seq-s0@64", RL)
    figs = json.loads((root / "eval" / "sft.json").read_text())
    after = json.loads((root / "eval" / "seq-s0@64.json").read_text())
    results = {"sft": figs, "table": ["maj@1", "pass@1"], "start": "SFT (start)", "times_s": {"sft": 30.0},
               "arms": {"seq-s0": {"arm": "seq", "procedure": "ppo", "settings": {"reward.mode": "sequence"},
                                   "curve": [{"samples": 0, **figs}, {"samples": 64, **after}]}}}
    (root / "results.json").write_text(json.dumps(results))
    _write_metrics(root / "arms" / "seq-s0", [{"step": s, "reward/score": 0.1 * s, "kl": 0.02 * s} for s in (1, 2)])
    text = build_report(root, examples=4, tokens="words")
    read(text)
    assert "<td>seq</td>" in text and "<td>SFT (start)</td>" in text and "|---|" not in text  # the table, as HTML
    shown = read(text).completions
    arm = shown[1::2]  # per problem: the start's completion, then the arm's
    assert all(all(float(t.split(" ", 1)[0]) == 0.0 for t in c["titles"]) for c in arm)
    assert "sequence-level" in text


def test_chemistry_pictures_are_drawn(tmp_path) -> None:
    """A chemistry evaluation without its picture: the report draws the molecule grid itself."""
    pytest.importorskip("rdkit", reason="molecule pictures need RDKit")
    task = get_task("molgen")
    examples = task.load("test")[:2]
    root = tmp_path / "molgen"
    root.mkdir()
    (root / "config.yaml").write_text("task:\n  name: molgen\n")
    rows = []
    for ex, text in zip(examples, [ex["target"] for ex in examples[:1]] + ["C1CC(=O"]):
        rows.append({"id": ex["id"], "kind": "greedy", "completion": text,
                     "certificate": task.check(ex, text).to_dict(), "metrics": {}})
    (root / "eval.json").write_text(json.dumps({"task": "molgen", "split": "test", "num_examples": 2}))
    (root / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = build_report(root, tokens="words")
    read(text)
    assert '<section id="pictures">' in text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 1 and _png_ok(base64.b64decode(uris[0]))[0] >= 600


def test_cli(pipeline_dir, tmp_path, capsys) -> None:
    copy = tmp_path / "run"
    shutil.copytree(pipeline_dir, copy)
    assert main(["report", str(copy), "--tokens", "words", "--examples", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    assert (copy / "report.html").read_text().count('<div class="example">') == 1


@pytest.mark.parametrize("make", ["empty", "missing", "file"])
def test_not_a_run_folder_is_one_line(tmp_path, capsys, make) -> None:
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlsf: error:") and "\n" not in err
    assert "not a run folder" in err or "no such folder" in err


def test_bad_settings(pipeline_dir, tmp_path) -> None:
    with pytest.raises(ReportError, match="negative"):
        build_report(pipeline_dir, examples=-1)
    with pytest.raises(ReportError, match="no model folder"):
        build_report(pipeline_dir, tokens="model")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ReportError, match="summary.json"):
        build_report(tmp_path)


# ---- a real browser, offline ---------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SELENIUM = importlib.util.find_spec("selenium") is not None


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and SELENIUM),
                    reason="needs Debian's chromium and chromium-driver and selenium (pip install selenium)")
def test_opens_offline_in_a_headless_browser(page) -> None:
    """Chromium opens the file with every host unresolvable: no console message at all, every
    picture decoded, and the coloured completion's text is the completion."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--proxy-server=127.0.0.1:9"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(page[0].resolve().as_uri())
        assert driver.title.startswith("rlsf report")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert images and all(ok and w > 0 and h > 0 for ok, w, h in images), images
        texts = driver.execute_script(
            "return Array.from(document.querySelectorAll('.completion')).map(d => d.textContent)")
        assert SFT[901] in texts and HOSTILE in texts
        assert driver.execute_script("return document.querySelectorAll('script').length") == 0
        assert driver.get_log("browser") == []
    finally:
        driver.quit()
