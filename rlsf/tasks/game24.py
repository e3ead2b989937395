"""Game of 24: combine four numbers with + - * / into 24, checked step by step.

The data is the Tree-of-Thoughts puzzle list (``24.csv``, 1,362 puzzles ranked by human solve
time); rows ``[test_start, test_end)`` (900-999 by default, as in the ToT paper) are the test
split and every other row is train.

A completion is a Tree-of-Thoughts style derivation, one step per line, then an answer line::

    4 + 8 = 12 (left: 4 6 12)
    6 - 4 = 2 (left: 2 12)
    2 * 12 = 24 (left: 24)
    Answer: (6 - 4) * (4 + 8) = 24

Checking rules (:meth:`Game24.check`). The rule behind them: **a completion is correct only if
everything it states is true and was verified** -- nothing false, nothing unchecked.

* Lines are split on ``"\\n"`` (a trailing ``"\\r"`` is dropped); blank lines (``str.strip()``
  empty) are ignored. The first line of the form ``[*_# ]answer[*_ ]:[*_ ]<text>`` (the word
  ``answer`` in ASCII, any case; markdown ``**Answer:**`` is fine) is the answer line. Every
  non-blank line before it is a step; non-blank text after it is not verified.
* A step ``a op b = c (left: ...)`` is checked against a running multiset of available numbers
  (initially the four inputs): both operands must be available (``4 + 4`` needs two 4s), ``c``
  must equal ``a op b`` exactly, and the ``left`` list must equal the available numbers minus the
  operands plus the *claimed* ``c`` (so a wrong result is reported once, as an arithmetic error,
  not again as a bookkeeping error). Correct steps earn a ``step_reward`` span, wrong ones a
  ``step_error_reward`` span whose message lists every problem found.
* After a wrong step the checker continues from the ``left`` list the model wrote when it
  parses, otherwise from the true state (the step applied correctly when its operands are
  available, else the state before the step), so that later steps are judged on their own.
* The answer line is ``Answer: <expression> [= v1 [= v2 ...]]``, split on ``=`` (trailing dots
  of the last part are dropped). The expression must parse, use each input number exactly once
  and evaluate to exactly 24; every stated value ``vi`` must parse (the same grammar) and equal
  the expression's value: ``= 24`` after an expression worth 25 is wrong, and so is ``= 25``
  after one worth 24; ``= 24 = 24`` is fine and stating no value is fine. A wrong or missing
  answer gets an ``answer_error_reward`` span over the answer line (or the last non-blank line
  when there is no answer line) whose message names the false part.
* Non-blank text after the answer line gets an ``answer_error_reward`` span over it.
* **No attempt** (:meth:`Certificate.no_attempt`, below every attempt whatever its errors): blank
  text (verdict ``empty``), and text with neither an answer line nor any arithmetic (``a op b``
  between numbers), such as prose or the puzzle restated (verdict ``no_answer``).
* Verdicts, first that applies: ``empty`` (blank text); ``no_answer``; ``unparsable_answer``
  (the expression does not parse, or a stated value does not parse and nothing is false);
  ``wrong_answer`` (wrong numbers, not 24, or a false stated value); ``text_after_answer``;
  ``wrong_step`` (a line before the answer is a wrong or unparsable step); ``correct``. Only
  ``correct`` has ``correct=True`` and score ``correct_reward``; every other verdict scores
  ``incorrect_reward``. Spans are given whatever the verdict.

Model text is never evaluated with ``eval``: expressions go through a small recursive-descent
parser over ASCII integers, ``+ - * /``, unary minus and parentheses, with exact
:class:`fractions.Fraction` arithmetic. ``× · ∗`` read as ``*``, ``÷`` as ``/``, ``− –`` as ``-``.
Limits keep the work per line bounded and are part of the rule (text beyond them is
unparsable): a step line is at most ``MAX_STEP_LINE_CHARS`` characters once stripped, and its
numbers (``12``, ``-4``, ``8/3``, ``1.5``) at most 24 digits per part; each ``=``-separated
part of the answer is at most ``MAX_EXPRESSION_CHARS`` characters, its integer literals at most
``MAX_LITERAL_DIGITS`` digits, and every literal has at most ``MAX_NESTING - 1`` parentheses and
unary minuses around it. ``tests/oracles.py`` implements the same rule independently.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from rlsf.feedback.certificate import Certificate, Span
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register
from rlsf.tasks.game24_solver import TARGET, _format_list, format_number, solve
from rlsf.tasks.sources import Rows, dataset_rows, packaged_file

# The solver and the number format live in game24_solver; TARGET, format_number and solve stay
# importable from here (tests import solve from this module).

#: Verdicts :meth:`Game24.check` can return.
VERDICTS = (
    "correct", "wrong_step", "text_after_answer", "wrong_answer", "unparsable_answer", "no_answer", "empty"
)

# Guards for model text: bounded work per line whatever the model writes.
MAX_EXPRESSION_CHARS = 500
MAX_NESTING = 50
MAX_LITERAL_DIGITS = 12
MAX_STEP_LINE_CHARS = 300

# Unicode operators models like to emit, mapped one character to one character so that
# character offsets are unchanged.
_OPERATOR_MAP = str.maketrans({"×": "*", "·": "*", "∗": "*", "÷": "/", "−": "-", "–": "-"})


class ExpressionError(ValueError):
    """An answer expression that cannot be parsed or evaluated (the message says why)."""


# ---------------------------------------------------------------------------------------------
# Numbers and expressions

_DIGITS = rf"[0-9]{{1,{2 * MAX_LITERAL_DIGITS}}}"
_NUM = rf"-?{_DIGITS}(?:/{_DIGITS}|\.{_DIGITS})?"
_NUM_RE = re.compile(_NUM)


def _parse_number(text: str) -> Fraction | None:
    """A step-line number (``12``, ``-4``, ``8/3``, ``1.5``) or ``None`` if it is not one."""
    if not _NUM_RE.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):  # e.g. "1/0"
        return None


class _Parser:
    """Recursive descent over ``expr := term (+|- term)*``, ``term := unary (*|/ unary)*``,
    ``unary := - unary | primary``, ``primary := INT | ( expr )``.

    The value is ``None`` once a division by zero happened, so parsing continues and the
    literals used are still collected for the message.
    """

    def __init__(self, text: str) -> None:
        self.text = text.translate(_OPERATOR_MAP)
        self.pos = 0
        self.depth = 0
        self.numbers: list[int] = []

    def parse(self) -> Fraction | None:
        if len(self.text) > MAX_EXPRESSION_CHARS:
            raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
        value = self._expr()
        self._skip()
        if self.pos < len(self.text):
            raise ExpressionError(f"unexpected {self.text[self.pos]!r} at position {self.pos}")
        return value

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _expr(self) -> Fraction | None:
        value = self._term()
        while (op := self._peek()) in ("+", "-"):
            self.pos += 1
            rhs = self._term()
            value = None if value is None or rhs is None else value + rhs if op == "+" else value - rhs
        return value

    def _term(self) -> Fraction | None:
        value = self._unary()
        while (op := self._peek()) in ("*", "/"):
            self.pos += 1
            rhs = self._unary()
            if value is None or rhs is None or (op == "/" and rhs == 0):
                value = None
            else:
                value = value * rhs if op == "*" else value / rhs
        return value

    def _unary(self) -> Fraction | None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"nested deeper than {MAX_NESTING}")
        try:
            if self._peek() == "-":
                self.pos += 1
                value = self._unary()
                return None if value is None else -value
            return self._primary()
        finally:
            self.depth -= 1

    def _primary(self) -> Fraction | None:
        c = self._peek()
        if c == "(":
            self.pos += 1
            value = self._expr()
            if self._peek() != ")":
                raise ExpressionError("missing ')'")
            self.pos += 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in "0123456789":
            self.pos += 1
        digits = self.text[start : self.pos]
        if not digits:
            found = repr(c) if c else "end of expression"
            raise ExpressionError(f"expected a number or '(' but found {found}")
        if len(digits) > MAX_LITERAL_DIGITS:
            raise ExpressionError(f"number with more than {MAX_LITERAL_DIGITS} digits")
        self.numbers.append(int(digits))
        return Fraction(int(digits))


def _parse_with_numbers(text: str) -> tuple[Fraction | None, list[int]]:
    """The value of ``text`` (``None`` on division by zero) and the literals it uses, in order."""
    parser = _Parser(text)
    return parser.parse(), parser.numbers


def parse_expression(text: str) -> Fraction:
    """Evaluate an arithmetic expression exactly; raises :class:`ExpressionError` (a
    ``ValueError``) on bad syntax, excessive size or division by zero."""
    value, _ = _parse_with_numbers(text)
    if value is None:
        raise ExpressionError("division by zero")
    return value


# ---------------------------------------------------------------------------------------------
# Checker

_OP = r"[-+*/]"
_LEFT = r"(?:\(\s*left\s*:\s*(?P<left>[^()]*)\))?"
# Operators surrounded by spaces first, so that "8 / 8/3" reads as 8 divided by 8/3; then a
# compact form ("4+8=12") whose operands are plain integers. Lines are stripped first and no two
# repetitions can match the same characters, so matching stays linear (no backtracking blow-up).
_STEP_RES = (
    re.compile(rf"(?P<a>{_NUM})\s+(?P<op>{_OP})\s+(?P<b>{_NUM})\s*=\s*(?P<c>{_NUM})\s*{_LEFT}", re.I),
    re.compile(
        rf"(?P<a>-?{_DIGITS})\s*(?P<op>{_OP})\s*(?P<b>-?{_DIGITS})\s*=\s*(?P<c>{_NUM})\s*{_LEFT}", re.I
    ),
)
# What makes a reply without an answer line an attempt: some arithmetic (a number, an operator, a number).
_ARITHMETIC_RE = re.compile(r"[0-9]\s*(?:[-+*/×÷·∗−–])\s*\(?\s*[0-9]")
# The word "answer" in ASCII only (re.I would also let the long s "ſ" stand for "s").
_ANSWER_RE = re.compile(r"[*_#\s]*[Aa][Nn][Ss][Ww][Ee][Rr][*_\s]*:[*_\s]*(?P<expr>.*)", re.S)


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


@dataclass
class _StepResult:
    problems: list[str]
    next_state: list[Fraction]
    summary: str = ""


def _check_step(line: str, state: list[Fraction]) -> _StepResult:
    """Judge one step line against the available numbers; see the module docstring."""
    line = line.translate(_OPERATOR_MAP).strip()
    m = None
    if len(line) <= MAX_STEP_LINE_CHARS:
        for pattern in _STEP_RES:
            if m := pattern.fullmatch(line):
                break
    if m is None:
        return _StepResult(["cannot parse step (expected 'a op b = c (left: ...)')"], state)
    a, b, c = (_parse_number(m[k]) for k in "abc")
    if a is None or b is None or c is None:
        return _StepResult(["cannot parse step (bad number)"], state)
    op = m["op"]
    problems: list[str] = []
    rest = list(state)
    available = True
    if a == b and state.count(a) == 1:
        available = False
        problems.append(
            f"operand {format_number(a)} is used twice but only one is available "
            f"(left: {_format_list(state)})"
        )
    else:
        for x in dict.fromkeys((a, b)):  # an operand missing altogether is reported once
            if state.count(x) < (a, b).count(x):
                available = False
                problems.append(f"operand {format_number(x)} is not available (left: {_format_list(state)})")
    if available:
        rest.remove(a)
        rest.remove(b)
    expr = f"{format_number(a)} {op} {format_number(b)}"
    true = _apply(a, op, b)
    if true is None:
        problems.append(f"{expr} divides by zero")
    elif true != c:
        problems.append(f"{expr} is {format_number(true)}, not {format_number(c)}")
    claimed: list[Fraction] | None = None
    if m["left"] is None:
        problems.append("missing (left: ...) list")
    else:
        items = [t for t in re.split(r"[\s,]+", m["left"]) if t]
        parsed = [_parse_number(t) for t in items]
        if all(p is not None for p in parsed):
            claimed = [p for p in parsed if p is not None]
        else:
            problems.append(f"cannot parse left list {m['left'].strip()!r}")
    if claimed is not None and available:
        expected = rest + [c]
        if Counter(expected) != Counter(claimed):
            problems.append(f"left should be {_format_list(expected)}, not {_format_list(claimed)}")
    if claimed is not None:
        next_state = claimed
    elif available and true is not None:
        next_state = rest + [true]
    else:
        next_state = state
    return _StepResult(problems, next_state, f"{expr} = {format_number(c)} correct")


def _lines(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of every non-blank line, without its newline (and ``\\r``)."""
    out = []
    start = 0
    for piece in text.split("\n"):
        end = start + len(piece)
        stripped_end = end - 1 if piece.endswith("\r") else end
        if piece.strip():
            out.append((start, stripped_end))
        start = end + 1
    return out


