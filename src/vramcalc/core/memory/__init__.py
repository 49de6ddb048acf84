"""The pure core: `estimate(model, training) -> Breakdown`, integer bytes per component and phase.

Phase model (steady state, step ≥ 2, `zero_grad(set_to_none=True)` after each step, as HF Trainer):
- forward: weights + optimizer state (+ gradients when accumulating) + saved activations, peaking
  while the loss holds the logits and their fp32 copy;
- backward: activations are released layer by layer while gradients appear, so the peak is at the
  start (log_softmax's gradient temporaries) or at a layer boundary (plus that layer's gradients);
- optimizer_step: weights + gradients + optimizer state + the step's temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from dataclasses import replace as _dc_replace
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from vramcalc.core import lora_layers as _lora_layers
from vramcalc.core import peft_methods
from vramcalc.core import unfrozen as _unfrozen
from vramcalc.core.checks import check_run, check_sequence, check_settings
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import activations as _activations
from vramcalc.core.memory import axolotl_kernels as _axolotl_kernels
from vramcalc.core.memory import badam as _badam
from vramcalc.core.memory import classic as _classic
from vramcalc.core.memory import compiled as _compiled
from vramcalc.core.memory import context_parallel as _cp
from vramcalc.core.memory import deberta as _deberta
from vramcalc.core.memory import distributed as _distributed
from vramcalc.core.memory import encoder as _encoder
from vramcalc.core.memory import fp8 as _fp8
from vramcalc.core.memory import hf_tp as _hf_tp
from vramcalc.core.memory import hqq as _hqq
from vramcalc.core.memory import hybrid as _hybrid
from vramcalc.core.memory import inference as _inference
from vramcalc.core.memory import jamba as _jamba
from vramcalc.core.memory import liger as _liger
from vramcalc.core.memory import lisa as _lisa
from vramcalc.core.memory import moments as _m
from vramcalc.core.memory import nemotron_h as _nemotron_h
from vramcalc.core.memory import new_tokens as _new_tokens
from vramcalc.core.memory import online_dpo as _online_dpo
from vramcalc.core.memory import preference as _preference
from vramcalc.core.memory import qlora_fp32 as _qlora_fp32
from vramcalc.core.memory import relora as _relora
from vramcalc.core.memory import reward as _reward
from vramcalc.core.memory import reward_scoring as _reward_scoring
from vramcalc.core.memory import rl as _rl
from vramcalc.core.memory import router_aux as _router_aux
from vramcalc.core.memory import seq2seq as _seq2seq
from vramcalc.core.memory import ssm as _ssm
from vramcalc.core.memory import unreplaced as _unreplaced
from vramcalc.core.memory import unsloth as _unsloth
from vramcalc.core.memory import upcast as _upcast
from vramcalc.core.memory import upcast_norms as _upcast_norms
from vramcalc.core.memory import vllm as _vllm
from vramcalc.core.memory import zamba2 as _zamba2
from vramcalc.core.memory.activations import (
    DequantBytes,
    batch_rows,
    dequant_bytes,
    dora_forward_transient,
    eager_only,
    fp32_math_sdpa_notes,
    head_activations,
    layer_activations,
    masked_sdpa,
    packing_notes,
)
from vramcalc.core.memory.loss import loss_bytes
from vramcalc.core.memory.optimizer import (
    LIBRARY_OPTIMIZERS,
    OptimizerBytes,
    library_optimizer_notes,
    optimizer_bytes,
)

# Runtime overhead outside torch's tensor accounting (issue #16); CUDA_CONTEXT_BYTES is re-exported.
from vramcalc.core.memory.overhead import CUDA_CONTEXT_BYTES as CUDA_CONTEXT_BYTES
from vramcalc.core.memory.overhead import NOTE as _OVERHEAD_NOTE
from vramcalc.core.memory.overhead import runtime_overhead
from vramcalc.core.memory.precision import RECIPES, Recipe, auto_precision_note, recipe_of
from vramcalc.core.memory.savers import largest_tensor, layer_residency, offload_node_bytes, ordinal, wrapped_layers
from vramcalc.core.memory.weights import (
    WeightBytes,
    fp32_router_tensors,
    freeze_fraction,
    saved_copies,
    saved_embedding,
    saved_head,
    unquantized_bytes,
    weight_bytes,
)
from vramcalc.core.params import (
    active_params,
    block_linears,
    count_params,
    dense_layers,
    dense_mlp_spec,
    head_dim,
    outer_targets,
    quantized_linears,
)
from vramcalc.core.peft_methods import ADAPTER_DTYPE_METHODS
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["Breakdown", "COMPONENTS", "OPTIONAL_COMPONENTS", "PHASES", "estimate", "RECIPES", "Recipe"]

COMPONENTS = ("weights", "gradients", "optimizer_state", "activations", "kv_cache", "communication", "temporaries",
              "overhead")
# Components that only some runs have (inference, multi-GPU): tables and bars show them when non-zero.
OPTIONAL_COMPONENTS = ("kv_cache", "communication")
PHASES = ("forward", "backward", "optimizer_step")



@dataclass(frozen=True)
class Breakdown:
    """Memory of one training step, per component and per phase, in bytes."""

    model: str
    parameters: int
    trainable_parameters: int
    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    temporaries: int
    overhead: int
    phases: dict[str, int]  # tensor bytes at the peak of each phase: the largest of its moments
    details: dict[str, int] = field(default_factory=dict)  # finer entries, "component.part" keys
    notes: tuple[str, ...] = ()
    activations_modeled: bool = True
    active_parameters: int = 0  # parameters one token uses (MoE: total less the unrouted experts)
    # Multi-GPU and inference (memory/distributed.py, memory/inference.py); zero for one GPU's training step.
    communication: int = 0  # per-GPU communication buffers (DDP / DeepSpeed buckets)
    kv_cache: int = 0  # inference: keys and values of every cached token
    cpu_offload_bytes: int = 0  # host RAM per node for offloaded states
    parallelism: dict[str, int | str] | None = None  # gpus, tp, pp, dp, ZeRO stage; None: one GPU
    # The instants each phase peaks at, as named terms (memory/moments.py); explain and timeline read them.
    moments: tuple[_m.RawMoment, ...] = ()

    def named_moments(self) -> tuple[_m.Moment, ...]:
        """Every modelled instant of the step with its terms named, in time order."""
        return _m.name_moments(self.moments, (self.weights, self.optimizer_state, self.communication))

    def peak_moment(self) -> _m.Moment | None:
        """The first moment at the tensor peak (None for a Breakdown without moments)."""
        peak = self.tensor_peak_bytes
        return next((m for m in self.named_moments() if m.total == peak), None)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: self.phases[p])

    @property
    def tensor_peak_bytes(self) -> int:
        """What torch.cuda.max_memory_allocated would report."""
        return self.phases[self.peak_phase]

    @property
    def peak_bytes(self) -> int:
        return self.tensor_peak_bytes + self.overhead

    @property
    def reserved_peak_bytes(self) -> int:
        """What torch.cuda.max_memory_reserved would report: tensors + the allocator's share of the overhead."""
        d = self.details
        return self.tensor_peak_bytes + d.get("overhead.cublas_workspace", 0) + d.get("overhead.allocator_reserve", 0)

    @property
    def sum_bytes(self) -> int:
        """Every component added up as if all were alive at once (an upper bound of the peak)."""
        return sum(self.component(c) for c in COMPONENTS)

    def shown_components(self) -> tuple[str, ...]:
        """The components worth a row: all but the optional ones that are zero for this run."""
        return tuple(c for c in COMPONENTS if c not in OPTIONAL_COMPONENTS or self.component(c))

    def component(self, name: str) -> int:
        value: int = getattr(self, name)
        return value


def estimate(model: ModelSpec, training: TrainingSpec) -> Breakdown:
    """Per-component and per-phase GPU memory of one training step of `model` under `training`."""
    # --compile: a note saying what is modelled, or that the eager step is an upper bound and why (memory/compiled.py)
    return _compiled.annotate(_estimate_run(model, training), model, training)


def _estimate_run(model: ModelSpec, training: TrainingSpec) -> Breakdown:
    if _new_tokens.active(training):  # --add-tokens: the run on the resized model (memory/new_tokens.py)
        resized, inner = _new_tokens.view(model, training)
        b = estimate(resized, inner)
        return replace(b, notes=(*b.notes, _new_tokens.note(model, training)))
    if _unreplaced.active(model, training):  # bitsandbytes quantizes no FalconLinear: a LoRA (memory/unreplaced.py)
        b = _estimate_run(model, _unreplaced.view(model, training))
        return replace(b, notes=(*b.notes, _unreplaced.note(model, training)))
    if training.whole_layers and training.gpu_memory_limit == "none":
        from vramcalc.core.errors import UnsupportedCombination

        raise UnsupportedCombination("--whole-layers is how --gpu-memory-limit places the model: give the limit, or "
                                     "drop --whole-layers")
    if training.gpu_memory_limit != "none":  # accelerate's max_memory placement, its hooks' copies (placement.py)
        from vramcalc.core.memory import placement as _placement

        p = _placement.check(model, training)
        return _placement.apply(model, training, _estimate(model, training), p)
    if training.objective == "ppo":
        from vramcalc.core.memory import ppo as _ppo  # TRL 0.19.1 PPOTrainer: the rollout, the policy + value step

        return _ppo.estimate(model, training, _estimate)  # type: ignore[no-any-return]
    return _estimate(model, training)


def _estimate(model: ModelSpec, training: TrainingSpec) -> Breakdown:
    if _badam.active(training):  # BAdam: one decoder layer trained at a time, the bottom one's peak (memory/badam.py)
        training = _badam.view(model, training)
    if _lisa.active(training):  # LISA: the top N layers trained, the embeddings and head too (memory/lisa.py)
        training = _lisa.view(model, training)
    # context parallelism: one rank's step on seq_len / cp tokens (memory/context_parallel.py)
    training = _cp.view(model, training)
    _hqq.check(model, training)  # --quant-backend hqq's refusals, and hqq's own (memory/hqq.py)
    _unsloth.check(model, training)  # --kernels unsloth where it is not modelled: refused (memory/unsloth.py)
    _liger.check(model, training)  # --kernels liger likewise (memory/liger.py)
    _upcast.check(model, training)  # --upcast-logits where the hook is not modelled (memory/upcast.py)
    _fp8.check(model, training)  # --fp8 where accelerate's torchao Float8Linear is not modelled (memory/fp8.py)
    # --upcast-norms likewise (memory/upcast_norms.py)
    _upcast_norms.check(model, training, training.optimizer in LIBRARY_OPTIMIZERS)
    _upcast_norms.check_recipe(model, training)  # --precision autocast-* (memory/precision.py)
    _axolotl_kernels.check(model, training)  # --kernels axolotl:GROUPS likewise (memory/axolotl_kernels.py)
    _hybrid.check_run(model, training)  # Falcon-H1: train only (memory/hybrid.py)
    _jamba.check_run(model, training)  # Jamba: train only (memory/jamba.py)
    _zamba2.check_run(model, training)  # Zamba2: train, full and LoRA only (memory/zamba2.py)
    _nemotron_h.check_run(model, training)  # Nemotron-H: train only (memory/nemotron_h.py)
    _router_aux.check(model, training)  # the MoE router's aux loss where it is not modelled (memory/router_aux.py)
    if _classic.is_classic(model):  # ResNet, LSTM language model: their own walk of the step (memory/classic.py)
        return _classic.estimate(model, training)
    if model.vision is not None and model.vision.kind == "llava_next":  # LLaVA-NeXT's anyres image side
        from vramcalc.core.memory import llava_next as _llava_next

        return _llava_next.estimate(model, training, estimate)
    if model.vision is not None and model.vision.kind == "llama4":  # Llama 4 multimodal: memory/llama4v.py
        from vramcalc.core.memory import llama4v as _llama4v

        return _llama4v.estimate(model, training, estimate)
    if model.vision is not None and model.vision.kind == "idefics3":  # Idefics3 / SmolVLM: memory/idefics3.py
        from vramcalc.core.memory import idefics3 as _idefics3

        return _idefics3.estimate(model, training, estimate)
    if model.vision is not None:  # vision-language models: the text model on text + image tokens (memory/vision.py)
        from vramcalc.core.memory import vision as _vision

        return _vision.estimate(model, training, estimate)
    _classic.check_not_classic(training)
    # the image options on a text model: refused (memory/vision.py)
    if training.images or training.train_vision or training.image_width:
        from vramcalc.core.memory import vision as _vision

        _vision.check(model, training)
    if training.mode == "inference":
        # SpecError when the run cannot exist; notes when it is unusual (core/checks.py)
        return _estimate_inference(model, training, check_run(model, training))
    if training.mode == "serve":
        return _estimate_serve(model, training, check_settings(model, training))
    checked = check_sequence(model, training.seq_len)  # the rest of the checks run once per plan
    if training.objective != "sft":  # memory/preference.py: chosen and rejected stacked, 2B sequences
        training = _preference.policy_view(training)
    if not model.has_architecture and training.method != "full":
        # LoRA targets, quantized Linear layers and frozen layers are read from the architecture.
        raise UnsupportedCombination(
            f"method {training.method!r} needs the architecture of {model.name!r}, which is a parameter count "
            "only; use --method full, or give the preset its architecture (see: vramcalc presets new)")
    plan = _plan(model, training)
    gradients = plan.gradients
    tokens = training.batch_size * training.seq_len
    accum = training.grad_accum > 1
    weights = plan.weights
    states = plan.states
    step_temp = plan.step_temporaries
    details = dict(plan.details)
    notes = checked + plan.checked + plan.notes
    per_gpu = None
    if plan.parallel:  # the one hook: shard the model states, then the phases as usual
        w, opt = plan.w, plan.opt
        assert plan.units is not None
        per_gpu = _shard(model, training, plan.recipe, w.total, gradients, opt, w.trainable, tokens, plan.units)
        weights, gradients, states, step_temp = (per_gpu.weights, per_gpu.gradients, per_gpu.optimizer_state,
                                                 per_gpu.step_temporaries)
        tokens = per_gpu.activation_tokens
        details.update(per_gpu.details)
        notes += tuple(per_gpu.notes)
    communication = per_gpu.communication if per_gpu else 0

    base = (weights, states, communication)
    act = plan.activations
    if act is None:
        per_sample = model.activation_bytes_per_sample
        activations = (per_sample or 0) * training.batch_size
        details["activations.per_sample_preset"] = activations
        temporaries = step_temp
        moments: tuple[_m.RawMoment, ...] = (
            ("forward.all", _m.FWD_ALL, ((gradients if accum else 0), activations)),
            ("backward.all", _m.BWD_ALL, (gradients, activations)),
            ("optimizer_step.step", _m.STEP, (gradients, step_temp)),
        )
        phases = _m.phase_peaks(sum(base), moments)
        modeled = per_sample is not None
    else:
        if isinstance(act, _seq2seq.Seq2SeqPlan):
            phases, moments, activations, temporaries = _seq2seq.phases(
                act, training, base, gradients, step_temp, details)
        else:
            phases, moments, activations, temporaries = _transformer_phases(
                act, training, base, gradients, step_temp, tokens, details)
        modeled = True
    if training.relora:  # axolotl ReLoRA: the restart before the step, a forward moment (memory/relora.py)
        restart = _relora.restart_bytes(model, training)
        moments = (("forward.relora_merge", _m.FWD_RELORA, (restart,)), *moments)
        phases = {**phases, "forward": max(phases["forward"], sum(base) + restart)}
        temporaries = max(temporaries, restart)
        details["temporaries.relora_merge"] = restart
        notes += (_relora.note(model, training),)
    tensor_peak = max(phases.values())
    runtime = runtime_overhead(tensor_peak, _distributed.world_size(training))
    overhead = runtime.total
    details.update(runtime.details())
    # GRPO: which of generate() and the training step is the peak (an encoder-decoder's plan has no rl)
    if act is not None and getattr(act, "rl", None) is not None:
        if training.use_vllm == "off":
            notes += (_rl.peak_note(moments, training.objective),)
        if training.use_vllm == "colocate":  # memory/rl.py colocated: the engine takes a fraction of the GPU
            step = tensor_peak + overhead
            held = sum(base) + (gradients if _rl.gradients_at_generation(training) else 0) + overhead
            c = _rl.colocated(model, training, step, held)
            details["overhead.vllm_engine"] = c.held_in_step
            details["overhead.vllm_cuda_graphs"] = c.cuda_graphs
            details["overhead.vllm_spare"] = c.gpu_bytes - step - c.held_in_step - c.cuda_graphs
            details["vllm.budget"] = c.budget
            details["vllm.start_budget"] = c.start_budget
            details["vllm.training_step"] = step  # the step's peak with its own overhead (rl.colocate_gpu_notes)
            details["vllm.training_held"] = held  # what training holds while vLLM generates
            overhead = c.gpu_bytes - tensor_peak
            notes += _rl.colocate_notes(model, training, c)
    notes += plan.tail_notes  # activation notes, then overhead's
    if accum:
        notes += (_accum_note(training.grad_accum),)
    if _cp.active(training):
        notes += _cp.notes(training)
    # Breakdown(...) with every field, in field order, without the frozen dataclass's per-field
    # object.__setattr__ (a quarter of the call; tests/test_memory.py checks it equals the constructor).
    b = _new_breakdown(Breakdown)
    b.__dict__.update({
        "model": model.name,
        "parameters": plan.w.parameters,
        "trainable_parameters": plan.w.trainable,
        "weights": weights,
        "gradients": gradients,
        "optimizer_state": states,
        "activations": activations,
        "temporaries": temporaries,
        "overhead": overhead,
        "phases": phases,
        "details": details,
        "notes": notes,
        "activations_modeled": modeled,
        "active_parameters": plan.active_parameters,
        "communication": communication,
        "kv_cache": details.get("kv_cache.generation", 0),
        "cpu_offload_bytes": (per_gpu.cpu_offload_bytes if per_gpu else 0)
        + details.get("activations.offloaded_to_host", 0) * training.gpus_per_node,  # memory/savers.py
        "parallelism": dict(per_gpu.layout) if per_gpu else None,
        "moments": moments,
    })
    return b


_new_breakdown = object.__new__


