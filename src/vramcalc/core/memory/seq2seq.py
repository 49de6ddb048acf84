"""Encoder-decoders (T5 / mT5 / Flan-T5, BART / mBART): two stacks, two lengths, in bytes.

The encoder stack reads the source (--seq-len tokens per sequence), the decoder stack the target (--target-len):
each decoder block runs a causal self-attention over the target, a cross-attention whose keys and values are
projected from the encoder's output (source length), and an MLP; the LM head and the loss run over the target
tokens only. Sources: transformers 5.24 models/t5/modeling_t5.py (T5Stack, T5Block, T5Attention,
T5LayerNorm, T5DenseActDense / T5DenseGatedActDense, T5ForConditionalGeneration), models/mt5/modeling_mt5.py
(the same blocks, no output scaling), models/bart/modeling_bart.py (BartEncoder / BartDecoder,
BartLearnedPositionalEmbedding with its offset of 2, BartScaledWordEmbedding, layernorm_embedding,
BartForConditionalGeneration's final_logits_bias) and models/mbart/modeling_mbart.py (pre-norm blocks and a
final layer_norm per stack). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.units import dtype_bytes
from vramcalc.core.vocab import SEQ2SEQ_FAMILIES

if TYPE_CHECKING:
    from vramcalc.core.memory.moments import RawMoment
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

def is_seq2seq(m: ModelSpec) -> bool:
    """Whether `m` is an encoder-decoder (vocab.SEQ2SEQ_FAMILIES, with a decoder stack)."""
    return m.decoder_layers > 0 and m.family in SEQ2SEQ_FAMILIES


def is_t5(m: ModelSpec) -> bool:
    return m.family in ("t5", "mt5")


def target_tokens(t: TrainingSpec) -> int:
    """Target tokens per sequence: --target-len, or the source's --seq-len when it is 0."""
    return t.target_len or t.seq_len


# --- Activations ---------------------------------------------------------------------------------------------
# A term's bytes are `coeff` times the multiplier its `kind` names, for batch b, source length s and target
# length t: "s" per source token (b·s), "t" per target token (b·t), "ss" / "tt" / "ts" per query token per key
# (eager scores: b·s·s, b·t·t, b·t·s), "S2" / "T2" / "TS" whatever the batch (T5's position bias: s·s, t·t,
# t·s), "b" per sequence, "1" fixed.
KINDS = ("s", "t", "ss", "tt", "ts", "S2", "T2", "TS", "b", "1")


@dataclass(frozen=True, slots=True)
class STerm:
    """One saved tensor (or group) of an encoder-decoder: `coeff` bytes per unit of `kind` (KINDS)."""

    name: str
    kind: str
    coeff: int


def multipliers(b: int, s: int, t: int) -> dict[str, int]:
    """The unit counts of each term kind for batch b, source length s, target length t."""
    return {"s": b * s, "t": b * t, "ss": b * s * s, "tt": b * t * t, "ts": b * t * s, "S2": s * s, "T2": t * t,
            "TS": t * s, "b": b, "1": 1}


def total(terms: tuple[STerm, ...], mult: dict[str, int]) -> int:
    return sum(x.coeff * mult[x.kind] for x in terms)


