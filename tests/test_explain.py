"""`vramcalc explain`: its lines add up to the core's numbers; the seed arithmetic reads as written."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from typer.testing import CliRunner

from test_properties import PROPERTY, models, trainings
from vramcalc.cli.app import app
from vramcalc.core import unfrozen
from vramcalc.core.checks import check_encoder, check_llama4, check_seq2seq
from vramcalc.core.errors import UnsupportedCombination, VramcalcError
from vramcalc.core.explain import Explanation, change, diff, explain, to_json, to_markdown, to_text
from vramcalc.core.memory import classic, encoder, estimate, seq2seq
from vramcalc.core.memory.activations import head_activations, head_terms
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import resolve_targets
from vramcalc.core.peft_methods import TABLE as PEFT_TABLE
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.core.vocab import ENCODER_FAMILIES
from vramcalc.io import presets

runner = CliRunner()

# 7,241,732,096 = sum(p.numel()) for Mistral-7B-v0.1 (shared/seeds/000, printed by the course's code).
MISTRAL_7B_PARAMS = 7_241_732_096


@pytest.fixture(scope="module")
def mistral() -> ModelSpec:
    return presets.find_model("mistral-7b")


def _section(e: Explanation, key: str):  # type: ignore[no-untyped-def]
    return next(s for s in e.sections if s.key == key)


def test_weights_line_reads_like_the_seed(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec())
    line = e.lines()["weights.base"]
    # 14,483,464,192 = 7,241,732,096 params × 2 B (bf16): seed 000 "~14.5 GB".
    assert line.value == 2 * MISTRAL_7B_PARAMS == 14_483_464_192
    assert line.inputs == "7,241,732,096 params × 2 B (bf16)"
    assert (
        "  weights (bf16) = parameters × bytes per stored weight = "
        "7,241,732,096 params × 2 B (bf16) = 14.48 GB"
        in to_text(e).splitlines()
    )


def test_adamw_moments_are_8_bytes_per_param(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec())
    # 57,933,856,768 = 2 moments × 7,241,732,096 × 4 B (fp32): seed 000 "~57.9 GB".
    assert e.lines()["optimizer_state.moments"].value == 8 * MISTRAL_7B_PARAMS == 57_933_856_768
    assert "→ 8.00 B of optimizer state per trainable parameter" in to_text(e)


def test_lora_parameters_per_target(mistral: ModelSpec) -> None:
    lines = explain(mistral, TrainingSpec(method="lora")).lines()
    # Mistral-7B: hidden 4096, 32 heads × 128 = 4096 for q, 8 KV heads × 128 = 1024 for v, 32 layers.
    # q_proj: 16 × (4096 + 4096) × 32 = 4,194,304; v_proj: 16 × (4096 + 1024) × 32 = 2,621,440.
    assert lines["parameters.lora.q_proj"].value == 4_194_304
    assert lines["parameters.lora.q_proj"].inputs == "r 16 × (4,096 in + 4,096 out) × 32 modules"
    assert lines["parameters.lora.v_proj"].value == 2_621_440
    assert lines["parameters.trainable"].value == 6_815_744  # 4,194,304 + 2,621,440


def test_qlora_weights_split_into_data_constants_and_unquantized(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(method="qlora"))
    lines = e.lines()
    # Block Linears: 32 layers × (4096·4096·2 (q, o) + 4096·1024·2 (k, v) + 3 × 4096·14336 (MLP))
    # = 32 × 218,103,808 = 6,979,321,856 params; NF4 packs two per byte: 3,489,660,928 B.
    assert lines["weights.quantized"].value == 3_489_660_928
    # Not quantized: 7,241,732,096 − 6,979,321,856 = 262,410,240 (embeddings, lm_head, norms) × 4 B: fp32
    # after peft's prepare_model_for_kbit_training (the default, --kbit-prep).
    assert lines["weights.unquantized"].value == 262_410_240 * 4
    assert lines["weights.quant_constants"].value == e.breakdown.details["weights.quant_constants"]


def test_head_terms_sum_to_head_activations(mistral: ModelSpec) -> None:
    # head_terms is the itemized form of head_activations(...).saved (added for explain).
    for method in ("full", "lora"):
        t = TrainingSpec(method=method)
        r = recipe_of(t)
        trainable = method == "full"
        assert (
            sum(x.per_token for x in head_terms(mistral, t, r, trainable))
            == head_activations(mistral, t, r, trainable).saved
        )


CONFIGS = {
    "full": {},
    "full-8bit-ckpt": {"optimizer": "adamw-8bit", "grad_checkpointing": True},
    "lora": {"method": "lora", "batch_size": 2},
    "qlora-ckpt": {"method": "qlora", "grad_checkpointing": True, "lora_targets": ("all-linear",)},
    "qlora-8bit-nodq": {"method": "qlora", "quant_bits": 8},
    "qlora-4bit-nodq": {"method": "qlora", "double_quant": False},
    "freeze": {"method": "freeze", "freeze_layers": 2},
    # training by name (core/unfrozen.py): a sparse layer set, and with the embedding under checkpointing
    "unfrozen": {"method": "freeze", "train_layers": (1, 3), "train_modules": ("lm_head",)},
    "unfrozen-embed-ckpt": {"method": "freeze", "train_layers": (1,), "train_modules": ("embed_tokens",),
                            "grad_checkpointing": True},
    "mixed-foreach-accum": {"precision": "mixed-bf16", "optimizer_impl": "foreach", "grad_accum": 4},
    "amp-eager": {"precision": "amp-bf16", "attention": "eager", "seq_len": 256},
    "fp32-sgd": {"precision": "fp32", "optimizer": "sgd-momentum"},
    "adafactor-for-loop": {"optimizer": "adafactor", "optimizer_impl": "for-loop"},
    "lion-ckpt-amp": {"optimizer": "lion", "precision": "amp-fp16", "grad_checkpointing": True},
    # memory savers (memory/loss.py, memory/savers.py): their own moments (head gradient in forward, head
    # backward, the head's step in backward) must show in the phases section too
    "fused-linear-loss": {"loss": "fused-linear", "seq_len": 1024},
    "chunked-loss-ckpt": {"loss": "chunked", "grad_checkpointing": True},
    "optimizer-in-bwd": {"optimizer_in_bwd": True, "grad_accum": 1},
    "offload-selective": {"activation_offload": True, "grad_checkpointing": True, "ac_every": 2},
    "packed-sdpa": {"packing": "packed", "batch_size": 2},
    "padding-free-eager": {"packing": "padding-free", "attention": "eager", "batch_size": 2, "seq_len": 128},
    # LoRA variants (issue 13): DoRA's magnitudes and weight-norm transient, modules_to_save copies
    "qlora-dora-ckpt": {"method": "qlora", "dora": True, "lora_targets": ("all-linear",), "grad_checkpointing": True},
    "lora-dora-save-head": {"method": "lora", "dora": True, "modules_to_save": ("embed_tokens", "lm_head")},
    "lora-trainable-tokens": {"method": "lora", "lora_trainable_tokens": 32, "batch_size": 2},
}
# Every method of core/peft_methods.py (issue 18), with the options each reads.
PEFT_CONFIGS = {
    "ia3": {"method": "ia3"},
    "ia3-ckpt-bf16-no-ff": {"method": "ia3", "grad_checkpointing": True, "adapter_dtype": "bf16",
                            "ia3_feedforward": ("none",)},
    "ln-tuning": {"method": "ln-tuning", "optimizer": "adamw-8bit"},
    "loha": {"method": "loha", "lora_rank": 8, "lora_targets": ("q_proj", "v_proj", "down_proj")},
    "lokr-eager": {"method": "lokr", "attention": "eager", "seq_len": 256},
    "vera": {"method": "vera", "lora_rank": 64},
    "oft-block-16": {"method": "oft", "oft_block_size": 16, "batch_size": 2},
    "fourierft": {"method": "fourierft", "n_frequency": 500, "optimizer": "adafactor"},
    "trainable-tokens": {"method": "trainable-tokens", "trainable_tokens": 64, "batch_size": 2},
    "prompt-tuning": {"method": "prompt-tuning", "virtual_tokens": 30},
    "p-tuning": {"method": "p-tuning", "encoder_hidden_size": 512, "precision": "amp-bf16"},
    "prefix-tuning": {"method": "prefix-tuning", "batch_size": 2},
    "prefix-eager-projection": {"method": "prefix-tuning", "attention": "eager", "prefix_projection": True,
                                "seq_len": 256},
    "boft": {"method": "boft", "batch_size": 2},
    "boft-blocks-ckpt": {"method": "boft", "boft_block_size": 0, "boft_block_num": 8, "grad_checkpointing": True},
    "miss-all-linear": {"method": "miss", "miss_rank": 32, "lora_targets": ("all-linear",)},
    "c3a-eager": {"method": "c3a", "c3a_block_size": 128, "attention": "eager", "seq_len": 256},
    "shira-bf16": {"method": "shira", "shira_rank": 16, "adapter_dtype": "bf16"},
    "adaption-prompt": {"method": "adaption-prompt", "adapter_layers": 8, "batch_size": 2},
    "adaption-prompt-ckpt": {"method": "adaption-prompt", "adapter_len": 16, "grad_checkpointing": True},
}
# The preference and reward objectives (issue 14) and their options.
OBJECTIVE_CONFIGS = {
    "dpo-lora-adapters-off": {"objective": "dpo", "method": "lora", "prompt_len": 128},
    "dpo-full-copy": {"objective": "dpo", "seq_len": 1024},
    "dpo-copy-fp32": {"objective": "dpo", "method": "lora", "ref_model": "copy", "ref_dtype": "fp32"},
    "dpo-precomputed-qlora-ckpt": {"objective": "dpo", "method": "qlora", "ref_model": "precomputed",
                                   "grad_checkpointing": True},
    "ipo-ia3": {"objective": "ipo", "method": "ia3", "prompt_len": 64},
    "kto-lora": {"objective": "kto", "method": "lora", "batch_size": 2},
    "dpo-prompt-tuning-amp": {"objective": "dpo", "method": "prompt-tuning", "precision": "amp-bf16"},
    "reward-lora": {"objective": "reward", "method": "lora"},
    "reward-full": {"objective": "reward", "seq_len": 512},
    "sft-loss-trl": {"loss": "trl", "method": "lora", "prompt_len": 100},
}
ALL_CONFIGS = {**CONFIGS, **PEFT_CONFIGS, **OBJECTIVE_CONFIGS}


def _llama4_refuses(m: ModelSpec, t: TrainingSpec) -> bool:
    """Llama 4 refuses, in one line, what core/checks.py check_llama4 lists and LoRA on its router (all-linear)."""
    if m.family != "llama4":
        return False
    try:
        check_llama4(m, t)
        if t.method in ("lora", "qlora") or t.method in PEFT_TABLE:
            resolve_targets(m, t.lora_targets)
    except UnsupportedCombination:
        return True
    return False


def _models() -> list[ModelSpec]:
    return [s for s in presets.models().specs if isinstance(s, ModelSpec)]


@pytest.mark.parametrize("config", list(ALL_CONFIGS), ids=list(ALL_CONFIGS))
def test_every_section_adds_up_to_the_core(config: str) -> None:
    """For every preset: component lines sum to the core's component; each phase's itemization matches."""
    t = TrainingSpec(**ALL_CONFIGS[config])
    explained = 0
    for m in _models():
        if t.method != "full" and not m.has_architecture:
            continue  # LoRA, QLoRA and freeze need the architecture (a one-line error, tested in test_properties)
        if encoder.is_encoder(m):
            if t.seq_len > (m.max_position_embeddings or 0):
                continue  # beyond an encoder's learned positions: refused (tests/test_encoders.py)
            try:
                check_encoder(m, t)
            except UnsupportedCombination:
                continue  # what the encoder arithmetic does not cover is refused in one line (core/checks.py)
        if seq2seq.is_seq2seq(m):
            try:
                check_seq2seq(m, t)
            except UnsupportedCombination:
                continue  # what the encoder-decoder arithmetic does not cover is refused in one line (core/checks.py)
        if classic.is_classic(m):
            try:
                classic.check(m, t)
            except UnsupportedCombination:
                continue  # ResNet / LSTM: what memory/classic.py does not model is refused in one line
        run = t
        if getattr(m, "attention_kind", "mha") == "mla" and t.method in ("lora", "qlora"):
            # MLA models have no v_proj: adapt all linears for them only (the next model gets the config's own
            # targets again; rebinding `t` here once checked most presets with all-linear only).
            run = replace(t, lora_targets=("all-linear",))
        if m.ssm_state_size and t.method in ("lora", "qlora"):
            # Mamba: peft refuses out_proj, which all-linear takes (tests/test_ssm.py); its own default targets
            run = replace(run, lora_targets=("auto",))
        if m.mixer_head_dim and t.method in ("lora", "qlora"):  # Falcon-H1 too (tests/test_falcon_h1.py)
            run = replace(run, lora_targets=("auto",))
        try:
            e = explain(m, run)
        except UnsupportedCombination:
            # the core's own refusal (peft has no default IA3 / LN tuning targets for the family, LoHa on GPT-2's
            # Conv1D): estimate raises the same one-line error (tests/test_peft_methods.py); Mamba models refuse the
            # other PEFT methods and objectives than SFT (memory/ssm.py check_run); trained token rows are modelled
            # on causal LMs only (core/checks.py check_settings); vision-language models refuse what memory/vision.py
            # check does not model (freeze, the other PEFT methods, loss savers, model parallelism)
            # Mamba-2 also refuses autocast precisions (memory/ssm.py _check_mamba2_run)
            assert t.method in PEFT_TABLE or (m.ssm_state_size and (t.objective != "sft" or t.method == "qlora")) \
                or (m.ssm_head_dim and recipe_of(t).autocast) \
                or (t.lora_trainable_tokens
                    and (m.ssm_state_size or m.decoder_layers or m.family in ENCODER_FAMILIES)) \
                or _vision_refuses(m, run) \
                or _hybrid_refuses(m, run) or _llama4_refuses(m, run) \
                or unfrozen.active(run), (m.name, config)  # --train-layers: dense decoders only (core/unfrozen.py)
            with pytest.raises(UnsupportedCombination):  # explain and estimate refuse the same runs
                estimate(m, run)
            continue
        explained += 1
        b = e.breakdown
        sec = {s.key: s for s in e.sections}
        for key in ("weights", "gradients", "optimizer_state", "overhead"):
            assert sum(x.value for x in sec[key].lines) == b.component(key), (m.name, key)
        if m.has_architecture:
            # the layers line is the core's figure (the LoRA bottom layer's smaller set, MoE dense bottom layers)
            assert sum(x.value for x in sec["activations"].lines) == b.activations, m.name
            assert (
                sum(x.value for x in sec["activations_per_layer"].lines) == b.details["activations.per_layer"]
            )
            # the temporaries component is the most of them alive at one moment (the core's moments), which
            # is at least the largest line; equal to it unless Liger's head gradient from forward is alive too
            lines = [x.value for x in sec["temporaries"].lines]
            at_moments = max(mo.component("temporaries") for mo in b.named_moments())
            assert b.temporaries == max(at_moments, b.details.get("temporaries.optimizer_step", 0)), m.name
            assert max(lines) <= b.temporaries, m.name
            if not b.details.get("temporaries.head_gradient_in_forward"):
                assert max(lines) == b.temporaries, m.name
        # The phases section is the core's moments: each line's terms add up to it, and each phase's largest
        # line is the core's phase figure.
        phase_lines = sec["phases"].lines
        for phase, value in b.phases.items():
            assert max(x.value for x in phase_lines if x.key.startswith(f"phases.{phase}.")) == value, (m.name, phase)
        assert {x.key for x in phase_lines} == {f"phases.{mo.key}" for mo in b.named_moments()}
        assert sec["phases"].total == b.tensor_peak_bytes
        assert f"'{e.peak_moment}'" in sec["phases"].text[0]
    # 80 presets; the families peft has defaults for are most of them (IA3 and LN tuning: no phi3, gemma,
    # MoE or MLA defaults); adaption prompt runs on peft's llama and mistral only (19 presets today)
    assert explained >= (15 if t.method == "adaption-prompt" else 40), (config, explained)


def _hybrid_refuses(m: ModelSpec, t: TrainingSpec) -> bool:
    """Falcon-H1 refuses what memory/hybrid.py check_run does not model (freeze, autocast, the other PEFT methods and
    objectives, loss savers, packing, offload)."""
    from vramcalc.core.memory import hybrid, jamba, nemotron_h, zamba2

    # Jamba, Nemotron-H and Zamba2: memory/jamba.py, memory/nemotron_h.py and memory/zamba2.py check_run, the same kind
    # of list
    if not (hybrid.is_hybrid(m) or jamba.is_jamba(m) or nemotron_h.is_nemotron_h(m) or zamba2.is_zamba2(m)):
        return False
    try:
        hybrid.check_run(m, t)
        jamba.check_run(m, t)
        zamba2.check_run(m, t)
        nemotron_h.check_run(m, t)
    except UnsupportedCombination:
        return True
    return False


def _vision_refuses(m: ModelSpec, t: TrainingSpec) -> bool:
    from vramcalc.core.memory import vision

    if m.vision is None:
        return False
    try:
        vision.check(m, t)
    except UnsupportedCombination:
        return True
    return False


def test_markdown_is_the_same_explanation(mistral: ModelSpec) -> None:
    md = to_markdown(explain(mistral, TrainingSpec()))
    assert md.startswith("## Mistral 7B v0.1 · full fine-tuning")
    assert (
        "| weights (bf16) | parameters × bytes per stored weight | 7,241,732,096 params × 2 B (bf16) | "
        "14.48 GB |"
    ) in md
    assert "### Phases: what is alive when: 86.90 GB" in md


def test_diff_full_to_lora_gradients_and_states_nearly_vanish(mistral: ModelSpec) -> None:
    d = diff(explain(mistral, TrainingSpec()), explain(mistral, TrainingSpec(method="lora")))
    rows = {r.key: r for r in d.summary}
    assert d.settings == (("method", "full", "lora"),)
    # Gradients: 14,483,464,192 B → 6,815,744 × 4 B = 27,262,976 B (fp32 adapters): ×0.0019.
    assert (rows["gradients.total"].a, rows["gradients.total"].b) == (14_483_464_192, 27_262_976)
    assert change(rows["gradients.total"]) == "-14.46 GB (×0.0019)"
    # Optimizer: 57,933,856,768 → 2 × 4 B × 6,815,744 = 54,525,952.
    assert rows["optimizer_state.total"].b == 54_525_952


def test_diff_bf16_to_qlora_weights_shrink_to_about_a_quarter(mistral: ModelSpec) -> None:
    d = diff(explain(mistral, TrainingSpec(method="lora")),
             explain(mistral, TrainingSpec(method="qlora", kbit_prep=False)))
    w = next(r for r in d.summary if r.key == "weights.total")
    # 3,489,660,928 (NF4) + constants + 524,820,480 (unquantized bf16, no kbit prep) + 27,262,976 (adapters)
    # vs 14.51 GB.
    assert 0.25 < (w.b or 0) / (w.a or 1) < 0.30
    assert {r.key for r in d.rows} >= {"weights.quant_constants", "weights.quantized", "weights.base"}


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_explain_text_and_formats() -> None:
    r = runner.invoke(app, ["explain", "mistral-7b"])
    assert r.exit_code == 0, r.output
    # 86.90 GB tensor peak + memory/overhead.py's overhead (500 MiB context, 8.5 MB cuBLAS workspace,
    # 22 MiB segment slack, 9.9 % fragmentation = 9.16 GB)
    assert "PEAK  96.06 GB" in r.stdout
    r = runner.invoke(app, ["explain", "mistral-7b", "--format", "json"])
    doc = json.loads(r.stdout)
    assert doc["peak_bytes"] == 96_064_448_774  # = estimate's peak_bytes for the same options (overhead.py model)
    r = runner.invoke(app, ["explain", "mistral-7b", "--format", "markdown"])
    assert r.stdout.startswith("## ")


def test_cli_diff_applies_each_side_on_top_of_shared_options() -> None:
    r = runner.invoke(
        app,
        [
            "explain",
            "mistral-7b",
            "--seq-len",
            "1024",
            "--diff",
            "--method full",
            "--method qlora --lora-rank 8",
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["a"]["settings"]["seq_len"] == doc["b"]["settings"]["seq_len"] == 1024
    assert doc["settings_changed"]["method"] == ["full", "qlora"]
    assert doc["b"]["settings"]["lora_rank"] == 8


def test_cli_diff_side_may_name_another_model() -> None:
    r = runner.invoke(app, ["explain", "mistral-7b", "--diff", "", "llama-3.1-8b", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["b"]["model"] == "llama-3.1-8b"


@pytest.mark.parametrize(
    ("side", "message"),
    [
        ("--bogus", "error: --diff side '--bogus': No such option: --bogus"),
        (
            "--format json",
            "error: --diff side '--format json': output options (--format, --units, --check, --only, --diff) "
            "go outside the quoted strings",
        ),
        ("--method 'qlora", 'error: --diff side "--method \'qlora": No closing quotation'),
    ],
    ids=["unknown-option", "output-option", "bad-quoting"],
)
def test_cli_diff_bad_side_is_one_line_exit_2(side: str, message: str) -> None:
    r = runner.invoke(app, ["explain", "mistral-7b", "--diff", "--method full", side])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith(message)
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output


def test_cli_unknown_model_is_exit_2() -> None:
    r = runner.invoke(app, ["explain", "mistrel-7b"])
    assert r.exit_code == 2
    assert r.stderr.startswith("error: unknown model 'mistrel-7b'")


@pytest.mark.parametrize("options", [
    {"zero": 2, "gpus_per_node": 4},
    {"fsdp": "full-shard", "gpus_per_node": 2, "grad_accum": 4},
    {"method": "lora", "fsdp": "full-shard", "gpus_per_node": 2, "grad_accum": 4, "fsdp_frozen_grads": True},
    {"method": "ia3", "zero": 3, "gpus_per_node": 4, "offload": "optimizer"},
    {"method": "vera", "gpus_per_node": 4, "tp": 2, "pp": 2},
    {"method": "prompt-tuning", "gpus_per_node": 4, "tp": 4, "sequence_parallel": True},
], ids=["zero2", "fsdp-accum", "fsdp-frozen-grads", "ia3-zero3-offload", "vera-tp-pp", "prompt-tp-sp"])
def test_multi_gpu_sections_are_the_core_per_gpu_figures(mistral: ModelSpec, options: dict[str, Any]) -> None:
    """Sharded weights, gradients and states and tensor-parallel activations (memory/distributed.py) are the
    per-GPU figures explain shows."""
    e = explain(mistral, TrainingSpec(**options))
    for key in ("weights", "gradients", "optimizer_state", "activations"):
        sec = {s.key: s for s in e.sections}[key]
        assert sum(x.value for x in sec.lines) == e.breakdown.component(key) == sec.total, key


# --- the other PEFT methods (core/peft_methods.py) and the preference objectives -------------------------


def test_ia3_parameters_per_target(mistral: ModelSpec) -> None:
    lines = explain(mistral, TrainingSpec(method="ia3")).lines()
    # peft's IA3 targets for mistral: k_proj, v_proj, down_proj (feedforward). Mistral-7B: 8 KV heads × 128 =
    # 1,024 out for k and v, down_proj in 14,336; 32 layers. tuners/ia3/layer.py: (d_out × 1), or (1 × d_in)
    # for the feedforward module.
    assert lines["parameters.ia3.k_proj"].value == 1_024 * 32 == 32_768
    assert lines["parameters.ia3.v_proj"].value == 32_768
    assert lines["parameters.ia3.down_proj"].value == 14_336 * 32 == 458_752
    assert lines["parameters.ia3.down_proj"].inputs == "(1 × 14,336) × 32 modules (d_in 14,336, d_out 4,096)"
    assert lines["parameters.trainable"].value == 524_288  # 32,768 + 32,768 + 458,752
    # fp32 adapters (--adapter-dtype default): 524,288 × 4 B, and the same for the gradients
    assert lines["weights.adapters"].value == lines["gradients.trainable"].value == 2_097_152


def test_vera_splits_trained_lambdas_from_the_shared_projections(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(method="vera"))
    lines = e.lines()
    # default targets q_proj (4,096 → 4,096) and v_proj (4,096 → 1,024), r 16: lambda_b (d_out) + lambda_d (r)
    # per module × 32 layers = 32 × (4,096 + 16) + 32 × (1,024 + 16) = 164,864 trainable, fp32.
    assert lines["parameters.trainable"].value == 164_864
    assert lines["weights.adapters"].value == 164_864 * 4
    # vera_A (r × largest d_in) + vera_B (largest d_out × r), fp32: 16 × (4,096 + 4,096) × 4 B
    assert lines["weights.adapter_buffers"].value == 16 * 8_192 * 4 == 524_288
    assert e.breakdown.details["weights.adapters"] == 164_864 * 4 + 524_288


def test_prompt_tuning_lengthens_every_sequence(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(method="prompt-tuning", virtual_tokens=30))
    lines = e.lines()
    assert lines["parameters.prompt-tuning.0"].inputs == "(30 × 4,096)"  # PromptEmbedding(30, hidden)
    layer = next(s for s in e.sections if s.key == "activations_per_layer")
    # 512 tokens + 30 virtual ones through every layer (peft_methods.extra_sequence)
    assert "batch 1 × seq 542 = 542 tokens" in layer.text[0]
    assert "seq 512 + 30" in layer.text[1]


def test_prefix_tuning_keys_and_values_per_sequence(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(method="prefix-tuning", batch_size=2))
    line = e.lines()["activations.layer.prefix keys and values (saved by sdpa)"]
    # sdpa with a mask: k and v repeated to the 32 query heads × 128 = 4,096 wide, 20 virtual tokens, 2 B:
    # 2 × 2 B × 4,096 × 20 = 327,680 B per sequence, × batch 2
    assert line.value == 655_360
    assert line.inputs == "327,680 B/sequence × batch 2"
    # PrefixEncoder: Embedding(20, layers × 2 × token_dim), token_dim = 8 KV heads × 128 = 1,024
    assert e.lines()["parameters.prefix-tuning.0"].value == 20 * 32 * 2 * 1_024


def test_dpo_reference_copy_weights_in_its_dtype(mistral: ModelSpec) -> None:
    for ref_dtype, per_param in (("auto", 2), ("fp32", 4)):
        e = explain(mistral, TrainingSpec(objective="dpo", ref_dtype=ref_dtype))
        # a frozen copy of 7,241,732,096 params in the policy's bf16 (auto) or fp32 (memory/preference.py)
        assert e.lines()["weights.reference"].value == per_param * MISTRAL_7B_PARAMS
        assert e.breakdown.weights == 2 * MISTRAL_7B_PARAMS + per_param * MISTRAL_7B_PARAMS


def test_dpo_reference_forward_is_a_moment_and_a_temporary(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(objective="dpo", method="lora", prompt_len=128))
    lines = e.lines()
    assert lines["weights.reference"].value == 0  # adapters off: the policy itself
    assert lines["temporaries.reference_forward"].value == e.breakdown.details["temporaries.reference_forward"] > 0
    assert "phases.forward.reference" in lines
    # chosen and rejected stacked: 2 rows of 512; 511 scored positions per row less the 128 prompt ones... per row
    # min(512 - 128, 511) = 384 scored, × 2 rows
    assert "1,024 positions, 768 scored" in lines["activations.head.loss"].inputs
    layer = next(s for s in e.sections if s.key == "activations_per_layer")
    assert "dpo: chosen and rejected stacked: 1 pair → 2 rows in one forward" in " ".join(layer.text)
    precomputed = explain(mistral, TrainingSpec(objective="dpo", method="lora", ref_model="precomputed")).lines()
    assert "phases.forward.reference" not in precomputed
    assert "temporaries.reference_forward" not in precomputed


def test_reward_model_is_the_body_under_a_score_head(mistral: ModelSpec) -> None:
    e = explain(mistral, TrainingSpec(objective="reward"))
    # memory/reward.py: no lm_head (32,000 × 4,096 = 131,072,000 params in the untied Mistral)
    assert e.lines()["parameters.total"].value == MISTRAL_7B_PARAMS - 131_072_000
    assert e.lines()["activations.head.loss"].label.startswith("score head:")
    assert not any("log_softmax" in ln.label for ln in e.lines().values())


def test_header_and_assumptions_name_the_objective(mistral: ModelSpec) -> None:
    text = to_text(explain(mistral, TrainingSpec(objective="kto", method="lora", batch_size=2)))
    assert text.startswith("Mistral 7B v0.1 · LoRA · KTO · ")
    assert "objective kto (2 rows), reference adapters-off, prompt 0" in text.splitlines()[1]


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "yaml", "csv"])
@pytest.mark.parametrize("argv", [["--method", "ia3"], ["--method", "prefix-tuning", "--prefix-projection"],
                                  ["--method", "lora", "--objective", "dpo", "--prompt-len", "128"],
                                  ["--objective", "reward", "--method", "vera"]],
                         ids=["ia3", "prefix-projection", "dpo", "reward-vera"])
def test_cli_explains_methods_and_objectives_in_every_format(argv: list[str], fmt: str) -> None:
    r = runner.invoke(app, ["explain", "tinyllama-1.1b", *argv, "--format", fmt])
    assert r.exit_code == 0, r.output
    if fmt == "json":
        doc = json.loads(r.stdout)
        est = runner.invoke(app, ["estimate", "tinyllama-1.1b", *argv, "--format", "json"])
        assert doc["peak_bytes"] == json.loads(est.stdout)["peak_bytes"]
    elif fmt == "csv":
        assert r.stdout.startswith("section,key,label,value,kind,formula,inputs,source")
    else:
        assert r.stdout.strip()


def test_cli_diff_lora_against_ia3() -> None:
    r = runner.invoke(app, ["explain", "mistral-7b", "--diff", "--method lora", "--method ia3", "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["settings_changed"]["method"] == ["lora", "ia3"]
    terms = {t["key"]: t for t in doc["terms"]}
    # 6,815,744 LoRA parameters (test_lora_parameters_per_target) against IA3's 524,288 (test_ia3_parameters...)
    assert (terms["parameters.trainable"]["a"], terms["parameters.trainable"]["b"]) == (6_815_744, 524_288)
    # only one side has each method's own parameter lines
    assert terms["parameters.ia3.down_proj"]["a"] is None
    text = runner.invoke(app, ["explain", "mistral-7b", "--diff", "--method lora", "--method ia3"])
    assert text.exit_code == 0 and "settings that differ: method lora → ia3" in text.stdout


def test_cli_diff_sft_against_dpo_names_the_objective_and_the_reference() -> None:
    r = runner.invoke(app, ["explain", "mistral-7b", "--method", "lora", "--diff", "", "--objective dpo",
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["settings_changed"]["objective"] == ["sft", "dpo"]
    assert doc["b"]["settings"]["ref_model"] == "adapters-off"
    terms = {t["key"]: t for t in doc["terms"]}
    assert terms["temporaries.reference_forward"]["a"] is None and terms["temporaries.reference_forward"]["b"]



# Every choice and boolean of TrainingSpec (the property tests' own strategies: all methods and objectives, the
# savers, multi-GPU layouts) on presets and generated architectures.
@PROPERTY
@given(models, trainings())
def test_explain_adds_up_to_the_core_for_any_run(m: ModelSpec, t: TrainingSpec) -> None:
    try:
        e = explain(m, t)
    except VramcalcError:
        assume(False)  # the core's own refusal (test_properties covers its message)
        raise
    b = e.breakdown
    sec = {s.key: s for s in e.sections}
    for key in ("weights", "gradients", "optimizer_state", "overhead"):
        assert sum(x.value for x in sec[key].lines) == b.component(key), key
    if t.method in PEFT_TABLE:  # the method's tensors, line by line, are the trainable count the core derived
        own = [x.value for x in sec["parameters"].lines if x.key.startswith(f"parameters.{t.method}.")]
        assert sum(own) == b.trainable_parameters
    if m.has_architecture:
        assert sum(x.value for x in sec["activations"].lines) == b.activations
        assert sum(x.value for x in sec["activations_per_layer"].lines) == b.details["activations.per_layer"]
        assert max(x.value for x in sec["temporaries"].lines) <= b.temporaries
    assert to_text(e) and to_markdown(e) and json.dumps(to_json(e))


@pytest.mark.parametrize("objective", ["orpo", "cpo", "simpo"])
def test_reference_free_objectives_name_their_logits_head_and_mask(objective: str) -> None:
    # ORPO / CPO / SimPO run the full logits of the 2B rows (memory/preference.py logits_head_bytes), not
    # transformers' loss nor TRL's fused head, and sdpa gets the padded pairs' attention mask (not packed rows).
    m = presets.find_model("qwen2.5-0.5b")
    e = explain(m, TrainingSpec(method="full", objective=objective))
    lines = {ln.key: ln for s in e.sections for ln in s.lines}
    for key in ("activations.head.loss", "temporaries.loss_forward", "temporaries.loss_backward"):
        assert lines[key].label.startswith("logits head: "), key
        assert lines[key].source.startswith("memory/preference.py logits_head_bytes"), key
        assert lines[key].formula == "memory/preference.py logits_head_bytes", key
    assert lines["activations.shared.mask"].label == "4-D bool mask of the padded pairs (sdpa)"


def test_grpo_keeps_gpt2_dropout_in_explain_too() -> None:
    # GRPOConfig's disable_dropout defaults to False (memory/rl.py): the core keeps GPT-2's embedding dropout mask
    # (1 B x 768 per token), and explain listed activations without it (3,072 B short at 4 tokens; found by the
    # any-run property once the RL merge shifted its draws).
    m = presets.find_model("gpt2")
    t = TrainingSpec(method="lora", objective="grpo", batch_size=2, seq_len=2, num_generations=2, prompt_len=1,
                     beta=0.04, precision="bf16", steps_per_generation=1)
    e = explain(m, t)
    acts = {s.key: s for s in e.sections}["activations"]
    assert sum(x.value for x in acts.lines) == e.breakdown.activations
    assert any(x.key == "activations.shared.dropout" for x in acts.lines)


def test_preference_lora_dropout_lines_match_the_core() -> None:
    # TRL's disable_dropout_in_model zeroes peft's lora_dropout too (memory/__init__.py estimate); explain listed the
    # layer's terms with the dropout masks: DeepSeek-V2-Lite LoRA dropout 0.05 under DPO b1 s1 (a property
    # counterexample), lines 290,904 B against the core's per-layer 285,784 B (kv_b_proj's 512-wide input, 2 rows x
    # (4 B dropout output + 1 B mask) x 512 = 5,120 B)
    m = presets.find_model("deepseek-v2-lite")
    t = TrainingSpec(method="lora", batch_size=1, seq_len=1, lora_rank=1, lora_dropout=0.05, objective="dpo")
    e = explain(m, t)
    layer = next(s for s in e.sections if s.key == "activations_per_layer")
    assert sum(x.value for x in layer.lines) == e.breakdown.details["activations.per_layer"]
