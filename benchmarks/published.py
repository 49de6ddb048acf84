"""Estimate vs published real-GPU readings (issue #16).

`../shared/data/published-gpu-readings.yaml` (relative to the repo root) holds published peak-memory
readings of real GPU runs, each with its settings, the kind of figure and caveats. This script maps
each reading to `vramcalc estimate` options (the MAPPINGS table below: data, one entry per reading,
a comment on each non-obvious choice), runs the CLI with `--format json` (its keys are stable, module
paths are not), and compares:

- `tensor_peak_bytes` with `allocated` (torch.cuda.max_memory_allocated) and `active` readings;
- the peak with `reserved` (max_memory_reserved) and `nvidia-smi` readings: `reserved_peak_bytes`
  (the allocator's segments) for `reserved`, and it plus `details["overhead.cuda_context"]` for
  nvidia-smi, when the JSON has them; else `peak_bytes` (tensors + the whole runtime overhead).

Error = (estimate − reading) / reading; negative is an under-estimate. Readings that cannot be
expressed are listed with the setting that stops them.

Usage:  PYTHONPATH=src python benchmarks/published.py [--data PATH] [--only SUBSTRING] [--quiet] [--readme]
Writes benchmarks/results/published.md and benchmarks/results/published.json; with --readme, also the
summary tables in README.md's accuracy section (tests/test_docs.py checks that they agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "published-gpu-readings.yaml"
RESULTS = ROOT / "benchmarks" / "results"
GB = 10**9


@dataclass(frozen=True)
class Run:
    """A reading expressed as vramcalc options."""

    group: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class NotExpressible:
    """A reading vramcalc cannot express: the setting and why."""

    group: str
    reason: str


# --- Shared option sets ----------------------------------------------------------------------------
# torch.optim.AdamW without fused=True takes the foreach path on CUDA (torch/optim/optimizer.py
# _default_to_fused_or_foreach: foreach when every param is a CUDA tensor, fused only when asked).
FOREACH = ("--optimizer-impl", "foreach")

# litgpt (lit-gpt 2023-10 finetune/lora.py, resource-tables.md): precision bf16-true puts weights,
# LoRA params, grads and AdamW states in bf16 (pure-bf16; the adapters follow the module dtype);
# lora_r 8, lora_dropout 0.05, adapters on the query and value slices of the fused qkv (the same
# A/B sizes as separate q_proj and v_proj adapters); batch 128 split into micro-batches, so
# grad_accum = 128 / micro_batch. lit-gpt's chunked lm_head + chunked cross-entropy is NOT expressible
# (see docs/real-gpu.md): the estimate uses the plain loss, an over-estimate of the loss temporaries.
LITGPT_LORA = ("--method", "lora", "--precision", "pure-bf16", "--adapter-dtype", "bf16", "--lora-rank", "8",
               "--lora-alpha", "16", "--lora-dropout", "0.05", "--lora-targets", "q_proj,v_proj", *FOREACH)
# QLoRA in lit-gpt: Fabric BitsandbytesPrecision("nf4"/"nf4-dq", bf16) and bnb PagedAdamW (32-bit).
LITGPT_QLORA = ("--method", "qlora", "--precision", "pure-bf16", "--adapter-dtype", "bf16", "--lora-rank", "8",
                "--lora-alpha", "16", "--lora-dropout", "0.05", "--lora-targets", "q_proj,v_proj",
                "--optimizer", "paged-adamw", "--quant-bits", "4")
# lit-gpt's finetune/lora.py --devices 2 (b1e4bac1, 2023-10-19): FSDPStrategy(auto_wrap_policy={Block},
# activation_checkpointing_policy={Block}, state_dict_type="full", limit_all_gathers=True,
# cpu_offload=False), FULL_SHARD by default. Lightning 2.1's FSDPStrategy sets use_orig_params=True
# (lightning/fabric/strategies/fsdp.py), so each Block's one flat parameter, holding both the frozen weights
# and the LoRA A/B, requires grad: the frozen weights get gradients (--fsdp-frozen-grads). Its loop runs the
# 127 (or 128/mbs - 1) accumulating micro-batches under fabric.no_backward_sync -> FSDP no_sync, which keeps
# the unsharded gradients (--grad-sync deferred, the default): each GPU holds every Block's full gradient.
LITGPT_FSDP = ("--fsdp", "full-shard", "--grad-checkpointing", "--fsdp-frozen-grads", "--grad-sync", "deferred")
# lit-gpt generate/base.py: batch 1, prompt "Hello, my name is" (~5 tokens with BOS) + 50 new tokens,
# KV cache sized to prompt + max_new_tokens and preallocated (lit_gpt/model.py KVCache: zeros, index_copy_),
# which is --kv-cache static; the context is what the cache holds after the last step: 5 + 51 - 1 = 55.
LITGPT_GEN = ("--mode", "inference", "--batch-size", "1", "--context", "55", "--new-tokens", "51",
              "--kv-cache", "static")
# litgpt generate (quantize.md, 2024): default prompt "What food do llamas eat?" (~8 tokens) + 256 new.
LITGPT_GEN_256 = ("--mode", "inference", "--batch-size", "1", "--context", "263", "--new-tokens", "256",
                  "--kv-cache", "static")

# torchtune (2024 tutorials/README): dtype bf16 everywhere (pure bf16, no autocast), LoRA params bf16,
# torch.optim.AdamW (foreach), activation checkpointing on in the single-device configs.
TT_LORA = ("--method", "lora", "--precision", "pure-bf16", "--adapter-dtype", "bf16", *FOREACH)
# torchtune's lora_attn_modules [q,k,v,output_proj] + apply_lora_to_mlp + apply_lora_to_output: the
# output (lm head) adapter cannot be a vramcalc target; it adds r x (hidden + vocab) params
# (0.3 M at r 8, 2.3 M at r 64: under 5 MB), so all-linear is used.
TT_ALL = ("--lora-targets", "all-linear")

# PEFT MetaMathQA benchmark (method_comparison/MetaMathQA, run.py + default_training_params.json):
# model loaded in bf16, no AMP, batch 4, dynamic padding, batches sorted longest-first inside buckets of
# 80 samples (utils.py BucketIterator), torch.cuda.empty_cache() every 10 steps, and the figure is
# max_memory_reserved over all 5,000 steps: the LONGEST batch sets it (reserved_99th of the per-step
# samples is 10 % below the max). The longest sample is not published; data.py sizes its character filter
# for the token bound: "with a token limit of 768 for query + response, we have to exclude all texts with
# length > 1304" (CHAR_LIMIT = 1300, max_seq_length 768). So the peak batch is taken as 4 x 768, the bound
# (an earlier mapping took 4 x 450 from ~2.9 characters per token, a typical ratio, not the densest
# LaTeX sample's, and was 9-22 % low on every reading).
MMQA = ("--batch-size", "4", "--seq-len", "768", *FOREACH)


# litgpt's Phi-1.5 (benchmarks/litgpt_presets: its fused GELU kernel, not transformers' gelu_new formula)
LITGPT_PHI = "litgpt-phi-1.5"


def _litgpt(model: str, seq: int, mbs: int, *extra: str) -> tuple[str, ...]:
    return (model, *LITGPT_LORA, "--batch-size", str(mbs), "--seq-len", str(seq), "--grad-accum",
            str(128 // mbs), *extra)


def _litgpt_q(model: str, seq: int, dq: bool) -> tuple[str, ...]:
    return (model, *LITGPT_QLORA, "--double-quant" if dq else "--no-double-quant", "--batch-size", "1",
            "--seq-len", str(seq), "--grad-accum", "128")


def _infer(model: str, weight: str, dq: bool | None = None, gen: tuple[str, ...] = LITGPT_GEN) -> tuple[str, ...]:
    quant = () if dq is None else ("--double-quant" if dq else "--no-double-quant",)
    return (model, *gen, "--weight-dtype", weight, *quant)


_BERT = ("encoder-only BERT with a 2-label sequence-classification head: vramcalc models decoder-only causal "
         "LMs whose head is vocab-sized logits (no bidirectional encoder, pooler or classifier head)")
_T5 = ("encoder-decoder T5/mT5: vramcalc models decoder-only causal LMs (no encoder stack, cross-attention "
       "or relative-position bias)")
_BLOOM = ("model bigscience/bloomz-7b1: no preset; BLOOM has ALiBi and an embedding LayerNorm, and its "
          "published total could not be checked offline")
_OCTO_LONG = ("sequence length: the 'several thousand token' prompt of the blog is not printed, so the "
              "context cannot be set")

MAPPINGS: dict[str, Run | NotExpressible] = {
    # --- transformers docs, perf_train_gpu_one.md (V100, 2022): BERT-large ---
    **{rid: NotExpressible("hf-perf bert-large", _BERT) for rid in (
        "hf-perf-bertlarge-load", "hf-perf-bertlarge-bs4", "hf-perf-bertlarge-bs1-ga4",
        "hf-perf-bertlarge-bs1-ga4-gc", "hf-perf-bertlarge-bs4-fp16", "hf-perf-bertlarge-bs1-ga4-gc-fp16",
        "hf-perf-bertlarge-bs4-adafactor", "hf-perf-bertlarge-bs1-ga4-gc-fp16-adafactor",
        "hf-perf-bertlarge-bs4-adam8bit", "hf-perf-bertlarge-bs1-ga4-gc-fp16-adam8bit")},
    # --- PEFT README (2023): T0_3B, mt0-xxl, bloomz-7b1 ---
    **{rid: NotExpressible("peft-readme", _T5) for rid in (
        "peft-readme-t0_3b-full", "peft-readme-t0_3b-lora", "peft-readme-t0_3b-lora-ds3off",
        "peft-readme-mt0xxl-lora", "peft-readme-mt0xxl-lora-ds3off")},
    "peft-readme-bloomz7b1-lora": NotExpressible("peft-readme", _BLOOM),
    "peft-readme-bloomz7b1-lora-ds3off": NotExpressible("peft-readme", _BLOOM),
    # --- torchtune LoRA tutorial (llama2 7B_lora_single_device, alpaca_cleaned max_seq_len 512,
    # batch 2, gradient_accumulation_steps 64, activation checkpointing on) ---
    "tt-lora-llama2_7b-qv-r8": Run("torchtune tutorials", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--batch-size", "2",
        "--seq-len", "512", "--grad-accum", "64", "--grad-checkpointing")),
    "tt-lora-llama2_7b-all-r8": Run("torchtune tutorials", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "8", *TT_ALL, "--batch-size", "2", "--seq-len", "512",
        "--grad-accum", "64", "--grad-checkpointing")),
    "tt-lora-llama2_7b-qv-r64": Run("torchtune tutorials", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "64", "--lora-targets", "q_proj,v_proj", "--batch-size", "2",
        "--seq-len", "512", "--grad-accum", "64", "--grad-checkpointing")),
    "tt-lora-llama2_7b-all-r64": Run("torchtune tutorials", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "64", *TT_ALL, "--batch-size", "2", "--seq-len", "512",
        "--grad-accum", "64", "--grad-checkpointing")),
    # torchao NF4 (block 64, double-quantized scales, like bnb nf4-dq) on the LoRA-wrapped block linears
    # only; the lm head stays bf16, as vramcalc's qlora keeps it (gradient_accumulation_steps 16).
    "tt-qlora-llama2_7b-r8": Run("torchtune tutorials", (
        "llama-2-7b", "--method", "qlora", "--precision", "pure-bf16", "--adapter-dtype", "bf16", *FOREACH,
        "--quant-bits", "4", "--double-quant", "--lora-rank", "8", *TT_ALL, "--batch-size", "2",
        "--seq-len", "512", "--grad-accum", "16", "--grad-checkpointing")),
    # Allocated right after model init: weights only. Expressed as serving with a 1-token context
    # (weights + a negligible cache); the q,v r8 bf16 adapters (4.2 M params, 8 MB) are left out.
    "tt-lora-llama2_7b-init": Run("torchtune tutorials", (
        "llama-2-7b", "--mode", "inference", "--batch-size", "1", "--context", "1", "--weight-dtype", "bf16")),
    # llama3/8B_lora_single_device; grad_accum does not change a LoRA estimate beyond the (tiny)
    # adapter gradients kept alive, so 1 stands for the unstated value.
    "tt-lora-llama3_8b-qv-r8": Run("torchtune tutorials", (
        "llama-3-8b", *TT_LORA, "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--batch-size", "2",
        "--seq-len", "512", "--grad-checkpointing")),
    # --- torchtune README table (2024-05, batch 4 x seq 2048, torch.compile on) ---
    "tt-readme-llama2_7b-qlora-4090": Run("torchtune README", (
        "llama-2-7b", "--method", "qlora", "--precision", "pure-bf16", "--adapter-dtype", "bf16", *FOREACH,
        "--quant-bits", "4", "--double-quant", "--lora-rank", "8", *TT_ALL, "--batch-size", "4",
        "--seq-len", "2048", "--grad-checkpointing")),
    "tt-readme-llama2_7b-lora-4090": Run("torchtune README", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--batch-size", "4",
        "--seq-len", "2048", "--grad-checkpointing")),
    # 7B_lora.yaml (distributed) had enable_activation_checkpointing false, but the reading (16.2 GB)
    # is below the un-checkpointed activations alone (~47 GB for 4 x 2048 tokens of Llama-2-7B), so the
    # README's "Batch Size = 4, Seq Length = 2048" run must have had checkpointing on: mapped with it.
    "tt-readme-llama2_7b-lora-2x4090": Run("torchtune README", (
        "llama-2-7b", *TT_LORA, "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--batch-size", "4",
        "--seq-len", "2048", "--grad-checkpointing", "--gpus", "2", "--fsdp", "full-shard")),
    "tt-readme-llama2_7b-full-4090": NotExpressible("torchtune README", (
        "optimizer_in_bwd=True: each parameter's step runs inside backward and its gradient is freed at once, "
        "so no full gradient buffer exists; vramcalc always keeps the whole gradient set")),
    "tt-readme-llama2_7b-full-4x4090": Run("torchtune README", (
        "llama-2-7b", "--method", "full", "--precision", "pure-bf16", *FOREACH, "--batch-size", "4",
        "--seq-len", "2048", "--grad-checkpointing", "--gpus", "4", "--fsdp", "full-shard")),
    "tt-readme-llama2_70b-lora-8xa100": Run("torchtune README", (
        "llama-2-70b", *TT_LORA, "--lora-rank", "16", "--lora-targets", "q_proj,k_proj,v_proj",
        "--batch-size", "4", "--seq-len", "4096", "--grad-checkpointing", "--gpus", "8", "--fsdp", "full-shard")),
    # bnb PagedAdamW keeps fp32 states whatever the parameter dtype (bitsandbytes optim/optimizer.py
    # Optimizer2State.init_state: dtype float32 for optim_bits 32).
    "tt-readme-llama2_70b-full-8xa100": Run("torchtune README", (
        "llama-2-70b", "--method", "full", "--precision", "pure-bf16", "--optimizer", "paged-adamw",
        "--batch-size", "4", "--seq-len", "4096", "--grad-checkpointing", "--gpus", "8", "--fsdp", "full-shard")),
    # Packed: every sample is exactly 4096 tokens; standard CE, no compile, no checkpointing.
    "tt-readme-llama3_2_3b-full-packed": Run("torchtune README", (
        "llama-3.2-3b", "--method", "full", "--precision", "pure-bf16", *FOREACH, "--batch-size", "2",
        "--seq-len", "4096")),
    # --- litgpt resource tables (2023-10, A100-SXM4-40GB): LoRA and QLoRA on one GPU ---
    "litgpt-lora-phi-1.5-none-mbs1": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt(LITGPT_PHI, 1044, 1)),
    "litgpt-lora-phi-1.5-none-mbs2": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt(LITGPT_PHI, 1044, 2)),
    "litgpt-lora-phi-1.5-none-mbs4": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt(LITGPT_PHI, 1044, 4)),
    "litgpt-lora-phi-1.5-nf4-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)", _litgpt_q(LITGPT_PHI, 1044, False)),
    "litgpt-lora-phi-1.5-nf4-dq-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)", _litgpt_q(LITGPT_PHI, 1044, True)),
    "litgpt-lora-stablelm3b-none-mbs1": NotExpressible("litgpt LoRA 1 GPU (chunked loss)", "model: no preset"),
    "litgpt-lora-stablelm3b-nf4-mbs1": NotExpressible("litgpt QLoRA 1 GPU (chunked loss)", "model: no preset"),
    "litgpt-lora-stablelm3b-nf4-dq-mbs1": NotExpressible("litgpt QLoRA 1 GPU (chunked loss)", "model: no preset"),
    "litgpt-lora-stablelm3b-none-mbs2": NotExpressible("litgpt LoRA 1 GPU (chunked loss)", "model: no preset"),
    "litgpt-lora-stablelm3b-none-mbs4": NotExpressible("litgpt LoRA 1 GPU (chunked loss)", "model: no preset"),
    "litgpt-lora-llama2_7b-none-mbs1": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt("llama-2-7b", 1304, 1)),
    "litgpt-lora-llama2_7b-none-mbs2": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt("llama-2-7b", 1304, 2)),
    "litgpt-lora-llama2_7b-nf4-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)", _litgpt_q("llama-2-7b", 1304, False)),
    "litgpt-lora-llama2_7b-nf4-dq-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)",
                                             _litgpt_q("llama-2-7b", 1304, True)),
    "litgpt-lora-llama2_13b-none-mbs1": Run("litgpt LoRA 1 GPU (chunked loss)", _litgpt("llama-2-13b", 1304, 1)),
    "litgpt-lora-llama2_13b-nf4-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)",
                                           _litgpt_q("llama-2-13b", 1304, False)),
    "litgpt-lora-llama2_13b-nf4-dq-mbs1": Run("litgpt QLoRA 1 GPU (chunked loss)",
                                              _litgpt_q("llama-2-13b", 1304, True)),
    # --- litgpt LoRA under FSDP (2 or 4 A100-40GB) ---
    **{f"litgpt-lora-fsdp2-phi-1.5-mbs{m}": Run("litgpt LoRA FSDP", _litgpt(
        LITGPT_PHI, 1044, m, "--gpus", "2", *LITGPT_FSDP)) for m in (1, 2, 4)},
    **{f"litgpt-lora-fsdp2-stablelm3b-mbs{m}": NotExpressible("litgpt LoRA FSDP", "model: no preset")
       for m in (1, 2, 4)},
    **{f"litgpt-lora-fsdp2-llama2_7b-mbs{m}": Run("litgpt LoRA FSDP", _litgpt(
        "llama-2-7b", 1304, m, "--gpus", "2", *LITGPT_FSDP)) for m in (1, 2, 4)},
    "litgpt-lora-fsdp4-llama2_13b-mbs1": Run("litgpt LoRA FSDP", _litgpt(
        "llama-2-13b", 1304, 1, "--gpus", "4", *LITGPT_FSDP)),
    "litgpt-lora-stablelm3b-bf16mixed-mbs1": NotExpressible("litgpt LoRA 1 GPU (chunked loss)", "model: no preset"),
    # litgpt tutorials/finetune_lora.md (Falcon-7B, Alpaca): longest sample 1079 tokens, or truncated
    # to 256; micro-batch 1, no accumulation stated. lit-gpt's fused qkv "query,value" slices map to
    # falcon's qkv_proj (vramcalc's B covers the whole fused output: a few hundred KB more).
    "litgpt-lora-falcon7b-alpaca-full": Run("litgpt LoRA 1 GPU (chunked loss)", (
        "falcon-7b", *LITGPT_LORA[:-4], "--lora-targets", "qkv_proj", *FOREACH, "--batch-size", "1",
        "--seq-len", "1079")),
    "litgpt-lora-falcon7b-alpaca-trunc256": Run("litgpt LoRA 1 GPU (chunked loss)", (
        "falcon-7b", *LITGPT_LORA[:-4], "--lora-targets", "qkv_proj", *FOREACH, "--batch-size", "1",
        "--seq-len", "256")),
    # --- litgpt inference (generate/base.py): bf16, bnb nf4, bnb nf4-dq ---
    "litgpt-infer-phi-1.5-none": Run("litgpt inference 16-bit", _infer(LITGPT_PHI, "bf16")),
    "litgpt-infer-phi-1.5-nf4": Run("litgpt inference 4-bit", _infer(LITGPT_PHI, "nf4", False)),
    "litgpt-infer-phi-1.5-nf4-dq": Run("litgpt inference 4-bit", _infer(LITGPT_PHI, "nf4", True)),
    "litgpt-infer-stablelm3b-none": NotExpressible("litgpt inference 16-bit", "model: no preset"),
    "litgpt-infer-stablelm3b-nf4": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-stablelm3b-nf4-dq": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-llama2_7b-none": Run("litgpt inference 16-bit", _infer("llama-2-7b", "bf16")),
    "litgpt-infer-llama2_7b-nf4": Run("litgpt inference 4-bit", _infer("llama-2-7b", "nf4", False)),
    "litgpt-infer-llama2_7b-nf4-dq": Run("litgpt inference 4-bit", _infer("llama-2-7b", "nf4", True)),
    "litgpt-infer-llama2_13b-none": Run("litgpt inference 16-bit", _infer("llama-2-13b", "bf16")),
    "litgpt-infer-llama2_13b-nf4": Run("litgpt inference 4-bit", _infer("llama-2-13b", "nf4", False)),
    "litgpt-infer-llama2_13b-nf4-dq": Run("litgpt inference 4-bit", _infer("llama-2-13b", "nf4", True)),
    "litgpt-infer-codellama34b-nf4": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-codellama34b-nf4-dq": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-falcon40b-nf4": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-falcon40b-nf4-dq": NotExpressible("litgpt inference 4-bit", "model: no preset"),
    "litgpt-infer-llama2_70b-nf4-dq": Run("litgpt inference 4-bit", _infer("llama-2-70b", "nf4", True)),
    # quantize.md: fp32 ("32-true") needs --precision fp32 so that weights and the cache are fp32.
    "litgpt-infer-falcon7b-32-true": Run("litgpt inference 16-bit", (
        "falcon-7b", *LITGPT_GEN_256, "--precision", "fp32", "--weight-dtype", "fp32")),
    "litgpt-infer-falcon7b-bf16-true": Run("litgpt inference 16-bit", _infer("falcon-7b", "bf16", gen=LITGPT_GEN_256)),
    "litgpt-infer-falcon7b-nf4": Run("litgpt inference 4-bit", _infer("falcon-7b", "nf4", False, LITGPT_GEN_256)),
    "litgpt-infer-falcon7b-nf4-dq": Run("litgpt inference 4-bit", _infer("falcon-7b", "nf4", True, LITGPT_GEN_256)),
    # --- transformers docs, llm_tutorial_optimization.md (octocoder, A100 40GB) ---
    "hf-llmopt-octocoder-bf16": NotExpressible("hf llm-optimization", "model: no preset"),
    "hf-llmopt-octocoder-int8": NotExpressible("hf llm-optimization", "model: no preset"),
    "hf-llmopt-octocoder-4bit": NotExpressible("hf llm-optimization", "model: no preset"),
    "hf-llmopt-octocoder-bf16-longprompt-eager": NotExpressible("hf llm-optimization", _OCTO_LONG),
    "hf-llmopt-octocoder-bf16-longprompt-flash": NotExpressible("hf llm-optimization", _OCTO_LONG),
    # --- PEFT MetaMathQA benchmark (L40S, reserved at the end of the run) ---
    # Full fine-tuning of the bf16 model: torch AdamW on bf16 params keeps bf16 moments (pure-bf16).
    "peft-mmqa-llama3_2_3b-full": Run("peft MetaMathQA", (
        "llama-3.2-3b", "--method", "full", "--precision", "pure-bf16", *MMQA)),
    # LoRA: base bf16, adapters fp32 (PEFT autocast_adapter_dtype=True), AdamW fp32 on the adapters.
    "peft-mmqa-llama3_2_3b-lora-r32": Run("peft MetaMathQA", (
        "llama-3.2-3b", "--method", "lora", "--precision", "bf16", "--adapter-dtype", "fp32", "--lora-rank", "32",
        "--lora-targets", "q_proj,v_proj", *MMQA)),
    "peft-mmqa-llama3_2_3b-lora-r64": Run("peft MetaMathQA", (
        "llama-3.2-3b", "--method", "lora", "--precision", "bf16", "--adapter-dtype", "fp32", "--lora-rank", "64",
        "--lora-targets", "q_proj,v_proj", *MMQA)),
    "peft-mmqa-llama3_2_3b-lora-r10-mlp": Run("peft MetaMathQA", (
        "llama-3.2-3b", "--method", "lora", "--precision", "bf16", "--adapter-dtype", "fp32", "--lora-rank", "10",
        "--lora-targets", "gate_proj,up_proj,down_proj", *MMQA)),
    "peft-mmqa-llama3_2_3b-lntuning": NotExpressible("peft MetaMathQA", (
        "method LN-tuning (only the RMSNorm weights trainable): --method freeze trains whole layers; no "
        "option trains the norms alone while keeping every layer's activations for their gradients")),
}


def figure_of(kind: str) -> str:
    """`tensor` for allocated/active readings, `reserved` for reserved, `smi` for nvidia-smi."""
    k = kind.split()[0]
    if k in ("allocated", "active"):
        return "tensor"
    if k == "reserved":
        return "reserved"
    if k == "nvidia-smi":
        return "smi"
    raise ValueError(f"unknown kind {kind!r}")


# Models as litgpt builds them where that differs from transformers (its activation kernels): the
# litgpt readings name them (`litgpt-phi-1.5`), and every run gets this preset directory.
LITGPT_PRESETS = ROOT / "benchmarks" / "litgpt_presets"


def run_cli(args: tuple[str, ...]) -> dict[str, Any]:
    """`python -m vramcalc estimate ARGS --format json`, parsed."""
    proc = subprocess.run([sys.executable, "-m", "vramcalc", "estimate", *args, "--presets", str(LITGPT_PRESETS),
                           "--format", "json"],
                          capture_output=True, text=True, env=os.environ.copy(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vramcalc estimate {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def estimate_for(figure: str, doc: dict[str, Any]) -> int:
    """The estimate's figure comparable with a reading of `figure`."""
    if figure == "tensor":
        return int(doc["tensor_peak_bytes"])
    context = int(doc["details"].get("overhead.cuda_context", 0))
    if "reserved_peak_bytes" in doc:  # the allocator's segments, without the CUDA context
        reserved = int(doc["reserved_peak_bytes"])
        return reserved if figure == "reserved" else reserved + context
    return int(doc["peak_bytes"])  # JSON without reserved_peak_bytes: tensors + the whole overhead


