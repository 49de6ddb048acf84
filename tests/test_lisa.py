"""LISA (issue 13; core/memory/lisa.py): axolotl lisa_n_layers, --lisa-layers, and its trace.

axolotl's LISACallback (utils/callbacks/lisa.py) freezes every decoder layer and unfreezes lisa_n_layers of them every
lisa_step_interval steps; the embeddings, final norm and head keep training. The Trainer builds its optimizer over every
parameter before the callback runs, and torch AdamW keeps each state once made: the worst step holds every layer's
optimizer states beside the active layers' gradients.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import SpecError, VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (config.json: hidden 2048, 32 heads of 64 with 4 KV heads, MLP 5632, 22 layers, vocab 32,000 untied).
# One decoder layer: q/o 2048 x 2048, k/v 256 x 2048, gate/up/down 5632 x 2048, 2 x 2048 norms = 44,044,288
# (sum(p.numel()) of layers[0]); outside the layers: embed_tokens and lm_head 32,000 x 2048 each, the final norm 2048.
LAYER = 2 * 2048 * 2048 + 2 * 256 * 2048 + 3 * 5632 * 2048 + 2 * 2048
OUTSIDE = 2 * 32_000 * 2048 + 2048
TOTAL = 22 * LAYER + OUTSIDE  # 1,100,048,384: the preset's published count
LISA = TrainingSpec(method="full", lisa_layers=2, batch_size=2, seq_len=256)
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=1000, hidden_size=256,
                  intermediate_size=704, num_layers=4, num_attention_heads=4, num_kv_heads=2)


def test_every_layer_keeps_its_states_the_active_ones_have_gradients() -> None:
    m = presets.find_model("tinyllama-1.1b")
    b = estimate(m, LISA)
    assert TOTAL == 1_100_048_384 == b.parameters
    trained = 2 * LAYER + OUTSIDE  # the two active layers, the embeddings, the final norm and the head
    assert b.trainable_parameters == trained
    assert b.weights == 2 * TOTAL  # bf16 (the default recipe: 16-bit weights and gradients, fp32 moments)
    assert b.gradients == 2 * trained
    # torch AdamW exp_avg + exp_avg_sq, fp32, for every parameter: each layer drawn once has made its states
    assert b.details["optimizer_state.moments"] == 8 * TOTAL
    # the first step's states: the active layers' and the always-trained ones'
    assert b.details["optimizer_state.lisa_first_step"] == 8 * trained
    assert any(n.startswith("LISA: 2 of the 22 decoder layers") for n in b.notes)
    # full fine-tuning holds the same states and every gradient: LISA's worst step is below it by the frozen layers'
    full = estimate(m, TrainingSpec(method="full", batch_size=2, seq_len=256))
    assert full.optimizer_state == b.optimizer_state and full.gradients - b.gradients == 2 * 20 * LAYER
    assert b.tensor_peak_bytes < full.tensor_peak_bytes


def test_every_layer_records_a_graph() -> None:
    # the trained embedding gives every layer's input a gradient: with checkpointing every layer keeps its input, as in
    # full fine-tuning; without, the frozen layers save their input-gradient set, more than partial fine-tuning of the
    # same top layers with the embeddings frozen (whose frozen layers record nothing)
    m = presets.find_model("tinyllama-1.1b")
    gc = replace(LISA, grad_checkpointing=True)
    full_gc = estimate(m, TrainingSpec(method="full", batch_size=2, seq_len=256, grad_checkpointing=True))
    assert estimate(m, gc).details["activations.layers"] == full_gc.details["activations.layers"]
    top = estimate(m, TrainingSpec(method="freeze", freeze_layers=20, batch_size=2, seq_len=256))
    full = estimate(m, TrainingSpec(method="full", batch_size=2, seq_len=256))
    got = estimate(m, LISA)
    assert top.activations < got.activations < full.activations


def test_lisa_matches_the_trace_of_a_small_llama() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # the tracer builds the optimizer over every parameter, then switches layers before each step (bottom-up, 2 at a
    # time, until every layer has states) and reports a step with the top 2 trained (trace/_run.py lisa_schedule).
    # (checkpointing, band of (estimate - trace) / trace): measured +0.06 % without checkpointing, +2.19 % with it
    # (the lowest trained layer's moment counts its whole gradient beside its whole recomputed set: on this toy a
    # layer's weights are as large as its activations; full fine-tuning on the same toy is +3.13 %)
    for gc, (lo, hi) in ((False, (0.0, 0.002)), (True, (0.0, 0.025))):
        t = replace(LISA, batch_size=2, seq_len=128, grad_checkpointing=gc)
        got, ref = estimate(SMALL, t), trace(SMALL, t)
        # every parameter's AdamW states exist at the reported step (the warm-up steps made them)
        assert got.optimizer_state == ref.by_category_at_peak["optimizer_state"]
        assert ref.trainable_parameters == ref.parameters  # the optimizer was built before any layer was frozen
        err = (got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes
        assert lo <= err <= hi, f"estimate {got.tensor_peak_bytes:,} vs trace {ref.peak_bytes:,}"
        # the step: fused AdamW over the parameters with a gradient (the active layers and the non-layer ones)
        assert got.phases["optimizer_step"] == pytest.approx(ref.phase_peaks["optimizer_step"], rel=0.001)


@pytest.mark.parametrize(("change", "match"), [
    ({"method": "lora"}, "use --method full"),
    ({"badam": True}, "keep one"),
    ({"gpus_per_node": 2}, "one GPU"),
    ({"zero": 2}, "one GPU"),
    ({"optimizer": "galore-adamw"}, "--optimizer adamw"),
    ({"optimizer_in_bwd": True}, "--optimizer-in-bwd"),
    ({"mode": "inference"}, "drop it for --mode inference"),
    ({"objective": "dpo"}, "supervised step"),
    ({"lisa_layers": 0}, "lisa_layers"),
])
def test_lisa_refuses_what_is_not_modelled(change: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        replace(LISA, **change)


@pytest.mark.parametrize(("name", "layers", "match"), [
    ("mixtral-8x7b", 2, "uniform decoder layers"),
    ("tinyllama-1.1b", 23, "22 decoder layers"),
])
def test_lisa_refuses_models_it_does_not_cover(name: str, layers: int, match: str) -> None:
    with pytest.raises(VramcalcError, match=match):
        estimate(presets.find_model(name), replace(LISA, lisa_layers=layers))


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ax.yaml"
    p.write_text("base_model: TinyLlama/TinyLlama-1.1B-Chat-v1.0\nmicro_batch_size: 2\nsequence_len: 512\n"
                 "bf16: true\n" + text)
    return p


def test_axolotl_lisa_keys(tmp_path: Path) -> None:
    run = runfiles.load(_file(tmp_path, "lisa_n_layers: 4\nlisa_step_interval: 20\n"
                                        "lisa_layers_attribute: model.layers\n"))[0]
    assert run.options["lisa_layers"] == 4 and run.options["method"] == "full"
    assert run.unmodelled == [] and run.ignored == []
    assert {"lisa_n_layers", "lisa_step_interval", "lisa_layers_attribute"} <= set(run.mapped)
    off = runfiles.load(_file(tmp_path, "lisa_step_interval: 20\n"))[0]
    assert "lisa_layers" not in off.options and off.unmodelled == [] and off.ignored == []
    with pytest.raises(runfiles.RunFileError, match="lisa_layers_attribute"):
        runfiles.load(_file(tmp_path, "lisa_n_layers: 2\nlisa_layers_attribute: model.vision_tower.blocks\n"))
    # LISA over LoRA: read, then refused by the spec in one line (as the CLI reports it)
    from vramcalc.core.options import OptionValues, training_spec

    lora = runfiles.load(_file(tmp_path, "adapter: lora\nlisa_n_layers: 2\n"))[0]
    with pytest.raises(SpecError, match="use --method full"):
        training_spec(OptionValues({}).run(lora.options))


def test_cli_refuses_lisa_with_lora_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--lisa-layers", "2", "--method", "lora"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--method full" in err
