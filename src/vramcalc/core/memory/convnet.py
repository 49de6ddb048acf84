"""torchvision's ResNet family: parameter tensors and, per unit (stem, each residual block, head), what autograd
saves in a training step, in bytes.

Source: pytorch/vision torchvision/models/resnet.py. ResNet.__init__: conv1 (7x7, stride 2, padding 3, no bias),
bn1, ReLU(inplace=True), maxpool (3x3, stride 2, padding 1), layer1..layer4 of planes 64/128/256/512 (strides
1, 2, 2, 2), AdaptiveAvgPool2d(1), fc Linear(512 x expansion, num_classes). Bottleneck (expansion 4, torchvision's
"ResNet V1.5": the stride on the 3x3 conv): conv1x1(inplanes, width), conv3x3(width, width, stride, groups),
conv1x1(width, planes x 4), a BatchNorm2d after each, `out += identity` then relu; width = planes x
(width_per_group / 64) x groups. BasicBlock (expansion 1): two conv3x3 and two BatchNorm2d. A block whose stride is
not 1 or whose input width differs from its output's has a downsample: conv1x1(inplanes, planes x expansion,
stride) + BatchNorm2d. Convs have no bias; BatchNorm2d has weight and bias, and the buffers running_mean,
running_var (fp32) and num_batches_tracked (int64).

What each op saves (torch tools/autograd/derivatives.yaml): convolution saves its input and weight (the weight's
16-bit autocast copy under AMP); batch norm (cudnn_batch_norm / native_batch_norm) saves its input and the fp32
per-channel save_mean and save_invstd; ReLU(inplace=True) saves its result (threshold_backward(grad, result)),
which is the BatchNorm output it overwrote; max_pool2d_with_indices saves its input and the int64 indices; the
residual add and adaptive_avg_pool2d save nothing new (the pool reads its input's shape and the input is already
saved); fc (addmm) saves its input; cross_entropy saves log_softmax's fp32 output. Under torch.autocast the convs
and fc run in 16 bits (autocast_mode.cpp lower_precision_fp list) and batch norm, in no list, runs on the 16-bit
input with its fp32 weight and statistics, returning 16 bits. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.params import blocks, expansion, resnet_tensors, stem_sides

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec

BLOCK = 512  # the CUDA caching allocator rounds every allocation up to 512 bytes (c10/cuda/CUDACachingAllocator.cpp)


@dataclass(frozen=True)
class Unit:
    """One part of the network in forward order and what it holds during a training step, in bytes."""

    name: str
    saved: int  # kept by autograd from its forward until the backward passes it
    copies: int  # autocast's 16-bit weight copies, cached for the forward and saved by the op
    grads: int  # its parameters' gradients
    fwd_temp: int  # alive at its forward beyond what it saves
    bwd_start: int  # its backward's transients before its gradients exist (its saved tensors still alive)
    bwd_end: int  # its backward's transients once its gradients exist (its saved tensors released)
    fwd_keep: int = 0  # alive from its forward to the end of the forward, not saved (AMP: the fp32 image)
    # Accumulating (--grad-accum > 1): a new gradient is computed beside the .grad it is added into
    # (AccumulateGrad: `grad += new` in place), at the start or the end of the unit's backward.
    accum_start: int = 0
    accum_end: int = 0


def blk(n_bytes: int) -> int:
    """One allocation of `n_bytes`, as the allocator counts it."""
    return -(-n_bytes // BLOCK) * BLOCK


def bn_channels(m: ModelSpec) -> list[int]:
    """The channels of every BatchNorm2d (for its buffers)."""
    return [t.shape[0] for t in resnet_tensors(m) if t.name.endswith(".weight") and t.kind == "norm"]


def buffer_bytes(m: ModelSpec) -> int:
    """BatchNorm2d buffers: running_mean and running_var (fp32, one per channel), num_batches_tracked (int64)."""
    return sum(2 * blk(4 * ch) + blk(8) for ch in bn_channels(m))


def units(m: ModelSpec, batch: int, image_size: int, c: int, autocast: bool) -> list[Unit]:
    """The stem, each block and the head, with what autograd keeps of each (module docstring), for `batch` images
    of image_size x image_size at `c` bytes per activation element (4 in fp32, 2 under autocast)."""
    tensors = {t.name: t for t in resnet_tensors(m)}

    def grads(prefix: str) -> int:  # fp32 gradients of the unit's parameters (weights stay fp32 under autocast)
        return sum(blk(4 * t.numel) for n, t in tensors.items() if n.startswith(prefix))

    def copies(*names: str) -> int:  # autocast: the 16-bit copy of each conv/fc weight, cached for the forward
        return sum(blk(c * tensors[n].numel) for n in names) if autocast else 0

    def act(ch: int, side: int) -> int:
        return blk(c * batch * ch * side * side)

    def stats(*chs: int) -> int:  # batch norm's fp32 save_mean and save_invstd
        return sum(2 * blk(4 * ch) for ch in chs)

    h1, h2 = stem_sides(image_size)
    image = blk(4 * batch * 3 * image_size * image_size)
    # conv1 saves the image (AMP: its 16-bit cast; the fp32 image is the input, alive through the forward),
    # bn1 saves conv1's output, relu the normalized output it overwrote, maxpool that and its int64 indices.
    stem_saved = (act(3, image_size) if autocast else image) + 2 * act(64, h1) + stats(64) \
        + act(64, h2) + blk(8 * batch * 64 * h2 * h2)
    out = [Unit("stem (conv1, bn1, relu, maxpool)", stem_saved, copies("conv1"), grads("conv1") + grads("bn1"),
                0, 2 * act(64, h1), 2 * act(64, h1), image if autocast else 0,
                accum_start=blk(4 * tensors["conv1"].numel))]
    for b in blocks(m, image_size):
        p = b.name
        ds = (f"{p}.downsample.0",) if b.downsample else ()
        if m.conv_bottleneck:
            # conv1, bn1 out (1x1 at the input side); conv2, bn2 out (3x3, strided); conv3 out; the block output
            # (bn3's output after += identity and relu, in place); the downsample conv's output (saved by its bn).
            saved = 2 * act(b.width, b.h_in) + 2 * act(b.width, b.h_out) + 2 * act(b.out_ch, b.h_out) \
                + stats(b.width, b.width, b.out_ch)
            names = (f"{p}.conv1", f"{p}.conv2", f"{p}.conv3", *ds)
            widest = max(act(b.width, b.h_in), act(b.width, b.h_out))
        else:
            saved = 2 * act(b.width, b.h_out) + 2 * act(b.out_ch, b.h_out) + stats(b.width, b.out_ch)
            names = (f"{p}.conv1", f"{p}.conv2", *ds)
            widest = act(b.width, b.h_out)
        if b.downsample:
            saved += act(b.out_ch, b.h_out) + stats(b.out_ch)
        # Forward: the downsample's bn output lives until the add. Backward, at its start: the output's gradient,
        # relu's (kept for the identity branch until the input's gradients are summed), the last bn's input
        # gradient and the last conv's input gradient (the widest inner tensor); at its end: the two branches'
        # gradients of the input and their sum (autograd's InputBuffer adds them into a new tensor).
        fwd = act(b.out_ch, b.h_out) if b.downsample else 0
        bwd = 3 * act(b.out_ch, b.h_out) + widest
        bwd_end = 3 * act(b.in_ch, b.h_in)
        if autocast:  # a conv's 16-bit weight gradient beside its fp32 cast (the cast's backward, autograd's .to())
            cast = max(blk(c * tensors[n].numel) for n in names)
            bwd, bwd_end = bwd + cast, bwd_end + cast
        largest = max(blk(4 * t.numel) for n, t in tensors.items() if n.startswith(p + "."))
        out.append(Unit(p, saved, copies(*names), grads(p + "."), fwd, bwd, bwd_end, accum_start=largest))
    final = 512 * expansion(m)
    classes = m.num_classes or 1000
    # avgpool's output (saved by fc), log_softmax's fp32 output (saved by nll_loss), the int64 labels.
    head_saved = blk(c * batch * final) + blk(4 * batch * classes) + blk(8 * batch)
    logits = blk(c * batch * classes) + (blk(4 * batch * classes) if autocast else 0)
    out.append(Unit("head (avgpool, fc, cross_entropy)", head_saved, copies("fc.weight"), grads("fc."),
                    logits, 2 * blk(4 * batch * classes), blk(c * batch * final)))
    return out
