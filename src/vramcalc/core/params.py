"""Parameter counts derived from the architecture, as a named inventory of weight tensors.

Each entry is one weight tensor shape and how many times it occurs, so the memory core can
apply per-tensor rules (LoRA targets, bitsandbytes' quantized Linear layers, Adafactor's
factored states, 8-bit optimizer thresholds). Counts follow the transformers modeling files
(modeling_llama.py, modeling_gpt2.py, ...) and are tested against published totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.vocab import CLASSIC_FAMILIES, ENCODER_FAMILIES, SSM_FAMILIES

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, VisionSpec

TensorKind = Literal["embedding", "position", "linear", "bias", "norm", "head", "router", "opaque"]


@dataclass(frozen=True, slots=True)
class ParamTensor:
    """`count` tensors of one shape. `module` is the canonical module name used for LoRA targets."""

    name: str
    kind: TensorKind
    shape: tuple[int, ...]
    count: int
    module: str
    per_layer: bool = True

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.count

    @property
    def numel_each(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, slots=True)
class Linear:
    """One Linear module inside a transformer block: out × in, occurring `count` times in the model."""

    module: str
    in_features: int
    out_features: int
    count: int
    rank_mult: int = 1  # LoRA rank multiple: peft gives a fused expert gate_up_proj 2 x r (fused_moe_targets)


# transformers 5.x keeps these families' routed experts as 3-D Parameters (modeling_mixtral.py MixtralExperts:
# gate_up_proj (E, 2i, h), down_proj (E, h, i), run by integrations/moe.py grouped_mm_experts_forward) and the
# router as a custom module holding a weight Parameter (MixtralTopKRouter): neither is an nn.Linear, so peft's
# all-linear, bitsandbytes' Linear4bit replacement and the other PEFT methods do not see them.
FUSED_EXPERT_FAMILIES = frozenset({"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss",
                                   "llama4", "jamba", "granitemoehybrid", "nemotron_h"})
# (Nemotron-H's "E" layers, modeling_nemotron_h.py NemotronHExperts: up_proj (E, i, h) and down_proj (E, h, i), no gate
# (use_experts_implementation(has_gate=False)), beside NemotronHTopkRouter's fp32 weight (E, h); shared_experts, a
# NemotronHMLP of two nn.Linear modules, is the shared expert. nemotron_h is a key of transformers' conversion table
# (the per-expert Linears merged) but of neither of peft 0.21's _MOE_TARGET_MODULE_MAPPING patterns: LoRA's up_proj /
# down_proj names adapt the shared expert's and the "-" layers' nn.Linear modules only.)
# (GraniteMoeHybrid, modeling_granitemoehybrid.py GraniteMoeHybridExperts: gate_up_proj (E, 2i, h) and down_proj
# (E, h, i) as Mixtral's, under block_sparse_moe with GraniteMoeHybridTopKRouter's weight (E, h); shared_mlp, two
# nn.Linear modules, is the shared expert. granitemoehybrid is a key of transformers' conversion table (on the
# granitemoe pattern) but not of peft 0.21's _convert_peft_config_moe: see PEFT_MOE_CONVERTED.)
# (Jamba, modeling_jamba.py JambaExperts: gate_up_proj (E, 2i, h) and down_proj (E, h, i) as Mixtral's; jamba is no
# key of peft's conversion table, so LoRA's gate/up/down_proj names adapt the dense layers' JambaMLP only.)
# Llama 4 (modeling_llama4.py Llama4TextExperts): gate_up_proj (E, hidden, 2i) and down_proj (E, i, hidden) are 3-D
# Parameters too, but run by torch.bmm over every token (Llama4TextMoe: each expert takes all tokens, scaled by its
# sigmoid router score, 0 for the unrouted), not grouped_mm; Llama4Router subclasses nn.Linear, so peft's all-linear
# takes it (and fails: resolve_targets refuses it) but bitsandbytes does not (it replaces exact nn.Linear modules).
# llama4 is no key of peft's conversion table, so LoRA's gate/up/down_proj names adapt the shared expert's and the
# dense layers' nn.Linear modules only.
# peft 0.21 utils/transformers_weight_conversion.py _convert_peft_config_moe rewrites a LoRA config for the model
# types of transformers' conversion_mapping._MODEL_TO_CONVERSION_PATTERN (mixtral; qwen3_moe, deepseek_v2/v3 on the
# qwen2_moe pattern; qwen2_moe itself and gpt_oss are not keys there): gate_proj + up_proj (Mixtral w1 + w3) become
# target_parameters experts.gate_up_proj at rank and alpha 2 x r, down_proj (w2) experts.down_proj, the router
# `gate` gate.weight (ParamWrapper, tuners/lora/layer.py), "all-linear" all three; the names it maps leave
# target_modules, so a shared expert's or a dense layer's gate/up/down_proj is not adapted.
PEFT_MOE_CONVERTED = frozenset({"mixtral", "qwen3_moe", "deepseek_v2", "deepseek_v3"})


def fused_experts(m: ModelSpec) -> bool:
    """Whether `m`'s routed experts are 3-D Parameters under transformers 5 (FUSED_EXPERT_FAMILIES)."""
    return bool(m.num_experts) and m.family in FUSED_EXPERT_FAMILIES


def linear_tensors(m: ModelSpec, linears: tuple[Linear, ...]) -> list[ParamTensor]:
    """Each Linear's weight (out x in), then the biases linear_has_bias gives them: the order of every inventory."""
    out = [ParamTensor(lin.module, "linear", (lin.out_features, lin.in_features), lin.count, lin.module)
           for lin in linears]
    return out + [ParamTensor(lin.module + ".bias", "bias", (lin.out_features,), lin.count, lin.module)
                  for lin in linears if linear_has_bias(m, lin.module)]


def linear_has_bias(m: ModelSpec, module: str) -> bool:
    """Whether a block Linear (canonical name) has a bias (GPT-2 and NeoX: every projection; Qwen2: q, k, v)."""
    base = module.rsplit(".", 1)[-1]
    return bool((m.qkv_bias and base in ("q_proj", "k_proj", "v_proj", "qkv_proj"))
                or (m.o_bias and base == "o_proj")
                or (m.mlp_bias and base in ("gate_proj", "up_proj", "down_proj", "gate_up_proj"))
                # (NemotronHMoE's latent projections: nn.Linear(bias=config.mlp_bias))
                or (m.mlp_bias and base in ("fc1_latent_proj", "fc2_latent_proj"))
                or (bool(m.mixer_intermediate_size) and ((m.ssm_proj_bias and base == "in_proj")
                                                         or (m.mixer_out_bias and base == "out_proj")))
                or (bool(m.jamba_mixer_size) and (base == "dt_proj" or (m.ssm_proj_bias and base in ("in_proj",
                                                                                                   "out_proj")))))


def head_dim(m: ModelSpec) -> int:
    """Per-head dimension: explicit (Gemma: 256) or hidden / heads (config.json convention)."""
    assert m.hidden_size is not None and m.num_attention_heads is not None
    return m.head_dim or m.hidden_size // m.num_attention_heads


def kv_heads(m: ModelSpec) -> int:
    """KV heads: GQA/MQA when set, else one per attention head."""
    assert m.num_attention_heads is not None
    return m.num_kv_heads or m.num_attention_heads


def dense_layers(m: ModelSpec) -> int:
    """Layers with a dense MLP (all of them for a dense model; DeepSeek's first_k_dense for MoE)."""
    assert m.num_layers is not None
    if is_jamba(m):  # JambaConfig.layers_num_experts: MoE where i % expert_layer_period == expert_layer_offset
        return sum(1 for _, moe in jamba_layer_kinds(m) if not moe)
    if is_nemotron_h(m):  # NemotronHBlock: an MLP only in hybrid_pattern's "-" layers
        return m.hybrid_pattern.count("-")
    if m.num_experts and m.moe_layer_interval > 1:  # Llama 4: MoE in every interleave_moe_layer_step-th layer
        return m.num_layers - m.num_layers // m.moe_layer_interval
    return m.num_layers if m.num_experts == 0 else min(m.first_dense_layers, m.num_layers)


def dense_mlp_spec(m: ModelSpec) -> ModelSpec:
    """The spec of a MoE model's dense-MLP layers (DeepSeek first_k_dense_replace, Qwen-MoE mlp_only_layers, Llama 4's
    interleaved layers): no experts, router or shared expert, the dense MLP intermediate_size wide."""
    return replace(m, num_experts=0, experts_per_token=0, num_shared_experts=0, first_dense_layers=0,
                   shared_expert_gate=False, router_bias=False)


