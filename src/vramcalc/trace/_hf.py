"""Build a transformers model from a ModelSpec under FakeTensorMode and set it up for one method."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.trace._config import hf_config_dict

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_dtype(precision: str) -> torch.dtype:
    """Dtype the model weights are stored in (amp keeps fp32 weights and casts in autocast)."""
    if precision.startswith("amp-") or precision == "fp32":
        return torch.float32
    return torch.float16 if precision.endswith("fp16") else torch.bfloat16


def find_layers(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The transformer blocks: the first ModuleList with one entry per layer (model.layers, transformer.h); an
    encoder-decoder's encoder blocks then decoder blocks (T5Stack.block, BartEncoder / BartDecoder .layers)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    text = getattr(getattr(model, "model", None), "language_model", None)
    if text is None:  # Idefics3 / SmolVLM name theirs text_model
        text = getattr(getattr(model, "model", None), "text_model", None)
    if text is None and type(model).__name__ == "Llama4ForConditionalGeneration":  # no .model: language_model
        text = model.language_model
    if isinstance(text, nn.Module):  # LLaVA: the language model's blocks, not the vision tower's
        model = text

    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)
              and all(isinstance(b, GradientCheckpointingLayer) for b in m)]
    if len(stacks) == 2 and getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return nn.ModuleList([*stacks[0], *stacks[1]])
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) == n_layers:
            return m
    raise UnsupportedCombination("could not find the transformer blocks of the model")


# --- QLoRA emulation (bitsandbytes cannot run on fake tensors) ---------------------------------------
class _Dequant4bit(torch.autograd.Function):
    """bitsandbytes/autograd/_functions.py MatMul4Bit, memory only.

    forward: dequantize_4bit(B) -> (out, in) in the compute dtype (a temporary), then linear (the gemm_4bit op's
    dequantize-and-linear fallback; its fused kernel, chosen per GPU below 1,537 rows, is not emulated).
    It saves `ctx.tensors = (None, B)`: only the quantized weight, never the input (bitsandbytes
    never computes a gradient for B). backward dequantizes again for grad_A = grad_out @ W.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: QuantLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        if layer.double_quant:
            # bitsandbytes 0.50 backends/cuda/ops.py _dequant_linear_fallback (gemm_4bit past 1,536 rows): the nested
            # absmax dequantized to fp32 (absmax_dq) and `absmax_dq + offset`, both locals alive through F.linear
            absmax_dq = torch.empty(layer.absmax.shape, dtype=torch.float32, device=x.device)
            absmax = torch.empty(layer.absmax.shape, dtype=torch.float32, device=x.device)
        w = torch.empty((layer.out_features, layer.in_features), dtype=x.dtype, device=x.device)
        out = torch.nn.functional.linear(x, w, layer.bias)
        if layer.double_quant:
            del absmax_dq, absmax
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        # MatMul4Bit.backward: `dequantize_4bit(B, ctx.state).to(grad_output.dtype)`: the weight in the quant state's
        # dtype (the load dtype, the compute dtype here), then a copy in the gradient's dtype when they differ (an fp32
        # load under autocast: an fp32 weight and its bf16 copy; the output's fp32 gradient came back 16-bit through
        # Linear4bit.forward's `.to(inp_dtype)`)
        w = ctx.layer.dequantize(ctx.layer.compute_dtype)
        if w.dtype != grad_out.dtype:
            w = w.to(grad_out.dtype)
        return grad_out @ w, None


