"""LLaVA-NeXT (LLaVA-1.6): "anyres" image tokens and the image side of a training step.

transformers models/llava_next/modeling_llava_next.py LlavaNextModel and image_processing_llava_next.py /
processing_llava_next.py LlavaNextProcessor. The processor resizes each image to the best of
image_grid_pinpoints (image_processing_utils.py select_best_resolution), pads it there and cuts it into tiles of
the tower's image size, plus a base image resized to one tile: pixel_values (images, tiles, 3, 336, 336).
get_image_features runs the CLIP tower on every tile, the projector on every tile's 576 features, and
pack_image_features lays each image's tile features out as one grid, unpads it to the image's aspect ratio
(unpad_image), appends image_newline after each row and puts the base tile's 576 first. The language model then
runs on the text plus every image's tokens (LlavaNextProcessor._get_number_of_features, the same count).

The image arithmetic (the processor's own steps, float rounding included) is memory/anyres.py's; this module is the
estimate (memory/__init__.py routes a llava_next VisionSpec here): the text model's Breakdown on text + image
tokens, plus the tower on all tiles, the projector, the packing's copies, and what the model's output holds
(memory/vision.py does the same for LLaVA-1.5, whose layout this follows).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import moments as _m
from vramcalc.core.memory import vision as _vision
from vramcalc.core.memory.anyres import best_resolution, image_shape, image_tokens, tiles, unpadded_grid
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import image_newline_params, projector_params, vision_tower_params
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# TrainingSpec.image_size's default (memory/vision.py DEFAULT_IMAGE_SIZE): for LLaVA-NeXT it is taken as the
# image's size, as for Qwen-VL: a 224 x 224 image
_SAVED = ("image side (projector saved, tower kept, image features held, pixel_values)", "activations")


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on text + image tokens (memory/vision.py text_run), with the image side."""
    _vision.check(model, training)  # the VLM refusals, this module's check among them
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = _vision.text_run(model, training)
    b = text_estimate(text_model, text_training)
    recipe = recipe_of(training)
    w_bytes, a_bytes = dtype_bytes(recipe.weight), dtype_bytes(recipe.compute)
    th, vh, vi = model.hidden_size, v.hidden_size, v.intermediate_size
    tower, projector = vision_tower_params(v), projector_params(v, th)
    newline = image_newline_params(v, th)
    height, width = image_shape(training)
    n_img = _vision.images_per_sample(training) * training.batch_size
    per_tile = (v.image_size // v.patch_size) ** 2  # the class token dropped
    rows = per_tile + 1  # the tower's sequence: patches + the class token
    n_tiles = n_img * tiles(v, height, width)
    img_tokens = n_img * image_tokens(v, height, width)
    tokens = training.batch_size * _vision.total_tokens(model, training)
    trained_projector = training.method == "full"
    gc = training.grad_checkpointing
    # pixel_values (images, tiles, 3, H, W) in the model's dtype, an input of the step; get_image_features
    # concatenates each image's tiles (torch.cat of pix_val[:num_patch]: a copy) before the tower
    pixel = n_tiles * 3 * v.image_size * v.image_size * w_bytes
    # the model output's image_outputs (BaseModelOutputWithPooling) holds the tower's last_hidden_state and the
    # captured vision_feature_layer hidden state (select_hidden_states asks for that one only) of every tile, and
    # pooler_output, the packed features (image tokens x text width), until the loss
    # (measured with the tracer: both hidden states whatever the method; a trained linear_1's saved input comes on
    # top, one more rows x width a tile)
    held = 2 * n_tiles * rows * vh * a_bytes + img_tokens * th * a_bytes
    # LlavaNextModel.forward's torch.cat of the packed features (a copy) lives through the language model, beside
    # the placeholder mask, and is gone once it returns (before the logits and the loss)
    in_forward = img_tokens * th * a_bytes + tokens
    saved = 0
    if trained_projector:
        # LlavaNextMultiModalProjector's graph: linear_1 saves its input, a view of the whole captured hidden state
        # (rows x tower width a tile); nn.GELU saves linear_1's output; linear_2 saves GELU's output. The packing
        # (permute + contiguous, unpad slices, the newline torch.cat) saves no tensor.
        saved += n_tiles * (rows * vh + 2 * per_tile * th) * a_bytes
    if trained_projector or gc:
        saved += tokens  # Tensor.masked_scatter saves its bool mask (inputs_embeds requires grad)
    tower_kept = 0
    if gc:
        # Checkpointing: activation_checkpointing_enable (transformers modeling_utils.py) calls
        # enable_input_require_grads whatever the method, which hooks the CLIP patch Conv2d too, so the frozen tower
        # runs with grad: its checkpointed CLIPEncoderLayers keep their inputs and pre_layrnorm its input
        # ((layers + 1) x rows x width a tile); a frozen projector's GELU saves its input; with adapters the text
        # embeddings' output, a leaf that requires grad, outlives masked_scatter's new inputs_embeds
        tower_kept = n_tiles * (v.num_layers + 1) * rows * vh * a_bytes
        if not trained_projector:
            tower_kept += (n_tiles * per_tile * th + tokens * th) * a_bytes
    # The tower's forward, layer by layer (modeling_clip.py CLIPEncoderLayer) over every tile, while the text
    # embeddings exist: pixel_values and its concatenated copy, and one layer's transients at its MLP (measured
    # with the tracer, the peak at quick_gelu's sigmoid: the layer's input, the post-attention residual,
    # layer_norm2's output and one more width-wide tensor; fc1's output, 1.702 x and the sigmoid, intermediate
    # wide) or its attention (the fused sdpa CUDA picks for a frozen tower: the input, layer_norm1's output, q, k,
    # v, the output and out_proj's)
    layer_t = n_tiles * rows * max(4 * vh + 3 * vi, 7 * vh) * a_bytes
    tower_moment = tokens * th * a_bytes + 2 * pixel + layer_t
    if gc:  # the checkpointed layers' kept inputs pile up as the tower runs
        tower_moment += n_tiles * v.num_layers * rows * vh * a_bytes
    # the projector and the packing, after the tower: the held hidden states, linear_1's or GELU's output and
    # the next (2 x tiles x 576 x text width), then one image's permuted copy, its newline'd grid and its packed
    # features beside every image packed so far
    proj_moment = (tokens * th * a_bytes + pixel + n_tiles * rows * vh * a_bytes * 2
                   + 2 * n_tiles * per_tile * th * a_bytes + saved + tower_kept)
    trainable_text = b.trainable_parameters
    extra_trainable = projector + newline if trained_projector else 0

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    grad_all = _vision._scaled(b.gradients, trainable_text, extra_trainable)
    raw.append(("forward.vision", _m.FWD_VISION,
                (_vision._scaled(accum, trainable_text, extra_trainable), max(tower_moment, proj_moment))))
    for key, layout, values in b.moments:
        values = _vision._grown(layout, values, trainable_text, extra_trainable)
        if key.startswith("forward."):
            lm = in_forward if key != "forward.loss" else 0
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + pixel + held + lm)))
        elif key == "backward.bottom":
            # the projector's backward runs after the text model's bottom layer and before the embedding's (its
            # nodes are newer): its saved tensors are gone at the bottom moment
            raw.append((key, (*layout, _SAVED), (*values, tower_kept)))
        elif key.startswith("backward.") and key != "backward.end":
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept)))
        else:
            raw.append((key, layout, values))
    if gc:
        # The hooked tower's backward runs after the language model's (its nodes are the oldest but the text
        # embedding's), one checkpointed layer at a time: the layer recomputed with grad saves layer_norm1's output,
        # q, k, v and sdpa's output with its fp32 logsumexp per head, layer_norm2's input and its fp32 stats, fc1's
        # output and quick_gelu's sigmoid (the frozen Linears save no input); at quick_gelu's backward mul, the
        # gradient flowing in (width) and three intermediate-wide ones (measured with the tracer), beside every
        # layer's kept input
        heads = v.num_attention_heads
        recomputed = n_tiles * rows * ((5 * vh + 2 * vi) * a_bytes + 4 * heads + 2 * 2 * 4)
        at_mul = n_tiles * rows * (vh + 3 * vi) * a_bytes
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (grad_all, tower_kept + recomputed, at_mul)))
    weights = b.weights + (tower + projector + newline) * w_bytes
    states = _vision._scaled(b.optimizer_state, trainable_text, extra_trainable)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": tower * w_bytes, "weights.projector": (projector + newline) * w_bytes,
                    "activations.pixel_values": pixel, "activations.image_side_saved": saved + tower_kept,
                    "activations.image_outputs_held": held + in_forward,
                    "temporaries.vision_tower_forward": max(tower_moment, proj_moment)})
    bh, bw = best_resolution(v, height, width)
    grid_rows, grid_cols = unpadded_grid(v, height, width)
    mode = "full fine-tuning trains the projector and image_newline" if trained_projector else \
        f"--method {training.method} adapts the language model only (projector frozen)"
    notes = (
        f"vision-language model (LLaVA-NeXT anyres): {_vision.images_per_sample(training)} image(s) per sample of "
        f"{height} x {width} px (height x width), resized to the best image_grid_pinpoints resolution {bh} x {bw}: "
        f"{tiles(v, height, width)} tiles of {v.image_size} px through the tower (the base image included) and "
        f"{image_tokens(v, height, width):,} image tokens each ({grid_rows} x {grid_cols} unpadded features + "
        f"{grid_rows} image_newline + {per_tile} base), added to the {training.seq_len:,} text tokens: the language "
        f"model runs on {_vision.total_tokens(model, training):,} tokens per sample (modeling_llava_next.py "
        "pack_image_features; processing_llava_next.py _get_number_of_features).",
        f"vision tower ({tower:,} parameters, CLIP ViT, modeling_clip.py) frozen, "
        + ("run with grad and recomputed in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc else "run without grad")
        + f"; {mode} ({projector + newline:,} parameters); QLoRA keeps the tower and projector 16-bit (an "
        "assumption: LLaVA recipes skip them from quantization); LoRA targets resolve in the language model only.",
        "image side: every tile's tower forward counted at one layer's transients (approximate); the model output "
        "holds the tower's last and feature-layer hidden states and the packed image features until the loss.",
    )
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector + newline,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights, gradients=grad_all,
                  optimizer_state=states,
                  activations=b.activations + saved + tower_kept + pixel + held + in_forward,
                  temporaries=max(b.temporaries, tower_moment, proj_moment), phases=phases,
                  details=details, notes=b.notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector + newline)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})
