"""Activation offloading without checkpointing (torchtune OffloadActivations; memory/savers.py offload_node_bytes).

Backward brings one autograd node's saved tensors back from the host beside the previous node's (freed by the next
unpacking node's post hook), never a layer's whole saved set; an RMSNorm's fp32 backward is a node of its own.
The toy below is benchmarks/accuracy.py's `off:llama` (tests/data/hf/tinyllama-1.1b.json cut to hidden 256,
intermediate 704, 2 layers, 8 heads / 4 kv heads, vocab 512); its traced peaks are from `--grid offload-nogc`
(benchmarks/results/accuracy_offload-nogc.md, the tracer's trace/_offload.py on torch 2.13 / transformers 5.24).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.savers import offload_node_bytes
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
LLAMA = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 4, "vocab_size": 512}
QWEN3_MOE = {"hidden_size": 256, "moe_intermediate_size": 128, "intermediate_size": 768, "num_hidden_layers": 2,
             "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64, "num_experts": 16,
             "num_experts_per_tok": 4, "vocab_size": 1024}
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def toy(config: str, shape: dict[str, object]):
    d = {**json.loads((HF / f"{config}.json").read_text()), **shape}
    return spec_from_hf_config(d, config, "tests/test_offload_nogc.py")


def _moment(e, key: str) -> tuple[int, ...]:
    return next(values for k, _, values in e.moments if k == key)


def test_full_finetuning_node_terms_derived_by_hand() -> None:
    m = toy("tinyllama-1.1b", LLAMA)
    tokens = 1024
    e = estimate(m, TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=tokens,
                                 activation_offload=True))
    # LlamaRMSNorm's backward in fp32 (PowBackward0): six 4 B x hidden tensors and two 2 B residual gradients
    norm = (6 * 4 * 256 + 2 * 2 * 256) * tokens
    gradients, shared, held = _moment(e, "backward.offload_norm")
    assert held == norm == 7_340_032
    # The MLP product node: its operands (act(gate), up: 2 x 2 B x 704) back beside down_proj's input (2 B x 704),
    # which the node after it in forward saved, and down_proj's weight.t() view, packed and brought back whole
    # (704 x 256 x 2 B = 360,448 B)
    back = (2 * 2 * 704 + 2 * 704) * tokens + 704 * 256 * 2
    _, _, brought_back, _, _ = _moment(e, "backward.top")
    assert brought_back == back == 4_685_824
    assert brought_back < e.details["activations.per_layer"]  # never the layer's whole saved set
    # forward: the same pair in the stash, beside two 2 B residual-stream tensors
    _, stash, _, _, _ = _moment(e, "forward.layer")
    assert stash == (2 * 2 * 704 + 2 * 704 + 2 * 2 * 256) * tokens


@pytest.mark.parametrize(("config", "shape", "kw", "traced"), [
    # traced peaks, --grid offload-nogc (tracer with torchtune's prev_node_ids freeing)
    ("tinyllama-1.1b", LLAMA, {"method": "full", "precision": "pure-bf16"}, 22_074_880),
    ("tinyllama-1.1b", LLAMA, {"method": "lora", "precision": "bf16", "lora_targets": QKVO}, 12_709_376),
    ("tinyllama-1.1b", LLAMA, {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}, 17_691_136),
    # the moegap note's case: a Qwen3-MoE toy LoRA q,k,v,o offload b1 s1024 was +49.25 % (34.76 MB) before
    ("qwen3-30b-a3b", QWEN3_MOE, {"method": "lora", "precision": "bf16", "lora_targets": QKVO}, 23_321_600),
    # the routed experts node by node (offmoe note): full b1 was -1.76 % (+1.27 %), LoRA all-linear b2 +8.64 %
    # (+1.42 %); the peak of both at the bottom layer's q_norm backward
    ("qwen3-30b-a3b", QWEN3_MOE, {"method": "full", "precision": "pure-bf16"}, 47_579_136),
    ("qwen3-30b-a3b", QWEN3_MOE, {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",),
                                  "batch_size": 2}, 47_200_256),
])
def test_offload_without_checkpointing_within_the_trace(config, shape, kw, traced) -> None:
    e = estimate(toy(config, shape), TrainingSpec(**{"batch_size": 1, "seq_len": 1024, "activation_offload": True,
                                                     **kw}))
    err = (e.tensor_peak_bytes - traced) / traced
    assert -0.02 <= err <= 0.07, err


def test_routed_experts_come_back_node_by_node() -> None:
    # transformers integrations/moe.py grouped_mm_experts_forward on the Qwen3-MoE toy (hidden 256, experts 128 wide,
    # top 4, bf16), LoRA all-linear (peft's ParamWrapper on the experts: grouped_mm keeps its inputs). Each node's
    # saved tensors per token, in forward order: the up grouped_mm its gathered input (4 x 2 B x 256), act_fn(gate)
    # the gate chunk (4 x 2 B x 128), `* up` act(gate) and the up chunk (4 x 2 B x 2 x 128), the down grouped_mm the
    # product (4 x 2 B x 128), `* routing weight` the down output (4 x 2 B x 256)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), activation_offload=True)
    terms = {x.name: x for x in layer_activations(toy("qwen3-30b-a3b", QWEN3_MOE), t, recipe_of(t), False).terms}
    experts = terms["experts gate_up output, activation output, down output"]
    inputs = terms["experts grouped_mm inputs (gathered hidden, gated product)"]
    assert experts.nodes == (2048, 1024, 2048, 1024, 2048)
    assert sum(experts.nodes) == experts.per_token + inputs.per_token and inputs.nodes == (0,)
    # backward brings back one node beside the previous one (the node after it in forward): at most the gathered
    # input beside the gate (or the gate beside the product's operands, or those beside the down input), 3,072 B,
    # where the two grouped terms taken whole were 5,120 + 3,072 B (+8.6 % on the b2 s1024 trace)
    node = offload_node_bytes((experts, inputs), norm_width=256, residual=2, hidden=256, rmsnorm=True,
                              weight_copy=0)
    assert node["offload_back_t"] == 2048 + 1024


def test_checkpointing_under_offload_costs_at_most_the_recomputed_layer() -> None:
    # The tracer (moegap note, this toy, LoRA q,k,v,o b1 s1024): 23.3 MB offloaded alone, 37.4 MB with
    # checkpointing, whose rerun rebuilds a layer's whole saved set where offload alone holds one node's tensors
    m = toy("qwen3-30b-a3b", QWEN3_MOE)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=QKVO, batch_size=1, seq_len=1024,
                     activation_offload=True)
    off = estimate(m, t)
    on = estimate(m, replace(t, grad_checkpointing=True))
    assert off.tensor_peak_bytes < on.tensor_peak_bytes
    assert on.tensor_peak_bytes <= off.tensor_peak_bytes + off.details["activations.per_layer"]


def test_dora_offload_without_checkpointing_is_refused() -> None:
    m = toy("tinyllama-1.1b", LLAMA)
    with pytest.raises(UnsupportedCombination, match="add --grad-checkpointing"):
        estimate(m, TrainingSpec(method="lora", dora=True, activation_offload=True))
    # with checkpointing it is modelled (the recomputed layer holds DoRA's path)
    estimate(m, TrainingSpec(method="lora", dora=True, activation_offload=True, grad_checkpointing=True))


def test_dora_offload_refusal_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--dora", "--activation-offload"],
                            capsys)
    assert code == 2
    assert "--dora with --activation-offload" in err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1


def test_tracer_brings_back_a_chunk_view_as_its_own_elements() -> None:
    # torchtune OffloadActivations packs with `torch.empty_like(activation, device="cpu")`: a view that is not dense
    # (transformers' experts gate chunk of gate_up, integrations/moe.py _default_apply_gate) gets contiguous strides,
    # so the copy back holds 64 x 8 elements, not the (64, 16) base's storage
    import torch

    from vramcalc.trace._offload import OffloadEmulation

    x = torch.randn(64, 16, requires_grad=True)
    ctx = OffloadEmulation()
    with ctx:
        gate, _ = (x * 1.0).chunk(2, dim=-1)
        torch.nn.functional.silu(gate)  # saves gate: 64 x 8 x 4 B = 2,048 B >= torchtune's 1 KiB
    assert [(tuple(shape), stride) for shape, stride, _ in ctx.offloaded.values()] == [((64, 8), (8, 1))]


QWEN3 = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 512}


def test_layer_gradients_appear_one_linear_at_a_time_and_shared_tables_are_offloaded() -> None:
    # The off:llama toy LoRA all-linear (r 16, fp32 adapters, lora_A r x in + lora_B out x r) b1 s1024. One layer's
    # adapters: q 16x256 + 256x16, k and v 16x256 + 128x16 each, o as q, gate and up 16x256 + 704x16 each, down
    # 16x704 + 256x16: 74,752 params, 299,008 B; down_proj's 15,360 params, 61,440 B.
    m = toy("tinyllama-1.1b", LLAMA)
    e = estimate(m, TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=1,
                                 seq_len=1024, activation_offload=True))
    layer = 4 * (2 * (16 * 256 + 256 * 16) + 2 * (16 * 256 + 128 * 16) + 2 * (16 * 256 + 704 * 16) + 16 * 704
                 + 256 * 16)
    down = 4 * (16 * 704 + 256 * 16)
    assert (layer, down) == (299_008, 61_440) and e.gradients == 2 * layer
    # torch autograd's AccumulateGrad writes down_proj's A and B as soon as its nodes have run, before the MLP product
    # node where the layer's backward peaks: the top layer holds those alone, the bottom one the top layer's too (the
    # tracer's gradients at its two peaks, --grid offload-nogc: 61,440 and 360,448 B)
    top_g, top_shared, *_ = _moment(e, "backward.top")
    bottom_g, bottom_shared, *_ = _moment(e, "backward.bottom")
    assert (top_g, bottom_g) == (down, layer + down) == (61_440, 360_448)
    # RoPE cos / sin (2 x 2 B x head_dim 32 per token) are the decoder's locals: with offloading the layers' saved
    # copies are in host RAM, so no backward moment holds them (the trace has none alive at its peak)
    assert (top_shared, bottom_shared) == (0, 0) and _moment(e, "forward.layer")[2] == 2 * 2 * 32 * 1024
    # up_proj's adapter path (peft's cast of the 2 B x 704 gradient to fp32, its scaling) runs after the product
    # node, whose post hook dropped down_proj's copies: back from the host are the product's two 2 B x 704 operands
    # alone, no weight copy (the trace's two empty_strided tensors at its peak)
    assert _moment(e, "backward.top")[2] == _moment(e, "backward.bottom")[2] == 2 * 2 * 704 * 1024 == 2_883_584


def test_query_norm_node_of_an_adapted_qwen3_layer() -> None:
    # The off:qwen3 toy (tests/data/hf/qwen3-0.6b.json cut: hidden 256, 8 heads of 64, 4 kv heads) LoRA q,k,v,o b1
    # s1024: per layer q 16x256 + 512x16 (12,288 params), k and v 16x256 + 256x16 (8,192 each), o 16x512 + 256x16
    # (12,288): 40,960 params, 163,840 B in fp32.
    e = estimate(toy("qwen3-0.6b", QWEN3), TrainingSpec(method="lora", precision="bf16", lora_targets=QKVO,
                                                         batch_size=1, seq_len=1024, activation_offload=True))
    q = 4 * (16 * 256 + 512 * 16)
    assert e.gradients == 2 * 163_840
    # the query norm's backward (Qwen3RMSNorm over q's 512 wide heads: six 4 B x 512 tensors) runs after v_proj's,
    # k_norm's and k_proj's nodes: the top layer has every gradient but q_proj's, beside two 2 B x 256 residual
    # gradients (the trace's peak: 114,688 B of gradients, 13,664,768 B of temporaries with the brought-back rstd)
    top_g, _, top_t = _moment(e, "backward.offload_norm_top")
    assert (top_g, top_t) == (163_840 - q, (6 * 4 * 512 + 2 * 2 * 256) * 1024) == (114_688, 13_631_488)
    # the bottom layer's has the top layer's too, and no residual gradient: its input, the frozen embedding's output,
    # takes none (the trace's bottom q_norm node: 278,528 B of gradients beside 6 x 2,097,152 B fp32 tensors)
    bottom_g, _, bottom_t = _moment(e, "backward.offload_norm")
    assert (bottom_g, bottom_t) == (2 * 163_840 - q, 6 * 4 * 512 * 1024) == (278_528, 12_582_912)
