"""Sampling throughput: rlsf's rollout vs plain ``model.generate`` in fp32, side by side.

Both sides load the same converted SmolLM2-135M-Instruct, sample the same Game of 24 prompts at
the same batch size and temperature, and generate exactly ``--tokens`` new tokens per sequence
(no end-of-turn id) so that both do the same work. The plain side is what a user gets from
``AutoModelForCausalLM.from_pretrained(...).generate(...)``; the rlsf side is
``rlsf.rollout.generate`` as the trainer runs it: the rlsf sampling loop (each distinct prompt
prefilled once, inverse-CDF sampling, per-token log-prob recording) on the fused step of
``rlsf.decode_step``, which makes bf16 weights from the float32 master weights at each call (that
conversion is timed). Two more sides show where the gain comes from: a persistent bf16 copy
through HF ``generate`` (``engine="hf"``), and the same copy through the rlsf loop with the
model's own forward as its step (``fused_step=False``), and the fused step with plain bf16
weights instead of oneDNN-prepacked ones. ``--samples-per-prompt k``
repeats each prompt ``k`` times, as RL rollouts do. Rounds alternate between the sides so
machine noise hits all of them.

    python benchmarks/bench_sampling.py --batch 32 --tokens 64 --rounds 3
    python benchmarks/bench_sampling.py --batch 8 --samples-per-prompt 8 --tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="Sequences per generate call.")
    ap.add_argument("--tokens", type=int, default=64, help="New tokens per sequence.")
    ap.add_argument("--samples-per-prompt", type=int, default=1, help="Copies of each prompt in the batch.")
    ap.add_argument("--rounds", type=int, default=3, help="Timed rounds per side (after one warm-up each).")
    ap.add_argument("--threads", type=int, default=2, help="torch threads.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging

    from rlsf.models import load_model, load_tokenizer, resolve_model
    from rlsf.rollout import SamplingModel, generate, task_prompts
    from rlsf.tasks import get_task

    hf_logging.disable_progress_bar()
    path = resolve_model("smollm2-135m")
    tok = load_tokenizer(path)
    task = get_task("game24")
    examples = task.load("train")
    k = args.samples_per_prompt
    prompts = task_prompts(tok, task, [examples[(i // k) % len(examples)] for i in range(args.batch)])

    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    master = load_model(path)  # float32, as the trainer holds it
    bf16_copy = SamplingModel(master, "bf16").model  # what the non-fused sides sample from
    # No end-of-turn id on either side: both generate exactly --tokens tokens per sequence.
    plain_config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.tokens,
                                    pad_token_id=tok.pad_token_id, eos_token_id=None)

    def run_plain() -> int:
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.no_grad():
            out = plain.generate(**enc, generation_config=plain_config)
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

    def run_ours(engine: str, fused: bool = True, pack: bool = True) -> int:
        if not pack:  # the fused step with plain bf16 weights instead of oneDNN-prepacked ones
            with mock.patch("rlsf.decode_step._mkldnn_bf16", return_value=False):
                return run_ours(engine, fused)
        # The fused step reads the float32 master weights and makes its bf16 weights per call
        # (that conversion is timed); the other sides run on the persistent bf16 copy.
        ro = generate(master if fused and engine == "rlsf" else bf16_copy, tok, prompts, max_new_tokens=args.tokens, temperature=1.0, batch_size=args.batch,
                      precision="bf16", ignore_eos=True, engine=engine, fused_step=fused)
        return int(ro.response_mask.sum())

    sides = {"plain generate (fp32)": run_plain, "rlsf rollout, hf engine": lambda: run_ours("hf"),
             "rlsf rollout, rlsf loop, model step": lambda: run_ours("rlsf", fused=False),
             "rlsf rollout, fused step, unpacked": lambda: run_ours("rlsf", pack=False),
             "rlsf rollout, rlsf engine": lambda: run_ours("rlsf")}
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - t0)
    print(f"batch {args.batch} ({k} per prompt), {args.tokens} new tokens, {args.rounds} rounds, {args.threads} threads")
    # Median and best round per side: on a shared machine (CPU time stolen by neighbours) the
    # best round is the least disturbed one, so its ratio is printed beside the median's.
    rates = {name: counts[name] / statistics.median(times[name]) for name in sides}
    best = {name: counts[name] / min(times[name]) for name in sides}
    for name in sides:
        print(f"{name:<36} median {counts[name] / rates[name]:7.2f} s  {rates[name]:7.1f} tokens/s   best "
              f"{best[name]:7.1f} tokens/s  (rounds: {', '.join(f'{t:.2f}' for t in times[name])})")
    for name in list(sides)[1:]:
        print(f"ratio {name} / plain: {rates[name] / rates['plain generate (fp32)']:.2f}x median, "
              f"{best[name] / best['plain generate (fp32)']:.2f}x best")

if __name__ == "__main__":
    main()
