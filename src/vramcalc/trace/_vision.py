"""Vision-language models in the tracer (memory/vision.py): LlavaForConditionalGeneration (or, for a SigLIP
VisionSpec, Gemma3ForConditionalGeneration) from a ModelSpec with a VisionSpec, its inputs (image placeholder
tokens, pixel_values, Gemma 3's token_type_ids), and the two data-dependent steps of LlavaModel.forward /
Gemma3Model.forward emulated for fake tensors with the same allocations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from vramcalc.core.memory.vision import image_tokens, images_per_sample, total_tokens, wrap_tokens
from vramcalc.core.specs import ModelSpec, TrainingSpec

IMAGE_TOKEN = 3  # the placeholder id (any id of the vocabulary; LLaVA-1.5's is 32000)


def llava_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """LlavaConfig kwargs: the text model's config (`text`, a llama dict) and the CLIP tower's."""
    v = model.vision
    assert v is not None
    text = {k: val for k, val in text.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return {"model_type": "llava", "text_config": text,
            "vision_config": {"model_type": "clip_vision_model", "hidden_size": v.hidden_size,
                              "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
                              "num_attention_heads": v.num_attention_heads, "patch_size": v.patch_size,
                              "image_size": v.image_size, "hidden_act": "quick_gelu"},
            "vision_feature_layer": v.feature_layer,
            "vision_feature_select_strategy": "default" if v.drop_cls else "full",
            "projector_hidden_act": v.projector_act, "multimodal_projector_bias": v.projector_bias,
            "image_token_index": IMAGE_TOKEN, "tie_word_embeddings": model.tie_word_embeddings}


# Gemma 3's special tokens in a small vocabulary (the published 262,144 image token, 255,999 / 256,000 begin / end
# of image, 108 "\n\n" need Gemma's 262k vocabulary; the ids change no allocation)
GEMMA3_BOI, GEMMA3_EOI, GEMMA3_NL = 4, 5, 6


def gemma3_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """Gemma3Config kwargs (models/gemma3/configuration_gemma3.py): the text model's gemma3_text config and the
    SigLIP tower's (siglip_vision_model, vision_use_head false), mm_tokens_per_image."""
    v = model.vision
    assert v is not None
    text = {k: val for k, val in text.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                          "model_type")}
    return {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", **text},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": v.hidden_size,
                              "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
                              "num_attention_heads": v.num_attention_heads, "patch_size": v.patch_size,
                              "image_size": v.image_size, "hidden_act": "gelu_pytorch_tanh",
                              "vision_use_head": False},
            "mm_tokens_per_image": v.mm_tokens_per_image, "image_token_index": IMAGE_TOKEN,
            "boi_token_index": GEMMA3_BOI, "eoi_token_index": GEMMA3_EOI,
            "tie_word_embeddings": model.tie_word_embeddings}


def config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """The vision-language model's config kwargs, by the tower's kind."""
    assert model.vision is not None
    return gemma3_config_dict(model, text) if model.vision.kind == "siglip" else llava_config_dict(model, text)


def text_model(model: ModelSpec) -> ModelSpec:
    return replace(model, vision=None)


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """input_ids with every image's placeholder tokens after a first text token, labels, and pixel_values
    (images, 3, H, W) in the model's dtype, as LlavaProcessor gives them."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s = training.batch_size, total_tokens(model, training)
    n_img = images_per_sample(training)
    k = n_img * image_tokens(v)
    vocab = model.vocab_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        ids[:, 1:1 + k] = IMAGE_TOKEN
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "pixel_values": torch.empty((b * n_img, 3, v.image_size, v.image_size), dtype=dtype)}

    def make_gemma3() -> dict[str, torch.Tensor]:
        # Gemma3Processor: each image as "\n\n" <boi> image tokens <eoi> "\n\n" after a first text token, and
        # token_type_ids 1 on the image tokens (processing_gemma3.py: mm_token_type_ids returned as
        # token_type_ids), which Gemma3Model turns into the bidirectional image blocks of the attention mask
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        types = torch.zeros((b, s), dtype=torch.long)
        per = image_tokens(v) + wrap_tokens(v)
        for i in range(n_img):
            at = 1 + i * per
            ids[:, at], ids[:, at + 1] = GEMMA3_NL, GEMMA3_BOI
            ids[:, at + 2:at + 2 + image_tokens(v)] = IMAGE_TOKEN
            types[:, at + 2:at + 2 + image_tokens(v)] = 1
            ids[:, at + 2 + image_tokens(v)], ids[:, at + 3 + image_tokens(v)] = GEMMA3_EOI, GEMMA3_NL
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "token_type_ids": types,
                "pixel_values": torch.empty((b * n_img, 3, v.image_size, v.image_size), dtype=dtype)}

    return make_gemma3 if v.kind == "siglip" else make


class _MaskedScatter(torch.autograd.Function):
    """aten masked_scatter (out of place: a new tensor of the input's shape; autograd saves the mask) and its
    backward (the input's gradient with the mask's positions zeroed, the source's gradient gathered by
    masked_select into the source's shape): the same allocations, without the data-dependent masked_select
    shape a fake tensor cannot know."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        ctx.source_shape = source.shape
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        grad_source = None
        if ctx.needs_input_grad[2]:
            grad_source = torch.empty(ctx.source_shape, dtype=grad.dtype, device=grad.device)
        grad_x = grad.masked_fill(mask, 0) if ctx.needs_input_grad[0] else None
        return grad_x, None, grad_source


@contextlib.contextmanager
def llava_emulation(fused_no_graph: bool = False) -> Iterator[None]:
    """LlavaModel.get_placeholder_mask without its count check (a data-dependent scalar; the inputs put exactly
    the right number of placeholders) and Tensor.masked_scatter as _MaskedScatter."""
    from transformers.models.gemma3 import modeling_gemma3
    from transformers.models.llava import modeling_llava

    def placeholder_mask(self: Any, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                         image_features: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.config.image_token_id).unsqueeze(-1)

    def masked_scatter(self: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not (self.requires_grad or source.requires_grad) or not torch.is_grad_enabled():
            return torch.empty_like(self)
        return _MaskedScatter.apply(self, mask, source)  # type: ignore[no-any-return]

    saved_mask = modeling_llava.LlavaModel.get_placeholder_mask
    saved_gemma3_mask = modeling_gemma3.Gemma3Model.get_placeholder_mask
    saved_scatter = torch.Tensor.masked_scatter
    modeling_llava.LlavaModel.get_placeholder_mask = placeholder_mask  # type: ignore[method-assign]
    modeling_gemma3.Gemma3Model.get_placeholder_mask = placeholder_mask  # type: ignore[method-assign]
    torch.Tensor.masked_scatter = masked_scatter  # type: ignore[method-assign]
    from vramcalc.trace import _cuda

    _cuda._NO_GRAPH_FUSED[0] = fused_no_graph  # Gemma 3: its frozen tower's sdpa as CUDA runs it (trace/_cuda.py)
    try:
        yield
    finally:
        _cuda._NO_GRAPH_FUSED[0] = False
        modeling_llava.LlavaModel.get_placeholder_mask = saved_mask  # type: ignore[method-assign]
        modeling_gemma3.Gemma3Model.get_placeholder_mask = saved_gemma3_mask  # type: ignore[method-assign]
        torch.Tensor.masked_scatter = saved_scatter  # type: ignore[method-assign]
