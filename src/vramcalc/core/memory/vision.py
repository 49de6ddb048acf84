"""Vision-language models (LLaVA-1.5): the text model's step on text + image tokens, plus the image side.

transformers models/llava/modeling_llava.py LlavaModel.forward: the token embeddings of the whole sequence are
computed first; get_image_features runs the CLIP tower (models/clip/modeling_clip.py) on pixel_values, takes the
hidden state `vision_feature_layer` (-2) without the class token and projects it (LlavaMultiModalProjector); the
image features replace the image placeholder tokens' embeddings (masked_scatter), and the language model runs
on the whole sequence: `--seq-len` text tokens + `images` x `image_tokens` placeholders. So the text model's
memory is the decoder estimate of a sequence that long (logits and loss included: the labels of the image
positions are -100 but their logits are computed), and this module adds:

- weights: the tower and the projector in the model's dtype (frozen tower; QLoRA quantizes their Linears as the
  text model's, memory/weights.py image_side_bytes: transformers' bitsandbytes quantizer skips only lm_head);
- full fine-tuning trains the projector (the tower frozen, as LLaVA-1.5's recipe): its gradients and optimizer
  state at the text model's per-parameter rate; LoRA / QLoRA adapt only the language model (LLaVA's
  find_all_linear_names skips the tower and projector) and freeze the projector;
- activations: pixel_values during the forward; with a trained projector its saved tensors (linear_1's input,
  which is a view of the whole tower hidden state it reads, class row included; GELU's input; linear_2's
  input) and masked_scatter's mask; with no grad in the tower nothing of it is saved;
- a moment of its own: the tower's no-grad forward (one layer's transients, the hidden states it keeps) while
  the text embeddings exist.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import anyres
from vramcalc.core.memory import moments as _m
from vramcalc.core.memory.frozen_lm import (  # the frozen-language-model helpers (a leaf: memory/mllama.py reads them)
    FROZEN_LM_NOTE,
    _check_frozen_lm,
    _frozen_lm_text,
    _lm_drop,
    frozen_lm,
)
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.memory.weights import QLORA_IMAGE_NOTE, image_side_bytes
from vramcalc.core.params import lm_only, projector_params, qwen_block_params, vision_tower_params
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec

VISION_METHODS = ("full", "lora", "qlora")
# TrainingSpec.image_size's default (torchvision's 224, a ResNet's): for a vision-language model it stands for the
# model's own size (the option is shared with core/memory/classic.py)
DEFAULT_IMAGE_SIZE = 224
# LoRA / QLoRA with checkpointing on a Qwen-VL model: the frozen tower's backward (its blocks recomputed with
# grad, because enable_input_require_grads hooked the patch embedding), after every gradient of the language model
BWD_QWEN_TOWER = _m._layout(("gradients", "gradients"),
                            ("vision tower kept inputs and one recomputed block (checkpointing)", "activations"),
                            ("vision tower block backward", "temporaries"))
# full fine-tuning on a Qwen-VL model: the trained merger's backward, after the language model's layers
BWD_QWEN_MERGER = _m._layout(("gradients", "gradients"), ("merger saved, tower kept inputs", "activations"),
                             ("merger backward", "temporaries"))
QWEN_NAMES = {"qwen2_vl": "a Qwen2-VL model", "qwen2_5_vl": "a Qwen2.5-VL model"}
_SAVED = ("image features (projector saved, pixel_values)", "activations")



def is_vision(model: ModelSpec) -> bool:
    return model.vision is not None


def image_tokens(v: VisionSpec) -> int:
    """Image tokens per image: one per patch, the class token dropped by the "default" select strategy
    (modeling_llava.py get_image_features `selected_image_feature[:, 1:]`); 576 for 336 px / 14 px patches.
    Gemma 3: Gemma3MultiModalProjector's avg_pool leaves mm_tokens_per_image (256)."""
    if v.kind == "siglip":
        return v.mm_tokens_per_image
    return (v.image_size // v.patch_size) ** 2 + (0 if v.drop_cls else 1)


def wrap_tokens(v: VisionSpec) -> int:
    """Text tokens the processor adds around each image's placeholders. Gemma 3 (models/gemma3/processing_gemma3.py
    Gemma3Processor): each <start_of_image> of the prompt becomes full_image_sequence = "\n\n" <start_of_image>
    256 x <image_soft_token> <end_of_image> "\n\n", so the sequence grows by the image tokens and 4 more ("\n\n"
    is one token of Gemma's vocabulary; the marker the prompt had is counted here, not in --seq-len, so a prompt
    whose --seq-len counted it is one token over: the safe side). LLaVA's processor adds none."""
    return 4 if v.kind == "siglip" else 0


def tower_rows(v: VisionSpec) -> int:
    """The tower's sequence per image: every patch, plus CLIP's class token (SigLIP has none)."""
    return (v.image_size // v.patch_size) ** 2 + (0 if v.kind == "siglip" else 1)


# Qwen2VLImageProcessor's defaults (transformers models/qwen2_vl/image_processing_qwen2_vl.py: size
# shortest_edge 56 x 56 pixels, longest_edge 28 x 28 x 1280), which smart_resize keeps the image's area between;
# the published preprocessor_config.json files of Qwen2-VL and Qwen2.5-VL give min_pixels 3136 and max_pixels
# 12845056 instead (a 3584 x 3584 image), which the processor reads when the repository's processor is loaded.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 12_845_056


def qwen_resized(v: VisionSpec, height: int, width: int, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """The image's size after the processor's smart_resize (image_processing_qwen2_vl.py): each side rounded to a
    multiple of patch x merge (28 px), then scaled, aspect kept, into [min_pixels, max_pixels]. Written with the
    library's own float steps (sqrt, round, floor, ceil), so that its rounding is reproduced to the pixel: a 43 x 43
    image under min_pixels 200,704 goes to 476 x 476 there (43 x beta / 28 = 16.000000000000004, ceil 17), not
    the 448 x 448 exact arithmetic gives."""
    if max(height, width) > 200 * min(height, width):  # smart_resize's own ValueError
        raise SpecError("image_size", f"a {height} x {width} image: the Qwen-VL processor refuses an aspect ratio "
                        "above 200; give a less elongated size")
    f = v.patch_size * v.spatial_merge_size
    h_bar, w_bar = round(height / f) * f, round(width / f) * f
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar


def qwen_grid(v: VisionSpec, height: int, width: int) -> tuple[int, int, int]:
    """image_grid_thw of one image: (temporal, height, width) in patches. Qwen2VLImageProcessor repeats a still
    image temporal_patch_size times, so one image is one temporal patch of patch^2 x temporal_patch_size x 3
    values (pixel_values has one row of 3 x 2 x 14 x 14 = 1176 per patch)."""
    h, w = qwen_resized(v, height, width)
    return 1, h // v.patch_size, w // v.patch_size


def qwen_image_tokens(v: VisionSpec, height: int, width: int) -> int:
    """Image tokens of one image: its patches over the merger's merge x merge blocks (PatchMerger; the processor
    puts as many <|image_pad|> tokens, processing_qwen2_vl.py: grid_thw.prod() // merge_size^2)."""
    t, h, w = qwen_grid(v, height, width)
    return t * h * w // v.spatial_merge_size ** 2


def images_per_sample(training: TrainingSpec) -> int:
    return training.images or 1


def total_tokens(model: ModelSpec, training: TrainingSpec) -> int:
    """Tokens the language model runs on per sample: the text's --seq-len and every image's tokens."""
    v = model.vision
    assert v is not None
    if v.is_qwen:  # dynamic resolution: a square image of --image-size pixels a side, smart_resize'd
        return training.seq_len + images_per_sample(training) * qwen_image_tokens(v, training.image_size,
                                                                                  training.image_size)
    if v.kind == "llava_next":  # anyres: a square image of --image-size pixels a side (memory/anyres.py)
        return training.seq_len + images_per_sample(training) * anyres.image_tokens(v, *anyres.image_shape(training))
    return training.seq_len + images_per_sample(training) * (image_tokens(v) + wrap_tokens(v))


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """UnsupportedCombination / SpecError for a run the image arithmetic does not cover; text models refuse the
    image options."""
    v = model.vision
    if v is not None and v.is_mllama:  # Llama-3.2-Vision: memory/mllama.py's own refusals
        from vramcalc.core.memory import mllama as _mllama

        _mllama.check(model, training)
        return
    if v is None:
        if training.images or training.train_vision or training.image_width:
            raise UnsupportedCombination(f"--images, --image-width and --train-vision size a vision-language "
                                         f"model's images; {model.name} reads text only: drop them")
        return
    if v.kind == "llama4":  # Llama 4 multimodal: memory/llama4v.py's own refusals first
        from vramcalc.core.memory import llama4_tiles

        llama4_tiles.own_check(model, training)
    if training.image_width and v.kind not in ("idefics3", "llava_next", "llama4"):
        raise UnsupportedCombination(f"--image-width sizes Idefics3 / SmolVLM, LLaVA-NeXT and Llama 4 images (tiles "
                                     f"from the aspect ratio); {model.name}'s images are square: drop it")
    if v.is_qwen:
        _check_qwen(model, training)
    elif v.kind == "llava_next":  # any size: the processor picks a pinpoint; LLaVA-NeXT's own refusals
        anyres.check(model, training)
    elif v.kind not in ("idefics3", "llama4") and training.image_size not in (DEFAULT_IMAGE_SIZE, v.image_size):
        # Idefics3 and Llama 4: the processor cuts any size into tiles
        raise SpecError("image_size", f"{model.name}'s CLIP tower takes {v.image_size} px images only (its learned "
                        f"positions are fixed; the processor resizes): drop --image-size or give {v.image_size}")
    if is_clip_lora(model) and training.method in ("lora", "qlora"):
        _check_clip_lora(model, training)
    if frozen_lm(training):
        _check_frozen_lm(model, training)
    elif training.train_vision and training.method != "full" and not (v.kind == "llama4" and
                                                                     training.method == "lora"):
        # (Llama 4: memory/llama4v.py trains the tower's own weights beside the language model's adapters)
        raise UnsupportedCombination(f"--train-vision trains {model.name}'s whole tower, which --method "
                                     f"{training.method} does not (LoRA on the tower is not modelled): use --method "
                                     "full, or drop --train-vision")
    if training.train_vision and training.attention == "eager" and v.kind != "llama4":  # Llama 4: memory/llama4v.py
        raise UnsupportedCombination(f"--train-vision with --attention eager is not modelled for {model.name} (the "
                                     "tower's eager softmax backward is not counted): use --attention sdpa")
    if training.mode != "train":
        raise UnsupportedCombination(f"--mode {training.mode} is not modelled for the vision-language model "
                                     f"{model.name}: estimate a training step (--mode train)")
    if training.method not in VISION_METHODS and not frozen_lm(training):
        raise UnsupportedCombination(f"--method {training.method} is not modelled for the vision-language model "
                                     f"{model.name}: use {', '.join(VISION_METHODS)}")
    if training.objective != "sft" or training.loss != "hf" or training.packing != "none":
        raise UnsupportedCombination(f"{model.name} is a vision-language model: only --objective sft with --loss "
                                     "hf and no --packing is modelled; drop them")
    if (training.tp > 1 or training.pp > 1 or training.sequence_parallel or training.activation_offload
            or training.ac_every > 1 or training.optimizer_in_bwd or training.dora or training.modules_to_save):
        raise UnsupportedCombination(f"{model.name} is a vision-language model: --tp/--pp/--sequence-parallel, "
                                     "activation offload, --ac-every, --optimizer-in-bwd, --dora and "
                                     "--modules-to-save are not modelled for it; drop them")


@lru_cache(maxsize=64)
def _text_model(model: ModelSpec) -> ModelSpec:
    return replace(model, vision=None)


def text_run(model: ModelSpec, training: TrainingSpec) -> tuple[ModelSpec, TrainingSpec]:
    """The language model and its run: the sequence lengthened by the image tokens, the image options gone.

    Gemma 3 under sdpa: the processor's token_type_ids make Gemma3Model.forward (modeling_gemma3.py
    create_masks_for_vision_model) build 4-D bool masks with the image blocks bidirectional (masking_utils
    create_causal_mask: block_sequence_ids turn off the is_causal skip), so every layer runs the memory-efficient
    kernel with a 16-bit copy of the mask and GQA keys/values repeated: what a packed batch costs the text model
    (memory/activations.py masked_sdpa), so its run is counted as one."""
    assert model.vision is not None
    out = replace(training, seq_len=total_tokens(model, training), images=0, image_size=DEFAULT_IMAGE_SIZE,
                  train_vision=False, image_width=0)
    if frozen_lm(training):  # the image tokens' gradient: counted as a trained embedding's (frozen_lm)
        out = replace(out, train_layers=(), train_modules=("embed_tokens",))
    if model.vision.kind == "siglip" and training.attention == "sdpa":
        out = replace(out, packing="packed")
    if model.vision.is_qwen and training.method in ("lora", "qlora"):  # the image side's targets taken out
        out = replace(out, lora_targets=qwen_lora_targets(model, training.lora_targets)[2])
    if is_clip_lora(model) and training.method in ("lora", "qlora"):  # LLaVA: the same (clip_lora_targets)
        out = replace(out, lora_targets=clip_lora_targets(model, training.lora_targets)[2])
    if model.vision.kind == "siglip" and training.method in ("lora", "qlora"):  # memory/siglip_lora.py
        from vramcalc.core.memory.siglip_lora import tower_lora_targets

        out = replace(out, lora_targets=tower_lora_targets(model, training.lora_targets)[2])
    return _text_model(model), out


def used_layers(v: VisionSpec) -> int:
    """Tower layers whose output reaches the projector: vision_feature_layer -2 reads the output of the last layer
    but one (hidden_states[-2]); the last layer still runs, and its graph is dropped with the unused output."""
    return v.num_layers + v.feature_layer + 1 if v.feature_layer < 0 else v.feature_layer


def _tower_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, unreached: bool = False,
                 tiles: int = 1, one_layer: bool = False) -> int:
    """A trained CLIP tower's saved tensors per image (--train-vision; models/clip/modeling_clip.py), times `tiles`
    when the tower runs on several 336 px tiles an image (LLaVA-NeXT's anyres, memory/llava_next.py); `one_layer`:
    one CLIPEncoderLayer's share only (what its backward frees).

    pre_layrnorm saves its input (and fp32 mean and rstd per row). Each CLIPEncoderLayer the projector's input
    depends on: layer_norm1's input and output (q/k/v_proj's shared input), q, k, v, the attention output (sdpa's
    own, and out_proj's contiguous input), layer_norm2's input and output (fc1's input), and in the MLP quick_gelu
    (x * sigmoid(1.702 x): its input and the sigmoid) and fc2's input, intermediate wide; sdpa adds its fp32
    logsumexp per head and row, eager its fp32 softmax and the 16-bit probabilities instead of the output. With
    checkpointing each of those layers keeps only its input (CLIPEncoderLayer is a GradientCheckpointingLayer).
    """
    h = v.hidden_size
    n = used_layers(v)
    pre = rows * h * a_bytes + 2 * 4 * rows
    if unreached:  # the layers above the feature layer: their graph lives until the forward returns
        n, pre = v.num_layers - n, 0
    if one_layer:
        n, pre = 1, 0
    if training.grad_checkpointing:
        return tiles * (pre + n * rows * h * a_bytes)
    return tiles * (pre + n * sum(_clip_layer_sections(v, training, rows, a_bytes).values()))


def _clip_layer_sections(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int) -> dict[str, int]:
    """One CLIPEncoderLayer's saved tensors when its input needs a gradient, in the order they are saved
    (models/clip/modeling_clip.py CLIPEncoderLayer, CLIPAttention, CLIPMLP): layer_norm1's input and fp32 mean and
    rstd per row ("ln1"); q/k/v_proj's shared input, layer_norm1's output ("qkv"), saved only by trained (or
    adapted) Linears, a frozen Linear's input gradient needing its weight only; the attention ("attn": sdpa's q, k,
    v, output and fp32 logsumexp per head and row; eager's q, k, v, its fp32 softmax and the 16-bit probabilities
    per head); out_proj's input, the attention output made contiguous ("out_proj"); layer_norm2's input and stats
    ("ln2"); fc1's input, layer_norm2's output ("fc1"); quick_gelu (x * sigmoid(1.702 x)) its input and the sigmoid,
    intermediate wide ("gelu"); fc2's input, quick_gelu's output ("fc2")."""
    h, i, heads = v.hidden_size, v.intermediate_size, v.num_attention_heads
    if training.attention == "eager":
        attention = 3 * rows * h * a_bytes + heads * rows * rows * (4 + a_bytes)
    else:
        attention = 4 * rows * h * a_bytes + heads * rows * 4
    width = rows * h * a_bytes
    return {"ln1": width + 2 * 4 * rows, "qkv": width, "attn": attention, "out_proj": width,
            "ln2": width + 2 * 4 * rows, "fc1": width, "gelu": 2 * rows * i * a_bytes, "fc2": rows * i * a_bytes}


def unreached_params(v: VisionSpec) -> int:
    """A trained CLIP tower's parameters that get no gradient: the layers above the feature layer (q/k/v/out_proj
    with biases, two LayerNorms, fc1 and fc2 with biases) and post_layernorm, whose outputs never reach the loss
    (modeling_clip.py CLIPEncoderLayer, CLIPVisionTransformer), so AdamW keeps no state for them either."""
    vh, vi = v.hidden_size, v.intermediate_size
    return (v.num_layers - used_layers(v)) * (4 * (vh * vh + vh) + 4 * vh + 2 * vh * vi + vi + vh) + 2 * vh


# LoRA on LLaVA-1.5 / LLaVA-NeXT (issue 15): peft matches target names over the whole model (tuners_utils.py
# check_target_module_exists: the module's name or a dotted suffix of it; all-linear, _maybe_include_all_linear_layers:
# every nn.Linear but the output embedding), so q_proj / k_proj / v_proj adapt the CLIP tower's self_attn Linears
# as well as the language model's (checked with peft 0.21 on the meta model: tests/test_clip_lora.py), out_proj,
# fc1 and fc2 name the tower's only, linear_1 and linear_2 LlavaMultiModalProjector's; the patch Conv2d is no
# Linear (all-linear skips it).
CLIP_TOWER_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
CLIP_PROJECTOR_LINEARS = ("linear_1", "linear_2")
_CLIP_TOWER_ONLY = {"out_proj": "out_proj", "self_attn.out_proj": "out_proj", "fc1": "fc1", "mlp.fc1": "fc1",
                    "fc2": "fc2", "mlp.fc2": "fc2"}
_CLIP_PROJECTOR = {"linear_1": "linear_1", "multi_modal_projector.linear_1": "linear_1", "linear_2": "linear_2",
                   "multi_modal_projector.linear_2": "linear_2"}
_CLIP_SHARED = ("q_proj", "k_proj", "v_proj")  # CLIPAttention's and LlamaAttention's / MistralAttention's names


def is_clip_lora(model: ModelSpec) -> bool:
    """A LLaVA-1.5 or LLaVA-NeXT model: its CLIP tower and projector take LoRA targets (clip_lora_targets)."""
    return model.vision is not None and model.vision.kind in ("clip", "llava_next")


def clip_lora_targets(model: ModelSpec, targets: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                           tuple[str, ...]]:
    """What peft's target matching adapts on a LLaVA-1.5 / LLaVA-NeXT model: (the tower layers' Linears, the
    projector's, the targets left for the language model). `auto` is the language model's default (q_proj, v_proj:
    params.py default_targets), which names the tower's q_proj and v_proj too."""
    from vramcalc.core.params import default_targets

    if lm_only(targets):  # the language model's only (params.py LM_ONLY: LLaMA-Factory's frozen tower / projector)
        return (), (), tuple(targets)
    tower: set[str] = set()
    projector: set[str] = set()
    text: list[str] = []
    for raw in targets:
        t = raw.strip().lower()
        if t == "all-linear":
            tower |= set(CLIP_TOWER_LINEARS)
            projector |= set(CLIP_PROJECTOR_LINEARS)
            text.append(raw.strip())
        elif t in _CLIP_TOWER_ONLY:
            tower.add(_CLIP_TOWER_ONLY[t])
        elif t in _CLIP_PROJECTOR:
            projector.add(_CLIP_PROJECTOR[t])
        else:
            names = default_targets(_text_model(model)) if t == "auto" else (t,)
            tower |= {n for n in names if n in _CLIP_SHARED}
            text.append(raw.strip())
    return (tuple(n for n in CLIP_TOWER_LINEARS if n in tower),
            tuple(n for n in CLIP_PROJECTOR_LINEARS if n in projector), tuple(text))


def _clip_lora_in_out(v: VisionSpec, module: str, text_width: int) -> tuple[int, int]:
    """(in, out) features of a CLIP layer's or LlavaMultiModalProjector's Linear (linear_1: tower width -> text
    width, linear_2: text -> text)."""
    h, i = v.hidden_size, v.intermediate_size
    return {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "out_proj": (h, h), "fc1": (h, i), "fc2": (i, h),
            "linear_1": (h, text_width), "linear_2": (text_width, text_width)}[module]


def clip_image_adapters(model: ModelSpec, training: TrainingSpec) -> tuple[int, int, int]:
    """LoRA / QLoRA parameters on a LLaVA model's image side, rank x (in + out) each (lora_A and lora_B, no
    bias): (all of them, those that get a gradient, one tower layer's). Every tower layer is adapted, but the
    layers above vision_feature_layer feed no loss (used_layers), so their adapters get no gradient and AdamW no
    state."""
    v = model.vision
    assert v is not None and model.hidden_size is not None
    if training.method not in ("lora", "qlora"):
        return 0, 0, 0
    tower, projector, _ = clip_lora_targets(model, training.lora_targets)
    r, th = training.lora_rank, model.hidden_size
    layer = sum(r * sum(_clip_lora_in_out(v, m, th)) for m in tower)
    proj = sum(r * sum(_clip_lora_in_out(v, m, th)) for m in projector)
    return v.num_layers * layer + proj, used_layers(v) * layer + proj, layer


def clip_lora_forward_peak(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int,
                           modules: tuple[str, ...], text_width: int, recomputed: bool = False) -> int:
    """An adapted CLIP Linear's forward at its peak, the largest over `modules` (peft tuners/lora/layer.py
    Linear.forward, measured with the tracer at `result + lora_B(...) * scaling`): the input's copy in the
    adapter dtype (when it differs), the base output (compute dtype), lora_B's scaled output and the sum (adapter
    dtype), beside the layer's live tensors: its input and layer_norm1's output (q/k/v_proj, and the
    projections made before), its input and the attention output (out_proj), its input, the post-attention
    residual and layer_norm2's output (fc1), or those and quick_gelu's output (fc2). `recomputed`: in a
    checkpointed layer's recomputation, the largest over `modules` of what the layer has saved before the adapted
    Linear (clip_lora_layer_saved `upto`; its input is the kept one) and the live tensors it has not saved:
    layer_norm1's output and the projections made before (q/k/v_proj), layer_norm2's output (fc1), quick_gelu's
    output (fc2) (measured with the tracer: a recomputed fc1's adapter was the step's peak)."""
    h, i = v.hidden_size, v.intermediate_size
    ad = dtype_bytes(training.adapter_dtype)
    context = {"q_proj": 2 * h, "k_proj": 3 * h, "v_proj": 4 * h, "out_proj": 2 * h, "fc1": 3 * h,
               "fc2": 3 * h + i}
    if recomputed:
        context = {"q_proj": h, "k_proj": 2 * h, "v_proj": 3 * h, "out_proj": 0, "fc1": h, "fc2": i}
    peak = 0
    for mod in modules:
        width, out = _clip_lora_in_out(v, mod, text_width)
        before = clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width, upto=mod) \
            - rows * h * a_bytes if recomputed else 0
        peak = max(peak, before + rows * (context[mod] * a_bytes + (ad * width if ad != a_bytes else 0)
                                          + out * (a_bytes + 2 * ad)))
    return peak


def clip_lora_backward_peak(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int,
                            modules: tuple[str, ...]) -> int:
    """A CLIP layer's backward at its peak beyond its saved set: quick_gelu's backward mul (the gradient flowing
    in, width, and three intermediate-wide ones; memory/llava_next.py), by which an adapted fc2's backward has
    freed what its adapter saved (_clip_lora_saved), or that fc2's backward first (measured with the tracer at
    lora_A's input-gradient mm: that gradient, intermediate wide in the adapter dtype, beside the incoming
    gradient and its copy through the adapter, width)."""
    h, i = v.hidden_size, v.intermediate_size
    at_mul = rows * (h + 3 * i) * a_bytes
    if "fc2" in modules:
        fc2_saved = _clip_lora_saved(("fc2",), v, training, rows, 0, a_bytes)["fc2"]
        fresh = dtype_bytes(training.adapter_dtype) != a_bytes or training.lora_dropout > 0
        fc2_saved += 0 if fresh else rows * i * a_bytes
        return max(at_mul - fc2_saved, rows * (i * dtype_bytes(training.adapter_dtype) + 2 * h * a_bytes))
    return at_mul


def _clip_lora_saved(modules: tuple[str, ...], v: VisionSpec, training: TrainingSpec, rows: int, text_width: int,
                     c: int) -> dict[str, int]:
    """What peft's LoRA layers save per adapted Linear, by the section of _clip_layer_sections their input is
    (tuners/lora/layer.py Linear.forward: `result + lora_B(lora_A(dropout(x))) * scaling`, x cast to the adapter
    dtype first by _cast_input_dtype): lora_B saves lora_A's output (rows x rank, adapter dtype); lora_A its input:
    a fresh copy per adapter when the adapter dtype is not the compute dtype or dropout runs (+ its 1-byte mask),
    else the module's own input, once for q/k/v_proj's shared one (the section's own bytes, counted by the
    caller)."""
    ad, rank = dtype_bytes(training.adapter_dtype), training.lora_rank
    fresh = ad != c or training.lora_dropout > 0
    out: dict[str, int] = {}
    for mod in modules:
        width = _clip_lora_in_out(v, mod, text_width)[0]
        key = "qkv" if mod in _CLIP_SHARED else mod
        extra = rows * ad * rank
        if fresh:
            extra += rows * (ad * width + (width if training.lora_dropout > 0 else 0))
        out[key] = out.get(key, 0) + extra
    return out


def clip_lora_layer_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, modules: tuple[str, ...],
                          text_width: int, bottom: bool = False, upto: str | None = None) -> int:
    """A frozen CLIPEncoderLayer's saved tensors with LoRA on `modules` (its input needing a gradient): the
    sections of _clip_layer_sections, a frozen Linear's input left out, and the adapters' (_clip_lora_saved).
    `bottom`: the tower's first layer without checkpointing, whose input (the embeddings) needs no gradient, so
    nothing before its first adapted Linear is saved: layer_norm1's input always, the attention without a q/k/v
    adapter, layer_norm2's input without one up to out_proj, quick_gelu's without one up to fc1. `upto`: what the
    layer has saved when that adapted Linear runs (the sections before its input's)."""
    sections = _clip_layer_sections(v, training, rows, a_bytes)
    lora = _clip_lora_saved(modules, v, training, rows, text_width, a_bytes)
    fresh = dtype_bytes(training.adapter_dtype) != a_bytes or training.lora_dropout > 0
    total = 0
    graph = not bottom
    for name, size in sections.items():
        if upto is not None and name == ("qkv" if upto in _CLIP_SHARED else upto):
            break
        if name in ("qkv", "out_proj", "fc1", "fc2"):  # a Linear's input: saved by its adapter only
            if name in lora:
                graph = True
                # (sdpa's flash output is a transposed view, so out_proj's input is the output sdpa saved:
                # memory/llava_next.py; eager's transpose makes a copy)
                shared = name == "out_proj" and training.attention != "eager"
                total += lora[name] + (0 if fresh or shared else size)
        elif graph:
            total += size
    return total


