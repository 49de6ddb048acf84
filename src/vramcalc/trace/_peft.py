"""peft configs for the methods of core/peft_methods.py, and wrapping a model with them (get_peft_model)."""

from __future__ import annotations

from typing import Any

import torch

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.peft_methods import MODEL_DTYPE_METHODS, TABLE, adapted_linears, adaption_layers
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace._config import LORA_NAME_MAP, lora_targets


def _module_names(model: ModelSpec, canonical: list[str]) -> list[str]:
    names = LORA_NAME_MAP.get(model.family.lower(), {})
    return sorted({names.get(c, c) for c in canonical})


def peft_config(model: ModelSpec, training: TrainingSpec) -> Any:
    """The peft config of `training.method` (a core/peft_methods.py table method) for `model`."""
    import peft

    method = training.method
    if method not in TABLE:
        raise UnsupportedCombination(f"{method} is not a core/peft_methods.py method")
    common: dict[str, Any] = {"task_type": "CAUSAL_LM"}
    if method == "ia3":
        pairs = adapted_linears(model, training)  # raises like the estimate for an unknown family / target
        targets = _module_names(model, [lin.module.rsplit(".", 1)[-1] for lin, _ in pairs])
        ff = _module_names(model, [lin.module.rsplit(".", 1)[-1] for lin, is_ff in pairs if is_ff])
        return peft.IA3Config(**common, target_modules=targets, feedforward_modules=ff)
    if method == "ln-tuning":
        return peft.LNTuningConfig(**common)
    if method == "adaption-prompt":
        return peft.AdaptionPromptConfig(**common, adapter_len=training.adapter_len,
                                         adapter_layers=adaption_layers(model, training))
    rank: dict[str, Any] = {"r": training.lora_rank, "target_modules": lora_targets(model, training.lora_targets)}
    rank_alpha: Any = training.lora_alpha
    if method == "loha":
        return peft.LoHaConfig(**common, **rank, alpha=rank_alpha)
    if method == "lokr":
        return peft.LoKrConfig(**common, **rank, alpha=rank_alpha)
    if method == "vera":
        return peft.VeraConfig(**common, **rank)
    if method == "fourierft":
        return peft.FourierFTConfig(**common, n_frequency=training.n_frequency, target_modules=rank["target_modules"])
    if method == "oft":
        return peft.OFTConfig(**common, r=0, oft_block_size=training.oft_block_size,
                              target_modules=rank["target_modules"])
    if method == "boft":  # boft_n_butterfly_factor 1 (peft's default)
        return peft.BOFTConfig(**common, boft_block_size=training.boft_block_size,
                               boft_block_num=training.boft_block_num, target_modules=rank["target_modules"])
    if method == "miss":
        return peft.MissConfig(**common, r=training.miss_rank, target_modules=rank["target_modules"])
    if method == "c3a":
        return peft.C3AConfig(**common, block_size=training.c3a_block_size, target_modules=rank["target_modules"])
    if method == "shira":
        config = peft.ShiraConfig(**common, r=training.shira_rank, target_modules=rank["target_modules"])
        config.mask_fn = _host_random_mask
        return config
    if method == "trainable-tokens":
        embedding = "wte" if model.family.lower() == "gpt2" else "embed_tokens"
        return peft.TrainableTokensConfig(token_indices=list(range(training.trainable_tokens)),
                                          target_modules=[embedding])
    common["num_virtual_tokens"] = training.virtual_tokens
    if method == "prompt-tuning":
        return peft.PromptTuningConfig(**common)
    common["encoder_hidden_size"] = training.encoder_hidden_size  # None: peft's default, the token dim
    if method == "p-tuning":
        return peft.PromptEncoderConfig(**common)
    return peft.PrefixTuningConfig(**common, prefix_projection=training.prefix_projection)


def wrap(hf: torch.nn.Module, model: ModelSpec, training: TrainingSpec) -> Any:
    """get_peft_model with the method's config; adapter weights in --adapter-dtype as peft leaves them
    (autocast_adapter_dtype: 16-bit adapter weights become fp32)."""
    from peft import get_peft_model

    wrapped = get_peft_model(hf, peft_config(model, training),
                             autocast_adapter_dtype=training.adapter_dtype == "fp32")
    if training.method in ("loha", "lokr"):
        for module in wrapped.modules():
            if hasattr(module, "_get_delta_activations") and hasattr(module, "module_dropout"):
                _run_adapters_always(module)
    if training.method == "shira":
        _indices_as_buffers(wrapped)
        for module in wrapped.modules():
            if hasattr(module, "shira_weight") and hasattr(module, "base_layer"):
                _dense_shira_forward(module)
    if training.method not in MODEL_DTYPE_METHODS:  # LN tuning's norm copies, adaption prompt: the model's dtype
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[training.adapter_dtype]
        for p in wrapped.parameters():
            if p.requires_grad and p.dtype != dtype:
                p.data = p.data.to(dtype)
    return wrapped


