"""TRL GRPOTrainer's step on the traced model (memory/rl.py models the same): generate(), then the loss.

TRL 1.16 trl/trainer/grpo_trainer.py, vLLM off:
* `_prepare_inputs`: every `steps_per_generation × num_iterations` micro-batches, `_generate_and_score_completions`
  runs on the generation batch (per_device_train_batch_size × steps_per_generation rows) and its output is
  split into steps_per_generation micro-batches, buffered (`self._buffered_inputs`) until the next generation.
  Here `make_inputs` is that: it runs inside the tracer's forward phase, before the micro-batch's loss.
* `_generate_single_turn` (1863-1879): `unwrap_model_for_generation` (trl/models/utils.py: gradient
  checkpointing disabled for it), `torch.no_grad()`, `unwrapped_model.generate(max_new_tokens=C, do_sample=True)`
  with a DynamicCache: trace/_generate.py `decode` with sampling, its ids cut to the completions, moved to
  the host and padded again (`completion_ids` a new device tensor).
* `_generate_and_score_completions` (2630-2740): under `torch.no_grad()` and with checkpointing disabled,
  `_get_per_token_logps_and_entropies(batch_size=per_device_train_batch_size)` for the old policy (when
  gradient_accumulation_steps % generate_every != 0) and for the reference when beta != 0 (the frozen copy,
  or the policy inside `use_adapter(adapter_name=None)`, peft's disable_adapter), the results concatenated.
* `_compute_loss` (3020-3160): the policy's fused-head forward on the micro-batch, log_probs and entropy,
  `[:, -logits_to_keep:]`, torch.cat; then loss_type dapo (GRPOConfig's default): ratio, clipping, the KL term
  with beta > 0, `(per_token_loss * mask).sum() / normalizer`; the metrics under no_grad.
The fused head is trace/_preference.py `fused_forward` (TRL's ChunkedLogProbFunction's allocations).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vramcalc.core.memory import rl as _rl
from vramcalc.core.specs import TrainingSpec
from vramcalc.trace._preference import PolicyAndReference, fused_forward

GRPO_OUTPUTS = ("log_probs", "entropy")  # grpo_trainer.py add_fused_lm_head(outputs=("log_probs", "entropy"))
EPSILON = 0.2  # GRPOConfig epsilon (epsilon_high defaults to it)


def _policy(m: nn.Module) -> Any:
    return m.policy if isinstance(m, PolicyAndReference) else m


@contextlib.contextmanager
def _no_checkpointing(policy: Any) -> Any:
    """trl/models/utils.py _unwrap_model_for_generation / disable_gradient_checkpointing."""
    target = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    on = bool(getattr(target, "is_gradient_checkpointing", False))
    if on:
        target.gradient_checkpointing_disable()
    try:
        yield
    finally:
        if on:
            target.gradient_checkpointing_enable()


def _positions(rows: int, seq: int, completion: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scored positions of the shifted labels (labels -100 before the last `completion` tokens)."""
    mask = torch.zeros((rows, seq - 1), dtype=torch.bool)
    mask[:, -completion:] = True
    n = rows * completion
    return (torch.randint(0, rows, (n,), dtype=torch.long), torch.randint(0, seq - 1, (n,), dtype=torch.long),
            mask)


def _logps(target: Any, ids: torch.Tensor, batch: int, completion: int, outputs: tuple[str, ...]) -> torch.Tensor:
    """_get_per_token_logps_and_entropies under no_grad: sub-batches of `batch` rows, log-probs concatenated."""
    parts = []
    for start in range(0, ids.shape[0], batch):
        chunk = ids[start:start + batch]
        rows, cols, mask = _positions(chunk.shape[0], chunk.shape[1], completion)
        out = fused_forward(target, chunk, rows, cols, mask, outputs)
        parts.append(out["log_probs"][:, -completion:])
        del out, rows, cols, mask
    return torch.cat(parts, dim=0)