def clip_lora_phrase(lora_tower: tuple[str, ...], lora_projector: tuple[str, ...], adapters: int) -> str:
    """The notes' words for what LoRA adapts on a LLaVA model's image side."""
    if not adapters:
        return " only (projector frozen; no target reaches the tower or the projector)"
    where = ([f"every tower layer's {', '.join(lora_tower)}"] if lora_tower else []) \
        + ([f"the projector's {' and '.join(lora_projector)}"] if lora_projector else [])
    return (f" and, as peft's target matching finds them (q_proj / v_proj and all-linear reach the tower), "
            f"{' and '.join(where)} ({adapters:,} adapter parameters, the frozen weights kept; the layers above "
            "vision_feature_layer get no gradient)")


def clip_lora_forward_moment(v: VisionSpec, training: TrainingSpec, rows: int, units: int, a_bytes: int,
                             text_width: int, modules: tuple[str, ...], frozen_moment: int, layer_t: int) -> int:
    """The tower's forward moment with a graph in it (LoRA on `modules`, or a frozen tower hooked by checkpointing),
    over `units` images (LLaVA-NeXT: tiles) of `rows` rows: the frozen tower's moment (`frozen_moment`, `layer_t`
    its layer's transients) with the saved sets of the layers run so far piled up (with checkpointing their kept
    inputs, the hooked leaves too), all but the last layer's, beside its transients or an adapted Linear's
    (clip_lora_forward_peak)."""
    gc = training.grad_checkpointing
    h = v.hidden_size
    if gc:
        piled = units * (v.num_layers + 1) * rows * h * a_bytes
    else:
        layer = clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width)
        free = layer - clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width, bottom=True)
        piled = units * ((v.num_layers - 1) * layer - free)
    moment = frozen_moment + piled
    moment = max(moment, moment - layer_t + units * clip_lora_forward_peak(v, training, rows, a_bytes, modules,
                                                                           text_width))
    if training.attention == "eager":
        # the eager attention with a graph: q, k, v and the output's contiguous copy beside the scores (measured
        # with the tracer: four width-wide tensors over the frozen layer's moment)
        moment += units * 4 * rows * h * a_bytes
    return moment


