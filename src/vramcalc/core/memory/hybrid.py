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
Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import hybrid_mixer, is_hybrid, mamba2_dims
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import LayerActivations
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_hybrid", "layer_activations", "check_run", "notes"]


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one FalconH1DecoderLayer: the decoder's attention and MLP, and the Mamba-2 mixer's."""
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


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Full fine-tuning: the gradients that appear only after the bottom layer's mixer backward, as for Mamba-2
    (memory/ssm.py late_gradient_bytes on the mixer's view: an untied embedding's, the bottom mixer's in_proj and
    conv1d; its block norm is input_layernorm here). The mixer runs first in the layer, so its backward is last."""
    if not is_hybrid(m) or t.method != "full":
        return 0
    from vramcalc.core.memory import ssm

    return ssm.late_gradient_bytes(hybrid_mixer(m), t, recipe)


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Falcon-H1 arithmetic does not cover, in one line."""
    if not is_hybrid(m):
        return
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.precision import recipe_of

    if t.mode != "train":
        raise UnsupportedCombination(f"--mode {t.mode} on {m.name}: generate() for Falcon-H1 (the KV cache beside "
                                     "each layer's Mamba-2 state) is not modelled; use --mode train")
    if t.method not in ("full", "lora", "qlora"):
        raise UnsupportedCombination(f"--method {t.method} on {m.name}: only full, lora and qlora are modelled for "
                                     "Falcon-H1; use one of those")
    if t.objective != "sft":
        raise UnsupportedCombination(f"--objective {t.objective} on {m.name}: only sft is modelled for Falcon-H1; use "
                                     "--objective sft")
    if recipe_of(t).autocast:
        raise UnsupportedCombination(f"--precision {t.precision} on {m.name}: autocast over the Mamba-2 mixer's "
                                     "PyTorch path is not modelled; use --precision bf16, pure-bf16 or fp32")
    if t.attention == "flash":
        raise UnsupportedCombination(f"--attention flash on {m.name}: traced with sdpa and eager only; use one of "
                                     "those")
    if t.packing != "none" or t.loss != "hf" or t.activation_offload or t.ac_every > 1:
        raise UnsupportedCombination(f"{m.name}: packing, other losses, activation offload and selective "
                                     "checkpointing are not modelled for Falcon-H1; drop them")


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Falcon-H1 estimate assumes (shown in every format)."""
    if not is_hybrid(m):
        return ()
    return (f"{m.name}: each layer's Mamba-2 mixer counted as transformers' PyTorch path (mamba2_chunk_scan, the row "
            f"padded to a multiple of chunk_size {m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d "
            "kernels; its attention as the decoder's; the muP multipliers' products as the temporaries they are "
            "(the attention and the mixer each read their own scaled copy of the normed input).",)
