"""Inference memory: weights in any storage format, the KV cache, and the forward's workspace.

Pure arithmetic on ints. Sources per formula below: the quantized Linear layers' buffers
(AutoGPTQ qlinear, AutoAWQ WQLinear_GEMM, bitsandbytes Linear4bit / Linear8bitLt, FP8 per-tensor
scales as vLLM's Fp8LinearMethod), the KV cache layout of transformers' cache_utils.py and vLLM's
paged cache (2 × layers × kv_heads × head_dim per token), DeepSeek-V2 (arXiv:2405.04434 §2.1) for MLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory.distributed import model_parallel_params
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.weights import nf4_bytes
from vramcalc.core.params import block_linears, head_dim, inventory, kv_heads
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

QUANTIZED = ("fp8", "int8", "gptq-int4", "awq-int4", "nf4")


@dataclass(frozen=True, slots=True)
class InferenceBytes:
    """Per-GPU inference memory by component, and tensor bytes at the peak of prefill and decode."""

    parameters: int
    weights: int
    quant_constants: int  # part of weights: scales, zero points, g_idx, absmax
    kv_cache: int
    kv_bytes_per_token: int  # per sequence, all layers on this GPU
    activations: int  # prefill workspace (largest)
    temporaries: int  # logits of the last position
    phases: dict[str, int]
    notes: tuple[str, ...]


def weight_dtype(t: TrainingSpec) -> str:
    """The storage format of the block Linears: --weight-dtype, or the precision's weight dtype."""
    return recipe_of(t).weight if t.weight_dtype == "auto" else t.weight_dtype


def quantized_linear_bytes(in_f: int, out_f: int, fmt: str, group: int,
                           double_quant: bool) -> tuple[int, int]:
    """(data bytes, constant bytes) of one out_f × in_f Linear stored as `fmt`."""
    numel = in_f * out_f
    if fmt == "fp8":
        # float8_e4m3 weights, one fp32 weight_scale per tensor (vLLM Fp8LinearMethod, per-tensor scheme).
        return numel, 4
    if fmt == "int8":
        # bitsandbytes Int8Params: int8 data + SCB, one fp32 scale per output row (arXiv:2208.07339).
        return numel, 4 * out_f
    if fmt == "nf4":
        return nf4_bytes(numel, double_quant)  # QLoRA §3: 64-element blocks, absmax double-quantized
    groups = ceil_div(in_f, group)
    # 4-bit packed 8 per int32: qweight in·out/2 bytes; qzeros (groups × out/8 int32) = groups·out/2 bytes;
    # scales fp16 groups × out (AutoGPTQ qlinear_cuda.py QuantLinear; AutoAWQ gemm.py WQLinear_GEMM).
    data = ceil_div(numel, 2)
    constants = groups * ceil_div(out_f, 8) * 4 + 2 * groups * out_f
    if fmt == "gptq-int4":
        constants += 4 * in_f  # g_idx: one int32 per input channel (AutoGPTQ registers it for every layer)
    return data, constants


def weights(model: ModelSpec, t: TrainingSpec) -> tuple[int, int, int]:
    """(total weight bytes on one GPU, quantization constants among them, parameters on that GPU)."""
    fmt = weight_dtype(t)
    recipe = recipe_of(t)
    total = sum(x.numel for x in inventory(model))
    on_gpu = model_parallel_params(model, t.tp, t.pp)
    if fmt not in QUANTIZED or not model.has_architecture:
        per = dtype_bytes(fmt if fmt not in QUANTIZED else recipe.compute)
        return on_gpu * per, 0, on_gpu
    # Quantizers convert the blocks' Linear layers only; embeddings, norms, biases and lm_head stay in the
    # compute dtype (transformers' quantizers: modules_to_not_convert includes lm_head).
    rest_bytes = dtype_bytes(recipe.compute)
    data = constants = quantized = 0
    for lin in block_linears(model):
        d, c = quantized_linear_bytes(lin.in_features, lin.out_features, fmt, t.quant_group_size,
                                      t.double_quant)
        data += d * lin.count
        constants += c * lin.count
        quantized += lin.in_features * lin.out_features * lin.count
    full = data + constants + (total - quantized) * rest_bytes
    if on_gpu != total:  # tensor/pipeline parallel: the busiest GPU's share
        return ceil_div(full * on_gpu, total), ceil_div(constants * on_gpu, total), on_gpu
    return full, constants, on_gpu


def sliding_layers(model: ModelSpec) -> int:
    """Layers that attend within `sliding_window` (and cache only that many tokens).

    Mistral v0.1 / Phi-3: every layer. Gemma 2: every other layer (modeling_gemma2.py, layer_idx % 2 == 0);
    Gemma 3: five of every six (sliding_window_pattern 6).
    """
    n = model.num_layers or 0
    if model.sliding_window is None:
        return 0
    if model.family == "gemma2":
        return ceil_div(n, 2)
    if model.family == "gemma3":
        return n - n // 6
    return n


