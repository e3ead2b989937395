"""Time of one decoding step: the model's own forward vs rlsf's fused step, side by side.

The sampling benchmark times whole rollouts, which on a shared machine swing by 2-3x between
rounds when neighbours take CPU time. This one times single decode steps of SmolLM2-135M-Instruct
(``--model``) at a given batch and cache length, in the precision rlsf samples in (the runtime's
decision, ``--precision``: bf16 weights made from the float32 master weights, as the trainer
does, where the CPU has fast bf16; float32 where it does not), for the steppers of
``rlsf.rollout.fused_step``, interleaved round by round:

* ``ModelStep``: the Hugging Face forward over a ``DynamicCache`` (in bf16: under bf16 autocast
  on a persistent bf16 copy, as sampling runs for architectures the fused step does not cover;
  in float32: on the master weights);
* ``FusedLlamaStep`` with plain weights;
* ``FusedLlamaStep`` with oneDNN-prepacked weights (the default in bf16 on a CPU with oneDNN bf16
  support; rlsf never packs float32 weights, so in float32, or where oneDNN bf16 is missing, this
  side is left out and the header says so).

Each round runs ``--tokens`` steps per stepper and keeps its fastest step (the least disturbed);
the figures are the median and the best of those over ``--rounds``. Building a fused step
(converting, concatenating and packing the weights, once per rollout) is timed separately.

    python benchmarks/bench_decode_step.py --batch 8 --prompt 68 --tokens 32 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_machine_flags, start  # noqa: E402

HF_SIDE = "model's own forward (HF)"


def steppers(master, batch: int, length: int, precision: str) -> tuple[dict[str, Callable], list[str]]:
    """The sides for ``precision`` (name -> maker of a fresh stepper) and notes on sides left out."""
    from rlsf.rollout.fused_step import FusedLlamaStep, ModelStep, _mkldnn_bf16
    from rlsf.rollout.engines import SamplingModel

    weights = SamplingModel(master, precision).model  # a bf16 copy in bf16, the master weights in float32
    makers = {
        HF_SIDE: lambda: ModelStep(weights, precision),
        "fused step, plain weights": lambda: FusedLlamaStep(master, batch, length, precision, pack=False),
    }
    notes = []
    if precision != "bf16":
        notes.append("fused step, prepacked: left out (rlsf prepacks bf16 weights only)")
    elif not _mkldnn_bf16():
        notes.append("fused step, prepacked: left out (oneDNN bf16 linear unavailable on this CPU)")
    else:
        makers["fused step, prepacked"] = lambda: FusedLlamaStep(master, batch, length, precision, pack=True)
    return makers, notes


def time_steps(makers: dict[str, Callable], ids: torch.Tensor, mask: torch.Tensor, tokens: int,
               rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Fastest step (ms) and build time (s) per side and round; round 0 is the warm-up (kept, drop it)."""
    step_ms: dict[str, list[float]] = {k: [] for k in makers}
    build_s: dict[str, list[float]] = {k: [] for k in makers}
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for name, make in makers.items():
                t0 = time.perf_counter()
                stepper = make()
                build_s[name].append(time.perf_counter() - t0)
                stepper.prefill(ids, mask)
                tok, pos, fastest = ids[:, -1], mask.sum(-1), float("inf")
                for _ in range(tokens):
                    t0 = time.perf_counter()
                    tok = stepper.step(tok, pos).argmax(-1)
                    fastest = min(fastest, time.perf_counter() - t0)
                    pos = pos + 1
                step_ms[name].append(fastest * 1e3)
    return step_ms, build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="Rows decoded together.")
    ap.add_argument("--prompt", type=int, default=68, help="Prompt length (tokens already in the cache).")
    ap.add_argument("--tokens", type=int, default=32, help="Steps per stepper per round.")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--model", default="smollm2-135m", help="Model (a Llama-style one: the fused step's).")
    add_machine_flags(ap)
    args = ap.parse_args()
    precision, _ = start("bench_decode_step: one decode step, HF forward vs fused step", args)

    from rlsf.models.loading import load_model, resolve_model

    master = load_model(resolve_model(args.model))  # float32, as the trainer holds it
    B, P = args.batch, args.prompt
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, min(40000, master.config.vocab_size), (B, P), generator=g)
    mask = torch.ones(B, P, dtype=torch.long)
    makers, notes = steppers(master, B, P + args.tokens, precision)
    for note in notes:
        print(f"   {note}")
    step_ms, build_s = time_steps(makers, ids, mask, args.tokens, args.rounds)
    print(f"batch {B}, prompt {P}, {args.tokens} steps x {args.rounds} rounds, {args.threads} threads, "
          f"precision {precision}")
    base = statistics.median(step_ms[HF_SIDE][1:])
    for name in makers:
        ms = step_ms[name][1:]
        print(f"{name:<28} step median {statistics.median(ms):6.1f} ms  best {min(ms):6.1f} ms  "
              f"speed-up {base / statistics.median(ms):.2f}x   build {statistics.median(build_s[name][1:]):.3f} s")


if __name__ == "__main__":
    main()
