"""config.json -> ModelSpec for each family, checked against published totals; MoE and MLA memory terms."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import PresetFileError
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import RECIPES, recipe_of
from vramcalc.core.params import active_params, count_params
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import FAMILIES, UnsupportedModelType, hf_config_notes, spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"

# Published totals (the source of each is in the preset YAML of the same model, or tests/data/hf/README.md);
# every one also equals sum(p.numel()) of transformers 5.24's model built from the same config on the meta
# device (DeepSeek-V3: plus its 58 x 256 e_score_correction_bias checkpoint tensors).
TOTALS = {
    "tinyllama-1.1b": 1_100_048_384,
    "mistral-7b-v0.1": 7_241_732_096,  # model.safetensors.index.json total_size 14,483,464,192 / 2
    "mixtral-8x7b-v0.1": 46_702_792_704,
    "qwen2.5-0.5b": 494_032_768,
    "qwen1.5-moe-a2.7b": 14_315_784_192,
    "qwen3-0.6b": 596_049_920,
    "qwen3-30b-a3b": 30_532_122_624,  # GGUF general.parameter_count
    "gemma-2b": 2_506_172_416,
    "gemma-2-9b": 9_241_705_984,
    "gemma-3-1b": 999_885_952,
    # Gemma3ForConditionalGeneration (language model, SigLIP tower and projector): the published safetensors
    # totals; sum(p.numel()) of transformers 5.24's model on the meta device is the same (tower 416,866,032,
    # projector 2,950,272 / 4,424,832 / 6,194,304 for 4B / 12B / 27B).
    "gemma-3-4b-it": 4_300_079_472,
    "gemma-3-12b-it": 12_187_325_040,
    "gemma-3-27b-it": 27_432_406_640,
    "phi-2": 2_779_683_840,
    "phi-3-mini-4k": 3_821_079_552,
    "gpt2": 124_439_808,
    "pythia-70m": 70_426_624,  # Pythia README params table
    "falcon-7b": 6_921_720_704,
    "olmo-1b-hf": 1_176_764_416,
    "starcoder2-3b": 3_030_371_328,
    "deepseek-v2-lite": 15_706_484_224,
    "deepseek-v3": 671_026_419_200,  # main model, layers 0-60; the MTP layer 61 is not counted
    # Issue 15's decoder families: each sum(p.numel()) of transformers 5.24's model on the meta device
    # (test_count_matches_the_library below rebuilds them when transformers is installed).
    "gpt-j-6b": 6_050_882_784,
    "bloom-560m": 559_214_592,  # also the model card's 559,214,592
    "starcoderbase-1b": 1_137_207_296,
    "olmo-2-0425-1b": 1_484_916_736,
    # phi-2 with qk_layernorm true (no published Phi config sets it): + 32 layers x 2 x (80 + 80)
    "phi-2-qk-layernorm": 2_779_683_840 + 32 * 2 * 160,
    # Issue 15's encoders with count_params' default head, a sequence classifier of 2 labels: each
    # sum(p.numel()) of AutoModelForSequenceClassification, transformers 5.24 on the meta device
    # (test_encoder_count_matches_the_library rebuilds them, and the masked-LM head, when transformers is installed).
    "bert-base-uncased": 109_483_778,
    "roberta-base": 124_647_170,
    "xlm-roberta-base": 278_045_186,
    "distilbert-base-uncased": 66_955_010,
    # Issue 15's encoder-decoders: each sum(p.numel()) of AutoModelForSeq2SeqLM, transformers 5.24 on the meta
    # device (test_seq2seq_count_matches_the_library rebuilds them). t5-small, bart-base and bart-large are also
    # their published figures. T5Config / MT5Config force tie_word_embeddings=True in transformers 5, so Flan-T5
    # and mT5 count their LM head once, as the shared embedding: flan-t5-base's published 247,577,856 (an
    # untied head) less 32,128 x 768 = 24,674,304.
    "t5-small": 60_506_624,
    "flan-t5-base": 247_577_856 - 32_128 * 768,
    "mt5-base": 390_315_264,
    "bart-base": 139_420_416,
    "bart-large": 406_291_456,
    "mbart-large-cc25": 610_851_840,
    # Issue 15's state-space models: sum(p.numel()) of MambaForCausalLM, transformers 5.24 on the meta device
    # (tests/test_ssm.py rebuilds it when transformers is installed).
    "mamba-130m-hf": 129_135_360,
    # Mamba-2: sum(p.numel()) of Mamba2ForCausalLM from mistralai/Mamba-Codestral-7B-v0.1's config.json,
    # transformers 5.24 on the meta device (tests/test_mamba2.py rebuilds it when transformers is installed).
    "mamba-codestral-7b": 7_285_403_648,
    # Falcon-H1 (attention + Mamba-2 hybrid): sum(p.numel()) of FalconH1ForCausalLM from
    # tiiuae/Falcon-H1-0.5B-Instruct's config.json, transformers 5.24 on the meta device (tests/test_falcon_h1.py
    # rebuilds it).
    "falcon-h1-0.5b-instruct": 521_411_104,
    # Jamba (attention + Mamba-1 + MoE): sum(p.numel()) of JambaForCausalLM, transformers 5.24 on the meta device
    # (tests/test_jamba.py rebuilds it); the model cards' "52B total"
    "ai21-jamba-1.5-mini": 51_570_323_328,
    "jamba-v0.1": 51_570_323_328,
    # Bamba (Mamba-2 layers with attention at attn_layer_indices): sum(p.numel()) of BambaForCausalLM from
    # tests/data/hf/bamba-9b.json (typed from foundation-model-stack's _bamba_9_8b_config, the README says so),
    # transformers 5.24 on the meta device (tests/test_bamba.py rebuilds it).
    "bamba-9b": 9_780_235_392,
    # GraniteMoeHybrid's dense Granite 4.0 H (Mamba-2 layers, attention at layer_types' "attention", shared_mlp):
    # sum(p.numel()) of GraniteMoeHybridForCausalLM from tests/data/hf/granite-4.0-h-micro.json (typed, the README
    # says from what), transformers 5.24 on the meta device (tests/test_granitemoehybrid.py rebuilds it).
    "granite-4.0-h-micro": 3_191_396_096,
    # Zamba2 (Mamba-2 layers, shared attention blocks with per-invocation projectors): sum(p.numel()) of
    # Zamba2ForCausalLM from the typed tests/data/hf/zamba2-*.json (the README says from what), transformers 5.24 on
    # the meta device, the shared blocks' tied weights once (tests/test_zamba2.py rebuilds them).
    "zamba2-1.2b": 1_215_064_704,
    "zamba2-2.7b": 2_662_214_560,
    "zamba2-7b": 7_356_749_648,
    # The MoE Granite 4.0 H models (block_sparse_moe beside shared_mlp): sum(p.numel()) of GraniteMoeHybridForCausalLM
    # from tests/data/hf/granite-4.0-h-tiny.json / -h-small.json (typed, the README says from what), transformers 5.24
    # on the meta device (tests/test_granitemoehybrid.py rebuilds them).
    "granite-4.0-h-tiny": 6_939_037_248,
    "granite-4.0-h-small": 32_207_337_984,
    # Nemotron-H (Mamba-2, attention and relu2 MLP layers, one block each, as hybrid_override_pattern says):
    # sum(p.numel()) of NemotronHForCausalLM from tests/data/hf/nemotron-h-8b-base-8k.json (quoted) and
    # nvidia-nemotron-nano-9b-v2.json (typed, the README says from what), transformers 5.24 on the meta device
    # (tests/test_nemotron_h.py rebuilds them).
    "nemotron-h-8b-base-8k": 8_100_852_736,
    "nvidia-nemotron-nano-9b-v2": 8_888_227_328,
    # Nemotron 3 Nano (23 of its 52 layers NemotronHMoE: 128 ungated experts, the fp32 router, a shared expert):
    # sum(p.numel()) of NemotronHForCausalLM from tests/data/hf/nvidia-nemotron-3-nano-30b-a3b-bf16.json (quoted),
    # transformers 5.24 on the meta device (tests/test_nemotron_h.py rebuilds it)
    "nvidia-nemotron-3-nano-30b-a3b-bf16": 31_577_937_344,
    # sum(p.numel()) of NemotronHForCausalLM from tests/data/hf/nvidia-nemotron-3-super-120b-a12b-bf16.json (quoted;
    # the latent MoE, its MTP layer not built), transformers 5.24 on the meta device (tests/test_nemotron_h.py)
    "nvidia-nemotron-3-super-120b-a12b-bf16": 120_668_687_360,
    # Issue 15's vision-language models: sum(p.numel()) of LlavaForConditionalGeneration, transformers 5.24 on the
    # meta device (tests/test_vision.py rebuilds it): the language model 6,607,605,760 + lm_head 131,334,144 +
    # the CLIP tower 303,507,456 + the projector 20,979,712.
    "llava-1.5-7b-hf": 7_063_427_072,
    # LLaVA-NeXT: sum(p.numel()) of LlavaNextForConditionalGeneration, transformers 5.24 on the meta device
    # (tests/test_llava_next.py rebuilds them): LLaVA's parts plus image_newline (the text width)
    "llava-v1.6-mistral-7b-hf": 7_566_747_648,
    "llava-v1.6-vicuna-7b-hf": 7_063_431_168,
    "llava-v1.6-vicuna-13b-hf": 13_351_499_776,
    "llava-v1.6-34b-hf": 34_752_083_968,
    # Qwen2-VL / Qwen2.5-VL: sum(p.numel()) of Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration,
    # transformers 5.24 on the meta device (tests/test_qwen_vl.py rebuilds them)
    "qwen2-vl-2b-instruct": 2_208_985_600,
    "qwen2-vl-7b-instruct": 8_291_375_616,
    "qwen2.5-vl-3b-instruct": 3_754_622_976,
    "qwen2.5-vl-7b-instruct": 8_292_166_656,
    # Idefics3 / SmolVLM: sum(p.numel()) of Idefics3ForConditionalGeneration / SmolVLMForConditionalGeneration,
    # transformers 5.24 on the meta device (tests/test_idefics3.py rebuilds them)
    "idefics3-8b-llama3": 8_462_086_384,
    "smolvlm-instruct": 2_246_272_880,
    "smolvlm-256m-instruct": 256_484_928,
    "smolvlm-500m-instruct": 507_482_304,
    "smolvlm2-256m-video-instruct": 256_484_928,
    # Llama-3.2-Vision: sum(p.numel()) of MllamaForConditionalGeneration, transformers 5.24 on the meta device
    # (tests/test_mllama.py rebuilds them); 11B is Meta's 10.67B
    "llama-3.2-11b-vision-instruct": 10_670_220_835,
    "llama-3.2-90b-vision-instruct": 88_593_355_323,
    # ModernBERT with count_params' default head (2 labels): sum(p.numel()) of AutoModelForSequenceClassification,
    # transformers 5.24 on the meta device (test_modernbert_count_matches_the_library rebuilds it).
    "modernbert-base": 149_606_402,
    "modernbert-large": 395_833_346,
    # DeBERTa-v3 with count_params' default head (2 labels): sum(p.numel()) of AutoModelForSequenceClassification,
    # transformers 5.24 on the meta device (test_deberta_count_matches_the_library rebuilds it).
    "deberta-v3-base": 184_423_682,
    "deberta-v3-large": 435_063_810,
    # gpt-oss (issue 15): sum(p.numel()) of GptOssForCausalLM, transformers 5.24 on the meta device
    # (test_gpt_oss_count_matches_the_library rebuilds them); the OpenAI model card's 20.91B and 116.83B.
    "gpt-oss-20b": 20_914_757_184,
    "gpt-oss-120b": 116_829_156_672,
    # Llama 4 (issue 15): sum(p.numel()) of Llama4ForCausalLM (the text model AutoModelForCausalLM builds for
    # model_type llama4), transformers 5.24 on the meta device (tests/test_llama4.py rebuilds them); the whole
    # Llama4ForConditionalGeneration adds the vision tower and projector (108,641,793,536 and 401,583,781,376).
    "llama-4-scout-17b-16e-instruct": 107_769_861_120,
    "llama-4-maverick-17b-128e-instruct": 400_711_848_960,
}


def load(name: str) -> dict:
    return json.loads((HF / f"{name}.json").read_text())


def spec(name: str):
    return spec_from_hf_config(load(name), name, f"tests/data/hf/{name}.json")


def test_every_fixture_has_a_total() -> None:
    assert sorted(p.stem for p in HF.glob("*.json")) == sorted(TOTALS)


def test_every_family_of_the_issue_is_mapped() -> None:
    issue = {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi",
        "phi3",
        "gpt2",
        "gpt_neox",
        "falcon",
        "olmo",
        "starcoder2",
        "deepseek_v2",
        "deepseek_v3",
        "olmo2",
        "gptj",
        "gpt_bigcode",
        "bloom",
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "modernbert",
        "deberta-v2",
        "t5",
        "mt5",
        "bart",
        "mbart",
        "mamba",
        "mamba2",
        "llava",
        "llava_next",
        "mllama",
        "gpt_oss",
        "qwen2_vl",
        "qwen2_5_vl",
        "falcon_h1",
        "jamba",
        "bamba",
        "granitemoehybrid",
        "zamba2",
        "nemotron_h",
        "idefics3",
        "smolvlm",
        "llama4",
        "llama4_text",
    }
    assert issue <= set(FAMILIES)
    # one real config.json per family (gemma3: the multimodal gemma-3-4b-it, read through its text_config;
    # llama4_text: the llama4 files' text_config, which tests/test_llama4.py reads on its own)
    assert (issue | {"gemma3"}) - {"llama4_text"} == {load(n)["model_type"] for n in TOTALS}


@pytest.mark.parametrize(("name", "total"), TOTALS.items(), ids=list(TOTALS))
def test_count_matches_published_total(name: str, total: int) -> None:
    assert count_params(spec(name)) == total


NEW_FAMILIES = ("gpt-j-6b", "bloom-560m", "starcoderbase-1b", "olmo-2-0425-1b", "phi-2-qk-layernorm", "pythia-70m")


def library_model(name: str, auto: str):
    """The model transformers builds from the fixture's config.json on the meta device (transformers' `auto`)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = load(name)
    kwargs = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    config = transformers.AutoConfig.for_model(d["model_type"], **kwargs)
    with torch.device("meta"):
        return getattr(transformers, auto).from_config(config)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_count_matches_the_library(name: str) -> None:
    # The library's own count: the model transformers builds from the same config.json on the meta device.
    model = library_model(name, "AutoModelForCausalLM")
    assert count_params(spec(name)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_gpt_oss_count_matches_the_library(name: str) -> None:
    # GptOssForCausalLM built from the published config.json on the meta device, without its quantization_config
    # (the MXFP4 storage is memory/weights.py's business; Mxfp4Config(dequantize=True) loads these same bf16
    # Parameters: quantizers/quantizer_mxfp4.py). Its only buffers are the rotary inv_freq tables.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = load(name)
    skip = ("model_type", "architectures", "transformers_version", "quantization_config")
    config = transformers.AutoConfig.for_model("gpt_oss", **{k: v for k, v in d.items() if k not in skip})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert count_params(spec(name)) == sum(p.numel() for p in model.parameters())
    assert {k.rsplit(".", 1)[-1] for k, _ in model.named_buffers()} == {"inv_freq", "original_inv_freq"}


def test_gpt_oss_fields() -> None:
    # configuration_gpt_oss.py / the published config.json: 64 heads of 64 (head_dim != 2880 / 64), 8 KV heads,
    # every other layer a 128-token sliding window (layer_types), 32 experts top 4 with biases, attention sinks.
    m = spec("gpt-oss-20b")
    assert (m.head_dim, m.num_kv_heads, m.sliding_window, m.sliding_window_layers) == (64, 8, 128, 12)
    assert (m.num_experts, m.experts_per_token, m.moe_intermediate_size) == (32, 4, 2880)
    assert m.fused_gate_up and m.mlp_bias and m.router_bias and m.attention_sinks and m.qkv_bias and m.o_bias
    assert not m.tie_word_embeddings
    # configuration_gpt_oss.py __post_init__: without layer_types, layer i slides when (i + 1) % 2
    d = {k: v for k, v in load("gpt-oss-20b").items() if k != "layer_types"}
    assert spec_from_hf_config(d, "x", "x.json").sliding_window_layers == 12


SEQ2SEQ = ("t5-small", "flan-t5-base", "mt5-base", "bart-base", "bart-large", "mbart-large-cc25")


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_count_matches_the_library(name: str) -> None:
    # AutoModelForSeq2SeqLM built from the same config.json on the meta device; its one buffer is BART's
    # final_logits_bias (1 x vocab), counted as weights, not parameters (memory/weights.py buffer_bytes).
    model = library_model(name, "AutoModelForSeq2SeqLM")
    m = spec(name)
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    buffers = {k: b.numel() for k, b in model.named_buffers()}
    assert buffers == ({"final_logits_bias": m.vocab_size} if m.final_logits_bias else {})


def test_seq2seq_fields() -> None:
    # configuration_t5.py: t5-small is relu with a tied, scaled head; flan-t5 (tie_word_embeddings false) is
    # gated-gelu (gelu_new) without the scale; mt5 never scales; BART is post-norm, mBART pre-norm + final norms.
    t5, flan, mt5, bart, mbart = (spec(n) for n in ("t5-small", "flan-t5-base", "mt5-base", "bart-base",
                                                  "mbart-large-cc25"))
    assert (t5.mlp, t5.hidden_act, t5.decoder_output_scale, t5.decoder_layers) == ("plain", "relu", True, 6)
    assert (flan.mlp, flan.hidden_act, flan.decoder_output_scale, flan.tie_word_embeddings) == (
        "gated", "gelu_new", False, True)
    assert not mt5.decoder_output_scale and mt5.relative_attention_buckets == 32
    assert (bart.post_norms, bart.final_norm, bart.learned_position_embeddings) == (True, False, True)
    assert (mbart.post_norms, mbart.final_norm, mbart.attention_dropout) == (False, True, 0.0)


def test_bart_stacks_of_different_widths_are_refused() -> None:
    d = {**load("bart-base"), "decoder_ffn_dim": 4096}
    with pytest.raises(PresetFileError, match="encoder_ffn_dim 3072 differs from decoder_ffn_dim 4096"):
        spec_from_hf_config(d, "x", "x.json")


ENCODERS = ("bert-base-uncased", "roberta-base", "xlm-roberta-base", "distilbert-base-uncased")


@pytest.mark.parametrize("head", ["seq-cls", "token-cls", "mlm"])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_count_matches_the_library(name: str, head: str) -> None:
    # The encoder with the run's head (memory/encoder.py for_run) against the Auto class that head is, built by
    # transformers from the same config.json on the meta device (3 labels: the classifier's width is counted).
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vramcalc.core.memory.encoder import for_run
    from vramcalc.core.specs import TrainingSpec

    d = load(name)
    kwargs = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    config = transformers.AutoConfig.for_model(d["model_type"], **kwargs)
    config.num_labels = 3
    auto = {"mlm": transformers.AutoModelForMaskedLM, "token-cls": transformers.AutoModelForTokenClassification,
            "seq-cls": transformers.AutoModelForSequenceClassification}[head]
    with torch.device("meta"):
        model = auto.from_config(config)
    run = TrainingSpec(head=head, num_labels=2 if head == "mlm" else 3)  # type: ignore[arg-type]
    # the masked LM has no classifier: num_labels is the default there, and config.num_labels changes nothing
    assert count_params(for_run(spec(name), run)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("head", ["seq-cls", "token-cls"])
@pytest.mark.parametrize("name", ["modernbert-base", "modernbert-large"])
def test_modernbert_count_matches_the_library(name: str, head: str) -> None:
    # ModernBERT with the run's head against the library's Auto class on the same config.json (meta device,
    # 3 labels): layer 0's Identity attn_norm, bias-less LayerNorms, Wqkv, Wi of 2 x intermediate, the prediction
    # head (dense without bias + LayerNorm) and the classifier.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vramcalc.core.memory.encoder import for_run
    from vramcalc.core.specs import TrainingSpec

    d = load(name)
    kwargs = {k: v for k, v in d.items() if k not in ("model_type", "architectures")}
    config = transformers.AutoConfig.for_model(d["model_type"], **kwargs)
    config.num_labels = 3
    auto = {"token-cls": transformers.AutoModelForTokenClassification,
            "seq-cls": transformers.AutoModelForSequenceClassification}[head]
    with torch.device("meta"):
        model = auto.from_config(config)
    run = TrainingSpec(head=head, num_labels=3)  # type: ignore[arg-type]
    assert count_params(for_run(spec(name), run)) == sum(p.numel() for p in model.parameters())


def test_modernbert_layers_and_window() -> None:
    # configuration_modernbert.py layer_types: layer i is global when i % global_attn_every_n_layers (3) == 0, so
    # 8 of 22 base layers are global and 14 slide; config.sliding_window = local_attention // 2 = 64.
    m = spec("modernbert-base")
    assert (m.sliding_window, m.sliding_window_layers, m.norm_without_bias, m.mean_pooling) == (64, 14, True, True)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mlp_dropout", 0.1, "mlp_dropout 0.1 is not modelled for ModernBERT"),
    ("classifier_bias", True, "classifier_bias true is not modelled"),
    ("classifier_pooling", "max", "classifier_pooling 'max' is not 'cls' or 'mean'"),
])
def test_modernbert_refuses_what_it_does_not_model(key: str, value: object, message: str) -> None:
    d = {**load("modernbert-base"), key: value}
    with pytest.raises(PresetFileError, match=message):
        spec_from_hf_config(d, "x", "x.json")



