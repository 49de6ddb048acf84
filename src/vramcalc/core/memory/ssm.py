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

from vramcalc.core.params import is_mamba2 as is_mamba2  # re-exported: memory/__init__.py asks this module
from vramcalc.core.params import is_ssm as is_ssm  # re-exported: memory/__init__.py asks this module
from vramcalc.core.params import mamba2_dims, ssm_dt_rank
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
                      input_grad: bool = True, adapted: frozenset[str] | None = None,
                      bc_norms: bool = False) -> LayerActivations:
    """Saved tensors of one MambaBlock under the slow path (modeling_mamba.py MambaBlock.forward, MambaMixer.forward,
    causal_conv1d_fn and mamba_selective_scan's fallbacks), per token; autograd's rules from derivatives.yaml (an op
    saves an operand only for the other operand's gradient). `input_grad`: the block's input needs a gradient (false
    for the bottom layer of an adapter run without checkpointing). `adapted`: the mixer Linears LoRA adapts, when the
    caller resolved them on a bigger model (Jamba's layers); `bc_norms`: Jamba's RMSNorms on dt, B and C
    (modeling_jamba.py JambaMambaMixer.forward) between x_proj and the scan."""
    from vramcalc.core.memory.activations import LayerActivations, Term

    if is_mamba2(m):
        return mamba2_layer_activations(m, t, recipe, trainable_weights, input_grad)
    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    a = dtype_bytes(t.adapter_dtype)
    h, i, s, r = m.hidden_size, m.intermediate_size, m.ssm_state_size, ssm_dt_rank(m)
    tw = trainable_weights
    adapted = _adapted(m, t) if adapted is None else adapted
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
    if bc_norms:
        # Jamba: dt_layernorm, b_layernorm and c_layernorm (JambaRMSNorm: weight x (x.float() x rsqrt(mean(x^2) + eps))
        # .to(dtype)) read x_proj's output through their fp32 copies, which pow and mul save with rsqrt; the
        # normalized 16-bit tensors when their weights train. dt_proj.weight @ dt saves the normed dt for its weight's
        # gradient; the scan's matmuls save the normed C's per-step slices (B's fp32 copy is counted below).
        terms.append(Term("dt, B, C RMSNorms (fp32 inputs + rsqrt)", 4 * (r + 2 * s) + 12))
        if tw:
            terms.append(Term("dt, B, C RMSNorms (normalized) and the normed dt (dt_proj's weight gradient)",
                              c * (2 * r + 2 * s)))
        terms.append(Term("normed C (saved by the scan's matmuls)", c * s))
    else:
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


