"""Sentiment alignment (Padula & Soemers' programmed reward): continue a movie review so that the
whole text reads positive (or negative), scored by VADER.

Why this task: the classic IMDB set-up of RLHF papers with the learned classifier replaced by a
rule-based one. VADER (Hutto & Gilbert 2014, the ``vaderSentiment`` package and its own lexicon,
nothing downloaded) scores text word by word, so its judgement can be pinned on the words that
earned it: a dense, exact reward where the paper has only the scalar.

**Data**: ``$RLSF_DATA_DIR/sentiment/movieReviewSnippets_GroundTruth.txt`` (VADER's 10,605 movie
review snippets, tab-separated ``id, mean human rating, text``). A seeded shuffle (``seed``)
puts ``test_size`` snippets in the test split and the rest in train. A prompt is the first
``min_prompt_words`` to ``max_prompt_words`` words of a snippet (2 to 8, drawn per snippet from
``seed`` and its id, as the IMDB set-up samples query lengths); snippets shorter than
``min_prompt_words`` words, rows without three fields, a numeric rating and a text, and repeated
ids are reported and skipped. ``rlsf check --task sentiment --example 'The film was'`` checks
against any prompt text (:meth:`Sentiment.example`: an id of the data is used, anything else is
the prompt). The paper continues each prompt by 16 new tokens: set ``rollout.max_new_tokens: 16``
(the task does not decide lengths).

**The prompt** asks the model to continue the review; the user message holds the prompt words.

**The reward** (``Certificate.score``) is the paper's: VADER's compound score (in [-1, 1]) of the
prompt words followed by the completion (query + response; joined by one space, since a chat
completion does not start with one), negated with ``direction: negative``. Only the first
``max_chars`` characters of the completion are read (cut back to a whole word): VADER's own code
is quadratic in the number of words, and a 16-token continuation is far shorter.
``Certificate.correct``: the completion is not blank and the signed score is at least
``threshold`` (default 0.05, VADER's own boundary between neutral and positive; with ``direction:
negative`` that is VADER's "negative" label).

**No attempt** (:meth:`Certificate.no_attempt`, score -1, below every continuation): a blank reply
or the prompt's words copied back (verdict ``empty``). The paper scores a blank reply as the
prompt alone; that figure stays the ``vader`` metric (``info["vader"]``).

**Spans**: every word of the completion that VADER gives a non-zero valence, with the valence it
has *in context* (negation, boosters and dampeners, capitals, idioms, ``least``, ``but``) --
computed by VADER's own code (``sentiment_valence`` for each word, then ``_but_check``, as
``polarity_scores`` does; :func:`vader` reproduces its compound exactly). A word's span reward is
``valence * span_scale`` (default 1/4: lexicon valences lie in [-4, 4]) clipped to [-1, 1], and
negated for ``direction: negative``. So in ``not good`` the word ``good`` is an error span and in
``not bad`` the word ``bad`` earns credit. Words of the prompt are not the completion's and get no
span (though the completion's words can change their valence: ``but`` halves the words before
it). An emoji is scored through its description, on the emoji's own character.

Verdicts: ``correct`` (signed score >= threshold), ``neutral``, ``opposite`` (signed score <=
-threshold), ``empty``. ``Certificate.answer`` is VADER's label of the text (``positive``,
``neutral``, ``negative`` by the same threshold), so maj@k votes on labels. Metrics: ``success``
(0/1, the positive -- or negative -- rate) and ``vader`` (the signed compound, graded).
"""

from __future__ import annotations

import functools
import math
import random
import string
from dataclasses import dataclass
from typing import Any

from rlsf.feedback.certificate import Certificate, Span
from rlsf.runtime.extras import needs, require
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register
from rlsf.tasks.sources import Rows, dataset_rows

#: Verdicts :meth:`Sentiment.check` can return.
VERDICTS = ("correct", "neutral", "opposite", "empty")
DIRECTIONS = ("positive", "negative")
DATA_FILE = "sentiment/movieReviewSnippets_GroundTruth.txt"


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


@functools.lru_cache(maxsize=1)
def analyzer() -> Any:
    """VADER's analyzer (its lexicon loads once per process, ~0.1 s)."""
    return require("vaderSentiment.vaderSentiment", "task 'sentiment'").SentimentIntensityAnalyzer()


