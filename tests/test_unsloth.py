"""Unsloth's layer kernels (issue 13, memory/unsloth.py): the saved set by hand, against transformers' modules, the
tracer's emulation (trace/_unsloth.py), and the CLI's refusals and notes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.memory import estimate
from vramcalc.core.memory import unsloth as us
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.saver_ranking import rank_savers
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# A small llama whose layers dominate the step: 4 layers, hidden 256, MLP 1,024, 4 heads / 2 KV heads, vocab 2,048.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=2_048, hidden_size=256,
                  intermediate_size=1_024, num_layers=4, num_attention_heads=4, num_kv_heads=2)


def _run(**kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "lora", "precision": "bf16", "lora_targets": SEVEN, "kernels": "unsloth",
                               "batch_size": 2, "seq_len": 512}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_layer_saved_set_by_hand() -> None:
    # llama-3.2-1b (its config.json): hidden 2,048, intermediate 8,192, 32 heads of 64, 8 KV heads; bf16 (2 B).
    m = presets.find_model("llama-3.2-1b")
    h, i, q, kv, heads = 2_048, 8_192, 32 * 64, 8 * 64, 32
    layer = us.layer_activations(m, _run(), RECIPES["bf16"])
    expected = {
        # Fast_RMS_Layernorm: save_for_backward(X, W, r): the 16-bit input and an fp32 r per row
        "attn norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)": 2 * h + 4,
        "q/k/v input: the normed hidden states (LoRA_QKV)": 2 * h,  # LoRA_QKV: save_for_backward(X, QA, ..., VB)
        "sdpa q, k, v, out, logsumexp": 2 * (2 * q + 2 * kv) + 4 * heads,  # flash: q, k, v, out + fp32 lse
        "mlp norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)": 2 * h + 4,
        "mlp input, gate and up outputs (LoRA_MLP X, e, g)": 2 * h + 2 * 2 * i,  # LoRA_MLP: X, e, g
    }
    assert {x.name: x.per_token for x in layer.terms} == expected
    # Under checkpointing the attention norm's X is the checkpoint's own saved input: only r is new.
    ck = us.layer_activations(m, _run(grad_checkpointing=True), RECIPES["bf16"])
    assert ck.terms[0].per_token == 4
    # Backward: dY (hidden) and DW = dY @ down (intermediate), 16-bit; QLoRA adds a fresh dequantized weight of the
    # largest block Linear (8,192 x 2,048) in bf16 and its fp32 absmax per 64 weights.
    assert layer.backward_transient.per_token == 2 * (h + i)
    qlora = us.layer_activations(m, _run(method="qlora"), RECIPES["bf16"])
    assert qlora.backward_transient.const == 2 * 8_192 * 2_048 + 4 * (8_192 * 2_048 // 64)


def test_unsloth_saves_less_than_transformers() -> None:
    m = presets.find_model("llama-3.2-1b")
    t = _run(batch_size=1, seq_len=2048)
    hf = estimate(m, replace(t, kernels="hf")).details["activations.per_layer"]
    un = estimate(m, t).details["activations.per_layer"]
    # peft's LoRA layers (fp32 adapters) save each adapter's cast input and lora_A output, transformers' MLP the
    # SiLU input and output, the up output and the product, LlamaRMSNorm an fp32 copy: Unsloth keeps about half.
    assert un < hf * 0.6, (un, hf)
    assert estimate(m, t).tensor_peak_bytes < estimate(m, replace(t, kernels="hf")).tensor_peak_bytes


@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("saver", ["no-gc", "gc", "gc+offload+cut"])
def test_matches_the_trace(method: str, saver: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    kw: dict[str, object] = {"no-gc": {}, "gc": {"grad_checkpointing": True},
                             "gc+offload+cut": {"grad_checkpointing": True, "activation_offload": True,
                                                "loss": "cut"}}[saver]
    t = _run(method=method, kbit_prep=False, **kw)
    e, r = estimate(SMALL, t), trace(SMALL, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    # Issue 13's bounds: never under the trace by more than 2 %, over by at most 5 %.
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


@pytest.mark.parametrize(("method", "saver"), [("lora", "gc+offload+cut"), ("qlora", "no-gc")])
def test_qwen2_matches_the_trace(method: str, saver: str) -> None:
    # Qwen2's biased q/k/v keep peft's layers; its o_proj and MLP run LoRA_W / LoRA_MLP (patch_peft_model).
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    qwen = replace(SMALL, name="small-qwen2", family="qwen2", qkv_bias=True)
    kw: dict[str, object] = {"grad_checkpointing": True, "activation_offload": True, "loss": "cut"} \
        if saver != "no-gc" else {}
    t = _run(method=method, kbit_prep=False, **kw)
    e, r = estimate(qwen, t), trace(qwen, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def test_why_not() -> None:
    llama = presets.find_model("llama-3.2-1b")
    assert us.why_not(llama, _run()) is None
    assert "all seven" in (us.why_not(llama, _run(lora_targets=("q_proj", "v_proj"))) or "")
    assert "dropout" in (us.why_not(llama, _run(lora_dropout=0.05)) or "")
    assert us.why_not(presets.find_model("qwen2.5-0.5b"), _run()) is None  # its biased q/k/v stay peft's
    assert us.peft_qkv(presets.find_model("qwen2.5-0.5b")) and not us.peft_qkv(llama)
    assert "gemma" in (us.why_not(presets.find_model("gemma-2b"), _run()) or "")
    assert "16 bits" in (us.why_not(llama, _run(precision="amp-bf16")) or "")
    assert "lora or qlora" in (us.why_not(llama, _run(method="full")) or "")


# --- the CLI ---------------------------------------------------------------------------------------------
def test_explicit_kernels_refused_where_not_modelled(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "gpt2", "--method", "lora", "--kernels", "unsloth"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --kernels unsloth: gpt2 is a gpt2 model"), lines


def test_stack_falls_back_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    # Gemma (GeGLU, its own norms): the stack's kernels are not counted; transformers' modules are, and a note says so.
    args = ["estimate", "gemma-2b", "--method", "qlora", "--format", "json"]
    code, out, _ = invoke([*args, "--stack", "unsloth"], capsys)
    assert code == 0
    s = json.loads(out)
    assert any(n.startswith("kernels unsloth (from the stack) not counted") for n in s["notes"])
    code, plain, _ = invoke([*args, "--stack", "unsloth", "--kernels", "hf"], capsys)
    assert code == 0 and json.loads(plain)["tensor_peak_bytes"] == s["tensor_peak_bytes"]


def test_stack_unsloth_counts_its_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "llama-3.2-1b", "--method", "qlora", "--stack", "unsloth", "--format", "json"]
    code, out, _ = invoke(args, capsys)
    code2, hf, _ = invoke([*args, "--kernels", "hf"], capsys)
    assert code == code2 == 0
    s = json.loads(out)
    assert s["settings"]["kernels"] == "unsloth"
    assert any(n.startswith("kernels unsloth: Fast_RMS_Layernorm") for n in s["notes"])
    assert s["tensor_peak_bytes"] < json.loads(hf)["tensor_peak_bytes"]


def test_explain_shows_the_kernels_terms(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["explain", "llama-3.2-1b", "--method", "qlora", "--stack", "unsloth", "--format",
                           "json"], capsys)
    assert code == 0
    text = out
    assert "LoRA_MLP X, e, g" in text and "unsloth kernels/fast_lora.py" in text
    assert "Unsloth's QLoRA dequantization buffers" in text and "Fast_RMS_Layernorm (models/llama.py" in text


def test_fit_offers_the_kernels() -> None:
    m = presets.find_model("llama-3.2-1b")
    t = _run(kernels="hf", batch_size=4, seq_len=2048)
    gains = rank_savers(m, t, estimate(m, t).peak_bytes, lambda o, v: ("unsloth",) if o == "kernels" else ())
    assert any(g.changes == {"kernels": "unsloth"} and g.stacks == ("unsloth",) for g in gains)


def test_llama_factory_use_unsloth(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vramcalc.io import runfiles

    lf = tmp_path / "lf.yaml"
    lf.write_text("model_name_or_path: meta-llama/Llama-3.2-1B\nstage: sft\nfinetuning_type: lora\n"
                  "lora_target: all\nuse_unsloth: true\nuse_unsloth_gc: true\n")
    run = runfiles.load(str(lf))[0]
    # LLaMA-Factory model_args.py use_unsloth: the model goes through Unsloth's FastLanguageModel (its kernels)
    assert (run.options["kernels"], run.options["activation_offload"]) == ("unsloth", True)
    assert "use_unsloth" not in run.ignored and not any("use_unsloth" in u for u in run.unmodelled)
