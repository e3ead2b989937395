"""What a second turn costs: sampling a self-repair episode's turns, and the share of re-prefilling.

The builtin engine samples each turn from the context's token ids and prefills that context again
(the prompt, the first answer and the feedback turn). This measures, on one batch of Game of 24
prompts with the real SmolLM2-135M-Instruct and the runtime's sampling precision:

* turn 1: sampling the first answers (prefill of the prompts + decoding);
* turn 2: sampling the second answers from the contexts after the feedback turn;
* turn 2 again with every context prefilled whole (``reuse=False``: the same samples), against
  the default, which keeps each row's keys and values from turn 1 and prefills only the feedback;
* the whole-context prefill alone: the same contexts with one new token.

    python benchmarks/bench_turns.py                       # 32 rows (8 puzzles x 4), 96 new tokens
    python benchmarks/bench_turns.py --model runs/sft/model --rows 64
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    import torch

    from rlsf.config import Config
    from rlsf.feedback.service import CheckService
    from rlsf.rollout.engines import generate
    from rlsf.rollout.episodes import rollout_episodes
    from rlsf.runtime.device import setup
    from rlsf.stages.context import load_policy
    from rlsf.tasks import get_task

    cfg = Config.load(None, {"model.name": args.model})
    rt = setup(cfg)
    model, tok = load_policy(cfg, rt, lora=False)
    task = get_task("game24")
    examples = task.load("train")[: args.prompts]
    gen = dict(max_new_tokens=args.max_new_tokens, precision=rt.sampling_precision, batch_size=64)
    rows = []
    with CheckService.for_config(cfg, task, tok) as checker:
        rollout_episodes(model, tok, task, examples[:1], checker, turns=2, **gen)  # warm-up: workers, kernels
        for r in range(args.repeats):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            rollout_episodes(model, tok, task, examples, checker, turns=1, samples=args.samples, **gen)
            one = time.perf_counter() - t0
            torch.manual_seed(r)
            t0 = time.perf_counter()
            exp = rollout_episodes(model, tok, task, examples, checker, turns=2, samples=args.samples, **gen)
            both = time.perf_counter() - t0
            torch.manual_seed(r)
            t0 = time.perf_counter()
            rollout_episodes(model, tok, task, examples, checker, turns=2, samples=args.samples, reuse=False, **gen)
            whole = time.perf_counter() - t0
            second = [i for i, e in enumerate(exp.episodes) if len(e) == 2]
            contexts = [exp.prompt_ids[i][exp.prompt_mask[i].bool()].tolist()
                        + exp.response_ids[i, :exp.episodes[i][1].start].tolist() for i in second]
            t0 = time.perf_counter()
            generate(model, tok, contexts, **{**gen, "max_new_tokens": 1})
            prefill = time.perf_counter() - t0
            ctx = sum(len(c) for c in contexts) / max(len(contexts), 1)
            rows.append((one, both - one, whole - one, prefill, len(second), ctx))
    print(f"{rt.describe()}")
    print(f"{len(examples) * args.samples} rows, {args.max_new_tokens} new tokens per turn")
    print("| repeat | turn 1 s | turn 2 s (keys kept) | turn 2 s (whole prefill) | whole-context prefill s | "
          "rows in turn 2 | context tokens |")
    print("|---|---|---|---|---|---|---|")
    for i, (one, two, whole, pre, n, ctx) in enumerate(rows):
        print(f"| {i} | {one:.2f} | {two:.2f} | {whole:.2f} | {pre:.2f} | {n} | {ctx:.0f} |")


if __name__ == "__main__":
    main()
