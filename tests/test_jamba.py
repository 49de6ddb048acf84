"""Jamba (issue 15): attention and Mamba-1 layers, dense and MoE feed-forwards (memory/jamba.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError
from vramcalc.core.memory import estimate, jamba
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import active_params, count_params, jamba_counts, jamba_layer_kinds, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURE = json.loads((HF / "ai21-jamba-1.5-mini.json").read_text())
# The two shapes benchmarks/accuracy.py --grid jamba traces, cut from the fixture (JAMBA_SHAPES there): A has the
# published layout scaled down (attention at 4 of 8 layers... cut to period 4 offset 2, MoE at odd layers), B an
# attention layer at the bottom, MoE every third layer from 0, biases on, state 8, expand 3, a dt rank of its own
SHAPE_A = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "mamba_dt_rank": 8, "mamba_d_state": 16, "num_experts": 4,
           "num_experts_per_tok": 2, "attn_layer_period": 4, "attn_layer_offset": 2, "vocab_size": 2048}
SHAPE_B = {"hidden_size": 192, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 6,
           "num_key_value_heads": 6, "mamba_dt_rank": "auto", "mamba_d_state": 8, "mamba_expand": 3,
           "mamba_proj_bias": True, "num_experts": 3, "num_experts_per_tok": 1, "attn_layer_period": 3,
           "attn_layer_offset": 0, "expert_layer_period": 3, "expert_layer_offset": 1, "vocab_size": 4096}


def tiny(shape: dict[str, object]):
    return spec_from_hf_config({**FIXTURE, **shape}, "jamba-tiny", "tests/test_jamba.py")


def test_fixture_reads_as_published() -> None:
    # ai21labs/AI21-Jamba-1.5-Mini: 32 layers of 4096, 32 heads, 8 KV heads, MLP 14336, 16 experts top-2 every other
    # layer from 1, attention every 8th layer from 4, the mixer 2 x 4096 wide, state 16, dt rank 256, conv 4, untied
    m = spec_from_hf_config(FIXTURE, "m", "f")
    assert (m.family, m.hidden_size, m.num_layers, m.num_attention_heads, m.num_kv_heads, m.intermediate_size) == \
        ("jamba", 4096, 32, 32, 8, 14336)
    assert (m.num_experts, m.experts_per_token, m.jamba_mixer_size, m.jamba_state_size, m.ssm_dt_rank) == \
        (16, 2, 8192, 16, 256)
    assert jamba_counts(m) == (4, 28, 16, 16)  # layers 4, 12, 20, 28 attention; the odd layers MoE
    assert [i for i, (attn, _) in enumerate(jamba_layer_kinds(m)) if attn] == [4, 12, 20, 28]
    assert m.ssm_state_size == 0 and m.mixer_intermediate_size == 0 and not m.tie_word_embeddings


def test_fixture_counts() -> None:
    # sum(p.numel()) of JambaForCausalLM from the fixture, transformers 5.24 on the meta device; active: the total
    # less 14 of 16 experts' stacks in the 16 MoE layers (3 x 4096 x 14336 each): 12.1B, the model card's "12B active"
    m = spec_from_hf_config(FIXTURE, "m", "f")
    assert count_params(m) == 51_570_323_328
    assert active_params(m) == 51_570_323_328 - 16 * 14 * 3 * 4096 * 14336


@pytest.mark.parametrize("shape", [{}, SHAPE_A, SHAPE_B,
                                   {**SHAPE_B, "mamba_conv_bias": False, "tie_word_embeddings": True,
                                    "num_experts": 1}],
                         ids=["published", "shape-a", "shape-b-biases", "shape-b-dense-tied"])
def test_count_matches_the_library(shape: dict[str, object]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {**FIXTURE, **shape}
    config = transformers.JambaConfig(**{k: v for k, v in d.items()
                                         if k not in ("architectures", "model_type", "transformers_version",
                                                      "torch_dtype", "use_mamba_kernels")})
    with torch.device("meta"):
        model = transformers.JambaForCausalLM(config)
    assert count_params(tiny(shape)) == sum(p.numel() for p in model.parameters())


def test_presets_equal_the_fixture() -> None:
    mini = presets.find_model("jamba-1.5-mini")
    assert count_params(mini) == mini.published_parameters == 51_570_323_328
    assert count_params(presets.find_model("jamba-v0.1")) == 51_570_323_328


def test_lora_targets() -> None:
    m = spec_from_hf_config(FIXTURE, "m", "f")
    # all-linear: every nn.Linear of the blocks (peft's rule); JambaExperts' stacks are 3-D Parameters and jamba is
    # no key of peft's MoE conversion, so gate/up/down_proj are the 16 dense JambaMLPs only
    mods = {lin.module: lin.count for lin in resolve_targets(m, ("all-linear",))}
    assert mods == {"q_proj": 4, "k_proj": 4, "v_proj": 4, "o_proj": 4, "in_proj": 28, "x_proj": 28,
                    "dt_proj": 28, "out_proj": 28, "gate_proj": 16, "up_proj": 16, "down_proj": 16}
    assert {lin.module for lin in resolve_targets(m, ("auto",))} == {"q_proj", "v_proj", "in_proj", "x_proj"}
    # cut to 2 layers the published layout has no attention layer (period 8, offset 4): the mixer's targets only
    two = tiny({"num_hidden_layers": 2})
    assert {lin.module for lin in resolve_targets(two, ("auto",))} == {"in_proj", "x_proj"}


def test_reader_refusals() -> None:
    with pytest.raises(PresetFileError, match="attn_layer_offset"):
        tiny({"attn_layer_offset": 8})
    with pytest.raises(PresetFileError, match="use_mambapy"):
        tiny({"use_mambapy": True})


@pytest.mark.parametrize(("layer", "trained", "measured"), [
    (0, True, 4_402_432), (0, False, 4_183_296), (1, True, 4_604_432), (1, False, 4_319_760),
    (2, True, 312_832), (2, False, 214_528)])
def test_one_layer_saved_set_is_measured(layer: int, trained: bool, measured: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one layer of
    # JambaForCausalLM (transformers 5.24, shape A, bf16, sdpa, CPU: the PyTorch scan) runs forward on a bf16 input
    # with requires_grad at batch 2 x 32 tokens, parameters, buffers and the input excluded; `trained` False: the
    # layer's parameters frozen. Layer 0: Mamba + dense MLP, 1: Mamba + MoE, 2: attention + dense MLP. The attention
    # layer is exact; the Mamba layers are over by 272 B per token (trained) and 528 B (frozen): 0.4 % and 0.8 %.
    m = tiny(SHAPE_A)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=32)
    attention, moe = jamba_layer_kinds(m)[layer]
    saved = jamba.kind_activations(m, t, recipe_of(t), trained, attention, moe).saved(64, 32)
    assert 0 <= saved - measured <= (272 if trained else 528) * 64


def test_layers_counted_by_their_kind() -> None:
    # The plan counts the largest kind (Mamba + MoE) per layer and subtracts each layer's own shortfall: the sum
    # over the layers of each kind's saved set (no checkpointing, full fine-tuning: every layer saves its input's)
    m = tiny(SHAPE_A)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=32)
    r = recipe_of(t)
    top = jamba.layer_activations(m, t, r, True)
    per_kind = [jamba.kind_activations(m, t, r, True, a, e) for a, e in jamba_layer_kinds(m)]
    less_t = jamba.layer_differences(m, t, r, True, top)[0]
    assert 4 * sum(x.per_token for x in top.terms) - less_t == sum(sum(x.per_token for x in k.terms)
                                                                  for k in per_kind)


@pytest.mark.parametrize(("options", "words"), [
    (["--mode", "inference"], "generate() for Jamba"),
    (["--precision", "amp-bf16"], "autocast over the Mamba mixer"),
    (["--method", "ia3"], "only full, lora and qlora"),
    (["--objective", "dpo", "--method", "lora"], "only sft"),
    (["--attention", "flash"], "sdpa and eager only"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "jamba-1.5-mini", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_config_json_is_read_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FIXTURE))
    code, out, _ = invoke(["estimate", str(path), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 51_570_323_328


def test_notes_and_no_rotary_tables() -> None:
    m = tiny(SHAPE_A)
    t = TrainingSpec(method="lora", lora_targets=("all-linear",), batch_size=2, seq_len=32)
    b = estimate(m, t)
    assert any("mamba_selective_scan" in n for n in b.notes) and any("dt_proj never runs" in n for n in b.notes)
    # JambaAttention applies no rotary embedding: no shared cos / sin line (a Llama layout has 2 x 2 B x head_dim)
    from vramcalc.core.explain import explain

    lines = explain(m, t).lines()
    assert "activations.shared.rope" not in lines and "activations.layer.mixer discrete A (fp32, saved by exp)" in lines


def test_trace_matches_the_estimate() -> None:
    # --grid jamba "h128-l4-a2of4-e4k2-s16 | lora all-linear | b2 s32 | no-gc"
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = tiny(SHAPE_A)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=32)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(trace(m, t).peak_bytes, rel=0.02)
