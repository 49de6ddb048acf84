"""torch.compile of the training step (`--compile`): Llama-like layers and losses modelled, the rest as the eager step.

How the tools compile: transformers 5.24's Trainer hands TrainingArguments' torch_compile_backend / _mode to
accelerate's TorchDynamoPlugin (trainer.py create_accelerator_and_postprocess), and accelerate's prepare_model runs
`torch.compile(model, backend=..., mode=...)` on the whole model, the loss inside its forward (accelerator.py);
axolotl passes its torch_compile keys on to TrainingArguments (core/builders/base.py _configure_torch_compile
@ 067b021c); torchtune's `compile: true` compiles each TransformerSelfAttentionLayer in place and the loss
(training/_compile.py compile_model, compile_loss @ bd2a0fc7): for CEWithChunkedOutputLoss only
compute_cross_entropy (one chunk's upcast and cross-entropy); another loss module is compiled into a new module that
the recipes drop (full_finetune_single_device.py calls compile_loss without keeping its return), so it runs eagerly.
The optimizer step stays eager in all three.

What compiling changes (torch 2.13): AOTAutograd traces the joint forward-backward graph and splits it with
min_cut_rematerialization_partition (torch/_functorch/partitioners.py): it saves the cheapest cut of the graph that
its rules allow (matmuls and random ops are never recomputed), recomputing cheap pointwise ops in backward instead of
saving their outputs. Inductor fuses pointwise ops (their temporaries are never materialized) and frees each buffer
after its last use, the saved tensors too (AOTAutograd's boxed calling convention clears the backward's inputs).

Modelled (`--compile-scope layers`, the torchtune stack's): a Llama-like decoder layer (Llama, Mistral, Qwen2: RMSNorm,
SDPA, SiLU-gated MLP) in full fine-tuning without autocast or with LoRA over a 16-bit model (`_lora_layer`), and the
chunked loss. The partitioner's choice is made on
the graph, before any kernel is generated, so it is the same for inductor's C++ (CPU) and Triton (CUDA) kernels;
benchmarks/compiled_saved.py measures it on the CPU through saved-tensor hooks (CompiledFunction.forward saves through
ctx.save_for_backward) and tests/test_compile.py checks `layer_activations` and loss.py's `compiled_chunk_saved`
against every row to the byte. A compiled layer saves its input, each norm's fp32 rstd and its normalized output,
SDPA's q, k, v, output and logsumexp, a contiguous copy of the attention output (o_proj's input), and the gate, up
and product tensors of the MLP: no fp32 copies, no normalized-before-weight copies, no SiLU output. The compiled
compute_cross_entropy saves the chunk's 16-bit logits and two fp32 values per token (its max and log-sum-exp) in place
of eager's fp32 log-softmax, and its fused backward writes the 16-bit gradient directly. The layer's forward
temporaries (beyond the saved set: its output) and backward temporaries (at most two intermediate-wide gradients
beyond what is alive at its start) are measured by the same script (the CPU allocator's peak above each phase's
start); under checkpointing the compiled forward returns every saved tensor
before the checkpoint's hooks drop them, so a checkpointed layer's first forward holds its whole saved set for a
moment. What is not measured: inductor's Triton kernels' own workspace (CPU kernels have none of note), CUDA graphs.

Modelled too (`--compile-scope model`, the default: transformers' Trainer, axolotl, LLaMA-Factory): the whole model in
16 bits without checkpointing or offloading, transformers' loss in the graph. Its graph saves every layer's set as
compiled alone (measured: benchmarks/compiled_saved.py's whole-model rows) and of the head the final norm's input and
rstd, lm_head's input, the 16-bit logits, their fp32 max and log-sum-exp and the int64 labels (`head_activations`); the
loss's backward holds the logits' gradient in fp32. With checkpointing Dynamo splits the graph at transformers'
checkpoints (not measured).

Elsewhere (whole-model compile with checkpointing or fp32 weights, other families, adapters, autocast, other losses)
the estimate is the eager step, an upper bound: benchmarks/compile_peaks.py runs real steps on the CPU, eager and
compiled, and takes the peak of the CPU allocator's live bytes from torch.profiler's memory events
(benchmarks/results/compile_peaks.json, docs/accuracy.md). On every toy Llama / Qwen2 step there, full and LoRA,
with and without gradient checkpointing, fp32 and bf16, whole-model and per-layer compile, the compiled step's peak
was at most the eager step's; a note gives the range.
vramcalc's tracer cannot see a compiled step (Dynamo runs the eager function whenever a TorchDispatchMode is on the
stack: torch/_dynamo/convert_frame.py), hence the CPU measurements.

Not modelled, refused by the run-file readers: the CUDA-graph modes (`reduce-overhead`, `max-autotune`), whose
cudagraph trees keep every recorded graph's outputs and intermediates in a private pool across replays
(torch/_inductor/cudagraph_trees.py), and the debugging backends (`eager`, `aot_eager`, ...), which the same
measurement puts above the eager step. Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.memory.activations import HeadActivations, LayerActivations, Term, fp32_math_sdpa
from vramcalc.core.memory.activations import layer_activations as _hf_layer
from vramcalc.core.memory.precision import RECIPES, Recipe, resolve_precision
from vramcalc.core.params import head_dim, resolve_targets
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = ("torch 2.13 torch/_functorch/partitioners.py min_cut_rematerialization_partition, inductor; torchtune "
          "training/_compile.py; measured: benchmarks/compiled_saved.py, benchmarks/compile_peaks.py")
FAMILIES = ("llama", "mistral", "qwen2")  # measured: Llama and Qwen2 layers (Mistral's is Llama's)
LOSSES = ("hf", "chunked")  # hf: the eager loss the torchtune recipes keep; chunked: compute_cross_entropy compiled
# The compiled step's tensor peak below the eager step's, in percent of the eager peak (weights, gradients and AdamW
# states included), by the toy's weight dtype: the least and the most over the inductor rows (whole-model and
# per-layer) of benchmarks/results/compile_peaks.json (tests/test_compile.py recomputes them from the file).
GAP_RANGE_PERCENT = {"fp32": (0.0, 19.1), "bf16": (0.0, 47.7)}


def why_not(m: ModelSpec, t: TrainingSpec) -> str | None:
    """Why this compiled step is not modelled but estimated as the eager step (None: it is modelled)."""
    recipe = RECIPES[resolve_precision(t)]
    if t.compile_scope == "model" and (t.grad_checkpointing or t.activation_offload or t.loss != "hf"
                                       or recipe.compute == "fp32"):
        return ("the whole model is compiled (--compile-scope model: transformers' Trainer, axolotl, LLaMA-Factory) "
                "with checkpointing, offloading, another loss kernel or fp32 weights, whose graphs were not "
                "measured; modelled in 16 bits without them, and per layer (--compile-scope layers)")
    if m.family not in FAMILIES or m.norm != "rmsnorm" or m.mlp != "gated" or m.hidden_act not in ("silu", "swish") \
            or m.num_experts or m.dropout > 0 or m.fused_gate_up or m.alibi or m.attention_sinks:
        return f"modelled for Llama-like layers ({', '.join(FAMILIES)}), not {m.name}'s"
    if t.objective != "sft" or t.method not in ("full", "lora") or (t.method == "lora" and (
            recipe.compute == "fp32" or
            t.compile_scope == "model" or t.dora or t.lora_dropout > 0 or t.modules_to_save or t.lora_trainable_tokens
            or t.lora_layers or any(n in ("lm_head", "embed_tokens") for n in t.lora_targets))):
        return ("modelled for full fine-tuning and, per layer over a 16-bit model, LoRA on the decoder layers' "
                "Linears without dropout or DoRA, with the SFT loss (the rest inside a compiled graph not measured)")
    if recipe.autocast or recipe.autocast16 or t.upcast_norms:
        return "modelled without autocast (weights in the compute dtype: --precision pure-bf16, bf16 or fp32)"
    if t.attention != "sdpa":
        return "modelled with --attention sdpa"
    if fp32_math_sdpa(m, t, recipe):
        # the CPU measured its flash kernel; inductor decomposes CUDA's math path into matmuls and a softmax
        return ("fp32 with grouped-query attention runs CUDA's math SDPA, which inductor decomposes (not measured): "
                "modelled in 16 bits or with multi-head attention")
    if t.loss not in LOSSES:
        return f"modelled with --loss {' or '.join(LOSSES)}"
    if t.kernels != "hf" or t.tp > 1 or t.pp > 1 or t.sequence_parallel or t.ac_every > 1 or t.reentrant_gc \
            or t.ac_offload:
        return ("modelled without other kernels, tensor / pipeline / sequence parallelism, selective, reentrant or "
                "offloaded-input checkpointing")
    if t.activation_offload and not t.grad_checkpointing:
        return "modelled with activation offloading under checkpointing only (what leaves is each layer's input)"
    return None


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    """This step's compiled layers and loss are modelled."""
    return t.compile and t.mode == "train" and why_not(m, t) is None


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool = True,
                      input_grad: bool = True) -> LayerActivations:
    """One compiled decoder layer (bytes per token): what the min-cut partitioner saves (module docstring), SDPA's
    terms as transformers' layer has them (memory/activations.py: flash / efficient kernels, the packed mask)."""
    assert m.hidden_size is not None and m.intermediate_size is not None and m.num_attention_heads is not None
    hf = _hf_layer(m, t, recipe, trainable_weights, input_grad)
    c = dtype_bytes(recipe.compute)
    h, i = m.hidden_size, m.intermediate_size
    q_dim = m.num_attention_heads * head_dim(m)
    sdpa = [x for x in hf.terms if x.name.startswith("sdpa ")]
    # Under checkpointing the layer's input is what the checkpoint keeps (counted with the kept inputs).
    own_input = 0 if t.grad_checkpointing else c * h
    attention = [Term("compiled: layer input", own_input)] if own_input else []
    if t.method == "lora":
        return _lora_layer(m, t, hf, c, q_dim, sdpa, attention, own_input)
    attention += [Term("compiled: attn norm rstd (fp32) + q/k/v input", 4 + c * h),
                  *sdpa,
                  Term("compiled: o_proj input (contiguous copy of the attention output)", c * q_dim)]
    mlp = [Term("compiled: mlp norm rstd (fp32) + gate/up input", 4 + c * h),
           Term("compiled: gate, up outputs and down_proj input (silu(gate) * up)", 3 * c * i)]
    # Measured (benchmarks/compiled_saved.py: the layer's phase peaks above their starts): forward, beyond the saved
    # set, the layer's output (and the CPU's SDPA workspace, not counted); backward, beyond what is alive at its start,
    # at most two intermediate-wide gradients (c (H + I) at hidden 384, 2 c I at 512: inductor's buffer reuse
    # varies with the shapes; the most measured is counted).
    return _layer(hf, attention, mlp, c * h, 2 * c * i, own_input, c * h, 3 * c * i)


