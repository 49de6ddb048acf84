"""Inference memory: quantized weight formats, the KV cache (GQA, sliding window, fp8), and the solvers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.memory import estimate
from vramcalc.core.memory.inference import (
    kv_cache_bytes,
    quantized_linear_bytes,
    sliding_layers,
)
from vramcalc.core.searches import max_batch_inference, max_context
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

runner = CliRunner()
# 7,241,732,096 parameters (Mistral-7B-v0.1, shared/seeds/000) × 2 bytes = 14,483,464,192 (STYLE.md).
MISTRAL_BF16_BYTES = 14_483_464_192


def infer(**kw: object) -> TrainingSpec:
    return TrainingSpec(mode="inference", **kw)  # type: ignore[arg-type]


def test_bf16_weights_are_two_bytes_per_parameter() -> None:
    b = estimate(presets.find_model("mistral-7b"), infer(seq_len=1))
    assert b.weights == MISTRAL_BF16_BYTES
    assert b.gradients == b.optimizer_state == 0


def test_kv_cache_llama_3_1_8b() -> None:
    m = presets.find_model("llama-3.1-8b")
    # K and V × 32 layers × 8 KV heads (GQA) × 128 head_dim × 2 bytes = 131,072 bytes per token.
    kv, per_token = kv_cache_bytes(m, infer(), batch=1, context=8192)
    assert per_token == 131_072
    assert kv == 8192 * 131_072  # 1,073,741,824 = 1 GiB for one 8k sequence
    # fp8 KV halves it; batch 4 multiplies it.
    assert kv_cache_bytes(m, infer(kv_dtype="fp8"), batch=4, context=8192)[0] == 4 * 8192 * 65_536
    # tp 2 splits the 8 KV heads: 4 per GPU.
    assert kv_cache_bytes(m, infer(tp=2, gpus_per_node=2), 1, 8192)[0] == 8192 * 65_536


def test_sliding_window_caps_the_cache() -> None:
    mistral = presets.find_model("mistral-7b")  # sliding_window 4096 on every layer (v0.1 config.json)
    per_token = 2 * 32 * 8 * 128 * 2  # 131,072 bytes
    assert kv_cache_bytes(mistral, infer(), 1, 32768)[0] == 4096 * per_token
    gemma = presets.find_model("gemma-2-9b")  # every other layer slides (modeling_gemma2.py)
    assert sliding_layers(gemma) == 21
    # 21 global layers × 8192 tokens + 21 local layers × 4096 tokens, × 2 × 8 heads × 256 × 2 bytes.
    assert kv_cache_bytes(gemma, infer(), 1, 8192)[0] == (21 * 8192 + 21 * 4096) * 2 * 8 * 256 * 2


def test_quantized_linear_formats() -> None:
    # A 4096 × 4096 Linear, group 128 → 32 groups.
    numel = 4096 * 4096
    # GPTQ: qweight numel/2 = 8,388,608; qzeros 32 × 4096/8 int32 = 65,536;
    # fp16 scales 32 × 4096 × 2 = 262,144;
    # g_idx 4096 int32 = 16,384.
    gptq = quantized_linear_bytes(4096, 4096, "gptq-int4", 128, True)
    assert gptq == (8_388_608, 65_536 + 262_144 + 16_384)
    assert quantized_linear_bytes(4096, 4096, "awq-int4", 128, True) == (8_388_608, 65_536 + 262_144)
    # int8: one byte + fp32 row scales (4096 × 4); fp8: one byte + one fp32 per-tensor scale.
    assert quantized_linear_bytes(4096, 4096, "int8", 128, True) == (numel, 16_384)
    assert quantized_linear_bytes(4096, 4096, "fp8", 128, True) == (numel, 4)
    # NF4 with double quant: 262,144 blocks of 64 → uint8 absmax 262,144 + fp32 per 256 blocks 4,096 + 4.
    assert quantized_linear_bytes(4096, 4096, "nf4", 64, True) == (numel // 2, 262_144 + 4_096 + 4)


def test_4bit_weights_keep_embeddings_in_bf16() -> None:
    m = presets.find_model("mistral-7b")
    b = estimate(m, infer(weight_dtype="awq-int4", seq_len=1))
    # embed_tokens + lm_head (2 × 32000 × 4096) and 65 norm vectors stay bf16: 2 × 262,410,240 bytes.
    rest = 2 * (2 * 32000 * 4096 + 65 * 4096)
    assert b.details["weights.base"] == rest + (MISTRAL_BF16_BYTES - rest) // 4
    assert b.weights < MISTRAL_BF16_BYTES // 3


@pytest.mark.parametrize("fmt", ["bf16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"])
def test_peak_at_most_the_sum(fmt: str) -> None:
    b = estimate(presets.find_model("llama-3.1-8b"), infer(weight_dtype=fmt, batch_size=4, seq_len=4096))
    assert b.peak_bytes <= b.sum_bytes
    assert b.peak_phase == "prefill"


def test_max_context_is_exact_at_the_boundary() -> None:
    m, gpu = presets.find_model("llama-3.1-8b"), presets.find_gpu("rtx4090")
    t = infer(batch_size=1)
    n = max_context(m, t, gpu)
    assert n is not None and n < 131_072
    assert estimate(m, replace(t, **{"seq_len": n})).peak_bytes <= gpu.memory_bytes
    assert estimate(m, replace(t, **{"seq_len": n + 1})).peak_bytes > gpu.memory_bytes
    # fp8 KV and 4-bit weights leave room for a longer context.
    longer = max_context(m, infer(weight_dtype="awq-int4", kv_dtype="fp8"), gpu)
    assert longer is not None and longer > n


def test_max_batch_is_exact_at_the_boundary() -> None:
    m, gpu = presets.find_model("llama-3.1-8b"), presets.find_gpu("h100")
    t = infer(seq_len=4096)
    n = max_batch_inference(m, t, gpu)
    assert n is not None and n >= 1
    assert estimate(m, replace(t, **{"batch_size": n})).peak_bytes <= gpu.memory_bytes
    assert estimate(m, replace(t, **{"batch_size": n + 1})).peak_bytes > gpu.memory_bytes


def test_nothing_fits_gives_none() -> None:
    assert max_context(presets.find_model("llama-3.1-70b"), infer(), presets.find_gpu("rtx4090")) is None


def test_cli_inference_json() -> None:
    result = runner.invoke(app, ["estimate", "llama-3.1-8b", "--mode", "inference", "--batch-size", "2",
                                 "--context", "8192", "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["components"]["kv_cache"] == 2 * 8192 * 131_072
    assert set(doc["phases"]) == {"prefill", "decode"}
    assert doc["settings"]["seq_len"] == 8192


def test_training_only_options_are_refused_for_inference() -> None:
    result = runner.invoke(app, ["estimate", "mistral-7b", "--mode", "inference", "--zero", "3"])
    assert result.exit_code == 2
    expected = "error: inference shards with --tp/--pp only: drop --zero, --fsdp and --offload"
    assert result.stderr.strip() == expected


def test_gemma2_runs_eager_attention_whatever_the_option_says() -> None:
    # Gemma 2 has no SDPA path (modeling_gemma2.py _supports_sdpa = False: SDPA cannot softcap the logits), so a
    # long prompt's prefill holds eager's scores. Measured with `vramcalc trace gemma-2-2b --mode inference
    # --seq-len 4111 --new-tokens 16 --batch-size 2 --precision bf16`: 9,137,881,600 bytes at the prefill (the
    # estimate counted SDPA and was 26 % under).
    gemma2 = presets.find_model("gemma-2-2b")
    run = TrainingSpec(mode="inference", seq_len=4111, new_tokens=16, batch_size=2, precision="bf16")
    b = estimate(gemma2, run)
    assert abs(b.tensor_peak_bytes - 9_137_881_600) / 9_137_881_600 < 0.01
    assert b.tensor_peak_bytes == estimate(gemma2, replace(run, attention="eager")).tensor_peak_bytes
