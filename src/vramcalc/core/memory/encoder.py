"""Encoders with task heads (BERT, RoBERTa / XLM-R, DistilBERT): what differs from a causal LM, in bytes.

The blocks are the decoder arithmetic of memory/activations.py with the encoder's shape (post-LayerNorm,
biases, a plain GELU MLP, learned positions, dropout: io/hf_config.py _bert), with no causal mask:
transformers 5 builds the encoders' mask with masking_utils.create_bidirectional_mask, which returns None
without a padding mask, so sdpa runs unmasked (flash) and eager adds no mask. What is the encoder's own:
- the head is a run option (--head): AutoModelForSequenceClassification (modeling_bert.py BertPooler + the
  classifier; RobertaClassificationHead; DistilBERT's pre_classifier + classifier) or AutoModelForMaskedLM
  (the transform, its LayerNorm and the decoder tied to the word embeddings), so `for_run` gives the model
  the run's head before its parameters are counted;
  AutoModelForTokenClassification (--head token-cls: modeling_bert.py BertForTokenClassification, the encoder
  without its pooler, then dropout and Linear(hidden, num_labels) at every position; the same in
  RobertaForTokenClassification and DistilBertForTokenClassification);
- the loss: cross-entropy over num_labels on the first token (nothing per token), over num_labels at every
  token for token classification (`CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))`, the
  logits in the compute dtype, no fp32 upcast), or, for the masked LM,
  torch's CrossEntropyLoss on the vocab-wide logits of every position in the compute dtype
  (BertForMaskedLM.forward: `CrossEntropyLoss()(prediction_scores.view(-1, vocab_size), labels.view(-1))`,
  no fp32 upcast; under CUDA autocast log_softmax is on the fp32 list).
Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.units import dtype_bytes
from vramcalc.core.vocab import ENCODER_FAMILIES

if TYPE_CHECKING:
    from vramcalc.core.memory.activations import HeadActivations, Term
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

def is_encoder(m: ModelSpec) -> bool:
    """Whether `m` is an encoder-only model (vocab.ENCODER_FAMILIES)."""
    return m.family in ENCODER_FAMILIES


def for_run(m: ModelSpec, t: TrainingSpec) -> ModelSpec:
    """The encoder with the run's task head (--head, --num-labels); any other model unchanged."""
    if not is_encoder(m):
        return m
    mlm, token = t.head == "mlm", t.head == "token-cls"
    if m.mlm_head == mlm and m.token_head == token and m.num_labels == t.num_labels:
        return m
    return replace(m, mlm_head=mlm, token_head=token, num_labels=t.num_labels)


def vocab_head(m: ModelSpec) -> bool:
    """Whether the model ends in a vocab-wide head (a causal LM, or an encoder's masked-LM head)."""
    return not is_encoder(m) or m.mlm_head


def head_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> HeadActivations:
    """The head's saved tensors and the loss's transients, in bytes per token."""
    from vramcalc.core.memory.activations import HeadActivations

    terms = head_terms(m, t, recipe, head_trainable)
    saved = sum(x.per_token for x in terms)
    if not m.mlm_head and not m.token_head:
        return HeadActivations(saved, 0, 0)  # the loss reads batch x num_labels logits: nothing per token
    assert m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    ls = 4 if recipe.autocast or recipe.compute == "fp32" else c  # log_softmax's dtype
    v = m.vocab_size if m.mlm_head else (m.num_labels or 2)  # the logits' width: vocabulary or labels
    # Forward: the logits (the decoder's output), and under autocast their fp32 cast, next to the saved output.
    fwd = c * v + (4 * v if ls != c else 0)
    # Backward: nll_loss's gradient and log_softmax's input gradient, in log_softmax's dtype.
    bwd = 2 * ls * v
    return HeadActivations(saved, fwd, bwd)


