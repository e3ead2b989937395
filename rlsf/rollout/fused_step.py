"""One decoding step of the rlsf sampling loop: the model's own forward, or a fused step.

On a CPU a 135M model decodes a handful of rows at a time, and a step is dominated not by its
matrix products but by the ~40 small operators per layer the Hugging Face forward dispatches
(norms in float32, three projections, rotary, cache concatenation, ``repeat_kv``, ...).
:class:`FusedLlamaStep` runs the same arithmetic for Llama-style decoders with fewer operators:

* one product for q, k and v, and one for gate and up (weights concatenated once per rollout);
* a key/value buffer allocated for the whole rollout, written in place instead of concatenated;
* grouped-query attention inside ``scaled_dot_product_attention`` (no ``repeat_kv`` copies);
* ``torch.rms_norm`` instead of a chain of elementwise operators;
* on CPU in bf16, weights prepacked once per rollout into oneDNN's blocked layout
  (``torch.ops.mkldnn``, what ``torch.compile`` uses for frozen CPU linears): the products of a
  decode step are matrix-vector-like, and oneDNN repacks plain weights on every call otherwise.

Both steppers have one interface: ``prefill(ids, mask) -> logits`` for left-padded prompts,
``select(rows)`` to gather a prompt's row to its samples or drop finished rows, and
``step(tokens, positions) -> logits`` for the live rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlsf.models.parts import position_ids_from_mask

# Named here too: benchmarks and tests look it up (and patch it) where the fused step does.
from rlsf.runtime.device import prepacked_bf16_linear as _mkldnn_bf16
from rlsf.runtime.utils import autocast

# Decoder layers of these model types are the Llama block (pre-norm RMSNorm, rotary attention with
# grouped-query heads, SiLU-gated MLP); qwen2 adds biases to q, k and v.
FUSED_MODEL_TYPES = ("llama", "qwen2")


def _base(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fused_step_supported(model) -> bool:
    """Whether :class:`FusedLlamaStep` computes exactly this model's forward."""
    base = _base(model)
    cfg = base.config
    if getattr(cfg, "model_type", None) not in FUSED_MODEL_TYPES or getattr(cfg, "hidden_act", None) != "silu":
        return False
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "mlp_bias", False):
        return False
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(base, "lm_head"):
        return False
    # DoRA rescales weights by a learned magnitude, which effective_weight does not fold in.
    return not any(any(getattr(m, "use_dora", {}).values()) for m in model.modules()
                   if isinstance(getattr(m, "use_dora", None), dict))


def effective_weight(linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias)`` a linear layer applies, with active (unmerged) LoRA adapters folded in."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight, linear.bias
    w = base.weight
    if not getattr(linear, "merged", False) and not getattr(linear, "disable_adapters", False):
        for name in linear.active_adapters:
            if name in getattr(linear, "lora_A", {}):
                w = w + linear.get_delta_weight(name).to(w.dtype)
    return w, base.bias