@dataclass(frozen=True, slots=True)
class Seq2SeqPlan:
    """The token-independent part of an encoder-decoder estimate: named terms, evaluated per (b, s, t)."""

    enc_layers: int
    dec_layers: int
    checkpointing: bool
    enc_layer: tuple[STerm, ...]  # one encoder block's saved set (a middle block)
    dec_layer: tuple[STerm, ...]  # one decoder block's saved set
    enc_bottom_less: tuple[STerm, ...]  # what the bottom encoder block saves less (LoRA without checkpointing)
    dec_bottom_less: tuple[STerm, ...]
    shared: tuple[STerm, ...]  # alive through the step: stack-level tensors (embeddings, final norms, ids, biases)
    kept: tuple[STerm, ...]  # checkpointing: every block's input hidden states
    head: tuple[STerm, ...]  # LM head and loss, saved until backward
    enc_fwd: tuple[STerm, ...]  # a block's forward temporaries
    dec_fwd: tuple[STerm, ...]
    enc_bwd: tuple[STerm, ...]  # a block's backward temporaries at its MLP (the top of its backward)
    dec_bwd: tuple[STerm, ...]
    # ... and at its attention, once the MLP's saved tensors are freed: T5's position-bias gradients
    enc_bias_bwd: tuple[STerm, ...]
    dec_bias_bwd: tuple[STerm, ...]
    bottom_grads_less: int  # gradient bytes the bottom encoder block has not produced yet at its MLP backward
    loss_fwd: tuple[STerm, ...]
    loss_bwd: tuple[STerm, ...]
    enc_out_grad: tuple[STerm, ...]  # the encoder output's gradient, summed over the decoder's cross-attentions
    g_head: int  # gradient bytes alive from the start of backward (the tied shared embedding's, full)
    # The tied shared embedding's gradient arriving from a stack's embedding backward: autograd sums it into the
    # gradient buffered from the LM head out of place (the new gradient and the sum beside the buffer, measured
    # with the tracer: aten.add.Tensor with three vocab x d_model tensors alive), full fine-tuning only.
    emb_grad_sum: int
    dec_grads: int  # gradient bytes of the decoder and head (full): alive when the encoder's backward starts
    notes: tuple[str, ...]


