"""Encoders with task heads (issue 15): BERT, RoBERTa / XLM-R, DistilBERT (memory/encoder.py); seq-cls,
token-cls and mlm heads.

Parameter counts per head against transformers' own, the head's saved tensors and loss term by term, what
the run options refuse, and (where torch is installed) the estimate against the tracer on a small BERT.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import encoder, estimate
from vramcalc.core.params import count_params, inventory
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

ENCODER_PRESETS = ("bert-base-uncased", "bert-large-uncased", "roberta-base", "roberta-large", "xlm-roberta-base",
                   "xlm-roberta-large", "distilbert-base-uncased")

# sum(p.numel()) of AutoModelForSequenceClassification (2 labels), AutoModelForMaskedLM and
# AutoModelForTokenClassification (2 labels) built from each preset's config (trace.hf_config_dict) on the meta
# device, transformers 5.24 (the first is also the preset's published_parameters).
LIBRARY = {
    "bert-base-uncased": (109_483_778, 109_514_298, 108_893_186),
    "bert-large-uncased": (335_143_938, 335_174_458, 334_094_338),
    "roberta-base": (124_647_170, 124_697_433, 124_056_578),
    "roberta-large": (355_361_794, 355_412_057, 354_312_194),
    "xlm-roberta-base": (278_045_186, 278_295_186, 277_454_594),
    "xlm-roberta-large": (559_892_482, 560_142_482, 558_842_882),
    "distilbert-base-uncased": (66_955_010, 66_985_530, 66_364_418),
}
# The rounded totals of each paper (the bare encoder, without a head): BERT arXiv:1810.04805 §3 (110M, 340M);
# RoBERTa, fairseq README (125M, 355M); XLM-R arXiv:1911.02116 Table 7 (270M, 550M); DistilBERT arXiv:1910.01108
# (66M). XLM-R's 270M is the furthest from the exact count (278.0M, 2.9 %).
PAPER = {"bert-base-uncased": 110e6, "bert-large-uncased": 340e6, "roberta-base": 125e6, "roberta-large": 355e6,
         "xlm-roberta-base": 270e6, "xlm-roberta-large": 550e6, "distilbert-base-uncased": 66e6}


def _spec(name: str) -> ModelSpec:
    spec = presets.find_model(name)
    assert isinstance(spec, ModelSpec)
    return spec


@pytest.mark.parametrize("name", ENCODER_PRESETS)
def test_counts_per_head_match_the_library(name: str) -> None:
    m = _spec(name)
    cls, mlm, token = LIBRARY[name]
    assert count_params(encoder.for_run(m, TrainingSpec())) == cls
    assert count_params(encoder.for_run(m, TrainingSpec(head="mlm"))) == mlm
    assert count_params(encoder.for_run(m, TrainingSpec(head="token-cls"))) == token


@pytest.mark.parametrize("name", ENCODER_PRESETS)
def test_the_bare_encoder_is_the_papers_rounded_total(name: str) -> None:
    bare = sum(t.numel for t in inventory(_spec(name)) if t.name not in ("pooler", "pooler.bias", "classifier",
                                                                          "classifier.bias"))
    assert bare == pytest.approx(PAPER[name], rel=0.03)


def test_num_labels_widens_only_the_classifier() -> None:
    # Linear(hidden, num_labels) with bias: (768 + 1) parameters per label more.
    m = _spec("bert-base-uncased")
    two, five = (count_params(encoder.for_run(m, TrainingSpec(num_labels=n))) for n in (2, 5))
    assert five - two == 3 * (768 + 1)


def test_mlm_head_saves_the_vocab_wide_log_softmax() -> None:
    # bf16, full fine-tuning: transform dense input, GELU input, LayerNorm input (2 B x hidden + 8 B mean/rstd),
    # the decoder's input (2 B x hidden each), and CrossEntropyLoss's bf16 log_softmax output (2 B x vocab):
    # BertForMaskedLM passes the bf16 logits to CrossEntropyLoss without an fp32 upcast.
    m = _spec("bert-base-uncased")
    t = TrainingSpec(head="mlm", batch_size=4, seq_len=128)
    b = estimate(m, t)
    tokens = 4 * 128
    assert b.details["activations.head_and_loss"] == tokens * (4 * 2 * 768 + 8 + 2 * 30522)
    # the loss's transients: the bf16 logits in forward; nll_loss's and log_softmax's bf16 gradients in backward
    assert b.details["temporaries.loss_forward"] == tokens * 2 * 30522
    assert b.details["temporaries.loss_backward"] == tokens * 2 * 2 * 30522


def test_classifier_keeps_only_the_pooled_view() -> None:
    # BertPooler's dense saves hidden_states[:, 0], a view that keeps the last hidden state (2 B x hidden per token);
    # RoBERTa's classification head drops out the first token first, a new batch x hidden tensor: nothing per token.
    t = TrainingSpec(batch_size=4, seq_len=128)
    assert estimate(_spec("bert-base-uncased"), t).details["activations.head_and_loss"] == 4 * 128 * 2 * 768
    assert estimate(_spec("roberta-base"), t).details["activations.head_and_loss"] == 0
    assert estimate(_spec("roberta-base"), t).details["temporaries.loss_forward"] == 0


def test_lora_trains_a_copy_of_the_classifier() -> None:
    # peft SEQ_CLS: modules_to_save = classifier; RoBERTa's classifier is its whole head (dense 768 x 768 + bias,
    # out_proj 2 x 768 + bias); BERT's is the Linear(768, 2). LoRA on query and value: 12 layers x 2 x 16 x (768 + 768).
    lora = 12 * 2 * 16 * (768 + 768)
    t = TrainingSpec(method="lora")
    assert estimate(_spec("bert-base-uncased"), t).trainable_parameters == lora + 2 * 768 + 2
    assert estimate(_spec("roberta-base"), t).trainable_parameters == lora + 768 * 768 + 768 + 2 * 768 + 2
    # the masked LM has no task type in peft: adapters only
    assert estimate(_spec("roberta-base"), replace(t, head="mlm")).trainable_parameters == lora


def test_lora_targets_use_the_encoder_names() -> None:
    # peft's default for BERT is query, value: the same as --lora-targets query,value.
    m = _spec("bert-base-uncased")
    auto = estimate(m, TrainingSpec(method="lora"))
    named = estimate(m, TrainingSpec(method="lora", lora_targets=("query", "value")))
    assert auto.trainable_parameters == named.trainable_parameters
    assert auto.tensor_peak_bytes == named.tensor_peak_bytes


def test_a_classifier_gets_its_embedding_gradients_last() -> None:
    # Full fine-tuning of a classifier: the embedding tables' gradients (word, position, token type, their
    # LayerNorm) are written after the bottom layer's backward, so that moment holds the others only.
    m = _spec("bert-base-uncased")
    b = estimate(m, TrainingSpec(batch_size=8, seq_len=128, grad_checkpointing=True))
    bottom = next(x for x in b.named_moments() if x.key == "backward.bottom")
    embeddings = (30522 + 512 + 2) * 768 + 2 * 768
    assert bottom.component("gradients") == b.gradients - 2 * embeddings
    mlm = estimate(m, TrainingSpec(batch_size=8, seq_len=128, grad_checkpointing=True, head="mlm"))
    bottom = next(x for x in mlm.named_moments() if x.key == "backward.bottom")
    assert bottom.component("gradients") == mlm.gradients  # the tied decoder's gradient exists from the start


@pytest.mark.parametrize(("training", "message"), [
    ({"mode": "inference"}, "is an encoder: --mode inference"),
    ({"method": "ia3"}, "--method ia3 is not modelled for encoders"),
    ({"objective": "dpo"}, "drop them"),
    ({"loss": "chunked"}, "drop them"),
])
def test_encoder_refuses_what_it_does_not_model(training: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedCombination, match=message):
        estimate(_spec("bert-base-uncased"), TrainingSpec(**training))  # type: ignore[arg-type]


def test_head_options_on_a_causal_lm_are_refused() -> None:
    with pytest.raises(UnsupportedCombination, match="is a causal LM: drop them"):
        estimate(_spec("mistral-7b"), TrainingSpec(head="mlm"))
    with pytest.raises(UnsupportedCombination, match="is a causal LM: drop them"):
        estimate(_spec("mistral-7b"), TrainingSpec(num_labels=3))


def test_num_labels_with_mlm_is_refused() -> None:
    with pytest.raises(SpecError, match="--num-labels 3 sizes a sequence classifier"):
        TrainingSpec(head="mlm", num_labels=3)
    TrainingSpec(head="token-cls", num_labels=3)  # the token classifier's width


def test_cli_one_line_errors_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "mistral-7b", "--head", "mlm"], capsys)
    assert code == 2
    assert err.strip() == ("error: --head and --num-labels choose an encoder's task head (bert, roberta, "
                           "xlm-roberta, distilbert, modernbert, deberta-v2); mistral-7b is a causal LM: drop them")
    assert "Traceback" not in out + err
    code, out, err = invoke(["estimate", "bert-base-uncased", "--head", "mlm", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parameters"] == LIBRARY["bert-base-uncased"][1]
    assert any("masked LM" in n for n in doc["notes"])


def test_token_cls_head_saves_per_token_labels() -> None:
    # bf16, full fine-tuning, --head token-cls (BertForTokenClassification: dropout 0.1, then Linear(768, 9)):
    # native_dropout's bool mask (1 B x hidden), the classifier's input (2 B x hidden), and CrossEntropyLoss's bf16
    # log_softmax output over the 9 labels (2 B x 9) per token; no pooler.
    m = _spec("bert-base-uncased")
    t = TrainingSpec(head="token-cls", num_labels=9, batch_size=4, seq_len=128)
    b = estimate(m, t)
    tokens = 4 * 128
    assert b.details["activations.head_and_loss"] == tokens * (768 + 2 * 768 + 2 * 9)
    # the loss's transients: the bf16 logits in forward; nll_loss's and log_softmax's bf16 gradients in backward
    assert b.details["temporaries.loss_forward"] == tokens * 2 * 9
    assert b.details["temporaries.loss_backward"] == tokens * 2 * 2 * 9


def test_token_cls_lora_trains_a_copy_of_the_classifier_only() -> None:
    # peft TOKEN_CLS: modules_to_save = classifier, the Linear(768, num_labels) in every family (no pooler, no
    # RobertaClassificationHead, no DistilBERT pre_classifier). LoRA on query and value: 12 layers x 2 x 16 x
    # (768 + 768); DistilBERT has 6 layers.
    lora = 12 * 2 * 16 * (768 + 768)
    t = TrainingSpec(method="lora", head="token-cls", num_labels=9)
    for name, layers in (("bert-base-uncased", 12), ("roberta-base", 12), ("distilbert-base-uncased", 6)):
        assert estimate(_spec(name), t).trainable_parameters == lora * layers // 12 + 9 * 768 + 9


def test_token_cls_all_linear_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # peft 0.21 leaves the classifier out of all-linear for SEQ_CLS only: under TOKEN_CLS get_peft_model raises
    # TypeError (modules_to_save cannot be applied to a LoRA Linear), found by the tracer.
    code, out, err = invoke(["estimate", "bert-base-uncased", "--head", "token-cls", "--method", "lora",
                             "--lora-targets", "all-linear"], capsys)
    assert code == 2
    assert err.startswith("error: --lora-targets all-linear with --head token-cls fails in peft")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_sequence_beyond_the_position_table_is_refused() -> None:
    with pytest.raises(SpecError, match="exceeds bert-base-uncased's 512 learned position embeddings"):
        estimate(_spec("bert-base-uncased"), TrainingSpec(seq_len=1024))


@pytest.mark.parametrize("run", [
    {"batch_size": 2, "seq_len": 64},
    {"batch_size": 2, "seq_len": 64, "head": "mlm", "grad_checkpointing": True},
    {"batch_size": 2, "seq_len": 64, "method": "lora"},
    {"batch_size": 2, "seq_len": 64, "method": "lora", "head": "mlm", "attention": "eager"},
    {"batch_size": 2, "seq_len": 64, "head": "token-cls", "num_labels": 9},
    {"batch_size": 2, "seq_len": 64, "method": "lora", "head": "token-cls", "grad_checkpointing": True},
], ids=["full-cls", "full-mlm-ckpt", "lora-cls", "lora-mlm-eager", "full-token", "lora-token-ckpt"])
def test_estimate_is_within_5_percent_of_the_trace(run: dict[str, object]) -> None:
    # The tracer builds the Auto class of the head (AutoModelForSequenceClassification / AutoModelForMaskedLM /
    # AutoModelForTokenClassification) from
    # a 2-layer BERT's config on fake tensors; benchmarks/results/accuracy_encoders.md has the full-size grid.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = replace(_spec("bert-base-uncased"), num_layers=2)
    t = TrainingSpec(**run)  # type: ignore[arg-type]
    est = estimate(m, t).tensor_peak_bytes
    traced = trace(encoder.for_run(m, t), t)
    assert traced.parameters == count_params(encoder.for_run(m, t)) + (
        estimate(m, t).trainable_parameters if t.method == "lora" else 0)
    assert est == pytest.approx(traced.peak_bytes, rel=0.05)


# --- ModernBERT (modeling_modernbert.py) ---------------------------------------------------------------------------
def test_modernbert_sliding_layers_save_their_mask() -> None:
    # modernbert-base, bf16 sdpa, batch 1 x seq 512: the 14 sliding layers run the memory-efficient kernel with the
    # 4-D mask, each saving its 16-bit copy (2 B x 512 x 512); the bool mask (1 B x 512 x 512) is built once, beside
    # the local RoPE table (cos and sin, 2 x 2 B x head_dim 64 per token). Against the same model with every layer
    # global (no mask at all).
    m = _spec("modernbert-base")
    t = TrainingSpec(batch_size=1, seq_len=512)
    local, flat = estimate(m, t).details, estimate(replace(m, sliding_window_layers=0), t).details
    assert local["activations.layers"] - flat["activations.layers"] == 14 * 2 * 512 * 512
    assert local["activations.shared"] - flat["activations.shared"] == 512 * 512 + 2 * 2 * 64 * 512


def test_modernbert_lora_trains_only_the_classifier_copy() -> None:
    # peft SEQ_CLS / TOKEN_CLS: modules_to_save matches `classifier` (Linear(768, 2) + bias), not ModernBERT's
    # prediction `head`; LoRA r=16 on Wqkv (768 -> 3 x 768) in 22 layers.
    lora = 22 * 16 * (768 + 3 * 768)
    for head in ("seq-cls", "token-cls"):
        t = TrainingSpec(method="lora", head=head)  # type: ignore[arg-type]
        assert estimate(_spec("modernbert-base"), t).trainable_parameters == lora + 2 * 768 + 2


def test_modernbert_mlm_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "modernbert-base", "--head", "mlm"], capsys)
    assert code == 2
    assert err.strip() == ("error: --head mlm is not modelled for ModernBERT (modernbert-base): use --head seq-cls "
                           "or token-cls")


@pytest.mark.parametrize("run", [
    {"batch_size": 2, "seq_len": 256, "head": "token-cls"},
    {"batch_size": 2, "seq_len": 256, "method": "lora", "grad_checkpointing": True},
    {"batch_size": 2, "seq_len": 256, "attention": "eager"},
], ids=["full-token", "lora-cls-ckpt", "full-eager"])
def test_modernbert_estimate_is_within_5_percent_of_the_trace(run: dict[str, object]) -> None:
    # A 3-layer modernbert-base (layer 0 global, layers 1 and 2 sliding) built by the tracer from its config on fake
    # tensors; benchmarks/results/accuracy_encoders2.md has the full-size grid.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = replace(_spec("modernbert-base"), num_layers=3, sliding_window_layers=2)
    t = TrainingSpec(**run)  # type: ignore[arg-type]
    traced = trace(encoder.for_run(m, t), t)
    assert traced.parameters == count_params(encoder.for_run(m, t)) + (
        estimate(m, t).trainable_parameters if t.method == "lora" else 0)
    assert estimate(m, t).tensor_peak_bytes == pytest.approx(traced.peak_bytes, rel=0.05)
