"""The run options, declared once: every setting of a TrainingSpec as an option with its type and help.

`estimate`, `fit` and `gpus --fits` take each option as one typed value; `compare` takes each as a
comma-separated list and runs the cross product. A run file (`--config`) supplies values too; an option
given on the command line overrides the file. The CLI builds its Typer options and its fast parser from
this table, and io/ maps run-file keys onto it. Adding a TrainingSpec option is one entry in OPTIONS.
Standard library only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vramcalc.core import lora_layers, unfrozen
from vramcalc.core.errors import VramcalcError
from vramcalc.core.vocab import (
    AC_LAYOUTS,
    ADAPTER_DTYPES,
    ATTENTIONS,
    COMPILE_SCOPES,
    DPO_HEADS,
    FP8_RECIPES,
    FSDP_STRATEGIES,
    GRAD_SYNCS,
    HEADS,
    KV_CACHES,
    KV_DTYPES,
    LOGITS_KEPT,
    LOSSES,
    METHODS,
    MODES,
    NOT_MODELLED,
    OBJECTIVES,
    OFFLOADS,
    ONLINE_DPO_VLLM_UTILIZATION,
    OPTIM_TARGETS,
    OPTIMIZER_IMPLS,
    OPTIMIZERS,
    PACKINGS,
    PRECISIONS,
    QUANT_BACKENDS,
    QUANT_BITS,
    REF_DTYPES,
    REF_MODELS,
    REF_QUANTS,
    RLOO_DEFAULTS,
    STACKS,
    TP_LAYOUTS,
    VLLM_MODES,
    WEIGHT_DTYPES,
)


@dataclass(frozen=True)
class Opt:
    """One estimate option: its TrainingSpec field, type (or choices), default and help."""

    name: str
    kind: type | tuple[str, ...]
    default: Any
    help: str
    sep: str = ","  # what separates the values of a list (compare)
    cli: str | None = None  # the flag when it differs from the field name (--gpus for gpus_per_node)
    multiple: bool = False  # repeatable: the values form a list (--presets A --presets B)
    negatable: bool = True  # a boolean also has its --no- form
    complete: str | None = None  # shell completion of preset names: "model" or "gpu"

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Opt, ...] = (
    Opt("method", METHODS, "full", "Fine-tuning method."),
    Opt("precision", PRECISIONS, "auto",
        "What weights, grads and optimizer states are stored in (auto: bf16; mixed-bf16, fp32 master "
        "weights, with --zero or --fsdp, as DeepSpeed and FSDP mixed precision keep them)."),
    Opt("optimizer", OPTIMIZERS, "adamw", "Optimizer."),
    Opt(
        "optimizer_impl",
        OPTIMIZER_IMPLS,
        "fused",
        "Optimizer kernel: fused (no temporaries), foreach (PyTorch's CUDA default), for-loop.",
    ),
    Opt("optimizer_rank", int, None,
        "GaLore/APOLLO projection rank r (default: 128, HF's; apollo-mini: 1)."),
    Opt("optimizer_targets", OPTIM_TARGETS, "attn-mlp",
        "GaLore/APOLLO projected weights (HF optim_target_modules): attn-mlp (every Linear of the blocks), attn, "
        "mlp, or all-linear (also lm_head)."),
    Opt("batch_size", int, 1, "Micro-batch size per GPU."),
    Opt("seq_len", int, 512, "Sequence length in tokens."),
    Opt("grad_accum", int, 1, "Gradient accumulation steps."),
    Opt("grad_checkpointing", bool, False, "Gradient (activation) checkpointing."),
    Opt(
        "attention", ATTENTIONS, "sdpa",
        "Attention kernel: sdpa (flash / memory-efficient), eager, or flash (flash_attention_2, varlen on packed rows)."
    ),
    Opt("lora_rank", int, 16, "LoRA rank r (also LoHa's, LoKr's and VeRA's r)."),
    Opt("lora_alpha", float, 32.0, "LoRA alpha (no effect on memory)."),
    Opt("lora_dropout", float, 0.0, "LoRA dropout (p > 0 keeps a copy of each adapted input)."),
    Opt("lora_targets", str, "auto",
        "Comma-separated module names, all-linear, or auto (q_proj,v_proj; DeepSeek MLA: q_b_proj,kv_b_proj; "
        "IA3: peft's per-family default); add lm-only to keep a vision-language model's targets in its language "
        "model. Also the targets of LoHa, LoKr, VeRA and IA3.",
        sep=";"),
    Opt("adapter_dtype", ADAPTER_DTYPES, "fp32", "LoRA adapter dtype."),
    Opt("dora", bool, False, "DoRA (peft use_dora): a magnitude vector per adapted Linear, and each forward "
        "materializes the adapted weight (dequantized under QLoRA) for its norm."),
    Opt("modules_to_save", str, "none",
        "LoRA: comma-separated modules trained as full copies (peft modules_to_save): embed_tokens, lm_head; "
        "none: no module.", sep=";"),
    Opt("lora_trainable_tokens", int, 0,
        "LoRA: token ids whose embeddings are trained beside the adapters (the length of peft's "
        "trainable_token_indices); 0: none."),
    Opt("lora_layers", str, "all",
        "The decoder layers LoRA / QLoRA adapt (peft layers_to_transform): indices and ranges from 0, "
        "e.g. 0-7,30,31; all: every layer.", sep=";"),
    Opt("quant_bits", int, 4, "QLoRA base: 4 (NF4) or 8 (int8); with --quant-backend hqq 1, 2, 3, 4, 5, 6 or 8."),
    Opt("quant_backend", QUANT_BACKENDS, "bnb",
        "QLoRA's quantizer: bnb (bitsandbytes) or hqq (HQQLinear, PyTorch backend, transformers 4.x)."),
    Opt("hqq_group_size", int, 64, "--quant-backend hqq: weights per scale/zero group (HqqConfig group_size)."),
    Opt("hqq_axis", int, 1, "--quant-backend hqq: the grouping axis, 0 or 1 (HqqConfig axis; LLaMA-Factory: 0)."),
    Opt("double_quant", bool, True, "QLoRA double quantization of the constants."),
    Opt("kbit_prep", bool, True,
        "QLoRA: peft prepare_model_for_kbit_training (the standard recipe) casts the non-quantized 16-bit "
        "parameters (norms, embeddings, lm_head) to fp32; false: they stay 16-bit."),
    Opt("freeze_layers", int, None, "For --method freeze: layers frozen from the bottom."),
    Opt("train_head", bool, True, "For --method freeze: train the LM head."),
    Opt("train_layers", str, "auto",
        "For --method freeze: the trained decoder layers, e.g. 0-3,30,31 (instead of --freeze-layers); "
        "none: no layer.", sep=";"),
    Opt("train_modules", str, "auto",
        "For --method freeze: the trained modules outside the layers, of embed_tokens, norm, lm_head, "
        "projector (a VLM's); auto: norm,lm_head per --train-head.", sep=";"),
    Opt("add_tokens", int, 0,
        "New tokens: embedding (and untied lm_head) rows added past vocab_size (resize_token_embeddings)."),
    Opt("vocab_multiple", int, 1,
        "New tokens: the resized vocabulary rounded up to this multiple (pad_to_multiple_of)."),
    # The other PEFT methods (core/peft_methods.py; --lora-rank and --lora-targets serve LoHa, LoKr, VeRA, IA3).
    Opt("virtual_tokens", int, 20, "Prompt, p- and prefix tuning: virtual tokens (peft num_virtual_tokens)."),
    Opt("encoder_hidden_size", int, None, "P-tuning's prompt-encoder MLP width, or prefix tuning's projection "
        "width (peft encoder_hidden_size; default: the hidden size)."),
    Opt("prefix_projection", bool, False, "Prefix tuning: reparameterize the prefix through an MLP "
        "(peft prefix_projection)."),
    Opt("ia3_feedforward", str, "auto",
        "IA3: comma-separated modules scaled at their input (peft feedforward_modules); auto: peft's default "
        "(down_proj), none: no module.", sep=";"),
    Opt("trainable_tokens", int, 16, "Trainable tokens: how many token ids' embeddings are trained (the length of "
        "peft's token_indices)."),
    Opt("n_frequency", int, 1000, "FourierFT: spectral coefficients learned per adapted Linear (peft n_frequency)."),
    Opt("oft_block_size", int, 32, "OFT: block size of the block-diagonal rotation (peft oft_block_size; "
        "adjusted to a divisor of each layer's in_features, as peft does)."),
    Opt("boft_block_size", int, 4, "BOFT: block size of the butterfly rotation (peft boft_block_size; 0 when "
        "--boft-block-num is given)."),
    Opt("boft_block_num", int, 0, "BOFT: blocks per adapted Linear instead of a block size (peft boft_block_num; "
        "0: use --boft-block-size)."),
    Opt("miss_rank", int, 64, "MiSS (formerly Bone): rank r, the rows of each Linear's trained block (peft r)."),
    Opt("c3a_block_size", int, 256, "C3A: block size of the block-circulant delta (peft block_size); must divide "
        "every adapted Linear's in and out features."),
    Opt("shira_rank", int, 32, "SHiRA: r x (in + out) weights trained per adapted Linear (peft r)."),
    Opt("adapter_len", int, 10, "Adaption prompt (LLaMA-Adapter): prompt tokens per adapted layer (peft adapter_len; "
        "10 as in the paper)."),
    Opt("adapter_layers", int, None, "Adaption prompt: how many top layers are adapted (peft adapter_layers; "
        "default: every layer)."),
    # Multi-GPU and inference (memory/distributed.py, memory/inference.py).
    Opt("mode", MODES, "train", "A training step, generate() inference (KV cache), or a vLLM server (serve)."),
    Opt("gpus_per_node", int, 1, "GPUs per node (the verdict is per GPU).", cli="--gpus"),
    Opt("nodes", int, 1, "Nodes."),
    Opt("zero", int, 0, "DeepSpeed ZeRO stage: 0, 1 (optimizer states), 2 (+ gradients), 3 (+ parameters)."),
    Opt("fsdp", FSDP_STRATEGIES, "none",
        "PyTorch FSDP sharding strategy."),
    Opt("offload", OFFLOADS, "none",
        "CPU offload (ZeRO-Offload/Infinity, FSDP CPUOffload); params implies optimizer. Host RAM per node."),
    Opt("tp", int, 1, "Tensor-parallel degree."),
    Opt("tp_layout", TP_LAYOUTS, "megatron",
        "--tp's layout: Megatron's, or hf: transformers' tp_plan (axolotl tensor_parallel_size)."),
    Opt("pp", int, 1, "Pipeline-parallel degree."),
    Opt("sequence_parallel", bool, False, "Megatron sequence parallelism (with --tp)."),
    Opt("context_parallel", int, 1, "Split each sequence over N GPUs (axolotl ring attention; with "
        "--attention flash)."),
    Opt("grad_sync", GRAD_SYNCS, "deferred",
        "FSDP with --grad-accum > 1: deferred keeps gradients unsharded until the last micro-batch (no_sync: HF, "
        "Lightning); every-micro-batch reduce-scatters each (torchtune)."),
    Opt("fsdp_frozen_grads", bool, False,
        "LoRA under FSDP1 use_orig_params (litgpt): a unit's frozen weights get gradients too."),
    Opt("fsdp_units", str, "none",
        "FSDP: embed_tokens, lm_head as their own units (torchtune custom_sharded_layers); none: in the root.",
        sep=";"),
    Opt("context", int, None,
        "Inference context in tokens, or one request's tokens with --mode serve (sets --seq-len)."),
    Opt("weight_dtype", WEIGHT_DTYPES, "auto",
        "Inference weight format (auto: the precision's)."),
    Opt("kv_dtype", KV_DTYPES, "auto",
        "Inference KV-cache dtype (auto: the compute dtype)."),
    Opt("quant_group_size", int, 128, "GPTQ/AWQ group size."),
    Opt("new_tokens", int, 1,
        "Inference: tokens generate() produces (max_new_tokens); the prefill reads context - N + 1 tokens."),
    Opt("cache_impl", KV_CACHES, "dynamic",
        "Inference KV cache: dynamic (transformers DynamicCache), static (StaticCache, preallocated), legacy "
        "(the tuple cache of older transformers: two caches alive in each decode step).", cli="--kv-cache"),
    Opt("logits", LOGITS_KEPT, "last",
        "Inference prefill logits: last (generate's logits_to_keep=1, transformers >= 4.45) or all "
        "(every prompt position plus an fp32 copy, older transformers)."),
    # vLLM serving (--mode serve, memory/vllm.py): its engine arguments, vLLM's defaults when not given.
    Opt("gpu_memory_utilization", float, 0.9,
        "Serve: the fraction of the GPU's memory vLLM takes for weights, the profile run and the KV-cache pool."),
    Opt("max_model_len", int, None,
        "Serve: vLLM max_model_len (default: the model's max_position_embeddings); one request of it must fit."),
    Opt("max_num_seqs", int, None,
        "Serve: vLLM max_num_seqs, requests batched at once (default: vllm serve's, 256; 1024 on >= 70 GiB GPUs "
        "but A100s)."),
    Opt("max_num_batched_tokens", int, None,
        "Serve: vLLM max_num_batched_tokens, the tokens of one step and of the profile run (default: vllm serve's, "
        "2048; 8192 on >= 70 GiB GPUs but A100s)."),
    Opt("block_size", int, 16, "Serve: vLLM KV-cache block size in tokens."),
    Opt("enforce_eager", bool, False, "Serve: vLLM enforce_eager (no CUDA graphs)."),
    # Memory savers (memory/loss.py).
    Opt("loss", LOSSES, "hf",
        "Loss kernel: hf (full fp32 logits), chunked / linear-chunked (torchtune CEWithChunkedOutputLoss / "
        "LinearCrossEntropyLoss), fused-linear (Liger), cut (Apple CCE), trl (TRL's fused LM head), "
        "liger-cross-entropy (Liger's LigerCrossEntropyLoss on the full logits, gradient in place)."),
    Opt("loss_chunks", int, 8, "For --loss chunked / linear-chunked: chunks (torchtune num_output_chunks)."),
    Opt("ac_every", int, 1, "With --grad-checkpointing: checkpoint every k-th layer (torchtune ac_mode "
        "selective, ac_option k); the others keep their activations."),
    Opt("ac_layout", AC_LAYOUTS, "torchtune", "With --ac-every k: torchtune wraps layers k, 2k, ... (1-based); hf "
        "wraps 0, k, 2k, ... (transformers every_n_layers)."),
    Opt("reentrant_gc", bool, False, "With --grad-checkpointing: use_reentrant=True (LLaMA-Factory's default "
        "use_reentrant_gc); transformers' default is non-reentrant."),
    Opt("ac_early_stop", bool, True, "With --grad-checkpointing (non-reentrant): torch.utils.checkpoint early_stop, "
        "the rerun stopping at the layer's last saved tensor; --no-ac-early-stop reruns each layer to its end "
        "(gradient_checkpointing_kwargs early_stop: false)."),
    Opt("activation_offload", bool, False, "Offload saved activations to host RAM (torchtune "
        "enable_activation_offloading, Unsloth 'unsloth' checkpointing, axolotl gradient_checkpointing: offload)."),
    Opt("ac_offload", bool, False, "With --grad-checkpointing: transformers' offload (save_on_cpu around each "
        "checkpoint; the checkpointed layers' inputs in host RAM)."),
    Opt("optimizer_in_bwd", bool, False, "Step each parameter as its gradient lands, no full gradient buffer "
        "(torchtune optimizer_in_bwd)."),
    Opt("compile", bool, False, "torch.compile (inductor): Llama-like layers modelled, else the eager step (an "
        "upper bound; docs/stacks.md)."),
    Opt("compile_scope", COMPILE_SCOPES, "model", "With --compile: model (the whole model) or layers (torchtune's)."),
    Opt("auto_find_batch_size", bool, False, "HF Trainer auto_find_batch_size: with --gpu, a note gives the batch it "
        "ends at (x0.9 per OOM)."),
    Opt("router_aux_loss", bool, False, "MoE: the router's aux loss (output_router_logits): every MoE layer's "
        "router logits kept to the loss."),
    Opt("badam", bool, False, "BAdam layer mode (LLaMA-Factory use_badam, --method full): one decoder layer "
        "trained at a time, fp32 copy and states."),
    Opt("lisa_layers", int, None, "LISA (axolotl lisa_n_layers, --method full): N decoder layers trained at a "
        "time."),
    Opt("gpu_memory_limit", str, "none", "accelerate max_memory for the GPU (axolotl gpu_memory_limit / max_memory): "
        "20GB (10^9), 20GiB (2^30) or bytes; the modules past it go to the CPU and are copied to the GPU each forward "
        "(AlignDevicesHook); none: every module on the GPU."),
    Opt("whole_layers", bool, False, "With --gpu-memory-limit: transformers' device_map placement, each decoder "
        "layer on the GPU or the CPU whole."),
    Opt("relora", bool, False, "axolotl relora: LoRA merged and restarted between steps (the largest layer's "
        "B @ A pair then)."),
    Opt("upcast_logits", bool, False, "LLaMA-Factory upcast_lmhead_output: fp32 logits from lm_head."),
    Opt("upcast_norms", bool, False, "LLaMA-Factory upcast_layernorm: fp32 norm weights over a 16-bit model, the "
        "step under the Trainer's autocast."),
    Opt("fp8", FP8_RECIPES, "off", "FP8 training via accelerate's torchao Float8Linear: tensorwise (axolotl fp8) "
        "or rowwise (LLaMA-Factory fp8) recipe."),
    Opt("kernels", str, "hf",
        "Layer kernels: hf, unsloth (Unsloth's RMSNorm, RoPE and LoRA autograd functions; Llama, Mistral, "
        "Qwen2, all seven projections, dropout 0) or unsloth:GROUPS of qkv,o,mlp,norm,rope (axolotl's "
        "unsloth_* keys; Llama); liger (Liger's RMSNorm, SwiGLU and RoPE: Llama, Mistral, Qwen2, Qwen3; full, "
        "LoRA, QLoRA in bf16 / fp16); axolotl:GROUPS of qkv,o,mlp (axolotl's own LoRA kernels, on by default "
        "in axolotl LoRA / QLoRA: Llama, Mistral, Qwen2, Qwen3, no DoRA).", sep=";"),
    Opt("packing", PACKINGS, "none",
        "Batch layout: none (padded rows), packed (several sequences per row), padding-free (one flat row)."),
    # The stack is applied by OptionValues (its defaults under the run file and the command line).
    Opt("stack", STACKS, "hf",
        "Training stack whose defaults to use (presets/stacks/); options given explicitly win."),
    # Preference and reward training (memory/preference.py).
    Opt("objective", OBJECTIVES, "sft",
        "Training objective (TRL's trainers; docs/preference.md): dpo/ipo/kto with a reference, reward (a scoring "
        "head), orpo/cpo/simpo without, grpo/rloo (generate(), then a step on the completions), online-dpo, ppo."),
    Opt("prompt_len", int, 0,
        "Prompt tokens per sequence (of --seq-len); only completions go through TRL's head. 0: every token."),
    Opt("ref_model", REF_MODELS, "auto",
        "DPO/KTO/GRPO reference: auto (a copy; LoRA: the base with adapters off), copy, adapters-off, precomputed."),
    Opt("dpo_head", DPO_HEADS, "trl",
        "DPO's log-prob head: trl (TRL DPOTrainer's fused head, no logits) or logits (torchtune's DPO recipes: the "
        "full fp32 logits and log_softmax over the vocabulary, for the policy and then the reference)."),
    Opt("ref_dtype", REF_DTYPES, "auto", "Dtype of a copied reference model (auto: the policy's weight dtype)."),
    Opt("ref_quant", REF_QUANTS, "none",
        "A copied DPO/KTO reference in bitsandbytes storage: 4bit, 4bit-dq (double-quantized), 8bit (LLM.int8)."),
    Opt("reward_model", str, "none",
        "Online DPO, GRPO, RLOO: the reward model scoring the completions (reward_funcs as a model id; "
        "OnlineDPOConfig reward_model_path): a preset or a config.json path, loaded as a sequence classifier. none: "
        "reward functions are Python callables.", complete="model"),
    Opt("reward_dtype", REF_DTYPES, "auto",
        "The --reward-model's weight dtype (auto: the training compute dtype; TRL loads its checkpoint's dtype)."),
    # Online RL (memory/rl.py): TRL GRPOConfig's defaults.
    Opt("num_generations", int, 8,
        "GRPO: completions sampled per prompt (GRPOConfig num_generations); the generation batch (--batch-size x "
        "steps per generation) must be a multiple of it."),
    Opt("beta", float, 0.0,
        "GRPO: KL coefficient; > 0 loads a reference (a frozen copy; LoRA: the base with adapters off)."),
    Opt("steps_per_generation", int, 0,
        "GRPO: micro-batches per generate() call (0: --grad-accum, GRPOConfig's default); generate() runs on "
        "--batch-size x this many completions."),
    Opt("num_iterations", int, 1,
        "GRPO: optimisation passes per generation batch (GRPOConfig num_iterations, mu in the paper)."),
    Opt("use_vllm", VLLM_MODES, "off",
        "GRPO, RLOO, online-dpo: generation with vLLM (use_vllm + vllm_mode): off (generate()), colocate (a vLLM "
        "engine on the training GPU, taking --vllm-utilization of it), server (vLLM on other GPUs: nothing on this "
        "one but the weight sync)."),
    Opt("vllm_utilization", float, 0.3,
        "--use-vllm colocate: the fraction of the GPU the colocated vLLM engine takes (vllm_gpu_memory_utilization; "
        "online-dpo: 0.55, OnlineDPOConfig's default, unless given)."),
    Opt("vllm_sleep", bool, False,
        "--use-vllm colocate: vLLM sleep mode (vllm_enable_sleep_mode): vLLM's weights and KV cache are released "
        "(level 2) during the training step."),
    Opt("chosen_nll", bool, True,
        "CPO/SimPO: the NLL term on the chosen half (CPOConfig cpo_alpha > 0, TRL's default); --no-chosen-nll for "
        "cpo_alpha 0 (AlphaPO, SimPO as published). ORPO always computes it."),
    # Encoders (memory/encoder.py).
    Opt("head", HEADS, "auto",
        "Encoder task head: seq-cls (pooler + classifier; auto for encoders), token-cls (a classifier at every "
        "token) or mlm (masked LM over the vocab)."),
    Opt("num_labels", int, 2, "Labels of an encoder's classifier (--head seq-cls / token-cls)."),
    # Encoder-decoders (memory/seq2seq.py).
    Opt("target_len", int, 0,
        "Encoder-decoders (T5, BART): target tokens per sequence (decoder input and labels); --seq-len is the "
        "source. 0: as long as the source."),
    # The classics (core/memory/classic.py): torchvision's ResNet family.
    Opt("image_size", int, 224, "ResNet: input images are image-size x image-size RGB (torchvision's 224). "
        "Vision-language models: each image's height (and width, unless --image-width) in pixels, resized and "
        "tiled as the model's processor does (224, the default: the model's own size; LLaVA-1.5 takes only 336; "
        "explain shows the image tokens)."),
    Opt("num_classes", int, 1000, "ResNet: outputs of the final fc layer (torchvision's 1000, ImageNet)."),
    # Vision-language models (memory/vision.py).
    Opt("images", int, 0, "Vision-language models (LLaVA, Qwen-VL): images per sample; their image tokens are added to "
        "--seq-len (the text tokens). 0: one for a vision-language model."),
    Opt("image_width", int, 0, "LLaVA-NeXT, Idefics3 / SmolVLM, Llama 4: each image's width in pixels (0: square); "
        "with --image-size it sets the tiles and image tokens."),
    Opt("train_vision", bool, False, "Vision-language models: train the vision tower too (--method full, or "
        "freeze with the language model frozen; sdpa)."),
)
BY_NAME = {o.name: o for o in OPTIONS}

# compare's cross product: more rows than anyone reads, and each is an estimate (issue 19: a million
# combinations took 3.9 GB before the count was checked).
MAX_RUNS = 10_000

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


class OptionError(VramcalcError):
    """A value that does not parse as its option's type (the CLI reports it as one line, exit 2)."""


