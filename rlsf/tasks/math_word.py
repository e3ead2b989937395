"""Math word problems (GSM8K, SVAMP): the final answer checked by math-verify, every calculation
checked exactly.

Havrilla et al. train on these with three kinds of reward; the task gives each (option
``dense``), with the outcome as the score in all of them:

* ``none`` (**sparse**): the score alone (below);
* ``reference`` (**dense, heuristic**, the paper's): the reference solution's intermediate
  results *in order* (:func:`reference_steps`: GSM8K's calculator annotations ``<<48/2=24>>``,
  SVAMP's ``Equation`` operation by operation), matched to the results the completion computes
  (:func:`computed_results`) by a longest monotone alignment (:func:`align`): each reference step
  is credited at most once, at a result written after the previous match, and earns
  ``step_reward / steps``. Only computed results count: the value of a calculation that is right
  (``48/2 = 24``), an inner operation of a calculation (``( 6 - ( 3 + 2 ) ) = 1`` computes 5,
  then 1), the result of a calculation written with units (``80 GB / 2 GB/minute = 40``), a
  number after ``=`` that is not one of the question's numbers (``Total = 72``). A number merely
  written (``72``, ``#### 72``, a number copied from the question) and an identity (``16 * 1``,
  ``16 + 0``: an operand given back) are never credited, and reference steps that are identities
  (GSM8K's ``<<3*1=3>>``, ``<<125=125>>``) are left out;
* ``symbolic`` (**dense, symbolic**, the RLSF idea here): every calculation the completion writes
  (``48/2 = 24``, ``<<48/2=24>>``, ``$12 \\times 3 = 36$``) is evaluated with exact rational
  arithmetic; a wrong one gets ``error_reward`` on exactly its characters, with the true value in
  the message; a right one (other than an identity) earns ``step_reward / calculations``. What is
  read and what is left unchecked (units, percents, fractions, algebra, chains): :func:`calculations`.

The paper's dense reward ("sparse and dense rewards provided to the LLM both heuristically and
via a learned reward model", Havrilla et al. 2024, arXiv 2403.04642, abstract; "reward for
matching intermediate steps of the reference solution", shared/docs/papers.md) is not defined
further in any material reachable here: the stored copies of the paper answer with their opening
only. What is fixed here is the choice a careful reading asks for: the steps are the reference's
own intermediate *results* (the calculator annotations are GSM8K's only step markers; SVAMP's
reference is one equation, so its steps are that equation's operations), matched in order and
once each, against numbers the completion computes, so that neither copying the question's
numbers nor repeating one right number earns step credit.

**Score** (every mode): 1 for a right final answer; 0 for a wrong one backed by work (a
calculation other than an identity, or a calculation written with units); ``unsupported_score``
(-0.5) for a wrong answer with no calculation behind it (a guess: ``#### 0``, a number copied
from the question, the question's numbers listed). In the dense modes a wrong final answer's
characters also get ``answer_error_reward``, and an unsupported one ``error_reward`` over the
whole reply. ``unsupported_score: 0`` with ``dense: none`` is the paper's sparse reward exactly (1
right, 0 otherwise).

**No attempt** (:meth:`~rlsf.feedback.certificate.Certificate.no_attempt`, the least reward under
every preset): blank text (verdict ``empty``); the question restated, alone or with prose, or a
piece of it of 20 characters or more (``copies_question``); a reply with no final-answer line
(``####``, ``\\boxed{}``, "the answer is"), no calculation and no number of its own: prose, a
refusal, "I don't know" (``no_answer``), or only numbers of the question (``copies_question``),
unless it states one number and that is the right answer (``She has 17 cookies.``). A reply
that writes calculations but no ``####`` line is an attempt; its final answer is its last number.

The final answer (:func:`final_answer`): after ``####``, else in ``\\boxed{}``, else after "the
answer is", else the last number of the completion. It is compared with the reference by
``math-verify`` (sympy fallback: exact numeric equality); thousands separators (``1,200``),
currency signs and units are ignored. ``Certificate.answer`` is the answer as an exact number, so
maj@k votes on values.

Verdicts: ``correct``, ``wrong_answer``, ``no_answer``, ``copies_question``, ``empty``.

Data: GSM8K (``gsm8k/train.jsonl``, ``test.jsonl``: ``question``, ``answer`` ending in ``#### N``)
and SVAMP (``svamp/SVAMP.json``: ``Body``, ``Question``, ``Equation``, ``Answer``; 1,000 problems,
split by a seeded shuffle into ``test_size`` test problems and the rest for training). SFT
demonstrations are the reference solutions (GSM8K's without the calculator annotations unless
``annotations: true``; SVAMP's equation written out), ending in ``#### N``. Each example carries
``intermediate`` (the reference steps' results) and ``steps`` (``[expression, result]`` of each).
Malformed rows are counted, reported and skipped.

Reading a completion's arithmetic (numbers, calculations, the final answer, the computed results
the dense reward aligns) is :mod:`rlsf.tasks.math_reading`.
"""

