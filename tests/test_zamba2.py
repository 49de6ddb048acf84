"""Zamba2 (issue 15): Mamba-2 layers and shared attention blocks with per-invocation projectors, counted exactly;
the step's memory refused in one line (memory/zamba2.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, zamba2
from vramcalc.core.params import count_params, is_hybrid, lora_params, zamba2_blocks
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
NAMES = ("zamba2-1.2b", "zamba2-2.7b", "zamba2-7b")
FIXTURES = {n: json.loads((HF / f"{n}.json").read_text()) for n in NAMES}
# Cut shapes for the library comparison: 6 layers, shared blocks at 1, 3 and 4 (num_mem_blocks 2: blocks A, B, A)
TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 6, "num_attention_heads": 4,
        "num_key_value_heads": 4, "n_mamba_heads": 4, "mamba_headdim": 32, "mamba_d_state": 16, "mamba_ngroups": 2,
        "adapter_rank": 8, "num_mem_blocks": 2, "vocab_size": 512, "chunk_size": 32,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba"], "hybrid_layer_ids": [1, 3, 4]}
VARIANTS = {
    "published-1.2b": ("zamba2-1.2b", {}),
    "published-2.7b": ("zamba2-2.7b", {}),
    "published-7b": ("zamba2-7b", {}),
    "tiny-attention-adapters": ("zamba2-2.7b", {**TINY, "use_shared_attention_adapter": True}),
    "tiny-bias": ("zamba2-2.7b", {**TINY, "add_bias_linear": True}),
    # untied: transformers ties no shared block either, each hybrid layer keeps a copy with its block's projectors
    "tiny-untied": ("zamba2-2.7b", {**TINY, "tie_word_embeddings": False}),
    "tiny-untied-adapters-3-blocks": ("zamba2-2.7b", {**TINY, "tie_word_embeddings": False, "num_mem_blocks": 3,
                                                      "use_shared_attention_adapter": True}),
    # more weight sets than hybrid layers: only as many as are invoked are built
    "tiny-gqa-4-blocks": ("zamba2-7b", {**TINY, "num_key_value_heads": 2, "num_mem_blocks": 4,
                                        "use_shared_attention_adapter": False}),
    "tiny-no-hybrid": ("zamba2-2.7b", {**TINY, "layers_block_type": ["mamba"] * 6, "hybrid_layer_ids": []}),
}


def spec(name: str, shape: dict[str, object] | None = None):
    return spec_from_hf_config({**FIXTURES[name], **(shape or {})}, name, "tests/test_zamba2.py")


@pytest.mark.parametrize(("name", "shape"), VARIANTS.values(), ids=list(VARIANTS))
def test_count_matches_the_library(name: str, shape: dict[str, object]) -> None:
    # sum(p.numel()) of Zamba2ForCausalLM on the meta device: parameters() yields the tied shared blocks once
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {**FIXTURES[name], **shape}
    config = transformers.Zamba2Config(**{k: v for k, v in d.items()
                                          if k not in ("architectures", "model_type", "torch_dtype")})
    with torch.device("meta"):
        model = transformers.Zamba2ForCausalLM(config)
    assert count_params(spec(name, shape)) == sum(p.numel() for p in model.parameters())


def test_fixtures_read_as_typed() -> None:
    # the README's shapes: hidden, layers, shared-block invocations, weight sets, projectors on the attention, RoPE
    got = {n: (m.hidden_size, m.num_layers, len(m.zamba_hybrid_layers), zamba2_blocks(m), m.zamba_attention_adapters,
               m.zamba_mem_rope, m.mixer_intermediate_size // m.mixer_head_dim, m.head_dim)
           for n, m in ((n, spec(n)) for n in NAMES)}
    assert got == {"zamba2-1.2b": (2048, 38, 6, 1, True, True, 64, 128),
                   "zamba2-2.7b": (2560, 54, 9, 2, False, False, 80, 160),
                   "zamba2-7b": (3584, 81, 13, 2, False, True, 112, 224)}
    assert not any(is_hybrid(spec(n)) for n in NAMES)  # not Falcon-H1's layout


def test_shared_weights_counted_once() -> None:
    # 2.7B: 9 invocations of 2 weight sets. A third set would add its q, k, v (2h x 2h each), o (2h -> h), gate_up
    # (h -> 2 x 10240), down (10240 -> h) and two norms (2h, h); the projectors stay one per invocation
    m = spec("zamba2-2.7b")
    h, f = 2560, 10240
    three = spec("zamba2-2.7b", {"num_mem_blocks": 3})
    assert count_params(three) - count_params(m) == 3 * 4 * h * h + 2 * h * h + 3 * h * f + 3 * h


def test_presets_equal_the_fixtures() -> None:
    for n in NAMES:
        m = presets.find_model(n)
        assert count_params(m) == m.published_parameters == count_params(spec(n))
    assert presets.find_model("Zyphra/Zamba2-7B-Instruct").name == "zamba2-7b"


@pytest.mark.parametrize(("shape", "words"), [
    ({"layers_block_type": ["mamba", "attention"], "num_hidden_layers": 2}, "layers_block_type"),
    ({"num_hidden_layers": 53}, "layers_block_type"),
    ({"mamba_headdim": 32}, "mamba_headdim 32"),
    ({"hybrid_layer_ids": [6]}, "hybrid_layer_ids"),
    ({"n_mamba_heads": 7, "mamba_headdim": None}, "multiple of n_mamba_heads"),
    ({"num_key_value_heads": 8, "use_shared_attention_adapter": True}, "num_key_value_heads 8"),
    ({"head_dim": 80}, "head_dim 80"),
])
def test_reader_refuses_what_the_library_would_not_build(shape: dict[str, object], words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        spec("zamba2-2.7b", shape)


def test_spec_checks_the_layout() -> None:
    from dataclasses import replace

    m = spec("zamba2-2.7b")
    with pytest.raises(SpecError, match="zamba_hybrid_layers"):
        replace(m, zamba_hybrid_layers=(60,))
    with pytest.raises(SpecError, match="head_dim"):
        replace(m, head_dim=80)
    with pytest.raises(SpecError, match="family zamba2"):
        replace(m, family="mamba2")


@pytest.mark.parametrize(("run", "words"), [
    ({"mode": "inference"}, "generate\\(\\) for Zamba2"),
    ({"precision": "amp-bf16"}, "autocast"),
    ({"gpus_per_node": 2}, "several GPUs"),
])
def test_what_is_not_modelled_is_refused_in_one_line(run: dict[str, object], words: str) -> None:
    with pytest.raises(UnsupportedCombination, match=words):
        estimate(presets.find_model("zamba2-2.7b"), TrainingSpec(**run))


@pytest.mark.parametrize("shape", [TINY, {**TINY, "num_mem_blocks": 1, "tie_word_embeddings": False}],
                         ids=["block-run-once", "untied"])
def test_qlora_with_an_untied_shared_block_is_refused(shape: dict[str, object]) -> None:
    # TINY's second weight set runs at one hybrid layer only (blocks A, B, A): not a tied key, so bitsandbytes would
    # quantize it; untied, every copy would be
    with pytest.raises(UnsupportedCombination, match="every shared block is tied"):
        estimate(spec("zamba2-2.7b", shape), TrainingSpec(method="qlora"))


def _library_converted(name: str, shape: dict[str, object]):
    """The nn.Linear modules transformers' bitsandbytes quantizer converts in Zamba2ForCausalLM built on meta
    (integrations/bitsandbytes.py replace_with_bnb_linear: `type(module) is nn.Linear` that quantizers_utils.py
    should_convert_module keeps against quantizers/base.py get_modules_to_not_convert), and the model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    d = {**FIXTURES[name], **shape}
    config = transformers.Zamba2Config(**{k: v for k, v in d.items()
                                          if k not in ("architectures", "model_type", "torch_dtype")})
    with torch.device("meta"):
        model = transformers.Zamba2ForCausalLM(config)
    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    return [mod for n, mod in model.named_modules()
            if type(mod) is torch.nn.Linear and should_convert_module(n, skip)], model


