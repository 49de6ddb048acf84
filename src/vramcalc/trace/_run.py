"""`trace(model, training)`: set up the transformers model for the method and run the traced step."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vramcalc.core import unfrozen as _unfrozen_core
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory.precision import recipe_of, resolve_precision
from vramcalc.core.peft_methods import TABLE
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace import _cuda
from vramcalc.trace._hf import DTYPES, build_model, find_layers, model_dtype, quantize_blocks, quantize_image_side
from vramcalc.trace._optim import make_optimizer
from vramcalc.trace._step import TraceResult, _fakeify, trace_module_step


def _task_type(model: ModelSpec, training: TrainingSpec) -> str | None:
    """peft's task type: SEQ_CLS / TOKEN_CLS keep a classifier trainable (peft_model.py
    PeftModelForSequenceClassification / PeftModelForTokenClassification add "classifier" and "score" to
    modules_to_save); a masked LM has none (a plain PeftModel)."""
    from vramcalc.core.memory.encoder import is_encoder
    from vramcalc.core.memory.seq2seq import is_seq2seq

    if is_seq2seq(model):
        return "SEQ_2_SEQ_LM"
    if is_encoder(model):
        return None if training.head == "mlm" else "TOKEN_CLS" if training.head == "token-cls" else "SEQ_CLS"
    return "SEQ_CLS" if training.objective == "reward" else "CAUSAL_LM"


def _prepare(hf: torch.nn.Module, model: ModelSpec, training: TrainingSpec, notes: list[str]) -> torch.nn.Module:
    """Apply the method to the meta-device model (peft cannot move fake parameters); no fake storage yet."""
    dtype = model_dtype(resolve_precision(training))  # fake storage for every weight and buffer
    assert model.num_layers is not None
    layers = find_layers(hf, model.num_layers)
    method = training.method

    if method == "qlora" and training.quant_backend == "hqq":
        try:
            import hqq  # noqa: F401
        except ImportError:
            raise UnsupportedCombination("--quant-backend hqq: pip install hqq==0.2.8.post1 to trace it") from None
        from vramcalc.trace._hf import quantize_blocks_hqq

        n = quantize_blocks_hqq(layers, training.quant_bits, training.hqq_group_size, training.hqq_axis, dtype)
        notes.append(f"qlora hqq: {n} block Linear layers replaced by hqq's HQQLinear ({training.quant_bits}-bit, "
                     f"group {training.hqq_group_size}, axis {training.hqq_axis}, PyTorch backend; lm_head and the "
                     "rest stay 16-bit)")
    elif method == "qlora":
        # (8-bit: Linear8bitLt has no compute dtype, MatMul8bitLt runs on its input's dtype; an fp32 load under the
        # Trainer's autocast, amp-bf16, is traced as is. 4-bit over an fp32 load under autocast: TRL's default, an
        # fp32 compute dtype (trl/trainer/utils.py get_quantization_config), traced with it: _hf.py QuantLinear)
        if dtype == torch.float32 and training.quant_bits != 8 and not recipe_of(training).autocast:
            raise UnsupportedCombination("qlora needs a 16-bit compute dtype: use --precision bf16")
        from vramcalc.core.memory.preference import INT8_THRESHOLD

        # 8-bit: transformers' BitsAndBytesConfig llm_int8_threshold 6.0 → MatMul8bitLt's mixed path (_Dequant8bit)
        threshold = INT8_THRESHOLD if training.quant_bits == 8 else 0.0
        image = quantize_image_side(hf, layers, training.quant_bits, training.double_quant, dtype, threshold) \
            if model.vision is not None else 0
        n = quantize_blocks(hf, layers, training.quant_bits, training.double_quant, dtype, threshold)
        notes.append(f"qlora: {n} block Linear layers replaced by an emulated bitsandbytes "
                     f"{training.quant_bits}-bit storage (embeddings, norms, lm_head stay 16-bit)"
                     + (f", and {image} of the vision tower and projector (transformers' quantizer skips lm_head "
                        "only)" if image else ""))
        # from_pretrained with a quantization_config marks every module's config (quantizers/base.py
        # _assign_is_quantized): JambaMambaMixer then calls dt_proj as a module instead of reading its weight
        if model.family == "jamba":
            hf.config._is_quantized = True
    from vramcalc.core.memory import upcast as _upcast_core

    _upcast_core.check(model, training)
    if _upcast_core.active(training, recipe_of(training)):
        # LLaMA-Factory prepare_model_for_training (model_utils/checkpointing.py, upcast_lmhead_output), run in
        # patch_model before init_adapter: a forward hook on the 16-bit nn.Linear head returning output.to(fp32)
        head = hf.get_output_embeddings()
        assert isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32
        head.register_forward_hook(lambda _module, _args, output: output.to(torch.float32))
        notes.append("upcast logits: lm_head's output cast to fp32 by a forward hook (LLaMA-Factory "
                     "_fp32_forward_post_hook)")
    from vramcalc.core.memory import upcast_norms as _norms_core

    if _norms_core.active(training, recipe_of(training)):
        # LLaMA-Factory prepare_model_for_training (model_utils/checkpointing.py, upcast_layernorm), in patch_model
        # before init_adapter: every 1-D parameter whose name holds "norm" or "ln" (extras/constants.py
        # LAYERNORM_NAMES) cast to fp32
        for name, p in hf.named_parameters():
            if p.ndim == 1 and any(n in name for n in _norms_core.LAYERNORM_NAMES):
                p.data = p.data.to(torch.float32)
        notes.append("upcast norms: every 1-D norm parameter cast to fp32 (LLaMA-Factory upcast_layernorm)")
    if method in ("lora", "qlora"):
        from vramcalc.trace._peft import wrap_lora

        hf = wrap_lora(hf, model, training, notes, task_type=_task_type(model, training))
    elif method in TABLE:  # the other PEFT methods (core/peft_methods.py): peft's get_peft_model
        from vramcalc.trace._peft import wrap

        hf = wrap(hf, model, training)
        notes.append(f"{method}: peft {TABLE[method].peft_type} via get_peft_model")
    elif getattr(training, "badam", False):
        # BAdam's bottom block (badam block_optim.py switch_trainable_params, the worst block: memory/badam.py): only
        # layers.0 requires grad; embeddings, the other layers, the final norm and the head are frozen.
        for p in hf.parameters():
            p.requires_grad_(False)
        for p in list(layers)[0].parameters():
            p.requires_grad_(True)
        notes.append("badam: the bottom decoder layer trained, everything else frozen (BlockOptimizer's block 0)")
    elif getattr(training, "lisa_layers", None) is not None:
        # LISA (axolotl utils/callbacks/lisa.py): every parameter trainable when the Trainer builds its optimizer; the
        # callback freezes layers before each step (lisa_schedule, trace_module_step's switch)
        notes.append(f"lisa: the optimizer built over every parameter, then {training.lisa_layers} decoder layers "
                     "unfrozen per step (LISACallback), the embeddings, final norm and head trained throughout")
    elif method == "freeze" and _unfrozen_core.active(training):
        # --train-layers / --train-modules (core/unfrozen.py): requires_grad by parameter name, as axolotl's
        # freeze_layers_except and LLaMA-Factory's _setup_freeze_tuning set it (every other parameter frozen)
        trained = set(_unfrozen_core.trained_layers(model, training))
        outer = _unfrozen_core.outer_modules(model, training)
        names = [name for name, _ in hf.named_parameters()]
        for p in hf.parameters():
            p.requires_grad_(False)
        for i, block in enumerate(layers):
            for p in block.parameters():
                p.requires_grad_(i in trained)
        for mod in outer:
            target = {"embed_tokens": hf.get_input_embeddings(), "lm_head": hf.get_output_embeddings(),
                      "norm": hf.model.norm}[mod]
            for p in target.parameters():
                p.requires_grad_(True)
        if _unfrozen_core.projector_only(training) or _unfrozen_core.tower_only(training):
            # LLaMA-Factory freeze_language_model (hiyouga/LLaMA-Factory @ ff6d4d12 model/adapter.py
            # _setup_full_tuning: every parameter under the forbidden keys frozen, model_utils/visual.py
            # get_forbidden_modules): the language model and (without --train-vision) the tower frozen, the
            # projector (LLaVA / Gemma 3 multi_modal_projector, Qwen2-VL visual.merger) trained; tower_only
            # (freeze_multi_modal_projector true): the projector frozen too, the tower alone trained
            qwen = model.vision is not None and model.vision.is_qwen
            # Llama-3.2-Vision: COMPOSITE_MODELS' vision_model_keys ["vision_model"]; its language_model key takes
            # the cross-attention layers (MllamaTextModel's) too
            mllama = model.vision is not None and model.vision.is_mllama
            # Llama 4: Llama4ForConditionalGeneration holds vision_model (its pixel-shuffle vision_adapter inside) and
            # multi_modal_projector itself (COMPOSITE_MODELS["llama4"]: vision_model_keys ["vision_model"])
            root = hf if model.vision is not None and model.vision.kind == "llama4" else hf.model
            tower = hf.model.visual if qwen else root.vision_model if mllama or root is hf else hf.model.vision_tower
            for p in (tower.parameters() if training.train_vision else ()):
                p.requires_grad_(True)
            for p in (hf.model.visual.merger if qwen else root.multi_modal_projector).parameters():
                p.requires_grad_(_unfrozen_core.projector_only(training))
            if model.vision is not None and model.vision.kind == "llava_next":  # not a forbidden key: trained
                hf.model.image_newline.requires_grad_(True)
        n_trained = sum(1 for _, p in hf.named_parameters() if p.requires_grad)
        notes.append(f"train by name: layers {sorted(trained)} and {', '.join(outer) or 'no outer module'} require "
                     f"grad ({n_trained} of {len(names)} parameter tensors)")
    elif method == "freeze":
        assert training.freeze_layers is not None
        base = hf
        tied = model.tie_word_embeddings
        for p in base.get_input_embeddings().parameters():
            p.requires_grad_(False)
        for block in list(layers)[: training.freeze_layers]:
            for p in block.parameters():
                p.requires_grad_(False)
        head = base.get_output_embeddings()
        if head is not None:
            for p in head.parameters():
                p.requires_grad_(training.train_head)
        if tied and training.train_head:
            notes.append("freeze with tied embeddings: the shared embedding/head weight is trained (train_head)")
    if method == "freeze" and recipe_of(training).autocast16:
        # --precision autocast-* freeze: LLaMA-Factory's _setup_freeze_tuning casts the trained parameters to fp32
        # (hiyouga/LLaMA-Factory model/adapter.py cast_trainable_params_to_fp32), the frozen ones keep the load dtype
        for p in hf.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.float32)
        notes.append("freeze under autocast: the trained parameters cast to fp32, the frozen ones 16-bit "
                     "(LLaMA-Factory cast_trainable_params_to_fp32)")
    from vramcalc.core.memory import unsloth as _unsloth_core

    _unsloth_core.check(model, training)
    if _unsloth_core.active(model, training):  # Unsloth's kernels emulated (trace/_unsloth.py)
        from vramcalc.trace._unsloth import install

        install(hf, layers, _unsloth_core.groups(training))
        notes.append(f"kernels {training.kernels}: Fast_RMS_Layernorm, LoRA_QKV / LoRA_W / LoRA_MLP, in-place RoPE "
                     "and QLoRA's global dequantization buffer emulated, the selected groups (trace/_unsloth.py)")
    from vramcalc.core.memory import liger as _liger_core

    _liger_core.check(model, training)
    if _liger_core.active(model, training):  # Liger's layer kernels emulated (trace/_liger.py)
        from vramcalc.trace._liger import install as install_liger

        install_liger(hf, layers)
        notes.append("kernels liger: LigerRMSNormFunction, LigerSiLUMulFunction and LigerRopeFunction emulated "
                     "(trace/_liger.py)")
    from vramcalc.core.memory import axolotl_kernels as _axolotl_core

    _axolotl_core.check(model, training)
    if _axolotl_core.active(model, training):  # axolotl's LoRA kernels emulated (trace/_axolotl.py)
        from vramcalc.trace._axolotl import install as install_axolotl

        install_axolotl(layers, _axolotl_core.groups(training))
        notes.append(f"kernels {training.kernels}: axolotl's LoRA_QKV / LoRA_O / LoRA_MLP emulated, the selected "
                     "groups (trace/_axolotl.py)")
    if training.fp8 != "off":  # accelerate's torchao backend, on the prepared (peft-wrapped) model (trace/_fp8.py)
        from vramcalc.trace._fp8 import install as install_fp8

        n = install_fp8(hf, training.fp8)
        notes.append(f"fp8 {training.fp8}: {n} nn.Linear layers swapped for torchao Float8Linear (accelerate "
                     "convert_model_to_fp8_ao; trace/_fp8.py)")
    if training.grad_checkpointing:
        target = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
        # transformers' default is {"use_reentrant": False}; LLaMA-Factory passes its use_reentrant_gc (True)
        kwargs: dict[str, bool] = {"use_reentrant": training.reentrant_gc}
        if not training.ac_early_stop:  # torch utils/checkpoint.py: the non-reentrant rerun goes to the layer's end
            kwargs["early_stop"] = False
        if training.ac_offload:
            # transformers' own offload=True: save_on_cpu around each checkpoint call (trace/_save_on_cpu.py)
            target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs,
                                                   every_n_layers=training.ac_every, offload=True)
        elif training.ac_every > 1 and training.ac_layout == "hf":
            # transformers' own every_n_layers (modeling_utils.py _set_gradient_checkpointing: layer_index % k == 0)
            target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs,
                                                   every_n_layers=training.ac_every)
        else:
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if training.ac_every > 1 and training.ac_layout != "hf":
            # torchtune selective: only layers whose 1-based index is a multiple of k
            for i, block in enumerate(layers, start=1):
                if i % training.ac_every:
                    block.gradient_checkpointing = False  # type: ignore[assignment]
        if method != "full" or getattr(training, "badam", False):
            # (BAdam: LLaMA-Factory's checkpointing function marks a trainable layer's input as needing a gradient)
            # transformers/peft do this for adapters and frozen embeddings so checkpointed blocks get grads
            target.enable_input_require_grads()
    return hf


def _packed_inputs(training: TrainingSpec, vocab: int) -> Any:
    """Inputs of a packed batch: `packed` rows of two sequences each; `padding-free` one row of
    batch_size sequences of seq_len (transformers DataCollatorWithFlattening: input_ids, labels and
    position_ids, no attention_mask)."""
    b, s = training.batch_size, training.seq_len
    rows, length = (1, b * s) if training.packing == "padding-free" else (b, s)

    def make() -> dict[str, torch.Tensor]:
        if training.packing == "padding-free":
            pos = torch.arange(s, dtype=torch.long).repeat(b)
        else:
            half = max(s // 2, 1)
            pos = torch.cat([torch.arange(half), torch.arange(s - half)]).to(torch.long)
        return {"input_ids": torch.randint(0, vocab, (rows, length), dtype=torch.long),
                "labels": torch.randint(0, vocab, (rows, length), dtype=torch.long),
                "position_ids": pos.unsqueeze(0).expand(rows, length).contiguous()}

    return make


def lisa_schedule(layers: Any, n: int, notes: list[str]) -> tuple[Any, int]:
    """LISACallback.switch_active_layers made deterministic: the warm-up steps activate the layers from the bottom, n
    at a time, until every layer has been active (its optimizer states made, never freed: the worst step of
    memory/lisa.py); the reported step trains the top n. Each switch freezes every layer's parameters and
    unfreezes the chosen ones, as the callback does; the other parameters are not touched."""
    blocks = list(layers)
    total = len(blocks)
    n = min(n, total)
    top = list(range(total - n, total))
    sets = [list(range(i, i + n)) if i + n <= total else top for i in range(0, total, n)]
    sets.append(top)

    def switch(i: int) -> None:
        for block in blocks:
            for p in block.parameters():
                p.requires_grad_(False)
        for k in sets[i]:
            for p in blocks[k].parameters():
                p.requires_grad_(True)

    notes.append(f"lisa: {len(sets) - 1} warm-up step(s) over layers {sets[:-1]}, then layers {sets[-1]} reported")
    return switch, len(sets) - 1


def relora_schedule(factory: Any, notes: list[str]) -> tuple[Any, Any]:
    """(switch, optimizer factory) for an axolotl ReLoRA restart (trace/_relora.py) on_step_begin of the reported
    step (step 1: the warm-up step made the optimizer states), on the model and optimizer the step runs."""
    from vramcalc.trace._relora import restart

    held: dict[str, Any] = {}

    def make(m: torch.nn.Module) -> torch.optim.Optimizer:
        held["model"], held["optimizer"] = m, factory(m)
        return held["optimizer"]  # type: ignore[no-any-return]

    def switch(i: int) -> None:
        if i == 1:
            restart(held["model"], held["optimizer"])

    notes.append("relora: a restart before the reported step (its forward phase): every LoRA layer merged (B @ A x "
                 "scaling added in place), adapters re-initialized, Adam states magnitude-pruned (axolotl "
                 "monkeypatch/relora.py @ 067b021c, trace/_relora.py)")
    return switch, make


def trace(model: ModelSpec, training: TrainingSpec) -> TraceResult:
    """One steady-state training step of `model` under `training`, measured on fake tensors."""
    from vramcalc.core.memory.classic import is_classic

    if is_classic(model):  # ResNet, LSTM language model: plain-PyTorch models (trace/_classic.py)
        from vramcalc.trace._classic import trace_classic

        return trace_classic(model, training)
    if training.mode == "inference":  # trace/_generate.py: prefill + decode steps of generate()
        from vramcalc.trace._generate import trace_generate

        return trace_generate(model, training)
    if not model.has_architecture or model.vocab_size is None:
        raise UnsupportedCombination(f"{model.name} has no architecture; trace needs one")
    from vramcalc.core.memory import router_aux

    router_aux.check(model, training)  # the MoE router's aux loss: refused where the estimate refuses it
    if training.context_parallel > 1:  # one rank of the ring: seq_len / cp tokens, the ring (trace/_ring.py)
        from vramcalc.core.memory import context_parallel
        from vramcalc.trace import _ring

        local = context_parallel.view(model, training)
        _ring.RING[0] = training.context_parallel
        try:
            result = trace(model, dataclasses.replace(local, context_parallel=1))
        finally:
            _ring.RING[0] = 1
        return dataclasses.replace(result, notes=(*result.notes, f"context parallelism {training.context_parallel}: "
                                                  "one rank (the ring's last) on seq_len / cp tokens, axolotl's "
                                                  "batch_ring emulated in the attention (trace/_ring.py)"))
    if training.tp > 1 and training.tp_layout == "hf":  # one rank of transformers' tp_plan (trace/_tp.py)
        from vramcalc.core.memory import hf_tp
        from vramcalc.trace import _tp

        hf_tp.check(model, training)
        _tp.TP[0] = training.tp
        try:
            return trace(hf_tp.rank_view(model, training.tp),
                         dataclasses.replace(training, tp=1, gpus_per_node=1, tp_layout="megatron"))
        finally:
            _tp.TP[0] = 1
    if router_aux.active(model, training):  # --router-aux-loss: the config's output_router_logits (trace/_config.py)
        model = dataclasses.replace(model, output_router_logits=True)
    notes: list[str] = []
    precision = resolve_precision(training)
    autocast = None
    from vramcalc.core.memory import upcast_norms as _norms_core
    from vramcalc.core.memory.precision import RECIPES

    if _norms_core.autocast16(training, RECIPES[precision]):
        # the Trainer's bf16 / fp16 flag: accelerate's prepare_model wraps forward in autocast (accelerator.py
        # convert_outputs_to_fp32(autocast_context(model_forward_func))), which lets the fp32 norm outputs reach
        # the 16-bit Linears
        ac16 = torch.bfloat16 if RECIPES[precision].compute == "bf16" else torch.float16
        autocast = lambda: _cuda.cuda_autocast(ac16)  # noqa: E731
        notes.append(f"{'upcast norms: ' if training.upcast_norms else ''}{precision} weights, forward under "
                     "autocast with CUDA's op lists")
    elif precision.startswith("amp-"):
        ac_dtype = torch.bfloat16 if precision == "amp-bf16" else torch.float16
        autocast = lambda: _cuda.cuda_autocast(ac_dtype)  # noqa: E731
        notes.append(f"{precision}: fp32 weights, forward under autocast with CUDA's op lists "
                     "(weight casts cached for the forward)")
        if precision == "amp-fp16":
            notes.append("amp-fp16: GradScaler not run (its state is a few scalars)")
    vocab = model.vocab_size
    b, s = training.batch_size, training.seq_len

    def make_inputs() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
        return {"input_ids": ids, "labels": torch.randint(0, vocab, (b, s), dtype=torch.long)}

    if training.packing != "none":  # packed rows / one padding-free row, position_ids restarting per sequence
        make_inputs = _packed_inputs(training, vocab)  # noqa: F811
        notes.append(f"packing {training.packing}: position_ids restart per sequence"
                     + (" (padding-free: one row of batch x seq_len)" if training.packing == "padding-free" else ""))

    def loss_fn(m: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        # Keep only the loss; the outputs (logits) are dropped, as HF Trainer's compute_loss does.
        return m(**inputs, use_cache=False).loss  # type: ignore[no-any-return]

    from vramcalc.core.memory.encoder import is_encoder

    if is_encoder(model):  # one label per sequence (seq-cls) or a label at every position (token-cls, mlm)
        n_labels = training.num_labels

        def make_inputs() -> dict[str, torch.Tensor]:  # noqa: F811
            ids = torch.randint(0, vocab, (b, s), dtype=torch.long)
            labels = (torch.randint(0, vocab, (b, s), dtype=torch.long) if training.head == "mlm"
                      else torch.randint(0, n_labels, (b, s), dtype=torch.long) if training.head == "token-cls"
                      else torch.randint(0, n_labels, (b,), dtype=torch.long))
            if model.family == "deberta-v2":
                # DebertaV2Model builds no mask of its own dtype choice: a padding collator's int64 attention_mask
                # (DataCollatorWithPadding), all ones (memory/deberta.py counts its int64 (b, 1, s, s) expansion)
                return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones((b, s), dtype=torch.long)}
            return {"input_ids": ids, "labels": labels}

        def loss_fn(m: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:  # noqa: F811
            return m(**inputs).loss  # type: ignore[no-any-return]

        notes.append("encoder: AutoModelForMaskedLM" if training.head == "mlm" else
                     f"encoder: AutoModelForTokenClassification ({n_labels} labels)" if training.head == "token-cls"
                     else f"encoder: AutoModelForSequenceClassification ({n_labels} labels)")

    from vramcalc.core.memory.seq2seq import is_seq2seq, target_tokens

    if is_seq2seq(model):  # source ids and target labels; the model shifts the labels into decoder_input_ids
        tgt = target_tokens(training)

        def make_inputs() -> dict[str, torch.Tensor]:  # noqa: F811
            return {"input_ids": torch.randint(0, vocab, (b, s), dtype=torch.long),
                    "labels": torch.randint(0, vocab, (b, tgt), dtype=torch.long)}

        notes.append(f"encoder-decoder: AutoModelForSeq2SeqLM, {s} source and {tgt} target tokens per sequence "
                     "(decoder_input_ids: the labels shifted right)")

    if model.vision is not None and model.vision.kind == "llama4":  # trace/_llama4v.py: Llama4Processor's inputs
        from vramcalc.trace._llama4v import make_inputs as llama4_inputs

        make_inputs = llama4_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append("llama4: input_ids with every tile's <|patch|> tokens and the wrapping tokens, pixel_values of "
                     "every tile; get_placeholder_mask's count check skipped and masked_scatter emulated "
                     "(trace/_llama4v.py)")
    elif model.vision is not None and model.vision.kind == "idefics3":  # trace/_idefics3.py: Idefics3Processor's
        from vramcalc.trace._idefics3 import make_inputs as idefics3_inputs

        make_inputs = idefics3_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append("idefics3: input_ids with every tile's image tokens, pixel_values of every tile, "
                     "pixel_attention_mask; get_image_features' boolean gathers and split, the patch mask's skip and "
                     "the merger's check emulated (trace/_idefics3.py); Idefics3ForConditionalGeneration built "
                     "for SmolVLM too (the same modules and forward)")
    elif model.vision is not None and model.vision.is_qwen:  # trace/_qwen_vl.py: the Qwen2-VL processor's inputs
        from vramcalc.trace._qwen_vl import make_inputs as qwen_inputs

        make_inputs = qwen_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append(f"{model.vision.kind}: input_ids with the image pads, pixel_values (a row per patch), "
                     "image_grid_thw, mm_token_type_ids; cu_seqlens, window index, rope index and the placeholder "
                     "check emulated with the library's shapes (trace/_qwen_vl.py)")
    elif model.vision is not None and model.vision.kind == "llava_next":  # tiles and image_sizes
        from vramcalc.trace._llava_next import make_inputs as llava_next_inputs

        make_inputs = llava_next_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append("LLaVA-NeXT: input_ids with the image placeholders, pixel_values (images, tiles, 3, 336, 336), "
                     "image_sizes; the anyres helpers given the known size, get_placeholder_mask's count check "
                     "skipped and masked_scatter emulated (trace/_llava_next.py)")
    elif model.vision is not None and model.vision.is_mllama:  # trace/_mllama.py: MllamaProcessor's inputs
        from vramcalc.trace._mllama import make_inputs as mllama_inputs

        make_inputs = mllama_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append("mllama: input_ids with the <|image|> tokens, pixel_values (every image on max_num_tiles "
                     "tiles), aspect_ratio_ids / aspect_ratio_mask, cross_attention_mask (trace/_mllama.py)")
    elif model.vision is not None:  # LLaVA: placeholder tokens and pixel_values (trace/_vision.py)
        from vramcalc.trace._vision import make_inputs as vision_inputs

        make_inputs = vision_inputs(model, training, model_dtype(precision))  # noqa: F811
        notes.append("vision-language model (LlavaForConditionalGeneration / Gemma3ForConditionalGeneration): "
                     "input_ids with the image placeholders, pixel_values (Gemma 3: token_type_ids); "
                     "get_placeholder_mask's count check skipped and masked_scatter emulated (trace/_vision.py)")

    from vramcalc.core.memory.preference import is_preference, resolve_ref

    pref = is_preference(training)
    ref_kind = resolve_ref(training)
    if pref and training.dpo_head == "logits":  # torchtune's DPO recipes: the full fp32 logits (trace/_preference.py)
        from vramcalc.trace._preference import make_torchtune_dpo_inputs, torchtune_dpo_loss

        make_inputs = make_torchtune_dpo_inputs(b, s, vocab)  # type: ignore[assignment]  # noqa: F811
        loss_fn = torchtune_dpo_loss(ref_kind == "adapters-off")  # type: ignore[assignment]  # noqa: F811
        notes.append(f"dpo: torchtune's DPO recipe step emulated on the transformers model (logits .float(), "
                     f"get_batch_log_probs; trace/_preference.py); reference {ref_kind}")
    elif pref:  # TRL DPOTrainer's step (trace/_preference.py): 2B rows, the fused head, the reference
        from vramcalc.trace._preference import dpo_loss, make_dpo_inputs

        kto = training.objective == "kto"
        make_inputs = make_dpo_inputs(b, s, training.prompt_len, vocab, ref_kind == "precomputed", kto)  # type: ignore[assignment]  # noqa: F811
        if kto:
            from vramcalc.trace._preference import kto_loss

            loss_fn = kto_loss(ref_kind == "adapters-off")  # type: ignore[assignment]  # noqa: F811
        else:
            loss_fn = dpo_loss(None, ref_kind == "adapters-off", training.objective == "ipo")  # type: ignore[assignment]  # noqa: F811
        notes.append(f"{training.objective}: TRL {'KTO' if kto else 'DPO'}Trainer._compute_loss emulated "
                     f"(trace/_preference.py); reference {ref_kind}")
    elif training.objective in ("grpo", "rloo"):  # TRL GRPO/RLOOTrainer: generate() then the step (trace/_rl.py)
        from vramcalc.trace._rl import grpo_step

        traced: list[torch.nn.Module] = []
        make_inputs, loss_fn = grpo_step(training, vocab, lambda: traced[0], ref_kind == "adapters-off",  # type: ignore[assignment]  # noqa: F811
                                         autocast)
        notes.append(f"{training.objective}: TRL {training.objective.upper()}Trainer's generation "
                     "(trace/_generate.py decode, sampling; or vLLM's outputs) inside the forward phase, then "
                     "_compute_loss (trace/_rl.py); reference " + (ref_kind or "none"))
    elif training.objective == "online-dpo":  # TRL OnlineDPOTrainer: generate() then _forward (trace/_online_dpo.py)
        from vramcalc.trace._online_dpo import online_dpo_step

        traced = []
        make_inputs, loss_fn = online_dpo_step(training, vocab, lambda: traced[0], ref_kind == "adapters-off",  # type: ignore[assignment]  # noqa: F811
                                               autocast)
        notes.append("online-dpo: OnlineDPOTrainer's generation (trace/_generate.py decode, sampling, 2 per prompt) "
                     "inside the forward phase, then TRL's own _forward for the policy and the reference and "
                     "training_step's loss (trace/_online_dpo.py); reference " + ref_kind)
    elif training.objective in ("orpo", "cpo", "simpo"):  # TRL ORPO/CPOTrainer's own concatenated_forward
        from vramcalc.trace._preference import make_pair_inputs, reference_free_loss

        make_inputs = make_pair_inputs(b, s, training.prompt_len, vocab)  # type: ignore[assignment]  # noqa: F811
        loss_fn = reference_free_loss(training.objective, training.chosen_nll)  # type: ignore[assignment]  # noqa: F811
        notes.append(f"{training.objective}: TRL {'ORPO' if training.objective == 'orpo' else 'CPO'}Trainer's "
                     "concatenated_forward and loss run (trace/_preference.py), Triton's log-prob kernel emulated")
    elif training.objective == "reward":  # TRL RewardTrainer.compute_loss (trace/_preference.py)
        from vramcalc.trace._preference import reward_loss

        def make_inputs() -> dict[str, torch.Tensor]:  # noqa: F811
            return {"input_ids": torch.randint(0, vocab, (2 * b, s), dtype=torch.long)}

        loss_fn = reward_loss  # type: ignore[assignment]  # noqa: F811
        notes.append("reward: AutoModelForSequenceClassification(num_labels=1), RewardTrainer's pairwise loss")
    elif training.loss == "trl":
        from vramcalc.trace._preference import sft_trl_loss

        make_sft, loss_fn = sft_trl_loss(training.prompt_len)  # type: ignore[assignment]  # noqa: F811
        make_inputs = make_sft(b, s, vocab)  # type: ignore[assignment]  # noqa: F811
        notes.append("loss trl: TRL's fused LM head emulated (trace/_preference.py)")
    elif training.loss != "hf":  # memory savers: the loss computed from the hidden states (trace/_loss.py)
        from vramcalc.trace._loss import loss_function

        loss_fn = loss_function(training.loss, training.loss_chunks)  # type: ignore[assignment]  # noqa: F811
        notes.append(f"loss {training.loss}: trace/_loss.py (emulated kernels for fused-linear, cut and "
                     "liger-cross-entropy)")

    def optimizer_factory(m: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in m.parameters() if p.requires_grad]
        if training.optimizer_in_bwd:  # one optimizer per parameter, stepped by a hook (trace/_optim.py)
            from vramcalc.trace._optim import InBackward

            per_param = {p: make_optimizer(training, [p], m)[0] for p in params}
            notes.append("optimizer in backward: one optimizer per parameter, stepped and zeroed in its "
                         "post-accumulate-grad hook (torchtune optimizer_in_bwd)")
            return InBackward(per_param)  # type: ignore[return-value]
        opt, opt_notes = make_optimizer(training, params, m)
        notes.extend(opt_notes)
        return opt

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with _cuda.cuda_emulation(packed_mask=training.packing != "none" and training.attention != "flash") as cuda_notes:
        hf, build_notes = build_model(model, training, model_dtype(precision))  # on the meta device
        notes.extend(build_notes)
        offloaded: list[torch.nn.Module] = []
        if training.gpu_memory_limit != "none":  # accelerate's max_memory placement (core/memory/placement.py)
            from vramcalc.core.memory import placement as _placement_core

            offloaded = [hf.get_submodule(n.name) for n in _placement_core.check(model, training).cpu_leaves
                         if n.size_bytes and n.name != "model.rotary_emb"]
        from vramcalc.trace import _tp

        if _tp.TP[0] > 1:  # one rank of transformers' tp_plan: its collectives' buffers (trace/_tp.py)
            notes.extend(_tp.emulate(hf, _tp.TP[0]))
        module = _prepare(hf, model, training, notes)
        if pref or training.objective in ("orpo", "cpo", "simpo", "grpo", "rloo", "online-dpo"):
            if training.objective not in ("grpo", "rloo"):  # GRPO/RLOOConfig disable_dropout defaults to False
                for mod in module.modules():  # DPOConfig / ORPOConfig / CPOConfig disable_dropout=True
                    if isinstance(mod, torch.nn.Dropout):
                        mod.p = 0.0
            if ref_kind == "copy":
                from vramcalc.core.memory.precision import RECIPES
                from vramcalc.core.memory.preference import ref_weight_dtype
                from vramcalc.trace._preference import PolicyAndReference

                ref_dtype = DTYPES[ref_weight_dtype(training, RECIPES[precision])]
                ref, _ = build_model(model, training, ref_dtype)
                if training.ref_quant != "none":  # from_pretrained(quantization_config=...): Linear4bit/8bitLt blocks
                    from vramcalc.core.memory.preference import INT8_THRESHOLD, REF_QUANT_STORAGE

                    assert model.num_layers is not None
                    bits, dq = REF_QUANT_STORAGE[training.ref_quant]
                    n = quantize_blocks(ref, find_layers(ref, model.num_layers), bits, dq, ref_dtype,
                                        INT8_THRESHOLD if bits == 8 else 0.0)
                    notes.append(f"reference: {n} block Linear layers in emulated bitsandbytes {training.ref_quant} "
                                 f"storage (compute {ref_dtype})")
                for p in ref.parameters():
                    p.requires_grad_(False)
                for mod in ref.modules():
                    if isinstance(mod, torch.nn.Dropout) and training.objective not in ("grpo", "rloo"):
                        mod.p = 0.0
                module = PolicyAndReference(module, ref)
        if training.reward_spec is not None:  # Online DPO's reward model (trace/_online_dpo.py score)
            from vramcalc.core.memory.precision import RECIPES
            from vramcalc.core.memory.reward_scoring import weight_dtype

            reward_dtype = DTYPES[weight_dtype(training, RECIPES[precision])]
            # AutoModelForSequenceClassification(num_labels=1), as online_dpo_trainer.py __init__ loads it
            as_reward = TrainingSpec(objective="reward", attention=training.attention)  # its own: no policy options
            reward, _ = build_model(training.reward_spec, as_reward, reward_dtype)
            for p in reward.parameters():
                p.requires_grad_(False)
            module.add_module("vramcalc_reward", reward)  # tracked with the step; eval() at scoring time
            notes.append(f"online-dpo: reward model {training.reward_model} "
                         f"(AutoModelForSequenceClassification, {reward_dtype}) scored under inference_mode")
        with fake_mode:
            module = _fakeify(module)
            if offloaded:  # AlignDevicesHook(offload=True) on the CPU modules (trace/_placement.py)
                from vramcalc.trace._placement import install as install_placement

                moved = install_placement(offloaded)
                notes.append(f"gpu memory limit {training.gpu_memory_limit}: {len(offloaded)} modules ({moved:,} B) "
                             "offloaded, accelerate's AlignDevicesHook emulated (a GPU copy per forward; "
                             "trace/_placement.py)")
        if training.objective in ("grpo", "rloo", "online-dpo"):
            traced.append(module)
        if training.activation_offload:  # trace/_offload.py: torchtune OffloadActivations around the body
            from vramcalc.trace._loss import _parts
            from vramcalc.trace._offload import install

            install(_parts(module)[0])
            notes.append("activation offload: torchtune OffloadActivations emulated (trace/_offload.py)")
        vision: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if model.vision is not None and model.vision.kind == "llama4":
            from vramcalc.trace._llama4v import llama4_emulation

            vision = llama4_emulation()
        elif model.vision is not None and model.vision.kind == "idefics3":
            from vramcalc.trace._idefics3 import idefics3_emulation

            vision = idefics3_emulation(model, training)
        elif model.vision is not None and model.vision.is_qwen:
            from vramcalc.trace._qwen_vl import qwen_emulation

            vision = qwen_emulation(model, training)
        elif model.vision is not None and model.vision.kind == "llava_next":  # trace/_llava_next.py
            from vramcalc.trace._llava_next import emulation as llava_next_emulation

            vision = llava_next_emulation(model, training)
        elif model.vision is not None and model.vision.is_mllama:
            from vramcalc.trace._mllama import mllama_emulation

            vision = mllama_emulation()
        elif model.vision is not None:
            from vramcalc.trace._vision import llava_emulation

            vision = llava_emulation(fused_no_graph=True)  # the frozen tower's sdpa as CUDA runs it (trace/_cuda.py)
        switch, warmup, factory = None, 1, optimizer_factory
        if getattr(training, "lisa_layers", None) is not None:
            switch, warmup = lisa_schedule(find_layers(module, model.num_layers), training.lisa_layers, notes)
        if getattr(training, "relora", False):  # axolotl ReLoRA: a restart before the reported step (_relora.py)
            switch, factory = relora_schedule(optimizer_factory, notes)
        offload_gc: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if training.ac_offload:
            from vramcalc.trace._save_on_cpu import HOST
            from vramcalc.trace._save_on_cpu import emulation as save_on_cpu_emulation

            offload_gc = save_on_cpu_emulation()
        with vision, offload_gc:
            result = trace_module_step(module, make_inputs, loss_fn, factory,
                                       grad_accum=training.grad_accum, autocast=autocast, fake_mode=fake_mode,
                                       notes=notes, switch=switch, warmup_steps=warmup)
        if training.ac_offload:
            cuda_notes.append(f"ac offload: transformers' save_on_cpu around each checkpoint emulated "
                              f"(trace/_save_on_cpu.py); pinned host RAM peak {HOST['peak']:,} B")
        backends = sorted(set(_cuda.SDPA_BACKENDS))
    extra = list(cuda_notes)
    if training.attention != "eager":
        extra.append("sdpa backend(s) as CUDA would pick: " + (", ".join(backends) or "none"))
    extra.append("dropout: fused CUDA kernel (1-byte mask per element); p=0 returns the input")
    extra.append("model outputs dropped after the loss (only the loss is kept)")
    return TraceResult(
        peak_bytes=result.peak_bytes, peak_phase=result.peak_phase,
        by_category_at_peak=result.by_category_at_peak, phase_peaks=result.phase_peaks,
        parameters=result.parameters, trainable_parameters=result.trainable_parameters,
        notes=result.notes + tuple(extra), peak_op=result.peak_op,
    )
