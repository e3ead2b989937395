"""Training across processes (gloo on 127.0.0.1): an update in two processes is the update one
process makes on the same global batch, and a two-process launch writes its run folder once.

The equality tests feed one fixed batch to the algorithm's ``step`` (PPO, GRPO) and to SFT's
``sft_update``: one process takes all of it, each of two processes its contiguous half (whole
groups), as the stages shard it. Tolerance: the gradients after the all-reduce agree to 1e-5
relative to the largest, parameters and logged figures to 1e-5 (the sums run in another order).
The FSDP2 tests (``fsdp`` in their names) do the same with the policy sharded over the two
processes (whole gradients and weights gathered from the shards), and check sampling from the
gathered weights, checkpoints that move between sharded and unsharded runs, and the refusals.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rlsf.config import Config
from rlsf.experience import Experience
from rlsf.runtime.utils import Timer

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
#: (case, settings): one update on the fixed batch of 4 prompts x 2 samples (8 rows, minibatch = batch).
CASES = {
    "ppo": {"train.algorithm": "ppo", "ppo.epochs": 2, "ppo.minibatch_size": 8, "ppo.kl_coef": 0.05,
            "ppo.entropy_coef": 0.01, "ppo.batch_entropy_coef": 0.1, "ppo.lr": 1e-3},
    "grpo": {"train.algorithm": "grpo", "grpo.minibatch_size": 8, "grpo.kl_coef": 0.02,
             "grpo.batch_entropy_coef": 0.1, "grpo.lr": 1e-3},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fixed_batch(vocab: int, prompts: int = 4, samples: int = 2) -> Experience:
    """A batch as a rollout makes it: left-padded prompts, right-padded responses, token rewards,
    sampling log-probs; rows of one prompt are adjacent and share a group id."""
    g = torch.Generator().manual_seed(0)
    B, P, R = prompts * samples, 6, 7
    p_mask = torch.ones(B, P, dtype=torch.long)
    r_mask = torch.ones(B, R, dtype=torch.long)
    for i in range(B):
        p_mask[i, : (i // samples) % 3] = 0  # prompt lengths 6, 5, 4, 6
        r_mask[i, R - (i % 4):] = 0  # response lengths 7, 6, 5, 4
    prompt = torch.randint(5, vocab, (prompts, P), generator=g).repeat_interleave(samples, 0) * p_mask
    response = torch.randint(5, vocab, (B, R), generator=g) * r_mask
    return Experience(prompt_ids=prompt, prompt_mask=p_mask, response_ids=response, response_mask=r_mask,
                      truncated=[i % 4 == 0 for i in range(B)],
                      logprobs=-torch.rand(B, R, generator=g) * 3 * r_mask,
                      group=torch.arange(prompts).repeat_interleave(samples),
                      rewards=torch.randn(B, R, generator=g) * r_mask)


def sft_pairs(vocab: int, n: int = 4) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(5, vocab, (3 + i,), generator=g).tolist(), torch.randint(5, vocab, (5 - i % 2,),
                                                                                   generator=g).tolist())
            for i in range(n)]


def one_update(model_dir: str, case: str) -> dict:
    """This process's share of the fixed batch through the algorithm's step: statistics, weights, gradients."""
    from rlsf.algorithms import ALGORITHMS
    from rlsf.models.loading import load_model, load_tokenizer
    from rlsf.runtime import distributed
    from rlsf.runtime.device import Runtime

    torch.manual_seed(0)
    cfg = Config.load(None, {"model.name": model_dir, "model.autocast": "none", "rollout.prompts_per_step": 4,
                             "rollout.samples_per_prompt": 2, **CASES[case]})
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    algo = ALGORITHMS[case](model, tok, None, cfg, Runtime("cpu", "none", "test", "cpu"))
    exp = fixed_batch(len(tok))
    exp = exp.select(distributed.shard(list(range(len(exp)))))
    torch.manual_seed(1)
    stats = algo.step(exp, Timer())
    params = [p for g in algo.optimizer.param_groups for p in g["params"]]
    return {"stats": stats, "params": [p.detach().clone() for p in params],
            "grads": [p.grad.clone() if p.grad is not None else None for p in params]}


def sft_step(model_dir: str) -> dict:
    from rlsf.algorithms.supervised import collate, sft_update
    from rlsf.models.loading import load_model
    from rlsf.runtime import distributed
    from rlsf.runtime.utils import make_adamw

    model = load_model(model_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw([{"params": params, "lr": 1e-3}])
    pairs = distributed.shard(sft_pairs(model.config.vocab_size))
    loss, gn = sft_update(model, opt, params, collate(pairs, 0), "none", 1.0)
    return {"stats": {"loss": float(loss), "grad_norm": float(gn)}, "params": [p.detach().clone() for p in params],
            "grads": [p.grad.clone() for p in params]}


def _join(rank: int, world: int, port: int) -> None:
    """This spawned process joins the gloo group of ``world`` processes on 127.0.0.1, one thread each."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
                       "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    torch.set_num_threads(1)
    from rlsf.runtime import distributed

    assert distributed.setup("cpu").size == world


