"""GRPO (`--objective grpo`, memory/rl.py): generate() and the step on completions, against the pieces they are
built from (the SFT step through TRL's fused head, generate()'s inference model), the tracer, and the options."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cli_helpers import invoke
from test_preference import _load  # a run file written and read back
from vramcalc.core.errors import SpecError
from vramcalc.core.memory import estimate
from vramcalc.core.memory import rl as _rl
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

QWEN = presets.find_model("qwen2.5-0.5b")  # hidden 896, 24 layers, 2 KV heads of 64, vocab 151,936 (config.json)
GRPO = TrainingSpec(objective="grpo", batch_size=8, seq_len=768, prompt_len=256)  # 8 completions, 8 per prompt


def _moment(b, key: str):  # type: ignore[no-untyped-def]
    return next(m for m in b.named_moments() if m.key == key)


# --- the step is the SFT step through TRL's fused head, on the completions -----------------------------------------
def test_training_moments_are_the_sft_trl_step_plus_the_loss_vectors() -> None:
    # grpo_trainer.py _compute_loss: model(..., labels=labels, fused_lm_head=True) on B rows of P + C, the
    # prompt's labels -100: SFTTrainer's --loss trl with --prompt-len P, plus the loss's fp32 [B, C] vectors.
    grpo = estimate(QWEN, GRPO)
    sft = estimate(QWEN, TrainingSpec(loss="trl", batch_size=8, seq_len=768, prompt_len=256))
    vectors = _rl.LOSS_VECTORS * 4 * 8 * 512  # 10 fp32 values per completion token, 8 rows × 512 completion tokens
    for key in ("forward.loss", "backward.start"):
        assert _moment(grpo, key).total - _moment(sft, key).total == vectors
    assert grpo.phases["optimizer_step"] == sft.phases["optimizer_step"]


def test_beta_loads_a_reference_copy_for_full_and_none_for_lora() -> None:
    params = count_params(QWEN)
    base = estimate(QWEN, GRPO)
    ref = estimate(QWEN, replace(GRPO, beta=0.04))
    # grpo_trainer.py __init__: create_model_from_path(dtype=self.model.dtype): bf16 here, 2 B per parameter
    assert ref.weights - base.weights == 2 * params == ref.details["weights.reference"]
    assert base.details["weights.reference"] == 0  # beta 0.0 (GRPOConfig's default): no reference at all
    lora = replace(GRPO, method="lora")
    assert estimate(QWEN, replace(lora, beta=0.04)).weights == estimate(QWEN, lora).weights  # adapters disabled
    # the reference's log-probs are a no-grad pass after generate(), not part of the training step
    assert "temporaries.reference_forward" not in ref.details
    assert ref.details["temporaries.logprob_pass"] > 0 and base.details["temporaries.logprob_pass"] == 0


def test_generation_moment_is_generates_inference_model_on_the_generation_batch() -> None:
    # TRL generates for per_device_train_batch_size × steps_per_generation rows (grpo_config.py), prompt P and
    # max_completion_length new tokens: the cache holds P + C - 1 tokens after the last step.
    t = replace(GRPO, steps_per_generation=4)
    b = estimate(QWEN, t)
    inf = estimate(QWEN, TrainingSpec(mode="inference", batch_size=32, seq_len=256 + 512 - 1, new_tokens=512))
    gen = _moment(b, "forward.generate")
    assert gen.component("kv_cache") == b.kv_cache in (inf.details["kv_cache.prefill"], inf.details["kv_cache.decode"])
    # qwen2.5-0.5b: 24 layers × 2 (K, V) × 2 KV heads × 64 × 2 B = 12,288 B per token; 32 rows × 256 prompt tokens
    assert inf.details["kv_cache.prefill"] == 32 * 256 * 12_288
    # sampling adds softmax's fp32 probabilities over the vocabulary per row (generation/utils.py _sample)
    probs = 32 * 151_936 * 4
    assert gen.component("temporaries") in (inf.details["temporaries.prefill_logits"] + probs,
                                            inf.details["activations.prefill_layer"],
                                            inf.details["activations.prefill_attention"])
    # more steps per generation: more rows generated at once, the same training step
    assert b.details["kv_cache.generation"] == 4 * estimate(QWEN, GRPO).details["kv_cache.generation"]


def test_generation_can_be_the_peak_and_the_notes_say_so() -> None:
    # a LoRA step on 2 completions of a short completion, generating for 64 rows with a long prompt
    t = TrainingSpec(objective="grpo", method="lora", batch_size=2, steps_per_generation=32, seq_len=4096 + 64,
                     prompt_len=4096)
    b = estimate(QWEN, t)
    assert b.peak_moment() is not None and b.peak_moment().key == "forward.generate"  # type: ignore[union-attr]
    assert b.peak_phase == "forward"
    assert any(n.startswith("grpo: the peak is generate()") for n in b.notes)
    step = estimate(QWEN, GRPO)
    assert any(n.startswith("grpo: the peak is the training step (backward.start)") for n in step.notes)


def test_old_policy_pass_and_gradients_follow_trls_schedule() -> None:
    # grpo_trainer.py: old log-probs when gradient_accumulation_steps % (steps_per_generation × num_iterations) != 0
    assert not _rl.old_logps_pass(GRPO)
    assert _rl.old_logps_pass(replace(GRPO, num_iterations=2))
    assert "forward.logprobs" in {m.key for m in estimate(QWEN, replace(GRPO, num_iterations=2)).named_moments()}
    # generate() every 3 micro-batches with grad_accum 2: it falls inside a window, the gradients alive
    t = replace(GRPO, grad_accum=2, steps_per_generation=3)
    b = estimate(QWEN, t)
    assert _moment(b, "forward.generate").component("gradients") == b.gradients
    assert _moment(estimate(QWEN, replace(GRPO, grad_accum=2)), "forward.generate").component("gradients") == 0


@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "grpo", "batch_size": 4, "seq_len": 512, "prompt_len": 128},
     "must be divisible by --num-generations 8"),
    ({"objective": "grpo", "batch_size": 8, "seq_len": 512}, "GRPO generates completions from prompts"),
    ({"objective": "grpo", "batch_size": 8, "seq_len": 512, "prompt_len": 128, "beta": 0.1,
      "ref_model": "precomputed"}, "cannot be precomputed"),
    ({"objective": "grpo", "batch_size": 8, "seq_len": 512, "prompt_len": 128, "ref_model": "copy"},
     "GRPOTrainer loads no reference with beta 0"),
    ({"objective": "grpo", "batch_size": 8, "seq_len": 512, "prompt_len": 128, "loss": "chunked"},
     "fused LM head"),
    ({"num_generations": 4}, "are GRPO's"),
    ({"beta": 0.1, "objective": "dpo"}, "are GRPO's"),
])
def test_impossible_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainingSpec(**kw)  # type: ignore[arg-type]


def test_cli_grpo_json_and_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "qwen2.5-0.5b", "--objective", "grpo", "--batch-size", "8", "--seq-len", "768",
            "--prompt-len", "256", "--beta", "0.04"]
    code, out, _ = invoke([*args, "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["tensor_peak_bytes"] == estimate(QWEN, replace(GRPO, beta=0.04)).tensor_peak_bytes
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "grpo", "--batch-size", "6", "--seq-len",
                             "768", "--prompt-len", "256"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_explain_itemizes_generation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["explain", "qwen2.5-0.5b", "--objective", "grpo", "--batch-size", "8", "--seq-len",
                             "768", "--prompt-len", "256", "--beta", "0.04"], capsys)
    assert code == 0, err
    assert "generate(): completions of the generation batch" in out and "KV cache of the generation batch" in out


# --- the tracer --------------------------------------------------------------------------------------------
# A small llama with a large vocabulary (2 layers, hidden 256, vocab 32,000), as tests/test_preference.py.
WIDE_VOCAB = ModelSpec(name="wide-vocab-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                       intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("kw", [
    {"method": "full", "precision": "bf16", "beta": 0.04},
    {"method": "lora", "precision": "bf16", "steps_per_generation": 8},
    {"method": "full", "precision": "bf16", "use_vllm": "server"},
    {"method": "full", "precision": "bf16", "objective": "rloo", "beta": 0.05},
    {"method": "lora", "precision": "bf16", "objective": "rloo", "steps_per_generation": 8, "use_vllm": "colocate"},
], ids=["full-reference-step-peak", "lora-generation-peak", "vllm-server", "rloo-reference", "rloo-lora-colocate"])
def test_grpo_matches_the_trace(kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(**{"objective": "grpo", "batch_size": 2, "num_generations": 2, "seq_len": 144,  # type: ignore[arg-type]
                        "prompt_len": 128, **kw})
    e = estimate(WIDE_VOCAB, t)
    r = trace(WIDE_VOCAB, t)
    # Issue 14's bounds: never under the trace by more than 2 %, over by at most 5 %.
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


# --- run files ----------------------------------------------------------------------------------------------
def test_trl_grpo_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 8\nnum_generations: 8\n"
                          "max_completion_length: 1024\nmax_prompt_length: 256\nbeta: 0.04\nloss_type: dapo\n"
                          "generation_batch_size: 32\nuse_vllm: false\n")
    o = run.options
    assert (o["objective"], o["num_generations"], o["beta"], o["steps_per_generation"]) == ("grpo", 8, 0.04, 4)
    assert (o["seq_len"], o["prompt_len"]) == (256 + 1024, 256)
    assert o["grad_checkpointing"] is True  # GRPOConfig's default, the file not saying otherwise
    # no prompt bound in the file: TRL's old max_prompt_length default, said in a note
    run = _load(tmp_path, "output_dir: out\nnum_generations: 4\n")
    assert (run.options["seq_len"], run.options["prompt_len"]) == (512 + 512, 512)
    assert any("prompt 512 tokens assumed" in n for n in run.notes)
    # use_vllm: the engine and its colocated keys (grpo_config.py names; memory/rl.py)
    run = _load(tmp_path, "output_dir: out\nnum_generations: 4\nuse_vllm: true\nvllm_mode: colocate\n"
                          "vllm_gpu_memory_utilization: 0.4\nvllm_enable_sleep_mode: true\n"
                          "vllm_max_model_length: 2048\n")
    o = run.options
    assert (o["use_vllm"], o["vllm_utilization"], o["vllm_sleep"], o["max_model_len"]) == ("colocate", 0.4, True,
                                                                                          2048)
    run = _load(tmp_path, "output_dir: out\nnum_generations: 4\nuse_vllm: true\nvllm_mode: server\n"
                          "vllm_gpu_memory_utilization: 0.4\n")  # server: the utilization is the server's own
    assert run.options["use_vllm"] == "server" and "vllm_utilization" not in run.options
    with pytest.raises(runfiles.RunFileError, match="vllm_mode: 'remote' is not a TRL vllm_mode"):
        _load(tmp_path, "output_dir: out\nnum_generations: 4\nuse_vllm: true\nvllm_mode: remote\n")
    with pytest.raises(runfiles.RunFileError, match="vllm_tensor_parallel_size"):
        _load(tmp_path, "output_dir: out\nnum_generations: 4\nuse_vllm: true\nvllm_tensor_parallel_size: 2\n")
    with pytest.raises(runfiles.RunFileError, match="not a TRL GRPO loss_type"):
        _load(tmp_path, "output_dir: out\nnum_generations: 4\nloss_type: ppo\n")
    with pytest.raises(runfiles.RunFileError, match="not a multiple of the micro-batch"):
        _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 8\ngeneration_batch_size: 12\n")


def test_axolotl_rl_grpo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: grpo\nadapter: lora\nmicro_batch_size: 4\ntrl:\n"
                          "  beta: 0.001\n  num_generations: 4\n  max_completion_length: 256\n"
                          "  max_prompt_length: 128\n  use_vllm: false\n")
    o = run.options
    assert (o["objective"], o["method"], o["beta"], o["seq_len"], o["prompt_len"]) == ("grpo", "lora", 0.001,
                                                                                        384, 128)
    # axolotl (main 067b021, core/trainers/grpo/__init__.py): trl.vllm_gpu_memory_utilization is no TRLConfig key
    # (dropped); with trl.vllm_mode colocate, vllm.gpu_memory_utilization (VllmConfig default 0.9) and sleep mode are
    # passed; without vllm_mode, neither: TRL's colocate at 0.3
    with pytest.raises(runfiles.RunFileError, match="trl.vllm_gpu_memory_utilization: not an axolotl trl: key"):
        _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: grpo\ntrl:\n  use_vllm: true\n"
                        "  vllm_gpu_memory_utilization: 0.25\n")
    grpo_vllm = "base_model: qwen2.5-0.5b\nrl: grpo\ntrl:\n  use_vllm: true\n  vllm_enable_sleep_mode: true\n"
    o = _load(tmp_path, grpo_vllm + "vllm:\n  gpu_memory_utilization: 0.25\n").options
    assert (o["use_vllm"], o.get("vllm_utilization"), o.get("vllm_sleep")) == ("colocate", None, None)
    run = _load(tmp_path, grpo_vllm.replace("true\n  vllm_enable", "true\n  vllm_mode: colocate\n  vllm_enable")
                + "vllm:\n  gpu_memory_utilization: 0.25\n  max_model_len: 4096\n  dtype: bfloat16\n")
    assert (run.options["vllm_utilization"], run.options["vllm_sleep"]) == (0.25, True)
    assert {"vllm.gpu_memory_utilization", "vllm.max_model_len", "vllm.dtype"} <= set(run.mapped)
    assert any("axolotl vllm-serve" in n for n in run.notes)  # max_model_len, dtype: the server's, not this GPU's
    o = _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: grpo\ntrl:\n  use_vllm: true\n  vllm_mode: colocate\n"
                        "vllm:\n  max_model_len: 4096\n").options
    assert o["vllm_utilization"] == 0.9  # VllmConfig's default, passed in colocate mode
    for text, message in (("  vllm_mode: colocate\nvllm:\n  tensor_parallel_size: 2\n", "vllm.tensor_parallel_size"),
                          ("vllm:\n  swap_space: 4\n", "vllm.swap_space: not a key"),
                          ("  vllm_max_model_length: 4096\n", "trl.vllm_max_model_length: not an axolotl")):
        with pytest.raises(runfiles.RunFileError, match=message):
            _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: grpo\ntrl:\n  use_vllm: true\n" + text)
    with pytest.raises(runfiles.RunFileError, match="trl.use_vllm: 'yes' is not a boolean"):
        _load(tmp_path, "base_model: qwen2.5-0.5b\nrl: grpo\ntrl:\n  use_vllm: 'yes'\n")


# --- GRPO with vLLM (memory/rl.py; trl/generation/vllm_generation.py) -------------------------------------------
COLOCATE = replace(GRPO, use_vllm="colocate")
RUNTIME = ("overhead.cuda_context", "overhead.cublas_workspace", "overhead.nccl_buffers", "overhead.allocator_reserve")


def _train_bytes(b) -> int:  # type: ignore[no-untyped-def]
    """The training step's own peak: tensors + memory/overhead.py's runtime terms (no vLLM)."""
    return b.tensor_peak_bytes + sum(b.details[k] for k in RUNTIME)


def test_vllm_replaces_generate_and_always_runs_the_old_policy_pass() -> None:
    # generation in vLLM: no forward.generate moment on the policy; the old policy's pass runs for importance
    # sampling (grpo_trainer.py _generate_and_score_completions: `or (use_vllm and
    # vllm_importance_sampling_correction)`), its results beside vLLM's sampling log-probs ([rows, C] fp32)
    off, col = estimate(QWEN, GRPO), estimate(QWEN, COLOCATE)
    assert "forward.generate" not in {m.key for m in col.named_moments()}
    assert off.details["temporaries.logprob_pass"] == 0  # grad_accum 1 = generate_every: no old pass without vLLM
    from vramcalc.core.memory.precision import recipe_of

    plan = _rl.logprob_plan(QWEN, COLOCATE, recipe_of(COLOCATE))
    assert plan is not None
    results = 8 * 512 * 4 * 2  # old log-probs and vLLM's sampling log-probs, 8 rows × 512 completion tokens, fp32
    assert col.details["temporaries.logprob_pass"] == plan.peak(8 * 768, 8 * 512) + results
    # the loss multiplies by the importance-sampling ratio: one more fp32 [B, C] vector than without vLLM
    assert _moment(col, "forward.loss").total - _moment(off, "forward.loss").total == 4 * 8 * 512


def test_colocated_peak_is_the_smallest_gpu_holding_the_step_and_vllms_share() -> None:
    from vramcalc.core.memory import vllm

    b = estimate(QWEN, COLOCATE)
    step = _train_bytes(b)
    view = _rl.vllm_view(QWEN, COLOCATE)
    # the engine TRL builds: max_num_seqs = per_device_train_batch_size × steps_per_generation, 4096 batched tokens
    assert (view.max_num_seqs, view.max_num_batched_tokens, view.gpu_memory_utilization) == (8, 4096, 0.3)
    gpu = b.peak_bytes
    # memory/vllm.py colocated_bytes: utilization × the GPU + the CUDA graphs; the step fits beside it on `gpu`
    # and not on a GPU 1 MB smaller
    assert step + vllm.colocated_bytes(QWEN, view, gpu, 0.3) <= gpu
    assert step + vllm.colocated_bytes(QWEN, view, gpu - 10**6, 0.3) > gpu - 10**6
    assert b.details["overhead.vllm_engine"] == b.details["vllm.budget"] == gpu * 3 // 10
    # vLLM starts there: the budget covers non_kv_cache_memory and one max_model_len request (demand_bytes)
    assert b.details["vllm.budget"] >= vllm.demand_bytes(QWEN, view, 1)[1] == b.details["vllm.start_budget"]
    assert b.tensor_peak_bytes == estimate(QWEN, replace(GRPO, use_vllm="server")).tensor_peak_bytes


def test_colocated_sleep_frees_the_engine_during_the_step() -> None:
    from vramcalc.core.memory import vllm

    sleep = replace(COLOCATE, vllm_sleep=True)
    b = estimate(QWEN, sleep)
    view = _rl.vllm_view(QWEN, sleep)
    p = vllm.profile(QWEN, view, vllm.settings(QWEN, view))
    step = _train_bytes(b)
    held = b.details["vllm.training_held"]  # weights + optimizer state + overhead while vLLM generates
    assert held == b.weights + b.optimizer_state + sum(b.details[k] for k in RUNTIME)
    # level 2: the step runs beside the graphs and non-torch memory; generation wakes the whole budget beside `held`
    need_step = step + p.cuda_graphs + p.non_torch
    need_gen = -(-(held + p.cuda_graphs) * 10 // 7)  # held + 0.3 M + graphs <= M
    assert b.peak_bytes == max(need_step, need_gen, -(-b.details["vllm.start_budget"] * 10 // 3))
    assert b.peak_bytes < estimate(QWEN, COLOCATE).peak_bytes


def test_vllm_server_streams_the_weights_through_packed_buffers() -> None:
    b = estimate(QWEN, replace(GRPO, use_vllm="server"))
    sync = _moment(b, "forward.weight_sync")
    # qwen2.5-0.5b bf16 weights (494,032,768 params × 2 B < 1 GiB): one packed buffer, the whole model
    assert sync.total - b.weights - b.optimizer_state == b.weights == 2 * count_params(QWEN)
    big = presets.find_model("qwen2.5-7b")
    bb = estimate(big, replace(GRPO, use_vllm="server", method="lora"))
    # 3 buffers of at most 1 GiB + the largest tensor (the embedding: 152,064 × 3,584 × 2 B)
    assert bb.details["temporaries.generation"] == 3 * (2**30 + 152_064 * 3_584 * 2)


def test_vllm_options_are_refused_where_they_do_not_apply(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="add --objective grpo"):
        TrainingSpec(use_vllm="colocate")
    with pytest.raises(SpecError, match="add --use-vllm colocate"):
        replace(GRPO, vllm_sleep=True)
    with pytest.raises(SpecError, match="8-bit"):
        replace(COLOCATE, method="qlora", quant_bits=8)
    code, _, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "grpo", "--prompt-len", "256", "--seq-len",
                           "768", "--vllm-utilization", "0.5"], capsys)
    assert code == 2 and "add --use-vllm colocate" in err and len(err.strip().splitlines()) == 1


def test_colocate_on_a_gpu_reports_the_pool_and_the_utilization_range(capsys) -> None:  # type: ignore[no-untyped-def]
    from vramcalc.core.memory import vllm

    h100 = presets.find_gpu("h100")
    code, out, err = invoke(["estimate", "qwen2.5-0.5b", "--objective", "grpo", "--prompt-len", "256", "--seq-len",
                             "768", "--batch-size", "8", "--use-vllm", "colocate", "--gpu", "h100", "--format",
                             "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    b = estimate(QWEN, COLOCATE)
    step, held = b.details["vllm.training_step"], b.details["vllm.training_held"]
    view = _rl.vllm_view(QWEN, COLOCATE)
    pool = vllm.kv_pool(QWEN, view, h100.memory_bytes, h100.name)
    assert any(f"({pool.tokens:,} tokens)" in n for n in doc["notes"])
    lo, hi = _rl.utilization_range(QWEN, COLOCATE, step, held, h100.memory_bytes)  # type: ignore[misc]
    # the largest utilization leaves the step its room; one hundredth more does not
    assert step + vllm.colocated_bytes(QWEN, view, h100.memory_bytes, hi) <= h100.memory_bytes
    assert step + vllm.colocated_bytes(QWEN, view, h100.memory_bytes, hi + 0.01) > h100.memory_bytes
    # the smallest starts vLLM: its budget covers demand_bytes' start need
    assert int(h100.memory_bytes * lo) >= vllm.demand_bytes(QWEN, view, 1)[1]
    assert any(f"{lo:g} to {hi:g}" in n for n in doc["notes"])
    # the verdict's headroom is what is left on this GPU once vLLM takes 0.3 of it: GPU − step − budget − graphs
    graphs = b.details["overhead.vllm_cuda_graphs"]
    assert doc["headroom_bytes"] == h100.memory_bytes - step - h100.memory_bytes * 3 // 10 - graphs


@pytest.mark.parametrize("sleep", [False, True], ids=["awake", "sleep"])
def test_explain_overhead_lines_add_up_with_a_colocated_engine(sleep: bool) -> None:
    from vramcalc.core.explain import explain

    e = explain(QWEN, replace(COLOCATE, vllm_sleep=sleep))
    sec = {s.key: s for s in e.sections}["overhead"]
    assert sum(x.value for x in sec.lines) == e.breakdown.overhead == sec.total
    assert e.breakdown.peak_bytes == estimate(QWEN, replace(COLOCATE, vllm_sleep=sleep)).peak_bytes


# --- RLOO (TRL RLOOTrainer, memory/rl.py) ------------------------------------------------------------------------
RLOO = replace(GRPO, objective="rloo")


def test_rloo_is_the_grpo_step_with_a_sequence_level_loss_and_the_old_pass_always() -> None:
    grpo, rloo = estimate(QWEN, GRPO), estimate(QWEN, RLOO)
    # rloo_trainer.py _compute_loss: 4 fp32 [B, C] tensors against GRPO's 10 (beta 0 both): 8 rows × 512 tokens
    assert _moment(grpo, "forward.loss").total - _moment(rloo, "forward.loss").total == (10 - 4) * 4 * 8 * 512
    # _generate_and_score_completions: the old policy's log-probs unconditionally (GRPO: only when misaligned)
    assert grpo.details["temporaries.logprob_pass"] == 0 < rloo.details["temporaries.logprob_pass"]
    assert _moment(rloo, "forward.generate").total == _moment(grpo, "forward.generate").total


def test_rloo_takes_rlooconfigs_defaults_unless_given(capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["estimate", "qwen2.5-0.5b", "--objective", "rloo", "--batch-size", "8", "--seq-len", "768",
            "--prompt-len", "256", "--format", "json"]
    code, out, err = invoke(args, capsys)
    assert code == 0, err
    doc = json.loads(out)
    # trl/trainer/rloo_config.py: beta 0.05 (a frozen reference copy, bf16: 2 B per parameter), num_generations 2
    assert any("2 per prompt" in n for n in doc["notes"])
    assert doc["details"]["weights.reference"] == 2 * count_params(QWEN)
    code, out, err = invoke([*args, "--beta", "0"], capsys)
    assert code == 0, err
    assert json.loads(out)["details"]["weights.reference"] == 0


def test_trl_rloo_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # normalize_advantages / reward_clip_range exist in RLOOConfig only (trl/trainer/rloo_config.py)
    run = _load(tmp_path, "output_dir: out\nper_device_train_batch_size: 4\nmax_completion_length: 256\n"
                          "max_prompt_length: 128\nnormalize_advantages: true\nuse_vllm: true\n")
    o = run.options
    assert (o["objective"], o["seq_len"], o["prompt_len"], o["use_vllm"]) == ("rloo", 384, 128, "colocate")
    assert "beta" not in o and o["grad_checkpointing"] is True  # RLOOConfig's beta default comes from the options
    # an OnlineDPOConfig (trl/experimental/online_dpo) is read as --objective online-dpo: tests/test_online_dpo.py
    with pytest.raises(runfiles.RunFileError, match="RLOOConfig has no loss_type"):
        _load(tmp_path, "output_dir: out\nreward_clip_range: [-1, 1]\nloss_type: dapo\n")