@lru_cache(maxsize=256)
def _moe_late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Trainable 3-D experts (params.FUSED_EXPERT_FAMILIES): at the bottom layer's backward peak (the gather's
    index_put, its gradients' scatter) that layer's expert weight gradients are not written yet (measured with the
    tracer, --grid moe full with checkpointing: the estimate was over by one layer's gate_up + down gradient at 2,
    4 and 8 layers alike)."""
    from vramcalc.core.params import dense_layers, fused_experts, resolve_targets

    if not fused_experts(m) or m.family == "gpt_oss":  # (accumulating: every gradient exists, see late_g)
        return 0
    if m.hybrid_pattern and m.hybrid_pattern[0] != "E":  # Nemotron-H: a bottom layer without experts has none late
        return 0  # (measured with the tracer, --grid nemotronh MEM*E full with checkpointing: -2.6 % with them)
    assert m.hidden_size is not None and m.intermediate_size is not None and m.num_layers is not None
    if t.method == "full":
        i = m.moe_intermediate_size or m.intermediate_size
        # (gate_up and down: 3 x i x h per expert; Nemotron-H's ungated up and down: 2 x i x h)
        return dtype_bytes(recipe.grad) * m.num_experts * (3 if m.mlp == "gated" else 2) * i * m.hidden_size
    if t.method not in ("lora", "qlora"):
        return 0
    # LoRA on the experts (peft ParamWrapper): the bottom layer's expert adapters' gradients, in the adapter dtype
    n_moe = m.num_layers - dense_layers(m)
    return dtype_bytes(t.adapter_dtype) * sum(
        t.lora_rank * lin.rank_mult * (lin.in_features + lin.out_features) * lin.count // n_moe
        for lin in resolve_targets(m, t.lora_targets) if lin.module.startswith("experts."))


def _offload_layer_gradients(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> dict[str, int]:
    """Offloaded without checkpointing, a plain dense decoder: which of a layer's gradients exist at its backward peak.

    torch autograd writes each parameter's gradient from its AccumulateGrad node as soon as the node that uses it has
    run, so a layer's gradients appear one Linear at a time through its backward. The layer's backward peak is at the
    MLP's product node (the activation's and up projection's outputs brought back, memory/savers.py
    offload_node_bytes), which runs after the down projection's nodes: its gradient (full) or its adapters' (LoRA)
    is made there, the layer's other ones are not (measured with the tracer, --grid offload-nogc: tinyllama cut to a
    tiny shape, full pure-bf16 b1 s1024, the bottom layer's peak with down_proj's weight gradient alive, -1.6 %
    without it; LoRA all-linear b1 s1024, the top and bottom peaks hold down_proj's A and B gradients and no other of
    their own layer's, +1.3 % with the bottom layer's all counted). Under q/k norms the query norm's fp32 backward
    (the backward.offload_norm moment) runs before q_proj's: an adapted layer has every gradient but q_proj's there
    (the trace's top-layer peak, Qwen3 cut to a tiny shape, LoRA q,k,v,o b1 s1024, +1.1 % with every gradient)."""
    from vramcalc.core.params import resolve_targets

    if not t.activation_offload or t.grad_checkpointing or not _plain_dense_decoder(m) or t.zero \
            or t.fsdp not in ("none", "no-shard") or t.offload != "none" or _distributed.is_parallel(t) \
            or _lisa.active(t) or _badam.active(t) or _unfrozen.active(t):
        return {}
    if t.method == "full":
        down = dtype_bytes(recipe.grad) * sum(lin.in_features * lin.out_features * lin.count // m.num_layers
                                              for lin in block_linears(m) if lin.module == "down_proj")
        return {"offload_down_g": down}
    if t.method not in ("lora", "qlora") or t.dora:
        return {}
    # (peft LoRA: lora_A r x in and lora_B out x r per adapted Linear, in the adapter dtype; one layer's share)
    per_module = {lin.module: dtype_bytes(t.adapter_dtype) * t.lora_rank * lin.rank_mult
                  * (lin.in_features + lin.out_features) * lin.count // m.num_layers
                  for lin in resolve_targets(m, t.lora_targets)}
    layer_g = sum(per_module.values())
    q_g = per_module.get("q_proj", 0) if m.qk_norm else 0
    return {"offload_down_g": per_module.get("down_proj", 0), "offload_bottom_unmade_g": layer_g,
            **({"offload_norm_q_g": q_g, "offload_norm_top_g": layer_g - q_g} if m.qk_norm else {})}


def _offload_product_back(m: ModelSpec, t: TrainingSpec, c: int) -> int:
    """Per token, a dense gated MLP's product node operands (act(gate), up; c bytes x intermediate each) when its up
    projection has a LoRA adapter: what is back from the host at the layer's offloaded backward peak
    (memory/savers.py offload_node_bytes `product_back`); 0 otherwise."""
    from vramcalc.core.params import resolve_targets

    if m.mlp != "gated" or m.num_experts or t.method not in ("lora", "qlora") or m.intermediate_size is None:
        return 0
    adapted = {lin.module for lin in resolve_targets(m, t.lora_targets)}
    return 2 * c * m.intermediate_size if "up_proj" in adapted else 0


def _offloaded_expert_stack(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """Offloaded without checkpointing: the up grouped_mm saves `weight.transpose(-2, -1)` of the whole gate_up
    stack (transformers integrations/moe.py _grouped_linear, is_transposed False), a view, not a Parameter, so
    torchtune's OffloadActivations packs it and its node brings back a full copy (E x 2i x h; with peft's ParamWrapper
    the merged W + B·A stack the same way). Measured with the tracer, offload without checkpointing b1 s1024: the
    Mixtral toy of --grid moe full -6.7 % and Qwen1.5-MoE's -7.5 % without it, the peak at the up grouped_mm's
    backward."""
    from vramcalc.core.params import expert_width, fused_experts

    if not (m.num_experts and fused_experts(m)) or m.family == "gpt_oss" or m.moe_capacity_factor is not None:
        return 0
    assert m.intermediate_size is not None
    i = m.moe_intermediate_size or m.intermediate_size
    return _activations._expert_bytes(t, recipe) * m.num_experts * (2 if m.mlp == "gated" else 1) * i \
        * expert_width(m)


def _hqq_note(t: TrainingSpec, recipe: Recipe) -> str:
    """The storage and approximation note of an hqq QLoRA base (memory/hqq.py)."""
    return (f"QLoRA on hqq {t.quant_bits}-bit (group {t.hqq_group_size}, axis {t.hqq_axis}): norms, embeddings and "
            f"lm_head stay in {recipe.weight} (peft casts nothing on an hqq model); {_hqq.NOTE}.")


def _fused_moe_notes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> list[str]:
    """What transformers 5's 3-D expert Parameters (params.FUSED_EXPERT_FAMILIES) do to QLoRA and LoRA."""
    from vramcalc.core.params import fused_experts, resolve_targets

    if not m.has_architecture or not fused_experts(m) or m.family == "gpt_oss" or t.method not in ("lora", "qlora"):
        return []
    out = []
    if t.method == "qlora":
        where = "fp32 after prepare_model_for_kbit_training" if t.kbit_prep and recipe.weight != "fp32" \
            else recipe.weight
        out.append(f"QLoRA on {m.name}: transformers 5 keeps the routed experts as 3-D Parameters, which "
                   "bitsandbytes does not quantize (it replaces nn.Linear modules; bitsandbytes issue #1849): they "
                   f"stay unquantized ({where}) and are counted so; transformers 4.x's per-expert nn.Linear "
                   "layers were quantized.")
    rows = [lin.module for lin in resolve_targets(m, t.lora_targets) if lin.module.startswith("experts.")]
    if rows:
        out.append(f"LoRA on {m.name}'s experts ({', '.join(rows)}: peft target_parameters, ParamWrapper): every "
                   "forward builds a full-size copy of the adapted expert stack (W + B·A, one baddbmm) that the "
                   "backward keeps, per layer; adapting only the attention (q_proj,k_proj,v_proj,o_proj) avoids it.")
    return out


def _accum_note(grad_accum: int) -> str:
    return (f"gradient accumulation over {grad_accum} micro-batches: gradients stay "
            "allocated through every forward and backward (no extra memory per micro-batch).")


# --- Per-settings plans -----------------------------------------------------------------------------
def _estimate_serve(model: ModelSpec, training: TrainingSpec, checked: tuple[str, ...] = ()) -> Breakdown:
    """A vLLM server (memory/vllm.py) holding `batch_size` concurrent requests of `seq_len` tokens, per GPU.

    The components are what vLLM's budget (gpu_memory_utilization × the GPU) must cover, plus what stays outside
    it: weights, the profile run's activation peak, the KV blocks those requests take (at least one request of
    max_model_len, vLLM's start check), and the overhead (non-torch memory, CUDA context, CUDA graphs, and the
    share of the GPU the utilization leaves unused). The peak is the smallest GPU on which this runs.
    """
    from vramcalc.core.errors import SpecError
    from vramcalc.core.vocab import ENCODER_FAMILIES

    if not model.has_architecture:
        raise SpecError("", f"--mode serve sizes vLLM's KV cache from the architecture, and {model.name} is a "
                        "parameter count only: use a preset with an architecture or a config.json")
    if model.family in ENCODER_FAMILIES:
        raise SpecError("", f"{model.name} is an encoder: vLLM serves it without a KV cache (pooling); --mode "
                        "serve models generation: use --mode inference")
    if model.ssm_state_size or model.decoder_layers:
        # vLLM serves Mamba with a fixed state cache and encoder-decoders with a cross-attention cache:
        # memory/vllm.py models neither (its KV blocks are a decoder-only transformer's)
        kind = "a state-space model" if model.ssm_state_size else "an encoder-decoder"
        instead = "--mode train (Mamba-2 inference is not modelled)" if _ssm.is_mamba2(model) else "--mode inference"
        raise UnsupportedCombination(f"--mode serve is modelled for decoder-only transformers and {model.name} is "
                                     f"{kind}: use {instead}")
    s = _vllm.settings(model, training)
    layout = _vllm.kv_layout(model, training)
    p = _vllm.profile(model, training, s)
    kv, budget = _vllm.demand_bytes(model, training, training.batch_size)
    _, constants, _ = _inference.weights(model, training)
    utilized = -(-budget * 10**6 // round(s.gpu_memory_utilization * 10**6))  # the GPU whose budget is `budget`
    reserve = max(0, utilized - budget - p.outside_budget)
    notes = list(checked)
    if training.seq_len > (model.max_position_embeddings or training.seq_len) and training.max_model_len is None:
        notes.append(f"requests of {training.seq_len:,} tokens exceed {model.name}'s max_position_embeddings "
                     f"{model.max_position_embeddings:,}: vLLM refuses such a max_model_len unless "
                     "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 (or RoPE scaling); counted with max_model_len = the request.")
    per_request = _vllm.blocks_per_request(layout, s, training.seq_len)
    notes.append(f"{training.batch_size:,} concurrent request(s) of {training.seq_len:,} tokens: "
                 f"{per_request:,} KV block(s) of {_vllm.block_bytes(layout):,} B each per request; the peak is the "
                 f"smallest GPU on which vLLM starts and holds them (give --gpu for the pool it allocates there).")
    notes += _vllm.notes(model, training, s, layout)
    details = {
        "weights.base": p.weights - constants,
        "weights.quant_constants": constants,
        "activations.profile_forward": p.forward,
        "activations.profile_sampler": p.sampler,
        "kv_cache.bytes_per_token": layout.page_bytes * layout.layers // s.block_size,
        "kv_cache.block_bytes": _vllm.block_bytes(layout),
        "kv_cache.max_model_len_request": _vllm.request_bytes(layout, s, s.max_model_len),
        "overhead.non_torch": p.non_torch,
        "overhead.cuda_context": p.cuda_context,
        "overhead.cuda_graphs": p.cuda_graphs,
        "overhead.utilization_reserve": reserve,
    }
    layout_doc: dict[str, int | str] | None = None
    if training.tp > 1 or training.pp > 1:
        layout_doc = {"gpus_per_node": training.gpus_per_node, "nodes": training.nodes,
                      "world_size": _distributed.world_size(training), "tp": training.tp, "pp": training.pp,
                      "dp": _distributed.data_parallel(training), "strategy": "vllm"}
    tensors = p.weights + p.activation_peak + kv
    return Breakdown(
        model=model.name, parameters=count_params(model), trainable_parameters=0,
        weights=p.weights, gradients=0, optimizer_state=0, activations=p.activation_peak, temporaries=0,
        overhead=p.non_torch + p.outside_budget + reserve,
        phases={"profile": p.weights + p.activation_peak, "serving": tensors}, details=details,
        notes=tuple(notes), kv_cache=kv, parallelism=layout_doc, active_parameters=active_params(model),
    )


# Everything of `estimate` that depends on the model and the training settings but not on the token
# shape (batch_size, seq_len, grad_accum) is computed once per (model, settings) and kept here, so a
# sweep over batch and sequence length pays only for the per-token arithmetic (issue #7: throughput).
# The key is the model object (held, so its id cannot be reused) and every TrainingSpec field but the
# token shape, read from the spec's __dict__ so that a field added later is part of the key.
_TOKEN_FIELDS = frozenset({"batch_size", "seq_len", "grad_accum"})
_MAX_MODELS = 256
_MAX_PLANS_PER_MODEL = 4096
_plans: dict[int, tuple[ModelSpec, dict[tuple[object, ...], _Plan]]] = {}
_key_getters: dict[type, Callable[[dict[str, object]], tuple[object, ...]]] = {}


@dataclass(frozen=True, slots=True)
class _Plan:
    """The token-independent part of one (model, settings) estimate."""

    recipe: Recipe
    w: WeightBytes
    opt: OptimizerBytes
    gradients: int
    weights: int
    states: int
    step_temporaries: int
    details: dict[str, int]  # read-only: copied by each estimate
    notes: tuple[str, ...]  # before the sharding's notes
    checked: tuple[str, ...]  # core/checks.py check_settings: the model-vs-run notes of these settings
    tail_notes: tuple[str, ...]  # after them: the activation notes and overhead's
    parallel: bool
    active_parameters: int
    activations: _ActivationPlan | _seq2seq.Seq2SeqPlan | None  # None: a count-only preset
    units: _distributed.Units | None = None  # multi-GPU: gathered units and the busiest tp/pp rank, in bytes


def _settings_key(training: TrainingSpec) -> tuple[object, ...] | None:
    """The cache key of `training`'s settings; None for a spec without a __dict__ (the fast path's Record)."""
    fields = getattr(training, "__dict__", None)
    if fields is None:
        return None
    getter = _key_getters.get(type(training))
    if getter is None:
        names = [k for k in fields if k not in _TOKEN_FIELDS]
        getter = _key_getters[type(training)] = itemgetter(*names)
    return getter(fields)


_CHUNKED_HEADS = ("chunked", "linear-chunked")  # the losses calling the head once per chunk (memory/loss.py)


def _plan(model: ModelSpec, training: TrainingSpec) -> _Plan:
    key = _settings_key(training)
    if key is None:
        return _build_plan(model, training)
    if model.ssm_head_dim or model.mixer_head_dim or model.attention_chunk_size or model.jamba_mixer_size \
            or model.hybrid_pattern:
        # Mamba-2's (and Falcon-H1's mixer's) layer terms hold the row padded to chunk_size and a batch-1
        # single-chunk case (memory/ssm.py padded_length): its plan depends on the token fields too (found by the
        # explain test after test_docs had cached codestral's plan at another --seq-len); Llama 4's chunked mask
        # exists from seq_len = attention_chunk_size on; Jamba's bottom moment picks its layer by the tokens
        # (memory/jamba.py peak_layer).
        key = (*key, training.batch_size, training.seq_len)
    entry = _plans.get(id(model))
    if entry is None or entry[0] is not model:
        if len(_plans) >= _MAX_MODELS:
            _plans.clear()
        entry = _plans[id(model)] = (model, {})
    plans = entry[1]
    plan = plans.get(key)
    if plan is None:
        plan = _build_plan(model, training)  # raises (and caches nothing) for an unsupported combination
        if len(plans) >= _MAX_PLANS_PER_MODEL:
            plans.clear()
        plans[key] = plan
    return plan


def _build_plan(model: ModelSpec, training: TrainingSpec) -> _Plan:
    checked = check_settings(model, training)  # first: SpecError before any arithmetic on an impossible run
    _ssm.check_run(model, training)  # what a Mamba run is not modelled for, refused in one line
    _hybrid.check_run(model, training)  # Falcon-H1's (memory/hybrid.py)
    _jamba.check_run(model, training)  # Jamba's (memory/jamba.py)
    _zamba2.check_run(model, training)  # Zamba2's (memory/zamba2.py)
    _nemotron_h.check_run(model, training)  # Nemotron-H's (memory/nemotron_h.py)
    if _hf_tp.active(training):  # transformers' tp_plan: what is not modelled, refused (memory/hf_tp.py)
        _hf_tp.check(model, training)
    model = _encoder.for_run(model, training)  # an encoder with the run's task head (--head, --num-labels)
    encoder_notes = _encoder.notes(model, training)
    if (_preference.is_preference(training) or _preference.is_reference_free(training)
            or _online_dpo.is_online_dpo(training)) and model.dropout:
        # DPOConfig / ORPOConfig / CPOConfig / OnlineDPOConfig disable_dropout=True
        model = _preference.without_dropout(model)
    if (_preference.is_preference(training) or _preference.is_reference_free(training)
            or _online_dpo.is_online_dpo(training)) and training.lora_dropout > 0:
        # disable_dropout_in_model (trl/trainer/utils.py) sets p = 0 on every nn.Dropout, peft's lora_dropout modules
        # too (tuners/lora/layer.py update_layer: nn.Dropout(p) when lora_dropout > 0), and F.dropout with p = 0
        # returns its input (aten Dropout.cpp): no mask, no dropped copy
        training = _dc_replace(training, lora_dropout=0.0)
    recipe = recipe_of(training)
    notes: list[str] = list(encoder_notes)
    chosen = auto_precision_note(training)
    if chosen:
        notes.append(chosen)
    if training.method in ("lora", "qlora") and model.attention_kind == "mla" and "auto" in training.lora_targets:
        from vramcalc.core.params import default_targets

        notes.append(f"LoRA targets auto: {','.join(default_targets(model))} (multi-head latent attention has no "
                     "v_proj; peft has no default for it: pass --lora-targets to choose).")
    if training.method == "lora" and model.family == "gpt_oss" and "auto" in training.lora_targets:
        notes.append("LoRA targets auto: q_proj,v_proj (peft has no default for gpt_oss and asks for target_modules; "
                     "pass --lora-targets to choose, e.g. all-linear: the attention projections).")
    if training.method == "qlora" and training.quant_backend == "hqq":
        notes.append(_hqq_note(training, recipe))
    elif training.method == "qlora" and model.has_architecture:
        notes.append("QLoRA: prepare_model_for_kbit_training casts the non-quantized parameters (norms, embeddings, "
                     "lm_head) to fp32, as peft's recipe does; --no-kbit-prep keeps them 16-bit."
                     if training.kbit_prep and recipe.weight != "fp32" else
                     "QLoRA without prepare_model_for_kbit_training: norms, embeddings and lm_head stay in "
                     f"{recipe.weight}.")
    notes += _fused_moe_notes(model, training, recipe)
    if _badam.active(training):
        notes.append(_badam.note(model))
    if training.upcast_logits:
        notes.append(_upcast.note(training, recipe))
    if training.upcast_norms:
        notes.append(_upcast_norms.note(training, recipe))
    if _fp8.active(training):
        notes.append(_fp8.note(training))
    if recipe.autocast16:  # --precision autocast-* (memory/precision.py, memory/upcast_norms.py)
        notes.append(_upcast_norms.recipe_note(model, training, recipe))
    # A reward model has no LM head: the causal LM's body under a score head (memory/reward.py).
    body = _reward.body(model) if training.objective == "reward" else model
    w = weight_bytes(body, training, recipe)
    idle = _zamba2.idle_lora_tensors(body, training)  # Zamba2: stored LoRA adapters no forward runs (memory/zamba2.py)
    if idle:
        from dataclasses import replace as _replace

        left: dict[tuple[int, ...], int] = {}
        for shape, n in w.trainable_tensors:
            left[shape] = left.get(shape, 0) + n
        for shape, n in idle:
            left[shape] -= n
        w = _replace(w, trainable=w.trainable - sum(_numel(s) * n for s, n in idle),
                     trainable_tensors=tuple((s, n) for s, n in left.items() if n > 0))
        notes.append(f"{model.name}: {sum(n for _, n in idle) // 2:,} LoRA adapters on the projectors of other "
                     "invocations held in each shared-block copy never run: stored, without gradients or optimizer "
                     "state.")
    ref_weights = _preference.reference_weight_bytes(model, w.parameters, training, recipe)  # 0 unless a frozen copy
    notes.extend(_preference.notes(training, ref_weights))
    if _rl.is_rl(training):
        notes.extend(_rl.notes(training, ref_weights, recipe))
    if _online_dpo.is_online_dpo(training):
        notes.extend(_online_dpo.notes(training, ref_weights))
    # Online DPO's reward model (memory/reward_scoring.py): frozen weights beside the policy's and the reference's.
    reward_weights = _reward_scoring.weight_bytes(training, recipe)
    notes.extend(_reward_scoring.notes(training, recipe))
    opt = optimizer_bytes(w.trainable_tensors, recipe, training, body)
    notes.extend(library_optimizer_notes(body, training, recipe))
    routers = fp32_router_tensors(body, recipe)
    router_states = 0  # the fp32 routers' optimizer states beyond the 16-bit count (pure-* recipes)
    if routers:
        notes.append(f"{model.family} keeps its routers in fp32 under a {recipe.weight} load "
                     f"(_keep_in_fp32_modules_strict: {sum(t.numel for t in routers):,} parameters)"
                     + (", with fp32 gradients" + (" and optimizer states" if recipe.pure else "")
                        if w.fp32_trainable else "") + ".")
    if training.method in ADAPTER_DTYPE_METHODS:  # adapters of every PEFT method but LN tuning
        gradients = w.trainable * dtype_bytes(training.adapter_dtype)
    else:
        gradients = w.trainable * dtype_bytes(recipe.grad)
        # DeepSeek's fp32 routers (weights.py fp32_router_tensors): autograd's gradient takes the parameter's dtype
        gradients += w.fp32_trainable * (4 - dtype_bytes(recipe.grad))
        if w.fp32_trainable and recipe.pure and training.optimizer not in LIBRARY_OPTIMIZERS:
            # pure-*: torch.optim's states are zeros_like(param), fp32 for these: the states of those tensors as
            # an fp32 model's, less what the 16-bit count gave them
            from dataclasses import replace

            fp32 = replace(recipe, weight="fp32", grad="fp32", state="fp32")
            more = (optimizer_bytes(w.fp32_trainable_tensors, fp32, training, body).moments
                    - optimizer_bytes(w.fp32_trainable_tensors, recipe, training, body).moments)
            opt = OptimizerBytes(opt.moments + more, opt.master_weights, opt.step_temporaries, opt.paged)
            router_states = more
    if w.copies:  # modules_to_save copies (memory/weights.py): their dtype, and a full fine-tuning's states
        from dataclasses import replace

        adapters = tuple(x for x in w.trainable_tensors if x not in w.copy_tensors)
        lora_opt = optimizer_bytes(adapters, recipe, training)
        copy_opt = optimizer_bytes(w.copy_tensors, recipe, replace(training, method="full"))
        opt = OptimizerBytes(lora_opt.moments + copy_opt.moments, lora_opt.master_weights + copy_opt.master_weights,
                             lora_opt.step_temporaries + copy_opt.step_temporaries, opt.paged)
        gradients = (w.trainable - w.copies) * dtype_bytes(training.adapter_dtype) + w.copies * w.copy_elem_bytes
        notes.append(f"modules_to_save {', '.join(training.modules_to_save)}: a full trainable copy "
                     f"({w.copies:,} parameters, with gradients and optimizer states), the original kept frozen "
                     "(peft ModulesToSaveWrapper)" + (_tied_copies_note(model, training)
                                                      if model.tie_word_embeddings else "") + ".")
    first_states = 0
    if _lisa.active(training):
        # LISA (memory/lisa.py): the Trainer's optimizer holds every parameter and keeps each state once made, so the
        # worst step holds full fine-tuning's states; its foreach temporaries cover the parameters with a gradient
        from dataclasses import replace as _replace

        every = _replace(training, method="full")
        all_opt = optimizer_bytes(weight_bytes(body, every, recipe).trainable_tensors, recipe, every, body)
        first_states = opt.moments + opt.master_weights
        opt = OptimizerBytes(all_opt.moments, all_opt.master_weights, opt.step_temporaries, opt.paged)
        notes.append(_lisa.note(model, training, first_states, opt.moments + opt.master_weights))
    details: dict[str, int] = {
        "weights.base": w.base,
        "weights.quant_constants": w.quant_constants,
        "weights.adapters": w.adapters,
        "optimizer_state.moments": opt.moments,
        "optimizer_state.master_weights": opt.master_weights,
        "temporaries.optimizer_step": opt.step_temporaries,
    }
    if router_states:  # DeepSeek's routers, or --upcast-norms' norms (memory/upcast_norms.py: never both)
        details["optimizer_state.fp32_norms" if training.upcast_norms else "optimizer_state.fp32_routers"] = \
            router_states
    if first_states:
        details["optimizer_state.lisa_first_step"] = first_states
    if _preference.is_preference(training) or _rl.is_rl(training) or _online_dpo.is_online_dpo(training):
        details["weights.reference"] = ref_weights
    if reward_weights:
        details["weights.reward_model"] = reward_weights
    step_temporaries = opt.step_temporaries
    if training.optimizer_in_bwd:  # memory/savers.py: one tensor's gradient and step at a time
        largest = largest_tensor(w.trainable_tensors)
        lora = training.method in ADAPTER_DTYPE_METHODS
        gradients = largest * dtype_bytes(training.adapter_dtype if lora else recipe.grad)
        step_temporaries = (opt.step_temporaries if training.optimizer in LIBRARY_OPTIMIZERS  # per tensor already
                            else optimizer_bytes(((( largest,), 1),), recipe, training).step_temporaries)
        details["temporaries.optimizer_step"] = step_temporaries
        notes.append("optimizer in backward: each parameter is stepped and its gradient freed as it lands "
                     "(torchtune optimizer_in_bwd): gradients and step temporaries are the largest tensor's.")
    if _badam.active(training):
        # BAdam's _grad_to_hp (memory/badam.py): each 16-bit gradient lives until its fp32 copy is made, so the step
        # holds every fp32 gradient (in the mixed recipe's step temporaries) and one 16-bit one (_badam.converting)
        step_temporaries += _badam.converting(body, largest_tensor(w.trainable_tensors)) * dtype_bytes(recipe.grad)
        details["temporaries.optimizer_step"] = step_temporaries
    if opt.paged:
        notes.append("paged optimizer: its states live in CUDA unified memory and may be evicted to CPU RAM "
                     "under pressure; they are counted on the GPU here (the worst case).")
    act: _ActivationPlan | _seq2seq.Seq2SeqPlan | None
    if _seq2seq.is_seq2seq(model):  # encoder-decoders: two stacks, source and target (memory/seq2seq.py)
        act = _seq2seq.build_plan(model, training, recipe)
    elif _hf_tp.active(training):  # transformers' tp_plan: one rank's heads and MLP slice (memory/hf_tp.py)
        act = _activation_plan(_hf_tp.rank_view(model, training.tp), training, recipe, w.trainable)
    else:
        act = _activation_plan(model, training, recipe, w.trainable) if model.has_architecture else None
    if act is not None:
        tail_notes = act.notes
    elif model.activation_bytes_per_sample is None:
        tail_notes = ("activations not modeled: this preset gives only a parameter count "
                      "(add activation_bytes_per_sample to the preset to include them).",)
    else:
        tail_notes = ()
    parallel = _distributed.is_parallel(training)
    units = None
    if parallel:  # what a GPU gathers or holds beyond its shard, from the run's own tensors (memory/distributed.py)
        units = _distributed.units(_reward.body(model) if training.objective == "reward" else model, training,
                                   recipe, _grad_elem(training, recipe))
    held = w.total + ref_weights + reward_weights
    return _Plan(recipe, w, opt, gradients, held, opt.total, step_temporaries, details, tuple(notes),
                 checked, tail_notes + (_OVERHEAD_NOTE,), parallel, active_params(model), act, units)


def _tied_copies_note(model: ModelSpec, training: TrainingSpec) -> str:
    """modules_to_save on tied embeddings (weights.py saved_copies): one copy of the shared matrix, or two when
    both modules are named (peft wraps and deep-copies each; the copies are no longer tied)."""
    if len(saved_copies(model, training)) > 1:
        return "; tied embeddings, both modules named: two copies of the shared matrix, trained apart"
    return "; tied embeddings: one copy of the shared matrix"


def _grad_elem(training: TrainingSpec, recipe: Recipe) -> int:
    """Bytes per gradient element: the adapter dtype for the adapter methods, else the recipe's gradient dtype."""
    return dtype_bytes(training.adapter_dtype if training.method in ADAPTER_DTYPE_METHODS else recipe.grad)


def _shard(model: ModelSpec, training: TrainingSpec, recipe: Recipe, weights: int, gradients: int,
           opt: OptimizerBytes, trainable: int, tokens: int, units: _distributed.Units) -> _distributed.PerGpu:
    """Per-GPU model states under the run's ZeRO/FSDP/tp/pp layout (memory/distributed.py)."""
    fp32_grads = 4 * trainable if recipe.master_weights else 0  # optimizer.py: fp32 grads for the master copy
    grad_elem = _grad_elem(training, recipe)
    states = _distributed.ModelStates(
        weights=weights, gradients=gradients, moments=opt.moments, master_weights=opt.master_weights,
        step_temporaries=opt.step_temporaries, fp32_grad_bytes=min(fp32_grads, opt.step_temporaries),
        parameters=count_params(model), trainable=trainable, grad_elem_bytes=grad_elem)
    return _distributed.shard(model, training, states, tokens,
                              deepspeed_fp32_grad_partition=recipe.master_weights, u=units)


def _estimate_inference(model: ModelSpec, training: TrainingSpec, checked: tuple[str, ...] = ()) -> Breakdown:
    """Serving memory per GPU (memory/inference.py) as a Breakdown with a kv_cache component."""
    # Mamba: a fixed recurrent state instead of a KV cache (memory/ssm.py)
    inf = (_ssm.estimate_inference if _ssm.is_ssm(model) else _inference.estimate_inference)(model, training)
    tensor_peak = max(inf.phases.values())
    runtime = runtime_overhead(tensor_peak, _distributed.world_size(training))
    overhead = runtime.total
    details = {
        "weights.base": inf.weights - inf.quant_constants,
        "weights.quant_constants": inf.quant_constants,
        "kv_cache.bytes_per_token": inf.kv_bytes_per_token,
        "activations.prefill_workspace": inf.activations,
        "temporaries.logits": inf.temporaries,
        **_inference.term_details(inf.terms),
        **runtime.details(),
    }
    layout: dict[str, int | str] | None = None
    if training.tp > 1 or training.pp > 1 or _distributed.world_size(training) > 1:
        layout = {"gpus_per_node": training.gpus_per_node, "nodes": training.nodes,
                  "world_size": _distributed.world_size(training), "tp": training.tp, "pp": training.pp,
                  "dp": _distributed.data_parallel(training), "strategy": "inference"}
    return Breakdown(
        model=model.name, parameters=count_params(model), trainable_parameters=0,
        weights=inf.weights, gradients=0, optimizer_state=0, activations=inf.activations,
        temporaries=inf.temporaries, overhead=overhead, phases=dict(inf.phases), details=details,
        notes=checked + tuple(inf.notes), activations_modeled=model.has_architecture, kv_cache=inf.kv_cache,
        parallelism=layout,
    )


@dataclass(frozen=True, slots=True)
class _ActivationPlan:
    """Activation and temporary bytes of a transformer run as coefficients of tokens and tokens x seq_len.

    `_t` fields multiply the token count (batch x seq_len), `_ts` fields tokens x seq_len (eager
    attention's per-key terms); the rest are bytes. Built by `_activation_plan`, used by
    `_transformer_phases`.
    """

    n_layers: int
    saving_layers: int
    checkpointing: bool
    per_layer_t: int  # one layer's saved set
    per_layer_ts: int
    once_t: int  # shared by all layers (RoPE tables, dropout mask)
    once_ts: int  # eager's 4-D causal mask, per batch x seq_len x seq_len (whole, whatever the layout)
    head_saved_t: int
    kept_t: int  # checkpointing: the layers' inputs
    autocast_copies: int
    layer_copies: int
    autocast_head_copy: int  # the LM head's share of autocast_copies: cast only after the last layer
    frozen_casts: bool  # autocast over frozen base weights (a PEFT method): their casts are not cached
    # LoRA without checkpointing: layer 0's casts freed at once, its input needing no gradient (_bottom_unsaved_casts)
    bottom_cast_less: int
    # ... and its input, the embeddings' fp32 output the norm would save as it is, still alive through the forward
    # (LlamaModel.forward's inputs_embeds local) though saved by nothing, per token (forward.layer)
    emb_local_t: int
    attn_fwd_ts: int
    layer_fwd_t: int
    layer_bwd_t: int
    layer_bwd_ts: int
    loss_fwd_t: int
    loss_bwd_t: int
    g_head: int  # before the min with the (possibly sharded) gradients
    end_t: int  # backward-end temporaries when the condition below holds, else 0
    end_tied: bool  # end_t applies without gradient accumulation (tied embeddings)
    notes: tuple[str, ...]
    # Loss saver (memory/loss.py); "hf" uses head_saved_t / loss_fwd_t / loss_bwd_t above.
    loss: str = "hf"
    loss_chunks: int = 8
    liger_ce: bool = False  # --loss liger-cross-entropy: hf's head and moments, and the head's own backward moment
    loss_compiled: bool = False  # --compile: the chunked loss's compute_cross_entropy compiled (memory/compiled.py)
    norm_saved_t: int = 0  # the final norm's saved bytes per token (the rest of the head is the loss's)
    recompute_bottom: bool = False  # Mamba-2: the bottom layer's recompute moment (memory/ssm.py)
    # Bamba, full fine-tuning with checkpointing: the gradient bytes not yet made at the lowest mixer layer's rerun
    # (its own layer, those below and the embedding's; memory/hybrid.py), and its index; -1: no such moment
    rerun_mixer_below: int = -1
    rerun_mixer_layer: int = 0
    head_trainable: bool = False
    vocab: int = 0
    hidden: int = 0
    compute: int = 2
    # Checkpointing variants (memory/savers.py).
    ac_every: int = 1
    ac_from_first: bool = False  # --ac-layout hf (memory/savers.py wrapped_layers)
    offload: bool = False
    ac_offload: bool = False  # transformers' save_on_cpu around each checkpoint (memory/savers.py, --ac-offload)
    layer_input_t: int = 0  # one layer's input per token (what a checkpointed layer keeps)
    # ... of which its recomputed saved set holds the same tensor (an fp32 residual saved by the first pre-norm:
    # activations.py saves_residual), per token
    rerun_input_saved_t: int = 0
    # ... and the embedding's output, a leaf enable_input_require_grads makes, held by its AccumulateGrad node beside
    # layer 0's input where that is another tensor (learned positions added: GPT-2, GPTBigCode), per token
    input_leaf_t: int = 0
    # Offloaded checkpointing of adapters (not full fine-tuning): the embedding output stays on the GPU (below).
    offload_leaf_t: int = 0
    # Offloaded without checkpointing (memory/savers.py offload_node_bytes): the forward stash, what one backward node
    # brings back beside the previous node's copies (per token, and whatever the batch), and the fp32 RMSNorm
    # backward with its input brought back (per token)
    offload_stash_t: int = 0
    offload_back_t: int = 0
    offload_back_c: int = 0
    offload_norm_t: int = 0
    offload_bwd_t: int = 0  # the layer's backward transient without the RMSNorm's (that node has its own moment)
    # At the bottom layer's RMSNorm node (backward.offload_norm), gradients of late_grads already made (its experts',
    # whose block runs before the norm in backward) and gradients not made yet beyond late_grads (the q/k/v
    # projections' under q/k norms, which run after them)
    offload_norm_made_g: int = 0
    offload_norm_unmade_g: int = 0
    # ... and at a layer's backward peak (_offload_layer_gradients): the gradients its down projection has made (top and
    # bottom layer alike) and the bottom layer's adapters' gradients not made yet; with q/k norms, an adapted layer's
    # gradients made at its query norm node (the top layer's)
    offload_down_g: int = 0
    offload_bottom_unmade_g: int = 0
    offload_norm_q_g: int = 0
    offload_norm_top_g: int = 0
    # Unsloth's kernels under checkpointing (memory/unsloth.py): the bottom layer's own input (and the embedding
    # leaf beside its offloaded copy) alive through its backward, which its saved set does not count.
    bottom_input_t: int = 0
    # Preference training (memory/preference.py): TRL's fused head reads the prompt length and dtypes; the
    # reference's no-grad forward is one more forward moment.
    prompt_len: int = 0
    residual: int = 2
    head_weight: int = 2
    reference: _preference.ReferencePlan | _online_dpo.ReferencePlan | None = None
    reward: _reward_scoring.ScoringPlan | None = None  # the reward model's forward (memory/reward_scoring.py)
    # ORPO / CPO / SimPO (memory/preference.py logits_head_bytes): the logits' dtype and the chosen half's NLL.
    logits_bytes: int = 2
    chosen_nll: bool = True
    head_copy: int = 0  # the head weight's 16-bit autocast cast (amp)
    # The other PEFT methods (core/peft_methods.py).
    extra_seq: int = 0  # prompt / p-tuning: virtual tokens in front of every sequence
    per_layer_b: int = 0  # one layer's saved bytes per sequence (prefix tuning's virtual keys and values)
    per_layer_c: int = 0  # one layer's saved bytes whatever the batch (LoHa / LoKr delta weights)
    per_layer_ss: int = 0  # one layer's saved bytes per row length squared (DeBERTa's gather indices)
    once_ss: int = 0  # shared bytes per row length squared (DeBERTa's relative positions)
    once_rel_c: int = 0  # shared bytes whatever the batch (DeBERTa's normalized rel_embeddings)
    attn_fwd_less_t: int = 0  # saved bytes per token not yet there at attn_fwd_ts's moment (DeBERTa, no checkpointing)
    # DeBERTa: a layer's unsaved scores per token x seq beyond its whole saved set (memory/deberta.py forward_scores),
    # less attn_fwd_less_t per token: also the peak of a checkpointed layer's recomputed forward (BLOOM's rerun
    # scores, with attn_div_t per token beside them: activations.py rerun_scores_per_token*)
    attn_div_ts: int = 0
    attn_div_t: int = 0
    # DeBERTa's shared tensors (memory/deberta.py shared_terms), freed with the forward's locals when no checkpointed
    # layer keeps them as its arguments: per token x seq, per seq², whatever the batch
    fwd_only_ts: int = 0
    fwd_only_ss: int = 0
    fwd_only_c: int = 0
    loss_less_ts: int = 0  # of once_ts, gone by the loss too (gpt-oss's masks without checkpointing)
    once_b: int = 0  # the prompt encoder's saved bytes per sequence
    once_c: int = 0  # whatever the batch: Unsloth's QLoRA dequantization buffers (memory/unsloth.py)
    layer_bwd_c: int = 0  # a layer's backward temporaries whatever the batch (a delta weight's gradient)
    layer_mlp_saved_t: int = 0  # the MLP block's saved bytes per token, freed before the attention's backward
    layer_mlp_saved_c: int = 0  # ... and whatever the batch (peft's merged expert stacks)
    layer_attn_bwd_c: int = 0  # the attention's backward temporaries whatever the batch (activations.py)
    layer_attn_bwd_grads_c: int = 0  # ... of which trained weights' gradients, none in a frozen layer's backward
    layer_routed_bwd_t: int = 0  # DeepSeek's MoE backward at the routed multiply, per token (activations.py)
    layer_mlp_tail_t: int = 0  # the MLP's saved bytes per token after its up-projection's inputs (activations.py)
    layer_mlp_fwd_t: int = 0  # the MLP's forward temporaries per token from its up-projection on (activations.py)
    layer_fwd_unmade_t: int = 0  # top layer saved bytes per token not made at layer_fwd_t (no checkpointing)
    layer_fwd_c: int = 0  # a layer's forward temporaries whatever the batch (DoRA's weight norm, activations.py)
    layer_fwd_c_t: int = 0  # ... and per token beside them and the saved set (LayerActivations.dora_norm_per_token)
    layer_fwd_moe_c: int = 0  # beside layer_fwd_t: a checkpointed MoE block's merged expert stacks (activations.py)
    attn_fwd_t: int = 0  # beside attn_fwd_ts: a checkpointed layer's eager attention inputs (activations.py)
    mlp_fwd_ts: int = 0  # beside layer_fwd_t: a checkpointed layer's eager attention weights (activations.py)
    fp8_casts: _fp8.Fp8Casts = _fp8.Fp8Casts()  # --fp8: a swapped Linear's float8 casts while it runs (memory/fp8.py)
    fp8_unmade_grads: int = 0  # --fp8: gradient bytes made after the bottom layer's swapped Linears (memory/fp8.py)
    # QLoRA's dequantized weight while a block Linear runs forward / backward (activations.py)
    dequant_fwd: DequantBytes = DequantBytes()
    dequant_bwd: DequantBytes = DequantBytes()
    # 8-bit QLoRA under non-reentrant checkpointing: per token, the rerun's Linear8bitLt inputs only MatMul8bitLt's ctx
    # holds, alive while the layer is recomputed (not in its saved set after: activations.py INT8_CTX)
    int8_rerun_t: int = 0
    int8_rerun_down_t: int = 0  # ... of which down_proj's input (made by the MLP's rerun, after act(gate) * up)
    # ... under --ac-every > 1 (non-reentrant): per token, what each checkpointed layer's first forward leaves in
    # MatMul8bitLt's ctx beside its kept input (activations.py LayerActivations.int8_ctx_per_token)
    int8_wrapped_t: int = 0
    # LoRA on lm_head: what its adapter saves per token, also under the chunked loss (whose per-chunk adapter
    # temporaries stay under the loss's own peak: measured with the tracer, tinyllama-1.1b and qwen2.5-0.5b)
    lora_head_t: int = 0
    head_saved_c: int = 0  # saved by the head whatever the batch (trainable tokens' merged weight, tied)
    # The bottom saving layer saves this much less (its input needs no gradient; see _activation_plan).
    bottom_less_t: int = 0
    bottom_less_ts: int = 0
    # All the saving layers together save this much less than saving_layers x per_layer (the bottom layer's
    # smaller set, and MoE models' dense bottom layers).
    layers_less_t: int = 0
    layers_less_ts: int = 0
    layers_less_c: int = 0  # the dense bottom layers' per-layer constant below a MoE layer's (LoRA merged experts)
    bottom_less_c: int = 0
    layers_less_b: int = 0  # ... per sequence (Bamba's attention layers hold no padded mixer rows)
    bottom_less_b: int = 0
    batch1_t: int = 0  # one layer's saved bytes per token that only a batch of 1 keeps (activations.py)
    late_grads: int = 0  # gradient bytes that appear after the bottom layer's backward (memory/encoder.py)
    bottom_layer_grads: int = 0  # a dense bottom layer's own gradients, written after its backward peak
    # ... but down_proj's, written before it (_mlp_node): its saved input freed (per token), its gradient and its
    # autocast copy freed (bytes)
    mlp_node_freed_t: int = 0
    mlp_node_grads: int = 0
    mlp_node_cast: int = 0
    mlp_node_bwd_t: int = 0  # that node's temporaries per token where not layer_bwd_t's (a frozen gelu_new MLP's)
    rerun_end_t: int = 0  # ... checkpointed, the rerun's end before that node, per token (backward.rerun_end)
    # Full fine-tuning: the final RMSNorm's fp32 backward (backward.final_norm), per token: its saved fp32 input and
    # the backward's fp32 tensors (0: no such moment)
    final_norm_saved_t: int = 0
    final_norm_bwd_t: int = 0
    # Falcon-H1 full fine-tuning (memory/hybrid.py bottom_mixer_node): the bottom layer's scan backward, per token:
    # its transient and the attention's and MLP's saved sets freed by then (0: no such moment)
    bottom_mixer_t: int = 0
    bottom_mixer_freed_t: int = 0
    layer_ck_fwd_t: int = 0  # a checkpointed layer's first forward (LayerActivations.checkpointed_forward_per_token)
    end_in_t: int = 0  # the embedding's incoming gradient while embedding_dense_backward runs (per token)
    # LISA (memory/lisa.py): the frozen layers below the trained ones, and one frozen layer's saved set (per token,
    # per token x seq): the backward.lowest_trained moment
    lisa_below: int = 0
    lisa_frozen_t: int = 0
    lisa_frozen_ts: int = 0
    # Falcon-7B freeze under autocast without checkpointing, its tied head trained (_falcon_freeze_lowest): a frozen
    # layer's saved set (per token, per token x seq) and the frozen layers; the lowest trained layer's attention saved
    # set (per token, per token x seq), its autocast copies, its MLP backward's temporaries (per token, constant) and
    # its gradients not made yet; zeros: no such moment
    falcon_lt: tuple[int, ...] = (0,) * 9
    top_layer_grads: int = 0  # a trained MoE layer's expert gradients, there by its attention's backward
    # --freeze-layers N with checkpointing: the frozen layers rerun in backward (their inputs need a gradient), and a
    # frozen layer's saved set less a trained one's (per token, per token x seq, constant): backward.recompute_frozen
    frozen_rerun: int = 0
    frozen_casts_saved: bool = False
    frozen_less: tuple[int, int, int] = (0, 0, 0)
    # --lora-layers with checkpointing and the top layer unadapted (core/lora_layers.py): an adapted layer's saved set
    # less an unadapted one's (per token, per token x seq, constant), and the unadapted layers above the highest
    # adapted one, whose kept inputs are freed by that layer's backward
    idle_less_t: int = 0
    idle_less_ts: int = 0
    idle_less_c: int = 0
    top_idle_layers: int = 0
    rl: _rl.RlPlan | None = None  # GRPO: generate() and the no-grad log-prob passes before the step (memory/rl.py)
    # The MoE router's aux loss (memory/router_aux.py plan_bytes): per token, every MoE layer's logits, the bottom
    # layer's, the aux loss's forward bytes; zeros without it
    router_aux: tuple[int, int, int] = (0, 0, 0)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _activation_plan(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable: int) -> _ActivationPlan:
    assert m.num_layers is not None and m.hidden_size is not None and m.vocab_size is not None
    n_layers = m.num_layers
    c = dtype_bytes(recipe.compute)
    # the head's and the embedding's rows on this GPU: a vocabulary slice under transformers' tp_plan (lm_head
    # colwise_gather_output, embed_tokens embedding_rowwise: memory/hf_tp.py), whose logits are still full-width
    head_rows = _hf_tp.vocab_rows(m, t)
    full_like = t.method in ("full", "freeze")
    unfrozen = _unfrozen.active(t)  # --train-layers / --train-modules (core/unfrozen.py)
    trained = _unfrozen.trained_layers(m, t) if unfrozen else ()
    outer_trained = _unfrozen.outer_modules(m, t) if unfrozen else ()
    if unfrozen:
        frozen = n_layers - len(trained)
        head_trainable = "lm_head" in outer_trained
    elif t.method == "freeze":
        frozen, _ = freeze_fraction(m, t)
        head_trainable = t.train_head
    else:
        frozen = 0
        head_trainable = t.method == "full" or saved_head(m, t)  # modules_to_save lm_head: a trainable copy
    trained_layers = n_layers - frozen
    ssm = _ssm.is_ssm(m)  # Mamba: the mixer's saved set and an fp32 residual stream (memory/ssm.py)
    layer_fn = _ssm.layer_activations if ssm else layer_activations
    if _hybrid.is_hybrid(m):  # Falcon-H1: the decoder's attention and MLP beside a Mamba-2 mixer (memory/hybrid.py)
        layer_fn = _hybrid.layer_activations
    if _jamba.is_jamba(m):  # Jamba: attention and Mamba layers, dense and MoE feed-forwards (memory/jamba.py)
        layer_fn = _jamba.layer_activations
    if _zamba2.is_zamba2(m):  # Zamba2: Mamba-2 layers, shared attention blocks at the hybrid ones (memory/zamba2.py)
        layer_fn = _zamba2.layer_activations
    if _nemotron_h.is_nemotron_h(m):  # Nemotron-H: Mamba-2, attention and MLP layers, one block each
        layer_fn = _nemotron_h.layer_activations
    unsloth = _unsloth.active(m, t)
    if unsloth:  # Unsloth's kernels (memory/unsloth.py): its own saved set per layer
        layer_fn = _unsloth.layer_activations
    liger = _liger.active(m, t)
    if liger:  # Liger's RMSNorm and SwiGLU in transformers' layer (memory/liger.py)
        layer_fn = _liger.layer_activations
    if _axolotl_kernels.active(m, t):  # axolotl's LoRA autograd functions (memory/axolotl_kernels.py)
        layer_fn = _axolotl_kernels.layer_activations
    if _compiled.active(m, t):  # torch.compile, per layer or whole (memory/compiled.py): the partitioner's set
        layer_fn = _compiled.layer_activations
    layer = layer_fn(m, t, recipe, trainable_weights=full_like)
    # layer.saved(tokens, seq) = per_layer_t * tokens + per_layer_ts * tokens * seq
    per_layer_t = sum(x.per_token for x in layer.terms if not x.batch1_only)
    int8_rerun_t = int8_rerun_down_t = 0
    if t.grad_checkpointing and not t.reentrant_gc and t.ac_every <= 1:
        # 8-bit QLoRA: non-reentrant checkpointing recomputes the layer under saved-tensor hooks and drops the rerun's
        # graph when the rerun ends, so the inputs only MatMul8bitLt's ctx held go with it (the first forward's stay:
        # kept_t); they are alive during the rerun (the backward.recompute moment)
        int8_rerun_t = sum(x.per_token for x in layer.terms if x.name.endswith(_activations.INT8_CTX))
        int8_rerun_down_t = sum(x.per_token for x in layer.terms if x.name == f"down_proj input{_activations.INT8_CTX}")
        per_layer_t -= int8_rerun_t
    batch1_t = sum(x.per_token for x in layer.terms if x.batch1_only)  # only at batch size 1
    per_layer_ts = sum(x.per_token_seq for x in layer.terms)
    if (ssm or m.family == "gemma2") and t.loss == "liger-cross-entropy":
        # (Gemma 2's final logit softcapping puts vocab-wide tanh gradients beside Liger's buffer: not traced)
        raise UnsupportedCombination(f"--loss liger-cross-entropy is modelled on transformers' decoder head "
                                     f"(memory/activations.py head_activations) without logit softcapping, not "
                                     f"{m.name}'s: use --loss hf")
    whole_compiled = _compiled.whole(m, t)  # the head in the compiled graph too (memory/compiled.py)
    head = (_encoder.head_activations if _encoder.is_encoder(m) else _ssm.head_activations if ssm
            else _compiled.head_activations if whole_compiled else head_activations)(m, t, recipe, head_trainable)
    if _unsloth.norm_active(m, t):  # the final norm through Fast_RMS_Layernorm (LlamaModel_fast_forward; axolotl's
        # LlamaRMSNorm class): its 16-bit input + rstd
        from dataclasses import replace as _replace

        hf_norm = sum(x.per_token for x in _activations._norm_terms(
            "final norm", m, c, 4 if recipe.autocast or recipe.compute == "fp32" else c, m.hidden_size, True, False))
        head = _replace(head, saved=head.saved - hf_norm + _unsloth.final_norm_saved(m, recipe))
    if liger:  # the final norm through LigerRMSNormFunction: its 16-bit input + fp32 rstd, no normalized copy
        from dataclasses import replace as _replace

        trained_norm = _activations._norm_weight_trained(m, t, "final", head_trainable)
        hf_norm = sum(x.per_token for x in _activations._norm_terms("final norm", m, c, c, m.hidden_size, True,
                                                                    trained_norm))
        head = _replace(head, saved=head.saved - hf_norm + _liger.final_norm_saved(m, recipe))
    # LoRA/QLoRA without checkpointing: the frozen embedding's output needs no gradient, so layer 0 saves
    # nothing before its first adapter (the attention norm's input, and more when the first adapter is
    # later in the block). Checkpointing calls enable_input_require_grads (transformers modeling_utils),
    # which makes every layer's input need one. Measured with the tracer (tinyllama, LoRA q,v: layer 0
    # saves its attention norm's fp32 input + rsqrt fewer than layer 1).
    bottom_less_t = bottom_less_ts = layers_less_t = layers_less_ts = layers_less_c = bottom_less_c = 0
    n_dense = (min(m.first_dense_layers, n_layers) if m.family != "llama4" else dense_layers(m)) \
        if m.num_experts else 0
    dense_m = m
    if n_dense and trained_layers == n_layers:
        # MoE with dense bottom layers (DeepSeek first_k_dense_replace, Qwen-MoE mlp_only_layers): those layers
        # save a dense MLP's tensors (intermediate_size), not the routed experts'; per_layer stays a MoE layer's.
        dense_m = dense_mlp_spec(m)
        dense = layer_activations(dense_m, t, recipe, trainable_weights=full_like)
        layers_less_t = n_dense * (per_layer_t - sum(x.per_token for x in dense.terms if not x.batch1_only))
        layers_less_ts = n_dense * (per_layer_ts - sum(x.per_token_seq for x in dense.terms))
        bottom_less_t, bottom_less_ts = layers_less_t // n_dense, layers_less_ts // n_dense
        bottom_less_c = sum(x.const for x in layer.terms) - sum(x.const for x in dense.terms)
        if m.family == "llama4":
            # Llama 4 interleaves them (Maverick: layer 0 dense, layer 1 MoE): the backward's peak is at the lowest MoE
            # layer with nearly every gradient written, so the bottom moment keeps a MoE layer's set (over by layer
            # 0's gradients; measured with the tracer, --grid llama4 Maverick full with checkpointing: -6 % without)
            bottom_less_t = bottom_less_ts = bottom_less_c = 0
        elif full_like and m.family in ("deepseek_v2", "deepseek_v3", "qwen2_moe", "qwen3_moe") \
                and n_layers - n_dense > 1 and (t.grad_checkpointing or t.activation_offload):
            # ... with checkpointing the dense layers below keep only their inputs: the bottom moment holds the
            # recomputed MoE layer's set (measured with the tracer, --grid moe deepseek_v3 full b2 s256 with
            # checkpointing: -2.2 % with the dense layer's set, +7.2 % with both; Qwen-MoE's mlp_only_layers [0]
            # likewise, --grid moe qwen2_moe-narrow-dense0 full b2 s512 with checkpointing: -7.3 % with the dense
            # layer's set, the peak at the lowest MoE layer's un-permute backward, every expert gradient above made)
            bottom_less_t = bottom_less_ts = bottom_less_c = 0
        elif full_like and m.family in ("deepseek_v2", "deepseek_v3") and n_layers - n_dense > 1:
            # DeepSeek's dense bottom layers under full fine-tuning: the lowest MoE layer's backward, the expert
            # gradients above written, outweighs the dense layers': the bottom moment holds that MoE layer's set and
            # the dense layers' below it (over by the dense layers' gradients, not written yet; measured with the
            # tracer, --grid moe deepseek_v3 full b2 s256, 1 dense layer under 2 MoE layers: the peak at the lowest
            # MoE layer's routed-copy gradients, -4.8 % with the dense layer's set alone)
            bottom_less_t = -n_dense * sum(x.per_token for x in dense.terms if not x.batch1_only)
            bottom_less_ts = -n_dense * sum(x.per_token_seq for x in dense.terms)
            bottom_less_c = -n_dense * sum(x.const for x in dense.terms)
        layers_less_c = n_dense * (sum(x.const for x in layer.terms) - sum(x.const for x in dense.terms))
    if m.family == "llama4" and m.nope_layer_interval and trained_layers == n_layers:
        # Llama 4's NoPE layers (every no_rope_layer_interval-th; MoE layers in the published layouts): global
        # attention without the chunked mask and without the L2 q/k norm (modeling_llama4.py Llama4TextAttention)
        from dataclasses import replace

        nope = layer_activations(replace(m, qk_l2_norm=False, attention_chunk_size=0), t, recipe,
                                 trainable_weights=full_like)
        n_nope = sum(1 for i in range(n_layers) if (i + 1) % m.nope_layer_interval == 0
                     and (i + 1) % max(m.moe_layer_interval, 1) == 0)
        layers_less_t += n_nope * (per_layer_t - sum(x.per_token for x in nope.terms if not x.batch1_only))
        layers_less_ts += n_nope * (per_layer_ts - sum(x.per_token_seq for x in nope.terms))
    if _jamba.is_jamba(m):  # each layer's own kind below the largest kind's set (memory/jamba.py)
        jl = _jamba.layer_differences(m, t, recipe, full_like, layer)
        layers_less_t, layers_less_ts, layers_less_c = jl[0], jl[1], jl[2]
        bottom_less_t, bottom_less_ts, bottom_less_c = jl[3], jl[4], jl[5]
        # (full fine-tuning with checkpointing: the bottom moment is the layer whose own set beside the gradients
        # written above it is the largest, memory/jamba.py peak_layer, and the gradients below it are late: an
        # attention layer at the bottom, --grid jamba shape B full with checkpointing, was -5.9 % under without)
    outer = outer_targets(t.lora_targets) if t.method in ("lora", "qlora") else ()
    if "lm_head" in outer and t.loss == "liger-cross-entropy":
        # the adapter's `result + lora_B(..) * scaling` logits beside Liger's in-place fp32 buffer: not traced
        raise UnsupportedCombination("LoRA on lm_head with --loss liger-cross-entropy is not modelled (the adapter's "
                                     "logits sum beside Liger's in-place fp32 logits is not traced); use --loss hf or "
                                     "drop lm_head from --lora-targets")
    if "lm_head" in outer and (t.loss not in ("hf", "chunked") or t.objective != "sft"):
        # Liger / Cut CE / TRL's fused head multiply by lm_head.weight themselves (torchtune's chunks call the module)
        raise UnsupportedCombination(f"LoRA on lm_head with --loss {t.loss} --objective {t.objective}: that head "
                                     "reads lm_head.weight and skips the adapter; use --loss hf or chunked, or drop "
                                     "lm_head from --lora-targets")
    layers_less_b = bottom_less_b = 0
    lora_bottom = t.method in ("lora", "qlora", "adaption-prompt") and not t.grad_checkpointing \
        and not t.activation_offload and not saved_embedding(m, t) and "embed_tokens" not in outer \
        and not peft_methods.token_rows(t)
    if _hybrid.is_layered_hybrid(m):
        # Bamba: mixer and attention layers (memory/hybrid.py): per_layer is their envelope; each layer's kind and
        # the bottom layer's (without an input gradient under LoRA) are subtracted here, exactly.
        (lt, lts, lb, lc), (bt, bts, bb, bc) = _hybrid.layered_less(m, t, recipe, full_like, not lora_bottom)
        layers_less_t, layers_less_ts, layers_less_b, layers_less_c = lt, lts, lb, lc
        bottom_less_t, bottom_less_ts, bottom_less_b, bottom_less_c = bt, bts, bb, bc
    elif _zamba2.is_zamba2(m):  # Zamba2: hybrid and Mamba layers, each by its kind (memory/zamba2.py), as Bamba's
        (lt, lts, lb, lc), (bt, bts, bb, bc) = _zamba2.layered_less(m, t, recipe, full_like, not lora_bottom)
        layers_less_t, layers_less_ts, layers_less_b, layers_less_c = lt, lts, lb, lc
        bottom_less_t, bottom_less_ts, bottom_less_b, bottom_less_c = bt, bts, bb, bc
    elif _nemotron_h.is_nemotron_h(m):
        # Nemotron-H (memory/nemotron_h.py): per_layer is the envelope of its kinds; each layer's kind and the bottom
        # layer's (without an input gradient under LoRA) are subtracted here, exactly.
        (lt, lts, lb, lc), (bt, bts, bb, bc) = _nemotron_h.layered_less(m, t, recipe, full_like, not lora_bottom)
        layers_less_t, layers_less_ts, layers_less_b, layers_less_c = lt, lts, lb, lc
        bottom_less_t, bottom_less_ts, bottom_less_b, bottom_less_c = bt, bts, bb, bc
    elif lora_bottom:
        # (a trained embedding copy, LoRA on the embedding or trained token rows give layer 0's input a gradient;
        # adaption prompt:
        # the lowest adapted layer's input, below which nothing is trained)
        drop_t, drop_ts = _activations.input_grad_drop(dense_m, t, recipe, layer_fn)
        bottom_less_t += drop_t
        bottom_less_ts += drop_ts
        layers_less_t += drop_t
        layers_less_ts += drop_ts
    # Layers below the first trainable one save nothing when their inputs need no gradient
    # (frozen embeddings): autograd records no graph there. LoRA adapts every layer, unless --lora-layers.
    saving_layers = trained_layers if t.method == "freeze" else n_layers
    lora_idle = (0, 0, 0, 0)
    if _lora_layers.active(t):
        # LoRA on some layers (peft layers_to_transform, core/lora_layers.py). Without checkpointing the layers below
        # the lowest adapted one record no graph (their input and weights need no gradient), the lowest saves LoRA's
        # bottom set (lora_bottom above), and an unadapted layer above it saves a frozen layer's set, what its
        # input's gradient needs (derivatives.yaml: the frozen Linears save no input; the norms, attention and
        # activation save theirs). With checkpointing, enable_input_require_grads gives every layer's input a
        # gradient: all keep their inputs, and the backward reruns the unadapted bottom layer with a frozen set.
        from dataclasses import replace as _replace

        frozen_layer = layer_fn(dense_m, _replace(t, method="freeze", freeze_layers=0, lora_layers=(), dora=False),
                                recipe, trainable_weights=False)
        idle_t = per_layer_t - sum(x.per_token for x in frozen_layer.terms if not x.batch1_only)
        idle_ts = per_layer_ts - sum(x.per_token_seq for x in frozen_layer.terms)
        idle_c = sum(x.const for x in layer.terms) - sum(x.const for x in frozen_layer.terms)
        if lora_bottom:
            saving_layers = n_layers - _lora_layers.lowest(t)
        idle = saving_layers - len(t.lora_layers)  # unadapted layers that record a graph
        layers_less_t += idle * idle_t
        layers_less_ts += idle * idle_ts
        layers_less_c += idle * idle_c
        if not lora_bottom and _lora_layers.lowest(t) > 0:  # the bottom layer rerun (or kept) is an unadapted one
            bottom_less_t += idle_t
            bottom_less_ts += idle_ts
            bottom_less_c += idle_c
        if not lora_bottom:  # checkpointing: the top layer's rerun is an unadapted one's unless it is adapted
            lora_idle = (idle_t, idle_ts, idle_c, n_layers - 1 - max(t.lora_layers))
    unfrozen_below = 0
    if unfrozen:
        # A named layer set (core/unfrozen.py), as --lora-layers' above with trained layers for adapted ones: without
        # checkpointing and with a frozen embedding the layers below the lowest trained one record no graph and the
        # lowest saves its set without an input gradient (its weights' gradients still need their inputs:
        # derivatives.yaml mm); a frozen layer above it saves what its input's gradient needs. A trained embedding
        # (or a tied head) gives every layer's input a gradient, and with checkpointing enable_input_require_grads
        # (modeling_utils.py _activation_checkpointing_enable) does: every layer records a graph (keeps its input).
        live_input = t.grad_checkpointing or "embed_tokens" in outer_trained
        frozen_layer = layer_fn(dense_m, t, recipe, trainable_weights=False)
        idle_t = per_layer_t - sum(x.per_token for x in frozen_layer.terms if not x.batch1_only)
        idle_ts = per_layer_ts - sum(x.per_token_seq for x in frozen_layer.terms)
        idle_c = sum(x.const for x in layer.terms) - sum(x.const for x in frozen_layer.terms)
        saving_layers = n_layers if live_input else n_layers - min(trained) if trained else 0
        idle = saving_layers - len(trained)  # frozen layers that record a graph
        layers_less_t += idle * idle_t
        layers_less_ts += idle * idle_ts
        layers_less_c += idle * idle_c
        if trained and not live_input:  # the lowest trained layer: its input needs no gradient
            drop_t, drop_ts = _trained_bottom_drop(layer_fn, dense_m, t, recipe, per_layer_t, per_layer_ts)
            bottom_less_t += drop_t
            bottom_less_ts += drop_ts
            layers_less_t += drop_t
            layers_less_ts += drop_ts
        elif saving_layers and 0 not in trained:  # the bottom layer kept (or rerun) is a frozen one
            bottom_less_t += idle_t
            bottom_less_ts += idle_ts
            bottom_less_c += idle_c
        if m.family == "llama4" and not trained and live_input:
            # the frozen-language-model stand-in (memory/frozen_lm.py: only the embedding trained, every layer frozen
            # with its input needing a gradient) on Llama 4: frozen_layer is a MoE RoPE layer's set; the dense layers
            # (Maverick's every other one) save a dense MLP's and the NoPE layers no L2 q/k norm's, as for a trained
            # stack above (measured with the tracer, --grid vlmfreeze Maverick 4 layers no-gc: +4.67 % without)
            from dataclasses import replace as _replace_l4

            kinds = ((n_dense, dense_mlp_spec(m)) if n_dense else (0, m),
                     (sum(1 for i in range(n_layers) if m.nope_layer_interval and (i + 1) % m.nope_layer_interval == 0
                          and (i + 1) % max(m.moe_layer_interval, 1) == 0),
                      _replace_l4(m, qk_l2_norm=False, attention_chunk_size=0)))
            for count, kind_m in kinds:
                if not count:
                    continue
                kind = layer_fn(kind_m, t, recipe, trainable_weights=False)
                layers_less_t += count * (sum(x.per_token for x in frozen_layer.terms if not x.batch1_only)
                                          - sum(x.per_token for x in kind.terms if not x.batch1_only))
                layers_less_ts += count * (sum(x.per_token_seq for x in frozen_layer.terms)
                                           - sum(x.per_token_seq for x in kind.terms))
                layers_less_c += count * (sum(x.const for x in frozen_layer.terms)
                                          - sum(x.const for x in kind.terms))
        if live_input and trained:  # the frozen layers below the lowest trained one (LISA's moment, memory/lisa.py)
            unfrozen_below = min(trained)
        if t.grad_checkpointing and trained:  # the top layer's rerun is a frozen one's unless it is trained
            lora_idle = (idle_t, idle_ts, idle_c, n_layers - 1 - max(trained))
    if t.method == "adaption-prompt" and not t.grad_checkpointing:  # only its top layers record a graph
        saving_layers = peft_methods.adaption_layers(m, t)
    if t.method == "freeze" and trained_layers == 0 and not unfrozen:
        saving_layers = 0
    if _badam.active(t):
        # BAdam's worst block is the bottom layer (memory/badam.py): every layer above it records a graph, frozen,
        # saving what its input's gradient needs; without checkpointing the bottom layer's own input (the frozen
        # embedding's output) needs none. (The layer trained is counted at the top; the layers are alike.)
        frozen_layer = layer_fn(m, t, recipe, trainable_weights=False)
        saving_layers = n_layers
        layers_less_t += frozen * (per_layer_t - sum(x.per_token for x in frozen_layer.terms if not x.batch1_only))
        layers_less_ts += frozen * (per_layer_ts - sum(x.per_token_seq for x in frozen_layer.terms))
        if not t.grad_checkpointing and not t.activation_offload:
            drop_t, drop_ts = _trained_bottom_drop(layer_fn, m, t, recipe, per_layer_t, per_layer_ts)
            bottom_less_t += drop_t
            bottom_less_ts += drop_ts
            layers_less_t += drop_t
            layers_less_ts += drop_ts
    lisa_frozen_t = lisa_frozen_ts = 0
    if t.method == "freeze" and (m.tie_word_embeddings or _lisa.active(t)) and t.train_head and frozen \
            and not t.grad_checkpointing and not unfrozen:
        # A head tied to the embedding: training the head trains the embedding, so every frozen layer's input needs
        # a gradient and the frozen layers save their input-gradient set (measured with the tracer: a tiny Mamba
        # config with 2 of 4 layers frozen was -36 % under with only the trained layers saving; qwen2.5-0.5b with
        # 16 of 24 layers frozen, b2 s256 bf16, -7.32 %, now +0.00 %). With checkpointing the frozen layers keep only
        # their inputs, which the checkpointed count already holds. LISA trains the embeddings (memory/lisa.py): the
        # same.
        frozen_t = sum(x.per_token for x in layer_fn(m, t, recipe, trainable_weights=False).terms)
        saving_layers = n_layers
        layers_less_t += frozen * (per_layer_t - frozen_t)
    if _lisa.active(t) and frozen:
        # LISA (memory/lisa.py): the trained embedding gives every layer's input a gradient, so every layer records
        # a graph (under checkpointing, keeps its input); the bottom layer is a frozen one, saving (or recomputing)
        # only what its input's gradient needs
        frozen_layer = layer_fn(m, t, recipe, trainable_weights=False)
        saving_layers = n_layers
        lisa_frozen_t = sum(x.per_token for x in frozen_layer.terms if not x.batch1_only)
        lisa_frozen_ts = sum(x.per_token_seq for x in frozen_layer.terms)
        bottom_less_t += per_layer_t - lisa_frozen_t
        bottom_less_ts += per_layer_ts - lisa_frozen_ts
    # RoPE cos/sin are computed once per forward and shared by all layers (LlamaRotaryEmbedding); ModernBERT
    # computes a pair per layer type (ModernBertModel.forward: global and local thetas).
    # (DeBERTa has no rotary tables either: its relative positions are shared_terms below, memory/deberta.py)
    once_t = 0 if m.learned_position_embeddings or m.alibi or ssm or _deberta.is_deberta(m) \
        or _jamba.is_jamba(m) or _nemotron_h.is_nemotron_h(m) else 2 * c * head_dim(m)
    if _hybrid.is_layered_hybrid(m):  # Bamba: partial_rotary_factor 0.5 (BambaRotaryEmbedding: cos, sin of head_dim/2)
        once_t = c * head_dim(m) if m.attention_layers else 0
        if m.family == "granitemoehybrid":  # position_embedding_type "nope": rotary_emb None (the reader refuses rope)
            once_t = 0
    if _zamba2.is_zamba2(m):  # Zamba2: RoPE only with use_mem_rope; the embeddings' clone under checkpointing
        once_t = _zamba2.once_per_token(m, t, recipe)
    if m.family == "modernbert" and m.sliding_window_layers:
        once_t *= 2
    if m.family == "gpt_oss":  # GptOssRotaryEmbedding returns cos, sin of head_dim / 2 (_apply_rotary_emb chunks)
        once_t = c * head_dim(m)
    once_ts = 0
    if _activations.local_mask(m, t) and n_layers > (m.sliding_window_layers or 0):
        # the global layers take no mask: they save none (memory/activations.py layer_activations); layer 0 is one
        n_global = n_layers - (m.sliding_window_layers or 0)
        mask_ts = sum(x.per_token_seq for x in layer.terms if "sliding-window mask" in x.name)
        layers_less_ts += n_global * mask_ts
        bottom_less_ts += mask_ts
    fp32_stream = _upcast_norms.fp32_residual(m, t, recipe)
    leaf = fp32_stream and t.grad_checkpointing and not full_like
    if m.embedding_norm and (full_like or _encoder.embedding_output_grad(m, t) or leaf):
        # BLOOM's word_embeddings_layernorm: saves its input, mean and rstd when the embedding or its own
        # weight is trained (LoRA: neither, so nothing); under the Trainer's autocast over 16-bit weights its fp32
        # cast of the input (layer_norm on autocast's fp32 list), and with LoRA and checkpointing, whose
        # enable_input_require_grads makes the 16-bit embedding output a leaf that needs a gradient, that leaf too,
        # held by its AccumulateGrad node (measured with the tracer's live tensors, --grid amp16: bloom-560m cut,
        # LoRA all-linear autocast-bf16 b2 s1024 with checkpointing, a (2, 1024, 1024) bf16 embedding output and
        # its fp32 copy alive through the forward)
        once_t += (4 if recipe.autocast or recipe.compute == "fp32" or fp32_stream else c) * m.hidden_size + 8 \
            + (c * m.hidden_size if leaf else 0)
    if ssm:  # no attention, no mask
        pass
    elif _activations.local_mask(m, t):  # ModernBERT: the sliding layers' mask, built once per forward
        # sdpa: the 4-D bool mask (masking_utils.sdpa_mask); eager: eager_mask's copy in the compute dtype
        once_ts = c if t.attention == "eager" else 1
    elif (t.attention == "eager" or eager_only(m)) and not _encoder.is_encoder(m):  # encoders: no mask (encoder.py)
        once_ts = c  # the 4-D causal mask (masking_utils.eager_mask): c * rows * row * row
        if m.attention_chunk_size and m.nope_layer_interval:  # Llama 4: the chunked layers' mask beside it
            once_ts = 2 * c
        if m.family == "gpt_oss" and 0 < (m.sliding_window_layers or 0) < n_layers:
            # gpt-oss (modeling_gpt_oss.py GptOssModel.forward): causal_mask_mapping holds a full and a sliding-window
            # 4-D mask for the forward's length, both (rows, 1, s, s) in the compute dtype (the tracer: two
            # aten.where outputs alive through the step, --grid gptoss)
            once_ts = 2 * c

    elif masked_sdpa(t):
        once_ts = 1  # the packed 4-D bool mask (masking_utils.sdpa_mask): rows * row * row
    if m.dropout > 0:
        once_t += m.hidden_size  # embedding dropout mask
    once_ss = once_rel_c = 0
    if _deberta.is_deberta(m):  # the pairwise mask, relative positions and rel_embeddings (memory/deberta.py)
        shared = _deberta.shared_terms(m, t, recipe)
        once_t += sum(x.per_token for x in shared)
        once_ts += sum(x.per_token_seq for x in shared)
        once_ss = sum(x.per_seq_sq for x in shared)
        once_rel_c = sum(x.const for x in shared)
    residual = 4 if recipe.autocast or recipe.compute == "fp32" or (ssm and m.ssm_residual_fp32) or fp32_stream else c
    # Autocast caches 16-bit casts of fp32 weights for the whole forward; autograd keeps them for the
    # backward of each matmul (torch autocast_mode.cpp cached_cast; reentrant checkpointing drops them).
    autocast_copies = layer_copies = autocast_head_copy = bottom_cast_less = 0
    if recipe.autocast:
        linear_params = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m))
        if _qlora_fp32.active(t, recipe):  # 4-bit block Linears: no fp32 leaf weight to cast (memory/qlora_fp32.py)
            linear_params = 0
        if _qlora_fp32.int8_active(t, recipe):  # 8-bit: the int8 weight goes into MatMul8bitLt uncast (qlora_fp32.py)
            linear_params = 0
        # TRL's fused head (trl/kernels/chunked_logprob.py _ChunkedLogProbFunction) casts `weight[start:end]
        # .to(compute_dtype)` itself per vocabulary chunk, a `.to()` autocast does not cache: memory/loss.py
        # trl_head_bytes counts that chunk's copy, so no V x H copy here (measured with the tracer, --grid dpo32:
        # tinyllama amp-bf16 full DPO +1.9 % with it, one 32,000 x 2,048 bf16 head weight)
        fused_head = (_preference.is_preference(t) and not _preference.torchtune_head(t)) or _rl.is_rl(t) \
            or t.loss == "trl"
        if _encoder.vocab_head(m) and not fused_head:  # a classifier's encoder multiplies by no vocab-wide matrix
            linear_params += head_rows * m.hidden_size
            autocast_head_copy = dtype_bytes(recipe.compute) * head_rows * m.hidden_size
        autocast_copies = dtype_bytes(recipe.compute) * linear_params
        # one layer's own Linears' copies (the head's is made after the last layer and is not recomputed)
        layer_copies = (autocast_copies - autocast_head_copy) // n_layers
        if _distributed.sharding_stage(t) == 3:
            # Full sharding gathers one unit at a time (FSDP MixedPrecision / DeepSpeed gather the 16-bit
            # copy: torch fsdp _flat_param.py _use_unsharded_views; the saved views are freed with the
            # unit after forward and gathered again in backward), so the 16-bit copies alive are those of
            # the gathered units, not of the whole model (issue 18: 137 GB per GPU for a 70B LoRA before).
            # The gathered unit's own Linear and head weights (not a parameter share of every Linear: issue 19), and
            # for the layer recomputed or released last, its own Linears (within what is gathered at once).
            unit_cast, layer_cast = _distributed.gathered_cast_params(m, t, recipe)
            autocast_copies = min(autocast_copies, dtype_bytes(recipe.compute) * unit_cast)
            layer_copies = min(layer_copies, dtype_bytes(recipe.compute) * layer_cast, autocast_copies)
            autocast_head_copy = 0  # the gathered units' copies are not split by where the forward is
        if _fp8.active(t):
            # torchao Float8Linear never calls F.linear: no cached 16-bit copy of a swapped weight; the head's and
            # (tensorwise) the first nn.Linear's remain, that one in layer 0, the last released (memory/fp8.py)
            layer_copies = dtype_bytes(recipe.compute) * _fp8.kept_cast_params(m, t)
            autocast_copies = autocast_head_copy + layer_copies
        if unfrozen or (t.method == "freeze" and not _lisa.active(t) and not _badam.active(t)):
            # A named layer set (core/unfrozen.py) or the bottom layers frozen: autocast caches the cast of a leaf that
            # requires grad only (torch autocast_mode.cpp cached_cast), so the trained layers' casts live through the
            # forward; a frozen layer's cast lives only while autograd saves it for its input's gradient (mm saves the
            # other operand), i.e. in a layer that records a graph without checkpointing, and the head's while its
            # input needs a gradient (--grid unfrozen; --freeze-layers N is --train-layers N-top)
            live_casts = trained_layers if t.grad_checkpointing else saving_layers
            autocast_head_copy = autocast_head_copy if head_trainable or t.grad_checkpointing or saving_layers else 0
            autocast_copies = layer_copies * live_casts + autocast_head_copy
        if lora_bottom and t.method == "lora" and not t.dora and not _lora_layers.active(t) \
                and _plain_dense_decoder(m) and _distributed.sharding_stage(t) != 3 and not _fp8.active(t):
            bottom_cast_less = _bottom_unsaved_casts(m, t, recipe)
            autocast_copies -= bottom_cast_less
    elif recipe.autocast16 and t.method == "freeze":
        # --precision autocast-* freeze (memory/precision.py): only the trained parameters are fp32 leaves, so only
        # their casts are cached (torch autocast_mode.cpp cached_cast), through the forward; the frozen 16-bit
        # weights are not cast at all
        layer_copies = dtype_bytes(recipe.compute) * sum(lin.in_features * lin.out_features * lin.count
                                                         for lin in block_linears(m)) // n_layers
        autocast_head_copy = dtype_bytes(recipe.compute) * m.vocab_size * m.hidden_size if head_trainable else 0
        autocast_copies = layer_copies * trained_layers + autocast_head_copy
    # A layer's forward transient: the MLP's intermediates, or eager attention's unsaved 16-bit scores
    # (they are not alive at the same time). Under checkpointing nothing of the layer is kept, so the
    # scores softmax writes (the saved set's per-key terms) are transient too.
    attn_fwd_ts = layer.forward_transient.per_token_seq
    if t.grad_checkpointing or t.activation_offload:
        # the saved scores; offloaded, they are written on the GPU before their copy to the host (torchtune
        # OffloadActivations' stash), so they are a forward transient there too (issue 19: checkpointing on top
        # of offload looked 2.3 MB costlier at the last layer, deepseek-v2-lite LoRA eager 273 tokens)
        attn_fwd_ts += per_layer_ts
    # Gradient of the head (and final norm) appears at the start of backward; the rest layer by layer.
    reward = t.objective == "reward"  # a score head instead of lm_head (memory/reward.py)
    no_vocab = reward or not _encoder.vocab_head(m)  # an encoder's sequence classifier: no vocab-wide head either
    # (--precision autocast-* freeze: the trained parameters are fp32, so are their gradients: weights.py)
    grad_b = 4 if recipe.autocast16 and t.method == "freeze" else dtype_bytes(recipe.grad)
    g_head = head_rows * m.hidden_size * grad_b if head_trainable and full_like and not no_vocab else 0
    if head_trainable and not full_like and not reward:  # modules_to_save lm_head: the copy's gradient, its dtype
        # (the copy keeps the module's dtype: fp32 only after QLoRA's prepare_model_for_kbit_training, as
        # weights.py _with_copies stores it; plain LoRA's copy and its gradient are in the weights' dtype)
        g_head = m.vocab_size * m.hidden_size * (unquantized_bytes(t, recipe) if t.method == "qlora"
                                                 else dtype_bytes(recipe.weight))
    # Tied embeddings: the embedding's backward yields a second full-size gradient that is then added
    # into the head's (AccumulateGrad); gradient accumulation adds each new gradient the same way.
    # With tied embeddings both contributions meet in the engine's InputBuffer, which sums them out of
    # place (torch/csrc/autograd/input_buffer.cpp accumulate; observed as aten.add.Tensor on CPU and under
    # the tracer): the head's gradient, the embedding's and their sum coexist (2 beyond `gradients`).
    end_t = 0
    # (partial fine-tuning without the head, BAdam's included, trains neither the head nor the embedding: no such
    # gradient; measured with the tracer, --grid badam: qwen2.5-0.5b b1 s64 was +29 % with it)
    if full_like and trainable and (t.method == "full" or head_trainable or "embed_tokens" in outer_trained):
        tied = m.tie_word_embeddings and not no_vocab
        end_t = head_rows * m.hidden_size * grad_b * (2 if tied else 1)
    notes: list[str] = list(_ssm.notes(m, t)) + list(_hybrid.notes(m, t)) + list(_jamba.notes(m, t)) \
        + list(_zamba2.notes(m, t)) + list(_nemotron_h.notes(m, t))
    if m.family == "gpt_oss":
        notes.append(f"{m.name}: expert weights counted in the run's dtype, as transformers loads them to train "
                     "(Mxfp4Config(dequantize=True): the MXFP4 checkpoint, 4.25 bits per expert weight, is not what "
                     "is in memory); experts run transformers' default grouped_mm path (integrations/moe.py).")
    if m.family == "llama4":
        chunk = (f"its RoPE layers attend within {m.attention_chunk_size:,}-token chunks (a 4-D mask from that "
                 "length on under sdpa), " if m.attention_chunk_size else "")
        notes.append(f"{m.name}: Llama4TextMoe runs every token through all {m.num_experts} experts (torch.bmm, "
                     "scaled by the top-1 sigmoid router score, 0 for the others), so the MoE layers' activations grow "
                     f"with the expert count; {chunk}the language model only (Llama4ForCausalLM): the vision tower and "
                     "projector are not counted here (the -vision presets count them; memory/llama4v.py) "
                     "(transformers modeling_llama4.py).")
    if eager_only(m) and t.attention == "sdpa":
        notes.append(f"{m.name}: transformers has no SDPA attention for this model (BLOOM's ALiBi, Gemma 2's "
                     "softcapping, gpt-oss's attention sinks): counted as eager attention, with its per-key scores.")
    if t.grad_checkpointing:
        notes.append("gradient checkpointing: each layer keeps its input; one layer at a time is recomputed "
                     "in backward with its full activations"
                     + ("" if t.ac_early_stop else ", the rerun going on past its last saved tensor to the layer's "
                        "end (torch.utils.checkpoint early_stop=False; through down_proj's adapter path beside the "
                        "MLP's whole saved set, as the reentrant rerun)") + ".")
    if layer.int8_ctx_per_token:
        ck = ", also under non-reentrant checkpointing" if t.grad_checkpointing and not t.reentrant_gc else ""
        notes.append("8-bit QLoRA (bitsandbytes LLM.int8, threshold 6.0): each block Linear's input is kept until its "
                     f"backward (MatMul8bitLt's ctx{ck}), and its int8 matmul makes an fp16 input copy, int8 rows, "
                     "an int32 product and an fp16 output per row; the outlier columns (data-dependent) are not "
                     "counted."
                     + (" Over an fp32 load under autocast it runs in fp32: fp32 inputs kept (o_proj's 16-bit), fp32 "
                        "outputs and MLP intermediates, grad_A's weight dequantized to fp32, no autocast copy of the "
                        "int8 weights." if _qlora_fp32.int8_active(t, recipe) else ""))
    if recipe.autocast and _distributed.sharding_stage(t) == 3:
        notes.append("autocast under full sharding: the 16-bit weight copies alive are those of the gathered units "
                     "(FSDP / ZeRO-3 free them with the unit after forward), not of the whole model.")
    if t.ac_every > 1:
        notes.append(f"selective checkpointing: {wrapped_layers(n_layers, t.ac_every, t.ac_layout == 'hf')} of "
                     f"{n_layers} layers checkpointed (every {ordinal(t.ac_every)}, "
                     + ("from layer 0, transformers every_n_layers" if t.ac_layout == "hf" else
                        "torchtune ac_mode selective") + "); the others keep their activations.")
    if t.activation_offload:
        notes.append("activation offload: saved activations go to pinned host RAM (cpu_offload_bytes); in backward "
                     + ("the GPU holds the recomputed layer's input brought back and its rebuilt saved set "
                        if t.grad_checkpointing else
                        "the GPU holds one autograd node's tensors brought back beside the previous node's ")
                     + "(torchtune OffloadActivations).")
    if t.ac_offload:  # memory/savers.py _save_on_cpu_residency
        notes.append("ac offload: transformers' save_on_cpu around each checkpoint puts the checkpointed layers' "
                     "inputs in pinned host RAM (cpu_offload_bytes); in backward the GPU holds the recomputed "
                     "layer's input brought back and its rebuilt saved set.")
    notes += packing_notes(t)
    notes += fp32_math_sdpa_notes(m, t, recipe)
    notes += _unsloth.notes(m, t)
    notes += _liger.notes(m, t)
    notes += _axolotl_kernels.notes(m, t)
    if _router_aux.active(m, t):
        notes.append(_router_aux.note(m, t))
    trl_aux = _router_aux.trl_note(m, t)
    if trl_aux:
        notes.append(trl_aux)
    once_t += _peft_once_t(m, t, c)
    lora_head_t = lora_head_fwd_t = 0
    if t.dora and t.method in ("lora", "qlora"):
        dequantized = " (dequantized)" if t.method == "qlora" else ""
        notes.append(f"DoRA: a magnitude vector per adapted Linear; each one saves its base and adapter outputs, and "
                     f"its forward builds the weight norm from a full-size copy of the weight{dequantized}: "
                     f"{dora_forward_transient(m, t, recipe) / 1e9:.2f} GB of temporaries at the largest "
                     "(peft tuners/lora/dora.py).")
    if outer:  # LoRA on the embedding / LM head (peft tuners/lora/layer.py Embedding, Linear)
        a = dtype_bytes(t.adapter_dtype)
        if "embed_tokens" in outer:  # Embedding.forward: after_A = F.embedding(x, lora_A.T); @ lora_B.T saves it
            once_t += a * t.lora_rank
        if "lm_head" in outer:
            # Linear.forward on the head: lora_A saves the final hidden state cast to the adapter dtype (+ dropout's
            # mask), lora_B its (tokens x r) output; the logits then pass through `result + lora_B(..) * scaling`
            # in the adapter dtype and `.to(c)`: the 16-bit logits, the scaled product and the sum at once.
            lora_head_t = a * (m.hidden_size + t.lora_rank) + (m.hidden_size if t.lora_dropout > 0 else 0)
            # log_softmax's fp32 output (4 B x vocab, in head_saved_t) does not exist yet: at fp32 adapters (10 B - 4 B)
            # it equals the loss's own 16-bit + fp32 logits (measured with the tracer: tinyllama-1.1b, qwen2.5-0.5b).
            lora_head_fwd_t = (c + 2 * a - 4) * m.vocab_size
    token_head_t, token_head_c = peft_methods.tied_token_head_bytes(m, t, c)
    if peft_methods.token_rows(t):  # the trainable-tokens method, or LoRA's trainable_token_indices
        # The embedding's backward ends the step with a dense (vocab x hidden) gradient of the merged weight in the
        # compute dtype (embedding_dense_backward), before index_copy's backward picks the trained rows.
        end_t = m.vocab_size * m.hidden_size * c
    if t.method in peft_methods.TABLE:
        notes.append(peft_methods.note(m, t))
    elif peft_methods.token_rows(t):  # LoRA's trainable_token_indices
        notes.append(peft_methods.tokens_note(m, t))
    moe_grads = _moe_late_gradient_bytes(m, t, recipe)
    # (Llama 4's MoE block, whose bmm experts run every token, keeps its backward the layer's peak under eager
    # attention too: measured with the tracer, --grid llama4 eager with checkpointing)
    eager_attn = (t.attention == "eager" or eager_only(m)) and m.family != "llama4"
    # --freeze-layers with checkpointing: every layer records a graph and keeps its input (_frozen_rerun)
    frozen_rerun = _frozen_rerun(layer_fn, m, t, recipe, frozen, trained_layers, layer)
    kept_layers = n_layers if frozen_rerun else saving_layers
    # Checkpointed (not offloaded, every layer, all adapted): the layer's backward peak node with an adapter-dtype
    # LoRA on down_proj (activations.py layer_activations, checkpointed_backward_per_token)
    ck_bwd_t = layer.checkpointed_backward_per_token if (
        layer_fn is layer_activations and _plain_dense_decoder(m) and not t.activation_offload and t.ac_every <= 1
        and not _lora_layers.active(t)) else 0
    return _ActivationPlan(
        n_layers=n_layers, saving_layers=saving_layers, checkpointing=t.grad_checkpointing,
        per_layer_t=per_layer_t, per_layer_ts=per_layer_ts, once_t=once_t, once_ts=once_ts,
        head_saved_t=head.saved + token_head_t + lora_head_t, int8_rerun_t=int8_rerun_t,
        int8_rerun_down_t=int8_rerun_down_t,
        int8_wrapped_t=(layer.int8_ctx_per_token if t.grad_checkpointing and not t.reentrant_gc and t.ac_every > 1
                        else 0),
        # (8-bit QLoRA under non-reentrant checkpointing: each layer's Linear8bitLt inputs, held as MatMul8bitLt ctx
        # attributes out of reach of the saved-tensor hooks, stay with the checkpoint; activations.py INT8_CTX)
        kept_t=kept_layers * (residual * m.hidden_size
                              + (layer.int8_ctx_per_token if t.grad_checkpointing and not t.reentrant_gc else 0)),
        autocast_copies=autocast_copies, layer_copies=layer_copies, autocast_head_copy=autocast_head_copy,
        bottom_cast_less=bottom_cast_less,
        emb_local_t=residual * m.hidden_size if bottom_cast_less and _activations.saves_residual(m, recipe) else 0,
        frozen_casts=recipe.autocast and t.method not in ("full", "freeze"),
        attn_fwd_ts=attn_fwd_ts, layer_fwd_t=layer.forward_transient.per_token,
        layer_fwd_moe_c=layer.forward_transient.const,
        attn_fwd_t=layer.attention_forward_per_token,
        mlp_fwd_ts=layer.mlp_forward_per_token_seq,
        layer_ck_fwd_t=layer.checkpointed_forward_per_token if t.grad_checkpointing else 0,
        layer_bwd_t=ck_bwd_t or layer.backward_transient.per_token, layer_bwd_ts=layer.backward_transient.per_token_seq,
        loss_fwd_t=max(head.forward_transient, lora_head_fwd_t), loss_bwd_t=head.backward_transient, g_head=g_head,
        end_t=end_t,
        end_tied=(m.tie_word_embeddings and not no_vocab) or peft_methods.token_rows(t) > 0,
        notes=tuple(notes),
        loss="logits-dpo" if _preference.torchtune_head(t) else "trl" if _preference.is_preference(t)
        or _rl.is_rl(t) else "reward" if reward
        else "logits" if _preference.is_reference_free(t) else "online" if _online_dpo.is_online_dpo(t)
        else "ppo" if t.objective == "ppo"
        # Liger's cross-entropy keeps transformers' head and logits: head_activations' own transients (hf's moments)
        else "hf" if t.loss == "liger-cross-entropy" else t.loss, loss_chunks=t.loss_chunks,
        liger_ce=t.loss == "liger-cross-entropy", loss_compiled=_compiled.active(m, t) and t.loss == "chunked",
        norm_saved_t=c * m.hidden_size + 4 if whole_compiled
        else head.saved - (c * m.hidden_size if head_trainable else 0) - 4 * m.vocab_size
        - (c * m.vocab_size if m.family == "gemma2" else 0),
        head_trainable=head_trainable, vocab=m.vocab_size, hidden=m.hidden_size, compute=c,
        ac_every=t.ac_every, ac_from_first=t.ac_layout == "hf", offload=t.activation_offload,
        ac_offload=t.ac_offload, layer_input_t=residual * m.hidden_size,
        rerun_input_saved_t=residual * m.hidden_size if _activations.saves_residual(m, recipe)
        or _activations.layernorm_saves_input(m, t, recipe) else 0,
        input_leaf_t=residual * m.hidden_size if t.grad_checkpointing and t.method != "full"
        and m.learned_position_embeddings and _activations.layernorm_saves_input(m, t, recipe) else 0,
        offload_leaf_t=residual * m.hidden_size if (t.activation_offload or t.ac_offload) and t.grad_checkpointing
        and t.method != "full" else 0,
        # (a layer that does not split its norm's backward out, Mamba's mixer: its whole backward transient; 0 left the
        # scan's backward temporaries out of an offloaded Mamba step, found by tests/test_properties.py)
        offload_bwd_t=layer.backward_no_norm_per_token or layer.backward_transient.per_token,
        # (measured with the tracer, --grid offload-nogc: the Qwen3-MoE toy full b1 s1024, the peak at the bottom
        # layer's q_norm backward with both layers' expert gradients and every one but q/k/v_proj's and the
        # embedding's; -4.5 % with the experts' counted late)
        # (LoRA on the experts: their adapters' gradients counted late as before; measured, the Qwen3-MoE toy LoRA
        # all-linear b2 s1024 was +4.5 % with them made)
        **({"offload_norm_made_g": 0 if eager_attn or t.method != "full" else moe_grads,
            # (a dense layer: the query norm's node runs after v_proj's and k_norm / k_proj's, so only q_proj's gradient
            # is not made there; measured with the tracer, the Qwen3 toy full b1 s1024: the bottom q_norm node with
            # k_proj's and v_proj's gradients alive, -1.0 % with them counted late)
            "offload_norm_unmade_g": dtype_bytes(recipe.grad) * sum(
                lin.in_features * lin.out_features for lin in block_linears(m)
                if lin.module in (("q_proj", "k_proj", "v_proj") if m.num_experts else ("q_proj",)))
            if m.qk_norm and t.method == "full" else 0}
           if t.activation_offload and not t.grad_checkpointing else {}),
        **_offload_layer_gradients(m, t, recipe),
        **(offload_node_bytes(layer.terms, norm_width=max(m.hidden_size, m.num_attention_heads * head_dim(m))
                              if m.qk_norm else m.hidden_size, residual=residual,
                              hidden=m.hidden_size, rmsnorm=m.norm == "rmsnorm",
                              weight_copy=0 if t.method == "qlora" else max(dtype_bytes(recipe.compute)
                              * max((lin.in_features * lin.out_features for lin in block_linears(m)), default=0),
                                                                            _offloaded_expert_stack(m, t, recipe)),
                              product_back=_offload_product_back(m, t, c))
           if t.activation_offload and not t.grad_checkpointing else {}),
        # (HF checkpointing, full fine-tuning of a dense decoder: the checkpoint keeps the bottom layer's input through
        # its backward as every layer's, the embedding's output; measured with the tracer, see
        # _dense_late_gradient_bytes: one hidden-wide activation per token at the bottom peak)
        bottom_input_t=residual * m.hidden_size * (2 if t.activation_offload else 1)
        if unsloth and t.grad_checkpointing else residual * m.hidden_size
        if t.grad_checkpointing and not t.activation_offload and not t.ac_offload  # (--ac-offload: the copy back only)
        and _dense_late_gradient_bytes(m, t, recipe, layer=True)
        else frozen * residual * m.hidden_size if frozen_rerun else 0,  # (the frozen layers' inputs below it)
        prompt_len=t.prompt_len, residual=residual, head_weight=dtype_bytes(recipe.weight),
        reference=None if _rl.is_rl(t) else _online_dpo.reference_plan(m, t, recipe)
        if _online_dpo.is_online_dpo(t) or _preference.torchtune_head(t) else _preference.reference_plan(m, t, recipe),
        rl=_rl.plan(m, t, recipe, autocast_copies),
        reward=_reward_scoring.scoring_plan(t, recipe),
        logits_bytes=_preference.logits_bytes(recipe), chosen_nll=_preference.computes_nll(t),
        head_copy=c * head_rows * m.hidden_size if recipe.autocast else 0,
        extra_seq=peft_methods.extra_sequence(t), per_layer_b=sum(x.per_sample for x in layer.terms),
        per_layer_c=sum(x.const for x in layer.terms), per_layer_ss=sum(x.per_seq_sq for x in layer.terms),
        once_ss=once_ss, once_rel_c=once_rel_c,
        attn_fwd_less_t=layer.after_attention_per_token,
        attn_div_ts=layer.forward_transient.per_token_seq if _deberta.is_deberta(m)
        else layer.rerun_scores_per_token_seq,
        attn_div_t=layer.rerun_scores_per_token,
        **({} if t.grad_checkpointing or t.activation_offload else
           # (gpt-oss: `attn_weights + attention_mask` saves neither mask, so without checkpointing both die with
           # the forward: the tracer's live tensors at the loss backward hold no aten.where output, --grid gptoss)
           {"fwd_only_ts": once_ts if _deberta.is_deberta(m) or m.family == "gpt_oss" else 0, "fwd_only_ss": once_ss,
            "fwd_only_c": once_rel_c,
            # (the masks are GptOssModel.forward's locals: freed when it returns, before lm_head and the loss run)
            "loss_less_ts": once_ts if m.family == "gpt_oss" else 0}),
        once_b=peft_methods.prompt_encoder_saved_per_sample(m, t),
        once_c=_unsloth.weight_buffer_bytes(m, t, recipe),
        layer_bwd_c=layer.backward_transient.const + (layer.checkpointed_backward_const if ck_bwd_t else 0),
        head_saved_c=token_head_c,
        layer_mlp_saved_t=layer.mlp_saved_per_token, layer_mlp_tail_t=layer.mlp_tail_per_token,
        layer_mlp_saved_c=layer.mlp_saved_const, layer_attn_bwd_c=layer.attn_backward_const,
        layer_attn_bwd_grads_c=layer.attn_backward_grads_const,
        rerun_end_t=layer.rerun_end_per_token,
        layer_routed_bwd_t=layer.routed_backward_per_token,
        layer_mlp_fwd_t=layer.mlp_forward_per_token, layer_fwd_unmade_t=layer.forward_unmade_per_token,
        layer_fwd_c=dora_forward_transient(m, t, recipe),
        layer_fwd_c_t=layer.dora_norm_per_token - (0 if t.grad_checkpointing else layer.dora_norm_unmade_per_token),
        lora_head_t=lora_head_t,
        fp8_casts=_fp8.casts(m, t, recipe),
        fp8_unmade_grads=_fp8.unmade_gradient_params(m, t) * _grad_elem(t, recipe),
        **({} if unsloth else dict(zip(("dequant_fwd", "dequant_bwd"),
                                       dequant_bytes(m, t, recipe, quantized_linears(m)), strict=True))),
        bottom_less_t=bottom_less_t, bottom_less_ts=bottom_less_ts, batch1_t=batch1_t,
        **dict(zip(("idle_less_t", "idle_less_ts", "idle_less_c", "top_idle_layers"), lora_idle, strict=True)),
        layers_less_t=layers_less_t, layers_less_ts=layers_less_ts, layers_less_c=layers_less_c,
        bottom_less_c=bottom_less_c, layers_less_b=layers_less_b, bottom_less_b=bottom_less_b,
        router_aux=_router_aux.plan_bytes(m, t, recipe),
        recompute_bottom=_ssm.is_mamba2(m) or _nemotron_h.recompute_bottom(m) or _zamba2.is_zamba2(m)
        or (_hybrid.is_hybrid(m) and not _hybrid.is_layered_hybrid(m)),  # Falcon-H1 (memory/hybrid.py)
        **(_hybrid.lowest_mixer_rerun(m, t, recipe) | _nemotron_h.lowest_mixer_rerun(m, t, recipe)
           if (full_like or (m.family == "granitemoehybrid" and t.method in ("lora", "qlora"))) and t.grad_checkpointing
           and not _distributed.is_parallel(t) else {}),
        # a MoE layer's expert gradients (full or its adapters'): under eager attention the layer's peak is the
        # attention's backward, after them; otherwise it is inside the MoE block's backward, before them
        top_layer_grads=moe_grads if t.method == "full" and eager_attn else 0,
        falcon_lt=_falcon_freeze_lowest(layer_fn, m, t, recipe, layer, per_layer_t, per_layer_ts, frozen,
                                        saving_layers == n_layers and trained_layers > 0),
        lisa_below=frozen if _lisa.active(t) else unfrozen_below,
        lisa_frozen_t=lisa_frozen_t or (per_layer_t - idle_t if unfrozen_below else 0),
        lisa_frozen_ts=lisa_frozen_ts or (per_layer_ts - idle_ts if unfrozen_below else 0),
        late_grads=_dense_late_gradient_bytes(m, t, recipe)
        + ((_encoder.late_gradient_bytes(m, t, recipe) + _ssm.late_gradient_bytes(m, t, recipe)
                    + _hybrid.late_gradient_bytes(m, t, recipe) + _jamba.late_gradient_bytes(m, t, recipe)
                    + _nemotron_h.late_gradient_bytes(m, t, recipe) + _lisa.late_gradient_bytes(m, t, recipe)
                    + _unfrozen_late_gradient_bytes(m, t, recipe)
                    if full_like else 0) + _zamba2.late_gradient_bytes(m, t, recipe)
        + (0 if eager_attn else moe_grads) if not _distributed.is_parallel(t) else 0),
        **frozen_rerun,
        bottom_layer_grads=_dense_late_gradient_bytes(m, t, recipe, layer=True)
        + _freeze_bottom_gradient_bytes(m, t, recipe, trained_layers)
        + (_hybrid.layer_gradients_before_mixer(m, t, recipe) if not _distributed.is_parallel(t) else 0),
        **(_hybrid.bottom_mixer_node(m, t, recipe) if not _distributed.is_parallel(t) else {}),
        **_mlp_node(m, t, recipe, layer),
        # (the five fp32 hidden-wide tensors of an RMSNorm's backward: activations.py norm_bwd)
        **({"final_norm_saved_t": 4 * m.hidden_size, "final_norm_bwd_t": 5 * 4 * m.hidden_size}
           if t.method == "full" and m.norm == "rmsnorm" and m.final_norm and _plain_dense_decoder(m) and not liger
           and not _unsloth.norm_active(m, t) and not whole_compiled else {}),
        # (the embedding's backward, last, writes its gradient beside the incoming one: measured with the tracer,
        # see _dense_late_gradient_bytes: one residual-stream tensor per token at embedding_dense_backward)
        end_in_t=residual * m.hidden_size if _dense_late_gradient_bytes(m, t, recipe) else 0,
    )


def _trained_bottom_drop(layer_fn: Any, m: ModelSpec, t: TrainingSpec, recipe: Recipe, per_layer_t: int,
                         per_layer_ts: int) -> tuple[int, int]:
    """What a trained layer whose input needs no gradient (the bottom one with a frozen embedding, no checkpointing)
    saves less than a trained layer, per token and per token x seq (layer_activations input_grad=False)."""
    bottom = layer_fn(m, t, recipe, trainable_weights=True, input_grad=False)
    return (per_layer_t - sum(x.per_token for x in bottom.terms if not x.batch1_only),
            per_layer_ts - sum(x.per_token_seq for x in bottom.terms))


def _unfrozen_late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """--train-modules embed_tokens (core/unfrozen.py), untied: the embedding's gradient is written last
    (aten.embedding_dense_backward, after the bottom layer's backward), as LISA's (memory/lisa.py)."""
    if not _unfrozen.active(t) or m.tie_word_embeddings or "embed_tokens" not in _unfrozen.outer_modules(m, t):
        return 0
    return (m.vocab_size or 0) * (m.hidden_size or 0) * dtype_bytes(recipe.grad)


def _dense_late_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe, layer: bool = False) -> int:
    """Full fine-tuning of a dense decoder: the gradients written after the bottom layer's backward peak. The
    untied embedding's (aten.embedding_dense_backward, and a learned position table's, run last) and, with `layer`,
    the bottom layer's own: its weight gradients are written one Linear at a time through its backward (torch
    autograd's AccumulateGrad per parameter), so at its peak it holds what the top layer holds at its own (down_proj's
    only, which _mlp_node adds back to both). Measured with the tracer: tinyllama-1.1b cut to 4 layers full with
    checkpointing and the cut loss, b1 s2048: the bottom peak is the top's + 3 layers' gradients - 3 kept inputs,
    exactly (+8.4 % with every gradient counted there)."""
    from vramcalc.core.params import inventory

    # (data parallelism alone keeps this order: accelerate's DistributedDataParallelKwargs gradient_as_bucket_view
    # False, so AccumulateGrad still writes each .grad and the reducer copies it into its bucket; sharding and
    # offloading write gradients elsewhere: not modelled here)
    if t.zero or t.fsdp not in ("none", "no-shard") or t.offload != "none":
        return 0
    if _lisa.active(t) or _badam.active(t) or _unfrozen.active(t):  # partial training: their own late gradients
        return 0
    if t.method != "full" or not _plain_dense_decoder(m):
        return 0
    tensors = inventory(m)
    if layer:
        return sum(x.numel for x in tensors if x.per_layer) // m.num_layers * dtype_bytes(recipe.grad)
    return sum(x.numel for x in tensors if x.kind == "position"
               or (x.kind == "embedding" and not m.tie_word_embeddings)) * dtype_bytes(recipe.grad)


