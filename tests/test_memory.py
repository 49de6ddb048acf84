"""The pure core: the seed texts' numbers, and invariants over every method × precision × optimizer."""

from __future__ import annotations

import itertools

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import COMPONENTS, PHASES, estimate
from vramcalc.core.memory.optimizer import LIBRARY_OPTIMIZERS
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.core.vocab import METHODS, OPTIMIZERS, PRECISIONS
from vramcalc.io import presets

GB = 10**9
# 7,241,732,096 = sum(p.numel()) for Mistral-7B-v0.1, printed in shared/seeds/000.
MISTRAL_PARAMS = 7_241_732_096


@pytest.fixture(scope="module")
def mistral() -> ModelSpec:
    return presets.find_model("mistral-7b")


def test_seed_numbers_mistral_full_bf16_adamw(mistral: ModelSpec) -> None:
    b = estimate(mistral, TrainingSpec())
    # shared/seeds/000: 14.48 GB bf16 weights, 14.48 GB gradients, 28.97 GB per Adam moment.
    assert b.weights == 2 * MISTRAL_PARAMS == 14_483_464_192
    assert b.gradients == 2 * MISTRAL_PARAMS
    assert b.details["optimizer_state.moments"] == 2 * 4 * MISTRAL_PARAMS  # two fp32 moments
    assert round(4 * MISTRAL_PARAMS / GB, 2) == 28.97
    # shared/seeds/001: 12 bytes per parameter before activations = 86.9 GB.
    assert b.weights + b.gradients + b.optimizer_state == 12 * MISTRAL_PARAMS
    assert round(12 * MISTRAL_PARAMS / GB, 1) == 86.9
    # shared/seeds/000: "~87–97 GB" with activations at batch 1, sequence 512. The tensors peak at the backward's end:
    # the 12 bytes per parameter and the embedding's incoming gradient (512 tokens x 4,096 x 2 B), the bottom layer's
    # moment holding less (neither the embedding's gradient nor its own layer's yet; memory/__init__.py)
    assert b.tensor_peak_bytes == 12 * MISTRAL_PARAMS + 512 * 4096 * 2
    assert 87 * GB <= b.peak_bytes <= 97 * GB


def test_one_billion_params_full_is_12_gb_before_activations() -> None:
    # shared/seeds/002: "~2 (weights) + ~2 (gradients) + ~8 (AdamW state) = ~12 GB" for a 1B model.
    one_b = ModelSpec(name="one-b", source="shared/seeds/002", parameters=1_000_000_000)
    b = estimate(one_b, TrainingSpec())
    assert b.weights + b.gradients + b.optimizer_state == 12 * GB
    assert not b.activations_modeled


def test_8bit_adam_and_checkpointing_mistral_over_40_gb(mistral: ModelSpec) -> None:
    # shared/seeds/000: "Even with both of these tricks ... Mistral-7B requires 40+ GB".
    b = estimate(mistral, TrainingSpec(optimizer="adamw-8bit", grad_checkpointing=True))
    assert b.peak_bytes > 40 * GB
    # 8-bit states: 2 bytes + 2 fp32 absmax per 256 elements: "cuts optimizer state ... roughly" to a quarter
    assert b.optimizer_state < estimate(mistral, TrainingSpec()).optimizer_state / 3


def test_llama_70b_is_about_ten_times_mistral(mistral: ModelSpec) -> None:
    # shared/seeds/000: "For a 70B model like LLaMA 3.1 70B, scale everything by 10x".
    big = estimate(presets.find_model("llama-3.1-70b"), TrainingSpec())
    small = estimate(mistral, TrainingSpec())
    ratio = (big.weights + big.gradients + big.optimizer_state) / (small.weights + small.gradients
                                                                   + small.optimizer_state)
    assert 9 <= ratio <= 11  # 70,553,706,496 / 7,241,732,096 = 9.74


def test_lora_mistral_r8_trainable(mistral: ModelSpec) -> None:
    b = estimate(mistral, TrainingSpec(method="lora", lora_rank=8))
    assert b.trainable_parameters == 3_407_872  # see test_params: 106,496 per layer × 32
    assert b.gradients == 4 * 3_407_872  # fp32 adapters (peft's default on a 16-bit base)


