"""LoRA / QLoRA adapters that peft puts on a SigLIP tower: Gemma 3 multimodal (kind siglip, memory/vision.py
_siglip_estimate) and Idefics3 / SmolVLM (kind idefics3, memory/idefics3.py), whose towers have the same layer
(models/siglip/modeling_siglip.py SiglipEncoderLayer; models/idefics3/modeling_idefics3.py Idefics3EncoderLayer:
layer_norm1, self_attn q/k/v/out_proj, residual, layer_norm2, mlp fc1 -> gelu_pytorch_tanh -> fc2, residual).

peft 0.21 matches target names over the whole model (tuners/tuners_utils.py check_target_module_exists: a target
is a module's name or its dotted suffix), so q_proj / v_proj (the default) adapt the tower's self_attn.q_proj and
v_proj too, and all-linear (_maybe_include_all_linear_layers: every nn.Linear but the output layer) takes each tower
layer's six Linears and Idefics3's connector (modality_projection.proj). Gemma3MultiModalProjector's
mm_input_projection_weight is an nn.Parameter, not a Linear: never adapted. Checked against get_peft_model on the
meta models (tests/test_siglip_lora.py).

What the adapted tower saves for backward, per image (tile) of `rows` patches (the frozen Linears save nothing for
their input's gradient: derivatives.yaml, mm needs the weight only; peft tuners/lora/layer.py Linear.forward casts
x to the adapter dtype (_cast_input_dtype: a fresh copy per adapted module when the dtypes differ), and lora_A saves
that input, lora_B lora_A's output). Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.params import block_linears, default_targets, lm_only
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec

# A SigLIP layer's Linears in forward order (SiglipAttention q/k/v/out_proj, SiglipMLP fc1 / fc2), and Idefics3's
# connector Linear (Idefics3SimpleMLP.proj, reached as connector.modality_projection.proj)
SIGLIP_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
CONNECTOR = "modality_projection.proj"
_CONNECTOR_NAMES = ("proj", "modality_projection.proj", "connector.modality_projection.proj")


def tower_lora_targets(model: ModelSpec, targets: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                                            tuple[str, ...]]:
    """What peft adapts on the image side of a Gemma 3 / Idefics3 model: (tower layer Linears, connector Linears,
    the targets left for the language model). all-linear takes every tower Linear (and Idefics3's connector); auto
    is the language model's default (q_proj, v_proj: params.default_targets), which the tower has too; a bare
    q_proj / k_proj / v_proj names both sides; out_proj, fc1 and fc2 are the tower's only (Gemma 3's and Llama's
    text layers have o_proj and gate/up/down_proj); proj is Idefics3's connector."""
    v = model.vision
    assert v is not None
    if lm_only(targets):  # the language model's only (params.py LM_ONLY)
        return (), (), tuple(targets)
    text_model = replace(model, vision=None)  # the language model alone (memory/vision.py _text_model)
    text_names = {lin.module.rsplit(".", 1)[-1] for lin in block_linears(text_model)}
    tower: set[str] = set()
    connector: set[str] = set()
    text: list[str] = []
    for raw in targets:
        t = raw.strip().lower()
        if t == "all-linear":
            tower |= set(SIGLIP_LINEARS)
            if v.kind == "idefics3":
                connector.add(CONNECTOR)
            text.append(raw.strip())
        elif t == "auto":
            tower |= set(default_targets(text_model)) & set(SIGLIP_LINEARS)
            text.append(raw.strip())
        elif t in SIGLIP_LINEARS:
            tower.add(t)
            if t in text_names:
                text.append(raw.strip())
        elif t in _CONNECTOR_NAMES and v.kind == "idefics3":
            connector.add(CONNECTOR)
        else:
            text.append(raw.strip())
    return tuple(n for n in SIGLIP_LINEARS if n in tower), tuple(sorted(connector)), tuple(text)


