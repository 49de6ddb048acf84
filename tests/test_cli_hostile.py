"""Hostile CLI values (issue 19): never a traceback, a hang or a silent wrong answer.

The core refuses non-finite numbers and empty strings (core/options.coerce); cli/options.py passes every
value Typer parsed through it, so both front ends (Typer and cli/fast.py) agree.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import invoke


@settings(derandomize=True, max_examples=4, database=None, deadline=None)
@given(value=st.sampled_from(["inf", "-inf", "nan", "1e309"]))
def test_cli_refuses_non_finite_lora_alpha(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _out, err = invoke(["estimate", "llama-3.1-8b", "--method", "lora", "--lora-alpha", value,
                              "--format", "json"], capsys)
    assert code == 2 and "--lora-alpha" in err


@settings(derandomize=True, max_examples=3, database=None, deadline=None)
@given(value=st.sampled_from(["", " ", "\t"]))
def test_cli_refuses_an_empty_gpu(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _out, err = invoke(["estimate", "llama-3.1-8b", "--gpu", value], capsys)
    assert code == 2 and "--gpu" in err


# ---- every option of estimate, compare and fit, generated from the option tables ----

import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from vramcalc import cli  # noqa: E402
from vramcalc.cli.commands.estimate import OWN_OPTIONS  # noqa: E402
from vramcalc.core.options import MAX_RUNS, OPTIONS, Opt  # noqa: E402
from vramcalc.io import presets  # noqa: E402

HOSTILE = ["", " ", "\t", "inf", "-inf", "nan", "1e309", "9" * 400, "-1", "0", "1.5", "\x1b[31mred", "a\nb",
           "x" * 3000, "\u202e", "１２", "true,false", ";", ","]
GPU_NAMES = sorted(presets.gpus().names())[:8]


def _valid(o: Opt, multi: bool) -> st.SearchStrategy[str]:
    """A value of the option's kind, as the command line spells it (a list of them for compare)."""
    if isinstance(o.kind, tuple):
        one: st.SearchStrategy[str] = st.sampled_from([str(c) for c in o.kind])
    elif o.kind is bool:
        one = st.sampled_from(["true", "false"])
    elif o.kind is int:
        one = st.integers(min_value=1, max_value=2**41).map(str) | st.sampled_from(["1", "2", "4", "8", "4096"])
    elif o.kind is float:
        one = st.floats(min_value=0, max_value=1e300, allow_nan=False).map(repr) | st.sampled_from(["0.1", "16"])
    else:
        one = st.sampled_from(["q_proj,v_proj", "all-linear", "auto", "k_proj"])
    if not multi:
        return one
    return st.lists(one, min_size=1, max_size=3).map(o.sep.join)


def _args(o: Opt, multi: bool) -> st.SearchStrategy[list[str]]:
    """One option on the command line: `--flag=value` (valid or hostile), or a bare boolean flag."""
    value = _valid(o, multi) | st.sampled_from(HOSTILE)
    arg = value.map(lambda v: [f"{o.flag}={v}"])
    if o.kind is bool and not multi:  # estimate and fit take a boolean as a flag
        forms = [[o.flag]] + ([["--no-" + o.flag[2:]]] if o.negatable else [])
        return st.sampled_from(forms) | arg
    return arg


def _command_line(command: str) -> st.SearchStrategy[tuple[list[str], list[tuple[Opt, list[str]]]]]:
    multi = command == "compare"
    options = st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=3, unique_by=lambda o: o.name)

    @st.composite
    def build(draw: Any) -> tuple[list[str], list[tuple[Opt, list[str]]]]:
        chosen = [(o, draw(_args(o, multi))) for o in draw(options)]
        argv = [command, "llama-3.1-8b", "--format", draw(st.sampled_from(["json", "json", "table", "csv",
                                                                          "markdown", "yaml"]))]
        gpu = draw(st.sampled_from([None, *GPU_NAMES, *HOSTILE[:4]]))
        if command == "fit" and gpu is None:
            gpu = "h100"
        if gpu is not None:
            argv += ["--gpu", gpu]
        if command == "estimate":  # estimate's own options, from its table
            for o in draw(st.lists(st.sampled_from([o for o in OWN_OPTIONS if o.name not in ("fmt", "gpu")]),
                                   max_size=1)):
                argv += draw(_args(o, False))
        for _, a in chosen:
            argv += a
        return argv, chosen

    return build()