def test_qlora_nf4_weights_are_about_a_quarter(mistral: ModelSpec) -> None:
    lora = estimate(mistral, TrainingSpec(method="lora"))
    qlora = estimate(mistral, TrainingSpec(method="qlora", kbit_prep=False))
    # NF4: 0.5 B/param for the block linears (6.98 B of 7.24 B params) + constants; embeddings and
    # head (2 × 131 M params) stay bf16: (6.98e9·0.5 + 0.26e9·2) / 14.48e9 ≈ 0.28
    assert 0.25 < qlora.weights / lora.weights < 0.32
    # peft's prepare_model_for_kbit_training (the default) casts those 0.26 B params to fp32: + 2 B each.
    prepared = estimate(mistral, TrainingSpec(method="qlora"))
    assert 0.30 < prepared.weights / lora.weights < 0.36


def test_nf4_double_quant_constants() -> None:
    from vramcalc.core.memory.weights import nf4_bytes

    # 4096×4096 = 16,777,216 elements: 8,388,608 packed bytes; 262,144 blocks of 64.
    # Double quant: 262,144 uint8 absmax + 4 B per 256 blocks (1,024 × 4) + 4 B offset = 266,244.
    assert nf4_bytes(4096 * 4096, True) == (8_388_608, 262_144 + 4_096 + 4)
    # Without: one fp32 absmax per block = 1,048,576 bytes (0.5 bit per parameter).
    assert nf4_bytes(4096 * 4096, False) == (8_388_608, 1_048_576)


# GaLore, APOLLO, Adam-mini and Muon are refused with adapter methods (core/specs.py _optimizer_consistent), and
# Muon with the mixed-* precisions (fp32 masters exist only under DeepSpeed: tests/test_muon.py), and autocast-*
# beside the methods it refuses (tests/test_autocast16.py): left out.
COMBOS = [c for c in itertools.product(METHODS, PRECISIONS, OPTIMIZERS)
          if (c[0] in ("full", "freeze") or c[2] not in LIBRARY_OPTIMIZERS)
          and not (c[2] == "muon" and c[1].startswith("mixed-"))
          # --precision autocast-* is lora / qlora / freeze only (memory/upcast_norms.py check_recipe; full is amp-*)
          and not (c[1].startswith("autocast-") and c[0] not in ("lora", "qlora", "freeze"))]


@pytest.mark.parametrize(("method", "precision", "optimizer"), COMBOS,
                         ids=["-".join(c) for c in COMBOS])
def test_every_combination_is_consistent(method: str, precision: str, optimizer: str) -> None:
    # peft's adaption prompt adapts llama / mistral attention only; C3A's block must divide Qwen's 896-wide hidden
    spec = presets.find_model("tinyllama-1.1b" if method == "adaption-prompt" else "qwen2.5-0.5b")
    # (autocast-* QLoRA is modelled without prepare_model_for_kbit_training, as LLaMA-Factory and TRL load it)
    t = TrainingSpec(method=method, precision=precision, optimizer=optimizer,  # type: ignore[arg-type]
                     freeze_layers=12 if method == "freeze" else None, c3a_block_size=128,
                     kbit_prep=not (method == "qlora" and precision.startswith("autocast-")))
    b = estimate(spec, t)
    values = [b.component(c) for c in COMPONENTS]
    assert all(isinstance(v, int) and v >= 0 for v in values)
    assert b.sum_bytes == sum(values)
    assert set(b.phases) == set(PHASES)
    assert b.tensor_peak_bytes <= b.sum_bytes - b.overhead  # the peak never exceeds everything at once
    assert b.peak_bytes == b.tensor_peak_bytes + b.overhead
    assert 0 < b.trainable_parameters <= b.parameters
    if method in ("lora", "qlora"):
        assert b.trainable_parameters < b.parameters / 100


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bytes_per_trainable_param_by_precision(precision: str) -> None:
    # Weights + grads + AdamW state per parameter: seed accounting 2+2+8; pure 2+2+4 (bf16 states);
    # mixed 2+2+4+8 (fp32 master); amp and fp32 4+4+8 (Rajbhandari et al. 2020 §3.1 for mixed: 16 B).
    # auto on one GPU is bf16 (memory/precision.py resolve_precision).
    one_b = ModelSpec(name="one-b", source="test", parameters=1_000_000_000)
    if precision.startswith("autocast-"):  # every parameter trained in fp32 under autocast is amp-*: refused, named
        with pytest.raises(UnsupportedCombination, match="amp-"):
            estimate(one_b, TrainingSpec(precision=precision))  # type: ignore[arg-type]
        return
    expected = {"auto": 12, "bf16": 12, "fp16": 12, "pure-bf16": 8, "pure-fp16": 8, "mixed-bf16": 16, "mixed-fp16": 16,
                "amp-bf16": 16, "amp-fp16": 16, "fp32": 16}[precision]
    b = estimate(one_b, TrainingSpec(precision=precision))  # type: ignore[arg-type]
    assert b.weights + b.gradients + b.optimizer_state == expected * 1_000_000_000


