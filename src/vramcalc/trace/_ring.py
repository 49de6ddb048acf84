"""axolotl's batch ring attention on one rank, emulated on fake tensors (context parallelism).

The algorithm of axolotl monkeypatch/ring_attn/batch_ring.py (commit 2ead78b, vendored from
zhuzilin/ring-flash-attention ring_flash_attn.py) as the last rank of a ring of `cp` runs it: under the causal mask it
computes at every step, the busiest rank. Re-written here from reading it, not imported. What a receive allocates is
RingComm.send_recv_kv's torch.empty_like (the NCCL transfer itself is not emulated); what a flash kernel allocates is
the tracer's flash emulation's (trace/_cuda.py _FusedAttention: out and an fp32 log-sum-exp forward; dq/dk/dv written
into the caller's buffers, softmax_d, the fp32 dq accumulator and the GQA expanded dk/dv backward).
update_out_and_lse is ring-flash-attention utils.py (commit 0b90df9), run op by op (unfused) as on the first calls of
its torch.jit.script.
"""

from __future__ import annotations

from typing import Any

import torch

RING: list[int] = [1]  # the ring's size while a context-parallel step is traced (trace/_run.py)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _flash_forward(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """flash_attn _flash_attn_forward on (b, s, h, d) inputs: out like q, softmax_lse (b, h, s) fp32."""
    b, s, h, _ = q.shape
    return torch.empty_like(q), torch.empty((b, h, s), dtype=torch.float32, device=q.device)


def _flash_backward(q: torch.Tensor, k: torch.Tensor) -> None:
    """flash_attn _flash_attn_backward's own temporaries (it writes dq, dk, dv into the caller's buffers)."""
    b, s, h, d = q.shape
    temps = [torch.empty((b, h, _round_up(s, 128)), dtype=torch.float32, device=q.device),
             torch.empty((b, _round_up(s, 128), h, _round_up(d, 32)), dtype=torch.float32, device=q.device)]
    if k.shape[2] != h:  # GQA: dk / dv computed per query head, then summed to the kv heads
        temps += [torch.empty((b, k.shape[1], h, d), dtype=k.dtype, device=k.device) for _ in range(2)]
    del temps


def _update(out: torch.Tensor | None, lse: torch.Tensor | None, block_out: torch.Tensor,
            block_lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ring-flash-attention utils.py update_out_and_lse / _update_out_and_lse."""
    if out is None or lse is None:
        return block_out.to(torch.float32), block_lse.transpose(1, 2).unsqueeze(dim=-1)
    block_out = block_out.to(torch.float32)
    block_lse = block_lse.transpose(1, 2).unsqueeze(dim=-1)
    new_lse = lse + torch.log(1 + torch.exp(block_lse - lse))
    out = torch.exp(lse - new_lse) * out + torch.exp(block_lse - new_lse) * block_out
    return out, new_lse


class RingAttention(torch.autograd.Function):
    """batch_ring.py RingFlashAttnFunc on (b, s, h, d) tensors."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cp = RING[0]
        k, v = k.contiguous(), v.contiguous()
        out: torch.Tensor | None = None
        lse: torch.Tensor | None = None
        cur_k, cur_v = k, v
        for step in range(cp):
            if step + 1 != cp:
                next_k, next_v = torch.empty_like(cur_k), torch.empty_like(cur_v)
            block_out, block_lse = _flash_forward(q, cur_k)
            out, lse = _update(out, lse, block_out, block_lse)
            del block_out, block_lse
            if step + 1 != cp:
                cur_k, cur_v = next_k, next_v
        del cur_k, cur_v
        assert out is not None and lse is not None
        out16 = out.to(q.dtype)
        lse = lse.squeeze(dim=-1).transpose(1, 2)
        del out
        ctx.save_for_backward(q, k, v, out16, lse)
        return out16

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cp = RING[0]
        q, k, v, _out, _lse = ctx.saved_tensors
        dq = dk = dv = None
        next_dk = next_dv = None
        block_dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        block_dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        block_dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        cur_k, cur_v = k, v
        for step in range(cp):
            if step + 1 != cp:
                next_k, next_v = torch.empty_like(cur_k), torch.empty_like(cur_v)
            _flash_backward(q, cur_k)
            if dq is None:
                dq, dk, dv = block_dq.to(torch.float32), block_dk.to(torch.float32), block_dv.to(torch.float32)
            else:
                dq += block_dq
                dk = block_dk + next_dk
                dv = block_dv + next_dv
            if step + 1 != cp:
                cur_k, cur_v = next_k, next_v
            next_dk, next_dv = torch.empty_like(dk), torch.empty_like(dv)
        del cur_k, cur_v, block_dq, block_dk, block_dv
        assert dq is not None and next_dk is not None and next_dv is not None
        return dq.to(q.dtype), next_dk.to(q.dtype), next_dv.to(q.dtype)


def ring_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sdpa's (b, h, s, d) tensors as transformers' flash path hands them to the ring (transpose(1, 2) views); the
    output back in sdpa's layout."""
    out = RingAttention.apply(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return out.transpose(1, 2)  # type: ignore[no-any-return]
