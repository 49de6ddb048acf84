"""GraniteMoeHybrid's dense Granite 4.0 H models (issue 15): Bamba's layered path (memory/hybrid.py) with
layer_types, a fused shared_mlp, no positions and the Granite multipliers; the MoE models (granite-4.0-h-tiny,
-h-small): block_sparse_moe beside shared_mlp, the fused-expert MoE terms (memory/activations.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError
from vramcalc.core.memory import estimate, hybrid
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import block_linears, count_params, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURE = json.loads((HF / "granite-4.0-h-micro.json").read_text())
TINY_FIXTURE = json.loads((HF / "granite-4.0-h-tiny.json").read_text())
SMALL_FIXTURE = json.loads((HF / "granite-4.0-h-small.json").read_text())
# The two shapes benchmarks/accuracy.py --grid granite traces, cut from the fixture (GRANITE_SHAPES there)
SHAPE_A = {"hidden_size": 256, "num_hidden_layers": 3, "layer_types": ["mamba", "attention", "mamba"],
           "num_attention_heads": 4, "num_key_value_heads": 2, "shared_intermediate_size": 512, "mamba_n_heads": 8,
           "mamba_d_head": 64, "mamba_d_state": 32, "mamba_chunk_size": 64, "vocab_size": 2048}
SHAPE_B = {"hidden_size": 256, "num_hidden_layers": 4, "layer_types": ["attention", "mamba", "mamba", "attention"],
           "num_attention_heads": 4, "num_key_value_heads": 1, "shared_intermediate_size": 768, "mamba_n_heads": 16,
           "mamba_d_head": 32, "mamba_d_state": 64, "mamba_n_groups": 2, "mamba_chunk_size": 48, "vocab_size": 4096}


# The MoE cut of the two shapes (benchmarks/accuracy.py --grid granite's MoE cases, GRANITE_MOE_SHAPES there)
MOE_A = {"num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 128}
MOE_B = {"num_local_experts": 6, "num_experts_per_tok": 3, "intermediate_size": 96, "shared_intermediate_size": 384}


def tiny(shape: dict[str, object]):
    return spec_from_hf_config({**FIXTURE, **shape}, "granite-tiny", "tests/test_granitemoehybrid.py")


def test_fixture_reads_as_published() -> None:
    # granite-4.0-h-micro: 40 layers of hidden 2048, attention (32 heads, 8 KV) at layers 5, 15, 25, 35, shared_mlp
    # 8192 (input_linear fused); the mixer 2 x 2048 wide in 64 heads of 64, state 128, one group, chunk 256, tied
    m = spec_from_hf_config(FIXTURE, "m", "f")
    assert (m.family, m.hidden_size, m.num_layers, m.num_attention_heads, m.num_kv_heads) == \
        ("granitemoehybrid", 2048, 40, 32, 8)
    assert m.attention_layers == (5, 15, 25, 35) and m.norms_per_layer == 2
    assert (m.intermediate_size, m.fused_gate_up, m.mlp, m.num_experts) == (8192, True, "gated", 0)
    assert (m.mixer_intermediate_size, m.mixer_head_dim, m.mixer_state_size, m.ssm_chunk_size) == (4096, 64, 128, 256)
    assert m.ssm_state_size == 0 and m.tie_word_embeddings


def test_fixture_count() -> None:
    # sum(p.numel()) of GraniteMoeHybridForCausalLM from the fixture, transformers 5.24 on the meta device
    assert count_params(spec_from_hf_config(FIXTURE, "m", "f")) == 3_191_396_096


@pytest.mark.parametrize("shape", [{}, SHAPE_A, SHAPE_B,
                                   {**SHAPE_B, "mamba_proj_bias": True, "mamba_conv_bias": False,
                                    "attention_bias": True, "tie_word_embeddings": False},
                                   {**SHAPE_A, "layer_types": None},
                                   {**SHAPE_A, "layer_types": ["linear_attention", "full_attention",
                                                               "linear_attention"]}],
                         ids=["published", "shape-a", "shape-b", "shape-b-biases-untied", "no-layer-types",
                              "new-layer-type-names"])
def test_count_matches_the_library(shape: dict[str, object]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {**FIXTURE, **shape}
    config = transformers.GraniteMoeHybridConfig(**{k: v for k, v in d.items()
                                                    if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        model = transformers.GraniteMoeHybridForCausalLM(config)
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("fixture", "total"), [("tiny", 6_939_037_248), ("small", 32_207_337_984)])
def test_moe_fixture_count(fixture: str, total: int) -> None:
    # sum(p.numel()) of GraniteMoeHybridForCausalLM from tests/data/hf/granite-4.0-h-tiny.json / -h-small.json,
    # transformers 5.24 on the meta device (test_moe_count_matches_the_library rebuilds them)
    d = TINY_FIXTURE if fixture == "tiny" else SMALL_FIXTURE
    assert count_params(spec_from_hf_config(d, "m", "f")) == total
    assert count_params(presets.find_model(f"granite-4.0-h-{fixture}")) == total


@pytest.mark.parametrize("shape", [TINY_FIXTURE, SMALL_FIXTURE, {**TINY_FIXTURE, **SHAPE_A, **MOE_A},
                                   {**TINY_FIXTURE, **SHAPE_B, **MOE_B, "attention_bias": True,
                                    "tie_word_embeddings": False}],
                         ids=["h-tiny", "h-small", "moe-a", "moe-b-biases-untied"])
def test_moe_count_matches_the_library(shape: dict[str, object]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.GraniteMoeHybridConfig(**{k: v for k, v in shape.items()
                                                    if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        model = transformers.GraniteMoeHybridForCausalLM(config)
    assert count_params(spec_from_hf_config(shape, "m", "f")) == sum(p.numel() for p in model.parameters())


def test_moe_reads_as_published() -> None:
    # granite-4.0-h-tiny: 64 experts of 512, 6 per token, beside shared_mlp 1024 (the shared expert, input_linear
    # fused); the block Linears: the experts' 3-D stacks (E per layer), shared_mlp's two, the mixer's and attention's
    m = spec_from_hf_config(TINY_FIXTURE, "m", "f")
    assert (m.num_experts, m.experts_per_token, m.moe_intermediate_size, m.num_shared_experts,
            m.shared_expert_intermediate_size, m.shared_expert_gate) == (64, 6, 512, 1, 1024, False)
    assert {lin.module: (lin.count, lin.in_features, lin.out_features) for lin in block_linears(m)} == {
        "q_proj": (4, 1536, 1536), "k_proj": (4, 1536, 512), "v_proj": (4, 1536, 512), "o_proj": (4, 1536, 1536),
        "experts.gate_up_proj": (40 * 64, 1536, 1024), "experts.down_proj": (40 * 64, 512, 1536),
        "shared_expert.gate_up_proj": (40, 1536, 2048), "shared_expert.down_proj": (40, 1024, 1536),
        "in_proj": (36, 1536, 3072 + 3072 + 2 * 128 + 48), "out_proj": (36, 3072, 1536)}


def test_preset_count_is_its_published_total() -> None:
    m = presets.find_model("granite-4.0-h-micro")
    assert count_params(m) == m.published_parameters == 3_191_396_096


def test_count_is_the_layers_by_kind() -> None:
    # Shape A, 3 layers, attention at layer 1. Attention layer: q (256 -> 4 x 64), k and v (256 -> 2 x 64), o; mixer
    # layer: in_proj 256 -> 512 + 576 + 8 (gate, conv_dim 512 + 2 x 32, dt heads), conv1d 576 x 4 + 576, dt_bias,
    # A_log, D (8 each), the gated norm (512), out_proj 512 -> 256; every layer: input_linear 256 -> 2 x 512,
    # output_linear 512 -> 256, two norms; the embedding tied to lm_head, the final norm
    m = tiny(SHAPE_A)
    attn = 256 * 256 + 2 * 256 * 128 + 256 * 256
    mixer = 256 * 1096 + 576 * 4 + 576 + 3 * 8 + 512 + 512 * 256
    per_layer = 3 * 256 * 512 + 2 * 256
    assert count_params(m) == attn + 2 * mixer + 3 * per_layer + 2048 * 256 + 256
    assert {lin.module: (lin.count, lin.out_features) for lin in block_linears(m)} == {
        "q_proj": (1, 256), "k_proj": (1, 128), "v_proj": (1, 128), "o_proj": (1, 256), "gate_up_proj": (3, 1024),
        "down_proj": (3, 256), "in_proj": (2, 1096), "out_proj": (2, 256)}


@pytest.mark.parametrize(("key", "value", "words"), [
    ("position_embedding_type", "rope", "RoPE tables"),
    ("mamba_d_head", 32, "mamba_n_heads x mamba_d_head"), ("time_step_limit", [0.001, 0.1], "time_step_limit"),
    ("layer_types", ["mamba", "attention"], "layer_types: 3 entries"),
    ("layer_types", ["mamba", "moe", "mamba"], "unknown 'moe'"), ("head_dim", 32, "head_dim"),
    ("mlp_bias", True, "mlp_bias")])
def test_reader_refuses_what_it_does_not_count(key: str, value: object, words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        tiny({**SHAPE_A, key: value})


def test_router_aux_loss_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # output_router_logits true adds GraniteMoeHybridForCausalLM's load_balancing_loss_func over every layer's logits
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_FIXTURE, "output_router_logits": True}))
    code, _, err = invoke(["estimate", str(path)], capsys)
    assert code == 2 and "output_router_logits" in err and "not modelled" in err and err.count("\n") == 1


def test_lora_targets() -> None:
    # peft 0.21 has no default for granitemoehybrid and does not refuse its out_proj (tuners_utils.py
    # _check_lora_target_modules_mamba lists falcon_h1, mamba, mamba2, falcon_mamba, nemotron_h); the modeling file's
    # names input_linear / output_linear select shared_mlp's fused Linears
    m = tiny(SHAPE_A)
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["q_proj", "v_proj", "in_proj"]
    assert [lin.module for lin in resolve_targets(m, ("input_linear", "output_linear"))] == \
        ["gate_up_proj", "down_proj"]
    assert {lin.module for lin in resolve_targets(m, ("all-linear",))} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj", "in_proj", "out_proj"}


def test_moe_lora_targets() -> None:
    # peft 0.21 has no MoE conversion for granitemoehybrid (utils/transformers_weight_conversion.py
    # _MOE_TARGET_MODULE_MAPPING: mixtral, qwen2_moe patterns only; granitemoehybrid maps to "granitemoe"): its names
    # match nn.Linear modules only, so input_linear / output_linear are shared_mlp's and all-linear takes neither the
    # 3-D experts nor the router (GraniteMoeHybridTopKRouter holds a bare weight Parameter)
    m = tiny({**SHAPE_A, **MOE_A})
    assert [lin.module for lin in resolve_targets(m, ("input_linear", "output_linear"))] == \
        ["shared_expert.gate_up_proj", "shared_expert.down_proj"]
    assert {lin.module for lin in resolve_targets(m, ("all-linear",))} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "shared_expert.gate_up_proj", "shared_expert.down_proj", "in_proj",
        "out_proj"}


def test_moe_trace_config() -> None:
    # the tracer builds GraniteMoeHybridForCausalLM with the experts intermediate_size wide and shared_mlp as the
    # shared expert's width (configuration_granitemoehybrid.py names)
    from vramcalc.trace._config import hf_config_dict

    d = hf_config_dict(tiny({**SHAPE_B, **MOE_B}))
    assert (d["num_local_experts"], d["num_experts_per_tok"], d["intermediate_size"], d["shared_intermediate_size"],
            d["output_router_logits"]) == (6, 3, 96, 384, False)
    dense = hf_config_dict(tiny(SHAPE_B))
    assert (dense["num_local_experts"], dense["shared_intermediate_size"]) == (0, 768)


@pytest.mark.parametrize(("options", "words"), [
    (["--mode", "inference"], "generate() for GraniteMoeHybrid"),
    (["--precision", "amp-bf16"], "autocast over the Mamba-2 mixer"),
    (["--method", "ia3"], "only full, lora and qlora"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "granite-4.0-h-micro", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_config_json_is_read_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FIXTURE))
    code, out, _ = invoke(["estimate", str(path), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 3_191_396_096
    assert any("no positions" in n for n in json.loads(out)["notes"])


@pytest.mark.parametrize(("shape", "trained", "measured", "over"), [
    (SHAPE_A, True, 5_970_504, 131_072), (SHAPE_A, False, 4_917_800, 131_072),
    (SHAPE_B, True, 12_325_650, 0), (SHAPE_B, False, 11_072_210, 0)])
def test_mixer_layer_saved_set_is_measured(shape: dict[str, object], trained: bool, measured: int, over: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one
    # GraniteMoeHybridDecoderLayer of kind "mamba" (transformers 5.24, bf16, sdpa, input bf16 with requires_grad)
    # runs forward on CPU at batch 2 x 64 tokens, parameters and buffers excluded; `trained` False: its parameters
    # frozen. The multipliers' products save nothing and input_linear's fused output saves what gate_proj's and
    # up_proj's do, so the figures are Bamba's (tests/test_bamba.py); shape A's one chunk of 64 is over by one padded
    # fp32 chunk-wise tensor (2 x 64 x 8 heads x 64 x 4 B), the one-chunk case memory/ssm.py notes for Mamba-2.
    m = tiny(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert hybrid.bamba_mixer_layer(m, t, recipe_of(t), trained).saved(128, 64) - measured == over


@pytest.mark.parametrize(("shape", "trained", "measured"), [
    (SHAPE_A, True, 1_248_256), (SHAPE_A, False, 855_040), (SHAPE_B, True, 1_477_632), (SHAPE_B, False, 1_018_880)])
def test_attention_layer_saved_set_is_measured(shape: dict[str, object], trained: bool, measured: int) -> None:
    # Measured as above on a GraniteMoeHybridDecoderLayer of kind "attention" (no positions: q and k as projected)
    m = tiny(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert layer_activations(m, t, recipe_of(t), trained).saved(128, 64) == measured


def test_no_rope_tables() -> None:
    # position_embedding_type "nope": GraniteMoeHybridModel.rotary_emb is None, so nothing is shared by the layers
    # (Bamba's half-width cos / sin tables are not there)
    m = tiny(SHAPE_B)
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64)
    assert estimate(m, t).details["activations.shared"] == 0


def test_scaled_gradient_is_one_hidden_wide_tensor() -> None:
    # memory/hybrid.py _granite_scaled_gradient: grad x residual_multiplier, hidden 256 x 2 B per token, beside the
    # Bamba envelope's backward transient and rerun
    m = tiny(SHAPE_A)
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64, grad_checkpointing=True)
    r = recipe_of(t)
    env = hybrid._bamba_envelope(m, t, r, False, True)
    layer = hybrid.layer_activations(m, t, r, False)
    assert layer.backward_transient.per_token - env.backward_transient.per_token == 512
    assert layer.mlp_forward_per_token - env.mlp_forward_per_token == 512


@pytest.mark.parametrize(("method", "gc"), [("full", False), ("lora", True)])
def test_trace_matches_the_estimate(method: str, gc: bool) -> None:
    # --grid granite "h256-l3-a1-m512-s32-q64 | full pure-bf16 | b2 s64 | no-gc" (+0.69 % there) and
    # "... | lora q,v,in_proj | b2 s128 | gc" (-1.44 %; -2.14 % without the scaled gradient)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    seq = 64 if method == "full" else 128
    t = TrainingSpec(method=method, precision="pure-bf16" if method == "full" else "bf16", batch_size=2,
                     seq_len=seq, grad_checkpointing=gc)
    m = tiny(SHAPE_A)
    est, traced = estimate(m, t).tensor_peak_bytes, trace(m, t).peak_bytes
    assert est == pytest.approx(traced, rel=0.02) and est >= traced * 0.98


@pytest.mark.parametrize(("shape", "kind", "trained", "measured", "over"), [
    ({**SHAPE_A, **MOE_A}, "mamba", True, 6_504_552, 131_040),
    ({**SHAPE_A, **MOE_A}, "mamba", False, 5_255_240, 131_040),
    ({**SHAPE_A, **MOE_A}, "attention", True, 1_782_304, -32),
    ({**SHAPE_A, **MOE_A}, "attention", False, 1_192_480, -32),
    ({**SHAPE_B, **MOE_B}, "mamba", True, 12_635_178, -24), ({**SHAPE_B, **MOE_B}, "mamba", False, 11_209_706, -24),
    ({**SHAPE_B, **MOE_B}, "attention", True, 1_787_160, -24),
    ({**SHAPE_B, **MOE_B}, "attention", False, 1_156_376, -24)])
def test_moe_layer_saved_set_is_measured(shape: dict[str, object], kind: str, trained: bool, measured: int,
                                         over: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one
    # GraniteMoeHybridDecoderLayer with block_sparse_moe (transformers 5.24, bf16, sdpa, the default experts
    # implementation grouped_mm, input bf16 with requires_grad) runs forward on CPU at batch 2 x 64 tokens, parameters
    # and buffers excluded; `trained` False: its parameters frozen. Shape A from granite-4.0-h-tiny.json (8 experts of
    # 128, top 2), B from -h-small.json (6 of 96, top 3). Shape A's mixer is over by the one-chunk fp32 tensor
    # (test_mixer_layer_saved_set_is_measured); the few bytes under are grouped_mm's int32 per-expert offsets (4 B x E,
    # whatever the batch), not counted. The router's input is the storage shared_mlp's input_linear saves.
    m = spec_from_hf_config({**TINY_FIXTURE, **shape}, "granite-moe", "tests/test_granitemoehybrid.py")
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    r = recipe_of(t)
    est = hybrid.bamba_mixer_layer(m, t, r, trained) if kind == "mamba" else layer_activations(m, t, r, trained)
    assert est.saved(128, 64) - measured == over


def test_moe_explain_names_the_router_and_experts(capsys: pytest.CaptureFixture[str]) -> None:
    # explain lists the MoE block's terms (memory/activations.py _fused_moe_terms with Granite's router) and the note
    # says which experts implementation is counted
    code, out, _ = invoke(["explain", "granite-4.0-h-tiny", "--method", "lora", "--seq-len", "512"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "router top-k indices, softmax over the top k (fp32) = 72 B/token" in flat
    # 72 B: 6 int64 indices + 6 fp32 top-k softmax weights per token
    assert "experts gate_up output, activation output, down output" in flat and "grouped_mm" in flat


def test_lora_checkpointing_counts_the_lowest_mixer_rerun() -> None:
    # --grid granite MoE shape B LoRA all-linear with checkpointing: layers [attention, mamba, mamba, attention]; the
    # peak is layer 1's rerun with layers 2 and 3's adapter gradients made: 467,968 B, as the tracer's gradients at
    # its peak (half of the 935,936 B of fp32 adapter gradients)
    m = tiny({**SHAPE_B, **MOE_B})
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64, grad_checkpointing=True,
                     lora_targets=("all-linear",))
    moment = next(x for x in estimate(m, t).named_moments() if x.key == "backward.recompute_mixer")
    assert moment.component("gradients") == 467_968
