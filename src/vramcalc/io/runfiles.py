"""Run files and other tools' training configs, read offline, as vramcalc option values.

A vramcalc run file is YAML or JSON whose keys are the estimate options (`batch_size` or `batch-size`)
plus `model`, `gpu` and an optional `name`; it may hold one run, a list of runs, or `runs: [...]`.
The training configs of axolotl, LLaMA-Factory, Hugging Face `TrainingArguments` (JSON) and torchtune
are recognised by their keys; what affects memory is mapped and every other key is reported as ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramcalc.core.errors import UnknownPresetError, VramcalcError
from vramcalc.core.lora_layers import LAYERS_PATTERNS
from vramcalc.core.memory import online_dpo as _online
from vramcalc.core.memory.unreplaced import SUBCLASSED_LINEAR_FAMILIES
from vramcalc.core.options import BY_NAME, OptionError, coerce
from vramcalc.core.specs import VisionSpec
from vramcalc.core.vocab import kernels_value
from vramcalc.io import presets
from vramcalc.io.files import path_kind
from vramcalc.io.resolve import resolve_model


class RunFileError(VramcalcError):
    """A run file or training config that cannot be used, with the fix."""


class _KeyProblem(RunFileError):
    """A value of one key that is not its option's type; load() adds the file's name."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def _strict(key: str, option: str, raw: Any) -> Any:
    """A file value as option `option`'s type: no truncated fractions, booleans as numbers, inf, or ''."""
    try:
        return coerce(BY_NAME[option], raw)
    except OptionError as e:
        raise _KeyProblem(key, str(e).split(": ", 1)[-1]) from None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@dataclass
class Run:
    """One run read from a file: where the model and GPU come from, and the option values it sets."""

    name: str | None = None
    model: str | None = None
    gpu: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "vramcalc"  # vramcalc, axolotl, llama-factory, hf-training-args, torchtune, deepspeed, accelerate
    path: str | None = None
    mapped: list[str] = field(default_factory=list)  # keys of the source file that were used
    ignored: list[str] = field(default_factory=list)  # keys of the source file with no effect here
    # Keys that change memory and that vramcalc does not model yet: the estimate is not trustworthy to
    # the byte, so a verdict on this run must be TIGHT or worse, and the note names every one of them.
    unmodelled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    why_unmodelled: dict[str, str] = field(default_factory=dict)  # key -> what it does to memory
    liger_layers: bool = False  # Liger's RoPE, RMSNorm and SwiGLU all on (_liger_kernels maps --kernels liger)

    def source_doc(self) -> dict[str, Any]:
        """JSON `config_source`: which file, read as what, what was used and what was ignored."""
        return {
            "path": self.path,
            "kind": self.kind,
            "mapped": list(self.mapped),
            "ignored": list(self.ignored),
            "unmodelled": list(self.unmodelled),
        }

    def note(self) -> str | None:
        """One human line on what a foreign config contributed (None for vramcalc's own run files)."""
        if self.kind == "vramcalc":
            return None
        # Only keys with no effect on memory are ever cut short: those that change memory are in
        # `unmodelled`, named in full by unmodelled_note().
        shown = ", ".join(self.ignored[:12]) + (
            f" (+{len(self.ignored) - 12} more)" if len(self.ignored) > 12 else ""
        )
        return (
            f"read {self.path} as {_article(self.kind)} {self.kind} config: used "
            f"{', '.join(self.mapped) or 'nothing'}; ignored {shown or 'nothing'}."
        )

    def unmodelled_note(self) -> str | None:
        """The keys that change memory and are not modelled, every one of them (never truncated)."""
        if not self.unmodelled:
            return None
        named = "; ".join(f"{k} ({self.why_unmodelled[k]})" if k in self.why_unmodelled else k
                          for k in self.unmodelled)
        return (f"not modelled, and they change memory: {named}. The estimate leaves them out, so its "
                "verdict is TIGHT at best.")


def read_data(path: Path) -> Any:
    """Parse a YAML or JSON file (JSON is YAML 1.2; yaml.safe_load reads both)."""
    return presets.read_yaml(path)


def load(path_text: str) -> list[Run]:
    """The runs in a run file or a training config of another tool."""
    path = Path(path_text)
    if path_kind(path, "the run file") == "missing":  # a FIFO or device: read_yaml says what it is
        raise RunFileError(f"--config {path_text}: file not found; pass a YAML or JSON run file")
    data = read_data(path)
    kind = detect(data)
    try:
        if kind == "vramcalc":
            runs = _vramcalc_runs(data, str(path))
        else:
            run = _READERS[kind](data, path)
            run.kind, run.path = kind, str(path)
            _liger_kernels(run, path)
            _liger_cross_entropy_applies(run, path)
            runs = [run]
    except _KeyProblem as e:
        raise RunFileError(f"{path}: {e.key}: {e.problem}") from None
    if not runs:
        raise RunFileError(f"{path}: no runs in the file; give option keys (model, method, batch_size, ...)")
    return runs


def detect(data: Any) -> str:
    """Which tool wrote this config, from its keys."""
    if isinstance(data, dict):
        if "zero_optimization" in data or "train_micro_batch_size_per_gpu" in data:
            return "deepspeed"
        if "distributed_type" in data:  # `accelerate config` writes it (with compute_environment) every time
            return "accelerate"
        if "base_model" in data:
            return "axolotl"
        if "model_name_or_path" in data and ("finetuning_type" in data or "stage" in data):
            return "llama-factory"
        if isinstance(data.get("model"), dict) and "_component_" in data["model"]:
            return "torchtune"
        if "per_device_train_batch_size" in data or "output_dir" in data:
            return "hf-training-args"
    return "vramcalc"


# ---- vramcalc's own run files -------------------------------------------------------------------------

_RUN_KEYS = {"name", "model", "gpu"}


def _vramcalc_runs(data: Any, path: str) -> list[Run]:
    if isinstance(data, dict) and "runs" in data:
        shared = {k: v for k, v in data.items() if k != "runs"}
        items = data["runs"]
        if not isinstance(items, list):
            raise RunFileError(f"{path}: `runs` must be a list of runs")
        entries = [{**shared, **item} if isinstance(item, dict) else item for item in items]
    elif isinstance(data, list):
        entries = data
    elif isinstance(data, dict):
        entries = [data]
    else:
        raise RunFileError(
            f"{path}: expected a mapping of options or a list of runs, got {type(data).__name__}"
        )
    runs = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise RunFileError(f"{path}: run {i} is not a mapping of options")
        run = Run(path=path)
        for key, value in entry.items():
            name = str(key).replace("-", "_")
            if name in _RUN_KEYS:
                if value is not None and (not isinstance(value, str | int | float) or not str(value).strip()):
                    raise RunFileError(f"{path}: run {i}: {key}: expected a {name} name, got {value!r:.40}; "
                                       f"remove the key to leave it unset")
                setattr(run, name, None if value is None else str(value))
            elif name in BY_NAME:
                if name == "lora_targets" and isinstance(value, list):
                    value = ",".join(map(str, value))
                run.options[name] = None if value is None else _strict(f"run {i}: {key}", name, value)
            else:
                raise RunFileError(f"{path}: run {i}: unknown key {key!r}; {_nearest_key(name)}")
        run.mapped = list(entry)
        runs.append(run)
    return runs


def _nearest_key(name: str) -> str:
    """One line pointing at the key meant: the nearest known key, else where the keys are listed."""
    import difflib

    known = sorted(_RUN_KEYS | set(BY_NAME))
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "run-file keys are model, gpu, name and the estimate options (see: vramcalc estimate --help)"


# ---- shared mapping helpers -----------------------------------------------------------------------------

# Hugging Face `optim` names (transformers training_args.py OptimizerNames) → (optimizer, implementation).
# adamw_torch is torch.optim.AdamW with PyTorch's default foreach kernel on CUDA.
HF_OPTIM: dict[str, tuple[str, str | None]] = {
    "adamw_torch": ("adamw", "foreach"),
    "adamw_torch_fused": ("adamw", "fused"),
    "adamw_hf": ("adamw", "for-loop"),
    "adamw_bnb_8bit": ("adamw-8bit", None),
    "adamw_8bit": ("adamw-8bit", None),
    "paged_adamw_8bit": ("paged-adamw-8bit", None),
    "paged_adamw_32bit": ("paged-adamw", None),
    "paged_adamw": ("paged-adamw", None),
    "adafactor": ("adafactor", None),
    "sgd": ("sgd", None),
    "lion_32bit": ("lion", None),
    "paged_lion_32bit": ("lion", None),
    # issue 13: galore_torch / apollo_torch through transformers trainer_optimizer.py _setup_low_rank_optimizer;
    # the *_layerwise names step each parameter in its post-accumulate-grad hook (--optimizer-in-bwd).
    "galore_adamw": ("galore-adamw", None),
    "galore_adamw_layerwise": ("galore-adamw", None),
    "apollo_adamw": ("apollo-adamw", None),
    "apollo_adamw_layerwise": ("apollo-adamw", None),
    "galore_adamw_8bit": ("galore-adamw-8bit", None),  # GaLoreAdamW8bit (trainer_optimizer.py _get_galore_optimizer)
    "galore_adamw_8bit_layerwise": ("galore-adamw-8bit", None),
}
# OptimizerNames vramcalc does not model, refused in one line (counting them as AdamW would be GBs off).
HF_OPTIM_REFUSED: dict[str, str] = {
    "galore_adafactor": "GaLore over Adafactor (GaLoreAdafactor)",
    "galore_adafactor_layerwise": "GaLore over Adafactor (GaLoreAdafactor)",
}


def _truthy(value: Any) -> bool:
    """accelerate's str_to_bool reading of FSDP config values (they travel as environment strings)."""
    return value is True or str(value).lower() in ("true", "auto", "1", "yes", "unsloth")


# How each tool reads a boolean key of its file (issue 19: a quoted "false" is not false everywhere).
# - axolotl validates its YAML with pydantic (utils/schemas/config.py AxolotlInputConfig, `bool | None` fields):
#   lax mode takes true/false, 0/1 and the words below in any case, and refuses anything else.
# - HfArgumentParser.parse_dict / parse_json_file / parse_yaml_file (TrainingArguments, TRL configs, LLaMA-Factory)
#   hand file values to the dataclass unconverted (transformers hf_argparser.py parse_dict: `dtype(**inputs)`), and
#   torchtune's recipes and DeepSpeed's config read them with a plain get: there a quoted "false" stays a non-empty
#   string, which the tool's `if` takes as true, while TrlParser's YAML path and DeepSpeed's pydantic config read
#   it as false. The tools disagree, so a string is refused there; 0 and 1 are what every one makes of them.
PYDANTIC_TRUE = ("1", "on", "t", "true", "y", "yes")  # pydantic-core's str -> bool (case-insensitive)
PYDANTIC_FALSE = ("0", "off", "f", "false", "n", "no")
_STRING_BOOLEANS = {
    "hf-training-args": "HfArgumentParser passes file values unconverted, so the Trainer takes any non-empty "
                        "string as true",
    "llama-factory": "LLaMA-Factory's HfArgumentParser passes file values unconverted, so any non-empty string "
                     "is true",
    "torchtune": "torchtune's recipes test it with Python's `if`, so any non-empty string is true",
    "deepspeed": "DeepSpeed versions disagree on a quoted boolean (a plain get keeps it true, pydantic reads it)",
}


# The boolean keys each reader reads, with the other words a key takes (returned as they are); the fuzz suite
# draws loose values for every one (tests/test_fuzz_io.py). A dotted key is a key of a nested mapping.
BOOLEAN_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "axolotl": {
        "load_in_4bit": (), "load_in_8bit": (), "lora_target_linear": (), "fp16": (), "eager_attention": (),
        "cut_cross_entropy": (), "liger_fused_linear_cross_entropy": (), "chunked_cross_entropy": (),
        "flash_attention": (), "sdp_attention": (), "sample_packing": (),
        "precompute_ref_log_probs": (), "peft_use_dora": (), "peft_use_rslora": (),
        "unsloth_lora_qkv": (), "unsloth_lora_o": (), "unsloth_lora_mlp": (), "unsloth_rms_norm": (),
        "unsloth_rope": (), "unsloth_cross_entropy_loss": (), "liger_cross_entropy": (),
        "lora_mlp_kernel": (), "lora_qkv_kernel": (), "lora_o_kernel": (), "lora_embedding_kernel": (),
        "liger_rope": (), "liger_rms_norm": (), "liger_glu_activation": (), "liger_layer_norm": (),
        "bf16": ("auto",),  # bf16 where the GPU has it
        # a boolean, or offload / offload_disk (axolotl turns them into activation_offloading true / disk)
        "gradient_checkpointing": ("offload", "offload_disk"),
        # axolotl @ 067b021c utils/schemas/config.py: activation_offloading (_offloading_axolotl)
        "activation_offloading": ("legacy", "disk", "hidden_states"),
    },
    "llama-factory": dict.fromkeys(("disable_gradient_checkpointing", "use_reentrant_gc", "enable_liger_kernel",
                                    "use_unsloth_gc",
                                    "use_unsloth", "double_quantization", "pure_bf16", "bf16", "fp16", "neat_packing",
                                    "use_galore", "use_apollo", "use_adam_mini", "use_muon", "galore_layerwise",
                                    "apollo_layerwise", "use_dora", "use_rslora", "freeze_vision_tower",
                                    "freeze_multi_modal_projector", "freeze_language_model"), ()),
    "hf-training-args": dict.fromkeys(("gradient_checkpointing", "activation_checkpointing", "use_liger_kernel", "bf16",
                                        "fp16", "packing",
                                        "padding_free", "activation_offloading", "precompute_ref_log_probs",
                                        "use_peft", "use_dora", "use_rslora", "load_in_4bit", "load_in_8bit",
                                        "use_bnb_nested_quant", "use_vllm", "vllm_enable_sleep_mode"), ()),
    "torchtune": dict.fromkeys(("enable_activation_checkpointing", "optimizer_in_bwd", "enable_activation_offloading",
                                "model.apply_lora_to_mlp", "model.apply_lora_to_output", "optimizer.fused",
                                "dataset.packed", "model.use_dora", "tp_enabled", "mask_ignored_tokens"), ()),
    "deepspeed": dict.fromkeys(("bf16.enabled", "fp16.enabled"), ()),
}
BOOLEAN_KEYS["torchtune"]["fsdp_cpu_offload"] = ()  # the distributed recipes' CPUOffloadPolicy (_torchtune_fsdp)
BOOLEAN_KEYS["llama-factory"]["use_badam"] = ()  # _llama_factory_badam
BOOLEAN_KEYS["llama-factory"]["use_liger_kernel"] = ()  # TrainingArguments' (_liger_trainer_llama_factory)
BOOLEAN_KEYS["llama-factory"]["use_llama_pro"] = ()  # _freeze_llama_factory, _llama_pro_lora
BOOLEAN_KEYS["llama-factory"]["upcast_lmhead_output"] = ()  # --upcast-logits (memory/upcast.py)
BOOLEAN_KEYS["llama-factory"]["upcast_layernorm"] = ()  # --upcast-norms (memory/upcast_norms.py)
BOOLEAN_KEYS["axolotl"]["embeddings_skip_upcast"] = ()  # EMBEDDINGS_SKIP_UPCAST_NOTE
# torch.compile (--compile, _torch_compile): axolotl's `auto` turns it on with torch >= 2.5.1 (schemas/config.py
# check_torch_compile_auto @ 067b021c)
BOOLEAN_KEYS["axolotl"]["torch_compile"] = ("auto",)
BOOLEAN_KEYS["hf-training-args"]["torch_compile"] = ()
BOOLEAN_KEYS["llama-factory"]["torch_compile"] = ()
BOOLEAN_KEYS["torchtune"]["compile"] = ()
BOOLEAN_KEYS["axolotl"].update(dict.fromkeys(("relora", "relora_cpu_offload"), ()))  # _relora_axolotl
BOOLEAN_KEYS["llama-factory"]["resize_vocab"] = ()  # _vocab_llama_factory
BOOLEAN_KEYS["axolotl"]["resize_token_embeddings_to_32x"] = ()  # _vocab_axolotl
for _tool in ("llama-factory", "axolotl"):  # _fp8_keys (--fp8, memory/fp8.py)
    BOOLEAN_KEYS[_tool].update(dict.fromkeys(("fp8", "fp8_enable_fsdp_float8_all_gather"), ()))
# liger_kernel_config's two loss keys (_liger_kernel_config)
BOOLEAN_KEYS["hf-training-args"].update(dict.fromkeys(("liger_kernel_config.cross_entropy",
                                                       "liger_kernel_config.fused_linear_cross_entropy"), ()))
BOOLEAN_KEYS["hf-training-args"]["auto_find_batch_size"] = ()  # TrainingArguments' (read by _finish for every reader)
# Keys whose values are names the tool compares exactly (a Literal, an Enum, `==`): another case or spelling is
# refused, naming the key and the values (the fuzz suite draws each value in other cases).
ENUM_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "axolotl": {"adapter": ("lora", "qlora")},  # axolotl load_adapter: `if adapter in ["lora", "qlora"]`
    # LLaMA-Factory hparams: finetuning_type Literal; flash_attn AttentionFunction (model_args.py)
    "llama-factory": {"finetuning_type": ("lora", "full", "freeze"),
                      "flash_attn": ("auto", "disabled", "sdpa", "fa2", "fa3")},
    # torchtune training.get_dtype; its recipes refuse fp16 ("full fp16 training is not supported"); ac_mode is
    # full or selective (training.apply_selective_activation_checkpointing raises otherwise)
    "torchtune": {"dtype": ("bf16", "fp32"), "ac_mode": ("full", "selective")},
}
# LLaMA-Factory BAdamArgument Literals (hparams/finetuning_args.py): badam_mode, badam_switch_mode
ENUM_KEYS["llama-factory"].update(badam_mode=("layer", "ratio"),
                                  badam_switch_mode=("ascending", "descending", "random", "fixed"))


def _choice(tool: str, data: dict[str, Any], key: str, default: str | None) -> str | None:
    """An ENUM_KEYS value of `tool`'s config, exactly as the tool spells it (absent or null: `default`)."""
    value = data.get(key)
    if value is None:
        return default
    allowed = ENUM_KEYS[tool][key]
    if value not in allowed:
        near = [a for a in allowed if a == str(value).lower()]
        if near:
            raise _KeyProblem(key, f"{value!r:.40} is not a value {tool} takes; write {near[0]!r} (lowercase, as "
                              f"{tool} spells it)")
        raise _KeyProblem(key, f"{value!r:.40} is not modeled; use {', '.join(allowed[:-1])} or {allowed[-1]}")
    return str(value)


def _flag(tool: str, value: Any, key: str) -> bool | str:
    """A boolean key of `tool`'s config read as the tool reads it (None and absent: false); the key's other words
    (BOOLEAN_KEYS) are returned as they are. Anything the tool would read differently from how it looks is
    refused, naming the key and the fix."""
    # `key` as the user's file spells it, with any prefix of the file that embeds it ("deepspeed_config.
    # deepspeed_config_file.bf16.enabled" in an accelerate config): the table's key is its suffix
    words = next(w for k, w in BOOLEAN_KEYS[tool].items() if key == k or key.endswith("." + k))
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value in words:
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if tool == "axolotl" and isinstance(value, str) and value.lower() in PYDANTIC_TRUE + PYDANTIC_FALSE:
        return value.lower() in PYDANTIC_TRUE
    allowed = "true or false" + "".join(f" or {w}" for w in words)
    if tool == "axolotl" or not isinstance(value, str):
        raise _KeyProblem(key, f"{value!r:.40} is not a boolean {tool} accepts; write {allowed}")
    raise _KeyProblem(key, f"{value!r:.40} is a string, not a boolean ({_STRING_BOOLEANS[tool]}); write "
                      f"{allowed} without quotes")


def _take_flag(tool: str, data: dict[str, Any], run: Run, key: str, option: str) -> None:
    if key in data and data[key] is not None:
        run.options[option] = bool(_flag(tool, data[key], key))
        run.mapped.append(key)


def _take(data: dict[str, Any], run: Run, key: str, option: str, convert: Any = None) -> None:
    if key in data and data[key] is not None:
        # int/float conversions are the option's own, strict (no 1.5 -> 1, no True -> 1, no inf)
        value = convert(data[key]) if convert is _targets else data[key]
        run.options[option] = _strict(key, option, value)
        run.mapped.append(key)


def _seen(data: dict[str, Any], run: Run, *keys: str) -> None:
    """Mark keys as used when the file has them (their absence meant a default that was applied)."""
    run.mapped += [k for k in keys if k in data]


def _optim(run: Run, key: str, name: Any) -> None:
    if str(name).strip().lower() == "muon":
        # transformers 5.24 OptimizerNames has no muon; axolotl's `optimizer: muon` (core/builders/base.py at
        # axolotl-ai-cloud/axolotl@ceda25b) builds axolotl-contribs-mit's MuonOptimizerFactory, a dion-derived Muon
        # (batched Newton-Schulz, Triton kernels, DistMuon on a device mesh): not LLaMA-Factory's Muon
        raise _KeyProblem(key, "muon is axolotl's Muon here (axolotl-contribs-mit, not LLaMA-Factory's), not "
                          "modelled, and transformers has no muon optim; LLaMA-Factory's use_muon is --optimizer muon")
    if str(name) in HF_OPTIM_REFUSED:
        raise _KeyProblem(key, f"{name} ({HF_OPTIM_REFUSED[str(name)]}) is not modeled; use galore_adamw or "
                          "apollo_adamw, or give --optimizer")
    hit = HF_OPTIM.get(str(name))
    if hit is None and str(name).strip().lower() in HF_OPTIM:  # OptimizerNames(name) refuses another spelling
        raise _KeyProblem(key, f"{name!r:.40} is not an optimizer name transformers takes; write "
                          f"{str(name).strip().lower()!r} (lowercase, as OptimizerNames spells it)")
    if hit is None:
        run.notes.append(f"{key}: {name!r} is not modeled; counted as AdamW.")
        run.ignored.append(key)
        return
    run.options["optimizer"] = hit[0]
    if hit[1]:
        run.options["optimizer_impl"] = hit[1]
    if str(name).endswith("_layerwise"):
        run.options["optimizer_in_bwd"] = True  # trainer_optimizer.py: register_post_accumulate_grad_hook
    run.mapped.append(key)


# transformers trainer_optimizer.py _setup_low_rank_optimizer: optim_target_modules is a regex string, "all-linear",
# or a list of names each matched as a substring of a module name (trainer_utils.py check_target_module_exists).
_ATTN_NAMES = frozenset(("attn", "self_attn", "attention", "self_attention", "q_proj", "k_proj", "v_proj", "o_proj"))
_MLP_NAMES = frozenset(("mlp", "gate_proj", "up_proj", "down_proj"))
_ATTN_PROJ = frozenset(("q_proj", "k_proj", "v_proj", "o_proj"))


def _optim_targets(key: str, value: Any) -> str:
    """An optim_target_modules value (or LLaMA-Factory's galore_target / apollo_target) as --optimizer-targets."""
    if isinstance(value, str) and value.replace("_", "-") in ("all-linear", "all"):
        return "all-linear" if value.replace("_", "-") == "all-linear" else "attn-mlp"
    names = [str(v).strip() for v in (value if isinstance(value, list | tuple) else str(value).split(","))]
    names = [n for n in names if n]
    got = set(names)
    attn = bool(got & _ATTN_NAMES) and (not got & _ATTN_PROJ or _ATTN_PROJ <= got or bool(got & {"attn", "self_attn"}))
    mlp = bool(got & _MLP_NAMES) and ("mlp" in got or {"gate_proj", "up_proj", "down_proj"} <= got)
    if got <= _ATTN_NAMES | _MLP_NAMES and (attn or mlp) and not (got & _ATTN_NAMES and not attn) \
            and not (got & _MLP_NAMES and not mlp):
        return "attn-mlp" if attn and mlp else "attn" if attn else "mlp"
    raise _KeyProblem(key, f"{value!r:.60} is not modeled; vramcalc projects every Linear of the blocks "
                      "([attn, mlp]), those of attention or of the MLP, or all-linear: write one of those, or give "
                      "--optimizer-targets")


def _optim_args(key: str, text: Any) -> dict[str, str]:
    """transformers trainer_optimizer.py _parse_optim_args: "k=v,k=v", spaces removed."""
    out: dict[str, str] = {}
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise _KeyProblem(key, f"{part!r:.40} is not key=value (transformers splits optim_args on ',' and '=')")
        out[k] = v
    return out


def _projection(run: Run, proj_type: tuple[str, Any], proj: tuple[str, Any], scale_type: tuple[str, Any]) -> None:
    """GaLore/APOLLO's projection settings, each (the key it came from, its value): std projection (GaLore's SVD,
    APOLLO's random matrix) is modelled; APOLLO's tensor-wise scaling at rank 1 is APOLLO-Mini."""
    if proj_type[1] != "std":
        raise _KeyProblem(proj_type[0], f"proj_type {proj_type[1]!r:.20} is not modeled; remove it (std)")
    if run.options.get("optimizer") != "apollo-adamw":
        return
    if proj[1] != "random":
        raise _KeyProblem(proj[0], "APOLLO's svd projection is not modeled; remove it (random)")
    if scale_type[1] not in ("channel", "tensor"):
        raise _KeyProblem(scale_type[0], f"scale_type {scale_type[1]!r:.20} is not APOLLO's; use channel or tensor")
    if scale_type[1] == "tensor" and run.options.get("optimizer_rank") == 1:
        run.options["optimizer"] = "apollo-mini"  # HF's docs and APOLLO's README: APOLLO-Mini is rank 1, tensor-wise
        del run.options["optimizer_rank"]
    elif scale_type[1] == "tensor":
        run.notes.append(f"{scale_type[0]}: tensor-wise scaling keeps one factor per tensor instead of per channel "
                         "(a few bytes less than estimated).")


def _low_rank(d: dict[str, Any], run: Run) -> None:
    """GaLore/APOLLO's optim_target_modules and optim_args (HF TrainingArguments, axolotl): rank and targets change
    memory; update_proj_gap and scale do not; anything else is refused rather than estimated as something else."""
    opt = run.options.get("optimizer")
    if opt not in ("galore-adamw", "galore-adamw-8bit", "apollo-adamw"):
        return
    name = "APOLLO" if opt == "apollo-adamw" else "GaLore"
    targets = d.get("optim_target_modules")
    if targets is None:
        raise _KeyProblem("optim_target_modules", f"{name} needs it (transformers raises without it); e.g. "
                          "[attn, mlp] or all-linear")
    run.options["optimizer_targets"] = _optim_targets("optim_target_modules", targets)
    run.mapped.append("optim_target_modules")
    args = _optim_args("optim_args", d.get("optim_args") or "")
    if "rank" in args:
        run.options["optimizer_rank"] = _strict("optim_args", "optimizer_rank", args.pop("rank"))
    args.pop("update_proj_gap", None)  # how often P is recomputed: the same memory at each update
    args.pop("scale", None)
    _projection(run, ("optim_args", args.pop("proj_type", "std")), ("optim_args", args.pop("proj", "random")),
                ("optim_args", args.pop("scale_type", "channel")))
    for k in ("betas", "beta1", "beta2", "eps", "weight_decay", "lr"):
        args.pop(k, None)  # hyper-parameters: no memory
    if args:
        raise _KeyProblem("optim_args", f"{', '.join(sorted(args))} not modeled for {name}; remove "
                          f"{'it' if len(args) == 1 else 'them'}")
    if "optim_args" in d:
        run.mapped.append("optim_args")


# Keys of the tools' configs that change GPU memory and have no vramcalc option yet. A run that sets one
# (to anything but off) is estimated without it and listed in Run.unmodelled, never as merely "ignored".
UNMODELLED_KEYS: dict[str, str] = {
    # (use_liger_kernel, enable_liger_kernel, liger_fused_linear_cross_entropy, cut_cross_entropy, optimizer_in_bwd,
    # enable_activation_offloading, gradient_checkpointing_kwargs: mapped by their own tools' readers; in another
    # tool's file refused or mapped with a no-change note as that tool treats a key it does not know: _foreign_keys)
    # (torch_compile, torch_compile_backend, torch_compile_mode, axolotl torch_compile_options, torchtune compile:
    # mapped, --compile (memory/compiled.py), _torch_compile)
    # (gradient_checkpointing_kwargs / activation_checkpointing_kwargs: mapped for transformers / TRL and axolotl files,
    # _checkpointing_kwargs; LLaMA-Factory: _gc_kwargs_llama_factory; other tools: _foreign_keys)
    # axolotl
    # (unsloth_lora_qkv / _o / _mlp, unsloth_rms_norm, unsloth_rope: mapped, --kernels unsloth:GROUPS;
    # liger_cross_entropy: --loss liger-cross-entropy; unsloth_cross_entropy_loss: --loss hf, UNSLOTH_CE_NOTE)
    # (lora_qkv_kernel / lora_o_kernel / lora_mlp_kernel / lora_embedding_kernel: mapped, --kernels axolotl:GROUPS,
    # and turned on as axolotl turns them on: _lora_kernels_axolotl)
    # (relora, relora_prune_ratio / _method, relora_cpu_offload: mapped, --relora (memory/relora.py), _relora_axolotl;
    # relora_steps: dropped by axolotl since 7b68dfaf, RELORA_STEPS_NOTE)
    # LLaMA-Factory
    # (use_galore, use_apollo: mapped by LLaMA-Factory's reader, _llama_factory_optimizers; in another tool's file
    # refused or read with a no-change note: _foreign_keys)
    # (pissa_init is not here: PiSSA changes the initial values of the adapters and the base weights, not
    # their sizes (peft tuners/lora/layer.py pissa_init); the SVD runs once before training.)
    # (shift_attn, mixture_of_depths, use_v1_kernels, train_mm_proj_only: refused where they cannot run under
    # transformers 5, mapped with a note where they change nothing: _llama_factory_retired)
    # (quantization_method: mapped, bnb and hqq (--quant-backend hqq, memory/hqq.py); eetq and the checkpoint methods
    # refused in one line: _lf_quantization_method)
    # LLaMA-Factory model_args.py keys that change what a step allocates (hiyouga/LLaMA-Factory
    # src/llamafactory/hparams/model_args.py @ 00577a8); none has a vramcalc option yet
    # (upcast_lmhead_output is mapped: --upcast-logits, memory/upcast.py)
    # (upcast_layernorm is mapped: --upcast-norms, memory/upcast_norms.py)
    # (fp8, fp8_backend, fp8_enable_fsdp_float8_all_gather: mapped, --fp8 (memory/fp8.py); fp8_backend te / msamp and
    # axolotl's all-gather refused in one line, LLaMA-Factory's all-gather a note: _fp8_keys)
    # finetuning_args.py @ ff6d4d12: the language model frozen (model_utils/visual.py get_forbidden_modules), with
    # freeze_multi_modal_projector: false the projector-only recipe that replaced train_mm_proj_only
}

# axolotl's unsloth_cross_entropy_loss (loaders/patch_manager.py _patch_loss_llama -> monkeypatch/unsloth_.py
# integrate_cross_entropy_loss_patch, @323da791, the last axolotl with it; 9de5b763 removed it and its validator now
# refuses the key) rebinds transformers.loss.loss_utils.ForCausalLMLoss to an UnslothForCausalLMLoss (logits.float(),
# a contiguous shifted copy, fast_cross_entropy_loss). The model's loss_function returns LOSS_MAPPING["ForCausalLM"]
# (transformers modeling_utils.py PreTrainedModel.loss_function), the function object bound when loss_utils.py built
# the dict, so the rebinding never reaches a model: transformers' ForCausalLMLoss runs, which is --loss hf (checked
# in tests/test_savers.py against the installed transformers). From transformers 4.48 the module's import of
# LlamaFlashAttention2 fails before any patch.
UNSLOTH_CE_NOTE = ("unsloth_cross_entropy_loss: counted as transformers' own loss (--loss hf): axolotl's patch rebinds "
                   "loss_utils.ForCausalLMLoss, which the models' loss_function (LOSS_MAPPING) never reads; axolotl "
                   "removed the key after 323da791, and its import needs transformers < 4.48.")

# axolotl keys that change what a step allocates, with no vramcalc option yet (axolotl-ai-cloud/axolotl
# src/axolotl/utils/schemas/*.py); they were listed as "ignored" before.
UNMODELLED_KEYS.update({
    # (unfrozen_parameters: mapped, --train-layers / --train-modules, _unfrozen_axolotl; LLaMA-Factory's
    # use_llama_pro, freeze_trainable_modules, freeze_extra_modules: _freeze_llama_factory)
    # (tokens, added_tokens_overrides, resize_token_embeddings_to_32x: mapped, _vocab_axolotl; LLaMA-Factory's
    # resize_vocab, add_tokens, add_special_tokens, new_special_tokens_config: _vocab_llama_factory)
    # (context_parallel_size, sequence_parallel_degree: mapped, _context_parallel_axolotl)
    # (tensor_parallel_size: mapped, _axolotl_retired: --tp N --tp-layout hf, memory/hf_tp.py)
    # (gpu_memory_limit, max_memory: mapped, _max_memory_axolotl: --gpu-memory-limit, memory/placement.py)
    # (s2_attention: refused, _axolotl_retired)
    # LLaMA-Factory (finetuning_args.py, model_args.py)
})

