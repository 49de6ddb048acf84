"""LoRA variants (issue 13): DoRA (peft use_dora), modules_to_save, and the config keys that enable them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (presets): hidden 2048, 22 layers, 4 KV heads x 64 = 256 for k/v, intermediate 5632, vocab 32000.
LAYERS, HIDDEN, KV, INTER, VOCAB = 22, 2048, 256, 5632, 32000


@pytest.fixture(scope="module")
def tinyllama() -> ModelSpec:
    return presets.find_model("tinyllama-1.1b")


def _lora(**kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "lora", "precision": "bf16", "batch_size": 1, "seq_len": 512}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_dora_adds_a_magnitude_vector_per_adapted_linear(tinyllama: ModelSpec) -> None:
    plain, dora = estimate(tinyllama, _lora()), estimate(tinyllama, _lora(dora=True))
    # q (out 2048) and v (out 256) per layer: 22 x 2,304 = 50,688, the tracer's trainable count minus LoRA's
    # (2,303,488 - 2,252,800 with peft use_dora).
    assert dora.trainable_parameters - plain.trainable_parameters == LAYERS * (HIDDEN + KV) == 50_688
    # fp32 adapters: weights, gradients and AdamW's two moments: 4 + 4 + 8 B per magnitude element.
    assert dora.weights - plain.weights == 4 * 50_688
    assert dora.gradients - plain.gradients == 4 * 50_688
    assert dora.optimizer_state - plain.optimizer_state == 8 * 50_688


def test_dora_saves_base_and_lora_outputs(tinyllama: ModelSpec) -> None:
    plain, dora = estimate(tinyllama, _lora()), estimate(tinyllama, _lora(dora=True))
    # memory/activations.py _dora_saved: per token the base output (bf16, 2 B) and lora_B's output (fp32, 4 B) per
    # out feature; per module weight_norm, mag_norm_scale and (mag_norm_scale - 1), fp32 (12 B per out feature).
    out = HIDDEN + KV
    per_layer = plain.details["activations.per_layer"]
    assert dora.details["activations.per_layer"] - per_layer == 512 * 6 * out + 12 * out
    # the whole difference at the peak, measured with the tracer (b1 s512): 3,437,306,880 - 3,280,386,048
    measured = 3_437_306_880 - 3_280_386_048
    assert abs((dora.tensor_peak_bytes - plain.tensor_peak_bytes) - measured) / measured < 0.001


def test_dora_weight_norm_transient(tinyllama: ModelSpec) -> None:
    b = estimate(tinyllama, _lora(dora=True, lora_targets=("all-linear",), seq_len=128))
    # The largest module is down_proj (in 5632, out 2048): eye(in) + A(eye) (in x r) + lora_weight, the fp32 copy
    # of W, scaling * lora_weight and the sum (4 x in x out), fp32: 4 x 5632 x (5632 + 16 + 4 x 2048).
    assert b.details["temporaries.layer_forward"] == 4 * INTER * (INTER + 16 + 4 * HIDDEN) == 311_787_520


def test_dora_is_a_lora_option(tinyllama: ModelSpec) -> None:
    b = estimate(tinyllama, TrainingSpec(method="full", dora=True))
    assert any("--dora: changes nothing with --method full" in n for n in b.notes)


def test_modules_to_save_copies_train_in_the_model_dtype(tinyllama: ModelSpec) -> None:
    plain, saved = estimate(tinyllama, _lora()), estimate(tinyllama, _lora(modules_to_save=("lm_head",)))
    copy = VOCAB * HIDDEN  # lm_head, untied in TinyLlama
    assert saved.trainable_parameters - plain.trainable_parameters == copy
    assert saved.weights - plain.weights == 2 * copy  # the copy in bf16 (ModulesToSaveWrapper deepcopy)
    assert saved.gradients - plain.gradients == 2 * copy
    assert saved.optimizer_state - plain.optimizer_state == 8 * copy  # AdamW, fp32 moments (bf16 recipe)
    # measured with the tracer (b1 s512): 3,937,843,200 at the peak
    assert abs(saved.tensor_peak_bytes - 3_937_843_200) / 3_937_843_200 < 0.001


def test_tied_embedding_is_copied_once() -> None:
    qwen = presets.find_model("qwen2.5-0.5b")  # tied embeddings
    one = estimate(qwen, _lora(modules_to_save=("embed_tokens",)))
    head = estimate(qwen, _lora(modules_to_save=("lm_head",)))
    assert one.trainable_parameters == head.trainable_parameters
    assert any("tied embeddings: one copy" in n for n in head.notes)
    # both named: peft wraps each module and deep-copies each, two copies (the tracer's trainable count, --grid
    # vocab "qwen2.5-0.5b | lora +3 x32 save embed,head": 2 x 151,968 x 896 + LoRA's; tests/test_new_tokens.py)
    both = estimate(qwen, _lora(modules_to_save=("embed_tokens", "lm_head")))
    assert both.trainable_parameters - one.trainable_parameters == 151_936 * 896
    assert any("two copies of the shared matrix" in n for n in both.notes)


def test_unknown_saved_module_is_one_line(tinyllama: ModelSpec) -> None:
    with pytest.raises(VramcalcError, match="choose from embed_tokens, lm_head"):
        estimate(tinyllama, _lora(modules_to_save=("score_head",)))


def test_cli_options(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    code, out, _ = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--dora", "--modules-to-save",
                           "embed_tokens", "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["trainable_parameters"] == 2_252_800 + 50_688 + VOCAB * HIDDEN  # LoRA q,v + magnitudes + copy
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--modules-to-save", "norm"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_axolotl_keys(tmp_path: Path) -> None:
    run = runfiles.load(_write(tmp_path, "ax.yaml", "base_model: tinyllama-1.1b\nadapter: lora\npeft_use_dora: true\n"
                                                    "lora_modules_to_save: [embed_tokens, lm_head]\n"
                                                    "peft_use_rslora: true\nloraplus_lr_ratio: 16\n"))[0]
    assert run.options["dora"] is True
    assert run.options["modules_to_save"] == "embed_tokens,lm_head"
    assert {"peft_use_rslora", "loraplus_lr_ratio"} <= set(run.mapped)
    assert not {"peft_use_rslora", "loraplus_lr_ratio"} & set(run.ignored)
    assert any("rsLoRA" in n and "no memory change" in n for n in run.notes)


def test_llama_factory_keys(tmp_path: Path) -> None:
    run = runfiles.load(_write(tmp_path, "lf.yaml", "model_name_or_path: tinyllama-1.1b\nstage: sft\n"
                                                    "finetuning_type: lora\nuse_dora: true\n"
                                                    "additional_target: embed_tokens\nuse_rslora: true\n"))[0]
    assert run.options["dora"] is True and run.options["modules_to_save"] == "embed_tokens"
    assert "use_rslora" in run.mapped and "use_dora" not in run.unmodelled


def test_adapter_config_keys(tmp_path: Path) -> None:
    from vramcalc.io.resolve import adapter_options

    folder = tmp_path / "adapter"
    folder.mkdir()
    cfg = {"base_model_name_or_path": "tinyllama-1.1b", "peft_type": "LORA", "r": 8, "use_dora": True,
           "modules_to_save": ["lm_head"], "use_rslora": True}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_options(str(folder)) == {"method": "lora", "lora_rank": 8, "dora": True,
                                            "modules_to_save": "lm_head"}
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "trainable_token_indices": [1, 2]}))
    assert adapter_options(str(folder))["lora_trainable_tokens"] == 2
    # peft also takes {module name: ids}; only the input embedding's are modelled
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "trainable_token_indices": {
        "embed_tokens": [1, 2, 3]}}))
    assert adapter_options(str(folder))["lora_trainable_tokens"] == 3
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "trainable_token_indices": {"lm_head": [1]}}))
    with pytest.raises(VramcalcError, match="input embedding only"):
        adapter_options(str(folder))


def test_trainable_token_indices_beside_lora() -> None:
    # Qwen2.5-0.5B (hidden 896, vocab 151,936, tied): peft's TrainableTokensWrapper holds trainable_tokens_delta and
    # the trainable_tokens_original buffer, both (64, 896) in fp32 under a bf16 model (measured in
    # /work/scratch/tt.py-style peft runs: named_parameters/named_buffers dtypes).
    qwen = presets.find_model("qwen2.5-0.5b")
    plain, tokens = estimate(qwen, _lora(batch_size=2)), estimate(qwen, _lora(batch_size=2, lora_trainable_tokens=64))
    rows = 64 * 896
    assert tokens.trainable_parameters - plain.trainable_parameters == rows
    assert tokens.weights - plain.weights == 2 * 4 * rows
    assert tokens.gradients - plain.gradients == 4 * rows
    assert tokens.optimizer_state - plain.optimizer_state == 8 * rows  # AdamW's two fp32 moments
    # the tied head saves the merged (vocab x hidden) bf16 weight: the tied-head term of the trainable-tokens method
    assert any("tied lm_head saves for backward" in n for n in tokens.notes)
    # measured with the tracer: benchmarks/results/accuracy_lora-variants.json "qwen2.5-0.5b | lora tokens 64 b2
    # s512", 4,322,059,264 bytes at the peak
    assert abs(tokens.tensor_peak_bytes - 4_322_059_264) / 4_322_059_264 < 0.001


def test_trainable_token_indices_refused_beyond_causal_lms() -> None:
    with pytest.raises(VramcalcError, match="--lora-trainable-tokens is modelled for causal LMs"):
        estimate(presets.find_model("bert-base-uncased"), _lora(lora_trainable_tokens=8))


def test_lora_on_head_and_embedding_parameters(tinyllama: ModelSpec) -> None:
    plain = estimate(tinyllama, _lora())
    both = estimate(tinyllama, _lora(lora_targets=("q_proj", "v_proj", "lm_head", "embed_tokens")))
    # peft lora.Embedding: lora_embedding_A (r x vocab) + lora_embedding_B (hidden x r); the head's lora.Linear:
    # lora_A (r x hidden) + lora_B (vocab x r): r x (vocab + hidden) each.
    assert both.trainable_parameters - plain.trainable_parameters == 2 * 16 * (VOCAB + HIDDEN)


def test_lora_on_head_saves_the_cast_hidden_state(tinyllama: ModelSpec) -> None:
    plain = estimate(tinyllama, _lora())
    head = estimate(tinyllama, _lora(lora_targets=("q_proj", "v_proj", "lm_head")))
    # lora_A saves the final hidden state in fp32 (4 x 2048) and lora_B lora_A's output (4 x 16), per token
    assert head.details["activations.head_and_loss"] - plain.details["activations.head_and_loss"] == \
        512 * 4 * (HIDDEN + 16)
    # measured with the tracer (b1 s512): 3,291,150,336
    assert abs(head.tensor_peak_bytes - 3_291_150_336) / 3_291_150_336 < 0.001


def test_lora_on_head_under_the_chunked_loss(tinyllama: ModelSpec) -> None:
    # torchtune's chunked loss calls the head module per chunk, adapter included; measured with the tracer
    # (b2 s512, --loss chunked): 4,168,312,832
    b = estimate(tinyllama, _lora(lora_targets=("auto", "lm_head"), loss="chunked", batch_size=2))
    assert abs(b.tensor_peak_bytes - 4_168_312_832) / 4_168_312_832 < 0.001


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"lora_targets": ("q_proj", "lm_head"), "loss": "fused-linear"}, "reads lm_head.weight and skips the adapter"),
    ({"lora_targets": ("q_proj", "lm_head"), "dora": True}, "--dora on lm_head / embed_tokens is not modelled"),
])
def test_head_lora_refusals(tinyllama: ModelSpec, kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(VramcalcError, match=fragment.replace(".", r"\.")):
        estimate(tinyllama, _lora(**kw))


def test_torchtune_apply_lora_to_output_and_dora(tmp_path: Path) -> None:
    component = "torchtune.models.llama3_1.lora_llama3_1_8b"
    run = runfiles.load(_write(tmp_path, "tt.yaml", f"model:\n  _component_: {component}\n"
                                                    "  lora_attn_modules: [q_proj, v_proj]\n"
                                                    "  apply_lora_to_output: true\n  use_dora: true\n"))[0]
    assert run.options["lora_targets"] == "q_proj,v_proj,lm_head" and run.options["dora"] is True


def test_trl_model_config_peft_keys(tmp_path: Path) -> None:
    # trl sft --config: TrainingArguments/SFTConfig keys and ModelConfig's peft keys in one file
    run = runfiles.load(_write(tmp_path, "trl.yaml", "per_device_train_batch_size: 2\nmax_length: 512\nbf16: true\n"
                                                     "use_peft: true\nlora_r: 32\nuse_dora: true\nload_in_4bit: true\n"
                                                     "lora_modules_to_save: [lm_head]\nuse_rslora: true\n"))[0]
    assert run.kind == "hf-training-args"
    o = run.options
    assert (o["method"], o["quant_bits"], o["lora_rank"], o["dora"], o["modules_to_save"]) == \
        ("qlora", 4, 32, True, "lm_head")
    # TRL's own defaults: lora_dropout 0.05, use_bnb_nested_quant false, no kbit prep, bf16 adapters under QLoRA
    assert (o["lora_dropout"], o["double_quant"], o["kbit_prep"], o["adapter_dtype"]) == (0.05, False, False, "bf16")
    assert not {"use_peft", "lora_r", "use_dora", "use_rslora", "lora_modules_to_save"} & set(run.ignored)


# ---- under autocast (amp-bf16: fp32 weights and adapters, bf16 matmuls) -------------------------------------------

def test_amp_lora_saves_autocast_casts_of_its_input(tinyllama: ModelSpec) -> None:
    # peft lora.Linear casts x to the adapter dtype (fp32), but lora_A is an autocast matmul: it saves autocast's
    # bf16 cast of that copy, and lora_B saves lora_A's bf16 output. Adding v_proj's adapter to q_proj's adds
    # 2 B x (2048 in + 16 r) per token (torch autocast_mode.cpp: linear runs in the lower precision; a non-leaf
    # input's cast is not cached).
    q = estimate(tinyllama, _lora(precision="amp-bf16", lora_targets=("q_proj",), seq_len=256))
    qv = estimate(tinyllama, _lora(precision="amp-bf16", lora_targets=("q_proj", "v_proj"), seq_len=256))
    extra_v = qv.details["activations.per_layer"] - q.details["activations.per_layer"]
    assert extra_v == 256 * 2 * (HIDDEN + 16)


def test_amp_dora_weight_norm_transient(tinyllama: ModelSpec) -> None:
    b = estimate(tinyllama, _lora(dora=True, precision="amp-bf16", lora_targets=("all-linear",), seq_len=128))
    # down_proj (in 5632, out 2048, r 16), peft dora.py under autocast: lora_A's graph keeps the bf16 cast of x_eye
    # (in x in) and lora_B its bf16 input (in x r); lora_B's bf16 output is copied to fp32 (`.to(x.dtype)`), then
    # get_weight_norm's `scaling * lora_weight` and the sum (fp32; W is already fp32: no copy). The earlier moment,
    # lora_B running, holds the fp32 x_eye, its bf16 cast and the bf16 output.
    graph = 2 * INTER * INTER + 2 * INTER * 16
    running = 4 * INTER * INTER + graph + 2 * INTER * HIDDEN
    norm = graph + 3 * 4 * INTER * HIDDEN
    assert b.details["temporaries.layer_forward"] == max(running, norm) == running


def test_amp_lm_head_cast_is_not_in_the_layers_forward(tinyllama: ModelSpec) -> None:
    # autocast casts the LM head's weight when the head runs, after the last layer: forward.layer holds every block
    # Linear's bf16 copy but not the head's (32000 x 2048 x 2 B); forward.loss holds both
    b = estimate(tinyllama, _lora(dora=True, precision="amp-bf16", lora_targets=("all-linear",), seq_len=128))
    copies = b.details["activations.autocast_weight_copies"]

    def term(moment: str) -> int:
        _, labels, values = next(x for x in b.moments if x[0] == moment)
        return dict(zip((name for name, _ in labels), values, strict=True))["autocast weight copies"]

    assert term("forward.loss") == copies
    assert term("forward.layer") == copies - 2 * VOCAB * HIDDEN
