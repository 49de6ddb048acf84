"""Model-vs-run checks, shared by every command: memory.estimate calls `check_run` first.

An impossible run (more frozen layers than the model has, a tensor-parallel degree that does not
divide the heads, a LoRA rank above the hidden size) raises SpecError; an unusual but possible one
(a context beyond max_position_embeddings, options the method or mode ignores) returns a note.
Standard library only.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import TYPE_CHECKING

from vramcalc.core import lora_layers, unfrozen
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.peft_methods import TABLE as PEFT_TABLE
from vramcalc.core.vocab import ENCODER_FAMILIES, SEQ2SEQ_FAMILIES

# The methods memory/encoder.py models for encoders.
ENCODER_METHODS = ("full", "lora", "qlora", "freeze")
# The methods and precisions memory/seq2seq.py models for encoder-decoders.
SEQ2SEQ_METHODS = ("full", "lora", "qlora")
SEQ2SEQ_PRECISIONS = ("auto", "bf16", "fp16", "fp32")

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# Options read only by some methods (memory/weights.py, memory/optimizer.py): elsewhere they change nothing.
_LORA = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_dtype", "dora", "modules_to_save",
         "lora_trainable_tokens", "lora_layers")
_QUANT = ("quant_bits", "double_quant", "kbit_prep", "quant_backend", "hqq_group_size", "hqq_axis")
_FREEZE = ("freeze_layers", "train_head")
_PEFT = ("virtual_tokens", "encoder_hidden_size", "prefix_projection", "ia3_feedforward", "oft_block_size",
         "trainable_tokens", "n_frequency", "boft_block_size", "boft_block_num", "miss_rank", "c3a_block_size",
         "shira_rank", "adapter_len", "adapter_layers")
_APPLIES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_LORA, ("lora", "qlora")),
    **dict.fromkeys(_QUANT, ("qlora",)),
    **dict.fromkeys(_FREEZE, ("freeze",)),
    **dict.fromkeys(_PEFT, ()),
}
for _method in PEFT_TABLE.values():  # the other PEFT methods read the options their table entry lists
    for _name in _method.options:
        _APPLIES[_name] += (_method.name,)
# Serving has no backward pass, optimizer or adapters (memory/inference.py reads none of these).
_TRAINING_ONLY = ("method", "optimizer", "optimizer_impl", "grad_accum", "grad_checkpointing", *_LORA, *_QUANT,
                  *_FREEZE, *_PEFT)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@cache
def _defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in fields(cls)}


def _changed(training: TrainingSpec, names: tuple[str, ...]) -> list[str]:
    """The fields among `names` whose value differs from TrainingSpec's default: options the user set."""
    defaults = _defaults(type(training))
    return [n for n in names if getattr(training, n) != defaults[n]]


def check_run(model: ModelSpec, training: TrainingSpec) -> tuple[str, ...]:
    """Notes on an unusual run of `model`; SpecError when the run cannot exist."""
    return check_sequence(model, training.seq_len) + check_settings(model, training)


def check_sequence(model: ModelSpec, seq_len: int) -> tuple[str, ...]:
    """The sequence against the model's position table: a note beyond RoPE's, SpecError beyond a learned one."""
    limit = model.max_position_embeddings
    if limit is None or seq_len <= limit:
        return ()
    if model.learned_position_embeddings:
        raise SpecError("", f"--seq-len {seq_len:,} exceeds {model.name}'s {limit:,} learned position "
                        "embeddings: there is no position beyond them")
    return (f"sequence of {seq_len:,} tokens exceeds {model.name}'s max_position_embeddings "
            f"{limit:,}: possible only with RoPE scaling (or a model trained longer)",)