@pytest.mark.parametrize(("optimizer", "bytes_per_param"), [
    ("adamw", 8), ("paged-adamw", 8), ("sgd", 0), ("sgd-momentum", 4), ("lion", 4),
], ids=["adamw", "paged-adamw", "sgd", "sgd-momentum", "lion"])
def test_optimizer_state_per_param(optimizer: str, bytes_per_param: int) -> None:
    # torch.optim: AdamW two fp32 moments, SGD none, momentum one buffer; Lion one moment (arXiv:2302.06675)
    one_b = ModelSpec(name="one-b", source="test", parameters=1_000_000_000)
    b = estimate(one_b, TrainingSpec(optimizer=optimizer))  # type: ignore[arg-type]
    assert b.optimizer_state == bytes_per_param * 1_000_000_000


def test_adafactor_factored_state() -> None:
    # One 4096×4096 matrix (as a 1-layer model's q_proj would be) keeps 4096 + 4096 fp32 values.
    from vramcalc.core.memory.optimizer import optimizer_bytes
    from vramcalc.core.memory.precision import RECIPES

    o = optimizer_bytes((((4096, 4096), 1), ((4096,), 1)), RECIPES["bf16"], TrainingSpec(optimizer="adafactor"))
    assert o.moments == 4 * (4096 + 4096) + 4 * 4096


def test_8bit_adam_small_tensors_stay_32bit() -> None:
    from vramcalc.core.memory.optimizer import optimizer_bytes
    from vramcalc.core.memory.precision import RECIPES

    # bitsandbytes min_8bit_size = 4096: a 4096-vector gets 8-bit states (2 B + 2×4 B per 256),
    # a 4095-vector keeps two fp32 states (8 B each element).
    t = TrainingSpec(optimizer="adamw-8bit")
    assert optimizer_bytes((((4096,), 1),), RECIPES["bf16"], t).moments == 2 * 4096 + 2 * 4 * 16
    assert optimizer_bytes((((4095,), 1),), RECIPES["bf16"], t).moments == 8 * 4095


def test_foreach_adamw_adds_a_parameter_sized_temporary(mistral: ModelSpec) -> None:
    fused = estimate(mistral, TrainingSpec(optimizer_impl="fused"))
    foreach = estimate(mistral, TrainingSpec(optimizer_impl="foreach"))
    # torch/optim/adamw.py _multi_tensor_adamw: _foreach_sqrt(exp_avg_sqs) = 4 B × params (fp32 states)
    assert foreach.phases["optimizer_step"] - fused.phases["optimizer_step"] == 4 * MISTRAL_PARAMS


def test_grad_accumulation_keeps_gradients_in_forward(mistral: ModelSpec) -> None:
    one = estimate(mistral, TrainingSpec(grad_accum=1))
    four = estimate(mistral, TrainingSpec(grad_accum=4))
    assert four.phases["forward"] - one.phases["forward"] == one.gradients


def test_checkpointing_reduces_activations(mistral: ModelSpec) -> None:
    off = estimate(mistral, TrainingSpec(batch_size=4, seq_len=2048))
    on = estimate(mistral, TrainingSpec(batch_size=4, seq_len=2048, grad_checkpointing=True))
    assert on.activations < off.activations / 5
    assert on.tensor_peak_bytes < off.tensor_peak_bytes


def test_eager_attention_grows_quadratically(mistral: ModelSpec) -> None:
    sdpa = estimate(mistral, TrainingSpec(seq_len=4096)).activations
    eager = estimate(mistral, TrainingSpec(seq_len=4096, attention="eager")).activations
    # eager keeps (4 + 2)·heads·seq² bytes per layer: 6 × 32 × 4096² × 32 layers ≈ 103 GB more
    assert eager - sdpa > 6 * 32 * 4096**2 * 32 * 0.9


def test_freeze_trains_top_layers_and_head(mistral: ModelSpec) -> None:
    b = estimate(mistral, TrainingSpec(method="freeze", freeze_layers=30))
    per_layer = (7_241_732_096 - 2 * 32000 * 4096 - 4096) // 32  # 218,112,000 per layer
    assert b.trainable_parameters == 2 * per_layer + 32000 * 4096 + 4096  # 2 layers + head + final norm


