"""No silent wrong answers from values in files (issue 19): numbers are never truncated or infinite,
empty names are refused, other tools' values that are not understood are errors, YAML duplicate keys
and YAML 1.1 sexagesimal/octal integers are refused. Generated from the option table (core/options.py
OPTIONS) and each file kind's keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vramcalc.core.errors import PresetFileError, VramcalcError
from vramcalc.core.options import BY_NAME, OPTIONS, OptionError, coerce
from vramcalc.io import presets, runfiles

SETTINGS = settings(derandomize=True, max_examples=300, database=None, deadline=None)
INTS = sorted(o.name for o in OPTIONS if o.kind is int)
FLOATS = sorted(o.name for o in OPTIONS if o.kind is float)
STRS = sorted(o.name for o in OPTIONS if o.kind is str)


@SETTINGS
@given(name=st.sampled_from(INTS), raw=st.one_of(
    st.booleans(), st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer())),
    st.sampled_from(["true", "1.5", "inf", "", "four"]), st.lists(st.integers(), max_size=2)))
def test_integer_options_refuse_fractions_booleans_and_words(name: str, raw: Any) -> None:
    with pytest.raises(OptionError, match=BY_NAME[name].flag):
        coerce(BY_NAME[name], raw)


@SETTINGS
@given(name=st.sampled_from(INTS), value=st.integers(-(10**6), 10**6), as_float=st.booleans())
def test_integer_options_keep_whole_values(name: str, value: int, as_float: bool) -> None:
    assert coerce(BY_NAME[name], float(value) if as_float else value) == value


@SETTINGS
@given(name=st.sampled_from(FLOATS), raw=st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, "inf", "-Infinity", "nan", "1e309"]), st.booleans()))
def test_number_options_refuse_non_finite_values(name: str, raw: Any) -> None:
    with pytest.raises(OptionError, match=BY_NAME[name].flag):
        coerce(BY_NAME[name], raw)


@SETTINGS
@given(name=st.sampled_from(STRS), raw=st.sampled_from(["", " ", "\t", [], ["", " "]]))
def test_string_options_refuse_empty_values(name: str, raw: Any) -> None:
    with pytest.raises(OptionError, match="empty value"):
        coerce(BY_NAME[name], raw)


def _write(tmp: pytest.TempPathFactory, data: Any, text: str | None = None) -> Path:
    path = tmp.mktemp("run") / "run.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


@SETTINGS
@given(key=st.sampled_from(["gpu", "model", "name"]),
       value=st.one_of(st.sampled_from(["", " ", "\t"]), st.lists(st.integers(), max_size=2), st.just({})))
def test_run_file_empty_or_structured_names_are_refused(tmp_path_factory: pytest.TempPathFactory, key: str,
                                                       value: Any) -> None:
    path = _write(tmp_path_factory, {"model": "llama-3.1-8b", "gpu": "h100-80gb", key: value})
    with pytest.raises(runfiles.RunFileError, match=f"{key}: expected a {key} name"):
        runfiles.load(str(path))


@SETTINGS
@given(key=st.sampled_from(INTS),
       raw=st.one_of(st.booleans(), st.floats(0.01, 1e6).filter(lambda x: not x.is_integer())))
def test_run_file_numbers_are_not_truncated(tmp_path_factory: pytest.TempPathFactory, key: str, raw: Any) -> None:
    path = _write(tmp_path_factory, {"model": "llama-3.1-8b", key: raw})
    with pytest.raises(runfiles.RunFileError, match=f"run 1: {key}: .* is not an integer"):
        runfiles.load(str(path))


FOREIGN_INT_KEYS = {  # tool -> (a minimal config, its integer keys)
    "axolotl": ({"base_model": "llama-3.1-8b", "adapter": "lora"},
                ["lora_r", "sequence_len", "micro_batch_size", "gradient_accumulation_steps"]),
    "llama-factory": ({"model_name_or_path": "llama-3.1-8b", "stage": "sft", "finetuning_type": "lora"},
                      ["lora_rank", "cutoff_len", "per_device_train_batch_size", "gradient_accumulation_steps"]),
    "hf-training-args": ({"output_dir": "x"}, ["per_device_train_batch_size", "gradient_accumulation_steps"]),
    "torchtune": ({"model": {"_component_": "torchtune.models.llama3_1.lora_llama3_1_8b"}},
                  ["batch_size", "gradient_accumulation_steps"]),
}


@SETTINGS
@given(tool=st.sampled_from(sorted(FOREIGN_INT_KEYS)), data=st.data(),
       raw=st.one_of(st.booleans(), st.floats(0.01, 1e6).filter(lambda x: not x.is_integer()), st.just("2.5")))
def test_foreign_config_numbers_are_not_truncated(tmp_path_factory: pytest.TempPathFactory, tool: str,
                                                  data: st.DataObject, raw: Any) -> None:
    base, keys = FOREIGN_INT_KEYS[tool]
    key = data.draw(st.sampled_from(keys))
    path = _write(tmp_path_factory, {**base, key: raw})
    with pytest.raises(runfiles.RunFileError, match=f"{key}: .* is not an integer"):
        runfiles.load(str(path))


@SETTINGS
@given(adapter=st.text(min_size=1, max_size=8).filter(lambda s: s not in ("lora", "qlora")))
def test_axolotl_adapters_not_understood_are_errors(tmp_path_factory: pytest.TempPathFactory, adapter: str) -> None:
    path = _write(tmp_path_factory, {"base_model": "llama-3.1-8b", "adapter": adapter})
    with pytest.raises(runfiles.RunFileError, match="adapter: .* use lora or qlora"):
        runfiles.load(str(path))


def test_axolotl_qlora_capitalised_is_not_full_fine_tuning(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("base_model: llama-3.1-8b\nadapter: QLoRA\n")
    with pytest.raises(runfiles.RunFileError, match="adapter: 'QLoRA' is not a value axolotl takes; write 'qlora'"):
        runfiles.load(str(path))


@SETTINGS
@given(quant=st.one_of(st.integers().filter(lambda q: q not in (4, 8)), st.booleans(), st.just("4")))
def test_llama_factory_quantization_bits_not_modeled_are_errors(tmp_path_factory: pytest.TempPathFactory,
                                                                quant: Any) -> None:
    base = FOREIGN_INT_KEYS["llama-factory"][0]
    path = _write(tmp_path_factory, {**base, "quantization_bit": quant})
    with pytest.raises(runfiles.RunFileError, match="quantization_bit: .* is not modeled"):
        runfiles.load(str(path))


# ---- YAML: duplicate keys and YAML 1.1 integers ---------------------------------------------------------

FIELD = st.sampled_from(["name", "hidden_size", "num_layers", "vocab_size", "memory_bytes", "source"])


@SETTINGS
@given(key=FIELD, first=st.integers(1, 10**6), second=st.integers(1, 10**6), depth=st.integers(0, 2))
def test_duplicate_yaml_keys_are_refused(tmp_path_factory: pytest.TempPathFactory, key: str, first: int,
                                         second: int, depth: int) -> None:
    indent = "  " * depth
    text = "".join(f"{'  ' * d}k{d}:\n" for d in range(depth)) + f"{indent}{key}: {first}\n{indent}{key}: {second}\n"
    path = _write(tmp_path_factory, None, text)
    with pytest.raises(PresetFileError, match=f"key '{key}' is given twice"):
        presets.read_yaml(path)


@SETTINGS
@given(parts=st.lists(st.integers(0, 59), min_size=2, max_size=3), lead=st.integers(1, 99))
def test_sexagesimal_integers_stay_strings_and_fail_validation(tmp_path_factory: pytest.TempPathFactory,
                                                               parts: list[int], lead: int) -> None:
    text_value = ":".join([str(lead), *(f"{p:02d}" for p in parts)])
    folder = tmp_path_factory.mktemp("presets")
    (folder / "gpus.yaml").write_text(
        f"- name: g\n  display_name: G\n  memory_bytes: {text_value}\n  vendor: nvidia\n  source: https://e.com\n")
    assert presets.read_yaml(folder / "gpus.yaml")[0]["memory_bytes"] == text_value
    with pytest.raises(PresetFileError) as caught:
        presets.load_files("gpu", (folder,))
    assert any("memory_bytes: Input should be a number, not a string" in p for p in caught.value.problems)


@SETTINGS
@given(value=st.integers(1, 10**6))
def test_leading_zero_integers_are_not_octal(tmp_path_factory: pytest.TempPathFactory, value: int) -> None:
    path = _write(tmp_path_factory, None, f"a: 0{value}\nb: {value}\n")
    data = presets.read_yaml(path)
    assert data["a"] == f"0{value}" and data["b"] == value


def test_presets_validate_reports_duplicate_keys(tmp_path: Path) -> None:
    from vramcalc.io.preset_check import check_file

    path = tmp_path / "gpus.yaml"
    path.write_text("- name: g\n  memory_bytes: 1000\n  memory_bytes: 2000\n  vendor: nvidia\n  source: s\n")
    problems, _ = check_file(path, "gpu")
    assert problems and "given twice" in str(problems[0]) and problems[0].line == 3


def test_errors_are_vramcalc_errors() -> None:
    assert issubclass(runfiles.RunFileError, VramcalcError) and issubclass(OptionError, VramcalcError)
