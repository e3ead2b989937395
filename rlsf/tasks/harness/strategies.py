"""The harness's input generators: Hypothesis strategies of text to throw at a checker.

This module owns every built-in strategy of :mod:`rlsf.tasks.harness` (``random_text``,
``token_soup``, ``mutation``, ``non_ascii``, ``nested``, ``huge``, ``blank``; see the package
docstring for what each generates), the awkward characters and edit kinds they draw from, and
:func:`input_strategies`, which pairs each with the examples it is checked against. It judges
nothing: the properties and the battery that runs these strategies are in
:mod:`rlsf.tasks.harness.core`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

# Hypothesis is a dev dependency: the package's __init__, which always runs before this module,
# turns its absence into a clear ImportError.
from hypothesis import strategies as st

Example = dict[str, Any]
Pair = tuple[Example, str]

#: Strategy names, in the order they run.
STRATEGIES = ("random_text", "token_soup", "mutation", "non_ascii", "nested", "huge", "blank")

HUGE_CHARS = 100_000

# Characters that trip up text handling: NUL, BOM, zero-width and direction marks, Unicode
# whitespace and line breaks, look-alike digits and operators, letters that case-fold to ASCII.
AWKWARD_CHARS = (
    "\x00", "\ufeff", "\u200b", "\u200d", "\u202e", "\xa0", "\u2028", "\u2029", "\u3000", "\x85",
    "\x0b", "\x0c", "\x1c", "\x1f", "\r", "\t", "\x7f",
    "０", "１", "２", "４", "٣", "۴", "४", "²", "₄", "𝟐", "⁴", "½", "Ⅳ",
    "＋", "－", "×", "÷", "−", "–", "·", "∗", "＝", "⁄", "∕",
    "ſ", "K", "İ", "ı", "é", "e\u0301", "ß", "😀", "中",
)

_BLANKS = (" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0",
           "\u1680", "\u2000", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000")
_OPERATOR_CHARS = "+-*/×÷−=^%<>"
_MUTATIONS = (
    "insert_char", "delete_char", "replace_char", "delete_range", "duplicate_range",
    "drop_line", "duplicate_line", "swap_lines", "change_digit", "change_operator", "change_result",
)
_STATED_RE = re.compile(r"=[ \t]*(-?[0-9]{1,30}(?:/[0-9]{1,30})?)")


# ---------------------------------------------------------------------------------------------
# Strategies


def random_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Arbitrary text: full Unicode without surrogates (NUL and control characters included),
    mostly-ASCII text and text made of awkward characters."""
    return st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size),
        st.text(st.characters(max_codepoint=0x7F), max_size=max_size),
        st.lists(st.sampled_from(AWKWARD_CHARS), max_size=max_size // 4).map("".join),
    )


def blank_texts() -> st.SearchStrategy[str]:
    """The empty string and whitespace-only text."""
    return st.one_of(st.just(""), st.lists(st.sampled_from(_BLANKS), min_size=1, max_size=40).map("".join))


def _alphabet(texts: Iterable[str]) -> list[str]:
    return sorted(set("".join(texts)) | set("0123456789()=+-*/:., \n\t"))


def _char(alphabet: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(alphabet), st.sampled_from(AWKWARD_CHARS),
                     st.characters(exclude_categories=("Cs",)))