def _saved_module_names(hf: torch.nn.Module, wanted: tuple[str, ...]) -> list[str]:
    """peft module names of the input embedding / LM head (`embed_tokens`, `lm_head` in vramcalc's names), found
    from get_input_embeddings / get_output_embeddings so every family's own name (wte, embed_in, ...) is used."""
    from vramcalc.core.params import saved_module

    by_role = {"embed_tokens": hf.get_input_embeddings(), "lm_head": hf.get_output_embeddings()}
    names = []
    for want in wanted:
        target = by_role[saved_module(want)]
        names += [name.rsplit(".", 1)[-1] for name, mod in hf.named_modules() if mod is target][:1]
    return sorted(set(names))


def _dequantize_quant_linear() -> None:
    """DoRA on the emulated bitsandbytes layers: peft's dequantize_module_weight (peft/utils/integrations.py)
    dequantizes a Params4bit / Int8Params weight (bnb dequantize_4bit: a full out x in tensor in the compute dtype);
    our QuantLinear's packed weight is a plain Parameter, so route it to QuantLinear.dequantize, the same
    allocation."""
    import peft.tuners.lora.dora as dora

    from vramcalc.trace._hf import QuantLinear

    original = getattr(dora.dequantize_module_weight, "__wrapped__", dora.dequantize_module_weight)

    def dequantize_module_weight(module: torch.nn.Module) -> Any:
        if isinstance(module, QuantLinear):
            return module.dequantize(module.compute_dtype)
        return original(module)

    dequantize_module_weight.__wrapped__ = original  # type: ignore[attr-defined]
    dora.dequantize_module_weight = dequantize_module_weight


