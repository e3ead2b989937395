"""Write a small Python function: an external tool (``python3``) run on model code through the
project's sandbox, with spans on the lines that fail.

Model-written code is hostile: it runs only inside :class:`rlsf.sandbox.Sandbox` (bubblewrap,
no network, a private file system, CPU, memory, process and output limits), never in the checker's
process. The sandbox gets the reply's code and the test inputs, *not* the expected outputs: a
small runner prints ``repr`` of each result and the checker compares them outside, so code that
prints fake results gains nothing. Spans: a syntax error or an exception on the line it names, a
wrong result on the function's ``return`` lines, a time-out or memory blow-up on the whole code.
A reply with no ``def`` makes no attempt. A failure of the sandbox itself is a *checker failed*
certificate, never the model's fault. The data is inline: no download.

Needs a sandbox that runs here (``python -m rlsf.sandbox --self-test``). Run from the repository root::

    printf 'def add(a, b):\\n    return a + b\\n' > /tmp/answer.txt
    rlsf check --task examples/python_function.py:PythonFunction --example add --completion /tmp/answer.txt
    rlsf train --task examples/python_function.py:PythonFunction --steps 10 --output-dir runs/python_function
    python examples/python_function.py      # prints the certificates of a few replies
"""

from __future__ import annotations

import json
import re

from rlsf.feedback import Certificate, Span
from rlsf.sandbox import Limits, Sandbox
from rlsf.tasks import function_task

ROWS = [
    {"id": "add", "name": "add", "args": "a, b", "what": "returns the sum of a and b",
     "tests": [[[1, 2], 3], [[-4, 4], 0], [[10, 5], 15]], "solution": "def add(a, b):\n    return a + b"},
    {"id": "squares", "name": "sum_squares", "args": "xs", "what": "returns the sum of the squares of the list xs",
     "tests": [[[[1, 2, 3]], 14], [[[]], 0], [[[-2]], 4]],
     "solution": "def sum_squares(xs):\n    return sum(x * x for x in xs)"},
    {"id": "reverse", "name": "reverse_words", "args": "s", "what": "returns s with its words in reverse order",
     "tests": [[["a b c"], "c b a"], [["hello"], "hello"], [["one two"], "two one"]],
     "solution": "def reverse_words(s):\n    return ' '.join(reversed(s.split()))"},
    {"id": "evens", "name": "evens", "args": "xs", "what": "returns the even numbers of the list xs, in order",
     "tests": [[[[1, 2, 3, 4]], [2, 4]], [[[5]], []], [[[0, -2]], [0, -2]]],
     "solution": "def evens(xs):\n    return [x for x in xs if x % 2 == 0]"},
    {"id": "maxim", "name": "largest", "args": "xs", "what": "returns the largest number of the non-empty list xs",
     "tests": [[[[3, 9, 2]], 9], [[[-5, -1]], -1], [[[7]], 7]],
     "solution": "def largest(xs):\n    return max(xs)"},
    {"id": "vowels", "name": "count_vowels", "args": "s", "what": "returns how many of the letters of s are vowels "
     "(aeiou, either case)", "tests": [[["Banana"], 3], [["xyz"], 0], [["AEIOU"], 5]],
     "solution": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)"},
]

PROMPT = "Write a Python function {name}({args}) that {what}. Reply with the code only."

#: Runs inside the sandbox: defines the reply's code, calls the function on each input, prints one JSON line.
RUNNER = r'''
import ast, json, sys, traceback

def line_of(e):
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "solution.py"]
    return lines[-1] if lines else None

src = open("solution.py", encoding="utf-8").read()
try:
    tree = ast.parse(src, "solution.py")
except (SyntaxError, ValueError) as e:
    print("\nRESULT " + json.dumps({"syntax": [getattr(e, "lineno", None) or 1, str(getattr(e, "msg", e))]}))
    sys.exit(0)
returns = sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.Return)})
space = {}
try:
    exec(compile(tree, "solution.py", "exec"), space)
except BaseException as e:
    print("\nRESULT " + json.dumps({"load": [line_of(e), f"{type(e).__name__}: {e}"[:200]]}))
    sys.exit(0)
f = space.get(sys.argv[1])
if not callable(f):
    print("\nRESULT " + json.dumps({"missing": sys.argv[1]}))
    sys.exit(0)
results = []
for args in json.load(open("inputs.json")):
    try:
        results.append({"repr": repr(f(*args))[:200]})
    except BaseException as e:
        results.append({"error": f"{type(e).__name__}: {e}"[:200], "line": line_of(e)})
print("\nRESULT " + json.dumps({"results": results, "returns": returns}))
'''

