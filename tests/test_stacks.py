"""Stacks as data (issue 13): presets/stacks/*.yaml, --stack, and fit's ranked savers naming the stacks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError
from vramcalc.core.memory import estimate
from vramcalc.core.options import OPTIONS, OptionValues, training_spec
from vramcalc.core.vocab import STACKS
from vramcalc.io import presets
from vramcalc.io.stacks import find_stack, parse_stack, stack_options, stacks_dir


@pytest.mark.parametrize("name", STACKS)
def test_each_stack_preset_validates_with_its_sources(name: str) -> None:
    s = find_stack(name)
    assert s.name == name and s.source.startswith("https://") and s.version
    assert set(s.sources) == set(s.options)  # every default names the library file that sets it
    assert s.offers  # every stack offers some saver fit can name


def test_the_stack_files_are_the_vocabulary() -> None:
    assert sorted(p.stem for p in stacks_dir().glob("*.yaml")) == sorted(STACKS)


def test_hf_is_vramcalcs_defaults() -> None:
    assert stack_options("hf") == {}


def test_a_bad_stack_file_lists_every_problem() -> None:
    data = {"name": "unsloth", "display_name": "x", "source": "http://x", "version": "1",
            "options": {"loss": "nope", "batch_size": 4}, "sources": {"loss": "f"}, "offers": {}, "notes": []}
    with pytest.raises(PresetFileError) as e:
        parse_stack(data, "bad.yaml", "unsloth")
    assert e.value.problems == [
        "source: give the https URL of the library file the defaults were read from",
        "options.loss: 'nope' is not one of hf, chunked, linear-chunked, fused-linear, cut, trl, liger-cross-entropy",
        "options.batch_size: not an option a stack sets",
    ]
    with pytest.raises(PresetFileError, match="notes: Field required"):
        parse_stack({k: v for k, v in data.items() if k != "notes"}, "bad.yaml")


def test_stack_under_explicit_options() -> None:
    from vramcalc.cli.runs import stack_defaults

    opts = OptionValues(values={"stack": "unsloth", "loss": "hf"}, given={"stack", "loss"}, stacks=stack_defaults)
    run = opts.run()
    unsloth = find_stack("unsloth").options
    assert run["loss"] == "hf"  # given on the command line: it wins
    assert all(run[k] == v for k, v in unsloth.items() if k != "loss")
    assert set(run["stack_set"]) == set(unsloth) - {"loss"}
    t = training_spec(run)
    assert t.stack == "unsloth" and "loss" not in t.stack_set


def test_unsloth_qlora_on_a_t4(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["estimate", "llama-3.1-8b", "--method", "qlora", "--gpu", "t4", "--format", "json"]
    code, out, _ = invoke([*argv, "--stack", "unsloth"], capsys)
    doc = json.loads(out)
    s = doc["settings"]
    assert code == 0 and s["stack"] == "unsloth"
    assert (s["loss"], s["activation_offload"], s["grad_checkpointing"], s["optimizer"]) == (
        "cut", True, True, "adamw-8bit")
    assert any("Triton kernels" in n for n in doc["notes"])  # what the stack does that is not modelled
    _, plain, _ = invoke([*argv, "--seq-len", "2048", "--lora-targets", "all-linear"], capsys)
    # The same run under plain HF defaults (full logits, no checkpointing, 32-bit AdamW) needs more.
    assert json.loads(plain)["peak_bytes"] > doc["peak_bytes"]


def test_assumptions_line_names_what_the_stack_set(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "llama-3.2-1b", "--stack", "torchtune", "--loss", "hf"], capsys)
    flat = " ".join(out.split())
    assert code == 0
    # presets/stacks/torchtune.yaml's options in file order, less the loss given on the command line
    assert "stack torchtune set precision, adapter-dtype, loss-chunks, grad-checkpointing, optimizer-impl" in flat


def test_stack_is_an_option_of_compare(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["compare", "llama-3.2-1b", "--stack", "hf,unsloth", "--method", "qlora",
                           "--format", "json"], capsys)
    rows = json.loads(out)["rows"]
    assert code == 0 and len(rows) == 2 and rows[1]["settings"]["stack"] == "unsloth"
    assert rows[1]["peak_bytes"] < rows[0]["peak_bytes"]  # cut loss, offloaded checkpointing, 8-bit AdamW


def test_fit_ranks_the_savers_by_their_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["fit", "llama-3.1-8b", "--gpu", "rtx4090", "--seq-len", "4096", "--format", "json"],
                          capsys)
    doc = json.loads(out)
    savers = doc["savers"]
    assert savers and [g["saved_bytes"] for g in savers] == sorted((g["saved_bytes"] for g in savers), reverse=True)
    m = presets.find_model("llama-3.1-8b")
    base = training_spec(OptionValues(values={"seq_len": 4096}, given={"seq_len"}).run())
    for g in savers:  # each figure is the estimate of the run with that saver
        peak = estimate(m, replace(base, **g["changes"])).peak_bytes
        assert g["peak_bytes"] == peak and g["saved_bytes"] == doc["peak_bytes"] - peak
        option, value = list(g["changes"].items())[-1]
        assert g["stacks"] == [s for s in STACKS if value in find_stack(s).offers.get(option, ())]
    cut = next(g for g in savers if g["changes"] == {"loss": "cut"})
    assert "unsloth" in cut["stacks"] and "axolotl" in cut["stacks"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "yaml"])
def test_fit_savers_in_every_format(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["fit", "llama-3.1-8b", "--gpu", "rtx4090", "--seq-len", "4096", "--format", fmt], capsys)
    assert code == 0 and ("loss: cut" if fmt == "yaml" else "--loss cut") in out and "unsloth" in out


def test_every_option_but_the_run_shape_can_be_a_stack_default() -> None:
    from vramcalc.io.stacks import NOT_STACK_OPTIONS

    assert NOT_STACK_OPTIONS < {o.name for o in OPTIONS}


def test_explain_diff_side_applies_its_stack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["explain", "llama-3.2-1b", "--method", "qlora", "--diff", "", "--stack unsloth",
                           "--format", "json"], capsys)
    _, est, _ = invoke(["estimate", "llama-3.2-1b", "--method", "qlora", "--stack", "unsloth", "--format", "json"],
                       capsys)
    text = out.replace(" ", "")
    # side B is the estimate of the same run with the stack: its defaults applied, not only its name
    assert code == 0 and str(json.loads(est)["peak_bytes"]) in text