def check_settings(model: ModelSpec, training: TrainingSpec) -> tuple[str, ...]:
    """Every check that does not depend on the batch or sequence (memory.estimate caches it with its plan)."""
    notes: list[str] = []
    # (hqq's own refusals run first, in memory.estimate: memory/hqq.py check; memory/ imports this module)
    if training.lora_trainable_tokens and (model.family in ENCODER_FAMILIES or model.decoder_layers
                                           or model.ssm_state_size):
        # peft wraps get_input_embeddings() alone; traced on causal LMs only (memory/weights.py _with_tokens)
        raise UnsupportedCombination(f"--lora-trainable-tokens is modelled for causal LMs; {model.name} is not one: "
                                     "drop it, or train the embedding with --modules-to-save embed_tokens")
    if (training.dora and training.method in ("lora", "qlora") and training.activation_offload
            and not training.grad_checkpointing and training.mode == "train"):
        # Offloaded without checkpointing, a DoRA layer's fp32 magnitude path (peft tuners/lora/dora.py) comes back node
        # by node beside its own fp32 temporaries: measured with the tracer (--grid offload-nogc's toys, -31 % in
        # forward and -6 % in backward with the generic node window of memory/savers.py offload_node_bytes), not
        # modelled yet; with checkpointing the recomputed layer holds it (memory/__init__.py, traced).
        raise UnsupportedCombination("--dora with --activation-offload is modelled with --grad-checkpointing only: "
                                     "add --grad-checkpointing, or drop --activation-offload")
    if (training.dora and training.method == "lora" and training.lora_dropout > 0 and training.grad_checkpointing
            and model.family == "gpt2" and training.mode == "train"):
        from vramcalc.core.memory.precision import recipe_of

        if recipe_of(training).weight == "fp32":
            # GPT-2's Conv1D (fan_in_fan_out) under DoRA's dropout path over fp32 weights: the traced checkpointed
            # step holds every layer's lora_B(lora_A(eye)) weight (in x out) until the backward, which nothing
            # modelled explains yet (measured with the tracer: gpt2 DoRA all-linear dropout 0.05 b1 s256 with
            # checkpointing, fp32 -27.8 %, amp-bf16 -20.5 %; bf16 weights, or no dropout, within 0.2 %)
            raise UnsupportedCombination("--dora with --lora-dropout and --grad-checkpointing on GPT-2 over fp32 "
                                         "weights is not modelled (the traced step keeps each layer's DoRA weight): "
                                         "use --lora-dropout 0, or 16-bit weights (--precision bf16)")
    if training.ac_offload:  # transformers' save_on_cpu around each checkpoint (memory/savers.py)
        from vramcalc.core.memory.savers import check_save_on_cpu

        check_save_on_cpu(model, training)
    check_gpt_oss(model, training)
    if model.family == "gpt_oss" and training.method == "qlora" and training.mode == "train":
        notes.append(GPT_OSS_QLORA_NOTE + (" With kbit prep they are fp32 (prepare_model_for_kbit_training casts every "
                                           "16-bit parameter); --no-kbit-prep keeps them 16-bit."
                                           if training.kbit_prep else ""))
    check_llama4(model, training)
    check_int8_mixer(model, training)
    check_int8_fp32(model, training)
    notes += lora_layers.check(model, training)  # --lora-layers: the index range and the runs it is modelled for
    notes += unfrozen.check(model, training)  # --train-layers / --train-modules (core/unfrozen.py)
    check_encoder(model, training)  # encoders: the head options and the runs they cover
    check_seq2seq(model, training)  # encoder-decoders: the target length and the runs they cover
    if model.has_architecture:
        heads = model.num_attention_heads or 1
        kv = model.num_kv_heads or heads
        # Megatron and vLLM split the heads across the tensor-parallel group: tp divides the attention
        # heads, and the KV heads split evenly or are replicated (vLLM: tp a multiple of the KV heads).
        if training.tp > 1 and (heads % training.tp or (kv % training.tp and training.tp % kv)):
            raise SpecError("", f"--tp {training.tp} must divide the {heads} attention heads and the {kv} KV "
                            f"heads of {model.name}")
        layers = model.num_layers or 0
        if training.pp > layers:
            # Each pipeline stage holds whole layers (Megatron, vLLM): a stage without one cannot exist, and
            # the busiest stage's share of the model would stop growing with the model (issue 19).
            raise SpecError("", f"--pp {training.pp} exceeds the {layers} layers of {model.name}: each pipeline "
                            f"stage needs at least one layer; use --pp {layers} or fewer")
        if training.method == "freeze" and (training.freeze_layers or 0) > layers:
            raise SpecError("", f"--freeze-layers {training.freeze_layers} exceeds the {layers} "
                            f"layers of {model.name}")
        hidden = model.hidden_size or 0
        if training.method in ("lora", "qlora") and training.mode == "train" and training.lora_rank > hidden:
            # rank ≤ min(d_in, d_out): above the hidden size the adapter outgrows the layer it adapts.
            raise SpecError("", f"--lora-rank {training.lora_rank} exceeds the hidden size {hidden} of "
                            f"{model.name}: the adapter would be larger than the layer")
    if training.mode == "inference":
        unused = _changed(training, _TRAINING_ONLY)
        if unused:
            notes.append(f"{', '.join(map(_flag, unused))}: training options, ignored by --mode inference")
    else:
        badam = getattr(training, "badam", False)  # estimated as freeze (memory/badam.py view), asked as full
        method = "full" if badam else training.method
        unused = [n for n in _changed(training, tuple(_APPLIES))
                  if method not in _APPLIES[n] and not (badam and n in _FREEZE)]
        if unused:
            notes.append(f"{', '.join(map(_flag, unused))}: changes nothing with --method {method}")
    return tuple(notes)


