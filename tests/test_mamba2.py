"""Mamba-2 (issue 15): parameters, LoRA targets and the chunked SSD scan's saved tensors (memory/ssm.py).

Parameter counts against transformers' own Mamba2ForCausalLM, the config.json reader's defaults and shape rule, what
a run refuses, the per-layer saved set against numbers measured on one Mamba2Block, and (where transformers is
installed) one traced step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, ssm
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import count_params, mamba2_dims, resolve_targets
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
MAMBA2_PRESETS = ("mamba2-130m", "mamba2-2.7b", "mamba-codestral-7b")
# The two shapes benchmarks/accuracy.py --grid ssm2 traces: (hidden, heads, head_dim, n_groups, state, chunk)
SHAPE_1 = (256, 8, 64, 2, 64, 64)
SHAPE_2 = (256, 16, 32, 1, 128, 48)


def tiny(shape: tuple[int, ...], layers: int = 2, vocab: int = 2048) -> ModelSpec:
    h, heads, head_dim, groups, state, chunk = shape
    d = {"model_type": "mamba2", "hidden_size": h, "num_hidden_layers": layers, "num_heads": heads,
         "head_dim": head_dim, "n_groups": groups, "state_size": state, "chunk_size": chunk, "vocab_size": vocab}
    return spec_from_hf_config(d, f"mamba2-h{h}", "tests/test_mamba2.py")


def test_fixture_reads_as_published() -> None:
    # tests/data/hf/mamba-codestral-7b.json: hidden 4096, 64 layers, expand 2, 128 heads of 64, 8 groups, state 128
    m = spec_from_hf_config(json.loads((HF / "mamba-codestral-7b.json").read_text()), "m", "f")
    assert (m.family, m.hidden_size, m.intermediate_size, m.num_layers) == ("mamba2", 4096, 8192, 64)
    assert (m.ssm_head_dim, m.ssm_n_groups, m.ssm_state_size, m.ssm_chunk_size) == (64, 8, 128, 256)
    assert (m.ssm_conv_kernel, m.ssm_conv_bias, m.ssm_proj_bias, m.tie_word_embeddings) == (4, True, False, False)


def test_fixture_count() -> None:
    # sum(p.numel()) of Mamba2ForCausalLM from the fixture, transformers 5.24 on the meta device
    m = spec_from_hf_config(json.loads((HF / "mamba-codestral-7b.json").read_text()), "m", "f")
    assert count_params(m) == 7_285_403_648


def test_fixture_count_matches_the_library() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = json.loads((HF / "mamba-codestral-7b.json").read_text())
    skip = ("model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype")
    config = transformers.Mamba2Config(**{k: v for k, v in d.items() if k not in skip})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MAMBA2_PRESETS)
def test_preset_count_is_its_published_total(name: str) -> None:
    m = presets.find_model(name)
    assert count_params(m) == m.published_parameters


@pytest.mark.parametrize("name", MAMBA2_PRESETS)
def test_preset_count_matches_the_library(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = presets.find_model(name)
    assert m.hidden_size and m.intermediate_size
    config = transformers.Mamba2Config(
        hidden_size=m.hidden_size, num_hidden_layers=m.num_layers, vocab_size=m.vocab_size,
        num_heads=m.intermediate_size // m.ssm_head_dim, head_dim=m.ssm_head_dim, n_groups=m.ssm_n_groups,
        state_size=m.ssm_state_size, chunk_size=m.ssm_chunk_size, tie_word_embeddings=m.tie_word_embeddings)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert count_params(m) == sum(p.numel() for p in model.parameters())


def test_count_is_the_sum_of_the_mixer_tensors() -> None:
    # Mamba2Mixer per layer: in_proj h x (i + conv_dim + heads), conv1d conv_dim x 4 + conv_dim, dt_bias, A_log and D
    # (heads each), the gated norm (i), out_proj i x h; Mamba2Block.norm (h); embeddings, norm_f, untied lm_head.
    m = tiny(SHAPE_1)
    h, i, heads, conv, proj = 256, 512, 8, 512 + 2 * 2 * 64, 512 + 768 + 8
    assert mamba2_dims(m) == (heads, conv, proj)
    layer = h * proj + conv * 4 + conv + 3 * heads + i + i * h + h
    assert count_params(m) == 2 * layer + 2048 * h + h + 2048 * h


def test_reader_fills_mamba2_config_defaults() -> None:
    # configuration_mamba2.py: state_size 128, n_groups 8, chunk_size 256, conv_kernel 4, use_conv_bias True,
    # use_bias False, residual_in_fp32 True, tie_word_embeddings False (num_heads x head_dim must be 2 x hidden)
    m = spec_from_hf_config({"model_type": "mamba2", "hidden_size": 512, "num_heads": 16, "head_dim": 64}, "m", "f")
    assert (m.ssm_state_size, m.ssm_n_groups, m.ssm_chunk_size, m.ssm_conv_kernel) == (128, 8, 256, 4)
    assert (m.ssm_conv_bias, m.ssm_proj_bias, m.ssm_residual_fp32, m.tie_word_embeddings) == (True, False, True, False)


def test_heads_times_head_dim_must_be_the_intermediate_size() -> None:
    with pytest.raises(PresetFileError, match="must equal expand x hidden_size"):
        spec_from_hf_config({"model_type": "mamba2", "hidden_size": 512, "num_heads": 8, "head_dim": 64}, "m", "f")


def test_a_hand_written_mamba2_needs_all_its_fields() -> None:
    base = {"name": "x", "source": "t", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 128,
            "num_layers": 1, "family": "mamba2", "ssm_state_size": 16, "ssm_conv_kernel": 4, "ssm_head_dim": 16}
    with pytest.raises(SpecError, match="ssm_head_dim, ssm_n_groups and ssm_chunk_size"):
        ModelSpec(**base)
    with pytest.raises(SpecError, match="not a multiple of ssm_n_groups"):
        ModelSpec(**base, ssm_n_groups=3, ssm_chunk_size=32)  # 8 heads in 3 groups


def test_default_lora_target_is_in_proj() -> None:
    # Mamba2Mixer's Linears are in_proj and out_proj; peft refuses out_proj for model_type mamba2
    # (tuners_utils.py _check_lora_target_modules_mamba)
    assert [lin.module for lin in resolve_targets(tiny(SHAPE_1), ("auto",))] == ["in_proj"]


def test_cli_refuses_out_proj_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "mamba2-130m", "--method", "lora", "--lora-targets", "out_proj"], capsys)
    assert code == 2
    assert err.strip() == ("error: LoRA on out_proj of mamba2-130m: peft refuses out_proj for Mamba models; use "
                           "--lora-targets in_proj")


@pytest.mark.parametrize(("options", "words"), [
    (["--precision", "amp-bf16"], "autocast over Mamba-2's PyTorch path"),
    (["--mode", "inference"], "generate() for Mamba-2"),
    (["--mode", "serve"], "use --mode train (Mamba-2 inference is not modelled)"),
    (["--method", "ia3"], "only full, freeze, lora and qlora"),
    (["--objective", "dpo", "--method", "lora"], "only sft"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "mamba2-130m", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


@pytest.mark.parametrize(("shape", "seq", "trained", "measured"), [
    (SHAPE_1, 64, True, 6_464_328), (SHAPE_1, 64, False, 5_673_768),
    (SHAPE_2, 64, True, 16_518_930), (SHAPE_2, 64, False, 15_593_170), (SHAPE_2, 128, True, 25_638_560)])
def test_one_layer_saved_set_is_measured(shape: tuple[int, ...], seq: int, trained: bool, measured: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one Mamba2Block
    # (transformers 5.24, bf16 weights, input fp32 with requires_grad) runs forward on CPU at batch 2, parameters
    # excluded; `trained` False: every block parameter frozen (LoRA's frozen base without its adapters).
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=seq)
    layer = ssm.layer_activations(tiny(shape), t, recipe_of(t), trained)
    assert layer.saved(2 * seq, seq) == measured


def test_batch_one_single_chunk_is_over_at_most_two_percent() -> None:
    # Measured as above at batch 1 x 64 tokens in one 256-token chunk (hidden 128, 4 heads of 64, state 128): 7,027,816
    # bytes. The einsums' copies that become views there are counted for B and C only (one chunk state more).
    m = tiny((128, 4, 64, 1, 128, 256))
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=64)
    saved = ssm.layer_activations(m, t, recipe_of(t), True).saved(64, 64)
    assert 7_027_816 <= saved <= 7_027_816 * 1.02


def test_the_scan_pads_the_row_to_the_chunk() -> None:
    # mamba2_chunk_scan pads seq to a multiple of chunk_size: 65 tokens cost the chunk-wise terms of 128
    m = tiny(SHAPE_1)
    t64, t65, t128 = (TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=n)
                      for n in (64, 65, 128))
    chunk = {n: sum(x.per_sample for x in ssm.layer_activations(m, t, recipe_of(t), True).terms if not x.per_token)
             for n, t in ((64, t64), (65, t65), (128, t128))}
    assert chunk[65] == chunk[128] > chunk[64]
    assert ssm.padded_length(m, t65) == (65, 128)


def test_notes_name_the_padding_and_the_kernel_path() -> None:
    # mamba_ssm ssd_combined.py MambaSplitConv1dScanCombinedFn saves zxbcdt (in_proj's output, 3,352 wide), out_x
    # (1,536) and rstd (fp32, one group); the block adds RMSNorm (fp32 input 4 x 768 + rsqrt 4, normalized 2 x 768) and
    # in_proj's input (2 x 768): mamba2-130m, full bf16, a 512-token row.
    b = estimate(presets.find_model("mamba2-130m"), TrainingSpec(method="full", seq_len=512))
    kernel = (4 * 768 + 4 + 2 * 768) + 2 * 768 + 2 * (3352 + 1536) + 4
    note = next(n for n in b.notes if "mamba2_chunk_scan" in n)
    assert "(512 -> 512 tokens)" in note and f"{kernel * 512:,} bytes per sequence" in note


def test_checkpointing_keeps_fp32_layer_inputs() -> None:
    m = tiny(SHAPE_1, layers=4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64, grad_checkpointing=True)
    assert estimate(m, t).details["activations.layers"] == 4 * 4 * 256 * 2 * 64


def test_trace_matches_the_estimate() -> None:
    # --grid ssm2 "h256-l2-s64-g2-q64 | full pure-bf16 | b2 s64 | no-gc": -0.09 % against the tracer
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = tiny(SHAPE_1), TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(trace(m, t).peak_bytes, rel=0.01)


def test_qlora_runs_on_the_torch_path() -> None:
    # Mamba2Mixer's PyTorch path calls in_proj and out_proj as modules: both are bitsandbytes 4-bit Linears
    m = presets.find_model("mamba2-130m")
    full = estimate(m, TrainingSpec(method="lora"))
    q = estimate(m, TrainingSpec(method="qlora"))
    assert q.weights < full.weights


def test_unknown_mamba2_method_message_is_not_generic() -> None:
    with pytest.raises(UnsupportedCombination, match="Mamba-2"):
        estimate(tiny(SHAPE_1), TrainingSpec(method="ia3"))


# (jamba, bamba, falcon_h1, granitemoehybrid's and nemotron_h's dense models and zamba2 are read now:
# tests/test_jamba.py and the others; io/hf_config.py HYBRIDS is empty, so a stand-in entry checks the refusal's words)
def test_hybrids_are_refused_naming_what_they_mix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # a hybrid transformers ships whose layers are not modelled is refused by name, saying what its layers mix
    from vramcalc.io import hf_config

    model_type, words = "hybrid_stand_in", "Stand-in (Mamba-2 and attention layers)"
    monkeypatch.setitem(hf_config.HYBRIDS, model_type, words)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2}))
    code, _, err = invoke(["estimate", str(path)], capsys)
    assert code == 2 and words in err and "not the mix" in err and err.count("\n") == 1


def test_the_plan_cache_keys_mamba2_on_the_row_length() -> None:
    # Mamba-2's layer terms hold the row padded to chunk_size (memory/ssm.py padded_length), so the estimate's plan
    # cache (memory/__init__.py _plan, keyed without the token fields) must not serve one --seq-len's plan to
    # another: the explain test once saw codestral's per-layer bytes of a --seq-len test_docs had run before it.
    import vramcalc.core.memory as memory
    from vramcalc.io import presets

    m = presets.find_model("mamba-codestral-7b")
    t = TrainingSpec(method="qlora", grad_checkpointing=True, seq_len=512)
    # chunk_size 256 (the published config): 100 tokens pad to 256, 512 stay 512
    estimate(m, TrainingSpec(method="qlora", grad_checkpointing=True, seq_len=100))
    after = estimate(m, t).tensor_peak_bytes
    memory._plans.clear()
    assert after == estimate(m, t).tensor_peak_bytes
