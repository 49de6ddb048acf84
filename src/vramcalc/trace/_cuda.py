"""CUDA behaviours reproduced on fake CPU tensors.

Fake tensors live on a fake `cpu` device (fake `cuda` tensors abort in the autograd engine of a
CPU-only torch), so every place where ATen or PyTorch picks a different path by device is patched
for the duration of a trace:

* dropout: `at::dropout` takes the fused `native_dropout` kernel only for CUDA inputs
  (aten/src/ATen/native/Dropout.cpp `is_fused_kernel_acceptable`), saving a 1-byte bool mask; on
  CPU it draws a noise tensor in the input's dtype. We call `native_dropout` ourselves. As in
  ATen, p == 0 or eval mode returns the input itself (no allocation).
* scaled_dot_product_attention: CUDA picks flash (16-bit, no mask), then memory-efficient, then
  math (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp). We replace the op by an
  autograd.Function that allocates what those kernels allocate (see `_FusedAttention`).
* autocast: the CUDA op lists (aten/src/ATen/autocast_mode.cpp, AutocastCUDA) differ from the CPU
  lists. We enable CPU autocast and override its kernels with Python kernels that apply the CUDA
  policy per op (and a pass-through for ops only the CPU list has), including the weight-cast
  cache for leaf fp32 tensors that require grad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# --- autocast: CUDA policies (aten/src/ATen/autocast_mode.cpp, TORCH_LIBRARY_IMPL(aten, AutocastCUDA)) --
_LOWER = (
    "_convolution", "_convolution.deprecated", "conv1d", "conv2d", "conv3d", "conv_tbc",
    "conv_transpose1d", "conv_transpose2d.input", "conv_transpose3d.input", "convolution",
    "cudnn_convolution", "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul",
    "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell",
    "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)
_FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
    "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus",
    "layer_norm", "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm",
    "nuclear_norm.dim", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
    "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
    "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist",
    "cdist", "renorm", "logsumexp", "rms_norm", "upsample_nearest1d", "_upsample_nearest_exact1d",
    "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d",
    "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_trilinear3d",
    "upsample_bicubic2d", "_upsample_bicubic2d_aa",
)
_FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)
_FP32_APPEND_DTYPE = ("norm.Scalar", "norm.ScalarOpt_dim")
_PROMOTE = ("addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
            "index_put", "tensordot", "scatter_add")
_BANNED = ("binary_cross_entropy",)


def _policies() -> dict[str, str]:
    table: dict[str, str] = {}
    for names, policy in ((_LOWER, "lower"), (_FP32, "fp32"), (_FP32_SET_OPT_DTYPE, "fp32_set_opt_dtype"),
                          (_FP32_APPEND_DTYPE, "fp32_append_dtype"), (_PROMOTE, "promote"),
                          (_BANNED, "banned")):
        table.update(dict.fromkeys(names, policy))
    return table


def _registered(key: str) -> set[str]:
    """aten ops with a real (non-fallthrough) kernel for dispatch key `key`, as `name[.overload]`."""
    found = set()
    for name in torch._C._dispatch_get_all_op_names():
        if name.startswith("aten::") and f"\n{key}: registered" in "\n" + torch._C._dispatch_dump(name):
            found.add(name[len("aten::"):])
    return found


def _overload(name: str) -> Any:
    base, _, ov = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), ov or "default")


class _AutocastState:
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    active = False  # inside the forward's cuda_autocast region (the outermost autocast)


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _cast(t: Any, dtype: torch.dtype, cache: bool) -> Any:
    if isinstance(t, list | tuple):
        return type(t)(_cast(x, dtype, cache) for x in t)
    if not _eligible(t) or t.dtype == dtype:
        return t
    # autocast_mode.cpp cached_cast: fp32 leaf tensors that require grad (the weights) are cast
    # once per autocast region and the copy is kept until the region exits.
    # Outside the forward's region (checkpointing re-enters autocast for each recomputed layer in backward)
    # the real cache lives only for that nested region: torch/amp/autocast_mode.py __exit__ clears it when
    # the nesting drops to 0, so no copy is kept beyond what autograd saves.
    if (cache and _AutocastState.active and t.dtype == torch.float32 and t.requires_grad and t.is_leaf
            and not t._is_view()):
        hit = _AutocastState.cache.get(id(t))
        # A cast made under no_grad has no grad_fn: a later forward with grad must not reuse it. The tracer runs one
        # autocast region around the whole loss (_step.py), where accelerate enters one per model forward
        # (accelerator.py prepare_model), clearing the cache at each forward's end; KTOTrainer's no_grad KL forward
        # comes before the policy's (trl kto_trainer.py), so its casts were reused there and the loss had no grad_fn.
        if hit is not None and hit[0] is t and (hit[1].requires_grad or not torch.is_grad_enabled()):
            return hit[1]
        out = t.to(dtype)
        _AutocastState.cache[id(t)] = (t, out)
        return out
    return t.to(dtype)


def _make_kernel(op: Any, policy: str) -> Any:
    exclude = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            if policy == "lower":
                lp = torch.get_autocast_dtype("cpu")
                args = tuple(_cast(a, lp, True) for a in args)
                kwargs = {k: _cast(v, lp, True) for k, v in kwargs.items()}
            elif policy in ("fp32", "fp32_append_dtype"):
                args = tuple(_cast(a, torch.float32, False) for a in args)
                kwargs = {k: _cast(v, torch.float32, False) for k, v in kwargs.items()}
            elif policy == "fp32_set_opt_dtype":
                if args and _eligible(args[0]) and kwargs.get("dtype") is None:
                    schema_args = [a.name for a in op._schema.arguments]
                    idx = schema_args.index("dtype")
                    if len(args) > idx:
                        if args[idx] is None:
                            args = (*args[:idx], torch.float32, *args[idx + 1:])
                    else:
                        kwargs = {**kwargs, "dtype": torch.float32}
            elif policy == "promote":
                tensors = [a for a in [*args, *kwargs.values()] if _eligible(a)]
                if tensors:
                    widest = tensors[0].dtype
                    for t in tensors[1:]:
                        widest = torch.promote_types(widest, t.dtype)
                    args = tuple(_cast(a, widest, False) for a in args)
                    kwargs = {k: _cast(v, widest, False) for k, v in kwargs.items()}
            elif policy == "banned":
                raise RuntimeError(f"{op} is unsafe to autocast (CUDA autocast bans it)")
            return op(*args, **kwargs)

    return kernel


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype) -> Iterator[None]:
    """CPU autocast whose op lists are replaced by CUDA's (enter around the forward only)."""
    _AutocastState.cache = {}
    _AutocastState.active = True
    try:
        with torch.autocast("cpu", dtype=dtype):
            yield
    finally:
        _AutocastState.cache = {}
        _AutocastState.active = False