def kv_dtype(t: TrainingSpec) -> str:
    return recipe_of(t).compute if t.kv_dtype == "auto" else t.kv_dtype


def kv_cache_bytes(model: ModelSpec, t: TrainingSpec, batch: int, context: int) -> tuple[int, int]:
    """(KV cache bytes on one GPU for `batch` sequences of `context` tokens, bytes per token per sequence)."""
    if not model.has_architecture:
        return 0, 0
    assert model.num_layers is not None
    b = dtype_bytes(kv_dtype(t))
    layers = ceil_div(model.num_layers, t.pp)
    kv_lora_rank = getattr(model, "kv_lora_rank", None)
    if kv_lora_rank:
        # MLA caches the compressed latent plus the shared RoPE key per token and layer (DeepSeek-V2 §2.1.3),
        # the same on every tensor-parallel rank (vLLM's MLA backend replicates it).
        per_layer_token = (kv_lora_rank + (getattr(model, "qk_rope_head_dim", None) or 0)) * b
    else:
        # K and V: 2 × kv_heads × head_dim per token and layer; GQA/MQA shrink kv_heads (arXiv:2305.13245).
        # Tensor parallel splits the KV heads, replicating them when tp > kv_heads (vLLM).
        per_layer_token = 2 * ceil_div(kv_heads(model), t.tp) * head_dim(model) * b
    n_sliding = min(sliding_layers(model), model.num_layers)
    sliding_share = ceil_div(n_sliding * layers, model.num_layers)
    full_layers = layers - sliding_share
    window = model.sliding_window or context
    tokens_cached = full_layers * context + sliding_share * min(context, window)
    return batch * tokens_cached * per_layer_token, layers * per_layer_token


def workspace_per_token(model: ModelSpec, t: TrainingSpec) -> int:
    """Bytes per token live inside one layer's forward with no autograd (the largest of attention and MLP)."""
    assert model.hidden_size is not None and model.intermediate_size is not None
    c = dtype_bytes(recipe_of(t).compute)
    h = model.hidden_size
    q_dim = (model.num_attention_heads or 1) * head_dim(model)
    kv_dim = kv_heads(model) * head_dim(model)
    i = model.intermediate_size
    if model.num_experts:  # each token runs through its experts one after another
        i = model.moe_intermediate_size or i
    # residual + normed input, then q, k, v and the attention output (modeling_llama.py LlamaAttention) or
    # gate, up and act(gate)·up (LlamaMLP) of the tensor-parallel shard.
    attn = ceil_div(2 * q_dim + 2 * kv_dim, t.tp)
    mlp = ceil_div((3 if model.mlp == "gated" else 2) * i, t.tp)
    return c * (2 * h + max(attn, mlp))


def estimate_inference(model: ModelSpec, t: TrainingSpec) -> InferenceBytes:
    """Per-GPU memory of serving `t.batch_size` sequences of `t.seq_len` tokens (the context)."""
    notes: list[str] = []
    batch, context = t.batch_size, t.seq_len
    w, constants, on_gpu = weights(model, t)
    kv, kv_token = kv_cache_bytes(model, t, batch, context)
    if not model.has_architecture:
        notes.append("KV cache and workspace not modeled: this preset gives only a parameter count.")
        phases = {"prefill": w, "decode": w}
        return InferenceBytes(on_gpu, w, 0, 0, 0, 0, 0, phases, tuple(notes))
    assert model.vocab_size is not None
    per_token = workspace_per_token(model, t)
    prefill_ws = batch * context * per_token
    decode_ws = batch * per_token
    # generate() keeps logits of the last position only (logits_to_keep=1) and upcasts them to fp32.
    c = dtype_bytes(recipe_of(t).compute)
    logits = batch * ceil_div(model.vocab_size, t.tp) * (c + 4)
    phases = {"prefill": w + kv + prefill_ws + logits, "decode": w + kv + decode_ws + logits}
    notes.append("inference: the whole context is prefilled at once with the cache already sized for it "
                 "(an upper bound; chunked prefill in vLLM/TGI needs less workspace).")
    if model.sliding_window and sliding_layers(model):
        notes.append(f"sliding window: {sliding_layers(model)} of {model.num_layers} layers cache at most "
                     f"{model.sliding_window:,} tokens.")
    if weight_dtype(t) in QUANTIZED:
        notes.append(f"{weight_dtype(t)}: block Linear layers quantized; embeddings, norms and lm_head stay "
                     f"in {recipe_of(t).compute}.")
    return InferenceBytes(on_gpu, w, constants, kv, kv_token, prefill_ws, logits, phases, tuple(notes))
