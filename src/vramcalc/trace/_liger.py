"""Liger's layer kernels on the fake device (`--kernels liger`), memory only.

Liger's kernels are Triton, so these autograd Functions allocate and save what linkedin/Liger-Kernel (commit
ead96b618e5c67bddc6a6e9bcb99bfe6b5ab661c) allocates and saves, with each kernel's arithmetic left out (the
tracer measures memory); core/memory/liger.py models the same:

* `_RMSNorm`: ops/rms_norm.py LigerRMSNormFunction (ensure_contiguous on its inputs): Y = torch.empty, an fp32
  RSTD per row (casting mode llama); save_for_backward(X, W, RSTD). Backward: `_dW = torch.empty((sm_count,
  n_cols), float32)`, dX written into dY (in_place True), dW = _dW.sum(0).to(W.dtype).
* `_SiLUMul`: ops/swiglu.py LigerSiLUMulFunction: c = torch.empty_like(a); save_for_backward(a, b); backward
  writes da, db into a and b and returns them.
* `_Rope`: ops/rope.py LigerRopeFunction: q.transpose(1, 2).contiguous() (the projection's own storage), rotated
  in place, returned transposed back; setup_context saves cos, sin; backward: dq.transpose(1, 2).contiguous()
  (a copy when the incoming gradient is not in that layout), rotated in place.

`install` does what monkey_patch.py `_apply_liger_kernel_to_instance` does to an existing model: the forward of
each layer's input_layernorm, post_attention_layernorm and MLP (LigerSwiGLUMLP.forward) and of the final norm,
and apply_rotary_pos_emb in the model's modeling module (swapped in only while a layer's attention runs, so that
other traces in the process keep transformers' own).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
from torch import nn

from vramcalc.core.memory.liger import SM_COUNT


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        x2 = x.view(-1, x.shape[-1])
        y = torch.empty_like(x2)
        rstd = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)
        ctx.save_for_backward(x2, w, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        _x, w, _rstd = ctx.saved_tensors
        dy = dy.contiguous()
        partial = torch.empty((SM_COUNT, dy.shape[-1]), dtype=torch.float32, device=dy.device)
        dw = partial.sum(dim=0).to(w.dtype)
        del partial
        return dy, dw  # dX written into dY


class _SiLUMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        a, b = a.contiguous(), b.contiguous()
        c = torch.empty_like(a)
        ctx.save_for_backward(a, b)
        return c

    @staticmethod
    def backward(ctx: Any, dc: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        dc = dc.contiguous()
        return a, b  # da, db written into a and b


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,  # type: ignore[override]
                sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q = q.transpose(1, 2).contiguous()
        k = k.transpose(1, 2).contiguous()
        cos, sin = cos.contiguous(), sin.contiguous()
        return q.transpose(1, 2), k.transpose(1, 2), cos.view_as(cos), sin.view_as(sin)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        _q, _k, cos, sin = output
        ctx.save_for_backward(cos, sin)

    @staticmethod
    def backward(ctx: Any, dq: torch.Tensor, dk: torch.Tensor, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        dq = dq.transpose(1, 2).contiguous()
        dk = dk.transpose(1, 2).contiguous()
        return dq.transpose(1, 2), dk.transpose(1, 2), None, None


def _rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *args: Any,
            **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers/rope.py liger_rotary_pos_emb: LigerRopeFunction.apply(q, k, cos, sin)."""
    q, k, _cos, _sin = _Rope.apply(q, k, cos, sin)
    return q, k


def _norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return _RMSNorm.apply(hidden_states, self.weight)  # type: ignore[no-any-return]


def _mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers/swiglu.py LigerSwiGLUMLP.forward (peft's LoRA layers inside the projections, unchanged)."""
    return self.down_proj(_SiLUMul.apply(self.gate_proj(x), self.up_proj(x)))  # type: ignore[no-any-return]


def _attention(original: Any, modeling: types.ModuleType) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        own = modeling.apply_rotary_pos_emb
        modeling.apply_rotary_pos_emb = _rotary
        try:
            return original(*args, **kwargs)
        finally:
            modeling.apply_rotary_pos_emb = own
    return forward


def install(model: nn.Module, layers: nn.ModuleList) -> None:
    """Patch the model's decoder layers and final norm as _apply_liger_kernel_to_instance does."""
    for layer in layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.forward = types.MethodType(_norm_forward, norm)
        layer.mlp.forward = types.MethodType(_mlp_forward, layer.mlp)
        attn = layer.self_attn
        modeling = sys.modules[type(attn).__module__]
        assert hasattr(modeling, "apply_rotary_pos_emb"), f"{type(attn).__name__}: no apply_rotary_pos_emb"
        attn.forward = _attention(attn.forward, modeling)
    for mod in model.modules():  # the final norm (base_model.norm: _patch_rms_norm_module)
        if hasattr(mod, "layers") and mod.layers is layers and hasattr(mod, "norm"):
            mod.norm.forward = types.MethodType(_norm_forward, mod.norm)
            break
    else:
        raise AssertionError(f"no final norm found beside {type(layers[0]).__name__}")
