"""The memory of one step over time: forward layer by layer, the loss, backward layer by layer, the step.

Pure: standard library only, integer bytes. The exact points are the core's own moments
(`Breakdown.named_moments()`, memory/moments.py), component by component, so the timeline's maximum is
`Breakdown.tensor_peak_bytes` and its maximum per phase is `Breakdown.phases[phase]`, exactly
(tests/test_timeline.py checks both over presets and settings).

What is exact and what is drawn between exact points:
- Exact (the core's moments): the last forward layer (with its forward transient), the loss forward, the
  start of backward (the loss's gradient temporaries), the LM head's backward of a chunked loss, the top
  backward layer (the head's gradient and every layer's saved set), the head's step of an optimizer in
  backward, the bottom backward layer (every gradient and one layer's saved set), the backward end (tied
  embeddings / accumulation), the optimizer step; for inference, prefill and decode.
- Interpolated (the core models no per-layer figure): forward layers below the last hold the saved sets
  (or, with checkpointing, the inputs) of the layers done so far, and the autocast weight copies of those
  layers; backward layers between the top and the bottom take the straight line between those two points,
  component by component (layers are alike; the embedding's gradient is spread over the layers). Integer division
  rounds down, so no interpolated point exceeds the exact points around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory import Breakdown, _plan, estimate, new_tokens
from vramcalc.core.memory.inference import generate_terms
from vramcalc.core.memory.moments import Moment
from vramcalc.core.params import is_ssm

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# Stacking order, bottom to top: what is constant over the step first, then what changes.
TIMELINE_COMPONENTS = ("weights", "optimizer_state", "communication", "kv_cache", "gradients", "activations",
                       "temporaries")

INTERPOLATED_NOTE = ("timeline: the core models the last forward layer, the loss, the first and last backward "
                     "layers and the optimizer step exactly; the layers between are drawn on the straight line "
                     "between them (layers alike, the embedding's gradient spread over the layers).")


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """Tensor bytes per component at one moment of the step."""

    label: str  # "forward layer 3", "loss", "backward layer 3", "optimizer step", ...
    phase: str  # a key of Breakdown.phases
    components: dict[str, int]  # keys: TIMELINE_COMPONENTS (zeros included)
    exact: bool  # one of the core's own terms (False: interpolated between two of them)

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())


@dataclass(frozen=True, slots=True)
class Timeline:
    """The points of one step, with the Breakdown they come from."""

    breakdown: Breakdown
    points: tuple[TimelinePoint, ...]
    notes: tuple[str, ...]

    @property
    def peak_index(self) -> int:
        """The first point at the tensor peak."""
        totals = [p.total_bytes for p in self.points]
        return totals.index(max(totals))


def _point(label: str, phase: str, exact: bool, **parts: int) -> TimelinePoint:  # inference
    return TimelinePoint(label, phase, {c: parts.get(c, 0) for c in TIMELINE_COMPONENTS}, exact)


def _lerp(a: int, b: int, i: int, n: int) -> int:
    """The integer at i/n of the way from a to b, rounded down (never above the straight line)."""
    return a + (b - a) * i // n if n else a


# What the timeline calls each of the core's moments (memory/moments.py) on its time axis.
_POINT_LABELS = {
    "forward.all": "forward", "backward.all": "backward", "forward.loss": "loss",
    "forward.reference": "reference forward", "forward.vision": "vision tower (no grad)",
    "forward.cross": "cross-attention layer forward", "forward.cross_mask": "cross-attention mask",
    "backward.cross": "cross-attention layer backward",
    "backward.vision": "vision tower backward",
    "backward.merger": "merger backward", "backward.tower": "vision tower backward (recomputed)",
    "backward.start": "loss backward", "backward.final_norm": "final norm backward",
    "backward.recompute": "top layer's forward rerun (checkpointing)",
    "backward.rerun_end": "top layer's forward rerun, its end (checkpointing)",
    "backward.recompute_bottom": "bottom layer's forward rerun (checkpointing, Mamba-2)",
    "backward.recompute_frozen": "frozen layer's forward rerun (checkpointing, --freeze-layers)",
    "backward.frozen": "frozen layer's backward (checkpointing, --freeze-layers)",
    "backward.recompute_mixer": "lowest mixer layer's forward rerun (checkpointing, Bamba)",
    "backward.lowest_trained": "lowest trained layer's backward (LISA)",
    "backward.bottom_fp8": "bottom layer's float8 casts (--fp8)",
    "backward.bottom_mixer": "bottom layer's mixer backward (Falcon-H1)",
    "backward.head": "LM head backward (loss chunks)", "backward.head_step": "head's optimizer step (in backward)",
    "backward.end": "backward end (embedding gradient)", "optimizer_step.step": "optimizer step",
    "optimizer_step.done": "optimizer step (done in backward)",
    "forward.relora_merge": "ReLoRA restart (merge, before the step)",
}


def _exact(mo: Moment, label: str) -> TimelinePoint:
    return TimelinePoint(label, mo.phase, {c: mo.component(c) for c in TIMELINE_COMPONENTS}, True)


def _term(mo: Moment, *names: str) -> int:
    return sum(t.bytes for t in mo.terms if t.name in names)


def timeline(model: ModelSpec, training: TrainingSpec) -> Timeline:
    """The step of `model` under `training` as points over time (see the module docstring)."""
    b = estimate(model, training)
    if new_tokens.active(training):  # --add-tokens: the resized model's step (memory/new_tokens.py)
        model, training = new_tokens.view(model, training)
    if training.mode == "inference":
        return Timeline(b, tuple(_inference_points(model, training, b)), ())
    moments = b.named_moments()
    act = _plan(model, training).activations
    # a count-only preset: the core's three phases, nothing per layer; an encoder-decoder (memory/seq2seq.py): its
    # moments, not drawn per block yet
    if act is None or not hasattr(act, "n_layers"):
        return Timeline(b, tuple(_exact(mo, _POINT_LABELS.get(mo.key, mo.label)) for mo in moments), ())
    n = act.n_layers
    saving = act.saving_layers
    frozen = n - saving  # layers below the first trainable one save nothing (freeze)
    points: list[TimelinePoint] = []
    bottom_grads = 0
    for mo in moments:
        if mo.key == "forward.layer":
            # Forward: layer i done holds the saved sets (checkpointing: inputs) of the saving layers up to i
            # and the autocast casts made so far; the last layer is the core's moment.
            layers = _term(mo, "saved layer activations", "kept layer inputs")
            copies = _term(mo, "autocast weight copies")
            rest = {c: mo.component(c) for c in TIMELINE_COMPONENTS}
            rest["activations"] -= layers + copies
            for i in range(1, n):
                held = layers * max(0, i - frozen) // saving if saving else 0
                parts = dict(rest, activations=rest["activations"] + held + min(copies, act.layer_copies * i))
                points.append(TimelinePoint(f"forward layer {i}", "forward", parts, False))
            points.append(_exact(mo, f"forward layer {n}"))
        elif mo.key == "backward.top":
            top = mo
        elif mo.key == "backward.bottom":
            points += _backward_layers(top, mo, n, saving)
            bottom_grads = mo.component("gradients")
        elif mo.key != "backward.end" or _term(mo, "gradient being summed") \
                or mo.component("gradients") > bottom_grads:  # gradients written after the bottom (encoder.py)
            points.append(_exact(mo, _POINT_LABELS[mo.key]))
    notes = (INTERPOLATED_NOTE,) if n > 1 or saving != n else ()
    return Timeline(b, tuple(points), notes)


def _backward_layers(top: Moment, bottom: Moment, n: int, saving: int) -> list[TimelinePoint]:
    """Backward layers, top to bottom: the core's two moments and the straight line between them."""
    span = max(saving, 1)
    rows = [(j, n - j) for j in range(span)]
    if span == 1:  # one layer: its start (top moment) and its end (bottom moment) are two points
        rows = [(0, n), (1, n)]
    steps = len(rows) - 1
    a = {c: top.component(c) for c in TIMELINE_COMPONENTS}
    z = {c: bottom.component(c) for c in TIMELINE_COMPONENTS}
    points = []
    for j, layer in rows:
        suffix = " start" if span == 1 and j == 0 else " end" if span == 1 else ""
        label = f"backward layer {layer}{suffix}"
        if j == 0:
            points.append(_exact(top, label))
        elif j == steps:
            points.append(_exact(bottom, label))
        else:
            points.append(TimelinePoint(label, "backward", {c: _lerp(a[c], z[c], j, steps) for c in a}, False))
    return points


