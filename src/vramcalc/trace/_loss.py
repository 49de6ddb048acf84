"""The loss savers of `--loss`, run on the traced model (memory/loss.py models the same allocations).

* `chunked`: torchtune's algorithm in plain PyTorch, run as is: the final hidden states are split into
  `loss_chunks` pieces along the sequence, the output projection runs per piece
  (torchtune/modules/transformer.py TransformerDecoder.chunked_output), and the loss upcasts each
  piece to fp32 before cross-entropy (torchtune/modules/loss/ce_chunked_output_loss.py
  CEWithChunkedOutputLoss, reduction "sum" per chunk, divided by the token count).
* `linear-chunked`: torchtune's LinearCrossEntropyLoss in plain PyTorch, run as is but for the boolean-mask
  indexing (its nonzero() pairs are allocated at the size the all-labelled trace batch gives): the model returns
  the final hidden states (skip_output_layer), the loss splits them into `loss_chunks` pieces, keeps the labelled
  positions of each, projects them and upcasts the piece's logits to fp32 for cross-entropy
  (torchtune/modules/loss/cross_entropy_loss.py LinearCrossEntropyLoss, num_output_chunks=8).
* `fused-linear`: Liger's LigerFusedLinearCrossEntropyFunction is Triton; `_FusedLinearCE` allocates
  what liger_kernel/ops/fused_linear_cross_entropy.py fused_linear_cross_entropy_forward allocates
  (grad_input and grad_weight zeros, the fp32 loss_1d, one logits chunk of
  next_pow2(ceil(BT / ceil(V / H))) rows at a time, the chunk's grad_input product) and saves
  grad_input and grad_weight for backward, which only hands them back.
* `cut`: Apple's LinearCrossEntropyFunction is Triton; `_CutCE` allocates what
  cut_cross_entropy/cce.py and cce_backward.py allocate (fp32 lse and logit_avg, the int64 valid
  indices, the fp32 neg_dot; in backward the argsort of logit_avg, the de and dc zeros and their locks).
* `liger-cross-entropy`: Liger's LigerCrossEntropyFunction is Triton; the model runs as is (its lm_head and
  transformers' ForCausalLMLoss, logits.float() included) with nn.functional.cross_entropy replaced, as
  liger_kernel/transformers/monkey_patch.py (and axolotl's liger_cross_entropy) replace it, by `_LigerCE`, which
  allocates what liger_kernel/ops/cross_entropy.py cross_entropy_forward allocates (the fp32 loss_1d, the target
  mask and target * mask) and saves its input, into which the kernel writes the gradient: backward hands it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _FusedLinearCE(torch.autograd.Function):
    """Liger fused linear cross-entropy, memory only: the gradients are computed in forward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bt, h = x.shape
        v = weight.shape[0]
        chunk = min(_next_pow2(_cdiv(bt, _cdiv(v, h))), bt)
        grad_input = torch.zeros_like(x)
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        loss_1d = torch.zeros(bt, dtype=torch.float32, device=x.device)
        mask = target != IGNORE_INDEX  # total_n_non_ignore = target_mask.sum().item()
        del mask
        for start in range(0, bt, chunk):
            end = min(start + chunk, bt)
            logits = x[start:end] @ weight.t()  # the kernel writes the logits' gradient in place
            grad_input[start:end] = logits @ weight
            if grad_weight is not None:
                torch.addmm(grad_weight, logits.t(), x[start:end], out=grad_weight)
            del logits
        loss = loss_1d.sum()
        ctx.save_for_backward(grad_input, grad_weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_input, grad_weight = ctx.saved_tensors
        return grad_input, grad_weight, None  # element_mul_kernel scales in place when grad_out != 1


class _CutCE(torch.autograd.Function):
    """Apple Cut Cross-Entropy (shift=1, filter_eps "auto", bf16 accumulation), memory only."""

    @staticmethod
    def forward(ctx: Any, e: torch.Tensor, c: torch.Tensor, n_valid: int) -> torch.Tensor:
        dev = e.device
        # utils._build_flat_valids: (targets != ignore).nonzero() (int64 pairs), .to(int32), .sum(1) (int64)
        pairs = torch.empty((n_valid, 2), dtype=torch.int64, device=dev)
        pairs32 = pairs.to(torch.int32)
        del pairs
        valids = pairs32.sum(1)
        del pairs32
        lse = torch.empty(n_valid, dtype=torch.float32, device=dev)  # cce_lse_forward_kernel
        logit_avg = torch.empty(c.shape[0], dtype=torch.float32, device=dev)  # return_logit_avg (filtering)
        neg_dot = torch.empty(n_valid, dtype=torch.float32, device=dev)  # indexed_neg_dot_forward_kernel
        loss = neg_dot.add_(lse).mean()
        del neg_dot
        ctx.save_for_backward(e, c, lse, valids, logit_avg)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        e, c, lse, valids, logit_avg = ctx.saved_tensors
        order = torch.argsort(logit_avg).to(torch.int32)  # sort_logit_avg
        de = torch.zeros_like(e) if ctx.needs_input_grad[0] else None
        dc = torch.zeros_like(c) if ctx.needs_input_grad[1] else None
        nd = _cdiv(c.shape[1], 64)
        locks_e = torch.zeros((_cdiv(lse.shape[0], 128), nd), dtype=torch.int32, device=e.device)
        locks_c = torch.zeros((_cdiv(c.shape[0], 128), nd), dtype=torch.int32, device=e.device)
        del order, locks_e, locks_c
        return de, dc, None


class _LigerCE(torch.autograd.Function):
    """Liger cross-entropy (ops/cross_entropy.py @ead96b61), memory only: the gradient is written into the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        loss_1d = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # unreduced loss, the input's dtype
        target_mask = target != ignore_index  # n_non_ignore = target_mask.sum().item()
        bounds = target * target_mask  # the bound asserts' (target * target_mask).max() / .min()
        del bounds, target_mask
        # liger_cross_entropy_kernel: the loss per row into loss_1d, the logits' gradient in place into x
        loss = torch.sum(loss_1d)
        del loss_1d
        ctx.save_for_backward(x.detach())  # the input, now holding its own gradient
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        one = torch.ones((), dtype=grad_out.dtype, device=grad_out.device)  # torch.equal(grad_output, 1.0)
        del one
        return x, None, None  # element_mul_kernel scales it in place when grad_out != 1


def _liger_cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: Any = None, size_average: Any = None,  # noqa: A002
                         ignore_index: int = IGNORE_INDEX, reduce: Any = None, reduction: str = "mean",
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """liger_kernel/transformers/functional.py liger_cross_entropy, with torch's cross_entropy signature."""
    return _LigerCE.apply(input, target, ignore_index)  # type: ignore[no-any-return,no-untyped-call]


def _parts(m: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder body (ending with the final norm) and the output projection of an HF causal LM."""
    hf: Any = m
    if hasattr(m, "get_base_model"):  # peft
        hf = m.get_base_model()  # type: ignore[operator]
    return hf.base_model, hf.get_output_embeddings()


def loss_function(loss: str, chunks: int) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """`loss_fn(model, inputs)` computing the `loss` saver's loss (the model's outputs are not kept)."""

    def hidden(m: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, nn.Module]:
        body, head = _parts(m)
        return body(input_ids=inputs["input_ids"], use_cache=False).last_hidden_state, head

    def shifted(labels: torch.Tensor) -> torch.Tensor:
        # transformers ForCausalLMLoss / LigerForCausalLMLoss: pad with ignore_index, drop the first column
        return nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].contiguous()

    def chunked(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        h, head = hidden(m, inputs)
        logits = [head(piece) for piece in h.tensor_split(chunks, dim=1)]
        del h
        labels = shifted(inputs["labels"])
        total = labels.numel()
        out: torch.Tensor | float = 0.0
        for piece, target in zip(logits, labels.tensor_split(chunks, dim=1), strict=True):
            out = out + nn.functional.cross_entropy(piece.reshape(-1, piece.shape[-1]).float(), target.reshape(-1),
                                                    ignore_index=IGNORE_INDEX, reduction="sum")
        del logits
        assert isinstance(out, torch.Tensor)
        return out / total

    def linear_chunked(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        # torchtune LinearCrossEntropyLoss.forward / compute_cross_entropy, as written, but for the boolean-mask
        # indexing: `x[mask]` runs mask.nonzero() (an int64 [n, 2] whose columns index x, saved by the index's
        # backward), whose size depends on the data fake tensors do not have; every position but the last of a
        # row is labelled here (the labels are the inputs, shifted), so n is known and the pairs are allocated.
        h, head = hidden(m, inputs)
        labels = shifted(inputs["labels"])
        total = (labels != IGNORE_INDEX).sum()
        out: torch.Tensor | float = 0.0
        pieces = h.tensor_split(chunks, dim=1)
        targets = labels.tensor_split(chunks, dim=1)
        for i, (piece, target) in enumerate(zip(pieces, targets, strict=True)):
            rows, width = target.shape
            n = rows * (width - 1 if i == len(pieces) - 1 else width)
            keep = target != IGNORE_INDEX  # mask_chunk
            pairs = torch.empty((n, 2), dtype=torch.int64, device=h.device)  # keep.nonzero()
            del keep
            picked = piece[pairs[:, 0], pairs[:, 1]]  # hidden_chunk[mask_chunk]: [n, H]
            goal = target[pairs[:, 0], pairs[:, 1]]  # target_chunk[mask_chunk]: [n]
            del pairs
            logits = head(picked)  # self.linear_projection(hidden_chunk)
            del picked
            out = out + nn.functional.cross_entropy(logits.float(), goal, reduction="sum", ignore_index=IGNORE_INDEX)
            del logits, goal
        del pieces, h
        assert isinstance(out, torch.Tensor)
        return out / total

    def fused_linear(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        h, head = hidden(m, inputs)
        labels = shifted(inputs["labels"]).view(-1)
        return _FusedLinearCE.apply(h.view(-1, h.shape[-1]), head.weight, labels)  # type: ignore[no-any-return,no-untyped-call]

    def cut(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        h, head = hidden(m, inputs)
        b, s = inputs["labels"].shape
        return _CutCE.apply(h.contiguous().flatten(0, -2), head.weight, b * (s - 1))  # type: ignore[no-any-return,no-untyped-call]

    def liger_cross_entropy(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        # the whole model with its loss (HF Trainer's compute_loss keeps only the loss), Liger's function patched in
        original = nn.functional.cross_entropy
        nn.functional.cross_entropy = _liger_cross_entropy  # type: ignore[assignment]
        try:
            return m(**inputs, use_cache=False).loss  # type: ignore[no-any-return]
        finally:
            nn.functional.cross_entropy = original

    return {"chunked": chunked, "linear-chunked": linear_chunked, "fused-linear": fused_linear, "cut": cut,
            "liger-cross-entropy": liger_cross_entropy}[loss]