def padded_length(m: ModelSpec, t: TrainingSpec) -> tuple[int, int]:
    """(row length, the row padded to a multiple of chunk_size): mamba2_chunk_scan pads the sequence with
    pad_tensor_by_size before reshape_into_chunks, so every chunk-wise tensor has the padded length."""
    from vramcalc.core.memory.activations import batch_rows

    row = batch_rows(t)[1]
    q = m.ssm_chunk_size
    return row, -(-row // q) * q


def mamba2_layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool,
                             input_grad: bool = True, adapted: frozenset[str] | None = None) -> LayerActivations:
    """Saved tensors of one Mamba2Block under transformers' PyTorch path (modeling_mamba2.py Mamba2Block.forward,
    Mamba2Mixer.forward without a cache, causal_conv1d_fn, mamba2_chunk_scan, MambaRMSNormGated), as autograd saves
    them (derivatives.yaml; an operand is saved only for the other operand's gradient). Listed with
    torch.autograd.graph.saved_tensors_hooks on a tiny Mamba2Block, then checked with the tracer (--grid ssm2).
    Per token (T = the row) and per sample over the padded row (L = T rounded up to chunk_size), because the chunked
    scan pads every chunk-wise tensor; nc = L / chunk_size chunks."""
    from vramcalc.core.memory.activations import LayerActivations, Term

    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    a = dtype_bytes(t.adapter_dtype)
    wide = c == 4  # fp32 compute: the scan's .float() calls return their input (no copy)
    h, i, s, g, q, k = (m.hidden_size, m.intermediate_size, m.ssm_state_size, m.ssm_n_groups, m.ssm_chunk_size,
                        m.ssm_conv_kernel)
    nh, cd, proj = mamba2_dims(m)
    row, padded = padded_length(m, t)
    nc = padded // q
    tw = trainable_weights
    if adapted is None:  # (a hybrid passes its mixer's own: peft lets Bamba adapt out_proj)
        adapted = _adapted(m, t)
    rank = t.lora_rank
    terms: list[Term] = []

    def linear(name: str, width: int) -> None:
        # nn.Linear saves its input for the weight's gradient; a LoRA adapter its input cast to the adapter dtype
        # and lora_A's output (peft tuners/lora/layer.py Linear.forward: lora_B(lora_A(dropout(x)))).
        if tw:
            terms.append(Term(f"{name} input", c * width))
        if name in adapted:
            if a != c or t.lora_dropout > 0 or not tw:
                terms.append(Term(f"{name} LoRA input ({'fp32' if a == 4 else 'adapter dtype'})", a * width))
            if t.lora_dropout > 0:
                terms.append(Term(f"{name} LoRA dropout mask", width))
            terms.append(Term(f"{name} lora_A output", a * rank))

    def chunked(name: str, per_padded_token: int) -> None:  # a tensor over the padded row
        terms.append(Term(name, 0, per_sample=per_padded_token * padded))

    # Mamba2Block: norm(hidden_states.to(norm dtype)); Mamba2RMSNorm saves its fp32 input and rsqrt for the input's
    # gradient, the normalized 16-bit tensor when its weight trains.
    if input_grad:
        terms.append(Term("norm (fp32 input + rsqrt)", 4 * h + 4))
    if tw:
        terms.append(Term("norm (normalized)", c * h))
    linear("in_proj", h)
    # in_proj's output (gate | x, B, C | dt): F.conv1d saves its input, a transposed view of it, keeping all of it.
    terms.append(Term("in_proj output (gate, xBC, dt; kept by conv1d)", c * proj))
    # causal_conv1d_fn: F.conv1d(padding=kernel - 1)[..., :seq]; silu saves the padded output (a view of it).
    terms.append(Term("conv1d output (padded, saved by silu)", c * cd, per_sample=c * cd * (k - 1)))
    # mamba2_chunk_scan: dt + dt_bias; softplus saves its input, clamp(dt_limit) its input (softplus's output).
    terms.append(Term("softplus and clamp inputs (dt)", 2 * c * nh))
    # hidden_states.float() (fp32 x, saved by x * dt) and dt.float() (saved by it; again by A * dt when A_log
    # trains). At fp32 compute .float() returns the conv activation itself (x, B, C: conv_dim wide) and dt.
    terms.append(Term("x (fp32) and dt (fp32), saved by x * dt", (4 * cd if wide else 4 * i) + 4 * nh))
    if tw and not wide:
        terms.append(Term("dt (fp32), saved by A * dt", 4 * nh))
    if tw:  # D_residual = D[..., None] * pad(x): the padded fp32 x, saved for D's gradient
        chunked("padded x (fp32), saved by D x x", 4 * i)
    # The chunk-wise tensors, over the padded row (fp32): B and C repeated to num_heads (B kept by B * decay_states),
    # L = exp(segment_sum(A)) (b, h, c, l, s), G = einsum(C, B) (saved by G * L), and the operand copies each
    # einsum's bmm saves (torch einsum permutes and reshapes into bmm: contiguous copies): C and B for G; M and x
    # for Y_diag; B_decay and x for the chunk states; C for C x states; C_times_states (saved by x decay).
    chunked("L = exp(segment_sum(A)) (fp32, chunk x heads)", 4 * nh * q)
    chunked("G = C B^T (fp32, chunk x heads)", 4 * nh * q)
    chunked("M copy for Y_diag's bmm (fp32, chunk x heads)", 4 * nh * q)
    # At batch 1 with one chunk, the einsums' batch dimensions (b, c, h) merge into a view for B and C: two of the
    # five copies are views of tensors already counted (measured: 2 x 4 x heads x state per padded token fewer).
    one_block = t.batch_size == 1 and nc == 1
    chunked("B and C copies for the bmms, B kept by B x decay (fp32, heads x state)",
            (3 if one_block else 5) * 4 * nh * s)
    chunked("x copies for two bmms, C_times_states, the scan output (fp32)", 4 * 4 * i)
    chunked("decay_states and state_decay_out (fp32, heads)", 2 * 4 * nh)
    # Chunk states: the concatenated states (b, nc + 1, h, p, n) copied for the inter-chunk einsum, the nc start
    # states copied for C x states; exp(segment_sum) over the chunk boundaries (b, h, nc + 1, nc + 1).
    # (At batch 1 with one chunk, one chunk's worth fewer: measured.)
    terms.append(Term("chunk states, copied for two bmms (fp32)", 0,
                      per_sample=4 * i * s * (2 * nc + (0 if one_block else 1)) + 4 * nh * (nc + 1) ** 2))
    # MambaRMSNormGated on the fp32 scan output: gate.to(fp32) (saved by silu; at fp32 a view of in_proj's output),
    # silu(gate) and the gated product (saved by the mul and by pow), rsqrt per group, and the normalized tensor
    # for the weight's gradient.
    terms.append(Term("gated norm: fp32 gate, silu(gate), gated product, rsqrt",
                      (0 if wide else 4 * i) + 8 * i + 4 * g))
    if tw:
        terms.append(Term("gated norm (normalized, fp32)", 4 * i))
    linear("out_proj", i)
    # Per layer whatever the batch: A = -exp(A_log.float()), the segment_sum masks (bool chunk x chunk, twice).
    terms.append(Term("A (fp32) and the segment_sum masks", 0, const=(8 if tw else 4) * nh + 2 * q * q
                      + 2 * (nc + 1) ** 2))
    n_rows = max(row, 1)

    def per_token(per_padded: int, per_sample: int = 0) -> int:  # a row's bytes spread over its tokens (ceil)
        return -(-(per_padded * padded + per_sample) // n_rows)

    # Forward temporaries (measured with a TorchDispatchMode over one Mamba2Block on real CPU tensors, then the
    # tracer): the scan's locals stay alive until it returns. Two moments: the inter-chunk einsum (line "new_states
    # = einsum(decay_chunk, states)": x, D_residual and Y_diag; L, G and M; B, C and B_decay; the concatenated
    # states, their bmm copy, new_states and the zero initial state) and the closing (Y_diag + Y_off).contiguous()
    # (seven intermediate-wide fp32 tensors, new_states and the initial state), beside in_proj's output, the conv
    # activation, dt and the block's normalized input.
    # The gated norm's and out_proj's saved terms: not yet saved when a checkpointed layer's recomputed forward is at
    # the scan's close (the backward.recompute moment).
    tail_t = sum(x.per_token for x in terms if x.name.startswith(("gated norm", "out_proj")))
    local_t = c * (proj + cd + h + nh)
    at_states = per_token(4 * (3 * i + 3 * nh * q + 3 * nh * s + 3 * nh), 4 * i * s * (3 * (nc + 1) + 1))
    at_close = per_token(4 * (7 * i + 3 * nh * q + 3 * nh * s + 4 * nh), 4 * i * s * (nc + 2))
    # With grad, what the scan holds beyond the saved set at its close (listed as above, storages not packed by
    # autograd): the padded x, D_residual, Y_diag, Y_off and their sum (fp32, intermediate-wide), the padded C and
    # B_decay (heads x state), A and its cumsum, new_states and the zero initial state, the conv activation and dt.
    # A checkpointed layer's recomputed forward holds the same inside its backward.
    # (With one chunk, new_states is saved: C x states reads a view of it; the initial state alone is beyond.)
    beyond_t = c * (cd + nh) + per_token(4 * (5 * i + 2 * nh * s + 2 * nh), 4 * i * s * (nc + 2 if nc > 1 else 1))
    if t.grad_checkpointing or t.activation_offload:
        # Checkpointed (no_grad), the whole live set of the mixer is temporary.
        fwd = Term("scan locals (no grad): chunk-wise fp32 tensors, chunk states, in_proj output, conv activation",
                   local_t + max(at_states, at_close))
    else:
        # (the forward moment counts the layer's whole saved set, the gated norm's and out_proj's too, though they are
        # not saved yet at the scan: an over-estimate of those terms of one layer, kept so that the temporaries never
        # shrink as seq_len grows: netted, they fell as the row's padding was spread over more tokens, which
        # tests/test_properties.py drew on bamba-9b and which mamba2 / falcon_h1 had at seq 1 -> 2 in LoRA runs)
        fwd = Term("scan locals beyond the saved set (fp32 chunk-wise tensors, chunk states)", beyond_t)
    # Backward: the largest of three moments (measured as above, 7 shapes): the gated norm's backward (about 14 x
    # intermediate bytes per token of fp32 gradients beside the saved set), the chunk-wise gradients of M, G and L
    # (when padding makes the chunk long against the row: 2 x heads x chunk per padded token net of what autograd
    # has freed), and the chunk states' gradient (4 x intermediate x state per chunk and sample).
    bwd = Term("scan backward: gated norm, chunk-wise and chunk-state gradients (fp32)",
               max(14 * i, per_token(2 * nh * q), per_token(4 * i, 4 * i * s * nc)))
    # Inside backward the rerun also has beside it the gradient arriving at the block's output (the residual
    # stream's dtype: fp32 under residual_in_fp32).
    rerun_t = beyond_t + (4 if m.ssm_residual_fp32 else c) * h
    if t.method == "qlora":
        # QLoRA's rerun holds one more conv_dim-wide 16-bit tensor at the scan's close than LoRA's (measured with the
        # tracer, --grid ssm2 checkpointed QLoRA cases: 1,536 B per token at conv_dim 768 beside the LoRA case; the
        # holder was not isolated: peft's bnb Linear4bit clones the base output, bitsandbytes casts to compute_dtype).
        rerun_t += c * cd
    return LayerActivations(tuple(terms), fwd, bwd, mlp_tail_per_token=tail_t, mlp_forward_per_token=rerun_t)


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Mamba-2, full fine-tuning: gradients that appear only after the bottom layer's scan backward (measured with the
    tracer, --grid ssm2 with checkpointing: the peak is in the bottom layer's gated norm or scan backward): an untied
    embedding's (embedding_dense_backward comes last) and the bottom layer's in_proj, conv1d and block norm."""
    if not is_mamba2(m) or t.method != "full":
        return 0
    assert m.hidden_size is not None and m.vocab_size is not None
    _, conv, proj = mamba2_dims(m)
    numel = 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size
    numel += proj * m.hidden_size + (proj if m.ssm_proj_bias else 0)  # in_proj
    numel += conv * m.ssm_conv_kernel + (conv if m.ssm_conv_bias else 0) + m.hidden_size  # conv1d, Mamba2Block.norm
    return numel * dtype_bytes(recipe.grad)


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

    if is_mamba2(m):
        _check_mamba2_run(m, t)
        return
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


def _check_mamba2_run(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse what the Mamba-2 arithmetic does not cover (its PEFT methods, objectives, autocast and generate())."""
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory.precision import recipe_of

    if t.method not in ("full", "freeze", "lora", "qlora"):
        raise UnsupportedCombination(f"--method {t.method} on {m.name}: only full, freeze, lora and qlora are modelled "
                                     "for Mamba-2 models; use one of those")
    if t.objective != "sft":
        raise UnsupportedCombination(f"--objective {t.objective} on {m.name}: only sft is modelled for Mamba-2 "
                                     "models; use --objective sft")
    if t.mode == "train" and recipe_of(t).autocast:
        # Under autocast causal_conv1d_fn casts the conv input to the fp32 weight's dtype and autocast casts it back,
        # and the scan's fp32 tensors meet 16-bit ones: not measured.
        raise UnsupportedCombination(f"--precision {t.precision} on {m.name}: autocast over Mamba-2's PyTorch path "
                                     "(the conv's dtype round trip, the scan's mixed dtypes) is not modelled; use "
                                     "--precision bf16, pure-bf16 or fp32")
    if t.mode != "train":
        raise UnsupportedCombination(f"--mode {t.mode} on {m.name}: generate() for Mamba-2 (the chunked prefill and "
                                     "mamba2_selective_state_update's cache) is not modelled; use --mode train")


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


def mamba2_kernel_saved_per_token(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """One Mamba-2 layer's saved bytes per token with the mamba_ssm kernels, read from mamba_ssm/ops/triton/
    ssd_combined.py MambaSplitConv1dScanCombinedFn.forward: ctx.save_for_backward(zxbcdt (in_proj's output),
    out_x (the scan output, input dtype), rstd (the gated norm's, fp32 per group), the weights), everything else
    recomputed in backward; beside the block's RMSNorm and in_proj's input. Not traced (the kernels need CUDA)."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    c = dtype_bytes(recipe.compute)
    h, i = m.hidden_size, m.intermediate_size
    full = t.method in ("full", "freeze")
    norm = 4 * h + 4 + (c * h if full else 0)
    in_proj = c * h if full else (4 if t.adapter_dtype == "fp32" else c) * h + 4 * t.lora_rank
    return norm + in_proj + c * (mamba2_dims(m)[2] + i) + 4 * m.ssm_n_groups


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What a Mamba estimate assumes (shown in every format)."""
    if not is_ssm(m) or t.mode == "inference":
        return ()
    from vramcalc.core.memory.precision import recipe_of

    recipe = recipe_of(t)
    if is_mamba2(m):
        layer = layer_activations(m, t, recipe, t.method in ("full", "freeze"))
        row, padded = padded_length(m, t)
        slow = layer.saved(row, row)
        return (f"{m.name}: Mamba-2's SSD scan counted as transformers' PyTorch path (mamba2_chunk_scan: the row "
                f"padded to a multiple of chunk_size {m.ssm_chunk_size} ({row} -> {padded} tokens), fp32 chunk x "
                "heads blocks L, G and M and the einsums' operand copies saved), what transformers runs without the "
                f"mamba_ssm / causal_conv1d kernels: {slow:,} bytes per sequence of {row} tokens per layer. With "
                "those kernels (mamba_split_conv1d_scan_combined) a layer would save about "
                f"{mamba2_kernel_saved_per_token(m, t, recipe) * row:,} bytes per sequence (read from mamba_ssm's "
                "MambaSplitConv1dScanCombinedFn, not traced).",)
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
    if is_mamba2(m):
        _check_mamba2_run(m, t)  # refuses generate() in one line
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
