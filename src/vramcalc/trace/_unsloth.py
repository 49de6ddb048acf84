"""Unsloth's layer kernels on the fake device (`--kernels unsloth`), memory only.

Unsloth's kernels are Triton and its loader needs CUDA, so these autograd Functions allocate and save what
unslothai/unsloth (kernels/ at 0050c73e05ca9bb74e42d0649be410f177160c08, models/llama.py at
00060afeb383f16c980bcc241e462b7684480d09) allocates and saves; core/memory/unsloth.py models the same:

* `_FastRMS`: kernels/rms_layernorm.py Fast_RMS_Layernorm: a new output Y, an fp32 r per row;
  save_for_backward(X, W, r); backward writes dX into dY (non-Gemma).
* `_LoRAQKV`: kernels/fast_lora.py LoRA_QKV (not on biased q/k/v: Qwen2 keeps peft's layers there): Q, K, V
  through matmul_lora; save_for_backward(X, QA, QB, KA, KB, VA, VB); backward: dQ @ B (tokens x r) and A @ X^T
  (r x tokens) per projection for the adapters' gradients, and dX = torch.matmul(dQ, W, out=X) accumulated in
  place (addmm_) into the saved X.
* `_LoRAW`: LoRA_W (o_proj): save_for_backward(A, B, X); backward dX = dY @ W, then addmm_.
* `_LoRAMLP`: LoRA_MLP with swiglu: e, g = matmul_lora(X, gate / up), h = swiglu_fg_kernel(e, g) (a new tensor),
  i = matmul_lora(h, down); save_for_backward(the six adapter weights, X, e, g); backward: DW = matmul_lora(dY,
  down^T) (a new tokens x intermediate tensor), swiglu_DWf_DW_dfg_kernel in place (h, df, de into DW, e, g), the
  adapters' gradients, dX = torch.matmul(df, up, out=X) then addmm_ in place.
* `_RoPE`: rope_embedding.py Fast_RoPE_Embedding_QK: `Q.clone()` of the non-contiguous transposed views, rotated
  in place; cos and sin kept as ctx attributes, nothing saved; backward rotates dY in place.
* matmul_lora (kernels/utils.py): `out = X @ W^T`, `XA = X @ A^T`, `out.addmm_(XA, B^T, alpha=s)`. QLoRA weights
  dequantize (fast_dequantize) into one global buffer in forward (WEIGHT_BUFFERS / ABSMAX_BUFFERS, grown to the
  largest weight and kept), into a fresh tensor in backward.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
from torch import nn


class _Buffers:
    """kernels/utils.py WEIGHT_BUFFERS / ABSMAX_BUFFERS: one 16-bit weight and one fp32 absmax buffer, kept."""

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None
        self.absmax: torch.Tensor | None = None

    def dequantize(self, base: nn.Module, dtype: torch.dtype) -> torch.Tensor:
        n = base.in_features * base.out_features
        blocks = -(-n // 64)
        if self.weight is None or self.weight.numel() < n:  # WEIGHT_BUFFER.resize_(size): one buffer, grown
            self.weight = torch.empty(n, dtype=dtype, device=base.weight.device)
        if self.absmax is None or self.absmax.numel() < blocks:
            self.absmax = torch.empty(blocks, dtype=torch.float32, device=base.weight.device)
        return self.weight[:n].view(base.out_features, base.in_features)


def _quantized(base: nn.Module) -> bool:
    return hasattr(base, "bits")  # trace/_hf.py QuantLinear


def _weight(proj: nn.Module, dtype: torch.dtype, buffers: _Buffers | None) -> torch.Tensor:
    """The base weight (out x in) in the compute dtype: as is, or dequantized (into the global buffer in forward)."""
    base = proj.base_layer
    if not _quantized(base):
        return base.weight  # type: ignore[no-any-return]
    if buffers is not None:
        return buffers.dequantize(base, dtype)
    # fast_dequantize without the global buffer: a fresh weight and fp32 absmax
    _absmax = torch.empty(-(-base.in_features * base.out_features // 64), dtype=torch.float32,
                          device=base.weight.device)
    del _absmax
    return torch.empty((base.out_features, base.in_features), dtype=dtype, device=base.weight.device)


def _adapter(proj: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float]:
    return proj.lora_A["default"].weight, proj.lora_B["default"].weight, float(proj.scaling["default"])


def _matmul_lora(x2: torch.Tensor, proj: nn.Module, buffers: _Buffers) -> torch.Tensor:
    """kernels/utils.py matmul_lora on (tokens, in): X @ W^T plus s * (X @ A^T) @ B^T added in place."""
    dtype = x2.dtype
    w = _weight(proj, dtype, buffers)
    out = x2 @ w.t()
    a, b, s = _adapter(proj)
    xa = x2 @ a.to(dtype).t()
    out.addmm_(xa, b.to(dtype).t(), alpha=s)
    return out


def _adapter_grads(x2: torch.Tensor, dy: torch.Tensor, proj: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """d_A = s * (dY @ B)^T @ X and d_B = s * dY^T @ (A @ X^T)^T, as fast_lora.py's addmm_ into empty_like."""
    a, b, s = _adapter(proj)
    a16, b16 = a.to(x2.dtype), b.to(x2.dtype)
    d_a = torch.empty_like(a16)
    d_a.addmm_((dy @ b16).t(), x2, alpha=s, beta=0)
    d_b = torch.empty_like(b16)
    d_b.addmm_(dy.t(), (a16 @ x2.t()).t(), alpha=s, beta=0)
    return d_a, d_b


