"""Readers check JSON types before any arithmetic (issue 19): config.json keys, safetensors headers,
index files; no float overflow, no deep-nesting crash; booleans strictly true/false; unknown activations
refused. Inputs are generated (hypothesis) from each file kind's schema: io/hf_config.CONFIG_KEYS, the
safetensors header format, the index format.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramcalc.core.errors import PresetFileError
from vramcalc.core.vocab import HIDDEN_ACTS
from vramcalc.io import model_files
from vramcalc.io.hf_config import CONFIG_KEYS, spec_from_hf_config
from vramcalc.io.model_files import count_header, parse_json

HF = Path(__file__).parent / "data" / "hf"
FIXTURES = {p.stem: json.loads(p.read_text()) for p in sorted(HF.glob("*.json"))}
SETTINGS = settings(derandomize=True, max_examples=300, database=None, deadline=None)

# A value of the wrong JSON type for each kind of key (what a hand-edited or generated file holds).
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.one_of(st.sampled_from(["false", "true", "False", "0", "1", "yes", ""]), st.integers(), st.floats(),
                      st.lists(st.booleans(), max_size=2)),
    "positive": st.one_of(st.booleans(), st.text(max_size=8), st.integers(max_value=0),
                          st.floats().filter(lambda x: not float(x).is_integer()), st.lists(st.integers(), max_size=2)),
    "int": st.one_of(st.booleans(), st.text(max_size=8), st.integers(max_value=-1), st.just([1])),
    "number": st.one_of(st.booleans(), st.text(max_size=8), st.just({}), st.just([0.1])),
    "str": st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.just([]), st.just({})),
    "int_list": st.one_of(st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3), min_size=1, max_size=3)),
    "str_list": st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), min_size=1, max_size=3)),
}


@SETTINGS
@given(fixture=st.sampled_from(sorted(FIXTURES)), key=st.sampled_from(sorted(CONFIG_KEYS)), data=st.data())
def test_a_wrong_json_type_is_one_error_naming_the_key(fixture: str, key: str, data: st.DataObject) -> None:
    config = dict(FIXTURES[fixture])
    if config.get("model_type") == "gemma3" and isinstance(config.get("text_config"), dict):
        config = {**config, "text_config": dict(config["text_config"])}
    value = data.draw(WRONG[CONFIG_KEYS[key]])
    config[key] = value
    with pytest.raises(PresetFileError) as caught:
        spec_from_hf_config(config, "m", "config.json")
    assert f"config.json: {key}" in str(caught.value)


@SETTINGS
@given(value=st.sampled_from(["false", "true", "False", "no", 0, 1]))
def test_falcon_multi_query_as_a_string_is_not_read_as_true(value: Any) -> None:
    config = {**FIXTURES["falcon-7b"], "multi_query": value}
    with pytest.raises(PresetFileError, match="multi_query: Input should be a valid boolean"):
        spec_from_hf_config(config, "m", "config.json")


@pytest.mark.parametrize("multi_query", [True, False])
def test_falcon_multi_query_booleans_are_reflected(multi_query: bool) -> None:
    spec = spec_from_hf_config({**FIXTURES["falcon-7b"], "multi_query": multi_query}, "m", "config.json")
    heads = FIXTURES["falcon-7b"].get("n_head") or FIXTURES["falcon-7b"]["num_attention_heads"]
    assert (spec.num_kv_heads or heads) == (1 if multi_query else heads)


@SETTINGS
@given(name=st.text(min_size=1, max_size=20).filter(lambda s: s not in HIDDEN_ACTS))
def test_unknown_activation_names_are_refused_with_the_known_ones(name: str) -> None:
    config = {**FIXTURES["gpt2"], "activation_function": name}
    with pytest.raises(PresetFileError, match="hidden_act: Input should be 'silu'") as caught:
        spec_from_hf_config(config, "m", "config.json")
    assert "quick_gelu" in str(caught.value)


@pytest.mark.parametrize("name", HIDDEN_ACTS)
def test_known_activation_names_are_reflected(name: str) -> None:
    spec = spec_from_hf_config({**FIXTURES["gpt2"], "activation_function": name}, "m", "config.json")
    assert spec.hidden_act == name


@SETTINGS
@given(exponent=st.integers(309, 100_000), sign=st.sampled_from(["", "-"]), where=st.sampled_from(["a", "b"]))
def test_numbers_that_overflow_a_float_are_refused(exponent: int, sign: str, where: str) -> None:
    text = json.dumps({"a": 1, "b": [1, 2]}).replace("1" if where == "a" else "2", f"{sign}1e{exponent}", 1)
    with pytest.raises(PresetFileError, match="too large"):
        parse_json(text, "config.json", "config.json")


@SETTINGS
@given(depth=st.integers(2_000, 200_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_one_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(PresetFileError, match="nested too deeply"):
        parse_json(opener * depth + "1" + closer * depth, "config.json", "config.json")


# ---- safetensors headers, generated from the format: {name: {dtype, shape, data_offsets}} -------------

GOOD_ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(sorted(model_files.SAFETENSORS_DTYPE_BYTES)),
    "shape": st.lists(st.integers(0, 2**20), max_size=4),
    "data_offsets": st.just([0, 0]),
})
BAD_ENTRY = st.one_of(
    st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2),
    GOOD_ENTRY.map(lambda e: {**e, "dtype": "F99"}),
    GOOD_ENTRY.map(lambda e: {**e, "dtype": 2}),
    GOOD_ENTRY.map(lambda e: {**e, "shape": "4096"}),
    GOOD_ENTRY.map(lambda e: {**e, "shape": {"0": 1}}),
    st.builds(lambda e, d: {**e, "shape": [*e["shape"], d]}, GOOD_ENTRY,
              st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=3), st.none())),
    GOOD_ENTRY.map(lambda e: {k: v for k, v in e.items() if k != "shape"}),
)


@SETTINGS
@given(good=st.dictionaries(st.text(max_size=8), GOOD_ENTRY, max_size=4), name=st.text(max_size=8),
       bad=BAD_ENTRY)
def test_a_malformed_header_entry_is_one_error(good: dict[str, Any], name: str, bad: Any) -> None:
    header = {**good, name: bad}
    header.pop("__metadata__", None)
    if name == "__metadata__":
        return
    with pytest.raises(PresetFileError) as caught:
        count_header(header, "m.safetensors")
    assert "tensor " in str(caught.value)


@SETTINGS
@given(header=st.dictionaries(st.text(max_size=8).filter(lambda s: s != "__metadata__"), GOOD_ENTRY, max_size=6))
def test_a_well_formed_header_is_counted_exactly(header: dict[str, Any]) -> None:
    by_dtype, tensors = count_header(header, "m.safetensors")
    assert tensors == len(header)
    total = 0
    for entry in header.values():
        n = 1
        for d in entry["shape"]:
            n *= d
        total += n
    assert sum(by_dtype.values()) == total


@SETTINGS
@given(header=st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text(max_size=5), st.none()))
def test_a_header_that_is_not_an_object_is_refused(tmp_path_factory: pytest.TempPathFactory, header: Any) -> None:
    body = json.dumps(header).encode()
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(PresetFileError, match="not a JSON object"):
        model_files.read_safetensors_header(path)


INDEX_BAD = st.one_of(
    st.fixed_dictionaries({"weight_map": st.one_of(st.lists(st.text(max_size=3), max_size=2), st.text(max_size=3),
                                                   st.integers(), st.none())}),
    st.fixed_dictionaries({"weight_map": st.dictionaries(st.text(max_size=3), st.one_of(
        st.integers(), st.none(), st.just(""), st.just(".."), st.just("a/b"), st.lists(st.text(), max_size=1)),
        min_size=1, max_size=3)}),
    st.fixed_dictionaries({"weight_map": st.just({"w": "model.safetensors"}), "metadata": st.one_of(
        st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=1))}),
    st.fixed_dictionaries({"weight_map": st.just({"w": "model.safetensors"}), "metadata": st.fixed_dictionaries(
        {"total_size": st.one_of(st.booleans(), st.integers(max_value=-1), st.text(max_size=3), st.floats())})}),
)


@SETTINGS
@given(index=INDEX_BAD)
def test_a_malformed_index_is_one_error(tmp_path_factory: pytest.TempPathFactory, index: Any) -> None:
    folder = tmp_path_factory.mktemp("idx")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PresetFileError) as caught:
        model_files._checkpoint_of(folder)
    assert "model.safetensors.index.json: " in str(caught.value)
