"""The ring's working set per attention call (axolotl monkeypatch/ring_attn/batch_ring.py, commit 2ead78b; its
merge: ring-flash-attention utils.py update_out_and_lse, commit 0b90df9). Arithmetic only, imported by
memory/activations.py; the rest of context parallelism is memory/context_parallel.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramcalc.core.specs import TrainingSpec


def ring_bytes(t: TrainingSpec, c: int, q_dim: int, kv_dim: int, n_heads: int) -> tuple[int, int]:
    """(forward, backward) working set per local token of one ring attention call on the busiest rank, beyond its
    inputs (q, k, v; and in backward the saved set and the incoming gradient). `c`: q's bytes per element.

    Forward, at a merge with a K/V block in use and the next one in flight (batch_ring.py ring_flash_attn_forward;
    utils.py _update_out_and_lse `out = exp(lse - new_lse) * out + exp(block_lse - new_lse) * block_out`): the K/V
    in use and the K/V being received (the latter from cp >= 3 on), the fp32 running output, the block's output and
    its fp32 upcast, the two scaled products and their sum (5 x 4 B x q_dim), and five fp32 per-head vectors (lse,
    block lse, new lse and the two exponentials).
    Backward (ring_flash_attn_backward), the larger of two moments of a step after the first: inside its flash
    backward, the dq, dk, dv block buffers (c), the fp32 dq, dk, dv, the fp32 dk, dv in flight, the K/V block in use
    and the one being received (cp >= 3), and the kernel's own fp32 dq accumulator and softmax_d (flash_api.cpp),
    with GQA its expanded dk, dv (c x q_dim each); and at the step's end, when d_kv_comm.send_recv_kv allocates the
    next fp32 dk, dv while the ones in flight are still bound (`next_dk, next_dv = ...`): the buffers, fp32 dq, dk, dv,
    both pairs in flight and the K/V block in use.
    """
    cp = t.context_parallel
    next_kv = 2 * c * kv_dim if cp >= 3 else 0
    fwd = 2 * c * kv_dim + next_kv + 5 * 4 * q_dim + c * q_dim + 5 * 4 * n_heads
    held = c * (q_dim + 2 * kv_dim) + 4 * (q_dim + 2 * kv_dim) + 2 * c * kv_dim  # buffers, fp32 dq/dk/dv, K/V in use
    gqa = 2 * c * q_dim if kv_dim != q_dim else 0
    in_kernel = held + 8 * kv_dim + next_kv + 4 * q_dim + 4 * n_heads + gqa
    at_end = held + 16 * kv_dim
    bwd = max(in_kernel, at_end)
    return fwd, bwd
