"""Qwen2-VL and Qwen2.5-VL in the tracer (memory/vision.py): Qwen2VLForConditionalGeneration /
Qwen2_5_VLForConditionalGeneration from a ModelSpec whose VisionSpec is a Qwen tower, the processor's inputs
(image placeholder tokens, pixel_values of one row per patch, image_grid_thw, mm_token_type_ids), and the
data-dependent steps of the forward emulated for fake tensors with the same allocations.

What a fake tensor cannot do is read its values: `.tolist()`, `.item()`, a data-dependent count. transformers
5.24 does so in
- vision_utils.get_vision_position_ids / get_vision_attention_seqlens / get_vision_window_index (imported into
  modeling_qwen2_vl.py and modeling_qwen2_5_vl.py): grid_thw.tolist() per image. Emulated: tensors of the
  shapes the library returns ((patches, 2) int64 positions, (segments + 1,) int32 cu_seqlens, (patches / 4,)
  int64 window index), the segment lengths known here from the image sizes;
- VisionAttention.forward / Qwen2_5_VLVisionAttention.forward (sdpa and eager): `lengths.tolist()` of
  cu_seqlens to split q, k and v per image (or window). The library's own forward runs; only that one
  `tolist()` answers the lengths the emulated cu_seqlens stands for;
- get_image_features: `(image_grid_thw.prod(-1) // merge^2).tolist()`, the split sizes: answered the same way;
- get_placeholder_mask: the placeholder count check (a data-dependent scalar; the inputs put exactly the right
  number of placeholders) is skipped, the masks allocated as the library does;
- get_rope_index (M-RoPE): itertools.groupby over input_token_type.tolist(), then per-sample aranges. Emulated
  by its result: position_ids (3, batch, sequence) of input_ids' dtype and the rope deltas (batch, 1);
- Tensor.masked_scatter: trace/_vision.py's _MaskedScatter (out of place, the mask saved).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

from vramcalc.core.memory.vision import images_per_sample, qwen_grid, total_tokens
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.trace._vision import IMAGE_TOKEN, _MaskedScatter

VIDEO_TOKEN = 4  # any other id of the vocabulary (Qwen2-VL's are 151655 / 151656)


def mrope_section(head_dim: int) -> list[int]:
    """M-RoPE's temporal / height / width split of the rotary half (rope_scaling mrope_section): the published
    [16, 24, 24] of a 128-wide head, scaled to the head (the three must add up to head_dim / 2)."""
    half = head_dim // 2
    return [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]


def qwen_config_dict(model: ModelSpec, text: dict[str, Any]) -> dict[str, Any]:
    """Qwen2VLConfig / Qwen2_5_VLConfig kwargs: the text model's config (`text`, a qwen2 dict) and the tower's."""
    v = model.vision
    assert v is not None and model.hidden_size and model.num_attention_heads
    kind = v.kind
    text = {**text, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None}  # inside any vocabulary
    head_dim = model.head_dim or model.hidden_size // model.num_attention_heads
    text.update(model_type=kind + "_text", rope_scaling={"type": "mrope", "mrope_section": mrope_section(head_dim)})
    vision: dict[str, Any] = {"depth": v.num_layers, "num_heads": v.num_attention_heads, "patch_size": v.patch_size,
                              "temporal_patch_size": v.temporal_patch_size, "in_channels": 3,
                              "spatial_merge_size": v.spatial_merge_size}
    if kind == "qwen2_vl":
        vision.update(embed_dim=v.hidden_size, mlp_ratio=v.intermediate_size // v.hidden_size,
                      hidden_size=v.out_hidden_size, hidden_act="quick_gelu")
    else:
        vision.update(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                      out_hidden_size=v.out_hidden_size, hidden_act="silu", window_size=v.window_size,
                      fullatt_block_indexes=list(v.fullatt_block_indexes))
    return {"model_type": kind, "text_config": text, "vision_config": vision, "image_token_id": IMAGE_TOKEN,
            "video_token_id": VIDEO_TOKEN, "vision_start_token_id": 5, "vision_end_token_id": 6,
            "tie_word_embeddings": model.tie_word_embeddings}


def grids(model: ModelSpec, training: TrainingSpec) -> list[tuple[int, int, int]]:
    """image_grid_thw of every image of the batch: --image-size a side, smart_resize'd (memory/vision.py)."""
    v = model.vision
    assert v is not None
    side = training.image_size
    return [qwen_grid(v, side, side)] * (images_per_sample(training) * training.batch_size)