def clip_lora_backward_moment(v: VisionSpec, training: TrainingSpec, rows: int, units: int, a_bytes: int,
                              text_width: int, modules: tuple[str, ...], tower_kept: int, tower_saved: int,
                              grads: tuple[int, int]) -> tuple[int, int, int]:
    """The tower's backward with LoRA on `modules` (or a frozen tower hooked by checkpointing), as
    (gradients, kept / saved, temporaries) at its worst point: it runs after the language model's and the
    projector's (its nodes are the oldest but the text embedding's), one layer at a time from the feature layer
    down (clip_lora_backward_peak). At its top the saved sets are whole (`tower_saved` without checkpointing;
    with it every layer's kept input, `tower_kept`, and the top layer recomputed with its adapters, layer_norm1's
    input being the kept one) and no tower adapter has its gradient yet (`grads[0]`); at its bottom every
    gradient exists (`grads[1]`) beside the bottom layer's set. With checkpointing the top layer's recomputation
    at an adapted Linear's forward, and under eager its softmax backward, can be the worst."""
    gc, h = training.grad_checkpointing, v.hidden_size
    layer = clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width)
    free = layer - clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width, bottom=True)
    recomputed = units * (layer - rows * h * a_bytes) if gc else 0
    transient = units * clip_lora_backward_peak(v, training, rows, a_bytes, modules)
    top = (grads[0], tower_kept + tower_saved + recomputed, transient)
    above = units * (used_layers(v) - 1) * rows * h * a_bytes if gc else tower_saved - units * (layer - free)
    bottom = (grads[1], tower_kept + tower_saved + recomputed - above, transient)
    worst = max(top, bottom, key=sum)
    if gc:  # (beside the gradient flowing into the layer, width)
        worst = max(worst, (grads[0], tower_kept, units * (clip_lora_forward_peak(
            v, training, rows, a_bytes, modules, text_width, recomputed=True) + rows * h * a_bytes)), key=sum)
        if training.attention == "eager":
            # the recomputed layer's eager softmax backward (clip eager_attention_forward; measured with the tracer
            # at _softmax_backward_data): its saved set up to the attention, the 16-bit probabilities freed by
            # matmul's backward, beside the probabilities' fp32 gradient and the fp32 result per head, and two
            # width-wide gradients (as the Qwen-VL eager backward below)
            heads = v.num_attention_heads
            attn = clip_lora_layer_saved(v, training, rows, a_bytes, modules, text_width, upto="out_proj") \
                - rows * h * a_bytes - heads * rows * rows * a_bytes
            worst = max(worst, (grads[0], tower_kept, units * (attn + heads * rows * rows * 8
                                                               + 2 * rows * h * a_bytes)), key=sum)
    return worst


def loss_held_hidden(model: ModelSpec, training: TrainingSpec) -> int:
    """The language model's last hidden state (the final norm's 16-bit output, tokens x text width) at the loss of a
    LoRA / QLoRA run: the model output LlavaForConditionalGeneration.forward / LlavaNextForConditionalGeneration.forward
    keeps (`outputs = self.model(...)`, `hidden_states = outputs[0]`) references it while lm_head's logits and the loss
    are made, and nothing saves it when neither lm_head nor the final norm trains (measured with the tracer's live
    tensors at nll_loss_forward, --grid vlm3 LLaVA-NeXT Mistral 2 text layers LoRA b2 s128: one (2, 2480, 4096) bf16
    aten.mul output, the forward phase -0.71 % without it). Full fine-tuning saves it as lm_head's input."""
    if training.method not in ("lora", "qlora") or "lm_head" in training.lora_targets or model.hidden_size is None:
        return 0
    return training.batch_size * total_tokens(model, training) * model.hidden_size \
        * dtype_bytes(recipe_of(training).compute)


def lm_input_grad_saved(text_model: ModelSpec, text_training: TrainingSpec) -> int:
    """What the language model's bottom layer saves beyond the text estimate when its input needs a gradient that
    the text run's does not: LoRA without checkpointing counts layer 0 as the frozen embedding's (nothing saved
    below its first adapter: memory/__init__.py lora_bottom, activations.py input_grad), but image features with
    a graph behind them (adapters in the tower or the projector) make masked_scatter's inputs_embeds need one, so
    layer 0 saves as every layer does (measured with the tracer: its RMSNorm's fp32 copy of the input and the
    input itself, a LoRA toy)."""
    from vramcalc.core.memory.activations import layer_activations

    if text_training.grad_checkpointing or text_training.method not in ("lora", "qlora"):
        return 0
    recipe = recipe_of(text_training)
    top = layer_activations(text_model, text_training, recipe, trainable_weights=False)
    bottom = layer_activations(text_model, text_training, recipe, trainable_weights=False, input_grad=False)
    tokens = text_training.batch_size * text_training.seq_len
    per_token = sum(x.per_token for x in top.terms) - sum(x.per_token for x in bottom.terms)
    per_token_seq = sum(x.per_token_seq for x in top.terms) - sum(x.per_token_seq for x in bottom.terms)
    return tokens * per_token + tokens * text_training.seq_len * per_token_seq


def _scaled(value: int, trainable: int, extra: int) -> int:
    """`value` (bytes proportional to the trainable parameters) grown by `extra` more trainable parameters."""
    return value * (trainable + extra) // trainable if trainable else value


def _grown(layout: _m.Layout, values: tuple[int, ...], trainable: int, extra: int) -> tuple[int, ...]:
    """A text-model moment's values with its gradients grown by `extra` trainable parameters (_scaled)."""
    return tuple(_scaled(x, trainable, extra) if comp == "gradients" else x
                 for (_, comp), x in zip(layout, values, strict=True))


def _check_clip_lora(model: ModelSpec, training: TrainingSpec) -> None:
    """LoRA targets on a LLaVA-1.5 / LLaVA-NeXT model the arithmetic does not cover, refused in one line."""
    tower, projector, text = clip_lora_targets(model, training.lora_targets)
    if not text:
        raise UnsupportedCombination(f"--lora-targets {','.join(training.lora_targets)} adapts only the image "
                                     f"side of {model.name}; a run without adapters in the language model is not "
                                     "modelled: add a language-model target (e.g. q_proj,v_proj)")
    if (tower or projector) and (recipe_of(training).autocast or recipe_of(training).autocast16):
        # (traced: a LoRA toy under amp-bf16 with q_proj, v_proj in the tower took 22 % more than this arithmetic's
        # bf16 sets: fp32 weights cast per op, fp32 residual stream)
        raise UnsupportedCombination(f"LoRA on {model.name}'s CLIP tower or projector under autocast (--precision "
                                     f"{training.precision}) is not modelled: use --precision bf16, or keep the "
                                     "targets in the language model (o_proj, gate_proj, up_proj, down_proj name "
                                     "its modules only; q_proj, v_proj and all-linear reach the tower)")


def _check_qwen(model: ModelSpec, training: TrainingSpec) -> None:
    """What the Qwen2-VL / Qwen2.5-VL arithmetic (_qwen_estimate) does not cover, refused in one line."""
    v = model.vision
    assert v is not None
    name = QWEN_NAMES[v.kind]
    qwen_resized(v, training.image_size, training.image_size)  # smart_resize's aspect-ratio refusal
    if training.method in ("lora", "qlora"):
        tower, merger, text = qwen_lora_targets(model, training.lora_targets)
        if not text:
            raise UnsupportedCombination(f"--lora-targets {','.join(training.lora_targets)} adapts only the image "
                                         f"side of {model.name}; a run without adapters in the language model is "
                                         "not modelled: add a language-model target (e.g. q_proj,v_proj)")
        # (autocast16: --precision autocast-* over a bf16 tower, traced with language-model targets only)
        if (tower or merger) and (recipe_of(training).autocast or recipe_of(training).autocast16):
            raise UnsupportedCombination(f"LoRA on {name}'s vision tower or merger under autocast (--precision "
                                         f"{training.precision}) is not modelled: use --precision bf16, or keep "
                                         "the targets in the language model (e.g. q_proj,v_proj)")
        if (tower or merger) and training.attention == "eager":
            raise UnsupportedCombination(f"LoRA on {name}'s vision tower or merger with --attention eager is not "
                                         "modelled (the tower's eager softmax saved for backward is not counted): "
                                         "use --attention sdpa, or keep the targets in the language model")


# The Linears of a Qwen-VL tower block and of its merger, by the names peft matches (tuners_utils.py
# check_target_module_exists: a target is the module's name or its dotted suffix): Qwen2VLVisionBlock's
# VisionAttention qkv / proj and VisionMlp fc1 / fc2 (modeling_qwen2_vl.py), Qwen2_5_VLVisionBlock's qkv / proj and
# Qwen2_5_VLMLP gate_proj / up_proj / down_proj, biased (modeling_qwen2_5_vl.py); PatchMerger.mlp = Sequential(Linear,
# GELU, Linear): mlp.0 and mlp.2. peft's all-linear (tuners_utils.py _maybe_include_all_linear_layers) takes every
# nn.Linear but the output embedding (lm_head): the tower's and the merger's too.
QWEN_TOWER_LINEARS = {"qwen2_vl": ("qkv", "proj", "fc1", "fc2"),
                      "qwen2_5_vl": ("qkv", "proj", "gate_proj", "up_proj", "down_proj")}
QWEN_MERGER_LINEARS = ("mlp.0", "mlp.2")
_QWEN_TOWER_ALIASES = {"qkv": "qkv", "attn.qkv": "qkv", "attn.proj": "proj", "fc1": "fc1", "mlp.fc1": "fc1",
                       "fc2": "fc2", "mlp.fc2": "fc2"}
_QWEN_MERGER_ALIASES = {"mlp.0": "mlp.0", "merger.mlp.0": "mlp.0", "mlp.2": "mlp.2", "merger.mlp.2": "mlp.2"}


