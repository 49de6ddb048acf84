"""Beyond one GPU: what each GPU holds under ZeRO / FSDP sharding, tensor and pipeline parallelism.

Takes the single-GPU model states (weights, gradients, optimizer state, the optimizer step's
temporaries) and returns what one GPU keeps, the communication buffers it adds, and the host RAM
that CPU offload needs per node. Pure arithmetic on ints.

Sources, per rule below: ZeRO paper (Rajbhandari et al. 2020, arXiv:1910.02054 §5: P_os, P_os+g,
P_os+g+p); DeepSpeed deepspeed/runtime/zero/stage_1_and_2.py and stage3.py (their
estimate_zero2/3_model_states_mem_needs, which tests/test_distributed.py reproduces); PyTorch FSDP
(torch/distributed/fsdp/api.py ShardingStrategy, CPUOffload); Megatron-LM (Shoeybi et al. 2019,
arXiv:1909.08053) and Korthikanti et al. 2022 (arXiv:2205.05198) for tensor/sequence parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vramcalc.core.params import inventory
from vramcalc.core.units import ceil_div

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# DeepSpeed ZeRO config defaults (deepspeed/runtime/zero/config.py): reduce_bucket_size 5e8 elements,
# stage3_prefetch_bucket_size 5e7 elements. The IPG bucket is one flat buffer of reduce_bucket_size
# elements in the gradient dtype (stage_1_and_2.py / stage3.py, contiguous_gradients=True).
DS_REDUCE_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000


@dataclass(frozen=True, slots=True)
class ModelStates:
    """Model-state bytes of one replica (single-GPU figures), as memory.estimate computes them."""

    weights: int
    gradients: int
    moments: int
    master_weights: int
    step_temporaries: int
    fp32_grad_bytes: int  # part of step_temporaries: fp32 gradients handed to a master-weight optimizer
    parameters: int
    trainable: int
    grad_elem_bytes: int  # bytes per gradient element (16-bit grads: 2)


@dataclass(frozen=True, slots=True)
class PerGpu:
    """What one GPU holds, plus host RAM per node for offloaded states."""

    weights: int
    gradients: int
    optimizer_state: int
    step_temporaries: int
    communication: int
    cpu_offload_bytes: int  # host RAM per node
    activation_tokens: int  # tokens whose activations one GPU stores (tensor/sequence parallel)
    details: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    layout: dict[str, int | str] = field(default_factory=dict)

    @property
    def model_states(self) -> int:
        """The figure DeepSpeed's estimators report as GPU memory for params, grads and optimizer states."""
        return self.weights + self.gradients + self.optimizer_state + self.step_temporaries


def is_parallel(t: TrainingSpec) -> bool:
    """True when the run spans more than one GPU or shards/offloads anything."""
    return (t.gpus_per_node * t.nodes > 1 or t.zero > 0 or t.fsdp not in ("none", "no-shard")
            or t.offload != "none")


def world_size(t: TrainingSpec) -> int:
    return t.gpus_per_node * t.nodes


def data_parallel(t: TrainingSpec) -> int:
    """Data-parallel degree: world size / (tp × pp) (Megatron's 3-D parallel layout)."""
    return world_size(t) // (t.tp * t.pp)


def sharding_stage(t: TrainingSpec) -> int:
    """ZeRO stage equivalent: FSDP FULL_SHARD/HYBRID_SHARD = 3, SHARD_GRAD_OP = 2, NO_SHARD = 0."""
    return {"full-shard": 3, "hybrid-shard": 3, "shard-grad-op": 2}.get(t.fsdp, t.zero)


