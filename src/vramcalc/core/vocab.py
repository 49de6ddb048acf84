"""Every choice vramcalc offers, declared once: the core, the readers and the CLI all use these.

Each `Literal` alias types a spec field; the tuple beside it (`get_args` of the alias) is what option
parsers, `--help` and error messages list. Add a choice here and it is everywhere.
"""

from __future__ import annotations

from typing import Literal, get_args

# serve: a vLLM server (memory/vllm.py): weights, the profile run, the KV-cache pool sized by gpu_memory_utilization.
Mode = Literal["train", "inference", "serve"]
# The PEFT methods beyond LoRA (core/peft_methods.py: their trainable parameters and saved tensors, from peft 0.21's
# tuners/*): IA3, LN tuning, LoHa, LoKr, VeRA, and the prompt-learning methods.
Method = Literal["full", "lora", "qlora", "freeze", "ia3", "ln-tuning", "loha", "lokr", "vera", "oft",
                 "fourierft", "trainable-tokens", "prompt-tuning", "p-tuning", "prefix-tuning", "boft", "miss", "c3a",
                 "shira", "adaption-prompt"]
PrecisionName = Literal[
    "auto", "bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16", "amp-fp16",
    "autocast-bf16", "autocast-fp16", "fp32"
]
OptimizerName = Literal[
    "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum", "adafactor", "lion",
    "torchao-adamw-8bit", "torchao-adamw-4bit", "torchao-adamw-fp8",
    # issue 13 (memory/optimizer.py): Adafactor with beta1 (a full first moment), the projected optimizers
    # (galore_torch GaLoreAdamW; apollo_torch APOLLOAdamW, channel-wise and the rank-1 tensor-wise Mini) and
    # adam_mini.Adam_mini (one second moment per block).
    "adafactor-momentum", "galore-adamw", "apollo-adamw", "apollo-mini", "adam-mini",
    # galore_torch GaLoreAdamW8bit (HF optim galore_adamw_8bit): bitsandbytes 8-bit states of the projected moments.
    "galore-adamw-8bit",
    # LLaMA-Factory's use_muon (third_party/muon/muon.py): Muon's momentum for 2-D matrices, AdamW for the rest.
    "muon",
]
# Which weights GaLore/APOLLO project (HF optim_target_modules): every nn.Linear of the blocks (["attn", "mlp"], as
# GaLore's and APOLLO's own scripts), those of attention or of the MLP only, or HF's all-linear (+ lm_head).
OptimTargets = Literal["attn-mlp", "attn", "mlp", "all-linear"]
OptimizerImpl = Literal["fused", "foreach", "for-loop"]
Attention = Literal["sdpa", "eager", "flash"]
AdapterDtype = Literal["fp32", "bf16", "fp16"]
# 4/8: bitsandbytes (NF4, LLM.int8); hqq also 1, 2, 3, 5, 6 (hqq/core/quantize.py Quantizer.SUPPORTED_BITS less 1.58)
QuantBits = Literal[1, 2, 3, 4, 5, 6, 8]
# Which library quantizes a QLoRA base: bitsandbytes, or hqq's HQQLinear (memory/hqq.py)
QuantBackend = Literal["bnb", "hqq"]
NormKind = Literal["rmsnorm", "layernorm"]
MlpKind = Literal["gated", "plain"]
# config.json hidden_act names whose saved tensors memory/activations.py models: ATen kernels that save
# one tensor (silu = swish, gelu, gelu_pytorch_tanh, relu) and transformers' Python formulas
# (gelu_new, gelu_fast, quick_gelu: ACT_SAVED_TENSORS). Any other name is refused, not guessed.
# relu2 (Nemotron-H's mlp_hidden_act; activations.py ReLUSquaredActivation: square(relu(x))): relu saves its output
# and square saves the same tensor as its input, so one tensor of the MLP width, as relu.
HiddenAct = Literal["silu", "swish", "gelu", "gelu_pytorch_tanh", "relu", "gelu_new", "gelu_fast", "quick_gelu",
                    "relu2"]
