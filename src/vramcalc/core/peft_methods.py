"""The PEFT methods beyond LoRA, as one table: what each trains and what its forward saves for backward.

Read from peft 0.21.2's own source (peft/tuners/<method>/layer.py and model.py, peft/peft_model.py), and checked
against it: the trainable counts equal `sum(p.numel() for p in model.parameters() if p.requires_grad)` of a
peft model built from a config (tests/test_peft_methods.py), the activations against the tracer
(benchmarks/accuracy.py --grid peft). LoRA and QLoRA keep their own code (params.lora_params,
memory/activations.py); this table holds the rest, so a new method is one entry here rather than a branch in
every module. Three kinds:

- `linear`: an adapter on each targeted Linear of the blocks (IA3, LoHa, LoKr, VeRA, OFT, FourierFT, BOFT, MiSS,
  C3A, SHiRA): a `LinearRule` gives its trainable tensor shapes, its frozen buffers and the bytes its forward saves
  per token and per module;
- `norm`: trainable copies of the norm layers (LN tuning);
- `prompt`: virtual tokens (prompt tuning and p-tuning lengthen the sequence; prefix tuning gives every layer
  keys and values for them).

Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.params import AUTO_TARGETS, Linear, head_dim, kv_heads, lm_only, resolve_targets

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

def lora_inputs_saved(in_width: Callable[[str], int], modules: tuple[str, ...], rows: int, c: int, a: int,
                      r: int) -> int:
    """What peft's LoRA layers of one attention + MLP block save for `rows` rows (tuners/lora/layer.py Linear.forward:
    `result + lora_B(lora_A(dropout(x))) * scaling`, x cast to the adapter dtype by _cast_input_dtype): lora_A its
    input, a fresh copy per adapter when the adapter dtype `a` is not the compute dtype `c`, else the module's input
    itself (q/k/v_proj share one normalized input; o_proj's is the attention output sdpa saves anyway: the kernel's
    output is laid out (batch, rows, heads, head_dim), so transpose and .contiguous() copy nothing, measured with the
    tracer on Llama-3.2-Vision's tower); lora_B
    lora_A's output (rows x rank). `in_width(module)` is the module's input features. The frozen base Linear saves
    nothing (its weight needs no gradient)."""
    total, qkv_shared = 0, False
    for mod in modules:
        total += rows * a * r
        if a != c:
            total += rows * a * in_width(mod)
        elif mod != "o_proj" and not (qkv_shared and mod in ("q_proj", "k_proj", "v_proj")):
            total += rows * c * in_width(mod)
            qkv_shared = qkv_shared or mod in ("q_proj", "k_proj", "v_proj")
    return total


def tower_lora_split(model: ModelSpec, training: TrainingSpec,
                     tower_linears: tuple[str, ...]) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """peft 0.21's plain-name matching on a vision-language model whose tower layers hold `tower_linears`
    (tuners_utils.py check_target_module_exists: a name's suffix anywhere in the model): (the tower Linears adapted in
    every encoder layer, in `tower_linears` order; whether all-linear was asked, which also takes the projector's
    Linears; the targets left for the language model). q/k/v/o_proj (auto: the model's defaults) name the tower
    attention's as well as the text model's; fc1 / fc2 the tower MLP's only. Refuses targets that reach no
    language-model module."""
    from vramcalc.core.params import default_targets

    if lm_only(training.lora_targets):  # the language model's only (params.py LM_ONLY)
        return (), False, training.lora_targets
    tower: set[str] = set()
    all_linear = False
    text: list[str] = []
    for raw in training.lora_targets:
        t = raw.strip().lower()
        if t == "all-linear":
            tower |= set(tower_linears)
            all_linear = True
        elif t == "auto":
            tower |= set(default_targets(model)) & set(tower_linears)
        elif t in ("fc1", "fc2"):
            tower.add(t)
            continue
        elif t in tower_linears:
            tower.add(t)
        text.append(raw.strip())
    if not text:
        raise UnsupportedCombination(f"LoRA targets {','.join(training.lora_targets)} adapt no module of "
                                     f"{model.name}'s language model (fc1 / fc2 are the vision tower's only), which "
                                     "is not modelled: add a language-model target such as q_proj,v_proj")
    return tuple(m for m in tower_linears if m in tower), all_linear, tuple(text)


Kind = Literal["linear", "norm", "prompt", "embedding", "attention"]
Shapes = tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Saved:
    """What an adapted Linear's forward keeps for backward: its input cast to the adapter dtype (shared with
    the other adapters of the same input when no cast is needed), other bytes per token, and bytes per
    module whatever the batch (a materialized delta weight)."""

    input_copy: bool = False
    input_as_is: bool = False  # its input itself, in the compute dtype (shared with the other adapters of it)
    per_token: int = 0
    const: int = 0
    backward_const: int = 0  # per-module temporaries of its backward (the delta weight's gradient)
    forward_per_token: int = 0  # per-token temporaries of its forward beyond what it saves (C3A's FFTs)
    backward_per_token: int = 0  # per-token temporaries of its backward (C3A's FFTs of the gradient)


@dataclass(frozen=True, slots=True)
class LinearRule:
    """One per-Linear method: `shapes(d_in, d_out, r, feedforward)` are its trainable tensors;
    `saved(d_in, d_out, r, c, a, feedforward)` what it saves (c: compute bytes, a: adapter bytes)."""

    shapes: Callable[[int, int, int, bool], Shapes]
    saved: Callable[[int, int, int, int, int, bool], Saved]
    # Frozen tensors each adapted Linear keeps on the GPU: (shape, bytes per element) (OFT's and BOFT's buffers,
    # SHiRA's indices).
    buffers: Callable[[int, int], tuple[tuple[tuple[int, ...], int], ...]] = lambda d_in, d_out: ()


@dataclass(frozen=True, slots=True)
class PeftMethod:
    """One PEFT method: its adapter_config.json `peft_type`, kind, source and the options it reads."""

    name: str
    peft_type: str
    kind: Kind
    source: str
    options: tuple[str, ...]
    linear: LinearRule | None = None


def _ia3_shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
    # tuners/ia3/layer.py update_layer: (1, in_features) for a feedforward module, else (out_features, 1).
    return ((1, d_in),) if ff else ((d_out, 1),)


def _ia3_saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
    # tuners/ia3/layer.py Linear.forward: a feedforward module computes base(x.to(a) * l): mul saves the cast
    # input for l's gradient; any other module computes base(x) * l, and mul saves the 16-bit base output.
    return Saved(input_copy=True) if ff else Saved(per_token=c * d_out)


def _loha_shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
    # tuners/loha/layer.py create_adapter_parameters: hada_w1_a, hada_w2_a (out, r); hada_w1_b, hada_w2_b (r, in).
    return ((d_out, r), (r, d_in), (d_out, r), (r, d_in))


def _delta_weight_saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
    # LoHa and LoKr (tuners/loha/layer.py, tuners/lokr/layer.py _get_delta_activations): the full delta weight
    # (out x in, adapter dtype) is built each forward and F.linear(x.to(a), delta) saves both.
    return Saved(input_copy=True, const=a * d_in * d_out, backward_const=a * d_in * d_out)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft tuners/lokr/layer.py factorization: two factors of `dimension` near its square root, smaller first."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def _lokr_shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
    # tuners/lokr/layer.py update_layer (decompose_both False, decompose_factor -1, peft's defaults): w1 is
    # (out_l, in_m) whole; w2 is (out_k, in_n) whole unless r < max(out_k, in_n) / 2, then w2_a (out_k, r) and
    # w2_b (r, in_n).
    in_m, in_n = factorization(d_in)
    out_l, out_k = factorization(d_out)
    w2: Shapes = ((out_k, in_n),) if not 2 * r < max(out_k, in_n) else ((out_k, r), (r, in_n))
    return ((out_l, in_m), *w2)


def _vera_shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
    # tuners/vera/layer.py update_layer: vera_lambda_b (out,), vera_lambda_d (r,); vera_A and vera_B are shared
    # frozen buffers (see vera_projection_bytes).
    return ((d_out,), (r,))


def _vera_saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
    # tuners/vera/layer.py Linear.forward: lambda_b * F.linear(lambda_d * F.linear(x.to(a), A), B). A and B need
    # no gradient, so neither F.linear saves its input; the two muls save their (tokens, r) and (tokens, out)
    # operands for the lambdas' gradients.
    return Saved(per_token=a * (r + d_out))


def oft_block(d_in: int, block_size: int) -> int:
    """peft tuners/oft/layer.py update_layer + adjust_oft_parameters: the block size actually used, the divisor of
    in_features nearest to the one asked for (the lower one on a tie)."""
    if block_size >= d_in:
        return d_in
    if d_in % block_size == 0:
        return block_size
    higher = block_size
    while higher <= d_in and d_in % higher:
        higher += 1
    lower = block_size
    while lower > 1 and d_in % lower:
        lower -= 1
    return lower if block_size - lower <= higher - block_size else higher


def _oft_rule(block_size: int) -> LinearRule:
    """OFT (tuners/oft/layer.py OFTRotationModule, peft's defaults: Cayley-Neumann with 5 terms, no block sharing,
    no COFT): r = in / b blocks of b(b-1)/2 skew-symmetric parameters each. Its forward rotates the input:
    einsum('...rk,rkc->...rc') of the input cast to the adapter dtype saves it (tokens x in) and the rotation
    R (r x b x b); the Neumann series saves its Q, Q^2 and Q^3 (bmm operands), r x b x b each."""

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        b = oft_block(d_in, block_size)
        return ((d_in // b, b * (b - 1) // 2),)

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        b = oft_block(d_in, block_size)
        return Saved(input_copy=True, const=4 * a * d_in * b)  # 4 matrices of (in / b) x b x b

    def buffers(d_in: int, d_out: int) -> tuple[tuple[tuple[int, ...], int], ...]:
        b = oft_block(d_in, block_size)
        return (((2, b * (b - 1) // 2), 8),)  # OFTRotationModule's rows / cols: torch.triu_indices, int64

    return LinearRule(shapes, saved, buffers)


def _fourierft_rule(n_frequency: int) -> LinearRule:
    """FourierFT (tuners/fourierft/layer.py): n_frequency spectral coefficients per Linear; each forward scatters them
    into a dense (out x in) fp32 spectrum, takes ifft2's real part as the delta weight (in the adapter dtype) and
    F.linear(x.to(a), delta) saves both, like LoHa; its backward holds the delta's gradient and ifft2's complex
    (8-byte) gradient."""

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        if n_frequency > d_in * d_out:  # peft FourierFTLayer.update_layer raises the same
            raise UnsupportedCombination(f"--n-frequency {n_frequency} exceeds a {d_out} x {d_in} adapted Linear's "
                                         "weights")
        return ((n_frequency,),)

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        return Saved(input_copy=True, const=a * d_in * d_out, backward_const=(a + 8) * d_in * d_out)

    return LinearRule(shapes, saved)


def boft_blocks(d_in: int, block_size: int, block_num: int) -> tuple[int, int]:
    """peft tuners/boft/layer.py BOFTLayer.update_layer: (blocks, block size) of one Linear, exactly one of
    boft_block_size / boft_block_num given; in_features must divide by it (peft raises the same)."""
    given = block_size or block_num
    if d_in % given:
        flag = "--boft-block-size" if block_size else "--boft-block-num"
        raise UnsupportedCombination(f"{flag} {given} does not divide an adapted Linear's in_features {d_in} (peft "
                                     "refuses it): choose a divisor")
    return (d_in // block_size, block_size) if block_size else (block_num, d_in // block_num)


def _boft_rule(block_size: int, block_num: int) -> LinearRule:
    """BOFT (tuners/boft/layer.py Linear, boft_n_butterfly_factor 1: the factor peft falls back to without its
    fbd_cuda extension, and OFT's block-diagonal case): boft_R (1, blocks, b, b) and boft_s (out, 1) trained;
    boft_P (1, in, in) fp32, a permutation matrix kept as a buffer. Each forward builds the (in x in) rotation in
    the compute dtype: torch.block_diag of the Cayley blocks, two bmm with boft_P.to(x) and a matmul with an identity
    (torch.eye); `x @ rotation` saves x and the rotation, the bmm save boft_P's cast, the matmul the identity: three
    (in x in) matrices per module whatever the batch. The base Linear runs on the rotated input and its output is
    scaled by boft_s (fp32): the mul saves the output (tokens x out, compute dtype)."""

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        n, b = boft_blocks(d_in, block_size, block_num)
        return ((1, n, b, b), (d_out, 1))

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        square = d_in * d_in
        # Forward: besides the three saved matrices, block_diag's fp32 output, its cast and the first bmm's result
        # are alive while the second bmm runs. Backward: the rotation's gradient runs back through the matmul, the
        # two bmm and the cast to block_diag's fp32 gradient.
        return Saved(input_as_is=True, per_token=c * d_out, const=3 * c * square,
                     forward_per_token=c * d_in + 4 * d_out, backward_const=(2 * c + 4) * square)

    def buffers(d_in: int, d_out: int) -> tuple[tuple[tuple[int, ...], int], ...]:
        return (((1, d_in, d_in), 4),)  # boft_P: torch.empty((1, in, in)), fp32, register_buffer

    return LinearRule(shapes, saved, buffers)


def _miss_rule(rank: int) -> LinearRule:
    """MiSS (tuners/miss/layer.py MissLinear, init_weights True, the default "balance" variant; formerly Bone):
    miss_block (r, out) trained. Its forward adds sum(x.reshape(..., in / r, r), dim=-2) @ miss_block to the frozen
    base output: the sum saves nothing, the matmul saves its (tokens x r) input in the adapter dtype."""

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        if rank > d_in:  # MissLayer.update_layer raises the same
            raise UnsupportedCombination(f"--miss-rank {rank} exceeds an adapted Linear's in_features {d_in} (peft "
                                         "refuses it): lower it")
        return ((rank, d_out),)

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        # Temporaries: the input's cast to the adapter dtype (padded to a multiple of r), the matmul's (tokens x out)
        # output and its sum with the base output (promoted to the adapter dtype).
        return Saved(per_token=a * rank, forward_per_token=(a * d_in if a != c else 0) + 2 * a * d_out)

    return LinearRule(shapes, saved)


def _c3a_rule(block_size: int) -> LinearRule:
    """C3A (tuners/c3a/layer.py C3ALinear, utils.py BlockCircularConvolution): c3a_kernel (out / b, in / b, b)
    trained. Its forward casts the input to fp32 and runs a block-circulant convolution through FFTs, a
    torch.autograd.Function that saves its fp32 input and the fp32 kernel; in between it holds ifft(x) and the
    einsum's and fft's complex64 (8-byte) results; its backward holds the fft of the gradient and two complex
    input-wide tensors (the input's gradient and ifft(x))."""

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        if d_in % block_size or d_out % block_size:  # C3ALayer.update_layer raises the same
            raise UnsupportedCombination(f"--c3a-block-size {block_size} does not divide an adapted Linear's "
                                         f"{d_out} x {d_in} shape (peft refuses it): choose a common divisor")
        return ((d_out // block_size, d_in // block_size, block_size),)

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        kernel_cast = 0 if a == 4 else 4 * d_in * d_out // block_size  # c3a_kernel.to(torch.float32)
        return Saved(input_as_is=c == 4, per_token=4 * d_in if c != 4 else 0, const=kernel_cast,
                     forward_per_token=8 * d_in + 8 * d_out, backward_per_token=4 * d_out + 8 * d_out + 16 * d_in)

    return LinearRule(shapes, saved)


def _shira_rule(rank: int) -> LinearRule:
    """SHiRA (tuners/shira/layer.py Linear, mask_fn random_mask): r x (in + out) weights of each Linear trained,
    at positions drawn once (shira_indices, int32 (2, r (in + out)), on the base weight's device). Each forward
    clones the base weight, adds the sparse update (torch.sparse_coo_tensor) and F.linear(x, new_weight) saves x and
    the (out x in) weight in the compute dtype; its backward holds the weight's dense gradient."""

    def count(d_in: int, d_out: int) -> int:
        n = rank * (d_in + d_out)
        if n > d_in * d_out:  # ShiraLayer.update_layer raises the same
            raise UnsupportedCombination(f"--shira-rank {rank} gives more SHiRA weights than an adapted Linear's "
                                         f"{d_out} x {d_in} weights (peft refuses it): lower it")
        return n

    def shapes(d_in: int, d_out: int, r: int, ff: bool) -> Shapes:
        return ((count(d_in, d_out),),)

    def saved(d_in: int, d_out: int, r: int, c: int, a: int, ff: bool) -> Saved:
        # and the sparse tensor's int64 indices (sparse_coo_tensor converts the int32 ones), which its backward
        # (sparse_constructor_values_backward) keeps to gather the values' gradient
        return Saved(input_as_is=True, const=c * d_in * d_out + 16 * count(d_in, d_out),
                     backward_const=c * d_in * d_out)

    def buffers(d_in: int, d_out: int) -> tuple[tuple[tuple[int, ...], int], ...]:
        return (((2, count(d_in, d_out)), 4),)  # shira_indices: torch.where(mask) stacked, .to(torch.int)

    return LinearRule(shapes, saved, buffers)


TABLE: dict[str, PeftMethod] = {m.name: m for m in (
    PeftMethod("ia3", "IA3", "linear", "peft/tuners/ia3/layer.py", ("lora_targets", "ia3_feedforward",
               "adapter_dtype"), LinearRule(_ia3_shapes, _ia3_saved)),
    PeftMethod("ln-tuning", "LN_TUNING", "norm", "peft/tuners/ln_tuning/layer.py", ()),
    PeftMethod("loha", "LOHA", "linear", "peft/tuners/loha/layer.py", ("lora_rank", "lora_alpha", "lora_targets",
               "adapter_dtype"), LinearRule(_loha_shapes, _delta_weight_saved)),
    PeftMethod("lokr", "LOKR", "linear", "peft/tuners/lokr/layer.py", ("lora_rank", "lora_alpha", "lora_targets",
               "adapter_dtype"), LinearRule(_lokr_shapes, _delta_weight_saved)),
    PeftMethod("vera", "VERA", "linear", "peft/tuners/vera/layer.py", ("lora_rank", "lora_targets",
               "adapter_dtype"), LinearRule(_vera_shapes, _vera_saved)),
    PeftMethod("oft", "OFT", "linear", "peft/tuners/oft/layer.py", ("oft_block_size", "lora_targets",
               "adapter_dtype"), _oft_rule(32)),
    PeftMethod("fourierft", "FOURIERFT", "linear", "peft/tuners/fourierft/layer.py", ("n_frequency", "lora_targets",
               "adapter_dtype"), _fourierft_rule(1000)),
    PeftMethod("boft", "BOFT", "linear", "peft/tuners/boft/layer.py", ("boft_block_size", "boft_block_num",
               "lora_targets", "adapter_dtype"), _boft_rule(4, 0)),
    PeftMethod("miss", "MISS", "linear", "peft/tuners/miss/layer.py", ("miss_rank", "lora_targets", "adapter_dtype"),
               _miss_rule(64)),
    PeftMethod("c3a", "C3A", "linear", "peft/tuners/c3a/layer.py", ("c3a_block_size", "lora_targets",
               "adapter_dtype"), _c3a_rule(256)),
    PeftMethod("shira", "SHIRA", "linear", "peft/tuners/shira/layer.py", ("shira_rank", "lora_targets",
               "adapter_dtype"), _shira_rule(32)),
    PeftMethod("adaption-prompt", "ADAPTION_PROMPT", "attention", "peft/tuners/adaption_prompt/layer.py",
               ("adapter_len", "adapter_layers")),
    PeftMethod("trainable-tokens", "TRAINABLE_TOKENS", "embedding", "peft/tuners/trainable_tokens/layer.py",
               ("trainable_tokens", "adapter_dtype")),
    PeftMethod("prompt-tuning", "PROMPT_TUNING", "prompt", "peft/tuners/prompt_tuning/model.py",
               ("virtual_tokens", "adapter_dtype")),
    PeftMethod("p-tuning", "P_TUNING", "prompt", "peft/tuners/p_tuning/model.py",
               ("virtual_tokens", "encoder_hidden_size", "adapter_dtype")),
    PeftMethod("prefix-tuning", "PREFIX_TUNING", "prompt", "peft/tuners/prefix_tuning/model.py",
               ("virtual_tokens", "encoder_hidden_size", "prefix_projection", "adapter_dtype")),
)}
BY_PEFT_TYPE = {m.peft_type: m.name for m in TABLE.values()}
BY_PEFT_TYPE["BONE"] = "miss"  # peft renamed Bone to MiSS (tuners/miss); older adapter_config.json files say BONE
# Methods whose trainable tensors are in the model's dtype: LN tuning's norm copies, and adaption prompt's prompts and
# gates (AdaptedAttention: target_dtype = q_proj.weight.dtype; autocast_adapter_dtype casts tuner layers only).
MODEL_DTYPE_METHODS = frozenset({"ln-tuning", "adaption-prompt"})
# Methods whose trainable tensors are adapters kept in --adapter-dtype (peft get_peft_model's
# autocast_adapter_dtype casts 16-bit adapter weights to fp32).
ADAPTER_DTYPE_METHODS = frozenset({"lora", "qlora", *(n for n in TABLE if n not in MODEL_DTYPE_METHODS)})
# Methods whose base model is frozen whole (no base Linear saves its input).
FROZEN_BASE_METHODS = frozenset({"lora", "qlora", *TABLE})


def method_of(name: str, t: TrainingSpec | None = None) -> PeftMethod | None:
    """The table entry of a method (None for full, lora, qlora and freeze), its Linear rule built for `t`'s
    options (OFT's block size, FourierFT's n_frequency, BOFT's blocks, MiSS's and SHiRA's ranks, C3A's block)."""
    entry = TABLE.get(name)
    if entry is None or t is None:
        return entry
    rules: dict[str, Callable[[], LinearRule]] = {
        "oft": lambda: _oft_rule(t.oft_block_size), "fourierft": lambda: _fourierft_rule(t.n_frequency),
        "boft": lambda: _boft_rule(t.boft_block_size, t.boft_block_num), "miss": lambda: _miss_rule(t.miss_rank),
        "c3a": lambda: _c3a_rule(t.c3a_block_size), "shira": lambda: _shira_rule(t.shira_rank)}
    if name not in rules:
        return entry
    return PeftMethod(entry.name, entry.peft_type, entry.kind, entry.source, entry.options, rules[name]())


# peft/utils/constants.py TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING, in canonical module names
# (params.MODULE_ALIASES: GPT-2's c_attn is qkv_proj, mlp.c_proj down_proj; Falcon/NeoX query_key_value).
IA3_TARGETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral"), ("k_proj", "v_proj", "down_proj")),
    **dict.fromkeys(("gpt2", "gpt_neox", "falcon"), ("qkv_proj", "down_proj")),
    **dict.fromkeys(("phi", "gemma", "gemma2", "gemma3", "qwen2", "qwen3", "gptj"), ("q_proj", "v_proj", "down_proj")),
}
# TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING: the MLP's output projection for every family above.
IA3_FEEDFORWARD = ("down_proj",)
# TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING: every norm of the blocks and the final norm, except
# Qwen2/Qwen3 (post_attention_layernorm only).
LN_TUNING_FAMILIES = ("llama", "mistral", "gemma", "gemma2", "gemma3", "gpt2", "gptj", "falcon", "phi", "qwen2",
                      "qwen3")


def _family(m: ModelSpec) -> str:
    return m.family.lower()


def ia3_targets(m: ModelSpec, t: TrainingSpec) -> tuple[tuple[Linear, bool], ...]:
    """The Linears IA3 adapts, each with whether it is a feedforward module (scaled at its input)."""
    wanted = tuple(x.strip().lower() for x in t.lora_targets if x.strip())
    if AUTO_TARGETS in wanted:
        if _family(m) not in IA3_TARGETS:
            raise UnsupportedCombination(
                f"peft has no default IA3 target modules for family {m.family!r}: pass --lora-targets "
                "(and --ia3-feedforward)")
        wanted = tuple(x for x in wanted if x != AUTO_TARGETS) + IA3_TARGETS[_family(m)]
    linears = resolve_targets(m, wanted)
    ff_names = tuple(x.strip().lower() for x in t.ia3_feedforward if x.strip())
    if ff_names in (("auto",), ()):
        ff_names = IA3_FEEDFORWARD
    if ff_names == ("none",):
        feedforward: set[str] = set()
    else:
        feedforward = {lin.module for lin in resolve_targets(m, ff_names)}
        missing = feedforward - {lin.module for lin in linears}
        if missing and t.ia3_feedforward not in (("auto",), ()):
            # peft IA3Config.__post_init__: feedforward_modules must be a subset of target_modules
            raise UnsupportedCombination(f"--ia3-feedforward {','.join(sorted(missing))} is not among the IA3 "
                                         "targets: add it to --lora-targets")
    return tuple((lin, lin.module in feedforward) for lin in linears)


def adapted_linears(m: ModelSpec, t: TrainingSpec) -> tuple[tuple[Linear, bool], ...]:
    """(Linear, feedforward) for every Linear a `linear`-kind method adapts."""
    if t.method == "ia3":
        return ia3_targets(m, t)
    if t.method in ("loha", "lokr", "oft", "boft", "miss", "c3a", "shira") and _family(m) == "gpt2":
        # lycoris_utils.py LycorisTuner: nn.Linear and nn.Conv1d/2d only, not transformers' Conv1D; boft, miss, c3a
        # and shira model.py _create_new_module: torch.nn.Linear only.
        raise UnsupportedCombination(f"peft's {t.method} cannot adapt GPT-2's Conv1D layers: choose another model "
                                     "or method (ia3, vera, ln-tuning, prompt-tuning, p-tuning, prefix-tuning)")
    return tuple((lin, False) for lin in resolve_targets(m, t.lora_targets))


def norm_count(m: ModelSpec) -> int:
    """How many norm layers LN tuning copies: peft's per-family target list."""
    family = _family(m)
    if family not in LN_TUNING_FAMILIES:
        raise UnsupportedCombination(f"peft has no default LN tuning target modules for family {m.family!r}; "
                                     "vramcalc models its per-family defaults only")
    assert m.num_layers is not None
    if family in ("qwen2", "qwen3"):
        return m.num_layers  # post_attention_layernorm
    return m.norms_per_layer * m.num_layers + (1 if m.final_norm else 0)


def prefix_token_dim(m: ModelSpec) -> int:
    """peft utils/other.py _prepare_prompt_learning_config: prefix tuning's token_dim is the KV width
    (head_dim x num_key_value_heads) where the config has num_key_value_heads (GPT-2's has not: the hidden size)."""
    assert m.hidden_size is not None
    return m.hidden_size if _family(m) == "gpt2" else head_dim(m) * kv_heads(m)


def trainable_tensors(m: ModelSpec, t: TrainingSpec) -> tuple[tuple[tuple[int, ...], int], ...]:
    """(shape, count) of every trainable tensor of a table method (exact against peft's model)."""
    entry = method_of(t.method, t)
    assert entry is not None and m.hidden_size is not None and m.num_layers is not None
    h, n = m.hidden_size, t.virtual_tokens
    if entry.linear is not None:
        out: list[tuple[tuple[int, ...], int]] = []
        for lin, ff in adapted_linears(m, t):
            out += [(shape, lin.count) for shape in entry.linear.shapes(lin.in_features, lin.out_features,
                                                                         t.lora_rank, ff)]
        return tuple(out)
    if entry.kind == "norm":
        # tuners/ln_tuning/layer.py: a deepcopy of each targeted norm is trained (weight, and LayerNorm's bias).
        per_norm = ((h,), 2 if m.norm == "layernorm" else 1)
        return ((per_norm[0], per_norm[1] * norm_count(m)),)
    if entry.kind == "attention":
        # AdaptedAttention (tuners/adaption_prompt/layer.py): adaption_prompt (1, adapter_len, hidden) and
        # adaption_gate (1,) in each of the top adapter_layers attention modules.
        k = adaption_layers(m, t)
        return (((1, t.adapter_len, h), k), ((1,), k))
    if t.method == "prompt-tuning":
        return (((n, h), 1),)  # PromptEmbedding: Embedding(num_virtual_tokens, token_dim)
    if t.method == "trainable-tokens":
        # TrainableTokensLayer.update_layer: trainable_tokens_delta (len(token_indices), embedding_dim); a tied
        # lm_head shares it (no parameter of its own).
        return (((t.trainable_tokens, h), 1),)
    if t.method == "p-tuning":
        # PromptEncoder (MLP): Embedding(n, h); Linear(h, e), Linear(e, e), Linear(e, h), with biases.
        e = t.encoder_hidden_size or h
        return (((n, h), 1), ((e, h), 1), ((e,), 1), ((e, e), 1), ((e,), 1), ((h, e), 1), ((h,), 1))
    # prefix-tuning: PrefixEncoder: Embedding(n, layers x 2 x token_dim), or with prefix_projection an
    # Embedding(n, token_dim) and Linear(token_dim, e), Tanh, Linear(e, layers x 2 x token_dim).
    d = prefix_token_dim(m)
    width = m.num_layers * 2 * d
    if not t.prefix_projection:
        return (((n, width), 1),)
    e = t.encoder_hidden_size or d
    return (((n, d), 1), ((e, d), 1), ((e,), 1), ((width, e), 1), ((width,), 1))


def trainable_params(m: ModelSpec, t: TrainingSpec) -> int:
    """Trainable parameters of a table method."""
    total = 0
    for shape, count in trainable_tensors(m, t):
        numel = 1
        for d in shape:
            numel *= d
        total += numel * count
    return total


def vera_projection_elements(m: ModelSpec, t: TrainingSpec) -> int:
    """VeRA's shared frozen projections (tuners/vera/model.py _init_vera_A_vera_B): vera_A (r, max in_features)
    and vera_B (max out_features, r) over the adapted layers, fp32 buffers created once for the model."""
    linears = [lin for lin, _ in adapted_linears(m, t)]
    return t.lora_rank * (max(lin.in_features for lin in linears) + max(lin.out_features for lin in linears))


def extra_sequence(t: TrainingSpec) -> int:
    """Positions a prompt method adds to every sequence the layers and the loss see: prompt and p-tuning
    concatenate the virtual tokens' embeddings in front of the inputs and pad the labels with -100
    (peft_model.py PeftModelForCausalLM.forward); prefix tuning adds keys and values only (see prefix_*)."""
    return t.virtual_tokens if t.method in ("prompt-tuning", "p-tuning") else 0


def prompt_encoder_saved_per_sample(m: ModelSpec, t: TrainingSpec) -> int:
    """Bytes per sample that the prompt encoder's forward saves (run once per step on (batch, n) indices,
    in the adapter dtype a): p-tuning's MLP saves its input and each ReLU output; prefix projection saves
    the embedding output and the tanh output."""
    assert m.hidden_size is not None
    a = 4 if t.adapter_dtype == "fp32" else 2
    n, h = t.virtual_tokens, m.hidden_size
    if t.method == "p-tuning":
        e = t.encoder_hidden_size or h
        return a * n * (h + 2 * e)  # Linear(h,e) input, ReLU out (= next Linear's input), twice
    if t.method == "prefix-tuning" and t.prefix_projection:
        d = prefix_token_dim(m)
        e = t.encoder_hidden_size or d
        return a * n * (d + e)
    return 0


ADAPTION_PROMPT_FAMILIES = ("llama", "mistral")  # tuners/adaption_prompt/config.py TRANSFORMERS_MODEL_CONFIG


def adaption_layers(m: ModelSpec, t: TrainingSpec) -> int:
    """How many (top) layers adaption prompt adapts: --adapter-layers, all by default (peft's AdaptionPromptModel
    takes the last adapter_layers attention modules and refuses more than the model has)."""
    assert m.num_layers is not None
    if _family(m) not in ADAPTION_PROMPT_FAMILIES:
        # peft supports gpt2 too (AdaptedAttentionGPT: no o_proj on the prompt's output), which is not modelled
        raise UnsupportedCombination(f"vramcalc models adaption prompt on llama and mistral models only (peft's "
                                     f"AdaptedAttention), not family {m.family!r}")
    k = m.num_layers if t.adapter_layers is None else t.adapter_layers
    if k > m.num_layers:
        raise UnsupportedCombination(f"--adapter-layers {k} exceeds {m.name}'s {m.num_layers} layers (peft refuses "
                                     "it): lower it")
    return k


def adaption_saved(m: ModelSpec, t: TrainingSpec, c: int) -> tuple[int, int]:
    """(bytes per token, bytes per sequence) one adapted layer's AdaptedAttention.forward saves beyond the frozen
    attention (tuners/adaption_prompt/layer.py, utils.py llama_compute_query_states): the recomputed, rotated
    queries (matmul with adapter_k saves them for its gradient), softmax's fp32 output over the adapter_len
    prompt keys, its 16-bit cast (the gate's mul saves it) and the gated scores (matmul with adapter_v saves them);
    per sequence the prompt's keys and values repeated to every head (repeat, repeat_interleave) that the two
    matmuls save."""
    assert m.num_attention_heads is not None
    q_dim = m.num_attention_heads * head_dim(m)
    n_len = t.adapter_len * m.num_attention_heads
    return c * q_dim + (4 + 2 * c) * n_len, 2 * c * q_dim * t.adapter_len


def note(m: ModelSpec, t: TrainingSpec) -> str:
    """The estimate's note for a table method: what was modelled, and where it approximates."""
    entry = TABLE[t.method]
    if entry.kind == "embedding":
        return tokens_note(m, t)
    if entry.kind == "attention":
        return (f"adaption-prompt: {t.adapter_len} prompt tokens and a gate in the top {adaption_layers(m, t)} "
                f"attention layers, each attending to the prompt besides the sequence ({entry.source}); without "
                "checkpointing the frozen layers below save nothing, nor does the lowest adapted layer's frozen "
                "attention (its input needs no gradient).")
    if entry.kind == "prompt":
        what = ("keys and values for them in every layer" if t.method == "prefix-tuning"
                else "them in front of every sequence, through every layer and the loss")
        return (f"{t.method}: {t.virtual_tokens} virtual tokens, {what} ({entry.source}); the frozen model saves "
                "only what the gradient of the prompt needs.")
    return (f"{t.method}: frozen base, the method's saved tensors from {entry.source}; layer 0 is counted as saving "
            "its activations like the others (its input needs no gradient, so the real figure is slightly lower).")


def norm_trained(m: ModelSpec, t: TrainingSpec, which: Literal["attn", "mlp", "final"]) -> bool:
    """Whether a norm's weight needs a gradient, for the activation model: always outside this table (full and
    freeze train it; LoRA's model keeps the term), never for the table's frozen-base methods except LN tuning's
    targets (Qwen2/Qwen3: post_attention_layernorm, the MLP's norm, only)."""
    if t.method not in TABLE:
        return True
    if t.method != "ln-tuning":
        return False
    return which == "mlp" if _family(m) in ("qwen2", "qwen3") else True


def tokens_note(m: ModelSpec, t: TrainingSpec) -> str:
    """The estimate's note on trained token rows (the trainable-tokens method, or LoRA's trainable_token_indices)."""
    which = ("trainable-tokens: {} token embeddings trained" if t.method == "trainable-tokens"
             else "trainable_token_indices: {} token embeddings trained beside the adapters")
    return (which.format(token_rows(t)) + "; each forward merges them into a copy of the embedding matrix "
            f"({TABLE['trainable-tokens'].source} get_merged_weights)"
            + (", which the tied lm_head saves for backward." if m.tie_word_embeddings else "."))


def token_rows(t: TrainingSpec) -> int:
    """Token ids whose embeddings peft's TrainableTokensLayer trains (tuners/trainable_tokens/layer.py): the
    trainable-tokens method's token_indices, or LoRA's trainable_token_indices (peft/utils/other.py
    TrainableTokensWrapper on the input embedding, and on a tied lm_head); 0: none."""
    if t.method == "trainable-tokens":
        return t.trainable_tokens
    return t.lora_trainable_tokens if t.method in ("lora", "qlora") else 0


def tied_token_head_bytes(m: ModelSpec, t: TrainingSpec, c: int) -> tuple[int, int]:
    """Trainable tokens on a tied model (TrainableTokensModel puts a tied layer on lm_head): its forward builds the
    merged weight W = weight.index_copy(0, indices, deltas) (vocab x hidden, compute dtype) and F.linear(x, W)
    saves both x and W until the head's backward. (bytes per token, bytes) saved; (0, 0) otherwise."""
    if not token_rows(t) or not m.tie_word_embeddings:
        return 0, 0
    assert m.hidden_size is not None and m.vocab_size is not None
    return c * m.hidden_size, c * m.vocab_size * m.hidden_size
