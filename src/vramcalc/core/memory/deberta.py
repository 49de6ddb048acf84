"""DeBERTa-v2/v3's disentangled attention: what it saves beyond a BERT layer of the same shape, in bytes.

The blocks are BERT's (memory/activations.py with the encoder's shape: post-LayerNorm, eager attention, since
DebertaV2 has no attention interface: modeling_deberta_v2.py DisentangledSelfAttention runs its own bmm and softmax).
What is DeBERTa's own (transformers 5.24 modeling_deberta_v2.py, share_att_key true and pos_att_type "p2c|c2p", the
v3 shape io/hf_config.py _deberta_v2 accepts):
- the relative-position projections: each layer drops out the encoder's normalized rel_embeddings (2P rows:
  pos_dropout), runs them through its own query_proj and key_proj (share_att_key), and `.repeat`s the result over
  the batch, (batch x heads, 2P, head_dim) each, saved by the c2p / p2c bmm;
- the raw c2p and p2c scores (batch x heads, seq, 2P), saved by torch.gather (derivatives.yaml gather: `self`) with
  their int64 (seq, seq) indices (an expanded view: one (seq, seq) storage per index, per layer);
- key_layer saved a second time (the p2c bmm saves it unscaled; the content bmm saved `key_layer / scale`);
- the pairwise mask: DebertaV2Encoder.get_attention_mask multiplies the (batch, seq) mask into (batch, 1, seq, seq)
  in the mask's dtype (a collator's int64), alive for the whole forward; each layer's masked_fill saves ~mask.bool().
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

FAMILY = "deberta-v2"
MASK_BYTES = 8  # the int64 attention_mask of a padding collator (DataCollatorWithPadding), expanded pairwise
INDEX_BYTES = 8  # torch.long relative positions and gather indices


@dataclass(frozen=True, slots=True)
class Part:
    """One saved tensor (or group), in memory/activations.py Term's units (activations.py makes Terms of them;
    this module does not import it, which imports this one)."""

    name: str
    per_token: int
    per_token_seq: int = 0
    per_sample: int = 0
    const: int = 0
    per_seq_sq: int = 0


def is_deberta(m: ModelSpec) -> bool:
    """Whether `m` runs DeBERTa-v2/v3's disentangled attention (model_type deberta-v2)."""
    return m.family == FAMILY


def _span(m: ModelSpec) -> int:
    """2P: the rel_embeddings rows every layer projects (att_span * 2, modeling_deberta_v2.py)."""
    return m.rel_embedding_rows


