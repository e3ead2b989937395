"""SPoC data and source text: programs from line-per-row TSVs, test cases, how outputs are compared,
and what the checker reads in a completion (the code block, its lines, g++'s diagnostics, line
directives), and the feedback turn of a self-repair episode (:func:`feedback_turn`).

SPoC (Kulal et al. 2019) pairs C++ programs from Codeforces with crowd-written pseudo-code, one
TSV row per source line: ``text code workerid probid subid line indent``. A program starts where
``line`` resets to 0 (the same submission can be annotated by several workers, so
``(probid, subid)`` is not unique); ``text`` is empty for lines nobody annotated (``int main() {``,
``}``, ``return 0;``), where SPoC's convention is to show the gold code instead. Programs carry no
``#include``: SPoC compiles them after a fixed preamble (:data:`PREAMBLE`).

Test cases live in ``testcases/PROBID/PROBID_testcases_{public,hidden}.txt``: cases separated by
``###ENDINPUT###`` (end of a case's input) and ``###ENDOUTPUT###`` (end of its expected output).
Outputs are compared as SPoC does: as whitespace-separated tokens (:func:`outputs_match`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rlsf.feedback.certificate import Certificate

PREAMBLE = "#include <bits/stdc++.h>\nusing namespace std;\n"
COLUMNS = ("text", "code", "workerid", "probid", "subid", "line", "indent")


@dataclass
class Program:
    """One annotated program: its lines as ``(pseudo-code text, gold code, indent)``."""

    id: str
    probid: str
    subid: str
    workerid: str
    lines: list[tuple[str, str, int]] = field(default_factory=list)

    def code(self) -> str:
        """The gold program body (indented two spaces a level), without the preamble."""
        return "\n".join("  " * indent + code for _, code, indent in self.lines) + "\n"

    def pseudocode(self) -> list[str]:
        """The pseudo-code, one entry per line (the gold code where nobody annotated it), indented."""
        return ["  " * indent + (text if text.strip() else code) for text, code, indent in self.lines]


@dataclass
class TsvReport:
    """What reading a TSV found besides the programs: rows it could not use, and why."""

    path: Path
    rows: int = 0
    bad_rows: list[str] = field(default_factory=list)  # "line N: reason"


def read_programs(path: Path) -> tuple[list[Program], TsvReport]:
    """Programs of a SPoC-format TSV, in file order (:func:`programs_from_rows`)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path}: expected the SPoC header {' '.join(COLUMNS)!r}, got {header!r}")
        return programs_from_rows(enumerate(reader, start=2), TsvReport(Path(path)))


def programs_from_rows(rows: Iterable[tuple[int, list[str]]], report: TsvReport) -> tuple[list[Program], TsvReport]:
    """Programs of numbered rows in :data:`COLUMNS` order. A malformed row (wrong number of
    fields, a non-integer ``line`` or ``indent``, a line number that does not continue its
    program) is reported in the :class:`TsvReport` by its number, and its program is dropped
    whole, not silently."""
    programs: list[Program] = []
    seen: dict[str, int] = {}
    current: Program | None = None
    broken = False

    def close() -> None:
        if current is not None and not broken and current.lines:
            programs.append(current)

    for n, row in rows:
        report.rows += 1
        if len(row) != len(COLUMNS):
            report.bad_rows.append(f"line {n}: {len(row)} fields, expected {len(COLUMNS)}")
            broken = True
            continue
        text, code, workerid, probid, subid, line, indent = row
        try:
            line_no, level = int(line), int(indent)
        except ValueError:
            report.bad_rows.append(f"line {n}: line {line!r} / indent {indent!r} are not integers")
            broken = True
            continue
        if line_no == 0:  # a new program starts
            close()
            base = f"{probid}-{subid}-{workerid}"
            seen[base] = seen.get(base, 0) + 1
            pid = base if seen[base] == 1 else f"{base}-{seen[base]}"
            current, broken = Program(pid, probid, subid, workerid), False
        elif current is None or line_no != len(current.lines) or probid != current.probid:
            report.bad_rows.append(f"line {n}: line number {line_no} does not continue the program before it")
            broken = True
            continue
        current.lines.append((text, code, max(level, 0)))
    close()
    return programs, report


def parse_testcases(text: str) -> list[tuple[str, str]]:
    """``[(input, expected output), ...]`` of a SPoC test-case file."""
    cases = []
    for chunk in text.split("###ENDOUTPUT###"):
        if "###ENDINPUT###" not in chunk:
            continue
        inp, out = chunk.split("###ENDINPUT###", 1)
        cases.append((inp.lstrip("\n"), out.lstrip("\n")))
    return cases


