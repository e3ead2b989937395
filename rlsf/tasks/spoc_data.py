"""SPoC data: programs from line-per-row TSVs, test cases, and how outputs are compared.

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
from dataclasses import dataclass, field
from pathlib import Path

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
    """Programs of a SPoC-format TSV, in file order. A malformed row (wrong number of fields, a
    non-integer ``line`` or ``indent``, a line number that does not continue its program) is
    reported in the :class:`TsvReport` and its program is dropped whole, not silently."""
    report = TsvReport(Path(path))
    programs: list[Program] = []
    seen: dict[str, int] = {}
    current: Program | None = None
    broken = False

    def close() -> None:
        if current is not None and not broken and current.lines:
            programs.append(current)

    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path}: expected the SPoC header {' '.join(COLUMNS)!r}, got {header!r}")
        for n, row in enumerate(reader, start=2):
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
