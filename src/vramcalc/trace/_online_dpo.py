"""TRL OnlineDPOTrainer's micro-batch on the traced model (memory/online_dpo.py models the same).

TRL 1.16 trl/experimental/online_dpo/online_dpo_trainer.py, reward functions as Python callables (or a reward model):
* `training_step` -> `_generate`: the B prompts tokenized left-padded and repeated twice (`repeat(2, 1)`: 2B rows),
  `unwrap_model_for_generation` (gradient checkpointing off for it), `torch.no_grad()`, `generate(max_new_tokens=C,
  do_sample=True)` with a DynamicCache (trace/_generate.py `decode` with sampling), or without a cache under gradient
  checkpointing (`use_cache=False`: `_uncached_decode`), the completions cut from its ids (`truncate_right` makes
  new ids and a mask). It runs in `make_inputs`, inside the tracer's forward phase, in every micro-batch. With
  `use_vllm` (`_generate_vllm`) vLLM generates instead: nothing of it on the traced tensors but the completions and,
  in server mode, the weight sync's one-tensor packed copies (`_packed_one`).
* `_forward` as TRL writes it (`_forward` below), with the model wrapped as accelerate prepares it: autocast around
  the model, then `convert_outputs_to_fp32` (the logits come back as an fp32 copy under mixed precision; the
  log-softmax runs outside autocast). The policy's, then the reference's under `torch.no_grad()` (the frozen copy,
  or the policy inside `disable_adapter()`).
* The loss as `training_step` computes it: chosen/rejected indices from the rewards, the masked sums, loss_type
  sigmoid, and the metrics (KL, entropy, rewards) that it computes before `accelerator.backward`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vramcalc.core.specs import TrainingSpec
from vramcalc.trace._preference import PolicyAndReference
from vramcalc.trace._rl import _no_checkpointing, _policy

BETA = 0.1  # OnlineDPOConfig beta


def _forward(model: Callable[..., Any], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
             completion_ids: torch.Tensor, completion_mask: torch.Tensor, max_length: int) -> torch.Tensor:
    """online_dpo_trainer.py OnlineDPOTrainer._forward (text only): the prompt cut from the left to fit max_length,
    prompt + completion in one forward without labels (the full logits), the completion positions' log-softmax
    and the completion ids' log-probs. (Written from the source: importing the trainer's module imports
    trl.generation, which benchmarks/vllm.py shadows when the grid runs from benchmarks/.)"""
    cut = max(prompt_ids.size(1) + completion_ids.size(1) - max_length, 0)
    prompt_ids, prompt_mask = prompt_ids[:, cut:], prompt_mask[:, cut:]
    ids = torch.cat((prompt_ids, completion_ids), dim=1)
    mask = torch.cat((prompt_mask, completion_mask), dim=1)
    output = model(ids, attention_mask=mask)
    p = prompt_ids.size(1)
    logits = output.logits[:, p - 1:-1] if p > 0 else output.logits
    return torch.take_along_dim(logits.log_softmax(dim=-1), completion_ids.unsqueeze(-1), dim=2).squeeze(-1)


def _uncached_decode(hf: Any, ids: torch.Tensor, n_new: int, ctx: Callable[[], Any]) -> torch.Tensor:
    """generate()'s `_sample` loop with use_cache=False (transformers 5.24 generation/utils.py): every step runs the
    model over the whole sequence so far, `logits_to_keep=1`; the last position's logits copied to fp32, softmax,
    multinomial."""
    for _ in range(n_new):
        with ctx():
            out = hf(input_ids=ids, use_cache=False, logits_to_keep=1)
        next_logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)
        del out
        probs = torch.nn.functional.softmax(next_logits, dim=-1)
        nxt = torch.multinomial(probs, num_samples=1).squeeze(1)
        del probs, next_logits
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
    return ids


def _packed_one(param: torch.Tensor) -> None:
    """vllm/distributed/weight_transfer/packed_tensor.py packed_broadcast_producer on a one-tensor iterator
    (trl/generation/vllm_client.py update_named_param): the pending list flushed at the end, torch.cat of the one
    flattened tensor (a copy), broadcast and released (the NCCL broadcast itself is not emulated)."""
    buffer = torch.cat([param.data.reshape(-1).view(torch.uint8)])
    del buffer


def online_dpo_step(training: TrainingSpec, vocab: int, module: Callable[[], nn.Module], adapters_off: bool,
                    autocast: Callable[[], Any] | None) -> tuple[Callable[[], dict[str, Any]],
                                                                 Callable[[nn.Module, dict[str, Any]], torch.Tensor]]:
    """(make_inputs, loss_fn) of OnlineDPOTrainer.training_step; `module()` returns the traced module."""
    b, s, p = training.batch_size, training.seq_len, training.prompt_len
    c = s - p
    ac = autocast if autocast is not None else contextlib.nullcontext
    state = {"i": 0}  # micro-batches so far (server mode syncs once per optimizer step)

    def make_inputs() -> dict[str, Any]:
        from transformers.cache_utils import DynamicCache

        from vramcalc.trace._generate import decode

        policy = _policy(module())
        prompts = torch.randint(0, vocab, (b, p), dtype=torch.long)
        prompt_mask = torch.ones((b, p), dtype=torch.long)
        prompt_ids, prompt_mask = prompts.repeat(2, 1), prompt_mask.repeat(2, 1)  # _generate: 2 per prompt
        del prompts
        if training.use_vllm != "off":
            # _generate_vllm: vLLM samples (a colocated engine or a server: not the policy), the token lists come
            # back padded into new [2B, P] / [2B, C] tensors; server mode first streams the weights one parameter at
            # a time (_move_model_to_vllm_inner: update_named_param, each its own packed broadcast)
            if training.use_vllm == "server" and state["i"] % training.grad_accum == 0:  # global_step moved
                for _, param in policy.named_parameters():
                    _packed_one(param)
            state["i"] += 1
            completion_ids = torch.randint(0, vocab, (2 * b, c), dtype=torch.long)
            return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                    "completion_mask": torch.ones((2 * b, c), dtype=torch.long)}
        with _no_checkpointing(policy), torch.no_grad():
            if training.grad_checkpointing:  # generation_kwargs use_cache=False: no cache, the whole sequence per step
                ids = _uncached_decode(policy, prompt_ids, c, ac)
            else:
                cache = DynamicCache()
                ids = decode(policy, prompt_ids, c, cache, sample=True, forward_ctx=ac)
                del cache
        completion_ids = ids[:, p:].clone()  # truncate_right: new ids and mask
        del ids
        completion_mask = torch.ones((2 * b, c), dtype=torch.long)
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                "completion_mask": completion_mask}

    def loss_fn(m: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        amp = torch.is_autocast_enabled("cpu")
        amp_dtype = torch.get_autocast_dtype("cpu")

        def prepared(target: nn.Module) -> Callable[..., Any]:  # accelerator.prepare_model's forward
            def forward(*args: Any, **kwargs: Any) -> Any:
                if not amp:
                    return target(*args, **kwargs)
                with torch.autocast("cpu", dtype=amp_dtype):
                    out = target(*args, **kwargs)
                out.logits = out.logits.float()
                return out
            return forward

        policy = _policy(m)
        args = (inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"])
        with torch.autocast("cpu", enabled=False):
            logprobs = _forward(prepared(policy), *args, s)
            with torch.no_grad():
                if adapters_off:
                    with policy.disable_adapter():
                        ref_logprobs = _forward(prepared(policy), *args, s)
                else:
                    assert isinstance(m, PolicyAndReference)
                    ref_logprobs = _forward(prepared(m.ref), *args, s)
            reward = getattr(m, "vramcalc_reward", None)
            if reward is not None:  # _calculate_rewards_from_functions: a reward model on the decoded texts
                reward.eval()  # online_dpo_trainer.py __init__: reward_func.eval()
                assert training.reward_spec is not None and training.reward_spec.vocab_size is not None
                reward_vocab = training.reward_spec.vocab_size
                reward_ids = torch.randint(0, reward_vocab, (2 * b, s), dtype=torch.long)  # re-tokenized
                reward_mask = torch.ones((2 * b, s), dtype=torch.long)
                rewards_per_func = torch.zeros(2 * b, 1)
                with torch.inference_mode():
                    rewards_per_func[:, 0] = prepared(reward)(input_ids=reward_ids,
                                                              attention_mask=reward_mask).logits[:, 0]
                del reward_ids, reward_mask
                rewards = rewards_per_func.nansum(dim=1)
            else:
                rewards = torch.zeros(2 * b)  # reward functions' scores (rewards_per_func.nansum)
            first, second = rewards.split(b)
            mask = first >= second
            batch_range = torch.arange(b)
            chosen = batch_range + (~mask * b)
            rejected = batch_range + (mask * b)
            cr = torch.cat((chosen, rejected), dim=0)
            cr_logprobs, cr_ref_logprobs = logprobs[cr], ref_logprobs[cr]
            cr_padding_mask = (~inputs["completion_mask"].bool())[cr]
            cr_sum = (cr_logprobs * ~cr_padding_mask).sum(1)
            cr_ref_sum = (cr_ref_logprobs * ~cr_padding_mask).sum(1)
            chosen_sum, rejected_sum = torch.split(cr_sum, b)
            chosen_ref_sum, rejected_ref_sum = torch.split(cr_ref_sum, b)
            logits = (chosen_sum - rejected_sum) - (chosen_ref_sum - rejected_ref_sum)
            loss: torch.Tensor = (-F.logsigmoid(BETA * logits)).mean()  # loss_type sigmoid
            with torch.no_grad():  # the metrics training_step computes before backward (.item() each)
                kl = logprobs - ref_logprobs
                _ = kl.sum(1).mean(), (-BETA * kl).sum(1).mean(), -logprobs.sum(1).mean()
                del kl
        return loss

    return make_inputs, loss_fn
