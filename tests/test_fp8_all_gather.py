"""FP8 keys that leave the "not modelled yet" table (issue 13, io/runfiles.py _fp8_keys): LLaMA-Factory
`fp8_backend: te` / `msamp` and axolotl `fp8_enable_fsdp_float8_all_gather: true` are refused in one line (the
Transformer Engine / MS-AMP modules and FSDP2's float8 all-gather are not modelled); LLaMA-Factory's
`fp8_enable_fsdp_float8_all_gather` is read with a no-change note (hiyouga/LLaMA-Factory @ 7f564fdb
src/llamafactory/train/fp8_utils.py only logs it and sets an environment variable accelerate does not read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import VramcalcError
from vramcalc.io import runfiles

LF_HEAD = "model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: full\nbf16: true\n"
AX_HEAD = "base_model: tinyllama-1.1b\nbf16: true\n"


def _path(tmp_path: Path, name: str, text: str) -> str:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return str(f)


def _estimate(tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = invoke(["estimate", "--config", _path(tmp_path, name, text), "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    return doc["runs"][0] if "runs" in doc else doc


@pytest.mark.parametrize("text, key, why", [
    (LF_HEAD + "fp8: true\nfp8_backend: te\n", "fp8_backend", "use fp8_backend: torchao"),
    (LF_HEAD + "fp8: true\nfp8_backend: msamp\n", "fp8_backend", "no MS-AMP backend"),
    (AX_HEAD + "fp8: true\nfp8_enable_fsdp_float8_all_gather: true\n", "fp8_enable_fsdp_float8_all_gather",
     "WeightWithDynamicFloat8CastTensor"),
])
def test_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str,
                             why: str) -> None:
    code, out, err = invoke(["estimate", "--config", _path(tmp_path, "refused.yaml", text)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"{key}:" in err and why in err, err
    with pytest.raises(VramcalcError, match=key):
        runfiles.load(_path(tmp_path, "again.yaml", text))


def test_llama_factory_all_gather_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fp8_utils.py @ 7f564fdb: create_fp8_kwargs logs the key; configure_fp8_environment sets
    # FP8_ENABLE_FSDP_FLOAT8_ALL_GATHER, which accelerate 1.16 never reads (it reads ACCELERATE_FP8_..., and only
    # for an AORecipeKwargs without a config): the same step, read with its note
    base = _estimate(tmp_path, "base.yaml", LF_HEAD + "fp8: true\n", capsys)
    keyed = _estimate(tmp_path, "keyed.yaml", LF_HEAD + "fp8: true\nfp8_enable_fsdp_float8_all_gather: true\n",
                      capsys)
    assert (keyed["components"], keyed["phases"], keyed["peak_bytes"]) == (base["components"], base["phases"],
                                                                           base["peak_bytes"])
    assert runfiles.FP8_ALL_GATHER_LF_NOTE in keyed["notes"] and runfiles.FP8_ALL_GATHER_LF_NOTE not in base["notes"]
    text = LF_HEAD + "fp8: true\nfp8_enable_fsdp_float8_all_gather: true\n"
    run = runfiles.load(_path(tmp_path, "run.yaml", text))[0]
    assert run.options["fp8"] == "rowwise" and "fp8_enable_fsdp_float8_all_gather" in run.mapped
    assert not run.unmodelled


@pytest.mark.parametrize("text", [
    # with fp8 off neither tool reads them: LLaMA-Factory's create_fp8_kwargs and configure_fp8_environment return
    # first; axolotl applies its fp8 patch (loaders/patch_manager.py _apply_fp8_patches) only under cfg.fp8
    LF_HEAD + "fp8: false\nfp8_backend: te\nfp8_enable_fsdp_float8_all_gather: true\n",
    AX_HEAD + "fp8: false\nfp8_enable_fsdp_float8_all_gather: true\n",
    # false is the default of both tools (axolotl Float8LinearConfig(enable_fsdp_float8_all_gather=False))
    AX_HEAD + "fp8: true\nfp8_enable_fsdp_float8_all_gather: false\n",
])
def test_keys_read_without_effect(tmp_path: Path, text: str) -> None:
    run = runfiles.load(_path(tmp_path, "run.yaml", text))[0]
    assert "fp8_enable_fsdp_float8_all_gather" in run.mapped and not run.unmodelled
    assert runfiles.FP8_ALL_GATHER_LF_NOTE not in run.notes
    assert run.options.get("fp8") == ("tensorwise" if "fp8: true" in text else None)
