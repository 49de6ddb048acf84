"""Liger's cross-entropy on the full logits (`--loss liger-cross-entropy`, issue 13) and axolotl's two cross-entropy
keys: the head's bytes by hand, the tracer's emulation (trace/_loss.py `_LigerCE`), run files, and refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import activations as acts
from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.saver_ranking import rank_savers
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

LIGER = "liger-cross-entropy"


def test_head_bytes_by_hand() -> None:
    # llama-3.2-1b (its config.json): hidden 2,048, vocab 128,256; LoRA bf16 (c = 2), the head frozen.
    m = presets.find_model("llama-3.2-1b")
    v = 128_256
    t = TrainingSpec(method="lora", precision="bf16", seq_len=1024, loss=LIGER)
    hf = acts.head_activations(m, replace(t, loss="hf"), RECIPES["bf16"], False)
    liger = acts.head_activations(m, t, RECIPES["bf16"], False)
    # The saved set is the same size: hf's fp32 log_softmax output, Liger's fp32 logits (the upcast it writes the
    # gradient into and saves, ops/cross_entropy.py LigerCrossEntropyFunction.forward save_for_backward).
    assert liger.saved == hf.saved
    # Forward: hf holds the 16-bit logits, their fp32 upcast and log_softmax's output (4 B, counted as saved);
    # Liger holds the 16-bit logits beside the saved upcast, plus loss_1d (fp32), the target mask (1 B) and
    # target * mask (int64) per row.
    assert hf.forward_transient == (2 + 4) * v
    assert liger.forward_transient == 2 * v + 4 + 1 + 8
    # Backward: hf's nll_loss and log_softmax fp32 gradients; Liger's gradient is the saved buffer, cast to bf16.
    assert hf.backward_transient == 8 * v
    assert liger.backward_transient == 2 * v
    # fp32: .float() is the logits themselves, and no cast back.
    full = TrainingSpec(method="full", precision="fp32", seq_len=1024, loss=LIGER)
    f32 = acts.head_activations(m, full, RECIPES["fp32"], True)
    assert (f32.forward_transient, f32.backward_transient) == (13, 0)


def test_head_backward_moment_by_hand() -> None:
    # The lm_head's backward after Liger's loss, full fine-tuning in pure bf16 at b1 s512 (llama-3.2-1b, tied
    # embeddings: the head's gradient is the embedding's, V x H x 2 B): the logits' bf16 gradient, the head's saved
    # input, its input gradient and the weight gradient.
    m = presets.find_model("llama-3.2-1b")
    v, h, n = 128_256, 2_048, 512
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=n, loss=LIGER)
    d = estimate(m, t).details
    assert d["temporaries.head_backward"] == 2 * v * n + 2 * h * n + 2 * h * n + 2 * v * h


def test_saves_memory_between_hf_and_fused_linear() -> None:
    m = presets.find_model("llama-3.1-8b")
    t = TrainingSpec(method="qlora", precision="bf16", seq_len=4096)
    peaks = {loss: estimate(m, replace(t, loss=loss)).peak_bytes for loss in ("hf", LIGER, "fused-linear")}
    assert peaks["hf"] > peaks[LIGER] > peaks["fused-linear"]
    gains = rank_savers(m, t, peaks["hf"], lambda o, v: ("axolotl",) if v == LIGER else ())
    liger = next(g for g in gains if g.changes == {"loss": LIGER})
    assert liger.saved_bytes == peaks["hf"] - peaks[LIGER] and liger.stacks == ("axolotl",)


def test_explain_names_liger() -> None:
    from vramcalc.core.explain import SRC_LIGER_CE, explain

    m = presets.find_model("llama-3.2-1b")
    t = TrainingSpec(method="lora", seq_len=2048, loss=LIGER)
    lines = {ln.key: ln for sec in explain(m, t).sections for ln in sec.lines}
    saved = lines["activations.head.Liger's fp32 logits, their gradient written in place"]
    assert saved.source == SRC_LIGER_CE and saved.value == 4 * 128_256 * 2048
    assert lines["temporaries.loss_forward"].value == estimate(m, t).details["temporaries.loss_forward"]
    assert lines["temporaries.head_backward"].source.endswith(SRC_LIGER_CE)


# --- the tracer ------------------------------------------------------------------------------------------
# A small llama with a large vocabulary, so that the loss dominates: 4 layers, hidden 256, vocab 32,000.
WIDE_VOCAB = ModelSpec(name="wide-vocab-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                       intermediate_size=1_024, num_layers=4, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize(("method", "precision", "gc"), [
    ("full", "pure-bf16", False), ("full", "pure-bf16", True), ("full", "fp32", True), ("full", "amp-bf16", False),
    ("lora", "bf16", False), ("lora", "bf16", True), ("lora", "amp-bf16", False)])
def test_matches_the_trace(method: str, precision: str, gc: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method=method, precision=precision, batch_size=2, seq_len=256, grad_checkpointing=gc, loss=LIGER,
                     lora_targets=("all-linear",))
    e, r = estimate(WIDE_VOCAB, t), trace(WIDE_VOCAB, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    # Issue 13's bounds: never under the trace by more than 2 %, over by at most 5 %.
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def test_the_trace_keeps_no_log_softmax() -> None:
    # The emulated kernel saves its fp32 input and nothing vocab-wide besides: the loss forward holds 4 B x vocab per
    # token less than transformers' (log_softmax's fp32 output) and 13 B per row more (loss_1d, the target mask and
    # target * mask), measured on the forward phase of both traces; nll_loss's 0-d output and total_weight (two
    # 512-byte allocator blocks) are hf's only.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=256, loss=LIGER)
    hf, liger = trace(WIDE_VOCAB, replace(t, loss="hf")), trace(WIDE_VOCAB, t)
    assert hf.phase_peaks["forward"] - liger.phase_peaks["forward"] == (4 * 32_000 - 13) * 512 + 2 * 512


def test_unsloth_patch_never_reaches_the_model() -> None:
    # axolotl's integrate_cross_entropy_loss_patch (monkeypatch/unsloth_.py @323da791) rebinds
    # transformers.loss.loss_utils.ForCausalLMLoss; a model's loss_function reads LOSS_MAPPING, built at import.
    pytest.importorskip("transformers")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.loss import loss_utils

    original = loss_utils.ForCausalLMLoss

    def unsloth_for_causal_lm_loss(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rebinding reached the model")

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    loss_utils.ForCausalLMLoss = unsloth_for_causal_lm_loss  # type: ignore[assignment]
    try:
        assert model.loss_function is original
    finally:
        loss_utils.ForCausalLMLoss = original


# --- run files and the CLI -------------------------------------------------------------------------------
def _axolotl(tmp_path: Path, body: str) -> runfiles.Run:
    path = tmp_path / "ax.yaml"
    # axolotl's Liger and Cut Cross-Entropy plugins listed: without them axolotl drops their keys
    # (tests/test_axolotl_reader_gaps.py); cut_cross_entropy: false since CutCrossEntropyArgs defaults it to true
    path.write_text("base_model: meta-llama/Llama-3.2-1B\nadapter: lora\nlora_target_linear: true\nplugins:\n"
                    "  - axolotl.integrations.liger.LigerPlugin\n"
                    "  - axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin\n"
                    + ("" if "cut_cross_entropy:" in body else "cut_cross_entropy: false\n") + body)
    return runfiles.load(str(path))[0]


def test_axolotl_cross_entropy_keys(tmp_path: Path) -> None:
    run = _axolotl(tmp_path, "liger_cross_entropy: true\n")
    assert run.options["loss"] == LIGER and run.unmodelled == [] and "liger_cross_entropy" in run.mapped
    off = _axolotl(tmp_path, "liger_cross_entropy: false\n")
    assert "loss" not in off.options and off.unmodelled == [] and "liger_cross_entropy" not in off.ignored
    # axolotl refuses two cross-entropy options (utils/schemas/validation.py check_cross_entropy_conflicts; its Liger
    # plugin raises "Cannot have both" too)
    with pytest.raises(VramcalcError, match="liger_cross_entropy"):
        _axolotl(tmp_path, "liger_cross_entropy: true\nliger_fused_linear_cross_entropy: true\n")
    with pytest.raises(VramcalcError, match="liger_cross_entropy: axolotl refuses it beside cut_cross_entropy"):
        _axolotl(tmp_path, "liger_cross_entropy: true\ncut_cross_entropy: true\n")
    uns = _axolotl(tmp_path, "unsloth_cross_entropy_loss: true\n")
    assert "loss" not in uns.options and uns.unmodelled == [] and "unsloth_cross_entropy_loss" in uns.mapped
    assert runfiles.UNSLOTH_CE_NOTE in uns.notes


def test_cli_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    for args, word in ((["gemma-2-2b"], "softcapping"), (["mamba-130m"], "head_activations"),
                       (["llama-3.2-1b", "--method", "lora", "--lora-targets", "q_proj,lm_head"], "lm_head")):
        code, out, err = invoke(["estimate", *args, "--loss", LIGER], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and word in err, err
    code, _, err = invoke(["estimate", "llama-3.2-1b", "--objective", "dpo", "--loss", LIGER], capsys)
    assert code == 2 and "drop --loss" in err


def test_trainer_liger_kernel_config(tmp_path: Path) -> None:
    # TrainingArguments.liger_kernel_config: apply_liger_kernel_to_*'s arguments (Liger's defaults: the fused linear
    # cross-entropy on, the plain one off)
    def load(body: str) -> runfiles.Run:
        f = tmp_path / "args.json"
        f.write_text('{"output_dir": "out", "use_liger_kernel": true' + body + "}")
        return runfiles.load(str(f))[0]

    run = load(', "liger_kernel_config": {"cross_entropy": true, "fused_linear_cross_entropy": false}')
    assert run.options["loss"] == LIGER and "liger_kernel_config" in run.mapped and run.unmodelled == []
    assert load(', "liger_kernel_config": {"fused_linear_cross_entropy": false}').options["loss"] == "hf"
    assert load(', "liger_kernel_config": {"rope": false}').options["loss"] == "fused-linear"
    with pytest.raises(VramcalcError, match="liger_kernel_config"):
        load(', "liger_kernel_config": {"cross_entropy": true}')  # Liger asserts the two are exclusive
    # without use_liger_kernel Trainer never reads the mapping: no loss changes, a note says so, but a quoted
    # boolean in it is still refused as TrainingArguments' parser would read it differently (test_fuzz_io)
    f = tmp_path / "plain.json"
    f.write_text('{"output_dir": "out", "liger_kernel_config": {"cross_entropy": true}}')
    plain = runfiles.load(str(f))[0]
    assert "loss" not in plain.options and any("without use_liger_kernel" in n for n in plain.notes)
    f.write_text('{"output_dir": "out", "liger_kernel_config": {"cross_entropy": "false"}}')
    with pytest.raises(VramcalcError, match="cross_entropy"):
        runfiles.load(str(f))


def test_axolotl_liger_cross_entropy_where_liger_applies(tmp_path: Path) -> None:
    # GPT-2 is not a model type Liger's plugin patches (monkey_patch.py MODEL_TYPE_TO_APPLY_LIGER_FN): axolotl logs
    # "Liger not applied" and transformers' loss runs
    path = tmp_path / "ax.yaml"
    plugin = "plugins: [axolotl.integrations.liger.LigerPlugin]\n"
    path.write_text("base_model: gpt2\nliger_cross_entropy: true\n" + plugin)
    run = runfiles.load(str(path))[0]
    assert "loss" not in run.options and any("does not patch gpt2" in n for n in run.notes)
    path.write_text("base_model: Qwen/Qwen2.5-0.5B\nliger_cross_entropy: true\n" + plugin)
    assert runfiles.load(str(path))[0].options["loss"] == LIGER