def qwen_lora_targets(model: ModelSpec, targets: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                           tuple[str, ...]]:
    """What peft's target matching adapts on a Qwen-VL model: (tower block Linears, merger Linears, the targets
    left for the language model). all-linear takes every tower and merger Linear; gate_proj / up_proj /
    down_proj name Qwen2.5-VL's tower MLP as well as the language model's; qkv, attn.proj, fc1, fc2, mlp.0 and
    mlp.2 are the image side's only. A bare `proj` also matches patch_embed.proj, a Conv3d: refused."""
    v = model.vision
    assert v is not None
    if lm_only(targets):  # the language model's only (params.py LM_ONLY)
        return (), (), tuple(targets)
    names = QWEN_TOWER_LINEARS[v.kind]
    tower: set[str] = set()
    merger: set[str] = set()
    text: list[str] = []
    for raw in targets:
        t = raw.strip().lower()
        if t == "all-linear":
            tower |= set(names)
            merger |= set(QWEN_MERGER_LINEARS)
            text.append(raw.strip())
        elif t == "proj":
            raise UnsupportedCombination(f"LoRA target 'proj' on {model.name} also matches the tower's "
                                         "patch_embed.proj (a Conv3d; LoRA on it is not modelled): write attn.proj "
                                         "for the tower attention's output projection")
        elif _QWEN_TOWER_ALIASES.get(t) in names:
            tower.add(_QWEN_TOWER_ALIASES[t])
        elif t in _QWEN_MERGER_ALIASES:
            merger.add(_QWEN_MERGER_ALIASES[t])
        else:
            if t in names:  # Qwen2.5-VL's gate_proj / up_proj / down_proj: the tower MLP's and the text model's
                tower.add(t)
            text.append(raw.strip())
    return (tuple(n for n in names if n in tower), tuple(n for n in QWEN_MERGER_LINEARS if n in merger),
            tuple(text))


def qwen_rows(model: ModelSpec, training: TrainingSpec) -> int:
    """The tower's rows for the whole batch: every image's patches (image_grid_thw t x h x w)."""
    v = model.vision
    assert v is not None
    t, h, w = qwen_grid(v, training.image_size, training.image_size)
    return images_per_sample(training) * training.batch_size * t * h * w


def _qwen_block_saved(v: VisionSpec, rows: int, a_bytes: int, trained: bool) -> int:
    """One Qwen-VL tower block's saved tensors for `rows` patches, sdpa (modeling_qwen2_vl.py Qwen2VLVisionBlock,
    modeling_qwen2_5_vl.py Qwen2_5_VLVisionBlock). Norms: LayerNorm (Qwen2-VL) saves its input and fp32 mean and
    rstd per row; Qwen2_5_VLRMSNorm its fp32 copy (pow and mul) and the fp32 rsqrt per row, and with a trained weight
    the 16-bit normalised input the weight multiplies. VisionAttention: qkv's output (v is a view of it, kept whole
    by sdpa), q and k back in 16 bits after apply_rotary_pos_emb_vision's fp32 steps (the fp32 products save only
    the shared cos / sin), sdpa's output and fp32 logsumexp per head and row (the split per cu_seqlens segment is
    views; the per-segment outputs are concatenated). The MLP: quick_gelu (x * sigmoid(1.702 x)) saves fc1's
    output and the sigmoid; SwiGLU saves gate's output, its silu and up's output. A trained block's Linears also
    save their inputs: qkv's (norm1's output), proj's (the concatenated attention output), fc1's / gate's and up's
    (norm2's output) and fc2's / down's (the MLP's product, intermediate wide). LayerNorm's input of norm1 is the
    block's input, which a frozen (recomputed) block's checkpoint keeps: not counted here when frozen."""
    d, i = v.hidden_size, v.intermediate_size
    qwen25 = v.kind == "qwen2_5_vl"
    if qwen25:
        norms = 2 * (rows * d * 4 + 4 * rows + (rows * d * a_bytes if trained else 0))
    else:
        norms = (2 if trained else 1) * rows * d * a_bytes + 2 * 2 * 4 * rows
    attention = 6 * rows * d * a_bytes + v.num_attention_heads * rows * 4
    mlp = (3 if qwen25 else 2) * rows * i * a_bytes
    if trained:  # the Linears' inputs: qkv, proj, fc1 / gate+up (one shared input), fc2 / down
        attention += 2 * rows * d * a_bytes
        mlp += rows * d * a_bytes + rows * i * a_bytes
    return norms + attention + mlp


def qwen_segments(v: VisionSpec, training: TrainingSpec, windowed: bool) -> list[int]:
    """The cu_seqlens segments, in patches, of one tower block over the whole batch: one per image in a block that
    attends fully (every Qwen2-VL block; Qwen2.5-VL's fullatt_block_indexes), else get_vision_window_index's
    windows (vision_utils.py): the merged grid cut into windows of window_size / merge / patch merged tokens a side
    from the top left, the last row and column of windows partial (padded; the empty ones dropped by
    unique_consecutive), each merged token merge^2 patches."""
    t, h, w = qwen_grid(v, training.image_size, training.image_size)
    n_img = images_per_sample(training) * training.batch_size
    if not windowed:
        return [h * w] * (t * n_img)
    side, m = v.window_size // v.spatial_merge_size // v.patch_size, v.spatial_merge_size
    gh, gw = h // m, w // m
    tiles = [min(side, gh - r) * min(side, gw - c) * m * m for r in range(0, gh, side) for c in range(0, gw, side)]
    return tiles * (t * n_img)


def _qwen_eager_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int) -> int:
    """What eager attention saves in a tower block run with grad, instead of sdpa's output and fp32 logsumexp
    (modeling_qwen2_vl.py eager_attention_forward, per cu_seqlens segment: softmax(dtype=float32) saves its fp32
    output, matmul(probabilities, v) the 16-bit probabilities; q and k are the rotated ones sdpa saves too): the
    larger over the blocks (Qwen2.5-VL: a block that attends fully, if any, else a windowed one)."""
    heads = v.num_attention_heads
    windowed = v.kind == "qwen2_5_vl" and not v.fullatt_block_indexes
    scores = heads * (4 + a_bytes) * sum(n * n for n in qwen_segments(v, training, windowed))
    return scores - rows * v.hidden_size * a_bytes - heads * rows * 4


def _qwen_lora_in_out(v: VisionSpec, module: str, text_width: int) -> tuple[int, int]:
    """(in, out) features of a tower or merger Linear peft adapts (QWEN_TOWER_LINEARS, QWEN_MERGER_LINEARS): the
    merger's mlp.0 and mlp.2 read the 2 x 2 merged patches (width x merge^2, PatchMerger.hidden_size)."""
    d, i, merged = v.hidden_size, v.intermediate_size, v.hidden_size * v.spatial_merge_size ** 2
    return {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, i), "fc2": (i, d), "gate_proj": (d, i),
            "up_proj": (d, i), "down_proj": (i, d), "mlp.0": (merged, merged), "mlp.2": (merged, text_width)}[module]


def _qwen_lora_saved(modules: tuple[str, ...], v: VisionSpec, training: TrainingSpec, n_rows: int, text_width: int,
                     c: int) -> int:
    """What peft's LoRA layers on the image side save for `n_rows` rows of their input (tuners/lora/layer.py
    Linear.forward: `result + lora_B(lora_A(dropout(x))) * scaling`, x first cast to the adapter dtype by
    _cast_input_dtype): lora_A saves its input, a fresh copy when the adapter dtype is not the compute dtype or
    dropout runs (+ its 1-byte mask), else the module's own input, which the frozen base Linear does not save
    (Qwen2.5-VL's gate_proj and up_proj share one); lora_B saves lora_A's output (rows x rank). The frozen base
    Linear saves nothing for its input's gradient (derivatives.yaml: mm needs the weight only)."""
    ad, rank = dtype_bytes(training.adapter_dtype), training.lora_rank
    fresh = ad != c or training.lora_dropout > 0
    total, shared = 0, False
    for mod in modules:
        width = _qwen_lora_in_out(v, mod, text_width)[0]
        total += n_rows * ad * rank
        if fresh:
            total += n_rows * (ad * width + (width if training.lora_dropout > 0 else 0))
        elif not (shared and mod in ("gate_proj", "up_proj")):
            total += n_rows * c * width
            shared = shared or mod in ("gate_proj", "up_proj")
    return total


def _qwen_lora_params(v: VisionSpec, modules: tuple[str, ...], rank: int, text_width: int) -> int:
    """LoRA parameters of the given image-side Linears: rank x (in + out) each (lora_A and lora_B, no bias)."""
    return sum(rank * sum(_qwen_lora_in_out(v, mod, text_width)) for mod in modules)


_QWEN_LINEAR_ORDER = ("qkv", "proj", "fc1", "gate_proj", "up_proj", "fc2", "down_proj")


def _qwen_saved_before(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, modules: tuple[str, ...],
                       upto: str, text_width: int) -> int:
    """LoRA on the tower without checkpointing: what the running block has saved when its adapted Linear `upto`
    runs (the sections of _qwen_block_saved before it, and the adapters' saved inputs before it), beyond the live
    tensors the forward moment counts as its context (the block input, the hidden state after attention: Qwen2-VL's
    LayerNorms save those, only their fp32 statistics are added here)."""
    d, i = v.hidden_size, v.intermediate_size
    qwen25 = v.kind == "qwen2_5_vl"
    norm = rows * d * 4 + 4 * rows if qwen25 else 2 * 4 * rows
    attention = 6 * rows * d * a_bytes + v.num_attention_heads * rows * 4
    act = (3 if qwen25 else 2) * rows * i * a_bytes
    sections = {"qkv": norm, "proj": norm + attention, "fc1": 2 * norm + attention, "gate_proj": 2 * norm + attention,
                "up_proj": 2 * norm + attention + rows * i * a_bytes, "fc2": 2 * norm + attention + act,
                "down_proj": 2 * norm + attention + act}[upto]
    earlier = tuple(m for m in modules if _QWEN_LINEAR_ORDER.index(m) < _QWEN_LINEAR_ORDER.index(upto))
    return sections + _qwen_lora_saved(earlier, v, training, rows, text_width, a_bytes)


def qwen_image_adapters(model: ModelSpec, training: TrainingSpec) -> int:
    """LoRA / QLoRA parameters on a Qwen-VL model's image side: every tower block's adapted Linears and the merger's
    (qwen_lora_targets; 0 for other methods)."""
    v = model.vision
    assert v is not None and model.hidden_size is not None
    if training.method not in ("lora", "qlora"):
        return 0
    tower, merger, _ = qwen_lora_targets(model, training.lora_targets)
    return (_qwen_lora_params(v, tower, training.lora_rank, model.hidden_size) * v.num_layers
            + _qwen_lora_params(v, merger, training.lora_rank, model.hidden_size))


def _qwen_block0_free(v: VisionSpec, rows: int, a_bytes: int, modules: tuple[str, ...]) -> int:
    """Without checkpointing the patch embeddings need no gradient (no enable_input_require_grads hook), so the
    bottom block saves nothing before its first adapted Linear (no input of an op there needs a gradient): the
    sections of _qwen_block_saved (plus Qwen2-VL norm1's input) below it are left out."""
    d, i = v.hidden_size, v.intermediate_size
    qwen25 = v.kind == "qwen2_5_vl"
    norm = rows * d * 4 + 4 * rows if qwen25 else rows * d * a_bytes + 2 * 4 * rows
    attention = 6 * rows * d * a_bytes + v.num_attention_heads * rows * 4
    act = (3 if qwen25 else 2) * rows * i * a_bytes
    free = norm  # norm1's input: the patch embeddings (block 0) need no gradient
    for names, size in ((("qkv",), attention), (("proj",), norm), (("fc1", "gate_proj", "up_proj"), act)):
        if any(m in modules for m in names):
            break
        free += size
    return free


