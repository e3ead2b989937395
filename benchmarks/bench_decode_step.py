"""Time of one decoding step: the model's own forward vs rlsf's fused step, side by side.

The sampling benchmark times whole rollouts, which on a shared machine swing by 2-3x between
rounds when neighbours take CPU time. This one times single decode steps of SmolLM2-135M-Instruct
in bf16 (weights from the float32 master weights, as the trainer does) at a given batch and
cache length, for three steppers of ``rlsf.decode_step``, interleaved round by round:

* ``ModelStep``: the Hugging Face forward over a ``DynamicCache`` (under bf16 autocast, on a
  persistent bf16 copy, as sampling runs for architectures the fused step does not cover);
* ``FusedLlamaStep`` with plain bf16 weights;
* ``FusedLlamaStep`` with oneDNN-prepacked weights (the default on a CPU with bf16 support).

Each round runs ``--tokens`` steps per stepper and keeps its fastest step (the least disturbed);
the figures are the median and the best of those over ``--rounds``. Building a fused step
(converting, concatenating and packing the weights, once per rollout) is timed separately.

    python benchmarks/bench_decode_step.py --batch 8 --prompt 68 --tokens 32 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="Rows decoded together.")
    ap.add_argument("--prompt", type=int, default=68, help="Prompt length (tokens already in the cache).")
    ap.add_argument("--tokens", type=int, default=32, help="Steps per stepper per round.")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from rlsf.decode_step import FusedLlamaStep, ModelStep
    from rlsf.models import load_model, resolve_model
    from rlsf.rollout import SamplingModel

    master = load_model(resolve_model("smollm2-135m"))
    bf16_copy = SamplingModel(master, "bf16").model
    B, P = args.batch, args.prompt
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (B, P), generator=g)
    mask = torch.ones(B, P, dtype=torch.long)
    makers = {
        "model's own forward (HF)": lambda: ModelStep(bf16_copy, "bf16"),
        "fused step, plain weights": lambda: FusedLlamaStep(master, B, P + args.tokens, "bf16", pack=False),
        "fused step, prepacked": lambda: FusedLlamaStep(master, B, P + args.tokens, "bf16", pack=True),
    }
    step_ms: dict[str, list[float]] = {k: [] for k in makers}
    build_s: dict[str, list[float]] = {k: [] for k in makers}
    with torch.no_grad():
        for _ in range(args.rounds + 1):  # the first round warms up and is dropped
            for name, make in makers.items():
                t0 = time.perf_counter()
                stepper = make()
                build_s[name].append(time.perf_counter() - t0)
                stepper.prefill(ids, mask)
                tok, pos, fastest = ids[:, -1], mask.sum(-1), float("inf")
                for _ in range(args.tokens):
                    t0 = time.perf_counter()
                    tok = stepper.step(tok, pos).argmax(-1)
                    fastest = min(fastest, time.perf_counter() - t0)
                    pos = pos + 1
                step_ms[name].append(fastest * 1e3)
    print(f"batch {B}, prompt {P}, {args.tokens} steps x {args.rounds} rounds, {args.threads} threads")
    base = statistics.median(step_ms["model's own forward (HF)"][1:])
    for name in makers:
        ms = step_ms[name][1:]
        print(f"{name:<28} step median {statistics.median(ms):6.1f} ms  best {min(ms):6.1f} ms  "
              f"speed-up {base / statistics.median(ms):.2f}x   build {statistics.median(build_s[name][1:]):.3f} s")


if __name__ == "__main__":
    main()
