"""LoRA on some decoder layers only (issue 13): --lora-layers, peft LoraConfig layers_to_transform
(core/lora_layers.py), its run-file keys, and what the tracer measured (benchmarks/accuracy.py --grid lora-layers)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core import lora_layers
from vramcalc.core.errors import SpecError, UnsupportedCombination, VramcalcError
from vramcalc.core.explain import explain
from vramcalc.core.memory import estimate
from vramcalc.core.options import OPTIONS, OptionError, training_spec
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets, runfiles

# TinyLlama-1.1B (presets): hidden 2048, 22 layers, 4 KV heads x 64 = 256 for k/v.
LAYERS, HIDDEN, KV = 22, 2048, 256
# LoRA r 16 on q_proj (2048 -> 2048) and v_proj (2048 -> 256): r x (in + out) per layer = 16 x (4096 + 2304)
PER_LAYER_LORA = 16 * (HIDDEN + HIDDEN + HIDDEN + KV)
DEFAULTS = {o.name: o.default for o in OPTIONS}  # the option table's defaults, as the CLI starts from


@pytest.fixture(scope="module")
def tinyllama() -> ModelSpec:
    return presets.find_model("tinyllama-1.1b")


def _lora(**kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": "lora", "precision": "bf16", "batch_size": 2, "seq_len": 256}
    return TrainingSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_parse_and_text() -> None:
    assert lora_layers.parse("0-7,30,31") == (*range(8), 30, 31)
    assert lora_layers.parse(" 3 , 1-2,2 ") == (1, 2, 3)  # sorted, distinct
    assert lora_layers.parse([5, 1]) == (1, 5) and lora_layers.parse(4) == (4,)  # peft: a list or one int
    assert lora_layers.parse("all") == () and lora_layers.parse(None) == ()
    assert lora_layers.text((0, 1, 2, 3, 30, 31)) == "0-3,30,31" and lora_layers.text(()) == "all"
    for bad in ("4-2", "-1", "a", "1-", "1.5"):
        with pytest.raises(lora_layers.LayersError):
            lora_layers.parse(bad)
    with pytest.raises(lora_layers.LayersError):
        lora_layers.parse(True)
    with pytest.raises(OptionError, match="--lora-layers"):
        training_spec({**DEFAULTS, "method": "lora", "lora_layers": "7-3"})
    assert training_spec({**DEFAULTS, "method": "lora", "lora_layers": "0-1,5"}).lora_layers == (0, 1, 5)


def test_adapters_only_in_the_listed_layers(tinyllama: ModelSpec) -> None:
    every, some = estimate(tinyllama, _lora()), estimate(tinyllama, _lora(lora_layers=tuple(range(8))))
    # 22 x 102,400 = 2,252,800 with every layer (the tracer's trainable count, tests/test_lora_variants.py), 8 x 102,400
    # with peft layers_to_transform=[0..7]
    assert every.trainable_parameters == LAYERS * PER_LAYER_LORA == 2_252_800
    assert some.trainable_parameters == 8 * PER_LAYER_LORA == 819_200
    # fp32 adapters: weights, gradients and AdamW's two moments, 4 + 4 + 8 B per trained element
    assert every.weights - some.weights == 4 * 14 * PER_LAYER_LORA
    assert every.gradients - some.gradients == 4 * 14 * PER_LAYER_LORA
    assert every.optimizer_state - some.optimizer_state == 8 * 14 * PER_LAYER_LORA


def test_dora_magnitudes_follow_the_layers(tinyllama: ModelSpec) -> None:
    plain = estimate(tinyllama, _lora(lora_layers=(3, 9)))
    dora = estimate(tinyllama, _lora(lora_layers=(3, 9), dora=True))
    # one out_features vector per adapted Linear (q 2048, v 256) in 2 layers (peft DoraLinearLayer.weight)
    assert dora.trainable_parameters - plain.trainable_parameters == 2 * (HIDDEN + KV)


def test_layers_below_the_lowest_adapter_save_nothing(tinyllama: ModelSpec) -> None:
    # Without checkpointing, LoRA on the top 2 of 22 layers saves what LoRA on every layer of the same model cut to
    # 2 layers saves: the layers below record no graph, the lowest adapted layer is the bottom one (no input grad).
    top = estimate(tinyllama, _lora(lora_layers=(20, 21)))
    cut = estimate(replace(tinyllama, num_layers=2), _lora())
    assert top.details["activations.layers"] == cut.details["activations.layers"]
    assert top.details["activations.layers"] == (top.details["activations.per_layer"]
                                                 + top.details["activations.bottom_layer"])


def test_unadapted_layers_above_save_a_frozen_set(tinyllama: ModelSpec) -> None:
    # layers 0 and 21 adapted: layer 0 the bottom set, 20 unadapted layers a frozen layer's set (less than the LoRA
    # set: no adapter inputs), layer 21 the LoRA set
    sparse = estimate(tinyllama, _lora(lora_layers=(0, 21)))
    every = estimate(tinyllama, _lora())
    d, e = sparse.details, every.details
    frozen = (d["activations.layers"] - d["activations.per_layer"] - d["activations.bottom_layer"]) // 20
    assert (d["activations.layers"] - d["activations.per_layer"] - d["activations.bottom_layer"]) % 20 == 0
    # q_proj's and v_proj's lora_A outputs (b2 s256 x r 16, fp32) per layer: what an unadapted layer does not keep
    # (q and v share the normalized input, which the frozen attention needs neither, but k_proj's Linear does not
    # save it either: lora_A keeps it) -- the LoRA set less the frozen set is at least the two rank-wide outputs
    assert e["activations.per_layer"] - frozen >= 2 * 512 * 16 * 4
    assert d["activations.layers"] < e["activations.layers"]


def test_checkpointing_keeps_every_layer_input(tinyllama: ModelSpec) -> None:
    # enable_input_require_grads: every checkpointed layer keeps its input, adapted or not
    some = estimate(tinyllama, _lora(lora_layers=(20, 21), grad_checkpointing=True))
    every = estimate(tinyllama, _lora(grad_checkpointing=True))
    assert some.details["activations.layers"] == every.details["activations.layers"]


# Measured with the tracer (benchmarks/results/trace_cache_lora-layers.json, torch 2.13 / transformers 5.24 / peft
# 0.21.2): peak bytes of TinyLlama-1.1B and Qwen2.5-0.5B cut to 8 layers, b2 s256 bf16, LoRA q,v and QLoRA NF4
# all-linear (no kbit prep), peft LoraConfig layers_to_transform.
TRACED = [
    ("tinyllama-1.1b", "lora", (0, 1), False, 1_426_724_864),
    ("tinyllama-1.1b", "lora", (6, 7), False, 1_243_854_848),
    ("tinyllama-1.1b", "lora", (1, 4, 6), False, 1_405_929_472),
    ("tinyllama-1.1b", "lora", (1, 4, 6), True, 1_188_194_304),
    ("tinyllama-1.1b", "qlora", (1, 4, 6), False, 985_491_456),
    ("tinyllama-1.1b", "qlora", (1, 4, 6), True, 682_330_112),
    ("qwen2.5-0.5b", "lora", (1, 4, 6), False, 1_602_465_792),
    ("qwen2.5-0.5b", "qlora", (6, 7), False, 1_360_195_584),
]


@pytest.mark.parametrize(("preset", "method", "layers", "gc", "traced"), TRACED)
def test_against_the_tracer(preset: str, method: str, layers: tuple[int, ...], gc: bool, traced: int) -> None:
    m = replace(presets.find_model(preset), num_layers=8)
    kw: dict[str, object] = {"method": method, "precision": "bf16", "batch_size": 2, "seq_len": 256,
                             "grad_checkpointing": gc, "lora_layers": layers}
    if method == "qlora":
        kw.update(lora_targets=("all-linear",), kbit_prep=False)
    est = estimate(m, TrainingSpec(**kw)).tensor_peak_bytes  # type: ignore[arg-type]
    assert -0.005 <= (est - traced) / traced <= 0.01


def test_eager_checkpointed_top_layers_unadapted() -> None:
    # QLoRA on layers 0-1 of TinyLlama cut to 8, eager b1 s1024 with checkpointing: the backward's peak is the top
    # (unadapted) layer's rerun, every input kept; 923,478,016 B traced (+3.0 % when the adapted set was counted there)
    m = replace(presets.find_model("tinyllama-1.1b"), num_layers=8)
    t = TrainingSpec(method="qlora", precision="bf16", lora_targets=("all-linear",), kbit_prep=False,
                     lora_layers=(0, 1), attention="eager", batch_size=1, seq_len=1024, grad_checkpointing=True)
    est = estimate(m, t).tensor_peak_bytes
    assert abs(est - 923_478_016) / 923_478_016 < 0.005


def test_refusals(tinyllama: ModelSpec) -> None:
    with pytest.raises(SpecError, match="beyond tinyllama-1.1b's 22 layers"):
        estimate(tinyllama, _lora(lora_layers=(22,)))
    with pytest.raises(SpecError, match="use it with --method lora or qlora"):
        TrainingSpec(method="ia3", lora_layers=(1,))
    with pytest.raises(SpecError):
        TrainingSpec(method="lora", lora_layers=(3, 1))  # not sorted: the spec holds parse()'s form
    with pytest.raises(UnsupportedCombination, match="lm_head"):
        estimate(tinyllama, _lora(lora_layers=(1,), lora_targets=("auto", "lm_head")))
    with pytest.raises(UnsupportedCombination, match="autocast"):
        estimate(tinyllama, _lora(lora_layers=(1,), precision="amp-bf16"))
    with pytest.raises(UnsupportedCombination, match="not a dense decoder"):
        estimate(presets.find_model("mixtral-8x7b"), _lora(lora_layers=(1,)))
    with pytest.raises(UnsupportedCombination, match="sharded"):
        estimate(tinyllama, _lora(lora_layers=(1,), zero=2, gpus_per_node=2))


def test_explain_and_notes(tinyllama: ModelSpec) -> None:
    t = _lora(lora_layers=(*range(8), 20, 21))
    lines = explain(tinyllama, t).lines()
    q = lines["parameters.lora.q_proj"]
    assert "10 modules in layers 0-7,20,21 of 22" in q.inputs and q.value == 16 * (HIDDEN + HIDDEN) * 10
    top = explain(tinyllama, _lora(lora_layers=(20, 21))).lines()["activations.layers"]
    assert top.inputs.startswith("2 layers × ") and "unadapted layers above it" in top.inputs
    notes = " ".join(estimate(tinyllama, t).notes)
    assert "layers 0-7,20,21 only (10 of 22" in notes


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    code, out, _ = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--lora-layers", "0-7",
                           "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["trainable_parameters"] == 8 * PER_LAYER_LORA
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--lora-layers", "30"], capsys)
    assert code == 2 and err.count("\n") == 1 and "0 to 21" in err
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--lora-layers", "x"], capsys)
    assert code == 2 and err.count("\n") == 1


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_axolotl_keys(tmp_path: Path) -> None:
    run = runfiles.load(_write(tmp_path, "ax.yaml", "base_model: tinyllama-1.1b\nadapter: lora\n"
                                                    "peft_layers_to_transform: [0, 1, 2, 21]\n"
                                                    "peft_layers_pattern: [layers]\n"))[0]
    assert run.options["lora_layers"] == "0,1,2,21"
    # axolotl auto-enables its LoRA kernels here (tests/test_axolotl_kernels.py); on some layers only they are not
    # modelled, so they are named; turned off in the file, nothing is left unmodelled
    assert {"peft_layers_to_transform", "peft_layers_pattern"} <= set(run.mapped)
    assert set(run.unmodelled) == {"lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel"}
    off = runfiles.load(_write(tmp_path, "off.yaml", "base_model: tinyllama-1.1b\nadapter: lora\n"
                                                     "peft_layers_to_transform: [0, 1, 2, 21]\n"
                                                     + "".join(f"lora_{k}_kernel: false\n" for k in ("qkv", "o", "mlp"))
                                                     ))[0]
    assert off.options["lora_layers"] == "0,1,2,21" and not off.unmodelled
    assert training_spec({**DEFAULTS, **run.options}).lora_layers == (0, 1, 2, 21)
    with pytest.raises(VramcalcError, match="peft_layers_pattern"):
        runfiles.load(_write(tmp_path, "ax2.yaml", "base_model: tinyllama-1.1b\nadapter: lora\n"
                                                   "peft_layers_to_transform: [1]\npeft_layers_pattern: [blocks]\n"))
    with pytest.raises(VramcalcError, match="needs peft_layers_to_transform"):
        runfiles.load(_write(tmp_path, "ax3.yaml", "base_model: tinyllama-1.1b\nadapter: lora\n"
                                                   "peft_layers_pattern: [layers]\n"))


def test_adapter_config_keys(tmp_path: Path) -> None:
    from vramcalc.io.resolve import adapter_options

    folder = tmp_path / "adapter"
    folder.mkdir()
    cfg = {"base_model_name_or_path": "tinyllama-1.1b", "peft_type": "LORA", "r": 8, "layers_to_transform": [3, 1, 2]}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_options(str(folder))["lora_layers"] == "1-3"
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "LOHA"}))
    with pytest.raises(VramcalcError, match="LoRA only"):
        adapter_options(str(folder))
