"""The fast path (vramcalc._fastpath) prints exactly what the Typer path prints, with the same exit code.

Every invocation is run both ways in-process: `_fastpath.run` into a non-terminal text stream, and
the Typer app through CliRunner with the same environment. Where the fast path declines (returns
None) nothing may have been written; the tests also pin which invocations it must handle, so a
merge that silently sends everything to the slow path fails here rather than only in the benchmark.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vramcalc import _fastpath, _index, presets
from vramcalc.cli import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


class Pipe(io.StringIO):
    """A UTF-8 text stream that is not a terminal, like stdout redirected to a file or a pipe."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_index.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "vramcalc-cache"))
    for var in ("VRAMCALC_NO_FASTPATH", "VRAMCALC_PRESETS", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)


def both(argv: list[str], columns: int = 80) -> tuple[int | None, str, int, str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    out = Pipe()
    code = _fastpath.run(argv, env, out)
    result = runner.invoke(app, argv, env={"COLUMNS": str(columns)})
    return code, out.getvalue(), result.exit_code, result.stdout


COMMON = [
    "estimate mistral-7b --method full --gpu rtx4090",
    "estimate mistral-7b",
    "estimate Mistral-7B --gpu RTX4090 --check",
    "estimate llama-3.1-8b --method lora --gpu a100-80gb --batch-size 4 --seq-len 2048",
    "estimate llama-3.1-8b --method qlora --gpu rtx4090 --grad-checkpointing --check",
    "estimate gpt2 --method lora --lora-targets all-linear --lora-rank 64 --adapter-dtype bf16",
    "estimate gpt2 --precision amp-bf16 --optimizer adafactor --optimizer-impl for-loop --attention eager",
    "estimate qwen2.5-0.5b --precision fp16 --gpu t4",
    "estimate gemma-2b --gpu v100 --units GiB",
    "estimate phi-2 --method full --optimizer adamw-8bit --grad-accum 8 --no-grad-checkpointing",
    "estimate resnet-50 --gpu rtx4090",
    "estimate mistral-7b --format json --gpu rtx4090",
    "estimate pythia-160m --format=json --method=lora --seq-len=128",
]


@pytest.mark.parametrize("columns", [80, 57, 120, 200])
@pytest.mark.parametrize("line", COMMON, ids=lambda s: s.removeprefix("estimate "))
def test_fast_path_handles_and_matches(line: str, columns: int) -> None:
    code, fast, typer_code, slow = both(line.split(), columns)
    if columns == 57 and code is None:
        return  # a narrow console may need rich's column shrinking: declining is allowed there
    assert code is not None, "the fast path declined a common invocation"
    assert (code, fast) == (typer_code, slow)


def test_every_model_preset_matches() -> None:
    handled = 0
    for name in presets.models().names():
        for argv in (
            ["estimate", name, "--gpu", "rtx4090"],
            ["estimate", name, "--method", "qlora", "--check", "--gpu", "rtx3060-12gb"],
        ):
            code, fast, typer_code, slow = both(argv)
            if code is not None:
                handled += 1
                assert (code, fast) == (typer_code, slow), argv
    assert handled >= len(presets.models().names())


DECLINED = [
    "estimate",
    "estimate -h",
    "estimate mistral-7b --help",
    "--version",
    "models",
    "gpus",
    "show gpt2",
    "estimate mistrall-7b",
    "estimate mistral-7b --gpu rtx9090",
    "estimate mistral-7b --method freeze",
    "estimate mistral-7b --method freeze --freeze-layers 4",
    "estimate mistral-7b --batch-size 0",
    "estimate mistral-7b --batch-size -1",
    "estimate mistral-7b --batch-size x",
    "estimate mistral-7b --seq-len 1e3",
    "estimate mistral-7b --method FULL",
    "estimate mistral-7b --format yaml",
    "estimate mistral-7b --format markdown",
    "estimate mistral-7b --lora-targets ,",
    "estimate mistral-7b --method lora --lora-targets nope",
    "estimate mistral-7b gpt2",
    "estimate mistral-7b --gpu",
    "estimate mistral-7b --check=yes",
    "estimate mistral-7b --batch-size 2 --batch-size 3",
    "estimate mistral-7b -- --gpu",
    "estimate mistral-7b --gpu rtx4090 --check --no-check",
]


@pytest.mark.parametrize("line", DECLINED)
def test_fast_path_declines_what_it_does_not_fully_understand(line: str) -> None:
    out = Pipe()
    assert _fastpath.run(line.split(), dict(os.environ), out) is None
    assert out.getvalue() == ""


def test_terminal_and_env_overrides_decline() -> None:
    class Tty(Pipe):
        def isatty(self) -> bool:
            return True

    argv = "estimate mistral-7b --gpu rtx4090".split()
    assert _fastpath.run(argv, dict(os.environ), Tty()) is None
    for var in ("VRAMCALC_NO_FASTPATH", "FORCE_COLOR", "TTY_COMPATIBLE", "VRAMCALC_PRESETS"):
        assert _fastpath.run(argv, {**os.environ, var: "1"}, Pipe()) is None


def test_fast_path_imports_no_typer_rich_pydantic_or_yaml() -> None:
    code = (
        "import sys; from vramcalc._fastpath import main; sys.argv=['vramcalc','estimate','mistral-7b',"
        "'--gpu','rtx4090']\ntry:\n main()\nexcept SystemExit as e:\n heavy=[m for m in sys.modules "
        "if m.split('.')[0] in ('typer','rich','pydantic','yaml','click')]\n"
        " print(e.code, heavy, file=sys.stderr)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)  # warm the index
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert proc.stderr.strip() == "0 []"  # exit 0: no --check


def test_console_script_and_module_agree_with_typer_path() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80"}
    argv = [
        sys.executable,
        "-m",
        "vramcalc",
        "estimate",
        "mistral-7b",
        "--method",
        "full",
        "--gpu",
        "rtx4090",
    ]
    fast = subprocess.run(argv, env=env, capture_output=True, text=True)
    slow = subprocess.run(argv, env={**env, "VRAMCALC_NO_FASTPATH": "1"}, capture_output=True, text=True)
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)


def test_index_helpers_agree_with_presets_module() -> None:
    assert _index.builtin_dir() == presets.builtin_dir()
    for name in ["Mistral 7B", "MISTRAL_7b", "Qwen/Qwen2.5-7B", "..x..", "ü-ß", ""]:
        assert _index.normalize(name) == presets.normalize(name)
    doc = _index.load_index()
    for spec in presets.models().specs:
        record = _index.Record(doc["models"][spec.name])  # type: ignore[attr-defined]
        for field in type(spec).model_fields:
            assert getattr(record, field) == getattr(spec, field)
        assert record.has_architecture == spec.has_architecture  # type: ignore[attr-defined]
    assert set(doc["model_keys"]) == set(presets.models().index)


def test_corrupt_or_stale_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_index.CACHE_ENV, str(tmp_path))
    path = _index.cache_path()
    for junk in ["", "{", "[]", json.dumps({"fingerprint": "stale"}), "\x00\xff"]:
        path.write_text(junk, encoding="utf-8", errors="surrogateescape")
        doc = _index.load_index()
        assert doc["fingerprint"] == _index.fingerprint()
        assert json.loads(path.read_text(encoding="utf-8"))["fingerprint"] == doc["fingerprint"]


