"""Zamba2 (issue 15): Mamba-2 layers and shared attention blocks with per-invocation projectors, counted exactly;
the step's memory refused in one line (memory/zamba2.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params, is_hybrid, zamba2_blocks
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
NAMES = ("zamba2-1.2b", "zamba2-2.7b", "zamba2-7b")
FIXTURES = {n: json.loads((HF / f"{n}.json").read_text()) for n in NAMES}
# Cut shapes for the library comparison: 6 layers, shared blocks at 1, 3 and 4 (num_mem_blocks 2: blocks A, B, A)
TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 6, "num_attention_heads": 4,
        "num_key_value_heads": 4, "n_mamba_heads": 4, "mamba_headdim": 32, "mamba_d_state": 16, "mamba_ngroups": 2,
        "adapter_rank": 8, "num_mem_blocks": 2, "vocab_size": 512, "chunk_size": 32,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba"], "hybrid_layer_ids": [1, 3, 4]}
VARIANTS = {
    "published-1.2b": ("zamba2-1.2b", {}),
    "published-2.7b": ("zamba2-2.7b", {}),
    "published-7b": ("zamba2-7b", {}),
    "tiny-attention-adapters": ("zamba2-2.7b", {**TINY, "use_shared_attention_adapter": True}),
    "tiny-bias": ("zamba2-2.7b", {**TINY, "add_bias_linear": True}),
    # untied: transformers ties no shared block either, each hybrid layer keeps a copy with its block's projectors
    "tiny-untied": ("zamba2-2.7b", {**TINY, "tie_word_embeddings": False}),
    "tiny-untied-adapters-3-blocks": ("zamba2-2.7b", {**TINY, "tie_word_embeddings": False, "num_mem_blocks": 3,
                                                      "use_shared_attention_adapter": True}),
    # more weight sets than hybrid layers: only as many as are invoked are built
    "tiny-gqa-4-blocks": ("zamba2-7b", {**TINY, "num_key_value_heads": 2, "num_mem_blocks": 4,
                                        "use_shared_attention_adapter": False}),
    "tiny-no-hybrid": ("zamba2-2.7b", {**TINY, "layers_block_type": ["mamba"] * 6, "hybrid_layer_ids": []}),
}


def spec(name: str, shape: dict[str, object] | None = None):
    return spec_from_hf_config({**FIXTURES[name], **(shape or {})}, name, "tests/test_zamba2.py")


@pytest.mark.parametrize(("name", "shape"), VARIANTS.values(), ids=list(VARIANTS))
def test_count_matches_the_library(name: str, shape: dict[str, object]) -> None:
    # sum(p.numel()) of Zamba2ForCausalLM on the meta device: parameters() yields the tied shared blocks once
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = {**FIXTURES[name], **shape}
    config = transformers.Zamba2Config(**{k: v for k, v in d.items()
                                          if k not in ("architectures", "model_type", "torch_dtype")})
    with torch.device("meta"):
        model = transformers.Zamba2ForCausalLM(config)
    assert count_params(spec(name, shape)) == sum(p.numel() for p in model.parameters())


def test_fixtures_read_as_typed() -> None:
    # the README's shapes: hidden, layers, shared-block invocations, weight sets, projectors on the attention, RoPE
    got = {n: (m.hidden_size, m.num_layers, len(m.zamba_hybrid_layers), zamba2_blocks(m), m.zamba_attention_adapters,
               m.zamba_mem_rope, m.mixer_intermediate_size // m.mixer_head_dim, m.head_dim)
           for n, m in ((n, spec(n)) for n in NAMES)}
    assert got == {"zamba2-1.2b": (2048, 38, 6, 1, True, True, 64, 128),
                   "zamba2-2.7b": (2560, 54, 9, 2, False, False, 80, 160),
                   "zamba2-7b": (3584, 81, 13, 2, False, True, 112, 224)}
    assert not any(is_hybrid(spec(n)) for n in NAMES)  # not Falcon-H1's layout


def test_shared_weights_counted_once() -> None:
    # 2.7B: 9 invocations of 2 weight sets. A third set would add its q, k, v (2h x 2h each), o (2h -> h), gate_up
    # (h -> 2 x 10240), down (10240 -> h) and two norms (2h, h); the projectors stay one per invocation
    m = spec("zamba2-2.7b")
    h, f = 2560, 10240
    three = spec("zamba2-2.7b", {"num_mem_blocks": 3})
    assert count_params(three) - count_params(m) == 3 * 4 * h * h + 2 * h * h + 3 * h * f + 3 * h


def test_presets_equal_the_fixtures() -> None:
    for n in NAMES:
        m = presets.find_model(n)
        assert count_params(m) == m.published_parameters == count_params(spec(n))
    assert presets.find_model("Zyphra/Zamba2-7B-Instruct").name == "zamba2-7b"


@pytest.mark.parametrize(("shape", "words"), [
    ({"layers_block_type": ["mamba", "attention"], "num_hidden_layers": 2}, "layers_block_type"),
    ({"num_hidden_layers": 53}, "layers_block_type"),
    ({"mamba_headdim": 32}, "mamba_headdim 32"),
    ({"hybrid_layer_ids": [6]}, "hybrid_layer_ids"),
    ({"n_mamba_heads": 7, "mamba_headdim": None}, "multiple of n_mamba_heads"),
    ({"num_key_value_heads": 8, "use_shared_attention_adapter": True}, "num_key_value_heads 8"),
    ({"head_dim": 80}, "head_dim 80"),
])
def test_reader_refuses_what_the_library_would_not_build(shape: dict[str, object], words: str) -> None:
    with pytest.raises(PresetFileError, match=words):
        spec("zamba2-2.7b", shape)


def test_spec_checks_the_layout() -> None:
    from dataclasses import replace

    m = spec("zamba2-2.7b")
    with pytest.raises(SpecError, match="zamba_hybrid_layers"):
        replace(m, zamba_hybrid_layers=(60,))
    with pytest.raises(SpecError, match="head_dim"):
        replace(m, head_dim=80)
    with pytest.raises(SpecError, match="family zamba2"):
        replace(m, family="mamba2")


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_estimates_are_refused_in_one_line(method: str) -> None:
    with pytest.raises(UnsupportedCombination, match="Zamba2's step memory .* is not modelled"):
        estimate(presets.find_model("zamba2-2.7b"), TrainingSpec(method=method))


def test_cli_shows_the_count_and_refuses_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["show", "zamba2-1.2b", "--format", "json"], capsys)
    assert code == 0 and "1215064704" in out.replace(",", "").replace("_", "")
    code, _, err = invoke(["estimate", str(HF / "zamba2-7b.json")], capsys)
    assert code == 2 and "Zamba2" in err and err.count("\n") == 1
