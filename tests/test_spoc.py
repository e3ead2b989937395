"""SPoC: data, test cases, diagnostics, and the checker on real g++ inside the real sandbox."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from rlsf.tasks import TaskError, get_task
from rlsf.tasks.spoc import extract_code, line_spans, parse_diagnostics
from rlsf.tasks.spoc_data import outputs_match, parse_testcases, read_programs

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

HEADER = "text\tcode\tworkerid\tprobid\tsubid\tline\tindent\n"


@pytest.fixture(scope="module")
def spoc(shared_data):
    task = get_task("spoc", data_dir=str(shared_data))
    with task:  # one sandbox and precompiled header for the module
        yield task


@pytest.fixture(scope="module")
def example(spoc):
    return spoc.example("20A-47849152-54")  # collapse repeated '/' in a path


# ---- data ------------------------------------------------------------------------------------------

def test_programs_of_the_test_split(spoc, example):
    test = spoc.load("test")
    assert len(test) == 1815 and spoc.skipped["test"] == 0  # every testp problem has test cases
    assert len({ex["probid"] for ex in test[:50]}) > 20  # shuffled: the first examples span many problems
    assert example["id"] == "20A-47849152-54" and example["code"].startswith("string s;\n")
    assert example["pseudocode"][3] == "int main() {"  # unannotated line: the gold code stands in
    assert spoc.example(example["id"])["code"] == example["code"]
    with pytest.raises(TaskError, match="no example with id"):
        spoc.example("nope")


def test_malformed_rows_and_programs_without_tests_are_reported(tmp_path, capsys):
    rows = [
        "read n\tcin >> n;\t1\t1A\t7\t0\t0",
        "print n\tcout << n;\t1\t1A\t7\t1\t0",
        "x\ty;\t1\t1A\t8\t0\t0",
        "z\tw;\t1\t1A\t8\t5\t0",  # line 5 does not continue line 0: the program is dropped
        "only\tthree\tfields",
        "a\tb;\t1\t999Z\t9\t0\t0",  # a problem without test cases: skipped and counted
    ]
    (tmp_path / "spoc" / "testcases" / "1A").mkdir(parents=True)
    (tmp_path / "spoc" / "testcases" / "1A" / "1A_testcases_public.txt").write_text("1\n###ENDINPUT###\n1\n###ENDOUTPUT###\n")
    (tmp_path / "spoc" / "mine.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    programs, report = read_programs(tmp_path / "spoc" / "mine.tsv")
    assert [p.id for p in programs] == ["1A-7-1", "999Z-9-1"]
    assert len(report.bad_rows) == 2 and "line 5" in report.bad_rows[0] and "3 fields" in report.bad_rows[1]
    task = get_task("spoc", data_dir=str(tmp_path), test_tsv="mine.tsv", shuffle=False)
    examples = task.load("test")
    err = capsys.readouterr().err
    assert [e["id"] for e in examples] == ["1A-7-1"] and task.skipped["test"] == 1
    assert "2 malformed rows" in err and "1 test programs have no test cases; skipped" in err
    (tmp_path / "bad.tsv").write_text("not a spoc header\n")
    with pytest.raises(TaskError, match="SPoC header"):
        get_task("spoc", data_dir=str(tmp_path), test_tsv=str(tmp_path / "bad.tsv")).load("test")


def test_testcases_and_output_comparison():
    text = "3\nXS\n###ENDINPUT###\n2\n###ENDOUTPUT###\n1\n###ENDINPUT###\n0\n###ENDOUTPUT###\n"
    assert parse_testcases(text) == [("3\nXS\n", "2\n"), ("1\n", "0\n")]
    assert outputs_match("1 2\n3  \n\n", "1\n2 3")  # tokens, as SPoC compares
    assert not outputs_match("1 2 3 4", "1 2 3") and not outputs_match("Yes", "YES")


def test_code_extraction_and_line_spans():
    completion = "Sure:\n```cpp\nint a;\nint main() {}\n```\nBye"
    offset, code = extract_code(completion)
    assert code == "int a;\nint main() {}\n" and completion[offset:offset + 6] == "int a;"
    spans = line_spans(code, offset)
    assert [completion[a:b] for a, b in spans] == ["int a;", "int main() {}", ""]
    assert extract_code("int x;") == (0, "int x;")


def test_diagnostics_are_put_on_our_lines():
    stderr = textwrap.dedent("""\
        prog.cpp: In function 'int main()':
        prog.cpp:5:13: error: expected ';' before 'return'
        prog.cpp:6:3: warning: unused variable 'x' [-Wunused-variable]
        In file included from /usr/include/c++/12/algorithm:61,
        prog.cpp:9:7:   required from here
        /usr/include/c++/12/bits/stl_algo.h:1950:22: error: no match for 'operator-'
        """)
    diags = parse_diagnostics(stderr, preamble_lines=2)
    assert [(d.line, d.severity) for d in diags] == [(3, "error"), (4, "warning"), (7, "error")]
    assert "no match for 'operator-'" in diags[2].message


# ---- the checker: real g++, real sandbox -----------------------------------------------------------

def test_gold_program_is_correct_on_public_and_hidden_tests(spoc, example):
    cert = spoc.check(example, example["code"])
    assert cert.correct and cert.verdict == "correct" and cert.score == 1.0
    assert cert.info["compiles"] == 1.0 and cert.info["tests"] == 5
    hidden = spoc.judge(example, example["code"])
    assert hidden.correct and hidden.info["tests"] == 14  # evaluation runs the hidden tests
    # Clean lines share clean_reward; nothing is flagged.
    assert not cert.errors() and sum(s.reward for s in cert.spans) == pytest.approx(0.5, abs=0.05)
    assert spoc.metrics(example, hidden) == {"success": 1.0, "compiles": 1.0, "score": 1.0}


def test_compile_errors_flag_their_lines_with_the_compilers_words(spoc, example):
    broken = example["code"].replace("cin >> s;", "cin >> s").replace("cout << '\\n';", "cout << undeclared;")
    completion = "```cpp\n" + broken + "```"
    cert = spoc.check(example, completion)
    assert cert.verdict == "compile_error" and not cert.correct and cert.score == 0.0
    flagged = {completion[s.start:s.end].strip(): s.message for s in cert.errors()}
    assert "cin >> s" in flagged and "expected" in flagged["cin >> s"]
    assert "cout << undeclared;" in flagged and "undeclared" in flagged["cout << undeclared;"]
    lines = max(len(example["pseudocode"]), len(broken.split("\n")))  # each flagged line: its share of error_reward
    assert all(s.reward == pytest.approx(-1.0 / lines) for s in cert.errors())
    assert all(0 <= s.start <= s.end <= len(completion) for s in cert.spans)


@pytest.mark.parametrize("code, verdict, fragment", [
    ("int main() { cout << 42; }", "wrong_answer", "wrong output"),
    ("int main() { int *p = 0; *p = 1; return 0; }", "runtime_error", "SIGSEGV"),
    ("int main() { return 3; }", "runtime_error", "exit code 3"),
    ("int main() { while (true) {} }", "timeout", "time limit"),
])
def test_run_time_verdicts(spoc, example, code, verdict, fragment):
    cert = spoc.check(example, code)
    assert cert.verdict == verdict and fragment in cert.info["failure"] and cert.info["compiles"] == 1.0
    assert not cert.correct and not cert.failed


def test_hostile_includes_and_empty_answers(spoc, example):
    cert = spoc.check(example, '#include "/etc/shadow"\nint main() {}')
    assert cert.verdict == "compile_error" and "No such file" in cert.errors()[0].message  # hidden by the sandbox
    assert spoc.check(example, "  \n").verdict == "empty"
    for prose in ("I cannot do this.", "\n".join(f"{i + 1}: {t}" for i, t in enumerate(example["pseudocode"]))):
        cert = spoc.check(example, prose)  # prose, or the pseudo-code copied back: no attempt
        assert cert.verdict == "no_code" and not cert.attempted and cert.score == -1.0
    assert spoc.check(example, example["code"]).attempted


def test_verdicts_are_cached_by_source(spoc, example):
    code = example["code"] + "\n// cache me\n"
    spoc.check(example, code)
    n = len(spoc._cache)
    again = spoc.check(example, "```\n" + code + "```")  # same program, other wrapping
    assert len(spoc._cache) == n and again.correct


def test_rlsf_check_on_spoc(tmp_path, capsys, shared_data, example):
    from rlsf.cli.main import main

    f = tmp_path / "prog.cpp"
    f.write_text(example["code"].replace("cin >> s;", "cin >> s"))
    opts = json.dumps({"data_dir": str(shared_data)})
    assert main(["check", "--task", "spoc", "--task.options", opts, "--example", example["id"],
                 "--completion", str(f), "--check.workers", "0"]) == 0
    assert "verdict=compile_error" in capsys.readouterr().out
    f.write_text(example["code"])
    assert main(["check", "--task", "spoc", "--task.options", opts, "--example", example["id"],
                 "--completion", str(f), "--json", "--judge"]) == 0
    cert = json.loads(capsys.readouterr().out)["certificate"]
    assert cert["correct"] and cert["info"]["tests"] == 14


def test_sft_train_and_eval_run_on_spoc(tiny_model_dir, tmp_path, shared_data):
    """The whole engine on SPoC with a tiny random model: SFT on gold programs, an RL step whose
    completions (garbage) are compiled and certified, evaluation with the hidden tests."""
    from test_training import tiny_cfg

    from rlsf.stages.evaluate import evaluate
    from rlsf.stages.sft import sft
    from rlsf.stages.train import RLTrainer

    common = {"task.name": "spoc", "task.options": {"data_dir": str(shared_data)}, "rollout.max_new_tokens": 16,
              "eval.num_examples": 2, "eval.k": 1, "eval.max_new_tokens": 16, "sft.steps": 1, "sft.batch_size": 2}
    sft(tiny_cfg(tiny_model_dir, tmp_path / "sft", **common))
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "rl", **common, **{"train.steps": 1}))
    metrics = tr.train()
    assert metrics["check/failed"] == 0.0
    assert metrics.get("feedback/verdict/compile_error", 0) + metrics.get("feedback/verdict/no_code", 0) > 0
    res = evaluate(tiny_cfg(tiny_model_dir, tmp_path / "ev", **common))
    assert {"greedy/compiles", "greedy/success", "pass@1", "pass@1/compiles", "maj@1"} <= set(res)


def test_reference_report_counts_compiles_and_passes(tmp_path, shared_data, example):
    """The gold-program report on a TSV of two programs of a real problem: the gold one compiles
    and passes; a copy with a wrong output line compiles and fails its tests (counted by verdict)."""
    from rlsf.tasks.spoc import reference_report

    lines = example["code"].rstrip("\n").split("\n")
    wrong = [ln.replace("cout <<", "cout << 1 <<", 1) for ln in lines]
    assert wrong != lines
    rows = [f"\t{code}\t1\t{example['probid']}\t{sub}\t{i}\t0"
            for sub, prog in (("1", lines), ("2", wrong)) for i, code in enumerate(prog)]
    (tmp_path / "two.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    task = get_task("spoc", data_dir=str(shared_data), test_tsv=str(tmp_path / "two.tsv"), shuffle=False)
    report = reference_report(task, ("test",), workers=0)["test"]
    assert report["programs"] == 2 and report["compile"] == 2 and report["skipped_no_tests"] == 0
    assert report["pass_public"] == 1 and report["pass_hidden"] == 1
    assert report["hidden_failures"] == {"wrong_answer": 1} and report["failed_examples"] == [f"{example['probid']}-2-1"]


def test_judging_after_checking_reuses_the_build(spoc, example, monkeypatch):
    calls = []
    run = spoc._sandbox.run
    monkeypatch.setattr(spoc._sandbox, "run", lambda cmd, **kw: calls.append(cmd[0]) or run(cmd, **kw))
    code = example["code"] + "\n// built once\n"
    assert spoc.check(example, code).correct and spoc.judge(example, code).correct
    assert calls.count("g++") == 1 and calls.count("./prog") == 5 + 14  # public tests, then hidden ones


# ---- the hardened checker (issue 23; the adversarial runs are in test_sandbox_hardened.py) ----------

@pytest.mark.parametrize("code, directives", [
    ("#line 5\nint x;", [(1, 1)]),
    ("int a;\n  #  line 9999\n", [(2, 2)]),
    ('# 12 "prog.cpp"\n', [(1, 1)]),  # a GNU linemarker
    ("%:line 3\n", [(1, 1)]),  # the digraph of '#'
    ("#\\\nline 4\nint y;", [(1, 2)]),  # spliced by a backslash at the line's end
    ("#\\  \nline 4\n", [(1, 2)]),  # g++ splices across trailing blanks too
    ("#/* c */line 5\n", [(1, 1)]),
    ("#/*\n*/line 6\nint z;", [(1, 2)]),  # a comment is one space, across lines too
    ('char s[] = "/*";\n#line 7\n', [(2, 2)]),  # no comment inside a string
    ("// comment \\\n#line 8\n", []),  # the comment goes on to the next line
    ('auto r = R"(\n#line 9\n)";\n', []),  # inside a raw string
    ("/* #line 5 */\nint x = 1; #line 5\n#linex 5\n# define X 1\n", []),
])
def test_line_directives_are_found_as_the_preprocessor_reads_them(code, directives):
    from rlsf.tasks.spoc_data import blank_lines, line_directives

    assert line_directives(code) == directives
    blanked = blank_lines(code, directives)
    assert blanked.count("\n") == code.count("\n") and line_directives(blanked) == []


def test_certificates_say_which_isolation_judged_them(spoc, example):
    for completion in (example["code"], "", "Sure.", "int main() { return 1; }", "#line 3\nint main() {}"):
        assert spoc.check(example, completion).info["isolation"] == spoc.isolation == "bwrap"
    # the precompiled header (no worker folder here) sits in a folder a later sweep removes
    assert spoc._pch_dir is not None and spoc._pch_dir.name.startswith("rlsf-sbx-")


@pytest.mark.slow
def test_a_slow_program_through_the_check_service_is_a_timeout_not_a_checker_failure(shared_data, example):
    """check.timeout_s 10 s; the program needs 5 tests x 1.5 s plus its compile: the task's budget (6 s)
    ends it first, as the program's timeout, which the update penalises."""
    from rlsf.feedback.service import CheckService

    task = get_task("spoc", data_dir=str(shared_data), time_budget_s=6.0, precompiled_header=False)
    slow = "#include <unistd.h>\n" + example["code"].replace("cin >> s;", "cin >> s; usleep(1500000);")
    with CheckService(task, workers=1, timeout_s=10) as service:
        cert = service.check([example], texts=[slow])[0].certificate
    assert cert.verdict == "timeout" and not cert.failed and cert.info["isolation"] == "bwrap", cert
