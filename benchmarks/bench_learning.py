"""Learning per sample: token-level vs sequence-level rewards vs TRL GRPO, from one SFT checkpoint.

The papers' central claim is that token-level feedback from a symbolic checker teaches more per
sampled completion than a scalar reward. Three settings, each run from the same SFT model with
the same seeds, the same number of sampled completions and the same optimiser settings:

* ``rlsf token``    -- rlsf GRPO, ``reward.mode=token`` (the certificate's spans on their tokens);
* ``rlsf sequence`` -- the same algorithm, ``reward.mode=sequence`` (only the score, at the end);
* ``TRL GRPO``      -- TRL 1.16.0 ``GRPOTrainer`` with the checker's score as its scalar reward.

The rlsf arms run engine v2's GRPO with the ``grpo`` advantage estimator (``grpo.advantage:
grpo``): group baselines over explicit group ids (each prompt's samples share one), each token's
return-to-go minus its group's mean total reward, over the group's spread. With sequence rewards
that is exactly GRPO's (and TRL's) advantage; with token rewards the spread is that of the
centred returns-to-go (see ``rlsf.algorithms.advantages.grpo_advantages``).

Shared settings: ``--prompts`` prompts x ``--samples`` completions per step, one optimiser
update per step, no KL term, temperature 1.0, ``--tokens`` new tokens at most, AdamW at
``--lr``. Every ``--eval-every`` steps the policy is evaluated greedily on the first
``--eval-examples`` held-out (test split) puzzles: success rate (maj@1) and the checker's step
accuracy. The evaluation does not touch the training run's random state (it is saved and
restored around it). The two sides draw their prompts with their own samplers (rlsf: a seeded
permutation per epoch; TRL: its seeded sampler), so the prompt sequence differs between them,
not between the two rlsf settings. rlsf trains and every arm is evaluated on the CPU in the
runtime's precision (``--precision``, default ``auto``: bf16 autocast where the CPU probe finds
bf16 faster, float32 elsewhere); TRL trains in fp32 (``use_cpu=True``).

Every run executes in its own fresh Python process. Each finished run is stored in
``--out/runs.jsonl`` with the study's settings and skipped when the script is run again with the
same settings, so an interrupted study resumes; runs of other settings (or of the protocol
before engine v2, see :data:`PROTOCOL`) stay in the file but are not counted. The summary (mean
and min-max spread over seeds) is printed, written to ``--out/summary.json`` and plotted to
``--out/learning_per_sample.png``.

    rlsf sft --config configs/game24.yaml --run.output_dir runs/sft     # or any SFT checkpoint
    pip install -e ".[bench]"
    python benchmarks/bench_learning.py --sft-model runs/sft/model --out docs/learning
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_machine_flags, start  # noqa: E402

SETTINGS = ("rlsf token", "rlsf sequence", "TRL GRPO")
#: The study's protocol, part of the settings every stored run is matched on. 2 (engine v2): the
#: rlsf arms use ``grpo.advantage: grpo`` over explicit group ids (for token rewards its scale is
#: the spread of the centred returns-to-go, not the std of the totals as before), checks go through
#: the check service (the Game of 24 checker of engine v2), the held-out evaluation no longer
#: reseeds the training run's random state, and the precision is the runtime's. Runs stored
#: without it (protocol 1) are not comparable and are not counted.
PROTOCOL = 2
ADVANTAGE = "grpo"


def eval_config(args, out: str, precision: str):
    """Greedy held-out evaluation; checks run in this process (``check.workers: 0``: 50 Game of 24
    checks take milliseconds, not worth starting worker processes at every evaluation)."""
    from rlsf.config import Config

    return Config.load(None, {
        "model.name": args.sft_model, "model.device": "cpu", "model.autocast": precision,
        "task.options": {"data_path": args.data_path} if args.data_path else {},
        "eval.split": "test", "eval.num_examples": args.eval_examples, "eval.k": 0,
        "eval.max_new_tokens": args.tokens, "eval.batch_size": args.eval_examples, "check.workers": 0,
        "run.output_dir": out, "run.progress": False,
    })


def held_out(args, model, tokenizer) -> dict[str, float]:
    """Held-out greedy success and step accuracy of ``model`` (``evaluate`` leaves the caller's
    random state as it was, so a training run's sampling stream is not reset to ``run.seed`` 0)."""
    from rlsf.stages.evaluate import evaluate

    with tempfile.TemporaryDirectory() as out:
        res = evaluate(eval_config(args, out, args.precision), model=model, tokenizer=tokenizer,
                       output=Path(out) / "eval.json")
    return {"success": res["maj@1"], "step_accuracy": res.get("info/step_accuracy", 0.0)}


def rlsf_config(args, mode: str, seed: int, out: str):
    """An rlsf arm: GRPO (``grpo`` estimator) with ``reward.mode`` = ``mode``; the two arms differ in nothing else."""
    from rlsf.config import Config

    batch = args.prompts * args.samples
    return Config.load(None, {
        "model.name": args.sft_model, "model.device": "cpu", "model.autocast": args.precision,
        "task.options": {"data_path": args.data_path} if args.data_path else {},
        "rollout.prompts_per_step": args.prompts, "rollout.samples_per_prompt": args.samples,
        "rollout.max_new_tokens": args.tokens, "rollout.temperature": 1.0, "rollout.generation_batch_size": batch,
        "reward.mode": mode, "train.algorithm": "grpo", "train.steps": args.steps, "train.save_every": 0,
        "grpo.advantage": ADVANTAGE, "grpo.epochs": 1, "grpo.minibatch_size": batch, "grpo.kl_coef": 0.0,
        "grpo.lr": args.lr, "grpo.weight_decay": 0.0, "grpo.max_grad_norm": 1.0, "grpo.warmup_steps": 0,
        # The study was measured before GRPO's scale floor (grpo.std_floor) existed: plain GRPO's scale.
        "grpo.std_floor": 0.0,
        "run.seed": seed, "run.output_dir": out, "run.progress": False, "run.loggers": ["jsonl"],
    })


def run_rlsf(args, mode: str, seed: int) -> list[dict]:
    from rlsf.stages.train import RLTrainer

    with tempfile.TemporaryDirectory() as out:
        trainer = RLTrainer(rlsf_config(args, mode, seed, out))
        curve = []
        try:
            while trainer.step < args.steps:
                m = trainer.train_step()
                if trainer.step % args.eval_every == 0:
                    curve.append({"step": trainer.step, "samples": trainer.samples,
                                  "train_success": m["reward/success"],
                                  **held_out(args, trainer.model, trainer.tokenizer)})
                    print(f"  {mode} seed {seed} step {trainer.step}: {curve[-1]}", flush=True)
        finally:  # train_step() starts the check workers; train() would close them, we call it step by step
            if trainer.checker is not None:
                trainer.checker.close()
    return curve


def trl_config(args, seed: int, out: str):
    """The TRL arm's ``GRPOConfig``: the shared settings of the module docstring in TRL's terms."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=out, per_device_train_batch_size=args.prompts * args.samples, num_generations=args.samples,
        max_completion_length=args.tokens, use_cpu=True, max_steps=args.steps, logging_steps=1,
        report_to="none", save_strategy="no", learning_rate=args.lr, lr_scheduler_type="constant",
        beta=0.0, temperature=1.0, gradient_checkpointing=False, seed=seed, weight_decay=0.0,
        max_grad_norm=1.0,
    )


def run_trl(args, seed: int) -> list[dict]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOTrainer

    from rlsf.models.loading import load_tokenizer
    from rlsf.tasks import get_task

    task = get_task("game24", **({"data_path": args.data_path} if args.data_path else {}))
    examples = task.load("train")
    rows = [{"prompt": task.prompt(ex), "ex_id": i} for i, ex in enumerate(examples)]
    tokenizer = load_tokenizer(args.sft_model)
    curve: list[dict] = []
    seen = {"samples": 0, "success": []}

    def checker_score(completions, ex_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        certs = [task.check(examples[i], t) for t, i in zip(texts, ex_id)]
        seen["samples"] += len(certs)
        seen["success"] = [c.correct for c in certs]
        return [c.score for c in certs]

    class HeldOut(TrainerCallback):
        def on_step_end(self, targs, state, control, model=None, **kw):
            if state.global_step % args.eval_every == 0:
                was = model.training
                curve.append({"step": state.global_step, "samples": seen["samples"],
                              "train_success": sum(seen["success"]) / max(len(seen["success"]), 1),
                              **held_out(args, model, tokenizer)})
                model.train(was)
                print(f"  TRL seed {seed} step {state.global_step}: {curve[-1]}", flush=True)

    with tempfile.TemporaryDirectory() as out:
        model = AutoModelForCausalLM.from_pretrained(args.sft_model, dtype=torch.float32)
        trainer = GRPOTrainer(model=model, reward_funcs=checker_score, args=trl_config(args, seed, out),
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[HeldOut()])
        trainer.train()
    return curve


def run_isolated(args, setting: str, seed: int) -> list[dict]:
    """One run in a fresh Python process: no allocator state, threads or caches carried over
    from the previous run (sharing one process slowed TRL's generation ~10x here). The child
    gets the precision already resolved; its progress lines are passed through as they come."""
    argv = [a for a in sys.argv[1:]]
    cmd = [sys.executable, __file__, *argv, "--precision", args.precision, "--worker", setting,
           "--worker-seed", str(seed)]
    line = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for out in proc.stdout:
            if out.startswith("CURVE "):
                line = out
            else:
                print(out, end="", flush=True)
    if proc.returncode or line is None:
        sys.exit(f"{setting} seed {seed} failed (exit {proc.returncode})")
    return json.loads(line[len("CURVE "):])


def study_settings(args) -> dict:
    """What a stored run must match to be counted (``args.precision`` resolved: bf16 or none)."""
    keys = ("steps", "prompts", "samples", "tokens", "lr", "eval_every", "eval_examples", "sft_model")
    return {**{k: getattr(args, k) for k in keys}, "precision": args.precision, "advantage": ADVANTAGE,
            "protocol": PROTOCOL}


def stored_runs(log: Path, settings: dict) -> list[dict]:
    """The runs in ``log`` (runs.jsonl) made with exactly these settings."""
    done = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    return [r for r in done if r.get("settings") == settings]


def summarise(runs: list[dict], start: dict) -> dict:
    out = {}
    for setting in SETTINGS:
        curves = [r["curve"] for r in runs if r["setting"] == setting]
        if not curves:
            continue
        points = [{"samples": 0, **{k: {"mean": start[k], "min": start[k], "max": start[k]} for k in start}}]
        for i in range(min(len(c) for c in curves)):
            pt = {"samples": curves[0][i]["samples"], "seeds": len(curves)}
            for k in ("success", "step_accuracy", "train_success"):
                vals = [c[i][k] for c in curves]
                pt[k] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}
            points.append(pt)
        out[setting] = points
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in zip(axes, ("success", "step_accuracy"),
                              ("held-out success (greedy maj@1)", "held-out step accuracy (checker)")):
        for setting, points in summary.items():
            xs = [p["samples"] for p in points]
            n = points[-1].get("seeds", 0)
            ax.plot(xs, [p[key]["mean"] for p in points], marker="o", label=f"{setting} ({n} seed{'s' * (n != 1)})")
            ax.fill_between(xs, [p[key]["min"] for p in points], [p[key]["max"] for p in points], alpha=0.2)
        ax.set_xlabel("sampled completions")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-model", required=True, help="The SFT checkpoint every run starts from.")
    ap.add_argument("--out", default="runs/learning", help="Folder for runs.jsonl, summary.json and the plot.")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=12, help="Training steps per run.")
    ap.add_argument("--prompts", type=int, default=4, help="Prompts per step.")
    ap.add_argument("--samples", type=int, default=4, help="Completions per prompt.")
    ap.add_argument("--tokens", type=int, default=96, help="Maximum new tokens.")
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--eval-every", type=int, default=6, help="Steps between held-out evaluations.")
    ap.add_argument("--eval-examples", type=int, default=50, help="Held-out puzzles evaluated.")
    ap.add_argument("--data-path", help="Game of 24 CSV (default: the tree-of-thoughts-llm package copy).")
    add_machine_flags(ap)
    ap.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # child process: one run, its curve on stdout (the parent resolved --precision)
        torch.set_num_threads(args.threads)
        seed = args.worker_seed
        curve = run_trl(args, seed) if args.worker == "TRL GRPO" else run_rlsf(args, args.worker.split()[1], seed)
        print("CURVE " + json.dumps(curve), flush=True)
        return
    if not Path(args.sft_model).is_dir():
        sys.exit(f"--sft-model {args.sft_model}: no such folder (train one with `rlsf sft`)")
    if "TRL GRPO" in args.settings:
        try:
            import trl
        except ImportError:
            sys.exit('the TRL arm needs TRL: pip install -e ".[bench]" (or leave it out with --settings)')
    extra = [f"rlsf arms: GRPO, grpo.advantage {ADVANTAGE}"]
    if "TRL GRPO" in args.settings:
        extra.append(f"TRL {trl.__version__}: fp32 (use_cpu=True)")
    args.precision, _ = start("bench_learning: learning per sample, token vs sequence rewards vs TRL GRPO", args,
                              extra=extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    settings = study_settings(args)
    done = stored_runs(log, settings)

    start_file = out / "start.json"  # the SFT checkpoint's held-out figures (the curves' first point)
    initial = json.loads(start_file.read_text()) if start_file.is_file() else None
    if initial is None or initial.get("settings") != settings:
        from rlsf.models.loading import load_model, load_tokenizer

        initial = {"settings": settings, **held_out(args, load_model(args.sft_model), load_tokenizer(args.sft_model))}
        start_file.write_text(json.dumps(initial) + "\n")
    print(f"SFT checkpoint: {initial}", flush=True)

    for seed in args.seeds:
        for setting in args.settings:
            if any(r["setting"] == setting and r["seed"] == seed for r in done):
                continue
            t0 = time.perf_counter()
            curve = run_isolated(args, setting, seed)
            rec = {"setting": setting, "seed": seed, "settings": settings, "curve": curve,
                   "time_s": round(time.perf_counter() - t0, 1)}
            done.append(rec)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    summary = summarise(done, {k: initial[k] for k in ("success", "step_accuracy")})
    (out / "summary.json").write_text(json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
    plot(summary, out / "learning_per_sample.png",
         f"Game of 24, SmolLM2-135M from {Path(args.sft_model).name}: {args.prompts}x{args.samples} completions/step, "
         f"lr {args.lr}, rlsf precision {args.precision}; mean and min-max over the seeds run")
    print(f"\n{'setting':<15} {'samples':>7}  {'success mean [min, max]':<26} step accuracy mean [min, max]")
    for setting, points in summary.items():
        for p in points[1:]:
            s, a = p["success"], p["step_accuracy"]
            print(f"{setting:<15} {p['samples']:>7}  {s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"
                  f"{'':<8} {a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}]")
    print(f"\nwrote {out / 'summary.json'} and {out / 'learning_per_sample.png'}")


if __name__ == "__main__":
    main()
