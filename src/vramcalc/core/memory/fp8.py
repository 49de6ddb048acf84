"""FP8 training through accelerate's torchao backend (--fp8 tensorwise | rowwise; issue 13).

accelerate 1.15 Accelerator._prepare_ao -> utils/ao.py convert_model_to_fp8_ao -> torchao 0.18
float8/float8_linear_utils.py convert_to_float8_training swaps each nn.Linear its filter keeps for a Float8Linear
sharing the same weight Parameter: weights, gradients and optimizer states are unchanged (the weights stay as
stored: bf16, or fp32 under autocast). torchao float8/float8_linear.py matmul_with_hp_or_float8_args.forward saves
`input_hp` and `weight_hp_t` (the high-precision input and a view of the weight), which is what nn.Linear's mm saves
when its weight is trained: the saved set is unchanged. Every fp8 copy is transient, made again in backward from
the saved tensors: float8_scaling_utils.py hp_tensor_to_float8_dynamic (tensor_to_amax: abs(x); _ToFloat8ConstrFunc:
x.to(float32) * scale, to_fp8_saturated's clamp, the float8 bits; rowwise: one fp32 scale per row), then
float8_ops.py preprocess_addmm's column-major copy and torch._scaled_mm's 16-bit output.

What changes: under autocast (amp-*) Float8Linear.forward casts only its input (input.to(autocast dtype)) and never
calls F.linear, so autocast caches no 16-bit copy of a swapped Linear's fp32 weight (autocast_mode.cpp cached_cast
runs only for ops on the autocast lists; float8 matmuls run under __torch_dispatch__). The head (lm_head) is never
swapped, and under tensorwise neither is the model's first nn.Linear: their copies remain.

The filters: tensorwise is axolotl's fp8 (axolotl-ai-cloud/axolotl src/axolotl/core/trainers/base.py
additional_accelerator_args: Float8LinearConfig(), accelerate utils/ao.py filter_linear_layers: dims divisible by 16,
the first and last nn.Linear skipped); rowwise is LLaMA-Factory's (hiyouga/LLaMA-Factory @ ff6d4d12
src/llamafactory/train/fp8_utils.py create_fp8_kwargs: Float8LinearConfig.from_recipe_name("rowwise"), names holding
embed / lm_head / output / classifier skipped). Measured with the tracer (trace/_fp8.py): --grid fp8.
"""

from __future__ import annotations

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.specs import ModelSpec, TrainingSpec

SRC = "torchao float8/float8_linear.py matmul_with_hp_or_float8_args; accelerate utils/ao.py convert_model_to_fp8_ao"
# Decoder families whose blocks are plain nn.Linear modules, traced (--grid fp8)
FAMILIES = ("llama", "qwen2")


def active(t: TrainingSpec) -> bool:
    return getattr(t, "fp8", "off") != "off"


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """The runs --fp8 is modelled (and traced) for; anything else is refused in one line."""
    if not active(t):
        return
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.params import block_linears

    why = ""
    if t.mode != "train":
        why = f"--mode {t.mode} (FP8 training only)"
    elif m.family not in FAMILIES or m.vision is not None:
        why = f"{m.name} ({m.family}: traced for the Llama and Qwen2 text decoders)"
    elif t.method != "full" or t.badam or t.lisa_layers is not None:
        # a frozen Float8Linear still saves its input and computes a weight gradient it discards
        # (matmul_with_hp_or_float8_args.backward has no needs_input_grad test); peft's lora_A / lora_B are
        # swapped too when r is a multiple of 16
        why = (f"--method {t.method}" if t.method != "full" else "BAdam / LISA") + \
            " (a frozen Float8Linear still saves its input and makes a weight gradient it discards)"
    elif t.fsdp != "none" or _distributed.sharding_stage(t) == 3:
        # accelerate AORecipeKwargs defaults enable_fsdp_float8_all_gather=True under FSDP2: fp8 weight shards
        # gathered (torchao fsdp_utils.py WeightWithDynamicFloat8CastTensor)
        why = "sharded weights (FSDP's float8 all-gather, on by default in accelerate's AORecipeKwargs)"
    elif t.loss != "hf" or t.kernels != "hf" or t.objective != "sft":
        why = f"--loss {t.loss} --kernels {t.kernels} --objective {t.objective} (a layer's fp8 casts, transient, " \
            "would set the peak: traced with transformers' loss only)"
    elif any(lin.in_features % 16 or lin.out_features % 16 for lin in block_linears(m)):
        why = f"{m.name}'s Linear dimensions not all divisible by 16 (accelerate skips those layers)"
    if why:
        raise UnsupportedCombination(f"--fp8 is not modelled with {why}: drop --fp8")


def kept_cast_params(m: ModelSpec, t: TrainingSpec) -> int:
    """Block Linear parameters still run by nn.Linear (so cast and cached under autocast): under tensorwise the
    model's first nn.Linear (accelerate find_first_last_linear_layers: layers.0's first projection); none under
    rowwise (LLaMA-Factory's filter skips by name only)."""
    from vramcalc.core.params import block_linears

    if t.fp8 != "tensorwise":
        return 0
    first = block_linears(m)[0]
    return first.in_features * first.out_features


def note(t: TrainingSpec) -> str:
    return (f"fp8 {t.fp8} (accelerate's torchao Float8Linear): weights, gradients and the saved set as without it "
            "(the high-precision input and weight are saved); under autocast no 16-bit copy of a swapped weight is "
            "cached. Its fp8 casts are transient per Linear.")
