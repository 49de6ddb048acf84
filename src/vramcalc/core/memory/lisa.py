"""LISA, layerwise importance sampling (axolotl lisa_n_layers; LMFlow DynamicLayerActivationCallback).

axolotl utils/callbacks/lisa.py lisa_callback_factory: a TrainerCallback that, at on_train_begin and then every
lisa_step_interval steps (on_step_begin), sets requires_grad False on every parameter of the `lisa_layers_attribute`
ModuleList (default model.layers) and True on lisa_n_layers of them drawn by np.random.choice(replace=False). Nothing
else is touched: the embeddings, the final norm and the LM head keep requires_grad and train every step. The trainer
builder appends it after the Trainer is made (core/builders/causal.py: `if self.cfg.lisa_n_layers:`), and the HF
Trainer builds its optimizer before on_train_begin (trainer.py _inner_training_loop: create_optimizer_and_scheduler,
then callback_handler.on_train_begin; create_optimizer keeps the parameters with requires_grad, all of them then).

So the optimizer holds every parameter; what a step holds:
- gradients: the active layers' and the embeddings', final norm's and head's. Trainer zero_grads with set_to_none
  (torch nn.Module.zero_grad default) after each step, so a layer frozen since has none.
- optimizer states: torch.optim.AdamW (_init_group) and bitsandbytes' optimizers skip a parameter whose grad is None
  and make its state the first time it has one (`if len(state) == 0`); nothing frees a state. Every layer active
  once leaves its moments allocated, so the states grow over the run to the full model's: the worst step (once
  every layer has been drawn) holds full fine-tuning's states; the first step only the active layers' and the
  always-trained ones' (details "optimizer_state.lisa_first_step").
- step temporaries: the optimizer's foreach buffers over the parameters with a gradient only.
- activations: the trained embedding makes every layer's input need a gradient, so every layer records a graph; a
  frozen layer saves what its input's gradient needs, an active one its full set. The worst draw puts the active
  layers at the top (their gradients written while every layer below still holds its set): the estimate is
  partial fine-tuning with the top lisa_layers trained, the head and the embeddings trained (memory/__init__.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = "axolotl utils/callbacks/lisa.py LISACallback, transformers Trainer.create_optimizer, torch.optim.AdamW"


def active(t: TrainingSpec) -> bool:
    return getattr(t, "lisa_layers", None) is not None and t.mode == "train"


def view(m: ModelSpec, t: TrainingSpec) -> TrainingSpec:
    """The run as the core estimates it: the top lisa_layers decoder layers trained, the layers below frozen, the head,
    final norm and embeddings trained (weights.py _trainable_count). `t` itself when LISA is off."""
    if not active(t):
        return t
    check(m, t)
    n = m.num_layers or 1
    return replace(t, method="freeze", freeze_layers=n - min(t.lisa_layers or 1, n), train_head=True)


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """LISA's layers are one ModuleList of alike decoder layers: refuse what the model does not cover."""
    from vramcalc.core.memory import classic, encoder, hybrid, seq2seq, ssm
    from vramcalc.core.params import is_jamba, is_layered_hybrid, is_nemotron_h, is_zamba2

    if (classic.is_classic(m) or encoder.is_encoder(m) or seq2seq.is_seq2seq(m) or ssm.is_ssm(m)
            or hybrid.is_hybrid(m) or m.vision is not None or not m.has_architecture):
        raise UnsupportedCombination(f"--lisa-layers on {m.name}: LISA is modelled for decoder-only language models "
                                     "(one ModuleList of decoder layers); drop --lisa-layers")
    if m.num_experts or is_jamba(m) or is_zamba2(m) or is_nemotron_h(m) or is_layered_hybrid(m):
        raise UnsupportedCombination(f"--lisa-layers on {m.name}: its layers differ (dense and expert, or mixer and "
                                     "attention layers); LISA is modelled for uniform decoder layers: drop "
                                     "--lisa-layers")
    if t.lisa_layers is not None and m.num_layers and t.lisa_layers > m.num_layers:
        # np.random.choice(range(total_layers), n_layers, replace=False) raises for more than there are
        raise UnsupportedCombination(f"--lisa-layers {t.lisa_layers}: {m.name} has {m.num_layers} decoder layers, "
                                     "and LISA draws without replacement: give at most that many")


def late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """The untied embedding's gradient, written after the bottom (frozen) layer's backward
    (aten.embedding_dense_backward runs last); a tied one holds the head's gradient from the backward's start."""
    if not active(t) or m.tie_word_embeddings or not m.vocab_size or not m.hidden_size:
        return 0
    return m.vocab_size * m.hidden_size * dtype_bytes(recipe.grad)


def note(m: ModelSpec, t: TrainingSpec, first_step_states: int, states: int) -> str:
    return (f"LISA: {t.lisa_layers} of the {m.num_layers} decoder layers trained at a time, with the embeddings, "
            "final norm and head. The optimizer is built over every parameter before the callback freezes layers, "
            "and each layer's states stay once it has been active, so this is the worst step (every layer drawn "
            f"once: full fine-tuning's optimizer states; the first step holds {first_step_states:,} B of the "
            f"{states:,} B), with the active layers at the top (their gradients written early in the backward) "
            f"({SOURCE}).")
