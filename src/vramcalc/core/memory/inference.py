"""Inference memory: weights in any storage format, the KV cache, and the forward's workspace.

Pure arithmetic on ints. Sources per formula below: the quantized Linear layers' buffers
(AutoGPTQ qlinear, AutoAWQ WQLinear_GEMM, bitsandbytes Linear4bit / Linear8bitLt, FP8 per-tensor
scales as vLLM's Fp8LinearMethod), the KV cache layout of transformers' cache_utils.py and vLLM's
paged cache (2 × layers × kv_heads × head_dim per token), DeepSeek-V2 (arXiv:2405.04434 §2.1) for MLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory.activations import eager_only
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
    temporaries: int  # logits (prefill or decode), the decode step's second cache copy, dequantization buffer
    phases: dict[str, int]
    notes: tuple[str, ...]
    terms: GenerateTerms | None = None  # generate()'s named terms (None without an architecture)


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
    """Bytes per token live inside one layer's forward with no autograd, at its largest (the MLP).

    transformers 5.24 modeling_llama.py: the model's `inputs_embeds` stays referenced for the whole forward
    (`hidden_states = inputs_embeds`), the loop's block input, the block's residual sum and the
    post-attention norm's output are alive while LlamaMLP holds gate, up and act(gate) (a gated MLP, of the
    tensor-parallel shard; `act(gate) * up` is allocated before its inputs are dropped), or fc1's output and
    its activation (a plain MLP). Gemma scales the embeddings into a new tensor (one more hidden state).
    """
    assert model.hidden_size is not None and model.intermediate_size is not None
    c = dtype_bytes(recipe_of(t).compute)
    h = model.hidden_size
    q_dim = (model.num_attention_heads or 1) * head_dim(model)
    kv_dim = kv_heads(model) * head_dim(model)
    i = model.intermediate_size
    if model.num_experts:  # each token runs through its experts one after another
        i = model.moe_intermediate_size or i
    hidden = 5 if model.family in ("gemma", "gemma2", "gemma3") else 4
    attn = ceil_div(2 * q_dim + 2 * kv_dim, t.tp)
    mlp = ceil_div((3 if model.mlp == "gated" else 2) * i, t.tp)
    return c * (hidden * h + max(attn, mlp))


@dataclass(frozen=True, slots=True)
class GenerateTerms:
    """The named terms of generate()'s two peaks (bytes on one GPU; see `generate_terms`)."""

    prompt_tokens: int
    kv_prefill: int  # the cache when the prefill's last layer runs (static: all of it, preallocated)
    kv_decode: int  # the cache at the last decode step
    kv_transient: int  # decode: a second copy while the cache grows (dynamic: one layer's K; legacy: all)
    prefill_workspace: int  # the layer's hidden states and MLP (or attention) tensors over the prompt
    prefill_attention: int  # eager scores / masks / repeat_kv copies over the prompt (0 for flash)
    decode_workspace: int
    decode_attention: int
    prefill_logits: int  # lm_head output + generate's fp32 copy (every position with --logits all)
    decode_logits: int
    dequant_buffer: int = 0  # persistent (exllama's temp_dq for GPTQ), in both phases