def test_unwritable_cache_still_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(_index.CACHE_ENV, str(blocker / "sub"))
    out = Pipe()
    assert _fastpath.run("estimate gpt2 --format json".split(), dict(os.environ), out) == 0
    assert json.loads(out.getvalue())["model"] == "gpt2"


def _fresh_index() -> dict[str, Any]:
    doc = _index.compile_index()
    return {k: v for k, v in doc.items() if k not in ("table_ok", "json_ok")}


def test_the_compiled_index_enables_both_outputs() -> None:
    doc = _index.load_index()
    assert (doc["table_ok"], doc["json_ok"]) == (True, True)


def test_a_changed_table_switches_the_table_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output the Typer path gains and the fast path lacks (here: one more line) must be noticed."""
    from vramcalc import whatif

    original = whatif.print_estimate

    def one_more_line(rows, margin, fmt, units, no_color):  # type: ignore[no-untyped-def]
        original(rows, margin, fmt, units, no_color)
        if fmt == "table":
            print("one more line")

    monkeypatch.setattr(whatif, "print_estimate", one_more_line)
    assert _fastpath.probe(_fresh_index()) == {"table_ok": False, "json_ok": True}


def test_a_changed_json_document_switches_the_json_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from vramcalc import whatif

    real_emit = whatif.emit
    monkeypatch.setattr(whatif, "emit", lambda doc, fmt: real_emit({**doc, "extra": 1}, fmt))
    assert _fastpath.probe(_fresh_index())["json_ok"] is False
