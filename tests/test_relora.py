"""axolotl ReLoRA (issue 13; core/memory/relora.py): `relora: true` with jagged_restart_steps, --relora, its trace.

At each restart, before a step (ReLoRACallback.on_step_begin, after the previous step's zero_grad), axolotl's
merge_and_save adds peft's get_delta_weight (B @ A, then times the scaling: two out x in tensors in the adapter dtype)
into each LoRA layer in place, one layer at a time, and reset_optimizer magnitude-prunes each LoRA parameter's Adam
states (axolotl-ai-cloud/axolotl @ 067b021c src/axolotl/monkeypatch/relora.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, VramcalcError
from vramcalc.core.memory import estimate, relora
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (config.json: hidden 2048, 4 KV heads of 64, MLP 5632): gate/up are 5632 x 2048, down 2048 x 5632,
# q/o 2048 x 2048, k/v 256 x 2048. fp32 adapters (the default): 4 B per element of B @ A and of its scaled copy.
MLP_PAIR = 2 * 5632 * 2048 * 4  # 92,274,688: the largest all-linear layer's merge
Q_PAIR = 2 * 2048 * 2048 * 4  # 33,554,432: q_proj, the larger of the default q_proj / v_proj targets
RUN = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=1, seq_len=64,
                   relora=True)


def _off(t: TrainingSpec) -> TrainingSpec:
    from dataclasses import replace

    return replace(t, relora=False)


@pytest.mark.parametrize("targets, pair", [(("all-linear",), MLP_PAIR), (("auto",), Q_PAIR)])
def test_the_restart_holds_the_largest_layers_delta_pair_beside_weights_and_states(targets: tuple[str, ...],
                                                                                   pair: int) -> None:
    from dataclasses import replace

    m = presets.find_model("tinyllama-1.1b")
    t = replace(RUN, lora_targets=targets)
    b, plain = estimate(m, t), estimate(m, _off(t))
    assert relora.merge_bytes(m, t) == pair == b.details["temporaries.relora_merge"]
    moment = next(x for x in b.named_moments() if x.key == "forward.relora_merge")
    # no gradient and no activation alive: the weights, the optimizer states and the pair
    assert moment.total == b.weights + b.optimizer_state + pair
    assert b.phases["forward"] == max(plain.phases["forward"], moment.total)
    # the rest of the step is the plain LoRA step's
    assert (b.phases["backward"], b.phases["optimizer_step"]) == (plain.phases["backward"],
                                                                  plain.phases["optimizer_step"])
    assert (b.weights, b.gradients, b.optimizer_state, b.activations) == (plain.weights, plain.gradients,
                                                                          plain.optimizer_state, plain.activations)
    assert any("ReLoRA" in n for n in b.notes) and not any("ReLoRA" in n for n in plain.notes)


def test_a_short_step_peaks_at_the_merge_a_long_one_at_the_step() -> None:
    from dataclasses import replace

    m = presets.find_model("tinyllama-1.1b")
    short = estimate(m, replace(RUN, seq_len=16))  # b1 s16: 22 layers' activations and the logits under the pair
    peak = short.peak_moment()
    assert peak is not None and peak.key == "forward.relora_merge"
    long = replace(RUN, seq_len=4096)
    assert estimate(m, long).tensor_peak_bytes == estimate(m, _off(long)).tensor_peak_bytes


def test_pruning_a_wide_adapters_states_can_outweigh_the_merge() -> None:
    from dataclasses import replace

    m = presets.find_model("tinyllama-1.1b")
    # rank 2048 on q_proj only: A is 2048 x 2048, B 2048 x 2048: 16 B per state element at the quantile's sort
    # (|state| 4 + sorted copy 4 + int64 indices 8) = 67,108,864 B, over q_proj's pair (33,554,432 B)
    t = replace(RUN, lora_targets=("q_proj",), lora_rank=2048)
    assert relora.prune_bytes(m, t) == 16 * 2048 * 2048 == 67_108_864
    assert estimate(m, t).details["temporaries.relora_merge"] == 67_108_864


@pytest.mark.parametrize("kw, words", [
    ({"method": "qlora"}, "4-bit"),  # bitsandbytes 0.50 Params4bit.to: the merged weight stays unquantized
    # Int8Params.to quantizes only from the CPU; the forward keeps the old int8 weights (Linear8bitLt state.CB)
    ({"method": "qlora", "quant_bits": 8}, "8-bit"),
    ({"method": "full"}, "plain LoRA"),
    ({"dora": True}, "plain LoRA"),
    ({"optimizer": "sgd"}, "--optimizer adamw"),
    ({"optimizer": "adamw-8bit"}, "--optimizer adamw"),
    ({"objective": "dpo"}, "supervised"),
    ({"zero": 2, "gpus_per_node": 2}, "DeepSpeed"),
])
def test_what_is_not_modelled_is_refused(kw: dict[str, object], words: str) -> None:
    from dataclasses import asdict

    base = {k: v for k, v in asdict(RUN).items() if k in ("method", "precision", "lora_targets", "relora")}
    with pytest.raises(SpecError, match=words):
        TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def _file(tmp_path: Path, text: str) -> str:
    f = tmp_path / "axolotl.yaml"
    f.write_text("base_model: tinyllama-1.1b\nadapter: lora\n" + text, encoding="utf-8")
    return str(f)


def test_axolotl_relora_keys_map_to_the_option(tmp_path: Path) -> None:
    run = runfiles.load(_file(tmp_path, "relora: true\njagged_restart_steps: 100\nrelora_prune_ratio: 0.99\n"
                                        "relora_cpu_offload: false\n"))[0]
    assert run.options["relora"] is True
    assert {"relora", "jagged_restart_steps", "relora_prune_ratio", "relora_cpu_offload"} <= set(run.mapped)
    assert not run.unmodelled and not {"relora", "relora_prune_ratio"} & set(run.ignored)
    random = runfiles.load(_file(tmp_path, "relora: true\njagged_restart_steps: 100\nrelora_prune_method: "
                                           "random\n"))[0]
    assert runfiles.RELORA_PRUNE_NOTE.format("random") in random.notes
    off = runfiles.load(_file(tmp_path, "relora: false\njagged_restart_steps: 100\n"))[0]
    assert "relora" not in off.options and "relora" in off.mapped
    # relora_steps: axolotl dropped it (7b68dfaf), nothing restarts: a note, no option
    old = runfiles.load(_file(tmp_path, "relora_steps: 150\n"))[0]
    assert "relora" not in old.options and runfiles.RELORA_STEPS_NOTE in old.notes and "relora_steps" in old.ignored
    with pytest.raises(VramcalcError, match="relora_prune_method"):
        runfiles.load(_file(tmp_path, "relora: true\njagged_restart_steps: 100\nrelora_prune_method: topk\n"))


def test_cli_option_and_a_qlora_refusal_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--relora", "--seq-len", "64",
                             "--batch-size", "1", "--format", "json"], capsys)
    assert code == 0, err
    assert "relora_merge" in out and "ReLoRA" in out
    code, out, err = invoke(["estimate", "tinyllama-1.1b", "--method", "qlora", "--relora"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "4-bit" in err


@pytest.mark.parametrize("targets, rank, restart", [
    # q_proj at rank 256 on a 256-wide model: A and B are 256 x 256, pruning's 16 B per state element (1,048,576 B)
    # outweighs q_proj's B @ A pair (2 x 256 x 256 x 4 = 524,288 B)
    (("q_proj",), 256, 16 * 256 * 256),
    # all linears at rank 8: the MLP's 704 x 256 pair (2 x 704 x 256 x 4 = 1,441,792 B), the step's peak here
    (("all-linear",), 8, 2 * 704 * 256 * 4),
])
def test_the_restart_matches_the_trace_of_a_small_llama(targets: tuple[str, ...], rank: int, restart: int) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.core.specs import ModelSpec
    from vramcalc.trace import trace

    small = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=1000, hidden_size=256,
                      intermediate_size=704, num_layers=4, num_attention_heads=4, num_kv_heads=2)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=targets, lora_rank=rank, batch_size=1, seq_len=8,
                     relora=True)
    got, ref = estimate(small, t), trace(small, t)
    assert got.details["temporaries.relora_merge"] == restart
    # the forward phase holds the restart (trace/_relora.py runs axolotl's merge and pruning before the reported
    # step); measured -0.011 % and -0.010 % (the tracer's 512 B blocks of the quantile's and AdamW's scalars)
    err = (got.phases["forward"] - ref.phase_peaks["forward"]) / ref.phase_peaks["forward"]
    assert abs(err) <= 0.0005, f"estimate {got.phases['forward']:,} vs trace {ref.phase_peaks['forward']:,}"


def test_timeline_and_explain_name_the_restart(capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from vramcalc.core.memory.timeline import timeline

    m = presets.find_model("tinyllama-1.1b")
    t = replace(RUN, seq_len=16)  # the restart is the peak here (see the short-step test above)
    line = timeline(m, t)
    first = line.points[0]
    assert first.label == "ReLoRA restart (merge, before the step)" and first.phase == "forward"
    assert first.total_bytes == estimate(m, t).tensor_peak_bytes
    code, out, err = invoke(["explain", "tinyllama-1.1b", "--method", "lora", "--lora-targets", "all-linear",
                             "--relora", "--seq-len", "16", "--batch-size", "1"], capsys)
    assert code == 0, err
    assert "ReLoRA restarts" in out and "the forward phase wins, at 'ReLoRA restart before the step" in out
