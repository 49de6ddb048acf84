"""LLaMA-Factory's upcast_layernorm (`--upcast-norms`) over a 16-bit model: fp32 norms, the step under autocast.

hiyouga/LLaMA-Factory src/llamafactory/model/model_utils/checkpointing.py @ 06d78ff1 prepare_model_for_training
(run in patch_model, before init_adapter): `if model_args.upcast_layernorm`, every parameter with `param.ndim == 1`
whose name holds an entry of extras/constants.py LAYERNORM_NAMES {"norm", "ln"} gets `param.data =
param.data.to(torch.float32)`: the norms' weights (and a LayerNorm's biases), nothing else of a Llama, Gemma or
StarCoder2. The Trainer then runs the forward under autocast: LLaMA-Factory's bf16 / fp16 (or pure_bf16) set
TrainingArguments' flag, accelerate's prepare_model wraps forward in it (accelerate accelerator.py
`model.forward = convert_outputs_to_fp32(autocast_context(model_forward_func))`; transformers trainer.py
autocast_smart_context_manager leaves autocast to accelerate). Without autocast a Llama-style norm's fp32 output
reaches a 16-bit F.linear, which raises a dtype mismatch; vramcalc's 16-bit recipes run no autocast, so with the
flag they mean the Trainer's: the same 16-bit weights, forward under autocast.

What that changes (transformers 5.24 modeling_llama.py LlamaRMSNorm, modeling_gemma.py GemmaRMSNorm, torch
nn.LayerNorm; torch aten/src/ATen/autocast_mode.cpp):
  * weights: the norm parameters in fp32 (4 − w bytes each more); trained (full, freeze's trained layers): their
    gradients are fp32 (autograd's gradient takes the parameter's dtype) and, in pure-* recipes, their torch.optim
    states too (zeros_like(param)): the path DeepSeek's fp32 routers take (memory/weights.py, memory/__init__.py);
  * LlamaRMSNorm: `self.weight * hidden_states.to(input_dtype)` promotes to an fp32 output. The mul saves the 16-bit
    normalized tensor (for the weight's gradient), as before; the fp32 output itself is saved by nobody: each Linear
    reading it casts its own 16-bit copy (linear is on autocast's lower-precision list; only leaf weights' casts are
    cached), and a trained Linear's mm saves that copy: q, k, v three copies and gate, up two, where one shared
    16-bit output was saved (memory/activations.py, the amp recipes' branches);
  * GemmaRMSNorm: `output * (1.0 + self.weight.float())` then `output.type_as(x)`: a 16-bit output, no per-Linear
    casts; only the weights and their states change;
  * nn.LayerNorm: layer_norm is on autocast's fp32 list: its input cast to fp32 (the saved input), an fp32 output
    each Linear casts, as the Llama norm's;
  * the rest of the step as autocast runs it over 16-bit weights: LoRA's fp32 adapters are autocast matmuls (lora_A
    saves a 16-bit cast of its input, lora_B a 16-bit output), softmax / pow on the fp32 list (memory/activations.py
    takes its amp branches for these); the residual stream stays 16-bit; no 16-bit weight copies (the weights are
    16-bit already).
QLoRA after peft's prepare_model_for_kbit_training (--kbit-prep, vramcalc's default) holds the norms in fp32 already:
no change. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination

if TYPE_CHECKING:
    from vramcalc.core.memory.precision import Recipe
    from vramcalc.core.params import ParamTensor
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SRC = ("LLaMA-Factory model_utils/checkpointing.py prepare_model_for_training (upcast_layernorm: 1-D params named "
       "like extras/constants.py LAYERNORM_NAMES cast to fp32); accelerate prepare_model autocast")

SRC_FREEZE = ("LLaMA-Factory model/adapter.py _setup_freeze_tuning cast_trainable_params_to_fp32 (trained parameters "
              "fp32 unless pure_bf16); accelerate prepare_model autocast")
SRC_AUTOCAST = ("transformers trainer.py autocast_smart_context_manager (autocast left to accelerate); accelerate "
                "accelerator.py prepare_model: forward wrapped in autocast_context when native_amp; peft "
                "tuners/lora/layer.py Linear.forward _cast_input_dtype; torch autocast_mode.cpp")

# hiyouga/LLaMA-Factory src/llamafactory/extras/constants.py LAYERNORM_NAMES: substrings of a parameter's name
LAYERNORM_NAMES = ("norm", "ln")

# The families traced with the flag (--grid upcastln): Llama-style RMSNorm (Llama, Mistral, Qwen2), Gemma's (1 + w)
# RMSNorm and StarCoder2's LayerNorm; none has another 1-D parameter named like a norm. (GPT-2 is refused: with
# checkpointing its rerun's backward under autocast, gelu_new's fp32 pow and Conv1D, peaks 9.8 % above the estimate
# on a 2-layer toy LoRA run.)
FAMILIES = ("llama", "mistral", "qwen2", "gemma", "starcoder2")


def active(t: TrainingSpec, recipe: Recipe) -> bool:
    """`--upcast-norms` where the norms are 16-bit before the cast."""
    if not getattr(t, "upcast_norms", False) or recipe.weight == "fp32":
        return False
    return not (t.method == "qlora" and t.kbit_prep)  # kbit preparation casts them to fp32 (memory/weights.py)


def autocast16(t: TrainingSpec, recipe: Recipe) -> bool:
    """The step under torch.autocast over 16-bit stored weights: --precision autocast-* (the Trainer's bf16 / fp16
    flag over a 16-bit load with fp32 adapters or trained layers, memory/precision.py), or the flag's run above."""
    return recipe.autocast16 or active(t, recipe)