def check_int8_mixer(m: ModelSpec, t: TrainingSpec) -> None:
    """8-bit QLoRA with checkpointing on a model with a Mamba mixer: refused. The rerun's int8 matmul temporaries and
    the ctx-held inputs of bitsandbytes' Linear8bitLt (memory/__init__.py int8_rerun_t) are read from an attention
    decoder layer's terms; the mixers' own (in_proj, out_proj) are not, and the tracer puts the estimate 2.3-7.9 %
    under (one checkpointed QLoRA case of each of --grid hybrid, ssm2, bamba, granite, jamba, zamba2, nemotronh with
    quant_bits 8). Without checkpointing the same cases are within -1.8 % / +0.5 %: allowed."""
    mixer = bool(m.ssm_state_size or m.mixer_intermediate_size) or m.family in ("jamba", "mamba", "mamba2")
    if mixer and t.method == "qlora" and t.quant_bits == 8 and t.grad_checkpointing and t.mode == "train":
        raise UnsupportedCombination(f"--quant-bits 8 with --grad-checkpointing on {m.name}: the Mamba mixer's rerun "
                                     "under bitsandbytes' int8 matmul is not modelled; use --quant-bits 4, or drop "
                                     "--grad-checkpointing")


def check_int8_fp32(m: ModelSpec, t: TrainingSpec) -> None:
    """8-bit QLoRA under the Trainer's autocast over an fp32 load (a TRL file with load_in_8bit and bf16, no dtype):
    Linear8bitLt has no compute dtype and MatMul8bitLt no custom_fwd (bitsandbytes 0.50.2 nn/modules.py,
    autograd/_functions.py): it keeps its fp32 input in ctx and returns fp32 (memory/qlora_fp32.py int8_active). Traced
    (--grid qlora8-fp32load: tinyllama-1.1b / qwen2.5-0.5b cut to 4 layers, LoRA all-linear, bf16 and fp32 adapters,
    checkpointing off and non-reentrant, amp-bf16 SFT): modelled there; the rest of that path is refused."""
    from vramcalc.core.memory.precision import recipe_of

    if not (t.method == "qlora" and t.quant_bits == 8 and t.quant_backend == "bnb" and t.mode == "train"
            and recipe_of(t).autocast):
        return
    outside = [what for what, off in (
        (f"--precision {t.precision}", t.precision != "amp-bf16"), (f"a {m.family} model", m.family not in
                                                                     ("llama", "qwen2")),
        (f"--objective {t.objective}", t.objective != "sft"), ("--dora", t.dora), ("--reentrant-gc", t.reentrant_gc),
        ("--ac-every", t.ac_every > 1), ("--activation-offload", t.activation_offload),
        ("--ac-offload", t.ac_offload),
        (f"--offload {t.offload}", t.offload != "none"), ("--upcast-norms", t.upcast_norms)) if off]
    if outside:
        raise UnsupportedCombination(f"--quant-bits 8 over an fp32 load under autocast with {', '.join(outside)} is "
                                     "not modelled (bitsandbytes' int8 matmul keeps and returns fp32 there; traced "
                                     "for amp-bf16 LoRA SFT on Llama / Qwen2 only): load in bf16 (--precision "
                                     "autocast-bf16 --no-kbit-prep, or bf16; a TRL file: dtype: bfloat16)")


