"""Idefics3 / SmolVLM in the tracer (memory/idefics3.py): Idefics3ForConditionalGeneration from a ModelSpec whose
VisionSpec is kind idefics3, the processor's inputs (input_ids with each tile's image tokens and the wrapping
tokens, pixel_values of every tile, pixel_attention_mask), and the data-dependent steps of the forward emulated
for fake tensors with the same allocations.

SmolVLMForConditionalGeneration (models/smolvlm/modeling_smolvlm.py) has the same modules, tensors and forward
(its get_image_features adds a one-element in-place or on the image mask, its get_placeholder_mask is
Idefics3Model.inputs_merger's mask and check): the trace builds Idefics3ForConditionalGeneration for both.

What a fake tensor cannot do is read its values. transformers 5.24 does so in
- Idefics3Model.get_image_features (modeling_idefics3.py): `pixel_values[real_images_inds]` and
  `pixel_attention_mask[real_images_inds]` (boolean indexing: a data-dependent shape; every tile of these inputs
  is real, so each is a gathered copy of the whole tensor) and `split(num_real_images_per_batch.tolist())`.
  Emulated: the same steps written out, the two gathers as copies, the split sizes known here;
- create_bidirectional_mask in Idefics3VisionTransformer.forward (masking_utils.py _ignore_bidirectional_mask_sdpa):
  `padding_mask.all()` on a fake tensor is "tracing", so the library would build a 4-D mask; on CUDA every patch of
  a processor-made tile is real, the check is true and no mask is made (sdpa and eager alike): answered True;
- inputs_merger's torch_compilable_check (a data-dependent count; the inputs put exactly the right number of
  image tokens): skipped;
- Tensor.masked_scatter: trace/_vision.py's _MaskedScatter (out of place, the mask saved).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vramcalc.core.memory.idefics3 import tiles_per_image, total_tokens, wrap_tokens_per_image
from vramcalc.core.memory.vision import images_per_sample
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace._vision import IMAGE_TOKEN, _MaskedScatter


def idefics3_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """Idefics3Config kwargs (models/idefics3/configuration_idefics3.py): the text model's llama config and the
    tower's (Idefics3VisionConfig), scale_factor, the image token id inside the vocabulary."""
    v = model.vision
    assert v is not None
    text = {k: val for k, val in text.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return {"model_type": "idefics3", "text_config": text,
            "vision_config": {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                              "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_attention_heads,
                              "patch_size": v.patch_size, "image_size": v.image_size,
                              "hidden_act": "gelu_pytorch_tanh"},
            "scale_factor": v.scale_factor, "image_token_id": IMAGE_TOKEN, "pad_token_id": None,
            "tie_word_embeddings": model.tie_word_embeddings}


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """What Idefics3Processor gives a batch of same-size images: input_ids (after a first text token, each image's
    wrapping tokens and every tile's image tokens), labels, pixel_values (batch, tiles of all images, 3, T, T) in
    the model's dtype and pixel_attention_mask (batch, tiles, T, T) int64 (image_processing_idefics3.py pads
    with torch.zeros(..., dtype=torch.int64))."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s = training.batch_size, total_tokens(model, training)
    n_img, tiles = images_per_sample(training), tiles_per_image(v, training)
    per_tile = (v.image_size // v.patch_size) ** 2 // v.scale_factor ** 2
    per_image = tiles * per_tile + wrap_tokens_per_image(v, training)
    vocab, side = model.vocab_size, v.image_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        for i in range(n_img):
            at = 1 + i * per_image
            ids[:, at:at + tiles * per_tile] = IMAGE_TOKEN  # the layout changes no allocation, only the count
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "pixel_values": torch.empty((b, n_img * tiles, 3, side, side), dtype=dtype),
                "pixel_attention_mask": torch.ones((b, n_img * tiles, side, side), dtype=torch.int64)}

    return make


@contextlib.contextmanager
def idefics3_emulation(model: ModelSpec, training: TrainingSpec) -> Iterator[None]:
    """get_image_features, the bidirectional-mask skip, the merger's check and masked_scatter (module docstring)."""
    from transformers import masking_utils
    from transformers.models.idefics3 import modeling_idefics3

    v = model.vision
    assert v is not None
    split = [images_per_sample(training) * tiles_per_image(v, training)] * training.batch_size

    def get_image_features(self: Any, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None = None,
                           **kwargs: Any) -> Any:
        # Idefics3Model.get_image_features, step by step with the library's allocations
        kwargs.pop("return_dict", None)
        batch_size, num_images = pixel_values.shape[:2]
        pixel_values = pixel_values.to(dtype=self.dtype)
        pixel_values = pixel_values.view(batch_size * num_images, *pixel_values.shape[2:])
        nb_values_per_image = pixel_values.shape[1:].numel()
        real_images_inds = (pixel_values == 0.0).sum(dim=(-1, -2, -3)) != nb_values_per_image
        real_images_inds.view(batch_size, num_images).sum(dim=1)
        index = torch.empty((pixel_values.shape[0], 1), dtype=torch.long)  # the boolean index's nonzero()
        pixel_values = pixel_values.clone()  # pixel_values[real_images_inds]: every tile real, a gathered copy
        del index
        if pixel_attention_mask is None:
            pixel_attention_mask = torch.ones((pixel_values.size(0), pixel_values.size(2), pixel_values.size(3)),
                                              dtype=torch.bool)
        else:
            pixel_attention_mask = pixel_attention_mask.view(batch_size * num_images,
                                                             *pixel_attention_mask.shape[2:])
            index = torch.empty((pixel_attention_mask.shape[0], 1), dtype=torch.long)
            pixel_attention_mask = pixel_attention_mask.clone()
            del index
        patch_size = self.config.vision_config.patch_size
        patches_subgrid = pixel_attention_mask.unfold(dimension=1, size=patch_size, step=patch_size)
        patches_subgrid = patches_subgrid.unfold(dimension=2, size=patch_size, step=patch_size)
        patch_attention_mask = (patches_subgrid.sum(dim=(-1, -2)) > 0).bool()
        image_outputs = self.vision_model(pixel_values=pixel_values, patch_attention_mask=patch_attention_mask,
                                          return_dict=True, **kwargs)
        image_features = self.connector(image_outputs.last_hidden_state)
        image_outputs.pooler_output = [f.reshape(-1, f.shape[-1]) for f in image_features.split(split)]
        return image_outputs

    def no_check(*args: Any, **kwargs: Any) -> None:
        return None

    def masked_scatter(self: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not (self.requires_grad or source.requires_grad) or not torch.is_grad_enabled():
            return torch.empty_like(self)
        return _MaskedScatter.apply(self, mask, source)  # type: ignore[no-any-return]

    def all_patches_real(padding_mask: Any, kv_length: int, local_attention_size: int | None = None) -> bool:
        return local_attention_size is None or kv_length < local_attention_size

    saved = (modeling_idefics3.Idefics3Model.get_image_features, modeling_idefics3.torch_compilable_check,
             torch.Tensor.masked_scatter, masking_utils._ignore_bidirectional_mask_sdpa)
    modeling_idefics3.Idefics3Model.get_image_features = get_image_features  # type: ignore[method-assign]
    modeling_idefics3.torch_compilable_check = no_check
    torch.Tensor.masked_scatter = masked_scatter  # type: ignore[method-assign]
    masking_utils._ignore_bidirectional_mask_sdpa = all_patches_real
    from vramcalc.trace import _cuda

    _cuda._NO_GRAPH_FUSED[0] = True  # the frozen tower's sdpa as CUDA runs it (trace/_cuda.py)
    try:
        yield
    finally:
        _cuda._NO_GRAPH_FUSED[0] = False
        (modeling_idefics3.Idefics3Model.get_image_features, modeling_idefics3.torch_compilable_check,  # type: ignore[method-assign]
         torch.Tensor.masked_scatter, masking_utils._ignore_bidirectional_mask_sdpa) = saved
