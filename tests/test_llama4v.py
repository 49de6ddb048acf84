"""Llama 4 multimodal (issue 15): the vision side read from the published configs and counted as transformers builds
Llama4ForConditionalGeneration, the processor's tiles and image tokens against image_processing_llama4.py /
processing_llama4.py's own code, the image side of a step (memory/llama4v.py) against the tracer
(trace/_llama4v.py), and the refusals."""

from __future__ import annotations

import ast
import json
import math
from collections import defaultdict
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, llama4v
from vramcalc.core.params import count_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import llama4_vision, spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# sum(p.numel()) of transformers 5.24's Llama4ForConditionalGeneration built from each config.json on the meta device
# (test_count_matches_the_library rebuilds them); the tower and projector are the same in both: 850,960,896 and
# 20,971,520 (Llama4VisionModel, Llama4MultiModalProjector)
FIXTURES = {"llama-4-scout-17b-16e-instruct": ("llama-4-scout", 108_641_793_536),
            "llama-4-maverick-17b-128e-instruct": ("llama-4-maverick", 401_583_781_376)}
TOWER, PROJECTOR = 850_960_896, 20_971_520


def load(name: str) -> dict[str, Any]:
    return json.loads((HF / f"{name}.json").read_text())


def whole(name: str) -> ModelSpec:
    """The text model the config.json reads as, with the image side its vision_config describes."""
    d = load(name)
    return replace(spec_from_hf_config(d, name, str(HF / f"{name}.json")), vision=llama4_vision(d, name))


@pytest.mark.parametrize("name", FIXTURES)
def test_count_matches_the_library(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = load(name)
    skip = ("architectures", "transformers_version", "torch_dtype", "model_type")
    config = transformers.Llama4Config(**{k: v for k, v in d.items() if k not in skip})
    with torch.device("meta"):
        model = transformers.Llama4ForConditionalGeneration(config)
    m = whole(name)
    assert m.vision is not None and m.hidden_size is not None
    assert count_params(m) == sum(p.numel() for p in model.parameters()) == FIXTURES[name][1]
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.vision_model.parameters()) == TOWER
    assert projector_params(m.vision, m.hidden_size) == sum(
        p.numel() for p in model.multi_modal_projector.parameters()) == PROJECTOR


@pytest.mark.parametrize("name", FIXTURES)
def test_presets(name: str) -> None:
    # llama-4-scout keeps meaning the text model (Llama4ForCausalLM); llama-4-scout-vision is the whole model
    text_name, total = FIXTURES[name]
    text, vision = presets.find_model(text_name), presets.find_model(f"{text_name}-vision")
    assert text.vision is None and vision.vision == whole(name).vision
    assert replace(vision, vision=None, name=text.name, display_name=text.display_name, aliases=text.aliases,
                   published_parameters=text.published_parameters,
                   published_parameters_source=text.published_parameters_source) == text
    assert count_params(vision) == vision.published_parameters == total
    assert total - count_params(text) == TOWER + PROJECTOR


def test_fields() -> None:
    # the published vision_config: 34 layers of width 1408 (16 heads, MLP 5632), 336 px tiles of 14 px patches,
    # pixel_shuffle_ratio 0.5 (scale 2: 24 x 24 patches -> 144 features a tile of 4 x 1408 = 5632), output 4096
    v = whole("llama-4-scout-17b-16e-instruct").vision
    assert v is not None
    assert (v.kind, v.num_layers, v.hidden_size, v.image_size, v.scale_factor, v.vision_output_dim,
            v.max_num_tiles, llama4v.tokens_per_tile(v)) == ("llama4", 34, 1408, 336, 2, 4096, 16, 144)


