"""`trace_generate(model, spec)`: the steps of transformers' `generate()` (greedy) on fake tensors.

What runs (transformers 5.24 generation/utils.py `_sample`, with the model's real forward):
* prefill: `model(prompt, cache=..., logits_to_keep=1)` (generate sets `logits_to_keep=1` when the model's
  forward takes it; `--logits all` passes 0, every position, and upcasts them to fp32 as transformers'
  models did before `logits_to_keep`), then `outputs.logits[:, -1].to(copy=True, dtype=torch.float32)`,
  argmax, `torch.cat` onto the ids, `del outputs`;
* `new_tokens - 1` decode steps of one token each, the same way.
`torch.no_grad()`, `model.eval()`, no attention mask (generate's all-ones mask is dropped by masking_utils
on CUDA, which reads it; on fake tensors it cannot, so we pass none), position ids given explicitly.

Caches: `dynamic` is transformers' DynamicCache (per-layer `torch.cat`); `static` is StaticCache sized
`max_length - 1` (generation/utils.py: `max_cache_length = generation_config.max_length - 1`); `legacy` emulates
the tuple cache of transformers before DynamicCache: each attention layer concatenated the past onto the new
keys and values and returned a new tuple, so the previous cache stays referenced by generate until the forward
returns (both alive at its end). The prefill stores contiguous copies, as DynamicCache does (a tuple cache kept
the projections' views, which for a fused qkv projection hold the whole qkv output; not modelled).

Categories: what the prefill allocates and keeps is `activations` (the cache among it), what a decode step
allocates is `temporaries`; the phases are `prefill` (the first forward) and `decode` (the largest step after it).

Weights stay in the compute dtype unless `weight_dtype` is nf4/int8 (bitsandbytes storage emulated by
trace/_hf.py QuantLinear, which dequantizes the weight to a temporary for each matmul).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import resolve_precision
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace import _cuda
from vramcalc.trace._hf import build_model, find_layers, model_dtype
from vramcalc.trace._step import TraceResult, _fakeify
from vramcalc.trace._tracker import MemoryTracker

PHASES = ("prefill", "decode")


def _legacy_cache(config: Any) -> Any:
    """A DynamicCache whose layers keep the previous keys/values alive until the forward ends (tuple cache)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class LegacyLayer(DynamicLayer):
        kept: list[Any] = []

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:  # prefill: stored as DynamicLayer stores it (a copy)
                self.lazy_initialization(key_states, value_states)
            LegacyLayer.kept.append((self.keys, self.values))  # the old tuple, still held by generate
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            return self.keys, self.values

    cache = DynamicCache()
    cache.layers = [LegacyLayer() for _ in range(config.num_hidden_layers)]
    cache.kept = LegacyLayer.kept
    return cache


def _make_cache(kind: str, config: Any, max_len: int) -> Any:
    from transformers.cache_utils import DynamicCache, StaticCache

    if kind == "static":
        return StaticCache(config=config, max_cache_len=max_len)
    if kind == "legacy":
        return _legacy_cache(config)
    return DynamicCache(config=config)


def decode(hf: Any, ids: torch.Tensor, n_new: int, cache: Any, *, logits_all: bool = False, sample: bool = False,
           before: Callable[[int], None] | None = None, after: Callable[[int], None] | None = None,
           forward_ctx: Callable[[], Any] | None = None) -> torch.Tensor:
    """generate()'s `_sample` loop (transformers 5.24 generation/utils.py): the prefill over `ids`, then
    `n_new - 1` one-token steps; returns the ids with the `n_new` new tokens. `sample`: do_sample's
    `softmax(next_token_scores)` and `torch.multinomial` instead of argmax. `forward_ctx`: a context around
    each model call (accelerate's autocast wrapper around a prepared model's forward)."""
    past = 0
    keep = 0 if logits_all else 1
    for step in range(n_new):
        if before is not None:
            before(step)
        inputs = ids if step == 0 else ids[:, -1:]
        q = inputs.shape[1]
        pos = torch.arange(past, past + q, dtype=torch.long).unsqueeze(0)
        with forward_ctx() if forward_ctx is not None else contextlib.nullcontext():
            out = hf(input_ids=inputs, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=keep)
        if logits_all:
            out.logits = out.logits.float()  # transformers before logits_to_keep: `logits.float()`
        next_logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)
        kept = getattr(cache, "kept", None)
        if kept is not None:
            kept.clear()  # generate drops the old tuple when it takes outputs.past_key_values
        if sample:
            probs = torch.nn.functional.softmax(next_logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1).squeeze(1)
            del probs
        else:
            nxt = torch.argmax(next_logits, dim=-1)
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
        del out, next_logits, nxt, inputs, pos
        past += q
        if after is not None:
            after(step)
    return ids


