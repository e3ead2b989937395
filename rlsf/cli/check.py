"""``rlsf check``: what a task's checker says about a completion, and what each token would earn.

::

    rlsf check --task game24 --example 901 --completion answer.txt     # the certificate, explained
    rlsf check --task game24 --example 901 --completion - --json       # ... as JSON (text from stdin)
    rlsf check --task game24 --example 901 --completion - --tokens     # each token with its reward
    rlsf check --task molgen --example chebi:5280343 --completion - --image mol.png   # a picture too
    rlsf check --task gsm8k --example test:1 --completion - --feedback    # ... and the self-repair turn
    rlsf check --task game24 --input completions.jsonl --output certs.jsonl

``--input`` takes one ``{"example": ID, "completion": TEXT}`` a line and writes one line per
input line: ``{"line": N, "example": ID, "certificate": {...}}``, or ``{"line": N, "error": ...}``
for a line that cannot be checked (bad JSON, unknown example), which is also reported on
standard error; the other lines carry on, and the exit status is 1 if any line was bad. Checks
go through the check service (:mod:`rlsf.feedback.service`), with its time limit.

``--feedback`` (or ``--turns``) also prints the next user turn of a self-repair episode
(:meth:`rlsf.tasks.base.Task.feedback`): what the model would be told after this completion;
a correct completion and a failed check get none (``"feedback": null`` in JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rlsf.config import Config
from rlsf.errors import RlsfError
from rlsf.feedback.certificate import Certificate
from rlsf.feedback.service import CheckService
from rlsf.stages.context import load_task


class CheckInputError(RlsfError):
    """A ``rlsf check`` argument or input that cannot be used."""


def _read_completion(source: str | None) -> str:
    if source is None:
        raise CheckInputError("give --completion FILE (or - for standard input), or --input FILE.jsonl")
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8", errors="replace", newline="") as f:
            return f.read()
    except OSError as e:
        raise CheckInputError(f"--completion: cannot read {source}: {e.strerror or e}") from None


def run_check_command(cfg: Config, args) -> int:
    task = load_task(cfg)
    image = getattr(args, "image", None)  # absent from namespaces built before --image existed
    if image and not task.picture:
        raise CheckInputError(f"--image: task {task.name!r} draws no pictures")
    feedback = getattr(args, "feedback", False)
    if args.input:
        return _check_many(cfg, task, args.input, args.output, args.judge, feedback)
    if args.example is None:
        raise CheckInputError("give --example ID (an `id` from `rlsf eval`'s samples file)")
    example = task.example(args.example)
    text = _read_completion(args.completion)
    ids = None
    if args.tokens:
        text, ids, offsets, tokenizer = _tokenise(cfg, text)
    with _service(cfg, task, workers=1) as service:
        cert = service.submit(example, text=text, judge=args.judge).result().certificate
    turn = feedback_turn(task, example, text, cert) if feedback else None
    if args.json:
        extra = {"feedback": turn} if feedback else {}
        print(json.dumps({"example": example.get("id"), "certificate": cert.to_dict(), **extra}, indent=2))
    elif not args.tokens:
        print(cert.explain(text))
    if args.tokens:
        _print_tokens(cfg, tokenizer, ids, offsets, text, cert)
    if feedback and not args.json:
        print("\nfeedback turn:\n" + (turn if turn is not None else
                                       "(checker failed: no feedback turn)" if cert.failed else
                                       "(correct: no feedback turn)"))
    if image:
        from rlsf.stages.evaluate import draw_picture

        if draw_picture(task, [example], [text], [cert], Path(image)) is None:
            return 1
    return 0


def feedback_turn(task, example, text: str, cert: Certificate) -> str | None:
    """The task's feedback turn after ``text`` (``None``: correct, or the check failed, so no turn)."""
    if cert.correct or cert.failed:
        return None
    try:
        return task.feedback(example, text, cert)
    except Exception as e:  # noqa: BLE001  (a task's own feedback must not raise; say so in one line)
        raise CheckInputError(f"task {task.name!r}: feedback raised {type(e).__name__}: {e}") from None


