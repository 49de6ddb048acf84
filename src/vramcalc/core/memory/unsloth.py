"""Unsloth's layer kernels (`--kernels unsloth`, `--stack unsloth`): what each layer saves for backward when
Unsloth's Triton kernels and LoRA autograd functions replace transformers' modules and peft's layers.

Read from unslothai/unsloth at commit 0050c73e05ca9bb74e42d0649be410f177160c08 (kernels/) and
00060afeb383f16c980bcc241e462b7684480d09 (models/llama.py), both 2026 (unsloth 2026.x, the same kernels as
2025.8's):

* kernels/rms_layernorm.py Fast_RMS_Layernorm: `ctx.save_for_backward(X, W, r)`: the 16-bit input itself (a view),
  the weight and an fp32 rstd per row; its backward writes dX into dY in place (no fp32 temporaries).
* kernels/fast_lora.py LoRA_QKV: `ctx.save_for_backward(X, QA, QB, KA, KB, VA, VB)`: the normed input only;
  LoRA_W (o_proj): `save_for_backward(A, B, X)` with X the attention output (already saved by the attention);
  LoRA_MLP: `save_for_backward(gateA, gateB, upA, upB, downA, downB, X, e, g)`: the normed input and the gate and
  up outputs; h = swiglu(e, g) (kernels/swiglu.py swiglu_fg_kernel) is a forward temporary, recomputed in backward
  in place into e and g (swiglu_DWf_DW_dfg_kernel). Backward: DW = dY @ down (one tokens x intermediate tensor), and
  dX written into the saved X (`torch.matmul(df, upW.t(), out=X)`).
* kernels/utils.py matmul_lora: `out = X @ W`, then `out.addmm_(X @ A, B, alpha=s)` (no scaled copy); QLoRA's
  fast_dequantize(use_global_buffer=True) in forward writes into WEIGHT_BUFFERS / ABSMAX_BUFFERS, grown to the
  largest weight and kept for the process; backward's fast_dequantize(W.t(), W_quant) allocates a fresh one.
* kernels/rope_embedding.py Fast_RoPE_Embedding_QK: rotates q and k in place (a contiguous clone of the transposed
  views) and keeps cos/sin as ctx attributes: nothing saved.
* models/llama.py LlamaDecoderLayer_fast_forward: `residual + hidden_states` around fast_rms_layernorm, self_attn
  (LlamaAttention_fast_forward: apply_qkv, fast_rope_embedding, run_attention (flash / SDPA), apply_o) and the MLP
  (apply_lora_mlp_swiglu); LlamaModel_fast_forward runs the final norm through fast_rms_layernorm too.
* models/llama.py FastLlamaModel.patch_peft_model: a layer's q/k/v (o; gate/up/down) run the fused function only
  when all of them carry a LoRA adapter with lora_dropout 0 and no bias: modelled when all seven projections are
  adapted (Unsloth's default target_modules) on Llama, Mistral and Qwen2 (models/mistral.py, qwen2.py reuse the
  attention and decoder layer); Qwen2's biased q/k/v keep peft's layers there ("a bias term (like in Qwen)"):
  its q/k/v terms are peft's (memory/activations.py), the rest Unsloth's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import activations as _activations
from vramcalc.core.memory.activations import LayerActivations, Term
from vramcalc.core.memory.precision import RECIPES, Recipe, resolve_precision
from vramcalc.core.params import block_linears, head_dim, kv_heads, linear_has_bias, outer_targets, resolve_targets
from vramcalc.core.units import ceil_div, dtype_bytes
from vramcalc.core.vocab import KERNEL_GROUPS, parse_kernels

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

FAMILIES = ("llama", "mistral", "qwen2")
PROJECTIONS = frozenset(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
SOURCE = "unsloth kernels/fast_lora.py, rms_layernorm.py, rope_embedding.py; models/llama.py"
# Each LoRA group's projections: a group's autograd function runs only when all of them carry an adapter.
GROUP_PROJECTIONS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "mlp": ("gate_proj", "up_proj",
                                                                                     "down_proj")}
# axolotl's unsloth_* keys (axolotl-ai-cloud/axolotl src/axolotl/monkeypatch/unsloth_.py at 1291d22d,
# loaders/patch_manager.py at b27e49f2): they patch group by group, and where:
# * unsloth_rms_norm (patch_unsloth_layernorm): replaces transformers.models.llama.modeling_llama.LlamaRMSNorm by a
#   Fast_RMS_Layernorm module, every norm of the model (the final one too); only for a Llama-derived model
#   (PatchManager._patch_loss_llama returns early otherwise).
# * unsloth_rope (integrate_rope_embeddings): replaces modeling_llama.apply_rotary_pos_emb by fast_rope_embedding.
# * unsloth_lora_qkv / unsloth_lora_o (patch_self_attn_lora, integrate_lora_patch): rewrites LlamaFlashAttention2's
#   forward to call apply_qkv / apply_o, set per layer to LoRA_QKV / LoRA_W when its projections are adapted with no
#   bias and no DoRA (else peft's layers): Llama with flash attention only.
# * unsloth_lora_mlp (integrate_lora_mlp_patch): apply_lora_mlp_swiglu on llama and mistral (NotImplementedError on
#   other model types), per layer when gate/up/down are adapted, no bias, no DoRA.
AXOLOTL_FAMILIES = {"qkv": ("llama",), "o": ("llama",), "norm": ("llama",), "rope": ("llama",),
                    "mlp": ("llama", "mistral")}


def groups(t: TrainingSpec) -> tuple[str, ...]:
    """The Unsloth kernel groups --kernels selects (core/vocab.py parse_kernels); () for transformers' modules."""
    return parse_kernels(t.kernels) or ()