def adapted(model: ModelSpec, training: TrainingSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tower Linears, connector Linears) adapted by this run: none but for LoRA / QLoRA."""
    if training.method not in ("lora", "qlora"):
        return (), ()
    return tower_lora_targets(model, training.lora_targets)[:2]


def check(model: ModelSpec, training: TrainingSpec) -> None:
    """What the tower-adapter arithmetic does not cover, refused in one line."""
    if training.method not in ("lora", "qlora"):
        return
    tower, connector, text = tower_lora_targets(model, training.lora_targets)
    if not text:
        raise UnsupportedCombination(f"--lora-targets {','.join(training.lora_targets)} adapts only the image side "
                                     f"of {model.name}; a run without adapters in the language model is not "
                                     "modelled: add a language-model target (e.g. q_proj,v_proj)")
    if not (tower or connector):
        return
    from vramcalc.core.memory.precision import recipe_of

    if recipe_of(training).autocast:
        raise UnsupportedCombination(f"LoRA on {model.name}'s vision tower under autocast (--precision "
                                     f"{training.precision}) is not modelled: use --precision bf16, or targets the "
                                     "tower lacks (e.g. o_proj,gate_proj,up_proj,down_proj)")
    if training.lora_dropout > 0:
        raise UnsupportedCombination(f"lora_dropout > 0 on {model.name}'s vision tower adapters is not modelled: use "
                                     "--lora-dropout 0, or targets the tower lacks (e.g. o_proj,gate_proj,up_proj,"
                                     "down_proj)")
    if training.train_vision:
        raise UnsupportedCombination("--train-vision with LoRA is not modelled: use --method full")


def _in_out(v: VisionSpec, module: str, text_width: int) -> tuple[int, int]:
    """(in, out) features of an adapted tower / connector Linear: the connector reads pixel_shuffle's width x
    scale_factor^2 features (Idefics3SimpleMLP: Linear(width * scale^2, text width, bias=False))."""
    h, i = v.hidden_size, v.intermediate_size
    if module == CONNECTOR:
        return h * v.scale_factor ** 2, text_width
    return {"fc1": (h, i), "fc2": (i, h)}.get(module, (h, h))


def adapter_params(model: ModelSpec, training: TrainingSpec) -> int:
    """LoRA parameters on the image side: rank x (in + out) per adapted Linear (lora_A, lora_B, no bias), every
    tower layer's and the connector's."""
    v = model.vision
    assert v is not None and model.hidden_size is not None
    tower, connector = adapted(model, training)
    r, th = training.lora_rank, model.hidden_size
    return (v.num_layers * sum(r * sum(_in_out(v, m, th)) for m in tower)
            + sum(r * sum(_in_out(v, m, th)) for m in connector))


def layer_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, modules: tuple[str, ...],
                stream: bool) -> int:
    """One adapted SigLIP layer's saved tensors for `rows` patches, sdpa (memory/vision.py _siglip_layer_saved's
    sections, kept where an input of the op needs a gradient). `stream`: the layer's input needs a gradient (every
    layer above the bottom one, once an adapter has run; with checkpointing the hooked embeddings); the bottom layer
    of a tower run without checkpointing saves nothing below its first adapted Linear.

    Frozen graph: layer_norm1 its input and fp32 mean / rstd (when the input needs a gradient); sdpa q, k, v, its
    output and fp32 logsumexp per head (when q, k or v needs one); layer_norm2 its input and stats (once the
    residual needs one); gelu_pytorch_tanh its input, fc1's output. Adapters: lora_B lora_A's output (rows x rank,
    adapter dtype) each; lora_A its input: with adapter dtype = compute dtype, the module's own input (q/k/v share
    layer_norm1's output; out_proj's is sdpa's output, already saved when sdpa is; fc1 layer_norm2's output; fc2 the
    gelu's), else a fresh adapter-dtype copy per module."""
    h, i = v.hidden_size, v.intermediate_size
    ad, r = dtype_bytes(training.adapter_dtype), training.lora_rank
    qkv = any(m in modules for m in ("q_proj", "k_proj", "v_proj"))
    attn_on = stream or qkv
    ln2_on = attn_on or "out_proj" in modules
    gelu_on = ln2_on or "fc1" in modules
    total = (rows * h * a_bytes + 8 * rows if stream else 0) \
        + (_attention_saved(v, training, rows, a_bytes) if attn_on else 0) \
        + (rows * h * a_bytes + 8 * rows if ln2_on else 0) + (rows * i * a_bytes if gelu_on else 0)
    total += len(modules) * rows * r * ad
    width = {"q_proj": h, "k_proj": h, "v_proj": h, "out_proj": h, "fc1": h, "fc2": i}
    if ad != a_bytes:
        total += sum(rows * width[m] * ad for m in modules)
    else:
        # (eager: out_proj's input, the transposed output's contiguous copy, is saved by nothing else)
        shared = attn_on and training.attention != "eager"
        total += (rows * h * a_bytes if qkv else 0) \
            + (rows * h * a_bytes if "out_proj" in modules and not shared else 0) \
            + (rows * h * a_bytes if "fc1" in modules else 0) + (rows * i * a_bytes if "fc2" in modules else 0)
    return total


