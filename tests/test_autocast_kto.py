"""TRL's KTO (--objective kto, the adapters-off reference) under the Trainer's autocast over 16-bit weights (issue 13;
core/memory/upcast_norms.py AUTOCAST_OBJECTIVES, AUTOCAST_KTO_FAMILIES; trace/_cuda.py _cast; --grid autocast-kto)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets


def _kto(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "lora_targets": ("all-linear",), "objective": "kto",
                           "precision": "autocast-bf16", "batch_size": 2, "seq_len": 1024, "prompt_len": 256,
                           **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("gc", "traced"), [(False, 1_555_685_376), (True, 983_951_360)], ids=["no-gc", "gc"])
def test_estimate_within_one_percent_of_the_trace(gc: bool, traced: int) -> None:
    # measured: --grid autocast-kto "cut:tinyllama-1.1b:4 | kto lora adapters-off | autocast-bf16 | b2 s1024 p256"
    # (the tracer's peak; benchmarks/results/trace_cache_autocast-kto.json): the existing KTO arithmetic under autocast
    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=4)
    b = estimate(m, _kto(grad_checkpointing=gc))
    assert abs(b.tensor_peak_bytes - traced) / traced < 0.01


@pytest.mark.parametrize("name", ["tinyllama-1.1b", "mistral-7b", "gpt2"])
def test_modelled_on_the_traced_families(name: str) -> None:
    estimate(presets.find_model(name), _kto(seq_len=256, prompt_len=64))
    estimate(presets.find_model(name), _kto(seq_len=256, prompt_len=64, method="qlora", kbit_prep=False))


@pytest.mark.parametrize(("name", "kw", "needle"), [
    ("qwen2.5-0.5b", {}, "--objective kto on qwen2.5-0.5b (traced on Llama, Mistral and GPT-2 text models)"),
    ("tinyllama-1.1b", {"ref_model": "copy"}, "the adapters-off reference"),
    ("tinyllama-1.1b", {"method": "freeze", "freeze_layers": 2}, "--objective kto --loss hf"),
], ids=["qwen2", "ref-copy", "freeze"])
def test_refused_where_not_traced(name: str, kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(presets.find_model(name), _kto(seq_len=256, prompt_len=64, **kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_no_grad_cast_is_not_reused_by_a_forward_with_grad() -> None:
    # KTOTrainer's KL forward runs under no_grad before the policy's, inside what the tracer runs as one autocast
    # region: the fp32 adapter's cached cast from the no_grad forward has no grad_fn, so the forward with grad casts
    # anew (as accelerate's per-forward autocast, whose cache is cleared at each forward's end), and a no_grad read
    # after a forward with grad still takes the cached cast (DPO's reference after the policy)
    torch = pytest.importorskip("torch")
    from vramcalc.trace import _cuda

    _cuda._install_autocast_kernels()
    w = torch.nn.Parameter(torch.ones(4, 4))
    x = torch.ones(2, 4)
    with _cuda.cuda_autocast(torch.bfloat16):
        with torch.no_grad():
            assert torch.nn.functional.linear(x, w).grad_fn is None
        y = torch.nn.functional.linear(x, w)
        assert y.dtype == torch.bfloat16 and y.grad_fn is not None
        y.sum().backward()
        assert w.grad is not None
        cached = _cuda._AutocastState.cache[id(w)][1]
        with torch.no_grad():
            assert _cuda._cast(w, torch.bfloat16, True) is cached