LIMITS = Limits(cpu_s=2.0, wall_s=5.0, memory_mb=256, processes=4, output_bytes=64 * 1024, file_bytes=64 * 1024)
_SANDBOX: list[Sandbox] = []  # one per process, made on the first check


def sandbox() -> Sandbox:
    if not _SANDBOX:
        _SANDBOX.append(Sandbox())  # raises SandboxUnavailable (a checker failure) where none can run
    return _SANDBOX[0]


def _code(completion: str) -> tuple[str, int]:
    """The code of the reply (inside a ``` fence when there is one) and where it starts."""
    fence = re.search(r"```[A-Za-z0-9_+-]*\n(.*?)(?:```|\Z)", completion, re.DOTALL)
    return (fence[1], fence.start(1)) if fence else (completion, 0)


def _line(completion: str, offset: int, code: str, number: int | None) -> tuple[int, int]:
    """``[start, end)`` of line ``number`` (from 1) of the code, in the completion; the whole code if unknown."""
    lines = code.split("\n")
    if number is None or not 1 <= number <= len(lines):
        return offset, offset + len(code)
    line = lines[number - 1]
    start = offset + sum(len(line) + 1 for line in lines[:number - 1]) + len(line) - len(line.lstrip())
    return start, start + len(line.strip())


def check(row: dict, completion: str) -> Certificate:
    code, offset = _code(completion)
    if "def " not in code:  # prose, a refusal, an expression: no attempt at a function
        return Certificate.no_attempt("no_function", "no function definition", completion)
    inputs = [args for args, _ in row["tests"]]
    run = sandbox().run(["python3", "-I", "-S", "runner.py", row["name"]], limits=LIMITS,
                        files={"runner.py": RUNNER, "solution.py": code, "inputs.json": json.dumps(inputs)})
    if run.sandbox_failed:
        return Certificate.checker_failed(f"sandbox: {run.reason}")
    whole = (offset, offset + len(code))
    found = [line for line in run.text().splitlines() if line.startswith("RESULT ")]
    if not found:  # killed by a limit, or exited before the runner could report
        return Certificate(0.0, run.verdict.value, False, [Span(*whole, -1.0, f"the code did not finish: "
                                                                               f"{run.verdict.value}")])
    try:
        result = json.loads(found[-1][len("RESULT "):])
    except ValueError:
        return Certificate(0.0, "bad_output", False, [Span(*whole, -1.0, "the code garbled the runner's output")])
    if "syntax" in result or "load" in result:
        number, message = result.get("syntax") or result["load"]
        verdict = "syntax_error" if "syntax" in result else "load_error"
        return Certificate(0.0, verdict, False, [Span(*_line(completion, offset, code, number), -1.0, message)])
    if "missing" in result:
        return Certificate(0.0, "missing_function", False, [Span(*whole, -1.0, f"no function {row['name']}")])
    tests, results = row["tests"], result.get("results", [])
    spans, passed = [], 0
    for (args, want), got in zip(tests, results + [{}] * (len(tests) - len(results))):
        call = f"{row['name']}({', '.join(map(repr, args))})"
        if got.get("repr") == repr(want):
            passed += 1
        elif "error" in got:
            spans.append(Span(*_line(completion, offset, code, got.get("line")), -1.0 / len(tests),
                              f"{call} raised {got['error']}"))
        else:
            lines = result.get("returns") or [None]
            for number in lines:
                spans.append(Span(*_line(completion, offset, code, number), -1.0 / len(tests) / len(lines),
                                  f"{call} returned {got.get('repr')}, expected {want!r}"))
    ok = passed == len(tests)
    return Certificate(passed / len(tests), "correct" if ok else "wrong_results", ok, spans,
                       info={"tests_passed": passed})


PythonFunction = function_task("python_function", check, data=ROWS, prompt=PROMPT, demonstration="solution",
                               test_size=2, description="Write a small Python function; tests run in the sandbox.")


if __name__ == "__main__":
    task = PythonFunction()
    example = task.example("squares")
    for reply in ["def sum_squares(xs):\n    return sum(x * x for x in xs)",
                  "def sum_squares(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total",
                  "def sum_squares(xs):\n    return xs[0] ** 2 + sum(x * x for x in xs[1:])",
                  "def sum_squares(xs)\n    return 0", "def sum_squares(xs):\n    while True: pass",
                  "I'd rather not."]:
        print(repr(reply))
        print(task.check(example, reply).explain(reply), end="\n\n")