def trace_generate(model: ModelSpec, t: TrainingSpec) -> TraceResult:
    """The tensor peak of prefill + `new_tokens - 1` decode steps of `model` under `t`, on fake tensors."""
    if not model.has_architecture or model.vocab_size is None or model.num_layers is None:
        raise UnsupportedCombination(f"{model.name} has no architecture; trace needs one")
    if t.weight_dtype not in ("auto", "bf16", "fp16", "fp32", "nf4", "int8"):
        raise UnsupportedCombination(f"trace --mode inference emulates bf16/fp16/fp32, nf4 and int8 weights, not "
                                     f"{t.weight_dtype}")
    if t.kv_dtype not in ("auto",):
        raise UnsupportedCombination("trace --mode inference keeps the cache in the compute dtype: drop --kv-dtype")
    precision = resolve_precision(t)
    dtype = model_dtype(precision)
    if t.weight_dtype in ("bf16", "fp16", "fp32"):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[t.weight_dtype]
    b, context, n_new = t.batch_size, t.seq_len, t.new_tokens
    prompt = context - n_new + 1
    notes: list[str] = []
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    tracker = MemoryTracker()
    with _cuda.cuda_emulation(inference=True) as cuda_notes:
        hf, build_notes = build_model(model, t, dtype)
        notes.extend(build_notes)
        hf.config.use_cache = True
        if t.weight_dtype in ("nf4", "int8"):
            from vramcalc.trace._hf import quantize_blocks

            n = quantize_blocks(hf, find_layers(hf, model.num_layers), 4 if t.weight_dtype == "nf4" else 8,
                                t.double_quant, dtype)
            notes.append(f"{t.weight_dtype}: {n} block Linear layers as emulated bitsandbytes storage")
        with fake_mode:
            hf = _fakeify(hf)
        hf.eval()
        n_params = sum(p.numel() for p in hf.parameters())
        for p in hf.parameters():
            tracker.track(p, "parameters")
        for buf in hf.buffers():
            tracker.track(buf, "buffers")
        records: dict[str, Any] = {}
        with fake_mode, tracker, torch.no_grad():
            tracker.recording = True
            cache = _make_cache(t.cache_impl, hf.config, context)
            ids = torch.randint(0, model.vocab_size, (b, prompt), dtype=torch.long)

            def before(step: int) -> None:
                tracker.phase = "forward" if step == 0 else "backward"  # categories: activations / temporaries
                tracker.reset_peaks()  # this step's peak on its own

            def after(step: int) -> None:
                phase = "prefill" if step == 0 else "decode"
                if phase not in records or tracker.peak.total_bytes > records[phase].total_bytes:
                    records[phase] = tracker.peak

            ids = decode(hf, ids, n_new, cache, logits_all=t.logits == "all", before=before, after=after)
        backends = sorted(set(_cuda.SDPA_BACKENDS))
    phase_peaks = {ph: records[ph].total_bytes if ph in records else 0 for ph in PHASES}
    peak_phase = max(PHASES, key=lambda ph: phase_peaks[ph])
    peak = records[peak_phase]
    notes.extend(cuda_notes)
    notes.append(f"generate: prefill of {prompt} tokens + {n_new - 1} decode steps, {t.cache_impl} cache, "
                 f"logits {t.logits}")
    if t.attention == "sdpa":
        notes.append("sdpa backend(s) as CUDA would pick: " + (", ".join(backends) or "none"))
    return TraceResult(peak_bytes=phase_peaks[peak_phase], peak_phase=peak_phase,
                       by_category_at_peak=dict(peak.by_category), phase_peaks=phase_peaks,
                       parameters=n_params, trainable_parameters=0, notes=tuple(notes), peak_op=peak.op)
