"""What one GPU gathers or holds under sharding and tensor/pipeline parallelism, in bytes of its own tensors.

Issue 19: memory/distributed.py took the gathered unit, its gradients, the busiest tp/pp rank and autocast's
16-bit copies as a parameter share of the replica's byte totals, which is wrong wherever the root (embeddings,
final norm, head) and the layers differ in bytes per parameter (QLoRA's 4-bit layers under 32-bit embeddings,
LoRA's adapters, the PEFT methods, freeze). The cases below write the bytes out tensor by tensor for a tiny
QLoRA model, from bitsandbytes' and peft's storage rules (memory/weights.py: nf4_bytes, unquantized_bytes).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given

from test_properties import PROPERTY, architectures, trainings
from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.memory.distributed import state_bytes
from vramcalc.core.memory.optimizer import LIBRARY_OPTIMIZERS, optimizer_bytes
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.weights import tensor_groups, weight_bytes
from vramcalc.core.params import dense_layers
from vramcalc.core.specs import ModelSpec, TrainingSpec

# A Llama-style toy: vocabulary 32, hidden 64, 4 heads of 16 with 2 KV heads (k/v width 32), gated MLP of 128,
# two RMSNorms per layer and a final one, untied head.
TOY = ModelSpec(name="toy", source="hand-written", family="llama", vocab_size=32, hidden_size=64, intermediate_size=128,
                num_layers=2, num_attention_heads=4, num_kv_heads=2, norms_per_layer=2, final_norm=True)
# QLoRA defaults (core/specs.py): NF4 with double quantization, prepare_model_for_kbit_training (non-quantized
# parameters in fp32), bf16 model, LoRA on q_proj and v_proj, here rank 4, fp32 adapters.
QLORA = TrainingSpec(method="qlora", lora_rank=4, batch_size=1, seq_len=8)


def nf4(numel: int) -> int:
    """bitsandbytes quantize_4bit with compress_statistics: numel / 2 packed bytes, one uint8 absmax per 64-element
    block, one fp32 absmax per 256 blocks and one fp32 offset."""
    blocks = -(-numel // 64)
    return numel // 2 + blocks + 4 * -(-blocks // 256) + 4


# The root (FSDP's root unit): embed_tokens and lm_head 32 x 64 in fp32 (kbit prep), the final norm's 64 fp32.
ROOT = 32 * 64 * 4 + 64 * 4 + 32 * 64 * 4  # 16,640
# One layer: q_proj and o_proj 64 x 64, k_proj and v_proj 32 x 64, gate/up/down 128 x 64, all NF4; two 64-wide
# fp32 norms; LoRA A (4 x 64) and B (64 x 4) on q_proj, A (4 x 64) and B (32 x 4) on v_proj, fp32.
ADAPTER_ELEMENTS = 4 * 64 + 64 * 4 + 4 * 64 + 32 * 4  # 896
LAYER = (2 * nf4(64 * 64) + 2 * nf4(32 * 64) + 3 * nf4(128 * 64)  # 2 x 2,120 + 2 x 1,064 + 3 x 4,232
         + 2 * 64 * 4 + ADAPTER_ELEMENTS * 4)  # 4,240 + 2,128 + 12,696 + 512 + 3,584 = 23,160


def test_hand_written_nf4_sizes() -> None:
    # 4,096 elements: 2,048 packed bytes + 64 blocks' uint8 absmax + one fp32 absmax + the fp32 offset
    assert nf4(64 * 64) == 2048 + 64 + 4 + 4 == 2120
    assert (ROOT, LAYER) == (16_640, 23_160)


def test_fsdp_offloaded_qlora_keeps_the_gathered_units_own_bytes() -> None:
    # FSDP full-shard over 2 GPUs, parameters offloaded: the GPU holds the root unit and the current and the
    # prefetched layer, gathered: 16,640 + 2 x 23,160 = 62,960 B. (Before issue 19 the unit was its parameter share
    # of the model's bytes: right at 2 layers, where the unit is the whole model, but 56,135 B at 4 layers.)
    t = replace(QLORA, fsdp="full-shard", gpus_per_node=2, offload="params")
    b = estimate(TOY, t)
    assert b.details["weights.gathered_unit"] == ROOT + 2 * LAYER == 62_960
    assert b.weights == ROOT + 2 * LAYER
    # one layer's adapter gradients (fp32, as the adapters) wait for their reduce-scatter: 896 x 4 B
    assert b.details["gradients.unsharded_unit"] == ADAPTER_ELEMENTS * 4 == 3584
    # the same unit at 4 layers: the root and a layer do not depend on the depth
    deeper = estimate(replace(TOY, num_layers=4), t)
    assert deeper.weights == b.weights and deeper.gradients == b.gradients


def test_deepspeed_zero3_gathers_the_largest_module_in_its_own_dtype() -> None:
    # DeepSpeed ZeRO-3: the largest single module, embed_tokens or lm_head (32 x 64 in fp32: 8,192 B), not the
    # largest module's parameter share of the model's bytes; its gradient: the largest adapter's, lora_A of q_proj
    # or v_proj or lora_B of q_proj (256 elements x 4 B). Before issue 19: 6,601 and 752 B, parameter shares.
    t = replace(QLORA, zero=3, gpus_per_node=2)
    b = estimate(TOY, t)
    assert b.details["weights.gathered_unit"] == 32 * 64 * 4
    assert b.details["gradients.unsharded_unit"] == 256 * 4


def test_tensor_parallel_rank_holds_its_own_shards() -> None:
    # tp 2: every Linear's output rows, the embedding and the head split in two (Megatron); norms and adapters whole.
    # Root: two 16 x 64 fp32 halves + the 64-wide fp32 final norm. Layer: q, o 32 x 64; k, v 16 x 64; gate, up 64 x 64;
    # down 32 x 128; NF4 each; two fp32 norms; the adapters whole.
    root = 2 * 16 * 64 * 4 + 64 * 4
    layer = (2 * nf4(32 * 64) + 2 * nf4(16 * 64) + 3 * nf4(64 * 64) + 2 * 64 * 4 + ADAPTER_ELEMENTS * 4)
    b = estimate(TOY, replace(QLORA, tp=2, gpus_per_node=2))
    assert b.weights == root + 2 * layer
    assert b.gradients == 2 * ADAPTER_ELEMENTS * 4  # both layers' adapters, whole
    # pp 2: stage 0 holds layer 0 and the embedding, stage 1 layer 1, the final norm and the head: the same here
    pp = estimate(TOY, replace(QLORA, pp=2, gpus_per_node=2))
    assert pp.weights == 32 * 64 * 4 + 64 * 4 + LAYER


def test_every_layer_kind_counts_in_a_pipeline_stage() -> None:
    # A MoE toy whose bottom layer is dense (first_dense_layers 1) and whose MoE layers are lighter: the busiest stage
    # of two is counted with the heavier (dense) layer, so more MoE layers never make it lighter.
    moe = replace(TOY, intermediate_size=512, num_experts=2, experts_per_token=1, moe_intermediate_size=16,
                  first_dense_layers=1, num_layers=2)
    t = TrainingSpec(method="full", tp=1, pp=2, gpus_per_node=2, batch_size=1, seq_len=8)
    small, big = estimate(moe, t), estimate(replace(moe, num_layers=3), t)
    assert big.weights >= small.weights
    assert big.gradients >= small.gradients


@PROPERTY
@given(architectures(), trainings(multi_gpu=False))
def test_groups_add_up_to_the_whole_model(m: ModelSpec, t: TrainingSpec) -> None:
    """The per-part tensors are the ones weight_bytes and optimizer_bytes count: the same bytes, trainable elements
    and optimizer state over the whole model (so one layer's and the root's bytes are parts of the totals)."""
    # GaLore / APOLLO / Adam-mini size their states by module (a projection per weight matrix, Adam-mini's blocks by
    # name: memory/optimizer.py with the model); a tensor group carries shapes only. GaLore and APOLLO are refused
    # under sharding (core/specs.py), so units never take their states from groups.
    assume(t.optimizer not in LIBRARY_OPTIMIZERS)
    recipe = recipe_of(t)
    try:
        w = weight_bytes(m, t, recipe)
        g = tensor_groups(m, t, recipe)
    except VramcalcError:  # an unsupported target list or method: an honest refusal
        assume(False)
        raise
    # freeze on a MoE model with dense bottom layers: weight_bytes splits the frozen layers' tensors as a whole-tensor
    # fraction (weights.py _trainable_count), the groups layer by layer; the totals agree elsewhere.
    assume(not (t.method == "freeze" and m.num_experts and 0 < dense_layers(m) < (m.num_layers or 0)))
    # ModernBERT: layer 0's attention norm is nn.Identity, so its 2L - 1 norms do not split evenly into L layer
    # groups; a group holds 2 norms less one norm's share rounded down (a few hundred bytes short in total on
    # a full-size model; params.py inventory counts the whole model exactly).
    assume(m.family != "modernbert")
    pairs = [(x, 1) for x in (*g.root, *g.shared)] + [(x, n) for n, one in g.layers for x in one]
    whole = state_bytes(pairs, recipe, t, 2)
    assert whole.weights == w.total
    assert whole.trainable == w.trainable
    opt = optimizer_bytes(w.trainable_tensors, recipe, t)
    assert (whole.moments, whole.master_weights) == (opt.moments, opt.master_weights)
    assert sum(n for n, _ in g.layers) == m.num_layers
