"""Zamba2: Mamba-2 layers and shared attention blocks re-run at the hybrid layers, in bytes.

Source: transformers 5.24 models/zamba2/modeling_zamba2.py. Zamba2Model.forward clones the embeddings
(original_hidden_states) and runs len(layers_block_type) layers:
- Zamba2MambaDecoderLayer: residual; input_layernorm (Zamba2RMSNorm); Zamba2MambaMixer (Mamba2Mixer's PyTorch path:
  in_proj, causal_conv1d_fn, mamba2_chunk_scan, Zamba2RMSNormGated(scan, gate), out_proj); residual add. That is a
  Mamba2Block: memory/ssm.py mamba2_layer_activations on the mixer's Mamba-2 view (`mixer_view`).
- Zamba2HybridLayer at hybrid_layer_ids: the shared Zamba2AttentionDecoderLayer on concat(hidden, the clone)
  (input_layernorm over 2 x hidden; Zamba2Attention: q, k, v from 2 x hidden (+ the per-invocation projectors with
  use_shared_attention_adapter), RoPE with use_mem_rope, the attention interface, o_proj to hidden; pre_ff_layernorm;
  Zamba2MLP: gate_up_proj(x) + its projector(x), act(gate) x up, down_proj; no residual inside), then its own
  Linear(hidden, hidden), whose output is added to the layer's input before the Mamba2Block above.
The shared block's attention is the decoder's attention block (memory/activations.py layer_activations, its terms up to
the MLP) on a view 2 x hidden wide; its MLP the decoder's MLP block (the terms after the attention, pre_ff_layernorm
being the decoder's MLP norm) on a view of hidden width with the fused gate_up_proj. Every invocation saves its own
set (the weights are tied, the activations are not). A projector nn.Sequential(Linear(in, rank), Linear(rank, out))
saves its input (the same normed tensor the shared Linear saves) and its rank-wide middle when its weights train.

Each layer is counted by its kind: `layer_activations` is a hybrid layer's set (the larger), `layered_less` what the
Mamba layers and the bottom layer save less. The plan's once terms: RoPE's cos / sin (use_mem_rope) and, when
checkpointing saves the layers' inputs, the embeddings' clone every layer receives. Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.params import is_zamba2, resolve_targets
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["is_zamba2", "layer_activations", "layered_less", "check_run", "notes", "once_per_token"]

_ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
_MLP = frozenset({"gate_up_proj", "down_proj"})
_MIXER = frozenset({"in_proj", "out_proj"})
_ZEROED: dict[str, object] = {
    "mixer_intermediate_size": 0, "mixer_state_size": 0, "mixer_head_dim": 0, "mixer_gated_norm": False,
    "mixer_out_bias": False, "zamba_hybrid_layers": (), "zamba_mem_blocks": 0, "zamba_adapter_rank": 0,
    "zamba_attention_adapters": False, "zamba_mem_rope": False}


def mixer_view(m: ModelSpec) -> ModelSpec:
    """Zamba2MambaMixer as a Mamba-2 ModelSpec (memory/ssm.py reads it): its width, state, head dim, groups, conv,
    chunk; in_proj's and out_proj's bias is add_bias_linear; no fp32 residual (Zamba2MambaDecoderLayer adds in the
    hidden states' dtype)."""
    return replace(m, family="mamba2", intermediate_size=m.mixer_intermediate_size, ssm_state_size=m.mixer_state_size,
                   ssm_head_dim=m.mixer_head_dim, ssm_residual_fp32=False, num_attention_heads=None,
                   num_kv_heads=None, head_dim=None, norms_per_layer=1, qkv_bias=False, o_bias=False, mlp_bias=False,
                   **_ZEROED)


def _block_view(m: ModelSpec, width: int) -> ModelSpec:
    """The shared block as a one-layer Llama-style decoder `width` wide (2 x hidden for its attention, hidden for its
    MLP), head_dim 2 x hidden / heads, the fused gate_up_proj, pre_ff_layernorm as the MLP norm."""
    return replace(m, family="llama", hidden_size=width, num_layers=1, norms_per_layer=2, fused_gate_up=True,
                   ssm_conv_kernel=0, ssm_n_groups=0, ssm_chunk_size=0, ssm_conv_bias=False, ssm_proj_bias=False,
                   tie_word_embeddings=True, max_position_embeddings=None, **_ZEROED)


def adapted(m: ModelSpec, t: TrainingSpec) -> frozenset[str]:
    """The Zamba2 Linears (params.zamba2_modules names) LoRA adapts in this run."""
    if t.method not in ("lora", "qlora"):
        return frozenset()
    return frozenset(lin.module for lin in resolve_targets(m, t.lora_targets))


def _part_run(t: TrainingSpec, names: frozenset[str]) -> TrainingSpec:
    """The run as one part of the layer sees it: LoRA on `names` only, or no adapter there."""
    if t.method in ("lora", "qlora") and names:
        return replace(t, lora_targets=tuple(sorted(names)))
    return replace(t, method="full", lora_targets=("auto",))


def _projector_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable: bool, which: str, width: int,
                     names: frozenset[str], input_counted: bool) -> list[Term]:
    """A per-invocation projector (nn.Sequential(Linear(width, rank), Linear(rank, out))): the first Linear reads the
    same normed tensor as the shared Linear beside it, the second saves the rank-wide middle when its weight trains.
    Under LoRA (all-linear takes both) each adapter saves its input, as peft's lora.Linear does, and lora_A's
    output."""
    from vramcalc.core.memory.activations import Term

    c = dtype_bytes(recipe.compute)
    a = dtype_bytes(t.adapter_dtype)
    r, lr = m.zamba_adapter_rank, t.lora_rank
    fresh = a != c or t.lora_dropout > 0
    out_terms: list[Term] = []
    if trainable:
        out_terms.append(Term(f"{which} projector middle (rank-wide, saved by its second Linear)", c * r))
    for mod, w in ((f"{which}_adapter_in", width), (f"{which}_adapter_out", r)):
        if mod not in names:
            continue
        counted = trainable or (input_counted and mod.endswith("_in"))
        extra = a * lr + (a * w + (w if t.lora_dropout > 0 else 0) if fresh else 0 if counted else c * w)
        out_terms.append(Term(f"lora {mod} input", extra))
    return out_terms


