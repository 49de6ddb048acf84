"""Online RL (TRL GRPOTrainer, `--objective grpo`): what a GRPO step adds to a training step, in bytes.

Read from TRL 1.16 (trl/trainer/grpo_trainer.py, trl/trainer/grpo_config.py):

* Generation, vLLM off (`use_vllm=False`): `_generate_single_turn` calls `unwrapped_model.generate()` under
  `torch.no_grad()` on the generation batch: `generation_batch_size = per_device_train_batch_size ×
  steps_per_generation` rows (grpo_config.py __post_init__; steps_per_generation defaults to
  gradient_accumulation_steps), left-padded prompts, `max_new_tokens = max_completion_length`, sampling,
  `cache_implementation` None (a DynamicCache). `unwrap_model_for_generation` disables gradient
  checkpointing for it (trl/models/utils.py). It runs in `_prepare_inputs` once every
  `steps_per_generation × num_iterations` micro-batches, after `zero_grad(set_to_none=True)` when that is a
  multiple of the accumulation (no gradients then); the weights, the reference and the optimizer state stay.
  Its cache and logits are memory/inference.py `generate_terms` on those rows (prompt P, C new tokens);
  sampling (`do_sample=True`) adds softmax's fp32 probabilities over the vocabulary per row.
* Then, under `torch.no_grad()` and still outside the training step (`_generate_and_score_completions`),
  the log-prob passes over the prompt+completion rows in sub-batches of per_device_train_batch_size
  (`_get_per_token_logps_and_entropies(batch_size=...)`): the old policy's when
  `gradient_accumulation_steps % (steps_per_generation × num_iterations) != 0`, the reference's when
  `beta != 0` (a frozen copy `create_model_from_path(dtype=self.model.dtype)` for full fine-tuning, the policy
  with its adapters disabled with peft). Each is a no-grad forward through TRL's fused head
  (memory/preference.py ReferencePlan).
* The training step (`_compute_loss`): one forward of per_device_train_batch_size rows of P + C tokens
  through TRL's fused LM head (`model(..., labels=labels, fused_lm_head=True)`, labels -100 over the
  prompt: only the C completion positions are scored; outputs log_probs and entropy), so the step is
  `--loss trl` with `--prompt-len P` on --batch-size rows (memory/loss.py trl_head_bytes). The loss
  (`loss_type` dapo, TRL's default, and grpo/bnpo/dr_grpo/cispo/sapo alike) is elementwise arithmetic on
  [B, C] fp32 tensors: a few fp32 vectors per completion token, no vocabulary-sized tensor; no loss_type
  changes memory beyond them. GRPOConfig's disable_dropout is False: dropout stays.

Verified with `vramcalc.trace` (trace/_rl.py runs generate() and the step on the transformers model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import inference as _inference
from vramcalc.core.memory import preference as _preference

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

RL = ("grpo",)
# fp32 [B, C] tensors of _compute_loss per completion token (grpo_trainer.py): the concatenated log-probs and
# entropies (torch.cat copies), log_ratio, coef_1 = exp (saved), coef_2 = clamp, the two products, min, its
# negation, the masked loss; the KL term's exp, two differences and its sum with beta > 0.
LOSS_VECTORS = 10
KL_VECTORS = 4


def is_rl(t: TrainingSpec) -> bool:
    return t.objective in RL


def steps_per_generation(t: TrainingSpec) -> int:
    """GRPOConfig steps_per_generation: gradient_accumulation_steps unless given."""
    return t.steps_per_generation or t.grad_accum


def generation_rows(t: TrainingSpec) -> int:
    """generation_batch_size on one GPU: per_device_train_batch_size × steps_per_generation."""
    return t.batch_size * steps_per_generation(t)


def generate_every(t: TrainingSpec) -> int:
    return steps_per_generation(t) * t.num_iterations


def old_logps_pass(t: TrainingSpec) -> bool:
    """grpo_trainer.py _generate_and_score_completions: the old policy's log-probs are computed when
    gradient_accumulation_steps % (steps_per_generation × num_iterations) != 0 (vLLM off)."""
    return t.grad_accum % generate_every(t) != 0


def gradients_at_generation(t: TrainingSpec) -> bool:
    """generate() runs at micro-batch k × generate_every; the accumulated gradients exist then unless that is
    the start of an accumulation window (zero_grad(set_to_none=True) after every optimizer step)."""
    return generate_every(t) % t.grad_accum != 0


def completion_len(t: TrainingSpec) -> int:
    return t.seq_len - t.prompt_len


def generation_view(t: TrainingSpec) -> TrainingSpec:
    """The generate() call as memory/inference.py reads a run: the generation batch, prompt P, C new tokens, the
    cache holding P + C - 1 tokens after the last step; QLoRA's blocks stay nf4 (bitsandbytes dequantizes per
    matmul); the policy's compute dtype (generate runs the training model as it is)."""
    c = completion_len(t)
    return replace(t, mode="inference", objective="sft", method="full", batch_size=generation_rows(t),
                   seq_len=t.prompt_len + c - 1, new_tokens=c, grad_accum=1, prompt_len=0, num_generations=8,
                   beta=0.0, steps_per_generation=0, num_iterations=1, ref_model="auto", ref_dtype="auto",
                   grad_checkpointing=False, ac_every=1, activation_offload=False, optimizer_in_bwd=False,
                   loss="hf", packing="none", lora_targets=("auto",), modules_to_save=(), zero=0, fsdp="none",
                   offload="none", fsdp_frozen_grads=False,
                   weight_dtype="nf4" if t.method == "qlora" and t.quant_bits == 4 else
                   "int8" if t.method == "qlora" else "auto")


