"""One SFT step on SPoC demonstrations: HF's ``labels=`` loss against rlsf's completion-only head.

HF's causal-LM loss makes logits for every position, ``[batch, length, vocab]`` in float32 (SPoC
prompts are ~250 tokens of numbered pseudo-code, the vocabulary 49k wide), then keeps the
completion's. ``rlsf.algorithms.supervised.completion_loss`` applies the LM head only where a label is. Both sides
run the same batches (SmolLM2-135M, ``--batch`` seeded demonstrations of the train split) in
turns, each in its own process so that its peak resident memory is its own.

    RLSF_DATA_DIR=../shared/data python benchmarks/bench_sft_step.py --batch 8 --steps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import add_machine_flags, start


def run_side(args) -> dict:
    import torch

    from rlsf.models.loading import load_model, load_tokenizer, resolve_model
    from rlsf.algorithms.supervised import collate, completion_loss
    from rlsf.stages.sft import demonstration_ids
    from rlsf.tasks import get_task
    from rlsf.runtime.utils import autocast

    path = resolve_model("smollm2-135m")
    model, tok = load_model(path), load_tokenizer(path)
    task = get_task("spoc")
    examples = task.load("train")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times, tokens, lengths = [], 0, []
    for step in range(args.steps):
        pairs = [demonstration_ids(tok, task, ex, task.demonstration(ex))
                 for ex in examples[step * args.batch:(step + 1) * args.batch]]
        batch = collate(pairs, tok.pad_token_id or 0)
        t0 = time.perf_counter()
        with autocast(args.precision, "cpu"):
            loss = model(**batch, use_cache=False).loss if args.side == "hf" else completion_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        tokens += int((batch["labels"] != -100).sum())
        lengths.append(batch["input_ids"].shape[1])
    return {"side": args.side, "step_s": times, "completion_tokens": tokens, "padded_lengths": lengths,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="Steps per side (the first is warm-up, not in the median).")
    ap.add_argument("--side", choices=["hf", "rlsf"], help=argparse.SUPPRESS)
    add_machine_flags(ap)
    args = ap.parse_args()
    if args.side:
        import torch

        torch.set_num_threads(args.threads)
        print("RESULT " + json.dumps(run_side(args)), flush=True)
        return
    precision, _ = start("bench_sft_step: SFT step, HF labels= loss vs completion-only head (SPoC)", args)
    results = {}
    for side in ("hf", "rlsf"):
        cmd = [sys.executable, __file__, "--side", side, "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--precision", precision]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[side] = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    med = {s: sorted(r["step_s"][1:] or r["step_s"])[len(r["step_s"][1:] or r["step_s"]) // 2] for s, r in results.items()}
    for s, r in results.items():
        print(f"{s:>5}: step {med[s]:.2f} s (median of steps 2-{args.steps}; all {[round(t, 2) for t in r['step_s']]}), "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB, padded lengths {r['padded_lengths']}")
    print(f"completion-only head: {med['hf'] / med['rlsf']:.2f}x faster, "
          f"{results['hf']['peak_rss_mib'] / results['rlsf']['peak_rss_mib']:.2f}x less peak memory")


if __name__ == "__main__":
    main()
