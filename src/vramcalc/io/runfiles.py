"""Run files and other tools' training configs, read offline, as vramcalc option values.

A vramcalc run file is YAML or JSON whose keys are the estimate options (`batch_size` or `batch-size`)
plus `model`, `gpu` and an optional `name`; it may hold one run, a list of runs, or `runs: [...]`.
The training configs of axolotl, LLaMA-Factory, Hugging Face `TrainingArguments` (JSON) and torchtune
are recognised by their keys; what affects memory is mapped and every other key is reported as ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramcalc.core.errors import UnknownPresetError, VramcalcError
from vramcalc.core.options import BY_NAME, OptionError, coerce
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


@dataclass
class Run:
    """One run read from a file: where the model and GPU come from, and the option values it sets."""

    name: str | None = None
    model: str | None = None
    gpu: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "vramcalc"  # vramcalc, axolotl, llama-factory, hf-training-args, torchtune
    path: str | None = None
    mapped: list[str] = field(default_factory=list)  # keys of the source file that were used
    ignored: list[str] = field(default_factory=list)  # keys of the source file with no effect here
    notes: list[str] = field(default_factory=list)

    def source_doc(self) -> dict[str, Any]:
        """JSON `config_source`: which file, read as what, what was used and what was ignored."""
        return {
            "path": self.path,
            "kind": self.kind,
            "mapped": list(self.mapped),
            "ignored": list(self.ignored),
        }

    def note(self) -> str | None:
        """One human line on what a foreign config contributed (None for vramcalc's own run files)."""
        if self.kind == "vramcalc":
            return None
        shown = ", ".join(self.ignored[:12]) + (
            f" (+{len(self.ignored) - 12} more)" if len(self.ignored) > 12 else ""
        )
        return (
            f"read {self.path} as a {self.kind} config: used {', '.join(self.mapped) or 'nothing'}; "
            f"ignored {shown or 'nothing'}."
        )


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
            runs = [run]
    except _KeyProblem as e:
        raise RunFileError(f"{path}: {e.key}: {e.problem}") from None
    if not runs:
        raise RunFileError(f"{path}: no runs in the file; give option keys (model, method, batch_size, ...)")
    return runs


def detect(data: Any) -> str:
    """Which tool wrote this config, from its keys."""
    if isinstance(data, dict):
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
                known = ", ".join(sorted(_RUN_KEYS | set(BY_NAME)))
                raise RunFileError(f"{path}: run {i}: unknown key {key!r}; known keys: {known}")
        run.mapped = list(entry)
        runs.append(run)
    return runs


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
}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "auto", "1", "yes", "unsloth")


def _take(data: dict[str, Any], run: Run, key: str, option: str, convert: Any = None) -> None:
    if key in data and data[key] is not None:
        # int/float conversions are the option's own, strict (no 1.5 -> 1, no True -> 1, no inf)
        value = convert(data[key]) if convert in (_truthy, _targets) else data[key]
        run.options[option] = _strict(key, option, value)
        run.mapped.append(key)


def _seen(data: dict[str, Any], run: Run, *keys: str) -> None:
    """Mark keys as used when the file has them (their absence meant a default that was applied)."""
    run.mapped += [k for k in keys if k in data]


def _optim(run: Run, key: str, name: Any) -> None:
    hit = HF_OPTIM.get(str(name))
    if hit is None:
        run.notes.append(f"{key}: {name!r} is not modeled; counted as AdamW.")
        run.ignored.append(key)
        return
    run.options["optimizer"] = hit[0]
    if hit[1]:
        run.options["optimizer_impl"] = hit[1]
    run.mapped.append(key)


def _finish(data: dict[str, Any], run: Run) -> Run:
    run.ignored += [str(k) for k in data if k not in run.mapped and str(k) not in run.ignored]
    return run


