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

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING

from vramcalc.core.memory.optimizer import PROJECTED_OPTIMIZERS, optimizer_bytes
from vramcalc.core.memory.weights import StoredTensor, TensorGroups, tensor_groups
from vramcalc.core.params import inventory
from vramcalc.core.units import ceil_div

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.memory.precision import Recipe
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


@dataclass(frozen=True, slots=True)
class StateBytes:
    """Model-state bytes of a set of tensors (one layer, the root, a pipeline stage), from its own tensors."""

    weights: int
    gradients: int
    moments: int
    master_weights: int
    step_temporaries: int
    fp32_grad_bytes: int
    trainable: int
    frozen_grads: int  # the frozen base parameters' gradients under --fsdp-frozen-grads (FSDP1 flat units)


def state_bytes(tensors: Iterable[tuple[StoredTensor, int]], recipe: Recipe, training: TrainingSpec,
                grad_elem_bytes: int, tp: int = 1) -> StateBytes:
    """Weights, gradients and optimizer memory of (tensor, times) pairs on one tensor-parallel rank, by the rules
    memory.estimate applies to the whole model (weights.py per tensor, optimizer.py optimizer_bytes per tensor)."""
    weights = trainable = frozen = 0
    shards: list[tuple[tuple[int, ...], int]] = []
    for x, times in tensors:
        k = x.count * times
        if not k:
            continue
        weights += k * x.bytes_each(tp)
        if x.trainable:
            shards.append((x.shard_shape(tp), k))
            trainable += k * x.numel_each(tp)
        elif x.kind not in ("adapter", "buffer"):
            frozen += k * x.numel_each(tp)
    # GaLore / APOLLO step whole matrices of the model (optimizer.py needs its inventory); the spec allows them only
    # unsharded (one GPU or plain data parallel), where every rank holds the whole state, counted by memory.estimate,
    # and a unit's share here is never read: each tensor is counted at Adam's two moments (an upper bound).
    # (the projection's own options go with it: the spec refuses a rank or targets without a projected optimizer)
    opt = optimizer_bytes(tuple(shards), recipe, replace(training, optimizer="adamw", optimizer_rank=None,
                                                         optimizer_targets="attn-mlp")
                          if training.optimizer in PROJECTED_OPTIMIZERS else training)
    # memory/__init__.py _shard: the fp32 gradients a master-weight optimizer is handed, part of its temporaries
    fp32 = min(4 * trainable, opt.step_temporaries) if recipe.master_weights else 0
    return StateBytes(weights, trainable * grad_elem_bytes, opt.moments, opt.master_weights, opt.step_temporaries,
                      fp32, trainable, frozen * grad_elem_bytes)


def _most(states: Iterable[StateBytes]) -> StateBytes:
    """Each component's largest value over `states` (the busiest stage per component: an upper bound)."""
    rows = list(states)
    return StateBytes(*(max(getattr(r, f) for r in rows) for f in StateBytes.__slots__))


@dataclass(frozen=True, slots=True)
class Units:
    """What one GPU gathers or holds beyond its shard, in bytes of its own tensors (memory/weights.py
    tensor_groups), not as a parameter share of the replica's totals: the root (embeddings, final norm, head)
    and the layers have different bytes per parameter under QLoRA, LoRA, the PEFT methods, freeze and amp."""

    fsdp_unit: int  # FSDP full sharding: the root unit + the current and the prefetched layer
    fsdp_grad_unit: int  # one layer unit's unsharded gradient (the root's when the model has no layers)
    zero3_unit: int  # DeepSpeed ZeRO-3: the largest single module's own bytes
    zero3_grad_unit: int  # that module's (the largest trainable module's) gradient
    prefetch_bucket: int  # DS_PREFETCH_BUCKET elements at the widest part's bytes per element
    mixed_elements: bool  # the root and the layers differ in bytes per element
    stage: StateBytes | None  # the busiest tensor/pipeline-parallel rank (None: tp = pp = 1)
    frozen_grads: int  # --fsdp-frozen-grads: every layer's frozen weights' gradients on the busiest rank
    frozen_grad_unit: int  # --fsdp-frozen-grads: one layer unit's gradient, adapters and frozen weights


