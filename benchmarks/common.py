"""What every benchmark shares: the precision flag and the machine header printed at the start.

A benchmark's figures only mean something next to the machine they were taken on: the CPU
model, the torch version, the thread count and the precision rlsf ran in (and why). On a CPU
with fast bf16 (AVX-512 bf16, AMX) bf16 sampling and updates are what rlsf does by default; on
one without, bf16 runs 3-40x *slower* than float32 and rlsf runs in float32. So benchmarks take
the precision from the runtime's decision (:func:`rlsf.runtime.device.resolve_precision`, the same
probe ``model.autocast: auto`` uses) unless ``--precision`` forces one, and print it.

Scripts import this module as ``common``, putting their own folder first on ``sys.path`` (it
already is when run as ``python benchmarks/bench_x.py``; the tests load them by file path)::

    from common import add_machine_flags, start
    ap = argparse.ArgumentParser(...); add_machine_flags(ap); args = ap.parse_args()
    precision, reason = start("bench_x", args)     # sets threads, resolves precision, prints the header
"""

from __future__ import annotations

import argparse
import os
import sys

PRECISIONS = ("auto", "bf16", "none")


def add_machine_flags(ap: argparse.ArgumentParser, *, threads: int = 2) -> None:
    """``--threads`` and ``--precision {auto,bf16,none}`` on ``ap``."""
    ap.add_argument("--threads", type=int, default=threads, help="torch CPU threads.")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="Compute precision of rlsf's sides: 'auto' (default) takes the runtime's decision "
                         "(bf16 only where the CPU probe measures bf16 matmuls faster than float32; "
                         "RLSF_BF16=1/0 forces the probe's outcome), 'bf16' or 'none' (float32) force one.")


def resolve(setting: str, device: str = "cpu") -> tuple[str, str]:
    """``(precision, reason)``: ``"bf16"`` or ``"none"`` for ``setting`` (auto, bf16, none) on ``device``.

    ``auto`` is exactly ``model.autocast: auto`` (the runtime's probe, cached per CPU model, torch
    version and thread count, so set the threads first)."""
    from rlsf.runtime.device import resolve_precision

    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != "auto":
        return setting, f"forced by --precision {setting}"
    precision, reason, _ = resolve_precision("auto", device)
    return precision, f"runtime decision, {reason}"


def machine_lines(precision: str | None = None, reason: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The header: CPU model, torch (and transformers) version, threads, precision and its reason."""
    import torch
    import transformers

    from rlsf.runtime.device import processor_name

    lines = [f"CPU: {processor_name()} ({os.cpu_count()} logical CPUs)",
             f"torch {torch.__version__}, transformers {transformers.__version__}, "
             f"{torch.get_num_threads()} torch threads"]
    if precision is not None:
        lines.append(f"rlsf precision: {precision} ({reason})")
    return lines + list(extra or [])


def print_header(title: str, precision: str | None = None, reason: str | None = None,
                 extra: list[str] | None = None) -> None:
    print(f"== {title}")
    for line in machine_lines(precision, reason, extra):
        print(f"   {line}")
    sys.stdout.flush()


def start(title: str, args: argparse.Namespace, device: str = "cpu",
          extra: list[str] | None = None) -> tuple[str, str]:
    """Set torch threads from ``args.threads``, resolve ``args.precision`` and print the header;
    returns ``(precision, reason)``."""
    import torch

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    precision, reason = resolve(args.precision, device)
    print_header(title, precision, reason, extra)
    return precision, reason

