"""`vramcalc explain`: the estimate's arithmetic as data, line by line, with its sources.

Pure (no I/O): `explain(model, training)` returns sections of `Line`s, each with the formula, the
numbers put into it, the result and where the formula comes from. Every value is the core's own: the
component figures and their parts come from `estimate`'s Breakdown (`details`), `WeightBytes` and
`OptimizerBytes`; the phases section prints the Breakdown's moments (memory/moments.py), the named
terms the core's phase figures are the largest sum of. This module computes no byte count of its own:
it only describes the numbers (how many blocks, layers or tokens went into them) and arranges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vramcalc.core import lora_layers, peft_methods, unfrozen
from vramcalc.core.describe import assumptions
from vramcalc.core.describe import settings as run_settings
from vramcalc.core.memory import (
    Breakdown,
    axolotl_kernels,
    badam,
    compiled,
    context_parallel,
    deberta,
    encoder,
    estimate,
    hybrid,
    jamba,
    liger,
    lisa,
    nemotron_h,
    new_tokens,
    reward_scoring,
    rl,
    router_aux,
    seq2seq,
    siglip_lora,
    ssm,
    unreplaced,
    unsloth,
    zamba2,
)
from vramcalc.core.memory import preference as pref
from vramcalc.core.memory import reward as reward_model
from vramcalc.core.memory import upcast as _upcast
from vramcalc.core.memory import upcast_norms as _upcast_norms
from vramcalc.core.memory.activations import (
    batch_rows,
    dequant_bytes,
    eager_only,
    head_terms,
    layer_activations,
    local_mask,
    masked_sdpa,
)
from vramcalc.core.memory.distributed import activation_tokens
from vramcalc.core.memory.loss import LABELS as LOSS_LABELS
from vramcalc.core.memory.loss import SOURCES as LOSS_SOURCES
from vramcalc.core.memory.optimizer import (
    BNB_BLOCK,
    BNB_MIN_8BIT_SIZE,
    LIBRARY_NAMES,
    LIBRARY_OPTIMIZERS,
    MUON_SOURCE,
    TORCHAO_STATES,
    library_state_dtype,
    optimizer_bytes,
    projection_rank,
    state_dtype,
)
from vramcalc.core.memory.precision import Recipe, recipe_of
from vramcalc.core.memory.savers import largest_tensor, ordinal
from vramcalc.core.memory.weights import (
    DQ_BLOCK,
    NF4_BLOCK,
    WeightBytes,
    fp32_router_tensors,
    freeze_fraction,
    saved_copies,
    saved_head,
    unquantized_bytes,
    weight_bytes,
)
from vramcalc.core.params import (
    block_linears,
    dora_params,
    head_dim,
    layer_linears,
    quantized_linears,
)
from vramcalc.core.peft_methods import ADAPTER_DTYPE_METHODS, FROZEN_BASE_METHODS
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.core.units import UNIT_BYTES, ceil_div, dtype_bytes
from vramcalc.core.vocab import CLASSIC_FAMILIES, METHOD_LABELS

Kind = Literal["bytes", "count", "per_token"]

# Where each formula comes from (the same citations as the core modules' comments).
SRC_SEED_WEIGHTS = "seed 000 'Model Weights': params × bytes per param; dtypes: memory/precision.py RECIPES"

SRC_SEED_GRADS = "seed 000 'Gradients': one gradient per trainable parameter, same shape and dtype (torch autograd)"
SRC_ADAMW = ("seed 000 'Optimizer States'; Loshchilov & Hutter 2019; torch/optim/adamw.py "
             "exp_avg + exp_avg_sq")
SRC_BNB8 = ("Dettmers et al. 2022 (arXiv:2110.02861); bitsandbytes optim: uint8 states, one fp32 absmax "
            f"per {BNB_BLOCK} elements, tensors under {BNB_MIN_8BIT_SIZE:,} elements keep 32-bit states")
SRC_ROUTER_AUX = ("transformers models/{mixtral,qwen2_moe,qwen3_moe,gpt_oss}/modeling_*.py "
                  "load_balancing_loss_func, OutputRecorder(<Family>TopKRouter); memory/router_aux.py")
SRC_OPT_IN_BWD = ("torchtune optimizer_in_bwd (register_optim_in_bwd_hooks); torch.optim._apply_optimizer_in_backward; "
                  "memory/savers.py")
SRC_DISTRIBUTED = ("memory/distributed.py: ZeRO §5 partitions; torch fsdp _runtime_utils.py _post_backward_hook, "
                   "no_sync; _flat_param.py")
SRC_MASTER = "ZeRO paper (Rajbhandari et al. 2020) §3.1: fp32 master copy of trainable weights"
SRC_DEQUANT = ("bitsandbytes 0.50 autograd/_functions.py MatMul4Bit (gemm_4bit's dequantize-and-linear fallback, "
               "backward dequantize_4bit)")
SRC_DORA = "Liu et al. 2024 (DoRA, arXiv:2402.09353); peft tuners/lora/dora.py DoraLinearLayer"
SRC_SAVED = "peft utils/other.py ModulesToSaveWrapper: a deep copy of the module, trained; the original frozen"
SRC_TOKENS = "peft tuners/trainable_tokens/layer.py TrainableTokensLayer (get_merged_weights: index_copy)"
SRC_LORA = "Hu et al. 2021 (LoRA) §4.1: r × (d_in + d_out) per adapted Linear; peft tuners/lora"
SRC_QLORA = ("QLoRA paper (arXiv:2305.14314) §3; bitsandbytes quantize_4bit: two NF4 values per byte, "
             f"absmax per {NF4_BLOCK}-element block, double quant: uint8 absmax + fp32 per {DQ_BLOCK} blocks")
SRC_HQQ = ("hqq 0.2.8 core/quantize.py Quantizer.quantize + core/bitpack.py (W_q packed per nbits; scale, zero per "
           "group in the compute dtype), as transformers 4.x quantizer_hqq.py builds HQQLinear (memory/hqq.py)")
SRC_INT8 = "LLM.int8 (Dettmers et al. 2022); bitsandbytes Linear8bitLt: int8 weight + fp32 scale per row"
# Llama 4's layers that save less than the MoE RoPE layer counted per layer (memory/__init__.py _activation_plan):
# the NoPE layers (no chunked mask, no L2 q/k norm; modeling_llama4.py Llama4TextAttention), Maverick's dense layers
# and the bottom layer under LoRA.
LLAMA4_LESS = "what the NoPE, dense and bottom layers save less: modeling_llama4.py"


def _router_src(m: ModelSpec) -> str:
    """Where the fp32 routers come from (memory/weights.py FP32_ROUTER_FAMILIES)."""
    if m.family == "nemotron_h":
        return "transformers modeling_nemotron_h.py NemotronHPreTrainedModel._keep_in_fp32_modules_strict"
    return "transformers modeling_deepseek_v3.py / _v2.py _keep_in_fp32_modules_strict"


# --lora-layers (core/lora_layers.py): what layers_less holds without checkpointing
LORA_LAYERS_LESS = ("what the lowest adapted layer (no input gradient) and the unadapted layers above it save less "
                    "than an adapted layer")


UNFROZEN_LESS = ("what the lowest trained layer (no input gradient) and the frozen layers above it save less than a "
                 "trained layer")


def _less_label(m: ModelSpec) -> str:
    if jamba.is_jamba(m):  # memory/jamba.py layer_differences: each layer's own kind below the largest kind's set
        return "what the attention and dense-MLP layers save less than the largest kind"
    if zamba2.is_zamba2(m):  # memory/zamba2.py layered_less: the hybrid layer's set, each Mamba layer's less
        return "what the Mamba layers save less than a hybrid layer (its shared block) and the bottom moment's less"
    if nemotron_h.is_nemotron_h(m):  # memory/nemotron_h.py layered_less: the envelope of the three kinds
        kinds = "mixer, attention, MLP, MoE" if "E" in m.hybrid_pattern else "mixer, attention, MLP"
        return f"what each layer saves less than the envelope of the kinds ({kinds}) and the bottom's less"
    if m.family in ("bamba", "granitemoehybrid"):  # memory/hybrid.py layered_less: the envelope of the two kinds
        return "what each layer saves less than the larger kind (mixer or attention) and the bottom layer's less"
    return LLAMA4_LESS if m.family == "llama4" else "what the bottom layers save less"

SRC_ACTS = ("transformers modeling files and torch derivatives.yaml (what each op saves for backward); "
            "Korthikanti et al. 2022 (arXiv:2205.05198) §4; memory/activations.py")
SRC_CKPT = "torch.utils.checkpoint via HF gradient_checkpointing_enable: each layer keeps only its input"
SRC_LOSS = "transformers ForCausalLMLoss: logits.float(), log_softmax (saved), nll_loss"
SRC_LIGER_CE = ("liger_kernel ops/cross_entropy.py LigerCrossEntropyFunction (nn.functional.cross_entropy patched; "
                "transformers ForCausalLMLoss's logits.float() is its input)")
SRC_ENCODER_HEAD = ("memory/encoder.py (modeling_bert.py BertForSequenceClassification / BertForTokenClassification "
                    "/ BertForMaskedLM: the head, then CrossEntropyLoss on the compute-dtype logits)")
SRC_OVERHEAD = ("memory/overhead.py: CUDA context measured ~500 MiB; CublasHandlePool.cpp; NCCL docs; "
                "CUDACachingAllocator.cpp segments; fragmentation fitted (docs/real-gpu.md)")
SRC_PHASES = "memory/__init__.py phase model (steady state, zero_grad(set_to_none=True))"
SRC_RL_VLLM = ("memory/rl.py colocated (TRL 1.16 trl/generation/vllm_generation.py _init_vllm, sync_weights, "
               "generate: LLM(gpu_memory_utilization=...), sleep(level=2))")
SRC_REWARD_MODEL = ("memory/reward_scoring.py (TRL 1.16 online_dpo_trainer.py __init__ and "
                    "_calculate_rewards_from_functions; grpo_trainer.py _calculate_rewards: "
                    "AutoModelForSequenceClassification(num_labels=1) under torch.inference_mode)")
SRC_RL = "memory/rl.py (TRL 1.16 trl/trainer/grpo_trainer.py _generate_single_turn, _generate_and_score_completions)"
SRC_PREFERENCE = ("memory/preference.py (TRL 1.16 trl/trainer/dpo_trainer.py, kto_trainer.py _compute_loss; "
                  "DataCollatorForPreference)")
SRC_REWARD = ("memory/reward.py (TRL reward_trainer.py: AutoModelForSequenceClassification(num_labels=1); "
              "transformers GenericForSequenceClassification score = Linear(hidden, 1))")
# The loss kernels explain names beyond memory/loss.py's LABELS: the reward model's score head (loss_bytes "reward").
_REWARD_LABELS = ("score head input (the last hidden states, compute dtype)",
                  "fp32 last hidden states' cast + [2B, S, 1] scores + the last-token search",
                  "the scores' gradient + the score's input gradient", "")
# An objective's own head (memory/preference.py) that memory/loss.py does not label.
# ORPO / CPO / SimPO (memory/preference.py logits_head_bytes): the full logits of the 2B rows, no fused head.
_LOGITS_HEAD_LABELS = ("the logits and what log-probs and the chosen NLL save",
                       "the logits' fp32 copy, the chosen half's copy and log-prob work",
                       "gradients of the log-probs, the NLL and the two slices, summed",
                       "the head's backward")
# Online DPO (memory/online_dpo.py head_bytes): the full logits of the 2B completions, a log-softmax over the completion
# positions kept for backward.
_ONLINE_HEAD_LABELS = ("the completion positions' log-softmax output (and lm_head's input)",
                       "the full logits (and their fp32 copy under amp) beside the log-softmax",
                       "the gather's and log-softmax's gradients, then the slice's full-logits gradient",
                       "the head's backward")
_TT_DPO_HEAD_LABELS = ("the shifted positions' log-softmax output (and lm_head's input)",
                       "the fp32 logits beside the log-softmax's input copy (logits / 1.0) and output",
                       "the gather's and log-softmax's gradients, then the slice's full-logits gradient",
                       "the head's backward")
SRC_ONLINE = ("memory/online_dpo.py (TRL 1.16 trl/experimental/online_dpo/online_dpo_trainer.py training_step, "
              "_generate, _forward)")
SRC_TORCHTUNE_DPO = ("memory/online_dpo.py head_bytes, ReferencePlan with scale_copy (torchtune "
                     "recipes/lora_dpo_single_device.py, full_dpo_distributed.py concatenated_forward; "
                     "torchtune/rlhf/sequence_processing.py get_batch_log_probs)")
# PPO (memory/ppo.py head_bytes, TRL 0.19.1 PPOTrainer): the policy's full logits kept through the micro-batch, a
# log-softmax per row over the completion positions.
_PPO_HEAD_LABELS = ("the rows' log-softmax outputs (16-bit logits) and lm_head's input",
                    "the full logits (kept until the mini-batch ends) and one row's log-softmax",
                    "the rows' gradients, then the slice's and CopySlices' full-logits gradients and the division",
                    "the head's backward")
SRC_PPO = ("memory/ppo.py (trl==0.19.1 trl/trainer/ppo_trainer.py PPOTrainer.train, PolicyAndValueWrapper; "
           "trl/trainer/utils.py batch_generation, generate, forward, get_reward, selective_log_softmax; TRL 1.x has "
           "no PPOTrainer)")
SRC_LOGITS = ("memory/preference.py logits_head_bytes (TRL 1.16 trl/experimental/orpo/orpo_trainer.py, "
              "trl/experimental/cpo/cpo_trainer.py concatenated_forward; trl/kernels/logprob_entropy.py)")
_OBJECTIVE_HEAD_LABELS = ("the head's saved tensors", "the head's forward transients", "its backward transients",
                          "the head's backward")
# What each Linear method trains per adapted module (core/peft_methods.py LinearRule.shapes, from peft's layer.py).
_PEFT_FORMULAS = {
    "ia3": "(1 × d_in) on a feedforward module, else (d_out × 1), × modules",
    "loha": "hada_w1_a, hada_w2_a (d_out × r) + hada_w1_b, hada_w2_b (r × d_in), × modules",
    "lokr": "w1 (out_l × in_m) + w2 (out_k × in_n) or its rank-r factors, × modules",
    "vera": "lambda_b (d_out) + lambda_d (r), × modules",
    "oft": "(d_in / b blocks) × b(b − 1)/2 skew-symmetric entries, × modules",
    "fourierft": "n_frequency spectral coefficients, × modules",
    "boft": "boft_R (1 × blocks × b × b) + boft_s (d_out × 1), × modules",
    "miss": "miss_block (r × d_out), × modules",
    "c3a": "c3a_kernel (d_out / b × d_in / b × b), × modules",
    "shira": "r × (d_in + d_out) sparse weights, × modules",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One step of arithmetic: `label = inputs = value`, with its formula and source."""

    key: str  # stable identifier, compared by --diff
    label: str
    inputs: str  # the numbers put into the formula, e.g. "7,241,732,096 params × 2 B (bf16)"
    value: int
    formula: str = ""
    source: str = ""
    kind: Kind = "bytes"


@dataclass(frozen=True, slots=True)
class Section:
    """One component (or the phase model): its lines, its total, and prose."""

    key: str
    title: str
    total: int | None
    lines: tuple[Line, ...]
    text: tuple[str, ...] = ()
    kind: Kind = "bytes"


@dataclass(frozen=True)
class Explanation:
    """The whole arithmetic of one estimate."""

    model: ModelSpec
    training: TrainingSpec
    breakdown: Breakdown
    sections: tuple[Section, ...]
    peak_moment: str  # which moment of the peak phase is the largest
    notes: tuple[str, ...] = field(default=())

    def lines(self) -> dict[str, Line]:
        """Every line by key (section totals included as `<section>.total`)."""
        out: dict[str, Line] = {}
        for s in self.sections:
            if s.total is not None:
                out[f"{s.key}.total"] = Line(f"{s.key}.total", s.title, "", s.total, kind=s.kind)
            for line in s.lines:
                out[line.key] = line
        return out


def _n(x: int) -> str:
    return f"{x:,}"


def fmt_value(value: int, kind: Kind, unit: str = "GB") -> str:
    """Bytes in the unit (MB/MiB below 0.1 of it), counts with separators, per-token bytes as B/token."""
    if kind == "count":
        return _n(value)
    if kind == "per_token":
        return f"{value:,} B/token"
    if value == 0:
        return "0 B"
    scale = UNIT_BYTES[unit]
    if value and abs(value) < scale // 10:
        small = "MB" if unit == "GB" else "MiB"
        return f"{value / (scale // 1000 if unit == 'GB' else scale // 1024):,.2f} {small}"
    return f"{value / scale:,.2f} {unit}"


def residual_bytes(recipe: Recipe) -> int:
    """The residual stream's bytes per element: fp32 under autocast or in fp32 runs, else the compute dtype."""
    return 4 if recipe.autocast or recipe.compute == "fp32" else dtype_bytes(recipe.compute)


def explain(model: ModelSpec, training: TrainingSpec) -> Explanation:
    """Build the explanation of `estimate(model, training)`."""
    if new_tokens.active(training):  # --add-tokens: the resized model's run, with its new rows (memory/new_tokens.py)
        resized, inner = new_tokens.view(model, training)
        return _with_new_rows(explain(resized, inner), model, training)
    if unreplaced.active(model, training):  # bitsandbytes quantizes no FalconLinear: a LoRA (memory/unreplaced.py)
        return _noted(explain(model, unreplaced.view(model, training)), training, unreplaced.note(model, training))
    if model.vision is not None:  # vision-language models: the text model's run, then the image side
        return _explain_vision(model, training)
    if training.objective == "ppo":  # TRL 0.19.1 PPOTrainer (memory/ppo.py): the policy's step, then the rest
        return _explain_ppo(model, training)
    return _explain_run(model, training, estimate(model, training))


def _with_new_rows(e: Explanation, model: ModelSpec, training: TrainingSpec) -> Explanation:
    """The resized model's explanation `e`, with the rows resize_token_embeddings added (a parameters line) and
    the run as asked (its --add-tokens / --vocab-multiple)."""
    rows, pad = new_tokens.new_rows(model, training)
    h = model.hidden_size or 0
    tensors = 1 if model.tie_word_embeddings else 2
    line = Line("parameters.new_token_rows", "new token rows (embed_tokens" + ("" if tensors == 1 else " + lm_head")
                + ")", f"({_n(training.add_tokens)} tokens + {_n(pad)} padding) × {_n(h)} hidden"
                + ("" if tensors == 1 else " × 2 (untied head)"), rows * h * tensors,
                "new rows × hidden × (1 tied, 2 untied)", new_tokens.SOURCE, "count")
    sections = tuple(replace(s, lines=(s.lines[0], line, *s.lines[1:])) if s.key == "parameters" and s.lines else s
                     for s in e.sections)
    return _noted(replace(e, sections=sections), training, new_tokens.note(model, training))


def _noted(e: Explanation, training: TrainingSpec, text: str) -> Explanation:
    """`e`, the explanation of the run the core counts, for the run as asked (`training`), with `text` saying why."""
    return replace(e, training=training, notes=(*e.notes, text),
                   breakdown=replace(e.breakdown, notes=(*e.breakdown.notes, text)))


def _explain_run(model: ModelSpec, training: TrainingSpec, b: Breakdown) -> Explanation:
    """The explanation of the training or inference run `training` whose estimate is `b`."""
    if model.family in CLASSIC_FAMILIES:  # ResNet / LSTM (memory/classic.py): its own units
        return _explain_classic(model, training, b)
    if training.mode == "inference":
        return _explain_inference(model, training, b)
    if training.mode == "serve":
        return _explain_serve(model, training, b)
    model = encoder.for_run(model, training)  # an encoder with the run's task head (memory/encoder.py)
    asked = training
    training = badam.view(model, training)  # BAdam: as the estimate sees it, one layer trained (memory/badam.py)
    training = lisa.view(model, training)  # LISA: the top N layers, the embeddings and head trained (memory/lisa.py)
    training = context_parallel.view(model, training)  # one rank: seq_len / cp tokens (memory/context_parallel.py)
    recipe = recipe_of(training)
    # The model and run as the core's plan sees them (memory/__init__.py estimate): a reward model's weights are
    # the body under a score head; a preference step stacks chosen and rejected rows (2B) with dropout off.
    weighed = reward_model.body(model) if training.objective == "reward" else model
    w = weight_bytes(weighed, training, recipe)
    if (pref.is_preference(training) or pref.is_reference_free(training) or training.objective == "online-dpo") \
            and training.lora_dropout > 0:
        # disable_dropout_in_model reaches peft's lora_dropout modules too (memory/__init__.py estimate): the layer's
        # terms without dropout's masks (a property counterexample: DeepSeek-V2-Lite LoRA dropout 0.05 under DPO, the
        # lines 5,120 B over the core's per-layer set)
        training = replace(training, lora_dropout=0.0)
    policy = pref.policy_view(training) if training.objective != "sft" else training
    # memory/__init__.py _build_plan: TRL's preference trainers disable dropout (DPOConfig / ORPOConfig / CPOConfig
    # disable_dropout=True); GRPOConfig's and RLOOConfig's default is False: dropout stays
    acting = pref.without_dropout(model) if (pref.is_preference(training) or pref.is_reference_free(training)
                                             or training.objective == "online-dpo") and model.dropout else model
    notes: list[str] = []
    sections = [
        _parameters(model, training, w.parameters, w.trainable),
        _weights(model, training, b, w),
        _gradients(training, b, w, recipe.grad),
        _optimizer(training, b, *_optimized(weighed, training, recipe, w), model, w),
    ]
    if seq2seq.is_seq2seq(model):  # encoder-decoders: two stacks, source and target (memory/seq2seq.py)
        sections += list(_seq2seq(model, training, b))
    elif model.has_architecture:
        layer_sec, act_sec, temp_sec = _transformer(acting, policy, b)
        sections += [layer_sec, act_sec, temp_sec]
    else:
        act_sec, temp_sec = _count_only(model, policy, b)
        sections += [act_sec, temp_sec]
    phase_sec, peak_moment = _phases(b)
    sections.append(phase_sec)
    sections.append(_overhead(b))
    return Explanation(model, asked, b, tuple(sections), peak_moment, tuple(notes) + b.notes)


