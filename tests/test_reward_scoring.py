"""Online DPO's reward model (`--reward-model`, memory/reward_scoring.py): its weights, its no-grad forward after
the reference's, the options that refuse what is not modelled, the tracer and the CLI."""

from __future__ import annotations

import json

import pytest

from cli_helpers import invoke
from test_rl import QWEN
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

GPT2 = presets.find_model("gpt2")
ODPO = {"objective": "online-dpo", "batch_size": 2, "seq_len": 272, "prompt_len": 256, "precision": "bf16"}
# A policy with a small vocabulary and a reward model with a wide MLP: the reward model's forward (one no-grad layer
# over 2B x S tokens) is larger than anything the policy's own forward holds, so forward.reward is the peak.
SMALL_POLICY = ModelSpec(name="small-policy", source="test", family="llama", vocab_size=512, hidden_size=64,
                         intermediate_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2)
WIDE_REWARD = ModelSpec(name="wide-reward", source="test", family="llama", vocab_size=512, hidden_size=512,
                        intermediate_size=4096, num_layers=2, num_attention_heads=8, num_kv_heads=8)


def _odpo(reward: ModelSpec | None, **kw: object) -> TrainingSpec:
    extra = {"reward_model": reward.name, "reward_spec": reward} if reward is not None else {}
    return TrainingSpec(**{**ODPO, **extra, **kw})  # type: ignore[arg-type]