@dataclass(frozen=True)
class Word:
    """A word VADER scored: ``[start, end)`` in the text analysed, its valence in context and in the lexicon."""

    start: int
    end: int
    word: str
    valence: float
    lexicon: float | None


def vader(text: str) -> tuple[float, list[Word]]:
    """VADER's compound score of ``text`` (equal to ``polarity_scores(text)["compound"]``) and its
    words with non-zero valence, located in ``text``.

    The steps of ``SentimentIntensityAnalyzer.polarity_scores`` (vaderSentiment 3.3), calling
    its own methods, with the character offsets of every word kept along the way.
    """
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentiText

    sia = analyzer()
    # Emojis become their descriptions (as polarity_scores does); `where` maps back to ``text``.
    chars: list[str] = []
    where: list[int] = []
    prev_space = True
    for i, ch in enumerate(text):
        if ch in sia.emojis:
            description = sia.emojis[ch]
            if not prev_space:
                chars.append(" ")
                where.append(i)
            chars.extend(description)
            where.extend([i] * len(description))
            prev_space = False
        else:
            chars.append(ch)
            where.append(i)
            prev_space = ch == " "
    converted = "".join(chars)
    stripped = converted.strip()
    shift = len(converted) - len(converted.lstrip())

    sentitext = SentiText(stripped)
    items = sentitext.words_and_emoticons
    sentiments: list[float] = []
    for i, item in enumerate(items):
        if item.lower() in BOOSTER_DICT:
            sentiments.append(0)
            continue
        if i < len(items) - 1 and item.lower() == "kind" and items[i + 1].lower() == "of":
            sentiments.append(0)
            continue
        sentiments = sia.sentiment_valence(0, sentitext, item, i, sentiments)
    sentiments = sia._but_check(items, sentiments)
    compound = float(sia.score_valence(sentiments, stripped)["compound"])

    # Where each word is: the whitespace-separated tokens of `stripped` (str.split's own rule),
    # less the punctuation SentiText strips from their ends.
    tokens: list[tuple[int, int]] = []
    start = None
    for j, ch in enumerate(stripped):
        if ch.isspace():
            if start is not None:
                tokens.append((start, j))
                start = None
        elif start is None:
            start = j
    if start is not None:
        tokens.append((start, len(stripped)))
    if len(tokens) != len(items):  # cannot happen (same rule as str.split); no spans rather than wrong ones
        return compound, []
    words = []
    for (s, e), item, valence in zip(tokens, items, sentiments):
        if not valence:
            continue
        token = stripped[s:e]
        lead = 0 if item == token else len(token) - len(token.lstrip(string.punctuation))
        if token[lead:lead + len(item)] != item:
            return compound, []
        a, b = shift + s + lead, shift + s + lead + len(item)
        words.append(Word(where[a], where[b - 1] + 1, item, float(valence), sia.lexicon.get(item.lower())))
    return compound, words


