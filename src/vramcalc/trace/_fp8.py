"""FP8 training through accelerate's torchao backend, on the fake-tensor model (--fp8, memory/fp8.py).

accelerate 1.15 Accelerator._prepare_ao calls utils/ao.py convert_model_to_fp8_ao on the prepared model (after
peft's wrap): torchao 0.18 float8/float8_linear_utils.py convert_to_float8_training swaps every nn.Linear the
filter keeps for a Float8Linear sharing its weight. The filters follow the stacks that turn it on:
* tensorwise (axolotl-ai-cloud/axolotl @ 70be5461 src/axolotl/core/trainers/base.py additional_accelerator_args:
  Float8LinearConfig(), accelerate's default filter_linear_layers): in and out features divisible by 16, the model's
  first and last nn.Linear skipped;
* rowwise (hiyouga/LLaMA-Factory @ 7f564fdb src/llamafactory/train/fp8_utils.py create_fp8_kwargs:
  Float8LinearConfig.from_recipe_name("rowwise") and its module_filter_func): names holding embed / lm_head /
  output / classifier skipped, a 2-D weight whose dimensions are both divisible by 16.
torch._scaled_mm's fake kernel (torch/_meta_registrations.py meta_scaled_mm) allocates the output only, as the
cuBLAS / CUTLASS kernels do (aten/src/ATen/native/cuda/Blas.cpp _scaled_mm_out_cuda: out, plus cuBLAS's own
workspace, counted by overhead).
"""

from __future__ import annotations

from typing import Any

import torch

from vramcalc.core.errors import UnsupportedCombination

LF_SKIP = ("embed", "lm_head", "output", "classifier")  # LLaMA-Factory fp8_utils.py module_filter_func


def _divisible(module: Any) -> bool:
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def install(hf: torch.nn.Module, recipe: str) -> int:
    """Swap the kept nn.Linear layers for torchao Float8Linear; return how many were swapped."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:
        raise UnsupportedCombination("--fp8: pip install torchao==0.18.0 to trace it") from None

    if recipe == "tensorwise":
        linears = [name for name, mod in hf.named_modules() if isinstance(mod, torch.nn.Linear)]
        skipped = {linears[0], linears[-1]} if linears else set()  # accelerate utils/ao.py find_first_last_...

        def keep(module: Any, fqn: str) -> bool:  # accelerate utils/ao.py filter_linear_layers
            return not (isinstance(module, torch.nn.Linear) and not _divisible(module)) and fqn not in skipped
        config = Float8LinearConfig()
    else:
        def keep(module: Any, fqn: str) -> bool:  # LLaMA-Factory fp8_utils.py module_filter_func
            if any(s in fqn.lower() for s in LF_SKIP):
                return False
            weight = getattr(module, "weight", None)
            return weight is not None and weight.dim() == 2 and _divisible(module)
        config = Float8LinearConfig.from_recipe_name("rowwise")
    convert_to_float8_training(hf, module_filter_fn=keep, config=config)
    return sum(1 for mod in hf.modules() if isinstance(mod, Float8Linear))
