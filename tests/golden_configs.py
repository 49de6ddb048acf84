"""The 50 configurations of tests/golden/estimate_50.json (a before/after check for speed work).

Regenerate (after an intended change to the arithmetic, reviewed in the diff):
    VRAMCALC_REGEN_GOLDEN=1 PYTHONPATH=src python -m pytest -q tests/test_golden_estimate.py
"""

from __future__ import annotations

import random
from typing import Any

MODELS = [
    "mistral-7b",
    "llama-3.1-8b",
    "gpt2",
    "qwen2.5-0.5b",
    "gemma-2b",
    "phi-2",
    "pythia-160m",
    "resnet-50",
    "gpt3-175b",
    "phi-3-mini",
]
METHODS = ["full", "lora", "qlora", "freeze"]
PRECISIONS = ["bf16", "fp16", "pure-bf16", "mixed-bf16", "amp-bf16", "fp32"]
OPTIMIZERS = ["adamw", "adamw-8bit", "paged-adamw", "sgd", "sgd-momentum", "adafactor", "lion"]


def configs() -> list[tuple[str, dict[str, Any]]]:
    """(model preset, TrainingSpec keyword arguments), seeded so the list never changes."""
    rng = random.Random(20240607)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(50):
        method = METHODS[i % 4]
        kw: dict[str, Any] = {
            "method": method,
            "precision": rng.choice(PRECISIONS),
            "optimizer": rng.choice(OPTIMIZERS),
            "optimizer_impl": rng.choice(["fused", "foreach", "for-loop"]),
            "batch_size": rng.choice([1, 2, 4, 8]),
            "seq_len": rng.choice([128, 512, 2048, 4096]),
            "grad_accum": rng.choice([1, 1, 4]),
            "grad_checkpointing": rng.random() < 0.5,
            "attention": rng.choice(["sdpa", "eager"]),
        }
        if method in ("lora", "qlora"):
            kw.update(
                lora_rank=rng.choice([4, 8, 16, 64]),
                lora_dropout=rng.choice([0.0, 0.05]),
                lora_targets=rng.choice([("q_proj", "v_proj"), ("all-linear",)]),
                adapter_dtype=rng.choice(["fp32", "bf16"]),
            )
        if method == "qlora":
            kw.update(quant_bits=rng.choice([4, 8]), double_quant=rng.random() < 0.5)
        if method == "freeze":
            kw.update(freeze_layers=rng.choice([0, 4, 12, 100]), train_head=rng.random() < 0.5)
        out.append((MODELS[i % len(MODELS)], kw))
    return [(name, _possible(name, kw)) for name, kw in out]


def _possible(name: str, kw: dict[str, Any]) -> dict[str, Any]:
    """Clamped to what the model can run (core/checks.py refuses the rest): no more frozen layers than it
    has, no sequence beyond learned position embeddings. Drawn first, so the seeded draws never change."""
    from vramcalc.io import presets

    m = presets.find_model(name)
    if "freeze_layers" in kw:
        kw["freeze_layers"] = min(kw["freeze_layers"], m.num_layers or 0)
    if m.learned_position_embeddings and m.max_position_embeddings is not None:
        kw["seq_len"] = min(kw["seq_len"], m.max_position_embeddings)
    return kw
