"""DeepSeek's grouped router (transformers models/deepseek_v3/modeling_deepseek_v3.py DeepseekV3TopkRouter,
models/deepseek_v2/modeling_deepseek_v2.py DeepseekV2TopkRouter): n_group / topk_group carried in the spec, the
router's fp32 input and temporaries counted (memory/activations.py router_forward_bytes, _fused_moe_terms)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations, router_forward_bytes
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def _config(name: str, **change: object) -> dict:
    return {**json.loads((HF / f"{name}.json").read_text()), **change}


def _spec(name: str, **change: object):
    return spec_from_hf_config(_config(name, **change), name, f"tests/data/hf/{name}.json")


def test_groups_read_from_config() -> None:
    # DeepSeek-V3's config.json: n_group 8, topk_group 4 (tests/data/hf/deepseek-v3.json); the preset agrees
    v3 = _spec("deepseek-v3")
    assert (v3.expert_groups, v3.topk_expert_groups) == (8, 4)
    preset = presets.find_model("deepseek-v3")
    assert (preset.expert_groups, preset.topk_expert_groups) == (8, 4)
    # a V3 file without them: DeepseekV3Config's defaults (configuration_deepseek_v3.py n_group 8, topk_group 4)
    bare = {k: v for k, v in _config("deepseek-v3").items() if k not in ("n_group", "topk_group")}
    m = spec_from_hf_config(bare, "v3", "v3.json")
    assert (m.expert_groups, m.topk_expert_groups) == (8, 4)
    # V2-Lite routes greedily (topk_method "greedy" ignores n_group): one group
    lite = _spec("deepseek-v2-lite")
    assert (lite.expert_groups, lite.topk_expert_groups) == (1, 1)
    # V2 with group_limited_greedy reads them (64 experts in 8 groups, 3 kept)
    grouped = _spec("deepseek-v2-lite", topk_method="group_limited_greedy", n_group=8, topk_group=3)
    assert (grouped.expert_groups, grouped.topk_expert_groups) == (8, 3)


@pytest.mark.parametrize(("change", "message"), [
    ({"n_group": 7}, "num_experts 256 does not split into 7 groups"),
    ({"n_group": 256}, "groups of 2 or more"),  # V3 sums each group's top 2
    ({"topk_group": 9}, "topk_expert_groups: 9 exceeds expert_groups 8"),
    ({"n_group": 64, "topk_group": 1}, "1 groups of 4 experts hold fewer than experts_per_token 8"),
])
def test_bad_groups_refused(change: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        _spec("deepseek-v3", **change)


def test_groups_refused_outside_deepseek() -> None:
    # (and Nemotron-H, whose NemotronHTopkRouter is V3's: tests/test_nemotron_h.py)
    with pytest.raises(SpecError, match="DeepSeek-V2/V3 and Nemotron-H only"):
        replace(presets.find_model("mixtral-8x7b"), expert_groups=2)


def test_router_input_fp32_under_full_fine_tuning() -> None:
    # DeepseekV3TopkRouter: F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32)) saves its
    # fp32 input for the weight's gradient: 4 B x hidden 7168 per token (Mixtral's router: bf16, 2 B x 4096)
    t = TrainingSpec(method="full", precision="pure-bf16")
    v3 = {x.name: x.per_token for x in layer_activations(presets.find_model("deepseek-v3"), t, RECIPES["pure-bf16"],
                                                         True).terms}
    assert v3["router input (its weight's gradient)"] == 4 * 7168
    mixtral = {x.name: x.per_token for x in layer_activations(presets.find_model("mixtral-8x7b"), t,
                                                              RECIPES["pure-bf16"], True).terms}
    assert mixtral["router input (its weight's gradient)"] == 2 * 4096


def test_router_temporaries() -> None:
    # V3 (256 experts): logits, sigmoid scores, + correction bias, the expanded fp32 group mask, the masked scores
    # (5 fp32) and the mask's bool and inverted copies (2 x 1 B), per token
    assert router_forward_bytes(presets.find_model("deepseek-v3")) == 256 * (5 * 4 + 2)
    # V2 greedy (64 experts): logits and softmax scores only; group_limited_greedy: no bias term (4 fp32 + 2 bool)
    lite = _spec("deepseek-v2-lite")
    assert router_forward_bytes(lite) == 64 * 2 * 4
    grouped = _spec("deepseek-v2-lite", topk_method="group_limited_greedy", n_group=8, topk_group=3)
    assert router_forward_bytes(grouped) == 64 * (4 * 4 + 2)
    assert router_forward_bytes(presets.find_model("mixtral-8x7b")) == 0


def test_traced_grouped_router() -> None:
    # the --grid moe DeepSeek-V3 toy (benchmarks/accuracy.py MOE_SHAPES: 64 experts in 8 groups, 4 kept, top 6; one
    # dense layer under two MoE layers), full fine-tuning b1 s64, traced with its groups (trace/_config.py): the
    # estimate within 2 % over and 1 % under the traced tensor peak (-5 % before the fp32 router input, the routed
    # multiply's fp32 gradients and the lowest MoE layer's backward moment were counted)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import accuracy

    from vramcalc.trace import trace

    m = accuracy._model("moe:deepseek_v3")
    assert (m.expert_groups, m.topk_expert_groups) == (8, 4)
    t = TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=64)
    got, est = trace(m, t).peak_bytes, estimate(m, t).tensor_peak_bytes
    assert -0.01 * got <= est - got <= 0.02 * got, (est, got)
