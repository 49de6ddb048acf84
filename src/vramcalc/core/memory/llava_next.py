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
from vramcalc.core.memory.weights import QLORA_IMAGE_NOTE, image_side_bytes
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
    b = _vision._frozen_lm_text(training, text_estimate(text_model, text_training))
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
    # the language model frozen (memory/vision.py frozen_lm): the projector and image_newline trained, as under full
    # fine-tuning (LLaMA-Factory's get_forbidden_modules names neither)
    trained_projector = training.method == "full" or _vision.frozen_lm(training)
    gc = training.grad_checkpointing
    trained_tower = training.train_vision  # vision.py check: --method full and sdpa only
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
    # LoRA / QLoRA: the tower's and projector's Linears peft adapts (memory/vision.py clip_lora_targets: q_proj,
    # v_proj and all-linear reach the tower), as LLaVA-1.5's, over every tile
    lora_tower, lora_projector = _vision.clip_lora_targets(model, training.lora_targets)[:2] \
        if training.method in ("lora", "qlora") else ((), ())
    adapters, adapters_grad, layer_adapters = _vision.clip_image_adapters(model, training)
    image_graph = bool(lora_tower or lora_projector)
    hooked = gc and training.method in ("lora", "qlora")
    if trained_projector or gc or image_graph:
        saved += tokens  # Tensor.masked_scatter saves its bool mask (inputs_embeds requires grad)
    tower_kept = tower_train = forward_only = tower_lora = 0
    if lora_tower and not gc:
        # LoRA on the tower without checkpointing: every tile's layers save their sets up to the feature layer, the
        # bottom layer nothing below its first adapter (memory/vision.py clip_lora_layer_saved); the layers above it
        # run and their graph lives as long as the forward, less the feature hidden state `held` counts
        layer = _vision.clip_lora_layer_saved(v, training, rows, a_bytes, lora_tower, th)
        free = layer - _vision.clip_lora_layer_saved(v, training, rows, a_bytes, lora_tower, th, bottom=True)
        used = _vision.used_layers(v)
        tower_lora = n_tiles * (used * layer - free)
        saved += tower_lora
        forward_only += n_tiles * (v.num_layers - used) * layer
        if v.num_layers > used:
            forward_only -= n_tiles * rows * vh * a_bytes
    if image_graph and not gc:
        # the projector run with grad: GELU saves its input (576 x text width a tile) when linear_1's output needs a
        # gradient; adapted linear_1 / linear_2 save what memory/vision.py _clip_lora_saved says (linear_1 not in a
        # fresh copy: its input, a view of the whole captured hidden state, as a trained linear_1's)
        lora_p = _vision._clip_lora_saved(lora_projector, v, training, per_tile, th, a_bytes)
        fresh = dtype_bytes(training.adapter_dtype) != a_bytes or training.lora_dropout > 0
        gelu_in = per_tile * th * a_bytes if (lora_tower or "linear_1" in lora_projector) else 0
        inputs = {"linear_1": rows * vh * a_bytes, "linear_2": per_tile * th * a_bytes}
        saved += n_tiles * (gelu_in + sum(lora_p.values())
                            + (0 if fresh else sum(inputs[m] for m in lora_projector)))
    if trained_tower:
        # --train-vision: the CLIP tower trained over every tile, as LLaVA-1.5's (memory/vision.py _tower_saved, per
        # tile here): the layers up to vision_feature_layer save their sets (with checkpointing their inputs); the
        # layers above it run and their graph lives as long as the output's last_hidden_state, which the model
        # output holds until the loss (forward_only); the patch Conv2d saves its input, the tiles' torch.cat copy
        # (measured with the tracer: less one rows x width a layer without checkpointing, as the flash kernel's
        # output is a transposed view of a (rows, heads, head_dim) tensor, so sdpa_attention_forward's
        # transpose(1, 2).contiguous() and out_proj's input are that same storage)
        used = _vision.used_layers(v)
        shared = 0 if gc else n_tiles * rows * vh * a_bytes
        tower_train = _vision._tower_saved(v, training, rows, a_bytes, tiles=n_tiles) + pixel - used * shared
        forward_only = _vision._tower_saved(v, training, rows, a_bytes, unreached=True, tiles=n_tiles) \
            - (v.num_layers - used) * shared
        if v.num_layers > used:  # the first layer above saves (or keeps) the feature hidden state `held` counts
            forward_only -= n_tiles * rows * vh * a_bytes
        saved += tower_train
    elif gc:
        # Checkpointing: activation_checkpointing_enable (transformers modeling_utils.py) calls
        # enable_input_require_grads whatever the method, which hooks the CLIP patch Conv2d too, so the frozen tower
        # runs with grad: its checkpointed CLIPEncoderLayers keep their inputs and pre_layrnorm its input
        # ((layers + 1) x rows x width a tile); a frozen projector's GELU saves its input; with adapters the text
        # embeddings' output, a leaf that requires grad, outlives masked_scatter's new inputs_embeds
        tower_kept = n_tiles * (v.num_layers + 1) * rows * vh * a_bytes
        if not trained_projector:
            tower_kept += (n_tiles * per_tile * th + tokens * th) * a_bytes
        elif _vision.frozen_lm(training):  # the frozen text embeddings' hooked output, as with adapters
            tower_kept += tokens * th * a_bytes
    # The tower's forward, layer by layer (modeling_clip.py CLIPEncoderLayer) over every tile, while the text
    # embeddings exist: pixel_values and its concatenated copy, and one layer's transients at its MLP (measured
    # with the tracer, the peak at quick_gelu's sigmoid: the layer's input, the post-attention residual,
    # layer_norm2's output and one more width-wide tensor; fc1's output, 1.702 x and the sigmoid, intermediate
    # wide) or its attention (the fused sdpa CUDA picks for a frozen tower: the input, layer_norm1's output, q, k,
    # v, the output and out_proj's)
    layer_t = n_tiles * rows * max(4 * vh + 3 * vi, 7 * vh) * a_bytes
    tower_moment = tokens * th * a_bytes + 2 * pixel + layer_t
    if trained_tower:
        # the trained layers' saved sets (or kept inputs) pile up as the tower runs; at its end, beside them, the
        # last layer's output and residual (its other transients are in its saved set)
        tower_moment += tower_train - pixel + forward_only
        if not gc:
            tower_moment += 2 * n_tiles * rows * vh * a_bytes - layer_t
    elif lora_tower or hooked:  # the saved sets or kept inputs pile up (memory/vision.py clip_lora_forward_moment)
        tower_moment = _vision.clip_lora_forward_moment(v, training, rows, n_tiles, a_bytes, th, lora_tower,
                                                        tower_moment, layer_t)
    elif gc:  # the checkpointed layers' kept inputs pile up as the tower runs
        tower_moment += n_tiles * v.num_layers * rows * vh * a_bytes
    # the projector and the packing, after the tower: the held hidden states, linear_1's or GELU's output and
    # the next (2 x tiles x 576 x text width), then one image's permuted copy, its newline'd grid and its packed
    # features beside every image packed so far
    proj_moment = (tokens * th * a_bytes + pixel + n_tiles * rows * vh * a_bytes * 2
                   + 2 * n_tiles * per_tile * th * a_bytes + saved + tower_kept + forward_only)
    # image features with a graph behind them make the language model's bottom layer save from its input on
    # (memory/vision.py lm_input_grad_saved)
    lm_input = _vision.lm_input_grad_saved(text_model, text_training) if image_graph else 0
    trainable_text = b.trainable_parameters
    drop = _vision._lm_drop(training, b)  # frozen_lm: the text run's stand-in embedding out again
    extra_trainable = (projector + newline if trained_projector else 0) + adapters - drop
    # a trained tower's parameters: the layers above the feature layer and post_layernorm get no gradient
    # (memory/vision.py unreached_params), so neither gradients nor AdamW states for them; nor for those layers'
    # adapters (clip_image_adapters)
    tower_trainable = tower if trained_tower else 0
    with_grad = extra_trainable - adapters + adapters_grad \
        + (tower - _vision.unreached_params(v) if trained_tower else 0)

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    grad_all = _vision._scaled(b.gradients, trainable_text, with_grad)
    img_w = image_side_bytes(model, training, recipe, tower, projector + newline)  # QLoRA: 4-bit Linears (weights.py)
    # QLoRA: a layer's quantized Linear holds its dequantized weight beside the layer's transients (their peak is at
    # the activation, one intermediate-wide tensor past fc1's call), the projector's beside the projector moment
    tower_moment += max(0, img_w.dequant_tower - n_tiles * rows * vi * a_bytes)
    proj_moment += img_w.dequant_projector
    raw.append(("forward.vision", _m.FWD_VISION,
                (_vision._scaled(accum, trainable_text, with_grad), max(tower_moment, proj_moment))))
    for key, layout, values in b.moments:
        # a trained tower's gradients come last (its backward runs after the language model's): before it, and
        # unless earlier micro-batches accumulated them, only the projector's are added
        grown = extra_trainable if (trained_tower and key.startswith("backward.") and key != "backward.end"
                                    and training.grad_accum == 1) else with_grad
        values = _vision._grown(layout, values, trainable_text, grown)
        if key.startswith("forward."):
            lm = in_forward if key != "forward.loss" else _vision.loss_held_hidden(model, training)
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + pixel + held + lm + forward_only
                                                 + lm_input)))
        elif key == "backward.bottom":
            # the projector's backward runs after the text model's bottom layer and before the embedding's (its
            # nodes are newer): its saved tensors are gone at the bottom moment (a trained tower's are not)
            raw.append((key, (*layout, _SAVED), (*values, tower_kept + tower_train + tower_lora + lm_input)))
        elif key.startswith("backward.") and key != "backward.end":
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + lm_input)))
        else:
            raw.append((key, layout, values))
    if (lora_tower or hooked) and not trained_tower:
        # LoRA on the tower, or the frozen tower hooked by checkpointing: memory/vision.py
        # clip_lora_backward_moment over every tile
        tower_grads = _vision.used_layers(v) * layer_adapters
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, _vision.clip_lora_backward_moment(
            v, training, rows, n_tiles, a_bytes, th, lora_tower, tower_kept, tower_lora,
            (_vision._scaled(b.gradients, trainable_text, with_grad - tower_grads), grad_all))))
    elif gc or trained_tower:
        # The tower's backward runs after the language model's (its nodes are the oldest but the text embedding's),
        # one layer at a time. Frozen and hooked (checkpointing): the layer recomputed with grad saves
        # layer_norm1's output, q, k, v and sdpa's output with its fp32 logsumexp per head, layer_norm2's input and
        # its fp32 stats, fc1's output and quick_gelu's sigmoid (the frozen Linears save no input); at quick_gelu's
        # backward mul, the gradient flowing in (width) and three intermediate-wide ones (measured with the
        # tracer), beside every layer's kept input. Trained (--train-vision): every gradient but the tower's
        # exists and AccumulateGrad fills the tower's as its layers go down, while their saved sets are freed: the
        # larger of its start (no tower gradient, the saved set whole) and its bottom layer (every gradient, that
        # layer's saved set and the Conv2d's saved input); recomputed with checkpointing, the trained fc1 and fc2
        # save their inputs too (layer_norm2's output, quick_gelu's output)
        heads = v.num_attention_heads
        recomputed = n_tiles * rows * ((5 * vh + 2 * vi) * a_bytes + 4 * heads + 2 * 2 * 4)
        at_mul = n_tiles * rows * (vh + 3 * vi) * a_bytes
        values = (grad_all, tower_kept + recomputed, at_mul)
        if trained_tower:
            own = recomputed + n_tiles * rows * (vh + vi) * a_bytes if gc else \
                _vision._tower_saved(v, training, rows, a_bytes, tiles=n_tiles, one_layer=True) - shared
            # (at quick_gelu's backward mul, fc2's backward has freed its saved input and added its gradients)
            fc2_in = n_tiles * rows * vi * a_bytes
            fc2_grad = _vision._scaled(b.gradients, trainable_text, vh * vi + vh) - b.gradients
            # (recomputed with checkpointing, one more rows x width there: measured with the tracer, 5.9 MB a
            # 5-tile image at 1024 wide)
            own -= fc2_in - (n_tiles * rows * vh * a_bytes if gc else 0)
            start = (_vision._scaled(b.gradients, trainable_text, extra_trainable) + fc2_grad,
                     tower_train - (0 if gc else fc2_in) + (own if gc else 0), at_mul)
            # (at the bottom layer's backward its own weights' gradients are not there yet: one CLIPEncoderLayer's
            # parameters, as memory/vision.py unreached_params counts a layer)
            layer_grads = _vision._scaled(b.gradients, trainable_text, _vision.unreached_params(
                replace(v, num_layers=2, feature_layer=-2)) - 2 * vh)
            bottom = (grad_all - layer_grads + b.gradients + fc2_grad,
                      pixel + own + (n_tiles * rows * vh * a_bytes if gc else 0), at_mul)
            values = max(start, bottom, key=sum)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, values))
    weights = b.weights + img_w.total + adapters * dtype_bytes(training.adapter_dtype)
    states = _vision._scaled(b.optimizer_state, trainable_text, with_grad)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "activations.pixel_values": pixel, "activations.image_side_saved": saved + tower_kept,
                    "activations.image_outputs_held": held + in_forward,
                    "temporaries.vision_tower_forward": max(tower_moment, proj_moment)})
    bh, bw = best_resolution(v, height, width)
    grid_rows, grid_cols = unpadded_grid(v, height, width)
    mode = _vision.FROZEN_LM_NOTE + "; the projector and image_newline trained" if drop else \
        "full fine-tuning trains the projector and image_newline" if trained_projector else \
        f"--method {training.method} adapts the language model" + _vision.clip_lora_phrase(lora_tower,
                                                                                          lora_projector, adapters)
    notes = (
        f"vision-language model (LLaVA-NeXT anyres): {_vision.images_per_sample(training)} image(s) per sample of "
        f"{height} x {width} px (height x width), resized to the best image_grid_pinpoints resolution {bh} x {bw}: "
        f"{tiles(v, height, width)} tiles of {v.image_size} px through the tower (the base image included) and "
        f"{image_tokens(v, height, width):,} image tokens each ({grid_rows} x {grid_cols} unpadded features + "
        f"{grid_rows} image_newline + {per_tile} base), added to the {training.seq_len:,} text tokens: the language "
        f"model runs on {_vision.total_tokens(model, training):,} tokens per sample (modeling_llava_next.py "
        "pack_image_features; processing_llava_next.py _get_number_of_features).",
        f"vision tower ({tower:,} parameters, CLIP ViT, modeling_clip.py) "
        + ("trained over every tile (--train-vision: its gradients, optimizer state and saved activations, or with "
           "checkpointing its kept layer inputs and one recomputed layer; the layers above vision_feature_layer run "
           "but get no gradient)" if trained_tower else
           "frozen, run with grad and recomputed in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc else
           "frozen, run with grad from its first adapted Linear (its layers' saved sets kept for the adapters' "
           "backward)" if lora_tower else "frozen, run without grad")
        + f"; {mode} ({projector + newline:,} parameters); " + QLORA_IMAGE_NOTE + ".",
        "image side: every tile's tower forward counted at one layer's transients (approximate); the model output "
        "holds the tower's last and feature-layer hidden states and the packed image features until the loss.",
    )
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector + newline,
                  trainable_parameters=trainable_text + extra_trainable + tower_trainable, weights=weights,
                  gradients=grad_all,
                  optimizer_state=states,
                  activations=b.activations + saved + tower_kept + pixel + held + in_forward + forward_only
                  + lm_input,
                  temporaries=max(b.temporaries, tower_moment, proj_moment), phases=phases,
                  details=details, notes=b.notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector + newline)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})
