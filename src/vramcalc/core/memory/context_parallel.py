"""Context parallelism (axolotl context_parallel_size, formerly sequence_parallel_degree): one rank's step.

How axolotl runs it (axolotl-ai-cloud/axolotl):
- utils/ctx_managers/sequence_parallel.py (commit 09e0cbb) SequenceParallelContextManager: a forward pre-hook on the
  model slices every (batch, seq) input (input_ids, labels, position_ids) with chunk(cp, dim=1)[rank]; for SFT
  gather_outputs is False (src/axolotl/train.py: `gather_outputs=cfg.rl in {GRPO, EBFT}`), so each rank's
  embeddings, layers, logits and loss hold its own seq_len / cp tokens.
- monkeypatch/ring_attn/patch.py (commit 0763f1a) register_ring_attn_from_device_mesh: the "cp" sub-mesh is the
  ring's process group; RingAttnFunc.BATCH_RING (the default without sample packing) replaces transformers'
  _flash_attention_forward (ring_attn/adapters/batch.py); heads_k_stride is passed only to VARLEN_LLAMA3.
- monkeypatch/ring_attn/batch_ring.py (commit 2ead78b, vendored from zhuzilin/ring-flash-attention
  ring_flash_attn.py) RingFlashAttnFunc: saves q, k, v, out and the fp32 log-sum-exp, as flash attention does;
  forward: the K/V block being received (RingComm.send_recv_kv: torch.empty_like) beside the one in use, an fp32
  running output merged per block by update_out_and_lse (ring_flash_attn utils.py, commit 0b90df9: block_out
  upcast, two scaled products and their sum, unfused); backward: dq, dk, dv block buffers in q's dtype, fp32 dq, dk,
  dv accumulators, the K/V block being received and the fp32 dk/dv being passed on (d_kv_comm.send_recv_kv).
  Under the causal mask the last rank of the ring computes at every step: the busiest, the one estimated.
- Parameters, gradients and optimizer states: accelerate parallelism_config.py builds the mesh dp_shard x cp and
  shards FSDP over the joint "dp_shard_cp" dimension (fsdp_dim_names), so CP ranks are sharding ranks; DeepSpeed
  partitions over the world. Both are today's per-GPU rule with --gpus (memory/distributed.py), unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.ring_attention import ring_bytes

__all__ = ["active", "check", "notes", "ring_bytes", "view"]

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = ("axolotl utils/ctx_managers/sequence_parallel.py apply_sequence_parallelism (09e0cbb); "
          "monkeypatch/ring_attn/batch_ring.py RingFlashAttnFunc (2ead78b); ring-flash-attention utils.py "
          "update_out_and_lse (0b90df9)")
METHODS = ("full", "lora", "qlora", "freeze")


def active(t: TrainingSpec) -> bool:
    return getattr(t, "context_parallel", 1) > 1


def view(m: ModelSpec, t: TrainingSpec) -> TrainingSpec:
    """The step one rank runs: seq_len / cp tokens per row (context_parallel kept, for the ring's own terms).
    `t` itself when context parallelism is off."""
    if not active(t):
        return t
    check(m, t)
    return replace(t, seq_len=t.seq_len // t.context_parallel)


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """What the model covers: a decoder-only language model with plain causal attention, axolotl's batch ring."""
    from vramcalc.core.memory import classic, encoder, hybrid, seq2seq, ssm
    from vramcalc.core.memory.activations import eager_only
    from vramcalc.core.memory.distributed import world_size

    cp = t.context_parallel
    flag = f"--context-parallel {cp}"
    if t.mode != "train" or t.objective != "sft":
        raise UnsupportedCombination(f"{flag} is modelled for an SFT training step (--mode train, --objective sft): "
                                     "axolotl gathers the outputs for RL; drop --context-parallel")
    if world_size(t) % cp:
        raise UnsupportedCombination(f"{flag} must divide the GPUs ({world_size(t)}): axolotl requires world_size % "
                                     "context_parallel_size == 0; set --gpus to a multiple of it")
    if t.seq_len % cp:
        raise UnsupportedCombination(f"{flag} must divide --seq-len {t.seq_len} (each rank holds seq_len / cp "
                                     "tokens; axolotl pads the rest): use a multiple of it")
    if t.tp > 1 or t.pp > 1:
        raise UnsupportedCombination(f"{flag} with --tp / --pp is not modelled: drop one of them")
    if t.attention != "flash":
        raise UnsupportedCombination(f"{flag} needs --attention flash: axolotl's ring attention replaces "
                                     "flash_attention_2 (sdpa and eager cannot run the ring)")
    if t.packing != "none":
        raise UnsupportedCombination(f"{flag} with packing runs axolotl's varlen_llama3 ring, which is not modelled: "
                                     "use --packing none (the batch_ring ring)")
    if t.method not in METHODS:
        raise UnsupportedCombination(f"{flag} is modelled with --method {', '.join(METHODS)}: drop --context-parallel "
                                     f"or use one of them")
    if t.kernels != "hf" or t.activation_offload:
        raise UnsupportedCombination(f"{flag} is modelled with the plain transformers kernels: drop --kernels / "
                                     "--activation-offload or --context-parallel")
    if (classic.is_classic(m) or encoder.is_encoder(m) or seq2seq.is_seq2seq(m) or ssm.is_ssm(m)
            or hybrid.is_hybrid(m) or m.vision is not None or not m.has_architecture):
        raise UnsupportedCombination(f"{flag} on {m.name}: modelled for decoder-only language models with causal "
                                     "attention; drop --context-parallel")
    if (eager_only(m) or m.sliding_window or m.attention_kind == "mla" or m.num_experts
            or m.learned_position_embeddings or m.nope_layer_interval):
        raise UnsupportedCombination(f"{flag} on {m.name}: its attention or layers (sliding window, softcapping, "
                                     "ALiBi, sinks, MLA, experts) are not modelled under the ring; drop "
                                     "--context-parallel")


def notes(t: TrainingSpec) -> tuple[str, ...]:
    cp = t.context_parallel
    return (f"context parallelism {cp} (axolotl batch_ring): each GPU runs seq_len / {cp} tokens through every "
            "layer, the logits and the loss, and the busiest rank of the ring (the last: it attends to every block) "
            "holds the ring's K/V blocks, fp32 running output and fp32 dk/dv accumulators per attention call; "
            "model states as for --gpus (FSDP shards over dp_shard x cp). Approximated: NCCL's send/recv buffers "
            "are not counted; the merge is counted unfused (torch.jit.script may fuse it on CUDA).",)