# Keys whose feature cannot run under the transformers vramcalc models (5.24): refused in one line; where the tool
# applies nothing, mapped with a note (issue 13).
# LLaMA-Factory shift_attn (hiyouga/LLaMA-Factory @ ff6d4d12 src/llamafactory/model/model_utils/longlora.py
# configure_longlora): on a model_type in SUPPORTED_CLASS_FOR_S2ATTN ({"llama"}, extras/constants.py) it sets
# group_size_ratio 1/4 and runs _apply_llama_patch, whose check_version("transformers>=4.45.0,<4.48.0",
# mandatory=True) fails under what LLaMA-Factory itself needs (extras/misc.py check_dependencies: >=4.55.0); any
# other model only logs "Current model does not support shift short attention".
S2ATTN_MODEL_TYPES = ("llama",)
SHIFT_ATTN_REFUSAL = ("LLaMA-Factory's LongLoRA patch needs transformers >=4.45,<4.48 (model_utils/longlora.py) and "
                      "LLaMA-Factory itself >=4.55, so it cannot run; remove it")
SHIFT_ATTN_NOTE = ("shift_attn: no memory change: LLaMA-Factory applies LongLoRA's shifted attention to llama models "
                   "only (model_utils/longlora.py) and logs that this model does not support it.")
# axolotl s2_attention: its validator raises "no longer supported" (utils/schemas/deprecated.py @ 067b021c); the
# patch was removed in afd74aed (2026-05-20) as broken on transformers 5.x.
S2_ATTENTION_REFUSAL = ("axolotl removed LongLoRA's shifted sparse attention (afd74aed: broken on transformers 5) and "
                        "refuses the key; remove it")
# mixture_of_depths (model/model_utils/mod.py): the mixture-of-depth package's MoD block (astramind-ai/
# Mixture-of-depths @ f9ae1f4f MoD/MoD.py) takes past_key_value and output_attentions as required arguments, which
# transformers 5's decoder loop does not pass (models/llama/modeling_llama.py LlamaModel.forward), and its "load"
# classes import transformers.modeling_attn_mask_utils, gone in transformers 5.
MOD_REFUSAL = ("mixture-of-depth's MoD blocks (MoD/MoD.py) are written for transformers 4 (their forward takes "
               "past_key_value and output_attentions, which transformers 5 no longer passes); remove it")
# use_v1_kernels (model/loader.py -> v1/plugins/model_plugins/kernels/interface.py apply_v1_kernels @ ff6d4d12): the
# "auto" kernels of _AUTO_KERNELS, which lists Ascend NPU kernels only; on a CUDA GPU nothing is replaced.
V1_KERNELS_NOTE = ("use_v1_kernels: no memory change on an NVIDIA GPU: LLaMA-Factory's automatic v1 kernels are Ascend "
                   "NPU kernels only (v1/plugins/model_plugins/kernels/interface.py _AUTO_KERNELS).")
# train_mm_proj_only: removed from finetuning_args.py in 71a1c132 (2025-03-10; then LLaMA-Factory needed transformers
# <=4.49); today's HfArgumentParser refuses the unknown key. Its successor: freeze_multi_modal_projector: false with
# freeze_language_model: true.
MM_PROJ_ONLY_REFUSAL = ("removed by LLaMA-Factory in 71a1c132 (that version needs transformers <=4.49); its "
                        "successor, freeze_multi_modal_projector: false with freeze_language_model: true, is read but "
                        "not modelled")
BOOLEAN_KEYS["llama-factory"].update(dict.fromkeys(("shift_attn", "use_v1_kernels", "train_mm_proj_only"), ()))
BOOLEAN_KEYS["axolotl"]["s2_attention"] = ()
# The boolean keys whose true is refused (the feature cannot run), not only a loose spelling of it
# (axolotl relora: check_relora refuses it without jagged_restart_steps and a LoRA adapter, _relora_axolotl;
# activation_offloading: check_activation_offloading_wo_gc refuses it without checkpointing, _offloading_axolotl)
REFUSED_WHEN_TRUE = {"llama-factory": ("shift_attn", "train_mm_proj_only"),
                     "axolotl": ("s2_attention", "relora", "activation_offloading")}
# TRL's ModelConfig load_in_4bit / load_in_8bit without use_peft: a quantized model without adapters, which the Trainer
# refuses (_trl_peft, TRL_PURELY_QUANTIZED)
REFUSED_WHEN_TRUE["hf-training-args"] = ("load_in_4bit", "load_in_8bit")


def _family(run: Run, path: Path) -> str | None:
    """The run's model type (ModelSpec.family, config.json model_type), or None where the model does not resolve
    (it is refused where the run is estimated)."""
    try:
        return resolve_model(run.model or "", path.parent)[0].family
    except VramcalcError:
        return None


def _llama_factory_retired(d: dict[str, Any], run: Run, path: Path) -> None:
    """LLaMA-Factory's shift_attn, mixture_of_depths, train_mm_proj_only and use_v1_kernels: refused where they
    cannot run under transformers 5, mapped with a note where LLaMA-Factory applies nothing."""
    if _flag(LF, d.get("shift_attn"), "shift_attn"):
        if _family(run, path) in S2ATTN_MODEL_TYPES:
            raise _KeyProblem("shift_attn", SHIFT_ATTN_REFUSAL)
        run.notes.append(SHIFT_ATTN_NOTE)
    if _is_set(d.get("mixture_of_depths")):  # model_args.py: "convert" or "load"
        raise _KeyProblem("mixture_of_depths", MOD_REFUSAL)
    if _flag(LF, d.get("train_mm_proj_only"), "train_mm_proj_only"):
        raise _KeyProblem("train_mm_proj_only", MM_PROJ_ONLY_REFUSAL)
    if _flag(LF, d.get("use_v1_kernels"), "use_v1_kernels"):
        run.notes.append(V1_KERNELS_NOTE)
    _seen(d, run, "shift_attn", "mixture_of_depths", "train_mm_proj_only", "use_v1_kernels")


def _axolotl_retired(d: dict[str, Any], run: Run) -> None:
    """axolotl's s2_attention (refused: axolotl refuses it), tensor_parallel_size (0 / 1: no sharding; N: --tp N
    --tp-layout hf) and the combinations axolotl's validators refuse (utils/schemas/validation.py @ 067b021c)."""
    if _flag(AX, d.get("s2_attention"), "s2_attention"):
        raise _KeyProblem("s2_attention", S2_ATTENTION_REFUSAL)
    _seen(d, run, "s2_attention")
    tp = d.get("tensor_parallel_size")
    if tp is None or (not isinstance(tp, bool) and tp in (0, 1)):  # check_tensor_parallel_size: unset -> 1
        _seen(d, run, "tensor_parallel_size")
    elif str(d.get("optimizer")) in ("paged_adamw_8bit", "adamw_8bit", "adamw_bnb_8bit"):
        # check_tensor_parallel_optimizer
        raise _KeyProblem("tensor_parallel_size", "axolotl refuses tensor parallelism with bitsandbytes' 8-bit "
                          "AdamW (paged_adamw_8bit, adamw_8bit, adamw_bnb_8bit); use 1 or another optimizer")
    else:
        # loaders/model.py @ 067b021c _build_model: from_pretrained(tp_plan="auto", tp_size=N) shards the model's
        # base_model_tp_plan as DTensors: --tp N --tp-layout hf (memory/hf_tp.py), on N GPUs unless the run says more
        run.options["tp"] = _strict("tensor_parallel_size", "tp", tp)
        run.options["tp_layout"] = "hf"
        run.options.setdefault("gpus_per_node", run.options["tp"])
        run.mapped.append("tensor_parallel_size")
    _relora_axolotl(d, run)
    if d.get("gpu_memory_limit") is not None and d.get("max_memory") is not None:
        # check_mem_mismatch
        raise _KeyProblem("gpu_memory_limit", "axolotl refuses it beside max_memory (they are mutually exclusive); "
                          "keep one")
    _max_memory_axolotl(d, run)


# accelerate 1.15 utils/modeling.py convert_file_size_to_int: GiB/MiB/KiB are powers of 2, GB/MB/KB powers of 10, and a
# lower-case trailing "b" (20gb) means bits (the bytes / 8); an int is bytes.
_ACCELERATE_UNITS = (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))
MAX_MEMORY_CPU_NOTE = ("max_memory cpu {0}: assumed to hold every module past the GPU's limit (a smaller one sends "
                       "modules to the disk, which --gpu-memory-limit refuses where the model shows it).")


def _accelerate_size(key: str, raw: Any) -> int:
    """A max_memory value in bytes, as accelerate's convert_file_size_to_int reads it."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    text = str(raw).strip()
    for unit, scale in _ACCELERATE_UNITS:
        if text.upper().endswith(unit):
            try:
                value = float(text[:-len(unit)])
            except ValueError:
                break
            size = int(value * scale)
            if unit in ("GB", "MB", "KB") and text.endswith("b"):
                size //= 8  # accelerate: "5gb" is 5 gigabits
            if size > 0:
                return size
            break
    raise _KeyProblem(key, f"{str(raw)!r:.40} is not a size accelerate reads; write e.g. 20GiB, 20GB or a byte count")


def _max_memory_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl gpu_memory_limit / max_memory -> --gpu-memory-limit (memory/placement.py). loaders/model.py @ 067b021c
    _set_device_map_config: gpu_memory_limit (an int: GiB, "GiB" appended; a string as written) becomes max_memory
    {each GPU: it, "cpu": "256GiB"}, and either runs accelerate's infer_auto_device_map(canvas, max_memory,
    dtype=torch_dtype), whose map goes to from_pretrained."""
    limit = d.get("gpu_memory_limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, str)):
            raise _KeyProblem("gpu_memory_limit", "must be an int (GiB) or a size such as 20GiB")
        size = f"{limit}GiB" if isinstance(limit, int) else limit
        run.options["gpu_memory_limit"] = str(_accelerate_size("gpu_memory_limit", size))
        run.mapped.append("gpu_memory_limit")
    if d.get("max_memory") is not None:
        _max_memory_map(d["max_memory"], "max_memory", run)
        run.mapped.append("max_memory")


def _max_memory_map(mm: Any, key: str, run: Run, *, needs_cpu: bool = False) -> None:
    """A max_memory mapping (accelerate utils/modeling.py get_max_memory: GPU indices, cpu, disk) → --gpu-memory-limit
    for GPU 0; `needs_cpu`: no cpu entry means no CPU device, the modules past the GPU going to the disk."""
    if not isinstance(mm, dict) or not mm:
        raise _KeyProblem(key, "must be a mapping of devices (0, 1, ..., cpu, disk) to sizes")
    gpus = {k: v for k, v in mm.items() if str(k).strip().isdigit()}
    others = {str(k): v for k, v in mm.items() if k not in gpus}
    if set(others) - {"cpu", "disk"}:
        raise _KeyProblem(key, f"device {sorted(set(others) - {'cpu', 'disk'})[0]!r:.20} is not one "
                          "accelerate knows (GPU indices, cpu, disk)")
    if "disk" in others:
        raise _KeyProblem(key, "a disk entry (modules offloaded to the disk) is not modelled; remove it")
    if len(gpus) != 1 or int(str(next(iter(gpus))).strip()) != 0:
        raise _KeyProblem(key, "the placement is modelled on GPU 0 alone (accelerate's naive model "
                          "parallelism over several GPUs is not); keep one entry, 0")
    if needs_cpu and "cpu" not in others:
        raise _KeyProblem(key, "without a cpu entry the modules past the GPU's limit go to the disk (accelerate "
                          "get_max_memory adds no device), which is not modelled; add cpu: SIZE")
    run.options["gpu_memory_limit"] = str(_accelerate_size(key, next(iter(gpus.values()))))
    if "cpu" in others:
        run.notes.append(MAX_MEMORY_CPU_NOTE.format(others["cpu"]))


# axolotl's relora_steps: renamed relora + jagged_restart_steps in 7b68dfaf; AxolotlInputConfig (pydantic, unknown
# keys dropped) no longer has it @ 067b021c, so it turns nothing on.
RELORA_STEPS_NOTE = ("relora_steps: axolotl dropped the key in 7b68dfaf (its config ignores it): no ReLoRA restarts "
                     "run; for them write relora: true with jagged_restart_steps.")
RELORA_PRUNE_NOTE = ("relora_prune_method {0}: the restart's pruning counted as magnitude pruning's (16 B per Adam "
                     "state element at torch.quantile's sort; {0} needs 9 B): an over-estimate where pruning is the "
                     "restart's peak.")


def _relora_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl ReLoRA (utils/schemas/peft.py ReLoRAConfig, validation.py check_relora, monkeypatch/relora.py @
    067b021c) -> --relora (memory/relora.py). jagged_restart_steps (how often) and relora_prune_ratio (how much is
    zeroed) change no size; relora_cpu_offload is read only by the quantized merge, which --relora refuses."""
    if "relora_steps" in d and _is_set(d["relora_steps"]):
        run.notes.append(RELORA_STEPS_NOTE)
        run.ignored.append("relora_steps")
    _seen(d, run, "jagged_restart_steps", "relora_prune_ratio", "relora_cpu_offload", "relora_prune_method")
    _flag(AX, d.get("relora_cpu_offload"), "relora_cpu_offload")  # read as axolotl reads it (a boolean), on or off
    if not _flag(AX, d.get("relora"), "relora"):
        _seen(d, run, "relora")
        return
    if not _is_set(d.get("jagged_restart_steps")):  # check_relora
        raise _KeyProblem("relora", "axolotl needs jagged_restart_steps with it (how often ReLoRA restarts); add it "
                          "or remove relora")
    if d.get("adapter") not in ("lora", "qlora"):
        raise _KeyProblem("relora", "axolotl runs ReLoRA on a lora or qlora adapter only; set adapter or remove relora")
    method = d.get("relora_prune_method") or "magnitude"
    if method not in ("magnitude", "random", "reset"):  # ReLoRAConfig: a Literal
        raise _KeyProblem("relora_prune_method", f"{method!r:.40} is not one of axolotl's magnitude, random, reset")
    if method != "magnitude":
        run.notes.append(RELORA_PRUNE_NOTE.format(method))
    run.options["relora"] = True
    run.mapped.append("relora")


# Liger's layer kernels: applied with the fused linear cross-entropy by TRL's use_liger_kernel and LLaMA-Factory's
# enable_liger_kernel (liger_kernel/transformers/monkey_patch.py _apply_liger_kernel_to_instance: rope, swiglu,
# rms_norm on by default), one by one by axolotl's liger_* keys (integrations/liger/args.py).
LIGER_LAYER_KEYS = ("liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_layer_norm")
# Each saves no more than the module it replaces (liger_kernel/ops/rms_norm.py saves X, W and an fp32 rstd per row
# where LlamaRMSNorm keeps an fp32 copy of its input; ops/swiglu.py saves gate and up and recomputes silu in
# backward where act_fn(gate) * up also keeps silu's output; ops/rope.py rotates q and k in place).
LIGER_LAYER_NOTE = ("Liger's RoPE / RMSNorm / SwiGLU / LayerNorm kernels are counted as transformers' modules: they "
                    "save no more (fewer for RMSNorm and SwiGLU), so activations are over-estimated (the safe "
                    "direction); Liger's fused linear cross-entropy is mapped (--loss fused-linear); pass --kernels "
                    "liger to count its RMSNorm, SwiGLU and RoPE (Llama, Mistral, Qwen2, Qwen3).")


def _liger_layers(tool: str, d: dict[str, Any], run: Run, *keys: str) -> None:
    """Liger's layer kernels turned on by `keys`: mapped, with the over-estimate note (_liger_kernels replaces it
    with --kernels liger where memory/liger.py models the run)."""
    on = {k for k in keys if k in d and _flag(tool, d.get(k), k)}
    if on and LIGER_LAYER_NOTE not in run.notes:
        run.notes.append(LIGER_LAYER_NOTE)
    # TRL / transformers use_liger_kernel and LLaMA-Factory enable_liger_kernel apply rope, rms_norm and swiglu
    # together (monkey_patch.py _apply_liger_kernel_to_instance defaults); axolotl's keys one by one: all three.
    run.liger_layers = bool(on) and (len(keys) == 1 or {"liger_rope", "liger_rms_norm", "liger_glu_activation"} <= on)


def _liger_kernels(run: Run, path: Path) -> None:
    """`--kernels liger` for a run file that turns Liger's layer kernels on, where memory/liger.py models the run (a
    known Llama / Mistral / Qwen2 / Qwen3 model, full / LoRA / QLoRA in 16 bits, ...); otherwise the note stays."""
    if not run.liger_layers or run.model is None or "kernels" in run.options:
        return
    from dataclasses import fields

    from vramcalc.core.memory import liger
    from vramcalc.core.specs import TrainingSpec

    known = {f.name for f in fields(TrainingSpec)}
    try:
        spec, _ = resolve_model(run.model, path.parent)
        training = TrainingSpec(**{k: v for k, v in run.options.items() if k in known})
    except (VramcalcError, TypeError, ValueError):
        return  # the model or the options are checked (and refused) where the run is estimated
    if liger.why_not(spec, training) is None:
        run.options["kernels"] = "liger"
        run.notes.remove(LIGER_LAYER_NOTE)


# The model types whose Liger patch takes cross_entropy: liger_kernel/transformers/monkey_patch.py @ead96b61
# MODEL_TYPE_TO_APPLY_LIGER_FN, and axolotl's own branches (integrations/liger/plugin.py @067b021c: jamba, deepseek_v2,
# granitemoe, gemma4_unified); for any other type axolotl logs "Liger not applied".
LIGER_CE_MODEL_TYPES = frozenset((
    "deepseek_v4", "gemma", "gemma2", "gemma3_text", "gemma3", "gemma4_text", "gemma4", "glm4", "glm4v", "glm4v_moe",
    "gpt_oss", "internvl", "llama", "llama4_text", "llama4", "llava", "granite", "mllama", "mllama_text_model",
    "ministral", "mistral", "mixtral", "nemotron", "olmo2", "pixtral", "olmo3", "qwen2", "qwen3", "qwen3_moe",
    "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text", "qwen3_next", "qwen3_5", "qwen3_5_text",
    "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_vl", "qwen3_vl_text", "qwen3_vl_moe", "qwen3_vl_moe_text", "smollm3",
    "phi3", "paligemma", "falcon_h1", "smolvlm", "hunyuan_v1_dense", "hunyuan_v1_moe", "exaone4",
    "jamba", "deepseek_v2", "granitemoe", "gemma4_unified", "gemma4_unified_text"))


def _liger_cross_entropy_applies(run: Run, path: Path) -> None:
    """axolotl's liger_cross_entropy on a model type Liger's plugin does not patch: transformers' own loss runs."""
    if run.options.get("loss") != "liger-cross-entropy" or run.kind != AX or run.model is None:
        return
    try:
        spec, _ = resolve_model(run.model, path.parent)
    except VramcalcError:
        return  # the model is resolved (or refused) where the run is estimated
    if spec.family not in LIGER_CE_MODEL_TYPES:
        run.options.pop("loss")
        run.notes.append(f"liger_cross_entropy: axolotl's Liger plugin does not patch {spec.family} models "
                         "(integrations/liger/plugin.py: \"Liger not applied\"): counted as transformers' own loss.")


# LLaMA-Factory's on-the-fly quantization methods (extras/constants.py QuantizationMethod): "bnb" is
# bitsandbytes, what --method qlora models; the others quantize with their own storage and kernels.
LF_BNB_METHODS = ("bnb", "bitsandbytes")
# HQQ's bits in configure_quantization (model_utils/quantization.py: "HQQ only accepts 1/2/3/4/5/6/8-bit")
LF_HQQ_BITS = (1, 2, 3, 4, 5, 6, 8)
# The methods LLaMA-Factory's QuantizationMethod (extras/constants.py) names that configure_quantization does not
# quantize with on the fly (it has branches for bnb, hqq and eetq only): with quantization_bit the model would load
# unquantized; their own checkpoints (GPTQ, AWQ, AQLM, ...) bring a config.json quantization_config instead
LF_CHECKPOINT_METHODS = ("gptq", "awq", "aqlm", "quanto", "mxfp4", "fp8")


def _lf_quantization_method(d: dict[str, Any], bits: Any) -> str:
    """LLaMA-Factory's quantization_method as vramcalc models it (bnb or hqq); a one-line refusal otherwise.
    hiyouga/LLaMA-Factory src/llamafactory/model/model_utils/quantization.py configure_quantization (@ 13e7388)."""
    raw = str(d.get("quantization_method", "bnb")).lower()
    if raw in LF_BNB_METHODS:
        return "bnb"
    if raw == "hqq" or bits is None:  # without quantization_bit the method quantizes nothing
        return "hqq" if raw == "hqq" else "bnb"
    if raw == "eetq":
        raise _KeyProblem("quantization_method", "eetq runs EetqLinear's int8 weights through eetq's CUDA w8_a16_gemm "
                          "kernel, whose saved tensors are not modelled; use bnb (quantization_bit 8) or hqq, or "
                          "remove it")
    if raw in LF_CHECKPOINT_METHODS:
        raise _KeyProblem("quantization_method", f"{raw} is not an on-the-fly method of LLaMA-Factory (bnb, hqq, eetq: "
                          "it would load the model unquantized) and a pre-quantized checkpoint's storage is not "
                          "modelled; use bnb or hqq, or remove it")
    raise _KeyProblem("quantization_method", f"{raw!r:.40} is not one of LLaMA-Factory's methods; use bnb or hqq, or "
                      "remove it")


# LoRA variants with no memory of their own: rsLoRA scales the adapter by alpha / sqrt(r) (peft LoraLayer
# update_layer: a float), LoRA+ gives lora_B a larger learning rate (peft optimizers/loraplus.py: parameter groups,
# the same states). Read as accepted keys, with a note, never listed as ignored.
NO_MEMORY_KEYS: dict[str, str] = {
    "use_rslora": "rsLoRA (alpha / sqrt(r) scaling)", "peft_use_rslora": "rsLoRA (alpha / sqrt(r) scaling)",
    "loraplus_lr_ratio": "LoRA+ (a larger learning rate for lora_B)",
    "loraplus_lr_embedding": "LoRA+ (the embedding adapters' learning rate)",
    "loraplus_lr_ratio_embedding": "LoRA+ (the embedding adapters' learning rate)",
}


def _lora_variants(tool: str, d: dict[str, Any], run: Run, dora_key: str | None, saved_key: str | None) -> None:
    """DoRA and modules_to_save from `tool`'s keys (axolotl peft_use_dora / lora_modules_to_save, LLaMA-Factory
    use_dora / additional_target); rsLoRA and LoRA+ keys accepted with a note (no memory change)."""
    if dora_key is not None:
        _take_flag(tool, d, run, dora_key, "dora")
    if saved_key is not None and d.get(saved_key) not in (None, "", []):
        value = d[saved_key]
        names = value if isinstance(value, list) else str(value).split(",")
        run.options["modules_to_save"] = ",".join(str(x).strip() for x in names if str(x).strip())
        run.mapped.append(saved_key)
    for key, what in NO_MEMORY_KEYS.items():
        if key in d:
            if key in BOOLEAN_KEYS.get(tool, {}):
                _flag(tool, d[key], key)  # read as the tool reads it: a quoted boolean is refused the same way
            run.mapped.append(key)
            if d[key] not in (None, False, 0, ""):
                run.notes.append(f"{key}: {what}: no memory change.")