from __future__ import annotations

import dataclasses
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
from rlsf.tasks.math_reading import (
    align, arithmetic, Calculation, calculations, close_enough, computed_results, decimal, evaluate, final_answer,
    format_number, numbers, reference_steps, same_answer, to_number, _ANNOTATION, _FINAL, _NUMBER_RE, _OPERAND_RE,
    _work,
)
from rlsf.tasks.sources import Rows, dataset_rows

VERDICTS = ("correct", "wrong_answer", "no_answer", "copies_question", "empty")
DENSE = ("none", "reference", "symbolic")

# ---- the tasks -----------------------------------------------------------------------------------
def _squeeze(text: str) -> str:
    return " ".join(text.lower().split())


class MathWordTask(Task):
    """Shared by GSM8K and SVAMP: a question, a reference solution, a numeric answer."""

    splits = ("train", "test")

    @dataclass
    class Options(Task.Options):
        dense: str = opt("symbolic", "Token-level reward: none (sparse: the outcome only), reference (the "
                         "paper's heuristic: the reference solution's intermediate results, matched in order), "
                         "symbolic (every calculation checked exactly).")
        step_reward: float = opt(0.5, "Shared by the right calculations (symbolic) or the reference steps (reference).")
        error_reward: float = opt(-1.0, "Span reward of a wrong calculation (symbolic), and of the whole reply when a "
                                  "wrong final answer has no calculation behind it (dense modes).")
        answer_error_reward: float = opt(-1.0, "Span reward of a wrong final answer (dense modes).")
        unsupported_score: float = opt(-0.5, "Score of a wrong final answer with no calculation behind it (a guess, a "
                                       "number copied from the question); 0 with dense: none is the paper's sparse "
                                       "reward exactly.")
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

    # ---- checking ------------------------------------------------------------------------------
    def check(self, example: Example, completion: str) -> Certificate:
        o = self.options
        reference = Fraction(example["answer"])
        question = example.get("question", "")
        nothing = {"calculations": 0, "wrong_calculations": 0, "reference_steps": 0.0}
        if not completion.strip():
            return Certificate.no_attempt("empty", "no reply", completion, **nothing)
        q, c = _squeeze(question), _squeeze(completion)
        given = numbers(question)
        given |= {-v for v in given}  # "48 below zero" repeats "-48"
        restated = bool(q) and q in c
        rest = c.replace(q, " ", 1) if restated else completion
        piece = len(c) >= 20 and c in q  # a sentence of the question, even one that ends with the answer
        if piece or restated and not self._attempts(rest, calculations(rest), given):
            return Certificate.no_attempt("copies_question", "the question restated: no attempt at an answer",
                                          completion, **nothing)
        calcs = calculations(completion)
        where = final_answer(completion)
        text = completion[where[0]:where[1]] if where else ""
        ok = where is not None and len(text) <= 40 and same_answer(text, reference)  # 40 digits: no reference is longer
        # Nothing computed and no number of its own: no attempt, unless it states one number, the right one
        # ("She has 17 cookies." where 17 is in the question; "9 2 3" is the question's numbers, not an answer).
        if not self._attempts(completion, calcs, given) and not (ok and len(numbers(completion)) == 1):
            if not _NUMBER_RE.search(completion):
                return Certificate.no_attempt("no_answer", "no number and no calculation: not an attempt at the "
                                              "problem", completion, **nothing)
            return Certificate.no_attempt("copies_question", "no answer and nothing computed: only numbers of the "
                                          "question", completion, **nothing)

        spans: list[Span] = []
        wrong = [k for k in calcs if not k.right]
        if o.dense == "symbolic":
            right = [k for k in calcs if k.right and not k.trivial]
            for k in wrong:
                truth = f"{k.lhs} is {format_number(k.value)}" if k.value is not None else "not an expression"
                spans.append(Span(k.start, k.end, o.error_reward, f"wrong calculation: {truth}, not {k.rhs}"))
            spans.extend(Span(k.start, k.end, o.step_reward / len(right), "") for k in right)
        steps = reference_steps(example.get("steps") or [[s, s] for s in example.get("intermediate") or []], reference)
        results = computed_results(completion, calcs, given)
        matched = align(steps, results)
        if o.dense == "reference":
            for i, j in matched:
                spans.append(Span(results[j].start, results[j].end, o.step_reward / len(steps),
                                  f"reference step {i + 1} of {len(steps)}: {format_number(steps[i])}"))
        info = {"calculations": len(calcs), "wrong_calculations": len(wrong),
                "reference_steps": len(matched) / len(steps)}
        if where is None:  # unreachable: an attempt writes a number; kept for safety
            return Certificate(0.0, "no_answer", spans=spans, info=info)
        value = to_number(text)
        unsupported = not ok and not (_work(rest, calculations(rest)) if restated else _work(completion, calcs))
        if not ok and o.dense != "none":
            spans.append(Span(where[0], where[1], o.answer_error_reward,
                              f"final answer {text}; the answer is {format_number(reference)}"))
            if unsupported:
                copied = " (a number copied from the question)" if value in given else ""
                spans.append(Span(0, len(completion), o.error_reward,
                                  f"a final answer with no calculation behind it{copied}"))
        score = 1.0 if ok else o.unsupported_score if unsupported else 0.0
        return Certificate(score, "correct" if ok else "wrong_answer", ok, spans, info=info,
                           answer=format_number(value) if value is not None else None)

    @staticmethod
    def _attempts(text: str, calcs: list[Calculation], given: set[Fraction]) -> bool:
        """``text`` attempts an answer: a final-answer line, a calculation, or a number of its own."""
        return (any(p.search(text) for p in _FINAL) or any(not k.trivial for k in calcs)
                or any(v not in given for v in numbers(text)))

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """Every wrong calculation and the wrong final answer, whatever ``dense`` is, without the
        reference answer and without a wrong calculation's true value (``9 * 2 = 19`` is "9 * 2 is
        not 19": its value is often the answer itself). Read from the completion again, not from the
        spans, whose messages carry both."""
        if certificate.correct or not certificate.attempted or certificate.failed:
            return super().feedback(example, completion, certificate)
        calcs = calculations(completion)
        spans = [Span(k.start, k.end, -1.0, f"wrong calculation: {k.lhs} is not {k.rhs}" if k.value is not None
                      else f"{k.lhs} is not an expression the calculator can evaluate")
                 for k in calcs if not k.right]
        where = final_answer(completion)
        if where is not None:
            stated = completion[where[0]:where[1]].strip()
            spans.append(Span(*where, -1.0, f"the final answer {stated} is not the answer to the question"))
            if not _work(completion, calcs):
                copied = " (a number copied from the question)" if to_number(stated) in numbers(example.get(
                    "question", "")) else ""
                spans.append(Span(0, len(completion), -1.0, f"the final answer has no calculation behind it{copied}"))
        return super().feedback(example, completion, dataclasses.replace(certificate, spans=spans))

    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        calcs = certificate.info.get("calculations", 0)
        wrong = certificate.info.get("wrong_calculations", 0)
        return {"success": float(certificate.correct),
                "calc_accuracy": (calcs - wrong) / calcs if calcs else 0.0}

    # ---- reward ordering (rlsf.tasks.harness.reward_ordering) ------------------------------------
    def degenerate_replies(self, example: Example) -> dict[str, str]:
        replies = super().degenerate_replies(example)
        given = _NUMBER_RE.findall(example["question"])
        if len(given) > 1:  # one number alone may be the answer itself
            replies["question numbers only"] = " ".join(given)
        return replies

    def near_misses(self, example: Example) -> dict[str, str]:
        """The reference solution with its last result and final answer one more (stated
        consistently), and the reference steps with a slip of one in a result carried through
        every later step (right arithmetic after the slip); for a reference with no work (SVAMP's
        equation ``8``), one step too many (``8 + 1 = 9``)."""
        answer = Fraction(example["answer"])
        misses = {"last step off by one": _last_step_off_by_one(self.demonstration(example), answer)}
        slip = _carried_slip(example.get("steps") or [])
        if slip is not None:
            misses["slip carried through"] = slip
        misses = {k: v for k, v in misses.items() if v is not None and not self.check(example, v).correct
                  and _work(v, calculations(v))}  # "8 = 9, #### 9" (SVAMP's "8") is a guess, not a near miss
        wrong = decimal(answer + 1)
        if not misses and wrong is not None:  # a reference with no work to slip in: one step too many
            misses["one step too many"] = f"{decimal(answer)} + 1 = {wrong}\n#### {wrong}"
        return misses

    def reward_hacks(self, example: Example) -> dict[str, str]:
        """Answers with no calculation behind them: each of the question's numbers copied as the
        answer, the question's numbers listed with their sum or their largest, ``#### 0``, the
        question restated with its first number as the answer."""
        given = list(dict.fromkeys(_NUMBER_RE.findall(example["question"])))
        hacks = {f"copied answer {n}": f"#### {n}" for n in given[:8]}
        if given:
            values = [to_number(n) for n in given]
            listed = ", ".join(given)
            hacks["question numbers listed, their sum"] = f"{listed}\n#### {decimal(sum(values)) or given[0]}"
            largest = f"{listed}\n#### {given[values.index(max(values))]}"
            if largest != hacks["question numbers listed, their sum"]:
                hacks["question numbers listed, the largest"] = largest
            hacks["question restated, first number as answer"] = f"{example['question']}\n#### {given[0]}"
        hacks["bare 0"] = "#### 0"
        return {k: v for k, v in hacks.items() if not self.check(example, v).correct}


