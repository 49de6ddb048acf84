"""The loss savers (`--loss`): what each way of computing the LM loss keeps on the GPU, in bytes.

`hf` is transformers' ForCausalLMLoss (memory/activations.py head_activations, unchanged here). The
others replace the LM head and the loss, from the final norm's output on:

* `chunked`: torchtune TransformerDecoder.chunked_output (torchtune/modules/transformer.py) runs the
  output projection per sequence chunk, and CEWithChunkedOutputLoss
  (torchtune/modules/loss/ce_chunked_output_loss.py, num_output_chunks=8) upcasts each chunk to fp32 for
  cross-entropy. Every chunk's fp32 log_softmax output is saved (4 B × vocab per token, as hf); what
  shrinks is the fp32 upcast in forward (one chunk) and the two fp32 gradients at the start of
  backward (one chunk). The 16-bit logits of all chunks are alive while the loss runs, and the
  engine runs every chunk's loss backward before the first chunk's projection backward (higher
  sequence numbers first), so the 16-bit logit gradients of the chunks pile up; the per-chunk head
  weight gradients are summed out of place in the engine's InputBuffer (three head-sized tensors).
* `fused-linear`: Liger LigerFusedLinearCrossEntropyFunction
  (liger_kernel/ops/fused_linear_cross_entropy.py fused_linear_cross_entropy_forward, accum_dtype
  None) never materializes the logits: per chunk of next_pow2(ceil(BT / ceil(V / H))) tokens it
  computes the logits, writes their gradient in place, and accumulates grad_input (BT × H) and
  grad_weight (V × H, the head's gradient, allocated in forward) which it saves for backward.
* `cut`: Apple Cut Cross-Entropy (cut_cross_entropy/cce.py LinearCrossEntropyFunction, shift=1,
  filter_eps "auto"): forward keeps the fp32 log-sum-exp per token, the int64 valid-token indices and
  an fp32 per-vocab logit average; backward allocates the hidden-state gradient (BT × H) and the head's
  gradient (cce_backward.py cce_backward_kernel, 16-bit accumulation by default).

Verified against `vramcalc trace --loss ...` (trace/_loss.py runs torchtune's algorithm and emulates the
Liger and CCE kernels' allocations).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramcalc.core.units import ceil_div

SOURCES: dict[str, str] = {
    "hf": "transformers loss_utils.py ForCausalLMLoss: logits.float(), log_softmax (saved), nll_loss",
    "chunked": "torchtune modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss + "
               "modules/transformer.py chunked_output",
    "fused-linear": "liger_kernel/ops/fused_linear_cross_entropy.py fused_linear_cross_entropy_forward",
    "cut": "cut_cross_entropy/cce.py LinearCrossEntropyFunction + cce_backward.py cce_backward_kernel",
    "trl": "trl/trainer/utils.py add_fused_lm_head + trl/kernels/chunked_logprob.py ChunkedLogProbFunction",
}


# What `vramcalc explain` calls each part: (saved, forward transient, backward transient, head backward).
LABELS: dict[str, tuple[str, str, str, str]] = {
    "chunked": ("lm_head input + every chunk's fp32 log_softmax output",
                "all chunks' 16-bit logits + one chunk's fp32 upcast",
                "one chunk's nll_loss and log_softmax fp32 gradients",
                "head backward: waiting 16-bit logit gradients, 3 head-sized weight gradients, chunk input grads"),
    "fused-linear": ("grad_input (BT × H), computed in forward",
                     "one logits chunk + its grad_input product + fp32 loss_1d + target mask",
                     "none (backward hands back grad_input and grad_weight)", ""),
    "cut": ("hidden states e + fp32 lse + int64 valids per token, fp32 logit_avg per vocab entry",
            "nonzero()'s int64 index pairs", "de zeros (BT × H) + argsort of logit_avg", ""),
}


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


@dataclass(frozen=True, slots=True)
class LossBytes:
    """Bytes of one loss saver for a given token count (beyond the final norm's saved tensors)."""

    saved: int  # alive from the loss until backward reaches the head
    forward: int  # transient while the loss runs in forward (beyond `saved`)
    backward_start: int  # transient at the start of backward (beyond `saved`)
    head_backward: int  # transient while the head's backward runs (after the loss's saved tensors are freed)
    head_grad_in_forward: bool  # the head's gradient is allocated in forward (Liger)


def loss_bytes(loss: str, *, tokens: int, batch: int, seq: int, chunks: int, vocab: int, hidden: int,
               compute: int, head_grad: int, head_trainable: bool, labelled: int = 0, residual: int = 0,
               weight: int = 0) -> LossBytes:
    """Bytes of `loss` (not `hf`) for `tokens` = batch × seq tokens; `head_grad`: the head's gradient bytes.

    `trl` also reads `labelled` (the scored tokens), `residual` and `weight` (bytes per element of the last
    hidden states and of the head weight): memory/preference.py trl_head_bytes.
    """
    c, v, h = compute, vocab, hidden
    if loss == "trl":
        from vramcalc.core.memory.preference import trl_head_bytes

        return trl_head_bytes(tokens=tokens, labelled=labelled, vocab=v, hidden=h, compute=c, residual=residual,
                              weight=weight, head_grad=head_grad, head_trainable=head_trainable)
    if loss == "chunked":
        # tensor_split along the sequence: the largest chunk has ceil(seq / chunks) positions.
        n = min(chunks, seq)
        chunk_tokens = batch * ceil_div(seq, n)
        upcast = 4 * v * chunk_tokens if c != 4 else 0  # .float() of one chunk (a no-op in fp32)
        saved = (c * h if head_trainable else 0) * tokens + 4 * v * tokens
        # Backward, head: the chunks' 16-bit logit gradients still waiting, the head weight gradients of
        # two chunks and their out-of-place sum, and two chunks' input gradients (held for tensor_split).
        # The head's input (saved by every chunk's projection) is alive until the last chunk is done.
        head_input = c * h * tokens if head_trainable else 0
        if n >= 2:
            waiting = c * v * tokens * (n - 2) // n
            head_bwd = head_input + waiting + 3 * head_grad + 2 * c * h * chunk_tokens
        else:
            head_bwd = head_input + c * v * tokens + head_grad + c * h * tokens
        return LossBytes(saved, c * v * tokens + upcast, 8 * v * chunk_tokens, head_bwd, False)
    if loss == "fused-linear":
        chunk = min(_next_pow2(ceil_div(tokens, ceil_div(v, h))), tokens)
        # grad_input (input dtype) is saved whether or not the head trains; loss_1d fp32 and the target
        # mask (1 B) live through the loop next to one logits chunk and its grad_input product.
        saved = c * h * tokens
        fwd = c * chunk * v + c * chunk * h + 4 * tokens + tokens
        return LossBytes(saved, fwd, 0, 0, head_trainable)
    if loss == "cut":
        # e (the hidden states) saved; lse fp32 and valids int64 per predicted token; logit_avg fp32 per vocab.
        predicted = batch * max(seq - 1, 1)
        saved = c * h * tokens + 12 * predicted + 4 * v
        fwd = 16 * predicted  # nonzero()'s int64 index pairs while valids is built
        # Backward: de zeros (BT × H); the head's gradient is the usual one at the start of backward;
        # argsort of logit_avg (int64 then int32) and the lock tables are small.
        bwd = c * h * tokens + 12 * v
        return LossBytes(saved, fwd, bwd, 0, False)
    raise ValueError(f"unknown loss {loss!r}")
