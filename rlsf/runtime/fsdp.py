"""FSDP2: the policy's weights, gradients and optimiser state sharded over the processes of a run.

Turned on by ``accelerate launch --use_fsdp --fsdp_version 2`` (``configs/accelerate/fsdp2.yaml``)
or by ``model.fsdp: true`` under any launcher (``torchrun``); in one process there is nothing to
shard and the model runs as usual. It is torch's own ``fully_shard`` (FSDP2), applied the usual
way (:func:`shard_model`): each decoder layer is one unit, then the root (the whole model: the
embeddings, the final norm, the head, and every weight outside the layers) is another. Each
parameter is a :class:`~torch.distributed.tensor.DTensor` holding this rank's dim-0 shard; a unit's
weights are all-gathered before its forward and freed after it (the root's stay gathered until
its backward), and gradients are reduce-scattered.

The rest of rlsf sees a model it can use as before, with these rules, each kept here:

* **Passes that call the model's parts** (the decoder body, then the head in chunks,
  :func:`root_pass` on ``response_forward`` and ``completion_loss``) run as one forward of the
  root: the root's weights are gathered for the whole pass, and its gradients reduce-scattered
  at the end of the backward pass, as if ``model.forward`` had been called.
* **Gradients are summed** over ranks, not averaged (:func:`shard_model` sets FSDP's divide
  factor to 1 with sum-only reductions): each rank back-propagates its share of the global loss,
  as in the data-parallel path, so the sum is the one-process gradient. rlsf's own
  :func:`rlsf.runtime.distributed.all_reduce_gradients` leaves sharded parameters alone (FSDP has
  reduced them) and still sums the rest (PPO's value head, a plain module on every rank).
* **Clipping** uses the global norm over every shard and the plain parameters
  (:func:`clip_grad_norm_`).
* **Rollouts** sample from the gathered model: :func:`unshard_all` before a rollout,
  :func:`reshard_all` after (:class:`rlsf.rollout.engines.SamplingModel`), so the builtin fused
  step, the step-by-step forward and Hugging Face ``generate`` read full weights. During a
  rollout every rank holds the whole model, as in the data-parallel path; no bf16 sampling copy is
  kept (bf16 sampling runs under autocast, the fused step makes its bf16 weights per rollout).
* **The reference** of the KL terms is a frozen copy sharded like the policy
  (:func:`frozen_copy`: built from shards, never gathered whole), so each rank holds 1/N of it;
  under LoRA it is the policy with adapters disabled, as in one process.
* **Checkpoints and the saved model** are full tensors: every rank takes part in gathering them
  (:func:`full_tensor`, the optimiser's state through :func:`make_optimizer_hooks`) and rank 0
  writes them in the format a one-process run writes, so a run resumes with any number of
  processes, with or without FSDP; a sharded parameter or optimiser state is cut back to this
  rank's shard on loading (:func:`load_full`).
"""

from __future__ import annotations

import copy
import functools
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rlsf.runtime import distributed
from rlsf.settings import ConfigError

#: Models sharded in this process: model -> (plain skeleton on the meta device, layers reshard after forward).
_SHARDED: "weakref.WeakKeyDictionary[torch.nn.Module, _Sharding]" = weakref.WeakKeyDictionary()
_active = False  # this launch shards its models (set by decide())
_inside = 0  # depth of root_pass calls being run


@dataclass
class _Sharding:
    skeleton: torch.nn.Module  # the model before sharding, its parameters on the meta device
    reshard_layers: bool