def _targets(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    text = str(value)
    return "all-linear" if text in ("all", "all-linear", "all_linear") else text


# ---- axolotl --------------------------------------------------------------------------------------------


def _axolotl(d: dict[str, Any], _path: Path) -> Run:
    # Keys from axolotl's config reference (docs/config-reference.qmd): base_model, adapter, load_in_4bit,
    # load_in_8bit, lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_target_linear, sequence_len,
    # micro_batch_size, gradient_accumulation_steps, gradient_checkpointing, optimizer, bf16, fp16.
    run = Run(model=str(d["base_model"]), mapped=["base_model"])
    adapter = d.get("adapter")
    if adapter not in (None, "lora", "qlora"):  # axolotl's load_adapter accepts these two spellings only
        raise _KeyProblem("adapter", f"{adapter!r:.40} is not an axolotl adapter vramcalc models; use lora or qlora "
                          "(lowercase, as axolotl spells them), or remove it for full fine-tuning")
    if adapter in ("lora", "qlora"):
        run.mapped.append("adapter")
        four, eight = _truthy(d.get("load_in_4bit", False)), _truthy(d.get("load_in_8bit", False))
        if adapter == "qlora" or four:
            run.options.update(method="qlora", quant_bits=4)
        elif eight:
            run.options.update(method="qlora", quant_bits=8)  # 8-bit base with LoRA adapters
        else:
            run.options["method"] = "lora"
        run.mapped += [k for k in ("load_in_4bit", "load_in_8bit") if k in d]
    else:
        run.options["method"] = "full"
    _take(d, run, "lora_r", "lora_rank", int)
    _take(d, run, "lora_alpha", "lora_alpha", float)
    _take(d, run, "lora_dropout", "lora_dropout", float)
    if _truthy(d.get("lora_target_linear", False)):
        run.options["lora_targets"] = "all-linear"
        run.mapped.append("lora_target_linear")
    else:
        _take(d, run, "lora_target_modules", "lora_targets", _targets)
    _take(d, run, "sequence_len", "seq_len", int)
    _take(d, run, "micro_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    _take(d, run, "gradient_checkpointing", "grad_checkpointing", _truthy)
    if str(d.get("gradient_checkpointing", "")).lower() in ("offload", "unsloth"):
        # axolotl gradient_checkpointing: offload / unsloth (utils/gradient_checkpointing): checkpointed
        # layer inputs offloaded to host RAM (memory/savers.py).
        run.options.update(grad_checkpointing=True, activation_offload=True)
    _savers_axolotl(d, run)
    if "optimizer" in d:
        _optim(run, "optimizer", d["optimizer"])
    # axolotl loads the model in the training dtype (torch_dtype = bfloat16 when bf16 is set), so the
    # Trainer's torch AdamW keeps states like the parameters: pure-bf16 / pure-fp16 here.
    if _truthy(d.get("bf16", False)):
        run.options["precision"] = "pure-bf16" if run.options["method"] == "full" else "bf16"
        run.mapped.append("bf16")
    elif _truthy(d.get("fp16", False)):
        run.options["precision"] = "pure-fp16" if run.options["method"] == "full" else "fp16"
        run.mapped.append("fp16")
    if _truthy(d.get("eager_attention", False)):
        run.options["attention"] = "eager"
        run.mapped.append("eager_attention")
    return _finish(d, run)


def _savers_axolotl(d: dict[str, Any], run: Run) -> None:
    # axolotl integrations: liger (integrations/liger/args.py liger_fused_linear_cross_entropy) and
    # cut_cross_entropy (integrations/cut_cross_entropy/args.py); memory/loss.py.
    if _truthy(d.get("cut_cross_entropy", False)):
        run.options["loss"] = "cut"
    elif _truthy(d.get("liger_fused_linear_cross_entropy", False)):
        run.options["loss"] = "fused-linear"
    _seen(d, run, "cut_cross_entropy", "liger_fused_linear_cross_entropy")


# ---- LLaMA-Factory --------------------------------------------------------------------------------------


def _llama_factory(d: dict[str, Any], path: Path) -> Run:
    # Keys from LLaMA-Factory's hparams (model_args.py, finetuning_args.py, data_args.py) and its
    # examples/train_*/*.yaml. Defaults that differ from vramcalc's are applied: cutoff_len 2048
    # (data_args.py), gradient checkpointing on unless disable_gradient_checkpointing (model_args.py).
    run = Run(model=str(d["model_name_or_path"]), mapped=["model_name_or_path"])
    ftype = str(d.get("finetuning_type", "lora"))
    _seen(d, run, "finetuning_type")
    quant = d.get("quantization_bit")
    if quant is not None and (isinstance(quant, bool) or quant not in (4, 8)):
        raise _KeyProblem("quantization_bit", f"{quant!r:.40} is not modeled; use 4 or 8, or remove it")
    if ftype == "lora":
        if quant in (4, 8):
            run.options.update(method="qlora", quant_bits=int(quant))
            run.mapped.append("quantization_bit")
        else:
            run.options["method"] = "lora"
    elif ftype in ("full", "freeze"):
        run.options["method"] = ftype
    else:
        raise RunFileError(f"{path}: finetuning_type {ftype!r} is not modeled; use lora, full or freeze")
    if ftype == "freeze":
        trainable = _strict("freeze_trainable_layers", "freeze_layers", d.get("freeze_trainable_layers", 2))
        # finetuning_args.py default 2
        if trainable < 0:
            raise RunFileError(
                f"{path}: negative freeze_trainable_layers (train the bottom layers) is not "
                "modeled; pass --method freeze --freeze-layers N with the layers frozen from the "
                "bottom"
            )
        spec, _ = resolve_model(run.model or "", path.parent)
        run.options["freeze_layers"] = max(0, (spec.num_layers or trainable) - trainable)
        _seen(d, run, "freeze_trainable_layers")
    _take(d, run, "lora_rank", "lora_rank", int)
    _take(d, run, "lora_alpha", "lora_alpha", float)
    _take(d, run, "lora_dropout", "lora_dropout", float)
    _take(d, run, "lora_target", "lora_targets", _targets)
    run.options["seq_len"] = _strict("cutoff_len", "seq_len", d.get("cutoff_len", 2048))
    _seen(d, run, "cutoff_len")
    _take(d, run, "per_device_train_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    run.options["grad_checkpointing"] = not _truthy(d.get("disable_gradient_checkpointing", False))
    _seen(d, run, "disable_gradient_checkpointing")
    # model_args.py enable_liger_kernel (Liger's patch, fused linear cross-entropy included) and
    # use_unsloth_gc (Unsloth's offloaded checkpointing); memory/loss.py, memory/savers.py.
    if _truthy(d.get("enable_liger_kernel", False)):
        run.options["loss"] = "fused-linear"
    if _truthy(d.get("use_unsloth_gc", False)) and run.options["grad_checkpointing"]:
        run.options["activation_offload"] = True
    _seen(d, run, "enable_liger_kernel", "use_unsloth_gc")
    if "optim" in d:
        _optim(run, "optim", d["optim"])
    else:
        run.options.update(optimizer="adamw", optimizer_impl="foreach")  # Trainer default adamw_torch
    # LLaMA-Factory upcasts trainable parameters to fp32 unless pure_bf16 (model/adapter.py
    # _setup_full_tuning / cast_trainable_params_to_fp32): full tuning with bf16 is fp32 weights + bf16
    # autocast, i.e. amp-bf16; LoRA keeps a bf16 base with fp32 adapters.
    pure = _truthy(d.get("pure_bf16", False))
    half = (
        "bf16" if _truthy(d.get("bf16", False)) or pure else "fp16" if _truthy(d.get("fp16", False)) else None
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
    if str(d.get("flash_attn", "auto")) == "disabled":
        run.options["attention"] = "eager"
    _seen(d, run, "flash_attn")
    if str(d.get("stage", "sft")) in ("dpo", "kto", "ppo", "rm"):
        run.notes.append(
            f"stage {d['stage']}: reference/reward models and pairs of sequences are not counted; "
            "the estimate is for one policy model on single sequences."
        )
    _seen(d, run, "stage")
    return _finish(d, run)


# ---- Hugging Face TrainingArguments ---------------------------------------------------------------------


def _hf_args(d: dict[str, Any], _path: Path) -> Run:
    # transformers TrainingArguments fields; the model is not in this file: give MODEL (a preset or the
    # model's config.json). The model is assumed loaded in fp32 (from_pretrained's default), so bf16=True
    # means autocast over fp32 weights (amp-bf16); pass --precision pure-bf16 if you load in bfloat16.
    run = Run()
    _take(d, run, "per_device_train_batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    _take(d, run, "gradient_checkpointing", "grad_checkpointing", _truthy)
    # TrainingArguments.use_liger_kernel: Trainer applies Liger's patch, fused linear cross-entropy included.
    if _truthy(d.get("use_liger_kernel", False)):
        run.options["loss"] = "fused-linear"
    _seen(d, run, "use_liger_kernel")
    _optim(run, "optim", d.get("optim", "adamw_torch"))
    if "optim" not in d:
        run.mapped.remove("optim")
    if _truthy(d.get("bf16", False)):
        run.options["precision"] = "amp-bf16"
        run.mapped.append("bf16")
    elif _truthy(d.get("fp16", False)):
        run.options["precision"] = "amp-fp16"
        run.mapped.append("fp16")
    else:
        run.options["precision"] = "fp32"
    run.options["method"] = "full"
    run.notes.append(
        "TrainingArguments holds no sequence length or adapter settings: --seq-len and the "
        "LoRA options come from the command line (or their defaults)."
    )
    return _finish(d, run)


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
    if _truthy(model_cfg.get("apply_lora_to_mlp", False)):
        targets += ["gate_proj", "up_proj", "down_proj"]  # torchtune w1, w3, w2 in HF names
    if _truthy(model_cfg.get("apply_lora_to_output", False)):
        targets.append("lm_head")
    if targets:
        # torchtune calls the attention output projection output_proj; HF and vramcalc call it o_proj.
        run.options["lora_targets"] = ",".join("o_proj" if t == "output_proj" else t for t in targets)
    _take(d, run, "batch_size", "batch_size", int)
    _take(d, run, "gradient_accumulation_steps", "grad_accum", int)
    _take(d, run, "enable_activation_checkpointing", "grad_checkpointing", _truthy)
    # torchtune trains every parameter, adapters included, in the `dtype` it names, with no master copy;
    # torch optimizers then keep states like the parameters (zeros_like): pure-bf16, bf16 adapters.
    dtype = str(d.get("dtype", "bf16"))
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
                run.options["optimizer_impl"] = "fused" if _truthy(opt.get("fused", False)) else "foreach"
            run.mapped.append("optimizer")
        else:
            run.notes.append(f"optimizer {opt['_component_']} is not modeled; counted as AdamW.")
    tok = d.get("tokenizer")
    if isinstance(tok, dict) and tok.get("max_seq_len"):
        run.options["seq_len"] = _strict("tokenizer.max_seq_len", "seq_len", tok["max_seq_len"])
        run.mapped.append("tokenizer")
    _torchtune_savers(d, run)
    return _finish(d, run)


TORCHTUNE_LOSS = {
    "torchtune.modules.loss.CEWithChunkedOutputLoss": "chunked",
    "torchtune.modules.loss.cross_entropy_loss.CEWithChunkedOutputLoss": "chunked",
    "torch.nn.CrossEntropyLoss": "hf",
}


def _torchtune_savers(d: dict[str, Any], run: Run) -> None:
    """torchtune recipe keys of the memory savers (memory/loss.py, memory/savers.py)."""
    loss = d.get("loss")
    if isinstance(loss, dict) and "_component_" in loss:
        name = TORCHTUNE_LOSS.get(str(loss["_component_"]))
        if name is None:
            run.notes.append(f"loss {loss['_component_']} is not modeled; counted as the full-logits loss.")
        else:
            run.options["loss"] = name
            if name == "chunked" and "num_output_chunks" in loss:
                run.options["loss_chunks"] = int(loss["num_output_chunks"])
            run.mapped.append("loss")
    _take(d, run, "optimizer_in_bwd", "optimizer_in_bwd", _truthy)
    _take(d, run, "enable_activation_offloading", "activation_offload", _truthy)
    # ac_mode selective + ac_option k (recipes' _setup_model → training.apply_selective_activation_checkpointing).
    if str(d.get("ac_mode", "")) == "selective" and str(d.get("ac_option", "")).isdigit():
        run.options.update(grad_checkpointing=True, ac_every=max(1, int(d["ac_option"])))
    _seen(d, run, "ac_mode", "ac_option")


_READERS = {
    "axolotl": _axolotl,
    "llama-factory": _llama_factory,
    "hf-training-args": _hf_args,
    "torchtune": _torchtune,
}


# ---- model references -----------------------------------------------------------------------------------