def _seq_cls_parameters(m: ModelSpec) -> int:
    """sum(p.numel()) of transformers' AutoModelForSequenceClassification(num_labels=1) on `m`'s config, built on
    the meta device (what online_dpo_trainer.py __init__ loads)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from vramcalc.trace._config import hf_config_dict

    d = hf_config_dict(m)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    config.num_labels = 1
    with torch.device("meta"):
        hf = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("dtype,nbytes", [("auto", 2), ("fp32", 4)])
def test_reward_weights_are_the_sequence_classifier_in_its_dtype(dtype: str, nbytes: int) -> None:
    # bf16 training: auto is the compute dtype (2 B per parameter); fp32 4 B
    b = estimate(QWEN, _odpo(GPT2, reward_dtype=dtype))
    assert b.details["weights.reward_model"] == _seq_cls_parameters(GPT2) * nbytes
    without = estimate(QWEN, _odpo(None))
    assert b.weights - without.weights == b.details["weights.reward_model"]
    assert "weights.reward_model" not in without.details


def test_reward_forward_runs_after_the_reference_beside_the_policys_saved_set() -> None:
    b = estimate(QWEN, _odpo(GPT2))
    keys = [m.key for m in b.named_moments()]
    assert keys.index("forward.reward") == keys.index("forward.reference") + 1
    reward = next(m for m in b.named_moments() if m.key == "forward.reward")
    reference = next(m for m in b.named_moments() if m.key == "forward.reference")
    # the same saved tensors of the policy (every term but the last, the no-grad forward itself)
    assert [t.bytes for t in reward.terms[:-1]] == [t.bytes for t in reference.terms[:-1]]
    # gpt2 under bf16, 4 rows × 272 tokens: at least the residual stream and its normed copy (2 × 2 B × 768) and
    # the MLP's fc1 output and activation (2 × 2 B × 3,072) per token (gpt2 config.json n_embd 768, n_inner 4 × 768)
    assert reward.terms[-1].bytes >= 4 * 272 * (2 * 2 * 768 + 2 * 2 * 3_072)
    assert any("reward model gpt2" in n for n in b.notes)
    assert not any("Python callables" in n for n in b.notes)


def test_grpo_scores_the_whole_generation_batch_after_the_passes() -> None:
    # grpo_trainer.py _generate_and_score_completions: generate(), the log-prob passes, then _calculate_rewards over
    # every row of the generation batch (per_device_train_batch_size 2 × steps_per_generation 4 = 8 rows)
    kw = {"objective": "grpo", "batch_size": 2, "steps_per_generation": 4, "num_generations": 4, "seq_len": 272,
          "prompt_len": 256, "precision": "bf16", "beta": 0.04}
    b = estimate(QWEN, TrainingSpec(**kw, reward_model="gpt2", reward_spec=GPT2))  # type: ignore[arg-type]
    keys = [m.key for m in b.named_moments()]
    assert keys.index("forward.reward") == keys.index("forward.logprobs") + 1
    reward = next(m for m in b.named_moments() if m.key == "forward.reward")
    # 8 rows × 272 tokens of gpt2's no-grad layer (as above), and the reference pass's fp32 [8, 16] log-probs
    assert reward.terms[-1].bytes >= 8 * 272 * (2 * 2 * 768 + 2 * 2 * 3_072) + 8 * 16 * 4
    # doubling the steps per generation doubles the rows scored at once (the layer's per-token part)
    b2 = estimate(QWEN, TrainingSpec(**{**kw, "steps_per_generation": 8}, reward_model="gpt2",  # type: ignore[arg-type]
                                     reward_spec=GPT2))
    reward2 = next(m for m in b2.named_moments() if m.key == "forward.reward")
    assert reward2.terms[-1].bytes > 1.9 * reward.terms[-1].bytes
    assert b.details["weights.reward_model"] == _seq_cls_parameters(GPT2) * 2
    assert any("generation batch" in n and "reward model gpt2" in n for n in b.notes)


def test_refusals() -> None:
    with pytest.raises(SpecError, match="use it with --objective online-dpo"):
        TrainingSpec(objective="dpo", reward_model="gpt2", reward_spec=GPT2)
    with pytest.raises(SpecError, match="use it with --objective online-dpo"):
        TrainingSpec(reward_model="gpt2", reward_spec=GPT2)  # sft
    with pytest.raises(SpecError, match="--reward-dtype sets the dtype of a reward model"):
        TrainingSpec(**ODPO, reward_dtype="fp32")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="not resolved"):
        TrainingSpec(**ODPO, reward_model="gpt2")  # type: ignore[arg-type]
    moe = presets.find_model("mixtral-8x7b")
    with pytest.raises(SpecError, match="dense decoder-only transformer"):
        _odpo(moe)


def test_cli_reward_model(capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["qwen2.5-0.5b", "--objective", "online-dpo", "--seq-len", "272", "--prompt-len", "256"]
    code, out, err = invoke(["estimate", *args, "--reward-model", "gpt2", "--format", "json"], capsys)
    assert code == 0, err
    assert any("reward model gpt2" in n for n in json.loads(out)["notes"])
    code, out, err = invoke(["explain", *args, "--reward-model", "gpt2"], capsys)
    assert code == 0 and "reward model" in out, err
    code, out, err = invoke(["estimate", *args, "--reward-model", "no-such-model-xyz"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--reward-model", "gpt2"], capsys)
    assert code == 2 and "--objective online-dpo" in err and len(err.strip().splitlines()) == 1


# --- the tracer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"method": "full", "precision": "bf16"},
    {"method": "lora", "precision": "amp-bf16", "reward_dtype": "fp32"},
    {"method": "full", "precision": "bf16", "objective": "grpo", "num_generations": 2, "steps_per_generation": 4},
], ids=["full-bf16", "lora-amp-fp32-reward", "grpo-full-bf16"])
def test_reward_forward_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "online-dpo", "batch_size": 2, "seq_len": 144, "prompt_len": 128,  # type: ignore[arg-type]
                        "reward_model": WIDE_REWARD.name, "reward_spec": WIDE_REWARD, **kw})
    e = estimate(SMALL_POLICY, t)
    peak = e.peak_moment()
    assert peak is not None and peak.key == "forward.reward", [(m.key, m.total) for m in e.named_moments()]
    r = trace(SMALL_POLICY, t)
    # common.md's bounds: never under the trace by more than 2 %, over by at most 5 %
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)
