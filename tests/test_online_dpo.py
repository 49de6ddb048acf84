"""Online DPO (`--objective online-dpo`, memory/online_dpo.py): generate() on 2B rows in every micro-batch, the
policy's and the reference's full logits, against the pieces it is built from, the tracer, the options and run
files."""

from __future__ import annotations

import pytest

from cli_helpers import invoke
from test_preference import _load  # a run file written and read back
from test_rl import QWEN, WIDE_VOCAB
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import runfiles

ODPO = TrainingSpec(objective="online-dpo", batch_size=2, seq_len=576, prompt_len=512, precision="bf16")


def _moment(b, key: str):  # type: ignore[no-untyped-def]
    return next(m for m in b.named_moments() if m.key == key)


def test_generation_is_grpos_generate_on_two_completions_per_prompt() -> None:
    # online_dpo_trainer.py _generate: prompt ids repeat(2, 1), generate(max_new_tokens=C): GRPO's generate() moment
    # (memory/rl.py) on a generation batch of 2B rows (GRPO: --batch-size 2B x 1 step per generation)
    odpo = estimate(QWEN, ODPO)
    grpo = estimate(QWEN, TrainingSpec(objective="grpo", batch_size=4, num_generations=2, steps_per_generation=1,
                                       seq_len=576, prompt_len=512, precision="bf16"))
    assert odpo.details["kv_cache.generation"] == grpo.details["kv_cache.generation"]
    assert odpo.details["temporaries.generation"] == grpo.details["temporaries.generation"]
    # qwen2.5-0.5b: 24 layers × 2 (K, V) × 2 KV heads × 64 × 2 B = 12,288 B per token; 4 rows × 512 prompt tokens at
    # the prefill (its logits and probabilities the larger moment), or × (512 + 63) after the last decode step
    assert odpo.details["kv_cache.generation"] in (4 * 512 * 12_288, 4 * 575 * 12_288)


def test_reference_copy_for_full_and_adapters_off_for_lora() -> None:
    # online_dpo_trainer.py __init__: create_reference_model (a copy in the policy's dtype) without peft, the policy
    # with disable_adapter() with it; the reference's no-grad forward is a moment of its own
    full = estimate(QWEN, ODPO)
    assert full.details["weights.reference"] == 2 * count_params(QWEN)  # bf16: 2 B per parameter
    lora = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "method": "lora"}))
    assert lora.details["weights.reference"] == 0
    assert _moment(full, "forward.reference").total > 0


def _kw(t: TrainingSpec) -> dict[str, object]:
    return {k: getattr(t, k) for k in ("objective", "batch_size", "seq_len", "prompt_len", "precision")}


def test_the_head_keeps_the_completion_log_softmax_and_not_the_logits() -> None:
    # _forward: logits[:, P-1:-1].log_softmax(-1) is saved ([2B, C, V] in the logits' dtype: bf16 here), the full
    # [2B, P + C, V] logits are freed when _forward returns: the head's saved bytes grow with C, not with P
    short = estimate(QWEN, ODPO)
    long_prompt = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "seq_len": 1088, "prompt_len": 1024}))
    more_completion = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "seq_len": 640, "prompt_len": 512}))
    saved = "activations.loss_saved"
    head_input = 2 * 896 * 4  # lm_head's bf16 input per position (hidden 896), 4 rows
    # 64 more completion positions × 4 rows × vocab 151,936 × 2 B, plus the int64 index and the bf16 log-probs
    assert more_completion.details[saved] - short.details[saved] == 64 * 4 * (151_936 * 2 + 8 + 2) + 64 * head_input
    assert long_prompt.details[saved] - short.details[saved] == 512 * head_input


