"""Attention cache layout: how many key/value elements a model keeps per token and layer (pure).

For the inference path: sliding-window layers keep at most `sliding_window` positions (transformers'
DynamicSlidingWindowLayer / HybridCache for Gemma 2/3 and Mistral), and MLA models cache per head.
Training activations do not change with the window: transformers applies it as a mask, so SDPA and
eager attention still see (and eager still materializes) the full causal score matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import head_dim, kv_heads

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec


def kv_elements_per_position(m: ModelSpec) -> int:
    """Key + value elements cached per token position in one layer."""
    assert m.num_attention_heads is not None
    if m.attention_kind == "mla":
        # transformers' DeepseekV3Attention caches the decompressed key (nope + rope per head) and value
        # (v_head_dim per head), not the 512 + 64 latent that DeepSeek's own inference code (and vLLM) keep.
        assert m.qk_nope_head_dim and m.qk_rope_head_dim and m.v_head_dim
        return m.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim)
    return 2 * kv_heads(m) * head_dim(m)  # K and V of every KV head (GQA: fewer than the query heads)


def cached_positions(m: ModelSpec, seq_len: int) -> int:
    """Positions kept over all layers for one sequence of `seq_len` tokens (sliding layers capped)."""
    assert m.num_layers is not None
    if not m.sliding_window:
        return m.num_layers * seq_len
    local = m.num_layers if m.sliding_window_layers is None else m.sliding_window_layers
    return local * min(seq_len, m.sliding_window) + (m.num_layers - local) * seq_len


def kv_cache_elements(m: ModelSpec, batch_size: int, seq_len: int) -> int:
    """Elements of the whole KV cache (multiply by the cache dtype's bytes)."""
    return batch_size * cached_positions(m, seq_len) * kv_elements_per_position(m)
