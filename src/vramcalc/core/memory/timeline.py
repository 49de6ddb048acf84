"""The memory of one step over time: forward layer by layer, the loss, backward layer by layer, the step.

Pure: standard library only, integer bytes. The points are built from the core's own phase model
(`memory.estimate`'s Breakdown: its components, its `details` and the cached per-settings plan), so the
timeline's maximum is `Breakdown.tensor_peak_bytes` and its maximum per phase is `Breakdown.phases[phase]`,
exactly (tests/test_timeline.py checks both over presets and settings).

What is exact and what is drawn between exact points:
- Exact (the core's terms, component by component): the last forward layer (with its forward transient),
  the loss forward, the start of backward (the loss's gradient temporaries), the top backward layer (the
  head's gradient and every layer's saved set), the bottom backward layer (every gradient and one layer's
  saved set), the backward end (tied embeddings / accumulation), the optimizer step; for inference, prefill
  and decode.
- Interpolated (the core models no per-layer figure): forward layers below the last hold the saved sets
  (or, with checkpointing, the inputs) of the layers done so far, and the autocast weight copies of those
  layers; backward layers between the top and the bottom take the straight line between those two points,
  component by component (layers are alike; the embedding's gradient is spread over them). Integer division
  rounds down, so no interpolated point exceeds the exact points around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory import Breakdown, _plan, estimate
from vramcalc.core.memory.inference import workspace_per_token

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


def _point(label: str, phase: str, exact: bool, **parts: int) -> TimelinePoint:
    return TimelinePoint(label, phase, {c: parts.get(c, 0) for c in TIMELINE_COMPONENTS}, exact)


def _lerp(a: int, b: int, i: int, n: int) -> int:
    """The integer at i/n of the way from a to b, rounded down (never above the straight line)."""
    return a + (b - a) * i // n if n else a


def timeline(model: ModelSpec, training: TrainingSpec) -> Timeline:
    """The step of `model` under `training` as points over time (see the module docstring)."""
    b = estimate(model, training)
    states = {"weights": b.weights, "optimizer_state": b.optimizer_state, "communication": b.communication}
    if training.mode == "inference":
        return Timeline(b, tuple(_inference_points(model, training, b)), ())
    plan = _plan(model, training)
    act = plan.activations
    accum = training.grad_accum > 1
    grads_fwd = b.gradients if accum else 0
    d = b.details
    if act is None:  # a count-only preset: the core's three phases, nothing per layer
        return Timeline(b, (
            _point("forward", "forward", True, **states, gradients=grads_fwd, activations=b.activations),
            _point("backward", "backward", True, **states, gradients=b.gradients, activations=b.activations),
            _point("optimizer step", "optimizer_step", True, **states, gradients=b.gradients,
                   temporaries=d["temporaries.optimizer_step"]),
        ), ())
    n = act.n_layers
    saving = act.saving_layers
    frozen = n - saving  # layers below the first trainable one save nothing (freeze)
    per_layer = d["activations.per_layer"]
    once = d["activations.shared"]
    head_saved = d["activations.head_and_loss"]
    copies = d["activations.autocast_weight_copies"]
    layers = d["activations.layers"]  # all saved sets, or with checkpointing the kept inputs
    layer_fwd, layer_bwd = d["temporaries.layer_forward"], d["temporaries.layer_backward"]
    loss_fwd, loss_bwd = d["temporaries.loss_forward"], d["temporaries.loss_backward"]
    end_t = d["temporaries.backward_end"]
    step_t = d["temporaries.optimizer_step"]
    recomputed = d["activations.recomputed_layer"]
    layer_copies = act.layer_copies
    g_head = min(act.g_head, b.gradients)
    top_g = max(grads_fwd, g_head)
    points: list[TimelinePoint] = []

    # Forward: layer i done holds the saved sets (checkpointing: inputs) of the saving layers up to i and
    # the autocast casts made so far; the last layer holds all of them (the core's forward term).
    for i in range(1, n + 1):
        held = layers * max(0, i - frozen) // saving if saving else 0
        cast = copies if i == n else min(copies, layer_copies * i)
        points.append(_point(f"forward layer {i}", "forward", i == n, **states, gradients=grads_fwd,
                             activations=held + once + cast, temporaries=layer_fwd))
    points.append(_point("loss", "forward", True, **states, gradients=grads_fwd,
                         activations=layers + once + copies + head_saved, temporaries=loss_fwd))
    # Backward starts with the loss's gradient (under checkpointing the forward's casts are gone).
    start_copies = 0 if act.checkpointing else copies
    points.append(_point("loss backward", "backward", True, **states, gradients=grads_fwd,
                         activations=layers + once + start_copies + head_saved, temporaries=loss_bwd))
    # Backward layers, top to bottom: the core's top and bottom terms and the straight line between.
    # The bottom layer's own saved set (the core's activations.bottom_layer: smaller for LoRA without
    # checkpointing and for a MoE model's dense bottom layer).
    bottom_layer = d.get("activations.bottom_layer", per_layer)
    if act.checkpointing:
        top_acts = layers + once + recomputed + layer_copies
        bottom_acts = once + (bottom_layer if recomputed else 0) + layer_copies
    else:
        top_acts = layers + once + copies
        bottom_acts = once + (bottom_layer if saving else 0) + (layer_copies if saving else 0)
    span = max(saving, 1)
    rows = [(j, n - j) for j in range(span)]
    if span == 1:  # one layer: its start (top term) and its end (bottom term) are two points
        rows = [(0, n), (1, n)]
    steps = len(rows) - 1
    for j, layer in rows:
        ends = j in (0, steps)
        suffix = " start" if span == 1 and j == 0 else " end" if span == 1 else ""
        points.append(_point(f"backward layer {layer}{suffix}", "backward", ends, **states,
                             gradients=_lerp(top_g, b.gradients, j, steps),
                             activations=_lerp(top_acts, bottom_acts, j, steps), temporaries=layer_bwd))
    if end_t:
        points.append(_point("backward end (embedding gradient)", "backward", True, **states,
                             gradients=b.gradients, temporaries=end_t))
    points.append(_point("optimizer step", "optimizer_step", True, **states, gradients=b.gradients,
                         temporaries=step_t))
    notes = (INTERPOLATED_NOTE,) if n > 1 or saving != n else ()
    return Timeline(b, tuple(points), notes)


def _inference_points(model: ModelSpec, training: TrainingSpec, b: Breakdown) -> list[TimelinePoint]:
    """Prefill (the whole context at once) and one decode step, as the core's two phases."""
    kv = {"weights": b.weights, "kv_cache": b.kv_cache}
    if not model.has_architecture:
        return [_point("prefill", "prefill", True, **kv), _point("decode", "decode", True, **kv)]
    decode_ws = training.batch_size * workspace_per_token(model, training)
    return [
        _point("prefill", "prefill", True, **kv, activations=b.activations, temporaries=b.temporaries),
        _point("decode", "decode", True, **kv, activations=decode_ws, temporaries=b.temporaries),
    ]
