"""An LSTM language model (the course texts' LSTM; pytorch/examples word_language_model/model.py RNNModel):
parameter tensors and, per unit (embedding, the LSTM, the decoder and loss), what autograd saves, in bytes.

RNNModel: encoder Embedding(ntoken, ninp), Dropout, rnn LSTM(ninp, nhid, nlayers, dropout), Dropout, decoder
Linear(nhid, ntoken), log_softmax, NLLLoss; with --tied the decoder's weight is the encoder's (ninp == nhid).
torch.nn.LSTM's layout (torch/nn/modules/rnn.py RNNBase.__init__): per layer weight_ih (4 x hidden, input),
weight_hh (4 x hidden, hidden), bias_ih and bias_hh (4 x hidden each); layer 0's input is ninp, the others' nhid.

On a GPU nn.LSTM runs cuDNN's fused RNN (aten/src/ATen/native/cudnn/RNN.cpp _cudnn_rnn): one op over every layer
and step, whose backward (derivatives.yaml `_cudnn_rnn`) keeps its input, hx, cx, the flat weight buffer (the
module's own flattened parameters), its output and cuDNN's reserve space. The reserve's size is cuDNN's own
(cudnnGetRNNTempSpaceSizes), not published as a formula: it is taken here as what the LSTM backward needs per
layer, step and sequence, the four gate activations, the cell state and the hidden output (6 x hidden values in the
compute dtype), plus the inter-layer dropout masks; an approximation, said in the output. cuDNN's backward workspace
is not counted. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.memory.convnet import Unit, blk
from vramcalc.core.params import lstm_tensors

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec

RESERVE_VALUES_PER_HIDDEN = 6  # i, f, g, o, c_t, h_t per layer, step and sequence (approximate: module docstring)

NOTE = ("LSTM: cuDNN's reserve space is approximated as 6 x hidden values per layer, token and sequence (gates, cell "
        "and hidden states) plus the inter-layer dropout masks; cuDNN publishes no formula for it, and its backward "
        "workspace is not counted.")


def reserve_bytes(m: ModelSpec, tokens: int, batch: int, c: int) -> int:
    """cuDNN's LSTM reserve space (approximate: module docstring)."""
    assert m.hidden_size is not None and m.num_layers is not None
    h, n_layers = m.hidden_size, m.num_layers
    masks = (n_layers - 1) * tokens * h if m.dropout > 0 else 0  # one byte per inter-layer dropout element
    return blk(c * RESERVE_VALUES_PER_HIDDEN * n_layers * tokens * h + masks)


def units(m: ModelSpec, batch: int, seq_len: int, c: int) -> list[Unit]:
    """Embedding (+ dropout), the cuDNN LSTM, the decoder with dropout, log_softmax and NLL (module docstring)."""
    assert m.vocab_size is not None and m.hidden_size is not None and m.num_layers is not None
    v, e, h, n_layers = m.vocab_size, m.rnn_input_size, m.hidden_size, m.num_layers
    n = batch * seq_len
    drop = m.dropout > 0
    tensors = lstm_tensors(m)
    rnn_grads = blk(4 * sum(t.numel for t in tensors if t.module == "rnn"))  # cuDNN's one flat dw buffer
    emb_grad = blk(4 * v * e)
    # Embedding saves the int64 ids; dropout (native_dropout) its bool mask and its output, which the LSTM saves
    # (without dropout the LSTM saves the embedding output itself).
    emb_saved = blk(8 * n) + blk(4 * n * e) + (blk(n * e) if drop else 0)
    # Tied: the decoder's gradient of the shared weight comes first; the embedding's is added to it
    # (AccumulateGrad: grad + new, both alive with the sum). Untied: the embedding's gradient is the .grad.
    emb_unit = Unit("encoder (embedding, dropout)", emb_saved, 0, 0 if m.tie_word_embeddings else emb_grad,
                    0, blk(4 * n * e) + (2 * emb_grad if m.tie_word_embeddings else 0), 0,
                    accum_start=0 if m.tie_word_embeddings else emb_grad)
    state = blk(4 * n_layers * batch * h)
    # _cudnn_rnn keeps hx, cx (zeros from init_hidden), its output and the reserve; its backward allocates dx,
    # dhx, dcx and the flat weight gradient, from the output's gradient.
    lstm_saved = 2 * state + blk(4 * n * h) + reserve_bytes(m, n, batch, c)
    lstm_unit = Unit("rnn (cuDNN LSTM)", lstm_saved, 0, rnn_grads, 0,
                     blk(4 * n * h) + blk(4 * n * e) + 2 * state, blk(4 * n * e), accum_start=rnn_grads)
    logits = blk(4 * n * v)
    # Dropout on the LSTM output (mask + output, saved by the decoder), log_softmax's output (saved by nll_loss)
    # and the int64 targets. Forward: the logits live beside log_softmax's output. Backward: nll_loss's and
    # log_softmax's gradients of the logits' size, then the decoder's input gradient.
    head_saved = (blk(n * h) + blk(4 * n * h) if drop else 0) + logits + blk(8 * n)
    head_grads = blk(4 * v) + blk(4 * v * h)  # the decoder's bias and weight (tied: the shared weight)
    head_unit = Unit("decoder (dropout, linear, log_softmax, nll)", head_saved, 0, head_grads, logits,
                     2 * logits, blk(4 * n * h), accum_end=blk(4 * v * h))
    return [emb_unit, lstm_unit, head_unit]
