"""Online DPO's and GRPO/RLOO's reward model (`--reward-model`): its weights on the GPU and its no-grad forward.

Read from TRL 1.16 trl/experimental/online_dpo/online_dpo_trainer.py:

* `__init__`: a `reward_funcs` string (OnlineDPOConfig reward_model_path) is loaded with
  `AutoModelForSequenceClassification.from_pretrained(reward_func, num_labels=1, **model_init_kwargs)`: the causal
  LM's body under `score = nn.Linear(hidden, 1, bias=False)` (transformers modeling_layers.py
  GenericForSequenceClassification), no LM head. No dtype is passed unless model_init_kwargs has one, so
  transformers 5 loads the checkpoint's dtype (modeling_utils.py from_pretrained: `dtype = "auto"`); `--reward-dtype`
  sets it (auto: the training compute dtype). `accelerator.prepare_model(reward_func, evaluation_mode=True)` puts it
  on the GPU and wraps its forward in the run's autocast (accelerate accelerator.py prepare_model, native_amp).
  It is `eval()` and needs no gradient: its weights are alive for the whole step.
* `training_step` -> `_calculate_rewards_from_functions`, after the policy's `_forward` and the reference's: the 2B
  prompt + completion texts decoded and re-tokenized in one right-padded batch, then
  `with torch.inference_mode(): reward_func(**reward_inputs).logits[:, 0]`: one no-grad forward over 2B rows of
  about --seq-len tokens (the same tokenizer assumed), beside everything the policy saved for backward and the
  reference's log-probs. Nothing is saved; its peak is one layer's (memory/preference.py nograd_layer_bytes, the
  residual stream included); the score head's logits are [2B, S, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import preference as _preference
from vramcalc.core.memory import reward as _reward
from vramcalc.core.params import count_params
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec


def has_reward_model(t: TrainingSpec) -> bool:
    return t.reward_spec is not None


def weight_dtype(t: TrainingSpec, recipe: Recipe) -> str:
    """The reward model's weight dtype: --reward-dtype, or the training compute dtype."""
    return recipe.compute if t.reward_dtype == "auto" else t.reward_dtype


def parameters(r: ModelSpec) -> int:
    """AutoModelForSequenceClassification(num_labels=1): the body without an LM head, and score's H weights."""
    assert r.hidden_size is not None
    return count_params(_reward.body(r)) + r.hidden_size


def weight_bytes(t: TrainingSpec, recipe: Recipe) -> int:
    if t.reward_spec is None:
        return 0
    return parameters(t.reward_spec) * dtype_bytes(weight_dtype(t, recipe))


def scoring_recipe(t: TrainingSpec, recipe: Recipe) -> Recipe:
    """The dtypes the reward model's forward runs in: under the run's autocast, the compute dtype with 16-bit
    copies of weights stored otherwise (fp32: nograd_layer_bytes' fixed term, an fp32 residual stream); without
    autocast, its own weight dtype throughout."""
    w = weight_dtype(t, recipe)
    if recipe.autocast and w != recipe.compute:
        return replace(recipe, weight=w, autocast=True)
    return replace(recipe, weight=w, compute=w, autocast=False)


@dataclass(frozen=True, slots=True)
class ScoringPlan:
    """The reward model's no-grad forward as coefficients of its tokens (rows × --seq-len)."""

    per_token: int  # a layer's peak: the MLP's (or attention's) intermediates beside the residual stream
    cast_per_token: int  # while a matmul's 16-bit weight copy exists: the residual stream, one intermediate, output
    cast: int  # that copy (autocast over stored weights of another dtype), 0 without one

    def peak(self, tokens: int) -> int:
        return max(self.per_token * tokens, self.cast_per_token * tokens + self.cast)


def scoring_plan(t: TrainingSpec, recipe: Recipe) -> ScoringPlan | None:
    """The reward model's forward on the policy view's 2B rows of --seq-len tokens (Online DPO) or on the generation
    batch (GRPO): one no-grad layer's peak (memory/preference.py nograd_layer_bytes), two more residual-stream
    tensors and the re-tokenized input_ids and attention_mask (int64 each). Under autocast on weights stored in
    another dtype, each matmul casts its weight (no cache without grad: autocast_mode.cpp cached_cast), and that copy
    is alive with the matmul's input and output only (the MLP's other intermediates are freed by then: down_proj
    runs on act(gate) * up once both are gone), not beside the layer's peak."""
    r = t.reward_spec
    if r is None:
        return None
    assert r.hidden_size is not None and r.intermediate_size is not None
    rec = scoring_recipe(t, recipe)
    per_token, cast = _preference.nograd_layer_bytes(r, rec, "full")
    residual = 4 if rec.autocast or rec.compute == "fp32" else dtype_bytes(rec.compute)
    c = dtype_bytes(rec.compute)
    # Two more residual-stream tensors than the layer's own: the layer's input, still held by the model's loop
    # variable while the layer runs (`hidden_states = decoder_layer(hidden_states, ...)`), and the embedding output,
    # held by the model's forward as `inputs_embeds` (transformers modeling_llama.py LlamaModel.forward).
    held = 2 * residual * r.hidden_size + 2 * 8
    stream = 4 * residual * r.hidden_size + 2 * 8  # with the layer's residual and normed input
    return ScoringPlan(per_token + held, stream + c * r.intermediate_size + c * r.hidden_size, cast)


def rl_forward_bytes(t: TrainingSpec, plan: ScoringPlan) -> int:
    """GRPO/RLOO (grpo_trainer.py / rloo_trainer.py _generate_and_score_completions -> _calculate_rewards): the
    reward model's no-grad forward over the whole generation batch (per_device_train_batch_size × steps per
    generation rows of --seq-len tokens) after the log-prob passes, beside their fp32 [rows, C] results (the old
    policy's, the reference's, vLLM's sampling log-probs)."""
    from vramcalc.core.memory import rl as _rl

    rows = _rl.generation_rows(t)
    results = (int(_rl.old_logps_pass(t)) + int(t.beta > 0) + int(_rl.importance_sampling(t)))
    return plan.peak(rows * t.seq_len) + results * rows * _rl.completion_len(t) * 4


def notes(t: TrainingSpec, recipe: Recipe) -> tuple[str, ...]:
    if t.reward_spec is None:
        return ()
    w = weight_bytes(t, recipe)
    head = (f"{t.objective}: reward model {t.reward_model} as AutoModelForSequenceClassification(num_labels=1) in "
            f"{weight_dtype(t, recipe)} ({w / 1e9:.2f} GB of weights, no gradients); ")
    if t.objective == "online-dpo":
        where = (f"its no-grad forward over the {t.batch_size} prompt + completion rows runs after the reference's, "
                 "beside the policy's saved tensors (forward.reward)")
    else:
        where = ("its no-grad forward over the whole generation batch runs after generate() and the log-prob "
                 "passes (forward.reward)")
    return (head + where + "; assumed: the same tokenizer as the policy (rows of --seq-len tokens).",)