def test_freeze_with_a_tied_head_saves_in_the_frozen_layers() -> None:
    # Qwen2.5-0.5B ties lm_head to the embedding: training the head trains the embedding, so the 16 frozen layers'
    # inputs need gradients and those layers save their activations. Measured with `vramcalc trace qwen2.5-0.5b
    # --method freeze --freeze-layers 16 --seq-len 256 --batch-size 2 --precision bf16`: 4,535,829,504 bytes at the
    # peak (the estimate was 7.3 % under when only the trained layers saved).
    qwen = presets.find_model("qwen2.5-0.5b")
    run = TrainingSpec(method="freeze", freeze_layers=16, seq_len=256, batch_size=2, precision="bf16")
    assert abs(estimate(qwen, run).tensor_peak_bytes - 4_535_829_504) / 4_535_829_504 < 0.001
    untied = estimate(qwen, TrainingSpec(method="freeze", freeze_layers=16, seq_len=256, batch_size=2,
                                         precision="bf16", train_head=False))
    assert untied.activations < estimate(qwen, run).activations


def test_gelu_new_backward_holds_three_mlp_wide_gradients() -> None:
    # GPT-2's gelu_new ends in 0.5·x · (1 + tanh(..)): that mul's backward holds the incoming gradient and both factors'
    # gradients, three (tokens x 3072) 16-bit tensors. With checkpointing and the cut loss the step peaks there.
    # Measured with `vramcalc trace gpt2 --method lora --precision bf16 --batch-size 4 --seq-len 1024
    # --grad-checkpointing --loss cut`: 571,031,040 bytes at aten.mul.Tensor (two gradients counted: -5 % under).
    gpt2 = presets.find_model("gpt2")
    b = estimate(gpt2, TrainingSpec(method="lora", precision="bf16", batch_size=4, seq_len=1024,
                                    grad_checkpointing=True, loss="cut"))
    assert b.peak_phase == "backward"
    assert 0 <= (b.tensor_peak_bytes - 571_031_040) / 571_031_040 < 0.01


def test_autocast_projections_each_save_their_own_cast() -> None:
    # Under amp the normed input is fp32: q_proj, k_proj, v_proj, gate_proj and up_proj each cast it to bf16 and
    # save their own copy (autocast caches weight casts only). Measured with `vramcalc trace llama-3.2-1b --method
    # full --precision amp-bf16 --batch-size 4 --seq-len 2048`: 47,007,599,616 bytes at the peak (the estimate
    # counted one copy for q/k/v and one for gate/up and was 3.42 % under).
    llama = presets.find_model("llama-3.2-1b")
    b = estimate(llama, TrainingSpec(method="full", precision="amp-bf16", batch_size=4, seq_len=2048))
    assert abs(b.tensor_peak_bytes - 47_007_599_616) / 47_007_599_616 < 0.001


def test_estimate_builds_the_same_breakdown_as_the_dataclass_constructor(mistral: ModelSpec) -> None:
    # estimate fills Breakdown.__dict__ directly (speed, issue #7): every field, in field order.
    import dataclasses

    from vramcalc.core.memory import Breakdown

    b = estimate(mistral, TrainingSpec(method="lora", grad_accum=4, grad_checkpointing=True))
    names = [f.name for f in dataclasses.fields(Breakdown)]
    assert list(vars(b)) == names
    assert b == Breakdown(**{n: getattr(b, n) for n in names})


@pytest.mark.parametrize("method", ["full", "lora", "freeze"])
def test_cached_settings_give_the_same_estimate_as_a_fresh_cache(mistral: ModelSpec, method: str) -> None:
    # The per-(model, settings) plan is shared across token shapes; it must not carry one shape into another.
    import vramcalc.core.memory as core

    shapes = [{"batch_size": b, "seq_len": s, "grad_accum": a} for b, s, a in [(1, 512, 1), (8, 4096, 4), (2, 7, 1)]]
    extra = {"freeze_layers": 8} if method == "freeze" else {}
    warm = [estimate(mistral, TrainingSpec(method=method, attention="eager", **extra, **kw)) for kw in shapes]
    for kw, got in zip(shapes, warm, strict=True):
        core._plans.clear()
        assert estimate(mistral, TrainingSpec(method=method, attention="eager", **extra, **kw)) == got
