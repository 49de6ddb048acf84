"""--precision autocast-bf16 / autocast-fp16: 16-bit stored weights, fp32 trainable parameters, the step under the
Trainer's autocast (core/memory/precision.py, core/memory/upcast_norms.py autocast16 / check_recipe)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# 4 layers, hidden 256, MLP 1,024, 4 heads of 64 with 2 KV heads, vocab 32,000, untied
TINY = ModelSpec(name="tiny-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                 intermediate_size=1_024, num_layers=4, num_attention_heads=4, num_kv_heads=2)


def _lora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "lora_rank": 8, "lora_targets": ("q_proj",), "batch_size": 1,
                           "seq_len": 128, **kw})


def test_one_adapted_layer_saves_a_16_bit_copy_under_autocast() -> None:
    # peft tuners/lora/layer.py Linear.forward: x cast to the fp32 adapter's dtype (_cast_input_dtype); without
    # autocast lora_A saves that fp32 copy (4 B x 256 in-features) and lora_B lora_A's fp32 output (4 B x rank 8):
    # 1,024 + 32 = 1,056 B per token. Under autocast F.linear casts the fp32 copy back to bf16 and saves that (2 B x
    # 256) and lora_A's output is bf16 (2 B x 8): 512 + 16 = 528 B per token (torch autocast_mode.cpp: linear on the
    # lower-precision list; a non-leaf input's cast is not cached)
    def saved(precision: str) -> int:
        layer = layer_activations(TINY, _lora(precision=precision), RECIPES[precision], trainable_weights=False)
        return next(x.per_token for x in layer.terms if x.name == "lora q_proj input")

    assert saved("bf16") == 4 * 256 + 4 * 8 == 1_056
    assert saved("autocast-bf16") == 2 * 256 + 2 * 8 == 528


def test_a_layernorm_saves_an_fp32_input_and_its_output_is_cast_per_linear() -> None:
    # GPT-2 (ln_1 / ln_2 are nn.LayerNorm): layer_norm is on autocast's fp32 list, so native_layer_norm runs on an
    # fp32 copy of its 16-bit input and saves it with fp32 mean and rstd: 4 B x 768 + 8 per token, not 2 B x 768 + 8
    # (the 16-bit run); a Llama RMSNorm over 16-bit weights multiplies in 16 bits: no such change
    gpt2 = presets.find_model("gpt2")

    def norm(m: ModelSpec, precision: str) -> int:
        layer = layer_activations(m, _lora(precision=precision, lora_targets=("all-linear",)), RECIPES[precision],
                                  trainable_weights=False, input_grad=True)
        return next(x.per_token for x in layer.terms if x.name.startswith("attn norm"))

    assert norm(gpt2, "bf16") == 2 * 768 + 8
    assert norm(gpt2, "autocast-bf16") == 4 * 768 + 8
    assert norm(TINY, "autocast-bf16") == norm(TINY, "bf16")


def test_freeze_stores_the_trained_parameters_in_fp32() -> None:
    # LLaMA-Factory _setup_freeze_tuning + cast_trainable_params_to_fp32: the top 2 of 4 layers and the head (and
    # final norm) train in fp32, the rest stays bf16. One layer: q 256 x 256, k and v 256 x 128, o 256 x 256, gate /
    # up / down 256 x 1,024, two norms of 256 = 983,552; the head 32,000 x 256 = 8,192,000; the final norm 256.
    trained = 2 * 983_552 + 8_192_000 + 256
    params = 32_000 * 256 + 4 * 983_552 + 256 + 32_000 * 256
    e = estimate(TINY, TrainingSpec(method="freeze", freeze_layers=2, precision="autocast-bf16", batch_size=1,
                                    seq_len=128))
    assert (e.parameters, e.trainable_parameters) == (params, trained)
    assert e.details["weights.base"] == 2 * params + 2 * trained  # 2 B each, and 2 B more for the trained ones
    assert e.gradients == 4 * trained  # fp32 gradients (autograd: the parameter's dtype)
    assert e.details["optimizer_state.moments"] == 2 * 4 * trained  # AdamW's fp32 moments


@pytest.mark.parametrize(("kw", "needle"), [
    ({"method": "full"}, "pass --precision amp-bf16"),
    ({"method": "qlora"}, "--no-kbit-prep"),
    # DoRA is modelled for SFT on Llama / Mistral / Qwen2 (tests/test_autocast_dora.py); with DPO, not traced
    ({"method": "lora", "dora": True, "objective": "dpo"}, "--dora"),
    ({"method": "lora", "mode": "inference"}, "--mode inference"),
    # traced under autocast: TRL's DPO with the adapters-off reference only, and the loss savers fused-linear, cut
    # and chunked (--grid autocast-run)
    ({"method": "lora", "objective": "kto", "ref_model": "copy"}, "--objective kto"),
    ({"method": "lora", "objective": "dpo", "ref_model": "copy"}, "adapters-off reference"),
    ({"method": "freeze", "freeze_layers": 2, "objective": "dpo"}, "--objective dpo"),
    ({"method": "lora", "loss": "liger-cross-entropy"}, "--loss liger-cross-entropy"),
])
def test_what_is_not_modelled_is_refused_in_one_line(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(TINY, TrainingSpec(precision="autocast-bf16", **kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_untraced_family_is_refused() -> None:
    # (mixture-of-experts LoRA / QLoRA is modelled: tests/test_autocast_moe.py; DeepSeek's is not traced)
    with pytest.raises(UnsupportedCombination, match="traced on Mixtral"):
        estimate(presets.find_model("deepseek-v3"), TrainingSpec(method="lora", precision="autocast-bf16"))


@pytest.mark.parametrize("t", [
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), batch_size=2, seq_len=256),
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), batch_size=2, seq_len=256, grad_checkpointing=True,
          lora_dropout=0.05),
    TrainingSpec(method="freeze", freeze_layers=2, precision="autocast-bf16", batch_size=2, seq_len=256),
    # TRL's DPO with peft: the policy's chosen and rejected rows, then the adapters-off reference, under autocast
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), objective="dpo", batch_size=1, seq_len=256,
          prompt_len=64, grad_checkpointing=True),
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), objective="dpo", batch_size=1, seq_len=256,
          prompt_len=64),
    # Liger's fused linear cross-entropy (the tracer's emulated kernel, trace/_loss.py) and torchtune's chunked loss
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), loss="fused-linear", batch_size=2, seq_len=256),
    _lora(precision="autocast-bf16", lora_targets=("all-linear",), loss="chunked", batch_size=2, seq_len=256),
])
def test_matches_the_trace(t: TrainingSpec) -> None:
    # the tracer loads bf16 weights (freeze: the trained ones cast to fp32) and runs the forward under CUDA autocast
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    e, r = estimate(TINY, t), trace(TINY, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def test_run_files_map_the_trainers_autocast(tmp_path: Path) -> None:
    # TrainingArguments with bf16 true over a 16-bit load and use_peft: peft's fp32 adapters under accelerate's
    # autocast; without bf16 the 16-bit model runs as loaded (pure-bf16)
    hf = tmp_path / "sft.yaml"
    hf.write_text("use_peft: true\nbf16: true\nper_device_train_batch_size: 1\n")
    assert runfiles.load(hf)[0].options["precision"] == "autocast-bf16"
    hf.write_text("use_peft: true\nper_device_train_batch_size: 1\n")
    assert runfiles.load(hf)[0].options["precision"] == "pure-bf16"
    # axolotl LoRA with bf16: get_peft_model's fp32 adapters (loaders/adapter.py load_lora), the Trainer's autocast;
    # full fine-tuning of the bf16 load stays pure-bf16
    ax = tmp_path / "ax.yaml"
    ax.write_text("base_model: tinyllama-1.1b\nadapter: lora\nlora_r: 8\nbf16: true\n")
    assert runfiles.load(ax)[0].options["precision"] == "autocast-bf16"
    ax.write_text("base_model: tinyllama-1.1b\nbf16: true\n")
    assert runfiles.load(ax)[0].options["precision"] == "pure-bf16"
    # a mixture-of-experts LoRA (--grid autocast-moe) maps too
    ax.write_text("base_model: mixtral-8x7b\nadapter: lora\nlora_r: 8\nbf16: true\n")
    assert runfiles.load(ax)[0].options["precision"] == "autocast-bf16"
    # a model the recipe is not traced on: the 16-bit mapping stays, and a note says so
    ax.write_text("base_model: deepseek-v3\nadapter: lora\nlora_r: 8\nbf16: true\n")
    moe = runfiles.load(ax)[0]
    assert moe.options["precision"] == "bf16"
    assert any("autocast-bf16 is not modelled here" in n for n in moe.notes)


def test_dpo_drops_lora_dropout() -> None:
    # trl/trainer/utils.py disable_dropout_in_model (DPOConfig disable_dropout=True) sets p = 0 on every nn.Dropout,
    # peft's lora_dropout modules too, and F.dropout with p = 0 returns its input (aten Dropout.cpp): DPO with
    # lora_dropout 0.05 is the same step as with 0; SFT keeps its dropped copy and 1-byte mask per adapted input
    dpo = _lora(precision="autocast-bf16", lora_targets=("all-linear",), objective="dpo", prompt_len=32)
    assert estimate(TINY, replace(dpo, lora_dropout=0.05)).tensor_peak_bytes == estimate(TINY, dpo).tensor_peak_bytes
    sft = _lora(precision="autocast-bf16", lora_targets=("all-linear",))
    assert estimate(TINY, replace(sft, lora_dropout=0.05)).tensor_peak_bytes > estimate(TINY, sft).tensor_peak_bytes


def test_run_files_map_dpo_and_qlora_to_autocast(tmp_path: Path) -> None:
    # a TRL DPO file with use_peft and bf16 (TRL's DPO scripts: lora_dropout 0.05): DPOTrainer's get_peft_model makes
    # fp32 adapters (autocast_adapter_dtype), accelerate's prepared forward runs under autocast, the reference is the
    # policy with its adapters off (dpo_trainer.py compute_ref_log_probs)
    # (loaded in bf16: TRL loads float32 unless model_init_kwargs names a dtype, trl/trainer/utils.py
    # create_model_from_path, which without it is amp-bf16, fp32 weights under the same autocast)
    hf = tmp_path / "dpo.yaml"
    text = ("use_peft: true\nlora_dropout: 0.05\nbf16: true\nbeta: 0.1\nper_device_train_batch_size: 2\n"
            "max_length: 1024\n")
    hf.write_text(text + "model_init_kwargs: {dtype: bfloat16}\n")
    run = runfiles.load(hf)[0]
    assert (run.options["objective"], run.options["precision"]) == ("dpo", "autocast-bf16")
    hf.write_text(text)
    assert runfiles.load(hf)[0].options["precision"] == "amp-bf16"
    # axolotl QLoRA with lora_dropout 0.05 and bf16, its LoRA kernels off: the norms, embeddings and head cast back
    # to bf16 after prepare_model_for_kbit_training (--no-kbit-prep, runfiles.py AXOLOTL_KBIT_NOTE), fp32 adapters
    ax = tmp_path / "ax.yaml"
    text = ("base_model: tinyllama-1.1b\nadapter: qlora\nload_in_4bit: true\nlora_r: 32\nlora_dropout: 0.05\n"
            "lora_target_linear: true\nbf16: true\n")
    ax.write_text(text + "lora_qkv_kernel: false\nlora_o_kernel: false\nlora_mlp_kernel: false\n")
    run = runfiles.load(ax)[0]
    assert (run.options["precision"], run.options["kbit_prep"], run.options["lora_dropout"]) == \
        ("autocast-bf16", False, 0.05)
    # with axolotl's LoRA kernels (turned on by itself) the recipe is not modelled under autocast: bf16, a note
    ax.write_text(text)
    run = runfiles.load(ax)[0]
    assert run.options["precision"] == "bf16"
    assert any("autocast-bf16 is not modelled here" in n for n in run.notes)


def test_fp16_is_the_same_storage() -> None:
    # autocast-fp16: the same bytes as autocast-bf16 (2-byte weights and compute), GradScaler's state being scalars
    t = _lora(precision="autocast-bf16", lora_targets=("all-linear",))
    fp16 = replace(t, precision="autocast-fp16")
    assert estimate(TINY, t).tensor_peak_bytes == estimate(TINY, fp16).tensor_peak_bytes


def test_dpo_and_loss_savers_are_kept_to_the_traced_families() -> None:
    # --grid autocast-run / autocast-run2 trace DPO and the loss savers on the dense text families (Qwen3 and the
    # rest: tests/test_autocast_run2.py); a mixture-of-experts run with them is refused
    mixtral = presets.find_model("mixtral-8x7b")
    for kw in ({"objective": "dpo"}, {"loss": "fused-linear"}):
        with pytest.raises(UnsupportedCombination, match="traced on Llama, Mistral, Qwen2, Qwen3, OLMo 2"):
            estimate(mixtral, TrainingSpec(method="lora", precision="autocast-bf16", **kw))
