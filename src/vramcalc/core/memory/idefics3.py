"""Idefics3 and SmolVLM (kind idefics3): the processor's tiles, then the text model's step on text + image tokens
with the image side's terms added.

transformers models/idefics3/image_processing_idefics3.py Idefics3ImageProcessor (SmolVLMImageProcessor is the
same arithmetic): each image is resized so that its longest edge is size["longest_edge"] (up or down, the other
edge int()-scaled and made even), then to multiples of max_image_size (the tower's image_size) on both edges
(resize_for_vision_encoder), and, when larger than one tile, cut into rows x cols tiles of image_size px plus the
image itself resized to one tile (the global image; split_images). Every tile goes through the tower.
models/idefics3/processing_idefics3.py Idefics3Processor puts image_seq_len = (image_size // patch_size)^2 /
scale_factor^2 image tokens per tile, with <fake_token_around_image> and <row_r_col_c> before each tile, "\\n"
after each row, and "\\n" <fake_token_around_image> <global-img> ... <fake_token_around_image> around the global
image (its _get_num_multimodal_tokens: base image_seq_len + 3, each row cols x (image_seq_len + 2) + 1; "\\n\\n"
one token, as the Llama 3 and SmolLM2 tokenizers merge it).

models/idefics3/modeling_idefics3.py Idefics3Model.forward: the text embeddings first; get_image_features casts
pixel_values, finds the real tiles ((pixel_values == 0).sum(...) over a bool copy), gathers them
(`pixel_values[real_images_inds]`: a copy, and the same for pixel_attention_mask, int64 per pixel as the processor
pads it), unfolds the pixel mask into the patch mask, runs Idefics3VisionTransformer on every tile (the
bidirectional mask is skipped: every patch is real), then Idefics3Connector: pixel_shuffle's two reshapes after
permutes copy the tower's output twice, and modality_projection.proj (no bias) maps width x scale_factor^2 to the
text width. The features stay in the output (image_outputs.pooler_output, views of them) and
`torch.cat(image_hidden_states)` copies them once more for inputs_merger's masked_scatter; the language model
(Llama: causal, no mask) runs on the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError
from vramcalc.core.memory import moments as _m
from vramcalc.core.memory import siglip_lora as _sl
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.vision import (
    _SAVED,
    DEFAULT_IMAGE_SIZE,
    _grown,
    _scaled,
    _siglip_layer_saved,
    _text_model,
    check,
    images_per_sample,
)
from vramcalc.core.memory.weights import QLORA_IMAGE_NOTE, image_side_bytes
from vramcalc.core.params import projector_params, vision_tower_params
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec

# image_processing_idefics3.py MAX_IMAGE_SIZE: the resize keeps both edges at most 4096 px
MAX_IMAGE_SIZE = 4096


def image_hw(v: VisionSpec, training: TrainingSpec) -> tuple[int, int]:
    """The image's height and width in pixels: --image-size (its default standing for a square image: only the
    aspect ratio matters, the processor resizes the longest edge to longest_edge) and --image-width (0: square)."""
    h = v.image_size if training.image_size == DEFAULT_IMAGE_SIZE else training.image_size
    return h, training.image_width or h


def resized(v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    """The image's size when split_images cuts it, with the library's own float steps
    (image_processing_idefics3.py): _resize_output_size_rescale_to_max_len to longest_edge (the other edge
    int(), then made even), _resize_output_size_scale_below_upper_bound to MAX_IMAGE_SIZE, then
    resize_for_vision_encoder: the longest edge up to a multiple of image_size, the other int()-scaled from it and
    up to a multiple of image_size."""
    aspect = width / height
    if width >= height:
        width = v.longest_edge
        height = int(width / aspect)
        height += height % 2
    else:
        height = v.longest_edge
        width = int(height * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width = MAX_IMAGE_SIZE
        height = int(width / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height = MAX_IMAGE_SIZE
        width = int(height * aspect)
    height, width = max(height, 1), max(width, 1)
    tile = v.image_size
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return height, width


def grid(v: VisionSpec, training: TrainingSpec) -> tuple[int, int]:
    """(rows, cols) of tiles split_images cuts; (0, 0) when the image is one tile (no global image then)."""
    h, w = resized(v, *image_hw(v, training))
    if h > v.image_size or w > v.image_size:
        return h // v.image_size, w // v.image_size
    return 0, 0


def tiles_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Tiles the tower runs on per image: rows x cols and the global image, or the one tile."""
    rows, cols = grid(v, training)
    return rows * cols + 1 if rows else 1


