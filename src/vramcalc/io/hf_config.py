"""Hugging Face `config.json` -> ModelSpec: the key mapping of each architecture family, and nothing else.

Pure: takes the parsed dict, returns a validated ModelSpec; reading files is model_files.py's job.
Each family follows its transformers modeling file (transformers 5.x, `models/<type>/modeling_<type>.py`)
for which weights exist, and its configuration file for the defaults of keys a config.json may omit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vramcalc.core.errors import PresetFileError, SpecError, VramcalcError
from vramcalc.core.specs import ModelSpec


class UnsupportedModelType(VramcalcError):
    """A config.json whose model_type has no mapping here."""

    def __init__(self, model_type: str, source: str) -> None:
        self.model_type = model_type
        hybrid = HYBRIDS.get(model_type)
        if hybrid is not None:  # a state-space hybrid: say what is missing, not just "unsupported"
            super().__init__(f"{source}: model_type {model_type!r} is {hybrid}; vramcalc models pure Mamba "
                             "(mamba) and Mamba-2 (mamba2) models and decoder-only transformers, not the mix")
            return
        super().__init__(
            f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}. "
            "Write a preset with the architecture fields instead (see docs/any-model.md) "
            "and pass --presets DIR"
        )


# State-space hybrids transformers 5.24 ships (models/<type>/modeling_<type>.py) and what their layers mix: refused
# by name (issue 15) while their layers are not modelled. None is left: Falcon-H1, Bamba, Jamba, GraniteMoeHybrid's
# dense models, Zamba2 and Nemotron-H are read (their readers below).
HYBRIDS: dict[str, str] = {}


# Every config.json key a mapper below reads, with its JSON type (io/validate.py KEY_KINDS). The file
# is checked against this before any mapper runs, so no arithmetic sees a string or a boolean, and
# booleans are true/false only: `"multi_query": "false"` is an error, not a truthy string.
_POSITIVE = ("vocab_size", "hidden_size", "n_embd", "n_embed", "d_model", "num_attention_heads", "n_head",
             "num_hidden_layers", "n_layer", "num_layers", "intermediate_size", "n_inner", "ffn_hidden_size",
             "num_key_value_heads", "num_kv_heads", "head_dim", "sliding_window_pattern", "decoder_sparse_step",
             "moe_layer_freq", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "dim", "n_layers",
             "n_heads", "hidden_dim",
             # encoder-decoders (_t5, _bart)
             "d_kv", "d_ff", "num_heads", "num_decoder_layers", "relative_attention_num_buckets", "encoder_layers",
             "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads",
             "decoder_attention_heads",
             # state-space models (_mamba)
             "state_size", "d_state", "conv_kernel", "d_conv", "expand", "n_groups", "chunk_size",
             # Falcon-H1's mixer (_falcon_h1)
             "mamba_d_ssm", "mamba_n_heads", "mamba_d_state", "mamba_d_conv", "mamba_n_groups", "mamba_chunk_size",
             "mamba_expand",
             # Jamba (_jamba)
             "attn_layer_period", "expert_layer_period",
             # ModernBERT (_modernbert)
             "local_attention", "global_attn_every_n_layers",
             # DeBERTa-v2/v3 (_deberta_v2)
             "pooler_hidden_size", "embedding_size", "attention_head_size",
             # Llama 4 (_llama4)
             "intermediate_size_mlp", "interleave_moe_layer_step", "no_rope_layer_interval",
             # GraniteMoeHybrid (_granitemoehybrid)
             "shared_intermediate_size",
             # Zamba2 (_zamba2)
             "n_mamba_heads", "mamba_headdim", "num_mem_blocks", "adapter_rank", "attention_hidden_size",
             "attention_head_dim",
             # Nemotron-H (_nemotron_h, _nemotron_h_moe)
             "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "moe_shared_expert_intermediate_size",
             "n_group", "topk_group", "moe_latent_size")
_NON_NEGATIVE = ("max_position_embeddings", "n_positions", "n_ctx", "sliding_window", "num_experts",
                 "shared_expert_intermediate_size", "num_ln_in_parallel_attn", "q_lora_rank", "kv_lora_rank",
                 "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts",
                 "first_k_dense_replace", "num_nextn_predict_layers", "rotary_dim", "type_vocab_size",
                 "attention_chunk_size", "attn_layer_offset", "expert_layer_offset")
_BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "qkv_bias", "use_sliding_window", "qk_layernorm",
          "use_parallel_residual", "new_decoder_architecture", "multi_query", "parallel_attn", "bias", "use_bias",
          "apply_residual_connection_post_layernorm", "sinusoidal_pos_embds", "use_conv_bias", "conv_bias",
          "residual_in_fp32", "norm_bias", "classifier_bias", "decoder_bias", "relative_attention", "share_att_key",
          "position_biased_input", "mamba_conv_bias", "mamba_proj_bias", "mamba_rms_norm", "projectors_bias",
          "use_qk_norm", "use_mambapy",
          # the MoE router's aux loss (memory/router_aux.py)
          "output_router_logits",
          # Zamba2 (_zamba2)
          "add_bias_linear", "use_shared_attention_adapter", "use_mem_rope", "use_long_context",
          # Nemotron-H MoE (_nemotron_h_moe)
          "norm_topk_prob", "output_router_logits")
CONFIG_KEYS: dict[str, str] = {
    **dict.fromkeys(_POSITIVE, "positive"),
    **dict.fromkeys(_NON_NEGATIVE, "int"),
    **dict.fromkeys(_BOOLS, "bool"),
    **dict.fromkeys(("resid_pdrop", "residual_dropout", "hidden_dropout", "attention_dropout", "attn_pdrop",
                     "embd_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
                     "dropout_rate", "activation_dropout", "embedding_dropout", "mlp_dropout",
                     "classifier_dropout", "pooler_dropout", "cls_dropout"), "number"),
    **dict.fromkeys(("model_type", "hidden_act", "hidden_activation", "activation_function", "topk_method",
                     "torch_dtype", "feed_forward_proj", "classifier_pooling", "classifier_activation",
                     "norm_rel_ebd", "pooler_hidden_act", "position_embedding_type", "hybrid_override_pattern",
                     "mlp_hidden_act", "mamba_hidden_act"), "str"),
    **dict.fromkeys(("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling",
                     "router_aux_loss_coef"), "number"),
    "mlp_only_layers": "int_list",
    "moe_layers": "int_list",
    "no_rope_layers": "int_list",
    "layer_types": "str_list",
    "layers_block_type": "str_list",
    "attn_layer_indices": "int_list",
    "hybrid_layer_ids": "int_list",
}


def _check_types(d: Mapping[str, Any], source: str, prefix: str = "") -> None:
    from vramcalc.io import validate  # pydantic: only when a config.json is read

    keys = CONFIG_KEYS
    if d.get("model_type") == "granitemoehybrid":  # num_local_experts 0: the dense Granite 4.0 H models (h-micro)
        keys = {**CONFIG_KEYS, "num_local_experts": "int", "num_experts_per_tok": "int"}
    problems = validate.check_keys(keys, d)
    if problems:
        raise PresetFileError(source, [prefix + validate.problem_text(*p) for p in problems])


def _get(d: Mapping[str, Any], source: str, *keys: str, default: Any = ...) -> Any:
    """The first of `keys` present and not null; else `default`, or a one-line error naming the key."""
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    if default is ...:
        raise PresetFileError(
            source, [f"config.json has no {keys[0]!r}; it is needed to count the parameters"]
        )
    return default


def _common(d: Mapping[str, Any], source: str, tie_default: bool) -> dict[str, Any]:
    """Keys every decoder-only config.json spells the same way (PretrainedConfig attribute_map aside)."""
    hidden = _get(d, source, "hidden_size", "n_embd", "n_embed", "d_model")
    heads = _get(d, source, "num_attention_heads", "n_head")
    out: dict[str, Any] = {
        "vocab_size": _get(d, source, "vocab_size"),
        "hidden_size": hidden,
        "num_layers": _get(d, source, "num_hidden_layers", "n_layer", "num_layers"),
        "num_attention_heads": heads,
        "intermediate_size": _get(
            d, source, "intermediate_size", "n_inner", "ffn_hidden_size", default=4 * hidden
        ),
        "tie_word_embeddings": bool(_get(d, source, "tie_word_embeddings", default=tie_default)),
        "hidden_act": str(
            _get(d, source, "hidden_activation", "hidden_act", "activation_function", default="silu")
        ),
    }
    kv = _get(d, source, "num_key_value_heads", default=None)
    if kv is not None and kv != heads:
        out["num_kv_heads"] = kv
    head_dim = _get(d, source, "head_dim", default=None)
    if head_dim is not None and head_dim != hidden // heads:
        out["head_dim"] = head_dim
    pos = _get(d, source, "max_position_embeddings", "n_positions", "n_ctx", default=None)
    if pos is not None:
        out["max_position_embeddings"] = pos
    return out


def _window(d: Mapping[str, Any], n_layers: int, default_pattern: int | None = None) -> dict[str, Any]:
    """sliding_window, and how many layers use it (config layer_types, or every Nth layer global)."""
    window = d.get("sliding_window")
    if not window or d.get("use_sliding_window") is False:
        return {}
    out: dict[str, Any] = {"sliding_window": int(window)}
    layer_types = d.get("layer_types")
    pattern = d.get("sliding_window_pattern", default_pattern)
    if isinstance(layer_types, list) and len(layer_types) == n_layers:
        out["sliding_window_layers"] = sum(1 for t in layer_types if t == "sliding_attention")
    elif pattern:
        # Gemma 3 (modeling_gemma3.py, before layer_types): layer i is global when (i + 1) % pattern == 0,
        # so n_layers // pattern layers are global (counted, not enumerated: n_layers comes from a file).
        out["sliding_window_layers"] = n_layers - n_layers // int(pattern)
    return out


def _moe_layout(d: Mapping[str, Any], source: str, n_layers: int) -> int:
    """Dense layers at the bottom, from Qwen-MoE's mlp_only_layers / decoder_sparse_step (only contiguous)."""
    step = int(d.get("decoder_sparse_step") or 1)
    only = sorted(int(i) for i in (d.get("mlp_only_layers") or []))
    if step != 1 or only != list(range(len(only))):
        raise PresetFileError(
            source,
            [
                "MoE layers that are not all the top ones (decoder_sparse_step "
                f"{step}, mlp_only_layers {only}) are not modeled; write a preset"
            ],
        )
    return min(len(only), n_layers)


