"""The worst image under LLaMA-Factory's pixel budget for the towers whose tiles / tokens follow each image's size
(LLaVA-NeXT, Llama 4). hiyouga/LLaMA-Factory @ ff6d4d12 data/mm_plugin.py MMPluginMixin._preprocess_image: an image
over image_max_pixels is resized to (int(width * f), int(height * f)) with f = sqrt(image_max_pixels / (width *
height)), so every image reaches the processor with width * height <= image_max_pixels, and every such size reaches it
unchanged (an image already within the budget and at or over image_min_pixels); one under image_min_pixels is scaled
up to at most image_min_pixels' area (the int() floors), which model_args.py keeps <= image_max_pixels. So the sizes
the processor sees are those of area <= image_max_pixels, and image_min_pixels never raises the worst case. A leaf
module: io/runfiles.py maps the keys to --image-size / --image-width with it.

The search: the budget's frontier (for each width the tallest height within the budget, sides <= SIDE_TILES tiles)
holds the worst image, taken as the most (image tokens, tiles), then the smallest longer side, then the lowest height
(tests/test_lf_pixels.py keeps the walk over every frontier height as its oracle, and checks it against every size at
small budgets). Frontier points are visited from the squarest outwards, in that tie order: the search stops at the
first whose cost reaches the tower's ceiling (no image costs more), and passes a point whose bound (cheap arithmetic,
never under its cost) cannot beat the best so far. For Llama 4 the frontier is first cut into runs on which
get_best_fit's choice cannot change, one point visited a run. benchmarks/pixel_budget_speed.py times it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from math import gcd, isqrt
from typing import TYPE_CHECKING

from vramcalc.core.memory import anyres, llama4_tiles

if TYPE_CHECKING:
    from vramcalc.core.specs import VisionSpec

# vramcalc's own cap on an image's side for these towers (memory/anyres.py check, memory/llama4_tiles.py own_check):
# 100 tiles' width
SIDE_TILES = 100


class _Frontier:
    """The budget's frontier as heights 1..top with their widths width(h) = min(max_pixels // h, max_side): a height
    is a frontier point when it is the last of its width (height top, or width(h + 1) < width(h))."""

    def __init__(self, max_pixels: int, max_side: int) -> None:
        self.budget, self.side = max_pixels, max_side
        self.top = min(max_pixels, max_side)
        # the first height no narrower than its width: heights below it are wider than tall
        lo, hi = 1, self.top
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if mid >= self.width(mid) else (mid + 1, hi)
        self.turn = lo

    def width(self, h: int) -> int:
        return min(self.budget // h, self.side)

    def point_at_or_after(self, h: int) -> int:
        """The frontier height at or after h: the last height of h's width (floor division: budget // (budget // h)
        is the last height whose quotient is budget // h)."""
        w = self.width(h)
        return min(self.budget // self.side if w == self.side else self.budget // w, self.top)

    def point_before(self, h: int) -> int:
        """The last frontier height below h's width's run of heights (0: none), that is the last height wider."""
        w = self.width(h)
        return 0 if w >= self.side else min(self.budget // (w + 1), self.top)

    def last_point_in(self, lo: int, hi: int) -> int:
        """The last frontier height in lo..hi (0: none)."""
        if hi < lo:
            return 0
        h = hi if self.point_at_or_after(hi) == hi else self.point_before(hi)
        return h if h >= lo else 0

    def first_point_in(self, lo: int, hi: int) -> int:
        """The first frontier height in lo..hi (0: none)."""
        if hi < lo:
            return 0
        h = self.point_at_or_after(lo)
        return h if h <= hi else 0

    def runs(self, cuts: set[int]) -> Iterator[tuple[int, int]]:
        """The frontier heights nearest the turn in each run of heights between cuts (and each run's part on either
        side of the turn): in a run, the longer side falls towards the turn, so they are each run's least."""
        edges = sorted({1, self.top + 1, self.turn, *(c for c in cuts if 1 < c <= self.top)})
        for lo, nxt in zip(edges, edges[1:], strict=False):
            h = self.last_point_in(lo, nxt - 1) if lo < self.turn else self.first_point_in(lo, nxt - 1)
            if h:
                yield h, self.width(h)

    def outwards(self) -> Iterator[tuple[int, int]]:
        """Every frontier point, from the squarest outwards: by longer side, then height."""
        below, above = self.last_point_in(1, self.turn - 1), self.first_point_in(self.turn, self.top)
        while below or above:
            wb = self.width(below) if below else 0
            if below and (not above or (wb, below) < (above, above)):
                yield below, wb
                below = self.point_before(below)
            else:
                yield above, self.width(above)
                above = self.first_point_in(above + 1, self.top) if above < self.top else 0


def worst(points: Iterator[tuple[int, int]], cost: Callable[[int, int], tuple[int, ...]], ceiling: tuple[int, ...],
          bound: Callable[[int, int], tuple[int, ...]] | None = None) -> tuple[int, int]:
    """The point with the largest cost, the squarest among equals (then the lowest); a 1 x 1 image first, as the
    walk's start. points come in (longer side, height) order, so a later point wins only by costing more: the first
    point at the ceiling ends the search (nothing costs more), and a point whose bound (never under its cost) is no
    more than the best so far is passed without its cost."""
    best, most = (1, 1), cost(1, 1)
    for h, w in points:
        if most >= ceiling:
            break
        if bound is not None and bound(h, w) <= most:
            continue
        c = cost(h, w)
        if c > most:
            best, most = (h, w), c
    return best


def llava_next_cost(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """(image tokens, tiles) of one height x width image (memory/anyres.py)."""
    return anyres.image_tokens(v, height, width), anyres.tiles(v, height, width)


def _llava_next_full(v: VisionSpec, pinpoint: tuple[int, int]) -> tuple[int, int]:
    """(image tokens, tiles) of a pinpoint's full grid: its tiles' 24 x 24 features with a newline a row, the base
    tile's features (anyres.image_tokens with nothing unpadded)."""
    side, rows, cols = v.image_size // v.patch_size, pinpoint[0] // v.image_size, pinpoint[1] // v.image_size
    return side * rows * side * cols + side * rows + side * side, rows * cols + 1


def llava_next_ceiling(v: VisionSpec) -> tuple[int, int]:
    """The most (image tokens, tiles) any image gets: a pinpoint's full grid (anyres.unpadded_grid only removes rows
    or columns: int(round(x, 7)) of a ratio at most the grid's side)."""
    return max(_llava_next_full(v, p) for p in v.grid_pinpoints)


def llava_next_bound(v: VisionSpec) -> Callable[[int, int], tuple[int, int]]:
    """The most (image tokens, tiles) a height x width image can get, as a function of (height, width) with the
    pinpoints' arithmetic done once. An image inside a pinpoint keeps all its pixels there (scale >= 1, so int(side *
    scale) >= side) and fewer in any pinpoint it overflows (scale < 1 floors one side below itself):
    select_best_resolution picks the smallest pinpoint holding it (the first of equal areas), and its cost is that
    pinpoint's unpadded grid (anyres.unpadded_grid_at). An image no pinpoint holds: in whichever pinpoint, unpad_image
    keeps at most rows * cols / width rows of a wider image (int(round(x, 7)) <= floor(x) + 1, less its even
    padding's odd pixel: floor + 2), or cols * width / height columns of a taller one (the float comparison of the
    two ratios is exact here: distinct ones differ by over 1e-7 of themselves, far above a double's rounding), so
    the most such grid over the
    pinpoints, with the most tiles, bounds it."""
    side, tile = v.image_size // v.patch_size, v.image_size
    by_area = sorted(v.grid_pinpoints, key=lambda p: p[0] * p[1])  # stable: the first of equal areas first
    grids = [(side * (ph // tile), side * (pw // tile)) for ph, pw in v.grid_pinpoints]
    most_tiles = max(_llava_next_full(v, p)[1] for p in v.grid_pinpoints)

    def bound(height: int, width: int) -> tuple[int, int]:
        for p in by_area:
            if height <= p[0] and width <= p[1]:
                rows, cols = anyres.unpadded_grid_at(v, height, width, p)
                return rows * cols + rows + side * side, (p[0] // tile) * (p[1] // tile) + 1
        tokens = 0
        for rows, cols in grids:
            if width * rows > height * cols:
                rows = min(rows, height * cols // width + 2)
            else:
                cols = min(cols, width * rows // height + 2)
            tokens = max(tokens, rows * cols + rows + side * side)
        return tokens, most_tiles

    return bound


def _llama4_layout_cost(v: VisionSpec, rows: int, cols: int) -> tuple[int, int]:
    split = rows * cols if rows * cols > 1 else 0
    n = split + 1 if split else 1
    return n * llama4_tiles.tokens_per_tile(v) + 3 + split, n


def llama4_cost(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """(image tokens, tiles) of one height x width image (memory/llama4_tiles.py: the rows x cols layout get_best_fit
    picks, the global tile beside more than one, the <|patch|> tokens of every tile and wrap_tokens_per_image's 3 and
    one separator a tile)."""
    return _llama4_layout_cost(v, *llama4_tiles.layout(v, height, width))


def llama4_cuts(v: VisionSpec, f: _Frontier) -> set[int]:
    """The heights where get_best_fit's choice can change along the frontier. It compares only scales rows * tile /
    height and cols * tile / width (rows, cols <= max_num_tiles), with each other and with 1 (float32, but two
    different such scales differ by at least 1 / (max_num_tiles * max side) relatively, above float32's 2^-23 while
    that product is under 2^22, worst_image's condition, so float32 keeps every order and equality). Along the
    frontier the height rises and the width never does, so each comparison changes once: at height a * tile + 1,
    where the width drops to b * tile, and where a * width meets b * height (the first height at or past, the first
    past)."""
    n, tile, budget = v.max_num_tiles, v.image_size, f.budget
    cuts = {a * tile + 1 for a in range(1, n + 1)}
    cuts |= {budget // (b * tile + 1) + 1 for b in range(1, n + 1) if b * tile < f.side}
    for a in range(1, n + 1):
        for b in range(1, n + 1):
            if gcd(a, b) == 1:
                cuts.add(_first_height(f, a, b, strict=False))
                cuts.add(_first_height(f, a, b, strict=True))
    return cuts


def _first_height(f: _Frontier, a: int, b: int, *, strict: bool) -> int:
    """The first height h with a * width(h) <= b * h (< when strict), top + 1 if none; a * width(h) - b * h falls as
    h rises. Started at the nearer of the crossings with the width uncapped (near the square root of a * budget / b)
    and capped (a * max side / b), and stepped to it."""
    def past(h: int) -> bool:
        d = a * f.width(h) - b * h
        return d < 0 if strict else d <= 0

    h = min(max(min(isqrt(a * f.budget // b), -(-a * f.side // b)), 1), f.top)
    while h > 1 and past(h - 1):
        h -= 1
    while h <= f.top and not past(h):
        h += 1
    return h


def llama4_bound(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """The most (image tokens, tiles) a height x width image can get. An image that fits some canvas fits every canvas
    of at least ceil(height / tile) rows and ceil(width / tile) columns, and only those; each holds that smallest one,
    so its scale is no smaller, and get_best_fit's smallest scale >= 1 (then smallest area) is that smallest canvas'
    rows x cols tiles (find_supported_resolutions offers every rows x cols up to max_num_tiles). An image that fits
    none: the ceiling."""
    rows, cols = -(-height // v.image_size), -(-width // v.image_size)
    return _llama4_layout_cost(v, rows, cols) if rows * cols <= v.max_num_tiles else llama4_ceiling(v)


def llama4_ceiling(v: VisionSpec) -> tuple[int, int]:
    """The most (image tokens, tiles): a layout of max_num_tiles tiles (find_supported_resolutions offers no more)."""
    return _llama4_layout_cost(v, 1, v.max_num_tiles)


def worst_image(v: VisionSpec, max_pixels: int) -> tuple[int, int]:
    """(height, width) of the image with the most image tokens (then tiles) that LLaMA-Factory's image_max_pixels
    lets through, for a LLaVA-NeXT or Llama 4 tower."""
    f = _Frontier(max_pixels, SIDE_TILES * v.image_size)
    if v.kind == "llava_next":
        return worst(f.outwards(), lambda h, w: llava_next_cost(v, h, w), llava_next_ceiling(v),
                     llava_next_bound(v))
    if v.kind == "llama4" and v.max_num_tiles * f.side >= 2**22:
        # past llama4_cuts' float32 argument (a Llama 4 with hundreds of tiles): every frontier point, no bound
        return worst(f.outwards(), lambda h, w: llama4_cost(v, h, w), llama4_ceiling(v))
    if v.kind == "llama4":
        points = sorted(f.runs(llama4_cuts(v, f)), key=lambda p: (max(p), p[0]))
        return worst(iter(points), lambda h, w: llama4_cost(v, h, w), llama4_ceiling(v),
                     lambda h, w: llama4_bound(v, h, w))
    raise ValueError(f"no pixel budget arithmetic for a {v.kind} tower")
