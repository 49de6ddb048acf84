"""Preference training (TRL DPOTrainer, loss_type sigmoid or ipo): what DPO adds to a training step, in bytes.

Read from TRL 1.16 (trl/trainer/dpo_trainer.py, trl/trainer/utils.py, trl/kernels/chunked_logprob.py):

* One concatenated forward, not two passes: DataCollatorForPreference stacks the prompt+chosen and
  prompt+rejected sequences along the batch (2B rows) and pads them to the longest, and
  `_compute_loss` runs the policy once on them (`model(**model_kwargs, labels=labels, fused_lm_head=True)`).
  So the policy's step is a step of 2B sequences of the padded length.
* No logits: `add_fused_lm_head` gathers the N completion positions of the last hidden states
  (`hidden_states[mask]`, a copy of N × H) and `ChunkedLogProbFunction` projects them tile by tile into
  one `[min(N, 4096), 32768]` buffer folded into seven fp32 statistics per token; it saves the gathered
  hidden states, the int64 targets and two fp32 vectors. Backward accumulates fp32 gradients of the
  hidden states (N × H) and, when the head trains, of the head weight (V × H), then casts them.
  memory/loss.py `trl_head_bytes` models it; SFTTrainer uses the same head (`--loss trl`).
* The reference forward comes after the policy's, under `torch.no_grad()`: every saved activation of
  the policy is alive while the reference runs layer by layer (one layer's transient on top of the
  residual stream) and through its own fused head; its log-probs are summed per sequence and kept.
  The reference is a second frozen model in the policy's dtype (`ref_model_init_kwargs dtype =
  self.model.dtype`) unless the reference's own from_pretrained keywords name a dtype or bitsandbytes 4-bit
  (--ref-dtype, --ref-quant: reference_recipe, reference_weight_bytes), or, with peft, the policy itself inside
  `disable_adapter()` (no weights), or nothing when `precompute_ref_log_probs` computed its log-probs before
  training.
* The loss (sigmoid, ipo, and the other `loss_type`s) is arithmetic on 2B per-sequence numbers: none
  changes memory. `disable_dropout=True` (the default) zeroes dropout in both models.
* KTO (trl/trainer/kto_trainer.py, same fused head): unpaired completions, B rows. `_compute_loss` first
  runs the policy under no_grad on the KL rows (mismatched prompt/completion pairs of the same shape),
  then the policy's forward with gradients, then the reference on the KL rows and on the completions,
  under no_grad, one after the other: the reference moment is the DPO one on B rows; the first KL
  forward, with no saved activations under it, is lower.

* ORPO, CPO and SimPO (trl/experimental/orpo/orpo_trainer.py, trl/experimental/cpo/cpo_trainer.py; SimPO is
  CPOTrainer with loss_type simpo): no reference model. `concatenated_forward` stacks chosen and rejected (2B
  rows, padded to the longer) and runs `model(input_ids, attention_mask, use_cache=False)`: no labels, no
  fused head, so the full logits [2B, S, V] come back (`outputs.logits`), an fp32 copy of them when HF
  Trainer runs with bf16/fp16 on (accelerate's `convert_outputs_to_fp32` around the prepared forward, the
  compute-dtype logits freed after it). The NLL of the chosen half (ORPO always; CPO when cpo_alpha > 0,
  TRL's default, SimPO included) is `nn.CrossEntropyLoss` on `logits[:B, :-1].contiguous()`: a copy of
  B × (S - 1) × V and the log_softmax output it saves, in the logits' dtype (outside autocast). Then
  `get_batch_logps` calls `selective_log_softmax(logits[:, :-1], labels)`, on CUDA with Triton the fused
  kernel (trl/kernels/logprob_entropy.py): four fp32 vectors per position, and it saves the logits view
  itself, so the full logits stay alive until backward. Backward: the kernel's `empty_like` gradient
  (2B × (S - 1) × V), the slice's backward into zeros of [2B, S, V]; then the NLL's nll_loss and log_softmax
  gradients (B × (S - 1) × V each), its two slice backwards (zeros of [B, S, V], then [2B, S, V]) and the
  engine's out-of-place sum of the two [2B, S, V] gradients: three logits-sized buffers at once, the peak.

Verified with `vramcalc.trace` (trace/_preference.py runs this step on the transformers model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core.memory.int8 import int8_linear_bytes
from vramcalc.core.memory.loss import TOKEN_CHUNK, VOCAB_CHUNK, LossBytes
from vramcalc.core.params import head_dim, kv_heads
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

PREFERENCE = ("dpo", "ipo", "kto")
REFERENCE_FREE = ("orpo", "cpo", "simpo")  # TRL ORPOTrainer, CPOTrainer (sigmoid, simpo): full logits, no reference
# Per-position outputs the trainer asks of the policy's fused head, scattered back to [rows, S - 1] and alive
# until the loss is returned: DPOTrainer log_probs, entropy, mean_logits (fp32) and is_top1 (bool); KTOTrainer
# the first three (trl/trainer/kto_trainer.py add_fused_lm_head outputs).
POLICY_OUTPUT_BYTES = {"dpo": 4 + 4 + 4 + 1, "ipo": 4 + 4 + 4 + 1, "kto": 4 + 4 + 4}


def is_preference(t: TrainingSpec) -> bool:
    return t.objective in PREFERENCE


def torchtune_head(t: TrainingSpec) -> bool:
    """--dpo-head logits: torchtune's DPO recipes, the full fp32 logits and log_softmax over them, for the policy
    and the reference (memory/online_dpo.py head_bytes and ReferencePlan with `scale_copy`)."""
    return t.objective == "dpo" and t.dpo_head == "logits"


def is_reference_free(t: TrainingSpec) -> bool:
    return t.objective in REFERENCE_FREE


def computes_nll(t: TrainingSpec) -> bool:
    """The chosen half's NLL: ORPOTrainer always; CPOTrainer unless cpo_alpha == 0 (--no-chosen-nll)."""
    return t.objective == "orpo" or (t.objective in ("cpo", "simpo") and t.chosen_nll)


