"""Activation-checkpointing variants: which layers keep what on the GPU, and what goes to host RAM.

* per-layer checkpointing (HF gradient_checkpointing_enable, torchtune ac_mode "full"): every layer keeps
  only its input; one layer is recomputed at a time in backward (memory/__init__.py phase model).
* selective (torchtune training/activations.py checkpoint_wrapper, ac_mode "selective", ac_option k): a
  layer is wrapped when its 1-based index is a multiple of k, so n_layers // k layers keep their input
  and the others keep their whole saved set. transformers' every_n_layers (modeling_utils.py
  _set_gradient_checkpointing: `layer_index % every_n_layers == 0`, TrainingArguments activation_checkpointing_kwargs)
  counts from layer 0: ceil(n_layers / k) layers are wrapped (--ac-layout hf).
* offloaded (torchtune training/_activation_offloading.py OffloadActivations, enable_activation_offloading;
  Unsloth's "unsloth" checkpointing and axolotl `gradient_checkpointing: offload` offload the checkpointed
  inputs the same way): saved tensors of at least 1 KiB are copied to pinned host memory in forward;
  the GPU keeps them only in a 5-tensor stash (the final norm's, at the loss) and, in backward, brings
  back one node's tensors at a time, the previous node's freed once this node has run: with checkpointing, the
  input of the layer being recomputed (beside the layer above's), and without it, one node's saved tensors
  beside the previous node's (offload_node_bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Residency:
    """Bytes of the layers' saved activations on the GPU in forward and in backward, and in host RAM."""

    forward: int
    backward: int
    host: int
    running: int = 0  # beside `forward` while the layers run (forward.layer), gone once the decoder returns


