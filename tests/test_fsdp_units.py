"""FSDP keys of torchtune and axolotl configs (issue 13): custom_sharded_layers (--fsdp-units), fsdp_cpu_offload
(--fsdp full-shard --offload params) and axolotl's fsdp_version, with the gathered bytes written out by hand for a
toy model (core/memory/distributed.py units)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import runfiles

# A Llama-style toy (as tests/test_sharded_bytes.py): vocabulary 32, hidden 64, 4 heads of 16 with 2 KV heads
# (k/v width 32), gated MLP of 128, two RMSNorms per layer and a final one, untied head; 4 layers.
TOY = ModelSpec(name="toy", source="hand-written", family="llama", vocab_size=32, hidden_size=64, intermediate_size=128,
                num_layers=4, num_attention_heads=4, num_kv_heads=2, norms_per_layer=2, final_norm=True)
# Full fine-tuning, bf16 weights and gradients (precision bf16: 2 B per element), 4 GPUs, full sharding.
FULL = TrainingSpec(method="full", precision="bf16", batch_size=1, seq_len=8, fsdp="full-shard", gpus_per_node=4)
EMBED = 32 * 64 * 2  # embed_tokens 32 x 64, bf16: 4,096 B
HEAD = 32 * 64 * 2  # lm_head 64 -> 32, bf16: 4,096 B
NORM = 64 * 2  # the final norm: 128 B
# One layer: q/o 64 x 64, k/v 32 x 64, gate/up/down 128 x 64, two 64-wide norms, bf16: 2 x (8,192 + 4,096 +
# 24,576 + 128) = 73,984 B
LAYER = 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64 + 2 * 64)


def test_own_units_leave_the_root_and_gather_beside_one_layer() -> None:
    plain = estimate(TOY, FULL)
    # without own units: the root (embedding, final norm, head) and the current and the prefetched layer
    assert plain.details["weights.gathered_unit"] == EMBED + NORM + HEAD + 2 * LAYER == 156_288
    both = estimate(TOY, replace(FULL, fsdp_units=("embed_tokens", "lm_head")))
    # own units: the root keeps the final norm; a layer and its largest neighbour (here another layer) are gathered
    assert both.details["weights.gathered_unit"] == NORM + 2 * LAYER == 148_096
    # one layer's unsharded gradient (bf16, as the weights) is still the largest unit's
    assert both.details["gradients.unsharded_unit"] == LAYER
    # a vocabulary wider than a layer: the embedding unit is the layer's largest neighbour, its gradient the largest
    wide = replace(TOY, vocab_size=2048)
    embed_w = 2048 * 64 * 2  # 262,144 B > LAYER
    b = estimate(wide, replace(FULL, fsdp_units=("embed_tokens",)))
    assert b.details["weights.gathered_unit"] == NORM + 2048 * 64 * 2 + LAYER + embed_w  # head stays in the root
    assert b.details["gradients.unsharded_unit"] == embed_w
    assert any("custom_sharded_layers" in n for n in b.notes)


def test_tied_head_keeps_the_unit_gathered_with_the_root() -> None:
    tied = replace(TOY, tie_word_embeddings=True)
    t = replace(FULL, fsdp_units=("embed_tokens",))
    assert estimate(tied, t).details["weights.gathered_unit"] == estimate(tied, FULL).details["weights.gathered_unit"]
    assert any("upper bound" in n for n in estimate(tied, t).notes)


def test_own_units_need_full_sharding_and_known_names() -> None:
    with pytest.raises(SpecError, match="--fsdp full-shard"):
        TrainingSpec(fsdp_units=("embed_tokens",))
    with pytest.raises(SpecError, match="not modelled as an FSDP unit"):
        TrainingSpec(fsdp="full-shard", gpus_per_node=2, fsdp_units=("layers.0",))


def _file(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


TT = "model: {_component_: torchtune.models.llama3_1.llama3_1_8b}\n"


def test_torchtune_fsdp_keys_map_to_the_fsdp_options(tmp_path: Path) -> None:
    run = runfiles.load(_file(tmp_path, "tt.yaml", TT + "fsdp_cpu_offload: true\n"
                              "custom_sharded_layers: ['tok_embeddings', 'output']\n"))[0]
    assert (run.options["fsdp"], run.options["offload"], run.options["fsdp_units"]) == (
        "full-shard", "params", "embed_tokens,lm_head")
    assert run.unmodelled == [] and {"fsdp_cpu_offload", "custom_sharded_layers"} <= set(run.mapped)
    off = runfiles.load(_file(tmp_path, "off.yaml", TT + "fsdp_cpu_offload: false\n"))[0]
    assert "offload" not in off.options and "fsdp_cpu_offload" in off.mapped and off.unmodelled == []
    with pytest.raises(runfiles.RunFileError, match="custom_sharded_layers"):
        runfiles.load(_file(tmp_path, "bad.yaml", TT + "custom_sharded_layers: ['layers.0.attn']\n"))


def test_axolotl_fsdp_version_is_mapped(tmp_path: Path) -> None:
    # axolotl's FSDP1 examples name the strategy in `fsdp`; FSDP2's fully_shard always shards fully
    base = "base_model: mistral-7b\nfsdp_config:\n  offload_params: false\n"
    for version, strategy in ((1, "fsdp: [full_shard, auto_wrap]\n"), (2, "")):
        run = runfiles.load(_file(tmp_path, f"ax{version}.yaml", base + strategy + f"fsdp_version: {version}\n"))[0]
        assert run.unmodelled == [] and "fsdp_version" in run.mapped
        assert run.options["fsdp"] == "full-shard" and "fsdp_frozen_grads" not in run.options
    with pytest.raises(runfiles.RunFileError, match="fsdp_version"):
        runfiles.load(_file(tmp_path, "ax3.yaml", base + "fsdp_version: 3\n"))
