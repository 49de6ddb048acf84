"""axolotl's own LoRA kernels (`--kernels axolotl:qkv,o,mlp`; axolotl's lora_qkv_kernel / lora_o_kernel /
lora_mlp_kernel keys, which axolotl turns on by itself for LoRA / QLoRA): what a decoder layer saves for backward when
axolotl's LoRA autograd functions replace peft's layers (transformers' norms, RoPE and attention unchanged).

Read from axolotl-ai-cloud/axolotl at commit 067b021c8b87a9e5e380b9173c704cf7340e30f5 (2026-07-24):

* src/axolotl/kernels/lora.py matmul_lora: `out = torch.matmul(X, W)` then `out.addmm_(X_lora @ A, B, alpha=s)`, in
  place (since 69f6d8ba, 2026-06-05, "lora kernel memory improvement"; before it `out += s * X @ A @ B` made an
  output-sized temporary per projection: that older version is not modelled); a QLoRA weight is dequantized into a
  fresh tensor (kernels/quantize.py _ctypes_nf4_dequant: the weight and an fp32 absmax) and freed after the matmul:
  no global buffer (Unsloth's matmul_lora keeps one).
* LoRA_QKV.forward (no DoRA): `ctx.save_for_backward(X, X_drop if has_dropout else X, q_A.to(dtype), q_B.to(dtype),
  ...)`: the normed input once (the same tensor twice without dropout) and each adapter cast to the compute dtype (a
  copy when the adapters are fp32). Backward: `grad_X = torch.mm(q_grad, q_weight_t)`, a new tokens x hidden tensor
  (not written into the saved X as Unsloth does), then addmm_ for k, v and the adapters.
* lora_dropout > 0: apply_lora_qkv / apply_lora_o / apply_lora_mlp_swiglu call _apply_dropout(dropout, X) outside the
  Function (one mask per group); the Function saves X_drop in X's place for the adapters, and backward returns a new
  dX_drop (`torch.zeros_like(X_lora)` then addmm_; LoRA_O: `grad_B @ A * s`).
* LoRA_O.forward: `save_for_backward(A.to(dtype), B.to(dtype), X, X, lora_bias)`: X is the attention output, the
  same storage the attention saves. Backward: dX = dY @ W (new).
* LoRA_MLP.forward with swiglu (kernels/swiglu.py swiglu_forward: a new `out`): gate and up through matmul_lora,
  hidden = swiglu(gate, up), output through matmul_lora; `save_for_backward(X, X, gate, up, the six adapters cast)`.
  Backward: grad_down = matmul_lora(grad_output, down^T) (a new tokens x intermediate tensor), swiglu_backward in
  place into grad_down, gate and up, then `dX = torch.matmul(grad_up, up_weight_deq.t())`: a new tokens x hidden
  tensor while X, gate, up, grad_down and the incoming gradient are alive.
* monkeypatch/lora_kernels.py apply_lora_kernel_patches: per layer, apply_qkv / apply_o / the MLP's forward are set
  to the kernels when every projection of the group carries a LoRA adapter (`hasattr(module, "lora_A")`), else
  peft's layers stay (a warning); lora_mlp_kernel raises NotImplementedError for an activation other than silu /
  gelu. Base-layer biases (Qwen2's q/k/v) are added in place (`out += b`). patch_self_attn_lora rewrites the
  attention class's forward source (QKV_PATCHES: the plain and the q_norm / k_norm forms: Llama, Mistral, Qwen2,
  Qwen3).
* utils/schemas/config.py check_auto_enable_lora_kernels: for adapter lora / qlora, not rl, none of the four
  lora_*_kernel keys set, not LoRA with load_in_8bit, not trust_remote_code, not multi-GPU FSDP1: all of
  lora_mlp_kernel, lora_qkv_kernel, lora_o_kernel, lora_embedding_kernel set true (io/runfiles.py applies it).
  lora_embedding_kernel patches only an embed_tokens that carries a LoRA adapter (_patch_embedding_layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.memory import activations as _activations
from vramcalc.core.memory.activations import LayerActivations, Term
from vramcalc.core.memory.precision import RECIPES, Recipe, resolve_precision
from vramcalc.core.memory.unsloth import GROUP_PROJECTIONS, refuse_explicit_kernels
from vramcalc.core.params import block_linears, resolve_targets
from vramcalc.core.units import dtype_bytes
from vramcalc.core.vocab import parse_axolotl_kernels

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# The models whose attention forward patch_self_attn_lora rewrites (QKV_PATCHES) with a SiLU-gated MLP
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SOURCE = "axolotl kernels/lora.py (LoRA_QKV, LoRA_O, LoRA_MLP), monkeypatch/lora_kernels.py"
# The LoRA-side names of each group's projections (the same as Unsloth's groups)
PROJECTIONS = {g: GROUP_PROJECTIONS[g] for g in ("qkv", "o", "mlp")}


def groups(t: TrainingSpec) -> tuple[str, ...]:
    """The axolotl kernel groups --kernels selects (core/vocab.py parse_axolotl_kernels); () for any other value."""
    return parse_axolotl_kernels(t.kernels) or ()


def why_not(m: ModelSpec, t: TrainingSpec) -> str | None:
    """Why axolotl's LoRA kernels are not modelled for this run (None: they are)."""
    if t.mode != "train":
        return "they are modelled for training (--mode train)"
    if t.method not in ("lora", "qlora"):
        return "axolotl's LoRA kernels need --method lora or qlora"
    if m.family not in FAMILIES:
        return (f"{m.name} is a {m.family} model; modelled for {', '.join(FAMILIES)} (the attention forms "
                "patch_self_attn_lora rewrites, a SiLU-gated MLP)")
    if m.num_experts or m.mlp != "gated" or m.hidden_act not in ("silu", "swish") or m.fused_gate_up \
            or m.fused_qkv or m.dropout > 0:
        return f"{m.name}'s layers differ from a Llama layer (SiLU-gated MLP, separate q/k/v, no MoE, no dropout)"
    if t.method == "qlora" and t.quant_bits != 4:
        return "modelled for 4-bit QLoRA (axolotl does not turn them on for 8-bit LoRA)"
    if t.objective != "sft":
        return "modelled for supervised fine-tuning (--objective sft; axolotl does not turn them on for rl)"
    adapted = {lin.module.rsplit(".", 1)[-1] for lin in resolve_targets(m, t.lora_targets)}
    for g in groups(t):
        if not set(PROJECTIONS[g]) <= adapted:
            return (f"axolotl runs the {g} kernel only when {','.join(PROJECTIONS[g])} all carry an adapter (else "
                    "peft's layers, with a warning): add them to --lora-targets, or drop the group")
    if t.dora:
        return "modelled without DoRA (axolotl's kernels then also save DoRA's combined outputs and scales)"
    recipe = RECIPES[resolve_precision(t)]
    if recipe.autocast or recipe.compute == "fp32":
        return "modelled in 16 bits: use --precision bf16 or fp16 (not amp-* or fp32)"
    if t.tp > 1 or t.pp > 1 or t.sequence_parallel:
        return "modelled without tensor, pipeline or sequence parallelism"
    return None


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """Refuse `--kernels axolotl:GROUPS` given explicitly where it is not modelled (a run file's auto-enabled
    kernels fall back with a note)."""
    refuse_explicit_kernels(m, t, bool(groups(t)), why_not)