def coerce(o: Opt, raw: Any) -> Any:
    """One value from the command line or a run file, as the option's type."""
    if raw is None:
        return None
    if isinstance(raw, str) and not raw.isprintable() and raw.strip():  # blank: the empty-value message below
        # a newline or escape sequence is never part of a value (and is never printed raw: repr escapes it)
        raise OptionError(f"{o.flag}: {_shown(raw)} holds control characters; give the value alone")
    if isinstance(o.kind, tuple):
        value = str(raw)
        if value not in o.kind:
            why = NOT_MODELLED.get(o.name, {}).get(value.strip().lower())
            if why is not None:
                raise OptionError(f"{o.flag} {value.strip().lower()} is not modelled: {why}")
            raise OptionError(f"{o.flag}: {_shown(raw)} is not one of {', '.join(map(str, o.kind))}")
        return value
    if o.kind is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise OptionError(f"{o.flag}: {_shown(raw)} is not a boolean; use true or false")
    if o.kind is str:
        text = ",".join(str(x) for x in raw) if isinstance(raw, list | tuple) else str(raw)
        if not text.replace(",", " ").strip():
            what = o.help.split(". ")[0].rstrip(".")  # the help's first sentence: `give GPU preset ...`
            what = what if what[1:2].isupper() else what[:1].lower() + what[1:]
            raise OptionError(f"{o.flag}: empty value; give {what}")
        return text
    # Numbers: never a boolean (True is not 1 here), never a fraction truncated to an integer, never
    # inf or nan (they would reach JSON as Infinity and make every comparison false).
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError
        if o.kind is int:
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError
                return int(raw)
            return int(raw)  # a string: int("1.5") and int("true") raise
        value = float(raw)
        if not math.isfinite(value):
            raise OptionError(f"{o.flag}: {_shown(raw)} is not a finite number")
        return value
    except (TypeError, ValueError, OverflowError):
        raise OptionError(
            f"{o.flag}: {_shown(raw)} is not {'an integer' if o.kind is int else 'a number'}"
        ) from None


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def split_values(o: Opt, text: str) -> list[Any]:
    """`1,2,4` → [1, 2, 4] for a list option (`;` separates LoRA target sets)."""
    parts = [p.strip() for p in text.split(o.sep) if p.strip()]
    if not parts:
        raise OptionError(f"{o.flag}: empty list")
    return list(dict.fromkeys(coerce(o, p) for p in parts))


