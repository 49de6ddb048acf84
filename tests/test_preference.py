"""Preference training (issue 14): TRL DPOTrainer's step in memory/preference.py, by hand, against the
SFT step it is built from, against the tracer, and the options from the command line and run files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.memory.loss import TOKEN_CHUNK, VOCAB_CHUNK, loss_bytes
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

QWEN = presets.find_model("qwen2.5-0.5b")  # hidden 896, intermediate 4,864, vocab 151,936, tied (config.json)


# --- the fused head, by hand -----------------------------------------------------------------------------
def test_trl_head_bytes_by_hand() -> None:
    # 2 rows × 1,024 positions, prompt 256: N = 2 × 768 completion tokens; bf16, hidden 896, vocab 151,936.
    t, n, h, v = 2048, 1536, 896, 151_936
    mm = min(n, TOKEN_CHUNK) * VOCAB_CHUNK * 2  # one [min(N, 4096), 32768] bf16 tile buffer
    lora = loss_bytes("trl", tokens=t, batch=2, seq=1024, chunks=8, vocab=v, hidden=h, compute=2, head_grad=0,
                      head_trainable=False, labelled=n, residual=2, weight=2)
    # saved: gathered hidden (2 B × H per scored token), int64 targets, fp32 log_z and entropy, the bool mask
    assert lora.saved == 2 * n * h + 16 * n + t
    # forward: the last hidden states of every position, seven fp32 statistics, the tile, six fp32 outputs
    assert lora.forward == 2 * t * h + 28 * n + mm + 24 * n
    # backward with a frozen head: fp32 grad_hidden, the tile, the gathered gradient, the bf16 cast of grad_hidden
    assert lora.backward_start == 4 * n * h + mm + 4 * n + 2 * n * h
    full = loss_bytes("trl", tokens=t, batch=2, seq=1024, chunks=8, vocab=v, hidden=h, compute=2, head_grad=2 * v * h,
                      head_trainable=True, labelled=n, residual=2, weight=2)
    # a trained head adds the fp32 V × H accumulator and its bf16 cast
    assert full.backward_start - lora.backward_start == 4 * v * h + 2 * v * h
    # no logits anywhere: nothing grows with vocab × tokens
    bigger = loss_bytes("trl", tokens=t, batch=2, seq=1024, chunks=8, vocab=2 * v, hidden=h, compute=2, head_grad=0,
                        head_trainable=False, labelled=n, residual=2, weight=2)
    assert bigger == lora


# --- the step against the SFT step it is built from --------------------------------------------------------
def test_precomputed_dpo_is_an_sft_step_of_twice_the_rows_through_trls_head() -> None:
    # dpo_trainer.py: one forward over the 2B stacked rows; with precomputed reference log-probs nothing else.
    dpo = estimate(QWEN, TrainingSpec(objective="dpo", ref_model="precomputed", batch_size=2, seq_len=1024,
                                      prompt_len=256))
    sft = estimate(QWEN, TrainingSpec(loss="trl", batch_size=4, seq_len=1024, prompt_len=256))
    assert dpo.phases == sft.phases
    assert dpo.weights == sft.weights


def test_precomputed_kto_is_dpo_with_half_the_batch() -> None:
    # kto_trainer.py: B unpaired completions in one forward; DPO stacks 2B rows. With precomputed reference
    # log-probs nothing else runs at the peak (the KL rows' no-grad forward comes before the policy's).
    kto = estimate(QWEN, TrainingSpec(objective="kto", ref_model="precomputed", batch_size=4, seq_len=1024,
                                      prompt_len=256))
    dpo = estimate(QWEN, TrainingSpec(objective="dpo", ref_model="precomputed", batch_size=2, seq_len=1024,
                                      prompt_len=256))
    assert kto.phases == dpo.phases


def test_reference_copy_adds_its_weights() -> None:
    base = TrainingSpec(objective="dpo", batch_size=1, seq_len=1024, prompt_len=256)
    pre = estimate(QWEN, replace(base, ref_model="precomputed"))
    copy = estimate(QWEN, base)  # auto: full fine-tuning keeps a frozen copy
    fp32 = estimate(QWEN, replace(base, ref_dtype="fp32"))
    params = count_params(QWEN)
    # dpo_trainer.py: the copy is loaded in the policy's dtype (bf16 here: 2 B per parameter) unless told.
    assert copy.weights - pre.weights == 2 * params == copy.details["weights.reference"]
    assert fp32.weights - pre.weights == 4 * params


def test_lora_reference_is_the_base_with_adapters_off() -> None:
    base = TrainingSpec(objective="dpo", method="lora", batch_size=1, seq_len=1024, prompt_len=256)
    off = estimate(QWEN, base)
    pre = estimate(QWEN, replace(base, ref_model="precomputed"))
    assert off.weights == pre.weights and off.details["weights.reference"] == 0
    # the reference still runs: its no-grad forward is a forward moment on top of every saved activation
    assert off.phases["forward"] >= pre.phases["forward"]
    assert off.details["temporaries.reference_forward"] > 0


def test_reference_forward_by_hand() -> None:
    # qwen2.5-0.5b LoRA, bf16, batch 1 → 2 rows × 1,024, prompt 256: T = 2,048 positions, N = 1,536.
    t, n, h, i = 2048, 1536, 896, 4864
    b = estimate(QWEN, TrainingSpec(objective="dpo", method="lora", batch_size=1, seq_len=1024, prompt_len=256))
    # a layer under no_grad: residual + normed input (2 B × H each) + act(gate), up and their product (2 B × I)
    layer = t * (2 * 2 * h + 3 * 2 * i)
    # the reference's head: last hidden states, the bool mask and fp32 log-probs per position; per scored token
    # the gathered hidden states, int64 targets and ~13 fp32 values; the bf16 tile buffer
    head = t * (2 * h + 1 + 4) + n * (2 * h + 8 + 52) + min(n, TOKEN_CHUNK) * VOCAB_CHUNK * 2
    policy_outputs = 13 * t  # log_probs, entropy, mean_logits (fp32) and is_top1 (bool) of the policy
    assert b.details["temporaries.reference_forward"] == max(layer, head) + policy_outputs


def test_policy_sees_twice_the_sequences() -> None:
    one = estimate(QWEN, TrainingSpec(objective="dpo", ref_model="precomputed", batch_size=1, seq_len=512))
    two = estimate(QWEN, TrainingSpec(objective="dpo", ref_model="precomputed", batch_size=2, seq_len=512))
    # saved layer activations are per position: doubling B doubles them (2B rows either way)
    assert two.details["activations.layers"] == 2 * one.details["activations.layers"]


def test_longer_prompts_need_less_head_memory() -> None:
    runs = [estimate(QWEN, TrainingSpec(objective="dpo", ref_model="precomputed", seq_len=1024, prompt_len=p))
            for p in (0, 256, 768)]
    saved = [r.details["activations.loss_saved"] for r in runs]
    assert saved[0] > saved[1] > saved[2]


# --- the tracer --------------------------------------------------------------------------------------------
# A small llama with a large vocabulary (2 layers, hidden 256, vocab 32,000): the head and the reference matter.
WIDE_VOCAB = ModelSpec(name="wide-vocab-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                       intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("kw", [
    {"method": "full", "precision": "pure-bf16"},
    {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)},
    {"method": "full", "precision": "pure-bf16", "ref_model": "precomputed", "grad_checkpointing": True},
    {"method": "lora", "precision": "bf16", "objective": "kto"},
], ids=["full-copy", "lora-adapters-off", "full-precomputed-gc", "kto-lora-adapters-off"])
def test_dpo_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "dpo", "batch_size": 2, "seq_len": 512, "prompt_len": 128, **kw})  # type: ignore[arg-type]
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    # Issue 14's bounds: never under the trace by more than 2 %, over by at most 5 %.
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


# --- options and errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "dpo", "loss": "chunked"}, "TRL's DPOTrainer computes log-probs with its own fused LM head"),
    ({"objective": "dpo", "ref_model": "adapters-off"}, "--ref-model adapters-off needs adapters to disable"),
    ({"ref_model": "copy"}, "--ref-model and --ref-dtype apply to --objective dpo, ipo or kto"),
    ({"objective": "dpo", "prompt_len": 512}, "--prompt-len 512 leaves no completion"),
    ({"prompt_len": 8}, "--prompt-len changes memory only through TRL's log-prob head"),
    ({"objective": "dpo", "ref_model": "precomputed", "ref_dtype": "fp32"}, "--ref-dtype sets a copied reference"),
    ({"objective": "dpo", "gpus_per_node": 2}, "is modelled on one GPU"),
])
def test_impossible_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("+", r"\+")):
        TrainingSpec(**kw)  # type: ignore[arg-type]


def test_cli_objective_json_and_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "qwen2.5-0.5b", "--objective", "dpo", "--seq-len", "1024", "--prompt-len",
                           "256", "--format", "json"], capsys)
    assert code == 0
    b = estimate(QWEN, TrainingSpec(objective="dpo", seq_len=1024, prompt_len=256))
    assert json.loads(out)["tensor_peak_bytes"] == b.tensor_peak_bytes
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "dpo", "--loss", "cut"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: TRL's DPOTrainer computes log-probs with its own fused LM head, so --loss cut does not apply to "
        "--objective dpo: drop --loss"]


# --- run files ----------------------------------------------------------------------------------------------
def _load(tmp_path, text: str) -> runfiles.Run:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.yaml"
    path.write_text(text)
    (run,) = runfiles.load(str(path))
    return run


def test_trl_dpo_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 2\nmax_length: 1024\nbeta: 0.1\n"
                          "loss_type: ipo\nprecompute_ref_log_probs: true\nbf16: true\n")
    assert run.options["objective"] == "ipo" and run.options["ref_model"] == "precomputed"
    assert {"beta", "loss_type", "precompute_ref_log_probs"} <= set(run.mapped) and not run.unmodelled
    run = _load(tmp_path, "output_dir: out\nloss_type: [sigmoid, sft]\ndisable_dropout: false\n")
    assert run.options["objective"] == "dpo" and run.unmodelled == ["disable_dropout"]
    run = _load(tmp_path, "output_dir: out\ncenter_rewards_coefficient: 0.01\n")
    assert run.options["objective"] == "reward"
    run = _load(tmp_path, "output_dir: out\ndesirable_weight: 1.0\nprecompute_ref_log_probs: true\n")
    assert run.options["objective"] == "kto" and run.options["ref_model"] == "precomputed"


def test_axolotl_rl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _load(tmp_path, "base_model: qwen2.5-0.5b\nadapter: lora\nrl: dpo\nsequence_len: 1024\n")
    assert run.options["objective"] == "dpo" and run.options["method"] == "lora" and "rl" in run.mapped
    assert _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: kto\n").options["objective"] == "kto"
    with pytest.raises(runfiles.RunFileError, match="rl: 'ppo' is not modelled"):  # grpo: tests/test_rl.py
        _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: ppo\n")


def test_llama_factory_stage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _load(tmp_path, "model_name_or_path: qwen2.5-0.5b\nstage: dpo\nfinetuning_type: lora\npref_loss: ipo\n")
    assert run.options["objective"] == "ipo"
    assert run.unmodelled == ["stage"]  # CustomDPOTrainer's full logits: a TIGHT verdict at best
    run = _load(tmp_path, "model_name_or_path: qwen2.5-0.5b\nstage: kto\n")
    assert run.options["objective"] == "kto" and run.unmodelled == ["stage"]
    with pytest.raises(runfiles.RunFileError, match="stage: 'ppo' is not modelled"):
        _load(tmp_path, "model_name_or_path: qwen2.5-0.5b\nstage: ppo\n")


def test_searches_shorten_the_prompt_with_the_sequence(capsys: pytest.CaptureFixture[str]) -> None:
    from vramcalc.core.searches import with_changes

    t = TrainingSpec(objective="dpo", seq_len=1024, prompt_len=256)
    # a probe below the prompt keeps one completion token; above it the prompt is the user's
    assert with_changes(t, {"seq_len": 100}).prompt_len == 99
    assert with_changes(t, {"seq_len": 2048}).prompt_len == 256
    code, out, err = invoke(["fit", "qwen2.5-0.5b", "--objective", "dpo", "--gpu", "rtx4090", "--seq-len", "1024",
                             "--prompt-len", "256"], capsys)
    assert code == 0 and "longest sequence" in out, err


# --- ORPO, CPO, SimPO: no reference, the full logits (memory/preference.py logits_head_bytes) ----------------
def test_reference_free_head_by_hand() -> None:
    # qwen2.5-0.5b LoRA, bf16 (no autocast: logits in bf16), batch 1 -> 2 rows x 512 positions, vocab 151,936.
    rows, s, v = 2, 512, 151_936
    full = rows * s * v * 2  # outputs.logits [2B, S, V] in bf16
    half = 1 * (s - 1) * v * 2  # CrossEntropyLoss on the chosen half: its .contiguous() copy and log_softmax output
    b = estimate(QWEN, TrainingSpec(objective="orpo", method="lora", batch_size=1, seq_len=s))
    # saved after forward: the logits (the Triton kernel saves its input view), the NLL's log_softmax output, the
    # kernel's int64 labels and two fp32 vectors per shifted position (head frozen: lm_head saves nothing)
    assert b.details["activations.loss_saved"] == full + half + 16 * rows * (s - 1)
    # backward: the two [2B, S, V] gradients of the logits and their out-of-place sum, after the saved set is freed
    assert b.details["temporaries.loss_backward"] == 3 * full - (full + half + 16 * rows * (s - 1))
    simpo = estimate(QWEN, TrainingSpec(objective="simpo", method="lora", batch_size=1, seq_len=s, chosen_nll=False))
    # no NLL (cpo_alpha 0): the saved logits next to the kernel's empty_like gradient of [2B, S - 1, V]
    assert simpo.details["temporaries.loss_backward"] == rows * (s - 1) * v * 2 - 16 * rows * (s - 1)
    assert simpo.tensor_peak_bytes < b.tensor_peak_bytes


def test_reference_free_has_no_reference_and_cpo_equals_orpo() -> None:
    orpo = estimate(QWEN, TrainingSpec(objective="orpo", seq_len=512))
    cpo = estimate(QWEN, TrainingSpec(objective="cpo", seq_len=512))
    simpo = estimate(QWEN, TrainingSpec(objective="simpo", seq_len=512))  # CPOConfig default cpo_alpha 1.0: NLL on
    sft = estimate(QWEN, TrainingSpec(seq_len=512, batch_size=2))
    # no frozen copy: the weights are the policy's alone (the SFT run of 2B rows has the same)
    assert orpo.weights == sft.weights and "weights.reference" not in orpo.details
    # the three trainers allocate the same tensors (cpo_trainer.py and orpo_trainer.py concatenated_forward)
    assert orpo.phases == cpo.phases == simpo.phases


def test_amp_logits_are_fp32() -> None:
    # accelerate convert_outputs_to_fp32: under autocast the logits come back as fp32, four bytes each
    t = TrainingSpec(objective="simpo", method="lora", batch_size=1, seq_len=512, chosen_nll=False)
    amp = estimate(QWEN, replace(t, precision="amp-bf16"))
    bf16 = estimate(QWEN, t)
    assert amp.details["activations.loss_saved"] - 16 * 2 * 511 == 2 * (bf16.details["activations.loss_saved"]
                                                                     - 16 * 2 * 511)


@pytest.mark.parametrize("kw", [
    {"objective": "orpo", "method": "full", "precision": "pure-bf16"},
    {"objective": "cpo", "method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)},
    {"objective": "simpo", "method": "full", "precision": "amp-bf16", "chosen_nll": False, "grad_checkpointing": True},
], ids=["orpo-full", "cpo-lora", "simpo-amp-gc-no-nll"])
def test_reference_free_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"batch_size": 2, "seq_len": 256, **kw})  # type: ignore[arg-type]
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "orpo", "loss": "chunked"}, "TRL's ORPOTrainer computes the full logits itself"),
    ({"objective": "orpo", "chosen_nll": False}, "--no-chosen-nll (CPOConfig cpo_alpha 0) applies to --objective cpo"),
    ({"objective": "simpo", "ref_model": "copy"}, "--ref-model and --ref-dtype apply to --objective dpo, ipo or kto"),
    ({"objective": "cpo", "prompt_len": 8}, "--prompt-len changes memory only through TRL's log-prob head"),
])
def test_reference_free_refusals(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainingSpec(**kw)  # type: ignore[arg-type]


def test_reference_free_run_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # CPOConfig (trl/experimental/cpo/cpo_config.py): simpo, alphapo (simpo with cpo_alpha 0), cpo_alpha
    run = _load(tmp_path, "output_dir: out\nloss_type: simpo\nsimpo_gamma: 0.5\n")
    assert run.options["objective"] == "simpo" and "chosen_nll" not in run.options
    run = _load(tmp_path, "output_dir: out\nloss_type: simpo\ncpo_alpha: 0\n")
    assert run.options["objective"] == "simpo" and run.options["chosen_nll"] is False
    assert _load(tmp_path, "output_dir: out\nloss_type: alphapo\n").options["chosen_nll"] is False
    run = _load(tmp_path, "output_dir: out\ncpo_alpha: 1.0\nloss_type: hinge\n")
    assert run.options["objective"] == "cpo" and not run.unmodelled
    with pytest.raises(runfiles.RunFileError, match="cpo_alpha: 'x' is not a number"):
        _load(tmp_path, "output_dir: out\ncpo_alpha: x\n")
    with pytest.raises(runfiles.RunFileError, match="loss_type: 'kto' is not a TRL CPO loss_type"):
        _load(tmp_path, "output_dir: out\ncpo_alpha: 1.0\nloss_type: kto\n")
    # axolotl rl: orpo (ORPOTrainer), simpo (CPOTrainer, its cpo_alpha key)
    assert _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: orpo\n").options["objective"] == "orpo"
    run = _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: simpo\ncpo_alpha: 0.0\n")
    assert run.options["objective"] == "simpo" and run.options["chosen_nll"] is False
    # LLaMA-Factory pref_loss orpo / simpo: its own trainer, flagged as not modelled exactly
    run = _load(tmp_path, "model_name_or_path: qwen2.5-0.5b\nstage: dpo\npref_loss: orpo\n")
    assert run.options["objective"] == "orpo" and run.unmodelled == ["stage"]
    run = _load(tmp_path, "model_name_or_path: qwen2.5-0.5b\nstage: dpo\npref_loss: simpo\n")
    assert run.options["objective"] == "simpo" and run.options["chosen_nll"] is False


def test_cli_reference_free(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "qwen2.5-0.5b", "--objective", "simpo", "--no-chosen-nll", "--seq-len", "512",
                           "--format", "json"], capsys)
    assert code == 0
    b = estimate(QWEN, TrainingSpec(objective="simpo", chosen_nll=False, seq_len=512))
    assert json.loads(out)["tensor_peak_bytes"] == b.tensor_peak_bytes
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "orpo", "--no-chosen-nll"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: --no-chosen-nll (CPOConfig cpo_alpha 0) applies to --objective cpo or simpo: drop it"]


# --- torchtune's DPO recipes (--dpo-head logits): the full fp32 logits, through memory/online_dpo.py's head -------
def test_torchtune_dpo_head_by_hand() -> None:
    # qwen2.5-0.5b LoRA, pure bf16, batch 1 -> 2 rows x 512 positions, vocab 151,936; head frozen (no lm_head input)
    rows, s, v = 2, 512, 151_936
    full = rows * s * v * 4  # the logits after TransformerDecoder.unembed's .float(): fp32 whatever the precision
    scored = rows * (s - 1) * v * 4  # log_softmax over logits[:, :-1] (and, in forward, the `/ 1.0` copy before it)
    small = rows * (s - 1) * (8 + 4)  # the cloned int64 labels and the gathered fp32 log-probs
    t = TrainingSpec(objective="dpo", dpo_head="logits", method="lora", precision="pure-bf16", batch_size=1,
                     seq_len=s)
    b = estimate(QWEN, t)
    assert b.details["activations.loss_saved"] == scored + small
    # forward beyond the saved set: the fp32 logits beside the division's copy (the bf16 logits before .float() are
    # the smaller moment: full + rows*s*v*2 - scored - small)
    assert b.details["temporaries.loss_forward"] == full + scored
    # the reference, on top: the same forward under no_grad, after the last hidden states (2 B x H per position)
    layer_hidden = rows * s * 2 * 896
    assert b.details["temporaries.reference_forward"] >= layer_hidden + full + 2 * scored
    # the same run through TRL's fused head has no logits at all: torchtune's step needs more
    trl = estimate(QWEN, replace(t, dpo_head="trl"))
    assert b.tensor_peak_bytes > trl.tensor_peak_bytes + full


@pytest.mark.parametrize("kw", [
    {"method": "lora", "precision": "pure-bf16", "lora_targets": ("all-linear",)},
    {"method": "full", "precision": "pure-bf16", "grad_checkpointing": True},
], ids=["lora-adapters-off", "full-copy-gc"])
def test_torchtune_dpo_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "dpo", "dpo_head": "logits", "batch_size": 2, "seq_len": 256, **kw})  # type: ignore[arg-type]
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "ipo", "dpo_head": "logits"}, "--dpo-head logits models torchtune's DPO recipes"),
    ({"objective": "dpo", "dpo_head": "logits", "loss": "trl"}, "--loss trl does not apply with --dpo-head logits"),
    ({"objective": "dpo", "dpo_head": "logits", "prompt_len": 8}, "--prompt-len does not apply"),
    ({"objective": "dpo", "dpo_head": "logits", "ref_model": "precomputed"}, "precomputed does not apply"),
])
def test_torchtune_dpo_refusals(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainingSpec(**kw)  # type: ignore[arg-type]
