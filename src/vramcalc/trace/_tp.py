"""One rank of transformers' tensor parallelism (--tp-layout hf), emulated on fake tensors in one process.

Emulated, not run: torch.distributed's DTensor needs an initialised process group and a device mesh, which the
fake-tensor tracer does not have, so the rank is built with the shapes the plan gives it (memory/hf_tp.py rank_view:
heads and the MLP width divided by tp; embeddings, norms and hidden states whole) and the collectives' buffers are
re-created from reading transformers 5.24 distributed/tensor_parallel.py and torch 2.13 distributed/tensor:
- RowwiseParallel (o_proj, down_proj): the local matmul's output is a Partial DTensor redistributed to Replicate,
  funcol all_reduce, out of place: a second full-size output, the partial one freed after (`_AllReduced`).
- embed_tokens "embedding_rowwise" (`_ShardedEmbedding`): a vocabulary slice, the masked lookup all-reduced.
- lm_head "colwise_gather_output": the local logits' slice Shard(-1) -> Replicate: placement_types.py
  Shard._to_replicate_tensor -> funcol.all_gather_single, all_gather_into_tensor into (tp x rows, ..., V / tp), then
  torch.cat of its chunks along the last dimension (_maybe_view_chunk_cat: no view for a sequence longer than one).
  Its backward takes this rank's slice of the logits' gradient (`_GatheredHead`).
Not emulated: the all-reduce of a colwise layer's input gradient in backward (a transient of one hidden state).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TP: list[int] = [1]  # the tensor-parallel degree while one hf rank is traced (trace/_run.py)


class _Gather(torch.autograd.Function):
    """all_gather of the last dimension's slices: the gathered buffer, then the concatenated copy."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, tp: int) -> torch.Tensor:
        ctx.tp = tp
        gathered = torch.cat([local] * tp, dim=0)  # all_gather_into_tensor: (tp x rows, ..., V / tp)
        return torch.cat(gathered.chunk(tp, dim=0), dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Replicate -> Shard(-1) of the gradient: this rank's slice (Replicate._split_tensor: a contiguous chunk)
        return grad.chunk(ctx.tp, dim=-1)[0].contiguous(), None


class _GatheredHead(nn.Module):
    """lm_head under "colwise_gather_output": a (V / tp) x hidden weight, the full-vocabulary logits out."""

    def __init__(self, head: nn.Linear, tp: int) -> None:
        super().__init__()
        self.tp = tp
        rows = -(-head.out_features // tp)
        self.weight = nn.Parameter(torch.empty((rows, head.in_features), dtype=head.weight.dtype,
                                               device=head.weight.device), requires_grad=head.weight.requires_grad)
        self.in_features, self.out_features = head.in_features, head.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Gather.apply(nn.functional.linear(x, self.weight), self.tp)  # type: ignore[no-any-return]


class _ShardedEmbedding(nn.Module):
    """embed_tokens under "embedding_rowwise" (EmbeddingParallel(shard_dim=0), added to every plan by
    distributed/mixin.py init_parallel_plans): a ceil(V / tp) x hidden weight; torch's MaskPartial
    (distributed/tensor/_ops/_mask_buffer.py, _embedding_ops.py) masks the ids outside the slice, looks up, zeroes the
    masked rows; the partial lookups are all-reduced out of place."""

    def __init__(self, emb: nn.Embedding, tp: int) -> None:
        super().__init__()
        rows = -(-emb.num_embeddings // tp)
        self.weight = nn.Parameter(torch.empty((rows, emb.embedding_dim), dtype=emb.weight.dtype,
                                               device=emb.weight.device), requires_grad=emb.weight.requires_grad)
        self.num_embeddings, self.embedding_dim, self.padding_idx = rows, emb.embedding_dim, None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids >= self.num_embeddings  # rank 0's slice: ids below its row count
        out = nn.functional.embedding(ids.masked_fill(mask, 0), self.weight)
        out[mask] = 0.0
        return out.clone()  # Partial -> Replicate: funcol all_reduce


def _all_reduced(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.clone()  # funcol all_reduce: a new full-size tensor; the partial sum is freed after it


def emulate(hf: nn.Module, tp: int) -> list[str]:
    """Give the meta-device model of rank_view its plan's collectives: the gathered head, the rowwise all-reduces."""
    rowwise = 0
    for name, mod in hf.named_modules():
        if name.rsplit(".", 1)[-1] in ("o_proj", "down_proj") and isinstance(mod, nn.Linear):
            mod.register_forward_hook(_all_reduced)
            rowwise += 1
    emb = hf.get_input_embeddings()
    assert isinstance(emb, nn.Embedding)
    hf.set_input_embeddings(_ShardedEmbedding(emb, tp))
    head = hf.get_output_embeddings()
    assert isinstance(head, nn.Linear) and head.bias is None
    hf.set_output_embeddings(_GatheredHead(head, tp))
    return [f"tensor parallel {tp} (transformers tp_plan): one rank emulated on its shapes (heads and MLP / tp), "
            f"{rowwise} rowwise all-reduces out of place, embed_tokens a vocabulary slice, lm_head one with its logits "
            "all-gathered (trace/_tp.py)"]