def _qwen_estimate(model: ModelSpec, training: TrainingSpec,
                   text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """Qwen2-VL / Qwen2.5-VL (transformers models/qwen2_vl/modeling_qwen2_vl.py Qwen2VLModel.forward,
    models/qwen2_5_vl/modeling_qwen2_5_vl.py): the text model's Breakdown on text + image tokens, with the
    image side's terms added.

    get_image_features runs the tower on pixel_values (one row of 3 x 2 x 14 x 14 values per patch, every image
    of the batch packed into one sequence of `rows` patches; attention per image through cu_seqlens, Qwen2.5-VL
    per 112 px window in most blocks); the merger joins 2 x 2 patches into one token of the text width; the
    features are concatenated and masked_scatter'd over the <|image_pad|> tokens; get_rope_index gives the text
    model its M-RoPE position_ids (3, batch, sequence) int64. The tower is frozen unless --train-vision (full
    fine-tuning only: its gradients, optimizer state and saved sets); full fine-tuning trains the merger (as
    LLaVA's projector); LoRA / QLoRA adapt what peft's target matching finds (qwen_lora_targets): the language
    model, and with all-linear (or the tower's own module names) the tower's and the merger's Linears too.
    """
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = _frozen_lm_text(training, text_estimate(text_model, text_training))
    recipe = recipe_of(training)
    w_bytes, a_bytes = dtype_bytes(recipe.weight), dtype_bytes(recipe.compute)
    th, d, i = model.hidden_size, v.hidden_size, v.intermediate_size
    head = d // v.num_attention_heads
    tower, merger = vision_tower_params(v), projector_params(v, th)
    rows = qwen_rows(model, training)
    per_image = qwen_image_tokens(v, training.image_size, training.image_size)
    n_img = images_per_sample(training) * training.batch_size
    trained_merger = training.method == "full" or frozen_lm(training)
    qwen25 = v.kind == "qwen2_5_vl"
    tokens = training.batch_size * total_tokens(model, training)
    # inputs of the step: pixel_values (rows, 3 x temporal x patch^2) in the model's dtype, and get_rope_index's
    # position_ids (3, batch, sequence) int64, which the language model reads through the forward
    pixel = rows * 3 * v.temporal_patch_size * v.patch_size ** 2 * w_bytes
    positions = 3 * tokens * 8
    # the tower's 2D rotary cos and sin (rows, head) fp32 (Qwen2VLVisionRotaryEmbedding.forward), and the
    # positions it reads (rows, 2) int64 (vision_utils.get_vision_position_ids)
    rotary = 2 * rows * head * 4 + rows * 2 * 8
    # With checkpointing, activation_checkpointing_enable (modeling_utils.py) calls enable_input_require_grads
    # whatever the method: it hooks the input embeddings of every PreTrainedModel inside, the tower's patch_embed
    # too (Qwen2VisionTransformerPretrainedModel._input_embed_layer), so the frozen tower runs with grad
    gc, trained_tower = training.grad_checkpointing, training.train_vision
    # LoRA / QLoRA targets peft finds on the image side (qwen_lora_targets: all-linear takes them all): the
    # adapters' parameters in --adapter-dtype train, and every op above the first adapted Linear needs a gradient
    lora_tower, lora_merger = qwen_lora_targets(model, training.lora_targets)[:2] \
        if training.method in ("lora", "qlora") else ((), ())
    adapters = qwen_image_adapters(model, training)
    tower_graph = gc or trained_tower or bool(lora_tower)
    merged = rows // v.spatial_merge_size ** 2
    # the merger (PatchMerger / Qwen2_5_VLPatchMerger) on the tower's last hidden state x. LayerNorm saves x and
    # fp32 mean and rstd when its weight trains or x needs grad; Qwen2.5-VL's RMSNorm upcasts x (the fp32 copy
    # and rsqrt are saved when x needs grad) and saves the normalised 16-bit input its trained weight multiplies.
    # A trained mlp[0] saves its input (rows / 4 x 4 width = rows x width), GELU its input (either way when
    # there is a graph), a trained mlp[2] GELU's output; Qwen2.5-VL's merged_hidden_states[reverse_indices]
    # saves the int64 indices.
    # Adapted mlp.0 / mlp.2 save what _qwen_lora_saved says (merged rows of width x 4); with adapters in the
    # merger only, ln_q's input needs no gradient and saves nothing.
    saved_merger = rms_fp32 = 0
    merger_graph = trained_merger or tower_graph or bool(lora_merger)
    if merger_graph:
        rms_fp32 = rows * d * 4 + 4 * rows if qwen25 and tower_graph else 0
        norm = (rms_fp32 + (rows * d * a_bytes if trained_merger else 0)) if qwen25 else \
            (rows * d * a_bytes + 2 * 4 * rows if trained_merger or tower_graph else 0)
        saved_merger = norm + rows * d * a_bytes * (3 if trained_merger else 1) + (merged * 8 if qwen25 else 0) \
            + _qwen_lora_saved(lora_merger, v, training, merged, th, a_bytes)
    # masked_scatter saves its bool mask when inputs_embeds requires grad
    saved = saved_merger + (tokens if merger_graph else 0)
    tower_kept = block_kept = 0
    if tower_graph:
        # each checkpointed block (Qwen2VLVisionBlock is a GradientCheckpointingLayer) keeps its input, and the
        # rotary cos / sin as its argument; the hooked patch embeddings are a leaf its AccumulateGrad node holds
        # (Qwen2-VL: the first block's input; Qwen2.5-VL permutes them into windows first, index keeping the
        # window index); with adapters the text embeddings' output is such a leaf too and outlives
        # masked_scatter's result
        # --train-vision (a trained tower, full fine-tuning: check refuses adapters on it): the patch embeddings
        # are no leaf (the trained Conv3d made them), so nothing more is kept for them; without checkpointing each
        # block keeps its whole saved set (_qwen_block_saved) and the shared cos / sin its rotary products save
        # LoRA on the tower without checkpointing: each block's frozen saved set (with Qwen2-VL norm1's input,
        # the block's input) and its adapters' (_qwen_lora_saved), less what the bottom block saves below its
        # first adapted Linear (_qwen_block0_free: the patch embeddings need no gradient then)
        lora_block = _qwen_lora_saved(lora_tower, v, training, rows, th, a_bytes)
        if trained_tower and not gc:
            block_kept = _qwen_block_saved(v, rows, a_bytes, True)
        elif lora_tower and not gc:
            block_kept = _qwen_block_saved(v, rows, a_bytes, False) + (0 if qwen25 else rows * d * a_bytes) \
                + lora_block
        else:
            block_kept = rows * d * a_bytes
        tower_kept = v.num_layers * block_kept + rotary
        if lora_tower and not gc:
            tower_kept -= _qwen_block0_free(v, rows, a_bytes, lora_tower)
        if qwen25 and (gc or trained_tower):
            tower_kept += (0 if trained_tower else rows * d * a_bytes) + merged * 8
        if gc and not trained_merger:
            tower_kept += tokens * th * a_bytes
    # a trained patch_embed Conv3d saves its input, pixel_values (a view), until the tower's backward
    tower_pixel = pixel if trained_tower else 0
    # The model's output holds image_outputs (MultimodalBaseModelOutputWithPast) until the loss is taken: the
    # tower's last_hidden_state (rows x width; already saved by the merger's LayerNorm when it has a graph) and the
    # merger's output (image tokens x text width, split into per-image views)
    img_tokens = n_img * per_image
    held = img_tokens * th * a_bytes
    if qwen25 or not (trained_merger or tower_graph):  # Qwen2.5-VL's RMSNorm saves an fp32 copy instead
        held += rows * d * a_bytes
    # The tower's forward, block by block, while the text embeddings (tokens x text width) exist: pixel_values,
    # the rotary tables, and one block's transients at the larger of its two peaks (measured with the tracer:
    # the op and the live tensors at the peak). The rotary (apply_rotary_pos_emb_vision): the block's input,
    # norm1's output, qkv's output and six fp32 (rows x width) tensors: q and k upcast, q x cos, rotate_half's
    # cat, x sin and the sum. The MLP: the block's input, the hidden state after attention, norm2's output and
    # three intermediate-wide ones (quick_gelu: fc1's output, the sigmoid, the product; SwiGLU: silu(gate), up,
    # the product).
    mlp_t = rows * (3 * d + 3 * i) * a_bytes
    attn_t = rows * (5 * d * a_bytes + 6 * d * 4)
    layer_t = max(mlp_t, attn_t)
    for mod in lora_tower:
        # an adapted Linear's forward (peft Linear.forward), its peak at `lora_B(...) * scaling` (measured with the
        # tracer): the input cast to the adapter dtype (kept by the forward's local), the base output (16-bit),
        # lora_B's output and its scaled copy (adapter dtype), beside the block's live tensors: the block input and
        # norm1's output (qkv); the block input and the attention output (proj); the block input, the hidden state
        # after attention and norm2's output (fc1 / gate_proj), and SwiGLU's silu(gate) (up_proj), or the MLP's
        # product (fc2 / down_proj)
        width, out = _qwen_lora_in_out(v, mod, th)
        ad = dtype_bytes(training.adapter_dtype)
        # (without checkpointing the running block's saved set so far is live too: _qwen_saved_before)
        context = {"qkv": 2 * d, "proj": 2 * d, "fc1": 3 * d, "gate_proj": 3 * d, "up_proj": 3 * d + i,
                   "fc2": 3 * d + i, "down_proj": 3 * d + i}[mod] * a_bytes
        before = 0 if gc else _qwen_saved_before(v, training, rows, a_bytes, lora_tower, mod, th)
        layer_t = max(layer_t, rows * (context + (ad * width if ad != a_bytes else 0) + out * (a_bytes + 2 * ad))
                      + before)
    if training.attention == "eager":
        # eager_attention_forward per cu_seqlens segment (VisionAttention.forward splits q, k, v per image, or per
        # window in Qwen2.5-VL's windowed blocks), its peak at the softmax (measured with the tracer): the scaled
        # scores (heads x n x n, 16-bit), their fp32 copy (softmax(dtype=float32) casts a bfloat16 input first:
        # aten/src/ATen/native/SoftMax.cpp takes the half_to_float kernel for float16 only) and the fp32 softmax,
        # beside the block's input, norm1's output, qkv's output, the rotated q and k, and the earlier segments'
        # outputs (the largest segment counted last: the whole image, or the largest window when no block attends
        # fully)
        _, gh, gw = qwen_grid(v, training.image_size, training.image_size)
        n = gh * gw
        if qwen25 and not v.fullatt_block_indexes:
            side, m = v.window_size // v.spatial_merge_size // v.patch_size, v.spatial_merge_size
            n = min(side, gh // m) * min(side, gw // m) * m * m
        layer_t = max(layer_t, rows * 7 * d * a_bytes + v.num_attention_heads * n * n * (2 + 4 + 4)
                      + (rows - n) * d * a_bytes)
    tower_moment = tokens * th * a_bytes + pixel + rotary + layer_t
    if tower_graph:  # the blocks' kept inputs (or saved sets) pile up as the tower runs: all but the last block's
        tower_moment += (v.num_layers - 1) * block_kept + (rows * d * a_bytes if qwen25 and gc and not trained_tower
                                                           else 0)
        if lora_tower and not gc:  # the bottom block saved nothing below its first adapter
            tower_moment -= _qwen_block0_free(v, rows, a_bytes, lora_tower)
    tower_bwd: tuple[int, int] | None = None
    if tower_kept:
        # the tower's backward, block by block from the top: its checkpoint recomputes the block with grad, which
        # saves the norms' inputs (LayerNorm: norm2's 16-bit input, norm1's being the kept block input, and
        # fp32 mean / rstd; RMSNorm: its fp32 copy and rsqrt), qkv's output (v is a view of it), q and k back in
        # 16 bits after the fp32 rotary, sdpa's output and fp32 logsumexp, and the MLP's (quick_gelu: fc1's
        # output and the sigmoid; SwiGLU: gate, its silu and up); then the block's backward: the incoming
        # gradient (rows x width) and three intermediate-wide ones in the MLP's (measured with the tracer: the
        # live tensors at the peak, quick_gelu's backward mul)
        # (LoRA on the tower: without checkpointing nothing is recomputed, the saved sets are already there; with
        # it the recomputed block saves its adapters' inputs too)
        block = 0 if lora_tower and not gc else _qwen_block_saved(v, rows, a_bytes, False) + lora_block
        block_t = 3 * rows * i * a_bytes + rows * d * a_bytes
        eager_at: tuple[int, int] | None = None
        if training.attention == "eager":  # (with checkpointing: check refuses eager with adapters on the tower)
            # the recomputed block's eager attention saves each segment's fp32 softmax and 16-bit probabilities
            # (_qwen_eager_saved) for the MLP's backward; then at the last segment's softmax backward (measured with
            # the tracer, aten._softmax_backward_data): the MLP's and norm2's saved sets, qkv's output (one
            # segment) and this segment's probabilities are freed; the rotated q and k (and Qwen2.5-VL norm1's fp32
            # copy), the other segments' saved pairs and this one's fp32 softmax are left, beside the probabilities'
            # gradient cast to fp32 and the scores' fp32 gradient, with the incoming gradient and the attention
            # output's
            block += _qwen_eager_saved(v, training, rows, a_bytes)
            windowed = qwen25 and not v.fullatt_block_indexes
            segments = qwen_segments(v, training, windowed)
            heads, n = v.num_attention_heads, max(segments)
            norm1 = rows * d * 4 + 4 * rows if qwen25 else 2 * 4 * rows
            left = 2 * rows * d * a_bytes + norm1 + heads * ((4 + a_bytes) * sum(x * x for x in segments)
                                                             - a_bytes * n * n)
            others = rows - n
            if others:
                # more segments: qkv's output stays (their v are views of it), and the earlier segments' output
                # gradients from cat's backward are live (measured with the tracer on a 2-image toy)
                left += 3 * rows * d * a_bytes
            eager_at = (tower_kept + left, 8 * heads * n * n + 2 * rows * d * a_bytes + others * d * a_bytes)
        out_mod = next((m for m in lora_tower if m in ("fc2", "down_proj")), None)
        if out_mod is not None:
            # an adapted fc2 / down_proj's backward first (measured with the tracer, at lora_A's mm): the gradient
            # of its input's adapter-dtype copy, beside the incoming gradient and its copy through the adapter; the
            # MLP's backward after it, the copy lora_A saved freed by then. Qwen2.5-VL's (biased down_proj, SwiGLU)
            # peak holds two rows x width tensors more in the adapter dtype (measured with the tracer, at aten.mul;
            # fitted: 0.7 % over on the 4-block toy)
            ad = dtype_bytes(training.adapter_dtype)
            block_t = max(block_t - _qwen_lora_saved((out_mod,), v, training, rows, th, a_bytes),
                          rows * i * ad + 2 * rows * d * a_bytes + (2 * rows * d * ad if qwen25 else 0))
        tower_bwd = (tower_kept + block, block_t)
        if eager_at is not None:
            tower_bwd = max(tower_bwd, eager_at, key=sum)
    trainable_text = b.trainable_parameters
    drop = _lm_drop(training, b)  # frozen_lm: the text run's embedding out again; no embedding gradient (untied)
    extra_trainable = (merger if trained_merger else 0) + (tower if trained_tower else 0) + adapters - drop
    tower_train: tuple[int, int, int] | None = None
    accumulating = training.grad_accum > 1
    # the language model's and the merger's backward run before the tower's: no tower gradient yet (unless
    # accumulated from the previous micro-batches)
    before_tower = extra_trainable - (tower if trained_tower and not accumulating else 0)
    if trained_tower:
        # --train-vision: the tower's backward, block by block from the top, after the merger's and before the
        # text embedding's, its peak at a block's MLP backward (quick_gelu's or SwiGLU's mul, measured with the
        # tracer): fc2's / down_proj's backward has run, so its weight's gradient exists and its saved input
        # (rows x intermediate) is freed; the incoming gradient and the MLP's intermediate-wide gradients are live,
        # as for the frozen block. At its top block the saved sets are whole (with checkpointing: the kept inputs
        # and the top block recomputed, a trained block's saved set) and no tower gradient but that fc2's exists;
        # at its bottom block one block's saved set is left, with pixel_values (the Conv3d's input) and the
        # cos / sin, and every tower gradient but the bottom block's other weights' and the patch embedding's
        out_params = i * d + d  # fc2 / down_proj, biased
        lower = tower - v.num_layers * qwen_block_params(v) + qwen_block_params(v) - out_params
        untied = 0 if model.tie_word_embeddings or drop else (model.vocab_size or 0) * th
        # (a recomputed Qwen2-VL block's norm1 saves its input, the block input its checkpoint keeps: counted once)
        recomputed = _qwen_block_saved(v, rows, a_bytes, True) - (0 if qwen25 else rows * d * a_bytes) if gc else 0
        at_mlp = 3 * rows * i * a_bytes + rows * d * a_bytes - rows * i * a_bytes
        # (with gradient accumulation every tower gradient exists from the previous micro-batches)
        top = (_scaled(b.gradients, trainable_text, (extra_trainable if accumulating else merger + out_params - drop)
                       - untied),
               tower_kept + recomputed + tower_pixel, at_mlp)
        bottom = (_scaled(b.gradients, trainable_text, extra_trainable - (0 if accumulating else lower) - untied),
                  tower_kept - (v.num_layers - 1) * block_kept + recomputed + tower_pixel, at_mlp)
        tower_train = max(top, bottom, key=sum)

    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    grad_all = _scaled(b.gradients, trainable_text, extra_trainable)
    img_w = image_side_bytes(model, training, recipe, tower, merger)  # QLoRA: the Linears 4-bit (weights.py)
    # QLoRA: a block's quantized Linear holds its dequantized weight beside the block's transients; the merger's run
    # after the blocks, beside the tower's output, ln_q's and mlp.0's (merged rows x 4 x width each)
    # (the block's MLP peak is at its activation, one intermediate-wide tensor past fc1's / gate_proj's call)
    tower_moment = max(tower_moment + max(0, img_w.dequant_tower - rows * i * a_bytes),
                       tower_moment - layer_t + img_w.dequant_projector
                       + 3 * rows * d * a_bytes if img_w.dequant_projector else 0)
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, extra_trainable), tower_moment)))
    for key, layout, values in b.moments:
        in_backward = key.startswith("backward.") and key != "backward.end"
        values = _grown(layout, values, trainable_text, before_tower if in_backward else extra_trainable)
        if key.startswith("forward."):
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + pixel + positions + held)))
        elif key == "backward.bottom" and trained_merger:
            # Qwen2VLModel.forward embeds the tokens before it runs the tower, so the tower's and the merger's
            # nodes are newer than the embedding's: with full fine-tuning the bottom moment is the embedding's
            # backward, after the image side's, whose saved tensors are gone
            untied = 0 if model.tie_word_embeddings or not trainable_text or drop else \
                (model.vocab_size or 0) * th * (b.gradients // trainable_text)
            # the merger's backward first, its peak at mlp[0]'s (measured with the tracer): GELU's and mlp[2]'s
            # saved inputs are gone, two rows x width gradients beside its weight's; then the tower's, both
            # before the embedding's gradient exists
            merger_grads = _scaled(b.gradients, trainable_text, before_tower) - untied
            at_mlp0 = (merger_grads, saved_merger - 2 * rows * d * a_bytes + tower_kept + tower_pixel,
                       2 * rows * d * a_bytes)
            if qwen25 and tower_graph:
                # Qwen2.5-VL's ln_q (Qwen2_5_VLRMSNorm) backward when the tower's output needs a gradient: only its
                # fp32 copy and rsqrt are left of the merger's saved set, and its fp32 backward holds five rows x
                # width fp32 tensors (the cast incoming gradient, the gradient through rsqrt, pow's two steps and
                # their sum: measured with the tracer, its peak at aten.mul)
                at_norm = (merger_grads, rms_fp32 + tower_kept + tower_pixel, 5 * rows * d * 4)
                at_mlp0 = max(at_mlp0, at_norm, key=sum)
            raw.append(("backward.merger", BWD_QWEN_MERGER, at_mlp0))
            if tower_train is not None:
                raw.append(("backward.tower", _m.BWD_VISION_TOWER, tower_train))
            elif tower_bwd is not None:
                raw.append(("backward.tower", BWD_QWEN_TOWER, (grad_all - untied, *tower_bwd)))
            raw.append((key, (*layout, _SAVED), (*values, 0)))
        elif in_backward:
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + tower_pixel)))
        else:
            raw.append((key, layout, values))
    if tower_bwd is not None and not trained_merger:  # adapters: after the language model's whole backward
        raw.insert(len(raw) - 2, ("backward.tower", BWD_QWEN_TOWER, (grad_all, *tower_bwd)))
    weights = b.weights + img_w.total + adapters * dtype_bytes(training.adapter_dtype)
    states = _scaled(b.optimizer_state, trainable_text, extra_trainable)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "activations.pixel_values": pixel + positions, "activations.image_side_saved": saved + tower_kept,
                    "temporaries.vision_tower_forward": tower_moment})
    t, gh, gw = qwen_grid(v, training.image_size, training.image_size)
    mode = FROZEN_LM_NOTE + "; the merger trained" if drop else \
        "full fine-tuning trains the merger" if trained_merger else \
        f"--method {training.method} adapts " + (f"the language model and the merger's {' and '.join(lora_merger)} "
                                                 "(the merger's weights frozen)" if lora_merger
                                                 else "the language model only (merger frozen)")
    notes = (
        f"vision-language model ({QWEN_NAMES[v.kind]}): {images_per_sample(training)} image(s) per sample of "
        f"{training.image_size} x {training.image_size} px, resized by the processor's smart_resize to "
        f"{gh * v.patch_size} x {gw * v.patch_size} ({gh} x {gw} patches of {v.patch_size} px, 2 x 2 merged): "
        f"{per_image} image tokens each, added to the {training.seq_len:,} text tokens: the language model runs on "
        f"{total_tokens(model, training):,} tokens per sample (Qwen2VLModel.forward, masked_scatter of the image "
        "features, M-RoPE position_ids from get_rope_index).",
        f"vision tower ({tower:,} parameters) "
        + ("trained (--train-vision: its gradients, optimizer state and every block's saved set, or with "
           "checkpointing its kept block inputs and one recomputed block)" if trained_tower else "frozen")
        + (f", LoRA on each block's {', '.join(lora_tower)} (peft's target matching: all-linear takes the tower's "
           f"Linears; {adapters:,} adapter parameters on the image side, and the blocks' saved sets for their "
           "backward)" if lora_tower else "")
        + f"; {mode} ({merger:,} parameters); " + QLORA_IMAGE_NOTE + ".",
        "vision tower forward: one block's transients at its rotary or MLP peak"
        + (" or, under --attention eager, its per-image (or per-window) fp32 softmax" if training.attention == "eager"
           else "")
        + (" (with checkpointing the recomputed block's backward at a segment's softmax backward)"
           if training.attention == "eager" and gc else "")
        + ", counted before the language model runs; images resized with the published "
        "preprocessor_config.json's min_pixels 3,136 and max_pixels 12,845,056 (a square side of at most 3,584 px).",
    )
    out = replace(b, model=model.name, parameters=b.parameters + tower + merger,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights, gradients=grad_all,
                  optimizer_state=states,
                  # (the image outputs `held` until the loss are in every forward moment: the component holds them)
                  activations=b.activations + saved + tower_kept + pixel + positions + held,
                  temporaries=max(b.temporaries, tower_moment), phases=phases,
                  details=details, notes=b.notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + merger)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})


