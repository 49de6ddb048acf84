"""Online DPO (TRL OnlineDPOTrainer, `--objective online-dpo`): what its step holds, in bytes.

Read from TRL 1.16 (trl/experimental/online_dpo/online_dpo_trainer.py, online_dpo_config.py):

* `training_step` generates in every micro-batch (`_generate`): the B prompts repeated twice
  (`prompt_inputs["input_ids"].repeat(2, 1)`: 2B rows, left-padded), `unwrap_model_for_generation` and
  `torch.no_grad()`, `generate(max_new_tokens, do_sample=True)`; the generation config sets
  `use_cache = not gradient_checkpointing`. With the cache on, this is GRPO's generate() moment on 2B rows
  (memory/rl.py generation_bytes); gradients accumulated by earlier micro-batches are alive during it. Without
  the cache (gradient checkpointing, OnlineDPOConfig's default) generate() re-runs the whole sequence at every new
  token (`uncached_generation_bytes`): no KV cache, and at the last step a no-grad forward over P + C - 1 tokens
  per row (`logits_to_keep=1`: the last position's logits only; checkpointing is disabled for generation).
* `_forward(model, ...)`: `model(prompt_completion_ids, attention_mask=...)` with no labels, so the full logits
  `[2B, P + C, V]` come back (in fp32 under bf16/fp16 mixed precision: accelerate's prepared forward,
  convert_outputs_to_fp32, next to the compute-dtype logits while it converts), then
  `logits[:, P-1:-1].log_softmax(-1)` (outside autocast: the logits' dtype) and `take_along_dim` on the
  completion ids. The log-softmax output `[2B, C, V]` is saved for backward; the full logits are freed when
  `_forward` returns.
* Then, under `torch.no_grad()`, the reference's `_forward` on the same rows, on top of everything the policy
  saved: `create_reference_model` (a deep copy, the policy's dtype) for full fine-tuning, the policy inside
  `disable_adapter()` with peft. Then the reward functions (Python callables: nothing on the GPU; a reward
  model, `reward_funcs` as a model or OnlineDPOConfig reward_model_path, is refused), and the loss
  (loss_type sigmoid or ipo: arithmetic on B per-sequence sums, no memory; KL metrics on [2B, C]).
* Backward of the head: the gather's zero-filled gradient and log-softmax's input gradient ([2B, C, V] each,
  beside the saved output), the slice's zero-filled `[2B, P + C, V]`, its cast back to the compute dtype under
  mixed precision, then lm_head's backward. OnlineDPOConfig's defaults: beta 0.1, max_new_tokens 64,
  max_length 512 (prompt + completion; the prompt is cut from the left), disable_dropout True.

Verified with `vramcalc.trace` (trace/_online_dpo.py runs generate() and the step on the transformers model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory import preference as _preference
from vramcalc.core.memory.loss import LossBytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

OBJECTIVE = "online-dpo"
MAX_NEW_TOKENS = 64  # OnlineDPOConfig max_new_tokens
MAX_LENGTH = 512  # OnlineDPOConfig max_length (prompt + completion)


def is_online_dpo(t: TrainingSpec) -> bool:
    return t.objective == OBJECTIVE


def uncached_generation_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """generate(use_cache=False)'s last step on the policy view's 2B rows: the larger of one no-grad layer over
    P + C - 1 tokens per row (memory/preference.py nograd_layer, the residual stream included) and the head:
    the last hidden states, the last position's logits (compute dtype), their fp32 copy and sampling's fp32 softmax
    (transformers generation/utils.py _sample)."""
    assert m.vocab_size is not None and m.hidden_size is not None
    from vramcalc.core.units import dtype_bytes

    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.autocast or recipe.compute == "fp32" else c
    rows = t.batch_size
    tokens = rows * (t.seq_len - 1)
    nograd = _preference.nograd_layer(m, recipe, t.method, _preference.uses_eager(m, t))
    layer = nograd.peak(tokens, t.seq_len - 1)
    head = r * m.hidden_size * tokens + rows * m.vocab_size * (c + 4 + 4) + nograd.cast
    return max(layer, head)


def head_bytes(*, rows: int, seq: int, completion: int, vocab: int, hidden: int, compute: int, logits: int,
               head_trainable: bool, head_grad: int, head_copy: int = 0, scale_copy: bool = False) -> LossBytes:
    """The policy's `_forward` after the final norm (module docstring). `logits`: bytes per element of the logits
    the trainer sees (memory/preference.py logits_bytes); `compute`: the lm_head output's. `scale_copy`: the
    log-softmax's input is a copy of the scored logits (torchtune's DPO recipes, `--dpo-head logits`:
    torchtune/rlhf/sequence_processing.py logits_to_logprobs `log_softmax(logits / temperature)`, a division that
    allocates even at temperature 1.0, freed when log_softmax returns); its backward is a copy too, made after the
    log-softmax's saved output is released, so below the backward peak counted here."""
    c, v, lb = compute, vocab, logits
    tokens = rows * seq
    full = tokens * v * lb  # output.logits as the trainer sees them
    conversion = tokens * v * c if lb != c else 0  # the compute-dtype logits beside their fp32 copy
    scored = rows * completion * v * lb  # log_softmax over the completion positions (saved for backward)
    # Saved: the log-softmax output, the completion ids' int64 index and the gathered log-probs [2B, C]; lm_head's
    # input when the head trains.
    small = rows * completion * (8 + lb)
    saved = scored + small + (c * hidden * tokens if head_trainable else 0)
    # Forward, beyond `saved`: the conversion (both logits, the log-softmax output not made yet), or the logits
    # next to the log-softmax output.
    forward = max(full + conversion - scored - small, full + (scored if scale_copy else 0))
    # Backward start, beyond `saved`: the gather's zero-filled gradient and log-softmax's input gradient beside its
    # saved output; then the slice's zero-filled [2B, S, V] gradient (the log-softmax output freed); then its cast
    # to the compute dtype under mixed precision.
    backward = max(2 * scored, full, full + conversion - scored)
    # lm_head's backward: the logits' gradients (both dtypes under mixed precision), its input and its input's
    # gradient, the weight's gradient.
    head_backward = full + conversion + 2 * c * hidden * tokens + head_grad + head_copy
    return LossBytes(saved, forward, backward, head_backward, False)


