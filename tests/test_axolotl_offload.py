"""axolotl's offloaded checkpointing as axolotl-ai-cloud/axolotl @ 067b021c runs it (io/runfiles.py
_offloading_axolotl, _gc_offload_axolotl): gradient_checkpointing offload / offload_disk are rewritten into
activation_offloading true / disk (utils/schemas/validation.py check_gradient_checkpointing_w_offload), both TRL's
OffloadActivations over checkpointed layers (--grad-checkpointing --activation-offload, measured: --grid axooff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.io import runfiles

GC_OFFLOAD = {"grad_checkpointing": True, "activation_offload": True}


def _load(tmp_path: Path, d: dict[str, object]) -> runfiles.Run:
    f = tmp_path / "ax.json"
    f.write_text(json.dumps({"base_model": "tinyllama-1.1b", **d}))
    run = runfiles.load(str(f))[0]
    assert run.kind == "axolotl"
    return run


def _refusal(tmp_path: Path, d: dict[str, object]) -> str:
    with pytest.raises(runfiles.RunFileError) as e:
        _load(tmp_path, d)
    path, msg = str(e.value).split(": ", 1)  # the file, then the key and the problem
    assert path.endswith("ax.json")
    return msg


@pytest.mark.parametrize("adapter", [None, "lora", "qlora"])
@pytest.mark.parametrize("old, new", [("offload", True), ("offload_disk", "disk")])
def test_the_deprecated_values_are_activation_offloading(tmp_path: Path, adapter: str | None, old: str,
                                                         new: object) -> None:
    # validation.py: offload -> gradient_checkpointing true + activation_offloading true; offload_disk -> "disk";
    # both run the same streamed OffloadActivations (the mixin reads only "legacy" and "hidden_states" apart)
    more = {"adapter": adapter} if adapter else {}
    deprecated = _load(tmp_path, {"gradient_checkpointing": old, **more})
    today = _load(tmp_path, {"gradient_checkpointing": True, "activation_offloading": new, **more})
    plain = _load(tmp_path, {"gradient_checkpointing": True, "activation_offloading": True, **more})
    assert deprecated.options == today.options == plain.options
    assert GC_OFFLOAD.items() <= deprecated.options.items() and "reentrant_gc" not in deprecated.options
    assert not deprecated.unmodelled and "activation_offloading" in today.mapped
    note = next(n for n in deprecated.notes if n.startswith(f"gradient_checkpointing: {old}: axolotl 067b021c"))
    assert "--grad-checkpointing --activation-offload" in note and ("no disk offload" in note) == (old != "offload")


def test_the_validator_overrides_activation_offloading(tmp_path: Path) -> None:
    # check_gradient_checkpointing_w_offload sets activation_offloading = True whatever the file said
    run = _load(tmp_path, {"gradient_checkpointing": "offload", "activation_offloading": "legacy"})
    assert GC_OFFLOAD.items() <= run.options.items()


@pytest.mark.parametrize("value, words", [
    ("legacy", "hf_grad_checkpoint_offload_wrapper"),
    ("hidden_states", "checkpoint_activation_offload.py"),
])
def test_other_offloads_are_refused(tmp_path: Path, value: str, words: str) -> None:
    msg = _refusal(tmp_path, {"gradient_checkpointing": True, "activation_offloading": value})
    assert msg.startswith("activation_offloading: ") and words in msg
    assert msg.endswith("use activation_offloading: true")


def test_offloading_needs_checkpointing(tmp_path: Path) -> None:
    # validation.py check_activation_offloading_wo_gc raises
    for gc in ({}, {"gradient_checkpointing": False}):
        msg = _refusal(tmp_path, {**gc, "activation_offloading": True})
        assert "requires gradient_checkpointing" in msg and msg.endswith("add gradient_checkpointing: true")
    run = _load(tmp_path, {"gradient_checkpointing": True, "activation_offloading": False})
    assert "activation_offload" not in run.options and not any("OffloadActivations" in n for n in run.notes)


@pytest.mark.parametrize("value", ["unsloth", "Unsloth"])
def test_unsloth_is_refused(tmp_path: Path, value: str) -> None:
    # utils/schemas/config.py: gradient_checkpointing is Literal["offload", "offload_disk"] | bool | None
    msg = _refusal(tmp_path, {"gradient_checkpointing": value})
    assert msg.startswith("gradient_checkpointing: 'unsloth' is not a value axolotl takes")
    assert msg.endswith("write activation_offloading: true")


def test_lora_checkpoints_reentrant_by_default(tmp_path: Path) -> None:
    # normalize_config gives {use_reentrant: true} when the file has no keywords (and neither rl nor
    # unfrozen_parameters); counted non-reentrant, the note says so
    run = _load(tmp_path, {"adapter": "lora", "gradient_checkpointing": "offload"})
    assert "reentrant_gc" not in run.options
    assert any("reentrant (use_reentrant true, axolotl's default)" in n and "approximate" in n for n in run.notes)
    for d in ({"gradient_checkpointing_kwargs": {"use_reentrant": False}}, {"rl": "dpo"}):
        run = _load(tmp_path, {"adapter": "lora", "gradient_checkpointing": "offload", **d})
        assert not any("approximate" in n for n in run.notes)
    # QLoRA: peft's prepare_model_for_kbit_training re-enables it with {} (torch's default: reentrant)
    run = _load(tmp_path, {"adapter": "qlora", "gradient_checkpointing": "offload",
                           "gradient_checkpointing_kwargs": {"use_reentrant": False}})
    assert any("peft's {}" in n for n in run.notes) and any("prepare_model_for_kbit_training" in n for n in run.notes)


def test_lora_keywords_reach_torch_whole(tmp_path: Path) -> None:
    # every_n_layers is popped by the Trainer only, which checkpoints nothing under offloading: the loader's
    # gradient_checkpointing_enable hands it to torch.utils.checkpoint (tests/test_foreign_keys.py checks the same
    # for offload on the installed transformers and torch)
    base = {"adapter": "lora", "gradient_checkpointing": True, "activation_offloading": True}
    for kwargs in ({"every_n_layers": 2}, {"every_n_layers": 2, "use_reentrant": True}):
        msg = _refusal(tmp_path, {**base, "gradient_checkpointing_kwargs": kwargs})
        assert msg.startswith("gradient_checkpointing_kwargs: every_n_layers: ") and "Unexpected keyword" in msg
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": {"every_n_layers": 2, "use_reentrant": False}})
    assert "ac_every" not in run.options and GC_OFFLOAD.items() <= run.options.items()
    assert any(n.startswith("gradient_checkpointing_kwargs: every_n_layers: no memory change") for n in run.notes)
    msg = _refusal(tmp_path, {**base, "gradient_checkpointing_kwargs": {"use_reentrant": False, "early_stop": False}})
    assert "early_stop false" in msg and msg.endswith("remove it")
    msg = _refusal(tmp_path, {**base, "gradient_checkpointing_kwargs": {"use_reentrant": "yes"}})
    assert "use_reentrant 'yes' is not a boolean" in msg


def test_full_fine_tune_reads_no_keywords(tmp_path: Path) -> None:
    # ac_wrap_hf_model: torch's checkpoint_wrapper, no keywords; the Trainer gets gradient_checkpointing false
    bare = _load(tmp_path, {"gradient_checkpointing": "offload"})
    run = _load(tmp_path, {"gradient_checkpointing": "offload",
                           "gradient_checkpointing_kwargs": {"every_n_layers": 2, "use_reentrant": True}})
    assert run.options == bare.options and "gradient_checkpointing_kwargs" in run.mapped
    assert any("checkpoint_wrapper" in n and "no memory change" in n for n in run.notes)


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ax.yaml"
    f.write_text("base_model: tinyllama-1.1b\nadapter: lora\nlora_target_linear: true\nbf16: true\n"
                 "gradient_checkpointing: offload\nsequence_len: 1024\nmicro_batch_size: 2\n")
    code, out, _ = invoke(["estimate", "--config", str(f), "--format", "json"], capsys)
    assert code == 0
    run = json.loads(out)["runs"][0]
    assert run["settings"]["grad_checkpointing"] and run["settings"]["activation_offload"]
    assert any("axolotl 067b021c runs TRL's OffloadActivations" in n for n in run["notes"])
    assert any("approximate" in n and "reentrant" in n for n in run["notes"])  # surfaced in every format
    code, table, _ = invoke(["estimate", "--config", str(f)], capsys)
    assert code == 0 and "approximate" in table
    today = tmp_path / "today.yaml"  # the same run written as today's axolotl spells it
    today.write_text(f.read_text().replace("gradient_checkpointing: offload",
                                           "gradient_checkpointing: true\nactivation_offloading: true"))
    code, out, _ = invoke(["estimate", "--config", str(today), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["runs"][0]["peak_bytes"] == run["peak_bytes"]
    f.write_text("base_model: tinyllama-1.1b\ngradient_checkpointing: unsloth\n")
    code, _, err = invoke(["estimate", "--config", str(f)], capsys)
    assert code == 2 and "activation_offloading: true" in err and err.count("\n") == 1


def test_trl_offloader_defaults_match_the_tracer() -> None:
    # axolotl's mixin builds TRL's OffloadActivations with its defaults (use_streams unless "legacy"); the tracer's
    # emulation (trace/_offload.py, torchtune's) uses the same stash and size threshold
    trl_offload = pytest.importorskip("trl.models.activation_offloading")
    import inspect

    from vramcalc.trace import _offload

    params = inspect.signature(trl_offload.OffloadActivations.__init__).parameters
    assert params["min_offload_size"].default == _offload.MIN_OFFLOAD_BYTES
    assert params["max_fwd_stash_size"].default == _offload.FWD_STASH
    assert params["use_streams"].default is True