def _check_clean(code: int, out: str, err: str) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    else:
        assert out.strip(), "a success prints something"


def _settings(command: str, out: str) -> dict[str, Any]:
    doc = json.loads(out)
    return doc["rows"][0]["settings"] if command == "compare" else doc["settings"]


def _expected(o: Opt, arg: list[str]) -> Any:
    """The value a command line gave an option (a bare flag is true, --no- false)."""
    if "=" not in arg[0]:
        return not arg[0].startswith("--no-")
    text = arg[0].partition("=")[2]
    if o.kind is bool:
        return text.strip().lower() == "true"
    return int(text) if o.kind is int else float(text) if o.kind is float else text


@pytest.mark.parametrize("command,examples", [("estimate", 120), ("compare", 50), ("fit", 40)])
def test_generated_command_lines(capsys: pytest.CaptureFixture[str], command: str, examples: int) -> None:
    """Random values of each option's kind and hostile strings: exit 0/1/2, no traceback, one error line;
    an accepted single value shows in the JSON `settings`."""

    compared: list[str] = []

    @settings(derandomize=True, database=None, deadline=None, max_examples=examples)
    @given(case=_command_line(command))
    def check(case: tuple[list[str], list[tuple[Opt, list[str]]]]) -> None:
        argv, chosen = case
        code, out, err = invoke(argv, capsys)
        _check_clean(code, out, err)
        if code == 0 and argv[3] == "json":
            shown = _settings(command, out)
            compared.append(argv[-1])
            for o, arg in chosen:
                name = "seq_len" if o.name == "context" else o.name
                if name not in shown or o.name in ("precision", "lora_targets") or (command == "compare"
                                                                                  and "," in arg[0]):
                    continue
                if command == "fit" and name == "seq_len" and "context" in {c.name for c, _ in chosen}:
                    continue
                assert shown[name] == _expected(o, arg), (name, arg, shown[name])

    check()
    assert compared, "some generated command lines succeed with JSON and their settings are compared"