def _attention_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int) -> int:
    """What a SigLIP attention saves when q, k or v needs a gradient: sdpa (the flash / efficient kernel) q, k, v,
    its output and fp32 logsumexp per head; eager (siglip eager_attention_forward) q and k (the scores' matmul), the
    fp32 softmax (softmax(dtype=float32)), the 16-bit probabilities and v (the output's matmul); dropout at p 0
    returns its input."""
    h, heads = v.hidden_size, v.num_attention_heads
    if training.attention == "eager":
        return 3 * rows * h * a_bytes + heads * rows * rows * (4 + a_bytes)
    return 4 * rows * h * a_bytes + 4 * heads * rows


def connector_saved(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, text_width: int) -> int:
    """An adapted Idefics3 connector for `rows` tower rows (rows / scale^2 shuffled rows of width x scale^2): lora_A
    its input (pixel_shuffle's output, or its adapter-dtype copy) and lora_B lora_A's output."""
    ad, r = dtype_bytes(training.adapter_dtype), training.lora_rank
    shuffled = rows // v.scale_factor ** 2
    return rows * v.hidden_size * (ad if ad != a_bytes else a_bytes) + shuffled * r * ad


def forward_transient(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int,
                      modules: tuple[str, ...]) -> int:
    """An adapted Linear's forward (peft Linear.forward: `result + lora_B(lora_A(x)) * scaling`): the input's
    adapter-dtype copy, the base output (16-bit), lora_B's output and its scaled copy (adapter dtype), the largest
    over the adapted Linears."""
    ad = dtype_bytes(training.adapter_dtype)
    h, i = v.hidden_size, v.intermediate_size
    worst = 0
    for m in modules:
        d_in, d_out = {"fc1": (h, i), "fc2": (i, h)}.get(m, (h, h))
        worst = max(worst, rows * ((d_in * ad if ad != a_bytes else 0) + d_out * (a_bytes + 2 * ad)))
    return worst


