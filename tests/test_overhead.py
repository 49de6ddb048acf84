"""memory/overhead.py: the runtime overhead model, constant by constant (issue #16)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vramcalc.core.memory import overhead as ov

MIB = 2**20


def test_cublas_workspace_is_torch_default_config() -> None:
    # CUBLAS_WORKSPACE_CONFIG default ":4096:2:16:8" (aten/src/ATen/cuda/CublasHandlePool.cpp):
    # 2 x 4096 KiB + 8 x 16 KiB = 8,519,680 bytes.
    assert ov.CUBLAS_WORKSPACE_BYTES == 8_519_680
    # Hopper default ":4096:8": 8 x 4096 KiB = 32 MiB.
    assert ov.CUBLAS_WORKSPACE_HOPPER_BYTES == 32 * MIB


def test_segment_slack_is_one_small_and_one_large_segment() -> None:
    # kSmallBuffer 2 MiB + kLargeBuffer 20 MiB (c10/cuda/CUDACachingAllocator.cpp).
    assert ov.SEGMENT_SLACK_BYTES == 22 * MIB


@pytest.mark.parametrize(("world_size", "expected"), [
    (1, 0),  # one GPU: no communicator
    (2, 128 * MIB),  # 4 MiB NCCL_BUFFSIZE x 16 channels x 2 ring connections (send and receive)
    (8, 128 * MIB),  # the same however many GPUs: per-GPU memory never grows with the world size
], ids=["1gpu", "2gpus", "8gpus"])
def test_nccl_buffers_by_world_size(world_size: int, expected: int) -> None:
    assert ov.nccl_buffer_bytes(world_size) == expected


def test_overhead_of_a_10_gb_step() -> None:
    # A 10,000,000,000-byte tensor peak on one GPU: context 500 MiB (524,288,000), workspace 8,519,680,
    # reserve 22 MiB (23,068,672) + 9.9 % (990,000,000).
    o = ov.runtime_overhead(10_000_000_000)
    assert o.cuda_context == 524_288_000
    assert o.cublas_workspace == 8_519_680
    assert o.nccl_buffers == 0
    assert o.allocator_reserve == 23_068_672 + 990_000_000
    assert o.total == 524_288_000 + 8_519_680 + 23_068_672 + 990_000_000
    assert ov.reserved_peak_bytes(10_000_000_000, o) == 10_000_000_000 + 8_519_680 + 23_068_672 + 990_000_000


def test_eager_context_and_hopper_workspace() -> None:
    # 1343 MiB: transformers perf_train_gpu_one.md, torch.ones((1,1)).cuda() on a V100 without lazy loading.
    o = ov.runtime_overhead(0, hopper=True, lazy_loading=False)
    assert o.cuda_context == 1343 * MIB
    assert o.cublas_workspace == 32 * MIB
    assert o.allocator_reserve == 22 * MIB


def test_fragmentation_fit_reproduces_the_calibration_readings() -> None:
    # The fit set (docs/real-gpu.md): torchtune lora_finetune.rst max_memory_reserved (GB, 1e9) and
    # vramcalc's tensor peak for the same settings (benchmarks/published.py, before this model).
    fit = {  # reading id: (reserved bytes, tensor peak bytes)
        "tt-lora-llama2_7b-qv-r8": (15_570_000_000, 14_198_000_000),
        "tt-lora-llama2_7b-all-r8": (15_870_000_000, 14_324_000_000),
        "tt-lora-llama2_7b-qv-r64": (15_860_000_000, 14_433_000_000),
        "tt-lora-llama2_7b-all-r64": (17_040_000_000, 15_443_000_000),
    }
    fixed = ov.CUBLAS_WORKSPACE_BYTES + ov.SEGMENT_SLACK_BYTES
    fractions = sorted((r - t - fixed) / t for r, t in fit.values())
    median = (fractions[1] + fractions[2]) / 2
    assert round(median * 1000) == ov.FRAGMENTATION_PERMILLE
    for reserved, tensor in fit.values():  # each within 1 % of its reading
        estimate = ov.reserved_peak_bytes(tensor, ov.runtime_overhead(tensor))
        assert abs(estimate - reserved) / reserved < 0.01


def test_overhead_module_is_pure() -> None:
    # Standard library only, no I/O (the core's purity rule, STYLE.md).
    tree = ast.parse(Path(ov.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "dataclasses"}


def test_estimate_wires_the_model_in() -> None:
    from vramcalc.core.memory import estimate
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets

    b = estimate(presets.find_model("mistral-7b"), TrainingSpec())
    o = ov.runtime_overhead(b.tensor_peak_bytes)
    assert b.overhead == o.total
    assert b.peak_bytes == b.tensor_peak_bytes + o.total
    assert b.reserved_peak_bytes == ov.reserved_peak_bytes(b.tensor_peak_bytes, o)
    assert {k: b.details[k] for k in o.details()} == o.details()