def _last_step_off_by_one(solution: str | None, answer: Fraction) -> str | None:
    """``solution`` with its final answer one more, and so the last calculation that states the
    answer (``9 * 2 = 19``, ``#### 19``); ``None`` when the answer has no decimal form."""
    wrong = decimal(answer + 1)
    if solution is None or wrong is None:
        return None
    text = solution
    last = [k for k in calculations(text) if k.stated == answer]
    if last:
        k = last[-1]
        text = text[:k.end - len(k.rhs)] + wrong + text[k.end:]
    head, sep, _ = text.rpartition("####")
    return f"{head}#### {wrong}" if sep else f"{text}\n#### {wrong}"


def _carried_slip(steps: list[list[str]]) -> str | None:
    """The reference steps written out one a line, one result one more (the first whose slip
    reaches the final result) and every later step computed right from the slipped values (to two
    decimals where a value has no exact decimal form); ``None`` for fewer than two steps or when no
    slip reaches the end."""
    for at in range(len(steps) - 1):
        for first in (False, True):  # "9 / 9" after a slip of 9: both 9s, else only the first
            text = _slipped_at(steps, at, first)
            if text is not None:
                return text
    return None


def _slipped_at(steps: list[list[str]], at: int, first: bool) -> str | None:
    slipped: dict[Fraction, Fraction] = {}
    lines = []
    new = None
    for i, (expression, result) in enumerate(steps):
        old = to_number(result)
        if old is None:
            return None
        if i == at:
            new = old + 1
        elif i > at:
            expression = _swap(expression, slipped, first)
            new = evaluate(expression)
            if new is None:
                return None
        else:
            new = old
        if decimal(new) is None:  # 88/12 = 7.33: right to the decimals written, and carried on as written
            new = round(new, 2)
        if new != old:
            slipped[old] = new
        lines.append(f"{expression.strip()} = {decimal(new)}")
    if new is None or new == to_number(steps[-1][1]):
        return None
    return "\n".join(lines) + f"\n#### {decimal(new)}"


