"""PPO (`--objective ppo`, memory/ppo.py: TRL 0.19.1's PPOTrainer): the four models, the rollout's logits, the
policy + value micro-batch, against the pieces it is built from, the tracer (trace/_ppo.py), the options and run
files."""

from __future__ import annotations

import pytest

from cli_helpers import invoke
from test_preference import _load  # a run file written and read back
from test_reward_scoring import _seq_cls_parameters
from test_rl import QWEN, WIDE_VOCAB
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

GPT2 = presets.find_model("gpt2")  # hidden 768, 12 layers, vocab 50,257 (config.json)


def _ppo(**kw: object) -> TrainingSpec:
    base: dict[str, object] = {"objective": "ppo", "batch_size": 2, "seq_len": 272, "prompt_len": 256,
                               "precision": "pure-bf16", "reward_model": "qwen2.5-0.5b", "reward_spec": QWEN}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def _moment(b, key: str):  # type: ignore[no-untyped-def]
    return next(m for m in b.named_moments() if m.key == key)


def test_four_models_weights() -> None:
    # ppo_trainer.py __init__: the reference is create_reference_model(policy) (a copy in its dtype) without peft and
    # None with it; the value model (AutoModelForSequenceClassification from the reward model's path) is trained in
    # full beside the policy (PolicyAndValueWrapper under one optimizer); the reward model is frozen (compute dtype)
    full = estimate(QWEN, _ppo())
    seq_cls = _seq_cls_parameters(QWEN)
    assert full.details["weights.reference"] == 2 * count_params(QWEN)  # bf16: 2 B per parameter
    assert full.details["weights.value_model"] == seq_cls * 2
    assert full.details["weights.reward_model"] == seq_cls * 2
    # pure-bf16 AdamW: its two moments like the parameters (zeros_like), bf16: 4 B per value-model parameter; its
    # bf16 gradients 2 B
    assert full.details["optimizer_state.value_model"] == 4 * seq_cls
    assert full.details["gradients.value_model"] == 2 * seq_cls
    lora = estimate(QWEN, _ppo(method="lora"))
    assert lora.details["weights.reference"] == 0
    # the value model keeps its full gradients and optimizer state under peft
    assert lora.details["optimizer_state.value_model"] == 4 * seq_cls
    assert lora.weights == (lora.details["weights.base"] + lora.details["weights.adapters"]
                            + lora.details["weights.value_model"] + lora.details["weights.reward_model"])


def test_rollout_logits_are_fp32_and_kept_all_update() -> None:
    # utils.py batch_generation: generate(output_scores=True) keeps every step's processed fp32 scores, stacked and
    # then padded into one [rows, C, V] fp32 tensor (logitss) that PPOTrainer.train never deletes: while the next
    # update pads its chunks, the previous one's, the chunks' and the padded copy are alive (3 of them)
    b = estimate(QWEN, _ppo(batch_size=4))
    logits = 4 * 16 * 151_936 * 4  # 4 rows x 16 response tokens x vocab 151,936 x 4 B (qwen2.5-0.5b config.json)
    assert b.details["activations.rollout_logits"] == logits
    pad = _moment(b, "forward.rollout_pad")
    assert [t.bytes for t in pad.terms[-2:]] == [logits, 2 * logits]
    # the response grows the logits, the query does not
    longer = estimate(QWEN, _ppo(batch_size=4, seq_len=288))
    assert longer.details["activations.rollout_logits"] == 2 * logits


def test_the_policys_output_is_kept_through_the_step() -> None:
    # ppo_trainer.py: output (full logits, output_hidden_states) is deleted after each mini-batch, so the optimizer
    # step and the entropy (softmax and a product of the completion logits' size) run beside it
    b = estimate(GPT2, _ppo(reward_model="gpt2", reward_spec=GPT2))
    kept = 2 * 272 * 50_257 * 2 + 13 * 2 * 272 * 768 * 2  # [2, 272, V] bf16 logits and 12 + 1 hidden states
    assert b.details["activations.policy_output_kept"] == kept
    entropy = _moment(b, "optimizer_step.entropy")
    assert entropy.terms[-1].bytes == 2 * 2 * 16 * 50_257 * 2


@pytest.mark.parametrize(("kw", "message"), [
    ({"loss": "trl"}, "full logits"),
    ({"prompt_len": 0}, "give --prompt-len"),
    ({"packing": "packed"}, "drop --packing"),
    ({"num_generations": 4}, "GRPO's"),
])
def test_spec_refusals(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _ppo(**kw)


@pytest.mark.parametrize(("kw", "message"), [
    ({"reward_model": "none", "reward_spec": None}, "PPO needs a reward model"),
    ({"precision": "amp-bf16"}, "fp32 weights under autocast"),
    ({"grad_accum": 2}, "--grad-accum 1"),
    ({"grad_checkpointing": True}, "never calls gradient_checkpointing_enable"),
    ({"method": "qlora"}, "--no-kbit-prep"),
    ({"method": "freeze", "freeze_layers": 2}, "full, lora or qlora"),
])
def test_what_is_not_modelled_is_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedCombination, match=message):
        estimate(QWEN, _ppo(**kw))