@pytest.mark.parametrize("head", ["seq-cls", "token-cls"])
@pytest.mark.parametrize("name", ["deberta-v3-base", "deberta-v3-large"])
def test_deberta_count_matches_the_library(name: str, head: str) -> None:
    # DeBERTa-v3 with the run's head against the library's Auto class on the same config.json (meta device,
    # 3 labels): rel_embeddings and its LayerNorm, no position / token-type tables, ContextPooler for seq-cls.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vramcalc.core.memory.encoder import for_run

    d = load(name)
    config = transformers.AutoConfig.for_model(d["model_type"], **{k: v for k, v in d.items() if k != "model_type"})
    config.num_labels = 3
    auto = {"token-cls": transformers.AutoModelForTokenClassification,
            "seq-cls": transformers.AutoModelForSequenceClassification}[head]
    with torch.device("meta"):
        model = auto.from_config(config)
    run = TrainingSpec(head=head, num_labels=3)  # type: ignore[arg-type]
    assert count_params(for_run(spec(name), run)) == sum(p.numel() for p in model.parameters())


def test_deberta_relative_table() -> None:
    # modeling_deberta_v2.py DebertaV2Encoder: rel_embeddings has 2 x position_buckets rows (2 x 256); without
    # buckets, 2 x max_relative_positions, which is max_position_embeddings when below 1. v3 has no absolute
    # positions (position_biased_input false) and no token types (type_vocab_size 0).
    m = spec("deberta-v3-base")
    assert (m.rel_embedding_rows, m.learned_position_embeddings, m.type_vocab_size) == (512, False, 0)
    no_buckets = {**load("deberta-v3-base"), "position_buckets": -1}
    assert spec_from_hf_config(no_buckets, "x", "x.json").rel_embedding_rows == 2 * 512
    own_span = {**no_buckets, "max_relative_positions": 128}
    assert spec_from_hf_config(own_span, "x", "x.json").rel_embedding_rows == 2 * 128


