"""Partial fine-tuning by name (issue 13; core/unfrozen.py): --method freeze with --train-layers / --train-modules,
axolotl unfrozen_parameters and LLaMA-Factory use_llama_pro / freeze_extra_modules / freeze_trainable_modules.

Only the named parameters have requires_grad: their gradients and optimizer states are counted, and the activations
follow autograd (no graph below the lowest trained layer without checkpointing or a trained embedding).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core import unfrozen
from vramcalc.core.errors import SpecError, UnsupportedCombination, VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.options import OptionError, OptionValues, training_spec
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (config.json: hidden 2048, 32 heads of 64 with 4 KV heads, MLP 5632, 22 layers, vocab 32,000 untied).
# One decoder layer: q/o 2048 x 2048, k/v 256 x 2048, gate/up/down 5632 x 2048, 2 x 2048 norms = 44,044,288
# (sum(p.numel()) of layers[0]); outside the layers: embed_tokens and lm_head 32,000 x 2048 each, the final norm 2048.
LAYER = 2 * 2048 * 2048 + 2 * 256 * 2048 + 3 * 5632 * 2048 + 2 * 2048
EMBED = HEAD = 32_000 * 2048
NORM = 2048
RUN = TrainingSpec(method="freeze", train_layers=(2, 5), batch_size=2, seq_len=256)
# A 4-layer llama small enough to trace in seconds (hidden 256, 4 heads, 2 KV heads, MLP 704, vocab 1,000 untied).
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=1000, hidden_size=256,
                  intermediate_size=704, num_layers=4, num_attention_heads=4, num_kv_heads=2)


def tinyllama() -> ModelSpec:
    return presets.find_model("tinyllama-1.1b")


def test_counts_only_the_named_layers_and_modules() -> None:
    m = tinyllama()
    b = estimate(m, RUN)  # train_modules None: norm and lm_head (--train-head's default)
    trained = 2 * LAYER + NORM + HEAD
    assert b.trainable_parameters == trained
    assert b.gradients == 2 * trained  # bf16 (the default recipe): 16-bit gradients
    assert b.details["optimizer_state.moments"] == 8 * trained  # AdamW exp_avg + exp_avg_sq, fp32
    with_embed = estimate(m, replace(RUN, train_modules=("embed_tokens",)))
    assert with_embed.trainable_parameters == 2 * LAYER + EMBED
    none_outside = estimate(m, replace(RUN, train_modules=()))
    assert none_outside.trainable_parameters == 2 * LAYER
    # --freeze-layers 20 trains the same top layers, norm and head: the same parameters, gradients and states
    top = estimate(m, TrainingSpec(method="freeze", freeze_layers=20, batch_size=2, seq_len=256))
    named = estimate(m, replace(RUN, train_layers=(20, 21)))
    assert (named.trainable_parameters, named.gradients, named.optimizer_state) == \
        (top.trainable_parameters, top.gradients, top.optimizer_state)


def test_a_tied_head_is_the_embedding() -> None:
    # Qwen2.5-0.5B ties lm_head to embed_tokens (151,936 x 896, config.json tie_word_embeddings): naming either trains
    # the one matrix, counted once
    m = presets.find_model("qwen2.5-0.5b")
    head = estimate(m, replace(RUN, train_layers=(), train_modules=("lm_head",)))
    embed = estimate(m, replace(RUN, train_layers=(), train_modules=("embed_tokens",)))
    assert head.trainable_parameters == embed.trainable_parameters == 151_936 * 896
    assert unfrozen.outer_modules(m, replace(RUN, train_modules=("lm_head",))) == ("embed_tokens", "lm_head")


def test_activations_follow_autograd() -> None:
    m = tinyllama()
    acts = {layers: estimate(m, replace(RUN, train_layers=layers)).details["activations.layers"]
            for layers in ((5,), (2, 5), (0, 5), (20, 21))}
    # without checkpointing the layers below the lowest trained one record no graph: moving it down adds layers
    assert acts[(20, 21)] < acts[(5,)] < acts[(2, 5)] < acts[(0, 5)]
    # a trained embedding gives every layer's input a gradient: every layer records a graph
    embed = estimate(m, replace(RUN, train_modules=("embed_tokens",))).details["activations.layers"]
    assert embed > acts[(0, 5)]
    # with checkpointing every layer keeps its input (enable_input_require_grads): the kept inputs do not depend on
    # the layer set
    gc = [estimate(m, replace(RUN, train_layers=layers, grad_checkpointing=True)).details["activations.layers"]
          for layers in ((5,), (2, 5), (20, 21))]
    assert len(set(gc)) == 1


def test_matches_the_trace_of_a_small_llama() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # The tracer sets requires_grad by name (trace/_run.py). Band of (estimate - trace) / trace, measured on this toy:
    # layers 1,3 with norm and head +0.10 % without checkpointing; layer 2 with the embedding, checkpointed, +3.93 %
    # (on this toy a layer's weights and their gradients are as large as its activations; --grid unfrozen's cases with
    # checkpointing are within 0.9 %)
    for t, (lo, hi) in ((replace(RUN, train_layers=(1, 3), seq_len=128), (0.0, 0.005)),
                        (replace(RUN, train_layers=(2,), train_modules=("embed_tokens",), seq_len=128,
                                 grad_checkpointing=True), (0.0, 0.045))):
        got, ref = estimate(SMALL, t), trace(SMALL, t)
        assert got.trainable_parameters == ref.trainable_parameters
        assert got.optimizer_state == ref.by_category_at_peak["optimizer_state"]
        err = (got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes
        assert lo <= err <= hi, f"{t.train_layers}: estimate {got.tensor_peak_bytes:,} vs trace {ref.peak_bytes:,}"


def test_axolotl_patterns_expand_against_the_real_names() -> None:
    m = tinyllama()
    # `^model.layers.(1[0-5]).*`: layers 10-15, whole (every parameter of each)
    assert unfrozen.expand_patterns(m, ["^model.layers.(1[0-5]).*"])[:2] == ((10, 11, 12, 13, 14, 15), ())
    # freeze.py makes every `.` not before `+` a literal dot, and re.match anchors only the start: `model.layers.1.*`
    # is `model\.layers\.1\.*`, which also matches layers 10-19 (TinyLlama has 22)
    assert unfrozen.expand_patterns(m, ["model.layers.1.*"])[0] == (1, *range(10, 20))
    assert unfrozen.expand_patterns(m, ["model.layers.[0-9]+.*"])[0] == tuple(range(22))
    layers, outer, notes = unfrozen.expand_patterns(m, ["lm_head.*", "model.embed_tokens.weight$[:32000]",
                                                        "model.norm.weight"])
    assert (layers, outer) == ((), ("embed_tokens", "norm", "lm_head"))
    assert "counted whole" in notes[0]  # the row range zeroes gradient rows in a hook: the tensor keeps its grad


@pytest.mark.parametrize(("patterns", "match"), [
    (["^model.layers.[0-9]+.mlp.*"], "part of layer 0 \\(mlp\\)"),
    (["model.layers.3.self_attn.q_proj.weight"], "part of layer 3"),
    (["transformer.h.0.*"], "matches none"),
    (["model.layers.(1[0-5.*"], "not a regular expression"),
])
def test_axolotl_patterns_refused(patterns: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unfrozen.expand_patterns(tinyllama(), patterns)


def test_qwen2_names_carry_biases_and_a_tied_head() -> None:
    m = presets.find_model("qwen2.5-0.5b")
    names, per_layer = unfrozen.parameter_names(m)
    # Qwen2Attention: q, k, v with bias (modeling_qwen2.py): 4 + 3 attention tensors, 3 MLP, 2 norms per layer
    assert per_layer[0] == 12
    assert "lm_head.weight" not in {n for _, _, n in names}  # tied: named_parameters lists the embedding once
    with pytest.raises(ValueError, match="tied head is model.embed_tokens.weight"):
        unfrozen.expand_patterns(m, ["lm_head.*"])
    with pytest.raises(UnsupportedCombination, match="llama layout"):
        unfrozen.parameter_names(presets.find_model("gpt2"))


def test_llama_pro_layers() -> None:
    # adapter.py: stride = num_layers // freeze_trainable_layers, range(stride - 1, num_layers + stride - 1, stride)
    assert unfrozen.llama_pro_layers(40, 8) == (4, 9, 14, 19, 24, 29, 34, 39)  # LLaMA Pro 8B: 32 + 8 expanded
    assert unfrozen.llama_pro_layers(8, 2) == (3, 7)
    with pytest.raises(ValueError, match="dividing the 22 layers"):
        unfrozen.llama_pro_layers(22, 4)


@pytest.mark.parametrize(("change", "match"), [
    ({"method": "full", "train_layers": (1,)}, "add --method freeze"),
    ({"freeze_layers": 2}, "keep one"),
    ({"train_head": False, "train_modules": ("lm_head",)}, "keep --train-modules"),
    ({"train_layers": (3, 1)}, "ascending order"),
    ({"train_modules": ("mlp",)}, "embed_tokens, norm, lm_head"),
])
def test_spec_refusals(change: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        replace(RUN, **change)


@pytest.mark.parametrize(("name", "change", "match"), [
    ("tinyllama-1.1b", {"train_layers": (22,)}, "beyond tinyllama-1.1b's 22 layers"),
    ("mixtral-8x7b", {}, "not a dense decoder"),
    ("tinyllama-1.1b", {"zero": 2, "gpus_per_node": 2}, "multi-GPU"),
    ("tinyllama-1.1b", {"train_layers": (), "train_modules": ()}, "trains no parameter"),
])
def test_estimate_refusals(name: str, change: dict[str, object], match: str) -> None:
    with pytest.raises(VramcalcError, match=match):
        estimate(presets.find_model(name), replace(RUN, **change))


def test_options_parse_layers_and_modules() -> None:
    spec = training_spec(OptionValues({}).run({"method": "freeze", "train_layers": "0-2,7",
                                               "train_modules": "lm_head,embed_tokens"}))
    assert spec.train_layers == (0, 1, 2, 7) and spec.train_modules == ("embed_tokens", "lm_head")
    assert training_spec(OptionValues({}).run({"method": "freeze", "train_layers": "none",
                                               "train_modules": "lm_head"})).train_layers == ()
    for value, match in (("mlp", "part of each layer"), ("bias", "not a module outside the layers")):
        with pytest.raises(OptionError, match=match):
            training_spec(OptionValues({}).run({"method": "freeze", "train_layers": "1", "train_modules": value}))


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_axolotl_unfrozen_parameters(tmp_path: Path) -> None:
    head = "base_model: tinyllama-1.1b\nbf16: true\n"
    run = runfiles.load(_yaml(tmp_path, head + "unfrozen_parameters:\n  - ^model.layers.(1[0-5]).*\n"
                                        "  - lm_head.*\n  - model.embed_tokens.weight$[:32000]\n"))[0]
    assert run.options["method"] == "freeze" and run.options["train_layers"] == "10-15"
    assert run.options["train_modules"] == "embed_tokens,lm_head"
    assert "unfrozen_parameters" in run.mapped and run.unmodelled == []
    spec = training_spec(OptionValues({}).run(run.options))
    assert estimate(tinyllama(), spec).trainable_parameters == 6 * LAYER + EMBED + HEAD  # 395,337,728
    with pytest.raises(runfiles.RunFileError, match="part of layer 0"):
        runfiles.load(_yaml(tmp_path, head + "unfrozen_parameters:\n  - ^model.layers.[0-9]+.mlp.*\n"))
    with pytest.raises(runfiles.RunFileError, match="freezes the adapters"):
        runfiles.load(_yaml(tmp_path, head + "adapter: lora\nunfrozen_parameters:\n  - lm_head.*\n"))


def test_llama_factory_freeze_keys(tmp_path: Path) -> None:
    head = "model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: freeze\n"
    # the top layers alone: --freeze-layers, the head and final norm frozen (no entry of trainable_layers names them)
    plain = runfiles.load(_yaml(tmp_path, head + "freeze_trainable_layers: 2\n"))[0]
    assert (plain.options["freeze_layers"], plain.options["train_head"]) == (20, False)
    pro = runfiles.load(_yaml(tmp_path, head + "use_llama_pro: true\nfreeze_trainable_layers: 11\n"
                                               "freeze_extra_modules: embed_tokens\n"))[0]
    # 22 layers, 11 trainable: stride 2, layers 1, 3, ..., 21
    assert pro.options["train_layers"] == ",".join(str(i) for i in range(1, 22, 2))
    assert pro.options["train_modules"] == "embed_tokens" and pro.unmodelled == []
    bottom = runfiles.load(_yaml(tmp_path, head + "freeze_trainable_layers: -3\n"))[0]
    assert bottom.options["train_layers"] == "0-2" and bottom.options["train_modules"] == "none"
    for text, key in (("freeze_trainable_modules: mlp\n", "freeze_trainable_modules"),
                      ("freeze_extra_modules: norm\n", "freeze_extra_modules"),
                      ("use_llama_pro: true\nfreeze_trainable_layers: 4\n", "use_llama_pro")):
        with pytest.raises(runfiles.RunFileError, match=key):
            runfiles.load(_yaml(tmp_path, head + text))
    lora = runfiles.load(_yaml(tmp_path, "model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: lora\n"
                                         "use_llama_pro: true\nfreeze_trainable_layers: 11\n"))[0]
    # find_expanded_modules: LoRA on the expanded layers' targets only
    assert lora.options["lora_layers"] == ",".join(str(i) for i in range(1, 22, 2))


def test_cli_refuses_part_of_a_layer_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--method", "freeze", "--train-layers", "0-3",
                           "--train-modules", "mlp"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--train-modules" in err


@pytest.mark.parametrize("gc", [False, True])
def test_freeze_layers_under_autocast_keeps_only_the_trained_casts(gc: bool) -> None:
    # --freeze-layers 2 on a 4-layer model is --train-layers 2,3 with the same outer modules: autocast caches the
    # casts of leaves that require grad only (torch autocast_mode.cpp cached_cast), so both count the same casts
    # (a 4-layer Mistral cut, freeze 2, amp-bf16, b1 s128: forward phase +9.4 % against the tracer when every
    # frozen layer's cast was counted, -0.1 % now; the trace cases are in --grid unfrozen)
    m = replace(presets.find_model("mistral-7b"), num_layers=4)
    base = {"method": "freeze", "precision": "amp-bf16", "batch_size": 1, "seq_len": 128, "grad_checkpointing": gc}
    plain = estimate(m, TrainingSpec(**base, freeze_layers=2, train_head=False))
    named = estimate(m, TrainingSpec(**base, train_layers=(2, 3), train_modules=()))
    key = "activations.autocast_weight_copies"
    assert plain.details[key] == named.details[key]
    # two layers' Linears (4,096 x 4,096 q and o, 4,096 x 1,024 k and v, three 4,096 x 14,336 MLP) and the head
    # (32,000 x 4,096), 2 bytes each: the head's cast lives while its input needs a gradient (the trained layers)
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336
    assert plain.details[key] == 2 * (2 * layer + 32_000 * 4096)
