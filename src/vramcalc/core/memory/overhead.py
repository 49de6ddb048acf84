"""Runtime overhead: what a GPU holds beyond torch's live tensors. Pure integer arithmetic, stdlib only.

Three figures of one step, from the smallest up:
- tensor peak: `torch.cuda.max_memory_allocated` (the rest of `memory`);
- reserved peak: `torch.cuda.max_memory_reserved`, the caching allocator's segments: the tensor peak
  plus the cuBLAS workspace (allocated from the caching allocator), the unused tails of the last
  segments and the fragmentation of freed blocks that cannot be reused for the next request;
- device peak (what nvidia-smi shows, and what must fit the GPU): the reserved peak plus the CUDA
  context (driver, kernels, cuBLAS/cuDNN handles), and NCCL's buffers when more than one GPU talks.

Calibration (issue #16, benchmarks/published.py): the fragmentation fraction is fitted on the four
high-reliability torchtune LoRA tutorial readings of `max_memory_reserved` (Llama-2-7B, batch 2,
dynamic padding to <= 512 tokens, rank 8/64, q,v/all linears: reserved / tensor peak 1.097-1.108);
every other reading is held out, and all are reported (docs/real-gpu.md).
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 2**10
MIB = 2**20

# CUDA context with lazy module loading (CUDA_MODULE_LOADING=LAZY, the default since torch 1.13 on
# CUDA >= 11.7): driver state, the kernels actually used, cuBLAS/cuDNN handles; ~500 MiB measured on
# A100/H100 with torch 2.x (the constant vramcalc has used since issue #1; PyTorch "CUDA semantics"
# notes, memory management). Not in max_memory_reserved; in nvidia-smi.
CUDA_CONTEXT_BYTES = 500 * MIB
# Without lazy loading (torch < 1.13 or CUDA < 11.7) every kernel image is loaded at init: the
# transformers docs measured 1343 MiB for `torch.ones((1, 1)).to("cuda")` on a V100 (2022,
# docs/source/en/perf_train_gpu_one.md, "Memory utilization"; the hf-perf-bertlarge-load reading).
CUDA_CONTEXT_EAGER_BYTES = 1343 * MIB

# cuBLAS workspace per handle/stream: torch's default CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8" = two
# 4096 KiB chunks + eight 16 KiB chunks (aten/src/ATen/cuda/CublasHandlePool.cpp,
# getChosenWorkspaceSize), from the caching allocator, so it is inside max_memory_reserved.
CUBLAS_WORKSPACE_BYTES = 2 * 4096 * KIB + 8 * 16 * KIB
# Hopper (sm_90) gets ":4096:8", 32 MiB (same file: the default is raised for compute capability 9).
CUBLAS_WORKSPACE_HOPPER_BYTES = 8 * 4096 * KIB

# The caching allocator (c10/cuda/CUDACachingAllocator.cpp): requests <= 1 MiB (kSmallSize) come
# from 2 MiB segments (kSmallBuffer); 1-10 MiB requests from 20 MiB segments (kLargeBuffer); larger
# ones are rounded up to 2 MiB (kRoundLarge). At the peak the last small and the last large segment
# are partly used: at most one of each is slack.
SMALL_SEGMENT_BYTES = 2 * MIB
LARGE_SEGMENT_BYTES = 20 * MIB
SEGMENT_SLACK_BYTES = SMALL_SEGMENT_BYTES + LARGE_SEGMENT_BYTES

# Fragmentation: freed blocks that the next request cannot reuse (a block is split, never merged
# across segments), as a fraction of the tensor peak. Fitted: median of (reserved − tensor peak −
# cuBLAS workspace − segment slack) / tensor peak over the four torchtune LoRA tutorial readings
# (tutorials/lora_finetune.rst, Apr 2024: 0.0944, 0.0967, 0.1014, 0.1057 -> median 0.099), in permille.
# Those runs pad each batch to its longest sample, so the fraction is that of variable lengths,
# the common case; a fixed-length (packed) run fragments less, which the data cannot yet separate.
FRAGMENTATION_PERMILLE = 99

# NCCL's own buffers (cudaMalloc'd by NCCL, outside the caching allocator: in nvidia-smi, not in
# max_memory_reserved): NCCL_BUFFSIZE (4 MiB default, NCCL environment-variable docs) per channel for
# each ring neighbour it sends to and receives from; NCCL_MIN_NCHANNELS/NCCL_MAX_NCHANNELS pick the
# channel count by topology, 16 taken here for NVLink/PCIe single-node rings. Not calibrated: no
# expressible multi-GPU nvidia-smi reading exists yet.
NCCL_BUFFSIZE_BYTES = 4 * MIB
NCCL_CHANNELS = 16
NCCL_RING_PEERS = 2  # a ring has a send and a receive neighbour (connections, not distinct GPUs)


@dataclass(frozen=True, slots=True)
class Overhead:
    """The runtime overhead of one step, per source, in bytes."""

    cuda_context: int
    cublas_workspace: int
    nccl_buffers: int
    allocator_reserve: int  # segment slack + fragmentation

    @property
    def reserved_extra(self) -> int:
        """What max_memory_reserved adds to max_memory_allocated."""
        return self.cublas_workspace + self.allocator_reserve

    @property
    def total(self) -> int:
        """What nvidia-smi adds to max_memory_allocated: the whole overhead."""
        return self.cuda_context + self.cublas_workspace + self.nccl_buffers + self.allocator_reserve

    def details(self) -> dict[str, int]:
        """`overhead.*` entries for Breakdown.details."""
        return {"overhead.cuda_context": self.cuda_context, "overhead.cublas_workspace": self.cublas_workspace,
                "overhead.nccl_buffers": self.nccl_buffers, "overhead.allocator_reserve": self.allocator_reserve}


def nccl_buffer_bytes(world_size: int) -> int:
    """NCCL buffers per GPU: none on one GPU, else buffers per channel for each ring neighbour."""
    if world_size <= 1:
        return 0
    # A ring connection per channel to the send and to the receive neighbour, each with its own buffer,
    # even when both are the same GPU (two GPUs); so per-GPU memory does not grow with the world size.
    return NCCL_BUFFSIZE_BYTES * NCCL_CHANNELS * NCCL_RING_PEERS


def runtime_overhead(tensor_peak_bytes: int, world_size: int = 1, *, hopper: bool = False,
                     lazy_loading: bool = True) -> Overhead:
    """The overhead of a step whose tensor peak is `tensor_peak_bytes`, per GPU of `world_size`."""
    fragmentation = tensor_peak_bytes * FRAGMENTATION_PERMILLE // 1000
    return Overhead(
        cuda_context=CUDA_CONTEXT_BYTES if lazy_loading else CUDA_CONTEXT_EAGER_BYTES,
        cublas_workspace=CUBLAS_WORKSPACE_HOPPER_BYTES if hopper else CUBLAS_WORKSPACE_BYTES,
        nccl_buffers=nccl_buffer_bytes(world_size),
        allocator_reserve=SEGMENT_SLACK_BYTES + fragmentation,
    )


def reserved_peak_bytes(tensor_peak_bytes: int, overhead: Overhead) -> int:
    """max_memory_reserved: the tensor peak plus the allocator's part of the overhead."""
    return tensor_peak_bytes + overhead.reserved_extra


NOTE = ("overhead: CUDA context 500 MiB (lazy loading), cuBLAS workspace, NCCL buffers on several GPUs, and the "
        f"caching allocator's segment slack + {FRAGMENTATION_PERMILLE / 10:g} % fragmentation (fitted on published "
        "max_memory_reserved readings); tensor_peak_bytes ~ torch.cuda.max_memory_allocated, "
        "reserved_peak_bytes ~ max_memory_reserved, peak_bytes ~ nvidia-smi.")
