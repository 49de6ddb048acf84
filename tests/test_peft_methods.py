"""The PEFT methods beyond LoRA (core/peft_methods.py): trainable counts against peft, options, errors, notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.peft_methods import TABLE, factorization, oft_block, trainable_params
from vramcalc.core.specs import TrainingSpec
from vramcalc.core.vocab import METHODS
from vramcalc.io import presets

# (preset, method, options): every method on a Llama-style model with GQA (TinyLlama: 4 KV heads of 32), and the
# families whose peft defaults differ (GPT-2's fused Conv1D c_attn, Qwen2's IA3 and LN tuning lists).
COUNT_CASES = [
    ("tinyllama-1.1b", "ia3", {}),
    ("tinyllama-1.1b", "ia3", {"lora_targets": ("all-linear",), "ia3_feedforward": ("down_proj", "up_proj")}),
    ("tinyllama-1.1b", "ln-tuning", {}),
    ("tinyllama-1.1b", "loha", {"lora_rank": 8}),
    ("tinyllama-1.1b", "lokr", {"lora_rank": 8}),
    ("tinyllama-1.1b", "lokr", {"lora_rank": 64, "lora_targets": ("all-linear",)}),
    ("tinyllama-1.1b", "vera", {"lora_rank": 256}),
    ("tinyllama-1.1b", "oft", {}),
    ("tinyllama-1.1b", "oft", {"oft_block_size": 48, "lora_targets": ("all-linear",)}),  # 5632 % 48: adjusted
    ("tinyllama-1.1b", "prompt-tuning", {"virtual_tokens": 30}),
    ("tinyllama-1.1b", "trainable-tokens", {"trainable_tokens": 7}),
    ("tinyllama-1.1b", "fourierft", {"n_frequency": 300, "lora_targets": ("all-linear",)}),
    ("gpt2", "trainable-tokens", {}),
    ("tinyllama-1.1b", "p-tuning", {"encoder_hidden_size": 128}),
    ("tinyllama-1.1b", "prefix-tuning", {}),
    ("tinyllama-1.1b", "prefix-tuning", {"prefix_projection": True, "encoder_hidden_size": 256}),
    ("gpt2", "ia3", {}),
    ("gpt2", "ln-tuning", {}),
    ("gpt2", "vera", {"lora_rank": 64}),
    ("gpt2", "prefix-tuning", {}),
    ("qwen2.5-0.5b", "ia3", {}),
    ("qwen2.5-0.5b", "ln-tuning", {}),
    ("qwen2.5-0.5b", "loha", {"lora_rank": 4, "lora_targets": ("all-linear",)}),
    # issue 18's remaining methods: each at peft's defaults and with its options
    ("tinyllama-1.1b", "boft", {}),
    ("tinyllama-1.1b", "boft", {"boft_block_size": 0, "boft_block_num": 8, "lora_targets": ("all-linear",)}),
    ("qwen2.5-0.5b", "boft", {"boft_block_size": 8, "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")}),
    ("tinyllama-1.1b", "miss", {}),
    ("qwen2.5-0.5b", "miss", {"miss_rank": 32, "lora_targets": ("all-linear",)}),
    ("tinyllama-1.1b", "c3a", {}),
    ("qwen2.5-0.5b", "c3a", {"c3a_block_size": 128, "lora_targets": ("all-linear",)}),
    ("tinyllama-1.1b", "shira", {}),
    ("qwen2.5-0.5b", "shira", {"shira_rank": 16, "lora_targets": ("all-linear",)}),
    ("tinyllama-1.1b", "adaption-prompt", {}),
    ("llama-3.2-1b", "adaption-prompt", {"adapter_len": 16, "adapter_layers": 8}),
]


@pytest.mark.parametrize(("preset", "method", "kw"), COUNT_CASES,
                         ids=[f"{p}-{m}-{'-'.join(map(str, kw.values())) or 'default'}" for p, m, kw in COUNT_CASES])
def test_trainable_parameters_equal_peft(preset: str, method: str, kw: dict[str, object]) -> None:
    """sum(p.numel() for p in model.parameters() if p.requires_grad) of peft's own model, built on the meta device."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from vramcalc.trace._hf import build_model
    from vramcalc.trace._peft import wrap

    model = presets.find_model(preset)
    training = TrainingSpec(method=method, precision="bf16", **kw)  # type: ignore[arg-type]
    hf, _ = build_model(model, training, torch.bfloat16)
    wrapped = wrap(hf, model, training)
    measured = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert measured == wrapped.get_nb_trainable_parameters()[0]  # peft's own count
    assert trainable_params(model, training) == measured
    assert estimate(model, training).trainable_parameters == measured
    if method in ("boft", "shira", "oft"):  # the per-Linear buffers (boft_P, shira_indices, OFT's triu indices)
        from vramcalc.core.memory.precision import recipe_of
        from vramcalc.core.memory.weights import weight_bytes

        buffers = sum(b.numel() * b.element_size() for name, b in wrapped.named_buffers() if "rotary" not in name)
        assert weight_bytes(model, training, recipe_of(training)).adapter_buffers == buffers