def _modules(tensors: Iterable[StoredTensor], grad_elem_bytes: int) -> Iterable[tuple[int, int]]:
    """(own bytes, own gradient bytes) of each module (norms left out, as largest_module_params does)."""
    own: dict[str, list[int]] = {}
    for x in tensors:
        if x.kind in ("norm", "buffer"):
            continue
        entry = own.setdefault(x.module, [0, 0])
        entry[0] += x.bytes_each()
        entry[1] += x.numel_each() * grad_elem_bytes if x.trainable else 0
    return ((b, g) for b, g in own.values())


def units(model: ModelSpec, t: TrainingSpec, recipe: Recipe, grad_elem_bytes: int) -> Units:
    """The gathered units and the busiest tp/pp rank of `model` under `t`, from the run's tensors."""
    g = tensor_groups(model, t, recipe)
    layers = [(n, state_bytes(((x, 1) for x in one), recipe, t, grad_elem_bytes), one) for n, one in g.layers]
    root = state_bytes(((x, 1) for x in g.root), recipe, t, grad_elem_bytes)
    n_layers = sum(n for n, _, _ in layers)
    # FSDP wrapped per decoder layer (transformer_auto_wrap_policy): the root unit stays gathered through forward
    # and backward, plus the current and the prefetched layer (the heaviest kind of layer: dense bottom layers and
    # MoE layers differ); one layer's unsharded gradient waits for its reduce-scatter.
    layer_w = max((s.weights for _, s, _ in layers), default=0)
    fsdp_unit = root.weights + min(2, n_layers) * layer_w
    fsdp_grad = max((s.gradients for _, s, _ in layers), default=0) if layers else root.gradients
    own = _own_units(model, g, t)
    if own:
        # torchtune shard_model (training/_distributed.py): fully_shard on every module a shard condition names
        # (custom_sharded_layers) before the root. Under FSDP2 a non-root unit is resharded after its forward and
        # gathered again for its backward, so the root keeps only what no unit took (the final norm); at any moment
        # the unit in flight and the next one are gathered: a layer beside the largest neighbour, a layer or an
        # own unit (the embedding first, the head last). Its unsharded gradient waits for its reduce-scatter.
        own_s = [state_bytes(((x, 1) for x in part), recipe, t, grad_elem_bytes) for part in own]
        taken = {id(x) for part in own for x in part}
        rest = state_bytes(((x, 1) for x in g.root if id(x) not in taken), recipe, t, grad_elem_bytes)
        neighbour = max([layer_w if n_layers >= 2 else 0, *(s.weights for s in own_s)])
        fsdp_unit = rest.weights + (layer_w if n_layers else 0) + neighbour
        fsdp_grad = max([fsdp_grad, *(s.gradients for s in own_s)])
    # DeepSpeed gathers module by module: the largest single module with its gradient before the reduce-scatter
    # (stage3.py estimate_zero3_model_states_mem_needs: 4 x largest_layer_params in 16 bits).
    mods = [m for part in (g.embed, g.head, *(one for _, _, one in layers)) for m in _modules(part, grad_elem_bytes)]
    # The prefetch bucket holds the next modules' parameters: its elements at the widest part's bytes per element
    # (the root or a kind of layer), exact where every parameter has the same width.
    widths = {w for w in (_width(part) for part in (g.root, *(one for _, _, one in layers))) if w is not None}
    return Units(
        fsdp_unit=fsdp_unit, fsdp_grad_unit=fsdp_grad,
        zero3_unit=max((b for b, _ in mods), default=0), zero3_grad_unit=max((gr for _, gr in mods), default=0),
        prefetch_bucket=max((ceil_div(DS_PREFETCH_BUCKET * w.numerator, w.denominator) for w in widths), default=0),
        mixed_elements=len(widths) > 1, stage=_stage(model, g, t, recipe, grad_elem_bytes),
        frozen_grads=_layers_frozen(model, g, t, recipe, grad_elem_bytes),
        frozen_grad_unit=max((s.gradients + s.frozen_grads for s in
                              (state_bytes(((x, 1) for x in one), recipe, t, grad_elem_bytes, t.tp)
                               for _, one in g.layers)), default=0),
    )


def _own_units(model: ModelSpec, g: TensorGroups, t: TrainingSpec) -> list[tuple[StoredTensor, ...]]:
    """The root's tensors that --fsdp-units wraps as their own units: the input embedding (embed_tokens), the
    LM head (lm_head). A head tied to the embedding is the embedding's weight, read again by the head at the end of
    the forward: that unit is counted gathered with the root (an upper bound), as without --fsdp-units."""
    if model.tie_word_embeddings:
        return []
    parts: list[tuple[StoredTensor, ...]] = []
    if "embed_tokens" in t.fsdp_units:
        parts.append(tuple(x for x in g.embed if x.kind == "embedding"))
    if "lm_head" in t.fsdp_units:
        parts.append(tuple(x for x in g.head if x.kind == "head"))
    return [p for p in parts if p]


