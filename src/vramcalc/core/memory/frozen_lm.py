"""LLaMA-Factory's freeze_language_model (--method freeze --train-layers none --train-modules projector; on
Llama-3.2-Vision and Llama 4 also --train-modules none --train-vision, the tower alone): which runs are modelled,
and the text run's stand-in embedding taken out again. A leaf of memory/vision.py (which re-exports these names) so
that memory/mllama.py reads them without an import cycle."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core import unfrozen as _unfrozen
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import recipe_of

if TYPE_CHECKING:
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec


def frozen_lm(training: TrainingSpec) -> bool:
    """--method freeze --train-layers none --train-modules projector: LLaMA-Factory's freeze_language_model
    (hiyouga/LLaMA-Factory @ ff6d4d12 model/adapter.py _setup_full_tuning / _setup_freeze_tuning): the language
    model's parameters frozen, the projector (with --train-vision the tower too) trained. The projector's gradient
    flows back through every language-model layer into the image tokens (masked_scatter's inputs_embeds needs a
    gradient), so each frozen layer saves what its input's gradient needs, as when a trained embedding feeds it
    (core/unfrozen.py): text_run counts the language model as that run, its embedding's gradient and optimizer
    states taken out again (_lm_drop). --train-modules none --train-vision (tower_only): the projector frozen too, the
    tower alone trained (Llama-3.2-Vision and Llama 4)."""
    return _unfrozen.projector_only(training) or _unfrozen.tower_only(training)


def projector_trained(training: TrainingSpec) -> bool:
    """frozen_lm with the projector trained (--train-modules projector), not the tower alone (tower_only)."""
    return _unfrozen.projector_only(training)


# the tower alone trained (tower_only), the projector frozen: memory/mllama.py, memory/llama4v.py (--grid vlmfreeze)
TOWER_ONLY_KINDS = ("mllama", "llama4")


# traced: --grid flm; Gemma 3 (siglip), LLaVA-NeXT, Llama-3.2-Vision (mllama) and Llama 4: --grid vlmfreeze
FROZEN_LM_KINDS = ("clip", "qwen2_vl", "qwen2_5_vl", "siglip", "llava_next", "mllama", "llama4")


def _check_frozen_lm(model: ModelSpec, training: TrainingSpec) -> None:
    """The frozen-language-model runs modelled and traced (--grid flm; Gemma 3: --grid vlmfreeze), the rest refused in
    one line."""
    v = model.vision
    assert v is not None
    if v.kind not in FROZEN_LM_KINDS:
        raise UnsupportedCombination("--train-modules projector (the language model frozen) is modelled for "
                                     "LLaVA-1.5, LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, Gemma 3, Llama-3.2-Vision and "
                                     f"Llama 4, not {model.name} ({v.kind}): use --method full")
    if _unfrozen.tower_only(training) and v.kind not in TOWER_ONLY_KINDS:
        raise UnsupportedCombination(f"--train-modules none with --train-vision (the tower alone trained, the language "
                                     f"model and projector frozen) is modelled for Llama-3.2-Vision and Llama 4, not "
                                     f"{model.name} ({v.kind}): add --train-modules projector")
    if training.train_layers != () or training.train_modules not in (("projector",), ()):
        raise UnsupportedCombination("--train-modules projector with language-model layers or modules trained is not "
                                     "modelled: give --train-layers none --train-modules projector")
    if recipe_of(training).autocast or training.add_tokens:
        raise UnsupportedCombination("--train-modules projector is modelled for 16-bit or fp32 weights without "
                                     "--add-tokens (not traced under autocast): drop --precision autocast-* / amp-*")


def _lm_drop(training: TrainingSpec, b: Breakdown) -> int:
    """The trainable parameters the text run (text_run) counts that the frozen language model does not have: its
    embedding (frozen_lm), taken out of the gradients and optimizer states by _scaled."""
    return b.trainable_parameters if frozen_lm(training) else 0


def _frozen_lm_text(training: TrainingSpec, b: Breakdown) -> Breakdown:
    """The text run's Breakdown under frozen_lm without what its stand-in embedding adds: the embedding's own backward
    at backward.end (its gradient written in fp32 beside the head's when tied: the language model's frozen embedding
    runs no backward) and its partial fine-tuning note."""
    if not frozen_lm(training):
        return b
    moments = tuple((key, layout, tuple(x if comp == "gradients" else 0 for (_, comp), x in zip(layout, values,
                                                                                              strict=True)))
                    if key == "backward.end" else (key, layout, values) for key, layout, values in b.moments)
    return replace(b, moments=moments, notes=tuple(x for x in b.notes if not x.startswith("partial fine-tuning")))


FROZEN_LM_NOTE = ("the language model frozen (--train-modules projector: LLaMA-Factory freeze_language_model): no "
                  "gradients or optimizer states for it, but every layer saves what its input's gradient needs (the "
                  "projector's gradient flows back through it)")
# tower_only: the projector frozen too (its Linear saves no input), the tower's gradient flowing back through both
TOWER_ONLY_NOTE = ("the language model and the projector frozen (--train-modules none --train-vision: LLaMA-Factory "
                   "freeze_language_model with freeze_vision_tower false): no gradients or optimizer states for them, "
                   "but every language-model layer saves what its input's gradient needs (the tower's gradient flows "
                   "back through it and the projector)")


def frozen_lm_note(training: TrainingSpec) -> str:
    """FROZEN_LM_NOTE, or TOWER_ONLY_NOTE for the tower alone trained."""
    return FROZEN_LM_NOTE if projector_trained(training) else TOWER_ONLY_NOTE


__all__ = ["FROZEN_LM_KINDS", "FROZEN_LM_NOTE", "TOWER_ONLY_KINDS", "TOWER_ONLY_NOTE", "_check_frozen_lm",
           "_frozen_lm_text", "_lm_drop", "frozen_lm", "frozen_lm_note", "projector_trained"]