@pytest.mark.parametrize("name", NAMES)
def test_qlora_quantizes_what_bitsandbytes_converts(name: str) -> None:
    # the published shapes (every shared block tied): only in_proj, out_proj and the hybrid layers' `linear`
    from vramcalc.core.params import zamba2_quantized

    converted, _ = _library_converted(name, {})
    m = spec(name)
    ours = zamba2_quantized(m)
    assert sum(lin.count for lin in ours) == len(converted)
    assert sum(lin.in_features * lin.out_features * lin.count for lin in ours) == sum(
        mod.weight.numel() for mod in converted)
    from vramcalc.core.memory.precision import recipe_of
    from vramcalc.core.memory.weights import weight_bytes

    t = TrainingSpec(method="qlora")
    assert weight_bytes(m, t, recipe_of(t)).quantized_params == sum(mod.weight.numel() for mod in converted)


def test_tracer_quantizes_what_bitsandbytes_converts() -> None:
    # trace/_hf.py quantize_blocks on the library's model: the same modules as the quantizer's rule
    from vramcalc.trace._hf import find_layers, quantize_blocks

    torch = pytest.importorskip("torch")
    shape = {**TINY, "num_mem_blocks": 1}
    converted, model = _library_converted("zamba2-2.7b", shape)
    n = quantize_blocks(model, find_layers(model, 6), 4, True, torch.bfloat16)
    assert n == len(converted) == 6 * 2 + 3  # in_proj and out_proj of 6 layers, `linear` of 3 hybrid layers