_LIB: list[Any] = []


def _install_autocast_kernels() -> list[str]:
    """Override AutocastCPU kernels with the CUDA policies; return CUDA ops we have no policy for."""
    if _LIB:
        return []
    import warnings

    policies = _policies()
    cuda_ops, cpu_ops = _registered("AutocastCUDA"), _registered("AutocastCPU")
    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(cuda_ops | cpu_ops):
            try:
                op = _overload(name)
            except AttributeError:
                continue
            policy = policies.get(name, "passthrough") if name in cuda_ops or name in policies else "passthrough"
            lib.impl(name, _make_kernel(op, policy), "AutocastCPU")
    _LIB.append(lib)
    return sorted(n for n in cuda_ops if n not in policies)


# --- scaled_dot_product_attention ------------------------------------------------------------------
def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


class _FusedAttention(torch.autograd.Function):
    """Allocations of CUDA flash / memory-efficient attention, with fake values.

    flash (aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp):
      forward  out = empty_like(q) in (B, S, H, D) layout; softmax_lse (B, H, Sq) fp32.
      backward dq, dk, dv like q, k, v; softmax_d (B, H, round128(Sq)) fp32 and
               dq_accum (B, round128(Sq), H, round32(D)) fp32 temporaries; with GQA,
               dk/dv_expanded (B, Sk, H, D) temporaries summed into dk, dv.
    efficient (mem_eff_attention, attention_backward.cu):
      forward  out (B, S, H, D); logsumexp (B, H, round32(Sq)) fp32.
      backward dq, dk, dv; delta (B, H, Sq) fp32; for 16-bit inputs an fp32 dq accumulation
               workspace (approximation of the cutlass kernel's workspace).
    Saved for backward: q, k, v (already live), out and the logsumexp; with a mask (efficient only) its
    float form: attention.cpp convert_boolean_attn_mask turns a bool mask into one in q's dtype, and
    preprocess_mask pads its last dimension to a multiple of 8 (mem_eff_alignment), each call.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        b, h, s, _ = q.shape
        dv = v.shape[-1]
        out = torch.empty((b, s, h, dv), dtype=q.dtype, device=q.device).transpose(1, 2)
        lse_len = s if backend == "flash" else _round_up(s, 32)
        lse = torch.empty((b, h, lse_len), dtype=torch.float32, device=q.device)
        if ctx is not None:
            ctx.backend = backend
            ctx.bias_shape = None if bias is None else tuple(bias.shape)
            # The efficient kernel's attn_bias is saved for its backward (derivatives.yaml
            # _scaled_dot_product_efficient_attention: attn_bias).
            ctx.save_for_backward(q, k, v, out, lse, *(() if bias is None else (bias,)))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        saved = ctx.saved_tensors  # once: a checkpointed block's saved tensors unpack only once
        q, k, v = saved[:3]
        b, h, s, d = q.shape
        hk, sk = k.shape[1], k.shape[2]

        def like(t: torch.Tensor) -> torch.Tensor:
            bb, hh, ss, dd = t.shape
            return torch.empty((bb, ss, hh, dd), dtype=t.dtype, device=t.device).transpose(1, 2)

        dq, dk, dv = like(q), like(k), like(v)
        if ctx.backend == "flash":
            temps = [torch.empty((b, h, _round_up(s, 128)), dtype=torch.float32, device=q.device),
                     torch.empty((b, _round_up(s, 128), h, _round_up(d, 32)), dtype=torch.float32,
                                 device=q.device)]
            if hk != h:
                temps += [torch.empty((b, sk, h, d), dtype=k.dtype, device=k.device),
                          torch.empty((b, sk, h, v.shape[-1]), dtype=v.dtype, device=v.device)]
        else:
            temps = [torch.empty((b, h, s), dtype=torch.float32, device=q.device)]
            if q.dtype != torch.float32:
                temps.append(torch.empty((b, s, h, d), dtype=torch.float32, device=q.device))
        del temps
        grad_bias = None
        if ctx.bias_shape is not None and ctx.needs_input_grad[4]:
            # A bias that needs a gradient (T5's learned position bias, modeling_t5.py): attention_backward.cu
            # _efficient_attention_backward allocates grad_bias of the bias as the kernel sees it, expanded to
            # (B, H, Sq, Sk) by preprocess_mask, its last dimension padded to a multiple of 16, in the bias's
            # dtype; the expand's backward sums it over the broadcast dimensions (a new tensor of the bias's shape).
            bias = saved[5]
            full = torch.empty((b, h, s, _round_up(sk, 16)), dtype=bias.dtype, device=q.device)[..., :sk]
            dims = tuple(i for i, n in enumerate(ctx.bias_shape) if n == 1 and full.shape[i] != 1)
            grad_bias = full.sum(dims, keepdim=True) if dims else full
            del full
        return dq, dk, dv, None, grad_bias


def _attn_bias(mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The additive bias CUDA sdpa makes of a mask for the memory-efficient kernel.

    attention.cpp convert_boolean_attn_mask: a bool mask becomes where(mask, 0, -inf) in the query's
    dtype (a new tensor); preprocess_mask pads the last dimension to a multiple of 16 (mem-efficient
    alignment) and expands it over the heads (a view).
    """
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
    last = mask.shape[-1]
    if last % 16:
        padded = torch.zeros((*mask.shape[:-1], _round_up(last, 16)), dtype=mask.dtype, device=mask.device)
        mask = padded[..., :last]
    return mask


