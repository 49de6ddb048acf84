"""Nemotron-H (issue 15): Mamba-2, attention, relu2 MLP and MoE layers, one block each (memory/nemotron_h.py);
Nemotron 3 Super's latent MoE, grouped routing and its checkpoint's MTP layer (not built by transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, UnsupportedCombination
from vramcalc.core.memory import estimate, nemotron_h
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.weights import fp32_router_tensors
from vramcalc.core.params import count_params, nemotron_h_layer_params, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURE = json.loads((HF / "nemotron-h-8b-base-8k.json").read_text())
NANO = json.loads((HF / "nvidia-nemotron-nano-9b-v2.json").read_text())
NANO3 = json.loads((HF / "nvidia-nemotron-3-nano-30b-a3b-bf16.json").read_text())
SUPER = json.loads((HF / "nvidia-nemotron-3-super-120b-a12b-bf16.json").read_text())
# The two shapes benchmarks/accuracy.py --grid nemotronh traces, cut from the fixture (NEMOTRONH_SHAPES there)
SHAPE_A = {"hidden_size": 256, "hybrid_override_pattern": "M-M*-", "num_hidden_layers": 5, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 64, "attention_head_dim": 64, "intermediate_size": 512,
           "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2, "ssm_state_size": 32, "chunk_size": 64,
           "vocab_size": 2048}
SHAPE_B = {"hidden_size": 192, "hybrid_override_pattern": "*M-M-M", "num_hidden_layers": 6, "num_attention_heads": 3,
           "num_key_value_heads": 1, "head_dim": 64, "attention_head_dim": 64, "intermediate_size": 384,
           "mamba_num_heads": 12, "mamba_head_dim": 32, "n_groups": 4, "ssm_state_size": 16, "chunk_size": 48,
           "vocab_size": 4096}


# The MoE shapes benchmarks/accuracy.py --grid nemotronh traces, cut from the Nemotron 3 Nano fixture
# (NEMOTRONH_MOE_SHAPES there)
SHAPE_C = {"hidden_size": 256, "hybrid_override_pattern": "MEM*E", "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 64, "intermediate_size": 512, "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2,
           "ssm_state_size": 32, "chunk_size": 64, "vocab_size": 2048, "n_routed_experts": 8, "num_experts_per_tok": 2,
           "moe_intermediate_size": 128, "moe_shared_expert_intermediate_size": 256}
SHAPE_D = {"hidden_size": 192, "hybrid_override_pattern": "*E-ME", "num_attention_heads": 3, "num_key_value_heads": 1,
           "head_dim": 64, "intermediate_size": 384, "mamba_num_heads": 12, "mamba_head_dim": 32, "n_groups": 2,
           "ssm_state_size": 16, "chunk_size": 48, "vocab_size": 4096, "n_routed_experts": 6, "num_experts_per_tok": 3,
           "moe_intermediate_size": 96, "moe_shared_expert_intermediate_size": 160}


# The latent shapes benchmarks/accuracy.py --grid nemotronh traces, cut from the Nemotron 3 Super fixture
# (NEMOTRONH_LATENT_SHAPES there): C and D with a latent width and grouped routing
SHAPE_L1 = {**SHAPE_C, "moe_latent_size": 64, "n_group": 4, "topk_group": 2}
SHAPE_L2 = {**SHAPE_D, "n_routed_experts": 8, "moe_latent_size": 48, "n_group": 2, "topk_group": 1,
            "norm_topk_prob": False}


def tiny(shape: dict[str, object]):
    return spec_from_hf_config({**FIXTURE, **shape}, "nemotron-h-tiny", "tests/test_nemotron_h.py")


def tiny_moe(shape: dict[str, object]):
    d = {k: v for k, v in {**NANO3, **shape}.items() if k != "num_hidden_layers"}  # the pattern's length
    return spec_from_hf_config(d, "nemotron-h-moe-tiny", "tests/test_nemotron_h.py")


def tiny_super(shape: dict[str, object]):
    d = {k: v for k, v in {**SUPER, **shape}.items() if k != "num_hidden_layers"}  # the pattern's length
    return spec_from_hf_config(d, "nemotron-h-latent-tiny", "tests/test_nemotron_h.py")


def test_fixture_reads_as_published() -> None:
    # Nemotron-H-8B-Base-8K: 52 layers (24 M, 4 *, 24 -) of hidden 4096, attention 32 heads / 8 KV of 128, relu2 MLP
    # 21504; the mixer 128 heads x 64 = 8192 wide, state 128, 8 groups, chunk 128; lm_head untied
    m = spec_from_hf_config(FIXTURE, "m", "f")
    assert (m.family, m.hidden_size, m.num_layers, m.num_attention_heads, m.num_kv_heads) == \
        ("nemotron_h", 4096, 52, 32, 8)
    p = m.hybrid_pattern
    assert (p.count("M"), p.count("*"), p.count("-")) == (24, 4, 24) and m.norms_per_layer == 1
    assert (m.intermediate_size, m.mlp, m.hidden_act, m.norm_fp32_weight_mul) == (21504, "plain", "relu2", True)
    assert (m.mixer_intermediate_size, m.mixer_head_dim, m.mixer_state_size, m.ssm_n_groups, m.ssm_chunk_size) == \
        (8192, 64, 128, 8, 128)
    assert m.ssm_state_size == 0 and not m.tie_word_embeddings


def test_moe_fixture_reads_as_published() -> None:
    # Nemotron 3 Nano 30B-A3B: 52 layers (23 M, 23 E, 6 *) of hidden 2688; 128 routed experts of 1856, top 6, one
    # shared expert of 3712; the mixer 64 heads x 64 = 4096 wide; attention 32 heads / 2 KV of 128
    m = spec_from_hf_config(NANO3, "m", "f")
    p = m.hybrid_pattern
    assert (p.count("M"), p.count("E"), p.count("*"), p.count("-")) == (23, 23, 6, 0)
    assert (m.num_experts, m.experts_per_token, m.moe_intermediate_size, m.num_shared_experts,
            m.shared_expert_intermediate_size) == (128, 6, 1856, 1, 3712)
    assert (m.hidden_size, m.mixer_intermediate_size, m.num_attention_heads, m.num_kv_heads) == (2688, 4096, 32, 2)


def test_super_fixture_reads_as_published() -> None:
    # Nemotron 3 Super 120B-A12B: 88 layers (40 M, 40 E, 8 *) of hidden 4096; 512 routed experts of 2688 at the latent
    # width 1024, top 22, one group; one shared expert of 5376; the mixer 128 heads x 64 = 8192 wide; attention 32
    # heads / 2 KV of 128; the checkpoint's one MTP layer kept as a note only
    m = spec_from_hf_config(SUPER, "m", "f")
    p = m.hybrid_pattern
    assert (p.count("M"), p.count("E"), p.count("*"), p.count("-")) == (40, 40, 8, 0)
    assert (m.num_experts, m.experts_per_token, m.moe_intermediate_size, m.moe_latent_size,
            m.shared_expert_intermediate_size, m.expert_groups, m.topk_expert_groups) == \
        (512, 22, 2688, 1024, 5376, 1, 1)
    assert (m.hidden_size, m.mixer_intermediate_size, m.num_kv_heads, m.checkpoint_mtp_layers) == (4096, 8192, 2, 1)


@pytest.mark.parametrize(("fixture", "total"), [(FIXTURE, 8_100_852_736), (NANO, 8_888_227_328),
                                                (NANO3, 31_577_937_344), (SUPER, 120_668_687_360)],
                         ids=["8b", "nano-9b", "nano-3-30b", "super-3-120b"])
def test_fixture_count(fixture: dict[str, object], total: int) -> None:
    # sum(p.numel()) of NemotronHForCausalLM from the fixture, transformers 5.24 on the meta device
    assert count_params(spec_from_hf_config(fixture, "m", "f")) == total


@pytest.mark.parametrize("shape", [{}, SHAPE_A, SHAPE_B,
                                   {**SHAPE_B, "use_bias": True, "mlp_bias": True, "use_conv_bias": False,
                                    "attention_bias": True, "tie_word_embeddings": True},
                                   {**SHAPE_A, "hybrid_override_pattern": None,
                                    "layers_block_type": ["mamba", "mlp", "attention", "mamba"]}],
                         ids=["published", "shape-a", "shape-b", "biases-tie-flag", "layers-block-type"])
def test_count_matches_the_library(shape: dict[str, object]) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {k: v for k, v in {**FIXTURE, **shape}.items() if v is not None}
    config = transformers.NemotronHConfig(**{k: v for k, v in d.items()
                                             if k not in ("model_type", "architectures", "auto_map")})
    with torch.device("meta"):
        model = transformers.NemotronHForCausalLM(config)
    # (attention_bias and tie_word_embeddings change nothing there: JambaAttention's Linears have no bias and
    # NemotronHForCausalLM._tied_weights_keys is {})
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("base", "moe_shape"), [
    (NANO3, SHAPE_C), (NANO3, SHAPE_D), (NANO3, {**SHAPE_D, "mlp_bias": True, "use_bias": True}),
    (SUPER, SHAPE_L1), (SUPER, SHAPE_L2), (SUPER, {**SHAPE_L2, "mlp_bias": True, "use_bias": True})],
    ids=["shape-c", "shape-d", "shape-d-biases", "shape-l1", "shape-l2", "shape-l2-biases"])
def test_moe_count_matches_the_library(base: dict[str, object], moe_shape: dict[str, object]) -> None:
    # NemotronHExperts' 3-D up / down_proj have no bias whatever mlp_bias says; shared_experts' Linears take it. The
    # Super's latent shapes: the experts at the latent width (up_proj (E, i, latent), down_proj (E, latent, i)),
    # fc1 / fc2_latent_proj with mlp_bias; the router and the shared expert at hidden_size
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {k: v for k, v in {**base, **moe_shape}.items() if k != "num_hidden_layers"}
    config = transformers.NemotronHConfig(**{k: v for k, v in d.items()
                                             if k not in ("model_type", "architectures", "transformers_version",
                                                          "auto_map")})
    with torch.device("meta"):
        model = transformers.NemotronHForCausalLM(config)
    assert count_params(spec_from_hf_config(d, "m", "f")) == sum(p.numel() for p in model.parameters())


def test_moe_layer_count_and_fp32_router() -> None:
    # Shape C's MoE layer: router 8 x 256, experts' up and down 8 x 2 x 128 x 256, shared expert 2 x 256 x 256, its
    # norm 256; NemotronHTopkRouter's weight stays fp32 under a bf16 load (_keep_in_fp32_modules_strict): 2 layers
    m = tiny_moe(SHAPE_C)
    assert nemotron_h_layer_params(m, "E") == 8 * 256 + 2 * 8 * 128 * 256 + 2 * 256 * 256 + 256
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=64)
    assert sum(x.numel for x in fp32_router_tensors(m, recipe_of(t))) == 2 * 8 * 256


@pytest.mark.parametrize("name", ["nemotron-h-8b-base-8k", "nemotron-nano-9b-v2", "nemotron-3-nano-30b-a3b",
                                  "nemotron-3-super-120b-a12b"])
def test_preset_count_is_its_published_total(name: str) -> None:
    m = presets.find_model(name)
    assert count_params(m) == m.published_parameters


def test_count_is_the_layers_by_kind() -> None:
    # Shape A (M-M*-): mixer layer: in_proj 256 -> 256 + 384 + 8 (gate, conv_dim 256 + 2 x 2 x 32, dt heads), conv1d
    # 384 x 4 + 384, dt_bias, A_log, D (8 each), the gated norm (256), out_proj 256 -> 256; attention layer: q (256 ->
    # 4 x 64), k and v (256 -> 2 x 64), o (256 -> 256); MLP layer: up 256 -> 512, down 512 -> 256; each its norm (256)
    m = tiny(SHAPE_A)
    mixer = 256 * 648 + 384 * 5 + 3 * 8 + 256 + 256 * 256 + 256
    attn = 256 * 256 + 2 * 256 * 128 + 256 * 256 + 256
    mlp = 2 * 256 * 512 + 256
    assert [nemotron_h_layer_params(m, k) for k in "M*-"] == [mixer, attn, mlp]
    # + embeddings and lm_head (2048 x 256 each, untied) and norm_f
    assert count_params(m) == 2 * mixer + attn + 2 * mlp + 2 * 2048 * 256 + 256


@pytest.mark.parametrize(("key", "value", "words"), [
    ("hybrid_override_pattern", "M-X", "characters M"),
    ("attention_head_dim", 96, "attention_head_dim 96"),
    ("mamba_hidden_act", "gelu", "mamba_hidden_act"), ("sliding_window", 1024, "sliding_window")])
def test_reader_refuses_what_it_does_not_count(key: str, value: object, words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        tiny({**SHAPE_A, key: value})


@pytest.mark.parametrize(("key", "value", "words"), [
    ("output_router_logits", True, "output_router_logits"),
    ("mlp_hidden_act", "silu", "relu2 only"),
    # NemotronHTopkRouter views the scores as (tokens, n_group, E // n_group) and sums each group's top 2
    ("n_group", 3, "does not split into 3 groups"), ("n_group", 8, "of 2 or more"),
    ("topk_group", 2, "exceeds expert_groups 1")])
def test_moe_reader_refuses_what_it_does_not_count(key: str, value: object, words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        tiny_moe({**SHAPE_C, key: value})


def test_super_config_json_is_read_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nemotron 3 Super's published config.json: the latent MoE counted, its MTP layer (num_nextn_predict_layers 1,
    # mtp_hybrid_override_pattern "*E") not built by NemotronHForCausalLM and said so in one note
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SUPER))
    code, out, _ = invoke(["estimate", str(path), "--format", "json", "--method", "lora", "--seq-len", "256"], capsys)
    notes = json.loads(out)["notes"]
    assert code == 0 and json.loads(out)["parameters"] == 120_668_687_360
    assert any("latent width 1024, between fc1_latent_proj and fc2_latent_proj" in n for n in notes)
    assert sum("multi-token-prediction" in n for n in notes) == 1
    assert any("1 multi-token-prediction layer(s) (mtp.*) are dropped on load" in n for n in notes)


def test_mtp_layers_change_no_count() -> None:
    # NemotronHModel builds no MTP layer whatever num_nextn_predict_layers says (sum(p.numel()) of the Super fixture
    # with 0 and with 1: 120,668,687,360 both, transformers 5.24 on the meta device)
    assert count_params(tiny_super({"num_nextn_predict_layers": 0})) == \
        count_params(tiny_super({"num_nextn_predict_layers": 1})) == 120_668_687_360


def test_moe_lora_targets() -> None:
    # peft 0.21 maps no nemotron_h expert names (_MOE_TARGET_MODULE_MAPPING: mixtral / qwen2_moe only) and matches
    # target_modules against modules: up_proj / down_proj adapt shared_experts' nn.Linear modules and the "-" layers'
    # MLP, never NemotronHExperts' 3-D Parameters
    m = tiny_moe(SHAPE_D)
    assert [(lin.module, lin.count) for lin in resolve_targets(m, ("up_proj", "down_proj"))] == \
        [("up_proj", 1), ("down_proj", 1), ("shared_expert.up_proj", 2), ("shared_expert.down_proj", 2)]
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["q_proj", "v_proj", "in_proj"]


def test_lora_targets() -> None:
    # peft 0.21 has no default for nemotron_h and refuses its out_proj (tuners_utils.py
    # _check_lora_target_modules_mamba lists nemotron_h), so all-linear, which takes out_proj, fails there too
    m = tiny(SHAPE_A)
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["q_proj", "v_proj", "in_proj"]
    assert [lin.module for lin in resolve_targets(m, ("up_proj", "down_proj"))] == ["up_proj", "down_proj"]
    with pytest.raises(UnsupportedCombination, match="peft refuses the Mamba mixer's out_proj for nemotron_h"):
        resolve_targets(m, ("all-linear",))


@pytest.mark.parametrize(("options", "words"), [
    (["--mode", "inference"], "generate() for Nemotron-H"),
    (["--precision", "amp-bf16"], "autocast over the Mamba-2 mixer"),
    (["--method", "ia3"], "only full, lora and qlora"),
    (["--method", "lora", "--lora-targets", "all-linear"], "out_proj"),
])
def test_runs_not_modelled_are_refused_in_one_line(options: list[str], words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "nemotron-h-8b-base-8k", *options], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


def test_config_json_is_read_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(FIXTURE))
    code, out, _ = invoke(["estimate", str(path), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == 8_100_852_736
    assert any("24 Mamba-2 mixer layers, 4 attention layers" in n for n in json.loads(out)["notes"])


@pytest.mark.parametrize(("shape", "kind", "trained", "measured", "over"), [
    (SHAPE_A, "M", True, 3_577_160, 65_536), (SHAPE_A, "M", False, 3_048_744, 65_536),
    (SHAPE_A, "*", True, 527_872, 0), (SHAPE_A, "*", False, 331_264, 0),
    (SHAPE_A, "-", True, 591_360, 0), (SHAPE_A, "-", False, 263_680, 0),
    (SHAPE_B, "M", True, 5_527_250, 0), (SHAPE_B, "M", False, 4_783_778, 0),
    (SHAPE_B, "*", True, 379_648, 0), (SHAPE_B, "*", False, 232_192, 0),
    (SHAPE_B, "-", True, 443_648, 0), (SHAPE_B, "-", False, 197_888, 0)])
def test_layer_saved_set_is_measured(shape: dict[str, object], kind: str, trained: bool, measured: int,
                                     over: int) -> None:
    # Measured: the bytes of every storage torch.autograd.graph.saved_tensors_hooks packs while one NemotronHBlock of
    # the kind (transformers 5.24, bf16, sdpa, input bf16 with requires_grad) runs forward on CPU at batch 2 x 64
    # tokens, parameters, buffers and the input excluded; `trained` False: its parameters frozen. The MLP layer: the
    # norm's fp32 input + rsqrt, its fp32 normalized tensor (trained), the weight's fp32 copy, up_proj's input,
    # relu's output (square's input too) and square's (down_proj's input). Shape A's one chunk of 64 is over by one
    # padded fp32 chunk-wise tensor, the one-chunk case memory/ssm.py notes for Mamba-2.
    m = tiny(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    assert nemotron_h.kind_activations(m, t, recipe_of(t), trained, kind).saved(128, 64) - measured == over


@pytest.mark.parametrize(("shape", "kind", "trained", "measured"), [
    (SHAPE_C, "E", True, 1_003_552), (SHAPE_C, "E", False, 413_728),
    (SHAPE_D, "E", True, 892_440), (SHAPE_D, "E", False, 384_536),
    (SHAPE_D, "-", True, 443_648), (SHAPE_D, "-", False, 197_888)])
def test_moe_layer_saved_set_is_measured(shape: dict[str, object], kind: str, trained: bool, measured: int) -> None:
    # Measured as test_layer_saved_set_is_measured, the MoE block with config._experts_implementation grouped_mm (the
    # default the model dispatches to) and NemotronHTopkRouter's weight and bias kept fp32: the norm's; the router's
    # fp32 input copy (trained), sigmoid output, gather index, the renormalized weights and their sum; the sort
    # permutation, its // k and the inverse, the gathered routing weights; per routed copy relu's output (square's
    # input) and the down output, plus (trained) the gathered hidden states and square's output; the shared expert's.
    # (The packed tensors are held, so that no freed storage is reused and missed.) The hooks also see what is freed
    # when the block returns, which the estimate leaves out: the group selection's per-group top-2 indices (int64 x
    # 2), its top-k index (int64) and the bool ~mask (E): its graph dies with the discarded top-k values; and
    # grouped_mm's int32 per-expert offsets (4 B per expert), as for GraniteMoeHybrid. The "-" layer of a MoE model
    # saves what a dense model's does (shape B's figures: the same widths).
    m = tiny_moe(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    freed = (16 + 8 + m.num_experts) * 128 + 4 * m.num_experts if kind == "E" else 0
    assert nemotron_h.kind_activations(m, t, recipe_of(t), trained, kind).saved(128, 64) == measured - freed


def test_layers_sum_to_their_kinds() -> None:
    # the envelope x layers less layered_less is each layer's own kind, summed (LoRA with checkpointing: every
    # layer's input needs a gradient)
    m = tiny(SHAPE_B)
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64, grad_checkpointing=True)
    r = recipe_of(t)
    env = nemotron_h.layer_activations(m, t, r, False)
    (lt, lts, lb, lc), _ = nemotron_h.layered_less(m, t, r, False, True)
    stack = 6 * env.saved(128, 64) - (lt * 128 + lts * 128 * 64 + lb * 2 + lc)
    assert stack == sum(nemotron_h.kind_activations(m, t, r, False, k).saved(128, 64) for k in "*M-M-M")


def test_no_rope_tables() -> None:
    # NemotronHAttention is JambaAttention: no rotary embedding, so nothing is shared by the layers
    m = tiny(SHAPE_B)
    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=64)
    assert estimate(m, t).details["activations.shared"] == 0


@pytest.mark.parametrize(("shape", "method", "gc"), [(SHAPE_A, "full", False), (SHAPE_B, "full", True)],
                         ids=["a-full", "b-full-gc"])
def test_trace_matches_the_estimate(shape: dict[str, object], method: str, gc: bool) -> None:
    # --grid nemotronh "h256-M-M*--s32-q64 | full pure-bf16 | b2 s64 | no-gc" (+0.37 % there) and
    # "h192-*M-M-M-s16-g4-q48 | full pure-bf16 | b2 s64 | gc" (-0.18 %; -5.47 % without the lowest mixer's rerun)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method=method, precision="pure-bf16", batch_size=2, seq_len=64, grad_checkpointing=gc)
    m = tiny(shape)
    est, traced = estimate(m, t).tensor_peak_bytes, trace(m, t).peak_bytes
    assert est == pytest.approx(traced, rel=0.02) and est >= traced * 0.98


@pytest.mark.parametrize(("method", "gc"), [("full", True), ("lora", True)], ids=["c-full-gc", "c-lora-gc"])
def test_moe_trace_matches_the_estimate(method: str, gc: bool) -> None:
    # --grid nemotronh "moe-h256-MEM*E-e8k2-i128-s256 | full pure-bf16 | b2 s64 | gc" (+1.32 %; -2.55 % while the
    # bottom layer's expert gradients were counted late below a Mamba-2 bottom layer) and its LoRA case (+3.06 %)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method=method, precision="pure-bf16" if method == "full" else "bf16", batch_size=2, seq_len=64,
                     grad_checkpointing=gc)
    m = tiny_moe(SHAPE_C)
    est, traced = estimate(m, t).tensor_peak_bytes, trace(m, t).peak_bytes
    assert traced * 0.98 <= est <= traced * 1.05


def test_latent_layer_count() -> None:
    # Shape L1's MoE layer: router 8 x 256, experts' up and down 8 x 2 x 128 x 64 (latent 64), shared expert
    # 2 x 256 x 256, fc1 / fc2_latent_proj 2 x 256 x 64, its norm 256
    m = tiny_super(SHAPE_L1)
    assert nemotron_h_layer_params(m, "E") == 8 * 256 + 2 * 8 * 128 * 64 + 2 * 256 * 256 + 2 * 256 * 64 + 256


@pytest.mark.parametrize(("shape", "trained", "measured"), [
    (SHAPE_L1, True, 830_496), (SHAPE_L1, False, 322_592), (SHAPE_L2, True, 684_832), (SHAPE_L2, False, 275_232),
    ({**SHAPE_L1, "norm_topk_prob": False}, True, 828_960), ({**SHAPE_L1, "norm_topk_prob": False}, False, 321_056)])
def test_latent_layer_saved_set_is_measured(shape: dict[str, object], trained: bool, measured: int) -> None:
    # Measured as test_moe_layer_saved_set_is_measured (one latent NemotronHMoE block, bf16, grouped_mm, the router
    # fp32, b2 x 64 on CPU, saved_tensors_hooks): the E block's saved set with the experts' tensors at the latent
    # width, fc2_latent_proj's input (latent, trained) and fc1_latent_proj's (the normed hidden states shared_experts'
    # up_proj saves: one storage). The freed group selection is (tokens, n_group, 2) and (tokens, topk_group) int64
    # wide with grouped routing, plus the bool ~mask (E) and grouped_mm's offsets (4 B per expert). norm_topk_prob
    # false (L2, and L1 with it): no renormalization, whose division keeps the top-k weights and their sum
    # (4 x k + 4 B per token: 1,536 B at L1's 128 tokens, top 2)
    m = tiny_super(shape)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=64)
    freed = (16 * m.expert_groups + 8 * m.topk_expert_groups + m.num_experts) * 128 + 4 * m.num_experts
    assert nemotron_h.kind_activations(m, t, recipe_of(t), trained, "E").saved(128, 64) == measured - freed


def test_latent_lora_targets_and_qlora() -> None:
    # peft matches target_modules against module names: fc1_latent_proj / fc2_latent_proj are nn.Linear modules of the
    # E layers (adapted by name); transformers' bitsandbytes integration (integrations/bitsandbytes.py
    # replace_with_bnb_linear) replaces them as any nn.Linear, not the 3-D expert Parameters
    from vramcalc.core.params import quantized_linears

    m = tiny_super(SHAPE_L2)  # *E-ME: 2 E layers
    assert [(lin.module, lin.count, lin.in_features, lin.out_features)
            for lin in resolve_targets(m, ("fc1_latent_proj", "fc2_latent_proj"))] == \
        [("fc1_latent_proj", 2, 192, 48), ("fc2_latent_proj", 2, 48, 192)]
    assert [lin.module for lin in resolve_targets(m, ("auto",))] == ["q_proj", "v_proj", "in_proj"]
    assert {"fc1_latent_proj", "fc2_latent_proj"} <= {lin.module for lin in quantized_linears(m)}


def test_latent_lora_alone_needs_a_mamba_layer() -> None:
    # the dense copy of a model without M layers would have no target left: refused in one line
    m = tiny_super({**SHAPE_L2, "hybrid_override_pattern": "*E-E"})
    t = TrainingSpec(method="lora", precision="bf16", batch_size=1, seq_len=64, lora_targets=("fc1_latent_proj",))
    with pytest.raises(UnsupportedCombination, match="latent projections alone"):
        estimate(m, t)


@pytest.mark.parametrize(("method", "gc"), [("lora", True), ("qlora", True)], ids=["l1-lora-gc", "l2-qlora-gc"])
def test_latent_trace_matches_the_estimate(method: str, gc: bool) -> None:
    # --grid nemotronh "latent-h256-MEM*E-e8k2-l64-g4t2 | lora q,v,in_proj | b2 s64 | gc" (+1.87 %) and
    # "latent-h192-*E-ME-e8k3-l48-g2t1-nonorm | qlora q,v,in_proj | b2 s64 | gc" (-1.09 %), the grid's worst two
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method=method, precision="bf16", batch_size=2, seq_len=64, grad_checkpointing=gc,
                     **({"kbit_prep": False} if method == "qlora" else {}))
    m = tiny_super(SHAPE_L1 if method == "lora" else SHAPE_L2)
    est, traced = estimate(m, t).tensor_peak_bytes, trace(m, t).peak_bytes
    assert traced * 0.98 <= est <= traced * 1.05


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_sharded_groups_are_the_layer_kinds(method: str) -> None:
    # ZeRO-3 / FSDP units and tp/pp ranks read weights.tensor_groups: Nemotron-H's layers are grouped by kind (shape D
    # *E-ME: 1 "*", 2 "E", 1 "-", 1 "M", each with its block norm), and the groups add up to weight_bytes
    from vramcalc.core.memory.weights import tensor_groups, weight_bytes

    m = tiny_moe(SHAPE_D)
    t = TrainingSpec(method=method, precision="pure-bf16" if method == "full" else "bf16", batch_size=1, seq_len=64)
    g = tensor_groups(m, t, recipe_of(t))
    assert [n for n, _ in g.layers] == [1, 1, 2, 1]  # sorted kinds: "*", "-", "E", "M"
    total = sum(x.bytes_each() * x.count for x in g.embed + g.head + g.shared) \
        + sum(n * sum(x.bytes_each() * x.count for x in one) for n, one in g.layers)
    assert total == weight_bytes(m, t, recipe_of(t)).total