@pytest.mark.parametrize(("key", "value", "message"), [
    ("conv_kernel_size", 3, "conv_kernel_size 3 .*ConvLayer.* is not modelled"),
    ("share_att_key", False, "share_att_key false .* is not modelled"),
    ("relative_attention", False, "relative_attention false is not modelled"),
    ("norm_rel_ebd", "none", "norm_rel_ebd 'none' is not modelled"),
    ("embedding_size", 128, "embedding_size 128 differs from hidden_size 768"),
    ("pooler_hidden_size", 1024, "pooler_hidden_size 1024 differs from hidden_size 768"),
    ("attention_head_size", 32, "attention_head_size x num_attention_heads 384 differs"),
    ("position_buckets", "256", "position_buckets must be an integer"),
    # the activations (core/memory/deberta.py) read both position terms, no pooler dropout and one dropout rate
    ("pos_att_type", "c2p", "pos_att_type 'c2p' is not modelled"),
    ("pooler_dropout", 0.1, "pooler_dropout 0.1 is not modelled"),
    ("attention_probs_dropout_prob", 0.0, "attention_probs_dropout_prob 0.0 differs from hidden_dropout_prob"),
])
def test_deberta_refuses_what_it_does_not_model(key: str, value: object, message: str) -> None:
    d = {**load("deberta-v3-base"), key: value}
    with pytest.raises(PresetFileError, match=message):
        spec_from_hf_config(d, "x", "x.json")