def logits_bytes(recipe: Recipe) -> int:
    """Bytes per element of the logits the trainer sees: fp32 under autocast (accelerate's prepared forward
    converts the outputs: accelerate/utils/operations.py convert_outputs_to_fp32), else the compute dtype."""
    return 4 if recipe.autocast else dtype_bytes(recipe.compute)


def logits_head_bytes(*, rows: int, seq: int, vocab: int, hidden: int, compute: int, logits: int,
                      head_trainable: bool, nll: bool, head_grad: int, head_copy: int = 0) -> LossBytes:
    """ORPO / CPO / SimPO after the final norm: the full logits and what log-softmax does with them (module
    docstring). `logits`: their bytes per element; `head_grad`: the head's gradient bytes, once computed;
    `head_copy`: the head weight's autocast cast, saved by its matmul, where the backward moments of
    memory/__init__.py do not count the autocast copies (under checkpointing)."""
    c, v, h, lb = compute, vocab, hidden, logits
    tokens = rows * seq
    shifted = rows * (seq - 1)  # positions with a next-token label
    full = tokens * v * lb  # outputs.logits [2B, S, V]
    half = (rows // 2) * (seq - 1) * v * lb  # the chosen half, shifted: CrossEntropyLoss's input copy and output
    # Saved: the logits (the Triton log-prob kernel saves its input view), the NLL's log_softmax output, the
    # kernel's int64 labels and fp32 log_z and expected logit; the head's input when the head trains.
    logits_saved = full + (half if nll else 0) + 8 * shifted + 8 * shifted
    saved = logits_saved + (c * h * tokens if head_trainable else 0)
    # Forward: the compute-dtype logits next to their fp32 copy (accelerate's conversion), or the NLL's
    # `.contiguous()` copy beside its log_softmax output; the kernel's fp32 outputs and the int64 label copies.
    conversion = tokens * v * c - (half if nll else 0) if lb != c else 0
    forward = max(conversion, half if nll else 0) + 16 * shifted + 16 * tokens
    # Backward: with the NLL, the two [2B, S, V] gradients of the logits and their sum (the engine adds the two
    # branches out of place); without it, the logits still saved next to the kernel's gradient.
    peak = 3 * full if nll else full + shifted * v * lb
    backward = max(peak - logits_saved, 0) + head_copy
    # The head's backward: the summed gradient, its cast back to the compute dtype, the head's input gradient.
    head_backward = full + (tokens * v * c if lb != c else 0) + 2 * c * h * tokens + head_grad + head_copy
    return LossBytes(saved, forward, backward, head_backward, False)


def policy_view(t: TrainingSpec) -> TrainingSpec:
    """The run as the policy's forward sees it: 2B sequences (chosen and rejected stacked) for dpo/ipo/reward."""
    return replace(t, batch_size=rows(t))


# Families whose residual / embedding dropout is functional, not an nn.Dropout module: trl/trainer/utils.py
# disable_dropout_in_model sets p = 0 on nn.Dropout modules only, so it keeps running (StarCoder2:
# modeling_starcoder2.py nn.functional.dropout(hidden_states, p=self.residual_dropout, training=self.training) in the
# attention and MLP and on the embeddings; --grid autocast-run2 traces it: the masks stay)
FUNCTIONAL_DROPOUT_FAMILIES = ("starcoder2",)


def without_dropout(m: ModelSpec) -> ModelSpec:
    """The model with dropout 0 (DPOConfig disable_dropout=True: disable_dropout_in_model on both models), but where
    the model's dropout is functional (FUNCTIONAL_DROPOUT_FAMILIES)."""
    return m if m.family in FUNCTIONAL_DROPOUT_FAMILIES else replace(m, dropout=0.0)


def rows(t: TrainingSpec) -> int:
    """Sequences in one forward: chosen and rejected stacked (2B) for dpo/ipo/reward; KTO's completions are
    unpaired (B rows, each with a KL row run separately under no_grad); sft: the batch."""
    # online-dpo: 2 completions per prompt (online_dpo_trainer.py _generate: prompt ids repeat(2, 1))
    return 2 * t.batch_size if t.objective in ("dpo", "ipo", "reward", "online-dpo", *REFERENCE_FREE) \
        else t.batch_size


def labelled_per_row(t: TrainingSpec) -> int:
    """Positions of one row whose shifted label is a completion token (the fused head's N per row)."""
    return min(t.seq_len - t.prompt_len, t.seq_len - 1)


def resolve_ref(t: TrainingSpec) -> str:
    """The reference DPOTrainer keeps: copy, adapters-off or precomputed ('' without one)."""
    if t.objective in ("grpo", "rloo"):  # grpo_trainer.py __init__: no reference when beta == 0.0
        if t.beta == 0:
            return ""
    elif not is_preference(t) and t.objective != "online-dpo":  # OnlineDPOTrainer always has a reference
        return ""
    if t.ref_model != "auto":
        return t.ref_model
    # dpo_trainer.py __init__: with peft and no ref_model, the adapters are disabled to get the base.
    return "adapters-off" if t.method in ("lora", "qlora") else "copy"


def ref_weight_dtype(t: TrainingSpec, recipe: Recipe) -> str:
    """A copied reference's dtype: `self.model.dtype` (the policy's load dtype) unless --ref-dtype."""
    return recipe.weight if t.ref_dtype == "auto" else t.ref_dtype


def reference_recipe(t: TrainingSpec, recipe: Recipe) -> Recipe:
    """The dtypes the copied reference's no-grad forward runs in. TRL 1.16 dpo_trainer.py / kto_trainer.py __init__
    load it with `create_model_from_path(ref_model_path, **ref_model_init_kwargs)`, `dtype` defaulting to the
    policy's (`setdefault("dtype", self.model.dtype)`); it runs inside the policy's autocast (HF Trainer
    compute_loss_context_manager). Another dtype: without autocast it computes in its own dtype; under autocast a
    16-bit reference of the autocast dtype needs no weight copies and keeps a 16-bit residual stream."""
    from dataclasses import replace as _replace

    d = ref_weight_dtype(t, recipe)
    if t.ref_quant != "none" and recipe.autocast and d == "fp32":
        from vramcalc.core.errors import UnsupportedCombination

        raise UnsupportedCombination(f"--ref-quant {t.ref_quant} on an fp32 reference under autocast (--precision "
                                     f"{t.precision}) is not modelled: give --ref-dtype bf16")
    if d == recipe.weight or resolve_ref(t) != "copy":
        return recipe
    if not recipe.autocast:
        return _replace(recipe, weight=d, compute=d)
    if d == recipe.compute:
        return _replace(recipe, weight=d, autocast=False)
    return _replace(recipe, weight=d)  # fp16 under amp-bf16: autocast still casts each weight (counted as fp32's)


# --ref-quant → (bits, bnb_4bit_use_double_quant) of the reference's bitsandbytes storage (memory/weights.py
# quantized_storage, QLoRA's base arithmetic): 4bit and 4bit-dq Linear4bit (nf4 and fp4 pack alike), 8bit
# Linear8bitLt (Int8Params: int8 weight + fp32 SCB per output row).
REF_QUANT_STORAGE = {"4bit": (4, False), "4bit-dq": (4, True), "8bit": (8, False)}
REF_QUANT_WORDS = {"4bit": ", its blocks' Linears bitsandbytes 4-bit",
                   "4bit-dq": ", its blocks' Linears bitsandbytes 4-bit, double-quantized",
                   "8bit": ", its blocks' Linears bitsandbytes LLM.int8 (int8 + fp32 row scales; the outlier "
                           "columns of threshold 6.0 depend on the data: not counted)"}
INT8_THRESHOLD = 6.0  # BitsAndBytesConfig llm_int8_threshold's default (transformers utils/quantization_config.py)


def reference_weight_bytes(m: ModelSpec, parameters: int, t: TrainingSpec, recipe: Recipe) -> int:
    """Weights of the frozen reference copy (zero with adapters off or precomputed log-probs). --ref-quant:
    transformers' bitsandbytes quantizer (quantizer_bnb_4bit.py / quantizer_bnb_8bit.py, integrations/bitsandbytes.py
    replace_with_bnb_linear) replaces the blocks' nn.Linear by Linear4bit / Linear8bitLt (lm_head skipped:
    get_modules_to_not_convert), stored as memory/weights.py quantized_storage, the rest in the reference's dtype."""
    if resolve_ref(t) != "copy":
        return 0
    w = dtype_bytes(reference_recipe(t, recipe).weight)
    if t.ref_quant == "none":
        return parameters * w
    from vramcalc.core.memory.weights import quantized_storage

    quantized, data, constants = quantized_storage(m, *REF_QUANT_STORAGE[t.ref_quant])
    return data + constants + (parameters - quantized) * w


def nograd_layer_bytes(m: ModelSpec, recipe: Recipe, method: str) -> tuple[int, int]:
    """(per token, fixed) peak of one layer run under no_grad, the residual stream included.

    Nothing is saved, so each intermediate is freed when the next op has read it (modeling_llama.py
    LlamaMLP: act(gate) * up, then down; LlamaAttention: q, k, v, rotary, sdpa). Fixed: the 16-bit copy of
    the largest weight made per matmul when it is not stored in the compute dtype (autocast on fp32
    weights that need no gradient: no cache, autocast_mode.cpp cached_cast; QLoRA's dequantized weight).
    """
    assert m.hidden_size is not None and m.intermediate_size is not None and m.num_attention_heads is not None
    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.autocast or recipe.compute == "fp32" else c
    h, i = m.hidden_size, m.intermediate_size
    q = m.num_attention_heads * head_dim(m)
    kv = kv_heads(m) * head_dim(m)
    # The residual stream and the normed input stay alive through the sublayer.
    if m.mlp == "gated" and m.fused_gate_up:
        # Phi-3's fused gate_up_proj (modeling_phi3.py Phi3MLP: chunk(2) views of its 2i output, held through
        # up_states * act(gate)): the 2i output, act(gate) and the product
        mlp = 4 * c * i
    elif m.mlp == "gated":
        mlp = 3 * c * i  # act(gate), up and their product
    else:
        mlp = 2 * c * i  # fc1's output and the activation's
    # q, k, v; rotary writes new q and k (with one temporary of q's size); sdpa's output and fp32 logsumexp.
    attn = c * (q + 2 * kv) + c * (q + kv) + c * q + c * q + 4 * m.num_attention_heads
    per_token = 2 * r * h + max(mlp, attn)
    fixed = 0
    if recipe.autocast or method == "qlora":
        # (the fused gate_up_proj's weight is h x 2i: Phi-3's dequantized / cast copy, --grid autocast-run2)
        fixed = c * max(h * i * (2 if m.fused_gate_up else 1), h * (q + 2 * kv))
    return per_token, fixed


@dataclass(frozen=True, slots=True)
class NogradLayer:
    """One no-grad layer inside a whole no-grad forward (the reference's, a log-prob pass, generate(use_cache=False)),
    as coefficients of its tokens: what memory/reward_scoring.py ScoringPlan found for the reward model."""

    per_token: int  # the layer's peak (nograd_layer_bytes) and the two residual-stream tensors the model holds
    cast_per_token: int  # while a matmul's 16-bit weight copy exists: the stream and that matmul's operands
    cast: int  # the copy (autocast over weights stored in another dtype, QLoRA's dequantized weight), or 0
    eager_per_token: int = 0  # eager attention's moment: the stream, q, k, v and repeat_kv's copies
    per_key: int = 0  # eager attention: bytes per token per key position (the scores, the model's 4-D mask)

    def peak(self, tokens: int, seq: int = 0) -> int:
        """`tokens`: rows × `seq` positions."""
        eager = self.eager_per_token * tokens + self.per_key * tokens * seq if self.per_key else 0
        return max(self.per_token * tokens, self.cast_per_token * tokens + self.cast, eager)


def uses_eager(m: ModelSpec, t: TrainingSpec) -> bool:
    """--attention eager, or a model transformers runs eagerly whatever is asked (memory/activations.py)."""
    from vramcalc.core.memory.activations import eager_only

    return t.attention == "eager" or eager_only(m)


def nograd_layer(m: ModelSpec, recipe: Recipe, method: str, eager: bool = False) -> NogradLayer:
    """nograd_layer_bytes inside the model's loop: two more residual-stream tensors (the layer's input, still held
    by the loop variable while the layer runs, `hidden_states = decoder_layer(hidden_states, ...)`, and the embedding
    output held as `inputs_embeds`: transformers modeling_llama.py LlamaModel.forward), and the weight copy alive
    only with one matmul's operands (without grad autocast does not cache it, autocast_mode.cpp cached_cast; QLoRA
    dequantizes per matmul), not beside the layer's peak: up_proj's, with act(gate) alive, or down_proj's (input and
    output); the fp32 stream's autocast input copy too."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    per_token, cast = nograd_layer_bytes(m, recipe, method)
    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.autocast or recipe.compute == "fp32" else c
    h, i = m.hidden_size, m.intermediate_size
    held = 2 * r * h
    stream = 4 * r * h  # the two held, the layer's residual and its normed input
    operands = max(2 * c * i if m.mlp == "gated" else 0, c * i + c * h) + (c * h if r != c else 0)
    assert m.num_attention_heads is not None
    q = m.num_attention_heads * head_dim(m)
    kv = kv_heads(m) * head_dim(m)
    if not eager and c == 4 and not recipe.autocast and kv != q:
        # sdpa on fp32 q, k, v with grouped kv heads: no flash (16-bit only) and no memory-efficient kernel (no GQA),
        # so CUDA runs the math path (sdp_utils.cpp; attention.cpp _scaled_dot_product_attention_math): k and v
        # repeated to every head, then the fp32 scores and the causal mask added to them, out of place (measured
        # with the tracer, --grid refkw: an fp32 reference under a bf16 policy).
        return NogradLayer(per_token + held, stream + operands, cast, stream + c * (q + 2 * kv) + 2 * c * q,
                           2 * c * m.num_attention_heads)
    if not eager:
        return NogradLayer(per_token + held, stream + operands, cast)
    # Eager attention (transformers modeling_llama.py eager_attention_forward, no grad): q, k, v after rotary,
    # repeat_kv's copies of k and v to every head (GQA), then per key position and head the scores (matmul, scaled:
    # a second copy for a moment; + the mask: a third) and softmax(dtype=float32) beside them: at::softmax converts
    # its input to fp32 first, so the scores, their fp32 copy and the fp32 result are alive at once (c + 4 + 4 B;
    # measured, the tracer's peak op _softmax); GPT-2's softmax stays in the scores' dtype (2 c); dropout p=0 returns
    # its input. The model's 4-D float mask [rows, 1, S, S] (masking_utils.py eager_mask, the embeddings' dtype) is
    # alive through the whole forward.
    repeated = 2 * c * q if kv != q else 0
    scores = (2 * c if m.family == "gpt2" else c + 4 + (4 if c != 4 else 0)) * m.num_attention_heads
    return NogradLayer(per_token + held, stream + operands, cast,
                       stream + c * (q + 2 * kv) + repeated, scores + r)


@dataclass(frozen=True, slots=True)
class ReferencePlan:
    """The reference forward's peak, as coefficients: bytes per position, per scored token, and fixed."""

    per_token: int  # layer peak (with the residual stream) or the head's last hidden states; + policy outputs
    per_labelled: int
    fixed: int
    head_per_token: int
    head_per_labelled: int
    compute: int
    outputs: int = POLICY_OUTPUT_BYTES["dpo"]  # the policy's per-position outputs, alive meanwhile
    cast_per_token: int = 0  # NogradLayer.cast_per_token: the layer's moment beside its weight copy (`fixed`)
    eager_per_token: int = 0  # NogradLayer's eager attention terms (0: sdpa)
    per_key: int = 0

    def peak(self, tokens: int, labelled: int, seq: int = 0) -> int:
        """Bytes of the reference forward at its peak, beyond everything the policy keeps (`seq`: positions per row,
        for eager attention's per-key terms)."""
        mm = min(labelled, TOKEN_CHUNK) * VOCAB_CHUNK * self.compute
        layer = NogradLayer(self.per_token, self.cast_per_token, self.fixed, self.eager_per_token,
                            self.per_key).peak(tokens, seq)
        head = self.head_per_token * tokens + self.head_per_labelled * labelled + mm + self.fixed
        return max(layer, head) + self.outputs * tokens


def reference_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> ReferencePlan | None:
    """The reference forward of a dpo/ipo step (None when its log-probs are precomputed or there is none)."""
    if resolve_ref(t) not in ("copy", "adapters-off"):
        return None
    rrecipe = reference_recipe(t, recipe)
    if t.ref_quant == "8bit":
        return _int8_reference_plan(m, t, rrecipe)
    # a 4-bit reference dequantizes each Linear's weight per matmul under no_grad, as QLoRA's base does
    plan = nograd_forward_plan(m, t, rrecipe, POLICY_OUTPUT_BYTES[t.objective],
                               "qlora" if t.ref_quant in ("4bit", "4bit-dq") else t.method)
    if t.ref_quant != "4bit-dq":
        return plan
    # double quantization: bitsandbytes 0.50 backends/cuda/ops.py _dequant_linear_fallback dequantizes the nested
    # absmax to fp32 (absmax_dq, one per 64-element block) and adds the offset (a second fp32 vector), both alive
    # through F.linear beside the dequantized weight (the tracer's _Dequant4bit)
    assert m.hidden_size is not None and m.intermediate_size is not None and m.num_attention_heads is not None
    h = m.hidden_size
    numel = max(h * m.intermediate_size, h * (m.num_attention_heads * head_dim(m) + 2 * kv_heads(m) * head_dim(m)))
    return replace(plan, fixed=plan.fixed + 2 * 4 * ceil_div(numel, 64))


def _int8_reference_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> ReferencePlan:
    """An 8-bit reference's no-grad forward: the layer's sdpa/MLP moments of nograd_layer_bytes, each Linear's
    int8 matmul (int8_linear_bytes) in place of its plain output, beside what its sublayer holds meanwhile
    (modeling_llama.py LlamaMLP: act(gate) during up_proj, the product during down_proj; LlamaAttention: q during
    k_proj, q and k during v_proj, the attention output during o_proj). No weight copy: the int8 matmul reads CB."""
    from vramcalc.core.errors import UnsupportedCombination

    if recipe.autocast or m.num_experts or m.kv_lora_rank is not None or m.q_lora_rank is not None \
            or m.ssm_state_size or m.vision is not None:  # other blocks (MoE, MLA, SSM) and towers: not derived
        raise UnsupportedCombination("--ref-quant 8bit is modelled for a dense model's reference in its own dtype: "
                                     "give --ref-dtype bf16 (no autocast), or use --ref-quant 4bit for this model")
    assert m.hidden_size is not None and m.intermediate_size is not None and m.num_attention_heads is not None
    plan = nograd_forward_plan(m, t, recipe, POLICY_OUTPUT_BYTES[t.objective], t.method)
    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.compute == "fp32" else c
    h, i = m.hidden_size, m.intermediate_size
    q, kv = m.num_attention_heads * head_dim(m), kv_heads(m) * head_dim(m)
    per_token, _ = nograd_layer_bytes(m, recipe, t.method)
    sub = per_token - 2 * r * h  # nograd_layer_bytes' max(mlp, attn)
    mlp = ((h, 2 * i, 0), (i, h, c * i)) if m.fused_gate_up else \
        ((h, i, 0), (h, i, c * i), (i, h, c * i)) if m.mlp == "gated" else ((h, i, 0), (i, h, c * i))
    attn = ((h, q + 2 * kv, 0),) if m.fused_qkv else ((h, q, 0), (h, kv, c * q), (h, kv, c * (q + kv)))
    int8 = max(held + int8_linear_bytes(d_in, d_out, recipe.compute)
               for d_in, d_out, held in (*mlp, *attn, (q, h, c * q)))
    return replace(plan, per_token=plan.per_token + max(0, int8 - sub))


def nograd_forward_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe, outputs: int,
                        method: str | None = None) -> ReferencePlan:
    """A no-grad forward through TRL's fused head (the reference's, GRPO's log-prob passes); `outputs`: bytes per
    position of the per-position outputs alive meanwhile; `method`: the forwarded model's (default the run's)."""
    assert m.hidden_size is not None
    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.autocast or recipe.compute == "fp32" else c
    layer = nograd_layer(m, recipe, method or t.method, uses_eager(m, t))
    per_token, fixed = layer.per_token, layer.cast
    # The head under no_grad: last hidden states (r × H per position), the gathered copy (r × H per scored
    # token), its targets (int64), the seven statistics and the outputs (~13 fp32 vectors), the label mask.
    # KTO runs the reference twice (the KL rows, then the completions: trl/trainer/kto_trainer.py _compute_loss),
    # one after the other, on rows of the same shape: the same peak.
    return ReferencePlan(per_token=per_token, per_labelled=0, fixed=fixed, head_per_token=r * m.hidden_size + 1 + 4,
                         head_per_labelled=r * m.hidden_size + 8 + 52, compute=c,
                         outputs=outputs, cast_per_token=layer.cast_per_token,
                         eager_per_token=layer.eager_per_token, per_key=layer.per_key)