def _explain_ppo(model: ModelSpec, training: TrainingSpec) -> Explanation:
    """PPO (memory/ppo.py): the policy's own step explained as any run's (its head: memory/ppo.py head_bytes), the
    reference, value and reward models' lines in each component's section, the rollout's section, and the update's
    phases (memory/ppo.py estimate's moments)."""
    from vramcalc.core.memory import _estimate, ppo

    b = estimate(model, training)  # refuses what is not modelled (memory/ppo.py check) before anything else
    view = replace(training, reward_model="none", reward_spec=None, reward_dtype="auto")
    policy_model = pref.without_dropout(model)
    inner = _explain_run(policy_model, view, _estimate(policy_model, view))
    d = b.details
    r = training.reward_spec
    assert r is not None
    recipe = recipe_of(training)
    rows, chunk = ppo.rollout_rows(training), ppo.chunk_rows(training)
    comp = training.seq_len - training.prompt_len
    value_params = reward_scoring.parameters(r)
    extra = {
        "weights": (
            Line("weights.reference", "reference: create_reference_model(policy), frozen" if d["weights.reference"]
                 else "reference: the policy with its adapters disabled (null_ref_context)",
                 "a copy of the policy's weights" if d["weights.reference"] else "no weights",
                 d["weights.reference"], source=SRC_PPO),
            Line("weights.value_model", "value model: AutoModelForSequenceClassification(num_labels=1) from the "
                 "reward model's path, trained", f"{value_params:,} params × {dtype_bytes(ppo.value_dtype(training))}"
                 f" B ({ppo.value_dtype(training)}, the policy's load dtype)", d["weights.value_model"],
                 source=SRC_PPO),
            Line("weights.reward_model", f"reward model {training.reward_model}: frozen sequence classifier",
                 f"{value_params:,} params × {dtype_bytes(reward_scoring.weight_dtype(training, recipe))} B",
                 d["weights.reward_model"], source=SRC_PPO),
        ),
        "gradients": (Line("gradients.value_model", "value model's gradients (trained in full even under peft: "
                           "PolicyAndValueWrapper under one optimizer)", "the value model's step (memory/reward.py "
                           "on --batch-size rows)", d["gradients.value_model"], source=SRC_PPO),),
        "optimizer_state": (Line("optimizer_state.value_model", "value model's optimizer state",
                                 "the value model's step", d["optimizer_state.value_model"], source=SRC_PPO),),
        "activations": (
            Line("activations.value_model", "value model's saved activations (its backbone runs first, saved for "
                 "the one backward)", f"{training.batch_size} rows × {training.seq_len} tokens (memory/reward.py "
                 "on the attention-masked rows)", d["activations.value_model"], source=SRC_PPO),
            Line("activations.rollout_logits", "rollout logits (batch_generation's padded output.scores, fp32, "
                 "alive all update)", f"{rows} rows × {comp} response tokens × {model.vocab_size:,} vocab × 4 B",
                 d["activations.rollout_logits"], source=SRC_PPO),
            Line("activations.policy_output_kept", "the policy's output kept until the mini-batch's del (full "
                 "logits, output_hidden_states)", f"{training.batch_size * training.seq_len:,} tokens × (vocab + "
                 "(layers + 1) × hidden) × compute bytes", d["activations.policy_output_kept"], source=SRC_PPO),
        ),
        "temporaries": (
            Line("temporaries.rollout_generate", "rollout generate() of a chunk: scores kept and stacked, its step",
                 f"{chunk} rows, query {training.prompt_len} + {comp} new tokens (memory/rl.py generation_bytes + "
                 "the scores)", d["temporaries.rollout_generate"], source=SRC_PPO),
            Line("temporaries.rollout_reference", "rollout: the reference's no-grad forward (hidden states, full "
                 "logits, a row's log-softmax)", f"{chunk} rows × {training.seq_len} tokens",
                 d["temporaries.rollout_reference"], source=SRC_PPO),
            Line("temporaries.rollout_scores", "rollout: the value / reward model's get_reward (hidden states, "
                 "a layer)", f"{chunk} rows × {training.seq_len} tokens", d["temporaries.rollout_scores"],
                 source=SRC_PPO),
            Line("temporaries.entropy", "after the step: the entropy's softmax and product of the completion logits",
                 f"2 × {training.batch_size} rows × {comp} × {model.vocab_size:,} × compute bytes",
                 d["temporaries.entropy"], source=SRC_PPO),
        ),
    }
    sections = []
    for sec in inner.sections:
        if sec.key in ("phases", "overhead"):
            continue
        if sec.key in extra:
            added = tuple(x for x in extra[sec.key] if x.value or sec.key == "weights")
            total = b.temporaries if sec.key == "temporaries" else b.component(sec.key)
            sec = replace(sec, lines=sec.lines + added, total=total)
        sections.append(sec)
    text = (f"ppo follows TRL 0.19.1's PPOTrainer (TRL 1.x dropped it): each update generates {rows} responses "
            f"(per_device_train_batch_size × gradient_accumulation_steps) in chunks of {chunk} "
            "(local_rollout_forward_batch_size), keeps every step's fp32 scores, runs the reference, value and reward "
            "models on each chunk without gradients, then trains the policy and the value model together on each "
            "micro-batch for num_ppo_epochs (neither those epochs nor num_mini_batches 1 change the peak)",
            "the sections above are the policy's own step (its head: memory/ppo.py head_bytes) with the other "
            "models' lines added; the phases below are the whole update's moments")
    sections.append(Section("ppo", "PPO update (TRL 0.19.1 PPOTrainer)", None, (), text))
    phase_sec, peak_moment = _phases(b)
    sections += [phase_sec, _overhead(b)]
    return Explanation(model, training, b, tuple(sections), peak_moment, b.notes)


def _image_side_states(key: str, grads: str, opt: str, params: int, b: Breakdown, inner: Explanation,
                       src: str, at: str = "the language model's bytes per parameter") -> dict[str, tuple[Line, ...]]:
    """A vision-language explanation's gradients and optimizer-state lines: what the image side's trained
    parameters (projector, tower) add to the language model's, at its bytes per parameter (or `at`)."""
    how = f"{params:,} params at {at}"
    return {"gradients": (Line(f"gradients.{key}", grads, how, b.gradients - inner.breakdown.gradients,
                               source=src),),
            "optimizer_state": (Line(f"optimizer_state.{key}", opt, how,
                                     b.optimizer_state - inner.breakdown.optimizer_state, source=src),)}


def _vision_explanation(model: ModelSpec, training: TrainingSpec, b: Any, inner: Explanation,
                        extra: dict[str, Any], projector: str, lines: tuple[Line, ...],
                        text: tuple[str, ...]) -> Explanation:
    """A vision-language model's explanation: the language model's sections (`inner`) with the image side's lines
    (`extra`, by section key) added and the totals set to the whole model's (`b`), then the image side's own
    section (`lines`, `text`; `projector`: what the family calls it), the phases and the overhead."""
    sections = []
    for sec in inner.sections:
        if sec.key in ("phases", "overhead"):
            continue
        if sec.key in extra:
            added = tuple(x for x in extra[sec.key] if x.value or sec.key == "weights")
            total = b.temporaries if sec.key == "temporaries" else b.component(sec.key)
            sec = replace(sec, lines=sec.lines + added, total=total)
        sections.append(sec)
    phase_sec, peak_moment = _phases(b)
    vision = Section("vision", f"vision tower and {projector} (the image side)", None, lines, text)
    sections += [vision, phase_sec, _overhead(b)]
    return Explanation(model, training, b, tuple(sections), peak_moment, b.notes)


def _explain_qwen_vision(model: ModelSpec, training: TrainingSpec, b: Any, inner: Explanation) -> Explanation:
    """Qwen2-VL / Qwen2.5-VL (memory/vision.py _qwen_estimate): the language model's explanation on text + image
    tokens, the image side's lines in each component's section, its own section, and the step's phases."""
    from vramcalc.core.memory import vision
    from vramcalc.core.params import projector_params, vision_tower_params

    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    mod = "qwen2_vl/modeling_qwen2_vl.py" if v.kind == "qwen2_vl" else "qwen2_5_vl/modeling_qwen2_5_vl.py"
    src = f"transformers models/{mod} Qwen2VLModel.forward; memory/vision.py _qwen_estimate"
    side = training.image_size
    t, gh, gw = vision.qwen_grid(v, side, side)
    per_image = vision.qwen_image_tokens(v, side, side)
    images = vision.images_per_sample(training)
    tower, merger = vision_tower_params(v), projector_params(v, model.hidden_size)
    trained = training.method == "full" or vision.frozen_lm(training)
    adapters = vision.qwen_image_adapters(model, training)
    trained_params = (merger if trained else 0) + (tower if training.train_vision else 0) + adapters
    what = "tower / merger LoRA adapter" if adapters else "merger" + (" and tower" if training.train_vision else "")
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if training.train_vision
                                                                   else " (frozen)"),
                 f"{tower:,} params", d["weights.vision_tower"],
                 source=f"transformers models/{mod} vision blocks and patch embedding"),
            Line("weights.projector", "merger weights" + (" (trained)" if trained else " (frozen)"),
                 f"{merger:,} params", d["weights.projector"], source=src + " (PatchMerger)"),
            *((Line("weights.image_adapters", "LoRA adapters on the tower / merger (peft's target matching)",
                    f"{adapters:,} params x {dtype_bytes(training.adapter_dtype)} B ({training.adapter_dtype})",
                    adapters * dtype_bytes(training.adapter_dtype),
                    source="peft tuners_utils.py _maybe_include_all_linear_layers; memory/vision.py "
                    "qwen_lora_targets"),) if adapters else ()),
        ),
        **_image_side_states("projector", f"{what} gradients" + ("" if adapters else " (trained)" if
                                                                         vision.frozen_lm(training) else
                                                                         " (full fine-tuning trains them)"),
                             f"{what} optimizer state",
                             trained_params, b, inner, src),
        "activations": (Line("activations.image_side", "image side: pixel_values, M-RoPE position_ids, what the "
                             "merger and (with checkpointing or --train-vision) the tower keep",
                             "pixel_values (patches x 1,176), position_ids (3 x batch x tokens int64), saved "
                             "tensors (--train-vision without checkpointing: every block's saved set, "
                             "memory/vision.py _qwen_block_saved)",
                             b.activations - inner.breakdown.activations, source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower forward (one block's transients)",
                             "pixel_values, rotary tables and one block's rotary or MLP peak",
                             d["temporaries.vision_tower_forward"], source=src),),
    }
    lines = [
        Line("vision.image_tokens", "image tokens per image = smart_resize'd patches / (merge x merge)",
             f"{side} px -> {gh * v.patch_size} x {gw * v.patch_size} px = {t} x {gh} x {gw} patches / "
             f"{v.spatial_merge_size ** 2}", per_image,
             source="transformers models/qwen2_vl/image_processing_qwen2_vl.py smart_resize", kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x image tokens",
             f"{training.seq_len:,} + {images} x {per_image}", vision.total_tokens(model, training), source=src,
             kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * per_image:,} image tokens "
            "per sample (--seq-len counts the text only; --image-size is each image's side in pixels); the "
            "sections above are its own, on that many tokens",
            ("the vision tower is trained (--train-vision)" if training.train_vision else "the vision tower is frozen")
            + (" and the merger trained" if trained else
               "; LoRA adapts what peft's target matching finds: the language model, and with all-linear (or the "
               "tower's module names) the tower's and merger's Linears"))
    return _vision_explanation(model, training, b, inner, extra, "merger", tuple(lines), text)


def _frozen_lm_inner(training: TrainingSpec, inner: Explanation) -> Explanation:
    """--train-modules projector (memory/vision.py frozen_lm): the language model's explanation without its stand-in
    embedding's trainable count, gradients and optimizer states (the image side's lines then count them all)."""
    from vramcalc.core.memory import vision

    if not vision.frozen_lm(training):
        return inner
    frozen = Line("parameters.trainable", "trainable", "none: the language model frozen (--train-modules projector)",
                  0, kind="count")
    sections = tuple(replace(sec, lines=()) if sec.key in ("gradients", "optimizer_state") else
                     replace(sec, lines=tuple(frozen if x.key == "parameters.trainable" else x for x in sec.lines))
                     for sec in inner.sections)
    return replace(inner, sections=sections,
                   breakdown=replace(inner.breakdown, trainable_parameters=0, gradients=0, optimizer_state=0))


def _explain_vision(model: ModelSpec, training: TrainingSpec) -> Explanation:
    """A vision-language model (memory/vision.py): the language model's explanation on text + image tokens, the
    image side's own section, and the phases of the whole step."""
    from vramcalc.core.memory import vision
    from vramcalc.core.params import projector_params, vision_tower_params

    if model.vision is not None and model.vision.is_mllama:  # Llama-3.2-Vision: no image tokens in the text
        return _explain_mllama(model, training)
    b = estimate(model, training)  # the refusals first (memory/vision.py check)
    if model.vision is not None and model.vision.kind == "idefics3":  # Idefics3 / SmolVLM: memory/idefics3.py
        return _explain_idefics3(model, training, b)
    if model.vision is not None and model.vision.kind == "llama4":  # Llama 4 multimodal: memory/llama4v.py
        return _explain_llama4v(model, training, b)
    text_model, text_training = vision.text_run(model, training)
    inner = _frozen_lm_inner(training, explain(text_model, text_training))
    v = model.vision
    assert v is not None and model.hidden_size is not None
    if v.kind == "siglip":
        return _explain_gemma3(model, training, b, inner)
    if v.kind == "llava_next":  # anyres tiles (memory/llava_next.py)
        return _explain_llava_next(model, training, b, inner)
    d = b.details
    src = "transformers models/llava/modeling_llava.py LlavaModel.forward; memory/vision.py"
    per_image = vision.image_tokens(v)
    if v.is_qwen:  # Qwen2-VL / Qwen2.5-VL: dynamic resolution, the merger as the projector
        return _explain_qwen_vision(model, training, b, inner)
    images = vision.images_per_sample(training)
    tower, projector = vision_tower_params(v), projector_params(v, model.hidden_size)
    trained = training.method == "full" or vision.frozen_lm(training)
    adapters, adapters_grad, _ = vision.clip_image_adapters(model, training)
    # each component's section: the language model's lines and the image side's, adding up to the whole step's
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if training.train_vision else
                                                                   " (frozen)"), f"{tower:,} params (CLIP ViT)",
                 d["weights.vision_tower"], source="transformers models/clip/modeling_clip.py CLIPVisionTransformer"),
            Line("weights.projector", "projector weights" + (" (trained)" if trained else " (frozen)"),
                 f"{projector:,} params", d["weights.projector"], source=src + " LlavaMultiModalProjector"),
            *_clip_adapter_lines(training, adapters),
        ),
        # (a trained tower's layers above the feature layer get no gradient: memory/vision.py unreached_params)
        **_image_side_states("projector", "tower / projector LoRA adapter gradients (the layers above the feature "
                             "layer get none)" if adapters else
                             ("projector and tower gradients" if training.train_vision else "projector gradients")
                             + (" (trained)" if vision.frozen_lm(training) else
                                " (full fine-tuning trains it)"),
                             "tower / projector LoRA adapter optimizer state" if adapters else
                             "projector" + (" and tower" if training.train_vision else "") + " optimizer state",
                             (projector if trained else 0) + adapters_grad
                             + (tower - vision.unreached_params(v) if training.train_vision else 0), b, inner, src),
        "activations": (Line("activations.image_side", "image side: pixel_values and what it saves for backward",
                             "projector inputs, mask; with checkpointing and adapters the tower's kept layer "
                             "inputs; with LoRA on the tower (no checkpointing) its layers' saved sets and the held "
                             "image outputs", b.activations - inner.breakdown.activations, source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower forward (no grad; approximate)",
                             "text embeddings, pixel_values and one CLIP layer's transients",
                             d["temporaries.vision_tower_forward"],
                             source="transformers models/clip/modeling_clip.py CLIPEncoderLayer"),),
    }
    lines = [
        Line("vision.image_tokens", "image tokens per image = (image / patch)^2, the class token dropped",
             f"({v.image_size} / {v.patch_size})^2", per_image, source=src, kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x image tokens",
             f"{training.seq_len:,} + {images} x {per_image}", vision.total_tokens(model, training), source=src,
             kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * per_image:,} image tokens "
            "per sample (--seq-len counts the text only); the sections above are its own, on that many tokens",
            ("the vision tower is trained (--train-vision)" if training.train_vision else "the vision tower is frozen")
            + (" and the projector trained" if training.method == "full" else _CLIP_LORA_TEXT))
    return _vision_explanation(model, training, b, inner, extra, "projector", tuple(lines), text)


# LLaVA-1.5 / LLaVA-NeXT under LoRA (memory/vision.py clip_lora_targets)
_CLIP_LORA_TEXT = ("; LoRA adapts what peft's target matching finds: the language model, and the CLIP tower's "
                   "Linears its names reach (q_proj, k_proj, v_proj, out_proj, fc1, fc2; all-linear takes them all "
                   "and the projector's linear_1 / linear_2)")


def _clip_adapter_lines(training: TrainingSpec, adapters: int) -> tuple[Line, ...]:
    """The weights line of LoRA adapters on a LLaVA model's CLIP tower / projector, if any."""
    if not adapters:
        return ()
    return (Line("weights.image_adapters", "LoRA adapters on the tower / projector (peft's target matching)",
                 f"{adapters:,} params x {dtype_bytes(training.adapter_dtype)} B ({training.adapter_dtype})",
                 adapters * dtype_bytes(training.adapter_dtype),
                 source="peft tuners_utils.py check_target_module_exists; memory/vision.py clip_lora_targets"),)


def _explain_mllama(model: ModelSpec, training: TrainingSpec) -> Explanation:
    """Llama-3.2-Vision (memory/mllama.py): the language model's explanation on the text tokens (every layer as
    the decoder path counts it), the image side's lines in each component's section (the cross-attention layers'
    difference among them), its own section, and the step's phases."""
    from vramcalc.core.memory import mllama
    from vramcalc.core.params import mllama_text_extra_params, projector_params, vision_tower_params

    b = estimate(model, training)  # the refusals first (memory/mllama.py check)
    tower_mods, proj_adapted, text_targets = mllama.lora_targets(model, training)  # peft's matching, whole model
    text_training = replace(training, images=0, image_width=0, train_vision=False, lora_targets=text_targets)
    flm = mllama.frozen_lm(training)
    from vramcalc.core.memory.frozen_lm import projector_trained

    flm_projector = projector_trained(training)  # frozen_lm without the tower alone (tower_only): the projector trained
    if flm:  # the text run's stand-in embedding (memory/mllama.py), its trainable count taken out (_frozen_lm_inner)
        text_training = replace(text_training, train_layers=(), train_modules=("embed_tokens",))
    inner = _frozen_lm_inner(training, explain(replace(model, vision=None), text_training))
    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    src = "transformers models/mllama/modeling_mllama.py MllamaModel.forward; memory/mllama.py"
    tower_adapters, projector_adapters = mllama.tower_adapter_params(model, training)
    adapters = tower_adapters + projector_adapters
    adapted = ", ".join(tower_mods) + (" + multi_modal_projector" if proj_adapted else "")
    tower, projector = vision_tower_params(v), projector_params(v, model.hidden_size)
    extras = mllama_text_extra_params(model)
    trained = training.method == "full"
    tile, rows = mllama.tower_rows(v)
    keys = mllama.vision_rows(model, training)
    images = training.images or 1
    tv = training.train_vision
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if tv else " (frozen)"),
                 f"{tower:,} params (local + global "
                 "encoders, tile and position embeddings)", d["weights.vision_tower"],
                 source="transformers models/mllama/modeling_mllama.py MllamaVisionModel"),
            Line("weights.projector", "projector and the cross-attention layers' extras" +
                 (" (trained)" if trained else " (the projector trained, the extras frozen)" if flm_projector else
                  " (frozen)"),
                 f"{projector:,} + {extras:,} params (8 embedding rows, q_norm / k_norm, gates)",
                 b.weights - inner.breakdown.weights - d["weights.vision_tower"]
                 - adapters * dtype_bytes(training.adapter_dtype), source=src),
            *((Line("weights.image_adapters", "LoRA adapters on the tower / projector (peft's target matching)",
                    f"{adapters:,} params x {dtype_bytes(training.adapter_dtype)} B ({training.adapter_dtype}): "
                    f"{adapted} in each of the {v.num_layers + v.num_global_layers} encoder layers",
                    adapters * dtype_bytes(training.adapter_dtype),
                    source="peft tuners_utils.py check_target_module_exists, _maybe_include_all_linear_layers; "
                    "memory/mllama.py lora_targets"),) if adapters else ()),
        ),
        **_image_side_states("projector", ("tower / projector LoRA adapter gradients" if adapters else
                                           ("projector" + (" and tower" if tv else "") if flm_projector else
                                            "tower") + " gradients (the language model frozen)" if flm else
                                           "projector and extras'" + (" and tower" if tv else "") + " gradients "
                                           "(full fine-tuning trains them)"),
                             ("tower / projector LoRA adapter optimizer state" if adapters else
                              ("projector" + (" and tower" if tv else "") if flm_projector else "tower")
                              + " optimizer state" if flm else
                              "projector and extras'" + (" and tower" if tv else "") + " optimizer state"),
                             (projector + extras if trained else projector if flm_projector else 0)
                             + (tower if tv else 0)
                             + adapters, b, inner, src),
        "activations": (Line("activations.image_side", "image side: the cross-attention layers' difference "
                             "(k / v over the vision rows repeated to every head, q_norm / k_norm, the mask's "
                             "padded copy), the vision output, cross_attention_states, the masks, pixel_values; "
                             + ("the trained tower's whole graph (its Linears' inputs, the gates' operands)" if tv
                                else "the tower's graph from its lowest adapter up and the adapters' saved inputs "
                                "(with checkpointing the whole hooked graph)" if tower_mods
                                else "with checkpointing the hooked tower's graph")
                             + ("; less what the layers below the lowest cross-attention layer do not save (the "
                                "language model frozen: the image enters there)"
                                if flm and not training.grad_checkpointing else ""),
                             f"{keys:,} vision rows per sample", b.activations - inner.breakdown.activations,
                             source=src + " cross_layer_delta, " + ("tower_trained_saved" if tv
                                                                    else "tower_lora_saved" if tower_mods
                                                                    else "tower_graph_saved")),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower forward",
                             "every encoder layer's output, the aspect-ratio mask, the stacked intermediate outputs "
                             "and the vision output", d["temporaries.vision_tower_forward"],
                             source="transformers models/mllama/modeling_mllama.py MllamaVisionModel.forward"),
                        Line("temporaries.cross_attention_layer", "a cross-attention layer's forward or backward",
                             "k / v over the vision rows (the adapters' copies of the states, the kernel's dk / dv, "
                             "k_norm's fp32 backward)", d["temporaries.cross_attention_layer"], source=src),
                        Line("temporaries.vision_tower_backward", "vision tower backward (" + (
                             "trained" if tv else "LoRA adapters on it" if tower_mods
                             else "checkpointing: the hooked tower") + ", run last)",
                             "the stacked outputs' gradients, one global layer's MLP backward (an adapted fc1 / "
                             "fc2's fp32 gradients)",
                             d["temporaries.vision_tower_backward"], source=src + " tower_backward")),
    }
    lines = [
        Line("vision.tower_rows", "tower rows per image = tiles x (patches + class token, padded to 8)",
             f"{v.max_num_tiles} x ({(v.image_size // v.patch_size) ** 2} + 1 -> {rows // v.max_num_tiles})", rows,
             source="transformers models/mllama/modeling_mllama.py MllamaVisionModel.forward", kind="count"),
        Line("vision.rows", "vision rows each cross-attention layer attends over, per sample",
             f"{images} image(s) x {v.max_num_tiles} tiles x {tile}", keys, source=src, kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens; {len(v.cross_attention_layers)} of its "
            f"layers ({', '.join(map(str, v.cross_attention_layers))}) attend over the images' {keys:,} vision rows "
            "(the sections above count every layer as self-attention; the image side's line adds the difference)",
            ("the vision tower is trained (--train-vision)" if tv else "the vision tower is frozen")
            + (" and the projector trained" if trained else " and the projector trained, the language model (its "
               "cross-attention layers included) frozen" if flm else f"; LoRA adapts {adapted} in the tower too (peft "
               "matches the target names over the whole model)" if adapters
               else "; LoRA adapts the language model only"))
    return _vision_explanation(model, training, b, inner, extra, "projector", tuple(lines), text)


def _explain_gemma3(model: ModelSpec, training: TrainingSpec, b: Breakdown, inner: Explanation) -> Explanation:
    """Gemma 3 multimodal (memory/vision.py _siglip_estimate): the language model's explanation on text + image
    tokens (its sdpa run with the image-block masks), the SigLIP tower and Gemma3MultiModalProjector's lines."""
    from vramcalc.core.memory import vision
    from vramcalc.core.params import projector_params, vision_tower_params

    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    src = "transformers models/gemma3/modeling_gemma3.py Gemma3Model.forward; memory/vision.py"
    siglip = "transformers models/siglip/modeling_siglip.py SiglipVisionModel"
    per_image, wrap = vision.image_tokens(v), vision.wrap_tokens(v)
    images = vision.images_per_sample(training)
    tower, projector = vision_tower_params(v), projector_params(v, model.hidden_size)
    trained = training.method == "full" or vision.frozen_lm(training)
    adapters = siglip_lora.adapter_params(model, training)
    trained_params = (projector if trained else 0) + (tower if training.train_vision else 0) + adapters
    what = "tower LoRA adapter" if adapters else "projector" + (" and tower" if training.train_vision else "")
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if training.train_vision
                                                                   else " (frozen)"),
                 f"{tower:,} params (SigLIP)", d["weights.vision_tower"], source=siglip),
            Line("weights.projector", "projector weights" + (" (trained)" if trained else " (frozen)"),
                 f"{projector:,} params", d["weights.projector"], source=src + " Gemma3MultiModalProjector"),
            *_image_adapter_lines(model, training),
        ),
        **_image_side_states("image_side", f"{what} gradients"
                             + ("" if adapters else " (trained)" if vision.frozen_lm(training) else
                                " (full fine-tuning trains them)"),
                             f"{what} optimizer state",
                             trained_params, b, inner, src),
        "activations": (Line("activations.image_side", "image side: pixel_values, the tower's output and what it "
                             "saves for backward",
                             "the tower's last hidden state (kept by the model output), the projector's RMSNorm "
                             "inputs, the mask; with checkpointing and adapters the tower's kept layer inputs; "
                             "with --train-vision its saved set", b.activations - inner.breakdown.activations,
                             source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower forward",
                             "text embeddings, pixel_values, the hidden state and one SigLIP layer's transients "
                             "(eager: its scores)", d["temporaries.vision_tower_forward"],
                             source=siglip.replace("SiglipVisionModel", "SiglipEncoderLayer")),),
    }
    lines = [
        Line("vision.image_tokens", "image tokens per image = mm_tokens_per_image (the 64 x 64 patch grid "
             "average-pooled)", f"({v.image_size} / {v.patch_size})^2 patches pooled", per_image, source=src,
             kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x (image tokens + 4 wrapping)",
             f"{training.seq_len:,} + {images} x ({per_image} + {wrap})", vision.total_tokens(model, training),
             source="transformers models/gemma3/processing_gemma3.py full_image_sequence", kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * (per_image + wrap):,} "
            "image and image-marker tokens per sample (--seq-len counts the text only); the sections above are "
            "its own, on that many tokens, with the bidirectional image-block masks",
            ("the vision tower is trained (--train-vision)" if training.train_vision else "the vision tower is frozen")
            + (" and the projector trained" if trained else _SIGLIP_LORA_TEXT))
    return _vision_explanation(model, training, b, inner, extra, "projector", tuple(lines), text)