def _label(t: TrainingSpec) -> str:
    return f"kernels {t.kernels}"


def why_not(m: ModelSpec, t: TrainingSpec) -> str | None:
    """Why Unsloth's kernels are not modelled for this run (None: they are)."""
    chosen = groups(t)
    partial = t.kernels.startswith("unsloth:")  # the groups patched one by one (axolotl's keys)
    if t.mode != "train":
        return "they are modelled for training (--mode train)"
    if m.family not in FAMILIES:
        return f"{m.name} is a {m.family} model; modelled for {', '.join(FAMILIES)} (Unsloth's Llama forward)"
    if partial:
        # Groups one by one are axolotl's unsloth_* keys: refused where axolotl does not apply them
        off = [g for g in chosen if m.family not in AXOLOTL_FAMILIES[g]]
        if off:
            return (f"axolotl applies its unsloth_* patch for {','.join(off)} only to "
                    f"{' / '.join(sorted({f for g in off for f in AXOLOTL_FAMILIES[g]}))} models "
                    f"(monkeypatch/unsloth_.py), not to {m.family}; drop {'it' if len(off) == 1 else 'them'}")
        if ("qkv" in chosen or "o" in chosen) and t.attention != "flash":
            return ("axolotl's unsloth_lora_qkv / unsloth_lora_o rewrite LlamaFlashAttention2's forward only: "
                    "use --attention flash (axolotl flash_attention: true)")
    if t.method not in ("lora", "qlora"):
        return "Unsloth's LoRA autograd functions need --method lora or qlora"
    if t.method == "qlora" and t.quant_bits != 4:
        return ("Unsloth's fast_dequantize reads 4-bit (NF4/FP4) weights; axolotl refuses unsloth_lora_* with 8-bit "
                "LoRA (check_qlora_unsloth)")
    if t.objective != "sft":
        return "modelled for supervised fine-tuning (--objective sft)"
    adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
    if not partial and (not PROJECTIONS <= adapted or outer_targets(t.lora_targets)):
        return ("Unsloth fuses a layer's projections only when all seven (q,k,v,o,gate,up,down_proj) are adapted; "
                "use those --lora-targets (no lm_head / embed_tokens)")
    for g in chosen:
        if g in GROUP_PROJECTIONS and not set(GROUP_PROJECTIONS[g]) <= adapted:
            return (f"the {g} kernel runs only when {','.join(GROUP_PROJECTIONS[g])} all carry an adapter "
                    "(else peft's layers run): add them to --lora-targets, or drop the group")
    if t.lora_dropout > 0 or t.dora or t.modules_to_save or t.lora_trainable_tokens:
        return "Unsloth's fused path needs lora_dropout 0, no DoRA, no modules_to_save or trainable tokens"
    recipe = RECIPES[resolve_precision(t)]
    if recipe.autocast or recipe.compute == "fp32":
        return "Unsloth runs the model in 16 bits: use --precision bf16 or fp16 (not amp-* or fp32)"
    if t.attention == "eager" or (t.packing != "none" and t.attention != "flash"):
        return "modelled with flash / SDPA attention on padded rows, or flash attention on packed rows"
    if t.tp > 1 or t.pp > 1 or t.sequence_parallel:
        return "modelled without tensor, pipeline or sequence parallelism"
    if (m.o_bias and "o" in chosen) or (m.mlp_bias and "mlp" in chosen):
        return f"{m.name}'s o / MLP projections have biases: Unsloth keeps peft's layers there (patch_peft_model)"
    if m.dropout > 0 or m.qk_norm or m.mlp != "gated" or m.num_experts:
        return f"{m.name}'s layers differ from Unsloth's Llama forward (dropout, q/k norms, MoE or a plain MLP)"
    return None