def _library_tiling() -> dict[str, Any]:
    """get_factors, find_supported_resolutions and get_best_fit from image_processing_llama4.py, run as the library
    wrote them (the module imports torchvision, which this venv lacks: the three functions are pure torch)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.image_utils import SizeDict

    src = Path(transformers.__file__).parent / "models" / "llama4" / "image_processing_llama4.py"
    tree = ast.parse(src.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
             and n.name in ("get_factors", "find_supported_resolutions", "get_best_fit")]
    assert len(funcs) == 3
    ns: dict[str, Any] = {"torch": torch, "math": math, "defaultdict": defaultdict, "lru_cache": lru_cache,
                          "SizeDict": SizeDict}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(src), "exec"), ns)  # noqa: S102
    return ns


SIZES = [(336, 336), (500, 500), (1000, 1000), (300, 800), (1024, 768), (2000, 3000), (100, 1500), (4000, 300),
         (672, 336), (1344, 1344), (5000, 5000), (337, 1000), (1, 33_600), (700, 701)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_tiles_and_tokens_match_the_processor(height: int, width: int) -> None:
    # the tile layout get_best_fit picks over find_supported_resolutions(max_patches 16, 336 px), and the prompt
    # Llama4Processor._prompt_split_image writes for it: <|patch|> tokens (the image features' count) and every
    # special token (<|...|>: the sequence the language model runs on)
    torch = pytest.importorskip("torch")
    from transformers.image_utils import SizeDict
    from transformers.models.llama4.processing_llama4 import Llama4Processor

    ns = _library_tiling()
    v = presets.find_model("llama-4-scout-vision").vision
    assert v is not None
    res = torch.tensor(ns["find_supported_resolutions"](16, SizeDict(height=336, width=336)))
    assert llama4v.supported_layouts(16) == [(h // 336, w // 336) for h, w in res.tolist()]
    th, tw = (int(x) for x in ns["get_best_fit"]((height, width), res))
    assert llama4v.layout(v, height, width) == (th // 336, tw // 336)
    prompt = Llama4Processor._prompt_split_image(None, (th // 336, tw // 336), llama4v.tokens_per_tile(v))
    t = TrainingSpec(image_size=height, image_width=width if width != height else 0)
    assert llama4v.tiles_per_image(v, t) * llama4v.tokens_per_tile(v) == prompt.count("<|patch|>")
    assert llama4v.image_tokens_per_image(v, t) == prompt.count("<|")


def test_default_size_is_one_tile() -> None:
    # --image-size's default (224) stands for one tile: 144 <|patch|> tokens and <|image_start|>, <|image|>,
    # <|image_end|>; two images per sample add twice that to --seq-len
    m = presets.find_model("llama-4-scout-vision")
    t = TrainingSpec(seq_len=1000, images=2)
    assert llama4v.total_tokens(m, t) == 1000 + 2 * 147


def _toy(name: str = "llama-4-scout-vision") -> ModelSpec:
    """The published tower cut to 2 layers (its widths kept) on a toy Llama 4 text model, where the image side is
    the peak (as benchmarks/accuracy.py --grid llama4v's tiny-lm cases)."""
    m = presets.find_model(name)
    assert m.vision is not None
    return replace(m, num_layers=4, hidden_size=256, intermediate_size=384, moe_intermediate_size=192,
                   shared_expert_intermediate_size=192, num_experts=4, num_attention_heads=4, num_kv_heads=1,
                   head_dim=64, vocab_size=1024, attention_chunk_size=128, max_position_embeddings=4096,
                   vision=replace(m.vision, num_layers=2))


@pytest.mark.parametrize("kw", [{"method": "lora", "precision": "bf16"},
                                {"method": "full", "precision": "pure-bf16", "grad_checkpointing": True}])
def test_traced_image_side_peak(kw: dict[str, Any]) -> None:
    # one tile through the tower: the forward's RoPE moment (LoRA) and the recomputed top layer's GELU backward
    # (checkpointing); measured -0.01 % and +0.13 % when written
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _toy(), TrainingSpec(seq_len=128, **kw)  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase


@pytest.mark.parametrize(("name", "experts", "bound"), [("llama-4-maverick-vision", 8, 0.01),
                                                     ("llama-4-scout-vision", 4, 0.003)])
def test_traced_lora_text_bottom_layer(name: str, experts: int, bound: float) -> None:
    # LoRA q_proj,v_proj (they reach the tower) without checkpointing, one tile: the image features need a gradient,
    # so the text bottom layer saves its whole set; only what a LoRA run's bottom layer saves less comes back, at
    # that layer's own kind (Maverick's layer 0 is dense). Maverick (as --grid llama4v's maverick tiny-lm, 8 experts)
    # peaks at its top MoE layer's down bmm: measured -0.20 %, +2.43 % when the dense / NoPE layers' corrections came
    # back too. Scout peaks at nll_loss_forward, inside Llama4ForConditionalGeneration.forward, beside the adapter's
    # output and the projected features: measured -0.08 %, -0.36 % without them.
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = replace(_toy(name), num_experts=experts), TrainingSpec(method="lora", precision="bf16", seq_len=128)
    r, b = trace(m, t), estimate(m, t)
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < bound
    assert b.peak_phase == r.peak_phase == "forward"


@pytest.mark.parametrize("kw", [{"grad_checkpointing": False},
                                {"grad_checkpointing": True, "batch_size": 2, "seq_len": 64, "image_size": 300,
                                 "image_width": 800}])
def test_traced_train_vision(kw: dict[str, Any]) -> None:
    # --train-vision (full fine-tuning, the tower trained): one tile without checkpointing peaks at the bottom
    # encoder layer's sdpa backward, 4 tiles (300 x 800 px) at batch 2 with checkpointing at the recomputed bottom
    # layer's GELU backward; measured +0.47 % and +0.31 % when written (benchmarks/accuracy.py --grid llama4v)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(**{"method": "full", "precision": "pure-bf16", "train_vision": True, "seq_len": 128,
                        **kw})  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert -0.02 < (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase == "backward"
    # every parameter trains: the text model's, the tower's (its pixel-shuffle adapter included) and the projector's
    assert b.trainable_parameters == b.parameters
    assert "trained (--train-vision" in " ".join(b.notes)


# targets only Llama 4's language model has (its shared experts' Llama4TextMLP): the tower stays unadapted
TEXT_ONLY = ("gate_proj", "up_proj", "down_proj")


@pytest.mark.parametrize("kw", [{"method": "full", "precision": "pure-bf16"},
                                {"method": "full", "precision": "pure-bf16", "grad_checkpointing": True},
                                {"method": "lora", "precision": "bf16", "lora_targets": TEXT_ONLY,
                                 "grad_checkpointing": True, "batch_size": 2, "seq_len": 64, "image_size": 300,
                                 "image_width": 800},
                                {"method": "full", "precision": "pure-bf16", "train_vision": True},
                                {"method": "full", "precision": "pure-bf16", "train_vision": True,
                                 "grad_checkpointing": True, "batch_size": 2, "seq_len": 64, "image_size": 300,
                                 "image_width": 800}])
def test_traced_eager_tower(kw: dict[str, Any]) -> None:
    # --attention eager in the tower (vision_eager_attention_forward). Frozen: without checkpointing the peak is the
    # top layer's scale mul beside the scores (forward); checkpointed, the recomputed layer's _softmax_backward_data
    # (backward); measured -0.02 %, +0.13 % and +0.00 % when written (benchmarks/accuracy.py --grid llama4v).
    # Trained (--train-vision): every layer saves its softmax output; one tile peaks at the bottom layer's
    # _softmax_backward_data (+0.46 %), 4 tiles checkpointed at the recomputed layer's GELU backward (+0.28 %)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(**{"seq_len": 128, "attention": "eager", **kw})  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert -0.02 < (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase


def test_eager_tower_forward_moment() -> None:
    # Scout's tower at one tile (577 rows, width 1408, 16 heads, intermediate 5632), bf16: the eager forward moment
    # beyond the layer input is LN output, q, k, v (4 x 577 x 1408 x 2 B = 6,499,328) and two 16 x 577 x 577 bf16
    # score tensors (2 x 10,653,728); the sdpa one the RoPE's 577 x 1408 x (6 x 2 + 4 x 4) B = 22,747,648; the eager
    # MLP moment (577 x (2 x 1408 + 2 x 5632) x 2 + 10,653,728 = 26,902,048) is below the attention's
    m = presets.find_model("llama-4-scout-vision")
    sdpa, eager = (estimate(m, TrainingSpec(method="full", seq_len=256, attention=a)) for a in ("sdpa", "eager"))
    delta = eager.details["temporaries.vision_tower_forward"] - sdpa.details["temporaries.vision_tower_forward"]
    assert delta == 6_499_328 + 2 * 10_653_728 - 22_747_648 == 5_059_136


@pytest.mark.parametrize("kw", [{"method": "full", "batch_size": 2, "seq_len": 64, "image_size": 300,
                                 "image_width": 800},
                                {"method": "lora", "lora_targets": TEXT_ONLY}])
def test_traced_autocast_tower(kw: dict[str, Any]) -> None:
    # amp-bf16 (fp32 weights, bf16 autocast) with the tower frozen, no checkpointing: 4 tiles at batch 2 peak at a
    # layer's RoPE (fp32 residual stream and LayerNorm outputs), one tile at the pixel-shuffle adapter's fc1 (its
    # weight's bf16 cast); measured -0.01 % and -0.00 % when written (benchmarks/accuracy.py --grid llama4v)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(**{"precision": "amp-bf16", "seq_len": 128, **kw})  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert -0.02 < (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase == "forward"


def test_autocast_adapter_fc1_moment() -> None:
    # Scout under amp-bf16, one tile, 256 text tokens + 147 image tokens (144 <|patch|> and 3 wrapping): the tower's
    # forward peaks at the pixel-shuffle adapter's fc1: the encoder's output and layernorm_post's, fp32 (2 x 577 x
    # 1408 x 4 B), pixel_shuffle's fp32 copy (576 x 1408 x 4 B), fc1's input cast and output in bf16 (144 x (5632 +
    # 4096) x 2 B) and its weight's bf16 cast (5632 x 4096 x 2 B, no bias), beside the fp32 text embeddings (403 x
    # 5120 x 4 B) and pixel_values (3 x 336 x 336 x 4 B)
    m = presets.find_model("llama-4-scout-vision")
    b = estimate(m, TrainingSpec(method="full", precision="amp-bf16", seq_len=256))
    assert b.details["temporaries.vision_tower_forward"] == (
        403 * 5120 * 4 + 3 * 336 * 336 * 4 + 2 * 577 * 1408 * 4 + 576 * 1408 * 4 + 144 * (5632 + 4096) * 2
        + 5632 * 4096 * 2)


@pytest.mark.parametrize("kw", [{"grad_checkpointing": False},
                                {"grad_checkpointing": True, "batch_size": 2, "seq_len": 64, "image_size": 300,
                                 "image_width": 800}])
def test_traced_lora_train_vision(kw: dict[str, Any]) -> None:
    # --train-vision under LoRA: the tower's own weights unfrozen beside the language model's adapters (the tracer
    # unfreezes Llama4VisionModel after get_peft_model); measured +0.44 % and +0.20 % when written (benchmarks/
    # accuracy.py --grid llama4v)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(**{"method": "lora", "precision": "pure-bf16", "lora_targets": TEXT_ONLY, "train_vision": True,
                        "seq_len": 128, **kw})  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert -0.02 < (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase == "backward"
    # the tower trains in the trace too: its parameters among the library's trainable ones
    assert b.trainable_parameters == r.trainable_parameters


@pytest.mark.parametrize(("precision", "state_bytes"), [("pure-bf16", 4), ("bf16", 8)])
def test_lora_train_vision_states(precision: str, state_bytes: int) -> None:
    # the tower's 850,960,896 parameters (TOWER, counted against the library above) add their gradients in the
    # weights' dtype (bf16: 2 B, torch autograd) and AdamW's two moments: bf16 under pure-bf16 (zeros_like), fp32
    # under bf16 (the seed texts' accounting, optimizer.py state_dtype), not at the fp32 adapters' 4 B / 8 B
    m = presets.find_model("llama-4-scout-vision")
    kw: dict[str, Any] = {"method": "lora", "precision": precision, "lora_targets": TEXT_ONLY, "seq_len": 256}
    base, tv = estimate(m, TrainingSpec(**kw)), estimate(m, TrainingSpec(**kw, train_vision=True))
    assert tv.gradients - base.gradients == 2 * TOWER
    assert tv.optimizer_state - base.optimizer_state == state_bytes * TOWER
    assert tv.trainable_parameters - base.trainable_parameters == TOWER
    assert "trained (--train-vision" in " ".join(tv.notes)


def test_estimate_notes_and_terms() -> None:
    m = presets.find_model("llama-4-scout-vision")
    b = estimate(m, TrainingSpec(method="qlora", kbit_prep=False, seq_len=2048, images=1, image_size=1000,
                                 grad_checkpointing=True))
    text = " ".join(b.notes)
    assert "3 x 3 tiles and a global tile" in text and "10 tile(s) x 144" in text
    assert "not counted here" not in text  # the text model's note, rewritten: the image side is counted
    # weights: the tower's and projector's Linears quantized like the text model's (transformers' bitsandbytes
    # quantizer skips lm_head only: weights.py image_side_bytes, tests/test_vision_qlora.py checks it against the
    # library), the rest 16-bit, and freqs_ci (577 rows x 44 complex64 values for head_dim 88; the tracer measured the
    # buffer at 203,104 bytes, 204,288 rounded to 512)
    from vramcalc.core.memory.precision import RECIPES
    from vramcalc.core.memory.weights import image_side_bytes

    side = image_side_bytes(m, TrainingSpec(method="qlora", kbit_prep=False), RECIPES["bf16"], TOWER, PROJECTOR)
    assert b.details["weights.vision_tower"] == side.tower < TOWER
    assert b.details["weights.projector"] == side.projector < PROJECTOR
    assert b.details["weights.vision_rope_buffer"] == 577 * 44 * 8 == 203_104
    assert b.parameters == 108_641_793_536


@pytest.mark.parametrize(("kw", "what"), [
    # with LoRA targets that reach the tower (the default q_proj, v_proj): a tower trained whole under adapters
    ({"train_vision": True}, "--train-vision"),
    ({"train_vision": True, "method": "qlora", "kbit_prep": False}, "4 bits"),  # 4-bit tower Linears
    ({"train_vision": True, "lora_targets": TEXT_ONLY, "optimizer": "adamw-8bit"}, "adamw-8bit"),
    ({"attention": "eager"}, "--attention eager"),  # the default targets reach the tower: its saved scores
    ({"attention": "flash"}, "--attention flash"),
    ({"precision": "amp-bf16", "grad_checkpointing": True}, "autocast"),  # the recomputed tower under autocast
    ({"precision": "amp-bf16", "method": "full", "train_vision": True}, "autocast"),
    ({"precision": "amp-bf16"}, "autocast"),  # the default targets reach the tower
    ({"image_size": 40_000}, "image"),
    ({"method": "qlora"}, "no-kbit-prep"),
])
def test_refusals(kw: dict[str, Any], what: str) -> None:
    m = presets.find_model("llama-4-scout-vision")
    with pytest.raises((UnsupportedCombination, SpecError), match=what):
        estimate(m, TrainingSpec(**{"method": "lora", **kw}))  # type: ignore[arg-type]


def test_spec_checks() -> None:
    v = presets.find_model("llama-4-scout-vision").vision
    assert v is not None
    with pytest.raises(SpecError, match="scale_factor"):
        replace(v, scale_factor=5)
    with pytest.raises(SpecError, match="intermediate_size"):
        replace(v, intermediate_size=4096)
    with pytest.raises(SpecError, match="max_num_tiles"):
        replace(v, max_num_tiles=0)
    with pytest.raises(SpecError, match="scale_factor"):
        VisionSpec(kind="clip", scale_factor=2)


def test_reader_refuses_other_vision_configs() -> None:
    from vramcalc.core.errors import PresetFileError

    d = load("llama-4-scout-17b-16e-instruct")
    bad = {**d, "vision_config": {**d["vision_config"], "projector_input_dim": 2048}}
    with pytest.raises(PresetFileError, match="projector_input_dim"):
        llama4_vision(bad, "x.json")


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llama-4-scout-vision", "--method", "qlora", "--no-kbit-prep", "--images", "2",
                             "--image-size", "1000", "--format", "json"], capsys)
    assert code == 0, err
    assert "3 x 3 tiles" in out
    code, _, err = invoke(["estimate", "llama-4-scout-vision", "--method", "lora", "--train-vision"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for args in (["--method", "lora", "--train-vision", "--lora-targets", "gate_proj,up_proj,down_proj"],
                 ["--method", "full", "--attention", "eager", "--grad-checkpointing"]):
        code, out, err = invoke(["estimate", "llama-4-scout-vision", *args], capsys)
        assert code == 0, err
    # the text preset reads text only: the image options are refused
    code, _, err = invoke(["estimate", "llama-4-scout", "--method", "lora", "--images", "1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
