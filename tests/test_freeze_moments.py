"""--freeze-layers' backward moments (memory/__init__.py _freeze_bottom_gradient_bytes, _frozen_rerun), derived on
a small Llama and traced (benchmarks/results/accuracy_autocast.md, accuracy_unfrozen.md)."""

from __future__ import annotations

from dataclasses import replace

from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec

# A small Llama: hidden 256, 4 heads of 64, 2 KV heads (kv_dim 128), MLP 704, 4 layers, vocab 1,000, untied.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=1000, hidden_size=256,
                  intermediate_size=704, num_layers=4, num_attention_heads=4, num_kv_heads=2)
FREEZE = TrainingSpec(method="freeze", freeze_layers=2, precision="pure-bf16", attention="flash", batch_size=1,
                      seq_len=256)
# One decoder layer's parameters: q and o 256 x 256, k and v 256 x 128, gate / up / down 3 x 256 x 704, two norms
LINEARS = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704
LAYER = LINEARS + 2 * 256
HEAD = 1000 * 256
TOKENS = 256  # batch 1 x seq 256


def _terms(b: object, key: str) -> dict[str, int]:
    mo = next(m for m in b.named_moments() if m.key == key)  # type: ignore[attr-defined]
    return {x.name: x.bytes for x in mo.terms}


def _keys(b: object) -> set[str]:
    return {m.key for m in b.named_moments()}  # type: ignore[attr-defined]


def test_lowest_trained_layer_holds_the_gradients_above_it_only() -> None:
    b = estimate(SMALL, FREEZE)
    # the 2 trained layers, the head and the final norm, in bf16; the frozen embedding has none
    assert b.gradients == 2 * (2 * LAYER + HEAD + 256)
    # its own are written Linear by Linear through its backward (AccumulateGrad): the layer above's and the head's
    assert _terms(b, "backward.bottom")["gradients"] == b.gradients - 2 * LAYER
    assert _terms(b, "backward.end")["gradients"] == b.gradients
    # autocast-bf16 freeze: the trained parameters and their gradients are fp32
    a = estimate(SMALL, replace(FREEZE, precision="autocast-bf16"))
    assert _terms(a, "backward.bottom")["gradients"] == a.gradients - 4 * LAYER


def test_checkpointing_reruns_the_frozen_layers_with_every_gradient_made() -> None:
    b = estimate(SMALL, replace(FREEZE, grad_checkpointing=True))
    # enable_input_require_grads: every layer keeps its input (4 x 256 tokens x 256 x 2 B) through the forward
    assert _terms(b, "forward.layer")["kept layer inputs"] == 4 * TOKENS * 256 * 2
    rerun = _terms(b, "backward.recompute_frozen")
    assert rerun["gradients"] == b.gradients
    # the 2 frozen layers' inputs, the highest being rerun; pure-bf16 casts nothing
    assert rerun["kept layer inputs"] == 2 * TOKENS * 256 * 2
    assert rerun["its autocast copies"] == 0
    # amp-bf16: the frozen fp32 weights' bf16 casts are saved by the rerun's matmuls (one layer's Linears, 2 B)
    amp = estimate(SMALL, replace(FREEZE, grad_checkpointing=True, precision="amp-bf16"))
    assert _terms(amp, "backward.recompute_frozen")["its autocast copies"] == 2 * LINEARS
    # the lowest trained layer's rerun keeps the frozen layers' inputs below it
    assert _terms(b, "backward.bottom")["recomputed layer"] == _terms(b, "backward.top")["recomputed layer"] \
        + 2 * TOKENS * 256 * 2


def test_nothing_frozen_or_nothing_trained_has_no_frozen_rerun() -> None:
    for n in (0, 4):
        assert "backward.recompute_frozen" not in _keys(estimate(SMALL, replace(FREEZE, freeze_layers=n,
                                                                                   grad_checkpointing=True)))
    # a tied head trains the embedding: the backward runs through the frozen layers, every gradient counted there
    tied = estimate(replace(SMALL, tie_word_embeddings=True), FREEZE)
    assert _terms(tied, "backward.bottom")["gradients"] == tied.gradients


def test_tied_head_with_checkpointing_writes_the_lowest_trained_layer_last() -> None:
    # A tied head (the embedding with it) that trains: with checkpointing the frozen layers are rerun after the lowest
    # trained layer's backward (backward.recompute_frozen / backward.frozen hold every gradient), so at that layer's
    # peak its own gradients are not written yet, as untied (traced: qwen3-0.6b cut to 4 layers, vocab 2,048, 2 frozen,
    # bf16 b2 s1024 with checkpointing, +5.37 % -> +0.38 %, peak in layer 2's backward with layer 3's and the head's)
    tied_m = replace(SMALL, tie_word_embeddings=True)
    b = estimate(tied_m, replace(FREEZE, grad_checkpointing=True))
    # the 2 trained layers, the final norm and the tied head / embedding (1,000 x 256), in bf16
    assert b.gradients == 2 * (2 * LAYER + HEAD + 256)
    assert _terms(b, "backward.bottom")["gradients"] == 2 * (LAYER + HEAD + 256)
    assert _terms(b, "backward.recompute_frozen")["gradients"] == b.gradients
    assert _terms(b, "backward.frozen")["gradients"] == b.gradients
    # without checkpointing the frozen layers' saved graphs are backpropagated below it: every gradient at the bottom
    assert _terms(estimate(tied_m, FREEZE), "backward.bottom")["gradients"] == b.gradients


def test_frozen_layer_backward_holds_every_gradient_and_the_frozen_inputs() -> None:
    # The frozen layer's own backward after its rerun, every trained gradient made: the peak of wide-MLP models
    # (traced: qwen3-8b cut to 4 layers, vocab 2,048, 2 frozen, bf16 b2 s1024 with checkpointing, -3.62 % -> +0.00 %,
    # the trace peak at layer 1's act * up backward, every gradient alive)
    b = estimate(SMALL, replace(FREEZE, grad_checkpointing=True))
    frozen, top = _terms(b, "backward.frozen"), _terms(b, "backward.top")
    assert frozen["gradients"] == b.gradients
    # the 2 frozen layers' inputs (256 tokens x 256 x 2 B each), the highest's being backpropagated
    assert frozen["kept layer inputs"] == 2 * TOKENS * 256 * 2
    # its backward temporaries are a trained layer's; its saved set lacks what only the weights' gradients need
    # (derivatives.yaml mm / mul save an operand only for the other's gradient): per norm the bf16 normalized input
    # (for its weight) and its output (q / k / v's and gate / up's input), and down's input act * up (704 wide); o's
    # input is flash attention's output, saved for the attention's own backward either way. 2 B each per token.
    assert frozen["layer backward temporaries"] == top["layer backward temporaries"]
    assert top["recomputed layer"] - frozen["recomputed layer"] == TOKENS * 2 * (2 * 2 * 256 + 704)
    # the rerun moment holds its set up to the MLP: the backward's holds at least as much
    assert frozen["recomputed layer"] >= _terms(b, "backward.recompute_frozen")["recomputed layer up to its MLP"]
