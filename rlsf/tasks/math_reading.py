"""Reading the arithmetic of a math word problem's completion: numbers, exact expressions, the
calculations it writes (``48/2 = 24``), its final answer, and the computed results the dense
reference reward aligns with the reference solution's steps (:mod:`rlsf.tasks.math_word` is the task).

Nothing is ``eval``-ed: expressions are parsed with :mod:`ast` and evaluated over
:class:`fractions.Fraction`; every scan is bounded per ``=`` so reading stays linear in the text.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only: "４" or "𝟐" is not a number here
_OPERAND_RE = re.compile(r"\(-[\d.,]+\)|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+", re.ASCII)  # "(-4)", "1,200"
_FINAL = [re.compile(r"####\s*\$?\s*(" + _NUMBER + ")", re.ASCII),
          re.compile(r"\\boxed\{\s*\\?\$?\s*(" + _NUMBER + r")[^}]{0,40}\}", re.ASCII),
          re.compile(r"answer\s*(?:is|:)\s*[:=]?\s*\**\s*\\?\$?\s*(" + _NUMBER + ")", re.I | re.ASCII)]
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>", re.ASCII)
# A calculation: an arithmetic expression over numbers, "=", a number. Found from each "= number"
# by walking back over the characters an expression may have (at most MAX_CALC_CHARS of them).
# "= 24", "= 2/5"; not "= 5+6 = 11", where 5 starts an expression (the next "=" ends a calculation)
_RHS = re.compile(r"=\s*\$?\s*((?:" + _NUMBER + r")(?:/\d+(?![\d.]))?)(?!\d|[.,]\d)(?![ \t]*[-+*/×÷x(][ \t]*[\d(.$])",
                  re.ASCII)
_OPERATOR_RE = re.compile(r"(?a)\d\s*[)]*\s*([+\-*/x×÷·−]|\\times|\\cdot|\\div)")  # an operator after a number
_EXPR_CHARS = frozenset("0123456789., ()+-*/x×÷·−$%\t")
_EXPR_COMMANDS = ("\\times", "\\cdot", "\\div", "\\left", "\\right", "\\(", "\\)")
MAX_CALCULATIONS = 200  # per completion; the rest are not checked
MAX_RESULTS = 1000  # computed results a completion offers to the reference alignment
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
MAX_CALC_CHARS = 200


# ---- numbers and expressions ---------------------------------------------------------------------
def to_number(text: str) -> Fraction | None:
    """``"1,200"``, ``"-3.5"``, ``".5"`` as an exact number; ``None`` if it is not one."""
    text = text.replace(",", "").strip()
    if not text.isascii():  # Fraction reads "４" and "𝟐" as digits; a checker of ASCII numbers must not
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def decimal(x: Fraction) -> str | None:
    """``x`` as a decimal a person writes (``3``, ``2.5``, ``-0.125``); ``None`` if it does not end."""
    d, twos_fives = x.denominator, 0
    for p in (2, 5):
        while d % p == 0:
            d //= p
            twos_fives += 1
    if d != 1:
        return None
    if x.denominator == 1:
        return str(x.numerator)
    places = 0
    while (x * 10 ** places).denominator != 1:
        places += 1
    scaled = abs(x.numerator * 10 ** places // x.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    return ("-" if x < 0 else "") + f"{digits[:-places]}.{digits[-places:]}"


def numbers(text: str) -> set[Fraction]:
    """The values of the numbers written in ``text`` (ASCII digits); each distinct spelling read once."""
    return {v for s in set(_NUMBER_RE.findall(text)) if (v := to_number(s)) is not None}


@dataclass(frozen=True)
class Operation:
    """One operation of an expression: ``left op right = result`` (exact values)."""

    left: Fraction
    op: str
    right: Fraction
    result: Fraction
    top: bool  # the expression's last operation: its result is the expression's value

    @property
    def trivial(self) -> bool:
        """An identity (``16 * 1``, ``16 + 0``, ``0 + 16``, ``16 - 0``, ``16 / 1``): an operand
        given back, nothing computed."""
        if self.op == "+":
            return self.left == 0 or self.right == 0
        if self.op == "*":
            return self.left == 1 or self.right == 1
        return self.right == (0 if self.op == "-" else 1)


def arithmetic(expression: str) -> tuple[Fraction, list[Operation]] | None:
    """The exact value of an arithmetic expression (``+ - * / x × ÷``, parentheses, decimals,
    thousands separators, ``$`` and ``%`` signs, mixed numbers ``3 1/2``, a product written
    ``27(1/3)``) and its operations in evaluation order (left
    operand, right operand, then the operation); ``None`` when it is not one or divides by zero.

    Parsed with :mod:`ast` and evaluated over :class:`fractions.Fraction`: nothing is ``eval``-ed,
    there are no names, no powers (so no huge numbers), and the text is at most
    ``MAX_CALC_CHARS`` characters.
    """
    if len(expression) > MAX_CALC_CHARS:
        return None
    text = (expression.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
            .replace("\\left", "").replace("\\right", "").replace("\\(", "").replace("\\)", "")
            .replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-").replace("$", ""))
    text = re.sub(r"(?a)(?<=\d)\s*x\s*(?=[\d(.])", "*", text)  # "0.2 x 50"
    text = re.sub(r"(?a)(\d),(?=\d{3}\b)", r"\1", text)
    text = re.sub(r"(?a)(\d+(?:\.\d+)?)\s*%", r"(\1/100)", text)
    text = re.sub(r"(?a)(?<![\d./])(\d+)\s+(\d+)/(\d+)(?![\d.])", r"(\1+\2/\3)", text)  # "3 1/2": three and a half
    text = re.sub(r"(?a)(?<=[\d)])\s*\(", "*(", text)  # "27(1/3)", "1/2 (68)": a product
    if re.search(r"(?a)[^\d.\s()+\-*/]", text):
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    ops: list[Operation] = []

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            result = _OPS[type(node.op)](left, right)
            ops.append(Operation(left, _SYMBOLS[type(node.op)], right, result, node is tree.body))
            return result
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError("not arithmetic")

    try:
        return value(tree.body), ops
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression (see :func:`arithmetic`), or ``None``."""
    found = arithmetic(expression)
    return None if found is None else found[0]