@pytest.mark.parametrize("head", ["seq-cls", "token-cls", "mlm"])
def test_deberta_runs_are_estimated_or_refused_in_one_line(head: str) -> None:
    # the classification heads' activations are modelled (memory/deberta.py, tests/test_deberta.py); the masked LM's
    # head is refused in one line (core/checks.py), never estimated as a BERT's
    from vramcalc.core.checks import check_run
    from vramcalc.core.errors import UnsupportedCombination

    if head != "mlm":
        check_run(spec("deberta-v3-base"), TrainingSpec(head=head))  # type: ignore[arg-type]
        return
    with pytest.raises(UnsupportedCombination, match="--head mlm is not modelled for DeBERTa"):
        check_run(spec("deberta-v3-base"), TrainingSpec(head=head))  # type: ignore[arg-type]


# Active parameters = total - (E - k)/E x routed-expert weights.
ACTIVE = {
    # Mixtral: 32 layers x 6 unused experts x 3 x 4096 x 14336 = 33,822,867,456 off 46,702,792,704
    # (12.9B active, arXiv:2401.04088 §2).
    "mixtral-8x7b-v0.1": 46_702_792_704 - 32 * 6 * 3 * 4096 * 14336,
    # Qwen1.5-MoE: 24 layers x 56 unused of 60 experts x 3 x 2048 x 1408 (model card: 2.7B activated).
    "qwen1.5-moe-a2.7b": 14_315_784_192 - 24 * 56 * 3 * 2048 * 1408,
    # Qwen3-30B-A3B: 48 layers x 120 unused of 128 x 3 x 2048 x 768 (3.3B activated).
    "qwen3-30b-a3b": 30_532_122_624 - 48 * 120 * 3 * 2048 * 768,
    # DeepSeek-V2-Lite: 26 MoE layers x 58 unused of 64 x 3 x 2048 x 1408 (2.4B activated excl. embeddings).
    "deepseek-v2-lite": 15_706_484_224 - 26 * 58 * 3 * 2048 * 1408,
    # DeepSeek-V3: 58 MoE layers x 248 unused of 256 x 3 x 7168 x 2048 (37B activated, arXiv:2412.19437).
    "deepseek-v3": 671_026_419_200 - 58 * 248 * 3 * 7168 * 2048,
}


