"""Differentiate a function: a computer-algebra checker (sympy) with a span on each wrong term.

The reply's answer is the text after its last ``=`` (``f'(x) = 2*x + cos(x)``), else its first
line. It is parsed with Python's ``ast`` into a sympy expression by a whitelist (numbers, ``x``,
``pi``, ``e``, + - * / ** ^, and sin cos tan exp log ln sqrt): model text is never ``eval``-ed,
sympy's ``parse_expr`` (which does) is not used, and sizes are capped (an exponent tower is
refused, not computed). The answer is right when it equals sympy's derivative at seven points;
otherwise each top-level term of the answer that equals no term of the true derivative gets a
negative span, each one that does a small credit, and missing terms a span at the end. A syntax
error gets a span where the parser stopped. Prose or a refusal (no ``=`` and words that are not
function names) makes no attempt. The data is inline: no download.

Run from the repository root::

    echo "f'(x) = 2*x + cos(x)" > /tmp/answer.txt
    rlsf check --task examples/derivative.py:Derivative --example d2 --completion /tmp/answer.txt
    rlsf train --task examples/derivative.py:Derivative --steps 10 --output-dir runs/derivative
    python examples/derivative.py           # prints the certificates of a few replies
"""

from __future__ import annotations

import ast
import re

import sympy as sp

from rlsf.feedback import Certificate, Span
from rlsf.tasks import function_task

X = sp.Symbol("x")
FUNCTIONS = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "exp": sp.exp, "log": sp.log, "ln": sp.log,
             "sqrt": sp.sqrt}
NAMES = {"x": X, "pi": sp.pi, "e": sp.E, "E": sp.E}
POINTS = (0.31, 0.57, 0.93, 1.29, 1.71, 2.23, 2.89)  # inside every function's domain (log, sqrt: x > 0)
MAX_CHARS, MAX_NODES, MAX_EXPONENT, MAX_NUMBER, MAX_TERMS = 300, 200, 50, 10**6, 20

ROWS = [
    {"id": "d1", "f": "x**3 + 2*x", "answer": "3*x**2 + 2"},
    {"id": "d2", "f": "sin(x) + x**2", "answer": "cos(x) + 2*x"},
    {"id": "d3", "f": "x*exp(x)", "answer": "exp(x) + x*exp(x)"},
    {"id": "d4", "f": "log(x) + 5*x", "answer": "1/x + 5"},
    {"id": "d5", "f": "cos(2*x)", "answer": "-2*sin(2*x)"},
    {"id": "d6", "f": "x**2*sin(x)", "answer": "2*x*sin(x) + x**2*cos(x)"},
    {"id": "d7", "f": "sqrt(x) + 1/x", "answer": "1/(2*sqrt(x)) - 1/x**2"},
    {"id": "d8", "f": "exp(3*x) - x**4", "answer": "3*exp(3*x) - 4*x**3"},
    {"id": "d9", "f": "x**5 - 3*x**2 + 1", "answer": "5*x**4 - 6*x"},
    {"id": "d10", "f": "sin(x)*cos(x)", "answer": "cos(x)**2 - sin(x)**2"},
]

PROMPT = ("Differentiate f(x) = {f} with respect to x. Reply with one line, f'(x) = <expression>, in Python "
          "syntax (** for powers, * for products).")


class _Bad(Exception):
    """Text that is not an allowed expression, at ``[start, end)`` of the answer."""

    def __init__(self, start: int, end: int, message: str) -> None:
        super().__init__(message)
        self.start, self.end, self.message = start, end, message


def _build(node: ast.AST, budget: list[int]) -> sp.Expr:
    """The sympy expression of an ``ast`` node, by the whitelist (module docstring)."""
    budget[0] -= 1
    at = (getattr(node, "col_offset", 0), getattr(node, "end_col_offset", 0) or 0)
    if budget[0] < 0:
        raise _Bad(*at, "expression too large")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if abs(node.value) > MAX_NUMBER:
            raise _Bad(*at, f"number larger than {MAX_NUMBER}")
        return sp.Rational(repr(node.value)) if isinstance(node.value, float) else sp.Integer(node.value)
    if isinstance(node, ast.Name):
        if node.id not in NAMES:
            raise _Bad(*at, f"unknown name {node.id!r}")
        return NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _build(node.operand, budget)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if len(node.args) != 1 or node.keywords:
            raise _Bad(*at, f"{node.func.id} takes one argument")
        return FUNCTIONS[node.func.id](_build(node.args[0], budget))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow,
                                                             ast.BitXor)):
        left, right = _build(node.left, budget), _build(node.right, budget)
        if isinstance(node.op, (ast.Pow, ast.BitXor)):  # ^ read as a power, as people write it
            if right.is_number and (not right.is_real or abs(right) > MAX_EXPONENT):
                raise _Bad(*at, f"exponent beyond {MAX_EXPONENT}")
            out = left ** right
        else:
            out = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}.get(type(node.op))
            out = left / right if out is None else out
        if out.is_Number and abs(out) > MAX_NUMBER ** 4:
            raise _Bad(*at, "number too large")
        return out
    raise _Bad(*at, f"not allowed in an answer: {type(node).__name__}")


