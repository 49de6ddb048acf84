"""LLaVA-NeXT's "anyres" image arithmetic (transformers image_processing_utils.py select_best_resolution,
models/llava_next/modeling_llava_next.py image_size_to_num_patches / unpad_image, processing_llava_next.py
_get_number_of_features), reproduced with the library's own float steps, and what it does not cover refused in one
line. A leaf module: memory/vision.py (image tokens, checks) and memory/llava_next.py (the estimate) read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError, UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec


def best_resolution(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """image_processing_utils.py select_best_resolution: the pinpoint (height, width) whose downscaled image keeps
    the most pixels (the image's own count at most), ties to the least padding; the library's float steps."""
    best, most, least = v.grid_pinpoints[0], 0, float("inf")
    for h, w in v.grid_pinpoints:
        scale = min(w / width, h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        wasted = w * h - kept
        if kept > most or (kept == most and wasted < least):
            best, most, least = (h, w), kept, wasted
    return best


def tiles(v: VisionSpec, height: int, width: int) -> int:
    """Tiles the tower runs per image: the best resolution cut into image_size squares, plus the base image
    (modeling_llava_next.py image_size_to_num_patches)."""
    h, w = best_resolution(v, height, width)
    return (h // v.image_size) * (w // v.image_size) + 1


def unpadded_grid(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """The tile features' grid (rows, columns of 24 x 24-feature tiles) after unpad_image: the padding the
    processor added around the resized image removed, as processing_llava_next.py _get_unpadded_features
    computes it (int(round(x, 7)) included)."""
    return unpadded_grid_at(v, height, width, best_resolution(v, height, width))


def unpadded_grid_at(v: VisionSpec, height: int, width: int, best: tuple[int, int]) -> tuple[int, int]:
    """unpadded_grid with the best resolution given (memory/pixel_budget.py knows it without the search)."""
    side = v.image_size // v.patch_size
    bh, bw = best
    rows, cols = side * (bh // v.image_size), side * (bw // v.image_size)
    if width / height > cols / rows:
        new_height = int(round(height * (cols / width), 7))
        rows -= (rows - new_height) // 2 * 2
    else:
        new_width = int(round(width * (rows / height), 7))
        cols -= (cols - new_width) // 2 * 2
    return rows, cols


def image_tokens(v: VisionSpec, height: int, width: int) -> int:
    """One image's tokens (LlavaNextProcessor._get_number_of_features less the class token of the "default"
    strategy): the unpadded grid, one image_newline per row, and the base tile's (image_size / patch)^2."""
    rows, cols = unpadded_grid(v, height, width)
    return rows * cols + rows + (v.image_size // v.patch_size) ** 2


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """What the LLaVA-NeXT arithmetic does not cover, refused in one line (the common VLM refusals are
    memory/vision.py check's)."""
    v = model.vision
    assert v is not None
    if not v.drop_cls:
        raise UnsupportedCombination(f"{model.name}: vision_feature_select_strategy 'full' is not modelled for "
                                     "LLaVA-NeXT (pack_image_features expects 576 features a tile)")
    if training.attention == "eager":
        raise UnsupportedCombination(f"--attention eager is not modelled for {model.name} (LLaVA-NeXT: the tower's "
                                     "eager softmax over every tile is not counted): use --attention sdpa")
    if max(image_shape(training)) > 100 * v.image_size:
        raise SpecError("image_size", f"a {' x '.join(map(str, image_shape(training)))} px image: give sides up to "
                        f"{100 * v.image_size} px (the processor resizes it to the best image_grid_pinpoints "
                        "resolution anyway)")


def image_shape(training: TrainingSpec) -> tuple[int, int]:
    """(height, width) of each image: --image-size, and --image-width when given (0: square)."""
    return training.image_size, training.image_width or training.image_size
