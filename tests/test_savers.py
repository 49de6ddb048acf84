"""Memory savers (issue 13): the loss kernels of memory/loss.py, against hand derivations and the tracer."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.memory import estimate
from vramcalc.core.memory.loss import loss_bytes
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

# Llama-3.1-8B head: vocab 128,256, hidden 4,096 (presets/models, its config.json).
V, H = 128_256, 4_096


def test_chunked_loss_bytes_by_hand() -> None:
    # 1 × 4096 tokens, 8 chunks of 512, bf16 (c = 2), head trainable, head gradient V·H·2 bytes.
    g = V * H * 2
    b = loss_bytes("chunked", tokens=4096, batch=1, seq=4096, chunks=8, vocab=V, hidden=H, compute=2,
                   head_grad=g, head_trainable=True)
    assert b.saved == 2 * H * 4096 + 4 * V * 4096  # lm_head input (bf16) + every chunk's fp32 log_softmax
    assert b.forward == 2 * V * 4096 + 4 * V * 512  # all 16-bit logits + one chunk's fp32 upcast
    assert b.backward_start == 8 * V * 512  # nll_loss and log_softmax fp32 gradients of one chunk
    # head backward: input kept, 6 of 8 chunks' bf16 logit gradients waiting, 3 head-sized weight
    # gradients (two chunks' and their out-of-place sum), two chunks' input gradients.
    assert b.head_backward == 2 * H * 4096 + 2 * V * 4096 * 6 // 8 + 3 * g + 2 * 2 * H * 512
    assert not b.head_grad_in_forward


def test_linear_chunked_loss_bytes_by_hand() -> None:
    # torchtune LinearCrossEntropyLoss, 1 × 4096 tokens, 8 chunks of 512, bf16, head trainable.
    g = V * H * 2
    b = loss_bytes("linear-chunked", tokens=4096, batch=1, seq=4096, chunks=8, vocab=V, hidden=H, compute=2,
                   head_grad=g, head_trainable=True)
    # every chunk's fp32 log_softmax, nonzero()'s int64 pairs (16 B), int64 targets (8 B), the projected copy (bf16)
    per_token = 4 * V + 16 + 8 + 2 * H
    assert b.saved == per_token * 4096
    assert b.forward == 2 * H * 4096 + (2 + 4) * V * 512  # the final hidden states + one chunk's logits and upcast
    assert b.backward_start == 8 * V * 512
    # the first chunk's projection backward: 7 chunks' saved sets and its weight gradient, or the second's: 6 and
    # two weight gradients with their out-of-place sum; each with the chunk's input gradient and index zeros
    first, second = per_token * (4096 - 512) + g, per_token * (4096 - 1024) + 3 * g
    assert b.head_backward == max(first, second) + 2 * 2 * H * 512
    frozen = loss_bytes("linear-chunked", tokens=4096, batch=1, seq=4096, chunks=8, vocab=V, hidden=H, compute=2,
                        head_grad=0, head_trainable=False)
    assert frozen.saved == (4 * V + 24) * 4096  # no copy saved: the frozen head's projection needs only its weight
    assert frozen.forward == 2 * H * 4096 + 2 * H * 512 + 6 * V * 512  # the chunk's index copy is a transient


def test_fused_linear_loss_bytes_by_hand() -> None:
    # Liger: inc_factor = ceil(128256 / 4096) = 32; chunk = next_pow2(ceil(4096 / 32)) = 128 tokens.
    b = loss_bytes("fused-linear", tokens=4096, batch=1, seq=4096, chunks=8, vocab=V, hidden=H, compute=2,
                   head_grad=V * H * 2, head_trainable=True)
    assert b.saved == 2 * H * 4096  # grad_input, bf16
    assert b.forward == 2 * 128 * V + 2 * 128 * H + 4 * 4096 + 4096  # logits chunk, its grad_input, loss_1d, mask
    assert b.backward_start == 0 and b.head_backward == 0
    assert b.head_grad_in_forward


def test_cut_loss_bytes_by_hand() -> None:
    # CCE with shift: 4095 predicted tokens; lse fp32 + valids int64 = 12 B each; logit_avg 4 B per vocab entry.
    b = loss_bytes("cut", tokens=4096, batch=1, seq=4096, chunks=8, vocab=V, hidden=H, compute=2,
                   head_grad=V * H * 2, head_trainable=True)
    assert b.saved == 2 * H * 4096 + 12 * 4095 + 4 * V
    assert b.forward == 16 * 4095  # nonzero()'s int64 pairs
    assert b.backward_start == 2 * H * 4096 + 12 * V  # de zeros + argsort (int64 then int32)


def test_savers_lower_the_peak_at_long_sequences() -> None:
    m = presets.find_model("llama-3.1-8b")
    peaks = {loss: estimate(m, TrainingSpec(method="full", seq_len=8192, loss=loss)).tensor_peak_bytes
             for loss in ("hf", "chunked", "linear-chunked", "fused-linear", "cut")}
    # linear-chunked: no chunk's 16-bit logits outlive its cross-entropy (chunked keeps all of them)
    assert peaks["hf"] > peaks["chunked"] > peaks["linear-chunked"] > peaks["fused-linear"]
    assert peaks["cut"] <= peaks["fused-linear"]
    # The loss does not touch weights or optimizer states.
    a = estimate(m, TrainingSpec(method="full", loss="hf"))
    c = estimate(m, TrainingSpec(method="full", loss="cut"))
    assert (a.weights, a.gradients, a.optimizer_state) == (c.weights, c.gradients, c.optimizer_state)


def test_fused_linear_head_gradient_in_forward() -> None:
    # 512 tokens: inc_factor = ceil(128256 / 4096) = 32, chunk = next_pow2(ceil(512 / 32)) = 16 tokens.
    m = presets.find_model("llama-3.1-8b")
    t = TrainingSpec(method="full", seq_len=512, grad_checkpointing=True, loss="fused-linear")
    b = estimate(m, t)
    assert b.details["temporaries.loss_forward"] == 2 * 16 * V + 2 * 16 * H + 5 * 512
    # Liger allocates grad_weight (V × H, bf16) in forward: the forward phase holds the head gradient.
    hf = estimate(m, TrainingSpec(method="full", seq_len=512, grad_checkpointing=True))
    assert b.phases["forward"] - hf.phases["forward"] > V * H * 2 - 2 * (2 + 4) * V * 512
    lora = estimate(m, TrainingSpec(method="lora", seq_len=512, grad_checkpointing=True, loss="fused-linear"))
    # LoRA: the head is frozen, so no head gradient; grad_input is still saved (the hidden states need grad).
    assert lora.details["activations.head_and_loss"] > 2 * H * 512


# --- the tracer ------------------------------------------------------------------------------------------
# A small llama with a large vocabulary, so that the loss dominates: 2 layers, hidden 256, vocab 32,000.
WIDE_VOCAB = ModelSpec(name="wide-vocab-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                       intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("loss", ["hf", "chunked", "linear-chunked", "fused-linear", "cut"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_savers_match_the_trace(loss: str, method: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method=method, precision="pure-bf16", batch_size=2, seq_len=512, loss=loss)
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    # Issue 13's bounds: never under the trace by more than 2 %, over by at most 5 %. (This small model's
    # embedding gradient is half of its gradients, and the core counts it as existing at the bottom layer,
    # which is the backward peak once the loss saver removes the logits: fused-linear full is +4.2 % here.)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


# --- the CLI ---------------------------------------------------------------------------------------------
def test_cut_needs_16_bit_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llama-3.2-1b", "--loss", "cut", "--precision", "amp-bf16"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --loss cut needs 16-bit weights (Cut Cross-Entropy's backward asserts bf16 or fp16), "
        "not --precision amp-bf16: use --precision bf16"]


def test_loss_option_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "llama-3.2-1b", "--loss", "fused-linear", "--seq-len", "4096",
                           "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    m = presets.find_model("llama-3.2-1b")
    b = estimate(m, TrainingSpec(seq_len=4096, loss="fused-linear"))
    assert doc["tensor_peak_bytes"] == b.tensor_peak_bytes


def test_bad_loss_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "llama-3.2-1b", "--loss", "liger"], capsys)
    assert code == 2 and "Traceback" not in err
    code, _, err = invoke(["estimate", "llama-3.2-1b", "--loss", "chunked", "--loss-chunks", "0"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("loss", ["chunked", "linear-chunked", "fused-linear", "cut"])
def test_explain_itemizes_each_loss_saver(loss: str) -> None:
    from vramcalc.core.explain import explain
    from vramcalc.core.memory.loss import SOURCES

    m = presets.find_model("llama-3.1-8b")
    t = TrainingSpec(method="full", seq_len=4096, loss=loss)
    doc = explain(m, t)
    lines = [ln for sec in doc.sections for ln in sec.lines]
    saved = next(ln for ln in lines if ln.key == "activations.head.loss")
    assert saved.source == SOURCES[loss]
    assert saved.value == estimate(m, t).details["activations.loss_saved"]
    # Every phase is itemized (no "shown with its total only" fallback note).
    assert not any("total only" in n for n in doc.notes)


# --- checkpointing variants (memory/savers.py) -----------------------------------------------------------
def test_layer_residency_by_hand() -> None:
    from vramcalc.core.memory.savers import layer_residency

    # 16 layers, every 4th checkpointed (torchtune ac_option 4: layers 4, 8, 12, 16): 4 inputs of 10 B
    # and 12 full saved sets of 100 B.
    r = layer_residency(n_layers=16, saving_layers=16, checkpointing=True, every=4, offload=False,
                        per_layer=100, layer_input=10)
    assert (r.forward, r.backward, r.host) == (4 * 10 + 12 * 100, 4 * 10 + 12 * 100, 0)
    # Offloaded: everything goes to host RAM; backward brings back the input of the recomputed layer, beside the
    # layer above's copy, which torchtune frees once the recomputing node has run (OffloadActivations prev_node_ids)
    r = layer_residency(n_layers=16, saving_layers=16, checkpointing=True, every=1, offload=True,
                        per_layer=100, layer_input=10)
    assert (r.forward, r.backward, r.host) == (0, 2 * 10, 16 * 10)
    r = layer_residency(n_layers=1, saving_layers=1, checkpointing=True, every=1, offload=True,
                        per_layer=100, layer_input=10)
    assert (r.forward, r.backward, r.host) == (0, 10, 10)  # one layer: no layer above
    # Offloaded without checkpointing: host holds every layer's saved set.
    r = layer_residency(n_layers=16, saving_layers=16, checkpointing=False, every=1, offload=True,
                        per_layer=100, layer_input=10)
    assert (r.forward, r.backward, r.host) == (0, 0, 1600)


def test_selective_checkpointing_sits_between() -> None:
    m = presets.find_model("llama-3.1-8b")
    base = {"method": "lora", "seq_len": 4096}
    none = estimate(m, TrainingSpec(**base)).details["activations.layers"]
    every2 = estimate(m, TrainingSpec(**base, grad_checkpointing=True, ac_every=2)).details["activations.layers"]
    full = estimate(m, TrainingSpec(**base, grad_checkpointing=True)).details["activations.layers"]
    # 32 layers: 16 keep their input (full // 32 each), 16 their saved set (one layer's, activations.per_layer:
    # `none` is 32 of them less what the bottom layer saves less without checkpointing).
    per_layer = estimate(m, TrainingSpec(**base)).details["activations.per_layer"]
    assert none == 32 * per_layer - estimate(m, TrainingSpec(**base)).details["activations.bottom_layer_less"]
    assert every2 == 16 * (full // 32) + 16 * per_layer


def test_offload_reports_host_ram() -> None:
    m = presets.find_model("llama-3.1-8b")
    t = TrainingSpec(method="lora", seq_len=4096, grad_checkpointing=True, activation_offload=True)
    b = estimate(m, t)
    # 32 checkpointed inputs of 4096 tokens × 4096 hidden × 2 B (bf16 residual stream) in pinned host RAM.
    assert b.cpu_offload_bytes == b.details["activations.offloaded_to_host"] == 32 * 4096 * 4096 * 2
    # On the GPU: the frozen embedding's output, a leaf that requires grad (enable_input_require_grads) whose
    # AccumulateGrad node keeps it beside its host copy: 4096 tokens × 4096 hidden × 2 B.
    assert b.details["activations.layers"] == 4096 * 4096 * 2
    plain = estimate(m, TrainingSpec(method="lora", seq_len=4096, grad_checkpointing=True))
    assert b.phases["forward"] == plain.phases["forward"] - 31 * 4096 * 4096 * 2


# (options, the largest over-estimate allowed). Issue 13's bounds are -2 % / +5 %. The last case is over by
# 8.9 %: with the logits gone, the backward peak is the bottom layer, where the core counts the embedding's
# gradient as already allocated (it appears after the bottom layer, in embedding_dense_backward); on this
# 4-layer model the embedding is half of all parameters. That pre-existing bound of the default phase model
# is kept so that today's outputs do not change (see the report in docs/accuracy.md).
@pytest.mark.parametrize(("kw", "upper"), [
    ({"grad_checkpointing": True, "ac_every": 2}, 0.05),
    ({"grad_checkpointing": True, "activation_offload": True}, 0.05),
    ({"activation_offload": True}, 0.05),
    ({"grad_checkpointing": True, "activation_offload": True, "loss": "fused-linear"}, 0.10),
], ids=["selective-2", "offload-ckpt", "offload", "offload-ckpt-fused"])
def test_checkpointing_variants_match_the_trace(kw: dict[str, object], upper: float) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    wide = replace(WIDE_VOCAB, num_layers=4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=512, **kw)  # type: ignore[arg-type]
    e, r = estimate(wide, t), trace(wide, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= upper, (err, e.phases, r.phase_peaks, r.peak_op)
    # The forward phase, where the variants act, within 2 %.
    assert abs(e.phases["forward"] - r.phase_peaks["forward"]) <= 0.02 * r.phase_peaks["forward"]


def test_ac_every_needs_checkpointing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llama-3.2-1b", "--ac-every", "2"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == "error: --ac-every 2 selects which layers are checkpointed: add --grad-checkpointing"


# --- optimizer in backward ------------------------------------------------------------------------------
def test_optimizer_in_backward_keeps_one_gradient() -> None:
    m = presets.find_model("mistral-7b")
    b = estimate(m, TrainingSpec(method="full", optimizer_in_bwd=True, optimizer_impl="foreach"))
    # Largest trainable tensor of Mistral-7B: embed_tokens / lm_head, 32,000 × 4,096; bf16 gradient.
    assert b.gradients == 32_000 * 4_096 * 2
    # foreach AdamW over that one tensor: sqrt(exp_avg_sq) in fp32 (memory/optimizer.py), not the whole model's.
    assert b.details["temporaries.optimizer_step"] == 32_000 * 4_096 * 4
    # Nothing left to do at the optimizer step: weights + states only (seed: 2 + 8 bytes per parameter).
    assert b.phases["optimizer_step"] == 10 * 7_241_732_096
    plain = estimate(m, TrainingSpec(method="full", optimizer_impl="foreach"))
    assert b.tensor_peak_bytes < plain.tensor_peak_bytes


def test_optimizer_in_backward_matches_the_trace() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    wide = replace(WIDE_VOCAB, num_layers=4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=512, grad_checkpointing=True,
                     optimizer_in_bwd=True, optimizer_impl="foreach")
    e, r = estimate(wide, t), trace(wide, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)  # issue 13's bounds
    assert e.phases["optimizer_step"] <= r.phase_peaks["optimizer_step"] * 1.01


def test_optimizer_in_backward_rejects_accumulation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llama-3.2-1b", "--optimizer-in-bwd", "--grad-accum", "4"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == ("error: --optimizer-in-bwd steps each parameter as its gradient lands, so it cannot "
                           "accumulate gradients: use --grad-accum 1")


# --- run files: the savers' keys of each tool ------------------------------------------------------------
def test_torchtune_saver_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vramcalc.io import runfiles

    f = tmp_path / "tt.yaml"
    f.write_text(
        "model:\n  _component_: torchtune.models.llama3_2.lora_llama3_2_1b\n"
        "loss:\n  _component_: torchtune.modules.loss.CEWithChunkedOutputLoss\n  num_output_chunks: 16\n"
        "optimizer_in_bwd: True\nenable_activation_offloading: True\n"
        "enable_activation_checkpointing: True\nac_mode: selective\nac_option: 2\n")
    run = runfiles.load(str(f))[0]
    assert {k: run.options[k] for k in ("loss", "loss_chunks", "optimizer_in_bwd", "activation_offload",
                                        "grad_checkpointing", "ac_every")} == {
        "loss": "chunked", "loss_chunks": 16, "optimizer_in_bwd": True, "activation_offload": True,
        "grad_checkpointing": True, "ac_every": 2}
    assert run.ignored == []


def test_torchtune_linear_cross_entropy_loss(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vramcalc.io import runfiles

    head = "model:\n  _component_: torchtune.models.llama3_2.lora_llama3_2_1b\n"
    f = tmp_path / "tt.yaml"
    # torchtune >= 0.6 recipe configs name LinearCrossEntropyLoss (modules/loss/cross_entropy_loss.py)
    f.write_text(head + "loss:\n  _component_: torchtune.modules.loss.LinearCrossEntropyLoss\n"
                 "  num_output_chunks: 16\n")
    run = runfiles.load(str(f))[0]
    assert (run.options["loss"], run.options["loss_chunks"], run.unmodelled) == ("linear-chunked", 16, [])
    f.write_text(head + "loss:\n  _component_: torchtune.modules.loss.LinearCrossEntropyLoss\n  tp_enabled: true\n"
                 "  mask_ignored_tokens: false\n")
    run = runfiles.load(str(f))[0]
    assert run.unmodelled == ["loss.tp_enabled"]  # sharded logits: named, the run TIGHT at best
    assert any("mask_ignored_tokens false" in n for n in run.notes)


def test_axolotl_llama_factory_and_trainer_saver_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vramcalc.io import runfiles

    ax = tmp_path / "ax.yaml"
    ax.write_text("base_model: meta-llama/Llama-3.2-1B\ngradient_checkpointing: offload\n"
                  "liger_fused_linear_cross_entropy: true\nplugins: [axolotl.integrations.liger.LigerPlugin]\n")
    run = runfiles.load(str(ax))[0]
    assert (run.options["loss"], run.options["grad_checkpointing"], run.options["activation_offload"]) == (
        "fused-linear", True, True)
    lf = tmp_path / "lf.yaml"
    lf.write_text("model_name_or_path: meta-llama/Llama-3.2-1B\nstage: sft\nfinetuning_type: lora\n"
                  "enable_liger_kernel: true\nuse_unsloth_gc: true\n")
    run = runfiles.load(str(lf))[0]
    assert (run.options["loss"], run.options["activation_offload"]) == ("fused-linear", True)
    hf = tmp_path / "args.json"
    hf.write_text('{"output_dir": "out", "use_liger_kernel": true}')
    run = runfiles.load(str(hf))[0]
    assert run.options["loss"] == "fused-linear" and "use_liger_kernel" not in run.ignored
    # an SFTConfig (TRL 1.16 trainer/sft_trainer.py): use_liger_kernel forces Liger's fused_linear_cross_entropy off
    # and TRL patches its own fused LM head: the loss stays the trl stack's, Liger's layer kernels are what remains
    trl = tmp_path / "sft.json"
    trl.write_text('{"output_dir": "out", "use_liger_kernel": true, "max_length": 1024, "packing": false}')
    sft = runfiles.load(str(trl))[0]
    assert sft.options["stack"] == "trl" and "loss" not in sft.options
    assert any("Liger's layer kernels only" in n for n in sft.notes)


# --- torchao low-bit AdamW --------------------------------------------------------------------------------
def test_torchao_adamw_states_on_mistral() -> None:
    m = presets.find_model("mistral-7b")
    p = 7_241_732_096  # seed parameter count (shared/seeds/000)
    # Mistral-7B's 291 tensors (32 layers × 9, embed_tokens, lm_head, final norm) all have >= 4096 elements
    # and are multiples of 256 (and 128): every state is quantized.
    n_tensors = 32 * 9 + 3
    b8 = estimate(m, TrainingSpec(optimizer="torchao-adamw-8bit"))
    assert b8.optimizer_state == 2 * (p + 4 * p // 256 + 4 * 256 * n_tensors)  # codes + fp32 scale + qmap
    b4 = estimate(m, TrainingSpec(optimizer="torchao-adamw-4bit"))
    assert b4.optimizer_state == 2 * (p // 2 + 4 * p // 128 + 4 * 16 * n_tensors)
    bf8 = estimate(m, TrainingSpec(optimizer="torchao-adamw-fp8"))
    assert bf8.optimizer_state == 2 * (p + 4 * p // 256)


def test_torchao_step_keeps_what_the_compiled_step_kept_on_the_cpu() -> None:
    # benchmarks/results/torchao_step.json: torchao 0.18's compiled single_param_adam, one parameter of 2^20 / 2^22
    # elements, bf16 and fp32: the allocator's peak above the step's start, to the byte
    from bench_module import BENCHMARKS
    from vramcalc.core.memory.optimizer import torchao_step_bytes

    rows = json.loads((BENCHMARKS / "results" / "torchao_step.json").read_text())["rows"]
    assert len(rows) == 12
    for row in rows:
        assert torchao_step_bytes(row["optimizer"], row["numel"]) == row["step_peak_bytes"], row
    # the step runs one parameter at a time: the largest one's (Mistral-7B's embedding / head, 131,072,000 elements)
    m = presets.find_model("mistral-7b")
    b = estimate(m, TrainingSpec(optimizer="torchao-adamw-8bit"))
    assert b.details["temporaries.optimizer_step"] == 8 * 131_072_000 + 8 * 131_072_000 // 256


@pytest.mark.parametrize("opt", ["torchao-adamw-8bit", "torchao-adamw-4bit", "torchao-adamw-fp8"])
def test_torchao_states_match_the_trace(opt: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    wide = replace(WIDE_VOCAB, num_layers=4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=128, optimizer=opt)
    e, r = estimate(wide, t), trace(wide, t)
    # Same storage up to the allocator's rounding: at most 512 B for each of the 3 allocations (codes, scale,
    # map) of the 2 states of the 4 × 9 + 3 tensors.
    assert abs(e.optimizer_state - r.by_category_at_peak["optimizer_state"]) <= 512 * 3 * 2 * (4 * 9 + 3)


@pytest.mark.parametrize("args", [
    {"grad_checkpointing": True, "activation_offload": True},
    {"grad_checkpointing": True, "ac_every": 4},
    {"activation_offload": True},
], ids=["offload-ckpt", "selective-4", "offload"])
def test_explain_itemizes_checkpointing_variants(args: dict[str, object]) -> None:
    from vramcalc.core.explain import explain

    m = presets.find_model("llama-3.1-8b")
    t = TrainingSpec(method="full", **args)  # type: ignore[arg-type]
    doc = explain(m, t)
    layers = next(ln for sec in doc.sections for ln in sec.lines if ln.key == "activations.layers")
    assert layers.value == estimate(m, t).details["activations.layers"]
    assert not any("total only" in n for n in doc.notes)


def _saver_differences():  # type: ignore[no-untyped-def]
    from bench_module import load_benchmark

    return load_benchmark("saver_differences", "saver_differences")


# Published real-GPU differences (issue 13), in GiB:
# torchtune README "Optimization flags" (pytorch/torchtune@1814feb17, Llama 3.2 3B, batch 2 x 4096 packed, bf16,
# A100, "Peak Memory Active (GiB)"): rows 60.0 (+ Packed), 51.0 (+ Compile), 42.9 (+ Chunked CE), 24.9 (+ AC),
# 23.1 (+ optimizer in backward), 21.8 (+ activation offloading), 17.6 (+ 8-bit AdamW).
# Liger-Kernel examples/huggingface (linkedin/Liger-Kernel@03fd6032, img/qwen_mem_alloc.png, Qwen2-7B, batch 32,
# FSDP on 4 A100): 51,154.27 MiB without Liger, 39,300.01 MiB with ("Peak Allocated Memory (MB)", binary MB).
REPRODUCED = {"torchtune-compile": 60.0 - 51.0, "torchtune-chunked-ce": 51.0 - 42.9,
              "torchtune-activation-checkpointing": 42.9 - 24.9, "torchtune-activation-offloading": 23.1 - 21.8}
NOT_REPRODUCED = {"torchtune-optimizer-in-backward": 24.9 - 23.1, "torchtune-8bit-adamw": 21.8 - 17.6,
                  "liger-flce-qwen2-7b-b32": (51154.27 - 39300.01) / 1024}


def _ours_gib(pair_id: str, published_gib: float) -> float:
    mod = _saver_differences()
    pair = next(p for p in mod.PAIRS if p.id == pair_id)
    assert pair.published_bytes / 2**30 == pytest.approx(published_gib, abs=0.01)  # the benchmark's own figures
    row = mod.compare(pair)
    return float(row["ours_bytes"]) / 2**30


@pytest.mark.parametrize(("pair_id", "published_gib"), list(REPRODUCED.items()))
def test_published_saver_difference_within_20_percent(pair_id: str, published_gib: float) -> None:
    """Each reproduced published saving: vramcalc's tensor-peak difference within 20 % of the published one."""
    ours = _ours_gib(pair_id, published_gib)
    assert abs(ours - published_gib) <= 0.2 * published_gib, (pair_id, ours, published_gib)


