"""Model weights on the GPU: which tensors are trainable, and the bytes of each stored form."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core import peft_methods
from vramcalc.core import unfrozen as _unfrozen
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import hqq as _hqq
from vramcalc.core.memory import upcast_norms as _upcast_norms
from vramcalc.core.memory.precision import Recipe
from vramcalc.core.params import (
    ParamTensor,
    dora_params,
    fused_experts,
    inventory,
    is_zamba2,
    lora_params,
    outer_targets,
    quantized_linears,
)
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# bitsandbytes 4-bit (QLoRA paper, arXiv:2305.14314 §3; bitsandbytes functional.quantize_4bit):
# two NF4 values per byte, one fp32 absmax per 64-element block; with double quantization the
# absmax values are themselves stored as uint8 with one fp32 constant per 256 absmax values.
NF4_BLOCK = 64
DQ_BLOCK = 256
# LLM.int8 (Dettmers et al. 2022; bitsandbytes Linear8bitLt): int8 weight + one fp32 scale per row.


def unquantized_bytes(training: TrainingSpec, recipe: Recipe) -> int:
    """Bytes per parameter of a QLoRA base's non-quantized parameters (norms, embeddings, lm_head)."""
    w = dtype_bytes(recipe.weight)
    return 4 if training.kbit_prep and w < 4 else w  # (hqq: kbit_prep is off, specs.TrainingSpec)


@dataclass(frozen=True, slots=True)
class WeightBytes:
    """Persistent weight storage, split by what it is."""

    base: int  # the model's own weights (16/32-bit, or the packed quantized data)
    quant_constants: int  # block-wise absmax / row scales of quantized layers
    adapters: int  # LoRA A and B matrices
    parameters: int  # total parameter count of the base model
    trainable: int  # trainable parameter count
    trainable_tensors: tuple[tuple[tuple[int, ...], int], ...]  # (shape, count) of trainable tensors
    # QLoRA's split of `base` (0 otherwise): the packed 4-/8-bit data of `quantized_params`, and the rest
    quantized_params: int = 0
    quantized_data: int = 0
    unquantized: int = 0
    # The part of `adapters` that is not trained: VeRA's shared projections, trainable tokens' original rows,
    # OFT's index buffers (core/peft_methods.py methods; read by explain)
    adapter_buffers: int = 0
    # peft modules_to_save (saved_copies): full trainable copies of embed_tokens / lm_head in the model's dtype,
    # counted in `adapters`, `trainable` and `trainable_tensors`; their parameter count, bytes per element, shapes
    copies: int = 0
    copy_elem_bytes: int = 0
    copy_tensors: tuple[tuple[tuple[int, ...], int], ...] = ()
    # trainable parameters the library holds in fp32 under a 16-bit load (fp32_router_elements): their gradients
    # are fp32 (autograd's grad takes the parameter's dtype), and so are zeros_like states of a pure-* recipe
    fp32_trainable: int = 0
    fp32_trainable_tensors: tuple[tuple[tuple[int, ...], int], ...] = ()

    @property
    def total(self) -> int:
        return self.base + self.quant_constants + self.adapters


def nf4_bytes(numel: int, double_quant: bool) -> tuple[int, int]:
    """(packed data bytes, constant bytes) of one 4-bit tensor of `numel` elements."""
    blocks = ceil_div(numel, NF4_BLOCK)
    if double_quant:
        # uint8 absmax per block + fp32 absmax per 256 blocks + fp32 offset (quantize_4bit, compress_statistics)
        constants = blocks + 4 * ceil_div(blocks, DQ_BLOCK) + 4
    else:
        constants = 4 * blocks
    return ceil_div(numel, 2), constants


