"""Map a ModelSpec to transformers config kwargs (pure: no torch import)."""

from __future__ import annotations

from typing import Any

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.specs import ModelSpec

# --- config mapping ------------------------------------------------------------------------------
SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2", "olmo",
                      "olmo2", "starcoder2", "phi", "gpt_neox", "gptj", "gpt_bigcode", "bloom", "falcon",
                      "bert", "roberta", "xlm-roberta", "distilbert", "modernbert", "deberta-v2", "t5", "mt5", "bart",
                      "mbart", "mamba", "mamba2", "gpt_oss", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2",
                      "deepseek_v3", "falcon_h1", "llama4", "bamba", "jamba", "granitemoehybrid", "zamba2",
                      "nemotron_h")


def hf_config_dict(model: ModelSpec) -> dict[str, Any]:
    """transformers config kwargs (with `model_type`) for an architecture ModelSpec."""
    if model.vision is not None and model.vision.is_qwen:  # Qwen2-VL / Qwen2.5-VL (trace/_qwen_vl.py)
        from vramcalc.trace._qwen_vl import qwen_config_dict
        from vramcalc.trace._vision import text_model

        return qwen_config_dict(model, hf_config_dict(text_model(model)))
    if model.vision is not None and model.vision.kind == "llava_next":  # LLaVA-NeXT (trace/_llava_next.py)
        from vramcalc.trace._llava_next import config_dict as llava_next_config_dict
        from vramcalc.trace._vision import text_model

        return llava_next_config_dict(model, hf_config_dict(text_model(model)))
    if model.vision is not None and model.vision.is_mllama:  # Llama-3.2-Vision (trace/_mllama.py)
        from vramcalc.trace._mllama import mllama_config_dict
        from vramcalc.trace._vision import text_model

        return mllama_config_dict(model, hf_config_dict(text_model(model)))
    if model.vision is not None and model.vision.kind == "llama4":  # Llama 4 multimodal (trace/_llama4v.py)
        from vramcalc.trace._llama4v import llama4_config_dict
        from vramcalc.trace._vision import text_model

        return llama4_config_dict(model, hf_config_dict(text_model(model)))
    if model.vision is not None and model.vision.kind == "idefics3":  # Idefics3 / SmolVLM (trace/_idefics3.py)
        from vramcalc.trace._idefics3 import idefics3_config_dict
        from vramcalc.trace._vision import text_model

        return idefics3_config_dict(model, hf_config_dict(text_model(model)))
    if model.vision is not None:  # LLaVA / Gemma 3 (trace/_vision.py): the text model's config inside theirs
        from vramcalc.trace._vision import config_dict, text_model

        return config_dict(model, hf_config_dict(text_model(model)))
    family = model.family.lower()
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedCombination(
            f"vramcalc trace cannot build family {model.family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    if not model.has_architecture:
        raise UnsupportedCombination(f"{model.name} has no architecture (only a parameter count); trace needs one")
    if model.moe_capacity_factor is not None:
        raise UnsupportedCombination("vramcalc trace runs transformers' dropless MoE; a capacity factor is not traced")
    d: dict[str, Any]
    common: dict[str, Any] = {"vocab_size": model.vocab_size, "tie_word_embeddings": model.tie_word_embeddings,
              "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None}
    if family in ("gptj", "gpt_bigcode"):
        d = {"model_type": family, "n_embd": model.hidden_size, "n_layer": model.num_layers,
             "n_head": model.num_attention_heads, "n_inner": model.intermediate_size,
             "n_positions": model.max_position_embeddings or 2048, "activation_function": model.hidden_act,
             "resid_pdrop": model.dropout, "embd_pdrop": model.dropout, "attn_pdrop": model.dropout, **common}
        if family == "gpt_bigcode":
            d["multi_query"] = model.num_kv_heads == 1
        return d
    if family == "mamba":  # configuration_mamba.py names (memory/ssm.py); expand from intermediate_size
        assert model.hidden_size is not None and model.intermediate_size is not None
        return {"model_type": "mamba", "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
                "state_size": model.ssm_state_size, "expand": model.intermediate_size // model.hidden_size,
                "conv_kernel": model.ssm_conv_kernel, "time_step_rank": model.ssm_dt_rank or "auto",
                "use_bias": model.ssm_proj_bias, "use_conv_bias": model.ssm_conv_bias,
                "residual_in_fp32": model.ssm_residual_fp32, "hidden_act": model.hidden_act, **common}
    if family == "mamba2":  # configuration_mamba2.py names (memory/ssm.py); num_heads x head_dim = intermediate
        assert model.hidden_size is not None and model.intermediate_size is not None
        return {"model_type": "mamba2", "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
                "state_size": model.ssm_state_size, "expand": model.intermediate_size // model.hidden_size,
                "num_heads": model.intermediate_size // model.ssm_head_dim, "head_dim": model.ssm_head_dim,
                "n_groups": model.ssm_n_groups, "chunk_size": model.ssm_chunk_size,
                "conv_kernel": model.ssm_conv_kernel, "use_bias": model.ssm_proj_bias,
                "use_conv_bias": model.ssm_conv_bias, "residual_in_fp32": model.ssm_residual_fp32,
                "hidden_act": model.hidden_act, **common}
    if family == "gpt_oss":  # configuration_gpt_oss.py names; layer_types as the reader counted them
        n, local = model.num_layers or 0, model.sliding_window_layers
        period = n // max(n - local, 1) if local is not None and n > local else n + 1
        return {"model_type": "gpt_oss", "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
                "intermediate_size": model.moe_intermediate_size or model.intermediate_size,
                "num_hidden_layers": n, "num_attention_heads": model.num_attention_heads,
                "num_key_value_heads": model.num_kv_heads or model.num_attention_heads,
                "head_dim": model.head_dim or (model.hidden_size or 0) // (model.num_attention_heads or 1),
                "num_local_experts": model.num_experts, "num_experts_per_tok": model.experts_per_token,
                "sliding_window": model.sliding_window or 128, "attention_bias": model.qkv_bias,
                "layer_types": ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]
                if model.sliding_window else ["full_attention"] * n,
                "max_position_embeddings": model.max_position_embeddings or 131072,
                "tie_word_embeddings": model.tie_word_embeddings, "bos_token_id": 0, "eos_token_id": 0,
                "pad_token_id": None, "output_router_logits": model.output_router_logits}
    if family == "llama4":  # configuration_llama4.py Llama4TextConfig names (io/hf_config.py _llama4)
        n = model.num_layers or 0
        return {"model_type": "llama4_text", "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
                "intermediate_size": model.moe_intermediate_size, "intermediate_size_mlp": model.intermediate_size,
                "num_hidden_layers": n, "num_attention_heads": model.num_attention_heads,
                "num_key_value_heads": model.num_kv_heads or model.num_attention_heads,
                "head_dim": model.head_dim or (model.hidden_size or 0) // (model.num_attention_heads or 1),
                "num_local_experts": model.num_experts, "num_experts_per_tok": model.experts_per_token,
                "interleave_moe_layer_step": max(model.moe_layer_interval, 1),
                "no_rope_layer_interval": model.nope_layer_interval or n + 1,
                "attention_chunk_size": model.attention_chunk_size or None, "use_qk_norm": model.qk_l2_norm,
                "attn_temperature_tuning": model.attn_temperature_tuning, "attention_bias": model.qkv_bias,
                "max_position_embeddings": model.max_position_embeddings or 4096, "router_jitter_noise": 0.0,
                "tie_word_embeddings": model.tie_word_embeddings, "bos_token_id": 0, "eos_token_id": 0,
                "pad_token_id": None}
    if family == "distilbert":  # configuration_distilbert.py names
        return {"model_type": family, "vocab_size": model.vocab_size, "dim": model.hidden_size,
                "n_layers": model.num_layers, "n_heads": model.num_attention_heads,
                "hidden_dim": model.intermediate_size, "activation": model.hidden_act,
                "max_position_embeddings": model.max_position_embeddings or 512, "dropout": model.dropout,
                "attention_dropout": model.dropout, "seq_classif_dropout": model.dropout, "pad_token_id": 0,
                "num_labels": model.num_labels or 2}
    if family in ("bert", "roberta", "xlm-roberta"):  # configuration_bert.py / _roberta.py names
        return {"model_type": family, "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
                "num_hidden_layers": model.num_layers, "num_attention_heads": model.num_attention_heads,
                "intermediate_size": model.intermediate_size, "hidden_act": model.hidden_act,
                "max_position_embeddings": model.max_position_embeddings or 512,
                "type_vocab_size": model.type_vocab_size, "hidden_dropout_prob": model.dropout,
                "attention_probs_dropout_prob": model.dropout, "pad_token_id": 1 if family != "bert" else 0,
                "num_labels": model.num_labels or 2}
    if family == "deberta-v2":  # configuration_deberta_v2.py names (io/hf_config.py _deberta_v2: the v3 shape)
        assert model.rel_embedding_rows
        return {"model_type": family, "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
                "num_hidden_layers": model.num_layers, "num_attention_heads": model.num_attention_heads,
                "intermediate_size": model.intermediate_size, "hidden_act": model.hidden_act,
                "max_position_embeddings": model.max_position_embeddings or 512,
                "type_vocab_size": model.type_vocab_size, "hidden_dropout_prob": model.dropout,
                "attention_probs_dropout_prob": model.dropout, "relative_attention": True,
                "position_buckets": model.rel_embedding_rows // 2, "max_relative_positions": -1,
                "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": "p2c|c2p",
                "position_biased_input": model.learned_position_embeddings, "layer_norm_eps": 1e-7,
                "pooler_dropout": 0, "pooler_hidden_act": "gelu", "pad_token_id": 0,
                "num_labels": model.num_labels or 2}
    if family == "modernbert":  # configuration_modernbert.py names (io/hf_config.py _modernbert)
        assert model.num_layers is not None
        n_global = model.num_layers - (model.sliding_window_layers or 0)
        # global layers are i % every == 0 (configuration_modernbert.py layer_types): ceil(layers / every) of them
        every = next((e for e in range(1, model.num_layers + 1) if -(-model.num_layers // e) == n_global), 1)
        return {"model_type": family, "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
                "num_hidden_layers": model.num_layers, "num_attention_heads": model.num_attention_heads,
                "intermediate_size": model.intermediate_size, "hidden_activation": model.hidden_act,
                "max_position_embeddings": model.max_position_embeddings or 8192,
                "norm_bias": not model.norm_without_bias,
                "local_attention": 2 * (model.sliding_window or 64), "global_attn_every_n_layers": every,
                "layer_types": ["sliding_attention" if i % every else "full_attention"
                                for i in range(model.num_layers)],
                "classifier_pooling": "mean" if model.mean_pooling else "cls", "pad_token_id": 0,
                "bos_token_id": 0, "eos_token_id": 0, "cls_token_id": 0, "sep_token_id": 0,
                "num_labels": model.num_labels or 2}
    if family in ("t5", "mt5"):  # configuration_t5.py / configuration_mt5.py names
        act = model.hidden_act
        d = {"model_type": family, "vocab_size": model.vocab_size, "d_model": model.hidden_size,
             "d_kv": model.head_dim or (model.hidden_size or 0) // (model.num_attention_heads or 1),
             "d_ff": model.intermediate_size, "num_layers": model.num_layers,
             "num_decoder_layers": model.decoder_layers, "num_heads": model.num_attention_heads,
             "relative_attention_num_buckets": model.relative_attention_buckets or 32,
             "feed_forward_proj": ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if model.mlp == "gated"
             else act, "dropout_rate": model.dropout, "decoder_start_token_id": 0, "pad_token_id": 0,
             "eos_token_id": 1}
        if family == "t5":  # scale_decoder_outputs: tie_word_embeddings not false (configuration_t5.py)
            d["tie_word_embeddings"] = model.decoder_output_scale
        return d
    if family in ("bart", "mbart"):  # configuration_bart.py / configuration_mbart.py names
        return {"model_type": family, "vocab_size": model.vocab_size, "d_model": model.hidden_size,
                "encoder_layers": model.num_layers, "decoder_layers": model.decoder_layers,
                "encoder_attention_heads": model.num_attention_heads,
                "decoder_attention_heads": model.num_attention_heads,
                "encoder_ffn_dim": model.intermediate_size, "decoder_ffn_dim": model.intermediate_size,
                "max_position_embeddings": model.max_position_embeddings or 1024,
                "activation_function": model.hidden_act, "dropout": model.dropout,
                "attention_dropout": model.attention_dropout, "activation_dropout": model.activation_dropout,
                "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
                "forced_eos_token_id": 2}
    if family == "bloom":
        return {"model_type": "bloom", "hidden_size": model.hidden_size, "n_layer": model.num_layers,
                "n_head": model.num_attention_heads, "hidden_dropout": model.dropout, "attention_dropout": 0.0,
                **common}
    if family == "falcon":
        kv = model.num_kv_heads or model.num_attention_heads
        d = {"model_type": "falcon", "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
             "num_attention_heads": model.num_attention_heads, "bias": model.qkv_bias,
             "parallel_attn": model.parallel_residual, "max_position_embeddings": model.max_position_embeddings or 2048,
             "ffn_hidden_size": model.intermediate_size, **common}
        if model.norms_per_layer == 2 and model.parallel_residual:
            d.update(new_decoder_architecture=True, num_kv_heads=kv)
        else:
            d.update(new_decoder_architecture=False, multi_query=kv == 1)
        return d
    if family == "gpt2":
        return {
            "model_type": "gpt2", "vocab_size": model.vocab_size, "n_embd": model.hidden_size,
            "n_layer": model.num_layers, "n_head": model.num_attention_heads,
            "n_inner": model.intermediate_size, "n_positions": model.max_position_embeddings or 1024,
            "tie_word_embeddings": model.tie_word_embeddings,
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None,
        }
    d = {
        "model_type": family, "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_kv_heads or model.num_attention_heads,
        "max_position_embeddings": model.max_position_embeddings or 4096,
        "tie_word_embeddings": model.tie_word_embeddings,
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None,
    }
    if model.head_dim is not None:
        d["head_dim"] = model.head_dim
    if family == "gemma3":
        d["model_type"] = "gemma3_text"
        d["sliding_window"] = model.sliding_window
        n, local = model.num_layers or 0, model.sliding_window_layers
        if model.sliding_window is None:
            d["layer_types"] = ["full_attention"] * n
        elif local is not None:  # the local layers first in each group of the pattern, as Gemma 3 lays them out
            period = n // max(n - local, 1) if n > local else n + 1
            d["layer_types"] = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]
    if family == "falcon_h1":  # configuration_falcon_h1.py names (memory/hybrid.py); multipliers left at 1.0
        assert model.mixer_head_dim
        d.update(attention_bias=model.qkv_bias, mlp_bias=model.mlp_bias, hidden_act=model.hidden_act,
                 head_dim=model.head_dim or (model.hidden_size or 0) // (model.num_attention_heads or 1),
                 mamba_d_ssm=model.mixer_intermediate_size, mamba_d_state=model.mixer_state_size,
                 mamba_n_heads=model.mixer_intermediate_size // model.mixer_head_dim,
                 mamba_d_head=model.mixer_head_dim, mamba_n_groups=model.ssm_n_groups,
                 mamba_d_conv=model.ssm_conv_kernel, mamba_chunk_size=model.ssm_chunk_size,
                 mamba_conv_bias=model.ssm_conv_bias, mamba_proj_bias=model.ssm_proj_bias,
                 mamba_rms_norm=model.mixer_gated_norm, projectors_bias=model.mixer_out_bias)
    if family == "jamba":  # configuration_jamba.py names (memory/jamba.py)
        assert model.hidden_size
        d.update(hidden_act=model.hidden_act, num_experts=model.num_experts or 1,
                 num_experts_per_tok=model.experts_per_token or 1,
                 attn_layer_period=model.attn_layer_period, attn_layer_offset=model.attn_layer_offset,
                 expert_layer_period=model.expert_layer_period, expert_layer_offset=model.expert_layer_offset,
                 mamba_d_state=model.jamba_state_size, mamba_d_conv=model.ssm_conv_kernel,
                 mamba_expand=model.jamba_mixer_size // model.hidden_size, mamba_dt_rank=model.ssm_dt_rank,
                 mamba_conv_bias=model.ssm_conv_bias, mamba_proj_bias=model.ssm_proj_bias,
                 use_associative_scan=False)
    if family == "bamba":  # configuration_bamba.py names (memory/hybrid.py); no head_dim field (hidden / heads)
        assert model.mixer_head_dim and model.hidden_size
        d.pop("head_dim", None)
        d.update(attention_bias=model.qkv_bias, mlp_bias=model.mlp_bias, hidden_act=model.hidden_act,
                 attn_layer_indices=list(model.attention_layers),
                 mamba_expand=model.mixer_intermediate_size // model.hidden_size, mamba_d_state=model.mixer_state_size,
                 mamba_n_heads=model.mixer_intermediate_size // model.mixer_head_dim,
                 mamba_d_head=model.mixer_head_dim, mamba_n_groups=model.ssm_n_groups,
                 mamba_d_conv=model.ssm_conv_kernel, mamba_chunk_size=model.ssm_chunk_size,
                 mamba_conv_bias=model.ssm_conv_bias, mamba_proj_bias=model.ssm_proj_bias)
    if family == "granitemoehybrid":  # configuration_granitemoehybrid.py names (memory/hybrid.py)
        assert model.mixer_head_dim and model.hidden_size
        d.pop("head_dim", None)
        # the MoE models (h-tiny, h-small): block_sparse_moe of num_local_experts experts intermediate_size wide,
        # shared_mlp the shared expert; the dense ones (h-micro): num_local_experts 0, shared_mlp the MLP
        moe = bool(model.num_experts)
        # the published H models' multipliers (granite-4.0-h-micro): each product is a temporary whatever its value
        d.update(attention_bias=model.qkv_bias, hidden_act=model.hidden_act, num_local_experts=model.num_experts,
                 num_experts_per_tok=model.experts_per_token if moe else 0,
                 intermediate_size=(model.moe_intermediate_size or model.intermediate_size) if moe
                 else model.intermediate_size,
                 shared_intermediate_size=(model.shared_expert_intermediate_size if moe else model.intermediate_size),
                 output_router_logits=model.output_router_logits,
                 layer_types=["attention" if i in model.attention_layers else "mamba"
                              for i in range(model.num_layers or 0)],
                 position_embedding_type="nope", embedding_multiplier=12.0, residual_multiplier=0.22,
                 attention_multiplier=0.015625, logits_scaling=8.0,
                 mamba_expand=model.mixer_intermediate_size // model.hidden_size, mamba_d_state=model.mixer_state_size,
                 mamba_n_heads=model.mixer_intermediate_size // model.mixer_head_dim,
                 mamba_d_head=model.mixer_head_dim, mamba_n_groups=model.ssm_n_groups,
                 mamba_d_conv=model.ssm_conv_kernel, mamba_chunk_size=model.ssm_chunk_size,
                 mamba_conv_bias=model.ssm_conv_bias, mamba_proj_bias=model.ssm_proj_bias)
    if family == "zamba2":  # configuration_zamba2.py names (memory/zamba2.py); head_dim is derived (2 x hidden / heads)
        assert model.mixer_head_dim and model.hidden_size
        d.pop("head_dim", None)
        d.update(hidden_act=model.hidden_act, add_bias_linear=model.mlp_bias,
                 layers_block_type=["hybrid" if i in model.zamba_hybrid_layers else "mamba"
                                    for i in range(model.num_layers or 0)],
                 num_mem_blocks=model.zamba_mem_blocks, adapter_rank=model.zamba_adapter_rank,
                 use_shared_attention_adapter=model.zamba_attention_adapters, use_mem_rope=model.zamba_mem_rope,
                 mamba_expand=model.mixer_intermediate_size // model.hidden_size, mamba_d_state=model.mixer_state_size,
                 n_mamba_heads=model.mixer_intermediate_size // model.mixer_head_dim,
                 mamba_ngroups=model.ssm_n_groups, mamba_d_conv=model.ssm_conv_kernel, chunk_size=model.ssm_chunk_size)
    if family == "nemotron_h":  # configuration_nemotron_h.py names (memory/nemotron_h.py); the dense models
        assert model.num_attention_heads and model.hidden_size
        d.update(hybrid_override_pattern=model.hybrid_pattern, mlp_hidden_act=model.hidden_act,
                 mlp_bias=model.mlp_bias, use_bias=model.ssm_proj_bias, tie_word_embeddings=False,
                 head_dim=model.head_dim or model.hidden_size // model.num_attention_heads,
                 ssm_state_size=model.mixer_state_size or 128,
                 mamba_num_heads=model.mixer_intermediate_size // (model.mixer_head_dim or 1) or 8,
                 mamba_head_dim=model.mixer_head_dim or 64, n_groups=model.ssm_n_groups or 1,
                 conv_kernel=model.ssm_conv_kernel or 4, chunk_size=model.ssm_chunk_size or 128,
                 use_conv_bias=model.ssm_conv_bias, num_nextn_predict_layers=0)
        if model.num_experts:  # the "E" layers' NemotronHMoE (io/hf_config.py _nemotron_h_moe)
            d.update(n_routed_experts=model.num_experts, num_experts_per_tok=model.experts_per_token,
                     moe_intermediate_size=model.moe_intermediate_size,
                     moe_shared_expert_intermediate_size=model.shared_expert_intermediate_size,
                     moe_latent_size=model.moe_latent_size, n_group=model.expert_groups,
                     topk_group=model.topk_expert_groups, norm_topk_prob=not model.topk_unnormalized,
                     routed_scaling_factor=2.5)
        d.pop("num_hidden_layers")  # the pattern's length (NemotronHConfig.num_hidden_layers is a property)
    if family in ("olmo", "olmo2"):
        d["attention_bias"] = model.qkv_bias
    if family == "starcoder2":
        d.update(use_bias=model.qkv_bias, residual_dropout=model.dropout, hidden_act=model.hidden_act,
                 sliding_window=model.sliding_window)
    if family == "phi":
        d.update(qk_layernorm=model.qk_norm, resid_pdrop=model.dropout, embd_pdrop=model.dropout,
                 hidden_act=model.hidden_act)
    if family == "gpt_neox":
        d.update(use_parallel_residual=model.parallel_residual, attention_bias=model.qkv_bias,
                 hidden_act=model.hidden_act)
    if family in ("llama", "qwen3"):
        d["attention_bias"] = model.qkv_bias
    if family == "llama":
        d["mlp_bias"] = model.mlp_bias
    if family in ("mistral", "gemma2", "qwen3", "qwen2"):
        d["sliding_window"] = model.sliding_window
    if family in ("qwen2", "qwen3"):
        d["use_sliding_window"] = model.sliding_window is not None
    if family in ("mixtral", "qwen2_moe", "qwen3_moe"):
        # the router aux loss (memory/router_aux.py): the run's option or the config.json's key, which trace() folds
        # into the spec; transformers' default (False) otherwise
        d["output_router_logits"] = model.output_router_logits
    if family == "mixtral":  # configuration_mixtral.py: every layer sparse, experts intermediate_size wide
        d.update(num_local_experts=model.num_experts, num_experts_per_tok=model.experts_per_token,
                 intermediate_size=model.moe_intermediate_size or model.intermediate_size,
                 sliding_window=model.sliding_window, router_jitter_noise=0.0)
    if family in ("qwen2_moe", "qwen3_moe"):  # configuration_qwen2_moe.py / _qwen3_moe.py names
        d.update(num_experts=model.num_experts, num_experts_per_tok=model.experts_per_token,
                 moe_intermediate_size=model.moe_intermediate_size, decoder_sparse_step=1,
                 mlp_only_layers=list(range(model.first_dense_layers)), norm_topk_prob=family == "qwen3_moe",
                 use_sliding_window=False, sliding_window=None)
        if family == "qwen2_moe":
            d.update(shared_expert_intermediate_size=model.shared_expert_intermediate_size or 0,
                     qkv_bias=model.qkv_bias)
        else:
            d["attention_bias"] = model.qkv_bias
    if family in ("deepseek_v2", "deepseek_v3"):  # configuration_deepseek_v3.py / _v2.py names (io/hf_config.py)
        # the spec's expert groups (n_group / topk_group); V3's noaux_tc router with the correction bias, V2's
        # softmax top-k: greedy with one group, group_limited_greedy with more
        d.update(num_key_value_heads=model.num_attention_heads, q_lora_rank=model.q_lora_rank,
                 kv_lora_rank=model.kv_lora_rank, qk_nope_head_dim=model.qk_nope_head_dim,
                 qk_rope_head_dim=model.qk_rope_head_dim, v_head_dim=model.v_head_dim,
                 n_routed_experts=model.num_experts, num_experts_per_tok=model.experts_per_token,
                 moe_intermediate_size=model.moe_intermediate_size, n_shared_experts=model.num_shared_experts,
                 first_k_dense_replace=model.first_dense_layers, n_group=model.expert_groups,
                 topk_group=model.topk_expert_groups,
                 topk_method="noaux_tc" if family == "deepseek_v3"
                 else "group_limited_greedy" if model.expert_groups > 1 else "greedy", norm_topk_prob=True,
                 rope_scaling=None, attention_bias=model.qkv_bias)
        d.pop("head_dim", None)
    return d


LORA_NAME_MAP = {
    "gpt2": {"q_proj": "c_attn", "k_proj": "c_attn", "v_proj": "c_attn", "qkv_proj": "c_attn",
             "o_proj": "attn.c_proj", "up_proj": "c_fc", "down_proj": "mlp.c_proj"},
    "phi3": {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
             "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"},
    "gpt_bigcode": {"q_proj": "c_attn", "k_proj": "c_attn", "v_proj": "c_attn", "qkv_proj": "c_attn",
                    "o_proj": "attn.c_proj", "up_proj": "c_fc", "down_proj": "mlp.c_proj"},
    "starcoder2": {"up_proj": "c_fc", "down_proj": "c_proj"},
    "phi": {"o_proj": "dense", "up_proj": "fc1", "down_proj": "fc2"},
    # modeling_granitemoehybrid.py GraniteMoeHybridMLP: shared_mlp.input_linear (gate and up fused), output_linear
    "granitemoehybrid": {"gate_proj": "input_linear", "up_proj": "input_linear", "gate_up_proj": "input_linear",
                         "down_proj": "output_linear"},
    "gptj": {"o_proj": "out_proj", "up_proj": "fc_in", "down_proj": "fc_out"},
    # modeling_bert.py / modeling_roberta.py: attention.self.query/key/value, attention.output.dense,
    # intermediate.dense, output.dense (peft's default for bert: query, value).
    **dict.fromkeys(("bert", "roberta", "xlm-roberta"), {
        "q_proj": "query", "k_proj": "key", "v_proj": "value", "o_proj": "attention.output.dense",
        "up_proj": "intermediate.dense", "down_proj": "output.dense"}),
    # modeling_t5.py T5Attention q, k, v, o; T5DenseGatedActDense wi_0, wi_1, wo (T5DenseActDense: wi, wo);
    # peft's default for t5 / mt5: q, v. modeling_bart.py BartAttention q_proj, k_proj, v_proj, out_proj; fc1, fc2.
    **dict.fromkeys(("t5", "mt5"), {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
                                    "gate_proj": "wi_0", "down_proj": "wo"}),
    **dict.fromkeys(("bart", "mbart"), {"o_proj": "out_proj", "up_proj": "fc1", "down_proj": "fc2"}),
    # modeling_modernbert.py: attn.Wqkv (fused), attn.Wo, mlp.Wi (fused input + gate), mlp.Wo; peft has no default.
    "modernbert": {"q_proj": "Wqkv", "k_proj": "Wqkv", "v_proj": "Wqkv", "qkv_proj": "Wqkv", "o_proj": "attn.Wo",
                   "gate_proj": "Wi", "up_proj": "Wi", "gate_up_proj": "Wi", "down_proj": "mlp.Wo"},
    # modeling_deberta_v2.py: attention.self.query_proj / key_proj / value_proj, attention.output.dense,
    # intermediate.dense, output.dense (peft's default for deberta-v2: query_proj, value_proj).
    "deberta-v2": {"q_proj": "query_proj", "k_proj": "key_proj", "v_proj": "value_proj",
                   "o_proj": "attention.output.dense", "up_proj": "intermediate.dense", "down_proj": "output.dense"},
    "distilbert": {"q_proj": "q_lin", "k_proj": "k_lin", "v_proj": "v_lin", "o_proj": "out_lin",
                   "up_proj": "lin1", "down_proj": "lin2"},
    **dict.fromkeys(("gpt_neox", "bloom", "falcon"), {
        "q_proj": "query_key_value", "k_proj": "query_key_value", "v_proj": "query_key_value",
        "qkv_proj": "query_key_value", "o_proj": "dense", "up_proj": "dense_h_to_4h", "down_proj": "dense_4h_to_h"}),
}


def lora_targets(model: ModelSpec, targets: tuple[str, ...]) -> list[str] | str:
    if any(t.strip().lower() == "all-linear" for t in targets):
        return "all-linear"
    if any(t.strip().lower() == "auto" for t in targets):  # core/params.py default_targets
        from vramcalc.core.params import default_targets

        targets = tuple(t for t in targets if t.strip().lower() != "auto") + default_targets(model)
    names = LORA_NAME_MAP.get(model.family.lower(), {})
    if model.family in ("t5", "mt5"):  # T5's up projection: wi_1 beside a gate (wi_0), else wi
        names = {**names, "up_proj": "wi_1" if model.mlp == "gated" else "wi"}
    return sorted({names.get(t.strip(), t.strip()) for t in targets})
