"""generate() as transformers runs it (issue 18): prompt and decode steps, cache kinds, prefill logits, the
dequantization transients of quantized weights, the options through the CLI, and the tracer's generate()."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.memory import estimate
from vramcalc.core.memory.inference import generate_terms, kv_cache_bytes, quantized_workspace
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

runner = CliRunner()
# TinyLlama-1.1B (presets/models/llama.yaml): 22 layers, 32 heads, 4 KV heads, head_dim 2048 / 32 = 64,
# hidden 2048, intermediate 5632, vocab 32000. One token's K (or V) in one layer: 4 × 64 × 2 B = 512 B.
TINYLLAMA = "tinyllama-1.1b"
K_LAYER_TOKEN = 4 * 64 * 2
KV_TOKEN = 22 * 2 * K_LAYER_TOKEN  # 22,528 B per token, all layers, K and V


def infer(**kw: object) -> TrainingSpec:
    return TrainingSpec(mode="inference", precision="bf16", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tl() -> ModelSpec:
    return presets.find_model(TINYLLAMA)


def test_prompt_is_context_minus_new_tokens_plus_one(tl: ModelSpec) -> None:
    # generate(max_new_tokens=N) on a P-token prompt: the prefill yields token 1, N - 1 decode steps append one
    # each, so the cache ends at P + N - 1 = the context (generation/utils.py: max_cache_length = max_length - 1).
    g = generate_terms(tl, infer(batch_size=2, seq_len=1000, new_tokens=64))
    assert g.prompt_tokens == 1000 - 64 + 1
    assert g.kv_prefill == 2 * 937 * KV_TOKEN
    assert g.kv_decode == 2 * 1000 * KV_TOKEN


def test_cache_kinds_transients(tl: ModelSpec) -> None:
    kw = {"batch_size": 2, "seq_len": 1000, "new_tokens": 64}
    # DynamicLayer.update: self.keys = torch.cat([self.keys, k]): one layer's old K (999 tokens) beside the new.
    assert generate_terms(tl, infer(**kw)).kv_transient == 2 * 999 * K_LAYER_TOKEN
    # The tuple cache: the whole previous cache (999 tokens, every layer, K and V) is still held.
    assert generate_terms(tl, infer(cache_impl="legacy", **kw)).kv_transient == 2 * 999 * KV_TOKEN
    # StaticLayer: zeros of max_cache_len at the first update (all of it by the prefill's end), index_copy_ after.
    static = generate_terms(tl, infer(cache_impl="static", **kw))
    assert static.kv_transient == 0
    assert static.kv_prefill == static.kv_decode == 2 * 1000 * KV_TOKEN
    # One new token: no decode step, no transient.
    assert generate_terms(tl, infer(cache_impl="legacy", batch_size=2, seq_len=1000)).kv_transient == 0


def test_legacy_cache_raises_the_decode_peak_by_the_old_cache(tl: ModelSpec) -> None:
    kw = {"batch_size": 8, "seq_len": 4096, "new_tokens": 2048}  # a long generation: decode wins
    dyn, leg = estimate(tl, infer(**kw)), estimate(tl, infer(cache_impl="legacy", **kw))
    assert leg.phases["decode"] - dyn.phases["decode"] == 8 * 4095 * KV_TOKEN - 8 * 4095 * K_LAYER_TOKEN
    assert leg.peak_phase == "decode"


def test_logits_last_or_all(tl: ModelSpec) -> None:
    # last: lm_head over one position (logits_to_keep=1) in bf16 + generate's fp32 copy: batch × vocab × (2 + 4).
    assert generate_terms(tl, infer(batch_size=4, seq_len=300)).prefill_logits == 4 * 32000 * 6
    # all (transformers < 4.45): every prompt position in bf16 and its fp32 upcast, + the last position's copy.
    g = generate_terms(tl, infer(batch_size=4, seq_len=300, logits="all"))
    assert g.prefill_logits == 4 * 300 * 32000 * 6 + 4 * 32000 * 4


def test_eager_prefill_keeps_the_score_matrices(tl: ModelSpec) -> None:
    g = generate_terms(tl, infer(batch_size=1, seq_len=1024, attention="eager"))
    hidden = 1024 * 2 * (3 * 2048 + 32 * 64)  # inputs_embeds, block input, its norm, rotated q (bf16)
    repeat_kv = 2 * 32 * 1024 * 64 * 2  # K and V expanded to 32 heads
    scores = 32 * 1024 * 1024 * (2 + 4 + 4)  # bf16 q·kᵀ·scale, fp32 copy, fp32 softmax
    mask = 1024 * 1024 * 2  # the additive (1, 1, q, kv) mask in bf16
    assert g.prefill_attention == hidden + repeat_kv + scores + mask
    # sdpa (flash, no mask, GQA in the kernel): only the hidden states, q and the output.
    assert generate_terms(tl, infer(batch_size=1, seq_len=1024)).prefill_attention == hidden + 1024 * 2 * 2048


def test_quantized_transients(tl: ModelSpec) -> None:
    gate = 2048 * 5632  # the largest block Linear (gate/up/down: 2048 × 5632)
    # nf4: dequantize_4bit to bf16, with the double-quantized absmax back in fp32 (one per 64-element block).
    assert quantized_workspace(tl, infer(weight_dtype="nf4"), rows=2) == (gate * 2 + gate // 64 * 4, 0)
    assert quantized_workspace(tl, infer(weight_dtype="nf4"), rows=1) == (0, 0)  # gemv_4bit
    # int8: the int8 input and fp32 row scales + int32 accumulation, widest for up_proj: 2048 + 4 × 5632.
    assert quantized_workspace(tl, infer(weight_dtype="int8"), rows=10) == (10 * (2048 + 4 * 5632 + 4), 0)
    # AWQ: fp16 dequantization from 1,024 rows on; GPTQ (exllama v1): a persistent fp16 buffer.
    assert quantized_workspace(tl, infer(weight_dtype="awq-int4"), rows=1023) == (0, 0)
    assert quantized_workspace(tl, infer(weight_dtype="awq-int4"), rows=1024) == (2 * gate, 0)
    assert quantized_workspace(tl, infer(weight_dtype="gptq-int4"), rows=1) == (0, 2 * gate)
    b = estimate(tl, infer(weight_dtype="gptq-int4"))
    assert b.details["temporaries.dequant_buffer"] == 2 * gate
    assert any("exllama" in n for n in b.notes)


def test_peak_is_at_most_the_sum_of_components(tl: ModelSpec) -> None:
    for kw in ({"cache_impl": "legacy", "new_tokens": 100}, {"cache_impl": "static", "attention": "eager"},
               {"logits": "all"}, {"weight_dtype": "nf4", "new_tokens": 8}):
        b = estimate(tl, infer(batch_size=3, seq_len=700, **kw))
        assert b.tensor_peak_bytes <= b.sum_bytes


def test_cli_options_and_json() -> None:
    result = runner.invoke(app, ["estimate", TINYLLAMA, "--mode", "inference", "--context", "1000", "--new-tokens",
                                 "64", "--kv-cache", "legacy", "--logits", "all", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["details"]["kv_cache.decode_transient"] == 999 * KV_TOKEN  # batch 1: see test_cache_kinds_transients
    assert doc["settings"]["cache_impl"] == "legacy"


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "inference", "--kv-cache", "paged"], None),  # Typer's own usage error lists the choices
    (["--mode", "inference", "--context", "16", "--new-tokens", "17"],
     "error: --new-tokens 17 exceeds the context 16 (prompt + new tokens - 1): raise --context or lower "
     "--new-tokens"),
    (["--kv-cache", "static"],
     "error: --new-tokens, --kv-cache and --logits describe generate(): add --mode inference"),
    (["--mode", "inference", "--new-tokens", "0"], None),
], ids=["unknown-cache", "too-many-tokens", "training", "zero-tokens"])
def test_cli_refuses_bad_values(args: list[str], message: str | None) -> None:
    result = runner.invoke(app, ["estimate", TINYLLAMA, *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    if message is not None:
        assert result.stderr.strip() == message


# --- the tracer's generate() ----------------------------------------------------------------------------------
TINY = ModelSpec(name="tiny-llama", source="test", family="llama", vocab_size=256, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static", "legacy"])
def test_trace_generate_cache_kinds(kv_cache: str) -> None:
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = infer(batch_size=2, seq_len=40, new_tokens=8, cache_impl=kv_cache)
    r = trace(TINY, t)
    assert set(r.phase_peaks) == {"prefill", "decode"}
    assert r.peak_bytes == max(r.phase_peaks.values()) == r.total_at_peak
    assert r.trainable_parameters == 0 and r.by_category_at_peak["gradients"] == 0
    # The cache alone (40 tokens × 2 sequences × 2 layers × K,V × 2 heads × 16 × 2 B, each layer's K and V a
    # 512-byte-rounded allocation) is alive at the last decode step.
    kv, _ = kv_cache_bytes(TINY, t, 2, 40)
    assert r.phase_peaks["decode"] >= kv


def test_trace_generate_legacy_holds_two_caches() -> None:
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # A long context and a tiny model: the cache dominates the decode step, and legacy holds it twice.
    kw = {"batch_size": 4, "seq_len": 512, "new_tokens": 4}
    dyn = trace(TINY, infer(**kw)).phase_peaks["decode"]
    leg = trace(TINY, infer(cache_impl="legacy", **kw)).phase_peaks["decode"]
    # 511 tokens: the cache before the last step; dynamic's own transient (one layer's K) is the difference's rest.
    kv_old, _ = kv_cache_bytes(TINY, infer(**kw), 4, 511)
    assert leg - dyn == pytest.approx(kv_old - kv_old // 4, rel=0.02)  # 2 layers × K, V; 512-byte rounding


def test_searches_keep_the_context_above_the_new_tokens() -> None:
    # Bisection over the context starts at --new-tokens (a shorter context cannot hold them): no SpecError.
    from vramcalc.core.searches import max_context

    m8, l4 = presets.find_model("llama-3.1-8b"), presets.find_gpu("l4")
    n = max_context(m8, infer(batch_size=4, seq_len=512, new_tokens=512), l4)
    assert n is not None and n >= 512
    result = runner.invoke(app, ["fit", "llama-3.1-8b", "--mode", "inference", "--batch-size", "4", "--new-tokens",
                                 "512", "--gpu", "l4", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_seq_len"] >= 512
