"""Partial fine-tuning by name: a set of decoder layers and the modules outside them that train (--method freeze with
--train-layers / --train-modules).

The libraries set requires_grad by parameter name and leave the rest frozen:
- axolotl `unfrozen_parameters` (axolotl-ai-cloud/axolotl src/axolotl/utils/freeze.py freeze_layers_except, commit
  107c67ae5a236ab458454e8daf3b77a98ce56867): every parameter frozen, then those whose name a pattern matches
  (re.match, anchored at the start; every `.` not followed by `+` is a literal dot) train. A `[start:end]` suffix
  registers a gradient hook that zeroes the other rows in place: the parameter keeps requires_grad and its whole
  gradient and optimizer states, so it counts as the whole tensor.
- LLaMA-Factory freeze tuning (hiyouga/LLaMA-Factory src/llamafactory/model/adapter.py _setup_freeze_tuning, commit
  01d87b8267b92bc0caacc746fa4f875e390b64e2): the layers trainable_layer_ids (the top freeze_trainable_layers, or with
  use_llama_pro every stride-th, stride = num_layers // freeze_trainable_layers, the top one of each group:
  range(stride - 1, num_layers + stride - 1, stride)), freeze_trainable_modules "all" (the whole layers) and
  freeze_extra_modules (modules outside the layers: embed_tokens, norm, lm_head).

What is modelled is whole decoder layers x {embed_tokens, norm, lm_head} on dense decoders of alike layers: gradients
and optimizer states count the trained parameters only (memory/weights.py _trainable_count), and the activations follow
autograd (memory/__init__.py _activation_plan): without checkpointing and with a frozen embedding, layers below the
lowest trained one record no graph, the lowest trained one saves its set without an input gradient, a frozen layer
above it saves what its input's gradient needs; with checkpointing transformers' enable_input_require_grads
(modeling_utils.py _activation_checkpointing_enable, for every input_ids model) makes every layer keep its input.
Part of a layer (its self_attn or mlp alone) is refused in one line.

Standard library only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.lora_layers import not_alike
from vramcalc.core.lora_layers import text as layers_text

if TYPE_CHECKING:  # annotations only
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = ("axolotl utils/freeze.py freeze_layers_except; LLaMA-Factory model/adapter.py _setup_freeze_tuning; "
          "transformers modeling_utils.py enable_input_require_grads")
# The modules outside the decoder layers that --train-modules names (LLaMA-Factory freeze_extra_modules' names).
OUTER = ("embed_tokens", "norm", "lm_head")
# Modules inside a layer: training one without the rest of its layer is not modelled (refused in one line).
INNER = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
# Families whose parameter names are transformers' llama layout (model.embed_tokens, model.layers.N.self_attn.q_proj,
# .mlp.gate_proj, .input_layernorm, .post_attention_layernorm, model.norm, lm_head): the names axolotl patterns are
# matched against (modeling_llama.py, modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py, modeling_gemma.py).
NAMED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma")
# A vision-language model's projector (LlavaMultiModalProjector, Qwen2-VL's visual.merger): --train-modules projector
# with --train-layers none is LLaMA-Factory's freeze_language_model (hiyouga/LLaMA-Factory @ ff6d4d12
# model/adapter.py _setup_full_tuning / _setup_freeze_tuning, model_utils/visual.py get_forbidden_modules): the
# language model frozen, the projector (and with --train-vision the tower) trained (memory/vision.py frozen_lm).
IMAGE_SIDE = ("projector",)


class ModulesError(ValueError):
    """A --train-modules value that does not parse (options.py turns it into an OptionError)."""


def parse_modules(value: object) -> tuple[str, ...] | None:
    """`embed_tokens,lm_head` → the sorted names; `auto` or None → None (--train-head decides); `none` → ()."""
    if value is None:
        return None
    items = [str(x).strip() for x in value] if isinstance(value, list | tuple) else \
        [p.strip() for p in str(value).split(",")]
    low = [x.lower() for x in items if x]
    if low in ([], ["auto"]):
        return None
    if low == ["none"]:
        return ()
    items = [x for x in items if x]
    for x in items:
        if x in INNER:
            raise ModulesError(f"{x} alone (part of each layer) is not modelled: train whole layers with "
                               "--train-layers")
        if x not in OUTER + IMAGE_SIDE:
            raise ModulesError(f"{x!r:.40} is not a module outside the layers: give {', '.join(OUTER)}, projector "
                               "or none")
    return tuple(sorted(set(items), key=(OUTER + IMAGE_SIDE).index))


def projector_only(t: TrainingSpec) -> bool:
    """--method freeze --train-modules projector: the language model frozen, the image side trained."""
    return t.method == "freeze" and "projector" in (getattr(t, "train_modules", None) or ())


def tower_only(t: TrainingSpec) -> bool:
    """--method freeze --train-layers none --train-modules none --train-vision: the language model and the projector
    frozen, the vision tower alone trained (LLaMA-Factory freeze_language_model with freeze_vision_tower false and
    freeze_multi_modal_projector true: memory/frozen_lm.py)."""
    return (t.method == "freeze" and getattr(t, "train_layers", None) == () and getattr(t, "train_modules", None) == ()
            and bool(getattr(t, "train_vision", False)))


def active(t: TrainingSpec) -> bool:
    """Whether the run names its trained layers or outer modules (--method freeze with --train-layers/-modules)."""
    return t.method == "freeze" and t.mode == "train" and (
        getattr(t, "train_layers", None) is not None or getattr(t, "train_modules", None) is not None)


def trained_layers(m: ModelSpec, t: TrainingSpec) -> tuple[int, ...]:
    """The trained decoder layers: --train-layers, or the top ones above --freeze-layers."""
    n = m.num_layers or 1
    if getattr(t, "train_layers", None) is not None:
        return tuple(t.train_layers)
    return tuple(range(min(t.freeze_layers or 0, n), n))


def outer_modules(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """The trained modules outside the layers: --train-modules, or norm and lm_head with --train-head. A tied head is
    the embedding matrix: training either trains both."""
    mods = set(t.train_modules if getattr(t, "train_modules", None) is not None else
               (("norm", "lm_head") if t.train_head else ()))
    if m.tie_word_embeddings and mods & {"embed_tokens", "lm_head"}:
        mods |= {"embed_tokens", "lm_head"}
    return tuple(x for x in OUTER if x in mods)


def check(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """The layer range and the runs this is modelled and traced for: SpecError / UnsupportedCombination in one line;
    the run's note."""
    if not active(t):
        return ()
    if projector_only(t) or tower_only(t):  # a vision-language model's image side: memory/frozen_lm.py
        if m.vision is None:
            what = "--train-modules projector trains a vision-language model's projector" if projector_only(t) else \
                "--train-vision trains a vision-language model's tower"
            raise UnsupportedCombination(f"{what}; {m.name} reads text only: drop it")
        return ()
    n = m.num_layers or 0
    layers = trained_layers(m, t)
    if layers and max(layers) >= n:
        raise SpecError("train_layers", f"layer {max(layers)} is beyond {m.name}'s {n} layers: give indices 0 to "
                        f"{n - 1}")
    why = not_alike(m)
    if why and m.family == "llama4" and not layers and outer_modules(m, t) == ("embed_tokens",):
        why = ""
    if why:
        pass
    elif t.objective != "sft":
        why = f"--objective {t.objective} is not traced with it"
    elif t.zero or t.fsdp != "none" or t.tp > 1 or t.pp > 1 or t.offload != "none" or t.gpus_per_node * t.nodes > 1:
        why = "multi-GPU, sharded or offloaded runs are not traced with it"
    elif t.activation_offload or t.ac_every > 1:
        why = "activation offload and selective checkpointing are not traced with it"
    elif t.kernels != "hf" or t.loss != "hf":
        why = "fused kernels and losses (--kernels, --loss) are not traced with it"
    elif t.badam or getattr(t, "lisa_layers", None) is not None:
        why = "--badam and --lisa-layers choose their own trained layers"
    elif t.add_tokens:
        why = "--add-tokens is not traced with it"
    if why:
        raise UnsupportedCombination(f"--train-layers/--train-modules: {why}; use --freeze-layers N")
    outer = outer_modules(m, t)
    if not layers and not outer:
        raise SpecError("", "--train-layers none with no --train-modules trains no parameter: name a layer or a "
                        "module")
    k = len(layers)
    embed = "embed_tokens" in outer
    note = (f"partial fine-tuning: layers {layers_text(layers) if layers else 'none'} trained ({k} of {n})"
            + (f" and {', '.join(outer)}" if outer else "") + "; gradients and optimizer states of those only; ")
    if t.grad_checkpointing:
        note += "with checkpointing every layer keeps its input (enable_input_require_grads)."
    elif embed:
        note += "the trained embedding gives every layer's input a gradient: every layer records a graph."
    elif layers and min(layers):
        note += f"the {min(layers)} layer{'s' if min(layers) != 1 else ''} below layer {min(layers)} record no graph."
    elif layers:
        note += "layer 0's input needs no gradient."
    else:
        note += "no layer records a graph."
    return (note,)


