"""axolotl's own LoRA kernels on the fake device (`--kernels axolotl:GROUPS`), memory only.

These autograd Functions allocate and save what axolotl-ai-cloud/axolotl src/axolotl/kernels/lora.py (commit
067b021c8b87a9e5e380b9173c704cf7340e30f5) allocates and saves on the no-DoRA, no-LoRA-bias path (with or without
lora_dropout: `_apply_dropout` runs the adapter's dropout module outside the Function and passes X_drop in, which the
Function saves and uses for the adapters; backward then returns a new dX_drop); core/memory/axolotl_kernels.py models
the same:

* `_matmul_lora`: matmul_lora: a QLoRA weight dequantized into a fresh tensor (quantize.py _ctypes_nf4_dequant: the
  weight and an fp32 absmax, the absmax freed on return), `out = torch.matmul(X, W)`, the weight freed, then
  `out.addmm_(X @ A, B, alpha=s)` in place and the base bias added in place.
* `_LoRAQKV`: LoRA_QKV: Q, K, V through matmul_lora; save_for_backward(X, X, A.to(dtype), B.to(dtype) of each);
  backward: grad @ B per projection, the adapters' gradients (addmm_ into empty_like), `grad_X = torch.mm(q_grad,
  W_q)` (new) then addmm_ of k, v and the adapters' paths.
* `_LoRAO`: LoRA_O: save_for_backward(A.to(dtype), B.to(dtype), X, X); backward dX = dY @ W (new), addmm_.
* `_LoRAMLP`: LoRA_MLP with swiglu: gate, up = matmul_lora(X, ...), hidden = swiglu_forward(gate, up) (a new
  tensor), output = matmul_lora(hidden, down); save_for_backward(X, X, gate, up, the six adapters cast); backward:
  grad_down = matmul_lora(dY, down^T) (new), swiglu_backward in place (h, grad_gate, grad_up are grad_down, gate and
  up), the adapters' gradients, `dX = torch.matmul(grad_up, W_up)` (new) then addmm_ of gate and the adapters.

monkeypatch/lora_kernels.py patch_self_attn_lora rewrites transformers' attention forward so that
`self.apply_qkv(hidden_states)` replaces the three q/k/v projection calls and `self.apply_o` the o projection;
here q_proj's call runs LoRA_QKV and hands K and V to the k_proj / v_proj calls that follow (transformers' own
forward otherwise unchanged: q / k norms, RoPE, the attention), and o_proj runs LoRA_O.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from vramcalc.trace._unsloth import _adapter, _quantized


def _dequantize(proj: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The base weight (out x in) in the compute dtype: as is, or dequantized into a fresh tensor."""
    base = proj.base_layer
    if not _quantized(base):
        return base.weight  # type: ignore[no-any-return]
    w = torch.empty((base.out_features, base.in_features), dtype=dtype, device=base.weight.device)
    absmax = torch.empty(-(-base.in_features * base.out_features // 64), dtype=torch.float32,
                         device=base.weight.device)
    del absmax  # out_absmax: freed when _ctypes_nf4_dequant returns
    return w


def _matmul_lora(x2: torch.Tensor, proj: nn.Module, a16: torch.Tensor, b16: torch.Tensor,
                 x_drop: torch.Tensor | None = None) -> torch.Tensor:
    """matmul_lora on (tokens, in): X @ W^T, then s * (X_drop @ A^T) @ B^T added in place (addmm_), bias in
    place."""
    w = _dequantize(proj, x2.dtype)
    out = torch.matmul(x2, w.t())
    del w
    s = float(proj.scaling["default"])
    out.addmm_((x2 if x_drop is None else x_drop) @ a16.t(), b16.t(), alpha=s)
    bias = proj.base_layer.bias
    if bias is not None:
        out += bias
    return out


def _cast(proj: nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`A.to(dtype)`, `B.to(dtype)`: copies when the adapters are stored in another dtype."""
    a, b, _ = _adapter(proj)
    return a.to(dtype), b.to(dtype)


def _adapter_grads(x2: torch.Tensor, dy: torch.Tensor, a16: torch.Tensor, b16: torch.Tensor,
                   s: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_B = dY @ B (kept for dX), d_A, d_B by addmm_ into empty_like, as LoRA_*.backward."""
    grad_b = dy @ b16
    d_a = torch.empty_like(a16.t())
    d_a.addmm_(x2.t(), grad_b, alpha=s, beta=0)
    d_b = torch.empty_like(b16.t())
    d_b.addmm_(a16 @ x2.t(), dy, alpha=s, beta=0)
    return grad_b, d_a.t(), d_b.t()


class _LoRAQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_drop: torch.Tensor | None,  # type: ignore[override]
                mods: tuple[nn.Module, ...], *adapters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x2 = x.view(-1, x.shape[-1])
        xd = None if x_drop is None else x_drop.view(-1, x.shape[-1])
        casts = [_cast(p, x.dtype) for p in mods]
        outs = tuple(_matmul_lora(x2, p, a, b, xd).view(*x.shape[:-1], -1)
                     for p, (a, b) in zip(mods, casts, strict=True))
        ctx.mods = mods
        ctx.has_dropout = x_drop is not None
        ctx.save_for_backward(x, x if x_drop is None else x_drop, *[t for ab in casts for t in ab])
        return outs

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, x_lora, *casts = ctx.saved_tensors
        xl = x_lora.view(-1, x.shape[-1])
        dys = [g.reshape(-1, g.shape[-1]) for g in grads]  # q_grad.view, k_grad.reshape, v_grad.view
        grad_bs, adapter_grads = [], []
        for j, (dy, p) in enumerate(zip(dys, ctx.mods, strict=True)):
            grad_b, d_a, d_b = _adapter_grads(xl, dy, casts[2 * j], casts[2 * j + 1], float(p.scaling["default"]))
            grad_bs.append(grad_b)
            adapter_grads += [d_a, d_b]
        grad_x = None
        for dy, p in zip(dys, ctx.mods, strict=True):
            w = _dequantize(p, dy.dtype)
            if grad_x is None:
                grad_x = torch.mm(dy, w)
            else:
                grad_x.addmm_(dy, w)
            del w
        assert grad_x is not None
        grad_lora = torch.zeros_like(xl) if ctx.has_dropout else grad_x  # grad_X_drop: a new tensor
        for j, p in enumerate(ctx.mods):
            grad_lora.addmm_(grad_bs[j], casts[2 * j], alpha=float(p.scaling["default"]))
        return (grad_x.view(x.shape), grad_lora.view(x.shape) if ctx.has_dropout else None, None, *adapter_grads)


class _LoRAO(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_drop: torch.Tensor | None,  # type: ignore[override]
                proj: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a16, b16 = _cast(proj, x.dtype)
        xd = None if x_drop is None else x_drop.reshape(-1, x.shape[-1])
        out = _matmul_lora(x.reshape(-1, x.shape[-1]), proj, a16, b16, xd).view(*x.shape[:-1], -1)
        ctx.proj = proj
        ctx.has_dropout = x_drop is not None
        ctx.save_for_backward(a16, b16, x, x if x_drop is None else x_drop)
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        a16, b16, x, x_lora = ctx.saved_tensors
        s = float(ctx.proj.scaling["default"])
        xl = x_lora.reshape(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        grad_b, d_a, d_b = _adapter_grads(xl, dy2, a16, b16, s)
        w = _dequantize(ctx.proj, dy.dtype)
        dx = dy2 @ w
        del w
        if ctx.has_dropout:  # dX_drop = (grad_B @ A * s): new
            dx_drop = (grad_b @ a16 * s).view(x.shape)
            return dx.view(x.shape), dx_drop, None, d_a, d_b
        dx.addmm_(grad_b, a16, alpha=s)
        return dx.view(x.shape), None, None, d_a, d_b


class _LoRAMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_drop: torch.Tensor | None,  # type: ignore[override]
                mods: tuple[nn.Module, ...], *adapters: torch.Tensor) -> torch.Tensor:
        gate_p, up_p, down_p = mods
        x2 = x.view(-1, x.shape[-1])
        xd = None if x_drop is None else x_drop.view(-1, x.shape[-1])
        casts = [_cast(p, x.dtype) for p in mods]
        gate = _matmul_lora(x2, gate_p, *casts[0], xd)
        up = _matmul_lora(x2, up_p, *casts[1], xd)
        hidden = torch.empty_like(gate)  # swiglu_forward: a new `out`
        output = _matmul_lora(hidden, down_p, *casts[2])
        del hidden
        ctx.mods = mods
        ctx.has_dropout = x_drop is not None
        ctx.save_for_backward(x, x if x_drop is None else x_drop, gate, up, *[t for ab in casts for t in ab])
        return output.view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, x_lora, gate, up, ga, gb, ua, ub, da, db = ctx.saved_tensors
        gate_p, up_p, down_p = ctx.mods
        sg, su, sd = (float(p.scaling["default"]) for p in ctx.mods)
        x2 = x_lora.view(-1, x.shape[-1])  # X_lora: the adapters' input
        dy2 = dy.view(-1, dy.shape[-1])
        # grad_down = matmul_lora(grad_output, down_weight.t(), None, down_quant, down_B_t, down_A_t, down_scale)
        w = _dequantize(down_p, dy.dtype)
        grad_down = torch.matmul(dy2, w)
        del w
        grad_down.addmm_(dy2 @ db, da, alpha=sd)
        h, grad_gate, grad_up = grad_down, gate, up  # swiglu_backward: in place
        _, d_down_a, d_down_b = _adapter_grads(h, dy2, da, db, sd)
        grad_b_up, d_up_a, d_up_b = _adapter_grads(x2, grad_up, ua, ub, su)
        grad_b_gate, d_gate_a, d_gate_b = _adapter_grads(x2, grad_gate, ga, gb, sg)
        w = _dequantize(up_p, dy.dtype)
        dx = torch.matmul(grad_up, w)
        del w
        w = _dequantize(gate_p, dy.dtype)
        dx.addmm_(grad_gate, w)
        del w
        dx_lora = torch.zeros_like(x2) if ctx.has_dropout else dx  # dX_drop: a new tensor
        dx_lora.addmm_(grad_b_up, ua, alpha=su)
        dx_lora.addmm_(grad_b_gate, ga, alpha=sg)
        return (dx.view(x.shape), dx_lora.view(x.shape) if ctx.has_dropout else None, None, d_gate_a, d_gate_b,
                d_up_a, d_up_b, d_down_a, d_down_b)


def _adapters(mods: tuple[nn.Module, ...]) -> list[torch.Tensor]:
    return [t for p in mods for t in _adapter(p)[:2]]


def _dropped(proj: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """_apply_dropout: the adapter's dropout module applied outside the Function (None for nn.Identity)."""
    drop = proj.lora_dropout["default"]
    return None if isinstance(drop, nn.Identity) or not proj.training else drop(x)


def _mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mods = (self.gate_proj, self.up_proj, self.down_proj)
    return _LoRAMLP.apply(x, _dropped(self.gate_proj, x), mods, *_adapters(mods))  # type: ignore[no-any-return]


def _q_forward(attn: nn.Module) -> Any:
    """q_proj's call: apply_qkv (LoRA_QKV), K and V handed to the k_proj / v_proj calls right after it."""
    def forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        mods = (attn.q_proj, attn.k_proj, attn.v_proj)
        q, k, v = _LoRAQKV.apply(hidden_states, _dropped(attn.q_proj, hidden_states), mods, *_adapters(mods))
        attn._axolotl_kv = [k, v]
        return q  # type: ignore[no-any-return]
    return forward


def _kv_forward(attn: nn.Module, index: int) -> Any:
    def forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        out = attn._axolotl_kv[index]
        attn._axolotl_kv[index] = None
        return out  # type: ignore[no-any-return]
    return forward


def _o_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    a, b, _ = _adapter(self)
    return _LoRAO.apply(x, _dropped(self, x), self, a, b)  # type: ignore[no-any-return]


def install(layers: nn.ModuleList, groups: tuple[str, ...]) -> None:
    """Patch the peft-wrapped decoder layers with the emulated kernels, the selected groups only
    (monkeypatch/lora_kernels.py apply_lora_kernel_patches)."""
    for layer in layers:
        attn = layer.self_attn
        if "qkv" in groups:
            attn.q_proj.forward = types.MethodType(_q_forward(attn), attn.q_proj)
            attn.k_proj.forward = types.MethodType(_kv_forward(attn, 0), attn.k_proj)
            attn.v_proj.forward = types.MethodType(_kv_forward(attn, 1), attn.v_proj)
        if "o" in groups:
            attn.o_proj.forward = types.MethodType(_o_forward, attn.o_proj)
        if "mlp" in groups:
            layer.mlp.forward = types.MethodType(_mlp_forward, layer.mlp)
