"""Llama 4's image arithmetic (transformers models/llama4/image_processing_llama4.py and processing_llama4.py,
reproduced with the library's own float32 steps) and what memory/llama4v.py does not cover, refused in one line. A
leaf module: memory/vision.py (its check) and memory/llama4v.py (the estimate) read it.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory.precision import recipe_of

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec

# TrainingSpec.image_size's default, memory/vision.py DEFAULT_IMAGE_SIZE (not imported: vision.py imports this module)
DEFAULT_IMAGE_SIZE = 224


def image_hw(v: VisionSpec, training: TrainingSpec) -> tuple[int, int]:
    """The image's height and width in pixels: --image-size (its default standing for one tile's size, square) and
    --image-width (0: square)."""
    h = v.image_size if training.image_size == DEFAULT_IMAGE_SIZE else training.image_size
    return h, training.image_width or h


def _f32(x: float) -> float:
    """x rounded to float32: get_best_fit divides int64 tensors by a Python int, a float32 result in torch."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def supported_layouts(max_tiles: int) -> list[tuple[int, int]]:
    """find_supported_resolutions (image_processing_llama4.py) in tiles, in its order: for each tile count from
    max_tiles down, its factor pairs (height, width), grouped by aspect ratio in first-seen order."""
    return list(_supported_layouts(max_tiles))


