"""The shipped preset data: every entry validates, names are unique, and model totals are right.

The key test derives each model's parameter count from its architecture fields
(vramcalc.core.params.count_params) and compares it with `published_parameters`, a total taken from
outside the architecture. Where each total comes from is written next to it in the YAML, in
`published_parameters_source` (safetensors index total_size / 2, the Hub's safetensors count,
GGUF general.parameter_count, a model card table or sum(p.numel())), so a wrong config field
cannot hide behind a hand-typed total.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from vramcalc.core.params import count_params
from vramcalc.core.specs import GpuSpec, ModelSpec
from vramcalc.io import validate
from vramcalc.io.presets import find_model

PRESETS = Path(__file__).resolve().parent.parent / "presets"
MODEL_FILES = sorted((PRESETS / "models").glob("*.yaml"))
GPU_FILES = sorted(PRESETS.glob("gpus*.yaml")) + sorted((PRESETS / "gpus").glob("*.yaml"))

# Presets whose only published total is rounded, with the relative tolerance the rounding allows.
# GPT-3: arXiv:2005.14165 Table 2.1 prints "175.0B"; the architecture it gives yields 174.6B.
ROUNDED_TOTALS: dict[str, float] = {"gpt3-175b": 0.005}


def _load(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, list), f"{path.name}: expected a YAML list of entries"
    return data


def _entries(files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, entry) for path in files for entry in _load(path)]


MODEL_ENTRIES = _entries(MODEL_FILES)
GPU_ENTRIES = _entries(GPU_FILES)
MODELS = TypeAdapter(list[ModelSpec]).validate_python([e for _, e in MODEL_ENTRIES])
GPUS = TypeAdapter(list[GpuSpec]).validate_python([e for _, e in GPU_ENTRIES])


def _key(s: str) -> str:
    """Case- and punctuation-insensitive form used for uniqueness: 'Qwen/Qwen2.5-7B' -> 'qwenqwen2.57b'."""
    return re.sub(r"[^a-z0-9.]", "", s.lower())


def _ids(entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [str(e.get("name", f"{f}#{i}")) for i, (f, e) in enumerate(entries)]


def test_preset_files_exist() -> None:
    assert MODEL_FILES, "no presets/models/*.yaml"
    assert GPU_FILES, "no GPU preset file"
    assert len(MODELS) >= 40
    assert len(GPUS) >= 30


@pytest.mark.parametrize(("file", "entry"), MODEL_ENTRIES, ids=_ids(MODEL_ENTRIES))
def test_model_entry_validates(file: str, entry: dict[str, Any]) -> None:
    spec = validate.build(ModelSpec, entry)
    assert spec.source.startswith("http"), f"{file}: {spec.name}: source must be a URL"
    assert spec.name == spec.name.lower() and " " not in spec.name
    assert spec.display_name


@pytest.mark.parametrize(("file", "entry"), GPU_ENTRIES, ids=_ids(GPU_ENTRIES))
def test_gpu_entry_validates(file: str, entry: dict[str, Any]) -> None:
    spec = validate.build(GpuSpec, entry)
    assert spec.source.startswith("http"), f"{file}: {spec.name}: source must be a URL"
    assert spec.name == spec.name.lower() and " " not in spec.name
    # memory_bytes must be an integer in the YAML, not a float that pydantic happened to accept
    assert isinstance(entry["memory_bytes"], int)


@pytest.mark.parametrize("kind", ["models", "gpus"])
def test_names_and_aliases_unique(kind: str) -> None:
    specs: list[ModelSpec] | list[GpuSpec] = MODELS if kind == "models" else GPUS
    seen: dict[str, str] = {}
    clashes = []
    for spec in specs:
        for label in dict.fromkeys((spec.name, *spec.aliases)):  # an alias may equal its own name
            k = _key(label)
            if k in seen and seen[k] != spec.name:
                clashes.append(f"{label!r} of {spec.name} clashes with {seen[k]}")
            seen.setdefault(k, spec.name)
    assert not clashes, "; ".join(clashes)


@pytest.mark.parametrize("spec", MODELS, ids=[m.name for m in MODELS])
def test_hf_id_among_aliases(spec: ModelSpec) -> None:
    if "huggingface.co/" not in spec.source:
        pytest.skip("not a Hugging Face model")
    repo = "/".join(spec.source.split("huggingface.co/")[1].split("/")[:2])
    if repo not in spec.aliases:
        # a text-only view of a multimodal checkpoint (Gemma 3's gemma-3-4b): the id names the whole model, whose
        # language model this preset is
        other = find_model(repo)
        if spec.vision is not None:
            # the multimodal view of a checkpoint whose id names its text model (Llama 4: AutoModelForCausalLM builds
            # Llama4ForCausalLM from meta-llama/Llama-4-Scout-17B-16E-Instruct; llama-4-scout-vision is the whole
            # Llama4ForConditionalGeneration)
            assert other.vision is None
            assert count_params(other) == count_params(replace(spec, vision=None))
            return
        whole = other
        assert spec.vision is None and whole.vision is not None
        assert count_params(spec) == count_params(replace(whole, vision=None))
        return
    assert repo in spec.aliases


@pytest.mark.parametrize("spec", MODELS, ids=[m.name for m in MODELS])
def test_count_matches_published_total(spec: ModelSpec) -> None:
    assert spec.published_parameters is not None, "every preset needs a published total to check against"
    assert spec.published_parameters_source, "say where published_parameters comes from"
    counted = count_params(spec)
    if spec.name in ROUNDED_TOTALS:
        assert counted == pytest.approx(spec.published_parameters, rel=ROUNDED_TOTALS[spec.name])
    else:
        assert counted == spec.published_parameters


@pytest.mark.parametrize("name", ["rtx4090", "a100-80gb", "a100-40gb", "h100", "l4", "t4"])
def test_required_gpu_names(name: str) -> None:
    assert name in {g.name for g in GPUS}


@pytest.mark.parametrize(
    "name",
    ["mistral-7b", "llama-2-7b", "llama-3.1-8b", "gpt2", "gpt3-175b", "mixtral-8x7b", "resnet-50"],
)
def test_required_model_names(name: str) -> None:
    assert name in {m.name for m in MODELS}


# Anchors from the brief, pinned independently of the YAML's own published_parameters.
ANCHORS = {
    "mistral-7b": 7_241_732_096,  # sum(p.numel()), Mistral-7B-v0.1 (shared/seeds/000)
    "llama-2-7b": 6_738_415_616,
    "gpt2": 124_439_808,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "phi-3-mini": 3_821_079_552,
    "gpt2-xl": 1_557_611_200,
    "distilgpt2": 81_912_576,
    "tinyllama-1.1b": 1_100_048_384,
    "qwen2.5-0.5b": 494_032_768,
}


@pytest.mark.parametrize(("name", "total"), ANCHORS.items(), ids=list(ANCHORS))
def test_anchor_totals(name: str, total: int) -> None:
    spec = next(m for m in MODELS if m.name == name)
    assert count_params(spec) == total
