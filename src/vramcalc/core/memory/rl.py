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

Generation with vLLM (`use_vllm=True`, TRL 1.16 trl/generation/vllm_generation.py VLLMGeneration):
* `vllm_mode="colocate"` (`_init_vllm`): an `LLM(model=name_or_path, gpu_memory_utilization=
  vllm_gpu_memory_utilization (0.3), max_model_len=vllm_max_model_length (None: config.json's),
  max_num_seqs=per_device_train_batch_size × vllm_tensor_parallel_size × steps_per_generation,
  max_num_batched_tokens=4096, enable_sleep_mode=vllm_enable_sleep_mode, quantization="bitsandbytes" for a
  4-bit bnb model (8-bit raises))` in the training process, on the training GPU: its own weights (a second copy
  in the model's dtype), profile run and KV pool all inside utilization × the GPU's memory (memory/vllm.py), the
  CUDA graphs outside it; vLLM checks at start that the GPU's free memory covers utilization × total.
  `sync_weights` writes the policy (adapters merged in place, `merge_adapter`) into vLLM's weights with
  `load_weights` (no copy on the training side). With sleep mode, `llm.sleep(level=2)` right after start and
  after every `generate()`: level 2 discards both the weights and the KV cache (level 1 would offload the
  weights to the host; TRL uses 2), so the training step runs beside only the CUDA graphs and vLLM's non-torch
  memory; `wake_up(tags=["weights"])` then `["kv_cache"]` before the next generation, with the trainer's
  weights, optimizer state (and accumulated gradients) alive.
* `vllm_mode="server"`: generation on other GPUs (`vllm serve` / `trl vllm-serve`); on the training GPU only
  the weight sync's transient: `VLLMClient.update_named_params` streams the parameters through vLLM's packed
  NCCL broadcast (vllm/distributed/weight_transfer/packed_tensor.py: DEFAULT_PACKED_NUM_BUFFERS 2 buffers of
  DEFAULT_PACKED_BUFFER_SIZE_BYTES 1 GiB, each a torch.cat of the flattened tensors).
* Either way generate() no longer runs on the policy (no forward.generate moment of its KV cache), and the
  old policy's log-prob pass always runs (`vllm_importance_sampling_correction`, True by default,
  grpo_trainer.py _generate_and_score_completions), beside vLLM's sampling log-probs ([rows, C] fp32); the loss
  multiplies by the importance-sampling ratio (one more fp32 [B, C] vector, grpo_trainer.py _compute_loss).