def _fuse(linears, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    ws, bs = zip(*(effective_weight(m) for m in linears))
    w = torch.cat(ws).to(dtype) if len(ws) > 1 else ws[0].to(dtype)
    b = None
    if any(x is not None for x in bs):
        b = torch.cat([x if x is not None else w.new_zeros(wi.shape[0]) for x, wi in zip(bs, ws)]).to(dtype)
    return w.detach(), (b.detach() if b is not None else None)


class ModelStep:
    """The model's own forward over a Hugging Face ``DynamicCache`` (any architecture)."""

    def __init__(self, model, precision: str) -> None:
        from transformers import DynamicCache

        self.model, self.precision = model, precision
        self.cache = DynamicCache(config=model.config)  # the model's own layer kinds (e.g. sliding window)
        self.attn: torch.Tensor | None = None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run left-padded prompts; the last position's logits."""
        self.attn = mask
        with autocast(self.precision, ids.device):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order (repeats copy a row: one prompt to its samples)."""
        self.cache.batch_select_indices(rows)
        self.attn = self.attn[rows]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.attn = torch.cat([self.attn, self.attn.new_ones(self.attn.shape[0], 1)], dim=1)
        with autocast(self.precision, tokens.device):
            out = self.model(input_ids=tokens[:, None], attention_mask=self.attn, position_ids=positions[:, None],
                             past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]


class FusedLlamaStep:
    """Llama-block inference with fused projections and a preallocated key/value buffer.

    Weights are read from ``model`` when the step is built (LoRA adapters folded in), in bf16
    when ``precision == "bf16"``, else in the model's dtype: build one per rollout so they are
    the current ones. Reading float32 master weights here is what lets the trainer skip a
    persistent bf16 sampling copy: the bf16 weights exist only while a rollout runs.
    """

    def __init__(self, model, batch: int, length: int, precision: str, pack: bool | None = None,
                 decode_rows: int | None = None) -> None:
        base = _base(model)
        cfg = base.config
        p = next(base.parameters())
        self.dtype = torch.bfloat16 if precision == "bf16" else p.dtype
        # Prepacked weights (None: wherever they run, i.e. bf16 on a CPU with oneDNN bf16).
        self.packed = (self.dtype == torch.bfloat16 and p.device.type == "cpu" and _mkldnn_bf16()) \
            if pack is None else pack
        self.rows_hint = decode_rows or batch  # rows per product while decoding (after the gather)
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.rotary = base.model.rotary_emb
        self.layers = []
        for layer in base.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            qkv_w, qkv_b = _fuse([a.q_proj, a.k_proj, a.v_proj], self.dtype)
            gu_w, _ = _fuse([mlp.gate_proj, mlp.up_proj], self.dtype)
            o_w, o_b = _fuse([a.o_proj], self.dtype)
            d_w, _ = _fuse([mlp.down_proj], self.dtype)
            self.inter = gu_w.shape[0] // 2
            self.layers.append((layer.input_layernorm.weight.detach().to(self.dtype), self._pack(qkv_w), qkv_b,
                                self._pack(o_w), o_b, layer.post_attention_layernorm.weight.detach().to(self.dtype),
                                self._pack(gu_w), self._pack(d_w)))
        self.embed = base.model.embed_tokens.weight.detach().to(self.dtype)
        self.norm = base.model.norm.weight.detach().to(self.dtype)
        if effective_weight(base.lm_head)[0] is base.model.embed_tokens.weight and base.lm_head.bias is None:
            self.head, self.head_b = self.embed, None  # tied: one converted copy (packing makes a second)
        else:
            self.head, self.head_b = _fuse([base.lm_head], self.dtype)
        self.head = self._pack(self.head)
        # Keys and values of every position of the rollout, prompt and new tokens; columns are
        # shared by all rows (prompts are left-padded), ``mask`` says which hold a real token.
        L, K, D = len(self.layers), self.n_kv, self.head_dim
        self.k = torch.zeros(L, batch, K, length, D, dtype=self.dtype, device=p.device)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.zeros(batch, length, dtype=torch.bool, device=p.device)
        self.t = 0  # the next free column

    def _pack(self, w: torch.Tensor) -> torch.Tensor:
        # oneDNN picks the blocked layout for the expected number of rows (the batch).
        return torch.ops.mkldnn._reorder_linear_weight(w, self.rows_hint) if self.packed else w

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return F.linear(x, w, b)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run left-padded prompts into the buffer; the last position's logits."""
        P = ids.shape[1]
        self.mask[:, :P] = mask.bool()
        causal = torch.ones(P, P, dtype=torch.bool, device=ids.device).tril()
        # A padding position attends to itself only: it stays finite, and no real token sees it.
        attn = (causal & self.mask[:, None, None, :P]) | torch.eye(P, dtype=torch.bool, device=ids.device)
        return self._forward(ids, position_ids_from_mask(mask), attn)

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order (repeats copy a row: one prompt to its samples)."""
        self.k, self.v, self.mask = self.k[:, rows], self.v[:, rows], self.mask[rows]

    def export(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row ``row``'s keys and values of every token fed so far, in order: ``[layers, kv heads,
        tokens, head dim]`` each (a self-repair episode's next turn starts from them)."""
        cols = self.mask[row, : self.t]
        return self.k[:, row, :, : self.t][:, :, cols].clone(), self.v[:, row, :, : self.t][:, :, cols].clone()

    def prefill_after(self, past: list[tuple[torch.Tensor, torch.Tensor]], ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """Like :meth:`prefill`, for rows whose first tokens were fed before (``past[r]``: their keys
        and values, :meth:`export`): the past goes in right-aligned, then the new tokens (``ids``,
        left-padded, ``mask``) are run after it. The same keys, values and logits as a prefill of
        the whole sequence (positions continue from each row's past), without recomputing it."""
        lengths = [k.shape[2] for k, _ in past]
        P, n = max(lengths), ids.shape[1]
        for r, ((k, v), length) in enumerate(zip(past, lengths)):
            self.k[:, r, :, P - length:P] = k.to(self.dtype)
            self.v[:, r, :, P - length:P] = v.to(self.dtype)
            self.mask[r, P - length:P] = True
        self.t = P
        self.mask[:, P:P + n] = mask.bool()
        start = torch.tensor(lengths, device=ids.device)[:, None]
        positions = (start + position_ids_from_mask(mask)) * mask
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
        new = (causal & self.mask[:, None, None, P:P + n]) | torch.eye(n, dtype=torch.bool, device=ids.device)
        attn = torch.cat([self.mask[:, None, None, :P].expand(-1, 1, n, -1), new], dim=-1)
        return self._forward(ids, positions, attn)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.mask[:, self.t] = True
        return self._forward(tokens[:, None], positions[:, None], self.mask[:, None, None, : self.t + 1])

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """``ids [b, n]`` at buffer columns ``t .. t+n``; ``attn [b, 1, n, t+n]`` says which
        columns each query sees. Returns the last position's logits ``[b, vocab]``."""
        (b, n), H, K, D, t = ids.shape, self.n_heads, self.n_kv, self.head_dim, self.t
        x = F.embedding(ids, self.embed)  # [b, n, hidden]
        cos, sin = self.rotary(x, positions)
        cos, sin = cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]  # [b, 1, n, D]
        hidden = (x.shape[-1],)
        for i, (n1, qkv_w, qkv_b, o_w, o_b, n2, gu_w, d_w) in enumerate(self.layers):
            qkv = self._linear(F.rms_norm(x, hidden, n1, self.eps), qkv_w, qkv_b)
            qkv = qkv.view(b, n, H + 2 * K, D).transpose(1, 2)
            qk, v = qkv[:, : H + K], qkv[:, H + K :]
            x1, x2 = qk.chunk(2, dim=-1)
            qk = qk * cos + torch.cat((-x2, x1), dim=-1) * sin  # rotary on q and k at once
            self.k[i, :, :, t : t + n] = qk[:, H:]
            self.v[i, :, :, t : t + n] = v
            o = F.scaled_dot_product_attention(qk[:, :H], self.k[i, :, :, : t + n], self.v[i, :, :, : t + n],
                                               attn_mask=attn, enable_gqa=True)
            x = x + self._linear(o.transpose(1, 2).reshape(b, n, H * D), o_w, o_b)
            gate, up = self._linear(F.rms_norm(x, hidden, n2, self.eps), gu_w).split(self.inter, dim=-1)
            x = x + self._linear(F.silu(gate) * up, d_w)
        self.t += n
        return self._linear(F.rms_norm(x[:, -1], hidden, self.norm, self.eps), self.head, self.head_b)