def active(m: ModelSpec, t: TrainingSpec) -> bool:
    return bool(groups(t)) and why_not(m, t) is None


def notes(m: ModelSpec, t: TrainingSpec) -> tuple[str, ...]:
    chosen = groups(t)
    if not chosen:
        return ()
    reason = why_not(m, t)
    if reason is not None:
        return (f"kernels {t.kernels} (from the stack or run file) not counted: {reason}; peft's layers counted "
                "instead",)
    what = {"qkv": "LoRA_QKV saves the normed input once (not each adapter's fp32 copy)",
            "o": "LoRA_O saves the attention output it shares with the attention",
            "mlp": "LoRA_MLP saves the normed input and the gate and up outputs (no SiLU output or product)"}
    return (f"kernels {t.kernels}: axolotl's LoRA autograd functions: " + "; ".join(what[g] for g in chosen)
            + "; each saves its adapters cast to the compute dtype, and its backward allocates a new input gradient "
            "(axolotl kernels/lora.py at 067b021c, matmul_lora's in-place addmm_).",)


def own_term(name: str) -> bool:
    """A layer term axolotl's kernels give (not transformers' / peft's)."""
    return "LoRA_" in name


def _adapter_copies(m: ModelSpec, t: TrainingSpec, recipe: Recipe, chosen: tuple[str, ...]) -> int:
    """Bytes per layer of the adapters each kernel saves cast to the compute dtype (`A.to(dtype)`, `B.to(dtype)`: a
    copy only when the adapters are stored in another dtype, --adapter-dtype fp32 by default)."""
    if t.adapter_dtype == recipe.compute:
        return 0
    c = dtype_bytes(recipe.compute)
    mods = {x for g in chosen for x in PROJECTIONS[g]}
    r = t.lora_rank
    return sum(c * r * (lin.in_features + lin.out_features) for lin in block_linears(m)
               if lin.module.rsplit(".", 1)[-1] in mods)