def estimate(model: ModelSpec, training: TrainingSpec,
             text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """The text model's Breakdown on text + image tokens, with the image side's terms added."""
    if model.vision is not None and model.vision.is_mllama:  # Llama-3.2-Vision: memory/mllama.py
        from vramcalc.core.memory import mllama as _mllama

        return _mllama.estimate(model, training, text_estimate)
    if model.vision is not None and model.vision.kind == "siglip":
        return _siglip_estimate(model, training, text_estimate)
    if model.vision is not None and model.vision.kind == "llava_next":  # memory/__init__.py routes it
        raise UnsupportedCombination(f"{model.name}: LLaVA-NeXT is estimated by memory/llava_next.py")
    check(model, training)
    if model.vision is not None and model.vision.is_qwen:
        return _qwen_estimate(model, training, text_estimate)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = _frozen_lm_text(training, text_estimate(text_model, text_training))
    recipe = recipe_of(training)
    w_bytes = dtype_bytes(recipe.weight)
    a_bytes = dtype_bytes(recipe.compute)
    th, vh = model.hidden_size, v.hidden_size
    tower, projector = vision_tower_params(v), projector_params(v, th)
    n_img = images_per_sample(training) * training.batch_size
    per_image = image_tokens(v)
    rows = (v.image_size // v.patch_size) ** 2 + 1  # the tower's sequence: patches + the class token
    trained_projector = training.method == "full" or frozen_lm(training)
    drop_lm = frozen_lm(training)  # the text embedding frozen: enable_input_require_grads hooks it and the tower
    # models/llava/modeling_llava.py: pixel_values (images, 3, H, W) in the model's dtype, an input of the step
    pixel = n_img * 3 * v.image_size * v.image_size * w_bytes
    saved = saved_projector = 0
    if trained_projector:
        # LlavaMultiModalProjector's autograd graph: linear_1 saves its input, a view of the whole hidden state
        # (rows x tower width) it slices; nn.GELU saves linear_1's output; linear_2 saves GELU's output
        saved_projector = n_img * (rows * vh + 2 * per_image * th) * a_bytes
        saved += saved_projector
    tokens = training.batch_size * total_tokens(model, training)
    gc = training.grad_checkpointing
    # LoRA / QLoRA: the tower's and projector's Linears peft adapts (clip_lora_targets: q_proj, v_proj and
    # all-linear reach the tower), their parameters in --adapter-dtype
    lora_tower, lora_projector = clip_lora_targets(model, training.lora_targets)[:2] \
        if training.method in ("lora", "qlora") else ((), ())
    adapters, adapters_grad, layer_adapters = clip_image_adapters(model, training)
    image_graph = bool(lora_tower or lora_projector)
    if trained_projector or gc or image_graph:
        saved += tokens  # Tensor.masked_scatter saves its bool mask (inputs_embeds requires grad)
    if training.train_vision:
        saved += n_img * _tower_saved(v, training, rows, a_bytes) + pixel  # the patch Conv2d keeps pixel_values
    forward_only = n_img * _tower_saved(v, training, rows, a_bytes, unreached=True) if training.train_vision else 0
    # LoRA / QLoRA with checkpointing hooks the frozen tower (tower_kept below): it is recomputed with grad in
    # the backward, adapters or not
    hooked = gc and training.method in ("lora", "qlora")
    lora_layer = clip_lora_layer_saved(v, training, rows, a_bytes, lora_tower, th) if lora_tower or hooked else 0
    lora_free = lora_layer - clip_lora_layer_saved(v, training, rows, a_bytes, lora_tower, th, bottom=True)
    tower_lora = 0
    if lora_tower and not gc:
        # LoRA on the tower without checkpointing: every layer the projector reads saves its set (the frozen
        # Linears' inputs left out, the adapters' in: clip_lora_layer_saved), the bottom layer nothing below its
        # first adapter (its input, the embeddings, needs no gradient); the layers above the feature layer run and
        # their graph lives as long as the forward (forward_only, as a trained tower's)
        tower_lora = n_img * (used_layers(v) * lora_layer - lora_free)
        saved += tower_lora
        forward_only += n_img * (v.num_layers - used_layers(v)) * lora_layer
    if image_graph and not gc:
        # the projector run with grad (a graph in the tower, or adapters of its own): GELU saves its input (image
        # tokens x text width) when linear_1's output needs a gradient; an adapted linear_1 / linear_2 saves what
        # _clip_lora_saved says (linear_1 not in a fresh copy: its input, a view of the whole hidden state, as a
        # trained linear_1's)
        lora_p = _clip_lora_saved(lora_projector, v, training, per_image, th, a_bytes)
        fresh = dtype_bytes(training.adapter_dtype) != a_bytes or training.lora_dropout > 0
        gelu_in = per_image * th * a_bytes if (lora_tower or "linear_1" in lora_projector) else 0
        inputs = {"linear_1": rows * vh * a_bytes, "linear_2": per_image * th * a_bytes}
        saved += n_img * (gelu_in + sum(lora_p.values())
                          + (0 if fresh else sum(inputs[m] for m in lora_projector)))
    if (not trained_projector or drop_lm) and training.grad_checkpointing:
        # LoRA / QLoRA (frozen_lm too) with checkpointing: enable_input_require_grads (modeling_utils.py) hooks the
        # input embeddings of every PreTrainedModel inside, the CLIP tower's patch Conv2d too, so the tower runs with
        # grad: its checkpointed CLIPEncoderLayers keep their inputs and its embeddings' LayerNorm its input
        # ((layers + 1) x rows x width per image), the frozen projector's GELU its input (image tokens x text
        # width), and the text embeddings' output, a leaf that requires grad, outlives masked_scatter's new
        # inputs_embeds (the text model's first input): one more tokens x text width (measured with the tracer:
        # each term moves the peak by its bytes as layers, images and sequence grow)
        tower_kept = (n_img * ((v.num_layers + 1) * rows * vh + per_image * th) + tokens * th) * a_bytes
    else:
        tower_kept = 0
    # The tower's no-grad forward, layer by layer (modeling_clip.py CLIPEncoderLayer), while the text
    # embeddings (tokens x text width) exist: the hidden state in and out, the captured feature layer, and one
    # layer's transients: LayerNorm out, q, k, v, the attention output and its scores (eager: fp32 softmax of
    # heads x rows^2), fc1's output and quick_gelu's sigmoid and product (intermediate width).
    heads = v.num_attention_heads
    scores = heads * rows * rows * (a_bytes + 4) if training.attention == "eager" else 0
    layer_t = n_img * (rows * (7 * vh + 3 * v.intermediate_size) * a_bytes + scores)
    tower_moment = tokens * th * a_bytes + pixel + layer_t
    if lora_tower or hooked:
        tower_moment = clip_lora_forward_moment(v, training, rows, n_img, a_bytes, th, lora_tower, tower_moment,
                                                layer_t)
    # LoRA / QLoRA: the model output's image_outputs (LlavaModel.forward returns them) hold until the loss the
    # tower's last_hidden_state, the feature-layer hidden state (with adapters in the tower also the input the
    # first layer above saves: counted there) and pooler_output, the projected image features (measured with
    # the tracer at nll_loss_forward)
    held = 0
    if training.method in ("lora", "qlora") and not gc:
        above = v.num_layers > used_layers(v)
        held = n_img * ((1 if tower_lora and above else 2 if above else 1) * rows * vh + per_image * th) * a_bytes
    lm_input = lm_input_grad_saved(text_model, text_training) if image_graph else 0
    trainable_text = b.trainable_parameters
    drop = _lm_drop(training, b)
    extra_trainable = (projector if trained_projector else 0) + (tower if training.train_vision else 0) + adapters \
        - drop
    # a trained tower's layers above the feature layer and its post_layernorm get no gradient (their output never
    # reaches the loss), so AdamW keeps no state for them; nor do those layers' adapters (clip_image_adapters)
    unreached = (unreached_params(v) if training.train_vision else 0) + adapters - adapters_grad
    with_grad = extra_trainable - unreached

    raw: list[_m.RawMoment] = []
    last_hidden = loss_held_hidden(model, training)
    accum = b.gradients if training.grad_accum > 1 else 0
    grad_all = _scaled(b.gradients, trainable_text, with_grad)
    img_w = image_side_bytes(model, training, recipe, tower, projector)  # QLoRA: the Linears 4-bit (weights.py)
    # QLoRA: a layer's quantized Linear holds its dequantized weight beside the layer's transients; the projector's
    # runs after the layers, beside the tower's output, its input and its output (text width)
    # (the layer's peak is at its activation, one intermediate-wide tensor past fc1's call, which holds the weight)
    tower_moment = max(tower_moment + max(0, img_w.dequant_tower - n_img * rows * v.intermediate_size * a_bytes),
                       tower_moment - layer_t + img_w.dequant_projector
                       + n_img * (rows * vh + 2 * per_image * th) * a_bytes if img_w.dequant_projector else 0)
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, with_grad), tower_moment)))
    for key, layout, values in b.moments:
        values = _grown(layout, values, trainable_text, with_grad)
        if key.startswith("forward."):
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + pixel + forward_only + held
                                                 + lm_input + (last_hidden if key == "forward.loss" else 0))))
        elif key == "backward.bottom":
            # a trained projector's backward runs after the text model's bottom layer and before the embedding's
            # (its nodes are newer than the embedding's): its saved tensors are gone at the bottom moment, which
            # the embedding's backward makes the peak; the tower's run last
            raw.append((key, (*layout, _SAVED), (*values, tower_kept + tower_lora + lm_input)))
        elif key.startswith("backward.") and key != "backward.end":
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + lm_input)))
        else:
            raw.append((key, layout, values))
    if lora_tower or hooked:
        tower_grads = used_layers(v) * layer_adapters
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, clip_lora_backward_moment(
            v, training, rows, n_img, a_bytes, th, lora_tower, tower_kept, tower_lora,
            (_scaled(b.gradients, trainable_text, with_grad - tower_grads), _scaled(b.gradients, trainable_text,
                                                                                    with_grad)))))
    if training.train_vision:
        # a trained tower's backward runs after the projector's and before the text embedding's (the oldest
        # nodes): every gradient but the tower's exists, and the tower's saved set is whole
        tower_train = saved - saved_projector
        text_grads = _scaled(b.gradients, trainable_text, projector - drop)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION, (text_grads, tower_train)))
    weights = b.weights + img_w.total + adapters * dtype_bytes(training.adapter_dtype)
    states = _scaled(b.optimizer_state, trainable_text, with_grad)
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(raw))
    phases = {p: phases[p] for p in b.phases if p in phases}
    details = dict(b.details)
    details.update({"weights.vision_tower": img_w.tower, "weights.projector": img_w.projector,
                    "activations.pixel_values": pixel, "activations.image_side_saved": saved + tower_kept,
                    "temporaries.vision_tower_forward": tower_moment})
    if adapters:
        details["weights.image_adapters"] = adapters * dtype_bytes(training.adapter_dtype)
    mode = FROZEN_LM_NOTE + "; the projector trained" if drop else \
        "full fine-tuning trains the projector" if trained_projector else \
        f"--method {training.method} adapts the language model" + clip_lora_phrase(lora_tower, lora_projector,
                                                                                  adapters)
    notes = (
        f"vision-language model: {images_per_sample(training)} image(s) per sample x {per_image} image tokens "
        f"(({v.image_size} / {v.patch_size})^2 patches, class token dropped) are added to the {training.seq_len:,} "
        f"text tokens: the language model runs on {total_tokens(model, training):,} tokens per sample "
        "(models/llava/modeling_llava.py LlavaModel.forward, masked_scatter of the image features).",
        f"vision tower ({tower:,} parameters, CLIP ViT, modeling_clip.py) "
        + ("trained (--train-vision: its saved activations through the step; the layers above the feature layer "
           "get no gradient)" if training.train_vision else
           "frozen, recomputed with grad in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc and (training.method in ("lora", "qlora") or drop_lm) else
           "frozen, run with grad from its first adapted Linear (its layers' saved sets kept for the adapters' "
           "backward)" if lora_tower else "frozen and run without grad") + f"; {mode} "
        f"({projector:,} parameters, LlavaMultiModalProjector); " + QLORA_IMAGE_NOTE + ".",
        "vision tower forward: one layer's transients counted at its start (approximate; it runs before the "
        "language model and is not the peak of a text sequence of any length).",
    )
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights, gradients=grad_all,
                  optimizer_state=states, activations=b.activations + saved + tower_kept + pixel + held + lm_input,
                  temporaries=max(b.temporaries, tower_moment), phases=phases,
                  details=details, notes=b.notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})