def _mlp_node(m: ModelSpec, t: TrainingSpec, recipe: Recipe, layer: Any) -> dict[str, int]:
    """Full fine-tuning of a dense decoder: a trained layer's backward peaks at its gated MLP's product node, which runs
    after down_proj's backward: down_proj's saved input is freed (activations.py mlp_node_freed_per_token) and its
    weight gradient (and bias's) written by its AccumulateGrad node; under autocast the 16-bit copy of its weight that
    the mm saved is freed too. Measured with the tracer's live tensors, --grid gc-offload: toy Qwen2.5 (hidden 256,
    MLP 704) full pure-bf16 with offloaded checkpointing b2 s1024 and the cut loss, the peak at the bottom layer's
    act(gate) * up backward: the two upper layers' gradients and down_proj's (256, 704) 16-bit one, 360,448 B, beside
    the recomputed set less down_proj's (2, 1024, 704) input, 2,883,584 B (+5.44 % with the input and without the
    gradient; at tinyllama's hidden 2,048 and 2,048 tokens the two are the same bytes). --grid eager32: qwen2.5-0.5b
    full amp-bf16 eager b2 s512 without checkpointing, the peak at the top layer's act(gate) * up backward: its
    down_proj's fp32 gradient (896, 4864), 17,432,576 B, made, and its (896, 4864) bf16 cast, 8,716,288 B, gone with
    its (2, 512, 4864) input (+0.85 % with the cast counted, +0.21 % without)."""
    from vramcalc.core.params import inventory

    # (a frozen gelu_new MLP under autocast, activations.py act_node: fc_out's lora_A / lora_B inputs and its weight's
    # cast freed, its adapters' gradients written, the node's own temporaries)
    act_node = bool(layer.mlp_node_backward_per_token) and _plain_dense_decoder(m)
    if _fp8.active(t) or not (act_node or (layer.mlp_node_freed_per_token
                                           and _dense_late_gradient_bytes(m, t, recipe, layer=True))):
        return {}
    down = [x for x in inventory(m) if x.per_layer and x.module == "down_proj"]
    cast = sum(x.numel for x in down if x.kind == "linear") // m.num_layers * dtype_bytes(recipe.compute) \
        if recipe.autocast else 0
    if act_node:
        return {"mlp_node_freed_t": layer.mlp_node_freed_per_token, "mlp_node_cast": cast,
                "mlp_node_grads": layer.mlp_node_grads, "mlp_node_bwd_t": layer.mlp_node_backward_per_token}
    return {"mlp_node_freed_t": layer.mlp_node_freed_per_token, "mlp_node_cast": cast,
            "mlp_node_grads": sum(x.numel for x in down) // m.num_layers * dtype_bytes(recipe.grad)}


def _bottom_unsaved_casts(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """LoRA under autocast over fp32 weights without checkpointing: layer 0's input (the frozen embedding's output)
    needs no gradient, and autocast caches the 16-bit cast of a weight that requires grad only (torch autocast_mode.cpp
    cached_cast), so a frozen Linear whose input needs no gradient records no mm and its cast is freed at once. The
    Linears reading the layer's input (q / k / v, and a parallel block's MLP up-projections), o_proj when no attention
    input is adapted, a sequential MLP's when nothing of the attention is, and down_proj when nothing before it is.
    Measured with the tracer's live tensors, --grid amp: gpt-j-6b cut to 4 layers and a 2,048-token vocabulary, LoRA
    all-linear amp-bf16 b2 s1024: layer 0 holds only its o_proj and fc_out casts (q, k, v and fc_in's (4096, 4096) and
    (16384, 4096) bf16 casts, 234,881,024 B, counted before: +2.97 %)."""
    from vramcalc.core.params import resolve_targets

    adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
    attn_in, mlp_in = {"q_proj", "k_proj", "v_proj", "qkv_proj"}, {"gate_proj", "up_proj", "gate_up_proj"}
    attn_grad = bool(adapted & attn_in)
    mlp_in_grad = not m.parallel_residual and (attn_grad or "o_proj" in adapted)
    down_grad = mlp_in_grad or bool(adapted & mlp_in)
    unsaved = attn_in | (set() if attn_grad else {"o_proj"}) | (set() if mlp_in_grad else mlp_in) \
        | (set() if down_grad else {"down_proj"})
    assert m.num_layers
    return dtype_bytes(recipe.compute) * sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m)
                                             if lin.module in unsaved) // m.num_layers