class _Block:
    """Collects one block's saved terms while tracking whether the hidden states need a gradient (`live`)."""

    def __init__(self, m: ModelSpec, t: TrainingSpec, recipe: Recipe, own: str, live: bool) -> None:
        from vramcalc.core.params import resolve_targets

        self.m, self.t = m, t
        self.c = dtype_bytes(recipe.compute)
        self.tw = t.method == "full"
        self.own = own  # "s" (encoder block) or "t" (decoder block): the kind of this stack's tokens
        self.live = live
        self.terms: list[STerm] = []
        self.adapted = ({lin.module for lin in resolve_targets(m, t.lora_targets)}
                        if t.method in ("lora", "qlora") else set())
        self.a = dtype_bytes(t.adapter_dtype)
        self.fresh = self.a != self.c or t.lora_dropout > 0

    def add(self, name: str, kind: str, coeff: int) -> None:
        if coeff:
            self.terms.append(STerm(name, kind, coeff))

    def linear(self, group: str, modules: tuple[str, ...], width: int, kind: str, already_saved: bool = False,
               base_counted: bool = False) -> bool:
        """A group of Linears reading one input of `width`: the input saved when the weights train (torch
        addmm / mm save their input for the weight's gradient only), and each LoRA adapter's saved tensors (peft
        tuners/lora/layer.py Linear.forward: its input cast to the adapter dtype, and through lora_dropout when
        p > 0, saved by lora_A; lora_A's output saved by lora_B). True when the group's output needs a gradient
        through its own weights. `base_counted`: the input is saved elsewhere already (a shared tensor)."""
        counted = already_saved or base_counted
        if self.tw and not counted:
            self.add(f"{group} input", kind, self.c * width)
            counted = True
        any_adapter = False
        for mod in modules:
            if mod not in self.adapted:
                continue
            any_adapter = True
            extra = self.a * self.t.lora_rank
            if self.fresh:
                extra += self.a * width + (width if self.t.lora_dropout > 0 else 0)
            elif not counted:
                extra += self.c * width
                counted = True
            self.add(f"lora {mod} input", kind, extra)
        return self.tw or any_adapter

    def norm(self, name: str, kind: str) -> None:
        """A block norm on hidden states of `kind`: T5LayerNorm (modeling_t5.py) or nn.LayerNorm (BART)."""
        m, c, h = self.m, self.c, self.m.hidden_size or 0
        if m.norm == "rmsnorm":
            # T5LayerNorm.forward: `variance = x.to(fp32).pow(2).mean(-1)` (pow saves the fp32 copy, or x itself in
            # fp32 runs), `x * rsqrt(variance + eps)` (mul saves x in its own dtype and the fp32 rsqrt, a new
            # 16-bit tensor beside the copy), `.to(weight dtype)`, `weight * x` (saves the normalized x when the
            # weight trains).
            if self.live:
                self.add(f"{name} (fp32 input, input, rsqrt)", kind, 4 * h + (c * h if c != 4 else 0) + 4)
            if self.tw:
                self.add(f"{name} (normalized)", kind, c * h)
        elif self.live or self.tw:  # native_layer_norm: its input, fp32 mean and rstd
            self.add(f"{name} (input, mean, rstd)", kind, c * h + 8)
        self.live = self.live or self.tw

    def dropout(self, name: str, kind: str, p: float, width: int) -> None:
        """Fused CUDA dropout saves a 1-byte mask per element when its input needs a gradient."""
        if p > 0 and self.live:
            self.add(f"{name} dropout mask", kind, width)

    def attention(self, name: str, q_kind: str, kv_kind: str, score_kind: str, bias_kind: str,
                  cross: bool) -> None:
        """Self- (kv_kind = q_kind) or cross-attention (k, v projected from the encoder output, kv_kind "s")."""
        from vramcalc.core.params import head_dim

        m, t, c = self.m, self.t, self.c
        h, heads = m.hidden_size or 0, m.num_attention_heads or 1
        qd = heads * head_dim(m)
        before = self.live
        if cross:
            self.linear(f"{name} q", ("q_proj",), h, q_kind)
            # k and v read the encoder output: one tensor for every decoder block, saved once (shared terms);
            # adapters on k / v that cast it save their own copy per block. The encoder output needs a gradient
            # in every run modelled here (its blocks train or carry adapters), so the attention is recorded.
            self.linear(f"{name} k, v", ("k_proj", "v_proj"), h, kv_kind, base_counted=True)
            attn_live = True
        else:
            attn_live = self.linear(f"{name} q, k, v", ("q_proj", "k_proj", "v_proj"), h, q_kind) or before
        eager = t.attention == "eager"
        if attn_live:
            if eager:
                # eager_attention_forward (modeling_t5.py / modeling_bart.py): matmul saves q and k, softmax (in the
                # scores' dtype) its output, dropout its mask and the dropped probabilities, which attn @ v saves
                # with v; the transposed output is copied (contiguous) for o.
                self.add(f"{name} eager q", q_kind, c * qd)
                self.add(f"{name} eager k, v", kv_kind, 2 * c * qd)
                p = m.attention_dropout
                self.add(f"{name} eager scores (softmax" + (", dropout mask, dropped probs)" if p > 0 else ")"),
                         score_kind, (2 * c + 1 if p > 0 else c) * heads)
            else:
                # Flash / memory-efficient SDPA saves q, k, v, the output and an fp32 logsumexp per head.
                self.add(f"{name} sdpa q, out, logsumexp", q_kind, 2 * c * qd + 4 * heads)
                self.add(f"{name} sdpa k, v", kv_kind, 2 * c * qd)
                if is_t5(m) and bias_kind:
                    # T5's position bias goes to SDPA as a float mask (integrations/sdpa_attention.py
                    # create_position_bias_mask): the encoder's permuted bias made contiguous, the decoder's
                    # torch.where with the causal mask (which it saves, 1 B), a new (1, heads, q, k) tensor in each
                    # block, saved by the memory-efficient kernel; the cross-attention's zeros are one tensor
                    # for every block (shared terms).
                    self.add(f"{name} position-bias mask (saved by the efficient kernel)", bias_kind,
                             c * heads + (1 if q_kind == "t" else 0))
        o_own = self.linear(f"{name} o", ("o_proj",), qd, q_kind, already_saved=attn_live and not eager)
        self.live = before or attn_live or o_own

    def mlp(self, kind: str) -> None:
        from vramcalc.core.memory.activations import _mlp_terms

        m = self.m
        h, i = m.hidden_size or 0, m.intermediate_size or 0
        up = ("gate_proj", "up_proj") if m.mlp == "gated" else ("up_proj",)
        if self.linear("mlp input", up, h, kind) or self.live:
            # relu saves its output, gelu its input, gelu_new its four intermediates; a gated MLP's product saves
            # both factors (memory/activations.py _mlp_terms)
            for x in _mlp_terms(m, self.c, h, i, False, 1, ""):
                self.add(x.name, kind, x.per_token)
            self.live = True
            self.dropout("mlp activation", kind, m.activation_dropout, i)
        self.live = self.linear("mlp output (wo / fc2)", ("down_proj",), i, kind) or self.live


