"""The MoE router's load-balancing aux loss (transformers `output_router_logits`), one added term of the step.

With `output_router_logits` true (a config.json's key, or --router-aux-loss) the ForCausalLM's forward returns every
MoE layer's router logits and adds `router_aux_loss_coef * load_balancing_loss_func(router_logits, ...)` to the loss
(transformers 5.24 models/{mixtral,qwen2_moe,qwen3_moe,gpt_oss}/modeling_*.py, the same function in the four):

- each router's `F.linear(hidden_states, weight)` output, (tokens, experts) in the compute dtype, is recorded by
  `OutputRecorder(<Family>TopKRouter, index=0)` (`_can_record_outputs["router_logits"]`) and kept from its layer to
  the loss: nothing else keeps it (the router's own softmax / topk save their outputs or indices, not the logits);
- load_balancing_loss_func runs layer by layer (no torch.cat, no one_hot in 5.24): `softmax(layer_gate, dim=-1)` in
  the logits' dtype (fp32 under autocast, where softmax is an fp32 op) saves its output for backward, `topk` of it
  (k values and int64 indices, freed with the loop's locals), `histc` of the indices cast to int32, and
  `routing_weights.float().sum(dim=0)` (an fp32 copy, freed at once; with an attention_mask, its product by the
  mask and the mask's fp32 copy too); the sums are vectors of num_experts;
- HF Trainer keeps only the loss (compute_loss drops the outputs), so the logits are freed before backward; the aux
  loss's backward runs first (its nodes are the newest) and leaves one (tokens, experts) gradient per MoE layer in
  the logits' dtype waiting for that layer's router, each freed as the backward reaches its layer.

So every moment from the forward's MoE layers to the backward's holds one (tokens, experts) tensor per MoE layer
(the logits, then their pending gradients), the bottom layer's backward at most its own, and the end of the
forward one more moment: the aux loss itself, after the cross-entropy, with every layer's saved softmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import moments as _m
from vramcalc.core.memory import upcast as _upcast
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# The families whose ForCausalLM computes load_balancing_loss_func as above (transformers 5.24).
FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss")
# The other MoE families vramcalc reads, and why each is refused rather than followed.
REFUSED = {
    "llama4": "Llama4ForCausalLM computes no aux loss (modeling_llama4.py: the router logits are only returned)",
    "deepseek_v2": "DeepseekV2ForCausalLM computes no aux loss (modeling_deepseek_v2.py: the logits are only returned)",
    "deepseek_v3": "DeepseekV3ForCausalLM computes no aux loss (modeling_deepseek_v3.py: the logits are only returned)",
    "jamba": "Jamba's MoE layers (every expert_layer_period-th) are not traced with it",
    "granitemoehybrid": "GraniteMoeHybrid's fp32 router logits are not traced with it",
    "nemotron_h": "Nemotron-H's router is not traced with it",
}
FLAG = "--router-aux-loss (config.json output_router_logits, LLaMA-Factory moe_aux_loss_coef)"
_AUX = ("router logits / their gradients (aux loss)", "activations")
_AUX_FWD = ("logits and router aux loss temporaries", "temporaries")


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    """Whether the step computes the router aux loss: the option, or the config.json's output_router_logits."""
    return t.router_aux_loss or m.output_router_logits


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """One line for a run the aux loss is not modelled on."""
    if not active(m, t) or (t.mode == "serve" and not t.router_aux_loss):
        return  # (vLLM runs its own model code: a config.json's output_router_logits changes nothing there)
    if not m.num_experts:
        raise UnsupportedCombination(f"{FLAG}: {m.name} is not a mixture-of-experts model (no router); drop it")
    if m.family in REFUSED:
        raise UnsupportedCombination(f"{FLAG} on {m.family} is not modelled: {REFUSED[m.family]}; set it false")
    if m.family not in FAMILIES or m.vision is not None or m.moe_capacity_factor is not None:
        raise UnsupportedCombination(f"{FLAG} is modelled for transformers' {', '.join(FAMILIES)} causal LMs, not "
                                     f"{m.name}; set it false")
    if t.mode != "train" or t.objective != "sft" or t.loss != "hf":
        raise UnsupportedCombination(f"{FLAG} is modelled for SFT training with --loss hf (the model's own loss), "
                                     f"not --mode {t.mode} --objective {t.objective} --loss {t.loss}; set it false")
    if t.tp > 1 or t.pp > 1:
        raise UnsupportedCombination(f"{FLAG} is modelled on data-parallel runs (one GPU, DDP, ZeRO, FSDP), not with "
                                     f"--tp {t.tp} --pp {t.pp}; set it false")
    if t.kernels != "hf" or t.method not in ("full", "freeze", "lora", "qlora"):
        raise UnsupportedCombination(f"{FLAG} is modelled with --kernels hf and --method full, freeze, lora or "
                                     f"qlora, not --kernels {t.kernels} --method {t.method}; set it false")