def summarize(errors: list[float]) -> dict[str, Any]:
    """median/p90/max of |error| %, median signed %, and the under-estimate count."""
    if not errors:
        return {"n": 0}
    absolute = sorted(abs(e) for e in errors)
    p90 = absolute[min(len(absolute) - 1, max(0, -(-9 * len(absolute) // 10) - 1))]  # nearest rank
    return {"n": len(errors), "median_abs": round(statistics.median(absolute), 2), "p90_abs": round(p90, 2),
            "max_abs": round(absolute[-1], 2), "median_signed": round(statistics.median(errors), 2),
            "under": sum(e < 0 for e in errors)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the readings YAML")
    ap.add_argument("--only", default="", help="only readings whose id contains this")
    ap.add_argument("--quiet", action="store_true", help="do not print the table")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where published.md/.json go")
    ap.add_argument("--readme", action="store_true",
                    help="also copy the overall and per-group tables into README.md's accuracy section")
    ns = ap.parse_args(argv)
    readings = yaml.safe_load(ns.data.read_text(encoding="utf-8"))
    missing = [r["id"] for r in readings if r["id"] not in MAPPINGS]
    if missing:
        print(f"error: readings without a mapping: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for r in readings:
        if ns.only and ns.only not in r["id"]:
            continue
        m = MAPPINGS[r["id"]]
        if isinstance(m, NotExpressible):
            skipped.append({"id": r["id"], "group": m.group, "reason": m.reason})
            continue
        figure = figure_of(r["kind"])
        doc = run_cli(m.args)
        est = estimate_for(figure, doc)
        err = (est - r["bytes"]) / r["bytes"] * 100
        rows.append({"id": r["id"], "group": m.group, "kind": r["kind"].split()[0], "figure": figure,
                     "reliability": r["reliability"], "reading_bytes": r["bytes"], "estimate_bytes": est,
                     "error_pct": round(err, 2), "args": " ".join(m.args),
                     "overhead_bytes": int(doc["components"]["overhead"])})
    doc_out = report(rows, skipped, ns.data)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "published.json").write_text(json.dumps(doc_out, indent=2) + "\n", encoding="utf-8")
    md = markdown(doc_out)
    (ns.out / "published.md").write_text(md, encoding="utf-8")
    if ns.readme and not ns.only:
        readme = ROOT / "README.md"
        readme.write_text(with_readme_block(readme.read_text(encoding="utf-8"), md), encoding="utf-8")
    if not ns.quiet:
        print(md)
    return 0


def report(rows: list[dict[str, Any]], skipped: list[dict[str, Any]], data: Path) -> dict[str, Any]:
    """Per-reading rows, per-group and overall summaries, by compared figure."""
    by_figure = {"tensor peak vs allocated/active": [r for r in rows if r["figure"] == "tensor"],
                 "peak vs reserved/nvidia-smi": [r for r in rows if r["figure"] != "tensor"]}
    overall = {name: summarize([r["error_pct"] for r in rs]) for name, rs in by_figure.items()}
    overall["all"] = summarize([r["error_pct"] for r in rows])
    groups: dict[str, dict[str, Any]] = {}
    for g in dict.fromkeys(r["group"] for r in rows):
        groups[g] = summarize([r["error_pct"] for r in rows if r["group"] == g])
    return {"data": data.name, "readings": len(rows) + len(skipped), "expressed": len(rows),
            "overall": overall, "groups": groups, "rows": rows, "not_expressible": skipped}


def _stat_row(name: str, s: dict[str, Any]) -> str:
    if not s.get("n"):
        return f"| {name} | 0 | | | | | |"
    return (f"| {name} | {s['n']} | {s['median_signed']:+.2f} | {s['median_abs']:.2f} | {s['p90_abs']:.2f} | "
            f"{s['max_abs']:.2f} | {s['under']} |")


README_START = "<!-- published.md tables: generated by benchmarks/published.py --readme -->"
README_END = "<!-- end of published.md tables -->"


def summary_tables(md: str) -> str:
    """The "Overall" and "Per source group" sections of published.md (what the README shows)."""
    start = md.index("## Overall")
    end = md.index("## Per reading")
    body = md[start:end].strip().replace("## Overall", "Overall:").replace("## Per source group", "Per source group:")
    return body


def with_readme_block(readme: str, md: str) -> str:
    """README text with the block between README_START and README_END replaced by published.md's summary."""
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{summary_tables(md)}\n{README_END}{tail}"


def markdown(d: dict[str, Any]) -> str:
    """The report as markdown."""
    head = "| | n | median signed % | median abs % | p90 abs % | max abs % | under-estimates |\n" \
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    out = ["# Estimate vs published real-GPU readings", "",
           f"{d['expressed']} of {d['readings']} readings of `{d['data']}` expressed. Reproduce: "
           "`PYTHONPATH=src python benchmarks/published.py`. Error = (estimate − reading) / reading; "
           "tensor peak vs allocated/active, reserved peak (+ CUDA context for nvidia-smi) vs "
           "reserved/nvidia-smi.", "", "## Overall", "", head]
    out += [_stat_row(k, v) for k, v in d["overall"].items()]
    out += ["", "## Per source group", "", head]
    out += [_stat_row(k, v) for k, v in d["groups"].items()]
    out += ["", "## Per reading", "", "| reading | group | kind | reading GB | estimate GB | error % |",
            "| --- | --- | --- | ---: | ---: | ---: |"]
    for r in d["rows"]:
        out.append(f"| {r['id']} | {r['group']} | {r['kind']} | {r['reading_bytes'] / GB:.3f} | "
                   f"{r['estimate_bytes'] / GB:.3f} | {r['error_pct']:+.2f} |")
    out += ["", "## Not expressible", "", "| reading | group | why |", "| --- | --- | --- |"]
    out += [f"| {s['id']} | {s['group']} | {s['reason']} |" for s in d["not_expressible"]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