def _block_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, decoder: bool, live: bool) -> tuple[STerm, ...]:
    """One block's saved set (modeling_t5.py T5Block; modeling_bart.py BartEncoderLayer / BartDecoderLayer;
    modeling_mbart.py's pre-norm layers)."""
    own = "t" if decoder else "s"
    keys = "tt" if decoder else "ss"
    bias = "T2" if decoder else "S2"
    b = _Block(m, t, recipe, own, live)
    h = m.hidden_size or 0
    pre = not m.post_norms  # T5, mBART: the norm before each sublayer; BART: after the residual add
    if pre:
        b.norm("self-attention norm", own)
    b.attention("self-attention", own, own, keys, bias, cross=False)
    b.dropout("self-attention output", own, m.dropout, h)
    if not pre:
        b.norm("self-attention LayerNorm", own)
    if decoder:
        if pre:
            b.norm("cross-attention norm", own)
        b.attention("cross-attention", "t", "s", "ts", "", cross=True)
        b.dropout("cross-attention output", own, m.dropout, h)
        if not pre:
            b.norm("cross-attention LayerNorm", own)
    if pre:
        b.norm("mlp norm", own)
    b.mlp(own)
    b.dropout("mlp output", own, m.dropout, h)
    if not pre:
        b.norm("final LayerNorm", own)
    return tuple(b.terms)


def _block_numel(m: ModelSpec, decoder: bool) -> int:
    """Parameters of one block (modeling_t5.py T5Block, modeling_bart.py layers): attention projections (two
    attentions in a decoder block), the MLP, norms, biases; the first block's T5 position table aside."""
    from vramcalc.core.params import head_dim

    h, i = m.hidden_size or 0, m.intermediate_size or 0
    qd = (m.num_attention_heads or 1) * head_dim(m)
    attn = 4 * h * qd + ((3 * qd if m.qkv_bias else 0) + (h if m.o_bias else 0))
    mlp = (3 if m.mlp == "gated" else 2) * h * i + ((i + h) if m.mlp_bias else 0)
    norms = (3 if decoder else 2) * h * (2 if m.norm == "layernorm" else 1)
    return attn * (2 if decoder else 1) + mlp + norms