def moe_layers(m: ModelSpec) -> int:
    """MoE layers: every layer but Qwen-MoE's dense bottom ones (mlp_only_layers, io/hf_config.py _moe_layout)."""
    return (m.num_layers or 0) - min(m.first_dense_layers, m.num_layers or 0)


def logits_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """One MoE layer's router logits per token: experts x the compute dtype (F.linear's output; bf16 under
    autocast, whose linear is a 16-bit op)."""
    return m.num_experts * dtype_bytes(recipe.compute)


def loss_forward_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """load_balancing_loss_func's bytes per token at its last layer, beyond the logits: every layer's saved softmax
    (the logits' dtype; fp32 under autocast), the last layer's fp32 copy and its product by an attention_mask (a
    padding collator's; counted as an upper bound), the mask's fp32 copy, and topk's k values and int64 indices
    with their int32 cast (histc) or the mask repeated k times (scatter_add_)."""
    e, k = m.num_experts, m.experts_per_token
    s = 4 if recipe.autocast else dtype_bytes(recipe.compute)
    return moe_layers(m) * e * s + 2 * 4 * e + 4 + k * (s + 8 + 4)


def head_logits_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> int:
    """The model's returned logits per token while the aux loss runs: the compute dtype, or fp32 where
    --upcast-logits' hook returns the fp32 copy (memory/upcast.py)."""
    return (4 if _upcast.active(t, recipe) else dtype_bytes(recipe.compute)) * (m.vocab_size or 0)


def plan_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> tuple[int, int, int]:
    """Per token: (every MoE layer's logits, the bottom layer's at its backward, the aux loss's forward moment's
    temporaries: the head's logits and the aux loss's own bytes); zeros when the step has no aux loss."""
    if not active(m, t):
        return 0, 0, 0
    layer = logits_bytes(m, t, recipe)
    return (moe_layers(m) * layer, 0 if m.first_dense_layers else layer,
            head_logits_bytes(m, t, recipe) + loss_forward_bytes(m, t, recipe))


def add_moments(moments: list[_m.RawMoment], forward_moments: int, tokens: int, plan: tuple[int, int, int],
                details: dict[str, int]) -> tuple[int, int, int]:
    """Append the aux loss's term to every moment of a transformer step (memory/__init__.py _transformer_phases)
    and insert its own forward moment after the loss's; returns (forward_moments, activations, temporaries)."""
    held_t, bottom_t, aux_fwd_t = plan
    held = held_t * tokens
    # (backward.bottom: the bottom layer's own gradient at most; backward.end: none; the step is not in the list)
    by_key = {"backward.bottom": bottom_t * tokens, "backward.end": 0}
    out: list[_m.RawMoment] = []
    aux_t = 0
    for i, (key, layout, values) in enumerate(moments):
        out.append((key, layout + (_AUX,), values + (by_key.get(key, held),)))
        if key == "forward.loss" and i < forward_moments:
            # the aux loss after the cross-entropy (MixtralForCausalLM.forward): the head's saved set, the model's
            # logits (in the output) and the aux loss's own bytes in place of the loss's temporaries
            aux_t = aux_fwd_t * tokens
            out.append(("forward.aux_loss", layout[:-2] + (_AUX_FWD, layout[-1], _AUX),
                        values[:-2] + (aux_t, values[-1], held)))
    moments[:] = out
    details["activations.router_logits"] = held
    details["temporaries.router_aux_loss"] = aux_t
    return forward_moments + 1, held, aux_t


def note(m: ModelSpec, t: TrainingSpec) -> str:
    """What the estimate counts for the aux loss, and what it approximates."""
    source = "config.json output_router_logits" if m.output_router_logits else "--router-aux-loss"
    return (f"router aux loss ({source}): {moe_layers(m)} MoE layers' router logits (tokens x {m.num_experts} "
            "experts each) kept to the loss, then their gradients until the backward reaches each router "
            "(transformers load_balancing_loss_func); counted at every moment of the layers and with an "
            "attention_mask: an upper bound by at most one such tensor per layer.")


def trl_note(m: ModelSpec, t: TrainingSpec) -> str | None:
    """TRL 1.16's SFTTrainer turns the aux loss on by itself for a MoE config whose router_aux_loss_coef is not 0
    (trl/trainer/sft_trainer.py __init__: aux_loss_enabled); with its fused LM head it is not modelled: said."""
    if t.stack != "trl" or t.objective != "sft" or not m.num_experts or active(m, t):
        return None
    return ("router aux loss not counted: TRL's SFTTrainer adds it for a MoE config with a non-zero "
            "router_aux_loss_coef (every MoE layer's tokens x experts router logits kept to the loss); set "
            "router_aux_loss_coef: 0.0 to match this estimate.")
