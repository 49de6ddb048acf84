"""Fuzz every input kind's reader in-process, generated from its schema (issue 19).

Kinds: config.json (io/hf_config.CONFIG_KEYS over each family's fixture), safetensors headers (the
format's entry schema), preset entries (ModelSpec / GpuSpec fields), vramcalc run files (the option
table), and the configs of axolotl, LLaMA-Factory, TrainingArguments and torchtune (the keys each
reader maps). Values are drawn from the right type and from every other JSON type. Assertions: the
only exceptions are VramcalcError subclasses with a one-line printable message, and an accepted value
is reflected in what the reader returns.

Deterministic (derandomize, no example database). FUZZ_EXAMPLES per kind (default 3,000: 15k inputs
in total, well under a minute on 2 cores); benchmarks/fuzz.py runs the same tests with more.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vramcalc.core.errors import VramcalcError
from vramcalc.core.options import BY_NAME, OPTIONS, coerce
from vramcalc.core.specs import GpuSpec, ModelSpec
from vramcalc.io import runfiles
from vramcalc.io.hf_config import CONFIG_KEYS, spec_from_hf_config
from vramcalc.io.model_files import SAFETENSORS_DTYPE_BYTES, count_header
from vramcalc.io.presets import parse_specs

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
FUZZ = settings(derandomize=True, max_examples=FUZZ_EXAMPLES, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))

HF = Path(__file__).parent / "data" / "hf"
FIXTURES = {p.stem: json.loads(p.read_text()) for p in sorted(HF.glob("*.json"))}

# Any JSON value, small: what a hostile or careless file can hold anywhere.
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                   st.text(max_size=6), st.sampled_from(["true", "false", "1.5", "inf", "", "\x1b[0m", "1:30"]))
ANY = st.one_of(SCALAR, SCALAR, SCALAR, st.lists(SCALAR, max_size=2), st.dictionaries(st.text(max_size=3), SCALAR,
                                                                                     max_size=2))
KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "positive": st.integers(1, 2**16), "int": st.integers(0, 2**16), "number": st.floats(0, 0.99),
    "bool": st.booleans(), "str": st.sampled_from(["silu", "gelu", "gelu_new", "relu", "x"]),
    "int_list": st.lists(st.integers(0, 4), max_size=3), "str_list": st.lists(st.sampled_from(
        ["sliding_attention", "full_attention"]), max_size=3),
}


def clean(e: VramcalcError) -> None:
    message = str(e)
    assert message and message.isprintable(), message


def value_for(kind_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right type, often any JSON value."""
    return st.one_of(kind_strategy, kind_strategy, ANY)


@FUZZ
@given(fixture=st.sampled_from(sorted(FIXTURES)), data=st.data())
def test_fuzz_config_json(fixture: str, data: st.DataObject) -> None:
    config = dict(FIXTURES[fixture])
    keys = data.draw(st.lists(st.sampled_from(sorted(CONFIG_KEYS)), min_size=1, max_size=4, unique=True))
    for key in keys:
        config[key] = data.draw(value_for(KIND_VALUES[CONFIG_KEYS[key]]))
    try:
        spec = spec_from_hf_config(config, "m", "config.json")
    except VramcalcError as e:
        clean(e)
        return
    part = config["text_config"] if config.get("model_type") == "gemma3" and "text_config" in config else config
    for key in ("hidden_size", "n_embd", "d_model"):
        if part.get(key) is not None:
            assert spec.hidden_size == part[key]
            break
    if part.get("vocab_size") is not None:
        assert spec.vocab_size == part["vocab_size"]


ENTRY = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(sorted(SAFETENSORS_DTYPE_BYTES)), ANY),
    "shape": st.one_of(st.lists(st.integers(0, 2**16), max_size=4), ANY),
}, optional={"data_offsets": ANY})


@FUZZ
@given(header=st.dictionaries(st.text(max_size=4), st.one_of(ENTRY, ENTRY, ANY), max_size=3))
def test_fuzz_safetensors_header(header: dict[str, Any]) -> None:
    try:
        by_dtype, tensors = count_header(header, "m.safetensors")
    except VramcalcError as e:
        clean(e)
        return
    assert tensors == len([k for k in header if k != "__metadata__"])
    assert set(by_dtype) <= set(SAFETENSORS_DTYPE_BYTES)


