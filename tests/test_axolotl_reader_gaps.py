"""Four axolotl reader gaps (io/runfiles.py, axolotl-ai-cloud/axolotl @ 067b021c; issue 13): the key axolotl never
had (gradient_checkpointing_offload), axolotl's default checkpointing keywords {use_reentrant: true}, the plugin keys
read only with their plugin listed, and LLaMA-Factory's use_galore / use_apollo in other tools' files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import invoke
from vramcalc.io import runfiles

LIGER = "axolotl.integrations.liger.LigerPlugin"
CCE = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"


def _load(tmp_path: Path, d: dict[str, Any]) -> runfiles.Run:
    f = tmp_path / "ax.json"
    f.write_text(json.dumps(d))  # JSON is YAML: read as the CLI reads `--config axolotl.yaml`
    return runfiles.load(str(f))[0]


def _ax(**more: Any) -> dict[str, Any]:
    return {"base_model": "tinyllama-1.1b", **more}


# ---- 1. gradient_checkpointing_offload: not an axolotl key ------------------------------------------------------

def test_gradient_checkpointing_offload_changes_nothing(tmp_path: Path) -> None:
    # no field of AxolotlInputConfig (extra="ignore"): validate_config drops it, so nothing is offloaded
    bare = _load(tmp_path, _ax(adapter="lora", gradient_checkpointing=True))
    run = _load(tmp_path, _ax(adapter="lora", gradient_checkpointing=True, gradient_checkpointing_offload=True))
    assert run.options == bare.options and "activation_offload" not in run.options
    assert runfiles.AX_GC_OFFLOAD_NOTE in run.notes and "gradient_checkpointing_offload" in run.mapped
    assert "gradient_checkpointing: offload" in runfiles.AX_GC_OFFLOAD_NOTE
    assert "activation_offloading: true" in runfiles.AX_GC_OFFLOAD_NOTE
    # the offload axolotl does run is its own key's
    own = _load(tmp_path, _ax(adapter="lora", gradient_checkpointing="offload"))
    assert own.options["activation_offload"] is True
    off = _load(tmp_path, _ax(gradient_checkpointing_offload=False))
    assert runfiles.AX_GC_OFFLOAD_NOTE not in off.notes and "gradient_checkpointing_offload" in off.ignored


# ---- 2. axolotl's default checkpointing keywords ------------------------------------------------------------------

@pytest.mark.parametrize("method", [{}, {"adapter": "lora"}, {"adapter": "qlora", "load_in_4bit": True}],
                         ids=["full", "lora", "qlora"])
def test_default_keywords_are_reentrant(tmp_path: Path, method: dict[str, Any]) -> None:
    # normalize_config: gradient_checkpointing on, no keywords, no rl / unfrozen_parameters -> {use_reentrant: true},
    # which TrainingArguments gets and the Trainer's enable call (the last one) hands to torch
    run = _load(tmp_path, _ax(gradient_checkpointing=True, **method))
    assert run.options["grad_checkpointing"] and run.options["reentrant_gc"] is True
    assert runfiles.AXOLOTL_REENTRANT_DEFAULT_NOTE in run.notes
    assert "gradient_checkpointing_kwargs" not in run.mapped  # not in the file


@pytest.mark.parametrize("more", [
    {"gradient_checkpointing_kwargs": {"use_reentrant": False}},  # the file's own keywords
    {"gradient_checkpointing_kwargs": {}},  # given, so no default; the Trainer's `or None`: transformers' false
    {"rl": "dpo"},  # no default: the builder's {use_reentrant: false}
    {"selective_checkpointing": True},  # its enable wrapper forces use_reentrant false
], ids=["explicit-false", "empty", "rl", "selective"])
def test_non_reentrant_where_axolotl_says_so(tmp_path: Path, more: dict[str, Any]) -> None:
    run = _load(tmp_path, _ax(adapter="lora", gradient_checkpointing=True, **more))
    assert run.options["grad_checkpointing"] and "reentrant_gc" not in run.options
    assert runfiles.AXOLOTL_REENTRANT_DEFAULT_NOTE not in run.notes


def test_explicit_and_off(tmp_path: Path) -> None:
    run = _load(tmp_path, _ax(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}))
    assert run.options["reentrant_gc"] and runfiles.AXOLOTL_REENTRANT_DEFAULT_NOTE not in run.notes
    assert "gradient_checkpointing_kwargs" in run.mapped
    # keywords without use_reentrant reach torch's checkpoint, whose default is reentrant (the Trainer test below)
    run = _load(tmp_path, _ax(gradient_checkpointing=True, gradient_checkpointing_kwargs={"preserve_rng_state": True}))
    assert run.options["reentrant_gc"]
    # unfrozen_parameters: no default keywords (and axolotl refuses use_reentrant true with it)
    run = _load(tmp_path, _ax(gradient_checkpointing=True, unfrozen_parameters=["^lm_head.weight$"]))
    assert "reentrant_gc" not in run.options
    # checkpointing off: nothing to default
    run = _load(tmp_path, _ax(adapter="lora", gradient_checkpointing=False))
    assert run.options["grad_checkpointing"] is False and "reentrant_gc" not in run.options


def test_reentrant_default_moves_the_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the reentrant rerun's held tensors (memory/activations.py, --grid reentrant): with Cut Cross-Entropy the peak
    # is a layer's backward, where the LoRA estimate is above the non-reentrant one (at the loss's backward, the
    # peak without a loss saver, both are the same); the note in every format
    f = tmp_path / "ax.yaml"
    f.write_text("base_model: tinyllama-1.1b\nadapter: lora\nlora_target_linear: true\nbf16: true\n"
                 "gradient_checkpointing: true\nsequence_len: 2048\nmicro_batch_size: 2\n"
                 f"plugins: [{CCE}]\n")
    code, out, _ = invoke(["estimate", "--config", str(f), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    run = doc["runs"][0] if "runs" in doc else doc
    assert run["settings"]["reentrant_gc"] is True and runfiles.AXOLOTL_REENTRANT_DEFAULT_NOTE in run["notes"]
    code, explicit, _ = invoke(["estimate", "--config", str(f), "--no-reentrant-gc", "--format", "json"], capsys)
    assert code == 0
    flat = json.loads(explicit)
    flat = flat["runs"][0] if "runs" in flat else flat
    assert run["peak_bytes"] > flat["peak_bytes"]
    code, table, _ = invoke(["estimate", "--config", str(f)], capsys)
    assert code == 0 and "use_reentrant: true" in " ".join(table.split())


def _checkpoint_paths(kwargs: dict[str, Any] | None, tmp_path: Path) -> set[str]:
    """Which torch.utils.checkpoint path one real Trainer step takes with these TrainingArguments keywords."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils import checkpoint as ck

    # a 2-layer Llama small enough for the CPU (sizes chosen, not a preset)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(config)
    ids = torch.randint(0, 64, (8,))
    data = [{"input_ids": ids, "labels": ids}] * 2
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=1,
                                          gradient_checkpointing=True, gradient_checkpointing_kwargs=kwargs,
                                          use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no")
    seen: set[str] = set()
    reentrant, plain = ck.CheckpointFunction.apply, ck._checkpoint_without_reentrant_generator

    def spy_reentrant(*a: Any, **k: Any) -> Any:
        seen.add("reentrant")
        return reentrant(*a, **k)

    def spy_plain(*a: Any, **k: Any) -> Any:
        seen.add("non-reentrant")
        return plain(*a, **k)

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")  # the deprecated alias; torch's "pass use_reentrant explicitly"
        mp.setattr(ck.CheckpointFunction, "apply", spy_reentrant)
        mp.setattr(ck, "_checkpoint_without_reentrant_generator", spy_plain)
        transformers.Trainer(model=model, args=args, train_dataset=data).train()
    return seen


