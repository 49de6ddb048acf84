"""DoRA (peft use_dora) under the Trainer's autocast over 16-bit weights, --precision autocast-bf16 --dora (issue 13;
core/memory/activations.py _dora_saved, _dora_norm_bytes, dora_norm_per_token; core/memory/upcast_norms.py
check_recipe, AUTOCAST_DORA_FAMILIES; --grid autocast-dora)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import dora_forward_transient, layer_activations
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (presets, its config.json): hidden 2,048, 4 KV heads x 64 = 256 for k/v, intermediate 5,632
HIDDEN, KV, INTER = 2_048, 256, 5_632
RANK = 16


def _dora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "dora": True, "lora_rank": RANK, "lora_targets": ("all-linear",),
                           "precision": "autocast-bf16", "batch_size": 2, "seq_len": 1024, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tinyllama() -> ModelSpec:
    return presets.find_model("tinyllama-1.1b")


@pytest.fixture(scope="module")
def tinyllama_cut(tinyllama: ModelSpec) -> ModelSpec:
    # --grid autocast-dora's "dequant:tinyllama-1.1b": 4 layers and a 2,048-token vocabulary (the peak in the layers)
    return replace(tinyllama, num_layers=4, vocab_size=2_048)


def _saved(m: ModelSpec, t: TrainingSpec) -> dict[str, int]:
    layer = layer_activations(m, t, RECIPES[t.precision], trainable_weights=False, input_grad=True)  # type: ignore[index]
    return {x.name: x.per_token for x in layer.terms}


def test_dora_saves_16_bit_lora_outputs_under_autocast(tinyllama: ModelSpec) -> None:
    # peft tuners/lora/dora.py DoraLinearLayer.forward: `mag_norm_scale * lora_result` saves lora_B's output and
    # `(mag_norm_scale - 1) * base_result` the base output; under autocast lora_B is an autocast matmul (torch
    # autocast_mode.cpp: linear on the lower-precision list), so both are bf16 (2 + 2 B x out_features per token),
    # where the 16-bit run without autocast keeps lora_B's output in the fp32 adapter dtype (2 + 4 B)
    auto, plain = _saved(tinyllama, _dora()), _saved(tinyllama, _dora(precision="bf16"))
    for mod, out in (("q_proj", HIDDEN), ("k_proj", KV), ("down_proj", HIDDEN), ("gate_proj", INTER)):
        name = f"dora {mod} (base and lora outputs, norm scale)"
        assert auto[name] == (2 + 2) * out
        assert plain[name] == (2 + 4) * out


def test_dora_biased_projection_saves_a_16_bit_base_output() -> None:
    # Qwen2.5-0.5B's q/k/v carry biases (hidden 896): `base_result - bias` with the frozen bias in bf16 stays bf16
    # under autocast over 16-bit weights (amp-bf16's fp32 bias promotes it to fp32 instead)
    qwen = presets.find_model("qwen2.5-0.5b")
    assert _saved(qwen, _dora())["dora q_proj (base and lora outputs, norm scale)"] == (2 + 2) * 896


def test_dora_weight_norm_under_autocast_matches_the_traced_tensors(tinyllama: ModelSpec) -> None:
    # down_proj (in 5,632, out 2,048, r 16), the largest: at get_weight_norm's sum the tracer's live tensors (--grid
    # autocast-dora "dequant:tinyllama-1.1b | dora lora | b2 s1024 | no-gc") hold eye(5,632)'s bf16 cast kept by
    # lora_A's graph (63,438,848 B), lora_A's bf16 output (180,224 B), and four fp32 in x out tensors of 46,137,344 B:
    # lora_weight copied back to fp32, the bf16 weight's fp32 copy, scaling * lora_weight and the sum
    traced = 63_438_848 + 180_224 + 4 * 46_137_344
    graph = 2 * INTER * INTER + 2 * INTER * RANK
    assert graph + 4 * 4 * INTER * HIDDEN == traced == 248_168_448
    t = _dora()
    assert dora_forward_transient(tinyllama, t, RECIPES["autocast-bf16"]) == traced


def test_dora_weight_norm_runs_beside_the_modules_forward_path(tinyllama: ModelSpec) -> None:
    # ... beside (the same live tensors, per token): the 16-bit product act(gate) * up (2 x 5,632), peft's fp32 copy
    # of it (4 x 5,632), down_proj's base output (2 x 2,048), the normed MLP input, the post-attention residual and the
    # embeddings' output (2 x 2,048 each)
    t = _dora()
    layer = layer_activations(tinyllama, t, RECIPES["autocast-bf16"], trainable_weights=False, input_grad=True)
    assert layer.dora_norm_per_token == 2 * INTER + 4 * INTER + 4 * 2 * HIDDEN == 50_176
    # of which the saved set counts down_proj's own terms, not made yet: lora_A's bf16 input cast (2 x 5,632 + 2 x r)
    # and the dora term (base + lora_B outputs, 4 x 2,048)
    assert layer.dora_norm_unmade_per_token == 2 * (INTER + RANK) + 4 * HIDDEN == 19_488
    plain = layer_activations(tinyllama, _dora(precision="bf16"), RECIPES["bf16"], trainable_weights=False,
                              input_grad=True)
    # without autocast the weight norm's moment stands alone (--grid lora-variants)
    assert plain.dora_norm_per_token == 0


@pytest.mark.parametrize(("gc", "traced"), [(False, 2_076_193_792), (True, 1_128_081_408)], ids=["no-gc", "gc"])
def test_estimate_within_one_percent_of_the_trace(tinyllama_cut: ModelSpec, gc: bool, traced: int) -> None:
    # measured: --grid autocast-dora "dequant:tinyllama-1.1b | dora lora | autocast-bf16 | b2 s1024" (the tracer's
    # peak; benchmarks/results/trace_cache_autocast-dora.json). Before the autocast DoRA terms: +13.56 % / +12.64 %.
    b = estimate(tinyllama_cut, _dora(grad_checkpointing=gc))
    assert abs(b.tensor_peak_bytes - traced) / traced < 0.01


def test_lifted_for_llama_mistral_qwen2(tinyllama: ModelSpec) -> None:
    for name in ("tinyllama-1.1b", "mistral-7b", "qwen2.5-0.5b"):
        for dropout in (0.0, 0.05):
            estimate(presets.find_model(name), _dora(seq_len=128, lora_dropout=dropout))
            estimate(presets.find_model(name),
                     _dora(seq_len=128, lora_dropout=dropout, method="qlora", kbit_prep=False))


def test_dora_dropout_saves_a_16_bit_cast_of_the_weight(tinyllama: ModelSpec) -> None:
    # peft DoraLinearVariant.forward with dropout: base_result = F.linear(dropout(x), W.to(fp32)); under autocast
    # F.linear casts that fp32 copy back to bf16 (a non-leaf: not cached) and saves it for the input's gradient: 2 B x
    # in x out per module whose input needs a gradient (the fp32 copy, 4 B, without autocast); lora_B's output and the
    # base product are bf16 (2 + 2 B x out per token)
    t = _dora(lora_dropout=0.05)
    layer = layer_activations(tinyllama, t, RECIPES["autocast-bf16"], trainable_weights=False, input_grad=True)
    q = next(x for x in layer.terms if x.name.startswith("dora q_proj"))
    assert q.per_token == (2 + 2) * HIDDEN
    assert q.const == 2 * HIDDEN * HIDDEN + 3 * 4 * HIDDEN  # the cast, and weight_norm, the scale and its - 1 (fp32)


@pytest.mark.parametrize(("model", "kw"), [
    ("gpt2", {}),  # traced: -2.6 .. -6.3 % (its checkpointed rerun at c_proj's DoRA output muls)
    ("tinyllama-1.1b", {"objective": "dpo"}),
    ("tinyllama-1.1b", {"loss": "chunked"}),
    ("tinyllama-1.1b", {"method": "qlora", "kbit_prep": False, "quant_bits": 8}),
], ids=["gpt2", "dpo", "chunked", "qlora-8bit"])
def test_refused_where_not_traced(model: str, kw: dict[str, object]) -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(presets.find_model(model), _dora(seq_len=128, **kw))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("--precision autocast-bf16 is not modelled with --dora beyond SFT with --loss hf")
    assert msg.endswith("use --precision bf16 (16-bit, no autocast) or amp-bf16")


def test_llama_factory_dora_file_maps_to_autocast(tmp_path: Path) -> None:
    # hiyouga/LLaMA-Factory: finetuning_type lora, use_dora, bf16: fp32 adapters and magnitudes over a bf16 load, the
    # step under the Trainer's autocast (io/runfiles.py _autocast16 accepts it once check_recipe does)
    f = tmp_path / "lf.yaml"
    f.write_text("model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: lora\nlora_target: all\n"
                 "use_dora: true\nbf16: true\n")
    run = runfiles.load(str(f))[0]
    assert (run.options["precision"], run.options["dora"]) == ("autocast-bf16", True)
    assert not any("is not modelled here" in n for n in run.notes)
