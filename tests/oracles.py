"""Independent oracles: second implementations of each task's correctness rule, for the
property-based checker tests (:mod:`rlsf.tasks.harness`).

An oracle shares no code with the checker it judges -- not its parser, regular expressions,
line splitting or number handling -- so that a bug in one is unlikely to be repeated in the
other. It answers only *is this completion correct?* (no spans, no messages) and is written for
obviousness rather than speed, with guards so that it stays fast on any text.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import Counter
from fractions import Fraction
from typing import Any

# ---------------------------------------------------------------------------------------------
# Game of 24
#
# The rule (rlsf/tasks/game24.py, module docstring): a completion is correct iff
#   * its non-blank lines (split on "\n", a trailing "\r" dropped) contain an answer line
#     "[*_# ]answer[*_ ]:[*_ ]<text>" (ASCII word, any case);
#   * every non-blank line before it is a correct step "a op b = c (left: ...)" with respect to
#     the numbers still available (the true state: all earlier steps are correct);
#   * <text> split on "=" is an expression using each puzzle number once and worth exactly 24,
#     followed by stated values that are all worth the same (the last part loses trailing dots);
#   * nothing but blank lines follows the answer line.
# Limits shared with the checker (they are part of the rule, resource guards of both): a step
# line is at most 300 characters and its numbers have at most 24 digits per part; an
# expression is at most 500 characters, its integer literals at most 12 digits, and every
# literal has at most 49 parentheses and unary minuses around it.

_G24_OPERATORS = {"×": "*", "·": "*", "∗": "*", "÷": "/", "−": "-", "–": "-"}
_G24_EXPR_CHARS = frozenset("0123456789+-*/() \t")
_G24_STEP_MAX = 300
_G24_EXPR_MAX = 500
_G24_LITERAL_MAX = 12
_G24_DEPTH_MAX = 50  # literal depth = 1 + enclosing parentheses + enclosing unary minuses

# One number of a step line: optional minus, digits, then /digits or .digits.
_G24_NUMBER = r"-?[0-9]{1,24}(?:/[0-9]{1,24}|\.[0-9]{1,24})?"
_G24_INTEGER = r"-?[0-9]{1,24}"
_G24_SPLIT_LEFT = re.compile(r"(?P<head>[^()]*?)\s*(?:\(\s*[Ll][Ee][Ff][Tt]\s*:\s*(?P<left>[^()]*)\))?")
_G24_HEADS = (
    # "a op b = c" with blanks around the operator: a and b may be fractions or decimals.
    re.compile(rf"(?P<a>{_G24_NUMBER})\s+(?P<op>[-+*/])\s+(?P<b>{_G24_NUMBER})\s*=\s*(?P<c>{_G24_NUMBER})"),
    # compact "a op b = c": a and b are integers.
    re.compile(rf"(?P<a>{_G24_INTEGER})\s*(?P<op>[-+*/])\s*(?P<b>{_G24_INTEGER})\s*=\s*(?P<c>{_G24_NUMBER})"),
)


class _Reject(Exception):
    pass


def _g24_translate(text: str) -> str:
    return "".join(_G24_OPERATORS.get(ch, ch) for ch in text)


def _g24_number(token: str) -> Fraction | None:
    """A step-line number: ``12``, ``-4``, ``8/3``, ``1.5``; ``None`` otherwise."""
    if re.fullmatch(_G24_NUMBER, token) is None:
        return None
    negative = token.startswith("-")
    body = token.lstrip("-")
    if "/" in body:
        num, den = body.split("/")
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
    elif "." in body:
        whole, decimals = body.split(".")
        value = Fraction(int(whole + decimals), 10 ** len(decimals))
    else:
        value = Fraction(int(body))
    return -value if negative else value


def _g24_step(line: str, available: Counter) -> Counter | None:
    """The numbers left after the correct step ``line``, or ``None`` if it is not correct."""
    line = _g24_translate(line).strip()
    if len(line) > _G24_STEP_MAX:
        return None
    parts = _G24_SPLIT_LEFT.fullmatch(line)
    if parts is None or parts["left"] is None:
        return None
    head = next((m for pattern in _G24_HEADS if (m := pattern.fullmatch(parts["head"]))), None)
    if head is None:
        return None
    a, b, c = _g24_number(head["a"]), _g24_number(head["b"]), _g24_number(head["c"])
    if a is None or b is None or c is None:
        return None
    operands = Counter([a, b])
    if any(available[x] < k for x, k in operands.items()):
        return None
    op = head["op"]
    if op == "/" and b == 0:
        return None
    result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()
    if result != c:
        return None
    claimed = [_g24_number(t) for t in parts["left"].replace(",", " ").split()]
    if any(x is None for x in claimed):
        return None
    after = available - operands
    after[c] += 1
    return after if Counter(claimed) == after else None


def _g24_evaluate(text: str) -> tuple[Fraction, list[int]] | None:
    """Value and integer literals of an answer expression via :mod:`ast`, or ``None``."""
    text = text.strip()
    if not text or len(text) > _G24_EXPR_MAX:
        return None
    text = _g24_translate(text)
    if not set(text) <= _G24_EXPR_CHARS:
        return None
    if any(len(run) > _G24_LITERAL_MAX for run in re.findall("[0-9]+", text)):
        return None
    # Python rejects leading zeros ("08"); the rule reads digit strings as decimal integers.
    text = re.sub("[0-9]+", lambda m: str(int(m[0])), text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "2(3)": SyntaxWarning, then rejected as a Call
            tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    literals: list[int] = []

    def depth_of(node: ast.AST, minuses: int) -> int:
        parens = text[: node.col_offset].count("(") - text[: node.col_offset].count(")")
        return 1 + parens + minuses

    def value(node: ast.AST, minuses: int) -> Fraction:
        if minuses > _G24_DEPTH_MAX:
            raise _Reject
        if isinstance(node, ast.Constant) and type(node.value) is int:
            if depth_of(node, minuses) > _G24_DEPTH_MAX:
                raise _Reject
            literals.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand, minuses + 1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            lhs, rhs = value(node.left, minuses), value(node.right, minuses)
            if isinstance(node.op, ast.Add):
                return lhs + rhs
            if isinstance(node.op, ast.Sub):
                return lhs - rhs
            if isinstance(node.op, ast.Mult):
                return lhs * rhs
            if rhs == 0:
                raise _Reject
            return lhs / rhs
        raise _Reject  # names, calls, powers, floats, tuples, ...

    try:
        return value(tree.body, 0), literals
    except (_Reject, RecursionError):
        return None


def _g24_answer_text(line: str) -> str | None:
    """The text after ``Answer:`` when ``line`` is an answer line, else ``None``."""
    i, n = 0, len(line)
    while i < n and (line[i].isspace() or line[i] in "*_#"):
        i += 1
    word = line[i : i + 6]
    if not (word.isascii() and word.lower() == "answer"):
        return None
    i += 6
    while i < n and (line[i].isspace() or line[i] in "*_"):
        i += 1
    if i == n or line[i] != ":":
        return None
    i += 1
    while i < n and (line[i].isspace() or line[i] in "*_"):
        i += 1
    return line[i:]


def _g24_answer_ok(text: str, numbers: list[int]) -> bool:
    pieces = text.split("=")
    pieces[-1] = pieces[-1].strip().rstrip(".")
    first = _g24_evaluate(pieces[0])
    if first is None:
        return False
    total, literals = first
    if total != 24 or sorted(literals) != sorted(numbers):
        return False
    for piece in pieces[1:]:
        stated = _g24_evaluate(piece)
        if stated is None or stated[0] != total:
            return False
    return True


def game24_oracle(example: dict[str, Any], text: str) -> bool:
    """Is ``text`` a correct Game of 24 completion for ``example`` (see the rule above)?"""
    if not isinstance(text, str):
        return False
    numbers = [int(n) for n in example["numbers"]]
    lines = []
    for raw in text.split("\n"):
        if raw.strip():
            lines.append(raw[:-1] if raw.endswith("\r") else raw)
    available = Counter(Fraction(n) for n in numbers)
    for index, line in enumerate(lines):
        answer = _g24_answer_text(line)
        if answer is None:
            step = _g24_step(line, available)
            if step is None:
                return False
            available = step
            continue
        return index == len(lines) - 1 and _g24_answer_ok(answer, numbers)
    return False  # no answer line


# ---- SPoC ---------------------------------------------------------------------------------------
# Correct iff the program (the first ``` fenced block, else the whole text) compiles after the
# SPoC preamble and prints, on every public test, the expected output token for token. Written
# apart from rlsf/tasks/spoc*.py: its own block extraction, test-file parsing and comparison; the
# sandbox is shared (running model code bare is not an option).

_SPOC_TESTS: dict[str, list[tuple[str, str]]] = {}


def _spoc_program(text: str) -> str:
    lines = text.split("\n")
    opened = [i for i, ln in enumerate(lines) if ln.lstrip(" \t").startswith("```")]
    if not opened:
        return text
    body = "\n".join(lines[opened[0] + 1:])
    cut = body.find("```")
    return body if cut < 0 else body[:cut]


def _spoc_public(folder: str, probid: str) -> list[tuple[str, str]]:
    if probid not in _SPOC_TESTS:
        import os

        raw = open(os.path.join(folder, probid, f"{probid}_testcases_public.txt"), encoding="utf-8").read()
        cases = []
        for block in raw.split("###ENDOUTPUT###")[:-1]:
            given, _, expected = block.partition("###ENDINPUT###")
            cases.append((given.lstrip("\n"), expected))
        _SPOC_TESTS[probid] = cases
    return _SPOC_TESTS[probid]


def spoc_oracle(example: dict[str, Any], text: str, testcases: str = "") -> bool:
    from rlsf.sandbox import COMPILE_LIMITS, RUN_LIMITS, Sandbox

    program = _spoc_program(text)
    if not program.strip():
        return False
    box = Sandbox()
    with box.workdir() as wd:
        wd.write("main.cpp", "#include <bits/stdc++.h>\nusing namespace std;\n" + program)
        built = box.run(["g++", "-std=gnu++11", "-w", "main.cpp", "-o", "main"], workdir=wd, limits=COMPILE_LIMITS)
        if built.verdict.value != "ok":
            return False
        for given, expected in _spoc_public(testcases, example["probid"]):
            ran = box.run(["./main"], stdin=given, workdir=wd, limits=RUN_LIMITS, writable=False)
            if ran.verdict.value != "ok" or ran.stdout.decode("utf-8", "replace").split() != expected.split():
                return False
    return True


def chem_oracle(example: dict[str, Any], text: str, stereo: bool = True) -> bool:
    """Does any whitespace-separated piece of ``text`` (bare, or without the punctuation, quotes,
    backticks or parentheses a sentence may put around it) name the reference molecule?
    Compared by InChI (the checker compares canonical SMILES; same graph, same InChI)."""
    from rdkit import Chem, rdBase

    def inchi(smiles: str) -> str | None:
        if not smiles or len(smiles) > 5000:
            return None
        with rdBase.BlockLogs():  # quiet here only: the checker under test reads RDKit's log
            mol = Chem.MolFromSmiles(smiles)
            if mol is None:
                return None
            options = "" if stereo else "/SNon"
            return Chem.MolToInchi(mol, options=options) or None

    want = inchi(example["target"])
    for piece in text.split():
        tries = {piece, piece.strip(".,;:!?\"'`"), piece.strip(".,;:!?\"'`()"), piece.rstrip(".,;:!?\"'`")}
        for marker in ("SMILES:", "Answer:", "Product:", "Reactants:"):
            tries |= {t.split(marker)[-1] for t in list(tries)}
        if any(want is not None and inchi(t) == want for t in tries):
            return True
    return False


def math_oracle(example: dict[str, Any], text: str) -> bool:
    """Is the reference answer one of the numbers written in ``text`` (digits, an optional sign,
    decimals and thousands commas; compared exactly)?"""
    import re
    from fractions import Fraction

    want = Fraction(example["answer"])
    for m in re.finditer(r"-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+", text):
        digits = m.group().replace(",", "")
        if len(digits) <= 40 and Fraction(digits) == want:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Arithmetic chains
#
# The rule (rlsf/tasks/arith.py, module docstring): a completion is correct iff its first
# non-blank line (lines split on "\n"), with every whitespace character removed, split on "=",
# gives exactly one statement per operator of the expression; statement i (from 0) is digits
# joined by + and * with exactly (operators - i - 1) operators and the expression's value; every
# statement is at most 1000 characters; and only whitespace follows that line.


def _arith_value(statement: str) -> int | None:
    """Value of digits joined by + and * (products first), or None if it is not such a thing."""
    if not statement or len(statement) > 1000 or any(ch not in "0123456789+*" for ch in statement):
        return None
    total = 0
    for term in statement.split("+"):
        factors = term.split("*")
        if any(f == "" for f in factors):
            return None
        product = 1
        for f in factors:
            product *= int(f)
        total += product
    return total


def arith_oracle(example: dict[str, Any], text: str) -> bool:
    expression = example["expression"]
    want = _arith_value(expression)
    n = sum(expression.count(op) for op in "+*")
    lines = text.split("\n")
    first = next((k for k, line in enumerate(lines) if line.strip()), None)
    if want is None or first is None or any(line.strip() for line in lines[first + 1:]):
        return False
    statements = "".join(ch for ch in lines[first] if not ch.isspace()).split("=")
    if len(statements) != n:
        return False
    for i, statement in enumerate(statements):
        if _arith_value(statement) != want or statement.count("+") + statement.count("*") != n - i - 1:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Sentiment alignment
#
# The rule (rlsf/tasks/sentiment.py, module docstring): a completion is correct iff it is not
# blank and VADER's compound score of "<prompt> <completion>", the completion cut to its first
# 2000 characters (and back to a whole word when the cut falls inside one), times +1 (positive)
# or -1 (negative), is at least the threshold (0.05). Scored here by VADER's public
# polarity_scores, not the checker's word-by-word replay of it.

_VADER: list[Any] = []


def sentiment_oracle(example: dict[str, Any], text: str, direction: str = "positive", threshold: float = 0.05,
                     max_chars: int = 2000) -> bool:
    if not text.strip():
        return False
    if not _VADER:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER.append(SentimentIntensityAnalyzer())
    if len(text) > max_chars:
        inside_word = not text[max_chars].isspace()
        text = text[:max_chars]
        while inside_word and text and not text[-1].isspace():
            text = text[:-1]
    compound = _VADER[0].polarity_scores(example["prompt"] + " " + text)["compound"]
    return (compound if direction == "positive" else -compound) >= threshold