@pytest.mark.parametrize(("kwargs", "path"), [
    ({"use_reentrant": True}, "reentrant"),  # axolotl's default keywords
    (None, "non-reentrant"),  # transformers 5.24's default ({use_reentrant: false})
    ({"use_reentrant": False}, "non-reentrant"),
    ({"preserve_rng_state": True}, "reentrant"),  # keywords without use_reentrant: torch's default
    ({"every_n_layers": 1}, "non-reentrant"),  # popped by the Trainer, leaving none: `or None`
], ids=["axolotl-default", "none", "false", "other-keyword", "popped"])
def test_what_the_trainer_hands_torch(tmp_path: Path, kwargs: dict[str, Any] | None, path: str) -> None:
    # transformers 5.24 trainer.py / modeling_utils.py and torch 2.13 utils/checkpoint.py, run for one step; the
    # reader's reading of the same keywords in a TrainingArguments file agrees
    assert _checkpoint_paths(kwargs, tmp_path) == {path}
    run = _load(tmp_path, {"output_dir": "o", "gradient_checkpointing": True,
                           **({"gradient_checkpointing_kwargs": kwargs} if kwargs is not None else {})})
    assert bool(run.options.get("reentrant_gc")) == (path == "reentrant")


# ---- 3. plugin keys: read only with their plugin listed -----------------------------------------------------------

