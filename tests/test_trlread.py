"""Run-file readers' version defaults (issue 13): the dtype each TRL trainer loads a model in when the file names
none, TRL 0.19.1's PPO example (which passes ModelConfig to no from_pretrained call), and transformers 4's reentrant
checkpointing (io/runfiles.py _hf_args, _ppo, _checkpointing_kwargs, TF4_REENTRANT_NOTE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vramcalc.io import runfiles

HEAD = "output_dir: o\nbf16: true\n"


def _load(tmp_path: Path, text: str) -> runfiles.Run:
    f = tmp_path / "run.yaml"
    f.write_text(text)
    return runfiles.load(str(f))[0]


# bf16: true over a float32 load is amp-bf16 (fp32 weights, autocast); over transformers 5's dtype="auto" (the
# checkpoint's dtype, assumed 16-bit) pure-bf16. Each trainer's default, read in TRL 1.16's source:
@pytest.mark.parametrize(("keys", "objective", "precision"), [
    # create_model_from_path (trl/trainer/utils.py: kwargs.get("dtype", "float32")) and the scripts' ModelConfig.dtype
    # (default "float32"): sft_trainer.py, dpo_trainer.py, kto_trainer.py, reward_trainer.py, grpo_trainer.py,
    # rloo_trainer.py
    ("max_length: 512\n", "sft", "amp-bf16"),
    ("beta: 0.1\n", "dpo", "amp-bf16"),
    ("desirable_weight: 1.0\n", "kto", "amp-bf16"),
    ("center_rewards_coefficient: 0.01\n", "reward", "amp-bf16"),
    ("num_generations: 4\n", "grpo", "amp-bf16"),
    ("normalize_advantages: true\n", "rloo", "amp-bf16"),
    # trl/experimental/cpo/cpo_trainer.py: from_pretrained without create_model_from_path, no dtype (examples/scripts/
    # cpo.py the same): transformers 5's "auto"
    ("cpo_alpha: 1.0\n", "cpo", "pure-bf16"),
    ("loss_type: simpo\n", "simpo", "pure-bf16"),
    # examples/scripts/online_dpo.py passes ModelConfig.dtype (default float32) to the model it builds
    ("max_new_tokens: 64\n", "online-dpo", "amp-bf16"),
    # online_dpo_trainer.py: model_init_kwargs' dtype "auto" when unset, left out of from_pretrained
    ("max_new_tokens: 64\nmodel_init_kwargs: {trust_remote_code: false}\n", "online-dpo", "pure-bf16"),
    # TRL 0.19.1 examples/scripts/ppo/ppo.py: from_pretrained(path, trust_remote_code=...) alone, four times
    ("num_ppo_epochs: 1\n", "ppo", "pure-bf16"),
], ids=["sft", "dpo", "kto", "reward", "grpo", "rloo", "cpo", "simpo", "online-dpo-script", "online-dpo-init", "ppo"])
def test_each_trainer_loads_in_its_own_default(tmp_path: Path, keys: str, objective: str, precision: str) -> None:
    run = _load(tmp_path, HEAD + keys)
    assert (run.options.get("objective", "sft"), run.options["precision"]) == (objective, precision)


def test_cpo_reads_model_init_kwargs_not_model_config(tmp_path: Path) -> None:
    # cpo_trainer.py: model_init_kwargs without dtype set "auto"; their dtype is read
    run = _load(tmp_path, HEAD + "cpo_alpha: 1.0\nmodel_init_kwargs: {attn_implementation: sdpa}\n")
    assert run.options["precision"] == "pure-bf16"
    run = _load(tmp_path, HEAD + "cpo_alpha: 1.0\nmodel_init_kwargs: {dtype: float32}\n")
    assert run.options["precision"] == "amp-bf16"
    # ModelConfig's dtype reaches no CPOTrainer (cpo.py builds the model without it): no change, a note says so
    run = _load(tmp_path, HEAD + "cpo_alpha: 1.0\ndtype: float32\n")
    assert run.options["precision"] == "pure-bf16" and "dtype" in run.mapped
    assert any(n.startswith("dtype: no change: ModelConfig's dtype never reaches CPOTrainer") for n in run.notes)
    # under transformers 4 the default without model_init_kwargs is from_pretrained's float32
    run = _load(tmp_path, HEAD + "cpo_alpha: 1.0\ntransformers_version: 4.57.1\n")
    assert run.options["precision"] == "amp-bf16"


def test_ppo_follows_its_example_script(tmp_path: Path) -> None:
    ppo = HEAD + "num_ppo_epochs: 1\n"
    # transformers' default dtype, by version: 5's "auto", 4's float32 (which --objective ppo then refuses under
    # autocast, memory/ppo.py check)
    run = _load(tmp_path, ppo)
    assert run.options["precision"] == "pure-bf16"
    assert any("examples/scripts/ppo/ppo.py loads the policy, reference, reward and value" in n for n in run.notes)
    assert _load(tmp_path, ppo + "transformers_version: 4.57.1\n").options["precision"] == "amp-bf16"
    # ModelConfig's torch_dtype and quantization are built into model_kwargs that ppo.py never passes: no change
    run = _load(tmp_path, ppo + "torch_dtype: float32\n")
    assert run.options["precision"] == "pure-bf16" and "torch_dtype" in run.mapped and not run.unmodelled
    assert any(n.startswith("ppo: torch_dtype: no change") for n in run.notes)
    run = _load(tmp_path, ppo + "use_peft: true\nload_in_4bit: true\n")
    assert run.options["method"] == "lora" and "quant_bits" not in run.options
    assert run.mapped.count("load_in_4bit") == 1
    # without use_peft nothing is quantized, so nothing is refused as a purely quantized model
    assert _load(tmp_path, ppo + "load_in_8bit: true\n").options["method"] == "full"
    # PPOConfig has no model_init_kwargs (HfArgumentParser refuses the key)
    for key in ("model_init_kwargs", "ref_model_init_kwargs"):
        with pytest.raises(runfiles.RunFileError, match=f"{key}: not a TRL 0.19.1 PPOConfig field"):
            _load(tmp_path, ppo + key + ": {dtype: bfloat16}\n")


TF4 = "output_dir: o\ngradient_checkpointing: true\ntransformers_version: 4.57.1\n"


@pytest.mark.parametrize(("text", "reentrant"), [
    # transformers 4.57.1 modeling_utils.py gradient_checkpointing_enable: None -> {"use_reentrant": True}
    (TF4, True),
    ("output_dir: o\ngradient_checkpointing: true\ntransformers_version: '4.35.0'\n", True),
    (TF4 + "gradient_checkpointing_kwargs: {use_reentrant: false}\n", False),
    # keywords without use_reentrant go to functools.partial(checkpoint, **kwargs) as they are: torch's default
    (TF4 + "gradient_checkpointing_kwargs: {preserve_rng_state: true}\n", True),
    (TF4 + "gradient_checkpointing_kwargs: {}\n", True),
    # TRL 1.16's trainers setdefault("use_reentrant", False) under transformers < 5 (sft_trainer.py __init__, ...)
    (TF4 + "max_length: 512\n", False),
    (TF4 + "beta: 0.1\ngradient_checkpointing_kwargs: {preserve_rng_state: true}\n", False),
    # transformers 5: None -> {"use_reentrant": False} (unchanged)
    ("output_dir: o\ngradient_checkpointing: true\n", False),
], ids=["none", "4.35", "false", "other-keyword", "empty", "trl-sft", "trl-dpo-keyword", "transformers-5"])
def test_transformers4_checkpointing_is_reentrant(tmp_path: Path, text: str, reentrant: bool) -> None:
    run = _load(tmp_path, text)
    assert run.options["grad_checkpointing"] is True
    assert bool(run.options.get("reentrant_gc")) is reentrant
    assert (runfiles.TF4_REENTRANT_NOTE in run.notes) is reentrant


def test_transformers4_without_checkpointing_sets_nothing(tmp_path: Path) -> None:
    run = _load(tmp_path, "output_dir: o\ngradient_checkpointing: false\ntransformers_version: 4.57.1\n")
    assert "reentrant_gc" not in run.options and runfiles.TF4_REENTRANT_NOTE not in run.notes