def test_every_table_method_is_a_method_choice() -> None:
    assert set(TABLE) <= set(METHODS)
    assert {m.peft_type for m in TABLE.values()} == {"IA3", "LN_TUNING", "LOHA", "LOKR", "VERA", "OFT", "FOURIERFT",
                                                    "TRAINABLE_TOKENS", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING",
                                                    "BOFT", "MISS", "C3A", "SHIRA", "ADAPTION_PROMPT"}


def test_lokr_factorization_matches_peft_examples() -> None:
    # The examples of peft tuners/lokr/layer.py factorization's docstring.
    assert factorization(256) == (16, 16)
    assert factorization(128) == (8, 16)
    assert factorization(127) == (1, 127)
    assert factorization(128, 4) == (4, 32)


def test_oft_block_size_is_adjusted_as_peft_does() -> None:
    # peft adjust_oft_parameters: the divisor of in_features nearest the block size asked for, the lower on a tie.
    assert oft_block(2048, 32) == 32
    assert oft_block(5632, 48) == 44  # 5632 = 2^9 x 11: divisors 44 and 64 are 4 and 16 away
    assert oft_block(30, 4) == 3  # 3 and 5 are both 1 away: the lower
    assert oft_block(16, 32) == 16  # a block above in_features is in_features


def test_ia3_counts_by_hand() -> None:
    # TinyLlama (config.json: 22 layers, hidden 2048, 4 KV heads x 64, intermediate 5632); peft's Llama default
    # k_proj, v_proj (a vector of out_features = 256 each) and down_proj (feedforward: in_features = 5632).
    m = presets.find_model("tinyllama-1.1b")
    assert trainable_params(m, TrainingSpec(method="ia3")) == 22 * (256 + 256 + 5632)


def test_prompt_tuning_lengthens_the_sequence() -> None:
    # 20 virtual tokens in front of 492 tokens: the layers and the loss see 512 positions, as a 512-token full-length
    # run of the frozen model does (same saved set per token); only the prompt's own tensors differ.
    m = presets.find_model("tinyllama-1.1b")
    prompt = estimate(m, TrainingSpec(method="prompt-tuning", virtual_tokens=20, seq_len=492))
    longer = estimate(m, TrainingSpec(method="prompt-tuning", virtual_tokens=40, seq_len=492))
    assert longer.activations > prompt.activations
    assert prompt.details["activations.per_layer"] == estimate(
        m, TrainingSpec(method="prompt-tuning", virtual_tokens=10, seq_len=502)).details["activations.per_layer"]


