"""A DPO/KTO reference loaded with settings of its own (issue 13: TRL's ref_model_init_kwargs): --ref-dtype and
--ref-quant 4bit in memory/preference.py, by hand, against the tracer, and from run files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

QWEN = presets.find_model("qwen2.5-0.5b")  # hidden 896, intermediate 4,864, 14 heads / 2 kv of 64, 24 layers


def test_four_bit_reference_weights_by_hand() -> None:
    base = TrainingSpec(objective="dpo", precision="pure-bf16", batch_size=1, seq_len=512, prompt_len=128)
    pre = estimate(QWEN, replace(base, ref_model="precomputed"))
    q4 = estimate(QWEN, replace(base, ref_quant="4bit"))
    # Qwen2.5-0.5B config.json: per layer q_proj and o_proj 896 × 896, k_proj and v_proj 896 × 128 (2 kv heads × 64),
    # gate/up/down 896 × 4,864; bitsandbytes quantize_4bit: n / 2 packed bytes and one fp32 absmax per 64 elements
    # (every n here is a multiple of 64), no double quantization (BitsAndBytesConfig's default).
    per_layer = 2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864
    quantized = 24 * per_layer
    packed = quantized // 2 + 4 * (quantized // 64)
    # the rest (embed_tokens, tied to lm_head, the norms, the q/k/v biases) stays in the reference's dtype, bf16
    expected = packed + (count_params(QWEN) - quantized) * 2
    assert q4.details["weights.reference"] == expected
    assert q4.weights - pre.weights == expected
    fp32_rest = estimate(QWEN, replace(base, ref_quant="4bit", ref_dtype="fp32"))
    assert fp32_rest.details["weights.reference"] == packed + (count_params(QWEN) - quantized) * 4


def test_reference_forward_follows_its_own_dtype() -> None:
    # pure-bf16 policy: an fp32 reference computes in fp32 (twice the no-grad layer's bytes of the bf16 one); a
    # 4-bit one adds the dequantized weight of its largest Linear (memory/preference.py nograd_layer_bytes).
    base = TrainingSpec(objective="dpo", precision="pure-bf16", batch_size=2, seq_len=512, prompt_len=128)
    ref = {d: estimate(QWEN, replace(base, ref_dtype=d)).details["temporaries.reference_forward"]
           for d in ("bf16", "fp32")}
    q4 = estimate(QWEN, replace(base, ref_quant="4bit")).details["temporaries.reference_forward"]
    assert ref["fp32"] > ref["bf16"]
    assert q4 - ref["bf16"] == 2 * 896 * 4864  # gate/up_proj dequantized to bf16 beside the layer's operands
    # amp-bf16 (fp32 weights, autocast): a bf16 reference runs without autocast copies and with a bf16 stream
    amp = replace(base, precision="amp-bf16")
    assert estimate(QWEN, replace(amp, ref_dtype="bf16")).details["temporaries.reference_forward"] < \
        estimate(QWEN, amp).details["temporaries.reference_forward"]


# A small llama (2 layers, hidden 256, 4 heads / 2 kv): grouped kv heads send an fp32 sdpa to CUDA's math path.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                  intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("kw", [
    {"precision": "pure-bf16", "ref_quant": "4bit"},
    {"precision": "pure-bf16", "ref_dtype": "fp32"},
    {"precision": "amp-bf16", "ref_dtype": "bf16"},
], ids=["bf16-policy-4bit-ref", "bf16-policy-fp32-ref", "amp-policy-bf16-ref"])
def test_reference_of_its_own_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "dpo", "batch_size": 2, "seq_len": 512, "prompt_len": 128, **kw})  # type: ignore[arg-type]
    e = estimate(SMALL, t)
    r = trace(SMALL, t)
    # the bounds: never under the trace by more than 2 %, over by at most 5 %
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)
    # the weights, both models': the trace's parameters and buffers (the 4-bit absmax are buffers there), within
    # its 512 B rounding of each storage and bitsandbytes' 16-entry fp32 code table per quantized Linear
    stored = r.by_category_at_peak["parameters"] + r.by_category_at_peak["buffers"]
    assert abs(e.weights - stored) <= 0.001 * stored, (e.weights, stored)


@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "sft", "ref_quant": "4bit"}, "--ref-quant quantizes the frozen reference copy"),
    ({"objective": "dpo", "method": "lora", "ref_quant": "4bit"}, "--ref-quant quantizes the frozen reference copy"),
    ({"objective": "dpo", "ref_model": "precomputed", "ref_quant": "4bit"}, "--ref-quant quantizes"),
])
def test_ref_quant_without_a_copy_is_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainingSpec(**kw)  # type: ignore[arg-type]


def test_four_bit_fp32_reference_under_autocast_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedCombination, match="give --ref-dtype bf16"):
        estimate(QWEN, TrainingSpec(objective="dpo", precision="amp-bf16", ref_quant="4bit"))
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "dpo", "--precision", "amp-bf16",
                             "--ref-quant", "4bit"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- run files ----------------------------------------------------------------------------------------------
DPO = "output_dir: o\nbeta: 0.1\nbf16: true\nmodel_init_kwargs:\n  dtype: bfloat16\nref_model_init_kwargs:\n"


def _load(tmp_path: Path, body: str) -> runfiles.Run:
    f = tmp_path / "dpo.yaml"
    f.write_text(DPO + body)
    return runfiles.load(str(f))[0]


def test_ref_model_init_kwargs_mapped(tmp_path: Path) -> None:
    run = _load(tmp_path, "  torch_dtype: float32\n  attn_implementation: sdpa\n  trust_remote_code: true\n")
    assert run.options["ref_dtype"] == "fp32" and "ref_quant" not in run.options
    assert "ref_model_init_kwargs" in run.mapped and run.unmodelled == []
    run = _load(tmp_path, "  dtype: bfloat16\n  quantization_config:\n    load_in_4bit: true\n"
                          "    bnb_4bit_quant_type: fp4\n    bnb_4bit_compute_dtype: bfloat16\n")
    assert (run.options["ref_dtype"], run.options["ref_quant"]) == ("bf16", "4bit")
    # no dtype: the 4-bit reference keeps the policy's bf16; bitsandbytes' default fp32 compute dtype follows a bf16
    # input (bitsandbytes nn/modules.py Linear4bit.set_compute_type)
    run = _load(tmp_path, "  quantization_config: {load_in_4bit: true}\n")
    assert run.options["ref_quant"] == "4bit" and "ref_dtype" not in run.options
    # BitsAndBytesConfig(load_in_8bit=True) → Linear8bitLt (--ref-quant 8bit); bnb_4bit_use_double_quant → 4bit-dq
    run = _load(tmp_path, "  quantization_config: {load_in_8bit: true, llm_int8_threshold: 6.0}\n")
    assert run.options["ref_quant"] == "8bit" and "ref_model_init_kwargs" in run.mapped
    run = _load(tmp_path, "  dtype: float16\n  quantization_config: {load_in_8bit: true}\n")
    assert (run.options["ref_dtype"], run.options["ref_quant"]) == ("fp16", "8bit")
    run = _load(tmp_path, "  quantization_config: {load_in_4bit: true, bnb_4bit_use_double_quant: true,\n"
                          "    bnb_4bit_quant_type: fp4, bnb_4bit_compute_dtype: bfloat16}\n")
    assert run.options["ref_quant"] == "4bit-dq" and run.unmodelled == []


@pytest.mark.parametrize(("body", "message"), [
    ("  device_map: auto\n", "ref_model_init_kwargs.device_map: a from_pretrained keyword"),
    ("  quantization_config: {load_in_8bit: true, llm_int8_threshold: 0.0}\n", "llm_int8_threshold 6.0 without"),
    ("  quantization_config: {load_in_8bit: true, llm_int8_has_fp16_weight: true}\n", "without fp16 weights"),
    ("  quantization_config: {load_in_4bit: true, load_in_8bit: true}\n", "together; keep one"),
    ("  quantization_config: {load_in_4bit: true, llm_int8_skip_modules: [mlp]}\n", "skipped modules"),
    ("  quantization_config: {load_in_4bit: true, bnb_4bit_quant_storage: bfloat16}\n", "non-uint8-stored"),
    ("  quantization_config: {load_in_8bit: true, llm_int8_other: 1}\n", "only bitsandbytes load_in_4bit"),
    ("  dtype: float16\n  quantization_config: {load_in_4bit: true}\n", "bnb_4bit_compute_dtype None with a fp16"),
    ("  attn_implementation: eager\n", "differs from the policy's attention"),
    ("  dtype: auto\n", "'auto' is not modelled"),
])
def test_ref_model_init_kwargs_refused_in_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(runfiles.RunFileError, match=message):
        _load(tmp_path, body)