def close_enough(true: Fraction, stated: Fraction, stated_text: str) -> bool:
    """``stated`` is ``true`` exactly, or rounded to the decimals it is written with (``1/3 = 0.33``)."""
    if true == stated:
        return True
    decimals = len(stated_text.split(".", 1)[1]) if "." in stated_text else 0
    return decimals > 0 and abs(true - stated) <= Fraction(1, 2 * 10 ** decimals)


# ---- reading a completion ----------------------------------------------------------------------
@dataclass(frozen=True)
class Calculation:
    start: int  # characters of the completion: the whole "lhs = rhs"
    end: int
    lhs: str
    rhs: str
    value: Fraction | None  # the true value of lhs (None: not an expression)
    stated: Fraction
    operations: tuple[Operation, ...] = ()
    percent: bool = False  # the result is written with "%" ("12/20 x 100% = 60%")

    @property
    def right(self) -> bool:
        """The stated result is the value (rounded to the decimals written); with ``%``, the value
        as a share (``12/20 = 60%``) or already in percent (``12/20 x 100 = 60%``)."""
        if self.value is None:
            return False
        return close_enough(self.value, self.stated, self.rhs) or (
            self.percent and close_enough(self.value * 100, self.stated, self.rhs))

    @property
    def trivial(self) -> bool:
        """Every operation gives back one of its operands (``16 * 1 = 16``): a copy, not a calculation."""
        return bool(self.operations) and all(op.trivial for op in self.operations)


