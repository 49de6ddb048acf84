"""Llama 4 multimodal (kind llama4): the processor's tiles, then the text model's step on text + image tokens with
the image side's terms added.

transformers models/llama4/image_processing_llama4.py Llama4ImageProcessor: find_supported_resolutions lists every
(rows, cols) tile layout of at most max_patches tiles (times the tile side, size 336); get_best_fit picks the
canvas that needs the smallest upscale (or, when none upscales, the least downscale), ties to the least area; the
image is resized into it, padded and cut into rows x cols tiles, and when that is more than one a global tile (the
image resized to 336 x 336) is appended. models/llama4/processing_llama4.py Llama4Processor._prompt_split_image:
<|image_start|>, for a split image each row's tiles of num_patches_per_chunk <|patch|> tokens with a
<|tile_x_separator|> between them and a <|tile_y_separator|> after the row, then <|image|>, the global tile's
<|patch|> tokens and <|image_end|>; num_patches_per_chunk = (336 // 14)^2 // downsample_ratio (1 / 0.5^2 = 4): 144.
The <|patch|> tokens (config image_token_index) are the placeholders the image features replace.

models/llama4/modeling_llama4.py Llama4ForConditionalGeneration.forward: the text embeddings first, then
get_image_features runs Llama4VisionModel on every tile (not under no_grad: a frozen tower saves nothing because
nothing in it requires grad, unless checkpointing's enable_input_require_grads hooks its patch embedding) --
Llama4UnfoldConvolution (Unfold, permute, Linear), the class token appended (torch.cat), positions added,
layernorm_pre, Llama4VisionEncoder (LayerNorm, biased q/k/v, the 2-D RoPE in fp32 complex
(vision_apply_rotary_emb), sdpa without a mask, o_proj, LayerNorm, fc1, GELU, fc2), layernorm_post, the class row
dropped (a view), Llama4VisionPixelShuffleMLP (pixel_shuffle's two contiguous copies, fc1, GELU, fc2, GELU) --;
multi_modal_projector (one Linear) maps the flat features to the text width and masked_scatter puts them in place of
the <|patch|> tokens; the language model (Llama4ForCausalLM) runs on the whole sequence and the loss on its logits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.memory import moments as _m
from vramcalc.core.memory.llama4_tiles import (
    image_hw,
    image_tokens_per_image,
    layout,
    own_check,
    supported_layouts,
    tiles_per_image,
    tokens_per_tile,
    wrap_tokens_per_image,
)
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.vision import (
    _SAVED,
    DEFAULT_IMAGE_SIZE,
    _grown,
    _scaled,
    _text_model,
    images_per_sample,
)
from vramcalc.core.memory.weights import (
    QLORA_IMAGE_NOTE,
    dequant_backward_bytes,
    dequant_forward_bytes,
    image_side_bytes,
)
from vramcalc.core.params import image_linears, projector_params, vision_tower_params
from vramcalc.core.peft_methods import LM_ONLY_LORA
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec


def total_tokens(model: ModelSpec, training: TrainingSpec) -> int:
    """Tokens the language model runs on per sample: the text's --seq-len and every image's tokens."""
    assert model.vision is not None
    return training.seq_len + images_per_sample(training) * image_tokens_per_image(model.vision, training)



def text_run(model: ModelSpec, training: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The language model and its run: the sequence lengthened by the image tokens, the image options gone (the
    image tokens attend like the text: Llama4TextModel builds its causal / chunked masks from the positions)."""
    out = replace(training, seq_len=total_tokens(model, training), images=0, image_size=DEFAULT_IMAGE_SIZE,
                  image_width=0, train_vision=False)
    return _text_model(model), out



def check(model: ModelSpec, training: TrainingSpec) -> None:
    """Every refusal of a Llama 4 multimodal run: memory/vision.py check's, which runs own_check first."""
    from vramcalc.core.memory.vision import check as vision_check

    vision_check(model, training)