def _width(tensors: Iterable[StoredTensor]) -> Fraction | None:
    """Bytes per parameter element of a part of the model (its buffers left out); None for an empty part."""
    params = [x for x in tensors if x.kind != "buffer"]
    numel = sum(x.count * x.numel_each() for x in params)
    return Fraction(sum(x.count * x.bytes_each() for x in params), numel) if numel else None


def _all(g: TensorGroups) -> Iterable[StoredTensor]:
    yield from g.embed
    yield from g.head
    yield from g.shared
    for _, one in g.layers:
        yield from one


def _stage_layers(model: ModelSpec, pp: int) -> int:
    return ceil_div(model.num_layers or 1, pp)


def _layers_frozen(model: ModelSpec, g: TensorGroups, t: TrainingSpec, recipe: Recipe, grad_elem_bytes: int) -> int:
    """Frozen layer weights' gradients on the busiest rank (the flat units of --fsdp-frozen-grads)."""
    per = [(n, state_bytes(((x, 1) for x in one), recipe, t, grad_elem_bytes, t.tp).frozen_grads)
           for n, one in g.layers]
    if t.pp == 1:
        return sum(n * f for n, f in per)
    return _stage_layers(model, t.pp) * max((f for _, f in per), default=0)


def _stage(model: ModelSpec, g: TensorGroups, t: TrainingSpec, recipe: Recipe, grad_elem_bytes: int
           ) -> StateBytes | None:
    """Model states of the busiest GPU of one replica split by tensor and pipeline parallelism, from its tensors.

    Megatron splits every Linear, the embedding and the LM head across the tp group (column/row parallel, vocab
    parallel: Shoeybi et al. 2019 §3); norms, biases, routers, buffers and adapters are taken as replicated.
    Pipeline stages hold ceil(L / pp) layers; the first adds the embeddings, the last the final norm and head
    (Megatron keeps a copy of a tied embedding on the last stage). Where the layers differ (dense bottom layers,
    frozen ones) each component is the largest of a stage of the heaviest kind: exact for uniform layers.
    """
    tp, pp = t.tp, t.pp
    if tp == 1 and pp == 1:
        return None
    if t.tp_layout == "hf":  # transformers' tp_plan (memory/hf_tp.py): the tensors of one rank's model, tp 1 here
        from vramcalc.core.memory import hf_tp

        r = tensor_groups(hf_tp.rank_view(model, tp), t, recipe)
        return state_bytes([(hf_tp.rank_tensor(x, tp), 1) for x in (*r.root, *r.shared)]
                           + [(x, n) for n, one in r.layers for x in one], recipe, t, grad_elem_bytes)

    def states(pairs: Iterable[tuple[StoredTensor, int]]) -> StateBytes:
        return state_bytes(pairs, recipe, t, grad_elem_bytes, tp)

    shared = [(x, 1) for x in g.shared]
    if not g.layers:  # a parameter count only: one tensor, split over tp x pp
        return states([(StoredTensor(x.module, x.kind, (ceil_div(x.shape[0], pp), *x.shape[1:]), x.count, x.elem,
                                     x.trainable), 1) for x in g.root] + shared)
    if pp == 1:
        return states([(x, 1) for x in g.root] + shared + [(x, n) for n, one in g.layers for x in one])
    k = _stage_layers(model, pp)
    tied = [x for x in g.embed if x.kind == "embedding"] if model.tie_word_embeddings else []
    first = [(x, 1) for x in g.embed] + shared
    last = [(x, 1) for x in (*g.head, *tied)] + shared
    return _most(states(end + [(x, k) for x in one]) for _, one in g.layers for end in (first, last))


