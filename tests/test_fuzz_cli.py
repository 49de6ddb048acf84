"""CLI fuzzing: random command lines end with exit 0 (or 1 under --check), or one `error:` line and exit 2.

Each example runs the real console entry point (`vramcalc.cli.fast.main`: the fast path, else the
Typer app through `vramcalc.cli.app.main`) in-process, with random option values: valid choices, wrong
types, negative, zero and huge numbers, unicode, empty strings, flags in odd places, unknown options
and other commands. Any exception other than SystemExit fails the test, and so does a traceback or a
multi-line error on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli_helpers import invoke
from vramcalc.io import presets

MODEL_NAMES = presets.models().names()
GPU_NAMES = presets.gpus().names()

junk_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "-",
            "--",
            "-1",
            "0",
            "1e9",
            "nan",
            "inf",
            "None",
            "true",
            "q_proj,,",
            ",",
            "all-linear",
            "../../etc/passwd",
            "config.json",
            "mistral 7b",
            "MISTRAL-7B",
            "Ｍistral",
            "💥",
            "\x00",
            "a\nb",
        ]
    ),
)
numbers = st.one_of(st.integers(-(10**30), 10**30), st.integers(-3, 70_000)).map(str)
floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)

OPTIONS: dict[str, Any] = {
    "--gpu": st.one_of(st.sampled_from(GPU_NAMES), junk_text),
    "--method": st.one_of(st.sampled_from(["full", "lora", "qlora", "freeze"]), junk_text),
    "--precision": st.one_of(
        st.sampled_from(["bf16", "fp16", "pure-bf16", "mixed-fp16", "amp-bf16", "fp32"]), junk_text
    ),
    "--optimizer": st.one_of(
        st.sampled_from(["adamw", "adamw-8bit", "paged-adamw", "sgd", "adafactor", "lion"]), junk_text
    ),
    "--optimizer-impl": st.one_of(st.sampled_from(["fused", "foreach", "for-loop"]), junk_text),
    "--batch-size": st.one_of(numbers, junk_text),
    "--seq-len": st.one_of(numbers, junk_text),
    "--grad-accum": st.one_of(numbers, junk_text),
    "--attention": st.one_of(st.sampled_from(["sdpa", "eager"]), junk_text),
    "--lora-rank": st.one_of(numbers, junk_text),
    "--lora-alpha": st.one_of(floats, numbers, junk_text),
    "--lora-dropout": st.one_of(floats, junk_text),
    "--lora-targets": st.one_of(
        st.sampled_from(["q_proj,v_proj", "all-linear", "c_attn", "gate_proj", "nope"]), junk_text
    ),
    "--adapter-dtype": st.one_of(st.sampled_from(["fp32", "bf16", "fp16"]), junk_text),
    "--quant-bits": st.one_of(st.sampled_from(["4", "8"]), numbers, junk_text),
    "--freeze-layers": st.one_of(numbers, junk_text),
    "--format": st.one_of(st.sampled_from(["table", "json", "yaml", "markdown"]), junk_text),
    "--units": st.one_of(st.sampled_from(["GB", "GiB"]), junk_text),
}
FLAGS = [
    "--grad-checkpointing",
    "--no-grad-checkpointing",
    "--double-quant",
    "--no-double-quant",
    "--train-head",
    "--no-train-head",
    "--check",
    "--no-check",
    "-h",
    "--help",
    "--version",
    "--bogus",
    "-x",
    "--",
]


@st.composite
def estimate_argv(draw: st.DrawFn) -> list[str]:
    argv = ["estimate"]
    if draw(st.integers(0, 9)):  # usually a model, sometimes none
        argv.append(draw(st.one_of(st.sampled_from(MODEL_NAMES), junk_text)))
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 4)):
            name = draw(st.sampled_from(sorted(OPTIONS)))
            value = draw(OPTIONS[name])
            argv += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
        else:
            argv.append(draw(st.sampled_from(FLAGS)))
    return argv


other_argv = st.one_of(
    st.lists(junk_text, max_size=4),
    st.tuples(
        st.sampled_from(
            ["models", "gpus", "show", "--version", "-h", "estimate", "compare", "fit", "explain"]
        ),
        st.lists(
            st.one_of(junk_text, st.sampled_from(["--format", "json", "yaml", "gpt2", "markdown"])),
            max_size=3,
        ),
    ).map(lambda t: [t[0], *t[1]]),
)


@pytest.fixture(autouse=True)
def _env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMCALC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fuzz-cache"))
    monkeypatch.setenv("COLUMNS", "100")
    for var in ("VRAMCALC_NO_FASTPATH", "VRAMCALC_PRESETS", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)


def assert_clean(argv: list[str], code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, argv
    assert code in (0, 1, 2), (argv, code, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    elif code == 1:
        assert "--check" in argv, (argv, err)
    else:
        assert err == "", (argv, err)


@given(estimate_argv())
def test_random_estimate_command_lines_never_crash(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert_clean(argv, *invoke(argv, capsys))


@given(other_argv)
def test_random_other_command_lines_never_crash(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert_clean(argv, *invoke(argv, capsys))


def test_a_config_json_path_as_model_is_a_clean_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken config.json never crashes: each is refused in one line (exit 2) that names the file."""
    # empty, not JSON, not an object, no model_type, a number JSON reads as infinity
    for text in ["", "{", "[]", '{"hidden_size": -1}', '{"model_type": "llama", "hidden_size": 1e400}']:
        path = tmp_path / "config.json"
        path.write_text(text, encoding="utf-8")
        argv = ["estimate", str(path)]
        code, out, err = invoke(argv, capsys)
        assert_clean(argv, code, out, err)
        assert code == 2 and "config.json" in err, (text, code, err)