@needs("vaderSentiment")  # rlsf[sentiment]
@register("sentiment")
class Sentiment(Task):
    """Continue a movie review in a given sentiment; VADER's compound score, a span per scored word."""

    description = "Continue a movie review so that it reads positive (or negative); VADER's score, per word."
    binary_metrics = ("success",)

    @dataclass
    class Options(Task.Options):
        direction: str = opt("positive", "Sentiment the continuation should give the text: positive or negative "
                                         "(negative flips the sign of the score and of every span).")
        threshold: float = opt(0.05, "Success: the signed compound score is at least this (0.05 is VADER's own "
                                     "neutral/positive boundary).")
        span_scale: float = opt(0.25, "Span reward per unit of a word's valence, clipped to [-1, 1] (lexicon "
                                      "valences lie in [-4, 4]); 0: no spans.")
        max_chars: int = opt(2000, "Characters of the completion scored (cut back to a whole word); the rest is "
                                   "ignored.")
        test_size: int = opt(500, "Snippets in the test split (a seeded shuffle; the rest train).")
        min_prompt_words: int = opt(2, "Fewest words of a snippet in a prompt.")
        max_prompt_words: int = opt(8, "Most words of a snippet in a prompt.")
        seed: int = opt(0, "Seed of the split and of the prompt lengths.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if o.direction not in DIRECTIONS:
            raise TaskError(f"task 'sentiment': direction must be positive or negative, got {o.direction!r}")
        for name in ("threshold", "span_scale"):
            v = getattr(o, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TaskError(f"task 'sentiment': option {name} must be a finite number, got {v!r}")
        if not 0 <= o.threshold <= 1 or o.span_scale < 0:
            raise TaskError(f"task 'sentiment': need 0 <= threshold <= 1 and span_scale >= 0, got {o.threshold} "
                            f"and {o.span_scale}")
        for name in ("max_chars", "test_size", "min_prompt_words", "max_prompt_words", "seed"):
            v = getattr(o, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TaskError(f"task 'sentiment': option {name} must be an integer, got {v!r}")
        if o.max_chars < 1 or o.test_size < 1:
            raise TaskError(f"task 'sentiment': max_chars and test_size must be >= 1, got {o.max_chars} and "
                            f"{o.test_size}")
        if not 1 <= o.min_prompt_words <= o.max_prompt_words:
            raise TaskError(f"task 'sentiment': need 1 <= min_prompt_words <= max_prompt_words, got "
                            f"{o.min_prompt_words} and {o.max_prompt_words}")
        self._sign = 1.0 if o.direction == "positive" else -1.0
        self._rows: tuple[list[Example], list[str], str] | None = None
        self._data: dict[str, list[Example]] = {}

    # -- data ------------------------------------------------------------------------------------------
    def _read(self) -> tuple[list[Example], list[str], str]:
        if (rows := dataset_rows(self, "all")) is None:
            path = self.data_file(DATA_FILE)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise TaskError(f"task 'sentiment': cannot read {path}: {e}") from None
            rows = Rows(path.name, [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line.strip()])
        o = self.options
        examples, bad, seen = [], [], set()
        for number, fields in rows.items:
            if isinstance(fields, dict):  # a dataset's row: its fields in the file's order
                fields = [fields["id"], fields["rating"], fields["text"]]
            where = rows.where(number)
            if len(fields) != 3:
                bad.append(f"{where}: expected 3 tab-separated fields (id, rating, text), got {len(fields)}")
                continue
            key, rating, text = (f.strip() for f in fields)
            try:
                score = float(rating)
                if not math.isfinite(score):
                    raise ValueError
            except ValueError:
                bad.append(f"{where}: rating {rating!r} is not a number")
                continue
            words = text.split()
            if not key or key in seen:
                bad.append(f"{where}: {'repeated' if key else 'missing'} id {key!r}")
                continue
            if len(words) < o.min_prompt_words:
                bad.append(f"{where}: too short ({len(words)} word{'' if len(words) == 1 else 's'}; a prompt needs "
                           f"{o.min_prompt_words})")
                continue
            seen.add(key)
            k = random.Random(f"{o.seed}:{key}").randint(o.min_prompt_words, o.max_prompt_words)
            examples.append({"id": key, "prompt": " ".join(words[:k]), "continuation": " ".join(words[k:]),
                             "rating": score})
        return examples, bad, rows.source

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._data:
            if self._rows is None:
                self._rows = self._read()
            examples, bad, source = self._rows
            order = list(range(len(examples)))
            random.Random(self.options.seed).shuffle(order)
            test = set(order[: self.options.test_size])
            keep = [ex for j, ex in enumerate(examples) if (j in test) == (split == "test")]
            # The skipped rows belong to no split: reported once, recorded for both.
            self._data[split] = self.keep_split(split, keep, [] if self.malformed else bad, source)
            self.malformed[split] = bad
        return [dict(ex) for ex in self._data[split]]

    def example(self, example_id: Any) -> Example:
        """The snippet with this id, else a prompt written by hand (``"The film was"``)."""
        key = str(example_id).strip()
        if not key:
            raise TaskError("task 'sentiment': give an example id or the prompt text")
        try:
            return super().example(key)
        except TaskError:
            if key.isdigit() and not self._data:  # looks like an id, but the data could not be read
                raise
        return {"id": key, "prompt": " ".join(key.split()), "continuation": "", "rating": None}

    # -- model interface -------------------------------------------------------------------------------
    def prompt(self, example: Example) -> Messages:
        return [{"role": "system", "content": "Continue the movie review. Write only the words that come next."},
                {"role": "user", "content": example["prompt"]}]

    def demonstration(self, example: Example) -> str | None:
        """The rest of the snippet, when it is itself a success (SFT on real reviews of the right sentiment)."""
        rest = example.get("continuation") or ""
        return rest if rest and self.check(example, rest).correct else None

    def scored_text(self, completion: str) -> str:
        """The part of ``completion`` that is scored: the first ``max_chars`` characters, cut back to a whole word."""
        limit = self.options.max_chars
        if len(completion) <= limit:
            return completion
        cut = completion[:limit]
        if not completion[limit].isspace():
            blank = max((i for i, ch in enumerate(cut) if ch.isspace()), default=-1)
            cut = cut[: blank + 1]
        return cut

    def check(self, example: Example, completion: str) -> Certificate:
        o = self.options
        prompt = example.get("prompt")
        if not isinstance(prompt, str):  # a bad example is a caller bug, not model text
            raise TaskError(f"task 'sentiment': example has no 'prompt' text: {example!r}")
        completion = completion if isinstance(completion, str) else ""
        if not completion.strip() or _words(completion) == _words(prompt):
            compound, _ = vader(prompt)  # the paper's score of a blank reply: the prompt's own
            what = "no reply" if not completion.strip() else "the prompt copied back: no continuation"
            return Certificate.no_attempt("empty", what, completion, compound=compound, vader=self._sign * compound,
                                          words_scored=0, span_credit=0.0, truncated=0.0)
        scored = self.scored_text(completion)
        offset = len(prompt) + 1
        compound, words = vader(f"{prompt} {scored}")
        score = self._sign * compound
        spans = []
        credit = 0.0
        if o.span_scale > 0:
            for w in words:
                if w.start < offset:
                    continue
                reward = max(-1.0, min(1.0, self._sign * w.valence * o.span_scale))
                credit += reward
                lexicon = "" if w.lexicon is None or w.lexicon == w.valence else f" (lexicon {w.lexicon:+.2f})"
                spans.append(Span(w.start - offset, w.end - offset, reward,
                                  f"{w.word!r}: valence {w.valence:+.2f} in context{lexicon}"))
        label = "positive" if compound >= o.threshold else "negative" if compound <= -o.threshold else "neutral"
        verdict = "correct" if score >= o.threshold else "opposite" if score <= -o.threshold else "neutral"
        info = {"compound": compound, "vader": score, "words_scored": len(spans), "span_credit": credit,
                "truncated": float(len(scored) < len(completion))}
        return Certificate(score, verdict, verdict == "correct", spans, info, answer=label)

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """How VADER reads the review (prompt and continuation) against what it should read, and the
        words of the continuation that VADER finds pulling the wrong way and the right way."""
        if certificate.correct or not certificate.attempted or certificate.failed:
            return super().feedback(example, completion, certificate)
        o, want = self.options, self.options.direction
        label = certificate.answer or certificate.verdict  # VADER's label of the whole text
        compound = certificate.info.get("compound")
        bound = f"at least {o.threshold:+.2f}" if self._sign > 0 else f"at most {-o.threshold:+.2f}"
        score = f" (compound {compound:+.2f}; {want} is {bound})" if isinstance(compound, (int, float)) else ""
        lines = [f"VADER reads the review with your continuation as {label}, not {want}{score}."]
        for heading, pick in ((f"Words that read against {want}", lambda s: s.reward < 0),
                              (f"Words that read {want}", lambda s: s.reward > 0)):
            words = [completion[s.start:s.end] for s in certificate.spans if pick(s)]
            if words:
                lines.append(f"{heading}: {', '.join(repr(w) for w in dict.fromkeys(words))}.")
        if len(lines) == 1:
            lines.append("None of your words carries any sentiment.")
        lines.append(f"Write a new continuation of the review that reads clearly {want}.")
        return "\n".join(lines)

    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        # the paper's score, also for a reply that attempts nothing (whose training score is -1)
        return {"success": float(certificate.correct), "vader": float(certificate.info["vader"])}

    def degenerate_replies(self, example: Example) -> dict[str, str]:
        # prose is this task's answer form: only silence and the prompt copied back attempt nothing
        return {"empty": "", "blank": " \n\t\n", "prompt restated": example["prompt"]}

    def near_misses(self, example: Example) -> dict[str, str]:
        misses = {"neutral": "and the plot follows two brothers who run a small hardware store in Ohio.",
                  "opposite": "but the ending was a little dull and far too long." if self._sign > 0
                  else "and the ending was a real delight."}
        return {k: v for k, v in misses.items() if not self.check(example, v).correct}