def layer_activations(m: ModelSpec, t: TrainingSpec, recipe: Recipe, trainable_weights: bool = False,
                      input_grad: bool = True) -> LayerActivations:
    """One decoder layer's saved tensors and transients under axolotl's LoRA kernels (bytes per token, see the module
    docstring for each source): transformers' / peft's terms (memory/activations.py) with the selected groups'
    adapter inputs replaced by what their autograd functions save. The base weights are frozen."""
    assert m.hidden_size is not None and m.intermediate_size is not None
    chosen = groups(t)
    c = dtype_bytes(recipe.compute)
    h, i = m.hidden_size, m.intermediate_size
    hf = _activations.layer_activations(m, t, recipe, trainable_weights=False, input_grad=input_grad)
    peft_names = {g: tuple(f"lora {x} input" for x in PROJECTIONS[g]) for g in PROJECTIONS}
    terms: list[Term] = []
    for x in hf.terms:
        if "qkv" in chosen and x.name in peft_names["qkv"]:
            if x.name == peft_names["qkv"][0]:
                terms.append(Term("q/k/v input: the normed hidden states (LoRA_QKV)", c * h))
            continue
        if "o" in chosen and x.name in peft_names["o"]:
            continue  # LoRA_O saves the attention output: the attention's own saved out
        if "mlp" in chosen and (x.name in peft_names["mlp"] or x.name.startswith("mlp act")):
            continue
        terms.append(x)
    if t.lora_dropout > 0:
        # _apply_dropout outside the Function (apply_lora_qkv / apply_lora_o / apply_lora_mlp_swiglu: one shared
        # mask per group): the Function saves X_drop, native_dropout's backward its 1-byte mask (only where the
        # input needs a gradient: not the bottom layer's q/k/v input without checkpointing)
        q_in = next(lin.in_features for lin in block_linears(m) if lin.module.rsplit(".", 1)[-1] == "o_proj")
        mask = 1 if input_grad else 0
        if "qkv" in chosen:
            terms.append(Term("q/k/v dropped input + dropout mask (LoRA_QKV X_drop)", c * h + mask * h))
        if "o" in chosen:
            terms.append(Term("o dropped input + dropout mask (LoRA_O X_drop)", c * q_in + q_in))
    copies = _adapter_copies(m, t, recipe, chosen)
    if copies:
        terms.append(Term("adapters cast to the compute dtype (LoRA_* save A.to(dtype), B.to(dtype))", 0,
                          const=copies))
    if "mlp" not in chosen:
        return LayerActivations(tuple(terms), hf.forward_transient, hf.backward_transient,
                                mlp_saved_per_token=hf.mlp_saved_per_token, mlp_tail_per_token=hf.mlp_tail_per_token,
                                mlp_forward_per_token=hf.mlp_forward_per_token)
    terms.append(Term("mlp input, gate and up outputs (LoRA_MLP X, gate, up)", c * h + 2 * c * i))
    if t.lora_dropout > 0:
        terms.append(Term("mlp dropped input + dropout mask (LoRA_MLP X_drop)", c * h + h))
    mlp_start = next(k for k, x in enumerate(terms) if x.name.startswith("mlp norm"))
    mlp_saved = sum(x.per_token for x in terms[mlp_start:])
    # Forward: gate and up, swiglu's new output and the down projection's output (matmul_lora: out, then addmm_ in
    # place). Without checkpointing or offload gate and up stay as saved tensors: beyond them only hidden and the
    # output (as memory/unsloth.py's LoRA_MLP, the same allocations).
    mlp_fwd = 3 * c * i + c * h
    layer_fwd = mlp_fwd if t.grad_checkpointing or t.activation_offload else c * i + c * h
    # Backward: the incoming gradient, grad_down (tokens x intermediate) and the new dX (tokens x hidden)
    bwd = 2 * c * h + c * i
    if t.lora_dropout > 0:
        bwd += c * h  # dX_drop = torch.zeros_like(X_lora) beside dX
    if t.grad_checkpointing:
        # the recomputed layer's output stays alive through its backward (as memory/unsloth.py's LoRA_MLP; measured
        # with the tracer: a 4-layer llama, hidden 256, MLP 1,024, axolotl:mlp with checkpointing, -1.3 % without it)
        bwd += c * h
    # QLoRA: dX = torch.matmul(grad_up, up_weight_deq.t()) runs beside up's freshly dequantized weight
    # (kernels/quantize.py: a new tensor per call; measured with the tracer: the same llama, QLoRA, -2.1 % without it)
    dequant = c * max((lin.in_features * lin.out_features for lin in block_linears(m)
                       if lin.module.rsplit(".", 1)[-1] == "up_proj"), default=0) if t.method == "qlora" else 0
    # transformers' RMSNorm backward runs after LoRA_MLP's backward has freed X, gate and up (memory/unsloth.py)
    hf_norm_bwd = 5 * 4 * h
    norm_after = hf_norm_bwd - (c * h + 2 * c * i)
    return LayerActivations(
        tuple(terms),
        Term("LoRA_MLP forward (swiglu output, down output; gate and up when not saved)", layer_fwd),
        Term("LoRA_MLP backward (dY, grad_down, dX)" if bwd >= norm_after else "rmsnorm backward (fp32)",
             max(bwd, norm_after), const=max(hf.backward_transient.const, dequant)),
        mlp_saved_per_token=mlp_saved, mlp_tail_per_token=2 * c * i, mlp_forward_per_token=mlp_fwd)
