"""TRL 0.19.1's PPOTrainer update on the traced models (memory/ppo.py models the same).

TRL 1.x has no PPOTrainer; this is the loop of trl==0.19.1 trl/trainer/ppo_trainer.py `PPOTrainer.train` and its
helpers in trl/trainer/utils.py (`batch_generation`, `generate`, `forward`, `get_reward`, `selective_log_softmax`),
rewritten from that source for transformers 5 (importing trl 0.19 is not possible beside trl 1.16):
* the models: the policy (peft applied to it alone), `PolicyAndValueWrapper(policy, value_model)` under one
  optimizer (the value model, AutoModelForSequenceClassification from the reward model's path, trained in full),
  the reference (`create_reference_model`: a frozen copy; None under peft, the adapters disabled instead), the
  reward model (frozen); `disable_dropout_in_model` on all four.
* the rollout under `torch.no_grad()`: `batch_generation` on the local batch (per_device_train_batch_size ×
  gradient_accumulation_steps queries) in chunks of local_rollout_forward_batch_size (64): each chunk's
  `generate(return_dict_in_generate=True, output_scores=True)` (sampling, temperature 0.7: the processed fp32
  scores of every step kept, and the cache, until `torch.stack(output.scores, 1)`), the chunks padded into one
  `[rows, response_length, vocab]` fp32 tensor (`logitss`, never deleted: the previous update's is alive while the
  next generates); then per chunk the log-probs from those logits, the reference's `forward` (output_hidden_states,
  full logits, divided by the temperature in place), the value model's and the reward model's `get_reward`
  (backbone with output_hidden_states, score over every position); then rewards, GAE, whitening ([rows, C]).
* the PPO epochs: per micro-batch `forward(model, ...)` of the wrapper (the critic's backbone, then the policy,
  both with output_hidden_states), the policy's completion logits divided in place, `selective_log_softmax`,
  the clipped value and policy losses, backward, `optimizer.step()`, `zero_grad()`, then under no_grad the entropy
  (`softmax` and a product the size of the completion logits) while `output` and `logits` are still alive; they are
  deleted after each mini-batch.
Two updates run (num_ppo_epochs 1: each epoch frees everything it made); the second is reported. The rollout is in
the forward phase, the training forward too; backward; the optimizer step and the entropy in optimizer_step.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import ppo as _ppo
from vramcalc.core.memory.precision import RECIPES, resolve_precision
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace import _cuda
from vramcalc.trace._hf import DTYPES, build_model, model_dtype
from vramcalc.trace._optim import make_optimizer
from vramcalc.trace._step import TraceResult, _fakeify, _host_step_tensors
from vramcalc.trace._tracker import CATEGORIES, PHASES, MemoryTracker, tensors_of

TEMPERATURE = 0.7 + 1e-7  # OnPolicyConfig temperature 0.7; ppo_trainer.py divides by temperature + 1e-7
PAD = 0  # processing_class.pad_token_id (no padding in the traced rows)


class PolicyAndValueWrapper(nn.Module):
    """ppo_trainer.py PolicyAndValueWrapper, with the frozen reference and reward model attached as children so that
    the tracker counts their weights."""

    def __init__(self, policy: nn.Module, value_model: nn.Module, ref: nn.Module | None, reward: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.critic_backbone = getattr(value_model, value_model.base_model_prefix)
        self.vramcalc_ref = ref
        self.vramcalc_reward = reward

    def forward(self, **kwargs: Any) -> tuple[Any, torch.Tensor]:
        output = self.critic_backbone(**kwargs)
        logits = self.value_model.score(output.hidden_states[-1])
        return self.policy(**kwargs), logits


def _forward(model: Any, query_responses: torch.Tensor) -> Any:
    """trl/trainer/utils.py forward."""
    attention_mask = query_responses != PAD
    position_ids = attention_mask.cumsum(1) - attention_mask.long()
    input_ids = torch.masked_fill(query_responses, ~attention_mask, 0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True,
                 output_hidden_states=True)


def _get_reward(model: Any, query_responses: torch.Tensor, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """trl/trainer/utils.py get_reward: the backbone with output_hidden_states, the score over every position."""
    attention_mask = query_responses != PAD
    position_ids = attention_mask.cumsum(1) - attention_mask.long()
    backbone = getattr(model, model.base_model_prefix)
    input_ids = torch.masked_fill(query_responses, ~attention_mask, 0)
    output = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      return_dict=True, output_hidden_states=True, use_cache=False)
    reward_logits = model.score(output.hidden_states[-1])
    del output
    bools = query_responses[:, context_length:] == PAD  # first_true_indices
    row_len = bools.size(-1)
    zero_or_index = row_len * (~bools).type(torch.long) + torch.arange(row_len, dtype=torch.long)
    sequence_lengths = torch.min(zero_or_index, dim=-1).values - 1 + context_length
    final = reward_logits[torch.arange(reward_logits.size(0)), sequence_lengths].squeeze(-1)
    return reward_logits, final


def _selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """trl/trainer/utils.py selective_log_softmax (0.19.1): fp32 through logsumexp per row, 16-bit through a
    log_softmax per row."""
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        lse = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])
        return selected - lse
    per_token = []
    for row_logits, row_labels in zip(logits, index, strict=True):
        row_logps = torch.nn.functional.log_softmax(row_logits, dim=-1)
        per_token.append(row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1))
    return torch.stack(per_token)


def _generate(policy: Any, queries: torch.Tensor, n_new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """trl/trainer/utils.py generate: transformers 5.24 generation/utils.py `_sample` with return_dict_in_generate
    and output_scores (TemperatureLogitsWarper: a new fp32 tensor per step, kept in `scores`; top_k 0 and top_p 1 add
    no warper), the DynamicCache returned in the output; then `torch.stack(output.scores, 1)` and the ids."""
    from transformers.cache_utils import DynamicCache

    context_length = queries.shape[1]
    cache = DynamicCache()
    ids = queries
    scores: list[torch.Tensor] = []
    past = 0
    for step in range(n_new):
        inputs = ids if step == 0 else ids[:, -1:]
        q = inputs.shape[1]
        pos = torch.arange(past, past + q, dtype=torch.long).unsqueeze(0)
        outputs = policy(input_ids=inputs, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        next_token_logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        next_token_scores = next_token_logits / TEMPERATURE
        scores.append(next_token_scores)
        probs = torch.nn.functional.softmax(next_token_scores, dim=-1)
        next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
        del probs
        ids = torch.cat([ids, next_tokens[:, None]], dim=-1)
        del outputs, inputs, pos
        past += q
    del next_token_logits, next_token_scores
    logits = torch.stack(scores, 1)
    del scores, cache  # the output (its scores and cache) dropped when generate returns
    return torch.cat((queries, ids[:, context_length:]), dim=1), logits


def _pad_rows(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    """trl/trainer/utils.py pad (right): a new [len, *max shape] tensor filled, each chunk copied in."""
    shape = [len(tensors), *[max(t.shape[i] for t in tensors) for i in range(tensors[0].dim())]]
    out = torch.full(shape, value, dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        out[i][tuple(slice(0, s) for s in t.shape)] = t
    return out


def _batch_generation(policy: Any, queries: torch.Tensor, chunk: int, n_new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """trl/trainer/utils.py batch_generation."""
    query_responses, logitss = [], []
    for i in range(0, queries.shape[0], chunk):
        qr, lg = _generate(policy, queries[i:i + chunk], n_new)
        query_responses.append(qr)
        logitss.append(lg)
    padded_qr = _pad_rows(query_responses, PAD)
    padded_logits = _pad_rows(logitss, 0)
    del query_responses, logitss
    padded_qr = padded_qr.view(-1, padded_qr.shape[-1])[:queries.shape[0]]
    padded_logits = padded_logits.view(-1, *padded_logits.shape[2:])[:queries.shape[0]]
    return padded_qr, padded_logits


def _build(model: ModelSpec, training: TrainingSpec, notes: list[str]) -> tuple[nn.Module, bool]:
    """The four models on the meta device: (PolicyAndValueWrapper with the reference and reward attached, peft?)."""
    from vramcalc.core.memory.reward_scoring import weight_dtype
    from vramcalc.trace._run import _prepare

    precision = resolve_precision(training)
    dtype = model_dtype(precision)
    assert training.reward_spec is not None
    policy_run = replace(training, objective="sft", reward_model="none", reward_spec=None, prompt_len=0)
    hf, build_notes = build_model(model, policy_run, dtype)
    notes.extend(build_notes)
    policy = _prepare(hf, model, policy_run, notes)
    peft = training.method in ("lora", "qlora")
    ref = None
    if not peft:  # ppo_trainer.py __init__: create_reference_model(policy) (a deep copy, frozen)
        ref, _ = build_model(model, policy_run, dtype)
        for p in ref.parameters():
            p.requires_grad_(False)
    as_reward = TrainingSpec(objective="reward", attention=training.attention)
    value, _ = build_model(training.reward_spec, as_reward, DTYPES[_ppo.value_dtype(training)])
    reward_dtype = DTYPES[weight_dtype(training, RECIPES[precision])]
    reward, _ = build_model(training.reward_spec, as_reward, reward_dtype)
    for p in reward.parameters():
        p.requires_grad_(False)
    wrapper = PolicyAndValueWrapper(policy, value, ref, reward)
    for mod in wrapper.modules():  # disable_dropout_in_model on policy, ref, value and reward models
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    notes.append(f"ppo: TRL 0.19.1 PPOTrainer's update rewritten from source (trace/_ppo.py); value model and "
                 f"reward model {training.reward_model} (AutoModelForSequenceClassification; value "
                 f"{_ppo.value_dtype(training)} trained in full, reward {reward_dtype} frozen); reference "
                 + ("adapters-off" if peft else "a frozen copy"))
    return wrapper, peft


def trace_ppo(model: ModelSpec, training: TrainingSpec) -> TraceResult:
    """Two PPO updates (rollout + one PPO epoch of the micro-batches) on fake tensors; the second reported."""
    if not model.has_architecture or model.vocab_size is None:
        raise UnsupportedCombination(f"{model.name} has no architecture; trace needs one")
    _ppo.check(model, training)
    notes: list[str] = []
    b, s, p = training.batch_size, training.seq_len, training.prompt_len
    c = s - p
    rows = _ppo.rollout_rows(training)
    chunk = _ppo.chunk_rows(training)
    vocab = model.vocab_size
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    tracker = MemoryTracker()
    with _cuda.cuda_emulation(packed_mask=False) as cuda_notes:
        wrapper, peft = _build(model, training, notes)
        with fake_mode:
            mod = _fakeify(wrapper)
            mod.train()
            params = list(mod.parameters())
            trainable = [q for q in params if q.requires_grad]
            optimizer, opt_notes = make_optimizer(training, trainable, mod)
            notes.extend(opt_notes)
        for q in params:
            tracker.track(q, "parameters")
        for buf in mod.buffers():
            tracker.track(buf, "buffers")
        for q in trainable:
            q.register_post_accumulate_grad_hook(lambda x: tracker.recategorize(x.grad, "gradients"))
        policy, ref, reward = mod.policy, mod.vramcalc_ref, mod.vramcalc_reward
        held: dict[str, Any] = {}

        def update() -> None:
            with tracker.in_phase("forward"), torch.no_grad():
                queries = torch.randint(1, vocab, (rows, p), dtype=torch.long)
                # `logitss` of the previous update is still bound while batch_generation runs
                query_responses, held["logitss"] = _batch_generation(policy, queries, chunk, c)
                logitss = held["logitss"]
                logprobs, ref_logprobs, values, scores = [], [], [], []
                for i in range(0, rows, chunk):
                    query_response = query_responses[i:i + chunk]
                    response = query_response[:, p:]
                    logits = logitss[i:i + chunk]
                    logprobs.append(_selective_log_softmax(logits, response))
                    del logits
                    ctx = policy.disable_adapter() if peft else contextlib.nullcontext()
                    with ctx:
                        ref_output = _forward(policy if peft else ref, query_response)
                    ref_logits = ref_output.logits[:, p - 1:-1]
                    ref_logits /= TEMPERATURE
                    ref_logprobs.append(_selective_log_softmax(ref_logits, response))
                    del ref_output, ref_logits
                    postprocessed = torch.cat((queries[i:i + chunk], response), 1)
                    full_value, _ = _get_reward(mod.value_model, query_response, p)
                    values.append(full_value[:, p - 1:-1].squeeze(-1))
                    _, score = _get_reward(reward, postprocessed, p)
                    scores.append(score)
                    del full_value, postprocessed, response, query_response
                logprobs_t = torch.cat(logprobs, 0)
                ref_logprobs_t = torch.cat(ref_logprobs, 0)
                values_t = torch.cat(values, 0)
                scores_t = torch.cat(scores, 0)
                responses = query_responses[:, p:].clone()
                del logprobs, ref_logprobs, values, scores
                # rewards (k1 KL), GAE (gamma 1, lam 0.95), whitened advantages: [rows, C] vectors
                kl = -(ref_logprobs_t - logprobs_t)
                rewards = -0.05 * kl
                rewards[:, -1] += scores_t
                lastgaelam: Any = 0
                reversed_adv = []
                for t in reversed(range(c)):
                    nextvalues = values_t[:, t + 1] if t < c - 1 else 0.0
                    delta = rewards[:, t] + nextvalues - values_t[:, t]
                    lastgaelam = delta + 0.95 * lastgaelam
                    reversed_adv.append(lastgaelam)
                advantages = torch.stack(reversed_adv[::-1], 1)
                returns = advantages + values_t
                advantages = (advantages - advantages.mean()) * torch.rsqrt(advantages.var() + 1e-8)
                del reversed_adv, lastgaelam, delta, rewards, kl
            for start in range(0, rows, b):  # one PPO epoch, one mini-batch, its micro-batches
                idx = slice(start, start + b)
                with tracker.in_phase("forward"):
                    output, vpred_temp = _forward(mod, query_responses[idx])
                    logits = output.logits[:, p - 1:-1]
                    logits /= TEMPERATURE
                    new_logprobs = _selective_log_softmax(logits, responses[idx])
                    vpred = vpred_temp[:, p - 1:-1].squeeze(-1)
                    mb_values, mb_return, mb_adv = values_t[idx], returns[idx], advantages[idx]
                    vpredclipped = torch.clamp(vpred, mb_values - 0.2, mb_values + 0.2)
                    vf_losses1 = torch.square(vpred - mb_return)
                    vf_losses2 = torch.square(vpredclipped - mb_return)
                    vf_loss = 0.5 * torch.max(vf_losses1, vf_losses2).mean()
                    logprobs_diff = new_logprobs - logprobs_t[idx]
                    ratio = torch.exp(logprobs_diff)
                    pg_losses = -mb_adv * ratio
                    pg_losses2 = -mb_adv * torch.clamp(ratio, 0.8, 1.2)
                    pg_loss = torch.max(pg_losses, pg_losses2).mean()
                    loss = pg_loss + 0.1 * vf_loss
                with tracker.in_phase("backward"):
                    loss.backward()
                with tracker.in_phase("optimizer_step"):
                    optimizer.step()
                    for t in tensors_of(optimizer.state.values()):
                        tracker.recategorize(t, "optimizer_state")
                    for t in _host_step_tensors(optimizer):
                        tracker.forget(t)
                    optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        prob_dist = torch.nn.functional.softmax(logits, dim=-1)
                        entropy = torch.logsumexp(logits, dim=-1) - torch.sum(prob_dist * logits, dim=-1)
                        _ = entropy.mean(), ratio.mean(), 0.5 * (logprobs_diff ** 2).mean()
                del (output, vpred_temp, logits, new_logprobs, vpred, vpredclipped, vf_losses1, vf_losses2, vf_loss,
                     logprobs_diff, ratio, pg_losses, pg_losses2, pg_loss, loss, prob_dist, entropy, mb_values,
                     mb_return, mb_adv)
            del query_responses, responses, logprobs_t, ref_logprobs_t, values_t, scores_t, advantages, returns

        with fake_mode, tracker:
            update()  # the first update creates the optimizer states
            tracker.recording = True
            tracker.reset_peaks()
            update()
        held.clear()
    peak = tracker.peak
    notes.append("steady state: two updates run, the second reported (optimizer states and the previous update's "
                 "rollout logits exist before it)")
    return TraceResult(
        peak_bytes=peak.total_bytes, peak_phase=peak.phase,
        by_category_at_peak={k: peak.by_category.get(k, 0) for k in CATEGORIES},
        phase_peaks={ph: tracker.phase_peaks[ph] for ph in PHASES},
        parameters=sum(q.numel() for q in params), trainable_parameters=sum(q.numel() for q in trainable),
        notes=tuple(notes + list(cuda_notes)), peak_op=peak.op)