def _attention_bytes(model: ModelSpec, t: TrainingSpec, batch: int, q_len: int, kv_len: int, masked: bool) -> int:
    """One layer's tensors during attention over q_len queries and kv_len keys (this GPU's heads).

    Alive (modeling_llama.py LlamaAttention): the model's inputs_embeds, the block input and its normed copy
    (one more for Gemma's scaled embeddings), the rotated queries; keys and values are the cache's own tensors.
    """
    c = dtype_bytes(recipe_of(t).compute)
    heads = ceil_div(model.num_attention_heads or 1, t.tp)
    d = head_dim(model)
    assert model.hidden_size is not None
    hidden = 4 if model.family in ("gemma", "gemma2", "gemma3") else 3
    base = batch * q_len * c * (hidden * model.hidden_size + heads * d)
    gqa = kv_heads(model) < (model.num_attention_heads or 1)
    # repeat_kv (integrations/sdpa_attention.py, modeling_llama.py eager_attention_forward) expands K and V to
    # every head when GQA runs with a mask (use_gqa_in_sdpa: CUDA takes enable_gqa only without one) or eager.
    # Gemma 2 and BLOOM have no SDPA path: they run eager whatever --attention says (activations.py eager_only;
    # measured with the tracer: gemma-2-2b, 2 x 4,096-token prompts, was 26 % under when counted as SDPA)
    eager = t.attention == "eager" or eager_only(model)
    repeated = 2 * batch * heads * kv_len * d * c if gqa and (masked or eager) else 0
    if eager:
        # matmul(q, kᵀ)·scaling in the compute dtype, softmax(dtype=fp32): an fp32 copy of the scores and the
        # fp32 result (aten SoftMax.cpp converts first unless the input is CUDA fp16); eager's additive mask is a
        # float (batch, 1, q, kv) tensor in the compute dtype (masking_utils.eager_mask).
        scores = batch * heads * q_len * kv_len * (c + 4 + 4)
        mask = batch * q_len * kv_len * c if masked or q_len > 1 else 0
        return base + repeated + scores + mask
    # sdpa: flash (no mask) or memory-efficient (with one) keep only out + logsumexp; the mask is a bool
    # (batch, 1, q, kv) tensor (masking_utils.sdpa_mask) when the cache is longer than the queries.
    mask = batch * q_len * kv_len if masked else 0
    return base + repeated + mask + batch * q_len * heads * d * c  # + sdpa's output


def _largest_linear(model: ModelSpec, tp: int) -> tuple[int, int]:
    """(in_features, out_features) of the largest quantized block Linear on one GPU."""
    lin = max(block_linears(model), key=lambda x: x.in_features * x.out_features)
    return lin.in_features, ceil_div(lin.out_features, tp)


def quantized_workspace(model: ModelSpec, t: TrainingSpec, rows: int) -> tuple[int, int]:
    """(extra bytes while a block Linear runs over `rows` tokens, persistent dequantization buffer bytes).

    The extra is on top of the MLP's own tensors, counted as the gated MLP's `up_proj` call: gate's output is
    alive while the layer dequantizes (or int8-quantizes the input for) the next matmul, instead of act·up.
    * nf4: bitsandbytes autograd/_functions.py `matmul_4bit`: a single row (A.numel() == A.shape[-1]) runs
      `gemv_4bit` on the packed weight; more rows run MatMul4Bit: `dequantize_4bit(B)` to an out × in tensor in
      the compute dtype (with double quantization its absmax is dequantized to fp32 first).
    * int8: bitsandbytes MatMul8bitLt: `int8_vectorwise_quant(A)` (int8 rows × in + fp32 row scales) and
      `int8_linear_matmul` (int32 rows × out) before the compute-dtype output.
    * awq-int4: AutoAWQ gemm.py WQLinear_GEMM: with rows >= 1024 (FP16_MATMUL_HEURISTIC_CONDITION)
      `dequantize_weights_cuda` to an fp16 in × out tensor, then torch.matmul; fewer rows use the fused kernel.
    * gptq-int4: transformers' default GPTQ kernel, exllama v1 (AutoGPTQ modeling/_utils.py autogptq_post_init):
      a persistent fp16 `temp_dq` of the largest layer's in × out (max qweight.numel() × 8), where the weight is
      rebuilt for cuBLAS in the prefill; without act-order `temp_state` is one row.
    """
    fmt = weight_dtype(t)
    if fmt not in QUANTIZED or not model.has_architecture:
        return 0, 0
    c = dtype_bytes(recipe_of(t).compute)
    in_f, out_f = _largest_linear(model, t.tp)
    numel = in_f * out_f
    if fmt == "gptq-int4":
        return 0, 2 * numel
    if fmt == "nf4":
        return (numel * c + (4 * ceil_div(numel, 64) if t.double_quant else 0)) if rows > 1 else 0, 0
    if fmt == "int8":
        widest = max(x.in_features + 4 * ceil_div(x.out_features, t.tp) for x in block_linears(model))
        return rows * (widest + 4), 0
    if fmt == "awq-int4":
        return (2 * numel if rows >= 1024 else 0), 0
    return 0, 0  # fp8: the input is quantized per tensor (rows × in bytes), inside the MLP's own tensors


