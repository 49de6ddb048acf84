"""Bamba (issue 15): Mamba-2 mixer layers and attention layers at attn_layer_indices, an MLP in each (hybrid.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError
from vramcalc.core.memory import estimate, hybrid
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import block_linears, count_params, hybrid_mixer, mamba2_dims, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURE = json.loads((HF / "bamba-9b.json").read_text())
# The two shapes benchmarks/accuracy.py --grid bamba traces, cut from the fixture (BAMBA_SHAPES there)
SHAPE_A = {"hidden_size": 256, "num_hidden_layers": 3, "attn_layer_indices": [1], "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 512, "mamba_n_heads": 8, "mamba_d_head": 64,
           "mamba_d_state": 32, "mamba_chunk_size": 64, "vocab_size": 2048}
SHAPE_B = {"hidden_size": 256, "num_hidden_layers": 4, "attn_layer_indices": [0, 3], "num_attention_heads": 4,
           "num_key_value_heads": 1, "intermediate_size": 768, "mamba_n_heads": 16, "mamba_d_head": 32,
           "mamba_d_state": 64, "mamba_n_groups": 2, "mamba_chunk_size": 48, "vocab_size": 4096}


def tiny(shape: dict[str, object]):
    return spec_from_hf_config({**FIXTURE, **shape}, "bamba-tiny", "tests/test_bamba.py")


def test_fixture_reads_as_published() -> None:
    # Bamba-9B: 32 layers of hidden 4096, attention (32 heads, 8 KV) at layers 9, 18 and 27, MLP 14336; the mixer
    # 2 x 4096 wide in 128 heads of 64, state 128, one group, chunk 256, conv bias, untied
    m = spec_from_hf_config(FIXTURE, "m", "f")
    assert (m.family, m.hidden_size, m.num_layers, m.num_attention_heads, m.num_kv_heads) == ("bamba", 4096, 32, 32, 8)
    assert m.attention_layers == (9, 18, 27) and m.norms_per_layer == 2
    assert (m.intermediate_size, m.mixer_intermediate_size, m.mixer_head_dim, m.mixer_state_size) == \
        (14336, 8192, 64, 128)
    assert (m.ssm_n_groups, m.ssm_chunk_size, m.ssm_conv_kernel, m.ssm_conv_bias, m.mixer_gated_norm) == \
        (1, 256, 4, True, True)
    assert m.ssm_state_size == 0 and not m.tie_word_embeddings


def test_fixture_count() -> None:
    # sum(p.numel()) of BambaForCausalLM from the fixture, transformers 5.24 on the meta device
    assert count_params(spec_from_hf_config(FIXTURE, "m", "f")) == 9_780_235_392


@pytest.mark.parametrize("shape", [{}, SHAPE_A, SHAPE_B,
                                   {**SHAPE_B, "mamba_proj_bias": True, "mamba_conv_bias": False,
                                    "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True},
                                   {**SHAPE_A, "attn_layer_indices": None}],
                         ids=["published", "shape-a", "shape-b", "shape-b-biases-tied", "no-attention"])
def test_count_matches_the_library(shape: dict[str, object]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {**FIXTURE, **shape}
    config = transformers.BambaConfig(**{k: v for k, v in d.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        model = transformers.BambaForCausalLM(config)
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


def test_preset_count_is_its_published_total() -> None:
    m = presets.find_model("bamba-9b")
    assert count_params(m) == m.published_parameters == 9_780_235_392


def test_count_is_the_layers_by_kind() -> None:
    # Shape A, 3 layers, attention at layer 1. Attention layer: q (256 -> 4 x 64), k and v (256 -> 2 x 64), o; mixer
    # layer: in_proj 256 -> 512 + 576 + 8 (gate, conv_dim 512 + 2 x 32, dt heads), conv1d 576 x 4 + 576, dt_bias,
    # A_log, D (8 each), the gated norm (512), out_proj 512 -> 256; every layer: gate/up (256 -> 512), down, two norms
    m = tiny(SHAPE_A)
    assert mamba2_dims(hybrid_mixer(m)) == (8, 576, 1096)
    attn = 256 * 256 + 2 * 256 * 128 + 256 * 256
    mixer = 256 * 1096 + 576 * 4 + 576 + 3 * 8 + 512 + 512 * 256
    per_layer = 3 * 256 * 512 + 2 * 256
    assert count_params(m) == attn + 2 * mixer + 3 * per_layer + 2048 * 256 * 2 + 256
    assert {lin.module: lin.count for lin in block_linears(m)} == {
        "q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 1, "gate_proj": 3, "up_proj": 3, "down_proj": 3,
        "in_proj": 2, "out_proj": 2}


@pytest.mark.parametrize(("key", "value", "words"), [
    ("mamba_d_head", 32, "mamba_n_heads x mamba_d_head"), ("time_step_limit", [0.001, 0.1], "time_step_limit"),
    ("z_loss_coefficient", 0.1, "z_loss_coefficient"), ("attn_layer_indices", [1, 3], "attn_layer_indices"),
    ("head_dim", 32, "head_dim")])
def test_reader_refuses_what_it_does_not_count(key: str, value: object, words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        tiny({**SHAPE_A, key: value})


def test_lora_targets() -> None:
    # peft 0.21 has no default for bamba; it refuses out_proj for falcon_h1 and the pure Mambas, not for bamba, whose
    # PyTorch path calls out_proj as a module: all-linear takes the attention, mixer and MLP Linears
    m = tiny(SHAPE_A)
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["q_proj", "v_proj", "in_proj"]
    assert {lin.module for lin in resolve_targets(m, ("all-linear",))} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj", "out_proj"}


@pytest.mark.parametrize(("options", "words"), [
    (["--mode", "inference"], "generate() for Bamba"),
    (["--precision", "amp-bf16"], "autocast over the Mamba-2 mixer"),
    (["--method", "ia3"], "only full, lora and qlora"),
    (["--objective", "dpo", "--method", "lora"], "only sft"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "bamba-9b", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_config_json_is_read_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FIXTURE))
    code, out, _ = invoke(["estimate", str(path), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 9_780_235_392


@pytest.mark.parametrize(("shape", "trained", "measured", "over"), [
    (SHAPE_A, True, 5_970_504, 131_072), (SHAPE_A, False, 4_917_800, 131_072),
    (SHAPE_B, True, 12_325_650, 0), (SHAPE_B, False, 11_072_210, 0)])
def test_mixer_layer_saved_set_is_measured(shape: dict[str, object], trained: bool, measured: int, over: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one Bamba mixer
    # layer (BambaDecoderLayer "linear_attention", transformers 5.24, bf16, input bf16 with requires_grad) runs
    # forward on CPU at batch 2 x 64 tokens, parameters, buffers and the RoPE tables excluded; `trained` False: the
    # layer's parameters frozen. Shape B (chunk 48: two chunks) is exact; shape A (one chunk of 64) is over by one
    # padded fp32 chunk-wise tensor (2 x 64 x 8 heads x 64 x 4 B), the one-chunk case memory/ssm.py notes for Mamba-2.
    m = tiny(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert hybrid.bamba_mixer_layer(m, t, recipe_of(t), trained).saved(128, 64) - measured == over


@pytest.mark.parametrize(("shape", "measured"), [(SHAPE_A, 855_040), (SHAPE_B, 1_018_880)])
def test_frozen_attention_layer_saved_set_is_measured(shape: dict[str, object], measured: int) -> None:
    # Measured as above on a frozen Bamba attention layer (sdpa, RoPE on half of each head: its cat saves nothing).
    # (A trained one reads 65,536 B more on CPU: o_proj's input is a contiguous copy of the CPU kernel's output,
    # which CUDA's flash / memory-efficient kernels already lay out as (batch, seq, heads, dim).)
    m = tiny(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert layer_activations(m, t, recipe_of(t), False).saved(128, 64) == measured


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layers_sum_by_kind(method: str) -> None:
    # The plan's layers (no checkpointing) are the envelope x layers less layered_less: exactly each layer's own kind
    # (shape B: attention at 0 and 3, mixers at 1 and 2; LoRA without checkpointing: layer 0 without an input gradient)
    m = tiny(SHAPE_B)
    t = TrainingSpec(method=method, precision="pure-bf16" if method == "full" else "bf16", batch_size=2, seq_len=64)
    r, tw = recipe_of(t), method == "full"
    bottom_grad = method == "full"
    per = [layer_activations(m, t, r, tw, bottom_grad), hybrid.bamba_mixer_layer(m, t, r, tw),
           hybrid.bamba_mixer_layer(m, t, r, tw), layer_activations(m, t, r, tw)]
    assert estimate(m, t).details["activations.layers"] == sum(x.saved(128, 64) for x in per)


def test_lowest_mixer_rerun_counts_the_gradients_above() -> None:
    # Full fine-tuning with checkpointing, shape B: at layer 1's rerun the gradients of layers 2 and 3, the final norm
    # and the untied lm_head exist (measured with the tracer, --grid bamba: 5,722,624 B of gradients at the peak)
    m = tiny(SHAPE_B)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64, grad_checkpointing=True)
    moment = next(x for x in estimate(m, t).named_moments() if x.key == "backward.recompute_mixer")
    grads = next(x.bytes for x in moment.terms if x.name == "gradients of the layers above")
    # layer 3 (attention 163,840 + MLP 589,824 + norms 512) + layer 2 (mixer 467,248 + MLP + norms) + final norm 256
    # + lm_head 4096 x 256, in bf16
    assert grads == 2 * (754_176 + 1_057_584 + 256 + 4096 * 256)


def test_trace_matches_the_estimate() -> None:
    # --grid bamba "h256-l3-a1-m512-s32-q64 | full pure-bf16 | b2 s64 | no-gc" (+0.64 % there)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = tiny(SHAPE_A), TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(trace(m, t).peak_bytes, rel=0.02)