def fp32_trained(t: TrainingSpec, recipe: Recipe) -> bool:
    """--precision autocast-* freeze: the trained parameters are stored fp32 (memory/weights.py weight_bytes)."""
    return recipe.autocast16 and t.method == "freeze"


def casts_per_linear(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> bool:
    """Whether the norm's output is fp32 under the Trainer's autocast, so each Linear reading it casts its own 16-bit
    copy: LayerNorm (autocast's fp32 list: an fp32 output whatever its weights) and, with the flag's fp32 weights, a
    Llama-style RMSNorm (the fp32 weight promotes); not Gemma's (type_as(x)), nor a 16-bit Llama norm (16-bit mul)."""
    if recipe.autocast16:  # freeze: the trained layers' norms are fp32 (weights.py; frozen layers save nothing)
        return m.norm == "layernorm" or (active(t, recipe) or t.method == "freeze") and not m.norm_fp32_weight_mul
    return active(t, recipe) and not m.norm_fp32_weight_mul


def fp32_residual(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> bool:
    """Whether the Trainer's autocast over 16-bit weights makes the residual stream fp32: BLOOM's embedding LayerNorm
    (modeling_bloom.py BloomModel.forward: word_embeddings_layernorm before the first block) returns fp32 under
    autocast (layer_norm on autocast_mode.cpp's fp32 list), and each block's residual add (`residual +
    attention_output`, bf16 + fp32 promotes) keeps it fp32: every layer's input is fp32 (measured with the tracer's
    live tensors, --grid amp16: bloom-560m cut to 4 layers and a 2,048-token vocabulary, LoRA all-linear
    autocast-bf16 b2 s1024 with checkpointing, four fp32 (2, 1024, 1024) kept layer inputs at layer 3's _softmax)."""
    return autocast16(t, recipe) and m.embedding_norm and m.norm == "layernorm" and m.alibi


def norm_input_bytes(m: ModelSpec, t: TrainingSpec, recipe: Recipe, residual: int) -> int:
    """Bytes per element of what a norm saves of its input: LayerNorm under the Trainer's autocast over 16-bit
    weights runs layer_norm on an fp32 copy (autocast_mode.cpp fp32 list); otherwise the residual stream's dtype."""
    return 4 if autocast16(t, recipe) and m.norm == "layernorm" else residual


def norm_tensors(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> tuple[ParamTensor, ...]:
    """The parameters the flag casts to fp32 (every one of kind "norm" for FAMILIES); empty when inactive."""
    if not active(t, recipe) or not m.has_architecture:
        return ()
    from vramcalc.core.params import inventory

    return tuple(x for x in inventory(m) if x.kind == "norm")


def check(m: ModelSpec, t: TrainingSpec, library_optimizer: bool) -> None:
    """The runs the flag is modelled (and traced) for; the rest refused in one line. `library_optimizer`: the run's
    optimizer keeps its own state layout (memory/optimizer.py LIBRARY_OPTIMIZERS), not zeros_like(param)."""
    if not getattr(t, "upcast_norms", False):
        return
    from vramcalc.core.memory.precision import recipe_of

    recipe = recipe_of(t)
    if recipe.weight == "fp32":
        return  # fp32 weights: the cast changes nothing (note)
    why = ""
    if m.family not in FAMILIES or m.vision is not None or m.num_experts or m.qk_norm or not m.has_architecture:
        why = f"{m.name} (modelled on Llama, Mistral, Qwen2, Gemma and StarCoder2 text models)"
    elif t.method not in ("full", "freeze", "lora", "qlora"):
        why = f"--method {t.method}"
    elif recipe.master_weights or t.zero or t.fsdp != "none" or t.tp > 1 or t.pp > 1:
        why = "DeepSpeed / FSDP / BAdam mixed precision (flat 16-bit buffers with fp32 masters)"
    elif t.objective != "sft" or t.loss != "hf":
        why = f"--objective {t.objective} --loss {t.loss} (modelled with transformers' own SFT loss)"
    elif t.kernels != "hf" or t.dora or t.activation_offload or t.upcast_logits or t.lora_dropout > 0:
        why = "--kernels, --dora, --activation-offload, --upcast-logits or --lora-dropout (not traced with it)"
    elif t.method in ("full", "freeze") and library_optimizer:
        why = f"--optimizer {t.optimizer} (its states of fp32 norms)"
    if why:
        raise UnsupportedCombination(f"--upcast-norms is not modelled with {why}: drop --upcast-norms")


# The families --precision autocast-* is traced on (--grid autocast): Llama-style RMSNorm (Llama, Mistral, Qwen2) and
# GPT-2's LayerNorm (autocast's fp32 layer_norm, Conv1D's addmm); --grid autocast2 (LoRA and QLoRA): Qwen3 and OLMo 2
# (q/k RMSNorm: hidden_states.to(float32) ... weight * x.to(input_dtype), modeling_qwen3.py Qwen3RMSNorm,
# modeling_olmo2.py Olmo2RMSNorm), Gemma, Gemma 2 and Gemma 3 text ((1 + weight) RMSNorm in fp32, output
# type_as(x); Gemma 2's eager softcapped attention), Phi-3 (fused qkv_proj / gate_up_proj) and StarCoder2 (LayerNorm
# with bias), with the same arithmetic: their estimates within -1.9 .. +4.2 % of the trace; --grid autocast3: GPT-NeoX
# (Pythia: parallel attention + MLP after two LayerNorms, each with its own fp32 cast of the layer input), GPT-J and
# Phi-1.5 / Phi-2 (parallel, one LayerNorm, gelu_new's fp32 output beside QLoRA's dequantized fc_out) and OLMo 1
# (non-parametric LayerNorm): -1.8 .. +4.5 % (memory/activations.py); --grid amp16: Falcon-7B (LoRA and freeze: the
# math SDPA path's matmuls under autocast, 16-bit scores, as amp-bf16's; freeze, its frozen layers' backward without a
# trained layer's weight gradients, without checkpointing the lowest trained layer's MLP backward) and BLOOM (LoRA,
# QLoRA, freeze: the embedding LayerNorm's fp32 output makes the residual stream fp32, fp32_residual), GPT-NeoX's freeze
# (its frozen layers' sdpa on CUDA's fused kernel, as the tracer runs a frozen tower's: -1.65 .. +0.07 %): -1.65 ..
# +1.98 %. Falcon's QLoRA is its LoRA (transformers 5's bitsandbytes quantizes no FalconLinear: memory/unreplaced.py,
# --grid falcon-bnb). Falcon blocks other than Falcon-7B's (new_decoder_architecture's two LayerNorms, multi-head
# attention, Falcon-RW's sequential block: not traced) stay refused.
AUTOCAST_FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "qwen3", "olmo2", "gemma", "gemma2", "gemma3", "phi3",
                     "starcoder2", "gpt_neox", "gptj", "phi", "olmo", "falcon", "bloom")
# Freeze (fp32 trained layers) on all of them, with checkpointing too (--grid autocast2: -1.9 .. +0.6 % there, once
# memory/__init__.py counts a tied head's lowest trained layer's gradients after its peak and the frozen layers'
# backward with every gradient made, backward.frozen).
# The mixture-of-experts families it is traced on (--grid autocast-moe): transformers 5's fused experts
# (integrations/moe.py grouped_mm, not on autocast's lists: the experts run in their load dtype), Qwen3-MoE's q/k
# RMSNorms included (as Qwen3's, --grid autocast2).
AUTOCAST_MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
# The vision-language models it is traced on (--grid autocast-vlm), with LoRA / QLoRA in the language model only
# (memory/vision.py refuses tower and projector adapters under autocast): LLaVA-1.5's CLIP tower and Qwen2-VL's /
# Qwen2.5-VL's, frozen (no graph: autocast's casts of the frozen 16-bit tower are freed at once).
AUTOCAST_VISION_KINDS = ("clip", "qwen2_vl", "qwen2_5_vl")
# The preference objectives traced under it (--grid autocast-run, autocast-run2): TRL's DPOTrainer with peft (dpo;
# ipo is its loss_type "ipo", the same step), the reference the policy with its adapters disabled under the same
# autocast (trl/trainer/dpo_trainer.py compute_ref_log_probs: use_adapter inside accelerator.autocast(), the fused
# head's log_probs). KTOTrainer runs the same way (kto_trainer.py compute_ref_log_probs; --grid autocast-kto, LoRA
# and QLoRA on the autocast grid's Llama and GPT-2 cuts, no new arithmetic: -1.3 .. +2.8 %), once the tracer's autocast
# cache stopped reusing its no_grad KL forward's weight casts in the policy's forward (trace/_cuda.py _cast: the loss
# had no grad_fn).
AUTOCAST_OBJECTIVES = ("dpo", "ipo", "kto")
AUTOCAST_KTO_FAMILIES = ("llama", "mistral", "gpt2")  # KTO traced on Llama (TinyLlama, Llama-3.2-1B) and GPT-2
# The losses traced under it: transformers' own and the loss savers (Liger's fused linear cross-entropy, Apple's cut,
# torchtune's chunked; --grid autocast-run through the tracer's trace/_loss.py)
AUTOCAST_LOSSES = ("hf", "fused-linear", "cut", "chunked")
# The text families those (DPO, the loss savers) are traced on: --grid autocast-run's Llama and GPT-2 models and
# --grid autocast-run2's Qwen3, OLMo 2, Gemma 1-3, Phi-3 and StarCoder2 cuts (the autocast2 families; no new
# arithmetic: DPO's chosen + rejected batch and the adapters-off reference forward under no_grad, the loss savers'
# chunks, run on the same autocast casts as SFT's hf loss there)
AUTOCAST_RUN_FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "qwen3", "olmo2", "gemma", "gemma2", "gemma3", "phi3",
                         "starcoder2")
# DoRA (peft use_dora) under it (--grid autocast-dora): LoRA and QLoRA NF4 with transformers' SFT loss, with and
# without lora_dropout, on Llama-style decoders (TinyLlama and Qwen2.5-0.5B traced, q/k/v biases included; Mistral runs
# Llama's RMSNorm and gated MLP, modeling_mistral.py). GPT-2 is refused: its checkpointed rerun peaks at c_proj's DoRA
# output muls (three fp32 tensors beside gelu_new's fp32 temporaries and the weight norm's held copies), 6.3 % above
# the estimate at b2 s1024 (not modelled); so are the families not traced and DPO / the loss savers with it.
AUTOCAST_DORA_FAMILIES = ("llama", "mistral", "qwen2")


def check_recipe(m: ModelSpec | None, t: TrainingSpec) -> None:
    """--precision autocast-*: the runs it is modelled (and traced) for; the rest refused in one line. `m` None: the
    run's options alone (a run file that names no model)."""
    from vramcalc.core.memory import unreplaced
    from vramcalc.core.memory.precision import recipe_of, resolve_precision

    if m is not None:  # Falcon's "QLoRA" is a LoRA on the unquantized model (memory/unreplaced.py)
        t = unreplaced.view(m, t)
    if not recipe_of(t).autocast16:
        return
    p = resolve_precision(t)
    why = ""
    if t.mode != "train":
        why = f"--mode {t.mode} (a training recipe)"
    elif t.method == "full":
        raise UnsupportedCombination(f"--precision {p} with --method full is every parameter fp32 under autocast: "
                                     f"pass --precision amp-{p.removeprefix('autocast-')} (the same run)")
    elif t.method not in ("lora", "qlora", "freeze"):
        why = f"--method {t.method} (modelled for lora, qlora and freeze)"
    elif m is not None and m.num_experts and (m.family not in AUTOCAST_MOE_FAMILIES or m.vision is not None
                                              or not m.has_architecture):
        why = f"{m.name} (traced on Mixtral, Qwen1.5-MoE and Qwen3-MoE among the mixture-of-experts models)"
    elif m is not None and m.num_experts and t.method == "freeze":
        # LLaMA-Factory's cast_trainable_params_to_fp32 makes the trained layers' 3-D experts fp32, which
        # torch._grouped_mm takes in bf16 only (torch/_meta_registrations.py _meta_grouped_mm_common): not traced
        why = "--method freeze on a mixture-of-experts model (fp32 trained experts: grouped_mm takes bf16 only)"
    elif m is not None and m.vision is not None and (m.vision.kind not in AUTOCAST_VISION_KINDS
                                                     or m.family not in AUTOCAST_FAMILIES):
        why = f"{m.name} (traced on LLaVA-1.5, Qwen2-VL and Qwen2.5-VL among the vision-language models)"
    elif m is not None and m.vision is not None and (t.method == "freeze" or t.train_vision):
        why = (f"--method {t.method}{' --train-vision' if t.train_vision else ''} on {m.name} (traced with LoRA "
               "and QLoRA, the tower frozen)")
    elif m is not None and not m.num_experts and (m.family not in AUTOCAST_FAMILIES or not m.has_architecture):
        why = (f"{m.name} (traced on Llama, Mistral, Qwen2, Qwen3, OLMo 1-2, Gemma 1-3, Phi-1.5 / 2 / 3, StarCoder2, "
               "GPT-2, GPT-J, GPT-NeoX, Falcon and BLOOM text models)")
    elif m is not None and m.family == "falcon" and not (m.parallel_residual and m.norms_per_layer == 1
                                                         and m.num_kv_heads == 1):
        why = (f"{m.name} (Falcon traced on Falcon-7B's block: multi-query attention, one LayerNorm before parallel "
               "attention and MLP)")
    elif t.zero or t.fsdp != "none" or t.tp > 1 or t.pp > 1 or t.context_parallel > 1:
        why = "DeepSpeed / FSDP / tensor, pipeline or context parallelism"
    elif t.method == "qlora" and t.kbit_prep:
        raise UnsupportedCombination(f"--precision {p} is not modelled with --kbit-prep (prepare_model_for_kbit_"
                                     "training's fp32 embeddings, norms and head): pass --no-kbit-prep, as "
                                     "LLaMA-Factory and TRL load QLoRA")
    elif not (t.objective == "sft" and t.loss in AUTOCAST_LOSSES
              or t.objective in AUTOCAST_OBJECTIVES and t.loss == "hf" and t.method != "freeze"
              and t.ref_model in ("auto", "adapters-off") and t.dpo_head == "trl"):  # auto: adapters-off with peft
        why = (f"--objective {t.objective} --loss {t.loss} (modelled for SFT with --loss hf, fused-linear, cut or "
               "chunked, and TRL's DPO, IPO and KTO with LoRA / QLoRA and the adapters-off reference)")
    elif (t.objective != "sft" or t.loss != "hf") and m is not None and (
            m.family not in AUTOCAST_RUN_FAMILIES or m.num_experts or m.vision is not None):
        why = (f"--objective {t.objective} --loss {t.loss} on {m.name} (traced on Llama, Mistral, Qwen2, Qwen3, "
               "OLMo 2, Gemma 1-3, Phi-3, StarCoder2 and GPT-2 text models)")
    elif t.objective == "kto" and m is not None and m.family not in AUTOCAST_KTO_FAMILIES:
        why = f"--objective kto on {m.name} (traced on Llama, Mistral and GPT-2 text models)"
    elif t.dora and (t.objective != "sft" or t.loss != "hf" or t.quant_backend != "bnb"
                     or t.method == "qlora" and t.quant_bits != 4 or m is not None and (
                         m.family not in AUTOCAST_DORA_FAMILIES or m.vision is not None or m.num_experts)):
        why = ("--dora beyond SFT with --loss hf, LoRA or 4-bit bitsandbytes QLoRA on Llama, Mistral and Qwen2 text "
               "models (what is traced)")
    elif t.kernels != "hf" or t.activation_offload or t.upcast_logits or t.upcast_norms \
            or t.train_layers is not None or t.train_modules is not None or getattr(t, "relora", False):
        why = ("--kernels, --activation-offload, --upcast-logits, --upcast-norms, --train-layers/-modules or "
               "--relora")
    if why:
        raise UnsupportedCombination(f"--precision {p} is not modelled with {why}: use --precision "
                                     f"{p.removeprefix('autocast-')} (16-bit, no autocast) or amp-"
                                     f"{p.removeprefix('autocast-')}")


def recipe_note(m: ModelSpec, t: TrainingSpec, recipe: Recipe) -> str:
    """What --precision autocast-* counts, with its source."""
    what = ("the trained parameters fp32 (weights, gradients, states; their casts cached for the forward), the frozen "
            f"ones {recipe.weight}" if t.method == "freeze" else
            f"{t.adapter_dtype} adapters running as autocast matmuls ({recipe.compute} saved inputs and outputs)")
    return (f"autocast-{recipe.compute}: {recipe.weight} stored weights, the step under the Trainer's autocast "
            f"(accelerate prepare_model), {what}"
            + ("; LayerNorm outputs fp32, each Linear casting its own copy" if m.norm == "layernorm" else "")
            + f" ({SRC_AUTOCAST}).")


def note(t: TrainingSpec, recipe: Recipe) -> str:
    if active(t, recipe):
        return ("upcast norms (LLaMA-Factory upcast_layernorm): the norm weights in fp32 and the step under the "
                "Trainer's autocast (each Linear casts an fp32 normed input to 16 bits; LoRA's adapters run as "
                "autocast matmuls); the norms' backward temporaries are approximated as the 16-bit run's.")
    return ("upcast norms: the norms are fp32 already here (fp32 / amp weights, or QLoRA's kbit preparation): "
            "no change.")
