"""BAdam's layer mode (LLaMA-Factory use_badam, badam_mode layer): block coordinate descent with Adam.

LLaMA-Factory train/trainer_utils.py _create_badam_optimizer wraps the Trainer's optimizer class in
badam.BlockOptimizer (Ledzeh/BAdam badam/block_optim.py) with block_prefix_list=None, so infer_param_groups makes one
block per `layers.N.` prefix; include_embedding and include_lm_head default to False, so the embeddings, the final
norm and the head belong to no block and stay frozen. LLaMA-Factory loads the model in 16 bits and leaves its trainable
parameters there (model/adapter.py: `if finetuning_args.pure_bf16 or finetuning_args.use_badam:
cast_trainable_params_to_fp32 = False`). _switch_trainable_params_single_gpu gives only the active block
requires_grad and makes, per parameter, `param.clone().float().detach()`: an fp32 copy that the base optimizer steps,
so its Adam moments are fp32 too (zeros_like the copy). step_single_gpu: _grad_to_hp sets `hp.grad =
lp.grad.float()` and frees the 16-bit gradient parameter by parameter, the base optimizer steps the copies,
_update_param copies them back, _clean_hp_grad frees the fp32 gradients. Switching blocks (every
badam_switch_interval steps, in badam_switch_mode order from badam_start_block) drops the old copies and states.

Memory: the 16-bit model, plus for the active block its 16-bit gradients, fp32 copy, fp32 moments and, at the step,
fp32 gradients: the mixed-bf16 recipe (memory/precision.py) restricted to one decoder layer. Every block is visited
within badam_switch_interval x layers steps, so the run's peak is the worst block's: the bottom layer, whose backward
runs through every layer above it (each frozen layer saves what its input's gradient needs; under checkpointing,
each keeps its input: LLaMA-Factory's checkpointing function marks a trainable layer's input as needing a gradient,
model_utils/checkpointing.py). The core estimates it as partial fine-tuning with one trained layer (the layers being
alike, the top one's counts) and every layer saving (memory/__init__.py _activation_plan).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# transformers families whose decoder layers are `transformer.h.N` (GPT2Model.h, BloomModel.h, FalconModel.h,
# GPTBigCodeModel.h, GPTJModel.h, CodeGenModel.h): no `layers.` in any parameter name.
NO_LAYERS_FAMILIES = frozenset({"gpt2", "bloom", "falcon", "gpt_bigcode", "gptj", "codegen"})
SOURCE = "badam block_optim.py BlockOptimizer (layer mode), LLaMA-Factory trainer_utils.py _create_badam_optimizer"


def active(t: TrainingSpec) -> bool:
    return bool(getattr(t, "badam", False)) and t.mode == "train"


def view(m: ModelSpec, t: TrainingSpec) -> TrainingSpec:
    """The run as the core estimates it: one decoder layer trained (freeze every other, the head and the
    embeddings), every layer in the graph (see _activation_plan). `t` itself when BAdam is off."""
    if not active(t):
        return t
    check(m)
    return replace(t, method="freeze", freeze_layers=max((m.num_layers or 1) - 1, 0), train_head=False)


def check(m: ModelSpec) -> None:
    """BAdam's blocks are `layers.N.` decoder layers: refuse what has none, or is not modelled with them."""
    from vramcalc.core.memory import classic, encoder, hybrid, seq2seq, ssm

    if (classic.is_classic(m) or encoder.is_encoder(m) or seq2seq.is_seq2seq(m) or ssm.is_ssm(m)
            or hybrid.is_hybrid(m) or m.vision is not None or not m.has_architecture):
        raise UnsupportedCombination(f"--badam on {m.name}: BAdam is modelled for decoder-only language models "
                                     "(one block per decoder layer); drop --badam")
    if m.family in NO_LAYERS_FAMILIES:
        raise UnsupportedCombination(f"--badam on {m.name}: BAdam's blocks are the `layers.N.` parameter prefixes "
                                     "(infer_param_groups), and this model's decoder layers are `transformer.h.N`, so "
                                     "it finds no block: drop --badam")
    if m.num_experts:
        raise UnsupportedCombination(f"--badam on {m.name}: a MoE model's layers differ (dense and expert layers); "
                                     "BAdam is modelled for uniform decoder layers: drop --badam")


def converting(m: ModelSpec, largest: int) -> int:
    """Elements of the 16-bit gradient alive beside the fp32 ones at the step's peak. _grad_to_hp walks the block in
    named_parameters order, making each fp32 gradient before freeing the 16-bit one, so the peak is 4 B x block +
    max over parameters of (2 B x its size - 2 B x the parameters after it): in transformers' decoder layers the
    MLP's output projection (down_proj) is the last matrix, followed only by the norms, so its size (less the
    norms, a few KB, left in) is the peak; never more than the largest tensor (measured with the tracer, --grid badam:
    phi-3's fused gate_up_proj, twice down_proj, comes before it: +1.24 % at the step when counted)."""
    down = (m.intermediate_size or 0) * (m.hidden_size or 0)
    return min(down, largest) if down else largest


def note(m: ModelSpec) -> str:
    return (f"BAdam (layer mode): one of the {m.num_layers} decoder layers trained at a time, with its 16-bit "
            "gradients, an fp32 copy and fp32 Adam moments; embeddings, final norm and head frozen. The peak is "
            "the bottom block's (every layer above it in the backward), the largest of the run; another "
            f"badam_start_block or switch mode only changes when it comes ({SOURCE}).")
