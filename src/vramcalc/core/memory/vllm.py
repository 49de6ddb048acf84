"""vLLM serving memory (`--mode serve`): the profile run, the KV-cache pool and its blocks. Pure integer arithmetic.

Read from vLLM 0.11.0 (the V1 engine; the wheel's sources, `vllm/_version.py` 0.11.0):
* v1/worker/gpu_worker.py `Worker.init_device`: requested_memory = total_memory × gpu_memory_utilization, refused
  at start when the free memory is smaller; `determine_available_memory`: available KV-cache memory =
  requested_memory − non_kv_cache_memory, where utils/__init__.py `memory_profiling` sets non_kv_cache_memory =
  weights_memory + torch_peak_increase (the profile run's activation peak) + non_torch_increase (cuBLAS/NCCL and
  other memory torch does not allocate).
* v1/worker/gpu_model_runner.py `profile_run`: `_dummy_run(max_num_tokens)` (a forward of max_num_batched_tokens
  tokens split over min(max_num_seqs, tokens) requests), then `_dummy_sampler_run` on one row per request:
  `compute_logits`, v1/sample/sampler.py `Sampler.forward` (`logits.to(torch.float32)`), and the dummy top-k/top-p
  of v1/sample/ops/topk_topp_sampler.py `apply_top_k_top_p` (sort, masks, scatter; FlashInfer is an optional
  extra of the wheel, so `pip install vllm` samples with this PyTorch-native path).
* v1/kv_cache_interface.py: `AttentionSpec.page_size_bytes` = 2 × block_size × num_kv_heads × head_size × dtype
  bytes (one layer's block); `MLAAttentionSpec` = block_size × 1 × (kv_lora_rank + qk_rope_head_dim) × dtype
  bytes; `FullAttentionSpec.max_memory_usage_bytes` = cdiv(max_model_len, block_size) × page;
  `SlidingWindowSpec.max_memory_usage_bytes` = (cdiv(min(window − 1 + max_num_batched_tokens, max_model_len),
  block_size) + 1) × page.
* v1/core/kv_cache_utils.py: `get_num_blocks` = available // page // layers per group; the hybrid allocator's
  `_get_kv_cache_groups_uniform_page_size` (full and sliding layers in groups of min(#full, #sliding) layers);
  `get_kv_cache_config_from_groups` logs "GPU KV cache size: num_blocks // groups × block_size tokens";
  `get_max_concurrency_for_kv_cache_config` = num_blocks / cdiv(Σ groups' max usage, page);
  `check_enough_kv_cache_memory` refuses to start when one request of max_model_len (Σ every layer's max usage)
  does not fit the available memory.
* config/compilation.py + config/__init__.py: CUDA graphs captured for batch sizes [1, 2, 4] + range(8,
  min(2 × max_num_seqs, 512) + 1, 8) (piecewise), and the decode sizes ≤ max_num_seqs once more as full graphs
  (FULL_AND_PIECEWISE, the V1 default); `capture_model` runs after the KV cache is allocated, so in 0.11 graph
  memory is outside the requested budget (vLLM ≥ 0.21 estimates it first and takes it out of the pool).
* engine/arg_utils.py `_set_default_args` (`vllm serve`): max_num_batched_tokens 8192 and max_num_seqs 1024 on
  GPUs of ≥ 70 GiB that are not A100s, 2048 and 256 on the others; config/scheduler.py caps
  max_num_batched_tokens at max_num_seqs × max_model_len.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory.inference import kv_dtype, sliding_layers, weights
from vramcalc.core.memory.overhead import CUDA_CONTEXT_BYTES, KIB, MIB
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import head_dim, kv_heads
from vramcalc.core.units import ceil_div, dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

VLLM_VERSION = "0.11.0"
GIB = 2**30
# engine/arg_utils.py `_set_default_args`: the larger defaults need device_memory >= 70 GiB (and not an A100).
LARGE_GPU_BYTES = 70 * GIB
# Memory torch does not allocate that grows during the profile run (non_torch_increase): cuBLAS/cuBLASLt handles'
# own buffers, NCCL's for tp > 1. Approximate: published vLLM logs show 0.03-0.35 GiB on one GPU and 0.2-3.6 GiB
# per GPU with tensor parallelism (tests/data/vllm_published.yaml); 256 MiB and 512 MiB more with tp > 1.
NON_TORCH_BYTES = 256 * MIB
NCCL_BYTES = 512 * MIB
# CUDA graph memory per captured graph and layer (approximate): calibrated on one published reading, Qwen3-8B
# "Estimated CUDA graph memory: 0.52 GiB" for 51 piecewise + 35 full graphs of 36 layers (LMCache issue #3430),
# 0.52 GiB / (86 × 36) ≈ 176 KiB.
GRAPH_BYTES_PER_LAYER = 176 * KIB
# The sampler's bytes per logit (R rows × vocab) at its peak, PyTorch-native top-k/top-p (sampler.py,
# topk_topp_sampler.py apply_top_k_top_p): the model's logits (compute dtype, held by _dummy_sampler_run) + the
# fp32 copy + logits_sort fp32 + logits_idx int64 + top_k_mask bool + probs_sort fp32 (cumsum in place) +
# top_p_mask bool + the scattered fp32 result = c + 4 + 4 + 8 + 1 + 4 + 1 + 4.
SAMPLER_BYTES_PER_LOGIT = 4 + 4 + 8 + 1 + 4 + 1 + 4


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The vLLM engine arguments of one run, vLLM's defaults applied."""

    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    enforce_eager: bool