def _lora_layers_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl peft_layers_to_transform / peft_layers_pattern (utils/schemas: list[int] / list[str], passed to peft
    LoraConfig layers_to_transform / layers_pattern by loaders/adapter.py load_lora) as --lora-layers."""
    layers, pattern = d.get("peft_layers_to_transform"), d.get("peft_layers_pattern")
    if pattern not in (None, [], "") and layers in (None, []):
        # axolotl's own validator (check_peft_layers_pattern) refuses the same
        raise _KeyProblem("peft_layers_pattern", "needs peft_layers_to_transform (axolotl refuses it alone); "
                          "add the layer indices or remove it")
    if layers in (None, []):
        if "peft_layers_to_transform" in d:
            run.mapped.append("peft_layers_to_transform")
        return
    if isinstance(layers, bool) or not isinstance(layers, int | list) \
            or (isinstance(layers, list) and any(isinstance(i, bool) or not isinstance(i, int) for i in layers)):
        raise _KeyProblem("peft_layers_to_transform", f"expected a list of layer indices, got {layers!r:.40}")
    run.options["lora_layers"] = _strict("peft_layers_to_transform", "lora_layers", layers)
    run.mapped.append("peft_layers_to_transform")
    if pattern not in (None, [], ""):
        names = pattern if isinstance(pattern, list) else [pattern]
        other = [str(n) for n in names if str(n) not in LAYERS_PATTERNS]
        if other:
            raise _KeyProblem("peft_layers_pattern", f"{other[0]!r:.40} is not modelled: --lora-layers counts the "
                              f"decoder layers ({', '.join(LAYERS_PATTERNS)}); remove it or name those")
        run.mapped.append("peft_layers_pattern")


COMPILE_CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", *COMPILE_CUDAGRAPH_MODES)  # torch.compile's `mode`
CUDAGRAPHS_REFUSAL = ("uses CUDA graphs, whose cudagraph trees keep every recorded graph's outputs and intermediates "
                      "in a private pool across replays (torch/_inductor/cudagraph_trees.py), which vramcalc does not "
                      "model; use default or max-autotune-no-cudagraphs, or remove it")
# axolotl torch_compile_options (INDUCTOR_COMPILE_OPTIONS_ALLOWLIST, utils/schemas/enums.py @ 067b021c): flags that
# choose kernels or caching, not what is stored; shape_padding / comprehensive_padding pad strides, unmeasured
_INDUCTOR_FLAGS_NO_MEMORY = ("coordinate_descent_tuning", "coordinate_descent_check_all_directions", "epilogue_fusion",
                             "max_autotune_gemm", "fx_graph_cache", "assume_aligned_inputs", "decompose_mem_bound_mm")


def _torch_compile(tool: str, d: dict[str, Any], run: Run, key: str = "torch_compile") -> None:
    """torch.compile keys: --compile with inductor (memory/compiled.py); CUDA graphs and other backends refused."""
    on = bool(_flag(tool, d.get(key), key)) if key in d else False  # axolotl's "auto": on (torch >= 2.5.1)
    backend, mode = d.get("torch_compile_backend"), d.get("torch_compile_mode")
    if tool != AX and (backend is not None or mode is not None):
        on = True  # transformers training_args.py __post_init__: a backend or a mode turns torch_compile on
    # axolotl passes backend and mode on only when torch_compile is set (core/builders/base.py _configure_torch_compile)
    _seen(d, run, key, "torch_compile_backend", "torch_compile_mode")
    if not on:
        return
    if backend is not None and backend != "inductor":
        # measured (benchmarks/compile_peaks.py): aot_eager's backward keeps every saved tensor to its end, above the
        # eager step; eager (Dynamo only) is the eager step; the rest are not NVIDIA training backends
        raise _KeyProblem("torch_compile_backend", f"{backend!r:.40} is not modelled: vramcalc models inductor "
                          "(the default; debugging backends such as aot_eager hold every saved tensor to the end of "
                          "backward); use inductor or remove it")
    if mode is not None and mode not in COMPILE_MODES:
        raise _KeyProblem("torch_compile_mode", f"{mode!r:.40} is not a torch.compile mode; use "
                          f"{', '.join(COMPILE_MODES)}")
    if mode in COMPILE_CUDAGRAPH_MODES:
        raise _KeyProblem("torch_compile_mode", f"{mode} {CUDAGRAPHS_REFUSAL}")
    options = d.get("torch_compile_options") if tool == AX else None
    if isinstance(options, dict):
        if _is_set(options.get("triton.cudagraphs")):
            raise _KeyProblem("torch_compile_options", f"triton.cudagraphs {CUDAGRAPHS_REFUSAL}")
        unmeasured = sorted(str(k) for k in options if k not in (*_INDUCTOR_FLAGS_NO_MEMORY, "triton.cudagraphs"))
        if unmeasured:
            _unmodelled(run, "torch_compile_options", f"inductor flags {', '.join(unmeasured)[:80]} (not measured)")
        else:
            run.mapped.append("torch_compile_options")
    run.options["compile"] = True


def _is_set(value: Any) -> bool:
    """A config value that turns something on (not None, false, 0, '' or an empty list/mapping)."""
    if value is None or value is False or value == 0 or value == "" or value == [] or value == {}:
        return False
    return str(value).lower() not in ("false", "no", "off", "none", "0")


def _unmodelled(run: Run, key: str, why: str) -> None:
    if key not in run.unmodelled:
        run.unmodelled.append(key)
        run.why_unmodelled[key] = why


def _finish(data: dict[str, Any], run: Run) -> Run:
    if "auto_find_batch_size" in data and "auto_find_batch_size" not in run.mapped:
        # TrainingArguments.auto_find_batch_size (axolotl and LLaMA-Factory pass it on): the step's memory is the
        # configured batch's; with a GPU the CLI gives the batch the Trainer's retries end at (core/searches.py)
        _take_flag(HF, data, run, "auto_find_batch_size", "auto_find_batch_size")
    for key, why in UNMODELLED_KEYS.items():
        if key in data and key not in run.mapped and _is_set(data[key]):
            _unmodelled(run, key, why)
    taken = {k.split(".", 1)[0] for k in (*run.mapped, *run.unmodelled)}
    run.ignored += [str(k) for k in data if k not in taken and str(k) not in run.ignored]
    if run.unmodelled:
        run.notes.insert(0, run.unmodelled_note() or "")
    return run


def _autocast16(run: Run, path: Path, half: str, who: str, also: dict[str, Any]) -> None:
    """The Trainer's bf16 / fp16 flag over a 16-bit load whose trainable parameters are fp32 (peft's adapters, or
    LLaMA-Factory's trained layers): the step runs under autocast (accelerate accelerator.py prepare_model), i.e.
    --precision autocast-{half} (memory/precision.py), where vramcalc models that run (memory/upcast_norms.py
    check_recipe, on the file's options with the defaults); elsewhere the reader's mapping stays, with a note.
    `also`: options that go with the recipe (QLoRA's --no-kbit-prep where the tool runs no kbit preparation)."""
    from vramcalc.core.memory.upcast_norms import check_recipe
    from vramcalc.core.options import OPTIONS, training_spec

    before = run.options.get("precision")
    values = {o.name: o.default for o in OPTIONS} | run.options | also | {"precision": f"autocast-{half}"}
    try:
        # (an hf-training-args file names no model: its family is checked at the estimate)
        check_recipe(resolve_model(run.model, path.parent)[0] if run.model else None, training_spec(values))
    except VramcalcError as e:
        run.notes.append(f"{who} runs this step under the Trainer's autocast over 16-bit weights; --precision "
                         f"autocast-{half} is not modelled here ({str(e).split(': use --precision')[0]}): counted "
                         f"as {before}.")
        return
    run.options.update(also, precision=f"autocast-{half}")


def _targets(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    text = str(value)
    return "all-linear" if text in ("all", "all-linear", "all_linear") else text


AX, LF, HF, TT = "axolotl", "llama-factory", "hf-training-args", "torchtune"


# ---- one tool's memory keys in another tool's file (issue 13) -------------------------------------------

# The saver keys each tool reads itself (mapped by its reader): TrainingArguments use_liger_kernel and
# gradient_checkpointing_kwargs (LLaMA-Factory's training arguments subclass Seq2SeqTrainingArguments, so its files
# take them too: _liger_trainer_llama_factory, _gc_kwargs_llama_factory; axolotl passes gradient_checkpointing_kwargs
# on: _checkpointing_kwargs), LLaMA-Factory enable_liger_kernel, axolotl liger_fused_linear_cross_entropy /
# cut_cross_entropy, torchtune optimizer_in_bwd / enable_activation_offloading. In another tool's file each is what
# that tool makes of a key it does not declare:
# - transformers / TRL: HfArgumentParser.parse_dict / parse_json_file / parse_yaml_file raise "Some keys are not used
#   by the HfArgumentParser" (allow_extra_keys False, transformers 5.24 hf_argparser.py), and `trl <command> --config`
#   (TRL 1.16 cli/commands/training.py) hands a key its parser does not take to `accelerate launch`, whose parser
#   exits with "unrecognized arguments" (TRL's example scripts run directly drop it: fail_with_unknown_args=False);
# - LLaMA-Factory (hiyouga/LLaMA-Factory @ ff6d4d12 hparams/parser.py _parse_args): the same parse_dict, with
#   allow_extra_keys only under the ALLOW_EXTRA_ARGS environment variable;
# - accelerate 1.16 (commands/config/config_args.py BaseConfig.from_yaml_file / from_json_file): "had unknown keys";
# - axolotl (axolotl-ai-cloud/axolotl @ 067b021c utils/config/__init__.py validate_config): AxolotlInputConfig is a
#   pydantic model with the default extra="ignore" (model_config sets only populate_by_name) and no plugin declares
#   these keys, so model_dump drops them before anything reads the config;
# - torchtune (pytorch/torchtune @ bd2a0fc7): config/_parse.py loads every key into the DictConfig and a recipe reads
#   only the keys it asks for; no recipe or module names Liger, Cut Cross-Entropy or gradient_checkpointing_kwargs;
# - DeepSpeed (runtime/config.py DeepSpeedConfig): each setting is read by its own name (get_scalar_param), so a key
#   it does not name is never read.
# LLaMA-Factory's use_galore / use_apollo (hparams/finetuning_args.py GaloreArguments / ApolloArguments @ ff6d4d12,
# _llama_factory_optimizers) are foreign keys too: transformers' own GaLore / APOLLO is `optim: galore_adamw` /
# `apollo_adamw` with optim_target_modules (trainer_optimizer.py _setup_low_rank_optimizer; HF_OPTIM, _low_rank), which
# axolotl passes on from `optimizer:` (utils/schemas/training.py optim_target_modules @ 067b021c).
FOREIGN_KEYS = ("use_liger_kernel", "enable_liger_kernel", "liger_fused_linear_cross_entropy", "cut_cross_entropy",
                "optimizer_in_bwd", "enable_activation_offloading", "gradient_checkpointing_kwargs", "use_galore",
                "use_apollo")
FOREIGN_HOMES = {"gradient_checkpointing_kwargs": (HF, AX, LF),  # TrainingArguments' (_gc_kwargs_llama_factory)
                 "use_liger_kernel": (HF, LF), "enable_liger_kernel": (LF,), "liger_fused_linear_cross_entropy": (AX,),
                 "cut_cross_entropy": (AX,), "optimizer_in_bwd": (TT,), "enable_activation_offloading": (TT,),
                 "use_galore": (LF,), "use_apollo": (LF,)}
_LOW_RANK_FIX = "use optim: {0}_adamw with optim_target_modules (transformers' own {1})"
FOREIGN_REFUSED = {
    HF: "not a TrainingArguments / TRL key: HfArgumentParser refuses a file with keys it does not take, and so does "
        "`trl <command> --config` (accelerate launch: \"unrecognized arguments\")",
    LF: "not a LLaMA-Factory key: its parser refuses a file with keys it does not take (hparams/parser.py _parse_args, "
        "unless ALLOW_EXTRA_ARGS is set, when it changes nothing)",
    "accelerate": "not an accelerate setting: accelerate refuses a config file with unknown keys (config_args.py)",
}
FOREIGN_FIXES = {
    HF: {"enable_liger_kernel": "use use_liger_kernel: true",
         "liger_fused_linear_cross_entropy": "use use_liger_kernel: true (its liger_kernel_config fuses the linear "
                                             "cross-entropy by default)",
         "cut_cross_entropy": "transformers and TRL have no Cut Cross-Entropy option; remove it",
         "optimizer_in_bwd": "the Trainer has no optimizer step in backward; remove it",
         "enable_activation_offloading": "use TRL's activation_offloading: true",
         "use_galore": _LOW_RANK_FIX.format("galore", "GaLore"),
         "use_apollo": _LOW_RANK_FIX.format("apollo", "APOLLO")},
    LF: {"liger_fused_linear_cross_entropy": "use enable_liger_kernel: true",
         "cut_cross_entropy": "LLaMA-Factory has no Cut Cross-Entropy option; remove it",
         "optimizer_in_bwd": "LLaMA-Factory has no optimizer step in backward; remove it",
         "enable_activation_offloading": "LLaMA-Factory's offloaded checkpointing is use_unsloth_gc: true"},
}
FOREIGN_UNREAD = {
    AX: ("axolotl", "its config model drops the keys it does not declare (utils/config/__init__.py validate_config)"),
    TT: ("torchtune", "no recipe asks for it (config/_parse.py only loads the file)"),
    "deepspeed": ("DeepSpeed", "it reads the settings it names only (runtime/config.py)"),
}
FOREIGN_HINTS = {
    AX: {"use_liger_kernel": "axolotl's Liger keys are liger_rope, liger_rms_norm, liger_glu_activation and "
                             "liger_fused_linear_cross_entropy, with plugins: [axolotl.integrations.liger.LigerPlugin]",
         "enable_liger_kernel": "axolotl's Liger keys are liger_rope, liger_rms_norm, liger_glu_activation and "
                                "liger_fused_linear_cross_entropy, with plugins: "
                                "[axolotl.integrations.liger.LigerPlugin]",
         "enable_activation_offloading": "axolotl's is activation_offloading: true",
         "use_galore": "axolotl's GaLore is optimizer: galore_adamw with optim_target_modules",
         "use_apollo": "axolotl's APOLLO is optimizer: apollo_adamw with optim_target_modules"},
    TT: {"gradient_checkpointing_kwargs": "torchtune's checkpointing is enable_activation_checkpointing"},
    "deepspeed": {},
}


def _foreign_keys(tool: str, d: dict[str, Any], run: Run) -> None:
    """FOREIGN_KEYS in a file of a tool that is not theirs: refused in one line where that tool refuses the file,
    mapped with a "no memory change" note where it never reads them (unset: left to the ignored keys)."""
    for key in FOREIGN_KEYS:
        if key not in d or tool in FOREIGN_HOMES[key]:
            continue
        if tool in FOREIGN_REFUSED:
            fix = FOREIGN_FIXES.get(tool, {}).get(key, "put it in the training tool's own config")
            raise _KeyProblem(key, f"{FOREIGN_REFUSED[tool]}; {fix}")
        if _is_set(d[key]):
            name, why = FOREIGN_UNREAD[tool]
            hint = FOREIGN_HINTS[tool].get(key)
            run.notes.append(f"{key}: no memory change: {name} never reads it; {why}" + (f"; {hint}." if hint else "."))
            run.mapped.append(key)


# ---- axolotl --------------------------------------------------------------------------------------------


# axolotl embeddings_skip_upcast (axolotl-ai-cloud/axolotl @ 002a637c src/axolotl/loaders/model.py
# _configure_embedding_dtypes; @ 0f7f036d monkeypatch/peft/utils.py patch_peft_prep_code). Without it, the norms and
# get_linear_embedding_layers' modules (embed_tokens, lm_head) go to fp32, then prepare_model_for_kbit_training casts
# every 16-bit non-Params4bit parameter to fp32; with it (and load_in_4bit), the embeddings are left out of the first
# cast and peft's loop is patched to skip names containing embed_tokens / lm_head. Then, for any LoRA / QLoRA adapter
# outside FSDP (needs_fa2_dtype, should_convert), _convert_embedding_modules_dtype casts the norms and the embedding
# modules back to the training dtype. Either way the step starts with 16-bit norms, embed_tokens and lm_head: the key
# removes only a load-time fp32 copy of the embeddings. (gpt_neox, falcon and nemotron_h name their embeddings
# otherwise: there the patched loop casts them to fp32 and, the embedding list emptied, nothing casts them back.)
EMBEDDINGS_SKIP_UPCAST_NOTE = (
    "embeddings_skip_upcast: no memory change in the step: for LoRA / QLoRA axolotl casts the norms, embed_tokens and "
    "lm_head back to the training dtype after prepare_model_for_kbit_training whether it is set or not (loaders/"
    "model.py _configure_embedding_dtypes); it skips only a load-time fp32 copy of the embeddings.")

# axolotl QLoRA (loaders/model.py ModelLoader._configure_embedding_dtypes, _prepare_model_for_quantization,
# _convert_embedding_modules_dtype): after peft's prepare_model_for_kbit_training has cast every non-quantized
# parameter to fp32, every module whose name holds "norm" and the embedding modules (embed_tokens, lm_head) go back to
# the training dtype for LoRA / QLoRA (needs_fa2_dtype); with FSDP or ZeRO-3 the preparation is skipped. So the step
# holds them 16-bit: --no-kbit-prep. What the preparation upcast and axolotl leaves fp32 (the quantized Linears'
# biases, MoE routers) is counted 16-bit, 2 B short per parameter: 258 KB on Qwen2.5-7B (28 layers x 4,608 q/k/v
# bias values), 2.1 MB on Mixtral-8x7B (32 routers of 4,096 x 8).
# Untied models whose input embedding get_linear_embedding_layers (utils/lora_embeddings.py: embed_in / embed_out for
# gpt_neox, word_embeddings for falcon, embeddings for nemotron_h, else embed_tokens / lm_head) does not name: it keeps
# the fp32 of the preparation. (GPT-2, GPT-BigCode, BLOOM and Mamba name theirs otherwise too, but tie it to lm_head,
# which is cast back, and the cast reaches the shared weight.)
AXOLOTL_FP32_EMBEDDING_FAMILIES = ("gptj",)
AXOLOTL_OTHER_EMBEDDING_NAMES = ("gpt_neox", "falcon", "nemotron_h")
AXOLOTL_KBIT_NOTE = (
    "axolotl QLoRA: the norms, embed_tokens and lm_head are cast back to the training dtype after "
    "prepare_model_for_kbit_training (loaders/model.py _configure_embedding_dtypes), so they are counted 16-bit "
    "(--no-kbit-prep); the quantized Linears' biases, MoE routers and norms not named *norm* (GPT-2's ln_*) that "
    "axolotl leaves in fp32 are counted 16-bit too (approximate: at most a few MB under).")


def _kbit_axolotl(run: Run, path: Path, skip_upcast: bool) -> None:
    """axolotl QLoRA's 16-bit norms, embeddings and head (AXOLOTL_KBIT_NOTE): --no-kbit-prep, except where an input
    embedding stays fp32 after the preparation, where --kbit-prep's fp32 count is kept (the safe side) with a note:
    GPT-J's untied wte, which get_linear_embedding_layers does not name; and, with embeddings_skip_upcast, the
    embeddings not named embed_tokens (GPT-NeoX, Falcon, Nemotron-H: the patched preparation upcasts them and the
    emptied module list casts nothing back)."""
    try:
        family = resolve_model(run.model or "", path.parent)[0].family
    except VramcalcError:
        family = None  # refused where the run is estimated
    if family in SUBCLASSED_LINEAR_FAMILIES:
        # bitsandbytes quantizes no FalconLinear (core/memory/unreplaced.py): prepare_model_for_kbit_training makes them
        # fp32 and axolotl casts back only the norms and embeddings
        run.notes.append(f"axolotl QLoRA on {family}: bitsandbytes leaves its Linears unquantized and "
                         "prepare_model_for_kbit_training makes them fp32; axolotl casts back only the norms and "
                         "embeddings, counted fp32 too (--kbit-prep: over by 2 B a parameter there, the safe side).")
        return
    if family in AXOLOTL_FP32_EMBEDDING_FAMILIES or (skip_upcast and family in AXOLOTL_OTHER_EMBEDDING_NAMES):
        run.notes.append(f"axolotl QLoRA on {family}: its input embedding is not among the modules axolotl casts back "
                         "after prepare_model_for_kbit_training, so it stays fp32; the norms, embedding and head are "
                         "counted fp32 (--kbit-prep: over by 2 B a parameter where they are 16-bit, the safe side).")
        return
    run.options["kbit_prep"] = False
    run.notes.append(AXOLOTL_KBIT_NOTE)


# axolotl-ai-cloud/axolotl @ 067b021c utils/config/__init__.py normalize_config (after validate_config): with
# gradient_checkpointing on and no gradient_checkpointing_kwargs, unfrozen_parameters or rl, the keywords become
# {use_reentrant: true}; on gemma4 / gemma4_unified use_reentrant is forced false (DDP's "marked ready twice").
# With rl or unfrozen_parameters they stay unset, and core/builders/base.py gives TrainingArguments
# {use_reentrant: false}. selective_checkpointing's wrapper (monkeypatch/selective_checkpointing.py) forces
# use_reentrant false on every enable call.
AXOLOTL_NON_REENTRANT_TYPES = ("gemma4", "gemma4_unified")
AXOLOTL_REENTRANT_DEFAULT_NOTE = ("gradient_checkpointing: axolotl checkpoints with its default keywords "
                                  "{use_reentrant: true} (utils/config/__init__.py normalize_config): counted as "
                                  "--reentrant-gc; set gradient_checkpointing_kwargs: {use_reentrant: false} for "
                                  "non-reentrant.")


def _gc_kwargs_axolotl(d: dict[str, Any], run: Run, path: Path) -> Any:
    """gradient_checkpointing_kwargs as axolotl's normalize_config leaves them (comment above): the file's, or its
    default where checkpointing is on (a JSON string is left to the caller)."""
    raw = d.get("gradient_checkpointing_kwargs")
    if not _flag(AX, d.get("gradient_checkpointing"), "gradient_checkpointing"):
        return raw
    if raw is None and not _is_set(d.get("rl")) and d.get("unfrozen_parameters") is None:
        raw = {"use_reentrant": True}
    forced = _is_set(d.get("selective_checkpointing")) or _family(run, path) in AXOLOTL_NON_REENTRANT_TYPES
    if forced and (raw is None or isinstance(raw, dict)):
        raw = {**(raw or {}), "use_reentrant": False}
    return raw


def _axolotl(d: dict[str, Any], _path: Path) -> Run:
    # Keys from axolotl's config reference (docs/config-reference.qmd): base_model, adapter, load_in_4bit,
    # load_in_8bit, lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_target_linear, sequence_len,
    # micro_batch_size, gradient_accumulation_steps, gradient_checkpointing, optimizer, bf16, fp16.
    run = Run(model=str(d["base_model"]), mapped=["base_model"])
    if _is_set(d.get("gptq")):
        # axolotl loaders/model.py _set_quantization_config: GPTQConfig from the checkpoint's quantization_config (its
        # loaders quantize on the fly with bitsandbytes only; no HQQ)
        raise _KeyProblem("gptq", "a GPTQ checkpoint's storage and its QuantLinear kernels' saved tensors are not "
                          "modelled; use load_in_4bit / load_in_8bit on the 16-bit model, or remove it")
    adapter = _choice(AX, d, "adapter", None)  # or remove it for full fine-tuning
    if adapter in ("lora", "qlora"):
        run.mapped.append("adapter")
        four, eight = _flag(AX, d.get("load_in_4bit"), "load_in_4bit"), _flag(AX, d.get("load_in_8bit"), "load_in_8bit")
        if adapter == "qlora" or four:
            run.options.update(method="qlora", quant_bits=4)
        elif eight:
            run.options.update(method="qlora", quant_bits=8)  # 8-bit base with LoRA adapters
        else:
            run.options["method"] = "lora"
        if run.options["method"] == "qlora":
            _kbit_axolotl(run, _path, bool(_flag(AX, d.get("embeddings_skip_upcast"), "embeddings_skip_upcast")))
        run.mapped += [k for k in ("load_in_4bit", "load_in_8bit") if k in d]
    else:
        run.options["method"] = "full"
    _axolotl_retired(d, run)
    _take(d, run, "lora_r", "lora_rank", int)
    _take(d, run, "lora_alpha", "lora_alpha", float)
    _take(d, run, "lora_dropout", "lora_dropout", float)
    if _flag(AX, d.get("lora_target_linear"), "lora_target_linear"):
        run.options["lora_targets"] = "all-linear"
        run.mapped.append("lora_target_linear")
    else:
        _take(d, run, "lora_target_modules", "lora_targets", _targets)
    _lora_variants(AX, d, run, "peft_use_dora", "lora_modules_to_save")
    _lora_layers_axolotl(d, run)
    _take(d, run, "sequence_len", "seq_len", int)
    _take(d, run, "micro_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    # axolotl gradient_checkpointing (a boolean, or offload / offload_disk), activation_offloading: _offloading_axolotl
    offloading = _offloading_axolotl(d, run)
    if offloading:
        # the keywords reach torch only through the loader (LoRA / QLoRA): _gc_offload_axolotl, after the
        # multi-GPU keys, which decide whether peft's preparation replaces them
        _seen(d, run, "gradient_checkpointing_kwargs")
    else:
        # axolotl core/builders/base.py _configure_gradient_checkpointing passes the keywords normalize_config left
        # (_gc_kwargs_axolotl) to TrainingArguments, and the Trainer's activation_checkpointing_enable at train() is
        # the last to set the checkpoint function (after the loader's and peft's kbit preparation's for LoRA /
        # QLoRA): read as transformers reads them (_checkpointing_kwargs)
        given = _gc_kwargs_axolotl(d, run, _path)
        gkw = _checkpointing_kwargs(d, run, "gradient_checkpointing_kwargs", given=given)
        if run.options.get("grad_checkpointing"):
            run.options.update(gkw)
            if d.get("gradient_checkpointing_kwargs") is None and gkw.get("reentrant_gc"):
                run.notes.append(AXOLOTL_REENTRANT_DEFAULT_NOTE)
    _savers_axolotl(d, run)
    _vocab_axolotl(d, run)
    _preference_axolotl(d, run)
    if "optimizer" in d:
        _optim(run, "optimizer", d["optimizer"])
        _low_rank(d, run)  # axolotl passes optim_target_modules and optim_args to TrainingArguments
    # axolotl loads the model in the training dtype (torch_dtype = bfloat16 when bf16 is set), so the
    # Trainer's torch AdamW keeps states like the parameters: pure-bf16 / pure-fp16 here.
    if _flag(AX, d.get("bf16"), "bf16"):  # auto: bf16 where the GPU has it
        run.options["precision"] = "pure-bf16" if run.options["method"] == "full" else "bf16"
        run.mapped.append("bf16")
    elif _flag(AX, d.get("fp16"), "fp16"):
        run.options["precision"] = "pure-fp16" if run.options["method"] == "full" else "fp16"
        run.mapped.append("fp16")
    if _flag(AX, d.get("embeddings_skip_upcast"), "embeddings_skip_upcast"):
        run.notes.append(EMBEDDINGS_SKIP_UPCAST_NOTE)
    _seen(d, run, "embeddings_skip_upcast")
    if _flag(AX, d.get("eager_attention"), "eager_attention"):
        run.options["attention"] = "eager"
        run.mapped.append("eager_attention")
    _attention_axolotl(d, run)
    _kernels_axolotl(d, run)
    _lisa_axolotl(d, run)
    if _flag(AX, d.get("sample_packing"), "sample_packing"):
        # axolotl multipack (utils/collators/batching.py V2BatchSamplerDataCollatorForSeq2Seq): rows of
        # sequence_len filled with several sequences, position_ids restarting per sequence.
        run.options["packing"] = "packed"
        run.mapped.append("sample_packing")
    _context_parallel_axolotl(d, run)
    half = run.options.get("precision", "").removeprefix("pure-")
    if _hf_multi_gpu(d, _path, run) and half in ("bf16", "fp16") and run.options["method"] == "full":
        run.options["precision"] = f"mixed-{half}"  # ZeRO / FSDP mixed precision keep fp32 masters
    _gc_offload_axolotl(d, run, offloading, _path)
    _unfrozen_axolotl(d, run, _path)
    _lora_kernels_axolotl(d, run, _path)
    _fp8_keys(AX, d, run)
    _torch_compile(AX, d, run)
    if run.options.get("precision") in ("bf16", "fp16") and run.options["method"] in ("lora", "qlora"):
        # axolotl-ai-cloud/axolotl @ b78dab1e src/axolotl/loaders/adapter.py load_lora: get_peft_model with peft's
        # default autocast_adapter_dtype=True unless peft_autocast_adapter_dtype is set: fp32 adapters over the
        # 16-bit load (loaders/model.py @ ae7395e9 casts the norms and embeddings in _configure_embedding_dtypes,
        # before _load_adapters), and the Trainer's bf16 / fp16 flag runs the step under autocast
        _autocast16(run, _path, run.options["precision"], "axolotl", {})
    _foreign_keys(AX, d, run)
    return _finish(d, run)


# fp8_backend te / msamp (LLaMA-Factory, hparams/training_args.py Fp8Arguments): Transformer Engine's modules
# (te.Linear keeps fp8 weight copies and amax histories and saves fp8 inputs) are not modelled, and accelerate 1.16
# has no MS-AMP backend at all (utils/dataclasses.py FP8BackendType: NO, TE, AO).
FP8_BACKENDS = {"te": "Transformer Engine's modules keep fp8 weight copies and amax histories and save fp8 inputs",
                "msamp": "accelerate 1.16 has no MS-AMP backend, only TE and AO"}
FP8_BACKEND_REFUSAL = "{backend} is not modelled ({why}); use fp8_backend: torchao (--fp8 rowwise)"
# axolotl fp8_enable_fsdp_float8_all_gather (axolotl-ai-cloud/axolotl core/trainers/base.py
# additional_accelerator_args since monkeypatch/trainer_accelerator_args.py passes it: Float8LinearConfig(
# enable_fsdp_float8_all_gather=..., force_recompute_fp8_weight_in_bwd=...); @ 70be5461 it passed AORecipeKwargs(),
# whose config accelerate 1.16 builds with the all-gather on, whatever the key): torchao float8_linear.py wraps
# each swapped weight in fsdp_utils.py WeightWithDynamicFloat8CastTensor, whose fsdp_pre_all_gather casts the shard
# to float8 so FSDP2 gathers 1 byte per element plus one fp32 scale per weight;
# --fp8 is modelled on unsharded weights only (memory/fp8.py check), and the recompute flag changes the saved set
# (float8_linear.py Float8Linear.forward, tensorwise: the weight's fp8 cast runs under torch.utils.checkpoint).
FP8_ALL_GATHER_REFUSAL = ("FSDP2's float8 all-gather (torchao fsdp_utils.py WeightWithDynamicFloat8CastTensor: "
                          "weights gathered as fp8 bits plus a scale) and the force_recompute_fp8_weight_in_bwd "
                          "axolotl sets with it are not modelled (--fp8 is modelled on unsharded weights); set it "
                          "false")
# LLaMA-Factory fp8_enable_fsdp_float8_all_gather (hiyouga/LLaMA-Factory @ 7f564fdb src/llamafactory/train/
# fp8_utils.py): create_fp8_kwargs only logs it, and configure_fp8_environment sets FP8_ENABLE_FSDP_FLOAT8_ALL_GATHER,
# an environment variable accelerate never reads (1.16 reads ACCELERATE_FP8_ENABLE_FSDP_FLOAT8_ALL_GATHER, and only
# when AORecipeKwargs has no config; create_fp8_kwargs builds a rowwise one, which torchao config.py
# Float8LinearConfig.__post_init__ forbids with the all-gather: tensorwise only).
FP8_ALL_GATHER_LF_NOTE = ("fp8_enable_fsdp_float8_all_gather: no memory change: LLaMA-Factory only logs it and sets "
                          "FP8_ENABLE_FSDP_FLOAT8_ALL_GATHER, an environment variable accelerate does not read.")


# axolotl's offloaded checkpointing as axolotl-ai-cloud/axolotl @ 067b021c runs it:
# - utils/schemas/config.py: gradient_checkpointing takes true, false, "offload", "offload_disk" (no "unsloth": pydantic
#   refuses it); activation_offloading true, false, "legacy", "disk", "hidden_states".
# - utils/schemas/validation.py check_gradient_checkpointing_w_offload: "offload" becomes gradient_checkpointing true
#   with activation_offloading true, "offload_disk" the same with activation_offloading "disk" (whatever
#   activation_offloading said); check_activation_offloading_wo_gc raises when offloading is on without checkpointing.
# - core/trainers/mixins/activation_checkpointing.py ActivationOffloadingMixin: true and "disk" both run TRL's
#   OffloadActivations (trl/models/activation_offloading.py, torchtune's, use_streams=True: pinned host RAM, a 5-tensor
#   stash) around training_step, the output head under NoOpManager; "disk" only differs in loaders/patch_manager.py,
#   whose disk wrapper is installed for activation_offloading == "offload_disk", a value the validator never leaves.
#   "legacy" (synchronous OffloadActivations beside the hf_grad_checkpoint_offload_wrapper patched into
#   transformers.modeling_utils.checkpoint) and "hidden_states" (monkeypatch/checkpoint_activation_offload.py) are
#   other offloads, refused.
# - the checkpointing under it: core/builders/base.py _configure_gradient_checkpointing gives TrainingArguments
#   gradient_checkpointing false and no keywords; a full fine-tune gets loaders/model.py _apply_activation_checkpointing
#   (ac_wrap_hf_model: torch's non-reentrant checkpoint_wrapper on every GradientCheckpointingLayer, no keywords), the
#   torchtune layout --grad-checkpointing --activation-offload models (memory/savers.py); LoRA / QLoRA get the loader's
#   model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=...) (_configure_embedding_dtypes), with
#   utils/config/__init__.py normalize_config's default {use_reentrant: true} when the file gives none (and neither rl
#   nor unfrozen_parameters is set), or peft 0.21's prepare_model_for_kbit_training re-enabling it with {} (QLoRA /
#   8-bit where it runs: torch 2.13's default, reentrant). transformers 5.24 hands that dict to torch.utils.checkpoint
#   whole (every_n_layers and offload are popped by the Trainer only): torch raises "Unexpected keyword arguments" for
#   any other keyword under reentrant checkpointing and passes it to the decoder layer, which ignores it, without.
#   Reentrant checkpointing under the offload is counted as non-reentrant (--reentrant-gc with --activation-offload is
#   not modelled): its rerun runs under OffloadActivations too (the mixin wraps the backward), so the rerun layer's
#   saved tensors go to the host node by node instead of staying whole: the count is on the safe side (measured with
#   the tracer, docs/accuracy.md --grid axooff).
AXOLOTL_OFFLOAD_NOTE = ("{key}: axolotl 067b021c runs TRL's OffloadActivations (streamed, pinned host RAM) over "
                        "checkpointed layers{disk}: counted as --grad-checkpointing --activation-offload.")
AXOLOTL_OFFLOAD_REFUSALS = {
    "legacy": "legacy (axolotl's synchronous OffloadActivations beside its hf_grad_checkpoint_offload_wrapper) is not "
              "modelled; use activation_offloading: true",
    "hidden_states": "hidden_states (axolotl's offload of the checkpoints' inputs, monkeypatch/"
                     "checkpoint_activation_offload.py) is not modelled; use activation_offloading: true"}
AXOLOTL_GC_UNSLOTH_REFUSAL = ("'unsloth' is not a value axolotl takes (utils/schemas/config.py: true, false, offload, "
                              "offload_disk); for offloaded checkpointing write activation_offloading: true")
AXOLOTL_OFFLOAD_WO_GC_REFUSAL = ("axolotl refuses activation offloading without checkpointing (\"activation_offloading "
                                 "requires gradient_checkpointing\"); add gradient_checkpointing: true")
AXOLOTL_GC_KWARGS_UNREAD = ("gradient_checkpointing_kwargs: no memory change: under axolotl's activation offloading "
                            "{why}.")
AXOLOTL_REENTRANT_NOTE = ("gradient_checkpointing_kwargs: axolotl checkpoints LoRA layers {how} under its activation "
                          "offloading; counted as non-reentrant (approximate: the reentrant rerun is offloaded too, "
                          "so the count is on the safe side).")
AXOLOTL_GC_KWARG_REFUSAL = ("{keys}: with activation offloading axolotl's loader hands the keywords to "
                            "torch.utils.checkpoint whole (transformers 5.24 gradient_checkpointing_enable pops none), "
                            "which raises \"Unexpected keyword arguments\" under reentrant checkpointing; remove "
                            "{them}, or set use_reentrant: false")
AXOLOTL_GC_KWARG_IGNORED = ("gradient_checkpointing_kwargs: {keys}: no memory change: with activation offloading "
                            "axolotl's loader hands the keywords to torch.utils.checkpoint whole, which passes {them} "
                            "to the decoder layer's forward, which ignores {them}.")
# torch 2.13 utils/checkpoint.py checkpoint's own keywords (the rest are the function's, refused under reentrant)
_TORCH_CHECKPOINT_KEYWORDS = ("use_reentrant", "preserve_rng_state", "determinism_check", "debug", "early_stop")


def _offloading_axolotl(d: dict[str, Any], run: Run) -> bool | str:
    """axolotl gradient_checkpointing and activation_offloading read as validated at 067b021c (comment above): sets
    --grad-checkpointing (and --activation-offload), returns the activation_offloading axolotl runs (False: none)."""
    if isinstance(d.get("gradient_checkpointing"), str) and d["gradient_checkpointing"].strip().lower() == "unsloth":
        raise _KeyProblem("gradient_checkpointing", AXOLOTL_GC_UNSLOTH_REFUSAL)
    checkpointing = _flag(AX, d.get("gradient_checkpointing"), "gradient_checkpointing")
    offloading = _flag(AX, d.get("activation_offloading"), "activation_offloading")
    if "gradient_checkpointing" in d and d["gradient_checkpointing"] is not None:
        run.options["grad_checkpointing"] = bool(checkpointing)
        run.mapped.append("gradient_checkpointing")
    _seen(d, run, "activation_offloading")
    key = "activation_offloading"
    if checkpointing in ("offload", "offload_disk"):  # check_gradient_checkpointing_w_offload
        key = f"gradient_checkpointing: {checkpointing}"
        offloading = True if checkpointing == "offload" else "disk"
    if not offloading:
        return False
    if not checkpointing:
        raise _KeyProblem("activation_offloading", AXOLOTL_OFFLOAD_WO_GC_REFUSAL)
    if offloading in AXOLOTL_OFFLOAD_REFUSALS:
        raise _KeyProblem("activation_offloading", AXOLOTL_OFFLOAD_REFUSALS[str(offloading)])
    run.options.update(grad_checkpointing=True, activation_offload=True)
    run.notes.append(AXOLOTL_OFFLOAD_NOTE.format(
        key=key, disk=" (for disk as for true: no disk offload is installed)" if offloading == "disk" else ""))
    return offloading


def _gc_offload_axolotl(d: dict[str, Any], run: Run, offloading: bool | str, path: Path) -> None:
    """gradient_checkpointing_kwargs under axolotl's activation offloading, read as axolotl @ 067b021c runs them
    (comment above): a note where they change nothing or are counted apart, refused where the run crashes."""
    if not offloading:
        return
    raw = d.get("gradient_checkpointing_kwargs")
    if run.options.get("method") == "full":
        if raw:
            run.notes.append(AXOLOTL_GC_KWARGS_UNREAD.format(
                why="a full fine-tune wraps the layers with torch's checkpoint_wrapper and passes no keywords on "
                    "(core/builders/base.py, loaders/model.py ac_wrap_hf_model)"))
        return
    fsdp = _is_set(d.get("fsdp_config")) or _is_set(d.get("fsdp"))
    fsdp_cfg = d.get("fsdp_config") if isinstance(d.get("fsdp_config"), dict) else {}
    efficient = any(_is_set(fsdp_cfg.get(k)) for k in ("cpu_ram_efficient_loading", "fsdp_cpu_ram_efficient_loading"))
    peft_cfg = d.get("peft") if isinstance(d.get("peft"), dict) else {}
    loftq = isinstance(peft_cfg.get("loftq_config"), dict) and _is_set(peft_cfg["loftq_config"].get("loftq_bits"))
    skip_prep = (fsdp and (d.get("adapter") == "qlora" or efficient)) or run.options.get("zero") == 3 or (
        d.get("adapter") == "lora" and loftq)
    if run.options.get("method") == "qlora" and not skip_prep:
        if raw:
            run.notes.append(AXOLOTL_GC_KWARGS_UNREAD.format(
                why="peft's prepare_model_for_kbit_training re-enables checkpointing with its own empty keywords "
                    "(loaders/model.py _prepare_model_for_quantization)"))
        run.notes.append(AXOLOTL_REENTRANT_NOTE.format(how="reentrant (peft's {}: torch's default)"))
        return
    kw = _gc_kwargs_axolotl(d, run, path)  # normalize_config's default
    kw = json.loads(kw) if isinstance(kw, str) else kw
    if kw is None:  # rl or unfrozen_parameters: none, i.e. transformers' {"use_reentrant": False}
        kw = {"use_reentrant": False}
    if not isinstance(kw, dict):
        raise _KeyProblem("gradient_checkpointing_kwargs", "give a mapping of torch.utils.checkpoint keywords, e.g. "
                          "{use_reentrant: false}")
    reentrant = kw.get("use_reentrant", True)  # absent: torch 2.13's default
    if not isinstance(reentrant, bool):
        raise _KeyProblem("gradient_checkpointing_kwargs", f"use_reentrant {reentrant!r:.30} is not a boolean; use "
                          "true or false")
    extra = sorted(str(k) for k in set(kw) - set(_TORCH_CHECKPOINT_KEYWORDS))
    them = "it" if len(extra) == 1 else "them"
    if extra and reentrant:
        raise _KeyProblem("gradient_checkpointing_kwargs", AXOLOTL_GC_KWARG_REFUSAL.format(keys=", ".join(extra),
                                                                                           them=them))
    if extra:
        run.notes.append(AXOLOTL_GC_KWARG_IGNORED.format(keys=", ".join(extra), them=them))
    if reentrant and kw.get("debug"):
        raise _KeyProblem("gradient_checkpointing_kwargs", "torch.utils.checkpoint refuses debug with use_reentrant "
                          "true; drop one of them")
    if kw.get("early_stop", True) is not True and not reentrant:
        raise _KeyProblem("gradient_checkpointing_kwargs", "early_stop false under axolotl's activation offloading "
                          "is not modelled (--no-ac-early-stop with --activation-offload); remove it")
    if reentrant:
        run.notes.append(AXOLOTL_REENTRANT_NOTE.format(how="reentrant (use_reentrant true" + (
            ", axolotl's default)" if raw is None else ")")))


def _fp8_keys(tool: str, d: dict[str, Any], run: Run) -> None:
    """fp8 through accelerate's torchao backend (--fp8, memory/fp8.py): axolotl's is torchao's tensorwise recipe
    under accelerate's default filter (axolotl-ai-cloud/axolotl @ 70be5461 src/axolotl/core/trainers/base.py
    additional_accelerator_args: Float8LinearConfig()); LLaMA-Factory's the rowwise recipe under its own name filter
    (hiyouga/LLaMA-Factory @ 7f564fdb src/llamafactory/train/fp8_utils.py create_fp8_kwargs), for fp8_backend auto or
    torchao. With fp8 on, fp8_backend te / msamp and axolotl's FSDP float8 all-gather are refused in one line;
    LLaMA-Factory's all-gather key changes nothing (a note). With fp8 off, neither key is read by the tools."""
    on = _flag(tool, d.get("fp8"), "fp8")
    if on:
        run.options["fp8"] = "tensorwise" if tool == AX else "rowwise"
    backend = str(d.get("fp8_backend", "auto")).lower()
    if on and tool == LF and backend not in ("auto", "torchao"):
        raise _KeyProblem("fp8_backend", FP8_BACKEND_REFUSAL.format(
            backend=f"{backend:.20}", why=FP8_BACKENDS.get(backend, "not a torchao backend")))
    if _flag(tool, d.get("fp8_enable_fsdp_float8_all_gather"), "fp8_enable_fsdp_float8_all_gather") and on:
        if tool == AX:
            raise _KeyProblem("fp8_enable_fsdp_float8_all_gather", FP8_ALL_GATHER_REFUSAL)
        run.notes.append(FP8_ALL_GATHER_LF_NOTE)
    _seen(d, run, "fp8", *(("fp8_backend",) if tool == LF else ()), "fp8_enable_fsdp_float8_all_gather")


def _context_parallel_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl context_parallel_size (sequence_parallel_degree: its old name, utils/schemas/config.py) ->
    --context-parallel (memory/context_parallel.py). ring_attn_func: batch_ring (the default without sample
    packing) is modelled; varlen_llama3 (the packing default), batch_zigzag and batch_stripe are not. heads_k_stride is
    passed only to varlen_llama3 (monkeypatch/ring_attn/patch.py, commit 0763f1a): nothing under batch_ring."""
    new, old = d.get("context_parallel_size"), d.get("sequence_parallel_degree")
    if _is_set(new) and _is_set(old) and new != old:
        raise _KeyProblem("sequence_parallel_degree", f"{old!r:.20} differs from context_parallel_size {new!r:.20} "
                          "(its new name); keep context_parallel_size")
    for key in ("context_parallel_size", "sequence_parallel_degree"):
        _take(d, run, key, "context_parallel", int)
    func = d.get("ring_attn_func")
    if _is_set(func) and str(func) != "batch_ring":
        raise _KeyProblem("ring_attn_func", f"{func!r:.30} is not modelled: batch_ring is (varlen_llama3 comes with "
                          "sample_packing); use batch_ring with sample_packing: false")
    _seen(d, run, "ring_attn_func", "heads_k_stride")


def _unfrozen_axolotl(d: dict[str, Any], run: Run, path: Path) -> None:
    """axolotl unfrozen_parameters (src/axolotl/train.py setup_model_and_tokenizer calls utils/freeze.py
    freeze_layers_except on the loaded model): the patterns expanded against the model's parameter names
    (core/unfrozen.py expand_patterns) -> --method freeze --train-layers / --train-modules."""
    from vramcalc.core import unfrozen
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.lora_layers import text

    patterns = d.get("unfrozen_parameters")
    if not _is_set(patterns):
        _seen(d, run, "unfrozen_parameters")
        return
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(x, str) for x in patterns):
        raise _KeyProblem("unfrozen_parameters", "give a list of regular expressions over parameter names")
    if run.options.get("method") != "full":
        raise _KeyProblem("unfrozen_parameters", "with an adapter freeze_layers_except also freezes the adapters "
                          "(it runs on the PEFT model): not modelled; drop the adapter or unfrozen_parameters")
    spec, _ = resolve_model(run.model or "", path.parent)
    try:
        layers, outer, notes = unfrozen.expand_patterns(spec, patterns)
    except (ValueError, UnsupportedCombination) as e:
        raise _KeyProblem("unfrozen_parameters", str(e)) from None
    run.options.update(method="freeze", train_layers=text(layers) if layers else "none",
                       train_modules=",".join(outer) or "none")
    run.notes += notes
    run.mapped.append("unfrozen_parameters")


def _lisa_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl's LISAConfig (utils/schemas/integrations.py: lisa_n_layers, lisa_step_interval, lisa_layers_attribute
    default model.layers) -> --lisa-layers (memory/lisa.py). The interval only says when layers switch, not what a
    step holds; the attribute must name the decoder layers (model.layers, or transformer.h on GPT-2-style models),
    the only ModuleList the core models LISA over."""
    _seen(d, run, "lisa_step_interval", "lisa_layers_attribute")
    if not _is_set(d.get("lisa_n_layers")):
        _seen(d, run, "lisa_n_layers")
        return
    _take(d, run, "lisa_n_layers", "lisa_layers", int)
    where = d.get("lisa_layers_attribute")
    if where is not None and str(where).rsplit(".", 1)[-1] not in ("layers", "h"):
        raise _KeyProblem("lisa_layers_attribute", f"{str(where)!r:.60} is not a decoder-layer list (model.layers, "
                          "transformer.h); LISA is modelled over the decoder layers: use model.layers")


# axolotl's plugin keys (axolotl-ai-cloud/axolotl @ 067b021c): a plugin's args model (integrations/liger/args.py
# LigerArgs, integrations/cut_cross_entropy/args.py CutCrossEntropyArgs) joins the config schema only for the plugins
# `plugins:` lists (cli/config.py prepare_plugins registers them; utils/config/__init__.py validate_config calls
# integrations/config.py merge_input_args only `if cfg.plugins`), and AxolotlInputConfig keeps pydantic's default
# extra="ignore", so without its plugin the key is dropped by validate_config and nothing is patched.
# load_plugin (integrations/base.py) imports the module, retrying it under "axolotl.integrations.".
AX_PLUGINS = {
    "axolotl.integrations.liger.LigerPlugin": ("axolotl.integrations.liger.LigerPlugin",
                                               "liger.LigerPlugin", "axolotl.integrations.liger.plugin.LigerPlugin",
                                               "liger.plugin.LigerPlugin"),
    "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin": (
        "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",),
}
AX_PLUGIN_KEYS = {"axolotl.integrations.liger.LigerPlugin": ("liger_fused_linear_cross_entropy", "liger_cross_entropy",
                                                             *LIGER_LAYER_KEYS),
                  "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin": ("cut_cross_entropy",)}
AX_PLUGIN_NOTE = ("{keys}: no memory change: axolotl reads {them} only with its plugin listed (a plugin's args join "
                  "the config schema only for the plugins named, integrations/config.py merge_input_args; without it "
                  "validate_config drops {them}); add \"plugins: [{plugin}]\" to turn {them} on.")
# CutCrossEntropyArgs: cut_cross_entropy defaults to true once the plugin is listed
AX_CCE_DEFAULT_NOTE = ("cut_cross_entropy: on by default with CutCrossEntropyPlugin listed (integrations/"
                       "cut_cross_entropy/args.py: true unless set false): counted as --loss cut.")
# utils/schemas/validation.py check_cross_entropy_conflicts (a "before" validator over the file's own values, so
# whatever `plugins:` says): at most one of these may be on
AX_CE_KEYS = ("cut_cross_entropy", "chunked_cross_entropy", "liger_cross_entropy", "liger_fused_linear_cross_entropy")

# gradient_checkpointing_offload: no field of axolotl's config, in no commit of its history (git log -G over src/,
# docs/, examples/ up to 067b021c), so validate_config drops it (extra="ignore")
AX_GC_OFFLOAD_NOTE = ("gradient_checkpointing_offload: no memory change: not an axolotl key (its config model drops "
                      "the keys it does not declare, utils/config/__init__.py validate_config); axolotl's offloaded "
                      "checkpointing is gradient_checkpointing: offload, or activation_offloading: true.")


def _plugins_axolotl(d: dict[str, Any], run: Run) -> set[str]:
    """The axolotl plugins `plugins:` lists, by their canonical names (AX_PLUGINS); other plugins are not read."""
    raw = d.get("plugins")
    _seen(d, run, "plugins")
    if raw is None:
        return set()
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise _KeyProblem("plugins", "give a list of plugin classes, e.g. [axolotl.integrations.liger.LigerPlugin]")
    return {name for name, spellings in AX_PLUGINS.items() if set(spellings) & set(raw)}


def _savers_axolotl(d: dict[str, Any], run: Run) -> None:
    # axolotl integrations: liger (integrations/liger/args.py liger_fused_linear_cross_entropy) and
    # cut_cross_entropy (integrations/cut_cross_entropy/args.py); memory/loss.py. Each plugin key is read only with
    # its plugin listed (AX_PLUGINS); more than one loss key on is refused, as axolotl refuses it.
    run.options["stack"] = "axolotl"
    on = [k for k in AX_CE_KEYS if d.get(k)]  # check_cross_entropy_conflicts tests the raw values: `if v`
    if len(on) > 1:
        raise _KeyProblem(on[1], f"axolotl refuses it beside {on[0]} (utils/schemas/validation.py "
                          "check_cross_entropy_conflicts: one cross-entropy option at a time); keep one")
    plugins = _plugins_axolotl(d, run)
    for plugin, keys in AX_PLUGIN_KEYS.items():
        unread = [k for k in keys if _is_set(d.get(k))]
        if plugin not in plugins and unread:
            them = "it" if len(unread) == 1 else "them"
            run.notes.append(AX_PLUGIN_NOTE.format(keys=", ".join(unread), them=them, plugin=plugin))
    liger = "axolotl.integrations.liger.LigerPlugin" in plugins
    cut = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin" in plugins and (
        d.get("cut_cross_entropy") is None or _flag(AX, d.get("cut_cross_entropy"), "cut_cross_entropy"))
    if cut and d.get("cut_cross_entropy") is None:
        if _is_set(d.get("chunked_cross_entropy")):  # CutCrossEntropyArgs check_chunked_cross_entropy_not_set
            raise _KeyProblem("chunked_cross_entropy", "axolotl refuses it with CutCrossEntropyPlugin listed (\"Cut "
                              "Cross Entropy does not support chunked cross entropy\"); drop one of them")
        if liger and any(_is_set(d.get(k)) for k in ("liger_cross_entropy", "liger_fused_linear_cross_entropy")):
            raise _KeyProblem("plugins", "CutCrossEntropyPlugin turns cut_cross_entropy on by default, beside Liger's "
                              "cross-entropy: not modelled; set cut_cross_entropy: false, or keep one")
        run.notes.append(AX_CCE_DEFAULT_NOTE)
    if cut:
        run.options["loss"] = "cut"
    elif liger and _flag(AX, d.get("liger_fused_linear_cross_entropy"), "liger_fused_linear_cross_entropy"):
        run.options["loss"] = "fused-linear"
    elif liger and _flag(AX, d.get("liger_cross_entropy"), "liger_cross_entropy"):
        # integrations/liger/plugin.py @067b021c: cross_entropy=cfg.liger_cross_entropy, i.e. transformers'
        # loss_utils nn.functional.cross_entropy replaced by Liger's (memory/activations.py head_activations)
        run.options["loss"] = "liger-cross-entropy"
    elif _flag(AX, d.get("chunked_cross_entropy"), "chunked_cross_entropy"):
        # axolotl chunked_cross_entropy (monkeypatch/loss/chunked.py): the loss in num_chunks sequence chunks
        run.options["loss"] = "chunked"
        _take(d, run, "chunked_cross_entropy_num_chunks", "loss_chunks", int)
    _seen(d, run, "cut_cross_entropy", "liger_fused_linear_cross_entropy", "liger_cross_entropy",
          "chunked_cross_entropy")
    if _flag(AX, d.get("unsloth_cross_entropy_loss"), "unsloth_cross_entropy_loss"):
        run.notes.append(UNSLOTH_CE_NOTE)
    _seen(d, run, "unsloth_cross_entropy_loss")
    if liger:
        _liger_layers(AX, d, run, *LIGER_LAYER_KEYS)
    _seen(d, run, *LIGER_LAYER_KEYS)
    if _is_set(d.get("gradient_checkpointing_offload")):
        run.notes.append(AX_GC_OFFLOAD_NOTE)
        run.mapped.append("gradient_checkpointing_offload")


# axolotl's Unsloth kernel keys (utils/schemas/config.py: booleans), each one group of Unsloth's kernels patched on
# its own (monkeypatch/unsloth_.py at 1291d22d, loaders/patch_manager.py at b27e49f2): memory/unsloth.py, where the
# core refuses them on models axolotl does not patch (Llama only; unsloth_lora_mlp Llama and Mistral) and
# unsloth_lora_qkv / _o without flash attention (they rewrite LlamaFlashAttention2's forward).
AXOLOTL_KERNEL_KEYS = {"unsloth_lora_qkv": "qkv", "unsloth_lora_o": "o", "unsloth_lora_mlp": "mlp",
                       "unsloth_rms_norm": "norm", "unsloth_rope": "rope"}


def _kernels_axolotl(d: dict[str, Any], run: Run) -> None:
    chosen = [g for k, g in AXOLOTL_KERNEL_KEYS.items() if _flag(AX, d.get(k), k)]
    _seen(d, run, *AXOLOTL_KERNEL_KEYS)
    if chosen:
        run.options["kernels"] = kernels_value(chosen)


# axolotl's own LoRA kernels (kernels/lora.py LoRA_QKV / LoRA_O / LoRA_MLP; memory/axolotl_kernels.py), key -> group
AXOLOTL_LORA_KERNEL_KEYS = {"lora_qkv_kernel": "qkv", "lora_o_kernel": "o", "lora_mlp_kernel": "mlp"}
AXOLOTL_LORA_KERNEL_FIELDS = (*AXOLOTL_LORA_KERNEL_KEYS, "lora_embedding_kernel")
AXOLOTL_LORA_KERNEL_WHY = "axolotl's LoRA_QKV / LoRA_O / LoRA_MLP autograd functions (kernels/lora.py)"


def _axolotl_auto_kernels(d: dict[str, Any]) -> bool:
    """axolotl turns its LoRA kernels on by itself (utils/schemas/config.py check_auto_enable_lora_kernels at
    067b021c): adapter lora / qlora, not rl, not nvfp4_merge_aware, none of the four lora_*_kernel keys set, not LoRA
    with load_in_8bit, not trust_remote_code, and not FSDP1 (FSDP with fsdp_version other than 2; its multi-GPU test
    reads the machine: a file with fsdp_config is taken as multi-GPU). (Its MoE skip applies to torch < 2.9 only.) A
    file with the unsloth_* kernel keys is an older axolotl's (below)."""
    if _is_set(d.get("rl")) or _is_set(d.get("nvfp4_merge_aware")) or d.get("adapter") not in ("lora", "qlora"):
        return False
    if any(d.get(k) is not None for k in AXOLOTL_LORA_KERNEL_FIELDS):
        return False
    if any(_is_set(d.get(k)) for k in (*AXOLOTL_KERNEL_KEYS, "unsloth_cross_entropy_loss")):
        # an older axolotl's config: the current one refuses the unsloth_* keys (utils/schemas/validation.py
        # check_deprecated_unsloth_fields), so it is read as that version, the unsloth_* patches only
        return False
    if d.get("adapter") == "lora" and _flag(AX, d.get("load_in_8bit"), "load_in_8bit"):
        return False
    if _is_set(d.get("trust_remote_code")):
        return False
    cfg = d.get("fsdp_config")
    version = d.get("fsdp_version", cfg.get("fsdp_version") if isinstance(cfg, dict) else None)
    return cfg is None or str(version) == "2"


def _lora_kernels_axolotl(d: dict[str, Any], run: Run, path: Path) -> None:
    """axolotl's lora_*_kernel keys, or the kernels axolotl turns on by itself: `--kernels axolotl:GROUPS` where
    memory/axolotl_kernels.py models the run; a group whose projections are not all adapted is skipped as axolotl
    skips it (monkeypatch/lora_kernels.py: peft's layers, a warning); otherwise listed as not modelled."""
    auto = _axolotl_auto_kernels(d)
    chosen = [g for k, g in AXOLOTL_LORA_KERNEL_KEYS.items() if auto or _flag(AX, d.get(k), k)]
    embedding = auto or bool(_flag(AX, d.get("lora_embedding_kernel"), "lora_embedding_kernel"))
    _seen(d, run, *AXOLOTL_LORA_KERNEL_FIELDS)
    if not chosen and not embedding:
        return
    how = ("turned on by axolotl itself (utils/schemas/config.py check_auto_enable_lora_kernels: LoRA / QLoRA with "
           "no lora_*_kernel key)" if auto else "set by the lora_*_kernel keys")
    off = "set lora_qkv_kernel / lora_o_kernel / lora_mlp_kernel / lora_embedding_kernel: false to turn them off"
    targets = str(run.options.get("lora_targets", ""))
    if embedding and "embed_tokens" in targets:
        # _patch_embedding_layers: only an embed_tokens carrying a LoRA adapter runs LoRA_Embedding
        _unmodelled(run, "lora_embedding_kernel", "axolotl's LoRA_Embedding on the adapted embed_tokens "
                    "(kernels/lora.py)")
    if not chosen:
        return
    from dataclasses import fields

    from vramcalc.core.memory import axolotl_kernels
    from vramcalc.core.params import resolve_targets
    from vramcalc.core.specs import TrainingSpec

    known = {f.name for f in fields(TrainingSpec)}
    try:
        given = {k: coerce(BY_NAME[k], v) if k in BY_NAME else v for k, v in run.options.items() if k in known}
    except OptionError:
        given = {}
    if isinstance(given.get("lora_targets"), str):  # the option's comma-separated text (cli/options.py)
        given["lora_targets"] = tuple(x.strip() for x in given["lora_targets"].split(","))
    reason = None
    if "kernels" in run.options:
        reason = f"beside --kernels {run.options['kernels']} (one layer-kernel set per estimate)"
    else:
        try:
            spec, _ = resolve_model(run.model or "", path.parent)
            training = TrainingSpec(**given)
        except (VramcalcError, TypeError, ValueError):
            spec = None
            reason = "the model or the options could not be read to check where the kernels apply"
        if spec is not None:
            try:
                adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(spec, training.lora_targets)}
            except VramcalcError:
                adapted = set()
            skipped = [g for g in chosen if not set(axolotl_kernels.PROJECTIONS[g]) <= adapted]
            kept = [g for g in chosen if g not in skipped]
            if skipped:
                run.notes.append(f"axolotl LoRA kernels {','.join(skipped)}: not all of their projections carry an "
                                 "adapter, so axolotl keeps peft's layers there (monkeypatch/lora_kernels.py, a "
                                 "warning); counted as peft's.")
            if kept:
                trial = TrainingSpec(**{**given, "kernels": "axolotl:" + ",".join(kept)})
                reason = axolotl_kernels.why_not(spec, trial)
                if reason is None:
                    run.options["kernels"] = trial.kernels
                    run.notes.append(f"kernels {trial.kernels}: axolotl's LoRA kernels, {how}; {off}.")
                    return
            else:
                return
    for k, g in AXOLOTL_LORA_KERNEL_KEYS.items():
        if g in chosen:
            _unmodelled(run, k, f"{AXOLOTL_LORA_KERNEL_WHY}, {how}; not modelled here: {reason}; {off}")


def _attention_axolotl(d: dict[str, Any], run: Run) -> None:
    # axolotl schemas/model.py: flash_attention (flash_attention_2), sdp_attention (sdpa), eager_attention.
    if _flag(AX, d.get("flash_attention"), "flash_attention"):
        run.options["attention"] = "flash"
    elif _flag(AX, d.get("sdp_attention"), "sdp_attention"):
        run.options["attention"] = "sdpa"
    _seen(d, run, "flash_attention", "sdp_attention")


# ---- preference training (memory/preference.py) -------------------------------------------------------

# TRL DPOConfig loss_type values (trl/trainer/dpo_trainer.py _compute_loss): arithmetic on per-sequence
# log-probs, so none changes memory; ipo has its own objective name for clarity.
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# DPOConfig fields no SFTConfig has: their presence makes a TrainingArguments file a DPO run.
_DPO_KEYS = ("beta", "precompute_ref_log_probs", "precompute_ref_batch_size", "f_divergence_type", "ld_alpha",
             "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps", "use_weighting", "rpo_alpha",
             "ref_model_init_kwargs")


def _loss_types(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _dpo_objective(key: str, loss: Any) -> str:
    types = _loss_types(loss)
    unknown = [x for x in types if x not in DPO_LOSS_TYPES]
    if unknown:
        raise _KeyProblem(key, f"{unknown[0]!r:.40} is not a TRL DPO loss_type; use one of "
                          f"{', '.join(DPO_LOSS_TYPES)}")
    return "ipo" if types == ["ipo"] else "dpo"


# KTOConfig fields (trl/trainer/kto_config.py) and its loss types (kto needs the KL rows, apo_zero_unpaired not).
_KTO_KEYS = ("desirable_weight", "undesirable_weight")
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


# CPOConfig (trl/experimental/cpo/cpo_config.py): its own fields, and its loss types (alphapo is simpo with
# cpo_alpha 0, CPOConfig.__post_init__).
_CPO_KEYS = ("cpo_alpha", "simpo_gamma")
CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo", "alphapo")


def _cpo_alpha(value: Any) -> float:
    """CPOConfig cpo_alpha as a number (only whether it is 0 changes memory: the NLL term)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value in (
            float("inf"), float("-inf")):
        raise _KeyProblem("cpo_alpha", f"{value!r:.40} is not a number; give the NLL weight, e.g. 1.0 (0 drops it)")
    return float(value)


def _preference_cpo(d: dict[str, Any], run: Run, loss: Any) -> None:
    """CPOConfig: objective cpo (loss_type sigmoid, hinge, ipo) or simpo (simpo, alphapo)."""
    if loss is not None and str(loss) not in CPO_LOSS_TYPES:
        raise _KeyProblem("loss_type", f"{loss!r:.40} is not a TRL CPO loss_type; use one of "
                          f"{', '.join(CPO_LOSS_TYPES)}")
    run.options["objective"] = "simpo" if str(loss) in ("simpo", "alphapo") else "cpo"
    # cpo_trainer.py concatenated_forward: `if self.cpo_alpha == 0` the NLL (and its logits copy) is skipped.
    alpha = 0.0 if str(loss) == "alphapo" else _cpo_alpha(d["cpo_alpha"]) if d.get("cpo_alpha") is not None else 1.0
    if alpha == 0:
        run.options["chosen_nll"] = False
    _seen(d, run, *_CPO_KEYS, "loss_type", "beta", "label_smoothing", "alpha")
    if d.get("disable_dropout") is False:
        _unmodelled(run, "disable_dropout", "dropout kept in the policy (CPOTrainer disables it by default)")
    else:
        _seen(d, run, "disable_dropout")


def _preference_trl(d: dict[str, Any], run: Run) -> None:
    """TRL DPOConfig / KTOConfig / RewardConfig / CPOConfig keys (TRL 1.16 trl/trainer/dpo_config.py,
    kto_config.py, reward_config.py, trl/experimental/cpo/cpo_config.py). An ORPOConfig has no field of its own
    (beta reads as DPO): give --objective orpo."""
    loss = d.get("loss_type")
    if any(k in d for k in _CPO_KEYS) or (isinstance(loss, str) and loss in ("simpo", "alphapo")):
        _preference_cpo(d, run, loss)
        return
    if any(k in d for k in _KTO_KEYS) or (isinstance(loss, str) and loss in KTO_LOSS_TYPES):
        if loss is not None and str(loss) not in KTO_LOSS_TYPES:
            raise _KeyProblem("loss_type", f"{loss!r:.40} is not a TRL KTO loss_type; use kto or apo_zero_unpaired")
        if str(loss) == "apo_zero_unpaired":  # no KL rows: one no-grad forward less, never the peak
            run.notes.append("loss_type apo_zero_unpaired: no KL rows; estimated as kto (their no-grad forwards "
                             "come before the policy's or next to the reference's, not above them).")
        run.options["objective"] = "kto"
        if _flag(HF, d.get("precompute_ref_log_probs"), "precompute_ref_log_probs"):
            run.options["ref_model"] = "precomputed"
        _seen(d, run, *_KTO_KEYS, "loss_type", "beta", "precompute_ref_log_probs", "disable_dropout")
        return
    dpo_loss = loss is not None and all(x in DPO_LOSS_TYPES for x in _loss_types(loss))
    if any(k in d for k in _DPO_KEYS) or dpo_loss:
        run.options["objective"] = _dpo_objective("loss_type", loss) if loss is not None else "dpo"
        _seen(d, run, *(k for k in _DPO_KEYS if k != "precompute_ref_log_probs" and k != "ref_model_init_kwargs"),
              "loss_type", "loss_weights", "label_smoothing", "discopop_tau")
        if _flag(HF, d.get("precompute_ref_log_probs"), "precompute_ref_log_probs"):
            run.options["ref_model"] = "precomputed"
        _seen(d, run, "precompute_ref_log_probs")
        if d.get("disable_dropout") is False:
            _unmodelled(run, "disable_dropout", "dropout kept in the policy and the reference (DPO assumes it off)")
        else:
            _seen(d, run, "disable_dropout")
    elif "center_rewards_coefficient" in d:
        run.options["objective"] = "reward"
        _seen(d, run, "center_rewards_coefficient")


# DPOConfig.ref_model_init_kwargs (TRL before 1.0; TRL 1.16 builds the same dict in dpo_trainer.py / kto_trainer.py
# __init__ from model_init_kwargs, `setdefault("dtype", self.model.dtype)`): the from_pretrained keywords of a copied
# reference (`create_model_from_path(ref_model_path, **ref_model_init_kwargs)`) → --ref-dtype, --ref-quant.
_REF_HARMLESS = {"revision", "trust_remote_code", "low_cpu_mem_usage", "use_cache", "cache_dir", "token"}
_REF_BNB_KEYS = {"load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "quant_method",
                 "bnb_4bit_use_double_quant", "bnb_4bit_quant_storage", "llm_int8_threshold",
                 "llm_int8_has_fp16_weight", "llm_int8_skip_modules", "llm_int8_enable_fp32_cpu_offload"}


_REF_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16",
               "float32": "fp32", "fp32": "fp32", "float": "fp32"}


def _ref_model_init_kwargs(raw: Any, run: Run, load_dtype: str) -> None:
    """ref_model_init_kwargs' dtype / torch_dtype, quantization_config (bitsandbytes 4-bit, double-quantized 4-bit,
    8-bit) and attn_implementation; any other keyword is refused in one line."""
    key = "ref_model_init_kwargs"
    if not isinstance(raw, dict):
        raise _KeyProblem(key, f"{raw!r:.40} is not a mapping of from_pretrained keywords")
    dtypes = _REF_DTYPES
    for sub in sorted(set(map(str, raw)) - _REF_HARMLESS - {"dtype", "torch_dtype", "quantization_config",
                                                             "attn_implementation"}):
        raise _KeyProblem(f"{key}.{sub}", "a from_pretrained keyword vramcalc does not model for the reference; "
                          "remove it (modelled: dtype, quantization_config 4-/8-bit, attn_implementation)")
    name = raw.get("dtype") or raw.get("torch_dtype")
    if name is not None:
        dtype = dtypes.get(str(name).removeprefix("torch."))
        if dtype is None:
            raise _KeyProblem(f"{key}.dtype", f"{name!r:.40} is not modelled; give bfloat16, float16 or float32")
        run.options["ref_dtype"] = dtype
    ref_dtype = run.options.get("ref_dtype") or ("bf16" if load_dtype == "auto" else dtypes.get(load_dtype, ""))
    quant = raw.get("quantization_config")
    if quant is not None:
        _ref_quantization_config(quant, run, ref_dtype, dtypes)
    impl = raw.get("attn_implementation")
    if impl is not None and _ATTN_IMPL.get(str(impl)) != run.options.get("attention", "sdpa"):
        raise _KeyProblem(f"{key}.attn_implementation", f"{impl!r:.40} differs from the policy's attention; "
                          "a reference with its own attention is not modelled: give the policy's")
    run.mapped.append(key)


def _ref_quantization_config(quant: Any, run: Run, ref_dtype: str, dtypes: dict[str, str]) -> None:
    """ref_model_init_kwargs.quantization_config (transformers utils/quantization_config.py BitsAndBytesConfig) →
    --ref-quant 4bit / 4bit-dq (bnb_4bit_use_double_quant) / 8bit (load_in_8bit: Linear8bitLt, LLM.int8)."""
    where = "ref_model_init_kwargs.quantization_config"
    if isinstance(quant, dict) and not quant.get("load_in_8bit") \
            and quant.get("bnb_4bit_quant_storage") not in (None, "uint8"):
        raise _KeyProblem(where, "a non-uint8-stored 4-bit reference is not modelled; remove bnb_4bit_quant_storage")
    kind = _bnb_config(quant, where, ref_dtype, dtypes, "the reference")
    if kind:
        run.options["ref_quant"] = kind
    if _fp32_compute(quant, ref_dtype):
        run.notes.append(FP32_COMPUTE_NOTE.format(where=where))


FP32_COMPUTE_NOTE = ("{where}: no bnb_4bit_compute_dtype, or float32 (BitsAndBytesConfig's default), over a bf16 "
                     "load: each 4-bit Linear casts its input to fp32 and dequantizes its weight to fp32 "
                     "(bitsandbytes nn/modules.py Linear4bit.forward); counted as bf16 compute, without those fp32 "
                     "copies (an approximation: the largest Linear's, a few hundred MB on a 7-8B model); set "
                     "bnb_4bit_compute_dtype: bfloat16 to compute in bf16.")


def _fp32_compute(quant: Any, dtype: str) -> bool:
    """A 4-bit BitsAndBytesConfig mapping whose compute dtype is float32 (named or the default) over a bf16 load."""
    compute = quant.get("bnb_4bit_compute_dtype") if isinstance(quant, dict) else None
    return bool(isinstance(quant, dict) and quant.get("load_in_4bit")) and dtype == "bf16" \
        and compute in (None, "float32", "torch.float32")


def _bnb_config(quant: Any, where: str, dtype: str, dtypes: dict[str, str], whose: str) -> str:
    """A from_pretrained quantization_config mapping (transformers 5.24 utils/quantization_config.py
    BitsAndBytesConfig; quantizers/auto.py reads a dict by its load_in_* flags) as vramcalc models it: "8bit", "4bit",
    "4bit-dq" (bnb_4bit_use_double_quant) or "" (no flag set); what else changes the storage or the matmuls is
    refused in one line. `dtype` is the model's load dtype (bf16, fp16, fp32; "" unknown)."""
    if not isinstance(quant, dict) or sorted(set(map(str, quant)) - _REF_BNB_KEYS):
        raise _KeyProblem(where, "only bitsandbytes load_in_4bit / load_in_8bit (BitsAndBytesConfig's keys) is "
                          f"modelled for {whose}; remove the rest")
    if quant.get("quant_method") not in (None, "bitsandbytes"):
        raise _KeyProblem(where, "quant_method bitsandbytes is modelled; change the rest")
    # fp16 weights, skipped modules (4-bit too: the quantizer's modules_to_not_convert) and CPU offload change what is
    # stored; llm_int8_threshold which temporaries MatMul8bitLt makes (memory/preference.py int8_linear_bytes: 6.0)
    if quant.get("llm_int8_has_fp16_weight") or quant.get("llm_int8_skip_modules") \
            or quant.get("llm_int8_enable_fp32_cpu_offload") or quant.get("llm_int8_threshold", 6.0) not in (6, 6.0):
        raise _KeyProblem(where, "llm_int8_threshold 6.0 without fp16 weights, skipped modules or CPU offload is "
                          "modelled; remove llm_int8_has_fp16_weight / _skip_modules / _enable_fp32_cpu_offload")
    if quant.get("load_in_8bit"):
        if quant.get("load_in_4bit"):  # BitsAndBytesConfig refuses both at once
            raise _KeyProblem(where, "load_in_4bit and load_in_8bit together; keep one")
        return "8bit"
    if str(quant.get("bnb_4bit_quant_type", "nf4")) not in ("nf4", "fp4"):
        raise _KeyProblem(where, "bnb_4bit_quant_type nf4 or fp4 is modelled (the same storage); change it")
    compute = quant.get("bnb_4bit_compute_dtype")
    # BitsAndBytesConfig's default bnb_4bit_compute_dtype is float32 (utils/quantization_config.py), and
    # replace_with_bnb_linear always passes it, so Linear4bit.set_compute_type never runs (compute_type_is_set): a
    # float32 compute dtype over a bf16 load casts each 4-bit Linear's input to fp32 and dequantizes to fp32
    # (bitsandbytes 0.50 nn/modules.py Linear4bit.forward), read with FP32_COMPUTE_NOTE; over fp16 it is refused.
    if compute is not None and dtypes.get(str(compute).removeprefix("torch.")) not in (dtype, "fp32") \
            or (compute in (None, "float32", "torch.float32") and dtype == "fp16"):
        name = "reference" if whose == "the reference" else "model"
        raise _KeyProblem(where, f"bnb_4bit_compute_dtype {compute!r:.20} with a {dtype or 'default'} "
                          f"{name} is not modelled; give the {name}'s dtype")
    if quant.get("load_in_4bit"):
        return "4bit-dq" if quant.get("bnb_4bit_use_double_quant") else "4bit"
    return ""


# ---- online RL (memory/rl.py) -------------------------------------------------------------------------

# GRPOConfig fields (TRL 1.16 trl/trainer/grpo_config.py) no SFT/DPO config has: their presence makes a GRPO run.
_GRPO_KEYS = ("num_generations", "max_completion_length", "use_vllm", "generation_batch_size",
              "steps_per_generation", "num_iterations", "vllm_mode", "scale_rewards", "epsilon_high",
              "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode")
# RLOOConfig fields (TRL 1.16 trl/trainer/rloo_config.py) GRPOConfig does not have: their presence makes an RLOO run
# (both share the generation keys above; RLOOConfig has no loss_type). Advantage arithmetic: no memory.
_RLOO_KEYS = ("normalize_advantages", "reward_clip_range")
# OnlineDPOConfig fields (trl/experimental/online_dpo/online_dpo_config.py) neither DPOConfig nor GRPOConfig has.
_ONLINE_DPO_KEYS = ("missing_eos_penalty", "reward_model_path", "max_new_tokens")
# PPOConfig's own keys (TRL 0.19.1 trl/trainer/ppo_config.py; none is in TRL 1.16's configs)
_PPO_KEYS = ("num_ppo_epochs", "vf_coef", "cliprange_value", "whiten_rewards", "value_model_path")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")  # grpo_config.py loss_type
GRPO_COMPLETION = 512  # GRPOConfig max_completion_length default
GRPO_PROMPT = 512  # the prompt bound when a file gives none (TRL < 1.0's max_prompt_length default; 1.16 has none)


def _vllm_engine(tool: str, d: dict[str, Any], run: Run, prefix: str = "") -> None:
    """GRPOConfig use_vllm / vllm_mode and the colocated engine's keys (trl/trainer/grpo_config.py; memory/rl.py):
    vllm_gpu_memory_utilization, vllm_enable_sleep_mode and vllm_max_model_length apply in colocate mode only
    (trl/generation/vllm_generation.py _init_vllm); vllm_tensor_parallel_size > 1 spans GPUs (not modelled)."""
    def flag(key: str) -> bool:
        value = d.get(key)
        if tool == HF:
            return bool(_flag(tool, value, key))
        if value is None or isinstance(value, bool):
            return bool(value)
        raise _KeyProblem(prefix + key, f"{value!r:.40} is not a boolean; write true or false")

    if tool == AX:
        # axolotl's TRLConfig (src/axolotl/utils/schemas/trl.py, a pydantic model that drops unknown keys) has none
        # of these: its GRPO builder takes the colocated engine's from the `vllm:` section (_vllm_axolotl)
        for key, where in (("vllm_gpu_memory_utilization", "vllm.gpu_memory_utilization"),
                           ("vllm_tensor_parallel_size", "vllm.tensor_parallel_size"),
                           ("vllm_max_model_length", "nothing: TRL's engine reads config.json's"),
                           ("vllm_model_impl", "nothing")):
            if key in d:
                raise _KeyProblem(prefix + key, f"not an axolotl trl: key (axolotl drops it); set {where}")
    sleep = flag("vllm_enable_sleep_mode")  # read as TRL reads it even where it has no effect
    if tool == AX and d.get("vllm_mode") != "colocate":
        # axolotl core/trainers/grpo/__init__.py passes vllm_enable_sleep_mode only with vllm_mode: colocate
        sleep = False
    if not flag("use_vllm"):
        return
    mode = d.get("vllm_mode", "colocate")
    if mode not in ("colocate", "server"):
        raise _KeyProblem(prefix + "vllm_mode", f"{mode!r:.40} is not a TRL vllm_mode; use colocate or server")
    run.options["use_vllm"] = mode
    run.mapped += [prefix + k for k in ("vllm_mode",) if k in d]
    tp = d.get("vllm_tensor_parallel_size")
    if mode == "colocate" and tp not in (None, 1):
        raise _KeyProblem(prefix + "vllm_tensor_parallel_size", f"{tp!r:.40}: a colocated engine sharded over "
                          "several GPUs is not modelled (GRPO is modelled on one GPU); set it to 1")
    if mode != "colocate":
        return
    if d.get("vllm_gpu_memory_utilization") is not None:
        run.options["vllm_utilization"] = _strict(prefix + "vllm_gpu_memory_utilization", "vllm_utilization",
                                                  d["vllm_gpu_memory_utilization"])
        run.mapped.append(prefix + "vllm_gpu_memory_utilization")
    if sleep:
        run.options["vllm_sleep"] = True
    if d.get("vllm_max_model_length") is not None:
        run.options["max_model_len"] = _strict(prefix + "vllm_max_model_length", "max_model_len",
                                               d["vllm_max_model_length"])
        run.mapped.append(prefix + "vllm_max_model_length")
    if d.get("vllm_model_impl") not in (None, "vllm"):
        raise _KeyProblem(prefix + "vllm_model_impl", f"{d['vllm_model_impl']!r:.40}: vLLM's transformers backend "
                          "is not modelled (memory/vllm.py models vLLM's own layers); use vllm")
    _seen(d, run, *(prefix + k for k in ("vllm_enable_sleep_mode", "vllm_tensor_parallel_size", "vllm_model_impl")
                    if k in d))


def _refuse_generation_engines(d: dict[str, Any], prefix: str = "") -> None:
    """Continuous batching set to anything but false or null: refused in one line (not a boolean read: whatever
    the value, only `false` means TRL's generate() path, which is what is modelled)."""
    if d.get("use_transformers_continuous_batching") not in (None, False):
        raise _KeyProblem(prefix + "use_transformers_continuous_batching", "transformers' continuous batching (a "
                          "paged cache) is not modelled; set it false to estimate generate() with a DynamicCache")


def _grpo(tool: str, d: dict[str, Any], run: Run, prefix: str = "", objective: str = "grpo") -> None:
    """GRPOConfig keys (`prefix`: axolotl's `trl.` section) onto --objective grpo (generate() or vLLM); an
    RLOOConfig's (the same generation keys, no loss_type) onto --objective rloo, whose beta and num_generations
    defaults (0.05, 2) the options apply when the file does not set them (core/options.py)."""
    _refuse_generation_engines(d, prefix)
    _vllm_engine(tool, d, run, prefix)
    if d.get("cache_implementation") not in (None, "dynamic"):
        raise _KeyProblem(prefix + "cache_implementation", f"{d['cache_implementation']!r:.40} is not modelled for "
                          "GRPO; remove it (generate()'s DynamicCache)")
    loss = d.get("loss_type")
    if objective == "rloo" and loss is not None:
        raise _KeyProblem(prefix + "loss_type", "RLOOConfig has no loss_type (its loss is RLOO's own); remove it, or "
                          "drop normalize_advantages / reward_clip_range for a GRPOConfig")
    if loss is not None and str(loss) not in GRPO_LOSS_TYPES:
        raise _KeyProblem(prefix + "loss_type", f"{loss!r:.40} is not a TRL GRPO loss_type; use one of "
                          f"{', '.join(GRPO_LOSS_TYPES)}")
    run.options["objective"] = objective
    _seen(d, run, *(prefix + k for k in _RLOO_KEYS if k in d))
    for name in ("num_generations", "beta", "steps_per_generation", "num_iterations"):
        if d.get(name) is not None:
            run.options[name] = _strict(prefix + name, name, d[name])
            run.mapped.append(prefix + name)
    gen = d.get("generation_batch_size")
    if gen is not None:
        batch = run.options.get("batch_size", 8)  # TrainingArguments per_device_train_batch_size default 8
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 1 or gen % batch:
            raise _KeyProblem(prefix + "generation_batch_size", f"{gen!r:.40} is not a multiple of the micro-batch "
                              f"({batch}); GRPOConfig requires it")
        run.options["steps_per_generation"] = gen // batch
        run.mapped.append(prefix + "generation_batch_size")
    completion = d.get("max_completion_length", GRPO_COMPLETION)
    prompt = d.get("max_prompt_length")
    if prompt is None:
        prompt = GRPO_PROMPT
        run.notes.append(f"grpo: the file bounds no prompt (TRL 1.16 has no max_prompt_length): prompt {GRPO_PROMPT} "
                         "tokens assumed; the sequence is prompt + max_completion_length (--prompt-len and --seq-len "
                         "override).")
    else:
        run.mapped.append(prefix + "max_prompt_length")
    c = _strict(prefix + "max_completion_length", "seq_len", completion)
    pr = _strict(prefix + "max_prompt_length", "prompt_len", prompt)
    run.options.update(seq_len=pr + c, prompt_len=pr)
    if "max_completion_length" in d:
        run.mapped.append(prefix + "max_completion_length")
    if tool == HF and d.get(_hf_gc_key(d)) is None:
        run.options["grad_checkpointing"] = True  # GRPOConfig / RLOOConfig default (True instead of False)
    _seen(d, run, *(prefix + k for k in ("loss_type", "use_vllm", "epsilon", "epsilon_high", "scale_rewards",
                                         "temperature", "top_p", "top_k", "cache_implementation",
                                         "use_transformers_continuous_batching") if k in d))


def _online_dpo(d: dict[str, Any], run: Run) -> None:
    """OnlineDPOConfig (TRL 1.16 trl/experimental/online_dpo/online_dpo_config.py) onto --objective online-dpo
    (memory/online_dpo.py): generate() on the policy or vLLM (use_vllm); reward_model_path onto --reward-model."""
    if d.get("reward_model_path") is not None:  # loaded as a sequence classifier (memory/reward_scoring.py)
        path = d["reward_model_path"]
        if not isinstance(path, str) or not path.strip():
            raise _KeyProblem("reward_model_path", "give the reward model as a preset name or a config.json path")
        run.options["reward_model"] = path.strip()
    if d.get("vllm_max_model_length") is not None:  # not an OnlineDPOConfig field
        raise _KeyProblem("vllm_max_model_length", "OnlineDPOTrainer sets vLLM's max_model_len itself (max_length + "
                          "max_new_tokens); remove it")
    # use_vllm / vllm_mode (OnlineDPOConfig's default colocate) / vllm_gpu_memory_utilization (default 0.55, applied
    # by core/options.py) / vllm_enable_sleep_mode: read as GRPOConfig's (online_dpo_trainer.py __init__ builds the
    # same engine, memory/rl.py vllm_view)
    _vllm_engine(HF, d, run)
    # online_dpo_config.py: gradient_checkpointing defaults to True (online_dpo_trainer.py then generates with
    # use_cache=False: memory/online_dpo.py uncached_generation_bytes)
    if d.get(_hf_gc_key(d)) is None:
        run.options["grad_checkpointing"] = True
    loss = d.get("loss_type")
    if loss is not None and str(loss) not in ("sigmoid", "ipo"):
        raise _KeyProblem("loss_type", f"{loss!r:.40} is not an OnlineDPOTrainer loss_type; use sigmoid or ipo")
    if d.get("cache_implementation") not in (None, "dynamic"):
        raise _KeyProblem("cache_implementation", f"{d['cache_implementation']!r:.40} is not modelled for Online "
                          "DPO; remove it (generate()'s DynamicCache)")
    if d.get("generation_kwargs"):
        raise _KeyProblem("generation_kwargs", "generation_kwargs can change what generate() holds (max_new_tokens, "
                          "the cache) and are not modelled; remove them")
    if d.get("disable_dropout") is False:
        _unmodelled(run, "disable_dropout", "dropout kept in the policy and the reference (Online DPO assumes it "
                                            "off, OnlineDPOConfig's default)")
    else:
        _seen(d, run, "disable_dropout")
    run.options["objective"] = "online-dpo"
    if d.get("beta") is not None and not isinstance(d["beta"], list):  # a per-epoch list changes no memory either
        run.options["beta"] = _strict("beta", "beta", d["beta"])
    new = _strict("max_new_tokens", "seq_len", d.get("max_new_tokens", _online.MAX_NEW_TOKENS))
    if "seq_len" not in run.options:
        run.options["seq_len"] = _online.MAX_LENGTH  # OnlineDPOConfig max_length default (prompt + completion)
    seq = run.options["seq_len"]
    if new >= seq:
        raise _KeyProblem("max_new_tokens", f"{new} leaves no prompt in max_length {seq} (prompt + completion); "
                          "raise max_length")
    # _forward cuts each prompt from the left to max_length - completion tokens: the longest prompt the step sees
    run.options["prompt_len"] = seq - new
    run.notes.append(f"online-dpo: prompts taken as filling max_length: prompt {seq - new} + {new} new tokens "
                     "(OnlineDPOTrainer._forward cuts longer prompts from the left; --prompt-len and --seq-len "
                     "override).")
    _seen(d, run, *(k for k in ("max_new_tokens", "missing_eos_penalty", "reward_model_path", "loss_type", "beta",
                                "use_vllm", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                "cache_implementation", "generation_kwargs", "vllm_structured_outputs_regex",
                                "vllm_server_base_url", "vllm_server_host", "vllm_server_port", "vllm_server_timeout",
                                "vllm_group_port") if k in d))


# axolotl's `vllm:` section (src/axolotl/utils/schemas/vllm.py VllmConfig): gpu_memory_utilization's default, and the
# keys only `axolotl vllm-serve` reads (src/axolotl/cli/vllm_serve.py: the server's GPUs, not the training one's).
AX_VLLM_UTILIZATION = 0.9
_AX_VLLM_SERVE_KEYS = ("device", "data_parallel_size", "dtype", "max_model_len", "enable_prefix_caching", "host",
                       "port", "enable_reasoning", "reasoning_parser", "enforce_eager", "serve_module",
                       "worker_extension_cls")


def _vllm_axolotl(d: dict[str, Any], section: dict[str, Any], run: Run) -> None:
    """axolotl's `vllm:` section for rl: grpo (axolotl main 067b021, core/trainers/grpo/__init__.py
    set_training_args_kwargs): with trl.vllm_mode colocate, GRPOConfig's vllm_gpu_memory_utilization is
    vllm.gpu_memory_utilization (VllmConfig's default 0.9) and vllm_tensor_parallel_size vllm.tensor_parallel_size;
    without vllm_mode, nothing is passed (TRL's colocate at 0.3). Every other key configures `axolotl vllm-serve`:
    server mode's GPUs, nothing on the training GPU (its weight sync is memory/rl.py's either way)."""
    v = d.get("vllm")
    if v is None:
        return
    if not isinstance(v, dict):
        raise _KeyProblem("vllm", f"{v!r:.40} is not a mapping of vLLM settings")
    run.mapped.append("vllm")
    unknown = sorted(str(k) for k in v if k not in _AX_VLLM_SERVE_KEYS + ("gpu_memory_utilization",
                                                                           "tensor_parallel_size"))
    if unknown:
        raise _KeyProblem("vllm." + unknown[0], "not a key of axolotl's vllm: section (schemas/vllm.py); remove it")
    colocate = run.options.get("use_vllm") == "colocate" and section.get("vllm_mode") == "colocate"
    if colocate:
        tp = v.get("tensor_parallel_size")
        if tp not in (None, 1):
            raise _KeyProblem("vllm.tensor_parallel_size", f"{tp!r:.40}: a colocated engine sharded over several "
                              "GPUs is not modelled (GRPO is modelled on one GPU); set it to 1")
        util = v.get("gpu_memory_utilization")
        run.options["vllm_utilization"] = _strict("vllm.gpu_memory_utilization", "vllm_utilization",
                                                  AX_VLLM_UTILIZATION if util is None else util)
        if util is None:
            run.notes.append(f"grpo: axolotl passes vllm.gpu_memory_utilization to the colocated engine; unset, "
                             f"VllmConfig's default {AX_VLLM_UTILIZATION} (--vllm-utilization overrides).")
        run.mapped += ["vllm." + k for k in ("gpu_memory_utilization", "tensor_parallel_size") if k in v]
    served = [k for k in v if k in _AX_VLLM_SERVE_KEYS or not colocate]
    if served:
        run.mapped += ["vllm." + str(k) for k in served]
        run.notes.append(f"vllm: {', '.join(map(str, served))} configure `axolotl vllm-serve` (the server's GPUs, "
                         "server mode); no memory on the training GPU.")


# PPOConfig / OnPolicyConfig defaults (trl==0.19.1 trl/trainer/ppo_config.py, trl/trainer/utils.py OnPolicyConfig)
PPO_REWARD_MODEL = "EleutherAI/pythia-160m"  # reward_model_path
PPO_RESPONSE = 53  # response_length
PPO_CHUNK = 64  # local_rollout_forward_batch_size
# PPOConfig / OnPolicyConfig keys that change no memory: advantage and loss arithmetic on [rows, C] vectors, the stop
# token's truncation (elementwise), logging, and ds3_gather_for_generation (ZeRO-3 only, refused elsewhere).
_PPO_HARMLESS = ("num_ppo_epochs", "whiten_rewards", "kl_coef", "kl_estimator", "cliprange", "vf_coef",
                 "cliprange_value", "gamma", "lam", "temperature", "missing_eos_penalty", "stop_token", "stop_token_id",
                 "exp_name", "sft_model_path", "total_episodes", "num_sample_generations", "ds3_gather_for_generation",
                 "dataset_num_proc", "world_size", "num_total_batches", "micro_batch_size", "local_batch_size",
                 "batch_size", "local_mini_batch_size", "mini_batch_size")


def _ppo(d: dict[str, Any], run: Run) -> None:
    """PPOConfig (trl==0.19.1 trl/trainer/ppo_config.py; TRL 1.x has none) onto --objective ppo (memory/ppo.py):
    reward_model_path onto --reward-model (its path loads the value model too), response_length onto the sequence."""
    path = d.get("reward_model_path", PPO_REWARD_MODEL)
    if not isinstance(path, str) or not path.strip():
        raise _KeyProblem("reward_model_path", "give the reward model as a preset name or a config.json path")
    run.options["reward_model"] = path.strip()
    if "reward_model_path" not in d:
        run.notes.append(f"ppo: reward_model_path not given: PPOConfig's default {PPO_REWARD_MODEL} (also the value "
                         "model); --reward-model overrides.")
    for key, why in (("value_model_path", "a value model from its own path"),
                     ("model_adapter_name", "several adapters on the policy"),
                     ("ref_adapter_name", "a reference adapter")):
        if d.get(key) is not None:
            raise _KeyProblem(key, f"{why} is not modelled (the value model is loaded from reward_model_path, as "
                              "TRL's ppo.py example does); remove it")
    for key in ("model_init_kwargs", "ref_model_init_kwargs"):  # PPOConfig / OnPolicyConfig have neither field
        if key in d:
            raise _KeyProblem(key, "not a TRL 0.19.1 PPOConfig field (HfArgumentParser refuses it), and ppo.py passes "
                              "no keywords to from_pretrained; remove it (--precision sets the models' dtype)")
    unread = [k for k in ("torch_dtype", "dtype", "attn_implementation", "load_in_4bit", "load_in_8bit") if k in d]
    if unread:
        run.mapped += unread
        run.notes.append(f"ppo: {', '.join(unread)}: no change: TRL 0.19.1's examples/scripts/ppo/ppo.py builds "
                         "model_kwargs (dtype, attention, quantization) from ModelConfig and passes them to none of "
                         "its four from_pretrained calls (transformers' default dtype, no quantization).")
    if d.get("local_rollout_forward_batch_size", PPO_CHUNK) != PPO_CHUNK:
        raise _KeyProblem("local_rollout_forward_batch_size", f"{d['local_rollout_forward_batch_size']!r:.40} is not "
                          f"modelled: the rollout's chunk is OnPolicyConfig's default {PPO_CHUNK}; remove it")
    if d.get("num_mini_batches", 1) != 1:
        raise _KeyProblem("num_mini_batches", f"{d['num_mini_batches']!r:.40} is not modelled (a mini-batch smaller "
                          "than per_device_train_batch_size shrinks the micro-batch); use 1")
    if d.get(_hf_gc_key(d)) is True:  # PPOTrainer.train() never calls gradient_checkpointing_enable
        run.options.pop("grad_checkpointing", None)
        run.notes.append("ppo: gradient_checkpointing has no effect: PPOTrainer.train() is its own loop and never "
                         "enables it (TRL 0.19.1 ppo_trainer.py).")
    run.options["objective"] = "ppo"
    response = _strict("response_length", "seq_len", d.get("response_length", PPO_RESPONSE))
    run.options.update(prompt_len=GRPO_PROMPT, seq_len=GRPO_PROMPT + response)
    run.notes.append(f"ppo: the file bounds no query length: queries of {GRPO_PROMPT} tokens assumed; the sequence "
                     f"is query + response_length {response} (--prompt-len and --seq-len override).")
    _seen(d, run, *(k for k in ("reward_model_path", "response_length", "local_rollout_forward_batch_size",
                                "num_mini_batches", *_PPO_HARMLESS) if k in d))


def _preference_axolotl(d: dict[str, Any], run: Run) -> None:
    # axolotl `rl:` (src/axolotl/utils/schemas/enums.py RLType) trains with TRL's trainers: dpo and ipo through
    # DPOTrainer (ipo as its loss_type), kto through KTOTrainer, orpo through ORPOTrainer, simpo through
    # CPOTrainer with loss_type simpo (its cpo_alpha key, TRL's 1.0 when unset); grpo through GRPOTrainer (below).
    rl = d.get("rl")
    precompute = _flag(AX, d.get("precompute_ref_log_probs"), "precompute_ref_log_probs")  # pydantic checks it
    section = d.get("trl") or {}
    if rl is None or rl is False:
        return
    if str(rl) == "grpo":  # TRL GRPOTrainer with axolotl's `trl:` section (schemas/trl.py)
        if not isinstance(section, dict):
            raise _KeyProblem("trl", f"{section!r:.40} is not a mapping of GRPOConfig keys")
        run.mapped.append("rl")
        _grpo(AX, section, run, "trl.")
        if "trl" in d:
            run.mapped.append("trl")
        _vllm_axolotl(d, section, run)
        return
    if str(rl) not in ("dpo", "ipo", "kto", "orpo", "simpo"):
        raise _KeyProblem("rl", f"{rl!r:.40} is not modelled; vramcalc models rl: dpo, ipo (TRL DPOTrainer), "
                          "kto (KTOTrainer), orpo (ORPOTrainer), simpo (CPOTrainer) and grpo (GRPOTrainer)")
    run.options["objective"] = str(rl)
    run.mapped.append("rl")
    if str(rl) == "simpo" and d.get("cpo_alpha") is not None and _cpo_alpha(d["cpo_alpha"]) == 0:
        run.options["chosen_nll"] = False
    if str(rl) == "simpo":
        _seen(d, run, "cpo_alpha", "simpo_gamma")
    if precompute:
        run.options["ref_model"] = "precomputed"
    _seen(d, run, "precompute_ref_log_probs", "rl_beta", "dpo_use_weighting", "dpo_label_smoothing",
          "kto_desirable_weight", "kto_undesirable_weight")


# ---- LLaMA-Factory --------------------------------------------------------------------------------------


def _token_count(key: str, value: Any) -> int:
    """How many tokens a tool's token list adds: a YAML list, or a comma-separated string (LLaMA-Factory
    model_args.py splits add_tokens / add_special_tokens on commas); every one counted as a new row."""
    if isinstance(value, str):
        return len([x for x in value.split(",") if x.strip()])
    if isinstance(value, list | dict):
        return len(value)
    raise _KeyProblem(key, f"{value!r:.40} is not a list of tokens; give a list, or --add-tokens N")


def _vocab_axolotl(d: dict[str, Any], run: Run) -> None:
    """axolotl's new tokens (memory/new_tokens.py). loaders/tokenizer.py adds `tokens` to the tokenizer and
    loaders/model.py _resize_token_embeddings (axolotl-ai-cloud/axolotl @ ae7395e9) resizes to len(tokenizer),
    rounded up to a multiple of 32 under resize_token_embeddings_to_32x, when that exceeds the embedding's rows;
    check_model_config (loaders/utils.py @ 002a637c) refuses `tokens` with an adapter unless lora_modules_to_save
    lists the embedding and the head. added_tokens_overrides renames existing ids: no new rows."""
    if _is_set(d.get("tokens")):
        run.options["add_tokens"] = _token_count("tokens", d["tokens"])
        saved = set(str(run.options.get("modules_to_save", "")).split(","))
        if run.options.get("method") != "full" and not saved >= {"embed_tokens", "lm_head"}:
            raise _KeyProblem("tokens", "axolotl refuses new tokens with an adapter unless lora_modules_to_save "
                              "lists embed_tokens and lm_head (loaders/utils.py check_model_config); add them")
        run.mapped.append("tokens")
    if _flag(AX, d.get("resize_token_embeddings_to_32x"), "resize_token_embeddings_to_32x"):
        run.options["vocab_multiple"] = 32
    if _is_set(d.get("added_tokens_overrides")):
        run.notes.append("added_tokens_overrides: existing token ids renamed, no embedding rows added: no memory "
                         "change.")
    _seen(d, run, "resize_token_embeddings_to_32x", "added_tokens_overrides")


def _vocab_llama_factory(d: dict[str, Any], run: Run, quantized: bool) -> None:
    """LLaMA-Factory's new tokens (memory/new_tokens.py; hiyouga/LLaMA-Factory @ 12129195): add_tokens /
    add_special_tokens (and new_special_tokens_config's tokens) set resize_vocab; model_utils/embedding.py
    resize_embedding_layer then calls resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64) when the
    tokenizer outgrows the embedding, and raises for a quantized model; under LoRA adapter.py puts the input and
    output embeddings in additional_target (modules_to_save) when resize_vocab is set and additional_target is
    not."""
    added = 0
    for key in ("add_tokens", "add_special_tokens", "new_special_tokens_config"):
        if _is_set(d.get(key)):
            if key == "new_special_tokens_config" and not isinstance(d[key], dict):
                raise _KeyProblem(key, "a file of token descriptions is not read; give its token count with "
                                  "--add-tokens N")
            added += _token_count(key, d[key])
        _seen(d, run, key)
    resize = added > 0 or _flag(LF, d.get("resize_vocab"), "resize_vocab")
    _seen(d, run, "resize_vocab")
    if not resize:
        return
    if quantized:
        raise _KeyProblem("resize_vocab", "LLaMA-Factory cannot resize a quantized model's embeddings "
                          "(model_utils/embedding.py); remove quantization_bit or the new tokens")
    run.options.update(add_tokens=added, vocab_multiple=64)
    if run.options.get("method") == "lora" and not _is_set(d.get("additional_target")):
        run.options["modules_to_save"] = "embed_tokens,lm_head"
        run.notes.append("resize_vocab: LLaMA-Factory trains the resized embedding and head as modules_to_save "
                         "under LoRA (adapter.py, additional_target unset).")


def _freeze_llama_factory(d: dict[str, Any], run: Run, path: Path) -> None:
    """LLaMA-Factory freeze tuning (hiyouga/LLaMA-Factory src/llamafactory/model/adapter.py _setup_freeze_tuning, commit
    01d87b8267b92bc0caacc746fa4f875e390b64e2): a parameter trains when its name contains `.{idx}.{module}` for a
    trainable layer id and a freeze_trainable_modules entry ("all": the whole layer), or a freeze_extra_modules entry;
    everything else is frozen, the final norm and lm_head included. Layer ids: the top freeze_trainable_layers
    (finetuning_args.py default 2), the bottom ones when negative, every stride-th with use_llama_pro
    (core/unfrozen.py llama_pro_layers; the model was expanded offline by scripts/llama_pro.py, so its config already
    counts the new layers)."""
    from vramcalc.core import unfrozen
    from vramcalc.core.lora_layers import text

    trainable = _strict("freeze_trainable_layers", "freeze_layers", d.get("freeze_trainable_layers", 2))
    _seen(d, run, "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", "use_llama_pro")
    spec, _ = resolve_model(run.model or "", path.parent)
    n = spec.num_layers or abs(trainable)
    modules = _names(d.get("freeze_trainable_modules", "all"))
    if modules != ["all"] and not set(unfrozen.INNER) <= set(modules):
        raise _KeyProblem("freeze_trainable_modules", f"{','.join(modules)!r:.60} trains part of each layer, which "
                          "is not modelled: use all")
    extra = _names(d.get("freeze_extra_modules"))
    if "norm" in extra:  # `"norm" in name` also matches every layer's input_layernorm / post_attention_layernorm
        raise _KeyProblem("freeze_extra_modules", "norm also matches every layer's norms (LLaMA-Factory tests "
                          "`module in name`), training part of the frozen layers: not modelled; drop norm")
    bad = [x for x in extra if x not in unfrozen.OUTER]
    if bad:
        raise _KeyProblem("freeze_extra_modules", f"{bad[0]!r:.40} is not modelled: give embed_tokens or lm_head")
    if _flag(LF, d.get("use_llama_pro"), "use_llama_pro"):
        try:
            layers = unfrozen.llama_pro_layers(n, trainable)
        except ValueError as e:
            raise _KeyProblem("use_llama_pro", str(e)) from None
    elif trainable >= 0:
        layers = tuple(range(max(0, n - trainable), n))
    else:  # negative: the bottom layers
        layers = tuple(range(min(-trainable, n)))
    if not extra and layers == tuple(range(layers[0] if layers else n, n)):
        # the top layers alone: --freeze-layers, the head and final norm frozen (matched by no entry)
        run.options.update(freeze_layers=n - len(layers), train_head=False)
        return
    run.options.update(train_layers=text(layers) if layers else "none", train_modules=",".join(extra) or "none")


def _llama_pro_lora(d: dict[str, Any], run: Run, path: Path) -> None:
    """LLaMA-Factory use_llama_pro under LoRA (adapter.py _setup_lora_tuning -> model_utils/misc.py
    find_expanded_modules, commit 1e0ceebbf2af9f9d92f3791db61d0a8d5f20369d): the targets inside the expanded layers
    only, the layers llama_pro_layers picks -> --lora-layers."""
    if not _flag(LF, d.get("use_llama_pro"), "use_llama_pro"):
        _seen(d, run, "use_llama_pro")
        return
    from vramcalc.core import unfrozen
    from vramcalc.core.lora_layers import text

    trainable = _strict("freeze_trainable_layers", "freeze_layers", d.get("freeze_trainable_layers", 2))
    spec, _ = resolve_model(run.model or "", path.parent)
    try:
        run.options["lora_layers"] = text(unfrozen.llama_pro_layers(spec.num_layers or 0, trainable))
    except ValueError as e:
        raise _KeyProblem("use_llama_pro", str(e)) from None
    _seen(d, run, "use_llama_pro", "freeze_trainable_layers")


# LLaMA-Factory's vision-language keys (hiyouga/LLaMA-Factory @ ff6d4d12): finetuning_args.py freeze_vision_tower and
# freeze_multi_modal_projector (default True), freeze_language_model (False); model_args.py image_max_pixels (768 x
# 768) / image_min_pixels (32 x 32). model_utils/visual.py registers these vramcalc kinds' model types in
# COMPOSITE_MODELS (llava, llava_next, qwen2_vl, qwen2_5_vl, gemma3, mllama, llama4); Idefics3 / SmolVLM is not
# registered, so LLaMA-Factory neither freezes its tower nor keeps LoRA off it (get_forbidden_modules, find_all_linear_
# modules and patch_target_modules leave an unregistered model whole).
LF_COMPOSITE_KINDS = ("clip", "llava_next", "qwen2_vl", "qwen2_5_vl", "siglip", "mllama", "llama4")
LF_FIXED_SIZE_KINDS = ("clip", "siglip")  # CLIPImageProcessor / Gemma3ImageProcessor resize to the tower's own size
LF_IMAGE_MAX_PIXELS = 768 * 768  # model_args.py image_max_pixels default
LF_IMAGE_MIN_PIXELS = 32 * 32  # model_args.py image_min_pixels default
LF_LORA_RANK = 8  # finetuning_args.py LoraArguments.lora_rank default
# Llama 4's language-model Linears: find_all_linear_modules keeps classes whose name holds "Linear", so Llama4Router
# (an nn.Linear subclass) is not among `all`'s names (transformers models/llama4/modeling_llama4.py: attention
# q/k/v/o_proj, Llama4TextMLP gate/up/down_proj; the experts are Parameters)
LF_LLAMA4_ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def _vlm_llama_factory(d: dict[str, Any], run: Run, path: Path, ftype: str) -> None:
    """LLaMA-Factory's tower / projector / language-model freezing and image pixel budget on a vision-language model.

    LoRA (model/adapter.py _setup_lora_tuning): lora_target all is model_utils/misc.py find_all_linear_modules, every
    Linear's last name but lm_head's, the projector's (projector_keys, always) and, with freeze_vision_tower, the
    tower's; patch_target_modules then keeps the full names of the modules holding a target, outside the frozen
    parts' keys. So with the tower frozen the targets are the language model's only (--lora-targets ...,lm-only), and
    freeze_multi_modal_projector changes nothing for LoRA (no projector Linear's name holds a language-model
    target). Full tuning (_setup_full_tuning): every parameter outside the frozen parts' keys is trained."""
    from vramcalc.core.memory.frozen_lm import FROZEN_LM_KINDS

    fvt_key, fmp_key, flm_key = "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"
    keys = (fvt_key, fmp_key, flm_key, "image_max_pixels", "image_min_pixels")
    try:
        spec, _ = resolve_model(run.model or "", path.parent)
    except VramcalcError:
        spec = None
    vision = spec.vision if spec is not None else None
    tower_frozen, projector_frozen, lm_frozen = (bool(_flag(LF, d[k], k)) if d.get(k) is not None else default
                                                 for k, default in ((fvt_key, True), (fmp_key, True), (flm_key, False)))
    if vision is None:  # a text model: LLaMA-Factory finds no composite model's parts to freeze
        _seen(d, run, *keys)
        return
    registered = vision.kind in LF_COMPOSITE_KINDS
    if lm_frozen and registered and ftype in ("full", "freeze"):
        _frozen_lm_llama_factory(run, vision.kind, ftype, tower_frozen, projector_frozen)
        run.mapped += [k for k in keys[:3] if k in d]
        _image_pixels_llama_factory(d, run, vision)
        return
    if lm_frozen and registered and ftype == "lora":
        # patch_target_modules (model_utils/visual.py) keeps only the modules outside every frozen part's keys, so
        # with language_model and lm_head frozen no language-model Linear is adapted: the tower's (with
        # freeze_vision_tower false) or nothing (`all` never names the projector's, find_all_linear_modules)
        where = "the vision tower's Linears alone" if not tower_frozen else "no module (peft finds no target)"
        fix = "finetuning_type full with freeze_multi_modal_projector: false" if vision.kind in FROZEN_LM_KINDS \
            else "drop freeze_language_model"
        raise _KeyProblem(flm_key, f"true under LoRA adapts {where}, with the language model frozen: not modelled; "
                          f"use {fix}")
    if lm_frozen and registered:
        _unmodelled(run, flm_key, f"the language model frozen under finetuning_type {ftype}")
    elif flm_key in d:
        run.mapped.append(flm_key)
    if ftype in ("lora", "full") and registered:
        lf_all = run.options.get("lora_targets") == "all-linear"
        if not tower_frozen:
            if ftype == "full":
                run.options["train_vision"] = True
            if ftype == "lora" and lf_all and vision.kind == "llama4":  # the patch embedding's `linear` joins them
                _unmodelled(run, fvt_key, "LoRA `all` with the Llama 4 tower trained (its patch embedding's Linear)")
            if ftype == "lora" and projector_frozen and vision.kind != "siglip":
                run.notes.append("freeze_vision_tower false: LLaMA-Factory keeps LoRA off the projector "
                                 "(find_all_linear_modules drops projector_keys); counted with the projector's "
                                 "adapters where the targets reach it (all-linear: an over-estimate by those).")
        elif ftype == "lora":
            targets = LF_LLAMA4_ALL if lf_all and vision.kind == "llama4" else \
                str(run.options.get("lora_targets", BY_NAME["lora_targets"].default))
            if not targets.replace(" ", "").lower().endswith(",lm-only"):
                run.options["lora_targets"] = f"{targets},lm-only"
        if ftype == "full" and projector_frozen:
            run.notes.append("freeze_multi_modal_projector (LLaMA-Factory's default): the projector is frozen in full "
                             "tuning; counted trained (its gradients and optimizer states: a small over-estimate).")
        run.mapped += [k for k in (fvt_key, fmp_key) if k in d]
    elif (not tower_frozen or not projector_frozen) and registered and ftype == "freeze":
        # _setup_freeze_tuning (model/adapter.py) trains the names holding `.{idx}.` for the language model's
        # trainable layer ids (the tower's blocks with those indices too, freeze_vision_tower false) and the
        # projector_keys (freeze_multi_modal_projector false) beside the language model's layers
        key = fvt_key if not tower_frozen else fmp_key
        what = "the tower's blocks whose index is a trainable layer id" if not tower_frozen else "the projector"
        raise _KeyProblem(key, f"false under finetuning_type freeze trains {what} beside the language model's "
                          "layers: not modelled; use finetuning_type full (freeze_vision_tower: false is "
                          "--train-vision) or keep the key true")
    elif (not tower_frozen or not projector_frozen) and registered:
        for key, frozen in ((fvt_key, tower_frozen), (fmp_key, projector_frozen)):
            if not frozen:
                _unmodelled(run, key, f"{key.removeprefix('freeze_').replace('_', ' ')} trained under "
                                      f"finetuning_type {ftype}")
    else:
        if ftype == "full" and not registered:  # Idefics3 / SmolVLM: LLaMA-Factory freezes nothing of it
            run.options["train_vision"] = True
            run.notes.append(f"LLaMA-Factory does not register {vision.kind} models in COMPOSITE_MODELS "
                             "(model_utils/visual.py): full tuning trains the vision tower too (--train-vision).")
        _seen(d, run, fvt_key, fmp_key)
    _image_pixels_llama_factory(d, run, vision)


def _frozen_lm_llama_factory(run: Run, kind: str, ftype: str, tower_frozen: bool, projector_frozen: bool) -> None:
    """freeze_language_model under full or freeze tuning (hiyouga/LLaMA-Factory @ ff6d4d12 model_utils/visual.py
    get_forbidden_modules: language_model_keys, language_model and lm_head, frozen by name; model/adapter.py
    _setup_full_tuning trains every other parameter, _setup_freeze_tuning the projector_keys with
    freeze_multi_modal_projector false and the `.{idx}.` layer names, none of the language model's left): the
    projector trained, with freeze_vision_tower false under full tuning the tower too -> --method freeze
    --train-layers none --train-modules projector (--train-vision); with freeze_multi_modal_projector true and
    freeze_vision_tower false under full tuning the tower alone -> --train-modules none --train-vision (Llama-3.2-Vision
    and Llama 4: memory/frozen_lm.py tower_only). Raises _KeyProblem where it is not modelled."""
    from vramcalc.core.memory.frozen_lm import FROZEN_LM_KINDS, TOWER_ONLY_KINDS

    key = "freeze_language_model"
    if kind not in FROZEN_LM_KINDS:
        raise _KeyProblem(key, "the language model frozen is modelled for LLaVA-1.5, LLaVA-NeXT, Qwen2-VL / "
                          f"Qwen2.5-VL, Gemma 3, Llama-3.2-Vision and Llama 4, not {kind} (its estimator has no "
                          "frozen-language-model path): remove it")
    if ftype == "freeze" and not tower_frozen:  # the tower's blocks whose index is a trainable layer id
        raise _KeyProblem("freeze_vision_tower", "false under finetuning_type freeze trains the tower's layers by "
                          "index: not modelled; use finetuning_type full")
    if projector_frozen and tower_frozen:
        raise _KeyProblem(key, "with freeze_multi_modal_projector and freeze_vision_tower true it trains nothing: "
                          "set freeze_multi_modal_projector: false")
    if projector_frozen and kind not in TOWER_ONLY_KINDS:
        raise _KeyProblem(key, "with freeze_multi_modal_projector true and freeze_vision_tower false it trains the "
                          "tower alone: modelled for Llama-3.2-Vision and Llama 4, not "
                          f"{kind}; set freeze_multi_modal_projector: false")
    for opt in ("freeze_layers", "train_head"):
        run.options.pop(opt, None)
    run.options.update(method="freeze", train_layers="none", train_modules="none" if projector_frozen else "projector",
                       **({} if tower_frozen else {"train_vision": True}))


def _image_pixels_llama_factory(d: dict[str, Any], run: Run, vision: VisionSpec) -> None:
    """image_max_pixels / image_min_pixels (data/mm_plugin.py _preprocess_image: an image over the budget is scaled
    down to it, keeping its aspect; one under the floor scaled up). A fixed-size tower's processor then resizes every
    image to its own size (no memory change); Qwen-VL's image tokens follow the pixels: the budget's largest square
    (isqrt of image_max_pixels, 768 px by default) is the worst case, --image-size. LLaVA-NeXT's and Llama 4's tiles
    and tokens follow each image's width and height: the budget's worst image (memory/pixel_budget.py), --image-size
    and --image-width, the default budget applying without the key as Qwen-VL's does."""
    import math

    kind = vision.kind
    if kind in ("qwen2_vl", "qwen2_5_vl"):  # the budget applies by default too (768 x 768: 768 px)
        cap = _strict("image_max_pixels", "image_size", d.get("image_max_pixels", LF_IMAGE_MAX_PIXELS))
        run.options["image_size"] = math.isqrt(cap)
        run.notes.append(f"image_max_pixels {cap}{'' if 'image_max_pixels' in d else ' (the default)'}: images "
                         f"counted at the budget's largest square, {math.isqrt(cap)} px (the worst case; smaller "
                         "images have fewer image tokens).")
        _seen(d, run, "image_max_pixels", "image_min_pixels")
    elif kind in LF_TILED_KINDS:
        _tiled_pixels_llama_factory(d, run, vision)
    elif not any(k in d for k in ("image_max_pixels", "image_min_pixels")):
        return
    elif kind in LF_FIXED_SIZE_KINDS:
        run.notes.append("image_max_pixels / image_min_pixels: no memory change: the processor resizes every image "
                         "to the tower's own size.")
        _seen(d, run, "image_max_pixels", "image_min_pixels")
    elif kind in LF_NO_CHANGE_KINDS:
        run.notes.append(f"image_max_pixels / image_min_pixels: no memory change: {LF_NO_CHANGE_KINDS[kind]}.")
        _seen(d, run, "image_max_pixels", "image_min_pixels")
    else:
        for key in ("image_max_pixels", "image_min_pixels"):
            if key in d:
                _unmodelled(run, key, "the images' size (this model's tiles follow each image's width and height)")


# The towers whose tiles and image tokens follow each image's width and height, under LLaMA-Factory's LlavaNextPlugin
# and Llama4Plugin (data/mm_plugin.py: the image processor's own pixel_values and token counts)
LF_TILED_KINDS = ("llava_next", "llama4")
# The keys read where the images' size does not change memory, and why
LF_NO_CHANGE_KINDS = {
    # transformers 5.24 models/mllama/image_processing_mllama.py pad_batches_and_tiles: every image's tiles padded to
    # max_image_tiles (MllamaPlugin passes the processor's max_image_tiles to the cross-attention mask too)
    "mllama": "the processor pads every image to max_image_tiles tiles, whatever its size",
    # LLaMA-Factory @ ff6d4d12 has no Idefics3 / SmolVLM template (data/template.py) nor plugin (data/mm_plugin.py
    # PLUGINS), so _preprocess_image never resizes its images
    "idefics3": "LLaMA-Factory has no Idefics3 / SmolVLM plugin (data/mm_plugin.py), so it never resizes their images",
}


def _tiled_pixels_llama_factory(d: dict[str, Any], run: Run, vision: VisionSpec) -> None:
    """LLaVA-NeXT / Llama 4 under image_max_pixels: every image reaches the processor within the budget (and
    image_min_pixels only scales small ones up to at most its own area, memory/pixel_budget.py), so the image with the
    most image tokens within it is counted, --image-size (height) and --image-width."""
    from vramcalc.core.memory import pixel_budget

    cap = _strict("image_max_pixels", "image_size", d.get("image_max_pixels", LF_IMAGE_MAX_PIXELS))
    if cap < 1:
        raise _KeyProblem("image_max_pixels", f"{cap} lets no image through: give a positive pixel count")
    floor = _strict("image_min_pixels", "image_size", d.get("image_min_pixels", LF_IMAGE_MIN_PIXELS))
    if floor > cap:  # model_args.py __post_init__ refuses it
        raise _KeyProblem("image_min_pixels", f"{floor} is over image_max_pixels {cap}: give at most {cap}")
    height, width = pixel_budget.worst_image(vision, cap)
    cost = (pixel_budget.llava_next_cost if vision.kind == "llava_next" else pixel_budget.llama4_cost)(vision, height,
                                                                                                       width)
    run.options.update(image_size=height, image_width=width)
    run.notes.append(f"image_max_pixels {cap}{'' if 'image_max_pixels' in d else ' (the default)'}: images counted "
                     f"at the budget's worst case, {height} x {width} px (height x width: {cost[1]} tiles, "
                     f"{cost[0]:,} image tokens each, the most any image within the budget gives; other images have "
                     "as many or fewer).")
    _seen(d, run, "image_max_pixels", "image_min_pixels")


def _names(value: Any) -> list[str]:
    """A LLaMA-Factory comma list (finetuning_args.py split_arg) or a YAML list, as names."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


def _llama_factory(d: dict[str, Any], path: Path) -> Run:
    # Keys from LLaMA-Factory's hparams (model_args.py, finetuning_args.py, data_args.py) and its
    # examples/train_*/*.yaml. Defaults that differ from vramcalc's are applied: cutoff_len 2048
    # (data_args.py), gradient checkpointing on unless disable_gradient_checkpointing (model_args.py).
    run = Run(model=str(d["model_name_or_path"]), mapped=["model_name_or_path"])
    ftype = _choice(LF, d, "finetuning_type", "lora")
    _seen(d, run, "finetuning_type")
    quant = d.get("quantization_bit")
    qmethod = _lf_quantization_method(d, quant)
    bits = LF_HQQ_BITS if qmethod == "hqq" else (4, 8)
    if quant is not None and (isinstance(quant, bool) or quant not in bits):
        raise _KeyProblem("quantization_bit", f"{quant!r:.40} is not modeled; use {', '.join(map(str, bits))}, or "
                          "remove it")
    if ftype == "lora":
        if quant in bits:
            run.options.update(method="qlora", quant_bits=int(quant))
            run.mapped.append("quantization_bit")
            if qmethod == "hqq":
                # model_utils/quantization.py configure_quantization: HqqConfig(nbits=quantization_bit,
                # quant_zero=False, quant_scale=False, axis=0): HqqConfig's group_size 64 (memory/hqq.py)
                run.options.update(quant_backend="hqq", hqq_axis=0)
        else:
            run.options["method"] = "lora"
    elif ftype in ("full", "freeze"):
        run.options["method"] = ftype
    else:
        raise RunFileError(f"{path}: finetuning_type {ftype!r} is not modeled; use lora, full or freeze")
    if ftype == "freeze":
        _freeze_llama_factory(d, run, path)
    _take(d, run, "lora_rank", "lora_rank", int)
    _take(d, run, "lora_alpha", "lora_alpha", float)
    _take(d, run, "lora_dropout", "lora_dropout", float)
    _take(d, run, "lora_target", "lora_targets", _targets)
    if ftype == "lora":
        # LoraArguments' own defaults (hiyouga/LLaMA-Factory @ ff6d4d12 src/llamafactory/hparams/finetuning_args.py):
        # lora_rank 8, lora_target "all" (every Linear but lm_head: model_utils/misc.py find_all_linear_modules),
        # not vramcalc's rank 16 on q_proj,v_proj
        run.options.setdefault("lora_rank", LF_LORA_RANK)
        run.options.setdefault("lora_targets", "all-linear")
    _lora_variants(LF, d, run, "use_dora", "additional_target")  # finetuning_args.py LoraArguments
    if ftype == "lora":
        _llama_pro_lora(d, run, path)
    _llama_factory_moe(d, run, path)
    _llama_factory_retired(d, run, path)
    _vocab_llama_factory(d, run, quant in (4, 8))
    run.options["seq_len"] = _strict("cutoff_len", "seq_len", d.get("cutoff_len", 2048))
    _seen(d, run, "cutoff_len")
    _take(d, run, "per_device_train_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    run.options["grad_checkpointing"] = not _flag(LF, d.get("disable_gradient_checkpointing"),
                                                 "disable_gradient_checkpointing")
    _seen(d, run, "disable_gradient_checkpointing")
    # model_args.py enable_liger_kernel (Liger's patch, fused linear cross-entropy included) and
    # use_unsloth_gc (Unsloth's offloaded checkpointing); memory/loss.py, memory/savers.py.
    if _flag(LF, d.get("enable_liger_kernel"), "enable_liger_kernel"):
        run.options["loss"] = "fused-linear"
        _liger_layers(LF, d, run, "enable_liger_kernel")
    _vlm_llama_factory(d, run, path, ftype)
    if _flag(LF, d.get("use_unsloth_gc"), "use_unsloth_gc") and run.options["grad_checkpointing"]:
        run.options["activation_offload"] = True
    elif run.options["grad_checkpointing"]:
        # model_args.py use_reentrant_gc (default True): model_utils/checkpointing.py prepare_model_for_training
        # passes {"use_reentrant": use_reentrant_gc} to torch.utils.checkpoint (hiyouga/LLaMA-Factory ff6d4d12);
        # use_unsloth_gc replaces that function with Unsloth's (above)
        run.options["reentrant_gc"] = _flag(LF, d.get("use_reentrant_gc", True), "use_reentrant_gc")
    _seen(d, run, "enable_liger_kernel", "use_unsloth_gc", "use_reentrant_gc")
    _liger_trainer_llama_factory(d, run)
    _gc_kwargs_llama_factory(d, run)
    # model_args.py use_unsloth: the model is loaded and wrapped through Unsloth (model/model_utils/unsloth.py
    # FastLanguageModel.from_pretrained, get_peft_model): its kernels (memory/unsloth.py, --kernels unsloth).
    if _flag(LF, d.get("use_unsloth"), "use_unsloth"):
        run.options["kernels"] = "unsloth"
    _seen(d, run, "use_unsloth")
    run.options["stack"] = "llama-factory"
    # model_args.py upcast_lmhead_output: model_utils/checkpointing.py prepare_model_for_training registers
    # _fp32_forward_post_hook on a 16-bit lm_head (memory/upcast.py)
    _take_flag(LF, d, run, "upcast_lmhead_output", "upcast_logits")
    # data_args.py: packing concatenates sequences into cutoff_len rows attending across them (full rows,
    # as estimated); neat_packing keeps them apart with a block-diagonal 4-D mask (data/collator.py
    # prepare_4d_attention_mask), counted as packed rows.
    if _flag(LF, d.get("neat_packing"), "neat_packing"):
        run.options["packing"] = "packed"
        run.notes.append("neat_packing: LLaMA-Factory's collator passes its own 4-D mask in the compute dtype; "
                         "counted as transformers' packed 1-byte mask (under by 1 byte per row position squared)."
                         if str(d.get("flash_attn", "auto")) not in ("fa2", "fa3") else
                         "neat_packing with flash attention: varlen kernels, no mask.")
    _seen(d, run, "packing", "neat_packing")
    # LLaMA-Factory's arguments subclass transformers' Seq2SeqTrainingArguments: optim defaults to the
    # installed transformers' default (adamw_torch_fused on transformers 5 with torch >= 2.8).
    _optim(run, "optim", d.get("optim", TRANSFORMERS_DEFAULTS[CURRENT_TRANSFORMERS][1]))
    if "optim" not in d:
        run.mapped.remove("optim")
    _low_rank(d, run)  # optim galore_adamw / apollo_adamw: TrainingArguments' optim_target_modules and optim_args
    _llama_factory_optimizers(d, run)
    _llama_factory_badam(d, run)
    _take_flag(LF, d, run, "double_quantization", "double_quant")  # model_args.py, default True
    if "quantization_method" in d:  # bnb / hqq: --quant-backend (_lf_quantization_method); unused without bits
        _seen(d, run, "quantization_method")
    if "quantization_type" in d:  # model_args.py Literal["fp4", "nf4"], bitsandbytes' two 4-bit code books
        qtype = str(d["quantization_type"]).lower()
        if qtype not in ("fp4", "nf4"):
            raise _KeyProblem("quantization_type", f"{d['quantization_type']!r:.40} is not one of LLaMA-Factory's "
                              "fp4 / nf4; use one of them, or remove it")
        run.mapped.append("quantization_type")
        if qtype == "fp4" and run.options.get("method") == "qlora" and qmethod == "bnb":
            # bitsandbytes Params4bit stores 4-bit codes and the same absmax constants for both code books
            run.notes.append("quantization_type fp4: the same 4-bit storage as NF4 (bitsandbytes Params4bit): "
                             "no memory change.")
    # LLaMA-Factory upcasts trainable parameters to fp32 unless pure_bf16 (model/adapter.py
    # _setup_full_tuning / cast_trainable_params_to_fp32): full tuning with bf16 is fp32 weights + bf16
    # autocast, i.e. amp-bf16; LoRA keeps a bf16 base with fp32 adapters.
    pure = bool(_flag(LF, d.get("pure_bf16"), "pure_bf16"))
    half = (
        "bf16" if _flag(LF, d.get("bf16"), "bf16") or pure else "fp16" if _flag(LF, d.get("fp16"), "fp16") else None
    )
    run.mapped += [k for k in ("bf16", "fp16", "pure_bf16") if k in d]
    method = run.options["method"]
    if half is None:
        run.options["precision"] = "fp32"
    elif method in ("lora", "qlora"):
        run.options["precision"] = half
        if pure:
            run.options["adapter_dtype"] = "bf16"
    else:
        run.options["precision"] = f"pure-{half}" if pure else f"amp-{half}"
    autocast = None  # the step under the Trainer's autocast, decided once every key is read (below)
    if half is not None and not pure and method in ("lora", "qlora", "freeze"):
        # hiyouga/LLaMA-Factory @ 99e0c3e4 model/adapter.py init_adapter: cast_trainable_params_to_fp32 unless
        # pure_bf16 / BAdam (or ZeRO-3 / FSDP without quantization: their fp32 masters), so the adapters (get_peft_model
        # then `param.data.to(torch.float32)`) or freeze's trained parameters (_setup_freeze_tuning) are fp32 and the
        # rest stays in the load dtype; the Trainer's bf16 / fp16 flag then runs the step under autocast (accelerate
        # prepare_model): --precision autocast-{half}. QLoRA: LLaMA-Factory runs no prepare_model_for_kbit_training
        # (model_utils/checkpointing.py @ 908cd68e prepare_model_for_training casts only with upcast_layernorm):
        # --no-kbit-prep, its norms, embeddings and head in the load dtype.
        autocast = half
    if run.options.get("badam") and method == "full" and half is not None:
        # model/adapter.py: no fp32 upcast under use_badam; BAdam keeps fp32 copies of the active block (an fp32 model
        # stays fp32, which --badam refuses: BAdam warns and copies the block again)
        run.options["precision"] = f"mixed-{half}"
    flash_attn = _choice(LF, d, "flash_attn", "auto")
    if flash_attn == "disabled":
        run.options["attention"] = "eager"
    elif flash_attn in ("fa2", "fa3"):
        run.options["attention"] = "flash"
    _seen(d, run, "flash_attn")
    stage = str(d.get("stage", "sft"))
    if stage == "dpo":
        # finetuning_args.py pref_loss: sigmoid (DPO, default), ipo, hinge, ...; orpo and simpo drop the reference.
        pref_loss = str(d.get("pref_loss", "sigmoid"))
        if pref_loss in ("orpo", "simpo"):
            # train/dpo/trainer.py CustomDPOTrainer: ref_model None for orpo/simpo; the NLL is -chosen log-probs
            # (orpo) or pref_ftx × that (simpo), no second cross-entropy over the logits.
            run.options["objective"] = pref_loss
            if pref_loss == "simpo":
                run.options["chosen_nll"] = False
            _seen(d, run, "pref_loss", "pref_beta", "simpo_gamma", "pref_ftx")
            _unmodelled(run, "stage", f"LLaMA-Factory's CustomDPOTrainer ({pref_loss}) takes log_softmax of its fp32 "
                        "logits and gathers; the estimate models TRL's "
                        f"{'ORPOTrainer' if pref_loss == 'orpo' else 'CPOTrainer'} (the full logits and TRL's "
                        "log-prob kernel)")
        else:
            run.options["objective"] = "ipo" if pref_loss == "ipo" else "dpo"
            _seen(d, run, "pref_loss", "pref_beta")
            # train/dpo/trainer.py CustomDPOTrainer.concatenated_forward computes the full logits of the 2B rows
            # (get_batch_logps); TRL >= 1.0 gathers log-probs without them, which is what the estimate models.
            _unmodelled(run, "stage", "LLaMA-Factory's CustomDPOTrainer materializes the logits of all 2B rows; "
                        "the estimate models TRL's fused log-prob head")
    elif stage == "kto":
        run.options["objective"] = "kto"
        _seen(d, run, "pref_beta", "kto_chosen_weight", "kto_rejected_weight")
        # train/kto/trainer.py CustomKTOTrainer: its own forward with the full logits.
        _unmodelled(run, "stage", "LLaMA-Factory's CustomKTOTrainer materializes the logits; the estimate models "
                    "TRL's fused log-prob head")
    elif stage == "rm":
        run.options["objective"] = "reward"
    elif stage != "sft":
        raise _KeyProblem("stage", f"{stage!r:.40} is not modelled yet; vramcalc models stage sft, dpo, kto and rm")
    _seen(d, run, "stage")
    if _hf_multi_gpu(d, path, run) and method not in ("lora", "qlora") and half is not None:
        run.options["precision"] = f"mixed-{half}"  # ZeRO / FSDP mixed precision keep fp32 masters
    # model_args.py upcast_layernorm: model_utils/checkpointing.py prepare_model_for_training casts every 1-D norm
    # parameter to fp32 (memory/upcast_norms.py; over fp32 / amp weights its note says: no change)
    _take_flag(LF, d, run, "upcast_layernorm", "upcast_norms")
    _fp8_keys(LF, d, run)
    _torch_compile(LF, d, run)  # TrainingArguments' keys, passed on by LLaMA-Factory's parser
    # (upcast_layernorm: --upcast-norms models the same autocast with its fp32 norms, memory/upcast_norms.py)
    if autocast and not (run.options.get("zero") or run.options.get("fsdp", "none") != "none"
                         or run.options.get("badam") or run.options.get("upcast_norms")):
        _autocast16(run, path, autocast, "LLaMA-Factory", {"kbit_prep": False} if method == "qlora" else {})
    _foreign_keys(LF, d, run)
    return _finish(d, run)


# ---- Hugging Face TrainingArguments / TRL ---------------------------------------------------------------

# What transformers does when the file does not say, by major version (the file may name it with a
# `transformers_version` key; without one, the current release is assumed and the note says so).
# transformers 5: from_pretrained(dtype="auto") keeps the checkpoint's dtype (modeling_utils.py), and
# TrainingArguments.optim defaults to adamw_torch_fused with torch >= 2.8 (training_args.py
# `default_optim`, transformers PR #37358). transformers 4: from_pretrained loads in float32 unless
# torch_dtype is given, and optim defaults to adamw_torch (PyTorch's foreach AdamW; PR #25109).
CURRENT_TRANSFORMERS = 5
TRANSFORMERS_DEFAULTS: dict[int, tuple[str, str]] = {
    5: ("auto", "adamw_torch_fused"),
    4: ("float32", "adamw_torch"),
}
_HALF_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16"}


def _transformers_major(d: dict[str, Any], run: Run) -> int:
    raw = d.get("transformers_version")
    if raw is None:
        return CURRENT_TRANSFORMERS
    run.mapped.append("transformers_version")
    head = str(raw).strip().split(".", 1)[0]
    if not head.isdigit():
        raise _KeyProblem("transformers_version", f"{raw!r:.40} is not a version like 4.46.0")
    return min(max(int(head), 4), CURRENT_TRANSFORMERS)


# from_pretrained attn_implementation names (transformers modeling_utils.py) → --attention.
_ATTN_IMPL = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash", "flash_attention_3": "flash",
              "kernels-community/flash-attn": "flash", "kernels-community/vllm-flash-attn3": "flash"}
# Keys only TRL's configs have (SFTConfig and its siblings): the file is read as TRL's, with its defaults.
_TRL_KEYS = {"max_length", "max_seq_length", "packing", "padding_free", "dataset_text_field", "loss_type",
             "completion_only_loss", "assistant_only_loss", "model_init_kwargs", "activation_offloading",
             "packing_strategy", "dataset_kwargs", "eval_packing"}
# SFTConfig.loss_type (trl/trainer/sft_config.py) → --loss: chunked_nll chunks the head and the loss.
_TRL_LOSS = {"nll": "hf", "dft": "hf", "chunked_nll": "chunked"}


def _trl(d: dict[str, Any], run: Run) -> None:
    """TRL SFTConfig keys: packing, padding_free, loss_type, activation_offloading (trl/trainer/sft_config.py)."""
    if not _TRL_KEYS & set(d) or run.options.get("objective", "sft") != "sft":
        return  # not TRL's, or a DPOConfig/KTOConfig/RewardConfig (_preference_trl): not the SFTTrainer stack
    run.options["stack"] = "trl"
    # packing with the default strategy bfd turns padding_free on (sft_config.py): the batch is flattened
    # into one row (DataCollatorForLanguageModeling padding_free); 'wrapped' makes full rows of max_length.
    strategy = str(d.get("packing_strategy", "bfd"))
    padding_free, packing = _flag(HF, d.get("padding_free"), "padding_free"), _flag(HF, d.get("packing"), "packing")
    if padding_free or (packing and strategy.startswith("bfd")):
        run.options["packing"] = "padding-free"
    elif packing:
        run.options["packing"] = "none"  # wrapped: full rows of max_length attending across sequences
    _seen(d, run, "packing", "padding_free", "packing_strategy")
    loss = d.get("loss_type")
    if loss is not None:
        if str(loss) not in _TRL_LOSS:
            raise _KeyProblem("loss_type", f"{loss!r:.40} is not a TRL SFT loss_type; use nll, dft or chunked_nll")
        run.options["loss"] = _TRL_LOSS[str(loss)]
        run.mapped.append("loss_type")
    elif _flag(HF, d.get("use_liger_kernel"), "use_liger_kernel"):
        # TRL 1.16's SFTTrainer (trainer/sft_trainer.py __init__) applies Liger's layer kernels only: it forces
        # liger_kernel_config["fused_linear_cross_entropy"] = False and patches its own fused LM head
        # (add_fused_lm_head), so the loss is the stack's, not Liger's (which TrainingArguments alone would run)
        run.options.pop("loss", None)
        run.notes.append("use_liger_kernel under TRL's SFTTrainer: Liger's layer kernels only (sft_trainer.py "
                         "turns its fused linear cross-entropy off for TRL's own fused LM head); the loss is the trl "
                         "stack's.")
    _take_flag(HF, d, run, "activation_offloading", "activation_offload")


def _trl_router_aux(d: dict[str, Any], run: Run) -> None:
    """TRL's router_aux_loss_coef (sft_config.py, dpo_config.py, grpo_config.py ...; sft_trainer.py __init__:
    aux_loss_enabled when the model's config has output_router_logits and the coefficient is not 0.0, which then
    sets output_router_logits): the router aux loss on or off (memory/router_aux.py refuses it beyond SFT)."""
    coef = d.get("router_aux_loss_coef")
    if coef is not None:
        run.options["router_aux_loss"] = _aux_coef("router_aux_loss_coef", coef) != 0
        run.mapped.append("router_aux_loss_coef")


def _aux_coef(key: str, value: Any) -> float:
    """A router aux loss coefficient: a number (memory/router_aux.py)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _KeyProblem(key, f"{value!r:.40} is not a number; write the coefficient (0 turns the aux loss off)")
    return float(value)


# LLaMA-Factory's configure_moe (src/llamafactory/model/model_utils/moe.py, hiyouga/LLaMA-Factory at 0e0d75dd):
# with moe_aux_loss_coef set, training sets output_router_logits on these model types' configs only.
LF_AUX_LOSS_TYPES = ("dbrx", "granitemoe", "jamba", "jetmoe", "llama4", "mixtral", "olmoe", "phimoe", "qwen2_moe",
                     "qwen3_moe")


def _llama_factory_moe(d: dict[str, Any], run: Run, path: Path) -> None:
    """LLaMA-Factory's moe_aux_loss_coef (model_args.py): the router aux loss on the model types configure_moe lists
    (memory/router_aux.py); on the others it sets nothing."""
    coef = d.get("moe_aux_loss_coef")
    if coef is None:
        return
    run.mapped.append("moe_aux_loss_coef")
    if not _aux_coef("moe_aux_loss_coef", coef):
        return
    try:
        family = resolve_model(run.model or "", path.parent)[0].family
    except VramcalcError:  # a model vramcalc cannot read: the estimate's own error says so later
        family = ""
    if family in LF_AUX_LOSS_TYPES or not family:
        run.options["router_aux_loss"] = True
    else:
        run.notes.append(f"moe_aux_loss_coef: LLaMA-Factory's configure_moe sets output_router_logits for "
                         f"{', '.join(LF_AUX_LOSS_TYPES)} only, not {family}: no router aux loss counted.")


def _liger_kernel_config(d: dict[str, Any], run: Run, applied: bool) -> None:
    """TrainingArguments.liger_kernel_config: keyword arguments of Liger's apply_liger_kernel_to_* (transformers
    integrations/liger.py apply_liger_kernel; liger_kernel monkey_patch.py @ead96b61: fused_linear_cross_entropy on
    and cross_entropy off by default, the two exclusive). The loss keys are mapped; the layer kernels' keep the note.
    Without use_liger_kernel (`applied` false) Trainer never reads it: checked as the tool would read it, then noted."""
    cfg = d.get("liger_kernel_config")
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise _KeyProblem("liger_kernel_config", "a mapping of Liger's apply_liger_kernel_to_* arguments is expected, "
                          "e.g. {cross_entropy: true, fused_linear_cross_entropy: false}")
    fused = _flag(HF, cfg.get("fused_linear_cross_entropy", True), "liger_kernel_config.fused_linear_cross_entropy")
    plain = _flag(HF, cfg.get("cross_entropy", False), "liger_kernel_config.cross_entropy")
    run.mapped.append("liger_kernel_config")
    if not applied:
        run.notes.append("liger_kernel_config without use_liger_kernel: Trainer applies no Liger kernel; no memory "
                         "change.")
        return
    if fused and plain:  # monkey_patch.py asserts "cross_entropy and fused_linear_cross_entropy cannot both be True"
        raise _KeyProblem("liger_kernel_config", "Liger refuses cross_entropy and fused_linear_cross_entropy both "
                          "true; keep one")
    if not fused:
        run.options["loss"] = "liger-cross-entropy" if plain else "hf"


def _liger_trainer_llama_factory(d: dict[str, Any], run: Run) -> None:
    """TrainingArguments.use_liger_kernel in a LLaMA-Factory file (its hparams/training_args.py TrainingArguments
    subclasses Seq2SeqTrainingArguments, so the parser takes it): transformers' Trainer applies Liger's patch to the
    model (trainer.py: apply_liger_kernel(self.model, self.args.liger_kernel_config)), fused linear cross-entropy
    included, as in a transformers file. LLaMA-Factory @ ff6d4d12: the sft trainer computes the loss in the model's
    forward with labels (train/sft/trainer.py CustomSeq2SeqTrainer.compute_loss), so it is enable_liger_kernel's
    --loss fused-linear; the dpo / kto trainers call the model without labels (train/dpo/trainer.py
    concatenated_forward pops them, train/kto/trainer.py), and Liger's forward fuses the loss only with labels
    (liger_kernel transformers/model/*.py lce_forward: skip_logits = training and labels given): the layer kernels
    only; the rm trainer's model is TRL's value-head wrapper, not a PreTrainedModel, which apply_liger_kernel
    (transformers integrations/liger.py) leaves unpatched."""
    if not _flag(LF, d.get("use_liger_kernel"), "use_liger_kernel"):
        _seen(d, run, "use_liger_kernel")
        return
    run.mapped.append("use_liger_kernel")
    stage = str(d.get("stage", "sft"))
    if stage == "rm":
        run.notes.append(LF_LIGER_RM_NOTE)
    elif stage in ("dpo", "kto"):
        _liger_layers(LF, d, run, "use_liger_kernel")
        run.notes.append(LF_LIGER_PREFERENCE_NOTE.format(stage=stage))
    else:
        run.options["loss"] = "fused-linear"
        _liger_layers(LF, d, run, "use_liger_kernel")
        _liger_kernel_config(d, run, applied=True)


def _gc_kwargs_llama_factory(d: dict[str, Any], run: Run) -> None:
    """TrainingArguments' checkpointing switch and keywords in a LLaMA-Factory file. LLaMA-Factory checkpoints through
    its own patch (hiyouga/LLaMA-Factory @ ff6d4d12 model/model_utils/checkpointing.py prepare_model_for_training:
    model.gradient_checkpointing_enable replaced by a MethodType over partial(_gradient_checkpointing_enable), which
    takes gradient_checkpointing_kwargs and use_unsloth_gc only; {"use_reentrant": use_reentrant_gc}, --reentrant-gc),
    unless disable_gradient_checkpointing. transformers 5.24's Trainer (trainer.py) acts on its own switch,
    TrainingArguments gradient_checkpointing / activation_checkpointing, which no LLaMA-Factory code sets: it calls
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=..., every_n_layers=..., offload=...), which
    finds gradient_checkpointing_enable overridden (modeling_utils.py _is_overridden) and hands it every_n_layers and
    offload: with LLaMA-Factory's patch that raises TypeError (checked on the installed transformers and peft,
    tests/test_foreign_keys.py), so the switch is refused; without the patch transformers' own checkpointing runs with
    the file's keywords (_checkpointing_kwargs). Without the switch the keywords are never read (a note)."""
    switch = _hf_gc_key(d) if _is_set(d.get(_hf_gc_key(d))) else None  # the new name, else its alias (5.24)
    if switch is not None and run.options.get("grad_checkpointing"):
        raise _KeyProblem(switch, LF_GC_SWITCH_REFUSAL)
    if switch is not None:  # disable_gradient_checkpointing: true, so the Trainer's own checkpointing is what runs
        gkw_key = ("activation_checkpointing_kwargs" if d.get("activation_checkpointing_kwargs") is not None
                   else "gradient_checkpointing_kwargs")
        run.options.update(grad_checkpointing=True, **_checkpointing_kwargs(d, run, gkw_key))
        run.mapped.append(switch)
        return
    if d.get("gradient_checkpointing_kwargs") is None:
        return
    run.notes.append(LF_GC_KWARGS_NOTE)
    run.mapped.append("gradient_checkpointing_kwargs")


LF_GC_SWITCH_REFUSAL = ("transformers 5.24's Trainer re-enables checkpointing through LLaMA-Factory's patched "
                        "gradient_checkpointing_enable with every_n_layers and offload, which it does not take "
                        "(TypeError); remove it (LLaMA-Factory checkpoints by itself unless "
                        "disable_gradient_checkpointing)")
LF_GC_KWARGS_NOTE = ("gradient_checkpointing_kwargs: no memory change: transformers' Trainer reads it only with "
                     "gradient_checkpointing: true, and LLaMA-Factory checkpoints with its own {use_reentrant: "
                     "use_reentrant_gc} (model_utils/checkpointing.py).")
LF_LIGER_RM_NOTE = ("use_liger_kernel: no memory change at stage rm: LLaMA-Factory's reward model is TRL's value-head "
                    "wrapper, which transformers' apply_liger_kernel leaves unpatched (not a PreTrainedModel).")
LF_LIGER_PREFERENCE_NOTE = ("use_liger_kernel at stage {stage}: Liger's layer kernels only: LLaMA-Factory's {stage} "
                            "trainer calls the model without labels, and Liger fuses the linear cross-entropy only "
                            "with labels, so the logits are made as without it.")


def _llama_factory_optimizers(d: dict[str, Any], run: Run) -> None:
    """LLaMA-Factory's finetuning_args.py GaloreArguments / ApolloArguments / use_adam_mini / use_muon (trainer_utils.py
    _create_galore_optimizer, _create_apollo_optimizer, _create_adam_mini_optimizer, _create_muon_optimizer):
    defaults rank 16, target all (every Linear but the output layer), std / random projection, channel scaling."""
    chosen = [k for k in ("use_galore", "use_apollo", "use_adam_mini", "use_muon") if _flag(LF, d.get(k), k)]
    layerwise = {k: _flag(LF, d.get(f"{k}_layerwise"), f"{k}_layerwise") for k in ("galore", "apollo")}
    _seen(d, run, "use_galore", "use_apollo", "use_adam_mini", "use_muon")
    if not chosen:
        return
    if len(chosen) > 1:
        raise _KeyProblem(chosen[1], f"LLaMA-Factory takes one of {', '.join(chosen)}; keep one")
    if chosen[0] == "use_adam_mini":
        run.options["optimizer"] = "adam-mini"
        return
    if chosen[0] == "use_muon":
        # _create_muon_optimizer: third_party/muon/muon.py Muon over every trainable parameter, whatever `optim` says
        run.options["optimizer"] = "muon"
        return
    kind = "galore" if chosen[0] == "use_galore" else "apollo"
    optim = run.options.get("optimizer")
    # _create_galore_optimizer: GaLoreAdamW for adamw_torch, GaLoreAdamW8bit (not paged) for adamw_bnb_8bit,
    # adamw_8bit and paged_adamw_8bit, GaLoreAdafactor for adafactor (not modelled)
    eight_bit = kind == "galore" and optim in ("adamw-8bit", "paged-adamw-8bit")
    if optim != "adamw" and not eight_bit:
        raise _KeyProblem(chosen[0], f"{kind} over optim {d.get('optim')!r:.30} is not modeled; use optim "
                          "adamw_torch" + (" or adamw_8bit" if kind == "galore" else ""))
    run.options["optimizer"] = "galore-adamw-8bit" if eight_bit else f"{kind}-adamw"
    run.options["optimizer_rank"] = _strict(f"{kind}_rank", "optimizer_rank", d.get(f"{kind}_rank", 16))
    run.options["optimizer_targets"] = _optim_targets(f"{kind}_target", d.get(f"{kind}_target", "all"))
    _projection(run, (f"{kind}_proj_type", d.get(f"{kind}_proj_type", "std")),
                ("apollo_proj", d.get("apollo_proj", "random")),
                ("apollo_scale_type", d.get("apollo_scale_type", "channel")))
    if layerwise[kind]:
        run.options["optimizer_in_bwd"] = True
    _seen(d, run, f"{kind}_rank", f"{kind}_target", f"{kind}_proj_type", f"{kind}_layerwise", f"{kind}_scale",
          f"{kind}_update_interval", "apollo_proj", "apollo_scale_type", "apollo_scale_front")


def _llama_factory_badam(d: dict[str, Any], run: Run) -> None:
    """LLaMA-Factory's BAdamArgument (hparams/finetuning_args.py: use_badam, badam_mode layer|ratio, badam_start_block,
    badam_switch_mode ascending, badam_switch_interval 50, badam_update_ratio 0.05, badam_mask_mode adjacent,
    badam_verbose) and train/trainer_utils.py _create_badam_optimizer: layer mode is --badam (core/memory/badam.py);
    the start block, the switch mode and interval only change when the worst block (the bottom one) comes. What
    BAdam is not modelled over (LoRA, an fp32 model, another optimizer) the spec refuses, naming --badam."""
    mode = _choice(LF, d, "badam_mode", "layer")  # Literals, checked as LLaMA-Factory's parser does, used or not
    switch = _choice(LF, d, "badam_switch_mode", "ascending")
    _seen(d, run, "use_badam", "badam_mode", "badam_start_block", "badam_switch_mode", "badam_switch_interval",
          "badam_verbose", "badam_update_ratio", "badam_mask_mode")  # (the last two: ratio mode's)
    if not _flag(LF, d.get("use_badam"), "use_badam"):
        return
    if mode != "layer":  # BlockOptimizerRatio: sparse masked gradients of every layer, sparse Adam states
        raise _KeyProblem("badam_mode", "ratio mode (BlockOptimizerRatio: every layer's gradient masked to a sparse "
                          "share) is not modelled; use badam_mode layer")
    run.options["badam"] = True
    if switch == "fixed":
        run.notes.append("badam_switch_mode fixed: only block badam_start_block trains, and the layers below it record "
                         "no graph; estimated as the bottom block (an upper bound).")


# TRL ModelConfig's peft keys (trl/trainer/model_config.py; trl/trainer/utils.py get_peft_config and
# get_quantization_config), read when use_peft is true, with TRL's defaults where they differ from vramcalc's.
_TRL_PEFT_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save", "use_dora",
                  "use_rslora", "load_in_4bit", "load_in_8bit", "use_bnb_nested_quant", "lora_task_type")


