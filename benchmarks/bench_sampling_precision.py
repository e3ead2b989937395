"""Sampling speed by precision of the sampling weights: rlsf's loop on the fused step with the
float32 master weights against bf16 weights prepacked for oneDNN, side by side in one process,
rounds alternating. This is the trade ``model.sampling_autocast`` makes: on a CPU where bf16
training products are slow but prepacked bf16 decoding is fast, rollouts may sample in bf16
while updates stay in float32 (the decode probe, :func:`rlsf.runtime.device.resolve_sampling_precision`,
decides under ``auto``; its verdict is printed too).

    python benchmarks/bench_sampling_precision.py --batch 8 --tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import time

from common import print_header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8, help="Prompts sampled at once (Game of 24 training puzzles).")
    ap.add_argument("--tokens", type=int, default=64, help="Tokens generated per prompt (end of turn ignored).")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from rlsf.models.loading import load_model, load_tokenizer, resolve_model
    from rlsf.rollout.collect import task_prompts
    from rlsf.rollout.engines import SamplingModel, generate
    from rlsf.runtime.device import resolve_sampling_precision
    from rlsf.tasks import get_task

    decision, reason = resolve_sampling_precision("auto", "cpu", "none")
    print_header("bench_sampling_precision", extra=[f"decode probe: {decision} ({reason})",
                                                    f"{args.batch} prompts x {args.tokens} tokens"])
    path = resolve_model(args.model)
    tok, model = load_tokenizer(path), load_model(path)
    task = get_task("game24")
    prompts = task_prompts(tok, task, task.load("train")[: args.batch])
    times: dict[str, list[float]] = {"none": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in times:
            torch.manual_seed(0)
            sampler = SamplingModel(model, precision, fused=True)
            t0 = time.perf_counter()
            generate(sampler.model, tok, prompts, max_new_tokens=args.tokens, ignore_eos=True, precision=precision,
                     batch_size=args.batch)
            times[precision].append(time.perf_counter() - t0)
    n = args.batch * args.tokens
    for precision, t in times.items():
        name = "float32 master weights" if precision == "none" else "bf16 weights (prepacked where oneDNN can)"
        print(f"{name:<44}: best {min(t):6.2f} s  {n / min(t):6.0f} tokens/s  rounds {[round(x, 2) for x in t]}")
    print(f"bf16 / float32 sampling speed: {min(times['none']) / min(times['bf16']):.2f}x")


if __name__ == "__main__":
    main()