def settings(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int | None = None,
             gpu_name: str = "") -> ServeSettings:
    """--max-model-len (default: the model's max_position_embeddings, as vLLM reads config.json), and vllm serve's
    max_num_seqs / max_num_batched_tokens for the GPU (the smaller defaults without one)."""
    max_model_len = t.max_model_len or max(model.max_position_embeddings or 0, t.seq_len)
    large = gpu_memory_bytes is not None and gpu_memory_bytes >= LARGE_GPU_BYTES and "a100" not in gpu_name.lower()
    seqs = t.max_num_seqs or (1024 if large else 256)
    tokens = t.max_num_batched_tokens or (8192 if large else 2048)
    if t.max_num_seqs is None:
        seqs = min(seqs, tokens)  # arg_utils: min(default_max_num_seqs, max_num_batched_tokens)
    tokens = min(tokens, seqs * max_model_len)  # config/scheduler.py __post_init__ (chunked prefill)
    return ServeSettings(t.gpu_memory_utilization, max_model_len, seqs, tokens, t.block_size, t.enforce_eager)


@dataclass(frozen=True, slots=True)
class KvLayout:
    """The KV-cache groups of one GPU (kv_cache_utils.py): one page per layer and block."""

    page_bytes: int  # one layer's block: AttentionSpec / MLAAttentionSpec page_size_bytes
    layers: int  # attention layers on this GPU
    full_layers: int
    sliding_layers: int
    window: int  # sliding window (0: none)
    group_size: int  # layers per group: the pool holds group_size tensors of num_blocks pages
    groups_full: int
    groups_sliding: int

    @property
    def groups(self) -> int:
        return self.groups_full + self.groups_sliding