@pytest.mark.parametrize(("key", "plugin"), [(k, p) for p, keys in runfiles.AX_PLUGIN_KEYS.items() for k in keys])
def test_plugin_keys_need_their_plugin(tmp_path: Path, key: str, plugin: str) -> None:
    base = _ax(adapter="lora", bf16=True)
    bare = _load(tmp_path, base)
    run = _load(tmp_path, {**base, key: True})
    # without the plugin pydantic drops the key (extra="ignore") and nothing is patched: the estimate is the file's
    # without it, with a note naming the missing plugins: entry
    assert run.options == bare.options
    note = next(n for n in run.notes if n.startswith(f"{key}: no memory change"))
    assert f'add "plugins: [{plugin}]"' in note and key in run.mapped and key not in run.ignored
    # with it, the key is read
    listed = _load(tmp_path, {**base, key: True, "plugins": [plugin]})
    assert listed.options != bare.options or runfiles.LIGER_LAYER_NOTE in listed.notes
    assert not any(n.startswith(f"{key}: no memory change") for n in listed.notes)


def test_plugin_keys_read_with_the_plugin(tmp_path: Path) -> None:
    base = _ax(adapter="lora", bf16=True)
    assert _load(tmp_path, {**base, "plugins": [LIGER], "liger_fused_linear_cross_entropy": True}
                 ).options["loss"] == "fused-linear"
    # load_plugin retries a module under "axolotl.integrations." and the package re-exports the class
    for spelling in ("liger.LigerPlugin", "axolotl.integrations.liger.plugin.LigerPlugin"):
        run = _load(tmp_path, {**base, "plugins": [spelling], "liger_fused_linear_cross_entropy": True})
        assert run.options["loss"] == "fused-linear"
    # one note for the keys of one missing plugin; the other plugin's keys are read
    run = _load(tmp_path, {**base, "plugins": [CCE], "cut_cross_entropy": True, "liger_rope": True,
                           "liger_rms_norm": True})
    assert run.options["loss"] == "cut" and not run.liger_layers
    assert [n for n in run.notes if "no memory change" in n] == [runfiles.AX_PLUGIN_NOTE.format(
        keys="liger_rope, liger_rms_norm", them="them", plugin=LIGER)]
    # CutCrossEntropyArgs: cut_cross_entropy defaults to true once the plugin is listed
    run = _load(tmp_path, {**base, "plugins": [CCE]})
    assert run.options["loss"] == "cut" and runfiles.AX_CCE_DEFAULT_NOTE in run.notes
    run = _load(tmp_path, {**base, "plugins": [CCE], "cut_cross_entropy": False})
    assert "loss" not in run.options and runfiles.AX_CCE_DEFAULT_NOTE not in run.notes


