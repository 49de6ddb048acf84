"""HQQ quantized bases (`--method qlora --quant-backend hqq`): storage and dequantization moments of hqq's HQQLinear.

Read from hqq 0.2.8.post1 hqq/core/quantize.py and hqq/core/bitpack.py, as transformers 4.x quantizers/
quantizer_hqq.py create_quantized_param builds it: every nn.Linear outside HqqConfig.skip_modules (["lm_head"])
becomes `HQQLinear(module, quant_config, compute_dtype=torch_dtype, del_orig=True)` (transformers 5.x's
HqqHfQuantizer has no quantize ops and raises NotImplementedError at load: an HQQ run is a transformers 4.x run).

Storage (Quantizer.quantize, HQQLinear.cuda): the weight reshaped to groups of `group_size` along `axis` (axis 1:
[numel / group_size, group_size]; axis 0: [group_size, numel / group_size]), quantized to `nbits` and bit-packed
along the first dimension (Quantizer.bit_to_packing: 8/6/5-bit one uint8 per value, 4-bit two per uint8, 2-bit four,
1-bit eight, 3-bit ten per int32 with the rows padded to a multiple of 10); one scale and one zero per group, both
moved to the compute dtype (Quantizer.to_inplace casts every floating meta tensor); the bias in the compute dtype.

Forward / backward (HQQBackend.PYTORCH, HQQLinear's default: forward_pytorch_backprop → HQQMatmulNoCacheMul):
the forward saves its input (`ctx.save_for_backward(x, bias)`) and dequantizes the whole weight in each pass
(Quantizer.dequantize: BitPack.unpack_* into a tensor of the compute dtype, then `((W_r - zero) * scale)`: the
unpacked tensor and two weight-sized temporaries alive at once), then `matmul(x, W.t())`; the backward dequantizes
again for `grad_output @ W`. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError
from vramcalc.core.units import ceil_div
from vramcalc.core.vocab import ENCODER_FAMILIES, SEQ2SEQ_FAMILIES

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# Quantizer.bit_to_packing (hqq/core/quantize.py): values per packed element and that element's bytes
# (3bit_32: 10 values per int32; 8/6/5-bit: one per uint8, 6 and 5 not bit-packed)
_PACKING: dict[int, tuple[int, int]] = {8: (1, 1), 6: (1, 1), 5: (1, 1), 4: (2, 1), 3: (10, 4), 2: (4, 1), 1: (8, 1)}
HQQ_BITS = tuple(sorted(_PACKING))

NOTE = ("hqq: HQQLinear as transformers 4.x quantizes it (5.x's HQQ quantizer raises at load), PyTorch backend "
        "(HQQMatmulNoCacheMul: each quantized Linear saves its input and dequantizes its weight in forward and "
        "backward); the ATen/compiled backends are not modelled")


@dataclass(frozen=True, slots=True)
class HqqLinearBytes:
    """One HQQLinear's storage and its dequantization's transient bytes."""

    packed: int  # W_q
    meta: int  # scale + zero, one each per group, in the compute dtype
    unpacked: int  # BitPack.unpack_*'s tensor in the compute dtype (3-bit: the rows padded to a multiple of 10)
    weight: int  # the dequantized weight in the compute dtype


def _grouped(numel: int, group_size: int, axis: int) -> tuple[int, int]:
    """(rows, columns) of the weight as Quantizer.quantize reshapes it: axis 1 [-1, group_size], axis 0
    [group_size, -1]."""
    groups = numel // group_size
    return (groups, group_size) if axis == 1 else (group_size, groups)


def linear_bytes(in_features: int, out_features: int, bits: int, group_size: int, axis: int,
                 compute_bytes: int) -> HqqLinearBytes:
    """Bytes of one HQQLinear of `in_features` x `out_features` (HqqLinearBytes)."""
    numel = in_features * out_features
    rows, cols = _grouped(numel, group_size, axis)
    per, elem = _PACKING[bits]
    packed_rows = ceil_div(rows, per)  # pack_3bit_32 pads the rows to a multiple of 10; the others divide exactly
    return HqqLinearBytes(
        packed=packed_rows * cols * elem,
        meta=2 * (numel // group_size) * compute_bytes,  # scale and zero: min/max over the group axis, keepdim
        unpacked=packed_rows * per * cols * compute_bytes,
        weight=numel * compute_bytes,
    )


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """SpecError for a run the HQQ model does not cover, or that hqq itself refuses."""
    from vramcalc.core.params import quantized_linears

    t = training
    if t.quant_backend != "hqq" or t.method != "qlora":  # other methods: a "changes nothing" note (core/checks.py)
        return
    if t.quant_bits not in HQQ_BITS:
        raise SpecError("quant_bits", f"hqq quantizes to {', '.join(map(str, HQQ_BITS))} bits, not {t.quant_bits}: "
                        "pick one of them")
    if t.hqq_axis not in (0, 1):
        raise SpecError("hqq_axis", f"hqq groups along axis 0 or 1, not {t.hqq_axis}")
    if t.hqq_group_size % 8:  # hqq_base_quant_config asserts it
        raise SpecError("hqq_group_size", f"hqq's group size must be a multiple of 8, not {t.hqq_group_size}")
    for lin in quantized_linears(model):
        if (lin.in_features * lin.out_features) % t.hqq_group_size:  # Quantizer.quantize asserts it
            raise SpecError("hqq_group_size", f"hqq cannot group {lin.module} ({lin.out_features} x "
                            f"{lin.in_features}) by {t.hqq_group_size}: pick a group size dividing its elements")
    why = ""
    if t.mode != "train":
        why = "inference"
    elif model.vision is not None or not model.has_architecture or model.family in ENCODER_FAMILIES + \
            SEQ2SEQ_FAMILIES or model.decoder_layers:
        why = "a vision-language, encoder, encoder-decoder or architecture-less model"
    elif model.num_experts or model.ssm_state_size or model.mixer_intermediate_size or model.family in (
            "jamba", "mamba", "mamba2"):
        why = "a mixture-of-experts or Mamba-mixer model"
    elif t.zero == 3 or t.fsdp != "none":
        why = "ZeRO-3 / FSDP (LLaMA-Factory refuses HQQ with them)"
    elif t.tp > 1 or t.pp > 1:
        why = "tensor or pipeline parallelism"
    elif t.dora:
        why = "DoRA"
    elif t.kernels != "hf":
        why = "--kernels other than hf"
    elif t.objective != "sft":
        why = "objectives other than sft"
    elif t.fp8 != "off":
        why = "fp8"
    if why:
        raise SpecError("quant_backend", f"--quant-backend hqq is modelled for QLoRA SFT training of text models, "
                        f"not with {why}: use --quant-backend bnb there")