def _rope_moment(v: VisionSpec, rows: int, a_bytes: int) -> int:
    """A tower layer's largest forward moment per tile beside its input, at vision_apply_rotary_emb
    (modeling_llama4.py): input_layernorm's output (held by the layer through self_attn), q, k, v from their
    Linears, q.float() and k.float() (fp32 copies), their complex products with freqs_ci (complex64: 4 bytes a
    value) and, at its end, the two type_as results in the model's dtype. Measured with the tracer, it is above the
    MLP's (layer_norm2's output, fc1's and GELU's outputs) and the attention's."""
    h = v.hidden_size
    return rows * h * (4 * a_bytes + 4 + 4 + 4 + 4 + 2 * a_bytes)


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on text + image tokens, with the tiles' tower, the adapter, the projector and
    their inputs (the module docstring; the terms below each cite what allocates them)."""
    check(model, training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = text_estimate(text_model, text_training)
    recipe = recipe_of(training)
    w_bytes, a_bytes = dtype_bytes(recipe.weight), dtype_bytes(recipe.compute)
    th, vh, vi, heads = model.hidden_size, v.hidden_size, v.intermediate_size, v.num_attention_heads
    tower, projector = vision_tower_params(v), projector_params(v, th)
    tiles = tiles_per_image(v, training)
    n = images_per_sample(training) * tiles * training.batch_size  # tiles the tower runs on per step
    side, layers, out_dim = v.image_size, v.num_layers, v.vision_output_dim
    patches = (side // v.patch_size) ** 2
    rows = patches + 1  # the class token, appended last (Llama4VisionModel.forward torch.cat)
    per_tile = tokens_per_tile(v)
    gc = training.grad_checkpointing
    trained_projector = training.method == "full"
    seq = total_tokens(model, training)
    tokens = training.batch_size * seq
    # pixel_values (tiles, 3, T, T) in the model's dtype (the processor's tiles of every image, concatenated)
    pixel = n * 3 * side * side * w_bytes
    hidden = n * rows * vh * a_bytes  # one hidden state of every tile
    # Llama4ForConditionalGeneration.forward keeps, until it returns, the adapter's output (mm_encoder_outputs'
    # last_hidden_state; vision_flat is a view of it) and the projected features (projected_vision_flat)
    kept_output = n * per_tile * (out_dim + th) * a_bytes
    # checkpointing hooks the tower (enable_input_require_grads: Llama4VisionModel.get_input_embeddings is its
    # patch_embedding, whose output becomes a leaf that requires grad) for every method
    hooked = gc
    saved = tokens if (trained_projector or gc) else 0  # Tensor.masked_scatter saves its bool mask
    # multi_modal_projector.linear_1 saves its input (vision_flat: a view of the adapter's output) when its weight is
    # trained; through the forward it is kept_output's first part, in the backward it outlives the forward's locals
    saved_projector = n * per_tile * out_dim * a_bytes if trained_projector else 0
    tower_kept = 0
    if hooked:
        # the hooked patch embedding output (a leaf held by its AccumulateGrad node), layernorm_pre's input and
        # fp32 mean / rstd, every checkpointed layer's input (the first one's is layernorm_pre's output),
        # layernorm_post's input and stats; the adapter: each GELU saves its input (fc1's and fc2's outputs, the
        # frozen Linears save none); with a frozen text embedding its output, a leaf too, outlives masked_scatter's
        # new inputs_embeds
        tower_kept = n * (patches * vh * a_bytes + (layers + 2) * rows * vh * a_bytes + 2 * 8 * rows
                          + 2 * per_tile * out_dim * a_bytes) \
            + (tokens * th * a_bytes if not trained_projector else 0)
    # The tower's forward, layer by layer, while the text embeddings and pixel_values exist: layernorm_pre's
    # output (Llama4VisionModel.forward holds it through the encoder), the layer's input (the loop's
    # hidden_states; with checkpointing every layer's kept input) and the RoPE moment
    before = tokens * th * a_bytes + pixel
    kept_layers = (layers + 1) * hidden + n * patches * vh * a_bytes if gc else 2 * hidden
    vision_moment = before + kept_layers + n * _rope_moment(v, rows, a_bytes)
    trainable_text = b.trainable_parameters
    extra_trainable = projector if trained_projector else 0

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    img_w = image_side_bytes(model, training, recipe, tower, projector)  # QLoRA: the Linears 4-bit (weights.py)
    if img_w.dequant_forward:
        # QLoRA: a quantized Linear's moment, its dequantized weight (dequant_forward_bytes) beside its input and
        # output, over the kept layer inputs: the tower's Linears on every tile's rows, the adapter's fc1 / fc2
        # (Llama4VisionMLP2) and the projector on the pixel-shuffled rows; at its RoPE moment no Linear runs
        tower_lin, projector_lin = image_linears(v, th)
        at_linear = max(dequant_forward_bytes(training, recipe, lin.in_features, lin.out_features)
                        + n * (per_tile if lin.module.startswith("vision_adapter") or lin in projector_lin else rows)
                        * (lin.in_features + lin.out_features) * a_bytes for lin in (*tower_lin, *projector_lin))
        # with checkpointing the adapter runs with grad: layernorm_post's input and each GELU's input are kept
        shuffled_kept = (hidden + 2 * n * per_tile * out_dim * a_bytes) if gc else 0
        vision_moment = max(vision_moment, before + kept_layers + shuffled_kept + at_linear)
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, extra_trainable), vision_moment)))
    for key, lay, values in b.moments:
        in_backward = key.startswith("backward.") and key != "backward.end"
        values = _grown(lay, values, trainable_text, extra_trainable)
        if key.startswith("forward."):
            # kept_output is freed when the forward returns, but for the projector's saved input
            inside = kept_output if key != "forward.loss" else saved_projector
            raw.append((key, (*lay, _SAVED), (*values, saved + tower_kept + pixel + inside)))
        elif in_backward:
            raw.append((key, (*lay, _SAVED), (*values, saved + saved_projector + tower_kept)))
        else:
            raw.append((key, lay, values))
    if hooked:
        # The tower's backward runs last, one recomputed layer at a time; its peak is the top layer's MLP backward
        # at the GELU: the recomputed layer's saved set (q, k, v, sdpa's output and fp32 logsumexp per head,
        # layer_norm2's input and fp32 stats, fc1's output), the residual's gradient, the gradient into the GELU's
        # output (fc2's input gradient) and the GELU's result (intermediate wide). Kept: every layer's input, the
        # hooked leaf and layernorm_pre's saved input, the text embeddings' leaf and its .grad (AccumulateGrad stores
        # it once the text model's backward reaches it).
        at_gelu = n * rows * ((4 * vh + vh + vi) * a_bytes + 4 * heads + 8 + (vh + 2 * vi) * a_bytes)
        kept = n * (layers * rows * vh * a_bytes + patches * vh * a_bytes + rows * vh * a_bytes + 8 * rows) \
            + (2 * tokens * th * a_bytes if not trained_projector else 0)
        if training.method == "qlora":
            # QLoRA: every quantized Linear's backward dequantizes its weight again (dequant_backward_bytes): the
            # projector's and the adapter's on the pixel-shuffled rows, before the layers'; in a recomputed layer the
            # largest one's weight beside the GELU moment (an upper bound: fc2's runs just before it)
            tower_lin, projector_lin = image_linears(v, th)
            shuffled = [lin for lin in tower_lin if lin.module.startswith("vision_adapter")] + list(projector_lin)
            in_layer = [lin for lin in tower_lin if lin.count == layers]
            at_gelu = max(at_gelu + max(dequant_backward_bytes(training, recipe, lin.in_features, lin.out_features, 0)
                                        for lin in in_layer),
                          max(dequant_backward_bytes(training, recipe, lin.in_features, lin.out_features,
                                                     n * per_tile) for lin in shuffled))
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (_scaled(b.gradients, trainable_text, extra_trainable), kept, at_gelu)))
    # Llama4VisionRotaryEmbedding's freqs_ci buffer (complex64, one row per tile row, 2 x (head_dim // 4) values:
    # _compute_freqs_ci's rope_freq of head_dim // 4, repeat_interleave(2), x and y concatenated, every other kept),
    # moved to the GPU with the model
    freqs = rows * 2 * (vh // heads // 4) * 8
    weights = b.weights + img_w.total + freqs
    states = _scaled(b.optimizer_state, trainable_text, extra_trainable)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "weights.vision_rope_buffer": freqs,
                    "activations.pixel_values": pixel,
                    "activations.image_side_saved": saved + saved_projector + tower_kept,
                    "activations.tower_output_kept": kept_output,
                    "temporaries.vision_tower_forward": vision_moment})
    rows_cols = layout(v, *image_hw(v, training))
    h, w = image_hw(v, training)
    split = (f"{rows_cols[0]} x {rows_cols[1]} tiles and a global tile" if tiles > 1 else "one tile")
    mode = "full fine-tuning trains the projector" if trained_projector else \
        f"--method {training.method} adapts the language model only (projector frozen)"
    notes = (
        f"vision-language model (Llama 4): each {h} x {w} px image"
        + (" (the default: one tile)" if training.image_size == DEFAULT_IMAGE_SIZE and not training.image_width
           else "")
        + f" is cut into {split} of {side} px (image_processing_llama4.py get_best_fit, max_patches "
        f"{v.max_num_tiles}): {tiles} tile(s) x {per_tile} <|patch|> tokens + "
        f"{wrap_tokens_per_image(v, training)} wrapping tokens per image; {images_per_sample(training)} image(s) per "
        f"sample are added to the {training.seq_len:,} text tokens: the language model runs on {seq:,} tokens per "
        "sample (processing_llama4.py _prompt_split_image; modeling_llama4.py masked_scatter).",
        f"vision tower ({tower:,} parameters, Llama4VisionModel with its pixel-shuffle adapter; {rows:,} rows per "
        f"tile, {n:,} tiles per step) "
        + ("frozen, run with grad and recomputed in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc else "frozen; nothing in it requires grad, so it saves nothing")
        + f"; {mode} ({projector:,} parameters, Llama4MultiModalProjector: one Linear); "
        + QLORA_IMAGE_NOTE + "; " + LM_ONLY_LORA,
    )
    # the text model's own note says the image side is counted elsewhere: it is counted here
    text_notes = tuple(x.replace(" the vision tower and projector are not counted here (the -vision presets count "
                                 "them; memory/llama4v.py)", " the image side follows") for x in b.notes)
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights,
                  gradients=_scaled(b.gradients, trainable_text, extra_trainable), optimizer_state=states,
                  activations=b.activations + saved + tower_kept + pixel + kept_output,
                  temporaries=max(b.temporaries, vision_moment), phases=phases, details=details,
                  notes=text_notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})


__all__ = ["check", "estimate", "image_hw", "image_tokens_per_image", "layout", "own_check", "supported_layouts",
           "text_run", "tiles_per_image", "tokens_per_tile", "total_tokens", "wrap_tokens_per_image"]