AttentionKind = Literal["standard", "mla"]  # mla: DeepSeek-V2/V3 multi-head latent attention
Vendor = Literal["nvidia", "amd", "intel", "apple", "other"]
# Multi-GPU and inference settings (memory/distributed.py, memory/inference.py).
ZeroStage = Literal[0, 1, 2, 3]
FsdpStrategy = Literal["none", "full-shard", "shard-grad-op", "hybrid-shard", "no-shard"]
Offload = Literal["none", "optimizer", "params"]
# When accumulated gradients are reduced under FSDP: after the last micro-batch (no_sync before it: HF Trainer,
# accelerate, Lightning Fabric) or after every micro-batch (torchtune, accelerate sync_each_batch=True).
GradSync = Literal["deferred", "every-micro-batch"]
# Whose tensor-parallel layout --tp counts (memory/distributed.py): Megatron's (Linears, embedding and head split), or
# transformers' tp_plan (from_pretrained(tp_plan="auto"): the model's base_model_tp_plan and _tp_plan as DTensors).
TpLayout = Literal["megatron", "hf"]
# --ac-layout: which layers --ac-every checkpoints (torchtune: 1-based index a multiple of k; hf: 0-based)
AcLayout = Literal["torchtune", "hf"]
# --compile-scope: what torch.compile wraps (memory/compiled.py): the whole model (transformers' Trainer via
# accelerate, axolotl, LLaMA-Factory) or each decoder layer and the chunked loss (torchtune compile_model,
# compile_loss)
CompileScope = Literal["model", "layers"]
WeightDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"]
KvDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8"]
# FP8 training through accelerate's torchao backend (memory/fp8.py): torchao Float8Linear with its tensorwise
# recipe (axolotl: accelerate's filter skips the first and last Linear) or rowwise (LLaMA-Factory: names holding
# embed / lm_head / output / classifier skipped); off: plain nn.Linear.
Fp8Recipe = Literal["off", "tensorwise", "rowwise"]
# generate()'s KV cache (memory/inference.py): transformers' DynamicCache (per-layer torch.cat), StaticCache
# (preallocated to max_length - 1), or the tuple cache of older stacks (the whole cache concatenated anew).
KvCache = Literal["dynamic", "static", "legacy"]
# Logits of the prefill: the last position (generate's logits_to_keep=1, transformers >= 4.45) or all of them.
LogitsKept = Literal["last", "all"]
# Memory savers (memory/loss.py): how the loss is computed from the last hidden states.
LossName = Literal["hf", "chunked", "linear-chunked", "fused-linear", "cut", "trl", "liger-cross-entropy"]
# Where `vramcalc trace` runs the step: fake tensors on the CPU, or the real CUDA device.
TraceDevice = Literal["fake", "cuda"]
# How a micro-batch's sequences are laid out (memory/activations.py packing terms): padded rows of the
# longest, rows packed full with position_ids restarting per sequence, or one flattened row (padding-free).
Packing = Literal["none", "packed", "padding-free"]
# Layer kernels (memory/unsloth.py): transformers' modules (hf), or Unsloth's Triton RMSNorm, RoPE and LoRA autograd
# functions, which save fewer tensors per layer: all of them (unsloth), or some groups (unsloth:qkv,o,mlp,norm,rope),
# as axolotl's unsloth_lora_qkv / unsloth_lora_o / unsloth_lora_mlp / unsloth_rms_norm / unsloth_rope keys patch
# them one by one (parse_kernels); or Liger's RMSNorm, SwiGLU and RoPE (liger, memory/liger.py); or axolotl's own LoRA
# autograd functions (axolotl:qkv,o,mlp: kernels/lora.py LoRA_QKV / LoRA_O / LoRA_MLP, axolotl's lora_*_kernel keys,
# memory/axolotl_kernels.py; parse_axolotl_kernels).
Kernels = str
# Training stacks: named sets of option defaults, one YAML preset each under presets/stacks/ (io/stacks.py).
StackName = Literal["hf", "trl", "axolotl", "llama-factory", "unsloth", "torchtune", "litgpt"]
# Preference and reward training (memory/preference.py): TRL's DPOTrainer (loss_type sigmoid, ipo), KTOTrainer
# and RewardTrainer. The reference model of DPO: auto (a frozen copy for full/freeze, the base with adapters
# disabled for LoRA/QLoRA, as DPOTrainer picks), copy, adapters-off, precomputed (precompute_ref_log_probs).
# Reference-free: orpo (TRL ORPOTrainer), cpo and simpo (TRL CPOTrainer, loss_type sigmoid / simpo), which
# compute the full logits (trl/experimental/orpo, trl/experimental/cpo).
# Online RL (memory/rl.py): grpo (TRL GRPOTrainer: generate() num_generations completions per prompt, then a
# policy step on the completions through TRL's fused head; a reference when beta > 0), rloo (TRL RLOOTrainer: the
# same generation and step, the old policy's pass always, a sequence-level loss; RLOOConfig beta 0.05, 2 generations).
# online-dpo (TRL OnlineDPOTrainer, memory/online_dpo.py): generate() of 2 completions per prompt every micro-batch,
# the full logits of the policy and a reference on them.
# ppo (TRL 0.19.1 PPOTrainer, memory/ppo.py; TRL 1.x dropped it): a rollout (generate() with every step's fp32
# scores kept, the reference, value and reward models' no-grad forwards), then the policy and a value model trained
# together under one optimizer.
Objective = Literal["sft", "dpo", "ipo", "kto", "reward", "orpo", "cpo", "simpo", "grpo", "rloo", "online-dpo", "ppo"]
# Values people ask for that are not modelled, each refused in one line with why (core/options.py coerce).
NOT_MODELLED: dict[str, dict[str, str]] = {}
RefModel = Literal["auto", "copy", "adapters-off", "precomputed"]
# DPO's log-prob head: TRL DPOTrainer's fused head (no logits) or the full fp32 logits of torchtune's DPO recipes
DpoHead = Literal["trl", "logits"]
# GRPO's generation engine (memory/rl.py): off (generate()), colocate (TRL vllm_mode="colocate": a vLLM engine in
# the training process, on the same GPU) or server (vllm_mode="server": vLLM on other GPUs).
VllmMode = Literal["off", "colocate", "server"]
RefDtype = Literal["auto", "bf16", "fp16", "fp32"]
# A copied DPO/KTO reference loaded through bitsandbytes (TRL model_init_kwargs / older DPOConfig
# ref_model_init_kwargs quantization_config): none, 4bit (Linear4bit, nf4 or fp4: the same storage), 4bit-dq
# (bnb_4bit_use_double_quant) or 8bit (load_in_8bit: Linear8bitLt, LLM.int8 with threshold 6.0).
RefQuant = Literal["none", "4bit", "4bit-dq", "8bit"]
# The task head of an encoder (memory/encoder.py): auto (a causal LM's own LM head; an encoder's sequence
# classifier), seq-cls (AutoModelForSequenceClassification: pooler + classifier of --num-labels), token-cls
# (AutoModelForTokenClassification: dropout + classifier of --num-labels at every position) or mlm
# (AutoModelForMaskedLM: transform + the tied vocab-wide decoder).
Head = Literal["auto", "seq-cls", "token-cls", "mlm"]
# Encoder-only families (bidirectional attention: memory/encoder.py): absolute positions and post-LayerNorm blocks
# (BERT, RoBERTa, XLM-R, DistilBERT), or ModernBERT's pre-norm GeGLU blocks with RoPE and local/global attention,
# or DeBERTa-v2/v3's post-LayerNorm blocks with disentangled relative attention (parameters only: core/checks.py).
ENCODER_FAMILIES: tuple[str, ...] = ("bert", "roberta", "xlm-roberta", "distilbert", "modernbert", "deberta-v2")
# Encoder-decoder families (an encoder stack over the source, a decoder stack with cross-attention over the
# target: memory/seq2seq.py). T5 / mT5 / Flan-T5 (relative position bias, RMS-style norms, no biases) and
# BART / mBART (learned positions, LayerNorms, biases).
SEQ2SEQ_FAMILIES: tuple[str, ...] = ("t5", "mt5", "bart", "mbart")
# State-space families (selective-scan mixers instead of attention and MLP: memory/ssm.py).
SSM_FAMILIES: tuple[str, ...] = ("mamba", "mamba2")
# The course texts' classics (issue 15): torchvision's ResNet family (memory/convnet.py) and a word-level LSTM
# language model (memory/rnn.py): no transformer blocks, estimated by core/memory/classic.py.
CLASSIC_FAMILIES: tuple[str, ...] = ("resnet", "lstm")
# Output.
Unit = Literal["GB", "GiB"]
OutFormat = Literal["table", "json", "yaml", "csv", "markdown"]
ExplainFormat = Literal["text", "markdown", "json", "yaml", "csv"]
PictureFormat = Literal["table", "markdown", "svg", "html", "json"]
PlotAxis = Literal["batch-size", "seq-len", "lora-rank"]  # what --plot / --sweep draw memory against

