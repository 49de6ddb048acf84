"""Reward modelling (TRL RewardTrainer, `--objective reward`): a causal LM under a score head, in bytes.

TRL 1.16 trl/trainer/reward_trainer.py loads `AutoModelForSequenceClassification(num_labels=1)`: the
causal LM's body with `score = nn.Linear(hidden, 1, bias=False)` instead of lm_head (transformers
modeling_layers.py GenericForSequenceClassification), and, with peft, `task_type="SEQ_CLS"` keeps the
score trainable. DataCollatorForPreference stacks the chosen and rejected sequences (2B rows), one
forward scores every position (logits [2B, S, 1]), the score at each row's last non-pad token is
gathered, and the loss is -logsigmoid(r_chosen - r_rejected): nothing vocabulary-sized exists
(memory/loss.py `score_head_bytes`). The
score head's own H parameters (with their gradient and optimizer state) are left out (< 0.01 % of the
smallest preset). Verified with `vramcalc.trace` (trace/_preference.py reward_loss).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec


def body(m: ModelSpec) -> ModelSpec:
    """The model's parameters without a separate LM head (the inventory of a tied model has none)."""
    return replace(m, tie_word_embeddings=True, lm_head_bias=False)