def _inference_points(model: ModelSpec, training: TrainingSpec, b: Breakdown) -> list[TimelinePoint]:
    """generate()'s prefill and last decode step at their largest moments (memory/inference.py generate_terms)."""
    kv = {"weights": b.weights, "kv_cache": b.kv_cache}
    if not model.has_architecture:
        return [_point("prefill", "prefill", True, **kv), _point("decode", "decode", True, **kv)]
    if is_ssm(model):  # Mamba (memory/ssm.py estimate_inference): the fixed state, then the scan or the logits
        points = []
        for phase in ("prefill", "decode"):
            rest = b.phases[phase] - b.weights - b.kv_cache
            scan = rest if rest > b.temporaries else 0
            points.append(_point(phase, phase, True, **kv, activations=scan, temporaries=rest - scan))
        return points
    g = generate_terms(model, training)

    def moment(label: str, kv_bytes: int, transient: int, layer: int, logits: int) -> TimelinePoint:
        # the larger of the layer's moment and the logits', with the persistent/transient cache terms
        act, temp = (layer, 0) if layer >= logits else (0, logits)
        return _point(label, label, True, weights=b.weights, kv_cache=kv_bytes, activations=act,
                      temporaries=temp + transient + g.dequant_buffer)

    prefill = moment("prefill", g.kv_prefill, 0, max(g.prefill_workspace, g.prefill_attention), g.prefill_logits)
    if training.new_tokens > 1:
        decode = moment("decode", g.kv_decode, g.kv_transient, max(g.decode_workspace, g.decode_attention),
                        g.decode_logits)
    else:
        decode = moment("decode", g.kv_prefill, 0, 0, g.prefill_logits)
    return [prefill, decode]