def _select_backend(q: torch.Tensor, k: torch.Tensor, attn_mask: Any, enable_gqa: bool) -> str:
    """sdp_utils.cpp priority on sm80+: flash, then memory-efficient, then math."""
    head_dim = q.shape[-1]
    gqa = k.shape[1] != q.shape[1]
    if q.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and head_dim <= 256:
        return "flash"
    if not gqa and head_dim <= 512 * 8:  # efficient: any float dtype, masks allowed, no GQA
        return "efficient"
    return "math"


_ORIG_SDPA = torch.nn.functional.scaled_dot_product_attention
_ORIG_DROPOUT = torch.nn.functional.dropout
SDPA_BACKENDS: list[str] = []
# Inference traces (trace/_generate.py): without autograd the flash / efficient kernels still run on CUDA
# (only their forward: out + logsumexp); training traces keep the math path for inputs without grad.
_NO_GRAD_FUSED: list[bool] = [False]
# Gemma 3's frozen SigLIP tower (trace/_vision.py) runs with grad enabled on inputs that need none: CUDA picks its
# backend by shapes and dtypes, not by requires_grad, so the flash / efficient forward runs (out + logsumexp, the
# efficient kernel's bias made of the mask); the math path's scores (heads x 4,096^2 per image) would be an
# artefact of the emulation. Only set for that tower, so the other grids' cached traces stay as measured.
_NO_GRAPH_FUSED: list[bool] = [False]


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
          enable_gqa: bool = False) -> torch.Tensor:
    if torch.is_autocast_enabled("cpu"):  # CUDA autocast: sdpa is in the lower-precision list
        lp = torch.get_autocast_dtype("cpu")
        query, key, value = (_cast(t, lp, False) for t in (query, key, value))
        if isinstance(attn_mask, torch.Tensor) and attn_mask.is_floating_point():
            attn_mask = _cast(attn_mask, lp, False)
    backend = _select_backend(query, key, attn_mask, enable_gqa)
    SDPA_BACKENDS.append(backend)
    if backend != "math" and _NO_GRAD_FUSED[0] and not torch.is_grad_enabled():
        return _FusedAttention.forward(None, query, key, value, backend)
    # Under no_grad (DPO's reference forward) CUDA runs the same fused kernel: only its forward allocations.
    no_graph = not (query.requires_grad or key.requires_grad or value.requires_grad)
    if backend != "math" and no_graph and _NO_GRAPH_FUSED[0]:
        bias = _attn_bias(attn_mask, query) if isinstance(attn_mask, torch.Tensor) else None
        out = _FusedAttention.forward(None, query, key, value, backend)
        del bias
        return out
    if backend == "math" or (no_graph and torch.is_grad_enabled()):
        return torch.ops.aten._scaled_dot_product_attention_math(
            query, key, value, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]
    from vramcalc.trace import _ring

    if _ring.RING[0] > 1 and backend == "flash":  # context parallelism: axolotl's batch ring (trace/_ring.py)
        return _ring.ring_sdpa(query, key, value)
    bias = _attn_bias(attn_mask, query) if isinstance(attn_mask, torch.Tensor) else None
    return _FusedAttention.apply(query, key, value, backend, bias)


