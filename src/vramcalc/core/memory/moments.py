"""The phase model's moments: each phase peaks at one of a few instants, each a sum of named terms.

`memory.estimate` computes every instant it models as a `RawMoment` (a key, a layout of term names and
components, and the bytes of each term), and a phase's figure is the largest total among its moments. The
same moments are what `explain` prints and what `timeline` draws, so neither derives the arithmetic a
second time. Raw moments are plain tuples (a sweep builds millions of them); `name_moments` turns them
into `Moment`s with `Term`s for the readers.
"""

from __future__ import annotations

from dataclasses import dataclass

Layout = tuple[tuple[str, str], ...]  # (term name, component) per value
# (key "phase.instant", layout, bytes per term) of what is alive beyond the base (weights, optimizer state and
# communication buffers), which every moment of a training step holds.
RawMoment = tuple[str, Layout, tuple[int, ...]]

_A, _G, _T = "activations", "gradients", "temporaries"
_BASE: Layout = (("weights", "weights"), ("optimizer state", "optimizer_state"),
                 ("communication buffers", "communication"))

_ACC = ("gradients (accumulating)", _G)
_HEAD_G = ("gradients (head)", _G)
_ALL_G = ("gradients", _G)
_SAVED = ("saved layer activations", _A)
_KEPT = ("kept layer inputs", _A)
_SHARED = ("shared", _A)  # RoPE tables, eager mask, dropout mask
_COPIES = ("autocast weight copies", _A)
_HEAD_SAVED = ("head + loss saved", _A)
_NORM_SAVED = ("final norm saved", _A)
_RECOMPUTED = ("recomputed layer", _A)
_LAYER_COPIES = ("its autocast copies", _A)
_RECOMPUTING = ("recomputed layer up to its MLP", _A)
_LAST_LAYER = ("last layer's activations", _A)
_LAYER_FWD = ("layer forward temporaries", _T)
_LOSS_FWD = ("loss forward temporaries", _T)
_HEAD_G_FWD = ("head gradient (from forward)", _T)
_LOSS_BWD = ("loss gradients", _T)
_HEAD_BWD = ("head backward", _T)
_LAYER_BWD = ("layer backward temporaries", _T)
_STEP_T = ("step temporaries", _T)
_SUMMED = ("gradient being summed", _T)
_REFERENCE = ("reference model's no-grad forward", _T)
_REWARD = ("reward model's no-grad forward (and the reference's log-probs)", _T)
_GEN_KV = ("KV cache of the generation batch", "kv_cache")
_GEN_T = ("generate() logits, sampling and layer workspace", _T)
_LOGPROBS = ("no-grad log-prob pass (old policy / reference)", _T)


def _layout(*terms: tuple[str, str]) -> Layout:
    return terms


# Without checkpointing (every saving layer keeps its saved set until backward reaches it).
FWD_LAYER = _layout(_ACC, _SAVED, _SHARED, _COPIES, _LAYER_FWD)
FWD_LOSS = _layout(_ACC, _SAVED, _SHARED, _COPIES, _HEAD_SAVED, _LOSS_FWD, _HEAD_G_FWD)
FWD_REFERENCE = _layout(_ACC, _SAVED, _SHARED, _COPIES, _HEAD_SAVED, _REFERENCE)
FWD_REWARD = _layout(_ACC, _SAVED, _SHARED, _COPIES, _HEAD_SAVED, _REWARD)
BWD_START = _layout(_ACC, _SAVED, _SHARED, _COPIES, _HEAD_SAVED, _LOSS_BWD, _HEAD_G_FWD)
BWD_HEAD = _layout(_ACC, _SAVED, _SHARED, _COPIES, _NORM_SAVED, _HEAD_BWD)
BWD_TOP = _layout(_HEAD_G, _SAVED, _SHARED, _COPIES, _LAYER_BWD)
# ... full fine-tuning at the top layer's MLP product node: its down_proj's gradient written (memory/__init__.py
# _mlp_node)
_HEAD_DOWN_G = ("gradients (head, the layer's down_proj)", _G)
BWD_TOP_NODE = _layout(_HEAD_DOWN_G, _SAVED, _SHARED, _COPIES, _LAYER_BWD)
BWD_HEAD_STEP = _layout(_HEAD_G, _SAVED, _SHARED, _COPIES, _STEP_T)
# ... full fine-tuning at the final RMSNorm's fp32 backward, before the top layer's (memory/__init__.py)
BWD_FINAL_NORM = _layout(_HEAD_G, _SAVED, _SHARED, _COPIES, ("final norm's fp32 input", _A),
                         ("RMSNorm backward in fp32", _T))
