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
from vramcalc.core.memory.activations import input_grad_drop
from vramcalc.core.memory.frozen_lm import _frozen_lm_text, _lm_drop, frozen_lm, frozen_lm_note, projector_trained
from vramcalc.core.memory.llama4_tiles import (
    TOWER_LINEARS,
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
from vramcalc.core.params import dense_layers, dense_mlp_spec, image_linears, projector_params, vision_tower_params
from vramcalc.core.peft_methods import lora_inputs_saved, tower_lora_split
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.params import Linear
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec


def total_tokens(model: ModelSpec, training: TrainingSpec) -> int:
    """Tokens the language model runs on per sample: the text's --seq-len and every image's tokens."""
    assert model.vision is not None
    return training.seq_len + images_per_sample(training) * image_tokens_per_image(model.vision, training)



def text_run(model: ModelSpec, training: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The language model and its run: the sequence lengthened by the image tokens, the image options gone (the
    image tokens attend like the text: Llama4TextModel builds its causal / chunked masks from the positions)."""
    out = replace(training, seq_len=total_tokens(model, training), images=0, image_size=DEFAULT_IMAGE_SIZE,
                  image_width=0, train_vision=False,
                  lora_targets=lora_targets(model, training)[1])  # the tower's adapters are counted here
    if frozen_lm(training):  # the image tokens' gradient: counted as a trained embedding's (memory/frozen_lm.py)
        out = replace(out, train_layers=(), train_modules=("embed_tokens",))
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


def tower_states(training: TrainingSpec, recipe: Recipe, tower: int) -> int:
    """Optimizer state of the tower's own weights trained under LoRA (--train-vision): what the optimizer keeps for
    `tower` parameters of full fine-tuning's kind (optimizer.py optimizer_bytes: the states in the weights' dtype for
    a pure-* precision, torch.optim's zeros_like; else fp32). own_check admits the optimizers whose state is a count
    of parameters only."""
    from vramcalc.core.memory.optimizer import optimizer_bytes

    out = optimizer_bytes((((tower,), 1),), recipe, replace(training, method="full"))
    return out.total


def _scores(v: VisionSpec, rows: int, a_bytes: int) -> int:
    """One eager score tensor per tile: heads x rows x rows in the model's dtype (modeling_llama4.py
    vision_eager_attention_forward: `torch.matmul(query, key_states.transpose(2, 3)) * module.head_dim**-0.5` and the
    softmax without an fp32 cast, "llama4 doesn't cast attn weights to fp32")."""
    return v.num_attention_heads * rows * rows * a_bytes


def _attn_moment(v: VisionSpec, rows: int, a_bytes: int, eager: bool) -> int:
    """A frozen tower layer's largest forward moment per tile beside its input: the RoPE's (_rope_moment), and with
    --attention eager (vision_eager_attention_forward) the larger of: the scaled scores beside the matmul's (the
    scale is a new tensor) with input_layernorm's output, q, k and v; and the MLP's GELU (the residual after the
    attention, post_attention_layernorm's output, fc1's and GELU's outputs) beside the softmax output, which
    Llama4VisionEncoderLayer.forward holds as its local attn_weights until it returns (dropout at p 0 returns its
    input). Measured with the tracer: Scout's tower, one tile, the peak at the scale's mul."""
    rope = _rope_moment(v, rows, a_bytes)
    if not eager:
        return rope
    h, i = v.hidden_size, v.intermediate_size
    return max(rope, rows * 4 * h * a_bytes + 2 * _scores(v, rows, a_bytes),
               rows * (2 * h + 2 * i) * a_bytes + _scores(v, rows, a_bytes))


def _amp_forward(v: VisionSpec, n: int, rows: int, th: int, c: int, f: int) -> int:
    """The frozen tower's forward under autocast (torch.autocast over an fp32 model; own_check: no checkpointing,
    no tower adapters, the tower frozen), beyond the text embeddings and pixel_values: the largest moment for `n`
    tiles. The residual stream, the LayerNorms' outputs (autocast's fp32 ops), the class-token cat (promoted) and
    pixel_shuffle's copies are fp32 (`f` bytes); every Linear casts its fp32 weight and bias to the compute dtype
    (`c` bytes) for the call (not cached: the weights need no grad), and its fp32 input too, its output in the
    compute dtype (torch/csrc/autograd/autocast_mode.cpp; modeling_llama4.py Llama4VisionModel.forward). In a layer,
    beside its fp32 input and layernorm_pre's output (held through the encoder): q/k/v_proj beside input_layernorm's
    output, the RoPE (_rope_moment with that output fp32), o_proj beside q, k, v and sdpa's output (the attention's
    locals), fc1 / GELU / fc2 beside the residual and post_attention_layernorm's output; then the encoder's output and
    layernorm_post's beside pixel_shuffle's two copies and the adapter's fc1 (its weight the largest cast:
    intermediate x vision_output_dim), GELU, fc2; the projector beside the adapter's output, its output cast to the
    text embeddings' fp32 (`.to(inputs_embeds.dtype)`)."""
    h, i, out = v.hidden_size, v.intermediate_size, v.vision_output_dim
    patches = (v.image_size // v.patch_size) ** 2
    per_tile = patches // v.scale_factor ** 2
    patch_in = 3 * v.patch_size ** 2

    def cast(fan_in: int, fan_out: int, bias: bool = True) -> int:
        return (fan_in * fan_out + (fan_out if bias else 0)) * c

    held = 2 * n * rows * h * f  # the layer's input and layernorm_pre's output
    layer = max(
        n * rows * h * (f + 2 * c) + cast(h, h),  # q_proj: input_layernorm's output, its cast, q
        n * rows * h * (f + 4 * c) + cast(h, h),  # v_proj beside q and k
        n * rows * h * (f + 3 * c + 16 + 2 * c),  # the RoPE (_rope_moment)
        n * rows * h * (f + 5 * c) + cast(h, h),  # o_proj beside q, k, v and sdpa's output
        n * rows * (2 * h * f + h * c + i * c) + cast(h, i),  # fc1
        n * rows * (2 * h * f + 2 * i * c),  # GELU
        n * rows * (2 * h * f + i * c + h * c) + cast(i, h))  # fc2
    shuffled = n * patches * h * f  # one pixel_shuffle copy: per_tile x intermediate values
    adapter = max(2 * shuffled,
                  shuffled + n * per_tile * (i + out) * c + cast(i, out, bias=False),  # fc1 (no bias)
                  shuffled + n * per_tile * 2 * out * c + cast(out, out, bias=False))  # fc2
    projector = n * per_tile * (out * c + th * c + th * f) + cast(out, th, bias=False)
    patch = n * patches * (patch_in * (f + c) + h * c) + cast(patch_in, h, bias=False)
    return max(held + layer, 2 * n * rows * h * f + adapter, projector, patch)


def lora_targets(model: ModelSpec, training: TrainingSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What peft 0.21's target matching adapts on Llama4ForConditionalGeneration's image side (tuners_utils.py
    check_target_module_exists: a name's suffix anywhere in the model): (the Linears adapted in every tower encoder
    layer, the targets left for the language model). q/k/v/o_proj (auto: q_proj, v_proj) name the tower attention's
    as well as the text model's; fc1 / fc2 the tower MLP's and the pixel-shuffle adapter's (vision_adapter.mlp
    Llama4VisionMLP2) only. all-linear is refused for Llama 4 (params.py resolve_targets: the router). Checked
    against get_peft_model on the meta model (tests/test_llama4v_lora.py). Empty for the other methods."""
    if training.method not in ("lora", "qlora"):
        return (), training.lora_targets
    tower, _, text = tower_lora_split(model, training, TOWER_LINEARS)  # all-linear: refused before (docstring)
    return tower, text


def _in_out(v: VisionSpec, module: str) -> tuple[int, int]:
    """(in, out) features of a tower encoder layer's Linear, or of the adapter's ("adapter.fc1" / "adapter.fc2":
    Llama4VisionMLP2 reads the pixel-shuffled features, intermediate_size wide, and maps them to
    projector_input_dim, then projector_output_dim; both vision_output_dim here)."""
    h, i, out = v.hidden_size, v.intermediate_size, v.vision_output_dim
    return {"fc1": (h, i), "fc2": (i, h), "adapter.fc1": (i, out), "adapter.fc2": (out, out)}.get(module, (h, h))


def tower_adapter_params(model: ModelSpec, training: TrainingSpec) -> int:
    """LoRA parameters on the image side: rank x (in + out) per adapted Linear (lora_A and lora_B, no bias; peft
    tuners/lora/layer.py update_layer), in every encoder layer and the adapter's MLP."""
    v = model.vision
    assert v is not None
    tower, _ = lora_targets(model, training)
    r = training.lora_rank
    return v.num_layers * sum(r * sum(_in_out(v, m)) for m in tower) \
        + sum(r * sum(_in_out(v, "adapter." + m)) for m in tower if m in ("fc1", "fc2"))


def _adapters_saved(v: VisionSpec, modules: tuple[str, ...], rows: int, c: int, a: int, r: int) -> int:
    """peft_methods.lora_inputs_saved over this tower's Linear widths."""
    return lora_inputs_saved(lambda mod: _in_out(v, mod)[0], modules, rows, c, a, r)


def _adapter_moment(v: VisionSpec, mods: tuple[str, ...], rows: int, c: int, a: int, r: int, saving: bool,
                    early_stop: bool = False) -> int:
    """The top encoder layer's forward at each adapted Linear's scaled output (tuners/lora/layer.py Linear.forward:
    `result + lora_B(lora_A(x)) * scaling`), per tile, beyond the layer's input: the input held by the caller and its
    copy in the adapter dtype, lora_A's output, the base output, lora_B's and the scaled outputs (adapter dtype); for
    k_proj / v_proj the q / k already projected, for fc2 post_attention_layernorm's output (the layer's local); with
    checkpointing (the layer saves nothing: `saving` False) the
    residual after the attention for fc1 / fc2, and o_proj's input (sdpa's output); without, the layer's saved sections
    and adapters' inputs before the Linear (sdpa's output and the residual are among them). `early_stop`: a
    checkpointed layer's recomputation stops once its last saved tensor is repacked (torch/utils/checkpoint.py
    _checkpoint_hook, early stop on by default): the last adapter runs only to lora_A's output (lora_B's saved input),
    so its lora_B and scaled outputs are never made (measured with the tracer). The largest."""
    h, i = v.hidden_size, v.intermediate_size
    best = 0
    for k, mod in enumerate(mods):
        width, out = _in_out(v, mod)
        own = (width * a if a != c else 0) + r * a + out * (c + (0 if early_stop and k == len(mods) - 1 else 2 * a))
        held = width * c
        if mod in ("k_proj", "v_proj"):
            held += h * c * ("q_proj", "k_proj", "v_proj").index(mod)
        if mod == "fc2" and not (saving and a == c and "fc1" in mods):
            held += h * c  # post_attention_layernorm's output, held by the layer through its MLP
        if saving:
            before = _adapters_saved(v, mods[:k], 1, c, a, r)
            sections = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "o_proj": 4 * h * c + 4 * v.num_attention_heads,
                        "fc1": 5 * h * c + 4 * v.num_attention_heads + 8,
                        "fc2": 5 * h * c + 4 * v.num_attention_heads + 8 + i * c}[mod]
            if mod == "o_proj":
                held = 0  # sdpa's output, saved
            moment = sections + before + held + own
        else:
            moment = held + own + (h * c if mod in ("fc1", "fc2") else 0)
        best = max(best, rows * moment)
    return best


