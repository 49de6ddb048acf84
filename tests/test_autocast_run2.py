"""--precision autocast-* with TRL's DPO / IPO (peft, the adapters-off reference) and the loss savers
(fused-linear, cut, chunked) on --grid autocast2's dense families: Qwen3, OLMo 2, Gemma 1-3, Phi-3, StarCoder2
(core/memory/upcast_norms.py AUTOCAST_RUN_FAMILIES, AUTOCAST_OBJECTIVES; --grid autocast-run2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

FAMILIES = ("qwen3-0.6b", "olmo-2-0425-1b", "gemma-2b", "gemma-2-2b", "gemma-3-1b", "phi-3-mini-4k", "starcoder2-3b")


def _lora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "lora_rank": 8, "lora_targets": ("all-linear",), "batch_size": 1,
                           "seq_len": 256, "prompt_len": 64, "precision": "autocast-bf16", **kw})


def _cut(name: str, layers: int = 2) -> object:
    # the autocast2 grid's cut (benchmarks/accuracy.py "dequant:" models): a few layers, a 2,048-token vocabulary,
    # Gemma 2/3's sliding-window layer count scaled with the cut
    m = presets.find_model(name)
    local = m.sliding_window_layers
    return replace(m, num_layers=layers, vocab_size=2_048,
                   sliding_window_layers=None if local is None else max(1, round(local * layers / m.num_layers)))


@pytest.mark.parametrize("name", FAMILIES)
def test_preference_and_loss_savers_are_modelled_on_every_autocast2_family(name: str) -> None:
    # each is refused on main before --grid autocast-run2 ("traced on Llama, Mistral, Qwen2 and GPT-2"); now the
    # estimate runs, IPO being DPOTrainer's loss_type "ipo": the same step, the same bytes
    m = presets.find_model(name)
    peaks = {o: estimate(m, _lora(objective=o)).tensor_peak_bytes for o in ("dpo", "ipo")}
    assert peaks["dpo"] == peaks["ipo"] > 0, peaks
    # Gemma 2's final logit softcapping keeps its own refusal of the loss savers (memory/__init__.py)
    for loss in () if name == "gemma-2-2b" else ("fused-linear", "cut", "chunked"):
        assert estimate(m, _lora(loss=loss, prompt_len=0)).tensor_peak_bytes > 0


@pytest.mark.parametrize("name,kw,needle", [
    # mixture-of-experts and vision-language models: LoRA / QLoRA SFT is traced (--grid autocast-moe / -vlm), DPO and
    # the loss savers are not
    ("mixtral-8x7b", {"objective": "dpo"}, "traced on Llama, Mistral, Qwen2, Qwen3"),
    ("mixtral-8x7b", {"loss": "chunked", "prompt_len": 0}, "traced on Llama, Mistral, Qwen2, Qwen3"),
    # ORPO (no reference) is not traced, nor DPO with freeze; KTO is traced on Llama and GPT-2 only (--grid
    # autocast-kto, tests/test_autocast_dora.py)
    ("qwen3-0.6b", {"objective": "orpo", "prompt_len": 0}, "TRL's DPO, IPO and KTO"),
    ("qwen3-0.6b", {"objective": "kto"}, "--objective kto on qwen3-0.6b"),
    ("qwen3-0.6b", {"objective": "dpo", "method": "freeze", "freeze_layers": 2}, "TRL's DPO, IPO and KTO"),
    ("qwen3-0.6b", {"objective": "dpo", "ref_model": "copy"}, "adapters-off reference"),
])
def test_what_is_not_traced_is_refused_in_one_line(name: str, kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(presets.find_model(name), _lora(**kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name,kw", [
    ("qwen3-0.6b", {"objective": "dpo", "grad_checkpointing": True}),
    ("gemma-3-1b", {"objective": "ipo"}),
    # the reference's no-grad forward on Phi-3's fused gate_up_proj (an h x 2i dequantized weight: preference.py
    # nograd_layer_bytes); with checkpointing the layer rerun reads +6 % here, as SFT QLoRA does (docs/accuracy.md)
    ("phi-3-mini-4k", {"objective": "ipo", "method": "qlora", "kbit_prep": False}),
    # StarCoder2's functional dropout masks kept under DPO (preference.py FUNCTIONAL_DROPOUT_FAMILIES)
    ("starcoder2-3b", {"objective": "dpo"}),
    ("starcoder2-3b", {"loss": "fused-linear", "prompt_len": 0, "batch_size": 2}),
])
def test_matches_the_trace(name: str, kw: dict[str, object]) -> None:
    # the tracer loads bf16 weights and runs TRL's step (trace/_preference.py, trace/_loss.py) under CUDA autocast
    # with peft's fp32 adapters (QLoRA's cast to bf16 as TRL does); 2 layers, a 2,048-token vocabulary, s256
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _cut(name), _lora(**kw)
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def test_preference_run_files_on_qwen3_map_to_autocast(tmp_path: Path) -> None:
    # axolotl `rl: dpo` / `rl: ipo` and LLaMA-Factory `stage: dpo` LoRA files with bf16 on Qwen3: peft's fp32
    # adapters, the step under the Trainer's autocast: autocast-bf16, no fallback note (before: bf16 with a note)
    files = {
        "ax.yaml": "base_model: Qwen/Qwen3-0.6B\nrl: {rl}\nadapter: lora\nlora_r: 16\nlora_target_linear: true\n"
                   "bf16: true\nmicro_batch_size: 2\nsequence_len: 1024\n",
        "lf.yaml": "model_name_or_path: Qwen/Qwen3-0.6B\nstage: dpo\ndo_train: true\nfinetuning_type: lora\n"
                   "lora_target: all\npref_loss: {rl}\nbf16: true\nper_device_train_batch_size: 2\ncutoff_len: 1024\n",
    }
    for name, text in files.items():
        for rl, objective in (("dpo", "dpo"), ("ipo", "ipo")) if name == "lf.yaml" else (("dpo", "dpo"),
                                                                                          ("ipo", "ipo")):
            f = tmp_path / name
            f.write_text(text.format(rl="sigmoid" if rl == "dpo" and name == "lf.yaml" else rl))
            run = runfiles.load(f)[0]
            assert (run.options["objective"], run.options["precision"]) == (objective, "autocast-bf16"), (name, rl)
            assert not any("autocast-bf16 is not modelled" in n for n in run.notes), run.notes


def test_a_trl_dpo_file_on_qwen3_estimates_under_autocast(tmp_path: Path) -> None:
    # a TRL DPO file names no model (hf-training-args): use_peft + bf16 reads as autocast-bf16, and the estimate
    # with --model qwen3-0.6b now runs (exit 0) where it exited 2 before
    from typer.testing import CliRunner

    from vramcalc.cli.app import app

    f = tmp_path / "dpo.yaml"
    # (model_init_kwargs names bf16: without it TRL loads float32, amp-bf16)
    f.write_text("use_peft: true\nlora_dropout: 0.05\nbf16: true\nbeta: 0.1\nper_device_train_batch_size: 2\n"
                 "max_length: 1024\nmax_prompt_length: 256\nmodel_init_kwargs: {dtype: bfloat16}\n")
    assert runfiles.load(f)[0].options["precision"] == "autocast-bf16"
    r = CliRunner().invoke(app, ["estimate", "qwen3-0.6b", "--config", str(f)])
    assert r.exit_code == 0, r.output
    assert "autocast-bf16" in r.output


@pytest.mark.parametrize("name,kw", [
    # the rerun stops at down_proj's lora_B input (non-reentrant checkpointing's early stop): lora_B's output and its
    # scaled copy are never made; measured before the fix +2.90 % over the trace (the two 16-bit hidden-wide tensors),
    # -0.02 % after (activations.py, the --upcast-norms rerun branch's `stopped`)
    ("qwen3-0.6b", {"batch_size": 2, "seq_len": 1024}),
    # Gemma 3's post_feedforward_layernorm saves the MLP's output: its rerun runs on through the scaling mul, and the
    # two tensors stay counted (-0.14 % with them, about -3 % without)
    ("gemma-3-1b", {"method": "qlora", "kbit_prep": False, "batch_size": 1, "seq_len": 512}),
])
def test_the_checkpointed_rerun_stops_at_lora_b_unless_a_norm_follows_the_mlp(name: str, kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _cut(name), _lora(prompt_len=0, grad_checkpointing=True, **kw)
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.01 <= err <= 0.01, (err, e.phases, r.phase_peaks, r.peak_op)