BWD_BOTTOM = _layout(_ALL_G, _SHARED, _LAST_LAYER, _LAYER_COPIES, _LAYER_BWD)
# --fp8 (memory/fp8.py): the bottom layer's swapped Linears, before its own gradients and the embedding's
_FP8_G = ("gradients above the bottom layer", _G)
_FP8_T = ("a swapped Linear's float8 casts", _T)
BWD_BOTTOM_FP8 = _layout(_FP8_G, _SHARED, _LAST_LAYER, _LAYER_COPIES, _FP8_T)
# With checkpointing (each layer keeps its input; one layer is recomputed in backward).
FWD_LAYER_CK = _layout(_ACC, _KEPT, _SHARED, _COPIES, _LAYER_FWD)
FWD_LOSS_CK = _layout(_ACC, _KEPT, _SHARED, _COPIES, _HEAD_SAVED, _LOSS_FWD, _HEAD_G_FWD)
FWD_REFERENCE_CK = _layout(_ACC, _KEPT, _SHARED, _COPIES, _HEAD_SAVED, _REFERENCE)
FWD_REWARD_CK = _layout(_ACC, _KEPT, _SHARED, _COPIES, _HEAD_SAVED, _REWARD)
BWD_START_CK = _layout(_ACC, _KEPT, _SHARED, _HEAD_SAVED, _LOSS_BWD, _HEAD_G_FWD)
BWD_HEAD_CK = _layout(_ACC, _KEPT, _SHARED, _NORM_SAVED, _HEAD_BWD)
BWD_RECOMPUTE_CK = _layout(_HEAD_G, _KEPT, _SHARED, _RECOMPUTING, _LAYER_COPIES, _LAYER_FWD)
BWD_RERUN_END_CK = _layout(_HEAD_G, _KEPT, _SHARED, _RECOMPUTED, _LAYER_COPIES, _LAYER_FWD)
BWD_TOP_CK = _layout(_HEAD_G, _KEPT, _SHARED, _RECOMPUTED, _LAYER_COPIES, _LAYER_BWD)
BWD_TOP_NODE_CK = _layout(_HEAD_DOWN_G, _KEPT, _SHARED, _RECOMPUTED, _LAYER_COPIES, _LAYER_BWD)
BWD_HEAD_STEP_CK = _layout(_HEAD_G, _KEPT, _SHARED, _RECOMPUTED, _LAYER_COPIES, _STEP_T)
BWD_BOTTOM_CK = _layout(_ALL_G, _SHARED, _RECOMPUTED, _LAYER_COPIES, _LAYER_BWD)
BWD_BOTTOM_FP8_CK = _layout(_FP8_G, _SHARED, _RECOMPUTED, _LAYER_COPIES, _FP8_T)
# Offloaded without checkpointing (memory/savers.py): forward keeps torchtune's stash of the last packed tensors, and
# backward brings back one node's saved tensors at a time (and the previous node's, until this node has run).
_STASH = ("offload stash (last packed tensors)", _A)
_BACK = ("brought back from host (this node's and the previous one's)", _A)
FWD_LAYER_OFF = _layout(_ACC, _STASH, _SHARED, _COPIES, _LAYER_FWD)
BWD_TOP_OFF = _layout(_HEAD_G, _SHARED, _BACK, _LAYER_COPIES, _LAYER_BWD)
BWD_BOTTOM_OFF = _layout(_ALL_G, _SHARED, _BACK, _LAYER_COPIES, _LAYER_BWD)
BWD_RECOMPUTE_BOTTOM_OFF = _layout(_ALL_G, _KEPT, _SHARED, _RECOMPUTING, _LAYER_COPIES, _LAYER_FWD)
BWD_NORM_OFF = _layout(_ALL_G, _SHARED, ("RMSNorm backward in fp32, its input brought back", _T))
BWD_NORM_TOP_OFF = _layout(("gradients (the head's and the top layer's made)", _G), _SHARED,
                           ("RMSNorm backward in fp32, its input brought back", _T))
# LISA (memory/lisa.py): the lowest trained layer's backward, the trained layers' gradients made, every frozen layer
# below still holding its saved set (checkpointing: its input).
_TRAINED_G = ("gradients (the trained layers', head's and norm's)", _G)
BWD_LOWEST_TRAINED = _layout(_TRAINED_G, ("saved sets of the frozen layers below", _A), _SHARED,
                             ("the lowest trained layer's activations", _A), _LAYER_COPIES, _LAYER_BWD)