Verified with `vramcalc.trace` (trace/_rl.py runs generate() and the step on the transformers model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import inference as _inference
from vramcalc.core.memory import preference as _preference
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

RL = ("grpo", "rloo")
# rloo_trainer.py _compute_loss: the fp32 [B, C] tensors of the sequence-level loss: the concatenated log-probs and
# entropies (torch.cat in _get_per_token_logps_and_entropies), per_token_logps × completion_mask (summed per
# sequence: the ratio, clipping and min are [B] vectors), and the entropy metric's entropies × completion_mask.
RLOO_LOSS_VECTORS = 4
# trl/generation/vllm_generation.py _init_vllm: LLM(max_num_batched_tokens=4096) in colocate mode.
VLLM_BATCHED_TOKENS = 4096
# vllm/distributed/weight_transfer/packed_tensor.py: DEFAULT_PACKED_NUM_BUFFERS × DEFAULT_PACKED_BUFFER_SIZE_BYTES,
# the packed broadcast's buffers on the trainer's GPU during a server-mode weight sync.
PACKED_BUFFERS = 2
PACKED_BUFFER_BYTES = 2**30
MILLION = 10**6
# fp32 [B, C] tensors of _compute_loss per completion token (grpo_trainer.py): the concatenated log-probs and
# entropies (torch.cat copies), log_ratio, coef_1 = exp (saved), coef_2 = clamp, the two products, min, its
# negation, the masked loss; the KL term's exp, two differences and its sum with beta > 0.
LOSS_VECTORS = 10
KL_VECTORS = 4


def is_rl(t: TrainingSpec) -> bool:
    return t.objective in RL


def steps_per_generation(t: TrainingSpec) -> int:
    """GRPOConfig steps_per_generation: gradient_accumulation_steps unless given; Online DPO generates in every
    micro-batch (online_dpo_trainer.py training_step), on the policy view's 2B rows."""
    if t.objective == "online-dpo":
        return 1
    return t.steps_per_generation or t.grad_accum


def generation_rows(t: TrainingSpec) -> int:
    """generation_batch_size on one GPU: per_device_train_batch_size × steps_per_generation."""
    return t.batch_size * steps_per_generation(t)


def generate_every(t: TrainingSpec) -> int:
    return steps_per_generation(t) * t.num_iterations


def old_logps_pass(t: TrainingSpec) -> bool:
    """grpo_trainer.py _generate_and_score_completions: the old policy's log-probs are computed when
    gradient_accumulation_steps % (steps_per_generation × num_iterations) != 0, and always with vLLM
    (vllm_importance_sampling_correction, GRPOConfig's default True)."""
    if t.objective == "rloo":  # rloo_trainer.py _generate_and_score_completions: always (old_logps)
        return True
    if t.objective == "online-dpo":  # no old policy; its reference runs inside the step (memory/online_dpo.py)
        return False
    return t.grad_accum % generate_every(t) != 0 or uses_vllm(t)


def uses_vllm(t: TrainingSpec) -> bool:
    return t.use_vllm != "off"


def importance_sampling(t: TrainingSpec) -> bool:
    """GRPO with vLLM keeps vLLM's sampling log-probs and weights the loss by their ratio (GRPOConfig
    vllm_importance_sampling_correction); RLOO keeps neither (rloo_trainer.py drops vLLM's log-probs)."""
    return uses_vllm(t) and t.objective == "grpo"


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
                   offload="none", fsdp_frozen_grads=False, use_vllm="off", vllm_utilization=0.3, vllm_sleep=False,
                   max_model_len=None, reward_model="none", reward_dtype="auto", reward_spec=None,
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
    if t.objective == "online-dpo" or not (ref or old_logps_pass(t)):
        return None
    # The pass's own outputs: log_probs, and entropy through the policy's head (add_fused_lm_head outputs).
    return _preference.nograd_forward_plan(m, t, recipe, 8 if ref != "copy" or old_logps_pass(t) else 4)


def logprob_pass_bytes(plan: _preference.ReferencePlan, t: TrainingSpec) -> int:
    """One sub-batch's pass (per_device_train_batch_size rows) and the fp32 results of every row so far."""
    rows = t.batch_size
    # the passes' fp32 results so far, and with vLLM its sampling log-probs of every row (padded to C)
    results = generation_rows(t) * completion_len(t) * 4 * (2 if importance_sampling(t) else 1)
    return plan.peak(rows * t.seq_len, rows * min(completion_len(t), t.seq_len - 1), t.seq_len) + results


def loss_bytes(t: TrainingSpec) -> int:
    """_compute_loss's fp32 [B, C] tensors (the log-probs and entropy copies, the clipped ratio terms; with vLLM
    the loss times the importance-sampling ratio)."""
    if t.objective == "rloo":  # the KL goes into the rewards (per sequence), not the loss
        return RLOO_LOSS_VECTORS * 4 * t.batch_size * completion_len(t)
    vectors = LOSS_VECTORS + (KL_VECTORS if t.beta > 0 else 0) + (1 if importance_sampling(t) else 0)
    return vectors * 4 * t.batch_size * completion_len(t)


def peak_note(moments: tuple[tuple[str, object, tuple[int, ...]], ...], name: str = "grpo") -> str:
    """Which moment holds the peak: generate() or the training step, and by how much."""
    totals = {key: sum(values) for key, _, values in moments}
    gen = totals["forward.generate"]
    generation = ("forward.generate", "forward.logprobs") + (("forward.reward",) if name != "online-dpo" else ())
    step_key = max((k for k in totals if k not in generation), key=lambda k: totals[k])
    step = totals[step_key]
    if gen > step:
        return (f"{name}: the peak is generate() (forward.generate), {(gen - step) / 1e9:.2f} GB above the training "
                f"step's largest moment ({step_key}): fewer generation rows (--batch-size x steps per generation) "
                "or a shorter prompt + completion lower it.")
    return (f"{name}: the peak is the training step ({step_key}); generate() (forward.generate) needs "
            f"{(step - gen) / 1e9:.2f} GB less.")


def notes(t: TrainingSpec, reference_bytes: int, recipe: Recipe) -> tuple[str, ...]:
    """What the estimate assumed about the GRPO step (every format shows them)."""
    ref = _preference.resolve_ref(t)
    what = {"copy": f"a frozen copy of the model ({reference_bytes / 1e9:.2f} GB of weights)",
            "adapters-off": "the policy with its adapters disabled (no extra weights)",
            "": "none (beta 0, GRPOConfig's default)" if t.objective == "grpo" else "none (beta 0)"}[ref]
    engine = {"off": "generate() (vLLM off)", "colocate": "a colocated vLLM engine (use_vllm, vllm_mode colocate)",
              "server": "a vLLM server on other GPUs (use_vllm, vllm_mode server)"}[t.use_vllm]
    trainer = "GRPOTrainer" if t.objective == "grpo" else "RLOOTrainer"
    out = [f"{t.objective}: TRL {trainer} with {engine}: {generation_rows(t)} completions per generation "
           f"call (--batch-size {t.batch_size} x {steps_per_generation(t)} steps per generation), "
           f"{t.num_generations} per prompt, prompt {t.prompt_len} + completion {completion_len(t)} tokens "
           f"(--seq-len); the step runs on --batch-size completions through TRL's fused LM head, the loss over "
           f"completion tokens only{'' if t.objective == 'grpo' else ' (summed per sequence)'}; reference: {what}.",
           "generate() is its own moment (forward.generate): the weights, the optimizer state and the KV cache of "
           "the whole generation batch (DynamicCache) with the sampled logits; gradient checkpointing is off "
           f"during it; generation runs in {recipe.compute}." if t.use_vllm == "off" else
           "the weights stream to the vLLM server before generation (forward.weight_sync: vLLM's packed NCCL "
           "broadcast, 2 buffers of ~1 GiB in flight and one being packed; approximate); nothing else of vLLM is on "
           "this GPU."
           if t.use_vllm == "server" else
           "vLLM's share of the GPU is counted in overhead (overhead.vllm_*), beside the training step's tensors."]
    old = ("always (RLOO)" if t.objective == "rloo" else
           "always with vLLM: vllm_importance_sampling_correction" if importance_sampling(t) else
           "num_iterations/steps_per_generation")
    passes = [x for x, on in ((f"the old policy's ({old})", old_logps_pass(t)),
                              ("the reference's", bool(ref))) if on]
    if passes:
        out.append(f"no-grad log-prob passes after generation: {' and '.join(passes)}, in sub-batches of "
                   "--batch-size rows (forward.logprobs).")
    if t.objective == "rloo":
        out.append("rloo: the KL (old - reference log-probs) is folded into the rewards per sequence and the clipped "
                   "ratio is per sequence, so the loss keeps 4 fp32 values per completion token (GRPO's keeps 10+); "
                   "RLOOConfig's defaults: beta 0.05 (a reference), num_generations 2.")
    if gradients_at_generation(t):
        out.append("generate() falls inside an accumulation window (steps_per_generation x num_iterations is not a "
                   "multiple of --grad-accum): the accumulated gradients are alive during it.")
    return tuple(out)


def vllm_view(m: ModelSpec, t: TrainingSpec) -> TrainingSpec:
    """The colocated engine as memory/vllm.py reads a run: `vllm serve` of the model in its compute dtype (QLoRA:
    bitsandbytes 4-bit), max_num_seqs = the generation batch, 4096 batched tokens, requests of prompt +
    completion, gpu_memory_utilization = --vllm-utilization, max_model_len = --max-model-len (vllm_max_model_length)
    or config.json's."""
    from vramcalc.core.memory.precision import recipe_of

    view = generation_view(t)
    compute = recipe_of(t).compute
    seqs, max_len = generation_rows(t), t.max_model_len
    if t.objective == "online-dpo":
        # online_dpo_trainer.py __init__: LLM(max_num_seqs=per_device_train_batch_size × vllm_tensor_parallel_size,
        # max_model_len=max_length + max_new_tokens); SamplingParams(n=2) samples 2 completions per prompt
        seqs, max_len = generation_rows(t) // 2, t.seq_len + completion_len(t)
    return replace(view, mode="serve", new_tokens=1, seq_len=t.seq_len, batch_size=generation_rows(t),
                   precision=compute if compute in ("bf16", "fp16") else "fp32",
                   weight_dtype="nf4" if t.method == "qlora" else "auto",
                   gpu_memory_utilization=t.vllm_utilization, max_model_len=max_len,
                   max_num_seqs=seqs, max_num_batched_tokens=VLLM_BATCHED_TOKENS)


def sync_bytes(m: ModelSpec, t: TrainingSpec, weight_bytes: int) -> int:
    """Server mode: the packed NCCL broadcast's buffers while the weights stream to the server: each buffer a
    torch.cat of flattened tensors, closed after the tensor that crosses 1 GiB (at most 1 GiB + the largest tensor,
    taken as the embedding), the 2 in flight and the next being packed; never more than the weights. Approximate."""
    if t.use_vllm != "server":
        return 0
    from vramcalc.core.memory.precision import recipe_of

    largest = (m.vocab_size or 0) * (m.hidden_size or 0) * dtype_bytes(recipe_of(t).weight)
    if t.objective == "online-dpo":
        # online_dpo_trainer.py _move_model_to_vllm_inner: update_named_param(name, param.data) per parameter, each
        # its own packed broadcast: one buffer, the torch.cat copy of that one tensor, done before the next
        return min(weight_bytes, largest)
    return min(weight_bytes, (PACKED_BUFFERS + 1) * (PACKED_BUFFER_BYTES + largest))


@dataclass(frozen=True, slots=True)
class Colocated:
    """A colocated vLLM engine beside the training step (TRL vllm_mode="colocate"), on the smallest GPU that holds
    both: vLLM takes utilization × that GPU, so the GPU is found, not summed."""

    gpu_bytes: int  # the smallest GPU on which the step and the engine fit (the estimate's peak)
    budget: int  # utilization × gpu_bytes: vLLM's weights, profile reserve, non-torch memory and KV pool
    cuda_graphs: int  # captured after the pool, outside the budget (memory/vllm.py, approximate)
    non_torch: int  # vLLM's non-torch memory (kept while asleep; approximate)
    start_budget: int  # the budget vLLM needs to start: non-KV memory + one max_model_len request's blocks
    held_in_step: int  # what the engine holds during the training step (budget, or asleep: non-torch)
    bound: str  # what sets gpu_bytes: "training step", "generation" (sleep mode) or "start"


def _at_least(need: int, fraction_millionths: int) -> int:
    """The smallest M with M × fraction >= need (fraction in millionths)."""
    return -(-need * MILLION // fraction_millionths)


def colocated(m: ModelSpec, t: TrainingSpec, step_bytes: int, held_bytes: int) -> Colocated:
    """`step_bytes`: the training step's peak with its overhead; `held_bytes`: what training holds when vLLM
    generates (weights, optimizer state, accumulated gradients, overhead)."""
    from vramcalc.core.memory import vllm as _vllm

    view = vllm_view(m, t)
    s = _vllm.settings(m, view)
    p = _vllm.profile(m, view, s)
    _, start = _vllm.demand_bytes(m, view, 1)
    u = round(t.vllm_utilization * MILLION)
    g = p.cuda_graphs
    candidates = [(_at_least(start, u), "start")]
    if t.vllm_sleep:
        candidates += [(step_bytes + g + p.non_torch, "training step"), (_at_least(held_bytes + g, MILLION - u),
                                                                          "generation")]
    else:
        candidates.append((_at_least(step_bytes + g, MILLION - u), "training step"))
    gpu, bound = max(candidates, key=lambda c: c[0])
    budget = gpu * u // MILLION
    return Colocated(gpu, budget, g, p.non_torch, start, p.non_torch if t.vllm_sleep else budget, bound)


def utilization_range(m: ModelSpec, t: TrainingSpec, step_bytes: int, held_bytes: int,
                      gpu_bytes: int) -> tuple[float, float] | None:
    """The vllm_gpu_memory_utilization values (hundredths) on a GPU of `gpu_bytes` with which vLLM starts and the
    training step still fits beside it: (smallest, largest), or None when none does."""
    c = colocated(m, t, step_bytes, held_bytes)
    lo = -(-c.start_budget * 100 // gpu_bytes)
    beside = held_bytes if t.vllm_sleep else step_bytes
    hi = (gpu_bytes - beside - c.cuda_graphs) * 100 // gpu_bytes
    if t.vllm_sleep and step_bytes + c.cuda_graphs + c.non_torch > gpu_bytes:
        return None
    hi = min(hi, 99)
    return (lo / 100, hi / 100) if 0 < lo <= hi else None


def colocate_notes(m: ModelSpec, t: TrainingSpec, c: Colocated) -> tuple[str, ...]:
    from vramcalc.core.memory import vllm as _vllm

    view = vllm_view(m, t)
    s = _vllm.settings(m, view)
    sleep = ("sleep mode (level 2): vLLM's weights and KV cache are released after each generate() and the training "
             "step runs beside its CUDA graphs and non-torch memory only; at generation they come back beside the "
             "trainer's weights and optimizer state" if t.vllm_sleep else
             "no sleep mode: vLLM keeps its whole budget (weights, KV pool) through the training step")
    seqs = ("per_device_train_batch_size; 2 completions per prompt" if t.objective == "online-dpo" else
            "the generation batch")
    return (f"{t.objective} + colocated vLLM (TRL vllm_mode='colocate'): vLLM takes --vllm-utilization "
            f"{t.vllm_utilization:g} "
            f"of the GPU (vllm_gpu_memory_utilization), so the peak is the smallest GPU holding the step and the "
            f"engine: {c.gpu_bytes / 1e9:.2f} GB, set by the {c.bound}; vLLM's budget there "
            f"{c.budget / 1e9:.2f} GB (it needs {c.start_budget / 1e9:.2f} GB to start: weights, profile run, one "
            f"max_model_len {s.max_model_len:,} request); give --gpu for the pool it allocates on a real GPU.",
            f"vLLM engine: max_num_seqs {s.max_num_seqs} ({seqs}), max_num_batched_tokens "
            f"{s.max_num_batched_tokens:,}, {sleep}; generate() does not run on the policy (no forward.generate).",
            "approximate: vLLM's CUDA graphs, non-torch memory and profile peak (memory/vllm.py); the budget counts "
            "vLLM's whole share of the GPU, its profile reserve included (training may reuse part of it).")


def needed_on_gpu(m: ModelSpec, t: TrainingSpec, step_bytes: int, held_bytes: int, gpu_bytes: int) -> int:
    """The bytes this run needs on a GPU of `gpu_bytes` with the engine's share taken: the GPU less the room the
    step (and, with sleep mode, the generation) leaves; more than the GPU when vLLM cannot start there."""
    c = colocated(m, t, step_bytes, held_bytes)
    budget = gpu_bytes * round(t.vllm_utilization * MILLION) // MILLION
    if t.vllm_sleep:
        room = min(gpu_bytes - step_bytes - c.cuda_graphs - c.non_torch,
                   gpu_bytes - held_bytes - budget - c.cuda_graphs)
    else:
        room = gpu_bytes - step_bytes - budget - c.cuda_graphs
    if budget < c.start_budget:  # vLLM refuses to start: its budget must cover the start need
        room = min(room, budget - c.start_budget)
    return gpu_bytes - room


def colocate_gpu_notes(m: ModelSpec, t: TrainingSpec, step_bytes: int, held_bytes: int, gpu_bytes: int,
                       gpu_name: str = "") -> tuple[str, ...]:
    """What the colocated engine does on a real GPU: its pool, and the room left to training."""
    from vramcalc.core.memory import vllm as _vllm

    view = vllm_view(m, t)
    pool = _vllm.kv_pool(m, view, gpu_bytes, gpu_name)
    c = colocated(m, t, step_bytes, held_bytes)
    held = c.non_torch if t.vllm_sleep else pool.requested
    room = gpu_bytes - held - c.cuda_graphs - step_bytes
    lines = [f"colocated vLLM on this GPU: {pool.requested / 2**30:.2f} GiB budget, available KV cache "
             f"{max(pool.available, 0) / 2**30:.2f} GiB ({pool.tokens:,} tokens); the training step's peak leaves "
             f"{room / 2**30:.2f} GiB."]
    rng = utilization_range(m, t, step_bytes, held_bytes, gpu_bytes)
    lines.append(f"vllm_gpu_memory_utilization that starts vLLM and leaves room for training here: {rng[0]:g} to "
                 f"{rng[1]:g}." if rng else "no vllm_gpu_memory_utilization both starts vLLM and leaves room for "
                 "training on this GPU: --vllm-sleep, a larger GPU or --use-vllm server.")
    return tuple(lines)


@dataclass(frozen=True, slots=True)
class RlPlan:
    """The token-independent part of a GRPO step's extra moments (memory/__init__.py _transformer_phases)."""

    model: ModelSpec
    logprobs: _preference.ReferencePlan | None
    copies: int  # amp full fine-tuning: autocast caches a 16-bit copy of every trainable fp32 weight per forward
    uncached: int = -1  # Online DPO under checkpointing: generate(use_cache=False)'s transient (memory/online_dpo.py)

    def moments(self, t: TrainingSpec, gradients: int,
                weight_bytes: int) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
        """((gradients, autocast copies, kv cache, generate transient) — with vLLM: (gradients, weight sync) in
        server mode, None colocated —, (gradients, log-prob pass) or None)."""
        grads = gradients if gradients_at_generation(t) else 0
        passes = (grads, logprob_pass_bytes(self.logprobs, t)) if self.logprobs is not None else None
        if t.use_vllm == "server":
            # Online DPO syncs only when global_step moved (online_dpo_trainer.py _generate_vllm_server): the first
            # micro-batch after zero_grad, no gradients then
            return (0 if t.objective == "online-dpo" else grads, sync_bytes(self.model, t, weight_bytes)), passes
        if t.use_vllm == "colocate":
            return None, passes
        if self.uncached >= 0:  # no KV cache: the last step's no-grad forward over the whole sequence
            return (grads, self.copies, 0, self.uncached), passes
        g = generation_bytes(self.model, t)
        return (grads, self.copies, g.kv_cache, g.transient), passes


def plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe, autocast_copies: int) -> RlPlan | None:
    """GRPO/RLOO's generation and log-prob passes; Online DPO's generation (memory/online_dpo.py)."""
    if not (is_rl(t) or t.objective == "online-dpo"):
        return None
    copies = autocast_copies if recipe.autocast and t.method in ("full", "freeze") else 0
    if t.objective == "online-dpo" and t.grad_checkpointing:  # online_dpo_trainer.py: use_cache=False
        from vramcalc.core.memory import online_dpo as _online_dpo

        return RlPlan(m, None, copies, _online_dpo.uncached_generation_bytes(m, t, recipe))
    return RlPlan(m, logprob_plan(m, t, recipe), copies)
