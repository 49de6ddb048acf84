"""The tracer against numbers derived by hand, and end to end on a tiny llama."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramcalc.core.errors import UnsupportedCombination  # noqa: E402
from vramcalc.core.params import inventory, lora_params  # noqa: E402
from vramcalc.core.specs import ModelSpec, TrainingSpec  # noqa: E402
from vramcalc.trace import hf_config_dict, trace, trace_module_step  # noqa: E402
from vramcalc.trace._tracker import cuda_rounded_bytes  # noqa: E402

MIB = 2**20
KIB = 2**10


def _linear() -> torch.nn.Module:
    return torch.nn.Linear(1024, 1024, bias=False)


def _linear_step(**adamw_kwargs: object):
    return trace_module_step(
        _linear, lambda: torch.randn(8, 1024), lambda m, x: m(x).sum(),
        lambda m: torch.optim.AdamW(m.parameters(), **adamw_kwargs),
    )


def test_cuda_rounding() -> None:
    # CUDACachingAllocator.cpp round_size: multiples of kMinBlockSize = 512; nothing for 0 bytes.
    assert [cuda_rounded_bytes(n) for n in (0, 1, 512, 513, 4 * MIB)] == [0, 512, 512, 1024, 4 * MIB]


def test_linear_adamw_foreach_peaks_in_the_step() -> None:
    r = _linear_step(foreach=True)
    assert r.peak_phase == "optimizer_step"
    assert r.by_category_at_peak == {
        "parameters": 4 * MIB,  # 1024*1024 fp32
        "buffers": 0,
        "gradients": 4 * MIB,  # one fp32 grad per weight
        "optimizer_state": 8 * MIB,  # exp_avg + exp_avg_sq, fp32; `step` is a host tensor on CUDA
        "activations": 0,  # input, output and loss are freed before the step
        "temporaries": 4 * MIB,  # _multi_tensor_adamw: exp_avg_sq_sqrt = _foreach_sqrt(exp_avg_sqs)
    }
    assert r.peak_bytes == 20 * MIB == r.total_at_peak
    assert r.parameters == r.trainable_parameters == 1024 * 1024


def test_linear_adamw_for_loop_holds_two_temporaries() -> None:
    # _single_tensor_adamw: denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps): sqrt and the quotient
    # are alive together, 2 x 4 MiB on top of params + grad + states = 16 MiB.
    r = _linear_step(foreach=False)
    assert r.by_category_at_peak["temporaries"] == 8 * MIB
    assert r.peak_bytes == 24 * MIB


def test_linear_adamw_fused_has_no_step_temporaries() -> None:
    r = _linear_step(fused=True)
    # fused: the step runs in place; its only extra is the 0-dim fp32 `step` on the device (512 B).
    assert r.phase_peaks["optimizer_step"] == 16 * MIB + 512
    # The peak moves to backward: params 4 MiB + states 8 MiB + step 512 + the new grad 4 MiB
    # + the input x (8*1024*4 = 32 KiB) and the loss (512) + the seed grad of ones (512).
    assert r.peak_phase == "backward"
    assert r.by_category_at_peak["gradients"] == 4 * MIB
    assert r.by_category_at_peak["activations"] == 32 * KIB + 512
    assert r.peak_bytes == 16 * MIB + 512 + 32 * KIB + 512 + 512


def test_mlp_saved_activations() -> None:
    # Linear(256, 512) -> ReLU -> Linear(512, 256), fp32, no bias, batch 64, SGD without momentum
    # (no state). Parameters: 2 * 256*512*4 = 1 MiB. Forward peak is inside the ReLU: the input
    # x (64*256*4 = 64 KiB, saved by mm 1), h (64*512*4 = 128 KiB, about to be freed: ReLU saves
    # its result) and r = relu(h) (128 KiB, saved by ReLU and mm 2): 320 KiB.
    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(256, 512, bias=False), torch.nn.ReLU(),
                                   torch.nn.Linear(512, 256, bias=False))

    r = trace_module_step(mlp, lambda: torch.randn(64, 256), lambda m, x: m(x).sum(),
                          lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    assert r.phase_peaks["forward"] == 1 * MIB + 320 * KIB
    assert r.total_at_peak == r.peak_bytes
    assert r.by_category_at_peak["optimizer_state"] == 0


TINY = ModelSpec(name="tiny-llama", source="test", family="llama", vocab_size=256, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2)


def _param_bytes(m: ModelSpec, bytes_per: int) -> int:
    # Every parameter tensor is its own allocation, rounded up to 512 bytes.
    return sum(cuda_rounded_bytes(t.numel_each * bytes_per) * t.count for t in inventory(m))


def test_tiny_llama_full_pure_bf16() -> None:
    r = trace(TINY, TrainingSpec(method="full", precision="pure-bf16", optimizer_impl="foreach",
                                 batch_size=2, seq_len=32))
    assert r.total_at_peak == r.peak_bytes
    n = sum(t.numel for t in inventory(TINY))
    assert r.parameters == r.trainable_parameters == n
    assert r.by_category_at_peak["parameters"] == _param_bytes(TINY, 2)  # bf16: 2 bytes each
    # torch AdamW on bf16 params keeps bf16 moments: two per parameter tensor.
    assert r.by_category_at_peak["optimizer_state"] == 2 * _param_bytes(TINY, 2)
    assert max(r.phase_peaks.values()) == r.peak_bytes
    assert any("flash" in note for note in r.notes)  # bf16, no mask -> flash on CUDA


def test_tiny_llama_lora_trainable_and_adapters_fp32() -> None:
    training = TrainingSpec(method="lora", precision="pure-bf16", lora_rank=8, batch_size=2, seq_len=32)
    r = trace(TINY, training)
    # LoRA: r * (d_in + d_out) per target; q_proj 64->64, v_proj 64->32 (2 kv heads * 16), 2 layers.
    assert r.trainable_parameters == lora_params(TINY, ("q_proj", "v_proj"), 8) == 8 * (128 + 96) * 2
    # Adapters in fp32 (peft autocast_adapter_dtype): AdamW states 2 * 4 bytes, each tensor rounded.
    per_layer = [8 * 64, 64 * 8, 8 * 64, 32 * 8]  # q.A, q.B, v.A, v.B
    state = 2 * sum(cuda_rounded_bytes(n * 4) for n in per_layer) * 2
    # optimizer_impl defaults to fused: each of the 8 adapters also has a 0-dim fp32 `step` on the device.
    state += 8 * 512
    assert r.by_category_at_peak["optimizer_state"] in (0, state)
    assert r.total_at_peak == r.peak_bytes


def test_tiny_llama_qlora_quantized_storage() -> None:
    r = trace(TINY, TrainingSpec(method="qlora", precision="bf16", batch_size=1, seq_len=16))
    # 4-bit weights are uint8 parameters of numel/2 bytes: far below bf16 parameters.
    assert r.by_category_at_peak["parameters"] < _param_bytes(TINY, 2)
    assert r.trainable_parameters == lora_params(TINY, ("q_proj", "v_proj"), 16)
    assert r.total_at_peak == r.peak_bytes


@pytest.mark.parametrize("training", [
    TrainingSpec(method="full", precision="amp-bf16", grad_checkpointing=True, batch_size=1, seq_len=16),
    TrainingSpec(method="freeze", freeze_layers=1, precision="mixed-bf16", batch_size=1, seq_len=16),
    TrainingSpec(method="full", precision="fp32", optimizer="adamw-8bit", batch_size=1, seq_len=16, grad_accum=2),
], ids=["amp-checkpointing", "freeze-mixed", "fp32-8bit-accum"])
def test_tiny_llama_other_settings_are_consistent(training: TrainingSpec) -> None:
    r = trace(TINY, training)
    assert r.total_at_peak == r.peak_bytes > 0
    assert set(r.by_category_at_peak) == {"parameters", "buffers", "gradients", "optimizer_state",
                                          "activations", "temporaries"}


def test_checkpointing_lowers_activations() -> None:
    base = {"method": "full", "precision": "pure-bf16", "batch_size": 4, "seq_len": 64}
    plain = trace(TINY, TrainingSpec(**base))
    ckpt = trace(TINY, TrainingSpec(**base, grad_checkpointing=True))
    assert ckpt.phase_peaks["forward"] < plain.phase_peaks["forward"]


def test_hf_config_dict_maps_and_rejects() -> None:
    d = hf_config_dict(TINY)
    assert d["model_type"] == "llama" and d["num_key_value_heads"] == 2 and d["num_hidden_layers"] == 2
    with pytest.raises(UnsupportedCombination):
        hf_config_dict(replace(TINY, family="rwkv"))  # a family the tracer does not build
    # MoE families map their experts (configuration_mixtral.py names; the experts intermediate_size wide)
    moe = hf_config_dict(replace(TINY, family="mixtral", num_experts=4, experts_per_token=2,
                                 moe_intermediate_size=96))
    assert (moe["num_local_experts"], moe["num_experts_per_tok"], moe["intermediate_size"]) == (4, 2, 96)
