"""Set-up shared by every stage: device and precision, threads, task, model and tokenizer, run folder.

**The runtime owns device and precision.** ``model.device: auto`` is CUDA when present, else the
CPU. ``model.autocast: auto`` is bf16 on a GPU that supports it; on a CPU it is bf16 only where a
start-up probe measures bf16 matrix products faster than float32. CPUs differ: with AVX-512 bf16
or AMX a bf16 product runs several times faster than float32, while on a CPU without native bf16
(e.g. some AMD EPYC machines) it runs ~40x *slower* (1.4 against 54 GFLOP/s measured on one).
The probe times one product of decoder-layer size in both precisions; its result is cached per
CPU model, torch version and thread count in ``<cache>/precision.json``. Every path that uses
bf16 -- autocast in SFT and updates, the bf16 weights the sampler decodes with -- follows the one
:class:`Runtime` decision, which is printed at start and saved in each run's ``config.yaml``.

``RLSF_BF16=1`` (or ``0``) forces the probe's outcome: for tests, and to try the other path.

**Sampling may choose differently** (``model.sampling_autocast``): decoding reads every weight once
per token at a small batch, a different regime from training's large products. With ``auto`` a
second probe times decode-sized products (batch 8) in float32 against bf16 weights prepacked
for oneDNN, as the fused decoding step runs them; where bf16 wins there, rollouts sample from
bf16 weights even when training stays in float32. ``RLSF_BF16_DECODE=1`` (or ``0``) forces it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rlsf.runtime.cache import cache_dir
from rlsf.runtime.metric_log import note
from rlsf.settings import ConfigError

#: bf16 is chosen on a CPU when the probe's product runs at least this much faster than float32
#: (autocast also pays for casting weights, so a bare tie is not a win).
BF16_MIN_SPEEDUP = 1.25
PROBE_SHAPE = (512, 576, 1536)  # tokens x hidden x MLP width of SmolLM2-135M
FORCE_ENV = "RLSF_BF16"


@dataclass(frozen=True)
class Runtime:
    """Where a stage runs and in which precision, and why."""

    device: str  # "cpu", "cuda", "cuda:1"
    precision: str  # "bf16" or "none" (float32 compute)
    reason: str
    processor: str
    bf16_speedup: float | None = None  # float32 time / bf16 time of the probe (CPU only)
    sampling_precision: str = ""  # the weights rollouts sample from: "bf16" or "none" ("": as ``precision``)
    sampling_reason: str = ""

    def __post_init__(self) -> None:
        if not self.sampling_precision:
            object.__setattr__(self, "sampling_precision", self.precision)
            object.__setattr__(self, "sampling_reason", "model.sampling_autocast: same")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "torch": str(torch.__version__), "threads": torch.get_num_threads()}

    def describe(self) -> str:
        out = f"device {self.device} ({self.processor}), precision {self.precision}: {self.reason}"
        if self.sampling_precision != self.precision:
            out += f"; sampling precision {self.sampling_precision}: {self.sampling_reason}"
        return out


def processor_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name), or the GPU's name for CUDA devices."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {setting!r} asked for, but torch sees no CUDA device "
                          f"(torch {torch.__version__}); use auto or cpu")
    return setting


def _time_matmuls(rounds: int = 8, budget_s: float = 2.0) -> dict[torch.dtype, float]:
    """Fastest of ``rounds`` products of the probe shape in float32 and in bf16, the two dtypes
    alternating so that a noisy spell of a shared machine hits both alike (stops early past
    ``budget_s``: on a CPU without native bf16 one product takes ~0.3 s)."""
    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    operands = {dt: (a.to(dt), b.to(dt)) for dt in (torch.float32, torch.bfloat16)}
    best = {dt: float("inf") for dt in operands}
    for x, y in operands.values():
        torch.mm(x, y)  # warm-up: oneDNN primitive creation
    start = time.perf_counter()
    for _ in range(rounds):
        for dt, (x, y) in operands.items():
            t0 = time.perf_counter()
            torch.mm(x, y)
            best[dt] = min(best[dt], time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return best


def probe_bf16() -> dict[str, Any]:
    """Time bf16 against float32 products on this CPU; cached per machine and torch version."""
    forced = os.environ.get(FORCE_ENV)
    if forced in ("0", "1"):
        return {"faster": forced == "1", "speedup": None, "source": f"forced by {FORCE_ENV}={forced}"}
    key = f"{processor_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = cache_dir() / "precision.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return {**cached[key], "source": f"probe cached in {path}"}
    times = _time_matmuls()
    fp32, bf16 = times[torch.float32], times[torch.bfloat16]
    result = {"speedup": round(fp32 / bf16, 3), "faster": fp32 / bf16 >= BF16_MIN_SPEEDUP,
              "fp32_gflops": round(2 * PROBE_SHAPE[0] * PROBE_SHAPE[1] * PROBE_SHAPE[2] / fp32 / 1e9, 1),
              "bf16_gflops": round(2 * PROBE_SHAPE[0] * PROBE_SHAPE[1] * PROBE_SHAPE[2] / bf16 / 1e9, 1)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**cached, key: result}, indent=2) + "\n")
        tmp.replace(path)
    except OSError:  # a read-only cache only costs a re-probe next time
        pass
    return {**result, "source": "probe"}


def resolve_precision(setting: str, device: str) -> tuple[str, str, float | None]:
    """``(precision, reason, measured bf16 speedup)`` for ``model.autocast`` on ``device``."""
    if setting != "auto":
        return setting, f"model.autocast: {setting}", None
    if device.startswith("cuda"):
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "none"), f"auto: this GPU {'supports' if ok else 'lacks'} bf16", None
    probe = probe_bf16()
    speedup = probe.get("speedup")
    if speedup is None:  # forced
        return ("bf16" if probe["faster"] else "none"), f"auto: {probe['source']}", None
    measured = f"bf16 matmul {speedup:.2f}x the speed of float32"
    if probe["faster"]:
        return "bf16", f"auto: {measured} ({probe['source']})", speedup
    return "none", f"auto: {measured}, below the {BF16_MIN_SPEEDUP}x needed ({probe['source']})", speedup


DECODE_FORCE_ENV = "RLSF_BF16_DECODE"
DECODE_SHAPE = (8, 576, 1536)  # rows decoded at once x hidden x MLP width of SmolLM2-135M


@functools.cache
def prepacked_bf16_linear() -> bool:
    """Whether oneDNN's prepacked bf16 linear runs here and agrees with ``F.linear`` (a CPU with
    AVX-512 bf16 or AMX; the ops are private, so they are probed rather than assumed). The fused
    decoding step packs its bf16 weights where this holds; the decode probe times that kernel."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        # A private generator: this probe runs at a process's first bf16 rollout, and drawing from the
        # global one there would make a resumed run sample differently from an uninterrupted one.
        gen = torch.Generator().manual_seed(0)
        w, x = torch.randn(24, 16, generator=gen).bfloat16(), torch.randn(3, 16, generator=gen).bfloat16()
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return bool(torch.allclose(out.float(), torch.nn.functional.linear(x, w).float(), atol=1e-2, rtol=1e-2))
    except (AttributeError, RuntimeError):  # a build without these ops, or with other signatures
        return False


