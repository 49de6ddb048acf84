"""Unsloth's kernels group by group (issue 13, `--kernels unsloth:GROUPS`, memory/unsloth.py): axolotl's
unsloth_lora_qkv / unsloth_lora_o / unsloth_lora_mlp / unsloth_rms_norm / unsloth_rope keys, each one group patched
on its own (axolotl monkeypatch/unsloth_.py): the saved set by hand, the tracer's emulation of each group, the
refusals where axolotl applies no patch, and the run-file keys."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from test_unsloth import SEVEN, SMALL
from vramcalc.core.errors import SpecError, VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.memory import unsloth as us
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles


def _run(kernels: str, **kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "lora", "precision": "bf16", "lora_targets": SEVEN, "kernels": kernels,
                               "attention": "flash", "batch_size": 2, "seq_len": 512}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_values_and_spelling() -> None:
    assert _run("unsloth:mlp,qkv").kernels == "unsloth:qkv,mlp"  # one spelling: KERNEL_GROUPS order
    assert us.groups(_run("unsloth:rope, norm")) == ("norm", "rope")
    assert us.groups(_run("unsloth")) == ("qkv", "o", "mlp", "norm", "rope")  # Unsloth's own forward: all five
    assert us.groups(_run("hf")) == ()
    for bad in ("unsloth:", "unsloth:ce", "axolotl:norm", "unsloth:mlp;o"):
        with pytest.raises(SpecError, match="unsloth:qkv,o,mlp"):
            _run(bad)


def test_mlp_group_saved_set_by_hand() -> None:
    # llama-3.2-1b (its config.json): hidden 2,048, intermediate 8,192, 32 heads of 64, 8 KV heads; bf16 (2 B); peft's
    # adapters in fp32 (4 B, the default --adapter-dtype, peft autocast_adapter_dtype), rank 16 (--lora-rank default).
    m = presets.find_model("llama-3.2-1b")
    h, i, q, kv, heads, r = 2_048, 8_192, 32 * 64, 8 * 64, 32, 16
    layer = us.layer_activations(m, _run("unsloth:mlp"), RECIPES["bf16"])
    lora = 4 * h + 4 * r  # peft lora.Linear: lora_A saves its own fp32 cast of the input, lora_B lora_A's output
    expected = {
        "attn norm (fp32 input + rsqrt)": 4 * h + 4,  # LlamaRMSNorm: hidden_states.to(float32) and rsqrt
        "lora q_proj input": lora, "lora k_proj input": lora, "lora v_proj input": lora,
        "sdpa q, k, v, out, logsumexp": 2 * (2 * q + 2 * kv) + 4 * heads,  # flash: q, k, v, out + fp32 lse
        "lora o_proj input": 4 * q + 4 * r,
        "mlp norm (fp32 input + rsqrt)": 4 * h + 4,
        "mlp input, gate and up outputs (LoRA_MLP X, e, g)": 2 * h + 2 * 2 * i,  # LoRA_MLP: X, e, g
    }
    assert {x.name: x.per_token for x in layer.terms} == expected


def test_norm_and_qkv_groups_by_hand() -> None:
    m = presets.find_model("llama-3.2-1b")
    h, r = 2_048, 16  # hidden, --lora-rank default
    names = {x.name: x.per_token for x in us.layer_activations(m, _run("unsloth:qkv,norm"), RECIPES["bf16"]).terms}
    # Fast_RMS_Layernorm: save_for_backward(X, W, r): the 16-bit input and an fp32 r per row, both norms
    assert names["attn norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)"] == 2 * h + 4
    assert names["mlp norm: input (16-bit) + fp32 rstd (Fast_RMS_Layernorm)"] == 2 * h + 4
    assert names["q/k/v input: the normed hidden states (LoRA_QKV)"] == 2 * h  # once, not each adapter's fp32 copy
    assert names["lora o_proj input"] == 4 * 32 * 64 + 4 * r and "lora gate_proj input" in names  # peft's there
    # Every group selected one by one saves what Unsloth's own forward saves
    whole = us.layer_activations(m, _run("unsloth"), RECIPES["bf16"])
    five = us.layer_activations(m, _run("unsloth:qkv,o,mlp,norm,rope"), RECIPES["bf16"])
    assert five.terms == whole.terms and five.backward_transient == whole.backward_transient


def test_each_group_lowers_the_saved_set() -> None:
    m = presets.find_model("tinyllama-1.1b")
    hf = estimate(m, _run("hf")).details["activations.per_layer"]
    for g in ("qkv", "o", "mlp", "norm"):
        assert estimate(m, _run(f"unsloth:{g}")).details["activations.per_layer"] < hf, g
    # RoPE in place changes no saved tensor (SDPA saves the rotated q and k either way)
    assert estimate(m, _run("unsloth:rope")).details["activations.per_layer"] == hf


@pytest.mark.parametrize(("method", "chosen"), [
    *(("lora", g) for g in ("qkv", "o", "mlp", "norm", "rope", "qkv,o,mlp", "mlp,norm")),
    ("qlora", "mlp"), ("qlora", "norm,rope")])
def test_groups_match_the_trace(method: str, chosen: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # checkpointing and Cut CE: the layers' backward is the peak, not the small vocabulary's loss
    t = _run(f"unsloth:{chosen}", method=method, kbit_prep=False, grad_checkpointing=True, loss="cut")
    e, r = estimate(SMALL, t), trace(SMALL, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    # Issue 13's bounds: never under the trace by more than 2 %, over by at most 5 %.
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def test_refused_where_axolotl_applies_no_patch(capsys: pytest.CaptureFixture[str]) -> None:
    mistral = presets.find_model("mistral-7b")
    # unsloth_rms_norm replaces modeling_llama.LlamaRMSNorm only (PatchManager._patch_loss_llama: Llama-derived)
    assert "not to mistral" in (us.why_not(mistral, _run("unsloth:norm")) or "")
    assert us.why_not(mistral, _run("unsloth:mlp")) is None  # integrate_lora_mlp_patch: llama and mistral
    llama = presets.find_model("llama-3.2-1b")
    assert "flash" in (us.why_not(llama, _run("unsloth:qkv", attention="sdpa")) or "")  # LlamaFlashAttention2 only
    assert "8-bit" in (us.why_not(llama, _run("unsloth:mlp", method="qlora", quant_bits=8)) or "")
    assert "gate_proj,up_proj,down_proj" in (us.why_not(llama, _run("unsloth:mlp", lora_targets=("q_proj",))) or "")
    code, out, err = invoke(["estimate", "mistral-7b", "--method", "lora", "--lora-targets", "all-linear",
                             "--kernels", "unsloth:norm,mlp"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: --kernels unsloth:mlp,norm")
    code, _, err = invoke(["estimate", "llama-3.2-1b", "--kernels", "unsloth:ce"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unsloth:qkv,o,mlp" in err


def test_cli_notes_name_the_groups(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "llama-3.2-1b", "--method", "qlora", "--lora-targets", "all-linear", "--precision", "bf16",
            "--attention", "flash", "--format", "json"]
    code, out, err = invoke([*args, "--kernels", "unsloth:qkv,o,mlp"], capsys)
    code2, hf, _ = invoke(args, capsys)
    assert code == code2 == 0, err
    s = json.loads(out)
    assert s["settings"]["kernels"] == "unsloth:qkv,o,mlp"
    assert any(n.startswith("kernels unsloth:qkv,o,mlp: LoRA_QKV") and "norm, rope: transformers'" in n
               for n in s["notes"])
    assert s["tensor_peak_bytes"] < json.loads(hf)["tensor_peak_bytes"]


def _axolotl(tmp_path: Path, body: str) -> runfiles.Run:
    path = tmp_path / "ax.yaml"
    path.write_text("base_model: meta-llama/Llama-3.2-1B\nadapter: lora\nlora_target_linear: true\n"
                    "flash_attention: true\n" + body)
    return runfiles.load(str(path))[0]


def test_axolotl_kernel_keys(tmp_path: Path) -> None:
    run = _axolotl(tmp_path, "unsloth_lora_mlp: true\nunsloth_lora_qkv: true\nunsloth_lora_o: true\n"
                             "unsloth_rms_norm: true\nunsloth_rope: false\n")
    assert run.options["kernels"] == "unsloth:qkv,o,mlp,norm"
    assert run.unmodelled == [] and {"unsloth_lora_mlp", "unsloth_rope"} <= set(run.mapped)
    # (a lora_*_kernel key given: axolotl turns none of its own LoRA kernels on, check_auto_enable_lora_kernels)
    off = _axolotl(tmp_path, "unsloth_lora_mlp: false\nlora_mlp_kernel: false\n")
    assert "kernels" not in off.options and off.unmodelled == []
    # axolotl's own lora_*_kernel keys: --kernels axolotl:GROUPS (tests/test_axolotl_kernels.py)
    # (unsloth_cross_entropy_loss is mapped to --loss hf: tests/test_liger_ce.py)
    rest = _axolotl(tmp_path, "lora_mlp_kernel: true\nlora_qkv_kernel: true\nlora_o_kernel: true\n")
    assert rest.options["kernels"] == "axolotl:qkv,o,mlp" and rest.unmodelled == []
    # read as axolotl's pydantic `bool | None` reads them: 'yes' is true, 'maybe' refused naming the key
    assert _axolotl(tmp_path, "unsloth_rope: 'yes'\n").options["kernels"] == "unsloth:rope"
    with pytest.raises(VramcalcError, match="unsloth_rope"):
        _axolotl(tmp_path, "unsloth_rope: maybe\n")


def test_axolotl_kernels_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ax.yaml"
    path.write_text("base_model: meta-llama/Llama-3.2-1B\nadapter: lora\nlora_target_linear: true\nlora_r: 16\n"
                    "lora_dropout: 0\nbf16: true\nflash_attention: true\nsequence_len: 1024\nmicro_batch_size: 2\n"
                    "unsloth_lora_mlp: true\nunsloth_lora_qkv: true\nunsloth_lora_o: true\n")
    code, out, err = invoke(["estimate", "--config", str(path), "--format", "json"], capsys)
    assert code == 0, err
    s = json.loads(out)["runs"][0]  # a run file's runs
    assert s["settings"]["kernels"] == "unsloth:qkv,o,mlp"
    path.write_text(path.read_text().replace("meta-llama/Llama-3.2-1B", "mistralai/Mistral-7B-v0.1"))
    code, out, err = invoke(["estimate", "--config", str(path)], capsys)
    # axolotl patches q/k/v and o on Llama only: refused in one line rather than counted
    assert code == 2 and "not to mistral" in err and len(err.strip().splitlines()) == 1


def test_replace_keeps_spelling() -> None:
    t = replace(_run("unsloth:o,qkv"), batch_size=4)
    assert t.kernels == "unsloth:qkv,o"
