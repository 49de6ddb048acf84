"""Nemotron-H: Mamba-2, attention and MLP layers, each one block, in bytes.

Source: transformers 5.24 models/nemotron_h/modeling_nemotron_h.py. NemotronHModel builds layer i as a NemotronHBlock
of kind layers_block_type[i] (configuration_nemotron_h.py: hybrid_override_pattern's M, *, -): residual;
norm(hidden_states) (NemotronHRMSNorm: x.to(fp32), rsqrt of the mean square, then weight.to(fp32) x normalized, cast
back: the normalized tensor is saved in fp32 when the weight trains); ONE mixer; residual + its output, in the
compute dtype (residual_in_fp32 is not read by the block). The mixers:
- "M" NemotronHMamba2Mixer: Bamba's mixer line for line (in_proj, causal_conv1d_fn, mamba2_chunk_scan with dt clamped
  to (time_step_min, inf): clamp saves its input whatever the bounds, NemotronHRMSNormGated over n_groups groups,
  out_proj), run on transformers' PyTorch path without the mamba_ssm kernels: memory/ssm.py
  mamba2_layer_activations on the mixer's Mamba-2 view (params.hybrid_mixer), its block norm being this one;
- "*" NemotronHAttention (JambaAttention: q, k, v, o, no rotary embedding, the attention interface): the decoder's
  attention block (memory/activations.py layer_activations, its terms up to attention_terms);
- "-" NemotronHMLP (up_proj, relu2 = square(relu(x)), down_proj; not gated): the decoder's MLP block (its terms
  after attention_terms; relu saves its output, which square saves as its input: one tensor).
The layers differ, so the plan counts an envelope no smaller than any kind in each component (`layer_activations`)
and subtracts what each layer, and the bottom one, saves less (`layered_less`), so the stack's saved set is exact;
the transients are the widest of the kinds present. Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.params import hybrid_mixer, is_nemotron_h
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_nemotron_h", "layer_activations", "layered_less", "late_gradient_bytes", "check_run", "notes"]


def _kinds(m: ModelSpec) -> list[str]:
    return sorted(set(m.hybrid_pattern))


def kind_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool, kind: str,
                     input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one NemotronHBlock of the given kind ("M", "*" or "-")."""
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer
    from vramcalc.core.memory.hybrid import _mixer_adapted

    assert m.hidden_size is not None
    h = m.hidden_size
    # NemotronHRMSNorm multiplies by weight.to(fp32): a 16-bit weight's fp32 copy, saved by the product for the
    # input's gradient (derivatives.yaml mul.Tensor), once per layer whatever the batch (measured: 4 x hidden B)
    copy = [Term("norm weight (fp32 copy, saved by the fp32 multiply)", 0, const=4 * h)] \
        if input_grad and dtype_bytes(recipe.weight) != 4 else []
    if kind == "M":
        mix = ssm.mamba2_layer_activations(hybrid_mixer(m), t, recipe, trainable_weights, input_grad,
                                           adapted=_mixer_adapted(m, t))
        # NemotronHRMSNorm keeps its normalized tensor in fp32 for the weight's gradient (Mamba2RMSNorm: 16-bit)
        terms = tuple(Term("norm (normalized, fp32)", 4 * h) if x.name == "norm (normalized)" else x
                      for x in mix.terms)
        return replace(mix, terms=tuple(copy) + terms)
    # The "-" (and "*") layers through the decoder without the routed experts; the "E" layers with them (a LoRA
    # target only the E layers have, Nemotron 3 Super's latent projections, adapts nothing in the others)
    dense_t = replace(t, lora_targets=_dense_targets(m, t.lora_targets)) \
        if kind != "E" and set(t.lora_targets) & _LATENT else t
    dec = decoder_layer(m, t, recipe, trainable_weights, input_grad) if kind == "E" else \
        decoder_layer(_dense(m), dense_t, recipe, trainable_weights, input_grad)
    if kind == "*":
        att = tuple(copy) + dec.terms[:dec.attention_terms]
        return LayerActivations(att, dec.forward_transient, dec.backward_transient, attention_terms=len(att),
                                after_attention_per_token=dec.after_attention_per_token,
                                attn_backward_const=dec.attn_backward_const)
    # norms_per_layer 1: the decoder counts one norm, before its attention; an MLP or MoE layer's own norm is that
    # one. "E": NemotronHMoE as the decoder's fused MoE block (activations.py _fused_moe_terms: NemotronHTopkRouter as
    # DeepSeek-V3's, fp32; the ungated relu2 experts through grouped_mm; shared_experts, a NemotronHMLP over every
    # token, as the shared expert)
    norm = tuple(Term(x.name.replace("attn norm", "norm"), x.per_token, x.per_token_seq, x.per_sample, x.const)
                 for x in dec.terms[:dec.attention_terms] if x.name.startswith("attn norm"))
    mlp = tuple(copy) + norm + dec.terms[dec.attention_terms:]
    fwd = Term(dec.forward_transient.name, dec.forward_transient.per_token)  # no scores in an MLP layer
    bwd = Term(dec.backward_transient.name, dec.backward_transient.per_token, const=dec.backward_transient.const)
    return LayerActivations(mlp, fwd, bwd, mlp_saved_per_token=dec.mlp_saved_per_token,
                            mlp_tail_per_token=dec.mlp_tail_per_token, mlp_forward_per_token=dec.mlp_forward_per_token,
                            mlp_saved_const=dec.mlp_saved_const,
                            routed_backward_per_token=dec.routed_backward_per_token)