# QLoRA on gpt-oss (traced: --grid gptoss-qlora): from a bf16 checkpoint bitsandbytes replaces the attention's
# nn.Linear modules only (transformers integrations/bitsandbytes.py replace_with_bnb_linear); the published MXFP4
# checkpoint refuses a BitsAndBytesConfig (quantizers/auto.py merge_quantization_configs: "The model is quantized with
# Mxfp4Config but you are passing a BitsAndBytesConfig").
GPT_OSS_QLORA_NOTE = ("gpt-oss QLoRA: bitsandbytes quantizes the attention projections only; the experts (3-D "
                      "Parameters) and the router stay unquantized, most of the weights. Load a bf16 checkpoint: the "
                      "published MXFP4 one refuses a BitsAndBytesConfig.")


def check_gpt_oss(m: ModelSpec, t: TrainingSpec) -> None:
    """gpt-oss runs that vramcalc does not model (modeling_gpt_oss.py, transformers 5.24)."""
    if m.family != "gpt_oss":
        return
    if t.attention == "flash":
        raise UnsupportedCombination(f"{m.name}: gpt-oss's flash path is a sink-aware hub kernel "
                                     "(kernels-community/vllm-flash-attn3), not modelled; use --attention eager")
    if t.mode == "inference" and t.attention != "eager":
        # generate() runs eager attention too (no SDPA path); memory/inference.py counts eager's prefill scores only
        # when asked for them, so the run must say so rather than be counted as flash / SDPA
        raise UnsupportedCombination(f"{m.name}: gpt-oss has no SDPA or flash path in transformers' generate() "
                                     "(modeling_gpt_oss.py _supports_sdpa = False); pass --attention eager")


def check_llama4(m: ModelSpec, t: TrainingSpec) -> None:
    """Llama 4 runs that vramcalc does not model (modeling_llama4.py, transformers 5.24; traced: --grid llama4)."""
    if m.family != "llama4":
        return
    if t.attention == "flash":
        raise UnsupportedCombination(f"{m.name}: transformers has no flash_attention_2 path for Llama 4 "
                                     "(modeling_llama4.py _supports_flash_attn = False); use --attention sdpa or eager")
    if t.mode == "inference" or t.objective in ("grpo", "rloo", "online-dpo"):
        raise UnsupportedCombination(f"{m.name}: generate() with Llama 4's chunked-attention KV cache is not modelled; "
                                     "estimate a training step (--mode train, an objective that does not generate)")
    if t.packing != "none":
        raise UnsupportedCombination(f"{m.name}: packed rows with Llama 4's chunked-attention mask are not modelled; "
                                     "use --packing none")
    if t.kernels != "hf":
        raise UnsupportedCombination(f"{m.name}: Unsloth's kernels are not modelled for Llama 4's MoE layers; "
                                     f"drop --kernels {t.kernels}")


def check_encoder(m: ModelSpec, t: TrainingSpec) -> None:
    """UnsupportedCombination for a run the encoder arithmetic (memory/encoder.py) does not cover, or a head
    option on a causal LM (each option is valid; the model cannot take it)."""
    if m.family not in ENCODER_FAMILIES:
        if t.head != "auto" or t.num_labels != 2:
            raise UnsupportedCombination(f"--head and --num-labels choose an encoder's task head "
                                         f"({', '.join(ENCODER_FAMILIES)}); {m.name} is a causal LM: drop them")
        return
    if t.mode == "inference":
        raise UnsupportedCombination(f"{m.name} is an encoder: --mode inference (one forward, no KV cache) is not "
                                     "modelled for encoders; estimate a training step")
    if t.method not in ENCODER_METHODS:
        raise UnsupportedCombination(f"--method {t.method} is not modelled for encoders such as {m.name}: use "
                                     f"{', '.join(ENCODER_METHODS)}")
    if t.objective != "sft" or t.loss != "hf" or t.packing != "none":
        raise UnsupportedCombination(f"{m.name} is an encoder: --objective, --loss and --packing apply to causal "
                                     "LMs; drop them")
    if m.family == "deberta-v2" and (t.head == "mlm" or t.method == "freeze"):
        # memory/deberta.py is traced for the classification heads with full fine-tuning, LoRA and QLoRA
        # (benchmarks/accuracy.py --grid deberta); DebertaV2ForMaskedLM's head and frozen bottom layers (which
        # share the rel_embeddings with the trained ones) are not
        what = "--head mlm" if t.head == "mlm" else "--method freeze"
        raise UnsupportedCombination(f"{what} is not modelled for DeBERTa ({m.name}): use --head seq-cls or "
                                     "token-cls with --method full, lora or qlora")
    if m.family == "modernbert" and t.head == "mlm":
        # ModernBertForMaskedLM's loss (loss_utils.py ForMaskedLMLoss: an fp32 upcast of the logits, and
        # sparse_prediction) is not modelled; the fine-tuning heads are
        raise UnsupportedCombination(f"--head mlm is not modelled for ModernBERT ({m.name}): use --head seq-cls or "
                                     "token-cls")
    if t.head == "token-cls" and t.method in ("lora", "qlora") and "all-linear" in t.lora_targets:
        # peft 0.21 tuners_utils.py _maybe_include_all_linear_layers leaves the classifier out of all-linear for
        # SEQ_CLS only; under TOKEN_CLS it wraps `classifier` in LoRA, then modules_to_save raises TypeError
        # (found by the tracer, benchmarks/accuracy.py --grid encoders2).
        raise UnsupportedCombination("--lora-targets all-linear with --head token-cls fails in peft (its TOKEN_CLS "
                                     "task adapts the classifier and cannot also train a copy of it): name the "
                                     "targets, e.g. --lora-targets q_proj,k_proj,v_proj,o_proj,up_proj,down_proj")


