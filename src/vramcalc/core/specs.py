"""The inputs of the arithmetic: the model architecture, the GPU and the run, as frozen dataclasses.

Standard library only. Each class checks its own fields in `__post_init__` (choices, bounds, and the
cross-field rules), so a spec that exists is valid, however it was made: by the CLI from options, by
io/ from an untrusted file (pydantic checks the types first, with these same bounds), or by a script.
A failed check raises `SpecError(field, message)`; the CLI names the option, io/ names the file entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from vramcalc.core.errors import SpecError
from vramcalc.core.vocab import (
    AC_LAYOUTS,
    ADAPTER_DTYPES,
    ATTENTION_KINDS,
    ATTENTIONS,
    AXOLOTL_KERNEL_GROUPS,
    CLASSIC_FAMILIES,
    COMPILE_SCOPES,
    ENCODER_FAMILIES,
    FSDP_STRATEGIES,
    GRAD_SYNCS,
    HEADS,
    HIDDEN_ACTS,
    KERNEL_GROUPS,
    KV_CACHES,
    KV_DTYPES,
    LOGITS_KEPT,
    LOSSES,
    METHODS,
    MLP_KINDS,
    MODES,
    NORM_KINDS,
    OBJECTIVES,
    OFFLOADS,
    OPTIM_TARGETS,
    OPTIMIZER_IMPLS,
    OPTIMIZERS,
    PACKINGS,
    PRECISIONS,
    QUANT_BACKENDS,
    QUANT_BITS,
    REF_DTYPES,
    REF_MODELS,
    REF_QUANTS,
    SEQ2SEQ_FAMILIES,
    SSM_FAMILIES,
    STACKS,
    TP_LAYOUTS,
    VENDORS,
    VLLM_MODES,
    WEIGHT_DTYPES,
    ZERO_STAGES,
    AcLayout,
    AdapterDtype,
    Attention,
    AttentionKind,
    CompileScope,
    DpoHead,
    Fp8Recipe,
    FsdpStrategy,
    GradSync,
    Head,
    HiddenAct,
    Kernels,
    KvCache,
    KvDtype,
    LogitsKept,
    LossName,
    Method,
    MlpKind,
    Mode,
    NormKind,
    Objective,
    Offload,
    OptimizerImpl,
    OptimizerName,
    OptimTargets,
    Packing,
    PrecisionName,
    QuantBackend,
    QuantBits,
    RefDtype,
    RefModel,
    RefQuant,
    StackName,
    TpLayout,
    Vendor,
    VllmMode,
    WeightDtype,
    ZeroStage,
    kernels_value,
    parse_axolotl_kernels,
    parse_kernels,
)

# Bounds as pydantic words them, so that a file and a flag get the same message:
# (operator, limit); "gt" 0 is a positive integer, "ge" 0 a non-negative one.
Bound = tuple[str, float]
_WORDS = {"gt": "greater than", "ge": "greater than or equal to", "lt": "less than", "le": "less than or equal to"}
_TESTS = {"gt": lambda v, x: v > x, "ge": lambda v, x: v >= x, "lt": lambda v, x: v < x, "le": lambda v, x: v <= x}


def choices_text(choices: tuple[Any, ...]) -> str:
    """`'a', 'b' or 'c'` (strings quoted, numbers bare), the way pydantic lists a Literal's values."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check(spec: Any) -> None:
    """Choices, integer/number types, bounds and string lengths of one spec's fields."""
    cls = type(spec)
    for name, allowed in cls.CHOICES.items():
        value = getattr(spec, name)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise SpecError(name, f"Input should be {choices_text(allowed)}")
    for name, bounds in cls.BOUNDS.items():
        value = getattr(spec, name)
        if value is None and name in cls.OPTIONAL:
            continue
        integer = name in cls.INTEGERS
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise SpecError(name, "Input should be a valid integer" if integer else "Input should be a valid number")
        if not integer and value != value:  # NaN
            raise SpecError(name, "Input should be a finite number")
        for op, limit in bounds:
            if not _TESTS[op](value, limit):
                raise SpecError(name, f"Input should be {_WORDS[op]} {_number_text(limit)}")
    for f in fields(spec):  # names are echoed in tables and errors: no newline, ESC or bidi control
        value = getattr(spec, f.name)
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str) and not text.isprintable():
                raise SpecError(f.name, f"String should have no control characters, got {text!r:.60}")
    for name, (low, high) in cls.LENGTHS.items():
        value = getattr(spec, name)
        if not isinstance(value, str):
            raise SpecError(name, "Input should be a valid string")
        if len(value) < low:
            raise SpecError(name, f"String should have at least {low} character{'s' if low > 1 else ''}")
        if len(value) > high:
            raise SpecError(name, f"String should have at most {high} characters")


POSITIVE: tuple[Bound, ...] = (("gt", 0),)
NON_NEGATIVE: tuple[Bound, ...] = (("ge", 0),)
FRACTION: tuple[Bound, ...] = (("ge", 0), ("lt", 1))
# A run's counts (batch, sequence, GPUs, rank...) at most 2^40 (~10^12): far beyond any real run, and it
# keeps every product of them (bytes ~ batch × seq × hidden × layers) an exact float when printed; an
# unbounded 10^300 overflowed the byte formatting (issue 19).
COUNT_CAP: Bound = ("le", 2**40)


def _check_pinpoints(v: VisionSpec) -> None:
    """LLaVA-NeXT's image_grid_pinpoints: (height, width) pairs of positive multiples of the tile (image_size)."""
    if v.kind != "llava_next":
        raise SpecError("vision", "grid_pinpoints is LLaVA-NeXT's (kind llava_next)")
    if not v.image_size:
        raise SpecError("vision", "a llava_next CLIP tower needs its image_size (the tile's side)")
    if not v.grid_pinpoints or len(v.grid_pinpoints) > 64:
        raise SpecError("vision", "a llava_next tower needs image_grid_pinpoints: 1 to 64 (height, width) pairs")
    for p in v.grid_pinpoints:
        if (not isinstance(p, tuple) or len(p) != 2
                or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 or x > 65_536 or x % v.image_size
                       for x in p)):
            raise SpecError("vision", f"image_grid_pinpoints entry {p!r}: give [height, width], positive multiples "
                            f"of the tower's image_size {v.image_size}")


# The modules --fsdp-units can wrap as their own FSDP units (torchtune tok_embeddings, output).
FSDP_UNIT_NAMES: tuple[str, ...] = ("embed_tokens", "lm_head")