def wrap_lora(hf: torch.nn.Module, model: ModelSpec, training: TrainingSpec, notes: list[str],
              task_type: str | None) -> Any:
    """get_peft_model with peft's LoraConfig (use_dora, modules_to_save as the run sets them); LoRA weights in
    --adapter-dtype (autocast_adapter_dtype upcasts 16-bit adapters to fp32), the saved modules' copies in the
    model's dtype (ModulesToSaveWrapper deep-copies the module; cast_adapter_dtype touches tuner layers only)."""
    from peft import LoraConfig, get_peft_model

    from vramcalc.core.params import LM_ONLY, SAVED_MODULE_ALIASES, lm_only, outer_targets, resolve_targets
    from vramcalc.trace._config import lora_targets
    from vramcalc.trace._hf import DTYPES

    if training.dora:
        _dequantize_quant_linear()
        notes.append("dora: peft use_dora (DoraLinearLayer); QLoRA's dequantize_module_weight routed to the "
                     "emulated bitsandbytes layer")
    saved = _saved_module_names(hf, training.modules_to_save) or None
    outer = outer_targets(training.lora_targets)
    inner = tuple(t for t in training.lora_targets if t.strip().lower() not in (*SAVED_MODULE_ALIASES, LM_ONLY))
    targets = lora_targets(model, inner) if inner else []
    # the embedding / LM head by the family's own module names; all-linear spelled out beside them, and under
    # --lora-layers (peft's LoraConfig refuses layers_to_transform with a str target_modules; axolotl's
    # lora_target_linear passes the list of names); and on hqq's HQQLinear, which peft's all-linear does not match
    # (tuners_utils.py _maybe_include_all_linear_layers: nn.Linear / Conv1D only) but LLaMA-Factory's
    # find_all_linear_modules does (a class name holding "Linear"): the names, as LLaMA-Factory passes them
    if outer or training.lora_layers or training.quant_backend == "hqq":
        if isinstance(targets, str):
            names = LORA_NAME_MAP.get(model.family.lower(), {})
            targets = sorted({names.get(b, b) for b in (lin.module.rsplit(".", 1)[-1]
                                                       for lin in resolve_targets(model, inner))})
        targets = [*targets, *(_saved_module_names(hf, outer) if outer else [])]
    if model.vision is not None and not lm_only(training.lora_targets) and (
            model.vision.is_qwen or model.vision.kind in ("siglip", "idefics3", "llama4", "clip", "llava_next")
            or model.vision.is_mllama):
        # peft's own matching over the whole model, a name its suffix wherever it is: Qwen2-VL / Qwen2.5-VL
        # (memory/vision.py qwen_tower_targets: all-linear takes the tower's and the merger's Linears too), Gemma 3
        # and Idefics3 / SmolVLM (memory/siglip_lora.py: the tower's and the connector's), Llama-3.2-Vision
        # (memory/mllama.py lora_targets): the tower's q/k/v/o_proj and fc1/fc2 and the multi_modal_projector; Llama 4
        # (memory/llama4v.py lora_targets): the tower's q/k/v/o_proj, fc1/fc2 and the pixel-shuffle adapter's fc1/fc2;
        # LLaVA-1.5 and LLaVA-NeXT (memory/vision.py clip_lora_targets): the CLIP tower's q/k/v/out_proj, fc1/fc2
        # and the projector's linear_1/linear_2
        pass
    elif model.vision is not None:  # --lora-targets lm-only: the language model's Linear layers only (params.py
        # LM_ONLY: LLaMA-Factory's patch_target_modules, its full names outside the tower's and projector's keys)
        import re

        if isinstance(targets, str):
            names = LORA_NAME_MAP.get(model.family.lower(), {})
            targets = sorted({names.get(b, b) for b in (lin.module.rsplit(".", 1)[-1]
                                                       for lin in resolve_targets(model, inner))})
        inner_lm = "text_model" if model.vision.kind == "idefics3" else "language_model"  # Idefics3Model.text_model
        # Llama4ForConditionalGeneration holds language_model itself (no inner .model)
        outer_lm = "" if model.vision.kind == "llama4" else r"model\."
        targets = rf"{outer_lm}{inner_lm}\..*\.(" + "|".join(map(re.escape, targets)) + ")"  # type: ignore[assignment]
    cfg = LoraConfig(r=training.lora_rank, lora_alpha=training.lora_alpha, lora_dropout=training.lora_dropout,
                     target_modules=targets, use_dora=training.dora,
                     modules_to_save=saved,
                     # the first N token ids: which ids are trained changes no memory, only how many
                     trainable_token_indices=list(range(training.lora_trainable_tokens)) or None,
                     # --lora-layers: peft's own layer selection (tuners_utils.py check_target_module_exists)
                     layers_to_transform=list(training.lora_layers) or None,
                     task_type=task_type)  # trace/_run.py _task_type: SEQ_CLS keeps a classifier trainable
    wrapped = get_peft_model(hf, cfg, autocast_adapter_dtype=training.adapter_dtype == "fp32")
    if model.vision is not None and model.vision.kind == "llama4" and training.train_vision:
        # --train-vision under LoRA (memory/llama4v.py): the tower's own weights unfrozen after get_peft_model froze
        # every base weight (Llama4VisionModel, its pixel-shuffle adapter included)
        for p in hf.vision_model.parameters():
            p.requires_grad_(True)
        notes.append("llama4: --train-vision under LoRA: the vision tower's weights unfrozen after get_peft_model")
    dtype = DTYPES[training.adapter_dtype]
    for name, p in wrapped.named_parameters():
        if "lora_" in name and p.dtype != dtype:
            p.data = p.data.to(dtype)
    _bnb_fp32_forward(wrapped, training, 4)
    _bnb_fp32_forward(wrapped, training, 8)
    return wrapped