@pytest.mark.parametrize(("pair_id", "published_gib"), list(NOT_REPRODUCED.items()))
@pytest.mark.xfail(strict=True, reason="not reproduced within 20 %: a moment of the torchtune rows not placed and "
                   "the unpublished padded length (Liger), see benchmarks/results/saver_differences.md")
def test_published_saver_difference_not_yet_within_20_percent(pair_id: str, published_gib: float) -> None:
    """The pairs the benchmark reports as not reproduced, each with its reason; strict: one that starts to
    reproduce fails here and moves to REPRODUCED."""
    mod = _saver_differences()
    pair = next(p for p in mod.PAIRS if p.id == pair_id)
    assert pair.why  # every not-reproduced pair says why (the benchmark's report shows it)
    ours = _ours_gib(pair_id, published_gib)
    assert abs(ours - published_gib) <= 0.2 * published_gib, (pair_id, ours, published_gib)


def test_saver_difference_pairs_are_all_tested() -> None:
    """Every pair of benchmarks/saver_differences.py is in one of the two tables above."""
    assert {p.id for p in _saver_differences().PAIRS} == set(REPRODUCED) | set(NOT_REPRODUCED)


def test_readme_shows_the_saver_differences() -> None:
    """The README's accuracy section shows the benchmark's table (`saver_differences.py --readme` copies it)."""
    from pathlib import Path

    mod = _saver_differences()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split(mod.README_START, 1)[1].split(mod.README_END, 1)[0]
    assert block.strip() == mod.markdown([mod.compare(p) for p in mod.PAIRS])


def test_optimizer_in_backward_offloaded_holds_one_gradient() -> None:
    # A counterexample tests/test_properties.py drew (a 1-layer llama, hidden 16, intermediate 1, full, offloaded
    # without checkpointing, optimizer in backward): backward.top held the head's gradient (16 x 16 x 2 B = 512 B, the
    # largest tensor's: the gradients component) and down_proj's (16 x 1 x 2 B = 32 B) beside it, though the head's is
    # stepped and freed first; no moment may hold more gradients than the component
    m = ModelSpec(name="toy", source="test", family="llama", vocab_size=16, hidden_size=16, intermediate_size=1,
                  num_layers=1, num_attention_heads=2, num_kv_heads=1, norms_per_layer=0, final_norm=False)
    t = TrainingSpec(method="full", batch_size=1, seq_len=1, activation_offload=True, optimizer_in_bwd=True)
    b = estimate(m, t)
    assert all(mo.component("gradients") <= b.gradients for mo in b.named_moments())
    assert next(mo for mo in b.named_moments() if mo.key == "backward.top").component("gradients") == b.gradients
