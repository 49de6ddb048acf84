"""runfiles.py: vramcalc run files and the training configs of axolotl, LLaMA-Factory, HF and torchtune."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import UnknownPresetError, VramcalcError
from vramcalc.core.options import OptionValues, training_spec
from vramcalc.io import runfiles
from vramcalc.io.resolve import resolve_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def one(path: str) -> runfiles.Run:
    runs = runfiles.load(str(EXAMPLES / path))
    assert len(runs) == 1
    return runs[0]


def test_vramcalc_run_file() -> None:
    run = one("runs/qlora-4090.yaml")
    assert (run.kind, run.model, run.gpu) == ("vramcalc", "mistral-7b", "rtx4090")
    # The YAML list [q_proj, k_proj, v_proj, o_proj] becomes the option's comma-separated form.
    assert run.options == {
        "method": "qlora",
        "seq_len": 2048,
        "batch_size": 2,
        "grad_checkpointing": True,
        "lora_rank": 16,
        "lora_targets": "q_proj,k_proj,v_proj,o_proj",
    }


def test_list_of_runs_shares_top_level_keys() -> None:
    runs = runfiles.load(str(EXAMPLES / "runs/planned.yaml"))
    assert [r.name for r in runs] == ["mistral-qlora", "llama-lora-ckpt", "qwen-full-8bit"]
    assert all(r.gpu == "rtx4090" and r.options["seq_len"] == 1024 for r in runs)


def test_command_line_overrides_the_file() -> None:
    run = one("runs/qlora-4090.yaml")
    opts = OptionValues(values={"batch_size": 1}, given={"batch_size"})
    values = opts.run(run.options)
    assert values["batch_size"] == 1 and values["seq_len"] == 2048  # flag wins, file fills the rest
    assert training_spec(values).lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_axolotl() -> None:
    run = one("configs/axolotl-qlora.yaml")
    assert run.kind == "axolotl" and run.model == "mistralai/Mistral-7B-v0.1"
    assert run.options == {
        "method": "qlora",
        "quant_bits": 4,  # adapter: qlora, load_in_4bit: true
        # axolotl casts the norms, embed_tokens and lm_head back to bf16 after kbit preparation (AXOLOTL_KBIT_NOTE)
        "kbit_prep": False,
        "lora_rank": 32,
        "lora_alpha": 16.0,
        "lora_dropout": 0.05,
        "lora_targets": "all-linear",
        "seq_len": 4096,
        "batch_size": 2,
        "grad_accum": 4,
        "grad_checkpointing": True,
        # no gradient_checkpointing_kwargs and no rl: axolotl's normalize_config gives {use_reentrant: true}
        # (tests/test_axolotl_reader_gaps.py)
        "reentrant_gc": True,
        "optimizer": "adamw-8bit",  # adamw_bnb_8bit
        "precision": "bf16",  # bf16: auto, LoRA: a bf16 base (adapters stay fp32)
        "attention": "flash",  # flash_attention: true (flash_attention_2)
        "packing": "packed",  # sample_packing: true (multipack rows, position_ids restart)
        "stack": "axolotl",  # an axolotl file: axolotl's stack preset fills what it leaves out
        # no lora_*_kernel key: axolotl turns its own LoRA kernels on (check_auto_enable_lora_kernels), all seven
        # projections adapted (lora_target_linear), Mistral, lora_dropout 0.05: modelled (memory/axolotl_kernels.py)
        "kernels": "axolotl:qkv,o,mlp",
    }
    assert {"datasets", "learning_rate", "output_dir"} <= set(run.ignored)
    assert {"sample_packing", "flash_attention"} <= set(run.mapped)
    assert runfiles.AXOLOTL_KBIT_NOTE in run.notes
    assert resolve_model(run.model or "")[0].name == "mistral-7b"  # the hub id is a preset alias


def test_llama_factory() -> None:
    run = one("configs/llama-factory-lora.yaml")
    assert run.kind == "llama-factory"
    assert run.options["method"] == "lora" and run.options["lora_rank"] == 8
    assert run.options["lora_targets"] == "all-linear"  # lora_target: all
    assert run.options["seq_len"] == 2048  # cutoff_len
    assert run.options["grad_checkpointing"] is True  # on unless disable_gradient_checkpointing
    # no optim: transformers 5's default adamw_torch_fused (training_args.py default_optim, torch >= 2.8)
    assert (run.options["optimizer"], run.options["optimizer_impl"]) == ("adamw", "fused")
    assert (run.options["batch_size"], run.options["grad_accum"]) == (1, 8)
    assert resolve_model(run.model or "")[0].name == "llama-3-8b"


def test_llama_factory_full_bf16_is_amp(tmp_path: Path) -> None:
    # LLaMA-Factory upcasts trainable weights to fp32 unless pure_bf16: fp32 weights, bf16 autocast.
    f = tmp_path / "full.yaml"
    f.write_text("model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: full\nbf16: true\n")
    assert runfiles.load(str(f))[0].options["precision"] == "amp-bf16"
    f.write_text(
        "model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: full\nbf16: true\npure_bf16: true\n"
    )
    assert runfiles.load(str(f))[0].options["precision"] == "pure-bf16"


def test_llama_factory_lora_defaults_are_its_own(tmp_path: Path) -> None:
    # LoraArguments (hiyouga/LLaMA-Factory @ ff6d4d12 hparams/finetuning_args.py): lora_rank 8 and lora_target "all"
    # (every Linear but lm_head) when the file leaves them out, not vramcalc's rank 16 on q_proj,v_proj
    f = tmp_path / "lora.yaml"
    f.write_text("model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: lora\nbf16: true\n")
    options = runfiles.load(str(f))[0].options
    assert (options["lora_rank"], options["lora_targets"]) == (8, "all-linear")
    f.write_text("model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: lora\nlora_rank: 32\n"
                 "lora_target: q_proj,v_proj\n")
    options = runfiles.load(str(f))[0].options
    assert (options["lora_rank"], options["lora_targets"]) == (32, "q_proj,v_proj")
    f.write_text("model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: full\n")
    assert "lora_rank" not in runfiles.load(str(f))[0].options  # full tuning: no adapter defaults


def test_llama_factory_qwen3_lora_bf16_is_the_trainers_autocast(tmp_path: Path) -> None:
    # LLaMA-Factory LoRA with bf16: a bf16 load, peft's fp32 adapters, the step under the Trainer's autocast
    # (--precision autocast-bf16), now modelled on Qwen3 (--grid autocast2): no fallback to bf16, no note saying so
    f = tmp_path / "lora.yaml"
    f.write_text("model_name_or_path: Qwen/Qwen3-8B\nstage: sft\nfinetuning_type: lora\nbf16: true\n")
    run = runfiles.load(str(f))[0]
    assert run.options["precision"] == "autocast-bf16"
    assert not any("is not modelled here" in n for n in run.notes)
    # freeze with checkpointing (LLaMA-Factory checkpoints unless disable_gradient_checkpointing) on Qwen3: modelled
    # under autocast too (--grid autocast2's freeze gc cases), no fallback note
    f.write_text("model_name_or_path: Qwen/Qwen3-8B\nstage: sft\nfinetuning_type: freeze\nbf16: true\n")
    run = runfiles.load(str(f))[0]
    assert run.options["precision"] == "autocast-bf16" and run.options["grad_checkpointing"] is True
    assert not any("is not modelled here" in n for n in run.notes)

def test_llama_factory_freeze_counts_layers_from_the_top(tmp_path: Path) -> None:
    # Qwen2.5-0.5B has 24 layers; freeze_trainable_layers 2 trains the top two: 22 frozen from the bottom.
    f = tmp_path / "freeze.yaml"
    f.write_text(
        "model_name_or_path: qwen2.5-0.5b\nstage: sft\nfinetuning_type: freeze\nfreeze_trainable_layers: 2\n"
    )
    assert runfiles.load(str(f))[0].options["freeze_layers"] == 22


def test_hf_training_arguments() -> None:
    run = one("configs/hf-training-args.json")
    assert run.kind == "hf-training-args" and run.model is None
    assert run.options == {
        "batch_size": 8,
        "grad_accum": 2,
        "grad_checkpointing": True,
        "optimizer": "adamw",
        "optimizer_impl": "fused",
        # transformers 5 loads a bf16 checkpoint in bf16 (from_pretrained dtype="auto"): bf16 weights and
        # AdamW states, no fp32 copy
        "precision": "pure-bf16",
        "method": "full",
    }
    assert "learning_rate" in run.ignored


def test_model_config_json() -> None:
    spec = resolve_model(str(EXAMPLES / "configs/tiny-llama-config.json"))[0]
    # TinyLlama 1.1B: 1,100,048,384 parameters (its model card; params.count_params of this architecture).
    from vramcalc.core.params import count_params

    assert count_params(spec) == 1_100_048_384


@pytest.mark.parametrize(
    "component,expected",
    [
        ("torchtune.models.llama3_1.lora_llama3_1_8b", "llama-3.1-8b"),
        ("torchtune.models.llama2.qlora_llama2_7b", "llama-2-7b"),
        ("torchtune.models.qwen2_5.lora_qwen2_5_7b_instruct", "qwen2.5-7b"),  # the Instruct repo is an alias
        ("torchtune.models.mistral.mistral_7b", "mistral-7b"),
        ("torchtune.models.qwen2_5.qwen2_5_0_5b", "qwen2.5-0.5b"),
    ],
)
def test_torchtune_builder_names(component: str, expected: str | None) -> None:
    from vramcalc.io import presets

    found = None
    for candidate in runfiles.torchtune_model_names(component):
        try:
            found = presets.find_model(candidate).name
            break
        except UnknownPresetError:
            continue
    assert found == expected


def test_torchtune() -> None:
    run = one("configs/torchtune-lora.yaml")
    assert run.kind == "torchtune" and run.model == "llama-3.1-8b"
    assert run.options["method"] == "lora"
    # lora_attn_modules q_proj, v_proj, output_proj (→ o_proj) plus apply_lora_to_mlp (w1, w3, w2).
    assert run.options["lora_targets"] == "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    assert (run.options["precision"], run.options["adapter_dtype"]) == ("pure-bf16", "bf16")
    assert (run.options["optimizer"], run.options["optimizer_impl"]) == ("adamw", "fused")
    assert (run.options["batch_size"], run.options["grad_accum"], run.options["seq_len"]) == (2, 8, 2048)


def test_detect() -> None:
    assert runfiles.detect({"base_model": "x"}) == "axolotl"
    assert runfiles.detect({"model_name_or_path": "x", "stage": "sft"}) == "llama-factory"
    assert runfiles.detect({"model": {"_component_": "torchtune.models.x"}}) == "torchtune"
    assert runfiles.detect({"per_device_train_batch_size": 4}) == "hf-training-args"
    assert runfiles.detect({"model": "mistral-7b"}) == "vramcalc"


def test_hub_id_without_preset_says_how_to_pass_config() -> None:
    with pytest.raises(VramcalcError, match="download its config.json and pass its path"):
        resolve_model("someone/not-a-model-anywhere")


def test_unknown_key_in_run_file(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("model: mistral-7b\nbatchsize: 4\n")
    with pytest.raises(runfiles.RunFileError, match="unknown key 'batchsize'"):
        runfiles.load(str(f))


def test_missing_file() -> None:
    with pytest.raises(runfiles.RunFileError, match="file not found"):
        runfiles.load("/nonexistent/run.yaml")


# ---- issue 12: library-version defaults, memory keys, DeepSpeed, typos ---------------------------------


def _json(tmp_path: Path, name: str, text: str) -> str:
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_hf_args_use_the_current_transformers_defaults(tmp_path: Path) -> None:
    # transformers 5: from_pretrained(dtype="auto") keeps a bf16 checkpoint in bf16; optim defaults to
    # adamw_torch_fused with torch >= 2.8 (training_args.py default_optim).
    run = runfiles.load(_json(tmp_path, "a.json", '{"output_dir": "o", "bf16": true}'))[0]
    assert (run.options["precision"], run.options["optimizer_impl"]) == ("pure-bf16", "fused")
    assert any("transformers 5 defaults" in n for n in run.notes)
    # transformers 4 (named by the file): float32 load (bf16 = autocast) and adamw_torch (foreach)
    run = runfiles.load(_json(tmp_path, "b.json",
                              '{"output_dir": "o", "bf16": true, "transformers_version": "4.46.0"}'))[0]
    assert (run.options["precision"], run.options["optimizer_impl"]) == ("amp-bf16", "foreach")
    assert any("transformers 4 defaults" in n for n in run.notes)


def test_precision_on_the_command_line_overrides_the_hf_file(tmp_path: Path) -> None:
    run = runfiles.load(_json(tmp_path, "a.json", '{"output_dir": "o", "bf16": true}'))[0]
    opts = OptionValues(values={"precision": "amp-bf16"}, given={"precision"})
    assert opts.run(run.options)["precision"] == "amp-bf16"


def test_trl_keys_are_mapped(tmp_path: Path) -> None:
    run = runfiles.load(_json(tmp_path, "sft.json",
                              '{"output_dir": "o", "max_length": 4096, "packing": true}'))[0]
    assert run.options["seq_len"] == 4096 and {"max_length", "packing"} <= set(run.mapped)
    run = runfiles.load(_json(tmp_path, "old.json", '{"output_dir": "o", "max_seq_length": 2048}'))[0]
    assert run.options["seq_len"] == 2048 and "max_seq_length" in run.mapped


def test_unmodelled_memory_keys_are_named_in_full(tmp_path: Path) -> None:
    # (optim_target_modules left this list: GaLore/APOLLO read it, modelled by io/runfiles.py _low_rank)
    # (auto_find_batch_size left this list: core/searches.py auto_batch_size, --auto-find-batch-size)
    # (ref_model_init_kwargs left this list: io/runfiles.py _ref_model_init_kwargs, --ref-dtype / --ref-quant)
    # (gradient_checkpointing_kwargs left this list for transformers / TRL and axolotl files: _checkpointing_kwargs)
    # (torch_compile left this list: --compile, io/runfiles.py _torch_compile, memory/compiled.py)
    # (max_memory left this list: axolotl's is mapped, _max_memory_axolotl, --gpu-memory-limit)
    # (enable_liger_kernel, cut_cross_entropy left it: a transformers file refuses them, tests/test_foreign_keys.py)
    # (use_galore, use_apollo left it: refused in a transformers file, tests/test_foreign_keys.py)
    # DPO's disable_dropout: false keeps dropout in the policy and the reference (io/runfiles.py _preference_trl)
    keys = {"disable_dropout": False}
    filler = {f"harmless_{i}": 1 for i in range(20)}  # more than the 12 ignored keys the note shows
    import json

    run = runfiles.load(_json(tmp_path, "a.json", json.dumps({"output_dir": "o", "beta": 0.1, **filler, **keys})))[0]
    assert set(run.unmodelled) == set(keys)
    assert not set(keys) & set(run.ignored)
    line = run.notes[0]
    assert all(k in line for k in keys) and "TIGHT" in line and "more)" not in line
    assert run.source_doc()["unmodelled"] == run.unmodelled


def test_torchtune_and_axolotl_memory_keys(tmp_path: Path) -> None:
    tt = runfiles.load(_json(tmp_path, "tt.yaml", (
        "model: {_component_: torchtune.models.llama3_1.lora_llama3_1_8b}\n"
        "optimizer_in_bwd: true\nenable_activation_offloading: true\n"
        "loss: {_component_: torchtune.modules.loss.CEWithChunkedOutputLoss}\n")))[0]
    # the savers these keys turn on are modelled (core/memory/loss.py, savers.py): mapped, not unmodelled
    assert tt.unmodelled == []
    assert (tt.options["optimizer_in_bwd"], tt.options["activation_offload"], tt.options["loss"]) == (
        True, True, "chunked")
    # (read with axolotl's Liger plugin listed: without it axolotl drops the key, tests/test_axolotl_reader_gaps.py)
    liger = ("base_model: mistral-7b\nplugins: [axolotl.integrations.liger.LigerPlugin]\n"
             "liger_fused_linear_cross_entropy: ")
    ax = runfiles.load(_json(tmp_path, "ax.yaml", liger + "true\n"))[0]
    assert ax.unmodelled == [] and ax.options["loss"] == "fused-linear"
    tc = runfiles.load(_json(tmp_path, "tc.yaml", "base_model: mistral-7b\ntorch_compile: true\n"))[0]
    assert tc.unmodelled == [] and tc.options["compile"] is True  # --compile (memory/compiled.py)
    off = runfiles.load(_json(tmp_path, "off.yaml", liger + "false\n"))[0]
    assert off.unmodelled == []  # switched off: nothing to model


def test_llama_factory_double_quantization(tmp_path: Path) -> None:
    run = runfiles.load(_json(tmp_path, "lf.yaml", (
        "model_name_or_path: mistral-7b\nstage: sft\nfinetuning_type: lora\nquantization_bit: 4\n"
        "double_quantization: false\n")))[0]
    assert run.options["double_quant"] is False and "double_quantization" in run.mapped


def test_llama_factory_quantization_keys(tmp_path: Path) -> None:
    head = "model_name_or_path: mistral-7b\nstage: sft\nfinetuning_type: lora\nquantization_bit: 4\n"
    # "bnb" is LLaMA-Factory's default QuantizationMethod (extras/constants.py): bitsandbytes, what QLoRA counts
    bnb = runfiles.load(_json(tmp_path, "bnb.yaml", head + "quantization_method: bnb\nquantization_type: fp4\n"))[0]
    assert bnb.unmodelled == [] and {"quantization_method", "quantization_type"} <= set(bnb.mapped)
    assert any("quantization_type fp4" in n and "no memory change" in n for n in bnb.notes)
    hqq = runfiles.load(_json(tmp_path, "hqq.yaml", head + "quantization_method: hqq\n"))[0]
    assert hqq.unmodelled == [] and "quantization_method" in hqq.mapped  # --quant-backend hqq: tests/test_hqq.py
    with pytest.raises(VramcalcError, match="quantization_type"):
        runfiles.load(_json(tmp_path, "bad.yaml", head + "quantization_type: int3\n"))
    # model_args.py keys that change memory with no vramcalc option: named, never "ignored"
    # (upcast_lmhead_output is mapped: --upcast-logits; upcast_layernorm: --upcast-norms,
    # tests/test_upcast_layernorm.py)
    # (mixture_of_depths is refused and use_v1_kernels mapped with a no-change note: tests/test_runfiles_keysc.py)
    # (fp8 is mapped: --fp8 rowwise, tests/test_fp8.py)
    up = runfiles.load(_json(tmp_path, "up.yaml", head + "fp8: true\n"))[0]
    assert up.options["fp8"] == "rowwise" and "fp8" in up.mapped and not up.unmodelled and not up.ignored


def test_memory_keys_once_ignored_are_named(tmp_path: Path) -> None:
    # axolotl and LLaMA-Factory keys that change memory (runfiles.py UNMODELLED_KEYS): named, never "ignored"
    # (embeddings_skip_upcast is mapped with a no-change note: tests/test_upcast.py; lisa_n_layers is --lisa-layers;
    # context_parallel_size / sequence_parallel_degree are --context-parallel: tests/test_context_parallel.py;
    # unfrozen_parameters is --train-layers / --train-modules: tests/test_unfrozen.py; gpu_memory_limit is
    # --gpu-memory-limit, accelerate's placement of the modules past the limit on the CPU: tests/test_max_memory.py)
    ax_keys: tuple[str, ...] = ()
    ax = runfiles.load(_json(tmp_path, "ax.yaml", "base_model: mistral-7b\nadapter: lora\nliger_rms_norm: true\n"
                             "plugins: [axolotl.integrations.liger.LigerPlugin]\n"
                             + "".join(f"{k}: 2\n" for k in (*ax_keys, "gpu_memory_limit",
                                                              "peft_layers_to_transform"))))[0]
    # axolotl auto-enables its LoRA kernels for this adapter (tests/test_axolotl_kernels.py); with LoRA on some layers
    # only they are not modelled, so they are named too
    kernels = {"lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel"}
    assert set(ax.unmodelled) == set(ax_keys) | kernels and not set(ax_keys) & set(ax.ignored)
    assert "gpu_memory_limit" in ax.mapped and ax.options["gpu_memory_limit"] == str(2 * 2**30)  # an int: GiB
    # peft_layers_to_transform is --lora-layers now (tests/test_lora_layers.py)
    assert "peft_layers_to_transform" in ax.mapped and ax.options["lora_layers"] == "2"
    # Liger's layer kernels: mapped, with the over-estimate note (they save no more than transformers' modules)
    assert "liger_rms_norm" in ax.mapped and runfiles.LIGER_LAYER_NOTE in ax.notes
    off = runfiles.load(_json(tmp_path, "off.yaml", "base_model: mistral-7b\nliger_rms_norm: false\n"))[0]
    assert runfiles.LIGER_LAYER_NOTE not in off.notes
    head = "model_name_or_path: mistral-7b\nstage: sft\nfinetuning_type: lora\n"
    # finetuning_args.py defaults: tower and projector frozen; on a text model (no COMPOSITE_MODELS entry) the
    # vision keys change nothing (the vision-language cases: tests/test_runfiles_vlmlf.py)
    frozen = runfiles.load(_json(tmp_path, "f.yaml", head + "freeze_vision_tower: true\n"))[0]
    assert frozen.unmodelled == [] and "freeze_vision_tower" in frozen.mapped
    lf = runfiles.load(_json(tmp_path, "lf.yaml", head + "freeze_vision_tower: false\nresize_vocab: true\n"
                             "image_max_pixels: 262144\nenable_liger_kernel: true\n"))[0]
    # (resize_vocab is mapped: tests/test_new_tokens.py)
    assert lf.unmodelled == [] and {"freeze_vision_tower", "image_max_pixels", "resize_vocab"} <= set(lf.mapped)
    assert runfiles.LIGER_LAYER_NOTE in lf.notes and lf.options["loss"] == "fused-linear"


def test_trl_model_init_kwargs_read_key_by_key(tmp_path: Path) -> None:
    cfg = ("output_dir: o\nmodel_init_kwargs:\n  torch_dtype: bfloat16\n  attn_implementation: sdpa\n"
           "  trust_remote_code: true\n  device_map: auto\n  use_kernels: true\n")
    run = runfiles.load(_json(tmp_path, "trl.yaml", cfg))[0]
    assert run.mapped.count("model_init_kwargs") == 1  # listed once (it was listed per modelled keyword)
    # use_kernels swaps in Hub kernels: named; trust_remote_code sizes nothing; device_map auto on one GPU changes
    # nothing (tests/test_trl_model_init.py)
    assert run.unmodelled == ["model_init_kwargs.use_kernels"]


DS_ZERO3 = """{
  "bf16": {"enabled": true},
  "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                        "offload_param": {"device": "none"}, "overlap_comm": true,
                        "reduce_bucket_size": 500000000, "stage3_prefetch_bucket_size": "auto"},
  "train_micro_batch_size_per_gpu": 2,
  "gradient_accumulation_steps": "auto"
}"""


def test_deepspeed_config_is_read_as_deepspeed(tmp_path: Path) -> None:
    assert runfiles.detect({"zero_optimization": {"stage": 2}}) == "deepspeed"
    run = runfiles.load(_json(tmp_path, "ds.json", DS_ZERO3))[0]
    assert run.kind == "deepspeed"
    assert run.options == {"precision": "mixed-bf16", "batch_size": 2, "zero": 3, "offload": "optimizer",
                           "method": "full"}
    assert run.unmodelled == []  # reduce_bucket_size at DeepSpeed's default 5e8 is what vramcalc counts
    assert any('"auto"' in n and "gradient_accumulation_steps" in n for n in run.notes)


def test_deepspeed_bucket_size_off_default_is_unmodelled(tmp_path: Path) -> None:
    run = runfiles.load(_json(tmp_path, "ds.json",
                              '{"zero_optimization": {"stage": 2, "reduce_bucket_size": 2e8}}'))[0]
    assert run.unmodelled == ["zero_optimization.reduce_bucket_size"]
    assert "fixed constants" in run.notes[0]


def test_hf_args_read_their_deepspeed_file_and_fsdp(tmp_path: Path) -> None:
    _json(tmp_path, "ds.json", DS_ZERO3)
    run = runfiles.load(_json(tmp_path, "a.json", '{"output_dir": "o", "bf16": true, "deepspeed": "ds.json"}'))[0]
    # ZeRO keeps fp32 master weights: mixed-bf16, not the pure-bf16 of a single GPU
    assert (run.options["zero"], run.options["offload"], run.options["precision"]) == (3, "optimizer", "mixed-bf16")
    missing = runfiles.load(_json(tmp_path, "b.json", '{"output_dir": "o", "deepspeed": "nowhere.json"}'))[0]
    assert missing.unmodelled == ["deepspeed"]
    fsdp = runfiles.load(_json(tmp_path, "c.json", (
        '{"output_dir": "o", "bf16": true, "fsdp": "full_shard offload auto_wrap", '
        '"fsdp_config": {"activation_checkpointing": true}}')))[0]
    assert (fsdp.options["fsdp"], fsdp.options["offload"], fsdp.options["precision"]) == (
        "full-shard", "params", "mixed-bf16")
    assert fsdp.options["grad_checkpointing"] is True and fsdp.unmodelled == []


def test_run_file_typo_suggests_the_nearest_key(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("model: mistral-7b\nbatchsize: 4\n")
    with pytest.raises(runfiles.RunFileError) as e:
        runfiles.load(str(f))
    assert str(e.value).endswith("unknown key 'batchsize'; did you mean 'batch_size'?")
    assert "\n" not in str(e.value) and "lora_dropout" not in str(e.value)


def test_deepspeed_run_validates_against_the_estimate_schema(tmp_path: Path) -> None:
    import json

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas/estimate.schema.json").read_text())
    run = runfiles.load(_json(tmp_path, "ds.json", '{"zero_optimization": {"stage": 2, "reduce_bucket_size": 2e8}}'))[0]
    prop = schema["$defs"]["estimate"]["properties"]["config_source"]
    jsonschema.validate(run.source_doc(), prop)  # kind deepspeed and the unmodelled list are in the schema


def test_trl_packing_loss_and_offload_keys_are_mapped(tmp_path: Path) -> None:
    import json

    # TRL sft_config.py: packing with the default strategy bfd turns padding_free on; loss_type chunked_nll;
    # activation_offloading; a TRL file picks the trl stack (its defaults fill what the file leaves out).
    run = runfiles.load(_json(tmp_path, "sft.json", json.dumps(
        {"output_dir": "o", "packing": True, "loss_type": "chunked_nll", "activation_offloading": True,
         "model_init_kwargs": {"attn_implementation": "flash_attention_2"}})))[0]
    assert run.unmodelled == []
    assert {k: run.options[k] for k in ("packing", "loss", "activation_offload", "attention", "stack")} == {
        "packing": "padding-free", "loss": "chunked", "activation_offload": True, "attention": "flash",
        "stack": "trl"}
    wrapped = runfiles.load(_json(tmp_path, "w.json", json.dumps(
        {"output_dir": "o", "packing": True, "packing_strategy": "wrapped"})))[0]
    assert wrapped.options["packing"] == "none"  # full rows of max_length, no position_ids restart
    plain = runfiles.load(_json(tmp_path, "p.json", '{"output_dir": "o"}'))[0]
    assert "stack" not in plain.options  # plain TrainingArguments: the hf stack (vramcalc's defaults)


def test_a_stack_fills_what_the_file_leaves_out(tmp_path: Path) -> None:
    from vramcalc.cli.runs import stack_defaults

    run = runfiles.load(_json(tmp_path, "sft.json", '{"output_dir": "o", "max_length": 4096}'))[0]
    values = OptionValues(values={}, stacks=stack_defaults).run(run.options)
    # presets/stacks/trl.yaml: gradient_checkpointing True and loss chunked_nll; max_length is the file's
    assert (values["grad_checkpointing"], values["loss"], values["seq_len"]) == (True, "chunked", 4096)
    assert set(values["stack_set"]) == {"grad_checkpointing", "loss"}
    flagged = OptionValues(values={"loss": "hf"}, given={"loss"}, stacks=stack_defaults).run(run.options)
    assert flagged["loss"] == "hf" and "loss" not in flagged["stack_set"]  # the command line wins


def test_axolotl_and_llama_factory_saver_keys(tmp_path: Path) -> None:
    ax = runfiles.load(_json(tmp_path, "ax.yaml", (
        "base_model: mistral-7b\nchunked_cross_entropy: true\nchunked_cross_entropy_num_chunks: 4\n"
        "gradient_checkpointing: offload\n")))[0]
    assert ax.unmodelled == []
    assert (ax.options["loss"], ax.options["loss_chunks"], ax.options["activation_offload"]) == ("chunked", 4, True)
    lf = runfiles.load(_json(tmp_path, "lf.yaml", (
        "model_name_or_path: mistral-7b\nstage: sft\nfinetuning_type: lora\nneat_packing: true\n"
        "flash_attn: fa2\n")))[0]
    assert (lf.options["packing"], lf.options["attention"], lf.options["stack"]) == ("packed", "flash",
                                                                                     "llama-factory")
    assert {"neat_packing", "flash_attn"} <= set(lf.mapped)


TORCHTUNE_DPO = EXAMPLES / "configs" / "torchtune-lora-dpo.yaml"


def test_torchtune_dpo_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # torchtune's DPO recipes keep the full fp32 logits and their log_softmax for the policy and the reference
    # (recipes/lora_dpo_single_device.py concatenated_forward): DPOLoss reads as --objective dpo --dpo-head logits,
    # not as SFT with the loss noted (the step's head and reference would be missing)
    run = runfiles.load(TORCHTUNE_DPO)[0]
    assert (run.options["objective"], run.options["dpo_head"], run.options["method"]) == ("dpo", "logits", "lora")
    assert run.unmodelled == [] and "loss" in run.mapped
    code, out, err = invoke(["estimate", "--config", str(TORCHTUNE_DPO), "--format", "json"], capsys)
    assert code == 0, err
    assert "torchtune's DPO recipes (--dpo-head logits)" in out
    # RSOLoss (torchtune/rlhf/loss/dpo.py) is arithmetic on the same per-row log-probs: the same step
    rso = TORCHTUNE_DPO.read_text().replace("DPOLoss", "RSOLoss")
    assert runfiles.load(_json(tmp_path, "rso.yaml", rso))[0].options["dpo_head"] == "logits"
    # SimPO runs the recipe without the reference (and averages the log-probs): not modelled, one line, exit 2;
    # torchtune < 0.4 kept the losses under torchtune.modules.rlhf.loss
    old = TORCHTUNE_DPO.read_text().replace("torchtune.rlhf.loss.DPOLoss", "torchtune.modules.rlhf.loss.SimPOLoss")
    with pytest.raises(runfiles.RunFileError, match=r"SimPOLoss is not modelled.*without the reference"):
        runfiles.load(_json(tmp_path, "simpo.yaml", old))
    code, out, err = invoke(["estimate", "--config", _json(tmp_path, "simpo2.yaml", old)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # the SFT losses of the same recipes' configs are still read
    sft = TORCHTUNE_DPO.read_text().replace("torchtune.rlhf.loss.DPOLoss",
                                            "torchtune.modules.loss.CEWithChunkedOutputLoss")
    assert runfiles.load(_json(tmp_path, "sft.yaml", sft))[0].options["loss"] == "chunked"


def test_axolotl_qlora_holds_16_bit_norms_and_embeddings(tmp_path: Path) -> None:
    # axolotl loaders/model.py _configure_embedding_dtypes: after prepare_model_for_kbit_training the norms and the
    # modules get_linear_embedding_layers names (embed_tokens / lm_head; embed_in / embed_out for gpt_neox,
    # word_embeddings for falcon, embeddings for nemotron_h) go back to bf16, so the file reads as --no-kbit-prep;
    # GPT-J's untied wte is not named (it stays fp32), and embeddings_skip_upcast empties the list, which leaves
    # Falcon's word_embeddings fp32: those keep --kbit-prep (runfiles.py _kbit_axolotl).
    def read(model: str, extra: str = "") -> runfiles.Run:
        text = (f"base_model: {model}\nadapter: qlora\nload_in_4bit: true\nbf16: true\nlora_qkv_kernel: false\n"
                f"lora_o_kernel: false\nlora_mlp_kernel: false\n{extra}")
        return runfiles.load(_json(tmp_path, "ax.yaml", text))[0]

    mistral = read("mistral-7b")
    assert mistral.options["kbit_prep"] is False and runfiles.AXOLOTL_KBIT_NOTE in mistral.notes
    # Falcon's word_embeddings is named, but bitsandbytes quantizes no FalconLinear (core/memory/unreplaced.py): the
    # preparation makes them fp32 and nothing casts them back, so --kbit-prep is kept (fp32 embeddings: the safe side)
    falcon = read("falcon-7b")
    assert "kbit_prep" not in falcon.options
    assert any("unquantized" in n and "prepare_model_for_kbit_training" in n for n in falcon.notes)
    for model, extra in (("gpt-j-6b", ""),):
        run = read(model, extra)
        assert "kbit_prep" not in run.options and runfiles.AXOLOTL_KBIT_NOTE not in run.notes  # the default: True
        assert any("stays fp32" in n for n in run.notes)
    # the estimate follows: Mistral-7B's embed_tokens + lm_head (2 x 32,000 x 4,096) and norms (65 x 4,096) at 2 B
    # instead of 4 B
    from vramcalc.core.memory import estimate
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets

    spec = presets.find_model("mistral-7b")
    prep = estimate(spec, TrainingSpec(method="qlora", precision="bf16"))
    axolotl = estimate(spec, TrainingSpec(method="qlora", precision="bf16", kbit_prep=False))
    assert prep.weights - axolotl.weights == 2 * (2 * 32_000 * 4_096 + 65 * 4_096)