def _plain_dense_decoder(m: ModelSpec) -> bool:
    """A dense decoder of alike layers (no MoE, vision tower, SSM / hybrid mixer, encoder or classic net): the one
    the bottom layer's gradient order below was measured on."""
    from vramcalc.core.params import is_hybrid, is_jamba, is_nemotron_h, is_zamba2
    from vramcalc.core.vocab import CLASSIC_FAMILIES

    return bool(m.has_architecture and m.num_layers and not m.decoder_layers and not m.num_experts
                and m.vision is None and not m.ssm_state_size and m.family not in CLASSIC_FAMILIES
                and not _encoder.is_encoder(m) and not is_jamba(m) and not is_hybrid(m) and not is_nemotron_h(m)
                and not is_zamba2(m))


def _frozen_rerun(layer_fn: Any, m: ModelSpec, t: TrainingSpec, recipe: Recipe, frozen: int, trained_layers: int,
                  layer: Any) -> dict[str, Any]:
    """--freeze-layers N of a dense decoder with checkpointing: transformers 5 enables the input's gradient
    (modeling_utils.py _activation_checkpointing_enable: enable_input_require_grads for input_ids models), so once the
    lowest trained layer's backward is done the frozen layers below are rerun and backpropagated for their inputs'
    gradients, every trained gradient made, no autocast cast cached (their weights need no gradient). Measured with the
    tracer: tinyllama-1.1b cut to 4 layers, 2 frozen, autocast-bf16 b1 s512 with checkpointing: the peak at layer 1's
    recomputed MLP with every gradient alive."""
    if t.method != "freeze" or not t.grad_checkpointing or t.activation_offload or t.ac_every > 1 or frozen <= 0 \
            or trained_layers <= 0 or _lisa.active(t) or _badam.active(t) or _unfrozen.active(t) \
            or not _plain_dense_decoder(m):
        return {}
    idle = layer_fn(m, t, recipe, trainable_weights=False)
    # (amp-*: the frozen fp32 weights' 16-bit casts are not cached but the rerun's matmuls save them for the input's
    # gradient, torch autocast_mode.cpp cached_cast; autocast-*: the frozen weights are 16-bit already, no cast)
    return {"frozen_rerun": frozen, "frozen_casts_saved": recipe.autocast, "frozen_less": (
        sum(x.per_token for x in layer.terms if not x.batch1_only)
        - sum(x.per_token for x in idle.terms if not x.batch1_only),
        sum(x.per_token_seq for x in layer.terms) - sum(x.per_token_seq for x in idle.terms),
        sum(x.const for x in layer.terms) - sum(x.const for x in idle.terms))}