# (Gemma 3, Idefics3: memory/siglip_lora.py)
_SIGLIP_LORA_TEXT = ("; LoRA adapts what peft's target matching finds: the language model, and with q_proj / v_proj "
                     "(the default), all-linear or the tower's module names the tower's Linears (its saved sets "
                     "counted)")


def _image_adapter_lines(model: ModelSpec, training: TrainingSpec) -> tuple[Line, ...]:
    """The LoRA adapters peft puts on a SigLIP tower / Idefics3's connector (memory/siglip_lora.py), if any."""
    adapters = siglip_lora.adapter_params(model, training)
    if not adapters:
        return ()
    tower, connector = siglip_lora.adapted(model, training)
    return (Line("weights.image_adapters", "LoRA adapters on the image side (peft's target matching: "
                 + ", ".join(tower + connector) + ")",
                 f"{adapters:,} params x {dtype_bytes(training.adapter_dtype)} B ({training.adapter_dtype})",
                 adapters * dtype_bytes(training.adapter_dtype),
                 source="peft tuners_utils.py check_target_module_exists; memory/siglip_lora.py"),)


def _explain_llava_next(model: ModelSpec, training: TrainingSpec, b: Breakdown, inner: Explanation) -> Explanation:
    """LLaVA-NeXT (memory/llava_next.py): the language model's explanation on text + image tokens, the anyres
    arithmetic (pinpoint, tiles, unpadded grid, newlines) and the image side's lines."""
    from vramcalc.core.memory import anyres, vision
    from vramcalc.core.params import image_newline_params, projector_params, vision_tower_params

    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    src = "transformers models/llava_next/modeling_llava_next.py LlavaNextModel; memory/llava_next.py"
    proc = "transformers models/llava_next/processing_llava_next.py _get_number_of_features"
    height, width = anyres.image_shape(training)
    images = vision.images_per_sample(training)
    bh, bw = anyres.best_resolution(v, height, width)
    n_tiles = anyres.tiles(v, height, width)
    rows, cols = anyres.unpadded_grid(v, height, width)
    per_image = anyres.image_tokens(v, height, width)
    base = (v.image_size // v.patch_size) ** 2
    tower = vision_tower_params(v)
    projector = projector_params(v, model.hidden_size) + image_newline_params(v, model.hidden_size)
    trained = training.method == "full" or vision.frozen_lm(training)
    tv = training.train_vision
    adapters, adapters_grad, _ = vision.clip_image_adapters(model, training)
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if tv else " (frozen)"),
                 f"{tower:,} params (CLIP ViT)",
                 d["weights.vision_tower"], source="transformers models/clip/modeling_clip.py CLIPVisionTransformer"),
            Line("weights.projector", "projector and image_newline weights" + (" (trained)" if trained
                                                                                else " (frozen)"),
                 f"{projector:,} params", d["weights.projector"],
                 source="transformers models/llava_next/modeling_llava_next.py LlavaNextMultiModalProjector, "
                 "LlavaNextModel.image_newline"),
            *_clip_adapter_lines(training, adapters),
        ),
        **_image_side_states("projector", "tower / projector LoRA adapter gradients (the layers above the feature "
                             "layer get none)" if adapters else "projector and image_newline"
                             + (" and tower" if tv else "") + (" gradients (trained)" if vision.frozen_lm(training)
                                                               else " gradients (full fine-tuning)"),
                             "tower / projector LoRA adapter optimizer state" if adapters else
                             "projector and image_newline" + (" and tower" if tv else "") + " optimizer state",
                             (projector if trained else 0) + (tower - vision.unreached_params(v) if tv else 0)
                             + adapters_grad, b, inner, src),
        "activations": (Line("activations.image_side", "image side: pixel_values, the held image outputs and what "
                             "the projector saves",
                             "every tile's last and feature-layer hidden states and the packed features (held by "
                             "the model output), the projector's saved inputs, the mask; with checkpointing the "
                             "tower's kept layer inputs" + ("; --train-vision: the tower's saved set over every "
                                                            "tile" if tv else ""),
                             b.activations - inner.breakdown.activations,
                             source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower and projector forward (approximate)",
                             "text embeddings, pixel_values and its tile copy, one CLIP layer's transients over "
                             "every tile", d["temporaries.vision_tower_forward"],
                             source="transformers models/clip/modeling_clip.py CLIPEncoderLayer"),),
    }
    lines = [
        Line("vision.best_resolution", f"pixels of the best image_grid_pinpoints resolution, {bh} x {bw}",
             f"select_best_resolution({height}, {width})", bh * bw, source="transformers image_processing_utils.py "
             "select_best_resolution", kind="count"),
        Line("vision.tiles", "tiles through the tower per image = (height / tile) x (width / tile) + base",
             f"({bh} / {v.image_size}) x ({bw} / {v.image_size}) + 1", n_tiles,
             source="transformers models/llava_next/modeling_llava_next.py image_size_to_num_patches",
             kind="count"),
        Line("vision.image_tokens", "image tokens per image = unpadded grid + one newline a row + base tile",
             f"{rows} x {cols} + {rows} + {base}", per_image, source=proc, kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x image tokens",
             f"{training.seq_len:,} + {images} x {per_image:,}", vision.total_tokens(model, training), source=src,
             kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * per_image:,} image tokens "
            "per sample (--seq-len counts the text only); the sections above are its own, on that many tokens",
            ("the vision tower is trained over every tile (--train-vision; the layers above vision_feature_layer "
             "get no gradient)" if tv else "the vision tower is frozen")
            + (" and the projector and image_newline trained" if trained else _CLIP_LORA_TEXT))
    return _vision_explanation(model, training, b, inner, extra, "projector", tuple(lines), text)


