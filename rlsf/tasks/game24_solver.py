"""Game of 24 solver: a derivation for four numbers, written as a demonstration.

This module owns the exhaustive exact-arithmetic search behind :meth:`Game24.demonstration
<rlsf.tasks.game24.Game24.demonstration>` (:func:`solve`: memoised over sorted sub-states,
preferring non-negative integer intermediate values, then non-negative rationals, then any),
the printing of its answer expression with the fewest parentheses, and the step-line number
format (:func:`format_number`, ``TARGET``) that the solver's lines and the checker's messages
share. The task module :mod:`rlsf.tasks.game24` (data, prompt, checker, certificate) imports
it; this module imports nothing of the task's.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Any

TARGET = Fraction(24)


# ---------------------------------------------------------------------------------------------
# Numbers


def format_number(x: Fraction) -> str:
    """``12`` for integers, ``8/3`` (``-8/3``) otherwise: the step-line number format."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _format_list(xs: list[Fraction] | tuple[Fraction, ...]) -> str:
    return " ".join(format_number(x) for x in sorted(xs))


# ---------------------------------------------------------------------------------------------
# Solver

# An expression tree: an input number, or (op, left, right).
_Expr = Any
_Step = tuple[Fraction, str, Fraction, Fraction]  # a op b = c


def _candidates(a: Fraction, b: Fraction, tier: int) -> list[_Step]:
    """Steps combining ``a`` and ``b`` allowed in ``tier`` (0: non-negative integers,
    1: non-negative rationals, 2: anything), in a fixed order for determinism."""
    hi, lo = (a, b) if a >= b else (b, a)
    out = [(lo, "+", hi, lo + hi), (lo, "*", hi, lo * hi), (hi, "-", lo, hi - lo)]
    if tier == 2 and hi != lo:
        out.append((lo, "-", hi, lo - hi))
    if lo != 0:
        out.append((hi, "/", lo, hi / lo))
    if hi != 0 and hi != lo:
        out.append((lo, "/", hi, lo / hi))
    if tier == 0:
        out = [s for s in out if s[3].denominator == 1 and s[3] >= 0]
    return out


@lru_cache(maxsize=None)
def _search(state: tuple[Fraction, ...], tier: int) -> tuple[_Step, ...] | None:
    """Steps reducing the sorted multiset ``state`` to 24, or ``None``. Memoised: sub-states
    are shared between puzzles."""
    if len(state) == 1:
        return () if state[0] == TARGET else None
    for i in range(len(state)):
        if i > 0 and state[i] == state[i - 1]:
            continue  # pairs with an equal earlier value were tried already
        for j in range(i + 1, len(state)):
            if j > i + 1 and state[j] == state[j - 1]:
                continue  # same pair as the previous j
            rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
            for step in _candidates(state[i], state[j], tier):
                tail = _search(tuple(sorted(rest + (step[3],))), tier)
                if tail is not None:
                    return (step, *tail)
    return None


def _render(expr: _Expr, parent: str = "", right: bool = False) -> str:
    """Print with the fewest parentheses that keep the value (exact arithmetic, so
    re-association like ``a + (b - c) -> a + b - c`` is safe)."""
    if not isinstance(expr, tuple):
        return format_number(expr)
    op, lhs, rhs = expr
    text = f"{_render(lhs, op)} {op} {_render(rhs, op, True)}"
    additive = op in ("+", "-")
    needs = (parent in ("*", "/") and additive) or (right and (parent == "/" or (parent == "-" and additive)))
    return f"({text})" if needs else text


def solve(numbers: list[int] | tuple[int, ...]) -> list[str] | None:
    """A solution as step lines plus a final ``Answer:`` line, or ``None`` if there is none.

    Deterministic. Prefers solutions whose intermediate values are all non-negative integers,
    then non-negative rationals (written ``a/b``), then any rationals.
    """
    start = tuple(sorted(Fraction(n) for n in numbers))
    steps = next((s for tier in range(3) if (s := _search(start, tier)) is not None), None)
    if steps is None:
        return None
    # Pair every available value with the expression that produced it; any item of equal
    # value may serve as an operand since the items always partition the inputs.
    pool: list[tuple[Fraction, _Expr]] = [(x, x) for x in start]
    lines = []
    for a, op, b, c in steps:
        ia = next(k for k, (v, _) in enumerate(pool) if v == a)
        ea = pool.pop(ia)[1]
        ib = next(k for k, (v, _) in enumerate(pool) if v == b)
        eb = pool.pop(ib)[1]
        pool.append((c, (op, ea, eb)))
        left = _format_list([v for v, _ in pool])
        lines.append(f"{format_number(a)} {op} {format_number(b)} = {format_number(c)} (left: {left})")
    lines.append(f"Answer: {_render(pool[0][1])} = 24")
    return lines