@pytest.mark.parametrize(("name", "active"), ACTIVE.items(), ids=list(ACTIVE))
def test_active_parameters(name: str, active: int) -> None:
    assert active_params(spec(name)) == active


def test_dense_model_is_all_active() -> None:
    assert active_params(spec("mistral-7b-v0.1")) == 7_241_732_096


def test_sliding_window_layers() -> None:
    # Gemma 3 1B: 26 layers, sliding_window_pattern 6 -> layers 5, 11, 17, 23 global, 22 local.
    g3 = spec("gemma-3-1b")
    assert (g3.sliding_window, g3.sliding_window_layers, g3.qk_norm, g3.norms_per_layer) == (512, 22, True, 4)
    # Gemma 2 9B: 42 layers alternating local/global -> 21 local.
    assert spec("gemma-2-9b").sliding_window_layers == 21
    # Mistral 7B v0.1: every layer windowed (no layer_types): sliding_window_layers stays None = all.
    m = spec("mistral-7b-v0.1")
    assert (m.sliding_window, m.sliding_window_layers) == (4096, None)
    # Qwen2.5 lists sliding_window 32768 but use_sliding_window false: no window.
    assert spec("qwen2.5-0.5b").sliding_window is None


def test_layer_types_list_wins() -> None:
    d = load("gemma-3-1b") | {"layer_types": ["sliding_attention", "full_attention"] * 13}
    assert spec_from_hf_config(d, "g", "g.json").sliding_window_layers == 13