_DEQUANT_NOTES = {
    "nf4": "nf4 (bitsandbytes): each matmul over more than one token dequantizes its weight to a 16-bit "
           "temporary (the largest is counted); one token runs gemv on the packed weight.",
    "int8": "int8 (bitsandbytes LLM.int8): each matmul quantizes its input to int8 and accumulates in int32; "
            "outlier columns (threshold 6.0) are not counted (a few columns).",
    "gptq-int4": "gptq-int4: exllama v1's persistent fp16 dequantization buffer (the largest layer) is counted; "
                 "exllama v2 / Marlin / Triton kernels keep other scratch (not modeled).",
    "awq-int4": "awq-int4 (AutoAWQ GEMM): 1,024 or more tokens dequantize the weight to fp16 for the matmul "
                "(the largest is counted); fewer run the fused kernel.",
    "fp8": "fp8: per-tensor scaled weights (vLLM Fp8LinearMethod); the input's fp8 copy is not counted.",
}


def generate_terms(model: ModelSpec, t: TrainingSpec) -> GenerateTerms:
    """generate()'s prefill over the prompt and its `new_tokens - 1` decode steps (transformers 5.24).

    The context C = t.seq_len is what the cache holds after the last decode step: prompt P = C - N + 1.
    Sources: generation/utils.py `_sample` (logits_to_keep=1, `outputs.logits[:, -1].to(copy=True,
    dtype=torch.float32)`, `max_cache_length = max_length - 1` for StaticCache), cache_utils.py (DynamicLayer
    `torch.cat` per layer; StaticLayer zeros of max_cache_len, filled by index_copy_), masking_utils.py (no mask
    for a causal query over an equally long or single-token query; a mask otherwise).
    """
    assert model.vocab_size is not None
    c = dtype_bytes(recipe_of(t).compute)
    b, context, n_new = t.batch_size, t.seq_len, t.new_tokens
    prompt = context - n_new + 1
    static = t.cache_impl == "static"
    kv_end, per_token = kv_cache_bytes(model, t, b, context)
    kv_prompt, _ = kv_cache_bytes(model, t, b, prompt)
    kv_prefill = kv_end if static else kv_prompt
    kv_before, _ = kv_cache_bytes(model, t, b, context - 1)
    layers = ceil_div(model.num_layers or 1, t.pp)
    if n_new == 1:
        kv_transient = 0
    elif t.cache_impl == "legacy":
        # transformers' tuple cache (before DynamicCache): each layer returns cat(past, new), while generate still
        # holds the previous tuple until the forward returns: the whole old cache is alive at the end of a step.
        kv_transient = kv_before
    elif t.cache_impl == "dynamic":
        kv_transient = ceil_div(kv_before, 2 * layers)  # `self.keys = torch.cat([self.keys, k])`: one layer's K
    else:
        kv_transient = 0  # StaticLayer.update: index_copy_ in place
    kv_len_prefill = context if static else prompt
    prefill_attn = _attention_bytes(model, t, b, prompt, kv_len_prefill, masked=static)
    decode_attn = _attention_bytes(model, t, b, 1, context, masked=static) if n_new > 1 else 0
    v = ceil_div(model.vocab_size, t.tp)
    # lm_head over the kept positions in the compute dtype + generate's fp32 copy of the last position. --logits
    # all is transformers before 4.45: CausalLM forwards ran lm_head over every position and upcast it
    # (`logits = logits.float()`; removed with `num_logits_to_keep` in huggingface/transformers PR #31292,
    # Llama/Mistral first, issue #30860), generate then copied the last position.
    prefill_logits = b * v * (c + 4) if t.logits == "last" else b * prompt * v * (c + 4) + b * v * 4
    per_token_ws = workspace_per_token(model, t)
    prefill_ws, decode_ws = b * prompt * per_token_ws, b * per_token_ws
    pre_q, buffer = quantized_workspace(model, t, b * prompt)
    dec_q, _ = quantized_workspace(model, t, b)
    if pre_q or dec_q:
        # the matmul's transient replaces act(gate)·up (one intermediate-sized tensor) at the MLP's peak moment
        i = (model.moe_intermediate_size if model.num_experts else None) or model.intermediate_size or 0
        i_shard = ceil_div(i, t.tp)
        prefill_ws = max(prefill_ws, prefill_ws - b * prompt * i_shard * c + pre_q)
        decode_ws = max(decode_ws, decode_ws - b * i_shard * c + dec_q)
    return GenerateTerms(
        prompt_tokens=prompt, kv_prefill=kv_prefill, kv_decode=kv_end, kv_transient=kv_transient,
        prefill_workspace=prefill_ws, prefill_attention=prefill_attn,
        decode_workspace=decode_ws if n_new > 1 else 0, decode_attention=decode_attn,
        prefill_logits=prefill_logits, decode_logits=b * v * (c + 4) if n_new > 1 else 0, dequant_buffer=buffer)


