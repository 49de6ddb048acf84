"""TRL's model_init_kwargs beyond dtype and attention (issue 13): quantization_config with use_peft is TRL's QLoRA,
device_map on one GPU changes nothing, what places modules elsewhere is refused in one line (io/runfiles.py
_trl_model_init_kwargs, _trl_quantization_config, _trl_peft; TRL 1.16 trainer/sft_trainer.py, dpo_trainer.py,
trainer/utils.py create_model_from_path; transformers 5.24 trainer_utils.py validate_quantization_for_training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.io import runfiles

ROOT = Path(__file__).resolve().parents[1]
HEAD = "output_dir: o\nmax_length: 512\nper_device_train_batch_size: 2\nbf16: true\n"
INIT = "model_init_kwargs:\n  dtype: bfloat16\n"
# TRL 1.16's QLoRA, whichever way the file asks for it: no prepare_model_for_kbit_training and the adapters cast to
# bf16 (sft_trainer.py __init__), the ModelConfig's lora_dropout 0.05 (trl/trainer/model_config.py)
TRL_QLORA = {"method": "qlora", "kbit_prep": False, "adapter_dtype": "bf16", "lora_dropout": 0.05}


def _load(tmp_path: Path, text: str) -> runfiles.Run:
    f = tmp_path / "trl.yaml"
    f.write_text(text)
    return runfiles.load(str(f))[0]


def _quant(body: str) -> str:
    return HEAD + "use_peft: true\n" + INIT + "  quantization_config: " + body + "\n"


@pytest.mark.parametrize(("body", "expected"), [
    # BitsAndBytesConfig's defaults: no double quantization, NF4, compute dtype float32 (which transformers passes to
    # Linear4bit, so a bf16 input is cast to fp32: read with runfiles.FP32_COMPUTE_NOTE, test below)
    ("{load_in_4bit: true}", {"quant_bits": 4, "double_quant": False}),
    ("{load_in_4bit: true, bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: bfloat16}",
     {"quant_bits": 4, "double_quant": True}),
    # FP4 stores what NF4 stores; a bf16 quant storage packs the same n / 2 bytes (bitsandbytes backends/cuda/ops.py)
    ("{load_in_4bit: true, bnb_4bit_quant_type: fp4, bnb_4bit_quant_storage: bfloat16}",
     {"quant_bits": 4, "double_quant": False}),
    ("{load_in_8bit: true, llm_int8_threshold: 6.0}", {"quant_bits": 8, "double_quant": False}),
    ("{quant_method: bitsandbytes, load_in_4bit: true, bnb_4bit_compute_dtype: torch.float32}",
     {"quant_bits": 4, "double_quant": False}),
])
def test_quantization_config_is_trl_qlora(tmp_path: Path, body: str, expected: dict[str, object]) -> None:
    run = _load(tmp_path, _quant(body))
    assert {k: run.options[k] for k in (*TRL_QLORA, *expected)} == {**TRL_QLORA, **expected}
    assert run.unmodelled == [] and run.mapped.count("model_init_kwargs") == 1
    assert runfiles.TRL_QLORA_NOTE in run.notes


def test_model_config_keys_read_the_same(tmp_path: Path) -> None:
    # `trl sft --config`: ModelConfig's load_in_4bit / use_bnb_nested_quant go through get_quantization_config
    # (trl/trainer/utils.py) into the same BitsAndBytesConfig as the dict above
    top = _load(tmp_path, HEAD + INIT + "use_peft: true\nload_in_4bit: true\nuse_bnb_nested_quant: true\n"
                "bnb_4bit_quant_type: nf4\nbnb_4bit_quant_storage: bfloat16\n")
    init = _load(tmp_path, _quant("{load_in_4bit: true, bnb_4bit_use_double_quant: true}"))
    assert top.options == init.options
    assert {"load_in_4bit", "use_bnb_nested_quant", "bnb_4bit_quant_type", "bnb_4bit_quant_storage"} <= set(top.mapped)
    assert top.ignored == ["output_dir"] and top.unmodelled == []


@pytest.mark.parametrize(("text", "message"), [
    # no adapter: transformers' Trainer refuses a purely quantized model
    (HEAD + INIT + "  quantization_config: {load_in_4bit: true}\n",
     "model_init_kwargs.quantization_config: a 4/8-bit model without adapters: transformers' Trainer refuses it "
     "(\"You cannot perform fine-tuning on purely quantized models\", trainer_utils.py); set use_peft: true (TRL's "
     "LoRA keys) for QLoRA, or remove the quantization"),
    (HEAD + "load_in_8bit: true\n", "load_in_8bit: a 4/8-bit model without adapters"),
    # TRL: "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`"
    (HEAD + "use_peft: true\nload_in_4bit: true\n" + INIT + "  quantization_config: {load_in_4bit: true}\n",
     "model_init_kwargs.quantization_config: TRL refuses it beside the ModelConfig keys"),
    (HEAD + "use_peft: true\nload_in_4bit: true\nload_in_8bit: true\n", "load_in_4bit: TRL's ModelConfig refuses"),
    (HEAD + "use_peft: true\nload_in_4bit: true\nbnb_4bit_quant_type: int4\n", "not one of TRL's choices"),
    (_quant("{bnb_4bit_quant_type: nf4}"), "neither load_in_4bit nor load_in_8bit is true"),
    (_quant("{load_in_4bit: true, llm_int8_skip_modules: [lm_head, mlp]}"), "skipped modules"),
    (_quant("{load_in_4bit: true, llm_int8_enable_fp32_cpu_offload: true}"), "CPU offload"),
    (_quant("{load_in_4bit: true, load_in_8bit: true}"), "together; keep one"),
    (_quant("{load_in_4bit: true, bnb_4bit_quant_type: int4}"), "bnb_4bit_quant_type nf4 or fp4"),
    (_quant("{quant_method: gptq, bits: 4}"), "only bitsandbytes load_in_4bit"),
    # an fp16 load computes in the configured dtype (float32 unless named): not what the estimate counts
    (HEAD + "use_peft: true\nmodel_init_kwargs:\n  dtype: float16\n  quantization_config: {load_in_4bit: true}\n",
     "bnb_4bit_compute_dtype None with a fp16 model is not modelled; give the model's dtype"),
])
def test_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(runfiles.RunFileError) as e:
        _load(tmp_path, text)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("body", "note"), [
    ("device_map: auto", "device_map auto: no memory change on one GPU while the weights fit in its free memory "
     "(90 % of it"),
    ("device_map: sequential", "(all of it"),
    ("device_map: {'': 0}", "device_map: no memory change: the whole model on one GPU."),
    ("device_map: cuda:0", "the whole model on one GPU"),
    ("device_map: 1", "the whole model on one GPU"),
    ("device_map: {model.embed_tokens: 0, model.layers: cuda:0, lm_head: cuda}", "the whole model on one GPU"),
    # max_memory is read only beside a device_map word (transformers modeling_utils.py _get_device_map)
    ("device_map: {'': 0}\n  max_memory: {0: 10GiB, cpu: 100GiB}", runfiles.TRL_MAX_MEMORY_UNREAD),
    ("device_map: null\n  max_memory: {0: 10GiB}", runfiles.TRL_MAX_MEMORY_UNREAD),
])
def test_device_map_on_one_gpu_changes_nothing(tmp_path: Path, body: str, note: str) -> None:
    run = _load(tmp_path, HEAD + INIT + "  " + body + "\n")
    plain = _load(tmp_path, HEAD + INIT)
    assert run.options == plain.options and run.unmodelled == [] and "model_init_kwargs" in run.mapped
    assert any(note in n for n in run.notes), run.notes


@pytest.mark.parametrize(("body", "message"), [
    ("device_map: cpu", "model_init_kwargs.device_map: modules on the CPU or the disk"),
    ("device_map: {model.layers: cpu, '': 0}", "remove it (the whole model on the GPU)"),
    ("device_map: {model.layers: disk, '': 0}", "modules on the CPU or the disk"),
    ("device_map: {model.layers.0: 0, model.layers.1: 1}", "several GPUs in one process"),
    # without a cpu entry accelerate's get_max_memory adds no CPU: the modules past the limit would go to the disk
    ("max_memory: {0: 10GiB}", "model_init_kwargs.max_memory: without a cpu entry the modules past the GPU's limit "
     "go to the disk"),
    ("device_map: balanced\n  max_memory: {0: 10GiB, disk: 100GiB}", "a disk entry"),
    ("max_memory: {0: 10GiB, 1: 10GiB, cpu: 100GiB}", "GPU 0 alone"),
])
def test_placement_refused_in_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(runfiles.RunFileError) as e:
        _load(tmp_path, HEAD + INIT + "  " + body + "\n")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("dmap", ["", "  device_map: auto\n", "  device_map: balanced_low_0\n",
                                  "  device_map: sequential\n"])
def test_max_memory_is_transformers_whole_layer_placement(tmp_path: Path, dmap: str) -> None:
    # create_model_from_path's device_map "auto" (or a word the file gives) with max_memory: transformers'
    # infer_auto_device_map over whole decoder layers (--gpu-memory-limit --whole-layers); accelerate reads 1.5GiB as
    # 1.5 x 2^30 = 1,610,612,736 B
    run = _load(tmp_path, HEAD + INIT + dmap + "  max_memory: {0: 1.5GiB, cpu: 100GiB}\n")
    assert (run.options["gpu_memory_limit"], run.options["whole_layers"]) == ("1610612736", True)
    assert run.unmodelled == [] and runfiles.MAX_MEMORY_CPU_NOTE.format("100GiB") in run.notes


def test_whole_layer_walk_matches_transformers_infer_auto_device_map() -> None:
    torch = pytest.importorskip("torch")
    hf_accelerate = pytest.importorskip("transformers.integrations.accelerate")
    from dataclasses import replace

    from vramcalc.core.memory import placement
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets
    from vramcalc.trace._hf import build_model

    for name, limits in (("tinyllama-1.1b", (370_000_000, 595_000_000, 10**9)), ("qwen2.5-7b", (2_705_000_000,
                         3_910_000_000)), ("qwen3-8b", (3_000_000_000,)), ("mistral-7b-v0.1", (1_000_000_000,))):
        m = replace(presets.find_model(name), num_layers=4)
        hf, _ = build_model(m, TrainingSpec(), torch.bfloat16)  # the meta model from_pretrained places
        sizes, _ = hf_accelerate.compute_module_sizes(hf, None, only_modules=False)
        tree = placement.module_tree(m, 2, fp32_buffers=True)
        assert tree.size_bytes == sizes[""]
        for limit in limits:
            # modeling_utils.py _get_device_map: get_balanced_memory (one GPU, the user's limit kept), then the walk
            # with the model's _no_split_modules
            mm = hf_accelerate.get_balanced_memory(hf, max_memory={0: limit, "cpu": 100 * 2**30},
                                                   no_split_module_classes=hf._no_split_modules)
            assert mm[0] == limit
            got = hf_accelerate.infer_auto_device_map(hf, max_memory=mm, no_split_module_classes=hf._no_split_modules)
            p = placement.place(tree, limit, whole_layers=True)
            assert sum(sizes[k] for k, v in got.items() if v == "cpu") == p.cpu_bytes, (name, limit)
            assert sum(sizes[k] for k, v in got.items() if v == 0) == p.gpu_bytes, (name, limit)
            # no decoder layer is split: each one's leaves are all on the CPU or none is
            per_layer: dict[str, int] = {}
            for n in p.cpu_leaves:
                if n.name.startswith("model.layers."):
                    layer = ".".join(n.name.split(".")[:3])
                    per_layer[layer] = per_layer.get(layer, 0) + n.size_bytes
            assert all(size == sizes[layer] for layer, size in per_layer.items()), (name, limit)


def test_whole_layers_by_hand_at_595_mb() -> None:
    from dataclasses import replace

    from vramcalc.core.memory import estimate, placement
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets

    # TinyLlama-1.1B cut to 4 layers, bf16 (tests/test_max_memory.py): embed_tokens and lm_head 131,072,000 B each, a
    # decoder layer 88,088,576 B. Kept free: the largest remaining unit, lm_head (131,072,000). embed_tokens and layers
    # 0-2 fit (395,337,728 <= 595,000,000 - 131,072,000); layer 3 would make 483,426,304 and cannot be split: it, the
    # final norm, the rotary buffers and the head go to the CPU (axolotl's walk keeps layer 3's attention, gate and up
    # on the GPU)
    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=4)
    p = placement.place(placement.module_tree(m, 2, fp32_buffers=True), 595_000_000, whole_layers=True)
    assert p.gpu_bytes == 131_072_000 + 3 * 88_088_576 and p.reserve_bytes == 131_072_000
    off = estimate(m, TrainingSpec(method="lora", precision="bf16", gpu_memory_limit="595MB", whole_layers=True))
    # offloaded: layer 3 (88,088,576), the final norm (4,096) and lm_head; the rotary buffers stay on the GPU
    assert off.details["weights.cpu_offloaded"] == 88_088_576 + 4_096 + 131_072_000
    with pytest.raises(Exception, match="give the limit"):
        estimate(m, TrainingSpec(method="lora", whole_layers=True))


def test_dpo_policy_quantized_with_the_adapters_off_reference(tmp_path: Path) -> None:
    # TRL 1.16 dpo_trainer.py / kto_trainer.py build a reference from model_init_kwargs only when the policy has no
    # peft adapter, and a quantized policy needs one: the reference is the policy with its adapters disabled, no copy
    for head in ("beta: 0.1\n", "desirable_weight: 1.0\n"):
        run = _load(tmp_path, head + _quant("{load_in_4bit: true}"))
        assert run.options["objective"] in ("dpo", "kto") and run.options["method"] == "qlora"
        assert "ref_quant" not in run.options and run.options.get("ref_model", "auto") == "auto"
    with pytest.raises(runfiles.RunFileError, match="without adapters"):
        _load(tmp_path, "beta: 0.1\n" + HEAD + INIT + "  quantization_config: {load_in_4bit: true}\n")


def _estimate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", *argv, "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    return doc["runs"][0] if "runs" in doc else doc  # type: ignore[no-any-return]  # a --config file: one run


@pytest.mark.parametrize(("text", "flags"), [
    # SFTConfig: TRL's stack (chunked loss, checkpointing on), bf16 over a bf16 load with fp32-then-bf16 adapters
    (_quant("{load_in_4bit: true, bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: bfloat16}"),
     ["--stack", "trl", "--batch-size", "2", "--seq-len", "512", "--double-quant"]),
    ("beta: 0.1\n" + _quant("{load_in_8bit: true}"),
     ["--objective", "dpo", "--batch-size", "2", "--seq-len", "512", "--quant-bits", "8", "--no-double-quant"]),
])
def test_the_file_estimates_as_the_flags_do(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                            flags: list[str]) -> None:
    f = tmp_path / "trl.yaml"
    f.write_text(text)
    from_file = _estimate(["--config", str(f)], capsys)
    by_hand = _estimate([*flags, "--method", "qlora", "--precision", "autocast-bf16", "--no-kbit-prep",
                         "--adapter-dtype", "bf16", "--lora-dropout", "0.05"], capsys)
    assert from_file["peak_bytes"] == by_hand["peak_bytes"]
    assert from_file["components"] == by_hand["components"]


def test_the_grid_runs_what_the_reader_reads(tmp_path: Path) -> None:
    # benchmarks/accuracy.py --grid trlqlora traces the options this reader gives TRL's QLoRA files
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    runs = dict(accuracy.TRLQLORA_RUNS)
    sft = _load(tmp_path, _quant("{load_in_4bit: true, bnb_4bit_use_double_quant: true}")).options
    dpo = _load(tmp_path, "beta: 0.1\n" + _quant("{load_in_4bit: true}")).options
    for opts, label in ((sft, "sft nf4 double-quant"), (dpo, "dpo nf4")):
        grid = runs[label]
        assert {k: opts[k] for k in (*TRL_QLORA, "precision", "quant_bits", "double_quant")} == \
            {k: grid[k] for k in (*TRL_QLORA, "precision", "quant_bits", "double_quant")}


@pytest.mark.parametrize(("text", "precision"), [
    # TRL 1.16 create_model_from_path: `kwargs.get("dtype", "float32")`: an SFTConfig (max_length) without a dtype is
    # an fp32 load, the step under bf16: true's autocast
    (HEAD, "amp-bf16"),
    (HEAD.replace("bf16: true\n", ""), "fp32"),
    # a preference config (beta) alike; TRL's reference is built from the same keywords
    ("beta: 0.1\nper_device_train_batch_size: 2\nbf16: true\n", "amp-bf16"),
    # the script's ModelConfig.dtype (a top-level dtype), and model_init_kwargs over it (scripts/sft.py update order)
    (HEAD + "dtype: bfloat16\n", "pure-bf16"),
    (HEAD + "dtype: float32\n" + INIT, "pure-bf16"),
    # a plain TrainingArguments file (no TRL key): the user's script loads the model, transformers 5's "auto"
    ("output_dir: o\nper_device_train_batch_size: 2\nbf16: true\n", "pure-bf16"),
])
def test_trl_loads_float32_unless_told(tmp_path: Path, text: str, precision: str) -> None:
    run = _load(tmp_path, text)
    assert run.options["precision"] == precision
    if precision == "amp-bf16":
        assert any("TRL's default" in n for n in run.notes)


@pytest.mark.parametrize(("body", "noted"), [
    # BitsAndBytesConfig's default bnb_4bit_compute_dtype is float32 (transformers utils/quantization_config.py) and
    # replace_with_bnb_linear passes it, so Linear4bit never switches to the bf16 input's dtype (bitsandbytes 0.50
    # nn/modules.py: set_compute_type runs only without one): fp32 casts and dequantization, said in a note
    ("{load_in_4bit: true}", True),
    ("{load_in_4bit: true, bnb_4bit_compute_dtype: float32}", True),
    ("{load_in_4bit: true, bnb_4bit_compute_dtype: bfloat16}", False),
    ("{load_in_8bit: true}", False),  # Linear8bitLt has no compute dtype
])
def test_a_float32_compute_dtype_over_bf16_is_said(tmp_path: Path, body: str, noted: bool) -> None:
    run = _load(tmp_path, _quant(body))
    assert any("Linear4bit.forward" in n and "bnb_4bit_compute_dtype: bfloat16" in n for n in run.notes) is noted
