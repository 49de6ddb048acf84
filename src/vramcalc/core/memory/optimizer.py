"""Optimizer state, fp32 master weights, and the temporaries of the optimizer step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory.precision import Recipe
from vramcalc.core.peft_methods import ADAPTER_DTYPE_METHODS
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import TrainingSpec

# bitsandbytes 8-bit optimizers (Dettmers et al. 2022, arXiv:2110.02861; bitsandbytes optim/optimizer.py):
# uint8 states quantized block-wise (blocksize 256, one fp32 absmax per block per state); tensors with
# fewer than min_8bit_size = 4096 elements keep 32-bit states.
BNB_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096


def eight_bit_rank_breakpoints(dims: tuple[int, ...]) -> tuple[int, ...]:
    """The LoRA ranks r > 1 at which an adapter matrix of r × d elements (d in `dims`) first has
    BNB_MIN_8BIT_SIZE elements, so an 8-bit optimizer swaps its fp32 states for 8-bit ones: memory can
    fall there as the rank grows, and is non-decreasing in the rank between two breakpoints."""
    return tuple(sorted({r for r in (ceil_div(BNB_MIN_8BIT_SIZE, d) for d in dims if d > 0) if r > 1}))


@dataclass(frozen=True, slots=True)
class OptimizerBytes:
    """Persistent optimizer memory and the peak temporary of one optimizer step."""

    moments: int
    master_weights: int
    step_temporaries: int
    paged: bool

    @property
    def total(self) -> int:
        return self.moments + self.master_weights


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def state_dtype(recipe: Recipe, training: TrainingSpec) -> str:
    """Dtype of 32-bit-style optimizer states: the parameter's dtype for `pure-*` (torch zeros_like), else fp32."""
    if training.method in ADAPTER_DTYPE_METHODS:
        return training.adapter_dtype if recipe.pure else "fp32"
    return recipe.state if recipe.pure else "fp32"


def optimizer_bytes(
    trainable_tensors: tuple[tuple[tuple[int, ...], int], ...], recipe: Recipe, training: TrainingSpec
) -> OptimizerBytes:
    """Optimizer memory for the trainable tensors (shape, count)."""
    opt = training.optimizer
    s = dtype_bytes(state_dtype(recipe, training))
    trainable = sum(_numel(shape) * count for shape, count in trainable_tensors)
    largest = max((_numel(shape) for shape, _ in trainable_tensors), default=0)
    moments = 0
    if opt in ("adamw", "paged-adamw"):
        # Two moments, exp_avg and exp_avg_sq (Loshchilov & Hutter 2019; torch/optim/adamw.py).
        moments = 2 * s * trainable
    elif opt in ("adamw-8bit", "paged-adamw-8bit"):
        for shape, count in trainable_tensors:
            n = _numel(shape)
            if n < BNB_MIN_8BIT_SIZE:
                moments += 2 * 4 * n * count
            else:
                moments += (2 * n + 2 * 4 * ceil_div(n, BNB_BLOCK)) * count
    elif opt.startswith("torchao-"):
        moments = torchao_state_bytes(trainable_tensors, opt, _param_bytes(recipe, training))
    elif opt == "sgd":
        moments = 0  # plain SGD keeps no state (torch/optim/sgd.py with momentum=0)
    elif opt in ("sgd-momentum", "lion"):
        # One buffer per parameter: SGD momentum_buffer; Lion's exp_avg (Chen et al. 2023, arXiv:2302.06675).
        moments = s * trainable
    elif opt == "adafactor":
        # Factored second moment (Shazeer & Stern 2018; transformers optimization.py Adafactor with
        # beta1=None): a row and a column vector per matrix, a full vector for 1-D tensors, in fp32.
        for shape, count in trainable_tensors:
            if len(shape) >= 2:
                moments += 4 * (_numel(shape[:-1]) + _numel(shape[:-2] + shape[-1:])) * count
            else:
                moments += 4 * _numel(shape) * count
    master = 0
    if recipe.master_weights and not (training.method in ADAPTER_DTYPE_METHODS and training.adapter_dtype == "fp32"):
        master = 4 * trainable  # fp32 master copy (ZeRO paper §3.1; DeepSpeed bf16_optimizer.py)
    return OptimizerBytes(moments, master, _step_temporaries(opt, training, s, trainable, largest, recipe),
                          opt.startswith("paged"))


# torchao low-bit AdamW (torchao/optim/adam.py _AdamBase._new_buffer; subclass_8bit.py, subclass_4bit.py,
# subclass_fp8.py): a tensor with at least 4096 elements and a multiple of the block size gets quantized
# states, each codes (uint8; 4-bit packs two per byte; fp8 one float8 per element) + an fp32 scale per block
# + (8-bit: 256, 4-bit: 16) fp32 quantization-map entries; any other tensor keeps zeros_like(p) states
# (the parameter's dtype). The step is torch.compile'd per parameter (single_param_adam): the fused
# kernels keep no full-size temporaries (assumed; the tracer cannot run torch.compile on fake tensors).
TORCHAO_STATES: dict[str, tuple[int, int, int]] = {  # (code bits, block size, qmap entries)
    "torchao-adamw-8bit": (8, 256, 256),
    "torchao-adamw-4bit": (4, 128, 16),
    "torchao-adamw-fp8": (8, 256, 0),
}
TORCHAO_MIN_SIZE = 4096


def torchao_state_bytes(trainable_tensors: tuple[tuple[tuple[int, ...], int], ...], opt: str,
                        param_bytes: int) -> int:
    """Two torchao AdamW states (exp_avg, exp_avg_sq) for every trainable tensor."""
    bits, block, qmap = TORCHAO_STATES[opt]
    total = 0
    for shape, count in trainable_tensors:
        n = _numel(shape)
        if n >= TORCHAO_MIN_SIZE and n % block == 0:
            one = ceil_div(n * bits, 8) + 4 * (n // block) + 4 * qmap
        else:
            one = param_bytes * n
        total += 2 * one * count
    return total


def _param_bytes(recipe: Recipe, training: TrainingSpec) -> int:
    adapters = training.method in ADAPTER_DTYPE_METHODS
    return dtype_bytes(training.adapter_dtype if adapters else recipe.weight)


def _step_temporaries(opt: str, training: TrainingSpec, s: int, trainable: int, largest: int,
                      recipe: Recipe) -> int:
    impl = training.optimizer_impl
    temp = 0
    if opt == "adamw":  # bitsandbytes paged and 8-bit kernels update in place
        if impl == "foreach":
            # _multi_tensor_adamw: exp_avg_sq_sqrt = _foreach_sqrt(exp_avg_sqs) for the whole group.
            temp = s * trainable
        elif impl == "for-loop":
            # _single_tensor_adamw: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt): two live temporaries.
            temp = 2 * s * largest
    elif opt == "lion":
        temp = 2 * s * largest  # update = exp_avg.clone().mul_(b1).add(grad).sign_(): per-tensor temporaries
    elif opt == "adafactor":
        # Per tensor: fp32 copies of grad and (16-bit) param, grad**2, and the rebuilt full-size update.
        temp = (4 if recipe.weight != "fp32" else 3) * 4 * largest
    if recipe.master_weights:
        # DeepSpeed hands the optimizer fp32 gradients of the master copy (stage_1_and_2.py).
        temp += 4 * trainable
    return temp
