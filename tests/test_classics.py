"""The course texts' classics (issue 15): torchvision's ResNet family and the word_language_model LSTM.

Parameter counts against torchvision's published `num_params` and against torch's own modules; the tracer's
plain-PyTorch builders against the core's counts; the step's arithmetic on hand-derived terms; the tracer against
the estimate on small cases; what is refused, in one line, exit 2.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.convnet import blk
from vramcalc.core.memory.rnn import reserve_bytes
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

# torchvision/models/resnet.py, the "num_params" of each model's IMAGENET1K_V1 weights metadata (read from
# pytorch/vision's resnet.py; torchvision does not install beside this torch, so the count cannot be run here).
TORCHVISION_NUM_PARAMS = {
    "resnet-18": 11_689_512, "resnet-34": 21_797_672, "resnet-50": 25_557_032, "resnet-101": 44_549_160,
    "resnet-152": 60_192_808, "resnext50-32x4d": 25_028_904, "wide-resnet50-2": 68_883_240,
}
LSTMS = ("lstm-lm-200", "lstm-lm-200-tied", "lstm-lm-650", "lstm-lm-650-tied")


@pytest.mark.parametrize("name", sorted(TORCHVISION_NUM_PARAMS))
def test_resnet_count_is_torchvisions(name: str) -> None:
    assert count_params(presets.find_model(name)) == TORCHVISION_NUM_PARAMS[name]


def test_num_classes_changes_only_fc() -> None:
    # fc = Linear(2048, classes): (2048 + 1) parameters per class less (1000 -> 10)
    m = presets.find_model("resnet-50")
    assert count_params(replace(m, num_classes=10)) == 25_557_032 - 990 * 2049


@pytest.mark.parametrize("name", [*sorted(TORCHVISION_NUM_PARAMS), *LSTMS])
def test_tracer_builder_matches_the_core_count(name: str) -> None:
    pytest.importorskip("torch")
    from vramcalc.trace._classic import build

    m = presets.find_model(name)
    module = build(m, TrainingSpec(num_classes=m.num_classes or 1000))
    assert sum(p.numel() for p in module.parameters()) == count_params(m)


@pytest.mark.parametrize(("vocab", "emb", "hidden", "layers", "tied"),
                         [(100, 16, 16, 1, False), (100, 16, 16, 3, True), (50, 8, 24, 2, False)])
def test_lstm_count_is_torchs(vocab: int, emb: int, hidden: int, layers: int, tied: bool) -> None:
    torch = pytest.importorskip("torch")
    with torch.device("meta"):  # word_language_model RNNModel's modules, straight from torch.nn
        enc, rnn = torch.nn.Embedding(vocab, emb), torch.nn.LSTM(emb, hidden, layers)
        dec = torch.nn.Linear(hidden, vocab)
    if tied:
        dec.weight = enc.weight
    unique = {id(p): p for mod in (enc, rnn, dec) for p in mod.parameters()}
    m = ModelSpec(name="t", source="test", family="lstm", vocab_size=vocab, rnn_input_size=emb, hidden_size=hidden,
                  num_layers=layers, tie_word_embeddings=tied)
    assert count_params(m) == sum(p.numel() for p in unique.values())


def test_resnet50_fp32_adamw_states_are_16_bytes_per_parameter() -> None:
    # fp32 weights 4 + fp32 grads 4 + AdamW's two fp32 moments 8 (seed 002: "roughly 8 bytes per trainable
    # parameter"), each tensor one allocation rounded to 512 bytes (as CUDA's caching allocator counts)
    b = estimate(presets.find_model("resnet-50"), TrainingSpec(precision="fp32"))
    assert 16 * 25_557_032 <= b.weights + b.gradients + b.optimizer_state < 16 * 25_557_032 * 1.01
    assert b.trainable_parameters == 25_557_032


def test_lstm_logits_terms_are_derived() -> None:
    # log_softmax's fp32 output saved for nll_loss: 4 B x tokens x vocab = 4 x (20 x 35) x 33,278 (the head's saved
    # set also holds the output dropout's mask and output, 1 + 4 B x tokens x hidden, and the int64 targets)
    m, t = presets.find_model("lstm-lm-200"), TrainingSpec(batch_size=20, seq_len=35)
    b = estimate(m, t)
    n = 20 * 35
    head = b.details["activations.decoder (dropout, linear, log_softmax, nll)"]
    assert head == blk(4 * n * 33_278) + blk(n * 200) + blk(4 * n * 200) + blk(8 * n)
    # cuDNN's reserve: 6 x hidden values per layer and token (approximate, said in a note) + 1 inter-layer mask
    assert reserve_bytes(m, n, 20, 4) == blk(4 * 6 * 2 * n * 200 + n * 200)
    assert any("reserve space is approximated" in note for note in b.notes)


@pytest.mark.parametrize("name", ["resnet-18", "resnet-50", "lstm-lm-200-tied"])
def test_peak_grows_with_batch(name: str) -> None:
    m = presets.find_model(name)
    peaks = [estimate(m, TrainingSpec(batch_size=b)).peak_bytes for b in (1, 2, 8, 32)]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_amp_saves_activations_for_resnet() -> None:
    m = presets.find_model("resnet-50")
    fp32 = estimate(m, TrainingSpec(precision="fp32", batch_size=16))
    amp = estimate(m, TrainingSpec(precision="amp-bf16", batch_size=16))
    assert amp.activations < fp32.activations and amp.weights == fp32.weights


# Tracer against the estimate on small cases (benchmarks/accuracy.py --grid classics runs 34 larger ones):
# within the project's targets, never under by more than 2 %.
@pytest.mark.parametrize(("name", "kw"), [
    ("resnet-18", {"batch_size": 2, "image_size": 64, "precision": "fp32"}),
    ("resnet-50", {"batch_size": 2, "image_size": 64, "precision": "amp-bf16", "optimizer": "sgd"}),
    ("lstm-lm-200-tied", {"batch_size": 4, "seq_len": 16, "optimizer": "sgd-momentum"}),
], ids=["resnet18-fp32", "resnet50-amp", "lstm-tied"])
def test_estimate_against_trace(name: str, kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    from vramcalc.trace import trace

    m, t = presets.find_model(name), TrainingSpec(**kw)  # type: ignore[arg-type]
    err = estimate(m, t).tensor_peak_bytes / trace(m, t).peak_bytes - 1
    assert -0.02 <= err <= 0.05


def test_a_bad_resnet_spec_is_one_error() -> None:
    with pytest.raises(SpecError, match="four stage block counts"):
        ModelSpec(name="r", source="test", family="resnet", conv_blocks=(3, 4, 6))
    with pytest.raises(SpecError, match="tied weights need rnn_input_size"):
        ModelSpec(name="l", source="test", family="lstm", vocab_size=10, rnn_input_size=8, hidden_size=16,
                  num_layers=1, tie_word_embeddings=True)


def test_unmodelled_options_raise() -> None:
    with pytest.raises(UnsupportedCombination, match="--grad-checkpointing: not modelled"):
        estimate(presets.find_model("resnet-18"), TrainingSpec(grad_checkpointing=True))


@pytest.mark.parametrize(("argv", "message"), [
    (["estimate", "resnet-50", "--method", "lora"],
     "error: --method lora is not modelled for resnet-50 (a ResNet): use --method full"),
    (["estimate", "resnet-50", "--mode", "serve"],
     "error: --mode serve is modelled for transformers; resnet-50 is a ResNet: estimate a training step "
     "(--mode train)"),
    (["estimate", "resnet-50", "--grad-checkpointing"],
     "error: --grad-checkpointing: not modelled for resnet-50 (a ResNet); drop it"),
    (["estimate", "resnet-50", "--seq-len", "128"],
     "error: --seq-len: not modelled for resnet-50 (a ResNet); drop it"),
    (["estimate", "lstm", "--image-size", "64"],
     "error: --image-size: not modelled for lstm-lm-200 (an LSTM language model); drop it"),
    (["estimate", "lstm", "--precision", "amp-bf16"],
     "error: --precision amp-bf16 is not modelled for lstm-lm-200 (an LSTM language model): use fp32"),
    (["estimate", "gpt2", "--image-size", "300"],
     "error: --image-size sizes a ResNet's input and classifier; this model has neither: drop them"),
])
def test_refusals_are_one_line_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(argv, capsys)
    assert code == 2
    assert err.strip() == message
    assert "Traceback" not in out + err


def test_cli_json_for_a_resnet(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, err = invoke(["estimate", "resnet-50", "--batch-size", "8", "--image-size", "160", "--num-classes",
                             "10", "--precision", "amp-bf16", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parameters"] == 25_557_032 - 990 * 2049  # fc of 10 classes (test_num_classes_changes_only_fc)
    assert doc["settings"]["image_size"] == 160 and doc["settings"]["precision"] == "amp-bf16"
    assert "seq_len" not in doc["settings"]


# Invariants over the classics' own options (hypothesis, the project's derandomized profile in conftest.py).
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RESNETS = sorted(TORCHVISION_NUM_PARAMS)


@given(name=st.sampled_from(RESNETS), batch=st.integers(1, 64), size=st.integers(32, 512),
       precision=st.sampled_from(["fp32", "amp-bf16", "amp-fp16"]),
       optimizer=st.sampled_from(["adamw", "sgd", "sgd-momentum"]), accum=st.integers(1, 4))
def test_resnet_peak_grows_with_batch_and_image_and_components_add_up(
        name: str, batch: int, size: int, precision: str, optimizer: str, accum: int) -> None:
    m = presets.find_model(name)
    t = TrainingSpec(batch_size=batch, image_size=size, precision=precision,  # type: ignore[arg-type]
                     optimizer=optimizer, grad_accum=accum)  # type: ignore[arg-type]
    b = estimate(m, t)
    # every component alive at once bounds the peak (plus, under AMP, the fp32 input images: alive through the
    # forward as the step's input, not saved by autograd)
    assert b.tensor_peak_bytes <= b.sum_bytes - b.overhead + blk(4 * 3 * size * size * batch)
    assert estimate(m, replace(t, batch_size=batch + 1)).peak_bytes >= b.peak_bytes
    assert estimate(m, replace(t, image_size=size + 32)).peak_bytes >= b.peak_bytes
    assert b.weights >= 4 * b.parameters and b.gradients >= 4 * b.trainable_parameters


@given(name=st.sampled_from(LSTMS), batch=st.integers(1, 64), seq=st.integers(1, 256),
       optimizer=st.sampled_from(["adamw", "sgd", "sgd-momentum"]))
def test_lstm_peak_grows_with_batch_and_sequence(name: str, batch: int, seq: int, optimizer: str) -> None:
    m = presets.find_model(name)
    t = TrainingSpec(batch_size=batch, seq_len=seq, optimizer=optimizer)  # type: ignore[arg-type]
    b = estimate(m, t)
    assert estimate(m, replace(t, batch_size=batch + 1)).peak_bytes >= b.peak_bytes
    assert estimate(m, replace(t, seq_len=seq + 1)).peak_bytes >= b.peak_bytes
