"""Qwen2-VL and Qwen2.5-VL (issue 15): the config reader and the parameter counts against transformers, the
VisionSpec checks, the processor's resize, the image side of a step (memory/vision.py _qwen_estimate) against
the tracer (trace/_qwen_vl.py), and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURES = ["qwen2-vl-2b-instruct", "qwen2-vl-7b-instruct", "qwen2.5-vl-3b-instruct", "qwen2.5-vl-7b-instruct"]


def load(name: str) -> dict:
    return json.loads((HF / f"{name}.json").read_text())


def spec(name: str) -> ModelSpec:
    return spec_from_hf_config(load(name), name, str(HF / f"{name}.json"))


def _library_model(d: dict):  # noqa: ANN202 - a transformers model
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cls = (transformers.Qwen2VLForConditionalGeneration if d["model_type"] == "qwen2_vl"
           else transformers.Qwen2_5_VLForConditionalGeneration)
    with torch.device("meta"):
        return cls(cls.config_class.from_dict(d))


@pytest.mark.parametrize("name", FIXTURES)
def test_count_matches_the_library(name: str) -> None:
    # sum(p.numel()) of the model class built from the same config.json on the meta device; the tower (visual
    # without its merger) and the merger one by one
    model = _library_model(load(name))
    m = spec(name)
    assert m.vision is not None
    merger = sum(p.numel() for p in model.model.visual.merger.parameters())
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert projector_params(m.vision, m.hidden_size or 0) == merger
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.model.visual.parameters()) - merger


@pytest.mark.parametrize("name", ["qwen2-vl-2b-instruct", "qwen2.5-vl-7b-instruct"])
def test_nested_text_config_reads_the_same(name: str) -> None:
    # transformers 5 writes the config nested (text_config; Qwen2VLConfig.__post_init__ moves the flat keys there):
    # the library's own to_dict() of the published file reads to the same architecture and count
    model = _library_model(load(name))
    nested = model.config.to_dict()
    assert isinstance(nested.get("text_config"), dict)
    a, b = spec(name), spec_from_hf_config(nested, name, "nested.json")
    assert b.vision == a.vision
    assert count_params(b) == count_params(a)
    assert (b.hidden_size, b.num_layers, b.num_kv_heads, b.tie_word_embeddings) == (
        a.hidden_size, a.num_layers, a.num_kv_heads, a.tie_word_embeddings)


def test_fields() -> None:
    # the published vision_config: Qwen2-VL embed_dim 1280 x mlp_ratio 4, the merger out to the text width (its
    # vision_config.hidden_size); Qwen2.5-VL width 1280, SwiGLU 3420, 112 px windows, full attention in 7/15/23/31
    v2 = spec("qwen2-vl-2b-instruct").vision
    assert v2 is not None
    assert (v2.kind, v2.hidden_size, v2.intermediate_size, v2.out_hidden_size) == ("qwen2_vl", 1280, 5120, 1536)
    assert (v2.window_size, v2.fullatt_block_indexes, v2.image_size) == (0, (), 0)
    v25 = spec("qwen2.5-vl-3b-instruct").vision
    assert v25 is not None
    assert (v25.kind, v25.intermediate_size, v25.out_hidden_size) == ("qwen2_5_vl", 3420, 2048)
    assert (v25.window_size, v25.fullatt_block_indexes) == (112, (7, 15, 23, 31))
    m = spec("qwen2.5-vl-3b-instruct")
    assert (m.family, m.qkv_bias, m.tie_word_embeddings) == ("qwen2", True, True)


def test_presets_equal_their_configs() -> None:
    for name in FIXTURES:
        preset = presets.find_model(name)
        assert preset.vision == spec(name).vision
        assert count_params(preset) == preset.published_parameters == count_params(spec(name))


def test_vision_spec_checks() -> None:
    ok = {"kind": "qwen2_vl", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
          "num_layers": 2, "image_size": 0, "out_hidden_size": 32}
    VisionSpec(**ok)
    for bad in ({"image_size": 448}, {"out_hidden_size": 0}, {"kind": "qwen2_5_vl", "fullatt_block_indexes": (2,)},
                {"kind": "qwen2_5_vl", "window_size": 100}):
        with pytest.raises(SpecError):
            VisionSpec(**{**ok, **bad})
    with pytest.raises(SpecError):  # a CLIP tower keeps its fixed size
        VisionSpec(image_size=0)


def test_bad_vision_config_is_one_problem() -> None:
    d = load("qwen2.5-vl-3b-instruct")
    for change in ({"hidden_act": "gelu"}, {"depth": "32"}, {"fullatt_block_indexes": [7, "x"]}):
        with pytest.raises(Exception) as e:  # noqa: PT011 - PresetFileError, checked by its text
            spec_from_hf_config({**d, "vision_config": {**d["vision_config"], **change}}, "x", "x.json")
        assert "vision_config" in str(e.value) or "hidden_act" in str(e.value)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_image_tokens_lengthen_the_text_run(method: str) -> None:
    # one 448 px image: 32 x 32 patches, 256 tokens after the 2 x 2 merger (qwen_image_tokens); the language model
    # runs on the text and those tokens, and the image side adds to it
    from vramcalc.core.memory import vision

    m = presets.find_model("qwen2.5-vl-7b-instruct")
    t = TrainingSpec(method=method, seq_len=512, image_size=448)
    assert vision.total_tokens(m, t) == 512 + 256
    text_model, text_run = vision.text_run(m, t)
    b, text = estimate(m, t), estimate(text_model, text_run)
    assert text_run.seq_len == 768
    assert b.parameters == count_params(m)
    assert b.tensor_peak_bytes > text.tensor_peak_bytes
    assert b.trainable_parameters == text.trainable_parameters + (
        projector_params(m.vision, 3584) if method == "full" and m.vision else 0)  # the merger trains in full


def test_refusals_name_the_fix() -> None:
    m = presets.find_model("qwen2-vl-2b-instruct")
    with pytest.raises(UnsupportedCombination, match="--method full"):  # adapters on the tower: not modelled
        estimate(m, TrainingSpec(train_vision=True, method="lora"))
    with pytest.raises(UnsupportedCombination, match="--attention sdpa"):  # an adapted tower's eager softmax
        estimate(m, TrainingSpec(attention="eager", method="lora", lora_targets=("all-linear",)))
    with pytest.raises(UnsupportedCombination, match="--attention sdpa"):  # a trained tower's eager softmax
        estimate(m, TrainingSpec(attention="eager", train_vision=True))


def test_cli_estimates_and_refuses_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--method", "lora", "--image-size", "448"], capsys)
    assert code == 0, err
    assert "256 image tokens" in out
    code, _, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--attention", "eager", "--train-vision"], capsys)
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and "qwen2-vl-2b-instruct" in lines[0] and "--attention sdpa" in lines[0]
    code, out, _ = invoke(["show", "Qwen/Qwen2-VL-2B-Instruct"], capsys)
    assert code == 0 and "2,208,985,600" in out


def _library_smart_resize():  # noqa: ANN202 - the library's own function
    # image_processing_qwen2_vl.py smart_resize, read from the installed file (its module imports torchvision,
    # which this venv lacks); the function itself needs only math
    import ast
    import math

    transformers = pytest.importorskip("transformers")
    src = (Path(transformers.__file__).parent / "models/qwen2_vl/image_processing_qwen2_vl.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize")
    ns: dict = {"math": math}
    exec(compile(ast.Module([fn], []), "smart_resize", "exec"), ns)  # noqa: S102 - the library's own source
    return ns["smart_resize"]


def test_resize_matches_the_processor() -> None:
    # qwen_resized against smart_resize itself over a grid of sizes and three pixel budgets (the class defaults,
    # the published preprocessor_config.json's, and a 256-1280 token budget people set)
    from vramcalc.core.memory.vision import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, qwen_image_tokens, qwen_resized

    smart_resize = _library_smart_resize()
    v = spec("qwen2-vl-2b-instruct").vision
    assert v is not None
    budgets = ((QWEN_MIN_PIXELS, QWEN_MAX_PIXELS), (56 * 56, 28 * 28 * 1280), (256 * 28 * 28, 1280 * 28 * 28))
    sizes = [(h, w) for h in (*range(1, 300, 7), 448, 1000, 4000) for w in (*range(1, 300, 11), 640, 3000, 9000)
             if max(h, w) <= 200 * min(h, w)]
    for h, w in sizes:
        for low, high in budgets:
            assert qwen_resized(v, h, w, low, high) == smart_resize(h, w, 28, low, high), (h, w, low, high)
    # a 448 px square: 32 x 32 patches of 14 px, 1024 patches, 256 tokens after the 2 x 2 merger
    assert qwen_image_tokens(v, 448, 448) == 256
    with pytest.raises(SpecError):
        qwen_resized(v, 10, 2100)


@pytest.mark.parametrize("grid", [(1, 32, 32), (1, 16, 48), (1, 34, 20), (2, 8, 8)])
def test_emulated_windows_match_the_library(grid: tuple[int, int, int]) -> None:
    # trace/_qwen_vl.py's window lengths against vision_utils.get_vision_window_index run for real on a grid
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.vision_utils import get_vision_window_index

    from vramcalc.trace._qwen_vl import _window_lengths

    v = spec("qwen2.5-vl-3b-instruct").vision
    assert v is not None
    index, cu = get_vision_window_index(torch.tensor([grid]), v.spatial_merge_size, v.window_size, v.patch_size)
    assert _window_lengths(v, grid) == (cu[1:] - cu[:-1]).tolist()
    assert index.numel() == grid[0] * grid[1] * grid[2] // 4


TINY_VIS = {"num_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "patch_size": 14, "image_size": 0,
            "out_hidden_size": 256}


def tiny(kind: str) -> ModelSpec:
    # a 2-layer Qwen2 text model of width 256 and a 2-block tower of width 128 (tiny cuts of the published shapes)
    vis = {**TINY_VIS, "kind": kind, "intermediate_size": 512 if kind == "qwen2_vl" else 342}
    if kind == "qwen2_5_vl":
        vis.update(window_size=112, fullatt_block_indexes=(1,))
    return ModelSpec(name=f"tiny-{kind}", source="test", family="qwen2", vocab_size=1000, hidden_size=256,
                     intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2, qkv_bias=True,
                     vision=VisionSpec(**vis))


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_tracer_runs_a_step(kind: str) -> None:
    # the tracer builds the model from the spec and runs a full step on fake tensors through the emulated
    # data-dependent steps (trace/_qwen_vl.py); full fine-tuning trains the text model and the merger
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = tiny(kind)
    assert m.vision is not None
    r = trace(m, TrainingSpec(seq_len=64, batch_size=2, image_size=224))
    text = count_params(ModelSpec(**{**m.__dict__, "vision": None}))
    assert r.parameters == count_params(m)
    assert r.trainable_parameters == text + projector_params(m.vision, 256)
    assert r.peak_bytes > 0


def toy(kind: str) -> ModelSpec:
    # the published tower's width (1280, 16 heads; Qwen2-VL MLP 5120, Qwen2.5-VL 3420) cut to 4 blocks under a toy
    # language model, so that the image side makes the peak (benchmarks/accuracy.py --grid qwen-vl's toy cases)
    vis = {"kind": kind, "num_layers": 4, "hidden_size": 1280, "num_attention_heads": 16, "patch_size": 14,
           "image_size": 0, "out_hidden_size": 256, "intermediate_size": 5120 if kind == "qwen2_vl" else 3420}
    if kind == "qwen2_5_vl":
        vis.update(window_size=112, fullatt_block_indexes=(3,))
    return ModelSpec(name=f"toy-{kind}", source="test", family="qwen2", vocab_size=1000, hidden_size=256,
                     intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2, qkv_bias=True,
                     vision=VisionSpec(**vis))


@pytest.mark.parametrize(("kind", "kw"), [("qwen2_vl", {"method": "lora"}),
                                          ("qwen2_vl", {"method": "lora", "grad_checkpointing": True}),
                                          ("qwen2_5_vl", {"method": "full", "precision": "pure-bf16",
                                                          "grad_checkpointing": True})],
                         ids=["qwen2-vl-lora", "qwen2-vl-lora-gc", "qwen2.5-vl-full-gc"])
def test_traced_image_side_peak(kind: str, kw: dict[str, object]) -> None:
    # one 896 px image (4,096 patches) and 16 text tokens: the tower's forward (no checkpointing) or its
    # recomputed backward (checkpointing) is the step's peak; measured -0.01 %, -0.08 % and -0.07 %
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = toy(kind), TrainingSpec(seq_len=16, batch_size=1, image_size=896, **kw)  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert r.peak_op == "aten.mul.Tensor" and b.peak_phase == r.peak_phase
    assert -0.005 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.01


def test_presets_new_writes_the_qwen_image_side(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # `presets new` from Qwen2.5-VL's config.json writes `vision:` (fullatt_block_indexes as a YAML list) that the
    # preset loader reads back to the same VisionSpec and count
    import yaml

    from vramcalc.io import validate

    (tmp_path / "config.json").write_text((HF / "qwen2.5-vl-3b-instruct.json").read_text())
    code, out, err = invoke(["presets", "new", "--from", str(tmp_path / "config.json")], capsys)
    assert code == 0, err
    (entry,) = yaml.safe_load(out)
    m, problems = validate.check(ModelSpec, entry)
    assert problems == [] and m is not None
    assert m.vision == spec("qwen2.5-vl-3b-instruct").vision and count_params(m) == 3_754_622_976


def test_image_outputs_held_to_the_loss_are_in_the_activations_component() -> None:
    # Found by hypothesis (qwen2-vl-2b-instruct, full, 1 text token): the forward moments held the image outputs
    # kept until the loss (memory/vision.py `held`) but the activations component did not, so forward.loss held
    # 232,093,053 B of activations against a component of 231,896,445 B (196,608 B: the 64 image tokens of the
    # default 224 px image x the text width 1,536 x 2 bytes).
    b = estimate(presets.find_model("qwen2-vl-2b-instruct"), TrainingSpec(method="full", batch_size=1, seq_len=1))
    assert all(mo.component("activations") <= b.activations for mo in b.named_moments())
