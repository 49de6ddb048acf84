"""A run's settings in words and as a mapping: what every report prints so that a number can be reproduced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vramcalc.core import lora_layers
from vramcalc.core.memory.precision import recipe_of, resolve_precision
from vramcalc.core.memory.unreplaced import SUBCLASSED_LINEAR_FAMILIES
from vramcalc.core.peft_methods import TABLE as PEFT_TABLE
from vramcalc.core.vocab import CLASSIC_FAMILIES, METHOD_LABELS

if TYPE_CHECKING:
    from vramcalc.core.specs import TrainingSpec


def settings(t: TrainingSpec, family: str = "") -> dict[str, Any]:
    """Every assumption of the estimate, keyed by option name (JSON `settings`); `family`: the model's."""
    if family in CLASSIC_FAMILIES:  # ResNet / LSTM (memory/classic.py): no attention, no checkpointing
        shape = {"image_size": t.image_size, "num_classes": t.num_classes} if family == "resnet" \
            else {"seq_len": t.seq_len}
        return {"mode": t.mode, "method": t.method, "precision": _classic_precision(t), "optimizer": t.optimizer,
                "optimizer_impl": t.optimizer_impl, "batch_size": t.batch_size, **shape, "grad_accum": t.grad_accum}
    out: dict[str, Any] = {
        "mode": t.mode, "method": t.method, "precision": resolve_precision(t), "optimizer": t.optimizer,
        "optimizer_impl": t.optimizer_impl, "batch_size": t.batch_size, "seq_len": t.seq_len,
        "grad_accum": t.grad_accum, "grad_checkpointing": t.grad_checkpointing, "attention": t.attention,
    }
    if t.method in ("lora", "qlora"):
        out.update(lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                   lora_targets=",".join(t.lora_targets), adapter_dtype=t.adapter_dtype)
        if t.dora:  # LoRA variants (memory/weights.py): shown when set
            out["dora"] = True
        if t.modules_to_save:
            out["modules_to_save"] = ",".join(t.modules_to_save)
        if t.lora_trainable_tokens:
            out["lora_trainable_tokens"] = t.lora_trainable_tokens
        if t.lora_layers:  # peft layers_to_transform (core/lora_layers.py): shown when set
            out["lora_layers"] = lora_layers.text(t.lora_layers)
    if t.method == "qlora":
        out.update(quant_bits=t.quant_bits, double_quant=t.double_quant, kbit_prep=t.kbit_prep)
        if t.quant_backend == "hqq":
            out.update(quant_backend="hqq", hqq_group_size=t.hqq_group_size, hqq_axis=t.hqq_axis)
    if t.method == "freeze":
        out.update(freeze_layers=t.freeze_layers, train_head=t.train_head)
        if t.train_layers is not None:  # core/unfrozen.py: shown when set
            out["train_layers"] = lora_layers.text(t.train_layers) if t.train_layers else "none"
        if t.train_modules is not None:
            out["train_modules"] = ",".join(t.train_modules) or "none"
    if t.method in PEFT_TABLE:
        for name in PEFT_TABLE[t.method].options:
            value = getattr(t, name)
            out[name] = ",".join(value) if isinstance(value, tuple) else value
    if t.gpus_per_node * t.nodes > 1 or t.zero or t.fsdp != "none" or t.offload != "none":
        out.update(gpus_per_node=t.gpus_per_node, nodes=t.nodes, zero=t.zero, fsdp=t.fsdp, offload=t.offload,
                   tp=t.tp, pp=t.pp, sequence_parallel=t.sequence_parallel)
        if t.context_parallel > 1:  # memory/context_parallel.py: shown when set
            out["context_parallel"] = t.context_parallel
        if t.fsdp != "none" and t.grad_accum > 1:
            out["grad_sync"] = t.grad_sync
        if t.fsdp_frozen_grads:
            out["fsdp_frozen_grads"] = True
        if t.fsdp_units:
            out["fsdp_units"] = ",".join(t.fsdp_units)
    if t.mode == "inference":
        out.update(weight_dtype=t.weight_dtype, kv_dtype=t.kv_dtype, quant_group_size=t.quant_group_size,
                   tp=t.tp, pp=t.pp, new_tokens=t.new_tokens, cache_impl=t.cache_impl, logits=t.logits)
    out.update(_saver_settings(t))
    if t.router_aux_loss:  # the MoE router's aux loss (memory/router_aux.py): shown when set
        out["router_aux_loss"] = True
    if t.relora:  # axolotl ReLoRA restarts (memory/relora.py): shown when set
        out["relora"] = True
    if getattr(t, "compile", False):  # torch.compile (memory/compiled.py): shown when set, with what it wraps
        out["compile"] = True
        out["compile_scope"] = t.compile_scope
    if getattr(t, "add_tokens", 0) or getattr(t, "vocab_multiple", 1) > 1:  # new tokens (memory/new_tokens.py)
        out.update(add_tokens=t.add_tokens, vocab_multiple=t.vocab_multiple)
    if t.target_len:  # an encoder-decoder's target (memory/seq2seq.py); decoders refuse it
        out["target_len"] = t.target_len
    if t.stack != "hf":
        out.update(stack=t.stack, stack_set=list(t.stack_set))
    return out


