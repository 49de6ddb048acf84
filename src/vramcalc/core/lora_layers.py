"""LoRA on some decoder layers only: peft LoraConfig `layers_to_transform` (with `layers_pattern`).

peft tuners/tuners_utils.py check_target_module_exists: with layers_to_transform set, a module whose name matches
the targets is adapted only when its name carries a layer index (`layers.<idx>.` by default, the layers_pattern
otherwise) that the list holds; a module outside the layers (embed_tokens, lm_head) carries none and is never
adapted. So the adapters (weights, gradients, optimizer states) are those of the listed layers only, and the
activations follow what autograd keeps (memory/__init__.py _activation_plan): without checkpointing, a layer below the
lowest adapted one records no graph (its input and weights need no gradient), the lowest adapted layer saves what
LoRA's bottom layer does (no input gradient), and an unadapted layer above it saves a frozen layer's set for its
input's gradient; with checkpointing, transformers' enable_input_require_grads (modeling_utils.py, called for
adapters with checkpointing) makes the embedding's output require grad, so every layer keeps its input and is rerun.

Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.vocab import ENCODER_FAMILIES

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = "peft tuners/tuners_utils.py check_target_module_exists (layers_to_transform)"
# peft LoraConfig layers_pattern names the ModuleList the indices count in (tuners_utils.py check_target_module_exists
# matches `.<pattern>.<idx>.`); these name a decoder's layer list (transformers' llama-style model.layers, GPT-2 /
# Falcon / BLOOM transformer.h), the only list --lora-layers models (axolotl peft_layers_pattern, adapter_config.json).
LAYERS_PATTERNS = ("layers", "model.layers", "h", "transformer.h")


class LayersError(ValueError):
    """A --lora-layers value that does not parse (options.py turns it into an OptionError)."""


def parse(value: object) -> tuple[int, ...]:
    """`0-7,30,31` (or a list of ints, or one int: peft accepts both) → the sorted distinct layer indices;
    `all` or empty → () (every layer). LayersError names what is wrong."""
    if value is None:
        return ()
    if isinstance(value, bool):
        raise LayersError(f"{value!r} is not a layer index")
    if isinstance(value, int):
        items: list[object] = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        text = str(value).strip()
        if text.lower() in ("", "all"):
            return ()
        items = [p.strip() for p in text.split(",")]
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise LayersError(f"{item!r} is not a layer index")
        if isinstance(item, int):
            lo = hi = item
        else:
            part = str(item).strip()
            first, dash, last = part.partition("-")
            if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
                raise LayersError(f"{part!r:.40} is not a layer index or range (give e.g. 0-7,30,31)")
            lo = int(first)
            hi = int(last) if dash else lo
            if hi < lo:
                raise LayersError(f"range {part!r:.40} runs backwards (give low-high, e.g. 0-7)")
        if lo < 0:
            raise LayersError(f"{lo} is not a layer index (they count from 0)")
        if hi - lo > 1_000_000:
            raise LayersError(f"range {lo}-{hi} is longer than any model's layers")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def text(layers: tuple[int, ...]) -> str:
    """The indices, runs of three or more as ranges: (0, 1, 2, 3, 30, 31) → `0-3,30,31`; () → `all`."""
    if not layers:
        return "all"
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b - a >= 2 else ",".join(map(str, range(a, b + 1))) for a, b in runs)


def active(t: TrainingSpec) -> bool:
    """Whether the run adapts a subset of the layers (LoRA / QLoRA / DoRA with --lora-layers)."""
    return bool(t.lora_layers) and t.method in ("lora", "qlora")


def shares(m: ModelSpec, t: TrainingSpec) -> tuple[int, int]:
    """(adapted layers, layers): the share of each per-layer Linear's `count` that is adapted."""
    n = m.num_layers or 1
    return (len(t.lora_layers), n) if active(t) else (n, n)


def lowest(t: TrainingSpec) -> int:
    """The lowest adapted layer (0 when every layer is adapted)."""
    return min(t.lora_layers) if active(t) else 0


def check(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    """The index range, and the runs --lora-layers is modelled and traced for (dense decoders, one GPU or plain
    data parallel, no autocast, no fused kernels): UnsupportedCombination / SpecError in one line otherwise; the
    run's note."""
    if not t.lora_layers or t.mode != "train":
        return ()
    from vramcalc.core.errors import SpecError

    n = m.num_layers or 0
    if max(t.lora_layers) >= n:
        raise SpecError("lora_layers", f"layer {max(t.lora_layers)} is beyond {m.name}'s {n} layers: give indices "
                        f"0 to {n - 1}")
    why = not_alike(m)
    if why:
        pass
    elif t.objective != "sft":
        why = f"--objective {t.objective} is not traced with it"
    elif t.zero or t.fsdp != "none" or t.tp > 1 or t.pp > 1 or t.offload != "none":
        why = "sharded or offloaded runs (--zero, --fsdp, --tp, --pp, --offload) are not traced with it"
    elif t.activation_offload or t.ac_every > 1:
        why = "activation offload and selective checkpointing are not traced with it"
    elif t.kernels != "hf":
        why = f"--kernels {t.kernels} is not traced with it"
    elif t.modules_to_save or t.lora_trainable_tokens:
        why = "trained embedding / head copies and token rows are not traced with it"
    elif t.precision.startswith("amp-"):
        why = "autocast (amp-*) keeps frozen layers' weight casts that are not traced with it"
    if why:
        raise UnsupportedCombination(f"--lora-layers: {why}; drop --lora-layers (every layer adapted)")
    from vramcalc.core.params import outer_targets

    outer = outer_targets(t.lora_targets)
    if outer:
        raise UnsupportedCombination(f"--lora-layers with {','.join(outer)} in --lora-targets: peft's "
                                     "layers_to_transform adapts only modules inside the listed layers, so "
                                     f"{','.join(outer)} would not be adapted; drop it from --lora-targets")
    k = len(t.lora_layers)
    note = (f"LoRA on layers {text(t.lora_layers)} only ({k} of {n}; peft layers_to_transform): adapters, their "
            "gradients and optimizer states there; " + (
                "with checkpointing every layer keeps its input (enable_input_require_grads)."
                if t.grad_checkpointing else
                f"the {min(t.lora_layers)} layer{'s' if min(t.lora_layers) != 1 else ''} below layer "
                f"{min(t.lora_layers)} record no graph." if min(t.lora_layers) else
                "layer 0's input needs no gradient."))
    if any(x.strip().lower() == "all-linear" for x in t.lora_targets):
        note += (" peft refuses layers_to_transform with target_modules 'all-linear' (a str): counted as the list "
                 "of every Linear's name, what axolotl's lora_target_linear passes.")
    return (note,)


def not_alike(m: ModelSpec) -> str:
    """Why a layer subset of `m` is not modelled (a count-only preset, or not a dense decoder of alike layers), or ""
    (also core/unfrozen.py's check)."""
    if not m.has_architecture:
        return f"{m.name} is a parameter count only (no layers to choose from)"
    if m.num_experts or m.ssm_state_size or m.mixer_intermediate_size or m.attention_layers \
            or m.decoder_layers or m.vision is not None or m.family in _NOT_UNIFORM or m.family in ENCODER_FAMILIES:
        return f"{m.name} ({m.family}) is not a dense decoder of alike layers"
    return ""


# Families whose layers are not alike in what vramcalc models per layer (hybrids, MoE stacks, cross-attention).
_NOT_UNIFORM = ("llama4", "jamba", "zamba2", "nemotron_h", "bamba", "granitemoehybrid", "falcon_h1", "mllama")
