"""Malformed preset files: every one is either loaded or refused with one `path: problem` line.

Three generators: arbitrary text (and bytes), YAML documents built from the spec's own field names
with values of every wrong kind (negative, zero, absurd and huge numbers, NaN, unicode, nested
containers, None), and known-hostile snippets (python/object tags, alias bombs, deep nesting,
4,300+ digit integers, NUL bytes, BOMs) spliced into valid entries. Each goes through the loader
(`read_yaml` + `parse_specs`) and, for a share, end to end through the CLI with VRAMCALC_PRESETS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError
from vramcalc.core.specs import GpuSpec, ModelSpec, field_names
from vramcalc.io import presets

MODEL_FIELDS = sorted(field_names(ModelSpec))
GPU_FIELDS = sorted(field_names(GpuSpec))
VALID_MODEL = {
    "name": "fuzz-model",
    "source": "hypothesis",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_layers": 2,
    "num_attention_heads": 4,
}
VALID_GPU = {
    "name": "fuzz-gpu",
    "display_name": "Fuzz GPU",
    "source": "hypothesis",
    "memory_bytes": 8 * 2**30,
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**40), 10**40),
    st.sampled_from([0, -1, 1, 2**63, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "∞", "1e999", "0x10", "☃"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def entry(draw: st.DrawFn, fields: list[str], valid: dict[str, Any]) -> dict[str, Any]:
    base = dict(valid) if draw(st.booleans()) else {}
    for key in draw(st.lists(st.one_of(st.sampled_from(fields), st.text(max_size=10)), max_size=6)):
        base[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=2)):
        base.pop(key, None)
    return base


def dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return "[]"


structured = st.one_of(
    st.lists(entry(MODEL_FIELDS, VALID_MODEL), max_size=4).map(dump),
    st.lists(entry(GPU_FIELDS, VALID_GPU), max_size=4).map(dump),
    values.map(dump),
)
HOSTILE = [
    "- !!python/object/apply:os.system ['echo pwned']\n",
    "!!python/name:os.system\n",
    "- !!python/object/new:subprocess.Popen [['true']]\n",
    "- name: x\n  source: y\n  parameters: " + "9" * 5000 + "\n",
    "[" * 3000 + "]" * 3000,
    "- name: x\n  source: y\n  parameters: 1\n  aliases: " + "[" * 40 + "]" * 40 + "\n",
    "".join(
        f"- &{c} [{','.join([f'*{p}' if p.strip() else 'x'] * 9)}]\n"
        for p, c in zip(" abcde", "abcdef", strict=True)
    ),
    "".join(
        f"- &{c} [{','.join([f'*{p}' if p.strip() else '1'] * 10)}]\n"
        for p, c in zip(" abcd", "abcde", strict=True)
    )
    + "- {name: big, source: s, parameters: 1, aliases: *e}\n",
    "&x [*x]\n",
    "\x00",
    "\ufeff",
    "\ufeff- name: x\n",
    "---\n---\n",
    "- {name: x, name: y}\n",
    "? [a, b]\n: 1\n",
    "- name: 2020-01-01\n  source: y\n  parameters: 5\n",
    "- {name: !!binary aGVsbG8=, source: y, parameters: 5}\n",
    "!!set {a, b}\n",
    "%YAML 9.9\n---\n[]\n",
    "- name: x\n\tsource: y\n",
    "- 'unterminated\n",
    "{{{{",
]
hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.tuples(st.sampled_from(HOSTILE), structured).map(lambda t: t[1] + t[0]),
    st.tuples(
        structured,
        st.integers(0, 200),
        st.sampled_from(["\x00", "\t", ":", "- ", "&a ", "*a", "!!", "'", "\n"]),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
)
any_text = st.one_of(st.text(max_size=200), structured, hostile)


def load_or_refuse(path: Path, kind: type[ModelSpec] | type[GpuSpec]) -> None:
    try:
        specs = presets.parse_specs(presets.read_yaml(path), kind, str(path))
    except PresetFileError as e:
        assert "\n" not in str(e)  # one line, whatever the file holds (core/errors.py sanitizes echoed input)
        assert str(e).startswith(str(path))
        return
    assert all(isinstance(s, kind) for s in specs)


@given(any_text, st.sampled_from([ModelSpec, GpuSpec]))
def test_any_preset_text_loads_or_is_refused_in_one_line(
    text: str, kind: type[ModelSpec] | type[GpuSpec]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        load_or_refuse(path, kind)


@given(st.binary(max_size=300))
def test_any_bytes_load_or_are_refused(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.yaml"
        path.write_bytes(data)
        load_or_refuse(path, ModelSpec)


@pytest.mark.parametrize(
    "text",
    HOSTILE[:9],
    ids=[
        "os.system",
        "python/name",
        "Popen",
        "5000-digit int",
        "3000-deep",
        "40-deep aliases",
        "alias bomb",
        "alias bomb 2",
        "self alias",
    ],
)
def test_hostile_snippets_are_refused_without_running_code(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(PresetFileError) as e:
            presets.parse_specs(presets.read_yaml(path), ModelSpec, str(path))
    assert "\n" not in str(e.value)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("#" * (presets.MAX_PRESET_FILE_BYTES + 1), encoding="utf-8")
    with pytest.raises(PresetFileError, match="over the 2,000,000-byte limit"):
        presets.read_yaml(path)


# Each example re-validates the built-in presets too (a new directory is a new catalog): ~0.2 s, so
# this end-to-end test takes a fifth of the profile's examples; the loader tests above take them all.
@settings(max_examples=max(10, settings().max_examples // 5))
@given(
    any_text,
    st.sampled_from(["models/x.yaml", "models/x.json", "gpus.yaml", "models.yaml"]),
    st.sampled_from(
        [
            ["estimate", "fuzz-model"],
            ["estimate", "gpt2", "--gpu", "fuzz-gpu"],
            ["models"],
            ["gpus"],
            ["estimate", "fuzz-model", "--format", "json"],
        ]
    ),
)
def test_user_preset_directory_through_the_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    where: str,
    argv: list[str],
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        monkeypatch.setenv("VRAMCALC_PRESETS", d)
        monkeypatch.setenv("COLUMNS", "100")
        code, out, err = invoke(argv, capsys)
    assert "Traceback" not in out + err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    else:
        assert err == ""