def _add_input_grad(dx: torch.Tensor, dy: torch.Tensor, proj: nn.Module, first: bool) -> torch.Tensor:
    """dX (+)= dY @ W + s * (dY @ B) @ A; the first projection writes into dx (`torch.matmul(..., out=X)`)."""
    w = _weight(proj, dy.dtype, None)
    if first:
        torch.matmul(dy, w, out=dx)
    else:
        dx.addmm_(dy, w)
    del w
    a, b, s = _adapter(proj)
    dx.addmm_(dy @ b.to(dy.dtype), a.to(dy.dtype), alpha=s)
    return dx


class _FastRMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = torch.empty_like(x)
        r = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
        ctx.save_for_backward(x, w, r)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        return dy, None  # _rms_layernorm_backward writes dX into dY


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,  # type: ignore[override]
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_out = q.clone() if not q.is_contiguous() else q
        k_out = k.clone() if not k.is_contiguous() else k
        if q_out is q or k_out is k:
            ctx.mark_dirty(*[t for t, o in ((q, q_out), (k, k_out)) if t is o])
        ctx.cos, ctx.sin = cos, sin  # attributes: kept, not saved tensors
        return q_out, k_out

    @staticmethod
    def backward(ctx: Any, dq: torch.Tensor, dk: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        return dq, dk, None, None  # rotated back in place


class _LoRAQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mods: tuple[nn.Module, ...], buffers: _Buffers,  # type: ignore[override]
                *adapters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x2 = x.view(-1, x.shape[-1])
        outs = tuple(_matmul_lora(x2, p, buffers).view(*x.shape[:-1], -1) for p in mods)
        ctx.mods = mods
        ctx.save_for_backward(x, *adapters)
        return outs

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x = ctx.saved_tensors[0]
        x2 = x.view(-1, x.shape[-1])
        dys = [g.reshape(-1, g.shape[-1]) for g in grads]  # dK.reshape: K's gradient comes back transposed
        adapter_grads: list[torch.Tensor] = []
        for dy, p in zip(dys, ctx.mods, strict=True):
            adapter_grads += _adapter_grads(x2, dy, p)
        dx = x2
        for j, (dy, p) in enumerate(zip(dys, ctx.mods, strict=True)):
            dx = _add_input_grad(dx, dy, p, first=j == 0)
        return (dx.view(x.shape), None, None, *adapter_grads)


class _LoRAW(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, proj: nn.Module, buffers: _Buffers,  # type: ignore[override]
                a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = _matmul_lora(x.reshape(-1, x.shape[-1]), proj, buffers).view(*x.shape[:-1], -1)
        ctx.proj = proj
        ctx.save_for_backward(a, b, x)
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        _, _, x = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        d_a, d_b = _adapter_grads(x2, dy2, ctx.proj)
        w = _weight(ctx.proj, dy.dtype, None)
        dx = dy2 @ w
        del w
        a, b, s = _adapter(ctx.proj)
        dx.addmm_(dy2 @ b.to(dy.dtype), a.to(dy.dtype), alpha=s)
        return dx.view(x.shape), None, None, d_a, d_b


class _LoRAMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mods: tuple[nn.Module, ...], buffers: _Buffers,  # type: ignore[override]
                *adapters: torch.Tensor) -> torch.Tensor:
        gate, up, down = mods
        x2 = x.view(-1, x.shape[-1])
        e = _matmul_lora(x2, gate, buffers)
        g = _matmul_lora(x2, up, buffers)
        h = torch.empty_like(e)  # swiglu_fg_kernel: h = e * sigmoid(e) * g
        i = _matmul_lora(h, down, buffers)
        del h
        ctx.mods = mods
        ctx.save_for_backward(*adapters, x, e, g)
        return i.view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        *_, x, e, g = ctx.saved_tensors
        gate, up, down = ctx.mods
        x2 = x.view(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        # DW = matmul_lora(dY, downW^T, ...): dY @ W_down + s * (dY @ B) @ A
        w = _weight(down, dy.dtype, None)
        dw = dy2 @ w
        del w
        a, b, s = _adapter(down)
        dw.addmm_(dy2 @ b.to(dy.dtype), a.to(dy.dtype), alpha=s)
        h, df, de = dw, e, g  # swiglu_DWf_DW_dfg_kernel: in place
        d_down = _adapter_grads(h, dy2, down)
        d_up = _adapter_grads(x2, df, up)
        d_gate = _adapter_grads(x2, de, gate)
        dx = _add_input_grad(x2, df, up, first=True)
        dx = _add_input_grad(dx, de, gate, first=False)
        return (dx.view(x.shape), None, None, *d_gate, *d_up, *d_down)


def _norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return _FastRMS.apply(hidden_states, self.weight)  # type: ignore[no-any-return]


def _mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mods = (self.gate_proj, self.up_proj, self.down_proj)
    adapters = [t for p in mods for t in _adapter(p)[:2]]
    return _LoRAMLP.apply(x, mods, self._unsloth_buffers, *adapters)  # type: ignore[no-any-return]


def _attention_forward(self: nn.Module, hidden_states: torch.Tensor,
                       position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                       attention_mask: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """models/llama.py LlamaAttention_fast_forward: apply_qkv, fast_rope_embedding, the attention, apply_o; the
    attention itself runs through transformers' interface (the tracer's CUDA SDPA / flash emulation)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    kwargs.pop("cache", None)
    kwargs.pop("use_cache", None)
    bsz, q_len, _ = hidden_states.shape
    mods = (self.q_proj, self.k_proj, self.v_proj)
    chosen = self._unsloth_groups
    # Qwen2: original_apply_qkv, peft's layers; or the qkv group not selected (axolotl without unsloth_lora_qkv)
    if "qkv" not in chosen or any(p.base_layer.bias is not None for p in mods):
        q, k, v = (p(hidden_states) for p in mods)
    else:
        adapters = [t for p in mods for t in _adapter(p)[:2]]
        q, k, v = _LoRAQKV.apply(hidden_states, mods, self._unsloth_buffers, *adapters)
    q = q.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
    k = k.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
    v = v.view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
    assert position_embeddings is not None
    cos, sin = position_embeddings
    if "rope" in chosen:
        q, k = _RoPE.apply(q, k, cos, sin)
    else:  # transformers' apply_rotary_pos_emb of the model's own module
        q, k = sys.modules[type(self).__module__].apply_rotary_pos_emb(q, k, cos, sin)
    attention = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
    out, _ = attention(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
    out = out.reshape(bsz, q_len, -1)
    if "o" not in chosen:
        return self.o_proj(out), None
    a, b, _ = _adapter(self.o_proj)
    return _LoRAW.apply(out, self.o_proj, self._unsloth_buffers, a, b), None


def install(model: nn.Module, layers: nn.ModuleList, groups: tuple[str, ...]) -> None:
    """Patch the peft-wrapped model's decoder layers and final norm with the emulated kernels (models/llama.py
    FastLlamaModel.pre_patch / patch_peft_model), the selected groups only (axolotl monkeypatch/unsloth_.py patches
    them one by one: LlamaRMSNorm, apply_rotary_pos_emb, apply_qkv / apply_o, the MLP's forward)."""
    buffers = _Buffers()
    for layer in layers:
        if "norm" in groups:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.forward = types.MethodType(_norm_forward, norm)
        if {"qkv", "o", "rope"} & set(groups):
            layer.self_attn._unsloth_buffers = buffers
            layer.self_attn._unsloth_groups = groups
            layer.self_attn.forward = types.MethodType(_attention_forward, layer.self_attn)
        if "mlp" in groups:
            layer.mlp._unsloth_buffers = buffers
            layer.mlp.forward = types.MethodType(_mlp_forward, layer.mlp)
    if "norm" not in groups:
        return
    body = layers[0]
    for mod in model.modules():  # the final norm: LlamaModel.norm (LlamaModel_fast_forward: fast_rms_layernorm)
        if hasattr(mod, "layers") and mod.layers is layers and hasattr(mod, "norm"):
            mod.norm.forward = types.MethodType(_norm_forward, mod.norm)
            break
    else:
        raise AssertionError(f"no final norm found beside {type(body).__name__}")