def make_inputs(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> Any:
    """What Qwen2VLProcessor gives: input_ids with each image's <|image_pad|> tokens after a first text token,
    mm_token_type_ids (1 on them), pixel_values (patches, 3 x temporal x patch^2) in the model's dtype,
    image_grid_thw, and the labels."""
    v = model.vision
    assert v is not None and model.vocab_size is not None
    b, s = training.batch_size, total_tokens(model, training)
    g = grids(model, training)
    per_sample = sum(t * h * w for t, h, w in g[:images_per_sample(training)]) // v.spatial_merge_size ** 2
    patches = sum(t * h * w for t, h, w in g)
    row = 3 * v.temporal_patch_size * v.patch_size ** 2
    vocab = model.vocab_size

    def make() -> dict[str, torch.Tensor]:
        ids = torch.randint(7, vocab, (b, s), dtype=torch.long)
        ids[:, 1:1 + per_sample] = IMAGE_TOKEN
        types = torch.zeros((b, s), dtype=torch.int32)
        types[:, 1:1 + per_sample] = 1
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long),
                "mm_token_type_ids": types, "pixel_values": torch.empty((patches, row), dtype=dtype),
                "image_grid_thw": torch.tensor(g, dtype=torch.long)}

    return make


def _window_lengths(v: VisionSpec, grid: tuple[int, int, int]) -> list[int]:
    """get_vision_window_index's windows of one image, in patches: the merged grid cut into windows of
    window_size / merge / patch merged tokens a side (padded; the empty windows' repeated boundaries dropped by
    unique_consecutive), each merged token merge^2 patches."""
    t, h, w = grid
    side = v.window_size // v.spatial_merge_size // v.patch_size
    gh, gw = h // v.spatial_merge_size, w // v.spatial_merge_size
    rows = [min(side, gh - i) for i in range(0, gh, side)]
    cols = [min(side, gw - j) for j in range(0, gw, side)]
    return [r * c * v.spatial_merge_size ** 2 for _ in range(t) for r in rows for c in cols]


_answer = threading.local()


@contextlib.contextmanager
def _fused_forward() -> Iterator[None]:
    """A frozen tower block's attention, whose inputs and weights need no grad: on CUDA
    scaled_dot_product_attention picks its fused kernel whatever requires_grad says
    (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp), so only its forward allocations (out, logsumexp)
    happen; no graph is recorded either way, so the block runs under no_grad with trace/_cuda.py's fused
    no-grad path (the math path trace/_cuda.py keeps for no-grad inputs elsewhere materialises heads x n^2
    scores per image, which a frozen tower on CUDA never does)."""
    from vramcalc.trace import _cuda

    saved = _cuda._NO_GRAD_FUSED[0]
    _cuda._NO_GRAD_FUSED[0] = True
    try:
        with torch.no_grad():
            yield
    finally:
        _cuda._NO_GRAD_FUSED[0] = saved


@contextlib.contextmanager
def _no_graph_fused() -> Iterator[None]:
    """sdpa on inputs that need no grad, with grad enabled: the fused forward (trace/_cuda.py _NO_GRAPH_FUSED)."""
    from vramcalc.trace import _cuda

    saved = _cuda._NO_GRAPH_FUSED[0]
    _cuda._NO_GRAPH_FUSED[0] = True
    try:
        yield
    finally:
        _cuda._NO_GRAPH_FUSED[0] = saved


@contextlib.contextmanager
def _answering(values: list[int]) -> Iterator[None]:
    """Within the block, Tensor.tolist() of a fake tensor of len(values) elements returns `values`."""
    saved = getattr(_answer, "values", None)
    _answer.values = values
    try:
        yield
    finally:
        _answer.values = saved