MODES: tuple[Mode, ...] = get_args(Mode)
METHODS: tuple[Method, ...] = get_args(Method)
PRECISIONS: tuple[PrecisionName, ...] = get_args(PrecisionName)
OPTIMIZERS: tuple[OptimizerName, ...] = get_args(OptimizerName)
LOSSES: tuple[LossName, ...] = get_args(LossName)
PACKINGS: tuple[Packing, ...] = get_args(Packing)
KERNELS: tuple[str, ...] = ("hf", "unsloth", "liger")  # the named choices; unsloth:GROUPS selects some groups
KERNEL_GROUPS: tuple[str, ...] = ("qkv", "o", "mlp", "norm", "rope")  # Unsloth's kernels, group by group
AXOLOTL_KERNEL_GROUPS: tuple[str, ...] = ("qkv", "o", "mlp")  # axolotl's LoRA kernels (lora_qkv/o/mlp_kernel)


def parse_kernels(value: str) -> tuple[str, ...] | None:
    """The Unsloth kernel groups a --kernels value selects, in KERNEL_GROUPS order: () for hf, all five for unsloth
    (Unsloth's own forward), the listed ones for unsloth:GROUP,GROUP.. (patched one by one, as axolotl's unsloth_*
    keys do), () for liger (Liger's kernels: memory/liger.py); None when the value is none of these."""
    if value in ("hf", "liger") or parse_axolotl_kernels(value) is not None:
        return ()
    if value == "unsloth":
        return KERNEL_GROUPS
    head, sep, tail = value.partition(":")
    names = [x.strip() for x in tail.split(",")] if sep else []
    if head != "unsloth" or not names or any(x not in KERNEL_GROUPS for x in names):
        return None
    return tuple(g for g in KERNEL_GROUPS if g in names)