@dataclass(frozen=True, slots=True)
class GenerationBytes:
    """generate()'s peak on the generation batch, beyond the weights and optimizer state."""

    kv_cache: int
    transient: int  # logits, sampling probabilities, the layer's workspace, the cache's growing copy


def generation_bytes(m: ModelSpec, t: TrainingSpec) -> GenerationBytes:
    """The larger of generate()'s prefill and last decode step (memory/inference.py generate_terms), with
    sampling's fp32 softmax over the vocabulary (generation/utils.py _sample: probs = softmax(next_token_scores))."""
    assert m.vocab_size is not None
    g = _inference.generate_terms(m, generation_view(t))
    probs = generation_rows(t) * m.vocab_size * 4
    prefill = (g.kv_prefill, max(g.prefill_workspace, g.prefill_attention, g.prefill_logits + probs))
    decode = (g.kv_decode, g.kv_transient + max(g.decode_workspace, g.decode_attention, g.decode_logits + probs))
    kv, rest = max(prefill, decode, key=sum)
    return GenerationBytes(kv, rest + g.dequant_buffer)


def logprob_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> _preference.ReferencePlan | None:
    """The no-grad log-prob passes after generate() (old policy, reference), or None when neither runs."""
    ref = _preference.resolve_ref(t)
    if not (ref or old_logps_pass(t)):
        return None
    # The pass's own outputs: log_probs, and entropy through the policy's head (add_fused_lm_head outputs).
    return _preference.nograd_forward_plan(m, t, recipe, 8 if ref != "copy" or old_logps_pass(t) else 4)


def logprob_pass_bytes(plan: _preference.ReferencePlan, t: TrainingSpec) -> int:
    """One sub-batch's pass (per_device_train_batch_size rows) and the fp32 results of every row so far."""
    rows = t.batch_size
    results = generation_rows(t) * completion_len(t) * 4
    return plan.peak(rows * t.seq_len, rows * min(completion_len(t), t.seq_len - 1)) + results


