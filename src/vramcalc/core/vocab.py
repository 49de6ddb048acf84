"""Every choice vramcalc offers, declared once: the core, the readers and the CLI all use these.

Each `Literal` alias types a spec field; the tuple beside it (`get_args` of the alias) is what option
parsers, `--help` and error messages list. Add a choice here and it is everywhere.
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["train", "inference"]
# The PEFT methods beyond LoRA (core/peft_methods.py: their trainable parameters and saved tensors, from peft 0.21's
# tuners/*): IA3, LN tuning, LoHa, LoKr, VeRA, and the prompt-learning methods.
Method = Literal["full", "lora", "qlora", "freeze", "ia3", "ln-tuning", "loha", "lokr", "vera", "oft",
                 "fourierft", "trainable-tokens", "prompt-tuning", "p-tuning", "prefix-tuning"]
PrecisionName = Literal[
    "auto", "bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16", "amp-fp16", "fp32"
]
OptimizerName = Literal[
    "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum", "adafactor", "lion",
    "torchao-adamw-8bit", "torchao-adamw-4bit", "torchao-adamw-fp8",
]
OptimizerImpl = Literal["fused", "foreach", "for-loop"]
Attention = Literal["sdpa", "eager"]
AdapterDtype = Literal["fp32", "bf16", "fp16"]
QuantBits = Literal[4, 8]
NormKind = Literal["rmsnorm", "layernorm"]
MlpKind = Literal["gated", "plain"]
# config.json hidden_act names whose saved tensors memory/activations.py models: ATen kernels that save
# one tensor (silu = swish, gelu, gelu_pytorch_tanh, relu) and transformers' Python formulas
# (gelu_new, gelu_fast, quick_gelu: ACT_SAVED_TENSORS). Any other name is refused, not guessed.
HiddenAct = Literal["silu", "swish", "gelu", "gelu_pytorch_tanh", "relu", "gelu_new", "gelu_fast", "quick_gelu"]
AttentionKind = Literal["standard", "mla"]  # mla: DeepSeek-V2/V3 multi-head latent attention
Vendor = Literal["nvidia", "amd", "intel", "apple", "other"]
# Multi-GPU and inference settings (memory/distributed.py, memory/inference.py).
ZeroStage = Literal[0, 1, 2, 3]
FsdpStrategy = Literal["none", "full-shard", "shard-grad-op", "hybrid-shard", "no-shard"]
Offload = Literal["none", "optimizer", "params"]
WeightDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"]
KvDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8"]
# Memory savers (memory/loss.py): how the loss is computed from the last hidden states.
LossName = Literal["hf", "chunked", "fused-linear", "cut"]
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
OPTIMIZER_IMPLS: tuple[OptimizerImpl, ...] = get_args(OptimizerImpl)
ATTENTIONS: tuple[Attention, ...] = get_args(Attention)
ADAPTER_DTYPES: tuple[AdapterDtype, ...] = get_args(AdapterDtype)
QUANT_BITS: tuple[QuantBits, ...] = get_args(QuantBits)
NORM_KINDS: tuple[NormKind, ...] = get_args(NormKind)
MLP_KINDS: tuple[MlpKind, ...] = get_args(MlpKind)
HIDDEN_ACTS: tuple[HiddenAct, ...] = get_args(HiddenAct)
ATTENTION_KINDS: tuple[AttentionKind, ...] = get_args(AttentionKind)
VENDORS: tuple[Vendor, ...] = get_args(Vendor)
ZERO_STAGES: tuple[ZeroStage, ...] = get_args(ZeroStage)
FSDP_STRATEGIES: tuple[FsdpStrategy, ...] = get_args(FsdpStrategy)
OFFLOADS: tuple[Offload, ...] = get_args(Offload)
WEIGHT_DTYPES: tuple[WeightDtype, ...] = get_args(WeightDtype)
KV_DTYPES: tuple[KvDtype, ...] = get_args(KvDtype)
UNITS: tuple[Unit, ...] = get_args(Unit)
OUT_FORMATS: tuple[OutFormat, ...] = get_args(OutFormat)
EXPLAIN_FORMATS: tuple[ExplainFormat, ...] = get_args(ExplainFormat)

METHOD_LABELS: dict[Method, str] = {
    "full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA", "freeze": "partial (freeze)",
    "ia3": "IA3", "ln-tuning": "LN tuning", "loha": "LoHa", "lokr": "LoKr", "vera": "VeRA", "oft": "OFT",
    "fourierft": "FourierFT",    "trainable-tokens": "trainable tokens",
    "prompt-tuning": "prompt tuning", "p-tuning": "p-tuning", "prefix-tuning": "prefix tuning",
}
