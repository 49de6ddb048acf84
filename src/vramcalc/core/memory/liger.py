"""Liger's layer kernels (`--kernels liger`): what a decoder layer saves for backward when Liger's RMSNorm, SwiGLU
and RoPE autograd functions replace transformers' modules (peft's LoRA layers unchanged).

Read from linkedin/Liger-Kernel at commit ead96b618e5c67bddc6a6e9bcb99bfe6b5ab661c (2026-08):

* transformers/monkey_patch.py `_apply_liger_kernel_to_instance` (what transformers' Trainer calls for
  `use_liger_kernel`, integrations/liger.py apply_liger_kernel) -> apply_liger_kernel_to_{llama, mistral, qwen2,
  qwen3}(model=...): rope, rms_norm and swiglu on by default. On an existing instance it rebinds the forward of
  each layer's input_layernorm / post_attention_layernorm and of the final norm (_patch_rms_norm_module: casting
  mode "llama", in_place True) and of each layer's MLP (_patch_swiglu_module: LigerSwiGLUMLP.forward), and replaces
  the module-level apply_rotary_pos_emb. Qwen3's q_norm / k_norm are instances created before the patch: they stay
  transformers' Qwen3RMSNorm (memory/activations.py's terms).
* ops/rms_norm.py LigerRMSNormFunction: Y = torch.empty(...) (a new output), RSTD an fp32 per row (casting mode
  llama), `ctx.save_for_backward(X, W, RSTD)` with X the input itself (a view; ensure_contiguous copies nothing on a
  contiguous input): 16-bit input + 4 B per token, whether the input or only the weight needs a gradient, and no
  normalized copy. Backward (rms_norm_backward): dX written into dY (in_place), and
  `_dW = torch.empty((sm_count, n_cols), dtype=torch.float32)` whenever the norm has a weight, summed to dW.
* ops/swiglu.py LigerSiLUMulFunction (transformers/swiglu.py LigerSwiGLUMLP.forward:
  down_proj(LigerSiLUMulFunction.apply(gate_proj(x), up_proj(x)))): c = torch.empty_like(a);
  `ctx.save_for_backward(a, b)`: the gate and up outputs, not silu(gate). Backward recomputes silu and writes da,
  db into a and b in place (nothing new beyond the incoming dc).
* ops/rope.py LigerRopeFunction: q, k rotated in place (q.transpose(1, 2).contiguous() is the projection's own
  storage), `save_for_backward(cos, sin)` (the shared tables); backward copies dq, dk to contiguous and rotates
  them in place.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import activations as _activations
from vramcalc.core.memory.activations import LayerActivations, Term
from vramcalc.core.memory.precision import RECIPES, Recipe, resolve_precision
from vramcalc.core.memory.unsloth import refuse_explicit_kernels
from vramcalc.core.params import resolve_targets
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SOURCE = "liger_kernel ops/rms_norm.py, ops/swiglu.py, ops/rope.py; transformers/monkey_patch.py"
# rms_norm_backward's fp32 partial dW has one row per streaming multiprocessor (torch.cuda.get_device_properties
# multi_processor_count): 132 on H100 / H200 SXM, the largest count of the GPUs in presets/gpus (an upper bound).
SM_COUNT = 132
METHODS = ("full", "lora", "qlora")


def why_not(m: ModelSpec, t: TrainingSpec) -> str | None:
    """Why Liger's layer kernels are not modelled for this run (None: they are)."""
    if t.mode != "train":
        return "they are modelled for training (--mode train)"
    if m.family not in FAMILIES:
        return f"{m.name} is a {m.family} model; modelled for {', '.join(FAMILIES)} (LigerRMSNorm + LigerSwiGLUMLP)"
    if t.method not in METHODS:
        return "modelled for --method full, lora or qlora"
    if t.objective != "sft":
        return "modelled for supervised fine-tuning (--objective sft)"
    recipe = RECIPES[resolve_precision(t)]
    if recipe.autocast or recipe.compute == "fp32":
        return "modelled in 16 bits: use --precision bf16 or fp16 (not amp-* or fp32)"
    if t.activation_offload or t.ac_every > 1:
        return "modelled with per-layer checkpointing or none (not offloaded or selective)"
    if t.tp > 1 or t.pp > 1 or t.sequence_parallel:
        return "modelled without tensor, pipeline or sequence parallelism"
    if t.dora or t.modules_to_save or t.lora_trainable_tokens:
        return "modelled without DoRA, modules_to_save or trainable tokens"
    if m.norm != "rmsnorm" or m.mlp != "gated" or m.hidden_act not in ("silu", "swish") or m.num_experts \
            or m.dropout > 0 or m.fused_gate_up:
        return f"{m.name}'s layers differ from a Llama layer (RMSNorm, SiLU-gated MLP, no dropout, no MoE)"
    return None


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse `--kernels liger` given explicitly where it is not modelled (a stack's or run file's default falls
    back with a note)."""
    refuse_explicit_kernels(m, t, t.kernels == "liger", why_not)


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    return t.kernels == "liger" and why_not(m, t) is None


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    if t.kernels != "liger":
        return ()
    reason = why_not(m, t)
    if reason is not None:
        return (f"kernels liger (from the stack) not counted: {reason}; transformers' modules counted instead",)
    return (f"kernels liger: LigerRMSNorm saves its 16-bit input and an fp32 rstd (no fp32 copy), LigerSiLUMul the "
            f"gate and up outputs (no SiLU output), RoPE runs in place; the norm's backward adds an fp32 "
            f"{SM_COUNT} x hidden partial dW ({SM_COUNT} SMs, H100/H200: an upper bound) (liger_kernel "
            "ops/rms_norm.py, swiglu.py, rope.py; monkey_patch.py _apply_liger_kernel_to_instance).",)


def _norm_name(name: str, which: str) -> bool:
    return name.startswith(f"{which} norm (")


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool = False,
                      input_grad: bool = True) -> LayerActivations:
    """transformers' layer (memory/activations.py) with Liger's norms and SwiGLU in place of its own (bytes per
    token; the module docstring gives each source). The attention, Qwen3's q/k norms and peft's adapters keep
    transformers' terms: RoPE in place saves what transformers' rotation does per layer (nothing but the shared
    cos / sin)."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    hf = _activations.layer_activations(m, t, recipe, trainable_weights, input_grad)
    c = dtype_bytes(recipe.compute)
    h, i = m.hidden_size, m.intermediate_size
    terms: list[Term] = []
    n_attention = hf.attention_terms
    attention_count = 0
    for k, x in enumerate(hf.terms):
        in_attention = k < n_attention
        for which in ("attn", "mlp"):
            if _norm_name(x.name, which):
                liger_name = f"{which} norm: input (16-bit) + fp32 rstd (LigerRMSNormFunction)"
                if any(y.name == liger_name for y in terms):
                    break  # transformers' fp32 input and normalized copy: one Liger term for both
                # LigerRMSNormFunction saves X, W, RSTD when its input or its weight needs a gradient (whenever
                # transformers' norm saved anything). Under checkpointing the attention norm's X is the layer
                # input the checkpoint keeps (counted with the kept inputs): only the rstd is new.
                own_input = 0 if which == "attn" and t.grad_checkpointing else c * h
                terms.append(Term(liger_name, own_input + 4))
                attention_count += in_attention
                break
        else:
            if x.name == "mlp act input":
                continue  # LigerSiLUMulFunction saves a and b only (below)
            if x.name == "mlp act output, up":
                x = Term("mlp gate and up outputs (LigerSiLUMulFunction a, b)", 2 * c * i)
            terms.append(x)
            attention_count += in_attention
    mlp_saved = sum(x.per_token for x in terms[attention_count:] if not x.batch1_only)
    dropped_act = sum(x.per_token for x in hf.terms if x.name == "mlp act input")
    # Backward: the incoming gradient of the SiLU product (dc, tokens x intermediate; da and db are written into
    # the saved a and b) and the gate and up projections' input gradients (tokens x hidden each, summed); the
    # norms write dX into dY and allocate only the fp32 (SM_COUNT x hidden) partial dW and its sum.
    mlp_bwd = c * i + c * h
    adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)} \
        if t.method in ("lora", "qlora") else set()
    if "down_proj" in adapted:
        # An adapted down_proj's input gradient is two (base and adapter path, the latter cast back from the adapter
        # dtype) summed by autograd into a third, beside the incoming hidden-wide gradient, as in
        # memory/activations.py's "mlp backward gradients" (measured with the tracer: a small llama LoRA all-linear
        # with the fused linear loss, -2.7 % on the backward phase with one intermediate-wide gradient).
        mlp_bwd = 3 * c * i + c * h
    bwd = Term("liger backward (dc, the projections' input gradients; RMSNorm dW partials)",
               mlp_bwd, hf.backward_transient.per_token_seq,
               const=hf.backward_transient.const + 4 * SM_COUNT * h + 4 * h)
    mlp_fwd = hf.mlp_forward_per_token
    if "up_proj" in adapted:
        # While up_proj's adapter path runs, transformers' LlamaMLP already holds gate's output and act(gate)
        # (memory/activations.py); LigerSwiGLUMLP only gate's output: silu runs inside LigerSiLUMulFunction, after
        # up_proj (peft's `result + lora_B(lora_A(x)) * scaling`: the base output, lora_B's output and its copy).
        up_lora = (c + 2 * dtype_bytes(t.adapter_dtype)) * i
        mlp_fwd += max(3 * c * i, up_lora + c * i) - max(3 * c * i, up_lora + 2 * c * i)
    fwd = hf.forward_transient
    if not t.grad_checkpointing:
        # Without checkpointing a layer's forward moment holds every saved tensor of the layers so far: beyond them
        # (measured with the tracer, --grid liger LoRA with the fused linear loss: transformers' 3 x intermediate
        # counted a and b, saved here, twice) are down_proj's output (hidden wide), the SiLU product when nothing
        # saves it, and an adapter's path (peft's base output, lora_B's output and its scaled copy) less what the
        # layer has not saved yet at that point: at up_proj's, its own output b and down_proj's input.
        a = dtype_bytes(t.adapter_dtype)
        down_t = sum(x.per_token for x in terms if x.name in ("lora down_proj input", "down_proj input"))
        # the product is down_proj's input as is when a trainable weight or an adapter without a cast of its own
        # saves it (memory/activations.py); with an fp32 adapter lora_A saves its own copy and the product is live
        product = 0 if down_t and (trainable_weights or (a == c and t.lora_dropout == 0)) else c * i
        extra = [product + c * h]
        by_name = {lin.module.rsplit(".", 1)[-1]: lin.out_features for lin in resolve_targets(m, t.lora_targets)} \
            if adapted else {}
        if "up_proj" in adapted:
            extra.append((c + 2 * a) * i - c * i - down_t)
        if "down_proj" in adapted:
            extra.append(product + (c + 2 * a) * h)
        for mod in ("q_proj", "k_proj", "v_proj", "o_proj"):  # the whole MLP block is still to be saved
            if mod in by_name:
                extra.append((c + 2 * a) * by_name[mod] - mlp_saved)
        fwd = Term("liger forward temporaries (down output; an adapter's path)", max(extra),
                   fwd.per_token_seq, const=fwd.const)
    # (mlp_node_freed_per_token 0: the MLP's product node is LigerSiLUMulFunction's own backward, not transformers'
    # act(gate) * up that memory/__init__.py _mlp_node reads; with it, tests/test_liger.py's full fine-tune with the
    # fused-linear loss and checkpointing read -3.72 % under the trace with it, -0.58 % now)
    return replace(hf, terms=tuple(terms), forward_transient=fwd, backward_transient=bwd, mlp_saved_per_token=mlp_saved,
                   mlp_tail_per_token=hf.mlp_tail_per_token - dropped_act, mlp_forward_per_token=mlp_fwd,
                   attention_terms=attention_count, mlp_node_freed_per_token=0)


def final_norm_saved(m: ModelSpec, recipe: Recipe) -> int:
    """The final norm (LlamaModel.norm, patched by _patch_rms_norm_module): its 16-bit input and an fp32 rstd."""
    assert m.hidden_size is not None
    return dtype_bytes(recipe.compute) * m.hidden_size + 4
