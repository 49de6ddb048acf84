"""Issue 13, the last run-file keys: LongLoRA (shift_attn, s2_attention), train_mm_proj_only, mixture_of_depths and
use_v1_kernels (refused where they cannot run under transformers 5, mapped with a note where the tool applies
nothing); fp8 and gpu_memory_limit, once named as not modelled, are mapped now (io/runfiles.py, each with its
source)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import VramcalcError
from vramcalc.io import runfiles

LF_HEAD = "model_name_or_path: {model}\nstage: sft\nfinetuning_type: lora\n"
AX_HEAD = "base_model: mistral-7b\nadapter: lora\n"


def _load(tmp_path: Path, text: str) -> runfiles.Run:
    f = tmp_path / "run.yaml"
    f.write_text(text, encoding="utf-8")
    return runfiles.load(str(f))[0]


def _estimate(tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]) -> dict:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    code, out, err = invoke(["estimate", "--config", str(f), "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    return doc["runs"][0] if "runs" in doc else doc


def _refused(tmp_path: Path, text: str, key: str, capsys: pytest.CaptureFixture[str]) -> str:
    f = tmp_path / "refused.yaml"
    f.write_text(text, encoding="utf-8")
    code, out, err = invoke(["estimate", "--config", str(f)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"{key}:" in err, err
    return err


@pytest.mark.parametrize("text, key, why", [
    # llama-3-8b is a "llama" model: LLaMA-Factory's SUPPORTED_CLASS_FOR_S2ATTN, whose patch needs transformers <4.48
    (LF_HEAD.format(model="llama-3-8b") + "shift_attn: true\n", "shift_attn", "<4.48"),
    (AX_HEAD + "s2_attention: true\n", "s2_attention", "afd74aed"),
    (LF_HEAD.format(model="mistral-7b") + "mixture_of_depths: convert\n", "mixture_of_depths", "transformers 4"),
    (LF_HEAD.format(model="mistral-7b") + "mixture_of_depths: load\n", "mixture_of_depths", "transformers 4"),
    ("model_name_or_path: llava-1.5-7b\nstage: sft\nfinetuning_type: full\ntrain_mm_proj_only: true\n",
     "train_mm_proj_only", "freeze_language_model: true"),
    # axolotl's own validators (utils/schemas/validation.py check_tensor_parallel_optimizer, check_mem_mismatch)
    (AX_HEAD + "tensor_parallel_size: 2\noptimizer: adamw_8bit\n", "tensor_parallel_size", "8-bit AdamW"),
    (AX_HEAD + "gpu_memory_limit: 20\nmax_memory:\n  0: 20GiB\n", "gpu_memory_limit", "mutually exclusive"),
    # check_relora: restarts need jagged_restart_steps, and a LoRA / QLoRA adapter
    (AX_HEAD + "relora: true\n", "relora", "jagged_restart_steps"),
    ("base_model: mistral-7b\nrelora: true\njagged_restart_steps: 100\n", "relora", "lora or qlora"),
])
def test_keys_that_cannot_run_under_transformers_5_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, why: str) -> None:
    err = _refused(tmp_path, text, key, capsys)
    assert why in err
    with pytest.raises(VramcalcError, match=key):
        _load(tmp_path, text)


@pytest.mark.parametrize("extra, note", [
    # mistral is not in SUPPORTED_CLASS_FOR_S2ATTN: LLaMA-Factory logs a warning and patches nothing
    ("shift_attn: true\n", runfiles.SHIFT_ATTN_NOTE),
    # _AUTO_KERNELS lists NPU kernels only: nothing is replaced on a CUDA GPU
    ("use_v1_kernels: true\n", runfiles.V1_KERNELS_NOTE),
])
def test_keys_that_change_nothing_keep_the_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     extra: str, note: str) -> None:
    head = LF_HEAD.format(model="mistral-7b")
    base = _estimate(tmp_path, "base.yaml", head, capsys)
    keyed = _estimate(tmp_path, "keyed.yaml", head + extra, capsys)
    # the same step: every breakdown term equal, the key read (not ignored) with its no-change note
    assert (keyed["components"], keyed["phases"], keyed["peak_bytes"]) == (base["components"], base["phases"],
                                                                           base["peak_bytes"])
    assert note in keyed["notes"] and note not in base["notes"]
    run = _load(tmp_path, head + extra)
    key = extra.split(":")[0]
    assert key in run.mapped and key not in run.unmodelled and key not in run.ignored


def test_off_values_are_read_without_a_note(tmp_path: Path) -> None:
    lf = _load(tmp_path, LF_HEAD.format(model="llama-3-8b") + "shift_attn: false\nuse_v1_kernels: false\n"
               "train_mm_proj_only: false\nmixture_of_depths: null\n")
    assert {"shift_attn", "use_v1_kernels", "train_mm_proj_only", "mixture_of_depths"} <= set(lf.mapped)
    assert lf.unmodelled == [] and not {runfiles.SHIFT_ATTN_NOTE, runfiles.V1_KERNELS_NOTE} & set(lf.notes)
    # tensor_parallel_size 1 is axolotl's default (validation.py check_tensor_parallel_size): no sharding
    for tp in (0, 1):  # 0 is read as 1 (check_tensor_parallel_size: a falsy size becomes 1)
        ax = _load(tmp_path, AX_HEAD + f"s2_attention: false\ntensor_parallel_size: {tp}\n")
        assert {"s2_attention", "tensor_parallel_size"} <= set(ax.mapped)
        assert not {"s2_attention", "tensor_parallel_size"} & (set(ax.unmodelled) | set(ax.ignored))
    # a quoted boolean is read as each tool reads it (LLaMA-Factory: any non-empty string is true): refused
    with pytest.raises(VramcalcError, match="shift_attn"):
        _load(tmp_path, LF_HEAD.format(model="mistral-7b") + "shift_attn: 'false'\n")


def test_refused_and_mapped_keys_left_the_unmodelled_list() -> None:
    # tensor_parallel_size > 1: --tp N --tp-layout hf (tests/test_hf_tp.py)
    gone = {"shift_attn", "s2_attention", "train_mm_proj_only", "use_v1_kernels", "mixture_of_depths", "relora",
            "relora_steps", "fp8", "tensor_parallel_size",
            "freeze_language_model", "gpu_memory_limit", "max_memory"}
    # (relora: tests/test_relora.py; fp8: tests/test_fp8.py; gpu_memory_limit, max_memory: tests/test_max_memory.py)
    assert not gone & set(runfiles.UNMODELLED_KEYS)


def test_shift_attn_reads_the_model_type_of_a_config_folder(tmp_path: Path) -> None:
    # LLaMA-Factory tests config.model_type (SUPPORTED_CLASS_FOR_S2ATTN = {"llama"}); TinyLlama's config.json says
    # "llama" (tests/data/hf/tinyllama-1.1b.json), Mistral's "mistral" (tests/data/hf/mistral-7b-v0.1.json)
    data = Path(__file__).parent / "data" / "hf"
    for name, refused in (("tinyllama-1.1b", True), ("mistral-7b-v0.1", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((data / f"{name}.json").read_text(encoding="utf-8"), encoding="utf-8")
        text = LF_HEAD.format(model=folder) + "shift_attn: true\n"
        if refused:
            with pytest.raises(VramcalcError, match="shift_attn: LLaMA-Factory's LongLoRA patch needs"):
                _load(tmp_path, text)
        else:
            assert runfiles.SHIFT_ATTN_NOTE in _load(tmp_path, text).notes


def test_llama_factory_bf16_adapters_and_freeze_run_under_autocast(tmp_path: Path) -> None:
    # hiyouga/LLaMA-Factory model/adapter.py init_adapter: cast_trainable_params_to_fp32 unless pure_bf16, so LoRA's
    # adapters and freeze's trained parameters are fp32 over the 16-bit load, and the Trainer's bf16 flag runs the
    # step under autocast: --precision autocast-bf16 (QLoRA without peft's kbit preparation, which LLaMA-Factory does
    # not run); pure_bf16 keeps every trainable parameter 16-bit, no autocast recipe
    def load(text: str) -> runfiles.Run:
        path = tmp_path / "lf.yaml"
        path.write_text("model_name_or_path: mistral-7b\nstage: sft\nbf16: true\n" + text)
        return runfiles.load(path)[0]

    assert load("finetuning_type: freeze\n").options["precision"] == "autocast-bf16"
    assert load("finetuning_type: lora\n").options["precision"] == "autocast-bf16"
    qlora = load("finetuning_type: lora\nquantization_bit: 4\n").options
    assert (qlora["precision"], qlora["kbit_prep"]) == ("autocast-bf16", False)
    assert load("finetuning_type: freeze\npure_bf16: true\n").options["precision"] == "pure-bf16"
    assert load("finetuning_type: lora\npure_bf16: true\n").options["precision"] == "bf16"
    # DoRA LoRA and 4-bit QLoRA are modelled under autocast (--grid autocast-dora)
    assert load("finetuning_type: lora\nuse_dora: true\n").options["precision"] == "autocast-bf16"
    # where the recipe is not modelled (DoRA on an 8-bit QLoRA here) the old mapping stays, and a note says why, not
    # silently
    dora = load("finetuning_type: lora\nuse_dora: true\nquantization_bit: 8\n")
    assert dora.options["precision"] == "bf16"
    assert any("under the Trainer's autocast" in n and "--dora" in n and "counted as bf16" in n for n in dora.notes)