def parse_axolotl_kernels(value: str) -> tuple[str, ...] | None:
    """axolotl's LoRA kernel groups an `axolotl:GROUP,GROUP..` value selects, in AXOLOTL_KERNEL_GROUPS order (None for
    any other value; memory/axolotl_kernels.py)."""
    head, sep, tail = value.partition(":")
    names = [x.strip() for x in tail.split(",")] if sep else []
    if head != "axolotl" or not names or any(x not in AXOLOTL_KERNEL_GROUPS for x in names):
        return None
    return tuple(g for g in AXOLOTL_KERNEL_GROUPS if g in names)


def kernels_value(groups: tuple[str, ...] | frozenset[str] | set[str] | list[str]) -> str:
    """The canonical --kernels value of some groups patched one by one: hf (none) or unsloth:GROUPS in
    KERNEL_GROUPS order. (`unsloth` alone is Unsloth's own model loader, its whole forward: not this.)"""
    chosen = [g for g in KERNEL_GROUPS if g in groups]
    return "unsloth:" + ",".join(chosen) if chosen else "hf"
STACKS: tuple[StackName, ...] = get_args(StackName)
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
PREFERENCE_OBJECTIVES: tuple[Objective, ...] = ("dpo", "ipo", "kto")  # a policy and a reference
REFERENCE_FREE_OBJECTIVES: tuple[Objective, ...] = ("orpo", "cpo", "simpo")  # the policy alone, full logits
RL_OBJECTIVES: tuple[Objective, ...] = ("grpo", "rloo")  # generation, then a policy step on the completions
# TRL RLOOConfig's defaults where they differ from GRPOConfig's (trl/trainer/rloo_config.py): beta 0.05 (a
# reference is loaded), num_generations 2; the options apply them under --objective rloo when not given
# (core/options.py).
RLOO_DEFAULTS: dict[str, float | int] = {"beta": 0.05, "num_generations": 2}
# TRL OnlineDPOConfig vllm_gpu_memory_utilization default (trl/experimental/online_dpo/online_dpo_config.py: 0.55,
# GRPOConfig's is 0.3): applied under --objective online-dpo --use-vllm colocate when not given (core/options.py).
ONLINE_DPO_VLLM_UTILIZATION = 0.55
REF_MODELS: tuple[RefModel, ...] = get_args(RefModel)
DPO_HEADS: tuple[DpoHead, ...] = get_args(DpoHead)
VLLM_MODES: tuple[VllmMode, ...] = get_args(VllmMode)
REF_DTYPES: tuple[RefDtype, ...] = get_args(RefDtype)
REF_QUANTS: tuple[RefQuant, ...] = get_args(RefQuant)
HEADS: tuple[Head, ...] = get_args(Head)
OPTIMIZER_IMPLS: tuple[OptimizerImpl, ...] = get_args(OptimizerImpl)
OPTIM_TARGETS: tuple[OptimTargets, ...] = get_args(OptimTargets)
ATTENTIONS: tuple[Attention, ...] = get_args(Attention)
ADAPTER_DTYPES: tuple[AdapterDtype, ...] = get_args(AdapterDtype)
QUANT_BITS: tuple[QuantBits, ...] = get_args(QuantBits)
QUANT_BACKENDS: tuple[QuantBackend, ...] = get_args(QuantBackend)
NORM_KINDS: tuple[NormKind, ...] = get_args(NormKind)
MLP_KINDS: tuple[MlpKind, ...] = get_args(MlpKind)
HIDDEN_ACTS: tuple[HiddenAct, ...] = get_args(HiddenAct)
ATTENTION_KINDS: tuple[AttentionKind, ...] = get_args(AttentionKind)
VENDORS: tuple[Vendor, ...] = get_args(Vendor)
ZERO_STAGES: tuple[ZeroStage, ...] = get_args(ZeroStage)
FSDP_STRATEGIES: tuple[FsdpStrategy, ...] = get_args(FsdpStrategy)
OFFLOADS: tuple[Offload, ...] = get_args(Offload)
GRAD_SYNCS: tuple[GradSync, ...] = get_args(GradSync)
TP_LAYOUTS: tuple[TpLayout, ...] = get_args(TpLayout)
AC_LAYOUTS: tuple[AcLayout, ...] = get_args(AcLayout)
COMPILE_SCOPES: tuple[CompileScope, ...] = get_args(CompileScope)
TRACE_DEVICES: tuple[TraceDevice, ...] = get_args(TraceDevice)
WEIGHT_DTYPES: tuple[WeightDtype, ...] = get_args(WeightDtype)
KV_DTYPES: tuple[KvDtype, ...] = get_args(KvDtype)
FP8_RECIPES: tuple[Fp8Recipe, ...] = get_args(Fp8Recipe)
KV_CACHES: tuple[KvCache, ...] = get_args(KvCache)
LOGITS_KEPT: tuple[LogitsKept, ...] = get_args(LogitsKept)
UNITS: tuple[Unit, ...] = get_args(Unit)
OUT_FORMATS: tuple[OutFormat, ...] = get_args(OutFormat)
EXPLAIN_FORMATS: tuple[ExplainFormat, ...] = get_args(ExplainFormat)

METHOD_LABELS: dict[Method, str] = {
    "full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA", "freeze": "partial (freeze)",
    "ia3": "IA3", "ln-tuning": "LN tuning", "loha": "LoHa", "lokr": "LoKr", "vera": "VeRA", "oft": "OFT",
    "fourierft": "FourierFT",    "trainable-tokens": "trainable tokens",
    "prompt-tuning": "prompt tuning", "p-tuning": "p-tuning", "prefix-tuning": "prefix tuning",
    "boft": "BOFT", "miss": "MiSS", "c3a": "C3A", "shira": "SHiRA", "adaption-prompt": "adaption prompt",
}