def _classic_precision(t: TrainingSpec) -> str:
    return "fp32" if t.precision == "auto" else t.precision  # memory/classic.py: a plain PyTorch loop's default


def assumptions(t: TrainingSpec, family: str = "") -> str:
    """One readable line of the assumptions, so the number can be reproduced; `family`: the model's."""
    if family in CLASSIC_FAMILIES:
        auto = "auto: " if t.precision == "auto" else ""
        shape = (f"batch {t.batch_size} × {t.image_size}x{t.image_size} images, {t.num_classes} classes"
                 if family == "resnet" else f"batch {t.batch_size} × seq {t.seq_len}")
        return " · ".join((f"precision {auto}{_classic_precision(t)}", f"optimizer {t.optimizer} ({t.optimizer_impl})",
                           shape + (f" × accum {t.grad_accum}" if t.grad_accum > 1 else "")))
    r = recipe_of(t)
    auto = "auto: " if t.precision == "auto" else ""
    parts = [
        f"precision {auto}{resolve_precision(t)} (weights {r.weight}, "
        + ("trainable fp32, compute under autocast " if r.autocast16 else f"grads {r.grad}, compute ")
        + r.compute
        + (", fp32 master weights" if r.master_weights else "") + ")",
        f"optimizer {t.optimizer} ({t.optimizer_impl})",
        f"batch {t.batch_size} × seq {t.seq_len}" + (f" → target {t.target_len}" if t.target_len else "")
        + (f" × accum {t.grad_accum}" if t.grad_accum > 1 else ""),
        f"attention {t.attention}",
        f"checkpointing {'on' if t.grad_checkpointing else 'off'}",
    ]
    if t.method in ("lora", "qlora"):
        parts.append(f"{'DoRA' if t.dora else 'LoRA'} r={t.lora_rank} on {','.join(t.lora_targets)} ({t.adapter_dtype})"
                     + (f", full copies of {','.join(t.modules_to_save)}" if t.modules_to_save else "")
                     + (f", {t.lora_trainable_tokens} trained token rows" if t.lora_trainable_tokens else "")
                     + (f", layers {lora_layers.text(t.lora_layers)} only" if t.lora_layers else ""))
    if getattr(t, "add_tokens", 0) or getattr(t, "vocab_multiple", 1) > 1:
        parts.append(f"{t.add_tokens} new tokens" + (f", vocabulary padded to a multiple of {t.vocab_multiple}"
                                                     if t.vocab_multiple > 1 else ""))
    if t.method == "qlora" and t.quant_backend == "hqq":
        parts.append(f"base hqq {t.quant_bits}-bit, group {t.hqq_group_size}, axis {t.hqq_axis}")
    elif t.method == "qlora" and family in SUBCLASSED_LINEAR_FAMILIES:  # memory/unreplaced.py
        parts.append("base left unquantized (bitsandbytes replaces no FalconLinear)"
                     + (", every weight fp32 (kbit prep)" if t.kbit_prep else ""))
    elif t.method == "qlora":
        parts.append(f"base {'NF4' if t.quant_bits == 4 else 'int8'}"
                     + (" + double quant" if t.quant_bits == 4 and t.double_quant else "")
                     + (", norms/embeddings/lm_head fp32 (kbit prep)" if t.kbit_prep else ""))
    if t.method == "freeze" and (t.train_layers is not None or t.train_modules is not None):
        layers = lora_layers.text(t.train_layers) if t.train_layers else "none" if t.train_layers is not None \
            else f"above {t.freeze_layers}"
        outer = ",".join(t.train_modules) if t.train_modules is not None else \
            "norm,lm_head" if t.train_head else ""
        parts.append(f"layers {layers} trained" + (f", {outer or 'no module outside them'}"))
    elif t.method == "freeze":
        parts.append(f"{t.freeze_layers} layers frozen" + ("" if t.train_head else ", head frozen"))
    if t.method in PEFT_TABLE:
        parts.append(f"{METHOD_LABELS[t.method]}: " + ", ".join(
            f"{name.replace('_', '-')} {','.join(v) if isinstance(v, tuple) else v}"
            for name in PEFT_TABLE[t.method].options for v in (getattr(t, name),)))
    if t.mode == "inference":
        parts = [f"inference, batch {t.batch_size} × context {t.seq_len}", f"weights {t.weight_dtype}",
                 f"KV cache {t.kv_dtype}",
                 # generate(): prompt = context - new tokens + 1; the cache kind and which prefill logits
                 f"generate() {t.new_tokens} new token{'s' if t.new_tokens > 1 else ''}, {t.cache_impl} cache, "
                 f"{t.attention}, prefill logits {t.logits}"
                 + (" (transformers >= 4.45)" if t.logits == "last" else " (older transformers)")]
    if t.mode == "serve":
        parts = [f"vLLM serve, {t.batch_size} request{'s' if t.batch_size > 1 else ''} × {t.seq_len} tokens",
                 f"weights {t.weight_dtype}", f"KV cache {t.kv_dtype}",
                 f"gpu_memory_utilization {t.gpu_memory_utilization:g}",
                 "max_model_len " + (f"{t.max_model_len}" if t.max_model_len else "auto (the model's)"),
                 "max_num_seqs " + (f"{t.max_num_seqs}" if t.max_num_seqs else "auto"),
                 "max_num_batched_tokens " + (f"{t.max_num_batched_tokens}" if t.max_num_batched_tokens else "auto"),
                 f"block_size {t.block_size}" + (", enforce_eager" if t.enforce_eager else ", CUDA graphs")]
    gpus = t.gpus_per_node * t.nodes
    if gpus > 1 or t.zero or t.fsdp != "none" or t.offload != "none":
        strategy = f"ZeRO-{t.zero}" if t.zero else f"FSDP {t.fsdp}" if t.fsdp != "none" else "DDP"
        parts.append(f"{gpus} GPU{'s' if gpus > 1 else ''} ({t.gpus_per_node}/node × {t.nodes}), {strategy}"
                     + (f", tp {t.tp}" if t.tp > 1 else "") + (f", pp {t.pp}" if t.pp > 1 else "")
                     + (f", context parallel {t.context_parallel}" if t.context_parallel > 1 else "")
                     + (f", offload {t.offload}" if t.offload != "none" else "")
                     + (f", gradients reduced {t.grad_sync}" if t.fsdp != "none" and t.grad_accum > 1 else "")
                     + (", frozen weights' gradients (FSDP1 flat units)" if t.fsdp_frozen_grads else ""))
    if t.stack != "hf":
        parts.append(f"stack {t.stack}" + (" set " + ", ".join(n.replace("_", "-") for n in t.stack_set)
                                           if t.stack_set else " (every option it sets was given)"))
    if t.router_aux_loss:  # memory/router_aux.py (a config.json's output_router_logits says so in a note)
        parts.append("router aux loss")
    if getattr(t, "compile", False):  # memory/compiled.py: per layer modelled, the whole model as the eager step
        parts.append("torch.compile (inductor, " + ("per layer)" if t.compile_scope == "layers" else "whole model)"))
    if t.relora:  # memory/relora.py: the restart's merge is a moment of the forward phase
        parts.append("ReLoRA restarts")
    savers = _saver_settings(t)
    if savers:
        parts.append("savers: " + ", ".join(k.replace("_", "-") + ("" if v is True else f" {v}")
                                            for k, v in savers.items()))
    return " · ".join(parts)