def top_moment(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, modules: tuple[str, ...]) -> int:
    """The top adapted layer's largest forward moment (no checkpointing) above the lower layers' saved sets, the
    encoder's inputs_embeds (held by SiglipEncoder.forward through its loop) and the layer's input (held by the
    loop's hidden_states): its saved set so far (layer_saved's sections before the Linear, the adapters' up to it),
    the live tensors beside it (layer_norm1's output at q/k/v, the post-attention residual and layer_norm2's output
    at fc1, the residual and the gelu's output at fc2, when not already saved), and the adapted Linear's forward:
    the base output (16-bit), lora_B's output and its scaled copy (adapter dtype; the peak at `* scaling`); or the
    frozen gelu's, beside fc1's output (saved) and the gelu's."""
    h, i, heads = v.hidden_size, v.intermediate_size, v.num_attention_heads
    ad = dtype_bytes(training.adapter_dtype)
    fresh = ad != a_bytes
    ln1, attn, ln2, gelu_in = rows * h * a_bytes + 8 * rows, _attention_saved(v, training, rows, a_bytes), \
        rows * h * a_bytes + 8 * rows, rows * i * a_bytes
    frozen = layer_saved(v, training, rows, a_bytes, (), True)

    def adapters(upto: tuple[str, ...]) -> int:
        return layer_saved(v, training, rows, a_bytes, upto, True) - frozen

    sections = {"q_proj": ln1, "k_proj": ln1, "v_proj": ln1, "out_proj": ln1 + attn, "fc1": ln1 + attn + ln2,
                "fc2": ln1 + attn + ln2 + gelu_in}
    # (the layer input and the post-attention residual are layer_norm1's and layer_norm2's saved inputs)
    context = {"q_proj": h if fresh else 0, "k_proj": h if fresh else 0, "v_proj": h if fresh else 0,
               "out_proj": 0, "fc1": h if fresh else 0, "fc2": i if fresh else 0}
    upto_fc1 = tuple(m for m in modules if m != "fc2")
    best = ln1 + attn + ln2 + gelu_in + adapters(upto_fc1) + rows * (h + i) * a_bytes  # at the gelu
    for k, m in enumerate(modules):
        d_out = i if m == "fc1" else h
        best = max(best, sections[m] + adapters(modules[:k + 1]) + rows * context[m] * a_bytes
                   + rows * d_out * (a_bytes + 2 * ad))
    if training.attention == "eager":
        # at the softmax (memory/vision.py _siglip_layer_transient): q, k, v, the scaled 16-bit scores, their fp32
        # cast and the fp32 softmax per head, beside layer_norm1's output
        qkv = tuple(m for m in modules if m in ("q_proj", "k_proj", "v_proj"))
        best = max(best, ln1 + adapters(qkv) + rows * (h + 3 * h) * a_bytes + heads * rows * rows * (a_bytes + 8))
    # inputs_embeds, and one more width-wide tensor with fp32 adapters (measured with the tracer on the Gemma 3 and
    # SmolVLM towers: 16-bit adapters leave one fewer)
    return best + (2 if fresh else 1) * rows * h * a_bytes


def backward_without_checkpointing(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int,
                                   modules: tuple[str, ...], images: int, saved: int) -> tuple[int, int]:
    """The tower's backward with adapters and no checkpointing, for `images` images (or tiles) whose layers saved
    `saved` bytes: (what is still kept there, the top layer's transients). Nothing is recomputed; post_layernorm's
    input and fp32 stats are already freed (it runs first), and what top_backward says the top layer has freed."""
    left, bwd = top_backward(v, training, rows, a_bytes, modules)
    return saved - images * (rows * v.hidden_size * a_bytes + 8 * rows + left), images * bwd


