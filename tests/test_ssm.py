"""State-space models (issue 15): Mamba's parameters, LoRA targets and the slow path's saved tensors (memory/ssm.py).

Parameter counts against transformers' own MambaForCausalLM, the config.json reader's defaults, what a run refuses,
the per-layer saved set against numbers measured with the tracer, and (where torch is installed) one traced step.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, ssm
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import count_params, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
MAMBA_PRESETS = ("mamba-130m", "mamba-370m", "mamba-790m", "mamba-1.4b", "mamba-2.8b")


def tiny(hidden: int = 64, layers: int = 2, state: int = 16, vocab: int = 512):
    """A Mamba config of the size benchmarks/accuracy.py --grid ssm traces (MambaConfig defaults otherwise)."""
    d = {"model_type": "mamba", "hidden_size": hidden, "num_hidden_layers": layers, "state_size": state,
         "vocab_size": vocab}
    return spec_from_hf_config(d, f"mamba-h{hidden}-l{layers}", "tests/test_ssm.py")


def test_fixture_reads_as_published() -> None:
    # tests/data/hf/mamba-130m-hf.json: hidden 768, 24 layers, expand 2, state 16, conv 4, time_step_rank 48
    m = spec_from_hf_config(json.loads((HF / "mamba-130m-hf.json").read_text()), "m", "f")
    assert (m.family, m.hidden_size, m.intermediate_size, m.num_layers) == ("mamba", 768, 1536, 24)
    assert (m.ssm_state_size, m.ssm_conv_kernel, m.ssm_dt_rank, m.tie_word_embeddings) == (16, 4, 48, True)
    assert m.num_attention_heads is None


def test_reader_fills_mamba_config_defaults() -> None:
    # configuration_mamba.py: expand 2, state_size 16, conv_kernel 4, time_step_rank "auto" = ceil(hidden / 16),
    # use_conv_bias True, use_bias False, residual_in_fp32 True, tie_word_embeddings True
    m = tiny(hidden=100)
    assert m.intermediate_size == 200 and m.ssm_dt_rank == math.ceil(100 / 16) == 7
    assert (m.ssm_state_size, m.ssm_conv_kernel, m.ssm_conv_bias, m.ssm_proj_bias, m.ssm_residual_fp32) == \
        (16, 4, True, False, True)


@pytest.mark.parametrize("name", MAMBA_PRESETS)
def test_preset_count_is_its_published_total(name: str) -> None:
    m = presets.find_model(name)
    assert count_params(m) == m.published_parameters


def test_count_is_the_sum_of_the_mixer_tensors() -> None:
    # MambaMixer per layer: in_proj 2i x h, conv1d i x 1 x 4 + i, x_proj (r + 2s) x i, dt_proj i x r + i, A_log i x s,
    # D i; the block's RMSNorm h; then embeddings v x h (tied head) and norm_f h. mamba-130m: h 768, i 1536, r 48, s 16.
    h, i, r, s, n, v = 768, 1536, 48, 16, 24, 50280
    per_layer = 2 * i * h + i * 4 + i + (r + 2 * s) * i + i * r + i + i * s + i + h * i + h
    assert count_params(presets.find_model("mamba-130m")) == n * per_layer + v * h + h


@pytest.mark.parametrize("name", MAMBA_PRESETS)
def test_count_matches_the_library(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = presets.find_model(name)
    config = transformers.MambaConfig(hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                                      vocab_size=m.vocab_size, state_size=m.ssm_state_size)
    with torch.device("meta"):
        model = transformers.MambaForCausalLM(config)
    assert count_params(m) == sum(p.numel() for p in model.parameters())


def test_fixture_count_matches_the_library() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = json.loads((HF / "mamba-130m-hf.json").read_text())
    config = transformers.AutoConfig.for_model("mamba", **{k: v for k, v in d.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


def test_default_lora_targets_are_in_proj_and_x_proj() -> None:
    m = tiny()
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["in_proj", "x_proj"]


@pytest.mark.parametrize("targets", [("out_proj",), ("all-linear",), ("dt_proj",), ("in_proj", "out_proj")])
def test_lora_targets_peft_refuses_or_never_runs_are_refused(targets: tuple[str, ...]) -> None:
    # peft tuners_utils.py _check_lora_target_modules_mamba refuses out_proj (all-linear includes it); MambaMixer
    # multiplies by dt_proj.weight directly, so a dt_proj adapter would be trainable but never called.
    with pytest.raises(UnsupportedCombination, match="use --lora-targets in_proj,x_proj"):
        estimate(tiny(), TrainingSpec(method="lora", lora_targets=targets))


def test_cli_refuses_out_proj_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "mamba-130m", "--method", "lora", "--lora-targets", "out_proj"], capsys)
    assert code == 2
    assert err.strip() == ("error: LoRA on out_proj of mamba-130m: peft refuses out_proj for Mamba models; use "
                           "--lora-targets in_proj,x_proj")


@pytest.mark.parametrize(("options", "words"), [
    (["--method", "qlora"], "dt_proj.weight and out_proj.weight directly"),
    (["--method", "ia3"], "only full, freeze and lora"),
    (["--objective", "dpo", "--method", "lora"], "only sft"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "mamba-130m", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_inference_keeps_a_fixed_recurrent_state() -> None:
    # cache_utils.py LinearAttentionLayer: conv_states (batch x 1536 x 4, bf16) and recurrent_states (batch x 1536 x 16,
    # fp32) per layer, 24 layers: the same at any context length
    m = presets.find_model("mamba-130m")
    short, long = (estimate(m, TrainingSpec(mode="inference", batch_size=2, seq_len=n, precision="bf16"))
                   for n in (512, 8192))
    assert short.kv_cache == long.kv_cache == 24 * 2 * 1536 * (4 * 2 + 16 * 4)


@pytest.mark.parametrize(("shape", "run", "measured"), [
    ((64, 2), (2, 64, 4), 3_660_800), ((128, 3), (1, 128, 8), 7_670_784)])
def test_inference_peak_matches_the_tracer(shape: tuple[int, int], run: tuple[int, int, int], measured: int) -> None:
    # Measured with trace/_generate.py (generate()'s prefill + decode steps under FakeTensorMode, transformers 5.24's
    # PyTorch fallback), bf16, state 16, vocab 512: the prefill's peak, inside the last layer's scan.
    (h, n), (b, ctx, new) = shape, run
    t = TrainingSpec(mode="inference", batch_size=b, seq_len=ctx, new_tokens=new, precision="bf16")
    e = estimate(tiny(hidden=h, layers=n), t)
    assert e.tensor_peak_bytes == pytest.approx(measured, rel=0.005)


def test_config_json_estimates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", str(HF / "mamba-130m-hf.json"), "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["parameters"] == 129_135_360


def _per_layer(m, t) -> int:
    """Forward-phase bytes one more layer adds (its saved set, weights, gradients and optimizer states)."""
    more = replace(m, num_layers=(m.num_layers or 0) + 1)
    return estimate(more, t).phases["forward"] - estimate(m, t).phases["forward"]


@pytest.mark.parametrize(("method", "measured"), [("full", 2_305_024), ("lora", 2_244_096)])
def test_one_layer_matches_the_tracer(method: str, measured: int) -> None:
    # Measured with the tracer (trace/ on transformers 5.24's slow path): the forward peak of the tiny config at
    # batch 2 x seq 32 with 3 layers less with 2 layers; full pure-bf16 and LoRA (in_proj, x_proj; fp32 adapters).
    t = TrainingSpec(method=method, precision="pure-bf16" if method == "full" else "bf16", batch_size=2, seq_len=32)
    assert _per_layer(tiny(), t) == pytest.approx(measured, rel=0.011)


def test_scan_terms_grow_with_intermediate_times_state() -> None:
    # discrete A, discrete B (fp32) and each step's state (fp32 + its 16-bit cast): 14 bytes x intermediate x state
    # per token; doubling the state size adds exactly that per token again.
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=64)
    recipe = recipe_of(t)
    small, big = tiny(state=16), tiny(state=32)
    per_token = {s: sum(x.per_token for x in ssm.layer_activations(m, t, recipe, True).terms)
                 for s, m in ((16, small), (32, big))}
    i = small.intermediate_size
    # x_proj's output grows by 2 x 16 columns (16-bit), B.float() by 16 (fp32)
    assert per_token[32] - per_token[16] == 14 * i * 16 + 2 * 2 * 16 + 4 * 16


def test_checkpointing_keeps_fp32_layer_inputs() -> None:
    # residual_in_fp32: MambaBlock returns residual (fp32) + mixer output, so a checkpointed layer keeps 4 x hidden
    m = tiny(layers=4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=32, grad_checkpointing=True)
    b = estimate(m, t)
    assert b.details["activations.layers"] == 4 * 4 * m.hidden_size * 2 * 32


def test_slow_path_is_named_in_the_notes() -> None:
    b = estimate(presets.find_model("mamba-130m"), TrainingSpec(method="full"))
    assert any("mamba_selective_scan" in n and "mamba_ssm" in n for n in b.notes)


def test_trace_matches_the_estimate() -> None:
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = tiny(), TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=32)
    r = trace(m, t)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(r.peak_bytes, rel=0.01)


def test_kernel_path_figure_in_the_note_follows_mamba_inner_fn() -> None:
    # mamba_ssm MambaInnerFn.forward (checkpoint_lvl 1) saves xz (2 x 1536), x_dbl (48 + 2 x 16), B and C (16 each)
    # and out (1536) in bf16; the block adds RMSNorm (fp32 input 4 x 768 + rsqrt 4, normalized 2 x 768) and in_proj's
    # input (2 x 768): mamba-130m, full bf16.
    m, t = presets.find_model("mamba-130m"), TrainingSpec(method="full")
    expected = (4 * 768 + 4 + 2 * 768) + 2 * 768 + 2 * (2 * 1536 + 48 + 32 + 32 + 1536)
    assert ssm.kernel_saved_per_token(m, t, recipe_of(t)) == expected == 15_588
    assert any("15,588 bytes per token" in n for n in estimate(m, t).notes)


def test_freeze_with_the_tied_head_saves_in_frozen_layers() -> None:
    # Measured with the tracer: tiny config, 4 layers, 2 frozen, head (tied to the embedding) trained, batch 2 x seq 32,
    # pure bf16: 11,145,728 bytes at the peak (with only the trained layers saving, the estimate was 36 % under).
    t = TrainingSpec(method="freeze", freeze_layers=2, batch_size=2, seq_len=32, precision="pure-bf16")
    assert estimate(tiny(layers=4), t).tensor_peak_bytes == pytest.approx(11_145_728, rel=0.01)


def test_bad_time_step_rank_is_one_error() -> None:
    with pytest.raises(PresetFileError, match="time_step_rank"):
        spec_from_hf_config({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 512,
                             "time_step_rank": "big"}, "m", "m.json")


def test_a_hand_written_ssm_needs_its_conv_width() -> None:
    with pytest.raises(SpecError, match="conv1d width"):
        replace(tiny(), ssm_conv_kernel=0)
