"""accelerate's max_memory placement (axolotl gpu_memory_limit / max_memory): part of the model on the CPU.

axolotl (loaders/model.py @ 067b021c `_set_device_map_config`) turns `gpu_memory_limit` into max_memory
{GPU: limit, "cpu": "256GiB"} and runs accelerate's `infer_auto_device_map(canvas, max_memory, dtype=torch_dtype)`
on the from_config model without no_split_module_classes, then passes the map to from_pretrained. accelerate 1.15
(utils/modeling.py `infer_auto_device_map`) walks the modules in registration order: a module that fits under the
GPU's max_memory less the largest leaf still to place (`max_layer_size`, kept for an offloaded layer's copy) goes
there whole; one that does not is split into its children, down to single Linears and norms; the first leaf that does
not fit moves the walk to the CPU, which takes the rest. Sizes are `compute_module_sizes(model, dtype)`: numel times
the load dtype's bytes (float buffers included, never more than their own dtype's).

In the step, `dispatch_model` (big_modeling.py) gives each CPU leaf an AlignDevicesHook(offload=True) (hooks.py
`attach_align_device_hook`): pre_forward writes a GPU copy of the module's weights (`set_module_tensor_to_device`,
a new tensor each call), post_forward puts the module back on meta; what autograd saved keeps the copy alive:
- a frozen base (LoRA): a Linear saves its weight for its input's gradient, so without checkpointing every offloaded
  copy stays until backward reaches it; with checkpointing a layer's copies are not saved (only the Linear running
  holds one), the recomputed layer's are (until its backward), and the head's and final norm's, outside the
  checkpoints, are saved as without;
- full fine-tuning: the copy is a new Parameter that requires grad, held by its AccumulateGrad node (and its
  gradient with it) until the graph is freed after backward; the optimizer was built over the meta parameters, which
  never get a gradient, so the offloaded part is not updated and has no optimizer state.
peft (tuners/tuners_utils.py `onload_layer`) onloads a base layer while it injects the adapter, so LoRA A/B sit on
the GPU. accelerate refuses a 4/8-bit model with CPU modules for training (accelerator.py prepare_model: "You can't
train a model that has been loaded in 8-bit or 4-bit precision with CPU or disk offload").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.margin import parse_size
from vramcalc.core.memory import moments as _m
from vramcalc.core.params import head_dim, kv_heads
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec

FLAG = "--gpu-memory-limit"
# The decoder families whose module tree `module_tree` writes (transformers 5 modeling_llama.py, modeling_mistral.py,
# modeling_qwen2.py, modeling_qwen3.py; checked against accelerate's own walk in tests/test_max_memory.py).
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
# The precisions whose weights are stored in the load dtype, no autocast copy or master weights (memory/precision.py)
PRECISIONS = ("bf16", "fp16", "pure-bf16", "pure-fp16", "fp32")
# ... and for LoRA the Trainer's autocast over a 16-bit load with fp32 adapters (axolotl's bf16 LoRA): the frozen
# 16-bit weights (all the hooks copy) are not cast, the adapters stay on the GPU (measured: --grid maxmem)
LORA_PRECISIONS = (*PRECISIONS, "autocast-bf16", "autocast-fp16")
# axolotl's "cpu" entry: "something sufficiently large to fit anything" (loaders/model.py)
AXOLOTL_CPU_BYTES = 256 * 2**30


@dataclass(frozen=True)
class Node:
    """A module of the from_config model: its accelerate size and its children (none: a leaf)."""

    name: str
    size_bytes: int
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where accelerate puts each leaf: the GPU's and the CPU's bytes, and the CPU leaves by name."""

    gpu_bytes: int
    cpu_bytes: int
    cpu_leaves: tuple[Node, ...]
    reserve_bytes: int  # the largest remaining leaf when the walk left the GPU (accelerate's max_layer_size)


def active(t: TrainingSpec) -> bool:
    return t.gpu_memory_limit != "none"


def limit_bytes(t: TrainingSpec) -> int:
    """The GPU's max_memory in bytes (GB = 10^9, GiB = 2^30, as accelerate's convert_file_size_to_int reads them)."""
    return parse_size(t.gpu_memory_limit, FLAG)


def _leaf(name: str, numel: int, elem: int) -> Node:
    return Node(name, numel * elem)


