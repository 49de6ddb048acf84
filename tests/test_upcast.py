"""Upcast keys (issue 13): LLaMA-Factory upcast_lmhead_output (--upcast-logits, core/memory/upcast.py), axolotl
embeddings_skip_upcast (mapped with a no-change note); LLaMA-Factory upcast_layernorm is --upcast-norms
(tests/test_upcast_layernorm.py).

hiyouga/LLaMA-Factory model_utils/checkpointing.py @ 06d78ff1 prepare_model_for_training registers
`output.to(torch.float32)` as a forward hook on a 16-bit nn.Linear lm_head; transformers' ForCausalLMLoss then finds
fp32 logits (`.float()` returns them), so the loss's forward moment holds one fp32 vocab-wide tensor, not the 16-bit
logits beside their fp32 copy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

LORA = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=512)
TOKENS = 2 * 512
VOCAB = 32_000  # TinyLlama-1.1B config.json vocab_size


def test_hook_drops_the_16bit_logits_from_the_loss_moment() -> None:
    m = presets.find_model("tinyllama-1.1b")
    base, up = estimate(m, LORA), estimate(m, replace(LORA, upcast_logits=True))
    # ForCausalLMLoss without the hook: bf16 logits + their fp32 .float() copy, (2 + 4) B x vocab per token; with it
    # the fp32 logits only (4 B), the hook's own moment (2 + 4 B before log_softmax's 4 B output exists) no larger
    assert base.details["temporaries.loss_forward"] == (2 + 4) * VOCAB * TOKENS
    assert up.details["temporaries.loss_forward"] == 4 * VOCAB * TOKENS
    assert base.phases["forward"] - up.phases["forward"] == 2 * VOCAB * TOKENS
    # backward is the same: log_softmax / nll_loss gradients, then the cast back to bf16 (.float()'s or the hook's)
    assert up.details["temporaries.loss_backward"] == base.details["temporaries.loss_backward"]
    assert up.phases["backward"] == base.phases["backward"]
    assert up.weights == base.weights and up.activations == base.activations
    assert any("upcast logits (LLaMA-Factory" in n for n in up.notes)


@pytest.mark.parametrize("change", [{"method": "full", "precision": "amp-bf16"}, {"method": "qlora"}])
def test_no_hook_on_an_fp32_head(change: dict[str, object]) -> None:
    # amp keeps fp32 weights, and QLoRA's kbit preparation (the default) casts lm_head to fp32: LLaMA-Factory checks
    # `output_layer.weight.dtype != torch.float32` and registers nothing
    m = presets.find_model("tinyllama-1.1b")
    t = replace(LORA, **change)
    base, up = estimate(m, t), estimate(m, replace(t, upcast_logits=True))
    assert up.tensor_peak_bytes == base.tensor_peak_bytes and up.phases == base.phases
    assert any("registers the fp32 hook only on a 16-bit head: no change" in n for n in up.notes)


def test_the_hook_matches_the_trace_of_a_small_llama() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    small = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=8000, hidden_size=256,
                      intermediate_size=704, num_layers=2, num_attention_heads=4, num_kv_heads=2)
    t = replace(LORA, batch_size=2, seq_len=128)
    base, up = trace(small, t), trace(small, replace(t, upcast_logits=True))
    # the traced forward drops by the 16-bit logits (2 B x vocab x tokens), as the estimate's does
    assert base.phase_peaks["forward"] - up.phase_peaks["forward"] == 2 * 8000 * 2 * 128
    assert any("upcast logits" in n for n in up.notes)
    got = estimate(small, replace(t, upcast_logits=True))
    assert got.phases["forward"] == pytest.approx(up.phase_peaks["forward"], rel=0.01)
    assert got.tensor_peak_bytes == pytest.approx(up.peak_bytes, rel=0.01)


@pytest.mark.parametrize(("name", "change", "match"), [
    ("tinyllama-1.1b", {"loss": "fused-linear"}, "--loss fused-linear"),
    ("tinyllama-1.1b", {"objective": "dpo"}, "--objective dpo"),
    ("tinyllama-1.1b", {"lora_targets": ("all-linear", "lm_head")}, "lm_head"),
    ("tinyllama-1.1b", {"modules_to_save": ("lm_head",)}, "lm_head"),
    ("gemma-2-9b", {}, "softcapping"),
    ("bert-base-uncased", {"method": "full"}, "decoder-only"),
])
def test_refused_where_not_modelled(name: str, change: dict[str, object], match: str) -> None:
    with pytest.raises(UnsupportedCombination, match=match):
        estimate(presets.find_model(name), replace(LORA, upcast_logits=True, **change))


def test_training_only() -> None:
    with pytest.raises(SpecError, match="drop it for --mode inference"):
        TrainingSpec(mode="inference", upcast_logits=True)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_llama_factory_keys(tmp_path: Path) -> None:
    head = "model_name_or_path: TinyLlama/TinyLlama-1.1B\nstage: sft\nfinetuning_type: lora\nbf16: true\n"
    run = runfiles.load(_write(tmp_path, "lf.yaml", head + "upcast_lmhead_output: true\n"))[0]
    assert run.options["upcast_logits"] is True and run.unmodelled == [] and "upcast_lmhead_output" in run.mapped
    off = runfiles.load(_write(tmp_path, "off.yaml", head + "upcast_lmhead_output: false\n"))[0]
    assert off.options.get("upcast_logits") is False and off.unmodelled == []
    # (upcast_layernorm: --upcast-norms, tests/test_upcast_layernorm.py)


def test_axolotl_embeddings_skip_upcast_changes_nothing(tmp_path: Path) -> None:
    head = ("base_model: TinyLlama/TinyLlama-1.1B-Chat-v1.0\nadapter: qlora\nload_in_4bit: true\nsequence_len: 512\n"
            "micro_batch_size: 2\nbf16: true\n")
    run = runfiles.load(_write(tmp_path, "ax.yaml", head + "embeddings_skip_upcast: true\n"))[0]
    plain = runfiles.load(_write(tmp_path, "plain.yaml", head))[0]
    assert run.options == plain.options and run.unmodelled == [] and "embeddings_skip_upcast" in run.mapped
    assert runfiles.EMBEDDINGS_SKIP_UPCAST_NOTE in run.notes
    assert runfiles.EMBEDDINGS_SKIP_UPCAST_NOTE not in plain.notes