@pytest.mark.parametrize(("d", "words"), [
    ({"cut_cross_entropy": True, "chunked_cross_entropy": True}, "chunked_cross_entropy: axolotl refuses it beside "
                                                                 "cut_cross_entropy"),  # check_cross_entropy_conflicts
    ({"chunked_cross_entropy": True, "liger_fused_linear_cross_entropy": True}, "one cross-entropy option at a time"),
    ({"plugins": [CCE], "chunked_cross_entropy": True}, "Cut Cross Entropy does not support chunked"),
    ({"plugins": [CCE, LIGER], "liger_fused_linear_cross_entropy": True}, "set cut_cross_entropy: false"),
    ({"plugins": LIGER}, "give a list of plugin classes"),
    ({"plugins": [LIGER], "liger_rope": "tru"}, "liger_rope"),  # pydantic's bool refuses it with the plugin
], ids=["cut-chunked", "chunked-flce", "cce-plugin-chunked", "cce-default-liger", "not-a-list", "loose-bool"])
def test_plugin_refusals(tmp_path: Path, d: dict[str, Any], words: str) -> None:
    with pytest.raises(runfiles.RunFileError, match=words):
        _load(tmp_path, _ax(adapter="lora", bf16=True, **d))


def test_the_note_reaches_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ax.yaml"
    f.write_text("base_model: tinyllama-1.1b\nadapter: lora\nbf16: true\nliger_fused_linear_cross_entropy: true\n")
    code, out, _ = invoke(["estimate", "--config", str(f), "--format", "json"], capsys)
    doc = json.loads(out)
    run = doc["runs"][0] if "runs" in doc else doc
    assert code == 0 and run["settings"].get("loss", "hf") == "hf"
    assert any(n.startswith("liger_fused_linear_cross_entropy: no memory change") for n in run["notes"])
    for fmt in ("table", "markdown", "yaml"):
        code, out, _ = invoke(["estimate", "--config", str(f), "--format", fmt], capsys)
        assert code == 0 and "LigerPlugin" in " ".join(out.split()), fmt


# ---- 4. use_galore / use_apollo outside LLaMA-Factory -------------------------------------------------------------

def test_galore_and_apollo_keys_in_other_tools(tmp_path: Path) -> None:
    # transformers' own GaLore / APOLLO is optim: galore_adamw / apollo_adamw with optim_target_modules, which the
    # reader maps (HF_OPTIM, _low_rank): the refusal names it
    for key, optim in (("use_galore", "galore_adamw"), ("use_apollo", "apollo_adamw")):
        with pytest.raises(runfiles.RunFileError, match=f"{key}: not a TrainingArguments / TRL key.*use optim: {optim} "
                           "with optim_target_modules"):
            _load(tmp_path, {"output_dir": "o", key: True})
        own = _load(tmp_path, {"output_dir": "o", "optim": optim, "optim_target_modules": ["attn", "mlp"]})
        assert own.options["optimizer"] == optim.replace("_", "-")
        # axolotl drops it (a note naming its optimizer key); the estimate is the file's without it
        run = _load(tmp_path, _ax(**{key: True}))
        assert run.options == _load(tmp_path, _ax()).options and not run.unmodelled
        assert any(n.startswith(f"{key}: no memory change: axolotl never reads it") and f"optimizer: {optim}" in n
                   for n in run.notes)
    # LLaMA-Factory's own: mapped (tests/test_optimizers_new.py)
    lf = _load(tmp_path, {"model_name_or_path": "tinyllama-1.1b", "stage": "sft", "finetuning_type": "full",
                          "use_galore": True})
    assert lf.options["optimizer"] == "galore-adamw"
    assert not runfiles.UNMODELLED_KEYS  # nothing left on the list
