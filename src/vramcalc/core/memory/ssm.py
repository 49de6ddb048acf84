"""State-space models (Mamba): parameters and the selective scan's saved tensors, in bytes.

Source: transformers 5.24 models/mamba/modeling_mamba.py. MambaForCausalLM = embeddings, num_layers MambaBlocks
(MambaRMSNorm + MambaMixer, the residual added in fp32 when residual_in_fp32), norm_f, lm_head tied to the embedding.
MambaMixer: in_proj (hidden -> 2 x intermediate: the SSM input and the gate z), a depthwise causal conv1d (kernel
conv_kernel, with a bias), x_proj (intermediate -> dt_rank + 2 x state: dt, B, C), dt_proj (dt_rank ->
intermediate, with a bias), A_log (intermediate x state), D (intermediate), out_proj (intermediate -> hidden).

Training without the CUDA kernels (mamba_ssm's `mamba_inner_fn` / `selective_scan_fn`, causal_conv1d), which is
what transformers runs on CPU, under the tracer and on a GPU without those packages, goes through the Python
`mamba_selective_scan` fallback: it materializes the discretized A and B (batch x intermediate x seq x state, fp32)
and loops over the sequence, each step's state kept by autograd. That path is modelled here term by term. The
fused CUDA kernel saves only its inputs and recomputes the states in backward (note in `notes`).
Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import is_ssm as is_ssm  # re-exported: memory/__init__.py asks this module
from vramcalc.core.params import ssm_dt_rank
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import HeadActivations, LayerActivations, Term
    from vramcalc.core.memory.inference import InferenceBytes
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec


def _adapted(m: ModelSpec, t: TrainingSpec) -> frozenset[str]:
    """The mixer Linears LoRA adapts in this run."""
    if t.method not in ("lora", "qlora"):
        return frozenset()
    from vramcalc.core.params import resolve_targets

    return frozenset(lin.module for lin in resolve_targets(m, t.lora_targets))


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                      input_grad: bool = True) -> LayerActivations:
    """Saved tensors of one MambaBlock under the slow path (modeling_mamba.py MambaBlock.forward, MambaMixer.forward,
    causal_conv1d_fn and mamba_selective_scan's fallbacks), per token; autograd's rules from derivatives.yaml (an op
    saves an operand only for the other operand's gradient). `input_grad`: the block's input needs a gradient (false
    for the bottom layer of an adapter run without checkpointing)."""
    from vramcalc.core.memory.activations import LayerActivations, Term

    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    a = dtype_bytes(t.adapter_dtype)
    h, i, s, r = m.hidden_size, m.intermediate_size, m.ssm_state_size, ssm_dt_rank(m)
    tw = trainable_weights
    adapted = _adapted(m, t)
    rank = t.lora_rank
    terms: list[Term] = []

    def linear(name: str, width: int, layout_copy: bool = False) -> None:
        # A Linear saves its input (a contiguous copy when the input is a transposed view: the reshape in F.linear)
        # for its weight's gradient; a LoRA adapter saves its input cast to the adapter dtype and lora_A's output
        # (peft tuners/lora/layer.py Linear.forward: lora_B(lora_A(dropout(x))) after _cast_input_dtype).
        if tw:
            terms.append(Term(f"{name} input" + (" (contiguous copy)" if layout_copy else ""), c * width))
        if name in adapted:
            fresh = a != c or t.lora_dropout > 0 or layout_copy or not tw
            if fresh:
                terms.append(Term(f"{name} LoRA input ({'fp32' if a == 4 else 'adapter dtype'})", a * width))
            if t.lora_dropout > 0:
                terms.append(Term(f"{name} LoRA dropout mask", width))
            terms.append(Term(f"{name} lora_A output", a * rank))

    # MambaBlock: norm(hidden_states.to(norm dtype)); MambaRMSNorm saves its fp32 input and rsqrt for the input's
    # gradient, and the normalized 16-bit tensor when its weight trains.
    if input_grad:
        terms.append(Term("norm (fp32 input + rsqrt)", 4 * h + 4))
    if tw:
        terms.append(Term("norm (normalized)", c * h))
    linear("in_proj", h)
    # in_proj's output (batch, 2 x intermediate, seq): conv1d saves its first half, silu(z) the gate half.
    terms.append(Term("in_proj output (conv1d input, gate)", c * 2 * i))
    # F.conv1d(padding=conv_kernel - 1) then [..., :seq_len]: silu saves the padded output (a view of it).
    terms.append(Term("conv1d output (padded, saved by silu)", c * i, per_sample=c * i * (m.ssm_conv_kernel - 1)))
    # silu(conv) -> u: x_proj reads u.transpose (a contiguous copy when saved), u * D saves u for D's gradient.
    if tw:
        terms.append(Term("conv activation output u (saved by u * D)", c * i))
    linear("x_proj", i, layout_copy=True)
    # x_proj's output (dt, B, C): C's per-step slices are saved by the scan's matmuls (they keep it alive).
    terms.append(Term("x_proj output (dt, B, C)", c * (r + 2 * s)))
    # dt_proj.weight @ dt^T: saves dt^T (a view of x_proj's output) for the weight's gradient.
    if "dt_proj" in adapted:  # peft wraps dt_proj, but MambaMixer reads dt_proj.weight directly: no adapter
        pass
    # dt = softplus(dt + bias): softplus saves its input and the muls save its output (16-bit).
    terms.append(Term("softplus input and output (dt)", 2 * c * i))
    # discrete_A = exp(A x dt): fp32 (batch, intermediate, seq, state); exp saves its output.
    terms.append(Term("discrete A (fp32, saved by exp)", 4 * i * s))
    terms.append(Term("B.float() (saved by dt x B)", 4 * s))
    # discrete_B = dt x B.float(), saved by discrete_B x u.float() with the fp32 copy of u.
    terms.append(Term("discrete B (fp32)", 4 * i * s))
    terms.append(Term("u.float()", 4 * i))
    # The sequential scan: each step's state (fp32) is saved by the next step's discrete_A[:, :, k] x state, and its
    # 16-bit cast by the matmul with C[:, k]: seq_len states per sequence.
    terms.append(Term("scan states (fp32 + 16-bit cast per step)", (4 + c) * i * s, per_sample=c * i * s))
    # y + u x D (fp32), then y x silu(z): the mul saves both operands.
    terms.append(Term("scan output y (fp32) and silu(z)", (4 + c) * i))
    linear("out_proj", i, layout_copy=True)
    # Per layer whatever the batch: A = -exp(A_log.float()) (exp's fp32 output), D.float() and dt_proj.bias.float()
    # (measured with the tracer: 4 x intermediate x state + 8 x intermediate per layer).
    terms.append(Term("A = -exp(A_log), D and dt bias in fp32", 0, const=4 * i * s + 8 * i))
    # Forward, not saved: deltaB_u (fp32, batch x intermediate x seq x state) alive through the loop, with the list of
    # per-step outputs and their torch.stack.
    fwd = Term("deltaB_u (fp32) and the stacked step outputs", 4 * i * s + 2 * c * i)
    if t.grad_checkpointing or t.activation_offload:
        # Checkpointed, nothing is saved, but the scan's locals live through the loop: discrete A and B and deltaB_u
        # (fp32), with in_proj's output, the conv output and activation, dt and the stacked outputs (16-bit); and
        # (measured with the tracer, --grid ssm's checkpointed cases: 8.3-8.7 x intermediate bytes per token more at
        # 16 bits) about one fp32 and one 16-bit intermediate-wide tensor beyond those.
        fwd = Term("scan locals: discrete A, B, deltaB_u (fp32) and the mixer's 16-bit tensors",
                   12 * i * s + 7 * c * i + (4 + 2 * c) * i)
    # Backward through the loop: each step's discrete_A[:, :, k] and deltaB_u[:, :, k] gradients arrive through
    # select_backward as full-size fp32 tensors, summed into full-size input buffers (measured with the tracer,
    # tiny configs, seq 32 and 64: 16 x intermediate x state bytes per token beside the saved set).
    bwd = Term("scan backward: full-size fp32 gradients of discrete A and deltaB_u", 16 * i * s)
    return LayerActivations(tuple(terms), fwd, bwd)


def head_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> tuple[Term, ...]:
    """The head's saved tensors per token: norm_f on the fp32 residual stream (MambaRMSNorm keeps the input's dtype,
    so with residual_in_fp32 the normalized tensor is fp32), lm_head's 16-bit input (MambaForCausalLM.forward:
    lm_head(hidden_states.to(lm_head.weight.dtype)).float()) and the loss's log_softmax output."""
    from vramcalc.core.memory.activations import Term

    assert m.hidden_size is not None and m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    res = 4 if m.ssm_residual_fp32 else c
    h, v = m.hidden_size, m.vocab_size
    out = [Term("final norm (fp32 input + rsqrt)", 4 * h + 4)]
    if head_trainable:
        out += [Term("final norm (normalized, residual dtype)", res * h), Term("lm_head input", c * h)]
    out.append(Term("log_softmax output (fp32)", 4 * v))
    return tuple(out)


