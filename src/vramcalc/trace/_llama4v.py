"""Llama 4 multimodal in the tracer (memory/llama4v.py): Llama4ForConditionalGeneration from a ModelSpec whose
VisionSpec is kind llama4, the processor's inputs (input_ids with each image's <|patch|> tokens and the wrapping
tokens, pixel_values of every tile), and the data-dependent steps of the forward emulated for fake tensors.

What a fake tensor cannot do is read its values. transformers 5.24 does so in
Llama4ForConditionalGeneration.get_placeholder_mask (modeling_llama4.py: torch_compilable_check of the
<|patch|> count against the features; the inputs put exactly the right number): the mask without the check; and
Tensor.masked_scatter: trace/_vision.py's _MaskedScatter (out of place, the mask saved).

A library bug, not a fake-tensor limit: transformers 5.24's Llama4ForConditionalGeneration.forward ends with
`image_outputs=outputs.image_outputs` on the language model's MoeCausalLMOutputWithPast, which has no such field,
so every return_dict forward raises AttributeError after the loss is computed. The emulation gives that output class
an `image_outputs` of None for the trace (no allocation changes; the loss and logits are already made).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vramcalc.core.memory.llama4v import tiles_per_image, tokens_per_tile, total_tokens, wrap_tokens_per_image
from vramcalc.core.memory.vision import images_per_sample
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace._vision import IMAGE_TOKEN, _MaskedScatter


def llama4_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """Llama4Config kwargs (models/llama4/configuration_llama4.py): the text model's llama4_text config and the
    tower's (Llama4VisionConfig), the <|patch|> id inside the vocabulary."""
    v = model.vision
    assert v is not None
    text = {k: val for k, val in text.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                          "model_type")}
    return {"model_type": "llama4", "text_config": text,
            "vision_config": {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                              "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_attention_heads,
                              "patch_size": v.patch_size, "image_size": v.image_size, "hidden_act": "gelu",
                              "pixel_shuffle_ratio": 1 / v.scale_factor, "vision_output_dim": v.vision_output_dim,
                              "projector_input_dim": v.vision_output_dim,
                              "projector_output_dim": v.vision_output_dim},
            "image_token_index": IMAGE_TOKEN, "boi_token_index": IMAGE_TOKEN + 1, "eoi_token_index": IMAGE_TOKEN + 2,
            "tie_word_embeddings": model.tie_word_embeddings}


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """What Llama4Processor gives a batch of same-size images: input_ids (after a first text token, each image's
    wrapping tokens and every tile's <|patch|> tokens), labels, pixel_values (tiles of all images, 3, T, T) in the
    model's dtype (image_processing_llama4.py: the tiles of each image concatenated on the first dimension)."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s = training.batch_size, total_tokens(model, training)
    n_img, tiles, per_tile = images_per_sample(training), tiles_per_image(v, training), tokens_per_tile(v)
    per_image = tiles * per_tile + wrap_tokens_per_image(v, training)
    vocab, side = model.vocab_size, v.image_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(IMAGE_TOKEN + 3, vocab, (b, s), dtype=torch.long)
        for i in range(n_img):
            at = 1 + i * per_image
            ids[:, at:at + tiles * per_tile] = IMAGE_TOKEN  # the layout changes no allocation, only the count
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "pixel_values": torch.empty((b * n_img * tiles, 3, side, side), dtype=dtype)}

    return make


@contextlib.contextmanager
def llama4_emulation() -> Iterator[None]:
    """get_placeholder_mask without its count check and masked_scatter (module docstring)."""
    from transformers.models.llama4 import modeling_llama4

    def placeholder_mask(self: Any, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                         image_features: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.config.image_token_id).unsqueeze(-1)

    def masked_scatter(self: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not (self.requires_grad or source.requires_grad) or not torch.is_grad_enabled():
            return torch.empty_like(self)
        return _MaskedScatter.apply(self, mask, source)  # type: ignore[no-any-return]

    cls = modeling_llama4.Llama4ForConditionalGeneration
    out_cls = modeling_llama4.MoeCausalLMOutputWithPast
    saved = (cls.get_placeholder_mask, torch.Tensor.masked_scatter)
    cls.get_placeholder_mask = placeholder_mask  # type: ignore[method-assign]
    torch.Tensor.masked_scatter = masked_scatter  # type: ignore[method-assign]
    out_cls.image_outputs = None  # type: ignore[attr-defined]  # the library bug (module docstring)
    from vramcalc.trace import _cuda

    _cuda._NO_GRAPH_FUSED[0] = True  # the frozen tower's sdpa as CUDA runs it (trace/_cuda.py)
    try:
        yield
    finally:
        _cuda._NO_GRAPH_FUSED[0] = False
        cls.get_placeholder_mask, torch.Tensor.masked_scatter = saved  # type: ignore[method-assign]
        del out_cls.image_outputs  # type: ignore[attr-defined]