def _service(cfg: Config, task, workers: int) -> CheckService:
    # One worker at most for a single check (its time limit still applies); 0 keeps it in-process.
    n = 0 if cfg.check.workers == 0 else (workers if cfg.check.workers < 0 else min(workers, cfg.check.workers))
    return CheckService.for_config(cfg, task, workers=n)


def _check_many(cfg: Config, task, path: str, output: str | None, judge: bool = False, feedback: bool = False) -> int:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as e:
        raise CheckInputError(f"--input: cannot read {path}: {e.strerror or e}") from None
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    bad = 0
    jobs: list[tuple[int, Any, Any, Any, str]] = []  # (line, example id, future or error text, example, text)
    with _service(cfg, task, workers=cfg.check.workers) as service:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "example" not in record or not isinstance(record.get("completion"), str):
                    raise CheckInputError('expected {"example": ID, "completion": TEXT}')
                example = task.example(record["example"])
                jobs.append((n, record["example"], service.submit(example, text=record["completion"], judge=judge),
                             example, record["completion"]))
            except (ValueError, RlsfError) as e:  # json.JSONDecodeError is a ValueError
                jobs.append((n, None, f"{type(e).__name__}: {e}" if isinstance(e, json.JSONDecodeError) else str(e),
                             None, ""))
        for n, example_id, job, example, text in jobs:
            if isinstance(job, str):
                bad += 1
                print(f"rlsf: {path} line {n}: {job}", file=sys.stderr)
                out.write(json.dumps({"line": n, "error": job}) + "\n")
            else:
                cert = job.result().certificate
                extra = {"feedback": feedback_turn(task, example, text, cert)} if feedback else {}
                out.write(json.dumps({"line": n, "example": example_id, "certificate": cert.to_dict(), **extra}) + "\n")
    if output:
        out.close()
        print(f"rlsf: {len(jobs) - bad} certificates written to {output}" + (f", {bad} bad lines" if bad else ""),
              file=sys.stderr)
    return 1 if bad else 0


def _tokenise(cfg: Config, text: str):
    """The ids the model's tokenizer gives ``text``, followed by its end-of-turn token (a completion
    that ended normally carries its score there), and the text and offsets of those ids."""
    from rlsf.feedback.offsets import Detokenizer
    from rlsf.models.loading import load_tokenizer, resolve_model
    from rlsf.rollout.engines import stop_token_ids

    tokenizer = load_tokenizer(resolve_model(cfg.model.name))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stops = stop_token_ids(tokenizer)
    if "<|im_end|>" in tokenizer.get_vocab():
        ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    elif stops:
        ids.append(stops[0])
    decoded, offsets = Detokenizer.from_tokenizer(tokenizer).text_and_offsets(ids)
    if decoded != text:
        print("rlsf: note: the tokenizer does not reproduce the text exactly; checking the text its tokens "
              "decode to", file=sys.stderr)
    return decoded, ids, offsets, tokenizer


def _print_tokens(cfg: Config, tokenizer, ids: list[int], offsets, text: str, cert: Certificate) -> None:
    from rich.console import Console
    from rich.table import Table

    from rlsf.feedback.rewards import certificate_token_rewards

    r = cfg.reward
    rewards = certificate_token_rewards(cert, offsets, mode=r.mode, spread_spans=r.spread_spans,
                                        span_weight=r.span_weight, preset=r.preset)
    table = Table(title=f"{cert.verdict} (score {cert.score:+.3f}), reward {r.preset}/{r.mode}: "
                        f"{len(ids)} tokens, total {sum(rewards):+.3f}", title_justify="left")
    for col, just in (("#", "right"), ("token", "left"), ("chars", "right"), ("reward", "right"), ("because", "left")):
        table.add_column(col, justify=just)
    for i, (tok, (s, e), rw) in enumerate(zip(ids, offsets, rewards)):
        span = next((sp for sp in cert.spans if sp.start < e and sp.end > s), None) if e > s else None
        style = "red" if rw < 0 else "green" if rw > 0 else "dim"
        shown = repr(text[s:e]) if e > s else tokenizer.convert_ids_to_tokens(tok)  # special tokens by name
        table.add_row(str(i), shown, f"{s}-{e}", f"{rw:+.4f}",
                      span.message[:60] if span is not None and rw != 0 else "", style=style)
    Console(highlight=False).print(table)