@dataclass(frozen=True)
class VisionSpec:
    """A vision-language model's image side (memory/vision.py): the vision tower and the projector into the text
    model. LLaVA-1.5 (transformers models/llava/modeling_llava.py LlavaModel): a CLIP ViT tower
    (models/clip/modeling_clip.py CLIPVisionTransformer: patch Conv2d without bias, a class token, learned
    positions, pre and post LayerNorms, blocks of biased q/k/v/out_proj and fc1/fc2 with quick_gelu) and
    LlavaMultiModalProjector (linear_1 tower width -> text width, the act, linear_2 text -> text).
    """

    kind: str = "clip"
    num_layers: int = 24
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 336
    # LlavaConfig vision_feature_layer: the hidden state the projector reads (-2: the output of the last layer
    # but one; every layer still runs, transformers 5 capture_outputs keeps the one chosen).
    feature_layer: int = -2
    drop_cls: bool = True  # vision_feature_select_strategy "default": the class token's row is dropped
    projector_act: str = "gelu"  # LlavaConfig projector_hidden_act
    projector_bias: bool = True  # LlavaConfig multimodal_projector_bias
    # Gemma 3 (kind "siglip"; models/gemma3/modeling_gemma3.py Gemma3Model): a SigLIP tower
    # (models/siglip/modeling_siglip.py SiglipVisionModel, vision_use_head false: patch Conv2d with bias, learned
    # positions, no class token, no pre-norm, post_layernorm, gelu_pytorch_tanh MLP) whose last_hidden_state
    # Gemma3MultiModalProjector average-pools to mm_tokens_per_image tokens (Gemma3Config, 256), RMSNorms and
    # projects with mm_input_projection_weight (no bias). 0 for CLIP.
    mm_tokens_per_image: int = 0
    # Qwen2-VL / Qwen2.5-VL (kind qwen2_vl / qwen2_5_vl; transformers models/qwen2_vl/modeling_qwen2_vl.py
    # Qwen2VisionTransformerPretrainedModel, models/qwen2_5_vl/modeling_qwen2_5_vl.py
    # Qwen2_5_VisionTransformerPretrainedModel): a Conv3d patch embedding without bias over temporal_patch_size
    # frames of patch_size^2 pixels, no class token and no learned positions (2D rotary), blocks of a fused biased
    # qkv and proj, and the merger (PatchMerger: a norm, then Linear(width x merge^2 -> same), GELU,
    # Linear(-> out_hidden_size)) that plays the projector's part. image_size is 0 for them: dynamic
    # resolution, the image's own pixels (--image-size) make the tokens. Qwen2-VL: LayerNorm, fc1/fc2 with
    # quick_gelu, intermediate = embed_dim x mlp_ratio. Qwen2.5-VL: RMSNorm, a biased SwiGLU MLP, windowed
    # attention (window_size pixels a side) except in fullatt_block_indexes.
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 0  # the merger's output width (the text model's hidden size); 0 for CLIP
    window_size: int = 0  # Qwen2.5-VL's attention window in pixels (112); 0: full attention everywhere
    fullatt_block_indexes: tuple[int, ...] = ()
    # Llama-3.2-Vision (kind mllama; transformers models/mllama/modeling_mllama.py MllamaVisionModel,
    # MllamaTextModel): a local encoder of num_layers ungated blocks (bias-free q/k/v/o, biased fc1/fc2 with gelu,
    # LayerNorms) and a global encoder of num_global_layers gated blocks, on max_num_tiles tiles of image_size
    # pixels each (a class token per tile; tile and aspect-ratio embeddings for aspect_ratios layouts, row 0 the
    # padding id); the outputs of intermediate_layers_indices are concatenated to the global encoder's output
    # (vision_output_dim = width x (1 + len(indices))), and multi_modal_projector (Linear(vision_output_dim, text
    # width) with bias) makes the states the text model's cross_attention_layers attend to. Those text layers
    # (MllamaCrossAttentionDecoderLayer) have the self-attention layers' q/k/v/o and MLP, plus q_norm and k_norm
    # (RMSNorm of head_dim) and two tanh gates; MllamaTextModel's embed_tokens has 8 rows beyond vocab_size.
    num_global_layers: int = 0
    max_num_tiles: int = 0
    aspect_ratios: int = 0  # len(supported_aspect_ratios)
    intermediate_layers_indices: tuple[int, ...] = ()
    vision_output_dim: int = 0
    cross_attention_layers: tuple[int, ...] = ()

    # LLaVA-NeXT (kind llava_next; transformers models/llava_next/modeling_llava_next.py LlavaNextModel): LLaVA's
    # CLIP tower and projector, plus image_newline (a parameter of the text width), and "anyres": each image is
    # resized to the best of image_grid_pinpoints ((height, width) pairs, multiples of image_size), cut into tiles
    # of image_size plus a base image, every tile through the tower (memory/anyres.py, memory/llava_next.py); ()
    # for the others.
    grid_pinpoints: tuple[tuple[int, int], ...] = ()
    # Idefics3 / SmolVLM (kind idefics3; transformers models/idefics3/modeling_idefics3.py, models/smolvlm/
    # modeling_smolvlm.py): a SigLIP tower (Idefics3VisionTransformer: SiglipVisionEmbeddings' shape, learned
    # positions for image_size / patch_size squared patches, no class token, post_layernorm) run on every tile of
    # image_size px the processor cuts (core/memory/idefics3.py), then Idefics3Connector: pixel_shuffle folds
    # scale_factor x scale_factor patches into one row (width x scale_factor^2) and modality_projection.proj (no
    # bias) maps it to the text width. longest_edge: the processor's resize target (Idefics3ImageProcessor
    # size["longest_edge"], 4 x image_size by default); 0 for the other kinds.
    scale_factor: int = 0
    longest_edge: int = 0
    # Llama 4 (kind llama4; transformers models/llama4/modeling_llama4.py Llama4VisionModel,
    # Llama4MultiModalProjector; core/memory/llama4v.py): tiles of image_size px (the processor cuts each image into
    # up to max_num_tiles of them, plus a global tile when more than one), each through an unfold patch embedding
    # (Linear(3 x patch^2 -> width), no bias), a class token appended last, learned positions, layernorm_pre, blocks
    # of biased q/k/v/o with the 2-D vision RoPE and a biased fc1/fc2 GELU MLP, layernorm_post; the class row
    # dropped, Llama4VisionPixelShuffleMLP (pixel shuffle by scale_factor = 1 / pixel_shuffle_ratio, then
    # Llama4VisionMLP2: fc1 intermediate_size -> vision_output_dim, GELU, fc2 vision_output_dim ->
    # vision_output_dim, GELU, no biases) inside the tower; multi_modal_projector Linear(vision_output_dim, text
    # width, no bias) is the projector.

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"kind": ("clip", "siglip", "qwen2_vl", "qwen2_5_vl",
                                                              "idefics3", "llava_next",
                                                              "mllama", "llama4")}
    BOUNDS: ClassVar[dict[str, tuple[Bound, ...]]] = {
        **dict.fromkeys(("num_layers", "hidden_size", "intermediate_size", "num_attention_heads", "patch_size",
                         "temporal_patch_size", "spatial_merge_size"), (*POSITIVE, COUNT_CAP)),
        **dict.fromkeys(("image_size", "out_hidden_size", "window_size"), (*NON_NEGATIVE, COUNT_CAP)),
        "mm_tokens_per_image": (*NON_NEGATIVE, COUNT_CAP),
        **dict.fromkeys(("num_global_layers", "max_num_tiles", "aspect_ratios", "vision_output_dim"),
                        (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("scale_factor", "longest_edge"), (*NON_NEGATIVE, COUNT_CAP)),
    }
    INTEGERS: ClassVar[frozenset[str]] = frozenset(BOUNDS)
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    LENGTHS: ClassVar[dict[str, tuple[int, int]]] = {"projector_act": (1, 40)}

    @property
    def is_qwen(self) -> bool:
        """Qwen2-VL or Qwen2.5-VL: dynamic resolution, a merger instead of LLaVA's projector."""
        return self.kind in ("qwen2_vl", "qwen2_5_vl")

    @property
    def is_mllama(self) -> bool:
        """Llama-3.2-Vision: tiles through a local and a global encoder, read by cross-attention text layers."""
        return self.kind == "mllama"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fullatt_block_indexes", tuple(self.fullatt_block_indexes))  # a list from JSON
        if not isinstance(self.grid_pinpoints, (list, tuple)):
            raise SpecError("grid_pinpoints", "Input should be a list of [height, width] pairs")
        object.__setattr__(self, "grid_pinpoints", tuple(tuple(p) if isinstance(p, (list, tuple)) else p
                                                         for p in self.grid_pinpoints))
        object.__setattr__(self, "intermediate_layers_indices", tuple(self.intermediate_layers_indices))
        object.__setattr__(self, "cross_attention_layers", tuple(self.cross_attention_layers))
        _check(self)
        if self.kind == "llava_next" or self.grid_pinpoints:
            _check_pinpoints(self)
        if self.is_mllama:
            self._check_mllama()
        elif self.kind == "llama4":
            self._check_llama4()
        elif (self.num_global_layers or self.max_num_tiles or self.aspect_ratios or self.vision_output_dim
              or self.intermediate_layers_indices or self.cross_attention_layers):
            raise SpecError("vision", "num_global_layers, max_num_tiles, aspect_ratios, intermediate_layers_indices, "
                            "vision_output_dim and cross_attention_layers are Llama-3.2-Vision's (kind mllama)")
        if self.is_qwen:
            if self.image_size or not self.out_hidden_size:
                raise SpecError("vision", f"a {self.kind} tower has no fixed image_size (give 0: dynamic "
                                "resolution) and needs out_hidden_size, the merger's output width")
            if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_layers
                   for i in self.fullatt_block_indexes):
                raise SpecError("vision", f"fullatt_block_indexes must be layer indexes below {self.num_layers}")
            if self.window_size % (self.patch_size * self.spatial_merge_size):
                raise SpecError("vision", f"window_size {self.window_size} is not a multiple of patch_size x "
                                "spatial_merge_size")
        elif not self.image_size:
            raise SpecError("vision", "a CLIP tower needs its image_size")
        # Idefics3: SmolVLM's 384 px tiles over 14 px patches: the stride-14 Conv2d (and the processor's patch mask
        # unfold) take 27 a side and drop the last 6 px, so only the floor counts
        if not self.is_qwen and self.kind != "idefics3" and self.image_size % self.patch_size:
            raise SpecError("vision", f"image_size {self.image_size} is not a multiple of patch_size "
                            f"{self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise SpecError("vision", "the vision hidden_size is not divisible by its num_attention_heads")
        if not self.is_qwen and (not -self.num_layers <= self.feature_layer <= self.num_layers
                                 or self.feature_layer == 0):  # Qwen-VL's merger reads the last block
            raise SpecError("vision", f"vision_feature_layer {self.feature_layer} is outside the tower's "
                            f"{self.num_layers} layers")
        if self.kind == "siglip":
            # Gemma3MultiModalProjector: tokens_per_side = sqrt(mm_tokens_per_image), kernel_size = patches per side
            # // tokens_per_side, AvgPool2d(kernel, stride=kernel) over the patch grid
            side = self.image_size // self.patch_size
            per_side = math.isqrt(self.mm_tokens_per_image)
            if per_side * per_side != self.mm_tokens_per_image or per_side == 0 or side % per_side:
                raise SpecError("vision", f"mm_tokens_per_image {self.mm_tokens_per_image} must be a square whose "
                                f"side divides the {side} x {side} patch grid (Gemma3MultiModalProjector's avg_pool)")
            if self.feature_layer != -1:
                raise SpecError("vision", "a SigLIP tower (Gemma 3) feeds its last hidden state to the projector: "
                                "feature_layer must be -1")
        elif self.mm_tokens_per_image:
            raise SpecError("vision", "mm_tokens_per_image is Gemma 3's (kind siglip); a CLIP tower's image tokens "
                            "are its patches")
        if (self.scale_factor and self.kind not in ("idefics3", "llama4")) \
                or (self.longest_edge and self.kind != "idefics3"):
            raise SpecError("vision", "scale_factor and longest_edge are Idefics3's (kind idefics3); scale_factor "
                            "is Llama 4's too (kind llama4)")
        if self.kind == "idefics3":
            # Idefics3Connector.pixel_shuffle reshapes the side x side patch grid into side / scale_factor rows of
            # width x scale_factor^2 (its int() would drop a remainder; the model's image_seq_len assumes none)
            side = self.image_size // self.patch_size
            if not self.scale_factor or side % self.scale_factor:
                raise SpecError("vision", f"scale_factor {self.scale_factor} must divide the {side} x {side} patch "
                                "grid (Idefics3Connector's pixel shuffle)")
            if self.longest_edge < self.image_size:
                raise SpecError("vision", f"longest_edge {self.longest_edge} (the processor's resize target) must be "
                                f"at least the tile size image_size {self.image_size}")
            if self.feature_layer != -1 or self.drop_cls:
                raise SpecError("vision", "an Idefics3 tower feeds its last hidden state to the connector: "
                                "feature_layer -1, drop_cls false")

    def _check_llama4(self) -> None:
        """Llama 4's cross-field checks (configuration_llama4.py Llama4VisionConfig; modeling_llama4.py)."""
        side = self.image_size // self.patch_size
        if not self.scale_factor or side % self.scale_factor:
            # pixel_shuffle (modeling_llama4.py) reshapes the side x side patch grid by pixel_shuffle_ratio
            raise SpecError("vision", f"scale_factor {self.scale_factor} (1 / pixel_shuffle_ratio) must divide the "
                            f"{side} x {side} patch grid (Llama4VisionPixelShuffleMLP)")
        if self.hidden_size * self.scale_factor ** 2 != self.intermediate_size:
            # Llama4VisionMLP2.fc1 is Linear(intermediate_size, projector_input_dim) on the shuffled rows
            raise SpecError("vision", f"the pixel-shuffled width {self.hidden_size} x {self.scale_factor}^2 must be "
                            f"the tower's intermediate_size {self.intermediate_size} (Llama4VisionMLP2.fc1's input)")
        if not self.vision_output_dim or not self.max_num_tiles or self.feature_layer != -1 or not self.drop_cls:
            raise SpecError("vision", "a Llama 4 tower needs vision_output_dim (the adapter's and projector's "
                            "width), max_num_tiles (the processor's max_patches) and feature_layer -1, drop_cls true")
        if (self.num_global_layers or self.aspect_ratios or self.intermediate_layers_indices
                or self.cross_attention_layers):
            raise SpecError("vision", "num_global_layers, aspect_ratios, intermediate_layers_indices and "
                            "cross_attention_layers are Llama-3.2-Vision's (kind mllama)")

    def _check_mllama(self) -> None:
        """Llama-3.2-Vision's cross-field checks (configuration_mllama.py MllamaVisionConfig / MllamaTextConfig)."""
        if not (self.max_num_tiles and self.aspect_ratios and self.cross_attention_layers):
            raise SpecError("vision", "a Llama-3.2-Vision (mllama) tower needs max_num_tiles, aspect_ratios and the "
                            "text model's cross_attention_layers")
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_layers
               for i in self.intermediate_layers_indices):
            raise SpecError("vision", f"intermediate_layers_indices must be layer indexes below {self.num_layers}")
        if self.vision_output_dim != self.hidden_size * (1 + len(self.intermediate_layers_indices)):
            # MllamaVisionModel.forward concatenates the global output and one hidden state per index
            raise SpecError("vision", f"vision_output_dim {self.vision_output_dim} is not the tower width "
                            f"{self.hidden_size} x (1 + {len(self.intermediate_layers_indices)} intermediate layers)")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.cross_attention_layers) \
                or len(set(self.cross_attention_layers)) != len(self.cross_attention_layers):
            raise SpecError("vision", "cross_attention_layers must be distinct text layer indexes")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer as its config.json describes it, or a bare parameter count."""

    name: str
    source: str  # where the numbers come from (a config.json URL)
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    family: str = "llama"

    # A preset without an architecture gives its total and, optionally, activation bytes per sample.
    parameters: int | None = None
    activation_bytes_per_sample: int | None = None

    vocab_size: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None  # None: multi-head attention (= num_attention_heads)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int | None = None

    tie_word_embeddings: bool = False
    mlp: MlpKind = "gated"  # gated: gate_proj, up_proj, down_proj (SwiGLU/GeGLU); plain: fc1, fc2
    norm: NormKind = "rmsnorm"  # layernorm has a bias vector as well as a weight
    norms_per_layer: int = 2  # Gemma 2/3 have 4; Falcon-7B and Phi-2 have 1
    final_norm: bool = True
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma 3, OLMo 2)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    fused_qkv: bool = False  # one qkv projection module (GPT-2 c_attn, Phi-3 qkv_proj)
    fused_gate_up: bool = False  # one gate_up projection module (Phi-3)
    learned_position_embeddings: bool = False  # GPT-2-style absolute position table of max_position_embeddings
    parallel_residual: bool = False  # attention and MLP read the same normed input (GPT-J, NeoX, Falcon, Phi-2)
    sliding_window: int | None = None
    hidden_act: HiddenAct = "silu"  # config.json hidden_act (vocab.HIDDEN_ACTS; others are refused)
    dropout: float = 0.0  # residual/embedding dropout (GPT-2: 0.1)
    norm_fp32_weight_mul: bool = False  # the RMSNorm weight multiplies in fp32 (Gemma's (1 + w), OLMo 2's w)
    embedding_norm: bool = False  # a norm right after the token embedding (BLOOM word_embeddings_layernorm)
    qk_norm_full: bool = False  # q/k norms over the whole projection, not per head (OLMo 2 q_norm, k_norm)
    post_norms: bool = False  # the block's norms follow attention and MLP, none precede them (OLMo 2)
    alibi: bool = False  # ALiBi position bias (BLOOM): no rotary tables, and an eager-only attention (baddbmm)
    # Encoders (vocab.ENCODER_FAMILIES, memory/encoder.py): token-type embeddings (BERT 2, RoBERTa 1, DistilBERT
    # none) and the task head the run chose (memory/encoder.py for_run sets both from --head / --num-labels:
    # a sequence classifier of num_labels, or the masked-LM head). Decoders ignore them. num_labels 0: not chosen
    # yet, counted as transformers' default of 2 (PretrainedConfig num_labels).
    type_vocab_size: int = 0
    mlm_head: bool = False
    token_head: bool = False  # --head token-cls: AutoModelForTokenClassification (memory/encoder.py)
    # ModernBERT (modeling_modernbert.py): LayerNorms without bias (config norm_bias false), and the sequence
    # classifier's pooling (classifier_pooling "mean" averages every position; "cls" reads the first token).
    norm_without_bias: bool = False
    mean_pooling: bool = False
    # DeBERTa-v2/v3 (modeling_deberta_v2.py DebertaV2Encoder): rows of the shared rel_embeddings table
    # (2 x position_buckets, 512 in every v3 config; 0: none), followed by its own LayerNorm (norm_rel_ebd).
    rel_embedding_rows: int = 0
    num_labels: int = 0
    # Encoder-decoders (vocab.SEQ2SEQ_FAMILIES, memory/seq2seq.py): num_layers is the encoder's layer count and
    # decoder_layers the decoder's (0: not an encoder-decoder, every other family). T5's relative position bias:
    # an Embedding(buckets, heads) in the first block of each stack (modeling_t5.py T5Attention
    # relative_attention_bias; 0: none). T5 with a tied head scales the decoder output by d_model**-0.5
    # (T5Config scale_decoder_outputs: tie_word_embeddings not false in the config.json). BART's
    # final_logits_bias: a (1, vocab) buffer added to the logits (modeling_bart.py BartForConditionalGeneration).
    decoder_layers: int = 0
    relative_attention_buckets: int = 0
    decoder_output_scale: bool = False
    final_logits_bias: bool = False
    # Dropout inside the blocks besides the residual `dropout`: on the attention probabilities (eager attention
    # saves its mask; SDPA's kernels draw it from a seed) and after the MLP activation (a mask of the MLP width).
    # T5 uses dropout_rate for all three; BART has attention_dropout and activation_dropout of its own.
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0

    # Mixture of experts (0 experts: a dense model).
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int | None = None
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int | None = None
    first_dense_layers: int = 0
    shared_expert_gate: bool = False  # Qwen2-MoE: a Linear(hidden, 1) gate on the shared expert
    router_bias: bool = False  # DeepSeek-V3 noaux_tc: e_score_correction_bias (num_experts) per MoE layer
    # config.json output_router_logits: the ForCausalLM's forward returns every MoE layer's router logits and adds
    # the load-balancing aux loss (memory/router_aux.py); TrainingSpec.router_aux_loss sets the same
    output_router_logits: bool = False
    # DeepSeek's grouped router (configuration_deepseek_v3.py n_group / topk_group; V2's with topk_method
    # "group_limited_greedy"): the experts split into expert_groups groups, each token routed within its
    # topk_expert_groups best groups (1 / 1: one group, a plain top-k)
    expert_groups: int = 1
    topk_expert_groups: int = 1
    # gpt-oss (modeling_gpt_oss.py GptOssAttention.sinks): one learned logit per attention head, per layer,
    # concatenated to the attention scores before the softmax (eager_attention_forward).
    attention_sinks: bool = False
    # Tokens each expert may take, as a multiple of its even share (Switch Transformer, arXiv:2101.03961
    # §2.1); None: dropless routing (Mixtral, Qwen-MoE and DeepSeek in transformers).
    moe_capacity_factor: float | None = None
    # Llama 4 (transformers models/llama4/modeling_llama4.py, configuration_llama4.py Llama4TextConfig): MoE in
    # layers step-1, 2 x step-1, ... (interleave_moe_layer_step: Scout 1, Maverick 2; the others a dense MLP of
    # intermediate_size), a NoPE global-attention layer every nope_layer_interval layers (no_rope_layer_interval 4),
    # the RoPE layers attending within chunks of attention_chunk_size positions (0: none), the weightless
    # Llama4TextL2Norm on q and k in the RoPE layers (use_qk_norm), and the NoPE layers' query temperature
    # (attn_temperature_tuning).
    moe_layer_interval: int = 0  # 0 or 1: every layer
    nope_layer_interval: int = 0
    attention_chunk_size: int = 0
    qk_l2_norm: bool = False
    attn_temperature_tuning: bool = False

    # Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1; modeling_deepseek_v3.py).
    attention_kind: AttentionKind = "standard"
    q_lora_rank: int | None = None  # None: a plain q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None

    # Local/global attention: how many layers use the sliding window (None: all, when sliding_window
    # is set). Gemma 2 alternates 1:1, Gemma 3 has 5 local per global layer (config.json layer_types).
    sliding_window_layers: int | None = None

    # State-space models (Mamba, memory/ssm.py; transformers modeling_mamba.py MambaMixer). ssm_state_size 0: not
    # a state-space model. intermediate_size is the mixer's expand x hidden_size; num_attention_heads is not needed.
    # The reader and the presets give Mamba's values (MambaConfig: conv_kernel 4, use_conv_bias and residual_in_fp32
    # true); the defaults are those of a model without an SSM.
    ssm_state_size: int = 0  # config state_size (N): the SSM state per channel
    ssm_conv_kernel: int = 0  # config conv_kernel: the depthwise causal conv1d's width
    ssm_dt_rank: int = 0  # config time_step_rank (the reader resolves "auto" to ceil(hidden_size / 16))
    ssm_conv_bias: bool = False  # config use_conv_bias: conv1d has a bias
    ssm_proj_bias: bool = False  # config use_bias: in_proj and out_proj have biases
    ssm_residual_fp32: bool = False  # config residual_in_fp32: MambaBlock adds the residual in fp32
    # Mamba-2 (transformers modeling_mamba2.py Mamba2Mixer: the chunked SSD scan); 0 for Mamba 1. num_heads is
    # intermediate_size / ssm_head_dim (Mamba2Config.validate_architecture).
    ssm_head_dim: int = 0  # config head_dim (P): channels per SSM head
    ssm_n_groups: int = 0  # config n_groups: B and C are shared by num_heads / n_groups heads
    ssm_chunk_size: int = 0  # config chunk_size: the SSD scan pads the sequence to a multiple of it
    # Falcon-H1 (transformers modeling_falcon_h1.py FalconH1DecoderLayer: attention and a Mamba-2 mixer side by side
    # on the same normed input, then the MLP). The decoder fields above are its attention's and MLP's; the mixer's
    # shape is here (0: no such mixer), its conv width, groups, chunk and biases in ssm_conv_kernel, ssm_n_groups,
    # ssm_chunk_size, ssm_conv_bias (mamba_conv_bias) and ssm_proj_bias (in_proj: mamba_proj_bias; out_proj:
    # projectors_bias is mixer_out_bias). ssm_state_size stays 0: the model is not a pure state-space model.
    mixer_intermediate_size: int = 0  # config mamba_d_ssm (or mamba_expand x hidden_size)
    mixer_state_size: int = 0  # config mamba_d_state
    mixer_head_dim: int = 0  # config mamba_d_head (mamba_n_heads = mixer_intermediate_size / mixer_head_dim)
    mixer_gated_norm: bool = False  # config mamba_rms_norm: FalconH1RMSNormGated after the scan, else y x silu(z)
    mixer_out_bias: bool = False  # config projectors_bias: the mixer's out_proj has a bias
    # Jamba (transformers modeling_jamba.py JambaModel: layers_block_type / layers_num_experts). Layer i is an
    # attention layer (JambaAttentionDecoderLayer) when i % attn_layer_period == attn_layer_offset, else a Mamba
    # layer (JambaMambaDecoderLayer: a Mamba-1 JambaMambaMixer with RMSNorms on dt, B and C); its feed-forward is a
    # JambaSparseMoeBlock when i % expert_layer_period == expert_layer_offset, else a dense JambaMLP. The mixer's
    # width is jamba_mixer_size (mamba_expand x hidden_size), its state jamba_state_size (mamba_d_state); its conv
    # width, dt rank and biases are ssm_conv_kernel, ssm_dt_rank, ssm_conv_bias and ssm_proj_bias (in_proj and
    # out_proj). 0 periods: not a Jamba model.
    attn_layer_period: int = 0
    attn_layer_offset: int = 0
    expert_layer_period: int = 0
    expert_layer_offset: int = 0
    jamba_mixer_size: int = 0
    jamba_state_size: int = 0
    # Bamba (family "bamba"; transformers modeling_bamba.py BambaDecoderLayer): each layer is EITHER a Mamba-2 mixer
    # (the mixer_* fields) OR attention, then an MLP; these are the attention layers' indexes (attn_layer_indices),
    # every other layer is a mixer layer.
    attention_layers: tuple[int, ...] = ()
    # Zamba2 (family "zamba2"; transformers modeling_zamba2.py Zamba2Model): every layer runs a Mamba-2 mixer (the
    # mixer_* fields; Zamba2MambaDecoderLayer); at zamba_hybrid_layers (hybrid_layer_ids) a Zamba2HybridLayer first
    # runs a shared Zamba2AttentionDecoderLayer (attention over concat(hidden, embeddings): 2 x hidden_size wide,
    # head_dim 2 x hidden / heads, then a gated MLP of intermediate_size) and its own Linear(hidden, hidden). The
    # shared blocks are zamba_mem_blocks (num_mem_blocks) weight sets taken in turn; each invocation has its own
    # rank-zamba_adapter_rank projector on the MLP's gate_up_proj and, with zamba_attention_adapters
    # (use_shared_attention_adapter), on q, k and v. zamba_mem_rope (use_mem_rope): RoPE in the shared attention.
    zamba_hybrid_layers: tuple[int, ...] = ()
    zamba_mem_blocks: int = 0
    zamba_adapter_rank: int = 0
    zamba_attention_adapters: bool = False
    zamba_mem_rope: bool = False
    # Nemotron-H (family "nemotron_h"; transformers modeling_nemotron_h.py NemotronHBlock): every layer is ONE block,
    # its norm and one mixer: "M" a Mamba-2 mixer (the mixer_* fields), "*" attention (no rotary embedding), "-" an
    # MLP (up_proj, relu2, down_proj), in config hybrid_override_pattern's order, bottom first.
    hybrid_pattern: str = ""
    # Nemotron 3 Super's latent MoE (modeling_nemotron_h.py NemotronHMoE, config moe_latent_size): fc1_latent_proj
    # (hidden -> latent) before the routed experts, which run at the latent width (NemotronHExperts' input_dim), and
    # fc2_latent_proj (latent -> hidden) after them; None: the experts run at hidden_size (Nemotron 3 Nano)
    moe_latent_size: int | None = None
    # The checkpoint's multi-token-prediction layers (config num_nextn_predict_layers): NemotronHForCausalLM builds
    # none and drops their mtp.* weights on load (_keys_to_ignore_on_load_unexpected): never counted, only noted
    checkpoint_mtp_layers: int = 0
    # NemotronHTopkRouter with norm_topk_prob false: the top-k weights only scaled by routed_scaling_factor, not
    # divided by their sum (`topk_weights /= denominator`, which keeps both for backward)
    topk_unnormalized: bool = False

    # Vision-language models (memory/vision.py): the vision tower and projector; None for a text model. The text
    # fields above are the language model's (LLaVA's text_config).
    vision: VisionSpec | None = None
    # The course texts' classics (vocab.CLASSIC_FAMILIES, core/memory/classic.py). ResNet (torchvision
    # models/resnet.py ResNet): blocks per stage (resnet50: 3, 4, 6, 3), Bottleneck or BasicBlock, the grouped 3x3
    # conv's groups and width_per_group (ResNeXt 32 x 4, Wide ResNet 128), and fc's num_classes. LSTM language
    # model (pytorch/examples word_language_model RNNModel): rnn_input_size is the embedding width (emsize);
    # hidden_size, num_layers, vocab_size, dropout and tie_word_embeddings as their names say.
    conv_blocks: tuple[int, ...] = ()
    conv_bottleneck: bool = False
    conv_groups: int = 0  # 0: torchvision's default, 1
    conv_width_per_group: int = 0  # 0: torchvision's default, 64
    num_classes: int = 0
    rnn_input_size: int = 0

    # The published total, for the preset test (not used by the arithmetic).
    published_parameters: int | None = None
    published_parameters_source: str | None = None

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "mlp": MLP_KINDS, "norm": NORM_KINDS, "attention_kind": ATTENTION_KINDS, "hidden_act": HIDDEN_ACTS,
    }
    BOUNDS: ClassVar[dict[str, tuple[Bound, ...]]] = {
        **dict.fromkeys(("parameters", "vocab_size", "hidden_size", "intermediate_size", "num_layers",
                         "num_attention_heads", "num_kv_heads", "head_dim", "max_position_embeddings",
                         "sliding_window", "moe_intermediate_size", "shared_expert_intermediate_size",
                         "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                         "published_parameters", "expert_groups", "topk_expert_groups", "moe_latent_size"), POSITIVE),
        "num_labels": (*NON_NEGATIVE, COUNT_CAP),
        "type_vocab_size": (*NON_NEGATIVE, COUNT_CAP),
        **dict.fromkeys(("decoder_layers", "relative_attention_buckets", "rel_embedding_rows"),
                        (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("activation_bytes_per_sample", "norms_per_layer", "num_experts", "experts_per_token",
                         "num_shared_experts", "first_dense_layers", "sliding_window_layers", "nope_layer_interval",
                         "attention_chunk_size", "moe_layer_interval", "attn_layer_offset",
                         "expert_layer_offset", "checkpoint_mtp_layers"), NON_NEGATIVE),
        **dict.fromkeys(("attn_layer_period", "expert_layer_period", "jamba_mixer_size", "jamba_state_size"),
                        (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("ssm_state_size", "ssm_dt_rank", "ssm_conv_kernel", "ssm_head_dim", "ssm_n_groups",
                         "ssm_chunk_size", "mixer_intermediate_size", "mixer_state_size", "mixer_head_dim"),
                        (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("num_classes", "rnn_input_size"), (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("zamba_mem_blocks", "zamba_adapter_rank"), (*NON_NEGATIVE, COUNT_CAP)),
        **dict.fromkeys(("conv_groups", "conv_width_per_group"), (*NON_NEGATIVE, COUNT_CAP)),
        "dropout": FRACTION,
        **dict.fromkeys(("attention_dropout", "activation_dropout"), FRACTION),
        "moe_capacity_factor": POSITIVE,
    }
    INTEGERS: ClassVar[frozenset[str]] = frozenset(BOUNDS) - {"dropout", "moe_capacity_factor", "attention_dropout",
                                                              "activation_dropout"}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        ("parameters", "activation_bytes_per_sample", "vocab_size", "hidden_size", "intermediate_size",
         "num_layers", "num_attention_heads", "num_kv_heads", "head_dim", "max_position_embeddings",
         "sliding_window", "moe_intermediate_size", "shared_expert_intermediate_size", "moe_capacity_factor",
         "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
         "sliding_window_layers", "published_parameters", "moe_latent_size"))
    LENGTHS: ClassVar[dict[str, tuple[int, int]]] = {"name": (1, 100), "source": (1, 10_000)}

    def __post_init__(self) -> None:
        _check(self)
        if self.family in CLASSIC_FAMILIES:  # ResNet / LSTM: their own fields (core/memory/classic.py)
            _check_classic(self)
            return
        if self.vision is not None and self.vision.is_mllama and self.num_layers is not None \
                and max(self.vision.cross_attention_layers) >= self.num_layers:
            raise SpecError("vision", f"cross_attention_layers {list(self.vision.cross_attention_layers)} must be "
                            f"text layer indexes below num_layers {self.num_layers}")
        arch: tuple[str, ...] = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads")
        if self.ssm_state_size:  # a state-space model has no attention heads (memory/ssm.py)
            arch = arch[:-1]
            if not self.ssm_conv_kernel:
                raise SpecError("ssm_conv_kernel", "a state-space model needs its conv1d width (Mamba: 4)")
            if self.ssm_head_dim or self.ssm_n_groups or self.ssm_chunk_size:  # Mamba-2 (memory/ssm.py)
                _check_mamba2(self)
        given = [f for f in arch if getattr(self, f) is not None]
        if not given and self.parameters is None:
            raise SpecError("", f"give the architecture ({', '.join(arch)}) or a `parameters` count")
        if given and len(given) < len(arch):
            missing = [f for f in arch if f not in given]
            raise SpecError("", f"incomplete architecture: missing {', '.join(missing)}")
        if given:
            heads = self.num_attention_heads or 1
            if self.num_kv_heads is not None and heads % self.num_kv_heads:
                raise SpecError("", f"num_attention_heads {heads} is not a multiple of num_kv_heads "
                                f"{self.num_kv_heads}")
            if self.head_dim is None and (self.hidden_size or 0) % heads:
                raise SpecError("", "hidden_size is not divisible by num_attention_heads: give head_dim")
            if self.learned_position_embeddings and self.max_position_embeddings is None:
                raise SpecError("", "learned_position_embeddings needs max_position_embeddings")
            if self.num_experts and not self.experts_per_token:
                raise SpecError("", "a mixture-of-experts model needs experts_per_token")
            if self.experts_per_token > self.num_experts:
                raise SpecError("", "experts_per_token exceeds num_experts")
            _check_expert_groups(self)
            if self.attention_kind == "mla":
                mla = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
                missing = [f for f in mla if getattr(self, f) is None]
                if missing:
                    raise SpecError("", f"attention_kind mla needs {', '.join(missing)}")
            if self.sliding_window_layers is not None and self.sliding_window_layers > (self.num_layers or 0):
                raise SpecError("", "sliding_window_layers exceeds num_layers")
        if self.mixer_intermediate_size or self.mixer_state_size or self.mixer_head_dim:
            _check_hybrid_mixer(self)
        if self.attn_layer_period or self.jamba_mixer_size or self.expert_layer_period:
            _check_jamba(self)
        if self.attention_layers or self.family in ("bamba", "granitemoehybrid"):
            _check_attention_layers(self)
        if self.family == "zamba2" or self.zamba_hybrid_layers or self.zamba_mem_blocks:
            _check_zamba2(self)
        if self.hybrid_pattern or self.family == "nemotron_h" or self.moe_latent_size is not None \
                or self.checkpoint_mtp_layers or self.topk_unnormalized:
            _check_nemotron_h(self)

    @property
    def has_architecture(self) -> bool:
        """A transformer's (or Mamba's) architecture; the classics (ResNet, LSTM) have their own (memory/classic.py)."""
        return self.hidden_size is not None and self.family not in CLASSIC_FAMILIES


def _check_expert_groups(m: ModelSpec) -> None:
    """DeepSeek's grouped router: whole groups of experts (DeepseekV3TopkRouter views the scores as (tokens,
    n_group, experts // n_group) and takes each group's top 2), no more groups kept than there are."""
    if m.expert_groups == 1 and m.topk_expert_groups == 1 or not m.num_experts:  # (a dense model has no router)
        return
    # (Nemotron-H's NemotronHTopkRouter is DeepseekV3TopkRouter line for line: modeling_nemotron_h.py)
    v3 = m.family in ("deepseek_v3", "nemotron_h")
    if m.family not in ("deepseek_v2", "deepseek_v3", "nemotron_h"):
        raise SpecError("expert_groups", "grouped routing is modelled for DeepSeek-V2/V3 and Nemotron-H only, not "
                        f"{m.family}: give expert_groups 1 and topk_expert_groups 1")
    if m.topk_expert_groups > m.expert_groups:
        raise SpecError("topk_expert_groups", f"{m.topk_expert_groups} exceeds expert_groups {m.expert_groups}")
    per_group = m.num_experts // m.expert_groups if m.expert_groups else 0
    if m.num_experts % m.expert_groups or (v3 and per_group < 2):
        raise SpecError("expert_groups", f"num_experts {m.num_experts} does not split into {m.expert_groups} "
                        "groups" + (" of 2 or more (DeepSeek-V3's router sums each group's top 2)" if v3 else ""))
    if m.topk_expert_groups * per_group < m.experts_per_token:
        raise SpecError("topk_expert_groups", f"{m.topk_expert_groups} groups of {per_group} experts hold fewer than "
                        f"experts_per_token {m.experts_per_token}")