@pytest.mark.parametrize(("kw", "message"), [
    ({"use_vllm": "colocate", "max_model_len": 4096}, "sets vLLM's max_model_len itself"),
    ({"use_vllm": "server", "vllm_sleep": True}, "add --use-vllm colocate"),
    ({"use_vllm": "colocate", "method": "qlora", "quant_bits": 8}, "8-bit"),
    ({"loss": "trl"}, "computes the full logits"),
    ({"prompt_len": 0}, "give --prompt-len"),
    ({"ref_model": "precomputed"}, "cannot be precomputed"),
    ({"num_generations": 4}, "GRPO's"),
])
def test_what_is_not_modelled_is_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainingSpec(**{**_kw(ODPO), **kw})  # type: ignore[arg-type]


def test_beta_is_accepted_and_changes_nothing() -> None:
    # the loss (sigmoid / ipo) is arithmetic on B per-sequence sums: beta changes no tensor
    assert estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "beta": 0.5})).phases == estimate(QWEN, ODPO).phases


def test_cli_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--objective", "online-dpo", "--batch-size", "2", "--seq-len", "576", "--prompt-len", "512"]
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", *args], capsys)
    assert code == 0, err
    assert "OnlineDPOTrainer" in out and "forward.generate" in out
    code, out, err = invoke(["explain", "qwen2.5-0.5b", *args], capsys)
    assert code == 0, err
    assert "online_dpo_trainer.py" in out.replace("\n      ", "") and "Online DPO" in out
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", *args, "--use-vllm", "colocate", "--max-model-len",
                             "4096"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "max_model_len" in err
    for mode in ("colocate", "server"):
        code, out, err = invoke(["explain", "qwen2.5-0.5b", *args, "--use-vllm", mode], capsys)
        assert code == 0, err
        assert "vLLM" in out


def test_checkpointing_generates_without_a_kv_cache() -> None:
    # online_dpo_trainer.py __init__: generation_kwargs use_cache = not gradient_checkpointing (OnlineDPOConfig's
    # default is True): no KV cache; the last step runs the whole sequence (P + C - 1 tokens per row) under no_grad
    gc = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "grad_checkpointing": True}))
    assert gc.details["kv_cache.generation"] == 0
    assert "use_cache=False" in " ".join(gc.notes)
    # one no-grad layer over 4 rows × 575 tokens: at least the residual stream and the normed input (2 × 2 B × 896
    # hidden) and the MLP's act(gate), up and product (3 × 2 B × 4,864 intermediate) per token (qwen2.5-0.5b)
    assert gc.details["temporaries.generation"] >= 4 * 575 * (2 * 2 * 896 + 3 * 2 * 4_864)


# --- generation in vLLM (memory/rl.py vllm_view / sync_bytes, online_dpo_trainer.py _generate_vllm) ----------------
def test_vllm_replaces_generate_on_the_policy() -> None:
    off = estimate(QWEN, ODPO)
    for mode in ("colocate", "server"):
        b = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "use_vllm": mode}))
        keys = {m.key for m in b.named_moments()}
        assert "forward.generate" not in keys and b.details["kv_cache.generation"] == 0
        # no old-policy pass (Online DPO has no importance sampling): the step's moments are vLLM-off's
        assert "forward.logprobs" not in keys
        assert _moment(b, "forward.reference").total == _moment(off, "forward.reference").total
        assert _moment(b, "backward.head").total == _moment(off, "backward.head").total
    # under checkpointing generate(use_cache=False) no longer runs either
    gc = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "grad_checkpointing": True, "use_vllm": "colocate"}))
    assert gc.details["temporaries.generation"] == 0