def parameter_names(m: ModelSpec) -> tuple[list[tuple[int | None, str, str]], dict[int, int]]:
    """Every parameter name of the model as named_parameters() lists it (a tied head once, as the embedding), each
    with its layer (None outside the layers) and module (OUTER or INNER); and each layer's name count. Only the
    llama layout (NAMED_FAMILIES): UnsupportedCombination otherwise."""
    if m.family not in NAMED_FAMILIES or not m.has_architecture or m.num_experts:
        raise UnsupportedCombination(f"unfrozen_parameters is mapped for the llama layout's names "
                                     f"({', '.join(NAMED_FAMILIES)}), not {m.name} ({m.family}): use --method freeze "
                                     "--train-layers")
    bias = m.family == "qwen2"  # Qwen2Attention: q, k, v with bias=True (modeling_qwen2.py)
    inner: list[tuple[str, str]] = []
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        inner.append(("self_attn", f"self_attn.{proj}.weight"))
        if bias and proj != "o_proj":
            inner.append(("self_attn", f"self_attn.{proj}.bias"))
    if m.qk_norm:  # Qwen3Attention q_norm / k_norm (modeling_qwen3.py)
        inner += [("self_attn", "self_attn.q_norm.weight"), ("self_attn", "self_attn.k_norm.weight")]
    inner += [("mlp", f"mlp.{p}.weight") for p in ("gate_proj", "up_proj", "down_proj")]
    inner += [("input_layernorm", "input_layernorm.weight"),
              ("post_attention_layernorm", "post_attention_layernorm.weight")]
    names: list[tuple[int | None, str, str]] = [(None, "embed_tokens", "model.embed_tokens.weight")]
    for i in range(m.num_layers or 0):
        names += [(i, mod, f"model.layers.{i}.{name}") for mod, name in inner]
    names.append((None, "norm", "model.norm.weight"))
    if not m.tie_word_embeddings:
        names.append((None, "lm_head", "lm_head.weight"))
    return names, dict.fromkeys(range(m.num_layers or 0), len(inner))


