"""transformers' tensor parallelism (--tp N --tp-layout hf): one rank of from_pretrained(tp_plan="auto", tp_size=N).

Read in transformers 5.24 (transformers/distributed/tensor_parallel.py, distributed/mixin.py) and peft 0.21.2:
- mixin.py _resolve_parallel_plans / _expand_parallel_plan: the model's base_model_tp_plan (configuration_*.py) and
  its _tp_plan {"lm_head": "colwise_gather_output"} (modeling_*.py); apply_tensor_parallelism turns each named
  parameter into a DTensor shard (shard_param) and wraps each named module's forward (install_forward).
- Llama, Mistral, Qwen2, Qwen3 plans: q/k/v/gate/up_proj "colwise" (ColwiseParallel: weight and bias Shard(0), the
  output this rank's slice of the features), o/down_proj "rowwise" (RowwiseParallel: weight Shard(-1), bias
  Replicate; the partial output all-reduced to full size, Partial -> Replicate), Qwen3's q_norm / k_norm
  "replicated_with_grad_allreduce". Nothing names the norms: they stay whole on every rank.
- lm_head "colwise_gather_output": weight Shard(0) (a slice of the vocabulary), output redistributed to Replicate:
  every rank holds the full-vocabulary logits, and the loss runs on them as on one GPU.
- embed_tokens "embedding_rowwise": mixin.py init_parallel_plans adds it to every plan of a model with an
  nn.Embedding (EmbeddingParallel(shard_dim=0): a vocabulary slice, the partial lookups all-reduced).
- Activations: no sequence parallelism in these plans, so the hidden states, norms and residual stream are whole;
  attention runs on num_heads / N query and num_kv_heads / N key/value heads (get_kv_heads_per_rank), the MLP on
  intermediate_size / N. One rank's step is the model with those widths (`rank_view`), the head's weight a slice.
- Gradients and optimizer states follow the DTensor shards (torch.optim on DTensor parameters: states zeros_like).
- LoRA (peft tuners/lora/model.py add_lora_tp_hooks_dtensor): a colwise target's lora_B is sharded like its base
  (Shard(0)), a rowwise target's lora_A (Shard(1)); lora_A of a colwise and lora_B of a rowwise target stay whole:
  the shapes of `rank_view`'s Linears give exactly these.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.units import ceil_div

if TYPE_CHECKING:
    from vramcalc.core.memory.weights import StoredTensor
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# Families whose base_model_tp_plan is the dense colwise / rowwise plan above (configuration_{llama,mistral,qwen2,
# qwen3}.py); others (MoE packed_colwise / moe_tp_experts, fused projections, VLMs) are not modelled.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SOURCE = "transformers distributed/tensor_parallel.py (ColwiseParallel, RowwiseParallel), models' base_model_tp_plan"


def active(t: TrainingSpec) -> bool:
    return t.tp > 1 and t.tp_layout == "hf"


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """What one line refuses: what transformers' plan or peft cannot shard, and what is not modelled beside it."""
    n = t.tp
    flag = f"--tp {n} --tp-layout hf"
    if m.family not in FAMILIES or not m.has_architecture:
        raise UnsupportedCombination(f"{flag}: transformers' tp_plan is modelled for {', '.join(FAMILIES)}, not "
                                     f"{m.family}; use --tp-layout megatron (Megatron's layout)")
    if m.tie_word_embeddings:
        raise UnsupportedCombination(f"{flag}: a head tied to the embedding under the plan's colwise lm_head is not "
                                     "modelled; use --tp-layout megatron")
    heads = m.num_attention_heads or 0
    kv = m.num_kv_heads or heads
    inter = m.intermediate_size or 0
    for what, k in (("num_attention_heads", heads), ("num_key_value_heads", kv), ("intermediate_size", inter)):
        if k % n:
            raise UnsupportedCombination(f"{flag}: {what} {k} is not divisible by {n} (transformers "
                                         "get_kv_heads_per_rank); choose a --tp that divides it")
    if t.method == "lora":
        from vramcalc.core.params import outer_targets

        outer = outer_targets(t.lora_targets)
        if outer:  # the block Linears are all colwise / rowwise in these plans
            raise UnsupportedCombination(f"{flag}: LoRA on {outer[0]} has no colwise / rowwise plan entry (peft adds "
                                         "no tensor-parallel hooks to it); target the block Linears only")


def rank_view(m: ModelSpec, tp: int) -> ModelSpec:
    """The model one rank runs: its heads and MLP width divided by tp, the head dimension kept (Llama's attention
    reshapes to (..., -1, head_dim)), the hidden size and vocabulary whole (the logits are gathered; `rank_tensor`
    slices the embedding's and the head's weights)."""
    heads = m.num_attention_heads or 1
    hd = m.head_dim or (m.hidden_size or 0) // heads
    return replace(m, num_attention_heads=heads // tp, num_kv_heads=(m.num_kv_heads or heads) // tp, head_dim=hd,
                   intermediate_size=(m.intermediate_size or 0) // tp)


def vocab_rows(m: ModelSpec, t: TrainingSpec) -> int:
    """Rows of lm_head and embed_tokens on rank 0: a slice of the vocabulary under the plan (Shard(0): the last rank's
    is shorter when tp does not divide it, rank 0's the ceiling), the whole vocabulary otherwise."""
    v = m.vocab_size or 0
    return ceil_div(v, t.tp) if active(t) else v


def rank_tensor(x: StoredTensor, tp: int) -> StoredTensor:
    """A tensor of `rank_view`'s model as the rank stores it: lm_head and embed_tokens a slice of the vocabulary
    (`vocab_rows`), every other tensor as it is."""
    if x.kind not in ("head", "embedding") or len(x.shape) != 2:
        return x
    return replace(x, shape=(ceil_div(x.shape[0], tp), *x.shape[1:]))


def note(t: TrainingSpec) -> str:
    return (f"tensor parallel (transformers tp_plan, {t.tp} ranks): q/k/v/gate/up colwise, o/down rowwise, lm_head "
            "and embed_tokens vocabulary slices, the logits gathered whole on every rank; norms whole; activations "
            "of one rank's heads and MLP slice, hidden states whole (no sequence parallelism).")