def _field_values(cls: type) -> dict[str, st.SearchStrategy[Any]]:
    out: dict[str, st.SearchStrategy[Any]] = {}
    for f in fields(cls):
        if f.name in cls.CHOICES:  # type: ignore[attr-defined]
            right: st.SearchStrategy[Any] = st.sampled_from(cls.CHOICES[f.name])  # type: ignore[attr-defined]
        elif f.name in cls.BOUNDS:  # type: ignore[attr-defined]
            right = st.integers(1, 2**14) if f.name in cls.INTEGERS else st.floats(0, 0.5)  # type: ignore[attr-defined]
        elif f.name in ("aliases",):
            right = st.lists(st.text("abc-", min_size=1, max_size=5), max_size=2)
        else:
            right = st.one_of(st.booleans(), st.text("abcxyz", min_size=1, max_size=8))
        out[f.name] = value_for(right)
    return out


MODEL_FIELDS, GPU_FIELDS = _field_values(ModelSpec), _field_values(GpuSpec)


@FUZZ
@given(kind=st.sampled_from(["model", "gpu"]), data=st.data())
def test_fuzz_preset_entries(kind: str, data: st.DataObject) -> None:
    cls, schema = (ModelSpec, MODEL_FIELDS) if kind == "model" else (GpuSpec, GPU_FIELDS)
    base: dict[str, Any] = ({"name": "m", "display_name": "M", "source": "s", "parameters": 1000, "family": "f"}
                            if kind == "model" else
                            {"name": "g", "display_name": "G", "source": "s", "memory_bytes": 10**9,
                             "vendor": "nvidia"})
    keys = data.draw(st.lists(st.sampled_from(sorted(schema)), max_size=4, unique=True))
    entry = {**base, **{k: data.draw(schema[k]) for k in keys}}
    if data.draw(st.booleans()):
        entry[data.draw(st.text(max_size=4))] = data.draw(ANY)  # an unknown key
    try:
        specs = parse_specs([entry], cls, "p.yaml")  # type: ignore[type-var]
    except VramcalcError as e:
        clean(e)
        return
    spec = specs[0]
    for k, v in entry.items():
        got = getattr(spec, k)
        assert got == (tuple(v) if isinstance(v, list) else v), (k, v, got)


OPTION_VALUES = {o.name: value_for(st.sampled_from(o.kind) if isinstance(o.kind, tuple) else
                                   st.integers(1, 64) if o.kind is int else
                                   st.floats(0, 0.9) if o.kind is float else
                                   st.booleans() if o.kind is bool else st.sampled_from(["q_proj", "all-linear"]))
                 for o in OPTIONS}


@FUZZ
@given(data=st.data(), shape=st.sampled_from(["one", "list", "runs"]))
def test_fuzz_run_files(data: st.DataObject, shape: str) -> None:
    keys = data.draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=5, unique=True))
    run = {k: data.draw(OPTION_VALUES[k]) for k in keys}
    run["model"] = data.draw(st.one_of(st.just("llama-3.1-8b"), ANY))
    if data.draw(st.booleans()):
        run["gpu"] = data.draw(st.one_of(st.just("h100-80gb"), ANY))
    doc: Any = run if shape == "one" else [run] if shape == "list" else {"runs": [run]}
    try:
        runs = runfiles._vramcalc_runs(doc, "run.yaml")
    except VramcalcError as e:
        clean(e)
        return
    got = runs[0]
    for k in keys:
        value = run[k]
        if k == "lora_targets" and isinstance(value, list):
            value = ",".join(map(str, value))
        assert got.options[k] == (None if value is None else coerce(BY_NAME[k], value)), k
    assert got.model == str(run["model"]) if run["model"] is not None else got.model is None


