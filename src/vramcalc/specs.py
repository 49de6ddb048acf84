"""Validated inputs: the model architecture, the GPU, and the training run.

Pydantic lives here and in the loaders only; the arithmetic core reads these frozen objects.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

Method = Literal["full", "lora", "qlora", "freeze"]
Mode = Literal["train", "inference"]
PrecisionName = Literal[
    "bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16", "amp-fp16", "fp32"
]
OptimizerName = Literal[
    "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum", "adafactor", "lion",
    "torchao-adamw-8bit", "torchao-adamw-4bit", "torchao-adamw-fp8",
]
OptimizerImpl = Literal["fused", "foreach", "for-loop"]
Attention = Literal["sdpa", "eager"]
AdapterDtype = Literal["fp32", "bf16", "fp16"]
NormKind = Literal["rmsnorm", "layernorm"]
MlpKind = Literal["gated", "plain"]
AttentionKind = Literal["standard", "mla"]  # mla: DeepSeek-V2/V3 multi-head latent attention
# Multi-GPU and inference settings (memory/distributed.py, memory/inference.py).
ZeroStage = Literal[0, 1, 2, 3]
FsdpStrategy = Literal["none", "full-shard", "shard-grad-op", "hybrid-shard", "no-shard"]
Offload = Literal["none", "optimizer", "params"]
WeightDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"]
KvDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8"]
# Memory savers (memory/loss.py): how the loss is computed from the last hidden states.
LossName = Literal["hf", "chunked", "fused-linear", "cut"]
LOSSES: tuple[LossName, ...] = ("hf", "chunked", "fused-linear", "cut")

METHODS: tuple[Method, ...] = ("full", "lora", "qlora", "freeze")
PRECISIONS: tuple[PrecisionName, ...] = (
    "bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16", "amp-fp16", "fp32"
)
OPTIMIZERS: tuple[OptimizerName, ...] = (
    "adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum", "adafactor", "lion",
    "torchao-adamw-8bit", "torchao-adamw-4bit", "torchao-adamw-fp8",
)

# Precisions whose weights are fp32 (memory/precision.py RECIPES: amp-* and fp32).
RECIPE_WEIGHT_32: dict[str, bool] = {"amp-bf16": True, "amp-fp16": True, "fp32": True}

_STRICT = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(BaseModel):
    """A decoder-only transformer as its config.json describes it, or a bare parameter count."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, description="Where the numbers come from (a config.json URL).")
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    family: str = "llama"

    # A preset without an architecture gives its total and, optionally, activation bytes per sample.
    parameters: PositiveInt | None = None
    activation_bytes_per_sample: NonNegativeInt | None = None

    vocab_size: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None
    num_layers: PositiveInt | None = None
    num_attention_heads: PositiveInt | None = None
    num_kv_heads: PositiveInt | None = None  # None: multi-head attention (= num_attention_heads)
    head_dim: PositiveInt | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: PositiveInt | None = None

    tie_word_embeddings: bool = False
    mlp: MlpKind = "gated"  # gated: gate_proj, up_proj, down_proj (SwiGLU/GeGLU); plain: fc1, fc2
    norm: NormKind = "rmsnorm"  # layernorm has a bias vector as well as a weight
    norms_per_layer: NonNegativeInt = 2  # Gemma 2/3 have 4; Falcon-7B and Phi-2 have 1
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
    sliding_window: PositiveInt | None = None
    hidden_act: str = "silu"  # config.json hidden_act: silu, gelu, gelu_new, gelu_pytorch_tanh, ...
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # residual/embedding dropout (GPT-2: 0.1)
    norm_fp32_weight_mul: bool = False  # Gemma's RMSNorm multiplies by (1 + w) in fp32

    # Mixture of experts (0 experts: a dense model).
    num_experts: NonNegativeInt = 0
    experts_per_token: NonNegativeInt = 0
    moe_intermediate_size: PositiveInt | None = None
    num_shared_experts: NonNegativeInt = 0
    shared_expert_intermediate_size: PositiveInt | None = None
    first_dense_layers: NonNegativeInt = 0
    shared_expert_gate: bool = False  # Qwen2-MoE: a Linear(hidden, 1) gate on the shared expert
    router_bias: bool = False  # DeepSeek-V3 noaux_tc: e_score_correction_bias (num_experts) per MoE layer
    # Tokens each expert may take, as a multiple of its even share (Switch Transformer, arXiv:2101.03961
    # §2.1); None: dropless routing (Mixtral, Qwen-MoE and DeepSeek in transformers).
    moe_capacity_factor: float | None = Field(default=None, gt=0)

    # Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1; modeling_deepseek_v3.py).
    attention_kind: AttentionKind = "standard"
    q_lora_rank: PositiveInt | None = None  # None: a plain q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: PositiveInt | None = None
    qk_nope_head_dim: PositiveInt | None = None
    qk_rope_head_dim: PositiveInt | None = None
    v_head_dim: PositiveInt | None = None

    # Local/global attention: how many layers use the sliding window (None: all, when sliding_window
    # is set). Gemma 2 alternates 1:1, Gemma 3 has 5 local per global layer (config.json layer_types).
    sliding_window_layers: NonNegativeInt | None = None

    # The published total, for the preset test (not used by the arithmetic).
    published_parameters: PositiveInt | None = None
    published_parameters_source: str | None = None

    @model_validator(mode="after")
    def _architecture_or_count(self) -> Self:
        arch = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads")
        given = [f for f in arch if getattr(self, f) is not None]
        if not given and self.parameters is None:
            raise ValueError(f"give the architecture ({', '.join(arch)}) or a `parameters` count")
        if given and len(given) < len(arch):
            missing = [f for f in arch if f not in given]
            raise ValueError(f"incomplete architecture: missing {', '.join(missing)}")
        if given:
            heads = self.num_attention_heads or 1
            if self.num_kv_heads is not None and heads % self.num_kv_heads:
                raise ValueError(f"num_attention_heads {heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
            if self.head_dim is None and (self.hidden_size or 0) % heads:
                raise ValueError("hidden_size is not divisible by num_attention_heads: give head_dim")
            if self.learned_position_embeddings and self.max_position_embeddings is None:
                raise ValueError("learned_position_embeddings needs max_position_embeddings")
            if self.num_experts and not self.experts_per_token:
                raise ValueError("a mixture-of-experts model needs experts_per_token")
            if self.experts_per_token > self.num_experts:
                raise ValueError("experts_per_token exceeds num_experts")
            if self.attention_kind == "mla":
                mla = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
                missing = [f for f in mla if getattr(self, f) is None]
                if missing:
                    raise ValueError(f"attention_kind mla needs {', '.join(missing)}")
            if self.sliding_window_layers is not None and self.sliding_window_layers > (self.num_layers or 0):
                raise ValueError("sliding_window_layers exceeds num_layers")
        return self

    @property
    def has_architecture(self) -> bool:
        return self.hidden_size is not None


class GpuSpec(BaseModel):
    """One GPU model: its memory as the driver reports it and what dtypes it computes in."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=100)
    display_name: str
    source: str = Field(min_length=1)
    memory_bytes: PositiveInt
    aliases: tuple[str, ...] = ()
    vendor: Literal["nvidia", "amd", "intel", "apple", "other"] = "nvidia"
    bf16: bool = True
    fp8: bool = False


class TrainingSpec(BaseModel):
    """Every setting of one run that changes its memory."""

    model_config = _STRICT

    mode: Mode = "train"
    method: Method = "full"
    precision: PrecisionName = "bf16"
    optimizer: OptimizerName = "adamw"
    optimizer_impl: OptimizerImpl = "fused"
    batch_size: PositiveInt = 1
    seq_len: PositiveInt = 512
    grad_accum: PositiveInt = 1
    grad_checkpointing: bool = False
    attention: Attention = "sdpa"
    lora_rank: PositiveInt = 16
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    adapter_dtype: AdapterDtype = "fp32"
    quant_bits: Literal[4, 8] = 4
    double_quant: bool = True
    freeze_layers: NonNegativeInt | None = None  # for `freeze`: layers frozen from the bottom
    train_head: bool = True  # for `freeze`: whether the LM head is trained
    # Parallelism (memory/distributed.py): GPUs per node × nodes = tp × pp × data-parallel degree.
    gpus_per_node: PositiveInt = 1
    nodes: PositiveInt = 1
    zero: ZeroStage = 0  # DeepSpeed ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters
    fsdp: FsdpStrategy = "none"  # PyTorch FSDP ShardingStrategy
    offload: Offload = "none"  # ZeRO-Offload / ZeRO-Infinity / FSDP CPUOffload
    tp: PositiveInt = 1  # tensor parallel degree (Megatron)
    pp: PositiveInt = 1  # pipeline parallel degree
    sequence_parallel: bool = False  # Megatron sequence parallelism (needs tp > 1)
    # Inference (memory/inference.py): seq_len is the context (prompt + generated tokens).
    weight_dtype: WeightDtype = "auto"  # auto: the precision's weight dtype
    kv_dtype: KvDtype = "auto"  # auto: the compute dtype
    quant_group_size: PositiveInt = 128  # GPTQ / AWQ group size
    # Memory savers (memory/loss.py): the loss kernel, and the chunks of torchtune's chunked loss.
    loss: LossName = "hf"
    loss_chunks: PositiveInt = 8  # torchtune CEWithChunkedOutputLoss num_output_chunks
    ac_every: PositiveInt = 1  # with grad_checkpointing: every k-th layer (torchtune ac_mode selective)
    activation_offload: bool = False  # torchtune enable_activation_offloading, Unsloth "unsloth" checkpointing
    optimizer_in_bwd: bool = False  # torchtune optimizer_in_bwd: each parameter stepped as its gradient lands

    @model_validator(mode="after")
    def _parallel_consistent(self) -> Self:
        gpus = self.gpus_per_node * self.nodes
        if gpus % (self.tp * self.pp):
            raise ValueError(f"{gpus} GPUs cannot be split into tp {self.tp} × pp {self.pp}: "
                             "make --gpus × --nodes a multiple of --tp × --pp")
        if self.zero and self.fsdp != "none":
            raise ValueError("choose DeepSpeed ZeRO or FSDP, not both: drop --zero or --fsdp")
        if self.offload == "params" and self.zero != 3 and self.fsdp not in ("full-shard", "hybrid-shard"):
            raise ValueError("parameter offload needs sharded parameters: add --zero 3 or --fsdp full-shard")
        if self.offload == "optimizer" and self.zero == 0:
            hint = "FSDP's CPUOffload moves parameters: use --offload params" if self.fsdp != "none" \
                else "add --zero 1, 2 or 3"
            raise ValueError(f"optimizer offload needs ZeRO: {hint}")
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("sequence parallelism splits along the tensor-parallel group: add --tp N, N > 1")
        if self.mode == "inference":
            if self.zero or self.fsdp != "none" or self.offload != "none":
                raise ValueError("inference shards with --tp/--pp only: drop --zero, --fsdp and --offload")
        elif self.weight_dtype != "auto" or self.kv_dtype != "auto":
            raise ValueError("--weight-dtype and --kv-dtype apply to --mode inference; for training use "
                             "--method qlora or --precision")
        return self

    @model_validator(mode="after")
    def _savers_consistent(self) -> Self:
        if self.loss == "cut" and self.mode == "train" and RECIPE_WEIGHT_32.get(self.precision, False):
            # cut_cross_entropy/cce_backward.py asserts bf16/fp16 embeddings and classifier.
            raise ValueError(f"--loss cut needs 16-bit weights (Cut Cross-Entropy's backward asserts bf16 or "
                             f"fp16), not --precision {self.precision}: use --precision bf16")
        if self.optimizer_in_bwd and self.mode == "train":
            if self.grad_accum > 1:
                # torchtune recipes raise: gradients are freed as soon as they are applied.
                raise ValueError("--optimizer-in-bwd steps each parameter as its gradient lands, so it cannot "
                                 "accumulate gradients: use --grad-accum 1")
            if self.zero or self.fsdp != "none":
                raise ValueError("--optimizer-in-bwd is modelled on one GPU: drop --zero / --fsdp")
        if self.ac_every > 1 and not self.grad_checkpointing:
            raise ValueError(f"--ac-every {self.ac_every} selects which layers are checkpointed: "
                             "add --grad-checkpointing")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.method == "freeze" and self.freeze_layers is None:
            raise ValueError("method 'freeze' needs --freeze-layers N (layers kept frozen from the bottom)")
        if self.method in ("lora", "qlora") and not self.lora_targets:
            raise ValueError("LoRA needs at least one target module: pass --lora-targets q_proj,v_proj")
        return self