class _Dequant8bit(torch.autograd.Function):
    """bitsandbytes 0.50 MatMul8bitLt (autograd/_functions.py) for a frozen Linear8bitLt (has_fp16_weights False).

    forward: threshold > 0 (BitsAndBytesConfig's llm_int8_threshold 6.0, QLoRA and an 8-bit reference): `mixed`;
    threshold 0 (generate()'s int8 weights): int8 rows, row stats, the int32 product and the output. When the input
    needs a gradient it keeps `ctx.tensors = (CAt, subA, A)`: A is the 2-D view of the input, held as a ctx attribute
    (not save_for_backward, so checkpointing's saved-tensor hooks never see it); CAt is None (the weight needs no
    gradient) and subA is empty without outliers. backward: grad_A = grad_output @ CB.to(dtype_A).mul_(SCB / 127).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: QuantLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        rows = x.numel() // x.shape[-1]
        # MatMul8bitLt.forward: `if any(ctx.needs_input_grad[:2]): ctx.tensors = (CAt, subA, A)`
        ctx.tensors = (x.reshape(rows, x.shape[-1]),) if ctx.needs_input_grad[0] else ()
        if layer.int8_threshold > 0:
            return _Dequant8bit.mixed(x, layer, rows)
        ca = torch.empty((rows, x.shape[-1]), dtype=torch.int8, device=x.device)  # int8_vectorwise_quant
        sca = torch.empty((rows,), dtype=torch.float32, device=x.device)
        out_i32 = torch.empty((rows, layer.out_features), dtype=torch.int32, device=x.device)  # int8_linear_matmul
        out = torch.empty((*x.shape[:-1], layer.out_features), dtype=x.dtype, device=x.device)
        del ca, sca, out_i32
        return out

    @staticmethod
    def mixed(x: torch.Tensor, layer: QuantLinear, rows: int) -> torch.Tensor:
        """bitsandbytes 0.50 MatMul8bitLt.forward with threshold > 0 (BitsAndBytesConfig's 6.0), in allocation order:
        int8_vectorwise_quant(A.to(float16)) (backends/cuda/ops.py: row_stats, out_row, then `A.abs() >= threshold`),
        int8_mixed_scaled_mm → int8_scaled_mm (backends/default/ops.py: int8_linear_matmul's int32 product, then
        int8_mm_dequant's fp16 output and `.to(dtype)`). The outlier columns (data-dependent) are left out."""
        dev = x.device
        a16 = x.reshape(rows, x.shape[-1]).to(torch.float16)
        sca = torch.empty((rows,), dtype=torch.float32, device=dev)
        ca = torch.empty((rows, x.shape[-1]), dtype=torch.int8, device=dev)
        outliers = a16.abs() >= layer.int8_threshold
        del outliers, a16
        out_i32 = torch.empty((rows, layer.out_features), dtype=torch.int32, device=dev)
        out16 = torch.empty((rows, layer.out_features), dtype=torch.float16, device=dev)
        out = out16.to(x.dtype)
        del out_i32, out16, ca, sca
        return out.reshape(*x.shape[:-1], layer.out_features)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        # MatMul8bitLt.backward (req_gradA): `CB = state.CB.to(ctx.dtype_A, copy=True).mul_(state.SCB.unsqueeze(1)
        # .mul(1.0 / 127.0))` (the scale an fp32 column, freed after mul_), then matmul(grad_output.to(dtype_A), CB)
        w = ctx.layer.dequantize(grad_out.dtype)
        scale = torch.empty((ctx.layer.out_features, 1), dtype=torch.float32, device=grad_out.device)
        del scale
        return grad_out @ w, None


class QuantLinear(nn.Linear):
    """Storage of a bitsandbytes Linear4bit / Linear8bitLt, as fake tensors (a subclass of nn.Linear
    so that peft wraps it like any Linear).

    4-bit (bitsandbytes/functional.py quantize_4bit, blocksize 64): packed uint8 weight of numel/2
    bytes; absmax fp32 per 64-element block, or with double quantization uint8 absmax per block +
    fp32 absmax per 256 blocks (state2) + an fp32 offset; a 16-entry fp32 code table per weight.
    8-bit (Int8Params): int8 weight + fp32 scale per output row (SCB).
    """

    def __init__(self, base: nn.Linear, bits: int, double_quant: bool, compute_dtype: torch.dtype,
                 int8_threshold: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.int8_threshold = int8_threshold  # 8-bit: > 0 emulates LLM.int8's mixed path (_Dequant8bit.mixed)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.bits, self.compute_dtype = bits, compute_dtype
        n = self.in_features * self.out_features
        dev = base.weight.device
        self.quant_tensors: list[str] = []
        if bits == 4:
            blocks = math.ceil(n / 64)
            self.weight = nn.Parameter(torch.empty((n + 1) // 2, 1, dtype=torch.uint8, device=dev),
                                       requires_grad=False)
            if double_quant:
                self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=dev))
                self.register_buffer("absmax2", torch.empty(math.ceil(blocks / 256), dtype=torch.float32,
                                                            device=dev))
                self.register_buffer("offset", torch.empty((), dtype=torch.float32, device=dev))
            else:
                self.register_buffer("absmax", torch.empty(blocks, dtype=torch.float32, device=dev))
            self.register_buffer("code", torch.empty(16, dtype=torch.float32, device=dev))
            self.double_quant = double_quant
        else:
            self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, dtype=torch.int8,
                                                   device=dev), requires_grad=False)
            self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32, device=dev))
            self.double_quant = False
        self.bias = base.bias

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        if self.bits == 4 and self.double_quant:
            # functional.py dequantize_4bit: the nested absmax is dequantized to fp32 first.
            _absmax = torch.empty(self.absmax.shape, dtype=torch.float32, device=self.weight.device)
        return torch.empty((self.out_features, self.in_features), dtype=dtype, device=self.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        if self.bits == 4:  # Linear4bit.forward casts the input to compute_dtype; Linear8bitLt.forward does not
            x = x.to(self.compute_dtype)  # (bitsandbytes 0.50 nn/modules.py: bnb.matmul(x, ...) on x as it comes)
        if self.bits == 4 and x.numel() == x.shape[-1] and not x.requires_grad:
            # autograd/_functions.py matmul_4bit: one row without grad runs gemv_4bit on the packed weight
            return torch.empty((*x.shape[:-1], self.out_features), dtype=x.dtype, device=x.device)
        fn = _Dequant4bit if self.bits == 4 else _Dequant8bit
        out: torch.Tensor = fn.apply(x, self)
        if self.bits == 4 and self.compute_dtype == torch.float32:
            # Linear4bit.forward returns `matmul_4bit(...).to(inp_dtype)`: with an fp32 compute dtype under autocast
            # (an fp32 load, amp-*) gemm_4bit's F.linear returns 16-bit and this is its fp32 copy for an fp32 input.
            # (Left out for 16-bit compute dtypes, whose grids were traced without it: a no-op for their 16-bit
            # inputs, an fp32 output copy missed under --upcast-norms)
            out = out.to(inp_dtype)
        return out


def quantize_blocks(model: nn.Module, layers: nn.ModuleList, bits: int, double_quant: bool,
                    compute_dtype: torch.dtype, int8_threshold: float = 0.0) -> int:
    """Replace every nn.Linear inside the blocks by a QuantLinear (bitsandbytes' rule: not lm_head). Zamba2: not the
    Linears transformers' quantizer skips (quantizers/base.py get_keys_to_not_convert: every tied key, which are the
    shared blocks' weights; quantizers_utils.py should_convert_module)."""
    keep: set[int] = set()
    if type(model).__name__.startswith("Zamba2"):
        from transformers.quantizers.base import HfQuantizer
        from transformers.quantizers.quantizers_utils import should_convert_module

        skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
        keep = {id(mod) for name, mod in model.named_modules() if not should_convert_module(name, skip)}
    count = 0
    for block in layers:
        for name, mod in list(block.named_modules()):
            if id(mod) in keep:
                continue
            if type(mod) is nn.Linear or type(mod).__name__ == "Conv1D":
                if type(mod).__name__ == "Conv1D":  # GPT-2 stores weight as (in, out)
                    base = nn.Linear(mod.weight.shape[0], mod.weight.shape[1], bias=False, device="meta")
                    base.bias = mod.bias
                else:
                    base = mod
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                setattr(parent, name.rsplit(".", 1)[-1], QuantLinear(base, bits, double_quant, compute_dtype,
                                                                     int8_threshold))
                count += 1
    return count


def _traced_hqq_class() -> type:
    """hqq's HQQLinear with its scale and zero also registered as buffers (a subclass, so peft's dispatch_hqq still
    wraps it in HqqLoraLinear): HQQLinear keeps them in a plain `meta` dict, which the tracer's fake storage
    (trace/_step.py _fakeify: parameters and buffers) would not reach. dequantize() reads them back into the dict
    and runs hqq's own Quantizer.dequantize."""
    from hqq.core.quantize import HQQLinear

    class TracedHQQLinear(HQQLinear):  # type: ignore[misc]
        def dequantize(self) -> torch.Tensor:
            self.meta["scale"], self.meta["zero"] = self.hqq_scale, self.hqq_zero
            return super().dequantize()  # type: ignore[no-any-return]

    return TracedHQQLinear


def quantize_blocks_hqq(layers: nn.ModuleList, bits: int, group_size: int, axis: int,
                        compute_dtype: torch.dtype) -> int:
    """Replace every nn.Linear (subclasses too) in the blocks by hqq's own HQQLinear, as transformers 4.x quantizers/
    quantizer_hqq.py create_quantized_param builds it (`HQQLinear(module, quant_config, compute_dtype=torch_dtype,
    device, del_orig=True)`, the bias a Parameter; HqqConfig's skip_modules ["lm_head"]), on the meta device.
    Quantizer.quantize runs with optimize=False: the proximal optimizer's early stop reads tensor values, which
    meta tensors do not have; it changes the values, not the storage (W_q, scale, zero keep their shapes)."""
    from hqq.core.quantize import BaseQuantizeConfig

    cls = _traced_hqq_class()
    cfg = BaseQuantizeConfig(nbits=bits, group_size=group_size, axis=axis)
    cfg["weight_quant_params"]["optimize"] = False
    count = 0
    for block in layers:
        for name, mod in list(block.named_modules()):
            # transformers 4.x integrations/hqq.py _prepare_for_hqq_linear takes `isinstance(module, nn.Linear)`:
            # subclasses too (Falcon's FalconLinear), unlike transformers 5's bitsandbytes rule (quantize_blocks)
            if not isinstance(mod, nn.Linear):
                continue
            q = cls(mod, cfg, del_orig=True, compute_dtype=compute_dtype, device=mod.weight.device)
            q.register_buffer("hqq_scale", q.meta.pop("scale"))
            q.register_buffer("hqq_zero", q.meta.pop("zero"))
            if isinstance(q.bias, torch.Tensor):
                q.bias = nn.Parameter(q.bias, requires_grad=False)
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            setattr(parent, name.rsplit(".", 1)[-1], q)
            count += 1
    return count


def quantize_image_side(model: nn.Module, layers: nn.ModuleList, bits: int, double_quant: bool,
                        compute_dtype: torch.dtype, int8_threshold: float = 0.0) -> int:
    """A vision-language model's other Linears (the tower's, the projector's) as transformers' bitsandbytes quantizer
    replaces them (integrations/bitsandbytes.py replace_with_bnb_linear: `type(module) is nn.Linear` whose name
    quantizers_utils.py should_convert_module keeps, against quantizers/base.py get_modules_to_not_convert with the
    model's _keep_in_fp32_modules, as quantizer_bnb_4bit.py _process_model_before_weight_loading calls it); the text
    blocks (`layers`) are quantize_blocks'. Call before quantize_blocks: the skip list reads the model as built."""
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    inside = {id(m) for block in layers for m in block.modules()}
    count = 0
    for name, mod in list(model.named_modules()):
        if type(mod) is nn.Linear and id(mod) not in inside and should_convert_module(name, skip):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], QuantLinear(mod, bits, double_quant, compute_dtype,
                                                                 int8_threshold))
            count += 1
    return count


