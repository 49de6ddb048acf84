"""transformers 5.24's activation_checkpointing(_kwargs) and their gradient_checkpointing aliases in run files
(io/runfiles.py _checkpointing_kwargs), and --ac-layout hf (transformers' every_n_layers, memory/savers.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.memory import estimate
from vramcalc.core.memory.savers import ordinal, wrapped_layers
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles


def _load(tmp_path: Path, d: dict[str, object], name: str = "a.json") -> runfiles.Run:
    f = tmp_path / name
    f.write_text(json.dumps(d))
    return runfiles.load(str(f))[0]


def test_wrapped_layers_count_from_the_first_or_the_kth() -> None:
    # transformers modeling_utils.py _set_gradient_checkpointing: layer_index % k == 0 (0, 4, 8, ..., 20 of 22);
    # torchtune checkpoint_wrapper: 1-based multiples of k (4, 8, ..., 20 of 22)
    assert wrapped_layers(22, 4, True) == 6 and wrapped_layers(22, 4, False) == 5
    assert wrapped_layers(22, 2, True) == wrapped_layers(22, 2, False) == 11
    assert [ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]


def test_hf_layout_keeps_one_more_layer_input_instead_of_its_saved_set() -> None:
    # tinyllama-1.1b cut to 5 layers, LoRA, every 2nd layer: hf wraps layers 0, 2, 4 (3), torchtune 2 and 4 (2);
    # the difference is one layer's saved set less its input (measured with the tracer: hf 1,278,793,728 B,
    # torchtune 1,356,658,688 B at b2 s512, the estimate +0.01 % / -0.30 %)
    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=5)
    base = {"method": "lora", "grad_checkpointing": True, "ac_every": 2, "batch_size": 2, "seq_len": 512}
    hf = estimate(m, TrainingSpec(**base, ac_layout="hf"))  # type: ignore[arg-type]
    tt = estimate(m, TrainingSpec(**base))  # type: ignore[arg-type]
    assert hf.details["activations.layers"] < tt.details["activations.layers"]
    assert hf.tensor_peak_bytes == 1_278_918_656 and tt.tensor_peak_bytes == 1_352_589_312
    assert any("3 of 5 layers checkpointed (every 2nd, from layer 0" in n for n in hf.notes)


def test_activation_checkpointing_is_read_and_wins_over_its_alias(tmp_path: Path) -> None:
    run = _load(tmp_path, {"output_dir": "o", "activation_checkpointing": True})
    assert run.options["grad_checkpointing"] and "activation_checkpointing" in run.mapped
    assert run.ignored == ["output_dir"]
    # training_args.py __post_init__: the old name is read only when the new one is unset
    run = _load(tmp_path, {"output_dir": "o", "activation_checkpointing": False, "gradient_checkpointing": True})
    assert run.options["grad_checkpointing"] is False and run.ignored == ["output_dir"]
    # TRL's configs default gradient_checkpointing to True (trl/trainer/base_config.py): the new name turns it off
    run = _load(tmp_path, {"output_dir": "o", "max_length": 512, "activation_checkpointing": False})
    assert run.options["grad_checkpointing"] is False
    run = _load(tmp_path, {"output_dir": "o", "num_generations": 4, "max_completion_length": 64,
                           "activation_checkpointing": False})
    assert run.options["grad_checkpointing"] is False  # GRPOConfig's default True overridden


def test_kwargs_every_n_layers_and_host_only_keywords(tmp_path: Path) -> None:
    base = {"output_dir": "o", "activation_checkpointing": True}
    run = _load(tmp_path, {**base, "activation_checkpointing_kwargs": {
        "every_n_layers": 3, "use_reentrant": True, "preserve_rng_state": False, "determinism_check": "none"}})
    assert (run.options["ac_every"], run.options["ac_layout"], run.options["reentrant_gc"]) == (3, "hf", True)
    assert "activation_checkpointing_kwargs" in run.mapped and not run.unmodelled
    # a JSON string, as TrainingArguments accepts it
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": '{"every_n_layers": 2}'})
    assert run.options["ac_every"] == 2 and not run.unmodelled
    # checkpointing off: the kwargs change nothing
    run = _load(tmp_path, {"output_dir": "o", "gradient_checkpointing_kwargs": {"every_n_layers": 2}})
    assert "ac_every" not in run.options
    # offload (save_on_cpu around each checkpoint): --ac-offload; early_stop false: --no-ac-early-stop
    run = _load(tmp_path, {**base, "activation_checkpointing_kwargs": {"offload": True, "early_stop": False,
                                                                       "use_reentrant": False}})
    assert run.options["ac_offload"] and run.options["ac_early_stop"] is False and not run.unmodelled
    # without use_reentrant, what the Trainer leaves after popping offload ({early_stop: false}) reaches torch 2.13's
    # checkpoint, whose use_reentrant=None means true (checked through the Trainer in
    # tests/test_axolotl_reader_gaps.py): reentrant, and early_stop unread
    run = _load(tmp_path, {**base, "activation_checkpointing_kwargs": {"offload": True, "early_stop": False}})
    assert run.options["ac_offload"] and run.options["reentrant_gc"] and "ac_early_stop" not in run.options
    assert any("early_stop has no effect" in n for n in run.notes)
    # under use_reentrant true torch never reads early_stop (its rerun is the whole layer): a note, no option
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": {"use_reentrant": True, "early_stop": False}})
    assert "ac_early_stop" not in run.options and any("early_stop has no effect" in n for n in run.notes)
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": {"offload": False}})
    assert "ac_offload" not in run.options and not run.unmodelled
    # transformers 4 has no offload keyword: it goes to torch.utils.checkpoint, which refuses it
    with pytest.raises(runfiles.RunFileError, match="not a torch.utils.checkpoint keyword"):
        _load(tmp_path, {"output_dir": "o", "gradient_checkpointing": True, "transformers_version": "4.57.1",
                         "gradient_checkpointing_kwargs": {"offload": True}})


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"context_len": 4}, "not a torch.utils.checkpoint keyword"),
    ({"use_reentrant": "yes"}, "not a boolean"),
    ({"use_reentrant": True, "debug": True}, "refuses debug with use_reentrant"),
    ({"determinism_check": "strict"}, "determinism_check"),
    ({"every_n_layers": 0}, "every_n_layers"),
    ({"offload": "yes"}, "offload 'yes' is not a boolean"),
    ({"early_stop": "no"}, "early_stop 'no' is not a boolean"),
    ([1, 2], "give a mapping"),
])
def test_kwargs_refused(tmp_path: Path, kwargs: object, words: str) -> None:
    with pytest.raises(runfiles.RunFileError, match=words):
        _load(tmp_path, {"output_dir": "o", "activation_checkpointing": True,
                         "activation_checkpointing_kwargs": kwargs})


def test_axolotl_kwargs(tmp_path: Path) -> None:
    base = {"base_model": "tinyllama-1.1b", "gradient_checkpointing": True}
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": {"use_reentrant": True}}, "ax.json")
    assert run.options["reentrant_gc"] and not run.unmodelled
    # axolotl @ 067b021c turns gradient_checkpointing: offload into activation offloading, under which a full
    # fine-tune checkpoints with torch's checkpoint_wrapper and passes no keywords on: use_reentrant and transformers'
    # offload change nothing (the LoRA / QLoRA cases: tests/test_axolotl_offload.py, tests/test_foreign_keys.py)
    for kwargs in ({"use_reentrant": True}, {"offload": True}):
        run = _load(tmp_path, {**base, "gradient_checkpointing": "offload", "gradient_checkpointing_kwargs": kwargs},
                    "ax.json")
        assert run.options["activation_offload"] and not {"reentrant_gc", "ac_offload"} & set(run.options)
        assert not run.unmodelled
        assert any(n.startswith("gradient_checkpointing_kwargs: no memory change") and "checkpoint_wrapper" in n
                   for n in run.notes)
    run = _load(tmp_path, {**base, "gradient_checkpointing_kwargs": {"offload": True}}, "ax.json")
    assert run.options["ac_offload"] and not run.unmodelled


def test_ac_layout_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--grad-checkpointing", "--ac-every",
                           "4", "--ac-layout", "hf", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["settings"]["ac_layout"] == "hf"
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--ac-layout", "sideways"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_no_early_stop_estimate_and_refusals() -> None:
    # --no-ac-early-stop (torch.utils.checkpoint early_stop=False): the rerun passes down_proj's adapter path with the
    # MLP's whole saved set made, as the reentrant rerun does (memory/activations.py reentrant_down). Measured with the
    # tracer, --grid early-stop: tinyllama cut to 2 layers, LoRA all-linear (fp32 adapters) b2 s2048 with the cut
    # loss, -2.99 % under the early-stop estimate, +0.04 % with the rerun's moment; the 24 cases within -1.58 / +1.15 %
    from dataclasses import replace

    from vramcalc.core.errors import SpecError
    from vramcalc.core.memory import estimate
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets

    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=2)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=2048,
                     loss="cut", grad_checkpointing=True)
    assert estimate(m, replace(t, ac_early_stop=False)).tensor_peak_bytes > estimate(m, t).tensor_peak_bytes
    for bad in ({"grad_checkpointing": False}, {"reentrant_gc": True}):
        with pytest.raises(SpecError, match="--no-ac-early-stop is non-reentrant checkpointing's"):
            replace(t, ac_early_stop=False, **bad)