def test_mla_and_moe_fields() -> None:
    v3 = spec("deepseek-v3")
    assert (v3.attention_kind, v3.q_lora_rank, v3.kv_lora_rank, v3.first_dense_layers) == (
        "mla",
        1536,
        512,
        3,
    )
    assert (v3.num_experts, v3.experts_per_token, v3.num_shared_experts, v3.router_bias) == (256, 8, 1, True)
    lite = spec("deepseek-v2-lite")
    assert (lite.q_lora_rank, lite.router_bias, lite.num_shared_experts) == (None, False, 2)


def test_unknown_model_type_lists_supported() -> None:
    with pytest.raises(UnsupportedModelType) as e:
        spec_from_hf_config({"model_type": "rwkv"}, "m", "m.json")
    msg = str(e.value)
    assert msg.startswith(
        "m.json: unsupported model_type 'rwkv'; supported: bamba, bart, bert, bloom, deberta-v2, deepseek_v2, "
        "deepseek_v3, distilbert, falcon,"
    )
    assert "docs/any-model.md" in msg and "--presets DIR" in msg


def test_missing_key_names_it() -> None:
    d = load("tinyllama-1.1b")
    del d["vocab_size"]
    with pytest.raises(PresetFileError, match="config.json has no 'vocab_size'"):
        spec_from_hf_config(d, "t", "t.json")