def top_backward(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int,
                 modules: tuple[str, ...]) -> tuple[int, int]:
    """The top adapted layer's backward peak (no checkpointing): (saved bytes of the layer already freed there,
    transient bytes), the largest of: the gelu's backward (gelu_backward, measured with the tracer): fc2's backward
    has run, so an adapted fc2's saved input and lora_A output are freed; the gradient flowing in (width) and two
    intermediate-wide ones (fc2's input gradient, the gelu's); an adapted fc2's own backward, before it; eager: the
    softmax backward."""
    h, i = v.hidden_size, v.intermediate_size
    ad = dtype_bytes(training.adapter_dtype)

    def extra(mods: tuple[str, ...]) -> int:  # the adapters' share of the layer's saved set
        return layer_saved(v, training, rows, a_bytes, mods, True) - layer_saved(v, training, rows, a_bytes, (), True)

    fc2 = extra(("fc2",)) if "fc2" in modules else 0
    candidates = [(fc2, rows * (h + 2 * i) * a_bytes)]
    if fc2 and ad != a_bytes:
        # at lora_A's input-gradient mm (measured with the tracer): the incoming gradient and one more width-wide
        # 16-bit gradient, and lora_A's input gradient in the adapter dtype; lora_A's saved copy still there
        candidates.append((0, rows * (2 * h * a_bytes + i * ad)))
    elif fc2:
        # adapter dtype = compute dtype: at the add of fc2's two input gradients, the base Linear's and lora_A's,
        # and their sum, beside the incoming gradient (measured with the tracer, aten.add); fc2's adapters' saved
        # set freed
        candidates.append((fc2, rows * (h + 3 * i) * a_bytes))
    if training.attention == "eager":
        # the softmax backward (aten._softmax_backward_data, as memory/vision.py's frozen recomputed layer): the
        # MLP's, layer_norm2's and out_proj's saved sets and the 16-bit probabilities are freed; layer_norm1's, q,
        # k, v, the fp32 softmax and the q/k/v adapters' are left; the probabilities' 16-bit gradient, its fp32
        # cast and the fp32 result per head (the width-wide gradients are freed by then: measured with the tracer)
        heads = v.num_attention_heads
        qkv = tuple(m for m in modules if m in ("q_proj", "k_proj", "v_proj"))
        kept = 4 * rows * h * a_bytes + 8 * rows + heads * rows * rows * 4 + extra(qkv)
        candidates.append((layer_saved(v, training, rows, a_bytes, modules, True) - kept,
                           heads * rows * rows * (2 * a_bytes + 4)))
    return max(candidates, key=lambda c: c[1] - c[0])


def recomputed_fc2(v: VisionSpec, training: TrainingSpec, rows: int, a_bytes: int, modules: tuple[str, ...]) -> int:
    """With checkpointing, the top layer's backward at an adapted fc2 (0 when fc2 is frozen): the recomputed layer's
    whole saved set (layer_saved) and, measured with the tracer at lora_A's backward (adapter dtype fp32): two more
    width-wide 16-bit tensors, the incoming gradient's adapter-dtype copy and lora_A's input gradient beside one
    more intermediate-wide adapter-dtype tensor. With a 16-bit adapter no larger than the frozen layer's gelu
    backward (0 here)."""
    if "fc2" not in modules:
        return 0
    h, i = v.hidden_size, v.intermediate_size
    ad = dtype_bytes(training.adapter_dtype)
    saved = layer_saved(v, training, rows, a_bytes, modules, True)
    if ad != a_bytes:
        return saved + rows * (2 * h * a_bytes + h * ad + i * ad)
    return 0


def text_bottom_saved(text_model: ModelSpec, text_training: TrainingSpec, seq: int) -> int:
    """The language model's bottom layer when the image side carries adapters and no checkpointing runs: the image
    features need a gradient, so masked_scatter's inputs_embeds does and the bottom layer saves its whole
    input-gradient set, which the text model's LoRA estimate leaves out (memory/activations.py layer_activations
    input_grad: its frozen embedding's output needs none). Bytes for batch x seq tokens."""
    from vramcalc.core.memory.activations import layer_activations
    from vramcalc.core.memory.precision import recipe_of

    recipe = recipe_of(text_training)
    top = layer_activations(text_model, text_training, recipe, trainable_weights=False)
    bottom = layer_activations(text_model, text_training, recipe, trainable_weights=False, input_grad=False)
    tokens = text_training.batch_size * seq
    return (tokens * (sum(x.per_token for x in top.terms) - sum(x.per_token for x in bottom.terms))
            + tokens * seq * (sum(x.per_token_seq for x in top.terms) - sum(x.per_token_seq for x in bottom.terms)))