def gathered_cast_params(model: ModelSpec, t: TrainingSpec, recipe: Recipe) -> tuple[int, int]:
    """Under ZeRO-3 / FSDP full sharding: (the parameters autocast casts to 16 bits at once, those of the gathered
    unit's block Linears and head; the heaviest layer's own Linears). The 16-bit copies are freed with the unit
    (memory/__init__.py)."""
    g = tensor_groups(model, t, recipe)

    def cast(xs: Iterable[StoredTensor]) -> int:
        return sum(x.count * x.numel_each() for x in xs if x.cast)

    layer = max((cast(one) for _, one in g.layers), default=0)
    if t.zero > 0:  # DeepSpeed's unit: one module (a Linear or the head)
        return max((x.numel_each() for x in _all(g) if x.cast), default=0), layer
    n = sum(k for k, _ in g.layers)
    return cast(g.root) + min(2, n) * layer, layer


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
    if t.tp == 1 or t.tp_layout == "hf":  # hf: memory/hf_tp.py rank_view counts one rank's widths instead
        return tokens
    if t.sequence_parallel:
        return ceil_div(tokens, t.tp)
    return ceil_div(tokens * (10 * t.tp + 24), 34 * t.tp)


def shard(model: ModelSpec, t: TrainingSpec, s: ModelStates, tokens: int, deepspeed_fp32_grad_partition: bool,
          u: Units) -> PerGpu:
    """Per-GPU model states, communication buffers and per-node host RAM for the layout in `t`.

    `deepspeed_fp32_grad_partition`: the recipe keeps fp32 master weights, so DeepSpeed's ZeRO-3 reduces
    gradients straight into an fp32 partition (grad_accum_dtype fp32) that the optimizer reads. `u`: the
    gathered units' and the busiest tensor/pipeline rank's bytes (`units`).
    """
    notes: list[str] = []
    total = s.parameters or 1
    mp_params = model_parallel_params(model, t.tp, t.pp)
    if u.stage is None:  # one replica per GPU
        w, g, mom, mw, temp = s.weights, s.gradients, s.moments, s.master_weights, s.step_temporaries
        fp32_grads, trainable = s.fp32_grad_bytes, s.trainable
    else:  # the busiest tensor/pipeline-parallel rank's own tensors
        st = u.stage
        w, g, mom, mw, temp = st.weights, st.gradients, st.moments, st.master_weights, st.step_temporaries
        fp32_grads, trainable = st.fp32_grad_bytes, st.trainable
    g_full = g
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
        # The gathered unit's own bytes (`units`: 4-bit layers and 32-bit embeddings are not a parameter share).
        gathered_w = min(u.zero3_unit if deepspeed else u.fsdp_unit, s.weights)
        gathered_g = min(u.zero3_grad_unit if deepspeed else u.fsdp_grad_unit, s.gradients)
        w = w_part + gathered_w
        g = g + gathered_g
        details["weights.partition"] = w_part
        details["weights.gathered_unit"] = gathered_w
        details["gradients.unsharded_unit"] = gathered_g
        if t.fsdp_units and not deepspeed:
            notes.append(f"FSDP units {', '.join(t.fsdp_units)} (torchtune custom_sharded_layers): "
                         + ("the head is tied to the embedding, so that unit is counted gathered with the root "
                            "(an upper bound)." if model.tie_word_embeddings else
                            "gathered only around their own forward and backward, beside one decoder layer."))
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
    unit_grads = g_full
    if t.fsdp_frozen_grads and model.has_architecture:
        unit_grads = g_full + u.frozen_grads
        one_unit = u.frozen_grad_unit  # one layer unit: its adapters' and its frozen weights' gradients
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
                # stage3_prefetch_bucket_size elements, at the model's widest element where their widths differ
                prefetch = min(u.prefetch_bucket, s.weights)
                details["communication.prefetch_bucket"] = prefetch
                comm += prefetch
            notes.append("communication: DeepSpeed's default buckets (reduce_bucket_size 5e8 elements"
                         + (", stage3_prefetch_bucket_size 5e7" if stage == 3 else "")
                         + "); HF's 'auto' config sets smaller ones. DeepSpeed's estimator leaves them out."
                         + (" The prefetch bucket is counted at the bytes per element of the model's widest part (its "
                            "root and layers differ)." if stage == 3 and u.mixed_elements else ""))
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
    if t.context_parallel > 1:  # memory/context_parallel.py: the ring's group inside the data-parallel ranks
        layout["cp"] = t.context_parallel
    if t.tp > 1 and t.tp_layout == "hf":
        from vramcalc.core.memory import hf_tp

        notes.append(hf_tp.note(t))
    elif t.tp > 1 or t.pp > 1:
        notes.append(f"tensor/pipeline parallel: model states of the busiest GPU's own tensors ({mp_params:,} of "
                     f"{total:,} parameters; norms, biases and adapters whole on every tp rank; where layers differ, "
                     "each component at a stage of the heaviest layers); activations per Korthikanti et al. 2022"
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