def term_details(g: GenerateTerms | None) -> dict[str, int]:
    """generate()'s named terms as Breakdown.details keys (component.term)."""
    if g is None:
        return {}
    return {"kv_cache.prefill": g.kv_prefill,
            "kv_cache.decode": g.kv_decode, "kv_cache.decode_transient": g.kv_transient,
            "activations.prefill_layer": g.prefill_workspace, "activations.prefill_attention": g.prefill_attention,
            "activations.decode_layer": g.decode_workspace, "activations.decode_attention": g.decode_attention,
            "temporaries.prefill_logits": g.prefill_logits, "temporaries.decode_logits": g.decode_logits,
            "temporaries.dequant_buffer": g.dequant_buffer}


def estimate_inference(model: ModelSpec, t: TrainingSpec) -> InferenceBytes:
    """Per-GPU memory of generate() for `t.batch_size` sequences with a `t.seq_len`-token context."""
    notes: list[str] = []
    w, constants, on_gpu = weights(model, t)
    if not model.has_architecture:
        notes.append("KV cache and workspace not modeled: this preset gives only a parameter count.")
        phases = {"prefill": w, "decode": w}
        return InferenceBytes(on_gpu, w, 0, 0, 0, 0, 0, phases, tuple(notes))
    g = generate_terms(model, t)
    _, kv_token = kv_cache_bytes(model, t, 1, 1)
    # The prefill's largest moment: inside the last layer (workspace or attention) or at the lm_head; the
    # decode step's: the same with one query token, over the full cache.
    prefill_rest = max(g.prefill_workspace, g.prefill_attention, g.prefill_logits)
    decode_rest = max(g.decode_workspace, g.decode_attention, g.decode_logits) + g.kv_transient
    phases = {"prefill": w + g.dequant_buffer + g.kv_prefill + prefill_rest}
    if t.new_tokens > 1:
        phases["decode"] = w + g.dequant_buffer + g.kv_decode + decode_rest
    else:
        phases["decode"] = w + g.dequant_buffer + g.kv_prefill + g.prefill_logits
    kv = max(g.kv_prefill, g.kv_decode if t.new_tokens > 1 else 0)
    activations = max(g.prefill_workspace, g.prefill_attention, g.decode_workspace, g.decode_attention)
    temporaries = max(g.prefill_logits, g.decode_logits) + g.kv_transient + g.dequant_buffer
    notes.append(f"generate(): prefill of {g.prompt_tokens:,} prompt tokens, then {t.new_tokens - 1:,} decode "
                 f"step(s) to a {t.seq_len:,}-token context; {t.cache_impl} cache; prefill logits of "
                 f"{'the last position' if t.logits == 'last' else 'every prompt position (older transformers)'}.")
    if t.cache_impl == "legacy" and t.new_tokens > 1:
        notes.append("legacy tuple cache: each decode step builds the cache anew by torch.cat while the old one is "
                     "still held, so two caches are alive at its end.")
    if model.sliding_window and sliding_layers(model):
        notes.append(f"sliding window: {sliding_layers(model)} of {model.num_layers} layers cache at most "
                     f"{model.sliding_window:,} tokens.")
    if weight_dtype(t) in QUANTIZED:
        notes.append(f"{weight_dtype(t)}: block Linear layers quantized; embeddings, norms and lm_head stay "
                     f"in {recipe_of(t).compute}.")
        notes.append(_DEQUANT_NOTES[weight_dtype(t)])
    return InferenceBytes(on_gpu, w, constants, kv, kv_token, activations, temporaries, phases, tuple(notes), g)
