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
* `linear-chunked`: torchtune LinearCrossEntropyLoss (torchtune/modules/loss/cross_entropy_loss.py, torchtune >= 0.6,
  the loss of its current recipes' configs; num_output_chunks=8): the model returns the final hidden states
  (skip_output_layer) and the loss splits them along the sequence, keeps each chunk's labelled positions
  (`hidden_chunk[mask_chunk]`: an index copy, and mask.nonzero()'s int64 [n, 2] pairs, saved by the index's
  backward), projects them and upcasts the chunk's logits to fp32. Every chunk's fp32 log_softmax output and int64
  targets are saved, as `chunked`; no chunk's 16-bit logits outlive its own cross-entropy, and each chunk's
  projection backward runs right after its loss backward (its node is newer than the previous chunk's loss), so no
  logit gradients pile up. Counted with every position labelled (an upper bound when prompts are masked).
* `fused-linear`: Liger LigerFusedLinearCrossEntropyFunction
  (liger_kernel/ops/fused_linear_cross_entropy.py fused_linear_cross_entropy_forward, accum_dtype
  None) never materializes the logits: per chunk of next_pow2(ceil(BT / ceil(V / H))) tokens it
  computes the logits, writes their gradient in place, and accumulates grad_input (BT × H) and
  grad_weight (V × H, the head's gradient, allocated in forward) which it saves for backward.
* `cut`: Apple Cut Cross-Entropy (cut_cross_entropy/cce.py LinearCrossEntropyFunction, shift=1,
  filter_eps "auto"): forward keeps the fp32 log-sum-exp per token, the int64 valid-token indices and
  an fp32 per-vocab logit average; backward allocates the hidden-state gradient (BT × H) and the head's
  gradient (cce_backward.py cce_backward_kernel, 16-bit accumulation by default).

`liger-cross-entropy` (Liger's LigerCrossEntropyFunction on the full logits, patched in as nn.functional.cross_entropy)
keeps transformers' head and ForCausalLMLoss's fp32 upcast, so it is not here: memory/activations.py
head_activations gives its transients, memory/__init__.py its head-backward moment.

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
    "chunked-compiled": "torchtune modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss with "
                        "compute_cross_entropy compiled (training/_compile.py compile_loss; memory/compiled.py)",
    "linear-chunked": "torchtune modules/loss/cross_entropy_loss.py LinearCrossEntropyLoss (skip_output_layer)",
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
    "chunked-compiled": ("lm_head input + every chunk's 16-bit logits, fp32 max and log-sum-exp",
                         "nothing beyond them (the upcast fused into the compiled kernel)",
                         "one chunk's 16-bit logit gradient (one fused kernel)",
                         "head backward: waiting 16-bit logit gradients, 3 head-sized weight gradients, chunk input "
                         "grads"),
    "linear-chunked": ("every chunk's fp32 log_softmax output + int64 targets and nonzero() pairs (+ the "
                       "projected hidden states when the head trains)",
                       "the final hidden states + one chunk's 16-bit logits and fp32 upcast",
                       "one chunk's nll_loss and log_softmax fp32 gradients",
                       "head backward: the chunks' remaining saved sets, head-sized weight gradients, chunk input "
                       "grads waiting for tensor_split"),
    "fused-linear": ("grad_input (BT × H), computed in forward",
                     "one logits chunk + its grad_input product + fp32 loss_1d + target mask",
                     "none (backward hands back grad_input and grad_weight)", ""),
    "cut": ("hidden states e + fp32 lse + int64 valids per token, fp32 logit_avg per vocab entry",
            "nonzero()'s int64 index pairs", "de zeros (BT × H) + argsort of logit_avg", ""),
    "trl": ("gathered completion hidden states + int64 targets + fp32 log_z and entropy",
            "last hidden states + the [4096, 32768] tile buffer + seven fp32 statistics per token",
            "fp32 gradients of the hidden states and the head weight + the tile buffer",
            "head backward: the hidden-state gradient scattered back to [rows, S, H]"),
}


def compiled_chunk_saved(vocab: int, compute: int) -> int:
    """Bytes per token torchtune's compiled compute_cross_entropy saves (memory/compiled.py): the chunk's 16-bit
    logits, its fp32 max and log-sum-exp, the int64 labels (eager: the fp32 log-softmax and the labels)."""
    return compute * vocab + 4 + 4 + 8


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
               weight: int = 0, compiled: bool = False) -> LossBytes:
    """Bytes of `loss` (not `hf`) for `tokens` = batch × seq tokens; `head_grad`: the head's gradient bytes.

    `compiled` (chunked only): torchtune's compile_loss compiles compute_cross_entropy (memory/compiled.py).

    `trl` also reads `labelled` (the scored tokens), `residual` and `weight` (bytes per element of the last
    hidden states and of the head weight): `trl_head_bytes`.
    """
    c, v, h = compute, vocab, hidden
    if loss == "reward":  # memory/reward.py: the reward model's score head
        return score_head_bytes(tokens=tokens, hidden=h, compute=c, residual=residual)
    if loss == "trl":
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
        if compiled:
            # The compiled chunk saves its 16-bit logits, fp32 max and log-sum-exp and labels (compiled.py, measured:
            # benchmarks/compiled_saved.py) and fuses the upcast: nothing else in forward; its backward writes the
            # chunk's 16-bit gradient in one kernel. The head's backward is the eager one (the logits' gradients
            # waiting, the per-chunk weight gradients).
            saved = (c * h if head_trainable else 0) * tokens + compiled_chunk_saved(v, c) * tokens
            return LossBytes(saved, 0, c * v * chunk_tokens, head_bwd, False)
        return LossBytes(saved, c * v * tokens + upcast, 8 * v * chunk_tokens, head_bwd, False)
    if loss == "linear-chunked":
        n = min(chunks, seq)
        chunk_tokens = batch * ceil_div(seq, n)
        copy = c * h if head_trainable else 0  # the projection saves its input only to give the head a gradient
        per_token = 4 * v + 16 + 8 + copy  # fp32 log_softmax output, nonzero() pairs, int64 targets
        saved = per_token * tokens
        # Forward, at the last chunk: the final hidden states (the model's output, alive through the loss), the
        # chunk's index copy (saved when the head trains), its 16-bit logits and their fp32 upcast.
        fwd = c * h * tokens + (0 if head_trainable else c * h * chunk_tokens) + (c + 4) * v * chunk_tokens
        # Backward, head: the first chunk's projection backward runs with the other chunks' saved sets still alive
        # and one head-sized weight gradient; the second's with one chunk fewer and two gradients plus their
        # out-of-place sum; each with the chunk's input gradient and the index backward's zeros; at the end, every
        # chunk's input gradient waits for tensor_split's backward, then their cat.
        g = head_grad if head_trainable else 0
        first = per_token * (tokens - chunk_tokens) + g
        second = per_token * max(tokens - 2 * chunk_tokens, 0) + 3 * g if n >= 2 else 0
        head_bwd = max(max(first, second) + 2 * c * h * chunk_tokens, 2 * c * h * tokens + head_grad)
        return LossBytes(saved, fwd, 8 * v * chunk_tokens, head_bwd, False)
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


# TRL's fused LM head (trl/trainer/utils.py add_fused_lm_head; memory/preference.py describes the DPO step).
TOKEN_CHUNK = 4096  # trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE: tokens per projection tile
VOCAB_CHUNK = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE: the tile's width, whatever the vocabulary


def trl_head_bytes(*, tokens: int, labelled: int, vocab: int, hidden: int, compute: int, residual: int,
                   weight: int, head_grad: int, head_trainable: bool) -> LossBytes:
    """TRL's fused LM head (ChunkedLogProbFunction) over `tokens` positions of which `labelled` are scored.

    `residual`: bytes of the last hidden states (fp32 under autocast); `weight`: bytes of the head weight;
    `head_grad`: the head's gradient bytes (in `gradients`), present after its backward.
    """
    n, h, v, c = labelled, hidden, vocab, compute
    mm = min(n, TOKEN_CHUNK) * VOCAB_CHUNK * c  # mm_buf, in the compute (autocast) dtype
    # `.to(compute_dtype)` copies under autocast: one token chunk of hidden states, one vocabulary chunk of weights.
    casts = (min(n, TOKEN_CHUNK) * h * c if residual != c else 0) + (min(v, VOCAB_CHUNK) * h * c if weight != c else 0)
    # Saved: the gathered hidden states, the int64 targets, log_z and entropy (fp32); the bool label mask
    # (1 B per position) is saved by the gather and by masked_scatter.
    saved = residual * n * h + 8 * n + 4 * n + 4 * n + tokens
    # Forward: the last hidden states (the gather's source) and the seven fp32 statistics, the tile buffer,
    # then log_z, log-probs, entropy, mean logits, is_top1 and their temporaries (~6 fp32 vectors).
    forward = residual * tokens * h + 28 * n + mm + casts + 24 * n
    # Backward of the head: fp32 grad_hidden (N × H), fp32 grad_weight (V × H) when the head trains, the tile
    # buffer, the gathered log-prob gradient, then the casts back (none when already fp32).
    grad_weight = (4 * v * h + (weight * v * h if weight != 4 else 0)) if head_trainable else 0
    backward = 4 * n * h + grad_weight + mm + casts + 4 * n + (residual * n * h if residual != 4 else 0)
    # After it: the hidden-state gradient scattered back (index_put into zeros of [rows, S - 1, H]) and the
    # slice's backward (zeros of [rows, S, H]), with the head's gradient now in `gradients`.
    head_backward = 2 * residual * tokens * h + head_grad
    return LossBytes(saved, forward, backward, head_backward, False)


def score_head_bytes(*, tokens: int, hidden: int, compute: int, residual: int) -> LossBytes:
    """The score head over `tokens` positions (beyond the final norm's saved tensors)."""
    c, h = compute, hidden
    # score saves its input (the last hidden states in the compute dtype: autocast's cast when they are fp32).
    saved = c * h * tokens
    # Forward: the fp32 last hidden states next to their cast, the [2B, S, 1] scores, and the last-token search
    # (input_ids != pad as int32, times arange as int64).
    forward = (residual * h * tokens if residual != c else 0) + c * tokens + 12 * tokens
    # Backward: the scores' gradient (zeros with the gathered entries) and the score's input gradient
    # (and its fp32 cast back under autocast).
    backward = c * tokens + c * h * tokens + (residual * h * tokens if residual != c else 0)
    return LossBytes(saved, forward, backward, 0, False)