def _layer(hf: LayerActivations, attention: list[Term], mlp: list[Term], fwd_t: int, bwd_t: int, own_input: int,
           out_t: int, mlp_tail: int) -> LayerActivations:
    """transformers' layer `hf` with a compiled saved set and transients (bytes per token)."""
    mlp_saved = sum(x.per_token for x in mlp)
    saved = sum(x.per_token for x in attention) + mlp_saved
    fwd = Term("compiled forward: the layer output and what is in flight", fwd_t, hf.forward_transient.per_token_seq)
    bwd = Term("compiled backward: the gradients in flight", bwd_t, hf.backward_transient.per_token_seq)
    return replace(
        hf, terms=(*attention, *mlp), forward_transient=fwd, backward_transient=bwd,
        mlp_saved_per_token=mlp_saved, mlp_tail_per_token=mlp_tail, mlp_forward_per_token=out_t,
        after_attention_per_token=mlp_saved, attention_terms=len(attention), backward_no_norm_per_token=bwd_t,
        # A checkpointed layer's compiled forward returns its whole saved set before the checkpoint's hooks drop it
        # (own_input 0: checkpointed).
        checkpointed_forward_per_token=saved + fwd_t if not own_input else 0,
        attention_forward_per_token=0, rerun_scores_per_token_seq=0, rerun_scores_per_token=0,
        mlp_forward_per_token_seq=0, checkpointed_backward_per_token=0, checkpointed_backward_const=0,
        mlp_node_freed_per_token=0, mlp_node_backward_per_token=0, mlp_node_grads=0, rerun_end_per_token=0,
        forward_unmade_per_token=0)