@lru_cache(maxsize=512)
def block_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """Every Linear of the transformer blocks, with canonical module names (for LoRA and quantization)."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    if m.ssm_state_size:  # a state-space model's mixer (memory/ssm.py)
        return ssm_linears(m)
    if is_jamba(m):  # attention or Mamba layers, dense or MoE feed-forwards (jamba_linears)
        return jamba_linears(m)
    if is_zamba2(m):  # Mamba-2 layers and the shared attention blocks (zamba2_linears)
        return zamba2_linears(m)
    if is_nemotron_h(m):  # Mamba-2, attention or MLP layers (nemotron_h_linears)
        return nemotron_h_linears(m)
    h, n_layers = m.hidden_size, m.num_layers
    q_dim = m.num_attention_heads * head_dim(m) if m.num_attention_heads else h
    kv_dim = kv_heads(m) * head_dim(m)
    out: list[Linear] = []
    # Encoder-decoders (memory/seq2seq.py): every decoder block has a self-attention and a cross-attention of the
    # same shapes (modeling_t5.py T5LayerCrossAttention, modeling_bart.py encoder_attn: k and v read the encoder
    # output, of d_model) and one MLP; num_layers counts the encoder's blocks.
    n_attn = n_layers + 2 * m.decoder_layers
    if is_layered_hybrid(m):  # BambaDecoderLayer: attention only at attn_layer_indices (the others run the mixer;
        # GraniteMoeHybridDecoderLayer: at layer_types' "attention" entries)
        n_attn = len(m.attention_layers)
    # Attention projections (modeling_llama.py LlamaAttention; GPT-2's c_attn is the fused form).
    if m.attention_kind == "mla":
        out += mla_linears(m)
    elif m.fused_qkv:
        out.append(Linear("qkv_proj", h, q_dim + 2 * kv_dim, n_attn))
    else:
        out += [Linear("q_proj", h, q_dim, n_attn), Linear("k_proj", h, kv_dim, n_attn),
                Linear("v_proj", h, kv_dim, n_attn)]
    if m.attention_kind != "mla":
        out.append(Linear("o_proj", q_dim, h, n_attn))
    # MLP: gated (SwiGLU, Shazeer 2020: gate, up, down) or plain (fc1, fc2) in the dense layers.
    n_dense = dense_layers(m) + m.decoder_layers
    i = m.intermediate_size
    if n_dense:
        out += _mlp_linears(m, h, i, n_dense, "")
    n_moe = n_layers - dense_layers(m)
    if n_moe:
        e_i = m.moe_intermediate_size or i
        out += _mlp_linears(m, h, e_i, n_moe * m.num_experts, "experts.")
        if m.num_shared_experts:
            s_i = m.shared_expert_intermediate_size or e_i * m.num_shared_experts
            out += _mlp_linears(m, h, s_i, n_moe, "shared_expert.")
    if m.mixer_intermediate_size:  # Falcon-H1: every layer's Mamba-2 mixer beside its attention (Bamba: the others)
        out += ssm_linears(hybrid_mixer(m))
    return tuple(x for x in out if x.count)


def mla_linears(m: ModelSpec) -> list[Linear]:
    """Multi-head latent attention (DeepSeek-V2 arXiv:2405.04434 §2.1; DeepseekV3Attention in transformers).

    q: q_a_proj (hidden -> q_lora_rank), RMSNorm, q_b_proj (-> heads * (nope + rope)), or one q_proj when
    q_lora_rank is null; kv: kv_a_proj_with_mqa (hidden -> kv_lora_rank + rope, the shared rope key),
    RMSNorm, kv_b_proj (kv_lora_rank -> heads * (nope + v)); o_proj (heads * v -> hidden).
    """
    assert m.hidden_size is not None and m.num_layers is not None and m.num_attention_heads is not None
    assert m.kv_lora_rank and m.qk_nope_head_dim and m.qk_rope_head_dim and m.v_head_dim
    h, n, heads = m.hidden_size, m.num_layers, m.num_attention_heads
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    out: list[Linear] = []
    if m.q_lora_rank:
        out += [Linear("q_a_proj", h, m.q_lora_rank, n), Linear("q_b_proj", m.q_lora_rank, heads * qk, n)]
    else:
        out.append(Linear("q_proj", h, heads * qk, n))
    out += [Linear("kv_a_proj_with_mqa", h, m.kv_lora_rank + m.qk_rope_head_dim, n),
            Linear("kv_b_proj", m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim), n),
            Linear("o_proj", heads * m.v_head_dim, h, n)]
    return out


def _mlp_linears(m: ModelSpec, h: int, i: int, count: int, prefix: str) -> list[Linear]:
    if m.mlp == "gated":
        if m.fused_gate_up:
            return [Linear(prefix + "gate_up_proj", h, 2 * i, count), Linear(prefix + "down_proj", i, h, count)]
        return [Linear(prefix + "gate_proj", h, i, count), Linear(prefix + "up_proj", h, i, count),
                Linear(prefix + "down_proj", i, h, count)]
    return [Linear(prefix + "up_proj", h, i, count), Linear(prefix + "down_proj", i, h, count)]


@lru_cache(maxsize=512)
def inventory(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """All parameter tensors of the model. A count-only preset is one opaque tensor."""
    if m.family in CLASSIC_FAMILIES:  # ResNet, LSTM language model (memory/classic.py)
        return resnet_tensors(m) if m.family == "resnet" else lstm_tensors(m)
    if not m.has_architecture:
        assert m.parameters is not None
        return (ParamTensor("parameters", "opaque", (m.parameters,), 1, "model", per_layer=False),)
    assert m.vocab_size is not None and m.hidden_size is not None and m.num_layers is not None
    if m.decoder_layers:  # encoder-decoders: two stacks (memory/seq2seq.py)
        return seq2seq_inventory(m)
    if m.ssm_state_size:  # Mamba (memory/ssm.py)
        return ssm_tensors(m)
    if is_jamba(m):  # Jamba (memory/jamba.py)
        return jamba_tensors(m)
    if is_zamba2(m):  # Zamba2: the shared blocks' weights once (zamba2_tensors)
        return zamba2_tensors(m)
    if is_nemotron_h(m):  # Nemotron-H (memory/nemotron_h.py)
        return nemotron_h_tensors(m)
    h, v, n_layers = m.hidden_size, m.vocab_size, m.num_layers
    out: list[ParamTensor] = [ParamTensor("embed_tokens", "embedding", (v, h), 1, "embed_tokens", False)]
    if m.learned_position_embeddings:
        assert m.max_position_embeddings is not None
        out.append(ParamTensor("embed_positions", "position", (m.max_position_embeddings, h), 1,
                               "embed_positions", False))
    if m.type_vocab_size and m.family in ENCODER_FAMILIES:  # BertEmbeddings.token_type_embeddings
        out.append(ParamTensor("token_type_embeddings", "position", (m.type_vocab_size, h), 1,
                               "token_type_embeddings", False))
    out += linear_tensors(m, block_linears(m))  # biases: GPT-2 and NeoX every projection, Qwen2 q, k, v only
    # Norms: RMSNorm has a weight (Zhang & Sennrich 2019); LayerNorm a weight and a bias (none with ModernBERT's
    # norm_bias false: nn.LayerNorm(bias=False)).
    norm_vectors = 2 if m.norm == "layernorm" and not m.norm_without_bias else 1
    if m.norms_per_layer:
        # ModernBertEncoderLayer: layer 0's attn_norm is nn.Identity (modeling_modernbert.py), one norm fewer
        first_identity = 1 if m.family == "modernbert" else 0
        out.append(ParamTensor("layer_norms", "norm", (h,),
                               (m.norms_per_layer * n_layers - first_identity) * norm_vectors, "norm"))
    if m.qk_norm and m.qk_norm_full:  # OLMo 2 (modeling_olmo2.py): RMSNorm(heads * d) and RMSNorm(kv_heads * d)
        assert m.num_attention_heads is not None
        out.append(ParamTensor("q_norms", "norm", (m.num_attention_heads * head_dim(m),), norm_vectors * n_layers,
                               "norm"))
        out.append(ParamTensor("k_norms", "norm", (kv_heads(m) * head_dim(m),), norm_vectors * n_layers, "norm"))
    elif m.qk_norm:
        out.append(ParamTensor("qk_norms", "norm", (head_dim(m),), 2 * norm_vectors * n_layers, "norm"))
    if m.attention_sinks:  # gpt-oss GptOssAttention.sinks = Parameter(num_attention_heads), per layer
        assert m.num_attention_heads is not None
        out.append(ParamTensor("attention_sinks", "norm", (m.num_attention_heads,), n_layers, "attention_sinks"))
    if m.embedding_norm:  # BLOOM word_embeddings_layernorm (modeling_bloom.py BloomModel)
        out.append(ParamTensor("embed_norm", "norm", (h,), norm_vectors, "norm", False))
    if m.rel_embedding_rows:
        # DeBERTa-v2/v3 (modeling_deberta_v2.py DebertaV2Encoder): rel_embeddings = nn.Embedding(2 x
        # position_buckets, hidden), shared by every layer, and its LayerNorm (norm_rel_ebd "layer_norm"). With
        # share_att_key (every v3 config) the position scores reuse each layer's key_proj / query_proj: no
        # pos_key_proj / pos_query_proj (DisentangledSelfAttention.__init__; io/hf_config.py refuses the others).
        out.append(ParamTensor("rel_embeddings", "position", (m.rel_embedding_rows, h), 1, "rel_embeddings", False))
        out.append(ParamTensor("rel_embeddings_norm", "norm", (h,), norm_vectors, "norm", False))
    if m.attention_kind == "mla":
        # q_a_layernorm and kv_a_layernorm (RMSNorm over the latent vectors), one each per layer.
        assert m.kv_lora_rank is not None
        out.append(ParamTensor("mla_norms", "norm", (m.kv_lora_rank,), n_layers, "norm"))
        if m.q_lora_rank:
            out.append(ParamTensor("mla_q_norms", "norm", (m.q_lora_rank,), n_layers, "norm"))
    if m.num_experts and n_layers > dense_layers(m):
        n_moe = n_layers - dense_layers(m)
        # (Llama4Router subclasses nn.Linear: transformers' bitsandbytes replacement takes `type(module) is nn.Linear`
        # only, integrations/bitsandbytes.py, so it stays unquantized like the other routers)
        out.append(ParamTensor("router", "router", (m.num_experts, h), n_moe, "router"))
        # DeepseekV3TopkRouter.e_score_correction_bias (a buffer, stored in the checkpoint); gpt-oss's
        # GptOssTopKRouter.bias (a Parameter: F.linear(hidden, weight, bias), modeling_gpt_oss.py)
        if m.router_bias:
            out.append(ParamTensor("router_bias", "router", (m.num_experts,), n_moe, "router"))
        if m.shared_expert_gate:  # Qwen2MoeSparseMoeBlock.shared_expert_gate = Linear(hidden, 1, bias=False)
            out.append(ParamTensor("shared_expert_gate", "router", (1, h), n_moe, "router"))
    if m.mixer_intermediate_size:  # Falcon-H1's mixer: conv1d, dt_bias, A_log, D (and the gated norm)
        out += hybrid_mixer_tensors(m)
    if m.final_norm:
        out.append(ParamTensor("final_norm", "norm", (h,), norm_vectors, "norm", False))
    if m.family in ENCODER_FAMILIES:
        return tuple(out) + encoder_head_tensors(m)
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (v, h), 1, "lm_head", False))
    if m.lm_head_bias:
        out.append(ParamTensor("lm_head.bias", "head", (v,), 1, "lm_head", False))
    return tuple(out)


# BartLearnedPositionalEmbedding: `num_embeddings + self.offset` rows, offset 2 (modeling_bart.py; mBART's
# MBartLearnedPositionalEmbedding is the same).
BART_POSITION_OFFSET = 2


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


def encoder_head_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """An encoder's task head (modeling_bert.py, modeling_roberta.py, modeling_distilbert.py).

    Sequence classification: a hidden x hidden Linear with bias (BertPooler.dense, RobertaClassificationHead.dense,
    DistilBERT's pre_classifier) and the classifier Linear(hidden, num_labels) with bias. Masked LM: the transform
    (BertPredictionHeadTransform.dense + LayerNorm; RobertaLMHead.dense + layer_norm; DistilBERT's vocab_transform
    + vocab_layer_norm), the decoder tied to the word embeddings, and its vocab-wide bias. Token classification
    (BertForTokenClassification / RobertaForTokenClassification build the encoder with add_pooling_layer=False;
    DistilBertForTokenClassification has no pre_classifier): the classifier Linear(hidden, num_labels) alone.
    """
    assert m.hidden_size is not None and m.vocab_size is not None
    h, labels = m.hidden_size, m.num_labels or 2  # 0: not chosen, transformers' default of 2
    if m.family == "modernbert":
        # modeling_modernbert.py: every head starts with ModernBertPredictionHead (dense hidden x hidden, bias
        # classifier_bias false; act; LayerNorm without bias), then the classifier Linear(hidden, num_labels)
        # with bias (ModernBertForSequenceClassification / ForTokenClassification). The masked LM is refused
        # (core/checks.py check_encoder).
        return (ParamTensor("head.dense", "head", (h, h), 1, "head.dense", False),
                ParamTensor("head.norm", "norm", (h,), 1, "norm", False),
                ParamTensor("classifier", "head", (labels, h), 1, "classifier", False),
                ParamTensor("classifier.bias", "head", (labels,), 1, "classifier", False))
    if m.mlm_head:
        return (ParamTensor("mlm_transform", "head", (h, h), 1, "mlm_transform", False),
                ParamTensor("mlm_transform.bias", "head", (h,), 1, "mlm_transform", False),
                ParamTensor("mlm_norm", "norm", (h,), 2, "norm", False),
                ParamTensor("mlm_decoder.bias", "head", (m.vocab_size,), 1, "mlm_decoder", False))
    classifier = (ParamTensor("classifier", "head", (labels, h), 1, "classifier", False),
                  ParamTensor("classifier.bias", "head", (labels,), 1, "classifier", False))
    if m.token_head:
        return classifier
    return (ParamTensor("pooler", "head", (h, h), 1, "pooler", False),
            ParamTensor("pooler.bias", "head", (h,), 1, "pooler", False), *classifier)


def count_params(m: ModelSpec) -> int:
    """Total parameters (tied embeddings counted once, as `sum(p.numel() for p in model.parameters())`)."""
    total = sum(t.numel for t in inventory(m))
    if m.vision is not None:  # a vision-language model: the tower and the projector besides the text model
        total += vision_tower_params(m.vision) + projector_params(m.vision, m.hidden_size or 0)
        total += mllama_text_extra_params(m)
        total += image_newline_params(m.vision, m.hidden_size or 0)
    return total


def image_linears(v: VisionSpec, text_hidden: int) -> tuple[tuple[Linear, ...], tuple[Linear, ...]]:
    """(the tower's, the projector's) nn.Linear modules, as (in, out, count): what transformers' bitsandbytes
    replacement quantizes on the image side under QLoRA (integrations/bitsandbytes.py replace_with_bnb_linear takes
    every `type(module) is nn.Linear` whose name quantizers/base.py get_modules_to_not_convert does not skip: only
    the tied, the last-parameter and the output-embedding modules (lm_head) and llm_int8_skip_modules /
    _keep_in_fp32_modules, none of them on the image side of the families read here). Not Linears, so kept in the
    load dtype: the patch Conv2d / Conv3d, position and class embeddings, norms, Gemma 3's
    mm_input_projection_weight (a Parameter), LLaVA-NeXT's image_newline."""
    h, i = v.hidden_size, v.intermediate_size
    n = v.num_layers
    if v.is_qwen:  # VisionAttention qkv / proj, VisionMlp fc1 / fc2 or Qwen2_5_VLMLP gate / up / down; PatchMerger
        mlp = ([Linear("gate_proj", h, i, n), Linear("up_proj", h, i, n), Linear("down_proj", i, h, n)]
               if v.kind == "qwen2_5_vl" else [Linear("fc1", h, i, n), Linear("fc2", i, h, n)])
        wide = h * v.spatial_merge_size ** 2
        return ((Linear("qkv", h, 3 * h, n), Linear("proj", h, h, n), *mlp),
                (Linear("merger.mlp.0", wide, wide, 1), Linear("merger.mlp.2", wide, v.out_hidden_size, 1)))
    if v.is_mllama:  # MllamaVisionEncoderLayer q/k/v/o_proj, MllamaVisionMLP fc1 / fc2, local and global encoders
        n += v.num_global_layers
    layer = (Linear("q_proj", h, h, n), Linear("k_proj", h, h, n), Linear("v_proj", h, h, n),
             Linear("o_proj" if v.is_mllama or v.kind == "llama4" else "out_proj", h, h, n),
             Linear("fc1", h, i, n), Linear("fc2", i, h, n))
    if v.is_mllama:  # MllamaModel.multi_modal_projector
        return layer, (Linear("multi_modal_projector", v.vision_output_dim, text_hidden, 1),)
    if v.kind == "llama4":
        # Llama4UnfoldConvolution.linear (3 x patch^2 -> width), Llama4VisionMLP2 fc1 / fc2 in the
        # vision_adapter; Llama4MultiModalProjector.linear_1
        vod = v.vision_output_dim
        tower = (Linear("patch_embedding.linear", 3 * v.patch_size ** 2, h, 1), *layer,
                 Linear("vision_adapter.mlp.fc1", i, vod, 1), Linear("vision_adapter.mlp.fc2", vod, vod, 1))
        return tower, (Linear("linear_1", vod, text_hidden, 1),)
    if v.kind == "siglip":  # Gemma3MultiModalProjector holds a Parameter, no Linear
        return layer, ()
    if v.kind == "idefics3":  # Idefics3Connector.modality_projection.proj
        return layer, (Linear("modality_projection.proj", h * v.scale_factor ** 2, text_hidden, 1),)
    # LlavaMultiModalProjector (LLaVA-1.5 and LLaVA-NeXT)
    return layer, (Linear("linear_1", h, text_hidden, 1), Linear("linear_2", text_hidden, text_hidden, 1))


def image_newline_params(v: VisionSpec, text_hidden: int) -> int:
    """LLaVA-NeXT's image_newline (models/llava_next/modeling_llava_next.py LlavaNextModel: nn.Parameter of the
    text width, appended after each row of an image's unpadded tile features); 0 for the other towers."""
    return text_hidden if v.kind == "llava_next" else 0


def mllama_text_extra_params(m: ModelSpec) -> int:
    """What Llama-3.2-Vision's text model (models/mllama/modeling_mllama.py MllamaTextModel) has beyond the Llama
    decoder `inventory` counts; 0 for other models. embed_tokens is nn.Embedding(vocab_size + 8, hidden): 8 more
    rows. Each MllamaCrossAttentionDecoderLayer has the self-attention layer's q/k/v/o_proj (k/v read the projected
    vision states, hidden -> kv width all the same), MLP and two RMSNorms, plus MllamaTextCrossAttention's q_norm
    and k_norm (MllamaTextRMSNorm of head_dim = hidden // heads) and cross_attn_attn_gate / cross_attn_mlp_gate
    (one value each)."""
    v = m.vision
    if v is None or not v.is_mllama or m.hidden_size is None or not m.num_attention_heads:
        return 0
    head_dim = m.hidden_size // m.num_attention_heads
    return 8 * m.hidden_size + len(v.cross_attention_layers) * (2 * head_dim + 2)


def mllama_tower_params(v: VisionSpec) -> int:
    """MllamaVisionModel's parameters (transformers models/mllama/modeling_mllama.py).

    patch_embedding Conv2d(3, h, patch, bias=False); class_embedding (h); MllamaPrecomputedPositionEmbedding:
    gate (1), embedding (patches + 1 rows of h) and tile_embedding nn.Embedding(aspect_ratios + 1, tiles x
    (patches + 1) x h); pre_ and post_tile_positional_embedding (MllamaPrecomputedAspectRatioEmbedding, gated):
    nn.Embedding(aspect_ratios + 1, tiles x h) and a gate each; layernorm_pre / layernorm_post (weight + bias).
    Each MllamaVisionEncoderLayer: q/k/v/o_proj h x h without bias, MllamaVisionMLP fc1 / fc2 with bias,
    input_layernorm and post_attention_layernorm (weight + bias); the global encoder's layers (is_gated) add
    gate_attn and gate_ffn (one value each).
    """
    h, i = v.hidden_size, v.intermediate_size
    rows = (v.image_size // v.patch_size) ** 2 + 1
    ids = v.aspect_ratios + 1
    embeddings = (3 * v.patch_size * v.patch_size * h + h
                  + 1 + rows * h + ids * v.max_num_tiles * rows * h
                  + 2 * (ids * v.max_num_tiles * h + 1)
                  + 2 * 2 * h)
    layer = 4 * h * h + (h * i + i) + (i * h + h) + 2 * 2 * h
    return embeddings + v.num_layers * layer + v.num_global_layers * (layer + 2)


def vision_tower_params(v: VisionSpec) -> int:
    """CLIPVisionModel's parameters (transformers models/clip/modeling_clip.py): CLIPVisionEmbeddings'
    class_embedding (h), patch_embedding Conv2d(3, h, patch, bias=False) and position_embedding
    ((image / patch)^2 + 1 rows); pre_layrnorm and post_layernorm (weight + bias); per CLIPEncoderLayer biased
    q/k/v/out_proj (h x h), layer_norm1/2, and CLIPMLP fc1 (h -> intermediate) and fc2, both biased."""
    if v.is_qwen:
        return qwen_tower_params(v)
    if v.is_mllama:
        return mllama_tower_params(v)
    h, i = v.hidden_size, v.intermediate_size
    layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
    if v.kind == "llama4":
        # Llama4VisionModel (models/llama4/modeling_llama4.py): Llama4UnfoldConvolution's linear (3 x patch^2 ->
        # width, no bias), class_embedding (width), positional_embedding_vlm ((image / patch)^2 + 1 rows),
        # layernorm_pre and layernorm_post; per Llama4VisionEncoderLayer CLIP's tensors (biased q/k/v/o_proj,
        # input / post_attention LayerNorms, biased fc1 / fc2); vision_adapter (Llama4VisionPixelShuffleMLP's
        # Llama4VisionMLP2: fc1 Linear(intermediate_size, projector_input_dim) and fc2 Linear(projector_output_dim,
        # projector_output_dim), no biases; both dims are vision_output_dim in the published configs). The
        # rotary embedding's freqs_ci is a buffer.
        positions = (v.image_size // v.patch_size) ** 2 + 1
        embeddings = 3 * v.patch_size * v.patch_size * h + h + positions * h
        adapter = i * v.vision_output_dim + v.vision_output_dim ** 2
        return embeddings + 2 * 2 * h + v.num_layers * layer + adapter
    if v.kind in ("siglip", "idefics3"):
        # Idefics3VisionTransformer (models/idefics3/modeling_idefics3.py) has SigLIP's tensors: its embeddings'
        # patch Conv2d with bias and (image_size / patch_size)^2 positions, Idefics3EncoderLayer = SiglipEncoderLayer,
        # post_layernorm.
        # SiglipVisionModel (models/siglip/modeling_siglip.py, vision_use_head false as Gemma 3 publishes it):
        # SiglipVisionEmbeddings' patch_embedding Conv2d(3, h, patch) with bias and position_embedding (one row per
        # patch, no class token); SiglipEncoderLayer's layer_norm1/2, biased q/k/v/out_proj and SiglipMLP fc1/fc2
        # (the same tensors as CLIP's layer); post_layernorm. No pre-norm.
        patches = (v.image_size // v.patch_size) ** 2
        embeddings = 3 * v.patch_size * v.patch_size * h + h + patches * h
        return embeddings + 2 * h + v.num_layers * layer
    positions = (v.image_size // v.patch_size) ** 2 + 1
    embeddings = h + 3 * v.patch_size * v.patch_size * h + positions * h
    return embeddings + 2 * 2 * h + v.num_layers * layer


def projector_params(v: VisionSpec, text_hidden: int) -> int:
    """LlavaMultiModalProjector (models/llava/modeling_llava.py): linear_1 (tower width -> text width) and
    linear_2 (text -> text), biased when multimodal_projector_bias (the default)."""
    if v.kind == "siglip":
        # Gemma3MultiModalProjector (models/gemma3/modeling_gemma3.py): mm_input_projection_weight (tower width x
        # text width, no bias) and mm_soft_emb_norm, a Gemma3RMSNorm of the tower width; avg_pool has none
        return v.hidden_size * text_hidden + v.hidden_size
    if v.is_qwen:
        return qwen_merger_params(v)
    if v.kind == "llama4":  # Llama4MultiModalProjector.linear_1: Linear(vision_output_dim, text hidden, bias=False)
        return v.vision_output_dim * text_hidden
    if v.is_mllama:  # MllamaModel.multi_modal_projector: Linear(vision_output_dim, text hidden, bias=True)
        return v.vision_output_dim * text_hidden + text_hidden
    if v.kind == "idefics3":
        # Idefics3Connector (modeling_idefics3.py): modality_projection = Idefics3SimpleMLP, one
        # Linear(tower width x scale_factor^2 -> text width, bias=False); pixel_shuffle has no parameters
        return v.hidden_size * v.scale_factor ** 2 * text_hidden
    bias = 2 * text_hidden if v.projector_bias else 0
    return v.hidden_size * text_hidden + text_hidden * text_hidden + bias


def _qwen_norm_params(v: VisionSpec) -> int:
    # Qwen2-VL: torch LayerNorm (weight + bias); Qwen2.5-VL: Qwen2_5_VLRMSNorm (weight only)
    return 2 * v.hidden_size if v.kind == "qwen2_vl" else v.hidden_size


def qwen_tower_params(v: VisionSpec) -> int:
    """The Qwen2-VL / Qwen2.5-VL vision blocks and patch embedding, the merger apart (qwen_merger_params).

    PatchEmbed / Qwen2_5_VisionPatchEmbed: Conv3d(3, width, (temporal_patch, patch, patch), bias=False); the
    2D rotary embedding holds buffers only. Per block (Qwen2VLVisionBlock / Qwen2_5_VLVisionBlock): norm1 and
    norm2, VisionAttention's qkv Linear(width, 3 x width) and proj Linear(width, width), both biased; the MLP:
    Qwen2-VL VisionMlp fc1 (width -> intermediate) and fc2, biased; Qwen2.5-VL Qwen2_5_VLMLP(bias=True)
    gate_proj and up_proj (width -> intermediate) and down_proj, biased.
    """
    patch = 3 * v.temporal_patch_size * v.patch_size * v.patch_size * v.hidden_size
    return patch + v.num_layers * qwen_block_params(v)


def qwen_block_params(v: VisionSpec) -> int:
    """One Qwen2-VL / Qwen2.5-VL vision block's parameters (qwen_tower_params)."""
    h, i = v.hidden_size, v.intermediate_size
    mlp = 2 * (h * i + i) + (i * h + h) if v.kind == "qwen2_5_vl" else (h * i + i) + (i * h + h)
    return 2 * _qwen_norm_params(v) + (3 * h * h + 3 * h) + (h * h + h) + mlp


def qwen_merger_params(v: VisionSpec) -> int:
    """PatchMerger / Qwen2_5_VLPatchMerger: ln_q over the tower width, then Linear(width x merge^2, same) and
    Linear(width x merge^2, out_hidden_size), both biased (nn.GELU between them has no parameters)."""
    wide = v.hidden_size * v.spatial_merge_size ** 2
    return _qwen_norm_params(v) + (wide * wide + wide) + (wide * v.out_hidden_size + v.out_hidden_size)


def active_params(m: ModelSpec) -> int:
    """Parameters one token uses: the total less the routed experts it is not sent to.

    Mixture of experts: each MoE layer runs experts_per_token of num_experts routed experts (plus any
    shared expert), so active = total - (E - k) / E of the routed-expert weights (Mixtral-8x7B:
    46.7B total, 12.9B active, Jiang et al. 2024 arXiv:2401.04088 §2). Dense models: the total.
    """
    total = count_params(m)
    if not m.has_architecture or not m.num_experts:
        return total
    routed = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m)
                 if lin.module.startswith("experts."))
    return total - routed * (m.num_experts - m.experts_per_token) // m.num_experts


def params_by_name(m: ModelSpec) -> dict[str, int]:
    """The parameter breakdown by tensor name, for `vramcalc show`."""
    out = {t.name: t.numel for t in inventory(m)}
    if m.vision is not None:
        out["vision_tower"] = vision_tower_params(m.vision)
        out["multi_modal_projector"] = projector_params(m.vision, m.hidden_size or 0)
        if m.vision.kind == "llava_next":
            out["image_newline"] = image_newline_params(m.vision, m.hidden_size or 0)
        if m.vision.is_mllama:
            out["mllama_text_extras"] = mllama_text_extra_params(m)
    return out


# Module names as they appear in each family's modeling file, mapped to the canonical names above,
# so `--lora-targets c_attn` (GPT-2) or `query_key_value` (NeoX) select the right Linear.
MODULE_ALIASES: dict[str, tuple[str, ...]] = {
    "c_attn": ("qkv_proj",), "query_key_value": ("qkv_proj",), "wqkv": ("qkv_proj",), "w_pack": ("qkv_proj",),
    # GPT-2 names both attn.c_proj and mlp.c_proj "c_proj": peft matches both.
    "c_proj": ("o_proj", "down_proj"), "dense": ("o_proj",), "out_proj": ("o_proj",), "wo": ("o_proj",),
    "query": ("q_proj",), "key": ("k_proj",), "value": ("v_proj",),
    "c_fc": ("up_proj",), "fc1": ("up_proj",), "dense_h_to_4h": ("up_proj",), "w1": ("gate_proj",),
    "w3": ("up_proj",), "fc2": ("down_proj",), "dense_4h_to_h": ("down_proj",), "w2": ("down_proj",),
    # T5 / mT5 (modeling_t5.py T5Attention q, k, v, o; T5DenseGatedActDense wi_0, wi_1, wo; T5DenseActDense wi, wo)
    "q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",), "wi_0": ("gate_proj",),
    "wi_1": ("up_proj",), "wi": ("up_proj",),
    # GraniteMoeHybrid's shared_mlp (modeling_granitemoehybrid.py GraniteMoeHybridMLP): input_linear is the fused
    # gate and up projection, output_linear the down projection
    "input_linear": ("gate_up_proj",), "output_linear": ("down_proj",),
}
ALL_LINEAR = "all-linear"
AUTO_TARGETS = "auto"
# `lm-only` beside the targets: the vision-language model's language model only, never the vision tower or the
# projector, as LLaMA-Factory passes them with freeze_vision_tower / freeze_multi_modal_projector (its defaults):
# hiyouga/LLaMA-Factory @ ff6d4d12 src/llamafactory/model/model_utils/misc.py find_all_linear_modules (lora_target
# all: every Linear's name but lm_head's, the projector's and, with the tower frozen, the tower's) and
# model_utils/visual.py patch_target_modules (the full names of the modules matching a target outside the frozen
# parts' keys), for the model types COMPOSITE_MODELS registers. On a text-only model it changes nothing.
LM_ONLY = "lm-only"


def lm_only(targets: tuple[str, ...]) -> bool:
    """Whether the LoRA targets carry `lm-only` (the language model's modules only: LM_ONLY)."""
    return any(t.strip().lower() == LM_ONLY for t in targets)


def default_targets(m: ModelSpec) -> tuple[str, ...]:
    """What `--lora-targets auto` (the default) adapts: the query and value projections, as peft's
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING does for Llama-style models (q_proj, v_proj; a fused
    qkv module is matched by either name). Multi-head latent attention (DeepSeek-V2/V3) has no v_proj and
    peft has no default for it: the analogues are the query up-projection (q_b_proj, or q_proj without a
    q_lora_rank) and kv_b_proj, which produces the values (modeling_deepseek_v3.py)."""
    if m.attention_kind == "mla":
        return ("q_b_proj" if m.q_lora_rank else "q_proj", "kv_b_proj")
    if m.ssm_state_size:  # Mamba: peft has no default (memory/ssm.py default_targets)
        return ssm_default_targets(m)
    if is_nemotron_h(m):  # Nemotron-H: peft has no default; q, v where there is attention, and the mixers' in_proj
        return (("q_proj", "v_proj") if "*" in m.hybrid_pattern else ()) \
            + (("in_proj",) if "M" in m.hybrid_pattern else ())
    if m.mixer_intermediate_size:  # Falcon-H1: peft has no default either; both mixers' input projections
        return ("q_proj", "v_proj", "in_proj")
    if is_jamba(m):  # Jamba: peft has no default; Llama's q, v and Mamba's in_proj, x_proj (ssm_default_targets)
        return (("q_proj", "v_proj") if jamba_counts(m)[0] else ()) + ("in_proj", "x_proj")
    return ("q_proj", "v_proj")


def resolve_targets(m: ModelSpec, targets: tuple[str, ...]) -> tuple[Linear, ...]:
    """The block Linears a LoRA target list selects; `all-linear` selects every one (peft's rule, no lm_head).

    Fused modules are matched by either name: q_proj on a fused qkv model adapts the fused module,
    as that is the only module peft could attach to. Unknown names raise UnsupportedCombination with the valid names.
    """
    linears = block_linears(m)
    if is_zamba2(m):  # peft wraps modules: one adapter per hybrid layer's copy of a shared Linear (zamba2_modules)
        linears = zamba2_modules(m)
    if m.family == "gpt_oss":
        # GptOssExperts holds gate_up_proj / down_proj as 3-D Parameters, not nn.Linear modules: peft's
        # target_modules (and all-linear) find only q/k/v/o_proj (the router is a Parameter pair too).
        named = {t.strip().lower() for t in targets} & {"gate_up_proj", "down_proj", "gate_proj", "up_proj"}
        if named:
            raise UnsupportedCombination(
                f"LoRA on {', '.join(sorted(named))} of {m.name}: gpt-oss's experts are Parameters, not Linear "
                "modules (peft target_parameters is not modelled); use q_proj,k_proj,v_proj,o_proj or all-linear")
    if m.family == "llama4" and {t.strip().lower() for t in targets} & {ALL_LINEAR, "router"}:
        # peft 0.21 wraps Llama4Router (an nn.Linear subclass) in a lora.Linear, whose forward reads `.dtype` of the
        # base layer's result, which is the router's (scores, logits) tuple: AttributeError on the first forward
        # (tuners/lora/layer.py Linear.forward; found by the tracer)
        raise UnsupportedCombination(
            f"LoRA on the router of {m.name} (all-linear takes it): peft wraps Llama4Router, whose forward returns a "
            "tuple, and the step fails; list the modules instead: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
            "down_proj")
    moe_rows: tuple[Linear, ...] = ()
    if fused_experts(m):
        linears = tuple(lin for lin in linears if not lin.module.startswith("experts."))
        if m.family in PEFT_MOE_CONVERTED:
            moe_rows, targets = fused_moe_targets(m, targets)
    # the embedding and the LM head are adapted too (outer_targets), but they are no block Linears
    wanted = {t.strip().lower() for t in targets if t.strip() and t.strip().lower() not in SAVED_MODULE_ALIASES}
    if LM_ONLY in wanted:  # a VLM's split (memory/vision.py ...) already kept the image side out
        wanted.discard(LM_ONLY)
        if all(t.strip().lower() in ("", LM_ONLY) for t in targets):
            raise UnsupportedCombination(f"--lora-targets {LM_ONLY} names no module: add targets, e.g. "
                                         f"all-linear,{LM_ONLY} or q_proj,v_proj,{LM_ONLY}")
    if AUTO_TARGETS in wanted:
        wanted = (wanted - {AUTO_TARGETS}) | set(default_targets(m))
    if ALL_LINEAR in wanted:
        if m.ssm_state_size:  # peft's all-linear takes out_proj, which it refuses for Mamba (memory/ssm.py)
            check_ssm_targets(m, linears)
        if m.mixer_intermediate_size:  # and for Falcon-H1 (the mixer's out_proj)
            check_hybrid_targets(m, linears)
        if m.family in PEFT_MOE_CONVERTED:  # the MLP names went to the experts: shared / dense MLPs keep none
            linears = tuple(lin for lin in linears if lin.module.rsplit(".", 1)[-1] not in _MOE_MAPPED)
        elif m.shared_expert_gate and fused_experts(m):  # Qwen2-MoE's shared_expert_gate is an nn.Linear(h, 1)
            assert m.hidden_size is not None and m.num_layers is not None
            linears += (Linear("shared_expert_gate", m.hidden_size, 1, m.num_layers - dense_layers(m)),)
        return linears + moe_rows
    names = {lin.module.rsplit(".", 1)[-1] for lin in linears}
    fused_parts = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    chosen: set[str] = set()
    for t in wanted:
        found = False
        # T5's feed-forward output is `wo` (T5DenseActDense / T5DenseGatedActDense), not an attention output
        # (a family's own name first: Mamba's out_proj)
        for canon in (("down_proj",) if t == "wo" and m.family in ("t5", "mt5")
                      else (t,) if t in names else MODULE_ALIASES.get(t, (t,))):
            if canon in names:
                chosen.add(canon)
                found = True
            for fused, parts in fused_parts.items():
                if canon in parts and fused in names:
                    chosen.add(fused)
                    found = True
        if not found:
            valid = sorted(names | {ALL_LINEAR})
            raise UnsupportedCombination(f"unknown LoRA target {t!r} for {m.name}; choose from {', '.join(valid)}")
    out = tuple(lin for lin in linears if lin.module.rsplit(".", 1)[-1] in chosen)
    if m.ssm_state_size:
        check_ssm_targets(m, out)
    if m.mixer_intermediate_size:
        check_hybrid_targets(m, out)
    return out + moe_rows


_MOE_MAPPED = frozenset({"gate_proj", "up_proj", "down_proj", "gate"})  # peft's v4 names of the experts and router


def fused_moe_targets(m: ModelSpec, targets: tuple[str, ...]) -> tuple[tuple[Linear, ...], tuple[str, ...]]:
    """peft 0.21's rewrite of a LoRA target list for a PEFT_MOE_CONVERTED model: (the experts' and router's
    ParamWrapper adapters as Linear rows, the targets left for nn.Linear modules). Rows: experts.gate_up_proj
    (lora_A (2r·E, h), lora_B (2i, 2r·E)), experts.down_proj (lora_A (r·E, i), lora_B (h, r·E)), each as E Linears
    per MoE layer; the router (lora_A (r, h), lora_B (E, r))."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    names = {t.strip().lower() for t in targets if t.strip()}
    auto = AUTO_TARGETS in names
    if auto:
        names = (names - {AUTO_TARGETS}) | set(default_targets(m))
    canon = {MODULE_ALIASES.get(x, (x,))[0] if x in ("w1", "w2", "w3") else x for x in names}
    if ALL_LINEAR in canon:
        canon |= _MOE_MAPPED
    gate_up = {"gate_proj", "up_proj"} & canon
    if len(gate_up) == 1:  # peft: "Cannot convert PEFT target(s) ... because they are fused into gate_up_proj"
        (one,) = gate_up
        other = ({"gate_proj", "up_proj"} - gate_up).pop()
        raise UnsupportedCombination(f"LoRA on {one} of {m.name} without {other}: transformers 5 fuses them into "
                                     f"experts.gate_up_proj and peft refuses one alone; add {other}")
    h, e, n_moe = m.hidden_size, m.num_experts, m.num_layers - dense_layers(m)
    i = m.moe_intermediate_size or m.intermediate_size
    rows: list[Linear] = []
    if gate_up:
        rows.append(Linear("experts.gate_up_proj", h, 2 * i, n_moe * e, rank_mult=2))
    if "down_proj" in canon:
        rows.append(Linear("experts.down_proj", i, h, n_moe * e))
    if "gate" in canon:
        rows.append(Linear("router", h, e, n_moe))
    rest = tuple(x for x in targets if x.strip().lower() not in _MOE_MAPPED | {"w1", "w2", "w3", AUTO_TARGETS}
                 or x.strip().lower() == ALL_LINEAR)
    if auto:
        rest += default_targets(m)
    return tuple(rows), rest


def outer_targets(targets: tuple[str, ...]) -> tuple[str, ...]:
    """`embed_tokens` and/or `lm_head` when the LoRA targets name them (torchtune apply_lora_to_output, peft
    target_modules=["lm_head"]), in that order."""
    named = {SAVED_MODULE_ALIASES[t.strip().lower()] for t in targets if t.strip().lower() in SAVED_MODULE_ALIASES}
    return tuple(x for x in ("embed_tokens", "lm_head") if x in named)


def lora_params(m: ModelSpec, targets: tuple[str, ...], rank: int, layers: tuple[int, ...] = ()) -> int:
    """Trainable LoRA parameters: r·(d_in + d_out) per adapted Linear (Hu et al. 2021, §4.1); the embedding's
    lora_embedding_A (r x vocab) and lora_embedding_B (hidden x r) (peft tuners/lora/layer.py Embedding
    update_layer) and the head's lora_A (r x hidden) and lora_B (vocab x r) are r·(vocab + hidden) each.
    `layers`: the adapted decoder layers (peft layers_to_transform, layer_linears); () for all."""
    outer = len(outer_targets(targets)) * rank * ((m.vocab_size or 0) + (m.hidden_size or 0))
    return outer + sum(rank * lin.rank_mult * (lin.in_features + lin.out_features) * lin.count
                       for lin in layer_linears(m, targets, layers))


def layer_linears(m: ModelSpec, targets: tuple[str, ...], layers: tuple[int, ...] = ()) -> tuple[Linear, ...]:
    """The block Linears LoRA adapts (resolve_targets), each count cut to the adapted layers' share when `layers`
    (peft layers_to_transform, core/lora_layers.py) names some: k of n alike layers hold k/n of each per-layer
    Linear (core/lora_layers.py check admits only models whose layers are alike)."""
    linears = resolve_targets(m, targets)
    n = m.num_layers or 1
    if not layers or len(layers) >= n:
        return linears
    return tuple(Linear(lin.module, lin.in_features, lin.out_features, lin.count * len(layers) // n, lin.rank_mult)
                 for lin in linears)


# peft modules_to_save / LoRA targets outside the blocks: the input embedding and the LM head, by the names the
# families give them (modeling_gpt2.py wte, modeling_gpt_neox.py embed_in / embed_out, modeling_bloom.py and
# modeling_falcon.py word_embeddings), mapped to the inventory's module names.
SAVED_MODULE_ALIASES: dict[str, str] = {
    "embed_tokens": "embed_tokens", "wte": "embed_tokens", "embed_in": "embed_tokens",
    "word_embeddings": "embed_tokens", "tok_embeddings": "embed_tokens",
    "lm_head": "lm_head", "embed_out": "lm_head", "output": "lm_head",
}


def saved_module(name: str) -> str:
    """`embed_tokens` or `lm_head` for a module name of peft's modules_to_save; UnsupportedCombination otherwise."""
    canon = SAVED_MODULE_ALIASES.get(name.strip().lower())
    if canon is None:
        raise UnsupportedCombination(f"--modules-to-save {name!r}: vramcalc models full trainable copies of "
                                     "embed_tokens and lm_head only; choose from embed_tokens, lm_head")
    return canon


def dora_params(m: ModelSpec, targets: tuple[str, ...], layers: tuple[int, ...] = ()) -> int:
    """DoRA's magnitude vectors: out_features per adapted Linear (peft tuners/lora/dora.py DoraLinearLayer
    update_layer: `self.weight = nn.Parameter(weight_norm)`, the column norms of W + BA); `layers` as lora_params."""
    return sum(lin.out_features * lin.count for lin in layer_linears(m, targets, layers))


# --- State-space models (Mamba; activations in memory/ssm.py) -------------------------------------------------
def is_ssm(m: ModelSpec) -> bool:
    """Whether `m` is a state-space model (vocab.SSM_FAMILIES, or any spec with an SSM state size)."""
    return bool(m.ssm_state_size) or m.family in SSM_FAMILIES


def ssm_dt_rank(m: ModelSpec) -> int:
    """MambaConfig.time_step_rank: ceil(hidden_size / 16) when "auto" (configuration_mamba.py)."""
    assert m.hidden_size is not None
    return m.ssm_dt_rank or -(-m.hidden_size // 16)


def is_mamba2(m: ModelSpec) -> bool:
    """Whether `m` is a Mamba-2 model (the chunked SSD mixer of modeling_mamba2.py), not Mamba 1."""
    return bool(m.ssm_state_size and m.ssm_head_dim)


def mamba2_dims(m: ModelSpec) -> tuple[int, int, int]:
    """(num_heads, conv_dim, in_proj's out_features) of Mamba2Mixer.__init__: num_heads = intermediate / head_dim,
    conv_dim = intermediate + 2 x n_groups x state (x, B, C through the conv), projection_size = intermediate (the
    gate z) + conv_dim + num_heads (dt)."""
    assert m.intermediate_size is not None
    i = m.intermediate_size
    heads = i // m.ssm_head_dim
    conv = i + 2 * m.ssm_n_groups * m.ssm_state_size
    return heads, conv, i + conv + heads


def ssm_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """The mixer's nn.Linear modules (what LoRA targets and bitsandbytes quantizes), per layer x num_layers."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    if is_mamba2(m):  # Mamba2Mixer: in_proj and out_proj only (dt, B, C come out of in_proj and the conv)
        return (Linear("in_proj", m.hidden_size, mamba2_dims(m)[2], m.num_layers),
                Linear("out_proj", m.intermediate_size, m.hidden_size, m.num_layers))
    h, i, n, r, s = m.hidden_size, m.intermediate_size, m.num_layers, ssm_dt_rank(m), m.ssm_state_size
    return (Linear("in_proj", h, 2 * i, n), Linear("x_proj", i, r + 2 * s, n), Linear("dt_proj", r, i, n),
            Linear("out_proj", i, h, n))


def ssm_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of MambaForCausalLM (modeling_mamba.py MambaMixer.__init__, MambaModel.__init__)."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    assert m.vocab_size is not None
    if is_mamba2(m):
        return mamba2_tensors(m)
    h, i, n, k, s = m.hidden_size, m.intermediate_size, m.num_layers, m.ssm_conv_kernel, m.ssm_state_size
    out = [ParamTensor("embed_tokens", "embedding", (m.vocab_size, h), 1, "embed_tokens", False)]
    for lin in ssm_linears(m):
        out.append(ParamTensor(lin.module, "linear", (lin.out_features, lin.in_features), lin.count, lin.module))
    if m.ssm_proj_bias:  # use_bias: in_proj and out_proj
        out.append(ParamTensor("in_proj.bias", "bias", (2 * i,), n, "in_proj"))
        out.append(ParamTensor("out_proj.bias", "bias", (h,), n, "out_proj"))
    out.append(ParamTensor("dt_proj.bias", "bias", (i,), n, "dt_proj"))  # nn.Linear(dt_rank, i, bias=True)
    # nn.Conv1d(i, i, kernel, groups=i): weight (i, 1, kernel), bias (i,) when use_conv_bias
    out.append(ParamTensor("conv1d", "norm", (i, 1, k), n, "conv1d"))
    if m.ssm_conv_bias:
        out.append(ParamTensor("conv1d.bias", "norm", (i,), n, "conv1d"))
    out.append(ParamTensor("A_log", "norm", (i, s), n, "A_log"))
    out.append(ParamTensor("D", "norm", (i,), n, "D"))
    out.append(ParamTensor("layer_norms", "norm", (h,), n, "norm"))  # MambaBlock.norm (RMSNorm: a weight)
    out.append(ParamTensor("final_norm", "norm", (h,), 1, "norm", False))  # norm_f
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (m.vocab_size, h), 1, "lm_head", False))
    return tuple(out)


def mamba2_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of Mamba2ForCausalLM (modeling_mamba2.py Mamba2Mixer.__init__, Mamba2Block,
    Mamba2Model.__init__: embeddings, norm_f; lm_head unless tie_word_embeddings)."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    assert m.vocab_size is not None
    h, i, n, k = m.hidden_size, m.intermediate_size, m.num_layers, m.ssm_conv_kernel
    heads, conv, _ = mamba2_dims(m)
    out = [ParamTensor("embed_tokens", "embedding", (m.vocab_size, h), 1, "embed_tokens", False)]
    for lin in ssm_linears(m):
        out.append(ParamTensor(lin.module, "linear", (lin.out_features, lin.in_features), lin.count, lin.module))
    if m.ssm_proj_bias:  # use_bias: in_proj and out_proj
        out.append(ParamTensor("in_proj.bias", "bias", (mamba2_dims(m)[2],), n, "in_proj"))
        out.append(ParamTensor("out_proj.bias", "bias", (h,), n, "out_proj"))
    # nn.Conv1d(conv_dim, conv_dim, kernel, groups=conv_dim): weight (conv_dim, 1, kernel), bias when use_conv_bias
    out.append(ParamTensor("conv1d", "norm", (conv, 1, k), n, "conv1d"))
    if m.ssm_conv_bias:
        out.append(ParamTensor("conv1d.bias", "norm", (conv,), n, "conv1d"))
    for name in ("dt_bias", "A_log", "D"):  # nn.Parameter(torch.empty(num_heads)) each
        out.append(ParamTensor(name, "norm", (heads,), n, name))
    out.append(ParamTensor("gated_norm", "norm", (i,), n, "norm"))  # MambaRMSNormGated.weight (intermediate)
    out.append(ParamTensor("layer_norms", "norm", (h,), n, "norm"))  # Mamba2Block.norm (Mamba2RMSNorm)
    out.append(ParamTensor("final_norm", "norm", (h,), 1, "norm", False))  # norm_f
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (m.vocab_size, h), 1, "lm_head", False))
    return tuple(out)


@lru_cache(maxsize=64)
def hybrid_mixer(m: ModelSpec) -> ModelSpec:
    """A Falcon-H1 layer's mixer as a Mamba-2 ModelSpec (FalconH1Mixer is Mamba2Mixer with its own width,
    mamba_d_ssm, and an optional gated norm: modeling_falcon_h1.py), so that Mamba-2's parameter and activation
    functions read it. Its block norm is the layer's input_layernorm, counted by the decoder side."""
    from dataclasses import replace

    assert m.mixer_intermediate_size and m.num_layers is not None
    n_mixers = mixer_layers(m)
    return replace(m, family="mamba2", intermediate_size=m.mixer_intermediate_size, num_layers=n_mixers,
                   attention_layers=(), hybrid_pattern="",
                   ssm_state_size=m.mixer_state_size, ssm_head_dim=m.mixer_head_dim, ssm_residual_fp32=False,
                   num_attention_heads=None, num_kv_heads=None, head_dim=None, mixer_intermediate_size=0,
                   mixer_state_size=0, mixer_head_dim=0, mixer_gated_norm=False, mixer_out_bias=False,
                   norms_per_layer=1, qkv_bias=False, o_bias=False, mlp_bias=False,
                   # (a MoE hybrid's experts are beside the mixer, not in it: GraniteMoeHybrid, Nemotron-H's "E" layers)
                   num_experts=0, experts_per_token=0, num_shared_experts=0, moe_intermediate_size=None,
                   shared_expert_intermediate_size=None, moe_latent_size=None, checkpoint_mtp_layers=0,
                   topk_unnormalized=False)


def mixer_layers(m: ModelSpec) -> int:
    """How many layers run a Mamba-2 mixer: all of Falcon-H1's; Bamba's that are not at attn_layer_indices."""
    assert m.num_layers is not None
    if is_nemotron_h(m):  # Nemotron-H: hybrid_pattern's "M" layers
        return m.hybrid_pattern.count("M")
    return m.num_layers - len(m.attention_layers) if is_layered_hybrid(m) else m.num_layers


def is_layered_hybrid(m: ModelSpec) -> bool:
    """Whether `m`'s layers are either a Mamba-2 mixer or attention, each with an MLP (Bamba; GraniteMoeHybrid's dense
    models, modeling_granitemoehybrid.py GraniteMoeHybridDecoderLayer: self.mamba or self.self_attn, then shared_mlp),
    not both (Falcon-H1)."""
    return m.family in ("bamba", "granitemoehybrid")


def is_hybrid(m: ModelSpec) -> bool:
    """Whether `m` runs a Mamba-2 mixer beside attention in every layer (Falcon-H1), or in some layers (Bamba);
    not Nemotron-H, whose layers are each one block (is_nemotron_h), nor Zamba2, which has the mixer fields too but
    its own layout (is_zamba2)."""
    return bool(m.mixer_intermediate_size) and not m.hybrid_pattern and m.family != "zamba2"


def hybrid_mixer_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """FalconH1Mixer's parameters beside in_proj and out_proj (block_linears): conv1d (conv_dim, 1, kernel) with
    its bias (mamba_conv_bias), dt_bias, A_log and D per head, FalconH1RMSNormGated's weight when mamba_rms_norm
    (else nn.Identity), and out_proj's bias (projectors_bias) / in_proj's (mamba_proj_bias) via linear_has_bias.
    The mup_vector is a non-persistent buffer, not a parameter."""
    assert m.num_layers is not None
    x = hybrid_mixer(m)
    heads, conv, _ = mamba2_dims(x)
    n, k = mixer_layers(m), m.ssm_conv_kernel
    out = [ParamTensor("conv1d", "norm", (conv, 1, k), n, "conv1d")]
    if m.ssm_conv_bias:
        out.append(ParamTensor("conv1d.bias", "norm", (conv,), n, "conv1d"))
    for name in ("dt_bias", "A_log", "D"):
        out.append(ParamTensor(name, "norm", (heads,), n, name))
    if m.mixer_gated_norm:
        out.append(ParamTensor("gated_norm", "norm", (m.mixer_intermediate_size,), n, "norm"))
    return tuple(out)


# --- Zamba2 (transformers models/zamba2/modeling_zamba2.py) ---------------------------------------------------------
def is_zamba2(m: ModelSpec) -> bool:
    """Whether `m` is a Zamba2 model: Mamba-2 layers, shared attention blocks at zamba_hybrid_layers."""
    return m.family == "zamba2"


def zamba2_blocks(m: ModelSpec) -> int:
    """How many shared Zamba2AttentionDecoderLayer weight sets exist: Zamba2Model.get_layers builds one per hybrid
    layer but ties every one after the first num_mem_blocks to them in turn (_tied_weights_keys: layer k's
    shared_transformer -> the (k mod num_mem_blocks)-th), so sum(p.numel()) counts min(num_mem_blocks, hybrid layers).
    With tie_word_embeddings false transformers ties nothing (modeling_utils.py get_expanded_tied_weights_keys returns
    {}): every hybrid layer keeps its own copy."""
    n = len(m.zamba_hybrid_layers)
    return min(m.zamba_mem_blocks, n) if m.tie_word_embeddings else n


def zamba2_projectors(m: ModelSpec) -> int:
    """How many per-invocation projector sets exist: a block's adapter lists hold one nn.Sequential for each
    invocation i with i mod num_mem_blocks = its block_id (Zamba2MLP / Zamba2Attention __init__), so the tied blocks
    hold one per invocation; untied, each hybrid layer's copy holds its block's c_b of them (sum of c_b squared)."""
    n, k = len(m.zamba_hybrid_layers), m.zamba_mem_blocks
    if m.tie_word_embeddings:
        return n
    return sum(len(range(b, n, k)) ** 2 for b in range(min(k, n)))


def zamba2_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """Zamba2's nn.Linear weights, each weight once (modeling_zamba2.py): per layer Zamba2MambaMixer's in_proj
    (hidden -> mixer + conv_dim + heads) and out_proj (mixer -> hidden); per hybrid layer Zamba2HybridLayer.linear
    (hidden -> hidden, no bias); per shared block Zamba2Attention's q_proj (2 x hidden -> heads x head_dim), k_proj
    and v_proj (2 x hidden -> kv heads x head_dim), o_proj (heads x head_dim -> hidden), none with a bias, and
    Zamba2MLP's gate_up_proj (hidden -> 2 x intermediate) and down_proj; per invocation (the adapter lists hold one
    nn.Sequential(Linear(in, rank), Linear(rank, out)) per hybrid layer, the others nn.Identity) the gate_up_proj
    projector (hidden -> rank -> 2 x intermediate) and, with use_shared_attention_adapter, the q, k and v projectors
    (2 x hidden -> rank -> 2 x hidden)."""
    assert m.hidden_size is not None and m.num_layers is not None and m.intermediate_size is not None
    assert m.num_attention_heads is not None
    h, f, r, n = m.hidden_size, m.intermediate_size, m.zamba_adapter_rank, m.num_layers
    i = m.mixer_intermediate_size
    _, _, proj = zamba2_mixer_dims(m)
    g, b, p = len(m.zamba_hybrid_layers), zamba2_blocks(m), zamba2_projectors(m)
    q_dim, kv_dim = m.num_attention_heads * head_dim(m), kv_heads(m) * head_dim(m)
    out = [Linear("in_proj", h, proj, n), Linear("out_proj", i, h, n)]
    if g:
        out += [Linear("linear", h, h, g),
                Linear("q_proj", 2 * h, q_dim, b), Linear("k_proj", 2 * h, kv_dim, b),
                Linear("v_proj", 2 * h, kv_dim, b), Linear("o_proj", q_dim, h, b),
                Linear("gate_up_proj", h, 2 * f, b), Linear("down_proj", f, h, b),
                Linear("gate_up_proj_adapter_in", h, r, p), Linear("gate_up_proj_adapter_out", r, 2 * f, p)]
        if m.zamba_attention_adapters:
            for x in ("q", "k", "v"):
                out += [Linear(f"linear_{x}_adapter_in", 2 * h, r, p), Linear(f"linear_{x}_adapter_out", r, 2 * h, p)]
    return tuple(out)


def zamba2_modules(m: ModelSpec) -> tuple[Linear, ...]:
    """Zamba2's nn.Linear modules as peft finds them (LoRA targets): get_layers builds a Zamba2AttentionDecoderLayer
    per hybrid layer, so each shared Linear is a module per invocation (its weight tied), and each of those modules'
    adapter lists holds its block's projectors (c_b of them; zamba2_projectors with nothing tied)."""
    from dataclasses import replace

    g = len(m.zamba_hybrid_layers)
    per_copy = sum(len(range(b, g, m.zamba_mem_blocks)) ** 2 for b in range(min(m.zamba_mem_blocks, g)))
    shared = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"}
    return tuple(replace(lin, count=g) if lin.module in shared
                 else replace(lin, count=per_copy) if "adapter" in lin.module else lin for lin in zamba2_linears(m))


def zamba2_all_tied(m: ModelSpec) -> bool:
    """Whether every shared weight set is tied across >= 2 hybrid layers (tied word embeddings, and the block with the
    fewest invocations, block num_mem_blocks - 1, runs at least twice: hybrid layers >= 2 x num_mem_blocks)."""
    return m.tie_word_embeddings and len(m.zamba_hybrid_layers) >= 2 * m.zamba_mem_blocks


def zamba2_quantized(m: ModelSpec) -> tuple[Linear, ...]:
    """The Linears transformers' bitsandbytes quantizer replaces in Zamba2ForCausalLM (QLoRA), when every shared weight
    set is tied (zamba2_all_tied): quantizers/base.py get_keys_to_not_convert skips every key of
    model.all_tied_weights_keys, targets and tied copies alike, so all the shared blocks' Linears and projectors stay
    in the load dtype; integrations/bitsandbytes.py replace_with_bnb_linear converts each Mamba layer's in_proj and
    out_proj and each hybrid layer's own `linear` (measured on meta: tests/test_zamba2.py)."""
    return tuple(lin for lin in zamba2_linears(m) if lin.module in ("in_proj", "out_proj", "linear"))


def quantized_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """The block Linears QLoRA's bitsandbytes quantizer replaces: block_linears, Zamba2's zamba2_quantized."""
    return zamba2_quantized(m) if is_zamba2(m) else block_linears(m)


def zamba2_mixer_dims(m: ModelSpec) -> tuple[int, int, int]:
    """(heads, conv_dim, in_proj's out_features) of Zamba2MambaMixer.__init__: heads = n_mamba_heads, conv_dim =
    mixer + 2 x n_groups x d_state, projection_size = mixer + conv_dim + heads."""
    i = m.mixer_intermediate_size
    heads = i // m.mixer_head_dim
    conv = i + 2 * m.ssm_n_groups * m.mixer_state_size
    return heads, conv, i + conv + heads


def zamba2_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter of Zamba2ForCausalLM as sum(p.numel()) counts it (tied weights once): embed_tokens; the
    Linears (zamba2_linears) and, with add_bias_linear, the biases of in_proj, out_proj, gate_up_proj and down_proj;
    per layer conv1d (conv_dim, 1, d_conv) and its bias (nn.Conv1d(bias=True) whatever use_conv_bias says), dt_bias,
    A_log and D (heads), the gated norm (Zamba2RMSNormGated, mixer wide) and input_layernorm; per shared block
    input_layernorm (2 x hidden) and pre_ff_layernorm; final_layernorm; lm_head unless tied."""
    assert m.hidden_size is not None and m.vocab_size is not None and m.num_layers is not None
    h, n, b = m.hidden_size, m.num_layers, zamba2_blocks(m)
    heads, conv, _ = zamba2_mixer_dims(m)
    out = [ParamTensor("embed_tokens", "embedding", (m.vocab_size, h), 1, "embed_tokens", False)]
    out += linear_tensors(m, zamba2_linears(m))
    out += [ParamTensor("conv1d", "norm", (conv, 1, m.ssm_conv_kernel), n, "conv1d"),
            ParamTensor("conv1d.bias", "norm", (conv,), n, "conv1d")]
    for name in ("dt_bias", "A_log", "D"):
        out.append(ParamTensor(name, "norm", (heads,), n, name))
    out.append(ParamTensor("gated_norm", "norm", (m.mixer_intermediate_size,), n, "norm"))
    out.append(ParamTensor("layer_norms", "norm", (h,), n, "norm"))
    if b:
        out.append(ParamTensor("shared_input_layernorm", "norm", (2 * h,), b, "norm"))
        out.append(ParamTensor("shared_pre_ff_layernorm", "norm", (h,), b, "norm"))
    out.append(ParamTensor("final_norm", "norm", (h,), 1, "norm", False))
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (m.vocab_size, h), 1, "lm_head", False))
    return tuple(out)


# --- Jamba (activations in memory/jamba.py) ----------------------------------------------------------------------
def is_jamba(m: ModelSpec) -> bool:
    """Whether `m` is a Jamba model: attention and Mamba-1 layers, dense and MoE feed-forwards (modeling_jamba.py)."""
    return bool(m.jamba_mixer_size)


@lru_cache(maxsize=64)
def jamba_layer_kinds(m: ModelSpec) -> tuple[tuple[bool, bool], ...]:
    """(attention, MoE) per layer, bottom first: JambaConfig.layers_block_type ("attention" where i %
    attn_layer_period == attn_layer_offset, else "mamba") and layers_num_experts (num_experts where i %
    expert_layer_period == expert_layer_offset, else 1: a dense JambaMLP; num_experts 1 makes every one dense)."""
    assert m.num_layers is not None
    return tuple((i % m.attn_layer_period == m.attn_layer_offset,
                  bool(m.num_experts) and i % m.expert_layer_period == m.expert_layer_offset)
                 for i in range(m.num_layers))


def jamba_counts(m: ModelSpec) -> tuple[int, int, int, int]:
    """(attention layers, Mamba layers, MoE feed-forwards, dense feed-forwards)."""
    kinds = jamba_layer_kinds(m)
    n_attn = sum(1 for a, _ in kinds if a)
    n_moe = sum(1 for _, e in kinds if e)
    return n_attn, len(kinds) - n_attn, n_moe, len(kinds) - n_moe


@lru_cache(maxsize=64)
def jamba_mixer(m: ModelSpec) -> ModelSpec:
    """A Jamba layer's JambaMambaMixer as a Mamba-1 ModelSpec (MambaMixer's shapes: in_proj, conv1d, x_proj, dt_proj,
    A_log, D, out_proj; modeling_jamba.py adds dt/B/C RMSNorms and has no fp32 residual), so that memory/ssm.py's
    Mamba-1 functions read it. Its block norm is the layer's input_layernorm."""
    from dataclasses import replace

    return replace(m, family="mamba", intermediate_size=m.jamba_mixer_size, ssm_state_size=m.jamba_state_size,
                   ssm_residual_fp32=False, num_attention_heads=None, num_kv_heads=None, head_dim=None,
                   num_experts=0, experts_per_token=0, attn_layer_period=0, attn_layer_offset=0,
                   expert_layer_period=0, expert_layer_offset=0, jamba_mixer_size=0, jamba_state_size=0,
                   norms_per_layer=1)


def jamba_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """Jamba's nn.Linear modules and expert stacks (modeling_jamba.py): JambaAttention's q/k/v/o_proj (no bias) in
    the attention layers, JambaMambaMixer's in_proj (hidden -> 2 x mixer), x_proj (mixer -> dt_rank + 2 x state),
    dt_proj (dt_rank -> mixer) and out_proj (mixer -> hidden) in the Mamba layers, JambaMLP's gate/up/down_proj in
    the dense layers and JambaExperts' gate_up_proj / down_proj stacks (num_experts each) in the MoE layers."""
    assert m.hidden_size is not None and m.num_attention_heads is not None and m.intermediate_size is not None
    h, i, r, s = m.hidden_size, m.jamba_mixer_size, m.ssm_dt_rank, m.jamba_state_size
    n_attn, n_mamba, n_moe, n_dense = jamba_counts(m)
    q_dim = m.num_attention_heads * head_dim(m)
    kv_dim = kv_heads(m) * head_dim(m)
    out: list[Linear] = []
    if n_attn:
        out += [Linear("q_proj", h, q_dim, n_attn), Linear("k_proj", h, kv_dim, n_attn),
                Linear("v_proj", h, kv_dim, n_attn), Linear("o_proj", q_dim, h, n_attn)]
    if n_mamba:
        out += [Linear("in_proj", h, 2 * i, n_mamba), Linear("x_proj", i, r + 2 * s, n_mamba),
                Linear("dt_proj", r, i, n_mamba), Linear("out_proj", i, h, n_mamba)]
    if n_dense:
        out += _mlp_linears(m, h, m.intermediate_size, n_dense, "")
    if n_moe:
        out += _mlp_linears(m, h, m.intermediate_size, n_moe * m.num_experts, "experts.")
    return tuple(out)


def jamba_layer_params(m: ModelSpec, attention: bool, moe: bool) -> int:
    """One Jamba layer's parameters by its kind (the per-layer tensors of jamba_tensors)."""
    assert m.hidden_size is not None and m.num_attention_heads is not None and m.intermediate_size is not None
    h, i, r, s, k = m.hidden_size, m.jamba_mixer_size, m.ssm_dt_rank, m.jamba_state_size, m.ssm_conv_kernel
    if attention:
        q_dim, kv_dim = m.num_attention_heads * head_dim(m), kv_heads(m) * head_dim(m)
        mixer = 2 * h * q_dim + 2 * h * kv_dim
    else:
        mixer = (h * 2 * i + i * (r + 2 * s) + r * i + i * h + i  # in_proj, x_proj, dt_proj (+ bias), out_proj
                 + (2 * i + h if m.ssm_proj_bias else 0) + i * k + (i if m.ssm_conv_bias else 0)
                 + i * s + i + r + 2 * s)  # A_log, D, the dt / B / C norms
    ff = m.num_experts * (3 * h * m.intermediate_size + h) if moe else 3 * h * m.intermediate_size
    return mixer + ff + 2 * h  # input_layernorm, pre_ff_layernorm


def jamba_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of JambaForCausalLM (sum of numel = sum(p.numel() for p in model.parameters())):
    embed_tokens; the Linears (jamba_linears); per Mamba layer in_proj / out_proj biases (mamba_proj_bias), dt_proj's
    bias, conv1d (mixer, 1, d_conv) and its bias (mamba_conv_bias), A_log (mixer x state), D (mixer), dt_layernorm
    (dt_rank), b_layernorm and c_layernorm (state); per MoE layer JambaTopKRouter.weight (num_experts x hidden); per
    layer input_layernorm and pre_ff_layernorm; final_layernorm; lm_head unless tied."""
    assert m.hidden_size is not None and m.vocab_size is not None and m.num_layers is not None
    h, i, r, s, k = m.hidden_size, m.jamba_mixer_size, m.ssm_dt_rank, m.jamba_state_size, m.ssm_conv_kernel
    _, n, n_moe, _ = jamba_counts(m)
    out = [ParamTensor("embed_tokens", "embedding", (m.vocab_size, h), 1, "embed_tokens", False)]
    for lin in jamba_linears(m):
        out.append(ParamTensor(lin.module, "linear", (lin.out_features, lin.in_features), lin.count, lin.module))
    if n:
        if m.ssm_proj_bias:
            out.append(ParamTensor("in_proj.bias", "bias", (2 * i,), n, "in_proj"))
            out.append(ParamTensor("out_proj.bias", "bias", (h,), n, "out_proj"))
        out.append(ParamTensor("dt_proj.bias", "bias", (i,), n, "dt_proj"))
        out.append(ParamTensor("conv1d", "norm", (i, 1, k), n, "conv1d"))
        if m.ssm_conv_bias:
            out.append(ParamTensor("conv1d.bias", "norm", (i,), n, "conv1d"))
        out.append(ParamTensor("A_log", "norm", (i, s), n, "A_log"))
        out.append(ParamTensor("D", "norm", (i,), n, "D"))
        out.append(ParamTensor("dt_layernorm", "norm", (r,), n, "norm"))
        out.append(ParamTensor("bc_layernorms", "norm", (s,), 2 * n, "norm"))
    if n_moe:
        out.append(ParamTensor("router", "router", (m.num_experts, h), n_moe, "router"))
    out.append(ParamTensor("layer_norms", "norm", (h,), 2 * m.num_layers, "norm"))
    out.append(ParamTensor("final_norm", "norm", (h,), 1, "norm", False))
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (m.vocab_size, h), 1, "lm_head", False))
    return tuple(out)


# --- Nemotron-H (activations in memory/nemotron_h.py) ----------------------------------------------------------------
def is_nemotron_h(m: ModelSpec) -> bool:
    """Whether `m` is a Nemotron-H model: each layer one block, a Mamba-2 mixer, attention or an MLP
    (modeling_nemotron_h.py NemotronHBlock; hybrid_override_pattern)."""
    return bool(m.hybrid_pattern)


def nemotron_h_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """Nemotron-H's nn.Linear modules (modeling_nemotron_h.py): NemotronHAttention's (JambaAttention's) q/k/v/o_proj
    in the "*" layers; NemotronHMamba2Mixer's in_proj (hidden -> mixer + conv_dim + heads) and out_proj
    (mixer -> hidden) in the "M" layers; NemotronHMLP's up_proj (hidden -> intermediate) and down_proj in the "-"
    layers."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    h, pat = m.hidden_size, m.hybrid_pattern
    n_mamba, n_attn, n_mlp = pat.count("M"), pat.count("*"), pat.count("-")
    out: list[Linear] = []
    if n_attn:
        assert m.num_attention_heads is not None
        q_dim, kv_dim = m.num_attention_heads * head_dim(m), kv_heads(m) * head_dim(m)
        out += [Linear("q_proj", h, q_dim, n_attn), Linear("k_proj", h, kv_dim, n_attn),
                Linear("v_proj", h, kv_dim, n_attn), Linear("o_proj", q_dim, h, n_attn)]
    if n_mamba:
        out += ssm_linears(hybrid_mixer(m))  # in_proj, out_proj x the "M" layers (hybrid_mixer's num_layers)
    if n_mlp:
        out += [Linear("up_proj", h, m.intermediate_size, n_mlp), Linear("down_proj", m.intermediate_size, h, n_mlp)]
    n_moe = pat.count("E")
    if n_moe and m.num_experts:  # NemotronHMoE: the 3-D experts (not nn.Linear: fused_experts) and shared_experts
        i, s_i = m.moe_intermediate_size or m.intermediate_size, m.shared_expert_intermediate_size or h
        x = expert_width(m)  # NemotronHExperts' input_dim: moe_latent_size when set, else hidden_size
        out += [Linear("experts.up_proj", x, i, n_moe * m.num_experts),
                Linear("experts.down_proj", i, x, n_moe * m.num_experts),
                Linear("shared_expert.up_proj", h, s_i, n_moe), Linear("shared_expert.down_proj", s_i, h, n_moe)]
        if m.moe_latent_size:  # NemotronHMoE.fc1_latent_proj / fc2_latent_proj: nn.Linear(bias=config.mlp_bias)
            out += [Linear("fc1_latent_proj", h, x, n_moe), Linear("fc2_latent_proj", x, h, n_moe)]
    return tuple(out)


def expert_width(m: ModelSpec) -> int:
    """The width the routed experts read and write: Nemotron 3 Super's moe_latent_size (modeling_nemotron_h.py
    NemotronHExperts: `input_dim = config.moe_latent_size if ... else config.hidden_size`), else hidden_size."""
    assert m.hidden_size is not None
    return m.moe_latent_size or m.hidden_size


def nemotron_h_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of NemotronHForCausalLM (sum of numel = sum(p.numel() for p in model.parameters())):
    embeddings; the Linears (nemotron_h_linears) and their biases (attention_bias on q/k/v/o, use_bias on in_proj
    and out_proj, mlp_bias on up/down_proj); per "M" layer conv1d (conv_dim, 1, kernel) and its bias
    (use_conv_bias), dt_bias, A_log and D per head, NemotronHRMSNormGated's weight (mixer width); per layer
    NemotronHBlock.norm; norm_f; lm_head unless tied."""
    assert m.hidden_size is not None and m.vocab_size is not None and m.num_layers is not None
    h = m.hidden_size
    out = [ParamTensor("embed_tokens", "embedding", (m.vocab_size, h), 1, "embed_tokens", False)]
    # (NemotronHExperts' 3-D up_proj / down_proj have no bias whatever mlp_bias says; shared_experts' Linears do)
    out += [x for x in linear_tensors(m, nemotron_h_linears(m)) if not (x.kind == "bias" and
                                                                         x.module.startswith("experts."))]
    if m.num_experts and "E" in m.hybrid_pattern:  # NemotronHTopkRouter.weight (e_score_correction_bias: a buffer)
        out.append(ParamTensor("router", "router", (m.num_experts, h), m.hybrid_pattern.count("E"), "router"))
    n = m.hybrid_pattern.count("M")
    if n:
        heads, conv, _ = mamba2_dims(hybrid_mixer(m))
        out.append(ParamTensor("conv1d", "norm", (conv, 1, m.ssm_conv_kernel), n, "conv1d"))
        if m.ssm_conv_bias:
            out.append(ParamTensor("conv1d.bias", "norm", (conv,), n, "conv1d"))
        for name in ("dt_bias", "A_log", "D"):
            out.append(ParamTensor(name, "norm", (heads,), n, name))
        out.append(ParamTensor("gated_norm", "norm", (m.mixer_intermediate_size,), n, "norm"))
    out.append(ParamTensor("layer_norms", "norm", (h,), m.num_layers, "norm"))
    out.append(ParamTensor("final_norm", "norm", (h,), 1, "norm", False))
    if not m.tie_word_embeddings:
        out.append(ParamTensor("lm_head", "head", (m.vocab_size, h), 1, "lm_head", False))
    return tuple(out)


def nemotron_h_layer_params(m: ModelSpec, kind: str) -> int:
    """One Nemotron-H layer's parameters by its kind ("M", "*", "-" or "E"): nemotron_h_tensors' per-layer tensors,
    NemotronHBlock.norm included."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    h, i = m.hidden_size, m.intermediate_size
    if kind == "*":
        assert m.num_attention_heads is not None
        q_dim, kv_dim = m.num_attention_heads * head_dim(m), kv_heads(m) * head_dim(m)
        mixer = 2 * h * q_dim + 2 * h * kv_dim + (q_dim + 2 * kv_dim if m.qkv_bias else 0) + (h if m.o_bias else 0)
    elif kind == "-":
        mixer = 2 * h * i + (i + h if m.mlp_bias else 0)
    elif kind == "E":  # NemotronHMoE: router (E, h), experts' up / down (E x 2 x i x x, x the expert width),
        # shared_experts (2 x s x h), with moe_latent_size fc1 / fc2_latent_proj (2 x h x latent, mlp_bias: latent + h)
        e, e_i, s_i = m.num_experts, m.moe_intermediate_size or i, m.shared_expert_intermediate_size or h
        x = expert_width(m)
        latent = 2 * h * x + (x + h if m.mlp_bias else 0) if m.moe_latent_size else 0
        mixer = e * h + 2 * e * e_i * x + 2 * h * s_i + (s_i + h if m.mlp_bias else 0) + latent
    else:
        heads, conv, proj = mamba2_dims(hybrid_mixer(m))
        w = m.mixer_intermediate_size
        mixer = (h * proj + w * h + (proj if m.ssm_proj_bias else 0) + (h if m.mixer_out_bias else 0)
                 + conv * m.ssm_conv_kernel + (conv if m.ssm_conv_bias else 0) + 3 * heads + w)
    return mixer + h


def ssm_default_targets(m: ModelSpec) -> tuple[str, ...]:
    """peft has no default LoRA targets for mamba (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING has no entry):
    the mixer's in_proj and x_proj, the Linears peft accepts and MambaMixer calls as modules. Mamba-2's mixer has
    only in_proj and out_proj, and peft refuses out_proj: in_proj."""
    if is_mamba2(m):
        return ("in_proj",)
    return ("in_proj", "x_proj")


def check_ssm_targets(m: ModelSpec, chosen: tuple[Linear, ...]) -> None:
    """Refuse LoRA targets a Mamba run cannot have: peft refuses out_proj and conv1d for mamba (tuners_utils.py
    _check_lora_target_modules_mamba: the CUDA path reads out_proj.weight directly), and MambaMixer multiplies by
    dt_proj.weight itself (`self.dt_proj.weight @ time_step`), so an adapter on dt_proj would never run."""
    why = {"out_proj": "peft refuses out_proj for Mamba models",
           "dt_proj": "MambaMixer multiplies by dt_proj.weight itself, so its adapter would never run"}
    bad = [lin.module for lin in chosen if lin.module in why]
    if bad:
        use = "in_proj" if is_mamba2(m) else "in_proj,x_proj"  # Mamba-2's mixer has no x_proj
        raise UnsupportedCombination(f"LoRA on {', '.join(bad)} of {m.name}: {'; '.join(why[b] for b in bad)}; use "
                                     f"--lora-targets {use}")


def check_hybrid_targets(m: ModelSpec, chosen: tuple[Linear, ...]) -> None:
    """peft 0.21 refuses LoRA on out_proj and conv1d for falcon_h1 (tuners_utils.py _check_lora_target_modules_mamba),
    so all-linear (which takes the mixer's out_proj) fails there too. Bamba is not on peft's list: its out_proj is
    adapted (BambaMixer's PyTorch path calls it as a module)."""
    if is_layered_hybrid(m) or is_zamba2(m):  # (zamba2 is not on peft's list either)
        return
    if any(lin.module == "out_proj" for lin in chosen):
        # (nemotron_h is on peft's list too: its MLP layers have no gate_proj)
        rest = "up_proj,down_proj" if is_nemotron_h(m) else "gate_proj,up_proj,down_proj"
        raise UnsupportedCombination(f"LoRA on out_proj of {m.name}: peft refuses the Mamba mixer's out_proj for "
                                     f"{m.family} (all-linear takes it too); use --lora-targets q_proj,k_proj,"
                                     f"v_proj,o_proj,in_proj,{rest}")


# --- The classics (issue 15; activations in memory/convnet.py and memory/rnn.py) --------------------------------
# torchvision/models/resnet.py ResNet: conv1 (7x7, stride 2, no bias) + bn1, maxpool, layer1..layer4 of planes
# 64/128/256/512 (strides 1, 2, 2, 2) of BasicBlock (expansion 1) or Bottleneck (expansion 4; width = planes x
# width_per_group / 64 x groups), a conv1x1 + BatchNorm2d downsample where the stride or the width changes, fc.
PLANES = (64, 128, 256, 512)  # ResNet.__init__: layer1..layer4
STRIDES = (1, 2, 2, 2)


def conv_groups(m: ModelSpec) -> int:
    return m.conv_groups or 1  # ResNet(groups=1)


def conv_width_per_group(m: ModelSpec) -> int:
    return m.conv_width_per_group or 64  # ResNet(width_per_group=64)


def expansion(m: ModelSpec) -> int:
    return 4 if m.conv_bottleneck else 1


def stem_sides(image_size: int) -> tuple[int, int]:
    """Side of conv1's output and of maxpool's: (size + 2 x padding - kernel) // stride + 1 (torch Conv2d)."""
    h1 = (image_size + 2 * 3 - 7) // 2 + 1
    return h1, (h1 + 2 * 1 - 3) // 2 + 1


@dataclass(frozen=True)
class Block:
    """One residual block: its channels and its input and output side lengths."""

    name: str
    in_ch: int
    width: int  # Bottleneck: the 1x1/3x3 width; BasicBlock: planes
    out_ch: int
    stride: int
    h_in: int
    h_out: int
    downsample: bool


def blocks(m: ModelSpec, image_size: int) -> Iterator[Block]:
    """Every residual block in forward order (ResNet._make_layer)."""
    e = expansion(m)
    inplanes, h = 64, stem_sides(image_size)[1]
    for stage, (planes, n_blocks, stride) in enumerate(zip(PLANES, m.conv_blocks, STRIDES, strict=True), start=1):
        width = planes * conv_width_per_group(m) // 64 * conv_groups(m) if m.conv_bottleneck else planes
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            h_out = (h - 1) // s + 1  # conv3x3 padding 1 and conv1x1 padding 0 give the same side
            yield Block(f"layer{stage}.{i}", inplanes, width, planes * e, s, h, h_out,
                        s != 1 or inplanes != planes * e)
            inplanes, h = planes * e, h_out


def _conv(name: str, out_ch: int, in_ch: int, k: int, groups: int = 1) -> ParamTensor:
    return ParamTensor(name, "linear", (out_ch, in_ch // groups, k, k), 1, name, per_layer=False)


def _bn(name: str, ch: int) -> list[ParamTensor]:
    return [ParamTensor(f"{name}.weight", "norm", (ch,), 1, name, per_layer=False),
            ParamTensor(f"{name}.bias", "norm", (ch,), 1, name, per_layer=False)]


def resnet_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of torchvision's ResNet (sum of numel = sum(p.numel() for p in model.parameters()))."""
    out = [_conv("conv1", 64, 3, 7), *_bn("bn1", 64)]
    for b in blocks(m, 224):  # the image size changes no parameter
        p = b.name
        if m.conv_bottleneck:
            out += [_conv(f"{p}.conv1", b.width, b.in_ch, 1), *_bn(f"{p}.bn1", b.width),
                    _conv(f"{p}.conv2", b.width, b.width, 3, conv_groups(m)), *_bn(f"{p}.bn2", b.width),
                    _conv(f"{p}.conv3", b.out_ch, b.width, 1), *_bn(f"{p}.bn3", b.out_ch)]
        else:
            out += [_conv(f"{p}.conv1", b.width, b.in_ch, 3), *_bn(f"{p}.bn1", b.width),
                    _conv(f"{p}.conv2", b.out_ch, b.width, 3), *_bn(f"{p}.bn2", b.out_ch)]
        if b.downsample:
            out += [_conv(f"{p}.downsample.0", b.out_ch, b.in_ch, 1), *_bn(f"{p}.downsample.1", b.out_ch)]
    classes = m.num_classes or 1000
    final = 512 * expansion(m)
    out += [ParamTensor("fc.weight", "head", (classes, final), 1, "fc", per_layer=False),
            ParamTensor("fc.bias", "bias", (classes,), 1, "fc", per_layer=False)]
    return tuple(out)


# pytorch/examples word_language_model/model.py RNNModel with torch.nn.LSTM's layout (torch/nn/modules/rnn.py
# RNNBase.__init__): per layer weight_ih (4 x hidden, input), weight_hh (4 x hidden, hidden), bias_ih, bias_hh.
def lstm_tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor of RNNModel (tied: the decoder's weight is the encoder's, counted once)."""
    assert m.vocab_size is not None and m.hidden_size is not None and m.num_layers is not None
    v, e, h = m.vocab_size, m.rnn_input_size, m.hidden_size
    out = [ParamTensor("encoder.weight", "embedding", (v, e), 1, "encoder", per_layer=False)]
    for layer in range(m.num_layers):
        width = e if layer == 0 else h
        out += [ParamTensor(f"rnn.weight_ih_l{layer}", "linear", (4 * h, width), 1, "rnn", per_layer=False),
                ParamTensor(f"rnn.weight_hh_l{layer}", "linear", (4 * h, h), 1, "rnn", per_layer=False),
                ParamTensor(f"rnn.bias_ih_l{layer}", "bias", (4 * h,), 1, "rnn", per_layer=False),
                ParamTensor(f"rnn.bias_hh_l{layer}", "bias", (4 * h,), 1, "rnn", per_layer=False)]
    if not m.tie_word_embeddings:
        out.append(ParamTensor("decoder.weight", "head", (v, h), 1, "decoder", per_layer=False))
    out.append(ParamTensor("decoder.bias", "bias", (v,), 1, "decoder", per_layer=False))
    return tuple(out)
