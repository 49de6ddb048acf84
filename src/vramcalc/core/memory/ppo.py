"""PPO (TRL 0.19.1 PPOTrainer, `--objective ppo`): a rollout and the policy + value step, in bytes.

TRL 1.x has no PPOTrainer (not in trl.experimental either); this models trl==0.19.1's trl/trainer/ppo_trainer.py
(`PPOTrainer.__init__`, `train`) and ppo_config.py / utils.py OnPolicyConfig, the last releases that had it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.loss import LossBytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

OBJECTIVE = "ppo"
# trl 0.19.1 trl/trainer/utils.py OnPolicyConfig local_rollout_forward_batch_size: the rollout's chunk of queries.
ROLLOUT_CHUNK = 64


def is_ppo(t: TrainingSpec) -> bool:
    return t.objective == OBJECTIVE


def rollout_rows(t: TrainingSpec) -> int:
    """ppo_trainer.py __init__: local_batch_size = per_device_train_batch_size × gradient_accumulation_steps queries
    per rollout (one response each)."""
    return t.batch_size * t.grad_accum


def chunk_rows(t: TrainingSpec) -> int:
    """The rows of one rollout chunk (generate(), the reference / value / reward forwards)."""
    return min(ROLLOUT_CHUNK, rollout_rows(t))


def value_dtype(t: TrainingSpec) -> str:
    """The value model's weight dtype: the policy's load dtype (it is trained beside it under one optimizer)."""
    from vramcalc.core.memory.precision import recipe_of

    return recipe_of(t).weight


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """What of PPO is not modelled, refused in one line."""
    from vramcalc.core.memory.precision import recipe_of

    if t.reward_spec is None:
        raise UnsupportedCombination("PPO needs a reward model (PPOConfig reward_model_path; its path also loads the "
                                     "value model, as TRL's ppo.py example does): add --reward-model "
                                     "PRESET|config.json")
    if recipe_of(t).autocast:
        raise UnsupportedCombination(f"--objective ppo with --precision {t.precision} (fp32 weights under autocast) is "
                                     "not modelled: accelerate's fp32 output conversion of the policy + value wrapper "
                                     "is not; use --precision bf16, fp16 or fp32")
    if t.grad_accum > 1:
        raise UnsupportedCombination("--objective ppo with --grad-accum > 1 is not modelled (the previous "
                                     "micro-batch's logits and hidden states stay alive through the next forward in "
                                     "ppo_trainer.py): use --grad-accum 1")
    if t.grad_checkpointing:
        raise UnsupportedCombination("PPOTrainer.train() is its own loop and never calls gradient_checkpointing_enable "
                                     "(TRL 0.19.1 ppo_trainer.py): drop --grad-checkpointing")
    if t.method not in ("full", "lora", "qlora"):
        raise UnsupportedCombination(f"--objective ppo with --method {t.method} is not modelled: use full, lora or "
                                     "qlora")
    if t.method == "qlora" and t.kbit_prep:
        raise UnsupportedCombination("PPOTrainer applies peft with get_peft_model alone (TRL 0.19.1 ppo_trainer.py "
                                     "__init__), never prepare_model_for_kbit_training: add --no-kbit-prep")
    if t.optimizer_in_bwd or t.activation_offload or t.kernels != "hf" or t.zero or t.fsdp != "none":
        raise UnsupportedCombination("--objective ppo is modelled for PPOTrainer's own loop on one GPU: drop "
                                     "--optimizer-in-bwd / --activation-offload / --kernels / --zero / --fsdp")
    if m.vocab_size is None or m.vision is not None or m.num_experts:
        raise UnsupportedCombination(f"--objective ppo with {m.name}: a dense text decoder with its architecture is "
                                     "modelled")
    r = t.reward_spec
    if r.vocab_size is not None and r.vocab_size < m.vocab_size:
        raise UnsupportedCombination(f"--reward-model {t.reward_model}: PPOTrainer feeds the policy's token ids to "
                                     f"the value and reward models, so their vocabulary ({r.vocab_size:,}) must "
                                     f"cover the policy's ({m.vocab_size:,}): choose a reward model of the same "
                                     "tokenizer")


def head_bytes(*, rows: int, seq: int, completion: int, vocab: int, hidden: int, compute: int,
               head_trainable: bool, head_grad: int) -> LossBytes:
    """The policy's head in the micro-batch (ppo_trainer.py train): `output.logits` [B, S, V] in the compute dtype,
    bound (with `logits`, its completion slice divided by the temperature in place) until the mini-batch's del, so
    alive through backward; `selective_log_softmax` (trl/trainer/utils.py): 16-bit logits take a log_softmax per row,
    each [C, V] output saved for backward, and a gather; fp32 logits a gather and a logsumexp per row (its [C, V]
    exp temporaries). Backward: each row's gather (zero-filled [C, V]) and log-softmax gradients, stacked by unbind's
    backward into [B, C, V]; the slice's zero-filled [B, S, V] gradient; the in-place division's CopySlices clones it
    and the slice ([B, C, V]) and divides that (another [B, C, V]); then lm_head's backward on the [B, S, V]
    gradient."""
    c, v = compute, vocab
    tokens = rows * seq
    full = tokens * v * c  # output.logits: kept until the mini-batch's del (estimate adds it to every backward moment)
    scored = rows * completion * v * c
    row = completion * v * c
    lsm = scored if c < 4 else 0  # the 16-bit path's saved per-row log_softmax outputs
    # the gather's int64 index and the gathered log-probs per row, stacked [B, C]; lm_head's input if it trains
    small = rows * completion * (8 + 2 * c)
    saved = lsm + small + (c * hidden * tokens if head_trainable else 0)
    forward = full + 2 * row  # the logits and one row's log_softmax / logsumexp temporaries
    # beyond `saved` and the kept logits: the rows' gradients and their stack; then (the saved outputs freed) the
    # slice's zero-filled gradient, CopySlices' clone of it, the slice's clone and its division
    backward = max(2 * scored + row, 2 * full + 2 * scored - lsm)
    # lm_head's backward: the [B, S, V] gradient, its input and its input's gradient, the weight's gradient
    head_backward = full + 2 * c * hidden * tokens + head_grad
    return LossBytes(saved, forward, backward, head_backward, False)


def _layers(m: ModelSpec) -> int:
    assert m.num_layers is not None
    return m.num_layers


def hidden_states_bytes(m: ModelSpec, tokens: int, compute: int) -> int:
    """output_hidden_states=True: the embeddings' output and every layer's (the last one normed), L + 1 tensors of
    [rows, S, H] (utils.py forward / get_reward pass it; the outputs hold them)."""
    assert m.hidden_size is not None
    return (_layers(m) + 1) * tokens * m.hidden_size * compute


def nograd_forward_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe, rows: int, *, lm_head: bool) -> int:
    """A no-grad forward with output_hidden_states on `rows` rows of --seq-len tokens: every hidden state so far,
    the layer's peak (memory/preference.py nograd_layer_bytes, its residual stream included); with the LM head
    (utils.py forward: the reference), the full logits [rows, S, V] in the compute dtype, divided by the temperature
    in place, then selective_log_softmax's 16-bit path (one row's log_softmax [C, V] at a time) or fp32 path (one
    row's logsumexp temporaries [C, V])."""
    from vramcalc.core.memory import preference as _preference
    from vramcalc.core.units import dtype_bytes

    assert m.vocab_size is not None and m.hidden_size is not None
    c = dtype_bytes(recipe.compute)
    tokens = rows * t.seq_len
    per_token, fixed = _preference.nograd_layer_bytes(m, recipe, t.method if lm_head else "full")
    hidden = hidden_states_bytes(m, tokens, c)
    layer = hidden - tokens * m.hidden_size * c + per_token * tokens + fixed
    if not lm_head:
        return layer
    completion = t.seq_len - t.prompt_len
    head = hidden + tokens * m.vocab_size * c + completion * m.vocab_size * c
    return max(layer, head)


def value_run(t: TrainingSpec, batch: int) -> TrainingSpec:
    """The value model's training as the reward objective reads it (AutoModelForSequenceClassification trained in
    full, the score over every position; `batch` pairs = 2 × batch rows), in the policy's precision and optimizer."""
    # packing "packed": utils.py forward passes the attention_mask, so sdpa gets a 4-D mask (repeated k/v and the
    # mask saved per layer) as memory/activations.py masked_sdpa models for packed rows
    return replace(t, objective="reward", method="full", batch_size=batch, prompt_len=0, reward_model="none",
                   packing="packed",
                   reward_spec=None, reward_dtype="auto", lora_targets=("auto",), modules_to_save=(),
                   weight_dtype="auto")


def _value_step(r: ModelSpec, t: TrainingSpec, estimate: Callable[[ModelSpec, TrainingSpec], Any]) -> dict[str, int]:
    """The value model's step on --batch-size rows: the reward objective stacks 2 rows per pair, so an even batch is
    read at batch / 2 and an odd one from batches 1 and 2 (2 and 4 rows: every term is affine in the rows)."""
    assert r.hidden_size is not None

    def parts(b: Any) -> dict[str, int]:
        base = b.weights + b.optimizer_state

        def score(x: int) -> int:  # the score head's H parameters, which memory/reward.py leaves out: trained here
            return x + x * r.hidden_size // b.parameters

        return {"weights": score(b.weights), "gradients": score(b.gradients),
                "optimizer_state": score(b.optimizer_state),
                "activations": b.activations, "forward": b.phases["forward"] - base,
                "backward": b.phases["backward"] - base, "step": b.phases["optimizer_step"] - base,
                "step_temporaries": b.details.get("temporaries.optimizer_step", 0)}

    rows = t.batch_size
    if rows % 2 == 0:
        return parts(estimate(r, value_run(t, rows // 2)))
    two, four = parts(estimate(r, value_run(t, 1))), parts(estimate(r, value_run(t, 2)))
    return {k: two[k] + (four[k] - two[k]) * (rows - 2) // 2 for k in two}


_PREV = ("previous update's rollout logits", "activations")
_LOGITS = ("rollout logits [rows, C, V] fp32", "activations")
_ROLLOUT: dict[str, Any] = {
    "forward.rollout_generate": (_PREV, ("earlier chunks' logits", "activations"),
                                 ("KV cache of the chunk", "kv_cache"),
                                 ("generate() scores kept, stacked, and its step", "temporaries")),
    "forward.rollout_pad": (_PREV, ("the chunks' logits and their padded copy", "activations")),
    "forward.rollout_reference": (_LOGITS, ("reference's no-grad forward (hidden states, logits)", "temporaries")),
    "forward.rollout_scores": (_LOGITS, ("value / reward model's no-grad forward (hidden states)", "temporaries")),
}


def estimate(model: ModelSpec, training: TrainingSpec, estimate_fn: Callable[[ModelSpec, TrainingSpec], Any]) -> Any:
    """One PPO update's peak: the rollout's moments and the policy + value micro-batch's (module docstring)."""
    from vramcalc.core.memory import moments as _m
    from vramcalc.core.memory import preference as _preference
    from vramcalc.core.memory import reward as _reward
    from vramcalc.core.memory import reward_scoring as _reward_scoring
    from vramcalc.core.memory import rl as _rl
    from vramcalc.core.memory.overhead import runtime_overhead
    from vramcalc.core.memory.precision import recipe_of
    from vramcalc.core.units import dtype_bytes

    check(model, training)
    r = training.reward_spec
    assert r is not None and model.vocab_size is not None
    m = _preference.without_dropout(model)  # ppo_trainer.py __init__: disable_dropout_in_model on all four models
    recipe = recipe_of(training)
    c = dtype_bytes(recipe.compute)
    b, s, p = training.batch_size, training.seq_len, training.prompt_len
    comp = s - p
    v = m.vocab_size
    pol = estimate_fn(m, replace(training, reward_model="none", reward_spec=None, reward_dtype="auto"))
    value = _value_step(_preference.without_dropout(_reward.body(r)), training, estimate_fn)
    reward_weights = _reward_scoring.weight_bytes(training, recipe)
    # ppo_trainer.py __init__: create_reference_model(policy) for full fine-tuning; None under peft (null_ref_context
    # disables the adapters)
    ref_weights = pol.parameters * dtype_bytes(recipe.weight) if training.method == "full" else 0
    weights = pol.weights + ref_weights + value["weights"] + reward_weights
    states = pol.optimizer_state + value["optimizer_state"]
    base = weights + states
    n, chunk = rollout_rows(training), chunk_rows(training)
    logits_all = n * comp * v * 4  # batch_generation's padded fp32 logits, alive all update (never deleted)
    # The rollout (no gradients: zero_grad(set_to_none) after every optimizer step).
    gen = _rl.generation_bytes(m, replace(training, batch_size=chunk, grad_accum=1))
    scores = chunk * comp * v * 4
    # the last decode step: every earlier step's processed scores, the temperature's new [rows, V] fp32 tensor beside
    # the fp32 copy; or torch.stack(output.scores) beside the list while the output still holds the cache
    gen_t = max(gen.transient + scores - chunk * v * 4 + chunk * v * 4, 2 * scores)
    earlier = (n - chunk) * comp * v * 4
    ref_fwd = nograd_forward_bytes(m, training, recipe, chunk, lm_head=True)
    body_r = replace(r, name=r.name)
    val_fwd = nograd_forward_bytes(body_r, training, recipe, chunk, lm_head=False)
    rollout = {
        "forward.rollout_generate": (logits_all, earlier, gen.kv_cache, gen_t),
        "forward.rollout_pad": (logits_all, 2 * logits_all),
        "forward.rollout_reference": (logits_all, ref_fwd),
        "forward.rollout_scores": (logits_all, val_fwd),
    }
    # The micro-batch: PolicyAndValueWrapper.forward runs the critic's backbone first, then the policy; both are
    # saved for one backward; the policy's output (full logits, hidden states) stays bound until the mini-batch's del.
    tokens = b * s
    kept_logits = tokens * v * c
    kept_hidden = hidden_states_bytes(m, tokens, c)
    # The hidden states the layers do not save themselves (utils.py forward's output_hidden_states): an RMSNorm on
    # 16-bit input saves its fp32 copy, not the input (modeling_llama.py LlamaRMSNorm), so the output's hidden states
    # are extra from the forward on; a LayerNorm (or fp32) saves the input itself: extra only once backward has
    # freed a layer's saved set.
    unsaved_hidden = kept_hidden if m.norm == "rmsnorm" and c < 4 else 0
    # the critic's output (its hidden states) is bound in PolicyAndValueWrapper.forward until the policy returns
    critic_hidden = hidden_states_bytes(r, tokens, c) if r.norm == "rmsnorm" and c < 4 else 0
    entropy = 2 * b * comp * v * c  # softmax(logits) and prob_dist * logits
    pol_moments = {k: sum(vals) for k, _, vals in pol.moments}
    pol_f = max(x for k, x in pol_moments.items() if k.startswith("forward.")) + unsaved_hidden
    pol_b = max(x for k, x in pol_moments.items() if k.startswith("backward.")) + unsaved_hidden
    step_t = pol.details.get("temporaries.optimizer_step", 0) + value["step_temporaries"]
    train = {
        "forward.value": (logits_all, value["forward"] + critic_hidden),
        "forward.policy": (logits_all, value["activations"] + critic_hidden, pol_f),
        "backward.policy": (logits_all, value["activations"], kept_logits, pol_b),
        "backward.value": (logits_all, pol.gradients, kept_logits + kept_hidden, value["backward"]),
        "optimizer_step.step": (logits_all, pol.gradients + value["gradients"], kept_logits + kept_hidden, step_t),
        "optimizer_step.entropy": (logits_all, kept_logits + kept_hidden, entropy),
    }
    layouts: dict[str, _m.Layout] = dict(_ROLLOUT)
    layouts.update({
        "forward.value": (_LOGITS, ("value model's training forward", "activations")),
        "forward.policy": (_LOGITS, ("value model's saved activations", "activations"),
                           ("policy's training forward", "activations")),
        "backward.policy": (_LOGITS, ("value model's saved activations", "activations"),
                            ("policy's full logits (output kept)", "activations"), ("policy's backward", "gradients")),
        "backward.value": (_LOGITS, ("policy's gradients", "gradients"),
                           ("policy's output kept (logits, hidden states)", "activations"),
                           ("value model's backward", "gradients")),
        "optimizer_step.step": (_LOGITS, ("gradients", "gradients"),
                                ("policy's output kept (logits, hidden states)", "activations"),
                                ("step temporaries", "temporaries")),
        "optimizer_step.entropy": (_LOGITS, ("policy's output kept (logits, hidden states)", "activations"),
                                   ("entropy's softmax and product", "temporaries")),
    })
    all_moments = {**rollout, **train}
    moments = tuple((k, layouts[k], vals) for k, vals in all_moments.items())
    phases = {ph: base + max(sum(vals) for k, vals in all_moments.items() if k.startswith(ph + "."))
              for ph in ("forward", "backward", "optimizer_step")}
    tensor_peak = max(phases.values())
    over = runtime_overhead(tensor_peak, 1)
    details = {k: x for k, x in pol.details.items() if not k.startswith("overhead.")}
    details.update(over.details())
    details.update({"weights.reference": ref_weights, "weights.value_model": value["weights"],
                    "weights.reward_model": reward_weights, "gradients.value_model": value["gradients"],
                    "optimizer_state.value_model": value["optimizer_state"],
                    "activations.value_model": value["activations"], "activations.rollout_logits": logits_all,
                    "activations.policy_output_kept": kept_logits + kept_hidden,
                    "kv_cache.generation": gen.kv_cache, "temporaries.rollout_generate": gen_t,
                    "temporaries.rollout_reference": ref_fwd, "temporaries.rollout_scores": val_fwd,
                    "temporaries.entropy": entropy})
    temporaries = max(gen_t, ref_fwd, val_fwd, entropy, step_t, pol.temporaries)
    activations = logits_all + value["activations"] + pol.activations + kept_logits
    peak_key = max(all_moments, key=lambda k: sum(all_moments[k]))
    return replace(
        pol, weights=weights, gradients=pol.gradients + value["gradients"], optimizer_state=states,
        activations=activations, temporaries=temporaries, overhead=over.total, phases=phases, details=details,
        notes=notes(training, ref_weights, value["weights"], reward_weights, peak_key) + pol.notes,
        kv_cache=gen.kv_cache, moments=moments)


def notes(t: TrainingSpec, ref_weights: int, value_weights: int, reward_weights: int, peak: str) -> tuple[str, ...]:
    """What the estimate assumed about the PPO update (every format shows them)."""
    comp = t.seq_len - t.prompt_len
    ref = (f"a frozen copy ({ref_weights / 1e9:.2f} GB)" if ref_weights else
           "the policy with its adapters disabled (no weights)")
    where = "the rollout" if peak.startswith("forward.rollout") else "the policy + value micro-batch"
    return (
        "ppo: follows TRL 0.19.1's PPOTrainer (trl/trainer/ppo_trainer.py; TRL 1.x dropped it): policy, reference "
        f"({ref}), value model ({value_weights / 1e9:.2f} GB, AutoModelForSequenceClassification from the reward "
        "model's path, trained in full beside the policy under one optimizer: PolicyAndValueWrapper) and reward model "
        f"{t.reward_model} ({reward_weights / 1e9:.2f} GB, frozen).",
        f"ppo: the rollout generates {rollout_rows(t)} response{'' if rollout_rows(t) == 1 else 's'} of {comp} "
        "tokens (response_length) from "
        f"{t.prompt_len}-token queries in chunks of {chunk_rows(t)} (local_rollout_forward_batch_size 64) and keeps "
        "every step's fp32 "
        "scores as one [rows, C, V] tensor for the whole update (the previous update's too, while the next one "
        "generates); then per chunk the reference's, value's and reward's no-grad forwards with output_hidden_states.",
        f"ppo: the peak is {where} ({peak}); num_ppo_epochs and num_mini_batches repeat the micro-batch without "
        "changing it (everything is deleted after each mini-batch); responses counted at their full length (no stop "
        "token).",
    )
