"""Arithmetic chains (Padula & Soemers' programmed reward): evaluate ``3+4+2=`` one operation at a
time, ``7+2=9``.

Why this task: its reward is a short program, not a learned model, so it is exact and cheap, and
the steps of a chain can be judged one by one -- a clean test bed for token-level rewards
against the paper's scalar one.

**Examples** are generated, not read: ``min_terms`` to ``max_terms`` non-negative integers from
``min_operand`` to ``max_operand`` joined by operators drawn from ``operators`` (``+``, or
``+*``). Generation is seeded (``seed``) and reproducible; the ``test_size`` test expressions are
drawn first and the ``train_size`` train ones after them, all distinct, so the splits are disjoint
by expression and the test split does not depend on ``train_size``. (When the sizes ask for more
than half of all possible expressions, they are drawn by a seeded shuffle of all of them instead.)
Ids are ``train:N`` and ``test:N``; an example holds ``expression`` (``"3+4+2"``) and ``chain``,
the correct continuation (``"7+2=9"``): each statement does one operation, products before sums
(the leftmost ``*`` while there is one, else the leftmost ``+``). The chains are the SFT
demonstrations. An expression is also an example by itself: ``rlsf check --task arith --example
'3 + 4*2 ='`` checks against any expression of non-negative integers with ``+`` and ``*``
(:meth:`Arith.example`).

**The prompt** is a one-line system instruction and the expression with its ``=`` as the user
message.

**The reward** (``Certificate.score``) is the paper's, exactly. The completion's first non-blank
line is the chain (later lines are not part of it), with all whitespace removed. ``expression +
"=" + line`` is split on ``=``: the first part is the expression, the rest are the statements.
The error is ``sum_i |value(expression) - value(statement_i)|``; it is infinite when a statement
is empty or not an expression of integers (ASCII digits) with ``+`` and ``*``, or when statement
``i`` (from 0) does not have exactly ``operators(expression) - i - 1`` operators; it is capped at
``ERROR_CAP`` (500). The score is ``2 / (1 + exp(error / 10))``: 1.0 for a right chain, 0.950 for
``3+4+2=7+2=10``, ~4e-22 for a skipped step (error 500). The paper's reward gives a right but
unfinished chain (``7+2`` alone) full marks too; the certificate does not call it correct.
Statements longer than ``MAX_STATEMENT_CHARS`` characters count as malformed (a resource guard:
no huge integers are ever converted).

**Certificate.correct**: the error is 0, there is one statement per operator (so the last is the
single number equal to the value) and nothing but whitespace follows the chain's line (text that
is not checked is never certified). Any chain that removes one operator per statement and keeps
the value passes, as in the paper's reward (``3+4+2=3+6=9`` too).

**Spans** (character offsets of the completion): one per statement, over its text without the
surrounding blanks (an empty statement: the ``=`` next to it). A statement whose value differs
from the expression's ("7+3 is 10, the expression is 9"), whose operator count breaks the rule
("expected 1 operator, found 0") or that is malformed gets ``error_reward``; a right one earns
``step_reward / operators(expression)``, so a complete right chain earns ``step_reward`` in all.
Statements after the final value share one ``error_reward`` span; an unfinished chain gets
``error_reward`` on an empty span at the end of its line (the token that stopped it); text after
the chain's line gets ``error_reward``. ``Certificate.answer`` is the value of the last statement,
for majority votes.

**No attempt** (:meth:`Certificate.no_attempt`, score -1, below every chain however wrong): a blank
reply (``empty``), and a chain's line with no digit (prose) or that only restates the expression
(``malformed``). The paper's reward gives these about 0, like a skipped step; its figure stays
the ``reward`` metric.

Verdicts, first that applies: ``empty``, ``malformed``, ``wrong_steps`` (operator counts, extra
statements), ``wrong_value``, ``incomplete``, ``text_after_chain``, ``correct``. Metrics:
``success`` (0/1, correct) and ``reward`` (the paper's score, graded).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from rlsf.feedback.certificate import Certificate, Span
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register

#: Verdicts :meth:`Arith.check` can return.
VERDICTS = ("correct", "text_after_chain", "incomplete", "wrong_value", "wrong_steps", "malformed", "empty")

ERROR_CAP = 500  # the paper's cap on the error
MAX_STATEMENT_CHARS = 1000  # longer statements (whitespace removed) are malformed
OPERATORS = "+*"
_EXPRESSION = re.compile(r"[0-9]+(?:[+*][0-9]+)*")  # ASCII digits only: "４" is not a digit here
_ID = re.compile(r"(train|test):[0-9]+")


# ---- expressions -----------------------------------------------------------------------------------
def parse(text: str) -> tuple[list[int], list[str]] | None:
    """``"3+4*2"`` as numbers ``[3, 4, 2]`` and operators ``["+", "*"]``; ``None`` when it is not
    an expression of non-negative integers with ``+`` and ``*`` (no blanks, at most
    ``MAX_STATEMENT_CHARS`` characters)."""
    if len(text) > MAX_STATEMENT_CHARS or not _EXPRESSION.fullmatch(text):
        return None
    operators = [c for c in text if c in OPERATORS]
    numbers = [int(n) for n in re.split(r"[+*]", text)]
    return numbers, operators


def value(numbers: list[int], operators: list[str]) -> int:
    """The value with the usual precedence: a sum of products."""
    total, product = 0, numbers[0]
    for op, n in zip(operators, numbers[1:]):
        if op == "*":
            product *= n
        else:
            total, product = total + product, n
    return total + product


def render(numbers: list[int], operators: list[str]) -> str:
    return str(numbers[0]) + "".join(op + str(n) for op, n in zip(operators, numbers[1:]))


def chain(expression: str) -> str:
    """The correct continuation of ``expression``: one operation per statement, products before
    sums (leftmost ``*``, else leftmost ``+``). ``chain("3+4*2") == "3+8=11"``."""
    parsed = parse(expression)
    if parsed is None:
        raise ValueError(f"not an expression of non-negative integers with + and *: {expression!r}")
    numbers, operators = parsed
    statements = []
    while operators:
        i = operators.index("*") if "*" in operators else 0
        combined = numbers[i] * numbers[i + 1] if operators[i] == "*" else numbers[i] + numbers[i + 1]
        numbers = numbers[:i] + [combined] + numbers[i + 2:]
        operators = operators[:i] + operators[i + 1:]
        statements.append(render(numbers, operators))
    return "=".join(statements)


def paper_reward(error: float) -> float:
    """Padula & Soemers' reward of a (capped) error: ``2 / (1 + exp(error / 10))``."""
    return 2.0 / (1.0 + math.exp(min(error, ERROR_CAP) / 10.0))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _withhold_value(message: str) -> str:
    """A span message without the expression's value (what a feedback turn must not give away)."""
    parts = []
    for part in message.split("; "):
        part = re.sub(r"^(.*) is ([0-9]+), the expression is [0-9]+$", r"\1 is \2, not the expression's value", part)
        parts.append(re.sub(r"^([0-9]+), but the expression is [0-9]+$", r"\1 is not the expression's value", part))
    return "; ".join(parts)