# ---- the decision -----------------------------------------------------------------------------------
def launch_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch --use_fsdp``)."""
    return distributed.fsdp_launch()


def decide(cfg) -> bool:
    """Whether this stage shards its policy: FSDP asked for (``model.fsdp`` or the launch) and more
    than one process. Remembered for :func:`active`."""
    global _active
    _active = bool(cfg.model.fsdp or launch_requested()) and distributed.size() > 1
    return _active


def active() -> bool:
    """Whether this launch shards its models (False inside ``distributed.solo``, in one process)."""
    return _active and distributed.size() > 1


def is_sharded(model: Any) -> bool:
    return model in _SHARDED


# ---- sharding ----------------------------------------------------------------------------------------
def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model (its ``_no_split_modules`` classes), through a
    peft wrapper; each becomes one FSDP unit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        body = getattr(base, getattr(base, "base_model_prefix", ""), None)
        layers = list(getattr(body, "layers", []) or [])
    return layers


@functools.cache
def _mesh_for(device: str, size: int):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device, (size,))


def _mesh():
    """One dimension over every process: CUDA under NCCL, the CPU under gloo."""
    return _mesh_for("cuda" if "nccl" in distributed.world().backend else "cpu", distributed.size())


def _skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with its parameters on the meta device (no memory): the template of
    :func:`frozen_copy` and :func:`full_model`. Buffers are copied as they are (small)."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _apply_fully_shard(model: torch.nn.Module, mesh, reshard_layers: bool) -> list:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    layers = decoder_layers(model)
    if not layers:
        raise ConfigError(f"model.fsdp: found no decoder layers in {type(model).__name__} to shard (FSDP shards each "
                          "transformer block of a Hugging Face model: its _no_split_modules)")
    units = [fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_layers) for layer in layers]
    # The root keeps its gathered weights from forward to backward (FSDP's default for a root).
    units.append(fully_shard(model, mesh=mesh, reshard_after_forward=False))
    for unit in units:
        # Each rank back-propagates its share of the global loss: gradients are summed, never averaged.
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    model.rlsf_pass = _call
    register_fsdp_forward_method(model, "rlsf_pass")
    return units


def _call(fn: Callable) -> Any:
    return fn()


def shard_model(model: torch.nn.Module, reshard_layers: bool | None = None) -> torch.nn.Module:
    """Shard ``model`` in place over the processes of the run (FSDP2: each decoder layer, then the
    root). Every rank first takes rank 0's weights (as DDP does), so the shards form one model.
    ``reshard_layers``: whether the layers free their gathered weights after forward (default:
    accelerate's ``--fsdp_reshard_after_forward``, true)."""
    if is_sharded(model):
        return model
    if reshard_layers is None:
        reshard_layers = distributed.fsdp_reshard_after_forward()
    distributed.broadcast_tensors([*model.parameters(), *model.buffers()])
    skeleton = _skeleton(model)
    _apply_fully_shard(model, _mesh(), reshard_layers)
    _SHARDED[model] = _Sharding(skeleton, reshard_layers)
    return model


def fsdp_units(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def root_pass(fn: Callable) -> Callable:
    """Decorate a function whose first argument is a model and which calls the model's parts
    directly (the decoder body, the head): on a sharded model it runs as one FSDP forward of the
    root (:func:`torch.distributed.fsdp.register_fsdp_forward_method`), so the root's weights
    are gathered for it and its gradients reduced after the backward pass.

    The root's weights stay gathered after the pass (FSDP's rule for a root), so what the pass
    returns may apply the head later (``ForwardOut.logits_at``); they are freed by the backward
    pass, before every optimiser step (:func:`make_optimizer_hooks`) and by :func:`release`."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        global _inside
        if _inside or not is_sharded(model):
            return fn(model, *args, **kwargs)
        _inside += 1
        try:
            with warnings.catch_warnings():
                # FSDP warns that outputs which are views could lose its pre-backward hook to an in-place
                # op: none is made on them, and the root's weights stay gathered until its backward anyway.
                warnings.filterwarnings("ignore", message=".*returned a view tensor.*", category=UserWarning)
                # The arguments travel in a closure: FSDP's hooks leave them as they are.
                return model.rlsf_pass(functools.partial(fn, model, *args, **kwargs))
        finally:
            _inside -= 1

    return wrapper


def release(model: Any) -> None:
    """Free the gathered weights of a sharded model's root (after passes without gradients)."""
    if is_sharded(model):
        model.reshard()


# ---- rollouts ----------------------------------------------------------------------------------------
def unshard_all(model: torch.nn.Module) -> None:
    """Gather every unit's weights and keep them gathered across forwards (a rollout's many
    steps) until :func:`reshard_all`."""
    if not is_sharded(model):
        return
    units = fsdp_units(model)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units:
        unit.unshard()


def reshard_all(model: torch.nn.Module) -> None:
    """Free the gathered weights again; layers go back to resharding after each forward."""
    if not is_sharded(model):
        return
    layers = _SHARDED[model].reshard_layers
    for unit in fsdp_units(model):
        unit.reshard()
        unit.set_reshard_after_forward(layers if unit is not model else False, recurse=False)


# ---- copies ------------------------------------------------------------------------------------------
def frozen_copy(model: torch.nn.Module, bf16_linear: Callable[[torch.nn.Module], list] | None = None
                ) -> torch.nn.Module:
    """A frozen copy of a sharded ``model``, sharded the same way, made from this rank's shards
    (nothing is gathered). ``bf16_linear(copy)``: parameters to store in bf16 (the reference's
    linear weights, ``model.reference_precision``)."""
    info = _SHARDED[model]
    frozen = copy.deepcopy(info.skeleton)
    frozen.requires_grad_(False)
    frozen.eval()
    if bf16_linear is not None:
        for p in bf16_linear(frozen):
            p.data = p.data.to(torch.bfloat16)
    device = next(model.parameters()).device
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    _apply_fully_shard(frozen, _mesh(), info.reshard_layers)
    frozen.to_empty(device=device)
    with torch.no_grad():
        theirs = dict(model.named_parameters())
        for name, p in frozen.named_parameters():
            p.to_local().copy_(theirs[name].to_local())
        for name, b in frozen.named_buffers():
            b.copy_(buffers[name])
    _SHARDED[frozen] = _Sharding(info.skeleton, info.reshard_layers)
    return frozen


def full_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """A plain (unsharded) copy of a sharded ``model`` on the CPU, on rank 0 (None on the others);
    every rank must call it (the weights are gathered). ``model`` itself when it is not sharded."""
    if not is_sharded(model):
        return model
    state = {}
    seen: dict[int, torch.Tensor] = {}
    for name, t in model.state_dict().items():  # in the same order on every rank
        key = id(t)
        if key not in seen:
            seen[key] = full_tensor(t).cpu()
        state[name] = seen[key]
    if not distributed.is_main():
        return None
    plain = copy.deepcopy(_SHARDED[model].skeleton)
    plain.load_state_dict(state, assign=True)
    base = plain.get_base_model() if hasattr(plain, "get_base_model") else plain
    if hasattr(base, "tie_weights"):
        base.tie_weights()
    return plain


# ---- tensors, gradients, optimiser state -------------------------------------------------------------
_is_dtensor = distributed.is_shard


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every rank calls it), ``t`` otherwise."""
    return t.full_tensor() if _is_dtensor(t) else t


def load_full(dest: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor into ``dest``, or into this rank's shard of it when ``dest`` is sharded."""
    with torch.no_grad():
        if _is_dtensor(dest):
            dest.copy_(_shard_like(full, dest))
        else:
            dest.copy_(full)


def _shard_like(full: torch.Tensor, like) -> Any:
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every rank holds the whole tensor and keeps its own shard (no communication).
    return distribute_tensor(full.to(device=like.device, dtype=like.dtype), like.device_mesh, like.placements,
                             src_data_rank=None)


def clip_grad_norm_(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over sharded and plain parameters together: the norm is
    the global one (every shard of every parameter, the plain ones once), a plain float32 tensor."""
    sharded = [p for p in params if _is_dtensor(p)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    plain = [p for p in params if not _is_dtensor(p)]
    norms = []
    for group in (sharded, plain):
        grads = [p.grad for p in group if p.grad is not None]
        if grads:
            n = torch.nn.utils.get_total_norm(grads, 2.0)
            norms.append(full_tensor(n).float().cpu())
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    coef = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef)
    return total


def make_optimizer_hooks(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.state_dict()`` hold whole tensors (gathered from the shards: every rank must
    call it) and ``load_state_dict`` accept them (each rank keeps its shard): the one-process format,
    whatever the number of processes or FSDP. A no-op for an optimiser of plain parameters."""
    if not any(_is_dtensor(p) for g in optimizer.param_groups for p in g["params"]):
        return

    def gather(opt, state: dict) -> dict:
        state["state"] = {k: {n: full_tensor(v).cpu() if _is_dtensor(v) else v for n, v in s.items()}
                          for k, s in state["state"].items()}
        return state

    def shard(opt, state: dict) -> dict:
        state = dict(state)
        params = {i: p for saved, own in zip(state["param_groups"], opt.param_groups)
                  for i, p in zip(saved["params"], own["params"])}
        state["state"] = {k: {n: _shard_like(v, params[k]) if (k in params and _is_dtensor(params[k])
                                                               and torch.is_tensor(v) and v.dim() > 0
                                                               and not _is_dtensor(v)) else v
                              for n, v in s.items()}
                          for k, s in state["state"].items()}
        return state

    def before_step(opt, args, kwargs) -> None:
        # A root gathered by a pass without gradients (no backward freed it) must not keep weights
        # from before the step: the next pass gathers the stepped shards.
        for model in list(_SHARDED):
            model.reshard()

    optimizer.register_state_dict_post_hook(gather)
    optimizer.register_load_state_dict_pre_hook(shard)
    optimizer.register_step_pre_hook(before_step)