def _worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    _join(rank, world, port)
    from rlsf.stages.sft import sft
    results = {case: one_update(model_dir, case) for case in CASES}
    results["sft"] = sft_step(model_dir)
    # The SFT stage end to end: rank 0 writes the run folder, once.
    cfg = Config.load(None, {"model.name": model_dir, "model.autocast": "none", "sft.steps": 2, "sft.batch_size": 4,
                             "sft.lr": 1e-3, "task.train_examples": 16, "run.output_dir": str(Path(out) / "sft_run"),
                             "run.progress": False})
    results["sft_stage"] = sft(cfg)
    torch.save(results, Path(out) / f"rank{rank}.pt")


def assert_same(one: dict, two: dict, what: str) -> None:
    for k, v in one["stats"].items():
        assert two["stats"][k] == pytest.approx(v, abs=TOL, rel=TOL), f"{what}: {k}"
    assert set(one["stats"]) == set(two["stats"]), what
    scale = max(float(g.abs().max()) for g in one["grads"] if g is not None)
    for g1, g2 in zip(one["grads"], two["grads"], strict=True):
        assert (g1 is None) == (g2 is None), what
        if g1 is not None:
            assert float((g1 - g2).abs().max()) <= TOL * scale, f"{what}: gradients"
    for p1, p2 in zip(one["params"], two["params"], strict=True):
        assert float((p1 - p2).abs().max()) <= TOL, f"{what}: parameters"


@pytest.fixture(scope="module")
def two_processes(tiny_model_dir, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("dist")
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), tiny_model_dir, str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", [*CASES, "sft"])
def test_two_processes_update_as_one_on_the_global_batch(case, two_processes, tiny_model_dir):
    _, ranks = two_processes
    one = sft_step(tiny_model_dir) if case == "sft" else one_update(tiny_model_dir, case)
    for r, res in enumerate(ranks):
        assert_same(one, res[case], f"{case}, rank {r}")
    if case != "sft":  # the figures of a batch-wide statistic (whitening, batch entropy) are the global ones
        assert {"loss/total", "batch_entropy", "loss/grad_norm", "kl"} <= set(one["stats"])


def test_the_sft_stage_writes_its_run_folder_once(two_processes):
    out, ranks = two_processes
    run = out / "sft_run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["runtime"]["world_size"] == 2 and config["runtime"]["distributed_backend"] == "gloo"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert ranks[0]["sft_stage"]["loss/sft"] == ranks[1]["sft_stage"]["loss/sft"]
    assert (run / "model" / "config.json").is_file() and [p.name for p in (run / "checkpoints").iterdir()] == [
        "step_000002"]