def tokens_per_tile(v: VisionSpec) -> int:
    """Idefics3Model.image_seq_len: (image_size // patch_size)^2 / scale_factor^2 (169 for Idefics3-8B's 364 px
    tiles of 14 px patches, scale 2; 81 for SmolVLM 2.2B, 384 / 14 and scale 3; 64 for SmolVLM 256M / 500M)."""
    return (v.image_size // v.patch_size) ** 2 // v.scale_factor ** 2


def wrap_tokens_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Text tokens the processor adds around one image's image tokens (processing_idefics3.py
    _get_num_multimodal_tokens less the image tokens): 3 around the global image, and for a split image 2 before
    each tile and one "\\n" per row (the prompt's own <image> is replaced: counted here, not in --seq-len)."""
    rows, cols = grid(v, training)
    return 3 + rows * (2 * cols + 1)


def image_tokens_per_image(v: VisionSpec, training: TrainingSpec) -> int:
    """Tokens one image adds to the sequence: every tile's image tokens and the wrapping tokens."""
    return tiles_per_image(v, training) * tokens_per_tile(v) + wrap_tokens_per_image(v, training)


def total_tokens(model: ModelSpec, training: TrainingSpec) -> int:
    """Tokens the language model runs on per sample: the text's --seq-len and every image's tokens."""
    assert model.vision is not None
    return training.seq_len + images_per_sample(training) * image_tokens_per_image(model.vision, training)


def text_run(model: ModelSpec, training: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The language model and its run: the sequence lengthened by the image tokens, the image options gone (a Llama
    model: causal, no mask; the image tokens attend causally like the text)."""
    out = replace(training, seq_len=total_tokens(model, training), images=0, image_size=DEFAULT_IMAGE_SIZE,
                  image_width=0, train_vision=False)
    if training.method in ("lora", "qlora"):  # the image side's targets taken out (memory/siglip_lora.py)
        out = replace(out, lora_targets=_sl.tower_lora_targets(model, training.lora_targets)[2])
    return _text_model(model), out


def _check(model: ModelSpec, training: TrainingSpec) -> None:
    v = model.vision
    assert v is not None
    if training.image_size != DEFAULT_IMAGE_SIZE or training.image_width:
        h, w = image_hw(v, training)
        if max(h, w) > 200 * min(h, w):
            raise SpecError("image_size", f"a {h} x {w} image: an aspect ratio above 200 is not modelled for "
                            f"{model.name}; give a less elongated --image-size / --image-width")
    check(model, training)
    _sl.check(model, training)


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on text + image tokens, with the tiles' tower, the connector and their inputs."""
    _check(model, training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = text_estimate(text_model, text_training)
    recipe = recipe_of(training)
    w_bytes, a_bytes = dtype_bytes(recipe.weight), dtype_bytes(recipe.compute)
    # under autocast the residual streams are fp32 (positions added to the conv output, LayerNorm autocast to fp32)
    r_bytes = 4 if recipe.autocast else a_bytes
    th, vh, vi = model.hidden_size, v.hidden_size, v.intermediate_size
    tower, projector = vision_tower_params(v), projector_params(v, th)
    tiles = tiles_per_image(v, training)
    n = images_per_sample(training) * tiles * training.batch_size  # tiles the tower runs on per step
    side, layers = v.image_size, v.num_layers
    rows = (side // v.patch_size) ** 2  # patches per tile: the tower's sequence
    per_tile = tokens_per_tile(v)
    gc = training.grad_checkpointing
    trained_projector = training.method == "full"
    seq = total_tokens(model, training)
    tokens = training.batch_size * seq
    # the processor's inputs: pixel_values (batch, tiles, 3, T, T) in the model's dtype (get_image_features casts to
    # it) and pixel_attention_mask (batch, tiles, T, T) int64
    pixel, pmask = n * 3 * side * side * w_bytes, n * side * side * 8
    # get_image_features' gathers (pixel_values[real_images_inds], the mask's), alive until it returns, and the
    # patch mask (bool per patch)
    gathered = pixel + pmask + n * rows
    # kept in the model's output to the loss: the tower's last_hidden_state and the connector's output (pooler_output
    # holds views of it); until Idefics3Model.forward returns, torch.cat's copy of the features too
    kept_output = n * rows * vh * r_bytes + n * per_tile * th * a_bytes
    cat_copy = n * per_tile * th * a_bytes
    # checkpointing hooks the tower (enable_input_require_grads: Idefics3VisionTransformer.get_input_embeddings is
    # its embeddings module, whose output becomes a leaf that requires grad) for every method
    hooked = gc and not training.train_vision
    # LoRA / QLoRA adapters peft puts on the tower and the connector (memory/siglip_lora.py: q_proj / v_proj, the
    # default, name the tower's too; all-linear adds modality_projection.proj)
    lora_tower, lora_connector = _sl.adapted(model, training)
    adapters = _sl.adapter_params(model, training)
    # modality_projection.proj saves its input (pixel_shuffle's second copy) when its weight is trained; adapted,
    # its lora_A saves that input (or its adapter-dtype copy) and lora_B lora_A's output
    saved_projector = n * rows * vh * a_bytes if trained_projector else 0
    if lora_connector:
        saved_projector = n * _sl.connector_saved(v, training, rows, a_bytes, th)
    saved = saved_projector
    if trained_projector or gc or lora_tower or lora_connector:
        saved += tokens  # Tensor.masked_scatter saves its bool mask (inputs_embeds requires grad)
    # Tower adapters without checkpointing: each layer's saved set (siglip_lora.layer_saved; the bottom layer's
    # input, the embeddings' output, needs no gradient), post_layernorm its input and stats
    lora_saved = 0
    if lora_tower and not gc:
        lora_saved = n * (_sl.layer_saved(v, training, rows, a_bytes, lora_tower, False)
                          + (layers - 1) * _sl.layer_saved(v, training, rows, a_bytes, lora_tower, True)
                          + rows * vh * a_bytes + 8 * rows)
        saved += lora_saved
    if (lora_tower or lora_connector) and not gc:  # the text model's bottom layer then saves its input's set too
        saved += _sl.text_bottom_saved(text_model, text_training, seq)
    tower_saved = 0
    if training.train_vision:
        # the patch Conv2d keeps its input (the gathered pixel_values), the position embedding its int64 ids; each
        # layer its saved set (with checkpointing its input), post_layernorm its input and stats
        per_layer = rows * vh * a_bytes if gc else _siglip_layer_saved(v, training, rows, a_bytes)
        tower_saved = n * 3 * side * side * w_bytes + n * rows * 8 \
            + n * (layers * per_layer + rows * vh * a_bytes + 8 * rows)
        saved += tower_saved
    tower_kept = 0
    if hooked:
        # each checkpointed layer keeps its input (the first one's is the hooked embeddings output), post_layernorm
        # its input and fp32 mean / rstd; with a frozen text embedding its output, a leaf that requires grad,
        # outlives masked_scatter's new inputs_embeds
        tower_kept = n * ((layers + 1) * rows * vh * r_bytes + 8 * rows) \
            + (tokens * th * r_bytes if not trained_projector else 0)
    # The tower's forward, layer by layer, while the text embeddings, the inputs and the gathers exist: the
    # embeddings' output (Idefics3Encoder.forward's inputs_embeds holds it through the loop), the layer's input (the
    # loop's hidden_states), the post-attention residual, or with checkpointing every layer's kept input, and one
    # layer's transients; then the connector: the tower's output kept, pixel_shuffle's two copies
    before = tokens * th * r_bytes + pixel + pmask + gathered
    hidden = n * rows * vh * r_bytes  # one hidden state of every tile
    if training.train_vision and not gc:
        # a trained tower: every layer's saved set (its transients are saved), the position ids; at the connector
        # the last layer's output (post_layernorm's saved input, and its stats), the tower's output and
        # pixel_shuffle's two copies, the largest moment
        kept = n * (layers * _siglip_layer_saved(v, training, rows, a_bytes) + rows * 8)
        vision_moment = before + kept + 4 * hidden + 8 * n * rows
    else:
        # at the MLP (gelu): the kept inputs and the post-attention residual, layer_norm2's output, fc1's and the
        # gelu's outputs; at the attention: the kept inputs, layer_norm1's output, q, k, v, and sdpa's output and
        # out_proj's (eager: the 16-bit scores, their fp32 cast and the fp32 softmax per head instead of the two)
        kept_mlp = (layers + 1 if gc else min(3, layers + 1)) * hidden
        # (layer_norm's outputs are fp32 under autocast: LayerNorm runs in fp32 there)
        mlp = n * rows * (vh * r_bytes + 2 * vi * a_bytes)
        attn = n * rows * (vh * r_bytes + 5 * vh * a_bytes)
        if training.attention == "eager":
            attn = n * rows * (vh * r_bytes + 3 * vh * a_bytes + v.num_attention_heads * rows * (a_bytes + 4 + 4))
        tower_moment = before + max(kept_mlp + mlp, kept_mlp - hidden + attn)
        connector_moment = before + kept_mlp - hidden + 3 * hidden  # the output kept, the two copies
        if lora_tower and not gc:
            # the adapted layers' saved sets pile up; the peak in the top layer (siglip_lora.top_moment); at the
            # connector all of them are there
            below = lora_saved - n * (rows * vh * a_bytes + 8 * rows
                                      + _sl.layer_saved(v, training, rows, a_bytes, lora_tower, True))
            tower_moment = before + below + n * _sl.top_moment(v, training, rows, a_bytes, lora_tower)
            # (post_layernorm's saved input is one of the connector moment's hidden states already)
            connector_moment += lora_saved - hidden
        elif lora_tower:  # with checkpointing an adapted Linear's forward saves nothing: its transients
            tower_moment = max(tower_moment, before + kept_mlp - hidden
                               + n * (_sl.forward_transient(v, training, rows, a_bytes, lora_tower)
                                      + 2 * rows * vh * a_bytes))
        if lora_connector:  # its input's adapter-dtype copy (a 16-bit input is pixel_shuffle's copy, counted) and
            # lora_B's output, beside the copies
            connector_moment += n * _sl.connector_saved(v, training, rows, a_bytes, th) \
                - (hidden if dtype_bytes(training.adapter_dtype) == a_bytes else 0)
        vision_moment = max(tower_moment, connector_moment)
    trainable_text = b.trainable_parameters
    extra_trainable = (projector if trained_projector else 0) + (tower if training.train_vision else 0) + adapters

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    img_w = image_side_bytes(model, training, recipe, tower, projector)  # QLoRA: the Linears 4-bit (weights.py)
    vision_moment += img_w.dequant_forward
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, extra_trainable), vision_moment)))
    before_tower = projector if trained_projector else 0
    for key, layout, values in b.moments:
        in_backward = key.startswith("backward.") and key != "backward.end"
        values = _grown(layout, values, trainable_text, before_tower if in_backward else extra_trainable)
        if key.startswith("forward."):
            inside = cat_copy if key != "forward.loss" else 0  # freed when Idefics3Model.forward returns
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + pixel + pmask + kept_output + inside)))
        elif key == "backward.bottom":
            raw.append((key, (*layout, _SAVED), (*values, tower_saved + tower_kept)))
        elif in_backward:
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept)))
        else:
            raw.append((key, layout, values))
    # The tower's backward runs last (its nodes are the oldest but the text embedding's), one layer at a time (memory/
    # vision.py _siglip_estimate: its peak at a layer's MLP backward)
    if training.train_vision:
        # at the top layer's gelu backward: fc2's weight and bias gradients exist, the layer's saved set whole
        # (with checkpointing, recomputed) and the gelu's incoming gradient (intermediate wide); measured with the
        # tracer, the gradient into fc2 is freed by then
        layer_grads = vi * vh + vh
        text_grads = _scaled(b.gradients, trainable_text, projector)
        at_gelu = n * (_siglip_layer_saved(v, training, rows, a_bytes) + rows * vi * a_bytes)
        this_layer = n * (rows * vh * a_bytes if gc else _siglip_layer_saved(v, training, rows, a_bytes))
        top = (text_grads + layer_grads * w_bytes, tower_saved - this_layer, at_gelu)
        bottom = (text_grads + tower * w_bytes, n * 3 * side * side * w_bytes, at_gelu)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, max(top, bottom, key=sum)))
    elif hooked:
        heads = v.num_attention_heads
        at_gelu = n * rows * ((5 * vh + vi) * a_bytes + 4 * heads + 8 + (vh + 2 * vi) * a_bytes)
        if training.attention == "eager":
            at_gelu = n * rows * ((4 * vh + vi) * a_bytes + heads * rows * (4 + a_bytes) + 8
                                  + (vh + 2 * vi) * a_bytes)
            at_softmax = n * rows * (4 * vh * a_bytes + heads * rows * (4 + a_bytes + 4 + a_bytes))
            at_gelu = max(at_gelu, at_softmax)
        if lora_tower:  # the recomputed layer saves its adapters' inputs and lora_A outputs too
            at_gelu += n * (_sl.layer_saved(v, training, rows, a_bytes, lora_tower, True)
                            - _sl.layer_saved(v, training, rows, a_bytes, (), True))
            at_gelu = max(at_gelu, n * _sl.recomputed_fc2(v, training, rows, a_bytes, lora_tower))
        # kept: every layer's input, and with a frozen text embedding its hooked output and that leaf's .grad
        # (AccumulateGrad stores it once the text model's backward reaches the embeddings)
        kept = n * rows * vh * layers * r_bytes + (2 * tokens * th * r_bytes if not trained_projector else 0)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (_scaled(b.gradients, trainable_text, extra_trainable), kept, at_gelu)))
    elif lora_tower:  # tower adapters without checkpointing (siglip_lora.backward_without_checkpointing)
        kept, bwd = _sl.backward_without_checkpointing(v, training, rows, a_bytes, lora_tower, n, lora_saved)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (_scaled(b.gradients, trainable_text, extra_trainable), kept, bwd)))
    # the image-side adapters' weights in --adapter-dtype (peft autocast_adapter_dtype)
    image_adapters = adapters * dtype_bytes(training.adapter_dtype)
    weights = b.weights + img_w.total + image_adapters
    states = _scaled(b.optimizer_state, trainable_text, extra_trainable)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    if image_adapters:
        details["weights.image_adapters"] = image_adapters
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "activations.pixel_values": pixel + pmask, "activations.image_side_saved": saved + tower_kept,
                    "activations.tower_output_kept": kept_output,
                    "temporaries.vision_tower_forward": vision_moment})
    rows_cols = grid(v, training)
    h, w = image_hw(v, training)
    split = (f"{rows_cols[0]} x {rows_cols[1]} tiles and a global image" if rows_cols[0] else "one tile")
    adapted = ", ".join(lora_tower + lora_connector)
    mode = "full fine-tuning trains the connector" if trained_projector else \
        f"--method {training.method} adapts the language model only (connector frozen)" if not adapted else \
        (f"--method {training.method} also adapts the image side's {adapted} ({adapters:,} adapter parameters: "
         "peft matches the names over the whole model)")
    notes = (
        f"vision-language model (Idefics3 / SmolVLM): each {h} x {w} px image"
        + (" (the default: square)" if training.image_size == DEFAULT_IMAGE_SIZE and not training.image_width else "")
        + f" is resized to a longest edge of {v.longest_edge} px and cut into {split} of {side} px "
        f"(image_processing_idefics3.py): {tiles} tile(s) x {per_tile} image tokens + "
        f"{wrap_tokens_per_image(v, training)} wrapping tokens per image; {images_per_sample(training)} image(s) per "
        f"sample are added to the {training.seq_len:,} text tokens: the language model runs on {seq:,} tokens per "
        "sample (processing_idefics3.py; modeling_idefics3.py inputs_merger).",
        f"vision tower ({tower:,} parameters, SigLIP-shaped Idefics3VisionTransformer; {rows:,} patches per tile, "
        f"{n:,} tiles per step) "
        + ("trained (--train-vision)" if training.train_vision else
           "frozen, run with grad and recomputed in the backward (checkpointing hooks its embeddings: "
           "enable_input_require_grads)" if gc else "frozen and run without grad")
        + f"; {mode} ({projector:,} parameters, Idefics3Connector: pixel shuffle by {v.scale_factor}, one Linear); "
        + QLORA_IMAGE_NOTE + ".",
    )
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights,
                  gradients=_scaled(b.gradients, trainable_text, extra_trainable), optimizer_state=states,
                  activations=b.activations + saved + tower_kept + pixel + pmask + kept_output,
                  temporaries=max(b.temporaries, vision_moment), phases=phases, details=details,
                  notes=b.notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})


__all__ = ["estimate", "total_tokens", "grid", "image_tokens_per_image", "resized", "tiles_per_image",
           "tokens_per_tile", "wrap_tokens_per_image"]