_LATENT = frozenset(("fc1_latent_proj", "fc2_latent_proj"))  # NemotronHMoE's latent projections (E layers only)


def _dense_targets(m: ModelSpec, targets: tuple[str, ...]) -> tuple[str, ...]:
    """The LoRA targets of the layers without experts: the list less the latent projections; when nothing is left,
    in_proj, the "M" layers' module, which the decoder arithmetic of a "*" or "-" layer never reads (no adapter)."""
    rest = tuple(x for x in targets if x not in _LATENT)
    if rest or "M" in m.hybrid_pattern:
        return rest or ("in_proj",)
    from vramcalc.core.errors import UnsupportedCombination

    raise UnsupportedCombination(f"{m.name}: LoRA on the latent projections alone of a Nemotron-H model without "
                                 "Mamba-2 layers is not modelled; add another target (q_proj)")


def _dense(m: ModelSpec) -> ModelSpec:
    """`m` without its routed experts (a dense Nemotron-H is itself), for the layers that have none."""
    if not m.num_experts:
        return m
    return replace(m, num_experts=0, experts_per_token=0, num_shared_experts=0, moe_intermediate_size=None,
                   shared_expert_intermediate_size=None, moe_latent_size=None, expert_groups=1, topk_expert_groups=1,
                   hybrid_pattern=m.hybrid_pattern.replace("E", "-"))


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """An envelope of the kinds present: the kind saving most per token, plus what any other kind saves beyond it in
    each component; the widest forward and backward transients of every kind (each field on its own)."""
    from vramcalc.core.memory.activations import Term

    layers = [kind_activations(m, t, recipe, trainable_weights, k, input_grad) for k in _kinds(m)]
    top = max(layers, key=lambda x: x.components()[0])
    comps = [x.components() for x in layers]
    base = top.components()
    extra = [max(c[j] for c in comps) - base[j] for j in range(4)]
    terms = top.terms
    if any(extra):
        terms += (Term("other layer kinds' saved set beyond this one (subtracted where a layer has none)",
                       extra[0], extra[1], extra[2], extra[3]),)

    def widest(xs: list[Term]) -> Term:
        head = max(xs, key=lambda x: x.per_token)
        return Term(head.name, head.per_token, max(x.per_token_seq for x in xs), const=max(x.const for x in xs))

    rerun = max(layers, key=lambda x: x.mlp_forward_per_token - x.mlp_tail_per_token)
    return replace(top, terms=terms, forward_transient=widest([x.forward_transient for x in layers]),
                   backward_transient=widest([x.backward_transient for x in layers]),
                   mlp_saved_per_token=min(x.mlp_saved_per_token for x in layers),
                   mlp_saved_const=min(x.mlp_saved_const for x in layers),
                   mlp_tail_per_token=rerun.mlp_tail_per_token, mlp_forward_per_token=rerun.mlp_forward_per_token,
                   attn_backward_const=max(x.attn_backward_const for x in layers), attention_terms=0,
                   routed_backward_per_token=max(x.routed_backward_per_token for x in layers))


