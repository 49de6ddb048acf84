"""Optimizer state, fp32 master weights, and the temporaries of the optimizer step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import Recipe
from vramcalc.core.peft_methods import ADAPTER_DTYPE_METHODS
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.params import ParamTensor
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# bitsandbytes 8-bit optimizers (Dettmers et al. 2022, arXiv:2110.02861; bitsandbytes optim/optimizer.py):
# uint8 states quantized block-wise (blocksize 256, one fp32 absmax per block per state); tensors with
# fewer than min_8bit_size = 4096 elements keep 32-bit states.
BNB_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096


def eight_bit_rank_breakpoints(dims: tuple[int, ...]) -> tuple[int, ...]:
    """The LoRA ranks r > 1 at which an adapter matrix of r × d elements (d in `dims`) first has
    BNB_MIN_8BIT_SIZE elements, so an 8-bit optimizer swaps its fp32 states for 8-bit ones: memory can
    fall there as the rank grows, and is non-decreasing in the rank between two breakpoints."""
    return tuple(sorted({r for r in (ceil_div(BNB_MIN_8BIT_SIZE, d) for d in dims if d > 0) if r > 1}))


@dataclass(frozen=True, slots=True)
class OptimizerBytes:
    """Persistent optimizer memory and the peak temporary of one optimizer step."""

    moments: int
    master_weights: int
    step_temporaries: int
    paged: bool

    @property
    def total(self) -> int:
        return self.moments + self.master_weights


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def state_dtype(recipe: Recipe, training: TrainingSpec) -> str:
    """Dtype of 32-bit-style optimizer states: the parameter's dtype for `pure-*` (torch zeros_like), else fp32."""
    if training.method in ADAPTER_DTYPE_METHODS:
        # autocast-* keeps no master copy: the adapters' states are zeros_like(adapter) too, bf16 where the adapters
        # are (TRL's QLoRA casts them to bf16: sft_trainer.py; measured, --grid trlqlora); amp-* (an fp32 load under
        # autocast, TRL's default) keeps none either: bf16 adapters there have bf16 states (--grid qlora-fp32load)
        return training.adapter_dtype if recipe.pure or recipe.autocast16 or recipe.autocast else "fp32"
    return recipe.state if recipe.pure else "fp32"


def optimizer_bytes(
    trainable_tensors: tuple[tuple[tuple[int, ...], int], ...], recipe: Recipe, training: TrainingSpec,
    model: ModelSpec | None = None,
) -> OptimizerBytes:
    """Optimizer memory for the trainable tensors (shape, count); GaLore, APOLLO and Adam-mini need `model`
    (which tensors are projected, and each tensor's block kind)."""
    opt = training.optimizer
    if opt in LIBRARY_OPTIMIZERS:
        return _library_optimizer_bytes(trainable_tensors, recipe, training, model)
    s = dtype_bytes(state_dtype(recipe, training))
    trainable = sum(_numel(shape) * count for shape, count in trainable_tensors)
    largest = max((_numel(shape) for shape, _ in trainable_tensors), default=0)
    moments = 0
    if opt in ("adamw", "paged-adamw"):
        # Two moments, exp_avg and exp_avg_sq (Loshchilov & Hutter 2019; torch/optim/adamw.py).
        moments = 2 * s * trainable
    elif opt in ("adamw-8bit", "paged-adamw-8bit"):
        for shape, count in trainable_tensors:
            moments += eight_bit_state_bytes(_numel(shape)) * count
    elif opt.startswith("torchao-"):
        moments = torchao_state_bytes(trainable_tensors, opt, _param_bytes(recipe, training))
    elif opt == "sgd":
        moments = 0  # plain SGD keeps no state (torch/optim/sgd.py with momentum=0)
    elif opt in ("sgd-momentum", "lion"):
        # One buffer per parameter: SGD momentum_buffer; Lion's exp_avg (Chen et al. 2023, arXiv:2302.06675).
        moments = s * trainable
    elif opt in ("adafactor", "adafactor-momentum"):
        # Factored second moment (Shazeer & Stern 2018; transformers optimization.py Adafactor with
        # beta1=None): a row and a column vector per matrix, a full vector for 1-D tensors, in fp32.
        for shape, count in trainable_tensors:
            if len(shape) >= 2:
                moments += 4 * (_numel(shape[:-1]) + _numel(shape[:-2] + shape[-1:])) * count
            else:
                moments += 4 * _numel(shape) * count
        if opt == "adafactor-momentum":
            # beta1 set: state["exp_avg"] = torch.zeros_like(grad), grad cast to fp32 first (transformers
            # optimization.py Adafactor.step: `if grad.dtype in {float16, bfloat16}: grad = grad.float()`).
            moments += 4 * trainable
    master = 0
    if recipe.master_weights and not (training.method in ADAPTER_DTYPE_METHODS and training.adapter_dtype == "fp32"):
        master = 4 * trainable  # fp32 master copy (ZeRO paper §3.1; DeepSpeed bf16_optimizer.py)
    return OptimizerBytes(moments, master, _step_temporaries(opt, training, s, trainable, largest, recipe),
                          opt.startswith("paged"))