# --- Gemma 3: SigLIP tower and Gemma3MultiModalProjector ---------------------------------------------------------


def _siglip_check(model: ModelSpec, training: TrainingSpec) -> None:
    v = model.vision
    assert v is not None
    if training.image_size not in (DEFAULT_IMAGE_SIZE, v.image_size):
        raise SpecError("image_size", f"{model.name}'s SigLIP tower takes {v.image_size} px images only (its "
                        "learned positions are fixed; Gemma3ImageProcessor resizes, pan-and-scan crops are more "
                        f"images: --images): drop --image-size or give {v.image_size}")
    if training.attention == "flash":
        # modeling_gemma3.py Gemma3ForConditionalGeneration._supports_flash_attn = False ("Flash Attention drops the
        # bidirectional mask over image tokens"): transformers refuses flash_attention_2 for it
        raise UnsupportedCombination(f"{model.name}: Gemma3ForConditionalGeneration does not support "
                                     "flash_attention_2 (it would drop the bidirectional mask over image tokens): "
                                     "use --attention sdpa or eager")


def _siglip_layer_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int) -> int:
    """One trained SigLIP layer's saved tensors per image (models/siglip/modeling_siglip.py SiglipEncoderLayer,
    sdpa's flash kernel: no mask): layer_norm1's input (and fp32 mean and rstd per row) and output (q/k/v_proj's
    shared input), q, k, v, the attention output (out_proj's input, the same storage) and the fp32 logsumexp per
    head, layer_norm2's input (and stats) and output (fc1's input), fc1's output (gelu_pytorch_tanh's input) and
    the gelu's output (fc2's input)."""
    h, i = v.hidden_size, v.intermediate_size
    return rows * ((8 * h + 2 * i) * a_bytes + 4 * v.num_attention_heads + 2 * 8)


def _siglip_layer_transient(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int) -> int:
    """A SigLIP layer's largest forward moment per image beside its input (the residual): at the MLP,
    layer_norm2's output (held by the layer while the MLP runs), fc1's output and the gelu's (2 x intermediate);
    at the attention, layer_norm1's output, q, k, v, the output and out_proj's (6 x width); eager attention
    (siglip eager_attention_forward) then holds the scaled scores (16-bit), their fp32 cast and the fp32 softmax
    (softmax(dtype=float32) casts first) per head, beside layer_norm1's output and q, k, v."""
    h, i = v.hidden_size, v.intermediate_size
    dense = rows * max(h + 2 * i, 6 * h) * a_bytes
    if training.attention == "eager":
        return max(dense, rows * 4 * h * a_bytes + v.num_attention_heads * rows * rows * (a_bytes + 4 + 4))
    return dense


