"""The worst image under LLaMA-Factory's pixel budget for the towers whose tiles / tokens follow each image's size
(LLaVA-NeXT, Llama 4). hiyouga/LLaMA-Factory @ ff6d4d12 data/mm_plugin.py MMPluginMixin._preprocess_image: an image
over image_max_pixels is resized to (int(width * f), int(height * f)) with f = sqrt(image_max_pixels / (width *
height)), so every image reaches the processor with width * height <= image_max_pixels, and every such size reaches it
unchanged (an image already within the budget and at or over image_min_pixels); one under image_min_pixels is scaled
up to at most image_min_pixels' area (the int() floors), which model_args.py keeps <= image_max_pixels. So the sizes
the processor sees are those of area <= image_max_pixels, and image_min_pixels never raises the worst case. A leaf
module: io/runfiles.py maps the keys to --image-size / --image-width with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vramcalc.core.memory import anyres, llama4_tiles

if TYPE_CHECKING:
    from vramcalc.core.specs import VisionSpec

# vramcalc's own cap on an image's side for these towers (memory/anyres.py check, memory/llama4_tiles.py own_check):
# 100 tiles' width
SIDE_TILES = 100


def frontier(max_pixels: int, max_side: int) -> Iterator[tuple[int, int]]:
    """(height, width) pairs with height * width <= max_pixels and sides <= max_side that no other such pair
    dominates (for each height, the widest width, and only the last height of each width)."""
    for h in range(1, min(max_pixels, max_side) + 1):
        w = min(max_pixels // h, max_side)
        if h == min(max_pixels, max_side) or min(max_pixels // (h + 1), max_side) < w:
            yield h, w


def worst(max_pixels: int, max_side: int, cost: Callable[[int, int], tuple[int, ...]]) -> tuple[int, int]:
    """The (height, width) on the budget's frontier with the largest cost, the squarest among equals (then the
    lowest). Exact where cost never falls as a side grows (tests/test_lf_pixels.py checks it against every size)."""
    best, most = (1, 1), (*cost(1, 1), -1)
    for h, w in frontier(max_pixels, max_side):
        c = (*cost(h, w), -max(h, w))
        if c > most:
            best, most = (h, w), c
    return best


def llava_next_cost(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """(image tokens, tiles) of one height x width image (memory/anyres.py)."""
    return anyres.image_tokens(v, height, width), anyres.tiles(v, height, width)


def llama4_cost(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """(image tokens, tiles) of one height x width image (memory/llama4_tiles.py: the rows x cols layout get_best_fit
    picks, the global tile beside more than one, the <|patch|> tokens of every tile and wrap_tokens_per_image's 3 and
    one separator a tile)."""
    rows, cols = llama4_tiles.layout(v, height, width)
    split = rows * cols if rows * cols > 1 else 0
    n = split + 1 if split else 1
    return n * llama4_tiles.tokens_per_tile(v) + 3 + split, n


def worst_image(v: VisionSpec, max_pixels: int) -> tuple[int, int]:
    """(height, width) of the image with the most image tokens (then tiles) that LLaMA-Factory's image_max_pixels
    lets through, for a LLaVA-NeXT or Llama 4 tower."""
    if v.kind == "llava_next":
        return worst(max_pixels, SIDE_TILES * v.image_size, lambda h, w: llava_next_cost(v, h, w))
    if v.kind == "llama4":
        return worst(max_pixels, SIDE_TILES * v.image_size, lambda h, w: llama4_cost(v, h, w))
    raise ValueError(f"no pixel budget arithmetic for a {v.kind} tower")
