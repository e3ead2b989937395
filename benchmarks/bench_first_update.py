"""How far the first RL step moves the policy, per learning rate and warm-up.

Samples one batch from an SFT checkpoint with the main job's PPO settings, then, for every
setting, restores the checkpoint's weights and takes one training step (its ``ppo.epochs`` x
minibatches AdamW updates) on that same batch, and measures how far the policy moved from the
checkpoint: the exact KL(new || old) of the next-token distributions at the batch's response
positions (summed over a completion's tokens, averaged over completions), and the mean absolute
change of the sampled tokens' log-probs. AdamW's first updates move every weight by about the
learning rate whatever the gradient's size (its bias-corrected second moment is one gradient),
so this is where a too-large first step shows.

    python benchmarks/bench_first_update.py --sft-model runs/sft/model --lrs 1e-5 3e-6 1e-6 --warmups 0 8
    python benchmarks/bench_first_update.py --sft-model runs/sft/model --lrs 1e-5 --warmups 0 --set ppo.vf_coef=0
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-model", required=True)
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-5, 3e-6, 1e-6])
    p.add_argument("--warmups", nargs="+", type=int, default=[0, 8], help="ppo.warmup_steps values (updates).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="Settings for every run (ablations), "
                   "e.g. ppo.vf_coef=0.")
    args = p.parse_args()

    from rlsf.algorithms.base import response_forward
    from rlsf.config import Config
    from rlsf.stages.train import RLTrainer
    from rlsf.runtime.utils import Timer, seed_everything

    cfg = Config.load(ROOT / "configs" / "game24.yaml", {
        "model.name": args.sft_model, "run.output_dir": "/tmp/rlsf-first-update", "run.seed": args.seed,
        "ppo.value_warmup_steps": 0, "ppo.kl_coef": 0.0, **dict(x.split("=", 1) for x in args.set)})
    tr = RLTrainer(cfg)
    from common import print_header

    print_header("bench_first_update", tr.runtime.precision, tr.runtime.reason)
    seed_everything(args.seed)
    exp = tr.rollout_step()
    tr.checker.close()
    start = copy.deepcopy(tr.model.state_dict())
    mask = exp.loss_mask
    n = int(mask.sum())
    print(f"batch: {len(exp)} completions, {n} response tokens; PPO epochs {cfg.ppo.epochs}, "
          f"minibatch {cfg.ppo.minibatch_size}", flush=True)

    @torch.no_grad()
    def logits():
        fo = response_forward(tr.model, exp, temperature=cfg.rollout.temperature, precision=tr.runtime.precision)
        return fo.logits.log_softmax(-1), fo.logp

    ref_logp_all, ref_logp = logits()
    rows = []
    for warm in args.warmups:
        for lr in args.lrs:
            tr.model.load_state_dict(start)
            cfg.ppo.lr, cfg.ppo.warmup_steps = lr, warm
            torch.manual_seed(args.seed)  # the same value-head initialisation and minibatch order each time
            algo = type(tr.algo)(tr.model, tr.tokenizer, tr.task, cfg, tr.runtime)
            stats = algo.step(exp, Timer())
            new_all, new_logp = logits()
            kl_tok = (new_all.exp() * (new_all - ref_logp_all)).sum(-1)  # exact KL(new || old) per position
            kl = float((kl_tok * mask).sum(1).sum() / (mask.sum(1) > 0).sum())
            dlogp = float(((new_logp - ref_logp).abs() * mask).sum() / n)
            rows.append((lr, warm, kl, dlogp, stats.get("loss/approx_kl", float("nan"))))
            print(f"lr {lr:.0e} warm-up {warm:>2}: KL(new||old) {kl:7.3f} nats/completion, "
                  f"|dlogp| {dlogp:.4f}/token, approx_kl in the step {rows[-1][4]:.4f}", flush=True)
    print("\n| lr | warm-up (updates) | KL per completion (nats) | mean abs. change of sampled log-prob |")
    print("|---|---|---|---|")
    for lr, warm, kl, d, _ in rows:
        print(f"| {lr:.0e} | {warm} | {kl:.3f} | {d:.4f} |")


if __name__ == "__main__":
    main()