# ---- the task --------------------------------------------------------------------------------------
@register("arith")
class Arith(Task):
    """Arithmetic chains with the paper's programmed reward and a span per statement."""

    description = "Evaluate a + / * expression one operation per step (3+4+2=7+2=9); the paper's programmed reward."
    binary_metrics = ("success",)

    @dataclass
    class Options(Task.Options):
        min_terms: int = opt(3, "Fewest numbers in a generated expression (>= 2).")
        max_terms: int = opt(5, "Most numbers in a generated expression (<= 50).")
        min_operand: int = opt(0, "Smallest operand (>= 0).")
        max_operand: int = opt(9, "Largest operand (<= 1,000,000).")
        operators: str = opt("+", "Operators drawn between the numbers: '+' or '+*' (products are evaluated first).")
        train_size: int = opt(10000, "Generated train expressions.")
        test_size: int = opt(500, "Generated test expressions (drawn first, disjoint from train).")
        seed: int = opt(0, "Seed of the generator: the same options give the same examples.")
        step_reward: float = opt(0.5, "Shared by the right statements: each earns step_reward / operators of the "
                                      "expression.")
        error_reward: float = opt(-1.0, "Span reward of a wrong statement (value or operator count), of extra "
                                        "statements, of an unfinished chain and of text after the chain.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        for name in ("min_terms", "max_terms", "min_operand", "max_operand", "train_size", "test_size", "seed"):
            v = getattr(o, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TaskError(f"task 'arith': option {name} must be an integer, got {v!r}")
        for name in ("step_reward", "error_reward"):
            v = getattr(o, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TaskError(f"task 'arith': option {name} must be a finite number, got {v!r}")
        if not 2 <= o.min_terms <= o.max_terms <= 50:
            raise TaskError(f"task 'arith': need 2 <= min_terms <= max_terms <= 50, got {o.min_terms} and "
                            f"{o.max_terms}")
        if not 0 <= o.min_operand <= o.max_operand <= 1_000_000:
            raise TaskError(f"task 'arith': need 0 <= min_operand <= max_operand <= 1000000, got {o.min_operand} "
                            f"and {o.max_operand}")
        if (not isinstance(o.operators, str) or not o.operators or set(o.operators) - set(OPERATORS)
                or len(set(o.operators)) != len(o.operators)):
            raise TaskError(f"task 'arith': option operators must be '+', '*' or '+*', got {o.operators!r}")
        if o.train_size < 1 or o.test_size < 1:
            raise TaskError(f"task 'arith': train_size and test_size must be >= 1, got {o.train_size} and "
                            f"{o.test_size}")
        if o.step_reward < 0 or o.error_reward > 0:
            raise TaskError(f"task 'arith': need step_reward >= 0 and error_reward <= 0, got {o.step_reward} and "
                            f"{o.error_reward}")
        self._splits: dict[str, list[Example]] | None = None

    # -- data ------------------------------------------------------------------------------------------
    def possible_expressions(self) -> int:
        """How many distinct expressions the options allow."""
        o = self.options
        k = o.max_operand - o.min_operand + 1
        return sum(k**n * len(o.operators) ** (n - 1) for n in range(o.min_terms, o.max_terms + 1))

    def _generate(self) -> dict[str, list[Example]]:
        o = self.options
        want = o.test_size + o.train_size
        possible = self.possible_expressions()
        if want > possible:
            raise TaskError(f"task 'arith': train_size + test_size = {want} but the options allow only {possible} "
                            "distinct expressions (raise max_terms or max_operand, or add an operator)")
        rng = random.Random(o.seed)
        if 2 * want > possible:  # rejection sampling would crawl: shuffle all of them
            everything = [render(list(nums), list(ops))
                          for n in range(o.min_terms, o.max_terms + 1)
                          for nums in itertools.product(range(o.min_operand, o.max_operand + 1), repeat=n)
                          for ops in itertools.product(o.operators, repeat=n - 1)]
            rng.shuffle(everything)
            drawn = everything[:want]
        else:
            seen: set[str] = set()
            drawn = []
            while len(drawn) < want:
                n = rng.randint(o.min_terms, o.max_terms)
                text = render([rng.randint(o.min_operand, o.max_operand) for _ in range(n)],
                              [rng.choice(o.operators) for _ in range(n - 1)])
                if text not in seen:
                    seen.add(text)
                    drawn.append(text)
        return {split: [{"id": f"{split}:{i}", "expression": e, "chain": chain(e)} for i, e in enumerate(part)]
                for split, part in (("test", drawn[: o.test_size]), ("train", drawn[o.test_size:]))}

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if self._splits is None:
            self._splits = self._generate()
        return [dict(ex) for ex in self._splits[split]]

    def example(self, example_id: Any) -> Example:
        """An example by id (``test:3``), or the expression written out (``3+4+2=``, ``3 + 4*2``)."""
        key = str(example_id).strip()
        if _ID.fullmatch(key):
            return super().example(key)
        return self.from_expression(key)

    def from_expression(self, text: str) -> Example:
        """The example of an expression written by hand: blanks ignored, one trailing ``=`` allowed."""
        compact = "".join(text.split())
        compact = compact[:-1] if compact.endswith("=") else compact
        parsed = parse(compact)
        if parsed is None:
            raise TaskError(f"task 'arith': {_short(text.strip())!r} is neither an example id (train:N, test:N) nor an "
                            f"expression of non-negative integers with + and * (e.g. '3+4*2='), of at most "
                            f"{MAX_STATEMENT_CHARS} characters")
        if not parsed[1]:
            raise TaskError(f"task 'arith': expression {compact!r} has no operator, so it has no chain to check")
        return {"id": compact, "expression": compact, "chain": chain(compact)}

    # -- model interface -------------------------------------------------------------------------------
    def prompt(self, example: Example) -> Messages:
        # The instruction is the system message (chat templates then add no default one).
        return [{"role": "system", "content": "Continue the calculation on one line: after each '=' rewrite the "
                                              "expression with one operation done (multiplications first), "
                                              "until a single number is left."},
                {"role": "user", "content": f"{example['expression']}="}]

    def demonstration(self, example: Example) -> str | None:
        return example["chain"]

    def check(self, example: Example, completion: str) -> Certificate:
        o = self.options
        parsed = parse(str(example.get("expression", "")))
        if parsed is None or not parsed[1]:  # a bad example is a caller bug, not model text
            raise TaskError(f"task 'arith': example has no valid 'expression': {example!r}")
        numbers, operators = parsed
        target, n_ops = value(numbers, operators), len(operators)
        if not isinstance(completion, str) or not completion.strip():
            return Certificate.no_attempt("empty", "no reply", "", **self._info(ERROR_CAP, 0, 0, n_ops))

        # The chain's line: the first non-blank one; [line_start, line_end) without its newline.
        line_start = 0
        while True:
            newline = completion.find("\n", line_start)
            line_end = len(completion) if newline < 0 else newline
            if completion[line_start:line_end].strip():
                break
            line_start = line_end + 1
        chain = "".join(completion[line_start:line_end].split())
        if not any(c in "0123456789" for c in chain) or chain.rstrip("=") == "".join(example["expression"].split()):
            return Certificate.no_attempt("malformed", "no calculation: prose, or the expression copied back",
                                          completion, **self._info(ERROR_CAP, 0, 0, n_ops))
        pieces, s = [], line_start  # (start, end) of each statement in the completion
        while (eq := completion.find("=", s, line_end)) >= 0:
            pieces.append((s, eq))
            s = eq + 1
        pieces.append((s, line_end))

        spans: list[Span] = []
        error, infinite = 0, False
        malformed = wrong_steps = wrong_value = False
        right = 0
        for i, (start, end) in enumerate(pieces[:n_ops]):
            raw = completion[start:end]
            text = "".join(raw.split())
            if not text:
                infinite = malformed = True
                at = end if end < line_end else start - 1  # the '=' after it, else the one before
                spans.append(Span(at, at + 1, o.error_reward, "empty statement"))
                continue
            lead = len(raw) - len(raw.lstrip())
            span = (start + lead, start + len(raw.rstrip()))
            stated = parse(text)
            if stated is None:
                infinite = malformed = True
                why = (f"longer than {MAX_STATEMENT_CHARS} characters" if len(text) > MAX_STATEMENT_CHARS
                       else f"not an expression of integers with + and *: {_short(text)!r}")
                spans.append(Span(*span, o.error_reward, why))
                continue
            problems = []
            want_ops, found_ops = n_ops - i - 1, len(stated[1])
            if found_ops != want_ops:
                infinite = wrong_steps = True
                problems.append(f"expected {_plural(want_ops, 'operator')}, found {found_ops}")
            v = value(*stated)
            if v != target:
                wrong_value = True
                error += abs(v - target)
                problems.append(f"{_short(text)} is {v}, the expression is {target}" if stated[1]
                                else f"{v}, but the expression is {target}")
            if problems:
                spans.append(Span(*span, o.error_reward, "; ".join(problems)))
            else:
                right += 1
                spans.append(Span(*span, o.step_reward / n_ops, f"right: {_plural(want_ops, 'operator')} left"))
        extra = pieces[n_ops:]
        if extra:  # statement i >= n_ops would need a negative number of operators
            infinite = wrong_steps = True
            spans.append(Span(extra[0][0] - 1, extra[-1][1], o.error_reward,  # from the '=' that opens them
                              f"{_plural(len(extra), 'statement')} after the final value (the chain has {n_ops})"))
        incomplete = len(pieces) < n_ops
        if incomplete and not (malformed or wrong_steps or wrong_value):
            left = n_ops - len(pieces)
            spans.append(Span(line_end, line_end, o.error_reward,
                              f"the chain stops with {_plural(left, 'operator')} left"))
        after = completion[line_end:]
        if after.strip():
            first = line_end + len(after) - len(after.lstrip())
            spans.append(Span(first, len(completion), o.error_reward, "text after the chain's line is not checked"))

        capped = ERROR_CAP if infinite else min(error, ERROR_CAP)
        final = parse("".join(completion[pieces[-1][0]:pieces[-1][1]].split()))
        verdict = ("malformed" if malformed else "wrong_steps" if wrong_steps else "wrong_value" if wrong_value
                   else "incomplete" if incomplete else "text_after_chain" if after.strip() else "correct")
        return Certificate(paper_reward(capped), verdict, verdict == "correct", spans,
                           self._info(capped, len(pieces), right, n_ops),
                           answer=None if final is None else str(value(*final)))

    @staticmethod
    def _info(error: float, statements: int, right: int, n_ops: int) -> dict[str, float]:
        return {"error": float(error), "statements": statements, "statements_right": right,
                "step_accuracy": right / statements if statements else 0.0, "chain_progress": right / n_ops}

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """The default turn with the expression's value taken out of the messages ("19, but the
        expression is 18" becomes "19 is not the expression's value"): the value is the answer."""
        spans = [dataclasses.replace(s, message=_withhold_value(s.message)) if s.reward < 0 else s
                 for s in certificate.spans]
        return super().feedback(example, completion, dataclasses.replace(certificate, spans=spans))

    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        # the paper's reward, also for a reply that attempts nothing (whose training score is -1)
        return {"success": float(certificate.correct), "reward": paper_reward(certificate.info["error"])}

    def near_misses(self, example: Example) -> dict[str, str]:
        *steps, last = example["chain"].split("=")
        misses = {"last value off by one": "=".join([*steps, str(int(last) + 1)])}
        if steps:  # a slip in the first statement's number, carried through
            misses["first statement slip"] = "=".join([re.sub(r"[0-9]+$", lambda m: str(int(m[0]) + 1), steps[0]),
                                                       *steps[1:], last])
        return {k: v for k, v in misses.items() if not self.check(example, v).correct}

    def reward_hacks(self, example: Example) -> dict[str, str]:
        value_ = example["chain"].split("=")[-1]
        return {"constant answer": "0", "the value with no steps, wrong": str(int(value_) + 1)}
