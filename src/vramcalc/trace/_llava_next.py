"""LLaVA-NeXT in the tracer (memory/llava_next.py): LlavaNextForConditionalGeneration from a ModelSpec with a
llava_next VisionSpec, the processor's inputs (placeholder tokens, pixel_values (images, tiles, 3, 336, 336),
image_sizes), and the data-dependent steps of modeling_llava_next.py emulated for fake tensors with the same
allocations: image_size_to_num_patches, get_anyres_image_grid_shape and unpad_image read image_sizes with
.tolist() (a fake tensor has no values), so they get the known image size; the tensor ops around them (the tiles'
torch.cat, the permute copy, the unpad slices, the newline torch.cat) run as the library writes them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vramcalc.core.memory.anyres import best_resolution, image_shape, image_tokens, tiles
from vramcalc.core.memory.vision import images_per_sample, total_tokens
from vramcalc.core.specs import ModelSpec, TrainingSpec

IMAGE_TOKEN = 3  # the placeholder id (any id of the vocabulary; llava-v1.6-mistral's is 32000)


def config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """LlavaNextConfig kwargs: the text model's config (`text`, a llama or mistral dict) and the CLIP tower's."""
    v = model.vision
    assert v is not None
    text = {k: val for k, val in text.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return {"model_type": "llava_next", "text_config": text,
            "vision_config": {"model_type": "clip_vision_model", "hidden_size": v.hidden_size,
                              "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
                              "num_attention_heads": v.num_attention_heads, "patch_size": v.patch_size,
                              "image_size": v.image_size, "hidden_act": "quick_gelu"},
            "vision_feature_layer": v.feature_layer, "vision_feature_select_strategy": "default",
            "projector_hidden_act": v.projector_act, "multimodal_projector_bias": v.projector_bias,
            "image_grid_pinpoints": [list(p) for p in v.grid_pinpoints],
            "image_token_index": IMAGE_TOKEN, "tie_word_embeddings": model.tie_word_embeddings}


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """input_ids with every image's placeholder tokens after a first text token, labels, pixel_values (images,
    tiles, 3, H, W) in the model's dtype and image_sizes (images, 2) int64, as LlavaNextProcessor gives them for
    images of --image-size x --image-width pixels."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s = training.batch_size, total_tokens(model, training)
    n_img = images_per_sample(training)
    height, width = image_shape(training)
    k = n_img * image_tokens(v, height, width)
    vocab = model.vocab_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        ids[:, 1:1 + k] = IMAGE_TOKEN
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "pixel_values": torch.empty((b * n_img, tiles(v, height, width), 3, v.image_size, v.image_size),
                                            dtype=dtype),
                "image_sizes": torch.tensor([[height, width]] * (b * n_img), dtype=torch.long)}

    return make


@contextlib.contextmanager
def emulation(model: ModelSpec, training: TrainingSpec) -> Iterator[None]:
    """The anyres helpers given the known image size (every image of the run is --image-size x --image-width), and
    LlavaNextModel.get_placeholder_mask without its data-dependent count check (the inputs hold exactly the right
    number of placeholders); masked_scatter as trace/_vision.py emulates it (llava_emulation)."""
    from transformers.models.llava_next import modeling_llava_next as mod

    from vramcalc.trace._vision import llava_emulation

    v = model.vision
    assert v is not None
    height, width = image_shape(training)
    bh, bw = best_resolution(v, height, width)

    def num_patches(image_size: Any, grid_pinpoints: Any, patch_size: int) -> int:
        return tiles(v, height, width)

    def grid_shape(image_size: Any, grid_pinpoints: Any, patch_size: int) -> tuple[int, int]:
        return bh // patch_size, bw // patch_size

    def unpad(tensor: torch.Tensor, original_size: Any) -> torch.Tensor:
        # unpad_image's own arithmetic on the known (height, width): the same slice of the same tensor
        current_height, current_width = tensor.shape[1:]
        if width / height > current_width / current_height:
            new_height = int(round(height * (current_width / width), 7))
            padding = (current_height - new_height) // 2
            return tensor[:, padding:current_height - padding, :]
        new_width = int(round(width * (current_height / height), 7))
        padding = (current_width - new_width) // 2
        return tensor[:, :, padding:current_width - padding]

    def placeholder_mask(self: Any, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                         image_features: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.config.image_token_id).unsqueeze(-1)

    saved = (mod.image_size_to_num_patches, mod.get_anyres_image_grid_shape, mod.unpad_image,
             mod.LlavaNextModel.get_placeholder_mask)
    mod.image_size_to_num_patches = num_patches
    mod.get_anyres_image_grid_shape = grid_shape
    mod.unpad_image = unpad
    mod.LlavaNextModel.get_placeholder_mask = placeholder_mask  # type: ignore[method-assign]
    try:
        with llava_emulation(fused_no_graph=True):  # the frozen tower's sdpa as CUDA runs it (trace/_cuda.py)
            yield
    finally:
        (mod.image_size_to_num_patches, mod.get_anyres_image_grid_shape, mod.unpad_image,
         mod.LlavaNextModel.get_placeholder_mask) = saved  # type: ignore[method-assign]
