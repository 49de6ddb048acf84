"""4-bit QLoRA over an fp32 load under the Trainer's autocast (--precision amp-* --method qlora): TRL's default.

TRL 1.16 loads float32 unless a dtype is named (trl/trainer/utils.py create_model_from_path) and builds the 4-bit
config with `bnb_4bit_compute_dtype=model_args.dtype` (get_quantization_config), so every block Linear4bit computes in
fp32 under the bf16 autocast the Trainer's bf16 flag opens. bitsandbytes 0.50.2:

* nn/modules.py Linear4bit.forward: `x.to(compute_dtype)` (an fp32 copy of a 16-bit input), then
  `matmul_4bit(...).to(inp_dtype)`: the output comes back fp32 for an fp32 input.
* autograd/_functions.py MatMul4Bit: the gemm_4bit op saves nothing of the input (`ctx.tensors = (None, B)`); its CUDA
  kernel (backends/cuda/ops.py) takes the dequantize + F.linear fallback for an fp32 input past 7 rows
  (_gemm_4bit_use_custom_cuda: fp32 has no MMA kernel), so the forward holds the fp32 dequantized weight and autocast's
  bf16 copies of it and of the input (CUDA autocast's lower-precision list has linear; a non-leaf is not cached);
  backward `dequantize_4bit(B).to(grad_output.dtype)`: the fp32 weight and its bf16 copy.
* no fp32 leaf weight to cast: autocast caches and saves no copy of the block Linears' weights.

peft 0.21.2 tuners/lora/bnb.py Linear4bit.forward clones the base output and, under autocast, casts neither the input
nor the adapters' output. So the MLP's gate / up outputs (and act(gate)) are fp32 where plain amp LoRA has them 16-bit.
"""

from __future__ import annotations

from vramcalc.core.memory.precision import Recipe
from vramcalc.core.specs import TrainingSpec


def active(t: TrainingSpec, recipe: Recipe) -> bool:
    """4-bit bitsandbytes QLoRA training over an fp32 load under autocast (amp-*): the fp32 compute dtype."""
    return (t.method == "qlora" and t.quant_backend == "bnb" and t.quant_bits == 4 and recipe.autocast
            and t.mode == "train")


def int8_active(t: TrainingSpec, recipe: Recipe) -> bool:
    """8-bit bitsandbytes QLoRA training over an fp32 load under autocast (amp-*, --grid qlora8-fp32load).
    bitsandbytes 0.50.2: Linear8bitLt has no compute dtype (nn/modules.py: `bnb.matmul(x, ...)` on x as it comes) and
    MatMul8bitLt no custom_fwd (autograd/_functions.py), so autocast casts neither its input nor its int8 weight: the
    quantization runs on `A.to(torch.float16)`, ctx keeps A (fp32 where it comes fp32: the normed input, the MLP's
    act(gate) * up), the output comes back in A's dtype (int8_scaled_mm's `dtype=A.dtype`), and backward's grad_A
    multiplies by `CB.to(ctx.dtype_A)`: the weight dequantized to fp32. peft 0.21.2 tuners/lora/bnb.py
    Linear8bitLt.forward: under autocast no cast of the input or of the adapters' output, no clone."""
    return (t.method == "qlora" and t.quant_backend == "bnb" and t.quant_bits == 8 and recipe.autocast
            and t.mode == "train")