def _dequant_moment(v: VisionSpec, mods: tuple[str, ...], rows: int, c: int, a: int, r: int, tiles: int,
                    dequant: Callable[[str], int]) -> int:
    """QLoRA: the top encoder layer's forward, saving, at each quantized Linear's base matmul (peft
    tuners/lora/bnb.py Linear4bit.forward runs `self.base_layer(x)` before its adapters, so the dequantized weight,
    `dequant(module)` bytes from weights.py dequant_forward_bytes, lives beside the layer's sections saved so far, the
    adapters' inputs saved by the earlier adapted Linears, the held input (as _adapter_moment) and the base output; not
    beside the adapter's own transients, which come after it): for `tiles` tiles, beyond the layer's input. The
    largest."""
    h = v.hidden_size
    sections = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "o_proj": 4 * h * c + 4 * v.num_attention_heads,
                "fc1": 5 * h * c + 4 * v.num_attention_heads + 8,
                "fc2": 5 * h * c + 4 * v.num_attention_heads + 8 + v.intermediate_size * c}
    best = 0
    for mod in TOWER_LINEARS:
        width, out = _in_out(v, mod)
        held = width * c if mod != "o_proj" else 0  # o_proj's input is sdpa's output, saved
        if mod in ("k_proj", "v_proj"):
            held += h * c * TOWER_LINEARS.index(mod)
        if mod == "fc2" and not (a == c and "fc1" in mods):
            held += h * c  # post_attention_layernorm's output
        earlier = tuple(m for m in TOWER_LINEARS[:TOWER_LINEARS.index(mod)] if m in mods)
        per_tile = sections[mod] + _adapters_saved(v, earlier, 1, c, a, r) + held + out * c
        best = max(best, tiles * rows * per_tile + dequant(mod))
    return best


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on text + image tokens, with the tiles' tower, the adapter, the projector and
    their inputs (the module docstring; the terms below each cite what allocates them)."""
    check(model, training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = _frozen_lm_text(training, text_estimate(text_model, text_training))
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
    # the language model frozen (memory/frozen_lm.py): the projector trained, as under full fine-tuning (the tower
    # alone trained, tower_only: frozen)
    trained_projector = training.method == "full" or projector_trained(training)
    # the text embeddings' output, a leaf the hooked tower's graph outlives, when they are frozen (the frozen language
    # model's stand-in run counts them as a trained embedding: memory/frozen_lm.py)
    text_leaf = not (training.method == "full" or frozen_lm(training))
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
    # LoRA: peft adapts the tower's Linears its target names match (lora_targets); an adapted Linear's output needs a
    # gradient, so the frozen tower records its graph from the bottom layer's first adapter up
    tower_mods, _ = lora_targets(model, training)
    adapters = tower_adapter_params(model, training)
    ad_bytes = dtype_bytes(training.adapter_dtype)
    # own_check: --method full, or lora with the tower unadapted; frozen_lm (--train-modules projector): the tower
    # trained beside the projector as under full fine-tuning (LLaMA-Factory freeze_vision_tower false)
    trained_tower = training.train_vision
    # --train-vision under LoRA: the tower's own weights unfrozen beside the language model's adapters (its gradients
    # and optimizer state in the weights' dtype, not the adapters')
    lora_tower = trained_tower and training.method in ("lora", "qlora")
    saved = tokens if (trained_projector or gc or tower_mods or trained_tower) else 0  # masked_scatter's bool mask
    if (tower_mods or lora_tower) and not gc:
        # the image features need a gradient, so masked_scatter's inputs_embeds does: the language model's bottom layer
        # saves what the text estimate leaves out for a LoRA run's bottom layer (activations.py input_grad), that
        # layer's own kind: Maverick's layer 0 is dense (interleave_moe_layer_step 2). Only that: the text estimate's
        # activations.bottom_layer_less also holds what its dense and NoPE layers save less than a MoE RoPE layer,
        # which they still save less here (measured with the tracer, --grid llama4v Maverick tiny-lm LoRA b1 s128 i1
        # without checkpointing: +2.43 % with the whole of it, the image side 7.1 MB over)
        bottom_m = dense_mlp_spec(text_model) if dense_layers(text_model) else text_model
        drop_t, drop_ts = input_grad_drop(bottom_m, text_training, recipe)
        saved += min(drop_t * tokens + drop_ts * tokens * seq, b.details.get("activations.bottom_layer_less", 0))
    # multi_modal_projector.linear_1 saves its input (vision_flat: a view of the adapter's output) when its weight is
    # trained; through the forward it is kept_output's first part, in the backward it outlives the forward's locals
    saved_projector = n * per_tile * out_dim * a_bytes if trained_projector else 0
    tower_kept = 0
    if hooked and not training.train_vision:
        # the hooked patch embedding output (a leaf held by its AccumulateGrad node), layernorm_pre's input and
        # fp32 mean / rstd, every checkpointed layer's input (the first one's is layernorm_pre's output),
        # layernorm_post's input and stats; the adapter: each GELU saves its input (fc1's and fc2's outputs, the
        # frozen Linears save none); with a frozen text embedding its output, a leaf too, outlives masked_scatter's
        # new inputs_embeds
        tower_kept = n * (patches * vh * a_bytes + (layers + 2) * rows * vh * a_bytes + 2 * 8 * rows
                          + 2 * per_tile * out_dim * a_bytes) \
            + (tokens * th * a_bytes if text_leaf else 0)
    # The tower's forward, layer by layer, while the text embeddings and pixel_values exist: layernorm_pre's
    # output (Llama4VisionModel.forward holds it through the encoder), the layer's input (the loop's
    # hidden_states; with checkpointing every layer's kept input) and the RoPE moment
    before = tokens * th * a_bytes + pixel
    kept_layers = (layers + 1) * hidden + n * patches * vh * a_bytes if gc else 2 * hidden
    eager = training.attention == "eager"  # llama4_tiles.own_check: a frozen tower without adapters only
    vision_moment = before + kept_layers + n * _attn_moment(v, rows, a_bytes, eager)
    if recipe.autocast:
        # autocast (own_check: a frozen tower without adapters or checkpointing): the text embeddings fp32, the
        # projected features cast to their dtype
        before = tokens * th * w_bytes + pixel
        kept_output = n * per_tile * (out_dim * a_bytes + th * w_bytes)
        vision_moment = before + _amp_forward(v, n, rows, th, a_bytes, w_bytes)
    trainable_text = b.trainable_parameters
    drop = _lm_drop(training, b)  # frozen_lm: the text run's stand-in embedding out again
    extra_trainable = (projector if trained_projector else 0) - drop
    # the adapters' gradients: the tower's backward runs last
    grow_all = extra_trainable + adapters
    g_other = grow_all  # the trainable parameters outside the tower's own weights

    def grad_bytes(less: int = 0) -> int:
        """Gradients once the tower's backward is done, less `less` of the tower's own parameters: the text
        estimate's scaled by the projector's and adapters' count, and the trained tower's, in its weights' dtype
        under LoRA (torch: a parameter's .grad has its dtype)."""
        own = tower - less if trained_tower else 0
        if lora_tower:
            return _scaled(b.gradients, trainable_text, g_other) + own * w_bytes
        return _scaled(b.gradients, trainable_text, g_other + own)
    patch_in = v.patch_size * v.patch_size * 3  # Llama4UnfoldConvolution's Unfold width (channels x patch x patch)
    if trained_tower:
        # --train-vision: the tower's gradients exist from its backward on, run last (as the adapters')
        grow_all += tower
        # every encoder layer's saved set without checkpointing (Llama4VisionEncoderLayer): the frozen-graph set
        # (LayerNorms' inputs and fp32 stats, q / k after the RoPE, v, sdpa's output and fp32 logsumexp per head,
        # GELU's input) and the trained Linears' inputs (input_layernorm's output for q/k/v, post_attention_layernorm's
        # output for fc1, GELU's output for fc2); o_proj's input is sdpa's saved output: the memory-efficient kernel
        # writes it (batch, rows, heads, head_dim), so the transpose and reshape before o_proj are views (as
        # trace/_cuda.py's sdpa)
        per_layer_t = rows * ((8 * vh + 2 * vi) * a_bytes + 16 + 4 * heads)
        if eager:
            # vision_eager_attention_forward: the softmax output (saved by the softmax and by the matmul with v) for
            # sdpa's logsumexp; o_proj's input is the transpose's contiguous copy for sdpa's output (the matmul's own
            # output is freed with it); q / k / v as before (measured with the tracer: Scout's tower, one tile)
            per_layer_t += _scores(v, rows, a_bytes) - rows * 4 * heads
        # the patch Linear's input (the unfolded, permuted pixels), layernorm_pre's and layernorm_post's inputs and
        # stats, the pixel-shuffle adapter's trained fc1 / fc2 inputs and its GELUs' inputs
        outside = patches * patch_in * a_bytes + 2 * rows * (vh * a_bytes + 8) \
            + per_tile * (vi + 3 * out_dim) * a_bytes
        if gc:
            # Llama4VisionEncoderLayer is a GradientCheckpointingLayer: each layer keeps its input only
            tower_kept = n * (layers * rows * vh * a_bytes + outside)
        else:
            tower_kept = n * (layers * per_layer_t + outside)
    r = training.lora_rank
    layer_adapters = _adapters_saved(v, tower_mods, rows, a_bytes, ad_bytes, r)  # per tile, one encoder layer
    mlp2 = tuple("adapter." + m for m in tower_mods if m in ("fc1", "fc2"))
    mlp2_adapters = n * _adapters_saved(v, mlp2, per_tile, a_bytes, ad_bytes, r)
    if tower_mods and not gc:
        # per tile and encoder layer, what its graph saves (modeling_llama4.py Llama4VisionEncoderLayer): the
        # LayerNorms' inputs and fp32 mean / rstd, sdpa's q and k (after the RoPE's type_as), v, output and fp32
        # logsumexp per head, GELU's input (fc1's output); the frozen Linears save nothing; the RoPE's complex
        # products save freqs_ci (a buffer). The bottom layer saves nothing below its first adapter (its input
        # needs no gradient): input_layernorm's, then the attention's, then post_attention_layernorm's, then GELU's.
        per_layer = rows * ((6 * vh + vi) * a_bytes + 16 + 4 * heads)
        free = rows * (vh * a_bytes + 8)
        for names, size in ((("q_proj", "k_proj", "v_proj"), rows * (4 * vh * a_bytes + 4 * heads)),
                            (("o_proj",), rows * (vh * a_bytes + 8)), (("fc1",), rows * vi * a_bytes)):
            if any(m_ in tower_mods for m_ in names):
                break
            free += size
        # then layernorm_post's input and stats, the adapter MLP's two GELUs' inputs, and the adapters' inputs
        tower_kept = n * (layers * (per_layer + layer_adapters) - free + rows * (vh * a_bytes + 8)
                          + 2 * per_tile * out_dim * a_bytes) + mlp2_adapters
        # the forward at the top layer's RoPE: the layers below saved, the top one's input and its q / k / v
        # adapters' inputs, layernorm_pre's output (held through the encoder), the RoPE moment
        qkv = tuple(m_ for m_ in tower_mods if m_ in ("q_proj", "k_proj", "v_proj"))
        below = (layers - 1) * (per_layer + layer_adapters) - free if layers > 1 else 0
        top_in = rows * (vh * a_bytes + 8) if layers > 1 else 0
        vision_moment = before + hidden + n * (below + top_in + max(
            _adapters_saved(v, qkv, rows, a_bytes, ad_bytes, r) + _rope_moment(v, rows, a_bytes),
            _adapter_moment(v, tower_mods, rows, a_bytes, ad_bytes, r, saving=True)))
    elif tower_mods:
        # checkpointing: the hooked layers keep their inputs (tower_kept above); the adapter MLP's adapters save theirs
        tower_kept += mlp2_adapters
        vision_moment = before + kept_layers + n * max(
            _rope_moment(v, rows, a_bytes), _adapter_moment(v, tower_mods, rows, a_bytes, ad_bytes, r, saving=False))

    if trained_tower:
        # the forward at the top layer's RoPE: the layers below saved (or, checkpointed, their inputs), the patch
        # Linear's input and layernorm_pre's input, layernorm_pre's output (held through the encoder), the top
        # layer's input and the RoPE moment
        below_t = (layers - 1) * (rows * vh * a_bytes if gc else per_layer_t)
        vision_moment = before + hidden + n * (below_t + patches * patch_in * a_bytes + rows * (vh * a_bytes + 8)
                                               + rows * vh * a_bytes + _attn_moment(v, rows, a_bytes, eager))

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
        if tower_mods and not gc:
            # with tower adapters and no checkpointing the encoder's graph is saved (tower_kept's layer part), so a
            # quantized Linear's moment is on top of it, not a max against the adapters' moment: in the top layer
            # (_dequant_moment, beside the layers below, their input and layernorm_pre's output), then in the
            # pixel-shuffle adapter on the encoder's whole saved set and layernorm_post's saved input and stats and
            # its output (held by Llama4VisionModel.forward through vision_adapter): fc1 beside its input (the
            # pixel-shuffled clone, held by Llama4VisionPixelShuffleMLP.forward) and output; fc2 also beside fc1's
            # output (GELU's saved input) and fc1's adapter's saved input; the projector beside the adapter's
            # two GELU inputs and every adapter MLP2 adapter's input (measured with the tracer: the peak of Scout
            # QLoRA q_proj,v_proj one tile is fc1's dequantized weight there)
            lin_of = {lin.module: lin for lin in tower_lin}
            deq = {m_: dequant_forward_bytes(training, recipe, lin_of[m_].in_features, lin_of[m_].out_features)
                   for m_ in TOWER_LINEARS}
            in_layer = before + hidden + n * (below + top_in) + _dequant_moment(
                v, tower_mods, rows, a_bytes, ad_bytes, r, n, deq.__getitem__)
            graph = before + n * (layers * (per_layer + layer_adapters) - free + rows * (vh * a_bytes + 8)) + hidden
            fc1, fc2 = lin_of["vision_adapter.mlp.fc1"], lin_of["vision_adapter.mlp.fc2"]
            fc1_saved = n * _adapters_saved(v, ("adapter.fc1",), per_tile, a_bytes, ad_bytes, r) \
                if "fc1" in tower_mods else 0
            shuffled = max(
                dequant_forward_bytes(training, recipe, fc1.in_features, fc1.out_features)
                + n * per_tile * (fc1.in_features + fc1.out_features) * a_bytes,
                dequant_forward_bytes(training, recipe, fc2.in_features, fc2.out_features) + fc1_saved
                + n * per_tile * (fc1.in_features + fc1.out_features + fc2.in_features + fc2.out_features) * a_bytes,
                *(dequant_forward_bytes(training, recipe, lin.in_features, lin.out_features) + mlp2_adapters
                  + n * per_tile * (2 * out_dim + lin.in_features + lin.out_features) * a_bytes
                  for lin in projector_lin))
            vision_moment = max(vision_moment, in_layer, graph + shuffled)
        else:
            vision_moment = max(vision_moment, before + kept_layers + shuffled_kept + at_linear)
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, extra_trainable), vision_moment)))
    for key, lay, values in b.moments:
        in_backward = key.startswith("backward.") and key != "backward.end"
        # the tower adapters' gradients exist from its backward (run last) on
        if in_backward or key.startswith("forward.") or not lora_tower:
            values = _grown(lay, values, trainable_text, extra_trainable if in_backward or key.startswith("forward.")
                            else grow_all)
        else:  # the trained tower's gradients in its weights' dtype (grad_bytes)
            grads_at = grad_bytes()
            values = tuple(grads_at if comp == "gradients" else x for (_, comp), x in zip(lay, values, strict=True))
        if key.startswith("forward."):
            # kept_output is freed when the forward returns (the projector's saved input excepted), after the loss:
            # given labels, Llama4ForConditionalGeneration.forward computes it itself (self.loss_function), so the
            # loss moment holds it too (measured with the tracer, --grid llama4v Scout tiny-lm LoRA without
            # checkpointing: the adapter's GELU output and the projected features alive at nll_loss_forward; -0.5 to
            # -1.1 % without them)
            inside = kept_output
            raw.append((key, (*lay, _SAVED), (*values, saved + tower_kept + pixel + inside)))
        elif in_backward:
            raw.append((key, (*lay, _SAVED), (*values, saved + saved_projector + tower_kept)))
        else:
            raw.append((key, lay, values))
    if trained_tower:
        # --train-vision: the tower's backward runs last, top layer first, after the adapter's and layernorm_post's
        # have freed their saved inputs. Two moments, the larger taken:
        # - the top layer's GELU backward: the layer's saved set (recomputed when checkpointed), the residual's
        #   gradient, the gradient into GELU's output and its result (intermediate wide), fc2's input freed; of the
        #   tower's weight gradients only the adapter's and the top layer's fc2's exist; and the same moment in the
        #   bottom layer;
        # - the bottom layer's sdpa backward (every weight gradient exists): the patch Linear's input, layernorm_pre's
        #   input and stats, the bottom layer's attention half (input_layernorm's input, output and stats, q, k, v,
        #   sdpa's output and fp32 logsumexp), the residual's gradient, sdpa's output gradient, dq / dk / dv and the
        #   memory-efficient backward's fp32 softmax_d (heads x rows rounded to 128) and dq accumulator (rows rounded
        #   to 128 x heads x head_dim rounded to 32) (as trace/_cuda.py's sdpa; measured with the tracer: Scout
        #   tiny-lm b1, one tile, the peak at that backward)
        layer_params = 4 * (vh * vh + vh) + 2 * vh * vi + vi + vh + 4 * vh  # q/k/v/o, fc1, fc2, two LayerNorms
        # the adapter's and layernorm_post's saved inputs are freed; checkpointed, the recomputed top layer's set
        # shares its input with the kept one; fc2's input (GELU's output) is freed by fc2's backward
        kept_top = tower_kept - n * (rows * (vh * a_bytes + 8) + per_tile * (vi + 3 * out_dim) * a_bytes)
        at_gelu = n * rows * (vh + 2 * vi) * a_bytes + (n * (per_layer_t - rows * vh * a_bytes) if gc else 0) \
            - n * rows * vi * a_bytes
        r128, hd32 = -(-rows // 128) * 128, -(-(vh // heads) // 32) * 32
        kept_bottom = n * (patches * patch_in * a_bytes + rows * (vh * a_bytes + 8)
                           + rows * (6 * vh * a_bytes + 8 + 4 * heads))
        at_sdpa = n * (5 * rows * vh * a_bytes + heads * r128 * 4 + r128 * heads * hd32 * 4)
        if eager:
            # the bottom layer's attention backward at _softmax_backward_data: its saved q, k and softmax output (v and
            # o_proj's input freed by their backward), the residual's gradient, v's gradient, the softmax output's
            # gradient and the softmax's input gradient (measured with the tracer: Scout's tower, one tile)
            kept_bottom = n * (patches * patch_in * a_bytes + rows * (vh * a_bytes + 8)
                               + rows * (4 * vh * a_bytes + 8) + _scores(v, rows, a_bytes))
            at_sdpa = n * (2 * rows * vh * a_bytes + 2 * _scores(v, rows, a_bytes))
        fc2_params = vi * vh + vh
        top = (grad_bytes(layers * layer_params - fc2_params),
               kept_top, at_gelu)
        # the same GELU moment in the bottom layer: the layers above have their gradients and have freed their
        # saved sets (checkpointed: their kept inputs) (measured with the tracer: Scout tiny-lm 4 tiles, b2, gc)
        above = (layers - 1) * n * (rows * vh * a_bytes if gc else per_layer_t)
        gelu_bottom = (grad_bytes(layer_params - fc2_params),
                       kept_top - above, at_gelu)
        # the bottom layer's q / k / v and input_layernorm gradients come after its sdpa backward
        bottom = (grad_bytes(3 * (vh * vh + vh) + 2 * vh), kept_bottom, at_sdpa)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, max(top, gelu_bottom, bottom, key=sum)))
    elif hooked or tower_mods:
        # The tower's backward runs last, one recomputed layer at a time; its peak is the top layer's MLP backward
        # at the GELU: the recomputed layer's saved set (q, k, v, sdpa's output and fp32 logsumexp per head,
        # layer_norm2's input and fp32 stats, fc1's output), the residual's gradient, the gradient into the GELU's
        # output (fc2's input gradient) and the GELU's result (intermediate wide). Kept: every layer's input, the
        # hooked leaf and layernorm_pre's saved input, the text embeddings' leaf and its .grad (AccumulateGrad stores
        # it once the text model's backward reaches it).
        # With LoRA on the tower, the recomputed layer's adapters save their inputs too; without checkpointing every
        # layer's saved set is kept instead (tower_kept less what the adapter MLP and layernorm_post's backward have
        # freed), and the top layer's transients are the gradients alone. An adapted fc2 peaks at lora_A's input
        # gradient in the adapter dtype (intermediate wide) beside the incoming gradient's copy (16-bit one gone) in the
        # adapter dtype; an adapted fc1 at its scaled output's gradient and the product's beside GELU's input and
        # output gradients, once fc2's adapter has freed its saved input (tuners/lora/layer.py Linear.forward run
        # backwards; as memory/mllama.py tower_lora_backward).
        layer_set = n * rows * ((4 * vh + vh + vi) * a_bytes + 4 * heads + 8) + n * layer_adapters if hooked else 0
        at_eager = 0
        if eager and hooked:
            # --attention eager (a frozen tower without adapters: own_check): the recomputed layer saves q and k (the
            # scores' matmul), the softmax output (the softmax's and the second matmul's) and v instead of sdpa's
            # q / k / v, output and logsumexp (the frozen o_proj saves no input); its attention backward peaks at
            # _softmax_backward_data: q, k, the softmax output, its gradient (the matmul's grad_a) and the softmax's
            # input gradient, v's gradient (v freed with its matmul's backward), the residual's gradient and
            # input_layernorm's stats (measured with the tracer: Scout's tower, one tile, checkpointed)
            layer_set = n * (rows * ((4 * vh + vi) * a_bytes + 8) + _scores(v, rows, a_bytes))
            at_eager = n * (rows * (4 * vh * a_bytes + 8) + 3 * _scores(v, rows, a_bytes))
        at_gelu = max(layer_set + n * rows * (vh + 2 * vi) * a_bytes, at_eager)
        fc2_saved = n * rows * (vi + r) * ad_bytes if "fc2" in tower_mods else 0
        at_fc2 = layer_set + n * rows * (vh * ad_bytes + vi * ad_bytes) if "fc2" in tower_mods else 0
        at_fc1 = layer_set + n * rows * (vh * a_bytes + 2 * vi * a_bytes + vi * ad_bytes) - fc2_saved \
            if "fc1" in tower_mods else 0
        # with checkpointing and adapters, the top layer's recomputation (its forward again, saving) at an adapted
        # Linear's scaled output, beside its input's saved copy and the gradient of its output (measured with the
        # tracer: the peak of an adapted fc1 on 4 tiles)
        # (and, with fc2 adapted, its adapter's backward triggers the recomputation: its scaled output's gradient in
        # the adapter dtype is live beside it, measured with the tracer on Scout q_proj,v_proj,fc1,fc2, gc)
        at_recompute = n * (_adapter_moment(v, tower_mods, rows, a_bytes, ad_bytes, r, saving=True, early_stop=True)
                            + rows * (2 * vh * a_bytes + 8 + (vh * ad_bytes if "fc2" in tower_mods else 0))) \
            if hooked and tower_mods else 0
        if training.method == "qlora":
            # QLoRA: every quantized Linear's backward dequantizes its weight again (dequant_backward_bytes): the
            # projector's and the adapter's on the pixel-shuffled rows, before the layers'; in a recomputed layer the
            # largest one's weight beside the GELU moment (an upper bound: fc2's runs just before it)
            tower_lin, projector_lin = image_linears(v, th)
            shuffled = [lin for lin in tower_lin if lin.module.startswith("vision_adapter")] + list(projector_lin)
            in_layer = [lin for lin in tower_lin if lin.count == layers]
            # In a layer, a Linear's base backward (MatMul4Bit.backward) runs after its adapter's branch (created
            # later, so first in the autograd engine's order): the adapter's saved input is freed by then and its
            # input gradient, cast to the compute dtype, waits to be summed with the base's grad_A, beside the
            # dequantized weight, grad_A and the incoming gradient (dequant_backward_bytes) and the residual's
            # gradient; not beside the GELU's moment (measured with the tracer: Scout QLoRA q_proj,v_proj,fc1,fc2
            # one tile, checkpointed, fc2's base backward is 1.6 MB under the recomputed fc1 adapter's moment)
            def base_backward(lin: Linear) -> int:
                mod = lin.module
                adapted = n * (rows * lin.in_features * a_bytes
                               - _adapters_saved(v, (mod,), rows, a_bytes, ad_bytes, r)) if mod in tower_mods else 0
                if mod == "fc1":  # fc2's adapter's saved input and the GELU's input are freed by then
                    adapted -= fc2_saved + n * rows * vi * a_bytes
                return layer_set + n * rows * vh * a_bytes + adapted + dequant_backward_bytes(
                    training, recipe, lin.in_features, lin.out_features, n * rows)
            if hooked and "fc2" not in tower_mods:
                # an unadapted fc2's MatMul4Bit keeps its input on ctx.tensors, outside the checkpoint's saved-tensor
                # hooks, so its backward runs whole before the GELU's unpacks the layer's saved set: the layer is
                # recomputed beside fc2's grad_A and the residual's gradient, its largest moment at the RoPE with
                # the q / v adapters' saved inputs (measured with the tracer: the peak of Scout QLoRA q_proj,v_proj
                # at 4 tiles, checkpointed)
                qkv = tuple(m_ for m_ in tower_mods if m_ in ("q_proj", "k_proj", "v_proj"))
                at_recompute = max(at_recompute, n * (rows * (vi + vh) * a_bytes + _rope_moment(v, rows, a_bytes)
                                                      + _adapters_saved(v, qkv, rows, a_bytes, ad_bytes, r)))
            at_gelu = max(at_gelu, *(base_backward(lin) for lin in in_layer),
                          *(dequant_backward_bytes(training, recipe, lin.in_features, lin.out_features,
                                                   n * per_tile) for lin in shuffled))
            if hooked and tower_mods:
                # the recomputed layer's quantized Linears dequantize their weights before their adapters run
                # (_dequant_moment): that moment, not the adapter's one plus a weight (no adapter transient is
                # live at the base matmul; measured with the tracer on Scout QLoRA q_proj,v_proj,fc1,fc2 one tile)
                lin_of = {lin.module: lin for lin in in_layer}
                at_recompute = max(at_recompute, n * rows * (2 * vh * a_bytes + 8) + _dequant_moment(
                    v, tower_mods, rows, a_bytes, ad_bytes, r, n,
                    lambda m_: dequant_forward_bytes(training, recipe, lin_of[m_].in_features,
                                                     lin_of[m_].out_features)))
        at_gelu = max(at_gelu, at_recompute)
        if hooked:
            kept = n * (layers * rows * vh * a_bytes + patches * vh * a_bytes + rows * vh * a_bytes + 8 * rows) \
                + (2 * tokens * th * a_bytes if text_leaf else 0)
        else:
            kept = tower_kept - mlp2_adapters - n * (rows * (vh * a_bytes + 8) + 2 * per_tile * out_dim * a_bytes)
        # the encoder's backward runs top layer first: at the top layer's moment the adapters of the layers below
        # have no gradient yet (measured with the tracer: Scout QLoRA q_proj,v_proj,fc1,fc2 one tile, gc, 2.5 MB of
        # the lower layer's fp32 adapter gradients absent at the recomputed fc1's peak); at a lower layer's same
        # moment they exist, but the inputs of the layers above (at least one hidden state a tile each) are freed.
        # The larger of the two.
        grads = _scaled(b.gradients, trainable_text, grow_all)
        if tower_mods and layers > 1:
            below_grads = grads - _scaled(b.gradients, trainable_text, grow_all - (layers - 1) * sum(
                r * sum(_in_out(v, m_)) for m_ in tower_mods))
            freed_above = (layers - 1) * n * rows * vh * a_bytes
            grads, kept = max((grads - below_grads, kept), (grads, kept - freed_above), key=sum)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (grads, kept, max(at_gelu, at_fc2, at_fc1))))
    # Llama4VisionRotaryEmbedding's freqs_ci buffer (complex64, one row per tile row, 2 x (head_dim // 4) values:
    # _compute_freqs_ci's rope_freq of head_dim // 4, repeat_interleave(2), x and y concatenated, every other kept),
    # moved to the GPU with the model
    freqs = rows * 2 * (vh // heads // 4) * 8
    weights = b.weights + img_w.total + freqs + adapters * ad_bytes
    states = _scaled(b.optimizer_state, trainable_text, g_other) + (tower_states(training, recipe, tower) if lora_tower
                                                                      else 0)
    if trained_tower and not lora_tower:
        states = _scaled(b.optimizer_state, trainable_text, grow_all)
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
    mode = (frozen_lm_note(training) + ("; the projector trained" if trained_projector else "") + (
        " (approximate: with checkpointing the recomputed language-model layer is counted at a trained layer's saved "
        "set, an over-estimate: +0.52 % on Maverick's 4 published-width layers, --grid vlmfreeze)" if gc else "")
            if drop else
            "full fine-tuning trains the projector" if trained_projector else
        (f"--method {training.method} also adapts the tower's {', '.join(tower_mods)} in every encoder layer"
         + (" and the pixel-shuffle adapter's" if mlp2 else "") + f" ({adapters:,} adapter parameters: peft matches "
         "the target names over the whole model), whose graph is saved "
         + ("layer by layer when recomputed" if gc else "from the lowest adapter up") + " until the tower's backward, "
         "run last; projector frozen" if tower_mods else
         f"--method {training.method} adapts the language model only (projector frozen)"))
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
        + (("trained (--train-vision: its gradients, optimizer state and "
            + ("every layer's kept input and one recomputed layer's saved set, Llama4VisionEncoderLayer being a "
               "GradientCheckpointingLayer" if gc else "every layer's saved set, its trained Linears' inputs included")
            + "; its backward runs last)") if trained_tower else
           "frozen, run with grad and recomputed in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc else "frozen; nothing in it requires grad, so it saves nothing")
        + f"; {mode} ({projector:,} parameters, Llama4MultiModalProjector: one Linear); "
        + QLORA_IMAGE_NOTE + ".",
    )
    # the text model's own note says the image side is counted elsewhere: it is counted here
    text_notes = tuple(x.replace(" the vision tower and projector are not counted here (the -vision presets count "
                                 "them; memory/llama4v.py)", " the image side follows") for x in b.notes)
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector,
                  trainable_parameters=trainable_text + grow_all, weights=weights,
                  gradients=grad_bytes(), optimizer_state=states,
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