def _trl_peft(d: dict[str, Any], run: Run) -> None:
    """`trl sft --use_peft`: a LoraConfig from ModelConfig (lora_dropout 0.05 and nested quantization off by
    default), QLoRA through BitsAndBytesConfig; SFTTrainer does not call prepare_model_for_kbit_training and casts
    a quantized model's adapters to bf16 (sft_trainer.py; DoRA's magnitude vectors stay fp32)."""
    # every boolean read as TRL reads it, used or not (a quoted one is refused the same way either way)
    flag = {k: bool(_flag(HF, d.get(k), k)) for k in ("use_peft", "load_in_4bit", "load_in_8bit",
                                                      "use_bnb_nested_quant", "use_dora", "use_rslora")}
    four, eight = flag["load_in_4bit"], flag["load_in_8bit"]
    if four and eight:  # ModelConfig.__post_init__ (trl/trainer/model_config.py)
        raise _KeyProblem("load_in_4bit", "TRL's ModelConfig refuses load_in_4bit with load_in_8bit; keep one")
    if run.options.get("objective") == "ppo":  # TRL 0.19.1 ppo.py never passes its quantization_config (_ppo's note)
        four = eight = False
    if (four or eight) and not flag["use_peft"]:
        # the TRL scripts (trl/scripts/sft.py, dpo.py, ...) pass get_quantization_config(model_args) to the trainer
        # with or without use_peft: a quantized model without adapters, which the Trainer refuses
        raise _KeyProblem("load_in_4bit" if four else "load_in_8bit", TRL_PURELY_QUANTIZED)
    if str(d.get("bnb_4bit_quant_type", "nf4")) not in ("nf4", "fp4"):  # ModelConfig's choices
        raise _KeyProblem("bnb_4bit_quant_type", f"{d['bnb_4bit_quant_type']!r:.30} is not one of TRL's choices: "
                          "nf4 or fp4")
    if not flag["use_peft"]:
        return
    run.mapped.append("use_peft")
    run.options.update(method="lora", lora_dropout=0.05)
    if four or eight:
        _trl_qlora(run, 4 if four else 8, flag["use_bnb_nested_quant"])
        # get_quantization_config: bnb_4bit_compute_dtype = ModelConfig.dtype, the load dtype; the quant type (NF4,
        # FP4) and bnb_4bit_quant_storage store the same bytes (_bnb_config, TRL_QUANT_STORAGE)
        _seen(d, run, "bnb_4bit_quant_type", "bnb_4bit_quant_storage")
    run.mapped += [k for k in ("load_in_4bit", "load_in_8bit", "use_bnb_nested_quant", "lora_task_type")
                   if k in d and k not in run.mapped]
    _take(d, run, "lora_r", "lora_rank", int)
    _take(d, run, "lora_alpha", "lora_alpha", float)
    _take(d, run, "lora_dropout", "lora_dropout", float)
    _take(d, run, "lora_target_modules", "lora_targets", _targets)
    _lora_variants(HF, d, run, "use_dora", "lora_modules_to_save")