def kind_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool, hybrid: bool,
                     input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one Zamba2 layer: a Mamba2Block, and for a hybrid layer the shared block and its Linear
    before it."""
    from vramcalc.core.memory import ssm
    from vramcalc.core.memory.activations import LayerActivations, Term
    from vramcalc.core.memory.activations import layer_activations as decoder_layer

    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    tw = trainable_weights
    names = adapted(m, t)
    h = m.hidden_size
    shared_live = input_grad or tw or bool(names - _MIXER)  # the shared block's output needs a gradient
    mix = ssm.mamba2_layer_activations(mixer_view(m), _part_run(t, names & _MIXER), recipe, tw,
                                       input_grad or (hybrid and shared_live), adapted=names & _MIXER)
    mix_terms = tuple(Term("mixer " + x.name, x.per_token, x.per_token_seq, x.per_sample, x.const)
                      for x in mix.terms)
    if not hybrid:
        return replace(mix, terms=mix_terms)
    att = decoder_layer(_block_view(m, 2 * h), _part_run(t, names & _ATTENTION), recipe, tw, input_grad)
    mlp = decoder_layer(_block_view(m, h), _part_run(t, names & _MLP), recipe, tw, True)
    att_terms = att.terms[:att.attention_terms]
    mlp_terms = mlp.terms[mlp.attention_terms:]
    terms = [Term("shared " + x.name, x.per_token, x.per_token_seq, x.per_sample, x.const) for x in att_terms]
    if m.zamba_attention_adapters:
        q_counted = tw or bool(names & {"q_proj", "k_proj", "v_proj"})
        for x in ("linear_q", "linear_k", "linear_v"):
            terms += _projector_terms(m, t, recipe, tw, x, 2 * h, names, q_counted)
    terms += [Term("shared " + x.name, x.per_token, x.per_token_seq, x.per_sample, x.const) for x in mlp_terms]
    terms += _projector_terms(m, t, recipe, tw, "gate_up_proj", h, names, tw or "gate_up_proj" in names)
    # Zamba2HybridLayer.linear: saves its input (the MLP's output) when its weight trains; LoRA on it, its own copy
    if tw:
        terms.append(Term("linear input (the shared block's output)", c * h))
    if t.grad_checkpointing:
        # the Mamba layer inside is a GradientCheckpointingLayer too: in the hybrid layer's rerun its checkpoint keeps
        # its inputs, the Linear's output among them (measured with the tracer, --grid zamba2 with checkpointing)
        terms.append(Term("inner checkpoint's input (the Linear's output)", c * h))
    if "linear" in names:
        a = dtype_bytes(t.adapter_dtype)
        fresh = a != c or t.lora_dropout > 0
        terms.append(Term("lora linear input", a * t.lora_rank + (a * h + (h if t.lora_dropout > 0 else 0) if fresh
                                                                   else 0 if tw else c * h)))
    terms += list(mix_terms)

    def widest(*xs: Term) -> Term:
        top = max(xs, key=lambda x: x.per_token)
        return Term(top.name, top.per_token, max(x.per_token_seq for x in xs), const=max(x.const for x in xs))

    fwd = widest(att.forward_transient, mlp.forward_transient, mix.forward_transient)
    bwd = widest(att.backward_transient, mlp.backward_transient, mix.backward_transient)
    # a checkpointed hybrid layer's rerun: the shared block first (its set saved), then the mixer's scan close
    return LayerActivations(tuple(terms), fwd, bwd, mlp_saved_per_token=mix.mlp_saved_per_token,
                            mlp_tail_per_token=mix.mlp_tail_per_token, mlp_forward_per_token=mix.mlp_forward_per_token)



def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """A hybrid layer's saved set (no smaller than a Mamba layer's in any component) with the widest transients of
    both kinds; a model without hybrid layers is all Mamba layers."""
    hybrid = bool(m.zamba_hybrid_layers)
    top = kind_activations(m, t, recipe, trainable_weights, hybrid, input_grad)
    return top


def layered_less(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                 bottom_input_grad: bool) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """What the layers together, and the bottom layer, save less than `layer_activations` (per token, per token x
    seq, per sample, whatever the batch): each layer by its kind; the bottom layer without an input gradient when
    `bottom_input_grad` is False (LoRA without checkpointing: the frozen embedding's output, and its clone)."""
    assert m.num_layers is not None
    top = layer_activations(m, t, recipe, trainable_weights).components()
    hybrid = set(m.zamba_hybrid_layers)
    kinds = {k: kind_activations(m, t, recipe, trainable_weights, k).components() for k in {i in hybrid for i in
                                                                                            range(m.num_layers)}}
    total = [0, 0, 0, 0]
    for i in range(m.num_layers):
        total = [x + e - y for x, e, y in zip(total, top, kinds[i in hybrid], strict=True)]
    at0 = 0 in hybrid
    low = peak_layer(m, t, recipe) if t.grad_checkpointing else 0  # the bottom moment's layer
    own = kind_activations(m, t, recipe, trainable_weights, low in hybrid, bottom_input_grad).components()
    bottom = [e - y for e, y in zip(top, own, strict=True)]
    if t.grad_checkpointing:  # the inputs kept for the layers up to the bottom moment's are still there
        bottom[0] -= dtype_bytes(recipe.compute) * (m.hidden_size or 0) * (low + 1)
    if not bottom_input_grad:  # the bottom layer's own drop joins the stack's
        total = [x + b - (e - y) for x, b, e, y in zip(total, bottom, top, kinds[at0], strict=True)]
    return (total[0], total[1], total[2], total[3]), (bottom[0], bottom[1], bottom[2], bottom[3])


def once_per_token(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Bytes per token held once for the whole step: RoPE's cos and sin (Zamba2RotaryEmbedding, head_dim 2 x hidden /
    heads, with use_mem_rope) and, when checkpointing saves each layer's inputs, the embeddings' clone
    (original_hidden_states, passed to every layer)."""
    from vramcalc.core.params import head_dim

    c = dtype_bytes(recipe.compute)
    rope = 2 * c * head_dim(m) if m.zamba_mem_rope and m.zamba_hybrid_layers else 0
    clone = c * (m.hidden_size or 0) if t.grad_checkpointing else 0
    return rope + clone


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Zamba2 arithmetic does not cover, in one line."""
    if not is_zamba2(m):
        return
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.hybrid import refuse_unmodelled

    refuse_unmodelled(m, t, "Zamba2", "the shared blocks' KV cache beside the Mamba-2 states",
                      ("full", "lora", "qlora"))
    from vramcalc.core.params import zamba2_all_tied

    if t.method == "qlora" and not zamba2_all_tied(m):
        # quantizers/base.py get_keys_to_not_convert skips tied keys only: an untied or once-run shared block's
        # Linears would be quantized, one module per hybrid layer (params.zamba2_quantized covers the tied case)
        raise UnsupportedCombination(f"--method qlora on {m.name}: modelled only when every shared block is tied "
                                     "across >= 2 hybrid layers (tie_word_embeddings, hybrid layers >= 2 x "
                                     "num_mem_blocks), as bitsandbytes then leaves them 16-bit; use --method lora")
    if t.dora or t.gpus_per_node * t.nodes > 1:
        raise UnsupportedCombination(f"{m.name}: DoRA and several GPUs are not modelled for Zamba2 (the shared "
                                     "blocks' tied weights across layers); drop them")


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Zamba2 estimate assumes (shown in every format)."""
    if not is_zamba2(m):
        return ()
    g = len(m.zamba_hybrid_layers)
    return (f"{m.name}: {(m.num_layers or 0)} Mamba-2 layers, {g} of them after a shared attention block "
            f"({min(m.zamba_mem_blocks, g)} weight sets counted once, each invocation's activations and LoRA adapters "
            "its own); the mixers counted as transformers' PyTorch path (mamba2_chunk_scan, the row padded to a "
            f"multiple of chunk_size {m.ssm_chunk_size}), what runs without the mamba_ssm / causal_conv1d kernels.",)



def _late_numel(m: ModelSpec, t: TrainingSpec, index: int) -> int:
    """Trainable parameters whose gradients are written after layer `index`'s backward: those of the layers below it
    (their Mamba layers, and the hybrid layers' Linears, projectors and per-invocation LoRA adapters; the shared
    blocks' weights were written by the topmost invocation) and, above the bottom layer, an untied embedding's."""
    from vramcalc.core.params import zamba2_mixer_dims

    assert m.hidden_size is not None and m.vocab_size is not None and m.intermediate_size is not None
    # (layer `index`'s own shared block, Linear and projectors too: their backward comes after its mixer's, where the
    # layer's peak is)
    h, n_hyb = m.hidden_size, sum(1 for i in m.zamba_hybrid_layers if i <= index)
    if t.method != "full":  # LoRA: each adapted module's lora_A and lora_B, per layer or per hybrid layer
        per_layer = per_hybrid = 0
        g = max(len(m.zamba_hybrid_layers), 1)
        for lin in resolve_targets(m, t.lora_targets):
            size = t.lora_rank * (lin.in_features + lin.out_features)
            if lin.module in _MIXER:
                per_layer += size
            else:  # (a projector's adapters in the other invocations' copies never get a gradient)
                per_hybrid += size * (g if "adapter" in lin.module else lin.count) // g
        return index * per_layer + n_hyb * per_hybrid
    heads, conv, proj = zamba2_mixer_dims(m)
    i, k, r = m.mixer_intermediate_size, m.ssm_conv_kernel, m.zamba_adapter_rank
    mixer = h * proj + i * h + conv * (k + 1) + 3 * heads + i + h
    hybrid = h * h + r * (h + 2 * m.intermediate_size) + (6 * 2 * h * r if m.zamba_attention_adapters else 0)
    return index * mixer + n_hyb * hybrid + (m.vocab_size * h if index and not m.tie_word_embeddings else 0)


def _grad_bytes(t: TrainingSpec, recipe: Recipe) -> int:
    """A gradient element: the adapter dtype's under LoRA (memory/__init__.py gradients), else the recipe's."""
    return dtype_bytes(t.adapter_dtype if t.method in ("lora", "qlora") else recipe.grad)


def peak_layer(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """With checkpointing: the layer whose recomputed backward holds the most, its own saved set beside every
    gradient written above it (a hybrid layer above a Mamba bottom layer: measured with the tracer, --grid zamba2
    shape A with checkpointing, the peak inside layer 1's backward with every upper gradient made)."""
    from vramcalc.core.memory.activations import batch_rows

    rows, seq = batch_rows(t)
    tokens = rows * seq
    g = _grad_bytes(t, recipe)
    tw = t.method == "full"
    hybrid = set(m.zamba_hybrid_layers)
    own = {k: kind_activations(m, t, recipe, tw, k) for k in {i in hybrid for i in range(m.num_layers or 0)}}
    return max(range(m.num_layers or 0), key=lambda j: own[j in hybrid].saved(tokens, seq) - _late_numel(m, t, j) * g)


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """The gradients written after the bottom moment: with checkpointing those below `peak_layer`; without it, full
    fine-tuning's as Mamba-2's (memory/ssm.py late_gradient_bytes on the mixer's view: an untied embedding's, the
    bottom mixer's in_proj, conv1d and block norm)."""
    if not is_zamba2(m) or t.method not in ("full", "lora"):
        return 0
    if t.grad_checkpointing:
        return _late_numel(m, t, peak_layer(m, t, recipe)) * _grad_bytes(t, recipe)
    if t.method != "full":
        return 0
    from vramcalc.core.memory import ssm

    return ssm.late_gradient_bytes(mixer_view(m), t, recipe)


def idle_lora_tensors(m: ModelSpec, t: TrainingSpec) -> tuple[tuple[tuple[int, ...], int], ...]:
    """LoRA tensors that get no gradient: each hybrid layer's copy of a shared block holds its block's c_b projectors
    (nn.Sequential per invocation of that block) but runs only its own, so peft's adapters on the others
    (all-linear takes every projector Linear) are stored but never used; AdamW keeps no state for them
    (torch.optim skips a parameter whose .grad is None). As (shape, count) of lora_A and lora_B."""
    if not is_zamba2(m) or t.method not in ("lora", "qlora"):
        return ()
    g = len(m.zamba_hybrid_layers)
    out: list[tuple[tuple[int, ...], int]] = []
    for lin in resolve_targets(m, t.lora_targets):
        if "adapter" in lin.module and lin.count > g:
            r = t.lora_rank * lin.rank_mult
            out += [((r, lin.in_features), lin.count - g), ((lin.out_features, r), lin.count - g)]
    return tuple(out)
