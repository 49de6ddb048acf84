"""Packing and padding-free batches (issue 13): the row layout, the packed mask's terms, the tracer."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import batch_rows, layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

# A small GQA llama (4 heads, 2 KV heads, head_dim 64) with a long enough row for the per-key terms to show.
GQA = ModelSpec(name="gqa-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)


def test_rows_of_each_layout() -> None:
    t = TrainingSpec(batch_size=4, seq_len=1024)
    assert batch_rows(t) == (4, 1024)
    assert batch_rows(replace(t, packing="packed")) == (4, 1024)
    assert batch_rows(replace(t, packing="padding-free")) == (1, 4096)  # DataCollatorWithFlattening: one row


def test_packed_sdpa_saves_the_mask_and_repeated_kv_per_layer() -> None:
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=512)
    r = recipe_of(t)
    plain = layer_activations(GQA, t, r, True)
    packed = layer_activations(GQA, replace(t, packing="packed"), r, True)
    # bf16 (c = 2): k and v repeated from 2 to 4 heads of 64 (2 x 2 x (256 - 128) bytes per token), and the
    # 16-bit mask copy: 2 bytes per token per key position.
    assert sum(x.per_token for x in packed.terms) - sum(x.per_token for x in plain.terms) == 2 * 2 * (256 - 128)
    assert sum(x.per_token_seq for x in packed.terms) - sum(x.per_token_seq for x in plain.terms) == 2


def test_flash_needs_no_mask_and_padding_free_flash_equals_padded_rows() -> None:
    m = presets.find_model("llama-3.2-1b")
    t = TrainingSpec(method="lora", batch_size=4, seq_len=2048)
    # flash varlen on one row of 8,192 tokens saves per token what flash saves on 4 rows of 2,048.
    assert estimate(m, replace(t, attention="flash", packing="padding-free")).tensor_peak_bytes == \
        estimate(m, t).tensor_peak_bytes
    packed = estimate(m, replace(t, packing="packed")).tensor_peak_bytes
    assert packed > estimate(m, t).tensor_peak_bytes  # sdpa on packed rows: the mask and repeated k, v


def test_padding_free_eager_scores_grow_with_the_row() -> None:
    m = presets.find_model("gpt2")
    t = TrainingSpec(method="full", attention="eager", batch_size=4, seq_len=512)
    e_rows = estimate(m, t).details["activations.per_layer"]
    e_flat = estimate(m, replace(t, packing="padding-free")).details["activations.per_layer"]
    # gpt2: 12 heads, attention dropout 0.1; its eager softmax runs in bf16 (modeling_gpt2.py) and attn @ v
    # saves the dropped probabilities: softmax 2 + dropout mask 1 + dropped probs 2 bytes per head per token
    # per key (activations.py). The row grows from 512 to 2,048 keys for the same 2,048 tokens.
    assert e_flat - e_rows == (2 + 1 + 2) * 12 * 2048 * (2048 - 512)


def test_packing_notes_and_inference_refused() -> None:
    m = presets.find_model("llama-3.2-1b")
    b = estimate(m, TrainingSpec(batch_size=2, seq_len=1024, packing="padding-free"))
    assert any("most tokens" in n for n in b.notes) and any("block-diagonal mask" in n for n in b.notes)
    with pytest.raises(SpecError, match="packing"):
        TrainingSpec(mode="inference", packing="packed")


def test_packing_option_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "llama-3.2-1b", "--packing", "padding-free", "--attention", "flash",
                           "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["settings"]["packing"] == "padding-free" and doc["settings"]["attention"] == "flash"


@pytest.mark.parametrize("packing,attention", [("packed", "sdpa"), ("padding-free", "sdpa"),
                                               ("padding-free", "eager"), ("padding-free", "flash")])
def test_packing_matches_the_trace(packing: str, attention: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=512, packing=packing,
                     attention=attention)
    e, r = estimate(GQA, t), trace(GQA, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)  # issue 13's bounds
    # The packed terms themselves: the layout's change against padded rows, estimate vs trace, within 5 %.
    base = replace(t, packing="none", attention="sdpa")
    d_est = e.tensor_peak_bytes - estimate(GQA, base).tensor_peak_bytes
    d_trace = r.peak_bytes - trace(GQA, base).peak_bytes
    assert abs(d_est - d_trace) <= 0.05 * max(abs(d_trace), 1) + 0.01 * r.peak_bytes, (d_est, d_trace)