# transformers 5.24 trainer_utils.py validate_quantization_for_training, run by Trainer.__init__: a bitsandbytes
# model without a peft adapter is refused ("You cannot perform fine-tuning on purely quantized models").
TRL_PURELY_QUANTIZED = ("a 4/8-bit model without adapters: transformers' Trainer refuses it (\"You cannot perform "
                        "fine-tuning on purely quantized models\", trainer_utils.py); set use_peft: true (TRL's "
                        "LoRA keys) for QLoRA, or remove the quantization")
TRL_QLORA_NOTE = ("TRL QLoRA: adapters cast to bf16 (DoRA's magnitude vectors, small, counted so too); no "
                  "prepare_model_for_kbit_training.")


def _trl_qlora(run: Run, bits: int, double_quant: bool) -> None:
    """A TRL trainer over a bitsandbytes model with peft adapters (TRL 1.16 sft_trainer.py, dpo_trainer.py,
    kto_trainer.py, grpo_trainer.py, rloo_trainer.py, reward_trainer.py __init__): get_peft_model without peft's
    prepare_model_for_kbit_training (--no-kbit-prep), then every trainable parameter but DoRA's magnitude vectors
    cast to bf16 (--adapter-dtype bf16)."""
    run.options.update(method="qlora", quant_bits=bits, kbit_prep=False, adapter_dtype="bf16",
                       double_quant=double_quant)
    run.notes.append(TRL_QLORA_NOTE)


