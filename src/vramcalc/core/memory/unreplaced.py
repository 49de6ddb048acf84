"""bitsandbytes on a model whose Linears are not plain nn.Linear: nothing is quantized (Falcon under transformers 5).

transformers 5 loads a bitsandbytes model by replacing, before the weights load, each module for which
`isinstance(module, Conv1D) or type(module) is nn.Linear` holds (integrations/bitsandbytes.py
replace_with_bnb_linear, 4-bit and 8-bit alike; transformers 5.24); every other module loads its checkpoint as is
(quantizers/quantizer_bnb_4bit.py param_needs_quantization: `isinstance(module, bnb.nn.Linear4bit)`). Falcon's
decoder Linears are FalconLinear, an nn.Linear subclass (models/falcon/modeling_falcon.py: query_key_value, dense,
dense_h_to_4h, dense_4h_to_h), so a Falcon model loaded with `load_in_4bit` or `load_in_8bit` keeps every weight in
the load dtype (lm_head is skipped anyway): the "QLoRA" is a LoRA on the 16-bit model. transformers 4 tested
`isinstance(module, nn.Linear)` and quantized them; vramcalc models transformers 5.

peft then treats it as a LoRA: its dispatchers find no bitsandbytes layer and wrap each FalconLinear in lora.Linear
(peft/tuners/lora/model.py, the default dispatch for torch.nn.Linear). prepare_model_for_kbit_training (peft
utils/other.py) casts every fp16 / bf16 parameter that is not Params4bit to fp32, here every weight: the model is
fp32, and so is its compute unless the Trainer's autocast runs the matmuls in 16 bits.

So the run is estimated as that LoRA (`view`): the asked precision without kbit prep; with it, fp32 weights (amp-*
under autocast, fp32 without). The tracer's bitsandbytes emulation follows the same rule (trace/_hf.py
quantize_blocks: `type(mod) is nn.Linear`), so a traced Falcon QLoRA step is this LoRA too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# model_types whose block Linears are nn.Linear subclasses that replace_with_bnb_linear skips (transformers 5.24
# models/*/modeling_*.py: `class FalconLinear(nn.Linear)`); Llama 4's router (Llama4Router) is one too, but its
# blocks' other Linears are plain and quantized: core/params.py leaves the router out of the quantized set.
SUBCLASSED_LINEAR_FAMILIES = frozenset({"falcon"})


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    """A bitsandbytes load (QLoRA, or 4-/8-bit inference weights) of a model it quantizes nothing of."""
    if m.family not in SUBCLASSED_LINEAR_FAMILIES:
        return False
    if t.mode == "train":
        return t.method == "qlora" and t.quant_backend == "bnb" or t.ref_quant != "none"
    return t.mode == "inference" and t.weight_dtype in ("nf4", "int8")


def view(m: ModelSpec, t: TrainingSpec) -> TrainingSpec:
    """The run as it happens: LoRA on the unquantized model (training), the load dtype's weights (inference)."""
    from vramcalc.core.memory.precision import recipe_of

    if not active(m, t):
        return t
    if t.mode != "train":
        return replace(t, weight_dtype="auto")
    if t.method != "qlora" or t.quant_backend != "bnb":  # --ref-quant alone: the reference copy stays 16-bit
        return replace(t, ref_quant="none")
    r = recipe_of(t)
    precision = t.precision
    if t.kbit_prep and r.weight != "fp32":  # every weight cast to fp32: autocast's recipe over an fp32 model
        precision = f"amp-{r.compute}" if (r.autocast or r.autocast16) and r.compute != "fp32" else "fp32"
    return replace(t, method="lora", precision=precision, kbit_prep=False, ref_quant="none")


def note(m: ModelSpec, t: TrainingSpec) -> str:
    """What the estimate counts instead, and why."""
    what = "--quant-bits" if t.mode == "train" else "--weight-dtype"
    bits = f"{t.quant_bits}-bit" if t.mode == "train" else t.weight_dtype
    if t.mode != "train":
        counted = "the weights in the load dtype"
    elif t.method != "qlora" or t.quant_backend != "bnb":
        what, bits, counted = "--ref-quant", t.ref_quant, "a 16-bit reference copy"
    else:
        v = view(m, t)
        counted = (f"LoRA with --precision {v.precision}"
                   + (" (prepare_model_for_kbit_training casts every 16-bit weight to fp32)" if t.kbit_prep
                      and v.precision != t.precision else ""))
    return (f"{m.name}: bitsandbytes {bits} ({what}) quantizes nothing under transformers 5: it replaces plain "
            "nn.Linear modules only, and Falcon's are FalconLinear (integrations/bitsandbytes.py "
            f"replace_with_bnb_linear); counted as {counted}. transformers 4 quantized them.")
