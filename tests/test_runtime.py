"""The runtime owns device and precision: the probe, its cache, and every bf16 path following it."""

from __future__ import annotations

import pytest
import torch
import yaml

from rlsf.runtime import device as runtime
from rlsf.config import Config
from rlsf.settings import ConfigError


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty model cache (for the probe's file) and no remembered decisions."""
    monkeypatch.setenv("RLSF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(runtime.FORCE_ENV, raising=False)
    runtime._runtime.cache_clear()
    yield tmp_path
    runtime._runtime.cache_clear()


@pytest.mark.parametrize("forced, precision", [("1", "bf16"), ("0", "none")])
def test_the_probe_can_be_forced_both_ways(fresh, monkeypatch, forced, precision):
    monkeypatch.setenv(runtime.FORCE_ENV, forced)
    got, reason, speedup = runtime.resolve_precision("auto", "cpu")
    assert got == precision and f"forced by {runtime.FORCE_ENV}={forced}" in reason and speedup is None


@pytest.mark.parametrize("fp32, bf16, precision", [(1.0, 0.3, "bf16"), (1.0, 0.9, "none"), (1.0, 40.0, "none")])
def test_the_probe_picks_bf16_only_where_it_is_faster(fresh, monkeypatch, fp32, bf16, precision):
    monkeypatch.setattr(runtime, "_time_matmuls", lambda: {torch.float32: fp32, torch.bfloat16: bf16})
    got, reason, speedup = runtime.resolve_precision("auto", "cpu")
    assert got == precision and speedup == pytest.approx(fp32 / bf16, rel=1e-3)
    assert "probe" in reason


def test_the_probe_is_measured_once_per_machine(fresh, monkeypatch):
    first = runtime.probe_bf16()  # a real measurement on this CPU
    assert first["source"] == "probe" and first["speedup"] > 0
    assert (fresh / "cache" / "precision.json").is_file()
    monkeypatch.setattr(runtime, "_time_matmuls", lambda *a: pytest.fail("measured again"))
    again = runtime.probe_bf16()
    assert again["speedup"] == first["speedup"] and "cached" in again["source"]


def test_explicit_settings_and_devices(fresh):
    assert runtime.resolve_precision("bf16", "cpu")[0] == "bf16"
    assert runtime.resolve_precision("none", "cpu")[0] == "none"
    if not torch.cuda.is_available():
        assert runtime.resolve_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="no CUDA device"):
            runtime.resolve_device("cuda")
    with pytest.raises(ConfigError, match="model.device"):
        Config.load(None, {"model.device": "tpu"})


@pytest.mark.parametrize("forced, precision", [("1", "bf16"), ("0", "none")])
def test_every_bf16_path_follows_the_decision(fresh, monkeypatch, tiny_model_dir, tmp_path, forced, precision):
    """Autocast of the update, the sampler's weights and the run's config.yaml all show the one decision."""
    from test_training import tiny_cfg

    import rlsf.rollout.engines
    from rlsf.stages.train import RLTrainer

    monkeypatch.setenv(runtime.FORCE_ENV, forced)
    seen = []
    real = rlsf.rollout.engines.FusedLlamaStep

    class Spy(real):
        def __init__(self, model, batch, length, precision, **kw):
            seen.append((precision, None))
            super().__init__(model, batch, length, precision, **kw)
            seen[-1] = (precision, self.dtype)

    monkeypatch.setattr(rlsf.rollout.engines, "FusedLlamaStep", Spy)
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.autocast": "auto", "train.steps": 1}))
    assert tr.runtime.precision == precision and tr.algo.precision == precision
    assert tr.sampler.copy is None  # the fused step makes its weights per rollout
    tr.train()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen and all(s == (precision, dtype) for s in seen)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["autocast"] == "auto" and saved["runtime"]["precision"] == precision
    assert saved["runtime"]["device"] == "cpu" and saved["runtime"]["processor"]
    assert Config.load(tmp_path / "run" / "config.yaml").model.autocast == "auto"  # the record is not a setting


@pytest.mark.parametrize("setting, forced, expected", [
    ("same", None, "none"), ("bf16", None, "bf16"), ("none", None, "none"), ("auto", "1", "bf16"), ("auto", "0", "none")])
def test_sampling_precision_is_its_own_decision(fresh, monkeypatch, setting, forced, expected):
    if forced is None:
        monkeypatch.delenv(runtime.DECODE_FORCE_ENV, raising=False)
    else:
        monkeypatch.setenv(runtime.DECODE_FORCE_ENV, forced)
    precision, reason = runtime.resolve_sampling_precision(setting, "cpu", "none")
    assert precision == expected and ("forced" in reason) == (forced is not None)
    assert runtime.resolve_sampling_precision("same", "cpu", "bf16")[0] == "bf16"
    with pytest.raises(ConfigError, match="model.sampling_autocast"):
        Config.load(None, {"model.sampling_autocast": "fp8"})


def test_the_decode_probe_measures_or_says_why_not(fresh, monkeypatch):
    monkeypatch.delenv(runtime.DECODE_FORCE_ENV, raising=False)
    precision, reason = runtime.resolve_sampling_precision("auto", "cpu", "none")
    assert precision in ("bf16", "none")
    assert "prepacked bf16 decode products" in reason or "no oneDNN bf16 kernel" in reason


def test_training_in_float32_can_sample_in_bf16(fresh, monkeypatch, tiny_model_dir, tmp_path):
    """model.autocast none with model.sampling_autocast bf16: the fused step decodes from bf16 weights, the
    update stays float32, and config.yaml records both decisions."""
    from test_training import tiny_cfg

    import rlsf.rollout.engines
    from rlsf.stages.train import RLTrainer

    seen = []
    real = rlsf.rollout.engines.FusedLlamaStep

    class Spy(real):
        def __init__(self, model, batch, length, precision, **kw):
            super().__init__(model, batch, length, precision, **kw)
            seen.append(self.dtype)

    monkeypatch.setattr(rlsf.rollout.engines, "FusedLlamaStep", Spy)
    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.autocast": "none", "model.sampling_autocast": "bf16",
                                                         "train.steps": 1}))
    assert tr.runtime.precision == "none" == tr.algo.precision and tr.runtime.sampling_precision == "bf16"
    metrics = tr.train()
    assert seen and set(seen) == {torch.bfloat16}
    assert metrics["rollout/logprob_gap"] > 0  # sampled from bf16 weights, updated in float32
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["runtime"]
    assert (saved["precision"], saved["sampling_precision"]) == ("none", "bf16")