def calculations(text: str) -> list[Calculation]:
    """Every ``expression = number`` of ``text`` whose expression has an operator between numbers
    (the first ``MAX_CALCULATIONS``). Linear in the text: each ``=`` looks back a bounded way.

    An expression with units between its numbers (``9 hours * 2/3 = 6``) is read without its
    words (``9 * 2/3``); one that cannot be read so (``80 GB / 2 GB/minute = 40``), and algebra
    (``2x + 4x = 700``), are left unchecked rather than read as a wrong fragment (``2/3 = 6``)."""
    out: list[Calculation] = []
    for m in _RHS.finditer(text):
        start = _expression_start(text, m.start())
        lhs_text = text[start:m.start()]
        first = re.search(r"(?a)[(\d.$−\-\\]", lhs_text)  # from the first number (or a bracket, sign or $)
        if first is None:
            continue
        start += first.start()
        lhs = text[start:m.start()].strip()
        if len(_NUMBER_RE.findall(lhs)) < 2 or not _OPERATOR_RE.search(lhs):
            continue
        stated = to_number(m.group(1))
        if stated is None:
            continue
        worded = _worded(text, m.start())
        if worded is not None and worded < start:  # "9 hours * 2/3 = 6": the units cut the expression short
            found = arithmetic(_UNIT_RE.sub(" ", text[worded:m.start()]).replace("–", "-"))
            if found is None:  # "80 GB / 2 GB/minute = 40": work, but nothing to check
                continue
            start, lhs = worded, text[worded:m.start()].strip()
        else:
            found = arithmetic(lhs)
        if found is None and re.search(r"[A-Za-z]", re.sub(r"\\[a-z]+", "", lhs)):
            continue  # "2x + 4x = 700": algebra, not arithmetic; nothing to check
        value, ops = found if found is not None else (None, [])
        percent = text.startswith("%", m.end(1))
        out.append(Calculation(start, m.end(1) + percent, lhs, m.group(1), value, stated, tuple(ops), percent))
        if len(out) == MAX_CALCULATIONS:
            break
    return out


def _expression_start(text: str, eq: int) -> int:
    """Where the expression ending at ``eq`` (an ``=``) starts: the run of expression characters
    before it, at most ``MAX_CALC_CHARS`` long."""
    i, floor = eq, max(0, eq - MAX_CALC_CHARS)
    while i > floor:
        if text[i - 1] in _EXPR_CHARS:
            i -= 1
            continue
        command = next((c for c in _EXPR_COMMANDS if text.startswith(c, i - len(c))), None)
        if command is None or i - len(command) < floor:
            break
        i -= len(command)
    return i


def final_answer(text: str) -> tuple[int, int] | None:
    """``(start, end)`` of the final answer's number (module docstring), or ``None``."""
    for pattern in _FINAL:
        found = list(pattern.finditer(text))
        if found:
            return found[-1].start(1), found[-1].end(1)
    found = list(_NUMBER_RE.finditer(text))
    return (found[-1].start(), found[-1].end()) if found else None


def same_answer(answer: str, reference: Fraction) -> bool:
    """math-verify's judgement of ``answer`` against ``reference``; exact numeric equality when
    math-verify cannot parse it."""
    value = to_number(answer)
    try:
        from math_verify import parse, verify

        gold = parse(format_number(reference) if reference.denominator == 1 else str(float(reference)))
        guess = parse(answer.replace(",", ""))
        if gold and guess:
            return bool(verify(gold, guess))
    except Exception:  # noqa: BLE001 -- math-verify's own failures fall back to exact comparison
        pass
    return value is not None and value == reference


# A calculation written with units between its numbers ("20 ounces / 8 pieces = 2.5 ounces"): it
# cannot be evaluated, but it is work. Two numbers with an operator between them, spaced, then "=".
_UNIT_RE = re.compile(r"(?a)\b(?!x\b)[A-Za-z][A-Za-z/']*")  # the words of "9 hours * 2/3", not the "x" of "3 x 4"
_WORDED = re.compile(r"(?a)\d[^\d\n=]{0,40}?\s[+\-*/x×÷–−]\s[^\d\n=]{0,40}?\d[^\n=]{0,80}$")


def _worded(text: str, eq: int) -> int | None:
    """Where the calculation in words that ends at ``eq`` (an ``=``) starts, or ``None``."""
    line = max(text.rfind("\n", 0, eq) + 1, eq - 200)
    m = _WORDED.search(text, line, eq)
    if m is None:
        return None
    start = m.start()
    while start > line and text[start - 1] in "0123456789.,":  # the whole first number
        start -= 1
    return start


_EQUALS = re.compile(r"(?i)=|\bequals?\b")
_OPERATOR = re.compile(r"(?i)[+*/×÷−–]|(?<=[\w)\s])-(?=[\s\w(])|\b(?:plus|minus|times|divided|multiplied)\b")