def wrapped_layers(n_layers: int, every: int, from_first: bool) -> int:
    """Layers checkpointed by every-k-th selection: torchtune's 1-based multiples of k, or transformers' 0, k, 2k..."""
    return -(-n_layers // every) if from_first else n_layers // every


def ordinal(k: int) -> str:
    """2nd, 3rd, 4th, 11th, 21st: the k of "every k-th layer" in notes."""
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def layer_residency(*, n_layers: int, saving_layers: int, checkpointing: bool, every: int, offload: bool,
                    per_layer: int, layer_input: int, from_first: bool = False,
                    save_on_cpu: bool = False, leaf_kept: bool = False) -> Residency:
    """What the `saving_layers` layers keep (bytes), given one layer's saved set and its input."""
    if save_on_cpu:
        return _save_on_cpu_residency(wrapped_layers(n_layers, every, from_first), saving_layers, per_layer,
                                      layer_input, leaf_kept)
    if checkpointing:
        wrapped = min(wrapped_layers(n_layers, every, from_first), saving_layers)
        resident = wrapped * layer_input + (saving_layers - wrapped) * per_layer
    else:
        resident = saving_layers * per_layer
    if not offload:
        return Residency(resident, resident, 0)
    # With checkpointing the recomputed layer's input comes back at its first backward node, which reruns the layer
    # inside that unpack; the layer above's input copy is deleted by that node's post hook (torchtune
    # OffloadActivations prev_node_ids), so it is on the GPU through the rerun too (measured with the tracer once it
    # freed copies as torchtune does: tinyllama QLoRA cut + checkpointing + offload b2 s1024, one 2 B x hidden per
    # token more, -2.61 % without it)
    back = layer_input * min(saving_layers, 2) if checkpointing else 0
    return Residency(0, back, resident)


def _save_on_cpu_residency(wrapped: int, saving_layers: int, per_layer: int, layer_input: int,
                           leaf_kept: bool) -> Residency:
    """transformers' offloaded checkpointing (--ac-offload; modeling_utils.py _activation_checkpointing_enable with
    offload=True: each checkpoint call under torch's save_on_cpu(pin_memory=True)).

    Only what the checkpoint saves under the outer hooks is packed: the layer's tensor arguments (torch
    utils/checkpoint.py _NoopSaveInputs.apply, non-reentrant; CheckpointFunction.forward's save_for_backward,
    reentrant), which is the hidden states alone (GradientCheckpointingLayer.__call__ passes the rest, position
    embeddings and masks, as keywords). A checkpointed layer keeps nothing on the GPU between forward and its backward
    (the host holds its input); the layers every_n_layers leaves out are not under save_on_cpu and keep their
    saved sets. In backward, unpack_from_cpu makes a new GPU copy of the input for the recompute, which the rerun's
    saved set holds until the layer's backward ends: one input back at a time.
    While the layers run forward two hidden states stay on the GPU whatever is offloaded (`running`): the running
    layer's input (the decoder's `hidden_states`, packed but still referenced) and the embedding's output, which the
    decoder's forward holds in its local `inputs_embeds` until it returns (measured with the tracer, --grid
    gc-offload: toy Qwen2.5 full fine-tuning b2 s1024, the forward peak 2 x 2 B x hidden per token above the layers'
    sets, -7.5 % without them);
    `leaf_kept`: the embedding's output is counted already (LoRA's enable_input_require_grads leaf, kept through
    backward).
    """
    wrapped = min(wrapped, saving_layers)
    resident = (saving_layers - wrapped) * per_layer
    held = (1 if leaf_kept else 2) * layer_input if wrapped else 0
    return Residency(resident, resident + (layer_input if wrapped else 0), wrapped * layer_input, held)


def check_save_on_cpu(m: Any, t: Any) -> None:
    """--ac-offload is modelled (and traced, --grid gc-offload) on one GPU for a dense decoder's SFT step with
    transformers' own checkpointing: refuse the rest in one line rather than estimate it as if on the GPU."""
    from vramcalc.core.errors import UnsupportedCombination
    from vramcalc.core.memory import _plain_dense_decoder

    if not _plain_dense_decoder(m):
        raise UnsupportedCombination(f"--ac-offload is modelled for dense decoders; {m.name} is not one (MoE, vision, "
                                     "SSM, encoder): drop --ac-offload")
    others = {"--kernels": t.kernels != "hf", "--objective": t.objective != "sft", "--mode": t.mode != "train",
              "--tp / --pp / --context-parallel / --sequence-parallel": t.tp > 1 or t.pp > 1
              or t.context_parallel > 1 or t.sequence_parallel,
              "--zero / --fsdp / --offload": bool(t.zero) or t.fsdp != "none" or t.offload != "none",
              "--dora / --lora-layers / --freeze / --train-layers": t.dora or bool(t.lora_layers)
              or t.method == "freeze" or t.train_layers is not None,
              "--badam / --lisa-layers / --relora / --optimizer-in-bwd / --fp8": t.badam or t.lisa_layers is not None
              or t.relora or t.optimizer_in_bwd or t.fp8 != "off"}
    named = [k for k, on in others.items() if on]
    if named:
        raise UnsupportedCombination(f"--ac-offload with {named[0]} is not modelled (traced on one GPU, SFT, full / "
                                     "LoRA / QLoRA): drop one of them")


def offload_node_bytes(terms: Sequence[Any], *, norm_width: int, residual: int, hidden: int, rmsnorm: bool,
                       weight_copy: int, product_back: int = 0) -> dict[str, int]:
    """Offloaded without checkpointing: what one layer holds on the GPU at its forward and backward nodes.

    torchtune OffloadActivations (pytorch/torchtune torchtune/training/_activation_offloading.py at
    05cda5e9dd03be9460f624ebbdbaacc15983e6a3): `pack_tensor` copies each saved tensor of >= 1 KiB to the host and
    keeps the GPU tensor in `fwd_stash` until 5 newer ones are packed; `unpack_tensor_with_streams` copies a
    tensor back when its node unpacks it, and the node's post `hook` deletes the *previous* node's copies
    (`prev_node_ids`) once this node has run. So beside a node's gradient temporaries (the layer's backward
    transient) the GPU holds this node's saved tensors and the previous node's, never the layer's whole set.
    `terms` are a layer's saved tensors in forward order, one module (node) each: the node after a term in
    forward runs before it in backward, so at the node of the largest term the GPU holds it and the term after it
    (measured with the tracer, --grid offload-nogc: a Llama MLP's product node, its operands back beside down_proj's
    input; the largest two terms anywhere, or any two neighbours, were up to +14 % over); in forward the same pair
    bounds the newest packed tensors still in the stash beside the layer's forward temporaries.
    Only `nn.Parameter`s stay: a Linear's matmul saves `weight.t()`, a view, which is packed and
    comes back as a full copy (`weight_copy`: the largest such weight, whatever the batch; the routed experts' gate_up
    stack, memory/__init__.py _offloaded_expert_stack). A term saved by several nodes (the routed experts,
    activations.py _expert_nodes) lists them in `nodes` and comes back node by node. Terms whatever the
    batch (LoRA's merged expert stacks) are left out: with them the Qwen3-MoE toy LoRA all-linear was +17 %.
    An RMSNorm's backward (LlamaRMSNorm: pow and mul each saved the fp32 input, packed and brought back apart)
    peaks in PowBackward0 with six fp32 tensors of the normalized width (its input brought back, the upcast
    gradient, the mean's expanded gradient, pow, 2 * pow and their product) beside two residual-stream
    gradients; with q/k norms (Qwen3) the width is the query projection's.
    `product_back` (per token; a dense gated MLP whose up projection has a LoRA adapter): the product node's two
    operands, act(gate) and up. The layer's backward peak is then at up_proj's adapter path (peft's `.to()` and
    scaling nodes: the intermediate-wide gradient cast to the adapter dtype, unpacking nothing), after the product
    node ran: its post hook dropped down_proj's copies (its input, its weight copy), so only the product node's
    own are back (measured with the tracer's live tensors, --grid offload-nogc: the tiny Llama LoRA all-linear b1
    s1024, two 2 B x 704 copies at the peak and no weight copy, +2.4 % with the pair and the copy).
    """
    # (a group saved by several nodes, the routed experts' (activations.py _expert_nodes), comes back node by node)
    per_token = [n for x in terms if not x.batch1_only for n in (x.nodes or (x.per_token,))]
    top = max(range(len(per_token)), key=per_token.__getitem__, default=-1)
    pair = sum(per_token[top:top + 2]) if top >= 0 else 0
    # forward: the pair in the stash, and two residual-stream tensors the layer's forward temporaries leave out (its
    # input and the attention's output, alive beside the MLP's; measured with the tracer, --grid offload-nogc: a tiny
    # Llama LoRA q,k,v,o b2 s1024, the peak at down_proj's matmul with 4 intermediate- and 5 hidden-wide tensors,
    # -3.0 % without them)
    back_t, back_c = (product_back, 0) if product_back else (pair, weight_copy)
    return {"offload_stash_t": pair + 2 * residual * hidden, "offload_back_t": back_t, "offload_back_c": back_c,
            "offload_norm_t": 6 * 4 * norm_width + 2 * residual * hidden if rmsnorm else 0}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def largest_tensor(trainable_tensors: tuple[tuple[tuple[int, ...], int], ...]) -> int:
    """Elements of the largest trainable tensor."""
    return max((_numel(shape) for shape, _ in trainable_tensors), default=0)


# Optimizer in backward (torchtune training/_optimizer_wrapper / memory.py register_optim_in_bwd_hooks,
# optimizer_in_bwd: true; torch.optim._apply_optimizer_in_backward): each parameter has its own optimizer,
# stepped and zeroed (set_to_none) by a post-accumulate-grad hook, so only the gradient of the tensor being
# stepped exists, with that one tensor's step temporaries; there is no full gradient buffer and no
# separate optimizer-step phase. The core uses: gradients = the largest tensor's gradient, step
# temporaries = those of the largest tensor alone (memory/optimizer.py with trainable = largest).
