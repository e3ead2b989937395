"""Math word problems (GSM8K, SVAMP): the final answer checked by math-verify, every calculation
checked exactly.

Havrilla et al. train on these with three kinds of reward; the task gives each (option
``dense``), with the outcome as the score in all of them:

* ``none`` (**sparse**): the score alone, 1 for a right final answer, 0 otherwise;
* ``reference`` (**dense, heuristic**, the paper's): each intermediate result of the reference
  solution (the results of its ``<<48/2=24>>`` annotations) that the completion states earns
  ``step_reward / results`` on the first place it appears;
* ``symbolic`` (**dense, symbolic**, the RLSF idea here): every calculation the completion writes
  (``48/2 = 24``, ``<<48/2=24>>``, ``$12 \\times 3 = 36$``) is evaluated with exact rational
  arithmetic; a wrong one gets ``error_reward`` on exactly its characters, with the true value in
  the message; a right one earns ``step_reward / calculations``.

The final answer (:func:`final_answer`): after ``####``, else in ``\\boxed{}``, else after "the
answer is", else the last number of the completion. It is compared with the reference by
``math-verify`` (sympy fallback: exact numeric equality); thousands separators (``1,200``),
currency signs and units are ignored. A wrong answer's characters get ``answer_error_reward``
(in every mode but ``none``). ``Certificate.answer`` is the answer as an exact number, so maj@k
votes on values.

Verdicts: ``correct``, ``wrong_answer``, ``no_answer``, ``empty``.

Data: GSM8K (``gsm8k/train.jsonl``, ``test.jsonl``: ``question``, ``answer`` ending in ``#### N``)
and SVAMP (``svamp/SVAMP.json``: ``Body``, ``Question``, ``Equation``, ``Answer``; 1,000 problems,
split by a seeded shuffle into ``test_size`` test problems and the rest for training). SFT
demonstrations are the reference solutions (GSM8K's without the calculator annotations unless
``annotations: true``; SVAMP's equation written out), ending in ``#### N``. Malformed rows are
counted, reported and skipped.
"""

from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from rlsf.feedback.certificate import Certificate, Span
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register

VERDICTS = ("correct", "wrong_answer", "no_answer", "empty")
DENSE = ("none", "reference", "symbolic")

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only: "４" or "𝟐" is not a number here
_FINAL = [re.compile(r"####\s*\$?\s*(" + _NUMBER + ")", re.ASCII),
          re.compile(r"\\boxed\{\s*\\?\$?\s*(" + _NUMBER + r")[^}]{0,40}\}", re.ASCII),
          re.compile(r"answer\s*(?:is|:)\s*[:=]?\s*\**\s*\\?\$?\s*(" + _NUMBER + ")", re.I | re.ASCII)]
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>", re.ASCII)
# A calculation: an arithmetic expression over numbers, "=", a number. Found from each "= number"
# by walking back over the characters an expression may have (at most MAX_CALC_CHARS of them).
_RHS = re.compile(r"=\s*\$?\s*(" + _NUMBER + r")(?![\d.]\d)", re.ASCII)
_EXPR_CHARS = frozenset("0123456789., ()+-*/x×÷·−$%\t")
_EXPR_COMMANDS = ("\\times", "\\cdot", "\\div", "\\left", "\\right", "\\(", "\\)")
MAX_CALCULATIONS = 200  # per completion; the rest are not checked
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}
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


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression (``+ - * / x × ÷``, parentheses, decimals,
    thousands separators, ``$`` and ``%`` signs); ``None`` when it is not one or divides by zero.

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
    if re.search(r"(?a)[^\d.\s()+\-*/]", text):
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError("not arithmetic")

    try:
        return value(tree.body)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


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

    @property
    def right(self) -> bool:
        return self.value is not None and close_enough(self.value, self.stated, self.rhs)


