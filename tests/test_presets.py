"""Preset loading: lookups, suggestions, and per-field errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vramcalc.core.errors import PresetFileError, UnknownPresetError
from vramcalc.core.specs import ModelSpec
from vramcalc.io import presets

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["mistral-7b", "Mistral-7B", "MISTRAL_7B", "mistral 7b",
                                  "mistralai/Mistral-7B-v0.1", "Mistral-7B-v0.1"])
def test_lookup_is_case_and_punctuation_insensitive(name: str) -> None:
    assert presets.find_model(name).name == "mistral-7b"


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownPresetError) as e:
        presets.find_model("mistrall-7b")
    assert "mistral-7b" in e.value.suggestions
    assert str(e.value).startswith("unknown model 'mistrall-7b'; did you mean 'mistral-7b'")


def test_gpu_aliases() -> None:
    assert presets.find_gpu("RTX 4090").name == "rtx4090"
    # nvidia-smi reports 24564 MiB for the RTX 4090: 24,564 × 2^20 bytes.
    assert presets.find_gpu("rtx4090").memory_bytes == 24564 * 2**20


def test_bad_file_reports_entry_and_field() -> None:
    with pytest.raises(PresetFileError) as e:
        presets.parse_specs(presets.read_yaml(DATA / "bad_models.yaml"), ModelSpec, "bad_models.yaml")
    assert str(e.value) == "bad_models.yaml: entry 1 (broken): vocab_size: Input should be greater than 0"


def test_python_object_tags_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("- !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(PresetFileError, match="line 1: invalid YAML"):
        presets.read_yaml(evil)


def test_user_directory_overrides_and_adds(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.yaml").write_text(
        "- name: my-tiny\n  source: https://example.org/config.json\n  vocab_size: 100\n  hidden_size: 64\n"
        "  intermediate_size: 128\n  num_layers: 2\n  num_attention_heads: 4\n")
    assert presets.find_model("my-tiny", [tmp_path]).num_layers == 2
    assert presets.find_model("mistral-7b", [tmp_path]).name == "mistral-7b"


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(PresetFileError, match="file is empty"):
        presets.parse_specs(presets.read_yaml(tmp_path / "empty.yaml"), ModelSpec, "empty.yaml")


def test_vision_language_presets_answer_to_their_short_names() -> None:
    # a new user typed "qwen2.5-vl-7b" and was offered text models only; Qwen2.5-VL ships instruct checkpoints only,
    # Qwen2-VL's base checkpoints share the instruct ones' config.json
    from vramcalc.io import presets

    for short, name in (("qwen2.5-vl-7b", "qwen2.5-vl-7b-instruct"), ("qwen2.5-vl-3b", "qwen2.5-vl-3b-instruct"),
                        ("qwen2-vl-7b", "qwen2-vl-7b-instruct"), ("qwen2-vl-2b", "qwen2-vl-2b-instruct")):
        assert presets.find_model(short).name == name
