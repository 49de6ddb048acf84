"""Falcon-H1: attention and a Mamba-2 mixer side by side in every layer, then an MLP, in bytes.

Source: transformers 5.24 models/falcon_h1/modeling_falcon_h1.py. FalconH1DecoderLayer.forward: residual;
input_layernorm; mamba(normed) x ssm_out_multiplier; self_attn(normed x attention_in_multiplier) x
attention_out_multiplier; their sum added to the residual; pre_ff_layernorm; FalconH1MLP (up x act(gate x
gate_multiplier), down x down_multiplier). FalconH1Mixer is Mamba2Mixer with its own width (mamba_d_ssm), its input
scaled by ssm_in_multiplier, in_proj's output by the mup_vector buffer, and an optional gated norm (mamba_rms_norm;
without it the scan output is multiplied by silu(gate)). The scan is the same mamba2_chunk_scan as Mamba-2's.

Which multipliers allocate a tensor autograd keeps: a product by a Python float saves nothing (derivatives.yaml
mul.Scalar), but it is a new tensor, and a Linear that reads it saves it. So the mixer's in_proj and the attention's
q, k, v each read their own scaled copy of the normed input (two hidden-wide tensors where a Llama layer has one);
the mup_vector product replaces in_proj's output as what conv1d keeps; the gate multiplier's product is what silu
saves (a Llama MLP's silu saves gate_proj's output instead: the same bytes). The embedding, key, output and lm_head
multipliers make forward temporaries only.

The mixer runs transformers' PyTorch path (mamba2_chunk_scan; the mamba_ssm kernels need CUDA and are not what the
tracer or a GPU without them runs): its saved set is memory/ssm.py mamba2_layer_activations on the mixer's Mamba-2
view (params.hybrid_mixer), less its block norm (Falcon-H1's is the layer's input_layernorm) and, without
mamba_rms_norm, its gated norm. The attention and MLP are the decoder's (memory/activations.py layer_activations).
Bamba (models/bamba/modeling_bamba.py BambaDecoderLayer) runs EITHER a mixer OR attention in a layer, then an MLP:
residual; input_layernorm; BambaMixer (Mamba2Mixer's PyTorch path: in_proj, causal_conv1d_fn, mamba2_chunk_scan,
BambaRMSNormGated(scan, gate), out_proj) or BambaAttention (Llama's, RoPE on half of each head:
partial_rotary_factor 0.5); residual add; pre_ff_layernorm; BambaMLP (SwiGLU); residual add. No multipliers. A mixer
layer is therefore a Mamba2Block (memory/ssm.py mamba2_layer_activations on the mixer view, its block norm being
input_layernorm) followed by the decoder's MLP block (memory/activations.py, the terms after its attention block); an
attention layer is the decoder's layer as is. layer_activations gives an envelope of the two kinds (the mixer
layer's terms plus what an attention layer saves beyond them, per component); layered_less says what all the layers
and the bottom one save less than the envelope, so that the sum over layers is exact.
Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import hybrid_mixer, is_hybrid, is_layered_hybrid, mamba2_dims
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import LayerActivations
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_hybrid", "is_layered_hybrid", "layer_activations", "layered_less", "check_run", "notes"]


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one FalconH1DecoderLayer: the decoder's attention and MLP, and the Mamba-2 mixer's (Bamba:
    the envelope of its mixer and attention layers, _bamba_envelope)."""
    if is_layered_hybrid(m):
        env = _bamba_envelope(m, t, recipe, trainable_weights, input_grad)
        return _granite_scaled_gradient(m, recipe, env) if m.family == "granitemoehybrid" else env
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    dec = decoder_layer(m, t, recipe, trainable_weights, input_grad)
    x = hybrid_mixer(m)
    mix = ssm.mamba2_layer_activations(x, t, recipe, trainable_weights, input_grad=False)
    c = dtype_bytes(recipe.compute)
    i = x.intermediate_size or 0
    terms = []
    for term in mix.terms:
        if term.name.startswith("norm ("):  # Mamba2Block.norm: Falcon-H1's is input_layernorm, counted above
            continue
        if not m.mixer_gated_norm and term.name.startswith("gated norm"):
            continue
        terms.append(Term("mixer " + term.name, term.per_token, term.per_token_seq, term.per_sample, term.const))
    if not m.mixer_gated_norm:
        # scan_output * silu(gate): silu saves the gate (a view of the mup product conv1d keeps), the mul its fp32
        # operand (the scan output, counted above) and silu's 16-bit output.
        terms.append(Term("mixer silu(gate) (16-bit, saved by y x silu(gate))", c * i))
    # The mup_vector buffer (1, 1, in_proj width) in the weights' dtype, saved by the product for in_proj's gradient.
    terms.append(Term("mixer mup_vector (saved by in_proj x mup_vector)", 0,
                      const=mamba2_dims(x)[2] * dtype_bytes(recipe.weight)))
    fwd = dec.forward_transient if dec.forward_transient.per_token >= mix.forward_transient.per_token \
        else mix.forward_transient
    # A checkpointed layer's rerun (the backward.recompute moment: the saved set less `tail`, plus `rerun` in flight):
    # either the MLP's up-projection (the decoder's moment) or the mixer's scan close, which comes first in the
    # layer, before the attention and MLP save anything (memory/ssm.py's rerun and the mixer's unsaved tail).
    dec_saved_t = sum(x.per_token for x in dec.terms) - sum(x.per_token for x in dec.terms
                                                               if x.name.startswith("attn norm"))
    mix_tail, mix_rerun = mix.mlp_tail_per_token + dec_saved_t, mix.mlp_forward_per_token
    # Backward: the MLP's, then the attention's (the later branch of the sum), then the mixer's, whose gradients are
    # there only once the attention's and MLP's saved tensors are freed: its transient counts beyond the saved set
    # less those (the moments add a layer's transient to its whole saved set).
    mix_bwd = mix.backward_transient.per_token - dec_saved_t
    bwd = dec.backward_transient if dec.backward_transient.per_token >= mix_bwd \
        else Term(mix.backward_transient.name + ", after the attention's and MLP's saved sets are freed", mix_bwd)
    tail, rerun = (dec.mlp_tail_per_token, dec.mlp_forward_per_token) \
        if dec.mlp_forward_per_token - dec.mlp_tail_per_token >= mix_rerun - mix_tail else (mix_tail, mix_rerun)
    return LayerActivations(dec.terms + tuple(terms), fwd, bwd, mlp_saved_per_token=dec.mlp_saved_per_token,
                            mlp_tail_per_token=tail, mlp_forward_per_token=rerun,
                            after_attention_per_token=dec.after_attention_per_token)