def attention_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable: bool,
                    adapted: set[str]) -> tuple[Part, ...]:
    """One layer's saved tensors beyond BERT's eager attention (memory/activations.py counts q, key / scale, v,
    the softmax, its dropout and the dropped probabilities), when the attention records a graph. `adapted`: the
    LoRA-adapted module names (q_proj, k_proj, ...)."""
    assert m.hidden_size is not None and m.num_attention_heads is not None
    c = dtype_bytes(recipe.compute)
    h, heads, span = m.hidden_size, m.num_attention_heads, _span(m)
    residual = 4 if recipe.autocast or recipe.compute == "fp32" else c  # the rel LayerNorm's output dtype
    # pos_query_layer needs a gradient when query_proj's weight or an adapter on it does; the query and key of a
    # recorded attention need one (as memory/activations.py counts q, k and v), so the bmm keep the projections
    q_pos = trainable or "q_proj" in adapted
    out: list[Part] = []
    # disentangled_attention_bias: torch.bmm(key_layer, pos_query_layer^T) saves key_layer for pos_query's gradient
    if q_pos:
        out.append(Part("p2c bmm: key_layer (unscaled)", c * h))
    # .repeat(batch) of the projected positions, saved by the c2p / p2c bmm for the query's / key's gradient
    out.append(Part("c2p / p2c position projections, repeated per sequence", 0, per_sample=2 * c * span * h))
    # torch.gather(c2p_att, -1, index) saves its input (batch x heads, seq, 2P), once for c2p and once for p2c
    out.append(Part("c2p / p2c raw position scores (saved by gather)", 2 * c * heads * span))
    # the two int64 indices (clamp(relative_pos +- att_span)): (1, seq, seq) storages expanded to every head
    out.append(Part("c2p / p2c gather indices (int64, seq x seq)", 0, per_seq_sq=2 * INDEX_BYTES))
    # attention_scores.masked_fill(~attention_mask.bool(), min): the bool mask, (batch, 1, seq, seq), not per head
    out.append(Part("~mask of masked_fill (bool)", 0, 1))
    # rel_embeddings = self.pos_dropout(rel_embeddings): per layer, 2P x hidden. The dropout keeps its 1-byte mask when
    # the rel_embeddings train; query_proj and key_proj save their input when their weights train (under autocast
    # each its own 16-bit cast of the fp32 dropout output).
    rel = span * h
    const = 0
    if trainable:
        const += rel if m.dropout > 0 else 0
        const += 2 * c * rel if recipe.autocast else residual * rel
    # peft LoRA on query_proj / key_proj runs on the positions too (tuners/lora/layer.py Linear.forward): lora_A saves
    # its input, which is autocast's 16-bit cast under autocast, else the adapter-dtype cast or lora_dropout's output
    # (one per adapter, with dropout's 1-byte mask), else the positions themselves (one tensor for both adapters);
    # lora_B saves lora_A's (2P, r) output
    lora = [x for x in ("q_proj", "k_proj") if x in adapted]
    if lora and not trainable:
        a = dtype_bytes(t.adapter_dtype)
        kept = c if recipe.autocast and a != c else a
        mask = rel if t.lora_dropout > 0 else 0
        const += len(lora) * kept * t.lora_rank * span
        if recipe.autocast and a != c or a != residual or t.lora_dropout > 0:
            const += len(lora) * (kept * rel + mask)
        else:
            const += residual * rel
    if const:
        out.append(Part("rel_embeddings: pos_dropout and its q / k projections' inputs", 0, const=const))
    return tuple(out)


def forward_scores(m: ModelSpec, recipe: Recipe, softmax_bytes: int) -> int:
    """Bytes per token per key of the unsaved score tensors a layer's forward holds beyond its whole saved set (the
    estimate subtracts the saved terms from o_proj's output on, not yet there: LayerActivations.after_attention).
    The larger of two moments (measured with the tracer, --grid deberta: the peak op is p2c's division in bf16, the
    context's contiguous copy under autocast):
    - p2c's division: the content scores, the gathered c2p scores, the running score, the gathered p2c scores and
      their scaled copy (5 per head, 16-bit) while the softmax output, its dropout mask and the dropped
      probabilities and the ~mask (memory/activations.py eager scores) do not exist yet;
    - the context's .contiguous(): attention_scores and rel_att, still referenced by the forward's locals (2 per
      head), and, when the softmax ran in fp32 (autocast), the dropped fp32 probabilities whose 16-bit cast bmm saved.
    """
    assert m.num_attention_heads is not None
    c = dtype_bytes(recipe.compute)
    heads = m.num_attention_heads
    at_division = 5 * c * heads - (softmax_bytes + 1 + c) * heads - 1
    at_context = 2 * c * heads + (softmax_bytes * heads if softmax_bytes != c else 0)
    return max(at_division, at_context)


def shared_terms(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> tuple[Part, ...]:
    """Built once per forward and read by every layer (DebertaV2Encoder.forward): the pairwise mask, the relative
    positions and the normalized rel_embeddings."""
    assert m.hidden_size is not None
    c = dtype_bytes(recipe.compute)
    residual = 4 if recipe.autocast or recipe.compute == "fp32" else c
    rel = _span(m) * m.hidden_size
    full = t.method in ("full", "freeze")
    return (
        # get_attention_mask: mask.unsqueeze(1).unsqueeze(2) * its transpose, (batch, 1, seq, seq) in int64
        Part("pairwise attention mask (int64, batch x seq x seq)", 0, MASK_BYTES),
        # build_relative_position: (1, seq, seq) int64
        Part("relative positions (int64, seq x seq)", 0, per_seq_sq=INDEX_BYTES),
        # get_rel_embedding: LayerNorm(rel_embeddings.weight), its output (fp32 under autocast) and, when its weight
        # trains, its fp32 mean and rstd per row
        Part("normalized rel_embeddings (LayerNorm output, mean, rstd)", 0,
             const=residual * rel + (8 * _span(m) if full else 0)),
    )