@dataclass(frozen=True, slots=True)
class ReferencePlan:
    """The reference's no-grad `_forward` (after the policy's, beside all it saved): a layer's peak or the head's
    full logits and log-softmax, the larger."""

    per_token: int  # a no-grad layer's peak per position, the residual stream included
    fixed: int
    residual: int  # the last hidden states' bytes per position
    vocab: int
    compute: int
    logits: int
    cast_per_token: int = 0  # memory/preference.py NogradLayer: the layer beside its weight copy (`fixed`)
    eager_per_token: int = 0  # NogradLayer's eager attention terms (0: sdpa)
    per_key: int = 0
    scale_copy: bool = False  # head_bytes `scale_copy`: the log-softmax's input copy (torchtune's DPO recipes)

    def peak(self, tokens: int, labelled: int, seq: int = 0) -> int:
        """`tokens`: 2B × (P + C); `labelled`: 2B × C completion positions; `seq`: P + C."""
        full = tokens * self.vocab * self.logits
        conversion = tokens * self.vocab * self.compute if self.logits != self.compute else 0
        scored = labelled * self.vocab * self.logits
        layer = _preference.NogradLayer(self.per_token, self.cast_per_token, self.fixed, self.eager_per_token,
                                        self.per_key).peak(tokens, seq)
        # the ref's log-probs [2B, C] fp32 (ref_logprobs) and its gathered int64 index
        head = (self.residual * tokens + max(full + conversion, full + scored * (2 if self.scale_copy else 1))
                + labelled * (8 + self.logits))
        return max(layer, head)


def reference_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> ReferencePlan:
    """OnlineDPOTrainer's reference `_forward`; with `--dpo-head logits` (objective dpo), torchtune's DPO recipes'
    reference concatenated_forward under no_grad (the adapters disabled, or the frozen `_ref_model`): fp32 logits
    whatever the precision (TransformerDecoder.unembed `.float()`), the log-softmax over every shifted position."""
    assert m.vocab_size is not None and m.hidden_size is not None
    from vramcalc.core.units import dtype_bytes

    tt = t.dpo_head == "logits" and t.objective == "dpo"

    c = dtype_bytes(recipe.compute)
    r = 4 if recipe.autocast or recipe.compute == "fp32" else c
    layer = _preference.nograd_layer(m, recipe, t.method, _preference.uses_eager(m, t))
    return ReferencePlan(layer.per_token, layer.cast, r * m.hidden_size, m.vocab_size, c,
                         4 if tt else _preference.logits_bytes(recipe), layer.cast_per_token, layer.eager_per_token,
                         layer.per_key, scale_copy=tt)


def notes(t: TrainingSpec, reference_bytes: int) -> tuple[str, ...]:
    """What the estimate assumed about the Online DPO step (every format shows them). `t` is the policy's view
    (--batch-size already doubled)."""
    ref = _preference.resolve_ref(t)
    what = {"copy": f"a frozen copy of the model ({reference_bytes / 1e9:.2f} GB of weights)",
            "adapters-off": "the policy with its adapters disabled (no extra weights)"}[ref]
    b = t.batch_size // 2
    c = t.seq_len - t.prompt_len
    cache = ("generate() without a KV cache: use_cache=False under gradient checkpointing, the whole sequence re-run "
             "per token" if t.grad_checkpointing else "generate() with a DynamicCache")
    if t.use_vllm == "colocate":
        cache = ("in a colocated vLLM engine, not on the policy (use_vllm, vllm_mode colocate: its share of the GPU "
                 "in overhead.vllm_*)")
    elif t.use_vllm == "server":
        cache = ("on a vLLM server (use_vllm, vllm_mode server): on this GPU only the weight sync, one parameter at a "
                 "time (update_named_param), its packed copy of the largest tensor (forward.weight_sync; approximate)")
    return (f"online-dpo: TRL OnlineDPOTrainer: every micro-batch generates 2 completions per prompt ({t.batch_size} "
            f"rows = 2 x --batch-size {b}, {cache}, prompt {t.prompt_len} + {c} new tokens = "
            f"--seq-len), then the policy's forward on them with the full logits [rows, seq, vocab] and a "
            f"log-softmax over the {c} completion positions kept for backward (no fused head); reference: {what}, "
            "its no-grad forward on top of the policy's saved tensors (forward.reference).",
            "online-dpo: " + ("reward model: see its note; " if t.reward_spec is not None else
                              "reward functions assumed to be Python callables (no reward model on the GPU; "
                              "--reward-model for one); ")
            + "completions counted at their full length (no early EOS).")