def _time_decode_products(rounds: int = 30, budget_s: float = 2.0) -> dict[str, float]:
    """Fastest decode-sized product in float32 and with bf16 weights prepacked for oneDNN (the
    fused decoding step's kernel); ``{}`` where that kernel is missing."""
    if not prepacked_bf16_linear():
        return {}
    try:
        b, k, n = DECODE_SHAPE
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(b, k, generator=gen), torch.randn(n, k, generator=gen)
        xb, packed = x.bfloat16(), torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), b)
        runs = {"fp32": lambda: torch.nn.functional.linear(x, w),
                "bf16": lambda: torch.ops.mkldnn._linear_pointwise(xb, packed, None, "none", [], "")}
    except (AttributeError, RuntimeError):  # a build without these ops, or with other signatures
        return {}
    best = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()
    start = time.perf_counter()
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(10):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / 10)
        if time.perf_counter() - start > budget_s:
            break
    return best


def resolve_sampling_precision(setting: str, device: str, training: str) -> tuple[str, str]:
    """``(precision, reason)`` of the weights rollouts sample from (``model.sampling_autocast``)."""
    if setting == "same":
        return training, "model.sampling_autocast: same"
    if setting != "auto":
        return setting, f"model.sampling_autocast: {setting}"
    if device.startswith("cuda"):
        return training, "auto: on a GPU, model.autocast's decision"
    forced = os.environ.get(DECODE_FORCE_ENV)
    if forced in ("0", "1"):
        return ("bf16" if forced == "1" else "none"), f"auto: forced by {DECODE_FORCE_ENV}={forced}"
    times = _time_decode_products()
    if not times:
        return "none", "auto: no oneDNN bf16 kernel on this CPU"
    speedup = times["fp32"] / times["bf16"]
    measured = f"prepacked bf16 decode products {speedup:.2f}x the speed of float32"
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"auto: {measured}"
    return "none", f"auto: {measured}, below the {BF16_MIN_SPEEDUP}x needed"


@functools.lru_cache(maxsize=None)
def _runtime(device_setting: str, autocast: str, forced: str | None, sampling: str = "same",
             forced_decode: str | None = None) -> Runtime:
    device = resolve_device(device_setting)
    precision, reason, speedup = resolve_precision(autocast, device)
    sampling_precision, sampling_reason = resolve_sampling_precision(sampling, device, precision)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else processor_name()
    rt = Runtime(device, precision, reason, name, speedup, sampling_precision, sampling_reason)
    note(f"rlsf: {rt.describe()}")
    return rt


def setup(cfg) -> Runtime:
    """Process-wide settings of a stage (threads, quiet HF loaders) and its device and precision."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    return _runtime(cfg.model.device, cfg.model.autocast, os.environ.get(FORCE_ENV), cfg.model.sampling_autocast,
                    os.environ.get(DECODE_FORCE_ENV))