def kv_layout(model: ModelSpec, t: TrainingSpec) -> KvLayout:
    """Page size and groups: uniform (one group of every layer) or the hybrid allocator's full/sliding groups."""
    assert model.num_layers is not None
    b = dtype_bytes(kv_dtype(t))
    if model.kv_lora_rank:
        # MLAAttentionSpec: one latent "head" of kv_lora_rank + qk_rope_head_dim, the same on every TP rank.
        page = t.block_size * (model.kv_lora_rank + (model.qk_rope_head_dim or 0)) * b
    else:
        # ModelConfig.get_num_kv_heads: max(1, total_num_kv_heads // tensor_parallel_size).
        page = 2 * t.block_size * max(1, kv_heads(model) // t.tp) * head_dim(model) * b
    layers = ceil_div(model.num_layers, t.pp)
    n_sliding = min(sliding_layers(model), model.num_layers)
    sliding = ceil_div(n_sliding * layers, model.num_layers)
    full = layers - sliding
    if not sliding or not full:
        return KvLayout(page, layers, full, sliding, (model.sliding_window or 0) if sliding else 0, layers,
                        1 if full else 0, 1 if sliding else 0)
    size = min(full, sliding)  # _get_kv_cache_groups_uniform_page_size: group_size = min layers of a type
    groups_full, groups_sliding = ceil_div(full, size), ceil_div(sliding, size)
    group_size = max(ceil_div(full, groups_full), ceil_div(sliding, groups_sliding))
    return KvLayout(page, layers, full, sliding, model.sliding_window or 0, group_size, groups_full, groups_sliding)


def _sliding_blocks(layout: KvLayout, s: ServeSettings, tokens: int) -> int:
    """SlidingWindowSpec.max_memory_usage_bytes in pages for a request of `tokens` (max_model_len)."""
    held = min(layout.window - 1 + s.max_num_batched_tokens, tokens)
    return ceil_div(held, s.block_size) + 1


def blocks_per_request(layout: KvLayout, s: ServeSettings, tokens: int) -> int:
    """Blocks of the pool one request of `tokens` takes (get_max_concurrency_for_kv_cache_config's divisor)."""
    full = ceil_div(tokens, s.block_size)
    if layout.groups_sliding and not layout.groups_full:
        return _sliding_blocks(layout, s, tokens)
    return layout.groups_full * full + layout.groups_sliding * _sliding_blocks(layout, s, tokens)


def request_bytes(layout: KvLayout, s: ServeSettings, tokens: int) -> int:
    """check_enough_kv_cache_memory's need: every layer's max_memory_usage_bytes for one request of `tokens`."""
    full = ceil_div(tokens, s.block_size) * layout.page_bytes * layout.full_layers
    sliding = _sliding_blocks(layout, s, tokens) * layout.page_bytes * layout.sliding_layers if layout.window else 0
    return full + sliding


def block_bytes(layout: KvLayout) -> int:
    """Bytes of one block of the pool: a page in each of the group_size tensors."""
    return layout.page_bytes * layout.group_size


def forward_bytes_per_token(model: ModelSpec, t: TrainingSpec) -> int:
    """The profile forward's largest layer tensors per token (no autograd, this GPU's shard).

    vLLM's decoder layers (model_executor/models/llama.py LlamaDecoderLayer) keep the hidden states and the fused
    residual, and the MLP holds gate_up_proj's output (2 × intermediate) and SiluAndMul's (× 1); a plain MLP fc1's
    and its activation. Measured in published V0 profiles (Llama-3.1-8B, 20k and 29k tokens, vLLM issue #10517):
    0.92 GiB per 9,000 tokens = 109.8 KB/token against c × (3 × hidden + 3 × intermediate) = 110.6 KB: three
    hidden-sized tensors. A MoE layer holds fused_moe's intermediate caches (top-k × (2I + I) and top-k × hidden).
    """
    assert model.hidden_size is not None and model.intermediate_size is not None
    c = dtype_bytes(recipe_of(t).compute)
    h = model.hidden_size
    heads = model.num_attention_heads or 1
    q = ceil_div(heads, t.tp) * head_dim(model)
    kv = max(1, kv_heads(model) // t.tp) * head_dim(model)
    attn = (q + 2 * kv) + q
    mlp = (3 if model.mlp == "gated" else 2) * ceil_div(model.intermediate_size, t.tp)
    if model.num_experts:
        i = ceil_div(model.moe_intermediate_size or model.intermediate_size, t.tp)
        mlp = max(mlp, model.experts_per_token * (3 * i + h))
    return c * (3 * h + max(attn, mlp))


@dataclass(frozen=True, slots=True)
class ProfileBytes:
    """The terms of vLLM's memory profile on one GPU (determine_available_memory)."""

    weights: int
    forward: int  # the dummy forward of max_num_batched_tokens tokens
    sampler: int  # the dummy sampler over max_num_seqs rows (with the forward's hidden states alive)
    non_torch: int  # approximate
    cuda_graphs: int  # approximate; outside the budget in 0.11
    cuda_context: int  # outside the budget (the start snapshot is taken after it)

    @property
    def activation_peak(self) -> int:
        return max(self.forward, self.sampler)

    @property
    def non_kv(self) -> int:
        """non_kv_cache_memory: what the budget pays before the KV cache."""
        return self.weights + self.activation_peak + self.non_torch

    @property
    def outside_budget(self) -> int:
        return self.cuda_graphs + self.cuda_context


def capture_sizes(s: ServeSettings) -> tuple[int, int]:
    """(piecewise graphs, full graphs) captured (config/__init__.py, FULL_AND_PIECEWISE); (0, 0) eager."""
    if s.enforce_eager:
        return 0, 0
    largest = min(2 * s.max_num_seqs, 512)
    sizes = [x for x in [1, 2, 4, *range(8, largest + 1, 8)] if x <= s.max_num_batched_tokens]
    return len(sizes), sum(1 for x in sizes if x <= s.max_num_seqs)


def profile(model: ModelSpec, t: TrainingSpec, s: ServeSettings) -> ProfileBytes:
    """Weights, the profile run's activation peak, and the memory outside torch's tensors."""
    w, _, _ = weights(model, t)
    c = dtype_bytes(recipe_of(t).compute)
    tokens = s.max_num_batched_tokens
    rows = min(s.max_num_seqs, tokens)
    assert model.hidden_size is not None and model.vocab_size is not None and model.num_layers is not None
    forward = tokens * forward_bytes_per_token(model, t)
    # _dummy_sampler_run: the forward's hidden states (tokens × hidden) and the rows picked from them, their
    # rand_like copy, and the logits over the whole vocabulary (LogitsProcessor gathers the TP shards).
    sampler = (tokens + 2 * rows) * model.hidden_size * c + rows * model.vocab_size * (c + SAMPLER_BYTES_PER_LOGIT)
    non_torch = NON_TORCH_BYTES + (NCCL_BYTES if t.tp * t.pp > 1 else 0)
    piecewise, full = capture_sizes(s)
    graphs = (piecewise + full) * ceil_div(model.num_layers, t.pp) * GRAPH_BYTES_PER_LAYER
    return ProfileBytes(w, forward, sampler, non_torch, graphs, CUDA_CONTEXT_BYTES)


@dataclass(frozen=True, slots=True)
class KvPool:
    """The KV-cache pool vLLM allocates on one GPU of `gpu_memory_bytes`, and what it holds."""

    requested: int  # gpu_memory_utilization × total memory
    available: int  # requested − non_kv_cache_memory ("Available KV cache memory")
    num_blocks: int  # "# GPU blocks"
    pool_bytes: int  # num_blocks × block bytes (allocated)
    tokens: int  # "GPU KV cache size: N tokens"
    max_concurrency: float  # "Maximum concurrency for max_model_len tokens per request: Nx"
    request_blocks: int  # blocks one request of the run's length takes
    concurrent_requests: int  # requests of the run's length that fit at once (capped by max_num_seqs)
    starts: bool  # check_enough_kv_cache_memory passes (and the budget is positive)
    needed_for_max_len: int  # KV bytes one max_model_len request needs
    max_len_that_fits: int  # estimate_max_model_len: the longest max_model_len the pool would take


def num_blocks(layout: KvLayout, available: int) -> int:
    """get_num_blocks: available // page // layers per group (0 when nothing is available)."""
    return max(available // layout.page_bytes // layout.group_size, 0)


def concurrency(layout: KvLayout, s: ServeSettings, blocks: int, tokens: int) -> float:
    """get_max_concurrency_for_kv_cache_config for requests of `tokens`."""
    return blocks / blocks_per_request(layout, s, tokens)


def longest_max_model_len(layout: KvLayout, s: ServeSettings, available: int) -> int:
    """estimate_max_model_len: binary search of the largest max_model_len whose one request fits."""
    lo, hi, best = 1, s.max_model_len, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if request_bytes(layout, s, mid) <= available:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def kv_pool(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int, gpu_name: str = "") -> KvPool:
    """The pool on a GPU of `gpu_memory_bytes` (determine_available_memory, then get_kv_cache_config)."""
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    p = profile(model, t, s)
    layout = kv_layout(model, t)
    requested = int(gpu_memory_bytes * s.gpu_memory_utilization)
    available = requested - p.non_kv
    blocks = num_blocks(layout, available)
    needed = request_bytes(layout, s, s.max_model_len)
    per_request = blocks_per_request(layout, s, min(t.seq_len, s.max_model_len))
    fit = min((blocks - 1) // per_request if blocks else 0, s.max_num_seqs)  # block 0 is BlockPool's null block
    return KvPool(
        requested=requested, available=available, num_blocks=blocks, pool_bytes=blocks * block_bytes(layout),
        tokens=blocks // layout.groups * s.block_size,
        max_concurrency=concurrency(layout, s, blocks, s.max_model_len),
        request_blocks=per_request, concurrent_requests=max(fit, 0), starts=available > 0 and needed <= available,
        needed_for_max_len=needed, max_len_that_fits=longest_max_model_len(layout, s, max(available, 0)))


def demand_bytes(model: ModelSpec, t: TrainingSpec, requests: int, gpu_memory_bytes: int | None = None,
                 gpu_name: str = "") -> tuple[int, int]:
    """(KV bytes, budget bytes) vLLM needs for `requests` concurrent requests of t.seq_len tokens.

    The pool must hold them at once (plus BlockPool's null block) and one request of max_model_len (the start
    check); the budget (gpu_memory_utilization × total) is that plus non_kv_cache_memory.
    """
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    layout = kv_layout(model, t)
    blocks = max(requests * blocks_per_request(layout, s, min(t.seq_len, s.max_model_len)) + 1,
                 ceil_div(request_bytes(layout, s, s.max_model_len), block_bytes(layout)))
    kv = blocks * block_bytes(layout)
    return kv, kv + profile(model, t, s).non_kv


def min_gpu_bytes(model: ModelSpec, t: TrainingSpec, requests: int, gpu_memory_bytes: int | None = None,
                  gpu_name: str = "") -> int:
    """The smallest total GPU memory on which vLLM starts and holds `requests` requests of t.seq_len tokens.

    Two conditions: the budget gpu_memory_utilization × M covers the need, and what stays outside it (1 − util)
    × M holds the CUDA context and the CUDA graphs (captured after the pool is allocated).
    """
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    _, budget = demand_bytes(model, t, requests, gpu_memory_bytes, gpu_name)
    outside = profile(model, t, s).outside_budget
    by_budget = ceil_div(budget * 10**6, round(s.gpu_memory_utilization * 10**6))
    spare = 10**6 - round(s.gpu_memory_utilization * 10**6)
    by_outside = ceil_div(outside * 10**6, spare) if spare > 0 else 0
    if spare <= 0:
        return by_budget + outside  # utilization 1.0: the context and graphs do not fit in any GPU's margin
    return max(by_budget, by_outside)


def utilization_needed(model: ModelSpec, t: TrainingSpec, requests: int, gpu_memory_bytes: int,
                       gpu_name: str = "") -> float | None:
    """The smallest gpu_memory_utilization (two decimals, rounded up) for `requests` requests on this GPU, or None
    when even the largest that leaves room for the context and graphs is not enough."""
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    _, budget = demand_bytes(model, t, requests, gpu_memory_bytes, gpu_name)
    outside = profile(model, t, s).outside_budget
    needed = ceil_div(budget * 100, gpu_memory_bytes)  # in hundredths
    if needed * gpu_memory_bytes // 100 + outside > gpu_memory_bytes or needed > 100:
        return None
    return needed / 100


def colocated_bytes(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int, utilization: float) -> int:
    """Bytes a vLLM engine holds on a GPU it shares with training (TRL vllm_mode="colocate"), without the CUDA
    context (the trainer's process already has one): its whole budget, utilization × total (weights, profile
    peak, non-torch memory and the KV pool all come out of it), plus the CUDA graphs captured after it."""
    from dataclasses import replace

    run = replace(t, gpu_memory_utilization=utilization)
    s = settings(model, run, gpu_memory_bytes)
    return int(gpu_memory_bytes * utilization) + profile(model, run, s).cuda_graphs


def notes(model: ModelSpec, t: TrainingSpec, s: ServeSettings, layout: KvLayout) -> tuple[str, ...]:
    """What the serve estimate assumes, in every output format."""
    out = [f"vLLM {VLLM_VERSION} V1 engine: max_model_len {s.max_model_len:,}, max_num_seqs {s.max_num_seqs}, "
           f"max_num_batched_tokens {s.max_num_batched_tokens:,}, block_size {s.block_size}, "
           f"gpu_memory_utilization {s.gpu_memory_utilization:g}; KV {kv_dtype(t)}."]
    if layout.groups_sliding and layout.groups_full:
        out.append(f"hybrid KV cache: {layout.full_layers} full-attention and {layout.sliding_layers} sliding-window "
                   f"layers ({layout.window:,} tokens) in {layout.groups} groups of {layout.group_size} layers.")
    elif layout.groups_sliding:
        out.append(f"sliding window: every layer caches at most {layout.window:,} tokens + one chunk.")
    out.append("approximate: the profile's activation peak (the sampler's PyTorch-native top-k/top-p; torch.compile "
               "and attention-backend workspaces not modelled), non-torch memory (NCCL, cuBLAS) and CUDA graph "
               "memory (calibrated on one published reading).")
    if not s.enforce_eager:
        out.append("CUDA graphs are captured after the KV pool (vLLM 0.11), outside gpu_memory_utilization; vLLM "
                   ">= 0.21 profiles them first and takes them out of the pool instead.")
    return tuple(out)


def with_gpu_defaults(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int, gpu_name: str = "") -> TrainingSpec:
    """`t` with vllm serve's GPU-dependent defaults written in (max_num_seqs, max_num_batched_tokens)."""
    from dataclasses import replace

    if t.mode != "serve" or (t.max_num_seqs is not None and t.max_num_batched_tokens is not None):
        return t
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    return replace(t, max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def gpu_report(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int,
               gpu_name: str = "") -> tuple[tuple[str, ...], bool]:
    """What vLLM does on a GPU of `gpu_memory_bytes`, as vLLM's own log would say it, and whether it serves the run
    (starts, and its pool holds t.batch_size requests of t.seq_len tokens at once)."""
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    p = profile(model, t, s)
    pool = kv_pool(model, t, gpu_memory_bytes, gpu_name)
    lines = [f"vLLM on this GPU: {_gib(gpu_memory_bytes)} × gpu_memory_utilization {s.gpu_memory_utilization:g} = "
             f"{_gib(pool.requested)}; weights {_gib(p.weights)}, profile activation peak {_gib(p.activation_peak)}, "
             f"non-torch {_gib(p.non_torch)}; available KV cache memory {_gib(pool.available)}."]
    ok = True
    if pool.available <= 0:
        ok = False
        lines.append("vLLM refuses to start: no available memory for the cache blocks (raise --gpu-memory-utilization "
                     "or use a larger GPU / --tp).")
    elif not pool.starts:
        ok = False
        longest = f" The longest max_model_len that fits is {pool.max_len_that_fits:,}." if pool.max_len_that_fits \
            else ""
        lines.append(f"vLLM refuses to start: one request of max_model_len {s.max_model_len:,} needs "
                     f"{_gib(pool.needed_for_max_len)} of KV cache, more than the {_gib(pool.available)} available."
                     f"{longest} Lower --max-model-len or raise --gpu-memory-utilization.")
    else:
        lines.append(f"GPU KV cache size: {pool.tokens:,} tokens ({pool.num_blocks:,} blocks of {s.block_size}); "
                     f"maximum concurrency for {s.max_model_len:,} tokens per request: {pool.max_concurrency:.2f}x.")
        capped = " (capped by max_num_seqs)" if pool.concurrent_requests == s.max_num_seqs else ""
        lines.append(f"{pool.concurrent_requests:,} concurrent requests of {min(t.seq_len, s.max_model_len):,} tokens "
                     f"fit at once ({pool.request_blocks:,} blocks each){capped}.")
        if pool.concurrent_requests < t.batch_size:
            ok = False
            lines.append(f"{t.batch_size:,} concurrent requests asked for (--batch-size): the pool holds only "
                         f"{pool.concurrent_requests:,}; vLLM queues (or preempts) the rest.")
    outside = p.outside_budget
    if gpu_memory_bytes - pool.requested < outside:
        ok = False
        lines.append(f"what gpu_memory_utilization leaves ({_gib(gpu_memory_bytes - pool.requested)}) cannot hold "
                     f"the CUDA context and graphs ({_gib(outside)}): vLLM fails at start (free memory below the "
                     "requested) or OOMs capturing graphs; lower --gpu-memory-utilization or add --enforce-eager.")
    return tuple(lines), ok


@dataclass(frozen=True, slots=True)
class ServeFit:
    """`fit --mode serve` on one GPU: the largest concurrency, the longest max_model_len, the utilization needed."""

    settings: ServeSettings
    pool: KvPool
    concurrent_requests: int  # requests of t.seq_len tokens held at once (max_num_seqs caps what runs at once)
    pool_requests: int  # the same, the pool alone (no max_num_seqs cap)
    utilization_needed: float | None  # for t.batch_size requests of t.seq_len tokens (None: no utilization will)
    min_gpu_bytes: int  # the smallest GPU for them (at t.gpu_memory_utilization)
    serves: bool  # starts, and holds t.batch_size requests of t.seq_len tokens at once


def serve_fit(model: ModelSpec, t: TrainingSpec, gpu_memory_bytes: int, gpu_name: str = "") -> ServeFit:
    """What fits on a GPU of `gpu_memory_bytes` under `t` (vllm serve's defaults for that GPU)."""
    t = with_gpu_defaults(model, t, gpu_memory_bytes, gpu_name)
    s = settings(model, t, gpu_memory_bytes, gpu_name)
    pool = kv_pool(model, t, gpu_memory_bytes, gpu_name)
    alone = (pool.num_blocks - 1) // pool.request_blocks if pool.starts and pool.num_blocks else 0
    _, ok = gpu_report(model, t, gpu_memory_bytes, gpu_name)
    return ServeFit(s, pool, min(alone, s.max_num_seqs), alone,
                    utilization_needed(model, t, t.batch_size, gpu_memory_bytes, gpu_name),
                    min_gpu_bytes(model, t, t.batch_size, gpu_memory_bytes, gpu_name), ok)
