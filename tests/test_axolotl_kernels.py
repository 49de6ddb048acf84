"""axolotl's own LoRA kernels (issue 13, `--kernels axolotl:GROUPS`, memory/axolotl_kernels.py): axolotl's
kernels/lora.py LoRA_QKV / LoRA_O / LoRA_MLP, which axolotl turns on by itself for LoRA / QLoRA
(utils/schemas/config.py check_auto_enable_lora_kernels at 067b021c): the saved set by hand, the tracer's
emulation, the refusals, and the run-file keys with axolotl's auto-enable rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from test_unsloth import SEVEN, SMALL
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import axolotl_kernels as ax
from vramcalc.core.memory import estimate
from vramcalc.core.memory import unsloth as us
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles


def _run(kernels: str = "axolotl:qkv,o,mlp", **kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "lora", "precision": "bf16", "lora_targets": SEVEN, "kernels": kernels,
                               "batch_size": 2, "seq_len": 512}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_values_and_spelling() -> None:
    assert _run("axolotl:mlp, qkv").kernels == "axolotl:qkv,mlp"  # one spelling: AXOLOTL_KERNEL_GROUPS order
    assert ax.groups(_run("axolotl:o")) == ("o",)
    assert ax.groups(_run("unsloth:qkv")) == () and us.groups(_run("axolotl:qkv")) == ()  # two separate sets
    for bad in ("axolotl:", "axolotl:norm", "axolotl:qkv;o"):
        with pytest.raises(SpecError, match="'axolotl:' with some of qkv,o,mlp"):
            _run(bad)
    assert replace(_run("axolotl:o,qkv"), batch_size=4).kernels == "axolotl:qkv,o"


def test_saved_set_by_hand() -> None:
    # llama-3.2-1b (its config.json): hidden 2,048, intermediate 8,192, 32 heads of 64, 8 KV heads; bf16 (2 B); peft's
    # adapters in fp32 (4 B, --adapter-dtype default), rank 16 (--lora-rank default); sdpa (the default attention).
    m = presets.find_model("llama-3.2-1b")
    h, i, q, kv, heads, r = 2_048, 8_192, 32 * 64, 8 * 64, 32, 16
    layer = ax.layer_activations(m, _run(), RECIPES["bf16"])
    names = {x.name: x.per_token for x in layer.terms}
    assert names == {
        "attn norm (fp32 input + rsqrt)": 4 * h + 4,  # transformers' LlamaRMSNorm: fp32 input and rsqrt
        "q/k/v input: the normed hidden states (LoRA_QKV)": 2 * h,  # save_for_backward(X, X, ...): once
        "sdpa q, k, v, out, logsumexp": 2 * (2 * q + 2 * kv) + 4 * heads,
        "mlp norm (fp32 input + rsqrt)": 4 * h + 4,
        "mlp input, gate and up outputs (LoRA_MLP X, gate, up)": 2 * h + 2 * 2 * i,
        # (no "lora o_proj input": LoRA_O saves the attention output the attention saves)
        "adapters cast to the compute dtype (LoRA_* save A.to(dtype), B.to(dtype))": 0,
    }
    # A.to(bf16) (r x in) and B.to(bf16) (out x r) of each of the seven projections, per layer
    pairs = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    copies = next(x for x in layer.terms if x.name.startswith("adapters cast"))
    assert copies.const == sum(2 * r * (a + b) for a, b in pairs)
    # bf16 adapters: `.to(dtype)` returns the parameter itself, no copy
    same = ax.layer_activations(m, _run(adapter_dtype="bf16"), RECIPES["bf16"])
    assert not any(x.name.startswith("adapters cast") for x in same.terms)
    # Backward: the incoming gradient (hidden), grad_down (intermediate) and the new dX (hidden), + the recomputed
    # output under checkpointing
    assert layer.backward_transient.per_token == 2 * (2 * h + i)
    gc = ax.layer_activations(m, _run(grad_checkpointing=True), RECIPES["bf16"])
    assert gc.backward_transient.per_token == 2 * (3 * h + i)


def test_dropout_terms_by_hand() -> None:
    # lora_dropout > 0: _apply_dropout outside each Function, one mask per group; the Function saves X_drop (bf16)
    # and native_dropout's backward a 1-byte mask; llama-3.2-1b: hidden 2,048, o_proj input 32 x 64
    m = presets.find_model("llama-3.2-1b")
    h, q = 2_048, 32 * 64
    names = {x.name: x.per_token for x in ax.layer_activations(m, _run(lora_dropout=0.05), RECIPES["bf16"]).terms}
    assert names["q/k/v dropped input + dropout mask (LoRA_QKV X_drop)"] == 2 * h + h
    assert names["o dropped input + dropout mask (LoRA_O X_drop)"] == 2 * q + q
    assert names["mlp dropped input + dropout mask (LoRA_MLP X_drop)"] == 2 * h + h
    # the bottom layer without checkpointing: its q/k/v input needs no gradient, so no mask is kept there
    bottom = ax.layer_activations(m, _run(lora_dropout=0.05), RECIPES["bf16"], input_grad=False)
    assert {x.name: x.per_token for x in bottom.terms}["q/k/v dropped input + dropout mask (LoRA_QKV X_drop)"] == 2 * h


def test_groups_and_families() -> None:
    m = presets.find_model("tinyllama-1.1b")
    hf = estimate(m, _run("hf")).details["activations.per_layer"]
    for g in ("qkv", "o", "mlp"):
        assert estimate(m, _run(f"axolotl:{g}")).details["activations.per_layer"] < hf, g
    # Qwen2's biased q/k/v run LoRA_QKV too (matmul_lora adds the base bias in place; Unsloth keeps peft's there)
    qwen = presets.find_model("qwen2.5-0.5b")
    names = {x.name for x in ax.layer_activations(qwen, _run(), RECIPES["bf16"]).terms}
    assert "q/k/v input: the normed hidden states (LoRA_QKV)" in names and "lora q_proj input" not in names
    # Qwen3: its q / k norms stay transformers' (QKV_PATCHES' q_norm form: applied after apply_qkv)
    qwen3 = presets.find_model("qwen3-0.6b")
    assert "q/k norm (fp32 input)" in {x.name for x in ax.layer_activations(qwen3, _run(), RECIPES["bf16"]).terms}


def test_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["estimate", "tinyllama-1.1b", "--method", "lora", "--precision", "bf16", "--lora-targets",
            ",".join(SEVEN)]
    cases = [
        (["estimate", "gemma-2b", "--method", "lora", "--lora-targets", "all-linear", "--precision", "bf16"],
         "gemma model"),
        ([*base, "--dora"], "without DoRA"),
        ([*base[:-1], "q_proj,v_proj"], "q_proj,k_proj,v_proj all carry an adapter"),
        ([*base[:3], "full", *base[4:6]], "need --method lora or qlora"),
        ([*base[:5], "amp-bf16", *base[6:]], "16 bits"),
    ]
    for args, why in cases:
        code, _, err = invoke([*args, "--kernels", "axolotl:qkv,o,mlp"], capsys)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, (args, err)


def test_cli_note(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "llama-3.2-1b", "--method", "qlora", "--lora-targets", "all-linear", "--precision", "bf16",
            "--format", "json"]
    code, out, err = invoke([*args, "--kernels", "axolotl:qkv,o,mlp"], capsys)
    code2, hf, _ = invoke(args, capsys)
    assert code == code2 == 0, err
    s = json.loads(out)
    assert s["settings"]["kernels"] == "axolotl:qkv,o,mlp"
    assert any(n.startswith("kernels axolotl:qkv,o,mlp: axolotl's LoRA autograd functions") for n in s["notes"])
    assert s["tensor_peak_bytes"] < json.loads(hf)["tensor_peak_bytes"]


@pytest.mark.parametrize(("method", "chosen", "gc", "dropout"), [
    ("lora", "qkv,o,mlp", False, 0.0), ("lora", "qkv,o,mlp", True, 0.0), ("qlora", "qkv,o,mlp", True, 0.0),
    ("qlora", "qkv,o,mlp", False, 0.0), ("lora", "qkv", True, 0.0), ("lora", "o", True, 0.0),
    ("qlora", "mlp", True, 0.0), ("lora", "qkv,o,mlp", True, 0.05), ("qlora", "qkv,o,mlp", True, 0.05),
    ("lora", "mlp", False, 0.05)])
def test_matches_the_trace(method: str, chosen: str, gc: bool, dropout: float) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # checkpointing with Cut CE: the layers' backward is the peak, not the small vocabulary's loss
    t = _run(f"axolotl:{chosen}", method=method, kbit_prep=False, grad_checkpointing=gc,
             loss="cut" if gc else "hf", lora_dropout=dropout)
    e, r = estimate(SMALL, t), trace(SMALL, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    # Issue 13's bounds: never under the trace by more than 2 %, over by at most 5 %.
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def _axolotl(tmp_path: Path, body: str, head: str = "adapter: lora\nlora_target_linear: true\n") -> runfiles.Run:
    path = tmp_path / "ax.yaml"
    path.write_text("base_model: meta-llama/Llama-3.2-1B\nbf16: true\n" + head + body)
    return runfiles.load(str(path))[0]


def test_axolotl_turns_them_on(tmp_path: Path) -> None:
    # check_auto_enable_lora_kernels: LoRA / QLoRA with none of the lora_*_kernel keys: all on
    run = _axolotl(tmp_path, "")
    assert run.options["kernels"] == "axolotl:qkv,o,mlp" and run.unmodelled == []
    note = next(n for n in run.notes if n.startswith("kernels axolotl:qkv,o,mlp"))
    assert "turned on by axolotl itself" in note and "false to turn them off" in note
    assert _axolotl(tmp_path, "", "adapter: qlora\nload_in_4bit: true\nlora_target_linear: true\n"
                    ).options["kernels"] == "axolotl:qkv,o,mlp"
    # any key given: only the keys set (no auto-enable); all false: none
    assert _axolotl(tmp_path, "lora_mlp_kernel: true\n").options["kernels"] == "axolotl:mlp"
    off = _axolotl(tmp_path, "lora_mlp_kernel: false\nlora_qkv_kernel: false\nlora_o_kernel: false\n")
    assert "kernels" not in off.options and {"lora_mlp_kernel", "lora_o_kernel"} <= set(off.mapped)
    # the cases axolotl leaves them off: full fine-tuning, rl, LoRA on an 8-bit model, trust_remote_code, FSDP1
    assert "kernels" not in _axolotl(tmp_path, "", "micro_batch_size: 1\n").options
    for body in ("rl: dpo\n", "load_in_8bit: true\n", "trust_remote_code: true\n",
                 "fsdp_config:\n  fsdp_version: 1\n"):
        r = _axolotl(tmp_path, body)
        assert r.options.get("kernels") is None, body
    assert _axolotl(tmp_path, "fsdp_version: 2\nfsdp_config: {}\n").options.get("kernels") == "axolotl:qkv,o,mlp"


def test_where_they_are_not_modelled(tmp_path: Path) -> None:
    # DoRA: axolotl runs them (saving DoRA's combined outputs and scales too), vramcalc does not model that: listed
    run = _axolotl(tmp_path, "peft_use_dora: true\n")
    assert "kernels" not in run.options
    assert set(run.unmodelled) == {"lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel"}
    assert "turned on by axolotl itself" in run.why_unmodelled["lora_mlp_kernel"]
    assert "without DoRA" in run.why_unmodelled["lora_mlp_kernel"]
    # lora_dropout > 0 is modelled (the dropped input and its mask saved beside X)
    assert _axolotl(tmp_path, "lora_dropout: 0.05\n").options["kernels"] == "axolotl:qkv,o,mlp"
    # a group whose projections are not all adapted: axolotl keeps peft's layers there (a warning); the rest run
    part = _axolotl(tmp_path, "", "adapter: lora\nlora_target_modules: [q_proj, k_proj, v_proj]\n")
    assert part.options["kernels"] == "axolotl:qkv" and part.unmodelled == []
    assert any(n.startswith("axolotl LoRA kernels o,mlp: not all of their projections") for n in part.notes)
    # LoRA on embed_tokens: lora_embedding_kernel runs LoRA_Embedding there (not modelled: listed)
    emb = _axolotl(tmp_path, "", "adapter: lora\nlora_target_modules: [q_proj, k_proj, v_proj, embed_tokens]\n")
    assert "lora_embedding_kernel" in emb.unmodelled


def test_auto_enabled_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ax.yaml"
    path.write_text("base_model: meta-llama/Llama-3.2-1B\nadapter: lora\nlora_target_linear: true\nbf16: true\n"
                    "sequence_len: 1024\nmicro_batch_size: 2\n")
    code, out, err = invoke(["estimate", "--config", str(path), "--format", "json"], capsys)
    assert code == 0, err
    s = json.loads(out)["runs"][0]
    assert s["settings"]["kernels"] == "axolotl:qkv,o,mlp"
    assert any("turned on by axolotl itself" in n for n in s["notes"])
    path.write_text(path.read_text() + "lora_mlp_kernel: false\nlora_qkv_kernel: false\nlora_o_kernel: false\n")
    code, off, err = invoke(["estimate", "--config", str(path), "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(off)["runs"][0]["tensor_peak_bytes"] > s["tensor_peak_bytes"]