def _work(text: str, calcs: list[Calculation]) -> bool:
    """``text`` computes something: a non-trivial calculation; a calculation in words (two
    numbers, an operator and units between them, then ``= number``, on one line); or a line that
    states an equation: ``=`` or "equals", an operator, two numbers (``45=(2*x)-5``, ``9 plus 9
    plus 3 equals 21``: algebra and words the calculator does not check)."""
    if any(not k.trivial for k in calcs):
        return True
    starts = {k.end: k.start for k in calcs}  # an identity read as a calculation is not work in words either
    if any((start := _worded(text, m.start())) is not None and start < starts.get(m.end(1), len(text))
           for m in _RHS.finditer(text)):
        return True
    rest = list(text)  # the calculations read are judged: blank them out
    for k in calcs:
        rest[k.start:k.end] = " " * (k.end - k.start)
    return any(_EQUALS.search(line) and _OPERATOR.search(line) and len(_NUMBER_RE.findall(line)) >= 2
               for line in "".join(rest).splitlines())


# ---- the dense reference reward ------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """A result the completion computes: where it is credited and the values it stands for."""

    start: int
    end: int
    values: frozenset


def computed_results(text: str, calcs: list[Calculation], question: set[Fraction]) -> list[Result]:
    """The results ``text`` computes, in the order it writes them (at most ``MAX_RESULTS``):

    * of each calculation, the result of every non-trivial inner operation (``( 6 - ( 3 + 2 ) )``
      computes 5), then, if the calculation is right and not trivial, its value (exact and as
      stated: ``10/3 = 3.33`` stands for both) -- all credited on the calculation's characters;
    * the number after ``=`` of a calculation in words the reader cannot evaluate (``80 GB / 2
      GB/minute = 40 minutes``), credited from its first number;
    * a number after ``=`` that ends no calculation (``Total = 72``), unless it is one of the
      ``question``'s numbers: a copy is not a result.

    A number written without ``=`` (``#### 72``, ``72 apples``) is never a computed result."""
    found: list[tuple[int, int, Result]] = []
    ends = set()
    for k, c in enumerate(calcs):
        ends.add(c.end)
        for op in c.operations:
            if not op.top and not op.trivial:
                found.append((c.start, k, Result(c.start, c.end, frozenset({op.result}))))
        if c.right and not c.trivial:
            found.append((c.start, k, Result(c.start, c.end, frozenset({c.value, c.stated, c.stated / 100}
                                                                      if c.percent else {c.value, c.stated}))))
    for m in _RHS.finditer(text):
        if m.end(1) in ends:
            continue
        value = to_number(m.group(1))
        if value is None:
            continue
        start = _worded(text, m.start())
        if start is not None:
            found.append((start, len(calcs), Result(start, m.end(1), frozenset({value}))))
        elif value not in question:
            found.append((m.start(1), len(calcs), Result(m.start(1), m.end(1), frozenset({value}))))
        if len(found) >= MAX_RESULTS:
            break
    found.sort(key=lambda t: (t[0], t[1]))  # stable: a calculation's inner results before its value
    return [r for _, _, r in found[:MAX_RESULTS]]


def align(steps: list[Fraction], results: list[Result]) -> list[tuple[int, int]]:
    """A longest monotone alignment of reference ``steps`` to computed ``results``: pairs
    ``(step, result)`` with both indices increasing, each step and each result used at most once,
    a step paired only with a result that stands for its value. Dynamic programming, O(steps x
    results); where a step matches the next result, taking the pair is always optimal."""
    n, m = len(steps), len(results)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = best[i], best[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if steps[i] in results[j].values else max(below[j], row[j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if steps[i] in results[j].values:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def reference_steps(steps: list[list[str]], answer: Fraction) -> list[Fraction]:
    """The results of the reference's steps in order, ending with its final answer (appended when
    the last step is not the answer, e.g. a GSM8K solution whose last step has no annotation)."""
    values = [v for _, r in steps if (v := to_number(r)) is not None]
    return values if values and values[-1] == answer else [*values, answer]