def build_model(model: ModelSpec, training: TrainingSpec, dtype: torch.dtype) -> tuple[nn.Module, list[str]]:
    """A transformers causal LM (a 1-label sequence classifier for --objective reward) with meta-device
    weights (fakeified by the caller)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    notes: list[str] = []
    d = hf_config_dict(model)
    model_type = d.pop("model_type")
    config = AutoConfig.for_model(model_type, **d)
    config.use_cache = False
    auto: Any = AutoModelForCausalLM
    from vramcalc.core.memory.encoder import is_encoder
    from vramcalc.core.memory.seq2seq import is_seq2seq

    if model.vision is not None:  # LlavaForConditionalGeneration (trace/_vision.py, memory/vision.py)
        from transformers import AutoModelForImageTextToText

        auto = AutoModelForImageTextToText  # LlavaForConditionalGeneration for a LlavaConfig
    elif is_seq2seq(model):  # T5ForConditionalGeneration / BartForConditionalGeneration (memory/seq2seq.py)
        from transformers import AutoModelForSeq2SeqLM

        auto = AutoModelForSeq2SeqLM
    elif is_encoder(model):  # memory/encoder.py: the run's task head
        from transformers import AutoModelForMaskedLM, AutoModelForTokenClassification

        auto = (AutoModelForMaskedLM if training.head == "mlm" else AutoModelForTokenClassification
                if training.head == "token-cls" else AutoModelForSequenceClassification)
        config.num_labels = training.num_labels
        if model.family == "deberta-v2" and training.head not in ("mlm", "token-cls"):
            # DebertaV2ForSequenceClassification without a problem_type picks the labelled rows with nonzero(), a
            # data-dependent shape FakeTensorMode cannot trace; single_label_classification is the same cross-entropy
            # on (batch, num_labels) logits (bytes per sequence, not per token)
            config.problem_type = "single_label_classification"
    elif training.objective == "reward":  # trl reward_trainer.py: num_labels=1; the pad token finds the last token
        config.num_labels, config.pad_token_id = 1, 0
        auto = AutoModelForSequenceClassification
    from vramcalc.core.memory.activations import eager_only

    # flash_attention_2 needs the flash-attn package and CUDA: traced as sdpa's flash kernel, with the
    # packed-sequence mask never built (trace/_cuda.py cuda_emulation(packed_mask=False)); varlen
    # keeps the same q, k, v, out and logsumexp per token.
    impl = "sdpa" if training.attention == "flash" else training.attention
    if eager_only(model) and impl != "eager":  # BLOOM (ALiBi), Gemma 2 (_supports_sdpa = False)
        impl = "eager"
        notes.append(f"{model_type} has no SDPA attention in transformers: traced eager")
    from vramcalc.core.params import is_ssm

    if is_ssm(model):  # no attention at all (memory/ssm.py): transformers refuses sdpa for MambaForCausalLM
        impl = "eager"
    with torch.device("meta"):
        hf = auto.from_config(config, dtype=dtype, attn_implementation=impl)
    if model.vision is not None and model.vision.is_qwen:  # the tower frozen, the merger trained as a projector
        if not training.train_vision:
            for name, p in hf.model.visual.named_parameters():
                if not name.startswith("merger."):
                    p.requires_grad_(False)
            notes.append(f"{model.vision.kind}: vision tower frozen (the merger as LLaVA's projector); LoRA "
                         "targets matched by peft over the whole model (all-linear: the tower's and merger's too)")
    elif model.vision is not None and model.vision.is_mllama:  # Llama-3.2-Vision: the tower frozen
        if not training.train_vision:
            for p in hf.model.vision_model.parameters():
                p.requires_grad_(False)
            notes.append("mllama: vision tower frozen; LoRA targets matched by peft over the whole model "
                         "(all-linear: the tower's Linears and the projector too)")
    elif model.vision is not None and model.vision.kind == "llama4":  # Llama 4 (memory/llama4v.py): the tower
        if not training.train_vision:  # (its pixel-shuffle adapter included) frozen; the projector trained with
            for p in hf.vision_model.parameters():  # full fine-tuning (Llama4ForConditionalGeneration
                p.requires_grad_(False)  # .multi_modal_projector)
        notes.append("llama4: vision tower (Llama4VisionModel, the adapter included) "
                     + ("trained" if training.train_vision else "frozen") + "; LoRA targets matched by peft over "
                     "the whole model (q/k/v/o_proj and fc1/fc2 reach the tower and the adapter's MLP)")
    elif model.vision is not None and model.vision.kind == "idefics3":  # Idefics3 / SmolVLM (memory/idefics3.py)
        if not training.train_vision:  # the tower frozen, the connector trained with full fine-tuning
            for p in hf.model.vision_model.parameters():
                p.requires_grad_(False)
        notes.append("idefics3: vision tower " + ("trained" if training.train_vision else "frozen")
                     + "; LoRA targets the language model only")
    elif model.vision is not None and not training.train_vision:  # the tower frozen, as LLaVA-1.5's recipe
        for p in hf.model.vision_tower.parameters():
            p.requires_grad_(False)
        notes.append(f"{model_type}: vision tower frozen; LoRA targets matched by peft over the whole model "
                     "(q_proj, v_proj, all-linear: the CLIP tower's and the projector's Linears too)")
    if getattr(training, "add_tokens", 0) or getattr(training, "vocab_multiple", 1) > 1:  # memory/new_tokens.py
        assert model.vocab_size is not None
        # transformers' own resize (new embedding, untied lm_head resized, tied again); mean_resizing only sets the
        # new rows' values (its covariance of the old rows is a load-time transient, not in the step)
        hf.resize_token_embeddings(model.vocab_size + training.add_tokens, mean_resizing=False,
                                   pad_to_multiple_of=training.vocab_multiple if training.vocab_multiple > 1 else None)
        notes.append(f"new tokens: resize_token_embeddings({model.vocab_size} + {training.add_tokens}, "
                     f"pad_to_multiple_of={training.vocab_multiple}) -> "
                     f"{hf.get_input_embeddings().weight.shape[0]} rows")
    return hf, notes
