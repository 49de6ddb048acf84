"""Map a ModelSpec to transformers config kwargs (pure: no torch import)."""

from __future__ import annotations

from typing import Any

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.specs import ModelSpec

# --- config mapping ------------------------------------------------------------------------------
SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2")


def hf_config_dict(model: ModelSpec) -> dict[str, Any]:
    """transformers config kwargs (with `model_type`) for an architecture ModelSpec."""
    family = model.family.lower()
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedCombination(
            f"vramcalc trace cannot build family {model.family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    if not model.has_architecture:
        raise UnsupportedCombination(f"{model.name} has no architecture (only a parameter count); trace needs one")
    if model.num_experts:
        raise UnsupportedCombination("vramcalc trace does not build mixture-of-experts models yet")
    if family == "gpt2":
        return {
            "model_type": "gpt2", "vocab_size": model.vocab_size, "n_embd": model.hidden_size,
            "n_layer": model.num_layers, "n_head": model.num_attention_heads,
            "n_inner": model.intermediate_size, "n_positions": model.max_position_embeddings or 1024,
            "tie_word_embeddings": model.tie_word_embeddings,
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None,
        }
    d: dict[str, Any] = {
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
    if family in ("llama", "qwen3"):
        d["attention_bias"] = model.qkv_bias
    if family == "llama":
        d["mlp_bias"] = model.mlp_bias
    if family in ("mistral", "gemma2", "qwen3", "qwen2"):
        d["sliding_window"] = model.sliding_window
    if family in ("qwen2", "qwen3"):
        d["use_sliding_window"] = model.sliding_window is not None
    return d


LORA_NAME_MAP = {
    "gpt2": {"q_proj": "c_attn", "k_proj": "c_attn", "v_proj": "c_attn", "qkv_proj": "c_attn",
             "o_proj": "attn.c_proj", "up_proj": "c_fc", "down_proj": "mlp.c_proj"},
    "phi3": {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
             "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"},
}


def lora_targets(model: ModelSpec, targets: tuple[str, ...]) -> list[str] | str:
    if any(t.strip().lower() == "all-linear" for t in targets):
        return "all-linear"
    if any(t.strip().lower() == "auto" for t in targets):  # core/params.py default_targets
        from vramcalc.core.params import default_targets

        targets = tuple(t for t in targets if t.strip().lower() != "auto") + default_targets(model)
    names = LORA_NAME_MAP.get(model.family.lower(), {})
    return sorted({names.get(t.strip(), t.strip()) for t in targets})
