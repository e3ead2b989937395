"""Per-token character offsets of a completion: the old prefix method vs incremental detokenisation.

``decode_with_offsets`` used to decode every prefix of the sampled ids (one decode per token,
quadratic); it now decodes a short window per token (linear) and falls back to the prefix method
only when a tokenizer's decodes do not add up. This times both on the SmolLM2 tokenizer, in the
same run, for sampled-like completions of 256, 1024 and 2048 tokens: Game-of-24-style text
tokenised, and ids drawn uniformly from the whole vocabulary (many partial UTF-8 characters).
Each figure is the best of ``--repeat`` runs; the results are checked to be identical.

    python benchmarks/bench_offsets.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def game24_text(rng: random.Random, n_chars: int) -> str:
    lines = []
    while sum(map(len, lines)) < n_chars:
        a, b, c, d = (rng.randint(1, 13) for _ in range(4))
        lines.append(f"{a} + {b} = {a + b} (left: {a + b} {c} {d})")
        lines.append(f"{c} * {d} = {c * d} (left: {a + b} {c * d})")
        lines.append(f"Answer: ({a} + {b}) - ({c} * {d}) = {a + b - c * d}  ✓ é 😀\n")
    return "\n".join(lines)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="Runs per figure (the best is kept).")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    args = ap.parse_args()

    from rlsf.feedback.offsets import Detokenizer, _decode_with_offsets_prefix, decode_with_offsets
    from rlsf.models.loading import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("smollm2-135m"))
    detok = Detokenizer.from_tokenizer(tok)
    rng = random.Random(0)
    text_ids = tok(game24_text(rng, 40_000), add_special_tokens=False)["input_ids"]

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"tokenizer: SmolLM2 ({type(tok).__name__}, vocab {len(tok)}); detokenizer: {detok}")
    print(f"best of {args.repeat}; old = prefix method on the HF tokenizer, new = decode_with_offsets")
    print(f"{'ids':<10}{'tokens':>7}{'old ms':>11}{'new ms':>9}{'new(Detok) ms':>15}{'old/new':>9}")
    for kind in ("game24", "random"):
        for n in args.lengths:
            if kind == "game24":
                ids = text_ids[:n] + [tok.eos_token_id]
            else:
                ids = [rng.randrange(len(tok)) for _ in range(n)]
            old = _decode_with_offsets_prefix(tok, ids)
            assert decode_with_offsets(tok, ids) == old and detok.text_and_offsets(ids) == old
            t_old = best(lambda: _decode_with_offsets_prefix(tok, ids), args.repeat)
            t_new = best(lambda: decode_with_offsets(tok, ids), max(args.repeat, 10))
            t_det = best(lambda: detok.text_and_offsets(ids), max(args.repeat, 10))
            print(f"{kind:<10}{len(ids):>7}{t_old * 1e3:>11.1f}{t_new * 1e3:>9.2f}{t_det * 1e3:>15.2f}{t_old / t_new:>8.0f}x")


if __name__ == "__main__":
    main()