def _terms(node: ast.AST, sign: int = 1) -> list[tuple[ast.AST, int]]:
    """The top-level terms of a sum (each with its sign)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _terms(node.left, sign) + _terms(node.right, -sign if isinstance(node.op, ast.Sub) else sign)
    return [(node, sign)]


def _values(expr: sp.Expr) -> list[complex] | None:
    try:
        return [complex(expr.evalf(15, subs={X: sp.Float(p)})) for p in POINTS]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):  # zoo, nan, symbols left over
        return None


def _same(a: list[complex] | None, b: list[complex] | None) -> bool:
    return a is not None and b is not None and all(abs(u - v) <= 1e-9 * (1 + abs(v)) for u, v in zip(a, b))


def _answer(completion: str) -> tuple[int, int]:
    """``[start, end)`` of the answer: after the last ``=`` to the end of its line, else the first line."""
    eq = completion.rfind("=")
    if eq >= 0:
        start = eq + 1
    else:
        start = len(completion) - len(completion.lstrip())
    end = completion.find("\n", start)
    end = len(completion) if end < 0 else end
    while start < end and completion[start].isspace():
        start += 1
    while end > start and completion[end - 1].isspace():
        end -= 1
    return start, end


def check(row: dict, completion: str) -> Certificate:
    start, end = _answer(completion)
    text = completion[start:end].rstrip(".")
    end = start + len(text)
    words = [w for w in re.findall(r"[A-Za-z]{3,}", text) if w not in FUNCTIONS]
    if "=" not in completion and (words or not re.search(r"[0-9x]", text)):
        return Certificate.no_attempt("prose", "no expression: prose, a refusal or a question", completion)
    if not text:
        at = min(start, len(completion))
        return Certificate(0.0, "no_expression", False, [Span(max(at - 1, 0), at, -1.0, "nothing after '='")])
    bad = next((i for i, c in enumerate(text) if not c.isascii() or not c.isprintable()), None)
    if len(text) > MAX_CHARS or bad is not None:
        s = start + (bad or 0)
        why = f"longer than {MAX_CHARS} characters" if bad is None else "a character outside printable ASCII"
        return Certificate(0.0, "unparsable", False, [Span(s, end if bad is None else s + 1, -1.0, why)])
    try:
        tree = ast.parse(text, mode="eval").body
        terms = _terms(tree)
        budget = [MAX_NODES]
        built = [(node, sign * _build(node, budget)) for node, sign in terms]
    except SyntaxError as e:
        at = start + min(max((e.offset or 1) - 1, 0), len(text) - 1)
        return Certificate(0.0, "syntax_error", False, [Span(at, at + 1, -1.0, f"not an expression: {e.msg}")])
    except (RecursionError, MemoryError, ValueError):
        return Certificate(0.0, "unparsable", False, [Span(start, end, -1.0, "expression nested too deeply")])
    except _Bad as e:
        return Certificate(0.0, "unparsable", False, [Span(start + e.start, start + max(e.end, e.start + 1), -1.0,
                                                           e.message)])
    truth = sp.diff(sp.sympify(row["f"]), X)  # the row's own data, not model text
    answer = sp.Add(*[expr for _, expr in built])
    if _same(_values(answer), _values(truth)):
        return Certificate(1.0, "correct", True, [Span(start, end, 0.5, "right")], answer=str(answer))
    if len(built) > MAX_TERMS:  # matching term by term would cost more than a check may take
        return Certificate(0.0, "wrong", False, [Span(start, end, -1.0, "not f'(x)")], answer=str(answer))
    left = [(term, _values(term)) for term in sp.Add.make_args(sp.expand(truth))]
    spans, right = [], 0
    for node, expr in built:
        s, e = start + node.col_offset, start + (node.end_col_offset or node.col_offset + 1)
        values = _values(expr)
        match = next((i for i, (_, v) in enumerate(left) if _same(values, v)), None)
        if match is None:
            spans.append(Span(s, e, -1.0 / len(built), f"{expr} is not a term of f'(x)"))
        else:
            right += 1
            left.pop(match)
            spans.append(Span(s, e, 0.5 / len(built), "a right term"))
    if left:
        spans.append(Span(end, end, -0.5, f"{len(left)} term(s) of f'(x) missing"))
    return Certificate(0.5 * right / max(len(built) + len(left), 1), "wrong", False, spans, answer=str(answer))


Derivative = function_task("derivative", check, data=ROWS, prompt=PROMPT, test_size=3,
                           demonstration=lambda row: f"f'(x) = {row['answer']}",
                           description="Differentiate a function of x; sympy checks the answer term by term.")


if __name__ == "__main__":
    task = Derivative()
    example = task.example("d6")
    for reply in ["f'(x) = 2*x*sin(x) + x**2*cos(x)", "f'(x) = 2*x*sin(x) - x**2*cos(x)", "f'(x) = 2x*sin(x)",
                  "f'(x) = 2*x*sin(x)", "I think it is hard to say."]:
        print(repr(reply))
        print(task.check(example, reply).explain(reply), end="\n\n")