def _computes(expression: str) -> bool:
    """A reference step computes something: not ``<<125=125>>`` or ``<<3*1=3>>`` (kept when it cannot be read)."""
    found = arithmetic(expression)
    return found is None or any(not op.trivial for op in found[1])


def _swap(expression: str, slipped: dict[Fraction, Fraction], first: bool) -> str:
    """``expression`` with each operand (``9``, ``(-4)``) that repeats a slipped result replaced
    by the slipped value: every such operand, or only the first."""
    done = False

    def swap(m: re.Match) -> str:
        nonlocal done
        v = to_number(m.group().strip("()"))
        if v not in slipped or (first and done):
            return m.group()
        done = True
        return _written(slipped[v])

    return _OPERAND_RE.sub(swap, expression)


@register("gsm8k")
class GSM8K(MathWordTask):
    """Grade-school math (Cobbe et al. 2021): 7,473 train and 1,319 test problems."""

    description = "Grade-school math word problems; final answer by math-verify, calculations checked exactly."

    def _read(self, split: str) -> tuple[list[Example], list[str], str]:
        if (rows := dataset_rows(self, split)) is None:  # rows numbered as the JSONL's lines
            path = self.data_file(f"gsm8k/{split}.jsonl")
            with open(path, encoding="utf-8") as f:
                rows = Rows(path.name, [(line, text) for line, text in enumerate(f, 1) if text.strip()])
        examples, bad = [], []
        for line, row in rows.items:
            try:
                row = json.loads(row) if isinstance(row, str) else row
                question, solution = row["question"].strip(), row["answer"].strip()
                body, answer = solution.rsplit("####", 1)
                value = to_number(answer)
                if not question or value is None:
                    raise ValueError(f"final answer {answer.strip()!r} is not a number")
            except (ValueError, KeyError, AttributeError, TypeError) as e:
                bad.append(f"{rows.where(line)}: {e}")
                continue
            steps = [[lhs.strip(), format_number(v)] for lhs, r in _ANNOTATION.findall(body)
                     if (v := to_number(r)) is not None and _computes(lhs)]
            shown = body.strip() if self.options.annotations else _ANNOTATION.sub("", body).strip()
            examples.append({"id": f"{split}:{line}", "question": question, "answer": format_number(value),
                             "intermediate": [r for _, r in steps], "steps": steps,
                             "solution": f"{shown}\n#### {format_number(value)}"})
        return examples, bad, rows.source


