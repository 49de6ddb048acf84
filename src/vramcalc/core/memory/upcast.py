"""LLaMA-Factory's upcast_lmhead_output (`--upcast-logits`): lm_head's output cast to fp32 by a forward hook.

hiyouga/LLaMA-Factory src/llamafactory/model/model_utils/checkpointing.py @ 06d78ff1 prepare_model_for_training:
`if model_args.upcast_lmhead_output`, `output_layer = model.get_output_embeddings()`, and only when it is an
nn.Linear whose weight is not fp32, `output_layer.register_forward_hook(_fp32_forward_post_hook)`, a hook returning
`output.to(torch.float32)`. It runs in patch_model, before init_adapter, so the hook sits on the plain lm_head.

What that changes in transformers' ForCausalLMLoss (loss/loss_utils.py: `logits = logits.float()`, log_softmax):
  * the 16-bit logits exist only inside the hook (the `to` node saves nothing); the model returns the fp32 copy;
  * `.float()` is then a no-op, so the loss makes no second vocab-wide copy.
Forward, per token: at the hook, the 16-bit logits beside their fp32 copy (c + 4 B x vocab) before log_softmax has
written its saved output; then the fp32 logits beside that output. Relative to everything saved, log_softmax's output
included, the loss moment holds max(c, 4) x vocab instead of (c + 4) x vocab. Backward is unchanged: the hook's
ToCopyBackward casts the fp32 logits' gradient to 16 bits where `.float()`'s did.

Where the head's weight is fp32 (amp / fp32 precisions, QLoRA after prepare_model_for_kbit_training) the hook is not
registered: no change. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SRC = ("LLaMA-Factory model_utils/checkpointing.py prepare_model_for_training (upcast_lmhead_output: "
       "_fp32_forward_post_hook on a 16-bit lm_head); transformers ForCausalLMLoss logits.float() then a no-op")


def head_is_16bit(t: TrainingSpec, recipe: Recipe) -> bool:
    """Whether lm_head's weight is 16-bit when LLaMA-Factory checks it (the hook is registered only then)."""
    if recipe.weight == "fp32":
        return False
    return not (t.method == "qlora" and t.kbit_prep)  # kbit preparation casts lm_head to fp32 (memory/weights.py)


def active(t: TrainingSpec, recipe: Recipe) -> bool:
    """`--upcast-logits` and a 16-bit head: the hook runs."""
    return bool(getattr(t, "upcast_logits", False)) and head_is_16bit(t, recipe)


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """The runs the hook is modelled (and traced) for: a causal LM's own head under transformers' loss."""
    if not getattr(t, "upcast_logits", False):
        return
    # (module attributes, not memory/encoder.py etc.: those import memory/activations.py, which imports this module)
    from vramcalc.core.params import is_hybrid, is_ssm, outer_targets
    from vramcalc.core.vocab import CLASSIC_FAMILIES, ENCODER_FAMILIES, SEQ2SEQ_FAMILIES

    other = m.family in CLASSIC_FAMILIES or m.family in ENCODER_FAMILIES or m.family in SEQ2SEQ_FAMILIES
    why = ""
    if other or is_ssm(m) or is_hybrid(m) or m.vision is not None:
        why = f"{m.name}'s head (modelled on decoder-only text models)"
    elif m.family == "gemma2":
        why = "Gemma 2's final logit softcapping on the fp32 logits"
    elif t.loss != "hf" or t.objective != "sft":
        why = f"--loss {t.loss} --objective {t.objective} (the hook is modelled with transformers' own loss)"
    elif t.kernels != "hf":
        why = f"--kernels {t.kernels}"
    elif t.method in ("lora", "qlora") and ("lm_head" in outer_targets(t.lora_targets) or t.modules_to_save):
        why = "LoRA on lm_head or --modules-to-save (an adapter's sum or a trained copy on the hooked head)"
    if why:
        raise UnsupportedCombination(f"--upcast-logits is not modelled with {why}: drop --upcast-logits")


def note(t: TrainingSpec, recipe: Recipe) -> str:
    if active(t, recipe):
        return ("upcast logits (LLaMA-Factory upcast_lmhead_output): lm_head's output cast to fp32 by a forward hook; "
                "transformers' loss then makes no second fp32 copy of the logits.")
    return ("upcast logits: lm_head's weight is fp32 here, and LLaMA-Factory registers the fp32 hook only on a 16-bit "
            "head: no change.")