def test_a_reward_model_with_a_smaller_vocabulary_is_refused() -> None:
    # the value and reward models read the policy's token ids (utils.py forward / get_reward)
    with pytest.raises(UnsupportedCombination, match="must cover the policy's"):
        estimate(QWEN, _ppo(reward_model="gpt2", reward_spec=GPT2))


def test_cli_estimate_explain_and_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--objective", "ppo", "--reward-model", "gpt2", "--batch-size", "2", "--seq-len", "272",
            "--prompt-len", "256"]
    code, out, err = invoke(["estimate", "gpt2", *args], capsys)
    assert code == 0, err
    assert "TRL 0.19.1's PPOTrainer" in out
    code, out, err = invoke(["estimate", "gpt2", *args, "--format", "json"], capsys)
    assert code == 0 and "TRL 0.19.1's PPOTrainer" in out, err
    code, out, err = invoke(["explain", "gpt2", *args], capsys)
    assert code == 0, err
    assert "ppo_trainer.py" in out.replace("\n      ", "")
    for argv in (["--objective", "ppo"], ["--objective=ppo"]):
        code, out, err = invoke(["estimate", "gpt2", *argv], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "give --prompt-len" in err, err
        code, out, err = invoke(["estimate", "gpt2", *argv, "--seq-len", "272", "--prompt-len", "256"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "PPO needs a reward model" in err, err


# --- the tracer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"method": "full", "precision": "bf16", "batch_size": 2, "seq_len": 144, "prompt_len": 128},
    {"method": "lora", "precision": "bf16", "batch_size": 4, "seq_len": 136, "prompt_len": 8},
    {"method": "qlora", "kbit_prep": False, "precision": "bf16", "batch_size": 2, "seq_len": 144, "prompt_len": 128},
    {"method": "full", "precision": "fp32", "batch_size": 2, "seq_len": 144, "prompt_len": 128},
], ids=["full-copy", "lora-long-response", "qlora", "full-fp32"])
def test_ppo_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "ppo", "reward_model": WIDE_VOCAB.name, "reward_spec": WIDE_VOCAB, **kw})  # type: ignore[arg-type]
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    # common.md's bounds: never under the trace by more than 2 %, over by at most 5 %
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)
    # the two trained models' optimizer states, as traced (the trace rounds every tensor up to CUDA's 512 B blocks)
    assert abs(r.by_category_at_peak["optimizer_state"] - e.optimizer_state) <= e.optimizer_state // 1000


# --- run files ----------------------------------------------------------------------------------------------
def test_ppo_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # TRL 0.19.1 PPOConfig (examples/scripts/ppo/ppo.py): num_ppo_epochs / vf_coef / whiten_rewards ... are its own
    run = _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 2\nreward_model_path: gpt2\n"
                          "num_ppo_epochs: 4\nresponse_length: 53\nkl_coef: 0.05\nstop_token: eos\n")
    o = run.options
    # the file bounds no query: 512 tokens assumed (runfiles.GRPO_PROMPT) + response_length
    assert (o["objective"], o["reward_model"], o["prompt_len"], o["seq_len"]) == ("ppo", "gpt2", 512, 565)
    # reward_model_path's default: EleutherAI/pythia-160m (ppo_config.py); response_length's: 53 (OnPolicyConfig)
    o = _load(tmp_path, "output_dir: out\nvf_coef: 0.1\n").options
    assert (o["reward_model"], o["seq_len"]) == ("EleutherAI/pythia-160m", 512 + 53)
    # gradient_checkpointing: PPOTrainer.train never enables it, so it is not applied
    run = _load(tmp_path, "output_dir: out\nnum_ppo_epochs: 1\ngradient_checkpointing: true\n")
    assert "grad_checkpointing" not in run.options
    for text, message in (
            ("num_ppo_epochs: 4\nlocal_rollout_forward_batch_size: 16\n", "local_rollout_forward_batch_size: 16"),
            ("num_ppo_epochs: 4\nnum_mini_batches: 2\n", "num_mini_batches: 2"),
            ("num_ppo_epochs: 4\nref_adapter_name: ref\n", "ref_adapter_name: a reference adapter"),
            ("num_ppo_epochs: 4\nreward_model_path: ''\n", "reward_model_path: give the reward model")):
        with pytest.raises(runfiles.RunFileError, match=message):
            _load(tmp_path, "output_dir: out\n" + text)


def test_explain_lines_add_up_to_the_components() -> None:
    from vramcalc.core.explain import explain

    t = _ppo(reward_model="gpt2", reward_spec=GPT2)
    x = explain(GPT2, t)
    b = x.breakdown
    for key in ("weights", "gradients", "optimizer_state"):
        sec = next(s for s in x.sections if s.key == key)
        assert sec.total == b.component(key)
        assert sum(line.value for line in sec.lines if line.kind == "bytes") == b.component(key), key
    assert any(s.key == "ppo" for s in x.sections)
    peak = b.peak_moment()
    assert peak is not None and peak.key == "backward.policy" and peak.total == b.tensor_peak_bytes