def _saver_settings(t: TrainingSpec) -> dict[str, Any]:
    """The memory savers (memory/loss.py, memory/savers.py) that differ from plain Hugging Face."""
    out: dict[str, Any] = {}
    if t.loss != "hf":
        out["loss"] = t.loss
        if t.loss in ("chunked", "linear-chunked"):
            out["loss_chunks"] = t.loss_chunks
    if t.ac_every > 1:
        out["ac_every"] = t.ac_every
        if t.ac_layout != "torchtune":
            out["ac_layout"] = t.ac_layout
    if t.reentrant_gc:
        out["reentrant_gc"] = True
    if not t.ac_early_stop:
        out["ac_early_stop"] = False
    if t.activation_offload:
        out["activation_offload"] = True
    if t.ac_offload:
        out["ac_offload"] = True
    if t.optimizer_in_bwd:
        out["optimizer_in_bwd"] = True
    if getattr(t, "badam", False):
        out["badam"] = True
    if getattr(t, "lisa_layers", None) is not None:
        out["lisa_layers"] = t.lisa_layers
    if getattr(t, "upcast_logits", False):
        out["upcast_logits"] = True
    if getattr(t, "upcast_norms", False):
        out["upcast_norms"] = True
    if getattr(t, "fp8", "off") != "off":
        out["fp8"] = t.fp8
    if t.packing != "none":
        out["packing"] = t.packing
    if t.kernels != "hf":
        out["kernels"] = t.kernels
    return out
