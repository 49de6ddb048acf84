"""Llama-3.2-Vision in the tracer (memory/mllama.py): MllamaForConditionalGeneration from a ModelSpec whose
VisionSpec is of kind mllama, and the processor's inputs (transformers models/mllama/processing_mllama.py,
image_processing_mllama.py).

MllamaProcessor gives input_ids with one <|image|> token per image (its id, image_token_index, is vocab_size: one
of embed_tokens' 8 extra rows), pixel_values (batch, images, max_num_tiles, 3, tile, tile): every image padded to
max_num_tiles tiles (pack_images), aspect_ratio_ids (batch, images), aspect_ratio_mask (batch, images, tiles) and
cross_attention_mask (batch, sequence, images, tiles), all int64. The forward has no data-dependent shape, so
nothing of the library is emulated; the frozen tower's attention, which records no graph, runs as CUDA's fused
kernel (trace/_cuda.py _NO_GRAPH_FUSED), not the math path's tiles x rows^2 scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vramcalc.core.memory.vision import images_per_sample
from vramcalc.core.specs import ModelSpec, TrainingSpec


def mllama_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """MllamaConfig kwargs (configuration_mllama.py): the text model's config (`text`, a llama dict) as an
    mllama_text_model with its cross_attention_layers, and the tower's mllama_vision_model."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    text = {k: val for k, val in text.items() if k not in ("model_type", "bos_token_id", "eos_token_id",
                                                          "pad_token_id", "attention_bias", "mlp_bias", "head_dim")}
    text.update(model_type="mllama_text_model", cross_attention_layers=list(v.cross_attention_layers),
                bos_token_id=0, eos_token_id=0, pad_token_id=None)
    # supported_aspect_ratios: the published eight for four tiles; another count, the first `aspect_ratios` tile
    # layouts (only their number changes a parameter count)
    layouts = [[w, h] for w in range(1, v.max_num_tiles + 1) for h in range(1, v.max_num_tiles + 1)
               if w * h <= v.max_num_tiles][:v.aspect_ratios]
    vision = {"model_type": "mllama_vision_model", "hidden_size": v.hidden_size, "hidden_act": "gelu",
              "num_hidden_layers": v.num_layers, "num_global_layers": v.num_global_layers,
              "attention_heads": v.num_attention_heads, "num_channels": 3, "intermediate_size": v.intermediate_size,
              "vision_output_dim": v.vision_output_dim, "image_size": v.image_size, "patch_size": v.patch_size,
              "max_num_tiles": v.max_num_tiles, "intermediate_layers_indices": list(v.intermediate_layers_indices),
              "supported_aspect_ratios": layouts}
    return {"model_type": "mllama", "text_config": text, "vision_config": vision,
            "image_token_index": model.vocab_size, "tie_word_embeddings": False}


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """What MllamaProcessor gives for `images` images per sample, each on all max_num_tiles tiles (aspect ratio
    2 x 2, id 6 of the published eight; the tile count never changes an allocation: pack_images pads every image
    to max_num_tiles), the <|image|> tokens at the start, and the labels."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s, n = training.batch_size, training.seq_len, images_per_sample(training)
    t, side, vocab = v.max_num_tiles, v.image_size, model.vocab_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        ids[:, :n] = vocab  # <|image|> (image_token_index)
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "pixel_values": torch.empty((b, n, t, 3, side, side), dtype=dtype),
                "aspect_ratio_ids": torch.ones((b, n), dtype=torch.long),
                "aspect_ratio_mask": torch.ones((b, n, t), dtype=torch.long),
                "cross_attention_mask": torch.ones((b, s, n, t), dtype=torch.long)}

    return make


@contextlib.contextmanager
def mllama_emulation() -> Iterator[None]:
    """The frozen tower's sdpa as CUDA's fused kernel (trace/_cuda.py _NO_GRAPH_FUSED, as Gemma 3's tower)."""
    from vramcalc.trace import _cuda

    _cuda._NO_GRAPH_FUSED[0] = True
    try:
        yield
    finally:
        _cuda._NO_GRAPH_FUSED[0] = False