BWD_LOWEST_TRAINED_CK = _layout(_TRAINED_G, ("kept inputs of the frozen layers below", _A), _SHARED, _RECOMPUTED,
                                _LAYER_COPIES, _LAYER_BWD)
# Mamba-2 (memory/ssm.py): the bottom layer's recomputed forward at the scan's close, every upper gradient made.
BWD_RECOMPUTE_BOTTOM_CK = _layout(_ALL_G, _SHARED, _RECOMPUTING, _LAYER_COPIES, _LAYER_FWD)
# --freeze-layers with checkpointing (memory/__init__.py _frozen_rerun): a frozen layer rerun for its input's gradient.
BWD_RECOMPUTE_FROZEN_CK = _layout(_ALL_G, _KEPT, _SHARED, _RECOMPUTING, _LAYER_COPIES, _LAYER_FWD)
BWD_FROZEN_CK = _layout(_ALL_G, _KEPT, _SHARED, _RECOMPUTED, _LAYER_COPIES, _LAYER_BWD)
# Bamba (memory/hybrid.py): the lowest mixer layer's recomputed forward, every gradient above it made.
BWD_RECOMPUTE_MIXER_CK = _layout(("gradients of the layers above", _G), _KEPT, _SHARED, _RECOMPUTING, _LAYER_COPIES,
                                 _LAYER_FWD)
# GRPO (memory/rl.py): generate() on the generation batch and the no-grad log-prob passes, before the step.
FWD_GENERATE = _layout(_ACC, _COPIES, _GEN_KV, _GEN_T)
FWD_LOGPROBS = _layout(_ACC, _LOGPROBS)
FWD_RL_REWARD = _layout(_ACC, ("reward model's no-grad forward (and the log-prob passes' results)", _T))
# Vision-language models (memory/vision.py): the vision tower's no-grad forward, before the language model.
FWD_VISION = _layout(_ACC, ("vision tower forward (no grad)", _T))
BWD_VISION = _layout(("gradients (all but the tower's)", _G), ("vision tower saved (--train-vision)", _A))
# Gemma 3's SigLIP tower backward (memory/vision.py _siglip_*), run last: the gradients so far, what the tower still
# keeps (checkpointed layer inputs, or its saved set with --train-vision), one layer's recomputed saved set and
# that layer's backward transients.
BWD_VISION_TOWER = _layout(("gradients", _G), ("vision tower kept / saved", _A),
                           ("vision tower layer (recomputed) and its backward", _T))
# axolotl ReLoRA (memory/relora.py): a restart before the step's forward, every gradient None.
FWD_RELORA = _layout(("ReLoRA merge: the largest layer's B @ A and its scaled copy (or the Adam states' pruning)", _T))
FWD_WEIGHT_SYNC = _layout(_ACC, ("weight sync's packed broadcast buffers (vLLM server)", _T))
# Both, and count-only presets.
BWD_END = _layout(_ALL_G, _SUMMED)
# ... and a dense decoder's untied embedding (memory/__init__.py _dense_late_gradient_bytes): embedding_dense_backward
# writes its gradient last, beside its incoming gradient
BWD_END_EMBED = _layout(_ALL_G, _SUMMED, ("the embedding's incoming gradient", _T))
STEP = _layout(_ALL_G, _STEP_T)
STEP_DONE: Layout = ()  # optimizer in backward: nothing left to do in the step phase beyond the base
FWD_ALL = _layout(_ACC, ("activations (from the preset)", _A))
BWD_ALL = _layout(_ALL_G, ("activations (from the preset)", _A))