@contextlib.contextmanager
def qwen_emulation(model: ModelSpec, training: TrainingSpec) -> Iterator[None]:
    """The data-dependent steps of Qwen2-VL's / Qwen2.5-VL's forward, for fake tensors (the module docstring)."""
    from torch._subclasses.fake_tensor import FakeTensor
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m25
    from transformers.models.qwen2_vl import modeling_qwen2_vl as m2

    v = model.vision
    assert v is not None
    g = grids(model, training)
    patches = sum(t * h * w for t, h, w in g)
    frames = [h * w for t, h, w in g for _ in range(t)]  # get_vision_cu_seqlens: one segment per frame
    windows = [n for grid in g for n in _window_lengths(v, grid)] if v.kind == "qwen2_5_vl" else []
    tokens = [t * h * w // v.spatial_merge_size ** 2 for t, h, w in g]
    lengths: dict[int, list[int]] = {}  # id(cu_seqlens) -> its segment lengths

    def position_ids(grid_thw: torch.Tensor, spatial_merge_size: Any, include_temporal: bool = False,
                     kwargs: dict | None = None) -> torch.Tensor:
        return torch.empty((patches, 3 if include_temporal else 2), dtype=torch.long, device=grid_thw.device)

    def seqlens(grid_thw: torch.Tensor, config: Any, merge_temporal: bool = False,
                kwargs: dict | None = None) -> tuple[torch.Tensor, None]:
        cu = torch.empty((len(frames) + 1,), dtype=torch.int32, device=grid_thw.device)
        lengths[id(cu)] = frames
        return cu, None  # get_max_seqlen: None unless flash attention (traced as sdpa here)

    def window_index(grid_thw: torch.Tensor, spatial_merge_size: int, window_size: int, patch_size: int,
                     kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.empty((patches // spatial_merge_size ** 2,), dtype=torch.long, device=grid_thw.device)
        cu = torch.empty((len(windows) + 1,), dtype=torch.int32, device=grid_thw.device)
        lengths[id(cu)] = windows
        return index, cu

    def attention(original: Any) -> Any:
        def forward(self: Any, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, *args: Any,
                    **kwargs: Any) -> Any:
            no_graph = torch.is_grad_enabled() and not hidden_states.requires_grad and not any(
                p.requires_grad for p in self.parameters())
            # an adapted proj over inputs without grad (LoRA on the tower, its bottom block without checkpointing):
            # q, k and v need no grad, so CUDA's sdpa runs its fused forward, no graph (trace/_cuda.py
            # _NO_GRAPH_FUSED); the math path would materialise heads x n^2 scores
            inputs_free = torch.is_grad_enabled() and not hidden_states.requires_grad and not any(
                p.requires_grad for p in self.qkv.parameters())
            with _answering(lengths[id(cu_seqlens)]), (_fused_forward() if no_graph else
                                                       _no_graph_fused() if inputs_free else contextlib.nullcontext()):
                return original(self, hidden_states, cu_seqlens, *args, **kwargs)
        return forward

    def image_features(original: Any) -> Any:
        def get(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _answering(tokens):
                return original(self, *args, **kwargs)
        return get

    def placeholder_mask(self: Any, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, *args: Any,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return ((input_ids == self.config.image_token_id).unsqueeze(-1),
                (input_ids == self.config.video_token_id).unsqueeze(-1))

    def rope_index(self: Any, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = input_ids.shape
        return (torch.zeros((3, b, s), dtype=input_ids.dtype, device=input_ids.device),
                torch.zeros((b, 1), dtype=torch.long, device=input_ids.device))

    real_tolist = FakeTensor.tolist

    def tolist(self: FakeTensor) -> Any:
        values = getattr(_answer, "values", None)
        if values is not None and self.numel() == len(values):
            return list(values)
        return real_tolist(self)

    def masked_scatter(self: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if not (self.requires_grad or source.requires_grad) or not torch.is_grad_enabled():
            return torch.empty_like(self)
        return _MaskedScatter.apply(self, mask, source)  # type: ignore[no-any-return]

    patches_: list[tuple[Any, str, Any]] = [(FakeTensor, "tolist", tolist),
                                            (torch.Tensor, "masked_scatter", masked_scatter)]
    for mod, model_cls, attn_cls in ((m2, m2.Qwen2VLModel, m2.VisionAttention),
                                     (m25, m25.Qwen2_5_VLModel, m25.Qwen2_5_VLVisionAttention)):
        patches_ += [(mod, "get_vision_position_ids", position_ids), (mod, "get_vision_attention_seqlens", seqlens),
                     (attn_cls, "forward", attention(attn_cls.forward)),
                     (model_cls, "get_image_features", image_features(model_cls.get_image_features)),
                     (model_cls, "get_placeholder_mask", placeholder_mask), (model_cls, "get_rope_index", rope_index)]
    patches_.append((m25, "get_vision_window_index", window_index))
    # Tensor.masked_scatter lives on torch._C.TensorBase: restored by deleting the Tensor attribute
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches_]
    try:
        for owner, name, new in patches_:
            setattr(owner, name, new)
        yield
    finally:
        for owner, name, old in reversed(saved):
            if old is None:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
