"""Estimator vs tracer over a grid of fine-tuning runs (issue #3).

For each case, `vramcalc.core.memory.estimate` (pure arithmetic) is compared with `vramcalc.trace.trace`
(one steady-state HF transformers step under FakeTensorMode): the tensor peak
(`Breakdown.tensor_peak_bytes` vs `TraceResult.peak_bytes`, the primary metric), the peak of each
phase, the peak phase, and the components present at the peak (weights ↔ parameters + buffers,
optimizer_state ↔ optimizer_state, and the rest: gradients + activations + temporaries).

The grid (64 cases): 8 models × 8 runs. The 8 runs of a model are a 2^(4-1) fractional factorial
over batch {1, 4} × seq {512, 2048} × checkpointing {off, on} × attention {sdpa, eager}: every
combination of batch, seq and checkpointing appears once, and attention is eager when an odd number
of the three are at their high level (defining relation D = ABC), so each pair of factors is
balanced. The method cycles through the 5 methods (full pure-bf16, full amp-bf16, LoRA q,v,
LoRA all-linear, QLoRA NF4), shifted by the model's index, so every model sees every method and every
method sees every factor level. AdamW (fused), LoRA r=16 fp32 adapters, grad_accum 1.

The saver grid (`--grid savers`, issue 13; 48 cases): 4 architectures (gpt2: 50k vocabulary, tied, learned
positions; qwen2.5-0.5b: 152k, tied; llama-3.2-1b: 128k, tied; tinyllama-1.1b: 32k, untied) × 12 saver
combinations (SAVER_RUNS: each loss kernel alone and with checkpointing, selective and offloaded
checkpointing, optimizer in backward, and three-way combinations), the method cycling through full pure-bf16,
LoRA all-linear and QLoRA NF4; batch 2 × seq 1024, AdamW (fused). Written to accuracy_savers.{json,md}.

The preset grid (`--grid presets`, issue 12; 8 cases): the traceable presets that tests/test_preset_sources.py
corrected against their config.json (gemma-2b: RMSNorm (1 + w) in fp32; gemma-2-2b: that and alternating
local/global layers), full pure-bf16 and LoRA all-linear, batch 2 × seq 512, checkpointing off and on.
Gemma 2 runs eager only: transformers refuses sdpa for Gemma2ForCausalLM. Written to
accuracy_presets.{json,md}, its traces to trace_cache_presets.json.
The preference grid (`--grid preference`, issue 14; 63 cases): 3 architectures (qwen2.5-0.5b: qwen2, 152k
vocabulary, tied; tinyllama-1.1b: llama, 32k, untied; gpt2: learned positions, plain MLP, dropout that
DPOConfig disables) × 21 runs (PREFERENCE_RUNS): TRL DPOTrainer steps (dpo and ipo) with a reference copy,
adapters off or precomputed log-probs, full (pure-bf16, amp-bf16), LoRA and QLoRA NF4, with checkpointing,
selective checkpointing, activation offload, an 8-bit optimizer, optimizer in backward and gradient
accumulation, two KTOTrainer steps, two SFT steps through TRL's fused head (`--loss trl`, full and LoRA),
two reward-model steps (TRL RewardTrainer), and three steps of torchtune's DPO recipes (`--dpo-head logits`: LoRA
adapters off with and without checkpointing, full with a frozen copy); prompt lengths from 0 to three quarters of
the sequence.
Written to accuracy_preference.{json,md}.
The reference-free grid (`--grid preference-free`, issue 14; 24 cases): the same 3 architectures × 8 runs
(PREFERENCE_FREE_RUNS): TRL ORPOTrainer and CPOTrainer (loss_type sigmoid, simpo) steps through the trainers'
own concatenated_forward, full (pure-bf16, amp-bf16), LoRA and QLoRA NF4, with and without checkpointing, with
and without the chosen NLL (cpo_alpha 0). Written to accuracy_preference-free.{json,md}.
The inference grid (`--grid inference`, issue 18; 54 cases): 6 architectures (gemma-2b: MQA, 256k tied vocabulary;
qwen2.5-0.5b: 152k tied vocabulary, 7:1 GQA; tinyllama-1.1b and llama-3.2-1b: llama GQA; phi-3-mini: MHA, fused
qkv and gate_up; mistral-7b: 4:1 GQA, sliding window) × 9 generate() runs (INFERENCE_RUNS: each cache kind with sdpa
and eager, prompt 256-2048, batch 1-4, 8-64 new tokens, the prefill's logits last or all; bf16 weights, and
bitsandbytes nf4 and int8 block weights). The trace
is trace/_generate.py (prefill + new_tokens - 1 decode steps under torch.no_grad); the phases are prefill and
decode. Written to accuracy_inference.{json,md}.

The RL grid (`--grid rl`, issue 14; 66 cases): the same 3 architectures × 12 TRL GRPOTrainer / RLOOTrainer steps
(RL_RUNS: 5 GRPO with generate(), 3 GRPO with vLLM colocated / asleep / as a server, 4 RLOO): generate() with
sampling on the generation batch (trace/_generate.py decode), the no-grad log-prob passes
(the reference with beta > 0: a frozen copy for full, adapters off for LoRA),
then _compute_loss on the completions through TRL's fused head (trace/_rl.py); full pure-bf16, LoRA and QLoRA NF4,
with and without checkpointing, one run where generate() is the peak. With vLLM the step runs on vLLM's outputs
(no generate() on the policy; a server's weight sync through packed buffers); the colocated engine's share of the
GPU is overhead, not a tensor of the step. And 13 TRL OnlineDPOTrainer steps (trace/_online_dpo.py: generate() of 2
completions per prompt, with a cache or, under checkpointing, without, or vLLM colocated / asleep / as a server
syncing one parameter at a time; the policy's and the reference's full logits). Prompt 256 + completion 16.
Written to accuracy_rl.{json,md}, its traces to trace_cache_rl.json.
The PPO grid (`--grid ppo`, issue 14; 9 cases): the same 3 architectures × full (a reference copy), LoRA and QLoRA
(adapters off) updates of TRL 0.19.1's PPOTrainer (trace/_ppo.py), the value and reward models the policy's preset.
Written to accuracy_ppo.{json,md}, its traces to trace_cache_ppo.json.

Traces do not depend on the estimator, so they are cached in benchmarks/results/trace_cache.json
(keyed by case and torch/transformers versions); `--retrace` ignores the cache.

The sharded grid (`--grid sharded`, issue 19; 32 cases): 4 architectures x 8 methods (full, LoRA, QLoRA NF4 / int8,
freeze, IA3): the root's and layer 0's bytes that memory/distributed.py builds its gathered units and tp/pp ranks
from (memory/weights.py tensor_groups), against the tracer's model set up for the method, tensor by tensor.

Usage:  PYTHONPATH=src python benchmarks/accuracy.py
        [--grid base|savers|packing|presets|preference|inference|peft|families|preference-free|encoders|encoders2|
                deberta|encdec|sharded|optimizers|lora-variants|rl|ssm|ssm2|hybrid|jamba|nemotronh|gptoss|classics|vlm|vlm2|ppo|
                badam|lora-layers|lisa|unfrozen]
        [--jobs 2] [--retrace] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

MODELS = ("gpt2", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3.2-1b", "phi-3-mini", "llama-2-7b", "mistral-7b",
          "llama-3.1-8b")
METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("full amp-bf16", {"method": "full", "precision": "amp-bf16"}),
    ("lora q,v", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "v_proj")}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
    # kbit_prep off: the tracer follows bitsandbytes' storage and autograd but not peft's
    # prepare_model_for_kbit_training (trace/__init__.py, Limitations); that recipe's fp32 casts of the
    # non-quantized parameters (+2 B each) are checked against peft's own rule in tests/test_new_user.py.
    ("qlora nf4", {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False}),
)
RESULTS = Path(__file__).parent / "results"
CACHE = RESULTS / "trace_cache.json"


def _long(model: str, seq: int = 2048) -> int:
    """`seq`, or the model's learned position table when that is shorter (GPT-2's 1,024)."""
    spec = presets.find_model(model)
    limit = spec.max_position_embeddings if spec.learned_position_embeddings else None
    return min(seq, limit) if limit else seq


def grid() -> list[dict[str, Any]]:
    cases = []
    for mi, model in enumerate(MODELS):
        for run in range(8):
            b, s, g = run & 1, (run >> 1) & 1, (run >> 2) & 1
            eager = (b + s + g) % 2 == 1  # D = ABC
            label, kw = METHODS[(mi + run) % len(METHODS)]
            # the high sequence level is capped at a learned position table (GPT-2: 1,024; core/checks.py
            # refuses a sequence beyond it)
            opts = dict(kw, batch_size=4 if b else 1, seq_len=_long(model) if s else 512, grad_checkpointing=bool(g),
                        attention="eager" if eager else "sdpa")
            cid = (f"{model} | {label} | b{opts['batch_size']} s{opts['seq_len']} | "
                   f"{'gc' if g else 'no-gc'} | {opts['attention']}")
            cases.append({"id": cid, "model": model, "method": label, "training": opts})
    return cases


SAVER_MODELS = ("gpt2", "qwen2.5-0.5b", "llama-3.2-1b", "tinyllama-1.1b")
SAVER_METHODS = (METHODS[0], METHODS[3], METHODS[4])  # full pure-bf16, LoRA all-linear, QLoRA NF4
GC = {"grad_checkpointing": True}
SAVER_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("chunked", {"loss": "chunked"}),
    ("fused-linear", {"loss": "fused-linear"}),
    ("cut", {"loss": "cut"}),
    ("chunked+gc", {"loss": "chunked", **GC}),
    ("fused-linear+gc", {"loss": "fused-linear", **GC}),
    ("cut+gc+offload", {"loss": "cut", **GC, "activation_offload": True}),
    ("gc every 2", {**GC, "ac_every": 2}),
    ("offload", {"activation_offload": True}),
    ("gc+offload", {**GC, "activation_offload": True}),
    ("gc+opt-in-bwd", {**GC, "optimizer_in_bwd": True}),
    ("fused-linear+gc+offload+opt-in-bwd", {"loss": "fused-linear", **GC, "activation_offload": True,
                                           "optimizer_in_bwd": True}),
    ("chunked+gc every 2+opt-in-bwd", {"loss": "chunked", **GC, "ac_every": 2, "optimizer_in_bwd": True}),
    ("linear-chunked", {"loss": "linear-chunked"}),
    ("linear-chunked+gc", {"loss": "linear-chunked", **GC}),
    ("linear-chunked+gc+offload+opt-in-bwd", {"loss": "linear-chunked", **GC, "activation_offload": True,
                                              "optimizer_in_bwd": True}),
    # Liger's cross-entropy on the full logits (axolotl liger_cross_entropy), appended so the ids above keep their
    # methods
    ("liger-ce", {"loss": "liger-cross-entropy"}),
    ("liger-ce+gc", {"loss": "liger-cross-entropy", **GC}),
    ("liger-ce+gc+offload", {"loss": "liger-cross-entropy", **GC, "activation_offload": True}),
    ("liger-ce+gc every 2+opt-in-bwd", {"loss": "liger-cross-entropy", **GC, "ac_every": 2, "optimizer_in_bwd": True}),
)


def saver_grid() -> list[dict[str, Any]]:
    cases = []
    for mi, model in enumerate(SAVER_MODELS):
        for ri, (saver, kw) in enumerate(SAVER_RUNS):
            label, mkw = SAVER_METHODS[(mi + ri) % len(SAVER_METHODS)]
            opts = dict(mkw, batch_size=2, seq_len=1024, **kw)
            cases.append({"id": f"{model} | {label} | {saver} | b2 s1024", "model": model, "method": label,
                          "training": opts})
    return cases


# The families grid (`--grid families`, issue 15): one published config.json per model_type vramcalc reads
# (tests/data/hf, read by io/hf_config.py), at two shapes (b1 s512 full pure-bf16 sdpa; b2 s1024 LoRA
# all-linear bf16 eager), each without and with checkpointing; the MoE types too (--grid moe covers them at tiny
# shapes; DeepSeek is traced with one expert group, see trace/_config.py). Each config is
# cut to FAMILY_LAYERS layers (every layer but the bottom one saves the same set, so the per-layer terms are
# all in the peak; a full-depth trace takes minutes per case on two CPU cores).
FAMILY_LAYERS = 4
HF_DIR = Path(__file__).parent.parent / "tests" / "data" / "hf"
FAMILY_CONFIGS = {
    "llama": "tinyllama-1.1b", "mistral": "mistral-7b-v0.1", "qwen2": "qwen2.5-0.5b", "qwen3": "qwen3-0.6b",
    "gemma": "gemma-2b", "gemma2": "gemma-2-9b", "gemma3_text": "gemma-3-1b", "gemma3": "gemma-3-4b-it",
    "phi": "phi-2", "phi (qk_layernorm)": "phi-2-qk-layernorm", "phi3": "phi-3-mini-4k", "gpt2": "gpt2",
    "gpt_neox": "pythia-70m", "falcon": "falcon-7b", "olmo": "olmo-1b-hf", "olmo2": "olmo-2-0425-1b",
    "starcoder2": "starcoder2-3b", "gptj": "gpt-j-6b", "gpt_bigcode": "starcoderbase-1b", "bloom": "bloom-560m",
    "mixtral": "mixtral-8x7b-v0.1", "qwen2_moe": "qwen1.5-moe-a2.7b", "qwen3_moe": "qwen3-30b-a3b",
    "deepseek_v2": "deepseek-v2-lite", "deepseek_v3": "deepseek-v3",
}
FAMILY_SHAPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16 | b1 s512 | sdpa", {"method": "full", "precision": "pure-bf16", "batch_size": 1, "seq_len": 512}),
    ("lora all-linear | b2 s1024 | eager", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",),
                                           "batch_size": 2, "seq_len": 1024, "attention": "eager"}),
)


def family_grid() -> list[dict[str, Any]]:
    cases = []
    for family, config in FAMILY_CONFIGS.items():
        for label, kw in FAMILY_SHAPES:
            for gc in (False, True):
                opts = dict(kw, grad_checkpointing=gc)
                ckpt = "gc" if gc else "no-gc"
                cases.append({"id": f"{family} ({config}, {FAMILY_LAYERS} layers) | {label} | {ckpt}",
                              "model": f"hf:{config}", "method": label.split(" | ")[0], "training": opts})
    return cases


# The encoder grid (`--grid encoders`, issue 15; 32 cases): BERT (bert-base-uncased), RoBERTa (roberta-base) and
# DistilBERT (distilbert-base-uncased) x full / LoRA (peft's query, value) x checkpointing off / on x head seq-cls /
# mlm, full at batch 16 x seq 256 and LoRA at batch 8 x seq 512; then XLM-R base (250k vocabulary) with both heads,
# and eager attention, amp-bf16 and LoRA all-linear on BERT. AdamW (fused), bf16 unless named. Written to
# accuracy_encoders.{json,md}.
ENCODER_MODELS = ("bert-base-uncased", "roberta-base", "distilbert-base-uncased")
ENCODER_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("xlm-roberta-base", "full", {"method": "full", "batch_size": 16, "seq_len": 256}),
    ("xlm-roberta-base", "full", {"method": "full", "batch_size": 16, "seq_len": 256, "head": "mlm"}),
    ("xlm-roberta-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "grad_checkpointing": True}),
    ("xlm-roberta-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "head": "mlm"}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 16, "seq_len": 256, "attention": "eager"}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 32, "seq_len": 128, "precision": "amp-bf16"}),
    ("bert-base-uncased", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "attention": "eager",
                                   "head": "mlm"}),
    ("bert-base-uncased", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512,
                                   "lora_targets": ("all-linear",), "grad_checkpointing": True}),
)


# The token-classification grid (`--grid encoders2`, issue 15; 28 cases, 15 ModernBERT ones below): --head token-cls
# (AutoModelForTokenClassification) on BERT, RoBERTa and DistilBERT x full / LoRA x checkpointing off / on (full at
# batch 16 x seq 256, LoRA at batch 8 x seq 512), then XLM-R base, the large models, eager attention, amp-bf16,
# fp32, QLoRA (kbit_prep off, as in the other grids: the tracer does not run peft's fp32 upcast), 9 labels
# (CoNLL-2003's BIO tags) and LoRA on every block Linear (all-linear fails in peft under TOKEN_CLS:
# core/checks.py check_encoder refuses it). AdamW (fused), bf16 unless named. Written to
# accuracy_encoders2.{json,md}.
TOKEN_CLS_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("xlm-roberta-base", "full", {"method": "full", "batch_size": 16, "seq_len": 256}),
    ("xlm-roberta-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "grad_checkpointing": True}),
    ("bert-large-uncased", "full", {"method": "full", "batch_size": 8, "seq_len": 512}),
    ("bert-large-uncased", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "grad_checkpointing": True}),
    ("roberta-large", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512}),
    ("roberta-large", "full", {"method": "full", "batch_size": 8, "seq_len": 256, "grad_checkpointing": True}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 16, "seq_len": 256, "attention": "eager"}),
    ("roberta-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "attention": "eager"}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 32, "seq_len": 128, "precision": "amp-bf16"}),
    ("distilbert-base-uncased", "lora", {"method": "lora", "batch_size": 16, "seq_len": 256,
                                         "precision": "amp-bf16"}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 8, "seq_len": 256, "precision": "fp32"}),
    ("bert-base-uncased", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 8, "seq_len": 512}),
    ("roberta-base", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 8, "seq_len": 512,
                               "grad_checkpointing": True}),
    ("bert-base-uncased", "full", {"method": "full", "batch_size": 16, "seq_len": 256, "num_labels": 9}),
    ("roberta-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "num_labels": 9}),
    ("distilbert-base-uncased", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "grad_checkpointing": True,
                                         "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj",
                                                          "down_proj")}),
)


# ModernBERT in the same grid (15 cases): modernbert-base full / LoRA (Wqkv, the fused q_proj / v_proj) x
# checkpointing off / on x seq-cls / token-cls at batch 8 x seq 512 (the sliding layers' 4-D mask and the
# memory-efficient kernel), then eager, amp-bf16, QLoRA, seq 48 (under the half window transformers builds no
# mask; the estimate counts it: an over-estimate) and modernbert-large.
MODERNBERT_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("modernbert-base", "full", {"method": "full", "batch_size": 8, "seq_len": 512, "attention": "eager"}),
    ("modernbert-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "attention": "eager",
                                 "head": "token-cls"}),
    ("modernbert-base", "full", {"method": "full", "batch_size": 16, "seq_len": 256, "precision": "amp-bf16"}),
    ("modernbert-base", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 8, "seq_len": 1024,
                                  "grad_checkpointing": True}),
    ("modernbert-base", "full", {"method": "full", "batch_size": 64, "seq_len": 48, "head": "token-cls"}),
    ("modernbert-large", "lora", {"method": "lora", "batch_size": 8, "seq_len": 1024}),
    ("modernbert-large", "full", {"method": "full", "batch_size": 8, "seq_len": 512, "grad_checkpointing": True,
                                  "head": "token-cls"}),
)


# The DeBERTa-v3 grid (`--grid deberta`, issue 15; 32 cases): the published deberta-v3-base and deberta-v3-large
# config.json (tests/data/hf/, vocabulary kept) cut to 3 and 2 layers, x full / LoRA (query_proj, key_proj,
# value_proj: peft's default for deberta-v2 plus the key, so that the adapters also run on the rel_embeddings) x
# checkpointing off / on x batch 1 / 4 x seq 128 / 512, bf16, on the base shape, and in amp-bf16 a half fraction
# of them (seq 512 when batch and checkpointing agree) on the large one; then token-cls, fp32, LoRA on every block
# Linear, QLoRA NF4 (kbit_prep off, as in the other grids) and pure bf16 on the large shape. The collator's int64
# attention_mask is passed (trace/_run.py). AdamW (fused).
# Written to accuracy_deberta.{json,md}.
DEBERTA_SHAPES = {"deberta:base": ("deberta-v3-base", 3), "deberta:large": ("deberta-v3-large", 2)}
_DEB_QKV = ("q_proj", "k_proj", "v_proj")
DEBERTA_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("deberta:base", "full", {"method": "full", "batch_size": 4, "seq_len": 512, "head": "token-cls"}),
    ("deberta:base", "lora", {"method": "lora", "batch_size": 4, "seq_len": 512, "head": "token-cls",
                              "lora_targets": _DEB_QKV, "grad_checkpointing": True}),
    ("deberta:base", "full", {"method": "full", "batch_size": 2, "seq_len": 256, "precision": "fp32"}),
    ("deberta:base", "lora", {"method": "lora", "batch_size": 4, "seq_len": 512,
                              "lora_targets": ("all-linear",)}),
    ("deberta:base", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 4, "seq_len": 512,
                               "lora_targets": _DEB_QKV}),
    ("deberta:base", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 4, "seq_len": 512,
                               "lora_targets": ("all-linear",), "grad_checkpointing": True}),
    ("deberta:large", "full", {"method": "full", "batch_size": 4, "seq_len": 512, "precision": "bf16"}),
    ("deberta:large", "lora", {"method": "lora", "batch_size": 4, "seq_len": 512, "precision": "bf16",
                               "lora_targets": _DEB_QKV, "grad_checkpointing": True}),
)


def deberta_grid() -> list[dict[str, Any]]:
    cases = []
    for model, precision in (("deberta:base", "bf16"), ("deberta:large", "amp-bf16")):
        for method in ("full", "lora"):
            for b in (1, 4):
                for gc in (False, True):
                    for seq in (128, 512):
                        if model == "deberta:large" and ((b == 4) == gc) != (seq == 512):
                            continue  # the large shape: a half fraction (seq 512 when batch and checkpointing agree)
                        kw: dict[str, Any] = {"method": method, "batch_size": b, "seq_len": seq,
                                              "precision": precision, "grad_checkpointing": gc}
                        if method == "lora":
                            kw["lora_targets"] = _DEB_QKV
                        cases.append({"id": f"{model[8:]} | {method} {precision} | b{b} s{seq} | "
                                            f"{'gc' if gc else 'no-gc'}", "model": model, "method": method,
                                      "training": kw})
    for model, method, kw in DEBERTA_EXTRA:
        label = ", ".join(f"{k}={v if not isinstance(v, tuple) else ','.join(v)}" for k, v in kw.items()
                          if k != "method")
        cases.append({"id": f"{model[8:]} | {method} | {label}", "model": model, "method": method, "training": kw})
    return cases


def token_cls_grid() -> list[dict[str, Any]]:
    cases = []
    for model in ENCODER_MODELS:
        for method in ("full", "lora"):
            shape = {"batch_size": 16, "seq_len": 256} if method == "full" else {"batch_size": 8, "seq_len": 512}
            for gc in (False, True):
                kw = dict(shape, method=method, head="token-cls", grad_checkpointing=gc)
                cases.append({"id": f"{model} | {method} token-cls | b{shape['batch_size']} s{shape['seq_len']} | "
                                    f"{'gc' if gc else 'no-gc'}", "model": model, "method": method, "training": kw})
    for model, method, kw in TOKEN_CLS_EXTRA:
        label = ", ".join(f"{k}={v if not isinstance(v, tuple) else ','.join(v)}" for k, v in kw.items()
                          if k != "method")
        cases.append({"id": f"{model} | {method} token-cls | {label}", "model": model, "method": method,
                      "training": {**kw, "head": "token-cls"}})
    for method in ("full", "lora"):
        for head in ("seq-cls", "token-cls"):
            for gc in (False, True):
                kw = {"method": method, "batch_size": 8, "seq_len": 512, "head": head, "grad_checkpointing": gc}
                cases.append({"id": f"modernbert-base | {method} {head} | b8 s512 | {'gc' if gc else 'no-gc'}",
                              "model": "modernbert-base", "method": method, "training": kw})
    for model, method, kw in MODERNBERT_EXTRA:
        label = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "method")
        cases.append({"id": f"{model} | {method} | {label}", "model": model, "method": method, "training": kw})
    return cases


def encoder_grid() -> list[dict[str, Any]]:
    cases = []
    for model in ENCODER_MODELS:
        for method in ("full", "lora"):
            shape = {"batch_size": 16, "seq_len": 256} if method == "full" else {"batch_size": 8, "seq_len": 512}
            for head in ("seq-cls", "mlm"):
                for gc in (False, True):
                    kw = dict(shape, method=method, head=head, grad_checkpointing=gc)
                    cases.append({"id": f"{model} | {method} {head} | b{shape['batch_size']} s{shape['seq_len']} | "
                                        f"{'gc' if gc else 'no-gc'}", "model": model, "method": method, "training": kw})
    for model, method, kw in ENCODER_EXTRA:
        label = ", ".join(f"{k}={v if not isinstance(v, tuple) else ','.join(v)}" for k, v in kw.items()
                          if k != "method")
        cases.append({"id": f"{model} | {method} | {label}", "model": model, "method": method, "training": kw})
    return cases


# The encoder-decoder grid (`--grid encdec`, issue 15; 22 cases): T5 (t5-small: relu, tied and scaled head) and
# BART (bart-base: post-LayerNorm, biases, learned positions) from their config.json (tests/data/hf) x full / LoRA
# (peft's q, v / q_proj, v_proj) x checkpointing off / on x two shapes (batch 8 x source 256 x target 64; batch 4 x
# source 512 x target 256); then Flan-T5 base (gated-gelu, the preset), eager attention, and QLoRA NF4. AdamW
# (fused), bf16. Written to accuracy_encdec.{json,md}.
ENCDEC_MODELS = ("seq2seq:t5-small", "seq2seq:bart-base")
ENCDEC_SHAPES = ({"batch_size": 8, "seq_len": 256, "target_len": 64},
                 {"batch_size": 4, "seq_len": 512, "target_len": 256})
ENCDEC_EXTRA: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("flan-t5-base", "lora", {"method": "lora", "batch_size": 8, "seq_len": 512, "target_len": 128}),
    ("flan-t5-base", "full", {"method": "full", "batch_size": 4, "seq_len": 256, "target_len": 64,
                              "grad_checkpointing": True}),
    ("seq2seq:t5-small", "full", {"method": "full", "batch_size": 8, "seq_len": 256, "target_len": 64,
                                  "attention": "eager"}),
    ("seq2seq:bart-base", "lora", {"method": "lora", "batch_size": 4, "seq_len": 512, "target_len": 128,
                                   "attention": "eager"}),
    ("seq2seq:t5-small", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 8, "seq_len": 256,
                                   "target_len": 64, "grad_checkpointing": True}),
    ("seq2seq:bart-base", "qlora", {"method": "qlora", "kbit_prep": False, "batch_size": 4, "seq_len": 512,
                                    "target_len": 128}),
)


def encdec_grid() -> list[dict[str, Any]]:
    cases = []
    for model in ENCDEC_MODELS:
        for method in ("full", "lora"):
            for shape in ENCDEC_SHAPES:
                for gc in (False, True):
                    kw = dict(shape, method=method, precision="bf16", grad_checkpointing=gc)
                    cases.append({"id": f"{model[8:]} | {method} | b{shape['batch_size']} s{shape['seq_len']} "
                                        f"t{shape['target_len']} | {'gc' if gc else 'no-gc'}",
                                  "model": model, "method": method, "training": kw})
    for model, method, kw in ENCDEC_EXTRA:
        label = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "method")
        cases.append({"id": f"{model.removeprefix('seq2seq:')} | {method} | {label}", "model": model,
                      "method": method, "training": dict(kw, precision="bf16")})
    return cases


# The state-space grid (`--grid ssm`, issue 15; 18 cases): Mamba (memory/ssm.py) at two tiny shapes built from a
# config (the slow path's Python loop over seq_len makes every step one traced op: small shapes keep traces short) x
# full pure-bf16 / LoRA (in_proj, x_proj; fp32 adapters) x checkpointing off / on x seq 64 / 128, batch 2; then
# mamba-130m itself (the published config, 24 layers) full and LoRA at batch 1 x seq 32. Per-step tensors are
# batch x intermediate 16-bit vectors: the tiny shapes keep them a multiple of the allocator's 512-byte block.
# Written to accuracy_ssm.{json,md}.
SSM_SHAPES = {"ssm:h64-l2-s16-v512": {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 16, "vocab_size": 512},
              "ssm:h128-l3-s8-v1024": {"hidden_size": 128, "num_hidden_layers": 3, "state_size": 8,
                                       "vocab_size": 1024}}
SSM_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora in_proj,x_proj", {"method": "lora", "precision": "bf16"}),
)


def ssm_grid() -> list[dict[str, Any]]:
    cases = []
    for model in SSM_SHAPES:
        for label, kw in SSM_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    for label, kw in SSM_RUNS:
        cases.append({"id": f"mamba-130m | {label} | b1 s32 | no-gc", "model": "mamba-130m", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=32)})
    return cases


# The Mamba-2 grid (`--grid ssm2`, issue 15; 36 cases): Mamba2ForCausalLM (memory/ssm.py mamba2_layer_activations)
# under transformers' PyTorch path (mamba2_chunk_scan: no mamba_ssm / causal_conv1d on the fake device) at two tiny
# shapes with the published configs' structure (heads x head_dim = 2 x hidden, B and C shared by n_groups groups) x
# full pure-bf16 / LoRA (in_proj, fp32 adapters, bf16 base) / full fp32 / QLoRA NF4 (kbit_prep off, as the other grids:
# the tracer does not run peft's fp32 upcast) x checkpointing off / on x seq 64 / 128,
# batch 2. chunk_size 64 divides both lengths; chunk_size 48 pads them to 96 and 144 (the scan pads every chunk-wise
# tensor). Then mamba2-130m itself (24 layers, chunk 256: seq 64 padded to 256) full and LoRA at batch 1, and with
# checkpointing full at b1 s256 (one chunk) and LoRA at b2 s128 (padded).
# Written to accuracy_ssm2.{json,md}.
SSM2_SHAPES = {"ssm2:h256-l2-s64-g2-q64": {"hidden_size": 256, "num_hidden_layers": 2, "num_heads": 8, "head_dim": 64,
                                           "n_groups": 2, "state_size": 64, "chunk_size": 64, "vocab_size": 2048},
               "ssm2:h256-l3-s128-g1-q48": {"hidden_size": 256, "num_hidden_layers": 3, "num_heads": 16,
                                            "head_dim": 32, "n_groups": 1, "state_size": 128, "chunk_size": 48,
                                            "vocab_size": 4096}}
SSM2_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora in_proj", {"method": "lora", "precision": "bf16"}),
    ("full fp32", {"method": "full", "precision": "fp32"}),
    ("qlora in_proj", {"method": "qlora", "precision": "bf16", "kbit_prep": False}),
)


def ssm2_grid() -> list[dict[str, Any]]:
    cases = []
    for model in SSM2_SHAPES:
        for label, kw in SSM2_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    for label, kw in SSM2_RUNS[:2]:
        cases.append({"id": f"mamba2-130m | {label} | b1 s64 | no-gc", "model": "mamba2-130m", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=64)})
    for (label, kw), (b, s) in zip(SSM2_RUNS[:2], ((1, 256), (2, 128)), strict=True):
        cases.append({"id": f"mamba2-130m | {label} | b{b} s{s} | gc", "model": "mamba2-130m", "method": kw["method"],
                      "training": dict(kw, batch_size=b, seq_len=s, grad_checkpointing=True)})
    return cases


# The hybrid grid (`--grid hybrid`, issue 15; 30 cases): Falcon-H1 (memory/hybrid.py: the decoder's attention and MLP
# beside a Mamba-2 mixer on transformers' PyTorch path) at two tiny shapes cut from tiiuae/Falcon-H1-0.5B-Instruct's
# config.json (tests/data/hf/falcon-h1-0.5b-instruct.json: its multipliers, GQA, head_dim 64 != hidden / heads, no
# gated norm) - the second with mamba_rms_norm on, 2 groups and chunk 48 (seq 64 and 128 pad to 96 and 144) - x full
# pure-bf16 / LoRA (q_proj, v_proj, in_proj: fp32 adapters, bf16 base) / QLoRA NF4 (kbit_prep off) x checkpointing
# off / on x seq 64 / 128, batch 2 under sdpa; then LoRA under eager attention and full fp32 on the first shape; then
# the published shape cut to 2 layers (full with checkpointing, LoRA without; b1 s256: two chunks of 128). 30 cases.
# Written to accuracy_hybrid.{json,md}.
HYBRID_SHAPES = {"hybrid:h256-l2-a4-m384-s32-q64": {"hidden_size": 256, "num_hidden_layers": 2,
                                                    "num_attention_heads": 4, "num_key_value_heads": 2,
                                                    "head_dim": 64, "intermediate_size": 512, "mamba_d_ssm": 384,
                                                    "mamba_n_heads": 6, "mamba_d_head": 64, "mamba_d_state": 32,
                                                    "mamba_chunk_size": 64, "vocab_size": 2048},
                 "hybrid:h256-l3-a4-m512-s64-g2-q48-norm": {"hidden_size": 256, "num_hidden_layers": 3,
                                                            "num_attention_heads": 4, "num_key_value_heads": 1,
                                                            "head_dim": 64, "intermediate_size": 768,
                                                            "mamba_d_ssm": 512, "mamba_n_heads": 16,
                                                            "mamba_d_head": 32, "mamba_d_state": 64,
                                                            "mamba_n_groups": 2, "mamba_chunk_size": 48,
                                                            "mamba_rms_norm": True, "vocab_size": 4096}}
HYBRID_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora q,v,in_proj", {"method": "lora", "precision": "bf16"}),
    ("qlora q,v,in_proj", {"method": "qlora", "precision": "bf16", "kbit_prep": False}),
)


def hybrid_grid() -> list[dict[str, Any]]:
    cases = []
    for model in HYBRID_SHAPES:
        for label, kw in HYBRID_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(HYBRID_SHAPES))
    label, kw = HYBRID_RUNS[1]
    for gc in (False, True):
        cases.append({"id": f"{model} | {label} eager | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                      "method": kw["method"],
                      "training": dict(kw, attention="eager", batch_size=2, seq_len=64, grad_checkpointing=gc)})
    for gc in (False, True):  # fp32 compute: the scan's .float() calls return their input (memory/ssm.py `wide`)
        cases.append({"id": f"{model} | full fp32 | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                      "method": "full", "training": {"method": "full", "precision": "fp32", "batch_size": 2,
                                                     "seq_len": 64, "grad_checkpointing": gc}})
    # the published shape itself (hidden 1024, 8 heads of 64, mixer 1536, chunk 128, vocab 32,784), 2 of its 36 layers
    for (label, kw), gc in zip(HYBRID_RUNS[:2], (True, False), strict=True):
        cases.append({"id": f"hybrid:falcon-h1-0.5b-2-layers | {label} | b1 s256 | {'gc' if gc else 'no-gc'}",
                      "model": "hybrid:falcon-h1-0.5b-2-layers", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=256, grad_checkpointing=gc)})
    return cases


# The Bamba grid (`--grid bamba`, issue 15): Bamba (memory/hybrid.py: each layer a Mamba-2 mixer on transformers'
# PyTorch path or the decoder's attention, then an MLP) at two tiny shapes cut from tests/data/hf/bamba-9b.json - the
# first with one attention layer in the middle (attn_layer_indices [1] of 3), chunk 64; the second with attention at
# the bottom and the top ([0, 3] of 4), 2 groups, chunk 48 (seq 64 and 128 pad to 96 and 144), one KV head - x full
# pure-bf16 / LoRA (q_proj, v_proj, in_proj: fp32 adapters, bf16 base) / QLoRA NF4 (kbit_prep off) x checkpointing
# off / on x seq 64 / 128, batch 2 under sdpa; then LoRA all-linear (out_proj included: peft does not refuse it for
# bamba) and LoRA under eager attention on the first shape, each with checkpointing off / on; then the published shape
# cut to 2 layers (a mixer, then attention; full with checkpointing, LoRA without; b1 s256: one chunk). 30 cases.
# Written to accuracy_bamba.{json,md}.
BAMBA_SHAPES = {"bamba:h256-l3-a1-m512-s32-q64": {"hidden_size": 256, "num_hidden_layers": 3, "attn_layer_indices": [1],
                                                  "num_attention_heads": 4, "num_key_value_heads": 2,
                                                  "intermediate_size": 512, "mamba_n_heads": 8, "mamba_d_head": 64,
                                                  "mamba_d_state": 32, "mamba_chunk_size": 64, "vocab_size": 2048},
                "bamba:h256-l4-a03-m512-s64-g2-q48": {"hidden_size": 256, "num_hidden_layers": 4,
                                                      "attn_layer_indices": [0, 3], "num_attention_heads": 4,
                                                      "num_key_value_heads": 1, "intermediate_size": 768,
                                                      "mamba_n_heads": 16, "mamba_d_head": 32, "mamba_d_state": 64,
                                                      "mamba_n_groups": 2, "mamba_chunk_size": 48,
                                                      "vocab_size": 4096}}


def bamba_grid() -> list[dict[str, Any]]:
    cases = []
    for model in BAMBA_SHAPES:
        for label, kw in HYBRID_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(BAMBA_SHAPES))
    for label, extra in (("lora all-linear", {"lora_targets": ("all-linear",)}),
                         ("lora q,v,in_proj eager", {"attention": "eager"})):
        for gc in (False, True):
            cases.append({"id": f"{model} | {label} | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                          "method": "lora", "training": dict(HYBRID_RUNS[1][1], **extra, batch_size=2, seq_len=64,
                                                             grad_checkpointing=gc)})
    # the published shape itself (hidden 4096, 32 heads / 8 KV, mixer 8192 in 128 heads, state 128, chunk 256, vocab
    # 128,256), cut to 2 layers: a mixer and an attention layer
    for (label, kw), gc in zip(HYBRID_RUNS[:2], (True, False), strict=True):
        cases.append({"id": f"bamba:bamba-9b-2-layers | {label} | b1 s256 | {'gc' if gc else 'no-gc'}",
                      "model": "bamba:bamba-9b-2-layers", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=256, grad_checkpointing=gc)})
    return cases


# The Jamba grid (`--grid jamba`, issue 15; 28 cases): Jamba (memory/jamba.py: attention and Mamba-1 layers on
# transformers' PyTorch scan, dense and MoE feed-forwards) at two tiny shapes cut from ai21labs/AI21-Jamba-1.5-Mini's
# config.json (tests/data/hf/ai21-jamba-1.5-mini.json) - A: 4 layers, attention at layer 2, MoE (4 experts, top 2) at
# the odd layers, state 16, dt rank 8; B: 3 layers, attention at the bottom, MoE (3 experts, top 1) at layer 1, mixer
# 3 x hidden, state 8, dt rank auto, in_proj / out_proj biases - x full pure-bf16 / LoRA all-linear (fp32 adapters,
# bf16 base: peft takes every nn.Linear, the expert stacks are Parameters) / QLoRA NF4 (auto targets q, v, in_proj,
# x_proj; kbit_prep off) x checkpointing off / on x seq 32 / 64, batch 2 under sdpa; then LoRA under eager attention
# and on the default targets at batch 1 on shape A (fp32 compute is not traced: grouped_mm's CPU meta kernel takes
# bf16 only). Written to accuracy_jamba.{json,md}.
JAMBA_SHAPES = {"jamba:h128-l4-a2of4-e4k2-s16": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                                 "mamba_dt_rank": 8, "mamba_d_state": 16, "num_experts": 4,
                                                 "num_experts_per_tok": 2, "attn_layer_period": 4,
                                                 "attn_layer_offset": 2, "vocab_size": 2048},
                "jamba:h192-l3-a0of3-e3k1-s8-x3-bias": {"hidden_size": 192, "intermediate_size": 256,
                                                        "num_hidden_layers": 3, "num_attention_heads": 6,
                                                        "num_key_value_heads": 6, "mamba_dt_rank": "auto",
                                                        "mamba_d_state": 8, "mamba_expand": 3,
                                                        "mamba_proj_bias": True, "num_experts": 3,
                                                        "num_experts_per_tok": 1, "attn_layer_period": 3,
                                                        "attn_layer_offset": 0, "expert_layer_period": 3,
                                                        "expert_layer_offset": 1, "vocab_size": 4096}}
JAMBA_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
    ("qlora auto", {"method": "qlora", "precision": "bf16", "kbit_prep": False}),
)


def jamba_grid() -> list[dict[str, Any]]:
    cases = []
    for model in JAMBA_SHAPES:
        for label, kw in JAMBA_RUNS:
            for seq in (32, 64):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(JAMBA_SHAPES))
    label, kw = JAMBA_RUNS[1]
    for gc in (False, True):
        cases.append({"id": f"{model} | {label} eager | b2 s32 | {'gc' if gc else 'no-gc'}", "model": model,
                      "method": kw["method"],
                      "training": dict(kw, attention="eager", batch_size=2, seq_len=32, grad_checkpointing=gc)})
    for gc in (False, True):  # LoRA on the default targets (q_proj, v_proj, in_proj, x_proj), batch 1
        cases.append({"id": f"{model} | lora auto | b1 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                      "method": "lora", "training": {"method": "lora", "precision": "bf16", "batch_size": 1,
                                                     "seq_len": 64, "grad_checkpointing": gc}})
    return cases


# The Zamba2 grid (`--grid zamba2`, issue 15; 36 cases): tests/data/hf/zamba2-2.7b.json cut to two tiny shapes (A: a
# shared block at layers 1 and 3, one weight set, projectors on the MLP only, no RoPE, one chunk of 64; B: shared
# blocks at 1, 2 and 4 from two weight sets, projectors on q, k, v too, RoPE, 2 groups, chunk 48 padding) x full
# pure-bf16 / LoRA auto (q_proj, v_proj, in_proj) / LoRA all-linear (the projectors' Linears and the hybrid layers'
# Linear too) x s64 / s128 x checkpointing off / on, b2; LoRA eager on shape B; the published 1.2B shape cut to 2
# layers, LoRA b1 s256. QLoRA (auto targets, nf4, no kbit preparation as in the other hybrid grids) on shape A and
# on shape B with one weight set (ZAMBA2_QLORA_SHAPES: every shared block tied, the only QLoRA case modelled,
# memory/zamba2.py) x s64 / s128 x checkpointing off / on, b2. Written to accuracy_zamba2.{json,md}.
ZAMBA2_SHAPES = {"zamba2:h128-l4-g13-b1-f256-q64": {"hidden_size": 128, "intermediate_size": 256,
                                                   "num_hidden_layers": 4, "num_attention_heads": 4,
                                                   "num_key_value_heads": 4, "n_mamba_heads": 8, "mamba_headdim": 32,
                                                   "mamba_d_state": 16, "mamba_ngroups": 1, "chunk_size": 64,
                                                   "adapter_rank": 16, "num_mem_blocks": 1, "vocab_size": 1024,
                                                   "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
                                                   "hybrid_layer_ids": [1, 3]},
                 "zamba2:h128-l5-g124-b2-qkv-rope-g2-q48": {"hidden_size": 128, "intermediate_size": 384,
                                                            "num_hidden_layers": 5, "num_attention_heads": 4,
                                                            "num_key_value_heads": 4, "n_mamba_heads": 8,
                                                            "mamba_headdim": 32, "mamba_d_state": 16,
                                                            "mamba_ngroups": 2, "chunk_size": 48, "adapter_rank": 8,
                                                            "num_mem_blocks": 2, "use_shared_attention_adapter": True,
                                                            "use_mem_rope": True, "vocab_size": 2048,
                                                            "layers_block_type": ["mamba", "hybrid", "hybrid", "mamba",
                                                                                  "hybrid"],
                                                            "hybrid_layer_ids": [1, 2, 4]}}
# shape B with its three hybrid layers on one weight set, so that each is tied (bitsandbytes leaves tied keys 16-bit)
ZAMBA2_QLORA_SHAPES = {"zamba2:h128-l5-g124-b1-qkv-rope-g2-q48": {
    **ZAMBA2_SHAPES["zamba2:h128-l5-g124-b2-qkv-rope-g2-q48"], "num_mem_blocks": 1}}
ZAMBA2_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora auto", {"method": "lora", "precision": "bf16"}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
)


def zamba2_grid() -> list[dict[str, Any]]:
    cases = []
    for model in ZAMBA2_SHAPES:
        for label, kw in ZAMBA2_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = list(ZAMBA2_SHAPES)[1]
    for gc in (False, True):
        cases.append({"id": f"{model} | lora auto eager | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                      "method": "lora", "training": dict(ZAMBA2_RUNS[1][1], attention="eager", batch_size=2,
                                                         seq_len=64, grad_checkpointing=gc)})
    # the published Zamba2-1.2B shape (hidden 2048, the shared block with q/k/v projectors and RoPE, mixer 4096 in
    # 64 heads, state 128, chunk 256) cut to a Mamba layer and a hybrid layer
    for gc in (False, True):
        cases.append({"id": f"zamba2:zamba2-1.2b-2-layers | lora auto | b1 s256 | {'gc' if gc else 'no-gc'}",
                      "model": "zamba2:zamba2-1.2b-2-layers", "method": "lora",
                      "training": dict(ZAMBA2_RUNS[1][1], batch_size=1, seq_len=256, grad_checkpointing=gc)})
    for model in (list(ZAMBA2_SHAPES)[0], *ZAMBA2_QLORA_SHAPES):
        for seq in (64, 128):
            for gc in (False, True):
                cases.append({"id": f"{model} | qlora auto | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                              "method": "qlora", "training": {"method": "qlora", "precision": "bf16",
                                                              "kbit_prep": False, "batch_size": 2, "seq_len": seq,
                                                              "grad_checkpointing": gc}})
    return cases


# The GraniteMoeHybrid grid (`--grid granite`, issue 15; 60 cases): the dense Granite 4.0 H models
# (num_local_experts 0, memory/hybrid.py as Bamba's layers) from tests/data/hf/granite-4.0-h-micro.json cut to two
# tiny shapes (one attention layer in the middle; attention at the bottom and the top, 2 groups, chunk 48 padding) x
# full pure-bf16 / LoRA / QLoRA (default targets q_proj, v_proj, in_proj) x s64 / s128 x checkpointing off / on, b2;
# LoRA all-linear (input_linear, output_linear, in_proj, out_proj, q/k/v/o) and eager; the published shape cut to 2
# layers (a mixer and an attention layer, vocab 100,352). The tracer keeps the published multipliers (embedding 12,
# residual 0.22, attention 1/64, logits / 8); and 30 MoE cases (GRANITE_MOE_SHAPES, below). Written to
# accuracy_granite.{json,md}.
GRANITE_SHAPES = {"granite:h256-l3-a1-m512-s32-q64": {"hidden_size": 256, "num_hidden_layers": 3,
                                                    "layer_types": ["mamba", "attention", "mamba"],
                                                    "num_attention_heads": 4, "num_key_value_heads": 2,
                                                    "shared_intermediate_size": 512, "mamba_n_heads": 8,
                                                    "mamba_d_head": 64, "mamba_d_state": 32, "mamba_chunk_size": 64,
                                                    "vocab_size": 2048},
                  "granite:h256-l4-a03-m768-s64-g2-q48": {"hidden_size": 256, "num_hidden_layers": 4,
                                                          "layer_types": ["attention", "mamba", "mamba", "attention"],
                                                          "num_attention_heads": 4, "num_key_value_heads": 1,
                                                          "shared_intermediate_size": 768, "mamba_n_heads": 16,
                                                          "mamba_d_head": 32, "mamba_d_state": 64,
                                                          "mamba_n_groups": 2, "mamba_chunk_size": 48,
                                                          "vocab_size": 4096}}


# The MoE Granite 4.0 H models (granite-4.0-h-tiny / -h-small: block_sparse_moe beside shared_mlp in every layer), the
# two shapes above with experts (tests/test_granitemoehybrid.py MOE_A / MOE_B), from
# tests/data/hf/granite-4.0-h-tiny.json (A: 8 experts of 128, top 2, shared_mlp 512) and -h-small.json (B: 6 experts
# of 96, top 3, shared_mlp 384); and the published h-tiny shape cut to 2 layers (a mixer and an attention layer, 64
# experts of 512, top 6, vocab 100,352).
GRANITE_MOE_SHAPES = {
    "granite:moe-h256-l3-a1-e8k2-i128-m512": ("granite-4.0-h-tiny", {
        **GRANITE_SHAPES["granite:h256-l3-a1-m512-s32-q64"], "num_local_experts": 8, "num_experts_per_tok": 2,
        "intermediate_size": 128}),
    "granite:moe-h256-l4-a03-e6k3-i96-m384-g2": ("granite-4.0-h-small", {
        **GRANITE_SHAPES["granite:h256-l4-a03-m768-s64-g2-q48"], "num_local_experts": 6, "num_experts_per_tok": 3,
        "intermediate_size": 96, "shared_intermediate_size": 384}),
    "granite:granite-4.0-h-tiny-2-layers": ("granite-4.0-h-tiny", {"num_hidden_layers": 2,
                                                                   "layer_types": ["mamba", "attention"]}),
}


def granite_grid() -> list[dict[str, Any]]:
    cases = []
    for model in GRANITE_SHAPES:
        for label, kw in HYBRID_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(GRANITE_SHAPES))
    for label, extra in (("lora all-linear", {"lora_targets": ("all-linear",)}),
                         ("lora q,v,in_proj eager", {"attention": "eager"})):
        for gc in (False, True):
            cases.append({"id": f"{model} | {label} | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                          "method": "lora", "training": dict(HYBRID_RUNS[1][1], **extra, batch_size=2, seq_len=64,
                                                             grad_checkpointing=gc)})
    # the published shape (hidden 2048, 32 heads / 8 KV, mixer 4096 in 64 heads, state 128, chunk 256, shared_mlp
    # 8192, vocab 100,352, tied), cut to 2 layers: a mixer and an attention layer
    for (label, kw), gc in zip(HYBRID_RUNS[:2], (True, False), strict=True):
        cases.append({"id": f"granite:granite-4.0-h-micro-2-layers | {label} | b1 s256 | {'gc' if gc else 'no-gc'}",
                      "model": "granite:granite-4.0-h-micro-2-layers", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=256, grad_checkpointing=gc)})
    # the MoE models: both shapes x full pure-bf16 / LoRA / QLoRA x s64 / s128 x checkpointing off / on, b2; LoRA
    # all-linear (shared_mlp's input_linear / output_linear, the mixer's and attention's Linears: peft takes no expert
    # or router, which are Parameters) at both shapes; the published h-tiny shape cut to 2 layers
    moe_a, moe_b, moe_pub = GRANITE_MOE_SHAPES
    for model in (moe_a, moe_b):
        for label, kw in HYBRID_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
        for gc in (False, True):
            cases.append({"id": f"{model} | lora all-linear | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                          "method": "lora", "training": dict(HYBRID_RUNS[1][1], lora_targets=("all-linear",),
                                                             batch_size=2, seq_len=64, grad_checkpointing=gc)})
    for (label, kw), gc in zip(HYBRID_RUNS[:2], (True, False), strict=True):
        cases.append({"id": f"{moe_pub} | {label} | b1 s256 | {'gc' if gc else 'no-gc'}", "model": moe_pub,
                      "method": kw["method"], "training": dict(kw, batch_size=1, seq_len=256, grad_checkpointing=gc)})
    return cases


# The Nemotron-H grid (`--grid nemotronh`, issue 15; 52 cases: 22 MoE, above, and 30 dense): the dense models
# (memory/nemotron_h.py:
# Mamba-2, attention and relu2 MLP layers, one block each) from tests/data/hf/nemotron-h-8b-base-8k.json cut to two
# tiny shapes (A: M-M*- , 2 groups, one chunk of 64 at s64; B: *M-M-M bottom attention, 4 groups, chunk 48 padding)
# x full pure-bf16 / LoRA / QLoRA (default targets q_proj, v_proj, in_proj) x s64 / s128 x checkpointing off / on,
# b2; LoRA on every Linear peft accepts (all-linear takes out_proj, which peft refuses for nemotron_h) and eager; the
# published shape cut to 3 layers (M-*: hidden 4096, vocab 131,072). Written to accuracy_nemotronh.{json,md}.
NEMOTRONH_SHAPES = {"nemotronh:h256-M-M*--s32-q64": {"hidden_size": 256, "hybrid_override_pattern": "M-M*-",
                                                     "num_hidden_layers": 5, "num_attention_heads": 4,
                                                     "num_key_value_heads": 2, "head_dim": 64,
                                                     "attention_head_dim": 64, "intermediate_size": 512,
                                                     "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2,
                                                     "ssm_state_size": 32, "chunk_size": 64, "vocab_size": 2048},
                    "nemotronh:h192-*M-M-M-s16-g4-q48": {"hidden_size": 192, "hybrid_override_pattern": "*M-M-M",
                                                         "num_hidden_layers": 6, "num_attention_heads": 3,
                                                         "num_key_value_heads": 1, "head_dim": 64,
                                                         "attention_head_dim": 64, "intermediate_size": 384,
                                                         "mamba_num_heads": 12, "mamba_head_dim": 32, "n_groups": 4,
                                                         "ssm_state_size": 16, "chunk_size": 48, "vocab_size": 4096}}


# The MoE Nemotron-H models (Nemotron 3 Nano: NemotronHMoE "E" layers, memory/nemotron_h.py), from
# tests/data/hf/nvidia-nemotron-3-nano-30b-a3b-bf16.json cut to two tiny shapes (C: MEM*E, Nano's order, 8 experts
# top 2; D: *E-ME, attention at the bottom, a dense MLP layer beside the MoE ones, 6 experts top 3, 2 mixer groups)
# x full pure-bf16 / LoRA / QLoRA (default targets) x checkpointing off / on, b2 s64 and s128 for C, b2 s64 for D;
# LoRA on the shared experts' up / down_proj; the published shape cut to 2 layers (ME: hidden 2688, 128 experts
# top 6).
NEMOTRONH_MOE_SHAPES = {"nemotronh:moe-h256-MEM*E-e8k2-i128-s256": {
    "hidden_size": 256, "hybrid_override_pattern": "MEM*E", "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 64, "intermediate_size": 512, "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2,
    "ssm_state_size": 32, "chunk_size": 64, "vocab_size": 2048, "n_routed_experts": 8, "num_experts_per_tok": 2,
    "moe_intermediate_size": 128, "moe_shared_expert_intermediate_size": 256},
    "nemotronh:moe-h192-*E-ME-e6k3-i96-s160": {
    "hidden_size": 192, "hybrid_override_pattern": "*E-ME", "num_attention_heads": 3, "num_key_value_heads": 1,
    "head_dim": 64, "intermediate_size": 384, "mamba_num_heads": 12, "mamba_head_dim": 32, "n_groups": 2,
    "ssm_state_size": 16, "chunk_size": 48, "vocab_size": 4096, "n_routed_experts": 6, "num_experts_per_tok": 3,
    "moe_intermediate_size": 96, "moe_shared_expert_intermediate_size": 160}}


def _nemotronh_moe_family(shapes: dict[str, dict[str, Any]], label: str, targets: tuple[str, ...],
                          published: str) -> list[dict[str, Any]]:
    """A MoE shape pair's cases: HYBRID_RUNS x checkpointing off / on, b2 s64 and s128 for the first shape, b2 s64
    for the second; LoRA on `targets` (labelled `label`) on the first; the published shape cut to 2 layers."""
    cases = []
    for model, seqs in zip(shapes, ((64, 128), (64,)), strict=True):
        for run, kw in HYBRID_RUNS:
            for seq in seqs:
                for gc in (False, True):
                    cases.append({"id": f"{model} | {run} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(shapes))
    for gc in (False, True):
        cases.append({"id": f"{model} | {label} | b2 s64 | {'gc' if gc else 'no-gc'}",
                      "model": model, "method": "lora",
                      "training": dict(HYBRID_RUNS[1][1], lora_targets=targets, batch_size=2, seq_len=64,
                                       grad_checkpointing=gc)})
    for (run, kw), gc in zip(HYBRID_RUNS[:2], (False, True), strict=True):
        cases.append({"id": f"{published} | {run} | b1 s128 | {'gc' if gc else 'no-gc'}",
                      "model": published, "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=128, grad_checkpointing=gc)})
    return cases


def nemotronh_moe_cases() -> list[dict[str, Any]]:
    return _nemotronh_moe_family(NEMOTRONH_MOE_SHAPES, "lora q,v,in_proj,up,down",
                                 ("q_proj", "v_proj", "in_proj", "up_proj", "down_proj"),
                                 "nemotronh:nemotron-3-nano-2-layers")


# Nemotron 3 Super's latent MoE and grouped routing (NemotronHMoE's fc1 / fc2_latent_proj around experts at the
# latent width; NemotronHTopkRouter's n_group / topk_group), from
# tests/data/hf/nvidia-nemotron-3-super-120b-a12b-bf16.json cut to two tiny shapes (L1: C's MEM*E, latent 64 of
# hidden 256, 8 experts in 4 groups, the best 2 kept, top 2; L2: D's *E-ME, latent 48 of 192, 8 experts in 2
# groups, the best 1 kept, top 3, norm_topk_prob false) x full pure-bf16 / LoRA / QLoRA (default targets) x
# checkpointing off / on, b2 s64 and s128 for L1, b2 s64 for L2; LoRA on the shared experts and both latent
# projections; the published shape cut to 2 layers (ME: hidden 4096, 512 experts top 22, latent 1024).
NEMOTRONH_LATENT_SHAPES = {
    "nemotronh:latent-h256-MEM*E-e8k2-l64-g4t2": {
        **NEMOTRONH_MOE_SHAPES["nemotronh:moe-h256-MEM*E-e8k2-i128-s256"], "moe_latent_size": 64, "n_group": 4,
        "topk_group": 2},
    "nemotronh:latent-h192-*E-ME-e8k3-l48-g2t1-nonorm": {
        **NEMOTRONH_MOE_SHAPES["nemotronh:moe-h192-*E-ME-e6k3-i96-s160"], "n_routed_experts": 8,
        "moe_latent_size": 48, "n_group": 2, "topk_group": 1, "norm_topk_prob": False}}


def nemotronh_latent_cases() -> list[dict[str, Any]]:
    return _nemotronh_moe_family(NEMOTRONH_LATENT_SHAPES, "lora q,v,in_proj,up,down,fc1,fc2_latent",
                                 ("q_proj", "v_proj", "in_proj", "up_proj", "down_proj", "fc1_latent_proj",
                                  "fc2_latent_proj"), "nemotronh:nemotron-3-super-2-layers")


def nemotronh_grid() -> list[dict[str, Any]]:
    cases = nemotronh_moe_cases() + nemotronh_latent_cases()
    for model in NEMOTRONH_SHAPES:
        for label, kw in HYBRID_RUNS:
            for seq in (64, 128):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b2 s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=2, seq_len=seq, grad_checkpointing=gc)})
    model = next(iter(NEMOTRONH_SHAPES))
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj", "up_proj", "down_proj")
    for label, extra in (("lora q,k,v,o,in_proj,up,down", {"lora_targets": every}),
                         ("lora q,v,in_proj eager", {"attention": "eager"})):
        for gc in (False, True):
            cases.append({"id": f"{model} | {label} | b2 s64 | {'gc' if gc else 'no-gc'}", "model": model,
                          "method": "lora", "training": dict(HYBRID_RUNS[1][1], **extra, batch_size=2, seq_len=64,
                                                             grad_checkpointing=gc)})
    for (label, kw), gc in zip(HYBRID_RUNS[:2], (True, False), strict=True):
        cases.append({"id": f"nemotronh:nemotron-h-8b-3-layers | {label} | b1 s256 | {'gc' if gc else 'no-gc'}",
                      "model": "nemotronh:nemotron-h-8b-3-layers", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=256, grad_checkpointing=gc)})
    return cases


# The vision-language grid (`--grid vlm`, issue 15; 42 cases): LLaVA-1.5 (memory/vision.py) as published, the
# tower frozen: llava-1.5-7b from its config.json (tests/data/hf) x full pure-bf16 (the projector trained) / LoRA
# (peft's q_proj, v_proj in the language model) / QLoRA NF4 (without prepare_model_for_kbit_training's fp32 casts,
# which the tracer does not run) x sdpa / eager x checkpointing off / on x two shapes (batch 1 x 512 text tokens x
# one image; batch 2 x 256 text tokens x two images per sample: 1,088 and 1,408 tokens in the language model);
# then llava-1.5-13b (the preset) full / LoRA / QLoRA x checkpointing at both shapes, 7B LoRA under amp-bf16
# without checkpointing at both shapes (with it, the language model's own estimate counts autocast weight copies
# in the forward that the tracer does not see: a text-model issue, left to its owner), and three images per
# sample (LoRA with checkpointing, QLoRA without); --train-vision (full, sdpa) with and without checkpointing; the
# default q_proj, v_proj reach the CLIP tower too (memory/vision.py clip_lora_targets), so every LoRA / QLoRA case
# adapts it, but the amp-bf16 ones (language-model targets: tower adapters under autocast are refused); 18 tower-LoRA
# cases on the published tower under a toy language model (below). 60 cases, written to accuracy_vlm.{json,md}.
VLM_SHAPES = ({"batch_size": 1, "seq_len": 512, "images": 1}, {"batch_size": 2, "seq_len": 256, "images": 2})
VLM_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora", {"method": "lora", "precision": "bf16"}),
    ("qlora", {"method": "qlora", "precision": "bf16", "kbit_prep": False}),
)


def vlm_grid() -> list[dict[str, Any]]:
    cases = []
    for label, kw in VLM_RUNS:
        for shape in VLM_SHAPES:
            for attention in ("sdpa", "eager"):
                for gc in (False, True):
                    cases.append({"id": f"llava-1.5-7b | {label} | b{shape['batch_size']} s{shape['seq_len']} "
                                        f"i{shape['images']} | {attention} | {'gc' if gc else 'no-gc'}",
                                  "model": "vlm:llava-1.5-7b-hf", "method": kw["method"],
                                  "training": dict(kw, **shape, attention=attention, grad_checkpointing=gc)})
    for shape in VLM_SHAPES:
        tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}"
        for label, kw in VLM_RUNS:
            for gc in (False, True):
                cases.append({"id": f"llava-1.5-13b | {label} | {tag} | sdpa | {'gc' if gc else 'no-gc'}",
                              "model": "llava-1.5-13b", "method": kw["method"],
                              "training": dict(kw, **shape, grad_checkpointing=gc)})
        # (targets in the language model only: LoRA on the tower under autocast is refused, and q_proj, v_proj
        # reach the tower)
        cases.append({"id": f"llava-1.5-7b | lora gate/up/down_proj amp-bf16 | {tag} | sdpa | no-gc",
                      "model": "vlm:llava-1.5-7b-hf", "method": "lora",
                      "training": dict(shape, method="lora", precision="amp-bf16",
                                       lora_targets=("gate_proj", "up_proj", "down_proj"))})
    for gc in (False, True):  # --train-vision: the CLIP tower trained too (full fine-tuning, sdpa)
        tag = "gc" if gc else "no-gc"
        cases.append({"id": f"llava-1.5-7b | full pure-bf16 train-vision | b1 s512 i1 | sdpa | {tag}",
                      "model": "vlm:llava-1.5-7b-hf", "method": "full",
                      "training": dict(VLM_RUNS[0][1], **VLM_SHAPES[0], train_vision=True, grad_checkpointing=gc)})
    for label, kw in VLM_RUNS[1:]:  # three images per sample: 1,728 image tokens
        gc = label == "lora"
        cases.append({"id": f"llava-1.5-7b | {label} | b1 s256 i3 | sdpa | {'gc' if gc else 'no-gc'}",
                      "model": "vlm:llava-1.5-7b-hf", "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=256, images=3, grad_checkpointing=gc)})
    # LoRA / QLoRA on the CLIP tower and projector (memory/vision.py clip_lora_targets): the published 24-layer tower
    # under a toy language model (the image side the peak) x all-linear / named targets (q/k/v_proj reach the tower
    # and the language model, fc1 and fc2 the tower only, o_proj the language model only) x LoRA / QLoRA x
    # checkpointing x b1 s64 one image / b1 s32 two images; and the default q_proj, v_proj under eager attention
    for targets, tname in ((("all-linear",), "all-linear"), (CLIP_NAMED, "q/k/v/o_proj,fc1,fc2")):
        for label, kw in VLM_RUNS[1:]:
            for shape in VLM_TOY_SHAPES:
                tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}"
                for gc in (False, True):
                    cases.append({"id": f"llava-1.5-7b (24-layer tower, toy text model) | {label} {tname} | {tag} | "
                                        f"sdpa | {'gc' if gc else 'no-gc'}", "model": "llava-toy:llava-1.5-7b-hf",
                                  "method": kw["method"], "training": dict(kw, **shape, lora_targets=targets,
                                                                           grad_checkpointing=gc)})
    for gc in (False, True):
        cases.append({"id": f"llava-1.5-7b (24-layer tower, toy text model) | lora q_proj,v_proj | b1 s64 i1 | "
                            f"eager | {'gc' if gc else 'no-gc'}", "model": "llava-toy:llava-1.5-7b-hf",
                      "method": "lora", "training": dict(VLM_RUNS[1][1], **VLM_TOY_SHAPES[0], attention="eager",
                                                         grad_checkpointing=gc)})
    return cases


VLM_TOY_SHAPES = ({"batch_size": 1, "seq_len": 64, "images": 1}, {"batch_size": 1, "seq_len": 32, "images": 2})
CLIP_NAMED = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


# The Qwen vision-language grid (`--grid qwen-vl`, issue 15; 94 cases): Qwen2-VL and Qwen2.5-VL (memory/vision.py
# _qwen_estimate, trace/_qwen_vl.py) from the published Qwen2-VL-2B-Instruct and Qwen2.5-VL-3B-Instruct config.json
# files (tests/data/hf), cut to 2 text layers and a 2-block tower (Qwen2.5-VL: 4 blocks, the last with full
# attention, the others 112 px windows), the widths, heads and vocabularies as published; the tower frozen x full
# pure-bf16 (the merger trained) / LoRA / QLoRA NF4 (kbit_prep off) x checkpointing off / on x two shapes (batch 1
# x 256 text tokens x one 448 px image: 256 image tokens; batch 2 x 128 text tokens x two 644 px images per
# sample: 529 image tokens each, 1,186 tokens in the language model); then the whole 32-block tower (2 text layers)
# x the three methods x checkpointing at batch 1 x 64 text tokens x two 644 px images (4,232 patches, 1,058 image
# tokens), where the tower's kept inputs and its recomputed backward weigh; and, to make the image side the peak,
# the published tower cut to 4 blocks under a toy language model (2 layers of width 256, a 1,000-token vocabulary)
# x full / LoRA x checkpointing at one 896 px image (4,096 patches) and 16 text tokens; and --train-vision (full
# pure-bf16, the whole tower trained) on the first cut shape and the toy x checkpointing, eager attention (full /
# LoRA) on the same two without checkpointing and with it (and with it on the second cut shape: four images,
# Qwen2.5-VL's windows, and on the toy with two 644 px images), and LoRA / QLoRA all-linear (peft adapts the
# tower's and merger's Linears too) x checkpointing on the same two, and LoRA on named tower Linears (the
# toy). Written to accuracy_qwen-vl.{json,md}.
QWEN_VL_CUTS = {"qwen2-vl-2b-instruct": (2, ()), "qwen2.5-vl-3b-instruct": (4, (3,))}
QWEN_VL_SHAPES = ({"batch_size": 1, "seq_len": 256, "images": 1, "image_size": 448},
                  {"batch_size": 2, "seq_len": 128, "images": 2, "image_size": 644})


def qwen_vl_grid() -> list[dict[str, Any]]:
    cases = []
    for name in QWEN_VL_CUTS:
        for label, kw in VLM_RUNS:
            for shape in QWEN_VL_SHAPES:
                for gc in (False, True):
                    cases.append({"id": f"{name} (cut) | {label} | b{shape['batch_size']} s{shape['seq_len']} "
                                        f"i{shape['images']} {shape['image_size']}px | {'gc' if gc else 'no-gc'}",
                                  "model": f"qwenvl:{name}", "method": kw["method"],
                                  "training": dict(kw, **shape, grad_checkpointing=gc)})
        for label, kw in VLM_RUNS:  # the whole 32-block tower: its kept inputs and its backward weigh
            for gc in (False, True):
                cases.append({"id": f"{name} (2 text layers, whole tower) | {label} | b1 s64 i2 644px | "
                                    f"{'gc' if gc else 'no-gc'}", "model": f"qwenvl-tower:{name}",
                              "method": kw["method"], "training": dict(kw, batch_size=1, seq_len=64, images=2,
                                                                       image_size=644, grad_checkpointing=gc)})
        for label, kw in VLM_RUNS[:2]:  # the image side as the peak: the published tower, a toy language model
            for gc in (False, True):
                cases.append({"id": f"{name} (4-block tower, toy text model) | {label} | b1 s16 i1 896px | "
                                    f"{'gc' if gc else 'no-gc'}", "model": f"qwenvl-toy:{name}",
                              "method": kw["method"], "training": dict(kw, batch_size=1, seq_len=16, images=1,
                                                                       image_size=896, grad_checkpointing=gc)})
        for model, shape in ((f"qwenvl:{name}", QWEN_VL_SHAPES[0]),  # --train-vision: the whole tower trained
                             (f"qwenvl-toy:{name}", {"batch_size": 1, "seq_len": 16, "images": 1, "image_size": 896})):
            cut = "(cut)" if model.startswith("qwenvl:") else "(4-block tower, toy text model)"
            for gc in (False, True):
                cases.append({"id": f"{name} {cut} | full pure-bf16 train-vision | b{shape['batch_size']} "
                                    f"s{shape['seq_len']} i{shape['images']} {shape['image_size']}px | "
                                    f"{'gc' if gc else 'no-gc'}", "model": model, "method": "full",
                              "training": dict(VLM_RUNS[0][1], **shape, train_vision=True, grad_checkpointing=gc)})
            for label, kw in VLM_RUNS[:2]:  # eager attention (no checkpointing: the tower frozen, without grad)
                cases.append({"id": f"{name} {cut} | {label} eager | b{shape['batch_size']} s{shape['seq_len']} "
                                    f"i{shape['images']} {shape['image_size']}px | no-gc", "model": model,
                              "method": kw["method"], "training": dict(kw, **shape, attention="eager")})
            for label, kw in VLM_RUNS[:2]:  # eager with checkpointing: the recomputed tower's eager softmax
                cases.append({"id": f"{name} {cut} | {label} eager | b{shape['batch_size']} s{shape['seq_len']} "
                                    f"i{shape['images']} {shape['image_size']}px | gc", "model": model,
                              "method": kw["method"],
                              "training": dict(kw, **shape, attention="eager", grad_checkpointing=True)})
            for label, kw in VLM_RUNS[1:]:  # LoRA / QLoRA all-linear: peft adapts the tower and merger too
                for gc in (False, True):
                    cases.append({"id": f"{name} {cut} | {label} all-linear (tower adapted) | b{shape['batch_size']} "
                                        f"s{shape['seq_len']} i{shape['images']} {shape['image_size']}px | "
                                        f"{'gc' if gc else 'no-gc'}", "model": model, "method": kw["method"],
                                  "training": dict(kw, **shape, lora_targets=("all-linear",), grad_checkpointing=gc)})
        for label, kw in VLM_RUNS[:2]:  # eager with checkpointing, four images a step (Qwen2.5-VL: 644 px windows)
            shape = QWEN_VL_SHAPES[1]
            cases.append({"id": f"{name} (cut) | {label} eager | b{shape['batch_size']} s{shape['seq_len']} "
                                f"i{shape['images']} {shape['image_size']}px | gc", "model": f"qwenvl:{name}",
                          "method": kw["method"], "training": dict(kw, **shape, attention="eager",
                                                                   grad_checkpointing=True)})
        # LoRA on named tower Linears under the toy (Qwen2-VL: attn.proj and fc2, so the bottom block's attention
        # runs without grad; Qwen2.5-VL: gate_proj / up_proj / down_proj, which reach its tower MLP too)
        named = ("q_proj", "v_proj", "attn.proj", "fc2") if name.startswith("qwen2-vl") else \
            ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
        for gc in (False, True):
            cases.append({"id": f"{name} (4-block tower, toy text model) | lora {','.join(named)} | b1 s16 i1 896px | "
                                f"{'gc' if gc else 'no-gc'}", "model": f"qwenvl-toy:{name}", "method": "lora",
                          "training": dict(VLM_RUNS[1][1], batch_size=1, seq_len=16, images=1, image_size=896,
                                           lora_targets=named, grad_checkpointing=gc)})
        # eager with checkpointing, two images under the toy language model: the last segment's softmax backward
        # beside the other's saved pair as the peak
        cases.append({"id": f"{name} (4-block tower, toy text model) | lora eager | b1 s16 i2 644px | gc",
                      "model": f"qwenvl-toy:{name}", "method": "lora",
                      "training": dict(VLM_RUNS[1][1], batch_size=1, seq_len=16, images=2, image_size=644,
                                       attention="eager", grad_checkpointing=True)})
    return cases


# The Llama-3.2-Vision grid (`--grid mllama`, issue 15; 54 cases): MllamaForConditionalGeneration
# (core/memory/mllama.py, trace/_mllama.py) from the published Llama-3.2-11B-Vision-Instruct and 90B config.json files
# (tests/data/hf), cut: the 11B text model to its first 9 layers (cross-attention at 3 and 8, as published) under a
# tower of 8 local and 2 global layers (intermediate outputs 3 and 7: vision_output_dim 3,840) x full pure-bf16 /
# LoRA / QLoRA NF4 (kbit_prep off) x checkpointing off / on x two shapes (batch 1 x 512 text tokens x one image; batch
# 2 x 256 x two images per sample: 12,808 vision rows per sample); the 11B text model's first 4 layers (cross-attention
# at 3) under the whole published tower (32 + 8 layers) x the three methods x checkpointing at batch 1 x 256 x one
# image, where the tower's forward and, with checkpointing, its saved graph and backward weigh; the 90B text model's
# first 4 layers (width 8,192, cross-attention at 3) under the 4 + 1 layer tower x LoRA / QLoRA x checkpointing at
# batch 1 x 512 x one image; and, to make the image side the peak, the 4 + 1 layer tower under a toy language model
# (4 layers of width 256, cross-attention at 1 and 3, a 1,000-token vocabulary) x full / LoRA x checkpointing at 16
# text tokens and two images; and --train-vision (full pure-bf16, the tower trained) on the toy (two shapes), the
# 9-layer cut (both shapes) and the whole tower, checkpointing off / on. Every image is 4 tiles of 560 px (the
# processor pads each image to max_num_tiles).
# Written to accuracy_mllama.{json,md}.
MLLAMA_CUTS: dict[str, tuple[str, int, int, int, tuple[int, ...]]] = {
    # name: (fixture, text layers, local tower layers, global tower layers, intermediate_layers_indices)
    "mllama:11b-9": ("llama-3.2-11b-vision-instruct", 9, 8, 2, (3, 7)),
    "mllama:11b-4-tower": ("llama-3.2-11b-vision-instruct", 4, 32, 8, (3, 7, 15, 23, 30)),
    "mllama:90b-4": ("llama-3.2-90b-vision-instruct", 4, 4, 1, (1, 3)),
    "mllama:toy": ("llama-3.2-11b-vision-instruct", 4, 4, 1, (1, 3)),
}
MLLAMA_SHAPES = ({"batch_size": 1, "seq_len": 512, "images": 1}, {"batch_size": 2, "seq_len": 256, "images": 2})


def mllama_grid() -> list[dict[str, Any]]:
    cases = []

    def add(model: str, label: str, kw: dict[str, Any], shape: dict[str, Any], gc: bool) -> None:
        cases.append({"id": f"{model} | {label} | b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} | "
                            f"{'gc' if gc else 'no-gc'}", "model": model, "method": kw["method"],
                      "training": dict(kw, **shape, grad_checkpointing=gc)})

    for label, kw in VLM_RUNS:
        for shape in MLLAMA_SHAPES:
            for gc in (False, True):
                add("mllama:11b-9", label, kw, shape, gc)
    for label, kw in VLM_RUNS:
        for gc in (False, True):
            add("mllama:11b-4-tower", label, kw, {"batch_size": 1, "seq_len": 256, "images": 1}, gc)
    for label, kw in VLM_RUNS[1:]:
        for gc in (False, True):
            add("mllama:90b-4", label, kw, MLLAMA_SHAPES[0], gc)
    for label, kw in VLM_RUNS[:2]:
        for gc in (False, True):
            add("mllama:toy", label, kw, {"batch_size": 1, "seq_len": 16, "images": 2}, gc)
    # --train-vision (full pure-bf16, the tower trained): the toy at two shapes, the 9-layer cut at both shapes and
    # the whole published tower, checkpointing off / on
    tv = dict(VLM_RUNS[0][1], train_vision=True)
    for gc in (False, True):
        for shape in ({"batch_size": 1, "seq_len": 16, "images": 2}, {"batch_size": 2, "seq_len": 32, "images": 1}):
            add("mllama:toy", "full pure-bf16 train-vision", tv, shape, gc)
        for shape in MLLAMA_SHAPES:
            add("mllama:11b-9", "full pure-bf16 train-vision", tv, shape, gc)
        add("mllama:11b-4-tower", "full pure-bf16 train-vision", tv, {"batch_size": 1, "seq_len": 256, "images": 1}, gc)
    # LoRA / QLoRA whose targets reach the tower (peft matches them over the whole model: memory/mllama.py
    # lora_targets): all-linear (every tower Linear and the projector) and named q_proj,v_proj,fc1,fc2 on the toy at
    # two shapes (two images and one), checkpointing off / on; all-linear on the 9-layer cut (8 + 2 layer tower) at
    # batch 1 x 512 x 1 image
    for targets in (("all-linear",), ("q_proj", "v_proj", "fc1", "fc2")):
        for label, kw in VLM_RUNS[1:]:
            run = dict(kw, lora_targets=targets)
            for gc in (False, True):
                for shape in ({"batch_size": 1, "seq_len": 16, "images": 2},
                              {"batch_size": 1, "seq_len": 32, "images": 1}):
                    add("mllama:toy", f"{label} {','.join(targets)}", run, shape, gc)
    for gc in (False, True):
        add("mllama:11b-9", "lora all-linear", dict(VLM_RUNS[1][1], lora_targets=("all-linear",)), MLLAMA_SHAPES[0], gc)
    return cases


# The LLaVA-NeXT grid (`--grid vlm3`, issue 15): LlavaNextForConditionalGeneration (core/memory/llava_next.py,
# trace/_llava_next.py) from the published llava-v1.6 config.json files (tests/data/hf), the CLIP tower frozen; square
# images resized to the best image_grid_pinpoints resolution and cut into 336 px tiles plus a base image. (1)
# llava-v1.6-mistral-7b cut to 2 text layers and a 2-layer tower x full pure-bf16 (the projector and image_newline
# trained) / LoRA / QLoRA NF4 (kbit_prep off) x checkpointing off / on x b1 s256 one 672 px image (5 tiles, 2,928
# image tokens) / b2 s128 two 336 px images (3 tiles and 1,176 tokens each); full pure-bf16 with checkpointing runs
# the whole 32-layer text model (a 2-layer cut is the text estimate's known embedding-backward over-estimate, not
# the image side). (2) The image side as the peak: the published 24-layer tower under a toy language model (2
# layers of width 256, a 1,000-token vocabulary) x the three methods x checkpointing x b1 s64 one 672 px image /
# b1 s32 two 1000 px images (each to the 672 x 672 pinpoint: 5 tiles, 2,928 tokens). (3) llava-v1.6-34b and
# vicuna-13b cut to 2 text layers (LoRA, checkpointing on and off, one 672 px image). (4) Non-square images
# (--image-width): 1000 x 500 under the toy language model and 500 x 1000 on the mistral cut, full / LoRA x
# checkpointing. (5) --train-vision (full pure-bf16, the tower trained over every tile): the toy language model at both
# toy shapes and 1000 x 500, the mistral cut (32 text layers with checkpointing) at both shapes, checkpointing off /
# on. (6) LoRA / QLoRA on the tower (all-linear, named targets) under the toy language model, checkpointing off / on.
# The default q_proj, v_proj of (1)-(4) reach the tower too (memory/vision.py clip_lora_targets). 54 cases, written to
# accuracy_vlm3.{json,md}.
LLAVA_NEXT_SHAPES = ({"batch_size": 1, "seq_len": 256, "images": 1, "image_size": 672},
                     {"batch_size": 2, "seq_len": 128, "images": 2, "image_size": 336})
LLAVA_NEXT_TOY_SHAPES = ({"batch_size": 1, "seq_len": 64, "images": 1, "image_size": 672},
                         {"batch_size": 1, "seq_len": 32, "images": 2, "image_size": 1000})


def llava_next_grid() -> list[dict[str, Any]]:
    cases = []
    for label, kw in VLM_RUNS:
        for shape in LLAVA_NEXT_SHAPES:
            tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} {shape['image_size']}px"
            for gc in (False, True):
                whole = kw["method"] == "full" and gc
                model = "llavanext:llava-v1.6-mistral-7b-hf:32:2" if whole else "llavanext:llava-v1.6-mistral-7b-hf:2:2"
                cut = "32 text layers, 2-layer tower" if whole else "2 text layers, 2-layer tower"
                cases.append({"id": f"llava-v1.6-mistral-7b ({cut}) | {label} | {tag} | {'gc' if gc else 'no-gc'}",
                              "model": model, "method": kw["method"],
                              "training": dict(kw, **shape, grad_checkpointing=gc)})
    for label, kw in VLM_RUNS:
        for shape in LLAVA_NEXT_TOY_SHAPES:
            tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} {shape['image_size']}px"
            for gc in (False, True):
                cases.append({"id": f"llava-v1.6-vicuna-7b (24-layer tower, toy text model) | {label} | {tag} | "
                                    f"{'gc' if gc else 'no-gc'}", "model": "llavanext-toy:llava-v1.6-vicuna-7b-hf",
                              "method": kw["method"], "training": dict(kw, **shape, grad_checkpointing=gc)})
    for label, kw in VLM_RUNS[:2]:  # non-square images (--image-width): the unpadded grid and its newlines
        for gc in (False, True):
            cases.append({"id": f"llava-v1.6-vicuna-7b (24-layer tower, toy text model) | {label} | b1 s64 i1 "
                                f"1000x500px | {'gc' if gc else 'no-gc'}",
                          "model": "llavanext-toy:llava-v1.6-vicuna-7b-hf",
                          "method": kw["method"], "training": dict(kw, batch_size=1, seq_len=64, images=1,
                                                                   image_size=1000, image_width=500,
                                                                   grad_checkpointing=gc)})
            depth = 32 if kw["method"] == "full" and gc else 2  # as above: the whole text model for full + gc
            cases.append({"id": f"llava-v1.6-mistral-7b ({depth} text layers, 2-layer tower) | {label} | b2 s128 i1 "
                                f"500x1000px | {'gc' if gc else 'no-gc'}",
                          "model": f"llavanext:llava-v1.6-mistral-7b-hf:{depth}:2",
                          "method": kw["method"], "training": dict(kw, batch_size=2, seq_len=128, images=1,
                                                                   image_size=500, image_width=1000,
                                                                   grad_checkpointing=gc)})
    for config in ("llava-v1.6-34b-hf", "llava-v1.6-vicuna-13b-hf"):
        for gc in (False, True):
            cases.append({"id": f"{config[:-3]} (2 text layers, 2-layer tower) | lora | b1 s256 i1 672px | "
                                f"{'gc' if gc else 'no-gc'}", "model": f"llavanext:{config}:2:2", "method": "lora",
                          "training": dict(VLM_RUNS[1][1], **LLAVA_NEXT_SHAPES[0], grad_checkpointing=gc)})
    # --train-vision (full pure-bf16, the CLIP tower trained over every tile): the published 24-layer tower under the
    # toy language model (the image side the peak) at both toy shapes and 1000 x 500, and the mistral cut (the whole
    # 32-layer text model with checkpointing, as above) at both shapes; checkpointing off / on
    full = VLM_RUNS[0][1]
    for gc in (False, True):
        tag = "gc" if gc else "no-gc"
        for shape in (*LLAVA_NEXT_TOY_SHAPES, {"batch_size": 1, "seq_len": 64, "images": 1, "image_size": 1000,
                                               "image_width": 500}):
            px = f"{shape['image_size']}x{shape['image_width']}px" if "image_width" in shape \
                else f"{shape['image_size']}px"
            cases.append({"id": f"llava-v1.6-vicuna-7b (24-layer tower, toy text model) | full pure-bf16 train-vision"
                                f" | b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} {px} | {tag}",
                          "model": "llavanext-toy:llava-v1.6-vicuna-7b-hf", "method": "full",
                          "training": dict(full, **shape, train_vision=True, grad_checkpointing=gc)})
        for shape in LLAVA_NEXT_SHAPES:
            depth = 32 if gc else 2
            cases.append({"id": f"llava-v1.6-mistral-7b ({depth} text layers, 2-layer tower) | full pure-bf16 "
                                f"train-vision | b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} "
                                f"{shape['image_size']}px | {tag}",
                          "model": f"llavanext:llava-v1.6-mistral-7b-hf:{depth}:2", "method": "full",
                          "training": dict(full, **shape, train_vision=True, grad_checkpointing=gc)})
    # LoRA / QLoRA on the CLIP tower and projector over every tile (memory/vision.py clip_lora_targets; the default
    # q_proj, v_proj of the cases above reach the tower too): all-linear and named targets x LoRA / QLoRA x
    # checkpointing, the published tower under the toy language model, one 672 px image
    for targets, tname in ((("all-linear",), "all-linear"), (CLIP_NAMED, "q/k/v/o_proj,fc1,fc2")):
        for label, kw in VLM_RUNS[1:]:
            for gc in (False, True):
                cases.append({"id": f"llava-v1.6-vicuna-7b (24-layer tower, toy text model) | {label} {tname} | b1 s64 "
                                    f"i1 672px | {'gc' if gc else 'no-gc'}",
                              "model": "llavanext-toy:llava-v1.6-vicuna-7b-hf", "method": kw["method"],
                              "training": dict(kw, **LLAVA_NEXT_TOY_SHAPES[0], lora_targets=targets,
                                               grad_checkpointing=gc)})
    return cases


# The gpt-oss grid (`--grid gptoss`, issue 15; 16 cases): GptOssForCausalLM (memory/activations.py
# _gpt_oss_moe_terms; eager attention with sinks, as transformers runs it: no SDPA path) at two tiny configs built on
# the published gpt-oss-20b config.json (alternating sliding/full layers, attention and expert biases, sinks): 2
# layers x 8 experts top 4, and 4 layers x 4 experts top 2 with 64-wide heads; x full pure-bf16 / LoRA on the
# attention projections (peft finds only q/k/v/o_proj: the experts are Parameters) x checkpointing off / on x
# b2 s256 / b1 s512. The experts run transformers 5.24's default grouped_mm path. Written to accuracy_gptoss.{json,md}.
GPTOSS_SHAPES = {
    "gptoss:h256-l2-e8k4": {"hidden_size": 256, "intermediate_size": 384, "num_hidden_layers": 2,
                            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
                            "num_local_experts": 8, "num_experts_per_tok": 4, "vocab_size": 512, "sliding_window": 64},
    "gptoss:h384-l4-e4k2": {"hidden_size": 384, "intermediate_size": 512, "num_hidden_layers": 4,
                            "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 64,
                            "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 1024,
                            "sliding_window": 128},
}
GPTOSS_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora q,k,v,o", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "k_proj", "v_proj",
                                                                               "o_proj")}),
)


# The gpt-oss QLoRA grid (`--grid gptoss-qlora`, issue 15; 8 cases): the same two shapes, QLoRA NF4 on the attention
# projections (kbit_prep off, as in the other grids) x checkpointing off / on x b2 s256 / b1 s512. From a bf16
# checkpoint (Unsloth's bnb-4bit uploads; the published MXFP4 one refuses a BitsAndBytesConfig: transformers 5.24
# quantizers/auto.py merge_quantization_configs) bitsandbytes replaces the attention's nn.Linear modules only: the
# experts are 3-D Parameters and the router (GptOssTopKRouter) a Parameter, left 16-bit. Written to
# accuracy_gptoss-qlora.{json,md}, its traces to trace_cache_gptoss-qlora.json.
GPTOSS_QLORA = ("qlora nf4 q,k,v,o", {"method": "qlora", "precision": "bf16", "kbit_prep": False,
                                      "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")})


def gptoss_qlora_grid() -> list[dict[str, Any]]:
    label, kw = GPTOSS_QLORA
    return [{"id": f"{model} | {label} | b{b} s{seq} | {'gc' if gc else 'no-gc'}", "model": model, "method": "qlora",
             "training": dict(kw, batch_size=b, seq_len=seq, grad_checkpointing=gc)}
            for model in GPTOSS_SHAPES for b, seq in ((2, 256), (1, 512)) for gc in (False, True)]


def gptoss_grid() -> list[dict[str, Any]]:
    cases = []
    for model in GPTOSS_SHAPES:
        for label, kw in GPTOSS_RUNS:
            for b, seq in ((2, 256), (1, 512)):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b{b} s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=b, seq_len=seq, grad_checkpointing=gc)})
    return cases


# The MoE grid (`--grid moe`, issue 15): the routed mixture-of-experts families transformers 5.24 runs through its
# experts implementation (integrations/moe.py grouped_mm_experts_forward; expert weights are 3-D Parameters), each
# published config.json cut to a tiny shape of the same layout: Mixtral (every layer sparse, experts
# intermediate_size wide), Qwen1.5-MoE (a sigmoid-gated shared expert) and Qwen3-MoE (normalized top-k, q/k norms).
MOE_SHAPES = {
    "moe:mixtral": ("mixtral-8x7b-v0.1", {"hidden_size": 256, "intermediate_size": 384, "num_hidden_layers": 2,
                                         "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 8,
                                         "num_experts_per_tok": 2, "vocab_size": 1024}),
    "moe:qwen2_moe": ("qwen1.5-moe-a2.7b", {"hidden_size": 256, "moe_intermediate_size": 192,
                                           "shared_expert_intermediate_size": 768, "intermediate_size": 768,
                                           "num_hidden_layers": 2, "num_attention_heads": 8,
                                           "num_key_value_heads": 8, "num_experts": 16, "num_experts_per_tok": 4,
                                           "vocab_size": 1024}),
    "moe:qwen3_moe": ("qwen3-30b-a3b", {"hidden_size": 256, "moe_intermediate_size": 128, "intermediate_size": 768,
                                       "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
                                       "head_dim": 64, "num_experts": 16, "num_experts_per_tok": 4,
                                       "vocab_size": 1024}),
    # Qwen1.5-MoE cut narrow with many experts (hidden 64, 48 experts of 32, shared expert 128), so that the router's
    # (tokens, experts) tensors and the shared expert weigh in the peak; and again with a dense bottom layer
    # (mlp_only_layers [0]: a Qwen2MoeMLP of intermediate_size in layer 0)
    "moe:qwen2_moe-narrow": ("qwen1.5-moe-a2.7b", {"hidden_size": 64, "moe_intermediate_size": 32,
                                                  "shared_expert_intermediate_size": 128, "intermediate_size": 128,
                                                  "num_hidden_layers": 4, "num_attention_heads": 4,
                                                  "num_key_value_heads": 4, "num_experts": 48,
                                                  "num_experts_per_tok": 4, "vocab_size": 512}),
    "moe:qwen2_moe-narrow-dense0": ("qwen1.5-moe-a2.7b", {"hidden_size": 64, "moe_intermediate_size": 32,
                                                         "shared_expert_intermediate_size": 128,
                                                         "intermediate_size": 128, "num_hidden_layers": 4,
                                                         "num_attention_heads": 4, "num_key_value_heads": 4,
                                                         "num_experts": 48, "num_experts_per_tok": 4,
                                                         "vocab_size": 512, "mlp_only_layers": [0]}),
    # DeepSeek's grouped routers (n_group > 1): V3's noaux_tc (sigmoid scores, each group's top-2 sum, 4 of 8 groups
    # kept) and V2's group_limited_greedy (softmax, each group's max, 2 of 4 kept), one dense layer under two MoE
    "moe:deepseek_v3": ("deepseek-v3", {"hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 128,
                                       "num_hidden_layers": 3, "first_k_dense_replace": 1, "num_attention_heads": 8,
                                       "num_key_value_heads": 8, "q_lora_rank": 96, "kv_lora_rank": 64,
                                       "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
                                       "n_routed_experts": 64, "num_experts_per_tok": 6, "n_shared_experts": 1,
                                       "n_group": 8, "topk_group": 4, "vocab_size": 1024}),
    "moe:deepseek_v2": ("deepseek-v2-lite", {"hidden_size": 256, "intermediate_size": 768,
                                            "moe_intermediate_size": 128, "num_hidden_layers": 3,
                                            "first_k_dense_replace": 1, "num_attention_heads": 8,
                                            "num_key_value_heads": 8, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
                                            "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 32,
                                            "num_experts_per_tok": 4, "n_shared_experts": 2, "n_group": 4,
                                            "topk_group": 2, "topk_method": "group_limited_greedy",
                                            "vocab_size": 1024}),
}


MOE_NARROW = ("moe:qwen2_moe-narrow", "moe:qwen2_moe-narrow-dense0")  # their own runs (moe_grid)
MOE_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
    ("lora q,k,v,o", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")}),
    ("qlora all-linear", {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False}),
)


# The Llama 4 grid (`--grid llama4`, issue 15): the published Scout and Maverick text_configs cut to tiny shapes
# of Scout's proportions (GQA 4:1, head_dim 64, a NoPE layer every 4th, chunked attention in the RoPE layers with a
# chunk shorter than the sequence, so the chunked mask is built), with their own MoE layouts (Scout: every layer, L2
# q/k norm; Maverick: every other layer beside a dense MLP twice the expert width, no q/k norm) x full / LoRA on
# every Linear but the router ("all-linear" in the ids) / LoRA q,k,v,o / QLoRA on those Linears x checkpointing
# off / on at b2 s256 sdpa, and full and LoRA again at b1 s512 sdpa and b2 s256 eager (32 cases); with
# LLAMA4_PUBLISHED below, 40.
LLAMA4_SHAPES = {
    "llama4:scout": ("llama-4-scout-17b-16e-instruct",
                     {"hidden_size": 256, "intermediate_size": 192, "intermediate_size_mlp": 384,
                      "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64,
                      "num_local_experts": 4, "attention_chunk_size": 128, "vocab_size": 1024,
                      "max_position_embeddings": 4096}),
    "llama4:maverick": ("llama-4-maverick-17b-128e-instruct",
                        {"hidden_size": 256, "intermediate_size": 192, "intermediate_size_mlp": 384,
                         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64,
                         "num_local_experts": 8, "attention_chunk_size": 128, "vocab_size": 1024,
                         "max_position_embeddings": 4096}),
}


_L4_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA4_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (  # all-linear takes the router, which peft cannot wrap
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": _L4_ALL}),
    ("lora q,k,v,o", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")}),
    ("qlora all-linear", {"method": "qlora", "precision": "bf16", "lora_targets": _L4_ALL, "kbit_prep": False}),
)


# The published configs at their own widths (hidden 5120, 16 / 128 experts of 8192), cut to 4 layers as the families
# grid cuts every model_type (3 RoPE layers and a NoPE one; Maverick's two dense and two MoE): full pure-bf16 b1 s512
# sdpa (below the 8,192-token chunk: no mask) and LoRA on every Linear but the router b1 s1024 eager, each without
# and with checkpointing (8 cases).
LLAMA4_PUBLISHED = {"llama4:scout (4 layers)": "llama-4-scout-17b-16e-instruct",
                    "llama4:maverick (4 layers)": "llama-4-maverick-17b-128e-instruct"}
LLAMA4_PUBLISHED_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16 | b1 s512 | sdpa", {"method": "full", "precision": "pure-bf16", "batch_size": 1, "seq_len": 512}),
    ("lora all-linear | b1 s1024 | eager", {"method": "lora", "precision": "bf16", "lora_targets": _L4_ALL,
                                           "batch_size": 1, "seq_len": 1024, "attention": "eager"}),
)


def llama4_grid() -> list[dict[str, Any]]:
    cases = []
    for model in LLAMA4_PUBLISHED:
        for label, kw in LLAMA4_PUBLISHED_RUNS:
            for gc in (False, True):
                cases.append({"id": f"{model} | {label} | {'gc' if gc else 'no-gc'}", "model": model,
                              "method": kw["method"], "training": dict(kw, grad_checkpointing=gc)})
    for model in LLAMA4_SHAPES:
        for label, kw in LLAMA4_RUNS:
            shapes = [(2, 256, "sdpa")] + ([(1, 512, "sdpa"), (2, 256, "eager")] if label in (
                "full pure-bf16", "lora all-linear") else [])
            for b, seq, attention in shapes:
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b{b} s{seq} | {attention} | {'gc' if gc else 'no-gc'}",
                                  "model": model, "method": kw["method"],
                                  "training": dict(kw, batch_size=b, seq_len=seq, attention=attention,
                                                   grad_checkpointing=gc)})
    return cases


def moe_grid() -> list[dict[str, Any]]:
    """3 families x 4 runs x checkpointing off / on at b2 s256, and the full and all-linear LoRA runs again at
    b1 s1024 and with eager attention at b2 s512 (48 cases); DeepSeek-V3 and V2 with expert groups: 4 runs x
    checkpointing off / on at b2 s256 (LoRA on MLA's projections for q,k,v,o), and all-linear LoRA again with eager
    attention (20 cases); the narrow Qwen1.5-MoE toys, without and with a dense bottom layer: full and LoRA q,k,v,o
    x b2 s512 / b1 s1024 x checkpointing off / on (16 cases)."""
    cases = []
    for model in MOE_SHAPES:
        if model in MOE_NARROW:
            continue
        for label, kw in MOE_RUNS:
            if model.startswith("moe:deepseek") and label == "lora q,k,v,o":  # MLA: its own attention projections
                q = ("q_a_proj", "q_b_proj") if model == "moe:deepseek_v3" else ("q_proj",)
                label, kw = "lora MLA attention", dict(kw, lora_targets=(*q, "kv_a_proj_with_mqa", "kv_b_proj",
                                                                         "o_proj"))
            more = [(2, 256, "eager")] if label == "lora all-linear" else []
            if not model.startswith("moe:deepseek"):
                more = [(1, 1024, "sdpa"), (2, 512, "eager")] if label in ("full pure-bf16", "lora all-linear") else []
            shapes = [(2, 256, "sdpa")] + more
            for b, seq, attention in shapes:
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b{b} s{seq} | {attention} | {'gc' if gc else 'no-gc'}",
                                  "model": model, "method": kw["method"],
                                  "training": dict(kw, batch_size=b, seq_len=seq, attention=attention,
                                                   grad_checkpointing=gc)})
    for model in MOE_NARROW:
        for label, kw in MOE_RUNS:
            if label not in ("full pure-bf16", "lora q,k,v,o"):
                continue
            for b, seq in ((2, 512), (1, 1024)):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b{b} s{seq} | sdpa | {'gc' if gc else 'no-gc'}",
                                  "model": model, "method": kw["method"],
                                  "training": dict(kw, batch_size=b, seq_len=seq, grad_checkpointing=gc)})
    return cases


# The router aux loss grid (`--grid aux`, issues 13 and 15): output_router_logits true (the config.json key,
# --router-aux-loss), so that the ForCausalLM adds load_balancing_loss_func over every MoE layer's router logits
# (memory/router_aux.py). Published MoE config.json files cut to narrow shapes with many experts, so that the
# (tokens, experts) logits per layer weigh in the peak: Mixtral (every layer sparse), Qwen3-MoE (normalized top-k) and
# gpt-oss (a router bias, eager attention with sinks); full fine-tuning and LoRA, checkpointing off / on, at b2 s512
# and b1 s1024 (gpt-oss: b2 s256 and b4 s128). Written to accuracy_aux.{json,md}. (Qwen1.5-MoE at this narrow
# shape, hidden 64 and 48 experts, is left out: its LoRA run with checkpointing is -4.6 % under without the aux loss
# already, a gap of the MoE layer's rerun of its own; the aux loss adds exactly the traced 4 x tokens x 48 x 2 B
# there, full and LoRA, with or without checkpointing.)
AUX_SHAPES = {
    "aux:mixtral": ("mixtral-8x7b-v0.1", {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 4,
                                         "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 32,
                                         "num_experts_per_tok": 2, "vocab_size": 512,
                                         "output_router_logits": True}),
    "aux:qwen3_moe": ("qwen3-30b-a3b", {"hidden_size": 64, "moe_intermediate_size": 32, "intermediate_size": 128,
                                       "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                                       "head_dim": 16, "num_experts": 64, "num_experts_per_tok": 4,
                                       "vocab_size": 512, "output_router_logits": True}),
    "aux:gpt_oss": ("gpt-oss-20b", {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 4,
                                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                                   "num_local_experts": 32, "num_experts_per_tok": 4, "vocab_size": 512,
                                   "sliding_window": 64, "output_router_logits": True,
                                   "layer_types": ["sliding_attention", "full_attention"] * 2}),
}
AUX_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora q,k,v,o", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")}),
)


def aux_grid() -> list[dict[str, Any]]:
    """3 families x 2 runs x 2 shapes x checkpointing off / on (24 cases); gpt-oss at b2 s256 and b4 s128 (at s512
    and longer its eager attention over a 64-token window is +6 to +15 % over without the aux loss already, a gap of
    its own; the aux loss adds exactly the traced 4 x tokens x 32 x 2 B there too)."""
    cases = []
    for model in AUX_SHAPES:
        for label, kw in AUX_RUNS:
            for b, seq in ((2, 256), (4, 128)) if model == "aux:gpt_oss" else ((2, 512), (1, 1024)):
                for gc in (False, True):
                    cases.append({"id": f"{model} | {label} | b{b} s{seq} | {'gc' if gc else 'no-gc'}", "model": model,
                                  "method": kw["method"],
                                  "training": dict(kw, batch_size=b, seq_len=seq, grad_checkpointing=gc)})
    return cases


# The QLoRA dequantization grid (`--grid dequant`, issue 15; 24 cases): published dense models whose hidden size
# makes the dequantized 16-bit weight of a block Linear (bitsandbytes MatMul4Bit, forward and backward) the largest
# temporary, cut to 4 layers with a 2,048-token vocabulary so that the head does not hide it: Llama-3.1-8B, Mistral-7B
# and Qwen2.5-7B x QLoRA all-linear NF4 (kbit_prep off) x checkpointing off / on x sdpa / eager, at b1 s128 and
# b2 s256. Written to accuracy_dequant.{json,md}.
DEQUANT_MODELS = ("llama-3.1-8b", "mistral-7b", "qwen2.5-7b")
DEQUANT_SHAPES = ({"batch_size": 1, "seq_len": 128}, {"batch_size": 2, "seq_len": 256})


def dequant_grid() -> list[dict[str, Any]]:
    cases = []
    for model in DEQUANT_MODELS:
        for shape in DEQUANT_SHAPES:
            for gc in (False, True):
                for attention in ("sdpa", "eager"):
                    cases.append({"id": f"{model} (4 layers, vocab 2048) | qlora nf4 | b{shape['batch_size']} "
                                        f"s{shape['seq_len']} | {'gc' if gc else 'no-gc'} | {attention}",
                                  "model": f"dequant:{model}", "method": "qlora",
                                  "training": dict(METHODS[4][1], **shape, grad_checkpointing=gc, attention=attention)})
    return cases


# The classics grid (`--grid classics`, issue 15; 36 cases): torchvision's ResNet-18 and ResNet-50 (memory/convnet.py,
# traced with trace/_classic.py's plain-PyTorch ResNet) at 112 and 224 pixels x batch 1 / 8 x fp32 AdamW, fp32 SGD
# with momentum and amp-bf16 AdamW; ResNeXt-50 32x4d and Wide ResNet-50-2 once each (amp-fp16 / amp-bf16); the
# word_language_model LSTM (memory/rnn.py) at 2 x 200 and 2 x 650, untied and tied, at batch 20 x 35 tokens and
# batch 32 x 70, AdamW and SGD; ResNet-50 and the tied 2 x 200 LSTM with --grad-accum 2. Written to
# accuracy_classics.{json,md}.
CLASSIC_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fp32 adamw", {"precision": "fp32", "optimizer": "adamw"}),
    ("fp32 sgd-momentum", {"precision": "fp32", "optimizer": "sgd-momentum"}),
    ("amp-bf16 adamw", {"precision": "amp-bf16", "optimizer": "adamw"}),
)


def classics_grid() -> list[dict[str, Any]]:
    cases = []
    for model in ("resnet-18", "resnet-50"):
        for size in (112, 224):
            for batch in (1, 8):
                for label, kw in CLASSIC_RUNS:
                    cases.append({"id": f"{model} | {label} | b{batch} {size}px", "model": model, "method": "full",
                                  "training": dict(kw, batch_size=batch, image_size=size)})
    for model, precision in (("resnext50-32x4d", "amp-fp16"), ("wide-resnet50-2", "amp-bf16")):
        cases.append({"id": f"{model} | {precision} adamw | b8 112px", "model": model, "method": "full",
                      "training": {"precision": precision, "optimizer": "adamw", "batch_size": 8, "image_size": 112}})
    for model in ("lstm-lm-200", "lstm-lm-200-tied", "lstm-lm-650", "lstm-lm-650-tied"):
        for batch, seq, opt in ((20, 35, "adamw"), (32, 70, "sgd")):
            cases.append({"id": f"{model} | fp32 {opt} | b{batch} s{seq}", "model": model, "method": "full",
                          "training": {"precision": "fp32", "optimizer": opt, "batch_size": batch, "seq_len": seq}})
    # gradient accumulation: each new gradient is computed beside the .grad it is added into
    cases.append({"id": "resnet-50 | amp-bf16 adamw | b4 112px accum 2", "model": "resnet-50", "method": "full",
                  "training": {"precision": "amp-bf16", "batch_size": 4, "image_size": 112, "grad_accum": 2}})
    cases.append({"id": "lstm-lm-200-tied | fp32 adamw | b20 s35 accum 2", "model": "lstm-lm-200-tied",
                  "method": "full",
                  "training": {"precision": "fp32", "batch_size": 20, "seq_len": 35, "grad_accum": 2}})
    return cases

# The Gemma 3 multimodal grid (`--grid vlm2`, issue 15; 31 cases): Gemma3ForConditionalGeneration (memory/vision.py
# _siglip_estimate) from the published google/gemma-3-4b-it config.json (tests/data/hf; its 262k vocabulary, widths,
# SigLIP so400m at 896 px: 4,096 patches and 256 image tokens per image), the language model cut to 4 layers (3
# sliding, 1 global) and the tower to 4 (every tower layer saves the same set; a full-depth trace takes minutes
# per case on two CPU cores), with the processor's token_type_ids (bidirectional image blocks in the masks):
# full pure-bf16 (the projector trained) / LoRA (q_proj, v_proj of the language model) / QLoRA NF4 (without
# prepare_model_for_kbit_training's fp32 casts) x sdpa / eager x checkpointing off / on at batch 1 x 512 text
# tokens x one image (772 tokens in the language model); the three methods under sdpa at batch 2 x 256 text tokens
# x two images per sample (776 tokens); LoRA at 1,024 text tokens x two images (1,544 tokens: past the 1,024
# sliding window); --train-vision (full, sdpa) with and without checkpointing at both shapes; amp-bf16 LoRA without
# checkpointing at both shapes; four images under 128
# text tokens (LoRA with checkpointing, QLoRA eager, --train-vision with checkpointing); gemma-3-12b-it cut the
# same way, LoRA with and without checkpointing. Written to accuracy_vlm2.{json,md}.
# Names only the language model has (Gemma 3's and Llama's o_proj / MLP; the SigLIP tower has out_proj, fc1, fc2):
# LoRA that leaves the tower frozen (memory/siglip_lora.py)
TEXT_ONLY_TARGETS = ("o_proj", "gate_proj", "up_proj", "down_proj")
VLM2_SHAPES = ({"batch_size": 1, "seq_len": 512, "images": 1}, {"batch_size": 2, "seq_len": 256, "images": 2})
VLM2_LAYERS = 4


def vlm2_grid() -> list[dict[str, Any]]:
    cases = []
    model = f"gemma3vlm:gemma-3-4b-it:{VLM2_LAYERS}"
    for label, kw in VLM_RUNS:
        for attention in ("sdpa", "eager"):
            for gc in (False, True):
                cases.append({"id": f"gemma-3-4b-it | {label} | b1 s512 i1 | {attention} | {'gc' if gc else 'no-gc'}",
                              "model": model, "method": kw["method"],
                              "training": dict(kw, **VLM2_SHAPES[0], attention=attention, grad_checkpointing=gc)})
    for label, kw in VLM_RUNS:
        for gc in (False, True):
            cases.append({"id": f"gemma-3-4b-it | {label} | b2 s256 i2 | sdpa | {'gc' if gc else 'no-gc'}",
                          "model": model, "method": kw["method"],
                          "training": dict(kw, **VLM2_SHAPES[1], grad_checkpointing=gc)})
    for shape in VLM2_SHAPES:
        tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}"
        for gc in (False, True):
            mark = "gc" if gc else "no-gc"
            cases.append({"id": f"gemma-3-4b-it | full pure-bf16 train-vision | {tag} | sdpa | {mark}",
                          "model": model, "method": "full",
                          "training": dict(VLM_RUNS[0][1], **shape, train_vision=True, grad_checkpointing=gc)})
    for gc in (False, True):
        cases.append({"id": f"gemma-3-4b-it | lora | b1 s1024 i2 | sdpa | {'gc' if gc else 'no-gc'}",
                      "model": model, "method": "lora",
                      "training": dict(VLM_RUNS[1][1], batch_size=1, seq_len=1024, images=2, grad_checkpointing=gc)})
    for shape in VLM2_SHAPES:  # amp-bf16 LoRA (fp32 residual streams); with checkpointing the language model's own
        # estimate counts autocast weight copies in the forward that the tracer does not see (as in the vlm grid)
        tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}"
        # (targets the tower lacks: tower adapters under autocast are refused, memory/siglip_lora.py check)
        cases.append({"id": f"gemma-3-4b-it | lora o,gate,up,down amp-bf16 | {tag} | sdpa | no-gc", "model": model,
                      "method": "lora", "training": dict(shape, method="lora", precision="amp-bf16",
                                                         lora_targets=TEXT_ONLY_TARGETS)})
    # image-heavy: four images per sample under 128 text tokens (1,168 tokens, 16,384 patches per sample)
    for label, kw, extra in (("lora", VLM_RUNS[1][1], {"grad_checkpointing": True}),
                             ("qlora", VLM_RUNS[2][1], {"attention": "eager"}),
                             ("full pure-bf16 train-vision", VLM_RUNS[0][1], {"train_vision": True,
                                                                             "grad_checkpointing": True})):
        attention = extra.get("attention", "sdpa")
        cases.append({"id": f"gemma-3-4b-it | {label} | b1 s128 i4 | {attention} | "
                            f"{'gc' if extra.get('grad_checkpointing') else 'no-gc'}",
                      "model": model, "method": kw["method"],
                      "training": dict(kw, batch_size=1, seq_len=128, images=4, **extra)})
    for gc in (False, True):
        cases.append({"id": f"gemma-3-12b-it | lora | b1 s512 i1 | sdpa | {'gc' if gc else 'no-gc'}",
                      "model": f"gemma3vlm:gemma-3-12b-it:{VLM2_LAYERS}", "method": "lora",
                      "training": dict(VLM_RUNS[1][1], **VLM2_SHAPES[0], grad_checkpointing=gc)})
    cases += tower_lora_cases("gemma3vlm-toy:gemma-3-4b-it:2", "gemma-3-4b-it toy-lm", TOWER_LORA_SHAPES,
                              ("q_proj", "out_proj", "fc1", "fc2"))
    # the tower trained whole under the toy language model (its backward the peak: a layer's gradients come from fc2
    # down, memory/vision.py _siglip_estimate), full and with the language model frozen (freeze_language_model)
    for label, kw in (("full pure-bf16 train-vision", dict(VLM_RUNS[0][1])),
                      ("frozen-lm pure-bf16 train-vision", {"method": "freeze", "precision": "pure-bf16",
                                                            "train_layers": (), "train_modules": ("projector",)})):
        for gc in (False, True):
            cases.append({"id": f"gemma-3-4b-it toy-lm | {label} | b1 s128 i1 | sdpa | {'gc' if gc else 'no-gc'}",
                          "model": "gemma3vlm-toy:gemma-3-4b-it:2", "method": kw["method"],
                          "training": dict(kw, batch_size=1, seq_len=128, images=1, train_vision=True,
                                           grad_checkpointing=gc)})
    return cases


# Tower LoRA (memory/siglip_lora.py, issue 15): peft matches target names over the whole model, so the default
# q_proj, v_proj and all-linear adapt the SigLIP tower of Gemma 3 / Idefics3 too (and all-linear Idefics3's
# connector). On a toy language model (2 layers, width 256, 1,000-token vocabulary) where the image side is the
# peak, the tower cut to 2 layers: LoRA with the default targets and all-linear x checkpointing off / on at two
# shapes; QLoRA all-linear x checkpointing; named tower targets with 16-bit adapters (lora_A saves the module's own
# input, not an fp32 copy) x checkpointing; eager LoRA x checkpointing at the first shape.
TOWER_LORA_SHAPES = ({"batch_size": 1, "seq_len": 128, "images": 1}, {"batch_size": 2, "seq_len": 64, "images": 1})


def tower_lora_cases(model: str, name: str, shapes: tuple[dict[str, Any], ...],
                     named: tuple[str, ...]) -> list[dict[str, Any]]:
    cases = []

    def add(label: str, kw: dict[str, Any], shape: dict[str, Any], attention: str = "sdpa") -> None:
        tag = f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}" + (
            f" {shape['image_size']}x{shape['image_width']}" if "image_width" in shape else "")
        for gc in (False, True):
            cases.append({"id": f"{name} | {label} | {tag} | {attention} | {'gc' if gc else 'no-gc'}",
                          "model": model, "method": kw["method"],
                          "training": dict(kw, **shape, attention=attention, grad_checkpointing=gc)})

    for shape in shapes:
        add("lora q_proj,v_proj (tower too)", VLM_RUNS[1][1], shape)
        add("lora all-linear", dict(VLM_RUNS[1][1], lora_targets=("all-linear",)), shape)
    add("qlora all-linear", dict(VLM_RUNS[2][1], lora_targets=("all-linear",)), shapes[0])
    add(f"lora {','.join(named)} bf16 adapters", dict(VLM_RUNS[1][1], lora_targets=named, adapter_dtype="bf16"),
        shapes[0])
    add("lora q_proj,v_proj (tower too)", VLM_RUNS[1][1], shapes[0], attention="eager")
    return cases


# The Llama 4 multimodal grid (`--grid llama4v`, issue 15; 65 cases): Llama4ForConditionalGeneration
# (memory/llama4v.py, trace/_llama4v.py) from the published Scout / Maverick config.json files (tests/data/hf) with the
# Llama 4 tower at its own widths (1408 wide, 16 heads, MLP 5632, 336 px tiles of 14 px patches: 577 rows a tile, the
# pixel-shuffle adapter to 144 features of 4096) cut to 2 layers, and the text model cut to the llama4 grid's tiny
# shapes (LLAMA4_SHAPES: Scout's every-layer MoE with L2 q/k norm, Maverick's interleaved dense layers), where the
# image side is most of the step:
# - Scout: full pure-bf16 (the projector trained) / LoRA q,k,v,o / QLoRA NF4 (without prepare_model_for_kbit_training)
#   x checkpointing off / on, at batch 1 x 128 text tokens x one image of one tile (the default size) and at batch
#   2 x 64 text tokens x one 300 x 800 px image (1 x 3 tiles and the global one: 4 tiles, 582 tokens);
# - Maverick: the same three methods x checkpointing at the first shape;
# - Scout with two images per sample (LoRA, checkpointing off / on), and the published text widths (hidden 5120, 16
#   experts of 8192) cut to 4 layers, LoRA with checkpointing off / on at the first shape;
# - Scout: LoRA / QLoRA q_proj,v_proj,fc1,fc2 (the tower's attention and MLP and the pixel-shuffle adapter's MLP
#   adapted too) x checkpointing off / on at both shapes. Every LoRA case's targets reach the tower (peft matches
#   them over the whole model);
# - full pure-bf16 --train-vision (the tower trained) x checkpointing off / on: Scout at both shapes, Maverick at
#   the first;
# - LoRA pure-bf16 on gate_proj,up_proj,down_proj (the language model's only) --train-vision (the tower's own weights
#   unfrozen beside the adapters) x checkpointing off / on: Scout at both shapes, Maverick at the first;
# - --attention eager: the frozen tower (full pure-bf16 and LoRA gate,up,down at both shapes, QLoRA gate,up,down and
#   Maverick full at the first) and the trained one (full --train-vision at both shapes, LoRA --train-vision at the
#   first), checkpointing off / on;
# - amp-bf16 (autocast over fp32 weights) with the tower frozen, without checkpointing: Scout full and LoRA
#   gate,up,down at both shapes, Maverick full at the first.
# Written to accuracy_llama4v.{json,md}.
# Names only Llama 4's language model has (its shared experts' Llama4TextMLP; the tower's Linears are q/k/v/o_proj and
# fc1 / fc2): LoRA that leaves the tower frozen (memory/llama4v.py lora_targets)
LLAMA4_TEXT_ONLY = ("gate_proj", "up_proj", "down_proj")
LLAMA4V_SHAPES = ({"batch_size": 1, "seq_len": 128, "images": 1},
                  {"batch_size": 2, "seq_len": 64, "images": 1, "image_size": 300, "image_width": 800})


def llama4v_grid() -> list[dict[str, Any]]:
    cases = []

    def tag(shape: dict[str, Any]) -> str:
        size = f" {shape['image_size']}x{shape['image_width']}" if "image_width" in shape else ""
        return f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}{size}"

    def add(model: str, name: str, label: str, kw: dict[str, Any], shape: dict[str, Any],
            attention: str = "sdpa", gcs: tuple[bool, ...] = (False, True)) -> None:
        for gc in gcs:
            cases.append({"id": f"{name} | {label} | {tag(shape)} | {attention} | {'gc' if gc else 'no-gc'}",
                          "model": model, "method": kw["method"],
                          "training": dict(kw, **shape, grad_checkpointing=gc)})

    for shape in LLAMA4V_SHAPES:
        for label, kw in VLM_RUNS:
            add("llama4v:scout", "scout tiny-lm", label, kw, shape)
    for label, kw in VLM_RUNS:
        add("llama4v:maverick", "maverick tiny-lm", label, kw, LLAMA4V_SHAPES[0])
    add("llama4v:scout", "scout tiny-lm", "lora", VLM_RUNS[1][1], dict(LLAMA4V_SHAPES[0], images=2))
    add("llama4v:scout (4 layers)", "scout 4 layers", "lora", VLM_RUNS[1][1], LLAMA4V_SHAPES[0])
    # LoRA / QLoRA whose named targets reach the tower's MLP and the pixel-shuffle adapter's too (q_proj, v_proj, fc1,
    # fc2: peft matches them over the whole model, memory/llama4v.py lora_targets; the default q_proj,v_proj cases above
    # reach the tower's attention), both shapes, checkpointing off / on
    for shape in LLAMA4V_SHAPES:
        for label, kw in VLM_RUNS[1:]:
            add("llama4v:scout", "scout tiny-lm", f"{label} q_proj,v_proj,fc1,fc2",
                dict(kw, lora_targets=("q_proj", "v_proj", "fc1", "fc2")), shape)
    # --train-vision (full fine-tuning, the tower and its pixel-shuffle adapter trained too), both shapes (1 and 4
    # tiles), checkpointing off / on, on Scout and on Maverick at the first shape
    for shape in LLAMA4V_SHAPES:
        add("llama4v:scout", "scout tiny-lm", "full pure-bf16 train-vision", dict(VLM_RUNS[0][1], train_vision=True),
            shape)
    add("llama4v:maverick", "maverick tiny-lm", "full pure-bf16 train-vision",
        dict(VLM_RUNS[0][1], train_vision=True), LLAMA4V_SHAPES[0])
    # --train-vision under LoRA (the tower's own weights unfrozen beside the language model's adapters, on targets only
    # the language model has; pure-bf16: torch.optim's states in the weights' dtype, as the tracer runs it), both
    # shapes on Scout, the first on Maverick, checkpointing off / on
    tv_lora = {"method": "lora", "precision": "pure-bf16", "lora_targets": LLAMA4_TEXT_ONLY, "train_vision": True}
    for shape in LLAMA4V_SHAPES:
        add("llama4v:scout", "scout tiny-lm", "lora pure-bf16 gate,up,down train-vision", tv_lora, shape)
    add("llama4v:maverick", "maverick tiny-lm", "lora pure-bf16 gate,up,down train-vision", tv_lora,
        LLAMA4V_SHAPES[0])
    # eager attention in the frozen tower (Llama4VisionAttention's vision_eager_attention_forward; the language model's
    # eager attention as the llama4 grid's): full fine-tuning and LoRA / QLoRA on targets only the language model has
    # (gate_proj, up_proj, down_proj: its shared experts), both shapes for full and LoRA, checkpointing off / on
    for shape in LLAMA4V_SHAPES:
        for label, kw in VLM_RUNS[:2]:
            kw = dict(kw, attention="eager", **({"lora_targets": LLAMA4_TEXT_ONLY} if kw["method"] != "full" else {}))
            add("llama4v:scout", "scout tiny-lm", label + (" gate,up,down" if kw["method"] != "full" else ""), kw,
                shape, attention="eager")
    add("llama4v:scout", "scout tiny-lm", "qlora gate,up,down",
        dict(VLM_RUNS[2][1], attention="eager", lora_targets=LLAMA4_TEXT_ONLY), LLAMA4V_SHAPES[0], attention="eager")
    add("llama4v:maverick", "maverick tiny-lm", "full pure-bf16", dict(VLM_RUNS[0][1], attention="eager"),
        LLAMA4V_SHAPES[0], attention="eager")
    # eager attention in a trained tower (--train-vision: every layer saves its softmax output), full on both shapes,
    # LoRA (the tower's own weights unfrozen) on the first
    for shape in LLAMA4V_SHAPES:
        add("llama4v:scout", "scout tiny-lm", "full pure-bf16 train-vision",
            dict(VLM_RUNS[0][1], train_vision=True, attention="eager"), shape, attention="eager")
    add("llama4v:scout", "scout tiny-lm", "lora pure-bf16 gate,up,down train-vision", dict(tv_lora, attention="eager"),
        LLAMA4V_SHAPES[0], attention="eager")
    # autocast (amp-bf16: fp32 weights, bf16 compute) with the tower frozen and no checkpointing (with it, refused):
    # full fine-tuning on both shapes and Maverick's first, LoRA on targets only the language model has on both
    for shape in LLAMA4V_SHAPES:
        add("llama4v:scout", "scout tiny-lm", "full amp-bf16", {"method": "full", "precision": "amp-bf16"}, shape,
            gcs=(False,))
        add("llama4v:scout", "scout tiny-lm", "lora amp-bf16 gate,up,down",
            {"method": "lora", "precision": "amp-bf16", "lora_targets": LLAMA4_TEXT_ONLY}, shape, gcs=(False,))
    add("llama4v:maverick", "maverick tiny-lm", "full amp-bf16", {"method": "full", "precision": "amp-bf16"},
        LLAMA4V_SHAPES[0], gcs=(False,))
    return cases


# The Idefics3 / SmolVLM grid (`--grid idefics`, issue 15; 27 cases): Idefics3ForConditionalGeneration
# (memory/idefics3.py, trace/_idefics3.py) from the published config.json files (tests/data/hf), both stacks cut to 2
# layers (every layer of the tower and of the language model saves the same set):
# - SmolVLM-256M-Instruct (SigLIP base at 512 px tiles, 1,024 patches, pixel shuffle 4: 64 tokens a tile; SmolLM2
#   135M's widths and 49,280-token vocabulary): full pure-bf16 (the connector trained) / LoRA / QLoRA NF4 (without
#   prepare_model_for_kbit_training) x checkpointing off / on, at batch 1 x 128 text tokens x one square image
#   (4 x 4 tiles and the global one: 17 tiles, 1,255 tokens) and at batch 2 x 64 text tokens x one 300 x 900 px
#   image (2 x 4 tiles + 1: 9 tiles, 661 tokens); LoRA eager with and without checkpointing;
# - the same tower and connector on a toy language model (2 layers, width 256, 1,000-token vocabulary), where the
#   image side is the peak: full / LoRA x checkpointing, --train-vision with and without checkpointing, amp-bf16
#   LoRA, eager LoRA with checkpointing;
# - SmolVLM-Instruct (so400m at 384 px over 14 px patches: 27 a side, pixel shuffle 3) and Idefics3-8B-Llama3
#   (so400m at 364 px, scale 2; Llama 3.1 8B's widths and 128k vocabulary): LoRA with and without checkpointing,
#   and full fine-tuning of SmolVLM-Instruct. Written to accuracy_idefics.{json,md}.
IDEFICS_SHAPES = ({"batch_size": 1, "seq_len": 128, "images": 1},
                  {"batch_size": 2, "seq_len": 64, "images": 1, "image_size": 300, "image_width": 900})


def idefics_grid() -> list[dict[str, Any]]:
    cases = []

    def tag(shape: dict[str, Any]) -> str:
        size = f" {shape['image_size']}x{shape['image_width']}" if "image_width" in shape else ""
        return f"b{shape['batch_size']} s{shape['seq_len']} i{shape['images']}{size}"

    small = "idefics:smolvlm-256m-instruct"
    for shape in IDEFICS_SHAPES:
        for label, kw in VLM_RUNS:
            for gc in (False, True):
                cases.append({"id": f"smolvlm-256m | {label} | {tag(shape)} | sdpa | {'gc' if gc else 'no-gc'}",
                              "model": small, "method": kw["method"],
                              "training": dict(kw, **shape, grad_checkpointing=gc)})
    for gc in (False, True):
        cases.append({"id": f"smolvlm-256m | lora | {tag(IDEFICS_SHAPES[0])} | eager | {'gc' if gc else 'no-gc'}",
                      "model": small, "method": "lora",
                      "training": dict(VLM_RUNS[1][1], **IDEFICS_SHAPES[0], attention="eager",
                                       grad_checkpointing=gc)})
    toy = "idefics-toy:smolvlm-256m-instruct"
    shape = IDEFICS_SHAPES[0]
    for label, kw, extra in (
            ("full pure-bf16", VLM_RUNS[0][1], {}), ("full pure-bf16", VLM_RUNS[0][1], {"grad_checkpointing": True}),
            ("lora", VLM_RUNS[1][1], {}), ("lora", VLM_RUNS[1][1], {"grad_checkpointing": True}),
            ("full pure-bf16 train-vision", VLM_RUNS[0][1], {"train_vision": True}),
            ("full pure-bf16 train-vision", VLM_RUNS[0][1], {"train_vision": True, "grad_checkpointing": True}),
            ("lora o,gate,up,down amp-bf16", {"method": "lora", "precision": "amp-bf16",
                                              "lora_targets": TEXT_ONLY_TARGETS}, {}),
            ("lora", VLM_RUNS[1][1], {"attention": "eager", "grad_checkpointing": True})):
        attention = extra.get("attention", "sdpa")
        cases.append({"id": f"smolvlm-256m toy-lm | {label} | {tag(shape)} | {attention} | "
                            f"{'gc' if extra.get('grad_checkpointing') else 'no-gc'}",
                      "model": toy, "method": kw["method"], "training": dict(kw, **shape, **extra)})
    for config, name, runs in (("smolvlm-instruct", "smolvlm-2.2b", (VLM_RUNS[0], VLM_RUNS[1])),
                               ("idefics3-8b-llama3", "idefics3-8b", (VLM_RUNS[1],))):
        for label, kw in runs:
            for gc in (False, True) if kw["method"] == "lora" else (False,):
                cases.append({"id": f"{name} | {label} | {tag(shape)} | sdpa | {'gc' if gc else 'no-gc'}",
                              "model": f"idefics:{config}", "method": kw["method"],
                              "training": dict(kw, **shape, grad_checkpointing=gc)})
    # (the default-target LoRA toy cases above already adapt the tower: the same runs are not added twice)
    seen = [(c["model"], TrainingSpec(**c["training"])) for c in cases]
    cases += [c for c in tower_lora_cases(toy, "smolvlm-256m toy-lm", IDEFICS_SHAPES,
                                          ("q_proj", "out_proj", "fc1", "fc2", "proj"))
              if (c["model"], TrainingSpec(**c["training"])) not in seen]
    return cases


# The offload grid (`--grid offload-nogc`, issue 13): torchtune's activation offloading without checkpointing
# (enable_activation_offloading, trace/_offload.py), where the backward brings the saved tensors back node by node:
# a dense Llama cut to a tiny shape, the same with Llama 3's 128k vocabulary (the loss is the peak there), a dense
# Qwen3 (fp32 q/k norms over the heads) and the tiny Qwen3-MoE of --grid moe x full / LoRA q,k,v,o / LoRA all-linear
# x b1 s1024 / b2 s1024, checkpointing off (24 cases). DoRA offloaded without checkpointing is refused
# (core/checks.py): its fp32 magnitude path per node is not modelled.
OFFLOAD_SHAPES = {
    "off:llama": ("tinyllama-1.1b", {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2,
                                     "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512}),
    "off:llama-128k": ("tinyllama-1.1b", {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2,
                                          "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 128256}),
    "off:qwen3": ("qwen3-0.6b", {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
                                 "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
                                 "vocab_size": 512}),
}
OFFLOAD_MODELS = (*OFFLOAD_SHAPES, "moe:qwen3_moe")
OFFLOAD_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora q,k,v,o", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")}),
    ("lora all-linear", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
)


def offload_nogc_grid() -> list[dict[str, Any]]:
    cases = []
    for model in OFFLOAD_MODELS:
        for label, kw in OFFLOAD_RUNS:
            for b, seq in ((1, 1024), (2, 1024)):
                cases.append({"id": f"{model} | {label} | b{b} s{seq} | offload no-gc", "model": model,
                              "method": kw["method"],
                              "training": dict(kw, batch_size=b, seq_len=seq, activation_offload=True)})
    return cases


# transformers' offloaded checkpointing (`--grid gc-offload`, issue 13): --ac-offload (activation_checkpointing_kwargs
# offload: true; modeling_utils.py _activation_checkpointing_enable(offload=True), save_on_cpu around each
# checkpoint, trace/_save_on_cpu.py) on Llama (tinyllama-1.1b cut to 3 layers, its 32k vocabulary), toy Qwen2.5 (q/k/v
# biases, tied) and Qwen3 (q/k norms) cut to 3 layers with a 512-token vocabulary, and GPT-2 cut to 3 layers x full
# (pure-bf16) / LoRA all-linear / QLoRA NF4 all-linear, every_n_layers 1 and 2 (--ac-every 2 --ac-layout hf), reentrant
# off / on, at b2 s1024 with the cut loss (the layers' backward is the peak) and b2 s512 with the HF loss (24 cases).
# Written to accuracy_gc-offload.{json,md}, its traces to trace_cache_gc-offload.json.
GCOFF_SHAPES = {
    "gco:qwen2.5": ("qwen2.5-0.5b", {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
                                     "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512}),
    "gco:qwen3": ("qwen3-0.6b", {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 3,
                                 "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
                                 "vocab_size": 512}),
}
GCOFF_MODELS = ("cut:tinyllama-1.1b:3", *GCOFF_SHAPES, "cut:gpt2:3")
GCOFF_SHAPE_A = ("b2 s1024 cut", {"batch_size": 2, "seq_len": 1024, "loss": "cut"})
GCOFF_SHAPE_B = ("b2 s512", {"batch_size": 2, "seq_len": 512})
GCOFF_LORA = {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}
GCOFF_QLORA = {**GCOFF_LORA, "method": "qlora", "kbit_prep": False}
GCOFF_RUNS: tuple[tuple[str, dict[str, Any], int, bool, tuple[str, dict[str, Any]]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}, 1, False, GCOFF_SHAPE_A),
    ("lora all-linear", GCOFF_LORA, 1, False, GCOFF_SHAPE_A),
    ("qlora all-linear", GCOFF_QLORA, 1, False, GCOFF_SHAPE_B),
    ("lora all-linear", GCOFF_LORA, 2, False, GCOFF_SHAPE_B),
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}, 2, True, GCOFF_SHAPE_B),
    ("lora all-linear", GCOFF_LORA, 1, True, GCOFF_SHAPE_A),
)


def gc_offload_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | ac-offload every {every}{' reentrant' if reentrant else ''} | {shape}",
             "model": model, "method": label,
             "training": dict(kw, **skw, grad_checkpointing=True, ac_offload=True, reentrant_gc=reentrant,
                              **({"ac_every": every, "ac_layout": "hf"} if every > 1 else {}))}
            for model in GCOFF_MODELS for label, kw, every, reentrant, (shape, skw) in GCOFF_RUNS]


# axolotl's offloaded checkpointing as axolotl @ 067b021c runs it (`--grid axooff`, issue 13): axolotl config files
# (gradient_checkpointing offload / offload_disk, or true with activation_offloading true / disk) read by the
# axolotl reader (io/runfiles.py _offloading_axolotl: --grad-checkpointing --activation-offload, axolotl's LoRA kernels
# where axolotl turns them on, the 16-bit load) on TinyLlama, Llama 3.2 1B and Qwen2.5 0.5B x full / LoRA
# all-linear / QLoRA NF4 x b2 s1024 / b1 s2048 (8 cases). The traced checkpointing is non-reentrant (LoRA's reentrant
# default under the offload is counted as non-reentrant, the reader's note). Written to accuracy_axooff.{json,md}, its
# traces to trace_cache_axooff.json.
AXOOFF_FILES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full | gc offload | b2 s1024", {"base_model": "tinyllama-1.1b", "bf16": True, "gradient_checkpointing": "offload",
                                      "sequence_len": 1024, "micro_batch_size": 2}),
    ("lora all-linear | gc offload | b2 s1024", {"base_model": "tinyllama-1.1b", "adapter": "lora",
                                                 "lora_target_linear": True, "bf16": True,
                                                 "gradient_checkpointing": "offload", "sequence_len": 1024,
                                                 "micro_batch_size": 2}),
    ("qlora all-linear | gc offload_disk | b2 s1024", {"base_model": "tinyllama-1.1b", "adapter": "qlora",
                                                       "load_in_4bit": True, "lora_target_linear": True, "bf16": True,
                                                       "gradient_checkpointing": "offload_disk", "sequence_len": 1024,
                                                       "micro_batch_size": 2}),
    ("lora all-linear | activation_offloading true | b1 s2048", {"base_model": "llama-3.2-1b", "adapter": "lora",
                                                                 "lora_target_linear": True, "bf16": True,
                                                                 "gradient_checkpointing": True,
                                                                 "activation_offloading": True, "sequence_len": 2048,
                                                                 "micro_batch_size": 1}),
    ("full | activation_offloading disk | b2 s1024", {"base_model": "llama-3.2-1b", "bf16": True,
                                                      "gradient_checkpointing": True, "activation_offloading": "disk",
                                                      "sequence_len": 1024, "micro_batch_size": 2}),
    ("full | gc offload | b1 s2048", {"base_model": "qwen2.5-0.5b", "bf16": True, "gradient_checkpointing": "offload",
                                      "sequence_len": 2048, "micro_batch_size": 1}),
    ("qlora all-linear | gc offload | b1 s2048", {"base_model": "qwen2.5-0.5b", "adapter": "qlora",
                                                  "load_in_4bit": True, "lora_target_linear": True, "bf16": True,
                                                  "gradient_checkpointing": "offload", "sequence_len": 2048,
                                                  "micro_batch_size": 1}),
    ("lora all-linear | gc offload non-reentrant | b2 s1024", {
        "base_model": "qwen2.5-0.5b", "adapter": "lora", "lora_target_linear": True, "bf16": True,
        "gradient_checkpointing": "offload", "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "sequence_len": 1024, "micro_batch_size": 2}),
)


# axolotl's plain checkpointing as axolotl @ 067b021c runs it (`--grid axogc`, issue 13): axolotl files with
# gradient_checkpointing: true and no gradient_checkpointing_kwargs, which normalize_config turns into
# {use_reentrant: true} (io/runfiles.py _gc_kwargs_axolotl: --reentrant-gc), read by the axolotl reader (its LoRA
# kernels, the 16-bit load, QLoRA without peft's fp32 casts), on TinyLlama, Qwen2.5 0.5B and Llama 3.2 1B x full / LoRA
# all-linear / QLoRA NF4, with and without a loss saver from a listed plugin (Cut Cross-Entropy, Liger's fused linear
# cross-entropy: the peak moves from the loss's backward to a layer's) x b2 s1024 / b1 s2048 / b2 s2048 (8 cases).
# Written to accuracy_axogc.{json,md}, its traces to trace_cache_axogc.json.
_AX_CCE = ["axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"]
_AX_LIGER = ["axolotl.integrations.liger.LigerPlugin"]
AXOGC_FILES: tuple[tuple[str, dict[str, Any]], ...] = tuple((label, {"bf16": True, "gradient_checkpointing": True, **d})
                                                            for label, d in (
    ("full | gc | b2 s1024", {"base_model": "tinyllama-1.1b", "sequence_len": 1024, "micro_batch_size": 2}),
    ("lora all-linear | gc | b2 s1024", {"base_model": "tinyllama-1.1b", "adapter": "lora", "lora_target_linear": True,
                                         "sequence_len": 1024, "micro_batch_size": 2}),
    ("qlora all-linear | gc | b2 s1024", {"base_model": "tinyllama-1.1b", "adapter": "qlora", "load_in_4bit": True,
                                          "lora_target_linear": True, "sequence_len": 1024, "micro_batch_size": 2}),
    ("lora all-linear | gc cce | b2 s2048", {"base_model": "tinyllama-1.1b", "adapter": "lora",
                                             "lora_target_linear": True, "plugins": _AX_CCE, "sequence_len": 2048,
                                             "micro_batch_size": 2}),
    ("full | gc | b1 s2048", {"base_model": "qwen2.5-0.5b", "sequence_len": 2048, "micro_batch_size": 1}),
    ("lora all-linear | gc | b1 s2048", {"base_model": "qwen2.5-0.5b", "adapter": "lora", "lora_target_linear": True,
                                         "sequence_len": 2048, "micro_batch_size": 1}),
    ("qlora all-linear | gc cce | b2 s1024", {"base_model": "qwen2.5-0.5b", "adapter": "qlora", "load_in_4bit": True,
                                              "lora_target_linear": True, "plugins": _AX_CCE, "sequence_len": 1024,
                                              "micro_batch_size": 2}),
    ("lora all-linear | gc liger-flce | b2 s1024", {"base_model": "llama-3.2-1b", "adapter": "lora",
                                                    "lora_target_linear": True, "plugins": _AX_LIGER,
                                                    "liger_fused_linear_cross_entropy": True, "sequence_len": 1024,
                                                    "micro_batch_size": 2}),
))


# transformers 4 files' checkpointing (`--grid tf4gc`, issue 13): TrainingArguments files naming
# transformers_version 4.57.1 with gradient_checkpointing: true and no gradient_checkpointing_kwargs, which
# transformers 4's gradient_checkpointing_enable runs reentrant ({"use_reentrant": True} for None; io/runfiles.py
# TF4_REENTRANT_NOTE: --reentrant-gc), read by the TrainingArguments reader (transformers 4's float32 load: fp32, or
# amp-bf16 with bf16: true; adamw_torch), on the reentrant grid's cuts x b4 / b8 s2048 (--seq-len and the batch given
# as the command line gives them: a TrainingArguments file names no sequence length; at smaller shapes the optimizer
# step's fp32 states are the peak, where checkpointing does not show) (8 cases). Written to
# accuracy_tf4gc.{json,md}, its traces to trace_cache_tf4gc.json.
TF4GC_FILES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full amp-bf16", {"output_dir": "o", "transformers_version": "4.57.1", "gradient_checkpointing": True,
                       "bf16": True}),
    ("full fp32", {"output_dir": "o", "transformers_version": "4.57.1", "gradient_checkpointing": True}),
)
TF4GC_SHAPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("b4 s2048", {"batch_size": 4, "seq_len": 2048}),
    ("b8 s2048", {"batch_size": 8, "seq_len": 2048}),
)


def tf4gc_grid() -> list[dict[str, Any]]:
    import tempfile
    from dataclasses import fields

    from vramcalc.core.options import BY_NAME, coerce
    from vramcalc.io import runfiles

    known = {f.name for f in fields(TrainingSpec)}
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, d in TF4GC_FILES:
            f = Path(tmp) / "args.json"
            f.write_text(json.dumps(d))
            run = runfiles.load(str(f))[0]
            assert not run.unmodelled and run.options.get("reentrant_gc"), (label, run.options)
            opts = {k: coerce(BY_NAME[k], v) if k in BY_NAME else v for k, v in run.options.items() if k in known}
            cases += [{"id": f"{model} | {label} | transformers 4 gc | {shape}", "model": model, "method": "full",
                       "training": {**opts, **skw}}
                      for model in REENTRANT_MODELS for shape, skw in TF4GC_SHAPES]
    return cases


def axooff_grid() -> list[dict[str, Any]]:
    return _axolotl_file_grid(AXOOFF_FILES)


def axogc_grid() -> list[dict[str, Any]]:
    return _axolotl_file_grid(AXOGC_FILES)


def _axolotl_file_grid(files: tuple[tuple[str, dict[str, Any]], ...]) -> list[dict[str, Any]]:
    import tempfile
    from dataclasses import fields

    from vramcalc.core.options import BY_NAME, coerce
    from vramcalc.io import runfiles

    known = {f.name for f in fields(TrainingSpec)}
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, d in files:
            f = Path(tmp) / "axolotl.yaml"
            f.write_text(json.dumps(d))  # JSON is YAML: read as the CLI reads `--config axolotl.yaml`
            run = runfiles.load(str(f))[0]
            assert not run.unmodelled, (label, run.unmodelled)
            opts = {k: coerce(BY_NAME[k], v) if k in BY_NAME else v for k, v in run.options.items() if k in known}
            if isinstance(opts.get("lora_targets"), str):  # a comma list, as core/options.py training_spec splits it
                opts["lora_targets"] = tuple(opts["lora_targets"].split(","))
            cases.append({"id": f"{run.model} | {label}", "model": run.model, "method": label.split(" | ")[0],
                          "training": opts})
    return cases


def _model(name: str) -> Any:
    if name.startswith("gco:"):  # a published config.json cut to a tiny shape (GCOFF_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        config, shape = GCOFF_SHAPES[name]
        d = {**json.loads((HF_DIR / f"{config}.json").read_text()), **shape}
        return spec_from_hf_config(d, name[4:], "benchmarks/accuracy.py")
    if name.startswith(("idefics:", "idefics-toy:")):  # an Idefics3 / SmolVLM config.json, both stacks cut to 2
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        config = name.split(":", 1)[1]
        path = HF_DIR / f"{config}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), config, str(path))
        assert spec.vision is not None
        tower = replace(spec.vision, num_layers=2)
        if name.startswith("idefics-toy:"):
            return replace(spec, num_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                           num_kv_heads=2, vocab_size=1000, head_dim=None, vision=tower)
        return replace(spec, num_layers=2, vision=tower)
    if name.startswith(("gemma3vlm:", "gemma3vlm-toy:")):  # a Gemma 3 multimodal config.json as published, both
        # stacks cut; -toy: the language model a toy (2 layers, width 256, 1,000-token vocabulary), the tower kept
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        _, config, n = name.split(":")
        path = HF_DIR / f"{config}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), config, str(path))
        layers = int(n)
        local = round(spec.sliding_window_layers * layers / spec.num_layers)
        if name.startswith("gemma3vlm-toy:"):
            return replace(spec, num_layers=2, sliding_window_layers=1, hidden_size=256, intermediate_size=512,
                           num_attention_heads=4, num_kv_heads=2, head_dim=64, vocab_size=1000,
                           vision=replace(spec.vision, num_layers=layers))
        return replace(spec, num_layers=layers, sliding_window_layers=local,
                       vision=replace(spec.vision, num_layers=layers))
    if name.startswith("llava-toy:"):  # a LLaVA-1.5 config.json: its published tower under a toy language model
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        config = name.split(":", 1)[1]
        path = HF_DIR / f"{config}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), config, str(path))
        return replace(spec, num_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                       num_kv_heads=2, vocab_size=1000, head_dim=None)
    if name.startswith("llava-cut:"):  # a LLaVA-1.5 config.json as published, its language model cut to 4 layers
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        path = HF_DIR / f"{name[10:]}.json"
        return replace(spec_from_hf_config(json.loads(path.read_text()), name[10:], str(path)), num_layers=4)
    if name.startswith("vlm:"):  # a vision-language model's config.json as published (no layer cut)
        from vramcalc.io.hf_config import spec_from_hf_config

        path = HF_DIR / f"{name[4:]}.json"
        return spec_from_hf_config(json.loads(path.read_text()), name[4:], str(path))
    if name.startswith("mllama:"):  # a Llama-3.2-Vision config.json, the text model and the tower cut
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        fixture, text_layers, local, global_, mid = MLLAMA_CUTS[name]
        path = HF_DIR / f"{fixture}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), fixture, str(path))
        assert spec.vision is not None
        cross = tuple(i for i in spec.vision.cross_attention_layers if i < text_layers)
        if name == "mllama:toy":
            cross = (1, 3)
            spec = replace(spec, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_kv_heads=2,
                           vocab_size=1000)
        vision = replace(spec.vision, num_layers=local, num_global_layers=global_, intermediate_layers_indices=mid,
                         vision_output_dim=spec.vision.hidden_size * (1 + len(mid)), cross_attention_layers=cross)
        return replace(spec, num_layers=text_layers, vision=vision)
    if name.startswith(("qwenvl:", "qwenvl-tower:", "qwenvl-toy:")):  # a Qwen-VL config.json, 2 text layers
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        config = name.split(":", 1)[1]
        path = HF_DIR / f"{config}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), config, str(path))
        assert spec.vision is not None
        if name.startswith("qwenvl-tower:"):  # the whole tower
            return replace(spec, num_layers=2)
        if name.startswith("qwenvl-toy:"):  # 4 tower blocks (Qwen2.5-VL: the last full) and a toy language model
            return replace(spec, num_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                           num_kv_heads=2, vocab_size=1000, head_dim=None,
                           vision=replace(spec.vision, num_layers=4, out_hidden_size=256,
                                          fullatt_block_indexes=(3,) if spec.vision.fullatt_block_indexes else ()))
        depth, full = QWEN_VL_CUTS[config]
        return replace(spec, num_layers=2, vision=replace(spec.vision, num_layers=depth, fullatt_block_indexes=full))
    if name.startswith(("llavanext:", "llavanext-toy:")):  # a LLaVA-NeXT config.json, text and tower layers cut
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        parts = name.split(":")
        path = HF_DIR / f"{parts[1]}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), parts[1], str(path))
        assert spec.vision is not None
        if parts[0] == "llavanext-toy":  # the published tower under a toy language model
            return replace(spec, num_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                           num_kv_heads=2, vocab_size=1000, head_dim=None)
        return replace(spec, num_layers=int(parts[2]), vision=replace(spec.vision, num_layers=int(parts[3])))
    if name.startswith("seq2seq:"):  # an encoder-decoder's config.json as published (no layer cut)
        from vramcalc.io.hf_config import spec_from_hf_config

        path = HF_DIR / f"{name[8:]}.json"
        return spec_from_hf_config(json.loads(path.read_text()), name[8:], str(path))
    if name.startswith("ssm:"):
        from vramcalc.io.hf_config import spec_from_hf_config

        return spec_from_hf_config({"model_type": "mamba", **SSM_SHAPES[name]}, name[4:], "benchmarks/accuracy.py")
    if name.startswith("ssm2:"):
        from vramcalc.io.hf_config import spec_from_hf_config

        return spec_from_hf_config({"model_type": "mamba2", **SSM2_SHAPES[name]}, name[5:], "benchmarks/accuracy.py")
    if name.startswith("hybrid:"):  # Falcon-H1-0.5B-Instruct's config.json cut to a tiny shape (HYBRID_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        d = {**json.loads((HF_DIR / "falcon-h1-0.5b-instruct.json").read_text()),
             **HYBRID_SHAPES.get(name, {"num_hidden_layers": 2})}
        return spec_from_hf_config(d, name[7:], "benchmarks/accuracy.py")
    if name.startswith("bamba:"):  # tests/data/hf/bamba-9b.json cut to a tiny shape (BAMBA_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        d = {**json.loads((HF_DIR / "bamba-9b.json").read_text()),
             **BAMBA_SHAPES.get(name, {"num_hidden_layers": 2, "attn_layer_indices": [1]})}
        return spec_from_hf_config(d, name[6:], "benchmarks/accuracy.py")
    if name.startswith("jamba:"):  # AI21-Jamba-1.5-Mini's config.json cut to a tiny shape (JAMBA_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        d = {**json.loads((HF_DIR / "ai21-jamba-1.5-mini.json").read_text()), **JAMBA_SHAPES[name]}
        return spec_from_hf_config(d, name[6:], "benchmarks/accuracy.py")
    if name.startswith("zamba2:"):  # tests/data/hf/zamba2-2.7b.json cut to a tiny shape (ZAMBA2_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        shapes = {**ZAMBA2_SHAPES, **ZAMBA2_QLORA_SHAPES}
        d = {**json.loads((HF_DIR / "zamba2-2.7b.json").read_text()), **shapes[name]} \
            if name in shapes else {**json.loads((HF_DIR / "zamba2-1.2b.json").read_text()),
                                           "num_hidden_layers": 2, "layers_block_type": ["mamba", "hybrid"],
                                           "hybrid_layer_ids": [1]}
        return spec_from_hf_config(d, name[7:], "benchmarks/accuracy.py")
    if name.startswith("granite:"):  # tests/data/hf/granite-4.0-h-micro.json cut to a tiny shape (GRANITE_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        if name in GRANITE_MOE_SHAPES:  # granite-4.0-h-tiny.json / -h-small.json cut (GRANITE_MOE_SHAPES)
            fixture, shape = GRANITE_MOE_SHAPES[name]
            d = {**json.loads((HF_DIR / f"{fixture}.json").read_text()), **shape}
            return spec_from_hf_config(d, name[8:], "benchmarks/accuracy.py")
        d = {**json.loads((HF_DIR / "granite-4.0-h-micro.json").read_text()),
             **GRANITE_SHAPES.get(name, {"num_hidden_layers": 2, "layer_types": ["mamba", "attention"]})}
        return spec_from_hf_config(d, name[8:], "benchmarks/accuracy.py")
    if name.startswith("nemotronh:"):  # tests/data/hf/nemotron-h-8b-base-8k.json cut to a tiny shape
        from vramcalc.io.hf_config import spec_from_hf_config

        if name in NEMOTRONH_LATENT_SHAPES or name == "nemotronh:nemotron-3-super-2-layers":  # the Super's config
            d = {**json.loads((HF_DIR / "nvidia-nemotron-3-super-120b-a12b-bf16.json").read_text()),
                 **NEMOTRONH_LATENT_SHAPES.get(name, {"hybrid_override_pattern": "ME"})}
            d.pop("num_hidden_layers")  # the pattern's length
            return spec_from_hf_config(d, name[10:], "benchmarks/accuracy.py")
        if name in NEMOTRONH_MOE_SHAPES or name == "nemotronh:nemotron-3-nano-2-layers":  # the Nano's config
            d = {**json.loads((HF_DIR / "nvidia-nemotron-3-nano-30b-a3b-bf16.json").read_text()),
                 **NEMOTRONH_MOE_SHAPES.get(name, {"hybrid_override_pattern": "ME"})}
            d.pop("num_hidden_layers")  # the pattern's length
            return spec_from_hf_config(d, name[10:], "benchmarks/accuracy.py")
        d = {**json.loads((HF_DIR / "nemotron-h-8b-base-8k.json").read_text()),
             **NEMOTRONH_SHAPES.get(name, {"hybrid_override_pattern": "M-*", "num_hidden_layers": 3})}
        return spec_from_hf_config(d, name[10:], "benchmarks/accuracy.py")
    if name.startswith("deberta:"):  # a published DeBERTa-v3 config.json cut to a few layers (DEBERTA_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        fixture, layers = DEBERTA_SHAPES[name]
        d = json.loads((HF_DIR / f"{fixture}.json").read_text())
        d["num_hidden_layers"] = layers
        return spec_from_hf_config(d, f"{fixture}-{layers}-layers", "benchmarks/accuracy.py")
    if name.startswith("gptoss:"):  # the published gpt-oss-20b config.json, cut to a tiny shape
        from vramcalc.io.hf_config import spec_from_hf_config

        d = json.loads((HF_DIR / "gpt-oss-20b.json").read_text())
        shape = GPTOSS_SHAPES[name]
        n = shape["num_hidden_layers"]
        d.update(shape, layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)])
        d.pop("quantization_config")
        return spec_from_hf_config(d, name[7:], "benchmarks/accuracy.py")
    if name.startswith("aux:"):  # a published MoE config.json cut, output_router_logits true (AUX_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        config, shape = AUX_SHAPES[name]
        d = {**json.loads((HF_DIR / f"{config}.json").read_text()), **shape}
        d.pop("quantization_config", None)  # gpt-oss: MXFP4 experts, dequantized to train (as --grid gptoss)
        return spec_from_hf_config(d, name[4:], "benchmarks/accuracy.py")
    if name.startswith("off:"):  # a published config.json cut to a tiny shape (OFFLOAD_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        config, shape = OFFLOAD_SHAPES[name]
        d = {**json.loads((HF_DIR / f"{config}.json").read_text()), **shape}
        return spec_from_hf_config(d, name[4:], "benchmarks/accuracy.py")
    if name.startswith("moe:"):  # a published MoE config.json cut to a tiny shape (MOE_SHAPES)
        from vramcalc.io.hf_config import spec_from_hf_config

        config, shape = MOE_SHAPES[name]
        d = {**json.loads((HF_DIR / f"{config}.json").read_text()), **shape}
        return spec_from_hf_config(d, name[4:], "benchmarks/accuracy.py")
    if name.startswith("llama4v:"):  # Llama 4 multimodal: the published tower cut to 2 layers (LLAMA4V_SHAPES)
        from dataclasses import replace

        from vramcalc.io.hf_config import llama4_vision

        text = _model(name.replace("llama4v:", "llama4:"))
        config = LLAMA4_SHAPES[name.replace("llama4v:", "llama4:")][0] if "(" not in name \
            else LLAMA4_PUBLISHED[name.replace("llama4v:", "llama4:")]
        d = json.loads((HF_DIR / f"{config}.json").read_text())
        return replace(text, name=name[8:].split(" ")[0] + "-vision",
                       vision=replace(llama4_vision(d, "benchmarks/accuracy.py"), num_layers=2))
    if name.startswith("llama4:"):  # a published Llama 4 config.json's text_config cut to a tiny shape
        from vramcalc.io.hf_config import spec_from_hf_config

        config, shape = LLAMA4_SHAPES[name] if name in LLAMA4_SHAPES \
            else (LLAMA4_PUBLISHED[name], {"num_hidden_layers": FAMILY_LAYERS})
        d = json.loads((HF_DIR / f"{config}.json").read_text())
        d["text_config"] = {**d["text_config"], **shape}
        return spec_from_hf_config(d, name[7:].split(" ")[0], "benchmarks/accuracy.py")
    if name.startswith("hfcut:"):  # a published config.json cut as "dequant:" cuts a preset (amp_grid)
        from dataclasses import replace

        from vramcalc.io.hf_config import spec_from_hf_config

        path = HF_DIR / f"{name[6:]}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), name[6:], str(path))
        local = spec.sliding_window_layers
        return replace(spec, num_layers=FAMILY_LAYERS, vocab_size=2048,
                       sliding_window_layers=None if local is None else round(local * FAMILY_LAYERS / spec.num_layers))
    if name.startswith("dequant:"):  # a dense preset cut to 4 layers and a 2,048-token vocabulary (dequant_grid)
        from dataclasses import replace

        spec = presets.find_model(name[8:])
        local = spec.sliding_window_layers  # Gemma 2 / 3's local layers kept in proportion (as "hf:" models are)
        return replace(spec, num_layers=FAMILY_LAYERS, vocab_size=2048,
                       sliding_window_layers=None if local is None else round(local * FAMILY_LAYERS / spec.num_layers))
    if name.startswith("cut:"):  # a preset with its decoder stack cut to N layers: "cut:<preset>:<N>"
        from dataclasses import replace

        _, preset, n = name.split(":")
        return replace(presets.find_model(preset), num_layers=int(n))
    if name.startswith("hf:"):
        from vramcalc.io.hf_config import spec_from_hf_config

        config = name[3:]
        path = HF_DIR / f"{config}.json"
        spec = spec_from_hf_config(json.loads(path.read_text()), config, str(path))
        from dataclasses import replace

        local = spec.sliding_window_layers
        # the family grid traces the language model (gemma-3-4b-it's vision side is the vlm2 grid's)
        return replace(spec, num_layers=FAMILY_LAYERS, vision=None,
                       sliding_window_layers=None if local is None else round(local * FAMILY_LAYERS / spec.num_layers))
    return presets.find_model(name)


# The packing grid (`--grid packing`, issue 13): 4 architectures (gpt2: MHA, learned positions; qwen2.5-0.5b and
# llama-3.2-1b: GQA, 152k / 128k vocabularies; tinyllama-1.1b: GQA, 32k) x 4 layouts (packed and padding-free
# under sdpa, padding-free under eager and under flash), the method cycling through full pure-bf16, LoRA
# all-linear and QLoRA NF4; batch 4 x seq 1024 (padding-free: one row of 4,096), checkpointing on for every
# other case. Written to accuracy_packing.{json,md}.
PACKING_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("packed sdpa", {"packing": "packed", "attention": "sdpa"}),
    ("padding-free sdpa", {"packing": "padding-free", "attention": "sdpa"}),
    ("padding-free eager", {"packing": "padding-free", "attention": "eager"}),
    ("padding-free flash", {"packing": "padding-free", "attention": "flash"}),
)


def packing_grid() -> list[dict[str, Any]]:
    cases = []
    for mi, model in enumerate(SAVER_MODELS):
        for ri, (layout, kw) in enumerate(PACKING_RUNS):
            label, mkw = SAVER_METHODS[(mi + ri) % len(SAVER_METHODS)]
            gc = (mi + ri) % 2 == 1
            opts = dict(mkw, batch_size=4, seq_len=1024, grad_checkpointing=gc, **kw)
            cases.append({"id": f"{model} | {label} | {layout} | {'gc' if gc else 'no-gc'} | b4 s1024",
                          "model": model, "method": label, "training": opts})
    return cases


PRESET_RUNS: tuple[tuple[str, str], ...] = (("gemma-2b", "sdpa"), ("gemma-2-2b", "eager"))


def preset_grid() -> list[dict[str, Any]]:
    cases = []
    for model, attention in PRESET_RUNS:
        for label, kw in (METHODS[0], METHODS[3]):  # full pure-bf16, LoRA all-linear
            for gc in (False, True):
                opts = dict(kw, batch_size=2, seq_len=512, grad_checkpointing=gc, attention=attention)
                cases.append({"id": f"{model} | {label} | b2 s512 | {'gc' if gc else 'no-gc'} | {attention}",
                              "model": model, "method": label, "training": opts})
    return cases


PREFERENCE_MODELS = ("qwen2.5-0.5b", "tinyllama-1.1b", "gpt2")
_FULL = {"method": "full", "precision": "pure-bf16"}
_LORA = {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}
_QLORA = {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False}
PREFERENCE_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("dpo full copy", {**_FULL, "objective": "dpo", "batch_size": 1, "seq_len": 1024, "prompt_len": 256}),
    ("dpo full copy gc", {**_FULL, "objective": "dpo", **GC, "batch_size": 2, "seq_len": 1024, "prompt_len": 512}),
    ("ipo full amp copy", {"method": "full", "precision": "amp-bf16", "objective": "ipo", "batch_size": 1,
                           "seq_len": 512}),
    ("dpo lora adapters-off", {**_LORA, "objective": "dpo", "batch_size": 2, "seq_len": 1024, "prompt_len": 256}),
    ("dpo lora q,v adapters-off gc", {**_LORA, "lora_targets": ("q_proj", "v_proj"), "objective": "dpo", **GC,
                                      "batch_size": 4, "seq_len": 512, "prompt_len": 128}),
    ("dpo qlora adapters-off", {**_QLORA, "objective": "dpo", "batch_size": 2, "seq_len": 1024, "prompt_len": 512}),
    ("dpo qlora adapters-off gc", {**_QLORA, "objective": "dpo", **GC, "batch_size": 4, "seq_len": 1024,
                                   "prompt_len": 512}),
    ("dpo full precomputed accum 2", {**_FULL, "objective": "dpo", "ref_model": "precomputed", "grad_accum": 2,
                                      "batch_size": 2, "seq_len": 1024, "prompt_len": 256}),
    ("dpo lora copy", {**_LORA, "objective": "dpo", "ref_model": "copy", "batch_size": 1, "seq_len": 1024,
                       "prompt_len": 256}),
    ("dpo full adamw-8bit gc every 2", {**_FULL, "objective": "dpo", "optimizer": "adamw-8bit", **GC, "ac_every": 2,
                                        "batch_size": 2, "seq_len": 1024, "prompt_len": 256}),
    ("dpo lora gc+offload", {**_LORA, "objective": "dpo", **GC, "activation_offload": True, "batch_size": 2,
                             "seq_len": 1024, "prompt_len": 256}),
    ("dpo full gc+opt-in-bwd", {**_FULL, "objective": "dpo", **GC, "optimizer_in_bwd": True, "batch_size": 2,
                                "seq_len": 1024, "prompt_len": 768}),
    ("sft full loss trl", {**_FULL, "loss": "trl", "batch_size": 2, "seq_len": 1024, "prompt_len": 256}),
    # The LoRA DPO rows' error is the SFT step's: this is "dpo lora adapters-off" without the reference.
    ("sft lora loss trl", {**_LORA, "loss": "trl", "batch_size": 4, "seq_len": 1024, "prompt_len": 256}),
    ("kto full copy", {**_FULL, "objective": "kto", "batch_size": 2, "seq_len": 1024, "prompt_len": 256}),
    ("kto lora adapters-off gc", {**_LORA, "objective": "kto", **GC, "batch_size": 4, "seq_len": 1024,
                                  "prompt_len": 512}),
    ("reward full", {**_FULL, "objective": "reward", "batch_size": 2, "seq_len": 1024}),
    ("reward lora gc", {**_LORA, "objective": "reward", **GC, "batch_size": 4, "seq_len": 1024}),
    # torchtune's DPO recipes (--dpo-head logits): lora_dpo_single_device (adapters off) and full_dpo_distributed (a
    # frozen copy) on one GPU; the full fp32 logits of the 2B rows and their log_softmax, then the reference's.
    ("dpo logits lora adapters-off", {**_LORA, "objective": "dpo", "dpo_head": "logits", "batch_size": 1,
                                      "seq_len": 1024}),
    ("dpo logits lora q,v adapters-off gc", {**_LORA, "lora_targets": ("q_proj", "v_proj"), "objective": "dpo",
                                             "dpo_head": "logits", **GC, "batch_size": 2, "seq_len": 512}),
    ("dpo logits full copy gc", {**_FULL, "objective": "dpo", "dpo_head": "logits", **GC, "batch_size": 1,
                                 "seq_len": 1024}),
)


def preference_grid() -> list[dict[str, Any]]:
    cases = []
    for model in PREFERENCE_MODELS:
        for label, kw in PREFERENCE_RUNS:
            opts = dict(kw)
            shape = f"b{opts['batch_size']} s{opts['seq_len']} p{opts.get('prompt_len', 0)}"
            cases.append({"id": f"{model} | {label} | {shape}", "model": model, "method": label, "training": opts})
    return cases


# Issue 14's reference-free objectives (TRL ORPOTrainer, CPOTrainer with loss_type sigmoid or simpo): no
# reference, the full logits of the 2B rows; --no-chosen-nll is CPOConfig cpo_alpha 0.
PREFERENCE_FREE_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("orpo full", {**_FULL, "objective": "orpo", "batch_size": 1, "seq_len": 1024}),
    ("orpo full gc", {**_FULL, "objective": "orpo", **GC, "batch_size": 2, "seq_len": 1024}),
    ("orpo amp-bf16 gc", {"method": "full", "precision": "amp-bf16", "objective": "orpo", **GC, "batch_size": 1,
                          "seq_len": 512}),
    ("orpo lora", {**_LORA, "objective": "orpo", "batch_size": 2, "seq_len": 512}),
    ("cpo lora gc", {**_LORA, "objective": "cpo", **GC, "batch_size": 2, "seq_len": 1024}),
    ("cpo qlora gc", {**_QLORA, "objective": "cpo", **GC, "batch_size": 1, "seq_len": 1024}),
    ("simpo full no-nll", {**_FULL, "objective": "simpo", "chosen_nll": False, "batch_size": 1, "seq_len": 1024}),
    ("simpo lora gc no-nll", {**_LORA, "objective": "simpo", "chosen_nll": False, **GC, "batch_size": 2,
                              "seq_len": 1024}),
)


def preference_free_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']}", "model": model, "method": label,
             "training": dict(kw)} for model in PREFERENCE_MODELS for label, kw in PREFERENCE_FREE_RUNS]


PEFT_MODELS = ("gpt2", "tinyllama-1.1b", "llama-3.2-1b", "qwen2.5-0.5b")
PEFT_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ia3", {"method": "ia3"}),
    ("ia3 all-linear", {"method": "ia3", "lora_targets": ("all-linear",)}),
    ("ln-tuning", {"method": "ln-tuning"}),
    ("vera r256", {"method": "vera", "lora_rank": 256}),
    ("prompt-tuning n20", {"method": "prompt-tuning"}),
    ("p-tuning n20", {"method": "p-tuning"}),
    ("prefix-tuning n20", {"method": "prefix-tuning"}),
    ("prefix-tuning n32 proj", {"method": "prefix-tuning", "virtual_tokens": 32, "prefix_projection": True,
                                "encoder_hidden_size": 512}),
    ("loha r8", {"method": "loha", "lora_rank": 8}),
    ("lokr r8 all-linear", {"method": "lokr", "lora_rank": 8, "lora_targets": ("all-linear",)}),
    ("oft b32", {"method": "oft"}),
    ("oft b64 all-linear", {"method": "oft", "oft_block_size": 64, "lora_targets": ("all-linear",)}),
    ("trainable-tokens 16", {"method": "trainable-tokens"}),
    ("fourierft n1000", {"method": "fourierft"}),
)
PEFT_SHAPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("b1 s512 sdpa", {"batch_size": 1, "seq_len": 512}),
    ("b2 s1024 sdpa", {"batch_size": 2, "seq_len": 1024}),
    ("b1 s1024 eager", {"batch_size": 1, "seq_len": 1024, "attention": "eager"}),
    ("b2 s512 sdpa gc", {"batch_size": 2, "seq_len": 512, "grad_checkpointing": True}),
)


def peft_grid() -> list[dict[str, Any]]:
    """Issue 18: the PEFT methods of core/peft_methods.py over GPT-2 (LayerNorm, Conv1D, tied, multi-head),
    TinyLlama (GQA 4:32, untied), Llama-3.2-1B (GQA 8:32, tied, 128k vocabulary) and Qwen2.5-0.5B (its own
    IA3 and LN tuning defaults, four runs); the shape cycles with the run (prefix tuning never checkpointed:
    peft refuses it). GPT-2 has no LoHa/LoKr/OFT runs (peft's layers for them do not adapt its Conv1D) and no
    FourierFT run (its peft default targets differ there)."""
    cases = []
    for mi, model in enumerate(PEFT_MODELS):
        for ri, (label, kw) in enumerate(PEFT_RUNS):
            if model == "gpt2" and kw["method"] in ("loha", "lokr", "oft", "fourierft"):
                continue
            if model == "qwen2.5-0.5b" and label not in ("ia3", "ln-tuning", "vera r256", "prefix-tuning n20"):
                continue
            si = (mi + ri) % len(PEFT_SHAPES)
            if kw["method"] == "prefix-tuning" and PEFT_SHAPES[si][1].get("grad_checkpointing"):
                si = (si + 1) % len(PEFT_SHAPES)
            shape, skw = PEFT_SHAPES[si]
            opts = dict(kw, precision="bf16", **skw)
            cases.append({"id": f"{model} | {label} | {shape}", "model": model, "method": label, "training": opts})
    for model, label, kw, shape in PEFT_NEW_CASES:
        skw = dict(PEFT_SHAPES)[shape]
        cases.append({"id": f"{model} | {label} | {shape}", "model": model, "method": label,
                      "training": dict(kw, precision="bf16", **skw)})
    return cases


# Issue 18's remaining methods (BOFT, MiSS, C3A, SHiRA, adaption prompt), four runs each over TinyLlama (llama: GQA
# 4:32, 32k untied) and Qwen2.5-0.5B (qwen2: q/k/v biases, 152k tied; hidden 896, so C3A's block is 128, a divisor of
# 896 and of the 128-wide k/v projections), checkpointing off and on, sdpa and eager.
PEFT_NEW_CASES: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("tinyllama-1.1b", "boft b4", {"method": "boft"}, "b1 s512 sdpa"),
    ("tinyllama-1.1b", "boft n16 all-linear", {"method": "boft", "boft_block_size": 0, "boft_block_num": 16,
                                               "lora_targets": ("all-linear",)}, "b2 s512 sdpa gc"),
    ("qwen2.5-0.5b", "boft b8", {"method": "boft", "boft_block_size": 8}, "b2 s1024 sdpa"),
    ("qwen2.5-0.5b", "boft b4 q,k,v,o", {"method": "boft", "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj")},
     "b2 s512 sdpa gc"),
    ("tinyllama-1.1b", "miss r64", {"method": "miss"}, "b2 s1024 sdpa"),
    ("tinyllama-1.1b", "miss r64 all-linear", {"method": "miss", "lora_targets": ("all-linear",)}, "b2 s512 sdpa gc"),
    ("qwen2.5-0.5b", "miss r32 all-linear", {"method": "miss", "miss_rank": 32, "lora_targets": ("all-linear",)},
     "b1 s1024 eager"),
    ("qwen2.5-0.5b", "miss r64", {"method": "miss"}, "b2 s512 sdpa gc"),
    ("tinyllama-1.1b", "c3a b256", {"method": "c3a"}, "b1 s1024 eager"),
    ("tinyllama-1.1b", "c3a b256 all-linear", {"method": "c3a", "lora_targets": ("all-linear",)}, "b2 s512 sdpa gc"),
    ("qwen2.5-0.5b", "c3a b128", {"method": "c3a", "c3a_block_size": 128}, "b2 s1024 sdpa"),
    ("qwen2.5-0.5b", "c3a b128 all-linear", {"method": "c3a", "c3a_block_size": 128,
                                             "lora_targets": ("all-linear",)}, "b2 s512 sdpa gc"),
    ("tinyllama-1.1b", "shira r32", {"method": "shira"}, "b2 s1024 sdpa"),
    ("tinyllama-1.1b", "shira r32 all-linear", {"method": "shira", "lora_targets": ("all-linear",)},
     "b2 s512 sdpa gc"),
    ("qwen2.5-0.5b", "shira r32", {"method": "shira"}, "b1 s512 sdpa"),
    ("qwen2.5-0.5b", "shira r16 all-linear", {"method": "shira", "shira_rank": 16, "lora_targets": ("all-linear",)},
     "b1 s1024 eager"),
    # adaption prompt: peft's AdaptedAttention covers llama and mistral; Llama-3.2-1B (GQA 8:32, 128k tied) is the
    # second architecture
    ("tinyllama-1.1b", "adaption-prompt l10", {"method": "adaption-prompt"}, "b1 s512 sdpa"),
    ("tinyllama-1.1b", "adaption-prompt l16 top8", {"method": "adaption-prompt", "adapter_len": 16,
                                                    "adapter_layers": 8}, "b2 s512 sdpa gc"),
    ("llama-3.2-1b", "adaption-prompt l10", {"method": "adaption-prompt"}, "b2 s1024 sdpa"),
    ("llama-3.2-1b", "adaption-prompt l10 top8", {"method": "adaption-prompt", "adapter_layers": 8},
     "b1 s1024 eager"),
)


# The LoRA-variants grid (`--grid lora-variants`, issue 13): DoRA (peft use_dora), modules_to_save and LoRA on the
# LM head and the embedding over three
# architectures (tinyllama-1.1b: llama, 32k untied; qwen2.5-0.5b: 152k tied, q/k/v biases; gpt2: Conv1D, fused
# c_attn, learned positions), LoRA and QLoRA NF4, checkpointing off and on, dropout on one run per model,
# and amp-bf16 (DoRA, and LoRA with dropout).
LORA_VARIANT_MODELS = ("tinyllama-1.1b", "qwen2.5-0.5b", "gpt2")
LORA_VARIANT_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lora dora q,v b1 s512", {"method": "lora", "dora": True, "batch_size": 1, "seq_len": 512}),
    ("lora dora all-linear b1 s128", {"method": "lora", "dora": True, "lora_targets": ("all-linear",),
                                      "batch_size": 1, "seq_len": 128}),
    ("lora dora all-linear b2 s512 gc", {"method": "lora", "dora": True, "lora_targets": ("all-linear",),
                                         "batch_size": 2, "seq_len": 512, "grad_checkpointing": True}),
    ("qlora dora all-linear b1 s256", {**_QLORA, "dora": True, "batch_size": 1, "seq_len": 256}),
    ("qlora dora q,v dropout b1 s512", {**_QLORA, "lora_targets": ("auto",), "dora": True, "lora_dropout": 0.05,
                                        "batch_size": 1, "seq_len": 512}),
    # under autocast (amp-bf16: fp32 weights and adapters, bf16 matmuls): lora_A saves autocast's bf16 cast of its
    # input, and DoRA's weight norm runs on bf16 lora_B output copied back to fp32
    ("lora dora all-linear amp b1 s256", {"method": "lora", "dora": True, "lora_targets": ("all-linear",),
                                          "precision": "amp-bf16", "batch_size": 1, "seq_len": 256}),
    ("lora all-linear dropout amp b1 s256", {"method": "lora", "lora_targets": ("all-linear",), "lora_dropout": 0.05,
                                             "precision": "amp-bf16", "batch_size": 1, "seq_len": 256}),
    ("lora save lm_head b1 s512", {"method": "lora", "modules_to_save": ("lm_head",), "batch_size": 1,
                                   "seq_len": 512}),
    ("lora save embed_tokens b2 s256 gc", {"method": "lora", "modules_to_save": ("embed_tokens",), "batch_size": 2,
                                           "seq_len": 256, "grad_checkpointing": True}),
    # LoRA on the LM head and the embedding (torchtune apply_lora_to_output; peft lora.Embedding)
    ("lora q,v + lm_head b2 s512", {"method": "lora", "lora_targets": ("auto", "lm_head"), "batch_size": 2,
                                    "seq_len": 512}),
    ("lora q,v + embed_tokens b1 s512", {"method": "lora", "lora_targets": ("auto", "embed_tokens"), "batch_size": 1,
                                         "seq_len": 512}),
    ("lora q,v + lm_head chunked b2 s512", {"method": "lora", "lora_targets": ("auto", "lm_head"), "loss": "chunked",
                                            "batch_size": 2, "seq_len": 512}),
    ("qlora all-linear + embed_tokens,lm_head b2 s256 gc", {**_QLORA, "lora_targets": ("all-linear", "embed_tokens",
                                                                                       "lm_head"),
                                                            "batch_size": 2, "seq_len": 256,
                                                            "grad_checkpointing": True}),
    # peft LoraConfig trainable_token_indices (TrainableTokensWrapper; Qwen2.5 and GPT-2 tie the head to it)
    ("lora tokens 64 b2 s512", {"method": "lora", "lora_trainable_tokens": 64, "batch_size": 2, "seq_len": 512}),
    ("lora tokens 16 b2 s256 gc", {"method": "lora", "lora_trainable_tokens": 16, "batch_size": 2, "seq_len": 256,
                                   "grad_checkpointing": True}),
    ("qlora tokens 32 all-linear b1 s512", {**_QLORA, "lora_targets": ("all-linear",), "lora_trainable_tokens": 32,
                                            "batch_size": 1, "seq_len": 512}),
)


def lora_variant_grid() -> list[dict[str, Any]]:
    """Issue 13's LoRA variants: 16 runs x 3 architectures, bf16 (amp-bf16 where a run says so), traced through
    peft's own DoRA and ModulesToSaveWrapper (trace/_peft.py wrap_lora). GPT-2's QLoRA runs are left out: peft's
    DoRA on a quantized Conv1D is the fan_in_fan_out path the emulated layer does not have."""
    cases = []
    for model in LORA_VARIANT_MODELS:
        for label, kw in LORA_VARIANT_RUNS:
            if model == "gpt2" and kw["method"] == "qlora":
                continue
            cases.append({"id": f"{model} | {label}", "model": model, "method": label,
                          "training": {"precision": "bf16", **kw}})
    return cases


# The new-tokens grid (`--grid vocab`, issue 13): transformers' resize_token_embeddings called by the tracer
# (trace/_hf.py build_model) on a tied head (qwen2.5-0.5b, 152k rows) and an untied one (tinyllama-1.1b, 32k rows),
# full fine-tuning (the rows trained with the model) and LoRA with the embedding and head as modules_to_save (what
# axolotl requires with `tokens` and LLaMA-Factory sets with resize_vocab), or without (the rows frozen).
VOCAB_MODELS = ("qwen2.5-0.5b", "tinyllama-1.1b")
_SAVED = ("embed_tokens", "lm_head")
VOCAB_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full +100 b1 s256", {"method": "full", "add_tokens": 100, "batch_size": 1, "seq_len": 256}),
    ("full +3 x64 b1 s256 gc", {"method": "full", "add_tokens": 3, "vocab_multiple": 64, "batch_size": 1,
                                "seq_len": 256, "grad_checkpointing": True}),
    # the vocabulary padded only (151,936 -> 151,968; 32,000 -> 32,064)
    ("full x96 b1 s128", {"method": "full", "vocab_multiple": 96, "batch_size": 1, "seq_len": 128}),
    ("lora +3 x32 save embed,head b1 s256", {"method": "lora", "add_tokens": 3, "vocab_multiple": 32,
                                             "modules_to_save": _SAVED, "batch_size": 1, "seq_len": 256}),
    ("lora +64 save embed,head b2 s128 gc", {"method": "lora", "add_tokens": 64, "modules_to_save": _SAVED,
                                             "batch_size": 2, "seq_len": 128, "grad_checkpointing": True}),
    ("lora +16 frozen rows b1 s256", {"method": "lora", "add_tokens": 16, "batch_size": 1, "seq_len": 256}),
)


def vocab_grid() -> list[dict[str, Any]]:
    """Issue 13's new tokens: 6 runs x 2 architectures (tied and untied head), bf16."""
    return [{"id": f"{model} | {label}", "model": model, "method": label, "training": {"precision": "bf16", **kw}}
            for model in VOCAB_MODELS for label, kw in VOCAB_RUNS]


INFERENCE_MODELS = ("gemma-2b", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3.2-1b", "phi-3-mini", "mistral-7b")
# (label, options): seq_len is the context = prompt + new_tokens - 1 (what the cache holds at the end).
INFERENCE_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("dynamic sdpa b1 p2048 n16", {"batch_size": 1, "seq_len": 2048 + 15, "new_tokens": 16}),
    ("static sdpa b4 p512 n64", {"batch_size": 4, "seq_len": 512 + 63, "new_tokens": 64, "cache_impl": "static"}),
    ("legacy sdpa b2 p1024 n32", {"batch_size": 2, "seq_len": 1024 + 31, "new_tokens": 32, "cache_impl": "legacy"}),
    ("dynamic eager b1 p1024 n16", {"batch_size": 1, "seq_len": 1024 + 15, "new_tokens": 16, "attention": "eager"}),
    ("dynamic sdpa logits-all b4 p256 n32", {"batch_size": 4, "seq_len": 256 + 31, "new_tokens": 32,
                                             "logits": "all"}),
    ("static eager b2 p512 n64", {"batch_size": 2, "seq_len": 512 + 63, "new_tokens": 64, "cache_impl": "static",
                                  "attention": "eager"}),
    ("legacy eager b4 p256 n8", {"batch_size": 4, "seq_len": 256 + 7, "new_tokens": 8, "cache_impl": "legacy",
                                 "attention": "eager"}),
    # bitsandbytes storage (trace/_hf.py QuantLinear): nf4 dequantizes per matmul (gemv for one row), int8
    # quantizes the input and accumulates in int32.
    ("nf4 dynamic sdpa b2 p1024 n16", {"batch_size": 2, "seq_len": 1024 + 15, "new_tokens": 16,
                                       "weight_dtype": "nf4"}),
    ("int8 dynamic sdpa b1 p512 n16", {"batch_size": 1, "seq_len": 512 + 15, "new_tokens": 16,
                                       "weight_dtype": "int8"}),
)


def inference_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label}", "model": model, "method": "inference",
             "training": dict(kw, mode="inference", precision="bf16")}
            for model in INFERENCE_MODELS for label, kw in INFERENCE_RUNS]


# The sharded grid (`--grid sharded`, issue 19): what memory/distributed.py gathers or holds under sharding and
# tp/pp is built from memory/weights.py tensor_groups' per-part bytes (the root: embeddings, final norm, head, and
# each layer). The tracer's model is the reference: built on the meta device and set up for the method as
# `trace` does (trace/_run.py _prepare: peft adapters, the emulated bitsandbytes storage), its parameters and
# buffers are summed outside the decoder layers (root) and in layer 0, then compared with the estimate's.
SHARDED_MODELS = ("gpt2", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3.2-1b")
SHARDED_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora q,v", {"method": "lora", "precision": "bf16", "lora_targets": ("q_proj", "v_proj")}),
    ("lora all-linear bf16 adapters", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",),
                                       "adapter_dtype": "bf16"}),
    ("qlora nf4", METHODS[4][1]),
    ("qlora nf4 no double-quant", {**METHODS[4][1], "double_quant": False}),
    ("qlora int8", {**METHODS[4][1], "quant_bits": 8}),
    ("freeze 4", {"method": "freeze", "precision": "bf16", "freeze_layers": 4}),
    ("ia3", {"method": "ia3", "precision": "bf16", "lora_targets": ("auto",)}),
)


def sharded_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label}", "model": model, "method": label, "training": dict(kw, batch_size=1, seq_len=8)}
            for model in SHARDED_MODELS for label, kw in SHARDED_METHODS]


def _sharded_row(case: dict[str, Any]) -> dict[str, Any]:
    """The root's and layer 0's bytes: estimate (tensor_groups) vs the tracer's model (parameters + buffers)."""
    from vramcalc.core.memory.precision import recipe_of, resolve_precision
    from vramcalc.core.memory.weights import tensor_groups
    from vramcalc.trace._hf import build_model, find_layers, model_dtype
    from vramcalc.trace._run import _prepare

    model, training = _spec(case)
    hf, _ = build_model(model, training, model_dtype(resolve_precision(training)))
    assert model.num_layers is not None
    layers = list(find_layers(hf, model.num_layers))
    hf = _prepare(hf, model, training, [])

    def tensors(m: Any) -> dict[int, Any]:
        return {id(t): t for t in (*m.parameters(), *m.buffers())}  # a tied weight once

    def nbytes(ts: Any) -> int:
        return sum(t.numel() * t.element_size() for t in ts)

    in_layers = {k for layer in layers for k in tensors(layer)}
    t_root = nbytes(t for k, t in tensors(hf).items() if k not in in_layers)
    t_layer = nbytes(tensors(layers[0]).values())
    g = tensor_groups(model, training, recipe_of(training))
    e_root = sum(x.count * x.bytes_each() for x in (*g.root, *g.shared))
    e_layer = sum(x.count * x.bytes_each() for x in g.layers[0][1])
    return {"id": case["id"], "model": case["model"], "method": case["method"], "training": case["training"],
            "estimate": {"root": e_root, "layer0": e_layer}, "trace": {"root": t_root, "layer0": t_layer},
            "error_pct": {"root": _err(e_root, t_root), "layer0": _err(e_layer, t_layer)}}


def sharded_main() -> None:
    rows = [_sharded_row(c) for c in sharded_grid()]
    versions = _versions()
    summ = {k: {"median": statistics.median(sorted(abs(r["error_pct"][k]) for r in rows)),
                "max": max(abs(r["error_pct"][k]) for r in rows)} for k in ("root", "layer0")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy_sharded.json").write_text(json.dumps({"versions": versions, "summary": summ, "rows": rows},
                                                              indent=1))
    lines = ["# Estimator vs tracer (the root's and one layer's bytes, issue 19)", "",
             f"{len(rows)} cases; tracer's model on {versions}. Reproduce: "
             "`PYTHONPATH=src python benchmarks/accuracy.py --grid sharded`. Error = (estimate − trace) / trace. "
             "The root is every parameter and buffer outside the decoder layers (embeddings, final norm, head, "
             "the rotary table); layer 0 its parameters, adapters and quantization buffers. What differs is what the "
             "core leaves out: the rotary table (inv_freq, head_dim / 2 fp32 values: 256 B) and bitsandbytes' 16-entry "
             "fp32 code table per 4-bit Linear (64 B each).", "",
             "| part | median abs % | max abs % |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v['median']:.3f} | {v['max']:.3f} |" for k, v in summ.items()]
    lines += ["", "| case | root estimate B | root trace B | error % | layer 0 estimate B | layer 0 trace B "
              "| error % |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        e, t, x = r["estimate"], r["trace"], r["error_pct"]
        lines.append(f"| {r['id']} | {e['root']:,} | {t['root']:,} | {x['root']:+.3f} | {e['layer0']:,} | "
                     f"{t['layer0']:,} | {x['layer0']:+.3f} |")
    (RESULTS / "accuracy_sharded.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# The optimizer grid (`--grid optimizers`, issue 13; 32 cases): full fine-tuning with the library optimizers
# (galore_torch 1.0 GaLoreAdamW and GaLoreAdamW8bit, apollo_torch 1.0.3 APOLLOAdamW and APOLLO-Mini, adam_mini
# 1.1.1 Adam_mini) and transformers' Adafactor with beta1, on qwen2.5-0.5b (qwen2, 152k tied vocabulary) and
# tinyllama-1.1b (llama, 32k, untied head) × 15 runs (OPTIMIZER_RUNS: ranks 1-512, each target set, 16-bit and fp32
# master weights, fp32, freeze, optimizer in backward as HF's *_layerwise, checkpointing; GaLore 8-bit), and gpt2
# (Conv1D blocks: nothing to project) with Adam-mini and Adafactor. The tracer steps with update_proj_gap 1, so each
# traced step is a projection update (GaLore's SVD, APOLLO's new random matrix): the step that sets the peak. Traces
# in trace_cache_optimizers.json; written to accuracy_optimizers.{json,md}.
OPTIMIZER_MODELS = ("qwen2.5-0.5b", "tinyllama-1.1b")
OPTIMIZER_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("galore r128 bf16", {"optimizer": "galore-adamw", "precision": "bf16"}),
    ("galore r64 mixed-bf16", {"optimizer": "galore-adamw", "precision": "mixed-bf16", "optimizer_rank": 64}),
    ("galore r256 all-linear", {"optimizer": "galore-adamw", "optimizer_rank": 256, "optimizer_targets": "all-linear"}),
    ("galore r512 attn gc", {"optimizer": "galore-adamw", "optimizer_rank": 512, "optimizer_targets": "attn",
                             "grad_checkpointing": True, "batch_size": 2, "seq_len": 512}),
    ("galore layerwise", {"optimizer": "galore-adamw", "optimizer_in_bwd": True}),
    ("galore freeze", {"optimizer": "galore-adamw", "method": "freeze", "freeze_layers": 8}),
    ("apollo r128 bf16", {"optimizer": "apollo-adamw", "precision": "bf16"}),
    ("apollo r256 mlp fp32", {"optimizer": "apollo-adamw", "precision": "fp32", "optimizer_rank": 256,
                              "optimizer_targets": "mlp"}),
    ("apollo-mini bf16", {"optimizer": "apollo-mini"}),
    ("adam-mini bf16", {"optimizer": "adam-mini"}),
    ("adam-mini mixed-bf16 gc", {"optimizer": "adam-mini", "precision": "mixed-bf16", "grad_checkpointing": True,
                                 "batch_size": 2, "seq_len": 512}),
    ("adafactor-momentum bf16", {"optimizer": "adafactor-momentum"}),
    # galore_torch GaLoreAdamW8bit (HF optim galore_adamw_8bit): bitsandbytes 8-bit states of the projected moments
    ("galore-8bit r128 bf16", {"optimizer": "galore-adamw-8bit", "precision": "bf16"}),
    ("galore-8bit r16 mixed-bf16 all-linear", {"optimizer": "galore-adamw-8bit", "precision": "mixed-bf16",
                                               "optimizer_rank": 16, "optimizer_targets": "all-linear"}),
    ("galore-8bit layerwise", {"optimizer": "galore-adamw-8bit", "optimizer_in_bwd": True}),
)
OPTIMIZER_EXTRA = (("gpt2", "adam-mini bf16", {"optimizer": "adam-mini"}),
                   ("gpt2", "adafactor-momentum bf16", {"optimizer": "adafactor-momentum"}))


def optimizer_grid() -> list[dict[str, Any]]:
    runs = [(m, label, kw) for m in OPTIMIZER_MODELS for label, kw in OPTIMIZER_RUNS] + list(OPTIMIZER_EXTRA)
    cases = []
    for model, label, kw in runs:
        opts = {"method": "full", "precision": "bf16", "batch_size": 1, "seq_len": 256, **kw}
        cases.append({"id": f"{model} | {label} | b{opts['batch_size']} s{opts['seq_len']}", "model": model,
                      "method": label, "training": opts})
    return cases


# Issue 14's online RL: TRL GRPOTrainer steps (trace/_rl.py: generate() with sampling on the generation batch, the
# no-grad log-prob passes, _compute_loss through the fused head), vLLM off. Prompt 256 + 16 completion tokens
# (a short completion keeps the traced decode loop short; the cache and logits scale with it the same way).
_GRPO = {"objective": "grpo", "seq_len": 272, "prompt_len": 256, "num_generations": 4}
_RLOO = {"objective": "rloo", "seq_len": 272, "prompt_len": 256, "num_generations": 2, "beta": 0.05}
_ODPO = {"objective": "online-dpo", "seq_len": 272, "prompt_len": 256}
RL_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("grpo full", {**_FULL, **_GRPO, "batch_size": 4}),
    ("grpo full beta copy gc", {**_FULL, **_GRPO, **GC, "batch_size": 4, "beta": 0.04}),
    ("grpo lora beta adapters-off gc", {**_LORA, **_GRPO, **GC, "batch_size": 4, "beta": 0.04}),
    ("grpo lora generation peak", {**_LORA, **_GRPO, "batch_size": 2, "steps_per_generation": 8}),
    ("grpo qlora gc", {**_QLORA, **_GRPO, **GC, "batch_size": 4}),
    # GRPO with vLLM (memory/rl.py): no generate() on the policy; the old policy's pass always runs (importance
    # sampling), beside vLLM's sampling log-probs; server mode streams the weights through packed buffers. The
    # colocated engine's share of the GPU is overhead (not a tensor of the training step), so the tensor peak is
    # the step's.
    ("grpo full vllm colocate", {**_FULL, **_GRPO, "batch_size": 4, "use_vllm": "colocate"}),
    ("grpo lora vllm colocate sleep gc", {**_LORA, **_GRPO, **GC, "batch_size": 4, "beta": 0.04,
                                          "use_vllm": "colocate", "vllm_sleep": True}),
    ("grpo full vllm server", {**_FULL, **_GRPO, "batch_size": 4, "use_vllm": "server"}),
    # TRL RLOOTrainer (memory/rl.py): GRPO's generation and step, the old policy's pass always, the loss per sequence;
    # RLOOConfig's defaults beta 0.05 (a reference) and num_generations 2
    ("rloo full", {**_FULL, **_RLOO, "batch_size": 4}),
    ("rloo lora adapters-off gc", {**_LORA, **_RLOO, **GC, "batch_size": 4}),
    ("rloo qlora generation peak", {**_QLORA, **_RLOO, "batch_size": 2, "steps_per_generation": 8}),
    ("rloo lora vllm colocate beta 0", {**_LORA, **_RLOO, "batch_size": 4, "beta": 0.0, "use_vllm": "colocate"}),
    # TRL OnlineDPOTrainer (memory/online_dpo.py, trace/_online_dpo.py): generate() of 2 completions per prompt in every
    # micro-batch, then the policy's and the reference's full logits and log-softmax (no fused head); vLLM off,
    # reward functions as callables; under checkpointing (OnlineDPOConfig's default) generate() runs without a cache
    ("online-dpo full", {**_FULL, **_ODPO, "batch_size": 2}),
    ("online-dpo full accum 2", {**_FULL, **_ODPO, "batch_size": 2, "grad_accum": 2}),
    ("online-dpo full long completion", {**_FULL, **_ODPO, "batch_size": 2, "prompt_len": 208}),
    ("online-dpo lora adapters-off", {**_LORA, **_ODPO, "batch_size": 4}),
    ("online-dpo lora amp", {**_LORA, **_ODPO, "precision": "amp-bf16", "batch_size": 2}),
    ("online-dpo lora ref copy", {**_LORA, **_ODPO, "batch_size": 2, "ref_model": "copy"}),
    ("online-dpo lora b8", {**_LORA, **_ODPO, "batch_size": 8}),
    ("online-dpo qlora", {**_QLORA, **_ODPO, "batch_size": 4}),
    ("online-dpo full gc uncached generation", {**_FULL, **_ODPO, **GC, "batch_size": 2}),
    ("online-dpo lora gc uncached generation", {**_LORA, **_ODPO, **GC, "batch_size": 4}),
    # Online DPO with vLLM (memory/rl.py vllm_view / sync_bytes): no generate() on the policy; colocated, the
    # engine's share is overhead (the tensor peak is the step's); server mode syncs one parameter at a time
    ("online-dpo full vllm colocate", {**_FULL, **_ODPO, "batch_size": 2, "use_vllm": "colocate"}),
    ("online-dpo lora vllm colocate sleep gc", {**_LORA, **_ODPO, **GC, "batch_size": 4, "use_vllm": "colocate",
                                                "vllm_sleep": True}),
    ("online-dpo full vllm server", {**_FULL, **_ODPO, "batch_size": 2, "use_vllm": "server"}),
    # Online DPO with a reward model (memory/reward_scoring.py): AutoModelForSequenceClassification(num_labels=1)
    # scoring the 2B rows under inference_mode after the reference; its weights beside the step's
    ("online-dpo full reward qwen2.5-0.5b", {**_FULL, **_ODPO, "batch_size": 2, "reward_model": "qwen2.5-0.5b"}),
    ("online-dpo lora amp reward gpt2 fp32", {**_LORA, **_ODPO, "precision": "amp-bf16", "batch_size": 2,
                                              "reward_model": "gpt2", "reward_dtype": "fp32"}),
    # GRPO / RLOO with a reward model in reward_funcs: it scores the whole generation batch after the log-prob passes
    ("grpo full reward qwen2.5-0.5b", {**_FULL, **_GRPO, "batch_size": 4, "reward_model": "qwen2.5-0.5b"}),
    ("rloo lora reward gpt2 generation peak", {**_LORA, **_RLOO, "batch_size": 2, "steps_per_generation": 8,
                                               "reward_model": "gpt2"}),
)


def rl_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']} p{kw['prompt_len']}", "model": model,
             "method": label, "training": dict(kw)} for model in PREFERENCE_MODELS for label, kw in RL_RUNS]


# PPO (`--grid ppo`, issue 14): TRL 0.19.1's PPOTrainer update (trace/_ppo.py rewrites its loop from source:
# batch_generation with every step's fp32 scores kept, the reference / value / reward models' no-grad forwards with
# output_hidden_states, then PolicyAndValueWrapper's micro-batch, backward, the step and the entropy), the value and
# reward models the policy's own preset (TRL's examples train the reward model from the same base), query 256 +
# response 16 (a short response keeps the traced decode loop short). Written to accuracy_ppo.{json,md}.
_PPO = {"objective": "ppo", "seq_len": 272, "prompt_len": 256}
PPO_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ppo full copy", {**_FULL, **_PPO, "batch_size": 2}),
    ("ppo lora adapters-off", {**_LORA, **_PPO, "batch_size": 4}),
    ("ppo qlora adapters-off", {**_QLORA, **_PPO, "batch_size": 2}),
)


def ppo_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']} p{kw['prompt_len']}", "model": model,
             "method": label, "training": {**kw, "reward_model": model}}
            for model in PREFERENCE_MODELS for label, kw in PPO_RUNS]


# The Unsloth grid (`--grid unsloth`, issue 13; 55 cases): Unsloth's kernels (--kernels unsloth, memory/unsloth.py;
# trace/_unsloth.py emulates Fast_RMS_Layernorm, LoRA_QKV / LoRA_W / LoRA_MLP, in-place RoPE and QLoRA's global
# dequantization buffer) on tinyllama-1.1b (llama, 32k untied), llama-3.2-1b (llama, 128k tied), mistral-7b
# (mistral, 14,336-wide MLP) and qwen2.5-0.5b (152k tied; its biased q/k/v keep peft's layers), the presets at full
# depth (torchtune's offload stash holds the last five packed tensors at the loss: a 4-layer cut would make that a
# large share) x LoRA / QLoRA NF4 (all seven projections, bf16,
# no kbit prep, as the stack) x no checkpointing (hf loss) / Unsloth's offloaded checkpointing with Cut CE (the
# stack) x b2 s512 / b1 s2048; then checkpointing without offload + Cut CE (the peak in a layer's backward, without
# the offload stash) at b2 s1024 on each model and method but mistral QLoRA.
# Then 16 cases of the groups one by one (UNSLOTH_PARTIAL).
# Written to accuracy_unsloth.{json,md}.
UNSLOTH_MODELS = ("tinyllama-1.1b", "llama-3.2-1b", "mistral-7b", "qwen2.5-0.5b")
UNSLOTH_METHODS = (("lora", {"method": "lora"}), ("qlora", {"method": "qlora", "kbit_prep": False}))
UNSLOTH_SAVERS = (("no-gc", {}), ("gc+offload+cut", {**GC, "activation_offload": True, "loss": "cut"}))
UNSLOTH_SHAPES = ({"batch_size": 2, "seq_len": 512}, {"batch_size": 1, "seq_len": 2048})


def unsloth_grid() -> list[dict[str, Any]]:
    base = {"precision": "bf16", "lora_targets": ("all-linear",), "kernels": "unsloth"}
    cases = []
    for model in UNSLOTH_MODELS:
        for label, mkw in UNSLOTH_METHODS:
            for saver, skw in UNSLOTH_SAVERS:
                for shape in UNSLOTH_SHAPES:
                    cases.append({"id": f"{model} | {label} | {saver} | b{shape['batch_size']} s{shape['seq_len']}",
                                  "model": model, "method": label, "training": dict(base, **mkw, **skw, **shape)})
            if (model, label) != ("mistral-7b", "qlora"):
                cases.append({"id": f"{model} | {label} | gc+cut | b2 s1024", "model": model, "method": label,
                              "training": dict(base, **mkw, **GC, loss="cut", batch_size=2, seq_len=1024)})
    # Unsloth's kernels group by group (--kernels unsloth:GROUPS, as axolotl's unsloth_lora_qkv / unsloth_lora_o /
    # unsloth_lora_mlp / unsloth_rms_norm / unsloth_rope keys patch them; Llama, flash attention as axolotl's
    # LlamaFlashAttention2 patch needs; unsloth_lora_mlp on Mistral too).
    part = {"precision": "bf16", "lora_targets": ("all-linear",), "attention": "flash"}
    for model, label, saver, shape, sets in UNSLOTH_PARTIAL:
        mkw = dict(UNSLOTH_METHODS)[label]
        skw = {"no-gc": {}, "gc+cut": {**GC, "loss": "cut"}}[saver]
        for chosen in sets:
            cases.append({"id": f"{model} | {label} | unsloth:{chosen} | {saver} | b{shape[0]} s{shape[1]}",
                          "model": model, "method": label,
                          "training": dict(part, **mkw, **skw, kernels=f"unsloth:{chosen}", batch_size=shape[0],
                                           seq_len=shape[1])})
    return cases


# The axolotl-kernels grid (`--grid axolotl-kernels`, issue 13; 36 cases): axolotl's own LoRA kernels
# (--kernels axolotl:GROUPS, memory/axolotl_kernels.py; trace/_axolotl.py emulates LoRA_QKV / LoRA_O / LoRA_MLP of
# axolotl kernels/lora.py at 067b021c, which axolotl turns on by itself for LoRA / QLoRA) on Llama (tinyllama-1.1b),
# Qwen2 (qwen2.5-0.5b: biased q/k/v, added in place), Qwen3 (qwen3-0.6b: q/k norms after LoRA_QKV) and Mistral
# (mistral-7b-v0.1), each config.json cut to FAMILY_LAYERS layers, all seven projections adapted, bf16: all three
# groups x LoRA / QLoRA NF4 (no kbit prep) x no checkpointing (transformers' loss) / checkpointing + Cut CE (the peak
# in a layer's backward) at b2 s512; each group alone on Llama and Qwen3 (LoRA / QLoRA, checkpointing + Cut CE, b2
# s512); all three groups at b1 s2048 with checkpointing + Cut CE (LoRA); all three with lora_dropout 0.05 on Llama
# and Qwen3 (LoRA / QLoRA, checkpointing + Cut CE, b2 s512). Written to accuracy_axolotl-kernels.{json,md}.
AXOLOTL_KERNEL_MODELS = ("tinyllama-1.1b", "qwen2.5-0.5b", "qwen3-0.6b", "mistral-7b-v0.1")
AXOLOTL_KERNEL_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lora", {"method": "lora"}), ("qlora", {"method": "qlora", "kbit_prep": False}))
AXOLOTL_KERNEL_SAVERS: tuple[tuple[str, dict[str, Any]], ...] = (("no-gc", {}), ("gc+cut", {**GC, "loss": "cut"}))


def axolotl_kernels_grid() -> list[dict[str, Any]]:
    base = {"precision": "bf16", "lora_targets": ("all-linear",)}
    cases = []

    def add(model: str, label: str, chosen: str, saver: str, b: int, s: int) -> None:
        cases.append({"id": f"{model} ({FAMILY_LAYERS} layers) | {label} | axolotl:{chosen} | {saver} | b{b} s{s}",
                      "model": f"hf:{model}", "method": label,
                      "training": dict(base, **dict(AXOLOTL_KERNEL_METHODS)[label],
                                       **dict(AXOLOTL_KERNEL_SAVERS)[saver], kernels=f"axolotl:{chosen}",
                                       batch_size=b, seq_len=s)})

    for model in AXOLOTL_KERNEL_MODELS:
        for label, _ in AXOLOTL_KERNEL_METHODS:
            for saver, _ in AXOLOTL_KERNEL_SAVERS:
                add(model, label, "qkv,o,mlp", saver, 2, 512)
    for model in ("tinyllama-1.1b", "qwen3-0.6b"):
        for label, _ in AXOLOTL_KERNEL_METHODS:
            for chosen in ("qkv", "o", "mlp"):
                add(model, label, chosen, "gc+cut", 2, 512)
    for model in AXOLOTL_KERNEL_MODELS:
        add(model, "lora", "qkv,o,mlp", "gc+cut", 1, 2048)
    for model in ("tinyllama-1.1b", "qwen3-0.6b"):  # lora_dropout 0.05 (axolotl's examples): X_drop and its mask
        for label, _ in AXOLOTL_KERNEL_METHODS:
            add(model, label, "qkv,o,mlp", "gc+cut", 2, 512)
            cases[-1]["id"] += " | dropout 0.05"
            cases[-1]["training"]["lora_dropout"] = 0.05
    return cases


# The Liger grid (`--grid liger`, issue 13; 44 cases): Liger's layer kernels (--kernels liger, memory/liger.py;
# trace/_liger.py emulates LigerRMSNormFunction, LigerSiLUMulFunction and LigerRopeFunction as
# _apply_liger_kernel_to_instance installs them) on Llama (tinyllama-1.1b) and Qwen3 (qwen3-0.6b: its q/k norms stay
# transformers'), each config.json cut to FAMILY_LAYERS layers, x full fine-tuning / LoRA all-linear / QLoRA NF4
# (pure 16-bit bf16: Liger's casting mode llama keeps the input in the compute dtype) x checkpointing off / on x
# b2 s512 / b1 s2048 (transformers' loss: the peak at log_softmax's backward); the same models and methods with Liger's
# fused linear cross-entropy (TRL / LLaMA-Factory's Liger runs: no logits, so the peak moves into the layers) at
# b2 s1024; then Mistral (mistral-7b-v0.1) and Qwen2 (qwen2.5-0.5b, biased q/k/v) LoRA at b2 s512, both losses, with
# checkpointing off and on. Written to accuracy_liger.{json,md}.
LIGER_MODELS = ("tinyllama-1.1b", "qwen3-0.6b")
LIGER_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full", {"method": "full", "precision": "pure-bf16"}),
    ("lora", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
    ("qlora", {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False}),
)
LIGER_SHAPES = ({"batch_size": 2, "seq_len": 512}, {"batch_size": 1, "seq_len": 2048})


def liger_grid() -> list[dict[str, Any]]:
    cases = []
    for model in LIGER_MODELS:
        for label, kw in LIGER_METHODS:
            for shape in LIGER_SHAPES:
                for gc in (False, True):
                    cases.append({"id": f"{model} ({FAMILY_LAYERS} layers) | {label} | b{shape['batch_size']} "
                                  f"s{shape['seq_len']} | {'gc' if gc else 'no-gc'}", "model": f"hf:{model}",
                                  "method": label, "training": dict(kw, **shape, grad_checkpointing=gc,
                                                                    kernels="liger")})
        for label, kw in LIGER_METHODS:  # with Liger's fused linear cross-entropy: the peak moves into the layers
            for gc in (False, True):
                cases.append({"id": f"{model} ({FAMILY_LAYERS} layers) | {label} | fused-linear | b2 s1024 | "
                              f"{'gc' if gc else 'no-gc'}", "model": f"hf:{model}", "method": label,
                              "training": dict(kw, batch_size=2, seq_len=1024, grad_checkpointing=gc,
                                               loss="fused-linear", kernels="liger")})
    for model in ("mistral-7b-v0.1", "qwen2.5-0.5b"):
        for loss in ("hf", "fused-linear"):
            for gc in (False, True):
                cases.append({"id": f"{model} ({FAMILY_LAYERS} layers) | lora | {loss} | b2 s512 | "
                              f"{'gc' if gc else 'no-gc'}", "model": f"hf:{model}", "method": "lora",
                              "training": dict(LIGER_METHODS[1][1], batch_size=2, seq_len=512, grad_checkpointing=gc,
                                               loss=loss, kernels="liger")})
    return cases


# The BAdam grid (`--grid badam`, issue 13; 24 cases): LLaMA-Factory's use_badam layer mode (memory/badam.py; the
# tracer trains the bottom decoder layer, BAdam's worst block, with every other parameter frozen, and steps fp32 copies
# with torch AdamW, freeing each 16-bit gradient as its copy is made: trace/_optim.py MasterWeightOptimizer) on
# tinyllama-1.1b (llama, 32k untied, 22 layers), qwen2.5-0.5b (152k tied, q/k/v biases, 24 layers), llama-3.2-1b (128k
# tied, 16 layers) and phi-3-mini cut to 8 layers (fused qkv and gate_up, 32k untied) x 6 runs: no checkpointing,
# checkpointing, eager attention, checkpointing with torchtune's chunked loss, a short step whose peak is the
# optimizer step, gradient accumulation. Written to accuracy_badam.{json,md}, its traces to trace_cache_badam.json.
BADAM_MODELS = ("tinyllama-1.1b", "qwen2.5-0.5b", "llama-3.2-1b", "cut:phi-3-mini:8")
BADAM_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("badam", {"batch_size": 2, "seq_len": 512}),
    ("badam gc", {**GC, "batch_size": 2, "seq_len": 512}),
    ("badam eager", {"attention": "eager", "batch_size": 1, "seq_len": 512}),
    ("badam gc chunked", {**GC, "loss": "chunked", "batch_size": 2, "seq_len": 1024}),
    ("badam step peak", {"batch_size": 1, "seq_len": 64}),
    ("badam accum 2", {"grad_accum": 2, "batch_size": 2, "seq_len": 256}),
)


def badam_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']}", "model": model, "method": label,
             "training": {"method": "full", "badam": True, **kw}} for model in BADAM_MODELS for label, kw in BADAM_RUNS]


# The upcast grid (`--grid upcast`, issue 13; 16 cases): LLaMA-Factory's upcast_lmhead_output (--upcast-logits,
# memory/upcast.py; the tracer registers the same fp32 forward hook on lm_head) on tinyllama-1.1b (llama, 32k untied)
# and qwen2.5-0.5b (152k tied), cut to 4 layers: full fine-tuning in pure bf16 (a trained 16-bit head), LoRA and QLoRA
# (kbit_prep off, as in the other grids) on all-linear in bf16 at b2 s1024, and full fine-tuning under amp-bf16, whose
# fp32 head gets no hook (no change), at b2 s512; each without and with checkpointing. (amp-bf16 with checkpointing at
# b2 s1024 is +7.1 % on tinyllama, the trace's peak at the loss's forward: the same with or without the flag, as no hook
# is registered there.) Written to accuracy_upcast.{json,md}, its traces to trace_cache_upcast.json.
UPCAST_MODELS = ("tinyllama-1.1b", "qwen2.5-0.5b")
UPCAST_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16", "batch_size": 2, "seq_len": 1024}),
    ("lora", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",), "batch_size": 2,
              "seq_len": 1024}),
    ("qlora", {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False,
               "batch_size": 2, "seq_len": 1024}),
    ("full amp-bf16 (fp32 head: no hook)", {"method": "full", "precision": "amp-bf16", "batch_size": 2,
                                            "seq_len": 512}),
)


def upcast_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} ({FAMILY_LAYERS} layers) | {label} | upcast-logits | b{kw['batch_size']} "
             f"s{kw['seq_len']} | {'gc' if gc else 'no-gc'}", "model": f"hf:{model}", "method": label,
             "training": dict(kw, grad_checkpointing=gc, upcast_logits=True)}
            for model in UPCAST_MODELS for label, kw in UPCAST_METHODS for gc in (False, True)]
# The upcastln grid (`--grid upcastln`, issue 13; 32 cases): LLaMA-Factory's upcast_layernorm over 16-bit weights
# (--upcast-norms, memory/upcast_norms.py; the tracer casts every 1-D parameter named like a norm to fp32 and runs the
# step under autocast, as the Trainer's bf16 flag does through accelerate) on tinyllama-1.1b (Llama RMSNorm: an fp32
# output each Linear casts), gemma-2b (Gemma's (1 + w) RMSNorm: a 16-bit output) and starcoder2-3b (LayerNorm with
# bias: autocast's fp32 layer_norm), cut to 4 layers: full fine-tuning in pure bf16 (fp32 norm gradients and
# states), LoRA and QLoRA (kbit_prep off, as in the other grids: the norms 16-bit before the cast) on all-linear in bf16
# (fp32 adapters, autocast matmuls), and freeze (2 of 4 layers frozen) in pure bf16 on tinyllama; b2 s1024, each
# without and with checkpointing. Those peak at the loss; twelve more cases put the peak in the layers: LoRA and QLoRA
# on the same three cut to a 2,048-token vocabulary (dequant_grid's "dequant:" models), without and with
# checkpointing. Written to
# accuracy_upcastln.{json,md}, its traces to trace_cache_upcastln.json.
UPCASTLN_MODELS = ("tinyllama-1.1b", "gemma-2b", "starcoder2-3b")
UPCASTLN_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full pure-bf16", {"method": "full", "precision": "pure-bf16"}),
    ("lora", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
    ("qlora", {"method": "qlora", "precision": "bf16", "lora_targets": ("all-linear",), "kbit_prep": False}),
)


def upcastln_grid() -> list[dict[str, Any]]:
    runs = [(model, label, kw) for model in UPCASTLN_MODELS for label, kw in UPCASTLN_METHODS]
    runs.append(("tinyllama-1.1b", "freeze 2 pure-bf16", {"method": "freeze", "precision": "pure-bf16",
                                                          "freeze_layers": 2}))
    cases = [{"id": f"{model} ({FAMILY_LAYERS} layers) | {label} | upcast-norms | b2 s1024 | {'gc' if gc else 'no-gc'}",
              "model": f"hf:{model}", "method": label,
              "training": dict(kw, batch_size=2, seq_len=1024, grad_checkpointing=gc, upcast_norms=True)}
             for model, label, kw in runs for gc in (False, True)]
    return cases + [{"id": f"{model} ({FAMILY_LAYERS} layers, vocab 2,048) | {label} | upcast-norms | b2 s1024 | "
                     f"{'gc' if gc else 'no-gc'}", "model": f"dequant:{model}", "method": label,
                     "training": dict(kw, batch_size=2, seq_len=1024, grad_checkpointing=gc, upcast_norms=True)}
                    for model in UPCASTLN_MODELS for label, kw in UPCASTLN_METHODS[1:] for gc in (False, True)]


# The autocast grid (`--grid autocast`, issue 13; 62 cases): --precision autocast-bf16, the Trainer's bf16 flag over a
# 16-bit load with fp32 trainable parameters (memory/precision.py; the tracer loads bf16 weights and runs the forward
# under CUDA autocast, as accelerate's prepare_model does): LoRA all-linear (peft's fp32 adapters,
# autocast_adapter_dtype), QLoRA NF4 all-linear (kbit_prep off, as LLaMA-Factory and TRL load it) and freeze (2 of 4
# layers frozen: the trained ones fp32, LLaMA-Factory's cast_trainable_params_to_fp32) on tinyllama-1.1b (Llama RMSNorm,
# 32k vocabulary), gpt2 (LayerNorm on autocast's fp32 list, Conv1D, tied 50k head) and llama-3.2-1b (128k tied
# vocabulary), cut to 4 layers; b1 s512 and b2 s1024, each without and with checkpointing; and LoRA with dropout 0.05
# on the first two, b1 s512. Those peak at the loss; twenty more put the peak in the layers: the four on tinyllama and
# gpt2 cut to a 2,048-token vocabulary, b2 s1024, without and with checkpointing, and LoRA under eager attention on
# those two, b1 s1024; and GPT-2's LoRA there under amp-bf16 (fp32 weights, the same autocast). Written to
# accuracy_autocast.{json,md}, its traces to trace_cache_autocast.json.
AUTOCAST_MODELS = ("cut:tinyllama-1.1b:4", "cut:gpt2:4", "cut:llama-3.2-1b:4")
AUTOCAST_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lora", {"method": "lora", "lora_targets": ("all-linear",)}),
    ("qlora", {"method": "qlora", "lora_targets": ("all-linear",), "kbit_prep": False}),
    ("freeze 2", {"method": "freeze", "freeze_layers": 2}),
)


def autocast_grid() -> list[dict[str, Any]]:
    runs = [(model, label, kw, b, s) for model in AUTOCAST_MODELS for label, kw in AUTOCAST_METHODS
            for b, s in ((1, 512), (2, 1024))]
    # LoRA dropout (TRL's and most axolotl files' 0.05): dropout's fp32 output and 1-byte mask beside lora_A's cast
    dropout = ("lora dropout 0.05", {**AUTOCAST_METHODS[0][1], "lora_dropout": 0.05})
    runs += [(model, *dropout, 1, 512) for model in AUTOCAST_MODELS[:2]]
    # the peak in the layers: the first two with a 2,048-token vocabulary (dequant_grid's "dequant:" models)
    runs += [(f"dequant:{model.split(':')[1]}", label, kw, 2, 1024) for model in AUTOCAST_MODELS[:2]
             for label, kw in (*AUTOCAST_METHODS, dropout)]
    # eager attention: softmax on autocast's fp32 list (fp32 probabilities saved per key), the peak in the layers
    runs += [(f"dequant:{model.split(':')[1]}", "lora eager", {**AUTOCAST_METHODS[0][1], "attention": "eager"}, 1, 1024)
             for model in AUTOCAST_MODELS[:2]]
    # amp-bf16 (fp32 weights under the same autocast): gelu_new's fp32 pow makes GPT-2's MLP gradients fp32 there too
    runs += [("dequant:gpt2", "lora", {**AUTOCAST_METHODS[0][1], "precision": "amp-bf16"}, 2, 1024)]
    return [{"id": f"{model} | {label} | {kw.get('precision', 'autocast-bf16')} | b{b} s{s} | "
                   f"{'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc}}
            for model, label, kw, b, s in runs for gc in (False, True)]


# The autocast-run grid (`--grid autocast-run`, issue 13; 48 cases): --precision autocast-bf16 with what real run
# files set beside it: TRL's DPOTrainer with use_peft, whose reference is the policy with its adapters disabled
# (trl/trainer/dpo_trainer.py compute_ref_log_probs: peft use_adapter inside accelerator.autocast()), on LoRA and
# QLoRA NF4 all-linear (kbit_prep off: TRL 1.16's DPOTrainer calls no prepare_model_for_kbit_training), on the
# autocast grid's three models cut to 4 layers (Llama 32k, GPT-2, a 128k tied vocabulary), b1 s512 p128 and b2 s1024
# p256, each without and with checkpointing; and LoRA with lora_dropout 0.05 (TRL's DPO scripts; DPOConfig
# disable_dropout zeroes it), b1 s512 p128; and SFT LoRA with --loss fused-linear, cut and chunked (the tracer's
# emulated Liger / Apple kernels and torchtune's chunked loss as is, trace/_loss.py), b2 s1024. The checkpointed DPO
# cases peak in a layer's rerun, 0.6 to 3.4 % over (the autocast grid's "dequant:" LoRA / QLoRA cases with
# checkpointing show the same: +2.2 to +4.2 %); fused-linear and cut peak in the layers too. Written to
# accuracy_autocast-run.{json,md}, its traces to trace_cache_autocast-run.json.
AUTOCAST_RUN_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("dpo lora adapters-off", {**AUTOCAST_METHODS[0][1], "objective": "dpo"}),
    ("dpo qlora adapters-off", {**AUTOCAST_METHODS[1][1], "objective": "dpo"}),
    # TRL's DPO scripts' lora_dropout 0.05: DPOConfig disable_dropout zeroes peft's lora_dropout modules too
    ("dpo lora dropout 0.05 adapters-off", {**AUTOCAST_METHODS[0][1], "objective": "dpo", "lora_dropout": 0.05}),
)


AUTOCAST_RUN_LOSSES = ("fused-linear", "cut", "chunked")


def autocast_run_grid() -> list[dict[str, Any]]:
    runs = [(model, label, kw, b, s, p) for model in AUTOCAST_MODELS for label, kw in AUTOCAST_RUN_METHODS[:2]
            for b, s, p in ((1, 512, 128), (2, 1024, 256))]
    runs += [(model, *AUTOCAST_RUN_METHODS[2], 1, 512, 128) for model in AUTOCAST_MODELS]
    # SFT LoRA with the loss savers (Liger's fused linear cross-entropy, Apple's cut, torchtune's chunked; the
    # tracer's emulated kernels, trace/_loss.py), b2 s1024
    runs += [(model, f"lora loss {loss}", {**AUTOCAST_METHODS[0][1], "loss": loss}, 2, 1024, 0)
             for model in AUTOCAST_MODELS for loss in AUTOCAST_RUN_LOSSES]
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s}{f' p{p}' if p else ''} | {'gc' if gc else 'no-gc'}",
             "model": model, "method": label,
             "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s, "prompt_len": p,
                          "grad_checkpointing": gc}}
            for model, label, kw, b, s, p in runs for gc in (False, True)]


# The autocast-run2 grid (`--grid autocast-run2`, issue 13): autocast-run's DPO (TRL's DPOTrainer with use_peft, the
# adapters-off reference) with LoRA / QLoRA NF4 all-linear (kbit_prep off) at b1 s512 p128 and b2 s1024 p256, and SFT
# LoRA with --loss fused-linear, cut and chunked at b2 s1024, each without and with checkpointing, on autocast2's
# Qwen3 (0.6B, tied), Gemma 3 text (1B, tied), Phi-3 (untied, fused projections) and StarCoder2 (LayerNorm) cuts (4
# layers, a 2,048-token vocabulary); and TRL's IPO the same way (LoRA / QLoRA, b1 s512 p128) on each (72 cases).
# Written to accuracy_autocast-run2.{json,md}, its traces to trace_cache_autocast-run2.json.
AUTOCAST_RUN2_MODELS = ("dequant:qwen3-0.6b", "dequant:gemma-3-1b", "dequant:phi-3-mini-4k", "dequant:starcoder2-3b")


def autocast_run2_grid() -> list[dict[str, Any]]:
    runs = [(model, label, kw, b, s, p) for model in AUTOCAST_RUN2_MODELS for label, kw in AUTOCAST_RUN_METHODS[:2]
            for b, s, p in ((1, 512, 128), (2, 1024, 256))]
    runs += [(model, f"lora loss {loss}", {**AUTOCAST_METHODS[0][1], "loss": loss}, 2, 1024, 0)
             for model in AUTOCAST_RUN2_MODELS for loss in AUTOCAST_RUN_LOSSES]
    # TRL's IPO (DPOTrainer loss_type ipo) with peft, the same adapters-off reference under autocast, LoRA and QLoRA
    # on each model, b1 s512 p128
    runs += [(model, f"ipo {label.split()[1]} adapters-off", {**kw, "objective": "ipo"}, 1, 512, 128)
             for model in AUTOCAST_RUN2_MODELS for label, kw in AUTOCAST_RUN_METHODS[:2]]
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s}{f' p{p}' if p else ''} | {'gc' if gc else 'no-gc'}",
             "model": model, "method": label,
             "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s, "prompt_len": p,
                          "grad_checkpointing": gc}}
            for model, label, kw, b, s, p in runs for gc in (False, True)]

# The autocast MoE grid (`--grid autocast-moe`, issues 13 and 15): --precision autocast-bf16 (the Trainer's bf16
# flag over a bf16 load, CUDA autocast as in autocast_grid) on the moe grid's toys (MOE_SHAPES: Mixtral, Qwen1.5-MoE
# with its shared expert, Qwen3-MoE with q/k norms; fused 3-D experts, integrations/moe.py): LoRA all-linear (peft
# 0.21 adapts Mixtral's and Qwen3-MoE's expert stacks through ParamWrapper, Qwen1.5-MoE's shared expert only) and
# QLoRA NF4 all-linear (kbit_prep off, as LLaMA-Factory and TRL load it; the experts stay bf16) x b2 s256 / b1 s1024
# x checkpointing off / on (24 cases; freeze is refused: its fp32 trained experts fail grouped_mm's bf16 check).
# Written to accuracy_autocast-moe.{json,md}, its traces to trace_cache_autocast-moe.json.
AUTOCAST_MOE_MODELS = ("moe:mixtral", "moe:qwen2_moe", "moe:qwen3_moe")


def autocast_moe_grid() -> list[dict[str, Any]]:
    methods = AUTOCAST_METHODS[:2]
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc}}
            for model in AUTOCAST_MOE_MODELS for label, kw in methods for b, s in ((2, 256), (1, 1024))
            for gc in (False, True)]


# The autocast VLM grid (`--grid autocast-vlm`, issues 13 and 15): --precision autocast-bf16 on vision-language models
# with LoRA / QLoRA NF4 (kbit_prep off) on the language model only (`--lora-targets all-linear,lm-only`: LLaMA-Factory's
# lora_target all with its default frozen tower and projector), the tower frozen: llava-1.5-7b as published
# (VLM_SHAPES) and the Qwen2-VL / Qwen2.5-VL cuts of the qwen-vl grid (QWEN_VL_SHAPES) x checkpointing off / on
# (24 cases). Written to accuracy_autocast-vlm.{json,md}, its traces to trace_cache_autocast-vlm.json.
AUTOCAST_VLM_MODELS = (("vlm:llava-1.5-7b-hf", VLM_SHAPES), *((f"qwenvl:{n}", QWEN_VL_SHAPES) for n in QWEN_VL_CUTS))


def autocast_vlm_grid() -> list[dict[str, Any]]:
    methods = [(label, {**kw, "lora_targets": ("all-linear", "lm-only")}) for label, kw in AUTOCAST_METHODS[:2]]
    return [{"id": f"{model} | {label} all-linear,lm-only | autocast-bf16 | b{sh['batch_size']} s{sh['seq_len']} "
                   f"i{sh['images']} | {'gc' if gc else 'no-gc'}", "model": model, "method": label,
             "training": {"precision": "autocast-bf16", **kw, **sh, "grad_checkpointing": gc}}
            for model, shapes in AUTOCAST_VLM_MODELS for label, kw in methods for sh in shapes for gc in (False, True)]


# The autocast2 grid (`--grid autocast2`, issue 13; 96 cases): --precision autocast-bf16 as in the autocast grid (a
# bf16 load, the step under CUDA autocast, peft's fp32 adapters / fp32 trained layers) on the other dense decoders,
# each cut to 4 layers and a 2,048-token vocabulary (dequant_grid's "dequant:" models, the peak in the layers): LoRA
# all-linear, QLoRA NF4 all-linear (kbit_prep off) and freeze (2 of 4 layers frozen) on Qwen3 (0.6B tied, 8B untied),
# OLMo 2, Gemma, Gemma 2, Gemma 3 text, Phi-3 and StarCoder2, b1 s512 and b2 s1024, without and with checkpointing
# (freeze with checkpointing: the tied heads' lowest trained layer and the wide models' frozen layer backward,
# memory/__init__.py _freeze_bottom_gradient_bytes, backward.frozen). Written to accuracy_autocast2.{json,md}, its
# traces to trace_cache_autocast2.json.
AUTOCAST2_MODELS = ("dequant:qwen3-0.6b", "dequant:qwen3-8b", "dequant:olmo-2-0425-1b", "dequant:gemma-2b",
                    "dequant:gemma-2-2b", "dequant:gemma-3-1b", "dequant:phi-3-mini-4k", "dequant:starcoder2-3b")


def autocast2_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc}}
            for model in AUTOCAST2_MODELS for label, kw in AUTOCAST_METHODS for b, s in ((1, 512), (2, 1024))
            for gc in (False, True)]


# The autocast-dora grid (`--grid autocast-dora`, issue 13): --precision autocast-bf16 with DoRA (peft use_dora;
# LLaMA-Factory's and axolotl's `use_dora: true` beside `bf16: true`): peft's DoraLinearLayer under CUDA autocast over
# the 16-bit weights, fp32 adapters and magnitudes, LoRA and QLoRA NF4 all-linear (kbit_prep off), on Llama
# (TinyLlama) and Qwen2.5-0.5B (q/k/v biases), each cut to 4 layers and a 2,048-token vocabulary (the "dequant:"
# models: the peak in the layers), b1 s512 and b2 s1024, without and with checkpointing; and Qwen2.5-0.5B with its
# 152k tied vocabulary (4 layers, the peak at the loss), LoRA b2 s1024; and lora_dropout 0.05: LoRA on both cuts at both
# shapes, QLoRA on TinyLlama at b2 s1024 (28 cases). (GPT-2 traced too, LoRA: -2.9 .. -6.3 % with
# checkpointing, refused: memory/upcast_norms.py AUTOCAST_DORA_FAMILIES.) Written to accuracy_autocast-dora.{json,md},
# its traces to trace_cache_autocast-dora.json.
AUTOCAST_DORA_MODELS = ("dequant:tinyllama-1.1b", "dequant:qwen2.5-0.5b")


def autocast_dora_grid() -> list[dict[str, Any]]:
    runs = [(model, f"dora {label}", {**kw, "dora": True}, b, s) for model in AUTOCAST_DORA_MODELS
            for label, kw in AUTOCAST_METHODS[:2] for b, s in ((1, 512), (2, 1024))]
    runs += [("cut:qwen2.5-0.5b:4", "dora lora", {**AUTOCAST_METHODS[0][1], "dora": True}, 2, 1024)]
    # lora_dropout 0.05 (axolotl's usual value): DoRA's F.linear on the dropped input saves autocast's 16-bit cast of
    # the weight's fp32 copy
    runs += [(model, f"dora {label} dropout 0.05", {**kw, "dora": True, "lora_dropout": 0.05}, b, s)
             for model in AUTOCAST_DORA_MODELS for label, kw in AUTOCAST_METHODS[:1]
             for b, s in ((1, 512), (2, 1024))]
    runs += [(AUTOCAST_DORA_MODELS[0], "dora qlora dropout 0.05",
              {**AUTOCAST_METHODS[1][1], "dora": True, "lora_dropout": 0.05}, 2, 1024)]
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc}}
            for model, label, kw, b, s in runs for gc in (False, True)]


# The autocast-kto grid (`--grid autocast-kto`, issue 13; 24 cases): TRL's KTOTrainer with use_peft under
# --precision autocast-bf16 (the reference the policy with its adapters disabled, kto_trainer.py compute_ref_log_probs,
# under the same autocast; the policy's KL forward under no_grad first), LoRA and QLoRA NF4 all-linear (kbit_prep off)
# on the autocast grid's three models cut to 4 layers (Llama 32k, GPT-2, a 128k tied vocabulary), b1 s512 p128 and b2
# s1024 p256, without and with checkpointing. Traced once the tracer's autocast cache stopped handing the KL forward's
# no_grad weight casts to the policy's forward (trace/_cuda.py _cast). Written to accuracy_autocast-kto.{json,md}, its
# traces to trace_cache_autocast-kto.json.
AUTOCAST_KTO_METHODS: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (f"kto {label} adapters-off", {**kw, "objective": "kto"}) for label, kw in AUTOCAST_METHODS[:2])


def autocast_kto_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s} p{p} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "prompt_len": p, "grad_checkpointing": gc}}
            for model in AUTOCAST_MODELS for label, kw in AUTOCAST_KTO_METHODS
            for b, s, p in ((1, 512, 128), (2, 1024, 256)) for gc in (False, True)]


# The autocast3 grid (`--grid autocast3`, issue 15; 56 cases): autocast2's --precision autocast-bf16 cases (LoRA
# all-linear, QLoRA NF4 all-linear with kbit_prep off, freeze 2 of 4 layers; b1 s512 and b2 s1024, without and with
# checkpointing) on the older dense decoders, each cut to 4 layers and a 2,048-token vocabulary (the "dequant:"
# models): GPT-NeoX (Pythia: parallel attention + MLP after two LayerNorms, partial rotary; LoRA and QLoRA: freeze is
# refused, its frozen layers' math-path attention peaks the forward, -9.55 % at b2 s1024), GPT-J (parallel,
# one LayerNorm, gelu_new), Phi-2 and Phi-1.5 (parallel, one LayerNorm, partial rotary, gelu_new; Phi-2's residual
# dropout 0.1) and OLMo 1 (non-parametric LayerNorm). BLOOM and Falcon were traced the same way and stay refused
# (upcast_norms.py AUTOCAST_FAMILIES): BLOOM's embedding LayerNorm makes the residual stream fp32 under autocast
# (-17 % with checkpointing); Falcon's QLoRA traces unquantized and its LoRA runs +10 to +34 % over. Written to
# accuracy_autocast3.{json,md}, its traces to trace_cache_autocast3.json.
AUTOCAST3_MODELS = ("dequant:pythia-410m", "dequant:gpt-j-6b", "dequant:phi-2", "dequant:phi-1.5", "dequant:olmo-1b")


def autocast3_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | autocast-bf16 | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc}}
            for model in AUTOCAST3_MODELS for label, kw in AUTOCAST_METHODS for b, s in ((1, 512), (2, 1024))
            for gc in (False, True) if not (model == "dequant:pythia-410m" and kw["method"] == "freeze")]

# The amp grid (`--grid amp`, issues 13 and 15): --precision amp-bf16 (fp32 weights under the Trainer's autocast, as
# HF Trainer's bf16=True over an fp32 load runs) with LoRA all-linear (fp32 adapters), on every dense family's
# published config.json cut to 4 layers and a 2,048-token vocabulary ("hfcut:" models: the layers' share of the peak,
# which a 32k-256k vocabulary's logits hide at these shapes), b2 s1024, checkpointing off and on; and BLOOM in bf16
# (its ALiBi attention's scores, activations.py _alibi_forward_scores), LoRA and full. Written to
# accuracy_amp.{json,md}, its traces to trace_cache_amp.json.
AMP_CONFIGS = ("tinyllama-1.1b", "mistral-7b-v0.1", "qwen2.5-0.5b", "qwen3-0.6b", "gemma-2b", "gemma-2-9b",
               "gemma-3-1b", "phi-2", "phi-3-mini-4k", "gpt2", "pythia-70m", "falcon-7b", "olmo-1b-hf",
               "olmo-2-0425-1b", "starcoder2-3b", "gpt-j-6b", "starcoderbase-1b", "bloom-560m")


def amp_grid() -> list[dict[str, Any]]:
    lora = {"method": "lora", "lora_targets": ("all-linear",)}
    runs = [(f"hfcut:{cfg}", "lora all-linear", {**lora, "precision": "amp-bf16"}) for cfg in AMP_CONFIGS]
    runs += [("hfcut:bloom-560m", "lora all-linear", {**lora, "precision": "bf16"}),
             ("hfcut:bloom-560m", "full", {"method": "full", "precision": "pure-bf16"})]
    return [{"id": f"{model} | {label} | {kw['precision']} | b2 s1024 | {'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {**kw, "batch_size": 2, "seq_len": 1024, "grad_checkpointing": gc}}
            for model, label, kw in runs for gc in (False, True)]



# The amp16 grid (`--grid amp16`, issue 15; 28 cases): --precision autocast-bf16 (16-bit weights, fp32 adapters /
# trained layers, the step under the Trainer's bf16 autocast) on Falcon-7B (parallel attention + MLP after one
# LayerNorm, multi-query attention on the math SDPA path: LoRA all-linear; freeze 2 of 4 layers)
# and BLOOM-560M (embedding LayerNorm, ALiBi eager attention: baddbmm scores, fp32 softmax; LoRA all-linear, QLoRA NF4
# all-linear with kbit_prep off, freeze 2 of 4 layers), their published config.json cut to 4 layers and a 2,048-token
# vocabulary ("hfcut:"), and GPT-NeoX's freeze (Pythia-410M, autocast3's "dequant:" cut), each b1 s512 and b2 s1024,
# without and with checkpointing; and --precision amp-bf16 full (what autocast-bf16's full run is) on Falcon and BLOOM,
# b2 s1024. Pythia's frozen layers record no graph: their sdpa is traced as CUDA runs it, the fused kernel picked by
# dtype and shape (trace/_cuda.py _NO_GRAPH_FUSED, as a frozen vision tower's), not the emulation's math path (-9.55 %
# at b2 s1024 without: the math path's fp32 scores). Falcon's QLoRA (traced unquantized) stays refused (upcast_norms.py
# check_recipe); its freeze without checkpointing (the lowest trained layer's MLP backward, memory/__init__.py
# _falcon_freeze_lowest) was added after the first 26 cases, as 2 more ids (28 cases).
# Written to accuracy_amp16.{json,md}, its traces to trace_cache_amp16.json.
AMP16_RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hfcut:falcon-7b", ("lora", "freeze 2")),
    ("hfcut:bloom-560m", ("lora", "qlora", "freeze 2")),
    ("dequant:pythia-410m", ("freeze 2",)),
)


def amp16_grid() -> list[dict[str, Any]]:
    runs = [(model, label, kw, b, s) for model, labels in AMP16_RUNS for label, kw in AUTOCAST_METHODS
            if label in labels for b, s in ((1, 512), (2, 1024))]
    runs += [(model, "full", {"method": "full", "precision": "amp-bf16"}, 2, 1024) for model, _ in AMP16_RUNS[:2]]
    return [{"id": f"{model} | {label} | {kw.get('precision', 'autocast-bf16')} | b{b} s{s} | "
                   f"{'gc' if gc else 'no-gc'}", "model": model,
             "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                           "grad_checkpointing": gc},
             **({"fused_no_graph": True} if model.startswith("dequant:pythia") else {})}
            for model, label, kw, b, s in runs for gc in (False, True)]


# The Falcon bitsandbytes grid (`--grid falcon-bnb`, issue 13; 12 cases): QLoRA on Falcon-7B (its published config.json
# cut to 4 layers and a 2,048-token vocabulary, "hfcut:"), NF4 all-linear under bf16 and under autocast-bf16 and 8-bit
# all-linear under bf16, kbit_prep off (the tracer runs no prepare_model_for_kbit_training), b1 s512 and b2 s1024,
# without and with checkpointing. transformers 5's replace_with_bnb_linear replaces only `type(module) is nn.Linear`,
# and Falcon's Linears are FalconLinear: nothing is quantized, the tracer's emulation follows the same rule
# (trace/_hf.py quantize_blocks), and the estimate counts the LoRA it is (memory/unreplaced.py; before it, the
# 16-bit weights were counted NF4 / int8). Written to accuracy_falcon-bnb.{json,md}, its traces to
# trace_cache_falcon-bnb.json.
FALCON_BNB_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("qlora nf4 | bf16", {"method": "qlora", "precision": "bf16"}),
    ("qlora nf4 | autocast-bf16", {"method": "qlora", "precision": "autocast-bf16"}),
    ("qlora int8 | bf16", {"method": "qlora", "precision": "bf16", "quant_bits": 8}),
)


def falcon_bnb_grid() -> list[dict[str, Any]]:
    return [{"id": f"hfcut:falcon-7b | {label} | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": "hfcut:falcon-7b",
             "method": label, "training": {**kw, "lora_targets": ("all-linear",), "kbit_prep": False,
                                           "batch_size": b, "seq_len": s, "grad_checkpointing": gc}}
            for label, kw in FALCON_BNB_RUNS for b, s in ((1, 512), (2, 1024)) for gc in (False, True)]


# The QLoRA-rest grid (`--grid qlora-rest`, issue 15; 10 cases): QLoRA on the model_types no other grid traced it on.
# GPTBigCode (StarCoder-1: multi-query attention in one fused c_attn Linear; starcoderbase-1b's published config.json
# cut to 4 layers and a 2,048-token vocabulary, "hfcut:"), NF4 all-linear, b1 s512 and b2 s1024, checkpointing off and
# on, and eager at b1 s1024; DistilBERT (q_lin / k_lin / v_lin / out_lin, peft's default q_lin, v_lin) and XLM-R
# (RoBERTa's blocks under its own model_type) as sequence classifiers, b8 s512, checkpointing off and on (DistilBERT
# token-cls too, every block Linear: all-linear would adapt the classifier, which peft's TOKEN_CLS task also
# copies, and peft refuses that); kbit_prep off as in the other grids. gpt-oss (MXFP4 / 3-D expert Parameters) and
# Mamba-1 (its mixer reads dt_proj.weight and out_proj.weight) are refused: bitsandbytes cannot serve them. Written
# to accuracy_qlora-rest.{json,md}, its traces to trace_cache_qlora-rest.json.
_QREST = {"method": "qlora", "precision": "bf16", "kbit_prep": False}
QLORA_REST_RUNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    *(("hfcut:starcoderbase-1b", f"qlora nf4 all-linear | b{b} s{sl} | {'gc' if gc else 'no-gc'}",
       {**_QREST, "lora_targets": ("all-linear",), "batch_size": b, "seq_len": sl, "grad_checkpointing": gc})
      for b, sl in ((1, 512), (2, 1024)) for gc in (False, True)),
    ("hfcut:starcoderbase-1b", "qlora nf4 all-linear | b1 s1024 | eager | no-gc",
     {**_QREST, "lora_targets": ("all-linear",), "batch_size": 1, "seq_len": 1024, "attention": "eager"}),
    *(("distilbert-base-uncased", f"qlora seq-cls | b8 s512 | {'gc' if gc else 'no-gc'}",
       {**_QREST, "batch_size": 8, "seq_len": 512, "grad_checkpointing": gc}) for gc in (False, True)),
    ("distilbert-base-uncased", "qlora token-cls every block Linear | b8 s512 | no-gc",
     {**_QREST, "batch_size": 8, "seq_len": 512, "head": "token-cls",
      "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")}),
    *(("xlm-roberta-base", f"qlora seq-cls | b8 s512 | {'gc' if gc else 'no-gc'}",
       {**_QREST, "batch_size": 8, "seq_len": 512, "grad_checkpointing": gc}) for gc in (False, True)),
)


def qlora_rest_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label}", "model": model, "method": "qlora", "training": dict(kw)}
            for model, label, kw in QLORA_REST_RUNS]


# The LayerNorm-kept grid (`--grid lnkept`, issue 15): the decoders whose pre-norm is an nn.LayerNorm run in 16 bits
# (GPT-2, GPT-NeoX / Pythia, GPT-J, Phi-2, Falcon, BLOOM, StarCoder2, GPTBigCode; OLMo 1's weightless LayerNorm, which
# norms an fp32 copy, as the control), published configs cut to 4 layers and a 2,048-token vocabulary ("hfcut:"), LoRA
# all-linear bf16 and full pure-bf16, b2 s1024 and b1 s512, with checkpointing: the rerun's first LayerNorm saves the
# kept layer input itself (activations.py layernorm_saves_input). Written to accuracy_lnkept.{json,md}, its traces to
# trace_cache_lnkept.json.
LNKEPT_CONFIGS = ("gpt2", "pythia-70m", "gpt-j-6b", "phi-2", "falcon-7b", "bloom-560m", "starcoder2-3b",
                  "starcoderbase-1b", "olmo-1b-hf")


def lnkept_grid() -> list[dict[str, Any]]:
    runs = (("lora all-linear", {"method": "lora", "lora_targets": ("all-linear",), "precision": "bf16"}),
            ("full", {"method": "full", "precision": "pure-bf16"}))
    return [{"id": f"hfcut:{cfg} | {label} | {kw['precision']} | b{b} s{s} | gc", "model": f"hfcut:{cfg}",
             "method": label, "training": {**kw, "batch_size": b, "seq_len": s, "grad_checkpointing": True}}
            for cfg in LNKEPT_CONFIGS for label, kw in runs for b, s in ((2, 1024), (1, 512))]

# The LoRA-layers grid (`--grid lora-layers`, issue 13; 32 cases): LoRA on some decoder layers only (peft
# LoraConfig layers_to_transform, core/lora_layers.py) on tinyllama-1.1b (llama, 32k untied) and qwen2.5-0.5b (152k
# tied, q/k/v biases), both cut to 8 layers, x LoRA q,v and QLoRA NF4 all-linear x checkpointing off / on x the
# bottom (0-1), top (6-7) and a sparse (1,4,6) layer set; DoRA on the top layers, and eager attention at 1,024 tokens
# (LoRA on the middle layers 3-5 without checkpointing, QLoRA on the middle and the bottom layers with it), per model.
# Without checkpointing the layers below the lowest adapted one record no graph; with it every layer keeps its input
# (enable_input_require_grads). Written to accuracy_lora-layers.{json,md}, its traces to trace_cache_lora-layers.json.
LORA_LAYER_MODELS = ("cut:tinyllama-1.1b:8", "cut:qwen2.5-0.5b:8")
LORA_LAYER_SETS = (("bottom", (0, 1)), ("top", (6, 7)), ("sparse", (1, 4, 6)))


def lora_layers_grid() -> list[dict[str, Any]]:
    cases = []
    for model in LORA_LAYER_MODELS:
        for method, kw in (("lora", {"method": "lora", "precision": "bf16"}), ("qlora", _QLORA)):
            for gc in (False, True):
                for where, layers in LORA_LAYER_SETS:
                    cases.append({"id": f"{model} | {method} layers {where} | b2 s256 | {'gc' if gc else 'no-gc'}",
                                  "model": model, "method": method,
                                  "training": {**kw, "lora_layers": layers, "batch_size": 2, "seq_len": 256,
                                               "grad_checkpointing": gc}})
        cases.append({"id": f"{model} | lora dora all-linear layers top | b1 s256 | no-gc", "model": model,
                      "method": "lora", "training": {"method": "lora", "precision": "bf16", "dora": True,
                                                     "lora_targets": ("all-linear",), "lora_layers": (6, 7),
                                                     "batch_size": 1, "seq_len": 256}})
        # eager attention at a longer sequence: the layers' saved scores outweigh the logits
        for method, kw, gc, (where, layers) in (("lora", {"method": "lora", "precision": "bf16"}, False,
                                                  ("middle", (3, 4, 5))),
                                                 ("qlora", _QLORA, True, ("middle", (3, 4, 5))),
                                                 ("qlora", _QLORA, True, LORA_LAYER_SETS[0])):
            cases.append({"id": f"{model} | {method} layers {where} eager | b1 s1024 | {'gc' if gc else 'no-gc'}",
                          "model": model, "method": method,
                          "training": {**kw, "lora_layers": layers, "attention": "eager", "batch_size": 1,
                                       "seq_len": 1024, "grad_checkpointing": gc}})
    return cases


UNSLOTH_PARTIAL = (
    ("tinyllama-1.1b", "lora", "no-gc", (2, 512), ("qkv", "o", "mlp", "norm", "rope", "qkv,o", "qkv,o,mlp",
                                                   "norm,rope", "mlp,norm", "qkv,o,mlp,norm")),
    ("tinyllama-1.1b", "lora", "gc+cut", (2, 1024), ("qkv,o,mlp", "norm", "mlp,norm")),
    ("llama-3.2-1b", "qlora", "no-gc", (1, 2048), ("qkv,o,mlp", "norm,rope")),
    ("mistral-7b", "lora", "no-gc", (2, 512), ("mlp",)),
)


# The LISA grid (`--grid lisa`, issue 13; 24 cases): axolotl's lisa_n_layers (memory/lisa.py; the tracer builds the
# optimizer over every parameter, then switches the trained layers before each step as LISACallback does, bottom-up n at
# a time until every layer has had its optimizer states made, and reports a step with the top n trained:
# trace/_run.py lisa_schedule) on the BAdam grid's models x 5 runs: 2 layers, 2 with checkpointing, 4 with eager
# attention, 8 on a short step, 2 with gradient accumulation, 2 in pure bf16 (axolotl's bf16: true). Written to
# accuracy_lisa.{json,md}, its traces to trace_cache_lisa.json.
LISA_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lisa 2", {"lisa_layers": 2, "batch_size": 2, "seq_len": 512}),
    ("lisa 2 gc", {**GC, "lisa_layers": 2, "batch_size": 2, "seq_len": 512}),
    ("lisa 4 eager", {"lisa_layers": 4, "attention": "eager", "batch_size": 1, "seq_len": 512}),
    ("lisa 8 step peak", {"lisa_layers": 8, "batch_size": 1, "seq_len": 64}),
    ("lisa 2 accum 2", {"lisa_layers": 2, "grad_accum": 2, "batch_size": 2, "seq_len": 256}),
    ("lisa 2 pure-bf16", {"lisa_layers": 2, "precision": "pure-bf16", "batch_size": 2, "seq_len": 512}),
)


def lisa_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']}", "model": model, "method": label,
             "training": {"method": "full", **kw}} for model in BADAM_MODELS for label, kw in LISA_RUNS]


# The context-parallel grid (`--grid cp`, issue 13; 48 cases): axolotl context_parallel_size with its batch ring
# (--context-parallel, memory/context_parallel.py): one rank traced on seq_len / cp tokens with the ring's
# allocations emulated in the attention (trace/_ring.py), on Llama (tinyllama-1.1b, GQA 32/4, 32k vocabulary),
# Qwen3 (qwen3-0.6b, GQA 16/8, attention wider than the hidden size, q/k norms) and a 128k-vocabulary Llama 3
# (llama-3.2-1b), each cut to FAMILY_LAYERS layers, x full (pure-bf16) / LoRA all-linear (bf16) x cp 2 / 4 x
# checkpointing off / on x transformers' loss / cut cross-entropy (no logits: the peak in the layers, where the ring
# runs), at b1 s8192 (flash attention, GPUs = cp, plain data parallel). The estimate's DDP gradient buckets
# (communication) are left out of the comparison: the tracer runs one process. Written to accuracy_cp.{json,md}.
CP_MODELS = ("hf:tinyllama-1.1b", "hf:qwen3-0.6b", "cut:llama-3.2-1b:4")
CP_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full", {"method": "full", "precision": "pure-bf16"}),
    ("lora", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}),
)


def cp_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | cp{cp} | b1 s8192 | {'gc' if gc else 'no-gc'} | loss {loss}", "model": model,
             "method": label, "training": dict(kw, batch_size=1, seq_len=8192, attention="flash", gpus_per_node=cp,
                                               context_parallel=cp, grad_checkpointing=gc, loss=loss)}
            for model in CP_MODELS for label, kw in CP_METHODS for cp in (2, 4) for gc in (False, True)
            for loss in ("hf", "cut")]
# The unfrozen grid (`--grid unfrozen`, issue 13; 30 cases): partial fine-tuning by name (core/unfrozen.py: axolotl
# unfrozen_parameters, LLaMA-Factory freeze_trainable_layers / freeze_extra_modules / use_llama_pro), the tracer setting
# requires_grad by name (trace/_run.py), on three architectures cut to 8 layers (llama, qwen2 with a tied head, gemma
# with a tied 256k head) x 10 runs: a sparse set without and with checkpointing (bf16), the bottom layers with the
# embedding (amp-bf16), the top layers with the head frozen (amp-bf16, checkpointing), LLaMA Pro's stride-4 layers
# (3, 7), a sparse set with the embedding under eager attention with checkpointing, a sparse set with the embedding
# (bf16), the norm and head alone, and --freeze-layers 6 under amp-bf16 without and with checkpointing. Written to
# accuracy_unfrozen.{json,md}, its traces to trace_cache_unfrozen.json.
UNFROZEN_MODELS = ("cut:tinyllama-1.1b:8", "cut:qwen2.5-0.5b:8", "cut:gemma-2b:8")
UNFROZEN_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("layers 2,5", {"train_layers": (2, 5), "precision": "bf16", "batch_size": 2, "seq_len": 256}),
    ("layers 2,5 gc", {**GC, "train_layers": (2, 5), "precision": "bf16", "batch_size": 2, "seq_len": 256}),
    ("layers 0-1 embed amp", {"train_layers": (0, 1), "train_modules": ("embed_tokens",), "precision": "amp-bf16",
                              "batch_size": 2, "seq_len": 256}),
    ("layers 6-7 no head amp gc", {**GC, "train_layers": (6, 7), "train_modules": (), "precision": "amp-bf16",
                                   "batch_size": 2, "seq_len": 256}),
    ("llama-pro 3,7", {"train_layers": (3, 7), "precision": "bf16", "batch_size": 1, "seq_len": 512}),
    ("layers 1,4,6 embed eager gc", {**GC, "train_layers": (1, 4, 6), "train_modules": ("embed_tokens", "norm"),
                                     "attention": "eager", "precision": "bf16", "batch_size": 1, "seq_len": 512}),
    ("layers 2,5 embed", {"train_layers": (2, 5), "train_modules": ("embed_tokens",), "precision": "bf16",
                          "batch_size": 2, "seq_len": 256}),
    ("head only", {"train_layers": (), "train_modules": ("norm", "lm_head"), "precision": "bf16", "batch_size": 2,
                   "seq_len": 256}),
    # --freeze-layers (the bottom 6 frozen, the head too) under autocast: only the trained layers' casts cached
    ("freeze 6 amp", {"freeze_layers": 6, "train_head": False, "precision": "amp-bf16", "batch_size": 2,
                      "seq_len": 256}),
    ("freeze 6 amp gc", {**GC, "freeze_layers": 6, "train_head": False, "precision": "amp-bf16", "batch_size": 2,
                         "seq_len": 256}),
)


def unfrozen_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | b{kw['batch_size']} s{kw['seq_len']}", "model": model, "method": "freeze",
             "training": {"method": "freeze", **kw}} for model in UNFROZEN_MODELS for label, kw in UNFROZEN_RUNS]


# The frozen-language-model grid (`--grid flm`, issues 13 / 15; 22 cases): LLaMA-Factory's freeze_language_model
# (--method freeze --train-layers none --train-modules projector; memory/vision.py frozen_lm), the tracer freezing
# every language-model parameter and training the projector (LLaVA multi_modal_projector, Qwen2-VL visual.merger) and
# with --train-vision the tower (trace/_run.py): LLaVA-1.5-7B's published config.json with its language model cut to
# 4 layers (the whole tower), Qwen2-VL-2B and Qwen2.5-VL-3B cut as --grid qwen-vl's, x projector only / tower +
# projector x checkpointing off / on, pure-bf16 (both shapes) and bf16 (the first). Written to
# accuracy_flm.{json,md}, its traces to trace_cache_flm.json.
FLM_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("projector pure-bf16", {"precision": "pure-bf16"}),
    ("projector bf16", {"precision": "bf16"}),
    ("tower + projector pure-bf16", {"precision": "pure-bf16", "train_vision": True}),
)
FLM_MODELS = (("llava-cut:llava-1.5-7b-hf", ({"batch_size": 1, "seq_len": 512, "images": 1},
                                              {"batch_size": 2, "seq_len": 256, "images": 2})),
              ("qwenvl:qwen2-vl-2b-instruct", QWEN_VL_SHAPES), ("qwenvl:qwen2.5-vl-3b-instruct", QWEN_VL_SHAPES[:1]))


def _frozen_lm_cases(model: str, tag: str, shapes: tuple[dict[str, Any], ...],
                     runs: tuple[tuple[str, dict[str, Any]], ...] = FLM_RUNS) -> list[dict[str, Any]]:
    """`runs` (FLM_RUNS) on `model` (ids from `tag`): projector-only pure-bf16 on every shape, the rest on the first."""
    cases = []
    for label, kw in runs:  # (bf16 and the trained tower on the first shape)
        for shape in shapes if label == FLM_RUNS[0][0] else shapes[:1]:
            px = f" {shape['image_size']}px" if "image_size" in shape else ""
            for gc in (False, True):
                cases.append({"id": f"{tag} | {label} | b{shape['batch_size']} s{shape['seq_len']} "
                                    f"i{shape['images']}{px} | {'gc' if gc else 'no-gc'}",
                              "model": model, "method": "freeze",
                              "training": {"method": "freeze", "train_layers": (), "train_modules": ("projector",),
                                           **kw, **shape, "grad_checkpointing": gc}})
    return cases


def flm_grid() -> list[dict[str, Any]]:
    return [c for model, shapes in FLM_MODELS for c in _frozen_lm_cases(model, model, shapes)]


# The frozen-language-model grid on Gemma 3, LLaVA-NeXT, Llama-3.2-Vision and Llama 4 (`--grid vlmfreeze`, issues
# 13 / 15; 88 cases):
# LLaMA-Factory's freeze_language_model with freeze_multi_modal_projector false (and freeze_vision_tower false: the
# tower trained too), read as --method freeze --train-layers none --train-modules projector (memory/vision.py
# frozen_lm): flm's runs on gemma-3-4b-it's config.json, both stacks cut to 4 layers (as --grid vlm2), on both vlm2
# shapes and four images under 128 text tokens; on llava-v1.6-mistral-7b cut to 2 text layers and a 2-layer tower
# and llava-v1.6-vicuna-7b's published tower under a toy language model (--grid vlm3's, the image side the peak),
# on vlm3's shapes. Llama-3.2-Vision (memory/mllama.py; the language model's cross-attention layers frozen with it,
# the projector trained): projector-only pure-bf16 (mllama refuses autocast) x checkpointing off / on on --grid mllama's
# cuts: the 11B text model's first 9 layers
# (cross-attention at 3 and 8: the three layers below record no graph without checkpointing) on both mllama shapes,
# the toy language model (cross-attention at 1 and 3, the image side the peak) at two shapes, the 90B text model's
# first 4 layers and the whole published tower under the 11B's first 4 layers at one shape each. Llama 4
# (memory/llama4v.py; the tower and its pixel-shuffle adapter frozen, multi_modal_projector trained): projector-only
# pure-bf16 x checkpointing off / on on --grid llama4v's models: Scout's tiny language model at both llama4v shapes
# (one tile; 4 tiles of a 300 x 800 image), Maverick's at the first, and the published Scout and Maverick text widths
# cut to 4 layers (Maverick: dense and MoE layers interleaved) at the first. On both, freeze_vision_tower false
# (_tower_cases, 40 cases): the tower trained beside the projector (--train-vision) and alone (the projector frozen
# too: --train-modules none --train-vision), pure-bf16 x checkpointing off / on, on Llama-3.2-Vision's 9-layer cut and
# toy at two shapes each and its whole published tower, Llama 4's Scout tiny-lm at both shapes, Maverick's and the
# 4-layer published widths at the first.
# Traces in trace_cache_vlmfreeze.json; written to accuracy_vlmfreeze.{json,md}.
VLMFREEZE_MODEL = "gemma3vlm:gemma-3-4b-it:4"
VLMFREEZE_SHAPES = ({"batch_size": 1, "seq_len": 512, "images": 1}, {"batch_size": 2, "seq_len": 256, "images": 2},
                    {"batch_size": 1, "seq_len": 128, "images": 4})


MLLAMA_TOY_SHAPES = ({"batch_size": 1, "seq_len": 16, "images": 2}, {"batch_size": 2, "seq_len": 32, "images": 1})


def vlmfreeze_grid() -> list[dict[str, Any]]:
    return [*_frozen_lm_cases(VLMFREEZE_MODEL, "gemma-3-4b-it", VLMFREEZE_SHAPES),
            *_frozen_lm_cases("llavanext:llava-v1.6-mistral-7b-hf:2:2", "llava-v1.6-mistral-7b-hf 2:2",
                              LLAVA_NEXT_SHAPES),
            *_frozen_lm_cases("llavanext-toy:llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-7b-hf toy-lm",
                              LLAVA_NEXT_TOY_SHAPES),
            *_frozen_lm_cases("mllama:11b-9", "llama-3.2-11b-vision 9 layers", MLLAMA_SHAPES, FLM_RUNS[:1]),
            *_frozen_lm_cases("mllama:toy", "llama-3.2-11b-vision toy-lm", MLLAMA_TOY_SHAPES, FLM_RUNS[:1]),
            *_frozen_lm_cases("mllama:90b-4", "llama-3.2-90b-vision 4 layers", MLLAMA_SHAPES[:1], FLM_RUNS[:1]),
            *_frozen_lm_cases("mllama:11b-4-tower", "llama-3.2-11b-vision 4 layers whole tower",
                              ({"batch_size": 1, "seq_len": 256, "images": 1},), FLM_RUNS[:1]),
            *_frozen_lm_cases("llama4v:scout", "llama-4-scout tiny-lm", LLAMA4V_SHAPES, FLM_RUNS[:1]),
            *_frozen_lm_cases("llama4v:maverick", "llama-4-maverick tiny-lm", LLAMA4V_SHAPES[:1], FLM_RUNS[:1]),
            *_frozen_lm_cases("llama4v:scout (4 layers)", "llama-4-scout 4 layers", LLAMA4V_SHAPES[:1], FLM_RUNS[:1]),
            *_frozen_lm_cases("llama4v:maverick (4 layers)", "llama-4-maverick 4 layers", LLAMA4V_SHAPES[:1],
                              FLM_RUNS[:1]),
            # the tower trained beside the projector (freeze_vision_tower false): Llama-3.2-Vision's 9-layer cut and
            # toy at two shapes each and the whole published tower; Llama 4's tiny-lm Scout at both shapes, Maverick
            # and the published-width 4-layer cuts at the first
            *_tower_cases("mllama:11b-9", "llama-3.2-11b-vision 9 layers", MLLAMA_SHAPES),
            *_tower_cases("mllama:toy", "llama-3.2-11b-vision toy-lm", MLLAMA_TOY_SHAPES),
            *_tower_cases("mllama:11b-4-tower", "llama-3.2-11b-vision 4 layers whole tower",
                          ({"batch_size": 1, "seq_len": 256, "images": 1},)),
            *_tower_cases("llama4v:scout", "llama-4-scout tiny-lm", LLAMA4V_SHAPES),
            *_tower_cases("llama4v:maverick", "llama-4-maverick tiny-lm", LLAMA4V_SHAPES[:1]),
            *_tower_cases("llama4v:scout (4 layers)", "llama-4-scout 4 layers", LLAMA4V_SHAPES[:1]),
            *_tower_cases("llama4v:maverick (4 layers)", "llama-4-maverick 4 layers", LLAMA4V_SHAPES[:1])]


# the tower alone trained, the projector frozen too (freeze_multi_modal_projector true: --train-modules none
# --train-vision; memory/frozen_lm.py tower_only), Llama-3.2-Vision and Llama 4 only
TOWER_ALONE_RUN = ("tower alone pure-bf16", {"precision": "pure-bf16", "train_vision": True, "train_modules": ()})


def _tower_cases(model: str, tag: str, shapes: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """FLM_RUNS' tower + projector run and TOWER_ALONE_RUN on every shape (_frozen_lm_cases runs them on the
    first)."""
    return [c for runs in (FLM_RUNS[2:], (TOWER_ALONE_RUN,)) for shape in shapes
            for c in _frozen_lm_cases(model, tag, (shape,), runs)]


# The Muon grid (`--grid muon`, issue 13; 15 cases): LLaMA-Factory's use_muon (llamafactory 0.9.5
# third_party/muon/muon.py Muon, trainer_utils.py _create_muon_optimizer's split; the tracer imports that module, so
# the wheel must be importable: pip install llamafactory==0.9.5 --no-deps) on three architectures cut to 2 layers:
# qwen2.5-0.5b (qwen2, a 151,936-token tied embedding: AdamW), tinyllama-1.1b (llama, untied lm_head: AdamW) and gpt2
# (wte and wpe are 2-D and not named "embed": Muon), × full and freeze, bf16 / amp-bf16 / fp32 weights, checkpointing
# off and on. Traces in trace_cache_muon.json; written to accuracy_muon.{json,md}.
MUON_MODELS = ("cut:qwen2.5-0.5b:2", "cut:tinyllama-1.1b:2", "cut:gpt2:2")
MUON_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("muon bf16 b1 s256", {"precision": "bf16", "batch_size": 1, "seq_len": 256}),
    ("muon amp-bf16 gc b2 s512", {**GC, "precision": "amp-bf16", "batch_size": 2, "seq_len": 512}),
    ("muon fp32 b1 s256", {"precision": "fp32", "batch_size": 1, "seq_len": 256}),
    ("muon freeze 1 bf16 b2 s256", {"method": "freeze", "freeze_layers": 1, "precision": "bf16", "batch_size": 2,
                                    "seq_len": 256}),
    ("muon bf16 gc b4 s1024", {**GC, "precision": "bf16", "batch_size": 4, "seq_len": 1024}),
)


def muon_grid() -> list[dict[str, Any]]:
    """Issue 13's Muon: 5 runs x 3 architectures."""
    return [{"id": f"{model} | {label}", "model": model, "method": label,
             "training": {"method": "full", "optimizer": "muon", **kw}}
            for model in MUON_MODELS for label, kw in MUON_RUNS]


# The FP8 grid (`--grid fp8`, issue 13; 15 cases): accelerate's torchao backend (--fp8, memory/fp8.py; the tracer
# swaps the Linears with torchao 0.18's own convert_to_float8_training, trace/_fp8.py, so torchao must be importable
# to re-trace: pip install torchao==0.18.0) on three architectures cut to 2 layers: tinyllama-1.1b (llama, 32k vocab),
# qwen2.5-0.5b (qwen2: q/k/v biases, a 151,936-token tied embedding) and llama-3.2-1b (a 128,256-token vocabulary),
# full fine-tuning (LoRA is refused: a frozen Float8Linear saves its input), the tensorwise (axolotl) and rowwise
# (LLaMA-Factory) filters, bf16 and amp-bf16 weights, checkpointing off and on, two shapes. Traces in
# trace_cache_fp8.json; written to accuracy_fp8.{json,md}.
FP8_MODELS = ("cut:tinyllama-1.1b:2", "cut:qwen2.5-0.5b:2", "cut:llama-3.2-1b:2")
FP8_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fp8 tensorwise bf16 b1 s512", {"fp8": "tensorwise", "precision": "bf16", "batch_size": 1, "seq_len": 512}),
    ("fp8 rowwise bf16 gc b2 s1024", {**GC, "fp8": "rowwise", "precision": "bf16", "batch_size": 2, "seq_len": 1024}),
    ("fp8 tensorwise amp-bf16 b2 s512", {"fp8": "tensorwise", "precision": "amp-bf16", "batch_size": 2,
                                         "seq_len": 512}),
    ("fp8 rowwise amp-bf16 gc b2 s1024", {**GC, "fp8": "rowwise", "precision": "amp-bf16", "batch_size": 2,
                                          "seq_len": 1024}),
    ("fp8 tensorwise amp-bf16 gc b1 s1024", {**GC, "fp8": "tensorwise", "precision": "amp-bf16", "batch_size": 1,
                                             "seq_len": 1024}),
)


def fp8_grid() -> list[dict[str, Any]]:
    """Issue 13's FP8 training: 5 runs x 3 architectures."""
    return [{"id": f"{model} | {label}", "model": model, "method": label,
             "training": {"method": "full", **kw}}
            for model in FP8_MODELS for label, kw in FP8_RUNS]
# The tensor-parallel grid (`--grid tp`, issue 13; 28 cases): transformers' tp_plan (--tp N --tp-layout hf,
# memory/hf_tp.py; axolotl tensor_parallel_size), one rank emulated by the tracer on the plan's shapes with its
# collectives' buffers (trace/_tp.py), on Llama (tinyllama-1.1b: 32/4 heads, 32k vocabulary), Qwen2 (qwen2.5-7b: q/k/v
# biases, 28/4 heads, an untied 152k vocabulary) and a 128k-vocabulary Llama 3 (llama-3.1-8b), each cut to 2 layers,
# x full (pure-bf16) / LoRA all-linear (bf16) x tp 2 / 4 x checkpointing off / on, at b1 s1024 (GPUs = tp); and
# tinyllama cut to 8 layers at b2 s4096 without checkpointing (full / LoRA x tp 2 / 4), where the layers' activations
# make the forward phase. Written to accuracy_tp.{json,md}, its traces to trace_cache_tp.json.
TP_MODELS = ("cut:tinyllama-1.1b:2", "cut:qwen2.5-7b:2", "cut:llama-3.1-8b:2")


def tp_grid() -> list[dict[str, Any]]:
    def case(model: str, label: str, kw: dict[str, Any], tp: int, gc: bool, b: int, s: int) -> dict[str, Any]:
        return {"id": f"{model} | {label} | tp{tp} | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
                "method": label, "training": dict(kw, batch_size=b, seq_len=s, gpus_per_node=tp, tp=tp,
                                                  tp_layout="hf", grad_checkpointing=gc)}

    return ([case(model, label, kw, tp, gc, 1, 1024)
             for model in TP_MODELS for label, kw in CP_METHODS for tp in (2, 4) for gc in (False, True)]
            + [case("cut:tinyllama-1.1b:8", label, kw, tp, False, 2, 4096) for label, kw in CP_METHODS
               for tp in (2, 4)])


# The ReLoRA grid (`--grid relora`, issue 13; 16 cases): axolotl's relora restarts (memory/relora.py; the tracer runs
# axolotl's merge_and_save and reset_optimizer before the reported step: trace/_relora.py) on Llama (tinyllama-1.1b,
# GQA) and Qwen2 (qwen2.5-0.5b, q/k/v biases, a 4,864-wide MLP), cut to 4 layers, LoRA ranks 16 and 128, x 4 runs: all
# linears on a short step (the merge of the widest MLP Linear is the peak), q/v only (the merge of q_proj), all linears
# with checkpointing at b2 s256 and without at b1 s512 (the training step is the peak; the restart must not move it).
# QLoRA is refused (4-bit: axolotl's merge leaves the weights unquantized and the next forward fails). Written to
# accuracy_relora.{json,md}, its traces to trace_cache_relora.json.
RELORA_MODELS = ("cut:tinyllama-1.1b:4", "cut:qwen2.5-0.5b:4")
RELORA_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("all-linear b1 s16", {"lora_targets": ("all-linear",), "batch_size": 1, "seq_len": 16}),
    ("q,v b1 s16", {"lora_targets": ("q_proj", "v_proj"), "batch_size": 1, "seq_len": 16}),
    ("all-linear gc b2 s256", {**GC, "lora_targets": ("all-linear",), "batch_size": 2, "seq_len": 256}),
    ("all-linear b1 s512", {"lora_targets": ("all-linear",), "batch_size": 1, "seq_len": 512}),
)


def relora_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | relora r{rank} {label}", "model": model, "method": "lora",
             "training": {"method": "lora", "precision": "bf16", "relora": True, "lora_rank": rank, **kw}}
            for model in RELORA_MODELS for rank in (16, 128) for label, kw in RELORA_RUNS]
# The max_memory grid (`--grid maxmem`, issue 13; 32 cases): accelerate's placement under axolotl's gpu_memory_limit
# (core/memory/placement.py: infer_auto_device_map on the from_config model; the tracer emulates AlignDevicesHook's
# GPU copy per forward, trace/_placement.py) on Llama (tinyllama-1.1b, GQA) and Qwen2 (qwen2.5-7b, q/k/v biases, an
# untied 152k-token head) cut to 4 layers, at a limit that puts about 25 % of the model on the CPU (tinyllama 595 MB:
# 25.1 %, its head and the top layer's MLP; qwen 3910 MB: 30.3 %, the head alone is 27 %) and about 60 % (370 MB:
# 61.3 %; 2705 MB: 60.1 %), LoRA (all linears; q_proj, v_proj; all linears under autocast-bf16, axolotl's bf16 LoRA)
# and full fine-tuning, checkpointing off (b1 s512) and on (b2 s512).
# Written to accuracy_maxmem.{json,md}, its traces to trace_cache_maxmem.json.
MAXMEM_LIMITS = {"cut:tinyllama-1.1b:4": ("595MB", "370MB"), "cut:qwen2.5-7b:4": ("3910MB", "2705MB")}
MAXMEM_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lora all-linear", {"method": "lora", "lora_targets": ("all-linear",)}),
    ("full", {"method": "full"}),
    ("lora q,v", {"method": "lora", "lora_targets": ("auto",)}),
    # axolotl's bf16 LoRA: fp32 adapters over the 16-bit load under the Trainer's autocast
    ("lora autocast-bf16", {"method": "lora", "lora_targets": ("all-linear",), "precision": "autocast-bf16"}),
)


def maxmem_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} limit {limit}{' gc' if gc else ''}", "model": model,
             "method": kw["method"],
             "training": {"precision": "bf16", **kw, "gpu_memory_limit": limit, "grad_checkpointing": gc,
                          "batch_size": 2 if gc else 1, "seq_len": 512}}
            for model, limits in MAXMEM_LIMITS.items() for limit in limits for label, kw in MAXMEM_METHODS
            for gc in (False, True)]


# transformers' own max_memory placement (`--grid maxmem-layers`, issue 13; 24 cases): from_pretrained(device_map=
# "auto", max_memory=...), TRL's model_init_kwargs, walks with the model's _no_split_modules (transformers 5.24
# integrations/accelerate.py infer_auto_device_map): whole decoder layers go to the CPU (--whole-layers,
# core/memory/placement.py; the walk checked against transformers' own in tests/test_trl_model_init.py). The maxmem
# grid's models and limits (tinyllama 595 MB: the top layer, the final norm and the head on the CPU, 35.7 %; 370 MB:
# layers 1-3 and the head, 64.3 %; qwen2.5-7b 3910 MB: 38.5 %; 2705 MB: 61.5 %), LoRA all linears, full, and TRL's
# LoRA (peft's default q_proj / v_proj, lora_dropout 0.05, fp32 adapters under the Trainer's bf16 autocast),
# checkpointing off (b1 s512) and on (b2 s512). Written to accuracy_maxmem-layers.{json,md}, its traces to
# trace_cache_maxmem-layers.json.
MAXMEM_LAYERS_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    MAXMEM_METHODS[0], MAXMEM_METHODS[1],
    ("trl lora autocast-bf16", {"method": "lora", "lora_targets": ("auto",), "precision": "autocast-bf16",
                                "lora_dropout": 0.05}),
)


def maxmem_layers_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} limit {limit} whole layers{' gc' if gc else ''}", "model": model,
             "method": kw["method"],
             "training": {"precision": "bf16", **kw, "gpu_memory_limit": limit, "whole_layers": True,
                          "grad_checkpointing": gc, "batch_size": 2 if gc else 1, "seq_len": 512}}
            for model, limits in MAXMEM_LIMITS.items() for limit in limits for label, kw in MAXMEM_LAYERS_METHODS
            for gc in (False, True)]


# A copied DPO reference loaded with settings of its own (`--grid refkw`, issue 13: TRL DPOTrainer's
# ref_model_init_kwargs, --ref-dtype / --ref-quant; memory/preference.py reference_recipe, reference_weight_bytes): the
# pure-bf16 full policy beside a bf16 (the baseline), an fp32 and a bitsandbytes 4-bit reference, and the amp-bf16
# (fp32 weights, autocast) policy beside a bf16 reference, a LoRA policy beside a copied fp32 or 4-bit reference, with
# checkpointing off and on, on Llama (tinyllama-1.1b) and Qwen2 (qwen2.5-0.5b) cut to 4 layers. 24 cases, traces in
# trace_cache_refkw.json, written to accuracy_refkw.{json,md}.
REFKW_MODELS = ("cut:tinyllama-1.1b:4", "cut:qwen2.5-0.5b:4")
REFKW_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("pure-bf16 ref bf16", {"precision": "pure-bf16"}),
    ("pure-bf16 ref fp32", {"precision": "pure-bf16", "ref_dtype": "fp32"}),
    ("pure-bf16 ref 4bit", {"precision": "pure-bf16", "ref_quant": "4bit"}),
    ("amp-bf16 ref bf16", {"precision": "amp-bf16", "ref_dtype": "bf16"}),
    # a LoRA policy with a copied reference (--ref-model copy: a reference passed as a model id): no full gradients,
    # so the reference's own forward can be the peak
    ("bf16 copy ref fp32", {**_LORA, "ref_model": "copy", "ref_dtype": "fp32"}),
    ("bf16 copy ref 4bit", {**_LORA, "ref_model": "copy", "ref_quant": "4bit"}),
)


def _dpo_reference_grid(runs: tuple[tuple[str, dict[str, Any]], ...]) -> list[dict[str, Any]]:
    """DPO at b2 s512 prompt 128 on REFKW_MODELS, each run with checkpointing off and on (--grid refkw, ref8)."""
    return [{"id": f"{model} | dpo {kw.get('method', 'full')} {label} | {'gc' if gc else 'no-gc'} b2 s512 p128",
             "model": model, "method": kw.get("method", "full"),
             "training": {"method": "full", "objective": "dpo", "batch_size": 2, "seq_len": 512, "prompt_len": 128,
                          "grad_checkpointing": gc, **kw}}
            for model in REFKW_MODELS for label, kw in runs for gc in (False, True)]


def refkw_grid() -> list[dict[str, Any]]:
    return _dpo_reference_grid(REFKW_RUNS)


# A copied DPO reference in bitsandbytes 8-bit or double-quantized 4-bit storage (`--grid ref8`, issue 13: TRL
# ref_model_init_kwargs quantization_config load_in_8bit / bnb_4bit_use_double_quant; memory/preference.py
# reference_weight_bytes, int8_linear_bytes, reference_plan): a pure-bf16 / pure-fp16 full policy beside an LLM.int8
# reference in its dtype or fp32 (threshold 6.0: bf16 and fp32 inputs' fp16 copies, int32 products), a pure-bf16 policy
# beside a double-quantized 4-bit one, and a LoRA policy beside a copied 8-bit or 4-bit-dq reference, checkpointing
# off and on, on tinyllama-1.1b and qwen2.5-0.5b cut to 4 layers. 24 cases, traces in trace_cache_ref8.json, written
# to accuracy_ref8.{json,md}.
REF8_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("pure-bf16 ref 8bit", {"precision": "pure-bf16", "ref_quant": "8bit"}),
    ("pure-fp16 ref 8bit", {"precision": "pure-fp16", "ref_quant": "8bit"}),
    ("pure-bf16 ref fp32 8bit", {"precision": "pure-bf16", "ref_dtype": "fp32", "ref_quant": "8bit"}),
    ("pure-bf16 ref 4bit-dq", {"precision": "pure-bf16", "ref_quant": "4bit-dq"}),
    ("bf16 copy ref 8bit", {**_LORA, "ref_model": "copy", "ref_quant": "8bit"}),
    ("bf16 copy ref 4bit-dq", {**_LORA, "ref_model": "copy", "ref_quant": "4bit-dq"}),
)


def ref8_grid() -> list[dict[str, Any]]:
    return _dpo_reference_grid(REF8_RUNS)


# Full DPO with an fp32 policy (`--grid dpo32`, issue 13; 20 cases): --precision fp32 (sdpa on fp32 q, k, v with grouped
# kv heads runs the math path: memory/activations.py math_sdpa) and amp-bf16 (fp32 weights under autocast; TRL's fused
# head casts its weight per chunk, not autocast-cached: memory/__init__.py fused_head), a copied fp32 reference, on
# tinyllama-1.1b and qwen2.5-0.5b cut to 4 layers, checkpointing off and on, at b2 s512 p128 and b1 s1024 p256; and an
# fp32 LoRA all-linear policy with its adapters disabled as the reference (control). Traces in trace_cache_dpo32.json,
# written to accuracy_dpo32.{json,md}.
DPO32_SHAPES = ((2, 512, 128), (1, 1024, 256))
DPO32_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full fp32", {"method": "full", "precision": "fp32"}),
    ("full amp-bf16", {"method": "full", "precision": "amp-bf16"}),
)


def dpo32_grid() -> list[dict[str, Any]]:
    runs = [(label, kw, shape) for label, kw in DPO32_RUNS for shape in DPO32_SHAPES]
    runs += [("lora fp32 adapters-off", {**_LORA, "precision": "fp32"}, DPO32_SHAPES[0])]
    return [{"id": f"{model} | dpo {label} | {'gc' if gc else 'no-gc'} b{b} s{s} p{p}", "model": model,
             "method": kw["method"],
             "training": {"objective": "dpo", "batch_size": b, "seq_len": s, "prompt_len": p, "grad_checkpointing": gc,
                          **kw}}
            for model in REFKW_MODELS for label, kw, (b, s, p) in runs for gc in (False, True)]


# fp32 eager attention (`--grid eager32`, issue 15; 19 cases): Llama-style eager_attention_forward on fp32 weights,
# --precision fp32 / amp-bf16 / amp-fp16 (memory/activations.py fp32_eager_scores: the backward's fp32 score gradients,
# the MLP and o_proj weight gradients written), on tinyllama-1.1b and qwen2.5-0.5b cut to 4 layers and a 2,048-token
# vocabulary (the layers hold the peak), full and LoRA all-linear, no checkpointing b2 s512 and with it b1 s1024; gpt2
# (its own eager: softmax in the scores' dtype, attention dropout; fp32 also at b4 s1024 with checkpointing). Traces
# in trace_cache_eager32.json, written to accuracy_eager32.{json,md}.
EAGER32_SHAPES = ((False, 2, 512), (True, 1, 1024))
EAGER32_RUNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    *((model, "full fp32", {"method": "full", "precision": "fp32"}) for model in ("tinyllama-1.1b", "qwen2.5-0.5b")),
    *((model, "full amp-bf16", {"method": "full", "precision": "amp-bf16"})
      for model in ("tinyllama-1.1b", "qwen2.5-0.5b", "gpt2")),
    *((model, "lora fp32", {**_LORA, "precision": "fp32"}) for model in ("tinyllama-1.1b", "qwen2.5-0.5b")),
    ("tinyllama-1.1b", "full amp-fp16", {"method": "full", "precision": "amp-fp16"}),
)


def eager32_grid() -> list[dict[str, Any]]:
    cases = [{"id": f"{model} | {label} eager | {'gc' if gc else 'no-gc'} b{b} s{s}", "model": f"dequant:{model}",
              "method": kw["method"], "training": {"attention": "eager", "batch_size": b, "seq_len": s,
                                                   "grad_checkpointing": gc, **kw}}
             for model, label, kw in EAGER32_RUNS for gc, b, s in EAGER32_SHAPES]
    return cases + [{"id": f"gpt2 | full fp32 eager | {'gc' if gc else 'no-gc'} b{b} s{s}", "model": "dequant:gpt2",
                     "method": "full", "training": {"attention": "eager", "batch_size": b, "seq_len": s,
                                                    "grad_checkpointing": gc, "method": "full", "precision": "fp32"}}
                    for gc, b, s in (*EAGER32_SHAPES, (True, 4, 1024))]


# Reentrant checkpointing (`--grid reentrant`, issue 13; 12 cases): --reentrant-gc (torch.utils.checkpoint
# use_reentrant=True, LLaMA-Factory's default use_reentrant_gc; the tracer passes it to gradient_checkpointing_enable)
# on Llama (tinyllama-1.1b) and Qwen2 (qwen2.5-0.5b: q/k/v biases, a 151,936-token tied embedding), cut to 2 layers,
# x full (pure-bf16) / LoRA all-linear (bf16) / QLoRA NF4 all-linear, at b2 s2048 with the cut loss (the layers'
# backward is the peak) and b4 s512 with the HF loss. Written to accuracy_reentrant.{json,md}, its traces to
# trace_cache_reentrant.json.
REENTRANT_MODELS = ("cut:tinyllama-1.1b:2", "cut:qwen2.5-0.5b:2")
REENTRANT_SHAPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("b2 s2048 cut", {"batch_size": 2, "seq_len": 2048, "loss": "cut"}),
    ("b4 s512", {"batch_size": 4, "seq_len": 512}),
)


def reentrant_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | {label} | reentrant gc | {shape}", "model": model, "method": label,
             "training": dict(kw, **skw, grad_checkpointing=True, reentrant_gc=True)}
            for model in REENTRANT_MODELS for label, kw in (("full pure-bf16", _FULL), ("lora all-linear", _LORA),
                                                            ("qlora all-linear", _QLORA))
            for shape, skw in REENTRANT_SHAPES]
# LoRA on a vision-language model's language model only (`--grid vlmlf`, issues 13 / 15; --lora-targets ...,lm-only,
# core/params.py LM_ONLY: LLaMA-Factory's default freeze_vision_tower / freeze_multi_modal_projector, the targets
# kept out of the tower and projector): LLaVA-1.5 (its 24-layer tower, a toy language model), Qwen2-VL and
# Qwen2.5-VL (the qwen-vl grid's cuts), Gemma 3 (the vlm2 grid's toy), SmolVLM-256M (the idefics grid's cut) and
# Llama-3.2-Vision (the mllama grid's toy) x LoRA all-linear,lm-only with checkpointing off / on, QLoRA NF4
# all-linear,lm-only with it, LoRA q_proj,v_proj,lm-only without it, and LoRA all-linear with the tower adapted
# (freeze_vision_tower false) with it; Llama 4 Scout (the llama4v grid's toy) x the first three with LLaMA-Factory's
# `all` as its names (LF_LLAMA4_ALL). 33 cases, traces in trace_cache_vlmlf.json,
# written to accuracy_vlmlf.{json,md}.
VLMLF_MODELS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("llava-toy:llava-1.5-7b-hf", VLM_TOY_SHAPES[0]),
    ("qwenvl:qwen2-vl-2b-instruct", QWEN_VL_SHAPES[0]),
    ("qwenvl:qwen2.5-vl-3b-instruct", QWEN_VL_SHAPES[0]),
    ("gemma3vlm-toy:gemma-3-4b-it:2", {"batch_size": 1, "seq_len": 128, "images": 1}),
    ("idefics:smolvlm-256m-instruct", {"batch_size": 1, "seq_len": 128, "images": 1}),
    ("mllama:toy", {"batch_size": 1, "seq_len": 16, "images": 1}),
)
VLMLF_RUNS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("lora all-linear,lm-only", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear", "lm-only")},
     False),
    ("lora all-linear,lm-only", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear", "lm-only")},
     True),
    ("qlora all-linear,lm-only", {"method": "qlora", "precision": "bf16", "kbit_prep": False,
                                  "lora_targets": ("all-linear", "lm-only")}, True),
    ("lora q_proj,v_proj,lm-only", {"method": "lora", "precision": "bf16",
                                    "lora_targets": ("q_proj", "v_proj", "lm-only")}, False),
    # freeze_vision_tower false: peft's own matching, the tower's Linears adapted too
    ("lora all-linear (tower adapted)", {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)},
     True),
)


# Llama 4 (the llama4v grid's Scout toy): all-linear takes the router (refused), so LLaMA-Factory's `all` (no
# Llama4Router: its class name holds no "Linear", misc.py find_all_linear_modules) is the list of its names
LF_LLAMA4_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def vlmlf_grid() -> list[dict[str, Any]]:
    runs = [(model, shape, label, kw, gc) for model, shape in VLMLF_MODELS for label, kw, gc in VLMLF_RUNS]
    for label, kw, gc in VLMLF_RUNS[:3]:
        runs.append(("llama4v:scout", LLAMA4V_SHAPES[0], label.replace("all-linear", "lf-all"),
                     dict(kw, lora_targets=(*LF_LLAMA4_ALL, "lm-only")), gc))
    return [{"id": f"{model} | {label} | b{shape['batch_size']} s{shape['seq_len']} i{shape['images']} | "
                   f"{'gc' if gc else 'no-gc'}", "model": model, "method": kw["method"],
             "training": dict(kw, **shape, grad_checkpointing=gc)} for model, shape, label, kw, gc in runs]


# LLaMA-Factory's image_max_pixels on the tiled towers (`--grid pixels`, issue 13; io/runfiles.py
# _tiled_pixels_llama_factory): each image at the budget's worst case, the size memory/pixel_budget.py worst_image
# picks (the most image tokens, then tiles, of any image whose width x height is within the budget), traced as the
# height x width image it is. LLaVA-NeXT (llava-v1.6 pinpoints): the default 768 x 768 budget (a 768 x 768 image: the
# 672 x 672 pinpoint, 5 tiles, 2,928 tokens), 336 x 336 (676 x 167: the 1008 x 336 pinpoint, 4 tiles, 1,944 tokens)
# and 300 x 300 (420 x 214: 3 tiles, 1,776 tokens), the published 24-layer tower under the toy language model (full
# pure-bf16 and LoRA, checkpointing on), and the 336 x 336 budget on llava-v1.6-mistral-7b cut to 2 text layers (LoRA,
# checkpointing off / on). Llama 4 (the llama4v grid's Scout toy): the default budget (a 117 x 5041 image: 1 x 16 tiles
# and the global one, 2,467 tokens) and 3,000 px (1 x 3000: 1 x 9 tiles and the global one), full pure-bf16 with
# checkpointing and LoRA off / on. 14 cases, written to accuracy_pixels.{json,md}.
PIXELS_LLAVA_NEXT = ((768 * 768, "llavanext-toy:llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-7b toy-lm", VLM_RUNS[:2],
                      (True,)),
                     (336 * 336, "llavanext-toy:llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-7b toy-lm", VLM_RUNS[:2],
                      (True,)),
                     (300 * 300, "llavanext-toy:llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-7b toy-lm", VLM_RUNS[:2],
                      (True,)),
                     (336 * 336, "llavanext:llava-v1.6-mistral-7b-hf:2:2", "llava-v1.6-mistral-7b 2 text layers",
                      VLM_RUNS[1:2], (False, True)))
PIXELS_LLAMA4 = ((768 * 768, ((VLM_RUNS[0], (True,)), (VLM_RUNS[1], (False, True)))),
                 (3000, ((VLM_RUNS[0], (True,)), (VLM_RUNS[1], (False, True)))))


def pixels_grid() -> list[dict[str, Any]]:
    from vramcalc.core.memory.pixel_budget import worst_image

    def case(model: str, name: str, budget: int, preset: str, label: str, kw: dict[str, Any], gc: bool,
             shape: dict[str, Any]) -> dict[str, Any]:
        h, w = worst_image(presets.find_model(preset).vision, budget)  # type: ignore[arg-type]
        return {"id": f"{name} | {label} | image_max_pixels {budget}: {h}x{w} | b{shape['batch_size']} "
                      f"s{shape['seq_len']} i1 | {'gc' if gc else 'no-gc'}", "model": model, "method": kw["method"],
                "training": dict(kw, **shape, image_size=h, image_width=w, grad_checkpointing=gc)}

    cases = [case(model, name, budget, "llava-v1.6-vicuna-7b", label, kw, gc,
                  {"batch_size": 1, "seq_len": 64, "images": 1})
             for budget, model, name, runs, gcs in PIXELS_LLAVA_NEXT for label, kw in runs for gc in gcs]
    cases += [case("llama4v:scout", "scout tiny-lm", budget, "llama-4-scout-vision", label, kw, gc,
                   {"batch_size": 1, "seq_len": 128, "images": 1})
              for budget, runs in PIXELS_LLAMA4 for (label, kw), gcs in runs for gc in gcs]
    return cases


# 8-bit QLoRA (`--grid qlora8`, issue 13; --method qlora --quant-bits 8): the blocks' Linears as bitsandbytes
# Linear8bitLt under LoRA all-linear (threshold 6.0, transformers' llm_int8_threshold default; trace/_hf.py
# _Dequant8bit: MatMul8bitLt's fp16 input copy, int8 rows, int32 product, fp16 output and its cast, the input kept as a
# ctx attribute, grad_A through the weight dequantized), on Llama (tinyllama-1.1b) and Qwen2 (qwen2.5-0.5b: q/k/v
# biases) cut to 2 layers, and tinyllama cut to 4 layers with a 2,048-token vocabulary (the layers' forward and
# backward peak, not the head), bf16 / fp16, checkpointing off, non-reentrant and reentrant, LoRA dropout 0 and 0.1,
# at b2 s512. Written to accuracy_qlora8.{json,md}, its traces to trace_cache_qlora8.json.
QLORA8_MODELS = ("cut:tinyllama-1.1b:2", "cut:qwen2.5-0.5b:2", "dequant:tinyllama-1.1b")
QLORA8_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("bf16 no-gc", {}),
    ("bf16 gc", {"grad_checkpointing": True}),
    ("bf16 reentrant gc", {"grad_checkpointing": True, "reentrant_gc": True}),
    ("bf16 no-gc dropout 0.1", {"lora_dropout": 0.1}),
    ("bf16 gc dropout 0.1", {"grad_checkpointing": True, "lora_dropout": 0.1}),
    ("fp16 no-gc", {"precision": "fp16"}),
    ("fp16 gc", {"precision": "fp16", "grad_checkpointing": True}),
)


def qlora8_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | qlora int8 all-linear {label} | b2 s512", "model": model, "method": "qlora",
             "training": {**_QLORA, "quant_bits": 8, "batch_size": 2, "seq_len": 512, "grad_checkpointing": False,
                          **kw}}
            for model in QLORA8_MODELS for label, kw in QLORA8_RUNS]


# 8-bit QLoRA under the Trainer's autocast and with selective checkpointing (`--grid qlora8b`, issue 13; 24 cases):
# qlora8's LoRA all-linear over Linear8bitLt (threshold 6.0) on the same 2-layer Llama and Qwen2 cuts, autocast-bf16
# --no-kbit-prep (a bf16 load under the Trainer's autocast; MatMul8bitLt has no custom_fwd, bitsandbytes 0.50
# autograd/_functions.py: it runs on its bf16 input as in plain bf16) and fp32 (an fp32 load without autocast: int8
# matmuls on fp32 inputs, which the tracer now runs), checkpointing off and on, and bf16 with --ac-every 2 in the
# torchtune and hf layouts, at b2 s512 and b1 s1024. amp-bf16 (an fp32 load, kbit prep) was traced
# here too and was refused (core/checks.py check_int8_fp32; now --grid qlora8-fp32load's). Written to
# accuracy_qlora8b.{json,md}, its traces to trace_cache_qlora8b.json.
QLORA8B_MODELS = ("cut:tinyllama-1.1b:2", "cut:qwen2.5-0.5b:2")
QLORA8B_SHAPES = ((2, 512), (1, 1024))
QLORA8B_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("autocast-bf16 no-kbit-prep no-gc", {"precision": "autocast-bf16"}),
    ("autocast-bf16 no-kbit-prep gc", {"precision": "autocast-bf16", "grad_checkpointing": True}),
    ("fp32 no-gc", {"precision": "fp32"}),
    ("fp32 gc", {"precision": "fp32", "grad_checkpointing": True}),
    ("bf16 gc every 2", {"grad_checkpointing": True, "ac_every": 2}),
    ("bf16 gc every 2 hf", {"grad_checkpointing": True, "ac_every": 2, "ac_layout": "hf"}),
)


def qlora8b_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | qlora int8 all-linear {label} | b{b} s{s}", "model": model, "method": "qlora",
             "training": {**_QLORA, "quant_bits": 8, "batch_size": b, "seq_len": s, "grad_checkpointing": False,
                          **kw}}
            for model in QLORA8B_MODELS for label, kw in QLORA8B_RUNS for b, s in QLORA8B_SHAPES]


# TRL's QLoRA from a config file (`--grid trlqlora`, issue 13; 12 cases): what io/runfiles.py reads from
# model_init_kwargs.quantization_config (or ModelConfig's load_in_4bit / load_in_8bit) with use_peft under TRL 1.16's
# trainers: no prepare_model_for_kbit_training, the adapters cast to bf16 (sft_trainer.py, dpo_trainer.py __init__),
# TrainingArguments' bf16 over a bf16 load (--precision autocast-bf16), peft's default targets, lora_dropout 0.05;
# SFT NF4 double-quantized and LLM.int8 at b2 s512, DPO NF4 (the adapters-off reference) at b1 s512 p128, each without
# and with checkpointing, on TinyLlama and Qwen2.5-0.5B cut to 4 layers. The options are the reader's
# (tests/test_trl_model_init.py checks them against a file). Written to accuracy_trlqlora.{json,md}, its traces to
# trace_cache_trlqlora.json.
TRLQLORA_MODELS = ("cut:tinyllama-1.1b:4", "cut:qwen2.5-0.5b:4")
TRL_QLORA = {"method": "qlora", "precision": "autocast-bf16", "kbit_prep": False, "adapter_dtype": "bf16",
             "lora_dropout": 0.05}
TRLQLORA_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sft nf4 double-quant", {**TRL_QLORA, "quant_bits": 4, "double_quant": True, "batch_size": 2, "seq_len": 512}),
    ("sft int8", {**TRL_QLORA, "quant_bits": 8, "double_quant": False, "batch_size": 2, "seq_len": 512}),
    ("dpo nf4", {**TRL_QLORA, "quant_bits": 4, "double_quant": False, "objective": "dpo", "batch_size": 1,
                 "seq_len": 512, "prompt_len": 128}),
)


def trlqlora_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | trl qlora {label} | {'gc' if gc else 'no-gc'}", "model": model, "method": "qlora",
             "training": {**kw, "grad_checkpointing": gc}}
            for model in TRLQLORA_MODELS for label, kw in TRLQLORA_RUNS for gc in (False, True)]


# TRL's default QLoRA over an fp32 load (`--grid qlora-fp32load`, issue 13): TRL 1.16 loads float32 unless a dtype is
# named (trl/trainer/utils.py create_model_from_path) and builds the 4-bit config with bnb_4bit_compute_dtype=
# model_args.dtype (get_quantization_config), so Linear4bit computes in fp32 under the Trainer's bf16 autocast
# (--precision amp-bf16 --method qlora: gemm_4bit's fp32 dequantized weight, autocast's bf16 copies of it and of the
# input, the output cast back to fp32, trace/_hf.py QuantLinear; peft's lora.bnb.Linear4bit forward, trace/_peft.py).
# LoRA all-linear with TRL's bf16 adapters and lora_dropout 0.05 (as --grid trlqlora), NF4 without kbit preparation
# (TRL's) and double-quantized with it (peft's recipe; a no-op on dtypes over an fp32 load), the same under amp-fp16,
# and with peft's fp32 adapters (autocast_adapter_dtype), checkpointing off and on, b2 s512 and b1 s2048, on
# tinyllama-1.1b, qwen2.5-0.5b and gemma-2b cut to 4 layers and a 2,048-token vocabulary ("dequant:" models); 48 cases.
# Written to accuracy_qlora-fp32load.{json,md}, its traces to trace_cache_qlora-fp32load.json.
QLORA_FP32LOAD_MODELS = ("dequant:tinyllama-1.1b", "dequant:qwen2.5-0.5b", "dequant:gemma-2b")
_FP32LOAD = {"method": "qlora", "precision": "amp-bf16", "lora_targets": ("all-linear",), "adapter_dtype": "bf16",
             "lora_dropout": 0.05, "quant_bits": 4}
QLORA_FP32LOAD_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("amp-bf16 nf4 no-kbit-prep", {**_FP32LOAD, "kbit_prep": False, "double_quant": False}),
    ("amp-bf16 nf4 double-quant kbit-prep", {**_FP32LOAD, "kbit_prep": True, "double_quant": True}),
    ("amp-fp16 nf4 no-kbit-prep", {**_FP32LOAD, "precision": "amp-fp16", "kbit_prep": False, "double_quant": False}),
    ("amp-bf16 nf4 fp32 adapters kbit-prep", {**_FP32LOAD, "adapter_dtype": "fp32", "kbit_prep": True,
                                              "double_quant": False}),
)


def qlora_fp32load_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | qlora {label} | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": "qlora", "training": {**kw, "batch_size": b, "seq_len": s, "grad_checkpointing": gc}}
            for model in QLORA_FP32LOAD_MODELS for label, kw in QLORA_FP32LOAD_RUNS for b, s in ((2, 512), (1, 2048))
            for gc in (False, True)]


# 8-bit QLoRA over an fp32 load under the Trainer's autocast (`--grid qlora8-fp32load`, issue 13): a TRL file with
# load_in_8bit and bf16 and no dtype (TRL 1.16 create_model_from_path loads float32). Linear8bitLt has no compute dtype
# and MatMul8bitLt no custom_fwd (bitsandbytes 0.50.2 nn/modules.py, autograd/_functions.py): its fp16 quantization
# copy of the fp32 input, the input kept in ctx, an fp32 output, grad_A through the weight dequantized to fp32
# (trace/_hf.py _Dequant8bit); peft's lora.bnb.Linear8bitLt forward (trace/_peft.py). LoRA all-linear, threshold 6.0,
# TRL's bf16 adapters without kbit preparation and peft's fp32 adapters with it, dropout 0.05, checkpointing off and
# on, b2 s512 and b1 s2048, on qlora-fp32load's tinyllama-1.1b and qwen2.5-0.5b cuts (4 layers, a 2,048-token
# vocabulary). Written to accuracy_qlora8-fp32load.{json,md}, its traces to trace_cache_qlora8-fp32load.json.
QLORA8_FP32LOAD_MODELS = ("dequant:tinyllama-1.1b", "dequant:qwen2.5-0.5b")
QLORA8_FP32LOAD_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("amp-bf16 int8 no-kbit-prep", {**_FP32LOAD, "quant_bits": 8, "kbit_prep": False}),
    ("amp-bf16 int8 fp32 adapters kbit-prep", {**_FP32LOAD, "quant_bits": 8, "adapter_dtype": "fp32",
                                               "kbit_prep": True}),
)


def qlora8_fp32load_grid() -> list[dict[str, Any]]:
    return [{"id": f"{model} | qlora {label} | b{b} s{s} | {'gc' if gc else 'no-gc'}", "model": model,
             "method": "qlora", "training": {**kw, "batch_size": b, "seq_len": s, "grad_checkpointing": gc}}
            for model in QLORA8_FP32LOAD_MODELS for label, kw in QLORA8_FP32LOAD_RUNS
            for b, s in ((2, 512), (1, 2048)) for gc in (False, True)]


# Non-reentrant checkpointing without early stop (`--grid early-stop`, issue 13; 24 cases): --no-ac-early-stop
# (transformers' gradient_checkpointing_kwargs early_stop: false, passed to torch.utils.checkpoint: the rerun does not
# stop at the layer's last saved tensor) on the reentrant grid's cuts (full pure-bf16, LoRA all-linear with fp32
# adapters, QLoRA NF4 all-linear at its two shapes) and on autocast2's Qwen3-8B, Gemma 2 2B and Phi-3-mini cuts (4
# layers, a 2,048-token vocabulary) under --precision autocast-bf16 (LoRA, QLoRA; b1 s512 and b2 s1024). Written to
# accuracy_early-stop.{json,md}, its traces to trace_cache_early-stop.json.
EARLY_STOP_AUTOCAST = ("dequant:qwen3-8b", "dequant:gemma-2-2b", "dequant:phi-3-mini-4k")


def early_stop_grid() -> list[dict[str, Any]]:
    cases = [{"id": f"{model} | {label} | no early stop | {shape}", "model": model, "method": label,
              "training": dict(kw, **skw, grad_checkpointing=True, ac_early_stop=False)}
             for model in REENTRANT_MODELS for label, kw in (("full pure-bf16", _FULL), ("lora all-linear", _LORA),
                                                             ("qlora all-linear", _QLORA))
             for shape, skw in REENTRANT_SHAPES]
    return cases + [{"id": f"{model} | {label} | autocast-bf16 | no early stop | b{b} s{s}", "model": model,
                     "method": label, "training": {"precision": "autocast-bf16", **kw, "batch_size": b, "seq_len": s,
                                                   "grad_checkpointing": True, "ac_early_stop": False}}
                    for model in EARLY_STOP_AUTOCAST for label, kw in AUTOCAST_METHODS[:2]
                    for b, s in ((1, 512), (2, 1024))]


# The HQQ grid (`--grid hqq`, issue 13: LLaMA-Factory's quantization_method hqq): QLoRA over hqq's own HQQLinear
# (trace/_hf.py quantize_blocks_hqq, the PyTorch backend; memory/hqq.py) on two dense architectures cut to 4 layers
# and a 2,048-token vocabulary (dequant_grid's "dequant:" models: tinyllama-1.1b, llama GQA without biases;
# qwen2.5-0.5b, q/k/v biases), 8/4/3/2-bit, HqqConfig's axis 1 and LLaMA-Factory's axis 0, q,v and all-linear
# adapters, checkpointing off and on, two shapes (b2 s512, b1 s1024).
HQQ_MODELS = ("dequant:tinyllama-1.1b", "dequant:qwen2.5-0.5b")
_HQQ = {"method": "qlora", "precision": "bf16", "quant_backend": "hqq", "quant_bits": 4}
_ALL = ("all-linear",)
HQQ_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("hqq4 q,v b2 s512", {**_HQQ, "batch_size": 2, "seq_len": 512}),
    ("hqq4 all-linear b2 s512 gc", {**_HQQ, "lora_targets": _ALL, "batch_size": 2, "seq_len": 512,
                                    "grad_checkpointing": True}),
    ("hqq4 all-linear b1 s1024", {**_HQQ, "lora_targets": _ALL, "batch_size": 1, "seq_len": 1024}),
    ("hqq2 axis0 all-linear b2 s512 gc", {**_HQQ, "quant_bits": 2, "hqq_axis": 0, "lora_targets": _ALL,
                                          "batch_size": 2, "seq_len": 512, "grad_checkpointing": True}),
    ("hqq3 axis0 q,v b1 s1024 gc", {**_HQQ, "quant_bits": 3, "hqq_axis": 0, "batch_size": 1, "seq_len": 1024,
                                    "grad_checkpointing": True}),
    ("hqq8 q,v b2 s512", {**_HQQ, "quant_bits": 8, "batch_size": 2, "seq_len": 512}),
)


def hqq_grid() -> list[dict[str, Any]]:
    """QLoRA on hqq's HQQLinear: 6 runs x 2 architectures (HQQ_RUNS)."""
    return [{"id": f"{model} | {label}", "model": model, "method": "qlora", "training": dict(kw)}
            for model in HQQ_MODELS for label, kw in HQQ_RUNS]


GRIDS = {"base": grid, "savers": saver_grid, "packing": packing_grid, "presets": preset_grid,
         "preference": preference_grid, "inference": inference_grid, "peft": peft_grid,
         "families": family_grid, "preference-free": preference_free_grid, "encoders": encoder_grid,
         "encoders2": token_cls_grid, "deberta": deberta_grid,
         "sharded": sharded_grid, "optimizers": optimizer_grid,
         "lora-variants": lora_variant_grid, "rl": rl_grid, "encdec": encdec_grid, "ssm": ssm_grid,
         "ssm2": ssm2_grid, "hybrid": hybrid_grid, "bamba": bamba_grid, "jamba": jamba_grid, "granite": granite_grid,
         "zamba2": zamba2_grid,
         "nemotronh": nemotronh_grid,
         "gptoss": gptoss_grid, "gptoss-qlora": gptoss_qlora_grid, "classics": classics_grid, "vlm": vlm_grid,
         "moe": moe_grid,
         "llama4": llama4_grid, "vlm2": vlm2_grid, "dequant": dequant_grid,
         "unsloth": unsloth_grid, "liger": liger_grid, "axolotl-kernels": axolotl_kernels_grid,
         "qwen-vl": qwen_vl_grid, "idefics": idefics_grid,
         "vlm3": llava_next_grid,
         "ppo": ppo_grid,
         "mllama": mllama_grid, "llama4v": llama4v_grid, "badam": badam_grid,
         "upcast": upcast_grid,
         "upcastln": upcastln_grid,
         "autocast": autocast_grid,
         "autocast-run": autocast_run_grid,
         "autocast-run2": autocast_run2_grid,
         "autocast-moe": autocast_moe_grid,
         "autocast-vlm": autocast_vlm_grid,
         "autocast2": autocast2_grid,
         "autocast3": autocast3_grid,
         "autocast-dora": autocast_dora_grid,
         "autocast-kto": autocast_kto_grid,
         "amp": amp_grid,
         "lnkept": lnkept_grid,
         "amp16": amp16_grid,
         "falcon-bnb": falcon_bnb_grid,
         "qlora-rest": qlora_rest_grid,
         "lora-layers": lora_layers_grid,
         "vocab": vocab_grid,
         "aux": aux_grid,
         "lisa": lisa_grid,
         "cp": cp_grid,
         "offload-nogc": offload_nogc_grid,
         "unfrozen": unfrozen_grid, "flm": flm_grid, "vlmfreeze": vlmfreeze_grid,
         "muon": muon_grid,
         "fp8": fp8_grid,
         "tp": tp_grid,
         "relora": relora_grid,
         "maxmem": maxmem_grid,
         "trlqlora": trlqlora_grid,
         "maxmem-layers": maxmem_layers_grid,
         "vlmlf": vlmlf_grid,
         "reentrant": reentrant_grid,
         "refkw": refkw_grid,
         "gc-offload": gc_offload_grid,
         "axooff": axooff_grid,
         "axogc": axogc_grid,
         "tf4gc": tf4gc_grid,
         "ref8": ref8_grid,
         "dpo32": dpo32_grid,
         "eager32": eager32_grid,
         "qlora8": qlora8_grid,
         "qlora8b": qlora8b_grid,
         "early-stop": early_stop_grid,
         "hqq": hqq_grid,
         "pixels": pixels_grid,
         "qlora-fp32load": qlora_fp32load_grid,
         "qlora8-fp32load": qlora8_fp32load_grid,
         }
TITLES = {"base": "", "savers": " (memory savers, issue 13)", "packing": " (packing and padding-free, issue 13)",
          "presets": " (presets checked against their config.json, issue 12)",
          "preference": " (preference training, issue 14)", "inference": " (inference: generate(), issue 18)",
          "peft": " (PEFT methods, issue 18)", "families": " (model families, issue 15)",
          "preference-free": " (ORPO, CPO, SimPO: no reference, full logits; issue 14)",
          "encoders": " (encoders with task heads, issue 15)",
          "encoders2": " (token classification and ModernBERT, issue 15)",
          "deberta": " (DeBERTa-v3: disentangled attention, issue 15)",
          "sharded": " (the root's and one layer's bytes, issue 19)",
          "optimizers": " (GaLore, APOLLO, Adam-mini, Adafactor with momentum; issue 13)",
          "lora-variants": " (LoRA variants: DoRA, modules_to_save, LoRA on the head and embedding, issue 13)",
          "rl": " (GRPO, RLOO and Online DPO: generation and the step on completions, issue 14)",
          "encdec": " (encoder-decoders: T5, Flan-T5, BART; issue 15)",
          "ssm": " (state-space models: Mamba's slow path, issue 15)",
          "ssm2": " (Mamba-2: the chunked SSD scan's PyTorch path, issue 15)",
          "hybrid": " (Falcon-H1: attention and a Mamba-2 mixer in every layer, issue 15)",
          "bamba": " (Bamba: Mamba-2 mixer layers and attention layers, each with an MLP; issue 15)",
          "jamba": " (Jamba: attention and Mamba-1 layers, dense and MoE feed-forwards, issue 15)",
          "granite": " (GraniteMoeHybrid's Granite 4.0 H, dense and MoE: Mamba-2 and attention layers, shared_mlp, "
                     "block_sparse_moe; issue 15)",
          "zamba2": " (Zamba2: Mamba-2 layers, shared attention blocks with per-invocation projectors; issue 15)",
          "nemotronh": " (Nemotron-H: Mamba-2, attention, relu2 MLP and MoE layers, one block each; issue 15)",
          "gptoss": " (gpt-oss: MoE with grouped_mm experts, attention sinks; issue 15)",
          "gptoss-qlora": " (gpt-oss QLoRA: the attention 4-bit, the experts and router 16-bit; issue 15)",
          "classics": " (the course texts' classics: torchvision ResNets and an LSTM language model, issue 15)",
          "vlm": " (vision-language models: LLaVA-1.5, issue 15)",
          "moe": " (routed MoE on transformers 5's grouped_mm experts: Mixtral, Qwen1.5-MoE, Qwen3-MoE, "
                 "DeepSeek-V3 / V2 with expert groups; issue 15)",
          "llama4": " (Llama 4 text: Scout and Maverick layouts, bmm experts over every token, chunked / NoPE "
                    "attention; issue 15)",
          "vlm2": " (vision-language models: Gemma 3 multimodal, issue 15)",
          "unsloth": " (Unsloth's kernels: Fast_RMS_Layernorm, LoRA_QKV/W/MLP, in-place RoPE; issue 13)",
          "liger": " (Liger's layer kernels: LigerRMSNorm, LigerSiLUMul, in-place RoPE; issue 13)",
          "axolotl-kernels": " (axolotl's own LoRA kernels: LoRA_QKV, LoRA_O, LoRA_MLP; issue 13)",
          "qwen-vl": " (vision-language models: Qwen2-VL and Qwen2.5-VL, issue 15)",
          "idefics": " (vision-language models: Idefics3 and SmolVLM, image splitting and pixel shuffle; issue 15)",
          "vlm3": " (vision-language models: LLaVA-NeXT anyres tiles, issue 15)",
          "ppo": " (PPO: TRL 0.19.1's PPOTrainer, rollout and policy + value step; issue 14)",
          "mllama": " (vision-language models: Llama-3.2-Vision, cross-attention layers; issue 15)",
          "dequant": " (QLoRA's dequantized weight: wide dense models, 4 layers, small vocabulary; issue 15)",
          "llama4v": " (vision-language models: Llama 4 Scout / Maverick multimodal, tiles and pixel shuffle; "
                     "issue 15)",
          "badam": " (BAdam layer mode: one decoder layer trained, fp32 copies; issue 13)",
          "upcast": " (LLaMA-Factory upcast_lmhead_output: lm_head's fp32 hook; issue 13)",
          "upcastln": " (LLaMA-Factory upcast_layernorm: fp32 norms over 16-bit weights, autocast; issue 13)",
          "autocast": " (the Trainer's autocast over 16-bit weights with fp32 adapters / trained layers; issue 13)",
          "autocast-run": " (the Trainer's autocast with what run files set beside it: TRL DPO with peft, the loss "
                          "savers; issue 13)",
          "autocast-run2": " (autocast-run's TRL DPO with peft and loss savers on Qwen3, Gemma 3, Phi-3, StarCoder2; "
                           "issue 13)",
          "autocast-moe": " (--precision autocast-bf16 on Mixtral, Qwen1.5-MoE, Qwen3-MoE: LoRA and QLoRA; "
                          "issues 13 and 15)",
          "autocast-vlm": " (--precision autocast-bf16 on LLaVA-1.5, Qwen2-VL, Qwen2.5-VL: LoRA and QLoRA on the "
                          "language model; issues 13 and 15)",
          "autocast2": " (the same autocast on Qwen3, OLMo 2, Gemma 1-3, Phi-3, StarCoder2; issue 13)",
          "autocast3": " (the same autocast on GPT-NeoX, GPT-J, Phi-1.5 / Phi-2, OLMo 1; issue 15)",
          "autocast-dora": " (the same autocast with DoRA: LoRA and QLoRA on Llama and Qwen2.5; issue 13)",
          "autocast-kto": " (the same autocast with TRL's KTO, the adapters-off reference: LoRA and QLoRA; issue 13)",
          "amp": " (amp-bf16 LoRA, fp32 weights under autocast, on every dense family cut to a 2,048-token vocabulary; "
                 "BLOOM's ALiBi scores in bf16; issues 13 and 15)",
          "lnkept": " (a checkpointed layer's kept input saved by its 16-bit LayerNorm: GPT-2, Pythia, GPT-J, Phi-2, "
                    "Falcon, BLOOM, StarCoder2, GPTBigCode, OLMo 1; LoRA and full; issue 15)",
          "amp16": " (autocast-bf16 on Falcon (LoRA, freeze) and BLOOM (LoRA, QLoRA, freeze), GPT-NeoX's freeze; "
                   "amp-bf16 full on both; issue 15)",
          "falcon-bnb": " (QLoRA on Falcon: transformers 5's bitsandbytes quantizes no FalconLinear, a LoRA on the "
                        "16-bit model; issue 13)",
          "qlora-rest": " (QLoRA on GPTBigCode, DistilBERT and XLM-R, the model_types no other grid traced it on; "
                        "issue 15)",
          "lora-layers": " (LoRA on some decoder layers only: peft layers_to_transform; issue 13)",
          "vocab": " (new tokens: resize_token_embeddings on tied and untied heads, full and LoRA; issue 13)",
          "aux": " (the MoE router's load-balancing aux loss, output_router_logits: Mixtral, Qwen3-MoE, gpt-oss; "
                 "issues 13 and 15)",
          "lisa": " (LISA: N decoder layers trained at a time, every layer's optimizer states; issue 13)",
          "cp": " (context parallelism: axolotl's batch ring attention, one rank on seq_len / cp tokens; issue 13)",
          "offload-nogc": " (torchtune activation offloading without checkpointing: node-by-node backward; "
                          "issue 13)",
          "unfrozen": " (partial fine-tuning by name: --train-layers / --train-modules; issue 13)",
          "flm": " (the language model frozen, the projector / tower trained: freeze_language_model; issues 13 / 15)",
          "vlmfreeze": " (Gemma 3, LLaVA-NeXT, Llama-3.2-Vision and Llama 4 with the language model frozen, the "
                       "projector / tower trained: freeze_language_model; issues 13 / 15)",
          "muon": " (LLaMA-Factory's Muon: momentum for 2-D matrices, AdamW for the rest; issue 13)",
          "fp8": " (FP8 training: accelerate's torchao Float8Linear, tensorwise and rowwise; issue 13)",
          "tp": " (transformers' tensor parallelism, tp_plan: one rank emulated on its shapes; issue 13)",
          "relora": " (axolotl ReLoRA: the restart's LoRA merge between steps beside the step; issue 13)",
          "maxmem": " (accelerate max_memory placement: axolotl gpu_memory_limit, part of the model on the CPU; "
                    "issue 13)",
          "trlqlora": " (TRL QLoRA read from model_init_kwargs.quantization_config: bf16 adapters, no kbit "
                      "preparation; issue 13)",
          "maxmem-layers": " (transformers' max_memory placement: from_pretrained device_map auto, whole "
                           "decoder layers on the CPU, TRL model_init_kwargs; issue 13)",
          "refkw": " (a DPO reference loaded in its own dtype or 4-bit: ref_model_init_kwargs; issue 13)",
          "ref8": " (a DPO reference in bitsandbytes 8-bit or double-quantized 4-bit storage; issue 13)",
          "dpo32": " (full DPO with an fp32 policy: fp32 and amp-bf16, a copied reference; issue 13)",
          "eager32": " (eager attention on fp32 weights: fp32, amp-bf16, amp-fp16; issue 15)",
          "qlora8": " (8-bit QLoRA: bitsandbytes LLM.int8 base Linears under LoRA, threshold 6.0; issue 13)",
          "qlora8b": " (8-bit QLoRA under the Trainer's autocast and with --ac-every 2; issue 13)",
          "early-stop": " (non-reentrant checkpointing without early stop: the rerun to each layer's end, issue 13)",
          "hqq": " (QLoRA on hqq's HQQLinear: LLaMA-Factory quantization_method hqq, issue 13)",
          "vlmlf": " (LoRA on a vision-language model's language model only, LLaMA-Factory's default, or with "
                   "its tower; issues 13 / 15)",
          "reentrant": " (reentrant checkpointing: torch.utils.checkpoint use_reentrant=True, issue 13)",
          "gc-offload": " (transformers' offloaded checkpointing: save_on_cpu around each checkpoint, issue 13)",
          "axooff": " (axolotl's gradient_checkpointing: offload / activation_offloading as axolotl 067b021c runs "
                    "them, issue 13)",
          "axogc": " (axolotl's gradient_checkpointing: true with its default keywords {use_reentrant: true}, "
                   "issue 13)",
          "tf4gc": " (transformers 4 files' gradient_checkpointing: true, reentrant without keywords; issue 13)",
          "pixels": " (LLaMA-Factory image_max_pixels on LLaVA-NeXT and Llama 4: the budget's worst image; issue 13)",
          "qlora8-fp32load": " (8-bit QLoRA over an fp32 load under the Trainer's bf16 autocast, amp-bf16: "
                             "TRL's load_in_8bit default; issue 13)",
          "qlora-fp32load": " (TRL's default QLoRA: 4-bit layers computing in fp32 over an fp32 load under the "
                            "Trainer's bf16 autocast, amp-bf16; issue 13)",
          }


def _spec(case: dict[str, Any]) -> tuple[Any, TrainingSpec]:
    kw = dict(case["training"])
    if kw.get("reward_model", "none") != "none":  # Online DPO's reward model, resolved as the CLI does
        kw["reward_spec"] = _model(kw["reward_model"])
    return _model(case["model"]), TrainingSpec(**kw)


def _trace(case: dict[str, Any]) -> dict[str, Any]:
    from vramcalc.trace import trace

    model, training = _spec(case)
    t0 = time.perf_counter()
    fused = case.get("fused_no_graph", False)  # sdpa without a graph on the fused kernel, as CUDA (amp16_grid)
    if fused:
        from vramcalc.trace import _cuda

        _cuda._NO_GRAPH_FUSED[0] = True
    try:
        r = trace(model, training)
    except Exception as e:  # reported and left out of the summary, not cached
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    finally:
        if fused:
            _cuda._NO_GRAPH_FUSED[0] = False
    return {"peak_bytes": r.peak_bytes, "peak_phase": r.peak_phase, "peak_op": r.peak_op,
            "phase_peaks": dict(r.phase_peaks), "by_category_at_peak": dict(r.by_category_at_peak),
            "seconds": round(time.perf_counter() - t0, 1)}


def _versions() -> str:
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


def _err(est: int, ref: int) -> float:
    return 100.0 * (est - ref) / ref if ref else 0.0


def compare(case: dict[str, Any], tr: dict[str, Any]) -> dict[str, Any]:
    model, training = _spec(case)
    e = estimate(model, training)
    if training.context_parallel > 1:  # --grid cp: one traced process, without DDP's gradient buckets (cp_grid)
        from dataclasses import replace

        e = replace(e, phases={k: v - e.communication for k, v in e.phases.items()}, communication=0)
    phases = tuple(tr["phase_peaks"])  # training: forward, backward, optimizer_step; inference: prefill, decode
    cat = tr["by_category_at_peak"]
    t_weights = cat["parameters"] + cat["buffers"]
    t_rest = tr["peak_bytes"] - t_weights - cat["optimizer_state"]
    e_rest = e.tensor_peak_bytes - e.weights - e.optimizer_state
    return {
        "id": case["id"], "model": case["model"], "method": case["method"], "training": case["training"],
        "estimate": {"peak_bytes": e.tensor_peak_bytes, "peak_phase": e.peak_phase, "phases": dict(e.phases),
                     "weights": e.weights, "optimizer_state": e.optimizer_state, "rest_at_peak": e_rest},
        "trace": {**tr, "weights": t_weights, "optimizer_state": cat["optimizer_state"], "rest_at_peak": t_rest},
        "error_pct": {
            "peak": _err(e.tensor_peak_bytes, tr["peak_bytes"]),
            **{f"phase.{p}": _err(e.phases[p], tr["phase_peaks"][p]) for p in phases},
            "weights": _err(e.weights, t_weights),
            "optimizer_state": _err(e.optimizer_state, cat["optimizer_state"]),
            "rest_at_peak": _err(e_rest, t_rest),
        },
        "phase_ok": e.peak_phase == tr["peak_phase"],
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]["error_pct"]:
        vals = sorted(abs(r["error_pct"][key]) for r in rows)
        out[key] = {"median": statistics.median(vals), "p90": vals[min(len(vals) - 1, int(0.9 * len(vals)))],
                    "max": vals[-1], "worst_under": min(0.0, min(r["error_pct"][key] for r in rows))}
    out["phase_correct_pct"] = 100.0 * sum(r["phase_ok"] for r in rows) / len(rows)
    return out


def markdown(rows: list[dict[str, Any]], summ: dict[str, Any], versions: str, grid_name: str = "base") -> str:
    g = 1e9
    lines = ["# Estimator vs tracer" + TITLES[grid_name], "",
             f"{len(rows)} cases; tracer on {versions}. Reproduce: "
             f"`PYTHONPATH=src python benchmarks/accuracy.py --jobs 2"
             f"{'' if grid_name == 'base' else ' --grid ' + grid_name}`. "
             "Error = (estimate − trace) / trace.", "",
             "| metric | median abs % | p90 abs % | max abs % | worst under-estimate % |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for k, v in summ.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['median']:.2f} | {v['p90']:.2f} | {v['max']:.2f} | {v['worst_under']:.2f} |")
    lines += ["", f"Peak phase right in {summ['phase_correct_pct']:.1f} % of cases.", "",
              "| case | estimate GB | trace GB | error % | phase (est / trace) | trace peak op |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    if grid_name == "families":
        lines[4:4] = ["Every model_type io/hf_config.py reads for a causal LM is traced as published (DeepSeek-V3's "
                      "router with its 8 expert groups, 4 kept).", ""]
    for r in rows:
        e, t = r["estimate"], r["trace"]
        mark = "" if r["phase_ok"] else " ✗"
        lines.append(f"| {r['id']} | {e['peak_bytes'] / g:.3f} | {t['peak_bytes'] / g:.3f} | "
                     f"{r['error_pct']['peak']:+.2f} | {e['peak_phase']} / {t['peak_phase']}{mark} | "
                     f"{t['peak_op']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--retrace", action="store_true", help="ignore the trace cache")
    ap.add_argument("--only", default="", help="run only cases whose id contains this")
    ap.add_argument("--grid", choices=tuple(GRIDS), default="base",
                    help="base: issue 3's 64 cases; savers: issue 13's 48 saver cases; packing: issue 13's 16 "
                    "packing cases; presets: issue 12's 8 cases; preference: issue 14's 63 DPO/IPO/KTO/SFT-trl/"
                    "torchtune-DPO/reward cases; inference: issue 18's 54 generate() cases; peft: issue 18's 61 PEFT "
                    "cases; "
                    "families: issue 15's model_types at two shapes, without and with checkpointing; "
                    "preference-free: issue 14's 24 ORPO/CPO/SimPO cases; "
                    "encoders: issue 15's 32 BERT / RoBERTa / DistilBERT / XLM-R cases (seq-cls and mlm heads);"
                    " encoders2: issue 15's 43 token-cls and ModernBERT cases;"
                    " deberta: issue 15's 32 DeBERTa-v3 cases (disentangled attention);"
                    " sharded: issue 19's root and layer bytes (what FSDP / ZeRO-3 gather and tp/pp ranks hold) "
                    "against the tracer's model; optimizers: issue 13's 32 "
                    "GaLore/GaLore-8bit/APOLLO/Adam-mini/Adafactor cases; lora-variants: issue 13's 36 DoRA / "
                    "modules_to_save / lm_head and embed_tokens LoRA cases; rl: issue 14's 66 GRPO / RLOO / Online DPO "
                    "cases (generate() and the step on completions); encdec: issue 15's 22 T5 / Flan-T5 / "
                    "BART cases (source and target lengths); ssm: issue 15's 18 Mamba cases; "
                    "ssm2: issue 15's 36 Mamba-2 cases; hybrid: issue 15's 30 Falcon-H1 cases; bamba: issue 15's 30 "
                    "Bamba cases; jamba: issue 15's 28 Jamba cases; granite: issue 15's 60 Granite 4.0 H "
                    "cases (30 dense, 30 MoE); zamba2: issue 15's 36 Zamba2 cases; nemotronh: issue 15's 52 "
                    "Nemotron-H cases (30 dense, 22 MoE); gptoss: issue 15's 16 "
                    "gpt-oss cases (MoE, attention sinks); classics: issue 15's 36 ResNet / LSTM language model "
                    "cases; vlm: issue 15's 60 LLaVA-1.5 cases (image tokens, tower frozen, adapted or trained); vlm2: "
                    "issue 15's 31 Gemma 3 multimodal cases (SigLIP tower, bidirectional image masks); unsloth: "
                    "issue 13's 39 Unsloth-kernel cases (LoRA / QLoRA, no checkpointing / offloaded checkpointing + "
                    "Cut CE); liger: issue 13's 44 Liger-kernel cases (RMSNorm, SwiGLU, RoPE; full / LoRA / QLoRA, "
                    "checkpointing off / on, hf and fused-linear loss); axolotl-kernels: issue 13's 36 cases of "
                    "axolotl's own LoRA kernels (Llama, Qwen2, Qwen3, Mistral; LoRA / QLoRA; groups alone and all); "
                    "qwen-vl: issue 15's 94 Qwen2-VL / Qwen2.5-VL cases (dynamic resolution, the tower "
                    "frozen, adapted or trained); idefics: issue 15's 27 Idefics3 / SmolVLM cases (tiles, pixel "
                    "shuffle); "
                    "llama4: issue 15's 40 Llama 4 text cases (Scout / Maverick layouts, bmm experts, chunked and NoPE "
                    "attention); vlm3: issue 15's 54 LLaVA-NeXT cases (anyres tiles, the tower frozen, adapted or "
                    "trained); "
                    "mllama: issue 15's 54 Llama-3.2-Vision cases (tiled two-encoder tower, cross-attention layers, "
                    "the tower frozen, adapted or trained); dequant: issue 15's 24 QLoRA cases on wide dense models "
                    "cut to 4 layers (the dequantized weight); llama4v: issue 15's 30 Llama 4 multimodal cases "
                    "(tiles, pixel shuffle, the tower frozen or adapted); badam: issue 13's 24 BAdam layer-mode cases; "
                    "upcast: issue 13's 16 --upcast-logits cases (lm_head's fp32 hook: full, LoRA, QLoRA, amp); "
                    "upcastln: issue 13's 32 --upcast-norms cases (fp32 norms under autocast: Llama, Gemma, "
                    "StarCoder2; full, LoRA, QLoRA, freeze); "
                    "autocast: issue 13's 60 --precision autocast-bf16 cases (16-bit weights, fp32 adapters / trained "
                    "layers under autocast: Llama, GPT-2, a 128k vocabulary; LoRA, QLoRA, freeze); "
                    "autocast-moe / autocast-vlm: 24 cases each of --precision autocast-bf16 LoRA / QLoRA on "
                    "Mixtral, Qwen1.5-MoE, Qwen3-MoE / on LLaVA-1.5, Qwen2-VL, Qwen2.5-VL's language model; "
                    "autocast2: issue 13's 80 autocast-bf16 cases on Qwen3, OLMo 2, Gemma 1-3, Phi-3, "
                    "StarCoder2 (LoRA, QLoRA; freeze without checkpointing); "
                    "autocast3: issue 15's 56 autocast-bf16 cases on GPT-NeoX (Pythia; LoRA, QLoRA), GPT-J, Phi-1.5 / "
                    "Phi-2 and OLMo 1 (LoRA, QLoRA, freeze); "
                    "autocast-dora: issue 13's 28 autocast-bf16 DoRA cases (LoRA, QLoRA on Llama and Qwen2.5); "
                    "autocast-kto: issue 13's 24 autocast-bf16 KTO cases (LoRA, QLoRA, adapters-off reference); "
                    "amp: 40 amp-bf16 LoRA cases on every dense family's config cut to a 2,048-token vocabulary, and "
                    "BLOOM in bf16; "
                    "amp16: issue 15's 28 autocast-bf16 cases on Falcon (LoRA, freeze), BLOOM (LoRA, QLoRA, "
                    "freeze) and GPT-NeoX's freeze, and amp-bf16 full on Falcon and BLOOM; "
                    "lora-layers: issue 13's 32 LoRA / QLoRA / DoRA cases on some decoder layers only "
                    "(peft layers_to_transform); "
                    "vocab: issue 13's 12 new-token cases (resize_token_embeddings, tied and untied heads, full and "
                    "LoRA with modules_to_save); "
                    "aux: issues 13 and 15's 24 router aux loss cases (output_router_logits on Mixtral, Qwen3-MoE, "
                    "gpt-oss; full and LoRA, checkpointing off / on); lisa: issue 13's 24 LISA cases (axolotl "
                    "lisa_n_layers); cp: issue 13's 48 context-parallel cases (axolotl's batch ring); "
                    "unfrozen: issue 13's 24 cases trained by name (--train-layers, --train-modules); flm: 22 "
                    "frozen-language-model cases (the projector / tower trained); "
                    "muon: issue 13's 15 LLaMA-Factory use_muon cases; relora: issue 13's 16 axolotl ReLoRA cases "
                    "(the restart's merge beside the step); vlmlf: issues 13 / 15's 33 VLM cases with "
                    "LoRA on the language model only (LLaMA-Factory's frozen tower and projector); fp8: issue 13's "
                    "15 FP8 training cases (torchao Float8Linear, tensorwise and rowwise); tp: issue 13's 28 cases of "
                    "transformers' tensor parallelism (one rank of tp_plan); gc-offload: issue 13's 24 cases of "
                    "transformers' offloaded checkpointing (save_on_cpu around each checkpoint); axooff: issue 13's 8 "
                    "axolotl files with offloaded checkpointing (TRL's OffloadActivations); axogc: issue 13's 8 "
                    "axolotl files with gradient_checkpointing: true (axolotl's default reentrant keywords); "
                    "tf4gc: issue 13's 8 transformers 4 TrainingArguments files with gradient_checkpointing: true "
                    "(reentrant); "
                    "early-stop: issue 13's 24 cases of non-reentrant checkpointing without early stop "
                    "(--no-ac-early-stop); maxmem: issue 13's 32 cases of accelerate's max_memory placement "
                    "(axolotl gpu_memory_limit); trlqlora: issue 13's 12 TRL QLoRA cases "
                    "(model_init_kwargs.quantization_config with use_peft); maxmem-layers: issue 13's 24 cases of "
                    "transformers' max_memory placement (whole layers); qlora-fp32load: issue 13's 48 amp-bf16 / "
                    "amp-fp16 4-bit QLoRA cases (TRL's default fp32 load and compute dtype); qlora8-fp32load: "
                    "issue 13's 16 amp-bf16 8-bit QLoRA cases (an fp32 load under autocast)"
                    )
    args = ap.parse_args()
    if args.grid == "sharded":  # no traced step: the model's own tensors, part by part
        sharded_main()
        return
    versions = _versions()
    # presets, preference-free and encoders keep their own trace caches (their traces are separate work)
    cache_path = RESULTS / f"trace_cache_{args.grid}.json" \
        if args.grid in ("presets", "preference-free", "encoders", "encoders2", "deberta", "optimizers", "rl", "encdec",
                         "ssm", "ssm2", "hybrid", "bamba", "granite", "gptoss", "gptoss-qlora", "classics", "vlm",
                         "moe", "llama4",
                         "vlm2",
                         "unsloth", "liger", "axolotl-kernels",
                         "qwen-vl", "idefics", "vlm3", "ppo", "mllama", "dequant", "llama4v", "badam", "jamba",
                         "upcast", "upcastln", "autocast", "autocast2", "autocast3", "autocast-run", "autocast-run2",
                         "autocast-moe", "autocast-vlm", "autocast-dora", "autocast-kto",
                         "lora-layers",
                         "zamba2", "nemotronh",
                         "vocab",
                         "aux",
                         "lisa",
                         "cp",
                         "offload-nogc",
                         "unfrozen", "flm", "vlmfreeze",
                         "hqq",
                         "muon",
                         "fp8",
                         "tp",
                         "relora",
                         "maxmem",
                         "trlqlora",
                         "maxmem-layers",
                         "vlmlf",
                         "reentrant",
                         "refkw",
                         "gc-offload",
                         "axooff",
                         "axogc",
                         "tf4gc",
                         "ref8",
                         "dpo32",
                         "eager32",
                         "qlora8",
                         "qlora8b",
                         "early-stop",
                         "amp",
                         "lnkept",
                         "amp16",
                         "falcon-bnb",
                         "qlora-rest",
                         "pixels",
                         "qlora-fp32load",
                         "qlora8-fp32load",
                         ) \
        else CACHE
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() and not args.retrace else {}
    if cache.get("versions") != versions:
        cache = {"versions": versions, "traces": {}}
    cases = [c for c in GRIDS[args.grid]() if args.only in c["id"]]
    todo = [c for c in cases if c["id"] not in cache["traces"]]
    if todo:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for c, tr in zip(todo, pool.map(_trace, todo), strict=True):
                if "error" in tr:
                    print(f"not traced {c['id']}: {tr['error']}", file=sys.stderr, flush=True)
                    continue
                cache["traces"][c["id"]] = tr
                print(f"traced {c['id']} in {tr['seconds']} s", file=sys.stderr, flush=True)
                RESULTS.mkdir(exist_ok=True)
                cache_path.write_text(json.dumps(cache, indent=1))
    rows = [compare(c, cache["traces"][c["id"]]) for c in cases]
    summ = summary(rows)
    RESULTS.mkdir(exist_ok=True)
    if not args.only:
        name = "accuracy" if args.grid == "base" else f"accuracy_{args.grid}"
        (RESULTS / f"{name}.json").write_text(json.dumps({"versions": versions, "summary": summ, "cases": rows},
                                                        indent=1))
        (RESULTS / f"{name}.md").write_text(markdown(rows, summ, versions, args.grid))
    for r in rows:
        if abs(r["error_pct"]["peak"]) > 3 or not r["phase_ok"]:
            print(f"{r['error_pct']['peak']:+7.2f} %  {r['estimate']['peak_phase']:>14}/{r['trace']['peak_phase']:<14}"
                  f" {r['id']}  [{r['trace']['peak_op']}]")
    print(f"{'metric':<24}{'median':>9}{'p90':>9}{'max':>9}{'under':>9}   (absolute error, %; under: signed)")
    for k, v in summ.items():
        if isinstance(v, dict):
            print(f"{k:<24}{v['median']:9.2f}{v['p90']:9.2f}{v['max']:9.2f}{v['worst_under']:9.2f}")
    print(f"peak phase right: {summ['phase_correct_pct']:.1f} % of {len(rows)} cases")


if __name__ == "__main__":
    main()