def _granite_scaled_gradient(m: ModelSpec, recipe: Recipe, layer: LayerActivations) -> LayerActivations:
    """GraniteMoeHybridDecoderLayer adds each block's output as `residual + hidden_states * residual_multiplier`
    (modeling_granitemoehybrid.py): in backward the add passes the layer's output gradient on unchanged and the
    product by a Python float makes a new tensor, grad x residual_multiplier (derivatives.yaml mul.Scalar), which the
    block's backward reads while the output gradient is still held for the residual path. Bamba's plain add passes
    one tensor to both. So one more hidden-wide gradient during each block's backward and at a checkpointed layer's
    rerun (which starts at output_linear's backward). --grid granite LoRA with checkpointing at s128 was -2.14 %
    without it."""
    from dataclasses import replace

    assert m.hidden_size is not None
    g = m.hidden_size * dtype_bytes(recipe.compute)  # an activation gradient: the activations' dtype
    bwd = layer.backward_transient
    return replace(layer, backward_transient=replace(bwd, name=bwd.name + " + the residual_multiplier product's "
                                                     "gradient", per_token=bwd.per_token + g),
                   mlp_forward_per_token=layer.mlp_forward_per_token + g)


def _mixer_adapted(m: ModelSpec, t: TrainingSpec) -> frozenset[str]:
    """The mixer Linears LoRA adapts (peft 0.21 refuses out_proj for falcon_h1 and mamba, not for bamba)."""
    if t.method not in ("lora", "qlora"):
        return frozenset()
    from vramcalc.core.params import resolve_targets

    return frozenset(lin.module for lin in resolve_targets(m, t.lora_targets) if lin.module in ("in_proj", "out_proj"))


