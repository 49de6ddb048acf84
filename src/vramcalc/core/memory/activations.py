"""Activation memory: the tensors autograd saves for backward, per layer and per token.

Each term names the op that saves it. Sources: the transformers modeling files (modeling_llama.py
and siblings: LlamaRMSNorm, apply_rotary_pos_emb, sdpa_attention_forward, LlamaMLP), PyTorch's
autograd formulas (tools/autograd/derivatives.yaml: a Linear saves its input only when its weight
needs a gradient; SiLU/GELU save their input; mul saves both operands), the flash / memory-efficient
SDPA kernels (output + fp32 logsumexp), and Korthikanti et al. 2022 (arXiv:2205.05198) §4 for the
overall structure. Bytes are per token (multiply by batch × sequence) unless the name says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core import peft_methods
from vramcalc.core import unfrozen as _unfrozen
from vramcalc.core.memory import hqq as _hqq
from vramcalc.core.memory import qlora_fp32 as _qlora_fp32
from vramcalc.core.memory import ring_attention
from vramcalc.core.memory import upcast as _upcast
from vramcalc.core.memory import upcast_norms as _norms
from vramcalc.core.memory.deberta import attention_terms as deberta_attention_terms
from vramcalc.core.memory.deberta import forward_scores as deberta_forward_scores
from vramcalc.core.memory.deberta import is_deberta
from vramcalc.core.memory.int8 import int8_linear_bytes
from vramcalc.core.memory.precision import Recipe
from vramcalc.core.params import (
    Linear,
    expert_width,
    fused_experts,
    head_dim,
    kv_heads,
    linear_has_bias,
    resolve_targets,
)
from vramcalc.core.units import ceil_div, dtype_bytes
from vramcalc.core.vocab import ENCODER_FAMILIES

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# Activation functions whose backward needs only their input (one saved tensor): ATen kernels.
# gelu_new / gelu_fast are written as Python formulas in transformers activations.py, so autograd
# saves the intermediates: x, tanh(...), 0.5·x and 1 + tanh(...) (four tensors of the MLP width).
ACT_SAVED_TENSORS: dict[str, int] = {"gelu_new": 4, "gelu_fast": 4, "quick_gelu": 3}


def eager_only(m: ModelSpec) -> bool:
    """Whether transformers 5.24 has no SDPA path for the model, so it runs eager attention: BLOOM's ALiBi
    (modeling_bloom.py builds the scores with baddbmm) and Gemma 2 (modeling_gemma2.py `_supports_sdpa =
    False`: SDPA cannot softcap the logits), gpt-oss (modeling_gpt_oss.py `_supports_sdpa = False`: the attention
    sinks are a column concatenated to the scores; from_pretrained without attn_implementation falls back to eager,
    as modeling_utils.py get_correct_attn_implementation does), DeBERTa-v2/v3 (modeling_deberta_v2.py
    DisentangledSelfAttention: its own bmm / softmax, no attention interface)."""
    return m.alibi or m.family in ("gemma2", "deberta-v2") or m.attention_sinks


@dataclass(frozen=True, slots=True)
class Term:
    """One saved tensor (or group): bytes per token, and bytes per token per key position (eager scores)."""

    name: str
    per_token: int
    per_token_seq: int = 0
    per_sample: int = 0  # bytes per sequence of the batch (prefix tuning's virtual keys and values)
    const: int = 0  # bytes whatever the batch (a PEFT method's materialized delta weights)
    batch1_only: bool = False  # saved only at batch size 1 (see the fused-qkv term)
    per_seq_sq: int = 0  # bytes per row length squared, whatever the batch (DeBERTa's int64 gather indices)
    # Per-token bytes of each autograd node whose saved tensors this group holds, in forward order, where the group
    # spans several nodes (activation offloading brings them back node by node: memory/savers.py offload_node_bytes);
    # empty: one node, per_token
    nodes: tuple[int, ...] = ()


INT8_CTX = " (kept by bitsandbytes 8-bit)"  # the name's tail of a Linear8bitLt's input kept as a ctx attribute


@dataclass(frozen=True, slots=True)
class LayerActivations:
    """Per-layer saved terms and transient peaks, in bytes per token."""

    terms: tuple[Term, ...]
    forward_transient: Term  # peak of temporaries while the layer runs forward (not saved)
    backward_transient: Term  # peak of gradient temporaries while its backward runs
    # Bytes per token of the MLP block's saved terms: autograd frees them when the MLP's backward is done, before
    # the attention's backward (and its eager per-key transient) runs.
    mlp_saved_per_token: int = 0
    # Bytes per token of the MLP's saved terms that come after its up-projection's inputs (the activation's, the
    # down projection's): what a checkpointed layer's recomputed forward has not saved yet when the
    # up-projection's forward temporaries (peft's adapter path) are in flight.
    mlp_tail_per_token: int = 0
    # Bytes per token of the forward temporaries from the MLP's up-projection on (its adapters' path, the activation)
    mlp_forward_per_token: int = 0
    # Bytes per token of the saved terms from o_proj's output on: not yet saved while a layer's attention runs
    # forward (DeBERTa's unsaved score tensors peak there; memory/deberta.py forward_scores)
    after_attention_per_token: int = 0
    # The MLP block's saved bytes whatever the batch (peft's merged expert stacks): freed with its per-token set
    mlp_saved_const: int = 0
    # The backward temporaries whatever the batch that the attention's backward still holds (its adapters' delta
    # weights); the MLP's (a MoE block's) are gone by then
    attn_backward_const: int = 0
    # ... of which a trained layer's weight gradients written by then, beyond its freed autocast copies (Falcon's math
    # SDPA under autocast): a frozen layer's backward (freeze) writes none
    attn_backward_grads_const: int = 0
    # How many of `terms` (from the first) are the attention block's, its norm included: the rest are the MLP
    # block's and after (memory/hybrid.py takes a Bamba mixer layer's MLP block from here)
    attention_terms: int = 0
    # DeepSeek's MoE backward before the expert projections' (routed_backward_bytes), per token: a moment of its own,
    # without the merged expert stacks' gradients (backward_transient.const), which come later
    routed_backward_per_token: int = 0
    # backward_transient.per_token without the RMSNorm's fp32 backward (offloaded without checkpointing that node has
    # its own moment, memory/savers.py offload_node_bytes): the MLP's and adapters' gradients
    backward_no_norm_per_token: int = 0
    # A checkpointed layer's eager attention: bytes per token alive beside its unsaved scores (forward_transient's
    # per_token_seq), which nothing saves in its first forward (q, k, v, the normed input); 0 where not modelled
    attention_forward_per_token: int = 0
    # A checkpointed layer's rerun: its eager scores' bytes per token x key beyond the saved set, at the softmax
    # (BLOOM: _alibi_forward_scores; 0 where the saved set covers the moment)
    rerun_scores_per_token_seq: int = 0
    rerun_scores_per_token: int = 0  # ... and per token, beyond the saved set up to the attention
    # ... and beside its MLP's forward temporaries, per token x key: the attention weights the layer still references
    mlp_forward_per_token_seq: int = 0
    # forward_transient.per_token of a checkpointed layer's first forward, which saves nothing: beside the MLP's
    # temporaries the post-attention residual and the MLP's normed input are alive unsaved (0: forward_transient's)
    checkpointed_forward_per_token: int = 0
    # A checkpointed layer's backward with an adapter-dtype LoRA on a gated MLP's down_proj: the layer's peak node
    # beside its whole recomputed set, per token and whatever the batch (0: backward_transient's; layer_activations)
    checkpointed_backward_per_token: int = 0
    checkpointed_backward_const: int = 0
    # A trained gated MLP's down_proj input (its "down_proj input" term), per token: saved for down_proj's weight
    # gradient only, so autograd frees it when down_proj's backward has run, before the product's node
    # (backward_transient's gradients) runs; 0 where backward_transient is not that node
    mlp_node_freed_per_token: int = 0
    # A frozen gelu_new MLP under autocast: that node's temporaries per token where they are not backward_transient's
    # (its last mul, after fc_out's backward); 0: backward_transient's
    mlp_node_backward_per_token: int = 0
    mlp_node_grads: int = 0  # ... and the gradients written by then (fc_out's adapters')
    # ... checkpointed: the rerun's end before it, per token beyond the whole recomputed set and its casts (0: none)
    rerun_end_per_token: int = 0
    # 8-bit QLoRA: bytes per token of the Linear inputs bitsandbytes' MatMul8bitLt keeps as ctx attributes (INT8_CTX
    # terms where nothing else saves them), which non-reentrant checkpointing's saved-tensor hooks never see: a
    # checkpointed layer keeps them all
    int8_ctx_per_token: int = 0
    # Without checkpointing, the top layer's saved bytes per token not made yet while forward_transient is in flight,
    # where that transient is an up-projection adapter's path (down_proj's input and what the MLP saves after it):
    # the forward.layer moment holds every layer's saved set but these (0 where the transient is another's)
    forward_unmade_per_token: int = 0
    # DoRA under the Trainer's autocast over 16-bit weights (memory/upcast_norms.py autocast16): bytes per token alive
    # beside the largest DoRA module's weight-norm temporaries (dora_forward_transient), its forward path so far (0:
    # the weight norm's moment counted alone, as without autocast)
    dora_norm_per_token: int = 0
    # ... of which that module's saved terms not made yet (its lora_A input cast and lora_B output; its base output is
    # both saved and in flight): the forward.layer moment without checkpointing counts them in the saved set
    dora_norm_unmade_per_token: int = 0

    def components(self) -> tuple[int, int, int, int]:
        """(per token, per token x seq, per sample, whatever the batch) of the saved set (the plan's split)."""
        x = self.terms
        return (sum(a.per_token for a in x if not a.batch1_only), sum(a.per_token_seq for a in x),
                sum(a.per_sample for a in x), sum(a.const for a in x))

    def saved(self, tokens: int, seq: int) -> int:
        batch = tokens // seq if seq else 0
        return sum(t.per_token * tokens + t.per_token_seq * tokens * seq + t.per_sample * batch + t.const
                   + t.per_seq_sq * seq * seq for t in self.terms)


def batch_rows(t: TrainingSpec) -> tuple[int, int]:
    """(rows, row length) of a micro-batch: the shape attention sees.

    `none` and `packed`: batch_size rows of seq_len (padded to the longest, or filled with several
    sequences). `padding-free`: transformers DataCollatorWithFlattening (data/data_collator.py) and TRL's
    padding_free concatenate the micro-batch into one row of batch_size × seq_len tokens at most, with
    position_ids restarting per sequence. The token count is the same; the per-key terms (eager scores,
    masks) grow with the row.
    """
    if t.packing == "padding-free":
        return 1, t.batch_size * t.seq_len
    return t.batch_size, t.seq_len


def masked_sdpa(t: TrainingSpec) -> bool:
    """sdpa on packed rows: transformers materialises a block-diagonal 4-D mask.

    masking_utils.create_causal_mask: position_ids without an attention_mask go through
    find_packed_sequence_indices; a packed row turns off the is_causal skip and builds a 4-D bool mask
    (batch, 1, row, row). flash_attention_2 takes cu_seqlens instead (no mask); eager always has one.
    ORPO/CPO/SimPO (memory/preference.py) pass the padded pairs' attention_mask (orpo_trainer.py,
    cpo_trainer.py concatenated_forward): with any padded row create_causal_mask builds the same 4-D mask,
    and chosen and rejected of one pair rarely have the same length. Online DPO (memory/online_dpo.py) passes
    the left-padded prompts' mask with the completions' (online_dpo_trainer.py _forward).
    """
    return t.attention == "sdpa" and (t.packing != "none"
                                      or t.objective in ("orpo", "cpo", "simpo", "online-dpo", "ppo"))


def local_mask(m: ModelSpec, t: TrainingSpec) -> bool:
    """Whether ModernBERT's sliding layers get a 4-D mask. masking_utils._ignore_bidirectional_mask_sdpa skips it
    only while kv_length < the half window (config.sliding_window = local_attention // 2, 64 published); the
    estimate's plan does not depend on the sequence length, so the mask is counted at any length (shorter than
    64 tokens that over-counts at most 2 B x 64 x 64 per sliding layer and sequence)."""
    return m.family == "modernbert" and bool(m.sliding_window_layers)


def chunked_mask(m: ModelSpec, t: TrainingSpec) -> bool:
    """Whether Llama 4's chunked-attention (RoPE) layers get a 4-D mask under sdpa: masking_utils
    create_chunked_causal_mask passes local_size=attention_chunk_size, and _ignore_causal_mask_sdpa keeps the mask
    once the key length reaches it (below, is_causal does). The mask then makes transformers repeat k and v
    (sdpa_attention.py use_gqa_in_sdpa) and CUDA run the memory-efficient kernel, as a packed row does."""
    return bool(m.attention_chunk_size) and batch_rows(t)[1] >= m.attention_chunk_size


def packed_mask_term(c: int) -> Term:
    """Each layer's 16-bit copy of the packed mask, saved by the memory-efficient kernel.

    torch sdpa (aten/src/ATen/native/transformers/attention.cpp convert_boolean_attn_mask) turns the bool
    mask into an additive one of the query's dtype on every call; the memory-efficient kernel (the only
    CUDA one taking a mask) saves it for backward (derivatives.yaml _scaled_dot_product_efficient_attention:
    attn_bias). Per row position per key: c bytes (the row padded to a multiple of 16 is not counted).
    """
    return Term("sdpa packed-sequence mask (16-bit, saved by the efficient kernel)", 0, c)


def fp32_math_sdpa(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> bool:
    """sdpa on fp32 q, k, v (--precision fp32, no autocast) with grouped kv heads and no mask: transformers passes
    enable_gqa=True (integrations/sdpa_attention.py use_gqa_in_sdpa), flash takes 16-bit inputs only and the
    memory-efficient kernel no GQA (sdp_utils.cpp check_batch_size_and_num_heads_dense<false>), so CUDA runs the math
    path (attention.cpp _scaled_dot_product_attention_math)."""
    assert m.num_attention_heads is not None
    return (t.attention == "sdpa" and not eager_only(m) and recipe.compute == "fp32" and not recipe.autocast
            and not _norms.autocast16(t, recipe) and not masked_sdpa(t) and m.attention_kind != "mla"
            and kv_heads(m) != m.num_attention_heads)


def saves_residual(m: ModelSpec, recipe: Recipe) -> bool:
    """Whether a pre-norm's saved input is the fp32 residual tensor itself (fp32 weights, or autocast over them:
    layer_activations' norm_saves_residual)."""
    return (recipe.autocast or recipe.compute == "fp32") and m.family not in ENCODER_FAMILIES


def layernorm_saves_input(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> bool:
    """Whether a decoder's first pre-norm is an nn.LayerNorm run in 16 bits, whose saved input is the residual tensor
    itself: native_layer_norm saves `input` as given (torch 2.x derivatives.yaml native_layer_norm: input, mean,
    rstd), with no fp32 copy (LlamaRMSNorm's `hidden_states.to(torch.float32)`, OLMo 1's weightless OlmoLayerNorm's,
    autocast's fp32 layer_norm under --upcast-norms / --precision autocast-*). A checkpointed layer's rerun then saves
    the kept input itself (measured with the tracer's live tensors, --grid lnkept: gpt2 cut to 4 layers and a
    2,048-token vocabulary, LoRA all-linear bf16 b2 s1024 with checkpointing, at the top layer's rerun the kept
    (2, 1024, 768) add output is the only hidden-wide storage its ln_1 reads, as at starcoderbase-1b's full run the
    embedding dropout's output at the bottom layer's; phi-2 LoRA +1.27 % -> +0.45 %, GPT-J +1.98 % -> +1.33 %)."""
    return (m.norm == "layernorm" and m.norms_per_layer > 0 and not m.post_norms and recipe.compute != "fp32"
            and not recipe.autocast and not _norms.autocast16(t, recipe) and m.family not in ENCODER_FAMILIES)


def _alibi_forward_scores(c: int, amp: bool, compute: str, checkpointed: bool) -> int:
    """BLOOM's eager attention forward (transformers 5.24 modeling_bloom.py BloomAttention.forward), bytes per head
    per key beyond the layer's saved scores (softmax output and probabilities: the "eager scores" term): `alibi.
    baddbmm(q, k)` (c bytes; `attention_scores` still references it), `attn_weights + attention_mask` (fp32 under
    amp: the mask is the fp32 model's dtype), `F.softmax(..., dtype=torch.float32)` (a bf16 input is first copied to
    fp32: aten softmax fuses the upcast for fp16 only) and `.to(query dtype)`, the probabilities. BloomModel.forward
    keeps `outputs = block(...)` until the next block returns, and every block returns its probabilities: a
    checkpointed layer's forward, which saves nothing, has the previous layer's beside its own scores (measured with
    the tracer's live tensors, bloom-560m cut to 4 layers and a 2,048-token vocabulary, LoRA all-linear b2 s1024 with
    checkpointing: five (2, 16, 1024, 1024) tensors, 2 + 2 + 2 + 4 + 4 bytes, at layer 3's _softmax in bf16, -10.4 %
    with Llama's 4 + c + 4 - c; under amp-bf16 the fp32 masked scores instead of the copy, -7.7 %)."""
    masked = 4 if amp else c
    copy = 4 if compute == "bf16" and not amp and c == 2 else 0
    probs = c if c < 4 else 0  # `.to(query_layer.dtype)` a no-op in fp32
    at_softmax = c + masked + copy + 4
    at_cast = c + masked + 4 + probs
    saved = 4 + probs  # the "eager scores" term: the fp32 softmax output and the 16-bit probabilities
    previous = (probs or 4) if checkpointed else 0
    return max(at_softmax, at_cast) - saved + previous


def fp32_eager_scores(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> bool:
    """Llama-style eager attention (softmax upcast to fp32) on fp32 weights: --precision fp32 or amp-* (the fp32
    weights under autocast); layer_activations counts its backward's fp32 score gradients and the gradients (or
    freed autocast copies) of the MLP and o_proj weights beside them."""
    return ((t.attention == "eager" or eager_only(m)) and (recipe.compute == "fp32" or recipe.autocast)
            and not _norms.autocast16(t, recipe) and m.attention_kind != "mla" and not m.attention_sinks
            and not is_deberta(m) and m.family not in ("gpt2", "gptj", "gemma2", "falcon", "gpt_oss", "llama4",
                                                       *ENCODER_FAMILIES))


def fp32_math_sdpa_notes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> tuple[str, ...]:
    """What the fp32 math path assumes (shown in every format)."""
    if m.family == "falcon" or m.num_attention_heads is None or not fp32_math_sdpa(m, t, recipe):
        return ()
    return ("sdpa on fp32 with grouped kv heads: no flash (16-bit only) and no memory-efficient kernel (no GQA), so "
            "CUDA runs the math path: each layer saves fp32 scores (heads × seq_len² per row) and its backward holds "
            "two more; counted for rows without padding (no mask). A padded batch passes a 4-D mask, transformers "
            "repeats k and v and the memory-efficient kernel runs: less. bf16 / amp-bf16 use flash.",)


def packing_notes(t: TrainingSpec) -> tuple[str, ...]:
    """What a packed or padding-free batch assumes (notes shown in every format)."""
    if t.packing == "none":
        return ()
    rows, row = batch_rows(t)
    if t.packing == "packed":
        layout = (f"packed rows: {t.batch_size} rows of {t.seq_len:,} tokens, each filled with several sequences "
                  "(position_ids restart per sequence)")
    else:
        layout = (f"padding-free: the micro-batch is one row of at most {t.batch_size} × {t.seq_len:,} = {row:,} "
                  "tokens (DataCollatorWithFlattening, position_ids restart per sequence)")
    out = [f"{layout}. With lengths that vary, the peak is set by the micro-batch with the most tokens; "
           "--batch-size × --seq-len is counted as that bound."]
    if t.attention == "flash":
        out.append("flash attention on packed sequences: varlen kernels with cu_seqlens from position_ids, no mask.")
    elif t.attention == "sdpa":
        out.append(f"sdpa on packed sequences: transformers builds a {rows} × {row:,} × {row:,} block-diagonal mask "
                   "(masking_utils.find_packed_sequence_indices), so CUDA runs the memory-efficient kernel, every "
                   "layer saves a 16-bit copy of the mask and GQA keys/values are repeated; --attention flash "
                   "(flash_attention_2) needs none.")
    else:
        out.append(f"eager attention on packed sequences: the {rows} × {row:,} × {row:,} mask and scores per row.")
    return tuple(out)


def _norm_weight_trained(m: ModelSpec, t: TrainingSpec, which: str, default: bool) -> bool:
    """Whether a norm's weight needs a gradient: `default` (the layer's or the head's weights) outside
    core/peft_methods.py's table, the table's own rule (LN tuning's targets) inside it."""
    if t.method in peft_methods.TABLE:
        return peft_methods.norm_trained(m, t, which)  # type: ignore[arg-type]
    if which == "final" and _unfrozen.active(t):  # --train-modules names the final norm (core/unfrozen.py)
        return "norm" in _unfrozen.outer_modules(m, t)
    return default


def _norm_terms(name: str, m: ModelSpec, c: int, residual: int, h: int, live: bool = True,
                trainable: bool = True) -> list[Term]:
    """A norm's saved tensors. `live`: its input needs a gradient; `trainable`: its weight does."""
    if m.norm == "rmsnorm":
        # LlamaRMSNorm: x.to(fp32) saved by pow/mul, rsqrt per token, only when x needs a gradient (mul's
        # backward saves an operand for the *other* operand's gradient: derivatives.yaml mul.Tensor);
        # weight * x.to(dtype) saves the normalized tensor in the compute dtype only when the weight needs
        # a gradient (Gemma multiplies by (1 + w) in fp32: 4 bytes). A frozen weight (LoRA, QLoRA) saves
        # no normalized copy: measured with the tracer (tinyllama LoRA, 2 x 2 B x hidden per layer fewer).
        normed = 4 if m.norm_fp32_weight_mul else max(c, residual)
        return ([Term(f"{name} (fp32 input + rsqrt)", 4 * h + 4)] if live else []) + (
            [Term(f"{name} (normalized)", normed * h)] if trainable else [])
    # nn.LayerNorm (native_layer_norm): saves its input, and fp32 mean and rstd per token, when its input
    # or its weight needs a gradient; under autocast layer_norm runs in fp32, so the saved input is an
    # fp32 copy.
    return [Term(f"{name} (input, mean, rstd)", residual * h + 8)] if live or trainable else []


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one transformer block. `trainable_weights`: its Linear and norm weights need
    gradients; `input_grad`: its input hidden states do (false for the bottom layer of a LoRA run without
    checkpointing: the frozen embedding's output needs no gradient, so autograd records nothing before
    the first adapter or trainable weight; derivatives.yaml: an op saves an input only for a gradient
    it owes).
    """
    assert m.hidden_size is not None and m.num_attention_heads is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    residual = 4 if recipe.autocast or recipe.compute == "fp32" else c  # residual stream dtype
    # --upcast-norms and --precision autocast-* (memory/upcast_norms.py): the Trainer's autocast over 16-bit weights
    # (with fp32 norms under the flag); the residual stream stays 16-bit, the autocast branches below apply, and the
    # norms' saved input is theirs
    up_norms = _norms.autocast16(t, recipe)
    amp = recipe.autocast or up_norms
    # An fp32 residual stream (fp32 weights, or autocast over them): a pre-norm's saved fp32 input is the residual
    # tensor itself (LlamaRMSNorm's `hidden_states.to(torch.float32)` a no-op; autocast's fp32 layer_norm casts
    # nothing), so the layer input a checkpoint keeps, the post-attention residual and the embeddings' output are
    # saved by the norms that read them, not held beside them (measured with the tracer's live tensors, qwen3-0.6b
    # cut to 4 layers and a 2,048-token vocabulary, LoRA all-linear amp-bf16 b2 s1024 with checkpointing: the
    # rerun's peak holds one (2, 1024, 1024) fp32 tensor for each, +2.9 % when each was counted twice)
    norm_saves_residual = saves_residual(m, recipe)
    norm_cast = recipe.autocast or _norms.casts_per_linear(m, t, recipe)  # an fp32 normed input, cast per Linear
    norm_elem = _norms.norm_input_bytes(m, t, recipe, residual)
    h = m.hidden_size
    d = head_dim(m)
    n_heads = m.num_attention_heads
    q_dim = n_heads * d
    kv_dim = kv_heads(m) * d
    gqa = kv_heads(m) != n_heads
    adapted = (
        {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
        if t.method in ("lora", "qlora") else set()
    )
    # The other PEFT methods' adapted Linears (core/peft_methods.py), by module name.
    method = peft_methods.method_of(t.method, t)
    rule = method.linear if method is not None else None
    peft_adapted = ({lin.module.rsplit(".", 1)[-1]: (lin, ff) for lin, ff in peft_methods.adapted_linears(m, t)}
                    if rule is not None else {})
    backward_const = 0  # the largest per-module backward temporary of those adapters
    routed_bwd = 0  # DeepSeek's routed multiply's backward (routed_backward_bytes)
    adapter_fwd_t = adapter_bwd_t = 0  # their largest per-token forward / backward temporaries (C3A's FFTs)
    terms: list[Term] = []
    tw = trainable_weights
    eager = t.attention == "eager" or eager_only(m)

    a = dtype_bytes(t.adapter_dtype)
    fresh_copy = a != c or t.lora_dropout > 0  # each adapter saves its own cast/dropped copy of its input
    # 4-bit QLoRA over an fp32 load under autocast (memory/qlora_fp32.py): Linear4bit returns fp32 for its fp32 normed
    # input, so the MLP's gate / up outputs, act(gate), their product and its gradients are fp32 (measured with the
    # tracer's live tensors, --grid qlora-fp32load: tinyllama cut to 4 layers, b2 s512, three fp32 (2, 512, 5632)
    # tensors saved per layer)
    mlp_c = 4 if _qlora_fp32.active(t, recipe) else c
    # 8-bit over an fp32 load under autocast (memory/qlora_fp32.py int8_active): MatMul8bitLt returns its input's dtype,
    # fp32 for the fp32 normed input (the MLP's intermediates as above) and for down_proj's fp32 input; o_proj's input
    # is SDPA's 16-bit output under autocast. int8_in: the bytes per element of the inputs its ctx keeps
    int8_fp32 = _qlora_fp32.int8_active(t, recipe)
    if int8_fp32:
        mlp_c = 4
    int8_base = t.method == "qlora" and t.quant_bits == 8 and t.quant_backend == "bnb"  # every block Linear a
    # bitsandbytes Linear8bitLt
    # hqq 0.2.8 core/quantize.py HQQMatmulNoCacheMul.setup_context: `ctx.save_for_backward(x, bias)`: every HQQLinear
    # saves its input whenever the input needs a gradient (memory/hqq.py)
    hqq_base = t.method == "qlora" and t.quant_backend == "hqq"
    int8_ctx = 0  # the bytes per token of their inputs MatMul8bitLt keeps (LayerActivations.int8_ctx_per_token)
    qkv_mods: tuple[str, ...] = ()
    dora_out = ({lin.module.rsplit(".", 1)[-1]: lin for lin in resolve_targets(m, t.lora_targets)}
                if t.dora and adapted else {})
    lora_out = ({lin.module.rsplit(".", 1)[-1]: lin.out_features for lin in resolve_targets(m, t.lora_targets)}
                if adapted else {})
    lora_fwd: dict[str, int] = {}  # each adapted module's forward temporaries per token
    dora_unmade: dict[str, int] = {}  # each DoRA module's own saved terms per token (dora_norm_unmade_per_token)

    def fp32_input(group: str) -> bool:
        """Under the Trainer's autocast, whether the group's input is fp32 already (peft's cast to the fp32 adapter is
        then the same tensor): an fp32 norm's output, or gelu_new's, whose pow is on autocast's fp32 list
        (_act_saved_bytes)."""
        return norm_cast and group in ("qkv_proj", "mlp input") or group == "down_proj" and m.hidden_act in (
            "gelu_new", "gelu_fast")

    def linear_input(group: str, modules: tuple[str, ...], width: int, already_saved: bool = False,
                     input_live: bool = True) -> bool:
        """Append the group's saved inputs; True when the group's output needs a gradient through its own
        weights (trainable Linear weights or an adapter). `input_live`: the group's input needs a gradient."""
        nonlocal backward_const, adapter_fwd_t, adapter_bwd_t, int8_ctx
        # A Linear saves its input only when its weight needs a gradient (derivatives.yaml: mm/addmm).
        base_saves = (tw or hqq_base and input_live) and not already_saved
        if base_saves:
            terms.append(Term(f"{group} input", c * width))
        if int8_base and input_live:
            # bitsandbytes 0.50 autograd/_functions.py MatMul8bitLt.forward: `if any(ctx.needs_input_grad[:2]):
            # ctx.tensors = (CAt, subA, A)`, A the 2-D view of the frozen Linear8bitLt's input (CAt None: the int8
            # weight needs no gradient; subA empty without outlier columns): held until its backward, under
            # checkpointing too (int8_ctx: a ctx attribute, not a saved tensor), even where another op saves it
            int8_in = 4 if int8_fp32 and group != "o_proj" else c
            int8_ctx += int8_in * width
            # (an adapter that saves this very tensor, lora_A on an undropped input in the compute dtype, counts it
            # below; otherwise only bnb's ctx holds it: an INT8_CTX term)
            as_is = rule is None and not fresh_copy and any(mod in adapted for mod in modules) and int8_in == c
            if not base_saves and not already_saved and not as_is:
                terms.append(Term(f"{group} input{INT8_CTX}", int8_in * width))
                already_saved = True
        # peft LoRA (tuners/lora/layer.py): each adapted module casts its input to the adapter dtype and
        # applies dropout (nn.Identity at p=0); lora_A saves the result, lora_B saves lora_A's output.
        fresh = a != c or t.lora_dropout > 0
        shared_counted = base_saves or already_saved
        if rule is not None:
            any_peft = False
            for mod in modules:
                if mod not in peft_adapted:
                    continue
                lin, ff = peft_adapted[mod]
                s = rule.saved(lin.in_features, lin.out_features, t.lora_rank, c, a, ff)
                extra = s.per_token
                if s.input_copy and a != c:
                    extra += a * width  # its own cast of the input
                elif (s.input_copy or s.input_as_is) and not shared_counted:
                    extra += c * width  # the input itself, which nothing else saves
                    shared_counted = True
                backward_const = max(backward_const, s.backward_const)
                adapter_fwd_t = max(adapter_fwd_t, s.forward_per_token)
                adapter_bwd_t = max(adapter_bwd_t, s.backward_per_token)
                terms.append(Term(f"{t.method} {mod}", extra, const=s.const))
                any_peft = True
            return tw or any_peft
        any_adapter = False
        for mod in modules:
            if mod not in adapted:
                continue
            any_adapter = True
            # Under autocast lora_A and lora_B are autocast matmuls: lora_A saves autocast's compute-dtype cast of
            # the adapter-dtype copy (the copy itself, and dropout's output, are then referenced by nothing), and
            # lora_B saves lora_A's output, in the compute dtype (torch autocast_mode.cpp: linear is a lower-
            # precision op; a non-leaf input's cast is not cached).
            kept = c if amp and a != c else a
            extra = kept * t.lora_rank
            if fresh:
                extra += kept * width + (width if t.lora_dropout > 0 else 0)  # copy (+ 1-byte dropout mask)
            elif not shared_counted:
                extra += c * width  # the same input tensor the frozen base layer does not save
                shared_counted = True
            terms.append(Term(f"lora {mod} input", extra))
            # peft Linear.forward: `result = result + lora_B(lora_A(x)) * scaling`: the base output (c), lora_B's
            # output and its scaled copy (the adapter dtype; c under autocast) alive at once, per output feature
            # (measured with the tracer: phi-3-mini's fused gate_up_proj, 10 B x 16,384 per token at the mul).
            lora_b = c if amp else a
            lora_fwd[mod] = (c + 2 * lora_b) * lora_out.get(mod, 0)
            if t.lora_dropout > 0 and a != c:
                # With dropout, Linear.forward's local `x = self._cast_input_dtype(x, ...)` keeps the adapter-dtype
                # cast alive until the module returns, beside dropout's output (the tensor lora_A saves): one more
                # a x in per token in the adapter path (measured with the tracer's live tensors: a 4-layer llama,
                # hidden 256, MLP 1,024, LoRA on all seven projections, p 0.05, checkpointing, b2 s512: the peak at
                # down_proj's adapter in the rerun holds its fp32 cast and its dropout output, -6.04 % without).
                lora_fwd[mod] += a * width
                if up_norms and not fp32_input(group):
                    # under the Trainer's autocast (below) dropout's own fp32 output is alive too at lora_A's cast,
                    # beside the 16-bit input (measured with the tracer, --grid autocast: tinyllama cut to 4 layers
                    # and a 2,048-token vocabulary, LoRA all-linear p 0.05 b2 s1024, the forward's peak at down_proj's
                    # lora_A mm, -4.3 % with the cast alone)
                    lora_fwd[mod] += (a + c) * width
                    if group == "down_proj":
                        lora_fwd[mod] += (4 if norm_cast else c) * h + 2 * c * h
            elif amp and a != c and not fp32_input(group):
                # --upcast-norms' autocast: Linear.forward's `x = self._cast_input_dtype(x, ...)` makes an adapter-dtype
                # copy of a 16-bit input (o_proj's, down_proj's; every input after Gemma's 16-bit norm) that lora_A
                # no longer saves (it saves its own 16-bit cast), alive until the module returns; an fp32 normed input
                # needs no copy. The 16-bit input itself is saved by nobody (the frozen base saves nothing, lora_A its
                # cast) and is alive beside it (measured with the tracer's live tensors: a 4-layer llama, hidden 256,
                # MLP 1,024, LoRA all-linear, b2 s512: the forward's peak at down_proj's adapter holds the 16-bit
                # product act(gate) * up and its fp32 copy)
                lora_fwd[mod] += (a + c) * width
                if group == "down_proj":
                    # ... beside the MLP's normed input (fp32 after a Llama norm or a LayerNorm) and the post-attention
                    # residual, both held by the decoder layer while its MLP runs, and the embeddings' output, held by
                    # LlamaModel.forward's inputs_embeds through the whole forward (the same measurement; gone by the
                    # checkpointed rerun, which takes it off below); a parallel block (GPT-NeoX) holds the layer's
                    # input too, summed with both branches' outputs at its end (measured with the tracer's live
                    # tensors, --grid autocast3: pythia-410m cut to 4 layers, LoRA all-linear b2 s1024, the forward's
                    # peak at down_proj's scaling mul holds three 16-bit (2, 1024, 1024) residual-stream tensors)
                    lora_fwd[mod] += (4 if norm_cast else c) * h + (
                        0 if norm_saves_residual else (3 if m.parallel_residual else 2) * residual * h)
            adapter_fwd_t = max(adapter_fwd_t, lora_fwd[mod])
            if mod in dora_out:
                terms.append(_dora_saved(mod, dora_out[mod], t, recipe, input_live, linear_has_bias(m, mod)))
                dora_unmade[mod] = terms[-2].per_token + terms[-1].per_token  # its "lora input" and "dora" terms
        return tw or any_adapter

    n_norms = m.norms_per_layer
    # Four norms per block and no post_norms flag: pre- and post-norms around attention and the MLP (Gemma 2/3).
    sandwich = n_norms == 4 and not m.post_norms
    math_sdpa = False
    live = input_grad  # whether the hidden states entering the next op need a gradient
    # --- attention block ---
    # OLMo (v1): OlmoLayerNorm has no weight, so the spec counts no norm parameters, but it still runs
    # F.layer_norm on an fp32 copy (modeling_olmo.py), saving it with mean and rstd when the input needs a
    # gradient: two per block and the final one.
    weightless = m.family == "olmo" and not n_norms
    if weightless and live:
        terms.append(Term("attn norm (weightless: fp32 input, mean, rstd)", 4 * h + 8))
    if n_norms and not m.post_norms:
        terms += _norm_terms("attn norm", m, c, norm_elem, h, live, _norm_weight_trained(m, t, "attn", tw))
        live = live or tw
    attn_in_live = live
    if m.attention_kind == "mla":
        terms += _mla_terms(m, t, c, linear_input)
        attn_live = True  # MLA: not split by gradient flow (DeepSeek is not traced)
    else:
        qkv_mods = ("qkv_proj",) if m.fused_qkv else ("q_proj", "k_proj", "v_proj")
        own = linear_input("qkv_proj", qkv_mods, h, input_live=live)
        if norm_cast and tw and not m.fused_qkv and m.attention_kind != "mla":
            # Under CUDA autocast the normed input is fp32, and query, key and value each cast it to 16 bits on
            # their own (autocast caches casts of leaf weights only): three saved copies, not one (measured with
            # the tracer: bert-base-uncased amp-bf16, 2 x 2 B x hidden more per layer; llama-3.2-1b full amp-bf16
            # b4 s2048, 3 x 2 B x hidden per layer with the MLP's below, the base grid's -3.42 % case).
            terms.append(Term("key, value inputs: their own 16-bit casts (autocast)", 2 * c * h))
        attn_live = live or own
        if m.qk_l2_norm and attn_live:
            # Llama 4's RoPE layers (modeling_llama4.py Llama4TextL2Norm, no weight): x.float() * rsqrt(mean(x^2)):
            # the fp32 copy of the rotated q and k and an fp32 rsqrt per head, saved by the mul and pow.
            terms.append(Term("llama4 q/k L2 norm (fp32 input, rsqrt)",
                              4 * (q_dim + kv_dim) + 4 * (n_heads + kv_heads(m))))
        if m.qk_norm:
            # Per-head norms on q and k, the same rule as any norm: the fp32 input when it needs a gradient
            # (q or k from an adapter or from a live input), the normalized copy when the weight does.
            q_live = live or tw or bool(adapted & {"q_proj", "qkv_proj"})
            k_live = live or tw or bool(adapted & {"k_proj", "qkv_proj"})
            norm_in = (q_dim if q_live else 0) + (kv_dim if k_live else 0)
            if m.norm == "layernorm":
                # Phi's q_layernorm / k_layernorm (LayerNorm(head_dim) per head, modeling_phi.py): native_layer_norm
                # saves its input and fp32 mean and rstd per head (in fp32 under autocast).
                heads_in = (n_heads if q_live else 0) + (kv_heads(m) if k_live else 0)
                both = q_live or k_live or tw
                terms.append(Term("q/k layernorm (input, mean, rstd)",
                                  residual * (q_dim + kv_dim) + 8 * (n_heads + kv_heads(m)) if tw
                                  else residual * norm_in + 8 * heads_in if both else 0))
            else:
                terms += [Term("q/k norm (fp32 input)", 4 * norm_in),
                          Term("q/k norm (normalized)",
                               (4 if m.norm_fp32_weight_mul else c) * (q_dim + kv_dim) if tw else 0)]
        # RoPE saves nothing per layer: apply_rotary_pos_emb computes q*cos + rotate_half(q)*sin, and mul's
        # backward for q needs only the other operand (derivatives.yaml mul.Tensor: self's gradient is
        # grad * other, `self` is saved only when `other` requires grad); cos/sin need no gradient, so
        # autograd saves the shared cos/sin tables (counted once per forward in memory/__init__.py).
        # Falcon always materialises the causal mask (modeling_falcon.py: allow_is_causal_skip=False), so SDPA
        # gets attn_mask; with multi-query heads CUDA then falls back to the math backend (sdp_utils.cpp: flash
        # takes no mask, memory-efficient no GQA), which upcasts and expands q, k, v to fp32 and saves the fp32
        # softmax (measured with the tracer, falcon-7b LoRA: 3 x 4 B x q_dim + 4 B per head per key).
        # fp32 GQA (fp32_math_sdpa): the same math path, its autograd saving q, k and v expanded to every head and
        # the fp32 softmax (aten _scaled_dot_product_attention_math under saved_tensors_hooks: 3 x [b*heads, s, d] and
        # [b, heads, s, s]; measured with the tracer, --grid dpo32 and tinyllama fp32 SFT, -10 % without).
        math_sdpa = not eager and gqa and (m.family == "falcon" or fp32_math_sdpa(m, t, recipe))
        if not attn_live:
            pass  # q, k and v need no gradient: attention records nothing (below the first adapter)
        elif math_sdpa and amp and m.family == "falcon":
            # ... under autocast over fp32 weights the math path's matmuls are autocast's: they save 16-bit casts of
            # the upcast q, k, v and the softmax runs on their 16-bit scores (measured with the tracer's live tensors,
            # --grid amp: falcon-7b cut, LoRA all-linear amp-bf16 b2 s1024, a (2, 71, 1024, 1024) bf16 _safe_softmax
            # output per layer; +24 % with the fp32 terms); the Trainer's autocast over 16-bit weights (--precision
            # autocast-*, `amp`) alike (--grid amp16: falcon-7b cut, LoRA all-linear autocast-bf16 b2 s1024, +43.77 %
            # with the fp32 terms, -0.62 % with these)
            terms.append(Term("sdpa math backend q, k, v (16-bit casts, expanded)", c * 3 * q_dim))
            terms.append(Term("sdpa math backend softmax (16-bit, autocast)", 0, c * n_heads))
        elif math_sdpa:
            terms.append(Term("sdpa math backend q, k, v (fp32, expanded)", 4 * 3 * q_dim))
            terms.append(Term("sdpa math backend softmax (fp32)", 0, 4 * n_heads))
        elif chunked_mask(m, t) and not eager and not masked_sdpa(t):
            # Llama 4's chunked layers with their mask (measured with the tracer, --grid llama4: each such layer
            # holds q, k, v unrepeated and the mask's 16-bit copy, c per row position per key, and nothing more)
            terms.append(Term("sdpa q, k, v, out, logsumexp", c * (2 * q_dim + 2 * kv_dim) + 4 * n_heads))
            terms.append(Term("sdpa chunked-attention mask (16-bit, saved by the efficient kernel)", 0, c))
        elif masked_sdpa(t) and not eager:
            # (an eager-only model, BLOOM's ALiBi, Gemma 2, gpt-oss, runs its eager scores under --attention sdpa too:
            # the branch below)
            # Packed sequences under sdpa (memory/activations.py packing_terms): a 4-D mask, so no flash
            # kernel and no enable_gqa; transformers repeats k and v to every head (sdpa_attention.py
            # use_gqa_in_sdpa, repeat_kv) and the memory-efficient kernel saves them with its bias.
            kv_in = q_dim if gqa else kv_dim
            terms.append(Term("sdpa q, k, v (repeated), out, logsumexp", c * (2 * q_dim + 2 * kv_in) + 4 * n_heads))
            terms.append(packed_mask_term(c))
        elif not eager and local_mask(m, t):
            # ModernBERT's sliding layers under sdpa (masking_utils.create_bidirectional_sliding_window_mask): a
            # 4-D bool mask once seq_len reaches the half window, so CUDA runs the memory-efficient kernel, which
            # saves q, k, v, out, logsumexp and the mask converted to q's dtype (attention.cpp
            # convert_boolean_attn_mask) per layer; the global layers take no mask (memory/__init__.py subtracts it).
            terms.append(Term("sdpa q, k, v, out, logsumexp", c * (2 * q_dim + 2 * kv_dim) + 4 * n_heads))
            terms.append(Term("sdpa sliding-window mask (16-bit, saved by the efficient kernel)", 0, c))
        elif not eager:
            # Flash / memory-efficient SDPA saves q, k, v, the output and an fp32 logsumexp per head
            # (aten _scaled_dot_product_flash_attention); GQA goes in unexpanded (enable_gqa, torch ≥ 2.5).
            # The output's memory is already (b, s, h, d), so o_proj's input is the same storage.
            # flash_attention_2 (varlen for packed rows: cu_seqlens from position_ids) saves the same.
            terms.append(Term("sdpa q, k, v, out, logsumexp", c * (2 * q_dim + 2 * kv_dim) + 4 * n_heads))
        else:
            # Eager attention (modeling_llama.eager_attention_forward): repeat_kv copies k and v to all
            # heads, softmax in fp32 saves its output, the 16-bit copy is saved by attn @ v; the
            # transposed output is copied (contiguous) into o_proj's input.
            kv_saved = 2 * q_dim if gqa else 2 * kv_dim
            if m.family == "gptj":
                # GPT-J's eager_attention_forward (modeling_gptj.py) multiplies q and k upcast to fp32.
                terms.append(Term("eager q, k (fp32), v", 4 * (q_dim + kv_saved // 2) + c * kv_saved // 2))
            else:
                terms.append(Term("eager q, k, v", c * (q_dim + kv_saved)))
            # Softmax's saved output: Llama-style eager upcasts (softmax(dtype=float32)); GPT-2's eager
            # (modeling_gpt2.eager_attention_forward) runs it in the scores' dtype, except under CUDA
            # autocast, where softmax is on the fp32 list. attn @ v saves the 16-bit probabilities; with
            # attention dropout (GPT-2 attn_pdrop) it saves the dropped copy plus the 1-byte mask instead.
            # Falcon's eager softmax runs in the hidden states' dtype (modeling_falcon.py, dtype=hidden_states.dtype).
            # Llama 4's eager_attention_forward (modeling_llama4.py): softmax(attn_weights, dim=-1), the scores' dtype.
            # ModernBERT's eager_attention_forward (modeling_modernbert.py) upcasts: softmax(dtype=float32).
            softmax_bytes = c if m.family in ("gpt2", "falcon", "gpt_oss", "llama4", *ENCODER_FAMILIES) \
                and m.family != "modernbert" and not amp else 4
            if m.attention_sinks:
                # gpt-oss (modeling_gpt_oss.py eager_attention_forward): the per-head sink is concatenated to the
                # scores as one more key column, then `combined - combined.max(-1, keepdim=True).values` (max saves
                # its int64 indices per row) and a softmax in the scores' own dtype (fp32 only when the mask
                # promoted them: autocast, fp32); `probs[..., :-1]` is a view, so the saved output keeps the column.
                terms.append(Term("eager attention sinks (extra softmax column, max indices)",
                                  (softmax_bytes + 8) * n_heads))
            if m.family == "gemma2":
                # Gemma 2's attn_logit_softcapping (modeling_gemma2.py eager_attention_forward: scores / cap,
                # tanh, * cap; 50.0 in every published config): tanh saves its 16-bit output per key.
                terms.append(Term("eager softcapping tanh output", 0, c * n_heads))
            # Attention dropout: GPT-2 and GPTBigCode drop the probabilities with attn_pdrop, which their
            # configs set equal to the residual dropout; Phi's and StarCoder2's attention_dropout is 0.0.
            # Encoders (modeling_bert.py eager_attention_forward): softmax in the scores' dtype, then
            # attention_probs_dropout_prob (0.1 as hidden_dropout_prob in every published config).
            if m.dropout > 0 and m.family in ("gpt2", "gpt_bigcode", "gptj", *ENCODER_FAMILIES):
                terms.append(Term("eager scores (softmax, dropout mask, dropped probs)", 0,
                                  (softmax_bytes + 1 + c) * n_heads))
            elif softmax_bytes == c:
                terms.append(Term("eager scores (softmax output = probs)", 0, c * n_heads))
            else:
                terms.append(Term("eager scores (fp32 softmax + 16-bit probs)", 0, (4 + c) * n_heads))
        rope = not m.learned_position_embeddings and not m.alibi
        if attn_live and m.fused_qkv and rope and not (gqa and eager) and not math_sdpa:
            # A fused qkv projection with RoPE (modeling_phi3.py, modeling_gpt_neox.py): q and k are rotated
            # into new tensors, but v stays a view of the fused output, so the attention's saved v keeps the
            # whole (q + 2 kv) buffer alive: its q and k parts beyond the saved set. Eager releases it when v
            # is copied: repeat_kv (GQA), or matmul's reshape of (batch, heads) into one dimension, which is
            # a view only at batch 1. Measured with the tracer: phi-3-mini, 2 B x (q + kv) per token per layer
            # (sdpa any batch, eager batch 1; none at eager batch 2).
            terms.append(Term("fused qkv buffer behind v (q, k parts)", c * (q_dim + kv_dim),
                              batch1_only=eager))
        if attn_live and is_deberta(m):  # the disentangled attention's own saved tensors (memory/deberta.py)
            terms += [Term(x.name, x.per_token, x.per_token_seq, x.per_sample, x.const, per_seq_sq=x.per_seq_sq)
                      for x in deberta_attention_terms(m, t, recipe, tw, adapted)]
        n_before_o = len(terms)
        # o_proj's input: the SDPA output (already saved, when attention was recorded) or eager's copy.
        # Ring attention (memory/context_parallel.py): its output is the fp32 merge cast to 16 bits, and the merge's
        # products follow the layout of the (batch, heads, seq) log-sum-exp, so the (batch, seq, heads, dim) output
        # is not contiguous and transformers' reshape for o_proj copies it: o_proj's input is a tensor of its own
        # (measured with the tracer: qwen3-0.6b, one layer, +c x q_dim per token retained by the attention).
        ring = getattr(t, "context_parallel", 1) > 1
        o_own = linear_input("o_proj", ("o_proj",), q_dim,
                             already_saved=not eager and not math_sdpa and attn_live and not ring, input_live=attn_live)
        attn_live = attn_live or o_own
    if t.method == "adaption-prompt":  # the gated prompt attention adds a trainable path to the attention's output
        attn_live = True
    if m.post_norms and n_norms:  # OLMo 2: post_attention_layernorm on the attention's output
        terms += _norm_terms("attn post-norm", m, c, norm_elem, h, attn_live, tw)
        attn_live = attn_live or tw
    elif sandwich:
        # Gemma 2 / 3 (modeling_gemma2.py Gemma2DecoderLayer): post_attention_layernorm normalizes the
        # attention's output before the residual add, beside the pre-norm: it saves as any RMSNorm does
        # (measured with the tracer, gemma-2-2b LoRA eager: 2 x (4 B x hidden + 4 B) per token per layer
        # were missing, -3.95 % on the 26-layer preset).
        terms += _norm_terms("attn post-norm", m, c, norm_elem, h, attn_live,
                             _norm_weight_trained(m, t, "attn", tw))
        attn_live = attn_live or _norm_weight_trained(m, t, "attn", tw)
    # (DistilBERT's block has no dropout on the attention's output: modeling_distilbert.py TransformerBlock adds
    # out_lin's output to the input before sa_layer_norm; its one hidden-wide dropout is the FFN's)
    if m.dropout > 0 and attn_live and m.family != "distilbert":
        terms.append(Term("residual dropout mask", h))  # fused CUDA dropout keeps a 1-byte mask
    # --- MLP block --- (a parallel block's MLP reads the attention's normed input, not its output)
    n_attention_terms = len(terms)
    attn_bwd_const = backward_const
    attn_grads_c = 0  # the part of it that is trained weights' gradients (LayerActivations.attn_backward_grads_const)
    n_mlp_inputs = n_attention_terms  # a MoE block: its whole MLP set comes after the router's input
    up_mods: tuple[str, ...] = ()
    n_down = -1  # index of the dense MLP's first term from down_proj's input on (-1: a MoE block)
    live = attn_in_live if m.parallel_residual else live or attn_live
    if weightless and live:
        terms.append(Term("mlp norm (weightless: fp32 input, mean, rstd)", 4 * h + 8))
    if n_norms >= 2 and not m.parallel_residual and not m.post_norms:
        terms += _norm_terms("mlp norm", m, c, norm_elem, h, live, _norm_weight_trained(m, t, "mlp", tw))
        live = live or tw
    elif n_norms >= 2 and m.parallel_residual and norm_elem != residual:
        # GPT-NeoX's parallel block (modeling_gpt_neox.py GPTNeoXLayer: post_attention_layernorm(hidden_states) beside
        # input_layernorm(hidden_states)): in 16 bits both save the one layer input; under the Trainer's autocast over
        # 16-bit weights each layer_norm saves its own fp32 cast of it (autocast_mode.cpp fp32 list; a non-leaf's
        # cast is not cached). Measured with the tracer's live tensors, --grid autocast3: pythia-410m cut to 4 layers,
        # LoRA all-linear b2 s1024, two fp32 (2, 1024, 1024) copies per layer above the bottom one; -5.72 % without.
        terms += _norm_terms("mlp norm (its own fp32 input)", m, c, norm_elem, h, live,
                             _norm_weight_trained(m, t, "mlp", tw))
    i = m.intermediate_size
    moe_fwd_t = moe_bwd_t = 0
    moe_rerun_t = -1  # a fused MoE block's forward temporaries while its checkpointed rerun saves (below)
    n_moe_rerun = 0  # ... and the end of its terms saved by the routed output's un-permute
    moe_merged_c = 0  # ... and its saved bytes whatever the batch (peft's merged expert stacks)
    if m.num_experts and m.family == "gpt_oss":
        moe = _gpt_oss_moe_terms(m, c, h, live, trainable_weights)
        terms += moe
        width = m.experts_per_token * (m.moe_intermediate_size or i)
        live = live or trainable_weights
        # Forward, inside GptOssExperts._apply_gate: beside what it saves, the gathered gate_up bias (2i, alive in
        # grouped_mm_experts_forward until the down projection), the clamped up and the gated output (1 each), and
        # the gathered hidden states (saved only for trainable experts): 4 x i + hidden per routed copy (measured
        # with the tracer: a tiny gpt_oss LoRA, the peak at `(up + 1) * glu`). Under checkpointing nothing is
        # saved, so the block's saved set is transient too; in backward its recomputation runs beside the
        # incoming gradient and one more gathered (k x tokens, hidden) tensor.
        k_ = m.experts_per_token
        # (trainable experts: their weight gradients' moment is the larger, and the gathered input is saved)
        moe_bwd_t = 4 * c * width + 2 * k_ * c * h + c * h if t.grad_checkpointing and not trainable_weights else 0
        # At that product (measured with the tracer's live tensors, --grid gptoss without checkpointing, the top
        # layer's MoE at the mul; full b2 s256 was +2.8 % and LoRA -0.5 % before): the down projection's output and
        # its routing weight (saved by `proj_out * weights`) are not made yet; trainable experts save the product and
        # the gathered input themselves (grouped_mm's inputs), so beyond the saved set only the gathered bias and the
        # clamped up remain; and the residual stream's references, which nothing saves under frozen norms: the
        # embeddings (GptOssModel.forward's inputs_embeds), the layer's input (the model loop's hidden_states), the
        # post-attention residual and the MoE's normed input (4 x hidden; the router saves the last when it trains).
        moe_fwd_t = (3 if trainable_weights else 4) * c * width + (0 if trainable_weights else k_ * c * h) \
            - k_ * c * (h + 1) + (3 if trainable_weights else 4) * c * h
        if t.grad_checkpointing:
            # Checkpointed, the block's saved set is transient too, less the sigmoid (freed once glu is made: nothing
            # saves it) and the two hidden-wide references counted as kept layer inputs (the embeddings, the input)
            moe_fwd_t += sum(x.per_token for x in moe) - c * width - 2 * c * h
    elif m.num_experts and m.family == "llama4":
        router_own = linear_input("router input", ("router",), h, input_live=live)
        shared_lora = a if adapted & {"gate_proj", "up_proj"} else 0
        moe, moe_fwd_t, moe_bwd_t = _llama4_moe_terms(m, c, live, live or router_own, trainable_weights, shared_lora,
                                                      t.grad_checkpointing)
        terms += moe
        width = m.moe_intermediate_size or i
        # the shared expert (Llama4TextMLP of intermediate_size, nn.Linear modules: adapted by name)
        s_i = m.shared_expert_intermediate_size or width
        s_in = linear_input("shared expert input", ("gate_proj", "up_proj"), h, input_live=live) or live
        terms += _mlp_terms(m, c, h, s_i, False, 1, "shared_expert.", amp) if s_in else []
        linear_input("shared expert down_proj", ("down_proj",), s_i, input_live=s_in)
        live = live or trainable_weights or router_own
        if t.grad_checkpointing:  # nothing is saved in the first forward: the block's set is its working set
            moe_fwd_t += sum(x.per_token for x in moe)
    elif m.num_experts and fused_experts(m) and m.moe_capacity_factor is None:
        eb = _expert_bytes(t, recipe)
        moe_adapted = {lin.module for lin in resolve_targets(m, t.lora_targets)
                       if lin.module.startswith("experts.") or lin.module == "router"} if adapted else set()
        moe, moe_fwd_t, moe_bwd_t, const_fwd, moe_rerun_t = _fused_moe_terms(m, t, c, eb, live, trainable_weights,
                                                                             moe_adapted)
        terms += moe
        moe_merged_c = sum(x.const for x in moe)
        if m.moe_latent_size and moe:
            # Nemotron 3 Super (modeling_nemotron_h.py NemotronHMoE.forward): fc1_latent_proj (hidden -> latent)
            # reads the normed hidden states, the tensor shared_experts' up_proj reads too (saved once: by it when
            # its weight trains or it is adapted); fc2_latent_proj (latent -> hidden) reads the experts' output
            # cast back to the compute dtype (grouped_mm_experts_forward's `.to(hidden_states.dtype)`)
            x = m.moe_latent_size
            linear_input("latent fc1_latent_proj", ("fc1_latent_proj",), h, input_live=live,
                         already_saved=tw or bool(adapted & {"up_proj"}))
            linear_input("latent fc2_latent_proj", ("fc2_latent_proj",), x, input_live=live)
        backward_const = max(backward_const, const_fwd)
        routed_bwd = routed_backward_bytes(m, t, recipe) if moe else 0
        width = m.moe_intermediate_size or i
        live = live or trainable_weights or bool(moe_adapted)
        # (the routed output's un-permute comes before the shared expert runs: DeepseekV3MoE, GraniteMoeHybrid's
        # shared_mlp in its decoder layer; Qwen2MoeSparseMoeBlock runs its shared expert first, below)
        n_moe_rerun = len(terms)
        if m.num_shared_experts:
            # The shared expert (Qwen2MoeMLP / DeepseekV3MLP): a dense gated MLP over every token, nn.Linear
            # modules (adapted by name or all-linear unless peft mapped the names to the experts: params.py).
            s_i = m.shared_expert_intermediate_size or width * m.num_shared_experts
            # (GraniteMoeHybrid's shared_mlp: input_linear, the fused gate_up_proj; chunk(2) views keep its whole
            # output, what silu and the product save: the same bytes as the separate gate and up)
            s_up = ("gate_up_proj",) if m.fused_gate_up else ("gate_proj", "up_proj")
            s_in = linear_input("shared expert input", s_up, h, input_live=live) or live
            terms += _mlp_terms(m, c, h, s_i, False, 1, "shared_expert.", amp) if s_in else []
            linear_input("shared expert down_proj", ("down_proj",), s_i, input_live=s_in)
            if m.shared_expert_gate:
                n_moe_rerun = len(terms)
                # Qwen2MoeSparseMoeBlock: sigmoid(shared_expert_gate(x)) * shared_expert_output saves the sigmoid's
                # output and the shared expert's output.
                linear_input("shared expert gate", ("shared_expert_gate",), h, input_live=live)
                terms.append(Term("shared expert gate (sigmoid output, gated output)", c * (1 + h)))
            width = max(width, s_i)
        # (Qwen2-MoE: the shared expert's output, alive beside the experts until the sigmoid gate multiplies it)
        moe_rerun_t += c * h if m.shared_expert_gate and m.num_shared_experts and moe else 0
        if t.grad_checkpointing:
            # Under checkpointing nothing is saved: the block holds, at once, the gathered hidden states, the up
            # projection's output, the activation's and the product (at the product), or the down output beside
            # its fp32 weighted copy and the un-permuted one (measured with the tracer, --grid moe with
            # checkpointing: the saved set plus the transient over-counted the forward by 8-20 %).
            # (Nemotron-H's ungated relu2 experts: the up output, relu's and square's, 3 x i)
            # (the weighted and un-permuted copies and the sum in the routing weights' dtype, _routing_weight_bytes:
            # fp32 for Mixtral and DeepSeek, 16-bit for the Qwen routers)
            k_, eb_, w_ = m.experts_per_token, _expert_bytes(t, recipe), m.moe_intermediate_size or i
            rw_ = _routing_weight_bytes(m, c, eb_)
            x_ = expert_width(m)  # (the latent width: fc1_latent_proj's output beside, latent_forward_bytes)
            moe_fwd_t = max(k_ * eb_ * (x_ + (4 if m.mlp == "gated" else 3) * w_),
                            k_ * (2 * eb_ * x_ + 2 * rw_ * x_) + rw_ * x_) + latent_forward_bytes(m, c)
    elif m.num_experts:
        i_mlp = m.moe_intermediate_size or i  # Mixtral's experts are intermediate_size wide
        k = m.experts_per_token
        # Routed MoE (modeling_mixtral.py): router softmax in fp32, each routed token's gathered input
        # and weighted output, and the expert MLP's saved tensors per routed token.
        terms.append(Term("router logits (fp32 softmax)", 4 * m.num_experts))
        routed = [Term("routed token copies", k * 2 * c * h)]
        routed += _mlp_terms(m, c, h, i_mlp, trainable_weights, k, "experts.")
        if m.moe_capacity_factor is not None:
            # Capacity-bound routing (Switch Transformer, arXiv:2101.03961 §2.1): each expert's buffer holds
            # capacity_factor x its even share of the k x tokens routed copies, padded when under-filled.
            milli = round(m.moe_capacity_factor * 1000)
            routed = [Term(x.name + " (capacity)", ceil_div(x.per_token * milli, 1000)) for x in routed]
        terms += routed
        if m.num_shared_experts:
            s_i = m.shared_expert_intermediate_size or i_mlp * m.num_shared_experts
            terms += _mlp_terms(m, c, h, s_i, trainable_weights, 1, "shared_expert.")
        width = max(i_mlp, m.shared_expert_intermediate_size or 0)
    else:
        up_mods = (("gate_up_proj",) if m.fused_gate_up else ("gate_proj", "up_proj")) if m.mlp == "gated" \
            else ("up_proj",)
        # A parallel block with one norm (GPT-J, Phi, Falcon-7B) feeds attention and MLP the same normed
        # tensor: saved once, by whichever of them saves it first (the qkv projection's input).
        shared_in = m.parallel_residual and n_norms == 1 and (tw or (
            bool(adapted & set(qkv_mods if m.attention_kind != "mla" else ())) and not fresh_copy))
        up_live = linear_input("mlp input", up_mods, h, already_saved=shared_in, input_live=live) or live
        n_mlp_inputs = len(terms)
        if norm_cast and trainable_weights and len(up_mods) == 2 and not shared_in:
            # gate_proj and up_proj each cast the fp32 normed input to 16 bits under autocast: a second saved copy
            terms.append(Term("up_proj input: its own 16-bit cast (autocast)", c * h))
        if up_live:  # the activation and the product save their inputs only for a gradient they owe
            terms += _mlp_terms(m, mlp_c, h, i, False, 1, "", amp)
        n_down = len(terms)
        live = linear_input("down_proj", ("down_proj",), i, input_live=up_live) or up_live
        width = i
        if m.post_norms and n_norms >= 2:  # OLMo 2: post_feedforward_layernorm on the MLP's output
            terms += _norm_terms("mlp post-norm", m, c, norm_elem, h, live, tw)
        elif sandwich:  # Gemma 2 / 3: post_feedforward_layernorm on the MLP's output, beside the pre-norm
            terms += _norm_terms("mlp post-norm", m, c, norm_elem, h, live, _norm_weight_trained(m, t, "mlp", tw))
    if m.dropout > 0 and live:
        terms.append(Term("mlp dropout mask", h))
    down_tail = sum(x.per_token for x in terms[n_down:] if not x.batch1_only) if n_down >= 0 else 0
    # Transients. Forward: a gated MLP holds gate, up and act(gate) at once. Backward: the gradient of
    # the MLP input product and the two gradients it splits into (derivatives of mul).
    gated = m.mlp == "gated"
    # Eager attention forward: the 16-bit scores (q @ k^T) are alive next to softmax's output while it
    # runs; they are not saved (per_token_seq of the forward transient, beyond the saved set).
    # Eager backward with the fp32 softmax (Llama-style): by the time _softmax_backward_data runs, attn @ v
    # has released the saved 16-bit probs; alive are the saved fp32 output, the fp32 upcast of the
    # incoming gradient and the result, which is fp32 too (softmax ran on the fp32 upcast: aten
    # _softmax_backward_data returns the input's dtype; the cast back to 16 bits is _to_copy's backward, after):
    # 4 + 4 + 4 against 4 + c saved, so 8 - c bytes beyond (measured with the tracer, tinyllama LoRA eager with
    # checkpointing: three fp32 (b, heads, s, s) tensors alive at _softmax_backward_data; the MLP's saved set freed).
    eager_fwd = c * n_heads if eager else 0
    if eager and t.grad_checkpointing and attn_live and recipe.compute == "bf16" and not amp \
            and not m.attention_sinks and m.family not in ("gpt2", "falcon", "gpt_oss", "llama4", *ENCODER_FAMILIES):
        # Llama-style eager `softmax(scores, dim=-1, dtype=torch.float32)` on bf16 scores: aten softmax (SoftMax.cpp)
        # fuses the upcast only for fp16 CUDA input; bf16 is first copied to fp32, so at _softmax the 16-bit scores,
        # the fp32 copy and the fp32 output are alive at once. A checkpointed layer's first forward saves nothing, so
        # this moment is not covered by the saved set (measured with the tracer's live tensors, --grid moe Mixtral
        # full eager with checkpointing b2 s512: three (b, heads, s, s) tensors at _softmax, -13.4 % without; the
        # dense decoders alike: --grid base tinyllama QLoRA eager gc b4 s2048 -16.9 %, --grid vlm LLaVA-1.5 QLoRA
        # eager gc -6.1 %, the forward phase only, never the peak there).
        eager_fwd += (4 - c) * n_heads
    # ... and beside those scores, what the attention block would have saved and still references: the normed input,
    # q, the repeated k and v (eager_attention_forward's repeat_kv copies) and, under GQA, the unrepeated rotated k
    # and v projection (the Qwen3-MoE trace: 2 B x (h + q + 2q + 2 kv) per token, -3.5 to -5.5 % without)
    attn_fwd_tok = c * (h + q_dim + (2 * q_dim + 2 * kv_dim if gqa else 2 * kv_dim)) \
        if eager_fwd > c * n_heads and m.attention_kind != "mla" else 0
    def rerun_incoming(adapted_down: bool) -> int:
        """Bytes per token of the layer output's incoming gradient alive at a checkpointed layer's rerun: the
        residual stream's, its 16-bit cast for the MLP's output path when that stream is fp32 and, past down_proj's
        adapter (`result + lora_B(lora_A(x)) * scaling`), the scaled gradient in lora_B's dtype and, when the sum was
        promoted to it, the base output's cast-back one (the dense rerun's below; BLOOM's)."""
        lora_b = c if amp else a
        return residual * h + (c * h if residual != c else 0) \
            + ((lora_b * h + (c * h if lora_b != c else 0)) if adapted_down else 0)

    rerun_scores = rerun_tok = 0
    if eager and m.alibi and attn_live and m.attention_kind != "mla":
        # BLOOM: its scores (_alibi_forward_scores), and per token the fused query_key_value output (`fused_qkv`, a
        # local of BloomAttention.forward whose q, k, v are copies) beside what the attention saves, made unsaved in
        # a checkpointed layer's first forward; its rerun in backward holds besides the layer output's incoming
        # gradient and, with an adapter on dense_4h_to_h, that gradient's 16-bit copy for the base path and its
        # scaled lora_B gradient (the adapter dtype), made before anything saved is unpacked (measured with the
        # tracer's live tensors: the trace of _alibi_forward_scores, at layer 3's _softmax the fused (2, 1024, 3072)
        # output and the three (2, 16, 1024, 64) copies; at the rerun's _softmax the 4 + 4 MB bf16 and 8 MB fp32
        # gradients beside them: -2.6 % and -5.6 % without)
        eager_fwd = _alibi_forward_scores(c, amp, recipe.compute, t.grad_checkpointing) * n_heads
        rerun_scores = _alibi_forward_scores(c, amp, recipe.compute, False) * n_heads
        fused = c * (q_dim + 2 * kv_dim)
        # Without checkpointing the top layer's forward peaks later, at dense's (o_proj's) adapter path: the scores'
        # locals (baddbmm's output, the masked scores) live until BloomAttention.forward returns (the same trace
        # without checkpointing under amp-bf16: the peak at dense's scaling mul, -1.8 % without its input and path);
        # in bf16 the softmax's fp32 copy of the scores makes that moment the larger (+2.0 % with dense's path too)
        o_proj = 0 if recipe.compute == "bf16" and not amp else \
            sum(x.per_token for x in terms[n_before_o:] if x.name.endswith("o_proj input")) + lora_fwd.get("o_proj", 0)
        attn_fwd_tok = fused + (sum(x.per_token for x in terms[:n_before_o] if not x.batch1_only)
                                if t.grad_checkpointing else o_proj)
        rerun_tok = fused + rerun_incoming("down_proj" in lora_fwd)
    # The decoder layer binds the attention's returned weights to `_` (`hidden_states, _ = self.self_attn(...)`,
    # modeling_gpt_oss.py / modeling_mixtral.py ...DecoderLayer.forward) until the MLP returns: a checkpointed layer's
    # eager probabilities (16-bit; gpt-oss's `probs[..., :-1]` a view of the sink-wide softmax output) are alive beside
    # its MoE block though nothing saves them (measured with the tracer's live tensors, --grid gptoss LoRA q,k,v,o
    # with checkpointing b1 s512: the (1, heads, s, s + 1) softmax output at the experts' gated product, -8 % without)
    # (measured for gpt-oss and DeepSeek's MLA, whose checkpointed forwards peak in the MoE block: --grid moe
    # DeepSeek-V2 LoRA all-linear eager gc, the (b, heads, s, s) bf16 weights at the un-permute, -4.1 % without;
    # Mixtral's and Llama 4's peak at the attention instead, where this would over-count them: --grid families
    # Mixtral LoRA eager +0.8 -> +1.7 %, --grid llama4 up to +12 %)
    probs_beside_mlp = (c if not amp else 4) * n_heads if eager and t.grad_checkpointing \
        and (m.attention_sinks or (m.attention_kind == "mla" and m.num_experts)) else 0
    after_attention = 0
    if is_deberta(m):  # the content, c2p and p2c scores and their copies beside the saved set (memory/deberta.py)
        eager_fwd = deberta_forward_scores(m, recipe, softmax_bytes)
        after_attention = sum(x.per_token for x in terms[n_before_o:] if x.name != "o_proj input"
                              and not x.batch1_only)
    if eager and m.attention_sinks:
        # gpt-oss: the masked scores and the sink-concatenated logits are both still referenced while the softmax
        # runs on their max-subtracted copy (eager_attention_forward rebinds only attn_weights after it).
        eager_fwd = 2 * (c if not amp else 4) * n_heads
        # That moment (`combined_logits - max`) comes before o_proj's input and the MoE block's saved set exist
        # (measured with the tracer's live tensors, --grid gptoss full b1 s512 without checkpointing: the top layer's
        # forward holds its attention's set only, +4.2 % with the whole layer's counted once both 4-D masks were)
        after_attention = sum(x.per_token for x in terms[n_before_o:] if not x.batch1_only) \
            if m.attention_kind != "mla" else 0
    if eager and m.alibi and attn_live and m.attention_kind != "mla":
        # BLOOM's scores peak before its dense (o_proj) input and the MLP's saved set exist, as gpt-oss's (the same
        # trace without checkpointing: +4.6 % with the top layer's whole saved set beside _alibi_forward_scores)
        after_attention = sum(x.per_token for x in terms[n_before_o:] if not x.batch1_only
                              and not x.name.endswith("o_proj input"))
    if eager and attn_live and not after_attention and m.attention_kind != "mla" and not t.grad_checkpointing:
        # Every other eager layer without checkpointing likewise: its scores are made before o_proj's output and the
        # MLP's saved set (o_proj's input kept, as BLOOM's), so the top layer's attention moment holds only what is
        # saved up to it (measured with the tracer's live tensors, --grid qlora-rest: GPTBigCode QLoRA all-linear
        # eager b1 s1024, the forward's peak at the top layer's MLP; +5.85 % with the whole saved set beside the fp32
        # scores)
        after_attention = sum(x.per_token for x in terms[n_before_o:] if not x.batch1_only
                              and not x.name.endswith("o_proj input"))
    # o_proj's and the MLP's weights, whose gradients exist when an fp32 attention backward runs (the branches below)
    mlp_o_weights = q_dim * h + (3 if m.mlp == "gated" else 2) * h * m.intermediate_size
    if m.attention_kind != "mla" and math_sdpa and amp:
        # falcon's math SDPA under autocast, over fp32 weights or 16-bit ones (--precision autocast-*: --grid amp16
        # LoRA b2 s1024 with checkpointing +32.52 % -> -0.82 %; fp32_math_sdpa never runs under autocast): 16-bit scores
        # (terms above); its backward holds, beside the saved softmax, bmm's gradient of the probabilities and
        # _softmax_backward_data's result (16-bit), and a trained layer's MLP and dense weight gradients are written by
        # then (measured with the tracer's live tensors, --grid amp: falcon-7b cut, full amp-bf16 b2 s1024 with
        # checkpointing, three (2, 71, 1024, 1024) bf16 tensors and 743 MB of fp32 fc_in / fc_out / dense gradients at
        # _softmax_backward_data, -2.9 % without them)
        eager_fwd, eager_bwd = c * n_heads, 2 * c * n_heads
        if tw:
            attn_grads_c = dtype_bytes(recipe.grad) * mlp_o_weights
            attn_bwd_const += attn_grads_c
    elif m.attention_kind != "mla" and math_sdpa:
        # The math path's backward (attention.cpp _scaled_dot_product_attention_math, its autograd), fp32 GQA's and
        # falcon's on 16-bit weights alike: attn @ v's gradient of the probabilities, then _softmax_backward_data's
        # gradient of the scores, two fp32 score tensors beside the saved softmax; by then the layer's MLP and o_proj
        # weight gradients exist (autograd ran their backward first). Measured with the tracer's categories at the
        # peak, --grid dpo32: tinyllama cut to 4 layers, full fp32 DPO with checkpointing b1 s1024, gradients + 155 MB
        # (one layer's MLP and o_proj, fp32) and two [2, 32, 1024, 1024] fp32 tensors at _softmax_backward_data, -4.2 %
        # with one and no gradients; --grid lnkept: falcon-7b cut, LoRA all-linear bf16 b2 s1024 with checkpointing,
        # three (2, 71, 1024, 1024) fp32 tensors at _softmax_backward_data, -15.05 % with one beyond the saved, full
        # pure-bf16 -11.05 %.
        eager_fwd, eager_bwd = 4 * n_heads, 2 * 4 * n_heads
        if tw and not m.num_experts:
            attn_bwd_const += dtype_bytes(recipe.grad) * mlp_o_weights
    elif fp32_eager_scores(m, t, recipe):
        # Llama-style eager on fp32 weights (modeling_llama.py eager_attention_forward: `softmax(attn_weights, dim=-1,
        # dtype=torch.float32).to(query.dtype)`, dropout p=0 returns its input, Dropout.cpp _dropout_impl). Its
        # backward, as the math path's above: attn @ v's gradient of the probabilities (matmul's backward, grad @ v^T)
        # and _softmax_backward_data's result are fp32 score tensors beside the saved fp32 softmax, and the layer's
        # MLP and o_proj weight gradients are written (autograd ran their backward first).
        # --precision fp32: the probabilities are the softmax output (`.to(float32)` is a no-op), so two score
        # tensors beyond the saved one (measured with the tracer's live tensors, --grid eager32: tinyllama cut to 4
        # layers and a 2,048-token vocabulary, full fp32 b2 s512, three [2, 32, 512, 512] fp32 tensors and the
        # gradients + 148 MiB at _softmax_backward_data; -2.7 %, with checkpointing b1 s1024 -6.5 %, with one).
        # amp-bf16 / amp-fp16: the 16-bit probabilities (saved by attn @ v) are freed by then, the gradient's fp32
        # upcast (the `.to` cast's backward) and the result are alive: 8 - c beyond the saved 4 + c, as bf16's; the
        # autocast copies of the MLP and o_proj weights were saved by their matmuls only, so freed with them (the
        # same trace under amp-bf16: 3 x 22 MiB + 8 MiB bf16 copies gone beside 148 MiB of fp32 gradients, -1.8 %
        # and with checkpointing -2.2 % without both).
        eager_bwd = (8 - c if amp else 8) * n_heads
        if tw and not m.num_experts:
            attn_bwd_const += (dtype_bytes(recipe.grad) - (c if amp else 0)) * mlp_o_weights
    elif not eager:
        eager_bwd = 0
    elif m.family == "gpt2" and not amp:
        eager_bwd = (4 + 2 * c) * n_heads if c < 4 else (4 if m.dropout > 0 else 8) * n_heads
        if c == 4 and tw:
            # fp32 (modeling_gpt2.py eager_attention_forward: softmax in the scores' dtype, `.type(value.dtype)` a
            # no-op, then dropout): beside the saved softmax output, dropout mask and dropped probabilities (9 B per
            # head per key), matmul's and dropout's backward each hold the incoming fp32 gradient and their result,
            # the dropped copy freed by dropout's: 4 B beyond; _softmax_backward_data's moment (softmax output, its
            # gradient and result) is less. By then the MLP's and c_proj's fp32 weight gradients are written (as in
            # fp32_eager_scores). Measured with the tracer, --grid eager32: gpt2 cut to 4 layers and a 2,048-token
            # vocabulary, full fp32 with checkpointing b1 s1024, the layer's MLP backward is the peak: +6.7 % with the
            # 16-bit (4 + 2 c), +1.0 % with this; b4 s1024 +15.4 -> +4.0 %, the softmax's moment 230 MB below it.
            attn_bwd_const += 4 * mlp_o_weights  # (GPT-2's MLP: c_fc and c_proj)
    elif m.attention_sinks:
        # gpt-oss (modeling_gpt_oss.py eager_attention_forward): the full (s, s) scores of every layer, a sliding
        # layer's window only masked, the sink column concatenated, the softmax in the scores' dtype. Backward, from
        # the saved set less the MLP's: `probs[..., :-1]`'s slice gradient (zeros, s + 1 wide), softmax's input
        # gradient, then the max's (value_selecting_reduction_backward: new_zeros and its scatter) while the
        # softmax's saved output has been released: two score-wide tensors beyond it (measured with the tracer's
        # live tensors, a 4-layer gpt-oss toy with 32 experts, window 64, full with checkpointing b2 s512: three
        # (b, heads, s, s + 1) bf16 tensors at aten.scatter in backward; +12.6 % with the fp32 softmax's 8 - c)
        eager_bwd = 2 * (c if not amp else 4) * n_heads
    else:
        eager_bwd = (8 - c if c < 4 else 4) * n_heads
        if m.alibi and tw:
            # BLOOM full fine-tuning: its MLP's and dense's weight gradients are written by its softmax's backward
            # (measured with the tracer, --grid lnkept: bloom-560m cut, full pure-bf16 b1 s512 with checkpointing, the
            # peak at _softmax_backward_data, -4.23 % without them)
            attn_bwd_const += dtype_bytes(recipe.grad) * mlp_o_weights
    if is_deberta(m):
        # DeBERTa's attention backward (measured with the tracer, --grid deberta): by the time the softmax's and
        # gather's backward run (the scores' gradient; gather's zero-filled (batch x heads, seq, 2P) gradient and its
        # scatter_add), the MLP's saved set, the softmax output, its dropout mask, the dropped probabilities and the
        # ~mask are freed, which outweighs them: the MLP's gradients stay the layer's backward peak.
        eager_bwd = 0
    # A checkpointed fused MoE block's first forward saves nothing, so peft's merged expert stacks (W + B·A, the
    # factor casts: _fused_moe_terms' const, saved without checkpointing) are alive beside its working set while the
    # experts run (measured with the tracer's live tensors, --grid moe deepseek_v3 LoRA all-linear with
    # checkpointing b2 s256: both baddbmm outputs alive at the routed output's un-permute, the forward phase -17 %
    # without them)
    moe_fwd_c = moe_merged_c if t.grad_checkpointing else 0
    # 4-bit over an fp32 load under autocast (memory/qlora_fp32.py): beyond the saved set at down_proj's adapter, the
    # fp32 product and dropout's fp32 output of it (peft lora.bnb.Linear4bit: no cast under autocast), the clone of
    # the base output and the MLP's normed input, both fp32 (measured with the tracer's live tensors, --grid
    # qlora-fp32load: qwen2.5-0.5b cut to 4 layers, b2 s512, the forward's peak at the top down_proj's lora_A mm)
    mlp_fwd_base = 2 * 4 * (width + h) if mlp_c != c else (3 if gated else 2) * c * width
    fwd = Term("mlp forward temporaries", max(mlp_fwd_base, adapter_fwd_t, moe_fwd_t), eager_fwd,
               const=moe_fwd_c)
    up_fwd = [lora_fwd.get(x, 0) for x in up_mods]
    # Without checkpointing the forward's widest moment may be an up-projection adapter's path (peft's base output,
    # lora_B's output and its scaled copy, intermediate-wide): the top layer's down_proj input and what the MLP saves
    # after it are not made yet (measured with the tracer's live tensors: qwen2.5-0.5b cut to 4 layers and a 2,048-token
    # vocabulary, QLoRA all-linear fp32 adapters b1 s1024, the forward's peak at up_proj's scaling mul in the top layer,
    # +5.96 % over with every layer's whole saved set counted beside it)
    up_max = max(up_fwd, default=0)
    up_over = up_max > max(mlp_fwd_base, moe_fwd_t)
    if len(up_mods) == 2 and up_fwd[1] and up_live:
        # LlamaMLP's down(act(gate(x)) * up(x)) runs gate_proj and its activation first: while up_proj's adapter path
        # is in flight, the gate's output and act(gate) (both saved) are alive beside it.
        up_fwd[1] += _act_saved_bytes(m.hidden_act, mlp_c, amp) * i + mlp_c * i
    mlp_fwd = max([mlp_fwd_base, moe_fwd_t] + up_fwd)
    # Under checkpointing (torch.utils.checkpoint non-reentrant: the first forward packs no saved tensor) a pre-norm
    # decoder layer still holds, as Python locals while its MLP runs (transformers LlamaDecoderLayer.forward:
    # `residual = hidden_states; hidden_states = self.post_attention_layernorm(hidden_states); hidden_states =
    # self.mlp(hidden_states)`), the post-attention residual and the normed input, both in the residual stream's
    # dtype (RMSNorm's `weight * x.to(input_dtype)`; fp32 under autocast). Measured with the tracer's live tensors:
    # tinyllama-1.1b cut to 4 layers, LoRA q,v with checkpointing and the cut loss, b1 s4096: the forward's peak at
    # act(gate) * up in the top layer with both beside the three MLP tensors (-3.9 % without them).
    ck_held = 2 * residual * h if not (m.parallel_residual or m.num_experts or up_norms
                                      or m.family in ENCODER_FAMILIES) else 0
    if ck_held and m.family == "gpt2":
        # GPT2Block.forward keeps `attn_output` (a local) beside them; GPT2Model.forward its `inputs_embeds` (the
        # word embeddings, before the position embeddings are added) through every layer (measured with the tracer's
        # live tensors: gpt2 LoRA all-linear with checkpointing and the fused-linear loss, b2 s1024, the forward's
        # peak at c_fc's adapter in the top layer)
        ck_held += c * h + residual * h
    # With an adapter on up_proj of a gated MLP, its path (peft's fp32 cast, lora_B's output and its scaled copy, the
    # base output) is in flight while the first half of the product is alive (act(gate) in LlamaMLP.forward; the
    # gate's output under Liger's fused SiLU-mul): measured with the tracer's live tensors, tinyllama-1.1b cut to 4
    # layers, QLoRA all-linear with Liger and checkpointing b2 s1024, the forward's peak at up_proj's scaling mul.
    # Its input's adapter-dtype copy (peft Linear.forward's local `x = self._cast_input_dtype(x, ...)`, which lora_A
    # saves in the rerun) is alive too: the first forward saves nothing, and the local holds it.
    up_last = up_mods[-1] if up_mods else ""
    ck_up = lora_fwd[up_last] + (c * i if len(up_mods) == 2 else 0) + (a * h if fresh_copy else 0) \
        if up_last in lora_fwd else 0
    if mlp_c != c and ck_up and len(up_mods) == 2:
        # 4-bit over an fp32 load under autocast (memory/qlora_fp32.py): at up_proj's `result + delta` act(gate), the
        # clone of the base output and the sum, all fp32, and the adapter's scaled 16-bit output (measured with the
        # tracer's live tensors, --grid qlora-fp32load: qwen2.5-0.5b cut to 4 layers, b1 s2048 with checkpointing,
        # the forward's peak at that add in the top layer)
        ck_up = (3 * 4 + c) * i
    ck_fwd = max(fwd.per_token, ck_up) + ck_held if ck_held else 0
    rerun_extra = rerun_held = 0
    if m.num_experts and fused_experts(m) and t.grad_checkpointing and not m.parallel_residual:
        # A routed MoE layer's rerun (as the dense one's below): the residual stream's incoming gradient, the
        # post-attention residual and the block's normed input, held beside the MoE forward (measured with the
        # tracer, --grid moe: tiny Qwen3-MoE LoRA q,k,v,o with checkpointing, the peak in the rerun at the routed
        # output's un-permute; -1.7 % without once the Qwen routers' 16-bit weights were counted).
        rerun_extra = 3 * c * h
        if moe_rerun_t >= 0:
            # The rerun saves as the first forward without checkpointing does (checkpoint.py's recompute packs every
            # saved tensor): at the routed output's un-permute the block's saved set so far (its norm, the router's,
            # the routed copies', and Qwen2-MoE's shared expert, which runs first, and its output) is alive beside
            # the un-checkpointed forward's temporaries, not the first forward's working set (measured with the
            # tracer's live tensors, --grid moe qwen2_moe-narrow LoRA q,k,v,o with checkpointing b2 s512: the peak
            # at aten.index in the rerun, -4.56 % under with the working set). Qwen2-MoE's shared_expert_gate runs
            # after the experts: its saved tensors (and its adapter's input) are not made yet.
            mlp_fwd = max(mlp_fwd, sum(x.per_token for x in terms[n_attention_terms:n_moe_rerun]
                                       if not x.batch1_only) + moe_rerun_t)
        mlp_fwd += rerun_extra
    elif any(up_fwd) and not m.num_experts:
        # A checkpointed layer's forward rerun (backward.recompute) starts when its backward first needs a saved
        # tensor: the residual stream's gradient is alive (it also flows past the MLP), and when down_proj has an
        # adapter, peft's `result + lora_B(lora_A(x)) * scaling` has been passed already: the scaled gradient
        # (lora_B's dtype) and, when the sum was promoted to it, the base output's cast-back gradient. The rerun
        # holds, unsaved, the post-attention residual and the MLP's normed input (which only the adapters' own
        # casts save) until the MLP is done (measured with the tracer, --grid families: phi-3-mini and Mistral 4
        # layers LoRA all-linear eager b2 s1024 with checkpointing, the peak at an up-projection adapter's scaling
        # mul in the rerun: 12 B x hidden per token beside the saved set for phi-3's fused gate_up, and the gate's
        # output and activation too for Mistral's separate gate_proj / up_proj; -2.46 % and -0.67 % without).
        # A post-LN encoder (BERT, DistilBERT, DeBERTa: LayerNorm(dense(x) + residual) ends the layer) reruns at
        # once: the output LayerNorm's backward needs its saved input; the attention output is both the MLP's input
        # and its residual (measured: --grid encoders / encoders2 / deberta LoRA with checkpointing).
        post_ln = m.family in ENCODER_FAMILIES and m.family != "modernbert"
        incoming = rerun_incoming("down_proj" in lora_fwd and not post_ln)
        if t.reentrant_gc:
            # Reentrant checkpointing (torch utils/checkpoint.py CheckpointFunction.backward) reruns the layer before
            # any of its backward runs: only the incoming gradient is alive, not down_proj's adapter gradients
            # (measured with the tracer, --grid reentrant: tinyllama cut to 2 layers, LoRA all-linear with the cut
            # loss b2 s2048, the rerun's up-projection moment 16 + 32 MiB below the non-reentrant one).
            incoming = residual * h
        # (A 16-bit LayerNorm's rerun, layernorm_saves_input, saves the post-attention residual as it is too, but its
        # normed output, the decoder block's local, is alive through the MLP beside it: the tracer's live tensors, gpt2
        # cut to 2 layers, LoRA all-linear with lora_dropout 0.05 b2 s1024 with checkpointing, at the rerun's peak both
        # (2, 1024, 768) bf16 tensors; -3.3 % with `held` dropped there. So `held` stays, standing for that output.)
        held = (0 if norm_saves_residual else residual * h) \
            + (residual * h if fresh_copy and not tw and not post_ln else 0)
        rerun_extra, rerun_held = incoming + held, held
        mlp_fwd += rerun_extra
    # An RMSNorm's backward runs in fp32: at its peak five fp32 hidden-wide tensors are alive (the upcast
    # gradient, mul's and pow's gradients, the mean's expanded gradient and their product; measured with
    # the tracer, tinyllama LoRA + cut loss, aten.mul.Tensor in LlamaRMSNorm's backward), which is more than
    # the MLP's gradients when the MLP is narrow (intermediate < ~3.3 x hidden in 16 bits). Frozen layers
    # only (LoRA, QLoRA): with trainable weights the estimate's bottom-layer moment already covers it (full
    # fine-tuning of the test's wide-vocabulary llama with a loss saver: +4.2 % without, +5.3 % with it).
    norm_bwd = 5 * 4 * h if m.norm == "rmsnorm" and n_norms and not tw else 0
    # A Python-formula activation (gelu_new: 0.5·x·(1 + tanh(..)); quick_gelu: x·sigmoid(1.702·x)) ends in a mul
    # whose backward holds the incoming gradient and both factors' gradients at once, as a gated MLP's does
    # (measured with the tracer: gpt2 LoRA reward with checkpointing, b8 s1024, peak at that mul with three 16-bit
    # (tokens x 3072) gradients alive; the estimate counted two and was 5 % under).
    mlp_grads = 3 if gated or m.hidden_act in ACT_SAVED_TENSORS else 2
    # Under the Trainer's autocast (over 16-bit weights, memory/upcast_norms.py autocast16, or fp32 ones, amp-*)
    # gelu_new's pow is on the fp32 list, so its product and the final mul's gradients are fp32 (_act_saved_bytes;
    # measured with the tracer, --grid autocast: gpt2 cut to 4 layers and a 2,048-token vocabulary, LoRA b2 s1024,
    # -2.5 % with 16-bit ones; amp-bf16 with checkpointing -5.99 % with 16-bit ones, +4.06 % now)
    grad_elem = 4 if amp and m.hidden_act in ("gelu_new", "gelu_fast") else mlp_c
    mlp_bwd = mlp_grads * grad_elem * width + c * h
    if mlp_c != c and "down_proj" in lora_fwd and gated:
        # 4-bit over an fp32 load under autocast (memory/qlora_fp32.py): at down_proj's input gradient, the base's
        # (MatMul4Bit's 16-bit grad_A cast to its fp32 input's dtype by the engine), the adapter path's (dropout's
        # fp32 backward) and their fp32 sum, beside the layer output's fp32 gradient; down_proj's adapter has freed
        # its saved cast, mask and lora_A output (measured with the tracer's live tensors, --grid qlora-fp32load:
        # qwen2.5-0.5b cut to 4 layers, b2 s512, the backward's peak at that sum in the top layer)
        down_saved = next((x.per_token for x in terms if x.name == "lora down_proj input"), 0)
        mlp_bwd = 3 * 4 * width + 4 * h - down_saved
    if m.family == "gpt_oss" and m.num_experts and trainable_weights:
        # Trainable gpt-oss experts: by the time grouped_mm's backward allocates an expert weight gradient, the
        # block's saved intermediates it has passed are freed; beyond the layer's saved set stay the incoming
        # gradient and the gathered input's gradient (k x hidden) (measured with the tracer, --grid gptoss full
        # with checkpointing: +7.3 % over with the gated MLP's 3 x width).
        mlp_bwd = c * h * (m.experts_per_token + 1)
    # Offloaded without checkpointing (memory/savers.py offload_node_bytes), the MLP's product node also holds
    # down_proj's adapter path gradients in the adapter dtype (lora_A's input gradient and its scaled product, one
    # cast back): beyond the gated MLP's three, 2 a - c bytes per intermediate unit (measured with the tracer, --grid
    # offload-nogc: a tiny Llama LoRA all-linear fp32 adapters, the peak at MulBackward0 with 16 B x intermediate
    # per token, -12 % without)
    down_adapter_bwd = (2 * a - c) * i if "down_proj" in lora_fwd and gated and not m.num_experts else 0
    # Checkpointed, the layer's backward runs beside its whole recomputed set, and with an adapter-dtype LoRA on a gated
    # SiLU MLP's down_proj the largest node is lora_A's input gradient (aten.mm, a x intermediate per token) with the
    # incoming gradient and the residual stream's (2 c x hidden), lora_B's weight gradient written and lora_A's being
    # made (peft tuners/lora/layer.py Linear.forward: lora_A saves its own cast of the input; autograd then frees that
    # cast, and the product's three gradients come after it, not beside it: the frozen base saves nothing). Measured
    # with the tracer's live tensors, --grid reentrant: qwen2.5-0.5b and tinyllama cut to 2 layers, LoRA / QLoRA
    # all-linear b1 s512 with the cut loss, reentrant or not: the top layer's peak at that mm, the saved set + 23,040
    # (+ 618) and + 30,720 (+ 714) B per token, where the product's gradients (3 c x intermediate + c x hidden) over-
    # counted 7,936 and 11,264 (+4.1 % on qwen2.5 b2 s2048, reentrant). The RMSNorms' fp32 backward (norm_bwd) comes
    # after the MLP's, its saved set freed (the same traces: tinyllama's MLP-norm node 68,000 B per token below that mm)
    ck_down = t.grad_checkpointing and "down_proj" in lora_fwd and gated and not m.num_experts and a != c and not amp \
        and t.lora_dropout == 0 and not t.dora and not tw and m.hidden_act in ("silu", "swish") \
        and not m.parallel_residual and m.family not in ENCODER_FAMILIES
    bwd = Term("mlp backward gradients" if mlp_bwd >= norm_bwd
               else "rmsnorm backward (fp32)", max(mlp_bwd, norm_bwd, adapter_bwd_t, moe_bwd_t),
               eager_bwd, const=backward_const)
    # With trainable weights the gated MLP's product node (act(gate) * up's MulBackward0, mlp_bwd) runs after
    # down_proj's MmBackward0, which freed down_proj's saved input (derivatives.yaml: mm saves it for the weight's
    # gradient only; autograd releases a node's saved tensors once it has run). Measured with the tracer's live
    # tensors, --grid gc-offload: toy Qwen2.5 (hidden 256, MLP 704) full pure-bf16 with offloaded checkpointing b2
    # s1024 and the cut loss, the peak at the bottom layer's act(gate) * up backward holds its recomputed set less
    # down_proj's (2, 1024, 704) 16-bit input, 2,883,584 B (+5.44 % with it counted)
    mlp_node_freed = sum(x.per_token for x in terms if x.name == "down_proj input") \
        if gated and not m.num_experts and mlp_bwd >= max(norm_bwd, adapter_bwd_t, moe_bwd_t) else 0
    # A frozen non-gated MLP whose gelu_new runs under autocast (GPT-2, GPT-J, Phi-2 LoRA): the layer's backward peaks
    # at the formula's last mul, 0.5·x · (1 + tanh(..)), after fc_out's backward, which freed lora_A's cast of fc_out's
    # input and lora_B's input (peft tuners/lora/layer.py Linear.forward; the frozen base's mm saves only its weight's
    # 16-bit autocast copy, freed too: memory/__init__.py _mlp_node). The node holds the fp32 incoming gradient, both
    # factors' fp32 gradients and one's cast to 0.5·x's dtype (12 + c bytes per unit), beside the residual stream's
    # fp32 gradient (and a parallel block's 16-bit cast of it). Measured with the tracer's live tensors, --grid amp:
    # gpt-j-6b cut to 4 layers and a 2,048-token vocabulary, LoRA all-linear amp-bf16 b2 s1024: the peak at the top
    # layer's _to_copy in that mul's backward, three (2, 1024, 16384) fp32 tensors and a bf16 one, a (2, 1024, 4096)
    # fp32 and a bf16 one alive, fc_out's (2, 1024, 16384) bf16 input cast and its (4096, 16384) bf16 weight cast gone
    # (+4.30 % with them counted); gpt2 the same without the bf16 (2, 1024, 768) cast.
    # (Checkpointed over 16-bit weights no cast is freed there, and the three fp32 gradients of mlp_bwd stand for the
    # node and the rerun's end alike: --grid autocast3 gpt-j-6b / phi-2 LoRA and QLoRA with checkpointing up to
    # +4.87 % with this node, +3.69 % without.)
    act_node = amp and not gated and not tw and not m.num_experts and m.hidden_act in ("gelu_new", "gelu_fast") \
        and (recipe.autocast or not t.grad_checkpointing) and mlp_bwd >= max(norm_bwd, adapter_bwd_t, moe_bwd_t)
    act_node_bwd = rerun_end = act_node_grads = 0
    if act_node:
        act_node_bwd = (12 + c) * width + residual * h + (c * h if m.parallel_residual else 0)
        mlp_node_freed = sum(x.per_token for x in terms if x.name == "lora down_proj input")
        # (fc_out's adapters' gradients, rank x (in + out) in the adapter dtype, written by lora_A / lora_B's nodes)
        act_node_grads = t.lora_rank * (width + h) * a if "down_proj" in lora_fwd else 0
        # Checkpointed, the rerun's end comes before that node: the whole recomputed set and its casts, beside the
        # gelu's fp32 output (unsaved: fc_out's adapter saves its own 16-bit cast), the layer's unsaved locals (the fp32
        # normed input, the attention's output, the base projection's output, one more 16-bit hidden-wide tensor) and
        # the layer output's incoming gradient (fp32 and its 16-bit cast). Measured with the tracer's live tensors,
        # --grid amp: gpt-j-6b as above with checkpointing, the peak at the rerun's last _to_copy (fc_out's lora_A
        # cast), its (2, 1024, 16384) fp32 gelu output, two (2, 1024, 4096) fp32 and five bf16 hidden-wide tensors
        # beside the recomputed set (backward.top's three fp32 gradients over them: +3.07 %)
        if t.grad_checkpointing and not t.reentrant_gc:
            rerun_end = 4 * width + (8 + 4 * c) * h
    # (less the LoRA ranks' bytes, so that a larger rank never lowers the attention's moment: what the rank adds
    # to the MLP's saved set is still counted there, but not as freed before the attention's backward)
    mlp_terms = [x for x in terms[n_attention_terms:] if not x.batch1_only]
    mlp_saved = sum(x.per_token for x in mlp_terms) - sum(a * t.lora_rank for x in mlp_terms
                                                          if x.name.startswith("lora ") and x.name.endswith(" input"))
    mlp_tail = sum(x.per_token for x in terms[n_mlp_inputs:] if not x.batch1_only)
    ck_down_bwd = max(a * i + 2 * c * h, norm_bwd - mlp_saved, adapter_bwd_t, moe_bwd_t) if ck_down else 0
    ck_down_c = a * t.lora_rank * (i + h) if ck_down else 0  # lora_A's weight gradient being made and lora_B's
    # With lora_dropout (and an adapter-dtype cast) a pre-norm decoder's rerun peaks there too: down_proj's cast, its
    # dropout output and mask are the widest adapter tensors (the 4-layer llama above: -6.04 % without this moment,
    # +4.44 % with it, which also counts lora_B's output and its scaled copy beside the cast: the safe side).
    # Reentrant checkpointing (torch utils/checkpoint.py CheckpointFunction.backward: `outputs =
    # ctx.run_function(*detached_inputs)` under enable_grad, before torch.autograd.backward) reruns the whole layer, so
    # its rerun passes down_proj's adapter path too, with the MLP's whole saved set made: the 16-bit product act(gate) *
    # up (lora_A saves its own adapter-dtype cast), the base output, lora_B's output and its scaled copy (peft
    # tuners/lora/layer.py Linear.forward), beside the incoming gradient and the held pair (measured with the tracer's
    # live tensors, --grid reentrant: tinyllama and qwen2.5-0.5b cut to 2 layers, LoRA / QLoRA all-linear b1 s512
    # with the cut loss, the rerun's down_proj scaling mul at 184,146 / 109,834 B per token with the kept inputs and
    # the RoPE tables, this sum 10 B under; -5 % on that moment with the up-projection's)
    # Non-reentrant without early stop (torch utils/checkpoint.py early_stop=False: the rerun does not stop at the
    # layer's last saved tensor) passes down_proj's adapter path too, beside the non-reentrant incoming gradients
    reentrant_down = (t.reentrant_gc or not t.ac_early_stop) and a != c and not up_norms and gated \
        and not m.num_experts
    # Non-reentrant checkpointing with early stop (torch utils/checkpoint.py _StopRecomputationError, raised by the
    # recompute's pack hook once the last saved tensor is repacked) ends the rerun at lora_B's saved input, lora_A's
    # output: lora_B's output and its scaled copy (lora_fwd's 2 x lora_b per hidden unit) are never made. The rerun
    # runs on through the scaling mul when reentrant, with early_stop=False, and where something after the MLP saves
    # its output: Gemma 2 / 3's and OLMo 2's post_feedforward_layernorm, a post-LN encoder's output LayerNorm.
    # Measured with the tracer's timelines: qwen3-0.6b cut, LoRA all-linear fp32 adapters under autocast-bf16 with
    # checkpointing and the fused-linear loss, b2 s1024: the rerun's peak at autocast's 16-bit cast of down_proj's
    # input for lora_A, then lora_A's mm, then the stop (50 MiB of rerun locals freed), no (2048, 1024) output (+2.14 %
    # over with them); the 4-layer llama with p 0.05 below +4.44 % with them, +0.25 % without; --grid qlora8's
    # tinyllama int8 gc dropout 0.1 b2 s512 +3.80 % -> +0.78 %; gemma-3-1b cut, QLoRA under autocast-bf16 with
    # checkpointing b1 s512, the rerun's peak at down_proj's scaling mul (-3.01 % without them)
    # GPTBigCode's residual dropout after the MLP (resid_pdrop) saves its mask, so the rerun runs on past down_proj's
    # adapter under amp (measured with the tracer's live tensors, --grid amp: starcoderbase-1b cut, LoRA all-linear
    # amp-bf16 b2 s1024 with checkpointing, lora_B's output and its scaled copy alive at the rerun's end; -2.27 %
    # without. Not StarCoder2's: its autocast-bf16 reruns stop early, --grid autocast2 +3.04 % with it)
    rerun_runs_on = t.reentrant_gc or not t.ac_early_stop or sandwich or m.post_norms \
        or (m.family in ENCODER_FAMILIES and m.family != "modernbert") \
        or (m.family == "gpt_bigcode" and m.dropout > 0 and recipe.autocast)
    lora_b_unmade = 0 if rerun_runs_on else 2 * (c if amp else a) * h
    if rerun_extra and "down_proj" in lora_fwd and (m.family in ENCODER_FAMILIES and m.family != "modernbert"
                                                    or t.lora_dropout > 0 and a != c and not up_norms
                                                    or reentrant_down):
        # A post-LN encoder's rerun at down_proj's adapter path: the MLP's whole saved set made, its input (the
        # activation's output) alive unsaved beside the adapter's temporaries (measured with the tracer: BERT base
        # LoRA all-linear with checkpointing b8 s512, the peak at output.dense's scaling mul in the rerun, -1.67 %
        # without; DistilBERT and DeBERTa-v3 likewise). Not for the pre-norm decoders: there the up-projection's
        # moment above is the peak, and this sum over-counted their traces (Mistral +0.7 %, GPT-2 up to +5.6 %).
        # With dropout the early-stopped rerun makes no lora_B output (lora_b_unmade above).
        mlp_fwd = max(mlp_fwd, mlp_tail + c * i + lora_fwd["down_proj"] + rerun_extra - lora_b_unmade)
    elif rerun_extra and "down_proj" in lora_fwd and amp and a != c and not m.parallel_residual:
        # --upcast-norms: the pre-norm decoder's rerun peaks at down_proj's adapter too, where its fp32 copy of the
        # 16-bit product is alive (lora_fwd above holds the product, the copy and the held normed input and residual;
        # the rerun's incoming gradients beside them, its held pair being lora_fwd's; no inputs_embeds by then).
        # Measured with the tracer's live tensors: a 4-layer llama, hidden 256, MLP 1,024, LoRA all-linear with
        # checkpointing, b2 s512: the backward's peak at that copy in the rerun, -6.69 % without this moment.
        # (--precision autocast-* with lora_dropout too: lora_fwd holds dropout's output; --grid autocast); the
        # early-stopped rerun makes no lora_B output (lora_b_unmade above)
        embeds = 0 if norm_saves_residual else residual * h  # lora_fwd's inputs_embeds, freed by the rerun
        mlp_fwd = max(mlp_fwd, mlp_tail + lora_fwd["down_proj"] + rerun_extra - rerun_held - embeds - lora_b_unmade)
    elif t.grad_checkpointing and "down_proj" in lora_fwd and amp and a != c and m.parallel_residual \
            and not gated and not m.num_experts and not fp32_input("down_proj"):
        # A parallel block's rerun (GPT-NeoX: a 16-bit activation output) under the Trainer's autocast peaks at
        # down_proj's adapter as the pre-norm decoder's above: the MLP's saved set made, lora_fwd's 16-bit product and
        # its fp32 copy, the MLP's fp32 normed input and the base output, and beside them the attention's output
        # (summed after the MLP) and the layer output's incoming gradient in two 16-bit copies: lora_fwd's sum less
        # the layer input (a kept checkpoint input here), whose lora_B output and scaled copy (not made yet) stand
        # for the two hidden-wide tensors it lacks. Measured with
        # the tracer's live tensors, --grid autocast3: pythia-410m cut to 4 layers, LoRA all-linear b2 s1024 with
        # checkpointing, the peak at that fp32 copy in the bottom layer's rerun (-12.49 % without, +1.3 % with).
        # Over fp32 weights (amp) lora_fwd holds no residual-stream stand-ins (the norms save them: saves_residual), so
        # the rest is counted as it is: the attention's 16-bit output, the incoming fp32 gradient with its 16-bit cast
        # and lora_B's scaled gradient, less the lora_B output and copy the early-stopped rerun never makes (measured
        # with the tracer's live tensors, --grid amp: pythia-70m cut, LoRA all-linear b2 s1024 with checkpointing, at
        # the rerun's 16-bit cast of dense_4h_to_h's fp32 input copy; -13.8 % before, -5.0 % with the stand-ins' sum)
        beside = c * h + rerun_incoming(True) - lora_b_unmade if norm_saves_residual else -c * h
        mlp_fwd = max(mlp_fwd, mlp_tail + lora_fwd["down_proj"] + beside)
    terms += _prefix_terms(m, t, c, d, n_heads, kv_dim, gqa, sum(x.per_token_seq for x in terms))
    if t.method == "adaption-prompt":  # its attention over the prompt (core/peft_methods.py adaption_saved)
        per_token, per_sample = peft_methods.adaption_saved(m, t, c)
        terms.append(Term("adaption prompt: queries, prompt scores, gated scores, prompt keys and values", per_token,
                          per_sample=per_sample))
    if attn_live and getattr(t, "context_parallel", 1) > 1 and not eager:
        # Ring attention (memory/context_parallel.py). Its forward runs before o_proj's saved terms exist and before
        # its own output (c x q_dim) and log-sum-exp are made; under checkpointing the first forward saves nothing,
        # so beside it are q, k, v and the normed input, alive unsaved, and the rerun (the backward.recompute
        # moment, over the recomputed set less the MLP's tail) runs it again. Its backward runs after the MLP's saved
        # set is freed, beside the attention output's incoming gradient and the residual stream's.
        ring_fwd, ring_bwd = ring_attention.ring_bytes(t, c, q_dim, kv_dim, n_heads)
        later = sum(x.per_token for x in terms[n_attention_terms:] if not x.batch1_only) + c * q_dim + 4 * n_heads
        ring_fwd_t = ring_fwd + c * (q_dim + 2 * kv_dim + h) if t.grad_checkpointing else ring_fwd - later
        name = "ring attention forward: K/V blocks, fp32 running output and its merge (memory/context_parallel.py)"
        if ring_fwd_t > fwd.per_token:
            fwd = replace(fwd, name=name, per_token=ring_fwd_t)
        if t.grad_checkpointing:
            mlp_fwd = max(mlp_fwd, ring_fwd - later + mlp_tail)
        ring_bwd_t = ring_bwd + c * (q_dim + h) - mlp_saved
        if ring_bwd_t > bwd.per_token:
            bwd = replace(bwd, name="ring attention backward: K/V blocks, dq/dk/dv buffers and fp32 accumulators, "
                          "after the MLP's saved set is freed (memory/context_parallel.py)", per_token=ring_bwd_t)

    def kept(x: Term) -> bool:
        return bool(x.per_token or x.per_token_seq or x.per_sample or x.const or x.per_seq_sq)

    # (eager scores without checkpointing: their moment is the attention's, attn_fwd_less_t, taken with the others)
    fwd_unmade = down_tail if up_over and up_max >= fwd.per_token and (not fwd.per_token_seq or (
        eager and not t.grad_checkpointing and m.attention_kind != "mla")) else 0

    # DoRA under the Trainer's autocast over 16-bit weights: the largest module's weight norm runs (dora.py
    # DoraLinearLayer.forward: get_lora_weight, get_weight_norm before lora_B(lora_A(x))) after the base product and
    # peft's adapter-dtype copy of its input, beside what the layer holds unsaved: that module's forward path without
    # lora_B's output and its scaled copy, not made yet (measured with the tracer's live tensors, --grid
    # autocast-dora: tinyllama cut to 4 layers and a 2,048-token vocabulary, DoRA all-linear b2 s1024, the forward's
    # peak at down_proj's `weight + scaling * lora_weight` holds the 16-bit product act(gate) * up, its fp32 copy, the
    # base output, the normed input, the post-attention residual and the embeddings' output; -3.6 % with the weight
    # norm alone)
    dora_norm_t = dora_norm_unmade = 0
    if dora_out and up_norms:
        top = max(dora_out, key=lambda mod: _dora_norm_bytes(dora_out[mod], t, recipe))
        dora_norm_t = max(0, lora_fwd.get(top, 0) - 2 * c * dora_out[top].out_features)
        dora_norm_unmade = min(dora_norm_t, dora_unmade.get(top, 0))
    return LayerActivations(tuple(x for x in terms if kept(x)),
                            fwd, bwd, mlp_saved, mlp_tail, mlp_fwd, after_attention,
                            sum(x.const for x in mlp_terms), attn_bwd_const, attn_backward_grads_const=attn_grads_c,
                            attention_terms=sum(1 for x in terms[:n_attention_terms] if kept(x)),
                            routed_backward_per_token=routed_bwd,
                            backward_no_norm_per_token=max(mlp_bwd + down_adapter_bwd, adapter_bwd_t, moe_bwd_t),
                            attention_forward_per_token=attn_fwd_tok, mlp_forward_per_token_seq=probs_beside_mlp,
                            checkpointed_forward_per_token=ck_fwd, checkpointed_backward_per_token=ck_down_bwd,
                            checkpointed_backward_const=ck_down_c, mlp_node_freed_per_token=mlp_node_freed,
                            mlp_node_backward_per_token=act_node_bwd, mlp_node_grads=act_node_grads,
                            rerun_end_per_token=rerun_end,
                            int8_ctx_per_token=int8_ctx, forward_unmade_per_token=fwd_unmade,
                            dora_norm_per_token=dora_norm_t, dora_norm_unmade_per_token=dora_norm_unmade,
                            rerun_scores_per_token_seq=rerun_scores, rerun_scores_per_token=rerun_tok)


def _dora_saved(mod: str, lin: Linear, t: TrainingSpec, recipe: Recipe, input_live: bool, bias: bool) -> Term:
    """What DoRA adds to an adapted Linear's saved set (peft tuners/lora/dora.py DoraLinearLayer.forward, called
    with x already cast to the adapter dtype a by lora.Linear.forward):

    - `weight_norm = get_weight_norm(W.to(a), lora_weight.detach()).detach()`: no graph (DoRA §4.3);
      `mag_norm_scale = magnitude / weight_norm`: div saves weight_norm (out, dtype a);
    - `(mag_norm_scale - 1) * base_result`: mul saves base_result, the base layer's output (tokens x out, compute
      dtype c), for the magnitude's gradient, and (mag_norm_scale - 1) (out) when base_result needs a gradient;
    - `mag_norm_scale * lora_result * scaling`: mul saves mag_norm_scale (out) and lora_B's output (tokens x out, a).
    With lora_dropout > 0 peft recomputes the base product on the dropped input, `F.linear(x, W.to(a))`: its
    output (a) replaces base_result, and when the input needs a gradient linear saves the weight W.to(a): a full
    out x in copy (the parameter itself only when it already is in a and not quantized).
    Measured with the tracer (tinyllama-1.1b LoRA q,v fp32 adapters, b1 s512): 6 B x out per token per module
    and 12 B x out per module (8 in layer 0, whose q/v inputs need no gradient).
    """
    c = dtype_bytes(recipe.compute)
    a = dtype_bytes(t.adapter_dtype)
    out, d_in = lin.out_features, lin.in_features
    scale = max(a, c)  # magnitude (a) / weight_norm (a): fp32 unless both are 16-bit
    const = scale * out * (3 if input_live else 2)
    # Under autocast (amp-*, and autocast-* over 16-bit weights: memory/upcast_norms.py autocast16) lora_B and the
    # recomputed base product are autocast matmuls: their outputs are in the compute dtype whatever the adapter dtype.
    lora_out = c if recipe.autocast or _norms.autocast16(t, recipe) else a
    base = c
    if bias and recipe.autocast:
        # `base_result = base_result - bias` (lora/layer.py Linear.forward): the 16-bit output minus the fp32 bias
        # promotes to fp32, and that is the tensor the mul saves (measured: gpt2 DoRA amp-bf16, every Linear biased)
        base = max(c, dtype_bytes(recipe.weight))
    if t.lora_dropout > 0:
        base = lora_out
        if input_live and (t.method == "qlora" or a != dtype_bytes(recipe.weight) or recipe.autocast):
            # under autocast F.linear casts that copy (over 16-bit weights, an fp32 non-leaf) or, over fp32 weights
            # (amp-*), the frozen fp32 parameter itself (W.to(a) is W: no copy, and no cached cast for a leaf that
            # needs no grad) to the compute dtype and saves the cast (measured with the tracer: tinyllama-1.1b DoRA
            # all-linear amp-bf16, dropout 0.05, b1 s256: -19.98 % without it, every adapted weight's bf16 cast)
            const += (c if _norms.autocast16(t, recipe) or recipe.autocast else a) * d_in * out
    return Term(f"dora {mod} (base and lora outputs, norm scale)", (base + lora_out) * out, const=const)


def dora_forward_transient(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """The largest DoRA module's weight-norm temporaries (peft tuners/lora/dora.py), bytes whatever the batch:
    get_lora_weight runs `lora_B(lora_A(eye(in)))` (x_eye, in x in in the adapter dtype a, kept by lora_A's graph
    with its in x r output until the forward returns) giving lora_weight (in x out, a); the base weight cast to a
    (`W.to(x.dtype)`: a copy unless W is already in a; QLoRA: dequantize_4bit first); get_weight_norm then
    computes `W + scaling * lora_weight`: two more out x in tensors in a, alive with the rest."""
    if not (t.dora and t.method in ("lora", "qlora")):
        return 0
    return max((_dora_norm_bytes(lin, t, recipe) for lin in resolve_targets(m, t.lora_targets)), default=0)


def _dora_norm_bytes(lin: Linear, t: TrainingSpec, recipe: Recipe) -> int:
    """One DoRA module's weight-norm temporaries (dora_forward_transient)."""
    a = dtype_bytes(t.adapter_dtype)
    c = dtype_bytes(recipe.compute)
    copy = t.method == "qlora" or a != dtype_bytes(recipe.weight)
    i, o, r = lin.in_features, lin.out_features, t.lora_rank
    if (recipe.autocast or _norms.autocast16(t, recipe)) and c != a:
        # Under autocast (amp-*, and autocast-* over 16-bit weights) lora_A and lora_B are autocast matmuls: lora_A's
        # graph keeps x_eye cast to c (in x in) and lora_B's its c input (in x r), lora_weight comes out in c and
        # `lora_weight.to(x.dtype)` copies it back to a (x is cast to the adapter dtype). Two moments: lora_B running
        # (the a x_eye still referenced, its c copy, the c output) and get_weight_norm (the a lora_weight, the weight
        # copy, `scaling * lora_weight` and the sum, all a).
        graph = c * i * i + c * i * r
        return max(a * i * i + graph + c * i * o, graph + a * i * o * (4 if copy else 3))
    return a * i * (i + r + (4 if copy else 3) * o)


@dataclass(frozen=True, slots=True)
class DequantBytes:
    """QLoRA's dequantized weight while a quantized block Linear runs (0 for the other methods).

    Forward (4-bit): bitsandbytes 0.50 autograd/_functions.py MatMul4Bit.forward calls the gemm_4bit op, whose CUDA
    fallback (backends/cuda/ops.py _dequant_linear_fallback; always past 1,536 rows) dequantizes the nested absmax to
    fp32 (`absmax_dq`, then `absmax_dq + offset`: two fp32 tensors of one value per 64-element block), the whole
    weight into an out x in tensor in the compute dtype, then F.linear: all three alive beside the output. Its fused
    kernel (fewer rows on some GPUs) needs none of them: counted as the fallback, the larger. 8-bit forward runs
    int8 matmuls (no dequantized weight). Backward (both): MatMul4Bit.backward `grad_output @ dequantize_4bit(B)`
    (functional.py: the nested absmax to fp32 first, freed when it returns) and MatMul8bitLt's `CB * SCB / 127`
    in the compute dtype: the weight, then grad_A (rows x in) beside it and the incoming gradient (rows x out).
    The largest quantized Linear of a block sets each moment."""

    weight_c: int = 0  # the largest quantized Linear's weight dequantized to the compute dtype, whatever the batch
    forward_absmax_c: int = 0  # the forward's two fp32 absmax tensors (4-bit, double quantization); 8-bit: no moment
    backward_absmax_c: int = 0  # the backward's one, freed by the time grad_A is allocated
    compute: int = 2  # bytes of the compute dtype
    # (in, out, held) of each Linear of that largest size; held: what else the rerun holds per token beside it (a gated
    # MLP runs act(gate_proj(x)) first, so at up_proj the activation's output, out wide, is alive: measured with the
    # tracer, Qwen2.5-7B cut to 4 layers, QLoRA b2 s256 with checkpointing, the forward's peak at up_proj's mm)
    shapes: tuple[tuple[int, int, int], ...] = ()
    # 8-bit (LLM.int8, threshold 6.0): the compute dtype's name, and `shapes` are every block Linear's: no weight is
    # dequantized in forward, MatMul8bitLt's int8 temporaries (preference.py int8_linear_bytes) are per row
    int8: str = ""
    # A fused gate_up projection (Phi-3) as the largest: its backward runs after the MLP's saved tail (the
    # activation's, down_proj's input) is freed, which `backward` takes off its moment; down_proj's own (a smaller
    # weight, beside the whole saved set): (in, out, its absmax or scale bytes). Measured with the tracer's live
    # tensors, phi-3-mini cut to 4 layers (dequant:), QLoRA all-linear b1 s512 with checkpointing, bf16 and
    # autocast-bf16: the backward's peaks at down_proj's and gate_up_proj's dequantized weights 7 MB apart, the
    # largest weight counted beside the whole set +5.3 % (+8.5 % under TRL's DPO)
    after_tail: bool = False
    down: tuple[int, int, int] = (0, 0, 0)
    # Under the Trainer's autocast over 16-bit weights, gelu_new's output is fp32 (its pow is on autocast's fp32 list,
    # _act_saved_bytes) and saved by nobody: at down_proj's (fc_out's, fc2's) dequantized matmul it is alive, per token
    # of its `beside_in` features, with Linear4bit.forward's compute-dtype cast of it (`x.to(self.compute_dtype)`,
    # bitsandbytes nn/modules.py), whether or not the layer is checkpointed. Measured with the tracer's live tensors,
    # --grid autocast3: gpt-j-6b cut to 4 layers, QLoRA all-linear b1 s512, the forward's peak at the top layer's
    # fc_out addmm holds the fp32 (1, 512, 16384) gelu output and its bf16 copy beside the 134 MB weight (-3.63 %
    # without; phi-2 -3.77 %).
    beside_in: int = 0
    beside_fp32: bool = False
    # A parallel block's 16-bit activation output (GPT-NeoX's gelu) under the same autocast, without checkpointing:
    # at down_proj's dequantized matmul its input (saved by nobody: the frozen base saves nothing, lora_A its own cast
    # later) and the block's hidden-wide tensors (the fp32 normed input, the attention's output, the layer input and
    # the embeddings' output), per token. Measured with the tracer's live tensors, --grid autocast3's pythia-410m QLoRA
    # at b1 s256: the forward's peak at the top layer's dense_4h_to_h addmm holds them (-2.92 % with up_proj's moment)
    beside_t: int = 0
    # hqq (memory/hqq.py): what Quantizer.dequantize holds beside the dequantized weight before the matmul's output
    # exists: the unpacked tensor and `W_r - zero` while `* scale` is computed
    before_out: int = 0
    # hqq: down_proj's LoRA saved bytes per token (its adapter-dtype input copy and lora_A's output): autograd runs the
    # adapter's branch first (created last), so they are freed before the base layer's backward dequantizes
    down_lora_t: int = 0
    # 4-bit over an fp32 load under autocast (memory/qlora_fp32.py): `weight_c` is the fp32 dequantized weight and
    # autocast's 16-bit copy of it (forward; backward's `dequantize_4bit(B).to(grad_output.dtype)` holds both at the
    # cast, then the copy alone beside grad_A); the forward adds autocast's 16-bit copy of the input, and the fp32
    # input itself where nothing saved holds it (down_proj's product; every input under checkpointing)
    fp32_compute: bool = False

    def _beside(self, d_in: int, tokens: int, checkpointed: bool) -> int:
        """What else is alive at that Linear's matmul beyond `forward`'s own count (beside_in)."""
        if d_in != self.beside_in:
            return 0
        if self.beside_t and not checkpointed:
            return tokens * self.beside_t
        if not self.beside_fp32:
            return 0
        return tokens * d_in * (4 + (0 if checkpointed else self.compute))

    def forward(self, tokens: int, checkpointed: bool) -> int:
        """The weight, the absmax, the output and (checkpointed: not in the layer's saved set) the input. 8-bit: the
        int8 matmul's temporaries and output, per row, instead of the weight."""
        if self.int8:
            return max(tokens * (int8_linear_bytes(d_in, d_out, self.int8)
                                 + (self.compute * (d_in + held) if checkpointed else 0))
                       for d_in, d_out, held in self.shapes)
        if not self.forward_absmax_c and not self.weight_c:
            return 0
        if self.fp32_compute:  # (down_proj, not checkpointed: its adapter's saved set, counted whole, not made yet)
            return max(self.weight_c + self.forward_absmax_c + self.compute * tokens * (d_out + d_in)
                       + 4 * tokens * ((d_in + held if checkpointed else 0) + (d_in if d_in == self.beside_in
                                                                                and not checkpointed else 0))
                       - (self.down_lora_t * tokens if d_in == self.beside_in and not checkpointed else 0)
                       + (self.beside_t * tokens if d_in == self.beside_in else 0)
                       for d_in, d_out, held in self.shapes)
        return max(self.weight_c + self.forward_absmax_c + max(self.before_out, self.compute * tokens * d_out)
                   + self.compute * tokens * (d_in + held if checkpointed else 0)
                   + self._beside(d_in, tokens, checkpointed)
                   for d_in, d_out, held in self.shapes)

    def backward(self, tokens: int, mlp_tail_t: int = 0) -> int:
        """The weight, then grad_A beside it (the absmax freed), and the incoming gradient; `mlp_tail_t`: the MLP's
        saved bytes per token freed before a fused gate_up's backward (after_tail)."""
        top = max((self.weight_c + max(self.backward_absmax_c, self.compute * tokens * d_in)
                   + self.compute * tokens * d_out for d_in, d_out, _ in self.shapes), default=0)
        if self.fp32_compute:  # the fp32 weight and its copy at the cast; the copy, grad_A and its fp32 cast after
            top = max((max(self.weight_c + self.backward_absmax_c, self.weight_c // 3 + (self.compute + 4) * tokens
                           * d_in) + self.compute * tokens * d_out for d_in, d_out, _ in self.shapes), default=0)
        if not self.after_tail:
            return top
        d_in, d_out, absmax = self.down
        down = self.compute * (d_in * d_out + tokens * d_out) + max(absmax, self.compute * tokens * d_in) \
            - self.down_lora_t * tokens
        return max(top - mlp_tail_t * tokens, down)


def _hqq_extra(t: TrainingSpec, c: int, d_in: int, d_out: int) -> int:
    """An HQQLinear's dequantization transient beyond its weight (DequantBytes.before_out)."""
    q = _hqq.linear_bytes(d_in, d_out, t.quant_bits, t.hqq_group_size, t.hqq_axis, c)
    return q.unpacked + q.weight


def dequant_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe, linears: tuple[Linear, ...]) -> tuple[
        DequantBytes, DequantBytes]:
    """(forward, backward) dequantization moments of the largest quantized Linear (DequantBytes), for QLoRA; `linears`
    are the blocks' (params.block_linears): bitsandbytes replaces nn.Linear modules only, not 3-D expert Parameters.
    8-bit: no weight dequantized in forward, each Linear's int8 matmul temporaries instead (DequantBytes.int8)."""
    if t.method != "qlora":
        return DequantBytes(), DequantBytes()
    c = dtype_bytes(recipe.compute)
    quantized = [lin for lin in linears if not (lin.module.startswith("experts.") and fused_experts(m))]
    if not quantized:
        return DequantBytes(), DequantBytes()
    numel = max(lin.in_features * lin.out_features for lin in quantized)
    gated_up = m.mlp == "gated" and not m.fused_gate_up
    shapes = tuple(sorted({(lin.in_features, lin.out_features, lin.out_features if gated_up and lin.module == "up_proj"
                            else 0) for lin in quantized if lin.in_features * lin.out_features == numel}))
    nested = 4 * ceil_div(numel, 64) if t.quant_bits == 4 and t.double_quant else 0  # quantize_4bit: blocksize 64
    fused = m.fused_gate_up and all(lin.module == "gate_up_proj" for lin in quantized
                                    if lin.in_features * lin.out_features == numel)
    down_shape = max(((lin.in_features, lin.out_features) for lin in quantized if lin.module == "down_proj"),
                     key=lambda s: s[0] * s[1], default=(0, 0))
    down = down_shape if fused else (0, 0)
    if fused and not down[0]:
        fused = False
    if t.quant_backend == "hqq":
        # HQQMatmulNoCacheMul (memory/hqq.py): forward dequantizes (the unpacked tensor and a weight-sized temporary
        # beside the result, before the output), then matmul; backward the same, beside the incoming gradient,
        # then grad_input = grad_output @ W beside the weight
        big = max((lin for lin in quantized if lin.in_features * lin.out_features == numel),
                  key=lambda lin: _hqq.linear_bytes(lin.in_features, lin.out_features, t.quant_bits, t.hqq_group_size,
                                                    t.hqq_axis, c).unpacked)
        q = _hqq.linear_bytes(big.in_features, big.out_features, t.quant_bits, t.hqq_group_size, t.hqq_axis, c)
        extra = _hqq_extra(t, c, big.in_features, big.out_features)
        # a gated MLP's gate / up projections run their backward after the MLP's saved tail is freed (down_proj's
        # input, the activation's and the product's), unfused as fused (DequantBytes.after_tail); down_proj's own
        # moment beside the whole set. Measured with the tracer, --grid hqq: qwen2.5-0.5b (gate/up and down_proj of
        # one size) all-linear with checkpointing, the backward's peak at down_proj's adapter, +6.7 % with gate/up's
        # dequantized weight counted beside the tail
        gate_up = m.mlp == "gated" and any(lin.module in ("gate_proj", "up_proj", "gate_up_proj") for lin in quantized
                                           if lin.in_features * lin.out_features == numel)
        down = down_shape if gate_up else (0, 0)
        after = bool(down[0])
        # down_proj's adapter copies its input to an adapter dtype other than the compute dtype (peft lora Linear
        # `_cast_input_dtype`; not under autocast, where lora_A saves autocast's own cast): that copy and lora_A's
        # output are freed before HQQ's backward of down_proj (measured with the tracer, --grid hqq: tinyllama-1.1b
        # all-linear with checkpointing, +1.7 % with them kept)
        a = dtype_bytes(t.adapter_dtype)
        adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
        lora_down = (a * (down[0] + t.lora_rank) if after and "down_proj" in adapted and a != c
                     and not recipe.autocast and not _norms.autocast16(t, recipe) else 0)
        return (DequantBytes(q.weight, 0, 0, c, shapes, before_out=extra),
                DequantBytes(q.weight, 0, extra, c, shapes, after_tail=after,
                             down=(*down, _hqq_extra(t, c, *down) if after else 0), down_lora_t=lora_down))
    if t.quant_bits != 4:
        # bitsandbytes 0.50 autograd/_functions.py MatMul8bitLt.backward: `CB = state.CB.to(dtype_A, copy=True)
        # .mul_(state.SCB.unsqueeze(1).mul(1.0 / 127.0))`: the scale column (fp32, out) beside the weight's copy,
        # freed before grad_A; forward: every Linear's int8 matmul (DequantBytes.int8)
        scale = 4 * max(d_out for _, d_out, _ in shapes)
        every = tuple(sorted({(lin.in_features, lin.out_features, lin.out_features if gated_up
                               and lin.module == "up_proj" else 0) for lin in quantized}))
        # (over an fp32 load under autocast, qlora_fp32.py int8_active: dtype_A is fp32 for the largest, the MLP's,
        # Linears: the weight dequantized to fp32; measured with the tracer's live tensors, --grid qlora8-fp32load:
        # tinyllama cut to 4 layers b2 s512, a (2048, 5632) fp32 weight at down_proj's grad_A)
        w = 4 if _qlora_fp32.int8_active(t, recipe) else c
        return (DequantBytes(compute=c, shapes=every, int8=recipe.compute),
                DequantBytes(w * numel, 0, scale, c, shapes, after_tail=fused, down=(*down, 4 * down[1])))
    if _qlora_fp32.active(t, recipe):  # the fp32 weight and its 16-bit copy (DequantBytes.fp32_compute)
        # down_proj's adapter saves (peft lora.bnb.Linear4bit: after the base layer's matmul) autocast's 16-bit cast of
        # its dropped input, the dropout mask and lora_A's output: not made yet at the rerun's dequantized matmul
        adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
        i = m.intermediate_size or 0
        down_lora = (c * i + (i if t.lora_dropout > 0 else 0) + c * t.lora_rank) if "down_proj" in adapted else 0
        # (beside down_proj's matmul, checkpointed or not, the MLP's fp32 normed input, the decoder layer's local:
        # measured with the tracer's live tensors, --grid qlora-fp32load: tinyllama cut to 4 layers b2 s512, the
        # forward's peak at the top layer's down_proj mm, -1.25 % without it)
        return (DequantBytes((4 + c) * numel, 2 * nested, 0, c, shapes, beside_in=i, beside_t=4 * (m.hidden_size or 0),
                             down_lora_t=down_lora, fp32_compute=True),
                DequantBytes((4 + c) * numel, 0, nested, c, shapes, fp32_compute=True))
    backward = DequantBytes(c * numel, 0, nested, c, shapes, after_tail=fused,
                            down=(*down, 4 * ceil_div(down[0] * down[1], 64) if nested else 0))
    fp32_act = _norms.autocast16(t, recipe) and m.mlp != "gated" and m.hidden_act in ("gelu_new", "gelu_fast")
    h, i = m.hidden_size or 0, m.intermediate_size or 0
    parallel16 = _norms.autocast16(t, recipe) and m.mlp != "gated" and not fp32_act and m.parallel_residual \
        and m.norms_per_layer >= 2 and m.norm == "layernorm"
    return DequantBytes(c * numel, 2 * nested, 0, c, shapes, beside_in=i, beside_fp32=fp32_act,
                        beside_t=c * i + (4 + 3 * c) * h if parallel16 else 0), backward


def _prefix_terms(m: ModelSpec, t: TrainingSpec, c: int, d: int, n_heads: int, kv_dim: int,
                  gqa: bool, scores_per_key: int) -> list[Term]:
    """Prefix tuning (peft_model.py get_prompt): each layer's cache starts with `virtual_tokens` keys and values,
    and attention concatenates the new ones after them (DynamicLayer.update, torch.cat): the keys and values
    attention saves are virtual_tokens positions longer, and eager's scores (`scores_per_key` bytes per query
    token and key) have virtual_tokens more columns."""
    if t.method != "prefix-tuning":
        return []
    n = t.virtual_tokens
    out: list[Term] = []
    if m.fused_qkv:
        # A fused qkv projection (GPT-2 c_attn, Phi-3 qkv_proj): q is a view of its output, which stays saved
        # whole, while k and v are now the cache's concatenations: k and v's share of it is saved beyond them.
        out.append(Term("prefix: fused qkv output kept by the q view", c * 2 * kv_dim))
    if t.attention == "sdpa":
        # The prefix makes a mask necessary (query and key lengths differ), and with a mask transformers'
        # sdpa_attention.py use_gqa_in_sdpa is false: repeat_kv copies k and v to every query head first.
        # Memory-efficient sdpa (flash takes no mask) saves the mask converted to q's dtype, per layer
        # (attention.cpp convert_boolean_attn_mask; its last dimension padded to a multiple of 8 is ignored).
        width = n_heads * d if gqa else kv_dim
        return out + [Term("prefix: k, v repeated to every head (sdpa with a mask)", c * 2 * (width - kv_dim)),
                      Term("prefix keys and values (saved by sdpa)", 0, per_sample=c * 2 * width * n),
                      Term("prefix: attention mask in the compute dtype (memory-efficient sdpa)", c * n, c)]
    kv_saved = 2 * n_heads * d if gqa else 2 * kv_dim
    return out + [Term("prefix keys and values (eager)", 0, per_sample=c * kv_saved * n),
                  Term("eager scores over the prefix", scores_per_key * n)]


def _mla_terms(m: ModelSpec, t: TrainingSpec, c: int, linear_input: Callable[..., bool]) -> list[Term]:
    """Multi-head latent attention's saved tensors (DeepseekV3Attention, modeling_deepseek_v3.py).

    x feeds q_a_proj (or q_proj) and kv_a_proj_with_mqa: one saved input. Each latent goes through an
    RMSNorm and an up-projection (q_b_proj, kv_b_proj) that saves the normed latent; RoPE applies to the
    qk_rope_head_dim slices of q (per head) and of the shared key; SDPA saves q and k of
    nope + rope per head, v and the output of v_head_dim per head, and the fp32 logsumexp.
    `linear_input` appends the Linear-input terms to the caller's list (LoRA-aware).
    """
    assert m.hidden_size is not None and m.num_attention_heads is not None and m.kv_lora_rank is not None
    assert m.qk_nope_head_dim is not None and m.qk_rope_head_dim is not None and m.v_head_dim is not None
    n, rope, v = m.num_attention_heads, m.qk_rope_head_dim, m.v_head_dim
    qk = m.qk_nope_head_dim + rope
    out: list[Term] = []
    down = ("q_a_proj", "kv_a_proj_with_mqa") if m.q_lora_rank else ("q_proj", "kv_a_proj_with_mqa")
    linear_input("q/kv down-projection", down, m.hidden_size)
    if m.q_lora_rank:
        out += _norm_terms("q_a_layernorm", m, c, c, m.q_lora_rank)
        linear_input("q_b_proj", ("q_b_proj",), m.q_lora_rank)
    out += _norm_terms("kv_a_layernorm", m, c, c, m.kv_lora_rank)
    linear_input("kv_b_proj", ("kv_b_proj",), m.kv_lora_rank)
    # RoPE on q_rot and the shared k_rot saves nothing per layer (cos/sin need no gradient; see the
    # standard attention branch above).
    if t.attention != "eager":
        out.append(Term("sdpa q, k, v, out, logsumexp", c * (2 * n * qk + 2 * n * v) + 4 * n))
        if masked_sdpa(t):
            out.append(packed_mask_term(c))
    else:
        out.append(Term("eager q, k, v", c * (2 * n * qk + n * v)))
        out.append(Term("eager scores (fp32 softmax + 16-bit probs)", 0, (4 + c) * n))
    linear_input("o_proj", ("o_proj",), n * v, already_saved=t.attention != "eager")
    return out


def _act_saved_bytes(act: str, c: int, autocast: bool) -> int:
    """Bytes the activation function saves per element of the MLP width.

    gelu_new / gelu_fast (transformers activations.py NewGELUActivation): 0.5·x·(1 + tanh(√(2/π)·(x +
    0.044715·x³))); autograd saves x (by pow), tanh's output, 0.5·x and 1 + tanh (by the final mul).
    Under CUDA autocast pow is on the fp32 list, so x is saved as an fp32 copy and everything computed
    from x³ (tanh, 1 + tanh) is promoted to fp32; only 0.5·x stays 16-bit (autocast_mode.cpp lists).
    """
    n = ACT_SAVED_TENSORS.get(act, 1)
    if autocast and act in ("gelu_new", "gelu_fast"):
        return 4 + 4 + c + 4
    return n * c


def _gpt_oss_moe_terms(m: ModelSpec, c: int, h: int, live: bool, trainable: bool) -> list[Term]:
    """gpt-oss's MoE block as transformers 5.24 runs it in training: GptOssTopKRouter, then GptOssExperts through
    the default experts implementation, grouped_mm (modeling_utils.py get_correct_experts_implementation;
    integrations/moe.py grouped_mm_experts_forward), on the k x tokens (token, expert) pairs sorted by expert.
    Saved per token (checked with saved_tensors_hooks on a tiny GptOssForCausalLM, bf16, full and LoRA):
    - router: F.linear's logits (E, 16-bit) kept by topk, topk's int64 indices (k), the top-k softmax output (k);
    - int64 gather indices of k: perm // k (the hidden-states gather), perm (the routing weights), inv_perm (the
      un-sort), and expert_ids_g (the per-row bias gather) when the biases train;
    - the up grouped_mm's output (2i, interleaved gate/up) kept by the two clamps of GptOssExperts._apply_gate,
      then the clamped gate, sigmoid(alpha * gate), up + 1 and their product glu (4 x i): the clamped SwiGLU
      (swiglu_alpha 1.702, swiglu_limit 7.0) written as torch ops;
    - the down grouped_mm's output (hidden) and the routing weight (1), saved by `proj_out * weights`;
    - with trainable experts, the grouped_mm inputs for the weight gradients: the gathered hidden states (hidden)
      and the gated output (i)."""
    assert m.hidden_size is not None
    if not (live or trainable):
        return []
    e, k, i = m.num_experts, m.experts_per_token, m.moe_intermediate_size or m.intermediate_size or 0
    out = [Term("router logits, top-k indices and softmax", c * e + 8 * k + c * k),
           Term("expert routing indices (int64)", 8 * k * (4 if trainable else 3)),
           Term("experts gate_up output (clamp inputs)", k * c * 2 * i),
           Term("experts clamped SwiGLU (gate, sigmoid, up + 1, glu)", k * 4 * c * i),
           Term("experts down output, routing weight", k * c * (h + 1))]
    if trainable:
        out.append(Term("experts grouped_mm inputs (gathered hidden, gated output)", k * c * (h + i)))
        # GptOssTopKRouter's F.linear keeps the normed 16-bit input for its weight's gradient (measured with the
        # tracer's live tensors at the loss backward, --grid gptoss full without checkpointing: one (tokens, hidden)
        # bf16 norm output per layer beyond the terms above, -1.1 % without)
        out.append(Term("router input (its weight's gradient)", c * h))
    return out


def input_grad_drop(m: ModelSpec, t: TrainingSpec, recipe: Recipe,
                    layer_fn: Callable[..., LayerActivations] = layer_activations) -> tuple[int, int]:
    """What a frozen layer saves less, per token and per token x sequence, when its input needs no gradient: the
    bottom layer of a LoRA run without checkpointing, below its first adapter (layer_activations input_grad)."""
    top = layer_fn(m, t, recipe, trainable_weights=False)
    bottom = layer_fn(m, t, recipe, trainable_weights=False, input_grad=False)
    return (sum(x.per_token for x in top.terms) - sum(x.per_token for x in bottom.terms),
            sum(x.per_token_seq for x in top.terms) - sum(x.per_token_seq for x in bottom.terms))


def _llama4_moe_terms(m: ModelSpec, c: int, live: bool, scores_live: bool, trainable: bool,
                      adapter_bytes: int = 0, checkpointed: bool = False) -> tuple[list[Term], int, int]:
    """Llama4TextMoe's saved tensors per token (transformers modeling_llama4.py), with its forward and backward
    temporaries beyond them. Every expert runs every token (Llama4TextExperts: torch.bmm over (E, tokens, hidden)):
    Llama4Router's topk indices (int64, saved by topk and scatter_) and the fp32 sigmoid output; routed_in =
    hidden.repeat(E, 1) * scores (mul saves the repeated copy when the scores need a gradient and the transposed
    scores' copy when the input does); bmm with gate_up_proj (E, hidden, 2i) saves its input only for a trained
    weight; silu saves gate, a view that keeps the whole (E, tokens, 2i) gate_up alive, `up * act` saves up (the
    same storage) and act (E x i); the down bmm saves the product only for a trained weight. `live`: the MoE
    input needs a gradient; `scores_live`: the router's scores do (a live input, or a trained router);
    `adapter_bytes`: the adapter dtype's bytes when LoRA adapts the shared expert's gate or up projection, else 0;
    `checkpointed`: the layer is rerun in backward (gradient checkpointing)."""
    e, k, h = m.num_experts, m.experts_per_token, m.hidden_size or 0
    i = m.moe_intermediate_size or m.intermediate_size or 0
    terms: list[Term] = []
    if scores_live:
        terms.append(Term("llama4 router (topk int64 indices, fp32 sigmoid scores)", 8 * k + 4 * e))
        terms.append(Term("llama4 routed copies (hidden repeated to every expert, saved by the score mul)", e * c * h))
    if live:
        terms.append(Term("llama4 scores transposed (saved by the score mul)", e * c))
    if live or trainable:
        terms.append(Term("llama4 experts gate_up (E x 2i) and act (E x i)", e * c * 3 * i))
    if trainable:
        terms.append(Term("llama4 experts bmm inputs (scaled copies, gated products)", e * c * (h + i)))
    # forward, at the down bmm (measured with the tracer, --grid llama4: the live tensors at the forward's peak): its
    # (E, tokens, hidden) output beside, when the experts are frozen and so save neither, the scaled copies (still
    # referenced by Llama4TextExperts.forward's hidden_states) and the gated product
    fwd = e * c * (h + (0 if trainable else h + i))
    # backward, beyond the saved set: the larger of two moments (measured with the tracer, --grid llama4, the live
    # tensors at the backward's peak). At `up * act`'s backward: the product's gradient from the down bmm and the
    # gradients of up and act (3 x E x i; a trained down_proj has released the saved product by then). At the gate_up
    # bmm's backward (fitted at two expert counts and widths of the tiny configs): the routed output's gradient
    # materialised from the sum's expand, the routed input's gradient and, for frozen experts, the score mul's
    # gradient of the repeated copies (with trained experts the scaled copy is saved instead): 3 (2) x E x hidden,
    # and a quarter of the expert width per expert. Without checkpointing autograd has freed the saved gate_up and act
    # (E x 3i) by the second moment. A checkpointed layer's rerun of frozen experts keeps them to the layer's end
    # (torch.utils.checkpoint; fitted on the LoRA cases with checkpointing). Trained experts free their saved tensors
    # as each node's backward unpacks them (checkpoint.py unpack_hook drops the recomputed entry's handle), with and
    # without checkpointing alike: measured with the tracer, --grid llama4 tiny Maverick full with checkpointing b2
    # s256, the saved product gone at `up * act`'s backward and gate_up / act gone at the gate_up bmm's; counting them
    # kept made the checkpointed estimate +3.8 % and put it above the uncheckpointed one at Maverick's own widths
    # (llama-4-maverick full bf16 b1 s2489: 4,819.9 GB with, 4,814.7 GB without). Beside either, ~4 (2 when trained)
    # hidden-wide gradients per token (residual, normed input, router and shared expert outputs).
    kept = checkpointed and not trainable
    freed = 0 if kept else 3 * i
    at_glu = 3 * i - (i if trainable else 0)
    at_input = (2 if trainable else 3) * h + i // 4 - freed - (i + h if trainable else 0)
    bwd = e * c * max(at_glu, at_input, 0) + (2 if trainable else 4) * c * h
    if adapter_bytes:  # LoRA on the shared expert's gate / up: lora_A's input gradient in the adapter dtype, cast back
        bwd += (adapter_bytes + c) * h
    return terms, fwd, bwd


def _expert_bytes(t: TrainingSpec, recipe: Recipe) -> int:
    """Bytes per element of the 3-D expert weights, the dtype grouped_mm runs in (integrations/moe.py _grouped_mm
    casts its input to the weight's dtype; grouped_mm is not autocast-enabled): the load dtype, which QLoRA leaves
    unquantized (bitsandbytes issue #1849) and peft's kbit preparation casts to fp32."""
    w = dtype_bytes(recipe.weight)
    return 4 if t.method == "qlora" and t.kbit_prep and w < 4 else w


def _routing_weight_bytes(m: ModelSpec, c: int, eb: int) -> int:
    """The bytes of grouped_mm_experts_forward's `proj_out * sample_weights` (integrations/moe.py): Mixtral's and
    DeepSeek's routers return fp32 top-k weights (softmax(logits.float()), sigmoid scores), which promote the
    weighted copy to fp32; Qwen2-MoE's and Qwen3-MoE's cast them back to the router logits' dtype
    (`router_top_value.to(router_logits.dtype)`, modeling_qwen2_moe.py / modeling_qwen3_moe.py), so it stays 16-bit."""
    # (Jamba's JambaTopKRouter too: `top_k_weights.to(hidden_states.dtype)`, modeling_jamba.py; GraniteMoeHybrid's
    # GraniteMoeHybridTopKRouter: `softmax(top_k_logits).type_as(hidden_states)`, modeling_granitemoehybrid.py)
    return max(eb, c) if m.family in ("qwen2_moe", "qwen3_moe", "jamba", "granitemoehybrid") else 4


def routed_backward_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """DeepSeek's MoE backward at the routed multiply (integrations/moe.py `proj_out * sample_weights`), per token: the
    un-permute's gradient (index_put into zeros) and mul's two gradients in the routing weights' fp32, and the cast to
    the experts' dtype, four (k x tokens, hidden) tensors (measured with the tracer's live tensors, --grid moe
    deepseek_v3 full b2 s256: at the peak's _to_copy; -4 to -7 % under on the DeepSeek toys' LoRA runs without it)."""
    if not (deepseek_router(m) and m.num_experts and fused_experts(m)) or m.hidden_size is None:
        return 0
    eb = _expert_bytes(t, recipe)
    # (the routed copies are expert_width wide: Nemotron 3 Super's latent width)
    return m.experts_per_token * expert_width(m) * (3 * _routing_weight_bytes(m, dtype_bytes(recipe.compute), eb) + eb)


def latent_forward_bytes(m: ModelSpec, c: int) -> int:
    """Nemotron 3 Super's latent MoE, per token, while the routed experts run: fc1_latent_proj's output (the
    experts' input, moe_latent_size wide, the compute dtype), alive until NemotronHMoE.forward rebinds
    hidden_states to the experts' output (modeling_nemotron_h.py); 0 without a latent width."""
    return c * m.moe_latent_size if m.moe_latent_size else 0


def deepseek_router(m: ModelSpec) -> bool:
    """DeepSeek's TopkRouter: fp32 F.linear on an fp32 copy of the input, sigmoid (V3) scores; Nemotron-H's
    NemotronHTopkRouter is V3's line for line (modeling_nemotron_h.py: the bias-corrected group top-k, the gather, the
    norm_topk_prob renormalization, the routed_scaling_factor)."""
    return m.family in ("deepseek_v2", "deepseek_v3") or (m.family == "nemotron_h" and bool(m.num_experts))


def router_forward_bytes(m: ModelSpec) -> int:
    """DeepSeek's router temporaries per token beside the saved set, at their largest (masked_fill's output), all
    (tokens, E) unless named (modeling_deepseek_v3.py DeepseekV3TopkRouter.forward): the fp32 router_logits (returned,
    alive until DeepseekV3MoE.forward drops them), the sigmoid scores (saved), `scores + e_score_correction_bias`, the
    group mask expanded and reshaped to (tokens, E) in fp32, its bool copy, the inverted copy and the masked scores
    (the per-group top-2 and group top-k tensors are (tokens, n_group) wide: freed by then). V2's
    group_limited_greedy (modeling_deepseek_v2.py) takes softmax scores and each group's max, without the bias
    (one tensor fewer); its greedy top-k only the logits and the scores. The group selection's graph is freed with
    the discarded top-k values: nothing of it is saved (only the indices are used)."""
    if not deepseek_router(m):
        return 0
    e = m.num_experts
    if m.family in ("deepseek_v3", "nemotron_h"):  # (NemotronHTopkRouter: V3's lines, grouped or not)
        return (4 * 5 + 2) * e
    return (4 * 4 + 2) * e if m.expert_groups > 1 else 4 * 2 * e


def _expert_nodes(h: int, i: int, gated: bool, inputs: bool) -> tuple[int, ...]:
    """Elements per routed copy that each autograd node of grouped_mm_experts_forward saves, in forward order
    (transformers integrations/moe.py): the up grouped_mm its input (h, only when `inputs`: the experts' weights
    need gradients), then gated (_default_apply_gate) `act_fn(gate)` the gate chunk (i) and `* up` act(gate) and the
    up chunk (2 x i), or ungated relu2 its output (i); the down grouped_mm its input (i, when `inputs`); `proj_out *
    sample_weights_g` the down output (h; the routing weights are the routing term's)."""
    up_in, down_in = ((h,), (i,)) if inputs else ((), ())
    return (*up_in, *((i, 2 * i) if gated else (i,)), *down_in, h)


def _fused_moe_terms(m: ModelSpec, t: TrainingSpec, c: int, eb: int, live: bool, trainable: bool,
                     adapted: set[str]) -> tuple[list[Term], int, int, int, int]:
    # `adapted`: the module names of params.fused_moe_targets' rows in this run (experts.gate_up_proj, ...)
    """A routed MoE block as transformers 5.24 trains it (modeling_mixtral.py MixtralSparseMoeBlock, Qwen2/3-MoE,
    DeepSeek-V2/V3): the router, then the 3-D expert Parameters through the default experts implementation,
    grouped_mm (integrations/moe.py grouped_mm_experts_forward) on the k x tokens (token, expert) pairs sorted by
    expert. Returns (saved terms, forward and backward temporaries per token, the backward's per-layer bytes, and the
    forward temporaries per token of a checkpointed rerun at the routed output's un-permute).

    Saved per token (measured with the tracer's live tensors at the loss, tiny Mixtral / Qwen-MoE configs):
    - router: softmax's fp32 output (E) and topk's int64 indices (k); Mixtral's and Qwen3-MoE's (norm_topk_prob)
      in-place renormalization keeps the top-k values and their sum (fp32);
    - the int64 sort permutation, its `// k` gather index and the inverse permutation (k each), the gathered
      fp32 routing weights (k);
    - per routed copy: the up grouped_mm's output (2i, kept by the gate's activation and the product), the
      activation's output (i) and the down grouped_mm's output (h, kept by `* routing weight`), in the experts'
      dtype;
    - when the experts need weight gradients (full fine-tuning, or peft's ParamWrapper on them), grouped_mm also
      keeps its inputs: the gathered hidden states (h) and the gated product (i) per routed copy;
    - peft 0.21's ParamWrapper (tuners/lora/layer.py, _LoraFactorsProxy): each forward registers a
      parametrization that builds W + scaling x lhs @ rhs with one baddbmm, a full-size copy of the expert stack
      that grouped_mm keeps for its input gradient (per layer, whatever the batch), plus lhs / rhs cast to the
      weights' dtype; the router's ParamWrapper adds its delta to the (E, h) weight and F.linear keeps its input.
    """
    assert m.hidden_size is not None and m.intermediate_size is not None
    # h: the width the routed experts read and write (params.expert_width: Nemotron 3 Super's moe_latent_size, the
    # output of fc1_latent_proj; else hidden_size); the router reads the hidden states, hidden_size wide
    hid, h, e, k = m.hidden_size, expert_width(m), m.num_experts, m.experts_per_token
    i = m.moe_intermediate_size or m.intermediate_size
    r, a = t.lora_rank, dtype_bytes(t.adapter_dtype)
    lora_up, lora_down = "experts.gate_up_proj" in adapted, "experts.down_proj" in adapted
    lora_router = "router" in adapted
    experts_grad = trainable or lora_up or lora_down
    if not (live or experts_grad or lora_router):
        return [], 0, 0, 0, 0
    # DeepseekV3TopkRouter's `topk_weights /= denominator` (norm_topk_prob) keeps them too (measured with the tracer's
    # live tensors, --grid moe deepseek_v3 full: a (tokens, k) fp32 clone and the (tokens, 1) sum)
    # (Nemotron-H: as its norm_topk_prob says, ModelSpec.topk_unnormalized; without it `topk_weights *
    # routed_scaling_factor` saves nothing: a Python scalar)
    renorm = m.family in ("mixtral", "qwen3_moe", "deepseek_v3") \
        or (m.family == "nemotron_h" and not m.topk_unnormalized)
    rw = _routing_weight_bytes(m, c, eb)
    # Nemotron-H's NemotronHExperts (use_experts_implementation(has_gate=False)): up (i wide), relu2 = square(relu(x)):
    # relu saves its output, which square saves as its input (one tensor), then down; no gate
    gated = m.mlp == "gated"
    routed = 3 * i + h if gated else i + h
    out = [Term("router sigmoid scores (fp32), top-k indices" + (", renormalized weights" if renorm else "")
                if m.family == "nemotron_h" else
                "router softmax (fp32), top-k indices", 4 * e + 8 * k + (4 * k + 4 if renorm else 0))
           if m.family != "granitemoehybrid" else
           # GraniteMoeHybridTopKRouter (modeling_granitemoehybrid.py): `F.linear(h, weight).float()`, topk of the fp32
           # logits (saves its int64 indices), then softmax over the k chosen only (saves its fp32 output, k wide)
           Term("router top-k indices, softmax over the top k (fp32)", 8 * k + 4 * k),
           Term("expert routing indices (int64 x 3), gathered routing weights", 3 * 8 * k + rw * k),
           Term("experts gate_up output, activation output, down output" if gated
                else "experts relu output (relu2's one saved tensor), down output", k * eb * routed,
                nodes=tuple(k * eb * x for x in _expert_nodes(h, i, gated, experts_grad)))]
    if experts_grad:
        # (its two nodes are in the term above's `nodes`, where they run)
        out.append(Term("experts grouped_mm inputs (gathered hidden, gated product)", k * eb * (h + i), nodes=(0,)))
    # GraniteMoeHybridMoE's router reads a view of the normed input that shared_mlp's input_linear saves for its own
    # weight gradient (one storage: measured with saved_tensors_hooks over one layer, tests/test_granitemoehybrid.py)
    if (trainable or lora_router) and not (m.family == "granitemoehybrid" and trainable):
        # DeepSeek's routers run `F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))`
        # (modeling_deepseek_v3.py DeepseekV3TopkRouter, _v2.py DeepseekV2TopkRouter): the saved input is fp32
        out.append(Term("router input (its weight's gradient)", (4 if deepseek_router(m) else c) * hid))
    merged = (eb * e * 2 * i * h if lora_up else 0) + (eb * e * h * i if lora_down else 0)
    if merged:
        casts = (e * 2 * r * (2 * i + h) if lora_up else 0) + (e * r * (i + h) if lora_down else 0)
        out.append(Term("LoRA merged expert weights (W + B·A per forward) and factor casts", 0,
                        const=merged + (eb * casts if a != eb else 0)))
    if lora_router:
        out.append(Term("LoRA router merged weight", 0, const=eb * e * h))
    # Forward beside the saved set: after the down projection, `proj_out * routing weight` (fp32 for Mixtral
    # and DeepSeek: _routing_weight_bytes), its un-permuted copy and the per-token sum, beside the gathered hidden
    # states (alive in grouped_mm_experts_forward until it returns; saved only with expert gradients).
    # (Nemotron 3 Super: fc1_latent_proj's output, the experts' input, alive beside them: latent_forward_bytes)
    gathered = (0 if experts_grad else k * eb * h) + latent_forward_bytes(m, c)
    # (ungated relu2: at square, the up output and square's output beside relu's saved one)
    fwd = max((1 if gated else 2) * k * eb * i + gathered, 2 * rw * k * h + rw * h + gathered, router_forward_bytes(m))
    # Backward: the incoming gradient's fp32 routed copies, then grouped_mm's input gradients (k x h, k x 2i)
    # beside them; with expert weight gradients, a full-size gradient of the merged stack per projection.
    # Before them, the un-permute's backward (`weighted_out[inv_perm]`: zeros of (k x tokens, hidden) and index_put's
    # out-of-place result) runs beside the sum's expanded gradient made contiguous for the view: three routed
    # copies in the routing weight's dtype (measured with the tracer, --grid moe DeepSeek-V3 toys LoRA all-linear
    # with checkpointing, the peak at aten.index_put: -3.9 % without; it outweighs the grouped_mm gradients when
    # the expert is narrow against the hidden size, as DeepSeek-V3's 2,048 against 7,168).
    bwd = k * max(3 * rw * h, rw * h + eb * (h + (2 if gated else 1) * i))
    # The merged stack's gradients: the down projection's comes first (the trace's peak at its grouped_mm, both
    # merged stacks still alive); by the gate_up gradient the down stack and its gradient are freed.
    wgrad = eb * e * h * i if lora_down else eb * e * 2 * i * h if lora_up else 0
    # A checkpointed layer's rerun, at `weighted_out[inv_perm]` (integrations/moe.py): the weighted copy and its
    # un-permuted one, beside the gathered hidden states; the per-token sum comes after the weighted copy is rebound
    # (freed). Without a saved tensor after it the rerun stops there (checkpoint.py's early stop), and the backward
    # that started it holds the sum's expanded gradient (made contiguous, the routing weights' dtype) in place of
    # the un-permuted copy (measured with the tracer's live tensors: Mixtral LoRA q,k,v,o with checkpointing b2 s256,
    # the peak at the rerun's arange; Qwen1.5-MoE narrow, the peak at the un-permute's aten.index). Beside them, the
    # sorted expert ids (int64, k) and the router logits the block binds to `_` (`_, routing_weights, selected_experts
    # = self.gate(...)`: MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock, Qwen3MoeSparseMoeBlock), alive until it
    # returns, in the compute dtype (-1.3 to -1.7 % on the narrow Qwen1.5-MoE toys, 48 experts, without them).
    logits = c * e if m.family in ("mixtral", "qwen2_moe", "qwen3_moe") else 0
    rerun = max((1 if gated else 2) * k * eb * i + gathered, 2 * rw * k * h + gathered, router_forward_bytes(m)) \
        + 8 * k + logits
    return out, fwd, bwd, wgrad, rerun


def _mlp_terms(m: ModelSpec, c: int, h: int, i: int, trainable: bool, tokens_per_token: int,
               prefix: str, autocast: bool = False) -> list[Term]:
    """MLP saved tensors; `trainable` adds the Linear inputs (for expert MLPs, which have no LoRA here)."""
    k = tokens_per_token
    act_bytes = _act_saved_bytes(m.hidden_act, c, autocast)
    out: list[Term] = []
    if m.mlp == "gated":
        # LlamaMLP: down(act(gate(x)) * up(x)): act saves gate's output; mul saves act(gate) and up;
        # down saves the product when trainable.
        out.append(Term(f"{prefix}mlp act input", k * act_bytes * i))
        out.append(Term(f"{prefix}mlp act output, up", k * 2 * c * i))
    else:
        # fc1 -> act -> fc2: act saves its input (or its Python-formula intermediates).
        out.append(Term(f"{prefix}mlp act", k * act_bytes * i))
    if trainable:
        out.append(Term(f"{prefix}down_proj input", k * c * i))
    if prefix and trainable:
        out.append(Term(f"{prefix}mlp input", k * c * h))
    return out


@dataclass(frozen=True, slots=True)
class HeadActivations:
    """The final norm, LM head and cross-entropy loss, in bytes per token."""

    saved: int  # alive from the loss to the start of backward
    forward_transient: int  # logits and their fp32 copy while the loss is computed
    backward_transient: int  # gradient temporaries of log_softmax at the start of backward


def head_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> HeadActivations:
    """Loss path of transformers' ForCausalLMLoss: logits.float(), log_softmax (saved), nll_loss."""
    assert m.hidden_size is not None and m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    residual = _norms.norm_input_bytes(m, t, recipe, 4 if recipe.autocast or recipe.compute == "fp32" else c)
    h, v = m.hidden_size, m.vocab_size
    # The final norm's weight is frozen under LoRA/QLoRA: no normalized copy is saved (see _norm_terms).
    norm_trained = _norm_weight_trained(m, t, "final", head_trainable)
    saved = sum(x.per_token for x in _norm_terms("final norm", m, c, residual, h, True, norm_trained)) \
        if m.final_norm else 0
    if m.family == "olmo" and not m.final_norm:  # OLMo's weightless final norm (see layer_activations)
        saved += 4 * h + 8
    if head_trainable:
        saved += c * h  # lm_head saves its input to compute its weight gradient
    saved += 4 * v  # log_softmax saves its fp32 output (aten log_softmax backward uses the result)
    if m.family == "gemma2":
        # final_logit_softcapping (Gemma2ForCausalLM.forward: logits / cap, tanh, * cap; 30.0 in every published
        # config): tanh saves its 16-bit vocab-wide output.
        saved += c * v
    if t.loss == "liger-cross-entropy":
        # Liger's cross-entropy (liger_kernel/ops/cross_entropy.py @ead96b61 LigerCrossEntropyFunction, patched in as
        # nn.functional.cross_entropy by monkey_patch.py / axolotl's liger_cross_entropy) runs on ForCausalLMLoss's
        # logits.float(): the kernel writes the logits' gradient into that fp32 buffer in forward and saves it
        # (save_for_backward(_input.detach())), so the saved 4 B x vocab per token is the upcast itself, and no
        # log_softmax output exists. Forward: the 16-bit logits beside it (none in fp32: .float() is a no-op), plus
        # per row the loss_1d (fp32, the input's dtype), the target != ignore mask (1 B) and target * mask (int64).
        # Backward: the saved buffer is handed back as the gradient (element_mul_kernel scales it in place);
        # ToCopyBackward casts it to the 16-bit logits' gradient while it is still alive.
        low = c if c != 4 else 0
        return HeadActivations(saved, low * v + 4 + 1 + 8, low * v)
    # Forward: the 16-bit logits and their fp32 upcast coexist while log_softmax runs; in fp32 the
    # upcast is the same tensor.
    fwd = (c if c != 4 else 0) * v + 4 * v
    if _upcast.active(t, recipe):
        # LLaMA-Factory's fp32 hook on lm_head (memory/upcast.py): the 16-bit logits live only inside the hook, beside
        # their fp32 copy, before log_softmax's saved output exists; then the fp32 logits beside that output
        # (`.float()` returns them). Relative to the saved set: the larger of c and 4 B per vocabulary entry.
        fwd = max(c, 4) * v
    # Backward: nll_loss's fp32 gradient and log_softmax's fp32 input gradient, next to the saved output.
    bwd = 8 * v
    return HeadActivations(saved, fwd, bwd)


def head_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> tuple[Term, ...]:
    """The named parts of `head_activations(...).saved` (bytes per token), for `vramcalc explain`."""
    assert m.hidden_size is not None and m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    residual = _norms.norm_input_bytes(m, t, recipe, 4 if recipe.autocast or recipe.compute == "fp32" else c)
    trained = _norm_weight_trained(m, t, "final", head_trainable)
    terms = _norm_terms("final norm", m, c, residual, m.hidden_size, True, trained) if m.final_norm else []
    if m.family == "olmo" and not m.final_norm:
        terms.append(Term("final norm (weightless: fp32 input, mean, rstd)", 4 * m.hidden_size + 8))
    if head_trainable:
        terms.append(Term("lm_head input", c * m.hidden_size))
    terms.append(Term("Liger's fp32 logits, their gradient written in place" if t.loss == "liger-cross-entropy"
                      else "log_softmax output (fp32)", 4 * m.vocab_size))
    if m.family == "gemma2":
        terms.append(Term("final logit softcapping tanh output", c * m.vocab_size))
    return tuple(terms)