def _dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    # Dropout.cpp: p == 0, eval mode or an empty input return the input itself.
    if not training or p == 0 or input.numel() == 0:
        return input
    if p == 1:
        return input.mul_(0) if inplace else input * 0
    out, _mask = torch.native_dropout(input, p, True)
    if inplace:
        return input.copy_(out)
    return out


@contextlib.contextmanager
def cuda_emulation(packed_mask: bool = False, inference: bool = False) -> Iterator[list[str]]:
    """Patch dropout and sdpa, install the CUDA autocast kernels; yields notes.

    `packed_mask`: the batch is packed (position_ids restart) and transformers builds its 4-D mask, as
    it does on CUDA; otherwise packed-sequence detection answers None (one arange per row).
    `inference`: under no_grad the fused kernels allocate only their output and logsumexp.
    """
    notes: list[str] = []
    missing = _install_autocast_kernels()
    if missing:
        notes.append("CUDA autocast ops without a reproduced policy (passed through): " + ", ".join(missing))
    F = torch.nn.functional
    F.scaled_dot_product_attention = _sdpa  # type: ignore[assignment]
    F.dropout = _dropout  # type: ignore[assignment]
    SDPA_BACKENDS.clear()
    _NO_GRAD_FUSED[0] = inference
    masking, orig_packed = (None, None) if packed_mask else _patch_packed_sequence_detection()
    try:
        yield notes
    finally:
        F.scaled_dot_product_attention = _ORIG_SDPA
        F.dropout = _ORIG_DROPOUT
        _NO_GRAD_FUSED[0] = False
        if masking is not None:
            masking.find_packed_sequence_indices = orig_packed


def _patch_packed_sequence_detection() -> tuple[Any, Any]:
    """transformers.masking_utils.find_packed_sequence_indices treats a FakeTensor as "tracing"
    (utils/import_utils.py is_tracing) and returns a packed-sequence mask without reading it, which
    disables the is_causal skip and materialises a 4-D bool mask and repeat_kv. On CUDA the default
    position_ids (one arange per row) are found unpacked and it returns None: we answer the same."""
    try:
        from transformers import masking_utils
    except ImportError:
        return None, None
    orig = getattr(masking_utils, "find_packed_sequence_indices", None)
    if orig is None:
        return None, None
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    return masking_utils, orig