def _format_value(x: Any) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _mutate_once(draw: Callable[[st.SearchStrategy[Any]], Any], text: str, alphabet: Sequence[str]) -> str:
    kind = draw(st.sampled_from(_MUTATIONS))
    n = len(text)
    lines = text.split("\n")
    if kind == "insert_char" or (n == 0 and kind in ("delete_char", "replace_char", "delete_range",
                                                     "duplicate_range")):
        i = draw(st.integers(0, n))
        return text[:i] + draw(_char(alphabet)) + text[i:]
    if kind == "delete_char":
        i = draw(st.integers(0, n - 1))
        return text[:i] + text[i + 1 :]
    if kind == "replace_char":
        i = draw(st.integers(0, n - 1))
        return text[:i] + draw(_char(alphabet)) + text[i + 1 :]
    if kind in ("delete_range", "duplicate_range"):
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i + 1, min(n, i + 40)))
        return text[:i] + text[j:] if kind == "delete_range" else text[:j] + text[i:j] + text[j:]
    if kind == "drop_line":
        del lines[draw(st.integers(0, len(lines) - 1))]
        return "\n".join(lines)
    if kind == "duplicate_line":
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(draw(st.integers(0, len(lines))), lines[i])
        return "\n".join(lines)
    if kind == "swap_lines":
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    if kind == "change_digit":
        positions = [k for k, c in enumerate(text) if c in "0123456789"]
        if not positions:
            return text + draw(st.sampled_from("0123456789"))
        i = draw(st.sampled_from(positions))
        how = draw(st.sampled_from(("replace", "delete", "insert")))
        digit = draw(st.sampled_from("0123456789".replace(text[i], "")))
        if how == "replace":
            return text[:i] + digit + text[i + 1 :]
        if how == "delete":
            return text[:i] + text[i + 1 :]
        return text[: i + 1] + digit + text[i + 1 :]
    if kind == "change_operator":
        positions = [k for k, c in enumerate(text) if c in _OPERATOR_CHARS]
        if not positions:
            i = draw(st.integers(0, n))
            return text[:i] + draw(st.sampled_from(_OPERATOR_CHARS)) + text[i:]
        i = draw(st.sampled_from(positions))
        return text[:i] + draw(st.sampled_from(_OPERATOR_CHARS.replace(text[i], ""))) + text[i + 1 :]
    # change_result: the number stated after an "=" becomes another number.
    matches = list(_STATED_RE.finditer(text))
    if not matches:
        i = draw(st.integers(0, n))
        return text[:i] + f" = {draw(st.integers(-30, 30))}" + text[i:]
    m = draw(st.sampled_from(matches))
    old = Fraction(m[1])
    delta = draw(st.one_of(st.sampled_from((1, -1, 2, 24, -24)), st.integers(-100, 100).filter(bool)))
    new = draw(st.sampled_from((old + delta, -old if old else old + delta, old * 2 if old else old + delta)))
    return text[: m.start(1)] + _format_value(new) + text[m.end(1) :]


def mutations(text: str, alphabet: Sequence[str] | None = None, max_edits: int = 4) -> st.SearchStrategy[str]:
    """``text`` (a correct completion) after 1 to ``max_edits`` random edits (see module docstring)."""
    chars = list(alphabet) if alphabet is not None else _alphabet([text])

    @st.composite
    def build(draw: Any) -> str:
        out = text
        for _ in range(draw(st.integers(1, max_edits))):
            out = _mutate_once(draw, out, chars)
        return out

    return build()


def non_ascii_insertions(text: str, max_edits: int = 6) -> st.SearchStrategy[str]:
    """``text`` with NUL / non-ASCII characters inserted, or replacing characters (e.g. look-alike digits)."""

    @st.composite
    def build(draw: Any) -> str:
        out = text
        weird = st.one_of(st.sampled_from(AWKWARD_CHARS),
                          st.characters(min_codepoint=0x80, exclude_categories=("Cs",)))
        for _ in range(draw(st.integers(1, max_edits))):
            c = draw(weird)
            i = draw(st.integers(0, len(out)))
            if draw(st.booleans()) and i < len(out):
                out = out[:i] + c + out[i + 1 :]
            else:
                out = out[:i] + c + out[i:]
        return out

    return build()