def test_colocated_engine_is_the_one_online_dpo_builds() -> None:
    from vramcalc.core.memory import rl, vllm
    from vramcalc.core.memory.preference import policy_view

    col = TrainingSpec(**{**_kw(ODPO), "use_vllm": "colocate", "vllm_utilization": 0.55})
    view = rl.vllm_view(QWEN, policy_view(col))
    # online_dpo_trainer.py __init__: LLM(max_num_seqs=per_device_train_batch_size (2), max_model_len=max_length
    # (576) + max_new_tokens (64), max_num_batched_tokens=4096, gpu_memory_utilization=0.55)
    s = vllm.settings(QWEN, view)
    assert (s.max_num_seqs, s.max_model_len, s.gpu_memory_utilization) == (2, 576 + 64, 0.55)
    # config/scheduler.py caps the batched tokens at max_num_seqs × max_model_len
    assert s.max_num_batched_tokens == min(4096, 2 * 640)
    b = estimate(QWEN, col)
    # GRPO's colocated arithmetic (memory/rl.py colocated): the peak is the smallest GPU with the step beside 0.55 of
    # it and the CUDA graphs
    step = b.details["vllm.training_step"]
    assert b.details["vllm.budget"] == b.peak_bytes * 55 // 100
    assert step + vllm.colocated_bytes(QWEN, view, b.peak_bytes, 0.55) <= b.peak_bytes
    assert step + vllm.colocated_bytes(QWEN, view, b.peak_bytes - 10**6, 0.55) > b.peak_bytes - 10**6
    assert b.details["vllm.start_budget"] == vllm.demand_bytes(QWEN, view, 1)[1]


def test_online_dpo_vllm_utilization_default_is_its_configs(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    args = ["--objective", "online-dpo", "--batch-size", "2", "--seq-len", "576", "--prompt-len", "512",
            "--use-vllm", "colocate", "--format", "json"]
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", *args], capsys)
    assert code == 0, err
    # OnlineDPOConfig vllm_gpu_memory_utilization 0.55 (GRPOConfig's 0.3)
    assert any("--vllm-utilization 0.55" in n for n in json.loads(out)["notes"])
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", *args, "--vllm-utilization", "0.4"], capsys)
    assert code == 0, err
    assert any("--vllm-utilization 0.4 " in n for n in json.loads(out)["notes"])


def test_server_mode_syncs_one_parameter_at_a_time() -> None:
    b = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "use_vllm": "server"}))
    sync = _moment(b, "forward.weight_sync")
    # _move_model_to_vllm_inner: update_named_param per parameter, each its own packed buffer (a torch.cat copy of
    # that tensor): the largest, qwen2.5-0.5b's embedding 151,936 × 896 × 2 B; after zero_grad, no gradients
    assert b.details["temporaries.generation"] == 151_936 * 896 * 2
    assert sync.total == b.weights + b.optimizer_state + 151_936 * 896 * 2
    acc = estimate(QWEN, TrainingSpec(**{**_kw(ODPO), "use_vllm": "server", "grad_accum": 4}))
    assert _moment(acc, "forward.weight_sync").total == acc.weights + acc.optimizer_state + 151_936 * 896 * 2


# --- the tracer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"method": "full", "precision": "bf16"},
    {"method": "lora", "precision": "amp-bf16"},
    {"method": "full", "precision": "bf16", "grad_accum": 2},
    {"method": "lora", "precision": "amp-bf16", "grad_checkpointing": True},
    {"method": "full", "precision": "bf16", "use_vllm": "server"},
    {"method": "lora", "precision": "bf16", "use_vllm": "colocate", "vllm_sleep": True, "grad_accum": 2},
], ids=["full-copy", "lora-amp-adapters-off", "full-accum", "lora-amp-gc-uncached", "full-vllm-server",
        "lora-vllm-colocate-sleep-accum"])
def test_online_dpo_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "online-dpo", "batch_size": 2, "seq_len": 144, "prompt_len": 128, **kw})  # type: ignore[arg-type]
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    # common.md's bounds: never under the trace by more than 2 %, over by at most 5 %
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


