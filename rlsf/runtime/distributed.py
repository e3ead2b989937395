"""Training across processes: which process this is, and the few collectives the stages use.

A stage launched in several processes (``accelerate launch --multi_gpu --num_processes N -m rlsf
...``, ``torchrun --nproc-per-node N -m rlsf ...``) joins one process group through accelerate's
:class:`~accelerate.PartialState`: gloo on a CPU, NCCL on GPUs (each process on its own GPU). In
one process nothing here starts anything, and every collective is the identity, so the
single-process path is unchanged.

The update is data-parallel with exactly DDP's arithmetic, written out rather than wrapped: the
algorithms run their own forward passes through the model's internals, so instead of
``DistributedDataParallel`` each rank back-propagates *its share of the global loss* (token sums
over the global token count) and :func:`all_reduce_gradients` sums the gradients over ranks
before clipping and the optimiser step. The summed gradient is then the gradient of the global
batch's loss, and every rank takes the same optimiser step from the same weights (broadcast from
rank 0 at start, :func:`broadcast_tensors`, as DDP does).

With FSDP2 (``model.fsdp``, ``accelerate launch --use_fsdp --fsdp_version 2``) the policy's
parameters are shards (:mod:`rlsf.runtime.fsdp`): FSDP reduce-scatters their gradients (summed,
like :func:`all_reduce_gradients`, which then leaves them alone and sums the plain parameters
only) and :func:`broadcast_tensors` skips them (each rank's shard was cut from rank 0's weights).

``accelerate launch --cpu --num_processes N`` does *not* start N processes (accelerate's multi-CPU
launcher needs ``mpirun``; without it one process runs): :func:`setup` refuses that case rather
than silently training in one process. FSDP version 1, the accelerate FSDP options rlsf does not
build (CPU offloading, accelerate's activation checkpointing) and DeepSpeed launches are refused too.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from rlsf.runtime.extras import require
from rlsf.settings import ConfigError

#: The process group's time-out: generous, because while rank 0 alone evaluates (``rlsf
#: pipeline``) the other ranks wait at a barrier.
TIMEOUT_ENV = "RLSF_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 4 * 3600
#: Gradients are summed in flat buckets of about this many bytes (DDP's default is 25 MiB).
BUCKET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_dict(self) -> dict[str, Any]:
        return {"world_size": self.size, "distributed_backend": self.backend or "none"}


_world = World()
_solo = False  # inside solo(): rank 0 working alone, every collective is the identity


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


def launched_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, or MPI's variables); 1 if none."""
    return _env_int("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", default=1)


def fsdp_launch() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch --use_fsdp``; :mod:`rlsf.runtime.fsdp`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def fsdp_reshard_after_forward() -> bool:
    """accelerate's ``--fsdp_reshard_after_forward`` (true when not launched by accelerate): whether
    decoder layers free their gathered weights after forward (false: kept until the backward pass)."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"accelerate launch --fsdp_reshard_after_forward {value}: FSDP2 takes true or false")
    return value == "true"


def _refuse_unsupported_fsdp() -> None:
    """FSDP2 only, and only the accelerate options rlsf builds."""
    version = os.environ.get("FSDP_VERSION", "1").strip()
    if version != "2":
        raise ConfigError(f"accelerate launch --use_fsdp asked for FSDP version {version}: rlsf builds FSDP2 only "
                          "(torch's fully_shard); add --fsdp_version 2 (fsdp_version: 2 in the accelerate config "
                          "file, as in configs/accelerate/fsdp2.yaml), or set model.fsdp: true under torchrun")
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ConfigError("accelerate launch --fsdp_offload_params true: offloading the shards to the CPU is not "
                          "built in rlsf; leave it false (docs/scaling.md)")
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        raise ConfigError("accelerate launch --fsdp_activation_checkpointing true: use --model.gradient_checkpointing "
                          "true instead (rlsf checkpoints its decoder layers itself)")
    fsdp_reshard_after_forward()


def _refuse_unsupported_launch() -> None:
    if fsdp_launch():
        _refuse_unsupported_fsdp()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise ConfigError("accelerate launch --use_deepspeed: DeepSpeed is not supported by rlsf; launch "
                          "data-parallel instead: accelerate launch --multi_gpu --num_processes N -m rlsf ...")


def setup(device: str = "auto") -> World:
    """Join the process group the launcher prepared (idempotent); one process: nothing to join.

    ``device`` is ``model.device``: on a CPU (``cpu``, or ``auto`` without CUDA) the group uses
    gloo, else NCCL with each process on GPU ``LOCAL_RANK``.
    """
    global _world
    if _world.size > 1:
        return _world
    _refuse_unsupported_launch()
    size = launched_size()
    if size <= 1:
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and os.environ.get("MASTER_ADDR"):
            # accelerate's simple launcher sets MASTER_ADDR only for num_processes > 1, yet starts one
            # process unless it runs under mpirun: the user asked for N processes and got one.
            raise ConfigError(
                "accelerate launch --cpu --num_processes N started one process (accelerate's multi-CPU launcher "
                "needs mpirun; without it it runs the command once). Launch N processes with gloo on this CPU "
                "with: accelerate launch --multi_gpu --num_processes N -m rlsf ... (torchrun underneath; rlsf "
                "picks gloo where there is no GPU) or torchrun --nproc-per-node N -m rlsf ...; for one process "
                "leave out --num_processes")
        return _world
    if device.startswith("cuda:"):
        raise ConfigError(f"model.device: {device!r} pins every process to one GPU; with {size} processes use auto "
                          "or cuda (each process takes the GPU of its LOCAL_RANK)")
    PartialState = require("accelerate", "a run in several processes").PartialState  # rlsf[distributed]

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    timeout = datetime.timedelta(seconds=_env_int(TIMEOUT_ENV, default=DEFAULT_TIMEOUT_S))
    state = PartialState(cpu=cpu, timeout=timeout)
    if state.num_processes != size:
        raise ConfigError(f"the launcher announced {size} processes but accelerate joined {state.num_processes} "
                          f"(distributed type {state.distributed_type})")
    _world = World(rank=state.process_index, size=state.num_processes, local_rank=state.local_process_index,
                   local_size=_env_int("LOCAL_WORLD_SIZE", default=state.num_processes),
                   backend=str(state.backend))
    return _world


def world() -> World:
    """This process's place (inside :func:`solo`: rank 0 of 1)."""
    return World() if _solo else _world