def test_non_contiguous_moe_layers_are_refused() -> None:
    d = load("qwen3-30b-a3b") | {"decoder_sparse_step": 2}
    with pytest.raises(PresetFileError, match="decoder_sparse_step 2"):
        spec_from_hf_config(d, "q", "q.json")


def test_gemma3_multimodal_uses_text_config() -> None:
    # a gemma3 config without vision_config: the language model only, and a note says so
    wrapped = {"model_type": "gemma3", "text_config": load("gemma-3-1b")}
    assert count_params(spec_from_hf_config(wrapped, "g", "g.json")) == 999_885_952
    assert "vision tower" in hf_config_notes(wrapped)[0]
    assert not hf_config_notes(load("gemma-3-4b-it"))  # the published config: the tower is counted


@pytest.mark.parametrize("name", ["gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it"])
def test_gemma3_vision_parts_match_the_library(name: str) -> None:
    # Tower and projector one by one against Gemma3ForConditionalGeneration on the meta device.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vramcalc.core.params import projector_params, vision_tower_params

    d = load(name)
    cfg = transformers.Gemma3Config(**{k: v for k, v in d.items() if k not in ("architectures", "torch_dtype",
                                                                             "transformers_version")})
    with torch.device("meta"):
        hf = transformers.Gemma3ForConditionalGeneration(cfg)
    s = spec(name)
    assert s.vision is not None
    assert vision_tower_params(s.vision) == sum(p.numel() for p in hf.model.vision_tower.parameters())
    assert projector_params(s.vision, s.hidden_size) == sum(
        p.numel() for p in hf.model.multi_modal_projector.parameters())
    assert count_params(s) == sum(p.numel() for p in hf.parameters())


def test_gemma3_vision_refusals() -> None:
    d = load("gemma-3-4b-it")
    with pytest.raises(PresetFileError, match="vision_use_head"):
        spec_from_hf_config(d | {"vision_config": {**d["vision_config"], "vision_use_head": True}}, "g", "g.json")
    with pytest.raises(PresetFileError, match="mm_tokens_per_image 200"):
        spec_from_hf_config(d | {"mm_tokens_per_image": 200}, "g", "g.json")


def test_deepseek_v3_notes() -> None:
    notes = hf_config_notes(load("deepseek-v3"))
    assert any("multi-token-prediction" in n for n in notes)
    assert any("quantized (fp8)" in n for n in notes)


def _terms(name: str, **training) -> dict[str, int]:
    t = TrainingSpec(**training)
    acts = layer_activations(spec(name), t, recipe_of(t), trainable_weights=t.method == "full")
    return {x.name: x.per_token for x in acts.terms}


def test_moe_activations_count_top_k_routed_tokens() -> None:
    # Mixtral-8x7B as transformers 5 trains it (memory/activations.py _fused_moe_terms), full bf16: hidden 4096,
    # 8 experts of 14336, top 2.
    terms = _terms("mixtral-8x7b-v0.1", method="full")
    # fp32 softmax (4 x 8), int64 top-k indices (8 x 2), the renormalized top-k values and their sum (4 x 2 + 4)
    assert terms["router softmax (fp32), top-k indices"] == 32 + 16 + 12
    # three int64 permutations of the 2 routed copies, their routing weights (fp32: Mixtral's router returns its
    # softmax's fp32 top-k values; Qwen-MoE's cast them to 16 bits, memory/activations.py _routing_weight_bytes)
    assert terms["expert routing indices (int64 x 3), gathered routing weights"] == 3 * 8 * 2 + 4 * 2
    # Qwen3-30B-A3B (top 8): modeling_qwen3_moe.py `router_top_value.to(router_logits.dtype)`, bf16 weights
    qwen = _terms("qwen3-30b-a3b", method="full")
    assert qwen["expert routing indices (int64 x 3), gathered routing weights"] == 3 * 8 * 8 + 2 * 8
    # per routed copy: gate_up output (2 x 14336), activation output (14336), down output (4096), 2 bytes each
    assert terms["experts gate_up output, activation output, down output"] == 2 * 2 * (3 * 14336 + 4096)
    # trainable experts: grouped_mm keeps its inputs (gathered hidden 4096, gated product 14336); the router's
    # weight gradient keeps its input (4096)
    assert terms["experts grouped_mm inputs (gathered hidden, gated product)"] == 2 * 2 * (4096 + 14336)
    assert terms["router input (its weight's gradient)"] == 2 * 4096