def _bnb_fp32_forward(wrapped: torch.nn.Module, training: TrainingSpec, bits: int) -> None:
    """LoRA over a `bits`-bit layer computing in fp32 (an fp32 load under autocast, amp-*): peft dispatches
    lora.bnb.Linear4bit / Linear8bitLt there (peft 0.21.2 tuners/lora/bnb.py), not lora.Linear, whose forward the
    tracer's QuantLinear otherwise gets. Memory-wise they differ from it by: under autocast no cast of the input to
    the adapter's dtype (the dropout runs on the fp32 input; autocast casts its output for lora_A) nor of the adapter's
    output, and for 4-bit the base output cloned ("defensively", as its comment says) before the adapters are added
    (Linear8bitLt's forward has no clone). peft tests `torch.is_autocast_enabled()` (CUDA's); the tracer's CUDA
    autocast runs as CPU autocast (trace/_cuda.py). A 4-bit layer computes in fp32 only under amp-* (_run refuses an
    fp32 compute dtype without autocast); other 8-bit runs keep lora.Linear's forward (their traces were taken with
    it; without autocast both cast the same)."""
    from vramcalc.core.memory.precision import recipe_of
    from vramcalc.trace._hf import QuantLinear

    if bits == 8 and not recipe_of(training).autocast:
        return
    for module in wrapped.modules():
        base = getattr(module, "base_layer", None)
        if not (isinstance(base, QuantLinear) and base.bits == bits and base.compute_dtype == torch.float32):
            continue
        if training.dora:
            raise UnsupportedCombination(f"DoRA over {bits}-bit layers computing in fp32 (amp-*) is not traced")

        def forward(x: torch.Tensor, *args: Any, layer: Any = module, **kwargs: Any) -> torch.Tensor:
            result: torch.Tensor = layer.base_layer(x, *args, **kwargs)
            if bits == 4:
                result = result.clone()
            autocast = torch.is_autocast_enabled("cpu")
            for name in layer.active_adapters:
                if name not in layer.lora_A.keys():
                    continue
                a, b = layer.lora_A[name], layer.lora_B[name]
                xa = x if autocast else layer._cast_input_dtype(x, a.weight.dtype)
                delta = b(a(layer.lora_dropout[name](xa))) * layer.scaling[name]
                result = result + (delta if autocast else delta.to(result.dtype))
            return result

        module.forward = forward


def _run_adapters_always(layer: Any) -> None:
    """LoHa / LoKr forward (tuners/loha/layer.py, tuners/lokr/layer.py LycorisLayer.forward) without its
    `torch.rand(1) > module_dropout` draw, which a fake tensor cannot answer: at module_dropout 0 (peft's default)
    the draw always passes, so the adapters always run, as here."""
    if any(p > 0 for p in layer.module_dropout.values()):
        raise UnsupportedCombination("module_dropout > 0 is not traced (a random draw decides whether each "
                                     "adapter runs)")

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        previous_dtype = x.dtype
        result = layer.base_layer(x, *args, **kwargs)
        for active in layer.active_adapters:
            if active in layer._available_adapters:
                result = result + layer._get_delta_activations(active, x, *args, **kwargs)
        out: torch.Tensor = result.to(previous_dtype)
        return out

    layer.forward = forward


def _host_random_mask(base_layer: Any, r: int, random_seed: int | None = None, **kwargs: Any) -> Any:
    """peft tuners/shira/mask_functions.py random_mask, drawn on the host: the meta-device model's mask cannot be
    read back by torch.where (ShiraLayer.update_layer), so the same r x (in + out) positions are drawn on the CPU."""
    from peft.tuners.shira.mask_functions import random_mask

    host = torch.nn.Linear(1, 1, bias=False, device="cpu")  # random_mask reads its shape and its weight's device
    host.in_features, host.out_features = base_layer.in_features, base_layer.out_features
    return random_mask(host, r, random_seed)


def _indices_as_buffers(wrapped: torch.nn.Module) -> None:
    """SHiRA's shira_indices is a plain dict of int32 tensors on the base weight's device (a GPU run draws the mask
    there). The host-drawn indices become a BufferDict (peft tuners/_buffer_dict.py), so the tracer gives them device
    storage like every buffer, as a run that puts the model on the GPU has them."""
    from peft.tuners._buffer_dict import BufferDict

    for module in wrapped.modules():
        indices = module.__dict__.get("shira_indices")
        if isinstance(indices, dict) and indices:
            module.shira_indices = BufferDict(dict(indices), persistent=False)


def _dense_shira_forward(layer: Any) -> None:
    """SHiRA's Linear.forward (tuners/shira/layer.py) with its sparse add written densely: the tracer cannot read a
    sparse tensor's storage, so `new_weight += sparse_coo_tensor(indices, weight * scaling)` becomes index_put_ at
    the same positions (accumulate), which holds what the sparse add does: the clone of the base weight, the
    int64 indices (sparse_coo_tensor converts the int32 ones) and the scaled values; its backward gathers the
    weight's dense gradient at those positions, as the sparse add's does."""

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        base = layer.get_base_layer()
        new_weight = base.weight.clone()
        for active in layer.active_adapters:
            if active not in layer.shira_weight.keys():
                continue
            rows, cols = layer.shira_indices[active].long()
            values = (layer.shira_weight[active] * layer.scaling[active]).to(new_weight.dtype)
            new_weight = new_weight.index_put_((rows, cols), values, accumulate=True)
        out: torch.Tensor = torch.nn.functional.linear(x, new_weight, bias=base.bias)
        return out

    layer.forward = forward