def build_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> Seq2SeqPlan:
    """The named terms of an encoder-decoder's training step (full, LoRA or QLoRA; sdpa or eager)."""
    assert m.hidden_size is not None and m.vocab_size is not None and m.num_layers is not None
    c = dtype_bytes(recipe.compute)
    g = dtype_bytes(recipe.grad)
    h, v, heads = m.hidden_size, m.vocab_size, m.num_attention_heads or 1
    full = t.method == "full"
    ck = t.grad_checkpointing
    t5 = is_t5(m)
    sdpa = t.attention != "eager"
    # LoRA without checkpointing: the frozen embedding's output needs no gradient, so each stack's bottom block
    # saves nothing before its first adapter; with checkpointing peft's enable_input_require_grads (transformers
    # modeling_utils) hooks the shared input embedding, so both stacks' embedding outputs need one.
    emb_live = full or ck
    enc = _block_terms(m, t, recipe, decoder=False, live=True)
    dec = _block_terms(m, t, recipe, decoder=True, live=True)
    enc_less: tuple[STerm, ...] = ()
    dec_less: tuple[STerm, ...] = ()
    if not emb_live:
        enc0 = _block_terms(m, t, recipe, decoder=False, live=False)
        dec0 = _block_terms(m, t, recipe, decoder=True, live=False)
        enc_less = _less(enc, enc0)
        dec_less = _less(dec, dec0)
    shared: list[STerm] = []
    # Token ids: nll_loss saves the labels (int64); a trained embedding saves its input ids (embedding_backward),
    # the encoder's input_ids and the decoder_input_ids _shift_right / shift_tokens_right makes of the labels.
    shared.append(STerm("labels (saved by nll_loss)", "t", 8))
    if full:
        shared += [STerm("input_ids (saved by the embedding)", "s", 8),
                   STerm("decoder_input_ids (saved by the embedding)", "t", 8)]
        if t5 and m.relative_attention_buckets:
            # T5Attention.compute_bias: relative_attention_bias(relative_position_bucket) saves the (q, k) int64
            # buckets when the table trains, once per stack (the first block computes the bias for all).
            shared += [STerm("encoder position buckets (int64)", "S2", 8),
                       STerm("decoder position buckets (int64)", "T2", 8)]
    for stack, kind in (("encoder", "s"), ("decoder", "t")):
        if m.embedding_norm and emb_live:  # BART layernorm_embedding: input, mean, rstd
            shared.append(STerm(f"{stack} layernorm_embedding (input, mean, rstd)", kind, c * h + 8))
        if m.dropout > 0 and emb_live:
            shared.append(STerm(f"{stack} embedding dropout mask", kind, h))
        if m.final_norm:  # T5 final_layer_norm, mBART layer_norm: the stack's output needs a gradient
            if m.norm == "rmsnorm":
                shared.append(STerm(f"{stack} final norm (fp32 input, input, rsqrt)", kind,
                                    4 * h + (c * h if c != 4 else 0) + 4))
                if full:
                    shared.append(STerm(f"{stack} final norm (normalized)", kind, c * h))
            else:
                shared.append(STerm(f"{stack} final LayerNorm (input, mean, rstd)", kind, c * h + 8))
        if t5 and m.dropout > 0:
            shared.append(STerm(f"{stack} final dropout mask", kind, h))
    kv_adapted = t.method in ("lora", "qlora") and _adapts(m, t, ("k_proj", "v_proj"))
    if full or (kv_adapted and dtype_bytes(t.adapter_dtype) == c and t.lora_dropout == 0):
        shared.append(STerm("encoder output (saved by the cross-attention k, v)", "s", c * h))
    if t5 and sdpa:
        # The decoder's first cross-attention makes a zero position bias (1, heads, t, s) that every block reuses
        # (modeling_t5.py T5Attention.forward, T5Stack.forward): saved by each block's efficient kernel.
        shared.append(STerm("cross-attention zero position bias", "TS", c * heads))
    kept: list[STerm] = []
    if ck:
        # HF gradient checkpointing (non-reentrant): each block keeps its input hidden states; T5's position
        # biases, passed from the first block to the others, stay alive as their inputs.
        kept += [STerm("encoder block inputs", "s", c * h * m.num_layers),
                 STerm("decoder block inputs", "t", c * h * m.decoder_layers)]
        if not any(x.name.startswith("encoder output") for x in shared):  # every decoder block's input too
            kept.append(STerm("encoder output (decoder blocks' input)", "s", c * h))
        if t5:
            kept += [STerm("encoder position bias (block input)", "S2", c * heads),
                     STerm("decoder position bias (block input)", "T2", c * heads)]
    # The LM head and the loss: T5ForConditionalGeneration / BartForConditionalGeneration call CrossEntropyLoss on
    # the logits in the compute dtype (no fp32 upcast): log_softmax saves its output; lm_head saves its input when
    # the (tied) head trains. T5 scales the decoder output by d_model**-0.5 first (a new tensor, the head's input);
    # BART adds final_logits_bias (a new vocab-wide tensor that replaces the logits).
    head = [STerm("log_softmax output", "t", c * v)]
    if full:
        head.insert(0, STerm("lm_head input" + (" (scaled decoder output)" if m.decoder_output_scale else ""), "t",
                             c * h))
    loss_fwd = (STerm("logits", "t", c * v),)
    loss_bwd = (STerm("nll_loss and log_softmax gradients", "t", 2 * c * v),)
    i = m.intermediate_size or 0
    width = (3 if m.mlp == "gated" else 2) * c * i
    enc_fwd = [STerm("mlp forward temporaries", "s", width)]
    dec_fwd = [STerm("mlp forward temporaries", "t", width)]
    enc_bwd = [STerm("mlp backward gradients", "s", width + c * h)]
    dec_bwd = [STerm("mlp backward gradients", "t", width + c * h)]
    enc_bias_bwd: list[STerm] = []
    dec_bias_bwd: list[STerm] = []
    if not sdpa:  # eager: the scores beside the softmax in forward; the probabilities' gradients in backward
        enc_fwd.append(STerm("eager scores", "ss", c * heads))
        dec_fwd.append(STerm("eager scores", "tt", c * heads))
        enc_bwd.append(STerm("eager softmax gradients", "ss", 2 * c * heads))
        dec_bwd.append(STerm("eager softmax gradients", "ts", 2 * c * heads))
    elif t5:
        # A position bias that needs a gradient (the trained table; the cross-attention's zeros under
        # checkpointing, modeling_t5.py `position_bias.requires_grad = True`): the efficient kernel's backward
        # allocates grad_bias as (b, heads, q, k) and the broadcast sums it to (1, heads, q, k)
        # (attention_backward.cu _efficient_attention_backward).
        if full:
            enc_bias_bwd += [STerm("position-bias gradient (b, heads, s, s)", "ss", c * heads),
                             STerm("position-bias gradient summed over the batch", "S2", c * heads)]
            dec_bias_bwd += [STerm("position-bias gradient (b, heads, t, t)", "tt", c * heads),
                             STerm("position-bias gradient summed over the batch", "T2", c * heads)]
        if ck:
            dec_bias_bwd += [STerm("cross zero-bias gradient (b, heads, t, s)", "ts", c * heads),
                             STerm("cross zero-bias gradient, summed and accumulated", "TS", 2 * c * heads)]
    enc_out_grad = (STerm("encoder output gradient (summed over the cross-attentions)", "s", c * h),)
    g_head = v * h * g if full else 0
    n_enc, n_dec = m.num_layers, m.decoder_layers
    if full:
        from vramcalc.core.params import count_params

        dec_grads = (count_params(m) - n_enc * _block_numel(m, False)) * g
    else:
        dec_grads = 0
    notes = [f"encoder-decoder {m.name}: {n_enc} encoder blocks over --seq-len source tokens, {n_dec} decoder "
             "blocks over --target-len target tokens (self-attention, cross-attention over the encoder output, "
             "MLP), the LM head and cross-entropy over the target tokens (memory/seq2seq.py)."]
    if t5 and sdpa:
        notes.append("T5 under sdpa: the relative position bias is a float mask, so CUDA runs the memory-efficient "
                     "kernel (no flash) and every block saves its own (heads, q, k) bias (sdpa_attention.py "
                     "create_position_bias_mask); with a trained table its gradient is (batch, heads, q, k).")
    # At the bottom block's MLP backward its own weights have no gradient yet but the MLP output's (wo / fc2),
    # computed first.
    bottom_less = (_block_numel(m, False) - h * i) * g if full else 0
    if t5 and recipe.weight == "fp16":
        notes.append("T5 in fp16: from_pretrained keeps every `wo` Linear in fp32 (T5PreTrainedModel "
                     "_keep_in_fp32_modules); counted here in fp16, as from_config builds it.")
    return Seq2SeqPlan(n_enc, n_dec, ck, enc, dec, enc_less, dec_less, tuple(shared), tuple(kept), tuple(head),
                       tuple(enc_fwd), tuple(dec_fwd), tuple(enc_bwd), tuple(dec_bwd), tuple(enc_bias_bwd),
                       tuple(dec_bias_bwd), bottom_less, loss_fwd, loss_bwd,
                       enc_out_grad, g_head, 2 * v * h * g if full else 0, dec_grads, tuple(notes))