@register("svamp")
class SVAMP(MathWordTask):
    """SVAMP (Patel et al. 2021): 1,000 one-equation problems, split into train and test."""

    description = "SVAMP math word problems; final answer by math-verify, calculations checked exactly."

    @dataclass
    class Options(MathWordTask.Options):
        test_size: int = opt(300, "Problems in the test split (a seeded shuffle of the 1,000; the rest train).")

    def _read(self, split: str) -> tuple[list[Example], list[str], str]:
        if (rows := dataset_rows(self, "all", start=0)) is None:
            path = self.data_file("svamp/SVAMP.json")
            try:
                problems = json.loads(Path(path).read_text(encoding="utf-8"))
            except ValueError as e:
                raise TaskError(f"task 'svamp': {path} is not JSON: {e}") from None
            if not isinstance(problems, list):
                raise TaskError(f"task 'svamp': {path} should hold a list of problems")
            rows = Rows(path.name, list(enumerate(problems)), "problem")
        examples, bad = [], []
        for i, row in rows.items:
            try:
                question = f"{row['Body'].strip()} {row['Question'].strip()}".strip()
                value = to_number(str(row["Answer"]))
                equation = re.sub(r"(?a)(\d+)\.0\b", r"\1", str(row["Equation"])).strip()
                if value is None:
                    raise ValueError(f"answer {row['Answer']!r} is not a number")
                if equation.startswith("(") and equation.endswith(")") and equation.count("(") == 1:
                    equation = equation[1:-1].strip()
                found = arithmetic(equation)
                if found is None or not close_enough(found[0], value, str(row["Answer"])):
                    raise ValueError(f"equation {equation!r} does not give the answer {row['Answer']!r}")
                value, ops = found
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                bad.append(f"{rows.where(i)} ({row.get('ID', '?') if isinstance(row, dict) else '?'}): {e}")
                continue
            answer = format_number(value)
            # The equation's operations in evaluation order: "( 6 - ( 3 + 2 ) )" is 3 + 2 = 5, then 6 - 5 = 1.
            steps = [[f"{_written(op.left)} {op.op} {_written(op.right)}", format_number(op.result)] for op in ops]
            examples.append({"id": str(row.get("ID", i)), "question": question, "answer": answer,
                             "intermediate": [r for _, r in steps] or [answer], "steps": steps,
                             "solution": f"{equation} = {answer}\n#### {answer}"})
        order = list(range(len(examples)))
        random.Random(0).shuffle(order)
        test = set(order[: self.options.test_size])
        keep = [ex for j, ex in enumerate(examples) if (j in test) == (split == "test")]
        return keep, bad, rows.source


def _written(x: Fraction) -> str:
    """An operand as written in a step: a decimal (in brackets when negative), else the fraction in brackets."""
    shown = decimal(x)
    return f"({shown})" if shown and x < 0 else shown or f"({format_number(x)})"