#: At most this many false or unparsable stated values are named in one message.
_MAX_STATED_MESSAGES = 3


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _judge_answer(text: str, inputs: list[Fraction]) -> tuple[str | None, str, str | None]:
    """Judge the text after ``Answer:`` (see the module docstring).

    Returns ``(verdict, message, canonical)``: ``verdict`` is ``None`` when the answer is right,
    else ``"unparsable_answer"`` or ``"wrong_answer"``; ``canonical`` is the expression without
    blanks (``None`` when it does not parse).
    """
    parts = [part.strip() for part in text.split("=")]
    parts[-1] = parts[-1].rstrip(".").strip()
    expr_text, stated = parts[0], parts[1:]
    try:
        value, used = _parse_with_numbers(expr_text)
    except ExpressionError as e:
        return "unparsable_answer", f"cannot parse answer: {e}", None
    except RecursionError:  # belt and braces; MAX_NESTING keeps recursion shallow
        return "unparsable_answer", "cannot parse answer: nested too deeply", None
    canonical = "".join(expr_text.translate(_OPERATOR_MAP).split())
    problems: list[str] = []
    want = sorted(int(x) for x in inputs)
    if sorted(used) != want:
        extra = Counter(used) - Counter(want)
        missing = Counter(want) - Counter(used)
        detail = "; ".join(
            f"{label}: {' '.join(map(str, sorted(c.elements())))}"
            for label, c in (("extra", extra), ("missing", missing))
            if c
        )
        problems.append(
            f"uses numbers {' '.join(map(str, sorted(used))) or 'none'} but the puzzle is "
            f"{' '.join(map(str, want))} ({detail})"
        )
    if value is None:
        problems.append("division by zero")
    elif value != TARGET:
        problems.append(f"evaluates to {format_number(value)}, not 24")
    # Every value stated after an '=' is a claim: it must parse and equal the expression's value.
    false_stated: list[str] = []
    unparsable_stated: list[str] = []
    for part in stated:
        try:
            claimed, _ = _parse_with_numbers(part)
        except (ExpressionError, RecursionError) as e:
            reason = str(e) if isinstance(e, ExpressionError) else "nested too deeply"
            unparsable_stated.append(f"cannot parse stated result {_short(part)!r}: {reason}")
            continue
        if claimed is None:
            false_stated.append(f"stated result {_short(part)} divides by zero")
        elif value is not None and claimed != value:
            false_stated.append(f"states {_short(part)} but the expression is {format_number(value)}")
    for found in (false_stated, unparsable_stated):
        if len(found) > _MAX_STATED_MESSAGES:
            more = len(found) - _MAX_STATED_MESSAGES
            found[_MAX_STATED_MESSAGES:] = [f"and {more} more such stated result{'s' if more > 1 else ''}"]
    if problems or false_stated:
        return "wrong_answer", "; ".join(problems + false_stated + unparsable_stated), canonical
    if unparsable_stated:
        return "unparsable_answer", "; ".join(unparsable_stated), canonical
    return None, "", canonical


