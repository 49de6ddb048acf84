"""Llama-3.2-Vision (model_type mllama; transformers models/mllama/modeling_mllama.py): what a step's memory needs
that is not counted yet, refused in one line.

MllamaForConditionalGeneration differs from the LLaVA-style models memory/vision.py covers: the image does not
enter the text sequence. MllamaVisionModel runs every image as max_num_tiles tiles of image_size pixels (1601 rows
each, padded to 1608) through a local encoder whose intermediate_layers_indices outputs are kept and concatenated
to a gated global encoder's output; multi_modal_projector maps that to the text width, and each
MllamaCrossAttentionDecoderLayer projects its own K/V from those vision rows, with a 4-D cross_attention_mask
(_prepare_cross_attention_mask: text rows x tiles x 1601, in the model's dtype) and full_text_row_masked_out_mask.
Parameters are counted exactly (core/params.py mllama_tower_params, mllama_text_extra_params); activations are not
modelled yet, so an estimate is refused rather than given from the decoder path, which would count every
cross-attention layer as self-attention over the text and leave the tower, the projector and the masks out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """Refuse a Llama-3.2-Vision step: its activations are not modelled yet (module docstring)."""
    del training  # every run is refused alike
    raise UnsupportedCombination(
        f"{model.name} is a Llama-3.2-Vision (mllama) model: its parameters are counted, but a step's memory is not "
        "modelled yet (the tiled two-encoder vision tower, the projector, the cross-attention layers' K/V over the "
        "vision tokens and their masks); use `vramcalc show` for the counts, or estimate a text model")