def head_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> tuple[Term, ...]:
    """The named parts of the head's saved set (bytes per token), for `vramcalc explain`."""
    from vramcalc.core.memory.activations import Term, _act_saved_bytes

    assert m.hidden_size is not None and m.vocab_size is not None
    c = dtype_bytes(recipe.compute)
    h = m.hidden_size
    if m.family == "modernbert":
        return _modernbert_head_terms(m, t, recipe, head_trainable)
    if m.token_head:
        ls = 4 if recipe.autocast or recipe.compute == "fp32" else c  # log_softmax's dtype, as for the masked LM
        terms: list[Term] = []
        # BertForTokenClassification.dropout (classifier_dropout, else hidden_dropout_prob; DistilBERT's dropout):
        # torch native_dropout saves a bool mask (1 byte per element). With p = 0 torch's dropout returns its
        # input, so the classifier's input is then the last hidden state itself; either way a trained classifier
        # (full, or the copy peft's TOKEN_CLS task trains beside LoRA: saved_head_tensors) saves its input.
        if m.dropout > 0:
            terms.append(Term("classifier dropout mask", h))
        if head_trainable or t.method in ("lora", "qlora"):
            terms.append(Term("classifier input", c * h))
        terms.append(Term("log_softmax output (num_labels per token)", ls * (m.num_labels or 2)))
        return tuple(terms)
    if not m.mlm_head:
        # BertPooler / DistilBERT's pre_classifier read hidden_states[:, 0], a view: a trained dense saves it and
        # so keeps the whole last hidden state alive. RobertaClassificationHead drops out the first token first
        # (a new batch x hidden tensor): nothing per token.
        # DeBERTa's ContextPooler (modeling_deberta_v2.py) drops out the first token with pooler_dropout 0 (every v3
        # config; torch returns the input), so its dense saves the view as BERT's pooler does.
        keeps = head_trainable and m.family in ("bert", "distilbert", "deberta-v2")
        return (Term("pooler input (a view of the last hidden state)", c * h),) if keeps else ()
    residual = 4 if recipe.autocast or recipe.compute == "fp32" else c
    ls = residual  # log_softmax: fp32 under autocast (CUDA's fp32 list) or in fp32 runs, else the compute dtype
    out: list[Term] = []
    if head_trainable:
        out.append(Term("mlm transform dense input", c * h))
    out.append(Term("mlm transform activation input", _act_saved_bytes(m.hidden_act, c, recipe.autocast) * h))
    out.append(Term("mlm transform LayerNorm (input, mean, rstd)", residual * h + 8))
    if head_trainable:
        out.append(Term("mlm decoder input", c * h))
    out.append(Term("log_softmax output", ls * m.vocab_size))
    return tuple(out)


