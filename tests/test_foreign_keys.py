"""One tool's memory keys in another tool's file (io/runfiles.py _foreign_keys), and transformers' checkpointing
keyword `offload` beside axolotl's own offloaded checkpointing (_gc_offload_axolotl): refused in one line where the
tool refuses the file or the run crashes, read with a "no memory change" note where the tool never reads them;
never left "not modelled" (issue 13)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.io import runfiles
from vramcalc.io.runfiles import AX, HF, LF, TT

# A minimal file of each tool, as detect() recognises it (tinyllama-1.1b: a preset; the files naming no model are
# read as they are: the reader does not need one)
HEADS = {
    HF: {"output_dir": "o"},
    LF: {"model_name_or_path": "tinyllama-1.1b", "stage": "sft", "finetuning_type": "lora"},
    AX: {"base_model": "tinyllama-1.1b", "adapter": "lora"},
    TT: {"model": {"_component_": "torchtune.models.llama2.lora_llama2_7b"}, "batch_size": 1},
    "deepspeed": {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}},
    "accelerate": {"distributed_type": "NO"},
}


def _load(tmp_path: Path, d: dict[str, object], name: str = "a.json") -> runfiles.Run:
    f = tmp_path / name
    f.write_text(json.dumps(d))
    return runfiles.load(str(f))[0]


def _foreign(tool: str) -> list[str]:
    return [k for k in runfiles.FOREIGN_KEYS if tool not in runfiles.FOREIGN_HOMES[k]]


REFUSED = [(tool, key) for tool in (HF, LF, "accelerate") for key in _foreign(tool)]
UNREAD = [(tool, key) for tool in (AX, TT, "deepspeed") for key in _foreign(tool)]


def test_every_key_has_a_home_and_every_tool_a_behaviour() -> None:
    # each key is read by its own tool's reader (the home), and every other reader refuses it or notes it
    assert set(runfiles.FOREIGN_HOMES) == set(runfiles.FOREIGN_KEYS)
    assert {t for t, _ in REFUSED} | {t for t, _ in UNREAD} == set(HEADS)
    assert not set(runfiles.FOREIGN_REFUSED) & set(runfiles.FOREIGN_UNREAD)
    # (the six left UNMODELLED_KEYS: a reader that forgot one would now list it as ignored, which the tests below
    # catch)
    assert not set(runfiles.FOREIGN_KEYS) & set(runfiles.UNMODELLED_KEYS)


@pytest.mark.parametrize(("tool", "key"), REFUSED)
def test_refused_where_the_tool_refuses_the_file(tmp_path: Path, tool: str, key: str) -> None:
    # HfArgumentParser.parse_dict (allow_extra_keys False), LLaMA-Factory's _parse_args and accelerate's
    # from_yaml_file refuse an unknown key whatever its value: false too
    for value in (True, False):
        with pytest.raises(runfiles.RunFileError) as e:
            _load(tmp_path, {**HEADS[tool], key: value})
        message = str(e.value)
        assert f": {key}: not " in message and "\n" not in message
        fix = runfiles.FOREIGN_FIXES.get(tool, {}).get(key, "training tool's own config")
        assert message.endswith(fix)


def test_refusals_name_the_tools_own_key(tmp_path: Path) -> None:
    # where the tool has its own key for that saver, the refusal names it
    with pytest.raises(runfiles.RunFileError, match="use use_liger_kernel: true"):
        _load(tmp_path, {**HEADS[HF], "enable_liger_kernel": True})
    with pytest.raises(runfiles.RunFileError, match="use TRL's activation_offloading: true"):
        _load(tmp_path, {**HEADS[HF], "enable_activation_offloading": True})
    with pytest.raises(runfiles.RunFileError, match="use enable_liger_kernel: true"):
        _load(tmp_path, {**HEADS[LF], "liger_fused_linear_cross_entropy": True})
    with pytest.raises(runfiles.RunFileError, match="use_unsloth_gc: true"):
        _load(tmp_path, {**HEADS[LF], "enable_activation_offloading": True})


def test_the_cli_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "lf.yaml"
    f.write_text("model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: lora\noptimizer_in_bwd: true\n")
    code, _, err = invoke(["estimate", "--config", str(f)], capsys)
    assert code == 2 and "optimizer_in_bwd: not a LLaMA-Factory key" in err and err.count("\n") == 1


@pytest.mark.parametrize(("tool", "key"), UNREAD)
def test_read_with_a_note_where_the_tool_never_reads_it(tmp_path: Path, tool: str, key: str) -> None:
    bare = _load(tmp_path, HEADS[tool])
    run = _load(tmp_path, {**HEADS[tool], key: True})
    name = runfiles.FOREIGN_UNREAD[tool][0]
    assert [n for n in run.notes if n.startswith(f"{key}: no memory change: {name} never reads it")]
    assert key in run.mapped and key not in run.unmodelled and key not in run.ignored
    assert run.options == bare.options  # the estimate is the file's without the key
    # off, it is one more key with no effect (no note)
    off = _load(tmp_path, {**HEADS[tool], key: False})
    assert key in off.ignored and not any(n.startswith(key) for n in off.notes) and off.options == bare.options


def test_axolotl_notes_name_its_own_keys(tmp_path: Path) -> None:
    run = _load(tmp_path, {**HEADS[AX], "use_liger_kernel": True, "enable_activation_offloading": True})
    assert any("axolotl's Liger keys are liger_rope" in n for n in run.notes)
    assert any("axolotl's is activation_offloading: true" in n for n in run.notes)


def test_use_liger_kernel_in_a_llama_factory_file(tmp_path: Path) -> None:
    # LLaMA-Factory's TrainingArguments subclass Seq2SeqTrainingArguments: the Trainer applies Liger's patch, fused
    # linear cross-entropy included, which at stage sft is what enable_liger_kernel gives
    own = _load(tmp_path, {**HEADS[LF], "enable_liger_kernel": True})
    run = _load(tmp_path, {**HEADS[LF], "use_liger_kernel": True})
    assert run.options == own.options and run.options["loss"] == "fused-linear"
    assert "use_liger_kernel" in run.mapped and not run.unmodelled and run.notes == own.notes
    # liger_kernel_config is read as in a transformers file: fused off, cross_entropy on -> Liger's plain loss
    cfg = _load(tmp_path, {**HEADS[LF], "use_liger_kernel": True,
                           "liger_kernel_config": {"fused_linear_cross_entropy": False, "cross_entropy": True}})
    assert cfg.options["loss"] == "liger-cross-entropy" and "liger_kernel_config" in cfg.mapped
    # off: nothing
    off = _load(tmp_path, {**HEADS[LF], "use_liger_kernel": False})
    assert "loss" not in off.options and "use_liger_kernel" in off.mapped and not off.unmodelled
    # the dpo / kto trainers call the model without labels: Liger's layer kernels only, the loss path unchanged
    for stage in ("dpo", "kto"):
        bare = _load(tmp_path, {**HEADS[LF], "stage": stage})
        pref = _load(tmp_path, {**HEADS[LF], "stage": stage, "use_liger_kernel": True})
        assert pref.options.get("loss") == bare.options.get("loss") and "use_liger_kernel" in pref.mapped
        assert "use_liger_kernel" not in pref.unmodelled and pref.liger_layers
        assert runfiles.LF_LIGER_PREFERENCE_NOTE.format(stage=stage) in pref.notes
    # the rm trainer's value-head wrapper is not a PreTrainedModel: Liger is not applied
    bare = _load(tmp_path, {**HEADS[LF], "stage": "rm"})
    rm = _load(tmp_path, {**HEADS[LF], "stage": "rm", "use_liger_kernel": True})
    assert rm.options == bare.options and runfiles.LF_LIGER_RM_NOTE in rm.notes and not rm.liger_layers
    # read as LLaMA-Factory reads a boolean (HfArgumentParser: a string stays a string, taken as true)
    with pytest.raises(runfiles.RunFileError, match="use_liger_kernel"):
        _load(tmp_path, {**HEADS[LF], "use_liger_kernel": "false"})


# ---- transformers' offload keyword beside axolotl's gradient_checkpointing: offload / offload_disk ----------------

def _axolotl(tmp_path: Path, kwargs: dict[str, object], **more: object) -> runfiles.Run:
    return _load(tmp_path, {"base_model": "tinyllama-1.1b", "gradient_checkpointing": "offload",
                            "gradient_checkpointing_kwargs": kwargs, **more}, "ax.json")


def _offload_note(run: runfiles.Run) -> str:
    found = [n for n in run.notes if n.startswith("gradient_checkpointing_kwargs") and "no memory change" in n]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("how", ["offload", "offload_disk"])
def test_axolotl_offload_keyword_where_the_run_crashes(tmp_path: Path, how: str) -> None:
    # LoRA: axolotl's loader hands the keywords to gradient_checkpointing_enable, and torch.utils.checkpoint refuses
    # offload under reentrant checkpointing (use_reentrant true, or absent: torch's default)
    for kwargs in ({"offload": True}, {"offload": True, "use_reentrant": True}):
        with pytest.raises(runfiles.RunFileError, match="offload: .*Unexpected keyword arguments"):
            _axolotl(tmp_path, kwargs, adapter="lora", gradient_checkpointing=how)
    # QLoRA under FSDP skips peft's preparation, so the loader's keywords stay: the same crash
    with pytest.raises(runfiles.RunFileError, match="offload: .*Unexpected keyword arguments"):
        _axolotl(tmp_path, {"offload": True}, adapter="qlora", fsdp_config={"fsdp_version": 2},
                 gradient_checkpointing=how)


def test_axolotl_offload_keyword_that_changes_nothing(tmp_path: Path) -> None:
    for adapter, kwargs, words in (
        # LoRA, non-reentrant: torch hands offload to the decoder layer's forward, which ignores it
        ("lora", {"offload": True, "use_reentrant": False}, "decoder layer's forward"),
        # QLoRA: peft's prepare_model_for_kbit_training re-enables checkpointing with {} (reentrant, no offload)
        ("qlora", {"offload": True}, "prepare_model_for_kbit_training"),
    ):
        bare = _axolotl(tmp_path, {k: v for k, v in kwargs.items() if k != "offload"}, adapter=adapter)
        run = _axolotl(tmp_path, kwargs, adapter=adapter)
        assert words in _offload_note(run) and not run.unmodelled
        assert run.options == bare.options and run.options["activation_offload"] and "ac_offload" not in run.options
    # offload false is a keyword all the same: torch refuses any keyword of the function's under reentrant
    # checkpointing (torch 2.13 utils/checkpoint.py `if kwargs and use_reentrant`)
    with pytest.raises(runfiles.RunFileError, match="offload: .*Unexpected keyword arguments"):
        _axolotl(tmp_path, {"offload": False}, adapter="lora")


def test_transformers_hands_offload_to_torch_checkpoint() -> None:
    # What the refusal and the notes above stand on, on the installed transformers (5.24) and torch: a keyword dict
    # given to gradient_checkpointing_enable (axolotl's loader) reaches torch.utils.checkpoint with `offload` in it
    # (no save_on_cpu wrapper), which raises under reentrant checkpointing and runs without it.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # a 2-layer Llama small enough for the CPU (sizes chosen, not a preset)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    ids = torch.randint(0, 64, (1, 8))
    for kwargs, raises in (({"offload": True, "use_reentrant": False}, False),
                           ({"offload": True, "use_reentrant": True}, True), ({"offload": True}, True)):
        model = transformers.LlamaForCausalLM(config).train()
        with warnings.catch_warnings():  # the deprecated alias (FutureWarning); torch: use_reentrant not passed
            warnings.simplefilter("ignore")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(kwargs))
            func = model.model.layers[0]._gradient_checkpointing_func
            assert func.func is torch.utils.checkpoint.checkpoint and func.keywords["offload"] is True
            if raises:
                with pytest.raises(ValueError, match="Unexpected keyword arguments: offload"):
                    model(input_ids=ids, labels=ids)
            else:
                model(input_ids=ids, labels=ids).loss.backward()


def test_gradient_checkpointing_kwargs_in_a_llama_factory_file(tmp_path: Path) -> None:
    # LLaMA-Factory checkpoints with its own {use_reentrant: use_reentrant_gc}; the Trainer reads the file's
    # keywords only under gradient_checkpointing: true, which LLaMA-Factory never sets
    bare = _load(tmp_path, HEADS[LF])
    run = _load(tmp_path, {**HEADS[LF], "gradient_checkpointing_kwargs": {"use_reentrant": False, "offload": True}})
    assert run.options == bare.options and run.options["reentrant_gc"] is True  # use_reentrant_gc's default
    assert runfiles.LF_GC_KWARGS_NOTE in run.notes and "gradient_checkpointing_kwargs" in run.mapped
    assert not run.unmodelled
    # with the Trainer's own switch on, transformers 5.24 calls LLaMA-Factory's patched gradient_checkpointing_enable
    # with every_n_layers and offload, which it does not take (TypeError: the test below): refused, with or without
    # keywords, under either name of the switch
    for switch in ({"gradient_checkpointing": True}, {"activation_checkpointing": True},
                   {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}):
        with pytest.raises(runfiles.RunFileError, match="patched gradient_checkpointing_enable with every_n_layers"):
            _load(tmp_path, {**HEADS[LF], **switch})
    # activation_checkpointing: false is the name the Trainer reads: its alias is not
    off = _load(tmp_path, {**HEADS[LF], "activation_checkpointing": False, "gradient_checkpointing": True})
    assert off.options == bare.options
    # LLaMA-Factory's checkpointing off: no patch, so transformers' own checkpointing runs with the file's keywords
    # (as in a TrainingArguments file: tests/test_checkpointing_kwargs.py)
    none = {**HEADS[LF], "disable_gradient_checkpointing": True}
    own = _load(tmp_path, {**none, "gradient_checkpointing": True,
                           "gradient_checkpointing_kwargs": {"use_reentrant": True, "every_n_layers": 2}})
    assert own.options["grad_checkpointing"] and own.options["reentrant_gc"] and own.options["ac_every"] == 2
    assert not own.unmodelled and "gradient_checkpointing" in own.mapped
    plain = _load(tmp_path, {**none, "gradient_checkpointing": True})
    assert plain.options["grad_checkpointing"] and "reentrant_gc" not in plain.options  # transformers' default


def test_transformers_calls_llama_factorys_patch_with_keywords_it_does_not_take() -> None:
    # What the refusal above stands on: LLaMA-Factory (hiyouga/LLaMA-Factory @ ff6d4d12 model/model_utils/
    # checkpointing.py prepare_model_for_training) sets model.gradient_checkpointing_enable to a MethodType over a
    # partial of its _gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, use_unsloth_gc=False);
    # transformers 5.24's Trainer calls model.activation_checkpointing_enable(activation_checkpointing_kwargs=...,
    # every_n_layers=..., offload=...) (trainer.py), directly or through peft's PeftModel. The stand-in below has
    # LLaMA-Factory's parameters only (its body is not what is checked).
    import functools
    import types

    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")

    def lf_parameters(self: object, gradient_checkpointing_kwargs: object = None, use_unsloth_gc: bool = False) -> None:
        return None

    # a 2-layer Llama small enough for the CPU (sizes chosen, not a preset)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    for adapted in (False, True):
        model = transformers.LlamaForCausalLM(config)
        model.gradient_checkpointing_enable = types.MethodType(functools.partial(lf_parameters,
                                                                                 use_unsloth_gc=False), model)
        trained = peft.get_peft_model(model, peft.LoraConfig(target_modules=["q_proj"])) if adapted else model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(TypeError, match="unexpected keyword argument 'every_n_layers'"):
                trained.activation_checkpointing_enable(activation_checkpointing_kwargs=None, every_n_layers=1,
                                                        offload=False)
