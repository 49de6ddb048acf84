"""GaLore 8-bit (issue 13): galore_torch 1.0 GaLoreAdamW8bit, HF optim galore_adamw_8bit.

The state bytes are derived from the libraries' source: galore_torch adamw8bit.py projects the gradient, makes the
low-rank gradient the parameter's data (r × the larger dim) and lets bitsandbytes (optim/optimizer.py
Optimizer2State.init_state) keep two 8-bit states of it: uint8 codes + one fp32 absmax per 256 elements, or two fp32
states when it has fewer than min_8bit_size = 4096 elements; P stays in the parameter dtype as in GaLoreAdamW.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from test_optimizers_new import _file  # one run file -> its one Run
from vramcalc.core.memory import estimate
from vramcalc.core.memory.optimizer import projected_state
from vramcalc.core.params import inventory
from vramcalc.core.specs import ModelSpec, TrainingSpec

# tests/test_optimizers_new.py's tiny llama: hidden 64, 4 heads of 16, 2 KV heads, MLP 128, vocab 256.
TINY = ModelSpec(name="tiny-llama", source="test", family="llama", vocab_size=256, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2)


def test_projected_8bit_moments_by_hand() -> None:
    # Llama-3.1-8B's gate_proj (14,336 × 4,096) at rank 128: the projected gradient is 14,336 × 128 = 1,835,008
    # elements (m >= n: grad @ P.T); 8-bit: 1 B each per state + 4 B per 256-element block per state.
    ps = projected_state((14_336, 4_096), 128, 2, "galore-adamw-8bit")
    assert ps.moments == 2 * 1_835_008 + 2 * 4 * (1_835_008 // 256)
    assert ps.projection == 2 * 128 * 4_096  # P = Vh[:128] (128 × 4,096), bf16
    # GaLoreAdamW keeps both moments in the parameter dtype instead: 2 × 2 B per element
    assert projected_state((14_336, 4_096), 128, 2, "galore-adamw").moments == 2 * 2 * 1_835_008


def test_small_projected_gradient_keeps_fp32_states() -> None:
    # 64 × 64 at rank 8: 512 elements < 4,096, so bitsandbytes keeps two fp32 states (8 B per element)
    assert projected_state((64, 64), 8, 2, "galore-adamw-8bit").moments == 8 * 512


def test_unprojected_tensors_get_bitsandbytes_states() -> None:
    # TINY: the embedding and lm_head (256 × 64 = 16,384 elements each) are not projected: 8-bit; the norms (64
    # elements) fp32. The projected Linears at rank 8 are all under 4,096 elements: fp32.
    t = TrainingSpec(method="full", precision="bf16", optimizer="galore-adamw-8bit", optimizer_rank=8)
    expected = 0
    for x in inventory(TINY):
        n = x.numel_each
        if x.kind == "linear":
            out, inp = x.shape
            low = 8 * max(out, inp)
            expected += (8 * low + 2 * 8 * min(out, inp)) * x.count  # fp32 states + bf16 P
        elif n >= 4096:
            expected += (2 * n + 2 * 4 * (n // 256)) * x.count
        else:
            expected += 8 * n * x.count
    assert estimate(TINY, t).optimizer_state == expected


def test_8bit_is_smaller_than_galore_adamw() -> None:
    llama = ModelSpec(**{**TINY.__dict__, "hidden_size": 1024, "intermediate_size": 4096, "vocab_size": 32_000,
                         "name": "mid"})

    def run(opt: str) -> TrainingSpec:
        return TrainingSpec(method="full", precision="bf16", optimizer=opt, optimizer_rank=128, batch_size=1,
                            seq_len=128)

    g, g8 = estimate(llama, run("galore-adamw")), estimate(llama, run("galore-adamw-8bit"))
    assert g8.optimizer_state < g.optimizer_state
    assert any("GaLoreAdamW8bit" in n for n in g8.notes)




@pytest.mark.parametrize(("optim", "in_bwd"), [("galore_adamw_8bit", False), ("galore_adamw_8bit_layerwise", True)])
def test_hf_galore_8bit(tmp_path: Path, optim: str, in_bwd: bool) -> None:
    # transformers trainer_optimizer.py _get_galore_optimizer: galore_adamw_8bit -> GaLoreAdamW8bit; *_layerwise steps
    # each parameter in its post-accumulate-grad hook
    run = _file(tmp_path, "a.json", {"output_dir": "o", "optim": optim, "optim_target_modules": ["attn", "mlp"],
                                     "optim_args": "rank=64"})
    assert (run.options["optimizer"], run.options["optimizer_rank"], bool(run.options.get("optimizer_in_bwd"))) == (
        "galore-adamw-8bit", 64, in_bwd)


def test_llama_factory_galore_over_8bit_adamw(tmp_path: Path) -> None:
    # LLaMA-Factory trainer_utils.py _create_galore_optimizer: optim adamw_8bit / adamw_bnb_8bit / paged_adamw_8bit
    # -> GaLoreAdamW8bit (built without is_paged)
    base = {"model_name_or_path": "tinyllama-1.1b", "stage": "sft", "finetuning_type": "full", "use_galore": True}
    for optim in ("adamw_8bit", "paged_adamw_8bit"):
        run = _file(tmp_path, f"{optim}.json", {**base, "optim": optim})
        assert run.options["optimizer"] == "galore-adamw-8bit"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not (_have("torch") and _have("galore_torch") and _have("bitsandbytes")),
                    reason="needs torch, galore-torch==1.0 and bitsandbytes")
def test_traced_galore_8bit_matches_the_core() -> None:
    from vramcalc.trace import trace
    from vramcalc.trace._tracker import cuda_rounded_bytes

    # rank 64 on a hidden-256 model: the projected q (256 × 256) gradient is 64 × 256 = 16,384 elements, 8-bit
    small = ModelSpec(**{**TINY.__dict__, "hidden_size": 256, "intermediate_size": 512, "name": "tiny-256"})
    t = TrainingSpec(method="full", precision="bf16", optimizer="galore-adamw-8bit", optimizer_rank=64, batch_size=1,
                     seq_len=16)
    r = trace(small, t)
    core = estimate(small, t)
    traced = r.by_category_at_peak["optimizer_state"]
    # each state tensor is its own allocation, rounded to 512 B by the CUDA allocator (the core counts bytes): at
    # most 511 B per tensor (4 per 8-bit tensor, 2 per fp32 one, P per projected), + the two 1 KiB qmaps
    tensors = sum(x.count * (5 if x.kind == "linear" else 4) for x in inventory(small))
    assert 0 <= traced - core.optimizer_state <= 511 * tensors + 2 * cuda_rounded_bytes(1024)
    assert r.peak_phase == core.peak_phase == "optimizer_step"
    # The step replaces each stepped tensor's full gradient by its low-rank one (adamw8bit.py `p.grad = grad`); the
    # core gives back those of the tensors stepped before the costliest one (measured: +0.54 % on this model, +4.3 %
    # when every gradient was kept)
    assert 0 <= core.tensor_peak_bytes - r.peak_bytes <= 0.01 * r.peak_bytes
