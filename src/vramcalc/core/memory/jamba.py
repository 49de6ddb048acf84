"""Jamba: attention and Mamba-1 layers, dense and MoE feed-forwards, in bytes.

Source: transformers 5.24 models/jamba/modeling_jamba.py. JambaModel builds layer i as JambaAttentionDecoderLayer
when i % attn_layer_period == attn_layer_offset, else JambaMambaDecoderLayer; its feed_forward is a
JambaSparseMoeBlock when i % expert_layer_period == expert_layer_offset, else JambaMLP (configuration_jamba.py
layers_block_type, layers_num_experts). Both layers: residual; input_layernorm; the mixer (JambaAttention: q, k, v, o
without rotary embedding, through the attention interface; or JambaMambaMixer); the residual add; pre_ff_layernorm;
the feed-forward; the residual add, in the compute dtype (no fp32 residual).

JambaMambaMixer is MambaMixer's slow path (in_proj, causal_conv1d_fn, x_proj, dt_proj.weight @ dt,
mamba_selective_scan's sequential loop: what runs without the mamba_ssm / causal_conv1d kernels, on CPU and under the
tracer) with RMSNorms on dt, B and C: memory/ssm.py layer_activations on the mixer's Mamba-1 view
(params.jamba_mixer) with bc_norms. Its block norm there is the layer's input_layernorm (the same JambaRMSNorm
tensors). The attention layers and the feed-forwards are the decoder's (memory/activations.py layer_activations:
JambaMLP as Llama's, JambaSparseMoeBlock as the 3-D expert stacks through grouped_mm, Mixtral's path, with 16-bit
routing weights as Qwen-MoE's).

The layers differ, so the plan counts the largest kind's saved set per layer (`layer_activations`) and subtracts, per
layer, what its own kind saves less (`layer_differences`); the transients are the largest of every kind present.
Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.params import is_jamba, jamba_layer_kinds, jamba_mixer, resolve_targets

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import LayerActivations
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_jamba", "layer_activations", "layer_differences", "check_run", "notes"]

_MIXER_LINEARS = frozenset({"in_proj", "x_proj", "dt_proj", "out_proj"})


def _adapted_mixer(m: ModelSpec, t: TrainingSpec) -> frozenset[str]:
    """The mixer Linears LoRA adapts in this run. dt_proj's adapter runs only under 4-bit loading: without it
    JambaMambaMixer multiplies by dt_proj.weight itself; with it (config._is_quantized, set by transformers'
    quantizer) it calls dt_proj as a module (JambaMambaMixer.forward)."""
    if t.method not in ("lora", "qlora"):
        return frozenset()
    names = {lin.module for lin in resolve_targets(m, t.lora_targets)} & _MIXER_LINEARS
    if t.method == "lora":
        names.discard("dt_proj")
    return frozenset(names)


def kind_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool, attention: bool,
                     moe: bool, input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one Jamba layer of the given kind (an attention or a Mamba layer, a MoE or a dense
    feed-forward)."""
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    ff_m = m if moe else replace(m, num_experts=0, experts_per_token=0)
    dec = decoder_layer(ff_m, t, recipe, trainable_weights, input_grad)
    if attention:
        return dec
    mix = ssm.layer_activations(jamba_mixer(m), t, recipe, trainable_weights, input_grad,
                                adapted=_adapted_mixer(m, t), bc_norms=True)
    mlp_terms = dec.terms[dec.attention_terms:]
    terms = tuple(Term("mixer " + x.name, x.per_token, x.per_token_seq, x.per_sample, x.const) for x in mix.terms)
    # Forward: the scan's locals or the MLP's temporaries (not at once: the MLP runs after the mixer returns); no
    # attention scores. Backward: the MLP's gradients, then the mixer's (after the MLP's saved set is freed).
    fwd_t = max(mix.forward_transient.per_token, dec.forward_transient.per_token)
    fwd = Term(mix.forward_transient.name if fwd_t == mix.forward_transient.per_token
               else dec.forward_transient.name, fwd_t)
    mix_bwd = mix.backward_transient.per_token - dec.mlp_saved_per_token
    bwd = dec.backward_transient if dec.backward_transient.per_token >= mix_bwd \
        else Term(mix.backward_transient.name + ", after the MLP's saved set is freed", mix_bwd)
    bwd = Term(bwd.name, bwd.per_token, 0, const=dec.backward_transient.const)
    return LayerActivations(terms + mlp_terms, fwd, bwd, mlp_saved_per_token=dec.mlp_saved_per_token,
                            mlp_tail_per_token=dec.mlp_tail_per_token,
                            mlp_forward_per_token=dec.mlp_forward_per_token, mlp_saved_const=dec.mlp_saved_const,
                            attention_terms=len(terms))


def _kinds(m: ModelSpec) -> list[tuple[bool, bool]]:
    return sorted(set(jamba_layer_kinds(m)))


def _saved(layer: LayerActivations) -> tuple[int, int, int]:
    return (sum(x.per_token for x in layer.terms if not x.batch1_only), sum(x.per_token_seq for x in layer.terms),
            sum(x.const for x in layer.terms))


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """The largest kind's saved set (per token), with the largest forward and backward transients of every kind the
    model has (each field on its own: a Mamba layer's scan and an attention layer's eager scores)."""
    from vramcalc.core.memory.activations import Term

    layers = [kind_activations(m, t, recipe, trainable_weights, a, e, input_grad) for a, e in _kinds(m)]
    top = max(layers, key=lambda x: _saved(x)[0])

    def widest(terms: list[Term]) -> Term:
        head = max(terms, key=lambda x: x.per_token)
        return Term(head.name, head.per_token, max(x.per_token_seq for x in terms),
                    const=max(x.const for x in terms))

    return replace(top, forward_transient=widest([x.forward_transient for x in layers]),
                   backward_transient=widest([x.backward_transient for x in layers]),
                   mlp_saved_per_token=min(x.mlp_saved_per_token for x in layers),
                   mlp_tail_per_token=min(x.mlp_tail_per_token for x in layers),
                   mlp_forward_per_token=max(x.mlp_forward_per_token for x in layers))