def _explain_idefics3(model: ModelSpec, training: TrainingSpec, b: Breakdown) -> Explanation:
    """Idefics3 / SmolVLM (memory/idefics3.py): the language model's explanation on text + image tokens, the
    processor's tiles, the SigLIP-shaped tower on every tile and Idefics3Connector's lines."""
    from vramcalc.core.memory import idefics3
    from vramcalc.core.memory.vision import images_per_sample
    from vramcalc.core.params import projector_params, vision_tower_params

    text_model, text_training = idefics3.text_run(model, training)
    inner = explain(text_model, text_training)
    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    src = "transformers models/idefics3/modeling_idefics3.py Idefics3Model.forward; memory/idefics3.py"
    proc = "transformers models/idefics3/image_processing_idefics3.py split_images"
    tiles, per_tile = idefics3.tiles_per_image(v, training), idefics3.tokens_per_tile(v)
    wrap, images = idefics3.wrap_tokens_per_image(v, training), images_per_sample(training)
    rows, cols = idefics3.grid(v, training)
    h, w = idefics3.image_hw(v, training)
    rh, rw = idefics3.resized(v, h, w)
    tower, projector = vision_tower_params(v), projector_params(v, model.hidden_size)
    trained = training.method == "full"
    adapters = siglip_lora.adapter_params(model, training)
    trained_params = (projector if trained else 0) + (tower if training.train_vision else 0) + adapters
    what = "image-side LoRA adapter" if adapters else "connector" + (" and tower" if training.train_vision else "")
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights" + (" (trained)" if training.train_vision
                                                                   else " (frozen)"),
                 f"{tower:,} params (Idefics3VisionTransformer)", d["weights.vision_tower"],
                 source="transformers models/idefics3/modeling_idefics3.py Idefics3VisionTransformer"),
            Line("weights.projector", "connector weights" + (" (trained)" if trained else " (frozen)"),
                 f"{projector:,} params", d["weights.projector"], source=src + " Idefics3Connector"),
            *_image_adapter_lines(model, training),
        ),
        **_image_side_states("image_side", f"{what} gradients"
                             + ("" if adapters else " (full fine-tuning trains them)"),
                             f"{what} optimizer state",
                             trained_params, b, inner, src),
        "activations": (Line("activations.image_side", "image side: pixel_values and pixel_attention_mask, the "
                             "tower's output and the connector's kept in the model output, what they save for "
                             "backward", "the connector's input (full fine-tuning), the mask; with checkpointing "
                             "the tower's kept layer inputs; with --train-vision its saved set",
                             b.activations - inner.breakdown.activations, source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower and connector forward",
                             "text embeddings, the inputs and get_image_features' gathered copies, the hidden states "
                             "and one layer's transients, or pixel_shuffle's two copies",
                             d["temporaries.vision_tower_forward"], source=src),),
    }
    lines = [
        Line("vision.tiles", "tiles per image = rows x cols + the global image (one tile when not split)",
             f"{h} x {w} px -> {rh} x {rw} px: {rows} x {cols} + 1" if rows else f"{h} x {w} px: one tile",
             tiles, source=proc, kind="count"),
        Line("vision.image_tokens", "image tokens per tile = (image_size // patch_size)^2 / scale_factor^2",
             f"({v.image_size} // {v.patch_size})^2 / {v.scale_factor}^2", per_tile,
             source=src + " (image_seq_len)", kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x (tiles x image tokens + "
             "wrapping)", f"{training.seq_len:,} + {images} x ({tiles} x {per_tile} + {wrap})",
             idefics3.total_tokens(model, training),
             source="transformers models/idefics3/processing_idefics3.py _get_num_multimodal_tokens", kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * (tiles * per_tile + wrap):,} "
            "image and image-marker tokens per sample (--seq-len counts the text only); the sections above are "
            "its own, on that many tokens",
            ("the vision tower is trained (--train-vision)" if training.train_vision else "the vision tower is frozen")
            + (" and the connector trained" if trained else _SIGLIP_LORA_TEXT))
    return _vision_explanation(model, training, b, inner, extra, "connector", tuple(lines), text)


def _explain_llama4v(model: ModelSpec, training: TrainingSpec, b: Breakdown) -> Explanation:
    """Llama 4 multimodal (memory/llama4v.py): the language model's explanation on text + image tokens, the
    processor's tiles, the tower on every tile and the projector's lines."""
    from vramcalc.core.memory import llama4v
    from vramcalc.core.memory.vision import images_per_sample
    from vramcalc.core.params import projector_params, vision_tower_params

    text_model, text_training = llama4v.text_run(model, training)
    inner = _frozen_lm_inner(training, explain(text_model, text_training))  # frozen_lm: the stand-in out
    v = model.vision
    assert v is not None and model.hidden_size is not None
    d = b.details
    src = "transformers models/llama4/modeling_llama4.py Llama4ForConditionalGeneration.forward; memory/llama4v.py"
    proc = "transformers models/llama4/image_processing_llama4.py get_best_fit"
    tiles, per_tile = llama4v.tiles_per_image(v, training), llama4v.tokens_per_tile(v)
    wrap, images = llama4v.wrap_tokens_per_image(v, training), images_per_sample(training)
    h, w = llama4v.image_hw(v, training)
    rows, cols = llama4v.layout(v, h, w)
    tower, projector = vision_tower_params(v), projector_params(v, model.hidden_size)
    from vramcalc.core.memory.frozen_lm import projector_trained

    # frozen_lm: the projector trained (the tower alone, tower_only: frozen)
    trained = training.method == "full" or projector_trained(training)
    tower_mods, _ = llama4v.lora_targets(model, training)  # peft's matching over the whole model
    adapters = llama4v.tower_adapter_params(model, training)
    # the tower's own weights beside the text's adapters (memory/llama4v.py lora_tower)
    lora_tower = training.train_vision and training.method in ("lora", "qlora")
    extra = {
        "weights": (
            Line("weights.vision_tower", "vision tower weights (" + ("trained" if training.train_vision else "frozen")
                 + "; the pixel-shuffle adapter included)",
                 f"{tower:,} params (Llama4VisionModel)", d["weights.vision_tower"],
                 source="transformers models/llama4/modeling_llama4.py Llama4VisionModel"),
            Line("weights.projector", "projector weights" + (" (trained)" if trained else " (frozen)"),
                 f"{projector:,} params", d["weights.projector"], source=src + " Llama4MultiModalProjector"),
            Line("weights.vision_rope_buffer", "the vision RoPE's freqs_ci buffer (complex64)",
                 f"{(v.image_size // v.patch_size) ** 2 + 1} rows", d["weights.vision_rope_buffer"],
                 source="transformers models/llama4/modeling_llama4.py Llama4VisionRotaryEmbedding"),
            *((Line("weights.image_adapters", "LoRA adapters on the tower (peft's target matching)",
                    f"{adapters:,} params x {dtype_bytes(training.adapter_dtype)} B ({training.adapter_dtype}): "
                    f"{', '.join(tower_mods)} in each of the {v.num_layers} encoder layers"
                    + (" and the pixel-shuffle adapter's MLP" if {"fc1", "fc2"} & set(tower_mods) else ""),
                    adapters * dtype_bytes(training.adapter_dtype),
                    source="peft tuners_utils.py check_target_module_exists; memory/llama4v.py lora_targets"),)
              if adapters else ()),
        ),
        **_image_side_states("image_side", "tower LoRA adapter gradients" if adapters else
                             "tower gradients (--train-vision)" if lora_tower else
                             "tower and projector gradients (--train-vision)" if training.train_vision and trained
                             else "tower gradients (--train-vision; the language model and projector frozen)"
                             if training.train_vision else
                             "projector gradients" + (" (the language model frozen)" if llama4v.frozen_lm(training)
                                                      else " (full fine-tuning trains it)"),
                             "tower LoRA adapter optimizer state" if adapters else
                             "tower optimizer state (--train-vision)" if lora_tower else
                             "tower and projector optimizer state" if training.train_vision and trained else
                             "tower optimizer state" if training.train_vision else
                             "projector optimizer state",
                             (projector if trained else 0) + adapters + (tower if training.train_vision else 0), b,
                             inner, src, *(("the tower weights' dtype (memory/llama4v.py grad_bytes, tower_states: "
                                            "under LoRA not the adapters')",) if lora_tower else ())),
        "activations": (Line("activations.image_side", "image side: pixel_values, the adapter's output and the "
                             "projected features kept to the forward's end, what they save for backward",
                             "masked_scatter's mask (full fine-tuning, checkpointing or tower adapters); with "
                             "checkpointing the tower's hooked patch output and kept layer inputs, the GELUs' inputs; "
                             "with tower adapters and no checkpointing its graph from the lowest adapter up and the "
                             "adapters' inputs; with --train-vision every encoder layer's saved set (checkpointed: its "
                             "input) and the trained Linears' inputs",
                             b.activations - inner.breakdown.activations, source=src),),
        "temporaries": (Line("temporaries.vision_tower", "vision tower forward",
                             "text embeddings, pixel_values, the kept hidden states and one layer's RoPE moment "
                             "(q, k, v, their fp32 copies and complex products)",
                             d["temporaries.vision_tower_forward"], source=src + " vision_apply_rotary_emb"),),
    }
    lines = [
        Line("vision.tiles", "tiles per image = rows x cols + the global tile (one tile when not split)",
             f"{h} x {w} px: {rows} x {cols}" + (" + 1" if tiles > 1 else ""), tiles, source=proc, kind="count"),
        Line("vision.image_tokens", "<|patch|> tokens per tile = (image_size // patch_size)^2 / scale^2",
             f"({v.image_size} // {v.patch_size})^2 / {v.scale_factor}^2", per_tile,
             source="transformers models/llama4/modeling_llama4.py pixel_shuffle", kind="count"),
        Line("vision.tokens", "tokens the language model runs on = text + images x (tiles x <|patch|> tokens + "
             "wrapping)", f"{training.seq_len:,} + {images} x ({tiles} x {per_tile} + {wrap})",
             llama4v.total_tokens(model, training),
             source="transformers models/llama4/processing_llama4.py _prompt_split_image", kind="count"),
    ]
    text = (f"the language model runs on {training.seq_len:,} text tokens and {images * (tiles * per_tile + wrap):,} "
            "image and image-marker tokens per sample (--seq-len counts the text only); the sections above are "
            "its own, on that many tokens",
            "the vision tower is frozen" + (" and the projector trained" if trained
                                            else f"; LoRA adapts its {', '.join(tower_mods)} too (peft matches the "
                                            "target names over the whole model)" if adapters
                                            else "; LoRA adapts the language model only"))
    return _vision_explanation(model, training, b, inner, extra, "projector", tuple(lines), text)


def _seq2seq(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> tuple[Section, Section, Section]:
    """An encoder-decoder's activations and temporaries from memory/seq2seq.py's named terms and moments."""
    p = seq2seq.build_plan(m, t, recipe_of(t))
    target = seq2seq.target_tokens(t)
    mult = seq2seq.multipliers(t.batch_size, t.seq_len, target)
    units = {"s": f"{_n(mult['s'])} source tokens", "t": f"{_n(mult['t'])} target tokens",
             "ss": f"{_n(mult['ss'])} source tokens × keys", "tt": f"{_n(mult['tt'])} target tokens × keys",
             "ts": f"{_n(mult['ts'])} target tokens × source keys", "S2": f"{_n(mult['S2'])} source positions²",
             "T2": f"{_n(mult['T2'])} target positions²", "TS": f"{_n(mult['TS'])} target × source positions",
             "b": f"batch {t.batch_size}", "1": "fixed"}

    def lines_of(prefix: str, terms: tuple[seq2seq.STerm, ...]) -> tuple[Line, ...]:
        return tuple(Line(f"{prefix}.{x.name}", x.name, f"{_n(x.coeff)} B × {units[x.kind]}", x.coeff * mult[x.kind],
                          "bytes per unit × units", "memory/seq2seq.py") for x in terms)

    d = b.details
    layer_sec = Section("activations_per_layer", "activations saved by one decoder block", d["activations.per_layer"],
                        lines_of("activations.layer", p.dec_layer),
                        (f"one encoder block saves {fmt_value(d['activations.encoder_per_layer'], 'bytes')} over "
                         f"{_n(mult['s'])} source tokens; one decoder block (self-attention, cross-attention over "
                         f"the encoder output, MLP) over {_n(mult['t'])} target tokens, itemized here",))
    moments = b.named_moments()
    top = max(moments, key=lambda mo: mo.component("activations"))
    act_lines = tuple(Line(f"activations.{x.name}", x.name, f"at {top.label}", x.bytes, "the core's moment",
                           "memory/seq2seq.py") for x in top.terms if x.component == "activations" and x.bytes)
    act_sec = Section("activations", "activations", b.activations, act_lines,
                      (f"{p.enc_layers} encoder blocks over {t.seq_len} source and {p.dec_layers} decoder blocks "
                       f"over {target} target tokens per sequence; the most alive at one moment ({top.label})",))
    names = {"temporaries.optimizer_step": "optimizer step", "temporaries.loss_forward": "logits while the loss runs",
             "temporaries.loss_backward": "log_softmax / nll_loss gradients",
             "temporaries.layer_forward": "a block's forward temporaries",
             "temporaries.layer_backward": "backward temporaries at the top block (or the shared gradient's sum)",
             "temporaries.backward_end": "the shared embedding's gradient summed out of place"}
    temp_lines = tuple(Line(k, label, "memory/seq2seq.py terms", d.get(k, 0), "the core's figure",
                            "memory/seq2seq.py") for k, label in names.items())
    temp_sec = Section("temporaries", "temporaries (the most alive at one moment)", b.temporaries, temp_lines,
                       ("the component is the most of these alive at one moment (see the phases below)",))
    return layer_sec, act_sec, temp_sec


# --- parameters -------------------------------------------------------------------------------------

def _parameters(m: ModelSpec, t: TrainingSpec, total: int, trainable: int) -> Section:
    src = "params.py inventory from the architecture (config.json), checked against published totals"
    lines = [Line("parameters.total", "parameters", "derived from the architecture" if m.has_architecture
                  else "the preset's count", total, "sum of every weight tensor's elements", src, "count")]
    text: tuple[str, ...] = ()
    if t.objective == "reward":  # memory/reward.py: the body under a 1-output score head
        text = ("reward model: the causal LM's body under a 1-output score head instead of lm_head (its hidden-size "
                "parameters are left out, < 0.01 %)",)
    if t.method in peft_methods.TABLE:
        lines += _peft_parameters(m, t)
        lines.append(Line("parameters.trainable", f"trainable ({METHOD_LABELS[t.method]} only; the base is frozen)",
                          " + ".join(_n(x.value) for x in lines[1:]) or "0", trainable,
                          f"sum of the {METHOD_LABELS[t.method]} tensors", peft_methods.TABLE[t.method].source,
                          "count"))
    elif t.method == "full":
        lines.append(Line("parameters.trainable", "trainable", "every parameter (full fine-tuning)",
                          trainable, "all parameters", SRC_SEED_GRADS, "count"))
    elif t.method == "freeze" and lisa.active(t):
        lines.append(Line("parameters.trainable", "trainable",
                          f"{t.lisa_layers} of {m.num_layers} decoder layers at a time (LISA's active layers, counted "
                          "at the top) + the embeddings, final norm and LM head", trainable,
                          "parameters of the active layers and the non-layer parameters", lisa.SOURCE, "count"))
    elif t.method == "freeze" and getattr(t, "badam", False):
        lines.append(Line("parameters.trainable", "trainable",
                          f"one of {m.num_layers} decoder layers at a time (BAdam's active block; embeddings, final "
                          "norm and LM head frozen)", trainable, "parameters of one decoder layer", badam.SOURCE,
                          "count"))
    elif unfrozen.active(t):  # --train-layers / --train-modules (core/unfrozen.py)
        layers, outer = unfrozen.trained_layers(m, t), unfrozen.outer_modules(m, t)
        lines.append(Line("parameters.trainable", "trainable",
                          f"layers {lora_layers.text(layers) if layers else 'none'} of {m.num_layers} trained, "
                          f"{'with ' + ', '.join(outer) if outer else 'nothing outside them'}", trainable,
                          "parameters of the named layers and modules", unfrozen.SOURCE, "count"))
    elif t.method == "freeze":
        frozen, n_layers = freeze_fraction(m, t)
        head = "with" if t.train_head else "without"
        lines.append(Line("parameters.trainable", "trainable",
                          f"layers {frozen}..{n_layers - 1} of {n_layers} trained, {head} the LM head and final norm",
                          trainable, "parameters of the unfrozen layers (+ head)", "memory/weights.py", "count"))
    else:
        # --lora-layers (peft layers_to_transform): the listed layers' modules only (params.layer_linears)
        where = f" in layers {lora_layers.text(t.lora_layers)} of {m.num_layers}" if lora_layers.active(t) else ""
        for lin in layer_linears(m, t.lora_targets, t.lora_layers) if m.has_architecture else ():
            n = t.lora_rank * lin.rank_mult * (lin.in_features + lin.out_features) * lin.count
            lines.append(Line(f"parameters.lora.{lin.module}", f"LoRA {lin.module}",
                              f"r {t.lora_rank * lin.rank_mult} × ({_n(lin.in_features)} in + "
                              f"{_n(lin.out_features)} out) × "
                              f"{_n(lin.count)} modules{where}", n, "r × (d_in + d_out) × modules",
                              f"{SRC_LORA}; {lora_layers.SOURCE}" if where else SRC_LORA, "count"))
        if t.dora and m.has_architecture:
            lines.append(Line("parameters.dora.magnitude", "DoRA magnitude vectors",
                              f"out_features per adapted Linear{where}", dora_params(m, t.lora_targets, t.lora_layers),
                              "Σ out_features × modules", SRC_DORA, "count"))
        copies = sum(x.numel for x in saved_copies(m, t)) if t.modules_to_save and m.has_architecture else 0
        if t.lora_trainable_tokens and m.has_architecture:
            lines.append(Line("parameters.trainable_tokens", "trainable token embeddings (trainable_token_indices)",
                              f"{_n(t.lora_trainable_tokens)} tokens × {_n(m.hidden_size)} hidden",
                              t.lora_trainable_tokens * (m.hidden_size or 0), "tokens × hidden", SRC_TOKENS, "count"))
        if copies:
            lines.append(Line("parameters.saved_copies", f"modules_to_save copies ({', '.join(t.modules_to_save)})",
                              "full copies of the modules", copies, "the modules' parameters", SRC_SAVED, "count"))
        lines.append(Line("parameters.trainable", "trainable (adapters only; the base is frozen)",
                          " + ".join(_n(x.value) for x in lines[1:]) or "0", trainable,
                          "sum of the adapters", SRC_LORA, "count"))
    return Section("parameters", "parameters", None, tuple(lines), text, kind="count")


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + " × ".join(_n(d) for d in shape) + ")"


# Names of the trainable tensors of the non-Linear methods, in core/peft_methods.py trainable_tensors' order.
_TENSOR_NAMES = {
    "ln-tuning": ("norm copies (weight, and LayerNorm's bias)",),
    "prompt-tuning": ("virtual token embeddings",),
    "adaption-prompt": ("adaption_prompt (1 × adapter_len × hidden) per adapted layer",
                        "adaption_gate per adapted layer"),
    "trainable-tokens": ("trainable_tokens_delta (the trained rows)",),
    "p-tuning": ("virtual token embeddings", "encoder Linear 1 weight", "encoder Linear 1 bias",
                 "encoder Linear 2 weight", "encoder Linear 2 bias", "encoder Linear 3 weight",
                 "encoder Linear 3 bias"),
    "prefix-tuning": ("prefix embedding (layers × 2 × token_dim per virtual token)",),
    "prefix-projection": ("prefix embedding (token_dim)", "projection Linear 1 weight", "projection Linear 1 bias",
                          "projection Linear 2 weight (to layers × 2 × token_dim)", "projection Linear 2 bias"),
}


def _peft_parameters(m: ModelSpec, t: TrainingSpec) -> list[Line]:
    """A core/peft_methods.py method's trainable tensors: its own rule objects' shapes, per module or tensor."""
    entry = peft_methods.method_of(t.method, t)
    assert entry is not None
    out: list[Line] = []
    if entry.linear is not None:  # the same LinearRule.shapes the estimate's trainable_tensors uses
        for lin, ff in peft_methods.adapted_linears(m, t):
            shapes = entry.linear.shapes(lin.in_features, lin.out_features, t.lora_rank, ff)
            n = sum(_numel(sh) for sh in shapes) * lin.count
            what = " + ".join(_shape(sh) for sh in shapes)
            kind = " (feedforward: scales the input)" if t.method == "ia3" and ff else ""
            out.append(Line(f"parameters.{t.method}.{lin.module}", f"{METHOD_LABELS[t.method]} {lin.module}{kind}",
                            f"{what} × {_n(lin.count)} modules (d_in {_n(lin.in_features)}, d_out "
                            f"{_n(lin.out_features)})", n,
                            _PEFT_FORMULAS.get(t.method, "the method's tensor shapes, × modules"), entry.source,
                            "count"))
        return out
    names = _TENSOR_NAMES.get("prefix-projection" if t.method == "prefix-tuning" and t.prefix_projection
                              else t.method, ())
    for i, (shape, count) in enumerate(peft_methods.trainable_tensors(m, t)):
        name = names[i] if i < len(names) else f"tensor {i}"
        out.append(Line(f"parameters.{t.method}.{i}", name,
                        _shape(shape) + (f" × {_n(count)}" if count > 1 else ""), _numel(shape) * count,
                        "elements × count", entry.source, "count"))
    return out


# --- weights -----------------------------------------------------------------------------------------

def _norm_weight_lines(m: ModelSpec, t: TrainingSpec, recipe: Recipe, wb: int) -> list[Line]:
    """--upcast-norms (memory/upcast_norms.py): the norm parameters' fp32 storage beyond the count's wb bytes."""
    norms = sum(x.numel for x in _upcast_norms.norm_tensors(m, t, recipe))
    return [Line("weights.fp32_norms", "norms cast to fp32 (the rest of their 4 bytes)",
                 f"{_n(norms)} params × {4 - wb} B", norms * (4 - wb),
                 "norm parameters × (4 − bytes per stored weight)", _upcast_norms.SRC)] if norms else []


def _weights(m: ModelSpec, t: TrainingSpec, b: Breakdown, w: WeightBytes) -> Section:
    recipe = recipe_of(t)
    wb = dtype_bytes(recipe.weight)
    p = w.parameters
    lines: list[Line] = []
    text: list[str] = []
    if t.method in ("full", "freeze", "lora") or t.method in peft_methods.TABLE or not m.has_architecture:
        lines.append(Line("weights.base", f"weights ({recipe.weight})" if t.method in ("full", "freeze")
                          else f"frozen base weights ({recipe.weight})",
                          f"{_n(p)} params × {wb} B ({recipe.weight})", p * wb,
                          "parameters × bytes per stored weight", SRC_SEED_WEIGHTS))
        routers = sum(x.numel for x in fp32_router_tensors(m, recipe))
        if routers:  # memory/weights.py weight_bytes: the routers the library keeps fp32 under a 16-bit load
            lines.append(Line("weights.fp32_routers", "routers kept in fp32 (the rest of their 4 bytes)",
                              f"{_n(routers)} params × {4 - wb} B", routers * (4 - wb),
                              "router parameters × (4 − bytes per stored weight)",
                              _router_src(m)))
        lines += _norm_weight_lines(m, t, recipe, wb)
        if _upcast_norms.fp32_trained(t, recipe) and w.fp32_trainable:  # memory/weights.py weight_bytes
            lines.append(Line("weights.fp32_trained", "trained parameters cast to fp32 (the rest of their 4 bytes)",
                              f"{_n(w.fp32_trainable)} params × {4 - wb} B", w.fp32_trainable * (4 - wb),
                              "trainable parameters × (4 − bytes per stored weight)", _upcast_norms.SRC_FREEZE))
    else:
        # The values are the core's (WeightBytes); the block, tensor and row counts only describe them.
        quantized, data, constants = w.quantized_params, w.quantized_data, w.quant_constants
        blocks = dq_blocks = tensors = rows = 0
        for lin in quantized_linears(m):
            tensors += lin.count
            rows += lin.out_features * lin.count
            blocks += ceil_div(lin.in_features * lin.out_features, NF4_BLOCK) * lin.count
            dq_blocks += ceil_div(ceil_div(lin.in_features * lin.out_features, NF4_BLOCK), DQ_BLOCK) * lin.count
        rest = p - quantized
        if t.quant_backend == "hqq":
            groups = sum(lin.in_features * lin.out_features // t.hqq_group_size * lin.count
                         for lin in quantized_linears(m))
            lines.append(Line("weights.quantized", f"hqq {t.quant_bits}-bit block Linears",
                              f"{_n(quantized)} params packed by hqq's BitPack", data,
                              "Σ packed W_q per Linear (memory/hqq.py)", SRC_HQQ))
            lines.append(Line("weights.quant_constants", "quantization constants",
                              f"{_n(groups)} groups × 2 × {dtype_bytes(recipe.compute)} B (scale, zero)", constants,
                              f"one scale and one zero per {t.hqq_group_size} weights", SRC_HQQ))
        elif t.quant_bits == 4:
            lines.append(Line("weights.quantized", "4-bit block Linears",
                              f"{_n(quantized)} params × 0.5 B (NF4, two per byte)", data,
                              "quantized parameters ÷ 2", SRC_QLORA))
            if t.double_quant:
                c_inputs = (f"{_n(blocks)} blocks × 1 B (uint8 absmax) + {_n(dq_blocks)} × 4 B (fp32 absmax "
                            f"of {DQ_BLOCK} blocks) + {_n(tensors)} tensors × 4 B (offset)")
            else:
                c_inputs = f"{_n(blocks)} blocks of {NF4_BLOCK} × 4 B (fp32 absmax)"
            lines.append(Line("weights.quant_constants", "quantization constants", c_inputs, constants,
                              f"one absmax per {NF4_BLOCK} weights" + (", double-quantized" if t.double_quant
                                                                        else ""), SRC_QLORA))
        else:
            lines.append(Line("weights.quantized", "8-bit block Linears", f"{_n(quantized)} params × 1 B (int8)",
                              data, "quantized parameters × 1 B", SRC_INT8))
            lines.append(Line("weights.quant_constants", "quantization constants",
                              f"{_n(rows)} rows × 4 B (fp32 scale)", constants, "one scale per output row",
                              SRC_INT8))
        ub = unquantized_bytes(t, recipe)
        ud = "fp32, prepare_model_for_kbit_training" if ub != wb else recipe.weight
        norms = _norm_weight_lines(m, t, recipe, ub)
        lines.append(Line("weights.unquantized", "embeddings, norms, lm_head (not quantized)",
                          f"{_n(rest)} params × {ub} B ({ud})", w.unquantized - sum(x.value for x in norms),
                          "parameters × bytes per stored weight",
                          SRC_HQQ if t.quant_backend == "hqq" else SRC_QLORA + (
                              "; peft utils/other.py prepare_model_for_kbit_training: fp16/bf16 "
                              "parameters cast to fp32" if ub != wb else "")))
        lines += norms
        text.append(f"the 4-/8-bit base is {(w.base + w.quant_constants) / (p * wb):.0%} of the same "
                    f"model in {recipe.weight}" if p * wb else "")
    if m.final_logits_bias and m.vocab_size and m.decoder_layers:  # BART's (1, vocab) buffer (memory/weights.py)
        lines.append(Line("weights.final_logits_bias", "final_logits_bias buffer",
                          f"{_n(m.vocab_size)} × {wb} B ({recipe.weight})", m.vocab_size * wb,
                          "vocab × bytes per stored weight", "transformers modeling_bart.py "
                          "BartForConditionalGeneration"))
    if t.method in ("lora", "qlora"):
        a = dtype_bytes(t.adapter_dtype)
        head = sum(_numel(shape) * count for shape, count in encoder.saved_head_tensors(m, t))
        tokens = t.lora_trainable_tokens * (m.hidden_size or 0) if m.has_architecture else 0
        own = w.trainable - w.copies - head - tokens
        lines.append(Line("weights.adapters", "LoRA adapters" + (" (+ DoRA magnitudes)" if t.dora else ""),
                          f"{_n(own)} params × {a} B ({t.adapter_dtype})",
                          own * a, "adapter parameters × bytes per adapter weight", SRC_LORA))
        if head:  # memory/encoder.py saved_head_tensors: peft SEQ_CLS modules_to_save
            lines.append(Line("weights.classifier_copy", "trained copy of the classifier head",
                              f"{_n(head)} params × {wb} B ({recipe.weight})", head * wb,
                              "head parameters × bytes per weight", "peft peft_model.py modules_to_save"))
        if tokens:  # memory/weights.py: trainable_tokens_delta and trainable_tokens_original, adapter dtype
            lines.append(Line("weights.trainable_tokens", "trainable_tokens_delta (the trained rows)",
                              f"{_n(tokens)} params × {a} B ({t.adapter_dtype})", tokens * a,
                              "tokens × hidden × bytes per adapter weight", SRC_TOKENS))
            lines.append(Line("weights.adapter_buffers", "trainable_tokens_original: a copy of the trained rows",
                              f"{_n(tokens)} params × {a} B ({t.adapter_dtype})", w.adapter_buffers,
                              "buffers the method registers (no gradient)", SRC_TOKENS))
        if w.copies:
            lines.append(Line("weights.saved_copies", "modules_to_save copies",
                              f"{_n(w.copies)} params × {w.copy_elem_bytes} B (the module's dtype)",
                              w.copies * w.copy_elem_bytes, "copied parameters × bytes per weight", SRC_SAVED))
    elif t.method in peft_methods.TABLE:
        lines += _peft_weights(m, t, w)
    if pref.is_preference(t) or rl.is_rl(t) or t.objective == "online-dpo":
        lines.append(_reference_weights(t, b, w))
    if t.reward_spec is not None:  # memory/reward_scoring.py: the reward model in reward_funcs
        dtype = reward_scoring.weight_dtype(t, recipe_of(t))
        lines.append(Line("weights.reward_model", f"reward model {t.reward_model}: a frozen sequence classifier "
                          f"({dtype})", f"{_n(reward_scoring.parameters(t.reward_spec))} params × "
                          f"{dtype_bytes(dtype)} B ({dtype}; --reward-dtype)", b.details["weights.reward_model"],
                          "(body without LM head + score's hidden × 1) × bytes per weight", SRC_REWARD_MODEL))
    lines, text = _per_gpu(b, "weights", lines, text, {
        "weights.partition": "this GPU's partition", "weights.gathered_unit": "one gathered unit"})
    return Section("weights", "weights", b.weights, tuple(lines), tuple(x for x in text if x))


def _per_gpu(b: Breakdown, component: str, lines: list[Line], text: list[str], parts: dict[str, str]
             ) -> tuple[list[Line], list[str]]:
    """Multi-GPU: the replica's lines become prose and one line shows the core's per-GPU figure
    (memory/distributed.py: tensor/pipeline split, ZeRO/FSDP partitions, offload), described by its details."""
    value = b.component(component)
    if not b.parallelism or sum(x.value for x in lines) == value:
        return lines, text
    replica = sum(x.value for x in lines)
    said = [f"{what} {fmt_value(b.details[k], 'bytes')}" for k, what in parts.items() if b.details.get(k)]
    layout = b.parallelism
    line = Line(f"{component}.per_gpu", f"{component.replace('_', ' ')} on this GPU", "; ".join(said) or
                f"the replica's {fmt_value(replica, 'bytes')} split over tp {layout.get('tp', 1)} × pp "
                f"{layout.get('pp', 1)}, sharded over {layout.get('shard_degree', 1)} (stage "
                f"{layout.get('zero_stage', 0)})", value,
                "per-GPU share (tensor/pipeline split, ZeRO/FSDP partition, offload)", SRC_DISTRIBUTED)
    whole = " + ".join(f"{x.label} {fmt_value(x.value, 'bytes')}" for x in lines if x.value)
    return [line], [*text, f"the whole replica: {fmt_value(replica, 'bytes')} ({whole})"]


def _peft_weights(m: ModelSpec, t: TrainingSpec, w: WeightBytes) -> list[Line]:
    """A core/peft_methods.py method's tensors (WeightBytes.adapters, split into trained and buffers)."""
    entry = peft_methods.TABLE[t.method]
    label = METHOD_LABELS[t.method]
    dtype = recipe_of(t).weight if t.method not in ADAPTER_DTYPE_METHODS else t.adapter_dtype
    a = dtype_bytes(dtype)
    why = ("LN tuning's norm copies and adaption prompt's prompts are in the model's dtype"
           if t.method not in ADAPTER_DTYPE_METHODS
           else "peft get_peft_model autocast_adapter_dtype: 16-bit adapter weights kept in fp32 by default")
    out = [Line("weights.adapters", f"{label} trainable tensors ({dtype})", f"{_n(w.trainable)} params × {a} B "
                f"({dtype})", w.adapters - w.adapter_buffers, "trainable parameters × bytes per adapter weight",
                f"{entry.source}; {why}")]
    if w.adapter_buffers:
        if t.method == "vera":
            what, inputs, src = ("vera_A, vera_B: shared frozen projections (fp32)",
                                 f"{_n(peft_methods.vera_projection_elements(m, t))} elements (r {t.lora_rank} × "
                                 "(largest d_in + largest d_out)) × 4 B", "peft tuners/vera/model.py "
                                 "_init_vera_A_vera_B")
        elif t.method == "trainable-tokens":
            what, inputs, src = ("trainable_tokens_original: a copy of the trained rows",
                                 f"{_n(w.trainable)} params × {a} B ({dtype})", entry.source)
        elif t.method == "boft":
            what, inputs, src = ("boft_P: a permutation matrix per module (fp32)", "d_in × d_in × 4 B per module",
                                 entry.source + " BOFTLayer.update_layer register_buffer")
        elif t.method == "shira":
            what, inputs, src = ("shira_indices: the trained positions (int32)",
                                 f"2 × r × (d_in + d_out) × 4 B per module (r {t.shira_rank})",
                                 entry.source + " ShiraLayer.update_layer")
        else:
            what, inputs, src = ("OFT rows / cols index buffers (int64)", "torch.triu_indices per module, 8 B each",
                                 entry.source)
        out.append(Line("weights.adapter_buffers", what, inputs, w.adapter_buffers,
                        "buffers the method registers (no gradient)", src))
    return out


def _reference_weights(t: TrainingSpec, b: Breakdown, w: WeightBytes) -> Line:
    """The preference reference (memory/preference.py): a frozen copy, or nothing (adapters off, precomputed)."""
    ref = pref.resolve_ref(t)
    value = b.details.get("weights.reference", 0)
    # OnlineDPOTrainer: create_reference_model (a deep copy) or disable_adapter with peft
    src = SRC_ONLINE if t.objective == "online-dpo" else SRC_PREFERENCE
    if ref == "copy":
        dtype = pref.ref_weight_dtype(t, recipe_of(t))
        if t.ref_quant != "none":
            packed = {"4bit": ("4-bit", "packed 4-bit + fp32 absmax per 64", "no double quantization"),
                      "4bit-dq": ("4-bit double-quantized", "packed 4-bit + uint8 absmax per 64 + fp32 per 256 "
                                  "blocks", "double quantization"),
                      "8bit": ("LLM.int8", "int8 + an fp32 scale per output row", "8 bits")}[t.ref_quant]
            return Line("weights.reference", f"reference model: a frozen copy (bitsandbytes {packed[0]}, rest {dtype})",
                        f"{_n(w.parameters)} params: the blocks' Linears {packed[1]}, the rest "
                        f"× {dtype_bytes(dtype)} B ({dtype})", value,
                        f"memory/weights.py quantized_storage ({packed[2]}) + the rest × bytes per weight "
                        f"(--ref-quant {t.ref_quant}, --ref-dtype)", src)
        return Line("weights.reference", f"reference model: a frozen copy ({dtype})",
                    f"{_n(w.parameters)} params × {dtype_bytes(dtype)} B ({dtype})", value,
                    "parameters × bytes per reference weight (--ref-dtype; auto: the policy's load dtype)", src)
    what = {"adapters-off": "the policy with its adapters disabled (peft disable_adapter): no extra weights",
            "precomputed": "log-probs precomputed before training (precompute_ref_log_probs): no reference "
                           "in the step"}.get(ref, f"{t.objective} trains without a reference model")
    return Line("weights.reference", f"reference model ({ref or 'none'})", what, value, source=src)


# --- gradients ---------------------------------------------------------------------------------------

def _gradients(t: TrainingSpec, b: Breakdown, w: WeightBytes, grad_dtype: str) -> Section:
    adapters = t.method in ADAPTER_DTYPE_METHODS  # gradients in --adapter-dtype (memory/__init__.py _build_plan)
    dtype = t.adapter_dtype if adapters else grad_dtype
    g = dtype_bytes(dtype)
    what = "adapter params" if adapters else "trainable params"
    text: tuple[str, ...] = (("the frozen base has requires_grad=False: no gradients for it",)
                             if t.method in FROZEN_BASE_METHODS else ())
    if t.fsdp_frozen_grads:
        text = ("FSDP1 flat units: the frozen weights share a flat parameter with the adapters, which requires "
                "grad, so they get gradients too (--fsdp-frozen-grads)",)
    if t.optimizer_in_bwd:  # memory/savers.py: one tensor's gradient at a time
        largest = largest_tensor(w.trainable_tensors)
        line = Line("gradients.trainable", "gradients (one tensor at a time)",
                    f"largest trainable tensor {_n(largest)} params × {g} B ({dtype})", b.gradients,
                    "the largest trainable tensor × bytes per gradient", SRC_OPT_IN_BWD)
        text += ("optimizer in backward: each gradient is stepped and freed as it lands",)
    else:
        own = w.trainable - w.copies
        line = Line("gradients.trainable", "gradients", f"{_n(own)} {what} × {g} B ({dtype})",
                    own * g, "trainable parameters × bytes per gradient", SRC_SEED_GRADS)
        if w.fp32_trainable and not adapters and not b.parallelism:
            # memory/__init__.py: autograd gives DeepSeek's fp32 routers, and --upcast-norms' fp32 norms (no family has
            # both: memory/upcast_norms.py FAMILIES), fp32 gradients
            # (and --precision autocast-* freeze's fp32 trained parameters: memory/weights.py)
            norms = t.upcast_norms
            kind, who, what = (("trained", "trained parameters'", "trainable")
                               if _upcast_norms.fp32_trained(t, recipe_of(t)) else
                               ("norms", "norms'", "norm") if norms else ("routers", "routers'", "router"))
            return Section("gradients", "gradients", b.gradients, (line, Line(
                f"gradients.fp32_{kind}", f"the fp32 {who} gradients (the rest of their 4 bytes)",
                f"{_n(w.fp32_trainable)} params × {4 - g} B", w.fp32_trainable * (4 - g),
                f"{what} parameters × (4 − bytes per gradient)",
                _upcast_norms.SRC_FREEZE if kind == "trained" else _upcast_norms.SRC if norms else
                "transformers modeling_deepseek_v3.py / _v2.py _keep_in_fp32_modules_strict")), text)
        if w.copies and not b.parallelism:
            return Section("gradients", "gradients", b.gradients, (line, Line(
                "gradients.saved_copies", "gradients of the modules_to_save copies",
                f"{_n(w.copies)} params × {w.copy_elem_bytes} B (the module's dtype)", w.copies * w.copy_elem_bytes,
                "copied parameters × bytes per gradient", SRC_SAVED)), text)
    if b.parallelism and b.gradients != line.value:
        # Multi-GPU: the per-GPU figure is the core's (memory/distributed.py), described by its details.
        parts = {"gradients.unsharded_unit": "an unsharded unit's gradients awaiting reduce-scatter",
                 "gradients.frozen_in_units": "frozen weights' gradients in FSDP flat units",
                 "gradients.unsharded_deferred": "every unit's unsharded gradients kept until the last micro-batch"}
        said = [f"{what} {fmt_value(b.details[k], 'bytes')}" for k, what in parts.items() if b.details.get(k)]
        line = Line("gradients.trainable", "gradients on this GPU", "; ".join(said) or
                    f"the replica's {fmt_value(line.value, 'bytes')} sharded over the data-parallel group",
                    b.gradients, "per-GPU share (ZeRO-2/3, FSDP) or the whole set (DDP)", SRC_DISTRIBUTED)
    return Section("gradients", "gradients", b.gradients, (line,), text)


# --- optimizer state ---------------------------------------------------------------------------------

def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _optimized(m: ModelSpec, t: TrainingSpec, recipe: Recipe, w: WeightBytes
               ) -> tuple[tuple[tuple[tuple[int, ...], int], ...], int]:
    """The tensors the optimizer holds states for: the trainable ones, or under LISA every parameter (the worst step,
    every layer drawn once: memory/lisa.py)."""
    if not lisa.active(t):
        return w.trainable_tensors, w.trainable
    from dataclasses import replace

    every = weight_bytes(m, replace(t, method="full"), recipe)
    return every.trainable_tensors, every.trainable


def _optimizer(t: TrainingSpec, b: Breakdown, tensors: tuple[tuple[tuple[int, ...], int], ...],
               trainable: int, model: ModelSpec, w: WeightBytes | None = None) -> Section:
    recipe = recipe_of(t)
    copy_lines: list[Line] = []
    if w is not None and w.copies:  # modules_to_save copies: a full fine-tuning's states (memory/__init__.py)
        from dataclasses import replace

        copy_opt = optimizer_bytes(w.copy_tensors, recipe, replace(t, method="full"), model)
        copy_lines.append(Line("optimizer_state.saved_copies", "states of the modules_to_save copies",
                               f"{_n(w.copies)} params, {t.optimizer} as in full fine-tuning",
                               copy_opt.moments + copy_opt.master_weights, "memory/optimizer.py optimizer_bytes",
                               SRC_SAVED))
        tensors = tuple(x for x in tensors if x not in w.copy_tensors)
        trainable -= w.copies
    opt = optimizer_bytes(tensors, recipe, t, model)
    sd = state_dtype(recipe, t)
    s = dtype_bytes(sd)
    name = t.optimizer
    lines: list[Line] = []
    if name in ("adamw", "paged-adamw"):
        lines.append(Line("optimizer_state.moments", "AdamW moments (m, v)",
                          f"2 moments × {_n(trainable)} params × {s} B ({sd})", opt.moments,
                          "2 × trainable parameters × bytes per state", SRC_ADAMW))
    elif name in ("adamw-8bit", "paged-adamw-8bit"):
        big = sum(_numel(sh) * c for sh, c in tensors if _numel(sh) >= BNB_MIN_8BIT_SIZE)
        blocks = sum(ceil_div(_numel(sh), BNB_BLOCK) * c for sh, c in tensors if _numel(sh) >= BNB_MIN_8BIT_SIZE)
        small = trainable - big
        inputs = f"2 moments × {_n(big)} params × 1 B (uint8) + 2 × {_n(blocks)} blocks × 4 B (fp32 absmax)"
        if small:
            inputs += f" + 2 × {_n(small)} params × 4 B (small tensors stay 32-bit)"
        lines.append(Line("optimizer_state.moments", "8-bit AdamW moments", inputs,
                          opt.moments, "2 × (1 B per param + 4 B per 256-block)", SRC_BNB8))
    elif name.startswith("torchao-"):
        bits, block, qmap = TORCHAO_STATES[name]
        lines.append(Line("optimizer_state.moments", f"torchao low-bit AdamW moments ({name})",
                          f"2 states × ({bits}-bit codes + fp32 scale per {block} + {qmap} fp32 map entries); "
                          "tensors under 4096 elements or not a multiple of the block: parameter dtype",
                          opt.moments, "memory/optimizer.py torchao_state_bytes",
                          "torchao/optim/adam.py _new_buffer; subclass_8bit.py / subclass_4bit.py / subclass_fp8.py"))
    elif name == "sgd":
        lines.append(Line("optimizer_state.moments", "SGD state", "plain SGD keeps no state", 0, "0",
                          "torch/optim/sgd.py (momentum=0)"))
    elif name in ("sgd-momentum", "lion"):
        what = "momentum buffer" if name == "sgd-momentum" else "Lion exp_avg"
        lines.append(Line("optimizer_state.moments", what, f"1 buffer × {_n(trainable)} params × {s} B ({sd})",
                          opt.moments, "trainable parameters × bytes per state",
                          "torch/optim/sgd.py momentum_buffer; Lion: Chen et al. 2023 (arXiv:2302.06675)"))
    elif name == "adafactor":
        factors = sum((_numel(sh[:-1]) + _numel(sh[:-2] + sh[-1:])) * c for sh, c in tensors if len(sh) >= 2)
        vectors = sum(_numel(sh) * c for sh, c in tensors if len(sh) < 2)
        lines.append(Line("optimizer_state.moments", "Adafactor factored second moment",
                          f"{_n(factors)} row + column factors × 4 B + {_n(vectors)} vector elements × 4 B (fp32)",
                          opt.moments, "a row and a column vector per matrix, fp32",
                          "Shazeer & Stern 2018; transformers Adafactor (beta1=None)"))
    elif name == "adafactor-momentum":
        lines.append(Line("optimizer_state.moments", "Adafactor factored second moment + fp32 first moment",
                          f"row + column factors (vectors for 1-D tensors) + {_n(trainable)} params × 4 B (fp32)",
                          opt.moments, "factored v + a full fp32 m",
                          "transformers optimization.py Adafactor (beta1 set: exp_avg = zeros_like(grad.float()))"))
    elif name in LIBRARY_OPTIMIZERS:
        # The core's figure (memory/optimizer.py, which needs the architecture), described here.
        moments = b.details.get("optimizer_state.moments", 0)
        sd = library_state_dtype(recipe)
        if name == "adam-mini":
            inputs = (f"first moment: {_n(trainable)} params × {dtype_bytes(sd)} B ({sd}); second moment: one value "
                      "per head (q, k), per row (embeddings, head, v, o, MLP), per norm")
            src = "adam_mini 1.1.1 adam_mini.py Adam_mini.step"
        elif name == "muon":
            inputs = (f"1 momentum buffer per 2-D matrix not named embed/lm_head + 2 AdamW moments per other tensor, "
                      f"zeros_like(grad): {dtype_bytes(recipe.grad)} B ({recipe.grad})")
            src = MUON_SOURCE
        else:
            inputs = (f"rank {projection_rank(t)}: 2 moments of each projected gradient (r × the larger dim) + P "
                      f"(r × the smaller dim), {sd}; full Adam moments for the other tensors")
            if name == "galore-adamw-8bit":
                inputs = (f"rank {projection_rank(t)}: 2 bitsandbytes 8-bit moments (1 B + 4 B per 256; fp32 under "
                          f"4,096 elements) of each projected gradient (r × the larger dim) + P (r × the smaller "
                          f"dim, {sd}); 8-bit moments for the other tensors")
            src = {"galore-adamw": "galore_torch 1.0 adamw.py + galore_projector.py",
                   "galore-adamw-8bit": "galore_torch 1.0 adamw8bit.py + galore_projector.py; bitsandbytes "
                                        "optim/optimizer.py Optimizer2State.init_state"}.get(
                       name, "apollo_torch 1.0.3 apollo.py + random_projector.py")
        lines.append(Line("optimizer_state.moments", LIBRARY_NAMES[name], inputs, moments,
                          "memory/optimizer.py", src))
    if opt.master_weights:
        lines.append(Line("optimizer_state.master_weights", "fp32 master weights",
                          f"{_n(trainable)} params × 4 B (fp32)", opt.master_weights,
                          "trainable parameters × 4 B", SRC_MASTER))
    if b.details.get("optimizer_state.fp32_norms"):  # memory/__init__.py: pure-* states of --upcast-norms' norms
        lines.append(Line("optimizer_state.fp32_norms", "the fp32 norms' states (beyond the 16-bit count)",
                          f"{t.optimizer} states of {_n(w.fp32_trainable if w else 0)} fp32 params",
                          b.details["optimizer_state.fp32_norms"], "torch.optim zeros_like(param): fp32",
                          _upcast_norms.SRC))
    if b.details.get("optimizer_state.fp32_routers"):  # memory/__init__.py: pure-* states of the fp32 routers
        lines.append(Line("optimizer_state.fp32_routers", "the fp32 routers' states (beyond the 16-bit count)",
                          f"{t.optimizer} states of {_n(w.fp32_trainable if w else 0)} fp32 params",
                          b.details["optimizer_state.fp32_routers"], "torch.optim zeros_like(param): fp32",
                          "transformers modeling_deepseek_v3.py / _v2.py _keep_in_fp32_modules_strict"))
    lines += copy_lines
    trainable += sum(_numel(sh) * c for sh, c in (w.copy_tensors if w is not None else ()))
    text: tuple[str, ...] = ()
    if trainable and b.optimizer_state:
        text = (f"{b.optimizer_state / trainable:.2f} B of optimizer state per trainable parameter",)
    if b.parallelism:  # the per-GPU states (memory/distributed.py): its details replace the replica's figures
        got = {x.key: b.details.get(x.key, x.value) for x in lines}
        if sum(got.values()) == b.optimizer_state:
            lines = [x if got[x.key] == x.value else
                     Line(x.key, x.label + " (this GPU's share)",
                          f"{x.inputs}, sharded: {fmt_value(got[x.key], 'bytes')} of {fmt_value(x.value, 'bytes')}",
                          got[x.key], x.formula, f"{x.source}; {SRC_DISTRIBUTED}")
                     for x in lines]
        shown, prose = _per_gpu(b, "optimizer_state", lines, list(text), {})
        lines, text = shown, tuple(prose)
    return Section("optimizer_state", "optimizer state", b.optimizer_state, tuple(lines), text)


# --- activations, temporaries and phase moments ------------------------------------------------------

def _transformer(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> tuple[Section, Section, Section]:
    assert m.num_layers is not None and m.hidden_size is not None and m.vocab_size is not None
    recipe = recipe_of(t)
    c = dtype_bytes(recipe.compute)
    # Prompt and p-tuning: the virtual tokens go through every layer and the loss (peft_methods.extra_sequence).
    # The shape attention sees (memory/__init__.py _transformer_phases): rows of `seq` positions (padding-free:
    # one row of the whole micro-batch), lengthened by the virtual tokens.
    extra = peft_methods.extra_sequence(t)
    rows, seq = batch_rows(t)
    tokens = t.batch_size * t.seq_len
    if b.parallelism:  # tensor/sequence parallel: the tokens' worth one GPU stores (memory/distributed.py)
        tokens = activation_tokens(tokens, t)
    if extra:
        tokens = tokens * (seq + extra) // seq
        seq += extra
    n_layers = m.num_layers
    loss = _loss_of(t, b.details)
    if loss == "chunked" and compiled.active(m, t):  # torchtune's compiled compute_cross_entropy (memory/compiled.py)
        loss = "chunked-compiled"
    full_like = t.method in ("full", "freeze")
    if unfrozen.active(t):  # core/unfrozen.py, as memory/__init__.py _activation_plan counts the layers
        trained, outer = unfrozen.trained_layers(m, t), unfrozen.outer_modules(m, t)
        head_trainable = "lm_head" in outer
        saving = n_layers if t.grad_checkpointing or "embed_tokens" in outer else \
            n_layers - min(trained) if trained else 0
    elif t.method == "freeze":
        frozen, _ = freeze_fraction(m, t)
        head_trainable = t.train_head
        saving = n_layers - frozen
    else:
        head_trainable = t.method == "full" or saved_head(m, t)
        saving = n_layers
        if lora_layers.active(t) and not t.grad_checkpointing:  # below the lowest adapted layer: no graph
            saving = n_layers - lora_layers.lowest(t)
    mamba = ssm.is_ssm(m)  # Mamba's mixer and fp32 residual stream (memory/ssm.py)
    residual = 4 if mamba and m.ssm_residual_fp32 else residual_bytes(recipe)
    layer = (ssm.layer_activations if mamba else hybrid.layer_activations if hybrid.is_hybrid(m)
             else compiled.layer_activations if compiled.active(m, t)
             else jamba.layer_activations if jamba.is_jamba(m)
             else zamba2.layer_activations if zamba2.is_zamba2(m)
             else nemotron_h.layer_activations if nemotron_h.is_nemotron_h(m)
             else unsloth.layer_activations if unsloth.active(m, t)
             else liger.layer_activations if liger.active(m, t)
             else axolotl_kernels.layer_activations if axolotl_kernels.active(m, t)
             else layer_activations)(m, t, recipe, trainable_weights=full_like)
    tok = f"{_n(tokens)} tokens" + ("' worth on this GPU" if t.tp > 1 else "")
    d = b.details  # the core's own figures (memory/__init__.py details): this page cannot drift from them

    # One layer's saved tensors, term by term.
    layer_lines = []
    method_src = peft_methods.TABLE[t.method].source if t.method in peft_methods.TABLE else ""
    terms = [x for x in layer.terms if not (x.batch1_only and t.batch_size > 1)]  # batch1_only: batch 1 only
    for term in terms:
        parts = [f"{_n(term.per_token)} B/token × {tok}"] if term.per_token else []
        if term.per_token_seq:
            parts.append(f"{_n(term.per_token_seq)} B × {tok} × {_n(seq)} keys")
        if term.per_sample:  # prefix tuning's virtual keys and values, per sequence
            parts.append(f"{_n(term.per_sample)} B/sequence × batch {t.batch_size}")
        if term.const:  # a materialized delta weight, whatever the batch
            parts.append(f"{_n(term.const)} B whatever the batch")
        if term.per_seq_sq:  # DeBERTa's int64 gather indices, per row length squared
            parts.append(f"{_n(term.per_seq_sq)} B × {_n(seq)} × {_n(seq)}")
        value = (term.per_token * tokens + term.per_token_seq * tokens * seq + term.per_sample * t.batch_size
                 + term.const + term.per_seq_sq * seq * seq)
        peft_term = bool(method_src) and (term.name.startswith((t.method, "prefix")) or term.per_sample > 0)
        layer_lines.append(Line(f"activations.layer.{term.name}", term.name, " + ".join(parts), value,
                                formula="bytes per token × tokens" if not (term.per_sample or term.const
                                                                           or term.per_seq_sq)
                                else "per token × tokens + per sequence × batch + fixed",
                                source=f"{method_src}; memory/activations.py" if peft_term
                                else f"{compiled.SOURCE}; memory/compiled.py" if compiled.active(m, t)
                                and term.name.startswith("compiled")
                                else f"{unsloth.SOURCE}; memory/unsloth.py" if unsloth.active(m, t)
                                and unsloth.own_term(t, term.name)
                                else f"{axolotl_kernels.SOURCE}; memory/axolotl_kernels.py"
                                if axolotl_kernels.active(m, t) and axolotl_kernels.own_term(term.name)
                                else f"{liger.SOURCE}; memory/liger.py" if liger.active(m, t)
                                and ("Liger" in term.name or term.name.startswith("mlp gate and up")) else SRC_ACTS))
    per_layer = d["activations.per_layer"]
    per_token_total = sum(x.per_token for x in terms)
    layer_text = [f"{_n(per_token_total)} B per token per layer"
                  + (" (+ attention scores per key position)" if any(x.per_token_seq for x in terms) else "")
                  + f"; batch {t.batch_size} × seq {seq} = {tok}"]
    if extra:
        layer_text.append(f"{t.method}: {t.virtual_tokens} virtual tokens in front of every sequence: seq "
                          f"{t.seq_len} + {extra} through every layer and the loss (peft_model.py "
                          "PeftModelForCausalLM.forward)")
    if t.method == "prefix-tuning":
        layer_text.append(f"prefix tuning: every layer's attention reads {t.virtual_tokens} virtual keys and values "
                          "(past_key_values from get_prompt) before the sequence's own")
    if t.objective != "sft":
        layer_text.append(_rows_text(t))
    if not full_like:
        layer_text.append("frozen Linear weights need no gradient, so their inputs are not saved "
                          "(only the adapters' inputs are)")
    if lora_layers.active(t):
        layer_text.append(f"one adapted layer's set; LoRA on layers {lora_layers.text(t.lora_layers)} of {n_layers} "
                          "(peft layers_to_transform): " + (
                              "every layer keeps its input (enable_input_require_grads), and the rerun in backward is "
                              "an unadapted layer's set where the layer is not adapted" if t.grad_checkpointing else
                              f"the {lora_layers.lowest(t)} layers below the lowest adapted one record no graph; an "
                              "unadapted layer above it saves a frozen layer's set (what its input's gradient needs)"))
    if unfrozen.active(t):
        layer_text.append("one trained layer's set; " + (
            "every layer keeps its input (enable_input_require_grads), a frozen layer's rerun saves what its input's "
            "gradient needs" if t.grad_checkpointing else
            "a trained embedding gives every layer's input a gradient" if "embed_tokens" in unfrozen.outer_modules(m, t)
            else "the layers below the lowest trained one record no graph; a frozen layer above it saves what its "
            "input's gradient needs") + f" ({unfrozen.SOURCE})")
    layer_sec = Section("activations_per_layer", "activations saved by one layer", per_layer, tuple(layer_lines),
                        tuple(layer_text))

    # Activations alive at the end of forward.
    lines: list[Line] = []
    kept, recomputed = d["activations.layers"], d["activations.recomputed_layer"]
    if t.grad_checkpointing:
        lines.append(Line("activations.layers", "checkpointed layer inputs",
                          f"{saving} layers × {residual} B × {_n(m.hidden_size)} hidden × {tok}", kept,
                          "layers × hidden × tokens × bytes", SRC_CKPT))
        lines.append(Line("activations.recomputed_layer", "one layer recomputed during backward",
                          f"1 layer × {fmt_value(per_layer, 'bytes')}", recomputed, "one layer's saved tensors",
                          SRC_CKPT))
    else:
        # The core's adjustments (memory/__init__.py details): the bottom layer's smaller set (its input needs no
        # gradient under LoRA), a MoE model's dense bottom layers.
        less, more = d.get("activations.bottom_layer_less", 0), d.get("activations.bottom_layers_more", 0)
        less_label = LORA_LAYERS_LESS if lora_layers.active(t) else UNFROZEN_LESS if unfrozen.active(t) \
            else _less_label(m)
        lines.append(Line("activations.layers", "all layers' saved tensors",
                          f"{saving} layers × {_n(per_layer)} B"
                          + (f" − {_n(less)} B ({less_label})" if less else "")
                          + (f" + {_n(more)} B (what the dense bottom layers save more)" if more else ""),
                          kept, "layers × one layer's saved tensors", SRC_ACTS))
    if t.ac_every > 1 or t.activation_offload or t.ac_offload:  # checkpointing variants (memory/savers.py)
        what = [f"every {ordinal(t.ac_every)} layer checkpointed" + (" from layer 0" if t.ac_layout == "hf" else "")
                + ", the others keep their saved set"] if t.ac_every > 1 else []
        if t.activation_offload or t.ac_offload:
            host = b.details.get("activations.offloaded_to_host", 0)
            what.append(("checkpointed layers' inputs (save_on_cpu) " if t.ac_offload else "")
                        + f"offloaded to host RAM: {fmt_value(host, 'bytes')}")
        lines = [ln for ln in lines if ln.key not in ("activations.layers", "activations.recomputed_layer")]
        lines.insert(0, Line("activations.layers", "layer activations kept on the GPU", "; ".join(what), kept,
                             "memory/savers.py layer_residency",
                             "transformers modeling_utils.py _activation_checkpointing_enable(offload=True)"
                             if t.ac_offload else
                             "torchtune training/activations.py; training/_activation_offloading.py"))
        if recomputed and t.activation_offload and not t.grad_checkpointing:
            lines.insert(1, Line("activations.recomputed_layer", "brought back from host RAM during backward",
                                 "one autograd node's saved tensors and the previous node's (of one layer's "
                                 f"{fmt_value(per_layer, 'bytes')})", recomputed,
                                 "memory/savers.py offload_node_bytes",
                                 "torchtune training/_activation_offloading.py OffloadActivations"))
        elif recomputed:
            lines.insert(1, Line("activations.recomputed_layer", "one layer in flight during backward",
                                 f"1 layer × {fmt_value(per_layer, 'bytes')}", recomputed,
                                 "one layer's saved tensors", SRC_CKPT))
    # ALiBi models have no rotary tables, nor DeBERTa (relative positions: memory/deberta.py)
    if zamba2.is_zamba2(m):  # memory/zamba2.py once_per_token: RoPE with use_mem_rope, the embeddings' clone
        if m.zamba_mem_rope and m.zamba_hybrid_layers:
            lines.append(Line("activations.shared.rope", "RoPE cos and sin (shared by all layers)",
                              f"2 × {c} B × {head_dim(m)} head_dim × {tok}", 2 * c * head_dim(m) * tokens,
                              "2 × head_dim × tokens × bytes", "transformers modeling_zamba2.py Zamba2RotaryEmbedding"))
        if t.grad_checkpointing:
            lines.append(Line("activations.shared.embeddings_clone", "the embeddings' clone every layer receives",
                              f"{c} B × {_n(m.hidden_size or 0)} hidden × {tok}", c * (m.hidden_size or 0) * tokens,
                              "hidden × tokens × bytes", "transformers modeling_zamba2.py Zamba2Model.forward "
                              "(original_hidden_states, kept by each layer's checkpoint)"))
    elif not (m.learned_position_embeddings or m.alibi or mamba or deberta.is_deberta(m) or jamba.is_jamba(m)
              or nemotron_h.is_nemotron_h(m)):  # (NemotronHAttention: JambaAttention, no rotary embedding)
        if m.family == "bamba" and not m.attention_layers:
            pass  # no attention layer: BambaModel still builds the tables, but from a leaf no layer saves
        elif m.family == "granitemoehybrid":
            pass  # position_embedding_type "nope": GraniteMoeHybridModel.rotary_emb is None, no tables
        elif m.family in ("gpt_oss", "bamba"):
            # GptOssRotaryEmbedding: cos and sin of head_dim / 2; BambaRotaryEmbedding: partial_rotary_factor 0.5
            # (memory/__init__.py)
            rope = c * head_dim(m) * tokens
            lines.append(Line("activations.shared.rope", "RoPE cos and sin (shared by all layers)",
                              f"2 × {c} B × {head_dim(m) // 2} (head_dim / 2) × {tok}", rope,
                              "2 × head_dim / 2 × tokens × bytes", "transformers modeling_gpt_oss.py "
                              "GptOssRotaryEmbedding" if m.family == "gpt_oss" else
                              "transformers modeling_bamba.py BambaRotaryEmbedding (partial_rotary_factor 0.5)"))
        else:
            rope = 2 * c * head_dim(m) * tokens
            lines.append(Line("activations.shared.rope", "RoPE cos and sin (shared by all layers)",
                              f"2 × {c} B × {head_dim(m)} head_dim × {tok}", rope, "2 × head_dim × tokens × bytes",
                              "transformers LlamaRotaryEmbedding"))
        if m.family == "modernbert" and m.sliding_window_layers:  # memory/__init__.py: a pair per layer type
            lines.append(Line("activations.shared.rope_local", "RoPE cos and sin of the local layers' theta",
                              f"2 × {c} B × {head_dim(m)} head_dim × {tok}", rope, "2 × head_dim × tokens × bytes",
                              "transformers ModernBertRotaryEmbedding"))
    if local_mask(m, t):  # ModernBERT's sliding layers (memory/activations.py local_mask)
        per = c if t.attention == "eager" else 1
        lines.append(Line("activations.shared.mask", "4-D sliding-window mask of the local layers",
                          f"{per} B × {rows} rows × {_n(seq)} × {_n(seq)}", per * rows * seq * seq,
                          "rows × seq² × bytes", "transformers masking_utils.create_bidirectional_sliding_window_mask"))
    if m.embedding_norm and (full_like or (encoder.is_encoder(m) and encoder.embedding_output_grad(m, t))):
        # BLOOM's word_embeddings_layernorm and an encoder's embedding LayerNorm (memory/__init__.py
        # _activation_plan): its input, mean and rstd when the embedding or its own weight trains, or (encoders,
        # LoRA with checkpointing) when its output needs a gradient
        per_tok = residual * m.hidden_size + 8
        lines.append(Line("activations.shared.embedding_norm", "embedding layernorm (input, mean, rstd)",
                          f"{_n(per_tok)} B/token × {tok}", per_tok * tokens, "bytes per token × tokens",
                          "torch native_layer_norm (modeling_bert.py BertEmbeddings)" if encoder.is_encoder(m)
                          else "transformers modeling_bloom.py word_embeddings_layernorm"))
    if (t.attention == "eager" or eager_only(m)) and not encoder.is_encoder(m) and not mamba:  # BLOOM, Gemma 2
        # prefix tuning under eager: the mask has a column per virtual key too (memory/__init__.py _peft_once_t)
        keys = seq + (t.virtual_tokens if t.method == "prefix-tuning" and t.attention == "eager" else 0)
        mask = c * rows * seq * seq + c * tokens * (keys - seq)
        lines.append(Line("activations.shared.mask", "4-D causal mask (eager attention)",
                          f"{c} B × {rows} rows × {_n(seq)} × {_n(keys)}"
                          + (f" (+ {t.virtual_tokens} prefix keys)" if keys != seq else ""), mask,
                          "rows × queries × keys × bytes", "transformers masking_utils.eager_mask"))
        if m.family == "llama4" and m.attention_chunk_size and m.nope_layer_interval:  # memory/__init__.py once_ts
            lines.append(Line("activations.shared.chunked_mask", "4-D chunked-attention mask (eager, RoPE layers)",
                              f"{c} B × {rows} rows × {_n(seq)} × {_n(seq)}", c * rows * seq * seq,
                              "rows × queries × keys × bytes",
                              "transformers masking_utils.create_chunked_causal_mask (modeling_llama4.py)"))
        if m.family == "gpt_oss" and 0 < (m.sliding_window_layers or 0) < (m.num_layers or 0):  # memory/__init__.py
            lines.append(Line("activations.shared.sliding_mask", "4-D sliding-window mask beside the causal one",
                              f"{c} B × {rows} rows × {_n(seq)} × {_n(seq)}", c * rows * seq * seq,
                              "rows × queries × keys × bytes",
                              "transformers modeling_gpt_oss.py GptOssModel.forward causal_mask_mapping"))
    elif masked_sdpa(t) and not mamba:  # packed rows under sdpa: a block-diagonal bool mask (memory/activations.py)
        packed = t.packing != "none"
        lines.append(Line("activations.shared.mask", "4-D bool mask of the " + ("packed rows" if packed else
                                                                               "padded pairs") + " (sdpa)",
                          f"1 B × {rows} rows × {_n(seq)} × {_n(seq)}", rows * seq * seq, "rows × row² × 1 B",
                          "transformers masking_utils.sdpa_mask (" + ("find_packed_sequence_indices)" if packed
                                                                     else "the attention_mask of padded rows)")))
    if deberta.is_deberta(m):  # the pairwise mask, relative positions and rel_embeddings (memory/deberta.py)
        for term in deberta.shared_terms(m, t, recipe):
            value = term.per_token_seq * rows * seq * seq + term.per_seq_sq * seq * seq + term.const
            inputs = (f"{term.per_token_seq} B × {rows} rows × {_n(seq)} × {_n(seq)}" if term.per_token_seq else
                      f"{term.per_seq_sq} B × {_n(seq)} × {_n(seq)}" if term.per_seq_sq else
                      f"{_n(term.const)} B ({_n(m.rel_embedding_rows)} rows × {_n(m.hidden_size or 0)} hidden)")
            lines.append(Line(f"activations.shared.{term.name}", term.name, inputs, value,
                              "rows × seq² × bytes" if term.per_token_seq else "seq² × bytes" if term.per_seq_sq
                              else "rel_embeddings rows × hidden × bytes (+ mean, rstd)",
                              "transformers modeling_deberta_v2.py DebertaV2Encoder"))
    if d.get("activations.prompt_encoder"):
        lines.append(Line("activations.shared.prompt_encoder", f"{t.method} prompt encoder's saved tensors",
                          f"{t.virtual_tokens} virtual tokens × batch {t.batch_size}, adapter dtype "
                          f"{t.adapter_dtype}", d["activations.prompt_encoder"],
                          "run once per step: its inputs and activation outputs",
                          peft_methods.TABLE[t.method].source))
    if d.get("activations.unsloth_weight_buffer"):  # memory/unsloth.py weight_buffer_bytes
        lines.append(Line("activations.shared.unsloth_weight_buffer", "Unsloth's QLoRA dequantization buffers",
                          f"the largest block weight in {recipe.compute} + an fp32 absmax per 64 weights",
                          d["activations.unsloth_weight_buffer"], "largest out × in × compute bytes + 4 B × blocks",
                          "unsloth kernels/utils.py fast_dequantize (use_global_buffer: WEIGHT_BUFFERS, "
                          "ABSMAX_BUFFERS)"))
    if m.dropout > 0:
        drop = m.hidden_size * tokens
        lines.append(Line("activations.shared.dropout", "embedding dropout mask",
                          f"1 B × {_n(m.hidden_size)} hidden × {tok}", drop, "hidden × tokens", "torch fused dropout"))
    heads = encoder.head_terms if encoder.is_encoder(m) else ssm.head_terms if mamba \
        else compiled.head_terms if compiled.whole(m, t) else head_terms
    for term in heads(m, t, recipe, head_trainable):
        if loss != "hf" and not term.name.startswith("final norm"):
            continue  # a loss saver replaces the head's input and the log_softmax output (memory/loss.py)
        if unsloth.norm_active(m, t) and term.name.startswith("final norm"):  # Fast_RMS_Layernorm (memory/unsloth.py)
            per_tok = unsloth.final_norm_saved(m, recipe)
            if term.name.endswith("(fp32 input + rsqrt)"):
                lines.append(Line("activations.head.final norm (Unsloth)", "final norm: 16-bit input + fp32 rstd",
                                  f"{_n(per_tok)} B/token × {tok}", per_tok * tokens, "bytes per token × tokens",
                                  "unsloth kernels/rms_layernorm.py Fast_RMS_Layernorm (models/llama.py "
                                  "LlamaModel_fast_forward)"))
            continue
        if liger.active(m, t) and term.name.startswith("final norm"):  # LigerRMSNormFunction (memory/liger.py)
            per_tok = liger.final_norm_saved(m, recipe)
            if term.name.endswith("(fp32 input + rsqrt)"):
                lines.append(Line("activations.head.final norm (Liger)", "final norm: 16-bit input + fp32 rstd",
                                  f"{_n(per_tok)} B/token × {tok}", per_tok * tokens, "bytes per token × tokens",
                                  "liger_kernel ops/rms_norm.py LigerRMSNormFunction (monkey_patch.py "
                                  "_patch_rms_norm_module on the final norm)"))
            continue
        lines.append(Line(f"activations.head.{term.name}", term.name, f"{_n(term.per_token)} B/token × {tok}",
                          term.per_token * tokens, "bytes per token × tokens",
                          SRC_ENCODER_HEAD if encoder.is_encoder(m) else SRC_LIGER_CE
                          if term.name.startswith("Liger") else f"{compiled.SOURCE}; memory/compiled.py"
                          if term.name.startswith("compiled") else SRC_LOSS))
    token_head_t, token_head_c = peft_methods.tied_token_head_bytes(m, t, c)
    if loss == "hf" and (token_head_t or token_head_c):  # trainable tokens on a tied model (peft_methods.py)
        lines.append(Line("activations.head.trainable_tokens", "tied lm_head: its input and the merged weight",
                          f"{_n(token_head_t)} B/token × {tok} + {_n(m.vocab_size)} × {_n(m.hidden_size)} × {c} B",
                          token_head_t * tokens + token_head_c, "hidden × tokens + vocab × hidden, compute bytes",
                          SRC_TOKENS))
    if loss != "hf":
        lines.append(Line("activations.head.loss", f"{_loss_name(loss)}: {_loss_labels(loss)[0]}",
                          _loss_inputs(t, loss, tokens, seq), d["activations.loss_saved"],
                          _loss_formula(loss), _loss_source(loss)))
    if recipe.autocast:
        linear_params = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(m))
        linear_params += m.vocab_size * m.hidden_size if encoder.vocab_head(m) else 0
        lines.append(Line("activations.autocast_weight_copies", "autocast's 16-bit weight copies",
                          f"{_n(linear_params)} Linear params × {c} B ({recipe.compute})",
                          d["activations.autocast_weight_copies"],
                          "Linear parameters × compute bytes", "torch autocast_mode.cpp cached_cast"))
    if d.get("activations.router_logits"):  # memory/router_aux.py: the MoE router's aux loss
        lines.append(Line("activations.router_logits", "every MoE layer's router logits (aux loss), then their "
                          "gradients", f"{router_aux.moe_layers(m)} MoE layers × {m.num_experts} experts × {c} B × "
                          f"{tok}", d["activations.router_logits"], "MoE layers × experts × tokens × compute bytes",
                          SRC_ROUTER_AUX))
    if d.get("activations.backward_excess"):  # memory/__init__.py: the backward moment holds more than forward kept
        lines.append(Line("activations.backward_excess", "offloaded set brought back beside the recomputed layer",
                          "backward's activations above forward's", d["activations.backward_excess"],
                          "the largest moment's activations − the sum above", "memory/savers.py layer_residency"))
    act_text = ["gradient checkpointing trades recomputation for memory: only each layer's input is kept"
                if t.grad_checkpointing else
                "alive from the end of forward until backward reaches each layer"]
    if pref.torchtune_head(t):
        act_text.append("torchtune's DPO recipes (--dpo-head logits): the fp32 logits of every position, then "
                        "log_softmax(logits / 1.0) over the shifted positions, its output alive until backward")
    elif pref.is_preference(t) or rl.is_rl(t):
        act_text.append("TRL's fused log-prob head (add_fused_lm_head, ChunkedLogProbFunction): no vocabulary-wide "
                        "logits are kept, only the completion positions' hidden states and per-token statistics")
    elif t.objective == "reward":
        act_text.append("a 1-output score head instead of lm_head: nothing vocabulary-wide exists")
    elif t.objective == "online-dpo":
        act_text.append("OnlineDPOTrainer's _forward: the full logits, then a log-softmax over the completion "
                        "positions that stays alive until backward (no fused head)")
    act_sec = Section("activations", "activations", b.activations, tuple(lines), tuple(act_text))

    # Temporaries: short-lived peaks; the component is the largest of them.
    layer_fwd_t, layer_bwd_t = d["temporaries.layer_forward"], d["temporaries.layer_backward"]
    # QLoRA's dequantized weight, when it is the layer's temporary (memory/activations.py DequantBytes)
    dequant = None if unsloth.active(m, t) else dequant_bytes(m, t, recipe, quantized_linears(m))
    dq_fwd = dequant[0].forward(tokens, t.grad_checkpointing or t.activation_offload) if dequant else 0
    dq_bwd = dequant[1].backward(tokens, layer.mlp_tail_per_token) if dequant else 0
    v = m.vocab_size
    loss_fwd, loss_bwd = d["temporaries.loss_forward"], d["temporaries.loss_backward"]
    gb = dtype_bytes(recipe.grad)
    end_t = d.get("temporaries.backward_end", 0)
    opt_temp = d.get("temporaries.optimizer_step", 0)
    tl = [
        Line("temporaries.optimizer_step", "optimizer step", _opt_temp_inputs(t, opt_temp), opt_temp,
             "kernel temporaries (fused: none)", "torch/optim/adamw.py _multi_tensor / _single_tensor; ZeRO")
        if t.optimizer != "muon" else
        Line("temporaries.optimizer_step", "optimizer step", _opt_temp_inputs(t, opt_temp), opt_temp,
             "max over tensors, named_parameters order", MUON_SOURCE),
        Line("temporaries.loss_forward", "16-bit logits + Liger's per-row loss and target mask",
             (f"({c} B × {_n(v)} vocab + 13 B) × {tok}" if c != 4 else f"13 B × {tok}"), loss_fwd,
             "(vocab × compute bytes + fp32 loss_1d + bool mask + int64 target × mask) × tokens", SRC_LIGER_CE)
        if t.loss == "liger-cross-entropy" else
        Line("temporaries.loss_forward", "fp32 logits from the upcast hook (the loss's .float() a no-op)",
             f"4 B × {_n(v)} vocab × {tok}", loss_fwd,
             "the larger of the hook's moment (16-bit logits and their fp32 copy, before log_softmax's output) and "
             "the loss's (fp32 logits)", _upcast.SRC)
        if _upcast.active(t, recipe) else
        Line("temporaries.loss_forward", "logits + fp32 copy while the loss runs",
             (f"({c} B + 4 B) × {_n(v)} vocab × {tok}" if c != 4 else f"4 B × {_n(v)} vocab × {tok}"), loss_fwd,
             "vocab × tokens × bytes", SRC_LOSS),
        Line("temporaries.loss_backward", "the 16-bit logits' gradient cast from Liger's in-place fp32 one",
             f"{c if c != 4 else 0} B × {_n(v)} vocab × {tok}", loss_bwd,
             "vocab × tokens × compute bytes (none in fp32)", SRC_LIGER_CE)
        if t.loss == "liger-cross-entropy" else
        Line("temporaries.loss_backward", "log_softmax / nll_loss gradients", f"8 B × {_n(v)} vocab × {tok}",
             loss_bwd, "two fp32 vocab-wide gradients", SRC_LOSS),
        Line("temporaries.layer_forward", layer.forward_transient.name,
             f"{_n(layer.forward_transient.per_token)} B/token × {tok}"
             + (f" + {_n(layer.forward_transient.const)} B of merged expert stacks (checkpointed: unsaved)"
                if layer.forward_transient.const else "")
             + (f" + {_n(layer.mlp_forward_per_token_seq)} B × {tok} × {_n(seq)} keys of the attention weights the "
                "layer still references" if layer.mlp_forward_per_token_seq else "")
             + (f", or {_n(layer.forward_transient.per_token_seq)} B × {tok} × {_n(seq)} keys of unsaved scores"
                if layer.forward_transient.per_token_seq else "")
             + (f" + {_n(layer.attention_forward_per_token)} B/token × {tok} of unsaved q, k, v and normed input"
                if layer.attention_forward_per_token else ""), layer_fwd_t,
             "the larger of the MLP intermediates and eager attention's unsaved scores", SRC_ACTS)
        if not dq_fwd or layer_fwd_t != dq_fwd else
        Line("temporaries.layer_forward", "QLoRA's dequantized weight (largest block Linear)",
             f"{_n(dequant[0].weight_c)} B 16-bit weight + {_n(dequant[0].forward_absmax_c)} B fp32 absmax + "
             f"its output over {tok}", layer_fwd_t,
             "bitsandbytes dequantizes the whole weight for each matmul", SRC_DEQUANT)
        if t.quant_backend != "hqq" else
        Line("temporaries.layer_forward", "hqq's dequantized weight (largest block Linear)",
             f"{_n(dequant[0].weight_c)} B 16-bit weight + the larger of {_n(dequant[0].before_out)} B "
             f"(unpacked W_q and W_r - zero) and its output over {tok}", layer_fwd_t,
             "HQQLinear dequantizes the whole weight for each matmul", SRC_HQQ),
        Line("temporaries.layer_backward", layer.backward_transient.name,
             (f"the larger of {_n(layer.backward_transient.per_token)} B/token × {tok} (the MLP's gradients) and "
              f"{_n(layer.backward_transient.per_token_seq)} B × {tok} × {_n(seq)} keys − "
              f"{_n(layer.mlp_saved_per_token)} B/token × {tok} (eager attention's, after the MLP's saved set is "
              "freed)" if layer.backward_transient.per_token_seq else
              f"{_n(layer.backward_transient.per_token)} B/token × {tok}")
             + (f" + {_n(layer.backward_transient.const)} B (the largest adapted module's delta-weight gradient)"
                if layer.backward_transient.const else ""), layer_bwd_t, "bytes per token × tokens", SRC_ACTS)
        if not dq_bwd or layer_bwd_t != dq_bwd else
        Line("temporaries.layer_backward", "QLoRA's dequantized weight again (largest block Linear)",
             f"{_n(dequant[1].weight_c)} B 16-bit weight + the input's gradient and the incoming one over {tok}"
             + (f" − the MLP's saved tail ({_n(layer.mlp_tail_per_token)} B/token, freed before the fused gate_up's "
                "backward), or down_proj's dequantized weight beside the whole set, the larger"
                if dequant[1].after_tail else ""),
             layer_bwd_t, "MatMul4Bit.backward dequantizes for grad_A" if t.quant_backend != "hqq" else
             "HQQMatmulNoCacheMul.backward dequantizes for grad_input", SRC_DEQUANT if t.quant_backend != "hqq"
             else SRC_HQQ),
    ]
    if "temporaries.layer_recompute" in d and deberta.is_deberta(m):  # memory/__init__.py backward.recompute
        tl.append(Line("temporaries.layer_recompute", "a checkpointed layer's recomputed scores (p2c's division)",
                       f"{_n(layer.forward_transient.per_token_seq)} B × {tok} × {_n(seq)} keys − "
                       f"{_n(layer.after_attention_per_token)} B/token × {tok} not yet saved + the MLP's "
                       f"{_n(layer.mlp_tail_per_token)} B/token that the moment's recomputed layer leaves out",
                       d["temporaries.layer_recompute"], "unsaved scores beside the saved set up to the attention",
                       "memory/deberta.py forward_scores"))
    elif "temporaries.layer_recompute" in d:  # memory/__init__.py backward.recompute
        tl.append(Line("temporaries.layer_recompute", "a checkpointed layer's forward rerun in its backward",
                       f"{_n(layer.mlp_forward_per_token)} B/token × {tok} + "
                       f"{_n(d['temporaries.layer_recompute'] - layer.mlp_forward_per_token * tokens)} B "
                       "(DoRA's weight norm)", d["temporaries.layer_recompute"],
                       "the MLP's forward temporaries + the per-module constant", SRC_ACTS))
    if "temporaries.final_norm_backward" in d:  # memory/__init__.py backward.final_norm (full fine-tuning)
        tl.append(Line("temporaries.final_norm_backward", "the final RMSNorm's backward in fp32",
                       f"5 × 4 B × {_n(m.hidden_size)} hidden × {tok}", d["temporaries.final_norm_backward"],
                       "five fp32 hidden-wide tensors (the upcast gradient, mul's and pow's, the mean's, their "
                       "product)", SRC_ACTS))
    if loss != "hf":
        labels, src = _loss_labels(loss), _loss_source(loss)
        inputs = _loss_inputs(t, loss, tokens, seq)
        tl[1:3] = [Line("temporaries.loss_forward", f"{_loss_name(loss)}: {labels[1]}", inputs, loss_fwd,
                        _loss_formula(loss), src),
                   Line("temporaries.loss_backward", f"{_loss_name(loss)}: {labels[2]}", inputs, loss_bwd,
                        _loss_formula(loss), src)]
        if d.get("temporaries.head_gradient_in_forward"):
            tl.append(Line("temporaries.head_gradient_in_forward", "the head's gradient, allocated in forward",
                           f"{_n(v)} × {_n(m.hidden_size)} × {dtype_bytes(recipe.grad)} B",
                           d["temporaries.head_gradient_in_forward"], "vocab × hidden × gradient bytes", src))
        if d.get("temporaries.head_backward"):
            tl.append(Line("temporaries.head_backward", labels[3], tok, d["temporaries.head_backward"],
                           _loss_formula(loss), src))
    if t.loss == "liger-cross-entropy" and d.get("temporaries.head_backward"):  # memory/__init__.py liger_ce
        tl.append(Line("temporaries.head_backward", "lm_head's backward: the logits' gradient, the head's input and "
                       "its gradient, the head's weight gradient", tok, d["temporaries.head_backward"],
                       "(compute bytes × vocab + hidden-wide input and gradient) × tokens + the head's gradient",
                       "torch Linear backward after " + SRC_LIGER_CE))
    if "temporaries.generation" in d:  # memory/rl.py: GRPO's generate() and no-grad log-prob passes (own moments)
        gen_rows = rl.generation_rows(t)
        rows_text = (f"{gen_rows} rows (2 completions × {t.batch_size // 2} prompts, every micro-batch)"
                     if t.objective == "online-dpo" else
                     f"{gen_rows} rows (--batch-size {t.batch_size} × {rl.steps_per_generation(t)} steps per "
                     "generation)")
        if t.use_vllm == "server":  # memory/rl.py sync_bytes: no generate() here, the weights stream to the server
            per_param = t.objective == "online-dpo"
            tl.append(Line("temporaries.generation", "weight sync to the vLLM server (packed broadcast)",
                           "one parameter at a time (update_named_param)" if per_param else
                           "every parameter (update_named_params)", d["temporaries.generation"],
                           "a torch.cat copy of the largest tensor (the embedding)" if per_param else
                           "2 buffers of ~1 GiB in flight and one being packed, each at most 1 GiB + the largest "
                           "tensor, never more than the weights (memory/rl.py sync_bytes; approximate)",
                           SRC_ONLINE if per_param else SRC_RL))
        elif t.use_vllm == "off":
            tl.append(Line("temporaries.generation", "generate(): logits, sampling probabilities and layer workspace",
                           f"{rows_text}, prompt {t.prompt_len} + {rl.completion_len(t)} new tokens",
                           d["temporaries.generation"],
                           "no KV cache (use_cache=False under checkpointing): the last step's no-grad forward over "
                           "the whole sequence (memory/online_dpo.py uncached_generation_bytes)"
                           if t.objective == "online-dpo" and t.grad_checkpointing else
                           "the larger of the prefill and the last decode step, beside the KV cache "
                           "(memory/inference.py generate_terms)",
                           SRC_ONLINE if t.objective == "online-dpo" else SRC_RL))
        if d.get("temporaries.logprob_pass"):
            tl.append(Line("temporaries.logprob_pass", "no-grad log-prob pass (old policy / reference)",
                           f"{t.batch_size} rows of {_n(seq)} per sub-batch, {_n(gen_rows)} rows' results kept",
                           d["temporaries.logprob_pass"], "one no-grad forward through TRL's fused head", SRC_RL))
    if "temporaries.reference_forward" in d and (t.objective == "online-dpo" or pref.torchtune_head(t)):
        # memory/online_dpo.py ReferencePlan
        tl.append(Line("temporaries.reference_forward", f"reference model's no-grad _forward ({pref.resolve_ref(t)})",
                       f"the larger of one no-grad layer over {tok} and the full logits over {tok} with the "
                       f"log-softmax over {_n(_labelled(t, seq))} "
                       + ("shifted positions (and its input's copy)" if pref.torchtune_head(t)
                          else "completion positions"),
                       d["temporaries.reference_forward"],
                       "after the policy's forward, on top of its saved activations",
                       SRC_TORCHTUNE_DPO if pref.torchtune_head(t) else SRC_ONLINE))
    elif "temporaries.reference_forward" in d:  # memory/preference.py ReferencePlan.peak, a moment of its own
        int8 = " (LLM.int8 matmuls: fp16 input copy, int8 rows, int32 and fp16 products)" if t.ref_quant == "8bit" \
            else ""
        tl.append(Line("temporaries.reference_forward", f"reference model's no-grad forward ({pref.resolve_ref(t)})",
                       f"the larger of one no-grad layer over {tok}{int8} and its fused head over "
                       f"{_n(_labelled(t, seq))} scored tokens, + the policy's per-position outputs",
                       d["temporaries.reference_forward"],
                       "after the policy's forward, on top of its saved activations", SRC_PREFERENCE))
    if "temporaries.reward_forward" in d:  # memory/reward_scoring.py: a moment of its own
        assert t.reward_spec is not None
        rows = rl.generation_rows(t) if rl.is_rl(t) else t.batch_size
        tl.append(Line("temporaries.reward_forward", f"reward model's no-grad forward ({t.reward_model})",
                       f"one no-grad layer of {t.reward_spec.name} over {_n(rows)} rows × {_n(seq)} tokens, "
                       "with the layer input, the embedding output and the re-tokenized ids and mask",
                       d["temporaries.reward_forward"],
                       "after the reference's forward, beside the policy's saved activations"
                       if t.objective == "online-dpo" else
                       "after generate() and the log-prob passes, over the whole generation batch",
                       SRC_REWARD_MODEL))
    if d.get("temporaries.router_aux_loss"):  # memory/router_aux.py: the aux loss's own forward moment
        head_b = router_aux.head_logits_bytes(m, t, recipe) // max(v, 1)
        tl.append(Line("temporaries.router_aux_loss", "the model's logits + the router aux loss (every layer's saved "
                       "softmax, the last layer's fp32 copies and top-k)",
                       f"({head_b} B × {_n(v)} vocab + {_n(router_aux.loss_forward_bytes(m, t, recipe))} B) × {tok}",
                       d["temporaries.router_aux_loss"], "(vocab × logits bytes + MoE layers × experts × softmax "
                       "bytes + fp32 copies + top-k) × tokens", SRC_ROUTER_AUX))
    if end_t and peft_methods.token_rows(t):
        tl.append(Line("temporaries.gradient_sum", "dense gradient of the merged embedding weight",
                       f"{_n(v)} × {_n(m.hidden_size)} × {c} B", end_t, "vocab × hidden × compute bytes",
                       "torch embedding_dense_backward; " + SRC_TOKENS))
    elif end_t:
        tied = m.tie_word_embeddings
        tl.append(Line("temporaries.gradient_sum",
                       "tied head + embedding gradients summed out of place" if tied
                       else "new gradient being accumulated into .grad",
                       f"{'2 × ' if tied else ''}{_n(v)} × {_n(m.hidden_size)} × {gb} B", end_t,
                       "vocab × hidden × gradient bytes", "torch autograd input_buffer.cpp / AccumulateGrad"))
    temp_sec = Section("temporaries", "temporaries (the most alive at one moment)", b.temporaries, tuple(tl),
                       ("the component is the most of these alive at one moment (see the phases below); they are "
                        "freed one after another, except the head's gradient from forward, alive beside the loss's",))

    return layer_sec, act_sec, temp_sec


def _loss_of(t: TrainingSpec, d: dict[str, int]) -> str:
    """The head the core's activation plan runs (memory/__init__.py _activation_plan `loss`; it reports a loss
    other than transformers' own with the detail activations.loss_saved): TRL's fused log-prob head for the
    preference objectives, the reward model's score head, --loss, or another objective's own head."""
    if "activations.loss_saved" not in d:
        return "hf"
    if pref.torchtune_head(t):
        return "logits-dpo"  # torchtune's DPO recipes: the full fp32 logits and a log-softmax (memory/online_dpo.py)
    if pref.is_preference(t) or rl.is_rl(t):
        return "trl"
    if t.objective == "reward":
        return "reward"
    if pref.is_reference_free(t):
        return "logits"  # ORPO / CPO / SimPO: the full logits of the 2B rows (memory/preference.py)
    if t.objective == "online-dpo":
        return "online"  # the full logits and a log-softmax (memory/online_dpo.py)
    if t.objective == "ppo":
        return "ppo"  # the full logits kept, a log-softmax per row (memory/ppo.py)
    return t.loss if t.loss != "hf" else t.objective


def _loss_labels(loss: str) -> tuple[str, str, str, str]:
    if loss == "reward":
        return _REWARD_LABELS
    if loss == "logits":
        return _LOGITS_HEAD_LABELS
    if loss == "online":
        return _ONLINE_HEAD_LABELS
    if loss == "logits-dpo":
        return _TT_DPO_HEAD_LABELS
    if loss == "ppo":
        return _PPO_HEAD_LABELS
    return LOSS_LABELS.get(loss, _OBJECTIVE_HEAD_LABELS)


def _loss_source(loss: str) -> str:
    if loss == "logits":
        return SRC_LOGITS
    if loss == "online":
        return SRC_ONLINE
    if loss == "logits-dpo":
        return SRC_TORCHTUNE_DPO
    if loss == "ppo":
        return SRC_PPO
    return SRC_REWARD if loss == "reward" else LOSS_SOURCES.get(loss, SRC_PREFERENCE)


def _loss_formula(loss: str) -> str:
    if loss in ("online", "logits-dpo"):
        return "memory/online_dpo.py head_bytes"
    if loss == "ppo":
        return "memory/ppo.py head_bytes"
    return "memory/preference.py logits_head_bytes" if loss == "logits" else "memory/loss.py loss_bytes"


def _loss_name(loss: str) -> str:
    if loss in LOSS_SOURCES:
        return "TRL fused log-prob head" if loss == "trl" else f"loss {loss}"
    if loss == "logits":
        return "logits head"
    if loss == "online":
        return "Online DPO logits head"
    if loss == "logits-dpo":
        return "torchtune DPO logits head"
    if loss == "ppo":
        return "PPO policy logits head"
    return "score head" if loss == "reward" else f"{loss} head"


def _labelled(t: TrainingSpec, seq: int) -> int:
    """Scored tokens of the step (memory/__init__.py _transformer_phases `labelled`): completion positions."""
    return t.batch_size * min(seq - t.prompt_len, seq - 1)


def _loss_inputs(t: TrainingSpec, loss: str, tokens: int, seq: int) -> str:
    if loss == "trl":
        return (f"{_n(tokens)} positions, {_n(_labelled(t, seq))} scored (prompt {t.prompt_len} of {_n(seq)} "
                "per row is not)")
    return f"{_n(tokens)} tokens"


def _rows_text(t: TrainingSpec) -> str:
    """What one policy forward runs on under a preference or reward objective (memory/preference.py rows)."""
    b = t.batch_size  # the policy view's rows
    if rl.is_rl(t):
        return (f"{t.objective}: {b} completions (per_device_train_batch_size) of prompt {t.prompt_len} + completion "
                f"{rl.completion_len(t)} in one forward; generate() ran on {rl.generation_rows(t)} rows before it")
    if t.objective == "online-dpo":
        return (f"online-dpo: 2 completions for each of {b // 2} prompts → {b} rows of prompt {t.prompt_len} + "
                f"completion {rl.completion_len(t)} in one forward; "
                + ("generate() ran on the same rows before it" if t.use_vllm == "off" else
                   "vLLM generated them before it (not on the policy)"))
    if t.objective == "ppo":
        return (f"ppo: {b} query + response rows (per_device_train_batch_size; query {t.prompt_len} + response "
                f"{rl.completion_len(t)}) through the value model, then the policy, in one micro-batch")
    if t.objective == "kto":
        return (f"kto: {b} unpaired completions in one forward; the KL rows (same shape) run under no_grad before it "
                "and again through the reference")
    pairs = b // 2
    return (f"{t.objective}: chosen and rejected stacked: {pairs} pair{'s' if pairs > 1 else ''} → {b} rows in one "
            "forward (DataCollatorForPreference)")


def _opt_temp_inputs(t: TrainingSpec, value: int) -> str:
    if not value:
        return f"{t.optimizer_impl} kernel updates in place: none"
    parts = []
    if t.optimizer == "adamw" and t.optimizer_impl == "foreach":
        parts.append("foreach sqrt(exp_avg_sq) of every trainable tensor")
    elif t.optimizer == "adamw" and t.optimizer_impl == "for-loop":
        parts.append("2 temporaries of the largest tensor")
    elif t.optimizer in ("lion", "adafactor"):
        parts.append("per-tensor update temporaries of the largest tensor")
    elif t.optimizer == "muon":
        parts.append("the larger of: a 2-D matrix's Nesterov update + its bf16 Newton-Schulz (4 m n + 2 min(m, n)²) "
                     "+ the previous matrix's bf16 update; AdamW's 2 temporaries of the largest other tensor")
    if recipe_of(t).master_weights:
        parts.append("fp32 gradients handed to the master copy")
    return " + ".join(parts) or "kernel temporaries"


def _count_only(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> tuple[Section, Section]:
    per_sample = m.activation_bytes_per_sample
    if per_sample is None:
        lines: tuple[Line, ...] = ()
        text: tuple[str, ...] = ("not modeled: this preset gives only a parameter count",)
    else:
        lines = (Line("activations.per_sample_preset", "activations (from the preset)",
                      f"{_n(per_sample)} B/sample × batch {t.batch_size}", per_sample * t.batch_size,
                      "bytes per sample × batch", m.source),)
        text = ()
    opt_temp = b.details.get("temporaries.optimizer_step", 0)
    temp = Section("temporaries", "temporaries (the most alive at one moment)", b.temporaries,
                   (Line("temporaries.optimizer_step", "optimizer step", _opt_temp_inputs(t, opt_temp), opt_temp),))
    return Section("activations", "activations", b.activations, lines, text), temp


# --- phases and overhead -----------------------------------------------------------------------------

def _sum_line(key: str, label: str, parts: list[tuple[str, int]], source: str = SRC_PHASES) -> Line:
    shown = [(name, v) for name, v in parts if v]
    inputs = " + ".join(f"{name} {fmt_value(v, 'bytes')}" for name, v in shown)
    return Line(key, label, inputs, sum(v for _, v in shown), source=source)


def _phases(b: Breakdown) -> tuple[Section, str]:
    """The core's moments (memory/moments.py), each as the sum of its named terms."""
    lines: list[Line] = []
    for mo in b.named_moments():
        lines.append(_sum_line(f"phases.{mo.key}", mo.label, [(t.name, t.bytes) for t in mo.terms]))
    peak = b.peak_moment()
    label = peak.label if peak else b.peak_phase.replace("_", " ")
    text = (f"the {b.peak_phase.replace('_', ' ')} phase wins, at '{label}': "
            f"{fmt_value(b.tensor_peak_bytes, 'bytes')} of tensors",
            "each phase is the largest of its moments; the sum of all components is an upper bound: activations "
            "are freed before the optimizer step and most temporaries never coexist")
    return Section("phases", "phases: what is alive when", b.tensor_peak_bytes, tuple(lines), text), label


def _overhead(b: Breakdown) -> Section:
    # memory/overhead.py: context and NCCL are outside the allocator; workspace and reserve inside it.
    d = b.details
    lines = (
        Line("overhead.cuda_context", "CUDA context (driver, kernels, handles)", "500 MiB",
             d.get("overhead.cuda_context", 0), "measured constant (lazy module loading)", SRC_OVERHEAD),
        Line("overhead.cublas_workspace", "cuBLAS workspace", "2 × 4096 KiB + 8 × 16 KiB",
             d.get("overhead.cublas_workspace", 0), "CUBLAS_WORKSPACE_CONFIG default", SRC_OVERHEAD),
        Line("overhead.nccl_buffers", "NCCL buffers", "4 MiB × 16 channels × ring peers",
             d.get("overhead.nccl_buffers", 0), "0 on one GPU", SRC_OVERHEAD),
        Line("overhead.allocator_reserve", "allocator reserve (segment slack, fragmentation)",
             f"22 MiB + 9.9 % × {_n(b.tensor_peak_bytes)} B tensor peak", d.get("overhead.allocator_reserve", 0),
             "fitted on published max_memory_reserved readings", SRC_OVERHEAD),
    )
    if "overhead.vllm_engine" in d:  # GRPO + colocated vLLM (memory/rl.py colocated): its share of the GPU
        sleep = "non-torch memory while asleep (level 2)" if d["overhead.vllm_engine"] != d["vllm.budget"] else \
            "vllm_gpu_memory_utilization × the GPU"
        lines += (
            Line("overhead.vllm_engine", "colocated vLLM engine during the step", sleep, d["overhead.vllm_engine"],
                 "weights, profile reserve, non-torch memory and KV pool (approximate)", SRC_RL_VLLM),
            Line("overhead.vllm_cuda_graphs", "vLLM CUDA graphs", "piecewise + full captures × layers × 176 KiB",
                 d["overhead.vllm_cuda_graphs"], "captured after the pool, outside the budget (approximate)",
                 SRC_VLLM),
            Line("overhead.vllm_spare", "left over on the smallest GPU that holds both",
                 "smallest GPU − step − vLLM", d["overhead.vllm_spare"],
                 "the GPU is found (vLLM takes a fraction of it), not summed", SRC_RL_VLLM),
        )
    text = (f"peak = tensor peak {fmt_value(b.tensor_peak_bytes, 'bytes')} + overhead "
            f"{fmt_value(b.overhead, 'bytes')} = {fmt_value(b.peak_bytes, 'bytes')}",
            f"reserved peak (max_memory_reserved) = {fmt_value(b.reserved_peak_bytes, 'bytes')}")
    return Section("overhead", "runtime overhead", b.overhead, lines, text)


# --- the classics (memory/classic.py: ResNet and the LSTM language model, unit by unit) ----------------------
SRC_CLASSIC = "memory/classic.py (the step walked unit by unit); memory/convnet.py, memory/rnn.py"


def _explain_classic(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> Explanation:
    """A ResNet or an LSTM language model: parameters from torchvision / torch.nn's layout, one activation line per
    unit (what autograd saves there), the optimizer's states, and the phases as the core walked them."""
    from vramcalc.core.memory import classic

    units = classic.units(m, t)
    params = (Line("parameters.total", "parameters", "torchvision resnet.py" if m.family == "resnet" else
                   "word_language_model RNNModel", b.parameters, "sum of every weight tensor's elements",
                   "params.py resnet_tensors / lstm_tensors", "count"),)
    weights = (Line("weights.fp32", "weights and buffers (fp32; BatchNorm running statistics)",
                    f"{_n(b.parameters)} params × 4 B, one allocation each", b.weights,
                    "Σ 512-byte-rounded tensor bytes", SRC_CLASSIC),)
    grads = (Line("gradients.fp32", "gradients (fp32, one per parameter)", f"{_n(b.trainable_parameters)} × 4 B",
                  b.gradients, "Σ units' gradients", SRC_CLASSIC),)
    states = (Line("optimizer_state.moments", f"optimizer state ({t.optimizer})", f"{_n(b.trainable_parameters)} "
                   "trainable parameters", b.optimizer_state, "AdamW 2 × 4 B, SGD momentum 4 B, SGD 0", SRC_ADAMW),)
    acts = tuple(Line(f"activations.unit{i}", u.name, f"saved {fmt_value(u.saved, 'bytes')}"
                      + (f" + autocast copies {fmt_value(u.copies, 'bytes')}" if u.copies else ""),
                      u.saved + u.copies, "what autograd saves in this unit", SRC_CLASSIC)
                 for i, u in enumerate(units))
    temps = (Line("temporaries.peak", "transients at the peak moment", b.peak_phase.replace("_", " "),
                  b.temporaries, "the unit's forward or backward transients, or the step's", SRC_CLASSIC),)
    phases, label = _phases(b)
    sections = (Section("parameters", "parameters", None, params, kind="count"),
                Section("weights", "weights", b.weights, weights),
                Section("gradients", "gradients", b.gradients, grads),
                Section("optimizer_state", "optimizer state", b.optimizer_state, states),
                Section("activations", "activations", b.activations, acts),
                Section("temporaries", "temporaries", b.temporaries, temps), phases, _overhead(b))
    return Explanation(m, t, b, sections, label, b.notes)


# --- inference (memory/inference.py: prefill and decode, no gradients or optimizer) -------------------

SRC_GENERATE = ("memory/inference.py generate_terms (transformers 5.24 generation/utils.py _sample, "
                "cache_utils.py, masking_utils.py)")
SRC_INFERENCE = "memory/inference.py (serving: weights + KV cache + one layer's forward workspace + last logits)"
SRC_KV = ("transformers cache_utils.py / vLLM paged cache: 2 × layers × kv_heads × head_dim per token "
          "(GQA arXiv:2305.13245); MLA caches the latent + RoPE key (DeepSeek-V2 arXiv:2405.04434 §2.1.3)")
SRC_QUANT = ("AutoGPTQ qlinear / AutoAWQ WQLinear_GEMM / bitsandbytes Linear4bit, Linear8bitLt / vLLM "
             "Fp8LinearMethod: block Linears quantized, embeddings, norms and lm_head in the compute dtype")


def _explain_inference(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> Explanation:
    """Serving: the phases are prefill and decode (memory/inference.py), not forward/backward/step."""
    from vramcalc.core.memory import inference as inf

    recipe = recipe_of(t)
    fmt = inf.weight_dtype(t)
    kvd = inf.kv_dtype(t)
    c = dtype_bytes(recipe.compute)
    notes: list[str] = []
    params = [Line("parameters.total", "parameters", "derived from the architecture" if m.has_architecture
                   else "the preset's count", b.parameters, "sum of every weight tensor's elements",
                   "params.py inventory from the architecture (config.json)", "count")]
    _, _, on_gpu = inf.weights(m, t)
    if on_gpu != b.parameters:
        params.append(Line("parameters.on_gpu", "on the busiest GPU", f"tp {t.tp} × pp {t.pp}", on_gpu,
                           "Megatron column/row split of Linears, embedding and head; norms replicated",
                           "memory/distributed.py model_parallel_params", "count"))
    sections = [Section("parameters", "parameters", None, tuple(params), kind="count")]
    # Weights.
    w_lines: list[Line] = []
    if fmt in inf.QUANTIZED and m.has_architecture:
        data = constants = quantized = 0
        for lin in block_linears(m):
            d, k = inf.quantized_linear_bytes(lin.in_features, lin.out_features, fmt, t.quant_group_size,
                                              t.double_quant)
            data += d * lin.count
            constants += k * lin.count
            quantized += lin.in_features * lin.out_features * lin.count
        rest = b.parameters - quantized
        whole = data + constants + rest * c
        w_lines += [
            Line("weights.quantized", f"block Linears ({fmt})", f"{_n(quantized)} params", data,
                 "packed quantized data", SRC_QUANT),
            Line("weights.quant_constants", "quantization constants", f"group size {t.quant_group_size}"
                 if fmt in ("gptq-int4", "awq-int4") else fmt, constants, "scales, zero points, g_idx, absmax",
                 SRC_QUANT),
            Line("weights.unquantized", "embeddings, norms, lm_head (not quantized)",
                 f"{_n(rest)} params × {c} B ({recipe.compute})", rest * c, "parameters × bytes", SRC_QUANT),
        ]
        if b.weights != whole:  # tensor/pipeline parallel: the busiest GPU's share
            w_lines.append(Line("weights.on_gpu", "share on the busiest GPU",
                                f"{fmt_value(whole, 'bytes')} × {_n(on_gpu)} / {_n(b.parameters)} params",
                                b.weights, "whole model × its parameter share", SRC_INFERENCE))
    else:
        per = dtype_bytes(fmt if fmt not in inf.QUANTIZED else recipe.compute)
        shown = fmt if fmt not in inf.QUANTIZED else recipe.compute
        w_lines.append(Line("weights.base", f"weights ({shown})", f"{_n(on_gpu)} params × {per} B ({shown})",
                            on_gpu * per, "parameters × bytes per stored weight", SRC_SEED_WEIGHTS))
    sections.append(Section("weights", "weights", b.weights, tuple(w_lines)))
    # KV cache.
    kv_token = b.details.get("kv_cache.bytes_per_token", 0)
    kv_lines: tuple[Line, ...] = (
        Line("kv_cache.bytes_per_token", f"per token and sequence ({kvd})",
             f"{m.num_layers} layers" + (f" ÷ pp {t.pp}" if t.pp > 1 else "") + (f", tp {t.tp}" if t.tp > 1 else ""),
             kv_token, "layers × (2 × kv_heads × head_dim, or MLA latent + RoPE key) × bytes", SRC_KV,
             "per_token"),
        Line("kv_cache.total", "KV cache", f"batch {t.batch_size} × context {_n(t.seq_len)} tokens"
             + (f" (sliding window {m.sliding_window:,} on some layers)" if m.sliding_window else ""),
             b.kv_cache, "sequences × cached tokens × bytes per token", SRC_KV),
    ) if m.has_architecture else ()
    if ssm.is_ssm(m):  # Mamba: a fixed recurrent state instead (memory/ssm.py state_cache_bytes)
        kv_lines = (Line("kv_cache.total", "recurrent state (conv + SSM state per layer)",
                         f"{m.num_layers} layers × batch {t.batch_size} × {_n(m.intermediate_size or 0)} intermediate "
                         f"× ({m.ssm_conv_kernel} × {c} B + {m.ssm_state_size} × 4 B)", b.kv_cache,
                         "layers × batch × intermediate × (conv_kernel × c + state × 4 B)",
                         "transformers cache_utils.py LinearAttentionLayer"),)
    sections.append(Section("kv_cache", "KV cache", b.kv_cache, kv_lines,
                            () if m.has_architecture else ("not modeled: this preset gives only a parameter count",)))
    # Activations and temporaries: generate()'s named terms (memory/inference.py generate_terms).
    g = inf.generate_terms(m, t) if m.has_architecture and not ssm.is_ssm(m) else None
    act_lines: tuple[Line, ...] = ()
    temp_lines: tuple[Line, ...] = ()
    if ssm.is_ssm(m):  # Mamba's generate() (memory/ssm.py estimate_inference): the phases are shown as totals
        act_lines = (Line("activations.prefill_workspace", "prefill: the last layer's selective scan (no autograd)",
                          f"batch {t.batch_size} × prompt {_n(t.seq_len - t.new_tokens + 1)} tokens", b.activations,
                          "tokens × (12 × intermediate × state fp32 + the mixer's 16-bit tensors)",
                          "transformers modeling_mamba.py mamba_selective_scan"),)
        temp_lines = (Line("temporaries.logits", "logits of the last position + generate's fp32 copy",
                           f"batch {t.batch_size} × vocab {_n(m.vocab_size or 0)} × ({c} + 4) B", b.temporaries,
                           "batch × vocab × (c + 4)", SRC_GENERATE),)
    groups: dict[str, list[Line]] = {}
    if g is not None:
        prompt, bt = g.prompt_tokens, t.batch_size
        per_tok = inf.workspace_per_token(m, t)
        act_lines = (
            Line("activations.prefill_layer", "prefill: one layer's tensors (no autograd)",
                 f"batch {bt} × prompt {_n(prompt)} × {_n(per_tok)} B/token"
                 + (f" ({inf.weight_dtype(t)} matmul transient)" if inf.weight_dtype(t) in inf.QUANTIZED else ""),
                 g.prefill_workspace, "tokens × c × (hidden states + MLP intermediates) ÷ tp", SRC_GENERATE),
            Line("activations.prefill_attention", f"prefill: attention transients ({t.attention})",
                 f"{_n(prompt)} queries × {_n(t.seq_len if t.cache_impl == 'static' else prompt)} keys",
                 g.prefill_attention, "eager scores + fp32 softmax + mask; repeat_kv when masked", SRC_GENERATE),
            Line("activations.decode_layer", "decode: one layer's tensors", f"batch {bt} × 1 token",
                 g.decode_workspace, "batch × c × (hidden states + MLP intermediates)", SRC_GENERATE),
            Line("activations.decode_attention", f"decode: attention transients ({t.attention})",
                 f"1 query × {_n(t.seq_len)} keys", g.decode_attention,
                 "eager scores; repeat_kv of the cache when masked (static) or eager", SRC_GENERATE),
        )
        logits_in = (f"batch {bt} × vocab {_n(m.vocab_size or 0)}" if t.logits == "last"
                     else f"batch {bt} × prompt {_n(prompt)} × vocab {_n(m.vocab_size or 0)}")
        temp_lines = (
            Line("temporaries.prefill_logits",
                 f"prefill logits ({'every position' if t.logits == 'all' else 'the last position'})",
                 logits_in + f" × ({c} + 4) B", g.prefill_logits,
                 "lm_head output + fp32 copy (logits_to_keep=1; all: the model's logits.float())", SRC_GENERATE),
            Line("temporaries.decode_logits", "decode logits", f"batch {bt} × vocab × ({c} + 4) B", g.decode_logits,
                 "lm_head output + generate's fp32 copy of the last position", SRC_GENERATE),
            Line("kv_cache.decode_transient", f"second cache copy while it grows ({t.cache_impl})",
                 {"dynamic": "one layer's keys (per-layer torch.cat)", "legacy": "the whole previous cache",
                  "static": "none: index_copy_ in place"}[t.cache_impl], g.kv_transient,
                 "DynamicLayer.update cat / tuple cache cat", SRC_GENERATE),
            Line("temporaries.dequant_buffer", "persistent dequantization buffer", inf.weight_dtype(t),
                 g.dequant_buffer, "exllama v1 temp_dq: 2 B × largest in × out", SRC_GENERATE),
        )
        act_lines = tuple(x for x in act_lines if x.value)
        temp_lines = tuple(x for x in temp_lines if x.value)
        base = [("weights", b.weights), ("dequantization buffer", g.dequant_buffer)]
        pre_parts = [("layer tensors", g.prefill_workspace), ("attention", g.prefill_attention),
                     ("logits", g.prefill_logits)]
        dec_parts = [("layer tensors", g.decode_workspace), ("attention", g.decode_attention),
                     ("logits", g.decode_logits)]
        pre_big = max(pre_parts, key=lambda x: x[1])
        dec_big = max(dec_parts, key=lambda x: x[1])
        groups["prefill"] = [_sum_line("phases.prefill", f"prefill: {_n(prompt)} prompt tokens, at its {pre_big[0]}",
                                       base + [("KV cache", g.kv_prefill), pre_big], SRC_GENERATE)]
        if t.new_tokens > 1:
            groups["decode"] = [_sum_line("phases.decode", f"decode: step {t.new_tokens - 1}, at its {dec_big[0]}",
                                          base + [("KV cache", g.kv_decode), ("second cache copy", g.kv_transient),
                                                  dec_big], SRC_GENERATE)]
        else:
            groups["decode"] = [_sum_line("phases.decode", "decode: none (one new token comes from the prefill)",
                                          base + [("KV cache", g.kv_prefill), ("logits", g.prefill_logits)],
                                          SRC_GENERATE)]
    sections.append(Section("activations", "activations", b.activations, act_lines))
    sections.append(Section("temporaries", "temporaries (the largest transient)", b.temporaries, temp_lines))
    lines: list[Line] = []
    for phase, value in b.phases.items():
        group = groups.get(phase, [])
        if not group or max(line.value for line in group) != value:
            notes.append(f"the {phase} phase is shown with its total only "
                         "(its itemization does not match the core's phase model).")
            group = [Line(f"phases.{phase}", phase, "", value, source=SRC_INFERENCE)]
        lines += group
    peak_line = max((ln for ln in lines if ln.value == b.tensor_peak_bytes), key=lambda ln: ln.value)
    text = (f"the {b.peak_phase} phase wins, at '{peak_line.label}': {fmt_value(b.tensor_peak_bytes, 'bytes')} "
            "of tensors", "no gradients, optimizer state or saved activations: inference keeps no autograd graph")
    sections.append(Section("phases", "phases: what is alive when", b.tensor_peak_bytes, tuple(lines), text))
    sections.append(_overhead(b))
    return Explanation(m, t, b, tuple(sections), peak_line.label, tuple(notes) + b.notes)


# --- serve (memory/vllm.py: vLLM 0.11.0's profile run and KV-cache pool) -------------------------------

SRC_VLLM = "memory/vllm.py (vLLM 0.11.0 v1/worker/gpu_worker.py determine_available_memory, gpu_model_runner.py " \
    "profile_run)"
SRC_VLLM_KV = "memory/vllm.py (vLLM 0.11.0 v1/kv_cache_interface.py page_size_bytes, v1/core/kv_cache_utils.py)"


def _explain_serve(m: ModelSpec, t: TrainingSpec, b: Breakdown) -> Explanation:
    """A vLLM server: the budget's terms (weights, profile peak, KV blocks) and what stays outside it."""
    from vramcalc.core.memory import inference as inf
    from vramcalc.core.memory import vllm

    d = b.details
    s = vllm.settings(m, t)
    layout = vllm.kv_layout(m, t)
    p = vllm.profile(m, t, s)
    _, _, on_gpu = inf.weights(m, t)
    sections = [Section("parameters", "parameters", None, (
        Line("parameters.total", "parameters", "derived from the architecture", b.parameters,
             "sum of every weight tensor's elements", "params.py inventory", "count"),
        Line("parameters.on_gpu", "on one GPU", f"tp {t.tp} × pp {t.pp}", on_gpu,
             "vLLM's column/row-parallel Linears and vocab-parallel embeddings", SRC_VLLM, "count")), kind="count")]
    sections.append(Section("weights", "weights", b.weights, (
        Line("weights.base", "weights", f"{_n(on_gpu)} params ({inf.weight_dtype(t)})", d["weights.base"],
             "parameters × bytes (quantized Linears packed)", SRC_VLLM),
        Line("weights.quant_constants", "quantization constants", t.weight_dtype, d["weights.quant_constants"],
             "scales, zero points", SRC_VLLM))))
    rows = min(s.max_num_seqs, s.max_num_batched_tokens)
    sections.append(Section("activations", "activations (the profile run's peak: the larger of the two)",
                            b.activations, (
        Line("activations.profile_forward", "dummy forward", f"{_n(s.max_num_batched_tokens)} tokens × "
             f"{_n(vllm.forward_bytes_per_token(m, t))} B/token", p.forward,
             "tokens × c × (3 hidden + the MLP's gate_up and activation, or attention) ÷ tp", SRC_VLLM),
        Line("activations.profile_sampler", "dummy sampler", f"{_n(rows)} rows × vocab {_n(m.vocab_size or 0)}",
             p.sampler, "rows × vocab × (c + 26 B: fp32 logits, sort values and int64 indices, masks, softmax, "
             "scatter) + the forward's hidden states", SRC_VLLM)),
        (f"activation peak = max(forward, sampler) = {fmt_value(b.activations, 'bytes')}",)))
    per_request = vllm.blocks_per_request(layout, s, t.seq_len)
    sections.append(Section("kv_cache", "KV cache (the blocks the run's requests take)", b.kv_cache, (
        Line("kv_cache.bytes_per_token", "per token, every layer on this GPU", f"{layout.layers} layers",
             d["kv_cache.bytes_per_token"], "layers × page ÷ block_size", SRC_VLLM_KV, "per_token"),
        Line("kv_cache.block_bytes", "one block", f"page {_n(layout.page_bytes)} B × {layout.group_size} layers "
             "per group", d["kv_cache.block_bytes"],
             "2 × block_size × kv_heads × head_dim × bytes (MLA: block_size × latent) × layers per group",
             SRC_VLLM_KV),
        Line("kv_cache.total", "blocks held", f"max({t.batch_size} × {per_request} + 1 null block, one request of "
             f"max_model_len {_n(s.max_model_len)}) blocks", b.kv_cache,
             "blocks × block bytes (check_enough_kv_cache_memory needs one max_model_len request)", SRC_VLLM_KV)),
        (f"a request of max_model_len needs {fmt_value(d['kv_cache.max_model_len_request'], 'bytes')} "
         "(vLLM refuses to start below it)",)))
    phase_lines = (
        _sum_line("phases.profile", "profile run", [("weights", b.weights), ("activation peak", b.activations)],
                  SRC_VLLM),
        _sum_line("phases.serving", "serving: weights, KV blocks and a step's activations",
                  [("weights", b.weights), ("KV cache", b.kv_cache), ("activation peak", b.activations)], SRC_VLLM))
    sections.append(Section("phases", "phases: what is alive when", b.tensor_peak_bytes, phase_lines,
                            ("the serving phase wins: vLLM keeps the KV pool allocated",)))
    util = f"{s.gpu_memory_utilization:g}"
    sections.append(Section("overhead", "overhead (non-torch memory, and what stays outside the budget)",
                            b.overhead, (
        Line("overhead.non_torch", "non-torch memory", "cuBLAS/NCCL" + (", tp > 1" if t.tp * t.pp > 1 else ""),
             d["overhead.non_torch"], "approximate constant (published logs: 0.03-0.35 GiB on one GPU)", SRC_VLLM),
        Line("overhead.cuda_context", "CUDA context", "500 MiB", d["overhead.cuda_context"],
             "outside the budget: vLLM's start snapshot is taken after it", SRC_OVERHEAD),
        Line("overhead.cuda_graphs", "CUDA graphs", "enforce_eager" if t.enforce_eager else
             "piecewise + full captures × layers × 176 KiB", d["overhead.cuda_graphs"],
             "approximate; captured after the KV pool (outside the budget in 0.11)", SRC_VLLM),
        Line("overhead.utilization_reserve", "left unused by gpu_memory_utilization", f"budget ÷ {util} − budget − "
             "context − graphs", d["overhead.utilization_reserve"],
             "the smallest GPU whose utilization share covers the budget", SRC_VLLM)),
        (f"peak = the smallest GPU = max(budget ÷ {util}, budget + context + graphs) = "
         f"{fmt_value(b.peak_bytes, 'bytes')}",)))
    return Explanation(m, t, b, tuple(sections), "serving", b.notes)


# --- rendering (pure strings) ------------------------------------------------------------------------

def header(e: Explanation) -> str:
    name = e.model.display_name or e.model.name
    b = e.breakdown
    if e.training.mode == "inference":
        return f"{name} · inference · {b.parameters:,} parameters"
    if e.training.mode == "serve":
        return f"{name} · vLLM serve · {b.parameters:,} parameters"
    o = e.training.objective
    objective = "" if o == "sft" else f" · {_OBJECTIVE_LABELS.get(o, o)}"
    return (f"{name} · {METHOD_LABELS[e.training.method]}{objective} · {b.parameters:,} parameters, "
            f"{b.trainable_parameters:,} trainable")


_OBJECTIVE_LABELS = {"dpo": "DPO", "ipo": "IPO", "kto": "KTO", "reward": "reward model", "orpo": "ORPO", "cpo": "CPO",
                     "simpo": "SimPO", "grpo": "GRPO", "rloo": "RLOO",
                     "online-dpo": "Online DPO"}


def settings(t: TrainingSpec, family: str = "") -> dict[str, Any]:
    """describe.settings plus the objective's options (memory/preference.py), so --diff and JSON show them."""
    out = run_settings(t, family)
    if t.objective != "sft":
        out["objective"] = t.objective
        if rl.is_rl(t):
            out.update(ref_model=pref.resolve_ref(t) or "none", prompt_len=t.prompt_len,
                       num_generations=t.num_generations, beta=t.beta,
                       generation_rows=rl.generation_rows(t))
        if pref.is_preference(t) or t.objective == "online-dpo":
            out.update(ref_model=pref.resolve_ref(t), prompt_len=t.prompt_len)
            if pref.resolve_ref(t) == "copy":
                out["ref_dtype"] = pref.ref_weight_dtype(t, recipe_of(t))
                if t.ref_quant != "none":
                    out["ref_quant"] = t.ref_quant
    elif t.loss == "trl":
        out["prompt_len"] = t.prompt_len
    return out


def run_assumptions(t: TrainingSpec, family: str = "") -> str:
    """describe.assumptions plus the objective's (memory/preference.py, memory/reward.py)."""
    out = assumptions(t, family)
    if t.objective == "reward":
        return out + f" · objective reward (score head, {2 * t.batch_size} rows)"
    if t.objective != "sft":
        rows = pref.rows(t)
        ref = pref.resolve_ref(t) or "none"
        if ref == "copy":
            quant = {"4bit": ", 4-bit", "4bit-dq": ", 4-bit dq", "8bit": ", 8-bit"}.get(t.ref_quant, "")
            ref += f" ({pref.ref_weight_dtype(t, recipe_of(t))}{quant})"
        out += (f" · objective {t.objective} ({rows} row{'s' if rows > 1 else ''}), reference {ref}, "
                f"prompt {t.prompt_len}")
    elif t.loss == "trl":
        out += f" · prompt {t.prompt_len}"
    return out


def _sources(s: Section) -> list[str]:
    return list(dict.fromkeys(line.source for line in s.lines if line.source))


SECTION_KEYS = ("parameters", "weights", "gradients", "optimizer_state", "activations_per_layer", "activations",
                "kv_cache", "temporaries", "phases", "overhead")


def _chosen(e: Explanation, only: tuple[str, ...]) -> list[Section]:
    return [s for s in e.sections if not only or s.key in only]


def to_text(e: Explanation, unit: str = "GB", only: tuple[str, ...] = ()) -> str:
    """Plain text, one step of arithmetic per line (stable: no terminal-width dependence)."""
    out = [header(e), "assumptions: " + run_assumptions(e.training, e.model.family), ""]
    for s in _chosen(e, only):
        total = "" if s.total is None else "  " + fmt_value(s.total, s.kind, unit)
        out.append(f"{s.title.upper()}{total}")
        previous = ""
        for line in s.lines:
            steps = [line.label]
            if line.formula and line.formula != previous:
                steps.append(line.formula)
            previous = line.formula
            steps += [x for x in (line.inputs, fmt_value(line.value, line.kind, unit)) if x]
            out.append("  " + " = ".join(steps))
        out += [f"  → {t}" for t in s.text]
        out += [f"  source: {src}" for src in _sources(s)]
        out.append("")
    out.append(f"PEAK  {fmt_value(e.breakdown.peak_bytes, 'bytes', unit)} = tensors at "
               f"{e.breakdown.peak_phase.replace('_', ' ')} ({e.peak_moment}) + runtime overhead")
    out += [f"note: {n}" for n in e.notes]
    return "\n".join(out) + "\n"


def to_markdown(e: Explanation, unit: str = "GB", only: tuple[str, ...] = ()) -> str:
    """The same explanation as a Markdown document."""
    out = [f"## {header(e)}", "", f"Assumptions: {run_assumptions(e.training, e.model.family)}", ""]
    for s in _chosen(e, only):
        total = "" if s.total is None else f": {fmt_value(s.total, s.kind, unit)}"
        out += [f"### {s.title[0].upper() + s.title[1:]}{total}", "", "| term | formula | numbers | result |",
                "| --- | --- | --- | ---: |"]
        for line in s.lines:
            out.append(f"| {line.label} | {line.formula} | {line.inputs} | {fmt_value(line.value, line.kind, unit)} |")
        out.append("")
        out += [f"- {t}" for t in s.text]
        out += [f"- source: {src}" for src in _sources(s)]
        if s.text or _sources(s):
            out.append("")
    out.append(f"**Peak: {fmt_value(e.breakdown.peak_bytes, 'bytes', unit)}** = tensors at "
               f"{e.breakdown.peak_phase.replace('_', ' ')} ({e.peak_moment}) + runtime overhead")
    out += [""] + [f"- note: {n}" for n in e.notes]
    return "\n".join(out) + "\n"


def to_json(e: Explanation, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Machine-readable: integer values, stable keys."""
    return {
        "model": e.model.name,
        "settings": settings(e.training, e.model.family),
        "sections": [{"key": s.key, "title": s.title, "total": s.total, "kind": s.kind, "text": list(s.text),
                      "lines": [{"key": ln.key, "label": ln.label, "inputs": ln.inputs, "value": ln.value,
                                 "kind": ln.kind, "formula": ln.formula, "source": ln.source} for ln in s.lines]}
                     for s in _chosen(e, only)],
        "peak_bytes": e.breakdown.peak_bytes,
        "peak_phase": e.breakdown.peak_phase,
        "peak_moment": e.peak_moment,
        "notes": list(e.notes),
    }


# --- diff --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DiffRow:
    """One term in two configurations (None: absent on that side)."""

    key: str
    label: str
    kind: Kind
    a: int | None
    b: int | None

    @property
    def changed(self) -> bool:
        return (self.a or 0) != (self.b or 0)


@dataclass(frozen=True)
class Diff:
    """Two explanations compared: what settings differ and which terms changed."""

    a: Explanation
    b: Explanation
    settings: tuple[tuple[str, Any, Any], ...]
    summary: tuple[DiffRow, ...]  # components and peak, always shown
    rows: tuple[DiffRow, ...]  # every other term that changed


SUMMARY = ("parameters.trainable", "weights.total", "gradients.total", "optimizer_state.total", "activations.total",
           "temporaries.total", "overhead.total")


def diff(a: Explanation, b: Explanation) -> Diff:
    """Compare two explanations term by term (matching `Line.key`)."""
    sa, sb = settings(a.training), settings(b.training)
    if a.model.name != b.model.name:
        sa, sb = {"model": a.model.name, **sa}, {"model": b.model.name, **sb}
    if "objective" in sa or "objective" in sb:  # an SFT side lists no objective: it is sft
        sa, sb = {**sa, "objective": a.training.objective}, {**sb, "objective": b.training.objective}
    # Settings present on both sides (LoRA settings only exist for LoRA runs; the method row says that).
    changed = tuple((k, sa[k], sb[k]) for k in sa if k in sb and sa[k] != sb[k])
    la, lb = a.lines(), b.lines()
    keys = list(dict.fromkeys([*la, *lb]))

    def row(k: str) -> DiffRow:
        ref = la.get(k) or lb[k]
        return DiffRow(k, ref.label, ref.kind, la[k].value if k in la else None, lb[k].value if k in lb else None)

    summary = [row(k) for k in SUMMARY if k in la or k in lb]
    summary.append(DiffRow("peak", "peak (tensors + overhead)", "bytes", a.breakdown.peak_bytes,
                           b.breakdown.peak_bytes))
    totals = {r.key.split(".")[0]: (r.a, r.b) for r in summary}

    def shown(r: DiffRow) -> bool:  # a changed term that is not just its section's total again
        return r.changed and totals.get(r.key.split(".")[0]) != (r.a, r.b)

    rows = tuple(r for r in (row(k) for k in keys if k not in SUMMARY and not k.startswith("phases.")) if shown(r))
    return Diff(a, b, changed, tuple(summary), rows)


def change(r: DiffRow, unit: str = "GB") -> str:
    """`-14.45 GB (×0.00)`, `new`, `gone`, or `same`."""
    if not r.changed:
        return "same"
    if not r.a:
        return "new"
    if not r.b:
        return "gone"
    d = (r.b or 0) - r.a
    sign = "+" if d > 0 else "-"
    ratio = (r.b or 0) / r.a
    shown = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
    return f"{sign}{fmt_value(abs(d), r.kind, unit)} (×{shown})"


def _cell(v: int | None, kind: Kind, unit: str) -> str:
    return "—" if v is None else fmt_value(v, kind, unit)


def diff_text(d: Diff, labels: tuple[str, str], unit: str = "GB") -> str:
    """A side-by-side table of the two configurations, as plain text."""
    out = [f"A: {header(d.a)}", f"   {labels[0] or '(shared options only)'}",
           f"B: {header(d.b)}", f"   {labels[1] or '(shared options only)'}", ""]
    if d.settings:
        out.append("settings that differ: " + ", ".join(f"{k} {va} → {vb}" for k, va, vb in d.settings))
    else:
        out.append("settings that differ: none")
    out.append("")
    table = [("term", "A", "B", "change")]
    table += [(r.label, _cell(r.a, r.kind, unit), _cell(r.b, r.kind, unit), change(r, unit)) for r in d.summary]
    table.append(("", "", "", ""))
    table += [(r.label, _cell(r.a, r.kind, unit), _cell(r.b, r.kind, unit), change(r, unit)) for r in d.rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for i, row in enumerate(table):
        if not any(row):
            out.append("")
            continue
        out.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
        if i == 0:
            out.append("-" * (sum(widths) + 6 + 4))
    out += ["", f"peak phase: A {d.a.breakdown.peak_phase.replace('_', ' ')} ({d.a.peak_moment}); "
                f"B {d.b.breakdown.peak_phase.replace('_', ' ')} ({d.b.peak_moment})"]
    return "\n".join(out) + "\n"


def diff_markdown(d: Diff, labels: tuple[str, str], unit: str = "GB") -> str:
    """The side-by-side comparison as a Markdown table."""
    out = [f"**A:** {header(d.a)} (`{labels[0]}`)  ", f"**B:** {header(d.b)} (`{labels[1]}`)", ""]
    if d.settings:
        out += ["Settings that differ: " + ", ".join(f"`{k}` {va} → {vb}" for k, va, vb in d.settings), ""]
    out += ["| term | A | B | change |", "| --- | ---: | ---: | --- |"]
    out += [f"| {r.label} | {_cell(r.a, r.kind, unit)} | {_cell(r.b, r.kind, unit)} | {change(r, unit)} |"
            for r in (*d.summary, *d.rows)]
    return "\n".join(out) + "\n"


def diff_json(d: Diff, labels: tuple[str, str]) -> dict[str, Any]:
    """The comparison with integer values; `a`/`b` are null where a term is absent on that side."""
    return {
        "a": {"model": d.a.model.name, "options": labels[0], "settings": settings(d.a.training)},
        "b": {"model": d.b.model.name, "options": labels[1], "settings": settings(d.b.training)},
        "settings_changed": {k: [va, vb] for k, va, vb in d.settings},
        "terms": [{"key": r.key, "label": r.label, "kind": r.kind, "a": r.a, "b": r.b}
                  for r in (*d.summary, *d.rows)],
    }