def _lora_layer(m: ModelSpec, t: TrainingSpec, hf: LayerActivations, c: int, q_dim: int, sdpa: list[Term],
                attention: list[Term], own_input: int) -> LayerActivations:
    """A compiled layer with peft's LoRA (dropout 0) on some of its Linears, the base frozen (measured:
    benchmarks/compiled_saved.py's LoRA rows, to the byte). The frozen layer saves its input, the norms' fp32 rstds,
    SDPA's terms, the MLP norm's input-side tensor and gate's and up's outputs (no weight gradient, so no matmul input
    but the adapters'); each group of adapters reading one input saves it once in the adapter dtype (the 16-bit
    tensor itself, or its cast): q/k/v the normalized input, gate/up the MLP's normalized input, down the product
    silu(gate) * up, o the attention output (already saved in 16 bits; cast when the adapters are fp32); each adapter
    its lora_B input (tokens x r, adapter dtype)."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    h, i = m.hidden_size, m.intermediate_size
    a = dtype_bytes(t.adapter_dtype)
    names = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}

    def group(mods: tuple[str, ...], width: int, saved_16: bool) -> int:
        n = len(names & set(mods))
        if not n:
            return 0
        cast = 0 if saved_16 and a == c else a * width  # the 16-bit tensor already saved, or the adapters' copy
        return cast + n * a * t.lora_rank

    qkv = group(("q_proj", "k_proj", "v_proj"), h, False)
    attention += [Term("compiled: attn norm rstd (fp32)", 4), *sdpa]
    if qkv:
        attention.append(Term("compiled: q/k/v adapters' input and lora_B inputs", qkv))
    o = group(("o_proj",), q_dim, True)
    if o:
        attention.append(Term("compiled: o_proj adapter's input (the attention output, cast if fp32) and lora_B input",
                              o))
    mlp = [Term("compiled: mlp norm rstd (fp32) + its input-side tensor", 4 + c * h),
           Term("compiled: gate and up outputs", 2 * c * i)]
    gate_up = group(("gate_proj", "up_proj"), h, False)
    if gate_up:
        mlp.append(Term("compiled: gate/up adapters' input and lora_B inputs", gate_up))
    down = group(("down_proj",), i, False)
    if down:
        mlp.append(Term("compiled: down_proj adapter's input (silu(gate) * up) and lora_B input", down))
    # Forward and backward beyond the saved set, fitted on the measured rows (benchmarks/compiled_saved.py, 16-bit
    # base), each at or above all of them: forward, the output and the product silu(gate) * up in flight (a
    # hidden-wide tensor where down's 16-bit adapter saves the product), or with gate / up adapted their adapters'
    # paths (3 B per intermediate element in bf16, 9 with fp32 adapters, + under 128 B); backward, two
    # intermediate-wide gradients, four with gate / up adapted and 6 B more per element with fp32 ones
    mlp_adapted = bool(names & {"gate_proj", "up_proj"})
    product_saved = "down_proj" in names and a == c  # down's 16-bit adapter saves the product itself: not in flight
    fwd_t = c * h + (3 * c * i // 2 + 3 * (a - c) * i + 128 if mlp_adapted else c * h if product_saved else c * i)
    bwd_t = 2 * c * i + (2 * c * i + 3 * (a - c) * i if mlp_adapted else 0) + 32
    return _layer(hf, attention, mlp, fwd_t, bwd_t, own_input, c * h, 2 * c * i + down)


def head_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> HeadActivations:
    """The whole model compiled: the final norm, lm_head and transformers' ForCausalLMLoss in the one graph (bytes per
    token; measured with benchmarks/compiled_saved.py's whole-model rows). Saved: the norm's input and fp32 rstd, the
    head's input, the 16-bit logits, their fp32 max and log-sum-exp, the int64 labels (shifted and padded); no fp32
    upcast or log-softmax exists. The loss's backward holds the logits' gradient in fp32 (below)."""
    assert m.hidden_size is not None and m.vocab_size is not None
    h, v = m.hidden_size, m.vocab_size
    saved = sum(x.per_token for x in head_terms(m, t, recipe, head_trainable))
    # Backward, beyond the saved set at its start (measured, 16-bit weights: hidden 256 / 384, vocab 4,096 / 8,192):
    # the logits' gradient in fp32 (the graph's .float() upcast's), and an fp32 hidden-wide vector
    return HeadActivations(saved, 0, 4 * v + 4 * h + 4)


def head_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> tuple[Term, ...]:
    """The compiled head's saved tensors, bytes per token (head_activations)."""
    assert m.hidden_size is not None and m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    h, v = m.hidden_size, m.vocab_size
    out = [Term("compiled: final norm input + fp32 rstd", c * h + 4)]
    if head_trainable:
        out.append(Term("compiled: lm_head input (normalized)", c * h))
    # the int64 labels: the shifted, padded copy and the ids
    out.append(Term("compiled: 16-bit logits, fp32 max and log-sum-exp, int64 labels", c * v + 4 + 4 + 8 + 8))
    return tuple(out)


