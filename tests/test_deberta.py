"""DeBERTa-v3's disentangled attention (issue 15; memory/deberta.py): its saved tensors beyond a BERT layer of the
same shape, the shared mask / relative positions / rel_embeddings, the forward score transients, LoRA on the
position projections, what is refused, and (where torch is installed) the estimate against the tracer.

Every number is derived from transformers 5.24 modeling_deberta_v2.py on the published deberta-v3-base shape
(tests/data/hf/deberta-v3-base.json: hidden 768, 12 heads, intermediate 3072, position_buckets 256, so 2P = 512
rel_embeddings rows) or measured with the tracer (benchmarks/results/accuracy_deberta.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import invoke
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import deberta, encoder, estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
H, HEADS, SPAN = 768, 12, 512  # deberta-v3-base: hidden, heads, 2 x position_buckets


def _spec(name: str = "deberta-v3-base", layers: int | None = None) -> ModelSpec:
    d = json.loads((HF / f"{name}.json").read_text())
    if layers is not None:
        d["num_hidden_layers"] = layers
    return spec_from_hf_config(d, name, f"tests/data/hf/{name}.json")


def _saved(m: ModelSpec, t: TrainingSpec) -> int:
    layer = layer_activations(m, t, recipe_of(t), trainable_weights=t.method == "full")
    return layer.saved(t.batch_size * t.seq_len, t.seq_len)


def test_layer_saves_the_disentangled_terms_beyond_bert() -> None:
    # Full fine-tuning, bf16 (c = 2), batch 2 x seq 128, against the same shape read as a BERT with eager attention
    # (which saves q, key / scale, v, the softmax, its dropout mask and the dropped probabilities as DeBERTa does):
    b, s, c = 2, 128, 2
    t = TrainingSpec(method="full", precision="bf16", batch_size=b, seq_len=s, attention="eager")
    m = _spec()
    tokens = b * s
    extra = (tokens * c * H  # the p2c bmm saves key_layer unscaled (the content bmm saved key_layer / scale)
             + tokens * 2 * c * HEADS * SPAN  # gather saves the raw c2p and p2c scores (b x heads, s, 2P)
             + b * 2 * c * SPAN * H  # pos_key_layer / pos_query_layer .repeat-ed over the batch, saved by bmm
             + tokens * s * 1  # masked_fill's ~mask, bool (b, 1, s, s)
             + 2 * 8 * s * s  # the two int64 gather indices, (1, s, s) expanded
             + SPAN * H * (1 + c))  # pos_dropout's mask and its output, saved by query_proj and key_proj
    assert _saved(m, t) - _saved(replace(m, family="bert"), t) == extra


def test_shared_mask_positions_and_rel_embeddings() -> None:
    # DebertaV2Encoder.forward, once per forward, batch 4 x seq 512, full bf16: the (4, 1, 512, 512) int64 mask,
    # the (1, 512, 512) int64 relative positions, and the rel LayerNorm's bf16 output (512 x 768) with its fp32 mean
    # and rstd per row; beside them the embedding LayerNorm (2 B x 768 + 8 per token) and its dropout mask (1 B x 768)
    b, s = 4, 512
    t = TrainingSpec(method="full", precision="bf16", batch_size=b, seq_len=s)
    shared = estimate(_spec(), t).details["activations.shared"]
    tokens = b * s
    assert shared == 8 * b * s * s + 8 * s * s + 2 * SPAN * H + 8 * SPAN + tokens * (2 * H + 8) + tokens * H


def test_forward_score_transients() -> None:
    # bf16: at p2c's division five 16-bit (b x heads, s, s) tensors are alive while the softmax output, its dropout
    # mask, the dropped probabilities (2 + 1 + 2 B per head) and the 1-byte ~mask are not: 10 x 12 - 5 x 12 - 1.
    # amp-bf16: at the context's contiguous copy the 16-bit attention_scores and rel_att and the fp32 dropped
    # probabilities (2 + 2 + 4 B per head) are alive beyond the saved set.
    m = _spec()
    bf16 = layer_activations(m, TrainingSpec(precision="bf16"), recipe_of(TrainingSpec(precision="bf16")), True)
    amp = layer_activations(m, TrainingSpec(precision="amp-bf16"), recipe_of(TrainingSpec(precision="amp-bf16")),
                            True)
    assert bf16.forward_transient.per_token_seq == 10 * HEADS - 5 * HEADS - 1
    assert amp.forward_transient.per_token_seq == 8 * HEADS


def test_lora_on_query_and_key_runs_on_the_positions() -> None:
    # peft LoRA (r 16, fp32 adapters) on query_proj and key_proj also adapts each layer's projection of the
    # rel_embeddings: per adapter, lora_A saves its fp32 cast of the (512 x 768) positions and lora_B its (512 x 16)
    # output; LoRA on value_proj alone does not
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("q_proj", "k_proj"))
    terms = deberta.attention_terms(_spec(), t, recipe_of(t), False, {"q_proj", "k_proj"})
    rel = next(x for x in terms if x.name.startswith("rel_embeddings"))
    assert rel.const == 2 * (4 * SPAN * H + 4 * 16 * SPAN)
    value_only = deberta.attention_terms(_spec(), t, recipe_of(t), False, {"v_proj"})
    assert not any(x.name.startswith("rel_embeddings") for x in value_only)


def test_lora_trains_only_the_classifier_copy() -> None:
    # peft SEQ_CLS: modules_to_save "classifier" matches DebertaV2ForSequenceClassification.classifier (768 x 2 +
    # 2), not the ContextPooler (`pooler`); LoRA r 16 on query_proj and value_proj (768 -> 768) in 12 layers
    t = TrainingSpec(method="lora")
    assert estimate(_spec(), t).trainable_parameters == 12 * 2 * 16 * (768 + 768) + 2 * 768 + 2


@pytest.mark.parametrize(("args", "message"), [
    (["--head", "mlm"], "--head mlm is not modelled for DeBERTa (deberta-v3-base): use --head seq-cls or token-cls "
                        "with --method full, lora or qlora"),
    (["--method", "freeze", "--freeze-layers", "6"],
     "--method freeze is not modelled for DeBERTa (deberta-v3-base): use --head seq-cls or token-cls with --method "
     "full, lora or qlora"),
])
def test_unmodelled_runs_are_refused_in_one_line(args: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "deberta-v3-base", *args], capsys)
    assert code == 2
    assert err.strip() == f"error: {message}"


def test_estimate_names_the_disentangled_attention(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "deberta-v3-base", "--batch-size", "8", "--seq-len", "256", "--format", "json"],
                          capsys)
    assert code == 0
    notes = " ".join(json.loads(out)["notes"])
    assert "disentangled attention" in notes and "int64 attention_mask" in notes


@pytest.mark.parametrize("run", [
    {"batch_size": 2, "seq_len": 128, "precision": "bf16"},
    {"batch_size": 2, "seq_len": 128, "method": "lora", "lora_targets": ("q_proj", "k_proj", "v_proj"),
     "grad_checkpointing": True},
    {"batch_size": 2, "seq_len": 128, "head": "token-cls", "precision": "amp-bf16"},
], ids=["full-bf16", "lora-qkv-ckpt", "token-amp"])
def test_estimate_is_within_5_percent_of_the_trace(run: dict[str, object]) -> None:
    # A 2-layer deberta-v3-base built by the tracer from its config on fake tensors (the collator's int64 mask
    # passed); benchmarks/results/accuracy_deberta.md has the 32-case grid. Never under by more than 2 %.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _spec(layers=2)
    t = TrainingSpec(**run)  # type: ignore[arg-type]
    traced = trace(encoder.for_run(m, t), t)
    assert traced.parameters == count_params(encoder.for_run(m, t)) + (
        estimate(m, t).trainable_parameters if t.method == "lora" else 0)
    est = estimate(m, t).tensor_peak_bytes
    assert est == pytest.approx(traced.peak_bytes, rel=0.05)
    assert est >= 0.98 * traced.peak_bytes


def test_check_accepts_the_modelled_heads() -> None:
    from vramcalc.core.checks import check_encoder

    for head in ("seq-cls", "token-cls"):
        for method in ("full", "lora", "qlora"):
            check_encoder(_spec(), TrainingSpec(head=head, method=method))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedCombination):
        check_encoder(_spec(), TrainingSpec(head="mlm"))


DEBERTA_PRESETS = [m for m in presets.models().specs if isinstance(m, ModelSpec) and m.family == "deberta-v2"]
RUNS = st.fixed_dictionaries({
    "method": st.sampled_from(["full", "lora", "qlora"]), "head": st.sampled_from(["seq-cls", "token-cls"]),
    "precision": st.sampled_from(["bf16", "amp-bf16", "fp32"]), "grad_checkpointing": st.booleans(),
    "batch_size": st.integers(1, 16), "seq_len": st.integers(1, 512), "num_labels": st.integers(1, 20),
    "lora_targets": st.sampled_from([("auto",), ("q_proj", "k_proj", "v_proj"), ("v_proj",)]),
})


# derandomized by the project's profiles (tests/conftest.py)
@settings(max_examples=min(settings().max_examples, 200), suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DEBERTA_PRESETS), RUNS, st.sampled_from(["batch_size", "seq_len"]), st.integers(1, 64))
def test_memory_never_decreases_when_the_batch_grows(m: ModelSpec, run: dict[str, object], grow: str,
                                                     more: int) -> None:
    # every term of memory/deberta.py grows with batch and sequence (per token, per key, per sequence, per seq²) or
    # is fixed: no component of a larger batch or a longer sequence is smaller, and the tensor peak holds the weights
    t = TrainingSpec(**run)  # type: ignore[arg-type]
    if t.precision == "fp32" and t.method == "qlora":
        t = replace(t, precision="bf16")  # QLoRA needs a 16-bit compute dtype (refused in one line)
    bigger = replace(t, **{grow: getattr(t, grow) + more})
    if bigger.seq_len > 512:
        bigger = replace(bigger, seq_len=512)
    a, b = estimate(m, t), estimate(m, bigger)
    for part in ("weights", "gradients", "optimizer_state", "activations"):
        assert getattr(b, part) >= getattr(a, part), part
    assert b.tensor_peak_bytes >= a.tensor_peak_bytes >= a.weights
