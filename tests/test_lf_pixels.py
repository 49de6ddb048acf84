"""LLaMA-Factory's image_max_pixels / image_min_pixels on the tiled towers (io/runfiles.py
_image_pixels_llama_factory; hiyouga/LLaMA-Factory @ ff6d4d12 data/mm_plugin.py _preprocess_image): LLaVA-NeXT and
Llama 4 counted at the budget's worst image (core/memory/pixel_budget.py), Llama-3.2-Vision and Idefics3 / SmolVLM
read with no memory change. The step against the tracer: benchmarks/accuracy.py --grid pixels."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.memory import pixel_budget as pb
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets, runfiles

HF = Path(__file__).parent / "data" / "hf"
DEFAULT = 768 * 768  # model_args.py image_max_pixels default


def tower(name: str) -> VisionSpec:
    v = presets.find_model(name).vision
    assert v is not None
    return v


LLAVA_NEXT, LLAMA4 = tower("llava-v1.6-vicuna-7b"), tower("llama-4-scout-vision")
COSTS = {"llava_next": pb.llava_next_cost, "llama4": pb.llama4_cost}


def brute_force(v: VisionSpec, max_pixels: int) -> tuple[int, int]:
    """The most (image tokens, tiles) over every height x width image within the budget."""
    cost, side = COSTS[v.kind], pb.SIDE_TILES * v.image_size
    return max(cost(v, h, w) for h in range(1, min(max_pixels, side) + 1)
               for w in range(1, min(max_pixels // h, side) + 1))


def frontier(max_pixels: int, max_side: int) -> list[tuple[int, int]]:
    """The oracle's frontier: (height, width) pairs with height * width <= max_pixels and sides <= max_side that no
    other such pair dominates (for each height, the widest width, and only the last height of each width)."""
    top = min(max_pixels, max_side)
    return [(h, min(max_pixels // h, max_side)) for h in range(1, top + 1)
            if h == top or min(max_pixels // (h + 1), max_side) < min(max_pixels // h, max_side)]


def frontier_walk(v: VisionSpec, max_pixels: int) -> tuple[int, int]:
    """The oracle worst_image replaced (pixels branch, main@be91d35a): every frontier height's cost, the most (image
    tokens, tiles), the squarest among equals, then the lowest, a 1 x 1 image first."""
    cost = COSTS[v.kind]
    best, most = (1, 1), (*cost(v, 1, 1), -1)
    for h, w in frontier(max_pixels, pb.SIDE_TILES * v.image_size):
        c = (*cost(v, h, w), -max(h, w))
        if c > most:
            best, most = (h, w), c
    return best


def test_frontier_is_every_undominated_size() -> None:
    # 12 px: (1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1); sides capped at 5: (1, 5) ... (5, 1) without (3, 4)'s
    # dominated neighbours
    assert frontier(12, 100) == [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]
    assert frontier(12, 5) == [(2, 5), (3, 4), (4, 3), (5, 2)]
    assert all(h * w <= 5000 and max(h, w) <= 400 for h, w in frontier(5000, 400))


@pytest.mark.parametrize(("budget", "side"), [(1, 5), (12, 5), (12, 100), (97, 10), (5000, 400), (589_824, 33_600),
                                              (10**8, 33_600), (33_600**2 + 5, 33_600)])
def test_outwards_is_the_frontier_squarest_first(budget: int, side: int) -> None:
    # the fast search's order: every frontier point once, by longer side, then height (the walk's tie order)
    assert list(pb._Frontier(budget, side).outwards()) == sorted(frontier(budget, side), key=lambda p: (max(p), p[0]))


# budgets the fast search is checked at against the walk: every one up to 300 px, the Llama 4 strip's edges (15 x 336
# + 1 = 5,041 px wide), LLaVA-NeXT's smallest pinpoint (336 x 672 = 225,792 px), the default, and 60 drawn up to 2e6
EQUAL_BUDGETS = sorted({*range(1, 301), 5040, 5041, 5042, 112_896, 225_791, 225_792, DEFAULT, 1_000_000,
                        *random.Random(15).sample(range(301, 2_000_000), 60)})


@pytest.mark.parametrize("v", [LLAVA_NEXT, LLAMA4], ids=["llava-next", "llama4"])
def test_worst_image_equals_the_frontier_walk(v: VisionSpec) -> None:
    for budget in EQUAL_BUDGETS:
        assert pb.worst_image(v, budget) == frontier_walk(v, budget), budget


@pytest.mark.parametrize("v", [LLAVA_NEXT, LLAMA4], ids=["llava-next", "llama4"])
def test_no_image_costs_more_than_its_bound_or_the_ceiling(v: VisionSpec) -> None:
    # the search passes a point whose bound is no more than the best so far and stops at the ceiling: 3,000 random
    # sizes within the side cap, 3,000 thin or small ones, and every frontier point of a 300 x 300 px and a 2,000 x
    # 2,000 px budget cost no more than either
    cost, side = COSTS[v.kind], pb.SIDE_TILES * v.image_size
    ceiling = (pb.llava_next_ceiling if v.kind == "llava_next" else pb.llama4_ceiling)(v)
    bound = pb.llava_next_bound(v) if v.kind == "llava_next" else lambda h, w: pb.llama4_bound(v, h, w)
    rng = random.Random(13)
    sizes = [(rng.randint(1, side), rng.randint(1, side)) for _ in range(3000)]
    sizes += [(rng.randint(1, 2000), rng.randint(1, 200))[::rng.choice((1, -1))] for _ in range(3000)]
    for h, w in [*sizes, *frontier(90_000, side), *frontier(4_000_000, side)]:
        assert cost(v, h, w) <= bound(h, w) <= ceiling, (h, w)
    # and the ceiling is reached: LLaVA-NeXT 672 x 672 px (2,928 tokens, 5 tiles); Llama 4 1 x 16 tiles + global (17)
    assert ceiling == ((48 * 48 + 48 + 576, 5) if v.kind == "llava_next" else (17 * 144 + 3 + 16, 17))
    assert cost(v, 672, 672) == ceiling if v.kind == "llava_next" else cost(v, 1, 15 * 336 + 1) == ceiling


@pytest.mark.parametrize(("v", "budget"), [(LLAVA_NEXT, 3000), (LLAVA_NEXT, 12_000), (LLAMA4, 600), (LLAMA4, 3000)],
                         ids=["llava-next-3000", "llava-next-12000", "llama4-600", "llama4-3000"])
def test_worst_image_is_the_brute_force_worst(v: VisionSpec, budget: int) -> None:
    # every size within the budget evaluated: the frontier's best is the most any image gives
    h, w = pb.worst_image(v, budget)
    assert h * w <= budget
    assert COSTS[v.kind](v, h, w) == brute_force(v, budget)


@pytest.mark.parametrize("v", [LLAVA_NEXT, LLAMA4], ids=["llava-next", "llama4"])
def test_default_budget_worst_beats_every_sampled_size(v: VisionSpec) -> None:
    # the default budget is too large to enumerate (about 8 million sizes): 3,000 random sizes within it, and every
    # square, give no more than the worst image
    most = COSTS[v.kind](v, *pb.worst_image(v, DEFAULT))
    rng = random.Random(13)
    for _ in range(3000):
        h = rng.randint(1, 33_600)
        w = rng.randint(1, min(DEFAULT // h, 33_600))
        assert COSTS[v.kind](v, h, w) <= most
    assert all(COSTS[v.kind](v, s, s) <= most for s in range(1, 769))


def test_worst_images_under_known_budgets() -> None:
    # LLaVA-NeXT (llava-v1.6 pinpoints 336 x 672, 672 x 336, 672 x 672, 1008 x 336, 336 x 1008): a 768 x 768 image
    # picks 672 x 672: 2 x 2 tiles + the base, a 48 x 48 grid + 48 newlines + 576 base features = 2,928 tokens
    assert pb.worst_image(LLAVA_NEXT, DEFAULT) == (768, 768)
    assert pb.llava_next_cost(LLAVA_NEXT, 768, 768) == (48 * 48 + 48 + 576, 5)
    # 336 x 336 px: no image reaches 672 x 672 with its full grid; 676 x 167 picks 1008 x 336 (3 tiles + the base):
    # a 72 x 24 grid unpadded to 72 x 18 (167 / 676 of 72 rows' width, rounded to even padding), 72 newlines
    assert pb.worst_image(LLAVA_NEXT, 336 * 336) == (676, 167)
    assert pb.llava_next_cost(LLAVA_NEXT, 676, 167) == (72 * 18 + 72 + 576, 4)
    # Llama 4 (16 tiles of 336 px at most): a 117 x 5041 image (589,797 px) fits 1 x 16 tiles, the most: 17 tiles with
    # the global one x 144 <|patch|> tokens + <|image_start|>, <|image|>, <|image_end|> + 16 separators
    assert pb.worst_image(LLAMA4, DEFAULT) == (117, 5041)
    assert pb.llama4_cost(LLAMA4, 117, 5041) == (17 * 144 + 3 + 16, 17)
    # 3,000 px: a 1 x 3000 strip is cut into 1 x 9 tiles (2,688 < 3,000 <= 3,024 px)
    assert pb.llama4_cost(LLAMA4, *pb.worst_image(LLAMA4, 3000)) == (10 * 144 + 3 + 9, 10)


def test_llama4_worst_is_never_the_default_image_size() -> None:
    # --image-size 224 (its default) reads as one tile's size for Llama 4 (llama4_tiles.image_hw), so a worst image 224
    # px high would be counted as 336: the worst is the lowest of the thin strips that take the most tiles (a budget of
    # a few hundred pixels already gives a 1 x N strip), or past 1,008 x 1,008 px a 4 x 4 layout's image
    budgets = [*range(224, 224 * 400, 224 * 29), DEFAULT, 1_100_000, 2_000_000]
    heights = {pb.worst_image(LLAMA4, budget)[0] for budget in budgets}
    assert 224 not in heights and max(h for h in heights if h < 1008) < 224


def _load(tmp_path: Path, model: str, body: str) -> runfiles.Run:
    f = tmp_path / "lf.yaml"
    f.write_text(f"model_name_or_path: {model}\nstage: sft\nfinetuning_type: lora\n{body}")
    return runfiles.load(str(f))[0]


def test_mapping_sets_the_worst_image(tmp_path: Path) -> None:
    run = _load(tmp_path, f"{HF / 'llava-v1.6-mistral-7b-hf'}.json", "image_max_pixels: 112896\n")
    assert (run.options["image_size"], run.options["image_width"]) == (676, 167)
    assert "image_max_pixels" in run.mapped and run.unmodelled == []
    assert any("worst case, 676 x 167 px" in n and "4 tiles, 1,944 image tokens" in n for n in run.notes)
    # without the key the default budget applies (as Qwen-VL's): 768 x 768; image_min_pixels alone is read too
    run = _load(tmp_path, "llava-v1.6-mistral-7b", "image_min_pixels: 4096\n")
    assert (run.options["image_size"], run.options["image_width"]) == (768, 768)
    assert "image_min_pixels" in run.mapped and run.unmodelled == []
    assert any("image_max_pixels 589824 (the default)" in n for n in run.notes)
    run = _load(tmp_path, "llama-4-scout-vision", "")
    assert (run.options["image_size"], run.options["image_width"]) == (117, 5041)


@pytest.mark.parametrize(("model", "why"), [("llama-3.2-11b-vision-instruct", "pads every image to max_image_tiles"),
                                            ("smolvlm-256m-instruct", "no Idefics3 / SmolVLM plugin")])
def test_no_memory_change_towers(tmp_path: Path, model: str, why: str) -> None:
    run = _load(tmp_path, model, "image_max_pixels: 1000\nimage_min_pixels: 100\n")
    assert {"image_max_pixels", "image_min_pixels"} <= set(run.mapped) and run.unmodelled == []
    assert "image_size" not in run.options and "image_width" not in run.options
    assert any("no memory change" in n and why in n for n in run.notes)
    assert not any("image_max_pixels" in n for n in _load(tmp_path, model, "").notes)  # no key, no note


@pytest.mark.parametrize(("body", "match"), [("image_max_pixels: 0\n", "lets no image through"),
                                             ("image_max_pixels: 1000\nimage_min_pixels: 2000\n", "over image_max")])
def test_refusals(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(VramcalcError, match=match):
        _load(tmp_path, "llava-v1.6-mistral-7b", body)


def test_note_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    f = tmp_path / "lf.yaml"
    f.write_text("model_name_or_path: llava-v1.6-mistral-7b\nstage: sft\nfinetuning_type: lora\n"
                 "image_max_pixels: 112896\n")
    for fmt in ("table", "json", "markdown", "yaml"):  # csv is the numbers alone, one row per run, as for every note
        code, out, err = invoke(["estimate", "--config", str(f), "--format", fmt], capsys)
        assert code == 0, err
        assert "worst case, 676 x 167 px" in " ".join(out.split()), fmt
    code, out, _ = invoke(["estimate", "--config", str(f), "--format", "json"], capsys)
    assert any("worst case" in n for n in json.loads(out)["runs"][0]["notes"])


def _llava_next_toy() -> ModelSpec:
    from test_llava_next import tiny  # the vicuna-7b tower cut to 2 layers under a toy language model

    return tiny()


def _llama4_toy() -> ModelSpec:
    from test_llama4v import _toy  # the Scout tower cut to 2 layers on a toy Llama 4 text model

    return _toy()


@pytest.mark.parametrize(("build", "budget", "kw"),
                         [(_llava_next_toy, 336 * 336, {"method": "lora", "grad_checkpointing": True}),
                          (_llama4_toy, 3000, {"method": "lora", "precision": "bf16"})],
                         ids=["llava-next-676x167", "llama4-1x3000"])
def test_traced_worst_image(build: Any, budget: int, kw: dict[str, Any]) -> None:
    # the budget's worst image through the real step on fake tensors (trace/); measured when written: LLaVA-NeXT
    # 676 x 167 (4 tiles) +0.19 %, Llama 4 1 x 3000 (10 tiles) -0.10 % (benchmarks/accuracy.py --grid pixels: the
    # published towers' depth)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = build()
    assert m.vision is not None
    h, w = pb.worst_image(m.vision, budget)
    t = TrainingSpec(seq_len=64, image_size=h, image_width=w, **kw)
    r, b = trace(m, t), estimate(m, t)
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