def layer_differences(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      top: LayerActivations) -> tuple[int, int, int, int, int, int]:
    """(all layers' per-token, per-token x seq and per-layer bytes below num_layers x `top`, and the bottom moment's
    layer's alone, bottom_differences): each layer's own kind against the largest kind's set."""
    top_t, top_ts, top_c = _saved(top)
    own = {k: _saved(kind_activations(m, t, recipe, trainable_weights, *k)) for k in _kinds(m)}
    kinds = jamba_layer_kinds(m)
    less = [sum(top_x - own[k][j] for k in kinds) for j, top_x in enumerate((top_t, top_ts, top_c))]
    bottom = bottom_differences(m, t, recipe, trainable_weights, top)
    return less[0], less[1], less[2], bottom[0], bottom[1], bottom[2]


def _late_numel(m: ModelSpec, index: int) -> int:
    """Parameters whose gradients are written after layer `index`'s backward: the layers below it and, above the
    bottom layer, an untied embedding (embedding_dense_backward comes last). At the bottom layer the bottom moment
    keeps the embedding's gradient: measured with the tracer, --grid jamba full with checkpointing, shape A's peak
    at the bottom layer reads -2.6 % with it late, shape B's at layer 1 +4.0 % with it not late."""
    from vramcalc.core.params import jamba_layer_params

    assert m.vocab_size is not None and m.hidden_size is not None
    kinds = jamba_layer_kinds(m)
    return (sum(jamba_layer_params(m, *k) for k in kinds[:index])
            + (m.vocab_size * m.hidden_size if index and not m.tie_word_embeddings else 0))


def peak_layer(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Full fine-tuning with checkpointing: the layer whose recomputed backward holds the most, its own saved set
    beside every gradient written above it (the layers' kinds differ, so that is not always the bottom layer)."""
    from vramcalc.core.memory.activations import batch_rows
    from vramcalc.core.units import dtype_bytes

    rows, seq = batch_rows(t)
    tokens = rows * seq
    g = dtype_bytes(recipe.grad)
    own = {k: kind_activations(m, t, recipe, True, *k) for k in _kinds(m)}
    kinds = jamba_layer_kinds(m)

    def held(j: int) -> int:
        a = own[kinds[j]]
        return a.saved(tokens, seq) - _late_numel(m, j) * g

    return max(range(len(kinds)), key=held)


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Full fine-tuning with checkpointing: the gradients written after the backward of `peak_layer` (the bottom
    moment's layer)."""
    if not is_jamba(m) or t.method != "full" or not t.grad_checkpointing:
        return 0
    from vramcalc.core.units import dtype_bytes

    return _late_numel(m, peak_layer(m, t, recipe)) * dtype_bytes(recipe.grad)


def bottom_differences(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                       top: LayerActivations) -> tuple[int, int, int]:
    """(per-token, per-token x seq, per-layer) bytes the bottom moment's layer saves below `top`: the bottom layer's,
    or with full fine-tuning and checkpointing `peak_layer`'s."""
    index = peak_layer(m, t, recipe) if t.method == "full" and t.grad_checkpointing else 0
    own = _saved(kind_activations(m, t, recipe, trainable_weights, *jamba_layer_kinds(m)[index]))
    return tuple(x - y for x, y in zip(_saved(top), own, strict=True))  # type: ignore[return-value]


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Jamba arithmetic does not cover, in one line."""
    if not is_jamba(m):
        return
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.hybrid import refuse_unmodelled

    refuse_unmodelled(m, t, "Jamba", "the attention layers' KV cache beside the Mamba layers' states",
                      mixer="the Mamba mixer's PyTorch scan")
    if t.dora or t.tp > 1 or t.pp > 1:
        raise UnsupportedCombination(f"{m.name}: DoRA and tensor / pipeline parallelism are not modelled for Jamba; "
                                     "drop them")


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Jamba estimate assumes (shown in every format)."""
    if not is_jamba(m):
        return ()
    out = (f"{m.name}: each Mamba layer's mixer counted as transformers' PyTorch path (mamba_selective_scan's "
           "sequential loop: the fp32 discretized A and B and every step's state saved, batch x "
           f"{m.jamba_mixer_size} x seq x {m.jamba_state_size} each), what runs without the mamba_ssm / "
           "causal_conv1d kernels; the attention layers (no rotary embedding) and the dense / MoE feed-forwards "
           "as the decoder's; each layer counted by its own kind.",)
    if t.method == "lora" and "dt_proj" in {lin.module for lin in resolve_targets(m, t.lora_targets)}:
        out += (f"{m.name}: LoRA on dt_proj never runs (JambaMambaMixer multiplies by dt_proj.weight itself unless "
                "the model is quantized): its factors get no gradient and AdamW keeps no state for them, which the "
                "gradients and optimizer state here still count (an over-estimate of 2 x rank x (dt_rank + "
                "mixer width) elements per Mamba layer each).",)
    return out
