"""--precision autocast-* on the older dense decoders of --grid autocast3 (issue 15): GPT-NeoX (Pythia; LoRA and QLoRA),
GPT-J, Phi-1.5 / Phi-2 and OLMo 1 (LoRA, QLoRA, freeze) (core/memory/upcast_norms.py AUTOCAST_FAMILIES); Falcon,
BLOOM and GPT-NeoX's freeze: tests/test_autocast_families.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import dequant_bytes, layer_activations
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.params import quantized_linears
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets


def _t(method: str = "lora", **kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": method, "lora_rank": 8, "lora_targets": ("all-linear",), "batch_size": 1,
                               "seq_len": 256, "precision": "autocast-bf16"}
    if method == "qlora":
        base["kbit_prep"] = False
    return TrainingSpec(**{**base, **kw})


def test_gpt_neox_second_layernorm_saves_its_own_fp32_input() -> None:
    # GPTNeoXLayer (modeling_gpt_neox.py, use_parallel_residual) runs input_layernorm and post_attention_layernorm on
    # the same layer input: in 16 bits both save that one tensor (no term); under autocast layer_norm (fp32 list)
    # casts it to fp32 each time, and each saves its copy with fp32 mean and rstd: 4 B x 1,024 (pythia-410m's hidden,
    # its config.json) + 8 per token (measured: two fp32 (2, 1024, 1024) copies per layer, --grid autocast3)
    m = presets.find_model("pythia-410m")
    saved = {p: {x.name: x.per_token for x in layer_activations(m, _t(precision=p), RECIPES[p], False).terms}
             for p in ("bf16", "autocast-bf16")}
    name = "mlp norm (its own fp32 input) (input, mean, rstd)"
    assert name not in saved["bf16"]
    assert saved["autocast-bf16"][name] == 4 * 1_024 + 8
    assert saved["autocast-bf16"]["attn norm (input, mean, rstd)"] == 4 * 1_024 + 8


def test_gelu_new_fp32_output_beside_the_dequantized_fc_out() -> None:
    # GPT-J (gpt-j-6b config.json: n_embd 4,096, n_inner null = 4 x 4,096 = 16,384, gelu_new), QLoRA NF4 with double
    # quantization, b1 s512. bitsandbytes' forward fallback dequantizes the whole weight (2 B x 4,096 x 16,384 =
    # 134,217,728) and the nested absmax into two fp32 tensors of one value per 64-element block (2 x 4 B x 1,048,576 =
    # 8,388,608). In 16 bits the largest moment is fc_in's output (2 B x 512 x 16,384 = 16,777,216); under autocast it
    # is fc_out's, where gelu_new's fp32 output (4 B x 512 x 16,384 = 33,554,432) and Linear4bit's bf16 cast of it
    # (16,777,216) are alive beside its output (2 B x 512 x 4,096 = 4,194,304): the tracer's live tensors at the top
    # layer's fc_out addmm (--grid autocast3, -3.63 % without)
    m = presets.find_model("gpt-j-6b")
    weight, absmax = 134_217_728, 8_388_608
    for precision, moment in (("bf16", 16_777_216), ("autocast-bf16", 33_554_432 + 16_777_216 + 4_194_304)):
        t = _t("qlora", precision=precision, seq_len=512)
        fwd, _ = dequant_bytes(m, t, RECIPES[precision], quantized_linears(m))
        assert fwd.forward(512, False) == weight + absmax + moment, precision


def test_gpt_neox_qlora_down_proj_holds_its_16_bit_input_and_the_block() -> None:
    # GPT-NeoX under autocast, QLoRA without checkpointing: at dense_4h_to_h's dequantized matmul its gelu input (2 B x
    # 4,096, pythia-410m's intermediate) and the parallel block's fp32 normed input (4 B x 1,024), attention output,
    # layer input and embeddings (3 x 2 B x 1,024) are alive: 18,432 B per token beside the weight, the absmax and the
    # output (the tracer's live tensors, pythia-410m cut to 4 layers, QLoRA b1 s256: -2.92 % with up_proj's moment)
    m = presets.find_model("pythia-410m")
    fwd, _ = dequant_bytes(m, _t("qlora", seq_len=512), RECIPES["autocast-bf16"], quantized_linears(m))
    weight, absmax = 2 * 1_024 * 4_096, 2 * 4 * (1_024 * 4_096 // 64)
    assert fwd.forward(512, False) == weight + absmax + 512 * (2 * 1_024 + 18_432)


# Traced toys: each preset cut to 2 layers and a 2,048-token vocabulary, b1 s256. Measured (estimate against the
# tracer, this setup): LoRA with checkpointing pythia-410m +0.34 %, gpt-j-6b +0.67 %, phi-2 +0.88 %, phi-1.5 +1.21 %,
# olmo-1b +0.53 %; QLoRA without it gpt-j-6b -0.78 %, phi-2 -0.43 %.
TOYS = [("pythia-410m", "lora", True), ("gpt-j-6b", "lora", True), ("phi-2", "lora", True),
        ("phi-1.5", "lora", True), ("olmo-1b", "lora", True), ("gpt-j-6b", "qlora", False), ("phi-2", "qlora", False)]


@pytest.mark.parametrize(("name", "method", "gc"), TOYS, ids=[f"{n}-{m}-{'gc' if g else 'no-gc'}" for n, m, g in TOYS])
def test_matches_the_trace(name: str, method: str, gc: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = replace(presets.find_model(name), num_layers=2, vocab_size=2_048)
    t = _t(method, grad_checkpointing=gc)
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.02, (err, e.phases, r.phase_peaks, r.peak_op)
