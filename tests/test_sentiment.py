"""Sentiment alignment: VADER's compound score reproduced word by word, spans with in-context
valences (negation, ``but``, capitals, emojis), direction, data and malformed rows, `rlsf check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsf.tasks import get_task
from rlsf.tasks.base import TaskError
from rlsf.tasks.sentiment import DATA_FILE, VERDICTS, analyzer, vader

EX = {"id": "x", "prompt": "The film was", "continuation": "", "rating": None}


def polarity(text: str) -> float:
    return analyzer().polarity_scores(text)["compound"]


def spans(text: str, cert) -> list[tuple[str, float]]:
    return [(text[s.start:s.end], round(s.reward, 4)) for s in cert.spans]


@pytest.fixture(scope="module")
def task():
    return get_task("sentiment")


@pytest.mark.parametrize("text", [
    "The film was not good", "The film was not bad", "It is GOOD but the plot is terrible!!", "kind of boring",
    "at least it was fun", "least fun ever", "no fun, no joy", "never so good", "without doubt great",
    "  spaced\tout \u3000 nice  ", "I 😀 it", "I😀it 💔", "sad :( but happy :)", "", "   ", "the bomb",
    "yeah right",
    "Funny?? Not really... GREAT acting though!", "'great' \"awful\" (good)", "kind of", "no",
])
def test_vader_is_polarity_scores(text: str) -> None:
    compound, words = vader(text)
    assert compound == polarity(text)
    for w in words:  # each word sits on its own characters (an emoji on the emoji)
        assert text[w.start:w.end] == w.word or text[w.start:w.end] in analyzer().emojis


def test_vader_on_the_snippets(shared_data: Path) -> None:
    lines = (shared_data / DATA_FILE).read_text(encoding="utf-8").splitlines()[::7]
    for line in lines:
        text = line.split("\t")[2]
        assert vader(text)[0] == polarity(text), text


def test_negation_puts_the_error_on_the_word(task) -> None:
    text = "not good at all"
    cert = task.check(EX, text)
    assert cert.score == polarity("The film was not good at all") < 0 and cert.verdict == "opposite"
    (span,) = cert.spans
    assert (span.start, span.end) == (4, 8) and span.reward == pytest.approx(1.9 * -0.74 / 4)
    assert span.message == "'good': valence -1.41 in context (lexicon +1.90)"
    text = "not bad"
    cert = task.check(EX, text)
    assert spans(text, cert) == [("bad", round(-2.5 * -0.74 / 4, 4))] and cert.correct and cert.verdict == "correct"


def test_context_from_but_capitals_and_boosters(task) -> None:
    text = "good but TERRIBLE"  # "but": words before it count half, after it 1.5x; capitals add 0.733
    cert = task.check(EX, text)
    assert spans(text, cert) == [("good", round(1.9 * 0.5 / 4, 4)), ("TERRIBLE", -1.0)]  # clipped at -1
    text = "very good"
    assert spans(text, task.check(EX, text)) == [("good", round((1.9 + 0.293) / 4, 4))]  # "very" itself: no span
    text = "great!!! 😀"
    cert = task.check(EX, text)
    # Punctuation is not part of a word; an emoji is scored by its description, on the emoji.
    assert [text[s.start:s.end] for s in cert.spans] == ["great", "😀"]
    assert "'grinning'" in cert.spans[1].message


def test_prompt_words_get_no_spans(task) -> None:
    ex = {**EX, "prompt": "A good film"}
    text = "but dull"  # "but" halves "good" in the prompt: the score moves, the prompt gets no span
    cert = task.check(ex, text)
    assert spans(text, cert) == [("dull", round(-1.7 * 1.5 / 4, 4))]
    assert cert.score == polarity("A good film but dull")


def test_direction_flips_score_and_spans() -> None:
    positive, negative = get_task("sentiment"), get_task("sentiment", direction="negative")
    for text in ("a wonderful, moving story", "dull and boring", "not bad"):
        p, n = positive.check(EX, text), negative.check(EX, text)
        assert n.score == -p.score and [s.reward for s in n.spans] == [-s.reward for s in p.spans]
        assert p.answer == n.answer  # VADER's label of the text, whatever the direction
    cert = negative.check(EX, "dull and boring")
    assert cert.correct and cert.verdict == "correct" and cert.answer == "negative"
    assert all(s.reward > 0 for s in cert.spans)
    cert = negative.check(EX, "a wonderful, moving story")
    assert cert.verdict == "opposite" and all(s.reward < 0 for s in cert.spans)


def test_threshold_verdicts_and_metrics() -> None:
    text = "okay"  # compound 0.2263
    assert polarity("The film was okay") == 0.2263
    assert get_task("sentiment").check(EX, text).verdict == "correct"
    assert get_task("sentiment", threshold=0.2263).check(EX, text).correct  # at least the threshold
    cert = get_task("sentiment", threshold=0.5).check(EX, text)
    assert cert.verdict == "neutral" and not cert.correct and cert.answer == "neutral"
    assert get_task("sentiment", threshold=0.5).metrics(EX, cert) == {"success": 0.0, "vader": 0.2263}
    neutral = get_task("sentiment").check(EX, "a film")
    assert neutral.verdict == "neutral" and neutral.score == 0.0 and neutral.spans == []
    assert set(VERDICTS) == {"correct", "neutral", "opposite", "empty"}


def test_blank_completion(task) -> None:
    ex = {**EX, "prompt": "A wonderful film"}
    for text in ("", "  \n"):
        cert = task.check(ex, text)  # no attempt: below every continuation; the paper's score (the prompt's) is the metric
        assert cert.verdict == "empty" and not cert.correct and not cert.attempted and cert.score == -1.0
        assert task.metrics(ex, cert)["vader"] == polarity("A wonderful film") > 0
    cert = task.check(ex, " a WONDERFUL  film! ")  # the prompt's words copied back
    assert not cert.attempted and cert.verdict == "empty"


def test_span_scale_and_truncation() -> None:
    assert get_task("sentiment", span_scale=0).check(EX, "great").spans == []
    t = get_task("sentiment", max_chars=7)
    assert t.scored_text("good great") == "good " and t.scored_text("good   great") == "good   "
    assert t.scored_text("goodgreat") == "" and t.scored_text("good") == "good"
    cert = t.check(EX, "good terrible")  # "terrible" is past the limit: not read
    assert cert.score == polarity("The film was good ") and cert.info["truncated"] == 1.0
    assert [c.start for c in cert.spans] == [0]


def test_hostile_text_is_quick(task) -> None:
    import time

    for text in ("good " * 20_000, "not " * 50_000 + "bad", "😀" * 100_000, "x" * 100_000, "\x00" * 1000 + "great"):
        t0 = time.perf_counter()
        cert = task.check(EX, text)
        assert time.perf_counter() - t0 < 2.0 and cert.verdict in VERDICTS
        assert all(0 <= s.start < s.end <= len(text) and -1 <= s.reward <= 1 for s in cert.spans)


@pytest.mark.parametrize("options, message", [
    ({"direction": "up"}, "direction"), ({"threshold": 2}, "threshold"), ({"span_scale": -1}, "span_scale"),
    ({"max_chars": 0}, "max_chars"), ({"min_prompt_words": 3, "max_prompt_words": 2}, "min_prompt_words"),
    ({"test_size": "10"}, "test_size"),
])
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        get_task("sentiment", **options)


def write_data(folder: Path, rows: list[str]) -> Path:
    (folder / "sentiment").mkdir(parents=True, exist_ok=True)
    (folder / DATA_FILE).write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    return folder


def test_malformed_rows_are_reported_and_skipped(tmp_path: Path, capsys) -> None:
    rows = [f"{i}\t{i / 10}\tA truly wonderful and moving film number {i}." for i in range(1, 11)] + [
        "11\t0.5", "12\thigh\tNot a rating.", "3\t1.0\tA repeated id here.", "13\t1.0\tShort.", "",
        "14\t1.0\tToo\tmany fields", "15\tnan\tNot a finite rating."]
    folder = write_data(tmp_path, rows)
    task = get_task("sentiment", data_dir=str(folder), test_size=3)
    train, test = task.load("train"), task.load("test")
    assert len(train) == 7 and len(test) == 3 and not {e["id"] for e in train} & {e["id"] for e in test}
    bad = task.malformed["train"]
    assert bad == task.malformed["test"] and len(bad) == 6
    name = Path(DATA_FILE).name
    assert [b.split(": ", 1)[0] for b in bad] == [f"{name} line {n}" for n in (11, 12, 13, 14, 16, 17)]
    assert "expected 3 tab-separated fields" in bad[0] and "rating 'high' is not a number" in bad[1]
    assert "repeated id '3'" in bad[2] and "too short (1 word; a prompt needs 2)" in bad[3]
    err = capsys.readouterr().err
    assert err.count("6 malformed rows skipped") == 1  # reported once, not once per split
    for ex in train + test:
        words = ex["prompt"].split()
        assert 2 <= len(words) <= 8 and f"{ex['prompt']} {ex['continuation']}".startswith("A truly wonderful")
        assert task.example(ex["id"]) == ex
    # The rest of a positive snippet is its demonstration.
    ex = train[0]
    assert task.demonstration(ex) == ex["continuation"] and task.check(ex, ex["continuation"]).correct


def test_missing_data_and_examples_by_prompt(tmp_path: Path) -> None:
    task = get_task("sentiment", data_dir=str(tmp_path))
    with pytest.raises(TaskError, match="not found"):
        task.load("train")
    with pytest.raises(TaskError, match="not found"):
        task.example("17")  # looks like an id: the data error is the answer
    assert task.example("  The   film was ") == {"id": "The   film was", "prompt": "The film was", "continuation": "",
                                                 "rating": None}
    with pytest.raises(TaskError, match="give an example id or the prompt"):
        task.example("  ")


def test_shipped_data(shared_data: Path, capsys) -> None:
    task = get_task("sentiment")
    train, test = task.load("train"), task.load("test")
    assert len(test) == 500 and len(train) + len(test) == 10605 - 10
    assert len(task.malformed["train"]) == 10 and all("too short" in b for b in task.malformed["train"])
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    assert task.load("test") == get_task("sentiment").load("test")  # seeded: reproducible
    assert get_task("sentiment", seed=1).load("test") != test
    assert {len(e["prompt"].split()) for e in train} == set(range(2, 9))
    ex = task.example("3")
    assert f"{ex['prompt']} {ex['continuation']}".strip() == "Effective but too tepid biopic"
    assert task.example("The film was")["prompt"] == "The film was"  # not an id: the prompt
    messages = task.prompt(ex)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == ex["prompt"]
    demos = [task.demonstration(e) for e in test]
    assert 100 < sum(d is not None for d in demos) < 500  # positive snippets only


def test_rlsf_check(shared_data: Path, tmp_path: Path, capsys) -> None:
    from rlsf.cli.main import main

    f = tmp_path / "c.txt"
    f.write_text("not good at all\n")
    assert main(["check", "--task", "sentiment", "--example", "The film was", "--completion", str(f),
                 "--check.workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "verdict=opposite score=-0.341" in out and "[4:8] -0.351 'good'" in out
    f.write_text("not bad")
    assert main(["check", "--task", "sentiment", "--task.options", "{direction: negative}", "--example",
                 "The film was", "--completion", str(f), "--json", "--check.workers", "0"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificate"]
    assert cert["verdict"] == "opposite" and cert["spans"][0]["reward"] < 0
