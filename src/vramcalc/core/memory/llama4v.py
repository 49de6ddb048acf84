"""Llama 4 multimodal (kind llama4): the processor's tiles, then the text model's step on text + image tokens with
the image side's terms added.

transformers models/llama4/image_processing_llama4.py Llama4ImageProcessor: find_supported_resolutions lists every
(rows, cols) tile layout of at most max_patches tiles (times the tile side, size 336); get_best_fit picks the
canvas that needs the smallest upscale (or, when none upscales, the least downscale), ties to the least area; the
image is resized into it, padded and cut into rows x cols tiles, and when that is more than one a global tile (the
image resized to 336 x 336) is appended. models/llama4/processing_llama4.py Llama4Processor._prompt_split_image:
<|image_start|>, for a split image each row's tiles of num_patches_per_chunk <|patch|> tokens with a
<|tile_x_separator|> between them and a <|tile_y_separator|> after the row, then <|image|>, the global tile's
<|patch|> tokens and <|image_end|>; num_patches_per_chunk = (336 // 14)^2 // downsample_ratio (1 / 0.5^2 = 4): 144.
The <|patch|> tokens (config image_token_index) are the placeholders the image features replace.

models/llama4/modeling_llama4.py Llama4ForConditionalGeneration.forward: the text embeddings first, then
get_image_features runs Llama4VisionModel on every tile (not under no_grad: a frozen tower saves nothing because
nothing in it requires grad, unless checkpointing's enable_input_require_grads hooks its patch embedding) --
Llama4UnfoldConvolution (Unfold, permute, Linear), the class token appended (torch.cat), positions added,
layernorm_pre, Llama4VisionEncoder (LayerNorm, biased q/k/v, the 2-D RoPE in fp32 complex
(vision_apply_rotary_emb), sdpa without a mask, o_proj, LayerNorm, fc1, GELU, fc2), layernorm_post, the class row
dropped (a view), Llama4VisionPixelShuffleMLP (pixel_shuffle's two contiguous copies, fc1, GELU, fc2, GELU) --;
multi_modal_projector (one Linear) maps the flat features to the text width and masked_scatter puts them in place of
the <|patch|> tokens; the language model (Llama4ForCausalLM) runs on the whole sequence and the loss on its logits.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory.vision import DEFAULT_IMAGE_SIZE, _text_model, images_per_sample

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec


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
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for count in range(max_tiles, 0, -1):
        factors = sorted({f for i in range(1, int(count ** 0.5) + 1) if count % i == 0 for f in (i, count // i)})
        for f in factors:
            by_ratio.setdefault(f / (count // f), []).append((f, count // f))
    return [layout for group in by_ratio.values() for layout in group]


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


def total_tokens(model: ModelSpec, training: TrainingSpec) -> int:
    """Tokens the language model runs on per sample: the text's --seq-len and every image's tokens."""
    assert model.vision is not None
    return training.seq_len + images_per_sample(training) * image_tokens_per_image(model.vision, training)


def text_run(model: ModelSpec, training: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The language model and its run: the sequence lengthened by the image tokens, the image options gone (the
    image tokens attend like the text: Llama4TextModel builds its causal / chunked masks from the positions)."""
    out = replace(training, seq_len=total_tokens(model, training), images=0, image_size=DEFAULT_IMAGE_SIZE,
                  image_width=0, train_vision=False)
    return _text_model(model), out


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """What the Llama 4 image arithmetic does not cover, refused in one line (the common VLM refusals are
    memory/vision.py check's)."""
    from vramcalc.core.memory.vision import check as vision_check

    v = model.vision
    assert v is not None
    h, w = image_hw(v, training)
    if max(h, w) > 100 * v.image_size:
        raise SpecError("image_size", f"a {h} x {w} px image: give sides up to {100 * v.image_size} px (the processor "
                        f"resizes it to at most {v.max_num_tiles} tiles of {v.image_size} px anyway)")
    if training.train_vision:
        raise UnsupportedCombination(f"--train-vision is not modelled for {model.name} (Llama 4: the trained tower's "
                                     "saved activations over every tile are not counted): drop it")
    if training.attention != "sdpa":
        raise UnsupportedCombination(f"--attention {training.attention} is not modelled for {model.name}'s images "
                                     "(Llama 4 multimodal: the tower's eager softmax over every tile is not counted; "
                                     "flash is refused by Llama 4): use --attention sdpa")
    vision_check(model, training)


__all__ = ["check", "image_hw", "image_tokens_per_image", "layout", "supported_layouts", "text_run",
           "tiles_per_image", "tokens_per_tile", "total_tokens", "wrap_tokens_per_image"]