@register("game24")
class Game24(Task):
    """Game of 24 (Tree-of-Thoughts puzzles) with a step-by-step exact-arithmetic checker."""

    description = "Reach 24 from four numbers with + - * /; each step and the answer checked exactly."

    @dataclass
    class Options(Task.Options):
        data_path: str | None = opt(None, "CSV of puzzles in ToT's 24.csv format; overrides data_dir (default: "
                                          "<data_dir>/game24/24.csv, then the copy in tree-of-thoughts-llm).")
        test_start: int = opt(900, "First 0-based row of the held-out test split (ToT uses rows 900-999).")
        test_end: int = opt(1000, "End (exclusive) of the test split; all other rows are train.")
        correct_reward: float = opt(1.0, "Certificate score when the answer line is correct.")
        incorrect_reward: float = opt(0.0, "Certificate score otherwise.")
        step_reward: float = opt(0.1, "Span reward of each correct step line.")
        step_error_reward: float = opt(-0.5, "Span reward of each wrong or unparsable step line.")
        answer_error_reward: float = opt(-1.0, "Span reward of a wrong, unparsable or missing answer line.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        for name in ("test_start", "test_end"):
            v = getattr(o, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TaskError(f"task 'game24': option {name} must be a non-negative integer, got {v!r}")
        if o.test_start >= o.test_end:
            raise TaskError(
                f"task 'game24': option test_start ({o.test_start}) must be less than test_end ({o.test_end})"
            )
        for name in ("correct_reward", "incorrect_reward", "step_reward", "step_error_reward",
                     "answer_error_reward"):
            v = getattr(o, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TaskError(f"task 'game24': option {name} must be a finite number, got {v!r}")
        if o.step_reward < 0:
            raise TaskError(f"task 'game24': option step_reward must be >= 0, got {o.step_reward}")
        for name in ("step_error_reward", "answer_error_reward"):
            if getattr(o, name) > 0:
                raise TaskError(f"task 'game24': option {name} must be <= 0, got {getattr(o, name)}")
        if o.data_path is not None and not isinstance(o.data_path, (str, Path)):
            raise TaskError(f"task 'game24': option data_path must be a path, got {o.data_path!r}")
        self._rows: list[Example] | None = None

    # -- data ---------------------------------------------------------------------------------

    def csv_path(self) -> Path:
        if self.options.data_path is not None:
            return Path(self.options.data_path)
        # The copy in tree-of-thoughts-llm is located without importing ``tot`` (it pulls in openai).
        return self.data_file("game24/24.csv", packaged=lambda: packaged_file("tot", "data/24/24.csv"),
                              hint="The puzzles also ship in `pip install --no-deps tree-of-thoughts-llm`.")

    def _read(self) -> list[Example]:
        if self._rows is not None:
            return self._rows
        if (records := dataset_rows(self, "all", start=2)) is None:  # numbered as the CSV's lines
            path = self.csv_path()
            try:
                handle = path.open(newline="", encoding="utf-8")
            except OSError as e:
                raise TaskError(f"task 'game24': cannot read data file {path}: {e.strerror or e}") from e
            with handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or not {"Rank", "Puzzles"} <= set(reader.fieldnames):
                    raise TaskError(f"{path}: expected columns 'Rank' and 'Puzzles', got {reader.fieldnames}")
                records = Rows(f"{path},", [(reader.line_num, record) for record in reader])
        rows: list[Example] = []
        for line, record in records.items:
            where = records.where(line)
            rank, puzzle = record.get("Rank"), record.get("Puzzles")
            if rank is None or not re.fullmatch(r"\s*[0-9]+\s*", rank):
                raise TaskError(f"{where}: bad Rank {rank!r}")
            if puzzle is None:
                raise TaskError(f"{where}: missing Puzzles field")
            tokens = puzzle.split()
            if len(tokens) != 4 or not all(re.fullmatch(r"[0-9]{1,6}", t) for t in tokens):
                raise TaskError(f"{where}: Puzzles must be 4 integers, got {puzzle!r}")
            numbers = [int(t) for t in tokens]
            rows.append({"id": int(rank), "numbers": numbers, "puzzle": " ".join(tokens)})
        self._rows, self._source = rows, records.source.rstrip(",")
        return rows

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        rows = self._read()
        lo, hi = self.options.test_start, self.options.test_end
        if hi > len(rows):
            raise TaskError(
                f"task 'game24': option test_end ({hi}) exceeds the {len(rows)} rows of {self._source}"
            )
        chosen = rows[lo:hi] if split == "test" else rows[:lo] + rows[hi:]
        # Copies, so that callers mutating examples cannot corrupt the cache.
        return [{**r, "numbers": list(r["numbers"])} for r in chosen]

    # -- prompting ------------------------------------------------------------------------------

    def prompt(self, example: Example) -> Messages:
        # The instruction is the system message: chat templates that add a default system
        # prompt when none is given (SmolLM2's adds ~20 tokens) then add nothing, and every
        # prompt token is paid for in every rollout and update.
        instruction = (
            "Use each number once with + - * / to make 24. "
            "One step per line: a op b = c (left: remaining numbers). "
            "Last line: Answer: <expression> = 24"
        )
        return [{"role": "system", "content": instruction},
                {"role": "user", "content": f"Input: {example['puzzle']}"}]

    def demonstration(self, example: Example) -> str | None:
        lines = solve(example["numbers"])
        return None if lines is None else "\n".join(lines)

    def near_misses(self, example: Example) -> dict[str, str]:
        demo = self.demonstration(example)
        if demo is None:
            return {"one slip": f"{example['numbers'][0]} + {example['numbers'][1]} = 0"}
        *steps, answer = demo.split("\n")
        first = re.sub(r"= (\S+)", lambda m: f"= {m[1]}1", steps[0], count=1)  # a wrong result, left list kept
        flip = {"+": "-", "-": "+", "*": "+", "/": "*"}
        expr = answer.removeprefix("Answer: ")
        wrong = re.sub(r" ([-+*/]) ", lambda m: f" {flip[m[1]]} ", expr, count=1)
        misses = {"one slip": "\n".join([first, *steps[1:], answer]),
                  "steps without answer": "\n".join(steps),
                  "wrong answer line": "\n".join([*steps, f"Answer: {wrong}"])}
        return {k: v for k, v in misses.items() if not self.check(example, v).correct}

    def reward_hacks(self, example: Example) -> dict[str, str]:
        numbers = [str(n) for n in example["numbers"]]
        hacks = {"bare 24": "Answer: 24", "24": "24", "inputs summed, claimed 24": f"Answer: {' + '.join(numbers)} = 24",
                 "one step then the claim": f"{numbers[0]} + {numbers[1]} = 24 (left: 24)\nAnswer: 24"}
        return {k: v for k, v in hacks.items() if not self.check(example, v).correct}  # 6 6 6 6 sums to 24

    # -- checking -------------------------------------------------------------------------------

    def check(self, example: Example, completion: str) -> Certificate:
        o = self.options
        try:
            inputs = [Fraction(int(n)) for n in example["numbers"]]
        except (KeyError, TypeError, ValueError) as e:  # a bad example is a caller bug, not model text
            raise TaskError(f"task 'game24': example has no valid 'numbers': {example!r}") from e
        if not isinstance(completion, str) or not completion.strip():
            return Certificate.no_attempt("empty", "no reply", "", steps=0, steps_correct=0, step_accuracy=0.0)

        spans: list[Span] = []
        state = list(inputs)
        steps = steps_correct = 0
        answer_line: tuple[int, int, str] | None = None
        after: list[tuple[int, int]] = []  # non-blank lines after the answer line
        lines = _lines(completion)
        for i, (start, end) in enumerate(lines):
            text = completion[start:end]
            m = _ANSWER_RE.fullmatch(text)
            if m:
                answer_line = (start, end, m["expr"])
                after = lines[i + 1 :]
                break
            steps += 1
            result = _check_step(text, state)
            state = result.next_state
            if result.problems:
                spans.append(Span(start, end, o.step_error_reward, "; ".join(result.problems)))
            else:
                steps_correct += 1
                spans.append(Span(start, end, o.step_reward, result.summary))
        info: dict[str, Any] = {
            "steps": steps,
            "steps_correct": steps_correct,
            "step_accuracy": steps_correct / steps if steps else 0.0,
        }

        if answer_line is None and not _ARITHMETIC_RE.search(completion):
            return Certificate.no_attempt("no_answer", "no step and no 'Answer:' line: not an attempt at the puzzle",
                                          completion, **info)
        if answer_line is None:
            start, end = lines[-1]
            spans.append(Span(start, end, o.answer_error_reward, "no 'Answer: <expression> = 24' line"))
            return Certificate(o.incorrect_reward, "no_answer", False, spans, info, None)
        start, end, answer_text = answer_line
        verdict, message, canonical = _judge_answer(answer_text, inputs)
        if verdict is not None:
            spans.append(Span(start, end, o.answer_error_reward, message))
        if after:
            n = len(after)
            spans.append(Span(after[0][0], after[-1][1], o.answer_error_reward,
                              f"text after the answer line is not checked ({n} non-blank line{'s' if n > 1 else ''})"))
            verdict = verdict or "text_after_answer"
        if verdict is None and steps_correct < steps:
            verdict = "wrong_step"  # the spans of the wrong steps say which and why
        if verdict is not None:
            return Certificate(o.incorrect_reward, verdict, False, spans, info, canonical)
        return Certificate(o.correct_reward, "correct", True, spans, info, canonical)
