"""Fuzz every input kind's reader in-process, generated from its schema (issue 19).

Kinds: config.json (io/hf_config.CONFIG_KEYS over each family's fixture; also through show, explain, estimate,
presets new and fit), safetensors headers (the format's entry schema), preset entries (ModelSpec / GpuSpec
fields), vramcalc run files (the option table), the configs of axolotl, LLaMA-Factory, TrainingArguments,
torchtune and DeepSpeed (the keys each reader maps, and its key tables runfiles.BOOLEAN_KEYS / ENUM_KEYS for
loose booleans and names in another case, judged against each tool's own parser), and the preset index cache.
Values are drawn from the right type and from every other JSON type. Assertions: the only exceptions are
VramcalcError subclasses with a one-line printable message, and an accepted value is reflected in what the
reader returns. Every input is also held to tests/limits.py's ceilings (5 s of CPU, 1 GB) by conftest.

Deterministic (derandomize, no example database). FUZZ_EXAMPLES per kind (default 3,000, whatever the
hypothesis profile: about 24k inputs here, a minute or two on 2 cores); benchmarks/fuzz.py runs them with more.
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
    # a multimodal config's text model is its text_config (Gemma 3, LLaVA, LLaVA-NeXT, Idefics3 / SmolVLM,
    # Llama-3.2-Vision, Llama 4: io/hf_config.py reads the widths there)
    part = config["text_config"] if config.get("model_type") in (
        "gemma3", "llava", "llava_next", "idefics3", "smolvlm", "mllama", "llama4") \
        and isinstance(config.get("text_config"), dict) else config
    # DistilBERT's width is `dim` (its attribute_map reads hidden_size as dim; n_embd is no key of it); T5's and
    # BART's is `d_model` (T5Config / BartConfig attribute_map: hidden_size -> d_model; n_embd is no key of theirs)
    widths = ("hidden_size", "dim") if part.get("model_type") == "distilbert" else \
        ("hidden_size", "d_model") if part.get("model_type") in ("t5", "mt5", "bart", "mbart") else \
        ("hidden_size", "n_embd", "d_model")
    for key in widths:
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


# ---- other tools' loose values: booleans as strings or numbers, names in another case (issue 19) ----
# Generated from each reader's key tables (runfiles.BOOLEAN_KEYS, runfiles.ENUM_KEYS, HF_OPTIM). The oracle is
# each tool's own parsing: axolotl's pydantic config (a `bool | None` field), HfArgumentParser.parse_dict (the
# value unconverted: Python's truth test) and TrlParser / the command line (transformers string_to_bool),
# torchtune's recipes (OmegaConf keeps the value; `if` tests it), DeepSpeed (a plain get, or its pydantic
# config). A value is accepted only as the one boolean every path makes of it, and a real boolean always is.

LOOSE = st.one_of(st.booleans(), st.sampled_from([None, 0, 1, 2, -1, 0.0, 1.0, 0.5, [], {}]), st.sampled_from(
    ["true", "false", "True", "False", "TRUE", "FALSE", "yes", "No", "on", "OFF", "t", "F", "y", "n", "1", "0", "",
     " true", "tru", "auto", "offload", "unsloth", "none"]), st.text(max_size=5))
FOREIGN_BASE: dict[str, dict[str, Any]] = {
    "axolotl": {"base_model": "llama-3.1-8b", "adapter": "lora"},
    "llama-factory": {"model_name_or_path": "llama-3.1-8b", "stage": "sft", "quantization_bit": 4},
    "hf-training-args": {"output_dir": "out"},
    "torchtune": {"model": {"_component_": "torchtune.models.llama3_1.lora_llama3_1_8b"},
                  "optimizer": {"_component_": "torch.optim.AdamW"}},
    "deepspeed": {"zero_optimization": {"stage": 2}, "bf16": {}, "fp16": {}},
}
REFUSED = "refused"
# The tools' own parsers, imported once here (not inside a generated input, whose CPU time is held to 5 s).
from pydantic import TypeAdapter, ValidationError  # noqa: E402
from transformers.hf_argparser import string_to_bool  # noqa: E402


def _with(tool: str, key: str, value: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(FOREIGN_BASE[tool]))
    *outer, last = key.split(".")
    node = config
    for part in outer:
        node = node.setdefault(part, {})
    node[last] = value
    if last in ("optim", "optimizer") and str(value).startswith(("galore_", "apollo_")):
        # transformers refuses GaLore/APOLLO without optim_target_modules, and so does io/runfiles.py _low_rank
        config["optim_target_modules"] = ["attn", "mlp"]
    for plugin, keys in runfiles.AX_PLUGIN_KEYS.items():
        if tool == "axolotl" and key in keys:
            # axolotl reads a plugin's keys only with the plugin listed (io/runfiles.py AX_PLUGINS); CutCrossEntropyArgs
            # defaults cut_cross_entropy to true, which is the key drawn here
            config["plugins"] = [plugin]
    if tool == "llama-factory" and last == "resize_vocab":
        # LLaMA-Factory refuses to resize a quantized model's embeddings (model_utils/embedding.py), and so does
        # io/runfiles.py _vocab_llama_factory: the base's quantization_bit would make every true a refusal
        config.pop("quantization_bit")
    return config


def _readings(tool: str, value: Any) -> set[Any]:
    """What the tool makes of `value` in a boolean field, by every path it reads files through."""
    def pydantic(v: Any) -> Any:
        try:
            return bool(TypeAdapter(bool | None).validate_python(v))
        except ValidationError:
            return REFUSED

    def argparse_word(v: Any) -> Any:
        try:
            return string_to_bool(v) if isinstance(v, str) else bool(v)
        except Exception:  # ArgumentTypeError: TrlParser and the command line refuse it
            return REFUSED

    if tool == "axolotl":
        return {pydantic(value)}
    truth = bool(value)  # parse_dict / OmegaConf / a plain get: the value as it is, tested by `if`
    if tool in ("hf-training-args", "llama-factory"):
        return {truth, argparse_word(value)}
    if tool == "deepspeed":
        return {truth, pydantic(value)}
    return {truth}  # torchtune


@FUZZ
@given(tool=st.sampled_from(sorted(runfiles.BOOLEAN_KEYS)), data=st.data())
def test_fuzz_foreign_booleans_are_read_as_the_tool_reads_them(tool: str, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(runfiles.BOOLEAN_KEYS[tool])), label="key")
    words = runfiles.BOOLEAN_KEYS[tool][key]
    value = data.draw(st.one_of(LOOSE, st.sampled_from(words) if words else LOOSE), label="value")
    read = runfiles._READERS[tool]
    try:
        run = read(_with(tool, key, value), Path("cfg.yaml"))
    except VramcalcError as e:
        clean(e)
        assert key.rsplit(".", 1)[-1] in str(e), (key, str(e))
        # (but the true of a feature that cannot run: LongLoRA, train_mm_proj_only, io/runfiles.py REFUSED_WHEN_TRUE)
        assert not isinstance(value, bool) or (value and key in runfiles.REFUSED_WHEN_TRUE.get(tool, ())), \
            "a real boolean is never refused"
        return
    if value is None or value in words or (tool == "deepspeed" and value == "auto"):
        return  # null (unset: the tool's default), the key's own words (axolotl bf16: auto), DeepSpeed's HF "auto"
    readings = _readings(tool, value)
    assert len(readings) == 1 and REFUSED not in readings, (key, value, readings)
    assert run.options == read(_with(tool, key, readings.pop()), Path("cfg.yaml")).options, (key, value)


def _other_cases(name: str) -> list[str]:
    return sorted({name.upper(), name.title(), name.capitalize(), name.swapcase(), f" {name}", name} - {""})


FOREIGN_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    tool: {**runfiles.ENUM_KEYS.get(tool, {}), **({optim: tuple(runfiles.HF_OPTIM)} if optim else {})}
    for tool, optim in (("axolotl", "optimizer"), ("llama-factory", "optim"), ("hf-training-args", "optim"),
                        ("torchtune", None))
}


@FUZZ
@given(tool=st.sampled_from(sorted(FOREIGN_NAMES)), data=st.data())
def test_fuzz_foreign_names_in_another_case_are_refused(tool: str, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(FOREIGN_NAMES[tool])), label="key")
    name = data.draw(st.sampled_from(FOREIGN_NAMES[tool][key]), label="name")
    value = data.draw(st.sampled_from(_other_cases(name)), label="value")
    try:
        runfiles._READERS[tool](_with(tool, key, value), Path("cfg.yaml"))
    except VramcalcError as e:
        clean(e)
        assert value != name and key in str(e), (key, value, str(e))
        return
    assert value == name, f"{key}: {value!r} is not how {tool} spells {name!r}, yet it was read"


@pytest.mark.parametrize("tool,key,value,expected", [
    # the case: axolotl refuses `QLoRA` itself (load_adapter compares lowercase names); so does vramcalc,
    # instead of estimating full fine-tuning (52.2 GB DOES NOT FIT instead of 11.8 GB FITS)
    ("axolotl", "adapter", "QLoRA", "write 'qlora'"),
    # HfArgumentParser.parse_dict keeps "false" a string, which the Trainer's `if self.bf16` takes as true
    ("hf-training-args", "bf16", "false", "without quotes"),
    ("llama-factory", "pure_bf16", "False", "without quotes"),
    ("torchtune", "enable_activation_checkpointing", "false", "without quotes"),
    ("torchtune", "dtype", "BF16", "write 'bf16'"),
    ("hf-training-args", "optim", "AdamW_Torch", "write 'adamw_torch'"),
    ("axolotl", "load_in_4bit", "maybe", "write true or false"),
])
def test_loose_values_are_refused_naming_the_key_and_the_fix(tool: str, key: str, value: Any, expected: str) -> None:
    with pytest.raises(runfiles.RunFileError) as e:
        runfiles._READERS[tool](_with(tool, key, value), Path("cfg.yaml"))
    assert str(e.value).startswith(f"{key}: ") and expected in str(e.value), str(e.value)


def test_axolotl_reads_quoted_booleans_as_its_pydantic_config_does() -> None:
    # pydantic (axolotl's config validation) reads "False", "no", "off", 0 as false and "Yes", "on", 1 as true
    read = runfiles._READERS["axolotl"]
    for off in ("False", "no", "OFF", 0):
        assert read(_with("axolotl", "load_in_4bit", off), Path("a.yaml")).options["method"] == "lora"
    for on in ("True", "yes", "on", 1):
        assert read(_with("axolotl", "load_in_4bit", on), Path("a.yaml")).options["method"] == "qlora"


# ---- the commands other than estimate, on the broken config.json files estimate refuses (issue 19: `show`,
# `explain` and `presets new` crashed on files that `estimate` rejected cleanly) ----

CONFIG_COMMANDS = [["show", "{path}"], ["explain", "{path}"], ["estimate", "{path}", "--format", "json"],
                   ["presets", "new", "--from", "{path}"], ["fit", "{path}", "--gpu", "h100"]]


@settings(derandomize=True, max_examples=max(FUZZ_EXAMPLES // 15, 20), database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(fixture=st.sampled_from(sorted(FIXTURES)), command=st.sampled_from(CONFIG_COMMANDS), data=st.data())
def test_fuzz_config_json_through_every_command(tmp_path_factory: pytest.TempPathFactory,
                                                capsys: pytest.CaptureFixture[str], fixture: str,
                                                command: list[str], data: st.DataObject) -> None:
    from cli_helpers import invoke

    config = dict(FIXTURES[fixture])
    for key in data.draw(st.lists(st.sampled_from(sorted(CONFIG_KEYS)), min_size=1, max_size=3, unique=True)):
        config[key] = data.draw(value_for(KIND_VALUES[CONFIG_KEYS[key]]))
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    argv = [a.format(path=path) for a in command]
    code, out, err = invoke(argv, capsys)
    assert "Traceback" not in out + err and code in (0, 1, 2), (argv, code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    else:
        assert out.strip()


# ---- the preset index cache: an edited payload is not trusted (issue 19) ----


@FUZZ
@given(data=st.data())
def test_fuzz_an_edited_index_cache_is_rebuilt(data: st.DataObject) -> None:
    import tempfile

    from vramcalc.io import index

    payload = {"models": {"m": {"hidden_size": 4096, "num_layers": 32, "name": "m"}}, "gpus": {"g": 10**9}}
    key = "f" * 64
    edited = json.loads(json.dumps(payload))
    node: Any = edited
    path = data.draw(st.sampled_from([("models", "m", "hidden_size"), ("models", "m", "num_layers"),
                                      ("models", "m", "name"), ("gpus", "g")]))
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = data.draw(ANY)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "presets-index.json"
        # the fingerprint matches and the digest is the one written for the original payload
        cache.write_text(json.dumps({"fingerprint": key, "digest": index._digest(payload), "payload": edited}))
        got = index._read_cache(cache, key)
    # unchanged means the same JSON text (32.0 == 32 in Python, but it is an edit of the file: rebuilt)
    unchanged = json.dumps(edited, sort_keys=True) == json.dumps(payload, sort_keys=True)
    assert got == (payload if unchanged else None)