LABELS = {
    "forward.layer": "forward at the last layer",
    "forward.loss": "end of forward: loss computed",
    "forward.aux_loss": "end of forward: the router aux loss after the loss (MoE, output_router_logits)",
    "forward.all": "forward",
    "forward.reference": "the reference model's forward (DPO/KTO, no grad)",
    "forward.reward": "the reward model's forward on the completions (Online DPO / GRPO, no grad)",
    "forward.generate": "generate(): completions of the generation batch (GRPO, no grad)",
    "forward.relora_merge": "ReLoRA restart before the step: LoRA merged layer by layer, states pruned (axolotl)",
    "forward.weight_sync": "weights streamed to the vLLM server before generation (GRPO / Online DPO, no grad)",
    "forward.logprobs": "log-prob passes after generate() (GRPO old policy / reference, no grad)",
    "forward.vision": "forward: the vision tower (no grad)",
    "forward.cross": "forward at the top cross-attention layer (Llama-3.2-Vision)",
    "forward.cross_mask": "forward: the cross-attention mask expanded (Llama-3.2-Vision)",
    "backward.cross": "backward at the top cross-attention layer (Llama-3.2-Vision)",
    "backward.vision": "backward: the trained vision tower's",
    "backward.merger": "backward: the trained merger's (Qwen-VL)",
    "backward.tower": "backward: the frozen tower's blocks recomputed (Qwen-VL, checkpointing)",
    "backward.start": "backward starts: loss gradients",
    "backward.head": "backward at the LM head (loss chunks)",
    "backward.head_step": "backward: the head's optimizer step (optimizer in backward)",
    "backward.recompute": "backward: the top layer's forward recomputed (checkpointing)",
    "backward.rerun_end": "backward: the top layer's forward recomputed to its end (checkpointing, a gelu_new MLP "
                          "under autocast)",
    "backward.recompute_bottom": "backward: the bottom layer's forward recomputed, every upper gradient made (Mamba-2, "
                                 "offloaded checkpointing)",
    "backward.recompute_frozen": "backward: a frozen layer's forward recomputed for its input's gradient, every "
                                 "gradient made (--freeze-layers, checkpointing)",
    "backward.frozen": "backward at a frozen layer, for its input's gradient, every gradient made (--freeze-layers, "
                       "checkpointing)",
    "backward.offload_norm": "backward: an RMSNorm's fp32 backward, its input brought back from host RAM (offload)",
    "backward.recompute_mixer": "backward: the lowest mixer layer's forward recomputed, the gradients above it made "
                                "(Bamba)",
    "backward.lowest_trained": "backward at the lowest trained layer, the frozen layers below still saved (LISA)",
    "backward.final_norm": "backward at the final norm (its fp32 backward, full fine-tuning)",
    "backward.top": "backward at the top layer",
    "backward.bottom": "backward at the bottom layer",
    "backward.bottom_mixer": "backward at the bottom layer's mixer: its attention's and MLP's gradients made "
                             "(Falcon-H1)",
    "backward.bottom_fp8": "backward at the bottom layer's float8 Linears (--fp8): the gradients above it exist",
    "backward.end": "end of backward",
    "backward.all": "backward",
    "optimizer_step.step": "optimizer step",
    "optimizer_step.done": "optimizer step (already done in backward)",
    # PPO (memory/ppo.py, TRL 0.19.1 PPOTrainer): the rollout (no grad), then PolicyAndValueWrapper's micro-batch
    "forward.rollout_generate": "rollout: generate() of a chunk, every step's fp32 scores kept (PPO, no grad)",
    "forward.rollout_pad": "rollout: the chunks' logits padded into one tensor (PPO, no grad)",
    "forward.rollout_reference": "rollout: the reference's forward on a chunk (PPO, no grad)",
    "forward.rollout_scores": "rollout: the value and reward models' forwards on a chunk (PPO, no grad)",
    "forward.value": "forward: the value model's backbone and score (PPO)",
    "forward.policy": "forward: the policy, beside the value model's saved set (PPO)",
    "backward.policy": "backward through the policy (PPO)",
    "backward.value": "backward through the value model (PPO)",
    "optimizer_step.entropy": "after the step: the entropy of the kept logits (PPO, no grad)",
}


@dataclass(frozen=True, slots=True)
class Term:
    """One named amount of bytes alive at a moment, and the component it belongs to."""

    name: str
    component: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Moment:
    """One instant of a phase: what is alive then."""

    key: str  # "phase.instant"
    label: str
    terms: tuple[Term, ...]

    @property
    def phase(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def total(self) -> int:
        return sum(t.bytes for t in self.terms)

    def component(self, name: str) -> int:
        """Bytes of this moment's terms that belong to component `name`."""
        return sum(t.bytes for t in self.terms if t.component == name)


def name_moments(raw: tuple[RawMoment, ...], base: tuple[int, int, int]) -> tuple[Moment, ...]:
    """The raw moments of a Breakdown with their terms named, the base (weights, optimizer state,
    communication) first."""
    head = tuple(Term(n, c, v) for (n, c), v in zip(_BASE, base, strict=True))
    return tuple(Moment(key, LABELS[key], head + tuple(Term(n, c, v) for (n, c), v in zip(layout, values, strict=True)))
                 for key, layout, values in raw)


def phase_peaks(base: int, raw: tuple[RawMoment, ...]) -> dict[str, int]:
    """`base` + the largest moment of each phase, in the order the phases first appear."""
    peaks: dict[str, int] = {}
    for key, _, values in raw:
        phase = key[:key.index(".")]
        total = base + sum(values)
        if total > peaks.get(phase, -1):
            peaks[phase] = total
    return peaks
