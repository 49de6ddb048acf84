"""Control characters and terminal escapes from input files never reach a message raw (issue 19).

One sanitizer (core/errors.printable) runs in VramcalcError itself, so every subclass's message is one
printable line; names with control characters are refused by the specs. Texts are generated with the
characters that matter (newline, carriage return, ESC sequences, bidi overrides, NUL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vramcalc.core.errors import PresetFileError, SpecError, VramcalcError, printable
from vramcalc.core.options import BY_NAME, coerce
from vramcalc.io import presets, runfiles
from vramcalc.io.hf_config import spec_from_hf_config
from vramcalc.io.preset_check import check_file

SETTINGS = settings(derandomize=True, max_examples=200, database=None, deadline=None)
HOSTILE = st.sampled_from(["\n", "\r", "\x1b[31m", "\x1b]0;title\x07", "\u202e", "\x00", "\t", "\x7f", "\u2028"])
TEXT = st.builds(lambda a, h, b: a + h + b, st.text(max_size=6), HOSTILE, st.text(max_size=6))


def one_printable_line(e: BaseException) -> None:
    message = str(e)
    assert message.isprintable(), message


@SETTINGS
@given(text=TEXT)
def test_printable_escapes_and_is_idempotent_on_printable_text(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable() and printable(shown) == shown


@SETTINGS
@given(name=TEXT, kind=st.sampled_from(["model", "gpu"]))
def test_a_preset_name_with_control_characters_is_a_one_line_error(
        tmp_path_factory: pytest.TempPathFactory, name: str, kind: str) -> None:
    folder = tmp_path_factory.mktemp("p")
    entry: dict[str, Any] = {"name": name, "display_name": "X", "source": "s"}
    if kind == "gpu":
        entry.update(memory_bytes=1000, vendor="nvidia")
        path = folder / "gpus.yaml"
    else:
        entry.update(parameters=1000, family="llama")
        (folder / "models").mkdir()
        path = folder / "models" / "m.yaml"
    path.write_text(json.dumps([entry]))
    with pytest.raises(PresetFileError) as caught:
        presets.load_files(kind, (folder,))
    one_printable_line(caught.value)
    assert all(str(p).isprintable() for p in check_file(path, kind)[0])


@SETTINGS
@given(model_type=TEXT)
def test_config_json_model_type_is_echoed_escaped(model_type: str) -> None:
    with pytest.raises(VramcalcError) as caught:
        spec_from_hf_config({"model_type": model_type}, "m", "config.json")
    one_printable_line(caught.value)


@SETTINGS
@given(key=TEXT, value=TEXT)
def test_run_file_keys_and_values_are_echoed_escaped(tmp_path_factory: pytest.TempPathFactory, key: str,
                                                     value: str) -> None:
    path = tmp_path_factory.mktemp("r") / "run.yaml"
    path.write_text(yaml.safe_dump({"model": "llama-3.1-8b", key: value}))
    with pytest.raises(VramcalcError) as caught:
        runfiles.load(str(path))
    one_printable_line(caught.value)


@SETTINGS
@given(option=st.sampled_from(["batch_size", "lora_alpha", "method", "grad_checkpointing"]), value=TEXT)
def test_option_values_are_echoed_escaped(option: str, value: str) -> None:
    with pytest.raises(VramcalcError) as caught:
        coerce(BY_NAME[option], value)
    one_printable_line(caught.value)


@SETTINGS
@given(field=TEXT, message=TEXT)
def test_spec_error_parts_are_escaped(field: str, message: str) -> None:
    e = SpecError(field, message)
    one_printable_line(e)
    assert e.field.isprintable() and e.message.isprintable()


def test_a_file_name_with_a_newline_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "a\nb.yaml"
    path.write_text("a: [")
    with pytest.raises(PresetFileError) as caught:
        presets.read_yaml(path)
    one_printable_line(caught.value)
    assert "a\\nb.yaml" in str(caught.value)