def _siglip_estimate(model: ModelSpec, training: TrainingSpec,
                     text_estimate: Callable[[ModelSpec, TrainingSpec], Breakdown]) -> Breakdown:
    """Gemma 3 (models/gemma3/modeling_gemma3.py Gemma3Model.forward): the text embeddings first, then
    get_image_features runs the SigLIP tower on pixel_values and Gemma3MultiModalProjector on its last hidden
    state (transpose + contiguous copy, AvgPool2d to mm_tokens_per_image, Gemma3RMSNorm in fp32, matmul with
    mm_input_projection_weight); masked_scatter puts the image features in place of the image tokens and the
    language model runs on text + image tokens with the bidirectional image-block masks (text_run)."""
    _siglip_check(model, training)
    check(model, training)
    from vramcalc.core.memory import siglip_lora as _sl

    _sl.check(model, training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    text_model, text_training = text_run(model, training)
    b = _frozen_lm_text(training, text_estimate(text_model, text_training))
    from vramcalc.core.memory.activations import packing_notes

    dropped = set(packing_notes(text_training))
    recipe = recipe_of(training)
    w_bytes, a_bytes = dtype_bytes(recipe.weight), dtype_bytes(recipe.compute)
    # the residual streams under autocast are fp32 (fp32 positions and embeddings added, LayerNorm autocast to
    # fp32): the tower's hidden states, post_layernorm's output and the text embeddings
    r_bytes = 4 if recipe.autocast else a_bytes
    th, vh, vi = model.hidden_size, v.hidden_size, v.intermediate_size
    tower, projector = vision_tower_params(v), projector_params(v, th)
    n_img = images_per_sample(training) * training.batch_size
    per_image, rows, layers = image_tokens(v), tower_rows(v), v.num_layers
    gc = training.grad_checkpointing
    trained_projector = training.method == "full" or frozen_lm(training)
    tokens = training.batch_size * total_tokens(model, training)
    # pixel_values (images, 3, H, W) in the model's dtype (SiglipVisionEmbeddings casts to the conv's dtype)
    pixel = n_img * 3 * v.image_size * v.image_size * w_bytes
    # the tower's last_hidden_state (post_layernorm's output) is returned in Gemma3ModelOutputWithPast.image_outputs
    # and lives as long as the model's output: through the forward, to the loss
    kept_output = n_img * rows * vh * r_bytes
    # Checkpointing: activation_checkpointing_enable (transformers modeling_utils.py) calls
    # enable_input_require_grads for any model whose main input is input_ids, whatever the method; it hooks every
    # input embedding inside, SigLIP's patch_embedding too (SiglipVisionModel._input_embed_layer), so a frozen tower
    # runs with grad: each checkpointed layer keeps its input, post_layernorm its input and stats, and the hooked
    # outputs, leaves that require grad, are held by their AccumulateGrad nodes as long as the graph: the patch
    # Conv2d's output (rows x width per image) and, when the embedding is frozen, the text embeddings' (outliving
    # masked_scatter's new inputs_embeds).
    hooked = gc and not training.train_vision
    # LoRA / QLoRA adapters peft puts on the tower (memory/siglip_lora.py: q_proj / v_proj, the default, name the
    # tower's too): their weights train, and every op above the first adapted Linear needs a gradient
    lora_tower = _sl.adapted(model, training)[0]
    adapters = _sl.adapter_params(model, training)
    needs_grad = hooked or training.train_vision or bool(lora_tower)  # the tower's output requires grad
    # Gemma3MultiModalProjector: AvgPool2d saves its input (the contiguous copy) when it needs a gradient;
    # Gemma3RMSNorm (modeling_gemma3.py) saves x.float() (fp32, for pow and mul) when x needs a gradient, the fp32
    # normalized x when its weight is trained, and mm_input_projection_weight's matmul the 16-bit normalized x
    # when the weight is trained
    rms_saved = n_img * per_image * vh * ((4 if needs_grad else 0) + ((4 + a_bytes) if trained_projector else 0))
    saved_projector = rms_saved + (n_img * rows * vh * r_bytes if needs_grad else 0)
    saved = saved_projector
    if trained_projector or gc or lora_tower:
        saved += tokens  # Tensor.masked_scatter saves its bool mask (inputs_embeds requires grad)
    # Tower adapters without checkpointing: each layer's saved set (siglip_lora.layer_saved; the bottom layer's
    # input, the patch embeddings, needs no gradient), post_layernorm its input and stats
    lora_saved = 0
    if lora_tower and not gc:
        lora_saved = n_img * (_sl.layer_saved(v, training, rows, a_bytes, lora_tower, False)
                              + (layers - 1) * _sl.layer_saved(v, training, rows, a_bytes, lora_tower, True)
                              + rows * vh * a_bytes + 8 * rows)
        saved += lora_saved
        # the text model's bottom layer then saves its input's set too (inputs_embeds needs a gradient)
        saved += _sl.text_bottom_saved(text_model, text_training, total_tokens(model, training))
    tower_saved = 0
    if training.train_vision:
        # SiglipVisionEmbeddings' patch Conv2d keeps pixel_values; each layer its saved set (with checkpointing
        # only its input: SiglipEncoderLayer is a GradientCheckpointingLayer); post_layernorm its input and stats
        per_layer = rows * vh * a_bytes if gc else _siglip_layer_saved(v, training, rows, a_bytes)
        tower_saved = pixel + n_img * (layers * per_layer + rows * vh * a_bytes + 8 * rows)
        saved += tower_saved
    tower_kept = 0
    if hooked:
        tower_kept = n_img * ((layers + 1) * rows * vh * r_bytes + rows * vh * a_bytes + 8 * rows) \
            + (tokens * th * r_bytes if not trained_projector else 0)
    # The tower's forward, layer by layer, while the text embeddings exist: pixel_values, the hidden state and one
    # layer's transients; with LoRA + checkpointing the layers' kept inputs grow to the top, beside the hooked
    # patch Conv2d output and the layer's post-attention residual
    kept_inputs = n_img * rows * vh * ((layers + 1) * r_bytes + a_bytes) if gc else n_img * rows * vh * r_bytes
    if training.train_vision and not gc:
        kept_inputs = pixel + n_img * layers * _siglip_layer_saved(v, training, rows, a_bytes)
    elif not gc and layers > 1:
        # SiglipEncoder.forward holds inputs_embeds (the embeddings' output) through its loop and the loop's
        # hidden_states the running layer's input; the layer's post-attention residual lives through its MLP
        kept_inputs = 3 * n_img * rows * vh * r_bytes
    # (with checkpointing an adapted Linear's forward saves nothing: its transients beside the layer's context)
    tower_moment = (tokens * th * r_bytes + pixel + kept_inputs
                    + n_img * max(_siglip_layer_transient(v, training, rows, a_bytes),
                                  _sl.forward_transient(v, training, rows, a_bytes, lora_tower)
                                  + 2 * rows * vh * a_bytes))
    if training.train_vision and not gc and training.attention == "sdpa":
        # a trained layer's saved set is all in kept_inputs (pixel_values too): beyond it only out_proj's or fc2's
        # output and the residual sum (2 x width) (measured: gemma3vlm-toy full pure-bf16 --train-vision b1 s128 i1,
        # whose tower moment read the frozen layer's transients, fc1's and the gelu's outputs, over its saved set)
        tower_moment = tokens * th * r_bytes + kept_inputs + n_img * 2 * rows * vh * a_bytes
    if lora_tower and not gc:
        # the adapted layers' saved sets pile up; the peak in the top layer (siglip_lora.top_moment)
        below = lora_saved - n_img * (rows * vh * a_bytes + 8 * rows
                                      + _sl.layer_saved(v, training, rows, a_bytes, lora_tower, True))
        tower_moment = tokens * th * r_bytes + pixel + below \
            + n_img * _sl.top_moment(v, training, rows, a_bytes, lora_tower)
    trainable_text = b.trainable_parameters
    drop = _lm_drop(training, b)  # frozen_lm: the text run's stand-in embedding out again (its gradient, states)
    extra_trainable = (projector if trained_projector else 0) + (tower if training.train_vision else 0) + adapters \
        - drop

    # the sliding layers' mask: a second 4-D bool mask beside the full layers' (create_masks_for_vision_model),
    # which the packed text run counts once; it lives through the forward, and with checkpointing to the backward
    second_mask = tokens * total_tokens(model, training) if training.attention == "sdpa" else 0
    raw: list[_m.RawMoment] = []
    accum = b.gradients if training.grad_accum > 1 else 0
    img_w = image_side_bytes(model, training, recipe, tower, projector)  # QLoRA: the Linears 4-bit (weights.py)
    tower_moment += img_w.dequant_forward
    raw.append(("forward.vision", _m.FWD_VISION, (_scaled(accum, trainable_text, extra_trainable), tower_moment)))
    # the text model's backward moments run before the tower's: no tower gradient yet (the projector's, with full
    # fine-tuning, is counted from the bottom layer on, a little early)
    before_tower = (projector if trained_projector else 0) - drop
    for key, layout, values in b.moments:
        in_backward = key.startswith("backward.") and key != "backward.end"
        values = _grown(layout, values, trainable_text, before_tower if in_backward else extra_trainable)
        if key.startswith("forward."):
            raw.append((key, (*layout, _SAVED),
                        (*values, saved + tower_kept + pixel + kept_output + second_mask)))
        elif key == "backward.bottom":
            raw.append((key, (*layout, _SAVED), (*values, tower_saved + tower_kept)))
        elif key.startswith("backward.") and key != "backward.end":
            raw.append((key, (*layout, _SAVED), (*values, saved + tower_kept + (second_mask if gc else 0))))
        else:
            raw.append((key, layout, values))
    # The tower's backward runs last (its nodes are the oldest but the text embedding's): with --train-vision or
    # LoRA + checkpointing, one layer at a time; its peak is a layer's MLP backward at the gelu: fc2's saved input
    # is released (autograd frees a node's saved tensors once it has run), the gradient flowing in (width), fc2's
    # input gradient and the gelu's (2 x intermediate) exist.
    if training.train_vision:
        text_grads = _scaled(b.gradients, trainable_text, projector - drop)
        at_gelu = n_img * (_siglip_layer_saved(v, training, rows, a_bytes) + rows * (vh + vi) * a_bytes)
        # its top layer: the saved set whole but this layer's (with checkpointing its input, recomputed with the
        # rest); its bottom layer: pixel_values the patch Conv2d keeps
        this_layer = n_img * (rows * vh * a_bytes if gc else _siglip_layer_saved(v, training, rows, a_bytes))
        # At a layer's gelu the tower's gradients are post_layernorm's, the layers' above and the layer's own fc2's:
        # autograd runs a layer's nodes from fc2 down, the patch and position embeddings last (transformers 5.24
        # models/siglip/modeling_siglip.py SiglipEncoderLayer, SiglipMLP; params.py vision_tower_params' tensors);
        # post_layernorm's saved input and stats are gone (its backward ran first). Measured: gemma3vlm-toy full
        # pure-bf16 --train-vision b1 s128 i1 read +6.05 % (no checkpointing) and +6.68 % (checkpointing) with the
        # whole top layer's gradients, or the whole tower's at the bottom one, and post_layernorm's input counted.
        fc2 = vi * vh + vh
        layer_params = 4 * (vh * vh + vh) + 2 * 2 * vh + (vh * vi + vi) + fc2
        post_ln = n_img * (rows * vh * a_bytes + 8 * rows)
        top = (text_grads + (2 * vh + fc2) * w_bytes, tower_saved - this_layer - post_ln, at_gelu)
        bottom = (text_grads + (2 * vh + (layers - 1) * layer_params + fc2) * w_bytes, pixel, at_gelu)
        worst = max(top, bottom, key=sum)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER, worst))
    elif hooked:
        # the frozen layer recomputed: q, k, v, the output and the logsumexp, layer_norm2's input and stats, the
        # gelu's input (the frozen Linears save no input); at the gelu the gradient flowing in (width) and the
        # MLP's two intermediate-wide gradients. Eager attention saves the fp32 softmax and the 16-bit
        # probabilities per head instead of the output; at its softmax backward (the MLP's saved set released):
        # q, k, v, the fp32 softmax, the incoming 16-bit gradient, its fp32 cast and the 16-bit result, per head
        # (siglip eager_attention_forward). Kept: every layer's input and the patch Conv2d's output.
        heads = v.num_attention_heads
        at_gelu = n_img * rows * ((5 * vh + vi) * a_bytes + 4 * heads + 8 + (vh + 2 * vi) * a_bytes)
        if training.attention == "eager":
            at_gelu = n_img * rows * ((4 * vh + vi) * a_bytes + heads * rows * (4 + a_bytes) + 8
                                      + (vh + 2 * vi) * a_bytes)
            at_softmax = n_img * rows * (5 * vh * a_bytes + heads * rows * (4 + a_bytes + 4 + a_bytes))
            at_gelu = max(at_gelu, at_softmax)
        if lora_tower:  # the recomputed layer saves its adapters' inputs and lora_A outputs too
            at_gelu += n_img * (_sl.layer_saved(v, training, rows, a_bytes, lora_tower, True)
                                - _sl.layer_saved(v, training, rows, a_bytes, (), True))
            at_gelu = max(at_gelu, n_img * _sl.recomputed_fc2(v, training, rows, a_bytes, lora_tower))
        kept = n_img * rows * vh * (layers * r_bytes + a_bytes)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (_scaled(b.gradients, trainable_text, extra_trainable), kept, at_gelu)))
    elif lora_tower:  # tower adapters without checkpointing (siglip_lora.backward_without_checkpointing)
        kept, bwd = _sl.backward_without_checkpointing(v, training, rows, a_bytes, lora_tower, n_img, lora_saved)
        raw.insert(len(raw) - 2, ("backward.vision", _m.BWD_VISION_TOWER,
                                  (_scaled(b.gradients, trainable_text, extra_trainable), kept, bwd)))
    # the tower adapters' weights in --adapter-dtype (peft autocast_adapter_dtype)
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
                    "activations.pixel_values": pixel, "activations.image_side_saved": saved + tower_kept,
                    "activations.tower_output_kept": kept_output,
                    "temporaries.vision_tower_forward": tower_moment})
    mode = FROZEN_LM_NOTE + "; the projector trained" if drop else \
        "full fine-tuning trains the projector" if trained_projector else \
        f"--method {training.method} adapts the language model only (projector frozen)" if not lora_tower else \
        (f"--method {training.method} also adapts the tower's {', '.join(lora_tower)} in each layer ({adapters:,} "
         "adapter parameters: peft matches the names over the whole model; projector frozen, its "
         "mm_input_projection_weight a Parameter, never adapted)")
    notes = (
        f"vision-language model (Gemma 3): {images_per_sample(training)} image(s) per sample x ({per_image} image "
        f"tokens + 4 the processor wraps them in: \"\\n\\n\" <start_of_image> ... <end_of_image> \"\\n\\n\") are "
        f"added to the {training.seq_len:,} text tokens: the language model runs on "
        f"{total_tokens(model, training):,} tokens per sample (models/gemma3/processing_gemma3.py "
        "full_image_sequence; modeling_gemma3.py Gemma3Model.forward, masked_scatter of the image features).",
        f"vision tower ({tower:,} parameters, SigLIP, modeling_siglip.py; {rows:,} patches per image) "
        + ("trained (--train-vision)" if training.train_vision else
           "frozen, run with grad and recomputed in the backward (checkpointing hooks its patch embedding: "
           "enable_input_require_grads)" if gc else "frozen and run without grad")
        + f"; {mode} ({projector:,} parameters, Gemma3MultiModalProjector: avg-pool to {per_image} tokens, RMSNorm, "
        "mm_input_projection_weight); " + QLORA_IMAGE_NOTE + ".",
        "token_type_ids make the image tokens attend to each other both ways: "
        + ("transformers builds 4-D masks (full and sliding layers), so sdpa runs the memory-efficient kernel and "
           "every layer keeps a 16-bit copy of the mask (counted as for a packed batch)."
           if training.attention == "sdpa" else "eager attention's masks as for text."),
    )
    text_notes = tuple(n for n in b.notes if n not in dropped)
    out = replace(b, model=model.name, parameters=b.parameters + tower + projector,
                  trainable_parameters=trainable_text + extra_trainable, weights=weights,
                  gradients=_scaled(b.gradients, trainable_text, extra_trainable), optimizer_state=states,
                  activations=b.activations + saved + tower_kept + pixel + kept_output + second_mask,
                  temporaries=max(b.temporaries, tower_moment), phases=phases, details=details,
                  notes=text_notes + notes, moments=tuple(raw),
                  active_parameters=b.active_parameters + tower + projector)
    from vramcalc.core.memory import distributed as _distributed
    from vramcalc.core.memory.overhead import runtime_overhead

    runtime = runtime_overhead(max(out.phases.values()), _distributed.world_size(training))
    return replace(out, overhead=runtime.total, details={**out.details, **runtime.details()})