def _llama(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_llama.py: q/k/v/o bias = attention_bias, gate/up/down bias = mlp_bias; nothing tied by default.
    out = _common(d, source, tie_default=False)
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    out["mlp_bias"] = bool(d.get("mlp_bias", False))
    return out


def _mistral(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = _llama(d, source)
    out.update(_window(d, out["num_layers"]))
    return out


def _mixtral(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_mixtral.py: every layer a sparse block of num_local_experts SwiGLU experts of
    # intermediate_size; router Linear(hidden, E, bias=False); top num_experts_per_tok.
    out = _mistral(d, source)
    out.update(
        num_experts=_get(d, source, "num_local_experts"),
        experts_per_token=_get(d, source, "num_experts_per_tok"),
        moe_intermediate_size=out["intermediate_size"],
    )
    return out


def _qwen2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_qwen2.py: q/k/v with bias, o_proj without; sliding window only with use_sliding_window.
    out = _common(d, source, tie_default=False)
    out["qkv_bias"] = True
    out.update(_window(d, out["num_layers"]))
    return out


def _qwen2_moe(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_qwen2_moe.py: q/k/v bias = qkv_bias (default true); experts of moe_intermediate_size;
    # one shared expert of shared_expert_intermediate_size behind a sigmoid gate Linear(hidden, 1).
    out = _qwen2(d, source)
    out["qkv_bias"] = bool(d.get("qkv_bias", True))
    out.update(
        num_experts=_get(d, source, "num_experts"),
        experts_per_token=_get(d, source, "num_experts_per_tok"),
        moe_intermediate_size=_get(d, source, "moe_intermediate_size"),
        first_dense_layers=_moe_layout(d, source, out["num_layers"]),
    )
    shared = d.get("shared_expert_intermediate_size") or 0
    if shared:
        out.update(num_shared_experts=1, shared_expert_intermediate_size=shared, shared_expert_gate=True)
    return out


def _qwen3(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_qwen3.py: per-head RMSNorm q_norm/k_norm, attention_bias on q/k/v/o (false in releases).
    out = _common(d, source, tie_default=False)
    out["qk_norm"] = True
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    out.update(_window(d, out["num_layers"]))
    return out


def _qwen3_moe(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_qwen3_moe.py: Qwen3 attention, experts of moe_intermediate_size, no shared expert.
    out = _qwen3(d, source)
    out.update(
        num_experts=_get(d, source, "num_experts"),
        experts_per_token=_get(d, source, "num_experts_per_tok"),
        moe_intermediate_size=_get(d, source, "moe_intermediate_size"),
        first_dense_layers=_moe_layout(d, source, out["num_layers"]),
    )
    return out


def _gpt_oss(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gpt_oss.py (transformers 5.24): GptOssAttention q/k/v/o with bias = attention_bias (default true)
    # and a per-head `sinks` Parameter; GptOssMLP = GptOssTopKRouter (weight E x hidden, bias E) + GptOssExperts
    # (gate_up_proj E x hidden x 2i interleaved gate/up, gate_up_proj_bias E x 2i, down_proj E x i x hidden,
    # down_proj_bias E x hidden: a fused gated MLP with biases per expert); two RMSNorms per layer whose weight
    # multiplies in fp32 (GptOssRMSNorm: `(self.weight * hidden_states).to(input_dtype)`); untied lm_head.
    # configuration_gpt_oss.py defaults: head_dim 64, num_key_value_heads 8, sliding_window 128, layer_types
    # alternating sliding/full from layer 0, num_experts_per_tok 4, intermediate_size 2880.
    out = _common(d, source, tie_default=False)
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", True))
    head_dim = int(_get(d, source, "head_dim", default=64))
    out.pop("head_dim", None)
    if head_dim * out["num_attention_heads"] != out["hidden_size"]:
        out["head_dim"] = head_dim
    n = out["num_layers"]
    layer_types = d.get("layer_types")
    if not isinstance(layer_types, list) or len(layer_types) != n:
        layer_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    out.update(_window({"sliding_window": d.get("sliding_window", 128), "layer_types": layer_types}, n))
    out.update(
        num_experts=_get(d, source, "num_local_experts"),
        experts_per_token=_get(d, source, "num_experts_per_tok", default=4),
        moe_intermediate_size=out["intermediate_size"],
        fused_gate_up=True,
        mlp_bias=True,
        router_bias=True,
        attention_sinks=True,
        norm_fp32_weight_mul=True,
    )
    return out


# Llama4TextConfig's defaults (transformers models/llama4/configuration_llama4.py): Llama4Config builds its
# text_config from these for the keys the published file leaves out.
LLAMA4_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 202_048, "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16_384,
    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
    "hidden_act": "silu", "max_position_embeddings": 4096 * 32, "tie_word_embeddings": False,
    "num_experts_per_tok": 1, "num_local_experts": 16, "interleave_moe_layer_step": 1, "use_qk_norm": True,
    "no_rope_layer_interval": 4, "attention_chunk_size": 8192, "attn_temperature_tuning": True,
    "attention_bias": False, "attention_dropout": 0.0,
}


def _llama4(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Llama 4's text model (modeling_llama4.py Llama4ForCausalLM, which AutoModelForCausalLM builds for model_type
    llama4 and llama4_text): Llama4TextAttention q/k/v/o (bias = attention_bias), two RMSNorms per layer, an untied
    lm_head; Llama4TextMoe in the layers of moe_layers (default every interleave_moe_layer_step-th from step - 1):
    Llama4Router Linear(hidden, E), Llama4TextExperts (E of intermediate_size, 3-D Parameters) and a shared
    Llama4TextMLP of intermediate_size; the other layers a Llama4TextMLP of intermediate_size_mlp."""
    d = {**LLAMA4_TEXT_DEFAULTS, **{k: v for k, v in d.items() if v is not None or k == "attention_chunk_size"}}
    out = _common({**d, "intermediate_size": d["intermediate_size_mlp"]}, source, tie_default=False)
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    n = out["num_layers"]
    step = int(d["interleave_moe_layer_step"])
    moe = d.get("moe_layers")
    if moe is not None and sorted(int(i) for i in moe) != list(range(step - 1, n, step)):
        raise PresetFileError(source, [f"llama4: moe_layers {moe} are not every interleave_moe_layer_step ({step}) "
                                       "-th layer; only that layout is modelled: write a preset"])
    nope = int(d["no_rope_layer_interval"])
    rope_flags = d.get("no_rope_layers") or [int((i + 1) % nope != 0) for i in range(n)]
    if [int(x) for x in rope_flags[:n]] != [int((i + 1) % nope != 0) for i in range(n)]:
        raise PresetFileError(source, ["llama4: no_rope_layers is not a NoPE layer every no_rope_layer_interval "
                                       f"({nope}) layers; only that layout is modelled: write a preset"])
    if float(d.get("attention_dropout") or 0.0) > 0:
        raise PresetFileError(source, ["llama4: attention_dropout > 0 is not modelled; set it to 0.0"])
    out.update(
        num_experts=_get(d, source, "num_local_experts"),
        experts_per_token=_get(d, source, "num_experts_per_tok"),
        moe_intermediate_size=_get(d, source, "intermediate_size"),
        num_shared_experts=1,
        shared_expert_intermediate_size=_get(d, source, "intermediate_size"),
        moe_layer_interval=step,
        nope_layer_interval=nope if n >= nope else 0,
        attention_chunk_size=int(d.get("attention_chunk_size") or 0),
        qk_l2_norm=bool(d.get("use_qk_norm")),
        attn_temperature_tuning=bool(d.get("attn_temperature_tuning")),
    )
    return out


# Llama4VisionConfig's defaults (models/llama4/configuration_llama4.py), which the published vision_config fills
# what it leaves out from; Llama4ImageProcessor's max_patches (image_processing_llama4.py, 16: the published
# preprocessor_config.json says the same) is the processor's tile limit.
LLAMA4_VISION_DEFAULTS: dict[str, Any] = {
    "model_type": "llama4_vision_model", "hidden_size": 768, "hidden_act": "gelu", "num_hidden_layers": 34,
    "num_attention_heads": 16, "num_channels": 3, "intermediate_size": 5632, "vision_output_dim": 7680,
    "image_size": 448, "patch_size": 14, "pixel_shuffle_ratio": 0.5, "projector_input_dim": 4096,
    "projector_output_dim": 4096, "multi_modal_projector_bias": False, "projector_dropout": 0.0,
    "attention_dropout": 0.0, "vision_feature_layer": -1,
}
LLAMA4_MAX_PATCHES = 16


def llama4_vision(d: Mapping[str, Any], source: str) -> Any:
    """Llama4ForConditionalGeneration's image side (modeling_llama4.py Llama4VisionModel and
    Llama4MultiModalProjector) from a llama4 config.json's vision_config, as a VisionSpec (kind llama4). The
    config.json itself is read as the text model (Llama4ForCausalLM, what AutoModelForCausalLM builds); the presets
    llama-4-scout-vision / llama-4-maverick-vision carry this VisionSpec for the whole model."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    raw = d.get("vision_config")
    if not isinstance(raw, Mapping):
        raise PresetFileError(source, ["llama4: vision_config must be a JSON object"])
    vision = {**LLAMA4_VISION_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    problems = validate.check_keys(VISION_KEYS, {k: vision[k] for k in VISION_KEYS if k in vision})
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    ratio = vision["pixel_shuffle_ratio"]
    out_dim = vision["vision_output_dim"]
    if (vision["model_type"] != "llama4_vision_model" or vision["hidden_act"] != "gelu"
            or vision["num_channels"] != 3 or vision["multi_modal_projector_bias"] is not False
            or not isinstance(ratio, (int, float)) or ratio <= 0 or (1 / ratio) != int(1 / ratio)
            or vision["projector_input_dim"] != out_dim or vision["projector_output_dim"] != out_dim
            or vision["vision_feature_layer"] != -1 or vision["projector_dropout"] or vision["attention_dropout"]):
        raise PresetFileError(source, ["llama4: the vision_config Llama 4 publishes is modelled (llama4_vision_model, "
                                       "gelu on 3 channels, no projector bias, pixel_shuffle_ratio 1/n, "
                                       "projector_input_dim = projector_output_dim = vision_output_dim, feature layer "
                                       "-1, no dropout); this one differs"])
    try:
        return VisionSpec(
            kind="llama4", num_layers=vision["num_hidden_layers"], hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"], num_attention_heads=vision["num_attention_heads"],
            patch_size=vision["patch_size"], image_size=vision["image_size"], feature_layer=-1, drop_cls=True,
            projector_act="none", projector_bias=False, scale_factor=int(1 / ratio), vision_output_dim=out_dim,
            max_num_tiles=LLAMA4_MAX_PATCHES)
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None


def _gemma(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gemma.py: GeGLU (hidden_activation), RMSNorm (1 + w) in fp32, tied embeddings by default.
    out = _common(d, source, tie_default=True)
    out["norm_fp32_weight_mul"] = True
    return out


def _gemma2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gemma2.py: four RMSNorms per layer (pre/post attention, pre/post feed-forward);
    # even layers use the sliding window (layer_types in newer configs).
    out = _gemma(d, source)
    out["norms_per_layer"] = 4
    out.update(_window(d, out["num_layers"], default_pattern=2))
    return out


def _gemma3_text(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gemma3.py: Gemma 2 blocks plus per-head q_norm/k_norm; 5 local layers per global one.
    out = _gemma(d, source)
    out.update(norms_per_layer=4, qk_norm=True)
    out.update(_window(d, out["num_layers"], default_pattern=6))
    return out


def _phi(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_phi.py: one LayerNorm feeding attention and MLP in parallel; biases on q/k/v/dense,
    # fc1/fc2 and the LM head; resid_pdrop dropout.
    out = _common(d, source, tie_default=False)
    out.update(
        mlp="plain",
        norm="layernorm",
        norms_per_layer=1,
        parallel_residual=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        lm_head_bias=True,
        dropout=float(d.get("resid_pdrop") or 0.0),
    )
    # qk_layernorm (PhiAttention): q_layernorm and k_layernorm = LayerNorm(head_dim) with bias, shared by
    # the heads, applied per head.
    out["qk_norm"] = bool(d.get("qk_layernorm", False))
    return out


def _phi3(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_phi3.py: fused qkv_proj and gate_up_proj, RMSNorm, no biases.
    out = _common(d, source, tie_default=False)
    out.update(fused_qkv=True, fused_gate_up=True, dropout=float(d.get("resid_pdrop") or 0.0))
    out.update(_window(d, out["num_layers"]))
    return out


def _gpt2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gpt2.py: wte + wpe, fused c_attn, biases everywhere, plain MLP of n_inner (null: 4 * n_embd).
    out = _common(d, source, tie_default=True)
    out.update(
        mlp="plain",
        norm="layernorm",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        fused_qkv=True,
        learned_position_embeddings=True,
        dropout=float(d.get("resid_pdrop") or 0.0),
    )
    out["hidden_act"] = str(d.get("activation_function") or "gelu_new")
    return out


def _gpt_neox(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gpt_neox.py: fused query_key_value and dense with bias (attention_bias, default true),
    # dense_h_to_4h / dense_4h_to_h with bias, two LayerNorms, untied embed_out.
    out = _common(d, source, tie_default=False)
    bias = bool(d.get("attention_bias", True))
    out.update(
        mlp="plain",
        norm="layernorm",
        fused_qkv=True,
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=True,
        parallel_residual=bool(d.get("use_parallel_residual", True)),
    )
    return out


def _falcon(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_falcon.py: fused query_key_value; multi_query (one KV head) or new_decoder_architecture
    # (num_kv_heads, ln_attn + ln_mlp); bias on every Linear when `bias`; plain MLP 4 * hidden.
    out = _common(d, source, tie_default=True)
    heads = out["num_attention_heads"]
    if d.get("new_decoder_architecture"):
        kv = int(d.get("num_kv_heads") or heads)
        norms = int(d.get("num_ln_in_parallel_attn") or 2)
        parallel = True
    else:
        kv = 1 if d.get("multi_query", True) else heads
        parallel = bool(d.get("parallel_attn", True))
        norms = 1 if parallel else 2
    out.pop("num_kv_heads", None)
    if kv != heads:
        out["num_kv_heads"] = kv
    bias = bool(d.get("bias", False))
    out.update(
        mlp="plain",
        norm="layernorm",
        fused_qkv=True,
        parallel_residual=parallel,
        norms_per_layer=norms,
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        hidden_act="gelu",
    )
    out.setdefault("max_position_embeddings", 2048)  # FalconConfig default; rotary, so it adds no weights
    return out


def _olmo(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_olmo.py: OlmoLayerNorm has no weight or bias, so no norm parameters at all.
    out = _llama(d, source)
    out.update(norm="layernorm", norms_per_layer=0, final_norm=False)
    return out


def _starcoder2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_starcoder2.py: LayerNorm with bias, q/k/v/o and c_fc/c_proj biased when use_bias (default
    # true), plain GELU MLP, sliding window; residual_dropout on the block outputs.
    out = _common(d, source, tie_default=True)
    bias = bool(d.get("use_bias", True))
    out.update(
        mlp="plain",
        norm="layernorm",
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        dropout=float(d.get("residual_dropout") or 0.0),
    )
    out.update(_window(d, out["num_layers"]))
    return out


def _deepseek(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_deepseek_v2.py / modeling_deepseek_v3.py: multi-head latent attention; the first
    # first_k_dense_replace layers have a dense MLP of intermediate_size, the rest n_routed_experts of
    # moe_intermediate_size plus n_shared_experts folded into one MLP of n_shared * moe_intermediate_size.
    out = _common(d, source, tie_default=False)
    out.pop("num_kv_heads", None)  # MLA: num_key_value_heads equals the heads; K/V come from the latent
    out.pop("head_dim", None)
    out.update(
        attention_kind="mla",
        q_lora_rank=d.get("q_lora_rank") or None,
        kv_lora_rank=_get(d, source, "kv_lora_rank"),
        qk_nope_head_dim=_get(d, source, "qk_nope_head_dim"),
        qk_rope_head_dim=_get(d, source, "qk_rope_head_dim"),
        v_head_dim=_get(d, source, "v_head_dim"),
    )
    experts = int(d.get("n_routed_experts") or 0)
    if experts:
        if int(d.get("moe_layer_freq") or 1) != 1:
            raise PresetFileError(source, ["moe_layer_freq other than 1 is not modeled; write a preset"])
        out.update(
            num_experts=experts,
            experts_per_token=_get(d, source, "num_experts_per_tok"),
            moe_intermediate_size=_get(d, source, "moe_intermediate_size"),
            num_shared_experts=int(d.get("n_shared_experts") or 0),
            first_dense_layers=int(d.get("first_k_dense_replace") or 0),
            # DeepseekV3TopkRouter keeps e_score_correction_bias (checkpoint tensor) for noaux_tc.
            router_bias=d.get("topk_method") == "noaux_tc",
        )
        # The grouped router: DeepseekV3TopkRouter always groups (configuration_deepseek_v3.py: n_group 8,
        # topk_group 4 when the file leaves them out); DeepseekV2TopkRouter only with topk_method
        # "group_limited_greedy" (configuration_deepseek_v2.py: "greedy" by default, which ignores n_group)
        if d.get("model_type") == "deepseek_v3":
            out.update(expert_groups=int(d.get("n_group") or 8), topk_expert_groups=int(d.get("topk_group") or 4))
        elif d.get("topk_method") == "group_limited_greedy":
            out.update(expert_groups=_get(d, source, "n_group"), topk_expert_groups=_get(d, source, "topk_group"))
    return out


def _olmo2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_olmo2.py: Llama projections; q_norm = RMSNorm(heads * head_dim) and k_norm = RMSNorm(kv_heads *
    # head_dim) over the whole projections; the two block norms follow attention and MLP
    # (post_attention_layernorm, post_feedforward_layernorm), none precedes them.
    out = _llama(d, source)
    # Olmo2RMSNorm returns (weight * x_fp32).to(dtype): the weight multiplies in fp32, as Gemma's (1 + w).
    out.update(qk_norm=True, qk_norm_full=True, post_norms=True, norm_fp32_weight_mul=True)
    return out


def _gptj(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gptj.py: q/k/v/out_proj without bias, fc_in/fc_out with bias, one LayerNorm (ln_1) feeding
    # attention and MLP in parallel, lm_head with bias, untied; rotary on rotary_dim of each head (no weights);
    # n_inner null: 4 * n_embd; activation_function gelu_new.
    out = _common(d, source, tie_default=False)
    out.update(
        mlp="plain",
        norm="layernorm",
        norms_per_layer=1,
        parallel_residual=True,
        mlp_bias=True,
        lm_head_bias=True,
        hidden_act=str(d.get("activation_function") or "gelu_new"),
        dropout=float(d.get("resid_pdrop") or 0.0),
    )
    return out


def _gpt_bigcode(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_gpt_bigcode.py: GPT-2 blocks (wte + wpe, LayerNorms, biases everywhere, plain MLP of n_inner,
    # null: 4 * n_embd) with a fused c_attn of embed_dim + 2 * head_dim when multi_query (default true): one
    # key/value head.
    out = _gpt2(d, source)
    out["hidden_act"] = str(d.get("activation_function") or "gelu_pytorch_tanh")
    if d.get("multi_query", True):
        out["num_kv_heads"] = 1
    return out


def _bloom(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_bloom.py: word_embeddings_layernorm after the embedding; query_key_value and dense with bias;
    # dense_h_to_4h (4 * hidden) and dense_4h_to_h with bias; two LayerNorms per block; ln_f; tied head;
    # ALiBi (no position weights) in an eager-only attention (baddbmm of the bias, fp32 softmax).
    out = _common(d, source, tie_default=True)
    out.update(
        mlp="plain",
        norm="layernorm",
        fused_qkv=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        embedding_norm=True,
        alibi=True,
        hidden_act="gelu",  # BloomGelu: GeLUFunction saves its input once, as an ATen gelu does
        intermediate_size=4 * out["hidden_size"],
        dropout=float(d.get("hidden_dropout") or 0.0),
    )
    out.pop("max_position_embeddings", None)  # ALiBi: no learned positions
    return out


# --- Encoders (memory/encoder.py) -------------------------------------------------------------------------
# Post-LayerNorm blocks with biases on every Linear, a plain GELU MLP, learned absolute positions, an
# embedding LayerNorm and no final norm; the head (pooler + classifier, or the masked-LM head) is the run's
# --head. Dropout: hidden_dropout_prob on the embeddings and both residual branches.
_ENCODER_SHAPE: dict[str, Any] = {
    "mlp": "plain", "norm": "layernorm", "norms_per_layer": 2, "post_norms": True, "final_norm": False,
    "qkv_bias": True, "o_bias": True, "mlp_bias": True, "learned_position_embeddings": True,
    "embedding_norm": True, "tie_word_embeddings": True,
}


def _bert(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_bert.py BertEmbeddings (word, position, token_type, LayerNorm), BertLayer (query, key, value,
    # attention.output.dense, intermediate.dense, output.dense, two LayerNorms); configuration_bert.py defaults:
    # gelu, max_position_embeddings 512, type_vocab_size 2, dropout 0.1. RoBERTa / XLM-R (modeling_roberta.py,
    # modeling_xlm_roberta.py) are the same tensors with their own defaults (514 positions, 1 token type).
    out = _common(d, source, tie_default=True)
    out.update(_ENCODER_SHAPE)
    out["hidden_act"] = str(d.get("hidden_act") or "gelu")
    out["max_position_embeddings"] = int(_get(d, source, "max_position_embeddings", default=512))
    out["type_vocab_size"] = int(_get(d, source, "type_vocab_size", default=2))
    out["dropout"] = float(_get(d, source, "hidden_dropout_prob", default=0.1))
    return out


def _distilbert(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_distilbert.py: Embeddings (word, position, LayerNorm; no token types), TransformerBlock (q_lin,
    # k_lin, v_lin, out_lin, sa_layer_norm, ffn.lin1, ffn.lin2, output_layer_norm); configuration_distilbert.py
    # defaults: dim 768, n_layers 6, n_heads 12, hidden_dim 3072, gelu, dropout 0.1, 512 positions.
    # DistilBertConfig.attribute_map: hidden_size -> dim, num_attention_heads -> n_heads, num_hidden_layers -> n_layers.
    hidden = int(_get(d, source, "hidden_size", "dim", default=768))
    out: dict[str, Any] = {
        "vocab_size": _get(d, source, "vocab_size"), "hidden_size": hidden,
        "num_layers": int(_get(d, source, "num_hidden_layers", "n_layers", default=6)),
        "num_attention_heads": int(_get(d, source, "num_attention_heads", "n_heads", default=12)),
        "intermediate_size": int(_get(d, source, "hidden_dim", default=4 * hidden)),
        "hidden_act": str(d.get("activation") or "gelu"),
        "max_position_embeddings": int(_get(d, source, "max_position_embeddings", default=512)),
        "dropout": float(_get(d, source, "dropout", default=0.1)),
    }
    out.update(_ENCODER_SHAPE)
    return out


def _modernbert(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_modernbert.py / configuration_modernbert.py (transformers 5.24): ModernBertEmbeddings (tok_embeddings,
    # a LayerNorm, no positions, no token types), ModernBertEncoderLayer (attn_norm, nn.Identity in layer 0; Wqkv
    # fused q/k/v; Wo; mlp_norm; Wi hidden -> 2 x intermediate, GeGLU act(input) * gate; Wo), final_norm, RoPE with
    # a global and a local theta (no parameters), LayerNorms without bias (norm_bias false), no Linear biases
    # (attention_bias, mlp_bias false). Layer i is global when i % global_attn_every_n_layers == 0 (layer_types),
    # the others attend within config.sliding_window = local_attention // 2 positions each side.
    out = _common(d, source, tie_default=True)
    out.update({"mlp": "gated", "fused_gate_up": True, "fused_qkv": True, "norm": "layernorm", "norms_per_layer": 2,
                "final_norm": True, "embedding_norm": True, "learned_position_embeddings": False,
                "norm_without_bias": not _get(d, source, "norm_bias", default=False),
                "qkv_bias": bool(_get(d, source, "attention_bias", default=False)),
                "o_bias": bool(_get(d, source, "attention_bias", default=False)),
                "mlp_bias": bool(_get(d, source, "mlp_bias", default=False)),
                "max_position_embeddings": int(_get(d, source, "max_position_embeddings", default=8192)),
                "hidden_act": str(_get(d, source, "hidden_activation", default="gelu")),
                "mean_pooling": _get(d, source, "classifier_pooling", default="cls") == "mean"})
    out["intermediate_size"] = int(_get(d, source, "intermediate_size", default=1152))
    # What changes memory and is not modelled is refused, never ignored (every published ModernBERT config has
    # these at the defaults): dropout (masks), a biased or differently activated head, a pooling other than cls/mean.
    problems = [f"{k} {d[k]} is not modelled for ModernBERT (dropout masks); use 0.0" for k in
                ("embedding_dropout", "mlp_dropout", "attention_dropout", "classifier_dropout") if d.get(k)]
    if d.get("classifier_bias"):
        problems.append("classifier_bias true is not modelled for ModernBERT (ModernBertPredictionHead.dense); "
                        "use false")
    act = d.get("classifier_activation")
    if act is not None and act != out["hidden_act"]:
        problems.append(f"classifier_activation {act!r} differs from hidden_activation {out['hidden_act']!r}; "
                        "ModernBERT's head is modelled with the blocks' activation")
    if d.get("classifier_pooling", "cls") not in ("cls", "mean"):
        problems.append(f"classifier_pooling {d['classifier_pooling']!r} is not 'cls' or 'mean'")
    if problems:
        raise PresetFileError(source, problems)
    n_layers = int(out["num_layers"])
    local = int(_get(d, source, "local_attention", default=128))
    every = int(_get(d, source, "global_attn_every_n_layers", default=3))
    layer_types = d.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == n_layers:
        sliding = sum(1 for t in layer_types if t == "sliding_attention")
    else:
        sliding = sum(1 for i in range(n_layers) if i % every)
    out["sliding_window"] = local // 2
    out["sliding_window_layers"] = sliding
    return out


def _deberta_v2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # modeling_deberta_v2.py / configuration_deberta_v2.py (transformers 5.24), DeBERTa-v2 and v3:
    # DebertaV2Embeddings (word_embeddings; position_embeddings only when position_biased_input, false in every v3
    # config; token_type_embeddings only when type_vocab_size > 0, 0 in v3; a LayerNorm), DebertaV2Layer (BERT's:
    # query_proj, key_proj, value_proj with bias, attention.output.dense, intermediate.dense, output.dense, two
    # post-LayerNorms), DebertaV2Encoder.rel_embeddings (2 x position_buckets rows, or 2 x max_relative_positions
    # without buckets) and its LayerNorm (norm_rel_ebd "layer_norm"). ContextPooler (dense pooler_hidden_size^2 with
    # bias) + classifier for sequence classification; the classifier alone for token classification.
    out = _common(d, source, tie_default=True)
    out.update(_ENCODER_SHAPE)
    hidden, heads = int(out["hidden_size"]), int(out["num_attention_heads"])
    out["hidden_act"] = str(d.get("hidden_act") or "gelu")
    max_pos = int(_get(d, source, "max_position_embeddings", default=512))
    out["max_position_embeddings"] = max_pos
    out["learned_position_embeddings"] = bool(_get(d, source, "position_biased_input", default=True))
    out["type_vocab_size"] = int(_get(d, source, "type_vocab_size", default=0))
    out["dropout"] = float(_get(d, source, "hidden_dropout_prob", default=0.1))
    problems: list[str] = []
    ints: dict[str, int] = {}
    for key in ("position_buckets", "max_relative_positions"):  # -1 is the library's "none" for both
        value = d.get(key, -1)
        if value is None:
            value = -1
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key} must be an integer (-1: none), got {value!r}")
        ints[key] = value if isinstance(value, int) else -1
    pos_att = d.get("pos_att_type") or []
    if isinstance(pos_att, str):  # DebertaV2Config.__post_init__: "p2c|c2p" -> ["p2c", "c2p"]
        pos_att = [x.strip() for x in pos_att.lower().split("|")]
    if not isinstance(pos_att, list) or not all(isinstance(x, str) for x in pos_att):
        problems.append(f"pos_att_type must be a string such as 'p2c|c2p' or a list of them, got {pos_att!r}")
        pos_att = []
    norm_rel = [x.strip() for x in str(d.get("norm_rel_ebd") or "none").lower().split("|")]
    # What changes the parameters and is not modelled is refused, never ignored (every published v3 config is the
    # modelled shape; deberta-v2-xlarge / xxlarge's ConvLayer is not).
    if not _get(d, source, "relative_attention", default=False):
        problems.append("relative_attention false is not modelled for DeBERTa-v2 (every v3 config sets it true)")
    if "layer_norm" not in norm_rel:
        problems.append(f"norm_rel_ebd {d.get('norm_rel_ebd')!r} is not modelled; DeBERTa-v3 uses 'layer_norm'")
    if not d.get("share_att_key", False) and {"c2p", "p2c"} & set(pos_att):
        problems.append("share_att_key false (separate pos_key_proj / pos_query_proj) is not modelled; "
                        "DeBERTa-v3 shares them (share_att_key true)")
    if d.get("conv_kernel_size"):
        problems.append(f"conv_kernel_size {d['conv_kernel_size']} (DeBERTa-v2's ConvLayer) is not modelled; "
                        "use 0 as DeBERTa-v3 does")
    # The activations (core/memory/deberta.py) assume both position terms, the ContextPooler's dropout off (its dense
    # then saves a view of the last hidden state) and one dropout rate for attention and hidden states
    if set(pos_att) != {"c2p", "p2c"}:
        problems.append(f"pos_att_type {d.get('pos_att_type')!r} is not modelled; DeBERTa-v3 uses 'p2c|c2p'")
    if d.get("pooler_dropout") not in (None, 0, 0.0):
        problems.append(f"pooler_dropout {d['pooler_dropout']!r} is not modelled; DeBERTa-v3 uses 0")
    attn_drop = d.get("attention_probs_dropout_prob")
    if attn_drop is not None and attn_drop != _get(d, source, "hidden_dropout_prob", default=0.1):
        problems.append(f"attention_probs_dropout_prob {attn_drop!r} differs from hidden_dropout_prob; only one "
                        "dropout rate is modelled (DeBERTa-v3 uses 0.1 for both)")
    for key, value in (("embedding_size", d.get("embedding_size")), ("pooler_hidden_size", d.get("pooler_hidden_size")),
                       ("attention_head_size x num_attention_heads",
                        None if d.get("attention_head_size") is None else d["attention_head_size"] * heads)):
        if value is not None and value != hidden:
            problems.append(f"{key} {value} differs from hidden_size {hidden}; only hidden_size is modelled")
    if problems:
        raise PresetFileError(source, problems)
    relative = ints["max_relative_positions"] if ints["max_relative_positions"] >= 1 else max_pos
    out["rel_embedding_rows"] = 2 * (ints["position_buckets"] if ints["position_buckets"] > 0 else relative)
    return out


# --- Encoder-decoders (memory/seq2seq.py) --------------------------------------------------------------------
def _t5(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_t5.py / configuration_mt5.py: d_model, d_kv, d_ff, num_layers, num_decoder_layers (default
    # num_layers), num_heads, relative_attention_num_buckets 32, dropout_rate 0.1, feed_forward_proj "relu"
    # (T5) or "gated-gelu" (mT5; "gated-gelu" runs gelu_new). T5Config / MT5Config force tie_word_embeddings=True
    # (lm_head is the shared embedding in transformers 5); T5 scales the decoder output by d_model**-0.5 unless
    # the config.json says tie_word_embeddings false (scale_decoder_outputs); mT5 never scales.
    # T5Config.attribute_map: hidden_size -> d_model, num_attention_heads -> num_heads, num_hidden_layers ->
    # num_layers, head_dim -> d_kv (the generic names, when a config.json has them, set the T5 ones).
    model_type = d.get("model_type")
    hidden = int(_get(d, source, "hidden_size", "d_model", default=512))
    heads = int(_get(d, source, "num_attention_heads", "num_heads", default=8))
    n_enc = int(_get(d, source, "num_hidden_layers", "num_layers", default=6))
    proj = str(_get(d, source, "feed_forward_proj", default="gated-gelu" if model_type == "mt5" else "relu"))
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise PresetFileError(source, [f"feed_forward_proj {proj!r} is not 'ACT' or 'gated-ACT' (configuration_t5.py)"])
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    rate = float(_get(d, source, "dropout_rate", default=0.1))
    out: dict[str, Any] = {
        "vocab_size": int(_get(d, source, "vocab_size", default=32128 if model_type == "t5" else 250112)),
        "hidden_size": hidden, "num_layers": n_enc, "num_attention_heads": heads,
        "decoder_layers": int(_get(d, source, "num_decoder_layers", default=n_enc)),
        "intermediate_size": int(_get(d, source, "d_ff", default=2048)),
        "relative_attention_buckets": int(_get(d, source, "relative_attention_num_buckets", default=32)),
        "mlp": "gated" if parts[0] == "gated" and len(parts) == 2 else "plain", "hidden_act": act,
        "norm": "rmsnorm", "norms_per_layer": 2, "final_norm": True, "tie_word_embeddings": True,
        "decoder_output_scale": model_type == "t5" and d.get("tie_word_embeddings") is not False,
        "dropout": rate, "attention_dropout": rate, "activation_dropout": rate,
    }
    d_kv = int(_get(d, source, "head_dim", "d_kv", default=64))
    if d_kv * heads != hidden:
        out["head_dim"] = d_kv
    return out


def _bart(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_bart.py / configuration_mbart.py: d_model, encoder_layers / decoder_layers (12), the
    # encoder's and decoder's heads and ffn widths (16, 4096), max_position_embeddings 1024, activation_function
    # gelu, dropout 0.1, attention_dropout and activation_dropout 0.0; scale_embedding multiplies the embedding
    # output (no memory of its own). BART blocks are post-LayerNorm with no final norm; mBART's are pre-LayerNorm
    # with a final layer_norm per stack (modeling_mbart.py).
    def same(enc: str, dec: str, default: int) -> int:
        a, b = int(_get(d, source, enc, default=default)), int(_get(d, source, dec, default=default))
        if a != b:
            raise PresetFileError(source, [f"{enc} {a} differs from {dec} {b}: vramcalc models encoder-decoders "
                                           "whose two stacks have the same width"])
        return a

    # BartConfig / MBartConfig.attribute_map: hidden_size -> d_model, num_attention_heads ->
    # encoder_attention_heads, num_hidden_layers -> encoder_layers.
    mbart = d.get("model_type") == "mbart"
    d = {**d, **{new: d[old] for old, new in (("num_attention_heads", "encoder_attention_heads"),
                                               ("num_hidden_layers", "encoder_layers")) if d.get(old) is not None}}
    return {
        "vocab_size": int(_get(d, source, "vocab_size")),
        "hidden_size": int(_get(d, source, "hidden_size", "d_model", default=1024)),
        "num_layers": int(_get(d, source, "encoder_layers", default=12)),
        "decoder_layers": int(_get(d, source, "decoder_layers", default=12)),
        "num_attention_heads": same("encoder_attention_heads", "decoder_attention_heads", 16),
        "intermediate_size": same("encoder_ffn_dim", "decoder_ffn_dim", 4096),
        "max_position_embeddings": int(_get(d, source, "max_position_embeddings", default=1024)),
        "hidden_act": str(_get(d, source, "activation_function", default="gelu")),
        "mlp": "plain", "norm": "layernorm", "norms_per_layer": 2, "post_norms": not mbart, "final_norm": mbart,
        "qkv_bias": True, "o_bias": True, "mlp_bias": True, "learned_position_embeddings": True,
        "embedding_norm": True, "tie_word_embeddings": True, "final_logits_bias": True,
        "dropout": float(_get(d, source, "dropout", default=0.1)),
        "attention_dropout": float(_get(d, source, "attention_dropout", default=0.0)),
        "activation_dropout": float(_get(d, source, "activation_dropout", default=0.0)),
    }


# --- State-space models (memory/ssm.py) ---------------------------------------------------------------------
def _mamba(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_mamba.py MambaConfig: intermediate_size = expand * hidden_size, time_step_rank "auto" ->
    # ceil(hidden_size / 16); defaults state_size 16, conv_kernel 4, use_bias False, use_conv_bias True,
    # residual_in_fp32 True, tie_word_embeddings True. The published state-spaces/mamba-*-hf configs name d_model /
    # n_layer (attribute aliases of the original checkpoints) beside hidden_size / num_hidden_layers.
    hidden = int(_get(d, source, "hidden_size", "d_model"))
    rank = d.get("time_step_rank", "auto")
    if rank == "auto" or rank is None:
        rank = -(-hidden // 16)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise PresetFileError(source, ["time_step_rank: Input should be 'auto' or a positive integer, got "
                                       f"{rank!r:.40}"])
    return {
        "vocab_size": _get(d, source, "vocab_size"),
        "hidden_size": hidden,
        "num_layers": int(_get(d, source, "num_hidden_layers", "n_layer")),
        "intermediate_size": int(_get(d, source, "intermediate_size", default=int(_get(d, source, "expand",
                                                                                         default=2)) * hidden)),
        "ssm_state_size": int(_get(d, source, "state_size", "d_state", default=16)),
        "ssm_conv_kernel": int(_get(d, source, "conv_kernel", "d_conv", default=4)),
        "ssm_dt_rank": int(rank),
        "ssm_conv_bias": bool(_get(d, source, "use_conv_bias", "conv_bias", default=True)),
        "ssm_proj_bias": bool(_get(d, source, "use_bias", default=False)),
        "ssm_residual_fp32": bool(_get(d, source, "residual_in_fp32", default=True)),
        "tie_word_embeddings": bool(_get(d, source, "tie_word_embeddings", default=True)),
        "norms_per_layer": 1,
        "hidden_act": str(d.get("hidden_act") or "silu"),
    }


def _mamba2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_mamba2.py Mamba2Config: defaults num_heads 128, head_dim 64, state_size 128, expand 2,
    # conv_kernel 4, n_groups 8, chunk_size 256, use_bias False, use_conv_bias True, residual_in_fp32 True,
    # tie_word_embeddings False; intermediate = expand x hidden_size must equal num_heads x head_dim
    # (validate_architecture). Mamba2Mixer ignores intermediate_size and time_step_rank (no dt_proj).
    hidden = int(_get(d, source, "hidden_size", "d_model"))
    expand = int(_get(d, source, "expand", default=2))
    heads = int(_get(d, source, "num_heads", default=128))
    head_dim = int(_get(d, source, "head_dim", default=64))
    if hidden * expand != heads * head_dim:
        raise PresetFileError(source, [f"num_heads x head_dim ({heads} x {head_dim}) must equal expand x hidden_size "
                                       f"({expand} x {hidden}), as Mamba2Config requires"])
    return {
        "vocab_size": _get(d, source, "vocab_size", default=32768),
        "hidden_size": hidden,
        "num_layers": int(_get(d, source, "num_hidden_layers", "n_layer", default=64)),
        "intermediate_size": expand * hidden,
        "ssm_state_size": int(_get(d, source, "state_size", default=128)),
        "ssm_conv_kernel": int(_get(d, source, "conv_kernel", default=4)),
        "ssm_head_dim": head_dim,
        "ssm_n_groups": int(_get(d, source, "n_groups", default=8)),
        "ssm_chunk_size": int(_get(d, source, "chunk_size", default=256)),
        "ssm_conv_bias": bool(_get(d, source, "use_conv_bias", default=True)),
        "ssm_proj_bias": bool(_get(d, source, "use_bias", default=False)),
        "ssm_residual_fp32": bool(_get(d, source, "residual_in_fp32", default=True)),
        "tie_word_embeddings": bool(_get(d, source, "tie_word_embeddings", default=False)),
        "norms_per_layer": 1,
        "hidden_act": str(d.get("hidden_act") or "silu"),
    }


def _mamba2_hybrid_shape(d: Mapping[str, Any], out: dict[str, Any]) -> None:
    """FalconH1Config's and BambaConfig's shared shape defaults (the same in both files): hidden 4096, intermediate
    14336, 32 layers, 32 heads, 8 KV heads, vocabulary 128000."""
    for key, default in (("hidden_size", 4096), ("intermediate_size", 14336), ("num_layers", 32),
                         ("num_attention_heads", 32), ("vocab_size", 128000)):
        out.setdefault(key, default)
    if "num_key_value_heads" not in d and out["num_attention_heads"] != 8:
        out["num_kv_heads"] = 8  # num_key_value_heads 8 in both configs


def _falcon_h1(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_falcon_h1.py FalconH1Config: defaults hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV
    # heads, vocab 128000, untied; mamba_d_ssm 1024 (None: mamba_expand (2) x hidden_size), mamba_n_heads 128,
    # mamba_d_head "auto" (= mamba_d_ssm / mamba_n_heads), mamba_n_groups 1, mamba_d_state 256, mamba_d_conv 4,
    # mamba_chunk_size 256, mamba_conv_bias true, mamba_proj_bias false, mamba_rms_norm false, projectors_bias
    # false, attention_bias and mlp_bias false. FalconH1Attention's head_dim is config.head_dim when the file has
    # one (getattr), else hidden / heads. The muP multipliers scale tensors without adding weights.
    out = _common(d, source, tie_default=False)
    _mamba2_hybrid_shape(d, out)
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    out["mlp_bias"] = bool(d.get("mlp_bias", False))
    hidden = int(out["hidden_size"])
    d_ssm = d.get("mamba_d_ssm", 1024)
    inter = int(d_ssm) if d_ssm is not None else int(_get(d, source, "mamba_expand", default=2)) * hidden
    heads, head_dim = _mamba2_heads(d, source, inter, "the mixer's width (mamba_d_ssm)", "FalconH1Config")
    out.update(
        mixer_intermediate_size=inter, mixer_state_size=int(_get(d, source, "mamba_d_state", default=256)),
        mixer_head_dim=head_dim, ssm_conv_kernel=int(_get(d, source, "mamba_d_conv", default=4)),
        ssm_n_groups=int(_get(d, source, "mamba_n_groups", default=1)),
        ssm_chunk_size=int(_get(d, source, "mamba_chunk_size", default=256)),
        ssm_conv_bias=bool(_get(d, source, "mamba_conv_bias", default=True)),
        ssm_proj_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
        mixer_gated_norm=bool(_get(d, source, "mamba_rms_norm", default=False)),
        mixer_out_bias=bool(_get(d, source, "projectors_bias", default=False)),
    )
    return out


def _jamba(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_jamba.py JambaConfig: defaults vocab 65536, hidden 4096, intermediate 14336, 32 layers, 32 heads,
    # 8 KV heads (None: the heads), untied, num_experts 16, num_experts_per_tok 2, expert_layer_period 2 / offset 1,
    # attn_layer_period 8 / offset 4, mamba_d_state 16, mamba_d_conv 4, mamba_expand 2, mamba_dt_rank "auto" (=
    # ceil(hidden_size / 16)), mamba_conv_bias true, mamba_proj_bias false. JambaAttention has no bias and no rotary
    # embedding; its head_dim is config.head_dim when present (getattr), else hidden / heads. use_mamba_kernels is
    # deprecated and has no effect (JambaMambaMixer.__init__).
    out = _common(d, source, tie_default=False)
    out["intermediate_size"] = int(_get(d, source, "intermediate_size", default=14336))
    if "num_key_value_heads" not in d and out["num_attention_heads"] != 8:
        out["num_kv_heads"] = 8  # JambaConfig num_key_value_heads 8
    hidden = int(out["hidden_size"])
    rank = d.get("mamba_dt_rank", "auto")
    if rank == "auto" or rank is None:
        rank = -(-hidden // 16)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise PresetFileError(source, ["mamba_dt_rank: Input should be 'auto' or a positive integer, got "
                                       f"{rank!r:.40}"])
    experts = int(_get(d, source, "num_experts", "num_local_experts", default=16))
    if d.get("use_mambapy"):
        raise PresetFileError(source, ["use_mambapy true: mamba.py's parallel scan (pscan) is not modelled; drop the "
                                       "key (the default, false, runs the sequential scan)"])
    out.update(
        attn_layer_period=int(_get(d, source, "attn_layer_period", default=8)),
        attn_layer_offset=int(_get(d, source, "attn_layer_offset", default=4)),
        expert_layer_period=int(_get(d, source, "expert_layer_period", default=2)),
        expert_layer_offset=int(_get(d, source, "expert_layer_offset", default=1)),
        num_experts=experts if experts > 1 else 0,  # layers_num_experts: 1 builds JambaMLP everywhere
        experts_per_token=int(_get(d, source, "num_experts_per_tok", default=2)) if experts > 1 else 0,
        jamba_mixer_size=int(_get(d, source, "mamba_expand", default=2)) * hidden,
        jamba_state_size=int(_get(d, source, "mamba_d_state", default=16)),
        ssm_conv_kernel=int(_get(d, source, "mamba_d_conv", default=4)), ssm_dt_rank=rank,
        ssm_conv_bias=bool(_get(d, source, "mamba_conv_bias", default=True)),
        ssm_proj_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
        qkv_bias=False, o_bias=False, mlp_bias=False,
    )
    return out


def _mamba2_heads(d: Mapping[str, Any], source: str, inter: int, width: str, config: str) -> tuple[int, int]:
    """A Mamba-2 mixer's heads and head size as FalconH1Config, BambaConfig and GraniteMoeHybridConfig define them:
    the mixer's width `inter` (`width` says how the file sets it) split into mamba_n_heads of mamba_d_head ("auto": the
    quotient); and the scan's clamp, counted for its default only."""
    heads = int(_get(d, source, "mamba_n_heads", default=128))
    head_dim = d.get("mamba_d_head", "auto")
    head_dim = inter // heads if head_dim in (None, "auto") else head_dim
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or heads * head_dim != inter:
        raise PresetFileError(source, [f"mamba_n_heads x mamba_d_head ({heads} x {head_dim}) must equal {width} "
                                       f"({inter}), as {config} requires"])
    limit = d.get("time_step_limit")
    if limit is not None and (not isinstance(limit, list) or limit != [0.0, float("inf")]):
        raise PresetFileError(source, [f"time_step_limit {limit}: the scan's clamp is counted for the default "
                                       "(0, inf) only; drop the key"])
    return heads, head_dim


def _bamba(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_bamba.py BambaConfig: defaults hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV heads,
    # vocab 128000, untied; attn_layer_indices None (every layer a mixer); mamba_n_heads 128, mamba_d_head "auto"
    # (= mamba_expand x hidden / mamba_n_heads), mamba_n_groups 1, mamba_d_state 256, mamba_d_conv 4, mamba_expand 2,
    # mamba_chunk_size 256, mamba_conv_bias true, mamba_proj_bias false, attention_bias and mlp_bias false,
    # z_loss_coefficient 0. BambaMixer's width is mamba_expand x hidden (no mamba_d_ssm); its gated norm
    # (BambaRMSNormGated) is always there; out_proj's bias is mamba_proj_bias (modeling_bamba.py BambaMixer).
    out = _common(d, source, tie_default=False)
    _mamba2_hybrid_shape(d, out)
    if "head_dim" in d:  # BambaAttention: getattr(config, "head_dim", hidden // heads); BambaConfig has no such field
        raise PresetFileError(source, ["head_dim: BambaConfig has no head_dim field (attention uses hidden_size / "
                                       "num_attention_heads); drop the key"])
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    out["mlp_bias"] = bool(d.get("mlp_bias", False))
    hidden, n_layers = int(out["hidden_size"]), int(out["num_layers"])
    inter = int(_get(d, source, "mamba_expand", default=2)) * hidden
    heads, head_dim = _mamba2_heads(d, source, inter, "mamba_expand x hidden_size", "BambaConfig")
    z_loss = d.get("z_loss_coefficient")
    if z_loss not in (None, 0, 0.0):
        raise PresetFileError(source, [f"z_loss_coefficient {z_loss}: BambaForCausalLM's z-loss (a logsumexp over the "
                                       "logits) is not modelled; set it to 0"])
    attn = d.get("attn_layer_indices") or []
    if any(not 0 <= i < n_layers for i in attn):
        raise PresetFileError(source, [f"attn_layer_indices {list(attn)}: every index must be below num_hidden_layers "
                                       f"{n_layers}"])
    out.update(
        norms_per_layer=2,  # input_layernorm, pre_ff_layernorm
        attention_layers=tuple(sorted(set(attn))),
        mixer_intermediate_size=inter, mixer_state_size=int(_get(d, source, "mamba_d_state", default=256)),
        mixer_head_dim=head_dim, ssm_conv_kernel=int(_get(d, source, "mamba_d_conv", default=4)),
        ssm_n_groups=int(_get(d, source, "mamba_n_groups", default=1)),
        ssm_chunk_size=int(_get(d, source, "mamba_chunk_size", default=256)),
        ssm_conv_bias=bool(_get(d, source, "mamba_conv_bias", default=True)),
        ssm_proj_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
        mixer_gated_norm=True,
        mixer_out_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
    )
    return out


def _zamba2(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_zamba2.py Zamba2Config: defaults vocab 32000, hidden 2560, 54 layers, 32 heads (KV heads = heads),
    # intermediate_size None (= 4 x hidden), hidden_act "gelu", tied, mamba_d_state 64, mamba_d_conv 4, mamba_expand 2,
    # mamba_ngroups 1, n_mamba_heads 8, chunk_size 256, add_bias_linear false, num_mem_blocks 1, adapter_rank 128,
    # use_shared_attention_adapter false, use_mem_rope false, layers_block_type None (the 2.7B's 54-layer pattern).
    # __post_init__ derives attention_hidden_size = 2 x hidden, attention_head_dim = 2 x hidden / heads, mamba_headdim
    # = mamba_expand x hidden / n_mamba_heads and hybrid_layer_ids (the "hybrid" entries); a config.json repeats them,
    # so a value that disagrees is refused. Zamba2MambaMixer: conv1d always has a bias (use_conv_bias is not read),
    # in_proj and out_proj have one with add_bias_linear, as do Zamba2MLP's gate_up_proj and down_proj.
    out = _common(d, source, tie_default=True)
    for key, default in (("hidden_size", 2560), ("num_layers", 54), ("num_attention_heads", 32),
                         ("vocab_size", 32000)):
        out.setdefault(key, default)
    hidden, heads = int(out["hidden_size"]), int(out["num_attention_heads"])
    out["intermediate_size"] = int(_get(d, source, "intermediate_size", default=4 * hidden))
    kinds = d.get("layers_block_type") or d.get("layer_types")
    if kinds is None:  # Zamba2Config's default layout (Zamba2-2.7B)
        kinds = (["mamba"] + (["mamba"] * 5 + ["hybrid"]) * 7 + ["mamba"] * 4 + ["hybrid"] + ["mamba"] * 3
                 + ["hybrid"] + ["mamba"] * 2)
    n_layers = len(kinds)  # Zamba2Model.get_layers builds one layer per entry
    bad = sorted({k for k in kinds if k not in ("mamba", "linear_attention", "hybrid")})
    if bad or ("num_hidden_layers" in d and d["num_hidden_layers"] != n_layers):
        unknown = ", unknown " + ", ".join(map(repr, bad)) if bad else ""
        raise PresetFileError(source, [f"layers_block_type: {out['num_layers']} entries of \"mamba\" or \"hybrid\" "
                                       f"are needed (got {n_layers}{unknown})"])
    hybrid = tuple(i for i, k in enumerate(kinds) if k == "hybrid")
    inter = int(_get(d, source, "mamba_expand", default=2)) * hidden
    mamba_heads = int(_get(d, source, "n_mamba_heads", default=8))
    derived = {"attention_hidden_size": 2 * hidden, "attention_head_dim": 2 * hidden // heads,
               "mamba_headdim": inter // mamba_heads, "hybrid_layer_ids": list(hybrid)}
    wrong = [f"{k} {d[k]!r:.60} (Zamba2Config derives {v!r:.60})" for k, v in derived.items()
             if d.get(k) is not None and d[k] != v]
    if inter % mamba_heads or 2 * hidden % heads or wrong:
        raise PresetFileError(source, ["Zamba2's shapes are derived from hidden_size, mamba_expand, n_mamba_heads and "
                                       "num_attention_heads (mamba_expand x hidden_size must be a multiple of "
                                       "n_mamba_heads, 2 x hidden_size of the heads); "
                                       + ("; ".join(wrong) + ": drop the key" if wrong else "they are not")])
    if "head_dim" in d and d["head_dim"] != 2 * hidden // heads:
        raise PresetFileError(source, [f"head_dim {d['head_dim']}: Zamba2's attention head_dim is 2 x hidden_size / "
                                       f"num_attention_heads = {2 * hidden // heads}; drop the key"])
    attention_adapters = bool(d.get("use_shared_attention_adapter", False))
    kv = d.get("num_key_value_heads")
    if attention_adapters and kv not in (None, heads):
        raise PresetFileError(source, [f"num_key_value_heads {kv} with use_shared_attention_adapter: Zamba2Attention "
                                       "adds a 2 x hidden_size wide adapter output to k_proj's and v_proj's, which "
                                       "fails unless the KV heads are the heads"])
    bias = bool(d.get("add_bias_linear", False))
    out.update(
        num_layers=n_layers, head_dim=2 * hidden // heads, norms_per_layer=1,
        hidden_act=str(d.get("hidden_act") or "gelu"), mlp="gated", fused_gate_up=True,
        qkv_bias=False, o_bias=False, mlp_bias=bias,
        mixer_intermediate_size=inter, mixer_state_size=int(_get(d, source, "mamba_d_state", default=64)),
        mixer_head_dim=inter // mamba_heads, ssm_conv_kernel=int(_get(d, source, "mamba_d_conv", default=4)),
        ssm_n_groups=int(_get(d, source, "mamba_ngroups", default=1)),
        ssm_chunk_size=int(_get(d, source, "chunk_size", default=256)),
        ssm_conv_bias=True, ssm_proj_bias=bias, mixer_gated_norm=True, mixer_out_bias=bias,
        zamba_hybrid_layers=hybrid, zamba_mem_blocks=int(_get(d, source, "num_mem_blocks", default=1)),
        zamba_adapter_rank=int(_get(d, source, "adapter_rank", default=128)),
        zamba_attention_adapters=attention_adapters, zamba_mem_rope=bool(d.get("use_mem_rope", False)),
    )
    if d.get("use_long_context"):  # Zamba2Config: max_position_embeddings 16384 (the context-extended RoPE)
        out["max_position_embeddings"] = 16384
    return out


def _granitemoehybrid(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_granitemoehybrid.py GraniteMoeHybridConfig: defaults hidden 4096, 32 layers, 32 heads (KV heads
    # = heads), vocab 32000, untied, shared_intermediate_size 1024, num_local_experts 8, position_embedding_type None
    # (no RoPE), layer_types None (every layer "linear_attention", i.e. a mixer), mamba_n_heads 128, mamba_d_head
    # "auto" (= mamba_expand x hidden / mamba_n_heads), mamba_n_groups 1, mamba_d_state 256, mamba_d_conv 4,
    # mamba_expand 2, mamba_chunk_size 256, mamba_conv_bias true, mamba_proj_bias false, attention_bias false,
    # intermediate_size 11008 (the experts), num_experts_per_tok 2, output_router_logits false.
    # modeling_granitemoehybrid.py GraniteMoeHybridDecoderLayer: a layer runs GraniteMoeHybridMambaLayer (BambaMixer)
    # where layer_types[i] is "mamba" / "linear_attention", else GraniteMoeHybridAttention; then shared_mlp
    # (GraniteMoeHybridMLP: input_linear hidden -> 2 x shared_intermediate_size, chunk, silu(gate) x up,
    # output_linear; no biases) and, with num_local_experts > 0, block_sparse_moe beside it.
    experts = int(d.get("num_local_experts", 8) or 0)
    if experts and d.get("output_router_logits"):
        raise PresetFileError(source, ["output_router_logits true: GraniteMoeHybridForCausalLM's router aux loss "
                                       "(load_balancing_loss_func over every layer's fp32 router logits) is not "
                                       "modelled; set it to false (the published configs do)"])
    pos = d.get("position_embedding_type")
    if pos not in (None, "nope"):
        raise PresetFileError(source, [f"position_embedding_type {pos!r}: GraniteMoeHybrid's RoPE tables are not "
                                       "modelled; the published H models use \"nope\" (no positions)"])
    out = _common(d, source, tie_default=False)
    for key, default in (("hidden_size", 4096), ("num_layers", 32), ("num_attention_heads", 32),
                         ("vocab_size", 32000)):
        out.setdefault(key, default)
    if "head_dim" in d:  # GraniteMoeHybridAttention: getattr(config, "head_dim", hidden // heads); no such field
        raise PresetFileError(source, ["head_dim: GraniteMoeHybridConfig has no head_dim field (attention uses "
                                       "hidden_size / num_attention_heads); drop the key"])
    if d.get("mlp_bias"):
        raise PresetFileError(source, ["mlp_bias: GraniteMoeHybridMLP's input_linear / output_linear have no bias "
                                       "(GraniteMoeHybridConfig has no mlp_bias); drop the key"])
    # shared_mlp is the dense MLP: the fused input_linear is gate_up_proj, output_linear down_proj (params.py names)
    shared = int(_get(d, source, "shared_intermediate_size", default=1024))
    out["intermediate_size"] = shared
    out["fused_gate_up"] = True
    if experts:
        # granite-4.0-h-tiny / -h-small: block_sparse_moe (GraniteMoeHybridMoE) beside shared_mlp in every layer:
        # GraniteMoeHybridTopKRouter (weight (E, hidden), no bias) and GraniteMoeHybridExperts, 3-D gate_up_proj
        # (E, 2 x intermediate_size, hidden) and down_proj (E, hidden, intermediate_size), as Mixtral's. shared_mlp
        # becomes the "shared expert" (params.py shared_expert.*, no gate), the experts intermediate_size wide.
        out.update(intermediate_size=int(_get(d, source, "intermediate_size", default=11008)),
                   num_experts=experts, experts_per_token=int(_get(d, source, "num_experts_per_tok", default=2)),
                   moe_intermediate_size=int(_get(d, source, "intermediate_size", default=11008)),
                   num_shared_experts=1, shared_expert_intermediate_size=shared)
    out["qkv_bias"] = out["o_bias"] = bool(d.get("attention_bias", False))
    hidden, n_layers = int(out["hidden_size"]), int(out["num_layers"])
    inter = int(_get(d, source, "mamba_expand", default=2)) * hidden
    heads, head_dim = _mamba2_heads(d, source, inter, "mamba_expand x hidden_size", "GraniteMoeHybridConfig")
    kinds = d.get("layer_types") or d.get("layers_block_type") or ["linear_attention"] * n_layers
    bad = sorted({k for k in kinds if k not in ("mamba", "linear_attention", "attention", "full_attention")})
    if len(kinds) != n_layers or bad:
        raise PresetFileError(source, [f"layer_types: {n_layers} entries of \"mamba\" or \"attention\" are needed "
                                       f"(got {len(kinds)}{', unknown ' + ', '.join(map(repr, bad)) if bad else ''})"])
    out.update(
        norms_per_layer=2,  # input_layernorm, post_attention_layernorm
        attention_layers=tuple(i for i, k in enumerate(kinds) if k in ("attention", "full_attention")),
        mixer_intermediate_size=inter, mixer_state_size=int(_get(d, source, "mamba_d_state", default=256)),
        mixer_head_dim=head_dim, ssm_conv_kernel=int(_get(d, source, "mamba_d_conv", default=4)),
        ssm_n_groups=int(_get(d, source, "mamba_n_groups", default=1)),
        ssm_chunk_size=int(_get(d, source, "mamba_chunk_size", default=256)),
        ssm_conv_bias=bool(_get(d, source, "mamba_conv_bias", default=True)),
        ssm_proj_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
        mixer_gated_norm=True,  # GraniteMoeHybridRMSNormGated (BambaRMSNormGated) always
        mixer_out_bias=bool(_get(d, source, "mamba_proj_bias", default=False)),
    )
    return out


_NEMOTRON_H_KINDS = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-",
                     "moe": "E"}


def _nemotron_h(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # configuration_nemotron_h.py NemotronHConfig (transformers 5.24): defaults vocab 131072, hidden 4096, untied,
    # 32 heads, 8 KV heads, head_dim 128, intermediate 21504, mlp_hidden_act relu2, mlp_bias /
    # use_bias false, ssm_state_size 128, mamba_num_heads 128, mamba_head_dim 64, n_groups 8, conv_kernel 4,
    # use_conv_bias true, chunk_size 128; the legacy names mamba_n_groups, mamba_d_conv, mamba_chunk_size and
    # mamba_conv_bias are read as those. hybrid_override_pattern (M mamba, * attention, - mlp, E moe) becomes
    # layers_block_type; with neither, ["linear_attention", "moe", "full_attention", "mlp"]; num_hidden_layers is
    # the pattern's length. modeling_nemotron_h.py NemotronHBlock: norm (NemotronHRMSNorm: the weight multiplies in
    # fp32), one mixer (NemotronHMamba2Mixer: width mamba_num_heads x mamba_head_dim, in_proj / out_proj bias
    # use_bias, NemotronHRMSNormGated always; NemotronHAttention: JambaAttention, q/k/v/o without bias, no
    # rotary embedding; NemotronHMLP: up_proj, relu2, down_proj with mlp_bias; NemotronHMoE), residual add.
    pattern = d.get("hybrid_override_pattern")
    kinds = d.get("layers_block_type") or d.get("layer_types")
    if pattern is None and kinds is None:
        kinds = ["linear_attention", "moe", "full_attention", "mlp"]
    if pattern is None:
        bad = sorted({k for k in kinds if k not in _NEMOTRON_H_KINDS})
        if bad:
            raise PresetFileError(source, [f"layers_block_type: unknown kinds {', '.join(map(repr, bad))}; "
                                           "Nemotron-H's are mamba, attention, mlp and moe"])
        pattern = "".join(_NEMOTRON_H_KINDS[k] for k in kinds)
    if not pattern or set(pattern) - set("M*-E"):
        raise PresetFileError(source, [f"hybrid_override_pattern {pattern!r}: characters M (Mamba-2), * (attention), "
                                       "- (MLP) and E (MoE) only"])
    moe = _nemotron_h_moe(d, source) if "E" in pattern else {}
    # num_nextn_predict_layers / mtp_layers_block_type / mtp_hybrid_override_pattern (Nemotron 3 Super's MTP layers)
    # are read by configuration_nemotron_h.py only to validate them: NemotronHModel builds no MTP layer and
    # NemotronHPreTrainedModel._keys_to_ignore_on_load_unexpected = [r"mtp.*"] drops the checkpoint's, so a
    # transformers training step has none (spec_from_hf_config's notes say so)
    # (time_step_limit is not read: NemotronHMamba2Mixer clamps dt to (time_step_min, inf) whatever the config says,
    # and clamp saves its input whatever the bounds: derivatives.yaml clamp)
    out: dict[str, Any] = {
        "vocab_size": int(_get(d, source, "vocab_size", default=131072)),
        "hidden_size": int(_get(d, source, "hidden_size", default=4096)),
        "num_layers": len(pattern),
        "num_attention_heads": int(_get(d, source, "num_attention_heads", default=32)),
        "intermediate_size": int(_get(d, source, "intermediate_size", default=21504)),
        # NemotronHForCausalLM._tied_weights_keys is {}: lm_head is its own matrix even with tie_word_embeddings true
        # (sum(p.numel()) on the meta device counts both)
        "tie_word_embeddings": False,
        "hidden_act": str(_get(d, source, "mlp_hidden_act", default="relu2")),
    }
    kv = int(_get(d, source, "num_key_value_heads", default=8))
    if kv != out["num_attention_heads"]:
        out["num_kv_heads"] = kv
    head_dim = int(_get(d, source, "head_dim", default=128))
    old = d.get("attention_head_dim")
    if old is not None and old != head_dim:  # NemotronHAttention reads config.head_dim (5.24 has no other name)
        raise PresetFileError(source, [f"attention_head_dim {old} differs from head_dim {head_dim}: transformers 5.24 "
                                       "builds the attention with head_dim; give head_dim"])
    if head_dim != out["hidden_size"] // out["num_attention_heads"] \
            or out["hidden_size"] % out["num_attention_heads"]:
        out["head_dim"] = head_dim
    pos = d.get("max_position_embeddings")
    if pos is not None:
        out["max_position_embeddings"] = int(pos)
    act = d.get("mamba_hidden_act", "silu")
    if act != "silu":
        raise PresetFileError(source, [f"mamba_hidden_act {act!r}: the mixer's conv activation is counted as silu "
                                       "only; drop the key"])
    if d.get("sliding_window"):
        raise PresetFileError(source, ["sliding_window: Nemotron-H's attention window is not modelled; set it to "
                                       "null"])
    heads = int(_get(d, source, "mamba_num_heads", default=128))
    mhd = int(_get(d, source, "mamba_head_dim", default=64))
    use_bias = bool(d.get("use_bias", False))
    out.update(
        norms_per_layer=1,  # NemotronHBlock.norm
        norm_fp32_weight_mul=True,  # NemotronHRMSNorm: (weight.to(fp32) x normalized).to(input dtype)
        hybrid_pattern=pattern,
        mlp="plain",
        # JambaAttention's q/k/v/o_proj are nn.Linear(bias=False) whatever attention_bias says
        qkv_bias=False, o_bias=False, mlp_bias=bool(d.get("mlp_bias", False)),
        mixer_intermediate_size=heads * mhd, mixer_state_size=int(_get(d, source, "ssm_state_size", default=128)),
        mixer_head_dim=mhd, ssm_conv_kernel=int(_get(d, source, "conv_kernel", "mamba_d_conv", default=4)),
        ssm_n_groups=int(_get(d, source, "n_groups", "mamba_n_groups", default=8)),
        ssm_chunk_size=int(_get(d, source, "chunk_size", "mamba_chunk_size", default=128)),
        ssm_conv_bias=bool(_get(d, source, "use_conv_bias", "mamba_conv_bias", default=True)),
        ssm_proj_bias=use_bias, mixer_gated_norm=True, mixer_out_bias=use_bias,
    )
    out.update(moe)
    mtp = int(d.get("num_nextn_predict_layers") or 0)
    if mtp:
        out["checkpoint_mtp_layers"] = mtp
    return out


def _nemotron_h_moe(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    # The "E" layers (modeling_nemotron_h.py NemotronHMoE, Nemotron 3 Nano / Super): NemotronHTopkRouter (weight (E,
    # hidden), kept fp32: _keep_in_fp32_modules_strict; sigmoid scores, e_score_correction_bias (a buffer), n_group /
    # topk_group group selection, top num_experts_per_tok, renormalized when norm_topk_prob, x routed_scaling_factor:
    # DeepseekV3TopkRouter's lines), NemotronHExperts (up_proj (E, moe_intermediate_size, input_dim), down_proj (E,
    # input_dim, moe_intermediate_size), input_dim = moe_latent_size or hidden: 3-D Parameters, no bias, relu2 through
    # use_experts_implementation(has_gate=False)), one shared expert (NemotronHMLP of
    # moe_shared_expert_intermediate_size over the hidden states: n_shared_experts is not read), and with
    # moe_latent_size fc1_latent_proj (hidden -> latent) / fc2_latent_proj (latent -> hidden) around the experts.
    # Defaults from configuration_nemotron_h.py NemotronHConfig (n_group 1, topk_group 1, norm_topk_prob true).
    if str(d.get("mlp_hidden_act", "relu2")) != "relu2":
        raise PresetFileError(source, [f"mlp_hidden_act {d.get('mlp_hidden_act')!r} with E (MoE) layers: the experts "
                                       "are counted with relu2 only; use relu2"])
    if bool(d.get("output_router_logits", False)):
        raise PresetFileError(source, ["output_router_logits true: the router logits kept for an auxiliary loss are "
                                       "not modelled; set it to false"])
    experts = int(_get(d, source, "n_routed_experts", "num_local_experts", default=8))
    width = int(_get(d, source, "moe_intermediate_size", default=7688))
    out = {"num_experts": experts, "experts_per_token": int(_get(d, source, "num_experts_per_tok", default=2)),
           "moe_intermediate_size": width, "num_shared_experts": 1,
           "shared_expert_intermediate_size": int(_get(d, source, "moe_shared_expert_intermediate_size",
                                                       default=7688)),
           # NemotronHTopkRouter groups as DeepseekV3TopkRouter (ModelSpec.expert_groups; 1 / 1: one group)
           "expert_groups": int(d.get("n_group") or 1), "topk_expert_groups": int(d.get("topk_group") or 1)}
    if not bool(d.get("norm_topk_prob", True)):  # (ModelSpec.topk_unnormalized)
        out["topk_unnormalized"] = True
    latent = d.get("moe_latent_size")
    if latent is not None:
        out["moe_latent_size"] = int(latent)
    return out


Mapper = Callable[[Mapping[str, Any], str], dict[str, Any]]

FAMILIES: dict[str, Mapper] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "gpt_oss": _gpt_oss,
    "llama4": _llama4,
    "llama4_text": _llama4,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3_text,
    "phi": _phi,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
    "olmo": _olmo,
    "olmo2": _olmo2,
    "gptj": _gptj,
    "gpt_bigcode": _gpt_bigcode,
    "bloom": _bloom,
    "starcoder2": _starcoder2,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "bert": _bert,
    "roberta": _bert,
    "xlm-roberta": _bert,
    "distilbert": _distilbert,
    "modernbert": _modernbert,
    "deberta-v2": _deberta_v2,
    "t5": _t5,
    "mt5": _t5,
    "bart": _bart,
    "mbart": _bart,
    "mamba": _mamba,
    "mamba2": _mamba2,
    "falcon_h1": _falcon_h1,
    "jamba": _jamba,
    "bamba": _bamba,
    "zamba2": _zamba2,
    "granitemoehybrid": _granitemoehybrid,
    "nemotron_h": _nemotron_h,
}


# Gemma3TextConfig's defaults (transformers models/gemma3/configuration_gemma3.py, class Gemma3TextConfig):
# the published google/gemma-3-4b-it config.json names only hidden_size, intermediate_size,
# num_hidden_layers, sliding_window and rope_scaling in its text_config, and transformers fills the rest
# from these. sliding_window_pattern 6 is the 4.x default (5 local layers per global one; 5.x derives
# layer_types with the same pattern).
GEMMA3_TEXT_DEFAULTS: dict[str, Any] = {
    "model_type": "gemma3_text",
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
}


# LlamaConfig's defaults (transformers models/llama/configuration_llama.py): llava-hf/llava-1.5-7b-hf's
# text_config names only max_position_embeddings, model_type, rms_norm_eps and vocab_size, and LlavaConfig
# builds its LlamaConfig from these for the rest.
LLAMA_TEXT_DEFAULTS: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32_000,
    "hidden_size": 4096,
    "intermediate_size": 11_008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
# CLIPVisionConfig's defaults (models/clip/configuration_clip.py) under LlavaConfig, which builds a
# clip_vision_model with these when vision_config is absent (models/llava/configuration_llava.py: hidden 1024,
# intermediate 4096, 24 layers, 16 heads, patch 14, image 336: CLIP ViT-L/14-336).
CLIP_VISION_DEFAULTS: dict[str, Any] = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 336,
    "hidden_act": "quick_gelu",
}
VISION_KEYS: dict[str, str] = {
    **dict.fromkeys(("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                     "image_size"), "positive"),
    **dict.fromkeys(("model_type", "hidden_act"), "str"),
    "num_channels": "positive",
}


def _llava(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """LLaVA-1.5 (models/llava/configuration_llava.py LlavaConfig): a Llama text model (text_config, LlamaConfig's
    defaults for what it leaves out) and a CLIP vision tower (vision_config) joined by LlavaMultiModalProjector."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    raw_text = d.get("text_config") or {}
    raw_vision = d.get("vision_config") or {}
    if not isinstance(raw_text, Mapping) or not isinstance(raw_vision, Mapping):
        raise PresetFileError(source, ["llava: text_config and vision_config must be JSON objects"])
    text = {**LLAMA_TEXT_DEFAULTS, **raw_text}
    if text.get("model_type") != "llama":
        raise PresetFileError(source, [f"llava: text_config model_type {text.get('model_type')!r} is not modelled; "
                                       "vramcalc reads LLaVA-1.5's llama text model"])
    _check_types(text, source, "text_config.")
    vision = {**CLIP_VISION_DEFAULTS, **raw_vision}
    problems = validate.check_keys(VISION_KEYS, vision)
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    if vision["model_type"] != "clip_vision_model":
        raise PresetFileError(source, [f"llava: vision_config model_type {vision['model_type']!r} is not modelled; "
                                       "vramcalc reads LLaVA-1.5's clip_vision_model tower"])
    if vision["hidden_act"] != "quick_gelu" or vision.get("num_channels", 3) != 3:
        raise PresetFileError(source, ["llava: a CLIP tower with quick_gelu on 3 channels is modelled; "
                                       "vision_config's hidden_act / num_channels differ"])
    layer = d.get("vision_feature_layer", -2)
    strategy = d.get("vision_feature_select_strategy", "default")
    act = d.get("projector_hidden_act", "gelu")
    bias = d.get("multimodal_projector_bias", True)
    if not isinstance(layer, int) or isinstance(layer, bool) or strategy not in ("default", "full") \
            or not isinstance(act, str) or not isinstance(bias, bool):
        raise PresetFileError(source, ["llava: vision_feature_layer must be one integer, "
                                       "vision_feature_select_strategy 'default' or 'full', projector_hidden_act "
                                       "a string and multimodal_projector_bias true or false"])
    out = _llama(text, source)
    if d.get("tie_word_embeddings") is not None:
        out["tie_word_embeddings"] = bool(d["tie_word_embeddings"])
    try:
        out["vision"] = VisionSpec(
            num_layers=vision["num_hidden_layers"], hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"], num_attention_heads=vision["num_attention_heads"],
            patch_size=vision["patch_size"], image_size=vision["image_size"], feature_layer=layer,
            drop_cls=strategy == "default", projector_act=act, projector_bias=bias)
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None
    return out


FAMILIES["llava"] = _llava

# MistralConfig's defaults (transformers models/mistral/configuration_mistral.py): llava-hf/llava-v1.6-mistral-7b-hf's
# text_config leaves out hidden_size, num_hidden_layers and num_attention_heads, which these fill.
MISTRAL_TEXT_DEFAULTS: dict[str, Any] = {
    "model_type": "mistral",
    "vocab_size": 32_000,
    "hidden_size": 4096,
    "intermediate_size": 14_336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 4096 * 32,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
}
# LlavaNextConfig.__post_init__ (models/llava_next/configuration_llava_next.py): the pinpoints when the config
# names none
LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def _llava_next(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """LLaVA-NeXT (models/llava_next/configuration_llava_next.py LlavaNextConfig): LLaVA-1.5's layout (a CLIP
    tower, LlavaNextMultiModalProjector) with image_grid_pinpoints and image_newline; the text model is a llama
    (LlamaConfig's defaults for what text_config leaves out: LlavaNextConfig's default sub-config) or a mistral
    (llava-v1.6-mistral-7b; MistralConfig's defaults)."""
    from vramcalc.core.specs import VisionSpec

    raw_text = d.get("text_config") or {}
    if not isinstance(raw_text, Mapping):
        raise PresetFileError(source, ["llava_next: text_config must be a JSON object"])
    kind = raw_text.get("model_type", "llama")
    if kind not in ("llama", "mistral"):
        raise PresetFileError(source, [f"llava_next: text_config model_type {kind!r} is not modelled; vramcalc "
                                       "reads LLaVA-NeXT with a llama or mistral text model"])
    if d.get("use_image_newline_parameter", True) is not True:  # the original LLaVA repository's flag
        raise PresetFileError(source, ["llava_next: use_image_newline_parameter false is not modelled "
                                       "(transformers' LlavaNextModel always has image_newline)"])
    layer = d.get("vision_feature_layer", -2)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise PresetFileError(source, ["llava_next: a list vision_feature_layer (several layers concatenated) is "
                                       "not modelled: give one integer"])
    raw_points = d.get("image_grid_pinpoints")
    points = LLAVA_NEXT_PINPOINTS if raw_points is None else raw_points
    if not isinstance(points, list | tuple) or not all(isinstance(p, list | tuple) for p in points):
        raise PresetFileError(source, ["llava_next: image_grid_pinpoints must be a list of [height, width] pairs"])
    text = {**(MISTRAL_TEXT_DEFAULTS if kind == "mistral" else LLAMA_TEXT_DEFAULTS), **raw_text}
    out = _llava({**d, "text_config": {**text, "model_type": "llama"}}, source)
    if kind == "mistral":  # the text model's own reader (sliding window); the vision part is _llava's
        out.update(_mistral(text, source))
    try:
        out["vision"] = VisionSpec(**{**{f: getattr(out["vision"], f) for f in (
            "num_layers", "hidden_size", "intermediate_size", "num_attention_heads", "patch_size", "image_size",
            "feature_layer", "drop_cls", "projector_act", "projector_bias")}, "kind": "llava_next",
            "grid_pinpoints": tuple(tuple(p) for p in points)})
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None
    return out


FAMILIES["llava_next"] = _llava_next

# SiglipVisionConfig's defaults (models/siglip/configuration_siglip.py), which Gemma3Config's vision_config fills
# what it leaves out from (sub_configs_defaults: siglip_vision_model). google/gemma-3-*-it name SigLIP so400m's
# shape (1152 wide, MLP 4304, 27 layers, 16 heads, 896 px, 14 px patches) and vision_use_head false.
SIGLIP_VISION_DEFAULTS: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 16,
    "image_size": 224,
    "hidden_act": "gelu_pytorch_tanh",
    "vision_use_head": True,
}


def _gemma3_vision(d: Mapping[str, Any], source: str) -> Any:
    """Gemma 3 multimodal (models/gemma3/configuration_gemma3.py Gemma3Config): the SigLIP tower (vision_config)
    and Gemma3MultiModalProjector (mm_tokens_per_image) as a VisionSpec; the text model is read from text_config."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    raw = d.get("vision_config")
    if not isinstance(raw, Mapping):
        raise PresetFileError(source, ["gemma3: vision_config must be a JSON object"])
    vision = {**SIGLIP_VISION_DEFAULTS, **raw}
    problems = validate.check_keys(VISION_KEYS, vision)
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    if vision["model_type"] != "siglip_vision_model":
        raise PresetFileError(source, [f"gemma3: vision_config model_type {vision['model_type']!r} is not modelled; "
                                       "vramcalc reads Gemma 3's siglip_vision_model tower"])
    if vision["hidden_act"] != "gelu_pytorch_tanh" or vision.get("num_channels", 3) != 3 \
            or vision["vision_use_head"] is not False:
        raise PresetFileError(source, ["gemma3: a SigLIP tower with gelu_pytorch_tanh on 3 channels and "
                                       "vision_use_head false (as Gemma 3 publishes it) is modelled; "
                                       "vision_config's hidden_act / num_channels / vision_use_head differ"])
    tokens = d.get("mm_tokens_per_image", 256)  # Gemma3Config's default
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise PresetFileError(source, ["gemma3: mm_tokens_per_image must be an integer"])
    try:
        return VisionSpec(
            kind="siglip", num_layers=vision["num_hidden_layers"], hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"], num_attention_heads=vision["num_attention_heads"],
            patch_size=vision["patch_size"], image_size=vision["image_size"], feature_layer=-1, drop_cls=False,
            projector_act="none", projector_bias=False, mm_tokens_per_image=tokens)
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None


# Vision-language model_types not read yet, with what their image side needs that vramcalc does not model (none
# today: Idefics3 / SmolVLM are read by _idefics3).
VLM_NOT_READ: dict[str, str] = {}

# Idefics3VisionConfig / SmolVLMVisionConfig defaults (models/idefics3/configuration_idefics3.py,
# models/smolvlm/configuration_smolvlm.py: the same values), which the published vision_config fills what it
# leaves out from. The published files name the vision model_type "idefics3" (SmolVLM's too); transformers builds
# the sub-config class whatever it says.
IDEFICS3_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "gelu_pytorch_tanh",
}
IDEFICS3_VISION_TYPES = ("idefics3", "idefics3_vision", "smolvlm", "smolvlm_vision")


def _idefics3(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Idefics3 and SmolVLM (configuration_idefics3.py Idefics3Config, configuration_smolvlm.py SmolVLMConfig): a
    Llama language model (text_config; sub_configs_defaults builds a llama config from it, LlamaConfig's defaults for
    what it leaves out), the SigLIP-shaped tower (vision_config) and Idefics3Connector (scale_factor, default 2).
    The top level's tie_word_embeddings (default false) decides whether lm_head shares the embeddings
    (modeling_utils.py tie_weights reads the model's own config)."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    kind = str(d.get("model_type"))
    raw_text = d.get("text_config") or {}
    raw_vision = d.get("vision_config") or {}
    if not isinstance(raw_text, Mapping) or not isinstance(raw_vision, Mapping):
        raise PresetFileError(source, [f"{kind}: text_config and vision_config must be JSON objects"])
    text = {**LLAMA_TEXT_DEFAULTS, **raw_text}
    if text.get("model_type") != "llama":
        raise PresetFileError(source, [f"{kind}: text_config model_type {text.get('model_type')!r} is not modelled; "
                                       "vramcalc reads Idefics3 / SmolVLM's llama text model"])
    _check_types(text, source, "text_config.")
    vision = {k: v for k, v in {**IDEFICS3_VISION_DEFAULTS, **raw_vision}.items()
              if k in VISION_KEYS or k in ("max_image_size", "size")}
    problems = validate.check_keys(VISION_KEYS, vision)
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    if vision.get("model_type", "idefics3") not in IDEFICS3_VISION_TYPES:
        raise PresetFileError(source, [f"{kind}: vision_config model_type {vision['model_type']!r} is not modelled; "
                                       "vramcalc reads the Idefics3 / SmolVLM SigLIP tower"])
    if vision["hidden_act"] != "gelu_pytorch_tanh" or vision.get("num_channels", 3) != 3:
        raise PresetFileError(source, [f"{kind}: a tower with gelu_pytorch_tanh on 3 channels is modelled; "
                                       "vision_config's hidden_act / num_channels differ"])
    scale = d.get("scale_factor", 2)  # Idefics3Config / SmolVLMConfig default
    tie = d.get("tie_word_embeddings", False)
    if not isinstance(scale, int) or isinstance(scale, bool) or not isinstance(tie, bool):
        raise PresetFileError(source, [f"{kind}: scale_factor must be an integer and tie_word_embeddings true or "
                                       "false"])
    # the processor's tiles (Idefics3ImageProcessor max_image_size) are the tower's image_size in every published
    # model; SmolVLM's vision_config repeats it, with the processor's resize target (size.longest_edge)
    tile = vision.get("max_image_size") or {"longest_edge": vision["image_size"]}
    size = vision.get("size") or {"longest_edge": 4 * vision["image_size"]}  # Idefics3ImageProcessor: 4 x 364, 364
    if not isinstance(tile, Mapping) or tile.get("longest_edge") != vision["image_size"] \
            or not isinstance(size, Mapping) or not isinstance(size.get("longest_edge"), int) \
            or isinstance(size.get("longest_edge"), bool):
        raise PresetFileError(source, [f"{kind}: vision_config max_image_size must be the tower's image_size "
                                       f"{vision['image_size']} and size a {{'longest_edge': pixels}} object"])
    out = _llama(text, source)
    out["tie_word_embeddings"] = tie
    try:
        out["vision"] = VisionSpec(
            kind="idefics3", num_layers=vision["num_hidden_layers"], hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"], num_attention_heads=vision["num_attention_heads"],
            patch_size=vision["patch_size"], image_size=vision["image_size"], feature_layer=-1, drop_cls=False,
            projector_act="none", projector_bias=False, scale_factor=scale, longest_edge=size["longest_edge"])
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None
    return out


FAMILIES["idefics3"] = _idefics3
FAMILIES["smolvlm"] = _idefics3


# Qwen2VLTextConfig / Qwen2_5_VLTextConfig defaults (transformers models/qwen2_vl/configuration_qwen2_vl.py,
# models/qwen2_5_vl/configuration_qwen2_5_vl.py; the same in both): the published Qwen2-VL / Qwen2.5-VL
# config.json files are flat (the text keys at the top, which Qwen2VLConfig.__post_init__ moves into its
# text_config); newer ones nest a text_config. Keys left out take these.
QWEN_VL_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 152_064,
    "hidden_size": 8192,
    "intermediate_size": 29_568,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 32_768,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 80,
}
# Qwen2VLVisionConfig's defaults (configuration_qwen2_vl.py: depth 32, embed_dim 1280, mlp_ratio 4, 16 heads,
# quick_gelu; hidden_size is the merger's output width) and Qwen2_5_VLVisionConfig's (configuration_qwen2_5_vl.py:
# depth 32; hidden_size is the tower width there, class default 3584, the published configs give 1280;
# intermediate 3420, silu, window 112, full attention in blocks 7, 15, 23, 31, out_hidden_size 3584).
QWEN2_VL_VISION_DEFAULTS: dict[str, Any] = {
    "depth": 32, "embed_dim": 1280, "hidden_size": 3584, "hidden_act": "quick_gelu", "mlp_ratio": 4,
    "num_heads": 16, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
}
QWEN2_5_VL_VISION_DEFAULTS: dict[str, Any] = {
    "depth": 32, "hidden_size": 3584, "hidden_act": "silu", "intermediate_size": 3420, "num_heads": 16,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31],
}
QWEN_VL_VISION_KEYS: dict[str, str] = {
    **dict.fromkeys(("depth", "embed_dim", "hidden_size", "mlp_ratio", "intermediate_size", "num_heads",
                     "patch_size", "spatial_merge_size", "temporal_patch_size", "out_hidden_size", "in_chans",
                     "in_channels"), "positive"),
    "window_size": "int",
    "fullatt_block_indexes": "int_list",
    "hidden_act": "str",
}


def _qwen_vl(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Qwen2-VL and Qwen2.5-VL (configuration_qwen2_vl.py Qwen2VLConfig, configuration_qwen2_5_vl.py
    Qwen2_5_VLConfig): a Qwen2 language model (q/k/v biased; M-RoPE changes its position ids, not its
    parameters) and the vision tower with its merger (vision_config)."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    kind = str(d.get("model_type"))
    nested = d.get("text_config")
    raw_vision = d.get("vision_config") or {}
    if (nested is not None and not isinstance(nested, Mapping)) or not isinstance(raw_vision, Mapping):
        raise PresetFileError(source, [f"{kind}: text_config and vision_config must be JSON objects"])
    text = {**QWEN_VL_TEXT_DEFAULTS, **(nested if nested is not None else d)}
    # Qwen2VLConfig.__post_init__: the model ties its embeddings when either the top level or text_config says so
    text["tie_word_embeddings"] = bool(d.get("tie_word_embeddings", False)) or bool(
        text.get("tie_word_embeddings", False))
    if nested is not None:
        _check_types(text, source, "text_config.")
    defaults = QWEN2_VL_VISION_DEFAULTS if kind == "qwen2_vl" else QWEN2_5_VL_VISION_DEFAULTS
    vision = {**defaults, **raw_vision}
    problems = validate.check_keys(QWEN_VL_VISION_KEYS, vision)
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    act = "quick_gelu" if kind == "qwen2_vl" else "silu"
    if vision["hidden_act"] != act or vision.get("in_chans", vision.get("in_channels", 3)) != 3:
        raise PresetFileError(source, [f"{kind}: a vision tower with {act} on 3 channels is modelled; "
                                       "vision_config's hidden_act / in_chans differ"])
    full = vision.get("fullatt_block_indexes") or []
    out = _qwen2(text, source)
    try:
        if kind == "qwen2_vl":
            width = vision["embed_dim"]
            fields: dict[str, Any] = {"hidden_size": width, "intermediate_size": width * vision["mlp_ratio"],
                                      "out_hidden_size": vision["hidden_size"]}
        else:
            fields = {"hidden_size": vision["hidden_size"], "intermediate_size": vision["intermediate_size"],
                      "out_hidden_size": vision["out_hidden_size"], "window_size": vision["window_size"],
                      "fullatt_block_indexes": tuple(full)}
        out["vision"] = VisionSpec(
            kind=kind, num_layers=vision["depth"], num_attention_heads=vision["num_heads"],
            patch_size=vision["patch_size"], image_size=0, temporal_patch_size=vision["temporal_patch_size"],
            spatial_merge_size=vision["spatial_merge_size"], **fields)
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None
    return out


FAMILIES["qwen2_vl"] = _qwen_vl
FAMILIES["qwen2_5_vl"] = _qwen_vl


# MllamaTextConfig's and MllamaVisionConfig's defaults (transformers models/mllama/configuration_mllama.py), which
# MllamaConfig fills what a published text_config / vision_config leaves out from (meta-llama/Llama-3.2-11B-Vision's
# shape: a 40-layer Llama 3.1 8B text model with cross-attention at 3, 8, ..., 38; a 32 + 8 layer ViT-H/14 tower).
MLLAMA_TEXT_DEFAULTS: dict[str, Any] = {
    "model_type": "mllama_text_model", "vocab_size": 128_256, "hidden_size": 4096, "hidden_act": "silu",
    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14_336,
    "max_position_embeddings": 131_072, "tie_word_embeddings": False,
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
}
MLLAMA_VISION_DEFAULTS: dict[str, Any] = {
    "model_type": "mllama_vision_model", "hidden_size": 1280, "hidden_act": "gelu", "num_hidden_layers": 32,
    "num_global_layers": 8, "attention_heads": 16, "num_channels": 3, "intermediate_size": 5120,
    "vision_output_dim": 7680, "image_size": 448, "patch_size": 14, "max_num_tiles": 4,
    "intermediate_layers_indices": [3, 7, 15, 23, 30],
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
}
MLLAMA_VISION_KEYS: dict[str, str] = {
    **dict.fromkeys(("hidden_size", "num_hidden_layers", "num_global_layers", "attention_heads",
                     "num_attention_heads", "num_channels", "intermediate_size", "vision_output_dim", "image_size",
                     "patch_size", "max_num_tiles"), "positive"),
    **dict.fromkeys(("model_type", "hidden_act"), "str"),
    "intermediate_layers_indices": "int_list",
}


def _mllama(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Llama-3.2-Vision (configuration_mllama.py MllamaConfig; modeling_mllama.py MllamaForConditionalGeneration):
    a Llama text model whose cross_attention_layers read the image (MllamaTextModel), the two-encoder vision tower
    (MllamaVisionModel) and multi_modal_projector, as a Llama ModelSpec with a VisionSpec of kind mllama."""
    from vramcalc.core.specs import VisionSpec
    from vramcalc.io import validate

    raw_text = d.get("text_config") or {}
    raw_vision = d.get("vision_config") or {}
    if not isinstance(raw_text, Mapping) or not isinstance(raw_vision, Mapping):
        raise PresetFileError(source, ["mllama: text_config and vision_config must be JSON objects"])
    text = {**MLLAMA_TEXT_DEFAULTS, **raw_text}
    _check_types(text, source, "text_config.")
    cross = text.get("cross_attention_layers")
    if not isinstance(cross, list) or not cross or any(
            isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in cross):
        raise PresetFileError(source, ["mllama: text_config.cross_attention_layers must be a non-empty list of "
                                       "layer indexes"])
    if text.get("tie_word_embeddings") or d.get("tie_word_embeddings"):
        raise PresetFileError(source, ["mllama: tied embeddings are not modelled (MllamaTextModel's embed_tokens "
                                       "has vocab_size + 8 rows, the lm_head vocab_size): set tie_word_embeddings "
                                       "false"])
    vision = {**MLLAMA_VISION_DEFAULTS, **raw_vision}
    problems = validate.check_keys(MLLAMA_VISION_KEYS, vision)
    if problems:
        raise PresetFileError(source, ["vision_config." + validate.problem_text(*p) for p in problems])
    ratios = vision.get("supported_aspect_ratios")
    if not isinstance(ratios, list) or not ratios:
        raise PresetFileError(source, ["mllama: vision_config.supported_aspect_ratios must be a non-empty list"])
    if vision["hidden_act"] != "gelu" or vision["num_channels"] != 3:
        raise PresetFileError(source, ["mllama: a vision tower with gelu on 3 channels is modelled; "
                                       "vision_config's hidden_act / num_channels differ"])
    for k in ("image_size", "patch_size"):
        if not isinstance(vision[k], int):
            raise PresetFileError(source, [f"mllama: vision_config.{k} must be one integer (square tiles)"])
    out = _llama(text, source)
    try:
        out["vision"] = VisionSpec(
            kind="mllama", num_layers=vision["num_hidden_layers"], hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"],
            num_attention_heads=vision.get("num_attention_heads", vision["attention_heads"]),
            patch_size=vision["patch_size"], image_size=vision["image_size"], feature_layer=-1, drop_cls=False,
            projector_act="none", projector_bias=True, num_global_layers=vision["num_global_layers"],
            max_num_tiles=vision["max_num_tiles"], aspect_ratios=len(ratios),
            intermediate_layers_indices=tuple(vision["intermediate_layers_indices"]),
            vision_output_dim=vision["vision_output_dim"], cross_attention_layers=tuple(cross))
    except SpecError as e:
        raise PresetFileError(source, [e.message]) from None
    return out


FAMILIES["mllama"] = _mllama


def _text_part(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """Gemma 3 multimodal configs nest the language model under text_config, with transformers'
    Gemma3TextConfig defaults for the keys it leaves out."""
    text = d.get("text_config")
    if d.get("model_type") == "gemma3" and isinstance(text, Mapping):
        return {**GEMMA3_TEXT_DEFAULTS, **text}
    if d.get("model_type") == "llama4":  # Llama4Config: the text model under text_config (_llama4 fills defaults)
        return text if isinstance(text, Mapping) else {}
    return d


def spec_from_hf_config(d: Mapping[str, Any], name: str, source: str) -> ModelSpec:
    """A ModelSpec from a parsed config.json; unknown model_type raises UnsupportedModelType."""
    if not isinstance(d, Mapping):
        raise PresetFileError(source, ["config.json is not a JSON object"])
    _check_types(d, source)
    model_type = d.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise PresetFileError(source, ["config.json has no 'model_type'; cannot tell the architecture"])
    if model_type in VLM_NOT_READ:
        raise PresetFileError(source, [f"{model_type}: not modelled yet: {VLM_NOT_READ[model_type]}"])
    mapper = FAMILIES.get(model_type)
    if mapper is None:
        raise UnsupportedModelType(model_type, source)
    text = _text_part(d)
    if text is not d:
        _check_types(text, source, "text_config.")
    fields = mapper(text, source)
    if fields.get("num_experts") and text.get("output_router_logits"):
        # <Family>ForCausalLM.forward: `output_router_logits` defaults to the config's, and with it the router aux
        # loss is added in training (memory/router_aux.py; refused there for the families it is not modelled on)
        fields["output_router_logits"] = True
    if model_type == "gemma3" and text is not d and d.get("vision_config") is not None:
        fields["vision"] = _gemma3_vision(d, source)  # Gemma3ForConditionalGeneration: the image side
    hf_id = d.get("_name_or_path")
    aliases = (
        (hf_id,)
        if isinstance(hf_id, str) and hf_id.count("/") == 1 and not hf_id.startswith((".", "/"))
        else ()
    )
    family = "gemma3" if model_type == "gemma3_text" else "llama4" if model_type == "llama4_text" else model_type
    if model_type == "llava":  # the text model's family; the vision side is ModelSpec.vision
        family = "llama"
    if model_type in ("idefics3", "smolvlm"):  # a Llama language model; the vision side is ModelSpec.vision
        family = "llama"
    if model_type in ("qwen2_vl", "qwen2_5_vl"):  # a Qwen2 language model; the vision side is ModelSpec.vision
        family = "qwen2"
    if model_type == "llava_next":  # the text model's family (llama or mistral, _llava_next checked it)
        family = str((d.get("text_config") or {}).get("model_type", "llama"))
    if model_type == "mllama":  # a Llama text model with cross-attention layers; the image side is ModelSpec.vision
        family = "llama"
    from vramcalc.io import validate  # pydantic: only when a config.json is read

    spec, problems = validate.check(
        ModelSpec,
        {"name": name, "source": source, "display_name": name, "family": family, "aliases": aliases, **fields},
    )
    if spec is None:
        raise PresetFileError(source, [validate.problem_text(*p) for p in problems])
    return spec


def hf_config_notes(d: Mapping[str, Any]) -> list[str]:
    """What the estimate leaves out of a config.json, as sentences for Breakdown.notes."""
    notes: list[str] = []
    if d.get("model_type") == "gemma3" and isinstance(d.get("text_config"), Mapping) \
            and d.get("vision_config") is None:
        notes.append(
            "gemma3: the config.json names no vision_config: only the language model (text_config) is counted; "
            "a vision tower and projector are not."
        )
    if d.get("model_type") == "llama4":
        notes.append(
            "llama4: the text model is counted (Llama4ForCausalLM, what AutoModelForCausalLM builds from this config); "
            "the vision tower and projector of Llama4ForConditionalGeneration and images are modelled by the presets "
            "llama-4-scout-vision / llama-4-maverick-vision (memory/llama4v.py), not from a config.json."
        )
    mtp = d.get("num_nextn_predict_layers")
    if isinstance(mtp, int) and mtp > 0 and d.get("model_type") != "nemotron_h":  # (Nemotron-H: its notes say so)
        notes.append(
            f"{mtp} multi-token-prediction layer(s) in the checkpoint are not counted: transformers "
            "does not load them for fine-tuning."
        )
    if d.get("quantization_config"):
        method = (
            d["quantization_config"].get("quant_method", "?")
            if isinstance(d["quantization_config"], Mapping)
            else "?"
        )
        notes.append(
            f"the checkpoint is quantized ({method}); weights are estimated at --precision, "
            "not at the stored dtype."
        )
    return notes