def head_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> HeadActivations:
    """The head's saved set and the loss's transients, as transformers' ForCausalLMLoss computes them: the 16-bit
    logits and their fp32 copy in forward, two fp32 vocab-wide gradients at the start of backward."""
    from vramcalc.core.memory.activations import HeadActivations

    assert m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    v = m.vocab_size
    saved = sum(x.per_token for x in head_terms(m, t, recipe, head_trainable))
    return HeadActivations(saved, (c if c != 4 else 0) * v + 4 * v, 8 * v)


def check_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Mamba arithmetic does not cover: the PEFT methods beyond LoRA / QLoRA (their rules read attention
    and MLP modules) and the training objectives beyond SFT."""
    if not is_ssm(m):
        return
    from vramcalc.core.errors import UnsupportedCombination

    if t.method == "qlora":
        # bitsandbytes replaces every block nn.Linear, but MambaMixer multiplies by dt_proj.weight itself (and the
        # kernel path passes dt_proj.weight and out_proj.weight to mamba_inner_fn): a packed 4-bit weight there fails.
        raise UnsupportedCombination(f"--method qlora on {m.name}: MambaMixer reads dt_proj.weight and out_proj.weight "
                                     "directly, which bitsandbytes' 4-bit Linear cannot serve; use --method lora")
    if t.method not in ("full", "freeze", "lora"):
        raise UnsupportedCombination(f"--method {t.method} on {m.name}: only full, freeze and lora are modelled "
                                     "for Mamba models; use one of those")
    if t.objective != "sft":
        raise UnsupportedCombination(f"--objective {t.objective} on {m.name}: only sft is modelled for Mamba models; "
                                     "use --objective sft")


def kernel_saved_per_token(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """One layer's saved bytes per token with the mamba_ssm CUDA kernels, read from mamba_ssm/ops/
    selective_scan_interface.py MambaInnerFn.forward (checkpoint_lvl 1: conv1d_out and delta recomputed in backward):
    ctx.save_for_backward(xz (a contiguous copy, 2 x intermediate), x_dbl (dt_rank + 2 x state), B and C (contiguous
    copies), out (intermediate), scan_intermediates (fp32, batch x intermediate x ceil(seq / 2048) x 2 x state: per
    sequence, left out here)), beside the block's RMSNorm and in_proj input. Not traced (the kernels need CUDA)."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    h, i, s, r = m.hidden_size, m.intermediate_size, m.ssm_state_size, ssm_dt_rank(m)
    full = t.method in ("full", "freeze")
    norm = 4 * h + 4 + (c * h if full else 0)
    in_proj = c * h if full else (4 if t.adapter_dtype == "fp32" else c) * h + 4 * t.lora_rank
    return norm + in_proj + c * (2 * i + r + 2 * s + 2 * s + i)


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Mamba estimate assumes (shown in every format)."""
    if not is_ssm(m) or t.mode == "inference":
        return ()
    from vramcalc.core.memory.precision import recipe_of

    recipe = recipe_of(t)
    slow = sum(x.per_token for x in layer_activations(m, t, recipe, t.method in ("full", "freeze")).terms)
    kernel = kernel_saved_per_token(m, t, recipe)
    return (f"{m.name}: Mamba's selective scan counted as transformers' PyTorch fallback (mamba_selective_scan: the "
            "fp32 discretized A and B and every step's state saved, batch x intermediate x seq x state each), what "
            "transformers runs without the mamba_ssm / causal_conv1d CUDA kernels: "
            f"{slow:,} bytes per token per layer. With those kernels (mamba_inner_fn) a layer would save about "
            f"{kernel:,} bytes per token (read from mamba_ssm's MambaInnerFn, not traced"
            + ("; it multiplies by x_proj.weight itself, so an x_proj adapter is bypassed there" if "x_proj" in
               _adapted(m, t) else "") + ").",)


def state_cache_bytes(m: ModelSpec, t: TrainingSpec, batch: int) -> int:
    """The recurrent cache of generate(): per layer, conv_states (batch x intermediate x conv_kernel, the conv input's
    dtype) and recurrent_states (batch x intermediate x state, a zeros_like of the scan's fp32 final state)
    (transformers cache_utils.py LinearAttentionLayer.lazy_initialization). Fixed: it does not grow with the context."""
    from vramcalc.core.memory.precision import recipe_of

    assert m.intermediate_size is not None and m.num_layers is not None
    c = dtype_bytes(recipe_of(t).compute)
    return m.num_layers * batch * m.intermediate_size * (m.ssm_conv_kernel * c + 4 * m.ssm_state_size)


def estimate_inference(m: ModelSpec, t: TrainingSpec) -> InferenceBytes:
    """generate() of a Mamba model (transformers 5.24, the PyTorch fallback): prefill of the prompt through
    mamba_selective_scan under no_grad, then one-token steps through mamba_selective_state_update."""
    from vramcalc.core.memory.inference import InferenceBytes, weights
    from vramcalc.core.memory.precision import recipe_of

    assert m.intermediate_size is not None and m.hidden_size is not None and m.vocab_size is not None
    if t.tp > 1 or t.pp > 1:
        from vramcalc.core.errors import UnsupportedCombination

        raise UnsupportedCombination(f"--tp / --pp inference for {m.name}: not modelled for Mamba; use one GPU")
    c = dtype_bytes(recipe_of(t).compute)
    w, constants, on_gpu = weights(m, t)
    h, i, s, r = m.hidden_size, m.intermediate_size, m.ssm_state_size, ssm_dt_rank(m)
    b, n_new = t.batch_size, t.new_tokens
    prompt = t.seq_len - n_new + 1
    cache = state_cache_bytes(m, t, b)
    # Prefill, inside the last layer's scan: discrete A, discrete B and deltaB_u (fp32, intermediate x state each),
    # u.float() and B.float(), in_proj's output, the conv output and activation, dt (before and after softplus), the
    # list of step outputs, x_proj's output (16-bit) and the fp32 residual stream.
    per_token = 12 * i * s + 4 * i + 4 * s + c * (10 * i + r + 2 * s) + 4 * h
    prefill_ws = b * prompt * per_token
    # Decode: selective_state_update's dA, dB, dB x u and the new state (fp32, batch x intermediate x state each).
    decode_ws = b * (16 * i * s + c * 10 * i + 4 * h) if n_new > 1 else 0
    logits = b * m.vocab_size * (c + 4)  # logits_to_keep=1: the last position, then generate's fp32 copy
    phases = {"prefill": w + cache + max(prefill_ws, logits)}
    phases["decode"] = w + cache + (max(decode_ws, logits) if n_new > 1 else logits)
    notes = (f"generate() on {m.name}: no KV cache; a fixed recurrent state per layer (conv {m.ssm_conv_kernel} x "
             f"intermediate, SSM state {s} x intermediate in fp32: {cache:,} bytes for batch {b}); the prefill runs "
             "the PyTorch selective scan, whose fp32 discretized A and B dominate.",)
    return InferenceBytes(on_gpu, w, constants, cache, 0, max(prefill_ws, decode_ws), logits, phases, notes)