def outputs_match(got: str, want: str) -> bool:
    """SPoC's comparison: equal as sequences of whitespace-separated tokens (so trailing spaces,
    blank lines and line breaks versus spaces do not matter; case and every other character do)."""
    return got.split() == want.split()


# ---- source text: the code block, its lines, g++'s diagnostics ---------------------------------

_DIAG = re.compile(r"^prog\.cpp:(\d+):(\d+):\s+(fatal error|error|warning):\s*(.*)$")
_REQUIRED = re.compile(r"^prog\.cpp:(\d+):(\d+):\s+required from")
_FENCE = re.compile(r"^[ \t]*```[^\n]*\n", re.MULTILINE)


def extract_code(completion: str) -> tuple[int, str]:
    """``(offset, code)``: the first fenced block's content (where it starts in the completion),
    else the whole completion."""
    m = _FENCE.search(completion)
    if m is None:
        return 0, completion
    start = m.end()
    end = completion.find("```", start)
    return start, completion[start:end if end >= 0 else len(completion)]


#: What C++ has and prose or pseudo-code lacks.
_CODE_MARK = re.compile(r"[;{}]|#\s*include")


def _lines(text: str) -> list[str]:
    """Non-blank lines, blanks collapsed, a leading line number (``12:``, as the prompt shows them) dropped."""
    return [" ".join(re.sub(r"^\s*[0-9]+\s*:", "", line).split()) for line in text.split("\n") if line.strip()]


def line_spans(code: str, offset: int) -> list[tuple[int, int]]:
    """``[start, end)`` in the completion of each line of ``code`` (without its newline)."""
    out, pos = [], 0
    for piece in code.split("\n"):
        out.append((offset + pos, offset + pos + len(piece)))
        pos += len(piece) + 1
    return out


@dataclass
class Diagnostic:
    line: int  # 1-based line of the program body (the preamble excluded)
    severity: str  # "error" or "warning"
    message: str


def parse_diagnostics(stderr: str, preamble_lines: int) -> list[Diagnostic]:
    """g++'s errors and warnings, each on the line of the program body it belongs to.

    An error inside a library header is put on the last line of ours that the instantiation was
    ``required from`` (the line that caused it); one with no such line is put on line 0 (no line).
    """
    out: list[Diagnostic] = []
    ours: int | None = None
    for raw in stderr.splitlines():
        m = _DIAG.match(raw)
        if m:
            line = int(m.group(1)) - preamble_lines
            kind = "error" if "error" in m.group(3) else "warning"
            out.append(Diagnostic(line, kind, m.group(4).strip()))
            ours = None
            continue
        r = _REQUIRED.match(raw)
        if r:
            ours = int(r.group(1)) - preamble_lines
            continue
        if ": error:" in raw and not raw.startswith("prog.cpp"):  # an error inside a header
            message = raw.split(": error:", 1)[1].strip()
            out.append(Diagnostic(ours if ours is not None else 0, "error", message))
    return out


# ---- line directives: a program may not move g++'s messages -------------------------------------

_SPLICE = re.compile(r"\\[ \t\r\f\v]*\n")  # backslash-newline (g++ also takes spaces between them)
_RAW = re.compile(r'(?:u8|[uUL])?R"([^()\\ \t\n]{0,16})\(')
_DIRECTIVE = re.compile(r"[ \t\f\v\r]*(?:#|%:)[ \t\f\v\r]*(?:line\b|[0-9])")


def line_directives(code: str) -> list[tuple[int, int]]:
    """The ``#line`` and GNU linemarker (``# 12 "file"``) directives of ``code``, as ``(first, last)``
    physical lines (1-based) of each. Read as the preprocessor reads them: lines joined by a
    backslash at their end, each comment a space (across lines too), ``%:`` as ``#``; nothing
    inside a string, character or raw-string literal. Such a directive moves g++'s messages off
    the lines they belong to (so that broken lines would keep their credit)."""
    found: list[tuple[int, int]] = []
    i, n, line, first = 0, len(code), 1, 1
    logical: list[str] = []  # the logical line so far: comments as " ", literals as their quote
    while i < n:
        splice = _SPLICE.match(code, i)
        if splice:
            i, line = splice.end(), line + 1
            continue
        c = code[i]
        if c == "\n":
            if _DIRECTIVE.match("".join(logical)):
                found.append((first, line))
            i, line, first, logical = i + 1, line + 1, line + 1, []
            continue
        if code.startswith("//", i):
            i, line = _skip_line_comment(code, i, line)
            logical.append(" ")
            continue
        if code.startswith("/*", i):
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
            i, line = j, line + code.count("\n", i, j)
            logical.append(" ")
            continue
        raw = _RAW.match(code, i)
        if raw and not (i and (code[i - 1].isalnum() or code[i - 1] == "_")):
            close = ")" + raw.group(1) + '"'
            j = code.find(close, raw.end())
            j = n if j < 0 else j + len(close)
            i, line = j, line + code.count("\n", i, j)
            logical.append('"')
            continue
        if c in "\"'":
            i, line = _skip_literal(code, i, line)
        else:
            i += 1
        logical.append(c)
    if _DIRECTIVE.match("".join(logical)):
        found.append((first, line))
    return found


