"""DeepSeek-V2/V3's routers stay fp32 under a 16-bit load (modeling_deepseek_v2.py / modeling_deepseek_v3.py
`_keep_in_fp32_modules_strict`, modeling_utils.py _get_dtype_plan): weights, gradients and pure-* optimizer states
counted in fp32 (core/memory/weights.py fp32_router_tensors), checked against the library's own meta model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.memory.weights import fp32_router_tensors, tensor_groups, weight_bytes
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# small enough to build on the meta device in a second: 4 layers (1 dense), 16 experts in 4 groups, a 2,048 vocabulary
TINY = {"num_hidden_layers": 4, "first_k_dense_replace": 1, "hidden_size": 256, "intermediate_size": 512,
        "moe_intermediate_size": 64, "n_routed_experts": 16, "num_attention_heads": 4, "num_key_value_heads": 4,
        "kv_lora_rank": 32, "q_lora_rank": 64, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
        "vocab_size": 2048, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "n_shared_experts": 1}


def _config(name: str) -> dict:
    d = {**json.loads((HF / f"{name}.json").read_text()), **TINY}
    if name == "deepseek-v2-lite":  # V2-Lite has no q_lora_rank and routes greedily
        d.update(q_lora_rank=None, n_group=1, topk_group=1)
    return d


def _library_bytes(config: dict, dtype_name: str) -> tuple[int, int, int]:
    """(parameter + checkpoint-buffer bytes, bytes of the fp32 ones, fp32 numel) of the library's own model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = dict(config)
    cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype_name))
    tensors = list(hf.named_parameters()) + [(n, b) for n, b in hf.named_buffers() if "rotary_emb" not in n]
    total = sum(t.numel() * t.element_size() for _, t in tensors)
    fp32 = [t for _, t in tensors if t.dtype == torch.float32]
    return total, sum(4 * t.numel() for t in fp32), sum(t.numel() for t in fp32)


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-v2-lite"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_weights_match_the_library(name: str, dtype: str) -> None:
    config = _config(name)
    m = spec_from_hf_config(config, name, f"tests/data/hf/{name}.json")
    total, fp32_bytes, fp32_numel = _library_bytes(config, dtype)
    t = TrainingSpec(method="lora", batch_size=1, seq_len=8, precision="bf16" if dtype == "bfloat16" else "fp16")
    recipe = RECIPES[t.precision]
    assert sum(x.numel for x in fp32_router_tensors(m, recipe)) == fp32_numel  # the router weights (+ V3's bias)
    w = weight_bytes(m, t, recipe)
    assert w.base == total  # every parameter in its own dtype, as from_config(dtype=...) holds it
    groups = tensor_groups(m, t, recipe)
    stored = sum(x.bytes_each() * x.count for x in (*groups.embed, *groups.head)) + sum(
        n * sum(x.bytes_each() * x.count for x in one if x.kind != "adapter") for n, one in groups.layers)
    assert stored == total  # the sharding view agrees
    assert fp32_bytes > 0


def test_fp32_load_adds_nothing() -> None:
    m = spec_from_hf_config(_config("deepseek-v3"), "v3", "v3.json")
    assert fp32_router_tensors(m, RECIPES["fp32"]) == ()


def test_full_fine_tuning_gradients_and_pure_states() -> None:
    m = spec_from_hf_config(_config("deepseek-v3"), "v3", "v3.json")
    routers = fp32_router_tensors(m, RECIPES["bf16"])
    # per MoE layer: gate.weight (16 x 256) and e_score_correction_bias (16); 3 MoE layers
    n = sum(x.numel for x in routers)
    assert n == 3 * (16 * 256 + 16)
    full = TrainingSpec(method="full", batch_size=1, seq_len=8, precision="bf16")
    b = estimate(m, full)
    w = weight_bytes(m, full, RECIPES["bf16"])
    # autograd's gradient takes the parameter's dtype: 2 bytes each for the rest, 4 for the routers
    assert b.gradients == 2 * (w.trainable - n) + 4 * n
    pure = estimate(m, replace(full, precision="pure-bf16"))
    # torch AdamW zeros_like(param): two bf16 states each, two fp32 for the routers
    assert pure.optimizer_state == 2 * 2 * (w.trainable - n) + 2 * 4 * n
    # the mixed recipe's fp32 states were 4 bytes already: only the gradients move
    assert b.optimizer_state == 2 * 4 * w.trainable


def test_v3_published_config_router_bytes() -> None:
    # DeepSeek-V3 (tests/data/hf/deepseek-v3.json): 58 MoE layers x (256 x 7,168 gate.weight + 256 bias), 2 more
    # bytes each than a bf16 count: the 213 MB the bf16 count missed
    m = spec_from_hf_config(json.loads((HF / "deepseek-v3.json").read_text()), "v3", "v3.json")
    routers = fp32_router_tensors(m, RECIPES["bf16"])
    assert 2 * sum(x.numel for x in routers) == 2 * 58 * (256 * 7168 + 256) == 212_890_624


@pytest.mark.parametrize("precision", ["pure-bf16", "mixed-bf16", "bf16"])
def test_explain_names_the_fp32_routers_and_adds_up(precision: str) -> None:
    # explain's weights / gradients / optimizer-state lines sum to the core's components, the fp32 routers' share
    # on its own line (it was missing from all three: the full-fine-tuning sums fell short by exactly that share)
    from vramcalc.core.explain import explain
    from vramcalc.core.memory import estimate
    from vramcalc.io import presets

    m = presets.find_model("deepseek-v2-lite")
    t = TrainingSpec(method="full", precision=precision)
    b = estimate(m, t)
    sections = {s.key: s for s in explain(m, t).sections}
    for key in ("weights", "gradients", "optimizer_state"):
        assert sum(x.value for x in sections[key].lines) == b.component(key), key
    keys = {x.key for s in sections.values() for x in s.lines}
    assert "weights.fp32_routers" in keys and "gradients.fp32_routers" in keys
    assert ("optimizer_state.fp32_routers" in keys) == (precision == "pure-bf16")
