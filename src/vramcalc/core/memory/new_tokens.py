"""New tokens (`--add-tokens`, `--vocab-multiple`): the run on a model whose vocabulary was resized.

transformers 5.24 modeling_utils.py PreTrainedModel.resize_token_embeddings(new_num_tokens, pad_to_multiple_of,
mean_resizing) builds a new nn.Embedding(new rows, hidden) in the old weight's dtype (_get_resized_embeddings:
new rows = ceil(new_num_tokens / pad_to_multiple_of) x pad_to_multiple_of, the old rows copied in), resizes an
untied lm_head the same way (_get_resized_lm_head, its bias too), keeps requires_grad as it was, sets
`config.get_text_config().vocab_size` to the new row count and ties the head again (tie_weights). The old
tensors are freed. After the resize the model is the same architecture with a larger vocab_size: every
vocabulary-sized term (the embedding and head weights, a full fine-tuning's gradients and optimizer states,
modules_to_save copies, the logits and the loss) follows from that vocab_size, so the estimate is the estimate of
the resized model. mean_resizing's fp32 mean and (hidden x hidden) covariance of the old rows exist only while the
model loads, before the step (not in the step's peak).

What trains the new rows: full fine-tuning trains the whole embedding (and head). Under LoRA the embedding is
frozen unless it is in modules_to_save: axolotl check_model_config (src/axolotl/loaders/utils.py) refuses
`tokens` with an adapter unless lora_modules_to_save holds embed_tokens and lm_head; LLaMA-Factory's adapter.py
puts the input and output embeddings in additional_target (= modules_to_save) when resize_vocab is set and
additional_target is not. The tokenizer's length is unknown here: the added tokens are counted as rows past the
config's vocab_size (the larger, safe side; a tokenizer shorter than vocab_size would need fewer or none).
Verified with `vramcalc.trace` (trace/_hf.py build_model calls resize_token_embeddings; benchmarks --grid vocab).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = ("transformers modeling_utils.py resize_token_embeddings (_get_resized_embeddings, _get_resized_lm_head: "
          "new rows = ceil((vocab + new) / pad_to_multiple_of) x pad_to_multiple_of)")

# (id(model), rows) -> (model, resized model): estimate's plan cache is keyed by the model object, so a search
# calling estimate many times must get the same resized object back
_resized: dict[tuple[int, int], tuple[ModelSpec, ModelSpec]] = {}
_MAX_RESIZED = 64


def active(t: TrainingSpec) -> bool:
    """Whether the run resizes the vocabulary (new tokens, or a rounding multiple)."""
    return getattr(t, "add_tokens", 0) > 0 or getattr(t, "vocab_multiple", 1) > 1


def resized_vocab(m: ModelSpec, t: TrainingSpec) -> int:
    """The embedding's rows after resize_token_embeddings(vocab_size + add_tokens, pad_to_multiple_of)."""
    assert m.vocab_size is not None
    k = t.vocab_multiple
    return -(-(m.vocab_size + t.add_tokens) // k) * k


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """UnsupportedCombination where the resize is not modelled (traced on causal LMs, supervised fine-tuning)."""
    from vramcalc.core.vocab import CLASSIC_FAMILIES, ENCODER_FAMILIES

    if not m.has_architecture or m.vocab_size is None or m.hidden_size is None:
        raise UnsupportedCombination(f"--add-tokens / --vocab-multiple need {m.name}'s architecture (vocab_size, "
                                     "hidden_size); give the preset its architecture or drop them")
    if (m.vision is not None or m.family in ENCODER_FAMILIES or m.family in CLASSIC_FAMILIES or m.decoder_layers
            or m.ssm_state_size):
        raise UnsupportedCombination(f"--add-tokens / --vocab-multiple are modelled for decoder-only causal LMs; "
                                     f"{m.name} is not one: give a config.json whose vocab_size is the resized one")
    if t.mode != "train" or t.objective != "sft":
        raise UnsupportedCombination("--add-tokens / --vocab-multiple are modelled for training with --objective "
                                     "sft; for another run give a config.json whose vocab_size is the resized one")


def view(m: ModelSpec, t: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The resized model and the run without the resize options (what the rest of the core estimates)."""
    check(m, t)
    rows = resized_vocab(m, t)
    key = (id(m), rows)
    hit = _resized.get(key)
    if hit is None or hit[0] is not m:
        if len(_resized) >= _MAX_RESIZED:
            _resized.clear()
        hit = _resized[key] = (m, replace(m, vocab_size=rows))
    return hit[1], replace(t, add_tokens=0, vocab_multiple=1)


def new_rows(m: ModelSpec, t: TrainingSpec) -> tuple[int, int]:
    """(rows added, of which padding to the multiple) of the input embedding (and of an untied lm_head)."""
    assert m.vocab_size is not None
    rows = resized_vocab(m, t) - m.vocab_size
    return rows, rows - t.add_tokens


def note(m: ModelSpec, t: TrainingSpec) -> str:
    """The note every format prints: the rows, the tied head, what trains them, and the tokenizer assumption."""
    assert m.vocab_size is not None
    rows, pad = new_rows(m, t)
    head = "tied to the embedding" if m.tie_word_embeddings else "resized the same"
    saved = set(t.modules_to_save)
    if t.method == "full":
        trained = "trained with the whole model"
    elif t.method in ("lora", "qlora") and saved >= {"embed_tokens", "lm_head"}:
        trained = "trained as modules_to_save copies"
    elif t.method in ("lora", "qlora"):
        trained = ("frozen" if not saved else f"trained only in the {', '.join(sorted(saved))} copy") \
            + " (LoRA trains them through --modules-to-save embed_tokens,lm_head)"
    elif t.method == "freeze":
        trained = "frozen in the embedding" + ("; the head's trained with it" if t.train_head
                                               and not m.tie_word_embeddings else "")
    else:
        trained = f"trained only where {t.method} trains the embedding or head"
    return (f"new tokens: vocabulary resized {m.vocab_size:,} -> {m.vocab_size + rows:,} rows (+{t.add_tokens:,} "
            f"tokens" + (f", +{pad:,} padding to a multiple of {t.vocab_multiple}" if pad else "")
            + f"; lm_head {head}; the rows {trained}). The tokens are counted past the config's vocab_size: a "
            "tokenizer shorter than vocab_size needs fewer rows (transformers resize_token_embeddings).")