def quantized_storage(model: ModelSpec, bits: int, double_quant: bool,
                      hqq: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """(elements, packed data bytes, constant bytes) of the block Linears bitsandbytes quantizes (QLoRA's base, a
    4-bit DPO reference: memory/preference.py); `hqq` (group size, axis, compute dtype bytes): HQQLinear's packed
    W_q and scale/zero instead (memory/hqq.py)."""
    data = constants = quantized = 0
    for lin in quantized_linears(model):  # Zamba2: not the tied shared blocks (params.zamba2_quantized)
        if lin.module.startswith("experts.") and fused_experts(model):
            continue  # 3-D expert Parameters: bitsandbytes replaces nn.Linear only (bitsandbytes issue #1849)
        numel = lin.in_features * lin.out_features
        quantized += numel * lin.count
        if hqq is not None:
            q = _hqq.linear_bytes(lin.in_features, lin.out_features, bits, *hqq)
            d, c = q.packed, q.meta
        elif bits == 4:
            d, c = nf4_bytes(numel, double_quant)
        else:
            d, c = numel, 4 * lin.out_features
        data += d * lin.count
        constants += c * lin.count
    return quantized, data, constants


def hqq_storage(training: TrainingSpec, recipe: Recipe) -> tuple[int, int, int] | None:
    """(group size, axis, compute dtype bytes) of an hqq QLoRA base (quantized_storage); None for bitsandbytes."""
    if training.quant_backend != "hqq":
        return None
    return training.hqq_group_size, training.hqq_axis, dtype_bytes(recipe.compute)


def freeze_fraction(model: ModelSpec, training: TrainingSpec) -> tuple[int, int]:
    """(frozen layers, total layers) for method `freeze`, clamped to the model's depth."""
    n_layers = model.num_layers or 1
    frozen = min(training.freeze_layers or 0, n_layers)
    return frozen, n_layers


def _trainable_count(t: ParamTensor, model: ModelSpec, training: TrainingSpec) -> int:
    """How many of the `t.count` tensors are trained under `full` or `freeze`."""
    if training.method == "full":
        return t.count
    if _unfrozen.active(training):  # --train-layers / --train-modules (core/unfrozen.py): by layer and module name
        if t.per_layer:  # alike layers (unfrozen.check): each holds count / n_layers of these tensors
            return t.count * len(_unfrozen.trained_layers(model, training)) // (model.num_layers or 1)
        outer = _unfrozen.outer_modules(model, training)
        which = {"embedding": "embed_tokens", "head": "lm_head", "norm": "norm"}.get(t.kind)
        return t.count if which in outer else 0
    frozen, n_layers = freeze_fraction(model, training)
    if t.per_layer:
        # Uniform layers: each layer holds count / n_layers of these tensors (exact for dense models;
        # for MoE stacks with dense bottom layers, a whole-tensor approximation).
        return t.count * (n_layers - frozen) // n_layers
    if t.kind in ("head", "norm"):  # final norm and LM head sit above the layers
        return t.count if training.train_head else 0
    if t.kind == "embedding" and model.tie_word_embeddings and training.train_head:
        return t.count  # a tied head is the embedding matrix
    if t.kind == "embedding" and getattr(training, "lisa_layers", None) is not None:
        return t.count  # LISA freezes only the decoder layers: the embeddings train (memory/lisa.py)
    return 0


def buffer_bytes(model: ModelSpec) -> int:
    """Non-parameter buffers the model keeps on the GPU that scale with its config.

    GPTBigCodeModel registers its causal mask as a bool buffer of max_position_embeddings squared
    (modeling_gpt_bigcode.py `self.bias = nn.Buffer(torch.tril(torch.ones((max_positions, max_positions),
    dtype=torch.bool)), persistent=False)`): 64 MiB at StarCoder's 8,192 positions (measured by the tracer).
    """
    if model.family == "gpt_bigcode" and model.max_position_embeddings:
        return model.max_position_embeddings**2
    return 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


FP32_ROUTER_FAMILIES = ("deepseek_v2", "deepseek_v3", "nemotron_h")  # (NemotronHPreTrainedModel: gate.weight)


def fp32_router_tensors(model: ModelSpec, recipe: Recipe) -> tuple[ParamTensor, ...]:
    """The router tensors the library keeps in fp32 under a bf16 / fp16 load: DeepSeek-V2's `gate.weight` and V3's
    `gate.weight` and `e_score_correction_bias` (modeling_deepseek_v2.py / modeling_deepseek_v3.py
    `_keep_in_fp32_modules_strict`, applied for both 16-bit dtypes by modeling_utils.py
    PreTrainedModel._get_dtype_plan, from_pretrained and from_config alike; the TopkRouter builds its weight
    fp32 and runs F.linear on an fp32 copy of the input). Empty for other families or an fp32 load."""
    if model.family not in FP32_ROUTER_FAMILIES or dtype_bytes(recipe.weight) >= 4 or not model.has_architecture:
        return ()
    return tuple(t for t in inventory(model) if t.kind == "router")


def weight_bytes(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> WeightBytes:
    """Bytes of every weight tensor the run keeps on the GPU, and the trainable count."""
    wb = _weight_bytes(model, training, recipe)
    # DeepSeek's fp32 routers, and the norms --upcast-norms casts to fp32 (memory/upcast_norms.py): the same path
    routers = fp32_router_tensors(model, recipe) + _upcast_norms.norm_tensors(model, training, recipe)
    if routers:
        # counted above in the load dtype (or, for QLoRA, its non-quantized dtype: fp32 already after
        # prepare_model_for_kbit_training); the library holds them fp32
        elem = unquantized_bytes(training, recipe) if training.method == "qlora" else dtype_bytes(recipe.weight)
        more = sum(t.numel for t in routers) * (4 - elem)
        trained = tuple((t.shape, c) for t in routers
                        if training.method in ("full", "freeze") and (c := _trainable_count(t, model, training)))
        wb = replace(wb, base=wb.base + more, unquantized=wb.unquantized + more if wb.unquantized else 0,
                     fp32_trainable=sum(_numel(shape) * c for shape, c in trained), fp32_trainable_tensors=trained)
    if recipe.autocast16 and training.method == "freeze":
        # --precision autocast-* freeze: LLaMA-Factory's _setup_freeze_tuning casts the trained parameters to fp32
        # (model/adapter.py cast_trainable_params_to_fp32 unless pure_bf16), the frozen ones stay in the load dtype:
        # the trained tensors' 4 − w more bytes, with fp32 gradients (autograd's gradient takes the parameter's dtype)
        trained = tuple((x.shape, c) for x in inventory(model) if (c := _trainable_count(x, model, training)))
        n = sum(_numel(shape) * c for shape, c in trained)
        wb = replace(wb, base=wb.base + n * (4 - dtype_bytes(recipe.weight)), fp32_trainable=wb.fp32_trainable + n,
                     fp32_trainable_tensors=wb.fp32_trainable_tensors + trained)
    extra = buffer_bytes(model)
    if model.final_logits_bias and model.vocab_size and model.decoder_layers:  # an encoder-decoder's flag only
        # BartForConditionalGeneration's final_logits_bias: a (1, vocab) buffer made in the model's dtype
        # (modeling_bart.py `nn.Buffer(torch.zeros((1, num_embeddings)))` under from_pretrained's dtype)
        extra += model.vocab_size * dtype_bytes(recipe.weight)
    if not extra:
        return wb
    return replace(wb, base=wb.base + extra)


def _weight_bytes(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> WeightBytes:
    tensors = inventory(model)
    total_params = sum(t.numel for t in tensors)
    w = dtype_bytes(recipe.weight)
    if training.method in ("full", "freeze"):
        trainable_tensors: list[tuple[tuple[int, ...], int]] = []
        trainable = 0
        for t in tensors:
            count = _trainable_count(t, model, training)
            if count:
                trainable += count * t.numel_each
                trainable_tensors.append((t.shape, count))
        return WeightBytes(total_params * w, 0, 0, total_params, trainable, tuple(trainable_tensors))

    if training.method in peft_methods.TABLE:  # the other PEFT methods: frozen base + the method's tensors
        return _peft_weight_bytes(model, training, total_params, w)

    # LoRA / QLoRA: frozen base + adapters (Hu et al. 2021).
    # --lora-layers (peft layers_to_transform): the adapters of the listed layers only (params.layer_linears)
    layers = training.lora_layers
    adapter = lora_params(model, training.lora_targets, training.lora_rank, layers) if model.has_architecture else 0
    adapter_bytes = adapter * dtype_bytes(training.adapter_dtype)
    lora_shapes: list[tuple[tuple[int, ...], int]] = []
    if model.has_architecture:
        from vramcalc.core.params import layer_linears

        for lin in layer_linears(model, training.lora_targets, layers):
            lora_shapes.append(((training.lora_rank * lin.rank_mult, lin.in_features), lin.count))
            lora_shapes.append(((lin.out_features, training.lora_rank * lin.rank_mult), lin.count))
            if training.dora:  # DoRA's magnitude vector (params.dora_params), trained in the adapter dtype
                lora_shapes.append(((lin.out_features,), lin.count))
        if training.dora and outer_targets(training.lora_targets):
            raise UnsupportedCombination("--dora on lm_head / embed_tokens is not modelled (DoRA's weight norm over a "
                                         "vocabulary-wide matrix): adapt them without --dora, or drop them from "
                                         "--lora-targets")
        for outer in outer_targets(training.lora_targets):  # lora.Embedding / the head's lora.Linear
            v, h, r = model.vocab_size or 0, model.hidden_size or 0, training.lora_rank
            lora_shapes += [((r, v), 1), ((h, r), 1)] if outer == "embed_tokens" else [((r, h), 1), ((v, r), 1)]
        if training.dora:
            magnitude = dora_params(model, training.lora_targets, layers)
            adapter += magnitude
            adapter_bytes += magnitude * dtype_bytes(training.adapter_dtype)
    # An encoder's classifier trained beside the adapters (memory/encoder.py): a copy in the weights' dtype.
    from vramcalc.core.memory.encoder import saved_head_tensors

    head = saved_head_tensors(model, training)
    if head:
        head_numel = sum(_numel(shape) * count for shape, count in head)
        adapter += head_numel
        adapter_bytes += head_numel * w
        lora_shapes += head
    if training.lora_trainable_tokens and model.has_architecture:
        # LoRA's trainable_token_indices (peft TrainableTokensLayer.update_layer): trainable_tokens_delta and the
        # trainable_tokens_original buffer, each (tokens, hidden), cast to the adapter dtype with the adapters
        # (measured: fp32 under a bf16 model); a tied lm_head shares them.
        rows = training.lora_trainable_tokens * (model.hidden_size or 0)
        adapter += rows
        adapter_bytes += rows * dtype_bytes(training.adapter_dtype) + _token_buffer_bytes(model, training)
        lora_shapes.append(((training.lora_trainable_tokens, model.hidden_size or 0), 1))
    if training.method == "lora" or not model.has_architecture:
        return _with_copies(WeightBytes(total_params * w, 0, adapter_bytes, total_params, adapter,
                                        tuple(lora_shapes), adapter_buffers=_token_buffer_bytes(model, training)),
                            model, training, w)

    # QLoRA: bitsandbytes replaces the Linear layers of the blocks; embeddings, norms and the
    # LM head stay in the load dtype (transformers' bnb integration skips lm_head by default).
    quantized, data, constants = quantized_storage(model, training.quant_bits, training.double_quant,
                                                   hqq_storage(training, recipe))
    # peft prepare_model_for_kbit_training (peft/utils/other.py): "cast all non INT8 parameters to fp32", every
    # fp16/bf16 parameter (the packed 4-/8-bit weights are uint8/int8 and stay), as the QLoRA recipe calls it.
    rest = (total_params - quantized) * unquantized_bytes(training, recipe)
    return _with_copies(WeightBytes(data + rest, constants, adapter_bytes, total_params, adapter,
                                    tuple(lora_shapes), quantized, data, rest, _token_buffer_bytes(model, training)),
                        model, training, unquantized_bytes(training, recipe))


# the families' notes (memory/vision.py, llava_next.py, idefics3.py, mllama.py, llama4v.py)
QLORA_IMAGE_NOTE = ("QLoRA quantizes the tower's and projector's Linears too (transformers' bitsandbytes "
                    "quantizer skips only lm_head unless llm_int8_skip_modules names more; a tower kept 16-bit "
                    "that way is not modelled)")


@dataclass(frozen=True, slots=True)
class ImageSideBytes:
    """A vision-language model's tower and projector as the run stores them: the load dtype, or under QLoRA their
    nn.Linear modules 4-/8-bit (params.image_linears) and the rest in QLoRA's non-quantized dtype."""

    tower: int
    projector: int
    quantized_params: int = 0  # parameters in quantized Linears (QLoRA)
    # QLoRA: while a quantized image-side Linear runs, its weight dequantized to the compute dtype and (double
    # quantization) the two fp32 absmax copies (activations.py DequantBytes, bitsandbytes MatMul4Bit.forward), the
    # largest Linear's; beside the tower's forward transients. Split: the tower's largest (its layers' transients
    # beside it) and the projector's (it runs after the tower's layers)
    dequant_forward: int = 0
    dequant_tower: int = 0
    dequant_projector: int = 0

    @property
    def total(self) -> int:
        return self.tower + self.projector


def dequant_forward_bytes(training: TrainingSpec, recipe: Recipe, in_features: int, out_features: int) -> int:
    """While one 4-bit Linear runs (QLoRA): its weight dequantized to the compute dtype and, with double quantization,
    the two fp32 absmax copies (bitsandbytes MatMul4Bit.forward, activations.py DequantBytes); 0 otherwise (8-bit:
    int8 matmuls)."""
    if training.method != "qlora" or training.quant_bits != 4:
        return 0
    numel = in_features * out_features
    nested = 2 * 4 * ceil_div(numel, NF4_BLOCK) if training.double_quant else 0
    return dtype_bytes(recipe.compute) * numel + nested


def dequant_backward_bytes(training: TrainingSpec, recipe: Recipe, in_features: int, out_features: int,
                           rows: int) -> int:
    """A quantized Linear's backward on `rows` rows (QLoRA, 4- and 8-bit): the weight dequantized again in the compute
    dtype (MatMul4Bit.backward `grad_output @ dequantize_4bit(B)`, MatMul8bitLt's `CB * SCB / 127`), then grad_A
    beside it (the nested absmax freed by then) and the incoming gradient (activations.py DequantBytes.backward)."""
    if training.method != "qlora":
        return 0
    c = dtype_bytes(recipe.compute)
    numel = in_features * out_features
    nested = 4 * ceil_div(numel, NF4_BLOCK) if training.quant_bits == 4 and training.double_quant else 0
    return c * numel + max(nested, c * rows * in_features) + c * rows * out_features


def image_side_bytes(model: ModelSpec, training: TrainingSpec, recipe: Recipe, tower: int,
                     projector: int) -> ImageSideBytes:
    """Bytes of the image side's `tower` and `projector` parameters (counts from params.py, a family's extras
    included). QLoRA: transformers' bitsandbytes quantizer replaces the image side's Linears as the text model's
    (quantizers/quantizer_bnb_4bit.py _process_model_before_weight_loading, get_keys_to_not_convert skips lm_head
    only): packed data + block constants per Linear (nf4_bytes; 8-bit: int8 + one fp32 scale per row); their biases,
    the convolutions, embeddings and norms in unquantized_bytes (fp32 after prepare_model_for_kbit_training)."""
    w = dtype_bytes(recipe.weight)
    v = model.vision
    if training.method != "qlora" or v is None:
        return ImageSideBytes(tower * w, projector * w)
    from vramcalc.core.params import image_linears

    unq = unquantized_bytes(training, recipe)
    parts = []
    quantized = 0
    for total, linears in zip((tower, projector), image_linears(v, model.hidden_size or 0), strict=True):
        stored = numel = 0
        for lin in linears:
            each = lin.in_features * lin.out_features
            d, c = nf4_bytes(each, training.double_quant) if training.quant_bits == 4 else (each, 4 * lin.out_features)
            stored += (d + c) * lin.count
            numel += each * lin.count
        parts.append(stored + (total - numel) * unq)
        quantized += numel
    tower_lin, projector_lin = image_linears(v, model.hidden_size or 0)
    dq_tower, dq_projector = (max((dequant_forward_bytes(training, recipe, lin.in_features, lin.out_features)
                                   for lin in linears), default=0) for linears in (tower_lin, projector_lin))
    return ImageSideBytes(parts[0], parts[1], quantized, max(dq_tower, dq_projector), dq_tower, dq_projector)


def _token_buffer_bytes(model: ModelSpec, training: TrainingSpec) -> int:
    """LoRA's trainable_token_indices: the trainable_tokens_original buffer (a copy of the trained rows)."""
    return training.lora_trainable_tokens * (model.hidden_size or 0) * dtype_bytes(training.adapter_dtype)


def saved_copies(model: ModelSpec, training: TrainingSpec) -> tuple[ParamTensor, ...]:
    """The tensors peft's modules_to_save copies (peft/utils/other.py ModulesToSaveWrapper.update:
    `copy.deepcopy(self.original_module)`, the original frozen beside it). A tied LM head is the embedding matrix:
    one copy however it is named."""
    from vramcalc.core.params import saved_module

    wanted = {saved_module(name) for name in training.modules_to_save}
    if model.tie_word_embeddings and wanted >= {"embed_tokens", "lm_head"}:
        # both named on a tied model: peft wraps each module and deep-copies each on its own (the embedding, and
        # the Linear lm_head whose weight is that embedding), two trainable copies no longer tied to each other
        # (measured with the tracer: qwen2.5-0.5b, --grid vocab; peft warns that ensure_weight_tying is unset)
        embed = [t for t in inventory(model) if t.module == "embed_tokens" and t.kind == "embedding"]
        return (*embed, *(replace(t, name="lm_head", kind="head", module="lm_head") for t in embed))
    if model.tie_word_embeddings and "lm_head" in wanted:
        wanted = (wanted - {"lm_head"}) | {"embed_tokens"}
    return tuple(t for t in inventory(model) if t.module in wanted and t.kind in ("embedding", "head"))


def saved_head(model: ModelSpec, training: TrainingSpec) -> bool:
    """Whether modules_to_save trains the LM head (a copy of lm_head, or of the tied embedding that is the head)."""
    if training.method not in ("lora", "qlora") or not training.modules_to_save:
        return False
    return any(t.kind == "head" or model.tie_word_embeddings for t in saved_copies(model, training))


def saved_embedding(model: ModelSpec, training: TrainingSpec) -> bool:
    """Whether modules_to_save trains the input embedding (its output then needs a gradient in layer 0)."""
    if training.method not in ("lora", "qlora") or not training.modules_to_save:
        return False
    return any(t.kind == "embedding" for t in saved_copies(model, training))


def _with_copies(wb: WeightBytes, model: ModelSpec, training: TrainingSpec, elem: int) -> WeightBytes:
    """`wb` plus the modules_to_save copies, each in the dtype of the module it copies (`elem` bytes: peft's
    cast_adapter_dtype upcasts tuner layers only, so the copy keeps the model's dtype, or fp32 after
    prepare_model_for_kbit_training)."""
    if not training.modules_to_save or not model.has_architecture:
        return wb
    from dataclasses import replace

    copies = saved_copies(model, training)
    n = sum(t.numel for t in copies)
    shapes = tuple((t.shape, t.count) for t in copies)
    return replace(wb, adapters=wb.adapters + n * elem, trainable=wb.trainable + n,
                   trainable_tensors=wb.trainable_tensors + shapes, copies=n, copy_elem_bytes=elem,
                   copy_tensors=shapes)


def _peft_weight_bytes(model: ModelSpec, training: TrainingSpec, total_params: int, w: int) -> WeightBytes:
    """A core/peft_methods.py method: the frozen base in its dtype, the method's trainable tensors (fp32 adapters
    under --adapter-dtype; LN tuning's norm copies in the model's dtype) and VeRA's shared fp32 projections."""
    if not model.has_architecture:
        raise UnsupportedCombination(f"method {training.method!r} needs the architecture of {model.name!r}")
    tensors = peft_methods.trainable_tensors(model, training)
    trainable = peft_methods.trainable_params(model, training)
    elem = w if training.method in peft_methods.MODEL_DTYPE_METHODS else dtype_bytes(training.adapter_dtype)
    buffers = 0
    if training.method == "vera":
        buffers = 4 * peft_methods.vera_projection_elements(model, training)  # vera_A, vera_B: torch.randn, fp32
    if training.method == "trainable-tokens":  # trainable_tokens_original: a copy of the trained rows (buffer)
        buffers = trainable * elem
    entry = peft_methods.method_of(training.method, training)
    if entry is not None and entry.linear is not None:  # per-Linear buffers (OFT, BOFT, SHiRA: LinearRule.buffers)
        for lin, _ in peft_methods.adapted_linears(model, training):
            for shape, elem_bytes in entry.linear.buffers(lin.in_features, lin.out_features):
                buffers += lin.count * elem_bytes * math.prod(shape)
    return WeightBytes(total_params * w, 0, trainable * elem + buffers, total_params, trainable, tensors,
                       adapter_buffers=buffers)


# --- The run's tensors by where they live (memory/distributed.py: gathered units, pipeline stages) -------------
# The same per-tensor rules as weight_bytes above, kept per part of the model, so that what a GPU gathers or holds
# under sharding is the bytes of its own tensors (4-bit layers and 32-bit embeddings differ per element).


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """`count` alike tensors of one part of the model as the run stores them: a base parameter, a PEFT tensor
    (`kind` "adapter") or a buffer (`kind` "buffer")."""

    module: str  # the module owning it as its own parameter (DeepSpeed ZeRO-3 gathers module by module)
    kind: str  # the inventory's TensorKind for a base parameter, "adapter" or "buffer"
    shape: tuple[int, ...]
    count: int  # per part: per layer for a layer's tensors
    elem: int  # bytes per element; 0 for a bitsandbytes-quantized Linear (quant_bits)
    trainable: bool
    quant_bits: int = 0
    double_quant: bool = False
    cast: bool = False  # autocast casts it to 16 bits in forward (block Linears' and the head's weights)
    hqq: tuple[int, int, int] | None = None  # an HQQLinear's (group size, axis, compute bytes): hqq_storage

    @property
    def split(self) -> bool:
        """Megatron splits Linears, the embedding and the head across the tp group (Shoeybi et al. 2019 §3);
        norms, biases, routers, buffers and adapters are counted whole on every rank."""
        return self.kind in ("linear", "embedding", "head", "opaque")

    def shard_shape(self, tp: int = 1) -> tuple[int, ...]:
        """One tensor-parallel rank's shape: the first (output / vocabulary) dimension split."""
        if tp == 1 or not self.split:
            return self.shape
        return (ceil_div(self.shape[0], tp), *self.shape[1:])

    def numel_each(self, tp: int = 1) -> int:
        n = 1
        for d in self.shard_shape(tp):
            n *= d
        return n

    def bytes_each(self, tp: int = 1) -> int:
        """Stored bytes of one tensor (one tp rank's shard): packed data + constants for a quantized Linear."""
        n = self.numel_each(tp)
        if self.hqq is not None and self.quant_bits:
            shape = self.shard_shape(tp)
            q = _hqq.linear_bytes(shape[-1], n // shape[-1], self.quant_bits, *self.hqq)
            return q.packed + q.meta
        if self.quant_bits == 4:
            d, c = nf4_bytes(n, self.double_quant)
            return d + c
        if self.quant_bits == 8:
            return n + 4 * self.shard_shape(tp)[0]  # int8 data + one fp32 scale per output row
        return n * self.elem


@dataclass(frozen=True, slots=True)
class TensorGroups:
    """The run's stored tensors by place: `embed` (input side: embeddings, positions, prompt encoders), `head`
    (output side: final norm, LM head, other norms outside the layers), `shared` (buffers every stage keeps), and
    the layers as (how many, one layer's tensors) segments from the bottom up (dense / MoE, frozen / trained)."""

    embed: tuple[StoredTensor, ...]
    head: tuple[StoredTensor, ...]
    shared: tuple[StoredTensor, ...]
    layers: tuple[tuple[int, tuple[StoredTensor, ...]], ...]

    @property
    def root(self) -> tuple[StoredTensor, ...]:
        """The parameters outside the layers (FSDP's root unit): the embed and head sides."""
        return self.embed + self.head


_MLP = ("gate_proj", "up_proj", "down_proj", "gate_up_proj")


# Nemotron-H's per-layer tensors by the layer kind holding them (params.nemotron_h_tensors; hybrid_pattern's letters)
_NEMOTRON_H_KIND = {"q_proj": "*", "k_proj": "*", "v_proj": "*", "o_proj": "*", "in_proj": "M", "out_proj": "M",
                    "conv1d": "M", "conv1d.bias": "M", "dt_bias": "M", "A_log": "M", "D": "M", "gated_norm": "M",
                    "up_proj": "-", "down_proj": "-", "router": "E", "fc1_latent_proj": "E", "fc2_latent_proj": "E"}


def _layer_kind(module: str, kind: str, moe: bool, pattern: str = "") -> str:
    """Which layers hold a per-layer tensor: every layer, the dense (bottom) ones, or the MoE ones; a Nemotron-H
    model's (`pattern`, its hybrid_pattern; `module` the Linear's name, else the tensor's): the layers of one kind
    ("M", "*", "-", "E"), or every layer (the block norm)."""
    if pattern:
        if module.startswith(("experts.", "shared_expert")):
            return "E"
        return _NEMOTRON_H_KIND.get(module.removesuffix(".bias") if kind == "bias" else module, "all")
    if kind == "router" or module == "router" or module.startswith(("experts.", "shared_expert")):
        return "moe"
    if moe and module.rsplit(".", 1)[-1] in _MLP and kind in ("linear", "bias"):
        return "dense"
    return "all"


def tensor_groups(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> TensorGroups:
    """Every tensor weight_bytes counts, placed in the root, the shared buffers or its layer (same dtypes and
    rules: the sum over the groups is weight_bytes' total and its trainable count, tests/test_sharded_bytes.py)."""
    from vramcalc.core.params import dense_layers, resolve_targets

    w = dtype_bytes(recipe.weight)
    method = training.method
    qlora = method == "qlora" and model.has_architecture
    unq = unquantized_bytes(training, recipe) if qlora else w
    hqq = hqq_storage(training, recipe)
    extra = buffer_bytes(model)
    shared: tuple[StoredTensor, ...] = (StoredTensor("", "buffer", (extra,), 1, 1, False),) if extra else ()
    if not model.has_architecture:
        (t,) = inventory(model)
        return TensorGroups((StoredTensor(t.name, t.kind, t.shape, 1, w, method == "full"),), (), shared, ())
    assert model.num_layers is not None
    n = model.num_layers
    n_dense = dense_layers(model)
    moe = n_dense < n
    frozen = freeze_fraction(model, training)[0] if method == "freeze" else 0
    per_kind_layers = {"all": n, "dense": n_dense, "moe": n - n_dense}
    pattern = model.hybrid_pattern  # Nemotron-H: its layers grouped by kind (_layer_kind)
    per_kind_layers |= {k: pattern.count(k) for k in set(pattern)}
    embed: list[StoredTensor] = []
    head: list[StoredTensor] = []
    # per-layer tensors by the layers holding them, each with whether a trained (not frozen) layer trains it
    in_layers: dict[str, list[tuple[StoredTensor, bool]]] = {"all": [], "dense": [], "moe": []} | {
        k: [] for k in set(pattern)}
    full_like = method in ("full", "freeze")
    fp32_routers = {t.name for t in fp32_router_tensors(model, recipe)
                    + _upcast_norms.norm_tensors(model, training, recipe)}  # (memory/upcast_norms.py)
    # Zamba2's tied shared blocks stay 16-bit under QLoRA (params.zamba2_quantized)
    zamba2_quant = {lin.module for lin in quantized_linears(model)} if is_zamba2(model) else set()
    for t in inventory(model):
        key = t.module if t.kind in ("linear", "bias") else "lm_head" if t.kind == "head" else t.name
        cast = t.kind in ("linear", "head") and not t.name.endswith(".bias") or (
            t.kind == "embedding" and model.tie_word_embeddings)
        quant = training.quant_bits if qlora and t.kind == "linear" and not (
            t.module.startswith("experts.") and fused_experts(model)) and not (
            is_zamba2(model) and t.module not in zamba2_quant) else 0
        elem = 0 if quant else 4 if t.name in fp32_routers else unq if qlora else w
        if t.per_layer:
            where = _layer_kind(t.module if t.kind in ("linear", "bias") or not pattern else t.name, t.kind, moe,
                                pattern)
            each = t.count // per_kind_layers[where]
            in_layers[where].append((StoredTensor(key, t.kind, t.shape, each, elem, False, quant,
                                                  training.double_quant, cast, hqq), full_like))
        else:
            trains = full_like and _trainable_count(t, model, training) > 0
            side = embed if t.kind in ("embedding", "position") else head
            side.append(StoredTensor(key, t.kind, t.shape, t.count, elem, trains, quant, training.double_quant, cast,
                                     hqq))
    # Adapters and the other PEFT methods' tensors, where peft puts them.
    adapter_elem = dtype_bytes(training.adapter_dtype)

    def adapter(module: str, i: int, shape: tuple[int, ...], each: int, elem: int = adapter_elem) -> StoredTensor:
        return StoredTensor(f"{module}#{i}", "adapter", shape, each, elem, True)

    if method in ("lora", "qlora"):
        r = training.lora_rank
        for lin in resolve_targets(model, training.lora_targets):
            where = _layer_kind(lin.module, "linear", moe, model.hybrid_pattern)
            each = lin.count // per_kind_layers[where]
            rr = r * lin.rank_mult
            for i, shape in enumerate(((rr, lin.in_features), (lin.out_features, rr))):  # lora_A, lora_B
                in_layers[where].append((adapter(lin.module, i, shape, each), True))
            if training.dora:  # DoRA's magnitude vector per adapted Linear (params.dora_params)
                in_layers[where].append((adapter(lin.module, 2, (lin.out_features,), each), True))
        v, h = model.vocab_size or 0, model.hidden_size or 0
        for outer in outer_targets(training.lora_targets):  # lora.Embedding / the head's lora.Linear, in the root
            side = embed if outer == "embed_tokens" else head
            shapes = ((r, v), (h, r)) if outer == "embed_tokens" else ((r, h), (v, r))
            side += [adapter(outer, i, shape, 1) for i, shape in enumerate(shapes)]
        if training.lora_trainable_tokens:  # trainable_tokens_delta and its original rows (_token_buffer_bytes)
            shape = (training.lora_trainable_tokens, h)
            embed += [adapter("trainable_tokens", 0, shape, 1),
                      StoredTensor("", "buffer", shape, 1, adapter_elem, False)]
        # modules_to_save copies (_with_copies) in the copied module's dtype, and an encoder's trained classifier
        # copy (memory/encoder.py saved_head_tensors) in the weights' dtype: root tensors beside the originals
        for t in saved_copies(model, training):
            (embed if t.kind in ("embedding", "position") else head).append(
                StoredTensor(f"{t.name}#copy", "adapter", t.shape, t.count, unq, True))
        from vramcalc.core.memory.encoder import saved_head_tensors

        head += [StoredTensor(f"classifier#{i}", "adapter", shape, count, w, True)
                 for i, (shape, count) in enumerate(saved_head_tensors(model, training))]
    elif method in peft_methods.TABLE:
        _peft_groups(model, training, w, adapter_elem, moe, per_kind_layers, in_layers, embed, head, adapter)
        if method == "vera":  # vera_A, vera_B: shared fp32 projections (torch.randn), buffers every layer reads
            shared += (StoredTensor("", "buffer", (peft_methods.vera_projection_elements(model, training),), 1, 4,
                                    False),)
    layers: list[tuple[int, tuple[StoredTensor, ...]]] = []
    if pattern:  # Nemotron-H: one group per layer kind, each with the block norm ("all"); freeze is refused there
        for k in sorted(set(pattern)):
            layers.append((pattern.count(k), tuple(replace(x, trainable=trains) for where in ("all", k)
                                                   for x, trains in in_layers[where])))
        return TensorGroups(tuple(embed), tuple(head), shared, tuple(layers))
    # The layers from the bottom up: dense ones first (DeepSeek first_k_dense_replace), frozen ones first (freeze).
    bounds = sorted({0, n, min(n_dense, n), frozen})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if hi <= lo:
            continue
        parts = ("all", "dense" if lo < n_dense else "moe")
        trained = lo >= frozen
        one = tuple(replace(x, trainable=trains and trained) for where in parts for x, trains in in_layers[where])
        layers.append((hi - lo, one))
    return TensorGroups(tuple(embed), tuple(head), shared, tuple(layers))


def _peft_groups(model: ModelSpec, training: TrainingSpec, w: int, adapter_elem: int, moe: bool,
                 per_kind_layers: dict[str, int], in_layers: dict[str, list[tuple[StoredTensor, bool]]],
                 embed: list[StoredTensor], head: list[StoredTensor],
                 adapter: Callable[..., StoredTensor]) -> None:
    """A core/peft_methods.py method's tensors (as _peft_weight_bytes counts them) in their layer or the root."""
    assert model.num_layers is not None
    entry = peft_methods.method_of(training.method, training)
    assert entry is not None
    if entry.linear is not None:
        for lin, ff in peft_methods.adapted_linears(model, training):
            where = _layer_kind(lin.module, "linear", moe, model.hybrid_pattern)
            each = lin.count // per_kind_layers[where]
            for i, shape in enumerate(entry.linear.shapes(lin.in_features, lin.out_features, training.lora_rank, ff)):
                in_layers[where].append((adapter(lin.module, i, shape, each), True))
            for shape, elem_bytes in entry.linear.buffers(lin.in_features, lin.out_features):  # OFT, BOFT, SHiRA
                in_layers[where].append((StoredTensor("", "buffer", shape, each, elem_bytes, False), False))
        return
    if entry.kind == "norm":  # LN tuning: copies of the targeted norms in the model's dtype
        ((shape, count),) = peft_methods.trainable_tensors(model, training)
        vectors = 2 if model.norm == "layernorm" else 1
        qwen = model.family.lower() in ("qwen2", "qwen3")  # peft_methods.norm_count: post_attention_layernorm only
        per_layer, final = (1, 0) if qwen else (model.norms_per_layer, int(model.final_norm))
        assert (per_layer * model.num_layers + final) * vectors == count
        if per_layer:
            in_layers["all"].append((adapter("ln_tuning", 0, shape, per_layer * vectors, w), True))
        if final:  # the final norm's copy
            head.append(adapter("ln_tuning.final", 0, shape, vectors, w))
        return
    if entry.kind == "attention":  # adaption prompt: a prompt and a gate in each of the top layers, model dtype
        k = peft_methods.adaption_layers(model, training)
        for i, (shape, count) in enumerate(peft_methods.trainable_tensors(model, training)):
            if k == model.num_layers:
                in_layers["all"].append((adapter("adaption_prompt", i, shape, 1, w), True))
            else:  # only the top k layers hold them: kept with the head, the end of the model they sit at
                head.append(adapter("adaption_prompt", i, shape, count, w))
        return
    # Prompt and prefix encoders, trainable tokens: modules at the input, outside the layers.
    for i, (shape, count) in enumerate(peft_methods.trainable_tensors(model, training)):
        embed.append(adapter(training.method, i, shape, count))
        if training.method == "trainable-tokens":  # trainable_tokens_original: a copy of the trained rows
            embed.append(StoredTensor("", "buffer", shape, count, adapter_elem, False))