def check_seq2seq(m: ModelSpec, t: TrainingSpec) -> None:
    """UnsupportedCombination for a run the encoder-decoder arithmetic (memory/seq2seq.py) does not cover, a
    --target-len on a model without a decoder stack, or a target beyond BART's learned positions."""
    if m.family not in SEQ2SEQ_FAMILIES or not m.decoder_layers:
        if t.target_len:
            raise UnsupportedCombination("--target-len sizes an encoder-decoder's target "
                                         f"({', '.join(SEQ2SEQ_FAMILIES)}); {m.name} reads one sequence: drop "
                                         "--target-len")
        return
    if t.mode == "inference":
        raise UnsupportedCombination(f"{m.name} is an encoder-decoder: --mode inference (the encoder once, then the "
                                     "decoder's cache and cross-attention keys) is not modelled; estimate a "
                                     "training step")
    if t.method not in SEQ2SEQ_METHODS:
        raise UnsupportedCombination(f"--method {t.method} is not modelled for encoder-decoders such as {m.name}: "
                                     f"use {', '.join(SEQ2SEQ_METHODS)}")
    if t.precision not in SEQ2SEQ_PRECISIONS:
        raise UnsupportedCombination(f"--precision {t.precision} is not modelled for encoder-decoders such as "
                                     f"{m.name}: use bf16, fp16 or fp32 (autocast's casts are not modelled here)")
    if t.objective != "sft" or t.loss != "hf" or t.packing != "none":
        raise UnsupportedCombination(f"{m.name} is an encoder-decoder: --objective, --loss and --packing apply to "
                                     "causal LMs; drop them")
    if t.attention == "flash" and m.family in ("t5", "mt5"):
        raise UnsupportedCombination(f"{m.name}: transformers has no flash_attention_2 for T5 (modeling_t5.py "
                                     "_supports_flash_attn = False); use --attention sdpa or eager")
    if (t.tp > 1 or t.pp > 1 or t.zero or t.fsdp != "none" or t.sequence_parallel or t.activation_offload
            or t.ac_every > 1 or t.optimizer_in_bwd or t.dora or t.modules_to_save
            or t.lora_trainable_tokens):
        raise UnsupportedCombination(f"{m.name} is an encoder-decoder: vramcalc models it on one GPU (or plain data "
                                     "parallel) with LoRA, QLoRA or full fine-tuning and plain checkpointing; drop "
                                     "--tp/--pp/--zero/--fsdp/--sequence-parallel, activation offload, --ac-every, "
                                     "--optimizer-in-bwd, --dora, --modules-to-save and --lora-trainable-tokens")
    from vramcalc.core.params import outer_targets

    if t.method in ("lora", "qlora") and outer_targets(t.lora_targets):
        raise UnsupportedCombination(f"{m.name}: LoRA on embed_tokens / lm_head is not modelled for "
                                     "encoder-decoders (the head is the shared embedding); drop them from "
                                     "--lora-targets")
    limit = m.max_position_embeddings
    if m.learned_position_embeddings and limit is not None and t.target_len > limit:
        raise SpecError("", f"--target-len {t.target_len:,} exceeds {m.name}'s {limit:,} learned position "
                        "embeddings: there is no position beyond them")
