"""What FSDP1 keeps as gradients when LoRA adapters share a unit with frozen weights (issue #16).

Runs 2 CPU processes (gloo) of torch FSDP1 with use_orig_params=True (Lightning Fabric's default), one
unit per block, each block a frozen Linear plus a trainable A/B adapter pair, and counts the elements of
the flat parameters' .grad after one backward, with and without no_sync. memory/distributed.py models
the result (--fsdp-frozen-grads, --grad-sync).

Usage:  python benchmarks/fsdp_grads.py
Seen (torch 2.13.0+cpu): no_sync: 278,528 elements = every block parameter, unsharded, frozen ones
included; synced: 139,264 = the same over 2 GPUs (the sharded flat gradient). Trainable: 16,384.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HIDDEN, RANK, BLOCKS, WORLD = 256, 8, 4, 2


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)  # frozen base weight
        self.a = torch.nn.Linear(HIDDEN, RANK, bias=False)  # LoRA A
        self.b = torch.nn.Linear(RANK, HIDDEN, bias=False)  # LoRA B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w(x) + self.b(self.a(x))


def _run(rank: int, no_sync: bool) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[Block() for _ in range(BLOCKS)])
    for name, p in model.named_parameters():
        p.requires_grad = not name.endswith(".w.weight")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    fsdp = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                device_id=torch.device("cpu"), sharding_strategy=ShardingStrategy.FULL_SHARD)
    with fsdp.no_sync() if no_sync else torch.enable_grad():
        fsdp(torch.randn(2, HIDDEN)).sum().backward()
    flats = [m._handle.flat_param for m in fsdp.modules() if isinstance(m, FSDP) and m._handle]
    grads = sum(f.grad.numel() for f in flats if f.grad is not None)
    if rank == 0:
        print(f"no_sync={no_sync}: flat-parameter gradients {grads:,} elements per process; block parameters "
              f"{total:,}, trainable {trainable:,}, {WORLD} processes")
    dist.destroy_process_group()


if __name__ == "__main__":
    for flag in (True, False):
        mp.spawn(_run, args=(flag,), nprocs=WORLD)