def _adapts(m: ModelSpec, t: TrainingSpec, modules: tuple[str, ...]) -> bool:
    from vramcalc.core.params import resolve_targets

    return any(lin.module in modules for lin in resolve_targets(m, t.lora_targets))


def _less(full: tuple[STerm, ...], fewer: tuple[STerm, ...]) -> tuple[STerm, ...]:
    """`full` minus `fewer`, term by term (what a bottom block saves less), as negative-free terms per kind."""
    out: dict[str, int] = {}
    for x in full:
        out[x.kind] = out.get(x.kind, 0) + x.coeff
    for x in fewer:
        out[x.kind] = out.get(x.kind, 0) - x.coeff
    return tuple(STerm("bottom block saves less", k, n) for k, n in out.items() if n > 0)


def phases(p: Seq2SeqPlan, t: TrainingSpec, base: tuple[int, int, int], gradients: int, opt_temp: int,
           details: dict[str, int]) -> tuple[dict[str, int], tuple[RawMoment, ...], int, int]:
    """(phases, moments, activations, temporaries) of one step; appends the activation details.

    The moments are the decoder's (memory/moments.py layouts): backward.top is the larger of the decoder's top
    block (every block's saved set alive) and the encoder's top block (the decoder's gradients all there, the
    shared embedding's gradient being summed from the decoder's embedding backward, the encoder output's
    gradient waiting); backward.bottom the encoder's bottom block with every gradient.
    """
    from vramcalc.core.memory import moments as _m

    mult = multipliers(t.batch_size, t.seq_len, target_tokens(t))
    enc1, dec1 = total(p.enc_layer, mult), total(p.dec_layer, mult)
    enc_less, dec_less = total(p.enc_bottom_less, mult), total(p.dec_bottom_less, mult)
    shared, head = total(p.shared, mult), total(p.head, mult)
    # At the encoder's bottom block only what lies below it is left (the ids, the embedding's norm and dropout,
    # T5's buckets); when the encoder embedding's backward sums the shared gradient, only the input ids.
    shared_src = sum(x.coeff * mult[x.kind] for x in p.shared if x.kind in ("s", "S2"))  # the encoder's side
    below = sum(x.coeff * mult[x.kind] for x in p.shared if x.name.startswith(_BELOW_THE_ENCODER))
    ids = sum(x.coeff * mult[x.kind] for x in p.shared if x.name.startswith("input_ids"))
    enc_fwd, dec_fwd = total(p.enc_fwd, mult), total(p.dec_fwd, mult)
    enc_bwd = max(total(p.enc_bwd, mult), total(p.enc_bias_bwd, mult))
    dec_bwd = max(total(p.dec_bwd, mult), total(p.dec_bias_bwd, mult))
    loss_fwd, loss_bwd = total(p.loss_fwd, mult), total(p.loss_bwd, mult)
    out_grad = total(p.enc_out_grad, mult)
    accum = t.grad_accum > 1
    acc = gradients if accum else 0
    g_head = min(p.g_head, gradients)
    g_dec = max(min(p.dec_grads, gradients), g_head)
    emb_sum = p.emb_grad_sum
    g_bottom = gradients - min(p.bottom_grads_less, gradients)
    layer_fwd = max(enc_fwd, dec_fwd)
    enc_all = p.enc_layers * enc1 - enc_less
    dec_all = p.dec_layers * dec1 - dec_less
    if p.checkpointing:
        kept = total(p.kept, mult)
        kept_enc = sum(x.coeff * mult[x.kind] for x in p.kept if x.kind in ("s", "S2"))
        recomputed = max(enc1, dec1)
        top = max((g_head, kept, shared, dec1, 0, dec_bwd + out_grad),  # the decoder's top block
                  (g_dec, kept_enc, shared_src, 0, 0, emb_sum + out_grad),  # the decoder embedding's backward
                  (g_dec, kept_enc, shared_src, enc1, 0, enc_bwd), key=sum)  # the encoder's top block
        raw: list[RawMoment] = [
            ("forward.layer", _m.FWD_LAYER_CK, (acc, kept, shared, 0, layer_fwd)),
            ("forward.loss", _m.FWD_LOSS_CK, (acc, kept, shared, 0, head, loss_fwd, 0)),
            ("backward.start", _m.BWD_START_CK, (acc, kept, shared, head, loss_bwd, 0)),
            ("backward.top", _m.BWD_TOP_CK, top),
            ("backward.bottom", _m.BWD_BOTTOM_CK,
             _bottom(gradients, g_bottom, below, ids, enc1, enc_bwd, emb_sum)),
        ]
        layers = kept
    else:
        saved = enc_all + dec_all
        top = max((g_head, saved, shared, 0, dec_bwd + out_grad),  # the decoder's top block
                  (g_dec, enc_all, shared_src, 0, emb_sum + out_grad),  # the decoder embedding's backward
                  (g_dec, enc_all, shared_src, 0, enc_bwd), key=sum)  # the encoder's top block
        raw = [
            ("forward.layer", _m.FWD_LAYER, (acc, saved, shared, 0, layer_fwd)),
            ("forward.loss", _m.FWD_LOSS, (acc, saved, shared, 0, head, loss_fwd, 0)),
            ("backward.start", _m.BWD_START, (acc, saved, shared, 0, head, loss_bwd, 0)),
            ("backward.top", _m.BWD_TOP, top),
            ("backward.bottom", _m.BWD_BOTTOM,
             _bottom(gradients, g_bottom, below, ids, enc1 - enc_less, enc_bwd, emb_sum)),
        ]
        layers = saved
        recomputed = 0
    raw.append(("backward.end", _m.BWD_END, (gradients, 0)))  # the shared gradient was summed at the bottom
    step: RawMoment = ("optimizer_step.step", _m.STEP, (gradients, opt_temp))
    # Each component is the most of it alive at one moment (memory/moments.py layouts).
    activations = max(_component(x, "activations") for x in raw)
    temporaries = max(max(_component(x, "temporaries") for x in raw), opt_temp)
    details["activations.layers"] = layers
    details["activations.recomputed_layer"] = recomputed
    details["activations.per_layer"] = dec1
    details["activations.encoder_per_layer"] = enc1
    details["activations.decoder_per_layer"] = dec1
    details["activations.bottom_layer"] = enc1 - enc_less
    details["activations.bottom_layer_less"] = 0 if p.checkpointing else enc_less + dec_less
    details["activations.bottom_layers_more"] = 0
    details["activations.shared"] = shared
    details["activations.head_and_loss"] = head
    details["activations.autocast_weight_copies"] = 0
    details["temporaries.loss_forward"] = loss_fwd
    details["temporaries.loss_backward"] = loss_bwd
    details["temporaries.layer_backward"] = top[-1]
    details["temporaries.layer_forward"] = layer_fwd
    details["temporaries.backward_end"] = emb_sum
    b0 = sum(base)
    peaks = {"forward": b0 + max(sum(x[2]) for x in raw[:2]), "backward": b0 + max(sum(x[2]) for x in raw[2:]),
             "optimizer_step": b0 + sum(step[2])}
    raw.append(step)
    return peaks, tuple(raw), activations, temporaries


def _component(moment: RawMoment, name: str) -> int:
    return sum(v for (_, comp), v in zip(moment[1], moment[2], strict=True) if comp == name)


_BELOW_THE_ENCODER = ("input_ids", "encoder position buckets", "encoder embedding", "encoder layernorm_embedding")


def _bottom(gradients: int, g_bottom: int, below: int, ids: int, layer: int, layer_bwd: int,
            emb_sum: int) -> tuple[int, int, int, int, int]:
    """(gradients, shared, last block's activations, its autocast copies, temporaries) at the end of backward:
    the bottom encoder block's backward (its own weights' gradients not there yet), or after it the encoder
    embedding's backward summing the shared gradient (every other gradient there)."""
    a, b = (g_bottom, below, layer, 0, layer_bwd), (gradients, ids, 0, 0, emb_sum)
    return a if sum(a) >= sum(b) else b