def _launch(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    return subprocess.run([accelerate, "launch", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_accelerate_launch_trains_in_two_processes_and_writes_once(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    flags = ["--config", str(ROOT / "configs" / "game24.yaml"), "--model", tiny_model_dir, "--steps", "1",
             "--rollout.prompts_per_step", "2", "--rollout.samples_per_prompt", "2", "--rollout.max_new_tokens", "8",
             "--ppo.minibatch_size", "2", "--ppo.epochs", "1", "--model.autocast", "none",
             "--model.sampling_autocast", "none", "--check.workers", "0", "--no-progress", "--output-dir", str(run)]
    # The shipped 8-GPU file (distributed_type MULTI_GPU: torchrun) with 2 processes; without a GPU, gloo.
    proc = _launch(["--config_file", str(ROOT / "configs" / "accelerate" / "8gpu.yaml"), "--num_processes", "2",
                    "--main_process_port", str(free_port()), "-m", "rlsf", "train", *flags], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["runtime"]["world_size"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and records[0]["samples"] == 4  # both ranks' rows, logged once
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000001"]
    assert (run / "model" / "config.json").is_file()
    assert proc.stderr.count("rlsf: device cpu") == 1  # rank 0 speaks for the run

    # The checkpoint of two processes resumes in one.
    from rlsf.stages.train import RLTrainer

    cfg = Config.load(str(run / "config.yaml"), {"train.steps": 2, "run.resume": True})
    RLTrainer(cfg).train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[1]["samples"] == 8
    assert yaml.safe_load((run / "config.yaml").read_text())["runtime"]["world_size"] == 1


def test_torchrun_pipeline_in_two_processes(tiny_model_dir, tmp_path):
    """`torchrun --nproc-per-node 2 -m rlsf pipeline`: SFT and RL across both processes, the two
    evaluations on rank 0, one run folder (each stage's config.yaml says world_size 2)."""
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    flags = ["--config", str(ROOT / "configs" / "game24.yaml"), "--model", tiny_model_dir, "--sft.steps", "2",
             "--sft.batch_size", "4", "--steps", "1", "--rollout.prompts_per_step", "2",
             "--rollout.samples_per_prompt", "2", "--rollout.max_new_tokens", "8", "--ppo.minibatch_size", "2",
             "--eval.num_examples", "4", "--eval.k", "2", "--eval.max_new_tokens", "8", "--model.autocast", "none",
             "--check.workers", "0", "--no-progress", "--output-dir", str(run)]
    proc = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "rlsf",
                           "pipeline", *flags], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("sft", "rl"):
        assert yaml.safe_load((run / stage / "config.yaml").read_text())["runtime"]["world_size"] == 2
    records = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and records[0]["samples"] == 4
    assert (run / "eval_sft.json").is_file() and (run / "eval_rl.json").is_file() and (run / "summary.json").is_file()
    assert proc.stderr.count("rlsf: device cpu") == 1


def test_a_launch_that_started_fewer_processes_than_asked_is_refused(monkeypatch):
    """`accelerate launch --cpu --num_processes 2` runs the command once (its multi-CPU launcher needs
    mpirun), with this environment: refused rather than trained in one process."""
    from rlsf.runtime import distributed
    from rlsf.settings import ConfigError

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ConfigError, match="started one process"):
        distributed.setup("auto")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed is not supported"):
        distributed.setup("auto")


# ---- FSDP2 (rlsf/runtime/fsdp.py) ---------------------------------------------------------------------
#: (case, settings): one update on the fixed batch, the policy sharded over two processes with FSDP2.
FSDP_CASES = {
    "ppo": {**CASES["ppo"], "model.reference_precision": "bf16"},  # the sharded reference stores bf16 matrices
    "grpo": CASES["grpo"],
    "ppo_lora": {**CASES["ppo"], "model.lora": True, "model.lora_r": 4},  # adapters sharded; shared reference
    "grpo_checkpointing": {**CASES["grpo"], "model.gradient_checkpointing": True},
}


def policy_update(model_dir: str, case: str, fsdp_on: bool) -> dict:
    """As :func:`one_update`, with the policy loaded as the stages load it (``load_policy``: LoRA,
    gradient checkpointing, FSDP when ``fsdp_on`` in several processes); whole weights and gradients."""
    from rlsf.algorithms import ALGORITHMS
    from rlsf.runtime import distributed, fsdp
    from rlsf.runtime.device import Runtime
    from rlsf.stages.context import load_policy

    torch.manual_seed(0)
    cfg = Config.load(None, {"model.name": model_dir, "model.autocast": "none", "model.fsdp": fsdp_on,
                             "rollout.prompts_per_step": 4, "rollout.samples_per_prompt": 2, **FSDP_CASES[case]})
    rt = Runtime("cpu", "none", "test", "cpu")
    model, tok = load_policy(cfg, rt)
    assert fsdp.is_sharded(model) == (fsdp_on and distributed.size() > 1)
    algo = ALGORITHMS[cfg.train.algorithm](model, tok, None, cfg, rt)
    exp = fixed_batch(len(tok))
    exp = exp.select(distributed.shard(list(range(len(exp)))))
    torch.manual_seed(1)
    stats = algo.step(exp, Timer())
    params = [p for g in algo.optimizer.param_groups for p in g["params"]]
    return {"stats": stats, "params": [fsdp.full_tensor(p.detach()).clone() for p in params],
            "grads": [fsdp.full_tensor(p.grad).clone() if p.grad is not None else None for p in params]}


def fsdp_sft_step(model_dir: str, fsdp_on: bool) -> dict:
    from rlsf.algorithms.supervised import collate, sft_update
    from rlsf.runtime import distributed, fsdp
    from rlsf.runtime.utils import make_adamw

    model = load_tiny(model_dir, fsdp_on)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw([{"params": params, "lr": 1e-3}])
    pairs = distributed.shard(sft_pairs(model.config.vocab_size))
    loss, gn = sft_update(model, opt, params, collate(pairs, 0), "none", 1.0)
    return {"stats": {"loss": float(loss), "grad_norm": float(gn)},
            "params": [fsdp.full_tensor(p.detach()).clone() for p in params],
            "grads": [fsdp.full_tensor(p.grad).clone() for p in params]}


def load_tiny(model_dir: str, fsdp_on: bool):
    from rlsf.models.loading import load_model
    from rlsf.runtime import fsdp

    model = load_model(model_dir)
    return fsdp.shard_model(model) if fsdp_on else model


def greedy_rollouts(model_dir: str, fsdp_on: bool) -> dict:
    """Greedy completions of 4 prompts by each engine, sampled as the trainer samples (the sampler's
    sync and release around them): from the gathered weights under FSDP."""
    from rlsf.models.loading import load_tokenizer
    from rlsf.rollout.engines import SamplingModel, generate

    model, tok = load_tiny(model_dir, fsdp_on), load_tokenizer(model_dir)
    prompts = ["2 3 4 5", "1 1 8 3", "12 7 1 1", "6 6 6 6"]
    out = {}
    for engine, fused in (("builtin", True), ("builtin", False), ("hf", False)):
        sampler = SamplingModel(model, "none", fused=fused)
        sampler.sync()
        exp = generate(sampler.model, tok, prompts, max_new_tokens=6, do_sample=False, engine=engine, fused_step=fused)
        sampler.release()
        out[f"{engine}{'_fused' if fused else ''}"] = exp.response_ids
    return out


def sft_config(model_dir: str, run: Path, steps: int, **settings) -> Config:
    return Config.load(None, {"model.name": model_dir, "model.autocast": "none", "sft.steps": steps,
                              "sft.batch_size": 4, "sft.lr": 1e-3, "task.train_examples": 16,
                              "run.output_dir": str(run), "run.progress": False, **settings})


def _fsdp_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    _join(rank, world, port)
    from rlsf.stages.sft import sft
    times = {}
    results = {}
    for case in FSDP_CASES:
        t0 = time.perf_counter()
        results[case] = policy_update(model_dir, case, True)
        times[case] = time.perf_counter() - t0
    results["sft"] = fsdp_sft_step(model_dir, True)
    results["rollouts"] = greedy_rollouts(model_dir, True)
    t0 = time.perf_counter()
    # The SFT stage sharded: 3 steps, checkpoints after steps 2 and 3 (then resumed in one process).
    sft(sft_config(model_dir, Path(out) / "fsdp_run", 3, **{"sft.save_every": 2, "model.fsdp": True}))
    # A one-process run's checkpoint of step 2, continued to step 3 sharded.
    sft(sft_config(model_dir, Path(out) / "one_then_fsdp", 3, **{"run.resume": True, "model.fsdp": True}))
    times["sft stages"] = time.perf_counter() - t0
    results["times"] = times
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def fsdp_processes(tiny_model_dir, tmp_path_factory) -> tuple[Path, list[dict]]:
    from rlsf.stages.sft import sft

    out = tmp_path_factory.mktemp("fsdp")
    sft(sft_config(tiny_model_dir, out / "one_then_fsdp", 2))  # one process, unsharded: 2 steps, a checkpoint
    torch.multiprocessing.spawn(_fsdp_worker, args=(2, free_port(), tiny_model_dir, str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", [*FSDP_CASES, "sft"])
def test_fsdp_in_two_processes_updates_as_one_process(case, fsdp_processes, tiny_model_dir):
    """FSDP2 over two gloo processes, each its half of the batch, against one unsharded process on
    all of it: whole gradients after FSDP's reduce-scatter to 1e-5 of the largest, weights after the
    AdamW step and every logged figure (grad_norm: the global norm over the shards) to 1e-5."""
    _, ranks = fsdp_processes
    one = fsdp_sft_step(tiny_model_dir, False) if case == "sft" else policy_update(tiny_model_dir, case, False)
    for r, res in enumerate(ranks):
        assert_same(one, res[case], f"fsdp {case}, rank {r}")
    if case != "sft":
        assert {"loss/total", "batch_entropy", "loss/grad_norm"} <= set(one["stats"])


def test_fsdp_rollouts_sample_from_the_whole_weights(fsdp_processes, tiny_model_dir):
    _, ranks = fsdp_processes
    one = greedy_rollouts(tiny_model_dir, False)
    for res in ranks:
        assert set(res["rollouts"]) == set(one)
        for engine, ids in one.items():
            assert torch.equal(res["rollouts"][engine], ids), engine


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from rlsf.models.loading import load_model

    return {k: v.clone() for k, v in load_model(str(folder)).state_dict().items()}


def _assert_same_weights(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), what
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= TOL, f"{what}: {k}"


def test_fsdp_checkpoints_resume_in_one_process_and_back(fsdp_processes, tiny_model_dir, tmp_path):
    """The SFT stage sharded over two processes writes its folder once (config.yaml says fsdp: true),
    its checkpoint of step 2 continued by one unsharded process reaches the weights the sharded run
    reached at step 3; a one-process checkpoint continued sharded reaches the one-process weights."""
    import shutil

    from rlsf.stages.sft import sft

    out, _ = fsdp_processes
    run = out / "fsdp_run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["runtime"]["world_size"] == 2 and config["runtime"]["fsdp"] is True
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    sharded_end = _weights(run / "model")

    # Sharded -> one process: the checkpoint of step 2, resumed unsharded to step 3.
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000003")
    sft(sft_config(tiny_model_dir, resumed, 3, **{"run.resume": True}))
    _assert_same_weights(sharded_end, _weights(resumed / "model"), "sharded checkpoint resumed in one process")

    # One process -> sharded: the one-process run uninterrupted to step 3 against its step-2 checkpoint
    # continued by the two sharded processes.
    straight = tmp_path / "straight"
    sft(sft_config(tiny_model_dir, straight, 3))
    _assert_same_weights(_weights(straight / "model"), _weights(out / "one_then_fsdp" / "model"),
                         "one-process checkpoint resumed sharded")


def test_accelerate_launch_with_fsdp2_trains_lora_and_resumes_in_one_process(tiny_model_dir, tmp_path):
    """`accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2`: one PPO step
    with LoRA adapters sharded (rollout from the gathered weights, the reference the adapter-disabled
    policy), one config.yaml (fsdp: true), one checkpoint of whole tensors, the merged model; one
    unsharded process resumes the checkpoint."""
    from rlsf.models.loading import LoraSpec, load_model
    from rlsf.runtime.checkpoint import load_trainable_state

    run = tmp_path / "run"
    flags = ["--config", str(ROOT / "configs" / "game24.yaml"), "--model", tiny_model_dir, "--steps", "1",
             "--lora", "true", "--model.lora_r", "4", "--rollout.prompts_per_step", "2",
             "--rollout.samples_per_prompt", "2", "--rollout.max_new_tokens", "8", "--ppo.minibatch_size", "2",
             "--ppo.epochs", "1", "--model.autocast", "none", "--model.sampling_autocast", "none",
             "--check.workers", "0", "--no-progress", "--output-dir", str(run)]
    proc = _launch(["--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"), "--num_processes", "2",
                    "--main_process_port", str(free_port()), "-m", "rlsf", "train", *flags], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["runtime"]["world_size"] == 2 and config["runtime"]["fsdp"] is True
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and records[0]["samples"] == 4
    assert records[0]["rollout/logprob_gap"] < 1e-4  # sampled from the gathered weights the update scores with
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000001"]
    state = torch.load(run / "checkpoints" / "step_000001" / "state.pt", weights_only=False)
    assert all(type(t) is torch.Tensor for t in state["model"].values())  # whole tensors, no shards
    # The saved model is the base with the checkpoint's adapters merged.
    policy = load_model(tiny_model_dir, lora=LoraSpec(r=4, alpha=32))
    load_trainable_state(policy, state["model"])
    merged = policy.merge_and_unload().state_dict()
    saved = load_model(str(run / "model")).state_dict()
    assert max(float((merged[k] - saved[k]).abs().max()) for k in saved) <= TOL

    from rlsf.stages.train import RLTrainer

    cfg = Config.load(str(run / "config.yaml"), {"train.steps": 2, "run.resume": True})
    RLTrainer(cfg).train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[1]["samples"] == 8
    assert yaml.safe_load((run / "config.yaml").read_text())["runtime"]["fsdp"] is False


def test_fsdp_launches_rlsf_does_not_build_are_refused(monkeypatch):
    """FSDP version 1, CPU offloading and accelerate's activation checkpointing: one line each."""
    from rlsf.runtime import distributed
    from rlsf.settings import ConfigError

    for name in ("WORLD_SIZE", "ACCELERATE_USE_CPU", "FSDP_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP version 1: rlsf builds FSDP2 only"):
        distributed.setup("auto")
    monkeypatch.setenv("FSDP_VERSION", "2")
    distributed.setup("auto")  # FSDP2 in one process: nothing to refuse (the model trains unsharded)
    for name, hint in (("FSDP_OFFLOAD_PARAMS", "offloading"), ("FSDP_ACTIVATION_CHECKPOINTING",
                                                                "model.gradient_checkpointing")):
        monkeypatch.setenv(name, "true")
        with pytest.raises(ConfigError, match=hint):
            distributed.setup("auto")
        monkeypatch.setenv(name, "false")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "SHARD_GRAD_OP")
    with pytest.raises(ConfigError, match="FSDP2 takes true or false"):
        distributed.setup("auto")


def test_fsdp_in_one_process_trains_unsharded(tiny_model_dir, capsys):
    from rlsf.runtime import fsdp
    from rlsf.runtime.device import Runtime
    from rlsf.stages.context import load_policy

    cfg = Config.load(None, {"model.name": tiny_model_dir, "model.fsdp": True})
    model, _ = load_policy(cfg, Runtime("cpu", "none", "test", "cpu"))
    assert not fsdp.is_sharded(model) and not fsdp.active()
    assert "model.fsdp: one process, nothing to shard" in capsys.readouterr().err