def tiny(shape: dict[str, object]):
    return spec_from_hf_config({**FIXTURES["zamba2-2.7b"], **shape}, "zamba2-tiny", "tests/test_zamba2.py")


@pytest.mark.parametrize("run", [{"method": "full"}, {"method": "lora"}, {"method": "lora", "grad_checkpointing": True},
                                 {"method": "full", "grad_checkpointing": True}])
def test_layers_by_kind_sum_exactly(run: dict[str, object]) -> None:
    # the plan counts num_layers x a hybrid layer's set less layered_less: that is the sum of each layer's own kind
    # (the bottom moment's layer aside), whatever the layout
    from vramcalc.core.memory.precision import recipe_of

    m = tiny({**TINY, "layers_block_type": ["hybrid", "mamba", "mamba", "hybrid", "mamba", "mamba"],
              "hybrid_layer_ids": [0, 3]})
    t = TrainingSpec(**run, batch_size=2, seq_len=64)
    recipe = recipe_of(t)
    tw = t.method == "full"
    top = zamba2.layer_activations(m, t, recipe, tw).components()
    kinds = [zamba2.kind_activations(m, t, recipe, tw, i in (0, 3)).components() for i in range(6)]
    (lt, lts, lb, lc), _ = zamba2.layered_less(m, t, recipe, tw, True)
    assert (6 * top[0] - lt, 6 * top[1] - lts, 6 * top[2] - lb, 6 * top[3] - lc) == \
        tuple(sum(k[j] for k in kinds) for j in range(4))
    assert all(x >= y for x, y in zip(top, kinds[1], strict=True))  # a hybrid layer saves no less than a Mamba one


def test_projector_adapters_of_other_invocations_get_no_state() -> None:
    # all-linear: each hybrid layer's copy of a block holds c_b projectors (2.7B: blocks of 5 and 4 invocations, 41
    # copies of each projector Linear) and runs one; AdamW keeps state for the 9 that run (measured with the tracer,
    # --grid zamba2 lora all-linear: optimizer state exact with them left out, +11.2 % with them in)
    m = presets.find_model("zamba2-2.7b")
    t = TrainingSpec(method="lora", lora_targets=("all-linear",), lora_rank=8)
    idle = zamba2.idle_lora_tensors(m, t)
    assert sorted(n for _, n in idle) == [32, 32, 32, 32]  # lora_A and lora_B of adapter_in and adapter_out
    assert {s for s, _ in idle} == {(8, 2560), (128, 8), (8, 128), (20480, 8)}
    b = estimate(m, t)
    idle_params = sum(a * c * n for (a, c), n in idle)
    # AdamW: two fp32 moments per trained adapter parameter (memory/optimizer.py), the idle ones left out
    assert b.optimizer_state == 8 * (lora_params(m, t.lora_targets, 8) - idle_params)
    assert b.trainable_parameters == lora_params(m, t.lora_targets, 8) - idle_params
    assert any("never run" in n for n in b.notes)


def test_checkpointing_keeps_the_clone_and_rope_once() -> None:
    # memory/zamba2.py once_per_token: 2 x 2 B x head_dim (2 x 2048 / 32 = 128) with use_mem_rope, and the embeddings'
    # clone (2 B x 2048) when each layer's checkpoint keeps it
    from vramcalc.core.memory.precision import recipe_of

    m = presets.find_model("zamba2-1.2b")
    off, on = TrainingSpec(), TrainingSpec(grad_checkpointing=True)
    assert zamba2.once_per_token(m, off, recipe_of(off)) == 2 * 2 * 128
    assert zamba2.once_per_token(m, on, recipe_of(on)) == 2 * 2 * 128 + 2 * 2048
    assert zamba2.once_per_token(presets.find_model("zamba2-2.7b"), off, recipe_of(off)) == 0  # no mem RoPE


