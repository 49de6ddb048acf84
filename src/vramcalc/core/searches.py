"""What fits: the largest batch, sequence and LoRA rank, and the changes that make a run fit. Pure.

The memory model is monotone in batch size, sequence length and LoRA rank (more tokens or more adapter
parameters never free memory), so each limit is found by an exponential search for a bracket followed
by bisection: O(log n) estimates, and the answer is exact at the boundary (it fits, one more does not).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from vramcalc.core.errors import VramcalcError
from vramcalc.core.margin import Margin, Status, classify
from vramcalc.core.memory import estimate
from vramcalc.core.memory.distributed import gpu_counts
from vramcalc.core.specs import GpuSpec, ModelSpec, TrainingSpec
from vramcalc.core.vocab import CLASSIC_FAMILIES

# Search caps: nobody runs a micro-batch of 65,536 sequences on one GPU; a sequence is capped by the
# model's max_position_embeddings (beyond it the position encoding is undefined) or 2^20 tokens.
MAX_BATCH_SIZE = 2**16
MAX_SEQ_LEN = 2**20

# How much each change alters the run, for ranking suggestions (smaller first): checkpointing costs
# only recompute (~33 % more FLOPs, seed 000); an 8-bit optimizer and a smaller micro-batch with more
# accumulation keep the maths nearly unchanged; LoRA and then QLoRA change what is trained.
CHANGE_COST = {"grad_checkpointing": 1, "optimizer": 2, "batch_size": 2, "method": 3,
               # Inference: an fp8 KV cache barely changes quality; quantized weights change the model;
               # a shorter context changes what can be served.
               "kv_dtype": 1, "weight_dtype": 2, "seq_len": 3,
               # GRPO: fewer completions per generate() call, the same effective batch (more generate() calls)
               "steps_per_generation": 1}
# Inference weight formats to suggest, smallest change first (memory/inference.py QUANTIZED).
INFERENCE_WEIGHT_FORMATS = ("fp8", "int8", "awq-int4")
# More GPUs with ZeRO-3 keeps the run as it is but needs the hardware and DeepSpeed: ranked after the
# single-GPU changes of the same count.
GPUS_COST = 4
METHOD_COST = {"lora": 0, "qlora": 1}



def largest_fitting(peak_of: Callable[[int], int], budget_bytes: int, cap: int, lo: int = 1) -> int | None:
    """The largest x in [lo, cap] with peak_of(x) ≤ budget, for a non-decreasing peak_of; None if lo fails."""
    return last_true(lambda x: peak_of(x) <= budget_bytes, lo, cap)


def with_changes(t: TrainingSpec, changes: dict[str, Any]) -> TrainingSpec:
    """A validated copy of `t` with some options changed."""
    if "seq_len" in changes and t.prompt_len >= changes["seq_len"]:
        # a shorter sequence than the prompt (a search's probe): the prompt shrinks to leave one completion token
        changes = {**changes, "prompt_len": max(changes["seq_len"] - 1, 0)}
    if "seq_len" in changes and t.max_model_len is not None and changes["seq_len"] > t.max_model_len:
        # serve: a longer request than --max-model-len (a search's probe) needs that max_model_len (memory/vllm.py)
        changes = {**changes, "max_model_len": changes["seq_len"]}
    return replace(t, **changes)


@dataclass
class Estimator:
    """Peak bytes of variants of one run, memoized (a search asks for the same point more than once)."""

    model: ModelSpec
    cache: dict[TrainingSpec, int] = field(default_factory=dict)

    def peak(self, t: TrainingSpec) -> int:
        key = t
        if key not in self.cache:
            self.cache[key] = estimate(self.model, t).peak_bytes
        return self.cache[key]


@dataclass(frozen=True)
class Suggestion:
    """A set of changed options and the peak it gives."""

    changes: dict[str, Any]
    peak_bytes: int
    headroom_bytes: int
    status: Status
    n_changes: int
    cost: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": dict(self.changes),
            "peak_bytes": self.peak_bytes,
            "headroom_bytes": self.headroom_bytes,
            "status": self.status,
        }


@dataclass(frozen=True)
class FitReport:
    """Everything `vramcalc fit` answers."""

    peak_bytes: int
    capacity_bytes: int
    status: Status
    max_batch_size: int | None
    max_seq_len: int | None
    max_lora_rank: int | None
    caps: dict[str, int]
    suggestions: tuple[Suggestion, ...]
    notes: tuple[str, ...]
    min_gpus: int | None = None  # fewest GPUs of this size with ZeRO-3 (or the run's own sharding)
    limits_budget_bytes: int | None = None  # the peak the limits may reach: the capacity, or less to keep a margin


def seq_cap(model: ModelSpec) -> int:
    return model.max_position_embeddings or MAX_SEQ_LEN


def rank_cap(model: ModelSpec) -> int | None:
    """LoRA ranks above the hidden size add parameters without adding rank (min(d_in, d_out) bounds it)."""
    return model.hidden_size


def batch_unit(t: TrainingSpec) -> int:
    """The step between valid micro-batches: GRPO's generation batch (batch × steps per generation) must hold whole
    groups of num_generations completions (trl/trainer/grpo_config.py); 1 otherwise."""
    if t.objective not in ("grpo", "rloo") or t.mode != "train":
        return 1
    steps = t.steps_per_generation or t.grad_accum
    return t.num_generations // math.gcd(t.num_generations, steps)


def max_batch_size(est: Estimator, t: TrainingSpec, budget_bytes: int) -> int | None:
    unit = batch_unit(t)
    k = largest_fitting(
        lambda n: est.peak(with_changes(t, {"batch_size": n * unit})), budget_bytes, MAX_BATCH_SIZE // unit
    )
    return None if k is None else k * unit


def auto_batch_size(est: Estimator, t: TrainingSpec, budget_bytes: int) -> int | None:
    """The per-device batch HF Trainer's auto_find_batch_size ends at under this estimate: transformers trainer.py
    train wraps _inner_training_loop in accelerate's find_executable_batch_size (utils/memory.py), which starts at
    the configured batch and, on each out-of-memory error, retries with `int(batch_size * 0.9)` until a step runs;
    at 0 it raises "No executable batch size found". The first batch of that sequence whose peak fits the budget;
    None when none does. Only the batch changes (Trainer._update_auto_batch_size): gradient_accumulation_steps
    stays, so the effective batch shrinks with it."""
    batch = t.batch_size
    while batch > 0:
        if est.peak(with_changes(t, {"batch_size": batch})) <= budget_bytes:
            return batch
        batch = int(batch * 0.9)
    return None


def max_generation_rows(est: Estimator, t: TrainingSpec, budget_bytes: int) -> int | None:
    """GRPO: the largest generation batch (per_device_train_batch_size × steps_per_generation completions per
    generate() call, whole groups of num_generations) that fits with the run's micro-batch; None if none does."""
    if t.objective not in ("grpo", "rloo") or t.mode != "train":
        return None
    step = t.num_generations // math.gcd(t.num_generations, t.batch_size)  # steps_per_generation granularity
    k = largest_fitting(lambda n: est.peak(with_changes(t, {"steps_per_generation": n * step})), budget_bytes,
                        MAX_BATCH_SIZE // (step * t.batch_size) or 1)
    return None if k is None else k * step * t.batch_size


def seq_floor(t: TrainingSpec) -> int:
    """The shortest sequence `t` allows: generate()'s context holds its new tokens (prompt >= 1 token)."""
    if t.objective in ("grpo", "rloo", "online-dpo"):
        return 2  # GRPO / Online DPO generate from a prompt of at least one token: one prompt and one completion token
    return t.new_tokens if t.mode == "inference" else 1


def max_seq_len(est: Estimator, t: TrainingSpec, budget_bytes: int) -> int | None:
    if est.model.family == "resnet":  # images, no sequence (memory/convnet.py): n/a
        return None
    return largest_fitting(
        lambda s: est.peak(with_changes(t, {"seq_len": s})), budget_bytes, seq_cap(est.model), seq_floor(t)
    )


def rank_segments(model: ModelSpec, t: TrainingSpec, cap: int) -> list[tuple[int, int]]:
    """Rank intervals [lo, hi] on which the peak is non-decreasing in the LoRA rank.

    With an 8-bit optimizer (bitsandbytes) an adapter matrix that reaches 4,096 elements switches from
    fp32 to 8-bit states, so the peak can fall at those ranks (memory/optimizer.py
    eight_bit_rank_breakpoints); elsewhere, and with every other optimizer, it is one interval.
    """
    from vramcalc.core.memory.optimizer import eight_bit_rank_breakpoints
    from vramcalc.core.params import resolve_targets

    cuts: tuple[int, ...] = ()
    if "8bit" in t.optimizer and model.has_architecture:
        dims = tuple(d for lin in resolve_targets(model, t.lora_targets) for d in (lin.in_features, lin.out_features))
        cuts = tuple(r for r in eight_bit_rank_breakpoints(dims) if r <= cap)
    starts = (1, *cuts)
    ends = (*(c - 1 for c in cuts), cap)
    return list(zip(starts, ends, strict=True))


def max_lora_rank(est: Estimator, t: TrainingSpec, budget_bytes: int) -> int | None:
    """The largest fitting rank: the largest over the monotone segments (rank_segments), each searched
    from its start, so a rank that fits after a fall in memory is never skipped."""
    cap = rank_cap(est.model)
    if t.method not in ("lora", "qlora") or cap is None or t.mode != "train":
        return None
    for lo, hi in reversed(rank_segments(est.model, t, cap)):
        found = largest_fitting(lambda r: est.peak(with_changes(t, {"lora_rank": r})), budget_bytes, hi, lo)
        if found is not None:
            return found
    return None


def _choices(t: TrainingSpec) -> list[list[tuple[str, dict[str, Any]]]]:
    """Per kind of change, the alternatives to the current setting (each kind changes at most once)."""
    kinds: list[list[tuple[str, dict[str, Any]]]] = []
    if t.mode == "inference":
        # Serving has no method, optimizer or checkpointing: quantized weights, an fp8 KV cache, a
        # smaller batch or a shorter context (the multi-GPU answer is tensor parallel: _more_gpus).
        if t.weight_dtype in ("auto", "fp32", "bf16", "fp16"):
            kinds.append([(f"weight_dtype.{f}", {"weight_dtype": f}) for f in INFERENCE_WEIGHT_FORMATS])
        if t.kv_dtype != "fp8":
            kinds.append([("kv_dtype", {"kv_dtype": "fp8"})])
        if t.batch_size > 1:
            kinds.append([("batch_size", {})])
        if t.seq_len > 1:
            kinds.append([("seq_len", {})])
        return [k for k in kinds if k]
    # The other PEFT methods (core/peft_methods.py) already train few parameters: no method is suggested.
    methods = {"full": ["lora", "qlora"], "freeze": ["lora", "qlora"], "lora": ["qlora"]}.get(t.method, [])
    kinds.append([(f"method.{m}", {"method": m}) for m in methods])
    if not t.grad_checkpointing:
        kinds.append([("grad_checkpointing", {"grad_checkpointing": True})])
    if t.optimizer in ("adamw", "paged-adamw"):
        kinds.append(
            [
                ("optimizer.adamw-8bit", {"optimizer": "adamw-8bit"}),
                ("optimizer.paged-adamw-8bit", {"optimizer": "paged-adamw-8bit"}),
            ]
        )
    if t.batch_size > 1:
        kinds.append([("batch_size", {})])  # the micro-batch is chosen after the other changes
    steps = t.steps_per_generation or t.grad_accum
    if t.objective in ("grpo", "rloo") and steps > 1:  # generate() on fewer rows at a time (memory/rl.py)
        fewer = [n for n in (steps // 2, steps // 4, 1)
                 if 0 < n < steps and (t.batch_size * n) % t.num_generations == 0]
        kinds.append([(f"steps_per_generation.{n}", {"steps_per_generation": n}) for n in dict.fromkeys(fewer)])
    return [k for k in kinds if k]


def _smaller_batch(est: Estimator, t: TrainingSpec, budget_bytes: int) -> dict[str, Any] | None:
    """The largest smaller micro-batch that fits and divides the effective batch (accumulation fills it);
    for inference the largest smaller batch that fits."""
    if t.mode == "inference":
        b = largest_fitting(lambda n: est.peak(with_changes(t, {"batch_size": n})), budget_bytes,
                            t.batch_size - 1)
        return None if b is None else {"batch_size": b}
    # Logarithmic: the largest smaller micro-batch that fits (the peak grows with it), then the largest
    # divisor of the effective batch at most that, found in a bounded scan from both ends (1 always
    # divides), so a --batch-size of 10^12 is not 10^12 estimates (issue 19).
    top = largest_fitting(lambda n: est.peak(with_changes(t, {"batch_size": n})), budget_bytes, t.batch_size - 1)
    if top is None:
        return None
    effective = t.batch_size * t.grad_accum
    best = next((b for b in range(top, max(top - MAX_BATCH_SIZE, 0), -1) if effective % b == 0), 1)
    low = -(-effective // top)  # the fewest accumulation steps a micro-batch of at most `top` needs
    best = max(best, next((effective // q for q in range(low, low + MAX_BATCH_SIZE) if effective % q == 0), 1))
    return {"batch_size": best, "grad_accum": effective // best}


def _changed_peak(est: Estimator, t: TrainingSpec, tags: frozenset[str], changes: dict[str, Any],
                  capacity_bytes: int) -> int | None:
    """The peak of `t` with `changes`, the micro-batch or context first searched (and added to `changes`)
    where the tags ask for it; None when no smaller batch or shorter context fits."""
    candidate = with_changes(t, changes)
    if "batch_size" in tags:
        smaller = _smaller_batch(est, candidate, capacity_bytes)
        if smaller is None:
            return None
        changes.update(smaller)
        candidate = with_changes(t, changes)
    if "seq_len" in tags:  # the longest shorter context that fits
        n = largest_fitting(lambda s: est.peak(with_changes(candidate, {"seq_len": s})), capacity_bytes,
                            t.seq_len - 1, seq_floor(t))
        if n is None:
            return None
        changes["seq_len"] = n
        candidate = with_changes(t, changes)
    return est.peak(candidate)


def suggestions(
    est: Estimator, t: TrainingSpec, capacity_bytes: int, margin: Margin, limit: int = 10
) -> list[Suggestion]:
    """Minimal sets of changes that make `t` fit, ranked: fewest changes, least invasive, least memory."""
    found: list[tuple[frozenset[str], Suggestion]] = []
    kinds = _choices(t)
    for size in range(1, len(kinds) + 1):
        for combo_kinds in itertools.combinations(kinds, size):
            for combo in itertools.product(*combo_kinds):
                tags = frozenset(tag for tag, _ in combo)
                if any(prev <= tags for prev, _ in found):
                    continue  # a smaller set of the same kinds of change already fits
                changes: dict[str, Any] = {}
                for _, ch in combo:
                    changes.update(ch)
                try:
                    peak = _changed_peak(est, t, tags, changes, capacity_bytes)
                except VramcalcError:  # a change the run cannot take (LoRA at a rank above the hidden size...)
                    continue
                if peak is None or peak > capacity_bytes:
                    continue
                cost = sum(CHANGE_COST[tag.split(".")[0]] for tag in tags)
                cost += sum(METHOD_COST[tag.split(".")[1]] for tag in tags if tag.startswith("method."))
                found.append(
                    (
                        tags,
                        Suggestion(
                            changes,
                            peak,
                            capacity_bytes - peak,
                            classify(peak, capacity_bytes, margin),
                            len(tags),
                            cost,
                        ),
                    )
                )
    ranked = sorted((s for _, s in found), key=lambda s: (s.n_changes, s.cost, s.peak_bytes))
    return ranked[:limit]


def fit_report(model: ModelSpec, t: TrainingSpec, capacity_bytes: int, margin: Margin,
               limits_keep_margin: bool = False) -> FitReport:
    """Limits of `t` on `capacity_bytes` and, when `t` does not fit, what would make it fit.

    The limits fill the GPU unless `limits_keep_margin` (the user gave --margin): then each limit is the largest
    value whose peak still leaves the margin, i.e. the largest that `estimate` calls FITS rather than TIGHT.
    """
    if t.context_parallel > 1:  # its searches would probe sequence lengths and GPU counts the ring cannot split
        from vramcalc.core.errors import UnsupportedCombination

        raise UnsupportedCombination("fit does not search with --context-parallel (its limits and suggestions step "
                                     "seq_len and the GPUs): use vramcalc estimate with --gpu")
    est = Estimator(model)
    budget = margin.largest_peak(capacity_bytes) if limits_keep_margin else capacity_bytes
    peak = est.peak(t)
    status = classify(peak, capacity_bytes, margin)
    caps = {"max_batch_size": MAX_BATCH_SIZE, "max_seq_len": seq_cap(model)}
    cap = rank_cap(model)
    if cap is not None:
        caps["max_lora_rank"] = cap
    notes: list[str] = []
    sugg: list[Suggestion] = []
    gpus_needed = None
    if status == "DOES NOT FIT" and model.family in CLASSIC_FAMILIES:
        # ResNet / LSTM (memory/classic.py): one GPU, full training; a smaller batch is the change they model
        notes.append(f"{model.name} is modelled on one GPU with full training: lower --batch-size (see "
                     "max_batch_size) or use a larger GPU.")
    elif status == "DOES NOT FIT":
        sugg = suggestions(est, t, capacity_bytes, margin)
        more = _more_gpus(model, est, t, capacity_bytes, margin)
        if more is not None:
            gpus_needed = more.changes.get("gpus_per_node", 1) * more.changes.get("nodes", 1)
            if t.mode == "inference":
                notes.append(f"inference shards the model by tensor (and pipeline) parallel, not ZeRO: "
                             f"{gpus_needed} GPUs of this kind hold it with "
                             f"--tp {more.changes.get('tp', 1)}"
                             + (f" --pp {more.changes['pp']}" if more.changes.get("pp", 1) > 1 else "") + ".")
            sugg = sorted([*sugg, more], key=lambda s: (s.n_changes, s.cost, s.peak_bytes))
        if not sugg and t.mode == "inference":
            notes.append(
                "no combination of quantized weights, an fp8 KV cache, a smaller batch or context, or tensor "
                "and pipeline parallel over up to 4,096 GPUs fits: use a larger GPU."
            )
        elif not sugg:
            notes.append(
                "no combination of QLoRA, checkpointing, an 8-bit optimizer, a smaller micro-batch or up to "
                "4,096 GPUs with ZeRO-3 fits: use a larger GPU or a shorter sequence (see max_seq_len)."
            )
    rows = max_generation_rows(est, t, budget)
    if t.objective in ("grpo", "rloo") and t.mode == "train":
        notes.append(f"{t.objective}: the largest generation batch that fits with --batch-size {t.batch_size}: "
                     + (f"{rows:,} completions per generate() call (--steps-per-generation "
                        f"{rows // t.batch_size}; num_generations up to {rows:,} with one prompt per call)."
                        if rows else "none (the training step alone does not fit)."))
    if t.objective in ("grpo", "rloo") and t.mode == "train" and t.use_vllm == "colocate":
        from vramcalc.core.memory import estimate
        from vramcalc.core.memory import rl as _rl

        d = estimate(model, t).details
        rng = _rl.utilization_range(model, t, d["vllm.training_step"], d["vllm.training_held"], capacity_bytes)
        notes.append(f"{t.objective} + colocated vLLM: vllm_gpu_memory_utilization from {rng[0]:g} (vLLM starts) "
                     f"to {rng[1]:g} (the training step still fits beside it) on this GPU." if rng else
                     f"{t.objective} + colocated vLLM: no vllm_gpu_memory_utilization both starts vLLM and leaves "
                     "room for the training step on this GPU: --vllm-sleep, a larger GPU or --use-vllm server.")
    return FitReport(
        peak,
        capacity_bytes,
        status,
        max_batch_size(est, t, budget),
        max_seq_len(est, t, budget),
        max_lora_rank(est, t, budget),
        caps,
        tuple(sugg),
        tuple(notes),
        gpus_needed,
        budget,
    )


def _more_gpus(model: ModelSpec, est: Estimator, t: TrainingSpec, capacity_bytes: int,
               margin: Margin) -> Suggestion | None:
    """The run unchanged but sharded (ZeRO-3 unless it already shards) over the fewest GPUs that fit it;
    for inference, tensor parallel (then pipeline stages across nodes), as serving engines shard."""
    from vramcalc.core.memory.distributed import layout_of

    if t.mode == "inference":
        return _more_gpus_inference(model, est, t, capacity_bytes, margin)

    changes: dict[str, Any] = {} if (t.zero or t.fsdp != "none") else {"zero": 3}
    try:
        sharded = with_changes(t, changes)
    except VramcalcError:  # a run that cannot shard (--optimizer-in-bwd is modelled on one GPU): no such suggestion
        return None
    n = min_gpus(model, sharded, capacity_bytes)
    if n is None or n <= t.gpus_per_node * t.nodes and not changes:
        return None
    g, nodes = layout_of(n)
    changes.update(gpus_per_node=g, **({"nodes": nodes} if nodes > 1 else {}))
    peak = est.peak(with_changes(t, changes))
    return Suggestion(changes, peak, capacity_bytes - peak, classify(peak, capacity_bytes, margin),
                      1 + ("zero" in changes), GPUS_COST)


def inference_layouts(model: ModelSpec, node_size: int = 8, max_gpus: int = 4096) -> list[dict[str, int]]:
    """Model-parallel layouts for serving, by GPU count: tensor parallel within a node (tp dividing the
    attention heads, as vLLM requires), then tp = node size × pipeline stages of one node each. None for Mamba,
    whose inference is modelled on one GPU (memory/ssm.py estimate_inference refuses --tp / --pp)."""
    if model.ssm_state_size:
        return []
    heads = model.num_attention_heads or 1
    kv = model.num_kv_heads or heads
    out: list[dict[str, int]] = []
    tp = 2
    while tp <= node_size:
        # the KV heads split evenly or are replicated (core/checks.py, as vLLM requires)
        if (heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)) or not model.has_architecture:
            out.append({"tp": tp, "gpus_per_node": tp})
        tp *= 2
    widest = out[-1]["tp"] if out else 1
    layers = model.num_layers or max_gpus
    pp = 2
    while pp * widest <= max_gpus and pp <= layers:
        if widest == node_size:
            out.append({"tp": widest, "pp": pp, "gpus_per_node": widest, "nodes": pp})
        else:
            out.append({"tp": widest, "pp": pp, "gpus_per_node": widest * pp})
            if widest * pp >= node_size:
                break
        pp += 1
    return out


def _more_gpus_inference(model: ModelSpec, est: Estimator, t: TrainingSpec, capacity_bytes: int,
                         margin: Margin) -> Suggestion | None:
    if t.tp > 1 or t.pp > 1 or t.gpus_per_node * t.nodes > 1:
        return None  # the run already chose its layout; the single-GPU changes above still apply
    layouts = inference_layouts(model)
    i = first_true(lambda k: est.peak(with_changes(t, layouts[k])) <= capacity_bytes, 0, len(layouts) - 1) \
        if layouts else None
    if i is None:
        return None
    changes: dict[str, Any] = dict(layouts[i])
    peak = est.peak(with_changes(t, changes))
    return Suggestion(changes, peak, capacity_bytes - peak, classify(peak, capacity_bytes, margin),
                      1, GPUS_COST)


# ---- monotone search primitives: gallop, then bisect; exact at the boundary ----


def last_true(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The largest n in [lo, hi] with ok(n), for ok true then false; None when ok(lo) is false.

    Doubles from lo first (answers are usually small next to `hi`), then bisects: ok(answer) is true
    and ok(answer + 1) is false or answer == hi.
    """
    if lo > hi or not ok(lo):
        return None
    good, probe = lo, max(lo * 2, lo + 1)
    while probe <= hi and ok(probe):
        good, probe = probe, max(probe * 2, probe + 1)
    bad = min(probe, hi + 1)  # hi + 1 stands for "beyond the search range"
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def first_true(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The smallest n in [lo, hi] with ok(n), for ok false then true; None when ok(hi) is false."""
    if lo > hi or not ok(hi):
        return None
    if ok(lo):
        return lo
    bad, good = lo, hi  # invariant: not ok(bad), ok(good)
    while good - bad > 1:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


# ---- fewest GPUs (memory/distributed.py layouts) and longest context / largest batch (inference) ----


def _fits(model: ModelSpec, t: TrainingSpec, memory_bytes: int) -> bool:
    return estimate(model, t).peak_bytes <= memory_bytes


def min_gpus(model: ModelSpec, training: TrainingSpec, gpu: GpuSpec | int, node_size: int = 8,
             max_gpus: int = 4096) -> int | None:
    """The fewest GPUs of `gpu`'s kind (or of `gpu` bytes each) on which each GPU's peak fits, with the
    run's ZeRO/FSDP/tp/pp settings (nodes of `node_size`); None when even `max_gpus` do not suffice.

    Per-GPU memory is non-increasing in the GPU count once data parallelism starts (tested), so after
    the first layout this is a bisection, exact at the boundary. Without sharding (ZeRO 0, no FSDP)
    more GPUs never lower the per-GPU figure.
    """
    layouts = gpu_counts(training, node_size, max_gpus)
    if not layouts:
        return None
    capacity = gpu if isinstance(gpu, int) else gpu.memory_bytes

    def ok(i: int) -> bool:
        g, n = layouts[i]
        return _fits(model, replace(training, **{"gpus_per_node": g, "nodes": n}), capacity)

    # One model replica (the first layout: tp × pp GPUs, no data parallelism) needs no data-parallel buffers
    # (DDP / DeepSpeed buckets: memory/distributed.py), so the per-GPU peak can rise from it to two replicas; from
    # two on it never rises (tests/test_properties.py). The first layout is tried on its own, then the rest is
    # bisected (issue 19: a run that fits one GPU was reported as fitting none, as 256 GPUs did not fit).
    if ok(0):
        return layouts[0][0] * layouts[0][1]
    i = first_true(ok, 1, len(layouts) - 1)
    return None if i is None else layouts[i][0] * layouts[i][1]


def _peak(model: ModelSpec, t: TrainingSpec) -> int:
    return estimate(model, t).peak_bytes


def max_context(model: ModelSpec, training: TrainingSpec, gpu: GpuSpec,
                cap: int | None = None) -> int | None:
    """The longest context (seq_len) whose per-GPU peak fits `gpu`, up to the model's
    max_position_embeddings (or `cap`); None when one token does not fit. Works for training too."""
    limit = cap or model.max_position_embeddings or 1 << 20

    def ok(n: int) -> bool:
        return _peak(model, with_changes(training, {"seq_len": n})) <= gpu.memory_bytes

    return last_true(ok, seq_floor(training), limit)


def max_batch_inference(model: ModelSpec, training: TrainingSpec, gpu: GpuSpec,
                        cap: int = 1 << 16) -> int | None:
    """The largest batch of `training.seq_len`-token sequences whose per-GPU peak fits `gpu`;
    None if one does not."""
    def ok(n: int) -> bool:
        return _peak(model, with_changes(training, {"batch_size": n})) <= gpu.memory_bytes

    return last_true(ok, 1, cap)