# torchao low-bit AdamW (torchao/optim/adam.py _AdamBase._new_buffer; subclass_8bit.py, subclass_4bit.py,
# subclass_fp8.py): a tensor with at least 4096 elements and a multiple of the block size gets quantized
# states, each codes (uint8; 4-bit packs two per byte; fp8 one float8 per element) + an fp32 scale per block
# + (8-bit: 256, 4-bit: 16) fp32 quantization-map entries; any other tensor keeps zeros_like(p) states
# (the parameter's dtype). The step is torch.compile'd per parameter (single_param_adam), one parameter at a time;
# what it keeps in flight is measured on the CPU (benchmarks/torchao_step.py: the allocator's peak above the step's
# start, the same for bf16 and fp32 parameters): TORCHAO_STEP_BYTES per element of the parameter (8-bit: the two
# states dequantized to fp32; 4-bit: 26) and two fp32 scales per block (the new ones). Inductor's Triton kernels may
# fuse more on CUDA: an upper bound there (the tracer cannot run torch.compile; trace/_optim.py allocates the same).
TORCHAO_STEP_BYTES = {"torchao-adamw-8bit": 8, "torchao-adamw-4bit": 26, "torchao-adamw-fp8": 0}
TORCHAO_STATES: dict[str, tuple[int, int, int]] = {  # (code bits, block size, qmap entries)
    "torchao-adamw-8bit": (8, 256, 256),
    "torchao-adamw-4bit": (4, 128, 16),
    "torchao-adamw-fp8": (8, 256, 0),
}
TORCHAO_MIN_SIZE = 4096