@dataclass
class OptionValues:
    """The estimate options as a command received them, and which were given on the command line."""

    values: dict[str, Any]
    given: set[str] = field(default_factory=set)
    multi: bool = False
    # A stack's option defaults by stack name (io/stacks.py stack_options; the CLI passes it in, the core
    # reads no files). None: stacks are not applied (only the `stack` value is kept).
    stacks: Callable[[str], Mapping[str, Any]] | None = None

    def run(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One run's option values: defaults < the stack's < run file `overrides` < command line."""
        out = {o.name: o.default for o in OPTIONS}
        over = dict(overrides or {})
        for k, v in over.items():
            out[k] = coerce(BY_NAME[k], v)
        for name in self.given:
            out[name] = (
                self.values[name] if not self.multi else split_values(BY_NAME[name], self.values[name])[0]
            )
        return self._with_stack(out, set(over) | self.given)

    def _with_stack(self, run: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
        """`run` with its stack's defaults under every option set explicitly; `stack_set` names what it set."""
        if {"context", "seq_len"} <= explicit and run["context"] is not None and run["context"] != run["seq_len"]:
            # training_spec takes --context as the sequence: a different --seq-len would be dropped unseen
            raise OptionError(f"--context {run['context']} and --seq-len {run['seq_len']} both set the sequence "
                              "length: give one of them")
        if "compile_scope" in explicit and not run.get("compile"):
            # a stack's compile_scope (torchtune's) applies when compiling; given alone it would change nothing unseen
            raise OptionError("--compile-scope says what --compile compiles: add --compile (or drop --compile-scope)")
        stack = run.get("stack", "hf")
        preset = self.stacks(stack) if self.stacks is not None and stack != "hf" else {}
        taken = [k for k in preset if k not in explicit]
        for k in taken:
            run[k] = coerce(BY_NAME[k], preset[k])
        run["stack_set"] = tuple(taken)
        if run.get("objective") == "rloo":  # TRL RLOOConfig's own defaults (core/vocab.py RLOO_DEFAULTS)
            for k, v in RLOO_DEFAULTS.items():
                if k not in explicit:
                    run[k] = v
        if (run.get("objective") == "online-dpo" and run.get("use_vllm") == "colocate"
                and "vllm_utilization" not in explicit):  # OnlineDPOConfig's own default (core/vocab.py)
            run["vllm_utilization"] = ONLINE_DPO_VLLM_UTILIZATION
        return run

    def sweep(self, base: Mapping[str, Any] | None = None, times: int = 1) -> tuple[list[str], list[dict[str, Any]]]:
        """The cross product of every listed option (compare): the varied names and one dict per run.

        Refused before it is built when it (× `times`, the models) exceeds MAX_RUNS.
        """
        fixed = {o.name: o.default for o in OPTIONS}
        for k, v in (base or {}).items():
            fixed[k] = coerce(BY_NAME[k], v)
        axes: list[tuple[str, list[Any]]] = []
        for o in OPTIONS:
            if o.name in self.given:
                values = split_values(o, self.values[o.name]) if self.multi else [self.values[o.name]]
                if len(values) == 1:
                    fixed[o.name] = values[0]
                else:
                    axes.append((o.name, values))
        count = times * math.prod(len(vals) for _, vals in axes)
        if count > MAX_RUNS:
            raise OptionError(f"{count:,} configurations; narrow the lists (at most {MAX_RUNS:,})")
        runs = []
        explicit = set(base or {}) | self.given
        for combo in itertools.product(*(vals for _, vals in axes)):
            run = dict(fixed)
            run.update(zip((n for n, _ in axes), combo, strict=True))
            runs.append(self._with_stack(run, explicit))
        return [n for n, _ in axes], runs


def training_spec(values: Mapping[str, Any], reward_spec: Any = None) -> Any:
    """A TrainingSpec from option values (lora_targets as a comma-separated string or a list). `reward_spec`: the
    ModelSpec of --reward-model, resolved by the caller (the core reads no files)."""
    from vramcalc.core.specs import TrainingSpec

    kw = dict(values)
    if reward_spec is not None:
        kw["reward_spec"] = reward_spec
    context = kw.pop("context", None)
    if context is not None:
        kw["seq_len"] = context  # inference: the context is the sequence the KV cache holds
    if kw.get("quant_bits") not in QUANT_BITS:
        raise OptionError(f"--quant-bits must be one of {', '.join(map(str, QUANT_BITS))}, not {kw.get('quant_bits')}")
    targets = kw.get("lora_targets", "")
    if isinstance(targets, str):
        targets = targets.split(",")
    kw["lora_targets"] = tuple(x.strip() for x in targets if str(x).strip())
    try:
        kw["lora_layers"] = lora_layers.parse(kw.get("lora_layers", "all"))
    except lora_layers.LayersError as exc:
        raise OptionError(f"--lora-layers: {exc}") from None
    layers = kw.get("train_layers", "auto")
    if layers is None or str(layers).strip().lower() == "auto":
        kw["train_layers"] = None
    elif isinstance(layers, str) and layers.strip().lower() == "none":
        kw["train_layers"] = ()
    elif isinstance(layers, str) and layers.strip().lower() == "all":
        raise OptionError("--train-layers all: give the indices (e.g. 0-31), or --freeze-layers 0 for every layer")
    else:
        try:
            kw["train_layers"] = lora_layers.parse(layers) or None
        except lora_layers.LayersError as exc:
            raise OptionError(f"--train-layers: {exc}") from None
    try:
        kw["train_modules"] = unfrozen.parse_modules(kw.get("train_modules", "auto"))
    except unfrozen.ModulesError as exc:
        raise OptionError(f"--train-modules: {exc}") from None
    feedforward = kw.get("ia3_feedforward", "auto")
    if isinstance(feedforward, str):
        feedforward = feedforward.split(",")
    kw["ia3_feedforward"] = tuple(x.strip() for x in feedforward if str(x).strip())
    saved = kw.get("modules_to_save", "none")
    if isinstance(saved, str):
        saved = saved.split(",")
    kw["modules_to_save"] = tuple(x.strip() for x in saved if str(x).strip() and str(x).strip().lower() != "none")
    units = kw.get("fsdp_units", "none")
    if isinstance(units, str):
        units = units.split(",")
    kw["fsdp_units"] = tuple(x.strip() for x in units if str(x).strip() and str(x).strip().lower() != "none")
    return TrainingSpec(**kw)


def varied_label(names: Iterable[str]) -> list[str]:
    """Column labels for the varied options: the flag without its dashes (`batch-size`, `gpus`)."""
    return [BY_NAME[n].flag[2:] if n in BY_NAME else n.replace("_", "-") for n in names]
