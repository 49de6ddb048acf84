"""Encoder-decoders (issue 15): T5 / mT5 / Flan-T5 and BART / mBART (memory/seq2seq.py).

What the source and target lengths change term by term, what the run options refuse, LoRA's trainable count
against peft on the library's model, and (where torch is installed) the estimate against the tracer on 2-block
T5 and BART models. Parameter counts against the library are in tests/test_hf_config.py; the full-size grid is
benchmarks/results/accuracy_encdec.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, seq2seq
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import lora_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def _hf(name: str) -> ModelSpec:
    return spec_from_hf_config(json.loads((HF / f"{name}.json").read_text()), name, f"{name}.json")


def _terms(terms: tuple[seq2seq.STerm, ...]) -> dict[str, tuple[str, int]]:
    return {x.name: (x.kind, x.coeff) for x in terms}


def test_target_len_zero_is_the_source_length() -> None:
    m = presets.find_model("flan-t5-base")
    assert estimate(m, TrainingSpec(seq_len=256)).tensor_peak_bytes == estimate(
        m, TrainingSpec(seq_len=256, target_len=256)).tensor_peak_bytes


@pytest.mark.parametrize("name", ["flan-t5-base", "bart-large"])
def test_source_and_target_each_grow_the_activations(name: str) -> None:
    m = presets.find_model(name)
    base = estimate(m, TrainingSpec(method="lora", seq_len=256, target_len=64))
    longer_source = estimate(m, TrainingSpec(method="lora", seq_len=512, target_len=64))
    longer_target = estimate(m, TrainingSpec(method="lora", seq_len=256, target_len=128))
    assert longer_source.activations > base.activations
    assert longer_target.activations > base.activations
    # the loss is over the target only: its vocab-wide temporaries follow the target length, not the source
    assert longer_source.details["temporaries.loss_backward"] == base.details["temporaries.loss_backward"]
    assert longer_target.details["temporaries.loss_backward"] == 2 * base.details["temporaries.loss_backward"]


def test_t5_block_terms_from_modeling_t5() -> None:
    # flan-t5-base, bf16 full fine-tuning under sdpa: d_model 768, 12 heads x d_kv 64 = 768, d_ff 2048, gated-gelu
    m = presets.find_model("flan-t5-base")
    t = TrainingSpec(method="full", precision="bf16")
    p = seq2seq.build_plan(m, t, recipe_of(t))
    enc, dec = _terms(p.enc_layer), _terms(p.dec_layer)
    h, i, heads = 768, 2048, 12
    # T5LayerNorm in bf16: the fp32 copy pow saves (4 B), the bf16 input and fp32 rsqrt mul saves, the normalized x
    assert enc["self-attention norm (fp32 input, input, rsqrt)"] == ("s", 4 * h + 2 * h + 4)
    assert enc["self-attention norm (normalized)"] == ("s", 2 * h)
    # the efficient kernel saves a (1, heads, s, s) bias per block whatever the batch (contiguous copy)
    assert enc["self-attention position-bias mask (saved by the efficient kernel)"] == ("S2", 2 * heads)
    # the decoder's causal torch.where: a (1, heads, t, t) bias and the 1-byte condition it saves
    assert dec["self-attention position-bias mask (saved by the efficient kernel)"] == ("T2", 2 * heads + 1)
    # cross-attention: q and out per target token, k and v per source token
    assert dec["cross-attention sdpa k, v"] == ("s", 2 * 2 * h)
    assert dec["cross-attention sdpa q, out, logsumexp"] == ("t", 2 * 2 * h + 4 * heads)
    # gelu_new's four saved intermediates and the gated product's two factors (memory/activations.py _mlp_terms)
    assert enc["mlp act input"] == ("s", 4 * 2 * i)
    assert enc["mlp act output, up"] == ("s", 2 * 2 * i)
    assert enc["mlp activation dropout mask"] == ("s", i)  # T5DenseGatedActDense's dropout (dropout_rate 0.1)
    shared = _terms(p.shared)
    assert shared["encoder output (saved by the cross-attention k, v)"] == ("s", 2 * h)
    assert shared["cross-attention zero position bias"] == ("TS", 2 * heads)
    # the loss over target tokens in bf16 (CrossEntropyLoss on the bf16 logits: no fp32 upcast)
    assert _terms(p.head)["log_softmax output"] == ("t", 2 * 32128)


def test_bart_has_no_position_bias_and_eager_t5_no_mask_copy() -> None:
    bart = presets.find_model("bart-large")
    t = TrainingSpec(method="lora", precision="bf16")
    assert not any("position" in x.name for x in seq2seq.build_plan(bart, t, recipe_of(t)).enc_layer)
    t5 = presets.find_model("t5-base")
    eager = TrainingSpec(method="lora", precision="bf16", attention="eager")
    enc = _terms(seq2seq.build_plan(t5, eager, recipe_of(eager)).enc_layer)
    assert not any("position-bias" in k for k in enc)
    # softmax in the scores' dtype, the dropout mask and the dropped probabilities, per head per key
    assert enc["self-attention eager scores (softmax, dropout mask, dropped probs)"] == ("ss", (2 + 1 + 2) * 12)


def test_bart_final_logits_bias_is_a_weight() -> None:
    m = presets.find_model("bart-large")
    b = estimate(m, TrainingSpec(method="full", precision="bf16"))
    # 406,291,456 bf16 parameters and the (1, 50,265) bf16 buffer
    assert b.weights == 2 * 406_291_456 + 2 * 50_265


@pytest.mark.parametrize(("run", "message"), [
    ({"mode": "inference"}, "--mode inference (the encoder once, then the decoder's cache and cross-attention keys) "
                            "is not modelled"),
    ({"method": "ia3"}, "--method ia3 is not modelled for encoder-decoders"),
    ({"precision": "amp-bf16"}, "--precision amp-bf16 is not modelled for encoder-decoders"),
    ({"attention": "flash"}, "transformers has no flash_attention_2 for T5"),
    ({"zero": 3, "gpus_per_node": 2}, "vramcalc models it on one GPU"),
    ({"loss": "chunked"}, "--objective, --loss and --packing apply to causal LMs"),
])
def test_what_is_not_modelled_is_refused(run: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedCombination, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate(presets.find_model("flan-t5-base"), TrainingSpec(**run))  # type: ignore[arg-type]


def test_target_beyond_bart_positions_and_target_len_on_a_decoder_are_refused(capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    with pytest.raises(SpecError, match="--target-len 2,048 exceeds bart-large's 1,024 learned position"):
        estimate(presets.find_model("bart-large"), TrainingSpec(seq_len=512, target_len=2048))
    code, out, err = invoke(["estimate", "mistral-7b", "--target-len", "128"], capsys)
    assert code == 2
    assert err.strip() == ("error: --target-len sizes an encoder-decoder's target (t5, mt5, bart, mbart); "
                           "mistral-7b reads one sequence: drop --target-len")
    assert "Traceback" not in out + err
    code, out, err = invoke(["estimate", "flan-t5-base", "--mode", "inference"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in out + err


def test_cli_takes_the_target_length(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "flan-t5-base", "--method", "lora", "--seq-len", "512", "--target-len",
                             "128", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    expected = estimate(presets.find_model("flan-t5-base"), TrainingSpec(method="lora", seq_len=512, target_len=128))
    assert doc["components"]["activations"] == expected.activations
    assert doc["settings"]["target_len"] == 128
    assert any("encoder-decoder flan-t5-base" in n for n in doc["notes"])


@pytest.mark.parametrize("name", ["t5-small", "flan-t5-base", "bart-base"])
def test_lora_trainable_count_matches_peft(name: str) -> None:
    # peft's default targets (q, v for T5; q_proj, v_proj for BART) adapt the encoder's self-attention and the
    # decoder's self- and cross-attention: r x (d_in + d_out) per module, counted by peft on the library's model.
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from vramcalc.trace._config import hf_config_dict, lora_targets

    m = _hf(name)
    t = TrainingSpec(method="lora", lora_rank=8)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    d = hf_config_dict(m)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        model = get_peft_model(AutoModelForSeq2SeqLM.from_config(config),
                               LoraConfig(r=8, target_modules=lora_targets(m, t.lora_targets),
                                          task_type="SEQ_2_SEQ_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_params(m, t.lora_targets, 8) == trainable == estimate(m, t).trainable_parameters


@pytest.mark.parametrize(("name", "run"), [
    ("t5-small", {"method": "full"}),
    ("t5-small", {"method": "lora", "grad_checkpointing": True}),
    ("bart-base", {"method": "full", "grad_checkpointing": True}),
    ("bart-base", {"method": "lora", "attention": "eager"}),
], ids=["t5-full", "t5-lora-ckpt", "bart-full-ckpt", "bart-lora-eager"])
def test_estimate_is_within_5_percent_of_the_trace(name: str, run: dict[str, object]) -> None:
    # 2-block stacks of the published configs, batch 2, source 64, target 32, bf16, traced on fake tensors
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = replace(_hf(name), num_layers=2, decoder_layers=2)
    t = TrainingSpec(batch_size=2, seq_len=64, target_len=32, precision="bf16", **run)  # type: ignore[arg-type]
    b = estimate(m, t)
    traced = trace(m, t)
    assert traced.parameters == b.parameters + (b.trainable_parameters if t.method == "lora" else 0)
    assert b.tensor_peak_bytes == pytest.approx(traced.peak_bytes, rel=0.05)