def test_a_sampling_copy_is_made_only_for_bf16(tiny_model_dir):
    from rlsf.models.loading import load_model
    from rlsf.rollout.engines import SamplingModel

    model = load_model(tiny_model_dir)
    assert SamplingModel(model, "none").copy is None
    assert next(SamplingModel(model, "bf16").model.parameters()).dtype == torch.bfloat16


# ---- on a GPU (skipped without one) ------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_runtime_and_training_step(fresh, tiny_model_dir, tmp_path):
    from test_training import tiny_cfg

    from rlsf.stages.train import RLTrainer

    tr = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path, **{"model.autocast": "auto", "model.device": "auto",
                                                        "train.steps": 1}))
    assert tr.runtime.device == "cuda" and next(tr.model.parameters()).is_cuda
    assert tr.runtime.precision == ("bf16" if torch.cuda.is_bf16_supported() else "none")
    assert next(tr.algo.value_head.parameters()).is_cuda
    metrics = tr.train()
    assert torch.isfinite(torch.tensor(metrics["loss/policy"]))


@pytest.mark.gpu
def test_gpu_fused_step_matches_the_model(tiny_model_dir):
    from rlsf.rollout.fused_step import FusedLlamaStep
    from rlsf.models.loading import load_model

    model = load_model(tiny_model_dir).cuda().eval()
    ids = torch.randint(10, 1000, (3, 7), device="cuda")
    mask = torch.ones_like(ids)
    step = FusedLlamaStep(model, 3, 16, "none")
    got = step.prefill(ids, mask)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.allclose(got.float(), want.float(), atol=1e-3, rtol=1e-3)
