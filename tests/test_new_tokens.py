"""New tokens (issue 13): --add-tokens / --vocab-multiple, transformers' resize_token_embeddings, and the run-file
keys that resize the vocabulary (axolotl tokens / resize_token_embeddings_to_32x, LLaMA-Factory resize_vocab /
add_tokens / add_special_tokens / new_special_tokens_config)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import VramcalcError
from vramcalc.core.explain import explain
from vramcalc.core.memory import COMPONENTS, estimate
from vramcalc.core.memory.new_tokens import resized_vocab
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# Qwen2.5-0.5B (presets, its config.json): vocab 151,936, hidden 896, tie_word_embeddings true.
# TinyLlama-1.1B: vocab 32,000, hidden 2,048, an untied lm_head.
QWEN_VOCAB, QWEN_H = 151_936, 896
LLAMA_VOCAB, LLAMA_H = 32_000, 2_048


@pytest.fixture(scope="module")
def qwen() -> ModelSpec:
    return presets.find_model("qwen2.5-0.5b")


@pytest.fixture(scope="module")
def tinyllama() -> ModelSpec:
    return presets.find_model("tinyllama-1.1b")


def _run(**kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "full", "precision": "bf16", "batch_size": 1, "seq_len": 256}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_rows_as_transformers_pads_them(qwen: ModelSpec) -> None:
    # modeling_utils.py _get_resized_embeddings: ceil(new / pad_to_multiple_of) x pad_to_multiple_of
    assert resized_vocab(qwen, _run(add_tokens=100)) == QWEN_VOCAB + 100
    assert resized_vocab(qwen, _run(add_tokens=100, vocab_multiple=64)) == 152_064  # 2,376 x 64 >= 152,036
    assert resized_vocab(qwen, _run(vocab_multiple=96)) == 151_968  # 151,936 padded: 1,583 x 96
    assert resized_vocab(qwen, _run(vocab_multiple=128)) == QWEN_VOCAB  # 1,187 x 128 already: no row


def test_tied_and_untied_parameter_counts(qwen: ModelSpec, tinyllama: ModelSpec) -> None:
    # tied: the new rows once (lm_head is the embedding); untied: embed_tokens and lm_head both grow
    plain, more = estimate(qwen, _run()), estimate(qwen, _run(add_tokens=100, vocab_multiple=64))
    assert more.parameters - plain.parameters == 128 * QWEN_H
    plain, more = estimate(tinyllama, _run()), estimate(tinyllama, _run(add_tokens=3, vocab_multiple=32))
    assert more.parameters - plain.parameters == 2 * 32 * LLAMA_H  # 32,032 rows = 1,001 x 32
    # measured with the tracer: sum(p.numel()) after transformers' resize_token_embeddings(151,936 + 100,
    # pad_to_multiple_of=64) on qwen2.5-0.5b, 494,147,456
    assert estimate(qwen, _run(add_tokens=100, vocab_multiple=64)).parameters == 494_147_456


def test_the_run_is_the_resized_models(qwen: ModelSpec, tinyllama: ModelSpec) -> None:
    # resize_token_embeddings sets config.vocab_size to the new rows: every vocabulary-sized term (weights, a full
    # fine-tuning's gradients and states, the logits and the loss) is the resized model's
    for model, kw in ((qwen, {"add_tokens": 100, "vocab_multiple": 64}),
                      (tinyllama, {"add_tokens": 64, "method": "lora", "modules_to_save": ("embed_tokens", "lm_head")}),
                      (tinyllama, {"add_tokens": 16, "method": "lora", "grad_checkpointing": True})):
        run = _run(**kw)
        got = estimate(model, run)
        want = estimate(replace(model, vocab_size=resized_vocab(model, run)),
                        replace(run, add_tokens=0, vocab_multiple=1))
        assert {c: got.component(c) for c in COMPONENTS} == {c: want.component(c) for c in COMPONENTS}
        assert got.phases == want.phases and got.notes[:-1] == want.notes
        assert got.notes[-1].startswith("new tokens: vocabulary resized")


def test_measured_peaks(qwen: ModelSpec, tinyllama: ModelSpec) -> None:
    # the tracer's tensor peaks, transformers' own resize_token_embeddings on fake CUDA tensors
    # (benchmarks/results/accuracy_vocab.json, --grid vocab: the cases' ids in the comments)
    saved = ("embed_tokens", "lm_head")
    cases = (
        (qwen, _run(add_tokens=100), 6_474_429_440),  # "full +100 b1 s256"
        (qwen, _run(method="lora", add_tokens=3, vocab_multiple=32, modules_to_save=saved),
         4_486_421_504),  # "lora +3 x32 save embed,head b1 s256"
        (tinyllama, _run(method="lora", add_tokens=64, modules_to_save=saved, batch_size=2, seq_len=128,
                         grad_checkpointing=True), 3_813_728_256),  # "lora +64 save embed,head b2 s128 gc"
        (tinyllama, _run(method="lora", add_tokens=16), 2_753_939_456),  # "lora +16 frozen rows b1 s256"
    )
    for model, run, traced in cases:
        err = (estimate(model, run).tensor_peak_bytes - traced) / traced
        assert -0.02 < err < 0.01


def test_tied_head_and_embedding_saved_are_two_copies(qwen: ModelSpec) -> None:
    # peft wraps embed_tokens and lm_head each in a ModulesToSaveWrapper and deep-copies each: on a tied model two
    # trainable (151,968 x 896) copies (the tracer's trainable count: 273,408,000 = 2 x 136,163,328 + 1,081,344
    # LoRA q,v parameters)
    run = _run(method="lora", add_tokens=3, vocab_multiple=32, modules_to_save=("embed_tokens", "lm_head"))
    assert estimate(qwen, run).trainable_parameters == 273_408_000 == 2 * 151_968 * QWEN_H + 1_081_344


def test_lora_rows_frozen_without_modules_to_save(tinyllama: ModelSpec) -> None:
    plain, more = estimate(tinyllama, _run(method="lora")), estimate(tinyllama, _run(method="lora", add_tokens=16))
    assert more.trainable_parameters == plain.trainable_parameters  # the rows are not trained
    assert more.weights - plain.weights == 2 * 16 * LLAMA_H * 2  # embed_tokens and lm_head rows, bf16
    assert "the rows frozen (LoRA trains them through --modules-to-save" in more.notes[-1]


def test_explain_shows_the_rows(qwen: ModelSpec, tinyllama: ModelSpec) -> None:
    e = explain(qwen, _run(add_tokens=3, vocab_multiple=32))
    line = e.lines()["parameters.new_token_rows"]
    assert line.value == 32 * QWEN_H and "(3 tokens + 29 padding)" in line.inputs  # 151,968 = 4,749 x 32
    assert e.training.add_tokens == 3 and e.model.vocab_size == 151_968 and e.notes[-1].startswith("new tokens")
    assert explain(tinyllama, _run(add_tokens=8)).lines()["parameters.new_token_rows"].value == 2 * 8 * LLAMA_H


@pytest.mark.parametrize(("model", "kw", "match"), [
    ("bert-base-uncased", {}, "decoder-only causal LMs"),
    ("qwen2.5-0.5b", {"mode": "inference"}, "objective sft"),
    ("qwen2.5-0.5b", {"objective": "dpo"}, "objective sft"),
])
def test_refused_where_not_modelled(model: str, kw: dict[str, object], match: str) -> None:
    with pytest.raises(VramcalcError, match=match):
        estimate(presets.find_model(model), _run(add_tokens=4, **kw))


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "qwen2.5-0.5b", "--add-tokens", "100", "--vocab-multiple", "64",
                           "--precision", "bf16", "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["parameters"] == estimate(presets.find_model("qwen2.5-0.5b"), _run()).parameters + 128 * QWEN_H
    assert any(n.startswith("new tokens: vocabulary resized 151,936 -> 152,064") for n in doc["notes"])
    code, out, _ = invoke(["estimate", "qwen2.5-0.5b", "--add-tokens", "3"], capsys)
    assert code == 0 and "new tokens" in out
    code, out, _ = invoke(["explain", "qwen2.5-0.5b", "--add-tokens", "3"], capsys)
    assert code == 0 and "new token rows" in out
    for bad in (["--add-tokens", "-1"], ["--vocab-multiple", "0"], ["--add-tokens", "4", "--mode", "inference"]):
        code, _, err = invoke(["estimate", "qwen2.5-0.5b", *bad], capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_axolotl_keys(tmp_path: Path) -> None:
    head = "base_model: tinyllama-1.1b\nadapter: lora\nlora_modules_to_save: [embed_tokens, lm_head]\n"
    run = runfiles.load(_file(tmp_path, "ax.yaml", head + "tokens: ['<a>', '<b>', '<c>']\n"
                              "resize_token_embeddings_to_32x: true\nadded_tokens_overrides: {5: '<x>'}\n"))[0]
    assert run.options["add_tokens"] == 3 and run.options["vocab_multiple"] == 32
    assert run.unmodelled == [] and {"tokens", "resize_token_embeddings_to_32x", "added_tokens_overrides"} <= set(
        run.mapped)
    assert any(n.startswith("added_tokens_overrides") for n in run.notes)
    # axolotl check_model_config: new tokens with an adapter need the embedding and head in lora_modules_to_save
    with pytest.raises(VramcalcError, match="lora_modules_to_save"):
        runfiles.load(_file(tmp_path, "bad.yaml", "base_model: tinyllama-1.1b\nadapter: lora\ntokens: ['<a>']\n"))
    full = runfiles.load(_file(tmp_path, "full.yaml", "base_model: tinyllama-1.1b\ntokens: ['<a>']\n"))[0]
    assert full.options["add_tokens"] == 1 and full.options["method"] == "full"


def test_llama_factory_keys(tmp_path: Path) -> None:
    head = "model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: lora\n"
    run = runfiles.load(_file(tmp_path, "lf.yaml", head + "add_tokens: '<a>,<b>'\nadd_special_tokens: '<s1>'\n"))[0]
    # model_args.py splits both on commas; resize_vocab follows; adapter.py: additional_target = embed + head
    assert run.options["add_tokens"] == 3 and run.options["vocab_multiple"] == 64
    assert run.options["modules_to_save"] == "embed_tokens,lm_head" and run.unmodelled == []
    own = runfiles.load(_file(tmp_path, "own.yaml", head + "resize_vocab: true\nadditional_target: lm_head\n"))[0]
    assert own.options["add_tokens"] == 0 and own.options["modules_to_save"] == "lm_head"
    for text, match in (("quantization_bit: 4\nresize_vocab: true\n", "quantized model"),
                        ("new_special_tokens_config: tokens.yaml\n", "--add-tokens N")):
        with pytest.raises(VramcalcError, match=match):
            runfiles.load(_file(tmp_path, "bad.yaml", head + text))
    for key in ("tokens", "added_tokens_overrides", "resize_token_embeddings_to_32x", "resize_vocab", "add_tokens",
                "add_special_tokens", "new_special_tokens_config"):
        assert key not in runfiles.UNMODELLED_KEYS
