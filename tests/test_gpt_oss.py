"""gpt-oss (issue 15): what vramcalc models of transformers 5.24's GptOssForCausalLM and what it refuses.

Counts are checked in tests/test_hf_config.py; the activations against the tracer in benchmarks/accuracy.py
--grid gptoss (benchmarks/results/accuracy_gptoss.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import eager_only, layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import count_params, lora_params, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def _spec(name: str = "gpt-oss-20b"):
    return spec_from_hf_config(json.loads((HF / f"{name}.json").read_text()), name, f"tests/data/hf/{name}.json")


def test_preset_is_the_published_config() -> None:
    # presets/models/finetune_2025.yaml against the fixture read by io/hf_config.py: the same architecture
    for name in ("gpt-oss-20b", "gpt-oss-120b"):
        assert count_params(presets.find_model(name)) == count_params(_spec(name))
        assert presets.find_model(f"openai/{name}").name == name


def test_sdpa_is_counted_as_eager_with_a_note() -> None:
    # GptOssPreTrainedModel._supports_sdpa = False: transformers falls back to eager without attn_implementation
    m = _spec()
    assert eager_only(m)
    t = TrainingSpec(method="lora", seq_len=1024)
    sdpa, eager = estimate(m, t), estimate(m, replace(t, attention="eager"))
    assert sdpa.tensor_peak_bytes == eager.tensor_peak_bytes
    assert any("gpt-oss's attention sinks" in n for n in sdpa.notes)
    assert any("Mxfp4Config(dequantize=True)" in n for n in sdpa.notes)


def test_sink_column_and_max_indices() -> None:
    # eager_attention_forward: one more key column per head in the bf16 softmax output, and max's int64 indices:
    # (2 + 8) B x 64 heads per token per layer
    m = _spec()
    t = TrainingSpec(method="lora", seq_len=1024)
    terms = {x.name: x for x in layer_activations(m, t, recipe_of(t), trainable_weights=False).terms}
    assert terms["eager attention sinks (extra softmax column, max indices)"].per_token == (2 + 8) * 64
    assert terms["eager scores (softmax output = probs)"].per_token_seq == 2 * 64


def test_moe_saved_set_per_token() -> None:
    # _gpt_oss_moe_terms, LoRA (experts frozen), bf16: k = 4 copies of the gate_up output (2 x 2880), the clamped
    # SwiGLU's four tensors (4 x 2880) and the down output + routing weight (2880 + 1), in 2 bytes; the router's
    # logits (32 experts), top-k indices and softmax; three int64 index vectors of k
    m = _spec()
    t = TrainingSpec(method="lora", seq_len=1024)
    terms = {x.name: x.per_token for x in layer_activations(m, t, recipe_of(t), trainable_weights=False).terms}
    assert terms["experts gate_up output (clamp inputs)"] == 4 * 2 * 2 * 2880
    assert terms["experts clamped SwiGLU (gate, sigmoid, up + 1, glu)"] == 4 * 4 * 2 * 2880
    assert terms["experts down output, routing weight"] == 4 * 2 * (2880 + 1)
    assert terms["router logits, top-k indices and softmax"] == 2 * 32 + 8 * 4 + 2 * 4
    assert terms["expert routing indices (int64)"] == 8 * 4 * 3
    assert "experts grouped_mm inputs (gathered hidden, gated output)" not in terms
    full = {x.name: x.per_token for x in layer_activations(m, replace(t, method="full"), recipe_of(t),
                                                           trainable_weights=True).terms}
    assert full["experts grouped_mm inputs (gathered hidden, gated output)"] == 4 * 2 * (2880 + 2880)
    assert full["expert routing indices (int64)"] == 8 * 4 * 4


def test_lora_targets_are_the_attention_projections() -> None:
    # peft's target_modules find nn.Linear modules: q/k/v/o_proj; GptOssExperts' gate_up_proj / down_proj are
    # Parameters. all-linear: 24 layers x r16 x (2880 + 4096 | 512 | 512 | 4096 + 2880)
    m = _spec()
    assert {lin.module for lin in resolve_targets(m, ("all-linear",))} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert lora_params(m, ("all-linear",), 16) == 24 * 16 * ((2880 + 4096) * 2 + (2880 + 512) * 2)
    with pytest.raises(UnsupportedCombination, match="experts are Parameters"):
        resolve_targets(m, ("gate_up_proj",))


@pytest.mark.parametrize(("kw", "match"), [({"attention": "flash"}, "sink-aware hub kernel"),
                                           ({"mode": "inference"}, "pass --attention eager")])
def test_refused_runs(kw: dict, match: str) -> None:
    with pytest.raises(UnsupportedCombination, match=match):
        estimate(_spec(), TrainingSpec(**kw))


def test_qlora_quantizes_the_attention_only() -> None:
    # from a bf16 checkpoint bitsandbytes replaces nn.Linear modules: q/k/v/o_proj; the experts (3-D Parameters) and
    # the router (a Parameter) stay 16-bit (traced: benchmarks/accuracy.py --grid gptoss-qlora, median 0.05 %)
    m = _spec()
    bf16 = TrainingSpec(method="lora", precision="bf16", attention="eager")
    q = estimate(m, TrainingSpec(method="qlora", precision="bf16", attention="eager", kbit_prep=False))
    attention = 24 * (2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880)  # q, k, v, o per layer (no biases counted here)
    saved = estimate(m, bf16).weights - q.weights
    # the attention's 2 B per element become NF4's half byte plus its double-quantized constants
    assert 1.4 * attention < saved < 1.5 * attention
    assert any(n.startswith("gpt-oss QLoRA: bitsandbytes quantizes the attention projections only") for n in q.notes)