def _check_attention_layers(m: ModelSpec) -> None:
    """Bamba's attn_layer_indices (configuration_bamba.py layers_block_type: the other layers are Mamba-2 mixers)."""
    if m.family not in ("bamba", "granitemoehybrid"):  # GraniteMoeHybrid: layer_types' "attention" entries
        raise SpecError("attention_layers", "attention_layers is read for families bamba and granitemoehybrid only")
    if not m.mixer_intermediate_size:
        raise SpecError("mixer_intermediate_size", "a Bamba model needs its Mamba-2 mixer's shape (mixer_* fields)")
    n = m.num_layers or 0
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n for i in m.attention_layers) \
            or len(set(m.attention_layers)) != len(m.attention_layers):
        raise SpecError("attention_layers", f"attention_layers must be distinct layer indexes below num_layers {n} "
                        "(Bamba-9B: [9, 18, 27])")


def _check_zamba2(m: ModelSpec) -> None:
    """Zamba2's layout (configuration_zamba2.py: hybrid_layer_ids from layers_block_type; modeling_zamba2.py
    Zamba2Attention: q, k, v and o are head_dim = 2 x hidden_size / heads wide per head, and with
    use_shared_attention_adapter each k / v projector adds a 2 x hidden_size wide output to k_proj's, so the KV heads
    must be the heads)."""
    if m.family != "zamba2":
        raise SpecError("zamba_mem_blocks", "the zamba_* fields are read for family zamba2 only")
    if not m.mixer_intermediate_size or not m.zamba_mem_blocks or not m.zamba_adapter_rank:
        raise SpecError("zamba_mem_blocks", "a Zamba2 model needs its Mamba-2 mixer (mixer_* fields), "
                        "zamba_mem_blocks and zamba_adapter_rank (Zamba2-2.7B: 2 and 128)")
    n = m.num_layers or 0
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n for i in m.zamba_hybrid_layers) \
            or list(m.zamba_hybrid_layers) != sorted(set(m.zamba_hybrid_layers)):
        raise SpecError("zamba_hybrid_layers", f"zamba_hybrid_layers must be increasing layer indexes below num_layers "
                        f"{n} (Zamba2-2.7B: [6, 12, 18, 24, 30, 36, 42, 47, 51])")
    heads, hidden = m.num_attention_heads or 0, m.hidden_size or 0
    if heads and (2 * hidden % heads or m.head_dim != 2 * hidden // heads):
        raise SpecError("head_dim", f"Zamba2's attention head_dim is 2 x hidden_size / num_attention_heads "
                        f"({2 * hidden} / {heads}); give head_dim {2 * hidden // heads if heads else 0}")
    if m.zamba_attention_adapters and m.num_kv_heads not in (None, heads):
        raise SpecError("num_kv_heads", "Zamba2's shared attention adapters add a 2 x hidden_size wide output to "
                        "k_proj's and v_proj's: num_kv_heads must equal num_attention_heads")


def _check_nemotron_h(m: ModelSpec) -> None:
    """Nemotron-H's layer pattern (configuration_nemotron_h.py _pattern_to_list: M, *, -, E: NemotronHMoE)."""
    if m.family != "nemotron_h":
        raise SpecError("hybrid_pattern", "hybrid_pattern is read for family nemotron_h only")
    if not isinstance(m.hybrid_pattern, str) or len(m.hybrid_pattern) != (m.num_layers or 0) \
            or set(m.hybrid_pattern) - set("M*-E"):
        raise SpecError("hybrid_pattern", f"hybrid_pattern must be num_layers ({m.num_layers}) characters of M "
                        "(Mamba-2), * (attention), - (MLP) and E (MoE) (Nemotron-H-8B: M-M-M-M*-M-...)")
    if ("E" in m.hybrid_pattern) != bool(m.num_experts):
        raise SpecError("num_experts", "a Nemotron-H model has routed experts exactly when hybrid_pattern has E "
                        "layers (Nemotron 3 Nano: num_experts 128, MEMEM*E...)")
    if m.topk_unnormalized and m.family != "nemotron_h":
        raise SpecError("topk_unnormalized", "topk_unnormalized is read for family nemotron_h only")
    if m.checkpoint_mtp_layers and m.family != "nemotron_h":
        raise SpecError("checkpoint_mtp_layers", "checkpoint_mtp_layers is read for family nemotron_h only")
    if m.moe_latent_size is not None and "E" not in m.hybrid_pattern:
        raise SpecError("moe_latent_size", "moe_latent_size is the latent width of Nemotron-H's E (MoE) layers; "
                        "drop it for a model without them")
    if "M" in m.hybrid_pattern and not m.mixer_intermediate_size:
        raise SpecError("mixer_intermediate_size", "a Nemotron-H model with M layers needs its Mamba-2 mixer's shape "
                        "(mixer_* fields)")


def _check_hybrid_mixer(m: ModelSpec) -> None:
    """Falcon-H1's Mamba-2 mixer (configuration_falcon_h1.py validate_architecture: mamba_n_heads x mamba_d_head =
    the mixer's intermediate size; FalconH1Mixer splits B and C into mamba_n_groups groups)."""
    need = ("mixer_intermediate_size", "mixer_state_size", "mixer_head_dim", "ssm_conv_kernel", "ssm_n_groups",
            "ssm_chunk_size")
    for f in need:
        if not getattr(m, f):
            raise SpecError(f, f"a hybrid's Mamba-2 mixer needs {', '.join(need)} (Falcon-H1-0.5B: 1536, 128, 64, 4, "
                            "1, 128)")
    if m.ssm_state_size:
        raise SpecError("ssm_state_size", "a hybrid's mixer state is mixer_state_size; ssm_state_size is for a pure "
                        "state-space model")
    if m.mixer_intermediate_size % m.mixer_head_dim:
        raise SpecError("mixer_head_dim", f"mixer_intermediate_size {m.mixer_intermediate_size} is not a multiple of "
                        f"mixer_head_dim {m.mixer_head_dim}")
    if (m.mixer_intermediate_size // m.mixer_head_dim) % m.ssm_n_groups:
        raise SpecError("ssm_n_groups", f"the mixer's heads ({m.mixer_intermediate_size // m.mixer_head_dim}) are "
                        f"not a multiple of ssm_n_groups {m.ssm_n_groups}")


def _check_jamba(m: ModelSpec) -> None:
    """Jamba's layout (configuration_jamba.py validate_architecture: each offset below its period) and its mixer."""
    for f in ("attn_layer_period", "expert_layer_period", "jamba_mixer_size", "jamba_state_size", "ssm_conv_kernel",
              "ssm_dt_rank"):
        if not getattr(m, f):
            raise SpecError(f, "a Jamba model needs attn_layer_period, expert_layer_period, jamba_mixer_size, "
                            "jamba_state_size, ssm_conv_kernel and ssm_dt_rank (Jamba-v0.1: 8, 2, 8192, 16, 4, 256)")
    if m.attn_layer_offset >= m.attn_layer_period:
        raise SpecError("attn_layer_offset", f"attn_layer_offset {m.attn_layer_offset} must be below "
                        f"attn_layer_period {m.attn_layer_period}")
    if m.expert_layer_offset >= m.expert_layer_period:
        raise SpecError("expert_layer_offset", f"expert_layer_offset {m.expert_layer_offset} must be below "
                        f"expert_layer_period {m.expert_layer_period}")
    if m.ssm_state_size or m.mixer_intermediate_size:
        raise SpecError("jamba_mixer_size", "a Jamba model's mixer is jamba_mixer_size / jamba_state_size; drop "
                        "ssm_state_size and mixer_intermediate_size")


def _check_mamba2(m: ModelSpec) -> None:
    """Mamba-2's shape rules (transformers configuration_mamba2.py validate_architecture; Mamba2Mixer splits the
    heads into n_groups groups and MambaRMSNormGated the intermediate channels into n_groups groups)."""
    for f in ("ssm_head_dim", "ssm_n_groups", "ssm_chunk_size"):
        if not getattr(m, f):
            raise SpecError(f, "a Mamba-2 model needs ssm_head_dim, ssm_n_groups and ssm_chunk_size (Codestral "
                            "Mamba: 64, 8, 256)")
    inter = m.intermediate_size or 0
    if inter % m.ssm_head_dim:
        raise SpecError("ssm_head_dim", f"intermediate_size {inter} is not a multiple of ssm_head_dim "
                        f"{m.ssm_head_dim} (num_heads = intermediate_size / head_dim)")
    if (inter // m.ssm_head_dim) % m.ssm_n_groups:
        raise SpecError("ssm_n_groups", f"num_heads {inter // m.ssm_head_dim} is not a multiple of ssm_n_groups "
                        f"{m.ssm_n_groups}")


def _check_classic(m: ModelSpec) -> None:
    """The fields a ResNet or an LSTM language model needs (core/memory/convnet.py, core/memory/rnn.py)."""
    if m.family == "resnet":
        if len(m.conv_blocks) != 4 or any(not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 1000
                                          for n in m.conv_blocks):
            raise SpecError("conv_blocks", "a ResNet needs four stage block counts from 1 to 1000 (resnet50: "
                            "[3, 4, 6, 3])")
        if not m.conv_bottleneck and (m.conv_groups not in (0, 1) or m.conv_width_per_group not in (0, 64)):
            raise SpecError("", "BasicBlock only supports conv_groups 1 and conv_width_per_group 64 "
                            "(torchvision resnet.py): set conv_bottleneck true")
        return
    missing = [f for f in ("vocab_size", "hidden_size", "num_layers") if getattr(m, f) is None]
    if missing or not m.rnn_input_size:
        raise SpecError("", f"an LSTM language model needs {', '.join(missing + ['rnn_input_size'])}")
    if m.tie_word_embeddings and m.rnn_input_size != m.hidden_size:
        raise SpecError("", "tied weights need rnn_input_size equal to hidden_size (word_language_model: "
                        "--tied needs emsize == nhid)")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: its memory as the driver reports it and what dtypes it computes in."""

    name: str
    display_name: str
    source: str
    memory_bytes: int
    aliases: tuple[str, ...] = ()
    vendor: Vendor = "nvidia"
    bf16: bool = True
    fp8: bool = False

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"vendor": VENDORS}
    BOUNDS: ClassVar[dict[str, tuple[Bound, ...]]] = {"memory_bytes": POSITIVE}
    INTEGERS: ClassVar[frozenset[str]] = frozenset(("memory_bytes",))
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    LENGTHS: ClassVar[dict[str, tuple[int, int]]] = {"name": (1, 100), "source": (1, 10_000)}

    def __post_init__(self) -> None:
        _check(self)


# Families a reward model (AutoModelForSequenceClassification over a causal LM) is not modelled for.
_NOT_DECODERS = frozenset(ENCODER_FAMILIES + SEQ2SEQ_FAMILIES + SSM_FAMILIES + CLASSIC_FAMILIES)


@dataclass(frozen=True)
class TrainingSpec:
    """Every setting of one run that changes its memory."""

    mode: Mode = "train"
    method: Method = "full"
    precision: PrecisionName = "auto"  # resolved by memory/precision.py resolve_precision
    optimizer: OptimizerName = "adamw"
    optimizer_impl: OptimizerImpl = "fused"
    optimizer_rank: int | None = None  # GaLore/APOLLO rank (None: HF's default 128; apollo-mini 1)
    optimizer_targets: OptimTargets = "attn-mlp"  # GaLore/APOLLO projected weights (HF optim_target_modules)
    batch_size: int = 1
    seq_len: int = 512
    grad_accum: int = 1
    grad_checkpointing: bool = False
    attention: Attention = "sdpa"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("auto",)  # params.py default_targets: q_proj, v_proj or the MLA analogues
    adapter_dtype: AdapterDtype = "fp32"
    # LoRA variants (memory/weights.py, memory/activations.py): peft LoraConfig use_dora, and modules_to_save
    # (a full trainable copy of embed_tokens / lm_head, ModulesToSaveWrapper).
    dora: bool = False
    modules_to_save: tuple[str, ...] = ()
    # LoRA with peft's trainable_token_indices (TrainableTokensWrapper on the input embedding, and on a tied lm_head):
    # how many token ids' embeddings are trained beside the adapters (0: none; core/peft_methods.py token_rows)
    lora_trainable_tokens: int = 0
    # LoRA on some decoder layers only (peft layers_to_transform; core/lora_layers.py): sorted indices, () for all
    lora_layers: tuple[int, ...] = ()
    # New tokens (memory/new_tokens.py): transformers' resize_token_embeddings adds `add_tokens` rows to the input
    # embedding (and to an untied lm_head), the total rounded up to a multiple of `vocab_multiple` (its
    # pad_to_multiple_of; 1: no rounding). Counted past the config's vocab_size (the tokenizer's length is unknown).
    add_tokens: int = 0
    vocab_multiple: int = 1
    quant_bits: QuantBits = 4
    double_quant: bool = True
    kbit_prep: bool = True  # qlora: peft prepare_model_for_kbit_training casts non-quantized params to fp32
    # qlora's quantizer (memory/hqq.py): bitsandbytes, or hqq's HQQLinear with its group size and grouping axis
    # (transformers HqqConfig defaults: group_size 64, axis 1; LLaMA-Factory passes axis 0)
    quant_backend: QuantBackend = "bnb"
    hqq_group_size: int = 64
    hqq_axis: int = 1
    freeze_layers: int | None = None  # for `freeze`: layers frozen from the bottom
    train_head: bool = True  # for `freeze`: whether the LM head is trained
    # for `freeze` (core/unfrozen.py): the trained decoder layers by index (None: the top ones above freeze_layers), and
    # the trained modules outside them, of embed_tokens / norm / lm_head (None: norm and lm_head with train_head)
    train_layers: tuple[int, ...] | None = None
    train_modules: tuple[str, ...] | None = None
    # The other PEFT methods (core/peft_methods.py); LoHa, LoKr, VeRA and IA3 also read lora_rank / lora_targets.
    virtual_tokens: int = 20  # prompt, p- and prefix tuning: peft num_virtual_tokens
    encoder_hidden_size: int | None = None  # p-tuning's MLP / prefix tuning's projection width (None: hidden size)
    prefix_projection: bool = False  # prefix tuning: peft prefix_projection (an MLP from a small embedding)
    ia3_feedforward: tuple[str, ...] = ("auto",)  # IA3 feedforward_modules (scaled input); auto: peft's default
    oft_block_size: int = 32  # OFT: peft oft_block_size (r = in_features / block size blocks per Linear)
    trainable_tokens: int = 16  # trainable tokens: how many token ids (peft token_indices) are trained
    n_frequency: int = 1000  # FourierFT: learned spectral coefficients per adapted Linear (peft n_frequency)
    boft_block_size: int = 4  # BOFT: peft boft_block_size (0 when boft_block_num is given)
    boft_block_num: int = 0  # BOFT: peft boft_block_num (0: boft_block_size is used)
    miss_rank: int = 64  # MiSS (Bone): peft r
    c3a_block_size: int = 256  # C3A: peft block_size
    shira_rank: int = 32  # SHiRA: peft r (r x (in + out) trained weights per Linear)
    adapter_len: int = 10  # adaption prompt: peft adapter_len
    adapter_layers: int | None = None  # adaption prompt: peft adapter_layers (None: every layer)
    # Parallelism (memory/distributed.py): GPUs per node × nodes = tp × pp × data-parallel degree.
    gpus_per_node: int = 1
    nodes: int = 1
    zero: ZeroStage = 0  # DeepSpeed ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters
    fsdp: FsdpStrategy = "none"  # PyTorch FSDP ShardingStrategy
    offload: Offload = "none"  # ZeRO-Offload / ZeRO-Infinity / FSDP CPUOffload
    tp: int = 1  # tensor parallel degree
    tp_layout: TpLayout = "megatron"  # whose layout: Megatron's, or transformers' tp_plan (memory/distributed.py)
    pp: int = 1  # pipeline parallel degree
    sequence_parallel: bool = False  # Megatron sequence parallelism (needs tp > 1)
    context_parallel: int = 1  # axolotl context_parallel_size: each sequence split over this many GPUs (ring)
    grad_sync: GradSync = "deferred"  # FSDP + accumulation: no_sync until the last micro-batch, or reduce each
    fsdp_frozen_grads: bool = False  # FSDP1 use_orig_params: a unit mixing adapters and frozen weights grads all
    # FSDP units beside the decoder layers (torchtune custom_sharded_layers): embed_tokens, lm_head
    fsdp_units: tuple[str, ...] = ()
    # Inference (memory/inference.py): seq_len is the context (prompt + generated tokens).
    weight_dtype: WeightDtype = "auto"  # auto: the precision's weight dtype
    kv_dtype: KvDtype = "auto"  # auto: the compute dtype
    quant_group_size: int = 128  # GPTQ / AWQ group size
    new_tokens: int = 1  # generate(max_new_tokens): the prefill reads seq_len - new_tokens + 1 tokens
    cache_impl: KvCache = "dynamic"  # generate()'s cache (transformers cache_implementation), --kv-cache
    logits: LogitsKept = "last"  # prefill logits: the last position (logits_to_keep=1) or every position
    # Serving with vLLM (--mode serve, memory/vllm.py): seq_len is one request's tokens (prompt + output) and
    # batch_size the concurrent requests wanted. None: vLLM's default (max_model_len from config.json,
    # max_num_seqs / max_num_batched_tokens from `vllm serve`'s defaults for the GPU).
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    enforce_eager: bool = False
    # Memory savers (memory/loss.py, memory/savers.py): the loss kernel and torchtune's chunk count.
    loss: LossName = "hf"
    loss_chunks: int = 8  # torchtune CEWithChunkedOutputLoss num_output_chunks
    ac_every: int = 1  # with grad_checkpointing: every k-th layer (torchtune ac_mode selective)
    ac_layout: AcLayout = "torchtune"  # which layers ac_every wraps (hf: transformers every_n_layers)
    reentrant_gc: bool = False  # with grad_checkpointing: torch.utils.checkpoint use_reentrant=True (LLaMA-Factory)
    # with grad_checkpointing (non-reentrant): torch.utils.checkpoint early_stop; False reruns each layer to its end
    ac_early_stop: bool = True
    activation_offload: bool = False  # torchtune enable_activation_offloading, Unsloth "unsloth" checkpointing
    # transformers activation_checkpointing_kwargs offload: save_on_cpu around each checkpoint (memory/savers.py)
    ac_offload: bool = False
    optimizer_in_bwd: bool = False  # torchtune optimizer_in_bwd: each parameter stepped as its gradient lands
    badam: bool = False  # BAdam layer mode (LLaMA-Factory use_badam): one decoder layer trained at a time
    lisa_layers: int | None = None  # LISA (axolotl lisa_n_layers): decoder layers trained at a time (memory/lisa.py)
    relora: bool = False  # axolotl relora: a LoRA merge and restart between steps (memory/relora.py)
    # accelerate's max_memory for GPU 0 (axolotl gpu_memory_limit / max_memory): the rest of the model on the CPU
    # through AlignDevicesHook (memory/placement.py); "none": every module on the GPU
    gpu_memory_limit: str = "none"
    # with gpu_memory_limit: transformers' own walk (from_pretrained(device_map="auto", max_memory=...), TRL's
    # model_init_kwargs): each decoder layer placed whole (_no_split_modules), not split into its Linears
    whole_layers: bool = False
    # MoE: transformers' router load-balancing aux loss (output_router_logits, memory/router_aux.py)
    router_aux_loss: bool = False
    # LLaMA-Factory upcast_lmhead_output: a forward hook casts a 16-bit lm_head's output to fp32 (memory/upcast.py)
    upcast_logits: bool = False
    # LLaMA-Factory upcast_layernorm: every 1-D norm parameter cast to fp32 over a 16-bit model, the step under the
    # Trainer's autocast (memory/upcast_norms.py)
    upcast_norms: bool = False
    # FP8 training through accelerate's torchao backend (memory/fp8.py): Float8Linear's recipe, off = nn.Linear
    fp8: Fp8Recipe = "off"
    # HF Trainer auto_find_batch_size: no memory of its own (the step is the configured batch's); with a GPU, the CLI
    # also reports the batch the Trainer's OOM retries end at (core/searches.py auto_batch_size)
    auto_find_batch_size: bool = False
    # torch.compile (inductor) (memory/compiled.py): modelled for a Llama-like full fine-tune per layer (torchtune,
    # compile_scope "layers") or whole (16 bits, no checkpointing); elsewhere the eager step, an upper bound
    compile: bool = False
    compile_scope: CompileScope = "model"
    kernels: Kernels = "hf"  # Unsloth's layer kernels (memory/unsloth.py): hf, unsloth or unsloth:GROUPS
    packing: Packing = "none"  # packed rows (position_ids) or one padding-free row (memory/activations.py)
    # The training stack whose defaults were applied (io/stacks.py) and the options it set: no memory of
    # its own, printed in the assumptions line.
    stack: StackName = "hf"
    stack_set: tuple[str, ...] = ()
    # Preference and reward training (memory/preference.py): TRL DPOTrainer / RewardTrainer.
    objective: Objective = "sft"
    prompt_len: int = 0  # prompt tokens per sequence (seq_len = prompt + the longer completion); 0: all completion
    ref_model: RefModel = "auto"  # DPO reference: a frozen copy, the base with adapters off, or precomputed
    dpo_head: DpoHead = "trl"  # dpo: TRL's fused head, or torchtune's full fp32 logits (memory/online_dpo.py head)
    ref_dtype: RefDtype = "auto"  # a copied reference's weight dtype (auto: the policy's)
    ref_quant: RefQuant = "none"  # a copied reference's bitsandbytes storage (memory/preference.py)
    # Online DPO's reward model (memory/reward_scoring.py): the option's name ("none": reward functions are Python
    # callables), its weight dtype, and the resolved spec (io/resolve.py resolve_model, by the CLI: the core reads
    # no files).
    reward_model: str = "none"
    reward_dtype: RefDtype = "auto"
    reward_spec: ModelSpec | None = None
    # Online RL (memory/rl.py): TRL GRPOConfig num_generations, beta, steps_per_generation (0: grad_accum,
    # GRPOConfig's default) and num_iterations; batch_size counts completions, seq_len = prompt + completion.
    num_generations: int = 8
    beta: float = 0.0
    steps_per_generation: int = 0
    num_iterations: int = 1
    # GRPO's generation with vLLM (memory/rl.py): TRL GRPOConfig use_vllm + vllm_mode, vllm_gpu_memory_utilization
    # (0.3, grpo_config.py) and vllm_enable_sleep_mode; max_model_len above is vllm_max_model_length.
    use_vllm: VllmMode = "off"
    vllm_utilization: float = 0.3
    vllm_sleep: bool = False
    chosen_nll: bool = True  # cpo/simpo: the NLL term on the chosen half (CPOConfig cpo_alpha > 0); orpo always
    # Encoders (memory/encoder.py): the task head and its label count (AutoModelForSequenceClassification's
    # config.num_labels, 2 by default in transformers' PretrainedConfig).
    head: Head = "auto"
    num_labels: int = 2
    # Encoder-decoders (memory/seq2seq.py): --seq-len is the source (the encoder's input), target_len the target
    # (the decoder's input and the labels); 0: as long as the source.
    target_len: int = 0
    # The classics (core/memory/classic.py): a ResNet's input images are image_size x image_size RGB, and its fc
    # has num_classes outputs (torchvision's default 1000).
    image_size: int = 224
    num_classes: int = 1000
    # Vision-language models (memory/vision.py): images per sample (0: one for a VLM, none for a text model) and
    # whether the vision tower is trained (frozen by default); image_size (above) sizes their images too, its
    # default standing for the model's own.
    images: int = 0
    train_vision: bool = False
    # Idefics3 / SmolVLM (memory/idefics3.py) and LLaVA-NeXT (memory/anyres.py): each image's width in pixels beside
    # image_size, its height; 0: square
    image_width: int = 0

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "mode": MODES, "method": METHODS, "precision": PRECISIONS, "optimizer": OPTIMIZERS,
        "optimizer_impl": OPTIMIZER_IMPLS, "optimizer_targets": OPTIM_TARGETS, "attention": ATTENTIONS,
        "adapter_dtype": ADAPTER_DTYPES,
        "quant_bits": QUANT_BITS, "zero": ZERO_STAGES, "fsdp": FSDP_STRATEGIES, "offload": OFFLOADS,
        "quant_backend": QUANT_BACKENDS,
        "grad_sync": GRAD_SYNCS, "tp_layout": TP_LAYOUTS, "ac_layout": AC_LAYOUTS, "compile_scope": COMPILE_SCOPES,
        "weight_dtype": WEIGHT_DTYPES, "kv_dtype": KV_DTYPES, "loss": LOSSES,
        "packing": PACKINGS, "stack": STACKS, "objective": OBJECTIVES,
        "ref_model": REF_MODELS, "ref_dtype": REF_DTYPES, "ref_quant": REF_QUANTS, "reward_dtype": REF_DTYPES,
        "cache_impl": KV_CACHES, "logits": LOGITS_KEPT, "head": HEADS, "use_vllm": VLLM_MODES,
    }
    BOUNDS: ClassVar[dict[str, tuple[Bound, ...]]] = {
        **dict.fromkeys(("batch_size", "seq_len", "grad_accum", "lora_rank", "gpus_per_node", "nodes", "tp", "pp",
                         "quant_group_size", "loss_chunks", "ac_every", "new_tokens", "virtual_tokens",
                         "hqq_group_size", "oft_block_size", "trainable_tokens", "n_frequency", "num_labels",
                         "miss_rank", "c3a_block_size", "shira_rank", "adapter_len", "num_generations",
                         "num_iterations", "image_size", "num_classes"),
                        (*POSITIVE, COUNT_CAP)),
        **dict.fromkeys(("boft_block_size", "boft_block_num"), (*NON_NEGATIVE, COUNT_CAP)),
        "freeze_layers": (*NON_NEGATIVE, COUNT_CAP),
        "lisa_layers": (*POSITIVE, COUNT_CAP),
        "prompt_len": (*NON_NEGATIVE, COUNT_CAP),
        "steps_per_generation": (*NON_NEGATIVE, COUNT_CAP),
        "image_width": (*NON_NEGATIVE, COUNT_CAP),
        "lora_trainable_tokens": (*NON_NEGATIVE, COUNT_CAP),
        "add_tokens": (*NON_NEGATIVE, COUNT_CAP),
        "vocab_multiple": (*POSITIVE, COUNT_CAP),
        "beta": NON_NEGATIVE,
        "target_len": (*NON_NEGATIVE, COUNT_CAP),
        "images": (*NON_NEGATIVE, COUNT_CAP),
        "encoder_hidden_size": (*POSITIVE, COUNT_CAP),
        "adapter_layers": (*POSITIVE, COUNT_CAP),
        "optimizer_rank": (*POSITIVE, COUNT_CAP),
        "lora_alpha": POSITIVE,
        "lora_dropout": FRACTION,
        **dict.fromkeys(("max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size"),
                        (*POSITIVE, COUNT_CAP)),
        "gpu_memory_utilization": (("gt", 0), ("le", 1)),
        "vllm_utilization": (("gt", 0), ("lt", 1)),
    }
    INTEGERS: ClassVar[frozenset[str]] = frozenset(BOUNDS) - {"lora_alpha", "lora_dropout", "gpu_memory_utilization",
                                                              "beta", "vllm_utilization"}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset(("freeze_layers", "encoder_hidden_size", "optimizer_rank",
                                                    "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                                                    "adapter_layers", "lisa_layers"))
    LENGTHS: ClassVar[dict[str, tuple[int, int]]] = {}

    def __post_init__(self) -> None:
        _check(self)
        if self.quant_backend == "bnb" and self.quant_bits not in (4, 8):
            raise SpecError("quant_bits", f"bitsandbytes quantizes to 4 or 8 bits, not {self.quant_bits}: use "
                            "--quant-bits 4 or 8 (or --quant-backend hqq)")
        if self.quant_backend == "hqq":
            # peft prepare_model_for_kbit_training casts nothing to fp32 on an hqq model (peft/utils/other.py
            # is_hqq_quantized), and hqq has no double quantization (its quant_zero / quant_scale are deprecated)
            object.__setattr__(self, "kbit_prep", False)
            object.__setattr__(self, "double_quant", False)
        groups = parse_kernels(self.kernels) if isinstance(self.kernels, str) else None
        if groups is None:
            raise SpecError("kernels", f"Input should be 'hf', 'unsloth', 'liger', 'unsloth:' with some of "
                            f"{','.join(KERNEL_GROUPS)} (e.g. unsloth:qkv,o,mlp) or 'axolotl:' with some of "
                            f"{','.join(AXOLOTL_KERNEL_GROUPS)}")
        if self.kernels.startswith("unsloth:"):
            object.__setattr__(self, "kernels", kernels_value(groups))  # one spelling per selection
        ax = parse_axolotl_kernels(self.kernels)
        if ax is not None:
            object.__setattr__(self, "kernels", "axolotl:" + ",".join(ax))
        gpus = self.gpus_per_node * self.nodes
        if gpus % (self.tp * self.pp):
            raise SpecError("", f"{gpus} GPUs cannot be split into tp {self.tp} × pp {self.pp}: "
                            "make --gpus × --nodes a multiple of --tp × --pp")
        if self.zero and self.fsdp != "none":
            raise SpecError("", "choose DeepSpeed ZeRO or FSDP, not both: drop --zero or --fsdp")
        if self.offload == "params" and self.zero != 3 and self.fsdp not in ("full-shard", "hybrid-shard"):
            raise SpecError("", "parameter offload needs sharded parameters: add --zero 3 or --fsdp full-shard")
        if self.offload == "optimizer" and self.zero == 0:
            hint = "FSDP's CPUOffload moves parameters: use --offload params" if self.fsdp != "none" \
                else "add --zero 1, 2 or 3"
            raise SpecError("", f"optimizer offload needs ZeRO: {hint}")
        if self.fsdp_frozen_grads and (self.fsdp == "none" or self.method != "lora"):
            raise SpecError("", "--fsdp-frozen-grads is about LoRA adapters sharing FSDP units with frozen weights: "
                            "use it with --method lora and --fsdp, or drop it")
        bad_units = [u for u in self.fsdp_units if u not in FSDP_UNIT_NAMES]
        if bad_units:
            raise SpecError("fsdp_units", f"{bad_units[0]!r:.40} is not modelled as an FSDP unit: use "
                            f"{' or '.join(FSDP_UNIT_NAMES)} (the decoder layers are units already)")
        if self.fsdp_units and self.fsdp not in ("full-shard", "hybrid-shard"):
            raise SpecError("fsdp_units", "extra FSDP units change what full sharding gathers: add --fsdp full-shard "
                            "(or hybrid-shard), or drop --fsdp-units")
        if self.tp > 1 and self.tp_layout == "hf" and (
                self.mode != "train" or self.objective != "sft" or self.method not in ("full", "lora") or self.dora
                or self.modules_to_save or self.lora_trainable_tokens or self.add_tokens or self.vocab_multiple > 1
                or self.pp > 1 or self.sequence_parallel or self.zero or self.fsdp != "none"
                or self.offload != "none" or gpus != self.tp):
            # memory/hf_tp.py: transformers' tp_plan on its own GPUs, full or LoRA (peft's colwise / rowwise adapters)
            raise SpecError("tp_layout", "hf is modelled for an SFT step, --method full or lora, on --gpus = --tp (no "
                            "--pp, --sequence-parallel, --zero, --fsdp, --offload, new or trainable tokens); use "
                            "--tp-layout megatron")
        if self.sequence_parallel and self.tp == 1:
            raise SpecError("", "sequence parallelism splits along the tensor-parallel group: add --tp N, N > 1")
        if self.context_parallel < 1:
            raise SpecError("context_parallel", "must be at least 1 (1: no context parallelism)")
        if self.mode == "serve" and (self.zero or self.fsdp != "none" or self.offload != "none"):
            raise SpecError("", "vLLM shards with --tp/--pp only: drop --zero, --fsdp and --offload")
        colocate_len = self.use_vllm == "colocate" and self.mode == "train"  # GRPOConfig vllm_max_model_length
        if self.mode != "serve" and (self.gpu_memory_utilization != 0.9
                                     or (self.max_model_len is not None and not colocate_len)
                                     or self.max_num_seqs is not None or self.max_num_batched_tokens is not None
                                     or self.block_size != 16 or self.enforce_eager):
            raise SpecError("", "--gpu-memory-utilization, --max-model-len, --max-num-seqs, --max-num-batched-tokens, "
                            "--block-size and --enforce-eager are vLLM's: add --mode serve (--max-model-len also with "
                            "--objective grpo --use-vllm colocate)")
        if self.max_model_len is not None and self.seq_len > self.max_model_len:
            raise SpecError("", f"a request of {self.seq_len:,} tokens exceeds --max-model-len {self.max_model_len:,} "
                            "(vLLM rejects it): raise --max-model-len or lower --context")
        if self.mode == "inference":
            if self.zero or self.fsdp != "none" or self.offload != "none":
                raise SpecError("", "inference shards with --tp/--pp only: drop --zero, --fsdp and --offload")
            if self.new_tokens > self.seq_len:
                raise SpecError("", f"--new-tokens {self.new_tokens} exceeds the context {self.seq_len} (prompt + "
                                "new tokens - 1): raise --context or lower --new-tokens")
        elif self.new_tokens != 1 or self.cache_impl != "dynamic" or self.logits != "last":
            raise SpecError("", "--new-tokens, --kv-cache and --logits describe generate(): add --mode inference")
        elif self.mode == "train" and (self.weight_dtype != "auto" or self.kv_dtype != "auto"):
            raise SpecError("", "--weight-dtype and --kv-dtype apply to --mode inference; for training use "
                            "--method qlora or --precision")
        self._train_subset_consistent()
        if not isinstance(self.lora_layers, tuple) or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.lora_layers) \
                or list(self.lora_layers) != sorted(set(self.lora_layers)):
            raise SpecError("lora_layers", "Input should be distinct layer indices from 0, in ascending order")
        if self.lora_layers and self.method not in ("lora", "qlora") and self.mode == "train":
            # peft's other methods take layers_to_transform too, but their arithmetic (core/peft_methods.py) is
            # per-model, not per-layer: not modelled
            raise SpecError("", f"--lora-layers picks the layers LoRA adapts (peft layers_to_transform): "
                            f"use it with --method lora or qlora, not {self.method}, or drop it")
        if self.method in ("lora", "qlora") and not self.lora_targets:
            raise SpecError("", "LoRA needs at least one target module: pass --lora-targets q_proj,v_proj")
        if self.method == "prefix-tuning" and self.grad_checkpointing and self.mode == "train":
            # peft/peft_model.py _setup_prompt_encoder raises the same for PREFIX_TUNING.
            raise SpecError("", "prefix tuning does not work with gradient checkpointing (peft refuses it): "
                            "drop --grad-checkpointing")
        if self.method == "boft" and (self.boft_block_size == 0) == (self.boft_block_num == 0):
            # peft tuners/boft/layer.py update_layer: exactly one of the two gives the blocks.
            raise SpecError("", "BOFT takes exactly one of --boft-block-size and --boft-block-num: set the other "
                            "to 0")
        self._savers_consistent()
        self._objective_consistent()
        self._optimizer_consistent()

    def _optimizer_consistent(self) -> None:
        """The projected optimizers and Adam-mini (memory/optimizer.py): what each reads, where it is modelled."""
        projected = self.optimizer in ("galore-adamw", "galore-adamw-8bit", "apollo-adamw", "apollo-mini")
        if self.mode != "train":
            return
        if not projected and (self.optimizer_rank is not None or self.optimizer_targets != "attn-mlp"):
            raise SpecError("", "--optimizer-rank and --optimizer-targets set GaLore/APOLLO's projection: use them "
                            "with --optimizer galore-adamw, galore-adamw-8bit, apollo-adamw or apollo-mini, or drop "
                            "them")
        if self.optimizer == "apollo-mini" and self.optimizer_rank not in (None, 1):
            raise SpecError("", "APOLLO-Mini is rank 1 with tensor-wise scaling: drop --optimizer-rank, or use "
                            f"--optimizer apollo-adamw --optimizer-rank {self.optimizer_rank}")
        if (projected or self.optimizer in ("adam-mini", "muon")) and self.method not in ("full", "freeze"):
            name = {"adam-mini": "Adam-mini", "muon": "Muon"}.get(self.optimizer, "GaLore/APOLLO")
            raise SpecError("", f"{name} is modelled for full or partial (freeze) fine-tuning, where it sees the "
                            f"model's own weight matrices: use --method full or freeze, or another --optimizer")
        if self.optimizer == "muon":
            self._muon_consistent()
        if projected and (self.zero or self.fsdp != "none" or self.tp > 1 or self.pp > 1):
            # galore_torch/apollo_torch step whole matrices (an SVD or projection of the full gradient): no
            # sharded-state support; plain data parallel only.
            raise SpecError("", "GaLore/APOLLO project whole weight matrices and are modelled on one GPU or plain "
                            "data parallel: drop --zero / --fsdp / --tp / --pp")

    def _muon_consistent(self) -> None:
        """LLaMA-Factory's Muon (memory/optimizer.py muon_bytes): the model's own parameters on one GPU or plain DDP."""
        if self.zero or self.fsdp != "none" or self.tp > 1 or self.pp > 1:
            # DeepSpeed/FSDP hand the optimizer flattened shards (muon.py asserts p.ndim == 2 per Muon tensor)
            raise SpecError("", "--optimizer muon (LLaMA-Factory's Muon) steps whole 2-D matrices and is modelled on "
                            "one GPU or plain data parallel: drop --zero / --fsdp / --tp / --pp")
        if self.precision in ("mixed-bf16", "mixed-fp16"):
            # no fp32 master copy without DeepSpeed: the Trainer steps the model's own parameters
            raise SpecError("", f"--optimizer muon steps the model's own parameters (fp32 master weights exist only "
                            f"under DeepSpeed, not modelled with Muon): use --precision bf16, amp-bf16 or fp32, not "
                            f"{self.precision}")
        if self.optimizer_in_bwd:
            raise SpecError("", "LLaMA-Factory has no layer-wise Muon: drop --optimizer-in-bwd with --optimizer muon")

    def _objective_consistent(self) -> None:
        """Preference and reward options (memory/preference.py): what each objective reads."""
        pref = self.objective in ("dpo", "ipo", "kto")
        grpo = self.objective in ("grpo", "rloo")  # online RL (memory/rl.py): TRL GRPOTrainer / RLOOTrainer
        online = self.objective == "online-dpo"  # TRL OnlineDPOTrainer (memory/online_dpo.py)
        if online:
            self._online_dpo_consistent()
        if self.objective == "ppo":
            self._ppo_consistent()
        self._reward_model_consistent(online)
        self._rl_consistent(grpo)
        if self.objective != "sft" and self.mode != "train":
            raise SpecError("", f"--objective {self.objective} is a training objective: drop it with "
                            f"--mode {self.mode}")
        if self.objective != "sft" and (self.gpus_per_node * self.nodes > 1 or self.tp > 1 or self.pp > 1):
            raise SpecError("", f"--objective {self.objective} is modelled on one GPU: drop --gpus/--nodes/--tp/--pp")
        if (pref or grpo) and self.loss not in ("hf", "trl"):
            # trl/trainer/dpo_trainer.py _compute_loss always calls model(..., fused_lm_head=True).
            raise SpecError("", f"TRL's {'KTO' if self.objective == 'kto' else 'DPO'}Trainer computes log-probs "
                            f"with its own fused LM head, so --loss "
                            f"{self.loss} does not apply to --objective {self.objective}: drop --loss")
        if self.objective == "reward" and self.loss != "hf":
            raise SpecError("", "a reward model has a score head and no LM loss: drop --loss with --objective reward")
        if not (pref or online or (grpo and self.beta > 0)) and (self.ref_model != "auto"
                                                                 or self.ref_dtype != "auto"):
            raise SpecError("", "--ref-model and --ref-dtype apply to --objective dpo, ipo or kto, or to grpo with "
                            "--beta > 0 (GRPOTrainer loads no reference with beta 0)")
        if self.prompt_len and not (pref or grpo or online or self.objective == "ppo" or self.loss == "trl"):
            raise SpecError("", "--prompt-len changes memory only through TRL's log-prob head: use it with "
                            "--objective dpo/ipo/kto/grpo/rloo/online-dpo or --loss trl")
        if self.prompt_len >= self.seq_len and self.mode == "train":
            raise SpecError("", f"--prompt-len {self.prompt_len} leaves no completion in --seq-len {self.seq_len}: "
                            "give a sequence longer than the prompt")
        if self.ref_model == "adapters-off" and self.method not in ("lora", "qlora"):
            raise SpecError("", "--ref-model adapters-off needs adapters to disable: use --method lora/qlora, or "
                            "--ref-model copy")
        if self.ref_dtype != "auto" and self.ref_model not in ("copy", "auto"):
            raise SpecError("", f"--ref-dtype sets a copied reference's dtype; --ref-model {self.ref_model} keeps "
                            "no copy: drop --ref-dtype")
        if self.ref_quant != "none" and (not pref or self.ref_model not in ("copy", "auto")
                                         or (self.ref_model == "auto" and self.method in ("lora", "qlora"))
                                         or self.dpo_head == "logits"):
            raise SpecError("", "--ref-quant quantizes the frozen reference copy TRL's DPOTrainer/KTOTrainer loads: "
                            "use it with --objective dpo/ipo/kto and --ref-model copy (auto without LoRA)")
        if self.dpo_head == "logits":
            self._check_logits_dpo_head()
        if not self.chosen_nll and self.objective not in ("cpo", "simpo"):
            # trl/experimental/cpo/cpo_trainer.py concatenated_forward skips the NLL when cpo_alpha == 0; ORPOTrainer
            # always computes it (orpo_trainer.py concatenated_forward).
            raise SpecError("", "--no-chosen-nll (CPOConfig cpo_alpha 0) applies to --objective cpo or simpo: "
                            "drop it")
        if self.objective in ("orpo", "cpo", "simpo") and self.loss != "hf":
            # orpo_trainer.py / cpo_trainer.py concatenated_forward: outputs.logits, then log-softmax over them.
            raise SpecError("", f"TRL's {'ORPO' if self.objective == 'orpo' else 'CPO'}Trainer computes the full "
                            f"logits itself, so --loss {self.loss} does not apply to --objective {self.objective}: "
                            "drop --loss")

    def _check_logits_dpo_head(self) -> None:
        """--dpo-head logits: torchtune's DPO recipes (recipes/lora_dpo_single_device.py, full_dpo_distributed.py
        concatenated_forward; torchtune/rlhf/sequence_processing.py get_batch_log_probs)."""
        if self.objective != "dpo":
            raise SpecError("", f"--dpo-head logits models torchtune's DPO recipes (DPOLoss): use it with --objective "
                            f"dpo, not {self.objective}")
        if self.loss != "hf":
            raise SpecError("", f"torchtune's DPO recipes take log_softmax over the full logits, so --loss {self.loss} "
                            "does not apply with --dpo-head logits: drop --loss")
        if self.prompt_len:
            raise SpecError("", "torchtune's get_batch_log_probs takes log_softmax at every position (the prompt's "
                            "labels are only masked), so --prompt-len does not apply with --dpo-head logits: drop it")
        if self.ref_model == "precomputed":
            raise SpecError("", "torchtune's DPO recipes run the reference in every step: --ref-model precomputed "
                            "does not apply with --dpo-head logits")

    def _online_dpo_consistent(self) -> None:
        """TRL OnlineDPOTrainer (memory/online_dpo.py): what is modelled of it, the rest refused in one line."""
        if self.max_model_len is not None:
            # online_dpo_trainer.py __init__: LLM(max_model_len=args.max_length + args.max_new_tokens), not settable
            raise SpecError("", "OnlineDPOTrainer sets vLLM's max_model_len itself (max_length + max_new_tokens = "
                            "--seq-len + the completion): drop --max-model-len")
        if self.loss != "hf":
            raise SpecError("", "TRL's OnlineDPOTrainer computes the full logits itself (online_dpo_trainer.py "
                            f"_forward), so --loss {self.loss} does not apply to --objective online-dpo: drop --loss")
        if self.prompt_len < 1:
            raise SpecError("", "Online DPO generates completions from prompts: give --prompt-len (the longest "
                            "prompt, in tokens) and --seq-len = prompt + max_new_tokens")
        if self.ref_model == "precomputed":
            raise SpecError("", "Online DPO scores fresh completions each step, so reference log-probs cannot be "
                            "precomputed: drop --ref-model precomputed")
        if self.packing != "none":
            raise SpecError("", "OnlineDPOTrainer pads prompts and completions itself: drop --packing")

    def _ppo_consistent(self) -> None:
        """TRL 0.19.1 PPOTrainer (memory/ppo.py): what its options read; the rest of what is not modelled is refused
        by memory/ppo.py check."""
        if self.loss != "hf":
            raise SpecError("", "TRL 0.19.1's PPOTrainer takes the policy's full logits (ppo_trainer.py forward), so "
                            f"--loss {self.loss} does not apply to --objective ppo: drop --loss")
        if self.prompt_len < 1:
            raise SpecError("", "PPO generates responses from queries: give --prompt-len (the query length, in tokens) "
                            "and --seq-len = query + response_length")
        if self.packing != "none":
            raise SpecError("", "PPOTrainer pads queries and responses itself: drop --packing")

    def _reward_model_consistent(self, online: bool) -> None:
        """--reward-model (memory/reward_scoring.py): Online DPO's / GRPO's scoring model, a dense decoder."""
        if self.reward_model == "none":
            if self.reward_dtype != "auto" or self.reward_spec is not None:
                raise SpecError("", "--reward-dtype sets the dtype of a reward model: add --reward-model, or drop it")
            return
        if not online and self.objective not in ("grpo", "rloo", "ppo"):
            raise SpecError("", "--reward-model scores generated completions: use it with --objective online-dpo, "
                            "grpo, rloo or ppo")
        r = self.reward_spec
        if r is None:
            raise SpecError("", f"--reward-model {self.reward_model}: not resolved to a model (give a preset name "
                            "or a config.json path)")
        if (not r.has_architecture or r.family in _NOT_DECODERS or r.vision is not None or r.num_experts
                or r.attention_kind != "standard" or r.family == "gpt_oss"):
            raise SpecError("", f"--reward-model {self.reward_model}: a reward model is modelled as a dense "
                            "decoder-only transformer with its architecture (AutoModelForSequenceClassification "
                            "over a causal LM): choose such a preset")

    def _rl_consistent(self, grpo: bool) -> None:
        """GRPO's options (memory/rl.py; trl/trainer/grpo_config.py __post_init__ checks)."""
        if not grpo:
            # --beta: Online DPO's too (OnlineDPOConfig beta: arithmetic on per-sequence sums, no memory)
            beta = self.beta and self.objective != "online-dpo"
            if (self.num_generations != 8 or beta or self.steps_per_generation
                    or self.num_iterations != 1):
                raise SpecError("", "--num-generations, --beta, --steps-per-generation and --num-iterations are "
                                "GRPO's (--beta also online-dpo's): add --objective grpo, or drop them")
            if self.objective != "online-dpo":  # OnlineDPOConfig has use_vllm too (memory/rl.py, online_dpo.py)
                if self.use_vllm != "off" or self.vllm_utilization != 0.3 or self.vllm_sleep:
                    raise SpecError("", "--use-vllm, --vllm-utilization and --vllm-sleep set the generation engine "
                                    "of GRPO, RLOO and Online DPO: add --objective grpo or online-dpo, or drop them")
                return
        self._vllm_consistent()
        if not grpo:
            return
        if self.prompt_len < 1:
            raise SpecError("", "GRPO generates completions from prompts: give --prompt-len (the longest prompt, in "
                            "tokens) and --seq-len = prompt + max_completion_length")
        steps = self.steps_per_generation or self.grad_accum
        rows = self.batch_size * steps
        if rows % self.num_generations:
            # grpo_config.py: generation_batch_size must be divisible by num_generations
            raise SpecError("", f"the generation batch ({self.batch_size} × {steps}"
                            f" steps per generation = {rows} completions) must be divisible by --num-generations "
                            f"{self.num_generations}: raise --batch-size, --grad-accum or --steps-per-generation, or "
                            "lower --num-generations")
        if self.ref_model == "precomputed":
            raise SpecError("", "GRPO scores fresh completions each step, so reference log-probs cannot be "
                            "precomputed: drop --ref-model precomputed")

    def _vllm_consistent(self) -> None:
        """The generation engine's options (memory/rl.py), shared by GRPO/RLOO and Online DPO."""
        if self.use_vllm != "colocate" and (self.vllm_utilization != 0.3 or self.vllm_sleep):
            raise SpecError("", "--vllm-utilization and --vllm-sleep configure a colocated vLLM engine (TRL "
                            "vllm_mode='colocate'): add --use-vllm colocate, or drop them")
        if self.use_vllm == "colocate" and self.method == "qlora" and self.quant_bits == 8:
            # trl/generation/vllm_generation.py _init_vllm (online_dpo_trainer.py __init__ alike):
            # bnb.nn.Linear8bitLt raises
            raise SpecError("", "TRL refuses colocated vLLM with 8-bit bitsandbytes weights (vLLM has no in-flight "
                            "8-bit quantization): use --quant-bits 4, or --use-vllm server")

    def _badam_consistent(self) -> None:
        """BAdam's layer mode as LLaMA-Factory runs it (memory/badam.py): what the model covers."""
        if self.mode != "train":
            raise SpecError("", f"--badam is a training optimizer: drop it for --mode {self.mode}")
        if self.method != "full" and not (self.method == "freeze" and not self.train_head):  # (memory/badam.py view)
            raise SpecError("", "--badam trains the model's own layers block by block (LLaMA-Factory use_badam with "
                            "finetuning_type full): use --method full")
        if self.precision not in ("auto", "mixed-bf16", "mixed-fp16"):
            raise SpecError("", "BAdam keeps the model in 16 bits and steps an fp32 copy of the active block with fp32 "
                            f"moments (mixed-bf16 / mixed-fp16), not --precision {self.precision}: drop --precision")
        if self.optimizer != "adamw":
            raise SpecError("", "BAdam is modelled over torch AdamW (LLaMA-Factory's default optim): use --optimizer "
                            "adamw")
        if self.gpus_per_node * self.nodes > 1 or self.zero or self.fsdp != "none" or self.offload != "none":
            raise SpecError("", "--badam is modelled on one GPU (LLaMA-Factory runs layer-wise BAdam on several only "
                            "under DeepSpeed ZeRO-3): drop --gpus / --zero / --fsdp / --offload")
        if self.optimizer_in_bwd or self.objective != "sft":
            raise SpecError("", "--badam is modelled for a supervised step with its own optimizer: drop "
                            "--optimizer-in-bwd / --objective")

    def _train_subset_consistent(self) -> None:
        """--method freeze: --freeze-layers N or --train-layers / --train-modules (core/unfrozen.py), not both ways."""
        named = self.train_layers is not None or self.train_modules is not None
        if self.method == "freeze" and self.freeze_layers is None and not named:
            raise SpecError("", "method 'freeze' needs --freeze-layers N (layers kept frozen from the bottom) or "
                            "--train-layers")
        if self.train_layers is not None and (not isinstance(self.train_layers, tuple) or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.train_layers)
                or list(self.train_layers) != sorted(set(self.train_layers))):
            raise SpecError("train_layers", "Input should be distinct layer indices from 0, in ascending order")
        if self.train_modules is not None and (not isinstance(self.train_modules, tuple) or any(
                x not in ("embed_tokens", "norm", "lm_head", "projector") for x in self.train_modules)):
            raise SpecError("train_modules", "Input should be some of embed_tokens, norm, lm_head, projector")
        if named and (self.method != "freeze" or self.mode != "train"):
            raise SpecError("", "--train-layers and --train-modules name what --method freeze trains: add --method "
                            "freeze, or drop them")
        if self.train_layers is not None and self.freeze_layers is not None:
            raise SpecError("", "--train-layers and --freeze-layers both choose the trained layers: keep one")
        if self.train_modules is not None and not self.train_head:
            raise SpecError("", "--train-modules and --no-train-head both choose the modules outside the layers: "
                            "keep --train-modules (without lm_head to freeze the head)")

    def _lisa_consistent(self) -> None:
        """LISA as axolotl runs it (memory/lisa.py): a callback over the HF Trainer's own optimizer, on one GPU."""
        if self.mode != "train":
            raise SpecError("", f"--lisa-layers switches the trained layers of a training run: drop it for --mode "
                            f"{self.mode}")
        if self.method != "full" and not (self.method == "freeze" and self.train_head):  # (memory/lisa.py view)
            raise SpecError("", "--lisa-layers freezes and unfreezes the model's own decoder layers (axolotl "
                            "lisa_n_layers over full fine-tuning): use --method full")
        if self.badam:
            raise SpecError("", "--lisa-layers and --badam are two layer-wise schemes: keep one")
        if self.gpus_per_node * self.nodes > 1 or self.zero or self.fsdp != "none" or self.offload != "none" \
                or self.tp > 1 or self.pp > 1:
            raise SpecError("", "--lisa-layers is modelled on one GPU (under DeepSpeed or FSDP the optimizer's flat "
                            "buffers are built before the callback freezes layers): drop --gpus / --zero / --fsdp / "
                            "--offload")
        if self.optimizer in ("galore-adamw", "galore-adamw-8bit", "apollo-adamw", "apollo-mini", "adam-mini",
                              "muon") or self.optimizer_in_bwd:
            raise SpecError("", f"--lisa-layers is modelled with a per-parameter torch or bitsandbytes optimizer "
                            f"(states made lazily for parameters with a gradient), not "
                            f"{'--optimizer-in-bwd' if self.optimizer_in_bwd else self.optimizer}: use --optimizer "
                            "adamw")
        if self.objective != "sft":
            raise SpecError("", "--lisa-layers is modelled for a supervised step (axolotl's causal trainer): drop "
                            "--objective")

    def _relora_consistent(self) -> None:
        """ReLoRA as axolotl @ 067b021c runs it (memory/relora.py): a callback of its causal trainer over LoRA."""
        if self.mode != "train" or self.objective != "sft":
            raise SpecError("", "--relora is axolotl's restart callback of a supervised training run (its causal "
                            "trainer): drop it or --objective / --mode")
        if self.method == "qlora" and self.quant_bits == 4:
            raise SpecError("", "--relora cannot run on a 4-bit model: axolotl's merge leaves each weight "
                            "unquantized (bitsandbytes 0.50 Params4bit.to skips requantizing) and the next forward "
                            "fails; use --method lora")
        if self.method == "qlora":
            # relora.py update_weights: Int8Params(merged).to(device) quantizes only from the CPU (bitsandbytes 0.50
            # Int8Params.to) and only .data is replaced; Linear8bitLt.forward multiplies by state.CB (the int8 weights
            # of before) and then sets weight.data = state.CB: the merge never reaches the model
            raise SpecError("", "--relora on an 8-bit model is not modelled: axolotl's merged weight stays unquantized "
                            "until the layer's next forward puts the old int8 weights back (bitsandbytes 0.50 "
                            "Int8Params.to, Linear8bitLt state.CB); use --method lora")
        if self.method != "lora" or self.dora:
            raise SpecError("", "--relora is modelled for plain LoRA on 16-bit weights (axolotl merge_and_save's "
                            "unquantized path): use --method lora without --dora")
        if self.optimizer != "adamw" or self.optimizer_in_bwd or self.adapter_dtype != "fp32":
            raise SpecError("", "--relora is modelled with torch AdamW's fp32 states over fp32 adapters (axolotl "
                            "prunes exp_avg / exp_avg_sq, and refuses a non-Adam optim): use --optimizer adamw")
        if self.zero or self.fsdp != "none" or self.tp > 1 or self.pp > 1:
            raise SpecError("", "--relora runs without DeepSpeed or FSDP (axolotl check_relora refuses both): drop "
                            "--zero / --fsdp / --tp / --pp")

    def _savers_consistent(self) -> None:
        if self.loss == "cut" and self.mode == "train" and self.precision in ("amp-bf16", "amp-fp16", "fp32"):
            # cut_cross_entropy/cce_backward.py asserts bf16/fp16 embeddings and classifier (amp keeps fp32 weights).
            raise SpecError("", f"--loss cut needs 16-bit weights (Cut Cross-Entropy's backward asserts bf16 or "
                            f"fp16), not --precision {self.precision}: use --precision bf16")
        if self.optimizer_in_bwd and self.mode == "train":
            if self.grad_accum > 1:
                # torchtune recipes raise: gradients are freed as soon as they are applied.
                raise SpecError("", "--optimizer-in-bwd steps each parameter as its gradient lands, so it cannot "
                                "accumulate gradients: use --grad-accum 1")
            if self.zero or self.fsdp != "none" or self.tp > 1 or self.pp > 1:
                # torchtune steps in backward on one GPU or plain data parallel, never with tensor/pipeline stages
                raise SpecError("", "--optimizer-in-bwd is modelled on one GPU or plain data parallel: drop "
                                "--zero / --fsdp / --tp / --pp")
        if self.badam:
            self._badam_consistent()
        if self.lisa_layers is not None:
            self._lisa_consistent()
        if self.relora:
            self._relora_consistent()
        if self.upcast_logits and self.mode != "train":
            # LLaMA-Factory registers the hook in prepare_model_for_training, for a trainable model only
            raise SpecError("", f"--upcast-logits is LLaMA-Factory's training hook on lm_head: drop it for --mode "
                            f"{self.mode}")
        if self.upcast_norms and self.mode != "train":
            # LLaMA-Factory casts the norms in prepare_model_for_training, for a trainable model only
            raise SpecError("", f"--upcast-norms is LLaMA-Factory's training-time cast of the norms: drop it for "
                            f"--mode {self.mode}")
        if self.compile and self.mode != "train":
            raise SpecError("", f"--compile is measured for training steps (memory/compiled.py): drop it for --mode "
                            f"{self.mode}")
        if self.auto_find_batch_size and self.mode != "train":
            raise SpecError("", f"--auto-find-batch-size is the Trainer's retry of a training step: drop it for --mode "
                            f"{self.mode}")
        if self.auto_find_batch_size and self.zero == 3:
            # transformers trainer.py: "`auto_find_batch_size` isn't supported yet with DeepSpeed Zero-3"
            raise SpecError("", "transformers refuses auto_find_batch_size under DeepSpeed ZeRO-3: drop "
                            "--auto-find-batch-size or use --zero 1 or 2")
        if self.packing != "none" and self.mode != "train":
            raise SpecError("", f"--packing {self.packing} lays out training batches; drop it for --mode {self.mode}")
        if self.head == "mlm" and self.num_labels != 2:
            raise SpecError("", f"--num-labels {self.num_labels} sizes a sequence classifier; the masked-LM head "
                            "predicts the vocabulary: drop --num-labels or use --head seq-cls / token-cls")
        if self.ac_every > 1 and not self.grad_checkpointing:
            raise SpecError("", f"--ac-every {self.ac_every} selects which layers are checkpointed: "
                            "add --grad-checkpointing")
        if not self.ac_early_stop and (not self.grad_checkpointing or self.reentrant_gc or self.activation_offload):
            raise SpecError("", "--no-ac-early-stop is non-reentrant checkpointing's (torch.utils.checkpoint "
                            "early_stop: reentrant reruns the whole layer anyway; offloaded checkpointing is its own): "
                            "add --grad-checkpointing, or drop --reentrant-gc / --activation-offload")
        if self.reentrant_gc and not self.grad_checkpointing:
            raise SpecError("", "--reentrant-gc selects how checkpointed layers are recomputed: "
                            "add --grad-checkpointing")
        if self.ac_offload and not self.grad_checkpointing:
            raise SpecError("", "--ac-offload moves what each checkpoint saves to host RAM: add --grad-checkpointing")
        if self.ac_offload and self.ac_every > 1 and self.ac_layout != "hf":
            raise SpecError("", "--ac-offload is transformers' own: its every_n_layers wraps layers 0, k, 2k, ...; "
                            "add --ac-layout hf")
        if self.ac_offload and self.activation_offload:
            raise SpecError("", "--ac-offload (transformers' save_on_cpu around each checkpoint) and "
                            "--activation-offload (torchtune's offloading of everything) are two different offloads: "
                            "drop one of them")
        if self.reentrant_gc and self.activation_offload:
            raise SpecError("", "--reentrant-gc with --activation-offload is not modelled (the offloaded checkpointing "
                            "of torchtune / Unsloth / axolotl is its own): drop one of them")


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of a spec class, in declaration order."""
    return tuple(f.name for f in fields(cls))
