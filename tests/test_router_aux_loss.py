"""The MoE router's load-balancing aux loss (issues 13 and 15; core/memory/router_aux.py): a config.json's
output_router_logits, --router-aux-loss, LLaMA-Factory moe_aux_loss_coef and TRL router_aux_loss_coef, and its trace.

transformers 5.24's load_balancing_loss_func (mixtral, qwen2_moe, qwen3_moe, gpt_oss modeling files) runs layer by
layer: every MoE layer's (tokens, experts) router logits are kept from the layer to the loss, then their gradients
until the backward reaches each router; --grid aux measures it (benchmarks/results/accuracy_aux.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import invoke
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
RUN = TrainingSpec(method="full", batch_size=1, seq_len=4096)


def _config(name: str, **changes: object) -> dict[str, object]:
    return {**json.loads((HF / f"{name}.json").read_text()), **changes}


def test_config_key_is_read_for_moe_models() -> None:
    on = spec_from_hf_config(_config("qwen3-30b-a3b", output_router_logits=True), "q", "t")
    off = spec_from_hf_config(_config("qwen3-30b-a3b"), "q", "t")  # published: "output_router_logits": false
    assert on.output_router_logits and not off.output_router_logits
    # a dense model's config with the key: transformers' dense causal LMs have no router, nothing to return
    dense = spec_from_hf_config(_config("tinyllama-1.1b", output_router_logits=True), "t", "t")
    assert not dense.output_router_logits


def test_qwen3_30b_keeps_every_layers_logits() -> None:
    # qwen3-30b-a3b.json: 48 layers, all MoE (mlp_only_layers []), 128 experts; bf16 logits of 4,096 tokens each:
    # 48 x 4,096 x 128 x 2 B = 50,331,648 B (transformers 5.24 accumulates the loss layer by layer: no torch.cat, no
    # one_hot of the experts, so nothing (tokens x layers) x top_k x experts wide exists)
    m = presets.find_model("qwen3-30b-a3b")
    off, on = estimate(m, RUN), estimate(m, replace(RUN, router_aux_loss=True))
    assert on.details["activations.router_logits"] == 48 * 4096 * 128 * 2 == 50_331_648
    assert on.activations - off.activations == 50_331_648
    # every moment of the layers holds them (the logits, then their gradients), the bottom layer's backward one
    # layer's, the end of backward none
    before = {m_.key: m_.total for m_ in off.named_moments()}
    after = {m_.key: m_.total for m_ in on.named_moments()}
    assert after["backward.start"] - before["backward.start"] == 50_331_648
    assert after["forward.loss"] - before["forward.loss"] == 50_331_648
    assert after["backward.bottom"] - before["backward.bottom"] == 4096 * 128 * 2
    assert after["backward.end"] == before["backward.end"]
    assert on.phases["optimizer_step"] == off.phases["optimizer_step"]
    # the aux loss's own moment after the cross-entropy: the head's 16-bit logits (151,936 vocab) and, beyond them,
    # 48 saved bf16 softmaxes, the last layer's two fp32 copies, the fp32 mask, top-8 values, int64 indices, int32 cast
    aux = 48 * 128 * 2 + 2 * 4 * 128 + 4 + 8 * (2 + 8 + 4)
    assert on.details["temporaries.router_aux_loss"] == (2 * 151_936 + aux) * 4096
    assert "forward.aux_loss" in after and any("router aux loss" in n for n in on.notes)
    # --upcast-logits (LLaMA-Factory upcast_lmhead_output, memory/upcast.py): the model returns fp32 logits
    up = estimate(m, replace(RUN, router_aux_loss=True, upcast_logits=True))
    assert up.details["temporaries.router_aux_loss"] == (4 * 151_936 + aux) * 4096


def test_dense_bottom_layers_have_no_router() -> None:
    # qwen1.5-moe-a2.7b.json: 24 layers; mlp_only_layers [0, 1] makes the two bottom ones dense (Qwen2MoeMLP)
    m = spec_from_hf_config(_config("qwen1.5-moe-a2.7b", mlp_only_layers=[0, 1], output_router_logits=True), "q", "t")
    b = estimate(m, RUN)
    assert b.details["activations.router_logits"] == 22 * 4096 * 60 * 2  # 60 experts (num_experts)
    plain = estimate(replace(m, output_router_logits=False), RUN)
    bottom = {x.key: x.total for x in b.named_moments()}["backward.bottom"]
    assert bottom == {x.key: x.total for x in plain.named_moments()}["backward.bottom"]  # layer 0 has no router


def test_mixtral_amp_softmax_is_fp32() -> None:
    # under autocast the aux loss's softmax is an fp32 op (CUDA autocast's fp32 list): 4 B per saved probability;
    # the logits stay bf16 (F.linear runs in bf16): 32 layers x 8 experts (mixtral-8x7b-v0.1.json)
    m = presets.find_model("mixtral-8x7b")
    b = estimate(m, replace(RUN, method="lora", precision="amp-bf16", router_aux_loss=True))
    assert b.details["activations.router_logits"] == 32 * 8 * 2 * 4096
    aux = 32 * 8 * 4 + 2 * 4 * 8 + 4 + 2 * (4 + 8 + 4)  # fp32 softmaxes, copies and mask; top-2 of fp32
    assert b.details["temporaries.router_aux_loss"] == (2 * 32_000 + aux) * 4096


@pytest.mark.parametrize(("model", "change", "match"), [
    ("llama-3.2-1b", {}, "not a mixture-of-experts model"),
    ("llama-4-scout", {}, "computes no aux loss"),
    ("deepseek-v3", {}, "computes no aux loss"),
    ("jamba-1.5-mini", {}, "not traced"),
    ("qwen3-30b-a3b", {"loss": "chunked"}, "--loss hf"),
    ("qwen3-30b-a3b", {"objective": "dpo"}, "SFT training"),
    ("qwen3-30b-a3b", {"mode": "inference"}, "--mode inference"),
    ("qwen3-30b-a3b", {"mode": "serve"}, "--mode serve"),
    ("qwen3-30b-a3b", {"tp": 2, "gpus_per_node": 2}, "--tp 2"),
])
def test_refused_in_one_line(model: str, change: dict[str, object], match: str) -> None:
    with pytest.raises(UnsupportedCombination, match=match) as e:
        estimate(presets.find_model(model), replace(RUN, router_aux_loss=True, **change))
    assert "\n" not in str(e.value)


def test_serving_ignores_the_config_key() -> None:
    # vLLM runs its own model code (memory/vllm.py): a config.json's output_router_logits changes nothing there
    m = replace(presets.find_model("qwen3-30b-a3b"), output_router_logits=True)
    t = TrainingSpec(mode="serve", batch_size=4, seq_len=4096)
    assert estimate(m, t).tensor_peak_bytes == estimate(replace(m, output_router_logits=False), t).tensor_peak_bytes


def test_cli_option_and_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the reproduction: a toy Mixtral config.json with the key true is no longer read silently
    path = tmp_path / "orl.json"
    path.write_text(json.dumps({"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128,
                                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 512,
                                "output_router_logits": True}))
    code, stdout, _ = invoke(["estimate", str(path), "--method", "full", "--format", "json"], capsys)
    assert code == 0
    out = json.loads(stdout)
    assert out["details"]["activations.router_logits"] == 2 * 8 * 2 * 512  # 2 layers x 8 experts x bf16 x 512 tokens
    assert any("output_router_logits" in n for n in out["notes"])
    code, _, err = invoke(["estimate", "llama-3.2-1b", "--router-aux-loss"], capsys)
    assert code == 2 and "not a mixture-of-experts model" in err and err.count("\n") == 1


def _lf(tmp_path: Path, model: str, text: str) -> Path:
    p = tmp_path / "lf.yaml"
    p.write_text(f"model_name_or_path: {model}\nstage: sft\nfinetuning_type: lora\nbf16: true\n{text}")
    return p


def test_llama_factory_moe_aux_loss_coef(tmp_path: Path) -> None:
    # configure_moe (LLaMA-Factory src/llamafactory/model/model_utils/moe.py): a non-zero coefficient sets
    # output_router_logits on mixtral / qwen2_moe / qwen3_moe / ... configs, nothing on gpt_oss
    run = runfiles.load(_lf(tmp_path, "qwen3-30b-a3b", "moe_aux_loss_coef: 0.001\n"))[0]
    assert run.options["router_aux_loss"] is True and run.unmodelled == [] and "moe_aux_loss_coef" in run.mapped
    off = runfiles.load(_lf(tmp_path, "qwen3-30b-a3b", "moe_aux_loss_coef: 0\n"))[0]
    assert "router_aux_loss" not in off.options and off.unmodelled == []
    oss = runfiles.load(_lf(tmp_path, "gpt-oss-20b", "moe_aux_loss_coef: 0.01\n"))[0]
    assert "router_aux_loss" not in oss.options and any("configure_moe" in n for n in oss.notes)
    with pytest.raises(runfiles.RunFileError, match="moe_aux_loss_coef"):
        runfiles.load(_lf(tmp_path, "qwen3-30b-a3b", "moe_aux_loss_coef: yes\n"))


def test_trl_router_aux_loss_coef(tmp_path: Path) -> None:
    # SFTConfig.router_aux_loss_coef (trl/trainer/sft_config.py): non-zero turns the aux loss on, 0.0 off
    p = tmp_path / "sft.json"
    p.write_text(json.dumps({"output_dir": "o", "packing": False, "router_aux_loss_coef": 0.001}))
    on = runfiles.load(p)[0]
    assert on.options["router_aux_loss"] is True and "router_aux_loss_coef" in on.mapped
    p.write_text(json.dumps({"output_dir": "o", "packing": False, "router_aux_loss_coef": 0.0}))
    assert runfiles.load(p)[0].options["router_aux_loss"] is False
    # TRL's SFTTrainer turns it on by itself for a MoE config with a non-zero coefficient: said in a note
    b = estimate(presets.find_model("qwen3-30b-a3b"), replace(RUN, stack="trl", loss="trl"))
    assert any("TRL's SFTTrainer adds it" in n for n in b.notes)


def test_aux_loss_matches_the_trace_of_a_tiny_qwen3_moe() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # qwen3-30b-a3b.json cut to 2 layers, hidden 64, 64 experts (--grid aux's qwen3_moe shape, fewer layers)
    m = spec_from_hf_config(_config("qwen3-30b-a3b", hidden_size=64, moe_intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=64,
                                    num_experts_per_tok=4, vocab_size=512), "tiny", "t")
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=256)
    off, on = trace(m, t), trace(m, replace(t, router_aux_loss=True))
    # measured: the peak (the loss's backward start) grows by every layer's bf16 logits' gradient, 2 x 512 x 64 x 2 B
    assert on.peak_bytes - off.peak_bytes == 2 * 512 * 64 * 2
    got = estimate(m, replace(t, router_aux_loss=True))
    assert abs(got.tensor_peak_bytes - on.peak_bytes) / on.peak_bytes < 0.01


@settings(max_examples=200)
@given(st.sampled_from(["mixtral-8x7b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b", "gpt-oss-20b"]),
       st.sampled_from(["full", "lora", "qlora"]), st.integers(1, 8), st.integers(1, 8192), st.booleans(),
       st.sampled_from(["bf16", "pure-bf16", "amp-bf16", "fp32"]))
def test_the_term_is_every_moe_layers_logits_and_never_lowers_a_phase(
        name: str, method: str, batch: int, seq: int, gc: bool, precision: str) -> None:
    # (the profile in conftest.py is derandomized) the added term is the MoE layers x tokens x experts x the compute
    # dtype, whatever the run; no phase gets smaller, the optimizer step does not change
    m = presets.find_model(name)
    if method == "qlora" and m.family == "gpt_oss":
        method = "lora"  # gpt-oss refuses QLoRA (its experts are Parameters; tests/test_gpt_oss.py)
    t = TrainingSpec(method=method, batch_size=batch, seq_len=seq, grad_checkpointing=gc, precision=precision)
    off, on = estimate(m, t), estimate(m, replace(t, router_aux_loss=True))
    c = 4 if precision == "fp32" else 2
    layers = (m.num_layers or 0) - m.first_dense_layers
    assert on.details["activations.router_logits"] == layers * batch * seq * m.num_experts * c
    assert all(on.phases[k] >= off.phases[k] for k in off.phases)
    assert on.phases["optimizer_step"] == off.phases["optimizer_step"]