_RANGE = re.compile(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$")  # freeze.py LayerNamePattern._parse_pattern's suffix


def expand_patterns(m: ModelSpec, patterns: list[str]) -> tuple[tuple[int, ...], tuple[str, ...], list[str]]:
    """axolotl unfrozen_parameters → (trained layers, trained outer modules, notes), exactly when every pattern
    selects whole layers and whole outer modules of the model's real parameter names. ValueError (one line) for a
    pattern that does not compile, matches nothing, or selects part of a layer."""
    names, per_layer = parameter_names(m)
    notes: list[str] = []
    picked: set[str] = set()
    for raw in patterns:
        pattern = str(raw)
        hit = _RANGE.match(pattern)
        if hit:  # a row range: a gradient hook zeroes the other rows in place; the whole tensor keeps its grad
            pattern = hit.group(1)
            notes.append(f"unfrozen_parameters {raw!r:.60}: the row range zeroes gradient rows in a hook; the whole "
                         "tensor keeps its gradient and optimizer states (counted whole)")
        try:  # freeze.py LayerNamePattern: a `.` not followed by `+` is a literal dot
            regex = re.compile(re.sub(r"\.(?!\+)", "\\.", pattern))
        except re.error as e:
            raise ValueError(f"{raw!r:.60} is not a regular expression ({e})") from None
        matched = {name for _, _, name in names if regex.match(name)}
        if not matched:
            tied = " (its tied head is model.embed_tokens.weight)" if m.tie_word_embeddings else ""
            raise ValueError(f"{raw!r:.60} matches none of {m.name}'s parameter names{tied}: fix the pattern")
        picked |= matched
    layers: list[int] = []
    outer: list[str] = []
    partial: dict[int, set[str]] = {}
    counts: dict[int, int] = {}
    for layer, module, name in names:
        if name not in picked:
            continue
        if layer is None:
            outer.append(module)
        else:
            counts[layer] = counts.get(layer, 0) + 1
            partial.setdefault(layer, set()).add(module)
    for layer, count in sorted(counts.items()):
        if count == per_layer[layer]:
            layers.append(layer)
        else:
            mods = ", ".join(sorted(partial[layer]))
            raise ValueError(f"selects part of layer {layer} ({mods}), which is not modelled: match whole layers "
                             f"(e.g. ^model.layers.{layer}.*) or drop it")
    return tuple(layers), tuple(outer), notes


def llama_pro_layers(num_layers: int, trainable: int) -> tuple[int, ...]:
    """LLaMA-Factory use_llama_pro (adapter.py _setup_freeze_tuning): the top layer of each of `trainable` groups,
    range(stride - 1, num_layers + stride - 1, stride) with stride = num_layers // trainable; ValueError (one line)
    when trainable does not divide num_layers (LLaMA-Factory raises it too)."""
    if trainable <= 0 or num_layers % trainable:
        raise ValueError(f"use_llama_pro needs freeze_trainable_layers dividing the {num_layers} layers (LLaMA-Factory "
                         f"raises it), not {trainable}")
    stride = num_layers // trainable
    return tuple(range(stride - 1, num_layers + stride - 1, stride))