def test_cli_estimates_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["show", "zamba2-1.2b", "--format", "json"], capsys)
    assert code == 0 and "1215064704" in out.replace(",", "").replace("_", "")
    code, out, _ = invoke(["estimate", str(HF / "zamba2-7b.json"), "--method", "lora", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 7_356_749_648
    code, out, _ = invoke(["explain", "zamba2-2.7b", "--grad-checkpointing"], capsys)
    assert code == 0 and "inner checkpoint's input" in out and "embeddings' clone" in out
    code, _, err = invoke(["estimate", "zamba2-2.7b", "--mode", "inference"], capsys)
    assert code == 2 and "Zamba2" in err and err.count("\n") == 1
    code, out, _ = invoke(["estimate", "zamba2-2.7b", "--method", "qlora", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 2_662_214_560


# --grid zamba2's shape B (benchmarks/accuracy.py ZAMBA2_SHAPES): hidden 128, 4 heads of 64 over 2 x hidden, MLP 384,
# mixer 256 in 8 heads, state 16, 2 groups, chunk 48 (two chunks at 64 tokens), projectors on q, k, v (rank 8), RoPE
SHAPE_B = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 5, "num_attention_heads": 4,
           "num_key_value_heads": 4, "n_mamba_heads": 8, "mamba_headdim": 32, "mamba_d_state": 16, "mamba_ngroups": 2,
           "chunk_size": 48, "adapter_rank": 8, "num_mem_blocks": 2, "use_shared_attention_adapter": True,
           "use_mem_rope": True, "vocab_size": 2048,
           "layers_block_type": ["mamba", "hybrid", "hybrid", "mamba", "hybrid"], "hybrid_layer_ids": [1, 2, 4]}


@pytest.mark.parametrize(("hybrid", "trained", "measured"), [
    (True, True, 4_734_354), (True, False, 3_935_602), (False, True, 3_641_746), (False, False, 3_178_866)])
def test_one_layer_saved_set_is_measured(hybrid: bool, trained: bool, measured: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one layer of shape B
    # (layer 1, a Zamba2HybridLayer; layer 0, a Zamba2MambaDecoderLayer; transformers 5.24, bf16, sdpa) runs forward
    # on CPU at batch 2 x 64 tokens, its input and the embeddings' clone bf16 with requires_grad, parameters, buffers
    # and the RoPE tables excluded; `trained` False: the layer's parameters frozen
    from vramcalc.core.memory.precision import recipe_of

    m = tiny(SHAPE_B)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert zamba2.kind_activations(m, t, recipe_of(t), trained, hybrid).saved(128, 64) == measured


def test_trace_matches_the_estimate() -> None:
    # --grid zamba2 "h128-l4-g13-b1-f256-q64 | lora auto | b2 s64 | gc" (+0.41 % there): the tracer builds
    # Zamba2ForCausalLM from the cut config, peft wraps each hybrid layer's copy of q_proj / v_proj
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = tiny({**SHAPE_B, "intermediate_size": 256, "num_hidden_layers": 4, "mamba_ngroups": 1, "chunk_size": 64,
              "adapter_rank": 16, "num_mem_blocks": 1, "use_shared_attention_adapter": False, "use_mem_rope": False,
              "vocab_size": 1024, "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
              "hybrid_layer_ids": [1, 3]})
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64, grad_checkpointing=True)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(trace(m, t).peak_bytes, rel=0.02)


def test_qlora_trace_matches_the_estimate() -> None:
    # --grid zamba2 "h128-l4-g13-b1-f256-q64 | qlora auto | b2 s128 | gc" (-1.57 % there, the grid's worst): nf4
    # in_proj / out_proj / linear, the tied shared block 16-bit
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = tiny({**SHAPE_B, "intermediate_size": 256, "num_hidden_layers": 4, "mamba_ngroups": 1, "chunk_size": 64,
              "adapter_rank": 16, "num_mem_blocks": 1, "use_shared_attention_adapter": False, "use_mem_rope": False,
              "vocab_size": 1024, "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
              "hybrid_layer_ids": [1, 3]})
    t = TrainingSpec(method="qlora", precision="bf16", kbit_prep=False, batch_size=2, seq_len=128,
                     grad_checkpointing=True)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(trace(m, t).peak_bytes, rel=0.02)