def size() -> int:
    return world().size


def rank() -> int:
    return world().rank


def is_main() -> bool:
    return _world.rank == 0


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Run a block on rank 0 alone (the others skip it and wait at :func:`barrier`): inside it
    this process is a world of one, so a stage called there behaves as in one process."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


def require_single_process(what: str) -> None:
    """Refuse ``what`` (a command) in a multi-process launch: it has not been made correct there."""
    if size() > 1:
        raise ConfigError(f"{what} does not run across processes (launched with {size()}): it would sample and "
                          f"write its outputs once per process. Run it in one process (python -m rlsf ... or "
                          "accelerate launch --num_processes 1); training (rlsf train, sft, pipeline) is what "
                          "runs across processes (docs/scaling.md)")


# ---- collectives (the identity in one process) -------------------------------------------------------
def _device() -> torch.device:
    # "nccl", or accelerate's "cuda:nccl,cpu:gloo" (FSDP with full state dicts)
    return torch.device("cuda", torch.cuda.current_device()) if "nccl" in _world.backend else torch.device("cpu")


def barrier() -> None:
    if size() > 1:
        torch.distributed.barrier()


def all_sum(values: Sequence[float] | torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Element-wise sum (or ``op="max"``) over ranks of a vector, as float64 on the CPU."""
    t = torch.as_tensor(values if isinstance(values, torch.Tensor) else list(values), dtype=torch.float64)
    t = t.detach().reshape(-1).to(torch.float64).cpu()
    if size() == 1:
        return t
    buf = t.to(_device())
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(buf, op=reduce_op)
    return buf.cpu()


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, same dtype and device (differentiable only through the caller's
    own share: the result is detached)."""
    if size() == 1:
        return t.detach()
    buf = t.detach().clone().to(_device())
    torch.distributed.all_reduce(buf)
    return buf.to(t.device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if size() == 1:
        return [obj]
    out: list[Any] = [None] * size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    nbytes = 0
    for t in tensors:
        if bucket and (nbytes + t.numel() * t.element_size() > BUCKET_BYTES or t.dtype != bucket[0].dtype
                       or t.device != bucket[0].device):
            yield bucket
            bucket, nbytes = [], 0
        bucket.append(t)
        nbytes += t.numel() * t.element_size()
    if bucket:
        yield bucket


def _reduce_flat(tensors: list[torch.Tensor], broadcast: bool = False) -> None:
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    for bucket in _buckets(tensors):
        flat = _flatten_dense_tensors(bucket)
        if broadcast:
            torch.distributed.broadcast(flat, src=0)
        else:
            torch.distributed.all_reduce(flat)
        for t, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            t.copy_(reduced)


def is_shard(t: Any) -> bool:
    """Whether ``t`` is a :class:`~torch.distributed.tensor.DTensor` (a parameter sharded by FSDP)."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def plain_tensors(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors that are not FSDP shards (FSDP handles those)."""
    return [t for t in tensors if not is_shard(t)]


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in place (before clipping and the optimiser step).

    A parameter no rank gave a gradient keeps ``grad = None`` (AdamW then leaves it alone, as in
    one process); one that some ranks did not reach gets zeros there before the sum. Parameters
    sharded by FSDP (:mod:`rlsf.runtime.fsdp`) are left alone: FSDP has summed their gradients
    (reduce-scatter) in the backward pass."""
    if size() == 1:
        return
    params = [p for p in plain_tensors(params) if p.requires_grad]
    reached = all_sum([float(p.grad is not None) for p in params], op="max").tolist()
    grads = []
    for p, r in zip(params, reached):
        if r:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    _reduce_flat(grads)


@torch.no_grad()
def broadcast_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` with rank 0's (the weights every rank starts from, as DDP does). Shards
    of an FSDP model are left alone: each rank holds its own (made from rank 0's weights)."""
    if size() > 1:
        _reduce_flat([t.data for t in plain_tensors(tensors)], broadcast=True)


# ---- sharding ------------------------------------------------------------------------------------------
def shard(items: Sequence[Any]) -> list[Any]:
    """This rank's contiguous share of ``items`` (their number must divide by the world size), so that
    the ranks' shares concatenated in rank order are ``items`` in order."""
    n, w = len(items), size()
    if n % w:
        raise ConfigError(f"{n} items cannot be split evenly over {w} processes")
    per = n // w
    return list(items[rank() * per:(rank() + 1) * per])


def rank_seed(seed: int, step: int) -> int:
    """A seed for this rank's random draws at ``step``: distinct per rank, a pure function of
    (seed, step, rank), so a resumed multi-process run draws as the uninterrupted one did."""
    return int(np.random.SeedSequence([seed, step, rank()]).generate_state(1)[0])