def _parent(name: str, children: tuple[Node, ...]) -> Node:
    return Node(name, sum(c.size_bytes for c in children), children)


def module_tree(m: ModelSpec, elem: int, fp32_buffers: bool = False) -> Node:
    """The causal LM's modules in registration order with compute_module_sizes' bytes at `elem` bytes per element
    (`fp32_buffers`: the float buffers at their own fp32, as transformers' compute_module_sizes counts them)."""
    assert m.hidden_size is not None and m.intermediate_size is not None and m.vocab_size is not None
    assert m.num_layers is not None and m.num_attention_heads is not None
    h, i, v, d = m.hidden_size, m.intermediate_size, m.vocab_size, head_dim(m)
    q, kv = m.num_attention_heads * d, kv_heads(m) * d
    bias = m.qkv_bias  # Qwen2: q, k, v biases (modeling_qwen2.py Qwen2Attention)
    layers = []
    for n in range(m.num_layers):
        p = f"model.layers.{n}"
        attn: list[Node] = [_leaf(f"{p}.self_attn.q_proj", h * q + (q if bias else 0), elem),
                            _leaf(f"{p}.self_attn.k_proj", h * kv + (kv if bias else 0), elem),
                            _leaf(f"{p}.self_attn.v_proj", h * kv + (kv if bias else 0), elem),
                            _leaf(f"{p}.self_attn.o_proj", q * h, elem)]
        if m.family == "qwen3":  # Qwen3Attention: q_norm and k_norm (RMSNorm over head_dim) after o_proj
            attn += [_leaf(f"{p}.self_attn.q_norm", d, elem), _leaf(f"{p}.self_attn.k_norm", d, elem)]
        mlp = (_leaf(f"{p}.mlp.gate_proj", h * i, elem), _leaf(f"{p}.mlp.up_proj", h * i, elem),
               _leaf(f"{p}.mlp.down_proj", i * h, elem), _leaf(f"{p}.mlp.act_fn", 0, elem))
        layers.append(_parent(p, (_parent(f"{p}.self_attn", tuple(attn)), _parent(f"{p}.mlp", mlp),
                                  _leaf(f"{p}.input_layernorm", h, elem),
                                  _leaf(f"{p}.post_attention_layernorm", h, elem))))
    # rotary_emb: inv_freq and original_inv_freq, fp32 buffers of head_dim / 2, counted at min(dtype, fp32) by
    # accelerate's compute_module_sizes(dtype=...), at fp32 by transformers 5.24's (integrations/accelerate.py)
    rotary = _leaf("model.rotary_emb", 2 * (d // 2), 4 if fp32_buffers else min(elem, 4))
    body = _parent("model", (_leaf("model.embed_tokens", v * h, elem), _parent("model.layers", tuple(layers)),
                             _leaf("model.norm", h, elem), rotary))
    return _parent("", (body, _leaf("lm_head", v * h, elem)))


def _whole(n: Node) -> bool:
    """A decoder layer: one of the model's _no_split_modules (LlamaDecoderLayer, MistralDecoderLayer, ...)."""
    parts = n.name.split(".")
    return len(parts) == 3 and n.name.startswith("model.layers.")


def _max_leaf(nodes: list[Node], whole_layers: bool = False) -> int:
    """get_max_layer_size: the largest leaf under `nodes` (a decoder layer counted whole with `whole_layers`)."""
    best = 0
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n.children and not (whole_layers and _whole(n)):
            stack.extend(n.children)
        else:
            best = max(best, n.size_bytes)
    return best


def place(root: Node, gpu_bytes: int, cpu_bytes: int = AXOLOTL_CPU_BYTES, whole_layers: bool = False) -> Placement:
    """infer_auto_device_map on one GPU and the CPU (accelerate 1.15 utils/modeling.py), no tied weights.
    `whole_layers`: transformers 5.24's own walk for from_pretrained(device_map="auto", max_memory=...)
    (integrations/accelerate.py infer_auto_device_map with no_split_module_classes=model._no_split_modules): a decoder
    layer is never split, and the room kept on the GPU is the largest remaining layer or leaf outside the layers."""
    todo = list(root.children)
    devices = ("gpu", "cpu", "disk")
    limits = {"gpu": gpu_bytes, "cpu": cpu_bytes}
    used = {"gpu": 0, "cpu": 0, "disk": 0}
    where: dict[str, list[Node]] = {"gpu": [], "cpu": [], "disk": []}
    device = 0
    left_reserve = 0
    while todo:
        node = todo[0]
        dev = devices[device]
        # both the first GPU and the CPU are "main devices": each keeps room for the largest leaf still to place
        # other than this module's own (max_layer_names drops the popped module's leaves, then recomputes over the
        # rest when none is left)
        reserve = _max_leaf(todo[1:], whole_layers)
        if dev == "disk" or used[dev] + node.size_bytes <= limits[dev] - reserve:
            used[dev] += node.size_bytes
            where[dev].append(node)
            todo.pop(0)
            continue
        if node.children and not (whole_layers and _whole(node)):  # split: its children take its place
            todo[0:1] = list(node.children)
            continue
        if dev == "gpu":
            left_reserve = reserve
        device += 1
    if where["disk"] and any(n.size_bytes for n in where["disk"]):
        raise UnsupportedCombination(f"{FLAG}: the CPU's max_memory is full, so accelerate would put modules on the "
                                     "disk, which is not modelled; raise the CPU's max_memory")
    return Placement(used["gpu"], used["cpu"], tuple(_leaves(where["cpu"])), left_reserve)


def _leaves(nodes: list[Node]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        out.extend(_leaves(list(n.children)) if n.children else [n])
    return out


# Settings the placement is not modelled beside (their own GPU terms are not checked against the hooks' copies):
# (field, its value when unset, the flag to drop)
_NOT_BESIDE: tuple[tuple[str, object, str], ...] = (
    ("add_tokens", 0, "--add-tokens"), ("dora", False, "--dora"), ("modules_to_save", (), "--modules-to-save"),
    ("lora_trainable_tokens", 0, "--lora-trainable-tokens"), ("lora_layers", (), "--lora-layers"),
    ("activation_offload", False, "--activation-offload"), ("ac_offload", False, "--ac-offload"),
    ("optimizer_in_bwd", False, "--optimizer-in-bwd"), ("badam", False, "--badam"), ("lisa_layers", None,
    "--lisa-layers"), ("relora", False, "--relora"), ("upcast_logits", False, "--upcast-logits"),
    ("upcast_norms", False, "--upcast-norms"), ("fp8", "off", "--fp8"), ("kernels", "hf", "--kernels"),
    ("loss", "hf", "--loss"), ("ac_every", 1, "--ac-every"), ("reentrant_gc", False, "--reentrant-gc"),
    ("ac_early_stop", True, "--no-ac-early-stop"),
)


def check(m: ModelSpec, t: TrainingSpec) -> Placement:
    """The placement of `m` under `t`'s --gpu-memory-limit, or a one-line refusal where it is not modelled."""
    from vramcalc.core.memory.distributed import world_size
    from vramcalc.core.memory.precision import resolve_precision

    limit = limit_bytes(t)
    if t.method == "qlora":
        raise UnsupportedCombination(f"{FLAG} with a 4/8-bit base: accelerate refuses to train a quantized model "
                                     "with CPU modules (accelerator.py prepare_model); drop one of them")
    if t.mode != "train" or t.objective != "sft" or t.method not in ("lora", "full"):
        raise UnsupportedCombination(f"{FLAG} is modelled for supervised LoRA and full fine-tuning (--mode train, "
                                     "--objective sft, --method lora or full); drop it for this run")
    if world_size(t) != 1 or t.tp != 1 or t.pp != 1 or t.zero or t.fsdp != "none" or t.context_parallel != 1 \
            or t.offload != "none":
        raise UnsupportedCombination(f"{FLAG} is modelled on one GPU (accelerate's placement over several GPUs, "
                                     "naive model parallelism, is not): drop --gpus / --zero / --fsdp / --tp / --pp")
    if m.family not in FAMILIES or not m.has_architecture or m.tie_word_embeddings or m.vision is not None \
            or m.num_experts or m.learned_position_embeddings:
        raise UnsupportedCombination(f"{FLAG} is modelled for untied {', '.join(FAMILIES)} decoders (their module "
                                     f"tree is written out); {m.name} is not one: drop it")
    precision = resolve_precision(t)
    allowed = LORA_PRECISIONS if t.method == "lora" else PRECISIONS
    if precision not in allowed:
        raise UnsupportedCombination(f"{FLAG} is modelled with the weights in the load dtype ({', '.join(allowed)} "
                                     f"for --method {t.method}), not --precision {precision}")
    for name, unset, flag in _NOT_BESIDE:
        if getattr(t, name) != unset:
            if name == "kernels":  # axolotl turns its LoRA kernels on by default for a LoRA adapter
                raise UnsupportedCombination(
                    f"{FLAG} is not modelled beside --kernels {t.kernels} (kernels that read a Linear's weight "
                    "themselves are not checked against the hooks' copies); use --kernels hf (axolotl: "
                    "lora_qkv_kernel / lora_o_kernel / lora_mlp_kernel: false)")
            raise UnsupportedCombination(f"{FLAG} is not modelled beside {flag}: drop one of them")
    from vramcalc.core.memory.precision import RECIPES

    elem = dtype_bytes(RECIPES[precision].weight)
    p = place(module_tree(m, elem, fp32_buffers=t.whole_layers), limit, whole_layers=t.whole_layers)
    if p.gpu_bytes == 0:
        raise UnsupportedCombination(
            f"{FLAG} {t.gpu_memory_limit} leaves no module on the GPU (accelerate keeps {p.reserve_bytes:,} B for "
            "the largest leaf, and the first module does not fit beside it), so the model would run on the CPU; "
            "raise the limit")
    return p


def _rotary(n: Node) -> bool:
    # buffers stay on the execution device (dispatch_model offload_buffers=False) and are no part of `weights`
    return n.name == "model.rotary_emb"


def _layer_of(n: Node) -> int | None:
    parts = n.name.split(".")
    return int(parts[2]) if n.name.startswith("model.layers.") else None


def apply(m: ModelSpec, t: TrainingSpec, b: Breakdown, p: Placement) -> Breakdown:
    """`b` (the step with every weight on the GPU) with `p`'s CPU leaves offloaded through accelerate's hooks."""
    from vramcalc.core.memory.overhead import runtime_overhead

    assert m.num_layers is not None
    cpu = [n for n in p.cpu_leaves if not _rotary(n)]
    offloaded = sum(n.size_bytes for n in cpu)
    details = dict(b.details)
    details["weights.cpu_offloaded"] = offloaded
    details["weights.gpu_memory_limit"] = limit_bytes(t)
    notes = list(b.notes)
    if not offloaded:
        notes.append(f"gpu memory limit {t.gpu_memory_limit}: the whole model fits under it (accelerate's "
                     "infer_auto_device_map puts every module on the GPU)")
        return replace(b, details=details, notes=tuple(notes))
    per_layer = [0] * m.num_layers
    for n in cpu:
        layer = _layer_of(n)
        if layer is not None:
            per_layer[layer] += n.size_bytes
    in_layers = sum(per_layer)
    outer = offloaded - in_layers  # head, final norm (and the embedding when almost everything is offloaded)
    head_side = sum(n.size_bytes for n in cpu if n.name in ("lm_head", "model.norm"))
    layer_leaf = max((n.size_bytes for n in cpu if _layer_of(n) is not None), default=0)
    full = t.method == "full"
    ck = t.grad_checkpointing
    top, bottom = per_layer[-1], per_layer[0]
    # Full fine-tuning with checkpointing: the rerun stops early (torch utils/checkpoint.py _StopRecomputationError,
    # raised by the pack hook of the layer's last saved tensor, in down_proj), so that module's post_forward never runs
    # and it keeps its rerun copy until its next pre_forward: through the rest of backward and the optimizer step
    # (measured: the tracer's optimizer step held one down_proj copy per offloaded layer, tinyllama 595MB full gc).
    # LoRA likewise where down_proj has no adapter (the stop falls in its base Linear; with one, in lora_B, after the
    # base layer's post_forward): measured, tinyllama 595MB q,v gc.
    from vramcalc.core.params import resolve_targets

    down_plain = full or all(lin.module != "down_proj" for lin in resolve_targets(m, t.lora_targets))
    left_over = sum(n.size_bytes for n in cpu if n.name.endswith(".mlp.down_proj")) if ck and down_plain else 0

    def copies(key: str) -> int:
        phase, instant = key.split(".", 1)
        if phase == "optimizer_step":
            return left_over  # the graph (every other copy and offloaded gradient) is gone after backward
        if full:  # every copy is held by its AccumulateGrad node until the graph is freed
            held = offloaded - (head_side if instant == "layer" else 0)
            if phase == "backward" and ck and instant not in ("start", "head"):
                held += bottom if instant.startswith("bottom") or instant == "end" else top \
                    if instant in ("recompute", "top") else max(per_layer)  # the recomputed layer's own copies
                held += left_over if instant.startswith("bottom") or instant == "end" else 0
            return held
        # a frozen base: a copy lives while a saved tensor (a Linear's weight) holds it
        if phase == "forward":
            if ck:
                return layer_leaf if instant == "layer" else outer  # one Linear's transient copy / head and norm
            return in_layers + (0 if instant == "layer" else outer)
        if instant in ("start", "head"):
            return outer + (0 if ck else in_layers)
        if instant.startswith("bottom") or instant == "end":
            return bottom + left_over
        if ck:
            return top if instant in ("recompute", "top") else max(per_layer)
        return in_layers

    term = (("offloaded weights' GPU copies (accelerate hooks)", "weights"),)
    moments = [(key, layout + term, (*values, copies(key))) for key, layout, values in b.moments]
    weights = b.weights - offloaded
    states, gradients = b.optimizer_state, b.gradients
    if full:
        # the optimizer holds the meta parameters, which never get a gradient: no state and no kept gradient for the
        # offloaded part; their gradients (on the copies) are freed with the graph, before the step
        from vramcalc.core.memory.precision import recipe_of

        recipe = recipe_of(t)
        off_params = offloaded // dtype_bytes(recipe.weight)
        off_grads = off_params * dtype_bytes(recipe.grad)
        trainable = b.trainable_parameters
        states = b.optimizer_state * (trainable - off_params) // trainable
        gradients = b.gradients - off_grads
        details["gradients.offloaded_dropped"] = off_grads
        for k, (key, layout, values) in enumerate(moments):
            if key.startswith("optimizer_step"):
                left = off_grads
                vals = list(values)
                for j, (_, component) in enumerate(layout):
                    if component == "gradients" and left:
                        cut = min(left, vals[j])
                        vals[j] -= cut
                        left -= cut
                moments[k] = (key, layout, tuple(vals))
    base = weights + states + b.communication
    phases = _m.phase_peaks(base, tuple(moments))
    runtime = runtime_overhead(max(phases.values()), 1)
    details.update(runtime.details())
    details["weights.offload_copies_peak"] = max(copies(key) for key, _, _ in b.moments)
    gib = offloaded / 2**30
    notes.append(
        f"gpu memory limit {t.gpu_memory_limit}: "
        + ("transformers' infer_auto_device_map (from_pretrained device_map auto with max_memory, each decoder layer "
           "whole)" if t.whole_layers else "accelerate's infer_auto_device_map (axolotl gpu_memory_limit / "
           "max_memory)")
        + f" puts {len(cpu)} modules, {offloaded:,} B ({gib:.2f} GiB), on the CPU (host RAM, "
        f"cpu_offload_bytes), keeping {p.reserve_bytes:,} B free for the largest "
        f"{'layer' if t.whole_layers else 'leaf'}; each forward their "
        "AlignDevicesHook copies them to the GPU"
        + (", where autograd holds every copy (and its gradient) until the graph is freed; the offloaded parameters "
           "are not updated and have no optimizer state (the optimizer holds their meta placeholders)" if full else
           (": the head's and final norm's stay saved for backward, each layer's only while it runs and while it is "
            "recomputed in backward" if ck else ": each stays saved for backward until backward reaches it")))
    notes.append("gpu memory limit: approximate: the hooks' copies are counted at the moment's layer granularity "
                 "(all of a layer's at once, a layer's released when its backward starts), an over-estimate")
    return replace(b, weights=weights, optimizer_state=states, gradients=gradients, phases=phases,
                   overhead=runtime.total, details=details, notes=tuple(notes), moments=tuple(moments),
                   cpu_offload_bytes=b.cpu_offload_bytes + offloaded)