def notes(t: TrainingSpec, parameters_bytes: int) -> tuple[str, ...]:
    """What the estimate assumed about the preference step (shown in every format); nothing per token, since
    memory/__init__.py keeps these notes with the token-independent plan."""
    if is_reference_free(t):
        loss_type = "simpo" if t.objective == "simpo" else "sigmoid"
        trainer = "ORPOTrainer" if t.objective == "orpo" else f"CPOTrainer (loss_type {loss_type})"
        nll = ("the NLL of the chosen half (CrossEntropyLoss: a copy of the chosen logits and their log_softmax)"
               if computes_nll(t) else "no NLL term (cpo_alpha 0)")
        from vramcalc.core.memory.precision import recipe_of

        out = [f"{t.objective}: TRL {trainer}: no reference model; chosen and rejected stacked in one forward "
               "(2 × --batch-size sequences of --seq-len) that returns the full logits [2B, S, vocab] (fp32 under "
               f"amp: accelerate converts the outputs), kept for the log-prob kernel's backward; {nll}.",
               "the logits' backward holds up to three logits-sized gradients at once (the two branches and "
               "their sum): a longer --seq-len or larger vocabulary costs here first."]
        recipe = recipe_of(t)
        if not recipe.autocast and recipe.compute != "fp32":
            out.append(f"logits counted in {recipe.compute} (no accelerate mixed precision); with TrainingArguments "
                       "bf16/fp16 true (TRL's default) accelerate's convert_outputs_to_fp32 returns them in fp32: "
                       "twice the logits terms (temporaries.loss_backward, activations.loss_saved).")
        return tuple(out)
    if t.objective == "reward":
        return ("reward: TRL RewardTrainer: chosen and rejected stacked in one forward (2 × --batch-size sequences) "
                "through AutoModelForSequenceClassification (a 1-output score head instead of lm_head: no logits "
                "over the vocabulary).",)
    if not is_preference(t):
        return ()
    ref = resolve_ref(t)
    quant = REF_QUANT_WORDS.get(t.ref_quant, "")
    what = {"copy": f"a frozen copy of the model ({parameters_bytes / 1e9:.2f} GB of weights{quant})",
            "adapters-off": "the policy with its adapters disabled (no extra weights)",
            "precomputed": "log-probs precomputed before training (precompute_ref_log_probs: no reference in the "
                           "step)"}[ref]
    if torchtune_head(t):
        return (f"dpo: torchtune's DPO recipes (--dpo-head logits): chosen and rejected stacked in one forward "
                "(2 × --batch-size sequences of --seq-len) whose logits come back in fp32 (TransformerDecoder "
                "unembed `.float()`), then log_softmax(logits / 1.0) over every shifted position (get_batch_log_probs:"
                f" a copy and the saved output, each 2B × (S - 1) × vocab × 4 B); reference: {what}, the same forward "
                "under no_grad after the policy's, on top of its saved activations.",)
    if t.objective == "kto":
        out = ["kto: TRL KTOTrainer: --batch-size unpaired completions in one forward, log-probs through TRL's fused "
               "LM head (no logits), the KL rows under no_grad before it; reference (completions and KL rows, one "
               f"after the other): {what}."]
    else:
        out = [f"{t.objective}: TRL DPOTrainer: chosen and rejected stacked in one forward (2 × --batch-size "
               f"sequences of --seq-len), log-probs through TRL's fused LM head (no logits); reference: {what}."]
    if ref != "precomputed":
        out.append("the reference's no-grad forward runs after the policy's, on top of all of its saved "
                   f"activations (trl/trainer/{t.objective.replace('ipo', 'dpo')}_trainer.py _compute_loss).")
    if t.prompt_len == 0:
        out.append("--prompt-len not given: every position counted as a completion token (the most memory in "
                   "the log-prob head).")
    return tuple(out)