def torchao_state_bytes(trainable_tensors: tuple[tuple[tuple[int, ...], int], ...], opt: str,
                        param_bytes: int) -> int:
    """Two torchao AdamW states (exp_avg, exp_avg_sq) for every trainable tensor."""
    bits, block, qmap = TORCHAO_STATES[opt]
    total = 0
    for shape, count in trainable_tensors:
        n = _numel(shape)
        if n >= TORCHAO_MIN_SIZE and n % block == 0:
            one = ceil_div(n * bits, 8) + 4 * (n // block) + 4 * qmap
        else:
            one = param_bytes * n
        total += 2 * one * count
    return total


def torchao_step_bytes(opt: str, numel: int) -> int:
    """What torchao's compiled step of one quantized tensor of `numel` elements keeps in flight (TORCHAO_STEP_BYTES:
    measured); a tensor with parameter-dtype states is not measured and counts none."""
    _, block, _ = TORCHAO_STATES[opt]
    if numel < TORCHAO_MIN_SIZE or numel % block:
        return 0
    return TORCHAO_STEP_BYTES[opt] * numel + 2 * 4 * (numel // block)


def _param_bytes(recipe: Recipe, training: TrainingSpec) -> int:
    adapters = training.method in ADAPTER_DTYPE_METHODS
    return dtype_bytes(training.adapter_dtype if adapters else recipe.weight)


def _step_temporaries(opt: str, training: TrainingSpec, s: int, trainable: int, largest: int,
                      recipe: Recipe) -> int:
    impl = training.optimizer_impl
    temp = 0
    if opt == "adamw":  # bitsandbytes paged and 8-bit kernels update in place
        if impl == "foreach":
            # _multi_tensor_adamw: exp_avg_sq_sqrt = _foreach_sqrt(exp_avg_sqs) for the whole group.
            temp = s * trainable
        elif impl == "for-loop":
            # _single_tensor_adamw: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt): two live temporaries.
            temp = 2 * s * largest
    elif opt == "lion":
        temp = 2 * s * largest  # update = exp_avg.clone().mul_(b1).add(grad).sign_(): per-tensor temporaries
    elif opt in ("adafactor", "adafactor-momentum"):
        # Per tensor: fp32 copies of grad and (16-bit) param, grad**2, and the rebuilt full-size update.
        temp = (4 if recipe.weight != "fp32" else 3) * 4 * largest
    elif opt in TORCHAO_STEP_BYTES:
        temp = torchao_step_bytes(opt, largest)
    if recipe.master_weights:
        # DeepSpeed hands the optimizer fp32 gradients of the master copy (stage_1_and_2.py).
        temp += 4 * trainable
    return temp


# ---- issue 13: the library optimizers (galore_torch 1.0, apollo_torch 1.0.3, adam_mini 1.1.1) -----------------
# Each steps its parameters one by one in its own Python loop: no foreach or fused kernel exists, so
# --optimizer-impl does not apply (a note says so). Their states are torch.zeros_like of the (projected)
# gradient, i.e. the dtype of the parameters the optimizer holds: the model's dtype, or fp32 master weights.
PROJECTED_OPTIMIZERS = ("galore-adamw", "galore-adamw-8bit", "apollo-adamw", "apollo-mini")
GALORE_OPTIMIZERS = ("galore-adamw", "galore-adamw-8bit")  # GaLoreProjector: SVD, r capped at min(m, n)
LIBRARY_OPTIMIZERS = (*PROJECTED_OPTIMIZERS, "adam-mini", "muon")
# transformers trainer_optimizer.py _get_galore_optimizer / _get_apollo_optimizer: optim_args rank default 128.
HF_DEFAULT_RANK = 128
LIBRARY_NAMES = {"galore-adamw": "GaLore AdamW (galore_torch.GaLoreAdamW)",
                 "galore-adamw-8bit": "GaLore AdamW 8-bit (galore_torch.GaLoreAdamW8bit, bitsandbytes states)",
                 "apollo-adamw": "APOLLO AdamW (apollo_torch.APOLLOAdamW, channel-wise scaling)",
                 "apollo-mini": "APOLLO-Mini (apollo_torch.APOLLOAdamW, rank 1, tensor-wise scaling)",
                 "adam-mini": "Adam-mini (adam_mini.Adam_mini)",
                 "muon": "Muon (LLaMA-Factory's third_party Muon, use_muon: AdamW for the rest)"}
# Block Linears by where they sit (params.py canonical names): the attention's, the rest are the MLP's.
_ATTENTION_MODULES = frozenset(("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "q_a_proj", "q_b_proj",
                                "kv_a_proj_with_mqa", "kv_b_proj"))


def projection_rank(training: TrainingSpec) -> int:
    """GaLore/APOLLO's rank r: --optimizer-rank, HF's default 128, or APOLLO-Mini's 1."""
    if training.optimizer == "apollo-mini":
        return 1
    return training.optimizer_rank or HF_DEFAULT_RANK


def library_state_dtype(recipe: Recipe) -> str:
    """zeros_like(grad): the dtype of the parameters the optimizer steps (fp32 masters when kept)."""
    return "fp32" if recipe.master_weights else recipe.weight


def _trainable_inventory(model: ModelSpec, training: TrainingSpec) -> list[tuple[ParamTensor, int]]:
    """Each inventory tensor with its trainable count (full: all; freeze: memory/weights.py's rule)."""
    from vramcalc.core.memory.weights import _trainable_count
    from vramcalc.core.params import inventory

    out = []
    for t in inventory(model):
        count = _trainable_count(t, model, training)
        if count:
            out.append((t, count))
    return out


def is_projected(t: ParamTensor, model: ModelSpec, targets: str) -> bool:
    """Whether HF's _setup_low_rank_optimizer puts this weight in GaLore/APOLLO's projected group.

    Only nn.Linear weights are taken (transformers trainer_optimizer.py: `if not isinstance(module, nn.Linear):
    continue`): GPT-2's Conv1D blocks, the 3-D fused expert tensors of transformers 5's MoE blocks
    (modeling_mixtral.py MixtralExperts: nn.Parameter(num_experts, 2 * intermediate, hidden)) and the routers are
    not; the LM head is an nn.Linear, taken by all-linear when untied (a tied head is the embedding parameter).
    """
    if t.kind == "head":
        return targets == "all-linear" and len(t.shape) == 2 and not model.tie_word_embeddings
    if t.kind != "linear" or model.family == "gpt2" or t.module.startswith("experts."):
        return False
    attention = t.module in _ATTENTION_MODULES
    return targets in ("attn-mlp", "all-linear") or (targets == "attn") == attention


def projected_shapes(model: ModelSpec, training: TrainingSpec) -> tuple[tuple[tuple[int, int], int], ...]:
    """The (out, in) shapes and counts of the trainable weights GaLore/APOLLO project."""
    targets = training.optimizer_targets
    return tuple(((t.shape[0], t.shape[1]), c) for t, c in _trainable_inventory(model, training)
                 if is_projected(t, model, targets))


@dataclass(frozen=True, slots=True)
class ProjectedState:
    """One projected (m, n) weight: the low-rank moments and the projection matrix, per tensor, in bytes."""

    moments: int  # exp_avg + exp_avg_sq of the projected gradient
    projection: int  # the P of GaLoreProjector / GradientProjector (ortho_matrix)
    step: int  # the step's peak temporaries for this tensor (projection update included)


def projected_state(shape: tuple[int, int], rank: int, s: int, optimizer: str) -> ProjectedState:
    """galore_torch galore_projector.py / apollo_torch random_projector.py, proj_type "std" (HF's default).

    m >= n: P = Vh[:r] (r × n) and the projected gradient is grad @ P.T (m × r); m < n: P = U[:, :r] (m × r) and
    P.T @ grad (r × n). GaLore's SVD has min(m, n) singular vectors, so r is capped there; APOLLO's random P is
    r × n (or m × r) whatever r is. P is cast back to the parameter dtype; the moments are zeros_like(projected).
    """
    m, n = shape
    big, small = max(m, n), min(m, n)
    r = min(rank, small) if optimizer in GALORE_OPTIMIZERS else rank
    low = r * big
    up = 4 * m * n if s < 4 else 0  # `matrix = module_params.data.float()`: an fp32 copy of a 16-bit gradient
    projection = s * r * small
    if optimizer in GALORE_OPTIMIZERS and s == 4:
        # An fp32 gradient is not copied, and `B = Vh[:rank, :]` (or `A = U[:, :rank]`) is returned without a cast:
        # a view, so P keeps the whole k × k factor alive (k = min(m, n)).
        projection = 4 * small * small
    moments = 2 * s * low
    if optimizer == "galore-adamw-8bit":
        # galore_torch adamw8bit.py: the projected gradient becomes p.data (r × big) and bitsandbytes
        # Optimizer2State.init_state gives it 8-bit states (uint8 + an fp32 absmax per 256) when it has
        # min_8bit_size elements, fp32 states otherwise, whatever the parameter dtype.
        moments = eight_bit_state_bytes(low)
    if optimizer in GALORE_OPTIMIZERS:
        # At a projection update (step 0 and every update_proj_gap steps): torch.linalg.svd(full_matrices=False)
        # returns U (m × k), S (k), Vh (k × n) in fp32, k = min(m, n), then B = Vh[:r] cast to the param dtype.
        # cuSOLVER's own workspace is not counted (not visible to the tracer; say so in the notes).
        k = small
        # get_orthogonal_matrix also computes the unused other factor: U[:, :r] @ diag(s[:r]) (right) or
        # diag(s[:r]) @ Vh[:r] (left), r × r and big × r in fp32.
        update = up + 4 * (m * k + k + k * n) + 4 * (r * r + r * big) + (s * r * small if s < 4 else 0)
        # project_back: the full-size matmul and `* self.scale`, both alive, with the low-rank gradient, denom and
        # the low-rank update (adamw.py step).
        back = s * (3 * low + 2 * m * n)
        if optimizer == "galore-adamw-8bit":
            # adamw8bit.py step: `p.saved_data = p.data.clone()` (a full-size copy, which becomes the parameter
            # again after the step: the original storage is freed when p.data takes the low-rank gradient),
            # p.data = grad.clone() (low rank), the 8-bit kernel updates it in place, then project_back: the
            # full-size matmul and `* self.scale`, both alive, beside the low-rank gradient and p.data.
            back = s * (2 * low + 2 * m * n)
    else:
        # APOLLO update: the fp32 copy (only its shape is read), stable_randn (r × n) / sqrt(r): two fp32
        # matrices, then `.type(param dtype)`.
        update = up + 4 * 2 * r * small + s * r * small
        # apollo.py step: projected grad, denom, norm_grad (low rank), then p.grad * scaling factor and the
        # norm-growth limiter's `scaled_grad / limiter`: two full-size tensors alive.
        back = s * (3 * low + 2 * m * n)
    return ProjectedState(moments, projection, max(update, back))


def eight_bit_state_bytes(n: int) -> int:
    """bitsandbytes' two AdamW states of one n-element tensor (Optimizer2State.init_state, block-wise 8-bit)."""
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * n
    return 2 * n + 2 * 4 * ceil_div(n, BNB_BLOCK)


def _library_optimizer_bytes(trainable_tensors: tuple[tuple[tuple[int, ...], int], ...], recipe: Recipe,
                             training: TrainingSpec, model: ModelSpec | None) -> OptimizerBytes:
    opt = training.optimizer
    s = dtype_bytes(library_state_dtype(recipe))
    trainable = sum(_numel(shape) * count for shape, count in trainable_tensors)
    master = 4 * trainable if recipe.master_weights else 0
    fp32_grads = 4 * trainable if recipe.master_weights else 0  # the master copy's fp32 grads, as above
    if opt == "muon":
        if model is None or not model.has_architecture:
            raise UnsupportedCombination("muon splits the model's tensors by shape and name (2-D matrices to Muon, "
                                         "the rest to AdamW): it needs the architecture, not only a parameter count")
        moments, temp = muon_bytes(model, training, recipe)
        return OptimizerBytes(moments, master, temp + fp32_grads, False)
    if model is None or not model.has_architecture:
        if opt != "adam-mini":
            raise UnsupportedCombination(f"{opt} projects the model's weight matrices: it needs the architecture, "
                                         "not only a parameter count")
        largest = max((_numel(shape) for shape, _ in trainable_tensors), default=0)
        # A count-only preset: one block, one second-moment value (the `else` branch of Adam_mini.step).
        return OptimizerBytes(s * trainable + s, master, 2 * s * largest + fp32_grads, False)
    if opt == "adam-mini":
        moments, temp = adam_mini_bytes(model, training, s)
        return OptimizerBytes(moments, master, temp + fp32_grads, False)
    rank = projection_rank(training)
    items = _trainable_inventory(model, training)
    moments = 0
    leftover = 0  # a projected tensor's full-size update and low-rank denom, alive into the next loop iteration
    largest_rest = 0
    steps: list[int] = []
    # galore 8-bit: `p.grad = grad` (adamw8bit.py) swaps each stepped tensor's full gradient for its low-rank one,
    # so a tensor's step sees the gradients of the tensors stepped before it given back (named_parameters order:
    # the first layer's Linears in module order, then the other layers, the LM head last). Per tensor: its step
    # minus what was given back before it, plus the previous tensor's low-rank `grad` still referenced.
    given_back = given_back_all = 0
    net_steps: list[int] = []
    own_steps: list[int] = []
    head_rest = 0  # the untied LM head when unprojected: the last tensor of the first group (named_parameters order)
    for t, count in items:
        if is_projected(t, model, training.optimizer_targets):
            m, n = t.shape[0], t.shape[1]
            ps = projected_state((m, n), rank, s, opt)
            moments += (ps.moments + ps.projection) * count
            steps.append(ps.step)
            r = min(rank, min(m, n)) if opt in GALORE_OPTIMIZERS else rank
            if opt == "galore-adamw-8bit":
                # a block Linear's costliest occurrence is its first, in the first layer; the head comes after all
                head = t.kind == "head"
                net_steps.append(ps.step + leftover - (given_back_all if head else given_back))
                own_steps.append(ps.step - s * (m * n - r * max(m, n)))  # in backward: its own gradient only
                given_back += s * (m * n - r * max(m, n))
                given_back_all += s * (m * n - r * max(m, n)) * count
            # galore 8-bit: project_back's full-size results are freed inside the step; only the local
            # low-rank `grad` lives into the next iteration.
            full = 0 if opt == "galore-adamw-8bit" else m * n
            leftover = max(leftover, s * (full + r * max(m, n)))
        elif opt == "galore-adamw-8bit":
            # the unprojected group: plain bitsandbytes 8-bit AdamW, in-place kernel (no temporaries)
            moments += eight_bit_state_bytes(t.numel_each) * count
        else:
            moments += 2 * s * t.numel_each * count  # the unprojected group: Adam's two full moments
            largest_rest = max(largest_rest, t.numel_each)
            if t.kind == "head" and len(t.shape) == 2:
                head_rest = t.numel_each
    if not steps:
        raise UnsupportedCombination(
            f"{opt}: no nn.Linear weight of {model.name} matches --optimizer-targets {training.optimizer_targets} "
            "(transformers raises 'No target modules found'): choose other targets or another optimizer")
    # The unprojected group is stepped first (param_groups[0]): each tensor's denom and update are full-size
    # (adamw.py / apollo.py step); the last one's stay alive while the first projected tensor is projected.
    rest_step = 2 * s * largest_rest
    temp = max(rest_step, steps[0] + 2 * s * head_rest, max(steps) + leftover)
    if opt == "galore-adamw-8bit":
        temp = max(0, max(net_steps))
    if training.optimizer_in_bwd:
        # HF *_layerwise: one optimizer per parameter, its locals freed after each step; the embedding's gradient
        # lands last, when the activations are gone, so its full-size update is not at the backward peak.
        rest = max((t.numel_each for t, _ in items if t.kind not in ("embedding", "position")
                    and not is_projected(t, model, training.optimizer_targets)), default=0)
        temp = max(2 * s * rest, max(steps))
        if opt == "galore-adamw-8bit":
            temp = max(0, max(own_steps))
    return OptimizerBytes(moments, master, temp + fp32_grads, False)


# adam_mini.py Adam_mini.__init__ / step, by the lower-cased parameter name (substring tests, in this order):
# "bias" → Adam (m and v full); q/k ("q_proj", "k_proj", "wq", "wk", "query", "key") → m full, one v per head
# of dim * dim / n_heads elements; embeddings ("embed", "embd", "wte"), outputs ("lm_head", "output"), values
# ("v_proj", "wv", "value"), attention outputs ("o_proj", "wo", "attn.proj") and MLPs ("mlp", "linear",
# "feed_forward") → m full, one v per row (state["m"][0:rows, 0:1]); anything else (norms) → m full, one v.
# The real module names of each family decide the branch of the fused and renamed Linears (below).
_ADAM_MINI_QK_FUSED = frozenset(("gpt_neox", "falcon"))  # query_key_value: "key" matches the q/k branch
_ADAM_MINI_PER_ROW_QKV = frozenset(("phi3",))  # qkv_proj: "v_proj" matches the value branch
_ADAM_MINI_SCALAR_O = frozenset(("gpt2", "gpt_neox", "falcon", "gptj", "phi", "bloom"))  # c_proj/dense/out_proj


def _adam_mini_v(t: ParamTensor, model: ModelSpec) -> tuple[int, str]:
    """(second-moment elements, branch) of one tensor under Adam-mini's name rules."""
    from vramcalc.core.params import head_dim

    if t.kind == "bias":
        return t.numel_each, "adam"
    rows = t.shape[0]
    if t.kind in ("embedding", "head"):
        return (rows, "per-token") if len(t.shape) == 2 else (t.numel_each, "adam")  # lm_head.bias: "bias"
    if t.kind != "linear" and t.kind != "router":
        return 1, "one"  # norms, GPT-2's wpe: the else branch
    base = t.module.rsplit(".", 1)[-1]
    qk = base in ("q_proj", "k_proj") or (base == "qkv_proj" and model.family in _ADAM_MINI_QK_FUSED)
    if qk and model.family != "gpt2":
        assert model.hidden_size is not None and model.num_attention_heads is not None
        head_numel = model.hidden_size * model.hidden_size // model.num_attention_heads
        if t.numel_each % head_numel:
            raise UnsupportedCombination(
                f"adam-mini: {model.name}'s {base} ({t.numel_each:,} elements) does not split into heads of "
                f"dim * dim / n_heads = {head_numel:,} (Adam_mini views it as (-1, head_numel) and fails): "
                f"its head_dim {head_dim(model)} × heads is not the hidden size; use another optimizer")
        return t.numel_each // head_numel, "per-head"
    if base == "qkv_proj":
        return (rows, "per-row") if model.family in _ADAM_MINI_PER_ROW_QKV else (1, "one")
    if base == "o_proj" and model.family in _ADAM_MINI_SCALAR_O:
        return 1, "one"
    if base in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"):
        return 1, "one"  # MLA's latent projections match no name
    if t.module.startswith("experts."):
        # transformers 5 keeps the experts as 3-D parameters (E, out, in): state["m"][0:E, 0:1] is E × 1 × in,
        # `in` elements per expert (the gate and up halves of gate_up_proj are counted once each: a few KB over).
        return t.shape[1], "experts"
    return rows, "per-row"  # v_proj, o_proj, the MLP, the router ("mlp.gate")


def adam_mini_bytes(model: ModelSpec, training: TrainingSpec, s: int) -> tuple[int, int]:
    """(state bytes, the step's peak temporaries) of Adam-mini over the trainable tensors."""
    moments = 0
    largest = 0
    for t, count in _trainable_inventory(model, training):
        v, branch = _adam_mini_v(t, model)
        moments += s * (t.numel_each + v) * count
        largest = max(largest, t.numel_each)
    # Per tensor: `grad * grad` (full) for the mean, then `update = state["m"] * stepsize` and `p.add_(-update)`:
    # two full-size tensors alive (adam_mini.py step).
    return moments, 2 * s * largest


# ---- LLaMA-Factory use_muon (issue 13): llamafactory 0.9.5 = hiyouga/LLaMA-Factory@85b0f312 --------------------------
# train/trainer_utils.py _create_muon_optimizer: every trainable parameter with `param.ndim == 2 and "embed" not in
# name and "lm_head" not in name` goes to Muon, the rest (norms, biases, embeddings, the head, 3-D expert tensors) to
# the same optimizer's AdamW branch. third_party/muon/muon.py Muon.step, one param group, per tensor in
# named_parameters order (the Muon loop first, then the AdamW loop):
#   Muon: state["momentum_buffer"] = zeros_like(g) (the gradient's dtype); `g = g.add(buf, alpha=momentum)` (nesterov,
#   the default: a full-size tensor); u = zeropower_via_newtonschulz5(g): X = G.bfloat16() (G itself when bf16),
#   oriented wide (s × l, s = min(m, n)), X = X / (X.norm() + eps) (new), then 5 times A = X @ X.T (s × s),
#   B = b * A + c * A @ A (s × s), X = a * X + B @ X: at that line X, A, B, a * X, B @ X and the new X are alive,
#   4 m n + 2 s² bf16 elements (the B line holds at most m n + 5 s², never more). `u` stays bound until the next
#   tensor's u is returned, so the previous tensor's bf16 u is alive through the next one's iteration.
#   AdamW: state["moment1"], state["moment2"] = zeros_like(g); `g = buf1 / (eps + buf2.sqrt())`: two full-size
#   temporaries alive, with the last Muon tensor's u still bound.
MUON_SOURCE = "LLaMA-Factory third_party/muon/muon.py Muon.step (hiyouga/LLaMA-Factory@85b0f31, llamafactory 0.9.5)"
# Families whose token / position embeddings are not named "...embed..." in transformers (modeling_gpt2.py wte and
# wpe, modeling_gpt_bigcode.py wte and wpe, modeling_gptj.py wte, modeling_t5.py shared): their 2-D embeddings pass
# the name test and go to Muon.
_MUON_UNNAMED_EMBEDDINGS = frozenset(("gpt2", "gpt_bigcode", "gptj", "t5", "mt5"))


def muon_takes(t: ParamTensor, model: ModelSpec) -> bool:
    """Whether _create_muon_optimizer puts this tensor in Muon's group (2-D, not an embedding, not lm_head)."""
    if len(t.shape) != 2:
        return False
    if t.kind in ("embedding", "position"):
        return model.family in _MUON_UNNAMED_EMBEDDINGS or t.module == "relative_attention_bias"
    return not (t.kind == "head" and t.module == "lm_head")  # gpt_neox's embed_out is named "embed" too


def _muon_ns_elements(shape: tuple[int, ...]) -> int:
    """bf16 elements alive in zeropower_via_newtonschulz5's `X = a * X + B @ X` line: 4 m n + 2 s²."""
    m, n = shape
    s = min(m, n)
    return 4 * m * n + 2 * s * s


def muon_bytes(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> tuple[int, int]:
    """(state bytes, the step's peak temporaries) of LLaMA-Factory's Muon: one momentum buffer per Muon matrix, two
    AdamW moments per other tensor, all zeros_like(grad); the step as in the block comment above."""
    g = dtype_bytes(recipe.grad)
    items = _trainable_inventory(model, training)
    muon = [(t, c) for t, c in items if muon_takes(t, model)]
    adam = [(t, c) for t, c in items if not muon_takes(t, model)]
    moments = g * sum(t.numel_each * c for t, c in muon) + 2 * g * sum(t.numel_each * c for t, c in adam)
    # named_parameters order: the embeddings, each layer's matrices in module order (layer after layer), the heads.
    before = [t for t, _ in muon if not t.per_layer and t.kind in ("embedding", "position")]
    layer = [t for t, _ in muon if t.per_layer]
    after = [t for t, _ in muon if not t.per_layer and t.kind not in ("embedding", "position")]
    layers = max((c for t, c in muon if t.per_layer), default=0)
    order = before + layer * min(layers, 2) + after  # two layers give every neighbour pair
    temp = 0
    prev = 0  # the previous Muon tensor's bf16 u, numel
    for t in order:
        temp = max(temp, g * t.numel_each + 2 * _muon_ns_elements(t.shape) + 2 * prev)
        prev = t.numel_each
    largest_adam = max((t.numel_each for t, _ in adam), default=0)
    temp = max(temp, 2 * g * largest_adam + 2 * prev)  # the AdamW loop, the last Muon tensor's u still bound
    return moments, temp


def library_optimizer_notes(model: ModelSpec, training: TrainingSpec, recipe: Recipe) -> tuple[str, ...]:
    """What the estimate assumes about GaLore, APOLLO and Adam-mini."""
    opt = training.optimizer
    if training.mode != "train":
        return ()
    # (--optimizer adafactor is Adafactor without momentum, beta1=None as HF Trainer builds it: explain's source line
    # and docs/optimizers.md say so; adafactor-momentum is the one with a first moment.)
    if opt not in LIBRARY_OPTIMIZERS:
        return ()
    sd = library_state_dtype(recipe)
    kept = ("bitsandbytes 8-bit (uint8 + an fp32 absmax per 256; fp32 under 4,096 elements)"
            if opt == "galore-adamw-8bit" else f"zeros_like of the (projected) gradient, so {sd} here")
    if opt == "muon":
        kept = f"zeros_like of the gradient, so {recipe.grad} here"
    notes = [f"{LIBRARY_NAMES[opt]}: states are {kept}; its step "
             "is a per-parameter Python loop (no foreach or fused kernel: --optimizer-impl does not apply)."]
    if opt in PROJECTED_OPTIMIZERS and model.has_architecture:
        shapes = projected_shapes(model, training)
        n = sum(c for _, c in shapes)
        what = "the SVD of each projected gradient (fp32 U, S, Vh; cuSOLVER's workspace not counted)" \
            if opt in GALORE_OPTIMIZERS else "a random projection per projected gradient (stable_randn, fp32)"
        notes.append(f"{opt}: rank {projection_rank(training)}, {n:,} projected weights "
                     f"(--optimizer-targets {training.optimizer_targets}); the rest keep full Adam moments. The step "
                     f"counted is a projection update (step 0 and every update_proj_gap steps): {what}. "
                     "update_proj_gap and scale change no memory.")
    if opt == "muon" and model.has_architecture:
        items = _trainable_inventory(model, training)
        n_muon = sum(c for t, c in items if muon_takes(t, model))
        notes.append(f"muon: LLaMA-Factory's use_muon, {MUON_SOURCE}: {n_muon:,} 2-D matrices keep one momentum "
                     f"buffer each; embeddings, lm_head and tensors that are not 2-D keep AdamW's two moments; the "
                     "step counted is the largest matrix's Newton-Schulz iteration in bf16 (4 m n + 2 min(m, n)² "
                     "elements alive) beside its Nesterov update and the previous matrix's update. "
                     "torch.optim.Muon (2-D only, its NS in place) is not what use_muon runs.")
    if opt == "adam-mini":
        notes.append("adam-mini: one full first moment and one second-moment value per block (per head for q/k, "
                     "per row for embeddings, output, v, o and the MLP; one per norm; full Adam for biases), by "
                     "adam_mini.py's parameter-name rules.")
    return tuple(notes)
