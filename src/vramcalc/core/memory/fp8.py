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

The filters: tensorwise is axolotl's fp8 (axolotl-ai-cloud/axolotl @ 70be5461 src/axolotl/core/trainers/base.py
additional_accelerator_args: Float8LinearConfig(), accelerate utils/ao.py filter_linear_layers: dims divisible by 16,
the first and last nn.Linear skipped); rowwise is LLaMA-Factory's (hiyouga/LLaMA-Factory @ 7f564fdb
src/llamafactory/train/fp8_utils.py create_fp8_kwargs: Float8LinearConfig.from_recipe_name("rowwise"), names holding
embed / lm_head / output / classifier skipped). Measured with the tracer (trace/_fp8.py): --grid fp8.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import Recipe
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.core.units import dtype_bytes

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
    elif t.tp > 1 or t.context_parallel > 1 or t.activation_offload:
        why = "--tp / --context-parallel / --activation-offload (traced on one GPU, activations kept)"
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


@dataclass(frozen=True)
class Fp8Casts:
    """A swapped Linear's transient bytes while it runs, beyond the layer's saved set (0 without --fp8).

    Casting n elements to float8 (float8_scaling_utils.py hp_tensor_to_float8_dynamic) holds, at its top,
    `x.to(float32) * scale` (4n), to_fp8_saturated's clamp of it (4n) and the float8 bits (n): 9n bytes, the fp32
    tensors freed when it returns (tensor_to_amax's abs(x), before, is smaller). With x = rows x in, w = in x out and
    y = rows x out elements, c the compute dtype's bytes:
    * forward (matmul_with_hp_or_float8_args.forward): the input's cast (9x), then the weight's beside the input's bits
      (x + 9w), then the 16-bit output beside both (x + w + c y);
    * backward, beside the incoming gradient (c y): grad_output's cast (9y); the weight's again for grad_input beside
      its bits (y + 9w); grad_input (c x) with preprocess_addmm's column-major copy of the weight's bits (y + 2w);
      grad_output cast again for grad_weight (y + w + c x + 9y: the first bits stay alive, locals of backward); the
      input's cast (2y + w + c x + 9x); the weight gradient (c w) with both operands' contiguous copies
      (3y + w + c x + 2x). The largest of each phase over the block's Linears is the moment (traced: --grid fp8).
    Rowwise adds one fp32 scale per row or column (a few kB): not counted."""

    shapes: tuple[tuple[int, int], ...] = ()  # (in, out) of each swapped block Linear
    compute: int = 2

    def forward(self, tokens: int) -> int:
        c = self.compute
        return max((max(9 * tokens * d_in, tokens * d_in + 9 * d_in * d_out,
                        tokens * d_in + d_in * d_out + c * tokens * d_out) for d_in, d_out in self.shapes), default=0)

    def backward(self, tokens: int) -> int:
        c = self.compute
        out = 0
        for d_in, d_out in self.shapes:
            x, w, y = tokens * d_in, d_in * d_out, tokens * d_out
            out = max(out, c * y + max(9 * y, y + 9 * w, y + 2 * w + c * x, y + w + c * x + 9 * y,
                                       2 * y + w + c * x + 9 * x, 3 * y + w + c * x + 2 * x + c * w))
        return out


def casts(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> Fp8Casts:
    """The swapped Linears' shapes (every block Linear: tensorwise's unswapped first one counted as swapped, the
    larger) and the compute dtype."""
    if not active(t):
        return Fp8Casts()
    from vramcalc.core.params import block_linears

    return Fp8Casts(tuple(sorted({(lin.in_features, lin.out_features) for lin in block_linears(m)})),
                    dtype_bytes(recipe.compute))


def unmade_gradient_params(m: ModelSpec, t: TrainingSpec) -> int:
    """Parameters whose gradients do not exist yet at any swapped Linear's backward in the bottom layer (full
    fine-tuning): its q / k / v projections (the layer's last backward; each one's own weight gradient is in
    Fp8Casts.backward) and an untied embedding (its backward comes last; a tied one got the head's gradient first).
    The MLP's and o_proj's gradients are counted as made: exact at q / k / v, an over-estimate at the MLP."""
    if not active(t):
        return 0
    from vramcalc.core.params import block_linears

    assert m.num_layers and m.hidden_size is not None
    qkv = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m)
              if lin.module in ("q_proj", "k_proj", "v_proj")) // m.num_layers
    return qkv + (0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size)