def whole(m: ModelSpec, t: TrainingSpec) -> bool:
    """The whole model compiled and modelled (its head in the graph: head_activations)."""
    return t.compile_scope == "model" and active(m, t)


def modelled_note(m: ModelSpec, t: TrainingSpec) -> str:
    if t.compile_scope == "model":
        return ("approximate: --compile of the whole model (transformers' Trainer via accelerate): each decoder layer "
                "saves what inductor's min-cut partitioner keeps (its input, fp32 rstds, normalized inputs, "
                "q/k/v/output, gate/up/product; no fp32 copies), the loss its 16-bit logits and a log-sum-exp (no "
                "fp32 log-softmax); measured on the CPU (benchmarks/compiled_saved.py, the same partition as CUDA); "
                "Triton kernels' workspaces not counted")
    loss = ("the chunked loss's compute_cross_entropy compiled (its 16-bit logits and a log-sum-exp saved, no fp32 "
            "log-softmax)" if t.loss == "chunked" else "the loss eager (torchtune compiles only a chunked loss)")
    return ("approximate: --compile per layer (torchtune compile_model): each decoder layer saves what inductor's "
            "min-cut partitioner keeps (its input, fp32 rstds, normalized inputs, q/k/v/output, gate/up/product; no "
            f"fp32 copies), {loss}; measured on the CPU (benchmarks/compiled_saved.py, the same partition as CUDA); "
            "Triton kernels' workspaces not counted")


def note() -> str:
    """The approximation `--compile` makes where it is not modelled, in words."""
    ranges = ", ".join(f"{low:.1f}-{high:.1f} % with {dtype} weights"
                       for dtype, (low, high) in GAP_RANGE_PERCENT.items())
    return ("approximate: --compile (torch.compile, inductor) is estimated as the eager step, an upper bound: on toy "
            f"Llama / Qwen2 training steps measured on the CPU the compiled step peaked below eager, {ranges} "
            "(AOTAutograd's min-cut partitioner recomputes pointwise ops in backward, inductor fuses them and frees "
            "buffers at their last use; benchmarks/compile_peaks.py)")


def annotate(b: Breakdown, model: ModelSpec, training: TrainingSpec) -> Breakdown:
    """`b` with the --compile note, once (nested estimates of the same run add it only once)."""
    if not training.compile:
        return b
    reason = why_not(model, training)
    text = modelled_note(model, training) if reason is None else f"{note()}; not modelled here: {reason}"
    return b if text in b.notes else replace(b, notes=(*b.notes, text))