def nested_texts(text: str) -> st.SearchStrategy[str]:
    """``text`` with hundreds to thousands of nested parentheses or unary minuses spliced in."""

    @st.composite
    def build(draw: Any) -> str:
        depth = draw(st.sampled_from((60, 200, 1_000, 5_000)))
        lines = text.split("\n")
        k = draw(st.integers(0, len(lines) - 1))
        line = lines[k]
        kind = draw(st.sampled_from(("wrap_line", "wrap_after_colon", "open_only", "close_only", "minus",
                                     "chain", "insert")))
        if kind == "wrap_line":
            line = "(" * depth + line + ")" * depth
        elif kind == "wrap_after_colon":
            head, sep, tail = line.partition(":")
            body = tail.strip() if sep else line
            line = (head + sep + " " if sep else "") + "(" * depth + body + ")" * depth
        elif kind == "open_only":
            line = line + "(" * depth
        elif kind == "close_only":
            line = ")" * depth + line
        elif kind == "minus":
            i = draw(st.integers(0, len(line)))
            line = line[:i] + "-" * depth + line[i:]
        elif kind == "chain":
            head, sep, tail = line.partition(":")
            line = (head + sep + " " if sep else "") + "(1+" * depth + "1" + ")" * depth
        else:
            i = draw(st.integers(0, len(line)))
            piece = draw(st.sampled_from(("(", "((", "(-", "-(")))
            line = line[:i] + piece * (depth // len(piece)) + line[i:]
        lines[k] = line
        return "\n".join(lines)

    return build()


def huge_texts(text: str, size: int = HUGE_CHARS) -> st.SearchStrategy[str]:
    """About ``size`` characters built from ``text``: a line repeated, the text repeated, a very
    long line, a very long number, a very long run of blanks."""

    @st.composite
    def build(draw: Any) -> str:
        lines = [line for line in text.split("\n") if line.strip()] or ["x"]
        kind = draw(st.sampled_from(("repeat_line", "repeat_text", "one_line", "long_number", "long_blank",
                                     "long_run")))
        if kind == "repeat_line":
            line = draw(st.sampled_from(lines))
            body = "\n".join([line] * (size // (len(line) + 1) + 1))
            return body + "\n" + text if draw(st.booleans()) else text + "\n" + body
        if kind == "repeat_text":
            return "\n".join([text] * (size // (len(text) + 1) + 1))
        if kind == "one_line":
            joined = " ".join(lines)
            return " ".join([joined] * (size // (len(joined) + 1) + 1))
        i = draw(st.integers(0, len(text)))
        if kind == "long_number":
            run = draw(st.sampled_from(("9", "1", "0"))) * size
        elif kind == "long_blank":
            run = draw(st.sampled_from((" ", "\t", "\n", " \n", "\r\n", "\u3000")))
            run = run * (size // len(run))
        else:
            run = draw(st.sampled_from(("x", "=", "+", "*", "/", ".", "Answer: ", "(left: ", ":"))) * (size // 2)
            run = run[:size]
        return text[:i] + run + text[i:]

    return build()


def token_soup(texts: Sequence[str], max_pieces: int = 40) -> st.SearchStrategy[str]:
    """Characters, words and lines of ``texts`` glued together at random."""
    words = {w for t in texts for w in t.split()}
    lines = {line for t in texts for line in t.split("\n")}
    pieces = sorted(set(_alphabet(texts)) | words | lines)
    glue = st.sampled_from(("", " ", "\n", " = ", ": "))
    return st.lists(st.tuples(st.sampled_from(pieces), glue), max_size=max_pieces).map(
        lambda xs: "".join(p + g for p, g in xs)
    )


def input_strategies(examples: Sequence[Example], correct: Sequence[Pair]) -> dict[str, st.SearchStrategy[Pair]]:
    """Every strategy of the module docstring, as ``name -> strategy of (example, text)``.

    ``correct`` pairs each known-correct completion with its example; text derived from one is
    checked against that example, free text against any of ``examples``.
    """
    if not examples:
        raise ValueError("input_strategies: no examples")
    if not correct:
        raise ValueError("input_strategies: no correct completions to mutate (pass correct_texts)")
    alphabet = _alphabet(t for _, t in correct)
    any_example = st.sampled_from(list(examples))
    seed = st.sampled_from(list(correct))

    def derived(make: Callable[[str], st.SearchStrategy[str]]) -> st.SearchStrategy[Pair]:
        return seed.flatmap(lambda pair: make(pair[1]).map(lambda text: (pair[0], text)))

    texts = [t for _, t in correct][:200]
    return {
        "random_text": st.tuples(any_example, random_text()),
        "token_soup": st.tuples(any_example, token_soup(texts)),
        "mutation": derived(lambda t: mutations(t, alphabet)),
        "non_ascii": derived(non_ascii_insertions),
        "nested": derived(nested_texts),
        "huge": derived(huge_texts),
        "blank": st.tuples(any_example, blank_texts()),
    }