# --- run files ----------------------------------------------------------------------------------------------
def test_online_dpo_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # max_new_tokens / missing_eos_penalty / reward_model_path exist in OnlineDPOConfig only (dataclasses.fields of
    # trl/experimental/online_dpo/online_dpo_config.py less GRPOConfig's, RLOOConfig's, DPOConfig's, KTOConfig's and
    # SFTConfig's in TRL 1.16)
    run = _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 2\nmax_new_tokens: 128\nmax_length: 640\n"
                          "gradient_checkpointing: false\nbeta: 0.2\nloss_type: ipo\nmissing_eos_penalty: 1.0\n")
    o = run.options
    # the prompt is taken as filling max_length (prompt + completion): 640 - 128
    assert (o["objective"], o["seq_len"], o["prompt_len"], o["beta"]) == ("online-dpo", 640, 512, 0.2)
    # OnlineDPOConfig's defaults: max_length 512, max_new_tokens 64
    o = _load(tmp_path, "output_dir: out\nmissing_eos_penalty: 1.0\ngradient_checkpointing: false\n").options
    assert (o["seq_len"], o["prompt_len"]) == (512, 448)
    # OnlineDPOConfig's gradient_checkpointing default is True (generation then without a KV cache)
    assert _load(tmp_path, "output_dir: out\nmax_new_tokens: 64\n").options["grad_checkpointing"] is True
    # reward_model_path: the reward model, onto --reward-model (resolved like MODEL by the CLI)
    assert _load(tmp_path, "output_dir: out\nreward_model_path: qwen2.5-0.5b\n").options["reward_model"] == \
        "qwen2.5-0.5b"
    for text, message in (
            ("gradient_checkpointing: false\nreward_model_path: ''\n", "reward_model_path: give the reward model"),
            ("gradient_checkpointing: false\nmax_new_tokens: 64\nloss_type: hinge\n", "loss_type: 'hinge'")):
        with pytest.raises(runfiles.RunFileError, match=message):
            _load(tmp_path, "output_dir: out\n" + text)
    # use_vllm with OnlineDPOConfig's vllm_mode default colocate; vllm_gpu_memory_utilization / sleep mode as GRPO's
    o = _load(tmp_path, "output_dir: out\nmax_new_tokens: 64\nuse_vllm: true\nvllm_enable_sleep_mode: true\n"
                        "vllm_gpu_memory_utilization: 0.4\n").options
    assert (o["use_vllm"], o["vllm_sleep"], o["vllm_utilization"]) == ("colocate", True, 0.4)
    o = _load(tmp_path, "output_dir: out\nmax_new_tokens: 64\nuse_vllm: true\nvllm_mode: server\n").options
    assert o["use_vllm"] == "server" and "vllm_utilization" not in o
    for text, message in (
            ("max_new_tokens: 64\nuse_vllm: true\nvllm_max_model_length: 4096\n", "sets vLLM's max_model_len"),
            ("max_new_tokens: 64\nuse_vllm: true\nvllm_tensor_parallel_size: 2\n", "vllm_tensor_parallel_size"),
            ("max_new_tokens: 64\nuse_vllm: true\nvllm_mode: remote\n", "not a TRL vllm_mode")):
        with pytest.raises(runfiles.RunFileError, match=message):
            _load(tmp_path, "output_dir: out\n" + text)


def test_the_reference_after_a_checkpointed_amp_policy_holds_the_heads_cast_only() -> None:
    # under checkpointing the policy's layers save no autocast casts of their frozen weights (autocast caches a cast
    # only for a leaf that requires grad), so the adapters-off reference's forward runs beside the head's cast alone,
    # as the loss does. Traced (benchmarks/accuracy.py --grid rl "online-dpo lora amp" with checkpointing on:
    # qwen2.5-0.5b LoRA all-linear amp-bf16, b2, 256-token prompts + 16 completion tokens): 3,500,445,184 B at the
    # reference's log-softmax; the estimate read +20.05 % with every layer's casts counted there
    t = TrainingSpec(method="lora", precision="amp-bf16", lora_targets=("all-linear",), objective="online-dpo",
                     seq_len=272, prompt_len=256, batch_size=2, grad_checkpointing=True)
    b = estimate(QWEN, t)
    ref, loss = _moment(b, "forward.reference"), _moment(b, "forward.loss")
    copies = {n.name: n.bytes for n in ref.terms}["autocast weight copies"]
    assert copies == {n.name: n.bytes for n in loss.terms}["autocast weight copies"] == 151_936 * 896 * 2
    assert -0.01 <= b.tensor_peak_bytes / 3_500_445_184 - 1 <= 0.03