FOREIGN: dict[str, tuple[dict[str, Any], dict[str, st.SearchStrategy[Any]]]] = {
    "axolotl": ({"base_model": "llama-3.1-8b"}, {
        "adapter": st.sampled_from(["lora", "qlora", "QLoRA", None]), "load_in_4bit": st.booleans(),
        "load_in_8bit": st.booleans(), "lora_r": st.integers(1, 64), "lora_alpha": st.integers(1, 64),
        "lora_dropout": st.floats(0, 0.5), "lora_target_modules": st.lists(st.sampled_from(["q_proj", "v_proj"])),
        "lora_target_linear": st.booleans(), "sequence_len": st.integers(1, 4096),
        "micro_batch_size": st.integers(1, 16), "gradient_accumulation_steps": st.integers(1, 8),
        "gradient_checkpointing": st.booleans(), "optimizer": st.sampled_from(sorted(runfiles.HF_OPTIM)),
        "bf16": st.booleans(), "fp16": st.booleans()}),
    "llama-factory": ({"model_name_or_path": "llama-3.1-8b", "stage": "sft"}, {
        "finetuning_type": st.sampled_from(["lora", "full", "oft"]), "quantization_bit": st.sampled_from([4, 8, 3]),
        "lora_rank": st.integers(1, 64), "lora_target": st.just("all"), "cutoff_len": st.integers(1, 4096),
        "per_device_train_batch_size": st.integers(1, 16), "gradient_accumulation_steps": st.integers(1, 8),
        "optim": st.sampled_from(sorted(runfiles.HF_OPTIM)), "bf16": st.booleans(), "pure_bf16": st.booleans(),
        "flash_attn": st.sampled_from(["auto", "disabled"])}),
    "hf-training-args": ({"output_dir": "out"}, {
        "per_device_train_batch_size": st.integers(1, 16), "gradient_accumulation_steps": st.integers(1, 8),
        "gradient_checkpointing": st.booleans(), "optim": st.sampled_from(sorted(runfiles.HF_OPTIM)),
        "bf16": st.booleans(), "fp16": st.booleans()}),
    "torchtune": ({"model": {"_component_": "torchtune.models.llama3_1.lora_llama3_1_8b"}}, {
        "batch_size": st.integers(1, 16), "gradient_accumulation_steps": st.integers(1, 8),
        "enable_activation_checkpointing": st.booleans(), "dtype": st.sampled_from(["bf16", "fp32"]),
        "optimizer": st.just({"_component_": "torch.optim.AdamW"}),
        "tokenizer": st.fixed_dictionaries({"max_seq_len": st.integers(1, 4096)})}),
}
FOREIGN_OPTION = {"lora_r": "lora_rank", "sequence_len": "seq_len", "micro_batch_size": "batch_size",
                  "per_device_train_batch_size": "batch_size", "batch_size": "batch_size",
                  "gradient_accumulation_steps": "grad_accum", "cutoff_len": "seq_len", "lora_rank": "lora_rank"}


@FUZZ
@given(tool=st.sampled_from(sorted(FOREIGN)), data=st.data())
def test_fuzz_foreign_configs(tool: str, data: st.DataObject) -> None:
    base, schema = FOREIGN[tool]
    keys = data.draw(st.lists(st.sampled_from(sorted(schema)), max_size=5, unique=True))
    config = {**base, **{k: data.draw(value_for(schema[k])) for k in keys}}
    assert runfiles.detect(config) == tool or any(k in config for k in ("base_model", "output_dir"))
    try:
        run = runfiles._READERS[runfiles.detect(config)](config, Path("cfg.yaml"))
    except VramcalcError as e:
        clean(e)
        return
    for key, option in FOREIGN_OPTION.items():
        if key in keys and config.get(key) is not None and runfiles.detect(config) == tool:
            assert run.options[option] == coerce(BY_NAME[option], config[key]), key
    assert all(BY_NAME[k] for k in run.options)


def test_the_resource_ceilings_can_fail(monkeypatch: Any) -> None:
    """conftest holds every generated input to tests/limits.py's ceilings; each ceiling fails an input over it."""
    import limits

    monkeypatch.setattr(limits, "STATS", {})
    monkeypatch.setattr(limits, "MEMORY_BYTES", 10**6)  # 1 MB, against the 8 MB list below
    with pytest.raises(limits.CeilingPassed, match=r"GB \(ceiling 0.001 GB\) for 'big'"):
        limits.measured("t", lambda kind: [0] * 10**6, ("big",), {})  # a million 8-byte pointers: 8 MB traced
    monkeypatch.setattr(limits, "CPU_SECONDS", -1.0)  # any input passes it: the check itself runs
    with pytest.raises(limits.CeilingPassed, match=r"s of CPU \(ceiling -1 s\) for kind='slow'"):
        limits.measured("t", lambda kind: None, (), {"kind": "slow"})
    assert limits.STATS["t"].inputs == 2 and limits.STATS["t"].traced_peak_max_bytes >= 8 * 10**6