def _falcon_freeze_lowest(layer_fn: Any, m: ModelSpec, t: TrainingSpec, recipe: Recipe, layer: Any, per_layer_t: int,
                          per_layer_ts: int, frozen: int, frozen_save: bool) -> tuple[int, ...]:
    """_ActivationPlan.falcon_lt: Falcon-7B's freeze without checkpointing under autocast, the frozen layers saving."""
    if not (recipe.autocast16 and layer.attn_backward_grads_const and t.method == "freeze" and not t.grad_checkpointing
            and frozen and frozen_save):
        return (0,) * 9
    # The peak is the lowest trained layer's MLP backward, at dense_h_to_4h's weight gradient cast to fp32: every
    # gradient above made and its MLP's, not its qkv's and dense's (fp32); the frozen layers below hold their saved
    # sets (their 16-bit weights need no autocast copy), the layer its attention's saved set and its qkv and dense
    # casts; the temporaries are that weight gradient in 16 bits and the layer's token-wide gradients: the input's
    # (16-bit mm and its cast) and the fp32 residual's. Measured with the tracer's live tensors at the peak: falcon-7b
    # cut to 4 layers, freeze 2 autocast-bf16 b1 s512, and cut to 2 layers, freeze 1 b1 s256 and s512: the terms add
    # up within 47 KB of the traced peak (+3.32 / +8.52 / +8.09 % with backward.bottom's autocast copies instead).
    frozen_layer = layer_fn(m, t, recipe, trainable_weights=False)
    f_t = sum(x.per_token for x in frozen_layer.terms if not x.batch1_only)
    f_ts = sum(x.per_token_seq for x in frozen_layer.terms)
    c, h = dtype_bytes(recipe.compute), m.hidden_size
    attn = sum(lin.in_features * lin.out_features for lin in block_linears(m)
               if lin.module in ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"))
    return (f_t, f_ts, frozen, per_layer_t - layer.mlp_saved_per_token, per_layer_ts, c * attn, (2 * c + 4) * h,
            c * h * m.intermediate_size, 4 * attn)  # (trained weights and their gradients: fp32 under autocast-*)


def _frozen_rerun_order(t: TrainingSpec) -> bool:
    """Checkpointing that reruns each layer inside its own backward (not offloaded, every layer): the lowest trained
    layer's backward runs before any frozen layer's rerun (_frozen_rerun)."""
    return t.grad_checkpointing and not t.activation_offload and t.ac_every <= 1


def _freeze_bottom_gradient_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trained_layers: int) -> int:
    """--freeze-layers N of a dense decoder with its embedding frozen: the lowest trained layer's own gradients,
    written after its backward peak. torch autograd runs one AccumulateGrad node per parameter as soon as that
    parameter's gradient is computed (torch/csrc/autograd/functions/accumulate_grad.h), so the layer's weight
    gradients appear one Linear at a time through its backward, as full fine-tuning's bottom layer's do
    (_dense_late_gradient_bytes); nothing below it has a trained parameter, so none come after. Measured with the
    tracer: tinyllama-1.1b cut to 4 layers, 2 frozen, autocast-bf16 b1 s512: only the head's gradient alive at the
    backward's peak (+3.45 % with the lowest trained layer's counted there)."""
    from vramcalc.core.params import inventory

    if t.method != "freeze" or trained_layers <= 0 or _lisa.active(t) or _badam.active(t) or _unfrozen.active(t):
        return 0
    if m.tie_word_embeddings and t.train_head and not _frozen_rerun_order(t):
        # the tied embedding trains: without checkpointing the frozen layers' saved graphs are backpropagated below the
        # lowest trained layer, every gradient made (the bottom moment is theirs). With checkpointing they are rerun
        # after it (_frozen_rerun's moments hold every gradient) and its own are late, as untied (measured with the
        # tracer: qwen3-0.6b cut to 4 layers, vocab 2,048, 2 frozen, bf16 b2 s1024 with checkpointing: the peak in
        # layer 2's backward with only layer 3's and the head's gradients, +5.37 % -> +0.38 %)
        return 0
    if t.zero or t.fsdp not in ("none", "no-shard") or t.offload != "none" or getattr(t, "fp8", "off") != "off":
        return 0
    if not _plain_dense_decoder(m):
        return 0
    # (--precision autocast-* freeze: the trained parameters are fp32, so are their gradients: weights.py)
    grad_b = 4 if recipe.autocast16 else dtype_bytes(recipe.grad)
    return sum(x.numel for x in inventory(m) if x.per_layer) // m.num_layers * grad_b