def test_capacity_factor_scales_routed_terms() -> None:
    base = spec("mixtral-8x7b-v0.1")
    capped = replace(base, **{"moe_capacity_factor": 1.25})
    t = TrainingSpec()
    terms = {x.name: x.per_token for x in layer_activations(capped, t, RECIPES["bf16"], True).terms}
    # 1.25 x (2 x 2 x 2 x 4096) = 40,960 bytes per token of padded expert buffers.
    assert terms["routed token copies (capacity)"] == 40_960


def test_mla_attention_activations() -> None:
    terms = _terms("deepseek-v2-lite")
    # bf16; 16 heads; q/k of 128 + 64 = 192 per head, v and out 128 per head; fp32 logsumexp per head:
    # 2 x (2 x 16 x 192 + 2 x 16 x 128) + 4 x 16 = 20,544 bytes per token.
    assert terms["sdpa q, k, v, out, logsumexp"] == 20_544
    # RoPE saves nothing per layer: mul's backward for q needs only cos/sin, which need no gradient
    # (derivatives.yaml mul.Tensor; measured against the tracer for the standard attention, issue #3).
    assert not any(name.startswith("rope") for name in terms)
    # kv_b_proj saves its 512-wide normed latent (2 bytes) under full fine-tuning.
    assert terms["kv_b_proj input"] == 1_024
    assert "q_b_proj input" not in terms  # V2-Lite has no q latent (q_lora_rank null)


def test_kv_cache_layout_sliding_and_mla() -> None:
    from vramcalc.core.kv_layout import cached_positions, kv_cache_elements, kv_elements_per_position

    g3 = spec("gemma-3-1b")
    # 8192 tokens: 22 local layers keep 512 positions, 4 global layers keep 8192: 11,264 + 32,768.
    assert cached_positions(g3, 8192) == 22 * 512 + 4 * 8192
    # 1 KV head of 256: K and V = 512 elements per position and layer.
    assert kv_cache_elements(g3, 1, 8192) == 512 * (22 * 512 + 4 * 8192)
    # Mistral 7B v0.1 windows every layer at 4096: 32 x 4096 positions at 32k tokens.
    assert cached_positions(spec("mistral-7b-v0.1"), 32768) == 32 * 4096
    # DeepSeek-V3 in transformers: 128 heads x (128 + 64 + 128) = 40,960 elements per position and layer.
    assert kv_elements_per_position(spec("deepseek-v3")) == 40_960


def test_gemma3_4b_text_config_filled_with_transformers_defaults() -> None:
    # The published google/gemma-3-4b-it text_config names 6 keys; Gemma3TextConfig's defaults fill the rest
    # (configuration_gemma3.py: 8 heads, 4 KV heads, head_dim 256, vocab 262,208, tied embeddings).
    s = spec("gemma-3-4b-it")
    assert (s.num_attention_heads, s.num_kv_heads, s.head_dim, s.vocab_size) == (8, 4, 256, 262_208)
    # Gemma 3 Technical Report (arXiv:2503.19786) Table 1, 4B: 3,209M non-embedding parameters (language model);
    # its vision encoder, 417M
    assert round((count_params(replace(s, vision=None)) - s.vocab_size * s.hidden_size) / 1e6) == 3209
    assert s.vision is not None
    from vramcalc.core.params import vision_tower_params

    assert round(vision_tower_params(s.vision) / 1e6) == 417


@pytest.mark.parametrize("name", ["deepseek-v2-lite", "deepseek-v3"])
def test_dense_bottom_layers_save_a_dense_mlp(name: str) -> None:
    # first_k_dense_replace layers run DeepseekV3MLP of intermediate_size, not the routed experts
    # (modeling_deepseek_v3.py DeepseekV3DecoderLayer): their saved set is the dense model's layer.
    from vramcalc.core.memory import estimate

    m = replace(spec(name), num_layers=4)  # a short stack keeps the check fast; the rule is per layer
    t = TrainingSpec(method="full", seq_len=256, lora_targets=("all-linear",))
    dense = replace(m, num_experts=0, experts_per_token=0, num_shared_experts=0, first_dense_layers=0,
                    router_bias=False)
    tokens = t.batch_size * t.seq_len
    moe_layer = layer_activations(m, t, recipe_of(t), True).saved(tokens, t.seq_len)
    dense_layer = layer_activations(dense, t, recipe_of(t), True).saved(tokens, t.seq_len)
    n_dense = m.first_dense_layers
    assert n_dense >= 1 and dense_layer != moe_layer
    got = estimate(m, t).details["activations.layers"]
    assert got == n_dense * dense_layer + (4 - n_dense) * moe_layer


def test_gpt_bigcode_keeps_its_causal_mask_buffer() -> None:
    # GPTBigCodeModel.bias: a bool (n_positions, n_positions) buffer, 8,192^2 B = 64 MiB for StarCoderBase
    # (modeling_gpt_bigcode.py; the tracer counted 67,108,864 B of buffers, benchmarks/results/accuracy_families).
    from vramcalc.core.memory import estimate

    m = spec("starcoderbase-1b")
    b = estimate(m, TrainingSpec(method="full", precision="pure-bf16"))
    assert b.details["weights.base"] == 2 * count_params(m) + 8192**2