@pytest.mark.parametrize("argv,flag", [
    (["estimate", "llama-3.1-8b", "--config", ""], "--config"),
    (["estimate", "llama-3.1-8b", "--presets", " "], "--presets"),
    (["estimate", "llama-3.1-8b", "--lora-dropout", "nan"], "--lora-dropout"),
    (["compare", "llama-3.1-8b", "--gpu", ""], "--gpu"),
    (["compare", "llama-3.1-8b", "--lora-alpha", "inf,2"], "--lora-alpha"),
    (["fit", "llama-3.1-8b", "--gpu", "h100", "--config", " "], "--config"),
    (["fit", "llama-3.1-8b", "--gpu", "h100", "--lora-alpha", "1e309"], "--lora-alpha"),
])
def test_empty_and_non_finite_values_name_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   flag: str) -> None:
    code, _out, err = invoke(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and flag in err, err


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown", "yaml"])
def test_the_largest_counts_print_and_one_more_is_refused(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    big = str(2**40)
    code, out, err = invoke(["estimate", "llama-3.1-8b", "--gpu", "h100", "--batch-size", big, "--seq-len", big,
                             "--grad-accum", big, "--format", fmt], capsys)
    assert code == 0 and out and not err
    code, _out, err = invoke(["estimate", "llama-3.1-8b", "--batch-size", str(2**40 + 1), "--format", fmt],
                             capsys)
    assert code == 2 and "--batch-size" in err and err.count("\n") == 1


def test_fit_and_compare_refuse_unbounded_work_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    code, out, _err = invoke(["fit", "llama-3.1-8b", "--gpu", "h100", "--batch-size", str(2**40),
                              "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["suggestions"]
    many = ",".join(map(str, range(1, 1001)))
    code, _out, err = invoke(["compare", "llama-3.1-8b", "--batch-size", many, "--seq-len", many], capsys)
    assert code == 2 and "1,000,000 configurations" in err and f"{MAX_RUNS:,}" in err
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("columns", ["0", "abc", "-3", "99999999999"])
@pytest.mark.parametrize("command", [["compare", "llama-3.1-8b", "--batch-size", "1,2"],
                                     ["fit", "llama-3.1-8b", "--gpu", "h100"], ["estimate", "llama-3.1-8b"]])
def test_junk_columns_still_print(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                  columns: str, command: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _err = invoke(command, capsys)
    assert code == 0 and len(out.splitlines()) > 3


@pytest.mark.parametrize("command", [["estimate", "llama-3.1-8b", "--gpu", "h100", "--plot"],
                                     ["compare", "llama-3.1-8b", "--batch-size", "1,2", "--gpu", "h100"],
                                     ["compare", "llama-3.1-8b", "--batch-size", "1,2", "--format", "markdown"],
                                     ["fit", "llama-3.1-8b", "--gpu", "h100"]])
def test_an_ascii_only_stdout_gets_an_ascii_report(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "argv", ["vramcalc", *command])
    monkeypatch.setenv("COLUMNS", "150")
    with pytest.raises(SystemExit) as e:
        cli.main()
    sys.stdout.flush()
    assert e.value.code in (0, 1, None)
    text = raw.getvalue().decode("ascii")
    assert len(text.splitlines()) > 3
    if command[0] == "estimate":
        assert " x seq " in text and "|" in text


@pytest.mark.parametrize("argv", [
    ["estimate", "a" * 300],
    ["estimate", "./" + "a" * 300 + ".json"],
    ["estimate", "llama-3.1-8b", "--config", "a" * 300 + ".yaml"],
    ["estimate", "llama-3.1-8b", "--presets", "a" * 300],
    ["compare", "llama-3.1-8b", "--config", "a" * 300],
    ["fit", "llama-3.1-8b", "--gpu", "h100", "--presets", "a" * 300],
    ["estimate", "~no-such-user-here/config.json"],
])
def test_os_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _out, err = invoke(argv, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


# ---- a folder in the working directory named like a preset (issue 19): the path wins, the same on both front
# ends (cli/fast.py, which answers in a terminal or a pipe, and Typer), and the output says so ----

_HF = __import__("pathlib").Path(__file__).parent / "data" / "hf"


@settings(derandomize=True, max_examples=12, database=None, deadline=None)
@given(name=st.sampled_from(sorted(presets.models().names())[:40]),
       fixture=st.sampled_from(sorted(p.name for p in _HF.glob("*.json"))))
def test_a_folder_named_like_a_preset_wins_the_same_everywhere_and_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
    name: str, fixture: str
) -> None:
    here = tmp_path_factory.mktemp("cwd")
    (here / name).mkdir(parents=True)
    (here / name / "config.json").write_text((_HF / fixture).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(here)
    from vramcalc.cli import app

    argv = ["estimate", name, "--format", "json"]
    fast = invoke(argv, capsys)  # the console entry point: cli/fast.py takes this command line
    monkeypatch.setattr(sys, "argv", ["vramcalc", *argv])
    with pytest.raises(SystemExit) as e:
        app.main()  # the Typer app, as for any command line fast.py declines
    out, err = capsys.readouterr()
    typer = (e.value.code if isinstance(e.value.code, int) else 0, out, err)
    answers = [fast, typer]
    assert answers[0] == answers[1], "the fast path and Typer give the same answer"
    code, out, err = answers[0]
    if code == 2:  # a fixture the model reader refuses for this name's folder: one line, naming the folder
        assert err.count("\n") == 1 and name in err
        return
    doc = json.loads(out)
    assert any("also a preset name" in n for n in doc["notes"]), doc["notes"]