def _peft_once_t(m: ModelSpec, t: TrainingSpec, c: int) -> int:
    """Prefix tuning under eager attention: the causal mask has virtual_tokens more columns (c bytes each)."""
    return c * t.virtual_tokens if t.method == "prefix-tuning" and t.attention == "eager" else 0


def _transformer_phases(
    p: _ActivationPlan, t: TrainingSpec, base: tuple[int, int, int], gradients: int, opt_temp: int, tokens: int,
    details: dict[str, int],
) -> tuple[dict[str, int], tuple[_m.RawMoment, ...], int, int]:
    """(phases, moments, activations, temporaries) for `tokens` tokens; appends the activation details.

    `base` is (weights, optimizer state, communication): alive at every moment of the step.
    """
    rows, seq = batch_rows(t)  # padding-free: one row of batch x seq_len (memory/activations.py)
    if p.extra_seq:  # prompt / p-tuning: the virtual tokens go through every layer and the loss
        tokens = tokens * (seq + p.extra_seq) // seq
        seq += p.extra_seq
    token_seq = tokens * seq
    per_layer = ((p.per_layer_t + (p.batch1_t if t.batch_size == 1 else 0)) * tokens + p.per_layer_ts * token_seq
                 + p.per_layer_b * t.batch_size + p.per_layer_c + p.per_layer_ss * seq * seq)
    once = p.once_t * tokens + p.once_ts * rows * seq * seq  # the mask is not split by tp/sp
    once += p.once_ss * seq * seq + p.once_rel_c
    fwd_only = p.fwd_only_ts * rows * seq * seq + p.fwd_only_ss * seq * seq + p.fwd_only_c
    once += p.once_b * t.batch_size + p.once_c
    head_saved = p.head_saved_t * tokens + p.head_saved_c
    autocast_copies = p.autocast_copies
    # while the layers run forward the LM head has not been cast yet: its copy joins at the loss
    fwd_layer_copies = autocast_copies - p.autocast_head_copy
    attn_less = 0 if p.checkpointing or p.offload else p.attn_fwd_less_t * tokens  # checkpointed: nothing saved
    # (a checkpointed layer's first forward: its MLP moment with the unsaved residual and normed input alive)
    beside_mlp = p.layer_fwd_moe_c + p.mlp_fwd_ts * token_seq
    fwd_others = max(p.layer_ck_fwd_t * tokens + beside_mlp,
                     p.attn_fwd_ts * token_seq + p.attn_fwd_t * tokens - attn_less,
                     p.layer_fwd_c + p.layer_fwd_c_t * tokens,
                     p.dequant_fwd.forward(tokens, p.checkpointing or p.offload), p.fp8_casts.forward(tokens))
    layer_fwd_t = max(p.layer_fwd_t * tokens + beside_mlp, fwd_others)
    # A layer's backward runs the MLP's first (its gradients, per token) and then the attention's (eager attention's
    # per-key scores gradient), after autograd has freed the MLP's saved tensors: every moment that holds this
    # transient also holds the layer's whole saved set, so the attention's moment is the larger only by what it
    # exceeds those freed bytes (measured with the tracer, --grid families: tinyllama LoRA eager with checkpointing
    # +7.7 % when both transients were summed).
    # The MLP's saved bytes whatever the batch (a MoE block's merged expert stacks under LoRA) and its backward's
    # constant (the expert stacks' gradients) are gone by the attention's backward too (measured with the tracer,
    # --grid moe: tiny Mixtral LoRA all-linear eager with checkpointing, +8.8 % when they were kept).
    # (the attention's, QLoRA's dequantized weight's and the routed experts': also offloaded nodes' below)
    layer_bwd_rest = max(p.layer_bwd_ts * token_seq - p.layer_mlp_saved_t * tokens - p.layer_mlp_saved_c
                         + p.layer_attn_bwd_c, p.dequant_bwd.backward(tokens, p.layer_mlp_tail_t),
                         p.layer_routed_bwd_t * tokens)
    layer_bwd_t = max(p.layer_bwd_t * tokens + p.layer_bwd_c, layer_bwd_rest)
    # A frozen layer's backward (freeze: its input's gradient only) writes no weight gradients at its attention's
    # backward: without the trained layer's (activations.py attn_backward_grads_const; Falcon's math SDPA under
    # autocast, measured with the tracer, --grid amp16 trials: falcon-7b cut, freeze 2 autocast-bf16 b1 s512 with
    # checkpointing, the frozen layers' backward.frozen +4.08 % with them)
    frozen_bwd_t = layer_bwd_t if not p.layer_attn_bwd_grads_c else max(
        p.layer_bwd_t * tokens + p.layer_bwd_c,
        p.layer_bwd_ts * token_seq - p.layer_mlp_saved_t * tokens - p.layer_mlp_saved_c + p.layer_attn_bwd_c
        - p.layer_attn_bwd_grads_c, p.dequant_bwd.backward(tokens, p.layer_mlp_tail_t), p.layer_routed_bwd_t * tokens)
    # Full fine-tuning: a trained layer's backward.top / backward.bottom at its MLP's product node (_mlp_node) hold
    # down_proj's gradient (every gradient already, accumulating; none with the optimizer in backward, whose hook
    # steps and frees it as it is written) and neither its saved input nor its autocast copy, where that node is the
    # layer's peak; node_bwd_t: that node's temporaries
    node_g = node_freed = node_cast = 0
    node_bwd_t = layer_bwd_t
    if (p.mlp_node_freed_t or p.mlp_node_bwd_t) and p.saving_layers:
        node_freed, node_cast = p.mlp_node_freed_t * tokens, p.mlp_node_cast
        node_g = 0 if t.grad_accum > 1 or t.optimizer_in_bwd else p.mlp_node_grads
        node_bwd_t = (p.mlp_node_bwd_t or p.layer_bwd_t) * tokens + p.layer_bwd_c
        if node_bwd_t - node_freed - node_cast + node_g < layer_bwd_rest:
            node_g = node_freed = node_cast = 0
            node_bwd_t = layer_bwd_t
    # --fp8 (memory/fp8.py): a swapped Linear's float8 casts in backward, the top layer's beside the head's gradient;
    # the bottom layer's in a moment of their own (backward.bottom_fp8), before its own and the embedding's gradients
    fp8_bwd = p.fp8_casts.backward(tokens)
    loss_fwd_t = p.loss_fwd_t * tokens
    loss_bwd_t = p.loss_bwd_t * tokens
    accum = t.grad_accum > 1
    grads_live_fwd = gradients if accum else 0
    g_head = min(p.g_head, gradients)
    saving_layers = p.saving_layers
    # Loss savers (memory/loss.py): the head's saved set and the loss transients, and two more moments:
    # the head's gradient allocated in forward (Liger) and the head's own backward (torchtune chunks).
    grad_fwd = 0
    head_bwd_t = -1  # no separate head-backward moment (hf: covered by the backward start)
    if p.loss != "hf":
        labelled = t.batch_size * min(seq - p.prompt_len, seq - 1)  # scored by TRL's head (memory/preference.py)
        if p.loss == "logits":  # ORPO / CPO / SimPO: the full logits (memory/preference.py)
            lb = _preference.logits_head_bytes(rows=rows, seq=seq, vocab=p.vocab, hidden=p.hidden, compute=p.compute,
                                               logits=p.logits_bytes, head_trainable=p.head_trainable,
                                               nll=p.chosen_nll, head_grad=g_head,
                                               head_copy=p.head_copy if p.checkpointing or p.offload else 0)
        elif p.loss == "online":  # Online DPO: the full logits and a log-softmax (memory/online_dpo.py)
            lb = _online_dpo.head_bytes(rows=rows, seq=seq, completion=seq - p.prompt_len, vocab=p.vocab,
                                        hidden=p.hidden, compute=p.compute, logits=p.logits_bytes,
                                        head_trainable=p.head_trainable, head_grad=g_head,
                                        head_copy=p.head_copy if p.checkpointing or p.offload else 0)
        elif p.loss == "logits-dpo":  # torchtune's DPO recipes: fp32 logits, log_softmax over S - 1 positions
            lb = _online_dpo.head_bytes(rows=rows, seq=seq, completion=seq - 1, vocab=p.vocab, hidden=p.hidden,
                                        compute=p.compute, logits=4, head_trainable=p.head_trainable,
                                        head_grad=g_head, head_copy=p.head_copy if p.checkpointing or p.offload else 0,
                                        scale_copy=True)
        elif p.loss == "ppo":  # PPO's policy: the full logits kept, a log-softmax per row (memory/ppo.py)
            from vramcalc.core.memory import ppo as _ppo

            lb = _ppo.head_bytes(rows=rows, seq=seq, completion=seq - p.prompt_len, vocab=p.vocab, hidden=p.hidden,
                                 compute=p.compute, head_trainable=p.head_trainable, head_grad=g_head)
        else:
            lb = loss_bytes(p.loss, tokens=tokens, batch=rows, seq=seq, chunks=p.loss_chunks, vocab=p.vocab,
                            hidden=p.hidden, compute=p.compute, head_grad=g_head, head_trainable=p.head_trainable,
                            labelled=labelled, residual=p.residual, weight=p.head_weight, compiled=p.loss_compiled)
        head_saved = p.norm_saved_t * tokens + lb.saved + p.lora_head_t * tokens
        if p.loss in _CHUNKED_HEADS and not p.head_trainable:
            # autocast caches a weight's 16-bit cast only for a leaf that requires grad (torch autocast_mode.cpp
            # cached_cast): a frozen head is cast again by every chunk's projection, and each chunk's matmul saves its
            # own cast for the input gradient; autocast_copies holds one of them (measured with the tracer:
            # tinyllama cut to 2 layers, LoRA amp-bf16 with checkpointing b1 s256, 8 chunks: -37 % without them)
            head_saved += (min(p.loss_chunks, seq) - 1) * p.autocast_head_copy
        if p.rl is not None and p.loss == "trl":  # GRPO's loss: fp32 vectors per completion token (memory/rl.py)
            head_saved += _rl.loss_bytes(t)
        loss_fwd_t, loss_bwd_t = lb.forward, lb.backward_start
        grad_fwd = g_head if lb.head_grad_in_forward else 0
        head_bwd_t = lb.head_backward if lb.head_backward else -1
    if p.liger_ce:
        # lm_head's backward after Liger's cross-entropy (its gradient handed back in the saved fp32 buffer, freed
        # once ToCopyBackward has cast it; in fp32 it is the logits' gradient itself): the logits' gradient, the
        # head's saved input, its input gradient (and its fp32 cast under autocast) and the head's weight gradient
        # (with its 16-bit matmul output when the weight is kept in another dtype). Over hf's backward start when the
        # head's gradient outweighs the vocab-wide fp32 tensors (measured with the tracer: a 4-layer llama, vocab
        # 32,000, full fp32 b2 s256 without checkpointing: -10.7 % without this moment, -2.5 % with it, the rest
        # being the fp32 layers' gap that --loss hf has there too, -2.1 %).
        c, h = p.compute, p.hidden
        head_bwd_t = c * p.vocab * tokens + (c * h * tokens if p.head_trainable else 0) \
            + (c + (p.residual if p.residual != c else 0)) * h * tokens + g_head \
            + (c * p.vocab * h if p.head_trainable and p.head_weight != c else 0) \
            + (p.autocast_head_copy if p.checkpointing or p.offload else 0)  # (the no-checkpointing moment has it)
    host_t = 0
    # (a trained MoE layer's expert gradients are written before its attention's backward, whose eager scores'
    # gradients then set the layer's peak: measured with the tracer, --grid moe full eager, the peak at the top
    # layer's softmax backward with them alive)
    acc, g_top = grads_live_fwd, max(grads_live_fwd, g_head + p.top_layer_grads)
    recompute_t = 0  # a checkpointed layer's recomputed forward temporaries (the backward.recompute moment)
    late_g = 0 if accum else min(p.late_grads, gradients)  # accumulating: every gradient exists from the start
    late_bottom = 0 if accum else min(p.late_grads + p.bottom_layer_grads, gradients)  # the bottom layer's peak
    fp8_unmade = 0 if accum else p.fp8_unmade_grads  # --fp8: gradients not made yet at the bottom layer's Linears
    # The moments of each phase as named terms (memory/moments.py): the phase is the largest of them.
    if p.checkpointing or p.offload:
        # HF gradient_checkpointing_enable (transformers 5 modeling_utils: default {"use_reentrant": False},
        # torch.utils.checkpoint non-reentrant): each layer keeps only its input hidden states; during
        # backward one layer is recomputed with its full saved set (autocast weight casts included, freed
        # with the layer: the nested autocast region clears its cache on exit, autocast_mode.py __exit__).
        kept = p.kept_t * tokens
        kept_bwd = kept
        running = 0  # --ac-offload: the running layer's input and the embedding's output (memory/savers.py)
        # the recomputed forward of each layer runs inside its backward: DoRA's weight-norm temporaries come on top
        # of the layer's gradient temporaries (measured with the tracer, --grid lora-variants "dora all-linear b2 s512
        # gc": -1.2 % under the trace with the larger of the two, within 0.2 % with their sum). Under autocast over
        # 16-bit weights (layer_fwd_c_t set) they are freed when DoRA's forward returns, before the layer's gradients
        # (the tracer's live tensors, --grid autocast-dora: only the rerun's moment holds them; tinyllama cut QLoRA b1
        # s512 gc +0.79 % with the sum, -0.05 % without)
        if not p.layer_fwd_c_t:
            layer_bwd_t = layer_bwd_t + p.layer_fwd_c
            node_bwd_t = node_bwd_t + p.layer_fwd_c
        if p.ac_every > 1 or p.offload or p.ac_offload:  # selective / offloaded (memory/savers.py)
            r = layer_residency(n_layers=p.n_layers, saving_layers=saving_layers, checkpointing=p.checkpointing,
                                every=p.ac_every, offload=p.offload, per_layer=per_layer, from_first=p.ac_from_first,
                                layer_input=p.layer_input_t * tokens, save_on_cpu=p.ac_offload,
                                leaf_kept=p.offload_leaf_t > 0)
            kept, kept_bwd, host_t, running = r.forward, r.backward, r.host, r.running
            if p.int8_wrapped_t and not (p.offload or p.ac_offload):
                # 8-bit QLoRA, selective checkpointing: the checkpoint's saved-tensor hooks never see MatMul8bitLt's
                # ctx-held inputs (activations.py INT8_CTX), so each checkpointed layer keeps them beside its input
                # until its backward (measured with the tracer, --grid qlora8b "bf16 gc every 2": tinyllama cut to 2
                # layers b2 s512 -2.96 % / -2.53 % (torchtune / hf layout) without them)
                wrapped = min(wrapped_layers(p.n_layers, p.ac_every, p.ac_from_first), saving_layers)
                kept += wrapped * p.int8_wrapped_t * tokens
                kept_bwd += wrapped * p.int8_wrapped_t * tokens
            # enable_input_require_grads (transformers modeling_utils, called with checkpointing when the embedding
            # is frozen) makes the frozen embedding's output a leaf that requires grad: its AccumulateGrad node
            # holds it until the graph is freed, so the offload's host copy does not free it (measured with the
            # tracer: a 4-layer LoRA run with checkpointing + offload, one hidden-wide tensor per token beyond the
            # layer being recomputed, allocated by aten.embedding; -2.3 % without it).
            kept += p.offload_leaf_t * tokens
            kept_bwd += p.offload_leaf_t * tokens
        elif p.checkpointing:
            # GPT-2's wte output (a leaf: enable_input_require_grads) beside layer 0's input, `inputs_embeds +
            # position_embeds` through the embedding dropout (the tracer's live tensors, gpt2 cut to 2 and 4 layers,
            # LoRA bf16 b2-b4 s1024 with checkpointing: an aten.embedding (b, s, 768) bf16 storage alive at every
            # backward peak, beside the dropout's output)
            kept += p.input_leaf_t * tokens
            kept_bwd += p.input_leaf_t * tokens
        recomputed = per_layer if saving_layers else 0
        if p.checkpointing and not (p.offload or p.ac_offload or p.ac_every > 1):
            # the rerun's first norm saves the kept input itself (activations.py saves_residual, layernorm_saves_input)
            recomputed -= min(p.rerun_input_saved_t * tokens, recomputed)
        # Reentrant checkpointing (torch utils/checkpoint.py CheckpointFunction.backward) reruns the whole layer, its
        # output included, and holds that output (`outputs`) until torch.autograd.backward over it returns; the
        # non-reentrant rerun stops at the last saved tensor (measured with the tracer, --grid reentrant: full
        # tinyllama cut to 2 layers with the cut loss b2 s2048, the bottom layer's backward one 16-bit hidden state
        # per token above the non-reentrant trace)
        rerun_out = p.residual * p.hidden * tokens if t.reentrant_gc and saving_layers else 0
        offload_only = p.offload and not p.checkpointing
        if offload_only:  # (its backward.top / backward.bottom hold the nodes brought back, not a recomputed set)
            node_g = node_freed = node_cast = 0
        # Offloaded without checkpointing, what is computed once per forward for every layer (the RoPE tables, a
        # mask) is the decoder's local: it dies when the decoder returns, the layers' saved copies of it are in host
        # RAM and come back as a node's own (torchtune OffloadActivations pack_tensor; measured with the tracer, --grid
        # offload-nogc: no cos / sin table alive at any backward peak, +0.7 % with them)
        once_bwd = 0 if offload_only else once
        stash = 0
        if offload_only and saving_layers:
            # nothing is recomputed: a backward node brings its own saved tensors back beside the previous node's,
            # and forward keeps torchtune's stash of the last packed tensors (memory/savers.py offload_node_bytes);
            # the RMSNorm's fp32 backward is a node of its own (the backward.offload_norm moment)
            recomputed = min(per_layer, p.offload_back_t * tokens + p.offload_back_c)
            stash = min(per_layer, p.offload_stash_t * tokens)
            layer_bwd_t = max(p.offload_bwd_t * tokens + p.layer_bwd_c, layer_bwd_rest)
        if p.top_idle_layers and recomputed:
            # --lora-layers, the top layers unadapted: the backward's largest rerun is the top (unadapted) layer's with
            # every input kept, or the highest adapted layer's once the inputs above it are freed (measured with the
            # tracer, --grid lora-layers: tinyllama cut to 8 layers, QLoRA on layers 0-1, eager, with checkpointing:
            # +3.0 % with the adapted set at the top)
            idle_set = per_layer - (p.idle_less_t * tokens + p.idle_less_ts * token_seq + p.idle_less_c)
            recomputed = max(idle_set, per_layer - p.top_idle_layers * p.layer_input_t * tokens)
        # (the losses that project with the head module: the others count its weight in their own terms)
        head_cast_kept = p.autocast_head_copy if p.loss == "hf" or p.loss in _CHUNKED_HEADS else 0
        copies = p.layer_copies
        activations = kept + once + head_saved + autocast_copies + recomputed
        # The bottom layer recomputed: a MoE model's dense bottom layer saves a dense MLP's set (bottom_less_t;
        # checkpointing gives every layer's input a gradient, so LoRA's bottom-layer saving does not apply).
        bottom_less = p.bottom_less_t * tokens + p.bottom_less_ts * token_seq + p.bottom_less_c \
            + p.bottom_less_b * t.batch_size if saving_layers else 0
        layers_detail = kept
        fwd_copies, loss_copies = fwd_layer_copies, autocast_copies
        if p.frozen_casts and p.checkpointing:
            # autocast caches a cast only for a leaf that requires grad (torch autocast_mode.cpp cached_cast): a
            # frozen layer's casts die with the op that used them, and the checkpointed layer saves none, so the
            # forward holds the running layer's casts (an upper bound) and, from the loss on, the head's (measured
            # with the tracer: tinyllama cut to 2 layers, LoRA amp-bf16 with checkpointing b1 s256: +14 % with every
            # layer's casts counted)
            fwd_copies = min(fwd_layer_copies, p.layer_copies)
            loss_copies = min(autocast_copies, p.autocast_head_copy)
        moments = [
            ("forward.layer", _m.FWD_LAYER_OFF, (acc, stash, once, fwd_copies, layer_fwd_t)) if offload_only else
            ("forward.layer", _m.FWD_LAYER_CK, (acc, kept + running, once, fwd_copies, layer_fwd_t)),
            ("forward.loss", _m.FWD_LOSS_CK,
             (acc, kept, once_bwd, loss_copies, head_saved, loss_fwd_t, grad_fwd)),
            # the head's autocast cast outlives the forward (its matmul saved it for the input gradient; the head is
            # not checkpointed), unlike the layers' (measured with the tracer: a 4-layer llama, vocab 32,000, amp-bf16
            # with checkpointing b2 s256: -3.6 % full, -5.5 % LoRA without it, one V x H 16-bit weight short)
            ("backward.start", _m.BWD_START_CK,
             (acc, kept, once_bwd, head_saved + head_cast_kept, loss_bwd_t, grad_fwd)),
        ]
        if head_bwd_t >= 0:
            moments.append(("backward.head", _m.BWD_HEAD_CK,
                            (acc, kept, once_bwd, p.norm_saved_t * tokens, head_bwd_t)))
        if p.checkpointing and recomputed:
            # The layer's forward rerun inside its backward: the attention's saved set already back, the MLP's
            # forward temporaries (peft's fp32 adapter path, the activation) in flight before the MLP saves its
            # own (measured with the tracer: phi-3-mini 4 layers LoRA all-linear eager b2 s1024, peak at the fused
            # gate_up adapter's scaling mul in the recompute, -2.46 % without this moment).
            mlp_tail = min(p.layer_mlp_tail_t * tokens, recomputed)
            recompute_t = max(p.layer_mlp_fwd_t * tokens + p.layer_fwd_c, p.fp8_casts.forward(tokens))
            if p.dequant_fwd.int8:
                # 8-bit QLoRA: the rerun's ctx-held inputs (int8_rerun_t) beside its MLP temporaries (down_proj's input
                # not made yet), and a rerun Linear8bitLt's int8 matmul (activations.py DequantBytes.int8) beside the
                # layer's recomputed set and all of them (an upper bound; measured with the tracer, --grid qlora8: the
                # peak of the 4-layer, 2,048-token vocabulary cases with checkpointing, at the rerun's
                # `A.abs() >= threshold` or act(gate) * up)
                recompute_t = max(recompute_t + (p.int8_rerun_t - p.int8_rerun_down_t) * tokens,
                                  p.dequant_fwd.forward(tokens, False) + mlp_tail + p.int8_rerun_t * tokens)
            if p.dequant_bwd.after_tail:
                # QLoRA with a fused gate_up as the largest Linear (activations.py DequantBytes.after_tail): the rerun's
                # dequantized gate_up beside the set saved up to the MLP (the moment's `recomputed - mlp_tail`), the
                # layer output's incoming gradient (two 16-bit copies: the residual branch's and the layer's) and the
                # rerun's residual stream in flight; backward.top no longer covers it. Measured with the tracer's live
                # tensors, phi-3-mini cut to 4 layers, QLoRA all-linear b1 s512 with checkpointing: the peak at the
                # rerun's gate_up mm, those three hidden-wide tensors beside the saved set (-0.13 % autocast-bf16,
                # -0.63 % bf16: its norm's fp32 gradient too; +3.7 % under TRL's DPO, whose loss leaves fewer)
                recompute_t = max(recompute_t, p.dequant_fwd.forward(tokens, False)
                                  + (2 * p.dequant_fwd.compute + p.residual) * p.hidden * tokens)
            if p.dequant_fwd.before_out and p.dequant_bwd.after_tail:
                # hqq (memory/hqq.py): the rerun's down_proj dequantizes its weight beside the MLP's whole saved set but
                # down_proj's adapter (created after the base layer's matmul: DequantBytes.down_lora_t), with the
                # layer output's incoming gradient (two 16-bit copies), the residual stream and the final norm's fp32
                # gradient (the top layer's rerun). Measured with the tracer's live tensors, --grid hqq: tinyllama-1.1b
                # all-linear b2 s512 with checkpointing, the peak at the top layer's rerun `(W_r - zero) * scale` for
                # down_proj (-4.4 % without this moment, -2.2 % without the fp32 gradient)
                # Without an adapter on down_proj, one incoming gradient and the residual stream only (measured with
                # the tracer's live tensors, --grid hqq: tinyllama-1.1b 3-bit axis 0 q,v b1 s1024 with checkpointing,
                # the peak at that `* scale` holds no second gradient copy and no fp32 gradient: +4.13 % with them)
                beside = 2 * p.dequant_fwd.compute + p.residual + 4 if p.dequant_bwd.down_lora_t \
                    else p.dequant_fwd.compute + p.residual
                recompute_t = max(recompute_t, mlp_tail - p.dequant_bwd.down_lora_t * tokens
                                  + p.dequant_fwd.forward(tokens, False) + beside * p.hidden * tokens)
            if p.dequant_fwd.beside_fp32:
                # QLoRA under the Trainer's autocast with gelu_new (GPT-J, Phi): the rerun's dequantized fc_out beside
                # the layer's recomputed set up to its input (the activation's saved tensors, not yet its adapter's
                # cast), the fp32 activation output and its bf16 copy (activations.py DequantBytes.beside_in), and
                # four hidden-wide tensors the parallel block holds there: the shared normed input (fp32, read by
                # attention and the MLP), the attention's output (summed after the MLP) and the layer output's
                # incoming gradient in two 16-bit copies (as after_tail's). Measured with the tracer's live tensors,
                # --grid autocast3: gpt-j-6b cut to 4 layers, QLoRA all-linear b1 s512 with checkpointing, the peak at
                # the rerun's fc_out addmm (-5.25 % without; -2.71 % with the weight and the activation alone)
                recompute_t = max(recompute_t, mlp_tail + p.dequant_fwd.forward(tokens, False)
                                  - p.dequant_fwd.compute * p.dequant_fwd.beside_in * tokens
                                  + (3 * p.dequant_fwd.compute + 4) * p.hidden * tokens)
            if p.dequant_fwd.fp32_compute:
                # 4-bit over an fp32 load under autocast (memory/qlora_fp32.py): the rerun's down_proj dequantizes its
                # fp32 weight (and autocast's 16-bit copy) beside the MLP's recomputed fp32 set but down_proj's adapter
                # (made after the base matmul), the fp32 product and its 16-bit cast (DequantBytes.forward, which
                # takes the adapter's set off, DequantBytes.down_lora_t, and adds the fp32 normed MLP input), and
                # hidden-wide: the layer output's incoming gradient in fp32, one 16-bit scaled adapter output (the
                # post-attention residual is its norm's saved input).
                # Measured with the tracer's live tensors, --grid qlora-fp32load: tinyllama cut to 4 layers, b2 s512
                # with checkpointing, the backward's peak at the rerun's down_proj mm
                # Then down_proj's adapter: its saved set made, the fp32 product and dropout's fp32 output of it beside
                # it, and the clone of the base output (fp32) with those hidden-wide tensors (the same traces, qwen2.5-
                # 0.5b b1 s2048: the backward's peak at the rerun's down_proj lora_A mm, -2.35 % without it)
                recompute_t = max(recompute_t, mlp_tail + p.dequant_fwd.forward(tokens, False)
                                  + (4 + p.dequant_fwd.compute) * p.hidden * tokens,
                                  mlp_tail + (2 * 4 * p.dequant_fwd.beside_in
                                              + (3 * 4 + p.dequant_fwd.compute) * p.hidden) * tokens)
            if p.attn_div_ts:
                # DeBERTa: the recomputed attention's unsaved scores at p2c's division (memory/deberta.py), beside the
                # saved set up to there (measured with the tracer, --grid deberta: the peak of every checkpointed
                # case with seq 512); written as temporaries over the moment's `recomputed - mlp_tail`. BLOOM: the
                # rerun's baddbmm output, masked scores and fp32 softmax (activations.py _alibi_forward_scores; the same
                # trace as there, the backward's peak at the rerun's _softmax, -4.1 % without this)
                recompute_t = max(recompute_t, p.attn_div_ts * token_seq + (p.attn_div_t - p.attn_fwd_less_t) * tokens
                                  + mlp_tail)
            moments.append(("backward.recompute", _m.BWD_RECOMPUTE_CK,
                            (g_top, kept_bwd, once, recomputed - mlp_tail, copies, recompute_t)))
            if p.rerun_end_t:  # a frozen gelu_new MLP under autocast: the rerun's end (activations.py rerun_end)
                moments.append(("backward.rerun_end", _m.BWD_RERUN_END_CK,
                                (g_top, kept_bwd, once, recomputed, copies, p.rerun_end_t * tokens)))
            if p.rerun_mixer_below >= 0:  # Bamba: the lowest mixer layer's rerun, every gradient above it made
                moments.append(("backward.recompute_mixer", _m.BWD_RECOMPUTE_MIXER_CK,
                                (max(gradients - p.rerun_mixer_below, 0),
                                 min(p.layer_input_t * tokens * (p.rerun_mixer_layer + 1), kept_bwd), once,
                                 recomputed - mlp_tail, copies, recompute_t)))
            if (p.offload or p.ac_offload) and saving_layers > 1:
                # Offloaded checkpointing keeps no layer inputs on the GPU, so the bottom layer's rerun holds as much
                # as the top one's beside every gradient made above it (measured with the tracer, --grid savers:
                # tinyllama QLoRA cut + checkpointing + offload b2 s1024, the peak in the bottom layer's rerun with
                # the adapters' gradients made, -2.61 % without this moment)
                moments.append(("backward.recompute_bottom", _m.BWD_RECOMPUTE_BOTTOM_OFF,
                                (gradients - late_bottom, kept_bwd, once, recomputed - bottom_less - mlp_tail, copies,
                                 recompute_t)))
            if p.frozen_rerun:  # --freeze-layers: the highest frozen layer's rerun, every gradient made (_frozen_rerun)
                less_t, less_ts, less_c = p.frozen_less
                frozen_set = max(per_layer - less_t * tokens - less_ts * token_seq - less_c - mlp_tail, 0)
                moments.append(("backward.recompute_frozen", _m.BWD_RECOMPUTE_FROZEN_CK,
                                (gradients - late_g, p.frozen_rerun * p.layer_input_t * tokens, once, frozen_set,
                                 copies if p.frozen_casts_saved else 0, recompute_t)))
                # then its backward, for its input's gradient only: its whole saved set (what derivatives.yaml keeps
                # with the weights frozen: mm saves no input, the norms / attention / activation theirs) beside a
                # layer's backward temporaries, every gradient made (measured with the tracer: qwen3-8b cut to 4
                # layers, vocab 2,048, 2 frozen, bf16 b2 s1024 with checkpointing: the peak at layer 1's act * up
                # backward, -3.62 % without this moment, +0.00 % with it; phi-3-mini the same, -3.92 %)
                moments.append(("backward.frozen", _m.BWD_FROZEN_CK,
                                (gradients - late_g, p.frozen_rerun * p.layer_input_t * tokens, once,
                                 frozen_set + mlp_tail + rerun_out, copies if p.frozen_casts_saved else 0,
                                 frozen_bwd_t)))
            if p.recompute_bottom:  # Mamba-2: the scan's locals at the bottom layer's rerun, every upper gradient made
                # (none of the bottom layer's own yet: bottom_layer_grads, Falcon-H1's; late_bottom is late_g elsewhere)
                moments.append(("backward.recompute_bottom", _m.BWD_RECOMPUTE_BOTTOM_CK,
                                (gradients - late_bottom, once, recomputed - bottom_less - mlp_tail, copies,
                                 recompute_t)))
        if offload_only:
            # (--optimizer-in-bwd: one tensor's gradient at a time, the `gradients` component, so the head's is
            # stepped and freed before down_proj's is made; a 1-layer toy drawn by tests/test_properties.py held both)
            moments.append(("backward.top", _m.BWD_TOP_OFF,
                            (min(g_top + (0 if accum else p.offload_down_g), gradients), once_bwd, recomputed, copies,
                             layer_bwd_t)))
            if p.offload_norm_t and saving_layers:
                norm_late = 0 if accum else min(max(late_g - p.offload_norm_made_g, 0) + p.offload_norm_unmade_g
                                                + p.offload_norm_q_g, gradients)
                norm_t = p.offload_norm_t * tokens
                if p.offload_norm_top_g and not accum:
                    # adapters under q/k norms (_offload_layer_gradients): the top layer's query norm node with its
                    # layer's other gradients made; at the bottom one the layer's input (the frozen embedding's
                    # output) takes no gradient, so the two residual-stream gradients are not there (measured with
                    # the tracer, Qwen3 cut to a tiny shape, LoRA q,k,v,o b1 s1024: the two nodes' live sets)
                    moments.append(("backward.offload_norm_top", _m.BWD_NORM_TOP_OFF,
                                    (g_top + p.offload_norm_top_g, once_bwd, norm_t)))
                    norm_t -= 2 * p.residual * p.hidden * tokens
                moments.append(("backward.offload_norm", _m.BWD_NORM_OFF,
                                (gradients - norm_late, once_bwd, norm_t)))
        else:
            moments.append(("backward.top", _m.BWD_TOP_NODE_CK if node_g else _m.BWD_TOP_CK,
                            (g_top + node_g, kept_bwd, once, recomputed + rerun_out - node_freed, copies - node_cast,
                             max(node_bwd_t, fp8_bwd))))
        if p.lisa_below and recomputed:
            # LISA (memory/lisa.py): the lowest trained layer's backward, every trained layer's gradient made (its own
            # attention's counted too), the frozen layers below it keeping their inputs
            moments.append(("backward.lowest_trained", _m.BWD_LOWEST_TRAINED_CK,
                            (gradients - late_g, p.lisa_below * p.layer_input_t * tokens, once,
                             recomputed + rerun_out, copies, layer_bwd_t)))
        if t.optimizer_in_bwd:
            moments.append(("backward.head_step", _m.BWD_HEAD_STEP_CK,
                            (g_top, kept_bwd, once, recomputed + rerun_out, copies, opt_temp)))
        if offload_only and not accum:  # the bottom layer's gradients made at its peak (_offload_layer_gradients)
            late_bottom = min(max(late_bottom + p.offload_bottom_unmade_g - p.offload_down_g, 0), gradients)
        moments.append(("backward.bottom", _m.BWD_BOTTOM_OFF if offload_only else _m.BWD_BOTTOM_CK,
                        (gradients - late_bottom + node_g, once_bwd,
                         max(recomputed - bottom_less, 0) + p.bottom_input_t * tokens + rerun_out - node_freed,
                         copies - node_cast, node_bwd_t if node_freed else layer_bwd_t)))
        if p.bottom_mixer_t:  # Falcon-H1: the bottom layer's scan backward, its layer's other gradients made
            moments.append(("backward.bottom_mixer", _m.BWD_BOTTOM_CK,
                            (gradients - late_g, once_bwd,
                             max(recomputed - bottom_less - p.bottom_mixer_freed_t * tokens, 0)
                             + p.bottom_input_t * tokens + rerun_out, copies, p.bottom_mixer_t * tokens)))
        if fp8_bwd:
            moments.append(("backward.bottom_fp8", _m.BWD_BOTTOM_FP8_CK,
                            (max(gradients - max(late_g, fp8_unmade), 0), once,
                             max(recomputed - bottom_less, 0) + p.bottom_input_t * tokens, copies, fp8_bwd)))
        # the backward moments' activations (backward.top holds the most: offloaded sets come back beside the
        # recomputed layer; backward.bottom for completeness)
        bwd_acts = max(kept_bwd + once + recomputed + rerun_out + copies,
                       once + recomputed - bottom_less + p.bottom_input_t * tokens + rerun_out + copies,
                       stash + once + fwd_copies)  # (offloaded without checkpointing: the forward stash)
    else:
        bottom_less = p.bottom_less_t * tokens + p.bottom_less_ts * token_seq + p.bottom_less_c \
            + p.bottom_less_b * t.batch_size if saving_layers else 0
        acts_layers = saving_layers * per_layer - (p.layers_less_t * tokens + p.layers_less_ts * token_seq
                                                   + p.layers_less_c + p.layers_less_b * t.batch_size
                                                   if saving_layers else 0)
        recomputed = 0
        activations = acts_layers + once + head_saved + autocast_copies
        layers_detail = acts_layers
        # The bottom layer's autocast weight casts are still held by its matmuls' saved tensors.
        bottom_acts, bottom_copies = (per_layer - bottom_less, p.layer_copies - p.bottom_cast_less) \
            if saving_layers else (0, 0)
        moments = [
            # (the top layer's down_proj input and after not made yet when an up-projection adapter's path is the
            # widest forward transient: activations.py forward_unmade_per_token; never below the other transients)
            ("forward.layer", _m.FWD_LAYER,
             (acc, acts_layers - (max(0, min(p.layer_fwd_unmade_t * tokens, p.layer_fwd_t * tokens + beside_mlp
                                           - fwd_others)) if saving_layers else 0),
              once + p.emb_local_t * tokens, fwd_layer_copies, layer_fwd_t)),
            ("forward.loss", _m.FWD_LOSS,
             (acc, acts_layers, once - p.loss_less_ts * rows * seq * seq, autocast_copies, head_saved, loss_fwd_t,
              grad_fwd)),
            ("backward.start", _m.BWD_START,
             (acc, acts_layers, once - fwd_only, autocast_copies, head_saved, loss_bwd_t, grad_fwd)),
        ]
        once_bwd = once - fwd_only
        if head_bwd_t >= 0:
            moments.append(("backward.head", _m.BWD_HEAD, (acc, acts_layers, once_bwd, autocast_copies,
                                                                  p.norm_saved_t * tokens, head_bwd_t)))
        if p.final_norm_bwd_t and saving_layers:
            # Full fine-tuning: the final RMSNorm's backward, before the top layer's, runs in fp32 beside every layer's
            # saved set, the head's gradient made and the norm's fp32 input still saved (its normalized copy freed
            # with the weight's mul node). Measured with the tracer's live tensors: a 4-layer llama (hidden 256, MLP
            # 704) full pure-bf16 b1 s1024 with the cut loss, the backward's peak at that norm's mul with five fp32
            # (1, 1024, 256) tensors, 5,242,880 B, beside the (1, 1024, 256) fp32 input, 1,048,576 B (-3.45 % without
            # this moment, -0.04 % with it); --grid cp tinyllama full cp2 no-gc with the cut loss: the peak's
            # 167,772,672 B of temporaries, five fp32 (4,096, 2,048) tensors (-1.89 % without, -0.00 % with). With
            # checkpointing the layers keep only their inputs there: never the peak, not modelled.
            moments.append(("backward.final_norm", _m.BWD_FINAL_NORM,
                            (g_top, acts_layers, once_bwd, autocast_copies, p.final_norm_saved_t * tokens,
                             p.final_norm_bwd_t * tokens)))
        # (4-bit over an fp32 load, memory/qlora_fp32.py: the head's cast, the only copy, is freed by its backward;
        # measured with the tracer's live tensors, --grid qlora-fp32load: no (vocab, hidden) 16-bit tensor at the
        # top layer's peak)
        top_copies = autocast_copies - (p.autocast_head_copy if p.dequant_fwd.fp32_compute else 0)
        moments.append(("backward.top", _m.BWD_TOP_NODE if node_g else _m.BWD_TOP,
                        (g_top + node_g, acts_layers - node_freed, once_bwd, top_copies - node_cast,
                         max(node_bwd_t, fp8_bwd))))
        if p.lisa_below and saving_layers:
            # LISA (memory/lisa.py): the lowest trained layer's backward, every trained layer's gradient made (its own
            # attention's counted too), the frozen layers below it still holding their saved sets (measured with the
            # tracer, --grid lisa: phi-3-mini cut to 8 layers, 4 trained, eager b1 s512, -2.28 % without this moment)
            below = p.lisa_below * (p.lisa_frozen_t * tokens + p.lisa_frozen_ts * token_seq)
            moments.append(("backward.lowest_trained", _m.BWD_LOWEST_TRAINED,
                            (gradients - late_g, below, once_bwd, per_layer, p.layer_copies, layer_bwd_t)))
        if t.optimizer_in_bwd:
            moments.append(("backward.head_step", _m.BWD_HEAD_STEP,
                            (g_top, acts_layers, once_bwd, autocast_copies, opt_temp)))
        f_t, f_ts, n_frozen, lt_t, lt_ts, lt_copies, lt_bwd_t, lt_bwd_c, lt_g = p.falcon_lt
        if lt_t and saving_layers:  # Falcon-7B freeze under autocast: the lowest trained layer (_falcon_freeze_lowest)
            # (and the frozen bottom layer's backward.bottom holds its own saved set, with no autocast copies)
            bottom_acts, bottom_copies = f_t * tokens + f_ts * token_seq, 0
            moments.append(("backward.lowest_trained", _m.BWD_LOWEST_TRAINED,
                            (max(gradients - late_g - lt_g, 0), n_frozen * bottom_acts, once_bwd,
                             lt_t * tokens + lt_ts * token_seq, lt_copies, lt_bwd_t * tokens + lt_bwd_c)))
        # (freeze with its tied head trained: the bottom moment is a frozen layer's, _freeze_bottom_gradient_bytes)
        frozen_bottom = t.method == "freeze" and not p.bottom_layer_grads
        moments.append(("backward.bottom", _m.BWD_BOTTOM,
                        (gradients - late_bottom + node_g, once_bwd, bottom_acts - node_freed,
                         bottom_copies - node_cast, frozen_bwd_t if frozen_bottom else node_bwd_t)))
        if p.bottom_mixer_t and saving_layers:  # Falcon-H1: the bottom layer's scan backward (as above)
            moments.append(("backward.bottom_mixer", _m.BWD_BOTTOM,
                            (gradients - late_g, once_bwd, max(bottom_acts - p.bottom_mixer_freed_t * tokens, 0),
                             bottom_copies, p.bottom_mixer_t * tokens)))
        if fp8_bwd:
            moments.append(("backward.bottom_fp8", _m.BWD_BOTTOM_FP8,
                            (max(gradients - max(late_g, fp8_unmade), 0), once_bwd, bottom_acts, bottom_copies,
                             fp8_bwd)))
        bwd_acts = once_bwd + bottom_acts + bottom_copies  # backward.bottom's activations (the others are forward's)
    reference = 0
    forward_moments = 2
    # The casts alive after the policy's forward: under checkpointing over frozen weights the head's only, as at the
    # loss (the reference's own casts are transient too: measured with the tracer's live tensors, --grid rl
    # qwen2.5-0.5b Online DPO LoRA amp-bf16 with checkpointing b2: one (vocab, hidden) 16-bit cast at the reference's
    # log-softmax, +20.05 % with every layer's counted)
    after_copies = loss_copies if p.checkpointing or p.offload else autocast_copies
    if p.reference is not None:  # DPO: the reference's no-grad forward after the policy's (memory/preference.py)
        reference = p.reference.peak(tokens, t.batch_size * min(seq - p.prompt_len, seq - 1), seq)
        layout = _m.FWD_REFERENCE_CK if p.checkpointing or p.offload else _m.FWD_REFERENCE
        moments.insert(2, ("forward.reference", layout,
                           (acc, layers_detail, once, after_copies, head_saved, reference)))
        forward_moments = 3
    rewarded = 0
    if p.reward is not None and not _rl.is_rl(t):
        # Online DPO's reward model after the reference, beside its log-probs (memory/reward_scoring.py)
        rewarded = (p.reward.peak(tokens)
                    + t.batch_size * min(seq - p.prompt_len, seq - 1) * p.logits_bytes)
        layout = _m.FWD_REWARD_CK if p.checkpointing or p.offload else _m.FWD_REWARD
        moments.insert(forward_moments, ("forward.reward", layout,
                                         (acc, layers_detail, once, after_copies, head_saved, rewarded)))
        forward_moments += 1
    rl_temp = 0
    if p.rl is not None:  # GRPO: generate() and the no-grad log-prob passes run before the step (memory/rl.py)
        gen, passes = p.rl.moments(t, gradients, base[0])
        g_kv = g_rest = 0
        extra: list[_m.RawMoment] = []
        if gen is not None and len(gen) == 4:
            _, _, g_kv, g_rest = gen
            extra.append(("forward.generate", _m.FWD_GENERATE, gen))
        elif gen is not None:  # --use-vllm server: the weight sync's packed broadcast buffers
            g_rest = gen[1]
            extra.append(("forward.weight_sync", _m.FWD_WEIGHT_SYNC, gen))
        if passes is not None:
            extra.append(("forward.logprobs", _m.FWD_LOGPROBS, passes))
        if p.reward is not None and _rl.is_rl(t):  # GRPO/RLOO: the reward model after the passes (reward_scoring.py)
            rewarded = _reward_scoring.rl_forward_bytes(t, p.reward)
            extra.append(("forward.reward", _m.FWD_RL_REWARD,
                          (gradients if _rl.gradients_at_generation(t) else 0, rewarded)))
        moments[0:0] = extra
        forward_moments += len(extra)
        rl_temp = max(g_rest, passes[1] if passes is not None else 0, rewarded)
        details["kv_cache.generation"] = g_kv
        details["temporaries.generation"] = g_rest
        details["temporaries.logprob_pass"] = passes[1] if passes is not None else 0
    # Backward-end temporaries (tied embeddings or accumulation; see _activation_plan).
    end_t = p.end_t if p.end_tied or accum else 0
    moments.append(("backward.end", _m.BWD_END_EMBED, (gradients, end_t, p.end_in_t * tokens)) if p.end_in_t else
                   ("backward.end", _m.BWD_END, (gradients, end_t)))
    end_t += p.end_in_t * tokens
    if t.optimizer_in_bwd:
        # memory/savers.py: the first (head's) step runs in backward with every layer's activations alive;
        # the optimizer-step phase then has nothing left to do.
        step_moment: _m.RawMoment = ("optimizer_step.done", _m.STEP_DONE, ())
    elif _badam.active(t):
        # BAdam's _grad_to_hp frees each 16-bit gradient as its fp32 copy (in opt_temp) is made (memory/badam.py)
        step_moment = ("optimizer_step.step", _m.STEP, (0, opt_temp))
    else:
        step_moment = ("optimizer_step.step", _m.STEP, (gradients, opt_temp))
    # The temporaries component: the most of them alive at one moment (Liger's head gradient, allocated in forward,
    # is alive beside the loss's own temporaries), so no moment holds more of a component than the component.
    # Written out per moment (the temporaries terms of each layout in memory/moments.py; a generic sum over the
    # moments cost half of estimate's time); tests/test_explain.py checks it is the largest moment's.
    # (node_bwd_t: a product node's temporaries, which can exceed layer_bwd_t: a frozen gelu_new MLP under amp)
    temporaries = max(opt_temp, layer_fwd_t, recompute_t, loss_fwd_t + grad_fwd, loss_bwd_t + grad_fwd, head_bwd_t,
                      layer_bwd_t, node_bwd_t, fp8_bwd, p.bottom_mixer_t * tokens, end_t, reference, rewarded, rl_temp,
                      p.offload_norm_t * tokens if p.offload and not p.checkpointing and saving_layers else 0,
                      p.final_norm_bwd_t * tokens if not (p.checkpointing or p.offload) and saving_layers else 0)
    # Offloaded activations: in backward a layer's set comes back from the host beside the recomputed layer; on a
    # model whose head saves little (a 1-layer toy) that moment can hold more activations than forward kept.
    if bwd_acts > activations:
        details["activations.backward_excess"] = bwd_acts - activations
        activations = bwd_acts
    details["activations.layers"] = layers_detail
    details["activations.recomputed_layer"] = recomputed
    details["activations.per_layer"] = per_layer
    details["activations.bottom_layer"] = max(per_layer - bottom_less, 0) if saving_layers else 0  # its saved set
    # What all the layers save less than saving_layers x per_layer without checkpointing (LoRA's bottom layer,
    # activations.py input_grad; a MoE model's dense bottom layers, which save more when their MLP is adapted).
    less = p.layers_less_t * tokens + p.layers_less_ts * token_seq + p.layers_less_c + p.layers_less_b * t.batch_size \
        if saving_layers and not p.checkpointing else 0
    details["activations.bottom_layer_less"] = max(less, 0)
    details["activations.bottom_layers_more"] = max(-less, 0)
    details["activations.shared"] = once
    details["activations.head_and_loss"] = head_saved
    details["activations.autocast_weight_copies"] = autocast_copies
    details["temporaries.loss_forward"] = loss_fwd_t
    details["temporaries.loss_backward"] = loss_bwd_t
    details["temporaries.layer_backward"] = layer_bwd_t
    details["temporaries.layer_forward"] = layer_fwd_t
    if p.final_norm_bwd_t and not (p.checkpointing or p.offload) and saving_layers:  # backward.final_norm
        details["temporaries.final_norm_backward"] = p.final_norm_bwd_t * tokens
    if recompute_t > layer_fwd_t:  # a checkpointed layer's rerun forward: DoRA's weight norm on its MLP temporaries
        details["temporaries.layer_recompute"] = recompute_t
    details["temporaries.backward_end"] = end_t
    if p.offload or p.ac_offload:
        details["activations.offloaded_to_host"] = host_t
    if p.once_c:  # Unsloth's QLoRA dequantization buffers, part of `shared` (for explain)
        details["activations.unsloth_weight_buffer"] = p.once_c
    if p.once_b:  # p-tuning / prefix projection: the prompt encoder's saved set, part of `shared` (for explain)
        details["activations.prompt_encoder"] = p.once_b * t.batch_size
    if p.reference is not None:
        details["temporaries.reference_forward"] = reference
    if p.reward is not None:
        details["temporaries.reward_forward"] = rewarded
    if p.loss != "hf":  # loss savers (memory/loss.py): their own moments, for explain
        details["activations.loss_saved"] = head_saved - p.norm_saved_t * tokens
        details["temporaries.head_gradient_in_forward"] = grad_fwd
        details["temporaries.head_backward"] = max(head_bwd_t, 0)
    if p.liger_ce:  # the head's backward after Liger's cross-entropy, for explain
        details["temporaries.head_backward"] = head_bwd_t
    if p.router_aux[0]:  # the MoE router's aux loss: one added term per moment, and its own forward moment
        forward_moments, aux_acts, aux_t = _router_aux.add_moments(moments, forward_moments, tokens, p.router_aux,
                                                                   details)
        activations += aux_acts
        temporaries = max(temporaries, aux_t)
    # moments[:forward_moments] are the forward's, the rest the backward's: each phase is `base` + its largest moment.
    b0 = sum(base)
    fwd, bwd = moments[:forward_moments], moments[forward_moments:]
    phases = {"forward": b0 + max([sum(x[2]) for x in fwd]),
              "backward": b0 + max([sum(x[2]) for x in bwd]), "optimizer_step": b0 + sum(step_moment[2])}
    moments.append(step_moment)
    return phases, tuple(moments), activations, temporaries