def test_prefix_tuning_keys_grow_with_virtual_tokens_only() -> None:
    # Prefix tuning does not lengthen the queries: per layer, sdpa saves keys/values for n more positions, repeated to
    # every head when the model has grouped KV (transformers sdpa_attention.py: a mask disables enable_gqa).
    m = presets.find_model("tinyllama-1.1b")  # 32 heads x 64 = 2048 wide after repeat_kv
    a = estimate(m, TrainingSpec(method="prefix-tuning", virtual_tokens=20))
    b = estimate(m, TrainingSpec(method="prefix-tuning", virtual_tokens=30))
    # 10 more positions x k and v x 2048 x 2 bytes (bf16), per layer, batch 1; and the mask memory-efficient sdpa
    # saves in bf16 (512 query rows) has 10 more columns.
    assert b.details["activations.per_layer"] - a.details["activations.per_layer"] == 10 * 2 * 2048 * 2 + 512 * 10 * 2


def test_trainable_tokens_on_a_tied_model_keeps_the_merged_weight() -> None:
    # Llama-3.2-1B ties lm_head to the embedding: peft's tied TrainableTokensLayer builds the merged (128,256 x 2048)
    # weight in bf16 for the head, and F.linear saves it and the head's input (2048 x 2 bytes per token).
    tied, untied = presets.find_model("llama-3.2-1b"), presets.find_model("tinyllama-1.1b")
    t = TrainingSpec(method="trainable-tokens", batch_size=1, seq_len=512)
    assert estimate(tied, t).details["activations.head_and_loss"] - estimate(
        tied, TrainingSpec(method="prompt-tuning", virtual_tokens=1, seq_len=511)).details[
        "activations.head_and_loss"] == 128_256 * 2048 * 2 + 512 * 2048 * 2
    assert not any("saves for backward" in n for n in estimate(untied, t).notes)


def test_loha_saves_the_delta_weights() -> None:
    # LoHa builds each adapted Linear's full delta weight in fp32 and F.linear saves it: q_proj 2048x2048 and
    # v_proj 2048x256 per layer, whatever the batch.
    m = presets.find_model("tinyllama-1.1b")
    one = estimate(m, TrainingSpec(method="loha", batch_size=1))
    two = estimate(m, TrainingSpec(method="loha", batch_size=2))
    per_sample = two.details["activations.per_layer"] - one.details["activations.per_layer"]
    assert one.details["activations.per_layer"] - per_sample == 4 * (2048 * 2048 + 2048 * 256)


@pytest.mark.parametrize("method", sorted(TABLE))
def test_each_method_states_its_note(method: str) -> None:
    m = presets.find_model("tinyllama-1.1b")
    notes = estimate(m, TrainingSpec(method=method)).notes  # type: ignore[arg-type]
    assert any(n.startswith(f"{method}: ") and TABLE[method].source in n for n in notes)


# ---- the CLI: options and one-line errors ------------------------------------------------------------

def test_cli_method_options_reach_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "tinyllama-1.1b", "--method", "p-tuning", "--virtual-tokens", "10",
                             "--encoder-hidden-size", "128", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    # Embedding(10, 2048) + Linear(2048,128)+b + Linear(128,128)+b + Linear(128,2048)+b (peft PromptEncoder, MLP)
    assert doc["trainable_parameters"] == 10 * 2048 + (2048 * 128 + 128) + (128 * 128 + 128) + (128 * 2048 + 2048)
    assert doc["settings"]["virtual_tokens"] == 10 and doc["settings"]["encoder_hidden_size"] == 128


def test_cli_options_a_method_ignores_are_noted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "tinyllama-1.1b", "--method", "lora", "--virtual-tokens", "50",
                             "--format", "json"], capsys)
    assert code == 0, err
    assert "--virtual-tokens: changes nothing with --method lora" in json.loads(out)["notes"]


