"""Model weights on the GPU: which tensors are trainable, and the bytes of each stored form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core import peft_methods
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import Recipe
from vramcalc.core.params import ParamTensor, block_linears, dora_params, inventory, lora_params, outer_targets
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
    return 4 if training.kbit_prep and w < 4 else w


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
    # peft modules_to_save (saved_copies): full trainable copies of embed_tokens / lm_head in the model's dtype,
    # counted in `adapters`, `trainable` and `trainable_tensors`; their parameter count, bytes per element, shapes
    copies: int = 0
    copy_elem_bytes: int = 0
    copy_tensors: tuple[tuple[tuple[int, ...], int], ...] = ()

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


def freeze_fraction(model: ModelSpec, training: TrainingSpec) -> tuple[int, int]:
    """(frozen layers, total layers) for method `freeze`, clamped to the model's depth."""
    n_layers = model.num_layers or 1
    frozen = min(training.freeze_layers or 0, n_layers)
    return frozen, n_layers


def _trainable_count(t: ParamTensor, model: ModelSpec, training: TrainingSpec) -> int:
    """How many of the `t.count` tensors are trained under `full` or `freeze`."""
    if training.method == "full":
        return t.count
    frozen, n_layers = freeze_fraction(model, training)
    if t.per_layer:
        # Uniform layers: each layer holds count / n_layers of these tensors (exact for dense models;
        # for MoE stacks with dense bottom layers, a whole-tensor approximation).
        return t.count * (n_layers - frozen) // n_layers
    if t.kind in ("head", "norm"):  # final norm and LM head sit above the layers
        return t.count if training.train_head else 0
    if t.kind == "embedding" and model.tie_word_embeddings and training.train_head:
        return t.count  # a tied head is the embedding matrix
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


def weight_bytes(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> WeightBytes:
    """Bytes of every weight tensor the run keeps on the GPU, and the trainable count."""
    wb = _weight_bytes(model, training, recipe)
    extra = buffer_bytes(model)
    if not extra:
        return wb
    from dataclasses import replace

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
    adapter = lora_params(model, training.lora_targets, training.lora_rank) if model.has_architecture else 0
    adapter_bytes = adapter * dtype_bytes(training.adapter_dtype)
    lora_shapes: list[tuple[tuple[int, ...], int]] = []
    if model.has_architecture:
        from vramcalc.core.params import resolve_targets

        for lin in resolve_targets(model, training.lora_targets):
            lora_shapes.append(((training.lora_rank, lin.in_features), lin.count))
            lora_shapes.append(((lin.out_features, training.lora_rank), lin.count))
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
            magnitude = dora_params(model, training.lora_targets)
            adapter += magnitude
            adapter_bytes += magnitude * dtype_bytes(training.adapter_dtype)
    if training.method == "lora" or not model.has_architecture:
        return _with_copies(WeightBytes(total_params * w, 0, adapter_bytes, total_params, adapter,
                                        tuple(lora_shapes)), model, training, w)

    # QLoRA: bitsandbytes replaces the Linear layers of the blocks; embeddings, norms and the
    # LM head stay in the load dtype (transformers' bnb integration skips lm_head by default).
    data = constants = 0
    quantized = 0
    for lin in block_linears(model):
        numel = lin.in_features * lin.out_features
        quantized += numel * lin.count
        if training.quant_bits == 4:
            d, c = nf4_bytes(numel, training.double_quant)
        else:
            d, c = numel, 4 * lin.out_features
        data += d * lin.count
        constants += c * lin.count
    # peft prepare_model_for_kbit_training (peft/utils/other.py): "cast all non INT8 parameters to fp32", every
    # fp16/bf16 parameter (the packed 4-/8-bit weights are uint8/int8 and stay), as the QLoRA recipe calls it.
    rest = (total_params - quantized) * unquantized_bytes(training, recipe)
    return _with_copies(WeightBytes(data + rest, constants, adapter_bytes, total_params, adapter,
                                    tuple(lora_shapes), quantized, data, rest),
                        model, training, unquantized_bytes(training, recipe))


def saved_copies(model: ModelSpec, training: TrainingSpec) -> tuple[ParamTensor, ...]:
    """The tensors peft's modules_to_save copies (peft/utils/other.py ModulesToSaveWrapper.update:
    `copy.deepcopy(self.original_module)`, the original frozen beside it). A tied LM head is the embedding matrix:
    one copy however it is named."""
    from vramcalc.core.params import saved_module

    wanted = {saved_module(name) for name in training.modules_to_save}
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
    elem = w if training.method == "ln-tuning" else dtype_bytes(training.adapter_dtype)
    adapters = trainable * elem
    if training.method == "vera":
        adapters += 4 * peft_methods.vera_projection_elements(model, training)  # vera_A, vera_B: torch.randn, fp32
    if training.method == "trainable-tokens":  # trainable_tokens_original: a copy of the trained rows (buffer)
        adapters += trainable * elem
    if training.method == "oft":  # OFTRotationModule's rows / cols buffers: torch.triu_indices, int64
        adapters += 8 * 2 * sum(shape[1] * count for shape, count in tensors)
    return WeightBytes(total_params * w, 0, adapters, total_params, trainable, tensors)