def _hf_gc_key(d: dict[str, Any]) -> str:
    """The checkpointing switch TrainingArguments reads: activation_checkpointing, else its alias (transformers
    5.24)."""
    return "activation_checkpointing" if d.get("activation_checkpointing") is not None else "gradient_checkpointing"


# torch.utils.checkpoint keywords that change no GPU memory (torch 2.13 utils/checkpoint.py checkpoint):
# preserve_rng_state stashes the RNG states in host tensors (torch.cuda.get_rng_state returns a CPU ByteTensor);
# determinism_check "default" compares shapes, dtypes and devices ("none": nothing); debug logs the ops on the host.
_GC_HOST_ONLY = ("preserve_rng_state", "determinism_check", "debug")


def _checkpointing_kwargs(d: dict[str, Any], run: Run, key: str, *, major: int = CURRENT_TRANSFORMERS,
                          given: Any = None, trl: bool = False) -> dict[str, Any]:
    """gradient_checkpointing_kwargs / activation_checkpointing_kwargs as the Trainer passes them (transformers 5.24
    trainer.py: every_n_layers and offload popped for activation_checkpointing_enable, the rest forwarded to
    torch.utils.checkpoint.checkpoint): the options they set (under axolotl's activation offloading:
    _gc_offload_axolotl). `given`: the keywords the tool passes in place of the file's (axolotl's defaults). `trl`:
    a TRL 1.16 trainer's file, whose trainers set use_reentrant false under transformers 4 (below)."""
    raw = d.get(key) if given is None else given
    if raw is None:
        # transformers 4 without keywords: reentrant, unless a TRL trainer runs it (TRL4_REENTRANT_NOTE)
        return {"reentrant_gc": True} if major < 5 and not trl else {}
    if isinstance(raw, str):  # TrainingArguments reads a JSON string into the dict (_VALID_DICT_FIELDS)
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, dict):
        raise _KeyProblem(key, "give a mapping of torch.utils.checkpoint keywords, e.g. {use_reentrant: false}")
    kw = dict(raw)
    out: dict[str, Any] = {}
    reentrant = kw.pop("use_reentrant", None)
    if reentrant is not None and not isinstance(reentrant, bool):
        raise _KeyProblem(key, f"use_reentrant {reentrant!r:.30} is not a boolean; use true or false")
    every = kw.pop("every_n_layers", 1) if major >= 5 else 1
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:  # (0: layer_index % 0 raises)
        raise _KeyProblem(key, f"every_n_layers {every!r:.30} is not a positive whole number of layers")
    if every != 1:
        out.update(ac_every=_strict(f"{key}.every_n_layers", "ac_every", every), ac_layout="hf")
    offload = kw.pop("offload", False) if major >= 5 else False
    if not isinstance(offload, bool):
        raise _KeyProblem(key, f"offload {offload!r:.30} is not a boolean; use true or false")
    if offload:
        # modeling_utils.py _activation_checkpointing_enable(offload=True): save_on_cpu(pin_memory=True) around each
        # checkpoint moves the checkpointed layers' saved inputs to pinned host memory (--ac-offload, memory/savers.py)
        out["ac_offload"] = True
    if reentrant is None:
        # the Trainer passes what is left, or None when nothing is (transformers 5.24 trainer.py `gc_kwargs or None`),
        # and None becomes {"use_reentrant": False} (modeling_utils.py _activation_checkpointing_enable); left keywords
        # without it reach torch 2.13's checkpoint, whose use_reentrant=None means True (utils/checkpoint.py).
        # transformers 4.35-4.57 hand the Trainer's keywords as they are to functools.partial(checkpoint, **kwargs)
        # (modeling_utils.py gradient_checkpointing_enable), so keywords without use_reentrant are torch's reentrant
        # default there too, even {}; TRL 1.16's trainers first setdefault("use_reentrant", False) under transformers
        # < 5 (sft_trainer.py, dpo_trainer.py, kto_trainer.py, grpo_trainer.py, ... __init__)
        reentrant = bool(kw) if major >= 5 else not trl
    if reentrant:
        out["reentrant_gc"] = True
    early_stop = kw.pop("early_stop", True)
    if not isinstance(early_stop, bool):
        raise _KeyProblem(key, f"early_stop {early_stop!r:.30} is not a boolean; use true or false")
    if not early_stop and reentrant:
        # torch utils/checkpoint.py reads early_stop in the non-reentrant path only (the reentrant rerun is the whole
        # layer already)
        run.notes.append(f"{key}: early_stop has no effect with use_reentrant true.")
    elif not early_stop:
        # torch checkpoint early_stop=False: the rerun goes on past the layer's last saved tensor (--no-ac-early-stop)
        out["ac_early_stop"] = False
    if reentrant and kw.get("debug"):
        raise _KeyProblem(key, "torch.utils.checkpoint refuses debug with use_reentrant true; drop one of them")
    if kw.get("determinism_check", "default") not in ("default", "none"):
        raise _KeyProblem(key, f"determinism_check {kw['determinism_check']!r:.30} is not one of torch's: use "
                          "default or none")
    unknown = sorted(set(kw) - set(_GC_HOST_ONLY))
    if unknown:
        raise _KeyProblem(key, f"{', '.join(map(str, unknown))}: not a torch.utils.checkpoint keyword (transformers "
                          f"{major} passes them to it); remove {'it' if len(unknown) == 1 else 'them'}")
    _seen(d, run, key)
    return out