def loss_bytes(t: TrainingSpec) -> int:
    """_compute_loss's fp32 [B, C] tensors (the log-probs and entropy copies, the clipped ratio terms)."""
    vectors = LOSS_VECTORS + (KL_VECTORS if t.beta > 0 else 0)
    return vectors * 4 * t.batch_size * completion_len(t)


def peak_note(moments: tuple[tuple[str, object, tuple[int, ...]], ...]) -> str:
    """Which moment holds the peak: generate() or the training step, and by how much."""
    totals = {key: sum(values) for key, _, values in moments}
    gen = totals["forward.generate"]
    step_key = max((k for k in totals if k not in ("forward.generate", "forward.logprobs")), key=lambda k: totals[k])
    step = totals[step_key]
    if gen > step:
        return (f"grpo: the peak is generate() (forward.generate), {(gen - step) / 1e9:.2f} GB above the training "
                f"step's largest moment ({step_key}): fewer generation rows (--batch-size x steps per generation) "
                "or a shorter prompt + completion lower it.")
    return (f"grpo: the peak is the training step ({step_key}); generate() (forward.generate) needs "
            f"{(step - gen) / 1e9:.2f} GB less.")


def notes(t: TrainingSpec, reference_bytes: int, recipe: Recipe) -> tuple[str, ...]:
    """What the estimate assumed about the GRPO step (every format shows them)."""
    ref = _preference.resolve_ref(t)
    what = {"copy": f"a frozen copy of the model ({reference_bytes / 1e9:.2f} GB of weights)",
            "adapters-off": "the policy with its adapters disabled (no extra weights)",
            "": "none (beta 0, GRPOConfig's default)"}[ref]
    out = [f"grpo: TRL GRPOTrainer with generate() (vLLM off): {generation_rows(t)} completions per generate() "
           f"call (--batch-size {t.batch_size} x {steps_per_generation(t)} steps per generation), "
           f"{t.num_generations} per prompt, prompt {t.prompt_len} + completion {completion_len(t)} tokens "
           f"(--seq-len); the step runs on --batch-size completions through TRL's fused LM head, the loss over "
           f"completion tokens only; reference: {what}.",
           "generate() is its own moment (forward.generate): the weights, the optimizer state and the KV cache of "
           "the whole generation batch (DynamicCache) with the sampled logits; gradient checkpointing is off "
           f"during it; generation runs in {recipe.compute}."]
    passes = [x for x, on in (("the old policy's (num_iterations/steps_per_generation)", old_logps_pass(t)),
                              ("the reference's", bool(ref))) if on]
    if passes:
        out.append(f"no-grad log-prob passes after generate(): {' and '.join(passes)}, in sub-batches of "
                   "--batch-size rows (forward.logprobs).")
    if gradients_at_generation(t):
        out.append("generate() falls inside an accumulation window (steps_per_generation x num_iterations is not a "
                   "multiple of --grad-accum): the accumulated gradients are alive during it.")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RlPlan:
    """The token-independent part of a GRPO step's extra moments (memory/__init__.py _transformer_phases)."""

    model: ModelSpec
    logprobs: _preference.ReferencePlan | None
    copies: int  # amp full fine-tuning: autocast caches a 16-bit copy of every trainable fp32 weight per forward

    def moments(self, t: TrainingSpec, gradients: int) -> tuple[tuple[int, int, int, int], tuple[int, int] | None]:
        """((gradients, autocast copies, kv cache, generate transient), (gradients, log-prob pass) or None)."""
        g = generation_bytes(self.model, t)
        grads = gradients if gradients_at_generation(t) else 0
        passes = (grads, logprob_pass_bytes(self.logprobs, t)) if self.logprobs is not None else None
        return (grads, self.copies, g.kv_cache, g.transient), passes


def plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe, autocast_copies: int) -> RlPlan | None:
    if not is_rl(t):
        return None
    copies = autocast_copies if recipe.autocast and t.method in ("full", "freeze") else 0
    return RlPlan(m, logprob_plan(m, t, recipe), copies)
