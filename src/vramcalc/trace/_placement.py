"""accelerate's CPU offload on the fake device: AlignDevicesHook(offload=True), memory only.

dispatch_model (accelerate 1.15 big_modeling.py) gives every module of the device map's "cpu" entries an
AlignDevicesHook(offload=True) per module that holds tensors (hooks.py attach_align_device_hook, place_submodules
False): at init its parameters are set to meta; pre_forward writes each one back on the execution device from the
host copy (`set_module_tensor_to_device(module, name, device, value=weights_map[name])`: a new tensor, a new
Parameter of the old one's class and requires_grad); post_forward sets them to meta again. Buffers stay on the
GPU (offload_buffers=False). This module does the same with fake tensors: the placeholder is a meta tensor (not
counted), each pre_forward allocates the GPU copy (counted), post_forward drops the module's reference, so the copy
lives as long as autograd holds it. The host copies are not counted (host RAM).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def install(modules: list[nn.Module]) -> int:
    """Offload `modules` (their direct parameters) as accelerate's hooks do; call inside the FakeTensorMode after the
    model has its fake storage. Returns the bytes moved to the host."""
    moved = 0
    for mod in modules:
        placeholders: dict[str, nn.Parameter] = {}
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            meta = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
            placeholders[name] = meta
            mod._parameters[name] = meta
            moved += p.numel() * p.element_size()

        def pre_forward(module: nn.Module, args: tuple[Any, ...], held: dict[str, nn.Parameter] = placeholders) -> None:
            device = args[0].device
            for name, meta in held.items():
                module._parameters[name] = nn.Parameter(torch.empty(meta.shape, dtype=meta.dtype, device=device),
                                                        requires_grad=meta.requires_grad)

        def post_forward(module: nn.Module, _args: Any, _out: Any,
                         held: dict[str, nn.Parameter] = placeholders) -> None:
            for name, meta in held.items():
                module._parameters[name] = meta

        mod.register_forward_pre_hook(pre_forward)
        mod.register_forward_hook(post_forward)
    return moved