def layered_less(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                 bottom_input_grad: bool) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """What the layers together, and the bottom one, save less than the envelope (per token, per token x seq, per
    sample, whatever the batch): each layer by its own kind; the bottom layer without an input gradient when
    `bottom_input_grad` is False (LoRA without checkpointing: the frozen embedding's output)."""
    env = layer_activations(m, t, recipe, trainable_weights, True).components()
    own = {k: kind_activations(m, t, recipe, trainable_weights, k, True).components() for k in _kinds(m)}
    total = [0, 0, 0, 0]
    for k in m.hybrid_pattern:
        total = [x + e - y for x, e, y in zip(total, env, own[k], strict=True)]
    k0 = m.hybrid_pattern[0]
    bottom_kind = kind_activations(m, t, recipe, trainable_weights, k0, bottom_input_grad).components()
    bottom = [e - y for e, y in zip(env, bottom_kind, strict=True)]
    if not bottom_input_grad:  # the bottom layer's own drop joins the stack's
        total = [x + b - (e - y) for x, b, e, y in zip(total, bottom, env, own[k0], strict=True)]
    return (total[0], total[1], total[2], total[3]), (bottom[0], bottom[1], bottom[2], bottom[3])


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Full fine-tuning with a Mamba-2 bottom layer: the gradients written only after its scan backward, as for
    Mamba-2 (memory/ssm.py late_gradient_bytes on the mixer's view: the untied embedding's, the bottom mixer's
    in_proj, conv1d and block norm)."""
    if not is_nemotron_h(m) or t.method != "full" or m.hybrid_pattern[0] != "M":
        return 0
    from vramcalc.core.memory import ssm

    return ssm.late_gradient_bytes(hybrid_mixer(m), t, recipe)


def lowest_mixer_rerun(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> dict[str, int]:
    """Full fine-tuning with checkpointing and a bottom layer that is not a mixer: the lowest mixer layer's rerun comes
    after every layer above it has written its gradients, as Bamba's (memory/hybrid.py lowest_mixer_rerun; measured
    with the tracer, --grid nemotronh shape B full with checkpointing, attention at the bottom: -5.5 % with the bottom
    layer's moment alone). The plan's fields: the gradient bytes not made yet (that layer's, those below it and the
    embedding's: sum(p.numel()) of the stack cut after it, less the final norm and the head) and its index."""
    from vramcalc.core.params import count_params

    p = m.hybrid_pattern
    if not is_nemotron_h(m) or "M" not in p or p[0] == "M" or m.hidden_size is None or m.vocab_size is None:
        return {}
    low = p.index("M")
    cut = replace(m if "E" in p[:low + 1] else _dense(m), num_layers=low + 1, hybrid_pattern=p[:low + 1])
    below = count_params(cut) - m.hidden_size - m.vocab_size * m.hidden_size
    return {"rerun_mixer_below": below * dtype_bytes(recipe.grad), "rerun_mixer_layer": low}


def recompute_bottom(m: ModelSpec) -> bool:
    """A Mamba-2 bottom layer: the scan's locals at its rerun, every upper gradient made (memory/ssm.py's moment)."""
    return is_nemotron_h(m) and m.hybrid_pattern[0] == "M"


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Nemotron-H arithmetic does not cover, in one line."""
    if not is_nemotron_h(m):
        return
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.hybrid import refuse_unmodelled

    refuse_unmodelled(m, t, "Nemotron-H", "the attention layers' KV cache beside the Mamba-2 states")
    if t.dora or t.tp > 1 or t.pp > 1:
        raise UnsupportedCombination(f"{m.name}: DoRA and tensor / pipeline parallelism are not modelled for "
                                     "Nemotron-H; drop them")


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Nemotron-H estimate assumes (shown in every format)."""
    if not is_nemotron_h(m):
        return ()
    p = m.hybrid_pattern
    groups = (f" within the best {m.topk_expert_groups} of {m.expert_groups} expert groups"
              if m.expert_groups > 1 else "")
    latent = (f"; the routed experts at the latent width {m.moe_latent_size}, between fc1_latent_proj and "
              "fc2_latent_proj" if m.moe_latent_size else "")
    moe = (f", {p.count('E')} MoE layers (NemotronHMoE: {m.num_experts} experts, top {m.experts_per_token}{groups} by "
           "the fp32 sigmoid router, DeepSeek-V3's; the ungated relu2 experts through transformers' default grouped_mm"
           f"{latent}; one shared expert {m.shared_expert_intermediate_size} wide)" if "E" in p else "")
    out = (f"{m.name}: {p.count('M')} Mamba-2 mixer layers, {p.count('*')} attention layers (no rotary embedding)"
           f"{moe} and {p.count('-')} relu2 MLP layers, each one block with its own norm, each counted by its kind; "
           "the mixers as transformers' PyTorch path (mamba2_chunk_scan, the row padded to a multiple of chunk_size "
           f"{m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d kernels.",)
    if m.checkpoint_mtp_layers:
        # modeling_nemotron_h.py: NemotronHModel builds no MTP layer; NemotronHPreTrainedModel's
        # _keys_to_ignore_on_load_unexpected = [r"mtp.*"]
        out += (f"{m.name}: the checkpoint's {m.checkpoint_mtp_layers} multi-token-prediction layer(s) (mtp.*) are "
                "dropped on load by NemotronHForCausalLM, which builds none: not counted; a framework that trains "
                "them (Megatron's MTP loss) is not modelled.",)
    return out