@pytest.mark.parametrize(("argv", "message"), [
    (["gpt2", "--method", "loha"],
     "error: peft's loha cannot adapt GPT-2's Conv1D layers: choose another model or method (ia3, vera, ln-tuning, "
     "prompt-tuning, p-tuning, prefix-tuning)"),
    (["tinyllama-1.1b", "--method", "prefix-tuning", "--grad-checkpointing"],
     "error: prefix tuning does not work with gradient checkpointing (peft refuses it): drop --grad-checkpointing"),
    (["tinyllama-1.1b", "--method", "ia3", "--ia3-feedforward", "up_proj"],
     "error: --ia3-feedforward up_proj is not among the IA3 targets: add it to --lora-targets"),
    (["phi-3-mini", "--method", "ia3"],
     "error: peft has no default IA3 target modules for family 'phi3': pass --lora-targets (and --ia3-feedforward)"),
    (["phi-3-mini", "--method", "ln-tuning"],
     "error: peft has no default LN tuning target modules for family 'phi3'; vramcalc models its per-family "
     "defaults only"),
    (["tinyllama-1.1b", "--method", "boft", "--boft-block-num", "8"],
     "error: BOFT takes exactly one of --boft-block-size and --boft-block-num: set the other to 0"),
    (["tinyllama-1.1b", "--method", "boft", "--boft-block-size", "3"],
     "error: --boft-block-size 3 does not divide an adapted Linear's in_features 2048 (peft refuses it): choose a "
     "divisor"),
    (["qwen2.5-0.5b", "--method", "c3a"],  # hidden 896 = 3.5 x 256
     "error: --c3a-block-size 256 does not divide an adapted Linear's 896 x 896 shape (peft refuses it): choose a "
     "common divisor"),
    (["tinyllama-1.1b", "--method", "miss", "--miss-rank", "4096"],
     "error: --miss-rank 4096 exceeds an adapted Linear's in_features 2048 (peft refuses it): lower it"),
    (["tinyllama-1.1b", "--method", "shira", "--shira-rank", "1000"],  # v_proj: 1000 x (2048 + 256) > 256 x 2048
     "error: --shira-rank 1000 gives more SHiRA weights than an adapted Linear's 256 x 2048 weights (peft "
     "refuses it): lower it"),
    (["tinyllama-1.1b", "--method", "adaption-prompt", "--adapter-layers", "30"],
     "error: --adapter-layers 30 exceeds tinyllama-1.1b's 22 layers (peft refuses it): lower it"),
    (["gpt2", "--method", "adaption-prompt"],
     "error: vramcalc models adaption prompt on llama and mistral models only (peft's AdaptedAttention), not family "
     "'gpt2'"),
    (["gpt2", "--method", "c3a"],
     "error: peft's c3a cannot adapt GPT-2's Conv1D layers: choose another model or method (ia3, vera, ln-tuning, "
     "prompt-tuning, p-tuning, prefix-tuning)"),
    (["tinyllama-1.1b", "--method", "prompt-tuning", "--virtual-tokens", "0"],
     "error: --virtual-tokens: Input should be greater than 0"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", *argv], capsys)
    assert code == 2
    assert err.strip() == message
    assert "Traceback" not in err


def test_explain_derives_the_table_methods(capsys: pytest.CaptureFixture[str]) -> None:
    # explain itemizes every method of the table (tests/test_explain.py checks its lines add up to the core)
    code, out, err = invoke(["explain", "tinyllama-1.1b", "--method", "vera", "--format", "json"], capsys)
    assert code == 0, err
    lines = {ln["key"]: ln for sec in json.loads(out)["sections"] for ln in sec["lines"]}
    assert lines["weights.adapter_buffers"]["label"].startswith("vera_A, vera_B")


@pytest.mark.parametrize(("method", "label"), [("boft", "boft_P"), ("shira", "shira_indices")])
def test_explain_names_the_new_buffers(method: str, label: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["explain", "tinyllama-1.1b", "--method", method, "--format", "json"], capsys)
    assert code == 0, err
    lines = {ln["key"]: ln for sec in json.loads(out)["sections"] for ln in sec["lines"]}
    assert lines["weights.adapter_buffers"]["label"].startswith(label)


def test_boft_keeps_three_rotation_sized_matrices_per_module() -> None:
    # BOFT (peft tuners/boft/layer.py Linear.forward, block size 4): per adapted Linear, x @ rotation saves the
    # (in x in) rotation, the bmm save boft_P.to(x) and the matmul the identity: 3 x 2048 x 2048 x 2 B (bf16) for
    # q_proj and v_proj alike (in_features 2048), whatever the batch; per token, x (2048 x 2 B, shared by q and v)
    # and each base output the boft_s mul saves (2048 and 256 wide, 2 B).
    m = presets.find_model("tinyllama-1.1b")
    one = estimate(m, TrainingSpec(method="boft", precision="bf16", batch_size=1, seq_len=512))
    two = estimate(m, TrainingSpec(method="boft", precision="bf16", batch_size=2, seq_len=512))
    per_sample = two.details["activations.per_layer"] - one.details["activations.per_layer"]
    assert one.details["activations.per_layer"] - per_sample == 2 * 3 * 2048 * 2048 * 2


def test_adaption_prompt_saves_only_in_its_layers() -> None:
    # Without checkpointing the frozen layers below the adapted ones record no graph: 8 adapted layers of 22 save
    # 8/22 of what 22 adapted layers save (the same per-layer set); each adapted layer saves beyond a frozen
    # layer its rotated queries (2048 x 2 B), the fp32 softmax over the 10 x 32 prompt scores, their 16-bit cast
    # and the gated scores (2 x 2 B each) per token (peft tuners/adaption_prompt/layer.py AdaptedAttention).
    m = presets.find_model("tinyllama-1.1b")
    every = estimate(m, TrainingSpec(method="adaption-prompt", precision="bf16"))
    top8 = estimate(m, TrainingSpec(method="adaption-prompt", precision="bf16", adapter_layers=8))
    assert every.details["activations.per_layer"] == top8.details["activations.per_layer"]
    prompt = estimate(m, TrainingSpec(method="prompt-tuning", precision="bf16", virtual_tokens=1, seq_len=511))
    # and per sequence the prompt's keys and values repeated to the 32 heads (10 x 2048 x 2 B each)
    assert every.details["activations.per_layer"] - prompt.details["activations.per_layer"] == \
        512 * (2 * 2048 + (4 + 2 * 2) * 10 * 32) + 2 * 2 * 2048 * 10


def test_miss_saves_its_rank_wide_sum() -> None:
    # MiSS (peft tuners/miss/layer.py MissLinear.forward): sum(x.reshape(.., in / r, r), -2) @ miss_block saves the
    # (tokens x r) sum in fp32 per adapted Linear: two Linears (q, v), r 64 and 32, 4 B each, per token.
    m = presets.find_model("tinyllama-1.1b")
    r64 = estimate(m, TrainingSpec(method="miss", precision="bf16", seq_len=512))
    r32 = estimate(m, TrainingSpec(method="miss", precision="bf16", seq_len=512, miss_rank=32))
    assert r64.details["activations.per_layer"] - r32.details["activations.per_layer"] == 512 * 2 * (64 - 32) * 4


# ---- adapter_config.json: its peft_type picks the method -------------------------------------------------

def _adapter(tmp_path: Path, cfg: dict[str, object]) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tinyllama-1.1b", **cfg}))
    return folder


@pytest.mark.parametrize(("cfg", "options"), [
    ({"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
     {"method": "ia3", "lora_targets": "k_proj,v_proj,down_proj", "ia3_feedforward": "down_proj"}),
    ({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 30, "prefix_projection": True, "encoder_hidden_size": 512},
     {"method": "prefix-tuning", "virtual_tokens": 30, "encoder_hidden_size": 512, "prefix_projection": True}),
    ({"peft_type": "LOKR", "r": 4, "alpha": 8, "target_modules": ["q_proj"]},
     {"method": "lokr", "lora_rank": 4, "lora_alpha": 8, "lora_targets": "q_proj"}),
    ({"peft_type": "LN_TUNING"}, {"method": "ln-tuning"}),
    ({"peft_type": "OFT", "r": 0, "oft_block_size": 64, "target_modules": ["q_proj", "v_proj"]},
     {"method": "oft", "oft_block_size": 64, "lora_targets": "q_proj,v_proj"}),
    ({"peft_type": "TRAINABLE_TOKENS", "token_indices": [5, 9, 11], "target_modules": ["embed_tokens"]},
     {"method": "trainable-tokens", "trainable_tokens": 3}),
    ({"peft_type": "BOFT", "boft_block_size": 0, "boft_block_num": 8, "boft_n_butterfly_factor": 1,
      "target_modules": ["q_proj", "v_proj"]},
     {"method": "boft", "boft_block_size": 0, "boft_block_num": 8, "lora_targets": "q_proj,v_proj"}),
    ({"peft_type": "MISS", "r": 32, "init_weights": True, "target_modules": ["q_proj"]},
     {"method": "miss", "miss_rank": 32, "lora_targets": "q_proj"}),
    ({"peft_type": "BONE", "r": 16, "target_modules": ["q_proj"]},  # Bone, MiSS's former name
     {"method": "miss", "miss_rank": 16, "lora_targets": "q_proj"}),
    ({"peft_type": "C3A", "block_size": 128, "block_size_pattern": {}, "target_modules": ["v_proj"]},
     {"method": "c3a", "c3a_block_size": 128, "lora_targets": "v_proj"}),
    ({"peft_type": "SHIRA", "r": 8, "mask_type": "random", "target_modules": ["q_proj"]},
     {"method": "shira", "shira_rank": 8, "lora_targets": "q_proj"}),
    ({"peft_type": "ADAPTION_PROMPT", "adapter_len": 10, "adapter_layers": 30, "target_modules": "self_attn"},
     {"method": "adaption-prompt", "adapter_len": 10, "adapter_layers": 30}),
], ids=["ia3", "prefix", "lokr", "ln-tuning", "oft", "trainable-tokens", "boft", "miss", "bone", "c3a", "shira",
        "adaption-prompt"])
def test_adapter_config_maps_to_method_and_options(tmp_path: Path, cfg: dict[str, object],
                                                   options: dict[str, object]) -> None:
    from vramcalc.io.resolve import adapter_options

    assert adapter_options(str(_adapter(tmp_path, cfg))) == options


@pytest.mark.parametrize(("cfg", "fragment"), [
    ({"peft_type": "HRA"}, "peft_type 'HRA' is not modelled"),
    ({"peft_type": "BOFT", "boft_n_butterfly_factor": 2}, "boft_n_butterfly_factor 2: vramcalc models BOFT"),
    ({"peft_type": "MISS", "init_weights": "bat"}, "init_weights 'bat': vramcalc models MISS"),
    ({"peft_type": "SHIRA", "mask_type": "custom"}, "mask_type 'custom': vramcalc models SHIRA"),
    ({"peft_type": "OFT", "r": 8, "oft_block_size": 0}, "r 8: vramcalc models OFT with peft's default"),
    ({"peft_type": "LOKR", "decompose_both": True}, "decompose_both True: vramcalc models LOKR with peft's default"),
    ({"peft_type": "P_TUNING", "encoder_reparameterization_type": "LSTM"}, "encoder_reparameterization_type 'LSTM'"),
])
def test_adapter_config_refuses_what_is_not_modelled(tmp_path: Path, cfg: dict[str, object], fragment: str) -> None:
    from vramcalc.io.resolve import adapter_options

    with pytest.raises(VramcalcError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        adapter_options(str(_adapter(tmp_path, cfg)))


def test_adapter_folder_estimates_with_its_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _adapter(tmp_path, {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8})
    code, out, err = invoke(["estimate", str(folder), "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["settings"]["method"] == "prompt-tuning"
    assert doc["trainable_parameters"] == 8 * 2048  # PromptEmbedding: Embedding(8, hidden 2048)