# transformers 4 checkpoints reentrant when the file gives no use_reentrant: 4.35-4.57's Trainer passes its
# gradient_checkpointing_kwargs to PreTrainedModel.gradient_checkpointing_enable, which replaces None with
# {"use_reentrant": True} (modeling_utils.py, 4.57.1 line 3691; 4.35.0 used {}, torch's reentrant default) and hands
# any other dict to functools.partial(torch.utils.checkpoint.checkpoint, **kwargs) as it is; before 4.35 each model
# called torch.utils.checkpoint.checkpoint without use_reentrant (e.g. 4.34.1 models/llama/modeling_llama.py), torch's
# reentrant default too. A TRL trainer under transformers < 5 sets use_reentrant false first (TRL 1.16
# sft_trainer.py __init__ and its siblings).
TF4_REENTRANT_NOTE = ("gradient_checkpointing under transformers 4 (transformers_version): reentrant, as "
                      "modeling_utils.py gradient_checkpointing_enable runs it without use_reentrant "
                      "({\"use_reentrant\": True} for None, torch.utils.checkpoint's reentrant default otherwise): "
                      "counted as --reentrant-gc; set gradient_checkpointing_kwargs: {use_reentrant: false} for "
                      "non-reentrant.")


def _hf_args(d: dict[str, Any], path: Path) -> Run:
    # transformers TrainingArguments fields (and TRL's SFTConfig/DPOConfig on top of them); the model is
    # not in this file: give MODEL (a preset or the model's config.json).
    run = Run()
    major = _transformers_major(d, run)
    load_dtype, default_optim = TRANSFORMERS_DEFAULTS[major]
    _take(d, run, "per_device_train_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    # transformers 5.24 TrainingArguments: activation_checkpointing(_kwargs), gradient_checkpointing(_kwargs) their
    # deprecated aliases, read only when the new name is unset (training_args.py __post_init__)
    gc_key = _hf_gc_key(d)
    _take_flag(HF, d, run, gc_key, "grad_checkpointing")
    _torch_compile(HF, d, run)
    _seen(d, run, *({"gradient_checkpointing", "activation_checkpointing"} - {gc_key}))  # the alias it overrides
    gkw_key = ("activation_checkpointing_kwargs" if d.get("activation_checkpointing_kwargs") is not None
               else "gradient_checkpointing_kwargs")
    _seen(d, run, *({"gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"} - {gkw_key}))
    # TrainingArguments.use_liger_kernel: Trainer applies Liger's patch, fused linear cross-entropy included.
    liger = _flag(HF, d.get("use_liger_kernel"), "use_liger_kernel")
    if liger:
        run.options["loss"] = "fused-linear"
        _liger_layers(HF, d, run, "use_liger_kernel")
    _liger_kernel_config(d, run, applied=bool(liger))
    _seen(d, run, "use_liger_kernel")
    # TRL SFTConfig: max_length (TRL >= 0.16), max_seq_length before it.
    _take(d, run, "max_length", "seq_len", int)
    if any(k in d for k in _PPO_KEYS):  # a PPOConfig of TRL 0.19.1: checked first, it has reward_model_path too
        _ppo(d, run)
    elif any(k in d for k in _ONLINE_DPO_KEYS):  # an OnlineDPOConfig (trl/experimental/online_dpo)
        _online_dpo(d, run)
    elif any(k in d for k in _RLOO_KEYS):  # an RLOOConfig: GRPOConfig's generation keys and its own
        _grpo(HF, d, run, objective="rloo")
    elif any(k in d for k in _GRPO_KEYS) or (isinstance(d.get("loss_type"), str) and d["loss_type"] in (
            "grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")):
        _grpo(HF, d, run)
    else:
        _preference_trl(d, run)
    if "seq_len" not in run.options:
        _take(d, run, "max_seq_length", "seq_len", int)
    _trl(d, run)
    _trl_router_aux(d, run)
    # a file a TRL trainer runs: SFT keys, a preference / GRPO / RLOO / Online DPO / reward config, model_init_kwargs
    trl_file = run.options.get("stack") == "trl" or run.options.get("objective") not in (None, "sft", "ppo") \
        or "model_init_kwargs" in d
    gkw = _checkpointing_kwargs(d, run, gkw_key, major=major, trl=trl_file)
    if run.options.get("grad_checkpointing"):  # (after the GRPO / RLOO / Online DPO readers: on by default there)
        run.options.update(gkw)
        if gkw.get("reentrant_gc") and major < 5:
            run.notes.append(TF4_REENTRANT_NOTE)
    _optim(run, "optim", d.get("optim", default_optim))
    if "optim" not in d and "optim" in run.mapped:
        run.mapped.remove("optim")
    _low_rank(d, run)
    # The dtype the model is loaded in: TRL's model_init_kwargs names it, else the version's default. TRL 1.16's
    # trainers load a model named by a string with create_model_from_path (trl/trainer/utils.py: `dtype =
    # kwargs.get("dtype", "float32")`), and its scripts pass ModelConfig.dtype (trainer/model_config.py, default
    # "float32"; model_init_kwargs override it: scripts/sft.py): a TRL file without a dtype loads in float32, not
    # transformers 5's "auto"
    init = d.get("model_init_kwargs")
    trl_default = False
    objective = run.options.get("objective")
    # TRL 1.16's experimental CPOTrainer and OnlineDPOTrainer (trl/experimental/cpo/cpo_trainer.py,
    # online_dpo/online_dpo_trainer.py __init__) load a model id with from_pretrained, not create_model_from_path:
    # CPO with model_init_kwargs sets `dtype = model_init_kwargs.get("dtype", "auto")`, without them passes no dtype
    # (transformers' default), as examples/scripts/cpo.py does, which never passes ModelConfig.dtype; Online DPO's
    # "auto" leaves dtype out (transformers' default). Online DPO without model_init_kwargs is its example script's
    # (examples/scripts/online_dpo.py: ModelConfig.dtype, default float32, and model_init_kwargs then raise).
    own_default = objective in ("cpo", "simpo") or (objective == "online-dpo" and isinstance(init, dict))
    default_source = ""
    if objective == "ppo":
        default_source = (" (TRL 0.19.1 examples/scripts/ppo/ppo.py loads the policy, reference, reward and value "
                          "models with from_pretrained and no dtype: transformers' default)")
    if isinstance(init, dict) and (init.get("dtype") or init.get("torch_dtype")):
        load_dtype = str(init.get("dtype") or init.get("torch_dtype"))
        run.mapped.append("model_init_kwargs")
    elif own_default:
        if objective != "online-dpo" and isinstance(init, dict):
            load_dtype = "auto"
        trainer = "OnlineDPOTrainer" if objective == "online-dpo" else "CPOTrainer"
        where = "online_dpo/online_dpo" if objective == "online-dpo" else "cpo/cpo"
        default_source = (f" (transformers' default: {trainer} loads without create_model_from_path's float32, "
                          f"TRL 1.16 trl/experimental/{where}_trainer.py)")
        unread = [k for k in ("dtype", "torch_dtype") if d.get(k)]
        if unread:
            run.mapped += unread
            run.notes.append(f"{', '.join(unread)}: no change: ModelConfig's dtype never reaches {trainer} (TRL "
                             "1.16: its example script does not pass it, or model_init_kwargs are given); set "
                             "model_init_kwargs.dtype.")
    elif trl_file and (d.get("dtype") or d.get("torch_dtype")):
        key = "dtype" if d.get("dtype") else "torch_dtype"
        load_dtype = str(d[key])
        run.mapped.append(key)
    elif trl_file:
        load_dtype, trl_default = "float32", True
    if isinstance(init, dict) and init.get("attn_implementation"):
        impl = _ATTN_IMPL.get(str(init["attn_implementation"]))
        if impl is None:
            _unmodelled(run, "model_init_kwargs", f"attn_implementation {init['attn_implementation']!r:.40}")
        else:
            run.options["attention"] = impl
            if "model_init_kwargs" not in run.mapped:
                run.mapped.append("model_init_kwargs")
    if isinstance(init, dict):
        _trl_model_init_kwargs(init, run)
    if d.get("ref_model_init_kwargs") is not None:
        _ref_model_init_kwargs(d["ref_model_init_kwargs"], run, load_dtype)
    half = "bf16" if _flag(HF, d.get("bf16"), "bf16") else "fp16" if _flag(HF, d.get("fp16"), "fp16") else None
    run.mapped += [k for k in ("bf16", "fp16") if k in d]
    run.options["method"] = "full"
    _trl_peft(d, run)
    if isinstance(init, dict) and init.get("quantization_config") is not None:
        _trl_quantization_config(init["quantization_config"], d, run, load_dtype)
    sharded = _hf_multi_gpu(d, path, run)
    loaded16 = _HALF_DTYPES.get(load_dtype) if load_dtype != "auto" else "bf16"
    if sharded and (half or loaded16):
        # DeepSpeed ZeRO and accelerate's FSDP mixed precision keep fp32 master weights
        run.options.setdefault("precision", f"mixed-{half or loaded16}")
    elif loaded16:
        # a 16-bit model trained as loaded: torch AdamW keeps states like the parameters (zeros_like)
        run.options["precision"] = f"pure-{loaded16}"
        if half and run.options["method"] in ("lora", "qlora"):
            # use_peft: peft's get_peft_model (autocast_adapter_dtype=True) makes fp32 adapters over the 16-bit load
            # (TRL QLoRA casts them back to bf16: _trl_peft), and bf16 / fp16 true runs the step under autocast
            # (accelerate accelerator.py prepare_model): --precision autocast-{half}
            _autocast16(run, path, half, "TrainingArguments' bf16 / fp16", {})
    else:  # float32 weights, with autocast when bf16/fp16 is set
        run.options["precision"] = f"amp-{half}" if half else "fp32"
    load_text = ("dtype='auto': the checkpoint's dtype, assumed 16-bit (an fp32 checkpoint: pass "
                 "--precision amp-bf16)" if load_dtype == "auto" else
                 "dtype float32, TRL's default where neither model_init_kwargs nor ModelConfig names one "
                 "(trl/trainer/utils.py create_model_from_path; a model you load yourself in 16 bits: add "
                 "model_init_kwargs.dtype: bfloat16 or pass --precision)" if trl_default else f"dtype {load_dtype}")
    if trl_default and objective == "online-dpo":
        load_text = ("dtype float32, ModelConfig's default, which TRL's examples/scripts/online_dpo.py passes to "
                     "from_pretrained (a model you load yourself in 16 bits: set dtype: bfloat16 or pass --precision)")
    load_text += default_source
    named = "named by transformers_version" if "transformers_version" in d else "the current release; set " \
            "transformers_version in the file for an older one"
    run.notes.append(
        f"read with transformers {major} defaults ({named}): model loaded with {load_text}; optim "
        f"{d.get('optim', default_optim)}; precision {run.options['precision']}. --precision and the other "
        "options on the command line override the file."
    )
    if "seq_len" not in run.options:
        run.notes.append(
            "TrainingArguments holds no sequence length or adapter settings: --seq-len and the "
            "LoRA options come from the command line (or their defaults)."
        )
    _foreign_keys(HF, d, run)
    return _finish(d, run)


# TRL 1.16's trainers (trainer/sft_trainer.py, dpo_trainer.py, kto_trainer.py, grpo_trainer.py, rloo_trainer.py,
# reward_trainer.py __init__) load a model named by a string with create_model_from_path(model, **model_init_kwargs)
# (trainer/utils.py): from_pretrained with the file's keywords, device_map "auto" where the file gives none (None on
# a CPU, and under a multi-GPU or DeepSpeed launch). The keywords that size nothing in a training step:
_TRL_INIT_HARMLESS = {"dtype", "torch_dtype", "attn_implementation", "revision", "trust_remote_code",
                      "low_cpu_mem_usage", "use_cache", "cache_dir", "token"}
# ... and the ones read here: quantization_config (_trl_quantization_config), device_map and max_memory.
_TRL_INIT_READ = {"quantization_config", "device_map", "max_memory"}
# from_pretrained's device_map words (transformers 5.24 integrations/accelerate.py check_and_set_device_map): "auto",
# "balanced" and "balanced_low_0" run get_balanced_memory, which on one GPU and no max_memory gives the model 90 % of
# the GPU's free memory; "sequential" all of it (get_max_memory). What does not fit would go to the CPU.
_DEVICE_MAP_WORDS = ("auto", "balanced", "balanced_low_0", "sequential")

TRL_MAX_MEMORY_UNREAD = ("model_init_kwargs.max_memory: no memory change: from_pretrained reads it only with "
                         "device_map auto / balanced / balanced_low_0 / sequential.")


def _gpu_index(value: Any) -> int | None:
    """The CUDA device a device_map value names (an int, "cuda", "cuda:N", "N"), or None (cpu, disk, ...)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    text = str(value).strip()
    if text == "cuda":  # check_and_set_device_map: the local rank's GPU
        return 0
    text = text.removeprefix("cuda:")
    return int(text) if text.isdigit() else None


def _trl_model_init_kwargs(init: dict[Any, Any], run: Run) -> None:
    """model_init_kwargs' placement keywords: device_map on one GPU (no change, noted), a map with modules on the
    CPU, the disk or several GPUs refused; max_memory beside a device_map word (TRL's default "auto") is
    --gpu-memory-limit --whole-layers; any other keyword but the harmless and quantization_config named as not
    modelled."""
    for key in sorted(set(map(str, init)) - _TRL_INIT_HARMLESS - _TRL_INIT_READ):
        _unmodelled(run, f"model_init_kwargs.{key}", "a from_pretrained keyword vramcalc does not read")
    where = "model_init_kwargs.device_map"
    dmap = init.get("device_map", "auto")  # create_model_from_path's default on a GPU
    if isinstance(dmap, str) and dmap in _DEVICE_MAP_WORDS:
        if init.get("max_memory") is not None:  # _get_device_map reads max_memory for these words only
            # transformers 5.24 integrations/accelerate.py: on one GPU get_balanced_memory keeps the user's limit
            # (balanced_low_0 has no effect there, sequential skips it), then infer_auto_device_map with the model's
            # _no_split_modules: --gpu-memory-limit --whole-layers (memory/placement.py)
            _max_memory_map(init["max_memory"], "model_init_kwargs.max_memory", run, needs_cpu=True)
            run.options["whole_layers"] = True
        elif "device_map" in init:
            run.notes.append(f"{where} {dmap}: no memory change on one GPU while the weights fit in its free memory "
                             f"({'all' if dmap == 'sequential' else '90 %'} of it: transformers get_balanced_memory); "
                             "beyond it modules would go to the CPU, which is not modelled.")
    elif dmap is None:  # from_pretrained loads on the CPU and the Trainer moves the model to its GPU
        if init.get("max_memory") is not None:
            run.notes.append(TRL_MAX_MEMORY_UNREAD)
    else:
        values = list(dmap.values()) if isinstance(dmap, dict) else [dmap]
        gpus = {_gpu_index(v) for v in values}
        if not values or None in gpus:
            raise _KeyProblem(where, "modules on the CPU or the disk (accelerate's offload hooks over a hand-written "
                              "map) are not modelled; remove it (the whole model on the GPU)")
        if len(gpus) > 1:
            raise _KeyProblem(where, "a model split over several GPUs in one process (naive model parallelism) is not "
                              "modelled; remove it, or train data-parallel (--gpus N)")
        run.notes.append(f"{where}: no memory change: the whole model on one GPU.")
        if init.get("max_memory") is not None:  # a map that is not one of the words leaves max_memory unread
            run.notes.append(TRL_MAX_MEMORY_UNREAD)
    if _TRL_INIT_READ & set(init) and "model_init_kwargs" not in run.mapped:
        run.mapped.append("model_init_kwargs")


def _trl_quantization_config(quant: Any, d: dict[str, Any], run: Run, load_dtype: str) -> None:
    """model_init_kwargs.quantization_config (a BitsAndBytesConfig dict, _bnb_config) with TRL's peft keys →
    --method qlora, --quant-bits 4 / 8, --double-quant (_trl_qlora); without adapters refused as the Trainer
    refuses it."""
    where = "model_init_kwargs.quantization_config"
    if any(_flag(HF, d.get(k), k) for k in ("load_in_4bit", "load_in_8bit")):
        # sft_trainer.py (and the other trainers): "You set `quantization_config` both as a trainer argument and in
        # `args.model_init_kwargs`" (the TRL scripts pass the ModelConfig's as the trainer argument)
        raise _KeyProblem(where, "TRL refuses it beside the ModelConfig keys load_in_4bit / load_in_8bit (the "
                          "scripts pass those as the trainer's quantization_config); keep one")
    dtype = "bf16" if load_dtype == "auto" else _REF_DTYPES.get(load_dtype.removeprefix("torch."), "")
    kind = _bnb_config(quant, where, dtype, _REF_DTYPES, "the model")
    if not kind:
        raise _KeyProblem(where, "neither load_in_4bit nor load_in_8bit is true; set one, or remove it")
    if _fp32_compute(quant, dtype):
        run.notes.append(FP32_COMPUTE_NOTE.format(where=where))
    if run.options.get("method") not in ("lora", "qlora"):
        raise _KeyProblem(where, TRL_PURELY_QUANTIZED)
    # bitsandbytes 0.50 backends/cuda/ops.py quantize_4bit: ((n + 1) // (itemsize * 2)) elements of the storage
    # dtype, n / 2 bytes whatever bnb_4bit_quant_storage is (n even, as every Linear's here): no change
    _trl_qlora(run, 8 if kind == "8bit" else 4, kind == "4bit-dq")


_FSDP_STRATEGY = {"full_shard": "full-shard", "shard_grad_op": "shard-grad-op", "hybrid_shard": "hybrid-shard",
                  "no_shard": "no-shard", "1": "full-shard", "2": "shard-grad-op", "3": "no-shard",
                  "4": "hybrid-shard"}  # torch ShardingStrategy enum values (torch/distributed/fsdp/api.py)
# fsdp_config keys that do not change memory (transformers/accelerate FSDP options)
_FSDP_HARMLESS = {"min_num_params", "transformer_layer_cls_to_wrap", "auto_wrap_policy", "state_dict_type",
                  "use_orig_params", "sync_module_states", "cpu_ram_efficient_loading", "version", "xla",
                  "xla_fsdp_grad_ckpt", "xla_fsdp_settings", "backward_prefetch", "limit_all_gathers",
                  "activation_checkpointing", "offload_params", "sharding_strategy", "reshard_after_forward"}


def _hf_multi_gpu(d: dict[str, Any], path: Path, run: Run) -> bool:
    """The multi-GPU keys of TrainingArguments, axolotl and LLaMA-Factory: deepspeed and fsdp."""
    sharded = False
    ds = d.get("deepspeed")
    if _is_set(ds):
        run.mapped.append("deepspeed")
        if isinstance(ds, dict):
            _deepspeed_into(ds, run, "deepspeed.", embedded=True)
            sharded = True
        else:
            found = [c for c in (path.parent / str(ds), Path(str(ds)).expanduser())
                     if path_kind(c, "the deepspeed config") != "missing"]
            if found:
                data = read_data(found[0])
                if not isinstance(data, dict):
                    raise _KeyProblem("deepspeed", f"{found[0]} is not a DeepSpeed JSON object")
                _deepspeed_into(data, run, "deepspeed.", embedded=True)
                run.notes.append(f"deepspeed: read {found[0]}.")
                sharded = True
            else:
                run.mapped.remove("deepspeed")
                _unmodelled(run, "deepspeed", f"{str(ds)[:80]} not found next to the file or here, so the "
                            "ZeRO stage and offload are unknown; pass --zero/--offload")
    fsdp = d.get("fsdp")
    raw = d.get("fsdp_config")
    cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if "fsdp_version" in d:  # axolotl's top-level spelling of fsdp_config.fsdp_version
        cfg = {**cfg, "fsdp_version": _fsdp_version(d["fsdp_version"])}
        run.mapped.append("fsdp_version")
    if _is_set(fsdp) or cfg:
        words = fsdp.split() if isinstance(fsdp, str) else [str(w) for w in fsdp] if isinstance(fsdp, list) else []
        plain = {str(k).removeprefix("fsdp_"): v for k, v in cfg.items()}
        strategy = next((_FSDP_STRATEGY[w] for w in words if w in _FSDP_STRATEGY), None)
        raw = plain.get("sharding_strategy")
        if raw is not None:
            strategy = _FSDP_STRATEGY.get(str(raw).lower()) or strategy
        if plain.get("reshard_after_forward") is False:  # FSDP2: keep gathered params = SHARD_GRAD_OP
            strategy = "shard-grad-op"
        if "hybrid_shard_zero2" in words or str(raw).lower() == "hybrid_shard_zero2":
            _unmodelled(run, "fsdp", "HYBRID_SHARD_ZERO2 (SHARD_GRAD_OP inside a node); counted as hybrid-shard")
            strategy = "hybrid-shard"
        if strategy is None and (_is_set(fsdp) or plain.get("version") == 2 or "reshard_after_forward" in plain):
            strategy = "full-shard"  # FULL_SHARD is torch's and accelerate's default strategy
        if strategy is not None:
            run.options["fsdp"] = strategy
            sharded = strategy != "no-shard"
        if "offload" in words or _truthy(plain.get("offload_params", False)):
            run.options["offload"] = "params"  # FSDP CPUOffload(offload_params=True): params, grads, states
        if _truthy(plain.get("activation_checkpointing", False)):
            run.options["grad_checkpointing"] = True
        run.mapped += [k for k in ("fsdp", "fsdp_config") if k in d and k not in run.unmodelled]
        for key in plain:
            if key not in _FSDP_HARMLESS and _is_set(plain[key]):  # a setting left off changes nothing
                _unmodelled(run, f"fsdp_config.{key}", "an FSDP setting vramcalc does not model")
    return sharded


def _fsdp_version(value: Any) -> int:
    """axolotl fsdp_version: 1 (FSDP1 FlatParameter units) or 2 (FSDP2 fully_shard, per-parameter DTensor shards).
    --fsdp models either the same way: one unit per decoder layer beside the root, each GPU holding its shard of
    every parameter, the root and the current and next layer gathered. FSDP1's flat units pad to a multiple of the
    world size (a few elements), and HF Trainer wraps LoRA's trainable leaves as their own FSDP1 units
    (transformers distributed/fsdp.py update_fsdp_plugin_peft, peft utils/other.py fsdp_auto_wrap_policy), so no
    frozen weight shares a flat parameter with an adapter (--fsdp-frozen-grads stays off)."""
    if str(value) not in ("1", "2"):
        raise _KeyProblem("fsdp_version", f"{value!r:.20} is not an FSDP version; use 1 or 2")
    return int(value)


# DeepSpeed zero_optimization keys that size buffers, with their defaults (deepspeed/runtime/zero/config.py).
# core/memory/distributed.py counts the reduce bucket (5e8) and the stage-3 prefetch bucket (5e7) at these
# defaults as fixed constants; a config that sets another value is estimated at the default, and says so.
DS_ZERO_DEFAULTS: dict[str, int | bool] = {
    "reduce_bucket_size": 500_000_000,
    "allgather_bucket_size": 500_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "sub_group_size": 1_000_000_000,
    "contiguous_gradients": True,
}
_DS_HARMLESS = {"stage", "offload_optimizer", "offload_param", "overlap_comm", "reduce_scatter",
                "allgather_partitions", "round_robin_gradients", "stage3_gather_16bit_weights_on_model_save",
                "stage3_gather_fp16_weights_on_model_save", "load_from_fp32_weights", "elastic_checkpoint",
                "ignore_unused_parameters", "cpu_offload"}


def _deepspeed(d: dict[str, Any], path: Path) -> Run:
    # A DeepSpeed config (https://www.deepspeed.ai/docs/config-json/): ZeRO stage, offload, bf16/fp16, the
    # micro-batch and accumulation. It names no model: give MODEL (a preset or a config.json).
    run = Run(notes=[])
    _deepspeed_into(d, run, "", embedded=False)
    run.options.setdefault("method", "full")
    _foreign_keys("deepspeed", d, run)
    return _finish(d, run)


def _ds_value(run: Run, key: str, value: Any, embedded: bool) -> Any:
    """None for DeepSpeed's "auto" (the HF integration fills it from TrainingArguments)."""
    if isinstance(value, str) and value == "auto":
        if not embedded:
            run.notes.append(f"{key}: \"auto\" is filled by the Hugging Face Trainer from its own arguments; "
                             "vramcalc keeps its default (set the option on the command line).")
        run.mapped.append(key)
        return None
    return value


def _deepspeed_into(d: dict[str, Any], run: Run, prefix: str, embedded: bool) -> None:
    for key, option in (("train_micro_batch_size_per_gpu", "batch_size"),
                        ("gradient_accumulation_steps", "grad_accum")):
        if key in d:
            value = _ds_value(run, prefix + key, d[key], embedded)
            if value is not None:
                run.options[option] = _strict(prefix + key, option, value)
                run.mapped.append(prefix + key)
    if "train_batch_size" in d:
        run.mapped.append(prefix + "train_batch_size")  # = micro-batch x accumulation x GPUs: per GPU above
    for half in ("bf16", "fp16"):
        section = d.get(half)
        if isinstance(section, dict) and "enabled" in section:
            enabled = _ds_value(run, f"{prefix}{half}.enabled", section["enabled"], embedded)
            if enabled is not None:
                run.mapped.append(f"{prefix}{half}.enabled")
                # DeepSpeed's bf16/fp16 optimizers keep fp32 master weights
                if _flag("deepspeed", enabled, f"{prefix}{half}.enabled"):
                    run.options["precision"] = f"mixed-{half}"
    zero = d.get("zero_optimization")
    if zero is not None and not isinstance(zero, dict):
        raise _KeyProblem(prefix + "zero_optimization", f"expected a mapping, got {zero!r:.40}")
    zero = zero or {}
    stage = _ds_value(run, prefix + "zero_optimization.stage", zero.get("stage", 0), embedded)
    if stage is not None:
        run.options["zero"] = _strict(prefix + "zero_optimization.stage", "zero", stage)
        if run.options["zero"] not in (0, 1, 2, 3):
            raise _KeyProblem(prefix + "zero_optimization.stage", f"{stage!r} is not a ZeRO stage 0-3")
        run.mapped.append(prefix + "zero_optimization.stage")
    for section, offload in (("offload_optimizer", "optimizer"), ("offload_param", "params")):
        sub = zero.get(section)
        device = str(sub.get("device", "none")) if isinstance(sub, dict) else "none"
        if device in ("cpu", "nvme"):
            if run.options.get("offload") != "params":  # params implies optimizer
                run.options["offload"] = offload
            run.mapped.append(f"{prefix}zero_optimization.{section}")
            if device == "nvme":
                run.notes.append(f"zero_optimization.{section}: nvme is counted like cpu (off the GPU); "
                                 "host RAM figures then overstate what NVMe offload needs.")
    if zero.get("cpu_offload") is True:  # DeepSpeed's old spelling of offload_optimizer cpu
        run.options.setdefault("offload", "optimizer")
    for key, default in DS_ZERO_DEFAULTS.items():
        if key not in zero:
            continue
        name = f"{prefix}zero_optimization.{key}"
        value = _ds_value(run, name, zero[key], embedded)
        if value is None:
            continue
        if value == default or (not isinstance(value, bool) and isinstance(value, int | float)
                                and float(value) == float(default)):
            run.mapped.append(name)
        else:
            _unmodelled(run, name, f"{value!r:.20} where vramcalc counts DeepSpeed's default {default:,} "
                        "(core/memory/distributed.py uses the default bucket sizes as fixed constants)")
    if zero.get("overlap_comm") is True and run.options.get("zero") in (1, 2):
        _unmodelled(run, f"{prefix}zero_optimization.overlap_comm",
                    "overlap_comm keeps extra reduce buckets (DeepSpeed docs: 4.5x reduce_bucket_size)")
    for key in zero:
        if key not in _DS_HARMLESS and key not in DS_ZERO_DEFAULTS:
            _unmodelled(run, f"{prefix}zero_optimization.{key}", "a ZeRO setting vramcalc does not model")
    if zero:
        run.mapped.append(prefix + "zero_optimization")
    opt = d.get("optimizer")
    if isinstance(opt, dict) and "type" in opt:
        kind = str(opt["type"]).lower()
        if kind in ("adam", "adamw", "fusedadam", "cpuadam", "deepspeedcpuadam"):
            run.options.update(optimizer="adamw", optimizer_impl="fused")  # DeepSpeed FusedAdam / CPUAdam
            run.mapped.append(prefix + "optimizer")
        else:
            _unmodelled(run, prefix + "optimizer", f"optimizer {opt['type']!s:.30}; counted as AdamW")
    ac = d.get("activation_checkpointing")
    if isinstance(ac, dict) and any(_is_set(ac.get(k)) for k in ("cpu_checkpointing", "partition_activations")):
        _unmodelled(run, prefix + "activation_checkpointing", "DeepSpeed's partitioned / CPU activation "
                    "checkpoints")
    if not embedded:
        run.notes.append("a DeepSpeed config names no model and no sequence length: give MODEL and --seq-len "
                         "on the command line; the command line overrides the file.")


# ---- accelerate -----------------------------------------------------------------------------------------

# accelerate's config file (`accelerate config`, `accelerate launch --config_file`; ClusterConfig in
# accelerate/commands/config/config_args.py): keys about the launch, not about memory.
_ACCELERATE_HARMLESS = {"compute_environment", "debug", "machine_rank", "main_process_ip", "main_process_port",
                        "main_training_function", "rdzv_backend", "same_network", "tpu_env", "tpu_use_cluster",
                        "tpu_use_sudo", "gpu_ids", "downcast_bf16", "enable_cpu_affinity",
                        "num_cpu_threads_per_process"}
# deepspeed_config keys of accelerate's DeepSpeed plugin that do not change GPU memory
_ACCELERATE_DS_HARMLESS = {"zero3_init_flag", "zero3_save_16bit_model", "gradient_clipping", "deepspeed_hostfile",
                           "deepspeed_multinode_launcher", "deepspeed_exclusion_filter", "deepspeed_inclusion_filter",
                           "offload_optimizer_nvme_path", "offload_param_nvme_path"}


def _accelerate(d: dict[str, Any], path: Path) -> Run:
    # The launcher's processes and machines, its mixed precision, and the DeepSpeed / FSDP / Megatron-LM
    # plugin settings. It names no model: give MODEL (and --seq-len) on the command line.
    run = Run(notes=[])
    _foreign_keys("accelerate", d, run)
    kind = str(d.get("distributed_type", "NO")).upper()
    run.mapped.append("distributed_type")
    nodes = _strict("num_machines", "nodes", d.get("num_machines", 1))
    processes = _strict("num_processes", "gpus_per_node", d.get("num_processes", 1))
    if nodes < 1 or processes < 1:
        raise _KeyProblem("num_processes" if processes < 1 else "num_machines", "must be 1 or more")
    if processes % nodes:
        raise _KeyProblem("num_processes", f"{processes} processes (all machines together) do not split evenly "
                          f"over {nodes} machines")
    run.options.update(nodes=nodes, gpus_per_node=processes // nodes)
    _seen(d, run, "num_machines", "num_processes")
    mp = str(d.get("mixed_precision", "no")).lower()
    run.mapped += ["mixed_precision"] if "mixed_precision" in d else []
    half = mp if mp in ("bf16", "fp16") else None
    if mp == "fp8":
        _unmodelled(run, "mixed_precision", "fp8 training (Transformer Engine / torchao / MS-AMP)")
    if kind == "DEEPSPEED":
        _accelerate_deepspeed(d, path, run)
        # accelerate turns DeepSpeed's bf16/fp16 on from mixed_precision; without either it trains in fp32
        run.options.setdefault("precision", f"mixed-{half}" if half else "fp32")
    elif kind == "FSDP":
        raw = d.get("fsdp_config")
        cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
        _hf_multi_gpu({"fsdp": "full_shard", "fsdp_config": cfg}, path, run)  # FULL_SHARD: accelerate's default
        run.mapped = [k for k in run.mapped if k != "fsdp"]
        if half:  # accelerate's FSDP MixedPrecision: bf16 compute over the fp32 sharded parameters
            run.options["precision"] = f"mixed-{half}"
    elif kind == "MEGATRON_LM":
        _accelerate_megatron(d, run)
        if half:  # Megatron-LM's optimizer keeps fp32 main parameters for bf16/fp16 training
            run.options["precision"] = f"mixed-{half}"
    elif kind not in ("NO", "MULTI_GPU"):
        _unmodelled(run, "distributed_type", f"{kind}: vramcalc models CUDA GPUs (DDP, DeepSpeed, FSDP, Megatron-LM)")
    if kind in ("NO", "MULTI_GPU", "FSDP") and "precision" not in run.options:
        run.notes.append(f"accelerate's mixed_precision {mp} autocasts the script's model, whose dtype is the "
                         "script's: precision left at auto (a 16-bit model as loaded; for a model loaded in fp32 "
                         "pass --precision amp-bf16).")
    dynamo = d.get("dynamo_config")
    if isinstance(dynamo, dict) and str(dynamo.get("dynamo_backend", "NO")).upper() != "NO":
        # accelerate's TorchDynamoPlugin: torch.compile(model, backend=dynamo_backend.lower(), mode=dynamo_mode)
        # (accelerator.py prepare_model); --compile (memory/compiled.py), read as TrainingArguments' keys
        _torch_compile(HF, {"torch_compile_backend": str(dynamo["dynamo_backend"]).lower(),
                            "torch_compile_mode": dynamo.get("dynamo_mode")}, run)
        run.mapped = [k for k in run.mapped if not k.startswith("torch_compile")] + ["dynamo_config"]
    elif "dynamo_config" in d:
        run.mapped.append("dynamo_config")
    if _truthy(d.get("use_cpu", False)):
        _unmodelled(run, "use_cpu", "training on the CPU: no GPU memory to estimate")
    run.options.setdefault("method", "full")
    taken = {k.split(".", 1)[0] for k in (*run.mapped, *run.unmodelled)}
    plugins = {"deepspeed_config", "fsdp_config", "megatron_lm_config"}  # another distributed_type's: unused
    for key in d:
        if key not in taken | plugins | _ACCELERATE_HARMLESS and _is_set(d[key]):
            _unmodelled(run, str(key), "an accelerate setting vramcalc does not model")
    run.notes.append("an accelerate config names no model and no sequence length: give MODEL and --seq-len on "
                     "the command line; the command line overrides the file.")
    return _finish(d, run)


def _accelerate_deepspeed(d: dict[str, Any], path: Path, run: Run) -> None:
    """accelerate's deepspeed_config: a DeepSpeed JSON it names, or its own zero_stage / offload keys."""
    raw = d.get("deepspeed_config")
    ds: dict[str, Any] = raw if isinstance(raw, dict) else {}
    file = ds.get("deepspeed_config_file")
    if _is_set(file):
        found = [c for c in (path.parent / str(file), Path(str(file)).expanduser())
                 if path_kind(c, "the deepspeed config") != "missing"]
        if not found:
            _unmodelled(run, "deepspeed_config.deepspeed_config_file", f"{str(file)[:80]} not found next to the "
                        "file or here, so the ZeRO stage and offload are unknown; pass --zero/--offload")
            return
        data = read_data(found[0])
        if not isinstance(data, dict):
            raise _KeyProblem("deepspeed_config.deepspeed_config_file", f"{found[0]} is not a DeepSpeed JSON object")
        _deepspeed_into(data, run, "deepspeed_config.deepspeed_config_file.", embedded=True)
        run.mapped.append("deepspeed_config.deepspeed_config_file")
        run.notes.append(f"deepspeed_config_file: read {found[0]}.")
        return
    if "zero_stage" in ds:
        run.options["zero"] = _strict("deepspeed_config.zero_stage", "zero", ds["zero_stage"])
        if run.options["zero"] not in (0, 1, 2, 3):
            raise _KeyProblem("deepspeed_config.zero_stage", f"{ds['zero_stage']!r} is not a ZeRO stage 0-3")
    for key, offload in (("offload_optimizer_device", "optimizer"), ("offload_param_device", "params")):
        if str(ds.get(key, "none")).lower() in ("cpu", "nvme") and run.options.get("offload") != "params":
            run.options["offload"] = offload  # params implies optimizer
    if "gradient_accumulation_steps" in ds:
        run.options["grad_accum"] = _strict("deepspeed_config.gradient_accumulation_steps", "grad_accum",
                                            ds["gradient_accumulation_steps"])
    known = {"zero_stage", "offload_optimizer_device", "offload_param_device", "gradient_accumulation_steps"}
    run.mapped += [f"deepspeed_config.{k}" for k in ds if k in known]
    for key in ds:
        if key not in known and key not in _ACCELERATE_DS_HARMLESS and _is_set(ds[key]):
            _unmodelled(run, f"deepspeed_config.{key}", "a DeepSpeed setting vramcalc does not model")


def _accelerate_megatron(d: dict[str, Any], run: Run) -> None:
    """accelerate's megatron_lm_config: tensor and pipeline degrees, sequence parallelism, recomputation."""
    raw = d.get("megatron_lm_config")
    cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for key, option in (("megatron_lm_tp_degree", "tp"), ("megatron_lm_pp_degree", "pp")):
        if key in cfg:
            run.options[option] = _strict(f"megatron_lm_config.{key}", option, cfg[key])
            run.mapped.append(f"megatron_lm_config.{key}")
    for key, option in (("megatron_lm_sequence_parallelism", "sequence_parallel"),
                        ("megatron_lm_recompute_activations", "grad_checkpointing")):
        if key in cfg:
            run.options[option] = _truthy(cfg[key])
            run.mapped.append(f"megatron_lm_config.{key}")
    if _truthy(cfg.get("megatron_lm_use_distributed_optimizer", False)):
        _unmodelled(run, "megatron_lm_config.megatron_lm_use_distributed_optimizer",
                    "Megatron's distributed optimizer shards the fp32 states over data-parallel ranks")
    for key in cfg:
        if key not in run.mapped and f"megatron_lm_config.{key}" not in (*run.mapped, *run.unmodelled):
            if key not in ("megatron_lm_gradient_clipping", "megatron_lm_num_micro_batches") and _is_set(cfg[key]):
                _unmodelled(run, f"megatron_lm_config.{key}", "a Megatron-LM setting vramcalc does not model")
    if cfg:
        run.mapped.append("megatron_lm_config")


# ---- torchtune ------------------------------------------------------------------------------------------

TORCHTUNE_OPTIM = {
    "torch.optim.AdamW": "adamw",
    "torch.optim.Adam": "adamw",
    "torch.optim.SGD": "sgd",
    "bitsandbytes.optim.AdamW8bit": "adamw-8bit",
    "bitsandbytes.optim.PagedAdamW8bit": "paged-adamw-8bit",
    "bitsandbytes.optim.PagedAdamW": "paged-adamw",
    "torchao.optim.AdamW8bit": "torchao-adamw-8bit",
    "torchao.optim.AdamW4bit": "torchao-adamw-4bit",
    "torchao.optim.AdamWFp8": "torchao-adamw-fp8",
}


def torchtune_model_names(component: str) -> list[str]:
    """Preset candidates for a torchtune builder: lora_llama3_1_8b → llama-3.1-8b, llama3.1-8b, ..."""
    builder = component.rsplit(".", 1)[-1]
    base = re.sub(r"^(q?lora_)", "", builder)
    dotted = re.sub(r"(?<=[a-z])(\d)_(\d)(?=_)", r"\1.\2", base)  # version: llama3_1_ → llama3.1_
    dotted = re.sub(r"_(\d+)_(\d+)b$", r"_\1.\2b", dotted)  # size: _0_5b → _0.5b
    spaced = dotted.replace("_", "-")
    split_family = re.sub(r"^([a-z]+)(\d)", r"\1-\2", spaced)  # llama3.1-8b → llama-3.1-8b
    return list(dict.fromkeys([split_family, spaced, base]))


def _torchtune(d: dict[str, Any], path: Path) -> Run:
    # torchtune recipe configs (recipes/configs/*/*.yaml): model._component_ names the builder
    # (lora_/qlora_ prefix: the method), batch_size, gradient_accumulation_steps,
    # enable_activation_checkpointing, dtype, optimizer._component_, tokenizer.max_seq_len.
    model_cfg: dict[str, Any] = d["model"]
    component = str(model_cfg["_component_"])
    builder = component.rsplit(".", 1)[-1]
    run = Run(mapped=["model"])
    run.options["method"] = (
        "qlora" if builder.startswith("qlora_") else "lora" if builder.startswith("lora_") else "full"
    )
    for candidate in torchtune_model_names(component):
        try:
            run.model = presets.find_model(candidate).name
            break
        except UnknownPresetError:
            continue
    if run.model is None:
        ckpt = d.get("checkpointer", {}) if isinstance(d.get("checkpointer"), dict) else {}
        local = Path(str(ckpt.get("checkpoint_dir", ""))) / "config.json"
        if ckpt.get("checkpoint_dir") and local.is_file():
            run.model = str(local)
        else:  # MODEL on the command line may still name it; without one, the command says so
            run.notes.append(
                f"torchtune model {builder!r} matches no preset and checkpointer.checkpoint_dir "
                "holds no config.json."
            )
    for key in ("lora_rank", "lora_alpha", "lora_dropout"):
        if key in model_cfg:
            run.options[key] = _strict(f"model.{key}", key, model_cfg[key])
    modules = model_cfg.get("lora_attn_modules", [])
    if not isinstance(modules, list):
        raise _KeyProblem("model.lora_attn_modules", f"expected a list of module names, got {modules!r:.40}")
    targets = [str(m) for m in modules]
    if _flag(TT, model_cfg.get("apply_lora_to_mlp"), "model.apply_lora_to_mlp"):
        targets += ["gate_proj", "up_proj", "down_proj"]  # torchtune w1, w3, w2 in HF names
    if _flag(TT, model_cfg.get("apply_lora_to_output"), "model.apply_lora_to_output"):
        targets.append("lm_head")
    if model_cfg.get("use_dora") is not None:  # torchtune lora_llama* builders: use_dora (DoRALinear)
        run.options["dora"] = bool(_flag(TT, model_cfg.get("use_dora"), "model.use_dora"))
    if targets:
        # torchtune calls the attention output projection output_proj; HF and vramcalc call it o_proj.
        run.options["lora_targets"] = ",".join("o_proj" if t == "output_proj" else t for t in targets)
    _take(d, run, "batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    _take_flag(TT, d, run, "enable_activation_checkpointing", "grad_checkpointing")
    # recipes' `compile`: each TransformerSelfAttentionLayer and the loss compiled with TORCH_COMPILE_BACKEND, inductor
    # by default (training/_compile.py @ bd2a0fc7); --compile --compile-scope layers (memory/compiled.py)
    _take_flag(TT, d, run, "compile", "compile")
    if run.options.get("compile"):
        run.options["compile_scope"] = "layers"
    # torchtune trains every parameter, adapters included, in the `dtype` it names, with no master copy;
    # torch optimizers then keep states like the parameters (zeros_like): pure-bf16, bf16 adapters.
    # training.get_dtype(None) is fp32; absent, the recipes' configs default to bf16
    dtype = "fp32" if "dtype" in d and d["dtype"] is None else _choice(TT, d, "dtype", "bf16")
    run.options["precision"] = "fp32" if dtype == "fp32" else "pure-bf16"
    if dtype != "fp32" and run.options["method"] in ("lora", "qlora"):
        run.options["adapter_dtype"] = "bf16"
    _seen(d, run, "dtype")
    opt = d.get("optimizer")
    if isinstance(opt, dict) and "_component_" in opt:
        name = TORCHTUNE_OPTIM.get(str(opt["_component_"]))
        if name:
            run.options["optimizer"] = name
            if name == "adamw":
                run.options["optimizer_impl"] = "fused" if _flag(TT, opt.get("fused"), "optimizer.fused") else "foreach"
            run.mapped.append("optimizer")
        else:
            run.notes.append(f"optimizer {opt['_component_']} is not modeled; counted as AdamW.")
    tok = d.get("tokenizer")
    if isinstance(tok, dict) and tok.get("max_seq_len"):
        run.options["seq_len"] = _strict("tokenizer.max_seq_len", "seq_len", tok["max_seq_len"])
        run.mapped.append("tokenizer")
    _torchtune_savers(d, run)
    _torchtune_fsdp(d, run)
    run.options["stack"] = "torchtune"
    ds = d.get("dataset")
    if isinstance(ds, dict) and _flag(TT, ds.get("packed"), "dataset.packed"):
        # torchtune datasets/_packed.py PackedDataset: rows of max_seq_len with a block-causal mask per row
        run.options["packing"] = "packed"
        run.mapped.append("dataset")
    _foreign_keys(TT, d, run)
    return _finish(d, run)


TORCHTUNE_LOSS = {
    "torchtune.modules.loss.CEWithChunkedOutputLoss": "chunked",
    "torchtune.modules.loss.cross_entropy_loss.CEWithChunkedOutputLoss": "chunked",
    # torchtune >= 0.6 (modules/loss/cross_entropy_loss.py): its recipes' configs now name this one
    "torchtune.modules.loss.LinearCrossEntropyLoss": "linear-chunked",
    "torchtune.modules.loss.cross_entropy_loss.LinearCrossEntropyLoss": "linear-chunked",
    "torch.nn.CrossEntropyLoss": "hf",
}


# torchtune's preference recipes (recipes/lora_dpo_single_device.py, full_dpo_distributed.py): DPOLoss and RSOLoss
# (torchtune/rlhf/loss/dpo.py; IPOLoss in torchtune < 0.4) are arithmetic on the 2B per-row log-probs of the same
# step, the policy's full fp32 logits and log_softmax and then the reference's: --objective dpo --dpo-head logits.
# SimPOLoss skips the reference and averages the log-probs (return_average_logprobs): not modelled, refused.
TORCHTUNE_DPO_LOSSES = ("DPOLoss", "RSOLoss", "IPOLoss")
TORCHTUNE_SIMPO_WHY = ("SimPOLoss is not modelled: torchtune's DPO recipes run it without the reference "
                       "(--dpo-head logits counts one); use DPOLoss, or TRL's CPOTrainer (--objective simpo)")


def _torchtune_savers(d: dict[str, Any], run: Run) -> None:
    """torchtune recipe keys of the memory savers (memory/loss.py, memory/savers.py)."""
    loss = d.get("loss")
    if isinstance(loss, dict) and "_component_" in loss:
        cls = str(loss["_component_"]).rsplit(".", 1)[-1]
        if cls == "SimPOLoss":
            raise _KeyProblem("loss._component_", TORCHTUNE_SIMPO_WHY)
        name = TORCHTUNE_LOSS.get(str(loss["_component_"]))
        if cls in TORCHTUNE_DPO_LOSSES:  # the step of recipes/*_dpo_*.py (memory/online_dpo.py, scale_copy)
            run.options.update(objective="dpo", dpo_head="logits", loss="hf")
            run.mapped.append("loss")
        elif name is None:
            _unmodelled(run, "loss", f"{str(loss['_component_']).rsplit('.', 1)[-1]} is not modeled (counted as the "
                        "full-logits loss)")
        else:
            run.options["loss"] = name
            if name in ("chunked", "linear-chunked") and "num_output_chunks" in loss:
                run.options["loss_chunks"] = _strict("loss.num_output_chunks", "loss_chunks", loss["num_output_chunks"])
            if name == "linear-chunked" and _flag(TT, loss.get("tp_enabled"), "tp_enabled"):
                _unmodelled(run, "loss.tp_enabled", "the loss over tensor-parallel (sharded) logits")
            if name == "linear-chunked" and "mask_ignored_tokens" in loss \
                    and not _flag(TT, loss["mask_ignored_tokens"], "mask_ignored_tokens"):
                run.notes.append("loss.mask_ignored_tokens false: each chunk is projected whole (no index copy); "
                                 "counted with the masked gather, over by up to 24 B per token (and one hidden "
                                 "state per token when the head trains).")
            run.mapped.append("loss")
    _take_flag(TT, d, run, "optimizer_in_bwd", "optimizer_in_bwd")
    _take_flag(TT, d, run, "enable_activation_offloading", "activation_offload")
    # ac_mode selective + ac_option k (recipes' _setup_model → training.apply_selective_activation_checkpointing).
    if _choice(TT, d, "ac_mode", None) == "selective" and d.get("ac_option") is not None:
        run.options.update(grad_checkpointing=True, ac_every=_strict("ac_option", "ac_every", d["ac_option"]))
    _seen(d, run, "ac_mode", "ac_option")


# torchtune module names of custom_sharded_layers and vramcalc's (HF's) names for them (--fsdp-units).
TORCHTUNE_FSDP_UNITS = {"tok_embeddings": "embed_tokens", "output": "lm_head"}


def _torchtune_fsdp(d: dict[str, Any], run: Run) -> None:
    """The distributed recipes' FSDP keys (torchtune training/_distributed.py shard_model): fsdp_cpu_offload passes
    fully_shard a CPUOffloadPolicy (parameters, gradients and optimizer states in host RAM, the step on the CPU;
    the GPU keeps the unsharded parameters of the units in flight): --fsdp full-shard --offload params.
    custom_sharded_layers adds a shard condition per name, each module its own unit: --fsdp-units."""
    offload = _flag(TT, d.get("fsdp_cpu_offload"), "fsdp_cpu_offload") if "fsdp_cpu_offload" in d else False
    _seen(d, run, "fsdp_cpu_offload")
    layers = d.get("custom_sharded_layers")
    names = [str(x) for x in (layers if isinstance(layers, list) else [layers] if layers else [])]
    unknown = [n for n in names if n not in TORCHTUNE_FSDP_UNITS]
    if unknown:
        raise _KeyProblem("custom_sharded_layers", f"{unknown[0]!r:.40} is not modelled as its own FSDP unit; "
                          "use tok_embeddings and/or output (the decoder layers are units already)")
    _seen(d, run, "custom_sharded_layers")
    if offload or names:  # keys of the distributed recipes: fully_shard, reshard after forward by default
        run.options.setdefault("fsdp", "full-shard")
    if offload:
        run.options["offload"] = "params"
    if names:
        run.options["fsdp_units"] = ",".join(TORCHTUNE_FSDP_UNITS[n] for n in names)


_READERS = {
    "deepspeed": _deepspeed,
    "accelerate": _accelerate,
    "axolotl": _axolotl,
    "llama-factory": _llama_factory,
    "hf-training-args": _hf_args,
    "torchtune": _torchtune,
}


# ---- model references -----------------------------------------------------------------------------------