def shard_degree(t: TrainingSpec) -> int:
    """GPUs one replica's states are split over: the data-parallel group, or one node for hybrid-shard."""
    if sharding_stage(t) == 0:
        return 1
    if t.fsdp == "hybrid-shard":
        # HYBRID_SHARD: FULL_SHARD inside a node, replicate across nodes (torch fsdp api.py).
        return max(1, t.gpus_per_node // (t.tp * t.pp))
    return data_parallel(t)


def layer_and_root_params(model: ModelSpec) -> tuple[int, int]:
    """(parameters of one transformer layer, parameters outside the layers: embeddings, final norm, head)."""
    if not model.has_architecture:
        return 0, count(model)
    assert model.num_layers is not None
    per_layer = sum(t.numel for t in inventory(model) if t.per_layer)
    root = sum(t.numel for t in inventory(model) if not t.per_layer)
    return ceil_div(per_layer, model.num_layers), root


def gathered_params(model: ModelSpec, t: TrainingSpec) -> tuple[int, int]:
    """Under ZeRO-3 / FSDP full sharding: (parameters gathered at once, parameters whose gradient is unsharded)."""
    if t.zero > 0:
        # DeepSpeed counts the largest module gathered in 16 bits, with its 16-bit gradient before the
        # reduce-scatter: 4 × largest_layer_params (stage3.py estimate_zero3_model_states_mem_needs).
        unit = largest_module_params(model)
        return unit, unit
    # FSDP wrapped per decoder layer (transformer_auto_wrap_policy): the root unit (embeddings, norm,
    # head) stays gathered through forward and backward, plus the current and the prefetched layer;
    # one layer's unsharded gradient waits for its reduce-scatter.
    layer, root = layer_and_root_params(model)
    return root + 2 * layer, layer if layer else root


def count(model: ModelSpec) -> int:
    return sum(t.numel for t in inventory(model))


def largest_module_params(model: ModelSpec) -> int:
    """Parameters of the largest single module (its own tensors, weight + bias): DeepSpeed's
    `largest_layer_params` (stage3.py model_to_params: max over modules of parameters(recurse=False))."""
    if not model.has_architecture:
        return count(model)
    own: dict[str, int] = {}
    for t in inventory(model):
        if t.kind in ("norm",):
            continue
        key = t.module if t.kind in ("linear", "bias") else t.name
        if t.kind == "head" and t.name.endswith(".bias"):
            key = "lm_head"
        own[key] = own.get(key, 0) + t.numel_each
    return max(own.values())


def model_parallel_params(model: ModelSpec, tp: int, pp: int) -> int:
    """Parameters on the busiest GPU of one model replica split by tensor and pipeline parallelism.

    Megatron splits every Linear, the embedding and the LM head across the tp group (column/row
    parallel, vocab parallel: Shoeybi et al. 2019 §3); norms, biases and routers are taken as
    replicated. Pipeline stages hold ceil(L / pp) layers; the first adds the embeddings, the last the
    final norm and head (Megatron keeps a copy of a tied embedding on the last stage).
    """
    if tp == 1 and pp == 1:
        return count(model)
    if not model.has_architecture:
        return ceil_div(count(model), tp * pp)
    assert model.num_layers is not None
    n_layers = model.num_layers
    stage_layers = ceil_div(n_layers, pp)

    def split(kind: str, n: int) -> int:
        return ceil_div(n, tp) if kind in ("linear", "embedding", "head", "opaque") else n

    if pp == 1:
        return sum(split(t.kind, t.numel) for t in inventory(model))
    layers = sum(split(t.kind, t.numel * stage_layers // n_layers) for t in inventory(model) if t.per_layer)
    first = sum(split(t.kind, t.numel) for t in inventory(model)
                if not t.per_layer and t.kind in ("embedding", "position"))
    last = sum(split(t.kind, t.numel) for t in inventory(model)
               if not t.per_layer and t.kind not in ("embedding", "position"))
    if model.tie_word_embeddings:
        last += sum(split(t.kind, t.numel) for t in inventory(model) if t.kind == "embedding")
    return layers + max(first, last)


def activation_tokens(tokens: int, t: TrainingSpec) -> int:
    """Tokens' worth of activations one GPU stores under tensor parallelism.

    Korthikanti et al. 2022 eq. 2-4: per layer sbh(34 + 5as/h) without tp; sbh(10 + 24/t + 5as/(ht))
    with tensor parallelism (layer-norm inputs, dropout masks and the residual are not split); all of
    it divided by t with sequence parallelism. The flash kernels store no score matrix, so the ratio
    of the linear terms is applied to every per-token activation. Pipeline parallelism with 1F1B keeps
    pp micro-batches of L/pp layers on the first stage: L layers' worth, unchanged (Narayanan 2021 §2.2).
    """
    if t.tp == 1:
        return tokens
    if t.sequence_parallel:
        return ceil_div(tokens, t.tp)
    return ceil_div(tokens * (10 * t.tp + 24), 34 * t.tp)


def shard(model: ModelSpec, t: TrainingSpec, s: ModelStates, tokens: int, deepspeed_fp32_grad_partition: bool
          ) -> PerGpu:
    """Per-GPU model states, communication buffers and per-node host RAM for the layout in `t`.

    `deepspeed_fp32_grad_partition`: the recipe keeps fp32 master weights, so DeepSpeed's ZeRO-3 reduces
    gradients straight into an fp32 partition (grad_accum_dtype fp32) that the optimizer reads.
    """
    notes: list[str] = []
    total = s.parameters or 1
    mp_params = model_parallel_params(model, t.tp, t.pp)

    def mp(x: int) -> int:  # model-parallel share of a per-replica figure, proportional to parameters
        return x if mp_params == total else ceil_div(x * mp_params, total)

    w, g, mom, mw, temp = mp(s.weights), mp(s.gradients), mp(s.moments), mp(s.master_weights), \
        mp(s.step_temporaries)
    fp32_grads = mp(s.fp32_grad_bytes)
    trainable = mp(s.trainable)
    stage = sharding_stage(t)
    d = shard_degree(t)
    dp = data_parallel(t)
    deepspeed = t.zero > 0
    details: dict[str, int] = {}
    gathered_w = gathered_g = 0
    # ZeRO stage 1 (P_os): optimizer states, master weights and the step's work are split (ZeRO §5.1).
    if stage >= 1:
        mom, mw = ceil_div(mom, d), ceil_div(mw, d)
        if stage == 3 and deepspeed and deepspeed_fp32_grad_partition:
            # stage3.py: grad partitions accumulate in fp32 and are the optimizer's grads, so there is no
            # separate 16-bit gradient partition and no fp32 conversion in the step.
            temp = ceil_div(temp - fp32_grads, d)
            g_part = ceil_div(4 * trainable, d)
            fp32_grads = 0
        else:
            temp = ceil_div(temp, d)
            fp32_grads = ceil_div(fp32_grads, d)
            g_part = ceil_div(g, d)
    else:
        g_part = g
    # ZeRO stage 2 (P_os+g): each GPU keeps the reduced gradients of its partition only.
    if stage >= 2:
        g = g_part
    # ZeRO stage 3 (P_os+g+p): parameters are partitioned and all-gathered one unit at a time.
    if stage == 3:
        w_part = ceil_div(w, d)
        unit, grad_unit = gathered_params(model, t)
        gathered_w = ceil_div(s.weights * min(unit, total), total)
        gathered_g = ceil_div(s.gradients * min(grad_unit, total), total)
        w = w_part + gathered_w
        g = g + gathered_g
        details["weights.partition"] = w_part
        details["weights.gathered_unit"] = gathered_w
        details["gradients.unsharded_unit"] = gathered_g
    elif t.fsdp == "shard-grad-op":
        # SHARD_GRAD_OP keeps the local shard and, between forward and backward, the unsharded parameters.
        w = w + ceil_div(w, d)
        notes.append("FSDP shard-grad-op: parameters stay unsharded from forward through backward, so "
                     "each GPU holds the full weights plus its shard.")
    # FSDP1 with use_orig_params=True flattens each unit into one FlatParameter that requires grad when any
    # of its parameters does (torch/distributed/fsdp/_flat_param.py _validate_tensors_to_flatten: "logical OR";
    # the FSDP docstring warns of "higher than expected gradient memory usage"): LoRA adapters inside the
    # decoder-layer units (Lightning Fabric's FSDPStrategy sets use_orig_params=True, litgpt wraps per Block)
    # give every layer's frozen weights a gradient in the flat parameter's dtype. The root unit (embeddings,
    # final norm, head) holds no adapter and stays frozen.
    unit_grads = g_full = mp(s.gradients)
    if t.fsdp_frozen_grads and model.has_architecture:
        assert model.num_layers is not None
        layer, _ = layer_and_root_params(model)
        unit_grads = g_full + mp(layer * model.num_layers * s.grad_elem_bytes)
        one_unit = ceil_div(unit_grads, model.num_layers)
        if stage >= 2:
            g = ceil_div(unit_grads, d) + (one_unit if stage == 3 else 0)
            gathered_g = one_unit if stage == 3 else 0
            if stage == 3:
                details["gradients.unsharded_unit"] = gathered_g
        else:
            g = unit_grads
        details["gradients.frozen_in_units"] = unit_grads - g_full
        notes.append("FSDP1 flat units (--fsdp-frozen-grads): each decoder layer's flat parameter requires grad "
                     "because its adapters do, so the frozen weights get gradients too (use_orig_params=True).")
    # CPU offload (ZeRO-Offload, Ren et al. 2021; ZeRO-Infinity; FSDP CPUOffload(offload_params=True)):
    # the optimizer runs on the CPU over the partitions, so its states and gradients live in host RAM.
    host = 0
    if t.offload != "none":
        host += mom + mw + temp
        if stage >= 2:
            # Reduced gradient partitions go to pinned host buffers: ZeRO-1/2 with a master copy copies them
            # straight into the fp32 buffer counted in `temp`
            # (stage_1_and_2.py async_accumulate_grad_in_cpu_via_gpu).
            if not (stage == 2 and deepspeed_fp32_grad_partition):
                host += g - gathered_g
            g = gathered_g
        elif not deepspeed_fp32_grad_partition:
            host += ceil_div(g, d)  # ZeRO-1: full gradients stay on the GPU; the CPU optimizer gets its slice
        mom = mw = temp = 0
    if t.offload == "params":
        host += w - gathered_w
        w = gathered_w
    # Gradient accumulation under FSDP's no_sync (HF Trainer's and accelerate's accumulate, Lightning Fabric's
    # no_backward_sync): the post-backward hook returns before the reduce-scatter and leaves each unit's
    # unsharded gradient in FlatParameter.grad until the last micro-batch (torch/distributed/fsdp/
    # _runtime_utils.py _post_backward_hook `if not state._sync_gradients`; no_sync's docstring: "FSDP will
    # accumulate the full model gradients (instead of gradient shards)"); FSDP2's set_requires_gradient_sync(False)
    # keeps them unsharded too. They stay on the GPU under CPUOffload. DeepSpeed reduces every micro-batch.
    # benchmarks/fsdp_grads.py measures both rules on two CPU processes (torch 2.13: 278,528 gradient elements
    # per process under no_sync = every block parameter, frozen ones included; 139,264 synced = the shard).
    if t.fsdp in ("full-shard", "shard-grad-op", "hybrid-shard") and t.grad_accum > 1 and t.grad_sync == "deferred":
        g = unit_grads
        gathered_g = 0
        details.pop("gradients.unsharded_unit", None)  # part of the whole unsharded set now
        details["gradients.unsharded_deferred"] = g
        notes.append(f"FSDP gradient accumulation with no_sync (--grad-sync deferred, HF Trainer / accelerate / "
                     f"Lightning): each GPU keeps the unsharded gradients until micro-batch {t.grad_accum}; "
                     "--grad-sync every-micro-batch reduce-scatters each one (torchtune, sync_each_batch).")
    # Communication buffers, per GPU.
    comm = 0
    if dp > 1 or stage:
        if stage == 0 and dp > 1:
            # DDP's reducer copies every gradient into flat buckets (gradient_as_bucket_view=False by
            # default: torch/nn/parallel/distributed.py, c10d/reducer.cpp): one more gradient.
            comm = g
            details["communication.ddp_buckets"] = comm
        elif deepspeed:
            comm = min(DS_REDUCE_BUCKET, trainable) * s.grad_elem_bytes
            details["communication.reduce_bucket"] = comm
            if stage == 3:
                prefetch = ceil_div(s.weights * min(DS_PREFETCH_BUCKET, total), total)
                details["communication.prefetch_bucket"] = prefetch
                comm += prefetch
            notes.append("communication: DeepSpeed's default buckets (reduce_bucket_size 5e8 elements"
                         + (", stage3_prefetch_bucket_size 5e7" if stage == 3 else "")
                         + "); HF's 'auto' config sets smaller ones. DeepSpeed's estimator leaves them out.")
    opt_state = mom + mw
    details.update({
        "optimizer_state.moments": mom,
        "optimizer_state.master_weights": mw,
        "temporaries.optimizer_step": temp,
    })
    if host:
        details["cpu.offloaded_per_gpu"] = host
        notes.append("CPU RAM: offloaded states of the GPUs of one node (steady state). DeepSpeed's estimator"
                     " "
                     "multiplies by additional_buffer_factor 1.5; loading the model without zero.Init can "
                     "need 4 bytes × parameters per process on top.")
    layout: dict[str, int | str] = {
        "gpus_per_node": t.gpus_per_node, "nodes": t.nodes, "world_size": world_size(t),
        "tp": t.tp, "pp": t.pp, "dp": dp, "shard_degree": d, "zero_stage": stage,
        "strategy": (f"zero-{t.zero}" if t.zero else f"fsdp-{t.fsdp}" if t.fsdp != "none"
                     else "ddp" if dp > 1 else "single"),
        "offload": t.offload,
    }
    if t.tp > 1 or t.pp > 1:
        notes.append(f"tensor/pipeline parallel: model states scaled to the busiest GPU's {mp_params:,} of "
                     f"{total:,} parameters; activations per Korthikanti et al. 2022"
                     + (" with sequence parallelism" if t.sequence_parallel else "")
                     + "; pipeline stage 0 holds pp micro-batches (1F1B).")
    return PerGpu(
        weights=w, gradients=g, optimizer_state=opt_state, step_temporaries=temp, communication=comm,
        cpu_offload_bytes=host * t.gpus_per_node, activation_tokens=activation_tokens(tokens, t),
        details=details, notes=tuple(notes), layout=layout,
    )


def layout_of(total_gpus: int, node_size: int = 8) -> tuple[int, int]:
    """(gpus_per_node, nodes) for a GPU count from min_gpus: one partial node, or whole nodes."""
    return (total_gpus, 1) if total_gpus <= node_size else (node_size, total_gpus // node_size)


def gpu_counts(t: TrainingSpec, node_size: int = 8, max_gpus: int = 4096) -> list[tuple[int, int]]:
    """(gpus_per_node, nodes) layouts to try, by total GPUs: multiples of tp × pp within one node of
    `node_size`, then whole nodes. A preference or reward objective is modelled on one GPU (specs.py): one layout."""
    if t.objective != "sft":
        return [(1, 1)] if t.tp * t.pp == 1 else []
    mp = t.tp * t.pp
    out = [(n, 1) for n in range(mp, min(node_size, max_gpus) + 1, mp)]
    nodes = 2
    while node_size * nodes <= max_gpus:
        if (node_size * nodes) % mp == 0:
            out.append((node_size, nodes))
        nodes += 1
    return out