def refuse_explicit_kernels(m: ModelSpec, t: TrainingSpec, selected: bool,
                            why_not_of: Callable[[ModelSpec, TrainingSpec], str | None]) -> None:
    """Refuse a layer-kernel set (`selected` by --kernels) given explicitly where `why_not_of` says it is not
    modelled; a stack's default falls back with a note instead (each kernel module's notes)."""
    if not selected or "kernels" in t.stack_set:
        return
    reason = why_not_of(m, t)
    if reason is not None:
        raise UnsupportedCombination(f"--kernels {t.kernels}: {reason}; or drop --kernels")


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse `--kernels unsloth[:GROUPS]` given explicitly where it is not modelled (the stack's default falls
    back)."""
    refuse_explicit_kernels(m, t, bool(groups(t)), why_not)


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    return bool(groups(t)) and why_not(m, t) is None


def norm_active(m: ModelSpec, t: TrainingSpec) -> bool:
    """Fast_RMS_Layernorm runs every norm, the final one too (LlamaModel_fast_forward; axolotl's LlamaRMSNorm)."""
    return "norm" in groups(t) and why_not(m, t) is None


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    chosen = groups(t)
    if not chosen:
        return ()
    reason = why_not(m, t)
    if reason is not None:
        return (f"{_label(t)} (from the stack) not counted: {reason}; transformers' modules counted instead",)
    if t.kernels == "unsloth":
        out = ("kernels unsloth: Fast_RMS_Layernorm saves the 16-bit input and an fp32 rstd, LoRA_QKV the normed "
               "input, LoRA_MLP the normed input and the gate and up outputs (no SiLU output, product or adapter "
               "inputs), RoPE runs in place; backward writes dX into saved tensors (unsloth kernels/fast_lora.py, "
               "rms_layernorm.py, rope_embedding.py).",)
    else:
        what = {"qkv": "LoRA_QKV saves the normed input once (not each adapter's copy)",
                "o": "LoRA_W saves the attention output it shares with the attention",
                "mlp": "LoRA_MLP saves the normed input and the gate and up outputs (no SiLU output or product)",
                "norm": "Fast_RMS_Layernorm saves the 16-bit input and an fp32 rstd (every norm, the final one too)",
                "rope": "RoPE rotates q and k in place (the same saved set)"}
        rest = [g for g in KERNEL_GROUPS if g not in chosen]
        out = (f"{_label(t)}: " + "; ".join(what[g] for g in chosen)
               + f"; {', '.join(rest)}: transformers' / peft's modules (axolotl monkeypatch/unsloth_.py, unsloth "
               "kernels/fast_lora.py, rms_layernorm.py, rope_embedding.py).",)
    if t.method == "qlora" and any(g in GROUP_PROJECTIONS for g in chosen):
        out += (f"{_label(t)}, QLoRA: matmul_lora dequantizes each weight into one global 16-bit buffer of the "
                "largest weight, kept for the whole run (kernels/utils.py fast_dequantize use_global_buffer); "
                "backward dequantizes into a fresh one.",)
    return out


def own_term(t: TrainingSpec, name: str) -> bool:
    """A layer term that Unsloth's kernels give (all of them selected: every term of the layer), not transformers'."""
    return t.kernels == "unsloth" or "Fast_RMS_Layernorm" in name or "LoRA_" in name


def peft_qkv(m: ModelSpec) -> bool:
    """q/k/v with a bias (Qwen2): patch_peft_model leaves them to peft's layers (LoRA_QKV takes no bias)."""
    return any(linear_has_bias(m, x) for x in ("q_proj", "k_proj", "v_proj"))


def _largest_weight(m: ModelSpec, chosen: tuple[str, ...] = KERNEL_GROUPS) -> int:
    """The largest block weight that Unsloth's matmul_lora dequantizes (the chosen LoRA groups' projections)."""
    mods = {x for g in chosen for x in GROUP_PROJECTIONS.get(g, ())}
    if "qkv" in chosen and peft_qkv(m):
        mods -= set(GROUP_PROJECTIONS["qkv"])
    return max((lin.in_features * lin.out_features for lin in block_linears(m)
                if lin.module.rsplit(".", 1)[-1] in mods), default=0)


def weight_buffer_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """QLoRA: the persistent dequantization buffers (kernels/utils.py WEIGHT_BUFFERS in the compute dtype and the
    fp32 ABSMAX_BUFFERS, one absmax per 64-element block), sized by the largest block weight."""
    if not active(m, t) or t.method != "qlora":
        return 0
    n = _largest_weight(m, groups(t))
    return dtype_bytes(recipe.compute) * n + 4 * ceil_div(n, 64) if n else 0


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool = False,
                      input_grad: bool = True) -> LayerActivations:
    """One decoder layer's saved tensors and transients under Unsloth's kernels (bytes per token, see the module
    docstring for each source); the base weights are frozen (LoRA / QLoRA), `trainable_weights` is unused.
    `input_grad`: the layer's input needs a gradient (false for the bottom layer of a run without checkpointing:
    Fast_RMS_Layernorm then records nothing). Groups not selected (--kernels unsloth:GROUPS) keep transformers' /
    peft's terms (memory/activations.py), by name."""
    assert m.hidden_size is not None and m.num_attention_heads is not None and m.intermediate_size is not None
    chosen = groups(t)
    c = dtype_bytes(recipe.compute)
    h, i, n_heads = m.hidden_size, m.intermediate_size, m.num_attention_heads
    q_dim, kv_dim = n_heads * head_dim(m), kv_heads(m) * head_dim(m)
    hf = _activations.layer_activations(m, t, recipe, trainable_weights=False, input_grad=input_grad)

    def hf_terms(*names: str) -> list[Term]:
        return [x for x in hf.terms if x.name in names]

    terms: list[Term] = []
    if "norm" in chosen:
        # Under checkpointing the layer input Fast_RMS_Layernorm saves is the checkpoint's own saved input (the
        # same storage, counted with the kept inputs): only the fp32 rstd is new.
        attn_norm_input = 0 if t.grad_checkpointing else c * h
        terms += [Term("attn norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)", attn_norm_input + 4)] \
            if input_grad else []
    else:
        terms += hf_terms("attn norm (fp32 input + rsqrt)")
    if "qkv" not in chosen or peft_qkv(m):
        # peft's LoRA layers (Qwen2's biased q/k/v: original_apply_qkv): their saved adapter inputs as transformers'
        terms += hf_terms("lora q_proj input", "lora k_proj input", "lora v_proj input")
    else:
        terms.append(Term("q/k/v input: the normed hidden states (LoRA_QKV)", c * h))
    # RoPE in place (Fast_RoPE_Embedding_QK) or transformers' apply_rotary_pos_emb: the same rotated q and k saved
    # by flash / memory-efficient SDPA as transformers' (activations.py).
    terms.append(Term("sdpa q, k, v, out, logsumexp", c * (2 * q_dim + 2 * kv_dim) + 4 * n_heads))
    # o_proj's LoRA_W saves the attention output, the same storage; peft's layer its adapter's own copy.
    if "o" not in chosen:
        terms += hf_terms("lora o_proj input")
    n_attention = len(terms)
    if "norm" in chosen:
        terms.append(Term("mlp norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)", c * h + 4))
    else:
        terms += hf_terms("mlp norm (fp32 input + rsqrt)")
    hf_norm_bwd = 0 if "norm" in chosen else 5 * 4 * h  # transformers' RMSNorm backward in fp32 (activations.py)
    qlora_bwd = 0
    if t.method == "qlora" and any(g in GROUP_PROJECTIONS for g in chosen):
        # QLoRA: backward dequantizes one weight at a time into a fresh tensor (fast_dequantize without the
        # global buffer)
        n = _largest_weight(m, chosen)
        qlora_bwd = c * n + 4 * ceil_div(n, 64)
    if "mlp" not in chosen:
        # transformers' MLP: peft's gate / up / down adapter inputs, the activation's and the product's saved tensors
        terms += [x for x in hf.terms if x.name.startswith(("lora gate_proj", "lora up_proj", "lora down_proj", "mlp "))
                  and not x.name.startswith("mlp norm")]
        mlp_saved = sum(x.per_token for x in terms[n_attention:])
        # transformers' MLP gradients (3 x intermediate + hidden, activations.py) beside the norm's fp32 backward
        bwd_t = max(3 * c * i + c * h, hf_norm_bwd)
        return LayerActivations(
            tuple(terms), hf.forward_transient,
            Term("mlp backward gradients" if bwd_t > hf_norm_bwd else "rmsnorm backward (fp32)", bwd_t,
                 const=max(hf.backward_transient.const, qlora_bwd)),
            mlp_saved_per_token=mlp_saved, mlp_tail_per_token=hf.mlp_tail_per_token,
            mlp_forward_per_token=hf.mlp_forward_per_token)
    terms.append(Term("mlp input, gate and up outputs (LoRA_MLP X, e, g)", c * h + 2 * c * i))
    mlp_saved = sum(x.per_token for x in terms[n_attention:])
    # Forward: e and g, swiglu's h and the down projection's output (matmul_lora: out, then addmm_ in place).
    mlp_fwd = 3 * c * i + c * h
    # Without checkpointing or offload e and g stay as saved tensors (already in the layer's saved set): beyond it
    # only h and the output (measured with the tracer: tinyllama / mistral LoRA b2 s512, +2 % with e and g twice).
    layer_fwd = mlp_fwd if t.grad_checkpointing or t.activation_offload else c * i + c * h
    # Backward: the incoming dY and DW = dY @ down (swiglu's backward and dX reuse e, g and X); QLoRA dequantizes
    # one weight at a time into a fresh tensor (fast_dequantize without the global buffer).
    bwd = c * h + c * i
    if t.grad_checkpointing:
        # The recomputed layer's output stays alive through its backward: unsloth_zoo's
        # Unsloth_Offloaded_Gradient_Checkpointer.backward runs `(output,) = forward_function(hidden_states)` then
        # `torch.autograd.backward(output, dY)` (measured with the tracer under HF's checkpoint too: LoRA_MLP's
        # recomputed down output alive at DW's matmul, one hidden-wide tensor beyond the saved set).
        bwd += c * h
        if "norm" not in chosen:
            # with transformers' LlamaRMSNorm around it, one more hidden-wide 16-bit tensor is alive at DW's matmul
            # (measured with the tracer: the 4-layer llama above, unsloth:mlp with checkpointing and Cut CE, LoRA
            # and QLoRA: -1.4 % without it)
            bwd += c * h
    # transformers' RMSNorm backward runs after LoRA_MLP's backward has freed X, e and g (measured with the tracer:
    # a 4-layer llama, hidden 256, MLP 1,024, unsloth:mlp with checkpointing, +5 % with the norm's fp32 gradients
    # counted on top of the whole saved set)
    norm_after = hf_norm_bwd - (c * h + 2 * c * i)
    return LayerActivations(
        tuple(terms),
        Term("LoRA_MLP forward (swiglu output, down output; e and g when not saved)", layer_fwd),
        Term("LoRA_MLP backward (dY, DW; the recomputed output)" if bwd >= norm_after
             else "rmsnorm backward (fp32)", max(bwd, norm_after), const=qlora_bwd),
        mlp_saved_per_token=mlp_saved, mlp_tail_per_token=2 * c * i, mlp_forward_per_token=mlp_fwd)


def final_norm_saved(m: ModelSpec, recipe: Recipe) -> int:
    """The final norm under LlamaModel_fast_forward: Fast_RMS_Layernorm's 16-bit input and fp32 rstd per token."""
    assert m.hidden_size is not None
    return dtype_bytes(recipe.compute) * m.hidden_size + 4
