"""Llama-3.2-Vision (model_type mllama; transformers models/mllama/modeling_mllama.py): a training step's memory.

MllamaForConditionalGeneration differs from the LLaVA-style models memory/vision.py covers: the image does not
enter the text sequence. MllamaModel.forward runs MllamaVisionModel first: every image is max_num_tiles tiles of
image_size pixels (image_processing_mllama.py pack_images pads every image to max_num_tiles, so the tower's work does
not depend on the image's size), each tile patch_size^2 patches plus a class token (1601 rows, padded to 1608), one
local encoder over all the tiles of an image (a 4-D aspect-ratio mask), then a gated global encoder; the outputs of
intermediate_layers_indices are stacked and concatenated to the global output (vision_output_dim wide) and
multi_modal_projector maps them to the text width: cross_attention_states, images x tiles x 1601 rows per sample.
_prepare_cross_attention_mask expands the processor's cross_attention_mask to (batch, 1, text, vision rows) in the
model's dtype, and full_text_row_masked_out_mask (batch, 1, text, 1). MllamaTextModel then runs its layers: the
self-attention ones as a Llama decoder (memory/activations.py counts them), and at cross_attention_layers a
MllamaCrossAttentionDecoderLayer, whose q comes from the text and whose k / v are projected from the vision rows,
each with an RMSNorm over head_dim (q_norm, k_norm), and two tanh gates.

The estimate is the text model's (the decoder path on --seq-len tokens with every layer counted as self-attention),
with per cross-attention layer the difference of what it saves (cross_layer_delta), plus the image side: the
tower's forward, the held vision output, cross_attention_states and the masks, and with checkpointing the tower's
graph (transformers' enable_input_require_grads hooks the tower's patch embedding too, and MllamaVisionEncoderLayer
is no GradientCheckpointingLayer, so the frozen tower saves all its activations) and its backward, run last.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import moments as _m
from vramcalc.core.memory.frozen_lm import _frozen_lm_text, _lm_drop, frozen_lm, frozen_lm_note, projector_trained
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.weights import QLORA_IMAGE_NOTE, dequant_backward_bytes, image_side_bytes
from vramcalc.core.params import (
    head_dim,
    image_linears,
    kv_heads,
    mllama_text_extra_params,
    projector_params,
    resolve_targets,
    vision_tower_params,
)
from vramcalc.core.peft_methods import lora_inputs_saved, tower_lora_split
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec

METHODS = ("full", "lora", "qlora")
# memory/moments.py layouts of the moments this module adds
_IMAGE = ("image side (vision output, cross-attention states and masks, pixel_values)", "activations")
_CROSS_BWD = ("cross-attention layer backward", "temporaries")
BWD_CROSS = _m._layout(("gradients", "gradients"), ("saved layer activations", "activations"), _IMAGE, _CROSS_BWD)
FWD_CROSS = _m._layout(("gradients (accumulating)", "gradients"), ("saved layer activations", "activations"), _IMAGE,
                       ("cross-attention layer forward", "temporaries"))
FWD_CROSS_MASK = _m._layout(("gradients (accumulating)", "gradients"), _IMAGE,
                            ("cross_attention_mask expanded (int64, fp32 and 16-bit copies)", "temporaries"))


def _round(x: int, k: int) -> int:
    return -(-x // k) * k


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """What the Llama-3.2-Vision arithmetic does not cover, refused in one line."""
    name = f"{model.name} (Llama-3.2-Vision)"
    recipe = recipe_of(training)
    if training.mode != "train":
        raise UnsupportedCombination(f"--mode {training.mode} is not modelled for {name}: estimate a training step "
                                     "(--mode train)")
    from vramcalc.core.memory.frozen_lm import _check_frozen_lm

    if frozen_lm(training):  # LLaMA-Factory freeze_language_model: the projector trained (memory/vision.py)
        _check_frozen_lm(model, training)
    elif training.method not in METHODS:
        raise UnsupportedCombination(f"--method {training.method} is not modelled for {name}: use "
                                     f"{', '.join(METHODS)}")
    if training.train_vision and training.method != "full" and not frozen_lm(training):
        raise UnsupportedCombination(f"--train-vision trains {name}'s whole tower, which --method {training.method} "
                                     "does not (LoRA on the tower is not modelled): use --method full, or drop "
                                     "--train-vision")
    if training.attention != "sdpa":
        raise UnsupportedCombination(f"--attention {training.attention} is not modelled for {name} (transformers "
                                     "sets _supports_flash_attn false; eager's per-head scores over the vision rows "
                                     "are not counted): use --attention sdpa")
    if recipe.autocast or recipe.compute == "fp32" or recipe.weight != recipe.compute:
        raise UnsupportedCombination(f"--precision {training.precision} is not modelled for {name}: use a pure "
                                     "16-bit precision (--precision bf16 or fp16)")
    if training.objective != "sft" or training.loss != "hf" or training.packing != "none":
        raise UnsupportedCombination(f"{name}: only --objective sft with --loss hf and no --packing is modelled; "
                                     "drop them")
    if (training.tp > 1 or training.pp > 1 or training.sequence_parallel or training.activation_offload
            or training.ac_every > 1 or training.optimizer_in_bwd or training.dora or training.modules_to_save
            or training.zero or training.fsdp != "none" or training.lora_dropout > 0
            or training.kernels != "hf"):
        raise UnsupportedCombination(f"{name}: --tp/--pp/--sequence-parallel, ZeRO/FSDP, activation offload, "
                                     "--ac-every, --optimizer-in-bwd, --dora, --modules-to-save, --lora-dropout "
                                     "and --kernels are not modelled for it; drop them")


def tower_rows(v: VisionSpec) -> tuple[int, int]:
    """(rows of a tile, rows of an image in the tower): MllamaVisionModel.forward adds the class token to the
    (image / patch)^2 patches, pads each tile to a multiple of 8 rows (num_padding_patches) and runs the local and
    global encoders over all max_num_tiles tiles of an image as one sequence."""
    tile = (v.image_size // v.patch_size) ** 2 + 1
    return tile, v.max_num_tiles * _round(tile, 8)


def vision_rows(model: ModelSpec, training: TrainingSpec) -> int:
    """The keys each cross-attention layer attends over, per sample: images x tiles x 1601 (the projector's
    output reshaped to (-1, 1601, text width), viewed per sample in MllamaTextCrossAttention)."""
    v = model.vision
    assert v is not None
    return (training.images or 1) * v.max_num_tiles * tower_rows(v)[0]


def cross_layer_delta(model: ModelSpec, training: TrainingSpec, states_grad: bool) -> tuple[int, int]:
    """(bytes a cross-attention layer saves beyond what the decoder path counts for it as a self-attention layer,
    the part of those that lives in q / k / v before the attention's backward), for the batch.

    The decoder path (memory/activations.py layer_activations) counts for the layer's attention sdpa's q, k, v,
    output and logsumexp on the text tokens (k and v with kv width, flash with enable_gqa) and each k / v adapter's
    input copy and lora_A output on the text tokens. MllamaTextCrossAttention (modeling_mllama.py) instead:
    - q_norm (MllamaTextRMSNorm over head_dim) saves q's fp32 copy and rsqrt per head (q needs a gradient: the
      layer's input does), and the normalized 16-bit q when its weight trains;
    - k_proj / v_proj read cross_attention_states (vision rows x text width); k_norm saves k's fp32 copy and rsqrt
      when k needs a gradient (k_proj trained or adapted, or the states need one), and the normalized k when its
      weight trains; each k / v adapter saves its fp32 copy of the states and lora_A's output on the vision rows;
    - sdpa_attention_forward gets a 4-D mask: no flash kernel and no enable_gqa, so repeat_kv copies k and v to
      every head (vision rows x text width each) and the memory-efficient kernel saves them with q, the output, a
      logsumexp per head rounded to 32 rows, and its bias: the mask padded to a multiple of 16 keys, one copy per
      layer (trace/_cuda.py _attn_bias);
    - a trained gate (full fine-tuning) makes its mul save the other operand: the attention output and the masked
      MLP output (text tokens x width each).
    """
    assert model.hidden_size is not None and model.num_attention_heads is not None
    b, s = training.batch_size, training.seq_len
    tokens, rows = b * s, b * vision_rows(model, training)
    c = dtype_bytes(recipe_of(training).compute)
    a = dtype_bytes(training.adapter_dtype)
    d, heads, kvh = model.hidden_size, model.num_attention_heads, kv_heads(model)
    q_dim, kv_dim = heads * head_dim(model), kvh * head_dim(model)
    full = training.method == "full"
    adapted = ({lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(model, training.lora_targets)}
               if training.method in ("lora", "qlora") else set())
    r = training.lora_rank
    # what the decoder path counted for this layer's attention as a self-attention layer
    self_attn = tokens * (c * (2 * q_dim + 2 * kv_dim) + 4 * heads)
    for mod in ("k_proj", "v_proj"):
        if mod in adapted:
            self_attn += tokens * ((a * d if a != c else 0) + a * r)
    # the cross-attention layer's own
    kv_rep = q_dim if kvh != heads else kv_dim
    q_norm = tokens * (4 * q_dim + 4 * heads + (c * q_dim if full else 0))
    k_live = full or "k_proj" in adapted or states_grad
    k_norm = rows * (4 * kv_dim + 4 * kvh + (c * kv_dim if full else 0)) if k_live else 0
    kv_adapters = sum(rows * ((a * d if a != c else 0) + a * r) for mod in ("k_proj", "v_proj") if mod in adapted)
    vision_keys = rows // b
    sdpa = tokens * c * 2 * q_dim + rows * c * 2 * kv_rep + b * heads * _round(s, 32) * 4 \
        + tokens * _round(vision_keys, 16) * c
    gates = 2 * tokens * d * c if full else 0
    cross = q_norm + k_norm + kv_adapters + sdpa + gates
    return cross - self_attn, q_norm + k_norm + kv_adapters


def tower_graph_saved(v: VisionSpec, images: int) -> int:
    """What the frozen tower saves when its patch embedding's output requires grad (checkpointing; module
    docstring), for `images` images (modeling_mllama.py MllamaVisionModel.forward, MllamaVisionEncoderLayer).

    Per encoder layer (rows of an image: its tiles, padded): input_layernorm and post_attention_layernorm
    (nn.LayerNorm) save their input and fp32 mean and rstd; the frozen q/k/v/o_proj save nothing, sdpa's
    memory-efficient kernel saves q, k, v (views of the projections), its output and an fp32 logsumexp per head;
    GELU saves fc1's output. The inputs of the norms are the layer's input (the previous layer's output) and the
    residual after the attention. So per layer: its output, the residual, q, k, v, the output (width each), fc1's
    output (intermediate) and the stats; the global encoder's last output is saved by nothing. Before the layers:
    the hooked Conv2d output (a leaf its AccumulateGrad node holds), layernorm_pre's input (tiles x 1601 rows)
    and stats, F.pad's output (the first layer's input); between the encoders: layernorm_post's stats and the
    post-tile embedding's output (the global encoder's input); the aspect-ratio mask, saved by every layer's
    kernel as its bias (the rows are a multiple of 16: no padded copy).
    """
    tile, rows = tower_rows(v)
    h, i, c = v.hidden_size, v.intermediate_size, 2
    layers = v.num_layers + v.num_global_layers
    per_layer = rows * (6 * h + i) * c + 4 * v.num_attention_heads * _round(rows, 32) + 16 * rows
    tiles = v.max_num_tiles
    before = tiles * (tile - 1) * h * c + tiles * tile * (h * c + 8) + rows * h * c
    between = 8 * rows + rows * h * c
    return images * (layers * per_layer - rows * h * c + before + between + rows * rows * c)


def tower_trained_saved(v: VisionSpec, images: int) -> int:
    """What a trained tower saves (--train-vision, full fine-tuning), for `images` images: the frozen hooked graph
    (tower_graph_saved) with, per encoder layer, the trained Linears' inputs (modeling_mllama.py MllamaVisionAttention,
    MllamaVisionMLP): input_layernorm's output (q/k/v_proj's shared input), post_attention_layernorm's output (fc1's)
    and GELU's output (fc2's); per gated global layer, the two gate muls' other operands (o_proj's and fc2's outputs,
    MllamaVisionEncoderLayer gate_attn / gate_ffn); before the layers, MllamaPrecomputedPositionEmbedding's gated
    tile_position_embedding (tiles x 1601 rows x width, the mul with the trained gate saves it) in place of the
    hooked Conv2d's leaf output (no longer a leaf: nothing saves it). (The Conv2d also saves its input,
    pixel_values, for its weight's gradient: estimate counts it beside the step's inputs.)"""
    tile, rows = tower_rows(v)
    h, i, c = v.hidden_size, v.intermediate_size, 2
    layers = v.num_layers + v.num_global_layers
    tiles = v.max_num_tiles
    own = layers * rows * (2 * h + i) * c + v.num_global_layers * rows * 2 * h * c + tiles * tile * h * c \
        - tiles * (tile - 1) * h * c
    return tower_graph_saved(v, images) + images * own


# MllamaVisionEncoderLayer's Linears in forward order (MllamaVisionAttention q/k/v/o_proj, MllamaVisionMLP fc1 / fc2)
TOWER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


def lora_targets(model: ModelSpec, training: TrainingSpec) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """What peft 0.21's target matching adapts on MllamaForConditionalGeneration (tuners_utils.py
    check_target_module_exists: a name's suffix anywhere in the model; _maybe_include_all_linear_layers: every
    nn.Linear but lm_head): (the tower Linears adapted in every local and global encoder layer, whether the
    multi_modal_projector (an nn.Linear) is, the targets left for the language model). all-linear takes all six
    tower Linears and the projector; q/k/v/o_proj (auto: q_proj, v_proj) name the tower attention's as well as the
    text model's (its cross-attention layers' included); fc1 / fc2 are the tower MLP's only. Checked against
    get_peft_model on the meta model (tests/test_mllama_lora.py). Empty for the other methods."""
    if training.method not in ("lora", "qlora"):
        return (), False, training.lora_targets
    if any(raw.strip().lower() == "multi_modal_projector" for raw in training.lora_targets):
        raise UnsupportedCombination(f"LoRA target 'multi_modal_projector' alone is not modelled for {model.name}: "
                                     "all-linear adapts it with the tower's Linears")
    return tower_lora_split(model, training, TOWER_LINEARS)


def _tower_in_out(v: VisionSpec, module: str) -> tuple[int, int]:
    h, i = v.hidden_size, v.intermediate_size
    return {"fc1": (h, i), "fc2": (i, h)}.get(module, (h, h))


def tower_adapter_params(model: ModelSpec, training: TrainingSpec) -> tuple[int, int]:
    """(LoRA parameters on the tower's encoder layers, on the projector): rank x (in + out) per adapted Linear
    (lora_A and lora_B, no bias; peft tuners/lora/layer.py update_layer)."""
    v = model.vision
    assert v is not None and model.hidden_size is not None
    tower, projector, _ = lora_targets(model, training)
    r = training.lora_rank
    layers = v.num_layers + v.num_global_layers
    return (layers * sum(r * sum(_tower_in_out(v, m)) for m in tower),
            r * (v.vision_output_dim + model.hidden_size) if projector else 0)


def _adapters_saved(v: VisionSpec, modules: tuple[str, ...], rows: int, c: int, a: int, r: int) -> int:
    """peft_methods.lora_inputs_saved over this tower's Linear widths."""
    return lora_inputs_saved(lambda mod: _tower_in_out(v, mod)[0], modules, rows, c, a, r)


def tower_lora_saved(model: ModelSpec, training: TrainingSpec, images: int) -> int:
    """What the frozen tower with LoRA adapters saves for `images` images: with checkpointing, the hooked graph
    (tower_graph_saved; MllamaVisionEncoderLayer is no GradientCheckpointingLayer) plus every layer's adapters'
    saved inputs; without, no op below the bottom layer's first adapted Linear has an input that needs a gradient
    (pixel_values and the frozen embeddings need none), so the hooked graph less what it saves before the layers
    (the Conv2d's leaf output, layernorm_pre's input and statistics, F.pad's output) and the bottom layer's sections
    below its first adapter: input_layernorm's input and statistics, then (no q/k/v adapter) the attention's q, k, v,
    output and logsumexp, then (no o_proj adapter) post_attention_layernorm's input and statistics, then (no fc1
    adapter) GELU's input."""
    v = model.vision
    assert v is not None
    tower, _, _ = lora_targets(model, training)
    if not tower:
        return 0
    c = dtype_bytes(recipe_of(training).compute)
    a = dtype_bytes(training.adapter_dtype)
    tile, rows = tower_rows(v)
    h, i = v.hidden_size, v.intermediate_size
    layers = v.num_layers + v.num_global_layers
    adapters = images * layers * _adapters_saved(v, tower, rows, c, a, training.lora_rank)
    if training.grad_checkpointing:
        return tower_graph_saved(v, images) + adapters
    tiles = v.max_num_tiles
    # (tower_graph_saved's third width-wide term before the layers stays saved: measured with the tracer on the
    # mllama:toy cut, LoRA q_proj,v_proj without checkpointing, -0.9 % when it is freed)
    before = tiles * (tile - 1) * h * c + tiles * tile * (h * c + 8)
    free = before + rows * (h * c + 8)
    for names, size in ((("q_proj", "k_proj", "v_proj"), rows * 4 * h * c + 4 * v.num_attention_heads
                         * _round(rows, 32)),
                        (("o_proj",), rows * (h * c + 8)), (("fc1",), rows * i * c)):
        if any(m in tower for m in names):
            break
        free += size
    return tower_graph_saved(v, images) - images * free + adapters


def tower_lora_forward(model: ModelSpec, training: TrainingSpec, images: int) -> int:
    """The tower's forward with LoRA adapters at the top global layer's adapted Linears (tuners/lora/layer.py
    Linear.forward), beyond the tower's whole saved set: for each adapted Linear, its own temporaries (the base
    projection's 16-bit output, lora_B's output and the scaled one in the adapter dtype), its input when not
    saved (held by the caller while the adapter casts it), the query and key already projected (for k_proj /
    v_proj), less the sections of the saved set the layer has not reached yet (tower_lora_saved's order); the
    largest over the adapted Linears."""
    v = model.vision
    assert v is not None
    tower, _, _ = lora_targets(model, training)
    c, a, r = dtype_bytes(recipe_of(training).compute), dtype_bytes(training.adapter_dtype), training.lora_rank
    _, rows = tower_rows(v)
    h, i = v.hidden_size, v.intermediate_size
    # the top layer's saved sections after each Linear: the attention's (q, k, v, output, logsumexp),
    # post_attention_layernorm's input and statistics, GELU's input (fc1's output)
    attention = rows * 4 * h * c + 4 * v.num_attention_heads * _round(rows, 32)
    later = {"q_proj": attention + rows * (h * c + 8) + rows * i * c, "o_proj": rows * (h * c + 8) + rows * i * c,
             "fc1": rows * i * c, "fc2": 0}
    later["k_proj"] = later["v_proj"] = later["q_proj"]
    best = 0
    for k, mod in enumerate(tower):
        width, out = _tower_in_out(v, mod)
        after = sum(_adapters_saved(v, (m,), rows, c, a, r) for m in tower[k + 1:])
        held = rows * width * c if a != c and mod != "o_proj" else 0  # o_proj's input: sdpa's saved output
        if mod == "fc2" and not (a == c and "fc1" in tower):
            held += rows * h * c  # post_attention_layernorm's output, held by MllamaVisionEncoderLayer through the MLP
        projected = rows * h * c * ("q_proj", "k_proj", "v_proj").index(mod) if mod in ("k_proj", "v_proj") else 0
        best = max(best, held + projected + rows * out * (c + 2 * a) - after - later[mod])
    return images * best


def tower_graph_forward(v: VisionSpec, images: int, vrows: int, c: int) -> int:
    """The tower's forward with its graph (checkpointing): at the final concatenation its saved set, the global
    encoder's last output, the stacked intermediate outputs and the concatenated vision output."""
    _, rows = tower_rows(v)
    k = len(v.intermediate_layers_indices)
    return tower_graph_saved(v, images) + images * rows * (1 + k) * v.hidden_size * c \
        + vrows * v.vision_output_dim * c


def tower_backward(v: VisionSpec, images: int, vrows: int, c: int, trained: bool = False) -> int:
    """The tower's backward at its top global layer's GELU: the gradients of the stacked intermediate outputs
    (rows x width each, sliced back to the padded rows), the gradient flowing in (width), fc2's input gradient and
    GELU's (intermediate each). Trained (--train-vision), its peak comes earlier, at fc2's bias gradient (the sum
    over the rows, once fc2's weight gradient exists): the stacked outputs' gradients, the gradient flowing in and
    gate_ffn's product's (width each) and fc2's input gradient (intermediate; measured with the tracer)."""
    _, rows = tower_rows(v)
    k = len(v.intermediate_layers_indices)
    if trained:
        return images * rows * ((k + 2) * v.hidden_size + v.intermediate_size) * c
    return images * rows * (k * v.hidden_size + v.hidden_size + 2 * v.intermediate_size) * c


def tower_lora_backward(model: ModelSpec, training: TrainingSpec, images: int) -> int:
    """The tower's backward at its top global layer's adapted fc2 (tuners/lora/layer.py Linear.forward run
    backwards): lora_A's gradient for its input, in the adapter dtype (rows x intermediate), beside the stacked
    intermediate outputs' gradients, the incoming gradient's copy in the adapter dtype (result's
    cast back); an adapted fc1's below it; 0 when neither is (tower_backward's GELU moment then holds)."""
    v = model.vision
    assert v is not None
    tower, _, _ = lora_targets(model, training)
    c, a = dtype_bytes(recipe_of(training).compute), dtype_bytes(training.adapter_dtype)
    _, rows = tower_rows(v)
    h, i, k = v.hidden_size, v.intermediate_size, len(v.intermediate_layers_indices)
    at_fc2 = rows * (k * h * c + h * a + i * a) if "fc2" in tower else 0  # (the 16-bit incoming one gone: measured)
    # an adapted fc1: its scaled output's gradient and the product's (adapter dtype) beside GELU's input and output
    # gradients, once fc2's adapter has freed its saved input (measured with the tracer on mllama:toy)
    fc2_saved = rows * (i + training.lora_rank) * a if "fc2" in tower else 0
    at_fc1 = rows * (k * h * c + h * c + 2 * i * c + i * a) - fc2_saved if "fc1" in tower else 0
    return images * max(at_fc2, at_fc1)


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on --seq-len tokens with the cross-attention layers' and the image side's
    terms (module docstring)."""
    check(model, training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model = replace(model, vision=None)
    # (the image options dropped; --image-size sizes nothing in a text model's run but a ResNet's)
    # LoRA: peft matches the targets over the whole model (lora_targets): the tower's and projector's adapters
    # are added here, the language model's are the text estimate's
    tower_mods, _, text_targets = lora_targets(model, training)
    text_training = replace(training, images=0, image_width=0, train_vision=False, lora_targets=text_targets)
    flm = frozen_lm(training)
    if flm:  # the states' gradient through the frozen layers: counted as a trained embedding's (memory/vision.py)
        text_training = replace(text_training, train_layers=(), train_modules=("embed_tokens",))
    b = _frozen_lm_text(training, text_estimate(text_model, text_training))
    c = dtype_bytes(recipe_of(training).compute)
    w_bytes = dtype_bytes(recipe_of(training).weight)
    d, h, i = model.hidden_size, v.hidden_size, v.intermediate_size
    bs, s = training.batch_size, training.seq_len
    n = training.images or 1
    images = bs * n
    tile, rows = tower_rows(v)
    tiles = images * v.max_num_tiles
    keys = n * v.max_num_tiles * tile  # vision rows per sample
    vrows = bs * keys
    n_cross = len(v.cross_attention_layers)
    n_mid = len(v.intermediate_layers_indices)
    full = training.method == "full"
    gc = training.grad_checkpointing
    tower, projector = vision_tower_params(v), projector_params(v, d)
    extras = mllama_text_extra_params(model)
    trainable_text = b.trainable_parameters
    # frozen_lm: the projector trained (the cross-attention layers' norms and gates are the language model's:
    # LLaMA-Factory's language_model key), the text run's stand-in embedding out again (_lm_drop)
    drop = _lm_drop(training, b)
    # (tower_only: the projector frozen too, the tower alone trained)
    extra_trainable = projector + extras if full else (projector if projector_trained(training) else 0) - drop \
        if flm else 0
    # a trained tower's gradients come last (its backward runs after the language model's, backward.end included):
    # the text model's backward moments grow by the projector and extras only, the optimizer step and accumulated
    # micro-batches by the tower too
    grow_all = extra_trainable + (tower if training.train_vision else 0)
    # LoRA on the image side (lora_targets): the adapters' gradients come last too (the projector's after the
    # language model's backward, the tower's in its own backward, run last)
    tower_adapters, projector_adapters = tower_adapter_params(model, training)
    grow_all += tower_adapters + projector_adapters
    a = dtype_bytes(training.adapter_dtype)

    # --- inputs: pixel_values (batch, images, tiles, 3, tile, tile) in the model's dtype; aspect_ratio_ids,
    # aspect_ratio_mask and cross_attention_mask (batch, text, images, tiles) int64 (processing_mllama.py)
    pixel = tiles * 3 * v.image_size ** 2 * w_bytes + 8 * (images + tiles + bs * s * n * v.max_num_tiles)
    # --- the vision output (batch, images, tiles, 1601, vision_output_dim): MllamaModel returns it as
    # image_outputs, held by the model output until the loss is taken
    vision_out = vrows * v.vision_output_dim * c
    # cross_attention_states: the projector's output (vision rows x text width)
    states = vrows * d * c
    # _prepare_cross_attention_mask: the 4-D mask in the model's dtype and full_text_row_masked_out_mask
    masks = bs * s * keys * c + bs * s * c
    # --- the tower's forward (MllamaVisionModel.forward), no graph unless checkpointing hooked it: the patch
    # Conv2d's output (kept by the local `patch_embeds`), the aspect-ratio mask (images, 1, rows, rows), and every
    # encoder layer's output (BaseModelOutput.hidden_states of both encoders), then the intermediate ones stacked
    # and the concatenation; its peak is the larger of a global layer's MLP (GELU: the residual, the norm's output,
    # fc1's output and GELU's) and that final concatenation
    conv = tiles * (tile - 1) * h * c
    amask = images * rows * rows * c
    layers = v.num_layers + v.num_global_layers
    at_gelu = images * rows * ((layers + 2) * h + 2 * i) * c
    at_cat = images * rows * (layers + n_mid) * h * c + vision_out
    tower_fwd = pixel + conv + amask + max(at_gelu, at_cat)

    # Checkpointing: activation_checkpointing_enable (transformers modeling_utils.py) calls
    # enable_input_require_grads whatever the method (MllamaForConditionalGeneration's main input is input_ids); it
    # hooks every PreTrainedModel's input embeddings, MllamaVisionModel's patch_embedding too (its
    # get_input_embeddings), so the frozen tower runs with grad; MllamaVisionEncoderLayer is no
    # GradientCheckpointingLayer, so it saves its whole graph until the tower's backward, which runs last
    # --train-vision (full fine-tuning): the tower trains, and with or without checkpointing its layers (no
    # GradientCheckpointingLayer) save their whole graph (tower_trained_saved), freed by its backward, run last
    trained_tower = training.train_vision
    graph = gc or trained_tower or bool(tower_mods)  # a tower adapter's output needs a gradient
    states_grad = full or graph or flm  # cross_attention_states need a gradient
    delta, _ = cross_layer_delta(model, training, states_grad=states_grad)
    saved_cross = 0 if gc else n_cross * delta  # checkpointed cross layers keep only their inputs
    tower_saved = tower_trained_saved(v, images) if trained_tower else tower_lora_saved(model, training, images) \
        if tower_mods else tower_graph_saved(v, images) if graph else 0
    # an adapted multi_modal_projector (all-linear): lora_A saves the vision output cast to the adapter dtype (the
    # vision output itself when no cast is needed, held to the loss anyway during the forward) and lora_B lora_A's
    # output, until the projector's backward (after the language model's, before the tower's)
    proj_saved = vrows * (v.vision_output_dim + training.lora_rank) * a if projector_adapters else 0
    proj_fwd = proj_saved - (vrows * v.vision_output_dim * c if projector_adapters and a == c else 0)
    # the trained patch Conv2d saves pixel_values (the step's input, counted in `pixel` through the forward), which
    # so outlives the forward
    conv_in = tiles * 3 * v.image_size ** 2 * w_bytes if trained_tower else 0
    # what the image side holds while the text model runs its layers: the inputs, the vision output (until the
    # loss), the states and the masks (while MllamaModel.forward runs; kept to the backward when k_proj / v_proj
    # save the states (trained) or the checkpointed cross layers keep them as inputs)
    during_layers = pixel + vision_out + states + masks + tower_saved + proj_fwd
    kept_states = states if full or gc else 0
    kept_masks = masks if gc else 0
    # the trained projector saves its input (a frozen one none: its weight needs no gradient)
    kept_vision = vision_out if full or projector_trained(training) else 0
    after_forward = pixel + vision_out + kept_states + kept_masks + tower_saved + proj_fwd
    # the step's inputs are dropped after the forward (as the tracer's step does: only the loss is kept)
    in_backward = kept_states + kept_masks + kept_vision + tower_saved + conv_in + proj_saved
    # the cross_attention_mask's expansion (int64 repeat_interleave, 1.0 - it in fp32, its 16-bit cast)
    mask_moment = pixel + vision_out + states + tower_saved + bs * s * keys * (8 + 4 + c)

    # frozen_lm without checkpointing: the image features enter at the cross-attention layers only, so the layers
    # below the lowest one record no graph (their input needs no gradient, their weights are frozen), and that layer's
    # text input needs none either: input_layernorm saves nothing and q_norm nothing (q needs no gradient; sdpa still
    # saves q for k's and v's). The text run (the stand-in embedding) counted every layer as saving what its input's
    # gradient needs: taken out of every moment that holds them (`unsaved_below`). With checkpointing
    # enable_input_require_grads hooks the text embeddings (modeling_utils.py), so every layer keeps its input and
    # is rerun with grad, as the text run counts.
    from vramcalc.core.memory.activations import layer_activations

    unsaved_below = 0
    if flm and not gc:
        q_dim = model.num_attention_heads * head_dim(model) if model.num_attention_heads else d
        frozen_layer = layer_activations(text_model, text_training, recipe_of(training), trainable_weights=False)
        unsaved_below = min(v.cross_attention_layers) * frozen_layer.saved(bs * s, s) \
            + bs * s * (d * c + 4 + 4 * q_dim + 4 * (model.num_attention_heads or 0))

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    acc = _scaled(accum, trainable_text, grow_all)
    img_w = image_side_bytes(model, training, recipe_of(training), tower, projector)  # QLoRA: 4-bit Linears
    # QLoRA: a layer's quantized Linear holds its dequantized weight beside the layer's moment past GELU's extra
    # tensor (intermediate wide); the projector's runs after the tower returns, beside its output and the states
    tower_fwd = max(tower_fwd + max(0, img_w.dequant_tower - images * rows * i * c),
                    pixel + vision_out + states + img_w.dequant_projector if img_w.dequant_projector else 0)
    raw.append(("forward.vision", _m.FWD_VISION, (acc, tower_fwd if not graph else img_w.dequant_forward +
                                                  tower_graph_forward(v, images, vrows, c) + pixel
                                                  + tower_saved - tower_graph_saved(v, images)
                                                  # LoRA without checkpointing: the Conv2d's output, no saved leaf
                                                  # now, still held by the local patch_embeds
                                                  + (conv if tower_mods and not gc else 0)
                                                  + max(0, tower_lora_forward(model, training, images)
                                                        - images * rows * (1 + n_mid) * h * c - vision_out))))
    raw.append(("forward.cross_mask", FWD_CROSS_MASK, (acc, mask_moment, 0)))
    for key, layout, values in b.moments:
        values = _grown(layout, values, trainable_text, extra_trainable if key.startswith("backward.")
                        and training.grad_accum == 1 else grow_all)
        values = _less_saved(layout, values, unsaved_below)
        if key == "forward.layer":
            raw.append((key, (*layout, _IMAGE), (*values, saved_cross + during_layers)))
        elif key.startswith("forward."):
            raw.append((key, (*layout, _IMAGE), (*values, saved_cross + after_forward)))
        elif key == "backward.bottom":
            raw.append((key, (*layout, _IMAGE), (*values, kept_vision + tower_saved + conv_in + proj_saved)))
        elif key == "backward.end":  # the gradient being summed stays the last term (memory/timeline.py)
            raw.append((key, (*layout[:-1], _IMAGE, layout[-1]), (*values[:-1], kept_vision + tower_saved + conv_in
                                                                  + proj_saved, values[-1])))
        elif key.startswith("backward."):
            raw.append((key, (*layout, _IMAGE), (*values, saved_cross + in_backward)))
        else:
            raw.append((key, layout, values))
    # --- the cross-attention layers' backward (the top one; with several, the next one down too, once the states'
    # gradient exists): the layers below still saved (with checkpointing: the kept inputs and this layer
    # recomputed), the memory-efficient kernel's backward (trace/_cuda.py _FusedAttention: dq with an fp32
    # accumulator, dk and dv over the repeated vision rows) beside the incoming gradient and the residual's
    from vramcalc.core.memory.activations import layer_activations

    recipe = recipe_of(training)
    tokens = bs * s
    n_layers = model.num_layers or 0
    layer = layer_activations(text_model, training, recipe, trainable_weights=full)
    per_layer = layer.saved(tokens, s)
    mlp_part = layer.mlp_saved_per_token * tokens
    moments = {key: (layout, values) for key, layout, values in b.moments}

    def term(key: str, name: str, default: int = 0) -> int:
        layout, values = moments[key]
        return dict(zip((x for x, _ in layout), values, strict=True)).get(name, default)

    bottom_saved = term("backward.bottom", "last layer's activations", per_layer)
    kept_inputs = term("backward.top", "kept layer inputs")
    top_layout, top_values = moments["backward.top"]
    g_top = _scaled(sum(x for (_, comp), x in zip(top_layout, top_values, strict=True) if comp == "gradients"),
                    trainable_text, 0)
    g_all = _scaled(b.gradients, trainable_text, extra_trainable)
    kv_rep = d if kv_heads(model) != model.num_attention_heads else kv_heads(model) * head_dim(model)
    cross_bwd = 2 * vrows * kv_rep * c + tokens * d * (4 + c) + 2 * tokens * d * c
    adapted = ({lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(model, training.lora_targets)}
               if training.method in ("lora", "qlora") else set())
    kv_dim = kv_heads(model) * head_dim(model)
    # what a cross-attention layer's memory-efficient kernel saves (cross_layer_delta): q and the output on the
    # text, k and v repeated over the vision rows, the logsumexp and the mask's padded copy
    sdpa_saved = tokens * c * 2 * d + vrows * c * 2 * kv_rep + bs * model.num_attention_heads * _round(s, 32) * 4 \
        + tokens * _round(keys, 16) * c
    order = sorted(v.cross_attention_layers, reverse=True)
    for k, at in enumerate(order[:2]):
        grads_at = g_top + (g_all - g_top) * max(n_layers - 1 - at, 0) // max(n_layers, 1)
        below = len(order) - k - 1  # cross layers below this one
        if gc:
            saved_at = kept_inputs + per_layer - mlp_part + delta
        elif at > 0:
            saved_at = bottom_saved + (at - 1) * per_layer + below * delta + per_layer - mlp_part + delta
        else:
            saved_at = per_layer - mlp_part + delta
        states_grad_bytes = states if states_grad and k > 0 else 0  # the states' gradient, summed layer by layer
        transient = cross_bwd
        if states_grad or full or "k_proj" in adapted:
            # k_norm's backward (k needs a gradient): MllamaTextRMSNorm's fp32 chain run backwards (the gradient
            # upcast, rsqrt's and pow's terms: five fp32 tensors of k's size) beside k's 16-bit gradient, once the
            # repeated k / v gradients are summed and gone
            # (the kernel's saved set, consumed by then, less)
            transient = max(transient, vrows * kv_dim * (5 * 4 + c) - sdpa_saved)
        if training.method == "qlora":
            # QLoRA: the layer's MLP backward first, with its whole saved set, beside the incoming gradients and the
            # dequantized 16-bit weight of the largest projection (trace/_hf.py _Dequant4bit: dequantize_4bit again
            # for the input's gradient), which the decoder path's layer backward temporaries hold
            # (activations.py DequantBytes)
            text_bwd = term("backward.top", "layer backward temporaries")
            at_mlp = mlp_part + text_bwd
            transient = max(cross_bwd, at_mlp)
        if flm:  # the projector's gradient comes after every cross-attention layer's backward
            grads_at = 0
        raw.insert(len(raw) - 3, ("backward.cross", BWD_CROSS, (grads_at, max(saved_at - unsaved_below, 0),
                                                                in_backward + states_grad_bytes, transient)))
    # --- a cross-attention layer's forward (the top one): the layers below saved (with checkpointing their kept
    # inputs), and its own transients at the larger of two instants: v_proj's adapter (peft tuners/lora/layer.py:
    # the states cast to the adapter's dtype, lora_A's and lora_B's outputs and the scaled one, beside k and the base
    # projection) and sdpa (k and v as projected, besides what the kernel reads: the repeated copies, the mask's
    # padded copy, q, the output and the logsumexp, which it saves unless checkpointing drops them)
    a = dtype_bytes(training.adapter_dtype)
    r = training.lora_rank
    at_adapter = 0
    if adapted & {"k_proj", "v_proj"}:
        at_adapter = vrows * (2 * kv_dim * c + (d * a if a != c else 0) + r * a + 2 * kv_dim * a)
    at_sdpa = 2 * vrows * kv_dim * c
    if gc:
        at_sdpa += 2 * vrows * kv_rep * c + tokens * _round(keys, 16) * c + 2 * tokens * d * c \
            + bs * model.num_attention_heads * _round(s, 32) * 4
    top = order[0]
    if gc:
        saved_fwd = kept_inputs
    else:
        saved_fwd = (bottom_saved + (top - 1) * per_layer if top > 0 else 0) + (len(order) - 1) * delta \
            + per_layer - mlp_part
    cross_fwd = max(at_adapter, at_sdpa)
    if training.method == "qlora":
        # QLoRA: the layer's MLP forward, its attention side saved (unless checkpointing drops it), beside the
        # decoder path's layer forward temporaries, which hold the dequantized 16-bit weight of the largest projection
        # (trace/_hf.py _Dequant4bit.forward; activations.py DequantBytes)
        own = 0 if gc else delta
        cross_fwd = max(cross_fwd, own + term("forward.layer", "layer forward temporaries"))
    raw.insert(2, ("forward.cross", FWD_CROSS, (acc, max(saved_fwd - unsaved_below, 0), during_layers, cross_fwd)))
    if graph:
        # the tower's backward, last: every gradient exists, the tower's saved graph, and at its top global layer's
        # MLP backward the gradients of the intermediate layers' outputs (the stack's) and the flowing ones
        bwd = max(tower_backward(v, images, vrows, c, trained_tower), tower_lora_backward(model, training, images))
        if training.method == "qlora":
            # QLoRA: the projector's backward (its input needs a gradient once the tower is hooked) dequantizes its
            # weight again beside grad_A and the incoming gradient (weights.py dequant_backward_bytes), before the
            # layers'; a layer's largest Linear does beside the layer's backward moment (an upper bound)
            tower_lin, projector_lin = image_linears(v, d)
            bwd = max(bwd + max(dequant_backward_bytes(training, recipe_of(training), lin.in_features,
                                                       lin.out_features, 0) for lin in tower_lin),
                      *(dequant_backward_bytes(training, recipe_of(training), lin.in_features, lin.out_features, vrows)
                        for lin in projector_lin))
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  # (a trained tower's gradients come during its backward; LoRA adapters' are
                                  # counted whole: a few MB)
                                  (_scaled(b.gradients, trainable_text,
                                           extra_trainable + tower_adapters + projector_adapters),
                                   tower_saved + conv_in, bwd)))
    weights = b.weights + img_w.total + extras * w_bytes + (tower_adapters + projector_adapters) * a
    states_opt = _scaled(b.optimizer_state, trainable_text, grow_all)
    base = weights + states_opt + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "activations.pixel_values": pixel, "activations.cross_attention_layers": saved_cross,
                    "activations.image_side_saved": vision_out + states + masks,
                    "activations.frozen_lm_unsaved_below": unsaved_below,
                    "temporaries.vision_tower_forward": tower_fwd})
    adapted_side = ", ".join(tower_mods) + (" and multi_modal_projector" if projector_adapters else "")
    mode = (frozen_lm_note(training) + " (here only from the lowest cross-attention layer up: the image enters "
            "there; " + ("with checkpointing every layer keeps its input, the text embeddings hooked)" if gc else
                         "the layers below record no graph)")
            + ("; the projector trained" if projector_trained(training) else "") + ", the cross-attention layers "
            "frozen with the language model") if flm else \
        "full fine-tuning trains the projector and the cross-attention layers' norms and gates" if full else \
        (f"--method {training.method} also adapts the tower's {adapted_side} in every encoder layer ("
         f"{tower_adapters + projector_adapters:,} adapter parameters: peft matches the target names over the whole "
         "model; a regex such as '.*language_model.*\\.(q_proj|v_proj)' keeps them off the tower), whose graph from "
         "the lowest adapter up is saved until the tower's backward, run last" if tower_mods else
         f"--method {training.method} adapts the language model only")
    notes = (
        f"vision-language model (Llama-3.2-Vision): {n} image(s) per sample, each as {v.max_num_tiles} tiles of "
        f"{v.image_size} x {v.image_size} px (the processor pads every image to max_num_tiles, whatever its size): "
        f"{keys:,} vision rows per sample, which the {n_cross} cross-attention layers attend over; --seq-len counts "
        "the text tokens (the <|image|> tokens included).",
        f"vision tower ({tower:,} parameters) "
        + ("trained (--train-vision: its gradients, optimizer state and whole saved graph, checkpointing or not: "
           "MllamaVisionEncoderLayer is no GradientCheckpointingLayer)" if trained_tower else "frozen")
        + f"; {mode}; " + QLORA_IMAGE_NOTE + ".",
    )
    def temporaries_of(entries: list[_m.RawMoment], keys: tuple[str, ...]) -> int:
        return max((sum(x for (_, comp), x in zip(layout, values, strict=True) if comp == "temporaries")
                    for key, layout, values in entries if key in keys), default=0)

    cross_t = temporaries_of(raw, ("forward.cross", "backward.cross"))
    tower_bwd_t = temporaries_of(raw, ("backward.vision",))
    tower_fwd_t = temporaries_of(raw, ("forward.vision",))
    details.update({"temporaries.vision_tower_forward": tower_fwd_t, "temporaries.cross_attention_layer": cross_t,
                    "temporaries.vision_tower_backward": tower_bwd_t})
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector + extras,
                  trainable_parameters=trainable_text + grow_all, weights=weights,
                  gradients=_scaled(b.gradients, trainable_text, grow_all), optimizer_state=states_opt,
                  activations=b.activations + saved_cross + during_layers - unsaved_below,
                  temporaries=max(b.temporaries, tower_fwd_t, cross_t, tower_bwd_t), phases=phases, details=details,
                  notes=b.notes + notes,
                  moments=tuple(raw), active_parameters=b.active_parameters + tower + projector + extras)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})


def _scaled(value: int, trainable: int, extra: int) -> int:
    """`value` (bytes proportional to the trainable parameters) grown by `extra` more trainable parameters."""
    return value * (trainable + extra) // trainable if trainable else value


def _less_saved(layout: _m.Layout, values: tuple[int, ...], below: int) -> tuple[int, ...]:
    """The text run's saved layer activations less `below` (frozen_lm: what the layers under the lowest
    cross-attention layer do not save), the bottom layer's own set at most down to nothing."""
    return tuple(max(x - below, 0) if name in ("saved layer activations", "last layer's activations") else x
                 for (name, _), x in zip(layout, values, strict=True))


def _grown(layout: _m.Layout, values: tuple[int, ...], trainable: int, extra: int) -> tuple[int, ...]:
    return tuple(_scaled(x, trainable, extra) if comp == "gradients" else x
                 for (_, comp), x in zip(layout, values, strict=True))