def _modernbert_head_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, head_trainable: bool) -> tuple[Term, ...]:
    """ModernBERT's head (modeling_modernbert.py): final_norm, then ModernBertPredictionHead (dense, act, a
    LayerNorm without bias) on the pooled vector (seq-cls) or every position (token-cls), dropout
    (classifier_dropout 0.0: torch returns the input) and the classifier."""
    from vramcalc.core.memory.activations import Term, _act_saved_bytes

    assert m.hidden_size is not None
    c = dtype_bytes(recipe.compute)
    h = m.hidden_size
    residual = 4 if recipe.autocast or recipe.compute == "fp32" else c  # LayerNorm's input under autocast: fp32
    out: list[Term] = []
    # final_norm saves its input, mean and rstd. Layer 0's attn_norm is nn.Identity, while the layer terms
    # (memory/activations.py) count an attention norm in every layer: without checkpointing, when every layer's
    # norm saves (full fine-tuning), that phantom norm is the final norm's size and stands for it.
    phantom = not t.grad_checkpointing and t.method in ("full", "freeze") and head_trainable
    if not phantom:
        out.append(Term("final norm (input, mean, rstd)", residual * h + 8))
    classifier_trained = head_trainable or t.method in ("lora", "qlora")  # peft: a copy of `classifier`
    if m.token_head:
        if head_trainable:
            out.append(Term("head dense input", c * h))
        out.append(Term("head activation input", _act_saved_bytes(m.hidden_act, c, recipe.autocast) * h))
        out.append(Term("head LayerNorm (input, mean, rstd)", residual * h + 8))
        if classifier_trained:
            out.append(Term("classifier input", c * h))
        out.append(Term("log_softmax output (num_labels per token)", residual * (m.num_labels or 2)))
    elif m.mean_pooling:
        # classifier_pooling "mean": (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum: mul saves the bool mask
        out.append(Term("mean pooling mask (bool)", 1))
    elif head_trainable:
        # classifier_pooling "cls": last_hidden_state[:, 0] is a view; the trained dense saves it and so keeps the
        # whole final-norm output alive
        out.append(Term("pooled view (keeps the last hidden state)", c * h))
    return tuple(out)


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Gradients that appear only after the bottom layer's backward: a sequence classifier's embedding tables
    (word, position, token type) and their LayerNorm, which no head shares (the masked LM's decoder is the word
    embedding, whose gradient exists from the start of backward). Full fine-tuning only (the caller's rule).
    Measured with the tracer: bert-base-uncased seq-cls with checkpointing peaks in layer 0's backward with
    every gradient but these (embedding_dense_backward comes last)."""
    from vramcalc.core.params import inventory

    if not is_encoder(m) or m.mlm_head or t.method != "full":
        return 0
    numel = sum(x.numel for x in inventory(m) if x.kind in ("embedding", "position"))
    numel += (1 if m.norm_without_bias else 2) * (m.hidden_size or 0)  # the embedding LayerNorm's weight (and bias)
    return numel * dtype_bytes(recipe.grad)


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """What an encoder estimate assumes (shown in every format)."""
    if not is_encoder(m):
        return ()
    if m.token_head:
        head = (f"token classification (AutoModelForTokenClassification, {m.num_labels or 2} labels): dropout and a "
                "classifier at every token, cross-entropy over the labels at every position")
        if t.method in ("lora", "qlora"):
            head += "; peft's TOKEN_CLS task trains a copy of the classifier (modules_to_save)"
    elif m.mlm_head:
        head = ("masked LM (AutoModelForMaskedLM): logits and cross-entropy over the vocabulary at every position, "
                "as BertForMaskedLM computes them (labels -100 mask positions out of the loss, not of the logits)")
    else:
        head = (f"sequence classification (AutoModelForSequenceClassification, {m.num_labels or 2} labels): the "
                "first token's pooled vector and a classifier, nothing vocabulary-wide")
        if t.method in ("lora", "qlora"):
            head += "; peft's SEQ_CLS task trains a copy of the classifier (modules_to_save)"
    if m.family == "modernbert":
        pooling = "mean pooling" if m.mean_pooling else "the first token"
        head = head.replace("the first token's pooled vector", f"{pooling} and the prediction head")
        attention = (f"global attention in {(m.num_layers or 0) - (m.sliding_window_layers or 0)} layers, and in "
                     f"{m.sliding_window_layers} a window of {m.sliding_window} positions each side: a 4-D mask, "
                     "whose 16-bit copy the memory-efficient sdpa kernel saves per sliding layer (no unpadding "
                     "outside flash-attention 2; unpadded batches)")
        return (f"encoder {m.name}: {attention}; head: {head}.",)
    if m.family == "deberta-v2":
        return (f"encoder {m.name}: DeBERTa's disentangled attention, eager (no SDPA path in transformers): per layer "
                f"the c2p / p2c position scores against {m.rel_embedding_rows} relative positions and their int64 "
                "gather indices; the collator's int64 attention_mask expanded to batch × seq × seq (all ones: "
                f"unpadded batches); head: {head}.",)
    return (f"encoder {m.name}: bidirectional attention without a padding mask (unpadded batches); head: {head}.",)


def saved_head_tensors(m: ModelSpec, t: TrainingSpec) -> tuple[tuple[tuple[int, ...], int], ...]:
    """(shape, count) of the head modules peft trains beside LoRA adapters: SEQ_CLS puts "classifier" and
    "score" in modules_to_save (peft_model.py PeftModelForSequenceClassification), matched as a name suffix
    (tuners_utils.py), so RoBERTa's whole RobertaClassificationHead (dense + out_proj) and DistilBERT's
    pre_classifier with its classifier are copied and trained; BERT's pooler is not (only its classifier).
    The masked LM (no task type) trains adapters only."""
    if not is_encoder(m) or m.mlm_head or t.method not in ("lora", "qlora"):
        return ()
    assert m.hidden_size is not None
    h, n = m.hidden_size, m.num_labels or 2
    out: tuple[tuple[tuple[int, ...], int], ...] = (((n, h), 1), ((n,), 1))
    # TOKEN_CLS (PeftModelForTokenClassification) adds the same names; the token classifier is one Linear, as is
    # ModernBERT's `classifier` (its ModernBertPredictionHead is named `head`, not matched).
    # DeBERTa's classifier is one Linear too (its ContextPooler is named `pooler`, not matched).
    if m.family not in ("bert", "modernbert", "deberta-v2") and not m.token_head:
        out += (((h, h), 1), ((h,), 1))
    return out


def embedding_output_grad(m: ModelSpec, t: TrainingSpec) -> bool:
    """Whether a frozen encoder's embedding output needs a gradient: checkpointing with adapters calls
    enable_input_require_grads (transformers modeling_utils), so the embedding LayerNorm saves its input, mean
    and rstd (measured with the tracer, bert-base-uncased LoRA with checkpointing: 2 B x hidden + 8 per token)."""
    return is_encoder(m) and t.grad_checkpointing and t.method not in ("full", "freeze")