def _packed_broadcast(policy: Any) -> None:
    """vllm/distributed/weight_transfer/packed_tensor.py packed_broadcast_producer: the flattened parameters
    concatenated into buffers of at least DEFAULT_PACKED_BUFFER_SIZE_BYTES, DEFAULT_PACKED_NUM_BUFFERS in flight
    (the NCCL broadcast itself is not emulated)."""
    in_flight: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    size = 0
    for _, param in policy.named_parameters():
        pending.append(param.data.reshape(-1).view(torch.uint8))
        size += param.data.numel() * param.data.element_size()
        if size >= _rl.PACKED_BUFFER_BYTES:
            in_flight.append(torch.cat(pending))  # packed while the buffers before it are still in flight
            pending, size = [], 0
            if len(in_flight) > _rl.PACKED_BUFFERS:
                in_flight.pop(0)  # the oldest broadcast done: its buffer reused
    if pending:
        in_flight.append(torch.cat(pending))
    del in_flight, pending


def grpo_step(training: TrainingSpec, vocab: int, module: Callable[[], nn.Module], adapters_off: bool,
              autocast: Callable[[], Any] | None) -> tuple[Callable[[], dict[str, Any]],
                                                            Callable[[nn.Module, dict[str, Any]], torch.Tensor]]:
    """(make_inputs, loss_fn) of GRPOTrainer's micro-batch; `module()` returns the traced module."""
    b, s, p = training.batch_size, training.seq_len, training.prompt_len
    c = s - p
    spg = _rl.steps_per_generation(training)
    gen_rows = _rl.generation_rows(training)
    beta = training.beta
    old_pass = _rl.old_logps_pass(training)
    state: dict[str, Any] = {"i": 0, "buffer": None}
    ac = autocast if autocast is not None else contextlib.nullcontext

    def generate_and_score() -> list[dict[str, Any]]:
        from vramcalc.trace._generate import decode

        m = module()
        policy = _policy(m)
        from transformers.cache_utils import DynamicCache

        prompt_ids = torch.randint(0, vocab, (gen_rows, p), dtype=torch.long)
        sampling = None
        if training.use_vllm == "off":
            with _no_checkpointing(policy), torch.no_grad():
                cache = DynamicCache()
                ids = decode(policy, prompt_ids, c, cache, sample=True, forward_ctx=ac)
                del cache
            completion_ids = ids[:, p:].clone()  # to the host as lists, padded again on the device
            del ids
        else:
            # vLLM generates (another engine, or another GPU): on this process only the weight sync's transient
            # (server: the packed broadcast) and the completions and vLLM's sampling log-probs, padded on the device
            if training.use_vllm == "server":
                _packed_broadcast(policy)
            completion_ids = torch.randint(0, vocab, (gen_rows, c), dtype=torch.long)
            if _rl.importance_sampling(training):  # GRPO keeps vLLM's log-probs (RLOO drops them)
                sampling = torch.zeros((gen_rows, c), dtype=torch.float32)  # sampling_per_token_logps
        prompt_completion_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.ones((gen_rows, s), dtype=torch.long)
        completion_mask = torch.ones((gen_rows, c), dtype=torch.long)
        batch: dict[str, Any] = {"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                                 "prompt_mask": attention_mask[:, :p], "completion_mask": completion_mask,
                                 "advantages": torch.zeros(gen_rows)}
        if sampling is not None:
            batch["sampling_per_token_logps"] = sampling
        with _no_checkpointing(policy), torch.no_grad(), ac():
            if old_pass:
                batch["old_per_token_logps"] = _logps(policy, prompt_completion_ids, b, c, ("log_probs",))
            if beta > 0:
                if adapters_off:
                    with policy.disable_adapter():
                        batch["ref_per_token_logps"] = _logps(policy, prompt_completion_ids, b, c, GRPO_OUTPUTS)
                else:
                    batch["ref_per_token_logps"] = _logps(m.ref, prompt_completion_ids, b, c, ("log_probs",))
        del prompt_completion_ids
        reward = getattr(m, "vramcalc_reward", None)
        if reward is not None:  # _calculate_rewards: a reward model on the decoded texts, the whole generation batch
            reward.eval()
            assert training.reward_spec is not None and training.reward_spec.vocab_size is not None
            reward_ids = torch.randint(0, training.reward_spec.vocab_size, (gen_rows, s), dtype=torch.long)
            reward_mask = torch.ones((gen_rows, s), dtype=torch.long)  # re-tokenized, right-padded
            rewards_per_func = torch.zeros(gen_rows, 1)
            with torch.inference_mode(), ac():  # accelerator.prepare_model(evaluation_mode=True): autocast
                rewards_per_func[:, 0] = reward(input_ids=reward_ids, attention_mask=reward_mask).logits[:, 0]
            del reward_ids, reward_mask, rewards_per_func
        # split_tensor_dict: steps_per_generation micro-batches (views of the generation batch's tensors)
        return [{k: v[i * b:(i + 1) * b] for k, v in batch.items()} for i in range(spg)]

    # The tracer runs two optimizer steps of grad_accum micro-batches and reports the second: generate() runs at
    # the first micro-batch and once in the second step, where TRL's schedule (every `generate_every`
    # micro-batches) puts one: at a window's start, or, when generate_every is not a multiple of grad_accum, at a
    # micro-batch with the accumulated gradients alive (the last of the window here).
    ga = training.grad_accum
    second = 2 * ga - 1 if _rl.gradients_at_generation(training) else ga

    def make_inputs() -> dict[str, Any]:
        i = state["i"]
        state["i"] += 1
        if i in (0, second):
            state["buffer"] = generate_and_score()  # the previous buffer is alive until replaced, as in TRL
        return dict(state["buffer"][i % spg])

    def completion_logps(m: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's per-token log-probs and entropies over the completions (TRL's fused head); the forward's
        other outputs and the position tensors are freed on return."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        rows, cols, label_mask = _positions(input_ids.shape[0], input_ids.shape[1], c)
        out = fused_forward(_policy(m), input_ids, rows, cols, label_mask, GRPO_OUTPUTS)
        return torch.cat([out["log_probs"][:, -c:]], dim=0), torch.cat([out["entropy"][:, -c:]], dim=0)

    def rloo_loss(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """rloo_trainer.py _compute_loss: per-sequence log-probs, ratio and clipping ([B] vectors), the mean; the
        entropy metric (masked sum) and the clip ratios."""
        mask = inputs["completion_mask"]
        per_token_logps, entropies = completion_logps(m, inputs)
        logps = (per_token_logps * mask).sum(1)
        old_logps = (inputs["old_per_token_logps"] * mask).sum(1)  # computed in _generate_and_score_completions
        advantages = inputs["advantages"]
        coef_1 = torch.exp(logps - old_logps)
        coef_2 = torch.clamp(coef_1, 1 - EPSILON, 1 + EPSILON)
        loss: torch.Tensor = -torch.min(coef_1 * advantages, coef_2 * advantages).mean()
        _ = (entropies * mask).sum(), ((coef_1 < 1 - EPSILON) & (advantages < 0)).float()
        return loss

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        if training.objective == "rloo":
            return rloo_loss(m, inputs)
        mask = inputs["completion_mask"]
        per_token_logps, entropies = completion_logps(m, inputs)
        advantages = inputs["advantages"].unsqueeze(1)
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        log_ratio = per_token_logps - old
        coef_1 = torch.exp(log_ratio)
        if beta > 0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
        coef_2 = torch.clamp(coef_1, 1 - EPSILON, 1 + EPSILON)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
        if "sampling_per_token_logps" in inputs:  # _compute_loss: times the importance-sampling ratio (vLLM)
            per_token_loss = per_token_loss * torch.ones((per_token_loss.shape[0], 1))
        if beta > 0:
            per_token_loss = per_token_loss + beta * per_token_kl
        loss: torch.Tensor = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)  # loss_type dapo
        with torch.no_grad():  # the metrics (grpo_trainer.py 3254-3290): masked means of entropy, KL, clip ratios
            _ = (entropies * mask).sum() / mask.sum(), ((coef_1 < 1 - EPSILON) & (advantages < 0)).float().mean()
            if beta > 0:
                _ = (per_token_kl * mask).sum() / mask.sum()
        return loss

    return make_inputs, loss_fn