def bamba_mixer_layer(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """One Bamba mixer layer: input_layernorm + BambaMixer as a Mamba2Block (memory/ssm.py; BambaMixer is Mamba2Mixer
    with its gated norm, mamba2_chunk_scan the same function), then pre_ff_layernorm + BambaMLP, the decoder's MLP
    block (memory/activations.py: its terms after the attention block's)."""
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    adapted = _mixer_adapted(m, t)
    mix = ssm.mamba2_layer_activations(hybrid_mixer(m), t, recipe, trainable_weights, input_grad, adapted=adapted)
    # The MLP's input needs a gradient when the mixer's output does (the layer's input, trained weights or an
    # adapter in the mixer). Otherwise the decoder's rule (its attention adapters make it live) may count the MLP
    # norm's input once more than autograd keeps: an over-estimate of one bottom layer.
    dec = decoder_layer(m, t, recipe, trainable_weights, input_grad or trainable_weights or bool(adapted))
    mlp = dec.terms[dec.attention_terms:]
    mlp_t = sum(x.per_token for x in mlp if not x.batch1_only)
    terms = tuple(Term("mixer " + x.name, x.per_token, x.per_token_seq, x.per_sample, x.const) for x in mix.terms)
    # (memory/ssm.py's forward transient is not netted of the gated norm's and out_proj's saved terms: the
    # temporaries never shrink as seq_len grows; tests/test_properties.py drew bamba-9b at seq 1 -> 2 when it was)
    mix_fwd = mix.forward_transient
    fwd = dec.forward_transient if dec.forward_transient.per_token >= mix_fwd.per_token else mix_fwd
    fwd = Term(fwd.name, fwd.per_token)  # no scores in a mixer layer
    # Backward: the MLP's first, then the mixer's, after the MLP's saved set is freed.
    mix_bwd = mix.backward_transient.per_token - mlp_t
    bwd = Term(dec.backward_transient.name, dec.backward_transient.per_token,
               const=dec.backward_transient.const) if dec.backward_transient.per_token >= mix_bwd \
        else Term(mix.backward_transient.name + ", after the MLP's saved set is freed", mix_bwd)
    # A checkpointed layer's rerun: the mixer's scan close (before the MLP saves anything) or the MLP's up-projection.
    mix_tail, mix_rerun = mix.mlp_tail_per_token + mlp_t, mix.mlp_forward_per_token
    tail, rerun = (dec.mlp_tail_per_token, dec.mlp_forward_per_token) \
        if dec.mlp_forward_per_token - dec.mlp_tail_per_token >= mix_rerun - mix_tail else (mix_tail, mix_rerun)
    return LayerActivations(terms + mlp, fwd, bwd, mlp_saved_per_token=dec.mlp_saved_per_token,
                            mlp_tail_per_token=tail, mlp_forward_per_token=rerun,
                            mlp_saved_const=dec.mlp_saved_const, attention_terms=len(terms))



def _bamba_envelope(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                    input_grad: bool) -> LayerActivations:
    """A layer no smaller than either Bamba kind in any component: the mixer layer's terms plus what an attention
    layer saves beyond them; its transients the larger of the two. What the layers save less than this is
    layered_less's (the estimate's layers_less / bottom_less), so the whole stack's saved set is exact; a
    checkpointed layer's rerun counts the larger kind."""
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    mix = bamba_mixer_layer(m, t, recipe, trainable_weights, input_grad)
    if not m.attention_layers:
        return mix
    att = decoder_layer(m, t, recipe, trainable_weights, input_grad)
    if len(m.attention_layers) == m.num_layers:
        return att
    a, b = mix.components(), att.components()
    extra = [max(0, y - x) for x, y in zip(a, b, strict=True)]
    terms = mix.terms
    if any(extra):
        terms += (Term("attention layers' saved set beyond a mixer layer's (subtracted where a layer has none)",
                       extra[0], extra[1], extra[2], extra[3]),)

    def larger(x: Term, y: Term) -> Term:
        return Term(x.name if x.per_token >= y.per_token else y.name, max(x.per_token, y.per_token),
                    max(x.per_token_seq, y.per_token_seq), const=max(x.const, y.const))

    tail, rerun = (mix.mlp_tail_per_token, mix.mlp_forward_per_token) \
        if mix.mlp_forward_per_token - mix.mlp_tail_per_token >= att.mlp_forward_per_token - att.mlp_tail_per_token \
        else (att.mlp_tail_per_token, att.mlp_forward_per_token)
    return LayerActivations(terms, larger(mix.forward_transient, att.forward_transient),
                            larger(mix.backward_transient, att.backward_transient),
                            mlp_saved_per_token=min(mix.mlp_saved_per_token, att.mlp_saved_per_token),
                            mlp_tail_per_token=tail, mlp_forward_per_token=rerun,
                            mlp_saved_const=min(mix.mlp_saved_const, att.mlp_saved_const),
                            attn_backward_const=att.attn_backward_const)


def layered_less(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                 bottom_input_grad: bool) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """What Bamba's layers together, and its bottom layer, save less than the envelope (per token, per token x seq,
    per sample, whatever the batch): each layer's kind from attn_layer_indices; the bottom layer without an input
    gradient when `bottom_input_grad` is False (LoRA without checkpointing: the frozen embedding's output)."""
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    assert m.num_layers is not None
    env = _bamba_envelope(m, t, recipe, trainable_weights, True).components()
    kinds = {False: bamba_mixer_layer(m, t, recipe, trainable_weights, True).components()}
    if m.attention_layers:
        kinds[True] = decoder_layer(m, t, recipe, trainable_weights, True).components()
    attn = set(m.attention_layers)
    total = [0, 0, 0, 0]
    for i in range(m.num_layers):
        k = kinds[i in attn]
        total = [x + e - y for x, e, y in zip(total, env, k, strict=True)]
    at0 = 0 in attn
    bottom_kind = (decoder_layer(m, t, recipe, trainable_weights, bottom_input_grad) if at0 else
                   bamba_mixer_layer(m, t, recipe, trainable_weights, bottom_input_grad))
    bottom = [e - y for e, y in zip(env, bottom_kind.components(), strict=True)]
    if not bottom_input_grad:  # the bottom layer's own drop joins the stack's
        total = [x + b - (e - y) for x, b, e, y in zip(total, bottom, env, kinds[at0], strict=True)]
    return (total[0], total[1], total[2], total[3]), (bottom[0], bottom[1], bottom[2], bottom[3])


def lowest_mixer_rerun(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> dict[str, int]:
    """Bamba, full fine-tuning with checkpointing (GraniteMoeHybrid: LoRA too): the lowest mixer layer's rerun comes
    after every layer above it has written its gradients (an attention layer on top does not hold the largest rerun:
    measured with the tracer, --grid bamba full with checkpointing, attn_layer_indices [0, 3]: the peak at layer 1's
    rerun, -6.4 % when only the head's gradients were counted there). The plan's fields: the gradient bytes not made
    yet (that layer's, those below it and the embedding's: sum(p.numel()) of the stack cut after it, less the final
    norm and the head) and its index."""
    from dataclasses import replace

    from vramcalc.core.params import count_params, outer_targets

    if not is_layered_hybrid(m) or m.num_layers is None or m.hidden_size is None or m.vocab_size is None:
        return {}
    attn = set(m.attention_layers)
    low = next((i for i in range(m.num_layers) if i not in attn), None)
    if low is None:
        return {}
    if t.method in ("lora", "qlora"):
        # GraniteMoeHybrid LoRA with checkpointing: the same moment, with the adapters' gradients of the layers above
        # made (measured with the tracer, --grid granite MoE shape B LoRA all-linear with checkpointing: the peak at
        # layer 1's rerun with half the adapters' gradients alive, -2.32 % when only the top layer's rerun was counted).
        # Not made yet: each adapted Linear's share in the layers up to `low`, by kind (attention, mixer, every
        # layer's MLP), and the embedding's adapter (the last; the head's exists from the start of backward).
        from vramcalc.core.params import resolve_targets

        n_attn = len(m.attention_layers)
        attn_cut = sum(1 for i in m.attention_layers if i <= low)
        kinds = {"in_proj": (low + 1 - attn_cut, m.num_layers - n_attn), "out_proj": (low + 1 - attn_cut,
                                                                                      m.num_layers - n_attn)}
        kinds |= dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"), (attn_cut, max(n_attn, 1)))
        below = 0
        for lin in resolve_targets(m, t.lora_targets):
            cut_n, n = kinds.get(lin.module.rsplit(".", 1)[-1], (low + 1, m.num_layers))
            below += t.lora_rank * lin.rank_mult * (lin.in_features + lin.out_features) * lin.count * cut_n // n
        if "embed_tokens" in outer_targets(t.lora_targets):
            below += t.lora_rank * (m.vocab_size + m.hidden_size)
        return {"rerun_mixer_below": below * dtype_bytes(t.adapter_dtype), "rerun_mixer_layer": low}
    cut = replace(m, num_layers=low + 1, attention_layers=tuple(i for i in m.attention_layers if i < low))
    below = count_params(cut) - m.hidden_size - m.vocab_size * m.hidden_size
    return {"rerun_mixer_below": below * dtype_bytes(recipe.grad), "rerun_mixer_layer": low}


def layer_gradients_before_mixer(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Falcon-H1, full fine-tuning: one layer's weight gradients written before its mixer's scan backward. The bottom
    layer's MLP and attention nodes do not hold them yet (memory/__init__.py bottom_layer_grads, as a dense decoder's
    bottom layer: _dense_late_gradient_bytes layer=True); its mixer node does (backward.bottom_mixer,
    bottom_mixer_node). FalconH1DecoderLayer.forward (modeling_falcon_h1.py) runs the mixer, then self_attn on the
    same normed input, then pre_ff_layernorm and the MLP, so autograd (torch/csrc/autograd engine: the later node
    first; AccumulateGrad writes each .grad as its parameter's gradient is made) runs the MLP's backward, then the
    attention's, then the mixer's: out_proj, its gated norm and D (the scan's skip) before the scan; in_proj, conv1d,
    dt_bias, A_log and input_layernorm after it (late_gradient_bytes). With checkpointing (torch/utils/checkpoint.py,
    non-reentrant: the layer's forward rerun at its first unpack) the bottom layer's rerun holds none of them either
    (backward.recompute_bottom). Measured with the tracer's live tensors, --grid hybrid full fp32 b2 s64 with
    checkpointing: the peak inside the bottom layer's scan backward holds both layers' q/k/v/o, MLP and out_proj
    gradients and the top layer's in_proj and conv1d only; 3-layer shape, pure-bf16 b2 s64: the peak at the bottom
    layer's rerun (the scan's forward clones) with the two upper layers' gradients and none of the bottom one's.
    Sharded, offloaded or accumulated gradients are not written in this order: 0."""
    if not is_hybrid(m) or is_layered_hybrid(m) or t.method != "full" or m.num_layers is None \
            or m.hidden_size is None:
        return 0
    if t.zero or t.fsdp not in ("none", "no-shard") or t.offload != "none" or t.grad_accum > 1:
        return 0
    from vramcalc.core.params import inventory

    late = ("in_proj", "conv1d", "dt_bias", "A_log")
    numel = sum(x.numel for x in inventory(m) if x.per_layer and x.module not in late) // m.num_layers
    return (numel - m.hidden_size) * dtype_bytes(recipe.grad)  # (less input_layernorm's weight)


def bottom_mixer_node(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> dict[str, int]:
    """Falcon-H1, full fine-tuning: the bottom layer's scan backward as a moment of its own (backward.bottom_mixer),
    beside its layer's gradients made before it (layer_gradients_before_mixer), which backward.bottom (its MLP's and
    attention's nodes) leaves out. The plan's fields, per token: the mixer's backward transient and the attention's
    and MLP's saved sets, freed by then (autograd releases a node's saved tensors once it has run)."""
    if not layer_gradients_before_mixer(m, t, recipe):
        return {}
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    dec = decoder_layer(m, t, recipe, True, True)
    mix = ssm.mamba2_layer_activations(hybrid_mixer(m), t, recipe, True, input_grad=False)
    freed = sum(x.per_token for x in dec.terms if not x.name.startswith("attn norm") and not x.batch1_only)
    return {"bottom_mixer_t": mix.backward_transient.per_token, "bottom_mixer_freed_t": freed}


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Full fine-tuning: the gradients that appear only after the bottom layer's mixer backward, as for Mamba-2
    (memory/ssm.py late_gradient_bytes on the mixer's view: an untied embedding's, the bottom mixer's in_proj and
    conv1d; its block norm is input_layernorm here). The mixer runs first in the layer, so its backward is last."""
    if not is_hybrid(m) or t.method != "full" or 0 in m.attention_layers:  # (Bamba: an attention bottom layer)
        return 0
    from vramcalc.core.memory import ssm

    return ssm.late_gradient_bytes(hybrid_mixer(m), t, recipe)


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Falcon-H1 / Bamba arithmetic does not cover, in one line."""
    if not is_hybrid(m):
        return
    kind = ("GraniteMoeHybrid" if m.family == "granitemoehybrid" else "Bamba") if is_layered_hybrid(m) \
        else "Falcon-H1"
    refuse_unmodelled(m, t, kind, "the KV cache beside each layer's Mamba-2 state")


def refuse_unmodelled(m: ModelSpec, t: TrainingSpec, kind: str, cache: str,
                      methods: tuple[str, ...] = ("full", "lora", "qlora"), why_methods: str = "",
                      mixer: str = "the Mamba-2 mixer's PyTorch path") -> None:
    """The refusals every state-space hybrid's arithmetic shares (Falcon-H1, Bamba, GraniteMoeHybrid, Nemotron-H,
    Zamba2, Jamba), each in one line naming `kind`: `cache` says what generate() would hold, `methods` what is
    modelled, `mixer` what autocast would run over."""
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.precision import recipe_of

    if t.mode != "train":
        raise UnsupportedCombination(f"--mode {t.mode} on {m.name}: generate() for {kind} ({cache}) is not "
                                     "modelled; use --mode train")
    if t.method not in methods:
        listed = ", ".join(methods[:-1]) + " and " + methods[-1]
        raise UnsupportedCombination(f"--method {t.method} on {m.name}: only {listed} are modelled for {kind}"
                                     f"{why_methods}; use one of those")
    if t.objective != "sft":
        raise UnsupportedCombination(f"--objective {t.objective} on {m.name}: only sft is modelled for {kind}; use "
                                     "--objective sft")
    if recipe_of(t).autocast:
        raise UnsupportedCombination(f"--precision {t.precision} on {m.name}: autocast over {mixer} is not "
                                     "modelled; use --precision bf16, pure-bf16 or fp32")
    if t.attention == "flash":
        raise UnsupportedCombination(f"--attention flash on {m.name}: traced with sdpa and eager only; use one of "
                                     "those")
    if t.packing != "none" or t.loss != "hf" or t.activation_offload or t.ac_every > 1:
        raise UnsupportedCombination(f"{m.name}: packing, other losses, activation offload and selective "
                                     f"checkpointing are not modelled for {kind}; drop them")


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Falcon-H1 estimate assumes (shown in every format)."""
    if not is_hybrid(m):
        return ()
    if m.family == "granitemoehybrid":
        n_attn = len(m.attention_layers)
        ffn = (f"block_sparse_moe ({m.num_experts} experts, top {m.experts_per_token}: the fp32 router's top-k, then "
               "the 3-D experts through transformers' default grouped_mm, as Mixtral's) beside shared_mlp"
               if m.num_experts else "the dense shared_mlp")
        return (f"{m.name}: {(m.num_layers or 0) - n_attn} Mamba-2 mixer layers and {n_attn} attention layers "
                f"(layer_types' attention at {list(m.attention_layers)}, no positions: \"nope\"), each with "
                f"{ffn}; the mixers counted as transformers' PyTorch path (mamba2_chunk_scan, the row padded "
                f"to a multiple of chunk_size {m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d "
                "kernels; the embedding, residual and logits multipliers' products as the temporaries they are.",)
    if is_layered_hybrid(m):
        n_attn = len(m.attention_layers)
        return (f"{m.name}: {(m.num_layers or 0) - n_attn} Mamba-2 mixer layers and {n_attn} attention layers "
                f"(attn_layer_indices {list(m.attention_layers)}), each with an MLP; the mixers counted as "
                "transformers' PyTorch path (mamba2_chunk_scan, the row padded to a multiple of chunk_size "
                f"{m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d kernels; the attention as "
                "the decoder's (RoPE on half of each head).",)
    return (f"{m.name}: each layer's Mamba-2 mixer counted as transformers' PyTorch path (mamba2_chunk_scan, the row "
            f"padded to a multiple of chunk_size {m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d "
            "kernels; its attention as the decoder's; the muP multipliers' products as the temporaries they are "
            "(the attention and the mixer each read their own scaled copy of the normed input).",)
