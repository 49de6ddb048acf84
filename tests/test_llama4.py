"""Llama 4 (issue 15): the published configs read and counted as transformers builds them.

Totals: sum(p.numel()) of transformers 5.24's Llama4ForCausalLM / Llama4ForConditionalGeneration on the meta device,
built from tests/data/hf/llama-4-*.json (the tests below rebuild them when torch is installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramcalc.core.errors import PresetFileError, UnsupportedCombination, VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.params import block_linears, count_params, dense_layers, inventory, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import hf_config_notes, spec_from_hf_config
from vramcalc.io.presets import find_model

HF = Path(__file__).parent / "data" / "hf"
NAMES = ("llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct")


def load(name: str) -> dict:
    return json.loads((HF / f"{name}.json").read_text())


def spec(d: dict, name: str = "llama4"):
    return spec_from_hf_config(d, name, f"tests/data/hf/{name}.json")


def library(d: dict):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    skip = ("architectures", "transformers_version", "torch_dtype", "model_type")
    config = transformers.Llama4Config(**{k: v for k, v in d.items() if k not in skip})
    with torch.device("meta"):
        text = transformers.Llama4ForCausalLM(config.text_config)
        whole = transformers.Llama4ForConditionalGeneration(config)
    return text, whole


@pytest.mark.parametrize("name", NAMES)
def test_text_count_matches_the_library(name: str) -> None:
    d = load(name)
    text, whole = library(d)
    n = sum(p.numel() for p in text.parameters())
    assert count_params(spec(d, name)) == n
    # llama4_text: the same text_config on its own (what a text-only checkpoint names)
    assert count_params(spec({**d["text_config"], "model_type": "llama4_text"}, name)) == n
    # the vision tower and projector are not modelled: the whole model is larger by exactly those
    vision = sum(p.numel() for p in whole.vision_model.parameters()) + sum(
        p.numel() for p in whole.multi_modal_projector.parameters())
    assert sum(p.numel() for p in whole.parameters()) == n + vision


@pytest.mark.parametrize(("name", "total"), [("llama-4-scout", 107_769_861_120),
                                             ("llama-4-maverick", 400_711_848_960)])
def test_presets_match_the_fixture(name: str, total: int) -> None:
    # the presets' fields are the reader's on the fixtures (sums from test_text_count_matches_the_library)
    preset = find_model(name)
    fixture = spec(load(f"{name}-17b-{'16e' if 'scout' in name else '128e'}-instruct"))
    assert count_params(preset) == count_params(fixture) == total
    for field in ("num_experts", "moe_layer_interval", "nope_layer_interval", "attention_chunk_size", "qk_l2_norm",
                  "moe_intermediate_size", "intermediate_size", "shared_expert_intermediate_size"):
        assert getattr(preset, field) == getattr(fixture, field), field


def test_maverick_interleaves_dense_layers() -> None:
    # configuration_llama4.py: moe_layers = range(step - 1, n, step): 24 of 48 MoE layers at step 2, every one at 1
    mav, scout = spec(load(NAMES[1])), spec(load(NAMES[0]))
    assert (dense_layers(mav), dense_layers(scout)) == (24, 0)
    mlp = {lin.module: lin for lin in block_linears(mav)}
    assert (mlp["gate_proj"].out_features, mlp["gate_proj"].count) == (16_384, 24)  # intermediate_size_mlp
    assert (mlp["shared_expert.gate_proj"].out_features, mlp["shared_expert.gate_proj"].count) == (8192, 24)
    assert "router" not in mlp  # Llama4Router: a Parameter of the inventory, never quantized (type is not nn.Linear)
    assert [(t.shape, t.count) for t in inventory(mav) if t.name == "router"] == [((128, 5120), 24)]


def test_lora_targets_as_peft_sees_the_modules() -> None:
    # Llama4TextExperts' gate_up_proj / down_proj are 3-D Parameters (no nn.Linear) and llama4 is no key of peft's
    # MoE conversion: gate/up/down_proj adapt the shared expert (and Maverick's dense MLPs).
    m = spec(load(NAMES[1]))
    names = {lin.module for lin in resolve_targets(m, ("gate_proj", "up_proj", "down_proj"))}
    assert names == {"gate_proj", "up_proj", "down_proj", "shared_expert.gate_proj", "shared_expert.up_proj",
                     "shared_expert.down_proj"}
    assert not any(lin.module.startswith("experts.") for lin in resolve_targets(m, ("q_proj", "down_proj")))


@pytest.mark.parametrize("targets", [("all-linear",), ("q_proj", "router")])
def test_lora_on_the_router_is_refused(targets: tuple[str, ...]) -> None:
    # all-linear takes Llama4Router (an nn.Linear subclass) and peft's lora.Linear.forward then reads `.dtype` of its
    # (scores, logits) tuple: the tracer's step failed with AttributeError, so the estimate refuses it in one line
    with pytest.raises(UnsupportedCombination, match="router"):
        resolve_targets(spec(load(NAMES[0])), targets)


@pytest.mark.parametrize("options", [{"attention": "flash"}, {"mode": "inference"}, {"packing": "packed"},
                                     {"objective": "grpo", "prompt_len": 128, "seq_len": 512, "batch_size": 8}])
def test_runs_not_modelled_are_refused(options: dict) -> None:
    # flash: modeling_llama4.py _supports_flash_attn = False; generate()'s chunked KV cache and packed rows under the
    # chunked mask are not traced (--grid llama4)
    with pytest.raises(VramcalcError, match="llama-4-scout"):
        estimate(find_model("llama-4-scout"), TrainingSpec(**options))


def test_layouts_not_modelled_are_refused() -> None:
    d = load(NAMES[0])
    for key, value, word in (("moe_layers", [0, 2], "moe_layers"), ("no_rope_layers", [0] * 48, "no_rope_layers"),
                             ("attention_dropout", 0.1, "attention_dropout")):
        bad = {**d, "text_config": {**d["text_config"], key: value}}
        with pytest.raises(PresetFileError, match=word):
            spec(bad)


def test_notes_say_the_vision_side_is_not_modelled() -> None:
    assert any("vision tower" in n for n in hf_config_notes(load(NAMES[0])))


def test_checkpointing_needs_no_more_than_without_on_maverick() -> None:
    # Found by hypothesis (test_properties.py test_checkpointing_needs_no_more_than_no_checkpointing): full bf16,
    # b1 x 2,489 tokens was 4,819.9 GB with checkpointing and 4,814.7 GB without, both at the bottom MoE layer's
    # backward. The checkpointed MoE backward kept the recomputed product (E x i per token) the trained down bmm frees:
    # the layer-backward temporaries were 128 experts x 8,192 x 2,489 tokens x 2 bytes = 5,219,811,328 B larger.
    m = find_model("llama-4-maverick")
    run = {"method": "full", "precision": "bf16", "batch_size": 1, "seq_len": 2489}
    on = estimate(m, TrainingSpec(grad_checkpointing=True, **run))  # type: ignore[arg-type]
    off = estimate(m, TrainingSpec(grad_checkpointing=False, **run))  # type: ignore[arg-type]
    assert on.tensor_peak_bytes <= off.tensor_peak_bytes
    assert on.details["temporaries.layer_backward"] == off.details["temporaries.layer_backward"]


# benchmarks/accuracy.py LLAMA4_SHAPES["llama4:maverick"]: the published Maverick text_config at tiny widths (dense
# and MoE layers alternating, 8 experts)
TINY = {"hidden_size": 256, "intermediate_size": 192, "intermediate_size_mlp": 384, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "num_local_experts": 8,
        "attention_chunk_size": 128, "vocab_size": 1024, "max_position_embeddings": 4096}


@pytest.mark.parametrize("gc", [False, True])
def test_traced_full_maverick_layout(gc: bool) -> None:
    # full fine-tuning, b2 s256: the tracer's peak is the bottom MoE layer's backward (with checkpointing its
    # recomputation). Measured +0.78 % without and +0.75 % with checkpointing (--grid llama4); with checkpointing it
    # was +3.83 % while the recomputed layer's saved product was counted through up * act's backward.
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    d = load(NAMES[1])
    m = spec({**d, "text_config": {**d["text_config"], **TINY}}, "maverick")
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=256, grad_checkpointing=gc)
    r, b = trace(m, t), estimate(m, t)
    assert -0.02 < (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase == "backward"