def calculations(text: str) -> list[Calculation]:
    """Every ``expression = number`` of ``text`` whose expression has an operator between numbers
    (the first ``MAX_CALCULATIONS``). Linear in the text: each ``=`` looks back a bounded way."""
    out: list[Calculation] = []
    for m in _RHS.finditer(text):
        start = _expression_start(text, m.start())
        lhs_text = text[start:m.start()]
        first = re.search(r"(?a)[(\d.$−\-\\]", lhs_text)  # from the first number (or a bracket, sign or $)
        if first is None:
            continue
        start += first.start()
        lhs = text[start:m.start()].strip()
        if len(_NUMBER_RE.findall(lhs)) < 2 or not re.search(r"(?a)\d\s*[)]*\s*([+\-*/x×÷·−]|\\times|\\cdot|\\div)", lhs):
            continue
        stated = to_number(m.group(1))
        if stated is None:
            continue
        out.append(Calculation(start, m.end(1), lhs, m.group(1), evaluate(lhs), stated))
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
    numbers = list(_NUMBER_RE.finditer(text))
    return (numbers[-1].start(), numbers[-1].end()) if numbers else None


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


# ---- the tasks -----------------------------------------------------------------------------------
class MathWordTask(Task):
    """Shared by GSM8K and SVAMP: a question, a reference solution, a numeric answer."""

    splits = ("train", "test")

    @dataclass
    class Options(Task.Options):
        dense: str = opt("symbolic", "Token-level reward: none (sparse: the outcome only), reference (the "
                         "paper's heuristic: intermediate results of the reference solution), symbolic (every "
                         "calculation checked exactly).")
        step_reward: float = opt(0.5, "Shared by the right calculations (symbolic) or matched reference results.")
        error_reward: float = opt(-1.0, "Span reward of a wrong calculation (symbolic).")
        answer_error_reward: float = opt(-1.0, "Span reward of a wrong final answer (dense modes).")
        annotations: bool = opt(False, "GSM8K demonstrations keep the calculator annotations <<48/2=24>>.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options.dense not in DENSE:
            raise TaskError(f"task {self.name!r}: dense must be one of {', '.join(DENSE)}, got {self.options.dense!r}")
        self._data: dict[str, list[Example]] = {}

    def _read(self, split: str) -> tuple[list[Example], list[str], str]:
        """The split's examples, its malformed rows (a line each) and the file's name."""
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._data:
            examples, bad, source = self._read(split)
            self._data[split] = self.keep_split(split, examples, bad, source)
        return [dict(ex) for ex in self._data[split]]

    def prompt(self, example: Example) -> Messages:
        return [{"role": "system", "content": "Solve the math word problem step by step, writing each "
                                              "calculation out. End with the final answer as '#### <number>'."},
                {"role": "user", "content": example["question"]}]

    def demonstration(self, example: Example) -> str | None:
        return example["solution"]

    def check(self, example: Example, completion: str) -> Certificate:
        o = self.options
        reference = Fraction(example["answer"])
        if not completion.strip():
            return Certificate(0.0, "empty", info={"calculations": 0, "wrong_calculations": 0})
        spans: list[Span] = []
        calcs = calculations(completion)
        wrong = [c for c in calcs if not c.right]
        if o.dense == "symbolic":
            right = [c for c in calcs if c.right]
            for c in wrong:
                truth = f"{c.lhs} is {format_number(c.value)}" if c.value is not None else "not an expression"
                spans.append(Span(c.start, c.end, o.error_reward, f"wrong calculation: {truth}, not {c.rhs}"))
            spans.extend(Span(c.start, c.end, o.step_reward / len(right), "") for c in right)
        elif o.dense == "reference":
            spans.extend(self._reference_matches(example, completion))
        where = final_answer(completion)
        info = {"calculations": len(calcs), "wrong_calculations": len(wrong)}
        if where is None:
            if o.dense != "none":
                spans.append(Span(0, len(completion), o.answer_error_reward, "no final answer"))
            return Certificate(0.0, "no_answer", spans=spans, info=info)
        text = completion[where[0]:where[1]]
        value = to_number(text)
        ok = len(text) <= 40 and same_answer(text, reference)  # 40 digits: no reference is longer
        if not ok and o.dense != "none":
            spans.append(Span(where[0], where[1], o.answer_error_reward,
                              f"final answer {text}; the answer is {format_number(reference)}"))
        return Certificate(float(ok), "correct" if ok else "wrong_answer", ok, spans, info=info,
                           answer=format_number(value) if value is not None else None)

    def _reference_matches(self, example: Example, completion: str) -> list[Span]:
        """Havrilla et al.'s dense reward: the reference's intermediate results found in the completion."""
        results = example.get("intermediate") or []
        if not results:
            return []
        numbers = [(m.start(), m.end(), to_number(m.group())) for m in _NUMBER_RE.finditer(completion)]
        out = []
        for r in results:
            hit = next(((s, e) for s, e, v in numbers if v == Fraction(r)), None)
            if hit is not None:
                out.append(Span(hit[0], hit[1], self.options.step_reward / len(results), "matches a reference step"))
        return out

    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        calcs = certificate.info.get("calculations", 0)
        wrong = certificate.info.get("wrong_calculations", 0)
        return {"success": float(certificate.correct),
                "calc_accuracy": (calcs - wrong) / calcs if calcs else 0.0}


@register("gsm8k")
class GSM8K(MathWordTask):
    """Grade-school math (Cobbe et al. 2021): 7,473 train and 1,319 test problems."""

    description = "Grade-school math word problems; final answer by math-verify, calculations checked exactly."

    def _read(self, split: str) -> tuple[list[Example], list[str], str]:
        path = self.data_file(f"gsm8k/{split}.jsonl")
        examples, bad = [], []
        with open(path, encoding="utf-8") as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                    question, solution = row["question"].strip(), row["answer"].strip()
                    body, answer = solution.rsplit("####", 1)
                    value = to_number(answer)
                    if not question or value is None:
                        raise ValueError(f"final answer {answer.strip()!r} is not a number")
                except (ValueError, KeyError, AttributeError, TypeError) as e:
                    bad.append(f"{path.name} line {line}: {e}")
                    continue
                intermediate = [format_number(v) for _, r in _ANNOTATION.findall(body)
                                if (v := to_number(r)) is not None]
                shown = body.strip() if self.options.annotations else _ANNOTATION.sub("", body).strip()
                examples.append({"id": f"{split}:{line}", "question": question, "answer": format_number(value),
                                 "intermediate": intermediate, "solution": f"{shown}\n#### {format_number(value)}"})
        return examples, bad, path.name


@register("svamp")
class SVAMP(MathWordTask):
    """SVAMP (Patel et al. 2021): 1,000 one-equation problems, split into train and test."""

    description = "SVAMP math word problems; final answer by math-verify, calculations checked exactly."

    @dataclass
    class Options(MathWordTask.Options):
        test_size: int = opt(300, "Problems in the test split (a seeded shuffle of the 1,000; the rest train).")

    def _read(self, split: str) -> tuple[list[Example], list[str], str]:
        path = self.data_file("svamp/SVAMP.json")
        try:
            rows = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as e:
            raise TaskError(f"task 'svamp': {path} is not JSON: {e}") from None
        if not isinstance(rows, list):
            raise TaskError(f"task 'svamp': {path} should hold a list of problems")
        examples, bad = [], []
        for i, row in enumerate(rows):
            try:
                question = f"{row['Body'].strip()} {row['Question'].strip()}".strip()
                value = to_number(str(row["Answer"]))
                equation = re.sub(r"(?a)(\d+)\.0\b", r"\1", str(row["Equation"])).strip()
                if value is None:
                    raise ValueError(f"answer {row['Answer']!r} is not a number")
                if equation.startswith("(") and equation.endswith(")") and equation.count("(") == 1:
                    equation = equation[1:-1].strip()
                exact = evaluate(equation)
                if exact is None or not close_enough(exact, value, str(row["Answer"])):
                    raise ValueError(f"equation {equation!r} does not give the answer {row['Answer']!r}")
                value = exact
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                bad.append(f"{path.name} problem {i} ({row.get('ID', '?') if isinstance(row, dict) else '?'}): {e}")
                continue
            answer = format_number(value)
            examples.append({"id": str(row.get("ID", i)), "question": question, "answer": answer,
                             "intermediate": [answer], "solution": f"{equation} = {answer}\n#### {answer}"})
        order = list(range(len(examples)))
        random.Random(0).shuffle(order)
        test = set(order[: self.options.test_size])
        keep = [ex for j, ex in enumerate(examples) if (j in test) == (split == "test")]
        return keep, bad, path.name
