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

from typing import TYPE_CHECKING

from vramcalc.core.vocab import SEQ2SEQ_FAMILIES

if TYPE_CHECKING:
    from vramcalc.core.params import ParamTensor
    from vramcalc.core.specs import ModelSpec

# BartLearnedPositionalEmbedding: `num_embeddings + self.offset` rows, offset 2 (modeling_bart.py; mBART's
# MBartLearnedPositionalEmbedding is the same).
BART_POSITION_OFFSET = 2


def is_seq2seq(m: ModelSpec) -> bool:
    """Whether `m` is an encoder-decoder (vocab.SEQ2SEQ_FAMILIES, with a decoder stack)."""
    return m.decoder_layers > 0 and m.family in SEQ2SEQ_FAMILIES


def is_t5(m: ModelSpec) -> bool:
    return m.family in ("t5", "mt5")


def seq2seq_inventory(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of AutoModelForSeq2SeqLM, as `sum(p.numel())` counts them.

    T5ForConditionalGeneration: `shared` (vocab x d_model), tied to both stacks' embed_tokens and, in transformers
    5 always (T5Config / MT5Config force tie_word_embeddings=True), to lm_head; in each stack the first block's
    relative_attention_bias Embedding(buckets, heads) (the decoder's cross-attention has none); per encoder block
    two T5LayerNorm weights, per decoder block three; q, k, v, o without bias (heads x d_kv inner width); wi / wo
    (relu) or wi_0 / wi_1 / wo (gated-gelu) without bias; a final_layer_norm per stack.
    BartForConditionalGeneration: `shared` tied to both stacks and lm_head; a learned position table of
    max_position_embeddings + 2 rows per stack; layernorm_embedding per stack; biased q, k, v, out_proj, fc1, fc2;
    two LayerNorms per encoder block, three per decoder block; mBART adds a final layer_norm per stack.
    """
    from vramcalc.core.params import ParamTensor, block_linears

    assert m.vocab_size is not None and m.hidden_size is not None and m.num_layers is not None
    assert m.num_attention_heads is not None
    h, v = m.hidden_size, m.vocab_size
    out: list[ParamTensor] = [ParamTensor("shared", "embedding", (v, h), 1, "embed_tokens", False)]
    if m.learned_position_embeddings:
        assert m.max_position_embeddings is not None
        rows = m.max_position_embeddings + BART_POSITION_OFFSET
        out.append(ParamTensor("embed_positions", "position", (rows, h), 2, "embed_positions", False))
    if m.relative_attention_buckets:
        out.append(ParamTensor("relative_attention_bias", "position",
                               (m.relative_attention_buckets, m.num_attention_heads), 2, "relative_attention_bias",
                               False))
    for lin in block_linears(m):
        out.append(ParamTensor(lin.module, "linear", (lin.out_features, lin.in_features), lin.count, lin.module))
    for lin in block_linears(m):
        base = lin.module
        has_bias = ((m.qkv_bias and base in ("q_proj", "k_proj", "v_proj")) or (m.o_bias and base == "o_proj")
                    or (m.mlp_bias and base in ("gate_proj", "up_proj", "down_proj")))
        if has_bias:
            out.append(ParamTensor(lin.module + ".bias", "bias", (lin.out_features,), lin.count, lin.module))
    vectors = 2 if m.norm == "layernorm" else 1
    out.append(ParamTensor("layer_norms", "norm", (h,), vectors * (2 * m.num_layers + 3 * m.decoder_layers), "norm"))
    if m.embedding_norm:  # BART layernorm_embedding, one per stack
        out.append(ParamTensor("embed_norm", "norm", (h,), 2 * vectors, "norm", False))
    if m.final_norm:  # T5 final_layer_norm, mBART layer_norm: one per stack
        out.append(ParamTensor("final_norm", "norm", (h,), 2 * vectors, "norm", False))
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (v, h), 1, "lm_head", False))
    return tuple(out)