def _skip_line_comment(code: str, i: int, line: int) -> tuple[int, int]:
    """Past a ``//`` comment (a backslash at its end continues it on the next line)."""
    while i < len(code) and code[i] != "\n":
        splice = _SPLICE.match(code, i)
        if splice:
            i, line = splice.end(), line + 1
        else:
            i += 1
    return i, line


def _skip_literal(code: str, i: int, line: int) -> tuple[int, int]:
    """Past a string or character literal opened at ``i`` (an unterminated one ends its line)."""
    quote, j = code[i], i + 1
    while j < len(code) and code[j] not in (quote, "\n"):
        splice = _SPLICE.match(code, j)
        if splice:
            j, line = splice.end(), line + 1
        else:
            j += 2 if code[j] == "\\" else 1
    return (j + 1 if j < len(code) and code[j] == quote else j), line


def blank_lines(code: str, ranges: list[tuple[int, int]]) -> str:
    """``code`` with the physical lines of ``ranges`` (1-based, inclusive) emptied; lines keep their numbers."""
    drop = {ln for a, b in ranges for ln in range(a, b + 1)}
    return "\n".join("" if k in drop else text for k, text in enumerate(code.split("\n"), 1))


# ---- the feedback turn: what g++ and the tests said, as a programmer reads it ---------------------

#: Characters of a test's input, expected output or the program's output a feedback turn shows.
SHOWN_CHARS = 600
#: Lines with diagnostics listed in one feedback turn.
SHOWN_LINES = 6


def _block(text: str) -> str:
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n... (cut)"
    return "```\n" + (text.rstrip("\n") or "(nothing)") + "\n```"


def feedback_turn(completion: str, certificate: Certificate, test: tuple[str, str] | None = None) -> str:
    """The next user turn after a SPoC program that is not correct: g++'s errors, each with the
    line of the program it is on and that line's text; else the test it fails -- with ``test``
    (``(input, expected output)`` of a *public* test, which the caller looks up from
    ``info["failed_test"]``) its input, the expected output and the program's
    (``info["failed_output"]``); and a program too short for its pseudo-code."""
    offset, code = extract_code(completion)
    lines = code.split("\n")
    errors = sorted((s for s in certificate.spans if s.reward < 0), key=lambda s: s.start)
    diagnostics = [s for s in errors if s.message.startswith(("error:", "warning:"))]  # g++'s, one span a line
    out = []
    if diagnostics:
        out.append("Your program does not compile. g++ says:" if certificate.verdict == "compile_error"
                   else "g++ warns:")
        for s in diagnostics[:SHOWN_LINES]:
            n = code.count("\n", 0, max(s.start - offset, 0)) + 1
            out.append(f"line {n}: {s.message}")
            if 0 < n <= len(lines) and lines[n - 1].strip():
                out.append(f"   {n} | {lines[n - 1].strip()}")
            if n > 1 and re.match(r"error: expected .+ before ", s.message):  # g++ notices a missing token late
                out.append(f"   (what is missing may belong at the end of line {n - 1})")
        if len(diagnostics) > SHOWN_LINES:
            out.append(f"... and {len(diagnostics) - SHOWN_LINES} more lines with errors")
    info = certificate.info
    failure = info.get("failure")
    if certificate.verdict != "compile_error" and isinstance(failure, str):
        failure = re.sub(r"signal ([0-9]+)$", lambda m: f"signal {m[1]}{_signal_name(int(m[1]))}", failure)
        tests = f" ({info.get('passed', 0)} of {info['tests']} tests pass)" if info.get("tests") else ""
        public = "public " if test is not None else ""
        out.append(f"Your program compiles, but it fails {public}{failure}{tests}.")
        if test is not None:
            out += ["Input:", _block(test[0]), "Expected output:", _block(test[1])]
            got = info.get("failed_output")
            if isinstance(got, str) and (got.strip() or certificate.verdict == "wrong_answer"):
                out += ["Your program's output:", _block(got)]
    elif certificate.verdict != "compile_error" and not diagnostics:
        out.append(f"Your program is not correct ({certificate.verdict}).")
    for s in errors:
        if s not in diagnostics and s.message:
            out.append(f"Also: {s.message} (write one line of code per line of pseudo-code).")
    out.append("Fix the program and write all of it again, one line of code per line of pseudo-code (the code only).")
    return "\n".join(out)


def _signal_name(number: int) -> str:
    import signal

    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""