@cache
def _supported_layouts(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """supported_layouts, built once per max_tiles (memory/pixel_budget.py asks for it at every size it tries)."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for count in range(max_tiles, 0, -1):
        factors = sorted({f for i in range(1, int(count ** 0.5) + 1) if count % i == 0 for f in (i, count // i)})
        for f in factors:
            by_ratio.setdefault(f / (count // f), []).append((f, count // f))
    return tuple(layout for group in by_ratio.values() for layout in group)


def layout(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of tiles get_best_fit picks for a height x width image (image_processing_llama4.py, with its
    float32 scales): the smallest scale >= 1 of min(scale_h, scale_w) over the canvases, or else the largest below
    1; among the canvases at that scale the smallest area, the first in find_supported_resolutions' order."""
    tile = v.image_size
    layouts = supported_layouts(v.max_num_tiles)
    scales = []
    for rows, cols in layouts:
        scale_w, scale_h = _f32(cols * tile / width), _f32(rows * tile / height)
        scales.append(scale_w if scale_h > scale_w else scale_h)
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(scales)
    best = None
    for (rows, cols), s in zip(layouts, scales, strict=True):
        if s == chosen and (best is None or rows * cols < best[0] * best[1]):
            best = (rows, cols)
    assert best is not None
    return best


def tiles_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Tiles the tower runs per image: rows x cols, and the global tile when that is more than one."""
    rows, cols = layout(v, *image_hw(v, training))
    return rows * cols + 1 if rows * cols > 1 else 1


def tokens_per_tile(v: VisionSpec) -> int:
    """Features per tile: the (image_size / patch)^2 patches after pixel_shuffle by scale_factor (144 for 336 px
    tiles of 14 px patches, ratio 0.5); the processor's num_patches_per_chunk."""
    return (v.image_size // v.patch_size) ** 2 // v.scale_factor ** 2


def wrap_tokens_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Text tokens _prompt_split_image adds beside the <|patch|> tokens: <|image_start|>, <|image|>, <|image_end|>,
    and for a split image one separator after each tile (the x separators between a row's tiles and the y
    separator after it). The prompt's own <|image|> is replaced: counted here, not in --seq-len."""
    rows, cols = layout(v, *image_hw(v, training))
    return 3 + (rows * cols if rows * cols > 1 else 0)


def image_tokens_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Tokens one image adds to the sequence: every tile's <|patch|> tokens and the wrapping tokens."""
    return tiles_per_image(v, training) * tokens_per_tile(v) + wrap_tokens_per_image(v, training)


# Llama4VisionEncoderLayer's Linears in forward order (Llama4VisionAttention q/k/v/o_proj, Llama4VisionMLP fc1 / fc2)
TOWER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


# optimizers whose state is a count of parameters times its dtype (memory/optimizer.py optimizer_bytes): the tower's
# own weights trained under LoRA are counted for these (memory/llama4v.py tower_states)
COUNT_STATE_OPTIMIZERS = ("adamw", "paged-adamw", "sgd", "sgd-momentum", "lion")


def tower_adapted(model: ModelSpec, training: TrainingSpec) -> tuple[str, ...]:
    """The tower Linears peft adapts in every encoder layer (memory/llama4v.py lora_targets), empty for the methods
    other than LoRA / QLoRA."""
    from vramcalc.core.peft_methods import tower_lora_split

    if training.method not in ("lora", "qlora"):
        return ()
    return tower_lora_split(model, training, TOWER_LINEARS)[0]


def own_check(model: ModelSpec, training: TrainingSpec) -> None:
    """What the Llama 4 image arithmetic does not cover, refused in one line (memory/vision.py check calls it before
    the common vision-language refusals)."""
    v = model.vision
    assert v is not None
    h, w = image_hw(v, training)
    if max(h, w) > 100 * v.image_size:
        raise SpecError("image_size", f"a {h} x {w} px image: give sides up to {100 * v.image_size} px (the processor "
                        f"resizes it to at most {v.max_num_tiles} tiles of {v.image_size} px anyway)")
    if training.attention == "eager" and tower_adapted(model, training):
        # memory/llama4v.py counts eager attention in a frozen tower (nothing saved, or recomputed one layer at a time
        # when checkpointed) and in a trained one (--train-vision); not beside the tower's adapters' saved inputs
        raise UnsupportedCombination(f"--attention eager with LoRA targets {','.join(training.lora_targets)} that "
                                     f"reach {model.name}'s tower is not modelled (its adapted layers' saved heads x "
                                     "rows x rows scores): use --attention sdpa, or targets only the language model "
                                     "has (gate_proj,up_proj,down_proj)")
    if training.attention not in ("sdpa", "eager"):
        raise UnsupportedCombination(f"--attention {training.attention} is not modelled for {model.name}'s images "
                                     "(Llama 4 refuses flash attention): use --attention sdpa or eager")
    if training.method == "qlora" and training.kbit_prep:
        raise UnsupportedCombination(f"QLoRA with prepare_model_for_kbit_training is not modelled for {model.name}'s "
                                     "images (it casts the tower's and projector's norms and embeddings to fp32, whose "
                                     "activations are not counted): add --no-kbit-prep")
    if training.train_vision and training.method == "qlora":
        # quantizers/base.py get_keys_to_not_convert keeps only the tied, last and output-embedding modules in 16 bits:
        # the tower's Linears are bitsandbytes 4-bit (Params4bit, uint8), which take no gradient
        raise UnsupportedCombination(f"--train-vision with --method qlora cannot train {model.name}'s tower: "
                                     "bitsandbytes quantizes its Linear layers to 4 bits, which take no gradient: use "
                                     "--method lora or full, or drop --train-vision")
    if training.train_vision and training.method == "lora":
        adapted = tower_adapted(model, training)
        if adapted:
            raise UnsupportedCombination(f"--train-vision with LoRA targets {','.join(adapted)} in {model.name}'s "
                                         "tower is not modelled (the tower trained whole under adapters): give targets "
                                         "only the language model has (gate_proj,up_proj,down_proj), or drop "
                                         "--train-vision")
        if training.optimizer not in COUNT_STATE_OPTIMIZERS:
            raise UnsupportedCombination(f"--train-vision with LoRA and --optimizer {training.optimizer} is not "
                                         f"modelled for {model.name} (the tower's optimizer state beside the adapters' "
                                         f"is counted for {', '.join(COUNT_STATE_OPTIMIZERS)}): use one of them")
    if recipe_of(training).autocast and (training.grad_checkpointing or training.train_vision
                                         or training.method == "qlora" or training.attention == "eager"
                                         or tower_adapted(model, training)):
        # memory/llama4v.py _amp_forward: a frozen tower run once without grad; not its recomputation, its saved set
        # when trained or adapted (fp32 LayerNorm outputs and residuals, Linear input casts)
        why = ("--grad-checkpointing" if training.grad_checkpointing else
               "--train-vision" if training.train_vision else "--method qlora" if training.method == "qlora" else
               "--attention eager" if training.attention == "eager" else "LoRA targets that reach the tower")
        raise UnsupportedCombination(f"--precision {training.precision} (autocast) with {why} is not modelled for "
                                     f"{model.name}'s images (the tower's fp32 saved set under autocast): use bf16 or "
                                     "pure-bf16" + ("" if why[:2] == "--" else
                                                    ", or targets only the language model has "
                                                    "(gate_proj,up_proj,down_proj)"))
